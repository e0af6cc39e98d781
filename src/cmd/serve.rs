//! `serve`: the pack's connectors from the environment, the runtime, the HTTP server, `--watch`.

use super::*;

pub(crate) async fn start_runtime(
    pack: Pack,
    db: &str,
    channel: Arc<dyn switchyard_engine::ports::Channel>,
    notifier: Arc<dyn switchyard_engine::ports::Notifier>,
    default_queues: &[(String, String)],
) -> Result<Arc<switchyard_engine::worker::Runtime>> {
    let lookup = Arc::new(switchyard_connectors::demo::DemoStore::new(
        switchyard_connectors::assemble::sample_orders(&pack),
    ));
    start_runtime_with(
        pack,
        (db, Default::default()),
        channel,
        notifier,
        lookup,
        default_queues,
    )
    .await
}

pub(crate) async fn start_runtime_with(
    pack: Pack,
    (db, pg): (&str, switchyard_engine::store::postgres::PgSettings),
    channel: Arc<dyn switchyard_engine::ports::Channel>,
    notifier: Arc<dyn switchyard_engine::ports::Notifier>,
    lookup: Arc<dyn switchyard_engine::ports::Lookup>,
    default_queues: &[(String, String)],
) -> Result<Arc<switchyard_engine::worker::Runtime>> {
    let store = switchyard_engine::store::open_with(db, pg)
        .await
        .with_context(|| {
            format!(
                "cannot open the database {}",
                switchyard_engine::store::redact(db)
            )
        })?;
    let mut engine = switchyard_engine::Engine::new(store, Arc::new(pack), lookup);
    for (channel, queue) in default_queues {
        engine = engine.with_default_queue(channel, queue);
    }
    let engine = Arc::new(engine);
    let rt =
        switchyard_engine::worker::Runtime::start(engine, channel, notifier, Default::default())
            .await?;
    Ok(Arc::new(rt))
}

/// The outbound side of `serve`: each WhatsApp number's Cloud API on its channel, the sandbox
/// (printing) for the rest; and a sentence saying which.
pub(crate) fn outbound(
    numbers: &[config::Number],
    channels: &switchyard_connectors::whatsapp::Numbers,
) -> Result<(Arc<dyn switchyard_engine::ports::Channel>, String)> {
    use switchyard_connectors::cloud_api::CloudApi;
    let sandbox = Arc::new(switchyard_connectors::sandbox::SandboxChannel::printing());
    if numbers.is_empty() {
        return Ok((
            sandbox,
            "no WhatsApp number configured: outbound messages go to the sandbox (printed here)"
                .into(),
        ));
    }
    let mut router = switchyard_connectors::channels::ByChannel::new(sandbox);
    for n in numbers {
        router = router.with(
            &channels.channel(Some(&n.api.phone_number_id)),
            Arc::new(CloudApi::new(n.api.clone())?),
        );
    }
    let ids: Vec<&str> = numbers
        .iter()
        .map(|n| n.api.phone_number_id.as_str())
        .collect();
    Ok((
        Arc::new(router),
        format!(
            "WhatsApp replies go out through the Cloud API as number {}; other channels to the sandbox (printed here)",
            ids.join(", ")
        ),
    ))
}

