//! Replay and diff: what a rule change would have done to recorded traffic.
//!
//! [`export`] reads the inbound events a store committed (customer messages and taps, order
//! events, delivery statuses) in inbox order, optionally masked ([`mask`]: phone numbers,
//! names and e-mail addresses replaced by stable pseudonyms, so conversations stay together
//! and an order's phone still matches its customer). A [`Replayer`] runs recorded events through
//! a pack on an isolated store in memory — lookups answered by the `Lookup` given (the orders
//! the events carried, or fixtures) — and observes what each event decided: intent, queue,
//! replies, tickets, flows, hand-offs. [`replay_and_diff`] runs two packs side by side and a
//! [`Differ`] compares them event by event.
//!
//! Replays are deterministic: one event at a time, in order, at the time it was received, on
//! a store without agents (nothing is assigned), so two runs of a pack agree and every
//! difference is the packs'. Timers and SLA clocks do not fire (what an event decided is
//! compared, not what the clock did later); delivery statuses are exported but not replayed
//! (they name messages of the recorded run).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use switchyard_rules::Pack;

use crate::domain::DomainEvent;
use crate::model::{Inbound, Millis};
use crate::pipeline::{Engine, EngineError};
use crate::ports::Lookup;
use crate::store::{Changeset, Store};
use crate::trace::Trace;

/// One recorded event: when it was received, and what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recorded {
    pub at: Millis,
    pub event: Inbound,
}

/// The events received since `since` (ms), in inbox order, at most `limit`.
pub async fn export(
    store: &dyn Store,
    since: Millis,
    limit: usize,
) -> Result<Vec<Recorded>, crate::store::StoreError> {
    let mut out = Vec::new();
    let mut after = 0i64;
    while out.len() < limit {
        let page = store.inbox_since(since, after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = last.0;
        out.extend(
            page.into_iter()
                .map(|(_, at, event)| Recorded { at, event })
                .take(limit - out.len()),
        );
    }
    Ok(out)
}

/// Masks what identifies a customer, the same way for the same value: phone numbers (kept a
/// valid Pakistani mobile, so `same_phone` still works), names, e-mail addresses and long
/// digit runs in texts, and the raw channel payloads (dropped).
pub fn mask(r: &mut Recorded, salt: &str) {
    let phone = |p: &str| mask_phone(p, salt);
    match &mut r.event {
        Inbound::Message {
            from,
            name,
            phone: ph,
            text,
            payload,
            ..
        } => {
            *from = phone(from);
            *ph = ph.as_deref().map(phone);
            *name = name.as_deref().map(|n| mask_name(n, salt));
            *text = mask_text(text, salt);
            *payload = Value::Null;
        }
        Inbound::Order {
            to,
            name,
            phone: ph,
            order,
            ..
        } => {
            *to = phone(to);
            *ph = ph.as_deref().map(phone);
            *name = name.as_deref().map(|n| mask_name(n, salt));
            mask_value(order, salt);
        }
        Inbound::Status { to, .. } => *to = phone(to),
    }
}

fn digest(s: &str, salt: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update([0]);
    h.update(s.as_bytes());
    h.finalize().into()
}

/// A phone as another valid Pakistani mobile (`+92 3xx …`), the same for every way the same
/// number is written; what is not a phone becomes a pseudonym of digits.
fn mask_phone(p: &str, salt: &str) -> String {
    let digits: String = p.chars().filter(|c| c.is_ascii_digit()).collect();
    let key = switchyard_rules::entities::phone_pk(p).unwrap_or_else(|| digits.clone());
    let d = digest(&key, salt);
    let n: String = d
        .iter()
        .take(9)
        .map(|b| char::from(b'0' + b % 10))
        .collect();
    let plus = p.trim_start().starts_with('+');
    let local = p.trim_start().starts_with('0') && !plus;
    // 3 + nine digits: a mobile number.
    match (plus, local) {
        (true, _) => format!("+923{n}"),
        (_, true) => format!("03{n}"),
        _ => format!("923{n}"),
    }
}

fn mask_name(n: &str, salt: &str) -> String {
    let d = digest(&n.to_lowercase(), salt);
    format!("Customer {}", hex::encode(&d[..3]))
}

/// E-mail addresses and runs of 10 or more digits (phones, card and account numbers) in a
/// text; order numbers and amounts stay.
fn mask_text(t: &str, salt: &str) -> String {
    static EMAIL: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"(?i)\b[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}\b").expect("valid regex")
    });
    static LONG: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"\+?\d[\d\s-]{8,}\d").expect("valid regex"));
    let t = EMAIL.replace_all(t, |c: &regex::Captures| {
        format!("user{}@example.com", hex::encode(&digest(&c[0], salt)[..3]))
    });
    LONG.replace_all(&t, |c: &regex::Captures| {
        let digits = c[0].chars().filter(|c| c.is_ascii_digit()).count();
        if digits >= 10 {
            mask_phone(&c[0], salt)
        } else {
            c[0].to_string()
        }
    })
    .into_owned()
}

