//! The `tests:` section: conversations a pack plays through the real pipeline, with what is
//! expected after each turn.

use super::*;

#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    pub name: Sp<String>,
    #[serde(default)]
    pub fixtures: Fixtures,
    /// The contact at the start: `name`, `phone` (E.164), `language`, and any attributes.
    #[serde(default)]
    pub contact: serde_json::Map<String, serde_json::Value>,
    /// When the conversation starts (RFC 3339); default Monday 2026-11-23 12:00 in Karachi.
    pub start: Option<Sp<String>>,
    /// Agents on duty during the test.
    #[serde(default)]
    pub agents: Vec<Sp<TestAgent>>,
    pub conversation: Vec<Sp<Turn>>,
}

#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestAgent {
    pub id: Sp<String>,
    pub queues: Vec<Sp<String>>,
    /// Default 5.
    pub capacity: Option<u32>,
    /// Default `online`.
    pub availability: Option<Sp<String>>,
    /// A calendar of the pack: the agent's working hours.
    pub shift: Option<Sp<String>>,
}

#[derive(Debug, Clone, Default, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Fixtures {
    /// Orders the store connectors answer with during this test.
    #[serde(default)]
    pub orders: Vec<serde_json::Map<String, serde_json::Value>>,
    /// Store actions that fail during this test as if the store did not answer
    /// (`confirm_order`, `find_order`, …).
    #[serde(default)]
    pub unavailable: Vec<Sp<String>>,
    /// What the classifier's language-model fallback answers, by message text (an intent).
    #[serde(default)]
    pub understood: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Turn {
    /// What the customer sends: text, `{ button: id }` or `{ list: id }`.
    pub customer: Option<Sp<Say>>,
    /// An event that is not a message, e.g. `order.created` with an order.
    pub event: Option<Sp<TestEvent>>,
    /// Advance the virtual clock, firing due timers.
    pub wait: Option<Sp<String>>,
    /// What a person does, as through the admin API: `{ id: sana, reply: "…" }`.
    pub agent: Option<Sp<AgentTurn>>,
    pub expect: Option<Sp<Expect>>,
}

#[derive(Debug, Clone)]
pub enum Say {
    Text(String),
    Button(String),
    List(String),
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum SayMap {
    Button(String),
    List(String),
}

impl<'de> Deserialize<'de> for Say {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Say;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("text, { button: id } or { list: id }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Say, E> {
                Ok(Say::Text(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Say, E> {
                Ok(Say::Text(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Say, E> {
                Ok(Say::Text(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Say, A::Error> {
                Ok(
                    match SayMap::deserialize(de::value::MapAccessDeserializer::new(map))? {
                        SayMap::Button(b) => Say::Button(b),
                        SayMap::List(l) => Say::List(l),
                    },
                )
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Say {
    fn schema_name() -> Cow<'static, str> {
        "Say".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [
                { "type": "string" },
                { "type": "object", "properties": { "button": { "type": "string" } }, "required": ["button"], "additionalProperties": false },
                { "type": "object", "properties": { "list": { "type": "string" } }, "required": ["list"], "additionalProperties": false }
            ]
        })
    }
}

#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentTurn {
    /// The agent (one of the test's `agents`).
    pub id: Sp<String>,
    /// A message to the customer.
    pub reply: Option<String>,
    /// An internal note.
    pub note: Option<String>,
    pub status: Option<Sp<Status>>,
    /// Put the conversation aside for a while, e.g. `2h`.
    pub snooze: Option<Sp<String>>,
}

#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestEvent {
    /// `order.created`, `order.updated`, …
    pub name: Sp<String>,
    pub order: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Clone, Default, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub intent: Option<Sp<String>>,
    pub reply_contains: Option<Sp<String>>,
    pub reply_buttons: Option<Vec<Sp<String>>>,
    /// The row ids of the last reply's list, in order.
    pub reply_rows: Option<Vec<Sp<String>>>,
    /// No reply at all after this turn.
    pub no_reply: Option<bool>,
    pub flow: Option<Sp<String>>,
    pub step: Option<Sp<String>>,
    pub status: Option<Sp<Status>>,
    pub queue: Option<Sp<String>>,
    /// An agent id, or `none`.
    pub assignee: Option<Sp<String>>,
    /// Tags the conversation must have.
    pub tags: Option<Vec<Sp<String>>>,
    pub ticket: Option<Sp<ExpectTicket>>,
    pub priority: Option<Sp<Priority>>,
    pub note_contains: Option<Sp<String>>,
    pub attributes: Option<serde_json::Map<String, serde_json::Value>>,
}

/// `ticket: none`, or the fields the open ticket must have.
#[derive(Debug, Clone)]
pub enum ExpectTicket {
    None,
    Some(TicketFields),
}

#[derive(Debug, Clone, Default, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TicketFields {
    pub priority: Option<Sp<Priority>>,
    pub category: Option<Sp<String>>,
    pub queue: Option<Sp<String>>,
    pub title_contains: Option<Sp<String>>,
}

impl<'de> Deserialize<'de> for ExpectTicket {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ExpectTicket;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`none` or the ticket's fields")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ExpectTicket, E> {
                if v == "none" {
                    Ok(ExpectTicket::None)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(v), &self))
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ExpectTicket, A::Error> {
                Ok(ExpectTicket::Some(TicketFields::deserialize(
                    de::value::MapAccessDeserializer::new(map),
                )?))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for ExpectTicket {
    fn schema_name() -> Cow<'static, str> {
        "ExpectTicket".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let fields = generator.subschema_for::<TicketFields>();
        json_schema!({ "anyOf": [ { "const": "none" }, fields ] })
    }
}
