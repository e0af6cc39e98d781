//! Access to the admin API under `/api/v1`: bearer tokens with roles, token routes, and
//! reading one conversation.
//!
//! Tokens are random (`sy_` + 64 hex digits), shown once, stored as their SHA-256 only.
//! `SWITCHYARD_ADMIN_TOKEN`, when set at start, is accepted as an admin token.
//!
//! | route | agent | supervisor | admin |
//! |---|---|---|---|
//! | `POST /api/v1/tokens`, `DELETE /api/v1/tokens/{id}` | 403 | 403 | yes |
//! | `GET /api/v1/conversations/{id}` | theirs or their queues' | yes | yes |
//! | `POST /api/v1/conversations/{id}/claim` | their queues' | with an agent id | with an agent id |

use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use switchyard_engine::model::{now_millis as now, Conversation};

use crate::extract::{Body, Id};
use crate::{unavailable, ApiError, AppState};

pub use switchyard_engine::access::Role;
use switchyard_engine::access::{self, Actor};

/// Who is calling, from their bearer token.
#[derive(Debug, Clone)]
pub struct Principal {
    pub role: Role,
    /// The agent the token acts as.
    pub agent: Option<String>,
    /// The actor of audit records: the agent id, else `token:<id>`, or `admin-token`.
    pub actor: String,
    /// The token's hash, to look it up again (a live stream ends when it is revoked).
    pub token_hash: String,
}

impl Principal {
    /// Whether the token still stands for the same caller: not revoked, the same role and
    /// agent.
    pub async fn still_valid(&self, s: &AppState) -> bool {
        matches!(principal(s, &self.token_hash).await,
            Ok(p) if p.role == self.role && p.agent == self.agent)
    }

    /// The caller as the engine's access rules see them.
    pub fn actor(&self) -> Actor {
        Actor {
            id: self.actor.clone(),
            role: self.role,
            agent: self.agent.clone(),
        }
    }
}

/// The stored form of a token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new random token.
pub fn new_token() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| ApiError::Unavailable(format!("no randomness for a token: {e}")))?;
    Ok(format!("sy_{}", hex::encode(bytes)))
}

impl FromRequestParts<Arc<AppState>> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &Arc<AppState>) -> Result<Self, ApiError> {
        let bearer = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        // A browser's session cookie stands in for a bearer token; what changes state must
        // also carry the session's CSRF token and come from this host.
        let (token, session) = match bearer {
            Some(t) => (t.to_string(), false),
            None => match crate::web::session_token(&parts.headers) {
                Some(t) => (t, true),
                None => {
                    return Err(ApiError::Unauthorized(
                        "send `Authorization: Bearer <token>` (or log in at /login)".into(),
                    ))
                }
            },
        };
        if session && !parts.method.is_safe() {
            let sent = parts
                .headers
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !crate::web::same_origin(&parts.headers)
                || !same_secret(sent, &crate::web::csrf_of(&token))
            {
                return Err(ApiError::Forbidden(
                    "a change with a session cookie needs its X-CSRF-Token, from this site".into(),
                ));
            }
        }
        let hash = token_hash(&token);
        let ip = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        s.auth_guard.admit(ip, &hash).map_err(ApiError::TooMany)?;
        let p = match principal(s, &hash).await {
            Err(ApiError::Unauthorized(m)) => {
                s.auth_guard.failed(ip);
                return Err(ApiError::Unauthorized(m));
            }
            other => other?,
        };
        s.auth_guard.succeeded(&hash);
        // Counted per valid token only, so made-up tokens cannot grow the limiter's table.
        if let Some(l) = &s.token_limiter {
            if let Err(not_until) = l.check_key(&hash) {
                use governor::clock::{Clock, DefaultClock};
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                return Err(ApiError::TooMany(wait.as_secs_f64().ceil() as u64));
            }
        }
        Ok(p)
    }
}

/// Whether two secrets are equal, compared as their hashes (the timing says nothing usable).
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    token_hash(a) == token_hash(b)
}

/// The principal of a browser session's token (a session, live and not expired), or 401.
pub async fn principal_of_session(s: &AppState, token: &str) -> Result<Principal, ApiError> {
    principal(s, &token_hash(token)).await
}

