//! Oversight: the audit log, KPIs, the live feed (server-sent events), the rule pack at run
//! time (what is loaded, validate an upload, reload from disk) and `/metrics`.

use std::convert::Infallible;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use switchyard_engine::access;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::Json;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use switchyard_engine::feed::FeedEvent;
use switchyard_engine::model::{now_millis as now, AuditRecord, Millis};
use switchyard_engine::store::AuditQuery;
use switchyard_rules::{Diagnostics, Loaded, SourceFile};
use tokio_stream::{Stream, StreamExt};

use crate::admin::{require, Principal, Role};
use crate::extract::Params;
use crate::work::limit;
use crate::{unavailable, ApiError, AppState};

// ---- audit --------------------------------------------------------------------------------

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// `conversation:12`, or a prefix ending in `:` such as `ticket:`.
    entity: Option<String>,
    /// `customer`, `rule:<name>`, `flow:<name>`, an agent id, `system`, `token:<id>`.
    actor: Option<String>,
    /// E.g. `assigned`, `status_changed`, `routed`, `tagged`.
    action: Option<String>,
    /// From this time: milliseconds since the epoch, or RFC 3339.
    since: Option<String>,
    /// Before this time.
    until: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<i64>,
    /// 1 to 200 (50).
    limit: Option<i64>,
}

/// An audit record with its id.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    #[serde(flatten)]
    pub record: AuditRecord,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub audit: Vec<AuditEntry>,
    pub next_cursor: Option<i64>,
}

/// A time as milliseconds since the epoch or RFC 3339.
fn time_param(field: &'static str, v: &str) -> Result<Millis, ApiError> {
    if let Ok(n) = v.parse::<i64>() {
        return Ok(n);
    }
    chrono_parse(v).ok_or_else(|| {
        ApiError::Unprocessable(format!(
            "{field}: `{v}` is neither milliseconds since the epoch nor an RFC 3339 time"
        ))
    })
}

fn chrono_parse(v: &str) -> Option<Millis> {
    switchyard_engine::model::parse_rfc3339(v)
}

/// The audit log, newest first (supervisor). Append-only: no route changes or deletes a
/// record.
#[utoipa::path(get, path = "/api/v1/audit", tag = "oversight", params(AuditParams),
    security(("bearer" = [])),
    responses((status = 200, body = AuditPage), (status = "4XX", body = crate::ErrorBody)))]
pub async fn audit(
    State(s): State<Arc<AppState>>,
    p: Principal,
    Params(f): Params<AuditParams>,
) -> Result<Json<AuditPage>, ApiError> {
    require(&p, Role::Supervisor)?;
    let limit = limit(f.limit)?;
    let q = AuditQuery {
        entity: f.entity,
        actor: f.actor,
        action: f.action,
        from: f
            .since
            .as_deref()
            .map(|v| time_param("since", v))
            .transpose()?,
        to: f
            .until
            .as_deref()
            .map(|v| time_param("until", v))
            .transpose()?,
        before: f.cursor,
        limit,
    };
    let rows = s
        .runtime
        .engine
        .audit_records(&q)
        .await
        .map_err(unavailable)?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.0))
        .flatten();
    Ok(Json(AuditPage {
        audit: rows
            .into_iter()
            .map(|(id, record)| AuditEntry { id, record })
            .collect(),
        next_cursor: next,
    }))
}

// ---- KPIs ---------------------------------------------------------------------------------

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct KpiParams {
    /// Conversations created from this time (milliseconds since the epoch, or RFC 3339).
    from: String,
    /// … and before this time.
    to: String,
    /// Only conversations in this queue.
    queue: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct KpiReport {
    pub from: Millis,
    pub to: Millis,
    pub queue: Option<String>,
    pub kpis: switchyard_engine::reports::Kpis,
}

/// KPIs of the conversations created in `[from, to)` (supervisor): first response and
/// resolution (median, p90), bot containment, hand-off rate, SLA breaches, per-agent work,
/// tickets by category.
#[utoipa::path(get, path = "/api/v1/reports/kpis", tag = "oversight", params(KpiParams),
    security(("bearer" = [])),
    responses((status = 200, body = KpiReport), (status = "4XX", body = crate::ErrorBody)))]
