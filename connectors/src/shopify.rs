//! Shopify, through the GraphQL Admin API (`POST https://{shop}/admin/api/{version}/graphql.json`,
//! `X-Shopify-Access-Token`): the engine's [`Lookup`] port for order lookups and writes, and the
//! order webhooks' payloads (REST shape) turned into the same order values.
//!
//! - `find_order` by order name (`#10234`, `10234`) or by the customer's phone: Shopify has no
//!   phone filter on orders, so phone → `customers(query: "phone:…")` → their orders, newest
//!   first, matched on the order's, the customer's and the shipping address's phone (E.164).
//! - `confirm_order` (tag `cod_confirmed` and a note), `cancel_order` (with the reason),
//!   `tag_order`, `add_order_note`.
//! - Rate limits: a `THROTTLED` answer waits `(requested − available) / restoreRate` seconds
//!   and tries again; HTTP 429 honours `Retry-After`; both at most [`MAX_RETRIES`] times.
//! - Every request times out (default 5 s); then the lookup fails and the engine takes the
//!   flow's failure path (a person takes over).
//! - Reads are cached briefly (default 30 s); a write drops its order from the cache.
//!
//! Order values have the demo store's shape, so packs read them the same way: `id`, `name`,
//! `phone`, `customer_phone`, `shipping_phone`, `email`, `status`, `financial_status`,
//! `payment` (`cod` for cash on delivery), `total`, `currency`, `courier`,
//! `tracking_number`, `tracking_url`, `tags`, `note`, `created_at`, `cancelled_at`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{json, Value};
use switchyard_engine::ports::{Lookup, LookupError};
use switchyard_rules::entities::phone_pk;
use switchyard_rules::pack::LookupAction;

/// Retries after throttling before the lookup fails.
pub const MAX_RETRIES: u32 = 3;
/// The longest wait for throttling that is still worth it (a customer is waiting).
const MAX_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShopifyConfig {
    /// `https://my-shop.myshopify.com` (tests: a fake server on loopback).
    pub base_url: String,
    /// Admin API version, e.g. `2025-07`.
    pub api_version: String,
    pub access_token: String,
    pub timeout: Duration,
    /// How long a read is reused.
    pub cache_ttl: Duration,
}

impl ShopifyConfig {
    pub const DEFAULT_VERSION: &'static str = "2025-07";

    /// `shop` is the domain (`my-shop.myshopify.com`) or a URL.
    pub fn new(shop: &str, access_token: &str) -> ShopifyConfig {
        let base = if shop.starts_with("http://") || shop.starts_with("https://") {
            shop.trim_end_matches('/').to_string()
        } else {
            format!("https://{}", shop.trim_end_matches('/'))
        };
        ShopifyConfig {
            base_url: base,
            api_version: Self::DEFAULT_VERSION.into(),
            access_token: access_token.into(),
            timeout: Duration::from_secs(5),
            cache_ttl: Duration::from_secs(30),
        }
    }
}

pub struct Shopify {
    cfg: ShopifyConfig,
    http: reqwest::Client,
    cache: Mutex<HashMap<String, (Instant, Option<Value>)>>,
}

fn failed(m: impl Into<String>) -> LookupError {
    LookupError::Failed(m.into())
}

const ORDER_FIELDS: &str = "id name email phone createdAt cancelledAt cancelReason note tags \
    displayFinancialStatus displayFulfillmentStatus paymentGatewayNames \
    totalPriceSet { shopMoney { amount currencyCode } } \
    customer { id displayName phone } shippingAddress { phone name } \
    fulfillments { status trackingInfo { company number url } }";

fn digits(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_digit()).collect()
}

/// A phone as E.164 when it looks Pakistani, else `+digits`.
fn e164(s: &str) -> Option<String> {
    let d = digits(s);
    if d.len() < 7 {
        return None;
    }
    Some(phone_pk(s).unwrap_or_else(|| format!("+{d}")))
}

/// Whether a payment gateway name means cash on delivery.
fn is_cod(gateway: &str) -> bool {
    let g = gateway.to_ascii_lowercase();
    g.contains("cash on delivery") || g.contains("cash_on_delivery") || g == "cod"
}

