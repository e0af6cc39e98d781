//! The ports: how the engine reaches the outside world. Implementations live in
//! `connectors/` (WhatsApp, web chat, Shopify, the sandbox channel, the demo store); the engine
//! knows only these traits.

use async_trait::async_trait;
use serde_json::Value;
use switchyard_rules::pack::LookupAction;

use crate::model::Outbound;

/// Why a send failed, and what to do about it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SendError {
    /// Try again later (5xx, timeouts, rate limits).
    #[error("temporary: {0}")]
    Retry(String),
    /// Never retry (invalid number, blocked, template rejected): recorded on the message.
    #[error("permanent: {0}")]
    Permanent(String),
    /// The channel refused a free-form message because the customer service window is
    /// closed (WhatsApp 131047). Never retried: the message is failed and the conversation
    /// goes to a human, who can send an approved template.
    #[error("window closed: {0}")]
    WindowClosed(String),
    /// The request may have reached the channel, but no answer says so (a timeout after it
    /// was sent, a connection cut mid-answer). Never sent again automatically: the row and
    /// the message become `unknown`, for a person (or a rule) to decide.
    #[error("outcome unknown: {0}")]
    Unknown(String),
}

/// A channel that sends messages (WhatsApp Cloud API, web chat, the sandbox).
#[async_trait]
pub trait Channel: Send + Sync {
    /// Sends one message; returns the provider's message id.
    async fn send(&self, message: &Outbound) -> Result<String, SendError>;

    /// The bytes of a customer's photo, voice note or document on `channel` (WhatsApp gives
    /// only a media id, valid for days, whose download URL lasts minutes). `Ok(None)`: this
    /// channel keeps no media to fetch.
    async fn fetch_media(
        &self,
        _channel: &str,
        _media_id: &str,
    ) -> Result<Option<Fetched>, MediaError> {
        Ok(None)
    }
}

/// Media bytes as the channel gave them, checked against what it declared.
#[derive(Debug, Clone, PartialEq)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub mime_type: String,
}

/// Why media could not be fetched.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MediaError {
    /// Try again later (the network, a 5xx, a rate limit).
    #[error("temporary: {0}")]
    Retry(String),
    /// Never (expired or unknown id, too large, a type we do not keep, a wrong checksum).
    #[error("{0}")]
    Refused(String),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LookupError {
    /// The connector could not answer (down, timeout, credentials): the conversation goes to a
    /// human with a note.
    #[error("{0}")]
    Failed(String),
    /// The `by` expression gave nothing to look up (no order number, no phone): the
    /// conversation goes to a human with a note, without the store's apology.
    #[error("no key to look up")]
    NoKey,
}

/// Store and lookup connectors (orders). `Ok(None)` means "nothing found".
#[async_trait]
pub trait Lookup: Send + Sync {
    async fn call(
        &self,
        connector: &str,
        action: LookupAction,
        key: &Value,
        value: Option<&str>,
    ) -> Result<Option<Value>, LookupError>;

    /// The pack's language-model fallback (`settings.classifier.fallback`), asked for the
    /// intent of a message the classifier left below its threshold. Only the message text
    /// is sent. `Ok(None)`: no fallback configured, over its budget, or no intent decided.
    async fn understand(&self, _text: &str) -> Result<Option<Understood>, LookupError> {
        Ok(None)
    }
}

/// The fallback's decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Understood {
    /// One of the pack's intents.
    pub intent: String,
    pub confidence: f32,
    /// Answered from the cache (the same text was asked before).
    pub cached: bool,
}

/// Outbound webhooks (`webhook` action). Delivery with retries is the connector's job.
#[async_trait]
pub trait Notifier: Send + Sync {
    async fn notify(&self, connector: &str, body: &Value) -> Result<(), LookupError>;
}
