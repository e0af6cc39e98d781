//! Shadow mode: a candidate pack decides every live event beside the pack serving, with no
//! effect — a supervisor runs a change for a day, sees what it would have done differently,
//! then promotes it.
//!
//! The shadow reads the inbox as it commits (every half second, after the live
//! acknowledgement: the webhook path is untouched) and decides each new customer message and
//! order event twice, on two temporary stores of its own: through the pack serving and through
//! the candidate ([`switchyard_engine::replay::Replayer`]). Lookups are answered from the orders
//! the events carried, never from the store itself (a candidate must not confirm an order);
//! nothing is sent, nothing is written to the live database. What differs is counted in
//! `/metrics` (`switchyard_shadow_events`, `switchyard_shadow_differences{kind}`) and listed by
//! `GET /api/v1/rules/shadow`; `POST /api/v1/rules/shadow/promote` swaps the candidate in
//! like a reload. Both sides start from the moment the shadow starts and see only what the
//! events show (no agents' actions): the comparison is of the two packs on the same events.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use switchyard_connectors::demo::DemoStore;
use switchyard_engine::model::{now_millis as now, Inbound, Millis};
use switchyard_engine::replay::{Change, Changed, Observed, Recorded, Replayer};

use crate::admin::{require, Principal, Role};
use crate::extract::Body;
use crate::{ApiError, AppState};

/// The differences kept for `GET /api/v1/rules/shadow` (the newest).
const KEEP: usize = 100;

/// A running shadow.
pub struct Shadow {
    pub dir: PathBuf,
    pub candidate: String,
    pub since: Millis,
    state: Arc<Mutex<Seen>>,
    /// Set when the shadow is stopped or replaced: its thread ends.
    stop: Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Default)]
struct Seen {
    events: u64,
    differing: u64,
    by_kind: BTreeMap<Change, u64>,
    recent: std::collections::VecDeque<Changed>,
    error: Option<String>,
}

impl Drop for Shadow {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// This thread, and the threads it starts, runs only on a core nothing else wants (Linux:
/// `SCHED_IDLE`, and nice 19 should that be refused; elsewhere nothing changes). A niced thread
/// still takes its turn against the acknowledgement's threads; an idle-class one is preempted
/// as soon as any of them wakes.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: scheduling calls on this thread's own id, with a parameter that lives across
    // the call; no other memory involved.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::pid_t;
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(tid, libc::SCHED_IDLE, &param) != 0 {
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19);
        }
    }
}

/// The shadow's loop: the inbox read behind the workers, each event decided twice.
async fn run(
    app: std::sync::Weak<AppState>,
    candidate: Arc<switchyard_rules::Pack>,
    since: Millis,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    ready: tokio::sync::oneshot::Sender<Result<(), String>>,
) {
    let Some(serving) = app.upgrade().map(|a| a.runtime.engine.pack()) else {
        return;
    };
    let (live_orders, cand_orders) = (
        Arc::new(DemoStore::new(vec![])),
        Arc::new(DemoStore::new(vec![])),
    );
    let (live, cand) = (
        Replayer::new(serving, live_orders.clone()),
        Replayer::new(candidate, cand_orders.clone()),
    );
    let _ = ready.send(Ok(()));
    let mut after = 0i64;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let Some(app) = app.upgrade() else { return };
        let rows = match app.runtime.engine.inbox_since(since, after, 500).await {
            Ok(r) => r,
            Err(e) => {
                seen.lock().unwrap_or_else(|e| e.into_inner()).error = Some(e.to_string());
                continue;
            }
        };
        // The pack serving may have been reloaded: its replica follows.
        let serving = app.runtime.engine.pack();
        if serving.hash != live.pack().hash {
            live.replace_pack(serving);
        }
        for (id, at, event) in rows {
            if stop.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            after = id;
            if let Inbound::Order { order, .. } = &event {
                if let Some(o) = order.as_object() {
                    live_orders.add(o.clone());
                    cand_orders.add(o.clone());
                }
            }
            let r = [Recorded { at, event }];
            let (a, b) = tokio::join!(live.replay(&r), cand.replay(&r));
            match (a, b) {
                (Ok(a), Ok(b)) => {
                    if let (Some(a), Some(b)) = (a.into_iter().next(), b.into_iter().next()) {
                        record(&seen, &app, a, b);
                    }
                }
                (Err(e), _) | (_, Err(e)) => {
                    seen.lock().unwrap_or_else(|e| e.into_inner()).error = Some(e.to_string())
                }
            }
        }
    }
}

