//! What the YAML says: the rule-pack format v1, as serde structs.
//!
//! The `tests:` cases of a pack are in [`cases`].
//!
//! These structs mirror the files one to one (unknown keys are denied everywhere) and keep the
//! position of every value. They are checked and turned into the runtime objects of
//! [`crate::pack`]; nothing outside this crate reads them except the JSON Schema.

use std::borrow::Cow;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};

use crate::span::{Entries, Sp};

mod cases;
pub use cases::*;

/// One YAML file of a pack. Every section may appear in any file; the loader merges them.
#[derive(Debug, Clone, Default, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Switchyard rule pack file (format v1)")]
pub struct PackFile {
    /// The format version; must be 1.
    pub version: Option<Sp<u32>>,
    pub settings: Option<Sp<Settings>>,
    /// Opening hours, by name (used by `in_calendar("name")` and SLA policies).
    pub calendars: Option<Entries<Sp<Calendar>>>,
    /// Intents, by name, learnt at load time from their examples.
    pub intents: Option<Entries<Sp<Intent>>>,
    /// Entities extracted from every customer message, by name.
    pub entities: Option<Entries<Sp<Entity>>>,
    /// Message templates, by name.
    pub templates: Option<Entries<Sp<TemplateDef>>>,
    /// Saved replies for agents, by name: inserted in the workspace's reply box with `/`.
    pub snippets: Option<Entries<Sp<Snippet>>>,
    /// Team queues, by name.
    pub queues: Option<Entries<Sp<Queue>>>,
    /// Store, lookup and webhook connectors, by name. Secrets come from the environment.
    pub connectors: Option<Entries<Sp<Connector>>>,
    /// Interactive bot flows, by name.
    pub flows: Option<Entries<Sp<Flow>>>,
    /// Rules, evaluated in file order.
    pub rules: Option<Vec<Sp<Rule>>>,
    /// Scheduled rules (cron, in the pack's time zone).
    pub schedules: Option<Vec<Sp<Schedule>>>,
    /// Rule tests, run by `switchyard test`.
    pub tests: Option<Vec<Sp<TestCase>>>,
}

/// The names of the sections of a pack file, in the order the loader reads them.
pub const SECTIONS: &[&str] = &[
    "version",
    "settings",
    "calendars",
    "intents",
    "entities",
    "templates",
    "snippets",
    "queues",
    "connectors",
    "flows",
    "rules",
    "schedules",
    "tests",
];

#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// IANA time zone of the store, e.g. `Asia/Karachi` (default `UTC`).
    pub timezone: Option<Sp<String>>,
    /// Where a customer message goes that nothing else handled.
    pub default_queue: Sp<String>,
    /// Below this confidence the intent is `unknown` (default 0.55).
    pub intent_threshold: Option<Sp<f64>>,
    /// Language of templates when the contact's language is unknown (default `en`).
    pub default_language: Option<Sp<String>>,
    /// Intents that interrupt any running flow (default: `human_agent` when the pack has it).
    pub escape_intents: Option<Vec<Sp<String>>>,
    /// For each language, the languages to try next when a template has no text for it,
    /// before `default_language` (default: `roman_ur: [ur]`, `ur: [roman_ur]`).
    pub language_fallbacks: Option<Entries<Vec<Sp<String>>>>,
    /// What the customer is told when the bot hands the conversation to a person.
    pub handoff: Option<Sp<HandoffAcks>>,
    /// What a recognised intent other than the step's does while a flow waits for an answer.
    pub interrupt: Option<Sp<Interrupt>>,
    /// A template sent before a step's message is asked again (the answer was not understood).
    pub reprompt: Option<Sp<String>>,
    /// The classifier's lexicon and its optional language-model fallback.
    pub classifier: Option<Sp<ClassifierSettings>>,
    /// Ask the customer instead of guessing when the classifier is unsure (two-stage
    /// fallback): buttons naming the two likeliest intents and "something else".
    pub clarify: Option<Sp<Clarify>>,
    /// What values shown to customers mean in each language, by the expression that shows
    /// them: `order.status: { dispatched: { en: "on its way", ur: "روانہ ہو چکا" } }`. A
    /// template's `{{order.status}}` then speaks the contact's language; a value not listed
    /// shows as it is.
    pub values: Option<Entries<Entries<Entries<Sp<String>>>>>,
}