/// An order's personal fields: phones, names, e-mails, addresses.
fn mask_value(v: &mut Value, salt: &str) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                let k = k.to_lowercase();
                if let Value::String(s) = x {
                    if k.contains("phone") {
                        *s = mask_phone(s, salt);
                    } else if k.contains("email") {
                        *s = mask_text(s, salt);
                    } else if k.contains("name") && k != "name" || k.contains("address") {
                        // `name` of an order is its number (#10234): kept.
                        *s = mask_name(s, salt);
                    }
                } else {
                    mask_value(x, salt);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| mask_value(x, salt)),
        _ => {}
    }
}

/// What one event decided, as [`diff`] compares it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Observed {
    /// `channel:customer`: the conversation.
    pub conversation: String,
    /// The customer's text (or the event's name).
    pub what: String,
    pub intent: Option<String>,
    /// The queue after the event.
    pub queue: Option<String>,
    /// The bot's messages: their text, or `template NAME` for an approved template.
    pub replies: Vec<String>,
    /// Tickets opened: `category/priority`.
    pub tickets: Vec<String>,
    pub flows: Vec<String>,
    /// The conversation was handed to a person.
    pub handed_off: bool,
    #[serde(skip)]
    pub trace: Arc<Trace>,
}

fn observe(cs: &Changeset, conversation: String, what: String, trace: Arc<Trace>) -> Observed {
    let mut o = Observed {
        conversation,
        what,
        intent: trace.intent().map(String::from),
        queue: cs.conversation.as_ref().and_then(|c| c.queue.clone()),
        replies: vec![],
        tickets: vec![],
        flows: vec![],
        handed_off: false,
        trace,
    };
    for m in &cs.messages {
        if let Some(out) = &m.outbound {
            o.replies.push(match &out.template {
                Some(t) => format!("template {}", t.name),
                None => out.text.clone(),
            });
        }
    }
    for e in &cs.events {
        match e {
            DomainEvent::TicketCreated { ticket, .. } => o.tickets.push(format!(
                "{}/{}",
                ticket.category.as_deref().unwrap_or("-"),
                ticket.priority.as_str()
            )),
            DomainEvent::FlowStarted { flow } => o.flows.push(flow.clone()),
            _ => {}
        }
    }
    o.handed_off = o.trace.steps.iter().any(|s| {
        matches!(
            s,
            crate::trace::Step::HandedOff { .. } | crate::trace::Step::Unhandled { .. }
        )
    });
    o
}

/// A pack deciding recorded events on a temporary store of its own, one at a time.
pub struct Replayer {
    engine: Engine,
    store: Arc<dyn Store>,
}

