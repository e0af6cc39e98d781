//! `switchyard test`: runs a pack's `tests:` through the real pipeline, on a throwaway store
//! in memory ([`MemoryStore`], the same records as SQLite's), with lookups from each test's
//! fixtures and a virtual clock.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use switchyard_rules::calendar::parse_duration;
use switchyard_rules::config::{ExpectTicket, Say, TestCase, Turn};
use switchyard_rules::Pack;

use crate::model::*;
use crate::pipeline::{millis, Engine, EngineError};
use crate::ports::Lookup;
use crate::store::memory::MemoryStore;
use crate::store::{Changeset, Store};

/// Monday 2026-11-23, 12:00 in Karachi: inside the example pack's store hours.
pub const DEFAULT_START: &str = "2026-11-23T12:00:00+05:00";
const CUSTOMER: &str = "923001234567";

/// The outcome of one test case.
#[derive(Debug, Clone)]
pub struct CaseReport {
    pub name: String,
    /// Empty when the case passed.
    pub failures: Vec<String>,
    /// What was said, in order.
    pub transcript: Vec<String>,
    /// The decision traces of the conversation, in order.
    pub traces: Vec<crate::trace::Trace>,
}

impl CaseReport {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

struct Turnout {
    intent: Option<(String, f64)>,
    replies: Vec<Message>,
}

/// Runs one case. `lookup` answers the pack's store connectors (built from the case's fixtures).
pub async fn run_case(
    pack: Arc<Pack>,
    case: &TestCase,
    lookup: Arc<dyn Lookup>,
) -> Result<CaseReport, EngineError> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let start = case
        .start
        .as_ref()
        .map(|s| s.value.as_str())
        .unwrap_or(DEFAULT_START);
    let mut now = DateTime::parse_from_rfc3339(start)
        .map(|t| millis(t.with_timezone(&Utc)))
        .unwrap_or(0);
    for a in &case.agents {
        let agent = Agent {
            id: a.id.value.clone(),
            name: a.id.value.clone(),
            role: "agent".into(),
            queues: a.queues.iter().map(|q| q.value.clone()).collect(),
            capacity: a.capacity.unwrap_or(5),
            availability: a
                .availability
                .as_ref()
                .map(|v| v.value.clone())
                .unwrap_or_else(|| "online".into()),
            shift: a.shift.as_ref().map(|s| s.value.clone()),
        };
        store.upsert_agent(&agent, "system", now).await?;
    }
    let attr = |k: &str| {
        case.contact
            .get(k)
            .and_then(Value::as_str)
            .map(String::from)
    };
    let name = attr("name").or_else(|| Some("Test Customer".into()));
    // `phone: ""` means a contact whose phone we do not know (e.g. web chat).
    let phone = match case.contact.get("phone") {
        Some(_) => attr("phone").filter(|p| !p.is_empty()),
        None => Some(format!("+{CUSTOMER}")),
    };
    let (mut contact, conv, _) = store
        .open_conversation("whatsapp", CUSTOMER, name.as_deref(), phone.as_deref(), now)
        .await?;
    contact.language = attr("language");
    for (k, v) in &case.contact {
        if !["name", "phone", "language"].contains(&k.as_str()) {
            contact.attributes.insert(k.clone(), v.clone());
        }
    }
    store
        .commit(Changeset {
            at: now,
            conversation_id: conv.id,
            contact: Some(contact),
            ..Default::default()
        })
        .await?;

