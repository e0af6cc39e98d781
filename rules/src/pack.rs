//! The compiled pack: what the engine runs. Built from a [`RawPack`] by [`build`], which is
//! also phase 2 and 3 of validation (references, limits, scripts); see [`crate::check`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use rhai::{Dynamic, Scope, AST};
use serde_json::Value;

use crate::calendar::CalendarRt;
use crate::classify::{Classification, Classifier};
use crate::config::{Assignment, Priority, Status, TestCase};
use crate::entities::{ascii_digits, Extractor};
use crate::script::{Clock, Sandbox, ScriptError, Vars};
use crate::template::Template;

/// The template sent when the store does not answer, in packs without `settings.handoff`.
pub const STORE_UNAVAILABLE: &str = "store_unavailable";

/// Settings with their defaults applied.
#[derive(Debug, Clone)]
pub struct SettingsRt {
    pub timezone: Tz,
    pub default_queue: String,
    pub intent_threshold: f32,
    pub default_language: String,
    pub escape_intents: Vec<String>,
    /// Language → the languages tried next for a template (the pack's or the defaults).
    pub language_fallbacks: BTreeMap<String, Vec<String>>,
    pub handoff: HandoffRt,
    /// Intents that interrupt a waiting flow step (besides the escape intents), and how.
    pub interrupt: Vec<String>,
    pub interrupt_then: crate::config::InterruptThen,
    pub interrupt_min_confidence: f32,
    /// Template sent before a step's message is asked again.
    pub reprompt: Option<String>,
    /// The pack's synonyms for the classifier (`word → what customers write for it`).
    pub synonyms: Vec<(String, Vec<String>)>,
    /// Examples of messages that are none of the intents.
    pub unrelated: Vec<String>,
    /// The language model asked when no intent reaches the threshold.
    pub fallback: Option<FallbackRt>,
    /// The intent of a message that is only an entity (`settings.classifier.entity_only`).
    pub entity_only: Option<String>,
    /// When and how to ask instead of guessing (`settings.clarify`).
    pub clarify: Option<ClarifyRt>,
}

/// `settings.clarify`, with its defaults applied.
#[derive(Debug, Clone)]
pub struct ClarifyRt {
    pub floor: f32,
    pub margin: f32,
    pub template: String,
    /// The third button's title by language (or `text`).
    pub other: Vec<(String, String)>,
}

/// `settings.classifier.fallback`: an OpenAI-compatible chat-completions endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct FallbackRt {
    pub url_env: String,
    pub key_env: Option<String>,
    pub model: String,
    pub timeout: Duration,
    pub per_minute: u32,
    pub min_confidence: f32,
}

/// Why the bot handed a conversation to a person: the acknowledgement it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HandoffReason {
    Unhandled,
    NotFound,
    Retries,
    StoreUnavailable,
    Asked,
}

impl HandoffReason {
    pub const ALL: [HandoffReason; 5] = [
        HandoffReason::Unhandled,
        HandoffReason::NotFound,
        HandoffReason::Retries,
        HandoffReason::StoreUnavailable,
        HandoffReason::Asked,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            HandoffReason::Unhandled => "unhandled",
            HandoffReason::NotFound => "not_found",
            HandoffReason::Retries => "retries",
            HandoffReason::StoreUnavailable => "store_unavailable",
            HandoffReason::Asked => "asked",
        }
    }
}

/// `settings.handoff`: a template per reason, and the closed-hours one.
#[derive(Debug, Clone, Default)]
pub struct HandoffRt {
    /// Template by `HandoffReason as usize`.
    pub templates: [Option<String>; 5],
    pub calendar: Option<String>,
    pub closed: Option<String>,
}

impl HandoffRt {
    pub fn template(&self, r: HandoffReason) -> Option<&str> {
        self.templates[r as usize].as_deref()
    }
}

impl SettingsRt {
    /// The languages to try, in order, for a contact writing `lang`: the language and its
    /// fallbacks (a template then tries `text`, then the pack's default language).
    pub fn language_chain<'s>(&'s self, lang: Option<&'s str>) -> Vec<&'s str> {
        let mut out: Vec<&str> = Vec::with_capacity(4);
        if let Some(l) = lang {
            out.push(l);
            match self.language_fallbacks.get(l) {
                Some(next) => out.extend(next.iter().map(String::as_str)),
                None => out.extend(crate::lang::default_fallbacks(l).iter().copied()),
            }
        }
        out
    }
}