/// A GraphQL `Order` node as an order value.
pub fn order_from_graphql(n: &Value) -> Value {
    let s = |v: &Value| v.as_str().map(String::from);
    let phone = s(&n["phone"]);
    let customer_phone = s(&n["customer"]["phone"]);
    let shipping_phone = s(&n["shippingAddress"]["phone"]);
    let tracking = n["fulfillments"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|f| f["trackingInfo"].as_array().into_iter().flatten())
        .next_back()
        .cloned()
        .unwrap_or(Value::Null);
    let gateways: Vec<String> = n["paymentGatewayNames"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| g.as_str().map(String::from))
        .collect();
    let status = if !n["cancelledAt"].is_null() {
        "cancelled".to_string()
    } else {
        n["displayFulfillmentStatus"]
            .as_str()
            .unwrap_or("unfulfilled")
            .to_ascii_lowercase()
    };
    json!({
        "id": n["id"],
        "name": n["name"],
        "email": n["email"],
        "phone": phone.clone().or(shipping_phone.clone()).or(customer_phone.clone()).as_deref().and_then(e164),
        "customer_phone": customer_phone.as_deref().and_then(e164),
        "shipping_phone": shipping_phone.as_deref().and_then(e164),
        "customer_name": n["customer"]["displayName"],
        "status": status,
        "financial_status": n["displayFinancialStatus"].as_str().map(str::to_ascii_lowercase),
        "payment": if gateways.iter().any(|g| is_cod(g)) { "cod" } else if gateways.is_empty() { "unknown" } else { "prepaid" },
        "total": n["totalPriceSet"]["shopMoney"]["amount"].as_str().and_then(|a| a.parse::<f64>().ok()),
        "currency": n["totalPriceSet"]["shopMoney"]["currencyCode"],
        "courier": tracking["company"],
        "tracking_number": tracking["number"],
        "tracking_url": tracking["url"],
        "tags": n["tags"],
        "note": n["note"],
        "created_at": n["createdAt"],
        "cancelled_at": n["cancelledAt"],
    })
}

/// An order webhook's body (REST shape) as an order value.
pub fn order_from_rest(o: &Value) -> Value {
    let s = |v: &Value| v.as_str().map(String::from);
    let phone = s(&o["phone"]);
    let customer_phone =
        s(&o["customer"]["phone"]).or(s(&o["customer"]["default_address"]["phone"]));
    let shipping_phone = s(&o["shipping_address"]["phone"]).or(s(&o["billing_address"]["phone"]));
    let f = o["fulfillments"]
        .as_array()
        .and_then(|f| f.last())
        .cloned()
        .unwrap_or(Value::Null);
    let gateways: Vec<String> = o["payment_gateway_names"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| g.as_str().map(String::from))
        .chain(s(&o["gateway"]))
        .collect();
    let status = if !o["cancelled_at"].is_null() {
        "cancelled".to_string()
    } else {
        o["fulfillment_status"]
            .as_str()
            .unwrap_or("unfulfilled")
            .to_string()
    };
    json!({
        "id": o["admin_graphql_api_id"].as_str().map(String::from).unwrap_or_else(|| format!("gid://shopify/Order/{}", o["id"])),
        "name": o["name"],
        "email": o["email"],
        "phone": phone.clone().or(shipping_phone.clone()).or(customer_phone.clone()).as_deref().and_then(e164),
        "customer_phone": customer_phone.as_deref().and_then(e164),
        "shipping_phone": shipping_phone.as_deref().and_then(e164),
        "customer_name": o["customer"]["first_name"].as_str().map(|f| format!("{f} {}", o["customer"]["last_name"].as_str().unwrap_or("")).trim().to_string()),
        "status": status,
        "financial_status": o["financial_status"],
        "payment": if gateways.iter().any(|g| is_cod(g)) { "cod" } else if gateways.is_empty() { "unknown" } else { "prepaid" },
        "total": o["total_price"].as_str().and_then(|a| a.parse::<f64>().ok()),
        "currency": o["currency"],
        "courier": f["tracking_company"],
        "tracking_number": f["tracking_number"],
        "tracking_url": f["tracking_url"],
        "tags": o["tags"].as_str().map(|t| t.split(',').map(str::trim).filter(|t| !t.is_empty()).collect::<Vec<_>>()),
        "note": o["note"],
        "created_at": o["created_at"],
        "cancelled_at": o["cancelled_at"],
    })
}

