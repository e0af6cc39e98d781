//! The HTTP API (axum): webhooks, health and the admin API. Handlers turn requests into engine
//! calls; errors are JSON `{"error": {"code", "message"}}` with the right status, never a 500
//! for bad input. The OpenAPI document is generated from the handlers' annotations (`docs`).

pub mod admin;
pub mod docs;
mod extract;
pub mod guard;
pub mod oversight;
pub mod presence;
pub mod shadow;
pub mod team;
pub mod watch;
pub mod web;
pub mod work;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;
use switchyard_connectors::whatsapp;
use switchyard_engine::model::Inbound;
use switchyard_engine::store::{Ingested, StatusRecorded};
use switchyard_engine::worker::Runtime;

/// Default limit of a webhook body: WhatsApp batches up to 3 MB.
pub const DEFAULT_BODY_LIMIT: usize = 3 * 1024 * 1024;

/// What the routes need.
pub struct AppState {
    pub runtime: Arc<Runtime>,
    /// `hub.verify_token` for Meta's handshake; without it the handshake is refused.
    pub whatsapp_verify_token: Option<String>,
    /// The app secret: `X-Hub-Signature-256` is checked with it. Without it (or empty) the
    /// route refuses every delivery (503), unless `unsigned_webhooks`.
    pub whatsapp_app_secret: Option<Vec<u8>>,
    /// The business numbers, for the channel of each message and status.
    pub whatsapp_numbers: whatsapp::Numbers,
    pub body_limit: usize,
    /// `SWITCHYARD_ADMIN_TOKEN`: accepted as an admin token (bootstrapping, tests).
    pub admin_token: Option<String>,
    /// `SHOPIFY_WEBHOOK_SECRET`: `X-Shopify-Hmac-Sha256` is checked with it. Without it the
    /// route refuses every delivery (503), unless `unsigned_webhooks`.
    pub shopify_webhook_secret: Option<Vec<u8>>,
    /// Development only (`serve --insecure-unsigned-webhooks`): webhooks without a configured
    /// secret are accepted unsigned.
    pub unsigned_webhooks: bool,
    /// The key web chat sessions are signed with (`SWITCHYARD_WEBCHAT_SECRET`, else one made
    /// at start).
    pub webchat_key: Vec<u8>,
    /// How long a web chat session lasts.
    pub webchat_session: std::time::Duration,
    /// Where the pack came from, for `GET/POST /api/v1/rules…`.
    pub rules: oversight::RulesSource,
    pub metrics: oversight::ApiMetrics,
    /// Requests per token (429 beyond); `None` for no limit.
    pub token_limiter: Option<governor::DefaultKeyedRateLimiter<String>>,
    /// Wrong tokens per client address (see [`guard`]).
    pub auth_guard: guard::AuthGuard,
    /// A request (its body included) that takes longer is cut off with 408; the live feed is
    /// exempt.
    pub request_timeout: std::time::Duration,
    /// Requests in flight at once; more are refused at once with 503.
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// Pack validations (upload, reload) at once; more are refused with 429.
    pub validations: Arc<tokio::sync::Semaphore>,
    /// Builds a reloaded pack's connectors (lookups and the webhook sender) from its
    /// directory and the environment; `None` keeps the connectors serving.
    pub assemble: Option<Assembler>,
    /// How long a browser session lasts.
    pub session_ttl: std::time::Duration,
    /// Who is viewing or typing in which conversation (this process only).
    pub presence: presence::Presence,
    /// Session cookies are `Secure` (served over TLS, or behind a proxy that is); also set
    /// for a request that arrives with `X-Forwarded-Proto: https`.
    pub secure_cookies: bool,
    /// The candidate pack in shadow, if one runs.
    pub shadow: shadow::ShadowSlot,
}