pub(crate) fn serve(a: ServeArgs) -> Result<ExitCode> {
    let cfg = config::resolve(&a, |name| std::env::var(name).ok())?;
    let Some(pack) = valid_pack(&cfg.rules)? else {
        return Ok(ExitCode::from(1));
    };
    for n in &cfg.numbers {
        if let Some(q) = &n.default_queue {
            if !pack.queues.contains_key(q.as_str()) {
                anyhow::bail!(
                    "number {}: its default queue `{q}` is not a queue of the pack {} (queues: {})",
                    n.api.phone_number_id,
                    cfg.rules.display(),
                    pack.queues
                        .keys()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
    }
    // Logs on stderr; `RUST_LOG` sets the level (default info). Message bodies are never logged.
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cfg.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    switchyard_connectors::cloud_api::install_tls();
    // One rule names each number's channel, for the webhook route, the senders and the
    // default queues alike.
    let numbers = switchyard_connectors::whatsapp::Numbers::new(
        cfg.numbers
            .iter()
            .map(|n| n.api.phone_number_id.clone())
            .collect(),
    );
    let (channel, outbound_says) = outbound(&cfg.numbers, &numbers)?;
    let default_queues: Vec<(String, String)> = cfg
        .numbers
        .iter()
        .filter_map(|n| {
            let q = n.default_queue.clone()?;
            Some((numbers.channel(Some(&n.api.phone_number_id)), q))
        })
        .collect();
    let (db, listen) = (cfg.db.as_str(), cfg.listen.as_str());
    let webchat_key = match a.webchat_secret.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(k) if k.chars().count() < 32 => anyhow::bail!(
            "SWITCHYARD_WEBCHAT_SECRET is {} characters: use at least 32 (e.g. `openssl rand -hex 32`)",
            k.chars().count()
        ),
        Some(k) => Some(k.as_bytes().to_vec()),
        None => None,
    };
    let shopify_secret = a
        .shopify_webhook_secret
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.as_bytes().to_vec());
    let switchyard_connectors::assemble::Assembled {
        lookup,
        notifier,
        said: connectors_say,
    } = switchyard_connectors::assemble::assemble(&pack, &cfg.rules, |n| std::env::var(n).ok())?;
    // A SQLite file is served by one process: a second `serve` on it stops here.
    let _claim = switchyard_engine::store::claim(db).map_err(|e| anyhow::anyhow!("{e}"))?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let runtime =
            start_runtime_with(pack, (db, cfg.pg.clone()), channel, notifier, lookup, &default_queues).await?;
        let says = security_says(cfg.app_secret.is_some(), shopify_secret.is_some(), webchat_key.is_some(), a.insecure_unsigned_webhooks);
        let state = Arc::new(switchyard_api::AppState {
            shopify_webhook_secret: shopify_secret,
            unsigned_webhooks: a.insecure_unsigned_webhooks,
            secure_cookies: a.secure_cookies,
            webchat_key: webchat_key.unwrap_or_else(switchyard_api::random_key),
            // A reload rebuilds the pack's connectors from the environment, as at start.
            assemble: Some(Arc::new(|pack: &Pack, dir: &Path| {
                switchyard_connectors::assemble::assemble(pack, dir, |n| std::env::var(n).ok())
                    .map(|a| (a.lookup, a.notifier))
                    .map_err(|e| e.to_string())
            })),
            whatsapp_verify_token: cfg.verify_token.clone(),
            whatsapp_app_secret: cfg.app_secret.clone().map(String::into_bytes),
            whatsapp_numbers: numbers,
            admin_token: cfg.admin_token.clone(),
            rules: switchyard_api::oversight::RulesSource::new(Some(cfg.rules.clone())),
            token_limiter: (cfg.api_rate > 0)
                .then(|| switchyard_api::token_limiter(cfg.api_rate, cfg.api_rate.saturating_mul(2))),
            ..switchyard_api::AppState::new(runtime.clone())
        });
        if a.watch {
            tokio::spawn(switchyard_api::watch::watch_rules(state.clone()));
        }
        if let Some(dir) = &a.shadow {
            let sh = switchyard_api::shadow::start(&state, dir)
                .await
                .map_err(|e| anyhow::anyhow!("--shadow {}: {e}", dir.display()))?;
            eprintln!(
                "switchyard: the pack in {} ({}) runs in shadow: GET /api/v1/rules/shadow says what it would do differently",
                dir.display(),
                &sh.candidate[..12.min(sh.candidate.len())]
            );
        }
        let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
        let from = cfg.file.as_ref().map(|f| format!(" (configuration: {})", f.display())).unwrap_or_default();
        let shown_db = switchyard_engine::store::redact(db);
        tracing::info!(rules = %cfg.rules.display(), listen = %listener.local_addr()?, db = %shown_db, "serving");
        eprintln!(
            "switchyard: serving {} on http://{} with {shown_db}{from}; {outbound_says}",
            cfg.rules.display(),
            listener.local_addr()?
        );
        eprintln!(
            "switchyard: the agents' workspace is http://{}/inbox (an agent logs in once an admin sets a password: `switchyard agent passwd ID`)",
            listener.local_addr()?
        );
        for s in &says {
            eprintln!("switchyard: {s}");
        }
        for s in &connectors_say {
            eprintln!("switchyard: connector {s}");
        }
        let shutdown = async {
            let term = async {
                #[cfg(unix)]
                if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    s.recv().await;
                    return;
                }
                std::future::pending::<()>().await
            };
            tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term => {} }
            eprintln!("switchyard: stopping; events not yet processed stay in the inbox for the next start");
        };
        switchyard_api::launch(listener, state, shutdown).await?;
        if let Ok(rt) = Arc::try_unwrap(runtime) {
            rt.shutdown().await;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// What `serve` says at start about each webhook's authentication: what is refused for want
/// of a secret, and, loudly, what is accepted unsigned.
pub(crate) fn security_says(
    whatsapp: bool,
    shopify: bool,
    webchat: bool,
    insecure: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    for (set, route, var) in [
        (whatsapp, "/webhooks/whatsapp", "WHATSAPP_APP_SECRET"),
        (shopify, "/webhooks/shopify", "SHOPIFY_WEBHOOK_SECRET"),
    ] {
        match (set, insecure) {
            (true, _) => out.push(format!("POST {route}: signatures checked ({var})")),
            (false, false) => out.push(format!(
                "POST {route} REFUSES every delivery (503) until {var} is set"
            )),
            (false, true) => out.push(format!(
                "WARNING: POST {route} ACCEPTS UNSIGNED deliveries (--insecure-unsigned-webhooks): \
                 anyone who reaches this server can write as any customer. Development only; set {var}."
            )),
        }
    }
    if !webchat {
        out.push(
            "web chat sessions are signed with a key made at start: they end when this process \
             stops; set SWITCHYARD_WEBCHAT_SECRET (the same on every instance) to keep them"
                .into(),
        );
    }
    out
}