pub async fn kpis(
    State(s): State<Arc<AppState>>,
    p: Principal,
    Params(f): Params<KpiParams>,
) -> Result<Json<KpiReport>, ApiError> {
    require(&p, Role::Supervisor)?;
    let from = time_param("from", &f.from)?;
    let to = time_param("to", &f.to)?;
    if to <= from {
        return Err(ApiError::Unprocessable("to: must be after `from`".into()));
    }
    let facts = s
        .runtime
        .engine
        .kpi_facts(from, to, f.queue.as_deref())
        .await
        .map_err(unavailable)?;
    Ok(Json(KpiReport {
        from,
        to,
        queue: f.queue,
        kpis: switchyard_engine::reports::kpis(&facts),
    }))
}

// ---- live feed ----------------------------------------------------------------------------

/// How often a live stream looks at its token again.
pub const STREAM_RECHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// Server-sent events for the live inbox; each event's data is a `FeedEvent`. Supervisors get
/// everything; an agent gets assignments to them, and the other events of conversations they
/// own or that sit in their queues (the queues as they were when the stream opened).
#[utoipa::path(get, path = "/api/v1/events", tag = "oversight", security(("bearer" = [])),
    responses((status = 200, content_type = "text/event-stream", body = FeedEvent,
        description = "`event: <kind>` and `data: <FeedEvent JSON>`, and `event: presence` with who views or types in a conversation (`PresenceEvent`), until the client leaves or the token is revoked (then `event: revoked`)"),
        (status = "4XX", body = crate::ErrorBody)))]
