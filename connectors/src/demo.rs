//! The demo store: orders held in memory (a pack test's `fixtures`, or the demo's sample
//! orders), answering the same lookups as a real store connector.

use std::sync::Mutex;

use async_trait::async_trait;
use serde_json::{json, Map, Value};
use switchyard_engine::ports::{Lookup, LookupError};
use switchyard_rules::entities::phone_pk;
use switchyard_rules::pack::LookupAction;

#[derive(Debug, Default)]
pub struct DemoStore {
    orders: Mutex<Vec<Map<String, Value>>>,
    /// Actions answered as a store that did not answer (a pack test's `unavailable`).
    failing: Vec<LookupAction>,
    /// The classifier fallback's answers by message text (a pack test's `understood`).
    understood: std::collections::BTreeMap<String, String>,
}

fn digits(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_digit()).collect()
}

/// A phone in E.164 when it looks like a Pakistani mobile, else its digits.
fn phone_key(s: &str) -> String {
    phone_pk(s).unwrap_or_else(|| digits(s))
}

impl DemoStore {
    pub fn new(orders: Vec<Map<String, Value>>) -> DemoStore {
        DemoStore {
            orders: Mutex::new(orders),
            failing: Vec::new(),
            understood: Default::default(),
        }
    }

    /// The same store, answering as the classifier's fallback would: message text → intent.
    pub fn understanding(
        mut self,
        answers: std::collections::BTreeMap<String, String>,
    ) -> DemoStore {
        self.understood = answers;
        self
    }

    /// The same store, failing these actions as if it did not answer.
    pub fn failing(mut self, actions: Vec<LookupAction>) -> DemoStore {
        self.failing = actions;
        self
    }

    /// One more order (the newest): a shadow's store learns the orders the events carry.
    pub fn add(&self, order: Map<String, Value>) {
        self.orders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(order);
    }

    /// The orders as they are now (after confirmations and cancellations).
    pub fn orders(&self) -> Vec<Map<String, Value>> {
        self.orders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether an order answers to `key`: its name (or id) for an order number, one of its
    /// phones for a phone number.
    fn matches(o: &Map<String, Value>, key: &Value) -> bool {
        let k = match key {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return false,
        };
        let kd = digits(&k);
        if kd.is_empty() {
            return false;
        }
        let is_phone = k.trim_start().starts_with('+') || kd.len() >= 10;
        if is_phone {
            let want = phone_key(&k);
            ["phone", "customer_phone", "shipping_phone"]
                .iter()
                .filter_map(|f| o.get(*f).and_then(Value::as_str))
                .any(|p| phone_key(p) == want)
        } else {
            o.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| digits(n) == kd)
                || o.get("id").map(|v| digits(&v.to_string())) == Some(kd)
        }
    }
}

#[async_trait]
impl Lookup for DemoStore {
    async fn understand(
        &self,
        text: &str,
    ) -> Result<Option<switchyard_engine::ports::Understood>, LookupError> {
        Ok(self
            .understood
            .get(text.trim())
            .map(|intent| switchyard_engine::ports::Understood {
                intent: intent.clone(),
                confidence: 1.0,
                cached: false,
            }))
    }