/// Templates sent when the bot hands a conversation to a person and has said nothing itself
/// in that turn, by reason. Each names a template of the pack.
#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HandoffAcks {
    /// Nothing in the pack handled the message (or a rule handed off without a word).
    pub unhandled: Option<Sp<String>>,
    /// A lookup found nothing (e.g. no order with that number).
    pub not_found: Option<Sp<String>>,
    /// A flow asked again as many times as it may and still did not understand.
    pub retries: Option<Sp<String>>,
    /// The store or another connector did not answer.
    pub store_unavailable: Option<Sp<String>>,
    /// The customer asked for a person (an escape intent).
    pub asked: Option<Sp<String>>,
    /// Outside this calendar's hours, `closed` is sent instead (its scope has
    /// `handoff.opens_at`, e.g. `10:00`, and `handoff.opens_on`, e.g. `Monday`).
    pub calendar: Option<Sp<String>>,
    pub closed: Option<Sp<String>>,
}

/// Strong intents typed while a flow waits for an answer.
#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Interrupt {
    /// Intents that interrupt a waiting step unless the step answers them (the escape
    /// intents always do).
    pub intents: Vec<Sp<String>>,
    /// How sure the classifier must be before a message interrupts (default 0.8): a flow's
    /// question is not abandoned for a guess.
    pub min_confidence: Option<Sp<f64>>,
    /// `leave` (default): the flow ends and the rules handle the message at once; `resume`:
    /// the rules handle the message, then the step asks its question again and keeps waiting
    /// (unless the rules ended the flow or handed off).
    pub then: Option<Sp<InterruptThen>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InterruptThen {
    Leave,
    Resume,
}

#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassifierSettings {
    /// Words and phrases read as another before classifying, by the word they stand for:
    /// `refund: [money back, paisay wapis]`. Added to the built-in lexicon.
    pub synonyms: Option<Entries<Vec<Sp<String>>>>,
    /// Messages that are none of the intents (questions about products, opening hours,
    /// chit-chat): a message closest to these is `unknown`, however sure the nearest intent.
    #[serde(default)]
    pub unrelated: Vec<Sp<String>>,
    /// A language model asked when no intent reaches the threshold.
    pub fallback: Option<Sp<ClassifierFallback>>,
    /// The intent of a message that is only an entity — an order number ("10234",
    /// "#10234", "ORD-5531"), a phone number, an e-mail: never read as anything else.
    /// Default: `order_status` when the pack has that intent, else `unknown` (a person
    /// reads it).
    pub entity_only: Option<Sp<String>>,
}

/// `settings.clarify`: when to ask which of two intents the customer means, and how.
#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Clarify {
    /// Ask when the best intent's confidence is at least this but below
    /// `intent_threshold` (default 0.25); below it the message is `unknown`.
    pub floor: Option<Sp<f64>>,
    /// Ask, too, when the best intent reaches the threshold but the second is within this
    /// of it (default 0.15).
    pub margin: Option<Sp<f64>>,
    /// The question: a template, rendered with `clarify.first` and `clarify.second` (the two
    /// intents' labels in the customer's language).
    pub template: Sp<String>,
    /// The title of the third button, by language (`en`, `roman_ur`, `ur`, or `text`):
    /// "Something else" (at most 20 characters, WhatsApp's limit).
    pub other: Entries<Sp<String>>,
}

