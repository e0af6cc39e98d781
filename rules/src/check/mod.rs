//! Phases 2 and 3 of validation: names and references, limits, durations, cron, scripts and
//! templates, flow reachability and the 24-hour window, while building the compiled [`Pack`].
//! Every problem is reported; the pack is returned only when there is no error.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;
use sha2::{Digest, Sha256};

use crate::calendar::{
    parse_clock, parse_date, parse_duration, parse_tz, weekday_index, CalendarRt,
};
use crate::channel::{ChannelCaps, Channels};
use crate::classify::{normalize, Classifier, IntentSpec, UNKNOWN};
use crate::config::RuleEvent;
use crate::config::*;
use crate::diag::{name_hint, Diagnostics};
use crate::entities::Extractor;
use crate::load::{Item, RawPack};
use crate::pack::*;
use crate::script::{CompileError, Sandbox, SCOPE_NAMES};
use crate::span::{Pos, Sp};
use crate::template::Template;

mod actions;
mod flows;
mod irreversible;
mod messages;
mod rules;
mod sections;

use flows::*;
use messages::*;
use rules::*;
use sections::*;

/// Events a rule may name in `when` (plus `timer.<name>` and `schedule.<name>`).
pub const EVENTS: &[&str] = RuleEvent::NAMES;

/// Events that usually arrive when the customer has not written for a day: what they send
/// must be an approved WhatsApp template.
fn outside_window(event: &str) -> bool {
    event.starts_with("order.") || event.starts_with("schedule.")
}

struct Ctx<'a> {
    raw: &'a RawPack,
    /// The limits the pack's messages must keep to (the strictest served channel's).
    caps: ChannelCaps,
    d: &'a mut Diagnostics,
    sandbox: &'a Sandbox,
    queues: BTreeSet<String>,
    flows: BTreeSet<String>,
    templates: BTreeSet<String>,
    intents: BTreeSet<String>,
    entities: BTreeSet<String>,
    calendars: BTreeSet<String>,
    connectors: BTreeMap<String, Option<ConnectorKind>>,
    /// Templates that have a WhatsApp form.
    wa_templates: BTreeSet<String>,
    /// Where each thing a test can exercise is written (see [`Pack::origins`]).
    origins: BTreeMap<String, String>,
}

#[derive(Clone, Copy, PartialEq)]
enum ConnectorKind {
    Store,
    Webhook,
    Http,
}