/// Builds a pack's connectors: `(lookups, webhook sender)`, or why not.
pub type Assembler = Arc<
    dyn Fn(
            &switchyard_rules::Pack,
            &std::path::Path,
        ) -> Result<
            (
                Arc<dyn switchyard_engine::ports::Lookup>,
                Arc<dyn switchyard_engine::ports::Notifier>,
            ),
            String,
        > + Send
        + Sync,
>;

/// Requests served at once by default.
pub const MAX_IN_FLIGHT: usize = 1024;

/// Requests a token may make by default: 50 a second, bursts of 100.
pub const DEFAULT_TOKEN_RATE: (u32, u32) = (50, 100);

impl AppState {
    /// A state with no WhatsApp settings, no admin token, the default body limit and token
    /// rate, and no pack directory; set the fields that differ.
    pub fn new(runtime: Arc<Runtime>) -> AppState {
        AppState {
            metrics: oversight::ApiMetrics::new(&runtime.engine),
            runtime,
            whatsapp_verify_token: None,
            whatsapp_app_secret: None,
            whatsapp_numbers: Default::default(),
            body_limit: DEFAULT_BODY_LIMIT,
            admin_token: None,
            shopify_webhook_secret: None,
            unsigned_webhooks: false,
            webchat_key: random_key(),
            webchat_session: std::time::Duration::from_secs(24 * 3600),
            rules: oversight::RulesSource::new(None),
            token_limiter: Some(token_limiter(DEFAULT_TOKEN_RATE.0, DEFAULT_TOKEN_RATE.1)),
            auth_guard: Default::default(),
            request_timeout: std::time::Duration::from_secs(30),
            in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
            validations: Arc::new(tokio::sync::Semaphore::new(2)),
            assemble: None,
            session_ttl: std::time::Duration::from_secs(12 * 3600),
            presence: Default::default(),
            secure_cookies: false,
            shadow: Default::default(),
        }
    }
}

/// 32 random bytes: a signing key that lives as long as the process.
pub fn random_key() -> Vec<u8> {
    let mut k = vec![0u8; 32];
    // The OS's generator does not fail on the platforms we run on; if it did, a key of zeros
    // would be guessable, so stop rather than serve with it.
    getrandom::fill(&mut k).expect("the operating system's random generator is not available");
    k
}

/// The key a webhook's signature is checked with; `None` (accept unsigned) only in development
/// mode; without a key otherwise the delivery is refused, so nothing unsigned is acknowledged.
fn webhook_key<'a>(
    s: &AppState,
    key: &'a Option<Vec<u8>>,
    var: &str,
) -> Result<Option<&'a [u8]>, ApiError> {
    match key.as_deref().filter(|k| !k.is_empty()) {
        Some(k) => Ok(Some(k)),
        None if s.unsigned_webhooks => Ok(None),
        None => Err(ApiError::NotConfigured(format!(
            "{var} is not set: this webhook refuses every delivery until it is"
        ))),
    }
}

/// A per-token limiter: `per_second` on average, bursts of `burst`.
pub fn token_limiter(per_second: u32, burst: u32) -> governor::DefaultKeyedRateLimiter<String> {
    let q = governor::Quota::per_second(
        std::num::NonZeroU32::new(per_second.max(1)).unwrap_or(std::num::NonZeroU32::MIN),
    )
    .allow_burst(std::num::NonZeroU32::new(burst.max(1)).unwrap_or(std::num::NonZeroU32::MIN));
    governor::RateLimiter::hashmap(q)
}

/// The body of every error.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// `bad_request`, `unauthorized`, `forbidden`, `not_found`, `method_not_allowed`,
    /// `conflict`, `invalid`, `window_closed`, `invalid_pack`, `too_large`, `rate_limited`,
    /// `unavailable`, `not_configured`, `busy`, `timeout`.
    pub code: String,
    /// What went wrong; for `invalid`, it starts with the field's name.
    pub message: String,
    /// For `window_closed`: the approved templates that can be sent instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub templates: Option<Vec<String>>,
    /// For `invalid_pack`: the pack's diagnostics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnostics: Option<Vec<oversight::DiagnosticBody>>,
}

