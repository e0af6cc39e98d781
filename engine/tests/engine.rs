//! The engine against a real SQLite file: durability, ordering, exactly-one owner, the loop
//! guard, outbox retries, and notes that never leave. Each story takes an `Arc<dyn Store>`,
//! so the PostgreSQL store will run the same suite.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use switchyard_engine::access::Role;
use switchyard_engine::model::*;
use switchyard_engine::model::{Priority, Status};
use switchyard_engine::pipeline::{ActError, Actor, AgentAction};
use switchyard_engine::ports::{Channel, Lookup, LookupError, Notifier, SendError};
use switchyard_engine::store::postgres::PgStore;
use switchyard_engine::store::sqlite::SqliteStore;
use switchyard_engine::store::{Ingested, Store};
use switchyard_engine::worker::{Runtime, WorkerConfig};
use switchyard_engine::Engine;
use switchyard_rules::pack::LookupAction;
use switchyard_rules::{load_files, Pack, SourceFile};

const ECHO_PACK: &str = r#"
version: 1
settings: { default_queue: support }
queues: { support: { assignment: round_robin } }
rules:
  - name: echo
    when: message.received
    then:
      - reply: { text: "echo {{message.text}}" }
      - note: "internal-note-{{message.text}}"
"#;

fn pack(yaml: &str) -> Arc<Pack> {
    let l = load_files(
        vec![SourceFile {
            rel: "p.yaml".into(),
            display: "p.yaml".into(),
            text: yaml.into(),
        }],
        "test",
    );
    let msgs: Vec<String> = l.diagnostics.items.iter().map(|d| d.to_string()).collect();
    Arc::new(
        l.pack
            .unwrap_or_else(|| panic!("invalid test pack:\n{}", msgs.join("\n"))),
    )
}

struct NoLookup;

#[async_trait]
impl Lookup for NoLookup {
    async fn call(
        &self,
        _: &str,
        _: LookupAction,
        _: &Value,
        _: Option<&str>,
    ) -> Result<Option<Value>, LookupError> {
        Ok(None)
    }
}

/// Records sends; fails the first `fail_first` attempts of each message with `Retry`, and
/// every message whose text contains "PERMANENT" with `Permanent`.
#[derive(Default)]
struct Recorder {
    sent: Mutex<Vec<Outbound>>,
    attempts: Mutex<BTreeMap<String, u32>>,
    fail_first: u32,
    log: Option<std::path::PathBuf>,
    delay: Duration,
}

#[async_trait]
impl Channel for Recorder {
    async fn send(&self, m: &Outbound) -> Result<String, SendError> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let n = {
            let mut a = self.attempts.lock().unwrap();
            let n = a.entry(m.text.clone()).or_insert(0);
            *n += 1;
            *n
        };
        if m.text.contains("PERMANENT") {
            return Err(SendError::Permanent("131026: message undeliverable".into()));
        }
        if n <= self.fail_first {
            return Err(SendError::Retry("503 from the provider".into()));
        }
        if let Some(path) = &self.log {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .unwrap();
            // One write per line: the sends run concurrently, and `writeln!` may write the
            // text and its newline separately, interleaving two sends into one line.
            f.write_all(format!("{}\n", m.text).as_bytes()).unwrap();
            f.sync_all().unwrap();
        }
        self.sent.lock().unwrap().push(m.clone());
        Ok(format!("wamid.{}.{}", m.to, m.text))
    }
}

#[async_trait]
impl Notifier for Recorder {
    async fn notify(&self, _: &str, body: &Value) -> Result<(), LookupError> {
        self.sent.lock().unwrap().push(Outbound {
            channel: "webhook".into(),
            to: String::new(),
            text: body.to_string(),
            buttons: vec![],
            list: None,
            template: None,
        });
        Ok(())
    }
}

fn msg(from: &str, id: &str, text: &str) -> Inbound {
    Inbound::Message {
        channel: "webchat".into(),
        from: from.into(),
        name: Some(format!("Customer {from}")),
        phone: None,
        provider_id: id.into(),
        kind: "text".into(),
        text: text.into(),
        choice: None,
        payload: Value::Null,
    }
}

async fn sqlite(dir: &Path) -> Arc<dyn Store> {
    let url = format!("sqlite://{}", dir.join("switchyard.db").display());
    Arc::new(SqliteStore::open(&url).await.unwrap())
}

fn fast() -> WorkerConfig {
    WorkerConfig {
        concurrency: 8,
        poll: Duration::from_millis(20),
        max_attempts: 4,
        backoff: Duration::from_millis(10),
        ..WorkerConfig::default()
    }
}

/// The echo pack's engine on `store`, with workers sending through `ch`.
async fn echo_runtime(store: &Arc<dyn Store>, ch: Recorder) -> (Arc<Recorder>, Runtime) {
    let engine = Arc::new(Engine::new(
        store.clone(),
        pack(ECHO_PACK),
        Arc::new(NoLookup),
    ));
    let ch = Arc::new(ch);
    let rt = Runtime::start(engine, ch.clone(), ch.clone(), fast())
        .await
        .unwrap();
    (ch, rt)
}