impl Ctx<'_> {
    /// Records where `key` (`rule:NAME`, `step:FLOW/STEP`, …) is written.
    fn origin(&mut self, key: String, f: usize, pos: Pos) {
        let at = format!("{}:{}", self.raw.files[f].display, pos);
        self.origins.entry(key).or_insert(at);
    }

    fn file(&self, f: usize) -> &str {
        &self.raw.files[f].display
    }

    fn err(&mut self, f: usize, pos: Pos, msg: impl Into<String>) -> &mut crate::diag::Diagnostic {
        let file = self.raw.files[f].display.clone();
        self.d.error(&file, pos, msg)
    }

    fn warn(&mut self, f: usize, pos: Pos, msg: impl Into<String>) -> &mut crate::diag::Diagnostic {
        let file = self.raw.files[f].display.clone();
        self.d.warning(&file, pos, msg)
    }

    fn broken(&self, section: &str, name: &str) -> bool {
        self.raw
            .broken
            .get(section)
            .is_some_and(|s| s.contains(name))
    }

    /// Checks that `name` is defined in `section`; reports it otherwise.
    fn reference(
        &mut self,
        f: usize,
        name: &Sp<String>,
        section: &'static str,
        kind: &str,
    ) -> bool {
        let set = match section {
            "queues" => &self.queues,
            "flows" => &self.flows,
            "templates" => &self.templates,
            "intents" => &self.intents,
            "entities" => &self.entities,
            "calendars" => &self.calendars,
            _ => unreachable!("a section with names"),
        };
        if set.contains(&name.value) {
            return true;
        }
        if self.broken(section, &name.value) {
            return false;
        }
        // Names whose definitions have errors of their own are still defined as far as the
        // hint goes: a typo in a queue's keys does not make `retruns` lose its "did you mean".
        let broken = self.raw.broken.get(section).into_iter().flatten();
        let names = set
            .iter()
            .chain(broken)
            .filter(|n| !n.is_empty())
            .map(String::as_str);
        let hint = self.unread_files(name_hint(&name.value, section, names));
        self.err(f, name.pos, format!("undefined {kind} `{}`", name.value))
            .hint(hint);
        false
    }

    /// `hint`, saying as well which files could not be read (a YAML error, reported first):
    /// a name "undefined" may be defined there.
    fn unread_files(&self, hint: String) -> String {
        match self.raw.broken.get("file").filter(|s| !s.is_empty()) {
            Some(_) if hint.starts_with("did you mean") => hint,
            None => hint,
            Some(files) => {
                let files: Vec<String> = files.iter().map(|f| format!("`{f}`")).collect();
                format!(
                    "{hint} — {} could not be read (its YAML error comes first) and may define it",
                    files.join(", ")
                )
            }
        }
    }

    fn connector(&mut self, f: usize, name: &Sp<String>, want: ConnectorKind) -> bool {
        match self.connectors.get(&name.value) {
            Some(Some(k)) if *k == want => true,
            Some(Some(_)) => {
                let what = match want {
                    ConnectorKind::Store => "a store connector (shopify, static or demo)",
                    ConnectorKind::Webhook => "a webhook connector",
                    ConnectorKind::Http => "an http connector",
                };
                self.err(
                    f,
                    name.pos,
                    format!("connector `{}` is not {what}", name.value),
                );
                false
            }
            Some(None) => false,
            None => {
                let hint = name_hint(
                    &name.value,
                    "connectors",
                    self.connectors.keys().map(String::as_str),
                );
                self.err(f, name.pos, format!("undefined connector `{}`", name.value))
                    .hint(hint);
                false
            }
        }
    }

    /// Where a position inside a YAML scalar's text is in the file.
    fn inner_pos(&self, f: usize, at: Pos, line: usize, col: usize) -> Pos {
        inner_pos(&self.raw.files[f].text, at, line, col)
    }

    fn script(&mut self, f: usize, src: &Sp<String>) -> Option<rhai::AST> {
        match self.sandbox.compile(&src.value) {
            Ok(ast) => {
                self.known_fields(f, src, std::slice::from_ref(&ast));
                self.compared_names(f, src, &ast);
                let assigned = crate::script::assigned_scope_names(&ast);
                if let Some(name) = assigned.first() {
                    self.err(
                        f,
                        src.pos,
                        format!("the script assigns to `{name}`, which scripts can only read"),
                    )
                    .hint("to compare, write `==` (`=` assigns)");
                    return None;
                }
                Some(ast)
            }
            Err(CompileError { message, line, col }) => {
                let pos = self.inner_pos(f, src.pos, line, col);
                let hint = script_hint(&message);
                let d = self.err(f, pos, format!("script does not compile: {message}"));
                if let Some(h) = hint {
                    d.hint(h);
                }
                None
            }
        }
    }

    fn template(&mut self, f: usize, src: &Sp<String>) -> Option<Template> {
        self.template_with(f, src, &[])
    }

    /// A template that also sees `local` names (a list row's `item`).
    fn template_with(&mut self, f: usize, src: &Sp<String>, local: &[&str]) -> Option<Template> {
        match Template::compile_with(self.sandbox, &src.value, local) {
            Ok(t) => {
                let holes: Vec<rhai::AST> = t.holes().cloned().collect();
                self.known_fields(f, src, &holes);
                Some(t)
            }
            Err(e) => {
                // Offset in the template text → line/col inside the scalar.
                let before = &src.value[..e.offset.min(src.value.len())];
                let line = before.matches('\n').count() + 1;
                let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
                let (line, col) = match &e.inner {
                    Some(inner) if inner.line <= 1 => (line, col + inner.col - 1),
                    Some(inner) => (line + inner.line - 1, inner.col),
                    None => (line, col),
                };
                let pos = self.inner_pos(f, src.pos, line, col);
                let mut hint = script_hint(&e.message);
                if let Some(h) = hint.as_mut().filter(|h| h.starts_with("scripts can use")) {
                    for n in local {
                        h.push_str(", ");
                        h.push_str(n);
                    }
                }
                let d = self.err(f, pos, format!("template does not compile: {}", e.message));
                if let Some(h) = hint {
                    d.hint(h);
                }
                None
            }
        }
    }

    /// Fields of fixed-shape scope objects that do not exist (`ticket.idd`): an error, as they
    /// would silently read nothing.
    /// A literal compared with a queue, status or priority must be one (a typo there disables
    /// the rule's condition silently).
    fn compared_names(&mut self, f: usize, src: &Sp<String>, ast: &rhai::AST) {
        for (field, lit) in crate::script::compared_literals(ast) {
            let (names, what): (Vec<String>, &str) = match field.as_str() {
                "conversation.queue" | "ticket.queue" => {
                    (self.queues.iter().cloned().collect(), "queue of the pack")
                }
                "conversation.status" => (
                    crate::config::Status::NAMES
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                    "conversation status",
                ),
                "conversation.priority" | "ticket.priority" => (
                    crate::config::Priority::NAMES
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                    "priority",
                ),
                // What detection can say of a message.
                "message.language" => (
                    crate::lang::DETECTED
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                    "language a message is detected in",
                ),
                // Any code a person or a rule may set.
                "contact.language" if crate::lang::is_code(&lit) => continue,
                "contact.language" => (
                    crate::lang::DETECTED
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                    "language code",
                ),
                _ => continue,
            };
            if names.contains(&lit) {
                continue;
            }
            let hint = crate::diag::did_you_mean(&lit, names.iter().map(String::as_str))
                .unwrap_or_else(|| format!("one of: {}", names.join(", ")));
            self.err(
                f,
                src.pos,
                format!("`{field}` is compared with \"{lit}\", which is no {what}"),
            )
            .hint(hint);
        }
    }

    fn known_fields(&mut self, f: usize, src: &Sp<String>, asts: &[rhai::AST]) {
        for ast in asts {
            for m in crate::script::method_calls(ast) {
                if self.sandbox.has_function(&m) {
                    continue;
                }
                let sandbox = self.sandbox;
                let d = self.err(f, src.pos, format!("scripts have no method `{m}`"));
                match crate::diag::did_you_mean(&m, sandbox.function_names()) {
                    Some(h) => d.hint(h),
                    None => d.hint("strings have e.g. `contains`, `starts_with`, `to_lower`, `len`; arrays `contains`, `len`"),
                };
            }
            for (obj, field) in crate::script::unknown_fields(ast) {
                let fields = crate::script::KNOWN_FIELDS
                    .iter()
                    .find(|(o, _)| *o == obj)
                    .map(|(_, fs)| *fs)
                    .unwrap_or_default();
                let d = self.err(f, src.pos, format!("`{obj}` has no field `{field}`"));
                match crate::diag::did_you_mean(&field, fields.iter().copied()) {
                    Some(h) => d.hint(h),
                    None => d.hint(format!("{obj} has: {}", fields.join(", "))),
                };
            }
        }
    }

    fn duration(&mut self, f: usize, s: &Sp<String>) -> Option<Duration> {
        match parse_duration(&s.value) {
            Ok(d) => Some(d),
            Err(m) => {
                self.err(f, s.pos, m)
                    .hint("write a whole number and a unit: `90s`, `15m`, `2h`, `1d`");
                None
            }
        }
    }

    fn limit(&mut self, f: usize, s: &Sp<String>, what: &str, max: usize) {
        let n = s.value.chars().count();
        if n > max {
            self.err(
                f,
                s.pos,
                format!(
                    "{what} is {n} characters; {} allows at most {max}",
                    self.caps.label
                ),
            );
        }
    }

    fn ident(&mut self, f: usize, s: &Sp<String>, what: &str) -> bool {
        let ok = !s.value.is_empty()
            && s.value
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && s.value
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !ok {
            self.err(f, s.pos, format!("`{}` is not a valid {what}", s.value))
                .hint("use lower-case letters, digits and `_`, starting with a letter");
        }
        ok
    }

    fn tag(&mut self, f: usize, t: &Sp<String>) -> bool {
        let ok = !t.value.is_empty()
            && t.value.len() <= 64
            && t.value
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | ':' | '.'));
        if !ok {
            self.err(f, t.pos, format!("`{}` is not a valid tag", t.value))
                .hint("tags are up to 64 letters, digits, `_`, `-`, `:` or `.`");
        }
        ok
    }
}

