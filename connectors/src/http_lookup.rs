//! Generic HTTP lookups declared in the pack (`type: http`): an OMS or a courier's tracking API
//! (TCS, Leopards, PostEx…). `lookup: { connector, action: fetch, by: KEY, as: NAME }` fills
//! `{{key}}` (URL-encoded in the URL, JSON-escaped in the body) and `{{value}}`, sends the
//! headers from the environment variables the pack names, and binds the answer's fields picked
//! by JSON pointers. Timeouts and 5xx are retried; 404, or an answer where no pointer finds
//! anything, is "nothing found"; answers are cached for the connector's `cache` time.
//!
//! A key is what a customer typed: it is percent-encoded completely (`.` too), and a URL whose
//! path it would change (`..`, `%2e%2e`) is never requested; redirects are followed only on
//! the same origin (the pack's secret headers never go to another host); an answer over
//! [`MAX_ANSWER`] bytes is refused.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Map, Value};
use switchyard_engine::ports::{Lookup, LookupError};
use switchyard_rules::pack::{HttpLookupRt, LookupAction};

/// Answers by `(key, value)`, with when they were fetched.
type Cache = HashMap<(String, String), (Instant, Option<Value>)>;

pub struct HttpLookup {
    name: String,
    rt: HttpLookupRt,
    /// Header name → value, read from the environment at start.
    headers: Vec<(String, String)>,
    http: reqwest::Client,
    cache: Mutex<Cache>,
}

fn failed(m: impl Into<String>) -> LookupError {
    LookupError::Failed(m.into())
}

/// `t` with `{{key}}` and `{{value}}` replaced through `esc`.
fn fill(t: &str, key: &str, value: &str, esc: impl Fn(&str) -> String) -> String {
    let mut out = String::new();
    let mut rest = t;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(j) = after.find("}}") else {
            out.push_str(&rest[i..]);
            return out;
        };
        match after[..j].trim() {
            "key" => out.push_str(&esc(key)),
            "value" => out.push_str(&esc(value)),
            other => {
                out.push_str("{{");
                out.push_str(other);
                out.push_str("}}");
            }
        }
        rest = &after[j + 2..];
    }
    out.push_str(rest);
    out
}

/// The largest answer read, in bytes.
pub const MAX_ANSWER: usize = 1 << 20;

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The path of a URL as written (between the authority and `?`/`#`).
fn raw_path(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(url, |i| &url[i + 3..]);
    let path = after_scheme.find('/').map_or("", |i| &after_scheme[i..]);
    let end = path.find(['?', '#']).unwrap_or(path.len());
    &path[..end]
}

fn json_escape(s: &str) -> String {
    let q = serde_json::to_string(s).unwrap_or_default();
    q[1..q.len().saturating_sub(1)].to_string()
}