/// `{"status": …}`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: String,
}

/// What a webhook delivery did.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Received {
    /// New events committed to the inbox.
    pub received: usize,
    /// Events seen before (redeliveries).
    pub duplicates: usize,
    /// Delivery statuses in the body (WhatsApp only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statuses: Option<usize>,
    /// Why nothing was taken in (e.g. a Shopify topic that is not an order event).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignored: Option<String>,
}

impl Received {
    fn counts(received: usize, duplicates: usize) -> Json<Received> {
        Json(Received {
            received,
            duplicates,
            statuses: None,
            ignored: None,
        })
    }

    fn ignored(why: String) -> Json<Received> {
        Json(Received {
            received: 0,
            duplicates: 0,
            statuses: None,
            ignored: Some(why),
        })
    }
}

/// One error type for every route.
#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    Unauthorized(String),
    Forbidden(String),
    NotFound(String),
    Conflict(String),
    /// A field's value is not acceptable; the message names the field.
    Unprocessable(String),
    TooLarge(usize),
    /// The route exists, not with this method.
    MethodNotAllowed,
    /// Free text outside WhatsApp's 24-hour window: these approved templates can be sent.
    WindowClosed(Vec<String>),
    /// A token sent more requests than its rate allows; retry after this many seconds.
    TooMany(u64),
    Unavailable(String),
    /// The route needs a secret the server was not given (503, so the sender retries once it
    /// is set).
    NotConfigured(String),
    /// The server is at its limit of requests in flight (503).
    Busy(String),
    /// The request (or its body) took longer than this (408).
    Timeout(std::time::Duration),
}

impl From<switchyard_engine::access::Denied> for ApiError {
    fn from(e: switchyard_engine::access::Denied) -> Self {
        ApiError::Forbidden(e.to_string())
    }
}

impl From<switchyard_engine::desk::Refused> for ApiError {
    fn from(e: switchyard_engine::desk::Refused) -> Self {
        use switchyard_engine::desk::Refused;
        match e {
            Refused::NotFound(m) => ApiError::NotFound(m),
            Refused::Denied(d) => d.into(),
            Refused::Store(e) => unavailable(e),
        }
    }
}

pub(crate) fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::Unavailable(e.to_string())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut templates = None;
        let mut retry_after = None;
        let (status, code, message) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m),
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, "unauthorized", m),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, "conflict", m),
            ApiError::Unprocessable(m) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid", m),
            ApiError::TooLarge(n) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                if n == 0 {
                    "the body is too large".into()
                } else {
                    format!("the body is larger than {n} bytes")
                },
            ),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take this method".into(),
            ),
            ApiError::WindowClosed(list) => {
                let m = format!(
                    "the customer's 24-hour window is closed: WhatsApp accepts only an approved template; send one of: {}",
                    if list.is_empty() { "(the rule pack has none)".to_string() } else { list.join(", ") }
                );
                templates = Some(list);
                (StatusCode::UNPROCESSABLE_ENTITY, "window_closed", m)
            }
            ApiError::TooMany(secs) => {
                retry_after = Some(secs.max(1));
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!(
                        "too many requests with this token; retry in {} s",
                        secs.max(1)
                    ),
                )
            }
            ApiError::Busy(m) => (StatusCode::SERVICE_UNAVAILABLE, "busy", m),
            ApiError::Timeout(d) => (
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!("the request took longer than {} s", d.as_secs()),
            ),
            ApiError::NotConfigured(m) => {
                tracing::warn!(error = %m, "a webhook was refused");
                (StatusCode::SERVICE_UNAVAILABLE, "not_configured", m)
            }
            ApiError::Unavailable(m) => {
                // Internals are logged, not shown.
                tracing::error!(error = %m, "store unavailable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the store is not available; retry later".into(),
                )
            }
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.into(),
                message,
                templates,
                diagnostics: None,
            },
        };
        let mut r = (status, Json(body)).into_response();
        if let Some(secs) = retry_after {
            r.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        r
    }
}