/// A template's forms.
#[derive(Debug, Clone)]
pub struct TemplateRt {
    /// `(language, text)`; `text` is the any-language form.
    pub variants: Vec<(String, Template)>,
    pub whatsapp: Option<WaTemplateRt>,
}

#[derive(Debug, Clone)]
pub struct WaTemplateRt {
    pub name: String,
    pub language: String,
    pub body: Vec<Template>,
    pub buttons: Vec<String>,
}

impl TemplateRt {
    /// The text form for a contact writing `lang`: the first of its language chain
    /// ([`SettingsRt::language_chain`]) the template has, then `text`, then the pack's default
    /// language, then the first written. Returns the language picked too.
    pub fn variant<'t>(
        &'t self,
        chain: &[&str],
        default_lang: &str,
    ) -> Option<(&'t str, &'t Template)> {
        let find = |l: &str| {
            self.variants
                .iter()
                .find(|(k, _)| k == l)
                .map(|(k, t)| (k.as_str(), t))
        };
        chain
            .iter()
            .find_map(|l| find(l))
            .or_else(|| find("text"))
            .or_else(|| find(default_lang))
            .or_else(|| self.variants.first().map(|(k, t)| (k.as_str(), t)))
    }
}

#[derive(Debug, Clone)]
pub struct QueueRt {
    pub assignment: Assignment,
    pub sla: Option<SlaRt>,
    pub on_shift_end: crate::config::OnShiftEnd,
}

/// What an SLA measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SlaKind {
    FirstResponse,
    NextResponse,
    Resolution,
}

impl SlaKind {
    pub const ALL: [SlaKind; 3] = [
        SlaKind::FirstResponse,
        SlaKind::NextResponse,
        SlaKind::Resolution,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            SlaKind::FirstResponse => "first_response",
            SlaKind::NextResponse => "next_response",
            SlaKind::Resolution => "resolution",
        }
    }
    pub fn parse(s: &str) -> Option<SlaKind> {
        SlaKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A queue's SLA policy.
#[derive(Debug, Clone, Default)]
pub struct SlaRt {
    /// Targets by kind (`SlaKind as usize`).
    pub targets: [Option<Duration>; 3],
    /// Per priority (`low`, `normal`, `high`, `urgent`), targets that replace the queue's.
    pub by_priority: [[Option<Duration>; 3]; 4],
    /// Count only the open hours of this calendar.
    pub calendar: Option<String>,
    /// Fraction of a target after which `sla.warning` fires.
    pub warn_at: Option<f64>,
}

impl SlaRt {
    /// The target of `kind` for a conversation of this priority (0 = low … 3 = urgent).
    pub fn target(&self, kind: SlaKind, priority: usize) -> Option<Duration> {
        self.by_priority
            .get(priority)
            .and_then(|p| p[kind as usize])
            .or(self.targets[kind as usize])
    }
}

#[derive(Debug, Clone)]
pub enum ConnectorRt {
    Shopify {
        shop_env: String,
        token_env: String,
        api_version: Option<String>,
        /// Without credentials: `demo`, or the name of a `static`/`demo` connector.
        fallback: Option<String>,
    },
    Demo,
    Static {
        /// Relative to the pack's directory.
        file: String,
    },
    Http(HttpLookupRt),
    Webhook {
        url_env: String,
        secret_env: Option<String>,
    },
}

/// A validated generic HTTP lookup.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpLookupRt {
    /// `GET` or `POST`.
    pub method: String,
    /// With `{{key}}` / `{{value}}` holes.
    pub url: String,
    /// Header name → environment variable.
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
    /// Field → JSON pointer.
    pub map: BTreeMap<String, String>,
    pub timeout: Duration,
    pub retries: u32,
    pub cache: Option<Duration>,
    /// A write that cannot be undone: called only right after the customer confirmed it.
    pub irreversible: bool,
}

/// Whether `action` on `connector` cannot be undone: cancelling an order always; an `http`
/// connector's call when the pack marks it `irreversible: true`.
pub fn is_irreversible(
    connectors: &BTreeMap<String, ConnectorRt>,
    connector: &str,
    action: LookupAction,
) -> bool {
    match action {
        LookupAction::CancelOrder => true,
        LookupAction::Fetch => {
            matches!(connectors.get(connector), Some(ConnectorRt::Http(h)) if h.irreversible)
        }
        _ => false,
    }
}