/// Waits until every inbox row is processed and no outbound row is pending or sending.
async fn settle(store: &Arc<dyn Store>) {
    for _ in 0..1500 {
        let inbox = store.pending_inbox(0, 1).await.unwrap().is_empty();
        let out = store.outbox_payloads().await.unwrap();
        let busy = out.iter().any(|(s, _)| s == "pending" || s == "sending");
        if inbox && !busy {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pending = store.pending_inbox(0, 1000).await.unwrap().len();
    let out = store.outbox_payloads().await.unwrap();
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for (s, _) in &out {
        *by.entry(s.clone()).or_default() += 1;
    }
    panic!("the workers did not finish in 30 s: {pending} inbox rows pending, outbox {by:?}");
}

async fn all_messages(store: &Arc<dyn Store>) -> Vec<Message> {
    let mut out = Vec::new();
    for id in store.conversation_ids().await.unwrap() {
        out.extend(store.messages(id).await.unwrap());
    }
    out
}

// ---- stories --------------------------------------------------------------------------

async fn redelivery_is_processed_once(store: Arc<dyn Store>) {
    let (ch, rt) = echo_runtime(&store, Recorder::default()).await;
    let first = rt
        .ingest(vec![msg("c1", "wamid.A", "hello")])
        .await
        .unwrap();
    let again = rt
        .ingest(vec![
            msg("c1", "wamid.A", "hello"),
            msg("c1", "wamid.A", "hello"),
        ])
        .await
        .unwrap();
    assert!(matches!(first[0], Ingested::New(_)));
    assert_eq!(again, vec![Ingested::Duplicate, Ingested::Duplicate]);
    settle(&store).await;
    rt.shutdown().await;
    let msgs = all_messages(&store).await;
    assert_eq!(
        msgs.iter().filter(|m| m.direction == Direction::In).count(),
        1
    );
    assert_eq!(
        ch.sent.lock().unwrap().len(),
        1,
        "one reply for one message"
    );
}

async fn order_per_conversation_under_load(store: Arc<dyn Store>) {
    let engine = Arc::new(Engine::new(
        store.clone(),
        pack(ECHO_PACK),
        Arc::new(NoLookup),
    ));
    let ch = Arc::new(Recorder::default());
    let rt = Arc::new(
        Runtime::start(engine, ch.clone(), ch.clone(), fast())
            .await
            .unwrap(),
    );
    let (convs, per) = (40, 25);
    let mut tasks = Vec::new();
    for c in 0..convs {
        let rt = rt.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                rt.ingest(vec![msg(
                    &format!("c{c}"),
                    &format!("c{c}-{i}"),
                    &format!("c{c}-m{i:02}"),
                )])
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    settle(&store).await;
    let rt = Arc::try_unwrap(rt).ok().expect("sole owner");
    rt.shutdown().await;
    let ids = store.conversation_ids().await.unwrap();
    assert_eq!(ids.len(), convs);
    for id in ids {
        let m = store.messages(id).await.unwrap();
        let inbound: Vec<&str> = m
            .iter()
            .filter(|x| x.direction == Direction::In)
            .map(|x| x.body.as_str())
            .collect();
        let replies: Vec<String> = m
            .iter()
            .filter(|x| x.direction == Direction::Out)
            .map(|x| x.body.replace("echo ", ""))
            .collect();
        assert_eq!(inbound.len(), per);
        let mut sorted = inbound.clone();
        sorted.sort();
        assert_eq!(inbound, sorted, "conversation {id} processed out of order");
        assert_eq!(replies, inbound, "each message answered once, in order");
    }
    assert_eq!(ch.sent.lock().unwrap().len(), convs * per);
}

async fn one_owner_when_agents_claim_at_once(store: Arc<dyn Store>) {
    let (_, conv, _) = store
        .open_conversation("webchat", "c9", None, None, 0)
        .await
        .unwrap();
    let engine = Arc::new(Engine::new(
        store.clone(),
        pack(ECHO_PACK),
        Arc::new(NoLookup),
    ));
    for a in 0..10 {
        let a = agent(&format!("agent{a}"), &["support"], 5, "away");
        store.upsert_agent(&a, "system", 0).await.unwrap();
    }
    let mut tasks = Vec::new();
    for a in 0..10 {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            let me = format!("agent{a}");
            let by = Actor {
                id: me.clone(),
                agent: Some(me.clone()),
                role: Role::Agent,
            };
            (me, engine.act(conv.id, AgentAction::Claim, &by, 1).await)
        }));
    }
    let mut winners = Vec::new();
    let mut owners = HashSet::new();
    for t in tasks {
        let (a, r) = t.await.unwrap();
        match r {
            Ok(_) => winners.push(a),
            Err(ActError::Taken { owner, .. }) => {
                owners.insert(owner);
            }
            Err(e) => panic!("a claim failed: {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one claim wins: {winners:?}");
    assert!(
        owners.iter().all(|o| *o == winners[0]),
        "the losers are told the real owner"
    );
    let c = store.conversation(conv.id).await.unwrap().unwrap();
    assert_eq!(c.assignee.as_deref(), Some(winners[0].as_str()));
}

async fn loop_guard_cuts_a_self_triggering_rule(store: Arc<dyn Store>) {
    let flip = r#"
version: 1
settings: { default_queue: support }
queues: { support: { assignment: manual } }
rules:
  - name: to waiting
    when: conversation.status_changed
    if: conversation.status == "open"
    then: [ { set_status: waiting } ]
  - name: to open
    when: conversation.status_changed
    if: conversation.status == "waiting"
    then: [ { set_status: open } ]
"#;
    let engine = Engine::new(store.clone(), pack(flip), Arc::new(NoLookup));
    store.ingest(vec![msg("c1", "w1", "hi")], 0).await.unwrap();
    let row = store.pending_inbox(0, 10).await.unwrap().remove(0);
    let done = tokio::time::timeout(Duration::from_secs(10), engine.process(&row, 1)).await;
    let p = done.expect("the loop guard must stop the cycle").unwrap();
    let audit = store
        .audit(&format!("conversation:{}", p.conversation_id))
        .await
        .unwrap();
    let guard: Vec<&AuditRecord> = audit.iter().filter(|a| a.action == "loop_guard").collect();
    assert_eq!(guard.len(), 1, "the cut is audited once");
    let flips = audit
        .iter()
        .filter(|a| a.action == "status_changed")
        .count();
    assert!(
        (3..=20).contains(&flips),
        "a few flips, then the cut: {flips}"
    );
    assert!(p.trace.to_string().contains("loop_guard"));
    assert!(
        store.pending_inbox(0, 10).await.unwrap().is_empty(),
        "the event is done"
    );
}

async fn outbox_retries_with_backoff_and_records_failures(store: Arc<dyn Store>) {
    let (ch, rt) = echo_runtime(
        &store,
        Recorder {
            fail_first: 2,
            ..Default::default()
        },
    )
    .await;
    rt.ingest(vec![msg("c1", "w1", "flaky"), msg("c2", "w2", "PERMANENT")])
        .await
        .unwrap();
    settle(&store).await;
    rt.shutdown().await;
    let msgs = all_messages(&store).await;
    let flaky = msgs.iter().find(|m| m.body == "echo flaky").unwrap();
    assert_eq!(flaky.status, "sent");
    assert!(flaky
        .provider_id
        .as_deref()
        .is_some_and(|p| p.starts_with("wamid.")));
    assert_eq!(
        ch.attempts.lock().unwrap()["echo flaky"],
        3,
        "two temporary failures, then sent"
    );
    let bad = msgs.iter().find(|m| m.body == "echo PERMANENT").unwrap();
    assert_eq!(bad.status, "failed");
    assert!(
        bad.error.as_deref().unwrap_or("").contains("131026"),
        "the reason is visible to agents"
    );
    assert_eq!(
        ch.attempts.lock().unwrap()["echo PERMANENT"],
        1,
        "a permanent failure is not retried"
    );
}

async fn delivery_statuses_only_move_forward(store: Arc<dyn Store>) {
    use switchyard_engine::store::StatusRecorded as S;
    let (_ch, rt) = echo_runtime(&store, Recorder::default()).await;
    rt.ingest(vec![msg("c1", "w1", "hi")]).await.unwrap();
    settle(&store).await;
    rt.shutdown().await;
    let sent = all_messages(&store)
        .await
        .into_iter()
        .find(|m| m.direction == Direction::Out)
        .unwrap();
    let wamid = sent.provider_id.clone().unwrap();
    let status = || async {
        all_messages(&store)
            .await
            .into_iter()
            .find(|m| m.id == sent.id)
            .unwrap()
    };
    let rec = |st: &'static str, err: Option<&'static str>| {
        let (store, wamid) = (store.clone(), wamid.clone());
        async move {
            store
                .record_status("webchat", &wamid, st, err, 5)
                .await
                .unwrap()
        }
    };
    assert_eq!(rec("delivered", None).await, S::Updated);
    assert_eq!(rec("read", None).await, S::Updated);
    assert_eq!(
        rec("delivered", None).await,
        S::Unchanged,
        "a late delivered"
    );
    assert_eq!(
        rec("read", None).await,
        S::Repeated,
        "the same status twice"
    );
    assert_eq!(status().await.status, "read");
    assert_eq!(
        store
            .record_status("webchat", "wamid.nobody", "read", None, 5)
            .await
            .unwrap(),
        S::UnknownMessage
    );
    assert_eq!(
        store
            .audit("message:webchat:wamid.nobody")
            .await
            .unwrap()
            .len(),
        1,
        "a status for an unknown message is recorded"
    );
}

async fn notes_never_leave(store: Arc<dyn Store>) {
    // The example pack writes notes on hand-offs, cancellations and escalations.
    let l = switchyard_rules::load_dir(Path::new("../examples/pk-ecommerce")).unwrap();
    let engine = Arc::new(Engine::new(
        store.clone(),
        Arc::new(l.pack.unwrap()),
        Arc::new(NoLookup),
    ));
    let ch = Arc::new(Recorder::default());
    let rt = Runtime::start(engine, ch.clone(), ch.clone(), fast())
        .await
        .unwrap();
    rt.ingest(vec![
        msg("a", "1", "please cancel order #10234, I don't want it"),
        msg("b", "2", "talk to a human please"),
        msg("c", "3", "order #99999 kahan hai"),
        msg("d", "4", "parcel toota hua aaya hai"),
    ])
    .await
    .unwrap();
    settle(&store).await;
    rt.shutdown().await;
    let mut notes = Vec::new();
    for id in store.conversation_ids().await.unwrap() {
        notes.extend(store.notes(id).await.unwrap().into_iter().map(|n| n.text));
    }
    assert!(notes.len() >= 3, "the scenario must write notes: {notes:?}");
    let outbox: Vec<String> = store
        .outbox_payloads()
        .await
        .unwrap()
        .into_iter()
        .map(|(_, p)| p.to_string())
        .collect();
    let sent: Vec<String> = ch
        .sent
        .lock()
        .unwrap()
        .iter()
        .map(|m| serde_json::to_string(m).unwrap())
        .collect();
    assert!(!sent.is_empty());
    for n in &notes {
        for o in outbox.iter().chain(&sent) {
            assert!(!o.contains(n.as_str()), "note {n:?} left the system in {o}");
        }
    }
}

async fn story_restart_resumes_committed_events(dir: &Path) {
    let store = sqlite(dir).await;
    // Acknowledged (committed) while no worker runs: as if the process died right after.
    store
        .ingest(vec![msg("c1", "w1", "one"), msg("c1", "w2", "two")], 0)
        .await
        .unwrap();
    drop(store);
    let store = sqlite(dir).await;
    let (ch, rt) = echo_runtime(&store, Recorder::default()).await;
    settle(&store).await;
    rt.shutdown().await;
    let texts: Vec<String> = ch
        .sent
        .lock()
        .unwrap()
        .iter()
        .map(|m| m.text.clone())
        .collect();
    assert_eq!(texts, ["echo one", "echo two"]);
}

/// A database of its own on the PostgreSQL server of `SWITCHYARD_TEST_PG_URL`, dropped when
/// the story ends; `None` (the story is skipped, and says so) without the variable.
struct PgDb {
    admin: sqlx::postgres::PgConnectOptions,
    name: String,
}

impl PgDb {
    async fn create() -> Option<(PgDb, Arc<dyn Store>)> {
        use sqlx::{ConnectOptions, Executor};
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let Ok(url) = std::env::var("SWITCHYARD_TEST_PG_URL") else {
            eprintln!("skipped: SWITCHYARD_TEST_PG_URL is not set (PostgreSQL stories)");
            return None;
        };
        let admin: sqlx::postgres::PgConnectOptions = url.parse().expect("SWITCHYARD_TEST_PG_URL");
        let name = format!(
            "switchyard_story_{}_{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        let mut c = admin.connect().await.expect("PostgreSQL answers");
        c.execute(format!("DROP DATABASE IF EXISTS {name}").as_str())
            .await
            .unwrap();
        c.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap();
        let store = PgStore::open_with(admin.clone().database(&name), Default::default())
            .await
            .expect("the store opens on a fresh database");
        Some((PgDb { admin, name }, Arc::new(store)))
    }

    async fn drop_db(self) {
        use sqlx::{ConnectOptions, Executor};
        if let Ok(mut c) = self.admin.connect().await {
            let _ = c
                .execute(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name).as_str())
                .await;
        }
    }
}

/// Runs each story against a fresh SQLite file, a fresh in-memory store (what replays and pack
/// tests use), and a fresh PostgreSQL database when `SWITCHYARD_TEST_PG_URL` is set (`.ci/run`
/// sets it).
macro_rules! stories {
    ($($story:ident),* $(,)?) => {
        mod sqlite_stories {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $story() {
                    let d = tmp();
                    super::$story(sqlite(d.path()).await).await;
                }
            )*
        }
        mod memory_stories {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $story() {
                    super::$story(Arc::new(switchyard_engine::store::memory::MemoryStore::new())).await;
                }
            )*
        }
        mod postgres_stories {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $story() {
                    let Some((db, store)) = PgDb::create().await else { return };
                    super::$story(store).await;
                    db.drop_db().await;
                }
            )*
        }
    };
}

