//! Outbound webhooks: the engine's [`Notifier`] port. Each `webhook` connector posts its JSON
//! body to a URL, signed with HMAC-SHA256 of the body (`X-Switchyard-Signature:
//! sha256=<hex>`) when it has a secret. Delivery runs from the outbox, which retries with
//! backoff; a circuit breaker per endpoint stops calling one that keeps failing (after
//! [`BREAK_AFTER`] failures in a row it fails fast for [`OPEN_FOR`], then lets one call
//! through to see whether it is back).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;
use switchyard_engine::ports::{LookupError, Notifier};

/// Consecutive failures that open an endpoint's circuit.
pub const BREAK_AFTER: u32 = 5;
/// How long an open circuit fails fast.
pub const OPEN_FOR: Duration = Duration::from_secs(30);

/// Where a connector posts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    pub secret: Option<String>,
}

/// What a connector's deliveries do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Http(Endpoint),
    /// Printed on stdout, like the sandbox channel (`serve` without the URL configured).
    Print,
    /// Fail with this reason.
    Missing(String),
}

#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

pub struct Webhooks {
    endpoints: HashMap<String, Target>,
    http: reqwest::Client,
    breakers: Mutex<HashMap<String, Breaker>>,
}

/// `sha256=<hex of HMAC-SHA256(secret, body)>` (the scheme WhatsApp signs with, too).
pub fn signature(secret: &str, body: &[u8]) -> String {
    crate::whatsapp::signature(secret.as_bytes(), body)
}

impl Webhooks {
    /// `endpoints`: what each connector's deliveries do.
    pub fn new(endpoints: HashMap<String, Target>, timeout: Duration) -> Result<Webhooks, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(Webhooks {
            endpoints,
            http,
            breakers: Mutex::new(HashMap::new()),
        })
    }

    fn record(&self, connector: &str, ok: bool) {
        let mut b = self.breakers.lock().unwrap_or_else(|e| e.into_inner());
        let b = b.entry(connector.to_string()).or_default();
        if ok {
            *b = Breaker::default();
        } else {
            b.failures += 1;
            if b.failures >= BREAK_AFTER {
                b.open_until = Some(Instant::now() + OPEN_FOR);
                tracing::warn!(
                    connector,
                    failures = b.failures,
                    "webhook endpoint keeps failing; circuit open"
                );
            }
        }
    }

    fn open(&self, connector: &str) -> bool {
        let b = self.breakers.lock().unwrap_or_else(|e| e.into_inner());
        b.get(connector)
            .and_then(|b| b.open_until)
            .is_some_and(|t| Instant::now() < t)
    }
}

#[async_trait]
impl Notifier for Webhooks {
    async fn notify(&self, connector: &str, body: &Value) -> Result<(), LookupError> {
        let ep = match self.endpoints.get(connector) {
            Some(Target::Http(ep)) => ep,
            Some(Target::Print) => {
                println!("[sandbox webhook → {connector}] {body}");
                return Ok(());
            }
            Some(Target::Missing(why)) => return Err(LookupError::Failed(why.clone())),
            None => {
                return Err(LookupError::Failed(format!(
                    "no webhook connector `{connector}` is configured"
                )))
            }
        };
        if self.open(connector) {
            return Err(LookupError::Failed(format!(
                "`{connector}` failed {BREAK_AFTER} times in a row; not called for {} s",
                OPEN_FOR.as_secs()
            )));
        }
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        let mut rb = self
            .http
            .post(&ep.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(s) = &ep.secret {
            rb = rb.header("X-Switchyard-Signature", signature(s, &bytes));
        }
        let r = rb.body(bytes).send().await;
        let outcome = match r {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("`{connector}` answered {}", r.status())),
            Err(e) if e.is_timeout() => Err(format!("`{connector}` did not answer in time")),
            // Without the URL: for Slack and the like the URL is the credential, and this
            // message reaches the audit and the logs.
            Err(e) => Err(format!("`{connector}` is unreachable: {}", e.without_url())),
        };
        self.record(connector, outcome.is_ok());
        outcome.map_err(LookupError::Failed)
    }
}