pub(crate) fn body(b: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    b.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(limit)
        } else {
            ApiError::BadRequest(e.body_text())
        }
    })
}

pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.body_limit;
    Router::new()
        .route("/healthz", get(healthz))
        .route(
            "/",
            get(|| async { axum::response::Redirect::to("/inbox") }),
        )
        .route("/login", get(web::login_page).post(web::login))
        .route("/logout", post(web::logout))
        .route("/inbox", get(web::inbox))
        .route("/assets/{name}", get(web::asset))
        .route("/api/v1/openapi.json", get(docs::openapi_json))
        .route("/api/docs", get(docs::page))
        .route("/readyz", get(readyz))
        .route(
            "/webhooks/whatsapp",
            get(whatsapp_handshake).post(whatsapp_post),
        )
        .route("/webhooks/webchat", axum::routing::post(webchat_post))
        .route("/webchat/sessions", axum::routing::post(webchat_session))
        .route("/webhooks/shopify", axum::routing::post(shopify_post))
        .route("/api/v1/tokens", axum::routing::post(admin::create_token))
        .route(
            "/api/v1/tokens/{id}",
            axum::routing::delete(admin::revoke_token),
        )
        .route("/api/v1/conversations", get(work::list_conversations))
        .route("/api/v1/conversations/{id}", get(admin::conversation))
        .route("/api/v1/conversations/{id}/trace", get(admin::trace))
        .route("/api/v1/conversations/{id}/customer", get(admin::customer))
        .route(
            "/api/v1/conversations/{id}/messages/{message}/media",
            get(admin::media),
        )
        .route("/api/v1/conversations/{id}/claim", post(work::claim))
        .route("/api/v1/snippets", get(work::snippets))
        .route("/api/v1/conversations/{id}/presence", post(work::presence))
        .route("/api/v1/conversations/{id}/assign", post(work::assign))
        .route("/api/v1/conversations/{id}/handoff", post(work::handoff))
        .route("/api/v1/conversations/{id}/status", post(work::status))
        .route("/api/v1/conversations/{id}/snooze", post(work::snooze))
        .route("/api/v1/conversations/{id}/priority", post(work::priority))
        .route("/api/v1/conversations/{id}/language", post(work::language))
        .route("/api/v1/conversations/{id}/tags", post(work::tags))
        .route("/api/v1/conversations/{id}/notes", post(work::note))
        .route("/api/v1/conversations/{id}/reply", post(work::reply))
        .route(
            "/api/v1/tickets",
            get(work::list_tickets).post(work::create_ticket),
        )
        .route(
            "/api/v1/tickets/{id}",
            get(work::ticket).patch(work::update_ticket),
        )
        .route("/api/v1/agents", get(team::list).post(team::create))
        .route("/api/v1/agents/{id}", axum::routing::patch(team::update))
        .route("/api/v1/agents/{id}/password", post(team::set_password))
        .route("/api/v1/queues", get(team::queues))
        .route("/api/v1/rules", get(oversight::rules))
        .route("/api/v1/rules/validate", post(oversight::validate))
        .route("/api/v1/rules/reload", post(oversight::reload))
        .route(
            "/api/v1/rules/shadow",
            get(shadow::get).post(shadow::post).delete(shadow::delete),
        )
        .route("/api/v1/rules/shadow/promote", post(shadow::promote))
        .route("/api/v1/audit", get(oversight::audit))
        .route("/api/v1/reports/kpis", get(oversight::kpis))
        .route("/api/v1/events", get(oversight::events))
        .route("/metrics", get(oversight::metrics))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            bound_requests,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Bounds what a slow or numerous client can hold: a request (a trickling body included) is cut
