//! Webhook acknowledgement under load: throughput at saturation (64 connections) and latency
//! at a fixed 1,000 requests/s, for Switchyard's `POST /webhooks/whatsapp` (signature check +
//! parse + commit to the inbox, with the pipeline working in the background) against, in the
//! same run:
//!
//! - a bare axum handler that parses the JSON (the HTTP ceiling),
//! - bare axum + the store's group-committed inbox insert, no signature, no pipeline (the
//!   durable-ack ceiling),
//! - Node-RED, when `NODE_RED_URL` is set (`benches/webhook-load.sh` installs and starts it).
//!
//! Each server runs on a tokio runtime with one worker thread (Switchyard with its pipeline
//! running: two, as `serve` on a 2-core machine); the load generator on another with one thread, over plain HTTP/1.1 keep-alive connections (a minimal client: the request
//! bytes are prepared, the response is read up to its Content-Length). Latency at the fixed
//! rate is measured from each request's scheduled time, so a stall counts for every request it
//! delays. Every request carries a 1 KB WhatsApp text notification with a unique `wamid`.
//!
//! Run: `benches/webhook-load.sh` (all four), or `cargo bench -p switchyard-api --bench webhook`
//! (`BENCH_SECS=N` per measurement, default 5).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::routing::post;
use axum::Router;
use serde_json::Value;
use switchyard_api::{router, AppState};
use switchyard_connectors::sandbox::{SandboxChannel, SandboxNotifier};
use switchyard_engine::store::sqlite::SqliteStore;
use switchyard_engine::worker::{Runtime, WorkerConfig};
use switchyard_engine::{Engine, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONNECTIONS: usize = 64;
const FIXED_RATE: u64 = 1_000;
const SECRET: &str = "bench-secret";

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A ~1 KB Cloud API notification with one text message and a unique id.
fn body() -> String {
    let n = NEXT.fetch_add(1, Relaxed);
    let from = format!("9230{:08}", n % 5_000);
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"102290129340398","changes":[{{"field":"messages","value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550783881","phone_number_id":"106540352242922"}},"contacts":[{{"profile":{{"name":"Ayesha Khan"}},"wa_id":"{from}"}}],"messages":[{{"from":"{from}","id":"wamid.HBgMOTIzMDAxMjM0NTY3FQIAEhggQkVOQ0gtTE9BRC0{n:012}","timestamp":"1732300000","type":"text","text":{{"body":"Assalam o alaikum, mera order kahan hai? Order number #10234 hai, kal tak aana tha lekin abhi tak nahi aaya. Please jaldi batayein, bohat zaroori hai. Shukriya!"}}}}]}}}}]}}],"note":"padding to about one kilobyte, like a real notification with its envelope: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}"#
    )
}

fn request(host: &str, path: &str) -> Vec<u8> {
    let b = body();
    let sig = switchyard_connectors::whatsapp::signature(SECRET.as_bytes(), b.as_bytes());
    format!(
        "POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\nx-hub-signature-256: {sig}\r\ncontent-length: {}\r\n\r\n{b}",
        b.len()
    )
    .into_bytes()
}

/// Sends one request and reads the response; returns whether it was a 2xx.
async fn round_trip(conn: &mut TcpStream, req: &[u8], buf: &mut Vec<u8>) -> std::io::Result<bool> {
    conn.write_all(req).await?;
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if buf.len() >= end + 4 + len {
            return Ok(head.starts_with("http/1.1 2"));
        }
    }
}

#[derive(Default)]
struct Run {
    ok: u64,
    failed: u64,
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Run {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
    fn pct(&mut self, p: f64) -> Duration {
        self.latencies.sort_unstable();
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 * p) as usize).min(self.latencies.len() - 1);
        self.latencies[i]
    }
}

