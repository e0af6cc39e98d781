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
use switchyard_engine::ports::{Channel, Fetched, MediaError, SendError};

use crate::whatsapp::send_request;

/// Most bytes of one media file kept: WhatsApp's own limit for audio and video (images are at
/// most 5 MB); larger documents are refused with why.
pub const MAX_MEDIA_BYTES: usize = 16 * 1024 * 1024;

/// Whether a media type is one we keep and serve: what WhatsApp delivers for images, stickers,
/// audio, video and common documents.
pub fn media_type_kept(mime: &str) -> bool {
    let m = mime
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    m.starts_with("image/")
        || m.starts_with("audio/")
        || m.starts_with("video/")
        || matches!(
            m.as_str(),
            "application/pdf"
                | "text/plain"
                | "application/msword"
                | "application/vnd.ms-excel"
                | "application/vnd.ms-powerpoint"
                | "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
                | "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
                | "application/vnd.openxmlformats-officedocument.presentationml.presentation"
        )
}

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

    /// A customer's media: `GET /{media-id}` gives a short-lived URL, its type, size and
    /// checksum; the bytes come from that URL with the same token. Refused (for good): an
    /// unknown or expired id, a type we do not keep, more than [`MAX_MEDIA_BYTES`], bytes that
    /// do not match the checksum. Retried: no connection, timeouts, 5xx, 429, auth errors.
    pub async fn fetch_media(&self, media_id: &str) -> Result<Fetched, MediaError> {
        // The id comes from a webhook: a path segment, never a path.
        if media_id.is_empty()
            || media_id.len() > 128
            || !media_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(MediaError::Refused(format!("not a media id: {media_id:?}")));
        }
        // The number's id is digits: nothing to encode.
        let info_url = format!(
            "{}/{}/{media_id}?phone_number_id={}",
            self.cfg.base_url.trim_end_matches('/'),
            self.cfg.version.trim_matches('/'),
            self.cfg.phone_number_id,
        );
        let net = |e: reqwest::Error| MediaError::Retry(format!("the Graph API: {e}"));
        let resp = self
            .http
            .get(&info_url)
            .bearer_auth(&self.cfg.access_token)
            .send()
            .await
            .map_err(net)?;
        let st = resp.status();
        let info: Value = resp.json().await.unwrap_or(Value::Null);
        if !st.is_success() {
            let why = info["error"]["message"]
                .as_str()
                .unwrap_or("no reason given");
            return Err(
                if st.is_server_error()
                    || st.as_u16() == 429
                    || st.as_u16() == 401
                    || st.as_u16() == 403
                {
                    MediaError::Retry(format!("media {media_id}: HTTP {st}: {why}"))
                } else {
                    MediaError::Refused(format!(
                        "media {media_id} is unknown or expired: HTTP {st}: {why}"
                    ))
                },
            );
        }
        let mime = info["mime_type"].as_str().unwrap_or("").to_string();
        if !media_type_kept(&mime) {
            return Err(MediaError::Refused(format!(
                "media of type `{mime}` is not kept"
            )));
        }
        let size = info["file_size"]
            .as_u64()
            .or_else(|| info["file_size"].as_str().and_then(|s| s.parse().ok()));
        if size.is_some_and(|n| n as usize > MAX_MEDIA_BYTES) {
            return Err(MediaError::Refused(format!(
                "media of {} bytes is larger than the {MAX_MEDIA_BYTES} kept",
                size.unwrap_or(0)
            )));
        }
        let Some(url) = info["url"]
            .as_str()
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
        else {
            return Err(MediaError::Retry(format!(
                "media {media_id}: the Graph API gave no URL"
            )));
        };
        let mut resp = self
            .http
            .get(url)
            .bearer_auth(&self.cfg.access_token)
            .send()
            .await
            .map_err(net)?;
        let st = resp.status();
        if !st.is_success() {
            // The URL lasts minutes: an expired one is fetched again through its id.
            return Err(MediaError::Retry(format!(
                "downloading media {media_id}: HTTP {st}"
            )));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(net)? {
            if bytes.len() + chunk.len() > MAX_MEDIA_BYTES {
                return Err(MediaError::Refused(format!(
                    "media {media_id} is larger than the {MAX_MEDIA_BYTES} bytes kept"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        if let Some(want) = info["sha256"].as_str().filter(|s| !s.is_empty()) {
            use base64::Engine as _;
            use sha2::Digest;
            let got = sha2::Sha256::digest(&bytes);
            let hex = hex::encode(got);
            let b64 = base64::engine::general_purpose::STANDARD.encode(got);
            if !want.eq_ignore_ascii_case(&hex) && want != b64 {
                return Err(MediaError::Refused(format!(
                    "media {media_id}: the bytes do not match their SHA-256"
                )));
            }
        }
        Ok(Fetched {
            bytes,
            mime_type: mime,
        })
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
    async fn fetch_media(
        &self,
        _channel: &str,
        media_id: &str,
    ) -> Result<Option<Fetched>, MediaError> {
        CloudApi::fetch_media(self, media_id).await.map(Some)
    }

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
