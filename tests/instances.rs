//! Several `switchyard serve` processes on one PostgreSQL database, as behind a load
//! balancer: webhook deliveries (with duplicates) land on any instance; every message is
//! processed once, each conversation's in order, each reply sent once, one owner per
//! conversation; an instance killed with SIGKILL mid-load leaves nothing acknowledged behind.
//!
//! Needs `SWITCHYARD_TEST_PG_URL` (`.ci/run` sets it); without it the test says it was skipped.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor, PgConnection};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

mod common;
use common::free_port;
use switchyard_engine::worker::WorkerConfig;

const PHONE_ID: &str = "111";
const ADMIN: &str = "sy_test_admin_token_for_the_instances_test";

/// A small deterministic generator (the test needs spread, not secrecy).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

fn webhook(from: &str, id: &str, text: &str) -> String {
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"1","changes":[{{"field":"messages","value":{{"metadata":{{"phone_number_id":"{PHONE_ID}"}},"contacts":[{{"profile":{{"name":"C"}},"wa_id":"{from}"}}],"messages":[{{"from":"{from}","id":"{id}","timestamp":"1700000000","type":"text","text":{{"body":"{text}"}}}}]}}}}]}}]}}"#
    )
}

struct Instance {
    child: Child,
    base: String,
}

/// A test that fails still stops its servers.
impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The app secret the instances check webhooks with.
const APP_SECRET: &str = "instances-test-app-secret";

/// `X-Hub-Signature-256` of a body, as Meta signs it.
fn signed(body: &str) -> String {
    switchyard_connectors::whatsapp::signature(APP_SECRET.as_bytes(), body.as_bytes())
}