/// off after `request_timeout` with 408, and past `in_flight` requests at once the next is
/// refused with 503. The live feed, which is meant to stay open, is exempt from the timeout.
async fn bound_requests(
    State(s): State<Arc<AppState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Ok(_permit) = s.in_flight.clone().try_acquire_owned() else {
        return ApiError::Busy("too many requests in flight; retry shortly".into()).into_response();
    };
    if req.uri().path() == "/api/v1/events" {
        return next.run(req).await;
    }
    match tokio::time::timeout(s.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::Timeout(s.request_timeout).into_response(),
    }
}

/// Counts requests by route pattern and status for `/metrics`.
async fn count_requests(
    State(s): State<Arc<AppState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    // Label values from a closed set: a stranger's invented methods must not grow the registry.
    let method = match req.method().as_str() {
        m @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS") => m,
        _ => "other",
    }
    .to_string();
    let r = next.run(req).await;
    s.metrics
        .requests
        .get_or_create(&vec![
            ("method", method),
            ("route", route),
            ("status", r.status().as_u16().to_string()),
        ])
        .inc();
    r
}

/// Serves until `shutdown` completes; tests call it on a loopback listener.
pub async fn launch(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Readiness: the store answers within 2 s (503 when it does not: a load balancer then sends
/// the webhooks to another instance).
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, body = Health), (status = 503, body = ErrorBody)))]
pub async fn readyz(State(s): State<Arc<AppState>>) -> Result<Json<Health>, ApiError> {
    tokio::time::timeout(std::time::Duration::from_secs(2), s.runtime.engine.ping())
        .await
        .map_err(|_| ApiError::Unavailable("the database did not answer in 2 s".into()))?
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(Json(Health {
        status: "ready".into(),
    }))
}

/// Meta's verification handshake: `hub.mode=subscribe` and the right `hub.verify_token` →
/// the raw `hub.challenge`; else 403.
#[utoipa::path(get, path = "/webhooks/whatsapp", tag = "webhooks",
    params(("hub.mode" = Option<String>, Query), ("hub.verify_token" = Option<String>, Query),
        ("hub.challenge" = Option<String>, Query)),
    responses((status = 200, content_type = "text/plain", body = String), (status = 403, body = ErrorBody)))]
pub async fn whatsapp_handshake(
    State(s): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<String, ApiError> {
    let expected = s.whatsapp_verify_token.as_deref().unwrap_or("");
    whatsapp::handshake(
        q.get("hub.mode").map(String::as_str),
        q.get("hub.verify_token").map(String::as_str),
        q.get("hub.challenge").map(String::as_str),
        expected,
    )
    .ok_or_else(|| {
        ApiError::Forbidden("verification failed: wrong hub.mode or hub.verify_token".into())
    })
}

/// Commits `events` to the inbox; returns how many of the first `counted` were new and how
/// many were duplicates.
async fn ingest(
    s: &AppState,
    events: Vec<Inbound>,
    counted: usize,
) -> Result<(usize, usize), ApiError> {
    if events.is_empty() {
        return Ok((0, 0));
    }
    let r = s
        .runtime
        .ingest(events)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let r = &r[..counted.min(r.len())];
    let new = r.iter().filter(|x| matches!(x, Ingested::New(_))).count();
    Ok((new, r.len() - new))
}

/// WhatsApp Cloud API notifications (messages and delivery statuses). `X-Hub-Signature-256`
/// must be valid (401 otherwise); without `WHATSAPP_APP_SECRET` every delivery is refused
/// (503 `not_configured`). 200 only after the inbox COMMIT.
#[utoipa::path(post, path = "/webhooks/whatsapp", tag = "webhooks", request_body = Object,
    params(("X-Hub-Signature-256" = Option<String>, Header)),
    responses((status = 200, body = Received), (status = "4XX", body = ErrorBody)))]