/// `X-Shopify-Hmac-Sha256` of a body, as Shopify signs it (for senders and tests).
pub fn webhook_signature(secret: &[u8], body: &[u8]) -> String {
    use base64::Engine as _;
    use hmac::{Hmac, Mac};
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Checks `X-Shopify-Hmac-Sha256`: base64 of HMAC-SHA256 of the raw body with the webhook
/// secret, in constant time. Check it before parsing anything.
pub fn webhook_signature_valid(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    use base64::Engine as _;
    use hmac::{Hmac, Mac};
    let Some(sig) = header.and_then(|h| {
        base64::engine::general_purpose::STANDARD
            .decode(h.trim())
            .ok()
    }) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// The engine event of an order webhook topic (`orders/create` → `order.created`).
pub fn event_of_topic(topic: &str) -> Option<&'static str> {
    Some(match topic {
        "orders/create" => "order.created",
        "orders/updated" => "order.updated",
        "orders/cancelled" => "order.cancelled",
        "orders/fulfilled" => "order.fulfilled",
        _ => return None,
    })
}

/// Shopify's `OrderCancelReason` for a customer's words: the customer cancelled.
const CANCEL_REASON: &str = "CUSTOMER";

impl Shopify {
    pub fn new(cfg: ShopifyConfig) -> Result<Shopify, LookupError> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(2)))
            .build()
            .map_err(|e| failed(format!("cannot build an HTTP client: {e}")))?;
        Ok(Shopify {
            cfg,
            http,
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn url(&self) -> String {
        format!(
            "{}/admin/api/{}/graphql.json",
            self.cfg.base_url, self.cfg.api_version
        )
    }

    /// One GraphQL call, waiting out throttling; the `data` of the answer.
    pub async fn graphql(&self, query: &str, variables: Value) -> Result<Value, LookupError> {
        let body = json!({ "query": query, "variables": variables });
        let mut attempt = 0;
        loop {
            let r = self
                .http
                .post(self.url())
                .header("X-Shopify-Access-Token", &self.cfg.access_token)
                .json(&body)
                .send()
                .await
                .map_err(|e| {
                    if e.is_timeout() {
                        failed(format!(
                            "Shopify did not answer within {:?}",
                            self.cfg.timeout
                        ))
                    } else {
                        failed(format!("Shopify is unreachable: {e}"))
                    }
                })?;
            let status = r.status();
            let retry_after = r
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok());
            let text = r
                .text()
                .await
                .map_err(|e| failed(format!("reading Shopify's answer: {e}")))?;
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let throttled = status.as_u16() == 429
                || v["errors"]
                    .as_array()
                    .is_some_and(|e| e.iter().any(|e| e["extensions"]["code"] == "THROTTLED"));
            if throttled {
                attempt += 1;
                if attempt > MAX_RETRIES {
                    return Err(failed("Shopify kept throttling the lookups"));
                }
                let cost = &v["extensions"]["cost"];
                let wait = retry_after.unwrap_or_else(|| {
                    let need = cost["requestedQueryCost"].as_f64().unwrap_or(100.0)
                        - cost["throttleStatus"]["currentlyAvailable"]
                            .as_f64()
                            .unwrap_or(0.0);
                    let rate = cost["throttleStatus"]["restoreRate"]
                        .as_f64()
                        .unwrap_or(50.0);
                    (need / rate.max(1.0)).max(0.05)
                });
                let wait = Duration::from_secs_f64(wait.clamp(0.0, MAX_WAIT.as_secs_f64()));
                tracing::info!(
                    wait_ms = wait.as_millis() as u64,
                    attempt,
                    "Shopify throttled a lookup; waiting"
                );
                tokio::time::sleep(wait).await;
                continue;
            }
            if status.as_u16() == 401 || status.as_u16() == 403 {
                return Err(failed(format!(
                    "Shopify refused the access token ({status}); check SHOPIFY_ACCESS_TOKEN and its scopes"
                )));
            }
            if !status.is_success() {
                return Err(failed(format!("Shopify answered {status}")));
            }
            if let Some(e) = v["errors"].as_array().filter(|e| !e.is_empty()) {
                return Err(failed(format!(
                    "Shopify: {}",
                    e.iter()
                        .filter_map(|e| e["message"].as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                )));
            }
            return Ok(v["data"].clone());
        }
    }

    fn cached(&self, key: &str) -> Option<Option<Value>> {
        let c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        c.get(key)
            .filter(|(at, _)| at.elapsed() < self.cfg.cache_ttl)
            .map(|(_, v)| v.clone())
    }

    fn remember(&self, key: String, v: Option<Value>) {
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if c.len() > 10_000 {
            c.clear();
        }
        c.insert(key, (Instant::now(), v));
    }

    /// Drops every cached answer that holds this order (alone, or in a phone's list).
    fn forget_order(&self, order: &Value) {
        let id = &order["id"];
        let holds = |v: &Value| {
            &v["id"] == id
                || v.as_array()
                    .is_some_and(|a| a.iter().any(|o| &o["id"] == id))
        };
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        c.retain(|_, (_, v)| !v.as_ref().is_some_and(holds));
    }

    /// The order with this name (`#10234` or `10234`).
    pub async fn order_by_name(&self, name: &str) -> Result<Option<Value>, LookupError> {
        let d = digits(name);
        let key = format!("name:{d}");
        if let Some(v) = self.cached(&key) {
            return Ok(v);
        }
        let q = format!(
            "query($q: String!) {{ orders(first: 5, query: $q, sortKey: CREATED_AT, reverse: true) {{ nodes {{ {ORDER_FIELDS} }} }} }}"
        );
        let data = self
            .graphql(&q, json!({ "q": format!("name:#{d}") }))
            .await?;
        let found = data["orders"]["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["name"].as_str().is_some_and(|x| digits(x) == d))
            .map(order_from_graphql);
        self.remember(key, found.clone());
        Ok(found)
    }

    /// The customer's orders, newest first, by their phone (E.164).
    pub async fn orders_by_phone(&self, phone: &str) -> Result<Vec<Value>, LookupError> {
        let Some(want) = e164(phone) else {
            return Ok(vec![]);
        };
        let q = format!(
            "query($q: String!) {{ customers(first: 5, query: $q) {{ nodes {{ id \
             orders(first: 10, sortKey: CREATED_AT, reverse: true) {{ nodes {{ {ORDER_FIELDS} }} }} }} }} }}"
        );
        let data = self
            .graphql(&q, json!({ "q": format!("phone:{want}") }))
            .await?;
        let mut orders: Vec<Value> = data["customers"]["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["orders"]["nodes"].as_array().cloned().unwrap_or_default())
            .map(|n| order_from_graphql(&n))
            .filter(|o| {
                ["phone", "customer_phone", "shipping_phone"]
                    .iter()
                    .any(|f| o[*f].as_str() == Some(want.as_str()))
            })
            .collect();
        orders.sort_by(|a, b| b["created_at"].as_str().cmp(&a["created_at"].as_str()));
        Ok(orders)
    }

    /// The orders a key names: the one with that name, or a phone's orders, newest first.
    /// A phone's orders are also remembered by name, for the lookup that follows a pick.
    pub async fn find_all(&self, key: &Value) -> Result<Vec<Value>, LookupError> {
        let k = match key {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Ok(vec![]),
        };
        let d = digits(&k);
        if d.is_empty() {
            return Ok(vec![]);
        }
        let is_phone = k.trim_start().starts_with('+') || d.len() >= 10;
        if !is_phone {
            return Ok(self.order_by_name(&k).await?.into_iter().collect());
        }
        let cache_key = format!("phone:{d}");
        if let Some(v) = self.cached(&cache_key) {
            return Ok(v.and_then(|v| v.as_array().cloned()).unwrap_or_default());
        }
        let orders = self.orders_by_phone(&k).await?;
        for o in &orders {
            if let Some(name) = o["name"].as_str() {
                self.remember(format!("name:{}", digits(name)), Some(o.clone()));
            }
        }
        self.remember(cache_key, Some(Value::Array(orders.clone())));
        Ok(orders)
    }

    /// An order by name or, for a phone number, the customer's newest order.
    pub async fn find(&self, key: &Value) -> Result<Option<Value>, LookupError> {
        Ok(self.find_all(key).await?.into_iter().next())
    }

    async fn add_tags(&self, order: &Value, tags: &[&str]) -> Result<(), LookupError> {
        let data = self
            .graphql(
                "mutation($id: ID!, $tags: [String!]!) { tagsAdd(id: $id, tags: $tags) { userErrors { field message } } }",
                json!({ "id": order["id"], "tags": tags }),
            )
            .await?;
        user_errors(&data["tagsAdd"])
    }

    async fn set_note(&self, order: &Value, note: &str) -> Result<(), LookupError> {
        let note = match order["note"].as_str().filter(|n| !n.is_empty()) {
            Some(old) => format!("{old}\n{note}"),
            None => note.to_string(),
        };
        let data = self
            .graphql(
                "mutation($input: OrderInput!) { orderUpdate(input: $input) { userErrors { field message } } }",
                json!({ "input": { "id": order["id"], "note": note } }),
            )
            .await?;
        user_errors(&data["orderUpdate"])
    }

    async fn cancel(&self, order: &Value, reason: Option<&str>) -> Result<(), LookupError> {
        let data = self
            .graphql(
                "mutation($id: ID!, $reason: OrderCancelReason!, $note: String) { \
                 orderCancel(orderId: $id, reason: $reason, refund: false, restock: true, notifyCustomer: false, staffNote: $note) { \
                 orderCancelUserErrors { field message } } }",
                json!({ "id": order["id"], "reason": CANCEL_REASON, "note": reason.map(|r| format!("Customer on WhatsApp: {r}")) }),
            )
            .await?;
        match data["orderCancel"]["orderCancelUserErrors"].as_array() {
            Some(e) if !e.is_empty() => Err(failed(format!(
                "Shopify did not cancel {}: {}",
                order["name"].as_str().unwrap_or("the order"),
                e.iter()
                    .filter_map(|e| e["message"].as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ))),
            _ => Ok(()),
        }
    }
}

fn user_errors(v: &Value) -> Result<(), LookupError> {
    match v["userErrors"].as_array() {
        Some(e) if !e.is_empty() => Err(failed(format!(
            "Shopify: {}",
            e.iter()
                .filter_map(|e| e["message"].as_str())
                .collect::<Vec<_>>()
                .join("; ")
        ))),
        _ => Ok(()),
    }
}

fn with_tag(order: &Value, tag: &str) -> Value {
    let mut o = order.clone();
    let tags = o
        .as_object_mut()
        .map(|m| m.entry("tags").or_insert_with(|| json!([])));
    if let Some(Value::Array(a)) = tags {
        if !a.iter().any(|t| t == tag) {
            a.push(json!(tag));
        }
    }
    o
}

#[async_trait]
impl Lookup for Shopify {
    async fn call(
        &self,
        _connector: &str,
        action: LookupAction,
        key: &Value,
        value: Option<&str>,
    ) -> Result<Option<Value>, LookupError> {
        if action == LookupAction::FindOrders {
            let mut all = self.find_all(key).await?;
            all.truncate(10);
            return Ok(Some(Value::Array(all)));
        }
        let Some(order) = self.find(key).await? else {
            return Ok(None);
        };
        let out = match action {
            LookupAction::FindOrder | LookupAction::FindOrders => return Ok(Some(order)),
            LookupAction::Fetch => {
                return Err(failed("`fetch` is for http connectors, not a store"))
            }
            LookupAction::ConfirmOrder => {
                self.add_tags(&order, &["cod_confirmed"]).await?;
                self.set_note(&order, "COD confirmed by the customer on WhatsApp")
                    .await?;
                let mut o = with_tag(&order, "cod_confirmed");
                o["confirmed"] = json!(true);
                o
            }
            LookupAction::CancelOrder => {
                self.cancel(&order, value).await?;
                let mut o = order.clone();
                o["status"] = json!("cancelled");
                o["cancel_reason"] = json!(value);
                o
            }
            LookupAction::TagOrder => {
                let t = value
                    .filter(|t| !t.trim().is_empty())
                    .ok_or_else(|| failed("tag_order needs a tag (`value`)"))?;
                self.add_tags(&order, &[t]).await?;
                with_tag(&order, t)
            }
            LookupAction::AddOrderNote => {
                let n = value
                    .filter(|t| !t.trim().is_empty())
                    .ok_or_else(|| failed("add_order_note needs the note (`value`)"))?;
                self.set_note(&order, n).await?;
                let mut o = order.clone();
                o["note"] = json!(n);
                o
            }
        };
        self.forget_order(&order);
        Ok(Some(out))
    }
}

/// Lookups by connector name: each of the pack's store connectors to its implementation, or
/// why it has none (its lookups then fail with that reason, and a person takes over).
pub struct Stores {
    by_name: HashMap<String, Result<std::sync::Arc<dyn Lookup>, String>>,
    fallback: Option<std::sync::Arc<crate::llm::LlmFallback>>,
}

impl Stores {
    pub fn new(by_name: HashMap<String, Result<std::sync::Arc<dyn Lookup>, String>>) -> Stores {
        Stores {
            by_name,
            fallback: None,
        }
    }

    /// With the classifier's language-model fallback.
    pub fn with_fallback(mut self, f: std::sync::Arc<crate::llm::LlmFallback>) -> Stores {
        self.fallback = Some(f);
        self
    }
}

#[async_trait]
impl Lookup for Stores {
    async fn call(
        &self,
        connector: &str,
        action: LookupAction,
        key: &Value,
        value: Option<&str>,
    ) -> Result<Option<Value>, LookupError> {
        match self.by_name.get(connector) {
            Some(Ok(l)) => l.call(connector, action, key, value).await,
            Some(Err(why)) => Err(failed(why.clone())),
            None => Err(failed(format!(
                "no store connector `{connector}` is configured"
            ))),
        }
    }

    async fn understand(
        &self,
        text: &str,
    ) -> Result<Option<switchyard_engine::ports::Understood>, LookupError> {
        match &self.fallback {
            Some(f) => f.understand(text).await,
            None => Ok(None),
        }
    }
}