stories!(
    redelivery_is_processed_once,
    order_per_conversation_under_load,
    one_owner_when_agents_claim_at_once,
    loop_guard_cuts_a_self_triggering_rule,
    outbox_retries_with_backoff_and_records_failures,
    notes_never_leave,
    delivery_statuses_only_move_forward,
    assignment_waits_and_follows_capacity_and_availability,
    sticky_and_least_loaded,
    admin_queries_filter_and_page,
    prune_keeps_the_record_and_drops_the_machinery,
    a_second_complaint_updates_the_open_ticket,
    a_reload_that_removes_the_current_step_hands_off,
    kpis_of_a_scripted_day,
    sla_clocks_warn_pause_recompute_breach_and_stop,
    a_schedule_fires_once_per_tick_and_once_for_missed_ticks,
    a_webhook_that_keeps_failing_is_audited_on_its_conversation,
    a_message_with_a_hole_that_did_not_render_is_never_sent,
    outbox_lanes_keep_a_conversations_order_and_skip_busy_destinations,
    a_slow_webhook_endpoint_delays_only_its_own_rows,
    a_tickets_queue_routes_its_conversation_and_its_owner_works_the_ticket,
    media_is_found_kept_and_retried_in_the_store,
    an_unsure_message_is_asked_about_and_the_answer_runs_it,
    an_irreversible_action_waits_for_the_customers_tap,
);

/// The media fetcher's view of the store: a new media message is to fetch; once kept it is
/// not; a retry comes back when due and not before; a failure for good stays failed.
async fn media_is_found_kept_and_retried_in_the_store(store: Arc<dyn Store>) {
    let engine = Engine::new(store.clone(), pack(ECHO_PACK), Arc::new(NoLookup));
    let photo = |from: &str, id: &str, media: &str| Inbound::Message {
        channel: "whatsapp".into(),
        from: from.into(),
        name: None,
        phone: None,
        provider_id: id.into(),
        kind: "media".into(),
        text: String::new(),
        choice: None,
        payload: serde_json::json!({ "type": "image", "message": { "image": { "id": media, "mime_type": "image/jpeg" } } }),
    };
    step(&engine, vec![photo("m1", "w.m1", "9001")], 10).await;
    step(&engine, vec![photo("m2", "w.m2", "9002")], 20).await;
    step(&engine, vec![msg("m3", "w.m3", "just text")], 30).await;
    let todo = store.media_to_fetch(0, 100, 10).await.unwrap();
    assert_eq!(todo.len(), 2, "the two photos, not the text: {todo:?}");
    assert_eq!(todo[0].payload["message"]["image"]["id"], "9001");
    assert_eq!(todo[0].channel, "whatsapp");
    let (a, b) = (todo[0].clone(), todo[1].clone());
    // After the newest seen, nothing new.
    assert!(store
        .media_to_fetch(b.message_id, 100, 10)
        .await
        .unwrap()
        .is_empty());
    let rec =
        |t: &MediaTask, status: &str, bytes: Option<Vec<u8>>, next: Option<Millis>| MediaRecord {
            message_id: t.message_id,
            conversation_id: t.conversation_id,
            status: status.into(),
            mime_type: Some("image/jpeg".into()),
            bytes,
            error: (status != "stored").then(|| "503".to_string()),
            attempts: 1,
            next_attempt_at: next,
            updated_at: 100,
        };
    store
        .save_media(&rec(&a, "stored", Some(vec![0xff, 0xd8, 1, 2]), None))
        .await
        .unwrap();
    store
        .save_media(&rec(&b, "retry", None, Some(5_000)))
        .await
        .unwrap();
    assert!(
        store.media_to_fetch(0, 200, 10).await.unwrap().is_empty(),
        "kept, or not due yet"
    );
    let due = store.media_to_fetch(b.message_id, 5_000, 10).await.unwrap();
    assert_eq!(
        due.iter()
            .map(|t| (t.message_id, t.attempts))
            .collect::<Vec<_>>(),
        vec![(b.message_id, 1)]
    );
    let kept = store.media(a.message_id).await.unwrap().unwrap();
    assert_eq!(
        (kept.status.as_str(), kept.bytes),
        ("stored", Some(vec![0xff, 0xd8, 1, 2]))
    );
    // Replaced by the next attempt's outcome: failed for good, never fetched again.
    store
        .save_media(&rec(&b, "failed", None, None))
        .await
        .unwrap();
    assert!(store
        .media_to_fetch(0, 1_000_000, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.media(b.message_id).await.unwrap().unwrap().status,
        "failed"
    );
}

/// A rule opens a ticket in `damages` without routing: the conversation goes to `damages` too
/// (someone works the customer). The agent who claims it sees and works the ticket, though
/// the ticket has no owner; another agent does not. A second ticket typed by an agent is
/// refused with the open one's id, not dropped.
async fn a_tickets_queue_routes_its_conversation_and_its_owner_works_the_ticket(
    store: Arc<dyn Store>,
) {
    use switchyard_engine::model::TicketStatus;
    use switchyard_engine::pipeline::TicketUpdate;
    let yaml = r#"
version: 1
settings: { default_queue: support }
queues: { support: { assignment: manual }, damages: { assignment: manual } }
rules:
  - name: damaged parcels become tickets
    when: message.received
    if: message.text.contains("torn")
    then:
      - ticket: { title: "Damaged parcel", queue: damages, priority: high }
      - reply: { text: "Sorry! A person will look into it." }
    stop: true
  - name: routed tickets stay where the rule says
    when: message.received
    if: message.text.contains("late")
    then:
      - ticket: { title: "Late parcel", queue: damages }
      - route: { queue: support }
"#;
    let engine = Engine::new(store.clone(), pack(yaml), Arc::new(NoLookup));
    for a in ["ali", "sana"] {
        store
            .upsert_agent(&agent(a, &["damages", "support"], 5, "online"), "system", 0)
            .await
            .unwrap();
    }
    step(
        &engine,
        vec![msg("t1", "t1.1", "my shirt arrived torn")],
        10,
    )
    .await;
    step(&engine, vec![msg("t2", "t2.1", "parcel is late")], 20).await;
    let conv_of = |who: &'static str| {
        let store = store.clone();
        async move {
            let (_, c, _) = store
                .open_conversation("webchat", who, None, None, 0)
                .await
                .unwrap();
            store.conversation(c.id).await.unwrap().unwrap()
        }
    };
    let c1 = conv_of("t1").await;
    assert_eq!(
        c1.queue.as_deref(),
        Some("damages"),
        "the ticket's queue routed it"
    );
    let c2 = conv_of("t2").await;
    assert_eq!(
        c2.queue.as_deref(),
        Some("support"),
        "the rule's own route wins"
    );

    let ali = Actor {
        id: "ali".into(),
        agent: Some("ali".into()),
        role: Role::Agent,
    };
    let sana = Actor {
        id: "sana".into(),
        agent: Some("sana".into()),
        role: Role::Agent,
    };
    engine
        .act(c1.id, AgentAction::Claim, &ali, 30)
        .await
        .unwrap();
    let all_tickets = || switchyard_engine::store::TicketQuery {
        limit: 50,
        ..Default::default()
    };
    let tickets = engine.tickets_for(&ali, all_tickets()).await.unwrap();
    assert_eq!(
        tickets.len(),
        1,
        "the ticket of the conversation ali owns: {tickets:?}"
    );
    let t = &tickets[0];
    assert_eq!(
        (t.owner.as_deref(), t.title.as_str()),
        (None, "Damaged parcel")
    );
    assert!(engine.ticket_for(&ali, t.id).await.is_ok());
    assert!(engine
        .tickets_for(&sana, Default::default())
        .await
        .unwrap()
        .is_empty());
    assert!(engine.ticket_for(&sana, t.id).await.is_err());
    let change = TicketUpdate {
        status: Some(TicketStatus::Pending),
        ..Default::default()
    };
    engine
        .act(
            c1.id,
            AgentAction::UpdateTicket {
                ticket: t.id,
                change,
            },
            &ali,
            40,
        )
        .await
        .expect("ali works the ticket of his conversation");
    match engine
        .act(
            c1.id,
            AgentAction::OpenTicket {
                title: "Refund the shirt".into(),
                category: None,
                priority: None,
            },
            &ali,
            50,
        )
        .await
    {
        Err(ActError::Conflict(m)) => assert!(m.contains(&format!("ticket {}", t.id)), "{m}"),
        other => panic!("a second open ticket: {other:?}"),
    }
    let all = store.tickets(c1.id).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].title, "Damaged parcel", "nothing was written");
}

