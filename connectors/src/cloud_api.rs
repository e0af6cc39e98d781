//! The WhatsApp Cloud API, sending side: the engine's [`Channel`] port over
//! `POST {base}/{version}/{phone_number_id}/messages` with a bearer token.
//!
//! Errors are classified by the Graph error `code` in the body, not by the HTTP status (a
//! missing template comes back as 404, per Meta's Cloud API error reference):
//!
//! | code | outcome |
//! |---|---|
//! | 131047 (window closed) | [`SendError::WindowClosed`]: failed, never retried free-form; the engine hands the conversation to a human |
//! | 130429 (throughput), 131056 (pair rate limit), 131000 (unknown), 5xx, no connection | [`SendError::Retry`]: back off and retry |
//! | no answer in time, a connection cut after the request left, 2xx without a message id | [`SendError::Unknown`]: Meta may have taken it; never resent automatically |
//! | 131026, 131050, 131048, 131049, 131051, 131030, 132xxx, other 4xx | [`SendError::Permanent`]: recorded on the message, visible to agents |
//! | 190 and other auth errors (401/403) | [`SendError::Retry`]: an operator fixes the token; the rows give up after the retries |
//!
//! Sends are paced per number by a rate limiter (default 80 messages/s, Meta's default
//! throughput per business number).

use std::num::NonZeroU32;
use std::time::Duration;

use async_trait::async_trait;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::{json, Value};
use switchyard_engine::model::Outbound;
use switchyard_engine::ports::{Channel, SendError};

use crate::whatsapp::send_request;

/// Where and as whom to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudApiConfig {
    /// `https://graph.facebook.com` (tests point it at a fake server on loopback).
    pub base_url: String,
    /// The Graph API version, e.g. `v21.0`.
    pub version: String,
    /// The business number's id (not the phone number itself).
    pub phone_number_id: String,
    pub access_token: String,
    /// Messages per second for this number.
    pub rate_per_second: u32,
    /// Per request, connection included.
    pub timeout: Duration,
}

impl CloudApiConfig {
    pub const DEFAULT_BASE_URL: &'static str = "https://graph.facebook.com";
    pub const DEFAULT_VERSION: &'static str = "v21.0";

    /// The defaults for one number: Meta's URL and a current version, 80 messages/s, 15 s.
    pub fn new(phone_number_id: &str, access_token: &str) -> CloudApiConfig {
        CloudApiConfig {
            base_url: Self::DEFAULT_BASE_URL.into(),
            version: Self::DEFAULT_VERSION.into(),
            phone_number_id: phone_number_id.into(),
            access_token: access_token.into(),
            rate_per_second: 80,
            timeout: Duration::from_secs(15),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CloudApiError {
    #[error("WhatsApp Cloud API: {0}")]
    Config(String),
}

/// A [`Channel`] that sends through the Cloud API as one business number.
pub struct CloudApi {
    http: reqwest::Client,
    cfg: CloudApiConfig,
    url: String,
    limiter: DefaultDirectRateLimiter,
}

impl std::fmt::Debug for CloudApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("CloudApi").field("url", &self.url).finish()
    }
}

impl CloudApi {
    pub fn new(cfg: CloudApiConfig) -> Result<CloudApi, CloudApiError> {
        if cfg.phone_number_id.trim().is_empty() {
            return Err(CloudApiError::Config("the phone number id is empty".into()));
        }
        if cfg.access_token.trim().is_empty() {
            return Err(CloudApiError::Config("the access token is empty".into()));
        }
        let rate = NonZeroU32::new(cfg.rate_per_second).ok_or_else(|| {
            CloudApiError::Config("the send rate must be at least 1 message per second".into())
        })?;
        install_tls();
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .build()
            .map_err(|e| CloudApiError::Config(format!("cannot build the HTTP client: {e}")))?;
        let url = format!(
            "{}/{}/{}/messages",
            cfg.base_url.trim_end_matches('/'),
            cfg.version.trim_matches('/'),
            cfg.phone_number_id
        );
        Ok(CloudApi {
            http,
            url,
            limiter: RateLimiter::direct(Quota::per_second(rate)),
            cfg,
        })
    }

    /// The number this channel sends as.
    pub fn phone_number_id(&self) -> &str {
        &self.cfg.phone_number_id
    }

    /// Marks an inbound message as read (blue ticks).
    pub async fn mark_read(&self, message_id: &str) -> Result<(), SendError> {
        let body =
            json!({ "messaging_product": "whatsapp", "status": "read", "message_id": message_id });
        self.post(&body).await.map(|_| ())
    }

    async fn post(&self, body: &Value) -> Result<Value, SendError> {
        self.limiter.until_ready().await;
        let resp = self
            .http
            .post(&self.url)
            .bearer_auth(&self.cfg.access_token)
            .json(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    // Nothing left this process: safe to try again.
                    SendError::Retry(format!("cannot reach the Cloud API: {e}"))
                } else if e.is_timeout() {
                    SendError::Unknown(format!(
                        "no answer within {:?}: the Cloud API may have taken the message",
                        self.cfg.timeout
                    ))
                } else {
                    SendError::Unknown(format!("the request failed after it was sent: {e}"))
                }
            })?;
        let status = resp.status().as_u16();
        // A body that is not JSON (a proxy's error page) is classified by the status alone.
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            Ok(body)
        } else {
            Err(classify(status, &body))
        }
    }
}

/// Makes ring the process's TLS provider. reqwest is built without a default one (the
/// default, aws-lc-rs, needs a large C build); every HTTP client of the process needs this
/// done first. Idempotent.
pub fn install_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[async_trait]
impl Channel for CloudApi {
    async fn send(&self, message: &Outbound) -> Result<String, SendError> {
        let body = self.post(&send_request(message)).await?;
        match body["messages"][0]["id"].as_str() {
            Some(id) => Ok(id.to_string()),
            // Accepted, but we cannot know which message it became: not sent again (it may
            // well arrive), and the oddity is visible on the message.
            None => Err(SendError::Unknown(
                "the Cloud API accepted the message without returning its id".into(),
            )),
        }
    }
}

/// What a failed send means, from the HTTP status and the Graph error body.
pub fn classify(status: u16, body: &Value) -> SendError {
    let e = &body["error"];
    let code = e["code"].as_i64();
    let text = [e["message"].as_str(), e["error_data"]["details"].as_str()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(": ");
    let what = match code {
        Some(c) => format!("{c} {text} (HTTP {status})"),
        None if text.is_empty() => format!("HTTP {status}"),
        None => format!("{text} (HTTP {status})"),
    };
    match code {
        Some(131047) => SendError::WindowClosed(what),
        Some(130429 | 131056 | 131000) => SendError::Retry(what),
        Some(131026 | 131030 | 131048 | 131049 | 131050 | 131051) => SendError::Permanent(what),
        Some(c) if (132000..133000).contains(&c) => SendError::Permanent(what),
        _ if status >= 500 || status == 429 || status == 408 => SendError::Retry(what),
        _ if status == 401 || status == 403 => SendError::Retry(what),
        Some(190) => SendError::Retry(what),
        _ => SendError::Permanent(what),
    }
}
