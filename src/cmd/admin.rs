//! `migrate`, `prune`, `token`, `agent`: the database's commands.

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
                let hash = token_hash(&token);
                let t = switchyard_engine::store::NewToken {
                    hash: &hash,
                    role: role.as_str(),
                    agent: agent.as_deref(),
                    kind: "api",
                    expires_at: None,
                };
                let id =
                    switchyard_engine::Store::create_token(&*store, &t, "cli", now_ms()).await?;
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

pub(crate) fn agent_cmd(cmd: AgentCommand) -> Result<ExitCode> {
    let AgentCommand::Passwd { id, clear, db } = cmd;
    let hash = if clear {
        None
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        let password = line.trim_end_matches(['\n', '\r']);
        Some(switchyard_api::web::hash_password(password).map_err(|e| anyhow::anyhow!("{e}"))?)
    };
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let store = switchyard_engine::store::open(&db).await.with_context(|| {
            format!(
                "cannot open the database {}",
                switchyard_engine::store::redact(&db)
            )
        })?;
        if switchyard_engine::Store::set_password(&*store, &id, hash.as_deref(), "cli", now_ms())
            .await?
        {
            eprintln!(
                "agent {id}: password {}",
                if clear { "cleared" } else { "set" }
            );
            Ok(ExitCode::SUCCESS)
        } else {
            eprintln!("no agent `{id}` (create it first: POST /api/v1/agents)");
            Ok(ExitCode::from(1))
        }
    })
}

pub(crate) fn trace_cmd(id: i64, json: bool, db: &str) -> Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let store = switchyard_engine::store::open(db).await.with_context(|| {
            format!(
                "cannot open the database {}",
                switchyard_engine::store::redact(db)
            )
        })?;
        if store.conversation(id).await?.is_none() {
            eprintln!("no conversation {id}");
            return Ok(ExitCode::from(1));
        }
        let mut out = std::io::stdout().lock();
        for (pack, v) in store.traces(id).await? {
            let t = switchyard_engine::trace::Trace::read(&v);
            if json {
                writeln!(out, "{}", serde_json::json!({ "pack": pack, "trace": t }))?;
            } else {
                writeln!(
                    out,
                    "{}  {}  {}",
                    t.at,
                    &pack[..pack.len().min(12)],
                    t.summary()
                )?;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