/// An OpenAI-compatible chat-completions endpoint asked for one of the pack's intents.
#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassifierFallback {
    /// Environment variable holding the endpoint's base URL (e.g. `https://api.openai.com/v1`).
    pub url_env: Sp<String>,
    /// Environment variable holding the API key (optional for a local server).
    pub key_env: Option<Sp<String>>,
    pub model: Sp<String>,
    /// How long to wait for an answer (default `3s`).
    pub timeout: Option<Sp<String>>,
    /// At most this many questions a minute (default 60); beyond it the message stays `unknown`.
    pub per_minute: Option<Sp<u32>>,
    /// The answer is used only at or above this confidence (default 0.6).
    pub min_confidence: Option<Sp<f64>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Calendar {
    /// Days the calendar is open.
    pub days: Vec<Sp<Weekday>>,
    /// Opening time, `HH:MM`.
    pub open: Sp<String>,
    /// Closing time, `HH:MM` (`24:00` for midnight).
    pub close: Sp<String>,
    /// Closed dates, `YYYY-MM-DD`.
    #[serde(default)]
    pub holidays: Vec<Sp<String>>,
    /// Time zone of this calendar (default: the pack's).
    pub timezone: Option<Sp<String>>,
}

#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Intent {
    /// What customers write, in every language the shop sees (at least 5).
    pub examples: Vec<Sp<String>>,
    /// Words that, when present, point strongly at this intent.
    #[serde(default)]
    pub keywords: Vec<Sp<String>>,
    /// Regular expressions that, when they match the normalised message, select this intent.
    #[serde(default)]
    pub patterns: Vec<Sp<String>>,
    pub description: Option<String>,
    /// What a button naming this intent says, by language (`en`, `roman_ur`, `ur`, or
    /// `text`), when the bot asks which intent the customer means (`settings.clarify`); at
    /// most 20 characters.
    pub label: Option<Entries<Sp<String>>>,
}

#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Entity {
    /// A regular expression with one capture group: the group is the value.
    pub pattern: Option<Sp<String>>,
    /// A built-in extractor.
    pub builtin: Option<Sp<Builtin>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Builtin {
    /// Pakistani mobile numbers (`0300-1234567`, `+92 300 1234567`), normalised to E.164.
    PhonePk,
    /// Order numbers (`#10234`, `order 10234`), normalised to digits.
    OrderNo,
    /// Amounts (`Rs 2,499`, `2499/-`), normalised to a number.
    Amount,
    /// E-mail addresses, lower-cased.
    Email,
}

/// A template: a plain string, a map of language → string (plus `text` as the any-language
/// form), and optionally a `whatsapp` form: an approved template for business-initiated sends.
#[derive(Debug, Clone, Default)]
pub struct TemplateDef {
    /// `(language or "text", body)` in file order.
    pub variants: Vec<(Sp<String>, Sp<String>)>,
    pub whatsapp: Option<Sp<WaTemplate>>,
}