/// `CONNECTIONS` connections; at saturation each sends as fast as answered, at a fixed rate
/// they share `FIXED_RATE` requests/s, each on its own schedule.
async fn load(addr: SocketAddr, path: &str, secs: u64, fixed: bool) -> Run {
    let host = addr.to_string();
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let (host, path) = (host.clone(), path.to_string());
        tasks.push(tokio::spawn(async move {
            let mut run = Run::default();
            let Ok(mut conn) = TcpStream::connect(addr).await else {
                run.failed += 1;
                return run;
            };
            let _ = conn.set_nodelay(true);
            let mut buf = Vec::with_capacity(8192);
            let interval = Duration::from_nanos(1_000_000_000 * CONNECTIONS as u64 / FIXED_RATE);
            let mut due = start + interval.mul_f64(c as f64 / CONNECTIONS as f64);
            let mut last_done = start;
            loop {
                let sent_at = if fixed {
                    tokio::time::sleep_until(due.into()).await;
                    // From the schedule when the previous answer made this one late (a stall
                    // counts for every request it delays); else from the actual send (the
                    // timer's own millisecond granularity is not the server's).
                    if last_done > due {
                        due
                    } else {
                        Instant::now()
                    }
                } else {
                    Instant::now()
                };
                if sent_at >= end {
                    break;
                }
                let req = request(&host, &path);
                match round_trip(&mut conn, &req, &mut buf).await {
                    Ok(true) => {
                        run.ok += 1;
                        run.latencies.push(sent_at.elapsed());
                    }
                    Ok(false) => run.failed += 1,
                    Err(_) => {
                        run.failed += 1;
                        match TcpStream::connect(addr).await {
                            Ok(c) => conn = c,
                            Err(_) => break,
                        }
                    }
                }
                last_done = Instant::now();
                due += interval;
            }
            run
        }));
    }
    let mut all = Run::default();
    for t in tasks {
        let r = t.await.unwrap_or_default();
        all.ok += r.ok;
        all.failed += r.failed;
        all.latencies.extend(r.latencies);
    }
    all.elapsed = start.elapsed();
    all
}

/// A server on a runtime of its own, with `threads` worker threads.
fn serve(
    threads: usize,
    make: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = Router>>> + Send + 'static,
) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let router = make().await;
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            axum::serve(l, router).await.unwrap();
        });
    });
    (rx.recv().unwrap(), h)
}

const PACK: &str = "../examples/pk-ecommerce";

/// `WEBHOOK_SQLITE_SYNC=normal` measures SQLite's weaker `synchronous=NORMAL` instead of the
/// durable default (`FULL`).
async fn sqlite(dir: &std::path::Path, name: &str) -> Arc<dyn Store> {
    let sync = std::env::var("WEBHOOK_SQLITE_SYNC")
        .map(|s| format!("?synchronous={s}"))
        .unwrap_or_default();
    Arc::new(
        SqliteStore::open(&format!("sqlite://{}{sync}", dir.join(name).display()))
            .await
            .unwrap(),
    )
}

/// The example pack's engine and workers on a fresh SQLite file, replies to the sandbox.
async fn workers(dir: &std::path::Path, name: &str) -> Runtime {
    let store = sqlite(dir, name).await;
    let pack = switchyard_rules::load_dir(std::path::Path::new(PACK))
        .unwrap()
        .pack
        .unwrap();
    let lookup = Arc::new(switchyard_connectors::demo::DemoStore::new(vec![]));
    let engine = Arc::new(Engine::new(store, Arc::new(pack), lookup));
    Runtime::start(
        engine,
        Arc::new(SandboxChannel::new()),
        Arc::new(SandboxNotifier::default()),
        WorkerConfig::default(),
    )
    .await
    .unwrap()
}

/// The server's state: signatures required.
fn app(runtime: Runtime) -> Arc<AppState> {
    Arc::new(AppState {
        whatsapp_app_secret: Some(SECRET.as_bytes().to_vec()),
        ..AppState::new(Arc::new(runtime))
    })
}