    let engine = Engine::new(store.clone(), pack.clone(), lookup);
    engine.init_schedules(now).await?;
    let mut shifts = std::collections::HashMap::new();
    engine.check_shifts(now, &mut shifts).await?;
    let mut report = CaseReport {
        name: case.name.value.clone(),
        failures: vec![],
        transcript: vec![],
        traces: vec![],
    };
    let mut seen_messages = 0usize;
    for (i, turn) in case.conversation.iter().enumerate() {
        let what = describe(turn);
        report.transcript.push(what.clone());
        let mut turnout = Turnout {
            intent: None,
            replies: vec![],
        };
        if let Some(say) = &turn.customer {
            let (kind, text, choice) = match &say.value {
                Say::Text(t) => ("text", t.clone(), None),
                Say::Button(b) => ("button", b.clone(), Some(b.clone())),
                Say::List(l) => ("list", l.clone(), Some(l.clone())),
            };
            let ev = Inbound::Message {
                channel: "whatsapp".into(),
                from: CUSTOMER.into(),
                name: name.clone(),
                phone: phone.clone(),
                provider_id: format!("test.{i}"),
                kind: kind.into(),
                text,
                choice,
                payload: Value::Null,
            };
            turnout.intent = ingest_and_process(&engine, ev, now).await?;
        }
        if let Some(ev) = &turn.event {
            let order = ev
                .order
                .clone()
                .map(Value::Object)
                .or_else(|| case.fixtures.orders.first().cloned().map(Value::Object))
                .unwrap_or(json!({}));
            let ev = Inbound::Order {
                channel: "whatsapp".into(),
                to: CUSTOMER.into(),
                name: name.clone(),
                phone: phone.clone(),
                provider_id: format!("test.{i}"),
                event: ev.name.value.clone(),
                order,
            };
            ingest_and_process(&engine, ev, now).await?;
        }
        if let Some(a) = &turn.agent {
            let by = crate::pipeline::Actor {
                id: a.id.value.clone(),
                agent: Some(a.id.value.clone()),
                // As the owner or a supervisor would: the test says what happens, not who may.
                role: crate::access::Role::Supervisor,
            };
            let mut actions = vec![];
            if let Some(n) = &a.note {
                actions.push(crate::pipeline::AgentAction::Note(n.clone()));
            }
            if let Some(r) = &a.reply {
                actions.push(crate::pipeline::AgentAction::Reply {
                    text: Some(r.clone()),
                    template: None,
                });
            }
            if let Some(s) = &a.status {
                actions.push(crate::pipeline::AgentAction::Status(s.value));
            }
            if let Some(d) = a
                .snooze
                .as_ref()
                .and_then(|d| parse_duration(&d.value).ok())
            {
                actions.push(crate::pipeline::AgentAction::Snooze(d));
            }
            for act in actions {
                match engine.act(conv.id, act, &by, now).await {
                    Ok(_) => {}
                    Err(crate::pipeline::ActError::Engine(e)) => return Err(e),
                    Err(e) => report.failures.push(format!(
                        "line {}: the agent's action was refused: {e}",
                        i + 1
                    )),
                }
            }
        }
        if let Some(w) = &turn.wait {
            let d = parse_duration(&w.value)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            let until = now + d;
            // Timers and schedules fire in time order, each at its due time.
            loop {
                let job = store.due_jobs(until, 1).await?.into_iter().next();
                let sched = store.due_schedules(until).await?.into_iter().next();
                let sched_at = sched.map(|s| s.1);
                match job {
                    Some(job) if sched_at.is_none_or(|at| job.due_at <= at) => {
                        now = now.max(job.due_at);
                        engine.fire_job(&job, now).await?;
                    }
                    _ => match sched_at {
                        Some(at) => {
                            now = now.max(at);
                            engine.fire_due_schedules(now).await?;
                        }
                        None => break,
                    },
                }
            }
            now = until;
            engine.check_shifts(now, &mut shifts).await?;
        }
        now += 1000;

        let messages = store.messages(conv.id).await?;
        turnout.replies = messages[seen_messages.min(messages.len())..]
            .iter()
            .filter(|m| m.direction == Direction::Out)
            .cloned()
            .collect();
        seen_messages = messages.len();
        for r in &turnout.replies {
            let buttons = r.payload["buttons"]
                .as_array()
                .map(|b| {
                    b.iter()
                        .filter_map(|x| x[0].as_str())
                        .collect::<Vec<_>>()
                        .join(" | ")
                })
                .unwrap_or_default();
            let tpl = r.payload["template"]["name"]
                .as_str()
                .map(|n| format!(" (template {n})"))
                .unwrap_or_default();
            let rows = list_rows(r)
                .iter()
                .map(|(id, title)| format!("{id}: {title}"))
                .collect::<Vec<_>>()
                .join(" | ");
            let extra = match (buttons.is_empty(), rows.is_empty()) {
                (false, _) => format!(" [{buttons}]"),
                (true, false) => format!(" [list: {rows}]"),
                (true, true) => String::new(),
            };
            report
                .transcript
                .push(format!("  bot: {}{extra}{tpl}", r.body));
        }
        if let Some(e) = &turn.expect {
            let conv_now = store
                .conversation(conv.id)
                .await?
                .ok_or(EngineError::Missing(conv.id))?;
            let ticket = store.open_ticket(conv.id).await?;
            let notes = store.notes(conv.id).await?;
            for f in check(&e.value, &turnout, &conv_now, ticket.as_ref(), &notes) {
                report
                    .failures
                    .push(format!("line {} ({what}): {f}", i + 1));
            }
        }
    }
    report.traces = engine
        .traces(conv.id)
        .await?
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    Ok(report)
}