impl<'de> Deserialize<'de> for TemplateDef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TemplateDef;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a string, or a map of language → text with an optional `whatsapp` form",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TemplateDef, E> {
                Ok(TemplateDef {
                    variants: vec![(
                        Sp::new("text".into(), Default::default()),
                        Sp::new(v.to_string(), Default::default()),
                    )],
                    whatsapp: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TemplateDef, A::Error> {
                let mut out = TemplateDef::default();
                while let Some(k) = map.next_key::<Sp<String>>()? {
                    if k.value == "whatsapp" {
                        out.whatsapp = Some(map.next_value()?);
                    } else {
                        let v = map.next_value::<Sp<String>>()?;
                        out.variants.push((k, v));
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for TemplateDef {
    fn schema_name() -> Cow<'static, str> {
        "TemplateDef".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let wa = generator.subschema_for::<WaTemplate>();
        json_schema!({
            "description": "A plain string, or language → text (`en`, `ur`, … and `text` for any language), with an optional `whatsapp` approved-template form. `{{ expr }}` holds a Rhai expression.",
            "anyOf": [
                { "type": "string" },
                {
                    "type": "object",
                    "properties": { "whatsapp": wa },
                    "additionalProperties": { "type": "string" }
                }
            ]
        })
    }
}

/// A saved reply: one text, or language → text (`en`, `ur`, … and `text` for any language).
/// Plain text an agent reads and edits before sending: no `{{ }}` holes.
#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Snippet {
    Text(String),
    Languages(std::collections::BTreeMap<String, String>),
}

/// An approved WhatsApp message template (the only thing that may open a conversation).
#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaTemplate {
    /// The template's name as approved in WhatsApp Manager.
    pub name: Sp<String>,
    /// Its language code, e.g. `en`, `en_US`, `ur`.
    pub language: Sp<String>,
    /// Body parameters, in order; each may hold `{{ expr }}`.
    #[serde(default)]
    pub body: Vec<Sp<String>>,
    /// Quick-reply button payloads, in the template's button order.
    #[serde(default)]
    pub buttons: Vec<Sp<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Assignment {
    RoundRobin,
    LeastLoaded,
    Sticky,
    Manual,
}

#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Queue {
    pub assignment: Sp<Assignment>,
    pub sla: Option<Sp<Sla>>,
    /// What happens to an agent's open conversations of this queue when their shift ends:
    /// `keep` (default) or `hand_back` (to the queue, with a note).
    pub on_shift_end: Option<Sp<OnShiftEnd>>,
    pub description: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnShiftEnd {
    #[default]
    Keep,
    HandBack,
}

#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sla {
    /// Time from entering the queue to the first agent reply, e.g. `15m`.
    pub first_response: Option<Sp<String>>,
    /// Time from a customer message to the agent's answer, once a person has answered.
    pub next_response: Option<Sp<String>>,
    /// Time from entering the queue to resolution, e.g. `24h`.
    pub resolution: Option<Sp<String>>,
    /// Count only the open hours of this calendar.
    pub calendar: Option<Sp<String>>,
    /// `sla.warning` fires when this fraction of a target has passed (e.g. `0.8`).
    pub warn_at: Option<Sp<f64>>,
    /// Other targets for some priorities (each replaces the queue's for that kind).
    pub by_priority: Option<SlaByPriority>,
}

#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SlaByPriority {
    pub low: Option<SlaTargets>,
    pub normal: Option<SlaTargets>,
    pub high: Option<SlaTargets>,
    pub urgent: Option<SlaTargets>,
}

#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SlaTargets {
    pub first_response: Option<Sp<String>>,
    pub next_response: Option<Sp<String>>,
    pub resolution: Option<Sp<String>>,
}