/// Maps a position inside a scalar's text to the file: quoted scalars start one column after
/// the quote, block scalars (`|`, `>`) on the next line at their indentation.
pub(crate) fn inner_pos(text: &str, at: Pos, line: usize, col: usize) -> Pos {
    let lines: Vec<&str> = text.lines().collect();
    let Some(first) = lines.get((at.line as usize).saturating_sub(1)) else {
        return at;
    };
    let start: Vec<char> = first
        .chars()
        .skip((at.col as usize).saturating_sub(1))
        .collect();
    let at_line_start = first
        .chars()
        .take((at.col as usize).saturating_sub(1))
        .all(|c| c == ' ');
    match start.first() {
        Some('"') | Some('\'') if line <= 1 => Pos::new(at.line, at.col + col as u32),
        // The content of a block scalar: every line has the first line's indentation.
        _ if at_line_start => Pos::new(at.line + line as u32 - 1, at.col + col as u32 - 1),
        Some('|') | Some('>') => {
            let l = at.line as usize + line;
            let indent = lines
                .get(l - 1)
                .map(|s| s.chars().take_while(|c| *c == ' ').count())
                .unwrap_or(0);
            Pos::new(l as u32, (indent + col) as u32)
        }
        _ if line <= 1 => Pos::new(at.line, at.col + col as u32 - 1),
        _ => Pos::new(at.line + line as u32 - 1, col as u32),
    }
}