/// A webhook endpoint that answers only when the test opens its gate.
#[derive(Default)]
struct Gated {
    open: tokio::sync::Notify,
    opened: std::sync::atomic::AtomicBool,
    started: std::sync::atomic::AtomicUsize,
    done: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl Notifier for Gated {
    async fn notify(&self, _: &str, _: &Value) -> Result<(), LookupError> {
        use std::sync::atomic::Ordering::SeqCst;
        self.started.fetch_add(1, SeqCst);
        while !self.opened.load(SeqCst) {
            let wait = self.open.notified();
            if self.opened.load(SeqCst) {
                break;
            }
            wait.await;
        }
        self.done.fetch_add(1, SeqCst);
        Ok(())
    }
}

/// Three customers' messages each call a webhook endpoint that hangs; a fourth customer's
/// reply, and the three customers' own replies, go out while it hangs (the old outbox sent
/// one row at a time: the reply waited for every webhook before it). The webhooks run at
/// once, then all finish when the endpoint answers.
async fn a_slow_webhook_endpoint_delays_only_its_own_rows(store: Arc<dyn Store>) {
    use std::sync::atomic::Ordering::SeqCst;
    let yaml = r#"
version: 1
settings: { default_queue: support }
queues: { support: { assignment: manual } }
connectors: { crm: { type: webhook, url_env: CRM_URL } }
rules:
  - name: alert the crm
    when: message.received
    if: message.text == "alert"
    then:
      - webhook: { connector: crm, body: "alert from {{contact.external_id}}" }
      - reply: { text: "noted" }
  - name: echo
    when: message.received
    if: message.text != "alert"
    then: [ { reply: { text: "echo {{message.text}}" } } ]
"#;
    let engine = Arc::new(Engine::new(store.clone(), pack(yaml), Arc::new(NoLookup)));
    let ch = Arc::new(Recorder::default());
    let crm = Arc::new(Gated::default());
    let rt = Runtime::start(engine, ch.clone(), crm.clone(), fast())
        .await
        .unwrap();
    for who in ["a", "b", "c"] {
        rt.ingest(vec![msg(who, &format!("{who}1"), "alert")])
            .await
            .unwrap();
    }
    rt.ingest(vec![msg("d", "d1", "hello")]).await.unwrap();
    let mut texts = Vec::new();
    for _ in 0..1500 {
        texts = ch
            .sent
            .lock()
            .unwrap()
            .iter()
            .map(|m| m.text.clone())
            .collect::<Vec<_>>();
        if texts.len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    texts.sort();
    assert_eq!(
        texts,
        ["echo hello", "noted", "noted", "noted"],
        "every reply went out while the webhook endpoint hung"
    );
    assert_eq!(
        crm.done.load(SeqCst),
        0,
        "the endpoint has not answered yet"
    );
    for _ in 0..1500 {
        if crm.started.load(SeqCst) == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        crm.started.load(SeqCst),
        3,
        "the three webhooks were sent at once"
    );
    crm.opened.store(true, SeqCst);
    crm.open.notify_waiters();
    settle(&store).await;
    assert_eq!(crm.done.load(SeqCst), 3);
    rt.shutdown().await;
}

/// The dispatcher's view of the outbox: a conversation's second reply waits for its first
/// (also while the first waits for a retry); another conversation's reply does not; a full
/// destination and a lane in flight are left out; a claim is taken once.
async fn outbox_lanes_keep_a_conversations_order_and_skip_busy_destinations(store: Arc<dyn Store>) {
    let engine = Engine::new(store.clone(), pack(ECHO_PACK), Arc::new(NoLookup));
    step(&engine, vec![msg("a", "w.a1", "one")], 10).await;
    step(&engine, vec![msg("a", "w.a2", "two")], 20).await;
    step(&engine, vec![msg("b", "w.b1", "three")], 30).await;
    let due = store.due_outbox(100, &[], &[], 10).await.unwrap();
    assert_eq!(
        due.len(),
        2,
        "a's second reply waits behind its first: {due:?}"
    );
    assert_eq!(due[0].lane, "channel:webchat");
    let (a, b) = (due[0].clone(), due[1].clone());
    assert_ne!(a.conversation_id, b.conversation_id);
    // A full destination is left out; so is a lane in flight.
    assert!(store
        .due_outbox(100, &["channel:webchat".into()], &[], 10)
        .await
        .unwrap()
        .is_empty());
    let first = store
        .claim_outbox(a.id, 100)
        .await
        .unwrap()
        .expect("claimed");
    assert!(
        store.claim_outbox(a.id, 100).await.unwrap().is_none(),
        "claimed once"
    );
    let lane = (a.conversation_id, a.lane.clone());
    let due = store
        .due_outbox(100, &[], std::slice::from_ref(&lane), 10)
        .await
        .unwrap();
    assert_eq!(due.iter().map(|d| d.id).collect::<Vec<_>>(), vec![b.id]);
    // The first reply fails and waits for a retry: the second still waits behind it, and
    // cannot be claimed out of turn.
    store
        .outbox_failed(first.id, "503", Some(5_000), 101)
        .await
        .unwrap();
    let due = store.due_outbox(200, &[], &[], 10).await.unwrap();
    assert_eq!(due.iter().map(|d| d.id).collect::<Vec<_>>(), vec![b.id]);
    assert_eq!(b.id, a.id + 2, "a's two replies, then b's");
    let second = a.id + 1;
    assert!(
        store.claim_outbox(second, 200).await.unwrap().is_none(),
        "not out of turn"
    );
    let due = store.due_outbox(5_000, &[], &[], 10).await.unwrap();
    assert_eq!(
        due.first().map(|d| d.id),
        Some(a.id),
        "the retry keeps its place"
    );
}

/// A day of five conversations with known times; the KPIs are what a person computes by
/// hand from the script.
async fn kpis_of_a_scripted_day(store: Arc<dyn Store>) {
    use switchyard_engine::model::TicketStatus;
    use switchyard_engine::pipeline::TicketUpdate;
    let day = pack(
        r#"
version: 1
settings: { default_queue: support }
queues: { support: { assignment: manual } }
rules:
  - name: bye
    when: message.received
    if: message.text == "thanks"
    then: [ { reply: { text: "bye" } }, { set_status: resolved } ]
    stop: true
  - name: a person, please
    when: message.received
    if: message.text == "human"
    then: [ { handoff: { queue: support } } ]
    stop: true
  - name: echo
    when: message.received
    then: [ { reply: { text: "ok" } } ]
"#,
    );
    let engine = Engine::new(store.clone(), day, Arc::new(NoLookup));
    for a in ["ayesha", "bilal"] {
        let a = agent(a, &["support"], 5, "away");
        store.upsert_agent(&a, "system", 0).await.unwrap();
    }
    const T0: i64 = 1_700_000_000_000;
    let at = |s: i64| T0 + s * 1000;
    let mut last = 0;
    let mut n = 0;
    let mut conv_of = BTreeMap::new();
    // Customer messages: (seconds, customer, text).
    let mut say = async |t: i64, who: &str, text: &str| {
        n += 1;
        store
            .ingest(vec![msg(who, &format!("m{n}"), text)], at(t))
            .await
            .unwrap();
        for row in store.pending_inbox(last, 10).await.unwrap() {
            last = row.id;
            let p = engine.process(&row, at(t)).await.unwrap();
            conv_of.insert(who.to_string(), p.conversation_id);
        }
        conv_of[who]
    };
    let person = |a: &str| Actor {
        id: a.into(),
        agent: Some(a.into()),
        role: Role::Agent,
    };
    // E, the day before: outside the range.
    say(-1000, "e", "thanks").await;
    // A: the bot answers and the customer is done after a minute.
    say(0, "a", "hi").await;
    say(60, "a", "thanks").await;
    // B: handed to people at 100 s, claimed at 160 s, answered at 220 s, resolved at 400 s;
    // a delivery ticket opened at 230 s and resolved at 390 s.
    let b = say(100, "b", "human").await;
    engine
        .act(b, AgentAction::Claim, &person("ayesha"), at(160))
        .await
        .unwrap();
    let reply = |t: &str| AgentAction::Reply {
        text: Some(t.into()),
        template: None,
    };
    engine
        .act(b, reply("on it"), &person("ayesha"), at(220))
        .await
        .unwrap();
    let ticket = engine
        .act(
            b,
            AgentAction::OpenTicket {
                title: "late".into(),
                category: Some("delivery".into()),
                priority: None,
            },
            &person("ayesha"),
            at(230),
        )
        .await
        .unwrap()
        .ticket
        .unwrap();
    let resolve = TicketUpdate {
        status: Some(TicketStatus::Resolved),
        ..Default::default()
    };
    engine
        .act(
            b,
            AgentAction::UpdateTicket {
                ticket: ticket.id,
                change: resolve,
            },
            &person("ayesha"),
            at(390),
        )
        .await
        .unwrap();
    engine
        .act(
            b,
            AgentAction::Status(Status::Resolved),
            &person("ayesha"),
            at(400),
        )
        .await
        .unwrap();
    // C: handed over at 200 s, claimed at 230 s, answered at 260 s, still open.
    let c = say(200, "c", "human").await;
    engine
        .act(c, AgentAction::Claim, &person("bilal"), at(230))
        .await
        .unwrap();
    engine
        .act(c, reply("hello"), &person("bilal"), at(260))
        .await
        .unwrap();
    // D: the bot only, not resolved.
    say(300, "d", "hi").await;

    let facts = store.kpi_facts(at(0), at(3600), None).await.unwrap();
    let k = switchyard_engine::reports::kpis(&facts);
    assert_eq!(k.conversations, 4, "A, B, C, D; not E");
    // First responses 120 s (B) and 60 s (C): nearest-rank median 60, p90 120.
    assert_eq!(
        (
            k.first_response.count,
            k.first_response.median_s,
            k.first_response.p90_s
        ),
        (2, Some(60.0), Some(120.0))
    );
    // Resolutions 60 s (A) and 300 s (B).
    assert_eq!(
        (
            k.resolution.count,
            k.resolution.median_s,
            k.resolution.p90_s
        ),
        (2, Some(60.0), Some(300.0))
    );
    assert_eq!(k.bot_containment_rate, Some(0.5), "A of A and B");
    assert_eq!(k.handoff_rate, Some(0.5), "B and C of four");
    let work: Vec<(&str, i64, i64)> = k
        .agents
        .iter()
        .map(|a| (a.agent.as_str(), a.assigned, a.replies))
        .collect();
    assert_eq!(work, [("ayesha", 1, 1), ("bilal", 1, 1)]);
    assert_eq!(k.tickets_opened.get("delivery"), Some(&1));
    assert_eq!(k.tickets_resolved.get("delivery"), Some(&1));
    assert_eq!(k.sla_breaches, 0);
    // The queue filter: all of them sit in `support` or in none.
    let k = switchyard_engine::reports::kpis(
        &store
            .kpi_facts(at(0), at(3600), Some("support"))
            .await
            .unwrap(),
    );
    assert_eq!(k.conversations, 2, "B and C");
}

/// One conversation's SLA clocks on a controlled clock: a warning at half the target, a pause
/// while waiting on the customer, a priority change that makes the first response overdue at
/// once, the breach (and the clock starting again), an agent's reply meeting it, resolution
/// meeting the other.
async fn sla_clocks_warn_pause_recompute_breach_and_stop(store: Arc<dyn Store>) {
    let p = pack(
        r#"
version: 1
settings: { default_queue: support }
queues:
  support:
    assignment: manual
    sla:
      first_response: 10m
      resolution: 1h
      warn_at: 0.5
      by_priority: { urgent: { first_response: 2m } }
rules:
  - name: to people
    when: message.received
    then: [ { route: { queue: support } } ]
  - name: warned
    when: sla.warning
    then: [ { note: "warning {{sla.kind}}" } ]
  - name: breached
    when: sla.breached
    then: [ { note: "breach {{sla.kind}} {{sla.breaches}} by {{sla.late_s}}s" } ]
"#,
    );
    let engine = Engine::new(store.clone(), p, Arc::new(NoLookup));
    store
        .upsert_agent(&agent("ayesha", &["support"], 5, "away"), "system", 0)
        .await
        .unwrap();
    const T0: i64 = 1_700_000_000_000;
    let at = |m: i64| T0 + m * 60_000;
    let mut last = 0;
    let mut n = 0;
    let mut conv = 0;
    let mut say = async |t: i64| {
        n += 1;
        store
            .ingest(vec![msg("s1", &format!("s{n}"), "hello")], at(t))
            .await
            .unwrap();
        for row in store.pending_inbox(last, 10).await.unwrap() {
            last = row.id;
            conv = engine.process(&row, at(t)).await.unwrap().conversation_id;
        }
        conv
    };
    // Fires every job due by minute `t`, at its due time.
    let run_until = async |t: i64| {
        for job in store.due_jobs(at(t), 100).await.unwrap() {
            engine.fire_job(&job, job.due_at).await.unwrap();
        }
    };
    let notes = async || -> Vec<String> {
        let id = store.conversation_ids().await.unwrap()[0];
        store
            .notes(id)
            .await
            .unwrap()
            .into_iter()
            .map(|n| n.text)
            .collect()
    };
    let sup = Actor {
        id: "sara".into(),
        agent: Some("ayesha".into()),
        role: Role::Supervisor,
    };
    let c = say(0).await;
    let clocks = store.conversation(c).await.unwrap().unwrap().sla.clocks;
    let due: Vec<_> = clocks.iter().map(|k| (k.kind.as_str(), k.due_at)).collect();
    assert_eq!(
        due,
        [
            ("first_response", Some(at(10))),
            ("resolution", Some(at(60)))
        ]
    );
    // A ticket opened now is due when the conversation's resolution is.
    let t = engine
        .act(
            c,
            AgentAction::OpenTicket {
                title: "late parcel".into(),
                category: None,
                priority: None,
            },
            &sup,
            at(1),
        )
        .await
        .unwrap()
        .ticket
        .unwrap();
    assert_eq!(t.due_at, Some(at(60)));
    run_until(4).await;
    assert!(notes().await.is_empty());
    run_until(6).await;
    assert_eq!(notes().await, ["warning first_response"]);
    // Waiting on the customer from minute 7 to 40: nothing counts.
    engine
        .act(c, AgentAction::Status(Status::Waiting), &sup, at(7))
        .await
        .unwrap();
    run_until(39).await;
    assert_eq!(notes().await.len(), 1, "paused clocks do not fire");
    say(40).await;
    let clocks = store.conversation(c).await.unwrap().unwrap().sla.clocks;
    assert_eq!(clocks[0].due_at, Some(at(43)), "3 minutes were left");
    assert_eq!(clocks[1].due_at, Some(at(93)));
    // Urgent: a 2-minute first response, 7 of which have passed: due at once.
    engine
        .act(c, AgentAction::Priority(Priority::Urgent), &sup, at(41))
        .await
        .unwrap();
    run_until(41).await;
    assert_eq!(notes().await[1], "breach first_response 1 by 0s");
    // The clock started again at the breach; a person's answer meets it.
    engine
        .act(
            c,
            AgentAction::Reply {
                text: Some("on it".into()),
                template: None,
            },
            &sup,
            at(42),
        )
        .await
        .unwrap();
    run_until(62).await;
    assert_eq!(notes().await.len(), 2, "met: no second breach");
    // The resolution clock warns at half of its hour of counted time: 7 minutes before the
    // pause, 23 after it.
    run_until(63).await;
    assert_eq!(notes().await[2], "warning resolution");
    say(64).await;
    let kinds: Vec<_> = store
        .conversation(c)
        .await
        .unwrap()
        .unwrap()
        .sla
        .clocks
        .iter()
        .map(|k| k.kind.clone())
        .collect();
    assert_eq!(
        kinds,
        ["resolution"],
        "no new first response once a person answered"
    );
    engine
        .act(c, AgentAction::Status(Status::Resolved), &sup, at(70))
        .await
        .unwrap();
    run_until(500).await;
    assert_eq!(notes().await.len(), 3, "nothing fires after resolution");
    let conv = store.conversation(c).await.unwrap().unwrap();
    assert!(conv.sla.clocks.is_empty());
    assert!(
        store.due_jobs(at(10_000), 10).await.unwrap().is_empty(),
        "no job left pending"
    );
    let actions: Vec<String> = store
        .audit(&format!("conversation:{c}"))
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.action)
        .filter(|a| a.starts_with("sla_"))
        .collect();
    assert_eq!(
        actions,
        [
            "sla_warning",
            "sla_breached",
            "sla_met",
            "sla_warning",
            "sla_met"
        ]
    );
}

/// A daily schedule in the pack's time zone: fires at its tick with `stats` in its template,
/// not again until the next tick, once (not once per missed tick) after days down, and stops
/// when the pack no longer has it.
async fn a_schedule_fires_once_per_tick_and_once_for_missed_ticks(store: Arc<dyn Store>) {
    let yaml = r#"
version: 1
settings: { default_queue: support, timezone: Asia/Karachi }
queues: { support: { assignment: manual } }
connectors: { ops: { type: webhook, url_env: OPS_URL } }
rules:
  - name: unconfirmed
    when: message.received
    then: [ { tag: cod_unconfirmed } ]
schedules:
  - name: digest
    cron: "0 0 10 * * *"
    if: stats.open > 0
    then: [ { webhook: { connector: ops, body: "{{stats.cod_unconfirmed}} unconfirmed of {{stats.open}} open" } } ]
"#;
    let engine = Engine::new(store.clone(), pack(yaml), Arc::new(NoLookup));
    let at = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis()
    };
    engine
        .init_schedules(at("2026-11-23T09:00:00+05:00"))
        .await
        .unwrap();
    store
        .ingest(vec![msg("d1", "d1", "hi")], at("2026-11-23T09:10:00+05:00"))
        .await
        .unwrap();
    let row = store.pending_inbox(0, 1).await.unwrap().remove(0);
    engine
        .process(&row, at("2026-11-23T09:10:00+05:00"))
        .await
        .unwrap();
    let webhooks = async || -> Vec<String> {
        store
            .outbox_payloads()
            .await
            .unwrap()
            .into_iter()
            .filter_map(|(_, p)| p["body"]["text"].as_str().map(String::from))
            .collect()
    };
    let fire = async |t: &str| engine.fire_due_schedules(at(t)).await.unwrap();
    assert_eq!(fire("2026-11-23T09:59:59+05:00").await, 0);
    assert_eq!(fire("2026-11-23T10:00:00+05:00").await, 1);
    assert_eq!(webhooks().await, ["1 unconfirmed of 1 open"]);
    assert_eq!(
        fire("2026-11-23T10:30:00+05:00").await,
        0,
        "one firing per tick"
    );
    // Down from Monday until Thursday noon: Tuesday's, Wednesday's and Thursday's ticks were
    // missed; one firing makes up for them.
    assert_eq!(fire("2026-11-26T12:00:00+05:00").await, 1);
    assert_eq!(fire("2026-11-26T12:00:01+05:00").await, 0);
    assert_eq!(webhooks().await.len(), 2);
    assert_eq!(
        fire("2026-11-27T09:59:00+05:00").await,
        0,
        "next is Friday 10:00"
    );
    // A reload without the schedule: its next tick finds nothing to do, and it is forgotten.
    engine.replace_pack(pack(&yaml[..yaml.find("schedules:").unwrap()]));
    assert_eq!(fire("2026-11-27T10:00:00+05:00").await, 1);
    assert_eq!(fire("2026-11-28T10:00:00+05:00").await, 0);
    assert_eq!(webhooks().await.len(), 2);
    let fired = store
        .audit("schedule:digest")
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.action == "schedule_fired")
        .count();
    assert_eq!(fired, 2);
}