pub async fn events(
    State(s): State<Arc<AppState>>,
    p: Principal,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let rx = s.runtime.engine.subscribe();
    let mut presence = s.presence.subscribe();
    let who = p.actor();
    let queues = s
        .runtime
        .engine
        .queues_of(&who)
        .await
        .map_err(unavailable)?;
    // A task forwards what this caller may see, and looks at the token every
    // `STREAM_RECHECK`: revoked (or no longer the same role or agent), the stream ends.
    let (tx, out) = tokio::sync::mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        let mut rx = rx;
        let mut check = tokio::time::interval(STREAM_RECHECK);
        check.tick().await;
        loop {
            let ev = tokio::select! {
                r = rx.recv() => match r {
                    Ok(ev) => {
                        let seen = access::see_feed(
                            &who,
                            ev.queue.as_deref(),
                            ev.assignee.as_deref(),
                            ev.kind == "conversation.assigned",
                            &queues,
                        );
                        if !seen {
                            continue;
                        }
                        Event::default()
                            .event(ev.kind)
                            .json_data(&ev)
                            .unwrap_or_else(|_| Event::default().comment("unencodable event"))
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => Event::default()
                        .event("lagged")
                        .data(format!("{n} events were dropped; reload the inbox")),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
                r = presence.recv() => match r {
                    Ok(ev) => {
                        if !access::see_feed(&who, ev.queue.as_deref(), ev.assignee.as_deref(), false, &queues) {
                            continue;
                        }
                        Event::default()
                            .event("presence")
                            .json_data(&ev)
                            .unwrap_or_else(|_| Event::default().comment("unencodable event"))
                    }
                    // Presence is worth seconds: a missed change is corrected by the next one.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    // The sender lives in the state this task holds: not while serving.
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
                _ = check.tick() => {
                    if !p.still_valid(&s).await {
                        let _ = tx
                            .send(Event::default().event("revoked").data(
                                r#"{"reason":"the token was revoked or changed"}"#,
                            ))
                            .await;
                        break;
                    }
                    continue;
                }
                _ = tx.closed() => break,
            };
            if tx.send(ev).await.is_err() {
                break;
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(out).map(Ok::<_, Infallible>);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

// ---- rules --------------------------------------------------------------------------------

/// The loaded pack's directory and when it was loaded.
#[derive(Debug)]
pub struct RulesSource {
    pub dir: Option<PathBuf>,
    pub loaded_at: std::sync::Mutex<Millis>,
    /// One reload at a time.
    pub reloading: tokio::sync::Mutex<()>,
}

impl RulesSource {
    pub fn new(dir: Option<PathBuf>) -> RulesSource {
        RulesSource {
            dir,
            loaded_at: std::sync::Mutex::new(now()),
            reloading: tokio::sync::Mutex::new(()),
        }
    }
}

/// A problem of a pack, as `switchyard validate` prints it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DiagnosticBody {
    /// `error` or `warning`.
    pub severity: String,
    pub file: String,
    /// 0 when the problem has no position.
    pub line: u32,
    pub col: u32,
    pub message: String,
    pub hint: Option<String>,
    /// `file:line:col: severity: message` and the hint.
    pub text: String,
}

fn diagnostics_json(d: &Diagnostics) -> Vec<DiagnosticBody> {
    d.items
        .iter()
        .map(|x| DiagnosticBody {
            severity: match x.severity {
                switchyard_rules::Severity::Error => "error",
                switchyard_rules::Severity::Warning => "warning",
            }
            .into(),
            file: x.file.clone(),
            line: x.pos.line,
            col: x.pos.col,
            message: x.message.clone(),
            hint: x.hint.clone(),
            text: x.to_string(),
        })
        .collect()
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RulesInfo {
    /// The pack's hash (also on every decision trace).
    pub hash: String,
    /// When it was loaded (milliseconds since the epoch).
    pub loaded_at: Millis,
    /// The directory it was loaded from.
    pub source: Option<String>,
    pub rules: usize,
    pub flows: usize,
    pub queues: Vec<String>,
}

/// The pack serving now (admin).
#[utoipa::path(get, path = "/api/v1/rules", tag = "rules", security(("bearer" = [])),
    responses((status = 200, body = RulesInfo), (status = "4XX", body = crate::ErrorBody)))]
pub async fn rules(
    State(s): State<Arc<AppState>>,
    p: Principal,
) -> Result<Json<RulesInfo>, ApiError> {
    require(&p, Role::Admin)?;
    let pack = s.runtime.engine.pack();
    let loaded_at = *s.rules.loaded_at.lock().unwrap_or_else(|e| e.into_inner());
    Ok(Json(RulesInfo {
        hash: pack.hash.clone(),
        loaded_at,
        source: s.rules.dir.as_ref().map(|d| d.display().to_string()),
        rules: pack.rules.len(),
        flows: pack.flows.len(),
        queues: pack.queues.keys().cloned().collect(),
    }))
}

/// The files of an uploaded pack: a tar (`Content-Type: application/x-tar`) or a JSON object
/// of file name → YAML text.
fn uploaded_files(headers: &HeaderMap, body: &[u8]) -> Result<Vec<SourceFile>, ApiError> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut files = Vec::new();
    let mut add = |name: String, text: String| {
        let name = name.trim_start_matches("./").to_string();
        if name.ends_with(".yaml") || name.ends_with(".yml") {
            files.push(SourceFile {
                display: name.clone(),
                rel: name,
                text,
            });
        }
    };
    if ctype.starts_with("application/x-tar") || ctype.starts_with("application/tar") {
        let mut archive = tar::Archive::new(body);
        let entries = archive
            .entries()
            .map_err(|e| ApiError::BadRequest(format!("not a tar archive: {e}")))?;
        for e in entries {
            let mut e = e.map_err(|e| ApiError::BadRequest(format!("broken tar entry: {e}")))?;
            if !e.header().entry_type().is_file() {
                continue;
            }
            let name = e
                .path()
                .map_err(|e| ApiError::BadRequest(format!("tar entry name: {e}")))?
                .to_string_lossy()
                .into_owned();
            let mut text = String::new();
            e.read_to_string(&mut text).map_err(|err| {
                ApiError::Unprocessable(format!("{name}: not UTF-8 text ({err})"))
            })?;
            add(name, text);
        }
    } else if ctype.starts_with("application/json") {
        let map: std::collections::BTreeMap<String, String> = serde_json::from_slice(body)
            .map_err(|e| {
                ApiError::BadRequest(format!(
                    "expected a JSON object of file name → YAML text: {e}"
                ))
            })?;
        for (k, v) in map {
            add(k, v);
        }
    } else {
        return Err(ApiError::BadRequest(
            "send the pack as application/x-tar or as application/json (file name → YAML)".into(),
        ));
    }
    files.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(files)
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Validation {
    pub valid: bool,
    /// The hash the pack would have, when valid.
    pub hash: Option<String>,
    pub diagnostics: Vec<DiagnosticBody>,
}

/// Validates an uploaded pack without loading it (admin): a tar, or a JSON object of file
/// name → YAML text; the same diagnostics as `switchyard validate`.
#[utoipa::path(post, path = "/api/v1/rules/validate", tag = "rules", security(("bearer" = [])),
    request_body(content(
        (std::collections::HashMap<String, String> = "application/json"),
        (Vec<u8> = "application/x-tar"))),
    responses((status = 200, body = Validation), (status = "4XX", body = crate::ErrorBody)))]
pub async fn validate(
    State(s): State<Arc<AppState>>,
    p: Principal,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Validation>, ApiError> {
    require(&p, Role::Admin)?;
    let body = crate::body(body, s.body_limit)?;
    let files = uploaded_files(&headers, &body)?;
    // Validation is CPU work: a few at a time, the rest told to come back.
    let _permit = s
        .validations
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::TooMany(1))?;
    let loaded = tokio::task::spawn_blocking(move || switchyard_rules::load_files(files, "upload"))
        .await
        .map_err(|e| ApiError::Unavailable(format!("validation stopped: {e}")))?;
    Ok(Json(Validation {
        valid: loaded.pack.is_some(),
        hash: loaded.pack.as_ref().map(|p| p.hash.clone()),
        diagnostics: diagnostics_json(&loaded.diagnostics),
    }))
}

/// What a reload did.
#[derive(Debug)]
pub enum Reload {
    /// The new pack serves; `changed` is false when its hash is the old one's.
    Loaded { hash: String, changed: bool },
    /// The pack on disk is invalid; the old one keeps serving.
    Rejected(Diagnostics),
}

/// Reloads the pack from its directory: validated fully, then swapped atomically (events in
/// flight finish on the old pack). A bad pack is rejected and the old one keeps serving.
pub async fn reload_from_disk(s: &AppState) -> Result<Reload, String> {
    let Some(dir) = s.rules.dir.clone() else {
        return Err("this server was not started from a pack directory".into());
    };
    reload_from(s, &dir).await
}

/// [`reload_from_disk`] from another directory (a shadow's candidate being promoted); its
/// connectors are built relative to that directory.
pub async fn reload_from(s: &AppState, dir: &Path) -> Result<Reload, String> {
    let dir = dir.to_path_buf();
    let base = dir.clone();
    let _one = s.rules.reloading.lock().await;
    let loaded: Loaded = tokio::task::spawn_blocking(move || switchyard_rules::load_dir(&dir))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let Some(pack) = loaded.pack else {
        return Ok(Reload::Rejected(loaded.diagnostics));
    };
    let old = s.runtime.engine.pack();
    let changed = old.hash != pack.hash;
    let hash = pack.hash.clone();
    if changed {
        let pack = Arc::new(pack);
        match &s.assemble {
            // The connectors are rebuilt from the new pack, and swapped in with it: a changed
            // courier URL or a connector the reload adds serves at once.
            Some(build) => match build(&pack, &base) {
                Ok((lookup, notifier)) => s.runtime.replace_rules(pack, lookup, notifier),
                Err(why) => {
                    let mut d = switchyard_rules::Diagnostics::default();
                    d.error(
                        "connectors",
                        switchyard_rules::span::Pos::UNKNOWN,
                        format!("the pack's connectors cannot be built: {why}"),
                    )
                    .hint("the pack serving now keeps serving, with its connectors");
                    return Ok(Reload::Rejected(d));
                }
            },
            None => s.runtime.engine.replace_pack(pack),
        }
        *s.rules.loaded_at.lock().unwrap_or_else(|e| e.into_inner()) = now();
    }
    Ok(Reload::Loaded { hash, changed })
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Reloaded {
    pub hash: String,
    /// False when the pack on disk is the one serving.
    pub changed: bool,
}

/// Reloads the pack from its directory (admin): validated fully, then swapped atomically. A bad
/// pack is refused with 422 `invalid_pack` and its diagnostics; the old pack keeps serving.
#[utoipa::path(post, path = "/api/v1/rules/reload", tag = "rules", security(("bearer" = [])),
    responses((status = 200, body = Reloaded), (status = "4XX", body = crate::ErrorBody)))]
pub async fn reload(
    State(s): State<Arc<AppState>>,
    p: Principal,
) -> Result<axum::response::Response, ApiError> {
    require(&p, Role::Admin)?;
    match reload_from_disk(&s).await {
        Ok(Reload::Loaded { hash, changed }) => {
            tracing::info!(%hash, changed, by = %p.actor, "rule pack reloaded");
            Ok(Json(Reloaded { hash, changed }).into_response())
        }
        Ok(Reload::Rejected(d)) => {
            tracing::warn!(by = %p.actor, "reload rejected: the pack on disk is invalid; the old pack keeps serving");
            Ok((
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                Json(crate::ErrorBody {
                    error: crate::ErrorDetail {
                        code: "invalid_pack".into(),
                        message: "the pack on disk is invalid; the old pack keeps serving".into(),
                        templates: None,
                        diagnostics: Some(diagnostics_json(&d)),
                    },
                }),
            )
                .into_response())
        }
        Err(e) => Err(ApiError::Conflict(e)),
    }
}

// ---- metrics ------------------------------------------------------------------------------

type Labels = Vec<(&'static str, String)>;

/// What `/metrics` shows besides the engine's own measurements.
#[derive(Debug)]
pub struct ApiMetrics {
    registry: Registry,
    /// Requests by route pattern and status.
    pub requests: Family<Labels, Counter>,
    /// Events the shadow's candidate decided beside the live pack, and how many differed by
    /// kind.
    pub shadow_events: Counter,
    pub shadow_differences: Family<Labels, Counter>,
    inbox: Gauge,
    outbox: Family<Labels, Gauge>,
}

impl ApiMetrics {
    pub fn new(engine: &switchyard_engine::Engine) -> ApiMetrics {
        let mut registry = Registry::default();
        let requests = Family::<Labels, Counter>::default();
        let inbox = Gauge::default();
        let outbox = Family::<Labels, Gauge>::default();
        registry.register(
            "switchyard_http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        registry.register(
            "switchyard_inbox_depth",
            "Inbox events committed and not yet processed",
            inbox.clone(),
        );
        registry.register(
            "switchyard_outbox",
            "Outbox rows by status (pending is the backlog)",
            outbox.clone(),
        );
        let shadow_events = Counter::default();
        let shadow_differences = Family::<Labels, Counter>::default();
        registry.register(
            "switchyard_shadow_events",
            "Live events the candidate pack in shadow decided",
            shadow_events.clone(),
        );
        registry.register(
            "switchyard_shadow_differences",
            "Events the candidate in shadow decided differently, by kind of change",
            shadow_differences.clone(),
        );
        engine.metrics.register(&mut registry);
        ApiMetrics {
            registry,
            requests,
            shadow_events,
            shadow_differences,
            inbox,
            outbox,
        }
    }
}

/// Prometheus metrics (OpenMetrics text; no token).
#[utoipa::path(get, path = "/metrics", tag = "oversight",
    responses((status = 200, content_type = "application/openmetrics-text", body = String),
        (status = 503, body = crate::ErrorBody)))]
pub async fn metrics(State(s): State<Arc<AppState>>) -> Result<impl IntoResponse, ApiError> {
    let (inbox, outbox) = s.runtime.engine.backlog().await.map_err(unavailable)?;
    s.metrics.inbox.set(inbox);
    for (status, n) in outbox {
        s.metrics
            .outbox
            .get_or_create(&vec![("status", status)])
            .set(n);
    }
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &s.metrics.registry)
        .map_err(|e| ApiError::Unavailable(format!("encoding metrics: {e}")))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    ))
}