async fn ingest_and_process(
    engine: &Engine,
    ev: Inbound,
    now: Millis,
) -> Result<Option<(String, f64)>, EngineError> {
    engine.store.ingest(vec![ev], now).await?;
    let mut intent = None;
    for row in engine.store.pending_inbox(0, 100).await? {
        let p = engine.process(&row, now).await?;
        if let Some(i) = p.intent {
            let c = p.trace.intent.as_ref().map_or(0.0, |i| i.confidence);
            intent = Some((i, c));
        }
    }
    Ok(intent)
}

/// A sent list's rows `(id, title)`, from the message's payload.
fn list_rows(m: &crate::model::Message) -> Vec<(String, String)> {
    m.payload["list"]["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| Some((r[0].as_str()?.to_string(), r[1].as_str()?.to_string())))
        .collect()
}

fn describe(t: &Turn) -> String {
    if let Some(s) = &t.customer {
        match &s.value {
            Say::Text(x) => format!("customer: {x:?}"),
            Say::Button(b) => format!("customer taps button `{b}`"),
            Say::List(l) => format!("customer picks `{l}`"),
        }
    } else if let Some(e) = &t.event {
        format!("event {}", e.name.value)
    } else if let Some(w) = &t.wait {
        format!("wait {}", w.value)
    } else if let Some(a) = &t.agent {
        let mut parts = vec![];
        if let Some(r) = &a.reply {
            parts.push(format!("replies {r:?}"));
        }
        if let Some(n) = &a.note {
            parts.push(format!("notes {n:?}"));
        }
        if let Some(s) = &a.status {
            parts.push(format!("sets status {}", s.value.as_str()));
        }
        if let Some(d) = &a.snooze {
            parts.push(format!("snoozes {}", d.value));
        }
        format!("agent {} {}", a.id.value, parts.join(", "))
    } else {
        "nothing".into()
    }
}

fn check(
    e: &switchyard_rules::config::Expect,
    t: &Turnout,
    c: &Conversation,
    ticket: Option<&Ticket>,
    notes: &[Note],
) -> Vec<String> {
    let mut f = Vec::new();
    if let Some(want) = &e.intent {
        match &t.intent {
            Some((got, _)) if *got == want.value => {}
            Some((got, conf)) => f.push(format!(
                "expected intent `{}`, got `{got}` (confidence {conf:.2})",
                want.value
            )),
            None => f.push(format!(
                "expected intent `{}`, but no message was classified",
                want.value
            )),
        }
    }
    let bodies: Vec<&str> = t.replies.iter().map(|m| m.body.as_str()).collect();
    if let Some(want) = &e.reply_contains {
        if !bodies
            .iter()
            .any(|b| b.to_lowercase().contains(&want.value.to_lowercase()))
        {
            f.push(format!(
                "expected a reply containing {:?}, got {}",
                want.value,
                show_replies(&bodies)
            ));
        }
    }
    if let Some(want) = &e.reply_buttons {
        let want: Vec<&str> = want.iter().map(|b| b.value.as_str()).collect();
        let got: Vec<String> = t
            .replies
            .last()
            .map(|m| {
                let b = m.payload["buttons"].as_array().cloned().unwrap_or_default();
                let ids: Vec<String> = b
                    .iter()
                    .filter_map(|x| x[0].as_str().map(String::from))
                    .collect();
                if ids.is_empty() {
                    m.payload["template"]["buttons"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|x| x.as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default()
                } else {
                    ids
                }
            })
            .unwrap_or_default();
        if got != want {
            f.push(format!("expected reply buttons {want:?}, got {got:?}"));
        }
    }
    if let Some(want) = &e.reply_rows {
        let want: Vec<&str> = want.iter().map(|b| b.value.as_str()).collect();
        let got = t.replies.last().map(list_rows).unwrap_or_default();
        let got: Vec<&str> = got.iter().map(|(id, _)| id.as_str()).collect();
        if got != want {
            f.push(format!("expected list rows {want:?}, got {got:?}"));
        }
    }
    if e.no_reply == Some(true) && !bodies.is_empty() {
        f.push(format!("expected no reply, got {}", show_replies(&bodies)));
    }
    if let Some(want) = &e.flow {
        let got = c.flow.as_ref().map(|x| x.flow.as_str()).unwrap_or("none");
        if got != want.value {
            f.push(format!("expected flow `{}`, got `{got}`", want.value));
        }
    }
    if let Some(want) = &e.step {
        let got = c.flow.as_ref().map(|x| x.step.as_str()).unwrap_or("none");
        if got != want.value {
            f.push(format!("expected step `{}`, got `{got}`", want.value));
        }
    }
    if let Some(want) = &e.status {
        if c.status != want.value {
            f.push(format!(
                "expected status `{}`, got `{}`",
                want.value.as_str(),
                c.status.as_str()
            ));
        }
    }
    if let Some(want) = &e.queue {
        if c.queue.as_deref() != Some(want.value.as_str()) {
            f.push(format!(
                "expected queue `{}`, got `{}`",
                want.value,
                c.queue.as_deref().unwrap_or("none")
            ));
        }
    }
    if let Some(want) = &e.assignee {
        let got = c.assignee.as_deref().unwrap_or("none");
        if got != want.value {
            f.push(format!("expected assignee `{}`, got `{got}`", want.value));
        }
    }
    if let Some(want) = &e.tags {
        for t in want {
            if !c.tags.contains(&t.value) {
                f.push(format!("expected tag `{}`, tags are {:?}", t.value, c.tags));
            }
        }
    }
    if let Some(want) = &e.priority {
        if c.priority != want.value {
            f.push(format!(
                "expected priority `{}`, got `{}`",
                want.value.as_str(),
                c.priority.as_str()
            ));
        }
    }
    if let Some(want) = &e.ticket {
        match (&want.value, ticket) {
            (ExpectTicket::None, None) => {}
            (ExpectTicket::None, Some(t)) => f.push(format!(
                "expected no open ticket, got ticket {} ({})",
                t.id, t.title
            )),
            (ExpectTicket::Some(_), None) => {
                f.push("expected an open ticket, there is none".into())
            }
            (ExpectTicket::Some(w), Some(t)) => {
                if let Some(p) = &w.priority {
                    if t.priority != p.value {
                        f.push(format!(
                            "expected ticket priority `{}`, got `{}`",
                            p.value.as_str(),
                            t.priority.as_str()
                        ));
                    }
                }
                if let Some(cat) = &w.category {
                    if t.category.as_deref() != Some(cat.value.as_str()) {
                        f.push(format!(
                            "expected ticket category `{}`, got `{}`",
                            cat.value,
                            t.category.as_deref().unwrap_or("none")
                        ));
                    }
                }
                if let Some(q) = &w.queue {
                    if t.queue.as_deref() != Some(q.value.as_str()) {
                        f.push(format!(
                            "expected ticket queue `{}`, got `{}`",
                            q.value,
                            t.queue.as_deref().unwrap_or("none")
                        ));
                    }
                }
                if let Some(s) = &w.title_contains {
                    if !t.title.contains(&s.value) {
                        f.push(format!(
                            "expected the ticket title to contain {:?}, got {:?}",
                            s.value, t.title
                        ));
                    }
                }
            }
        }
    }
    if let Some(want) = &e.note_contains {
        if !notes
            .iter()
            .any(|n| n.text.to_lowercase().contains(&want.value.to_lowercase()))
        {
            let all: Vec<&str> = notes.iter().map(|n| n.text.as_str()).collect();
            f.push(format!(
                "expected a note containing {:?}, notes are {all:?}",
                want.value
            ));
        }
    }
    if let Some(want) = &e.attributes {
        for (k, v) in want {
            if c.attributes.get(k) != Some(v) {
                f.push(format!(
                    "expected attribute `{k}` = {v}, got {}",
                    c.attributes.get(k).cloned().unwrap_or(Value::Null)
                ));
            }
        }
    }
    f
}

fn show_replies(b: &[&str]) -> String {
    if b.is_empty() {
        "no reply".into()
    } else {
        format!("{b:?}")
    }
}