/// What a store connector can be asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupAction {
    FindOrder,
    /// Every order for a phone (newest first, at most 10), or the one with a name: an array,
    /// empty when nothing matches.
    FindOrders,
    ConfirmOrder,
    CancelOrder,
    TagOrder,
    AddOrderNote,
    /// A generic HTTP lookup's call.
    Fetch,
}

impl LookupAction {
    pub const ALL: &'static [(&'static str, LookupAction)] = &[
        ("find_order", LookupAction::FindOrder),
        ("find_orders", LookupAction::FindOrders),
        ("confirm_order", LookupAction::ConfirmOrder),
        ("cancel_order", LookupAction::CancelOrder),
        ("tag_order", LookupAction::TagOrder),
        ("add_order_note", LookupAction::AddOrderNote),
        ("fetch", LookupAction::Fetch),
    ];
    pub fn parse(s: &str) -> Option<LookupAction> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, a)| *a)
    }
}

/// A message the bot sends.
#[derive(Debug, Clone)]
pub enum MessageRt {
    Text(Template),
    Template(String),
    Buttons {
        body: Template,
        /// `(language, body)`: the body in other languages.
        translations: Vec<(String, Template)>,
        footer: Option<String>,
        buttons: Vec<(String, String)>,
    },
    List {
        body: Template,
        translations: Vec<(String, Template)>,
        button: String,
        footer: Option<String>,
        /// `(section title, rows of (id, title, description))`.
        sections: Vec<ListSection>,
        /// Rows built from data at send time (instead of `sections`).
        rows_from: Option<Box<RowsFrom>>,
    },
}

impl MessageRt {
    /// An interactive message's body for a contact whose language chain is `chain`: the first
    /// translation in it, else the body as written.
    pub fn body_for<'m>(
        body: &'m Template,
        translations: &'m [(String, Template)],
        chain: &[&str],
    ) -> &'m Template {
        chain
            .iter()
            .find_map(|l| translations.iter().find(|(k, _)| k == l).map(|(_, t)| t))
            .unwrap_or(body)
    }
}

/// A list's rows from data: `from` evaluates to an array; each element is `item` for the
/// row's templates.
#[derive(Debug, Clone)]
pub struct RowsFrom {
    pub from: AST,
    pub id: Template,
    pub title: Template,
    pub description: Option<Template>,
}

/// A list section: its title and rows of `(id, title, description)`.
pub type ListSection = (Option<String>, Vec<(String, String, Option<String>)>);

/// A compiled action (DESIGN.md §4's closed set).
#[derive(Debug, Clone)]
pub enum ActionRt {
    Reply(MessageRt),
    StartFlow(String),
    EndFlow,
    Reassign,
    Route {
        queue: String,
    },
    Assign {
        agent: Option<String>,
        queue: Option<String>,
    },
    Handoff {
        queue: Option<String>,
        agent: Option<String>,
        note: Option<Template>,
    },
    Tag(String),
    Untag(String),
    Set {
        key: String,
        value: AST,
    },
    SetStatus(Status),
    SetPriority(Priority),
    /// `None`: detected from the customer's messages again.
    SetLanguage(Option<String>),
    Ticket {
        title: Option<Template>,
        category: Option<String>,
        priority: Option<Priority>,
        queue: Option<String>,
    },
    Escalate {
        queue: String,
        reason: Option<Template>,
        priority: Priority,
    },
    Note(Template),
    Lookup {
        connector: String,
        action: LookupAction,
        by: Option<AST>,
        bind: String,
        value: Option<Template>,
    },
    Webhook {
        connector: String,
        body: Option<Template>,
    },
    Timer {
        name: String,
        after: Duration,
    },
    Snooze(Duration),
    Stop,
}

/// Where a branch leads.
#[derive(Debug, Clone, Default)]
pub struct Next {
    pub actions: Vec<ActionRt>,
    pub goto: Option<String>,
    pub end: bool,
}

/// How a step recognises the customer's answer.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// A button or list row id (or a template quick-reply payload).
    Choice(String),
    Intent(String),
    Regex(regex::Regex),
}

