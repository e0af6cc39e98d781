//! `demo`, `chat`, `replay`: playing conversations through a running engine.

use super::*;

pub(crate) fn replay(
    file: &Path,
    to: &str,
    secret: Option<&str>,
    concurrency: usize,
) -> Result<ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    // Check every line before sending any: a bad file sends nothing.
    let mut bodies = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        serde_json::from_str::<serde_json::Value>(line).with_context(|| {
            format!(
                "{}:{}: not a JSON body; nothing was sent",
                file.display(),
                i + 1
            )
        })?;
        bodies.push(line.to_string());
    }
    switchyard_connectors::cloud_api::install_tls();
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let bar = indicatif::ProgressBar::new(bodies.len() as u64).with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let rt = tokio::runtime::Runtime::new()?;
    let started = std::time::Instant::now();
    let (accepted, rejected, errors) = rt.block_on(async {
        use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
        let counts = Arc::new([
            AtomicUsize::new(0),
            AtomicUsize::new(0),
            AtomicUsize::new(0),
        ]);
        let permits = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for body in bodies {
            let permit = permits.clone().acquire_owned().await?;
            let mut req = client.post(to).header("content-type", "application/json");
            if let Some(s) = secret {
                let sig = switchyard_connectors::whatsapp::signature(s.as_bytes(), body.as_bytes());
                req = req.header("x-hub-signature-256", sig);
            }
            let (counts, bar) = (counts.clone(), bar.clone());
            tasks.spawn(async move {
                let slot = match req.body(body).send().await {
                    Ok(r) if r.status().is_success() => 0,
                    Ok(r) => {
                        bar.set_message(format!("last rejection: HTTP {}", r.status()));
                        1
                    }
                    Err(e) => {
                        bar.set_message(format!("last error: {e}"));
                        2
                    }
                };
                counts[slot].fetch_add(1, Relaxed);
                bar.inc(1);
                drop(permit);
            });
        }
        while tasks.join_next().await.is_some() {}
        Ok::<_, anyhow::Error>((
            counts[0].load(Relaxed),
            counts[1].load(Relaxed),
            counts[2].load(Relaxed),
        ))
    })?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let sent = accepted + rejected + errors;
    println!(
        "sent {sent}, accepted {accepted}, rejected {rejected}, failed to send {errors} in {secs:.2} s ({:.0}/s)",
        sent as f64 / secs.max(1e-9)
    );
    Ok(if rejected + errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// One scripted customer action of the demo.
pub(crate) enum DemoStep {
    Says(&'static str, &'static str),
    Taps(&'static str, &'static str),
    NewCodOrder(&'static str, &'static str),
}

/// A WhatsApp Cloud API webhook body with one customer message: text, or a tapped reply button.
pub(crate) fn wa_webhook(
    who: &str,
    id: &str,
    text: &str,
    button: Option<&str>,
) -> serde_json::Value {
    let message = match button {
        Some(b) => {
            serde_json::json!({ "from": who, "id": id, "timestamp": "1700000000", "type": "interactive",
            "interactive": { "type": "button_reply", "button_reply": { "id": b, "title": text } } })
        }
        None => {
            serde_json::json!({ "from": who, "id": id, "timestamp": "1700000000", "type": "text", "text": { "body": text } })
        }
    };
    serde_json::json!({ "object": "whatsapp_business_account", "entry": [ { "id": "demo", "changes": [ { "field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": { "display_phone_number": "15550000000", "phone_number_id": "demo" },
        "contacts": [ { "profile": { "name": format!("Customer {}", &who[who.len().saturating_sub(4)..]) }, "wa_id": who } ],
        "messages": [ message ] } } ] } ] })
}