struct Unreachable;

#[async_trait]
impl Notifier for Unreachable {
    async fn notify(&self, _: &str, _: &Value) -> Result<(), LookupError> {
        Err(LookupError::Failed("connection refused".into()))
    }
}

/// A webhook whose endpoint never answers: retried, then failed, and the failure is on its
/// conversation's audit (a webhook has no message row to carry it).
async fn a_webhook_that_keeps_failing_is_audited_on_its_conversation(store: Arc<dyn Store>) {
    let yaml = r#"
version: 1
settings: { default_queue: support }
queues: { support: { assignment: manual } }
connectors: { crm: { type: webhook, url_env: CRM_URL } }
rules:
  - name: tell the crm
    when: message.received
    then: [ { webhook: { connector: crm, body: "new message" } } ]
"#;
    let engine = Arc::new(Engine::new(store.clone(), pack(yaml), Arc::new(NoLookup)));
    let ch = Arc::new(Recorder::default());
    let rt = Runtime::start(engine, ch, Arc::new(Unreachable), fast())
        .await
        .unwrap();
    rt.ingest(vec![msg("w1", "w1", "hi")]).await.unwrap();
    settle(&store).await;
    rt.shutdown().await;
    let id = store.conversation_ids().await.unwrap()[0];
    let failed: Vec<_> = store
        .audit(&format!("conversation:{id}"))
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.action == "webhook_failed")
        .collect();
    assert_eq!(failed.len(), 1, "one record, after the last attempt");
    assert_eq!(failed[0].after["connector"], "crm");
    assert!(failed[0].after["error"]
        .as_str()
        .unwrap()
        .contains("connection refused"));
}