#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Connector {
    /// Shopify Admin API (GraphQL). Without credentials in the environment it uses `fallback`.
    Shopify {
        /// Environment variable holding the shop domain (`my-shop.myshopify.com`).
        shop_env: String,
        /// Environment variable holding the Admin API access token.
        token_env: String,
        /// Admin API version, e.g. `2025-07`.
        api_version: Option<String>,
        /// What to use when the credentials are missing: `demo` (the orders of the pack's
        /// test fixtures) or the name of a `static` or `demo` connector.
        fallback: Option<String>,
    },
    /// The built-in demo store (orders from the pack's test fixtures or `examples/`).
    Demo {},
    /// A generic HTTP lookup (an OMS, a courier's tracking API): `lookup: { connector, action:
    /// fetch, by: KEY, as: NAME }` calls it and binds the mapped fields.
    Http {
        /// `GET` (default) or `POST`.
        method: Option<String>,
        /// The URL; `{{key}}` (the lookup's `by`, URL-encoded) and `{{value}}` are filled in.
        url: String,
        /// Header name → the environment variable holding its value (credentials stay out of
        /// the pack).
        #[serde(default)]
        headers: std::collections::BTreeMap<String, String>,
        /// A JSON body for `POST`, with `{{key}}` and `{{value}}` (JSON-escaped).
        body: Option<String>,
        /// Field name → JSON pointer into the answer (`/dist/status`).
        map: std::collections::BTreeMap<String, String>,
        /// Per attempt, e.g. `5s` (default).
        timeout: Option<String>,
        /// Attempts after the first on timeouts and 5xx (default 1).
        retries: Option<u32>,
        /// How long an answer is reused, e.g. `60s` (default: not cached).
        cache: Option<String>,
        /// The call changes something that cannot be undone (cancels, refunds, re-addresses):
        /// the bot makes it only right after the customer confirmed with a button, and
        /// `validate` warns a rule or flow that reaches it otherwise. Default `false`.
        #[serde(default)]
        irreversible: bool,
    },
    /// Orders from a JSON file in the pack's directory (an array of orders, each with at least
    /// `name`); lookups and writes work on an in-memory copy.
    Static {
        /// The file, relative to the pack's directory, e.g. `demo-orders.json`.
        file: String,
    },
    /// An outbound webhook endpoint.
    Webhook {
        /// Environment variable holding the URL.
        url_env: String,
        /// Environment variable holding the HMAC secret for `X-Switchyard-Signature`.
        secret_env: Option<String>,
    },
}

#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Flow {
    /// The first step.
    pub start: Sp<String>,
    pub steps: Entries<Sp<Step>>,
    pub description: Option<String>,
}

#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// What the bot sends when the flow enters this step.
    pub send: Option<Sp<Send>>,
    /// Actions run when the flow enters this step, before `send` (so it can show a lookup).
    #[serde(rename = "do", default)]
    pub actions: Vec<Sp<Action>>,
    /// Branches on the customer's answer: a button or list row id, an intent, or `/regex/`.
    pub on: Option<Entries<Sp<Branch>>>,
    /// Store the customer's next message in a conversation attribute.
    pub capture: Option<Sp<Capture>>,
    /// Unrecognised replies tolerated before handing off to a human (default 1).
    pub retries: Option<Sp<u32>>,
    /// What happens when the customer does not answer in time.
    pub timeout: Option<Sp<Timeout>>,
    /// Next step (after the step's send when it waits for nothing, or after `capture`).
    pub goto: Option<Sp<String>>,
    /// The flow ends here.
    #[serde(default)]
    pub end: bool,
    /// Hand the conversation to a human and end the flow.
    pub handoff: Option<Sp<Handoff>>,
    /// Decides the next step from data (a lookup's result, an attribute) right after `do` and
    /// `send`: the first entry whose `if` holds (an entry without `if` always does) is
    /// followed; when none does, the step's `goto`/`end`. A step with `branch` does not wait.
    #[serde(default)]
    pub branch: Vec<Sp<Decide>>,
}

/// One entry of a step's `branch`.
#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Decide {
    /// A Rhai condition (e.g. `orders.len() > 1`); absent means always.
    #[serde(rename = "if")]
    pub condition: Option<Sp<String>>,
    #[serde(rename = "do", default)]
    pub actions: Vec<Sp<Action>>,
    pub goto: Option<Sp<String>>,
    #[serde(default)]
    pub end: bool,
}

#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Branch {
    #[serde(rename = "do", default)]
    pub actions: Vec<Sp<Action>>,
    pub goto: Option<Sp<String>>,
    #[serde(default)]
    pub end: bool,
}

#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Timeout {
    /// A duration: `90s`, `15m`, `2h`, `1d`.
    pub after: Sp<String>,
    #[serde(rename = "do", default)]
    pub actions: Vec<Sp<Action>>,
    pub goto: Option<Sp<String>>,
    #[serde(default)]
    pub end: bool,
}