fn start(db: &str, fake: &str, port: u16) -> Instance {
    let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["serve", "--rules", "tests/packs/echo", "--db", db])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("WHATSAPP_PHONE_NUMBER_ID", PHONE_ID)
        .env("WHATSAPP_ACCESS_TOKEN", "test-token")
        .env("WHATSAPP_API_BASE", fake)
        .env("WHATSAPP_SEND_RATE", "10000")
        .env("SWITCHYARD_ADMIN_TOKEN", ADMIN)
        .env("WHATSAPP_APP_SECRET", APP_SECRET)
        .env_remove("SWITCHYARD_CONFIG")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve starts");
    Instance {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

async fn ready(i: &Instance) {
    let c = reqwest::Client::new();
    for _ in 0..300 {
        if let Ok(r) = c.get(format!("{}/readyz", i.base)).send().await {
            if r.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} did not become ready", i.base);
}

/// Delivers one webhook to a random live instance until one acknowledges it (as Meta retries
/// a delivery that failed). Returns the instance that took it.
async fn deliver(
    c: &reqwest::Client,
    bases: &[String],
    alive: &Mutex<Vec<bool>>,
    pick: usize,
    body: String,
) -> usize {
    for attempt in 0..200 {
        let live: Vec<usize> = {
            let a = alive.lock().unwrap();
            (0..bases.len()).filter(|i| a[*i]).collect()
        };
        let i = live[(pick + attempt) % live.len()];
        let r = c
            .post(format!("{}/webhooks/whatsapp", bases[i]))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", signed(&body))
            .body(body.clone())
            .send()
            .await;
        if matches!(&r, Ok(r) if r.status() == 200) {
            return i;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no instance took a delivery");
}

/// Sends `per` messages for each of `convs` conversations (each conversation's in order, the
/// conversations at once), every tenth delivered twice, to random instances. `on_half` runs
/// once when half are delivered.
async fn load(
    bases: &[String],
    alive: Arc<Mutex<Vec<bool>>>,
    prefix: &str,
    convs: usize,
    per: usize,
    seed: u64,
    on_half: impl FnOnce() + Send + 'static,
) -> usize {
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let half = (convs * per / 2) as u64;
    let on_half = Arc::new(Mutex::new(Some(on_half)));
    let bases: Arc<Vec<String>> = Arc::new(bases.to_vec());
    let gate = Arc::new(tokio::sync::Semaphore::new(48));
    let mut tasks = Vec::new();
    let deliveries = Arc::new(AtomicU64::new(0));
    for k in 0..convs {
        let (c, bases, alive, sent, on_half, gate, deliveries) = (
            c.clone(),
            bases.clone(),
            alive.clone(),
            sent.clone(),
            on_half.clone(),
            gate.clone(),
            deliveries.clone(),
        );
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            let mut rng = Lcg(seed ^ ((k as u64 + 1) * 7919));
            let offset = match prefix.as_str() {
                "a" => 0,
                "b" => 10_000,
                _ => 20_000,
            };
            let from = format!("9230{:08}", k + offset);
            for m in 0..per {
                let id = format!("wamid.{prefix}.{k}.{m}");
                let body = webhook(&from, &id, &format!("{prefix}{k}-m{m:02}"));
                deliver(&c, &bases, &alive, rng.next(bases.len()), body.clone()).await;
                deliveries.fetch_add(1, Ordering::SeqCst);
                if rng.next(10) == 0 {
                    // The same delivery again, elsewhere: deduplicated on the message id.
                    deliver(&c, &bases, &alive, rng.next(bases.len()), body).await;
                    deliveries.fetch_add(1, Ordering::SeqCst);
                }
                if sent.fetch_add(1, Ordering::SeqCst) + 1 == half {
                    if let Some(f) = on_half.lock().unwrap().take() {
                        f();
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    deliveries.load(Ordering::SeqCst) as usize
}

async fn settled(db: &mut PgConnection, within: Duration) {
    let started = Instant::now();
    loop {
        let (inbox, outbox): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM inbox WHERE processed_at IS NULL), \
                    (SELECT count(*) FROM outbox WHERE status = 'pending')",
        )
        .fetch_one(&mut *db)
        .await
        .unwrap();
        if inbox == 0 && outbox == 0 {
            return;
        }
        assert!(
            started.elapsed() < within,
            "not settled in {within:?}: {inbox} inbox rows and {outbox} replies pending"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Per conversation: the customer's texts and the replies, in stored order.
async fn transcripts(
    db: &mut PgConnection,
    prefix: &str,
) -> HashMap<i64, (Vec<String>, Vec<String>)> {
    let rows: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT conversation_id, direction, body FROM messages WHERE body LIKE $1 OR body LIKE $2 ORDER BY id",
    )
    .bind(format!("{prefix}%"))
    .bind(format!("echo {prefix}%"))
    .fetch_all(&mut *db)
    .await
    .unwrap();
    let mut out: HashMap<i64, (Vec<String>, Vec<String>)> = HashMap::new();
    for (c, dir, body) in rows {
        let e = out.entry(c).or_default();
        if dir == "in" {
            e.0.push(body);
        } else {
            e.1.push(body.trim_start_matches("echo ").to_string());
        }
    }
    out
}

/// A fresh database on the server of `SWITCHYARD_TEST_PG_URL`; `None` (and a line saying the
/// test was skipped) without the variable.
struct TestDb {
    admin: PgConnectOptions,
    name: String,
}

impl TestDb {
    async fn create(what: &str) -> Option<TestDb> {
        let Ok(url) = std::env::var("SWITCHYARD_TEST_PG_URL") else {
            eprintln!("skipped: SWITCHYARD_TEST_PG_URL is not set ({what})");
            return None;
        };
        switchyard_connectors::cloud_api::install_tls();
        let admin: PgConnectOptions = url.parse().unwrap();
        let name = format!("switchyard_{what}_{}", std::process::id()).replace(' ', "_");
        let mut a = admin.connect().await.unwrap();
        for sql in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ] {
            a.execute(sql.as_str()).await.unwrap();
        }
        Some(TestDb { admin, name })
    }

    /// A URL for the instances (trust auth, as in CI), through `host:port`.
    fn url_via(&self, host: &str, port: u16) -> String {
        format!(
            "postgres://{}@{host}:{port}/{}",
            self.admin.get_username(),
            self.name
        )
    }

    fn url(&self) -> String {
        self.url_via(self.admin.get_host(), self.admin.get_port())
    }

    async fn connect(&self) -> PgConnection {
        self.admin
            .clone()
            .database(&self.name)
            .connect()
            .await
            .unwrap()
    }

    async fn drop_db(self) {
        if let Ok(mut a) = self.admin.connect().await {
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            let _ = a.execute(sql.as_str()).await;
            let _ = a.close().await;
        }
    }
}

/// The fake Graph API: every send gets an id of its own; the texts are recorded.
async fn fake_graph() -> (MockServer, Arc<Mutex<Vec<String>>>) {
    let fake = MockServer::start().await;
    let sends: Arc<Mutex<Vec<String>>> = Arc::default();
    let n = AtomicU64::new(0);
    let recorded = sends.clone();
    Mock::given(method("POST"))
        .and(path_regex(r"/messages$"))
        .respond_with(move |r: &Request| {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
            recorded
                .lock()
                .unwrap()
                .push(v["text"]["body"].as_str().unwrap_or_default().to_string());
            let id = n.fetch_add(1, Ordering::SeqCst);
            ResponseTemplate::new(200).set_body_json(
                serde_json::json!({ "messages": [ { "id": format!("wamid.out.{id}") } ] }),
            )
        })
        .mount(&fake)
        .await;
    (fake, sends)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_share_the_load_and_survive_a_kill() {
    let Some(test_db) = TestDb::create("instances").await else {
        return;
    };
    let db_url = test_db.url();
    let (fake, sends) = fake_graph().await;

    let ports = [free_port(), free_port(), free_port()];
    let mut instances: Vec<Instance> = ports
        .iter()
        .map(|p| start(&db_url, &fake.uri(), *p))
        .collect();
    for i in &instances {
        ready(i).await;
    }
    let bases: Vec<String> = instances.iter().map(|i| i.base.clone()).collect();
    let c = reqwest::Client::new();
    for agent in ["ana", "bilal"] {
        let r = c
            .post(format!("{}/api/v1/agents", bases[0]))
            .bearer_auth(ADMIN)
            .json(&serde_json::json!({ "id": agent, "queues": ["support"], "capacity": 1000, "availability": "online" }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{:?}", r.text().await);
    }

    // 1. 200 conversations × 9 messages, every tenth delivered twice: about 2,000 deliveries.
    let alive = Arc::new(Mutex::new(vec![true; 3]));
    let deliveries = load(&bases, alive.clone(), "a", 200, 9, 42, || {}).await;
    assert!(deliveries >= 1_900, "{deliveries} deliveries");
    let mut db = test_db.connect().await;
    settled(&mut db, Duration::from_secs(120)).await;
    let t = transcripts(&mut db, "a").await;
    assert_eq!(t.len(), 200, "one conversation per customer");
    for (conv, (ins, outs)) in &t {
        let k = ins
            .first()
            .map(|s| s[1..].split('-').next().unwrap().to_string())
            .unwrap();
        let want: Vec<String> = (0..9).map(|m| format!("a{k}-m{m:02}")).collect();
        assert_eq!(
            ins, &want,
            "conversation {conv}: each message once, in order"
        );
        assert_eq!(
            outs, &want,
            "conversation {conv}: each reply once, in order"
        );
    }
    let sent = sends.lock().unwrap().clone();
    let unique: HashSet<&String> = sent.iter().collect();
    assert_eq!(sent.len(), 1_800, "every reply reached WhatsApp");
    assert_eq!(unique.len(), sent.len(), "no reply was sent twice");
    let owners: Vec<(i64, Option<String>, i64)> = sqlx::query_as(
        "SELECT v.id, v.assignee, (SELECT count(*) FROM audit a WHERE a.entity = 'conversation:' || v.id AND a.action = 'assigned') \
         FROM conversations v",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    for (id, owner, assigned) in &owners {
        assert!(owner.is_some(), "conversation {id} has an owner");
        assert_eq!(*assigned, 1, "conversation {id} was assigned once");
    }

    // 2. Another 100 conversations × 6; instance 0 is killed (SIGKILL) halfway through.
    let victim = instances.remove(0);
    let victim = Arc::new(Mutex::new(Some(victim)));
    let killer = {
        let (victim, alive) = (victim.clone(), alive.clone());
        move || {
            alive.lock().unwrap()[0] = false;
            // SIGKILL (Child::kill), then reaped by the drop.
            drop(victim.lock().unwrap().take());
        }
    };
    load(&bases, alive.clone(), "b", 100, 6, 7, killer).await;
    assert!(victim.lock().unwrap().is_none(), "the kill happened");
    settled(&mut db, Duration::from_secs(120)).await;
    let t = transcripts(&mut db, "b").await;
    assert_eq!(t.len(), 100);
    let mut in_doubt = 0;
    for (conv, (ins, outs)) in &t {
        let k = ins
            .first()
            .map(|s| s[1..].split('-').next().unwrap().to_string())
            .unwrap();
        let want: Vec<String> = (0..6).map(|m| format!("b{k}-m{m:02}")).collect();
        assert_eq!(
            ins, &want,
            "conversation {conv}: every acknowledged message once, in order"
        );
        assert_eq!(
            outs, &want,
            "conversation {conv}: each reply decided once, in order"
        );
    }
    let statuses: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, count(*) FROM messages WHERE direction = 'out' AND body LIKE 'echo b%' GROUP BY status",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    for (s, k) in &statuses {
        if s != "sent" {
            // Mid-send when the instance died: never sent again (at most once).
            in_doubt += k;
        }
    }
    let sent = sends.lock().unwrap().clone();
    let unique: HashSet<&String> = sent.iter().collect();
    assert_eq!(
        unique.len(),
        sent.len(),
        "no reply was sent twice: {statuses:?}"
    );
    // One destination (the WhatsApp number): at most its sends in flight at the kill.
    let in_flight = WorkerConfig::default().sends_per_destination as i64;
    assert!(
        in_doubt <= in_flight,
        "at most the sends in flight are in doubt: {statuses:?}"
    );
    // A reply in doubt may or may not have reached WhatsApp before the kill.
    let n = sent.len() as i64;
    assert!(
        (2_400 - in_doubt..=2_400).contains(&n),
        "{n} sends: {statuses:?}"
    );

    // 3. Every connection of the instances is cut (a database restart, a network blip): they
    //    reconnect, and the next messages are processed and answered.
    let cut: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()) t",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert!(cut > 0, "the instances had connections to cut");
    let before = sends.lock().unwrap().len();
    load(&bases, alive.clone(), "c", 10, 2, 3, || {}).await;
    settled(&mut db, Duration::from_secs(60)).await;
    let t = transcripts(&mut db, "c").await;
    assert_eq!(
        t.values().map(|(i, o)| i.len() + o.len()).sum::<usize>(),
        40
    );
    for _ in 0..100 {
        if sends.lock().unwrap().len() == before + 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        sends.lock().unwrap().len(),
        before + 20,
        "answered after the reconnect"
    );

    drop(instances);
    drop(db);
    test_db.drop_db().await;
}

/// A TCP forwarder to PostgreSQL that the test can cut (every connection closed, new ones
/// refused) and restore on the same port: a database restart or a network outage.
struct Cable {
    port: u16,
    target: String,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Cable {
    async fn new(target: String) -> Arc<Cable> {
        let c = Arc::new(Cable {
            port: free_port(),
            target,
            task: Mutex::new(None),
        });
        c.connect().await;
        c
    }

    async fn connect(&self) {
        // The port was free a moment ago; the old listener's socket may take a moment to go.
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(e) if tries < 100 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => panic!("the cable's port {} stays taken: {e}", self.port),
            }
        };
        let target = self.target.clone();
        let task = tokio::spawn(async move {
            let mut pipes = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let target = target.clone();
                // Aborting this task drops the JoinSet, which aborts every pipe.
                pipes.spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        });
        *self.task.lock().unwrap() = Some(task);
    }

    async fn cut(&self) {
        if let Some(t) = self.task.lock().unwrap().take() {
            t.abort();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The database goes away while an instance serves: `/readyz` turns 503 and webhooks are
/// refused (so Meta retries them) instead of acknowledged and lost; when it is back, the
/// instance reconnects, `/readyz` is 200 again, and everything acknowledged is processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_database_turns_readyz_503_and_loses_nothing_acknowledged() {
    let Some(test_db) = TestDb::create("outage").await else {
        return;
    };
    let cable = Cable::new(format!(
        "{}:{}",
        test_db.admin.get_host(),
        test_db.admin.get_port()
    ))
    .await;
    let db_url = test_db.url_via("127.0.0.1", cable.port);
    let (fake, sends) = fake_graph().await;
    let i = start(&db_url, &fake.uri(), free_port());
    ready(&i).await;
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let post = |k: usize| {
        let (c, base) = (c.clone(), i.base.clone());
        async move {
            let body = webhook("923001112223", &format!("wamid.o.{k}"), &format!("o{k}"));
            c.post(format!("{base}/webhooks/whatsapp"))
                .header("content-type", "application/json")
                .header("x-hub-signature-256", signed(&body))
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    let mut acknowledged = Vec::new();
    for k in 0..5 {
        assert_eq!(post(k).await, 200);
        acknowledged.push(k);
    }

    cable.cut().await;
    let mut unready = false;
    for _ in 0..50 {
        let r = c.get(format!("{}/readyz", i.base)).send().await.unwrap();
        if r.status() == 503 {
            unready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(unready, "/readyz turns 503 without the database");
    let refused = post(100).await;
    assert_ne!(
        refused, 200,
        "a webhook is not acknowledged without the database"
    );

    cable.connect().await;
    ready(&i).await;
    for k in 5..10 {
        assert_eq!(post(k).await, 200);
        acknowledged.push(k);
    }
    let mut db = test_db.connect().await;
    settled(&mut db, Duration::from_secs(60)).await;
    let ins: Vec<String> =
        sqlx::query_scalar("SELECT body FROM messages WHERE direction = 'in' ORDER BY id")
            .fetch_all(&mut db)
            .await
            .unwrap();
    let want: Vec<String> = acknowledged.iter().map(|k| format!("o{k}")).collect();
    assert_eq!(
        ins, want,
        "every acknowledged message processed once, in order"
    );
    // A claim cut off mid-way (its COMMIT reached the database, its answer did not) leaves
    // that reply in doubt: never sent twice, and not at all (at most once).
    let mut in_doubt = 0;
    for _ in 0..100 {
        in_doubt = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM messages WHERE direction = 'out' AND status <> 'sent'",
        )
        .fetch_one(&mut db)
        .await
        .unwrap();
        if sends.lock().unwrap().len() as i64 + in_doubt == 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sent = sends.lock().unwrap().clone();
    let in_flight = WorkerConfig::default().sends_per_destination as i64;
    assert!(in_doubt <= in_flight, "{in_doubt} replies in doubt");
    assert_eq!(
        sent.len() as i64,
        10 - in_doubt,
        "each answered once: {sent:?}"
    );
    assert_eq!(
        sent.iter().collect::<HashSet<_>>().len(),
        sent.len(),
        "none twice"
    );
    drop(i);
    drop(db);
    test_db.drop_db().await;
}
