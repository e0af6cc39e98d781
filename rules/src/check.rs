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
use crate::classify::{normalize, Classifier, IntentSpec, UNKNOWN};
use crate::config::*;
use crate::diag::{name_hint, Diagnostics};
use crate::entities::Extractor;
use crate::load::{Item, RawPack};
use crate::pack::*;
use crate::script::{CompileError, Sandbox, SCOPE_NAMES};
use crate::span::{Pos, Sp};
use crate::template::Template;

/// Events a rule may name in `when` (plus `timer.<name>` and `schedule.<name>`).
pub const EVENTS: &[&str] = &[
    "message.received",
    "message.status",
    "conversation.created",
    "conversation.assigned",
    "conversation.status_changed",
    "ticket.created",
    "ticket.updated",
    "agent.replied",
    "flow.completed",
    "flow.abandoned",
    "sla.breached",
    "sla.warning",
    "order.created",
    "order.updated",
    "order.cancelled",
    "order.fulfilled",
];

/// Events that usually arrive when the customer has not written for a day: what they send
/// must be an approved WhatsApp template.
fn outside_window(event: &str) -> bool {
    event.starts_with("order.") || event.starts_with("schedule.")
}

/// WhatsApp limits (see `../shared/reference/whatsapp-shopify.md`).
pub mod wa {
    pub const MAX_BUTTONS: usize = 3;
    pub const BUTTON_TITLE: usize = 20;
    pub const BUTTON_ID: usize = 256;
    pub const BUTTON_BODY: usize = 1024;
    pub const FOOTER: usize = 60;
    pub const LIST_ROWS: usize = 10;
    pub const LIST_SECTIONS: usize = 10;
    pub const LIST_BUTTON: usize = 20;
    pub const SECTION_TITLE: usize = 24;
    pub const ROW_TITLE: usize = 24;
    pub const ROW_ID: usize = 200;
    pub const ROW_DESCRIPTION: usize = 72;
    pub const TEXT_BODY: usize = 4096;
    pub const TEMPLATE_BUTTONS: usize = 10;
}

struct Ctx<'a> {
    raw: &'a RawPack,
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
}

#[derive(Clone, Copy, PartialEq)]
enum ConnectorKind {
    Store,
    Webhook,
    Http,
}