#[derive(Debug, Clone)]
pub struct StepRt {
    pub send: Option<MessageRt>,
    pub actions: Vec<ActionRt>,
    pub on: Vec<(Matcher, Next)>,
    pub capture: Option<(String, Option<String>)>,
    pub retries: u32,
    pub timeout: Option<(Duration, Next)>,
    pub next: Next,
    pub handoff: Option<ActionRt>,
    /// `(condition, next)` in order; the first that holds is followed (no condition: always).
    pub branch: Vec<(Option<AST>, Next)>,
}

impl StepRt {
    /// Whether the step waits for the customer (it has answers to recognise or captures one).
    pub fn waits(&self) -> bool {
        !self.on.is_empty() || self.capture.is_some()
    }

    /// The titles the step's message shows for its choices: `(id, title)` of its buttons and
    /// of its list's fixed rows (a customer may type a title instead of tapping it).
    pub fn titles(&self) -> Vec<(&str, &str)> {
        match &self.send {
            Some(MessageRt::Buttons { buttons, .. }) => buttons
                .iter()
                .map(|(id, t)| (id.as_str(), t.as_str()))
                .collect(),
            Some(MessageRt::List { sections, .. }) => sections
                .iter()
                .flat_map(|(_, rows)| rows.iter())
                .map(|(id, t, _)| (id.as_str(), t.as_str()))
                .collect(),
            _ => Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct FlowRt {
    pub start: String,
    pub steps: BTreeMap<String, StepRt>,
}

#[derive(Debug, Clone)]
pub struct RuleRt {
    pub name: String,
    /// Where it is written: `file:line:col`.
    pub origin: String,
    pub when: String,
    pub condition: Option<AST>,
    pub actions: Vec<ActionRt>,
    pub stop: bool,
    /// The intents this rule can match on (from its condition), when it can only match on some.
    pub intents: Option<BTreeSet<String>>,
}

#[derive(Debug, Clone)]
pub struct ScheduleRt {
    pub name: String,
    pub cron: cron::Schedule,
    pub condition: Option<AST>,
    pub actions: Vec<ActionRt>,
}

/// Rules by event, and for `message.received` by intent, so most rules are never evaluated.
#[derive(Debug, Clone, Default)]
pub struct RuleIndex {
    /// event → (rules that test no particular intent, rules by intent), both in file order.
    by_event: HashMap<String, EventRules>,
}

/// For one event: the rules that test no particular intent, and the rules by intent (both in
/// file order).
type EventRules = (Vec<usize>, HashMap<String, Vec<usize>>);

/// The outcome of evaluating one rule for an event.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleOutcome {
    Matched,
    NotMatched,
    Failed(ScriptError),
}

/// The rules that were evaluated for an event, in file order, and what each gave.
#[derive(Debug, Clone, Default)]
pub struct Evaluation {
    pub outcomes: Vec<(usize, RuleOutcome)>,
    /// Whether a matching rule said `stop`.
    pub stopped: bool,
}

impl Evaluation {
    pub fn matched(&self) -> impl Iterator<Item = usize> + '_ {
        self.outcomes
            .iter()
            .filter(|(_, o)| *o == RuleOutcome::Matched)
            .map(|(i, _)| *i)
    }
}

/// An intent's name, description and first few examples.
#[derive(Debug, Clone, PartialEq)]
pub struct IntentInfo {
    pub name: String,
    pub description: Option<String>,
    pub examples: Vec<String>,
    /// What a button naming it says, by language (or `text`).
    pub label: Vec<(String, String)>,
}

/// A loaded, validated and compiled rule pack.
#[derive(Debug)]
pub struct Pack {
    /// SHA-256 of every file's path and content: the pack's version.
    pub hash: String,
    pub files: Vec<String>,
    pub settings: SettingsRt,
    pub classifier: Classifier,
    /// The intents as the pack describes them (for the language-model fallback).
    pub intents: Vec<IntentInfo>,
    pub entities: Vec<(String, Extractor)>,
    pub templates: BTreeMap<String, TemplateRt>,
    /// Saved replies for agents: `(language or "text", text)` per name.
    pub snippets: BTreeMap<String, Vec<(String, String)>>,
    /// Where each thing a test case can exercise is written (`file:line:col`), by key:
    /// `rule:NAME`, `step:FLOW/STEP`, `on:FLOW/STEP/ANSWER` (as the trace names the answer:
    /// `choice ID`, `intent NAME`, `pattern RE`), `branch:FLOW/STEP/INDEX`, `template:NAME`,
    /// `intent:NAME`. What `switchyard test --coverage` measures against.
    pub origins: BTreeMap<String, String>,
    pub calendars: Arc<BTreeMap<String, CalendarRt>>,
    pub queues: BTreeMap<String, QueueRt>,
    pub connectors: BTreeMap<String, ConnectorRt>,
    pub flows: BTreeMap<String, FlowRt>,
    pub rules: Vec<RuleRt>,
    pub index: RuleIndex,
    pub schedules: Vec<ScheduleRt>,
    pub tests: Vec<TestCase>,
    pub sandbox: Sandbox,
}

/// The text for the first language of `chain` that `by_language` has, else its `text`, else
/// its first.
pub fn pick_language(by_language: &[(String, String)], chain: &[&str]) -> Option<String> {
    chain
        .iter()
        .chain(&["text"])
        .find_map(|l| by_language.iter().find(|(k, _)| k == l))
        .or(by_language.first())
        .map(|(_, t)| t.clone())
}

impl Pack {
    /// Classifies a message and extracts its entities.
    ///
    /// A message that is only an entity ("10234", "#10234", a phone number) is
    /// `settings.classifier.entity_only` (or `unknown`), never what its digits resemble; an
    /// unsure reading carries the two intents to ask between (`settings.clarify`).
    pub fn classify(&self, text: &str) -> (Classification, serde_json::Map<String, Value>) {
        let mut entities = self.extract_entities(text);
        if crate::entities::entity_only(&ascii_digits(text)) {
            // A bare number alone is the order number it asks about ("10234"), not an amount.
            for (name, ex) in &self.entities {
                let order_no = matches!(
                    ex,
                    crate::entities::Extractor::Builtin(crate::config::Builtin::OrderNo)
                );
                let phone = crate::entities::phone_pk(&ascii_digits(text)).is_some();
                if order_no && !phone && !entities.contains_key(name) {
                    if let Some(v) = ex.extract_bare(&ascii_digits(text)) {
                        entities.insert(name.clone(), v);
                    }
                }
            }
            let intent = self
                .settings
                .entity_only
                .clone()
                .unwrap_or_else(|| crate::UNKNOWN.to_string());
            let c = Classification {
                confidence: if intent == crate::UNKNOWN { 0.0 } else { 1.0 },
                best: intent.clone(),
                scores: vec![(intent.clone(), 1.0)],
                intent,
                clarify: None,
            };
            return (c, entities);
        }
        let mut c = self.classifier.classify(text);
        // A bare "no" or "thanks" is an answer to something, not a request to ask about (read
        // only when there is something to ask: most messages are not normalised again).
        c.clarify = self
            .clarify_between(&c)
            .filter(|_| crate::reply::polarity(text).is_none() && !crate::reply::is_closing(text));
        (c, entities)
    }