/// This test binary running only the ignored test `name`, with `env` set to `dir`, its
/// stdout piped (what it prints tells the parent how far it got).
fn child_process(name: &str, env: &str, dir: &Path) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            name,
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(env, dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

const TIMER_CHILD_ENV: &str = "SWITCHYARD_TIMER_CHILD_DIR";
const TIMER_CONVERSATIONS: usize = 10;
const TIMER_PACK: &str = r#"
version: 1
settings: { default_queue: support }
queues: { support: { assignment: manual } }
rules:
  - name: remind later
    when: message.received
    then: [ { timer: { name: remind, after: 2s } } ]
  - name: the reminder
    when: timer.remind
    then: [ { reply: { text: "reminder" } } ]
"#;

/// The timer pack's engine on `store`, its workers sending through a recorder.
async fn timer_runtime(store: &Arc<dyn Store>) -> (Arc<Recorder>, Runtime) {
    let engine = Arc::new(Engine::new(
        store.clone(),
        pack(TIMER_PACK),
        Arc::new(NoLookup),
    ));
    let ch = Arc::new(Recorder::default());
    let rt = Runtime::start(engine, ch.clone(), ch.clone(), fast())
        .await
        .unwrap();
    (ch, rt)
}

/// Not a test on its own: the child process of `timers_pending_at_a_kill_fire_once_after_restart`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by the timer test as a child process"]
async fn timer_child() {
    let dir =
        std::path::PathBuf::from(std::env::var(TIMER_CHILD_ENV).expect("run by the timer test"));
    let store = sqlite(&dir).await;
    let (_, rt) = timer_runtime(&store).await;
    let batch: Vec<Inbound> = (0..TIMER_CONVERSATIONS)
        .map(|c| msg(&format!("t{c}"), &format!("t{c}"), "hi"))
        .collect();
    rt.ingest(batch).await.unwrap();
    settle(&store).await;
    println!("READY");
    std::io::stdout().flush().unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_pending_at_a_kill_fire_once_after_restart() {
    let d = tmp();
    let mut child = child_process("timer_child", TIMER_CHILD_ENV, d.path());
    let out = BufReader::new(child.stdout.take().unwrap());
    // (libtest prints "test timer_child ... " first, on the same line.)
    let ready = out.lines().any(|l| l.unwrap().trim().ends_with("READY"));
    // Killed with every timer pending (they are due 2 s after their message).
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(ready, "the child committed its events");
    let store = sqlite(d.path()).await;
    let reminders = async || {
        all_messages(&store)
            .await
            .into_iter()
            .filter(|m| m.body == "reminder")
            .count()
    };
    assert_eq!(
        reminders().await,
        0,
        "the kill landed before any timer fired"
    );
    let (ch, rt) = timer_runtime(&store).await;
    for _ in 0..300 {
        if reminders().await >= TIMER_CONVERSATIONS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Time for a timer to fire twice, if it could.
    tokio::time::sleep(Duration::from_millis(500)).await;
    settle(&store).await;
    rt.shutdown().await;
    let mut per: BTreeMap<i64, usize> = BTreeMap::new();
    for m in all_messages(&store)
        .await
        .into_iter()
        .filter(|m| m.body == "reminder")
    {
        *per.entry(m.conversation_id).or_default() += 1;
    }
    assert_eq!(per.len(), TIMER_CONVERSATIONS, "every timer fired: {per:?}");
    assert!(per.values().all(|n| *n == 1), "each exactly once: {per:?}");
    assert_eq!(ch.sent.lock().unwrap().len(), TIMER_CONVERSATIONS);
}

// ---- the tests --------------------------------------------------------------------------

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// What a webhook was acknowledged for survives power loss: commits are `synchronous=FULL`
/// unless the URL chooses otherwise; a second serving process on the same file is refused
/// with who has it, and the file is free again when the first lets go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_is_durable_by_default_and_served_by_one_process() {
    let dir = tmp();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let store = SqliteStore::open(&url).await.unwrap();
    assert_eq!(store.synchronous().await.unwrap(), "full");
    drop(store);
    let fast = SqliteStore::open(&format!("{url}?synchronous=normal"))
        .await
        .unwrap();
    assert_eq!(fast.synchronous().await.unwrap(), "normal");
    drop(fast);
    assert!(SqliteStore::open(&format!("{url}?synchronous=sometimes"))
        .await
        .is_err());
    let first = switchyard_engine::store::claim(&url).unwrap();
    assert!(first.is_some());
    let second = switchyard_engine::store::claim(&url)
        .unwrap_err()
        .to_string();
    assert!(
        second.contains("served by another switchyard process")
            && second.contains(&format!("pid {}", std::process::id())),
        "{second}"
    );
    drop(first);
    assert!(switchyard_engine::store::claim(&url).unwrap().is_some());
    assert!(switchyard_engine::store::claim("sqlite::memory:")
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_restart_resumes_committed_events() {
    let d = tmp();
    story_restart_resumes_committed_events(d.path()).await;
}

const CHILD_ENV: &str = "SWITCHYARD_CRASH_CHILD_DIR";
const CRASH_CONVERSATIONS: usize = 20;
const CRASH_PER: usize = 10;

/// Not a test on its own: the child process of `a_killed_process_loses_nothing_and_sends_no_reply_twice`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by the crash test as a child process"]
async fn crash_child() {
    let dir = std::path::PathBuf::from(std::env::var(CHILD_ENV).expect("run by the crash test"));
    let store = sqlite(&dir).await;
    let engine = Arc::new(Engine::new(
        store.clone(),
        pack(ECHO_PACK),
        Arc::new(NoLookup),
    ));
    // A slow channel, so the kill lands while replies are still going out.
    let ch = Arc::new(Recorder {
        log: Some(dir.join("sent.log")),
        delay: Duration::from_millis(15),
        ..Default::default()
    });
    let rt = Runtime::start(engine, ch.clone(), ch.clone(), fast())
        .await
        .unwrap();
    let mut acked = 0;
    for i in 0..CRASH_PER {
        let batch: Vec<Inbound> = (0..CRASH_CONVERSATIONS)
            .map(|c| {
                msg(
                    &format!("c{c}"),
                    &format!("c{c}-{i}"),
                    &format!("c{c}-m{i}"),
                )
            })
            .collect();
        let r = rt.ingest(batch).await.unwrap();
        acked += r.len();
        println!("ACK {acked}");
        std::io::stdout().flush().unwrap();
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_process_loses_nothing_and_sends_no_reply_twice() {
    let d = tmp();
    let mut child = child_process("crash_child", CHILD_ENV, d.path());
    let total = CRASH_CONVERSATIONS * CRASH_PER;
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut acked = 0;
    for line in out.lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("ACK ") {
            acked = n.trim().parse().unwrap();
            if acked == total {
                break;
            }
        }
    }
    assert_eq!(acked, total, "the child acknowledged every event");
    // Let some replies go out, then kill it mid-work.
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let sent_before = std::fs::read_to_string(d.path().join("sent.log"))
        .unwrap_or_default()
        .lines()
        .count();
    assert!(
        sent_before < total,
        "the kill should land mid-work (sent {sent_before} of {total})"
    );

    // Restart on the same database.
    let store = sqlite(d.path()).await;
    let (_sends, rt) = echo_runtime(
        &store,
        Recorder {
            log: Some(d.path().join("sent.log")),
            ..Default::default()
        },
    )
    .await;
    settle(&store).await;
    rt.shutdown().await;

    // Every acknowledged event was processed exactly once.
    let msgs = all_messages(&store).await;
    let inbound: Vec<&Message> = msgs
        .iter()
        .filter(|m| m.direction == Direction::In)
        .collect();
    assert_eq!(inbound.len(), total, "nothing acknowledged was lost");
    let replies: Vec<&Message> = msgs
        .iter()
        .filter(|m| m.direction == Direction::Out)
        .collect();
    assert_eq!(
        replies.len(),
        total,
        "one reply decided per message, even across the crash"
    );
    // No reply went out twice; at most the ones in flight at the kill are `unknown`: one
    // destination here (web chat), so at most its sends in flight.
    let log = std::fs::read_to_string(d.path().join("sent.log")).unwrap();
    let mut seen = HashSet::new();
    for l in log.lines() {
        assert!(seen.insert(l.to_string()), "{l:?} was sent twice");
    }
    let unknown = replies.iter().filter(|m| m.status == "unknown").count();
    let sent = replies.iter().filter(|m| m.status == "sent").count();
    assert_eq!(
        sent + unknown,
        total,
        "every reply is sent or marked unknown: {:?}",
        replies.iter().map(|m| &m.status).collect::<Vec<_>>()
    );
    let in_flight = fast().sends_per_destination;
    assert!(
        unknown <= in_flight,
        "only the messages in flight at the kill are in doubt ({unknown} > {in_flight})"
    );
    // A row marked sent went out; one marked unknown may or may not have.
    assert!(
        (sent..=sent + unknown).contains(&seen.len()),
        "{} sends for {sent} sent and {unknown} unknown",
        seen.len()
    );
}

// ---- routing, tickets, reloads ------------------------------------------------------------

const ROUTING_PACK: &str = r#"
version: 1
settings: { default_queue: support }
queues:
  support: { assignment: round_robin }
  vip: { assignment: sticky }
  busy: { assignment: least_loaded }
intents:
  done: { examples: [thanks that is all, problem solved, ok thank you bye, shukriya bas, all good now] }
  complaint: { examples: [parcel damaged, wrong item received, bohat bura experience, the shirt is torn, worst service] }
rules:
  - name: resolve
    when: message.received
    if: intent == "done"
    then: [ { set_status: resolved } ]
    stop: true
  - name: complaint ticket
    when: message.received
    if: intent == "complaint"
    then: [ { ticket: { category: complaint, priority: high, title: "Complaint" } } ]
    stop: true
  - name: to vip
    when: message.received
    if: message.text == "go vip"
    then: [ { route: { queue: vip } } ]
  - name: to support
    when: message.received
    if: message.text == "go support"
    then: [ { route: { queue: support } } ]
  - name: to busy
    when: message.received
    if: message.text == "go busy"
    then: [ { route: { queue: busy } } ]
"#;

fn agent(id: &str, queues: &[&str], capacity: u32, availability: &str) -> Agent {
    Agent {
        id: id.into(),
        name: id.into(),
        role: "agent".into(),
        queues: queues.iter().map(|q| q.to_string()).collect(),
        capacity,
        availability: availability.into(),
        shift: None,
    }
}

/// Claims up to `limit` due outbox rows, as the dispatcher does (first in their lane).
async fn claim_due(store: &Arc<dyn Store>, t: Millis, limit: i64) -> Vec<OutboxRow> {
    let mut out = Vec::new();
    for d in store.due_outbox(t, &[], &[], limit).await.unwrap() {
        if let Some(r) = store.claim_outbox(d.id, t).await.unwrap() {
            out.push(r);
        }
    }
    out
}

/// Processes everything pending, in order, at time `t`.
async fn step(engine: &Engine, events: Vec<Inbound>, t: Millis) {
    engine.ingest(events, t).await.unwrap();
    for row in engine.pending_events(100).await.unwrap() {
        engine.process(&row, t).await.unwrap();
    }
}

async fn owner(store: &Arc<dyn Store>, from: &str) -> Option<String> {
    let (_, c, _) = store
        .open_conversation("webchat", from, None, None, 0)
        .await
        .unwrap();
    store.conversation(c.id).await.unwrap().unwrap().assignee
}

async fn assignment_waits_and_follows_capacity_and_availability(store: Arc<dyn Store>) {
    let engine = Engine::new(store.clone(), pack(ROUTING_PACK), Arc::new(NoLookup));
    engine
        .save_agent(&agent("a1", &["support"], 1, "online"), "system", 0)
        .await
        .unwrap();
    step(&engine, vec![msg("c1", "1", "kuch poochna hai")], 1).await;
    step(&engine, vec![msg("c2", "2", "mujhe madad chahiye")], 2).await;
    assert_eq!(owner(&store, "c1").await.as_deref(), Some("a1"));
    assert_eq!(
        owner(&store, "c2").await,
        None,
        "a1 is at capacity: c2 waits in the queue"
    );
    // c1 is resolved: a1 has room again and takes the longest-waiting conversation.
    step(&engine, vec![msg("c1", "3", "thanks that is all")], 3).await;
    assert_eq!(owner(&store, "c2").await.as_deref(), Some("a1"));
    // Nobody online: c3 waits until an agent comes online.
    engine
        .save_agent(&agent("a2", &["support"], 3, "away"), "system", 4)
        .await
        .unwrap();
    step(&engine, vec![msg("c3", "4", "hello?")], 5).await;
    assert_eq!(owner(&store, "c3").await, None);
    assert_eq!(
        engine
            .save_agent(&agent("a2", &["support"], 3, "online"), "system", 6)
            .await
            .unwrap(),
        1
    );
    assert_eq!(owner(&store, "c3").await.as_deref(), Some("a2"));
    let (_, c3, _) = store
        .open_conversation("webchat", "c3", None, None, 0)
        .await
        .unwrap();
    let audit = store
        .audit(&format!("conversation:{}", c3.id))
        .await
        .unwrap();
    assert!(audit
        .iter()
        .any(|a| a.action == "assigned" && a.after["assignee"] == "a2" && a.actor == "system"));
}

/// What the admin API reads — lists with filters and cursors, queue stats, schedule stats,
/// the backlog, tokens — answers the same on both stores.
async fn admin_queries_filter_and_page(store: Arc<dyn Store>) {
    use switchyard_engine::store::{AuditQuery, ConversationQuery, TicketQuery};
    let engine = Engine::new(store.clone(), pack(ROUTING_PACK), Arc::new(NoLookup));
    engine
        .save_agent(&agent("v1", &["vip"], 5, "online"), "system", 0)
        .await
        .unwrap();
    step(&engine, vec![msg("q1", "1", "go support")], 10).await;
    step(&engine, vec![msg("q2", "2", "go vip")], 20).await;
    step(&engine, vec![msg("q3", "3", "the shirt is torn_50%")], 30).await;
    step(&engine, vec![msg("q3", "4", "go support")], 40).await;
    let all = |q: ConversationQuery| {
        let store = store.clone();
        async move {
            store
                .list_conversations(&ConversationQuery { limit: 50, ..q })
                .await
                .unwrap()
                .len()
        }
    };
    assert_eq!(all(ConversationQuery::default()).await, 3);
    assert_eq!(
        all(ConversationQuery {
            queue: Some("support".into()),
            ..Default::default()
        })
        .await,
        2
    );
    assert_eq!(
        all(ConversationQuery {
            assignee: Some("v1".into()),
            ..Default::default()
        })
        .await,
        1
    );
    // Text search: `%` and `_` are literal, case does not matter for names and messages.
    assert_eq!(
        all(ConversationQuery {
            q: Some("TORN_50%".into()),
            ..Default::default()
        })
        .await,
        1
    );
    assert_eq!(
        all(ConversationQuery {
            q: Some("torn_5%0".into()),
            ..Default::default()
        })
        .await,
        0
    );
    assert_eq!(
        all(ConversationQuery {
            visible_to: Some(("v1".into(), vec![])),
            ..Default::default()
        })
        .await,
        1
    );
    // Cursor paging: longest waiting first, one per page, nothing twice.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_conversations(&ConversationQuery {
                limit: 1,
                after,
                ..Default::default()
            })
            .await
            .unwrap();
        let Some(l) = page.first() else { break };
        seen.push(l.conversation.id);
        after = Some((l.waiting_since, l.conversation.id));
    }
    assert_eq!(seen.len(), 3);
    seen.dedup();
    assert_eq!(seen.len(), 3);

    let tickets = store
        .list_tickets(&TicketQuery {
            category: Some("complaint".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(tickets.len(), 1);
    let audit = store
        .list_audit(&AuditQuery {
            entity: Some("ticket:".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!audit.is_empty() && audit.iter().all(|(_, a)| a.entity.starts_with("ticket:")));
    let stats = store
        .queue_stats(&["support".into(), "vip".into()])
        .await
        .unwrap();
    assert_eq!((stats[0].waiting, stats[0].assigned), (2, 0));
    assert_eq!((stats[1].assigned, stats[1].agents_online), (1, 1));
    let s = store.stats().await.unwrap();
    assert_eq!(s["open"], 3);
    assert_eq!(s["queues"]["support"]["waiting"], 2);
    let (inbox, _) = store.backlog().await.unwrap();
    assert_eq!(inbox, 0);

    let id = store
        .create_token(
            &switchyard_engine::store::NewToken {
                hash: "hash-1",
                role: "agent",
                agent: Some("v1"),
                kind: "api",
                expires_at: None,
            },
            "admin",
            50,
        )
        .await
        .unwrap();
    assert_eq!(
        store.token("hash-1").await.unwrap().map(|t| t.revoked),
        Some(false)
    );
    assert!(store.revoke_token(id, "admin", 60).await.unwrap());
    assert!(!store.revoke_token(id, "admin", 61).await.unwrap());
    assert_eq!(
        store.token("hash-1").await.unwrap().map(|t| t.revoked),
        Some(true)
    );
    // A browser session: a token of its kind, with its expiry; an agent's password hash is
    // kept, replaced and cleared (and a missing agent has none to set).
    store
        .create_token(
            &switchyard_engine::store::NewToken {
                hash: "hash-2",
                role: "agent",
                agent: Some("v1"),
                kind: "session",
                expires_at: Some(9_999),
            },
            "v1",
            70,
        )
        .await
        .unwrap();
    let t = store.token("hash-2").await.unwrap().unwrap();
    assert_eq!((t.kind.as_str(), t.expires_at), ("session", Some(9_999)));
    store
        .upsert_agent(&agent("pw", &["support"], 3, "offline"), "admin", 70)
        .await
        .unwrap();
    assert_eq!(store.password_hash("pw").await.unwrap(), None);
    assert!(store
        .set_password("pw", Some("$argon2id$x"), "admin", 71)
        .await
        .unwrap());
    assert_eq!(
        store.password_hash("pw").await.unwrap().as_deref(),
        Some("$argon2id$x")
    );
    assert!(store.set_password("pw", None, "admin", 72).await.unwrap());
    assert_eq!(store.password_hash("pw").await.unwrap(), None);
    assert!(!store
        .set_password("nobody", Some("x"), "admin", 73)
        .await
        .unwrap());
    // The list shows a preview, not a whole body (a list of 200 must stay small).
    let long = format!("go support {}", "ع".repeat(5_000));
    step(&engine, vec![msg("q4", "5", &long)], 45).await;
    let lines = store
        .list_conversations(&ConversationQuery {
            limit: 50,
            ..Default::default()
        })
        .await
        .unwrap();
    let preview = lines
        .iter()
        .find_map(|l| {
            l.last_message
                .clone()
                .filter(|m| m.starts_with("go support ع"))
        })
        .expect("q4 is listed with its message");
    assert_eq!(preview.chars().count(), 280);
}

/// `prune` drops what only the machinery needed (processed events, traces, finished outbox
/// rows) before the cutoff, and keeps the record: conversations, messages, notes, audit.
async fn prune_keeps_the_record_and_drops_the_machinery(store: Arc<dyn Store>) {
    let engine = Engine::new(store.clone(), pack(ECHO_PACK), Arc::new(NoLookup));
    let (old, new) = (1_000, 10_000_000);
    step(&engine, vec![msg("p1", "wamid.old", "old")], old).await;
    step(&engine, vec![msg("p2", "wamid.new", "new")], new).await;
    // The old reply went out; the new one is still pending.
    let claimed = claim_due(&store, old + 1, 1).await;
    assert_eq!(claimed.len(), 1);
    store
        .outbox_sent(claimed[0].id, "wamid.out.old", old + 2)
        .await
        .unwrap();
    let (_, p1, _) = store
        .open_conversation("webchat", "p1", None, None, new)
        .await
        .unwrap();
    let pruned: BTreeMap<String, u64> = store.prune(new - 1).await.unwrap().into_iter().collect();
    assert_eq!(pruned["inbox"], 1, "{pruned:?}");
    assert_eq!(pruned["traces"], 1, "{pruned:?}");
    assert_eq!(pruned["outbox"], 1, "{pruned:?}");
    assert_eq!(pruned["jobs"], 0, "{pruned:?}");
    assert!(store.traces(p1.id).await.unwrap().is_empty());
    let texts: Vec<String> = all_messages(&store)
        .await
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert_eq!(texts.len(), 4, "messages stay: {texts:?}");
    assert_eq!(store.notes(p1.id).await.unwrap().len(), 1, "notes stay");
    assert!(!store
        .audit(&format!("conversation:{}", p1.id))
        .await
        .unwrap()
        .is_empty());
    // What is kept still recognises a redelivery; the pending reply is still there.
    assert_eq!(
        store
            .ingest(vec![msg("p2", "wamid.new", "new")], new + 1)
            .await
            .unwrap(),
        vec![Ingested::Duplicate]
    );
    assert_eq!(claim_due(&store, new + 1, 10).await.len(), 1);
    // Nothing left to prune twice.
    let again: u64 = store
        .prune(new - 1)
        .await
        .unwrap()
        .iter()
        .map(|(_, n)| n)
        .sum();
    assert_eq!(again, 0);
}

async fn sticky_and_least_loaded(store: Arc<dyn Store>) {
    let engine = Engine::new(store.clone(), pack(ROUTING_PACK), Arc::new(NoLookup));
    engine
        .save_agent(&agent("v1", &["vip"], 5, "online"), "system", 0)
        .await
        .unwrap();
    engine
        .save_agent(&agent("v2", &["vip"], 5, "online"), "system", 0)
        .await
        .unwrap();
    step(&engine, vec![msg("s1", "1", "go vip")], 1).await;
    assert_eq!(owner(&store, "s1").await.as_deref(), Some("v1"));
    step(&engine, vec![msg("s1", "2", "go support")], 2).await;
    assert_eq!(owner(&store, "s1").await, None, "v1 does not work support");
    // Round robin would now pick v2 (v1 was assigned last); sticky brings back v1.
    step(&engine, vec![msg("s1", "3", "go vip")], 3).await;
    assert_eq!(owner(&store, "s1").await.as_deref(), Some("v1"));

    engine
        .save_agent(&agent("b1", &["busy"], 5, "online"), "system", 0)
        .await
        .unwrap();
    engine
        .save_agent(&agent("b2", &["busy"], 5, "online"), "system", 0)
        .await
        .unwrap();
    step(&engine, vec![msg("l1", "4", "go busy")], 4).await;
    step(&engine, vec![msg("l2", "5", "go busy")], 5).await;
    assert_eq!(owner(&store, "l1").await.as_deref(), Some("b1"));
    assert_eq!(owner(&store, "l2").await.as_deref(), Some("b2"));
    step(&engine, vec![msg("l2", "6", "problem solved")], 6).await;
    // b2 now has nothing open; round robin would pick b1 (assigned longer ago).
    step(&engine, vec![msg("l3", "7", "go busy")], 7).await;
    assert_eq!(owner(&store, "l3").await.as_deref(), Some("b2"));
}

/// A message whose hole cannot be filled (here: the order of a conversation that has none)
/// is not sent: a person takes over with a note naming the hole; an agent's reply with such a
/// template is refused, naming it, and changes nothing.
async fn a_message_with_a_hole_that_did_not_render_is_never_sent(store: Arc<dyn Store>) {
    let p = pack(
        r#"
version: 1
settings: { default_queue: support }
queues: { support: { assignment: round_robin } }
templates:
  cod_reminder:
    text: "Please confirm order {{order.name}} of {{order.total}}"
rules:
  - name: remind
    when: message.received
    if: message.text == "remind me"
    then: [ { reply: { template: cod_reminder } } ]
    stop: true
"#,
    );
    let engine = Engine::new(store.clone(), p, Arc::new(NoLookup));
    step(&engine, vec![msg("h1", "1", "remind me")], 1).await;
    let (_, c, _) = store
        .open_conversation("webchat", "h1", None, None, 0)
        .await
        .unwrap();
    assert!(
        store.outbox_payloads().await.unwrap().is_empty(),
        "nothing was sent"
    );
    assert_eq!(c.queue.as_deref(), Some("support"), "a person takes over");
    let notes = store.notes(c.id).await.unwrap();
    assert!(
        notes
            .iter()
            .any(|n| n.text.contains("could not be filled in") && n.text.contains("order.name")),
        "{notes:?}"
    );
    let by = Actor {
        id: "sara".into(),
        agent: Some("sara".into()),
        role: Role::Supervisor,
    };
    let before = store
        .audit(&format!("conversation:{}", c.id))
        .await
        .unwrap()
        .len();
    let r = engine
        .act(
            c.id,
            AgentAction::Reply {
                text: None,
                template: Some("cod_reminder".into()),
            },
            &by,
            2,
        )
        .await;
    match r {
        Err(ActError::Invalid { field, message }) => {
            assert_eq!(field, "template");
            assert!(message.contains("order.name"), "{message}");
        }
        other => panic!("refused with the hole named, not {other:?}"),
    }
    assert!(store.outbox_payloads().await.unwrap().is_empty());
    assert_eq!(
        store
            .audit(&format!("conversation:{}", c.id))
            .await
            .unwrap()
            .len(),
        before,
        "a refused reply changes nothing"
    );
}

async fn a_second_complaint_updates_the_open_ticket(store: Arc<dyn Store>) {
    let engine = Engine::new(store.clone(), pack(ROUTING_PACK), Arc::new(NoLookup));
    step(&engine, vec![msg("t1", "1", "parcel damaged")], 1).await;
    step(
        &engine,
        vec![msg("t1", "2", "and the shirt is torn, worst service")],
        2,
    )
    .await;
    let (_, c, _) = store
        .open_conversation("webchat", "t1", None, None, 0)
        .await
        .unwrap();
    let tickets = store.tickets(c.id).await.unwrap();
    assert_eq!(tickets.len(), 1, "no duplicate ticket");
    let history = store.ticket_history(tickets[0].id).await.unwrap();
    assert_eq!(history.len(), 2);
    assert!(history[0].get("created").is_some() && history[1].get("updated").is_some());
    let audit = store
        .audit(&format!("ticket:{}", tickets[0].id))
        .await
        .unwrap();
    assert_eq!(
        audit
            .iter()
            .map(|a| (a.action.as_str(), a.actor.as_str()))
            .collect::<Vec<_>>(),
        [
            ("created", "rule:complaint ticket"),
            ("updated", "rule:complaint ticket")
        ]
    );
}

async fn a_reload_that_removes_the_current_step_hands_off(store: Arc<dyn Store>) {
    let with_step = r#"
version: 1
settings: { default_queue: support }
queues: { support: { assignment: round_robin } }
flows:
  survey:
    start: ask
    steps:
      ask: { send: { text: "How was it?" }, capture: rating, goto: thanks }
      thanks: { send: { text: "Thanks!" }, end: true }
rules:
  - name: survey
    when: message.received
    if: conversation.flow == ()
    then: [ { start_flow: survey } ]
"#;
    let engine = Engine::new(store.clone(), pack(with_step), Arc::new(NoLookup));
    step(&engine, vec![msg("r1", "1", "hi")], 1).await;
    let (_, c, _) = store
        .open_conversation("webchat", "r1", None, None, 0)
        .await
        .unwrap();
    assert_eq!(
        store
            .conversation(c.id)
            .await
            .unwrap()
            .unwrap()
            .flow
            .unwrap()
            .step,
        "ask"
    );
    let hash_before = engine.pack().hash.clone();
    engine.replace_pack(pack(
        &with_step
            .replace("ask: {", "question: {")
            .replace("start: ask", "start: question"),
    ));
    step(&engine, vec![msg("r1", "2", "5 stars")], 2).await;
    let conv = store.conversation(c.id).await.unwrap().unwrap();
    assert!(conv.flow.is_none());
    assert_eq!(conv.queue.as_deref(), Some("support"));
    let notes = store.notes(c.id).await.unwrap();
    assert!(
        notes
            .iter()
            .any(|n| n.text.contains("step `ask` no longer exists")),
        "{notes:?}"
    );
    let traces = store.traces(c.id).await.unwrap();
    assert_eq!(
        traces[0].0, hash_before,
        "each trace names the pack version that decided"
    );
    assert_ne!(traces[1].0, hash_before);
}

#[path = "engine/properties.rs"]
mod properties;

#[path = "engine/careful.rs"]
mod careful;
use careful::*;
