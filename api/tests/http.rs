//! The webhook routes over real HTTP on loopback, with a real SQLite file behind them.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use switchyard_api::{launch, AppState};
use switchyard_connectors::sandbox::{SandboxChannel, SandboxNotifier};
use switchyard_engine::sqlite::SqliteStore;
use switchyard_engine::worker::{Runtime, WorkerConfig};
use switchyard_engine::{Engine, Store};

const PACK: &str = r#"
version: 1
settings: { default_queue: support }
queues: { support: { assignment: round_robin }, brand_b: { assignment: round_robin } }
rules:
  - name: echo
    when: message.received
    then: [ { reply: { text: "got: {{message.text}}" } } ]
  - name: a failed delivery goes to a person
    when: message.status
    if: event.status == "failed"
    then:
      - tag: delivery_failed
      - handoff: { queue: brand_b, note: "Delivery failed: {{event.error}}" }
"#;

const TEXT: &str = r#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550000000","phone_number_id":"111"},"contacts":[{"profile":{"name":"Ayesha"},"wa_id":"923001234567"}],"messages":[{"from":"923001234567","id":"wamid.ONE","timestamp":"1700000000","type":"text","text":{"body":"hello"}}]}}]}]}"#;

/// `SWITCHYARD_ADMIN_TOKEN` of the test servers.
const ADMIN: &str = "test-admin-token";

struct Server {
    base: String,
    channel: Arc<SandboxChannel>,
    store: Arc<dyn Store>,
    runtime: Arc<Runtime>,
    _dir: tempfile::TempDir,
}

async fn server(secret: Option<&str>, body_limit: usize) -> Server {
    server_sending_with(secret, body_limit, None, Default::default(), &[]).await
}