impl Replayer {
    /// A replayer on a fresh store in memory.
    pub fn new(pack: Arc<Pack>, lookup: Arc<dyn Lookup>) -> Replayer {
        // The observations are taken from each changeset as it is decided; the store keeps
        // only what the next decision reads, so a week of traffic fits in memory.
        let store: Arc<dyn Store> = Arc::new(crate::store::memory::MemoryStore::without_history());
        Replayer {
            engine: Engine::new(store.clone(), pack, lookup),
            store,
        }
    }

    /// The pack deciding from now on.
    pub fn replace_pack(&self, pack: Arc<Pack>) {
        self.engine.replace_pack(pack);
    }

    pub fn pack(&self) -> Arc<Pack> {
        self.engine.pack()
    }

    /// Decides `events` in order; one observation per event replayed (statuses and events
    /// seen before are skipped). Called again, it goes on from where the last call left off.
    pub async fn replay(&self, events: &[Recorded]) -> Result<Vec<Observed>, EngineError> {
        let mut out = Vec::with_capacity(events.len());
        // Committed in batches (one ingest per thousand), processed one at a time in order.
        for chunk in events.chunks(1000) {
            let batch: Vec<&Recorded> = chunk
                .iter()
                .filter(|r| !matches!(r.event, Inbound::Status { .. }))
                .collect();
            if batch.is_empty() {
                continue;
            }
            let at = batch[0].at;
            let ingested = self
                .store
                .ingest(batch.iter().map(|r| r.event.clone()).collect(), at)
                .await?;
            // A replayed file may hold the same event twice (a redelivery): processed once.
            for (r, ing) in batch.iter().zip(ingested) {
                let crate::store::Ingested::New(id) = ing else {
                    continue;
                };
                let row = crate::model::InboxRow {
                    id,
                    key: r.event.contact_key(),
                    event: r.event.clone(),
                };
                let (conversation, what) = match &r.event {
                    Inbound::Message {
                        channel,
                        from,
                        text,
                        choice,
                        ..
                    } => (
                        format!("{channel}:{from}"),
                        match choice {
                            Some(c) => format!("[taps {c}]"),
                            None => text.clone(),
                        },
                    ),
                    Inbound::Order {
                        channel,
                        to,
                        event,
                        order,
                        ..
                    } => (
                        format!("{channel}:{to}"),
                        format!("[{event} {}]", order["name"].as_str().unwrap_or("")),
                    ),
                    Inbound::Status { .. } => continue,
                };
                let o = self
                    .engine
                    .process_with(&row, r.at, |cs, p| {
                        observe(cs, conversation, what, p.trace.clone())
                    })
                    .await?;
                out.push(o);
            }
        }
        Ok(out)
    }
}

/// Events replayed per round of [`replay_and_diff`]: what is held in memory at once.
const ROUND: usize = 10_000;

/// Replays `events` through two packs side by side (each on its own task, so on its own
/// core), a round at a time, and compares them; only the examples' observations are kept.
pub async fn replay_and_diff(
    old: Replayer,
    new: Replayer,
    events: Arc<Vec<Recorded>>,
    examples: usize,
) -> Result<Diff, EngineError> {
    let (old, new) = (Arc::new(old), Arc::new(new));
    let mut differ = Differ::new(examples);
    let mut start = 0;
    while start < events.len() {
        let end = (start + ROUND).min(events.len());
        let round = |r: &Arc<Replayer>| {
            let (r, events) = (r.clone(), events.clone());
            tokio::spawn(async move { r.replay(&events[start..end]).await })
        };
        let (a, b) = (round(&old), round(&new));
        let joined = |j: Result<_, tokio::task::JoinError>| {
            j.unwrap_or_else(|e| Err(EngineError::Stopped(format!("a replay stopped: {e}"))))
        };
        let (a, b) = (joined(a.await)?, joined(b.await)?);
        differ.add(&a, &b);
        start = end;
    }
    Ok(differ.finish())
}

/// What can change between two packs for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Intents,
    Routes,
    Replies,
    Tickets,
    Flows,
    Handoffs,
}