pub async fn whatsapp_post(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<Received>, ApiError> {
    let b = body(b, s.body_limit)?;
    if let Some(secret) = webhook_key(&s, &s.whatsapp_app_secret, "WHATSAPP_APP_SECRET")? {
        let sig = headers
            .get("x-hub-signature-256")
            .and_then(|v| v.to_str().ok());
        if !whatsapp::signature_valid(secret, &b, sig) {
            return Err(ApiError::Unauthorized(
                "missing or wrong X-Hub-Signature-256".into(),
            ));
        }
    }
    let mut n = whatsapp::parse(&b).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    s.whatsapp_numbers.assign(&mut n);
    let statuses = n.statuses.len();
    let now = switchyard_engine::model::now_millis();
    let mut status_events = Vec::new();
    for st in &n.statuses {
        let error = st
            .error
            .as_ref()
            .map(|(code, title)| format!("{code}: {title}"));
        let channel = s.whatsapp_numbers.channel(st.phone_number_id.as_deref());
        let recorded = s
            .runtime
            .engine
            .record_status(&channel, &st.provider_id, &st.status, error.as_deref(), now)
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
        // A status that is the message's current one reaches the `message.status` rules,
        // once (the inbox deduplicates a redelivery; a crash between the two commits is
        // repaired by Meta's redelivery, which finds the status current).
        if let (StatusRecorded::Updated | StatusRecorded::Repeated, Some(to)) =
            (recorded, &st.recipient)
        {
            status_events.push(Inbound::Status {
                channel,
                to: to.clone(),
                provider_id: format!("status:{}:{}", st.provider_id, st.status),
                message: st.provider_id.clone(),
                status: st.status.clone(),
                error,
            });
        }
    }
    // The messages and the status events in one commit; acknowledged only after it.
    let counted = n.messages.len();
    let mut events = n.messages;
    events.extend(status_events);
    let (new, dup) = ingest(&s, events, counted).await?;
    let mut r = Received::counts(new, dup);
    r.statuses = Some(statuses);
    Ok(r)
}

/// A new web chat visitor's session.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct WebchatSession {
    /// Sent with every message as `Authorization: Bearer <token>`.
    pub token: String,
    /// The customer id the session's messages are from.
    pub customer: String,
    /// When the session ends (milliseconds since the epoch); then start a new one.
    pub expires_at: i64,
}

/// Starts a web chat visitor's session: a new customer id, signed by the server, that every
/// message of this visitor carries. Nothing is stored until the visitor writes.
#[utoipa::path(post, path = "/webchat/sessions", tag = "webhooks",
    responses((status = 201, body = WebchatSession), (status = "4XX", body = ErrorBody)))]
pub async fn webchat_session(
    State(s): State<Arc<AppState>>,
) -> Result<(StatusCode, Json<WebchatSession>), ApiError> {
    let expires_at = switchyard_engine::model::now_millis() + s.webchat_session.as_millis() as i64;
    let (token, session) = switchyard_connectors::webchat::issue(&s.webchat_key, expires_at)
        .map_err(|e| ApiError::Unavailable(format!("no random numbers for a session: {e}")))?;
    Ok((
        StatusCode::CREATED,
        Json(WebchatSession {
            token,
            customer: session.customer,
            expires_at,
        }),
    ))
}

/// A web chat message: `{"id", "name"?, "text"}` or `{"id", "button"}`, with the visitor's
/// session (`POST /webchat/sessions`) as `Authorization: Bearer <token>`. The customer is the
/// session's; a message id counts once per session (a resend is a duplicate). Text is at most
/// 4,096 characters.
#[utoipa::path(post, path = "/webhooks/webchat", tag = "webhooks",
    request_body = switchyard_connectors::webchat::Posted,
    params(("Authorization" = String, Header, description = "`Bearer <session token>`")),
    responses((status = 200, body = Received), (status = "4XX", body = ErrorBody)))]