impl Ctx<'_> {
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
        let hint = name_hint(&name.value, section, set.iter().map(String::as_str));
        self.err(f, name.pos, format!("undefined {kind} `{}`", name.value))
            .hint(hint);
        false
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
            Ok(ast) => Some(ast),
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
            Ok(t) => Some(t),
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
                format!("{what} is {n} characters; WhatsApp allows at most {max}"),
            );
        }
    }

    fn message(&mut self, f: usize, send: &Sp<Send>) -> Option<MessageRt> {
        match &send.value {
            Send::Text(t) => {
                self.limit(f, t, "text", wa::TEXT_BODY);
                self.template(f, t).map(MessageRt::Text)
            }
            Send::Template(name) => self
                .reference(f, name, "templates", "template")
                .then(|| MessageRt::Template(name.value.clone())),
            Send::Buttons(b) => {
                let n = b.buttons.len();
                if n == 0 || n > wa::MAX_BUTTONS {
                    self.err(
                        f,
                        b.pos,
                        format!(
                            "{n} reply buttons; WhatsApp allows 1 to {}",
                            wa::MAX_BUTTONS
                        ),
                    )
                    .hint("use a `list` for more choices");
                }
                self.limit(f, &b.body, "button message body", wa::BUTTON_BODY);
                if let Some(ft) = &b.footer {
                    self.limit(f, ft, "footer", wa::FOOTER);
                }
                let mut ids = BTreeSet::new();
                let mut titles = BTreeSet::new();
                for c in &b.buttons {
                    self.limit(f, &c.title, "button title", wa::BUTTON_TITLE);
                    self.limit(f, &c.id, "button id", wa::BUTTON_ID);
                    if c.description.is_some() {
                        self.err(f, c.pos, "reply buttons have no description")
                            .hint("only list rows have one");
                    }
                    if !ids.insert(c.id.value.clone()) {
                        self.err(
                            f,
                            c.id.pos,
                            format!("button id `{}` is used twice in this message", c.id.value),
                        );
                    }
                    if !titles.insert(c.title.value.clone()) {
                        self.err(
                            f,
                            c.title.pos,
                            format!(
                                "button title `{}` is used twice; WhatsApp needs unique titles",
                                c.title.value
                            ),
                        );
                    }
                }
                let body = self.template(f, &b.body)?;
                Some(MessageRt::Buttons {
                    body,
                    footer: b.footer.as_ref().map(|x| x.value.clone()),
                    buttons: b
                        .buttons
                        .iter()
                        .map(|c| (c.id.value.clone(), c.title.value.clone()))
                        .collect(),
                })
            }
            Send::List(l) => {
                let rows: usize = l.sections.iter().map(|s| s.rows.len()).sum();
                let rows_from = match (&l.rows_from, &l.row) {
                    (Some(from), Some(row)) => {
                        if !l.sections.is_empty() {
                            self.err(
                                f,
                                from.pos,
                                "a list has either `sections` or `rows_from`, not both",
                            )
                            .hint("rows from data replace the fixed sections");
                        }
                        let from = self.script(f, from);
                        let id = self.template_with(f, &row.id, &["item"]);
                        let title = self.template_with(f, &row.title, &["item"]);
                        let description = match &row.description {
                            Some(d) => Some(self.template_with(f, d, &["item"])?),
                            None => None,
                        };
                        Some(Box::new(RowsFrom {
                            from: from?,
                            id: id?,
                            title: title?,
                            description,
                        }))
                    }
                    (Some(from), None) => {
                        self.err(f, from.pos, "`rows_from` without `row`")
                            .hint("add `row: { id: \"{{item.name}}\", title: \"{{item.name}}\" }`");
                        return None;
                    }
                    (None, Some(row)) => {
                        self.err(f, row.pos, "`row` without `rows_from`")
                            .hint("add `rows_from: EXPRESSION` giving an array (e.g. `orders`)");
                        return None;
                    }
                    (None, None) => None,
                };
                if rows_from.is_none() && (rows == 0 || rows > wa::LIST_ROWS) {
                    self.err(
                        f,
                        l.pos,
                        format!(
                            "{rows} list rows; WhatsApp allows 1 to {} across all sections",
                            wa::LIST_ROWS
                        ),
                    );
                }
                if l.sections.len() > wa::LIST_SECTIONS {
                    self.err(
                        f,
                        l.pos,
                        format!(
                            "{} sections; WhatsApp allows at most {}",
                            l.sections.len(),
                            wa::LIST_SECTIONS
                        ),
                    );
                }
                self.limit(f, &l.body, "list body", wa::TEXT_BODY);
                self.limit(f, &l.button, "list button", wa::LIST_BUTTON);
                if let Some(ft) = &l.footer {
                    self.limit(f, ft, "footer", wa::FOOTER);
                }
                let mut ids = BTreeSet::new();
                for s in &l.sections {
                    if let Some(t) = &s.title {
                        self.limit(f, t, "section title", wa::SECTION_TITLE);
                    }
                    for r in &s.rows {
                        self.limit(f, &r.title, "row title", wa::ROW_TITLE);
                        self.limit(f, &r.id, "row id", wa::ROW_ID);
                        if let Some(ds) = &r.description {
                            self.limit(f, ds, "row description", wa::ROW_DESCRIPTION);
                        }
                        if !ids.insert(r.id.value.clone()) {
                            self.err(
                                f,
                                r.id.pos,
                                format!("row id `{}` is used twice in this list", r.id.value),
                            );
                        }
                    }
                }
                let body = self.template(f, &l.body)?;
                Some(MessageRt::List {
                    rows_from,
                    body,
                    button: l.button.value.clone(),
                    footer: l.footer.as_ref().map(|x| x.value.clone()),
                    sections: l
                        .sections
                        .iter()
                        .map(|s| {
                            (
                                s.title.as_ref().map(|t| t.value.clone()),
                                s.rows
                                    .iter()
                                    .map(|r| {
                                        (
                                            r.id.value.clone(),
                                            r.title.value.clone(),
                                            r.description.as_ref().map(|d| d.value.clone()),
                                        )
                                    })
                                    .collect(),
                            )
                        })
                        .collect(),
                })
            }
        }
    }

    fn actions(&mut self, f: usize, list: &[Sp<Action>]) -> Option<Vec<ActionRt>> {
        let mut out = Vec::new();
        let mut ok = true;
        for a in list {
            match self.action(f, a) {
                Some(x) => out.push(x),
                None => ok = false,
            }
        }
        ok.then_some(out)
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

    fn action(&mut self, f: usize, a: &Sp<Action>) -> Option<ActionRt> {
        Some(match &a.value {
            Action::Reply(m) => ActionRt::Reply(self.message(f, m)?),
            Action::StartFlow(name) => {
                self.reference(f, name, "flows", "flow").then_some(())?;
                ActionRt::StartFlow(name.value.clone())
            }
            Action::EndFlow => ActionRt::EndFlow,
            Action::Reassign => ActionRt::Reassign,
            Action::Route(r) => {
                self.reference(f, &r.queue, "queues", "queue")
                    .then_some(())?;
                ActionRt::Route {
                    queue: r.queue.value.clone(),
                }
            }
            Action::Assign(x) => {
                if let Some(q) = &x.queue {
                    self.reference(f, q, "queues", "queue").then_some(())?;
                }
                if x.agent.is_none() && x.queue.is_none() {
                    self.err(f, x.pos, "`assign` needs an `agent` or a `queue`");
                    return None;
                }
                ActionRt::Assign {
                    agent: x.agent.as_ref().map(|s| s.value.clone()),
                    queue: x.queue.as_ref().map(|s| s.value.clone()),
                }
            }
            Action::Handoff(h) => self.handoff(f, h)?,
            Action::Tag(t) => {
                self.tag(f, t).then_some(())?;
                ActionRt::Tag(t.value.clone())
            }
            Action::Untag(t) => {
                self.tag(f, t).then_some(())?;
                ActionRt::Untag(t.value.clone())
            }
            Action::Set(s) => {
                let key_ok = self.ident(f, &s.key, "attribute name");
                let value = self.script(f, &s.value.value);
                key_ok.then_some(())?;
                ActionRt::Set {
                    key: s.key.value.clone(),
                    value: value?,
                }
            }
            Action::SetStatus(s) => ActionRt::SetStatus(s.value),
            Action::SetPriority(p) => ActionRt::SetPriority(p.value),
            Action::Ticket(t) => {
                let q_ok = t
                    .queue
                    .as_ref()
                    .is_none_or(|q| self.reference(f, q, "queues", "queue"));
                let title = match &t.title {
                    Some(x) => Some(self.template(f, x)?),
                    None => None,
                };
                q_ok.then_some(())?;
                ActionRt::Ticket {
                    title,
                    category: t.category.as_ref().map(|c| c.value.clone()),
                    priority: t.priority.as_ref().map(|p| p.value),
                    queue: t.queue.as_ref().map(|q| q.value.clone()),
                }
            }
            Action::Escalate(e) => {
                let q_ok = self.reference(f, &e.queue, "queues", "queue");
                let reason = match &e.reason {
                    Some(x) => Some(self.template(f, x)?),
                    None => None,
                };
                q_ok.then_some(())?;
                ActionRt::Escalate {
                    queue: e.queue.value.clone(),
                    reason,
                    priority: e
                        .priority
                        .as_ref()
                        .map(|p| p.value)
                        .unwrap_or(Priority::High),
                }
            }
            Action::Note(n) => ActionRt::Note(self.template(f, n)?),
            Action::Lookup(l) => {
                let action = LookupAction::parse(&l.action.value);
                let kind = if action == Some(LookupAction::Fetch) {
                    ConnectorKind::Http
                } else {
                    ConnectorKind::Store
                };
                let c_ok = self.connector(f, &l.connector, kind);
                if action.is_none() {
                    let names: Vec<&str> = LookupAction::ALL.iter().map(|(n, _)| *n).collect();
                    let hint = name_hint(&l.action.value, "lookup actions", names.iter().copied());
                    self.err(
                        f,
                        l.action.pos,
                        format!("unknown lookup action `{}`", l.action.value),
                    )
                    .hint(hint);
                }
                let by = match &l.by {
                    Some(b) => Some(self.script(f, b)?),
                    None => None,
                };
                let value = match &l.value.value {
                    Some(v) => Some(self.template(f, v)?),
                    None => None,
                };
                if let Some(b) = &l.bind {
                    self.ident(f, b, "scope name").then_some(())?;
                }
                c_ok.then_some(())?;
                ActionRt::Lookup {
                    connector: l.connector.value.clone(),
                    action: action?,
                    by,
                    bind: l.bind.as_ref().map(|b| b.value.clone()).unwrap_or_else(|| {
                        if action == Some(LookupAction::FindOrders) {
                            "orders".into()
                        } else {
                            "order".into()
                        }
                    }),
                    value,
                }
            }
            Action::Webhook(w) => {
                let c_ok = self.connector(f, &w.connector, ConnectorKind::Webhook);
                let body = match &w.body {
                    Some(b) => Some(self.template(f, b)?),
                    None => None,
                };
                c_ok.then_some(())?;
                ActionRt::Webhook {
                    connector: w.connector.value.clone(),
                    body,
                }
            }
            Action::Timer(t) => {
                let n_ok = self.ident(f, &t.name, "timer name");
                let after = self.duration(f, &t.after)?;
                n_ok.then_some(())?;
                ActionRt::Timer {
                    name: t.name.value.clone(),
                    after,
                }
            }
            Action::Snooze(d) => ActionRt::Snooze(self.duration(f, d)?),
            Action::Stop => ActionRt::Stop,
        })
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

    fn handoff(&mut self, f: usize, h: &Sp<Handoff>) -> Option<ActionRt> {
        let q_ok = h
            .queue
            .as_ref()
            .is_none_or(|q| self.reference(f, q, "queues", "queue"));
        let note = match &h.note {
            Some(n) => Some(self.template(f, n)?),
            None => None,
        };
        q_ok.then_some(())?;
        Some(ActionRt::Handoff {
            queue: h.queue.as_ref().map(|q| q.value.clone()),
            agent: h.agent.as_ref().map(|a| a.value.clone()),
            note,
        })
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
pub fn build(raw: &RawPack, d: &mut Diagnostics) -> Option<Pack> {
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
    let sandbox = Sandbox::new(calendars.clone(), extra_names);

    fn names<T>(v: &[Item<T>]) -> BTreeSet<String> {
        v.iter().map(|i| i.name.value.clone()).collect()
    }
    let mut cx = Ctx {
        raw,
        d,
        sandbox: &sandbox,
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

    if cx.d.has_errors() {
        return None;
    }
    let settings = settings?;
    let classifier = Classifier::train(&intent_specs, settings.intent_threshold);
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
        entities,
        templates,
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

fn duplicates(raw: &RawPack, d: &mut Diagnostics) {
    fn keyed<T>(raw: &RawPack, d: &mut Diagnostics, items: &[Item<T>], kind: &str) {
        let mut seen: HashMap<&str, (usize, Pos)> = HashMap::new();
        for it in items {
            if let Some((f0, p0)) = seen.get(it.name.value.as_str()) {
                let here = raw.files[it.file].display.clone();
                let there = format!("{}:{}", raw.files[*f0].display, p0);
                d.error(
                    &here,
                    it.name.pos,
                    format!("{kind} `{}` is defined twice", it.name.value),
                )
                .hint(format!("first defined at {there}"));
            } else {
                seen.insert(&it.name.value, (it.file, it.name.pos));
            }
        }
    }
    keyed(raw, d, &raw.calendars, "calendar");
    keyed(raw, d, &raw.intents, "intent");
    keyed(raw, d, &raw.entities, "entity");
    keyed(raw, d, &raw.templates, "template");
    keyed(raw, d, &raw.queues, "queue");
    keyed(raw, d, &raw.connectors, "connector");
    keyed(raw, d, &raw.flows, "flow");
    let as_items = |v: Vec<(usize, &Sp<String>)>| -> Vec<Item<()>> {
        v.into_iter()
            .map(|(file, n)| Item {
                file,
                name: n.clone(),
                value: (),
            })
            .collect()
    };
    keyed(
        raw,
        d,
        &as_items(raw.rules.iter().map(|(f, r)| (*f, &r.name)).collect()),
        "rule",
    );
    keyed(
        raw,
        d,
        &as_items(raw.schedules.iter().map(|(f, r)| (*f, &r.name)).collect()),
        "schedule",
    );
    keyed(
        raw,
        d,
        &as_items(raw.tests.iter().map(|(f, r)| (*f, &r.name)).collect()),
        "test",
    );
    if raw.settings.len() > 1 {
        let (f0, s0) = &raw.settings[0];
        for (f, s) in &raw.settings[1..] {
            let here = raw.files[*f].display.clone();
            d.error(&here, s.pos, "`settings` is defined twice")
                .hint(format!(
                    "first defined at {}:{}",
                    raw.files[*f0].display, s0.pos
                ));
        }
    }
}

fn calendar(
    raw: &RawPack,
    it: &Item<Sp<Calendar>>,
    default_tz: chrono_tz::Tz,
    d: &mut Diagnostics,
) -> Option<CalendarRt> {
    let file = raw.files[it.file].display.clone();
    let c = &it.value.value;
    let mut ok = true;
    let mut days = [false; 7];
    for day in &c.days {
        days[weekday_index(day.value)] = true;
    }
    if c.days.is_empty() {
        d.error(
            &file,
            it.value.pos,
            "a calendar needs at least one open day",
        );
        ok = false;
    }
    let open = parse_clock(&c.open.value)
        .map_err(|m| {
            d.error(&file, c.open.pos, m)
                .hint("write `HH:MM`, e.g. `10:00`")
        })
        .ok();
    let close = parse_clock(&c.close.value)
        .map_err(|m| {
            d.error(&file, c.close.pos, m)
                .hint("write `HH:MM`, e.g. `22:00`")
        })
        .ok();
    if let (Some(o), Some(cl)) = (open, close) {
        if o >= cl {
            d.error(
                &file,
                c.close.pos,
                format!(
                    "closes at {} before it opens at {}",
                    c.close.value, c.open.value
                ),
            );
            ok = false;
        }
    }
    let mut holidays = BTreeSet::new();
    for h in &c.holidays {
        match parse_date(&h.value) {
            Ok(x) => {
                holidays.insert(x);
            }
            Err(m) => {
                d.error(&file, h.pos, m).hint("write `YYYY-MM-DD`");
                ok = false;
            }
        }
    }
    let tz = match &c.timezone {
        Some(t) => match parse_tz(&t.value) {
            Ok(tz) => tz,
            Err(m) => {
                d.error(&file, t.pos, m).hint("e.g. `Asia/Karachi`");
                return None;
            }
        },
        None => default_tz,
    };
    (ok && open.is_some() && close.is_some()).then(|| CalendarRt {
        days,
        open: open.unwrap_or(0),
        close: close.unwrap_or(0),
        holidays,
        tz,
    })
}

/// Names bound by `lookup: { as: NAME }` anywhere in the pack: scripts may use them.
fn lookup_binds(raw: &RawPack) -> Vec<String> {
    let mut out = BTreeSet::new();
    let mut visit = |list: &[Sp<Action>]| {
        for a in list {
            if let Action::Lookup(l) = &a.value {
                if let Some(b) = &l.bind {
                    if !SCOPE_NAMES.contains(&b.value.as_str()) {
                        out.insert(b.value.clone());
                    }
                }
            }
        }
    };
    for (_, r) in &raw.rules {
        visit(&r.then);
    }
    for (_, s) in &raw.schedules {
        visit(&s.then);
    }
    for fl in &raw.flows {
        for (_, st) in fl.value.steps.iter() {
            visit(&st.actions);
            for (_, b) in st.on.iter().flat_map(|o| o.iter()) {
                visit(&b.actions);
            }
            if let Some(t) = &st.timeout {
                visit(&t.actions);
            }
            for b in &st.branch {
                visit(&b.actions);
            }
        }
    }
    out.into_iter().collect()
}

fn settings(cx: &mut Ctx, tz: chrono_tz::Tz) -> Option<SettingsRt> {
    let Some((f, s)) = cx.raw.settings.first() else {
        if !cx.raw.broken.contains_key("settings") && !cx.raw.broken.contains_key("file") {
            let file = cx.file(0).to_string();
            cx.d.error(&file, Pos::UNKNOWN, "the pack has no `settings`")
                .hint("add `settings: { default_queue: support }` to one file");
        }
        return None;
    };
    let f = *f;
    if let Some(t) = &s.timezone {
        if let Err(m) = parse_tz(&t.value) {
            cx.err(f, t.pos, m).hint("e.g. `Asia/Karachi`");
        }
    }
    let q_ok = cx.reference(f, &s.default_queue, "queues", "queue");
    let threshold = s.intent_threshold.as_ref().map(|t| t.value).unwrap_or(0.55);
    if let Some(t) = &s.intent_threshold {
        if !(0.0..1.0).contains(&t.value) {
            cx.err(
                f,
                t.pos,
                format!("intent_threshold {} is outside 0–1", t.value),
            )
            .hint("0.55 is a good start; `switchyard classify --eval` shows the effect");
        }
    }
    let default_language = s
        .default_language
        .as_ref()
        .map(|l| l.value.clone())
        .unwrap_or_else(|| "en".into());
    let escape_intents = match &s.escape_intents {
        Some(list) => {
            for i in list {
                cx.reference(f, i, "intents", "intent");
            }
            list.iter().map(|i| i.value.clone()).collect()
        }
        None => cx
            .intents
            .iter()
            .filter(|i| *i == "human_agent")
            .cloned()
            .collect(),
    };
    q_ok.then_some(SettingsRt {
        timezone: tz,
        default_queue: s.default_queue.value.clone(),
        intent_threshold: threshold as f32,
        default_language,
        escape_intents,
    })
}

fn intents(cx: &mut Ctx) -> Vec<IntentSpec> {
    let mut specs = Vec::new();
    let mut seen_examples: HashMap<String, (String, usize, Pos)> = HashMap::new();
    for it in &cx.raw.intents {
        let f = it.file;
        let name = &it.name;
        let i = &it.value.value;
        if name.value == UNKNOWN {
            cx.err(f, name.pos, "`unknown` is the name of no intent")
                .hint(
                    "pick another name: `unknown` is what the classifier says below the threshold",
                );
        }
        cx.ident(f, name, "intent name");
        if i.examples.is_empty() {
            cx.err(
                f,
                it.value.pos,
                format!("intent `{}` has no examples", name.value),
            )
            .hint("write at least 5 messages customers send for it, in every language you see");
        } else if i.examples.len() < 5 {
            cx.warn(
                f,
                name.pos,
                format!(
                    "intent `{}` has only {} examples",
                    name.value,
                    i.examples.len()
                ),
            )
            .hint("5 or more per intent make the classifier much more reliable");
        }
        for e in &i.examples {
            let n = normalize(&e.value);
            if n.is_empty() {
                cx.err(f, e.pos, "this example has no words")
                    .hint("remove it");
                continue;
            }
            match seen_examples.get(&n) {
                Some((other, f0, p0)) if other != &name.value => {
                    let there = format!("{}:{}", cx.file(*f0), p0);
                    let other = other.clone();
                    cx.warn(
                        f,
                        e.pos,
                        format!(
                            "intents `{other}` and `{}` share the example \"{}\"",
                            name.value, e.value
                        ),
                    )
                    .hint(format!("the other is at {there}; keep it in one intent"));
                }
                Some(_) => {}
                None => {
                    seen_examples.insert(n, (name.value.clone(), f, e.pos));
                }
            }
        }
        let mut patterns = Vec::new();
        for p in &i.patterns {
            match Regex::new(&p.value) {
                Ok(r) => patterns.push(r),
                Err(e) => {
                    cx.err(
                        f,
                        p.pos,
                        format!("pattern does not compile: {}", main_line(&e.to_string())),
                    )
                    .hint("patterns are matched against the normalised, lower-case message");
                }
            }
        }
        specs.push(IntentSpec {
            name: name.value.clone(),
            examples: i.examples.iter().map(|e| e.value.clone()).collect(),
            keywords: i.keywords.iter().map(|k| k.value.clone()).collect(),
            patterns,
        });
    }
    specs
}

/// The line of a library's multi-line error that says what is wrong (its last non-empty
/// one; the others draw a caret under the input).
fn main_line(s: &str) -> String {
    let last = s
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or(s)
        .trim();
    last.strip_prefix("error: ").unwrap_or(last).to_string()
}

fn entity(cx: &mut Ctx, it: &Item<Sp<Entity>>) -> Option<Extractor> {
    let f = it.file;
    let e = &it.value.value;
    cx.ident(f, &it.name, "entity name");
    match (&e.pattern, &e.builtin) {
        (Some(p), None) => match Regex::new(&p.value) {
            Ok(r) if r.captures_len() > 1 => Some(Extractor::Pattern(r)),
            Ok(_) => {
                cx.err(f, p.pos, "the pattern has no capture group")
                    .hint("wrap the value in parentheses, e.g. '#?\\b(\\d{4,8})\\b'");
                None
            }
            Err(err) => {
                cx.err(
                    f,
                    p.pos,
                    format!("pattern does not compile: {}", main_line(&err.to_string())),
                );
                None
            }
        },
        (None, Some(b)) => Some(Extractor::Builtin(b.value)),
        _ => {
            cx.err(
                f,
                it.value.pos,
                format!(
                    "entity `{}` needs exactly one of `pattern` or `builtin`",
                    it.name.value
                ),
            );
            None
        }
    }
}

fn template_def(cx: &mut Ctx, it: &Item<Sp<TemplateDef>>) -> Option<TemplateRt> {
    let f = it.file;
    let t = &it.value.value;
    let mut ok = true;
    let mut variants = Vec::new();
    let lang_re = |s: &str| {
        let mut parts = s.splitn(2, ['_', '-']);
        let base = parts.next().unwrap_or("");
        let region_ok = parts.next().is_none_or(|r| {
            (2..=4).contains(&r.len()) && r.chars().all(|c| c.is_ascii_alphanumeric())
        });
        s == "text"
            || ((2..=3).contains(&base.len())
                && base.chars().all(|c| c.is_ascii_lowercase())
                && region_ok)
    };
    for (lang, body) in &t.variants {
        // A plain-string template has no position of its own: use the template's.
        let body = if body.pos == Pos::UNKNOWN {
            Sp::new(body.value.clone(), it.value.pos)
        } else {
            body.clone()
        };
        if !lang_re(&lang.value) {
            cx.err(f, lang.pos, format!("`{}` is not a language code", lang.value))
                .hint("use `en`, `ur`, … (or `text` for any language) and `whatsapp` for the approved template");
            ok = false;
            continue;
        }
        cx.limit(f, &body, "text", wa::TEXT_BODY);
        match cx.template(f, &body) {
            Some(c) => variants.push((lang.value.clone(), c)),
            None => ok = false,
        }
    }
    let whatsapp = match &t.whatsapp {
        Some(w) => {
            let mut body = Vec::new();
            for p in &w.body {
                match cx.template(f, p) {
                    Some(c) => body.push(c),
                    None => ok = false,
                }
            }
            if w.buttons.len() > wa::TEMPLATE_BUTTONS {
                cx.err(
                    f,
                    w.pos,
                    format!(
                        "{} template buttons; WhatsApp allows at most {}",
                        w.buttons.len(),
                        wa::TEMPLATE_BUTTONS
                    ),
                );
                ok = false;
            }
            if w.name.value.is_empty()
                || !w
                    .name
                    .value
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                cx.err(
                    f,
                    w.name.pos,
                    format!("`{}` is not a WhatsApp template name", w.name.value),
                )
                .hint("approved template names are lower-case letters, digits and `_`");
                ok = false;
            }
            if variants.is_empty() {
                cx.err(
                    f,
                    it.name.pos,
                    format!(
                        "template `{}` has a WhatsApp form but no `text` form",
                        it.name.value
                    ),
                )
                .hint("add `text: \"…\"`: web chat, the sandbox and agents see it");
                ok = false;
            }
            Some(WaTemplateRt {
                name: w.name.value.clone(),
                language: w.language.value.clone(),
                body,
                buttons: w.buttons.iter().map(|b| b.value.clone()).collect(),
            })
        }
        None => None,
    };
    if variants.is_empty() && whatsapp.is_none() && ok {
        cx.err(
            f,
            it.value.pos,
            format!("template `{}` is empty", it.name.value),
        );
        ok = false;
    }
    ok.then_some(TemplateRt { variants, whatsapp })
}

fn next(
    cx: &mut Ctx,
    f: usize,
    flow: &Flow,
    actions: &[Sp<Action>],
    goto: &Option<Sp<String>>,
    end: bool,
) -> Option<Next> {
    let actions = cx.actions(f, actions);
    let mut ok = true;
    if let Some(g) = goto {
        if flow.steps.get(&g.value).is_none() {
            let hint = name_hint(
                &g.value,
                "steps",
                flow.steps.keys().map(|k| k.value.as_str()),
            );
            cx.err(f, g.pos, format!("undefined step `{}`", g.value))
                .hint(hint);
            ok = false;
        }
        if end {
            cx.err(f, g.pos, "`goto` and `end: true` together")
                .hint("keep one");
            ok = false;
        }
    }
    (ok && actions.is_some()).then(|| Next {
        actions: actions.unwrap_or_default(),
        goto: goto.as_ref().map(|g| g.value.clone()),
        end,
    })
}

fn leads_somewhere(n: &Next) -> bool {
    n.goto.is_some()
        || n.end
        || n.actions.iter().any(|a| {
            matches!(
                a,
                ActionRt::Handoff { .. } | ActionRt::StartFlow(_) | ActionRt::EndFlow
            )
        })
}

fn flow(cx: &mut Ctx, it: &Item<Sp<Flow>>) -> Option<FlowRt> {
    let f = it.file;
    let fl = &it.value.value;
    let mut ok = true;
    if fl.steps.get(&fl.start.value).is_none() {
        let hint = name_hint(
            &fl.start.value,
            "steps",
            fl.steps.keys().map(|k| k.value.as_str()),
        );
        cx.err(
            f,
            fl.start.pos,
            format!("undefined step `{}`", fl.start.value),
        )
        .hint(hint);
        ok = false;
    }
    let mut steps = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for (name, st) in fl.steps.iter() {
        if !seen.insert(name.value.clone()) {
            cx.err(
                f,
                name.pos,
                format!(
                    "step `{}` is defined twice in flow `{}`",
                    name.value, it.name.value
                ),
            );
            ok = false;
        }
        let s = &st.value;
        let send = match &s.send {
            Some(m) => {
                let r = cx.message(f, m);
                ok &= r.is_some();
                r
            }
            None => None,
        };
        // The ids a customer can tap in this step.
        let mut choices: BTreeSet<String> = BTreeSet::new();
        match s.send.as_ref().map(|m| &m.value) {
            Some(Send::Buttons(b)) => choices.extend(b.buttons.iter().map(|c| c.id.value.clone())),
            Some(Send::List(l)) => choices.extend(
                l.sections
                    .iter()
                    .flat_map(|s| s.rows.iter().map(|r| r.id.value.clone())),
            ),
            Some(Send::Template(t)) => {
                if let Some(def) = cx.raw.templates.iter().find(|x| x.name.value == t.value) {
                    if let Some(w) = &def.value.whatsapp {
                        choices.extend(w.buttons.iter().map(|b| b.value.clone()));
                    }
                }
            }
            _ => {}
        }
        let actions = cx.actions(f, &s.actions);
        ok &= actions.is_some();
        let mut on = Vec::new();
        for (key, br) in s.on.iter().flat_map(|o| o.iter()) {
            let matcher = if choices.contains(&key.value) {
                Some(Matcher::Choice(key.value.clone()))
            } else if cx.intents.contains(&key.value) {
                Some(Matcher::Intent(key.value.clone()))
            } else if key.value.len() >= 2 && key.value.starts_with('/') && key.value.ends_with('/')
            {
                match Regex::new(&format!("(?i){}", &key.value[1..key.value.len() - 1])) {
                    Ok(r) => Some(Matcher::Regex(r)),
                    Err(e) => {
                        cx.err(
                            f,
                            key.pos,
                            format!("pattern does not compile: {}", main_line(&e.to_string())),
                        );
                        None
                    }
                }
            } else {
                let mut known: Vec<&str> = choices.iter().map(String::as_str).collect();
                let intents: Vec<String> = cx.intents.iter().cloned().collect();
                known.extend(intents.iter().map(String::as_str));
                let hint = crate::diag::did_you_mean(&key.value, known.iter().copied()).unwrap_or_else(|| {
                    "an `on` key is a button or list row id of this step's message, an intent, or a `/regex/`".into()
                });
                cx.err(
                    f,
                    key.pos,
                    format!(
                        "`{}` is neither a choice of this step nor an intent",
                        key.value
                    ),
                )
                .hint(hint);
                None
            };
            let n = next(cx, f, fl, &br.actions, &br.goto, br.end);
            if let Some(n) = &n {
                if !leads_somewhere(n) {
                    cx.err(f, key.pos, format!("branch `{}` leads nowhere", key.value))
                        .hint("add `goto: STEP`, `end: true`, or a `handoff` in `do`");
                    ok = false;
                }
            }
            match (matcher, n) {
                (Some(m), Some(n)) => on.push((m, n)),
                _ => ok = false,
            }
        }
        let capture = match &s.capture {
            Some(c) => {
                let key = if c.into.pos == Pos::UNKNOWN {
                    Sp::new(c.into.value.clone(), c.pos)
                } else {
                    c.into.clone()
                };
                let mut c_ok = cx.ident(f, &key, "attribute name");
                if let Some(e) = &c.entity {
                    c_ok &= cx.reference(f, e, "entities", "entity");
                }
                ok &= c_ok;
                Some((
                    c.into.value.clone(),
                    c.entity.as_ref().map(|e| e.value.clone()),
                ))
            }
            None => None,
        };
        let timeout = match &s.timeout {
            Some(t) => {
                let after = cx.duration(f, &t.after);
                let n = next(cx, f, fl, &t.actions, &t.goto, t.end);
                if let Some(n) = &n {
                    if !leads_somewhere(n) {
                        cx.err(f, t.pos, "the timeout leads nowhere")
                            .hint("add `goto: STEP`, `end: true`, or a `handoff` in `do`");
                        ok = false;
                    }
                }
                match (after, n) {
                    (Some(a), Some(n)) => Some((a, n)),
                    _ => {
                        ok = false;
                        None
                    }
                }
            }
            None => None,
        };
        let mut branch = Vec::new();
        for d in &s.branch {
            let cond = match &d.condition {
                Some(c) => cx.script(f, c).map(Some),
                None => Some(None),
            };
            let n = next(cx, f, fl, &d.actions, &d.goto, d.end);
            if let Some(n) = &n {
                if !leads_somewhere(n) {
                    cx.err(f, d.pos, "this branch leads nowhere")
                        .hint("add `goto: STEP`, `end: true`, or a `handoff` in `do`");
                    ok = false;
                }
            }
            match (cond, n) {
                (Some(c), Some(n)) => branch.push((c, n)),
                _ => ok = false,
            }
        }
        if !s.branch.is_empty() && (s.on.is_some() || s.capture.is_some()) {
            cx.err(
                f,
                s.branch[0].pos,
                format!(
                    "step `{}` has `branch` and waits for an answer (`on`/`capture`)",
                    name.value
                ),
            )
            .hint("`branch` decides at once from data; put it in a step of its own and `goto` it");
            ok = false;
        }
        let nx = next(cx, f, fl, &[], &s.goto, s.end);
        let handoff = match &s.handoff {
            Some(h) => {
                let r = cx.handoff(f, h);
                ok &= r.is_some();
                r
            }
            None => None,
        };
        if s.retries.is_some() && on.is_empty() && capture.is_none() {
            let p = s.retries.as_ref().map(|r| r.pos).unwrap_or(st.pos);
            cx.warn(f, p, "`retries` without `on` or `capture` has no effect");
        }
        if s.capture.is_some() && s.goto.is_none() && !s.end && s.handoff.is_none() {
            cx.err(
                f,
                name.pos,
                format!(
                    "step `{}` captures an answer but has nowhere to go next",
                    name.value
                ),
            )
            .hint("add `goto: STEP` or `end: true`");
            ok = false;
        }
        if let Some(nx) = nx {
            // A `branch` whose last entry has no `if` always leads somewhere.
            let branch_total = s.branch.last().is_some_and(|d| d.condition.is_none());
            let progresses = s.on.is_some()
                || s.capture.is_some()
                || s.handoff.is_some()
                || branch_total
                || leads_somewhere(&nx)
                || actions.as_ref().is_some_and(|a| {
                    leads_somewhere(&Next {
                        actions: a.clone(),
                        goto: None,
                        end: false,
                    })
                });
            if !progresses && !s.branch.is_empty() {
                cx.err(f, name.pos, format!("step `{}` has no way forward when no `branch` condition holds", name.value))
                    .hint("add `goto: STEP` or `end: true` (taken when none holds), or a last entry without `if`");
                ok = false;
            } else if !progresses {
                cx.err(f, name.pos, format!("step `{}` has no way forward", name.value))
                    .hint("add `on`, `capture`, `goto`, `end: true` or `handoff`, or the customer is stuck here");
                ok = false;
            }
            if ok {
                steps.insert(
                    name.value.clone(),
                    StepRt {
                        send,
                        actions: actions.unwrap_or_default(),
                        on,
                        capture,
                        retries: s.retries.as_ref().map(|r| r.value).unwrap_or(1),
                        timeout,
                        next: nx,
                        handoff,
                        branch,
                    },
                );
            }
        } else {
            ok = false;
        }
    }
    // Reachability from the start step, over what the YAML says (even when a step is broken).
    if fl.steps.get(&fl.start.value).is_some() {
        let mut reached = BTreeSet::new();
        let mut todo = vec![fl.start.value.clone()];
        while let Some(sn) = todo.pop() {
            if !reached.insert(sn.clone()) {
                continue;
            }
            let Some(st) = fl.steps.get(&sn) else {
                continue;
            };
            let gotos = st
                .on
                .iter()
                .flat_map(|o| o.iter().map(|(_, b)| &b.goto))
                .chain(st.timeout.iter().map(|t| &t.goto))
                .chain(st.branch.iter().map(|b| &b.goto))
                .chain(std::iter::once(&st.goto));
            for g in gotos.flatten() {
                todo.push(g.value.clone());
            }
        }
        for (name, _) in fl.steps.iter() {
            if !reached.contains(&name.value) {
                cx.err(
                    f,
                    name.pos,
                    format!(
                        "step `{}` cannot be reached from `{}`",
                        name.value, fl.start.value
                    ),
                )
                .hint("add a `goto` to it, or remove it");
                ok = false;
            }
        }
    }
    ok.then(|| FlowRt {
        start: fl.start.value.clone(),
        steps,
    })
}

fn check_event(cx: &mut Ctx, f: usize, when: &Sp<String>) -> bool {
    let w = &when.value;
    let ok = EVENTS.contains(&w.as_str())
        || w.strip_prefix("timer.").is_some_and(|n| !n.is_empty())
        || w.strip_prefix("schedule.").is_some_and(|n| !n.is_empty());
    if !ok {
        let hint = crate::diag::did_you_mean(w, EVENTS.iter().copied()).unwrap_or_else(|| {
            format!(
                "events are {}, `timer.NAME` and `schedule.NAME`",
                EVENTS.join(", ")
            )
        });
        cx.err(f, when.pos, format!("unknown event `{w}`"))
            .hint(hint);
    }
    ok
}

/// Schedules fire outside any conversation: their actions (and those of rules on
/// `schedule.<name>`) may only post webhooks.
fn outside_conversation(cx: &mut Ctx, f: usize, actions: &[Sp<Action>], what: &str) {
    for a in actions {
        if !matches!(a.value, Action::Webhook(_) | Action::Stop) {
            cx.err(
                f,
                a.pos,
                format!("`{}` needs a conversation, and {what} runs outside any", a.value.name()),
            )
            .hint("schedules post to webhooks (`webhook: { connector, body }`); act on conversations from rules on their events");
        }
    }
}

fn rule(cx: &mut Ctx, f: usize, r: &Sp<Rule>) -> Option<RuleRt> {
    let ev_ok = check_event(cx, f, &r.when);
    if r.when.value.starts_with("schedule.") {
        outside_conversation(cx, f, &r.then, &format!("`{}`", r.when.value));
    }
    let condition = r.condition.as_ref().map(|c| cx.script(f, c));
    let actions = cx.actions(f, &r.then);
    if r.then.is_empty() {
        cx.err(
            f,
            r.name.pos,
            format!("rule `{}` does nothing", r.name.value),
        )
        .hint("add actions under `then:`");
        return None;
    }
    let condition = match condition {
        Some(Some(ast)) => Some(ast),
        Some(None) => return None,
        None => None,
    };
    let intents = condition.as_ref().and_then(required_intents);
    if let Some(set) = &intents {
        for i in set {
            if !cx.intents.contains(i) && i != UNKNOWN {
                let hint = name_hint(i, "intents", cx.intents.iter().map(String::as_str));
                let pos = r.condition.as_ref().map(|c| c.pos).unwrap_or(r.pos);
                cx.err(
                    f,
                    pos,
                    format!("the condition tests undefined intent `{i}`"),
                )
                .hint(hint);
                return None;
            }
        }
    }
    (ev_ok).then_some(())?;
    Some(RuleRt {
        name: r.name.value.clone(),
        when: r.when.value.clone(),
        condition,
        actions: actions?,
        stop: r.stop,
        intents,
    })
}

fn schedule(cx: &mut Ctx, f: usize, s: &Sp<Schedule>) -> Option<ScheduleRt> {
    let fields = s.cron.value.split_whitespace().count();
    let cron = match s.cron.value.parse::<cron::Schedule>() {
        Ok(c) => Some(c),
        Err(e) => {
            let msg = if fields != 6 && fields != 7 {
                format!(
                    "cron expression `{}` has {fields} fields; it needs 6 (or 7 with a year)",
                    s.cron.value
                )
            } else {
                format!(
                    "cron expression `{}` does not parse: {}",
                    s.cron.value,
                    main_line(&e.to_string())
                )
            };
            cx.err(f, s.cron.pos, msg)
                .hint("six fields, seconds first: `sec min hour day-of-month month day-of-week`; \"0 0 10 * * *\" is 10:00 every day");
            None
        }
    };
    let condition = match &s.condition {
        Some(c) => Some(cx.script(f, c)?),
        None => None,
    };
    outside_conversation(cx, f, &s.then, "a schedule");
    let actions = cx.actions(f, &s.then)?;
    Some(ScheduleRt {
        name: s.name.value.clone(),
        cron: cron?,
        condition,
        actions,
    })
}

/// A flow that can start without an open window must open with approved templates: its first
/// step, and every step reached by a timeout (the customer said nothing), may send only a
/// template with a WhatsApp form.
fn window_checks(cx: &mut Ctx) {
    let raw = cx.raw;
    let mut starters: Vec<(usize, &Sp<String>, String)> = Vec::new();
    let mut replies: Vec<(usize, &Sp<Send>, String)> = Vec::new();
    for (f, r) in &raw.rules {
        if outside_window(&r.when.value) {
            for a in &r.then {
                match &a.value {
                    Action::StartFlow(fl) => starters.push((*f, fl, r.when.value.clone())),
                    Action::Reply(m) => replies.push((*f, m, r.when.value.clone())),
                    _ => {}
                }
            }
        }
    }
    for (f, s) in &raw.schedules {
        for a in &s.then {
            match &a.value {
                Action::StartFlow(fl) => {
                    starters.push((*f, fl, format!("schedule.{}", s.name.value)))
                }
                Action::Reply(m) => replies.push((*f, m, format!("schedule.{}", s.name.value))),
                _ => {}
            }
        }
    }
    for (f, m, ev) in replies {
        if !is_wa_template(cx, &m.value) {
            cx.err(f, m.pos, format!("a reply on `{ev}` can go out when the 24-hour window is closed, so it must be a WhatsApp template"))
                .hint("use `reply: { template: NAME }` with a template that has a `whatsapp:` form");
        }
    }
    let mut checked = BTreeSet::new();
    for (_, fl_name, ev) in starters {
        if !checked.insert(fl_name.value.clone()) {
            continue;
        }
        let Some(fl) = raw.flows.iter().find(|x| x.name.value == fl_name.value) else {
            continue;
        };
        let flow = &fl.value.value;
        // Steps entered without a customer message: the start, and timeout targets (recursively
        // through steps that do not wait).
        let mut todo = vec![flow.start.value.clone()];
        let mut seen = BTreeSet::new();
        while let Some(sn) = todo.pop() {
            if !seen.insert(sn.clone()) {
                continue;
            }
            let Some(st) = flow.steps.get(&sn) else {
                continue;
            };
            if let Some(send) = &st.send {
                if !is_wa_template(cx, &send.value) {
                    let first = sn == flow.start.value;
                    let what = if first {
                        "its first message"
                    } else {
                        "a message sent after a timeout"
                    };
                    cx.err(fl.file, send.pos, format!(
                        "flow `{}` can start on `{ev}`, outside the 24-hour window, and {what} (step `{sn}`) is not a WhatsApp template",
                        fl.name.value
                    ))
                    .hint("send `{ template: NAME }` whose template has a `whatsapp:` form (an approved template)");
                }
            }
            if let Some(t) = &st.timeout {
                if let Some(g) = &t.goto {
                    todo.push(g.value.clone());
                }
            }
            if st.on.is_none() && st.capture.is_none() {
                let gotos = st.branch.iter().map(|b| &b.goto).chain([&st.goto]);
                todo.extend(gotos.flatten().map(|g| g.value.clone()));
            }
        }
    }
}

fn is_wa_template(cx: &Ctx, m: &Send) -> bool {
    matches!(m, Send::Template(t) if cx.wa_templates.contains(&t.value) || cx.broken("templates", &t.value))
}

fn test_case(cx: &mut Ctx, f: usize, t: &Sp<TestCase>) {
    if t.conversation.is_empty() {
        cx.err(
            f,
            t.name.pos,
            format!("test `{}` has no conversation", t.name.value),
        );
    }
    for a in &t.agents {
        if let Some(sh) = &a.shift {
            cx.reference(f, sh, "calendars", "calendar");
        }
    }
    for turn in &t.conversation {
        let n = turn.customer.is_some() as u8
            + turn.event.is_some() as u8
            + turn.wait.is_some() as u8
            + turn.agent.is_some() as u8;
        if n != 1 {
            cx.err(
                f,
                turn.pos,
                "each conversation line needs exactly one of `customer`, `event`, `wait` or `agent`",
            );
        }
        if let Some(a) = &turn.agent {
            if !t.agents.iter().any(|x| x.id.value == a.id.value) {
                cx.err(
                    f,
                    a.id.pos,
                    format!("`{}` is not one of this test's agents", a.id.value),
                )
                .hint("list them under `agents:` of the test");
            }
            if a.reply.is_none() && a.note.is_none() && a.status.is_none() && a.snooze.is_none() {
                cx.err(
                    f,
                    a.pos,
                    "an agent line needs `reply`, `note`, `status` or `snooze`",
                );
            }
            if let Some(d) = &a.snooze {
                cx.duration(f, d);
            }
        }
        if let Some(w) = &turn.wait {
            cx.duration(f, w);
        }
        if let Some(ev) = &turn.event {
            check_event(cx, f, &ev.name);
        }
        if let Some(e) = &turn.expect {
            if let Some(i) = &e.intent {
                if i.value != UNKNOWN {
                    cx.reference(f, i, "intents", "intent");
                }
            }
            if let Some(fl) = &e.flow {
                if fl.value != "none" {
                    cx.reference(f, fl, "flows", "flow");
                }
            }
            if let Some(q) = &e.queue {
                cx.reference(f, q, "queues", "queue");
            }
            if let (Some(st), Some(fl)) = (&e.step, &e.flow) {
                if let Some(def) = cx.raw.flows.iter().find(|x| x.name.value == fl.value) {
                    if def.value.steps.get(&st.value).is_none() {
                        let hint = name_hint(
                            &st.value,
                            "steps",
                            def.value.steps.keys().map(|k| k.value.as_str()),
                        );
                        cx.err(
                            f,
                            st.pos,
                            format!("flow `{}` has no step `{}`", fl.value, st.value),
                        )
                        .hint(hint);
                    }
                }
            }
            if let Some(ExpectTicket::Some(tf)) = e.ticket.as_ref().map(|t| &t.value) {
                if let Some(q) = &tf.queue {
                    cx.reference(f, q, "queues", "queue");
                }
            }
        }
    }
}

/// The intents a condition requires: `intent == "a"`, `intent == "a" || intent == "b"`, and
/// either inside `&&`. `None` when the condition can match any intent.
fn required_intents(ast: &rhai::AST) -> Option<BTreeSet<String>> {
    use rhai::{Expr, Stmt};
    fn of(e: &Expr) -> Option<BTreeSet<String>> {
        match e {
            Expr::FnCall(call, _) if call.name == "==" && call.args.len() == 2 => {
                let (a, b) = (&call.args[0], &call.args[1]);
                let pair = match (a, b) {
                    (Expr::Variable(v, ..), Expr::StringConstant(s, _))
                    | (Expr::StringConstant(s, _), Expr::Variable(v, ..)) => {
                        Some((v.1.as_str(), s.as_str()))
                    }
                    _ => None,
                };
                match pair {
                    Some(("intent", s)) => Some([s.to_string()].into()),
                    _ => None,
                }
            }
            Expr::And(list, _) => {
                let sets: Vec<BTreeSet<String>> = list.iter().filter_map(of).collect();
                sets.into_iter()
                    .reduce(|a, b| a.intersection(&b).cloned().collect())
            }
            Expr::Or(list, _) => {
                let mut out = BTreeSet::new();
                for x in list.iter() {
                    out.extend(of(x)?);
                }
                Some(out)
            }
            Expr::Stmt(block) => match block.statements() {
                [Stmt::Expr(e)] => of(e),
                _ => None,
            },
            _ => None,
        }
    }
    match ast.statements() {
        [Stmt::Expr(e)] => of(e),
        _ => None,
    }
}

fn index_rules(rules: &[RuleRt]) -> RuleIndex {
    let mut idx = RuleIndex::default();
    for (i, r) in rules.iter().enumerate() {
        let slot = idx.by_event_mut(&r.when);
        match &r.intents {
            Some(set) => {
                for intent in set {
                    slot.1.entry(intent.clone()).or_default().push(i);
                }
            }
            None => slot.0.push(i),
        }
    }
    idx
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