fn main() {
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    let d1 = dir.path().to_path_buf();
    let d2 = dir.path().to_path_buf();

    let (bare, _) = serve(1, || {
        Box::pin(async {
            Router::new().route(
                "/webhooks/whatsapp",
                post(|b: Bytes| async move {
                    match serde_json::from_slice::<Value>(&b) {
                        Ok(_) => axum::http::StatusCode::OK,
                        Err(_) => axum::http::StatusCode::BAD_REQUEST,
                    }
                }),
            )
        })
    });
    let (durable, _) = serve(1, move || {
        Box::pin(async move {
            let store = sqlite(&d1, "ceiling.db").await;
            Router::new().route(
                "/webhooks/whatsapp",
                post(move |b: Bytes| {
                    let store = store.clone();
                    async move {
                        let Ok(n) = switchyard_connectors::whatsapp::parse(&b) else {
                            return axum::http::StatusCode::BAD_REQUEST;
                        };
                        match store.ingest(n.messages, 0).await {
                            Ok(_) => axum::http::StatusCode::OK,
                            Err(_) => axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        }
                    }
                }),
            )
        })
    });
    // As `switchyard serve` runs on this machine: a runtime with one thread per core (2).
    let (switchyard, _) = serve(2, move || {
        Box::pin(async move { router(app(workers(&d2, "switchyard.db").await)) })
    });
    // The same, with a candidate pack (the example itself) in shadow: every event decided a
    // second and a third time, off the acknowledgement's path.
    let d4 = dir.path().to_path_buf();
    let (shadowed, _) = serve(2, move || {
        Box::pin(async move {
            let state = app(workers(&d4, "shadowed.db").await);
            switchyard_api::shadow::start(&state, std::path::Path::new(PACK))
                .await
                .expect("the example pack in shadow");
            router(state)
        })
    });
    let d3 = dir.path().to_path_buf();
    let (ack_only, _) = serve(1, move || {
        Box::pin(async move {
            // The workers are started on a runtime that is then dropped: the route commits
            // to the inbox and nothing processes it — the acknowledgement alone.
            let runtime = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(workers(&d3, "ack.db"))
            })
            .join()
            .unwrap();
            router(app(runtime))
        })
    });
    let node_red: Option<(SocketAddr, String)> = std::env::var("NODE_RED_URL").ok().map(|u| {
        let rest = u.trim_start_matches("http://");
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        (
            host.parse()
                .expect("NODE_RED_URL: http://127.0.0.1:PORT/path"),
            format!("/{path}"),
        )
    });

    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut targets: Vec<(&str, SocketAddr, String)> = vec![
        ("bare axum, parse JSON (HTTP ceiling)", bare, "/webhooks/whatsapp".into()),
        ("axum + group-commit inbox insert (durable-ack ceiling)", durable, "/webhooks/whatsapp".into()),
        ("Switchyard POST /webhooks/whatsapp: signature + parse + commit (acknowledgement alone)", ack_only, "/webhooks/whatsapp".into()),
        ("Switchyard POST /webhooks/whatsapp with the pipeline running (2 runtime threads, as `serve`)", switchyard, "/webhooks/whatsapp".into()),
        ("the same with a candidate pack in shadow (`serve --shadow`)", shadowed, "/webhooks/whatsapp".into()),
    ];
    if let Some((a, p)) = &node_red {
        targets.push((
            "Node-RED 4: http in → keyword function → SQLite insert → response",
            *a,
            p.clone(),
        ));
    }
    println!("{secs} s per measurement, {CONNECTIONS} connections, ~{} byte bodies; servers and client on separate 1-thread runtimes", body().len());
    println!("| target | saturation req/s | p50 | p99 | failed | at {FIXED_RATE} req/s: p50 | p99 | failed |");
    println!("|---|---|---|---|---|---|---|---|");
    // Every target at the fixed rate first (after a warm-up), then every target at
    // saturation: a saturation run leaves the pipeline a backlog that drains for tens of
    // seconds, and a fixed-rate run measured during another server's drain would be charged
    // for it (an earlier version measured the shadow's server right after the plain one's
    // saturation, and blamed the shadow for the plain server's backlog).
    let mut fixed_runs = Vec::new();
    for (_, addr, path) in &targets {
        fixed_runs.push(client.block_on(async {
            let _ = load(*addr, path, 1, true).await;
            load(*addr, path, secs, true).await
        }));
    }
    let mut rates = Vec::new();
    for ((name, addr, path), mut fixed) in targets.iter().zip(fixed_runs) {
        let mut sat = client.block_on(load(*addr, path, secs, false));
        println!(
            "| {name} | {:.0} | {:.2} ms | {:.2} ms | {} | {:.2} ms | {:.2} ms | {} |",
            sat.rate(),
            sat.pct(0.5).as_secs_f64() * 1e3,
            sat.pct(0.99).as_secs_f64() * 1e3,
            sat.failed,
            fixed.pct(0.5).as_secs_f64() * 1e3,
            fixed.pct(0.99).as_secs_f64() * 1e3,
            fixed.failed
        );
        rates.push(sat.rate());
        // A server with the pipeline running is left with the saturation run's backlog: let
        // it drain before the next target is measured on the same cores.
        if name.contains("pipeline") || name.contains("shadow") {
            std::thread::sleep(std::time::Duration::from_secs(25));
        }
    }
    println!();
    println!(
        "Switchyard acknowledgement / durable-ack ceiling: {:.2} (target ≥ 0.5)",
        rates[2] / rates[1]
    );
    println!(
        "Switchyard acknowledgement / HTTP ceiling: {:.2}",
        rates[2] / rates[0]
    );
    println!(
        "Switchyard with the pipeline running / durable-ack ceiling: {:.2}",
        rates[3] / rates[1]
    );
    println!(
        "With a pack in shadow / without: {:.2}",
        rates[4] / rates[3]
    );
    if rates.len() > 5 {
        println!(
            "Switchyard acknowledgement / Node-RED + SQLite: {:.1} (target ≥ 5)",
            rates[2] / rates[5]
        );
        println!(
            "Switchyard with the pipeline running / Node-RED + SQLite: {:.1}",
            rates[3] / rates[5]
        );
    } else {
        println!("Node-RED: not measured (run benches/webhook-load.sh, or set NODE_RED_URL)");
    }
}