/// `capture: attribute` or `capture: { into: attribute, entity: phone }`.
#[derive(Debug, Clone)]
pub struct Capture {
    pub into: Sp<String>,
    /// Accept the reply only when this entity is found in it; the entity's value is stored.
    pub entity: Option<Sp<String>>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CaptureMap {
    into: Sp<String>,
    entity: Option<Sp<String>>,
}

impl<'de> Deserialize<'de> for Capture {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Capture;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an attribute name, or { into: attribute, entity: name }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Capture, E> {
                Ok(Capture {
                    into: Sp::new(v.to_string(), Default::default()),
                    entity: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Capture, A::Error> {
                let m = CaptureMap::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Capture {
                    into: m.into,
                    entity: m.entity,
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Capture {
    fn schema_name() -> Cow<'static, str> {
        "Capture".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "An attribute name, or { into, entity } to accept only replies that contain the entity.",
            "anyOf": [
                { "type": "string" },
                { "type": "object", "properties": { "into": { "type": "string" }, "entity": { "type": "string" } },
                  "required": ["into"], "additionalProperties": false }
            ]
        })
    }
}

/// What a step or a `reply` sends.
#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Send {
    /// Free text (`{{ expr }}` allowed). Only inside the 24-hour window.
    Text(Sp<String>),
    /// A template from `templates:` (its WhatsApp form is used outside the window).
    Template(Sp<String>),
    /// Up to 3 reply buttons. Only inside the 24-hour window.
    Buttons(Sp<Buttons>),
    /// A list of up to 10 rows. Only inside the 24-hour window.
    List(Sp<List>),
}

#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Buttons {
    /// Message text above the buttons (≤ 1024 characters).
    pub body: Sp<String>,
    /// The body in other languages (`roman_ur: "…"`, `ur: "…"`), picked like a template's.
    pub translations: Option<Entries<Sp<String>>>,
    pub footer: Option<Sp<String>>,
    pub buttons: Vec<Sp<Choice>>,
}

#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Choice {
    /// What comes back when the customer taps it (≤ 256 characters; ≤ 200 for list rows).
    pub id: Sp<String>,
    /// What the customer sees (≤ 20 characters for buttons, ≤ 24 for list rows).
    pub title: Sp<String>,
    /// List rows only (≤ 72 characters).
    pub description: Option<Sp<String>>,
}

#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct List {
    /// Message text (≤ 4096 characters).
    pub body: Sp<String>,
    /// The body in other languages, picked like a template's.
    pub translations: Option<Entries<Sp<String>>>,
    /// The button that opens the list (≤ 20 characters).
    pub button: Sp<String>,
    pub footer: Option<Sp<String>>,
    /// Sections of rows: at most 10 rows in all. Or, instead, `rows_from` and `row`.
    #[serde(default)]
    pub sections: Vec<Sp<Section>>,
    /// A Rhai expression giving an array (e.g. `orders`, a `find_orders` lookup's result): one
    /// row per element, built by `row` with the element as `item`; the first 10 are shown.
    pub rows_from: Option<Sp<String>>,
    /// The row for each `item` of `rows_from`: `id`, `title`, `description` are templates
    /// (`{{item.name}}`); titles longer than 24 characters are cut.
    pub row: Option<Sp<Choice>>,
}

#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Section {
    /// ≤ 24 characters.
    pub title: Option<Sp<String>>,
    pub rows: Vec<Sp<Choice>>,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    New,
    Open,
    Waiting,
    Escalated,
    Resolved,
}

/// A name that is not one of a closed set's (`` `x` is not one of a, b, c ``).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not one of {}", allowed.join(", "))]
pub struct UnknownName {
    pub value: String,
    pub allowed: &'static [&'static str],
}

