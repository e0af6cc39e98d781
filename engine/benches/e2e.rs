//! End to end on SQLite: ingest → processed → reply committed to the outbox, over 200
//! conversations, against the raw group-commit insert rate of the same rows measured in the
//! same run (the ceiling). Prints both and their ratio.
//!
//! Run: `cargo bench -p switchyard-engine --bench e2e` (N events, default 60000: `E2E_EVENTS=…`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;
use switchyard_engine::model::{Inbound, Outbound};
use switchyard_engine::ports::{Channel, Lookup, LookupError, Notifier, SendError};
use switchyard_engine::sqlite::SqliteStore;
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
    Arc::new(
        SqliteStore::open(&format!("sqlite://{}", dir.join(name).display()))
            .await
            .unwrap(),
    )
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

fn main() {
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
        loop {
            if store.pending_inbox(0, 1).await.unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
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
        loop {
            if store.pending_inbox(0, 1).await.unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let t_drain = t.elapsed();
        std::mem::forget(runtime);
        let drain = n as f64 / t_drain.as_secs_f64();
        println!("pipeline draining a committed backlog: {drain:>9.0} messages/s ({:.2} s)", t_drain.as_secs_f64());
        println!("ratio drain / raw insert: {:.2}", drain / raw_rate);
    });
}