fn script_hint(message: &str) -> Option<String> {
    if message.contains("Undefined variable: item") {
        Some("`item` is known only in a list's `row` (each element of its `rows_from`)".into())
    } else if message.contains("Undefined variable") {
        Some(format!("scripts can use: {}", SCOPE_NAMES.join(", ")))
    } else if message.contains("Invalid character: '") {
        Some("Rhai strings take double quotes: \"text\"".into())
    } else if message.contains("is disabled") {
        Some("the sandbox evaluates expressions over the scope; `eval` is not available".into())
    } else {
        None
    }
}

/// Checks the whole raw pack and builds it. Returns `None` when any error was reported.
pub fn build(raw: &RawPack, d: &mut Diagnostics, channels: &Channels) -> Option<Pack> {
    let first = 0usize;
    if raw.files.is_empty() {
        return None;
    }

    // Version.
    if raw.version.is_empty()
        && !raw.broken.contains_key("version")
        && !raw.broken.contains_key("file")
    {
        let file = raw.files[first].display.clone();
        d.error(&file, Pos::UNKNOWN, "the pack has no `version`")
            .hint("add `version: 1` to one file");
    }
    for (f, v) in &raw.version {
        if v.value != 1 {
            let file = raw.files[*f].display.clone();
            d.error(
                &file,
                v.pos,
                format!("unsupported pack format version {}", v.value),
            )
            .hint("this Switchyard reads `version: 1`");
        }
    }

    // Duplicates across files.
    duplicates(raw, d);

    // Calendars first: scripts may call `in_calendar`.
    let default_tz = raw
        .settings
        .first()
        .and_then(|(_, s)| s.timezone.as_ref())
        .and_then(|t| parse_tz(&t.value).ok())
        .unwrap_or(chrono_tz::UTC);
    let mut calendars = BTreeMap::new();
    for it in &raw.calendars {
        if let Some(c) = calendar(raw, it, default_tz, d) {
            calendars.insert(it.name.value.clone(), c);
        }
    }
    let calendars = Arc::new(calendars);

    let extra_names = lookup_binds(raw);
    let sandbox = Sandbox::new(calendars.clone(), extra_names).with_values(
        sections::values(raw),
        raw.settings
            .first()
            .and_then(|(_, s)| s.default_language.as_ref())
            .map_or("en", |l| l.value.as_str()),
    );

    fn names<T>(v: &[Item<T>]) -> BTreeSet<String> {
        v.iter().map(|i| i.name.value.clone()).collect()
    }
    let mut cx = Ctx {
        raw,
        d,
        sandbox: &sandbox,
        caps: channels.strictest(),
        queues: names(&raw.queues),
        flows: names(&raw.flows),
        templates: names(&raw.templates),
        intents: names(&raw.intents),
        entities: names(&raw.entities),
        calendars: names(&raw.calendars),
        connectors: raw
            .connectors
            .iter()
            .map(|i| {
                let k = match &i.value.value {
                    Connector::Webhook { .. } => ConnectorKind::Webhook,
                    Connector::Http { .. } => ConnectorKind::Http,
                    _ => ConnectorKind::Store,
                };
                (i.name.value.clone(), Some(k))
            })
            .chain(
                raw.broken
                    .get("connectors")
                    .into_iter()
                    .flatten()
                    .map(|n| (n.clone(), None)),
            )
            .collect(),
        wa_templates: raw
            .templates
            .iter()
            .filter(|t| t.value.whatsapp.is_some())
            .map(|t| t.name.value.clone())
            .collect(),
        origins: BTreeMap::new(),
    };

    // Settings.
    let settings = settings(&mut cx, default_tz);

    // Intents and the classifier.
    let intent_specs = intents(&mut cx);

    // Entities.
    let mut entities = Vec::new();
    for it in &raw.entities {
        if let Some(x) = entity(&mut cx, it) {
            entities.push((it.name.value.clone(), x));
        }
    }

    // Templates.
    let mut templates = BTreeMap::new();
    for it in &raw.templates {
        if let Some(t) = template_def(&mut cx, it) {
            templates.insert(it.name.value.clone(), t);
        }
        cx.origin(format!("template:{}", it.name.value), it.file, it.name.pos);
    }
    for it in &raw.intents {
        cx.origin(format!("intent:{}", it.name.value), it.file, it.name.pos);
    }

    // Saved replies.
    let mut snippets = BTreeMap::new();
    for it in &raw.snippets {
        let variants: Vec<(String, String)> = match &it.value.value {
            crate::config::Snippet::Text(t) => vec![("text".into(), t.clone())],
            crate::config::Snippet::Languages(m) => {
                m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
            }
        };
        let (f, pos) = (it.file, it.value.pos);
        if variants.is_empty() {
            cx.err(f, pos, format!("snippet `{}` has no text", it.name.value))
                .hint("write the text, or `en: …`, `ur: …` for each language");
            continue;
        }
        for (lang, text) in &variants {
            if text.trim().is_empty() {
                cx.err(
                    f,
                    pos,
                    format!("snippet `{}` ({lang}) is empty", it.name.value),
                );
            } else if text.chars().count() > 4096 {
                cx.err(
                    f,
                    pos,
                    format!(
                        "snippet `{}` ({lang}) is longer than 4,096 characters",
                        it.name.value
                    ),
                )
                .hint("WhatsApp sends at most 4,096 characters of text");
            } else if text.contains("{{") {
                cx.err(
                    f,
                    pos,
                    format!(
                        "snippet `{}` ({lang}) has a `{{{{ }}}}` hole",
                        it.name.value
                    ),
                )
                .hint("a snippet is text the agent edits before sending; use a template for holes");
            }
        }
        snippets.insert(it.name.value.clone(), variants);
    }

    // Queues.
    let mut queues = BTreeMap::new();
    for it in &raw.queues {
        let f = it.file;
        let q = &it.value.value;
        let mut rt = QueueRt {
            assignment: q.assignment.value,
            sla: None,
            on_shift_end: q.on_shift_end.as_ref().map(|x| x.value).unwrap_or_default(),
        };
        if let Some(sla) = &q.sla {
            let sla = &sla.value;
            let mut targets =
                |t: [&Option<Sp<String>>; 3]| t.map(|x| x.as_ref().and_then(|x| cx.duration(f, x)));
            let mut srt = SlaRt {
                targets: targets([&sla.first_response, &sla.next_response, &sla.resolution]),
                ..Default::default()
            };
            if let Some(bp) = &sla.by_priority {
                for (i, t) in [&bp.low, &bp.normal, &bp.high, &bp.urgent]
                    .into_iter()
                    .enumerate()
                {
                    if let Some(t) = t {
                        srt.by_priority[i] =
                            targets([&t.first_response, &t.next_response, &t.resolution]);
                    }
                }
            }
            if let Some(c) = &sla.calendar {
                if cx.reference(f, c, "calendars", "calendar") {
                    srt.calendar = Some(c.value.clone());
                }
            }
            if let Some(w) = &sla.warn_at {
                if w.value > 0.0 && w.value < 1.0 {
                    srt.warn_at = Some(w.value);
                } else {
                    cx.err(f, w.pos, format!("warn_at is {}, not a fraction", w.value))
                        .hint("a number between 0 and 1, e.g. `0.8` to warn when 80% of the time has passed");
                }
            }
            rt.sla = Some(srt);
        }
        queues.insert(it.name.value.clone(), rt);
    }

    // Connectors.
    let connectors: BTreeMap<String, ConnectorRt> = raw
        .connectors
        .iter()
        .map(|it| {
            let rt = match &it.value.value {
                Connector::Shopify {
                    shop_env,
                    token_env,
                    api_version,
                    fallback,
                } => ConnectorRt::Shopify {
                    shop_env: shop_env.clone(),
                    token_env: token_env.clone(),
                    api_version: api_version.clone(),
                    fallback: fallback.clone(),
                },
                Connector::Demo {} => ConnectorRt::Demo,
                Connector::Static { file } => ConnectorRt::Static { file: file.clone() },
                Connector::Http {
                    method,
                    url,
                    headers,
                    body,
                    map,
                    timeout,
                    retries,
                    cache,
                    irreversible,
                } => ConnectorRt::Http(HttpLookupRt {
                    method: method
                        .clone()
                        .unwrap_or_else(|| "GET".into())
                        .to_ascii_uppercase(),
                    url: url.clone(),
                    headers: headers.clone(),
                    body: body.clone(),
                    map: map.clone(),
                    timeout: timeout
                        .as_deref()
                        .and_then(|t| parse_duration(t).ok())
                        .unwrap_or(Duration::from_secs(5)),
                    retries: retries.unwrap_or(1),
                    cache: cache.as_deref().and_then(|t| parse_duration(t).ok()),
                    irreversible: *irreversible,
                }),
                Connector::Webhook {
                    url_env,
                    secret_env,
                } => ConnectorRt::Webhook {
                    url_env: url_env.clone(),
                    secret_env: secret_env.clone(),
                },
            };
            (it.name.value.clone(), rt)
        })
        .collect();

    // Fallbacks name a static or demo store; static files are relative paths in the pack.
    // (Values inside a tagged connector carry no position: the connector's name does.)
    for it in &raw.connectors {
        let (f, pos) = (it.file, it.name.pos);
        match &it.value.value {
            Connector::Shopify {
                fallback: Some(fb), ..
            } if fb != "demo" => {
                let ok = raw.connectors.iter().any(|c| {
                    c.name.value == *fb
                        && matches!(c.value.value, Connector::Static { .. } | Connector::Demo {})
                });
                if !ok {
                    cx.err(f, pos, format!("fallback `{fb}` is not a `static` or `demo` connector of this pack"))
                        .hint("`fallback: demo` uses the orders of the pack's test fixtures; or name a connector `{ type: static, file: orders.json }`");
                }
            }
            Connector::Http {
                method,
                url,
                body,
                map,
                timeout,
                cache,
                ..
            } => {
                let m = method.as_deref().unwrap_or("GET").to_ascii_uppercase();
                if m != "GET" && m != "POST" {
                    cx.err(f, pos, format!("method `{m}` is not GET or POST"));
                }
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    cx.err(f, pos, format!("url `{url}` is not an http(s) URL"));
                }
                for (what, t) in [("url", Some(url)), ("body", body.as_ref())] {
                    if let Some(bad) = t.and_then(|t| http_holes(t).err()) {
                        cx.err(f, pos, format!("{what}: `{{{{{bad}}}}}` is not `{{{{key}}}}` or `{{{{value}}}}`"))
                            .hint("an http connector fills in `{{key}}` (the lookup's `by`) and `{{value}}`; credentials come from `headers` (header → environment variable)");
                    }
                }
                if map.is_empty() {
                    cx.err(
                        f,
                        pos,
                        "an http connector needs a `map` of field → JSON pointer",
                    )
                    .hint("e.g. `map: { status: /dist/transactionStatus }`");
                }
                for (k, p) in map {
                    if !(p.is_empty() || p.starts_with('/')) {
                        cx.err(f, pos, format!("map `{k}`: `{p}` is not a JSON pointer"))
                            .hint("a JSON pointer starts with `/`: `/data/0/status`");
                    }
                }
                for (what, d) in [("timeout", timeout), ("cache", cache)] {
                    if let Some(Err(e)) = d.as_deref().map(parse_duration) {
                        cx.err(f, pos, format!("{what}: {e}"));
                    }
                }
            }
            Connector::Static { file } => {
                let p = std::path::Path::new(file);
                if file.trim().is_empty()
                    || p.is_absolute()
                    || p.components()
                        .any(|c| matches!(c, std::path::Component::ParentDir))
                    || !file.ends_with(".json")
                {
                    cx.err(f, pos, format!("`{file}` is not a JSON file inside the pack"))
                        .hint("a path relative to the pack's directory, ending in `.json` (YAML files there are read as pack files)");
                }
            }
            _ => {}
        }
    }

    // Flows.
    let mut flows = BTreeMap::new();
    for it in &raw.flows {
        if let Some(fl) = flow(&mut cx, it) {
            flows.insert(it.name.value.clone(), fl);
        }
    }

    // Rules.
    let mut rules = Vec::new();
    for (f, r) in &raw.rules {
        if let Some(rt) = rule(&mut cx, *f, r) {
            rules.push(rt);
        }
    }
    rules::shadowed_rules(&mut cx);
    irreversible::unconfirmed(&mut cx, &flows, &rules, &connectors);

    // Schedules.
    let mut schedules = Vec::new();
    for (f, s) in &raw.schedules {
        if let Some(rt) = schedule(&mut cx, *f, s) {
            schedules.push(rt);
        }
    }

    // The 24-hour window.
    window_checks(&mut cx);

    // Tests.
    for (f, t) in &raw.tests {
        test_case(&mut cx, *f, t);
    }

    // The classifier, trained even when other sections have errors: what it confuses is
    // worth knowing at the same time.
    let settings = settings?;
    // Asking which intent: every intent it may name should say how, in the customers' words.
    if settings.clarify.is_some() {
        for it in &raw.intents {
            if it.value.value.label.is_none() {
                cx.warn(
                    it.file,
                    it.name.pos,
                    format!(
                        "intent `{}` has no `label`: the clarifying question names it `{}`",
                        it.name.value,
                        it.name.value.replace('_', " ")
                    ),
                )
                .hint("add `label: { en: \"Cancel my order\", roman_ur: …, ur: … }` (at most 20 characters each)");
            }
        }
    }
    let mut intent_specs = intent_specs;
    if !settings.unrelated.is_empty() {
        // The "none of these" class: a message nearest to it is `unknown`.
        intent_specs.push(crate::classify::IntentSpec {
            name: crate::UNKNOWN.to_string(),
            examples: settings.unrelated.clone(),
            keywords: vec![],
            patterns: vec![],
            description: None,
            label: vec![],
        });
    }
    let intents_described = intent_specs
        .iter()
        .filter(|s| s.name != crate::UNKNOWN)
        .map(|s| crate::pack::IntentInfo {
            name: s.name.clone(),
            description: s.description.clone(),
            examples: s.examples.iter().take(4).cloned().collect(),
            label: s.label.clone(),
        })
        .collect();
    let classifier = Classifier::train(
        &intent_specs,
        settings.intent_threshold,
        crate::lexicon::Lexicon::new(&settings.synonyms),
    );
    // Intents the classifier confuses on their own examples (each left out in turn): a
    // fifth or more of one intent's examples read as another.
    let mut warned: Vec<(String, String)> = Vec::new();
    for (a, b, exs) in classifier.confusions(&intent_specs) {
        let Some(it) = raw.intents.iter().find(|i| i.name.value == a) else {
            continue;
        };
        let total = it.value.examples.len();
        // Once per pair: the more confused side (an intent defined twice is its own error).
        if a == b
            || exs.len() < 2
            || exs.len() * 5 < total
            || warned.contains(&(b.clone(), a.clone()))
        {
            continue;
        }
        warned.push((a.clone(), b.clone()));
        // An intent whose name is an error already (`yes:` read as `true`) is not also warned.
        let file = &raw.files[it.file].display;
        if cx
            .d
            .errors()
            .any(|d| &d.file == file && d.pos == it.name.pos)
        {
            continue;
        }
        let shown: Vec<String> = exs.iter().take(3).map(|e| format!("\"{e}\"")).collect();
        let many = if exs.len() == 1 {
            "example"
        } else {
            "examples"
        };
        cx.warn(
            it.file,
            it.name.pos,
            format!(
                "intents `{a}` and `{b}` are confused: {} of {total} {many} of `{a}` read as `{b}` ({})",
                exs.len(),
                shown.join(", ")
            ),
        )
        .hint(format!("make the examples of `{a}` and `{b}` say what tells them apart, or merge the two intents"));
    }
    if cx.d.has_errors() {
        return None;
    }
    let index = index_rules(&rules);
    let mut hasher = Sha256::new();
    for f in &raw.files {
        hasher.update(f.rel.as_bytes());
        hasher.update([0]);
        hasher.update(f.text.as_bytes());
        hasher.update([0]);
    }
    Some(Pack {
        hash: hex::encode(hasher.finalize()),
        files: raw.files.iter().map(|f| f.rel.clone()).collect(),
        settings,
        classifier,
        intents: intents_described,
        entities,
        templates,
        snippets,
        origins: std::mem::take(&mut cx.origins),
        calendars,
        queues,
        connectors,
        flows,
        rules,
        index,
        schedules,
        tests: Vec::new(),
        sandbox,
    })
}

/// The `{{…}}` holes of an http connector's URL or body: `Err(name)` for one that is not
/// `key` or `value`.
pub fn http_holes(t: &str) -> Result<(), String> {
    let mut rest = t;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        let Some(j) = after.find("}}") else {
            return Err(after.chars().take(20).collect());
        };
        let name = after[..j].trim();
        if name != "key" && name != "value" {
            return Err(name.to_string());
        }
        rest = &after[j + 2..];
    }
    Ok(())
}