/// `as_str`, `NAMES` and `FromStr` of a closed set, from one table.
#[macro_export]
macro_rules! names {
    ($t:ty { $($v:ident = $s:literal),+ $(,)? }) => {
        impl $t {
            /// Every name, in the set's order.
            pub const NAMES: &'static [&'static str] = &[$($s),+];
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$v => $s),+
                }
            }
        }
        impl std::str::FromStr for $t {
            type Err = $crate::config::UnknownName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($s => Ok(Self::$v),)+
                    _ => Err($crate::config::UnknownName {
                        value: s.to_string(),
                        allowed: Self::NAMES,
                    }),
                }
            }
        }
    };
}

names!(Status {
    New = "new",
    Open = "open",
    Waiting = "waiting",
    Escalated = "escalated",
    Resolved = "resolved",
});

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Deserialize,
    serde::Serialize,
    JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low,
    Normal,
    High,
    Urgent,
}

/// The events a rule may name in `when` (besides `timer.<name>` and `schedule.<name>`): what
/// arrives (messages, statuses, order webhooks, SLA clocks) and what the engine's own changes
/// cause (`conversation.assigned`, `ticket.created` …, see the engine's `DomainEvent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleEvent {
    MessageReceived,
    MessageStatus,
    ConversationCreated,
    ConversationAssigned,
    ConversationStatusChanged,
    TicketCreated,
    TicketUpdated,
    AgentReplied,
    FlowCompleted,
    FlowAbandoned,
    SlaBreached,
    SlaWarning,
    OrderCreated,
    OrderUpdated,
    OrderCancelled,
    OrderFulfilled,
}

names!(RuleEvent {
    MessageReceived = "message.received",
    MessageStatus = "message.status",
    ConversationCreated = "conversation.created",
    ConversationAssigned = "conversation.assigned",
    ConversationStatusChanged = "conversation.status_changed",
    TicketCreated = "ticket.created",
    TicketUpdated = "ticket.updated",
    AgentReplied = "agent.replied",
    FlowCompleted = "flow.completed",
    FlowAbandoned = "flow.abandoned",
    SlaBreached = "sla.breached",
    SlaWarning = "sla.warning",
    OrderCreated = "order.created",
    OrderUpdated = "order.updated",
    OrderCancelled = "order.cancelled",
    OrderFulfilled = "order.fulfilled",
});

names!(Priority {
    Low = "low",
    Normal = "normal",
    High = "high",
    Urgent = "urgent",
});

/// The closed set of actions. Each is one key: `- reply: { text: "…" }`, `- tag: vip`, `- stop`.
#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Send a message to the customer.
    Reply(Sp<Send>),
    /// Start a flow (ending any running one).
    StartFlow(Sp<String>),
    /// End the running flow.
    EndFlow,
    /// Put the conversation in a queue (assignment follows the queue's policy).
    Route(Sp<Route>),
    /// Give the conversation to an agent.
    Assign(Sp<Assign>),
    /// Take the conversation from its owner and give it to another agent of its queue (per
    /// the queue's policy); with nobody else free it waits in the queue.
    Reassign,
    /// Hand the conversation to a human queue or agent with a note; ends any flow.
    Handoff(Sp<Handoff>),
    Tag(Sp<String>),
    Untag(Sp<String>),
    /// Set a conversation attribute.
    Set(Sp<SetAttr>),
    SetStatus(Sp<Status>),
    SetPriority(Sp<Priority>),
    /// Set the contact's language (`en`, `ur`, `roman_ur`, …) for the templates from now on,
    /// kept until a person or a rule changes it; `auto` goes back to the language of the
    /// customer's latest message.
    SetLanguage(Sp<String>),
    /// Open a ticket (or update the open one of this conversation).
    Ticket(Sp<TicketArgs>),
    /// Move to a queue with higher priority and a reason; opens a ticket if none is open.
    Escalate(Sp<Escalate>),
    /// Add an internal note (never sent to the customer).
    Note(Sp<String>),
    /// Call a connector (order lookups, confirmations).
    Lookup(Sp<Lookup>),
    /// Post to an outbound webhook connector.
    Webhook(Sp<WebhookArgs>),
    /// Start a named timer that fires `timer.<name>`.
    Timer(Sp<TimerArgs>),
    /// Put the conversation aside until a duration passes or the customer writes.
    Snooze(Sp<String>),
    /// Stop evaluating further rules for this event.
    Stop,
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Reply(_) => "reply",
            Action::StartFlow(_) => "start_flow",
            Action::EndFlow => "end_flow",
            Action::Route(_) => "route",
            Action::Assign(_) => "assign",
            Action::Reassign => "reassign",
            Action::Handoff(_) => "handoff",
            Action::Tag(_) => "tag",
            Action::Untag(_) => "untag",
            Action::Set(_) => "set",
            Action::SetStatus(_) => "set_status",
            Action::SetPriority(_) => "set_priority",
            Action::SetLanguage(_) => "set_language",
            Action::Ticket(_) => "ticket",
            Action::Escalate(_) => "escalate",
            Action::Note(_) => "note",
            Action::Lookup(_) => "lookup",
            Action::Webhook(_) => "webhook",
            Action::Timer(_) => "timer",
            Action::Snooze(_) => "snooze",
            Action::Stop => "stop",
        }
    }
}