/// Prints the bot's messages, with their buttons or list rows; returns the choices offered
/// by the last one (`(id, title)`), numbered from 1 in what was printed.
pub(crate) fn print_replies(
    out: &mut impl Write,
    who: &str,
    sent: &[(String, switchyard_engine::model::Outbound)],
    numbered: bool,
) -> Result<Vec<(String, String)>> {
    let mut choices = Vec::new();
    for (_, m) in sent {
        choices = match &m.template {
            Some(t) => t.buttons.iter().map(|b| (b.clone(), b.clone())).collect(),
            None if !m.buttons.is_empty() => m.buttons.clone(),
            None => m.list.as_ref().map(|l| l.rows.clone()).unwrap_or_default(),
        };
        let kind = match &m.template {
            Some(t) => format!("  (approved template {})", t.name),
            None => String::new(),
        };
        if numbered {
            writeln!(out, "bot: {}{kind}", m.text)?;
            for (i, (_, title)) in choices.iter().enumerate() {
                writeln!(out, "     {}) {title}", i + 1)?;
            }
        } else {
            let titles: Vec<&str> = choices.iter().map(|c| c.1.as_str()).collect();
            let extra = if titles.is_empty() {
                String::new()
            } else {
                format!(" [{}]", titles.join(" | "))
            };
            writeln!(out, "    bot → {who}: {}{kind}{extra}", m.text)?;
        }
    }
    Ok(choices)
}

/// One line on the conversation of `who`: status, queue, owner, tags, flow, open ticket.
pub(crate) async fn print_state(
    out: &mut impl Write,
    engine: &switchyard_engine::Engine,
    who: &str,
    indent: &str,
) -> Result<()> {
    let ctx = engine.context_of("whatsapp", who, now_ms()).await?;
    let c = &ctx.conversation;
    let ticket = ctx
        .ticket
        .as_ref()
        .map(|t| format!(", ticket {} ({}, {})", t.id, t.title, t.priority.as_str()))
        .unwrap_or_default();
    let flow = c
        .flow
        .as_ref()
        .map(|f| format!(", flow {}/{}", f.flow, f.step))
        .unwrap_or_default();
    let owner = c
        .assignee
        .as_ref()
        .map(|a| format!(", owner {a}"))
        .unwrap_or_default();
    writeln!(
        out,
        "{indent}conversation {}: {}, queue {}{owner}, tags [{}]{flow}{ticket}",
        c.id,
        c.status.as_str(),
        c.queue.as_deref().unwrap_or("none"),
        c.tags.join(", ")
    )?;
    Ok(())
}

/// One line per decision recorded for `who`'s conversation since the last call: the intent
/// and its confidence, the rules that matched, flow steps, routes and hand-offs.
pub(crate) async fn print_decisions(
    out: &mut impl Write,
    engine: &switchyard_engine::Engine,
    who: &str,
    seen: &mut std::collections::HashMap<i64, usize>,
) -> Result<()> {
    let id = engine
        .context_of("whatsapp", who, now_ms())
        .await?
        .conversation
        .id;
    let traces = engine.traces(id).await?;
    let from = seen.insert(id, traces.len()).unwrap_or(0);
    for (_, t) in traces.iter().skip(from) {
        let summary = t.summary();
        if !summary.is_empty() {
            writeln!(out, "    decided: {summary}")?;
        }
    }
    Ok(())
}

