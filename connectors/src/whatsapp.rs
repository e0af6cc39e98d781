//! WhatsApp Cloud API payloads: the webhook handshake and signature, inbound notifications
//! normalised into engine events, and outbound send requests. No HTTP here: the route is in
//! the api crate (`POST /webhooks/whatsapp`), the sending client in [`crate::cloud_api`]; the
//! channel's limits are `switchyard_rules::channel::WHATSAPP`.

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use switchyard_engine::model::{Inbound, Outbound};

/// The answer to Meta's verification handshake (`GET /webhooks/whatsapp`): the challenge when
/// `hub.mode` is `subscribe` and the token matches, else `None` (answer 403).
pub fn handshake(
    mode: Option<&str>,
    token: Option<&str>,
    challenge: Option<&str>,
    expected_token: &str,
) -> Option<String> {
    let token_ok = token.is_some_and(|t| constant_time_eq(t.as_bytes(), expected_token.as_bytes()));
    (mode == Some("subscribe") && token_ok && !expected_token.is_empty())
        .then(|| challenge.unwrap_or("").to_string())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // Same length first (length is not secret); then every byte, without an early exit.
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The `X-Hub-Signature-256` value Meta sends for `body`: `sha256=<hex HMAC-SHA256>` (used by
/// `switchyard replay` to sign what it posts).
pub fn signature(app_secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length: this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(app_secret).expect("HMAC accepts any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body with the app secret>`,
/// in constant time. Check it before parsing anything.
pub fn signature_valid(app_secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(app_secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// The engine channel of each business number: the first number is `whatsapp`, every other
/// `whatsapp:<phone_number_id>` — so a customer who writes to two brands has two
/// conversations, each answered from its own number.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Numbers {
    ids: Vec<String>,
}

impl Numbers {
    /// `ids` in configuration order; the first is the primary number.
    pub fn new(ids: Vec<String>) -> Numbers {
        Numbers { ids }
    }

    /// The channel of `phone_number_id`; `whatsapp` for the primary number and for numbers
    /// not configured (one number, or a payload without metadata).
    pub fn channel(&self, phone_number_id: Option<&str>) -> String {
        match phone_number_id {
            Some(id) if self.ids.iter().skip(1).any(|x| x == id) => format!("whatsapp:{id}"),
            _ => "whatsapp".into(),
        }
    }

    /// Puts every message of `n` on its number's channel.
    pub fn assign(&self, n: &mut Notification) {
        for m in &mut n.messages {
            if let Inbound::Message {
                channel, payload, ..
            } = m
            {
                *channel = self.channel(payload["phone_number_id"].as_str());
            }
        }
    }
}

/// A delivery status of a message we sent.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusUpdate {
    /// The `wamid` of our message.
    pub provider_id: String,
    /// `sent`, `delivered`, `read` or `failed`.
    pub status: String,
    pub recipient: Option<String>,
    pub timestamp: Option<i64>,
    /// `(code, title)` of the first error, for `failed`.
    pub error: Option<(i64, String)>,
    pub phone_number_id: Option<String>,
}

/// What one webhook POST carried.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Notification {
    pub messages: Vec<Inbound>,
    pub statuses: Vec<StatusUpdate>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParseError {
    #[error("the body is not JSON: {0}")]
    Json(String),
    #[error("not a WhatsApp Business Account notification (object = {0:?})")]
    NotWhatsApp(Option<String>),
}

fn s(v: &Value) -> Option<String> {
    v.as_str().map(String::from)
}

/// Normalises a notification: every entry, change, message and status. Unknown fields are
/// kept (in each message's payload); unknown message types become `unsupported` messages,
/// so a person sees them; other change fields (template status, quality …) are ignored.
pub fn parse(body: &[u8]) -> Result<Notification, ParseError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| ParseError::Json(e.to_string()))?;
    let object = v.get("object").and_then(Value::as_str);
    if object != Some("whatsapp_business_account") {
        return Err(ParseError::NotWhatsApp(object.map(String::from)));
    }
    let mut out = Notification::default();
    for entry in v["entry"].as_array().into_iter().flatten() {
        for change in entry["changes"].as_array().into_iter().flatten() {
            if change["field"].as_str().is_some_and(|f| f != "messages") {
                continue;
            }
            let value = &change["value"];
            let phone_number_id = s(&value["metadata"]["phone_number_id"]);
            let contacts = value["contacts"].as_array().cloned().unwrap_or_default();
            for m in value["messages"].as_array().into_iter().flatten() {
                if let Some(msg) = message(m, &contacts, phone_number_id.as_deref()) {
                    out.messages.push(msg);
                }
            }
            for st in value["statuses"].as_array().into_iter().flatten() {
                let Some(id) = s(&st["id"]) else { continue };
                let err = &st["errors"][0];
                out.statuses.push(StatusUpdate {
                    provider_id: id,
                    status: s(&st["status"]).unwrap_or_default(),
                    recipient: s(&st["recipient_id"]),
                    timestamp: st["timestamp"].as_str().and_then(|t| t.parse().ok()),
                    error: err["code"]
                        .as_i64()
                        .map(|c| (c, s(&err["title"]).unwrap_or_default())),
                    phone_number_id: phone_number_id.clone(),
                });
            }
        }
    }
    Ok(out)
}

fn message(m: &Value, contacts: &[Value], phone_number_id: Option<&str>) -> Option<Inbound> {
    let from = s(&m["from"])?;
    let id = s(&m["id"])?;
    let name = contacts
        .iter()
        .find(|c| c["wa_id"].as_str() == Some(from.as_str()))
        .and_then(|c| s(&c["profile"]["name"]));
    let ty = m["type"].as_str().unwrap_or("unsupported");
    let (kind, text, choice) = match ty {
        "text" => ("text", s(&m["text"]["body"]).unwrap_or_default(), None),
        "interactive" => {
            let i = &m["interactive"];
            match i["type"].as_str() {
                Some("button_reply") => (
                    "button",
                    s(&i["button_reply"]["title"]).unwrap_or_default(),
                    s(&i["button_reply"]["id"]),
                ),
                Some("list_reply") => (
                    "list",
                    s(&i["list_reply"]["title"]).unwrap_or_default(),
                    s(&i["list_reply"]["id"]),
                ),
                _ => ("unsupported", String::new(), None),
            }
        }
        // A template's quick reply: the payload is what the template's button carries.
        "button" => (
            "button",
            s(&m["button"]["text"]).unwrap_or_default(),
            s(&m["button"]["payload"]),
        ),
        "image" | "video" | "audio" | "document" | "sticker" => {
            ("media", s(&m[ty]["caption"]).unwrap_or_default(), None)
        }
        "location" => {
            let l = &m["location"];
            let text = [s(&l["name"]), s(&l["address"])]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(", ");
            ("location", text, None)
        }
        "contacts" => {
            let names: Vec<String> = m["contacts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| s(&c["name"]["formatted_name"]))
                .collect();
            ("contacts", names.join(", "), None)
        }
        "reaction" => (
            "reaction",
            s(&m["reaction"]["emoji"]).unwrap_or_default(),
            None,
        ),
        "order" => ("order", s(&m["order"]["text"]).unwrap_or_default(), None),
        _ => ("unsupported", String::new(), None),
    };
    Some(Inbound::Message {
        channel: "whatsapp".into(),
        phone: Some(format!("+{from}")),
        from,
        name,
        provider_id: id,
        kind: kind.into(),
        text,
        choice,
        payload: json!({ "type": ty, "message": m, "phone_number_id": phone_number_id }),
    })
}

/// The Cloud API request body (`POST /{version}/{phone_number_id}/messages`) for a message.
pub fn send_request(o: &Outbound) -> Value {
    let to = if o.to.starts_with('+') {
        o.to.clone()
    } else {
        format!("+{}", o.to)
    };
    let base = json!({ "messaging_product": "whatsapp", "recipient_type": "individual", "to": to });
    let mut req = base.as_object().cloned().unwrap_or_default();
    if let Some(t) = &o.template {
        let mut components = vec![json!({
            "type": "body",
            "parameters": t.params.iter().map(|p| json!({ "type": "text", "text": p })).collect::<Vec<_>>(),
        })];
        for (i, b) in t.buttons.iter().enumerate() {
            components.push(json!({
                "type": "button", "sub_type": "quick_reply", "index": i.to_string(),
                "parameters": [ { "type": "payload", "payload": b } ],
            }));
        }
        req.insert("type".into(), json!("template"));
        req.insert(
            "template".into(),
            json!({ "name": t.name, "language": { "policy": "deterministic", "code": t.language }, "components": components }),
        );
    } else if !o.buttons.is_empty() {
        req.insert("type".into(), json!("interactive"));
        req.insert(
            "interactive".into(),
            json!({
                "type": "button",
                "body": { "text": o.text },
                "action": { "buttons": o.buttons.iter().map(|(id, title)| json!({ "type": "reply", "reply": { "id": id, "title": title } })).collect::<Vec<_>>() },
            }),
        );
    } else if let Some(l) = &o.list {
        req.insert("type".into(), json!("interactive"));
        req.insert(
            "interactive".into(),
            json!({
                "type": "list",
                "body": { "text": o.text },
                "action": {
                    "button": l.button,
                    "sections": [ { "rows": l.rows.iter().enumerate().map(|(i, (id, title))| {
                        match l.descriptions.get(i).cloned().flatten() {
                            Some(d) => json!({ "id": id, "title": title, "description": d }),
                            None => json!({ "id": id, "title": title }),
                        }
                    }).collect::<Vec<_>>() } ],
                },
            }),
        );
    } else {
        req.insert("type".into(), json!("text"));
        req.insert(
            "text".into(),
            json!({ "preview_url": true, "body": o.text }),
        );
    }
    Value::Object(req)
}
