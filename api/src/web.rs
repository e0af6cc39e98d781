//! The workspace in the browser: log-in, log-out, the inbox page and its two static files.
//!
//! An agent logs in with their id and password (an argon2id hash, set by an admin through
//! `POST /api/v1/agents/{id}/password` or `switchyard agent passwd`). The session is a token
//! of kind `session` (stored as its SHA-256, expiring, revocable like any token) in an
//! `HttpOnly`, `SameSite=Strict` cookie (`Secure` behind TLS). The page is plain HTML with one
//! script that calls the JSON API with that cookie: every read and action goes through the
//! same handlers and the same access checks as a bearer token. A request that changes state
//! with the cookie must carry the session's CSRF token (`X-CSRF-Token`, or the form field
//! `csrf`) and, when the browser sends one, an `Origin` of this host.

use std::sync::Arc;

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, SaltString};
use argon2::{Argon2, PasswordVerifier};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use switchyard_engine::model::now_millis as now;

use crate::admin::{new_token, token_hash, Principal};
use crate::{ApiError, AppState};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "sy_session";
/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 10;
/// Longest password accepted (hashing a huge one is work a stranger could ask for).
pub const MAX_PASSWORD: usize = 256;

const APP_JS: &str = include_str!("../web/app.js");
const APP_CSS: &str = include_str!("../web/app.css");

/// What the pages allow themselves: their own script, style, images and the API.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; \
                   media-src 'self' blob:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// An argon2id hash (PHC string) of a password, or why the password is refused.
pub fn hash_password(password: &str) -> Result<String, String> {
    let n = password.chars().count();
    if n < MIN_PASSWORD {
        return Err(format!(
            "the password is too short: at least {MIN_PASSWORD} characters"
        ));
    }
    if n > MAX_PASSWORD {
        return Err(format!(
            "the password is too long: at most {MAX_PASSWORD} characters"
        ));
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing the password failed: {e}"))
}

/// Whether `password` matches the stored hash.
pub fn verify_password(stored: &str, password: &str) -> bool {
    if password.chars().count() > MAX_PASSWORD {
        return false;
    }
    PasswordHash::new(stored)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// The CSRF token of a session: derived from the session token (which the page's script
/// cannot read), so nothing more is stored.
pub fn csrf_of(session_token: &str) -> String {
    hex::encode(Sha256::digest(format!("csrf:{session_token}").as_bytes()))
}

/// The session token in the request's cookies, if any.
pub fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| cookie::Cookie::split_parse(v.to_string()))
        .filter_map(Result::ok)
        .find(|c| c.name() == SESSION_COOKIE)
        .map(|c| c.value().to_string())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// Whether the request came to us over TLS (directly, or as a proxy in front says).
fn over_tls(s: &AppState, headers: &HeaderMap) -> bool {
    s.secure_cookies
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// A state-changing request from a browser: its `Origin`, when sent, must be this host.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(host))
}

fn page(title: &str, head: Markup, body: Markup) -> Response {
    let html = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Switchyard" }
                link rel="stylesheet" href="/assets/app.css";
                (head)
            }
            (body)
        }
    };
    secured(axum::response::Html(html.into_string()).into_response())
}

fn secured(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if !h.contains_key(header::CONTENT_TYPE) {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
    }
    r
}

#[derive(Deserialize)]
pub struct LoginQuery {
    expired: Option<String>,
}

fn login_form(error: Option<&str>, agent: &str) -> Markup {
    html! {
        body {
            main.login {
                h1 { "Switchyard — log in" }
                @if let Some(e) = error {
                    p.error role="alert" { (e) }
                }
                form method="post" action="/login" {
                    label for="agent" { "Agent id" }
                    input #agent name="agent" autocomplete="username" required value=(agent) autofocus;
                    label for="password" { "Password" }
                    input #password name="password" type="password" autocomplete="current-password" required;
                    button type="submit" { "Log in" }
                }
            }
        }
    }
}

