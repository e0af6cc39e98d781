//! `migrate`, `prune`, `token`: the database's commands.

use super::*;

pub(crate) fn migrate(db: &str) -> Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let shown = switchyard_engine::store::redact(db);
        switchyard_engine::store::open(db)
            .await
            .with_context(|| format!("cannot migrate the database {shown}"))?;
        println!("{shown}: migrations applied");
        Ok(ExitCode::SUCCESS)
    })
}

pub(crate) fn prune(older_than: &str, db: &str) -> Result<ExitCode> {
    let age = switchyard_rules::calendar::parse_duration(older_than)
        .map_err(|e| anyhow::anyhow!("--older-than: {e}"))?;
    if age < std::time::Duration::from_secs(7 * 86_400) {
        anyhow::bail!(
            "--older-than {older_than}: keep at least 7d (Meta redelivers webhooks for up to 7 days, and the inbox is what recognises them)"
        );
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let store = switchyard_engine::store::open(db).await.with_context(|| {
            format!(
                "cannot open the database {}",
                switchyard_engine::store::redact(db)
            )
        })?;
        let before = now_ms() - age.as_millis() as i64;
        for (table, n) in store.prune(before).await? {
            println!("{table}: {n} rows deleted");
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub(crate) fn token_cmd(cmd: TokenCommand) -> Result<ExitCode> {
    use switchyard_api::admin::{new_token, token_hash, Role};
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let open = |db: String| async move {
            switchyard_engine::store::open(&db).await.with_context(|| {
                format!(
                    "cannot open the database {}",
                    switchyard_engine::store::redact(&db)
                )
            })
        };
        match cmd {
            TokenCommand::Create { role, agent, db } => {
                let Some(role) = Role::parse(&role) else {
                    anyhow::bail!("--role: one of agent, supervisor, admin (not `{role}`)");
                };
                let agent = agent.filter(|a| !a.trim().is_empty());
                if role == Role::Agent && agent.is_none() {
                    anyhow::bail!("--agent: an agent token must name the agent it acts as");
                }
                let store = open(db).await?;
                let token = new_token().map_err(|e| anyhow::anyhow!("{e:?}"))?;
                let id = switchyard_engine::Store::create_token(
                    &*store,
                    &token_hash(&token),
                    role.as_str(),
                    agent.as_deref(),
                    "cli",
                    now_ms(),
                )
                .await?;
                println!("{token}");
                eprintln!(
                    "token {id} ({}{}) created; it is not shown again",
                    role.as_str(),
                    agent.map(|a| format!(", agent {a}")).unwrap_or_default()
                );
                Ok(ExitCode::SUCCESS)
            }
            TokenCommand::Revoke { id, db } => {
                let store = open(db).await?;
                if switchyard_engine::Store::revoke_token(&*store, id, "cli", now_ms()).await? {
                    eprintln!("token {id} revoked");
                    Ok(ExitCode::SUCCESS)
                } else {
                    eprintln!("no live token {id}");
                    Ok(ExitCode::from(1))
                }
            }
        }
    })
}