impl Change {
    pub const ALL: [Change; 6] = [
        Change::Intents,
        Change::Routes,
        Change::Replies,
        Change::Tickets,
        Change::Flows,
        Change::Handoffs,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Intents => "intents",
            Change::Routes => "routes",
            Change::Replies => "replies",
            Change::Tickets => "tickets",
            Change::Flows => "flows",
            Change::Handoffs => "handoffs",
        }
    }
    pub fn parse(s: &str) -> Option<Change> {
        Change::ALL.into_iter().find(|c| c.as_str() == s)
    }
    /// What differs between two observations of one event.
    pub fn between(a: &Observed, b: &Observed) -> Vec<Change> {
        let mut out = Vec::new();
        if a.intent != b.intent {
            out.push(Change::Intents);
        }
        if a.queue != b.queue {
            out.push(Change::Routes);
        }
        if a.replies != b.replies {
            out.push(Change::Replies);
        }
        if a.tickets != b.tickets {
            out.push(Change::Tickets);
        }
        if a.flows != b.flows {
            out.push(Change::Flows);
        }
        if a.handed_off != b.handed_off {
            out.push(Change::Handoffs);
        }
        out
    }
}

/// One event whose outcome changed.
#[derive(Debug, Clone, Serialize)]
pub struct Changed {
    /// Its position among the replayed events.
    pub index: usize,
    pub changes: Vec<Change>,
    pub old: Observed,
    pub new: Observed,
    pub old_trace: String,
    pub new_trace: String,
}

/// Two replays compared.
#[derive(Debug, Clone, Serialize)]
pub struct Diff {
    pub events: usize,
    pub conversations: usize,
    /// By kind: `(events, conversations)` that changed.
    pub totals: BTreeMap<Change, (usize, usize)>,
    /// Per kind, the first changed event of each of the first `examples` conversations.
    pub examples: BTreeMap<Change, Vec<Changed>>,
    /// Every conversation with a change of each kind.
    pub conversations_changed: BTreeMap<Change, Vec<String>>,
}

impl Diff {
    /// Whether any of `kinds` changed.
    pub fn any(&self, kinds: &[Change]) -> bool {
        kinds.iter().any(|k| self.totals.contains_key(k))
    }
}

/// A [`Diff`] built a round of observations at a time.
pub struct Differ {
    examples: usize,
    events: usize,
    totals: BTreeMap<Change, (usize, usize)>,
    convs: BTreeMap<Change, Vec<String>>,
    seen: std::collections::HashSet<(Change, String)>,
    ex: BTreeMap<Change, Vec<Changed>>,
    all: std::collections::HashSet<String>,
}

impl Differ {
    pub fn new(examples: usize) -> Differ {
        Differ {
            examples,
            events: 0,
            totals: BTreeMap::new(),
            convs: BTreeMap::new(),
            seen: Default::default(),
            ex: BTreeMap::new(),
            all: Default::default(),
        }
    }

    /// The next observations of the same events through the old and the new pack.
    pub fn add(&mut self, old: &[Observed], new: &[Observed]) {
        for (a, b) in old.iter().zip(new) {
            let i = self.events;
            self.events += 1;
            if !self.all.contains(&a.conversation) {
                self.all.insert(a.conversation.clone());
            }
            let changes = Change::between(a, b);
            for &c in &changes {
                let t = self.totals.entry(c).or_default();
                t.0 += 1;
                if self.seen.insert((c, a.conversation.clone())) {
                    self.convs
                        .entry(c)
                        .or_default()
                        .push(a.conversation.clone());
                    t.1 += 1;
                    let list = self.ex.entry(c).or_default();
                    if list.len() < self.examples {
                        list.push(Changed {
                            index: i,
                            changes: changes.clone(),
                            old: a.clone(),
                            new: b.clone(),
                            old_trace: a.trace.summary(),
                            new_trace: b.trace.summary(),
                        });
                    }
                }
            }
        }
    }