/// A server whose replies go to `channel` (the sandbox when `None`).
async fn server_sending_with(
    secret: Option<&str>,
    body_limit: usize,
    channel_override: Option<Arc<dyn switchyard_engine::ports::Channel>>,
    numbers: switchyard_connectors::whatsapp::Numbers,
    default_queues: &[(&str, &str)],
) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&format!("sqlite://{}", dir.path().join("s.db").display()))
            .await
            .unwrap(),
    );
    let l = switchyard_rules::load_files(
        vec![switchyard_rules::SourceFile {
            rel: "p.yaml".into(),
            display: "p.yaml".into(),
            text: PACK.into(),
        }],
        "t",
    );
    let lookup = Arc::new(switchyard_connectors::demo::DemoStore::new(vec![]));
    let mut engine = Engine::new(store.clone(), Arc::new(l.pack.unwrap()), lookup);
    for (channel, queue) in default_queues {
        engine = engine.with_default_queue(channel, queue);
    }
    let engine = Arc::new(engine);
    let channel = Arc::new(SandboxChannel::new());
    let cfg = WorkerConfig {
        poll: Duration::from_millis(20),
        backoff: Duration::from_millis(20),
        ..Default::default()
    };
    let runtime = Arc::new(
        Runtime::start(
            engine,
            channel_override.unwrap_or_else(|| channel.clone()),
            Arc::new(SandboxNotifier::default()),
            cfg,
        )
        .await
        .unwrap(),
    );
    let state = Arc::new(AppState {
        runtime: runtime.clone(),
        whatsapp_verify_token: Some("verify-me".into()),
        whatsapp_app_secret: secret.map(|s| s.as_bytes().to_vec()),
        whatsapp_numbers: numbers,
        body_limit,
        admin_token: Some(ADMIN.into()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(launch(listener, state, std::future::pending()));
    Server {
        base,
        channel,
        store,
        runtime,
        _dir: dir,
    }
}

/// An HTTP client (after installing the process's TLS provider, as the binary does).
fn client() -> reqwest::Client {
    switchyard_connectors::cloud_api::install_tls();
    reqwest::Client::new()
}

async fn post_whatsapp(c: &reqwest::Client, s: &Server, body: &str) -> reqwest::Response {
    c.post(format!("{}/webhooks/whatsapp", s.base))
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

fn sign(secret: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn replies(s: &Server, n: usize) -> Vec<String> {
    for _ in 0..250 {
        let sent = s.channel.sent();
        if sent.len() >= n {
            return sent.into_iter().map(|(_, m)| m.text).collect();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("expected {n} replies, got {:?}", s.channel.sent());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_the_verification_handshake() {
    let s = server(None, 1 << 20).await;
    let c = client();
    assert_eq!(
        c.get(format!("{}/healthz", s.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(format!("{}/readyz", s.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ok = c.get(format!("{}/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge=1158201444", s.base)).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "1158201444");
    let bad = c
        .get(format!(
            "{}/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1",
            s.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 403);
    let e: Value = bad.json().await.unwrap();
    assert_eq!(e["error"]["code"], "forbidden");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whatsapp_message_is_committed_answered_and_deduplicated() {
    let s = server(None, 1 << 20).await;
    let c = client();
    let r: Value = post_whatsapp(&c, &s, TEXT).await.json().await.unwrap();
    assert_eq!(r, json!({ "received": 1, "duplicates": 0, "statuses": 0 }));
    // Meta redelivers: acknowledged, nothing done twice.
    let r: Value = post_whatsapp(&c, &s, TEXT).await.json().await.unwrap();
    assert_eq!(r["duplicates"], 1);
    assert_eq!(replies(&s, 1).await, ["got: hello"]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        s.channel.sent().len(),
        1,
        "one reply for a redelivered message"
    );
    let ids = s.store.conversation_ids().await.unwrap();
    assert_eq!(ids.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_are_required_when_an_app_secret_is_set() {
    let s = server(Some("app-secret"), 1 << 20).await;
    let c = client();
    let missing = c
        .post(format!("{}/webhooks/whatsapp", s.base))
        .body(TEXT)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 401);
    let wrong = c
        .post(format!("{}/webhooks/whatsapp", s.base))
        .header("X-Hub-Signature-256", sign("other", TEXT))
        .body(TEXT)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(
        s.store.pending_inbox(0, 10).await.unwrap().is_empty()
            && s.store.conversation_ids().await.unwrap().is_empty(),
        "nothing stored"
    );
    let good = c
        .post(format!("{}/webhooks/whatsapp", s.base))
        .header("X-Hub-Signature-256", sign("app-secret", TEXT))
        .body(TEXT)
        .send()
        .await
        .unwrap();
    assert_eq!(good.status(), 200);
    assert_eq!(replies(&s, 1).await, ["got: hello"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_get_json_errors_and_lose_nothing() {
    let s = server(None, 2048).await;
    let c = client();
    let bad = c
        .post(format!("{}/webhooks/whatsapp", s.base))
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let e: Value = bad.json().await.unwrap();
    assert_eq!(e["error"]["code"], "bad_request");
    let big = c
        .post(format!("{}/webhooks/whatsapp", s.base))
        .body("x".repeat(10_000))
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 413);
    let e: Value = big.json().await.unwrap();
    assert_eq!(e["error"]["code"], "too_large");
    let web = c
        .post(format!("{}/webhooks/webchat", s.base))
        .json(&json!({ "id": "w1", "from": "visitor-7", "text": "hi" }))
        .send()
        .await
        .unwrap();
    assert_eq!(web.status(), 200);
    let both = c
        .post(format!("{}/webhooks/webchat", s.base))
        .json(&json!({ "id": "w2", "from": "v", "text": "a", "button": "b" }))
        .send()
        .await
        .unwrap();
    assert_eq!(both.status(), 400);
    let unknown = c
        .post(format!("{}/webhooks/webchat", s.base))
        .json(&json!({ "id": "w3", "from": "v", "text": "a", "extra": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 400);
    assert_eq!(replies(&s, 1).await, ["got: hi"]);
}

/// The provider id of the conversation's first reply, once the channel has taken it.
async fn sent_id(s: &Server, conv: i64) -> String {
    for _ in 0..250 {
        let out = s
            .store
            .messages(conv)
            .await
            .unwrap()
            .into_iter()
            .find(|m| m.direction == switchyard_engine::model::Direction::Out);
        if let Some(id) = out.and_then(|m| m.provider_id) {
            return id;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the reply of conversation {conv} was never sent");
}

fn status_body(id: &str, status: &str, error: Option<i64>) -> String {
    status_body_to("923001234567", id, status, error)
}

fn status_body_to(to: &str, id: &str, status: &str, error: Option<i64>) -> String {
    let errors = error
        .map(|c| json!([{ "code": c, "title": "Re-engagement message" }]))
        .unwrap_or(json!([]));
    json!({ "object": "whatsapp_business_account", "entry": [ { "id": "1", "changes": [ { "field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": { "display_phone_number": "15550000000", "phone_number_id": "111" },
        "statuses": [ { "id": id, "status": status, "timestamp": "1700000001", "recipient_id": to, "errors": errors } ] } } ] } ] })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_statuses_only_move_forward() {
    let s = server(None, 1 << 20).await;
    let c = client();
    c.post(format!("{}/webhooks/whatsapp", s.base))
        .body(TEXT)
        .send()
        .await
        .unwrap();
    replies(&s, 1).await;
    let conv = s.store.conversation_ids().await.unwrap()[0];
    let wamid = sent_id(&s, conv).await;
    let status_of = || async {
        s.store
            .messages(conv)
            .await
            .unwrap()
            .into_iter()
            .find(|m| m.provider_id.as_deref() == Some(wamid.as_str()))
            .unwrap()
    };
    for (st, err, want) in [
        ("read", None, "read"),
        ("delivered", None, "read"),
        ("read", None, "read"),
        ("failed", Some(131047), "read"),
    ] {
        let r = c
            .post(format!("{}/webhooks/whatsapp", s.base))
            .body(status_body(&wamid, st, err))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(status_of().await.status, want, "after {st}");
    }
    // A failure before delivery is recorded with its code, visible to agents.
    c.post(format!("{}/webhooks/whatsapp", s.base)).body(r#"{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages","value":{"contacts":[{"profile":{"name":"B"},"wa_id":"923009999999"}],"messages":[{"from":"923009999999","id":"wamid.TWO","type":"text","text":{"body":"second"}}]}}]}]}"#).send().await.unwrap();
    replies(&s, 2).await;
    let conv2 = *s.store.conversation_ids().await.unwrap().last().unwrap();
    let id2 = sent_id(&s, conv2).await;
    c.post(format!("{}/webhooks/whatsapp", s.base))
        .body(status_body_to("923009999999", &id2, "failed", Some(131026)))
        .send()
        .await
        .unwrap();
    let failed = s
        .store
        .messages(conv2)
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.provider_id.as_deref() == Some(id2.as_str()))
        .unwrap();
    assert_eq!(failed.status, "failed");
    assert!(failed.error.unwrap().starts_with("131026"));
    // A status for a message we never sent is recorded, not an error.
    let r = c
        .post(format!("{}/webhooks/whatsapp", s.base))
        .body(status_body("wamid.NOT-OURS", "delivered", None))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let audit = s
        .store
        .audit("message:whatsapp:wamid.NOT-OURS")
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].action, "status_for_unknown_message");
    // The `message.status` rules ran: for the failure, once per status of a message.
    let mut handed = None;
    for _ in 0..250 {
        let conv = s.store.conversation(conv2).await.unwrap().unwrap();
        if conv.tags.iter().any(|t| t == "delivery_failed") {
            handed = Some(conv);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let handed = handed.expect("the message.status rule tagged the conversation");
    assert_eq!(handed.queue.as_deref(), Some("brand_b"));
    let notes = s.store.notes(conv2).await.unwrap();
    assert!(
        notes
            .iter()
            .any(|n| n.text == "Delivery failed: 131026: Re-engagement message"),
        "{notes:?}"
    );
    let read_events = s
        .store
        .traces(conv)
        .await
        .unwrap()
        .iter()
        .filter(|(_, t)| t.to_string().contains(r#""status":"read""#))
        .count();
    assert_eq!(
        read_events, 1,
        "read was delivered twice; the rules saw it once"
    );
    let conv1 = s.store.conversation(conv).await.unwrap().unwrap();
    assert!(
        conv1.tags.is_empty(),
        "statuses that are not failures change nothing here"
    );
}

// ---- sending through a fake Graph API server -----------------------------------------------

mod graph {
    use super::*;
    use switchyard_connectors::cloud_api::{CloudApi, CloudApiConfig};
    use wiremock::matchers::{body_string_contains, header, method, path};
    use wiremock::{Mock, MockServer, Request, ResponseTemplate};

    fn graph_error(status: u16, code: i64) -> ResponseTemplate {
        ResponseTemplate::new(status).set_body_json(json!({ "error": {
            "message": format!("(#{code}) title"), "type": "OAuthException", "code": code,
            "error_data": { "messaging_product": "whatsapp", "details": "details" }, "fbtrace_id": "A" } }))
    }

    /// Waits until `n` replies exist and none is pending or being sent.
    async fn sends_finished(s: &Server, n: usize) {
        for _ in 0..250 {
            let out = s.store.outbox_payloads().await.unwrap();
            if out.len() == n && out.iter().all(|(st, _)| st != "pending" && st != "sending") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "replies not finished: {:?}",
            s.store.outbox_payloads().await.unwrap()
        );
    }

    fn text_from(from: &str, id: &str, body: &str) -> String {
        json!({ "object": "whatsapp_business_account", "entry": [ { "id": "1", "changes": [ { "field": "messages", "value": {
            "messaging_product": "whatsapp", "metadata": { "display_phone_number": "15550000000", "phone_number_id": "111" },
            "contacts": [ { "profile": { "name": "C" }, "wa_id": from } ],
            "messages": [ { "from": from, "id": id, "timestamp": "1700000000", "type": "text", "text": { "body": body } } ] } } ] } ] })
        .to_string()
    }

    /// Every reply ends in its right state: sent after a throttle or a 500, failed with its
    /// code when undeliverable, and failed + handed to a human when the window is closed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_graph_outcome_ends_in_the_right_state() {
        let graph = MockServer::start().await;
        let messages = || path("/v21.0/111/messages");
        let token = || header("authorization", "Bearer TEST-TOKEN");
        for (text, response, times) in [
            ("got: window", graph_error(400, 131047), None),
            ("got: invalid", graph_error(400, 131026), None),
            ("got: throttled", graph_error(400, 130429), Some(1)),
            ("got: flaky", ResponseTemplate::new(500), Some(1)),
        ] {
            let m = Mock::given(method("POST"))
                .and(messages())
                .and(token())
                .and(body_string_contains(text));
            let m = m.respond_with(response).with_priority(1);
            match times {
                Some(n) => m.up_to_n_times(n).mount(&graph).await,
                None => m.mount(&graph).await,
            }
        }
        // Everything else is accepted, each message with an id of its own.
        Mock::given(method("POST"))
            .and(messages())
            .and(token())
            .respond_with(|r: &Request| {
                let to = serde_json::from_slice::<Value>(&r.body).unwrap()["to"].as_str().unwrap().to_string();
                ResponseTemplate::new(200).set_body_json(json!({ "messaging_product": "whatsapp",
                    "contacts": [ { "input": to, "wa_id": to } ], "messages": [ { "id": format!("wamid.out.{to}") } ] }))
            })
            .with_priority(5)
            .mount(&graph)
            .await;
        let api = CloudApi::new(CloudApiConfig {
            base_url: graph.uri(),
            ..CloudApiConfig::new("111", "TEST-TOKEN")
        })
        .unwrap();
        let s =
            server_sending_with(None, 1 << 20, Some(Arc::new(api)), Default::default(), &[]).await;
        let c = client();
        for (from, text) in [
            ("923000000001", "window"),
            ("923000000002", "invalid"),
            ("923000000003", "throttled"),
            ("923000000004", "flaky"),
        ] {
            let r =
                post_whatsapp(&c, &s, &text_from(from, &format!("wamid.in.{from}"), text)).await;
            assert_eq!(r.status(), 200);
        }
        sends_finished(&s, 4).await;
        let requests = graph.received_requests().await.unwrap();
        let tries = |t: &str| {
            requests
                .iter()
                .filter(|r| String::from_utf8_lossy(&r.body).contains(t))
                .count()
        };
        let mut by_text = std::collections::HashMap::new();
        for id in s.store.conversation_ids().await.unwrap() {
            for m in s.store.messages(id).await.unwrap() {
                if m.direction == switchyard_engine::model::Direction::Out {
                    by_text.insert(m.body.clone(), (id, m));
                }
            }
        }
        let (_, m) = &by_text["got: throttled"];
        assert_eq!(
            (m.status.as_str(), tries("got: throttled")),
            ("sent", 2),
            "130429, then sent"
        );
        assert_eq!(m.provider_id.as_deref(), Some("wamid.out.+923000000003"));
        let (_, m) = &by_text["got: flaky"];
        assert_eq!(
            (m.status.as_str(), tries("got: flaky")),
            ("sent", 2),
            "500, then sent"
        );
        let (_, m) = &by_text["got: invalid"];
        assert_eq!(
            (m.status.as_str(), tries("got: invalid")),
            ("failed", 1),
            "131026 is not retried"
        );
        assert!(
            m.error.as_deref().unwrap_or("").contains("131026"),
            "{:?}",
            m.error
        );
        let (conv, m) = &by_text["got: window"];
        assert_eq!(
            (m.status.as_str(), tries("got: window")),
            ("failed", 1),
            "131047 is not retried free-form"
        );
        assert!(
            m.error.as_deref().unwrap_or("").contains("131047"),
            "{:?}",
            m.error
        );
        let notes = s.store.notes(*conv).await.unwrap();
        assert!(
            notes.iter().any(|n| n.text.contains("24-hour window")),
            "a human is told why: {notes:?}"
        );
        let conv = s.store.conversation(*conv).await.unwrap().unwrap();
        assert_eq!(
            conv.queue.as_deref(),
            Some("support"),
            "handed to the default queue"
        );
    }

    /// Two business numbers (two brands): each customer conversation stays on the number it
    /// came in on, replies go out from that number with its own token, and its hand-offs go
    /// to its own default queue; statuses find their message on the right number.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_number_answers_with_its_own_credentials_and_queue() {
        use switchyard_connectors::channels::ByChannel;
        use switchyard_connectors::whatsapp::Numbers;
        let graph = MockServer::start().await;
        let ok = |r: &Request| {
            let v = serde_json::from_slice::<Value>(&r.body).unwrap();
            let n = r.url.path().split('/').nth(2).unwrap().to_string();
            ResponseTemplate::new(200).set_body_json(json!({ "messages": [ { "id": format!("wamid.{n}.{}", v["to"].as_str().unwrap()) } ] }))
        };
        Mock::given(method("POST"))
            .and(path("/v21.0/111/messages"))
            .and(header("authorization", "Bearer TOKEN-A"))
            .respond_with(ok)
            .mount(&graph)
            .await;
        // Brand B's number: the customer's window turns out to be closed.
        Mock::given(method("POST"))
            .and(path("/v21.0/222/messages"))
            .and(header("authorization", "Bearer TOKEN-B"))
            .and(body_string_contains("closed"))
            .respond_with(graph_error(400, 131047))
            .with_priority(1)
            .mount(&graph)
            .await;
        Mock::given(method("POST"))
            .and(path("/v21.0/222/messages"))
            .and(header("authorization", "Bearer TOKEN-B"))
            .respond_with(ok)
            .with_priority(5)
            .mount(&graph)
            .await;
        let api = |id: &str, token: &str| -> Arc<dyn switchyard_engine::ports::Channel> {
            Arc::new(
                CloudApi::new(CloudApiConfig {
                    base_url: graph.uri(),
                    ..CloudApiConfig::new(id, token)
                })
                .unwrap(),
            )
        };
        let fallback: Arc<dyn switchyard_engine::ports::Channel> = Arc::new(SandboxChannel::new());
        let router = ByChannel::new(fallback)
            .with("whatsapp", api("111", "TOKEN-A"))
            .with("whatsapp:222", api("222", "TOKEN-B"));
        let numbers = Numbers::new(vec!["111".into(), "222".into()]);
        let s = server_sending_with(
            None,
            1 << 20,
            Some(Arc::new(router)),
            numbers,
            &[("whatsapp:222", "brand_b")],
        )
        .await;
        let c = client();
        let to = |number: &str, from: &str, id: &str, text: &str| {
            text_from(from, id, text).replace(
                "\"phone_number_id\":\"111\"",
                &format!("\"phone_number_id\":\"{number}\""),
            )
        };
        for body in [
            to("111", "923000000001", "wamid.a1", "hello A"),
            to("222", "923000000001", "wamid.b1", "hello B"),
            to("222", "923000000002", "wamid.b2", "closed"),
        ] {
            assert_eq!(post_whatsapp(&c, &s, &body).await.status(), 200);
        }
        sends_finished(&s, 3).await;
        let mut by_channel = std::collections::BTreeMap::new();
        for id in s.store.conversation_ids().await.unwrap() {
            let conv = s.store.conversation(id).await.unwrap().unwrap();
            let out: Vec<_> = s
                .store
                .messages(id)
                .await
                .unwrap()
                .into_iter()
                .filter(|m| m.direction == switchyard_engine::model::Direction::Out)
                .collect();
            by_channel
                .entry(conv.channel.clone())
                .or_insert_with(Vec::new)
                .push((conv, out));
        }
        assert_eq!(
            by_channel["whatsapp"].len(),
            1,
            "one conversation on brand A's number"
        );
        assert_eq!(
            by_channel["whatsapp:222"].len(),
            2,
            "the same customer has a second one on brand B's"
        );
        let (_, out) = &by_channel["whatsapp"][0];
        assert_eq!(
            out[0].provider_id.as_deref(),
            Some("wamid.111.+923000000001"),
            "answered from number A"
        );
        let b: Vec<_> = by_channel["whatsapp:222"].iter().collect();
        let sent_b = b.iter().find(|(_, out)| out[0].status == "sent").unwrap();
        assert_eq!(
            sent_b.1[0].provider_id.as_deref(),
            Some("wamid.222.+923000000001"),
            "answered from number B"
        );
        let refused = b.iter().find(|(_, out)| out[0].status == "failed").unwrap();
        assert_eq!(
            refused.0.queue.as_deref(),
            Some("brand_b"),
            "brand B's hand-offs go to brand B's queue"
        );
        // A status of number B's message finds it on number B's channel.
        let status = json!({ "object": "whatsapp_business_account", "entry": [ { "id": "1", "changes": [ { "field": "messages", "value": {
            "metadata": { "phone_number_id": "222" },
            "statuses": [ { "id": "wamid.222.+923000000001", "status": "read", "timestamp": "1700000001", "recipient_id": "923000000001" } ] } } ] } ] });
        assert_eq!(
            post_whatsapp(&c, &s, &status.to_string()).await.status(),
            200
        );
        let m = s
            .store
            .messages(sent_b.0.id)
            .await
            .unwrap()
            .into_iter()
            .find(|m| m.direction == switchyard_engine::model::Direction::Out)
            .unwrap();
        assert_eq!(m.status, "read");
    }
}

// ---- the admin API: tokens, roles, reading and claiming conversations -----------------------

mod admin {
    use super::*;
    use switchyard_engine::model::Agent;

    fn agent(id: &str, queues: &[&str]) -> Agent {
        Agent {
            id: id.into(),
            name: id.into(),
            role: "agent".into(),
            queues: queues.iter().map(|q| q.to_string()).collect(),
            capacity: 5,
            availability: "away".into(),
        }
    }

    /// A token made through the API with the admin token.
    async fn token(
        c: &reqwest::Client,
        s: &Server,
        role: &str,
        agent: Option<&str>,
    ) -> (i64, String) {
        let r = c
            .post(format!("{}/api/v1/tokens", s.base))
            .bearer_auth(ADMIN)
            .json(&json!({ "role": role, "agent": agent }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let v: Value = r.json().await.unwrap();
        (
            v["id"].as_i64().unwrap(),
            v["token"].as_str().unwrap().to_string(),
        )
    }

    /// A conversation waiting in the `support` queue (handed off by the engine).
    async fn waiting_conversation(c: &reqwest::Client, s: &Server, from: &str) -> i64 {
        let body = TEXT
            .replace("923001234567", from)
            .replace("wamid.ONE", &format!("wamid.{from}"));
        assert_eq!(post_whatsapp(c, s, &body).await.status(), 200);
        for _ in 0..250 {
            for id in s.store.conversation_ids().await.unwrap() {
                let conv = s.store.conversation(id).await.unwrap().unwrap();
                if s.store
                    .contact(conv.contact_id)
                    .await
                    .unwrap()
                    .unwrap()
                    .external_id
                    == from
                {
                    s.runtime.engine.send_refused(id, "test", 1).await.unwrap();
                    assert_eq!(
                        s.store
                            .conversation(id)
                            .await
                            .unwrap()
                            .unwrap()
                            .queue
                            .as_deref(),
                        Some("support")
                    );
                    return id;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no conversation for {from}");
    }

    /// Every route × every kind of caller: 401 without a valid token, 403 without the role or
    /// outside one's queues, the right answer otherwise.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_role_matrix() {
        let s = server(None, 1 << 20).await;
        let c = client();
        s.store
            .upsert_agent(&agent("ayesha", &["support"]), 1)
            .await
            .unwrap();
        s.store
            .upsert_agent(&agent("bilal", &["complaints"]), 1)
            .await
            .unwrap();
        let conv = waiting_conversation(&c, &s, "923001111111").await;
        let (_, ayesha) = token(&c, &s, "agent", Some("ayesha")).await;
        let (_, bilal) = token(&c, &s, "agent", Some("bilal")).await;
        let (_, sara) = token(&c, &s, "supervisor", Some("sara")).await;
        let (victim, _) = token(&c, &s, "agent", Some("zain")).await;
        let callers: [(&str, Option<&str>); 6] = [
            ("none", None),
            ("bad", Some("sy_not-a-token")),
            ("agent of the queue", Some(&ayesha)),
            ("agent of another queue", Some(&bilal)),
            ("supervisor", Some(&sara)),
            ("admin", Some(ADMIN)),
        ];
        let send = |rb: reqwest::RequestBuilder, t: Option<&str>| match t {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        };
        let get_conv = format!("{}/api/v1/conversations/{conv}", s.base);
        let mut got = Vec::new();
        for ((who, t), want) in callers.iter().zip([401, 401, 200, 403, 200, 200]) {
            let r = send(c.get(&get_conv), *t).send().await.unwrap();
            got.push((
                format!("GET conversation as {who}"),
                r.status().as_u16(),
                want,
            ));
        }
        for ((who, t), want) in callers.iter().zip([401, 401, 403, 403, 403, 201]) {
            let r = send(c.post(format!("{}/api/v1/tokens", s.base)), *t)
                .json(&json!({ "role": "supervisor" }))
                .send()
                .await
                .unwrap();
            got.push((format!("POST token as {who}"), r.status().as_u16(), want));
        }
        for ((who, t), want) in callers.iter().zip([401, 401, 403, 403, 403, 204]) {
            let r = send(c.delete(format!("{}/api/v1/tokens/{victim}", s.base)), *t)
                .send()
                .await
                .unwrap();
            got.push((format!("DELETE token as {who}"), r.status().as_u16(), want));
        }
        // Claims in this order: the agent of the queue wins, the supervisor finds it taken,
        // the admin token acts for no agent.
        let claim = format!("{}/api/v1/conversations/{conv}/claim", s.base);
        for i in [0, 1, 3, 2, 4, 5] {
            let (who, t) = callers[i];
            let want = [401, 401, 200, 403, 409, 422][i];
            let r = send(c.post(&claim), t).send().await.unwrap();
            got.push((format!("claim as {who}"), r.status().as_u16(), want));
        }
        let wrong: Vec<_> = got.iter().filter(|(_, g, w)| g != w).collect();
        assert!(wrong.is_empty(), "(route, got, wanted): {wrong:?}");
        // Now the owner, ayesha sees it; the detail has messages, notes and the window.
        let v: Value = c
            .get(&get_conv)
            .bearer_auth(&ayesha)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["conversation"]["assignee"], "ayesha");
        assert!(v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["direction"] == "in"));
        assert!(v["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["text"].as_str().unwrap().contains("24-hour window")));
        assert_eq!(v["window_open"], true);
        // Errors are JSON with a code; a missing conversation is 404; bad values name the field.
        let r = c
            .get(format!("{}/api/v1/conversations/999999", s.base))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"]["code"],
            "not_found"
        );
        for (body, field) in [
            (json!({ "role": "agent" }), "agent:"),
            (json!({ "role": "root" }), "role:"),
        ] {
            let r = c
                .post(format!("{}/api/v1/tokens", s.base))
                .bearer_auth(ADMIN)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 422);
            assert!(r.json::<Value>().await.unwrap()["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with(field));
        }
        let r = c
            .post(format!("{}/api/v1/tokens", s.base))
            .bearer_auth(ADMIN)
            .body("{")
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
    }

    /// Of 20 agents claiming one conversation at once, exactly one wins; the others are told
    /// who owns it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_claim_wins() {
        let s = server(None, 1 << 20).await;
        let c = client();
        let conv = waiting_conversation(&c, &s, "923002222222").await;
        let mut tokens = Vec::new();
        for i in 0..20 {
            let id = format!("agent{i}");
            s.store
                .upsert_agent(&agent(&id, &["support"]), 1)
                .await
                .unwrap();
            tokens.push((id.clone(), token(&c, &s, "agent", Some(&id)).await.1));
        }
        let url = format!("{}/api/v1/conversations/{conv}/claim", s.base);
        let tasks: Vec<_> = tokens
            .into_iter()
            .map(|(_, t)| {
                let (c, url) = (c.clone(), url.clone());
                tokio::spawn(async move {
                    let r = c.post(&url).bearer_auth(t).send().await.unwrap();
                    (r.status().as_u16(), r.json::<Value>().await.unwrap())
                })
            })
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        let winners: Vec<_> = results.iter().filter(|(st, _)| *st == 200).collect();
        assert_eq!(winners.len(), 1, "{results:?}");
        let owner = winners[0].1["assignee"].as_str().unwrap().to_string();
        for (st, v) in results.iter().filter(|(st, _)| *st != 200) {
            assert_eq!(*st, 409);
            assert!(v["error"]["message"]
                .as_str()
                .unwrap()
                .ends_with(&format!("owned by {owner}")));
        }
        assert_eq!(
            s.store
                .conversation(conv)
                .await
                .unwrap()
                .unwrap()
                .assignee
                .as_deref(),
            Some(owner.as_str())
        );
    }

    /// Tokens are kept as hashes only, and a revoked token stops working at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tokens_are_hashed_and_revocable() {
        let s = server(None, 1 << 20).await;
        let c = client();
        let (id, t) = token(&c, &s, "supervisor", None).await;
        assert!(t.starts_with("sy_") && t.len() == 67, "{t}");
        let url = format!("{}/api/v1/conversations/1", s.base);
        assert_ne!(
            c.get(&url).bearer_auth(&t).send().await.unwrap().status(),
            401
        );
        let mut stored = Vec::new();
        for e in std::fs::read_dir(s._dir.path()).unwrap() {
            stored.extend(std::fs::read(e.unwrap().path()).unwrap());
        }
        let needle = &t.as_bytes()[3..];
        assert!(
            !stored.windows(needle.len()).any(|w| w == needle),
            "the token is stored in plain text"
        );
        let r = c
            .delete(format!("{}/api/v1/tokens/{id}", s.base))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        assert_eq!(
            c.get(&url).bearer_auth(&t).send().await.unwrap().status(),
            401
        );
        let r = c
            .delete(format!("{}/api/v1/tokens/{id}", s.base))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "revoking twice");
        assert_eq!(
            s.store.audit(&format!("token:{id}")).await.unwrap().len(),
            2,
            "created and revoked, audited"
        );
    }
}