/// The shadow slot of a server: none, or one candidate.
#[derive(Default)]
pub struct ShadowSlot(Mutex<Option<Arc<Shadow>>>);

impl ShadowSlot {
    pub fn get(&self) -> Option<Arc<Shadow>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    fn set(&self, s: Option<Arc<Shadow>>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = s;
    }
}

/// Loads the candidate in `dir` and starts shadowing the live traffic with it (replacing a
/// shadow that runs). A candidate with errors is refused with its diagnostics.
pub async fn start(s: &Arc<AppState>, dir: &Path) -> Result<Arc<Shadow>, String> {
    let d = dir.to_path_buf();
    let loaded = tokio::task::spawn_blocking(move || switchyard_rules::load_dir(&d))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("dir: {e}"))?;
    let Some(pack) = loaded.pack else {
        let shown: Vec<String> = loaded
            .diagnostics
            .errors()
            .take(5)
            .map(|d| d.to_string())
            .collect();
        return Err(format!(
            "the candidate pack in {} is invalid: {}",
            dir.display(),
            shown.join("; ")
        ));
    };
    let candidate = Arc::new(pack);
    let since = now();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The shadow works on a thread of its own at the lowest CPU priority, with its own
    // runtime: the replicas' stores (and their SQLite threads, which inherit the priority)
    // are created there, so the live acknowledgement and pipeline are served first.
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
    let app = Arc::downgrade(s);
    let (seen2, stop2, cand2) = (seen.clone(), stop.clone(), candidate.clone());
    std::thread::Builder::new()
        .name("switchyard-shadow".into())
        .spawn(move || {
            lower_priority();
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            rt.block_on(run(app, cand2, since, seen2, stop2, ready_tx));
        })
        .map_err(|e| e.to_string())?;
    ready_rx
        .await
        .map_err(|_| "the shadow's thread ended at start".to_string())??;
    let shadow = Arc::new(Shadow {
        dir: dir.to_path_buf(),
        candidate: candidate.hash.clone(),
        since,
        state: seen,
        stop,
    });
    s.shadow.set(Some(shadow.clone()));
    Ok(shadow)
}

impl Shadow {
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Counts one event both packs decided, and keeps it when they differ.
fn record(seen: &Mutex<Seen>, app: &AppState, live: Observed, cand: Observed) {
    {
        let changes = Change::between(&live, &cand);
        app.metrics.shadow_events.inc();
        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.events += 1;
        if changes.is_empty() {
            return;
        }
        seen.differing += 1;
        for c in &changes {
            *seen.by_kind.entry(*c).or_default() += 1;
            app.metrics
                .shadow_differences
                .get_or_create(&vec![("kind", c.as_str().to_string())])
                .inc();
        }
        if seen.recent.len() >= KEEP {
            seen.recent.pop_front();
        }
        let index = seen.events as usize - 1;
        seen.recent.push_back(Changed {
            index,
            changes,
            old_trace: live.trace.summary(),
            new_trace: cand.trace.summary(),
            old: live,
            new: cand,
        });
    }
}

/// What the shadow has seen.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ShadowReport {
    /// The candidate's directory and version (hash).
    pub dir: String,
    pub candidate: String,
    /// The version serving.
    pub serving: String,
    /// When the shadow started (ms).
    pub since: i64,
    /// Events decided by both packs.
    pub events: u64,
    /// Events the candidate decided differently.
    pub differing: u64,
    /// By kind (`intents`, `routes`, `replies`, `tickets`, `flows`, `handoffs`): events.
    pub by_kind: BTreeMap<String, u64>,
    /// The newest differences (at most 100): the event, both outcomes and both traces.
    #[schema(value_type = Vec<Object>)]
    pub recent: Vec<Changed>,
    /// The last error the shadow met (it goes on).
    pub error: Option<String>,
}

