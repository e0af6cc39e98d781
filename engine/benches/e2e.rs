//! End to end on SQLite: ingest → processed → reply committed to the outbox, over 200
//! conversations, against the raw group-commit insert rate of the same rows measured in the
//! same run (the ceiling). Prints both and their ratio.
//!
//! Run: `cargo bench -p switchyard-engine --bench e2e` (N events, default 60000: `E2E_EVENTS=…`;
//! `E2E_SQLITE_SYNC=normal` measures SQLite's weaker `synchronous=NORMAL` instead of the default
//! FULL).
//!
//! With `E2E_PG_URL=postgres://…` it measures PostgreSQL instead (default 10,000 events):
//! the raw inbox insert rate, then the pipeline end to end with one instance and with three
//! (three engines, each with its own store, on one fresh database — instances as behind a load
//! balancer, in one process on the same two worker threads).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;
use switchyard_engine::model::{Inbound, Outbound};
use switchyard_engine::ports::{Channel, Lookup, LookupError, Notifier, SendError};
use switchyard_engine::store::sqlite::SqliteStore;
use switchyard_engine::store::Store;
use switchyard_engine::worker::{Runtime, WorkerConfig};
use switchyard_engine::Engine;
use switchyard_rules::pack::LookupAction;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Null;

#[async_trait]
impl Lookup for Null {
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

/// A channel that never finishes sending: the benchmark measures up to the committed outbox.
struct Parked;

#[async_trait]
impl Channel for Parked {
    async fn send(&self, _: &Outbound) -> Result<String, SendError> {
        std::future::pending().await
    }
}

#[async_trait]
impl Notifier for Parked {
    async fn notify(&self, _: &str, _: &Value) -> Result<(), LookupError> {
        std::future::pending().await
    }
}

const TEXTS: &[&str] = &[
    "parcel toota hua aaya hai",
    "size chota hai exchange karna hai",
    "mera address change kar dein",
    "talk to a human please",
    "do you have this in maroon",
    "payment deduct ho gayi",
];

fn events(n: usize, convs: usize, tag: &str) -> Vec<Inbound> {
    (0..n)
        .map(|i| Inbound::Message {
            channel: "whatsapp".into(),
            from: format!("92300{:07}", i % convs),
            name: None,
            phone: None,
            provider_id: format!("{tag}{i}"),
            kind: "text".into(),
            text: TEXTS[i % TEXTS.len()].to_string(),
            choice: None,
            payload: Value::Null,
        })
        .collect()
}

async fn open(dir: &Path, name: &str) -> Arc<dyn Store> {
    let sync = std::env::var("E2E_SQLITE_SYNC")
        .map(|s| format!("?synchronous={s}"))
        .unwrap_or_default();
    Arc::new(
        SqliteStore::open(&format!("sqlite://{}{sync}", dir.join(name).display()))
            .await
            .unwrap(),
    )
}

/// Returns once every inbox event is processed.
async fn drained(store: &Arc<dyn Store>) {
    while !store.pending_inbox(0, 1).await.unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Ingests `evs` from 64 concurrent "webhook" tasks, one event per call, like real traffic.
async fn ingest_concurrently(store: Arc<dyn Store>, evs: Vec<Inbound>) -> Duration {
    let t = Instant::now();
    let chunks: Vec<Vec<Inbound>> = {
        let mut c = vec![Vec::new(); 64];
        for (i, e) in evs.into_iter().enumerate() {
            c[i % 64].push(e);
        }
        c
    };
    let mut tasks = Vec::new();
    for chunk in chunks {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for e in chunk {
                store.ingest(vec![e], 0).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    t.elapsed()
}

/// A fresh PostgreSQL database named `name` on the server of `url`.
async fn pg_database(url: &str, name: &str) -> sqlx::postgres::PgConnectOptions {
    use sqlx::{ConnectOptions, Executor};
    let admin: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let mut c = admin.connect().await.unwrap();
    c.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await
        .unwrap();
    c.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    admin.database(name)
}

async fn pg_store(opts: &sqlx::postgres::PgConnectOptions) -> Arc<dyn Store> {
    Arc::new(
        switchyard_engine::store::postgres::PgStore::open_with(opts.clone(), Default::default())
            .await
            .unwrap(),
    )
}

/// The pipeline on PostgreSQL with `instances` engines sharing one database; events are
/// ingested through the instances in turn. Returns messages/s end to end.
async fn pg_e2e(url: &str, n: usize, convs: usize, instances: usize) -> f64 {
    let opts = pg_database(url, &format!("switchyard_bench_{instances}")).await;
    let mut stores = Vec::new();
    let mut runtimes = Vec::new();
    for _ in 0..instances {
        let store = pg_store(&opts).await;
        let pack = switchyard_rules::load_dir(Path::new("../examples/pk-ecommerce"))
            .unwrap()
            .pack
            .unwrap();
        let engine = Arc::new(Engine::new(store.clone(), Arc::new(pack), Arc::new(Null)));
        runtimes.push(
            Runtime::start(
                engine,
                Arc::new(Parked),
                Arc::new(Parked),
                WorkerConfig {
                    concurrency: 12,
                    poll: Duration::from_millis(5),
                    ..Default::default()
                },
            )
            .await
            .unwrap(),
        );
        stores.push(store);
    }
    let t = Instant::now();
    let evs = events(n, convs, &format!("p{instances}-"));
    let mut parts: Vec<Vec<Inbound>> = vec![Vec::new(); instances];
    for (i, e) in evs.into_iter().enumerate() {
        parts[i % instances].push(e);
    }
    let mut tasks = Vec::new();
    for (store, part) in stores.iter().zip(parts) {
        tasks.push(tokio::spawn(ingest_concurrently(store.clone(), part)));
    }
    for t in tasks {
        t.await.unwrap();
    }
    drained(&stores[0]).await;
    let t_all = t.elapsed();
    for r in runtimes {
        std::mem::forget(r);
    }
    n as f64 / t_all.as_secs_f64()
}

fn postgres(url: &str) {
    let n: usize = std::env::var("E2E_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let convs = 200;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Made first: the parked runtimes use up the server's connections by the end.
        use sqlx::{ConnectOptions, Executor};
        let admin: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
        let mut c = admin.connect().await.unwrap();
        let opts = pg_database(url, "switchyard_bench_raw").await;
        let raw = pg_store(&opts).await;
        let t_raw = ingest_concurrently(raw, events(n, convs, "r")).await;
        let raw_rate = n as f64 / t_raw.as_secs_f64();
        println!("PostgreSQL, events: {n} over {convs} conversations (2 worker threads)");
        println!("raw inbox insert (one event per transaction, 64 tasks): {raw_rate:>8.0} events/s");
        let one = pg_e2e(url, n, convs, 1).await;
        println!("end to end, 1 instance:  {one:>8.0} messages/s (ratio to raw {:.2})", one / raw_rate);
        let three = pg_e2e(url, n, convs, 3).await;
        println!("end to end, 3 instances: {three:>8.0} messages/s (ratio to raw {:.2}, to 1 instance {:.2})", three / raw_rate, three / one);
        // The runtimes are parked on purpose (never shut down): FORCE ends their sessions.
        for name in ["switchyard_bench_raw", "switchyard_bench_1", "switchyard_bench_3"] {
            let _ = c.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await;
        }
    });
}

fn main() {
    if let Ok(url) = std::env::var("E2E_PG_URL") {
        return postgres(&url);
    }
    let n: usize = std::env::var("E2E_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60_000);
    let convs = 200;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();

        // 1. The ceiling: group-committed inbox inserts of the same rows, nothing else.
        let raw = open(dir.path(), "raw.db").await;
        let t_raw = ingest_concurrently(raw, events(n, convs, "r")).await;
        let raw_rate = n as f64 / t_raw.as_secs_f64();

        // 2. The pipeline: the same ingest, then every event classified, through rules and
        //    actions, with state, audit, trace and the outbox row committed.
        let store = open(dir.path(), "e2e.db").await;
        let pack = switchyard_rules::load_dir(Path::new("../examples/pk-ecommerce")).unwrap().pack.unwrap();
        let engine = Arc::new(Engine::new(store.clone(), Arc::new(pack), Arc::new(Null)));
        let t = Instant::now();
        let runtime = Runtime::start(engine, Arc::new(Parked), Arc::new(Parked), WorkerConfig { concurrency: 256, poll: Duration::from_millis(5), ..Default::default() }).await.unwrap();
        let t_ingest = ingest_concurrently(store.clone(), events(n, convs, "e")).await;
        drained(&store).await;
        let t_all = t.elapsed();
        let outbox = store.outbox_payloads().await.unwrap().len();
        std::mem::forget(runtime); // its dispatcher is parked on purpose
        let rate = n as f64 / t_all.as_secs_f64();
        println!("events: {n} over {convs} conversations (2 worker threads)");
        println!("raw group-commit inbox insert: {raw_rate:>9.0} events/s ({:.2} s)", t_raw.as_secs_f64());
        println!("ingest while the pipeline runs: {:>8.0} events/s ({:.2} s)", n as f64 / t_ingest.as_secs_f64(), t_ingest.as_secs_f64());
        println!("end to end (ingest → committed outbox): {rate:>9.0} messages/s ({:.2} s, {outbox} outbox rows)", t_all.as_secs_f64());
        println!("ratio end-to-end / raw insert: {:.2}", rate / raw_rate);

        // 3. The pipeline alone: a backlog of committed events (a restart after an outage)
        //    drained by the workers.
        let store = open(dir.path(), "drain.db").await;
        let pack = switchyard_rules::load_dir(Path::new("../examples/pk-ecommerce")).unwrap().pack.unwrap();
        ingest_concurrently(store.clone(), events(n, convs, "d")).await;
        let engine = Arc::new(Engine::new(store.clone(), Arc::new(pack), Arc::new(Null)));
        let t = Instant::now();
        let runtime = Runtime::start(engine, Arc::new(Parked), Arc::new(Parked), WorkerConfig { concurrency: 256, poll: Duration::from_millis(5), ..Default::default() }).await.unwrap();
        drained(&store).await;
        let t_drain = t.elapsed();
        std::mem::forget(runtime);
        let drain = n as f64 / t_drain.as_secs_f64();
        println!("pipeline draining a committed backlog: {drain:>9.0} messages/s ({:.2} s)", t_drain.as_secs_f64());
        println!("ratio drain / raw insert: {:.2}", drain / raw_rate);
    });
}