    async fn call(
        &self,
        _connector: &str,
        action: LookupAction,
        key: &Value,
        value: Option<&str>,
    ) -> Result<Option<Value>, LookupError> {
        if self.failing.contains(&action) {
            return Err(LookupError::Failed(
                "the store did not answer (test fixture)".into(),
            ));
        }
        let mut orders = self.orders.lock().unwrap_or_else(|e| e.into_inner());
        if action == LookupAction::FindOrders {
            // Newest first: by `created_at` where orders have one (RFC 3339 in one offset
            // sorts as text), else later in the file first.
            let mut all: Vec<&Map<String, Value>> = orders
                .iter()
                .rev()
                .filter(|o| Self::matches(o, key))
                .collect();
            all.sort_by(|a, b| {
                let at = |o: &Map<String, Value>| {
                    o.get("created_at")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                };
                at(b).cmp(&at(a))
            });
            return Ok(Some(Value::Array(
                all.into_iter()
                    .take(10)
                    .cloned()
                    .map(Value::Object)
                    .collect(),
            )));
        }
        // The newest matching order.
        let Some(i) = orders.iter().rposition(|o| Self::matches(o, key)) else {
            return Ok(None);
        };
        let o = &mut orders[i];
        let add_tag = |o: &mut Map<String, Value>, t: &str| {
            let tags = o.entry("tags").or_insert_with(|| json!([]));
            if let Some(a) = tags.as_array_mut() {
                if !a.iter().any(|x| x == t) {
                    a.push(json!(t));
                }
            }
        };
        match action {
            LookupAction::FindOrder | LookupAction::FindOrders => {}
            LookupAction::Fetch => {
                return Err(LookupError::Failed(
                    "`fetch` is for http connectors, not a store".into(),
                ))
            }
            LookupAction::ConfirmOrder => {
                add_tag(o, "cod_confirmed");
                o.insert("confirmed".into(), json!(true));
            }
            LookupAction::CancelOrder => {
                o.insert("status".into(), json!("cancelled"));
                if let Some(r) = value {
                    o.insert("cancel_reason".into(), json!(r));
                }
            }
            LookupAction::TagOrder => {
                if let Some(t) = value {
                    add_tag(o, t);
                }
            }
            LookupAction::AddOrderNote => {
                if let Some(n) = value {
                    o.insert("note".into(), json!(n));
                }
            }
        }
        Ok(Some(Value::Object(o.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> DemoStore {
        DemoStore::new(vec![
            json!({"name": "#10234", "phone": "+923001234567", "status": "dispatched"})
                .as_object()
                .unwrap()
                .clone(),
            json!({"name": "#10300", "phone": "0300-1234567", "status": "pending"})
                .as_object()
                .unwrap()
                .clone(),
        ])
    }

    #[tokio::test]
    async fn finds_by_number_or_phone_newest_first() {
        let s = store();
        let by_no = s
            .call("store", LookupAction::FindOrder, &json!("10234"), None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(by_no["status"], "dispatched");
        let by_hash = s
            .call("store", LookupAction::FindOrder, &json!("#10234"), None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(by_hash["name"], "#10234");
        let by_phone = s
            .call(
                "store",
                LookupAction::FindOrder,
                &json!("+923001234567"),
                None,
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(by_phone["name"], "#10300", "the newest order of that phone");
        assert_eq!(
            s.call("store", LookupAction::FindOrder, &json!("99999"), None)
                .await
                .unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn find_orders_lists_a_phones_orders_newest_first() {
        let o = |v: serde_json::Value| v.as_object().unwrap().clone();
        let s = DemoStore::new(vec![
            o(
                json!({"name": "#2", "phone": "+923001234567", "created_at": "2026-11-20T10:00:00+05:00"}),
            ),
            o(
                json!({"name": "#1", "phone": "0300-1234567", "created_at": "2026-11-02T10:00:00+05:00"}),
            ),
            o(json!({"name": "#9", "phone": "+923009999999"})),
            o(json!({"name": "#3", "phone": "+923001234567"})),
        ]);
        let names = |v: serde_json::Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|o| o["name"].as_str().unwrap().to_string())
                .collect()
        };
        let all = s
            .call(
                "store",
                LookupAction::FindOrders,
                &json!("+923001234567"),
                None,
            )
            .await
            .unwrap()
            .unwrap();
        // Dated orders newest first, then the undated by their place in the file.
        assert_eq!(names(all), ["#2", "#1", "#3"]);
        let none = s
            .call(
                "store",
                LookupAction::FindOrders,
                &json!("+923330000000"),
                None,
            )
            .await
            .unwrap();
        assert_eq!(none, Some(json!([])), "nothing found is an empty list");
        let by_name = s
            .call("store", LookupAction::FindOrders, &json!("#9"), None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(names(by_name), ["#9"]);
    }

    #[tokio::test]
    async fn confirm_and_cancel_change_the_order() {
        let s = store();
        s.call("store", LookupAction::ConfirmOrder, &json!("#10234"), None)
            .await
            .unwrap();
        s.call(
            "store",
            LookupAction::CancelOrder,
            &json!("10300"),
            Some("changed my mind"),
        )
        .await
        .unwrap();
        let o = s.orders();
        assert_eq!(o[0]["tags"], json!(["cod_confirmed"]));
        assert_eq!(o[1]["status"], "cancelled");
        assert_eq!(o[1]["cancel_reason"], "changed my mind");
    }
}