    pub fn finish(self) -> Diff {
        Diff {
            events: self.events,
            conversations: self.all.len(),
            totals: self.totals,
            examples: self.ex,
            conversations_changed: self.convs,
        }
    }
}

impl Diff {
    /// The report for people (and a pull request comment).
    pub fn markdown(&self, old_name: &str, new_name: &str) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "## What `{new_name}` changes against `{old_name}`\n");
        let _ = writeln!(
            s,
            "{} events of {} conversations replayed through both packs.\n",
            self.events, self.conversations
        );
        if self.totals.is_empty() {
            let _ = writeln!(s, "**No difference**: every event decided the same.");
            return s;
        }
        let _ = writeln!(s, "| change | events | conversations |\n|---|---|---|");
        for (k, (e, c)) in &self.totals {
            let _ = writeln!(s, "| {} | {e} | {c} |", k.as_str());
        }
        let show = |v: &[String]| {
            if v.is_empty() {
                "—".to_string()
            } else {
                v.join(" / ")
            }
        };
        for (k, list) in &self.examples {
            let _ = writeln!(s, "\n### {}\n", k.as_str());
            for x in list {
                let _ = writeln!(
                    s,
                    "- `{}` (event {}): \"{}\"",
                    x.old.conversation,
                    x.index + 1,
                    x.old.what.replace('\n', " ")
                );
                let (a, b) = (&x.old, &x.new);
                let line = |label: &str, a: String, b: String| {
                    if a != b {
                        format!("  - {label}: {a} → {b}\n")
                    } else {
                        String::new()
                    }
                };
                s.push_str(&line(
                    "intent",
                    a.intent.clone().unwrap_or("—".into()),
                    b.intent.clone().unwrap_or("—".into()),
                ));
                s.push_str(&line(
                    "queue",
                    a.queue.clone().unwrap_or("—".into()),
                    b.queue.clone().unwrap_or("—".into()),
                ));
                s.push_str(&line("replies", show(&a.replies), show(&b.replies)));
                s.push_str(&line("tickets", show(&a.tickets), show(&b.tickets)));
                s.push_str(&line("flows", show(&a.flows), show(&b.flows)));
                s.push_str(&line(
                    "handed off",
                    a.handed_off.to_string(),
                    b.handed_off.to_string(),
                ));
                let _ = writeln!(s, "  - old: {}", x.old_trace);
                let _ = writeln!(s, "  - new: {}", x.new_trace);
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_keeps_conversations_together_and_phones_phones() {
        let a = mask_phone("923001234567", "s");
        assert_eq!(a, mask_phone("923001234567", "s"));
        assert_ne!(a, mask_phone("923001234568", "s"));
        assert_ne!(a, mask_phone("923001234567", "other salt"));
        // The same number however written: the same line.
        assert_eq!(mask_phone("+92 300 1234567", "s"), format!("+{a}"));
        assert!(switchyard_rules::entities::phone_pk(&a).is_some(), "{a}");
        let t = mask_text(
            "call me on 0300-1234567 or a@b.com about order #10234 Rs 2500",
            "s",
        );
        assert!(!t.contains("1234567") && !t.contains("a@b.com"), "{t}");
        assert!(t.contains("#10234") && t.contains("Rs 2500"), "{t}");
        let mut o = serde_json::json!({ "name": "#10234", "phone": "+923001234567", "customer": { "first_name": "Ayesha", "email": "a@b.com" }, "shipping_address": { "address1": "House 1" } });
        mask_value(&mut o, "s");
        assert_eq!(o["name"], "#10234");
        assert_eq!(o["phone"], format!("+{a}"));
        assert!(o["customer"]["first_name"]
            .as_str()
            .unwrap()
            .starts_with("Customer "));
        assert!(!o.to_string().contains("Ayesha") && !o.to_string().contains("House 1"));
    }
}
