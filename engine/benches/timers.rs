//! The timer loop with 100,000 pending timers (issue #6): how late timers fire, and what the
//! workers cost while idle, against the same runtime with no pending timers, in one run.
//!
//! `cargo bench -p switchyard-engine --bench timers` (`TIMERS=N`, default 100000). CPU time is
//! read from `/proc/self/stat` (Linux).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;
use switchyard_engine::model::JobKind;
use switchyard_engine::model::{now_millis, Outbound};
use switchyard_engine::ports::{Channel, Lookup, LookupError, Notifier, SendError};
use switchyard_engine::store::sqlite::SqliteStore;
use switchyard_engine::store::{Changeset, NewJob, Store};
use switchyard_engine::worker::{Runtime, WorkerConfig};
use switchyard_engine::Engine;
use switchyard_rules::pack::LookupAction;
use switchyard_rules::{load_files, SourceFile};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PACK: &str = r#"
version: 1
settings: { default_queue: support }
queues: { support: { assignment: manual } }
rules:
  - name: due
    when: timer.due
    then: [ { tag: fired } ]
"#;

struct Nothing;

#[async_trait]
impl Channel for Nothing {
    async fn send(&self, _: &Outbound) -> Result<String, SendError> {
        Ok("x".into())
    }
}
#[async_trait]
impl Notifier for Nothing {
    async fn notify(&self, _: &str, _: &Value) -> Result<(), LookupError> {
        Ok(())
    }
}
#[async_trait]
impl Lookup for Nothing {
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

/// User + system CPU time of this process.
fn cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(Duration::from_millis(ticks * 10))
}

/// A runtime over a store holding `pending` timers due in a year, one conversation per 1,000.
async fn setup(pending: usize) -> (tempfile::TempDir, Arc<dyn Store>, Runtime, Vec<i64>) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&url).await.unwrap());
    let l = load_files(
        vec![SourceFile {
            rel: "p.yaml".into(),
            display: "p.yaml".into(),
            text: PACK.into(),
        }],
        "bench",
    );
    let now = now_millis();
    let mut convs = Vec::new();
    for c in 0..(pending / 1000).max(1) + 1 {
        let (_, conv, _) = store
            .open_conversation("webchat", &format!("c{c}"), None, None, now)
            .await
            .unwrap();
        convs.push(conv.id);
    }
    for (i, chunk) in (0..pending).collect::<Vec<_>>().chunks(1000).enumerate() {
        store
            .commit(Changeset {
                at: now,
                conversation_id: convs[i],
                new_jobs: chunk
                    .iter()
                    .map(|j| NewJob {
                        kind: JobKind::Timer,
                        name: format!("later{j}"),
                        due_at: now + 365 * 86_400_000,
                    })
                    .collect(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let engine = Arc::new(Engine::new(
        store.clone(),
        Arc::new(l.pack.unwrap()),
        Arc::new(Nothing),
    ));
    let rt = Runtime::start(
        engine,
        Arc::new(Nothing),
        Arc::new(Nothing),
        WorkerConfig::default(),
    )
    .await
    .unwrap();
    (dir, store, rt, convs)
}

/// CPU used by the idle runtime over `secs`.
async fn idle_cpu(secs: u64) -> Option<Duration> {
    let before = cpu()?;
    tokio::time::sleep(Duration::from_secs(secs)).await;
    Some(cpu()? - before)
}

/// Schedules `n` timers due over the next two seconds and returns how late each fired (ms).
async fn lateness(store: &Arc<dyn Store>, conv: i64, n: usize) -> Vec<i64> {
    let start = now_millis() + 500;
    let jobs: Vec<NewJob> = (0..n)
        .map(|i| NewJob {
            kind: JobKind::Timer,
            name: "due".into(),
            due_at: start + (i as i64 * 2000 / n as i64),
        })
        .collect();
    let due: Vec<i64> = jobs.iter().map(|j| j.due_at).collect();
    store
        .commit(Changeset {
            at: now_millis(),
            conversation_id: conv,
            new_jobs: jobs,
            ..Default::default()
        })
        .await
        .unwrap();
    let t = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let fired = store
            .audit(&format!("conversation:{conv}"))
            .await
            .unwrap()
            .iter()
            .filter(|a| a.action == "tagged" || a.actor == "rule:due")
            .count();
        let left = store.due_jobs(start + 2000, 1).await.unwrap().len();
        if (left == 0 && fired > 0) || t.elapsed() > Duration::from_secs(30) {
            break;
        }
    }
    // Each fired job's trace records when it ran; the due times are known.
    let traces = store.traces(conv).await.unwrap();
    let mut late: Vec<i64> = traces
        .iter()
        .filter_map(|(_, t)| {
            chrono::DateTime::parse_from_rfc3339(t["at"].as_str()?)
                .ok()
                .map(|x| x.timestamp_millis())
        })
        .zip(due)
        .map(|(ran, due)| ran - due)
        .collect();
    late.sort_unstable();
    late
}

fn pct(v: &[i64], p: f64) -> i64 {
    if v.is_empty() {
        return -1;
    }
    v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
}

fn main() {
    let pending: usize = std::env::var("TIMERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for (label, n) in [("no pending timers", 0), ("pending timers", pending)] {
            let t = Instant::now();
            let (_dir, store, runtime, convs) = setup(n).await;
            let setup_s = t.elapsed().as_secs_f64();
            // Let start-up work settle before measuring.
            tokio::time::sleep(Duration::from_secs(1)).await;
            let idle = idle_cpu(5).await;
            let late = lateness(&store, *convs.last().unwrap(), 200).await;
            println!(
                "{label} ({n}): set up in {setup_s:.1} s; idle CPU over 5 s: {}; 200 timers fired late by p50 {} ms, p99 {} ms, max {} ms",
                idle.map(|d| format!("{} ms ({:.2} %)", d.as_millis(), d.as_secs_f64() / 5.0 * 100.0))
                    .unwrap_or_else(|| "n/a".into()),
                pct(&late, 0.5),
                pct(&late, 0.99),
                late.last().copied().unwrap_or(-1),
            );
            runtime.shutdown().await;
        }
    });
}