/// The principal of a token's hash, or 401.
async fn principal(s: &AppState, hash: &str) -> Result<Principal, ApiError> {
    // Hashes are compared, not tokens: the comparison's timing says nothing usable.
    if s.admin_token.as_deref().map(token_hash).as_deref() == Some(hash) {
        return Ok(Principal {
            role: Role::Admin,
            agent: None,
            actor: "admin-token".into(),
            token_hash: hash.to_string(),
        });
    }
    let rec = s.runtime.engine.token(hash).await.map_err(unavailable)?;
    match rec {
        Some(r) if r.expires_at.is_some_and(|at| at <= now()) => Err(ApiError::Unauthorized(
            "the session has expired: log in again".into(),
        )),
        Some(r) if !r.revoked => {
            let role = Role::parse(&r.role).ok_or_else(|| {
                ApiError::Unavailable(format!("token {} has an unknown role", r.id))
            })?;
            Ok(Principal {
                role,
                actor: r.agent.clone().unwrap_or_else(|| format!("token:{}", r.id)),
                agent: r.agent,
                token_hash: hash.to_string(),
            })
        }
        _ => Err(ApiError::Unauthorized("unknown or revoked token".into())),
    }
}

pub(crate) fn require(p: &Principal, role: Role) -> Result<(), ApiError> {
    Ok(access::require(&p.actor(), role)?)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// `agent`, `supervisor` or `admin`.
    role: String,
    /// The agent the token acts as (required for `agent`).
    agent: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TokenCreated {
    pub id: i64,
    /// Shown this once; only its SHA-256 is kept.
    pub token: String,
    pub role: String,
    pub agent: Option<String>,
}

/// Creates an API token (admin). The token is shown this once.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "access", request_body = NewToken,
    security(("bearer" = [])),
    responses((status = 201, body = TokenCreated), (status = "4XX", body = crate::ErrorBody)))]
pub async fn create_token(
    State(s): State<Arc<AppState>>,
    p: Principal,
    Body(t): Body<NewToken>,
) -> Result<(StatusCode, Json<TokenCreated>), ApiError> {
    require(&p, Role::Admin)?;
    let role = Role::parse(&t.role)
        .ok_or_else(|| ApiError::Unprocessable("role: one of agent, supervisor, admin".into()))?;
    let agent = t.agent.filter(|a| !a.trim().is_empty());
    if role == Role::Agent && agent.is_none() {
        return Err(ApiError::Unprocessable(
            "agent: an agent token must name the agent it acts as".into(),
        ));
    }
    let token = new_token()?;
    let id = s
        .runtime
        .engine
        .create_token(&token_hash(&token), role, agent.as_deref(), &p.actor, now())
        .await
        .map_err(unavailable)?;
    Ok((
        StatusCode::CREATED,
        Json(TokenCreated {
            id,
            token,
            role: role.as_str().into(),
            agent,
        }),
    ))
}

/// Revokes a token (admin); it stops working at once.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "access",
    params(("id" = i64, Path, description = "the token's id")), security(("bearer" = [])),
    responses((status = 204, description = "revoked"), (status = "4XX", body = crate::ErrorBody)))]
pub async fn revoke_token(
    State(s): State<Arc<AppState>>,
    p: Principal,
    Id(id): Id,
) -> Result<StatusCode, ApiError> {
    require(&p, Role::Admin)?;
    let done = s
        .runtime
        .engine
        .revoke_token(id, &p.actor, now())
        .await
        .map_err(unavailable)?;
    if done {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no live token {id}")))
    }
}

/// The conversation, if `p` may see it (see `switchyard_engine::access`).
pub(crate) async fn visible(
    s: &AppState,
    p: &Principal,
    id: i64,
) -> Result<Conversation, ApiError> {
    Ok(s.runtime.engine.conversation_for(&p.actor(), id).await?)
}

pub use switchyard_engine::desk::ConversationDetail;

/// One conversation with its contact, messages, notes, tickets and the 24-hour window. Agents
/// see theirs and their queues'.
#[utoipa::path(get, path = "/api/v1/conversations/{id}", tag = "conversations",
    params(("id" = i64, Path)), security(("bearer" = [])),
    responses((status = 200, body = ConversationDetail), (status = "4XX", body = crate::ErrorBody)))]