/// The log-in page (straight to the inbox when the session is still good).
pub async fn login_page(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    if let Some(t) = session_token(&headers) {
        if crate::admin::principal_of_session(&s, &t).await.is_ok() {
            return Redirect::to("/inbox").into_response();
        }
    }
    let note = q
        .expired
        .is_some()
        .then_some("Your session ended. Please log in again.");
    page("Log in", html! {}, login_form(note, ""))
}

#[derive(Deserialize)]
pub struct LoginForm {
    agent: String,
    password: String,
}

/// Checks the password; on success a session cookie and the inbox.
pub async fn login(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    connect: Result<
        axum::extract::ConnectInfo<std::net::SocketAddr>,
        axum::extract::rejection::ExtensionRejection,
    >,
    Form(f): Form<LoginForm>,
) -> Response {
    if !same_origin(&headers) {
        return secured((StatusCode::FORBIDDEN, "cross-site log-in refused").into_response());
    }
    let ip = connect.ok().map(|c| c.0.ip());
    let agent = f.agent.trim().to_string();
    let key = format!("login:{agent}");
    if let Err(wait) = s.auth_guard.admit(ip, &key) {
        let mut r = page(
            "Log in",
            html! {},
            login_form(
                Some(&format!(
                    "Too many failed log-ins from here. Try again in {wait} s."
                )),
                &agent,
            ),
        );
        *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        return r;
    }
    let refused = |s: &AppState| {
        s.auth_guard.failed(ip);
        let mut r = page(
            "Log in",
            html! {},
            login_form(Some("Wrong agent id or password."), &agent),
        );
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        r
    };
    if agent.is_empty() || agent.len() > 128 {
        return refused(&s);
    }
    let stored = match s.runtime.engine.password_hash(&agent).await {
        Ok(h) => h,
        Err(e) => return ApiError::Unavailable(e.to_string()).into_response(),
    };
    // Hashing happens whether or not the agent exists: the answer's timing says nothing.
    let password = f.password;
    let ok = tokio::task::spawn_blocking(move || match stored {
        Some(h) => verify_password(&h, &password),
        None => {
            let _ = hash_password(&format!("{password}-padding-to-the-minimum"));
            false
        }
    })
    .await
    .unwrap_or(false);
    if !ok {
        return refused(&s);
    }
    let token = match new_token() {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let t = now();
    let expires = t + s.session_ttl.as_millis() as i64;
    match s
        .runtime
        .engine
        .create_session(&agent, &token_hash(&token), expires, t)
        .await
    {
        Ok(Some(_)) => {}
        Ok(None) => return refused(&s),
        Err(e) => return ApiError::Unavailable(e.to_string()).into_response(),
    }
    s.auth_guard.succeeded(&key);
    let cookie = cookie::Cookie::build((SESSION_COOKIE, token))
        .path("/")
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .secure(over_tls(&s, &headers))
        .max_age(cookie::time::Duration::seconds(
            s.session_ttl.as_secs() as i64
        ))
        .build();
    let mut r = Redirect::to("/inbox").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie.to_string()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    secured(r)
}

#[derive(Deserialize)]
pub struct LogoutForm {
    csrf: String,
}

/// Ends the session (revoked in the store, the cookie cleared).
pub async fn logout(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Form(f): Form<LogoutForm>,
) -> Response {
    let Some(token) = session_token(&headers) else {
        return Redirect::to("/login").into_response();
    };
    if !same_origin(&headers) || !crate::admin::same_secret(&f.csrf, &csrf_of(&token)) {
        return secured((StatusCode::FORBIDDEN, "missing or wrong CSRF token").into_response());
    }
    if let Ok(Some(rec)) = s.runtime.engine.token(&token_hash(&token)).await {
        let actor = rec.agent.clone().unwrap_or_default();
        if let Err(e) = s.runtime.engine.revoke_token(rec.id, &actor, now()).await {
            return ApiError::Unavailable(e.to_string()).into_response();
        }
    }
    let gone = cookie::Cookie::build((SESSION_COOKIE, ""))
        .path("/")
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .max_age(cookie::time::Duration::ZERO)
        .build();
    let mut r = Redirect::to("/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&gone.to_string()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    secured(r)
}

/// The workspace: its shell; the script fills it from the API.
pub async fn inbox(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let Some(token) = session_token(&headers) else {
        return Redirect::to("/login").into_response();
    };
    let p: Principal = match crate::admin::principal_of_session(&s, &token).await {
        Ok(p) => p,
        Err(_) => return Redirect::to("/login?expired=1").into_response(),
    };
    let csrf = csrf_of(&token);
    let queues: Vec<String> = s.runtime.engine.pack().queues.keys().cloned().collect();
    let me = match &p.agent {
        Some(a) => s.runtime.engine.agent(a).await.ok().flatten(),
        None => None,
    };
    let head = html! {
        meta name="sy-capacity" content=(me.as_ref().map(|a| a.capacity).unwrap_or(0));
        meta name="sy-queues" content=(queues.join(","));
        meta name="sy-agent" content=(p.agent.clone().unwrap_or_default());
        meta name="sy-role" content=(p.role.as_str());
        meta name="sy-csrf" content=(csrf);
    };
    let body = html! {
        body {
            header.top {
                h1 { "Switchyard" }
                span #live role="status" aria-live="polite" {}
                div.who {
                    @if let Some(a) = &me {
                        span #load {}
                        select #availability aria-label="Your availability" {
                            @for v in ["online", "away", "offline"] {
                                option value=(v) selected[a.availability == v] { (v) }
                            }
                        }
                    }
                    span { (p.agent.clone().unwrap_or_else(|| p.actor.clone())) }
                    span.role { "(" (p.role.as_str()) ")" }
                    form method="post" action="/logout" {
                        input type="hidden" name="csrf" value=(csrf);
                        button #logout type="submit" { "Log out" }
                    }
                }
            }
            div #status role="status" aria-live="polite" {}
            main {
                section #inbox aria-label="Inbox" {
                    div.tabs role="tablist" {
                        button type="button" role="tab" data-tab="mine" aria-selected="false" { "Mine" }
                        button type="button" role="tab" data-tab="unassigned" aria-selected="false" { "Unassigned in my queues" }
                        button type="button" role="tab" data-tab="all" aria-selected="false" { "All" }
                    }
                    form #filters aria-label="Filters" {
                        input name="q" type="search" placeholder="Search name, phone, text" aria-label="Search";
                        select name="status" aria-label="Status" {
                            option value="" { "any status" }
                            @for st in ["new", "open", "waiting", "escalated", "resolved"] { option value=(st) { (st) } }
                        }
                        select name="priority" aria-label="Priority" {
                            option value="" { "any priority" }
                            @for pr in ["urgent", "high", "normal", "low"] { option value=(pr) { (pr) } }
                        }
                        select name="queue" aria-label="Queue" { option value="" { "any queue" } }
                        input name="tag" placeholder="tag" aria-label="Tag" size="8";
                    }
                    ul #lines aria-label="Conversations, longest waiting first" tabindex="0" {}
                }
                section #conversation aria-label="Conversation" tabindex="-1" {
                    p.empty { "Pick a conversation. Keys: j / k next and previous, r reply, n note, e resolve, ? help." }
                }
                aside aria-label="Details" tabindex="0" {
                    div #customer {}
                    div #trace {}
                }
            }
            div #keys hidden {
                "j / k: next / previous · r: reply · n: note · e: resolve · Ctrl+Enter: send · ?: this help"
            }
            script src="/assets/app.js" defer {}
        }
    };
    page("Inbox", head, body)
}

/// `/assets/app.js` and `/assets/app.css`, embedded in the binary.
pub async fn asset(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}