fn report(s: &AppState, sh: &Shadow) -> ShadowReport {
    let seen = sh.seen();
    ShadowReport {
        dir: sh.dir.display().to_string(),
        candidate: sh.candidate.clone(),
        serving: s.runtime.engine.pack().hash.clone(),
        since: sh.since,
        events: seen.events,
        differing: seen.differing,
        by_kind: seen
            .by_kind
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), *v))
            .collect(),
        recent: seen.recent.iter().rev().cloned().collect(),
        error: seen.error.clone(),
    }
}

/// What the candidate in shadow would have done differently (supervisors).
#[utoipa::path(get, path = "/api/v1/rules/shadow", tag = "rules", security(("bearer" = [])),
    responses((status = 200, body = ShadowReport), (status = "4XX", body = crate::ErrorBody)))]
pub async fn get(
    State(s): State<Arc<AppState>>,
    p: Principal,
) -> Result<Json<ShadowReport>, ApiError> {
    require(&p, Role::Supervisor)?;
    let sh = s.shadow.get().ok_or_else(|| {
        ApiError::NotFound(
            "no candidate pack in shadow: `serve --shadow DIR` or POST /api/v1/rules/shadow".into(),
        )
    })?;
    Ok(Json(report(&s, &sh)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShadowStart {
    /// The candidate pack's directory on the server.
    dir: String,
}

/// Starts shadowing live traffic with the pack in `dir` (admins); replaces a running shadow.
#[utoipa::path(post, path = "/api/v1/rules/shadow", tag = "rules", request_body = ShadowStart, security(("bearer" = [])),
    responses((status = 200, body = ShadowReport), (status = "4XX", body = crate::ErrorBody)))]
pub async fn post(
    State(s): State<Arc<AppState>>,
    p: Principal,
    Body(b): Body<ShadowStart>,
) -> Result<Json<ShadowReport>, ApiError> {
    require(&p, Role::Admin)?;
    let sh = start(&s, Path::new(&b.dir))
        .await
        .map_err(ApiError::Unprocessable)?;
    tracing::info!(dir = %b.dir, candidate = %sh.candidate, by = %p.actor, "shadow started");
    Ok(Json(report(&s, &sh)))
}

/// Stops the shadow (admins).
#[utoipa::path(delete, path = "/api/v1/rules/shadow", tag = "rules", security(("bearer" = [])),
    responses((status = 204), (status = "4XX", body = crate::ErrorBody)))]
pub async fn delete(
    State(s): State<Arc<AppState>>,
    p: Principal,
) -> Result<axum::http::StatusCode, ApiError> {
    require(&p, Role::Admin)?;
    if s.shadow.get().is_none() {
        return Err(ApiError::NotFound("no candidate pack in shadow".into()));
    }
    s.shadow.set(None);
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// The promoted candidate.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Promoted {
    /// The version now serving.
    pub hash: String,
}

/// Serves the candidate (admins): loaded again from its directory, validated, and swapped in
/// with its connectors like a reload; the shadow stops. The candidate's files must also go
/// where `--rules` points for a restart to keep it.
#[utoipa::path(post, path = "/api/v1/rules/shadow/promote", tag = "rules", security(("bearer" = [])),
    responses((status = 200, body = Promoted), (status = "4XX", body = crate::ErrorBody)))]
pub async fn promote(
    State(s): State<Arc<AppState>>,
    p: Principal,
) -> Result<Json<Promoted>, ApiError> {
    require(&p, Role::Admin)?;
    let sh = s
        .shadow
        .get()
        .ok_or_else(|| ApiError::NotFound("no candidate pack in shadow to promote".into()))?;
    match crate::oversight::reload_from(&s, &sh.dir).await {
        Ok(crate::oversight::Reload::Loaded { hash, .. }) => {
            s.shadow.set(None);
            tracing::info!(%hash, by = %p.actor, "shadow candidate promoted");
            Ok(Json(Promoted { hash }))
        }
        Ok(crate::oversight::Reload::Rejected(_)) => Err(ApiError::Unprocessable(format!(
            "the candidate in {} no longer validates; nothing changed",
            sh.dir.display()
        ))),
        Err(e) => Err(ApiError::Conflict(e)),
    }
}