    /// The two intents to ask between, when `settings.clarify` says the reading is unsure:
    /// the best is at least `floor` but under the threshold, or the second is within
    /// `margin` of it — and the two together are at least even odds. A message nearest the
    /// pack's `unrelated` ones is not asked about.
    fn clarify_between(&self, c: &Classification) -> Option<(String, String)> {
        let cl = self.settings.clarify.as_ref()?;
        if c.scores.first()?.0 == crate::UNKNOWN {
            return None;
        }
        // The scores as the confidence reads them: lowered for a message far from every
        // example, so a message that shares a trigram with the pack is not asked about.
        let top = c.scores.first().map_or(0.0, |(_, p)| *p);
        let scale = if top > 0.0 { c.confidence / top } else { 0.0 };
        let mut real = c.scores.iter().filter(|(n, _)| n != crate::UNKNOWN);
        let (a, pa) = real.next()?;
        let (b, pb) = real.next()?;
        let (pa, pb) = (&(pa * scale), &(pb * scale));
        // Both unlikely: neither is worth offering; a person reads it.
        if *pa < cl.floor || pa + pb < 0.5 {
            return None;
        }
        if *pa >= self.settings.intent_threshold && pa - pb >= cl.margin {
            return None;
        }
        Some((a.clone(), b.clone()))
    }

    /// An intent's button title for a language chain (its `label`; else its name, words
    /// spaced).
    pub fn intent_label(&self, intent: &str, chain: &[&str]) -> String {
        let label = self
            .intents
            .iter()
            .find(|i| i.name == intent)
            .map(|i| &i.label);
        pick_language(label.map(Vec::as_slice).unwrap_or(&[]), chain).unwrap_or_else(|| {
            // An intent without a label: its name, cut to a button title's 20 characters.
            intent.replace('_', " ").chars().take(20).collect()
        })
    }