pub(crate) fn demo(keep_serving: bool, listen: &str) -> Result<ExitCode> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/pk-ecommerce");
    let Some(pack) = valid_pack(&dir)? else {
        return Ok(ExitCode::from(1));
    };
    let tmp = tempfile::tempdir()?;
    let db = format!("sqlite://{}", tmp.path().join("demo.db").display());
    let rt = tokio::runtime::Runtime::new()?;
    // Not locked: with --keep-serving the sandbox prints on stdout too.
    let mut out = std::io::stdout();
    rt.block_on(async {
        let channel = Arc::new(switchyard_connectors::sandbox::SandboxChannel::new());
        let cases = pack.tests.len();
        let runtime = start_runtime(pack, &db, channel.clone(), Arc::new(switchyard_connectors::sandbox::SandboxNotifier::default()), &[]).await?;
        let addr = if keep_serving { listen } else { "127.0.0.1:0" };
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        let base = format!("http://{}", listener.local_addr()?);
        // The demo signs what it posts, as Meta would, with a secret made for this run.
        let secret = switchyard_api::random_key();
        let state = Arc::new(switchyard_api::AppState {
            whatsapp_app_secret: Some(secret.clone()),
            ..switchyard_api::AppState::new(runtime.clone())
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(switchyard_api::launch(listener, state, async {
            let _ = stopped.await;
        }));
        switchyard_connectors::cloud_api::install_tls();
        let http = reqwest::Client::new();
        writeln!(out, "Switchyard demo: the example pack served on {base} with a fresh SQLite file ({db}),\nthe demo store and the sandbox channel. Customer messages are posted to /webhooks/whatsapp\nand go through the durable pipeline.\n")?;
        use DemoStep::*;
        let script = [
            NewCodOrder("923001234567", "#20001"),
            Taps("923001234567", "confirm"),
            Says("923331112223", "mera order kahan hai #55120"),
            Says("923451234567", "parcel toota hua aaya hai, bohat bura experience"),
            Says("923211234567", "size chota hai, exchange karna hai"),
            Says("923009876543", "kisi insaan se baat karwao"),
            Says("923111234567", "میرا پارسل کب آئے گا"),
        ];
        let mut seen = std::collections::HashMap::new();
        for (i, step) in script.iter().enumerate() {
            let before = channel.sent().len();
            let id = format!("wamid.demo.{i}");
            let (who, line) = match step {
                Says(who, text) => {
                    post_webhook(&http, &base, &secret, &wa_webhook(who, &id, text, None)).await?;
                    (who, format!("{who} says: {text}"))
                }
                Taps(who, b) => {
                    post_webhook(&http, &base, &secret, &wa_webhook(who, &id, b, Some(b))).await?;
                    (who, format!("{who} taps the button `{b}`"))
                }
                NewCodOrder(who, name) => {
                    // Store webhooks get their route with the Shopify connector (#7): the order
                    // event goes straight into the inbox here.
                    let order = switchyard_connectors::assemble::sample_orders(&runtime.engine.pack()).into_iter().find(|o| o["name"] == *name).map(serde_json::Value::Object).unwrap_or_default();
                    let ev = switchyard_engine::model::Inbound::Order {
                        channel: "whatsapp".into(),
                        to: who.to_string(),
                        name: None,
                        phone: Some(format!("+{who}")),
                        provider_id: format!("demo-order-{i}"),
                        event: "order.created".into(),
                        order,
                    };
                    runtime.ingest(vec![ev]).await?;
                    (who, format!("store: new cash-on-delivery order {name} for {who}"))
                }
            };
            settle(&runtime).await?;
            writeln!(out, "▸ {line}")?;
            print_decisions(&mut out, &runtime.engine, who, &mut seen).await?;
            print_replies(&mut out, who, &channel.sent()[before..], false)?;
            print_state(&mut out, &runtime.engine, who, "    ").await?;
        }
        writeln!(out, "\nEvery decision is in the database with its trace; `switchyard test examples/pk-ecommerce` runs the pack's {cases} cases.")?;
        if keep_serving {
            channel.set_printing(true);
            writeln!(
                out,
                "\nStill serving on {base} (replies are printed here). Go on as a web chat visitor, e.g.:\n  token=$(curl -s -X POST {base}/webchat/sessions | sed 's/.*\"token\":\"\\([^\"]*\\)\".*/\\1/')\n  curl -X POST {base}/webhooks/webchat -H \"authorization: Bearer $token\" -H 'content-type: application/json' -d '{{\"id\":\"w1\",\"text\":\"mera order kahan hai #55120\"}}'\nCtrl-C stops."
            )?;
            out.flush()?;
            tokio::signal::ctrl_c().await?;
        }
        let _ = stop.send(());
        server.await??;
        if let Ok(rt) = Arc::try_unwrap(runtime) {
            rt.shutdown().await;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn post_webhook(
    http: &reqwest::Client,
    base: &str,
    secret: &[u8],
    body: &serde_json::Value,
) -> Result<()> {
    let body = serde_json::to_vec(body)?;
    let sig = switchyard_connectors::whatsapp::signature(secret, &body);
    let r = http
        .post(format!("{base}/webhooks/whatsapp"))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sig)
        .body(body)
        .send()
        .await?;
    if !r.status().is_success() {
        anyhow::bail!(
            "the webhook answered {}: {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

pub(crate) fn chat(rules: &Path, who: &str) -> Result<ExitCode> {
    let Some(pack) = valid_pack(rules)? else {
        return Ok(ExitCode::from(1));
    };
    let tmp = tempfile::tempdir()?;
    let db = format!("sqlite://{}", tmp.path().join("chat.db").display());
    let rt = tokio::runtime::Runtime::new()?;
    let mut out = std::io::stdout();
    writeln!(
        out,
        "Talking to {} as +{who} on a temporary store (orders come from the demo store).\nType a message; a number picks a choice; /state shows the conversation; /quit or Ctrl-D ends.",
        rules.display()
    )?;
    rt.block_on(async {
        let channel = Arc::new(switchyard_connectors::sandbox::SandboxChannel::new());
        let runtime = start_runtime(
            pack,
            &db,
            channel.clone(),
            Arc::new(switchyard_connectors::sandbox::SandboxNotifier::default()),
            &[],
        )
        .await?;
        let mut choices: Vec<(String, String)> = Vec::new();
        let stdin = std::io::stdin();
        let prompt = |out: &mut std::io::Stdout| -> Result<()> {
            use std::io::IsTerminal;
            if std::io::stdin().is_terminal() {
                write!(out, "> ")?;
                out.flush()?;
            }
            Ok(())
        };
        prompt(&mut out)?;
        for (i, line) in stdin.lock().lines().enumerate() {
            let line = line?;
            let text = line.trim();
            match text {
                "" => {
                    prompt(&mut out)?;
                    continue;
                }
                "/quit" | "/exit" => break,
                "/state" => {
                    print_state(&mut out, &runtime.engine, who, "").await?;
                    prompt(&mut out)?;
                    continue;
                }
                _ => {}
            }
            let picked = text
                .parse::<usize>()
                .ok()
                .and_then(|n| n.checked_sub(1))
                .and_then(|n| choices.get(n))
                .cloned();
            let ev = match &picked {
                Some((id, title)) => msg(who, i, "button", title, Some(id)),
                None => msg(who, i, "text", text, None),
            };
            let before = channel.sent().len();
            runtime.ingest(vec![ev]).await?;
            settle(&runtime).await?;
            let sent = channel.sent();
            if sent.len() == before {
                writeln!(out, "(no reply)")?;
                print_state(&mut out, &runtime.engine, who, "").await?;
            }
            choices = print_replies(&mut out, who, &sent[before..], true)?;
            prompt(&mut out)?;
        }
        if let Ok(rt) = Arc::try_unwrap(runtime) {
            rt.shutdown().await;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn msg(
    who: &str,
    i: usize,
    kind: &str,
    text: &str,
    choice: Option<&str>,
) -> switchyard_engine::model::Inbound {
    switchyard_engine::model::Inbound::Message {
        channel: "whatsapp".into(),
        from: who.into(),
        name: Some(format!("Customer {}", &who[who.len().saturating_sub(4)..])),
        phone: Some(format!("+{who}")),
        provider_id: format!("demo-{i}"),
        kind: kind.into(),
        text: text.into(),
        choice: choice.map(String::from),
        payload: serde_json::Value::Null,
    }
}

/// Waits until the inbox is processed and nothing is waiting to be sent.
pub(crate) async fn settle(rt: &switchyard_engine::worker::Runtime) -> Result<()> {
    for _ in 0..500 {
        if rt.engine.settled().await? {
            return Ok(());
        }
        rt.wake_outbox();
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    anyhow::bail!("the engine did not finish within 5 s")
}
