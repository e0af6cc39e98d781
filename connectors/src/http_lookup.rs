//! Generic HTTP lookups declared in the pack (`type: http`): an OMS or a courier's tracking API
//! (TCS, Leopards, PostEx…). `lookup: { connector, action: fetch, by: KEY, as: NAME }` fills
//! `{{key}}` (URL-encoded in the URL, JSON-escaped in the body) and `{{value}}`, sends the
//! headers from the environment variables the pack names, and binds the answer's fields picked
//! by JSON pointers. Timeouts and 5xx are retried; 404, or an answer where no pointer finds
//! anything, is "nothing found"; answers are cached for the connector's `cache` time.

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

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
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
        let http = reqwest::Client::builder()
            .timeout(rt.timeout)
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
                (true, format!("`{name}` is unreachable: {e}"))
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
        let v: Value = r
            .json()
            .await
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