#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub queue: Sp<String>,
}

#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Assign {
    /// An agent id; without it, the queue's policy picks.
    pub agent: Option<Sp<String>>,
    pub queue: Option<Sp<String>>,
}

#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Handoff {
    /// Default: `settings.default_queue`.
    pub queue: Option<Sp<String>>,
    pub agent: Option<Sp<String>>,
    /// Internal note for the agent (`{{ expr }}` allowed).
    pub note: Option<Sp<String>>,
}

#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetAttr {
    /// Attribute name.
    pub key: Sp<String>,
    /// A Rhai expression; its value is stored.
    pub value: Sp<String>,
}

#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TicketArgs {
    pub title: Option<Sp<String>>,
    pub category: Option<Sp<String>>,
    pub priority: Option<Sp<Priority>>,
    pub queue: Option<Sp<String>>,
}

#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Escalate {
    pub queue: Sp<String>,
    pub reason: Option<Sp<String>>,
    /// Default `high`.
    pub priority: Option<Sp<Priority>>,
}

#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Lookup {
    pub connector: Sp<String>,
    /// `find_order`, `find_orders`, `confirm_order`, `cancel_order`, `tag_order`,
    /// `add_order_note` (stores); `fetch` (http).
    pub action: Sp<String>,
    /// A Rhai expression: the key to look up (e.g. `entities.order_no ?? contact.phone`).
    pub by: Option<Sp<String>>,
    /// The scope name the result is bound to (default `order`; `orders` for `find_orders`).
    #[serde(rename = "as")]
    pub bind: Option<Sp<String>>,
    /// A template: the text for `add_order_note`, the reason for `cancel_order`, the tag for `tag_order`.
    pub value: Option<Sp<String>>,
}

#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookArgs {
    pub connector: Sp<String>,
    /// A template rendered as the `text` of the JSON body.
    pub body: Option<Sp<String>>,
}

#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimerArgs {
    pub name: Sp<String>,
    pub after: Sp<String>,
}

#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: Sp<String>,
    /// The event: `message.received`, `order.created`, `timer.<name>`, …
    pub when: Sp<String>,
    /// A Rhai condition; absent means always.
    #[serde(rename = "if")]
    pub condition: Option<Sp<String>>,
    pub then: Vec<Sp<Action>>,
    /// Stop evaluating later rules when this one matched.
    #[serde(default)]
    pub stop: bool,
}

#[derive(Debug, Clone, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub name: Sp<String>,
    /// Six fields with seconds: `sec min hour day-of-month month day-of-week`.
    pub cron: Sp<String>,
    #[serde(rename = "if")]
    pub condition: Option<Sp<String>>,
    pub then: Vec<Sp<Action>>,
}