pub async fn webchat_post(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<Received>, ApiError> {
    use switchyard_connectors::webchat;
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::Unauthorized(
                "a web chat message needs its session: `Authorization: Bearer <token>` from POST /webchat/sessions".into(),
            )
        })?;
    let session = webchat::verify(
        &s.webchat_key,
        token.trim(),
        switchyard_engine::model::now_millis(),
    )
    .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
    let b = body(b, s.body_limit)?;
    let m: webchat::Posted = serde_json::from_slice(&b).map_err(|e| {
        ApiError::BadRequest(format!(
            "expected {{\"id\", \"name\"?, \"text\" or \"button\"}} (the customer is the session's): {e}"
        ))
    })?;
    let (kind, text, choice) = webchat::message(&m).map_err(ApiError::BadRequest)?;
    let ev = Inbound::Message {
        channel: "webchat".into(),
        // Ids are the visitor's: deduplicated within the session, not across visitors.
        provider_id: format!("{}:{}", session.customer, m.id),
        from: session.customer,
        name: m.name,
        phone: None,
        kind: kind.into(),
        text,
        choice,
        payload: Value::Null,
    };
    let (new, dup) = ingest(&s, vec![ev], 1).await?;
    Ok(Received::counts(new, dup))
}

/// Shopify order webhooks (`orders/create`, `orders/updated`, `orders/cancelled`,
/// `orders/fulfilled`): `X-Shopify-Hmac-Sha256` must be valid (401 otherwise; without
/// `SHOPIFY_WEBHOOK_SECRET` every delivery is refused, 503 `not_configured`); deduplicated on `X-Shopify-Webhook-Id`; committed to the inbox as
/// `order.created` etc. for the customer's WhatsApp conversation (by the order's phone) before
/// the 200. Other topics, and orders without a phone, are acknowledged and ignored.
#[utoipa::path(post, path = "/webhooks/shopify", tag = "webhooks", request_body = Object,
    params(("X-Shopify-Topic" = String, Header), ("X-Shopify-Webhook-Id" = String, Header),
        ("X-Shopify-Hmac-Sha256" = Option<String>, Header)),
    responses((status = 200, body = Received), (status = "4XX", body = ErrorBody)))]
pub async fn shopify_post(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<Received>, ApiError> {
    use switchyard_connectors::shopify;
    let b = body(b, s.body_limit)?;
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if let Some(secret) = webhook_key(&s, &s.shopify_webhook_secret, "SHOPIFY_WEBHOOK_SECRET")? {
        if !shopify::webhook_signature_valid(secret, &b, header("x-shopify-hmac-sha256")) {
            return Err(ApiError::Unauthorized(
                "missing or wrong X-Shopify-Hmac-Sha256".into(),
            ));
        }
    }
    let topic = header("x-shopify-topic").unwrap_or("");
    let Some(event) = shopify::event_of_topic(topic) else {
        return Ok(Received::ignored(format!(
            "topic `{topic}` is not an order event"
        )));
    };
    let id = header("x-shopify-webhook-id")
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| ApiError::BadRequest("missing X-Shopify-Webhook-Id".into()))?;
    let raw: Value = serde_json::from_slice(&b)
        .map_err(|e| ApiError::BadRequest(format!("the order is not JSON: {e}")))?;
    if !raw.is_object() {
        return Err(ApiError::BadRequest(
            "the order must be a JSON object".into(),
        ));
    }
    let order = shopify::order_from_rest(&raw);
    let Some(phone) = order["phone"].as_str().map(String::from) else {
        return Ok(Received::ignored(
            "the order has no phone number: there is no WhatsApp conversation to start".into(),
        ));
    };
    let ev = Inbound::Order {
        channel: s.whatsapp_numbers.channel(None),
        to: phone.trim_start_matches('+').to_string(),
        name: order["customer_name"].as_str().map(String::from),
        phone: Some(phone),
        provider_id: format!("shopify:{id}"),
        event: event.into(),
        order,
    };
    let (new, dup) = ingest(&s, vec![ev], 1).await?;
    Ok(Received::counts(new, dup))
}