pub async fn conversation(
    State(s): State<Arc<AppState>>,
    p: Principal,
    Id(id): Id,
) -> Result<Json<ConversationDetail>, ApiError> {
    Ok(Json(
        s.runtime
            .engine
            .conversation_view(&p.actor(), id, now())
            .await?,
    ))
}

/// One decision: the pack version that took it and why it went as it did.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Decision {
    /// The hash of the rule pack that decided.
    pub pack: String,
    pub trace: switchyard_engine::trace::Trace,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TraceList {
    /// Oldest first: one per event processed (customer messages, taps, order events,
    /// timers, agents' actions).
    pub decisions: Vec<Decision>,
}

/// Why the conversation is where it is: every decision taken on it — the intent and its
/// confidence, the rules looked at, flow steps, lookups, sends, routes and assignments. Agents
/// see the traces of the conversations they may see.
#[utoipa::path(get, path = "/api/v1/conversations/{id}/trace", tag = "conversations",
    params(("id" = i64, Path)), security(("bearer" = [])),
    responses((status = 200, body = TraceList), (status = "4XX", body = crate::ErrorBody)))]
pub async fn trace(
    State(s): State<Arc<AppState>>,
    p: Principal,
    Id(id): Id,
) -> Result<Json<TraceList>, ApiError> {
    let decisions = s
        .runtime
        .engine
        .traces_for(&p.actor(), id)
        .await?
        .into_iter()
        .map(|(pack, trace)| Decision { pack, trace })
        .collect();
    Ok(Json(TraceList { decisions }))
}

/// A customer's photo, voice note, video or document, as kept in the store (fetched from
/// WhatsApp soon after the message arrived). Images, audio and video are served inline, the
/// rest as attachments; 404 while it is not fetched yet, or with why it could not be.
#[utoipa::path(get, path = "/api/v1/conversations/{id}/messages/{message}/media", tag = "conversations",
    params(("id" = i64, Path), ("message" = i64, Path, description = "the message's id")),
    security(("bearer" = [])),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>,
        description = "the bytes, with their type"), (status = "4XX", body = crate::ErrorBody)))]
pub async fn media(
    State(s): State<Arc<AppState>>,
    p: Principal,
    axum::extract::Path((id, message)): axum::extract::Path<(i64, i64)>,
) -> Result<axum::response::Response, ApiError> {
    use axum::http::{header, HeaderValue};
    use axum::response::IntoResponse;
    let m = s.runtime.engine.media_for(&p.actor(), id, message).await?;
    let Some(bytes) = m.bytes.filter(|_| m.status == "stored") else {
        return Err(ApiError::NotFound(match m.status.as_str() {
            "retry" => format!(
                "media of message {message} is not fetched yet: {}",
                m.error.unwrap_or_default()
            ),
            _ => format!(
                "media of message {message} could not be kept: {}",
                m.error.unwrap_or_default()
            ),
        }));
    };
    let mime = m.mime_type.unwrap_or_default();
    let inline = ["image/", "audio/", "video/"]
        .iter()
        .any(|p| mime.starts_with(p))
        && !mime.contains("svg");
    let mut r = bytes.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(if inline {
            &mime
        } else {
            "application/octet-stream"
        })
        .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    if !inline {
        h.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_str(&format!("attachment; filename=\"message-{message}\""))
                .unwrap_or(HeaderValue::from_static("attachment")),
        );
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    Ok(r)
}

/// The customer panel of a conversation: the contact, their other conversations the caller
/// may see (newest first), and their orders from the pack's store connector by phone
/// (`orders_error` when the store did not answer).
#[utoipa::path(get, path = "/api/v1/conversations/{id}/customer", tag = "conversations",
    params(("id" = i64, Path)), security(("bearer" = [])),
    responses((status = 200, body = switchyard_engine::desk::CustomerView),
        (status = "4XX", body = crate::ErrorBody)))]
pub async fn customer(
    State(s): State<Arc<AppState>>,
    p: Principal,
    Id(id): Id,
) -> Result<Json<switchyard_engine::desk::CustomerView>, ApiError> {
    Ok(Json(s.runtime.engine.customer_for(&p.actor(), id).await?))
}