    /// Entity `name` in `text` for a step waiting for it, bare forms included
    /// ([`Extractor::extract_bare`]).
    pub fn extract_bare(&self, name: &str, text: &str) -> Option<Value> {
        let ex = self
            .entities
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, e)| e)?;
        ex.extract_bare(&ascii_digits(text))
    }

    /// See [`Classifier::canon`].
    pub fn canon(&self, text: &str) -> String {
        self.classifier.canon(text)
    }

    pub fn extract_entities(&self, text: &str) -> serde_json::Map<String, Value> {
        let text = ascii_digits(text);
        let mut m = serde_json::Map::new();
        for (name, ex) in &self.entities {
            if let Some(v) = ex.extract(&text) {
                m.insert(name.clone(), v);
            }
        }
        m
    }

    /// Evaluates, in file order, the conditions of the rules for `event` that can match
    /// (indexed by event and intent), until a matching rule says `stop`.
    pub fn evaluate(
        &self,
        event: &str,
        intent: &str,
        scope: &mut Scope<'static>,
        clock: Clock,
    ) -> Evaluation {
        let mut ev = Evaluation::default();
        let Some((general, by_intent)) = self.index.by_event.get(event) else {
            return ev;
        };
        let specific = by_intent.get(intent).map(Vec::as_slice).unwrap_or(&[]);
        // Merge the two sorted lists to keep file order.
        let (mut i, mut j) = (0, 0);
        while i < general.len() || j < specific.len() {
            let idx = if j >= specific.len() || (i < general.len() && general[i] < specific[j]) {
                i += 1;
                general[i - 1]
            } else {
                j += 1;
                specific[j - 1]
            };
            let rule = &self.rules[idx];
            let outcome = match &rule.condition {
                None => RuleOutcome::Matched,
                Some(ast) => match self.sandbox.eval_bool(ast, scope, clock) {
                    Ok(true) => RuleOutcome::Matched,
                    Ok(false) => RuleOutcome::NotMatched,
                    Err(e) => RuleOutcome::Failed(e),
                },
            };
            let stop = outcome == RuleOutcome::Matched && rule.stop;
            ev.outcomes.push((idx, outcome));
            if stop {
                ev.stopped = true;
                break;
            }
        }
        ev
    }

    /// Evaluates a script in a scope (e.g. a lookup's `by`).
    pub fn eval(
        &self,
        ast: &AST,
        scope: &mut Scope<'static>,
        clock: Clock,
    ) -> Result<Dynamic, ScriptError> {
        self.sandbox.eval(ast, scope, clock)
    }

    /// Every scope name set to its empty value, including the pack's `lookup … as:` names.
    pub fn empty_vars(&self) -> Vars {
        let mut v = Vars::empty();
        for n in self.sandbox.extra_names() {
            v.set(n, Dynamic::UNIT);
        }
        v
    }

    /// Scope values for a customer message, before any lookup: what `classify` and the rules
    /// see. The engine adds the conversation, contact and lookups.
    pub fn message_vars(&self, text: &str, now: DateTime<Utc>) -> (Classification, Vars) {
        let (c, entities) = self.classify(text);
        let mut v = self.empty_vars();
        v.set_json(
            "message",
            &serde_json::json!({ "text": text, "kind": "text" }),
        );
        v.set("intent", Dynamic::from(c.intent.clone()));
        v.set("confidence", Dynamic::from(c.confidence as f64));
        v.set_json("entities", &Value::Object(entities));
        v.set(
            "now",
            Dynamic::from(now.with_timezone(&self.settings.timezone).to_rfc3339()),
        );
        (c, v)
    }
}

impl RuleIndex {
    pub(crate) fn by_event_mut(&mut self, event: &str) -> &mut EventRules {
        self.by_event.entry(event.to_string()).or_default()
    }

    /// How many rules can run for an event and intent (for reports and benchmarks).
    pub fn candidates(&self, event: &str, intent: &str) -> usize {
        self.by_event
            .get(event)
            .map(|(g, s)| g.len() + s.get(intent).map_or(0, Vec::len))
            .unwrap_or(0)
    }
}