impl HttpLookup {
    /// `env` reads the header variables; a missing one is an error naming it.
    pub fn new(
        name: &str,
        rt: HttpLookupRt,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<HttpLookup, String> {
        let mut headers = Vec::new();
        for (h, var) in &rt.headers {
            let v = env(var).filter(|v| !v.is_empty()).ok_or_else(|| {
                format!(
                    "the http connector `{name}` needs {var} (its `{h}` header) in the environment"
                )
            })?;
            headers.push((h.clone(), v));
        }
        // Redirects only within the same origin: the pack's headers are its credentials.
        let redirects = reqwest::redirect::Policy::custom(|a| {
            let same = a.previous().first().is_some_and(|first| {
                first.scheme() == a.url().scheme()
                    && first.host_str() == a.url().host_str()
                    && first.port_or_known_default() == a.url().port_or_known_default()
            });
            if same && a.previous().len() < 5 {
                a.follow()
            } else {
                a.stop()
            }
        });
        let http = reqwest::Client::builder()
            .timeout(rt.timeout)
            .redirect(redirects)
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(HttpLookup {
            name: name.into(),
            rt,
            headers,
            http,
            cache: Mutex::new(HashMap::new()),
        })
    }

    async fn once(&self, key: &str, value: &str) -> Result<Option<Value>, (bool, String)> {
        let url = fill(&self.rt.url, key, value, url_encode);
        // A key must not move the request elsewhere on the server (`..` segments, which URL
        // parsing resolves even when percent-encoded): such a key finds nothing.
        match reqwest::Url::parse(&url) {
            Ok(u) if u.path() == raw_path(&url) || raw_path(&url).is_empty() => {}
            _ => return Ok(None),
        }
        let mut rb = if self.rt.method == "POST" {
            self.http.post(&url)
        } else {
            self.http.get(&url)
        };
        for (h, v) in &self.headers {
            rb = rb.header(h, v);
        }
        if let Some(b) = &self.rt.body {
            rb = rb
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(fill(b, key, value, json_escape));
        }
        let name = &self.name;
        let r = rb.send().await.map_err(|e| {
            if e.is_timeout() {
                (
                    true,
                    format!("`{name}` did not answer within {:?}", self.rt.timeout),
                )
            } else {
                // Without the URL (it may carry the customer's key or a credential).
                (
                    true,
                    format!("`{name}` is unreachable: {}", e.without_url()),
                )
            }
        })?;
        let status = r.status();
        if status.as_u16() == 404 {
            return Ok(None);
        }
        if status.is_server_error() {
            return Err((true, format!("`{name}` answered {status}")));
        }
        if !status.is_success() {
            return Err((false, format!("`{name}` answered {status}")));
        }
        if r.content_length().is_some_and(|n| n > MAX_ANSWER as u64) {
            return Err((
                false,
                format!("`{name}` answered more than {MAX_ANSWER} bytes"),
            ));
        }
        let mut r = r;
        let mut bytes = Vec::new();
        while let Some(chunk) = r.chunk().await.map_err(|e| {
            (
                true,
                format!("`{name}` broke off its answer: {}", e.without_url()),
            )
        })? {
            bytes.extend_from_slice(&chunk);
            if bytes.len() > MAX_ANSWER {
                return Err((
                    false,
                    format!("`{name}` answered more than {MAX_ANSWER} bytes"),
                ));
            }
        }
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| (false, format!("`{name}` did not answer JSON: {e}")))?;
        let mut out = Map::new();
        for (field, pointer) in &self.rt.map {
            out.insert(
                field.clone(),
                v.pointer(pointer).cloned().unwrap_or(Value::Null),
            );
        }
        Ok(out
            .values()
            .any(|x| !x.is_null())
            .then_some(Value::Object(out)))
    }
}

#[async_trait]
impl Lookup for HttpLookup {
    async fn call(
        &self,
        _connector: &str,
        action: LookupAction,
        key: &Value,
        value: Option<&str>,
    ) -> Result<Option<Value>, LookupError> {
        if action != LookupAction::Fetch {
            return Err(failed(format!(
                "`{}` is an http connector: use `action: fetch`",
                self.name
            )));
        }
        let key = match key {
            Value::String(s) => s.clone(),
            Value::Null => return Ok(None),
            other => other.to_string(),
        };
        let value = value.unwrap_or("").to_string();
        let ck = (key.clone(), value.clone());
        if let Some(ttl) = self.rt.cache {
            let c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, v)) = c.get(&ck).filter(|(at, _)| at.elapsed() < ttl) {
                return Ok(v.clone());
            }
        }
        let mut attempt = 0;
        let found = loop {
            match self.once(&key, &value).await {
                Ok(v) => break v,
                Err((retry, m)) if retry && attempt < self.rt.retries => {
                    attempt += 1;
                    tracing::info!(connector = %self.name, attempt, error = %m, "http lookup failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * attempt as u64)).await;
                }
                Err((_, m)) => return Err(failed(m)),
            }
        };
        if self.rt.cache.is_some() {
            let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if c.len() > 10_000 {
                c.clear();
            }
            c.insert(ck, (Instant::now(), found.clone()));
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_completely() {
        assert_eq!(url_encode("CN 12/.."), "CN%2012%2F%2E%2E");
        assert_eq!(raw_path("https://x.test:8/a/b%2E?q=1#f"), "/a/b%2E");
        assert_eq!(raw_path("https://x.test"), "");
    }
}
