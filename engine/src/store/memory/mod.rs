//! A store in the process's memory, for what is thrown away when it ends: replays
//! (`switchyard diff`, shadow mode) and pack tests. It keeps the same records as the SQL
//! stores, with the same meaning (the engine's stories run against all three), but nothing
//! survives the process — so `serve` never uses it (acknowledged means durable).
//!
//! Everything is in one [`State`] behind one lock, held for the length of a call and never
//! across an `.await`: a changeset is applied whole under it, which is this store's
//! transaction. Values are kept as they are (a trace stays an `Arc<Trace>`), so a replay
//! pays for no encoding; they are turned into JSON only when read as JSON.

mod store;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;

use crate::model::*;
use crate::store::*;

/// The in-memory store. See the module's documentation.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// A store that keeps only the state a decision reads — contacts, conversations,
    /// tickets, jobs, schedules, counters, agents, and which events were seen — and not the
    /// record of what happened: messages, notes, the audit, ticket histories, traces, the
    /// outbox and the events themselves are dropped as they are committed, and their reads
    /// answer with nothing. For replays, which observe each changeset as it is decided and
    /// must hold a week of traffic in memory.
    pub fn without_history() -> MemoryStore {
        MemoryStore {
            state: Mutex::new(State {
                forget: true,
                ..State::default()
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct InboxEntry {
    key: String,
    event: Inbound,
    received_at: Millis,
    processed_at: Option<Millis>,
}

struct StoredMessage {
    message: Message,
    channel: String,
}

struct OutboxEntry {
    conversation_id: i64,
    message_id: Option<i64>,
    item: OutboxItem,
    lane: String,
    status: &'static str,
    attempts: u32,
    next_attempt_at: Millis,
    updated_at: Millis,
}

struct AgentEntry {
    agent: Agent,
    password_hash: Option<String>,
    last_assigned_at: Option<Millis>,
}

struct TokenEntry {
    hash: String,
    record: TokenRecord,
}

struct JobEntry {
    job: Job,
    done_at: Option<Millis>,
}

struct TraceEntry {
    conversation_id: i64,
    pack_hash: String,
    at: Millis,
    trace: Arc<crate::trace::Trace>,
}

/// What the store keeps. Ids count from 1 per kind, as the SQL stores' do.
#[derive(Default)]
struct State {
    /// Keeps no record of what happened: see [`MemoryStore::without_history`].
    forget: bool,
    inbox: BTreeMap<i64, InboxEntry>,
    /// `(channel, provider_id)` of every event ingested: the deduplication.
    seen: HashSet<(String, String)>,
    /// Without history: the order events were seen in, so that only the newest
    /// [`SEEN_WITHOUT_HISTORY`] are remembered (a shadow runs for days).
    seen_order: std::collections::VecDeque<(String, String)>,
    next_inbox: i64,
    contacts: BTreeMap<i64, Contact>,
    contact_ids: HashMap<(String, String), i64>,
    conversations: BTreeMap<i64, Conversation>,
    /// `(contact, channel)` → conversation.
    conversation_ids: HashMap<(i64, String), i64>,
    messages: BTreeMap<i64, StoredMessage>,
    /// Message ids by conversation, ascending.
    messages_of: HashMap<i64, Vec<i64>>,
    /// Message ids by `(channel, provider_id)`.
    messages_by_provider: HashMap<(String, String), Vec<i64>>,
    next_message: i64,
    notes: Vec<Note>,
    tickets: BTreeMap<i64, Ticket>,
    /// Ticket ids by conversation, ascending.
    tickets_of: HashMap<i64, Vec<i64>>,
    /// `(ticket, change)`, in order.
    ticket_events: Vec<(i64, Value)>,
    last_ticket: i64,
    counters: HashMap<String, i64>,
    /// Audit records; a record's id is its index + 1.
    audit: Vec<AuditRecord>,
    /// Indexes into `audit` by entity.
    audit_of: HashMap<String, Vec<usize>>,
    jobs: BTreeMap<i64, JobEntry>,
    /// Ids of jobs not done, by conversation.
    pending_jobs_of: HashMap<i64, Vec<i64>>,
    next_job: i64,
    outbox: BTreeMap<i64, OutboxEntry>,
    next_outbox: i64,
    agents: BTreeMap<String, AgentEntry>,
    tokens: Vec<TokenEntry>,
    media: BTreeMap<i64, MediaRecord>,
    /// Name → next firing.
    schedules: BTreeMap<String, Millis>,
    traces: BTreeMap<i64, TraceEntry>,
    next_trace: i64,
}

/// How many events a store without history remembers having seen: a redelivery further back
/// than this is taken as new (channels redeliver within hours; a busy store receives ~100,000
/// events a day).
pub const SEEN_WITHOUT_HISTORY: usize = 1_000_000;

/// How far a message has come; a delivery status only ever moves it forward.
fn rank(status: &str) -> u8 {
    match status {
        "sent" => 1,
        "delivered" | "failed" => 2,
        "read" => 3,
        _ => 0,
    }
}

/// A JSON value as SQL's `json_extract` gives it to a `GROUP BY`: a string as itself, null or
/// missing as `None`, anything else as its JSON text.
fn extract(v: &Value, key: &str) -> Option<String> {
    match v.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    }
}

/// Whether `text` contains `needle`, ignoring ASCII case (as SQLite's `LIKE`).
fn contains_ignoring_case(text: &str, needle: &str) -> bool {
    text.to_ascii_lowercase()
        .contains(&needle.to_ascii_lowercase())
}

impl State {
    /// Records an event's `(channel, provider_id)`; `false` if it was seen before.
    fn first_sighting(&mut self, key: (String, String)) -> bool {
        if !self.seen.insert(key.clone()) {
            return false;
        }
        if self.forget {
            self.seen_order.push_back(key);
            if self.seen_order.len() > SEEN_WITHOUT_HISTORY {
                if let Some(old) = self.seen_order.pop_front() {
                    self.seen.remove(&old);
                }
            }
        }
        true
    }

    fn add_audit(&mut self, a: AuditRecord) {
        if self.forget {
            return;
        }
        self.audit_of
            .entry(a.entity.clone())
            .or_default()
            .push(self.audit.len());
        self.audit.push(a);
    }

    fn audit_of(&self, entity: &str) -> impl Iterator<Item = &AuditRecord> {
        self.audit_of
            .get(entity)
            .into_iter()
            .flatten()
            .map(|&i| &self.audit[i])
    }

    fn context(&self, conversation_id: i64, created: bool) -> Option<Context> {
        let conversation = self.conversations.get(&conversation_id)?.clone();
        let contact = self.contacts.get(&conversation.contact_id)?.clone();
        Some(Context {
            ticket: self.open_ticket(conversation_id),
            contact,
            conversation,
            created,
        })
    }

    fn open_ticket(&self, conversation_id: i64) -> Option<Ticket> {
        self.tickets_of
            .get(&conversation_id)?
            .iter()
            .rev()
            .filter_map(|id| self.tickets.get(id))
            .find(|t| t.status.is_open())
            .cloned()
    }

    /// The contact and conversation on a channel, created (with the conversation's audit)
    /// when new; a known contact keeps its name (a missing one is filled in).
    fn open_conversation(
        &mut self,
        channel: &str,
        external_id: &str,
        name: Option<&str>,
        phone: Option<&str>,
        now: Millis,
    ) -> (i64, bool) {
        let key = (channel.to_string(), external_id.to_string());
        let contact_id = match self.contact_ids.get(&key) {
            Some(&id) => {
                if let Some(c) = self.contacts.get_mut(&id) {
                    if c.name.is_none() {
                        c.name = name.map(str::to_string);
                    }
                }
                id
            }
            None => {
                let id = self.contacts.len() as i64 + 1;
                self.contacts.insert(
                    id,
                    Contact {
                        id,
                        channel: channel.to_string(),
                        external_id: external_id.to_string(),
                        name: name.map(str::to_string),
                        phone: phone.map(str::to_string),
                        language: None,
                        language_set_by: None,
                        attributes: Default::default(),
                    },
                );
                self.contact_ids.insert(key, id);
                id
            }
        };
        let ckey = (contact_id, channel.to_string());
        if let Some(&id) = self.conversation_ids.get(&ckey) {
            return (id, false);
        }
        let id = self.conversations.keys().next_back().copied().unwrap_or(0) + 1;
        self.conversations
            .insert(id, Conversation::new(id, contact_id, channel, now));
        self.conversation_ids.insert(ckey, id);
        self.add_audit(AuditRecord {
            at: now,
            actor: "customer".into(),
            entity: format!("conversation:{id}"),
            action: "created".into(),
            before: Value::Null,
            after: serde_json::json!({ "channel": channel, "contact": contact_id, "status": "new" }),
        });
        (id, true)
    }

    fn add_outbox(
        &mut self,
        conversation_id: i64,
        message_id: Option<i64>,
        item: OutboxItem,
        at: Millis,
    ) {
        if self.forget {
            return;
        }
        self.next_outbox += 1;
        let lane = item.destination();
        self.outbox.insert(
            self.next_outbox,
            OutboxEntry {
                conversation_id,
                message_id,
                item,
                lane,
                status: "pending",
                attempts: 0,
                next_attempt_at: at,
                updated_at: at,
            },
        );
    }

    /// Writes a changeset: all of it, under the caller's lock.
    fn apply(&mut self, cs: Changeset) {
        let at = cs.at;
        let cid = cs.conversation_id;
        if let Some(c) = cs.contact {
            if let Some(old) = self.contacts.get_mut(&c.id) {
                old.name = c.name;
                old.phone = c.phone;
                old.language = c.language;
                old.attributes = c.attributes;
                old.language_set_by = c.language_set_by;
            }
        }
        let channel = match cs.conversation {
            Some(mut c) => {
                let channel = c.channel.clone();
                c.updated_at = at;
                match self.conversations.get_mut(&c.id) {
                    Some(old) => {
                        c.contact_id = old.contact_id;
                        c.channel = old.channel.clone();
                        c.created_at = old.created_at;
                        *old = c;
                    }
                    None => {
                        self.conversation_ids
                            .insert((c.contact_id, c.channel.clone()), c.id);
                        self.conversations.insert(c.id, c);
                    }
                }
                channel
            }
            None => String::new(),
        };
        for m in cs.messages {
            self.next_message += 1;
            let id = self.next_message;
            if self.forget {
                continue;
            }
            if let Some(p) = &m.provider_id {
                self.messages_by_provider
                    .entry((channel.clone(), p.clone()))
                    .or_default()
                    .push(id);
            }
            self.messages_of.entry(cid).or_default().push(id);
            self.messages.insert(
                id,
                StoredMessage {
                    message: Message {
                        id,
                        conversation_id: cid,
                        direction: m.direction,
                        kind: m.kind,
                        body: m.body,
                        payload: m.payload,
                        provider_id: m.provider_id,
                        author: m.author,
                        status: m.status,
                        error: None,
                        created_at: at,
                    },
                    channel: channel.clone(),
                },
            );
            if let Some(o) = m.outbound {
                self.add_outbox(cid, Some(id), OutboxItem::Message(Box::new(o)), at);
            }
        }
        for (connector, body) in cs.webhooks {
            self.add_outbox(cid, None, OutboxItem::Webhook { connector, body }, at);
        }
        for (author, text) in cs.notes {
            if self.forget {
                break;
            }
            self.notes.push(Note {
                id: self.notes.len() as i64 + 1,
                conversation_id: cid,
                author,
                text,
                created_at: at,
            });
        }
        for t in cs.tickets {
            let mut k = t.ticket;
            self.last_ticket = self.last_ticket.max(k.id);
            match self.tickets.get(&k.id) {
                Some(old) => {
                    k.conversation_id = old.conversation_id;
                    k.created_at = old.created_at;
                }
                None => {
                    let ids = self.tickets_of.entry(k.conversation_id).or_default();
                    ids.push(k.id);
                    ids.sort_unstable();
                }
            }
            if !self.forget {
                self.ticket_events.push((k.id, t.change));
            }
            self.tickets.insert(k.id, k);
        }
        for (kind, name) in cs.cancel_jobs {
            let pending = self.pending_jobs_of.entry(cid).or_default();
            pending.retain(|id| match self.jobs.get_mut(id) {
                Some(j) if j.job.kind == kind && j.job.name == name => {
                    j.done_at = Some(at);
                    false
                }
                Some(_) => true,
                None => false,
            });
        }
        for a in cs.assigned {
            if let Some(e) = self.agents.get_mut(&a) {
                e.last_assigned_at = Some(at);
            }
        }
        for a in cs.audit {
            self.add_audit(a);
        }
        for j in cs.new_jobs {
            self.next_job += 1;
            self.pending_jobs_of
                .entry(cid)
                .or_default()
                .push(self.next_job);
            self.jobs.insert(
                self.next_job,
                JobEntry {
                    job: Job {
                        id: self.next_job,
                        conversation_id: cid,
                        kind: j.kind,
                        name: j.name,
                        due_at: j.due_at,
                    },
                    done_at: None,
                },
            );
        }
        if let Some(id) = cs.inbox_id {
            if self.forget {
                self.inbox.remove(&id);
            } else if let Some(e) = self.inbox.get_mut(&id) {
                e.processed_at = Some(at);
            }
        }
        if let Some(id) = cs.job_id {
            self.job_done(id, at);
            if self.forget {
                self.jobs.remove(&id);
            }
        }
        if let Some((pack_hash, trace)) = cs.trace.filter(|_| !self.forget) {
            self.next_trace += 1;
            self.traces.insert(
                self.next_trace,
                TraceEntry {
                    conversation_id: cid,
                    pack_hash,
                    at,
                    trace,
                },
            );
        }
        match cs.schedule {
            Some((name, Some(next))) => {
                self.schedules.insert(name, next);
            }
            Some((name, None)) => {
                self.schedules.remove(&name);
            }
            None => {}
        }
    }

    /// Marks a job done (it fired).
    fn job_done(&mut self, id: i64, at: Millis) {
        if let Some(j) = self.jobs.get_mut(&id) {
            j.done_at = Some(at);
            if let Some(p) = self.pending_jobs_of.get_mut(&j.job.conversation_id) {
                p.retain(|&x| x != id);
            }
        }
    }

    /// Whether an outbox row is first among its lane's pending rows.
    fn first_in_lane(&self, id: i64, o: &OutboxEntry) -> bool {
        !self.outbox.range(..id).any(|(_, e)| {
            e.status == "pending" && e.conversation_id == o.conversation_id && e.lane == o.lane
        })
    }

    fn message_of_outbox(&mut self, id: i64) -> Option<&mut Message> {
        let mid = self.outbox.get(&id)?.message_id?;
        self.messages.get_mut(&mid).map(|m| &mut m.message)
    }

    fn line(&self, c: &Conversation) -> ConversationLine {
        let contact = self.contacts.get(&c.contact_id);
        ConversationLine {
            conversation: c.clone(),
            contact_name: contact.and_then(|x| x.name.clone()),
            contact_phone: contact.and_then(|x| x.phone.clone()),
            waiting_since: c.queued_at.unwrap_or(c.created_at),
            last_message: self
                .messages_of
                .get(&c.id)
                .and_then(|ids| ids.last())
                .and_then(|id| self.messages.get(id))
                .map(|m| m.message.body.chars().take(280).collect()),
        }
    }

    fn matches(&self, c: &Conversation, q: &ConversationQuery) -> bool {
        let contact = self.contacts.get(&c.contact_id);
        q.status.is_none_or(|s| c.status == s)
            && q.queue.as_ref().is_none_or(|x| c.queue.as_ref() == Some(x))
            && q.assignee
                .as_ref()
                .is_none_or(|x| c.assignee.as_ref() == Some(x))
            && (!q.unassigned || (c.assignee.is_none() && c.queue.is_some()))
            && q.contact.is_none_or(|x| c.contact_id == x)
            && q.tag.as_ref().is_none_or(|t| c.tags.contains(t))
            && q.priority.is_none_or(|p| c.priority == p)
            && q.q
                .as_deref()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .is_none_or(|t| {
                    contact.is_some_and(|x| {
                        x.name
                            .as_deref()
                            .is_some_and(|n| contains_ignoring_case(n, t))
                            || x.phone
                                .as_deref()
                                .is_some_and(|p| contains_ignoring_case(p, t))
                    }) || self.messages_of.get(&c.id).is_some_and(|ids| {
                        ids.iter()
                            .any(|id| contains_ignoring_case(&self.messages[id].message.body, t))
                    })
                })
            && q.visible_to.as_ref().is_none_or(|(agent, queues)| {
                c.assignee.as_ref() == Some(agent)
                    || c.queue.as_ref().is_some_and(|x| queues.contains(x))
            })
            && q.after
                .is_none_or(|after| (c.queued_at.unwrap_or(c.created_at), c.id) > after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(id: &str) -> Inbound {
        Inbound::Message {
            channel: "whatsapp".into(),
            from: "923001234567".into(),
            name: None,
            phone: None,
            provider_id: id.into(),
            kind: "text".into(),
            text: "hello".into(),
            choice: None,
            payload: Value::Null,
        }
    }

    /// The customer's "hello" as the pipeline stores it.
    fn hello() -> NewMessage {
        NewMessage {
            direction: Direction::In,
            kind: "text".into(),
            body: "hello".into(),
            payload: Value::Null,
            provider_id: Some("w1".into()),
            author: "customer".into(),
            status: "received".into(),
            outbound: None,
        }
    }

    /// A replay's store keeps what the next decision reads and drops the record: the
    /// conversation and a redelivery's duplicate are known, the messages are not kept.
    #[tokio::test]
    async fn without_history_keeps_state_and_drops_the_record() {
        let s = MemoryStore::without_history();
        let got = s.ingest(vec![text("w1"), text("w1")], 10).await.unwrap();
        assert!(matches!(got[..], [Ingested::New(_), Ingested::Duplicate]));
        let Ingested::New(inbox) = got[0] else {
            unreachable!()
        };
        let ctx = s
            .load_context("whatsapp", "923001234567", None, None, 10)
            .await
            .unwrap();
        assert!(ctx.created);
        let mut conv = ctx.conversation.clone();
        conv.tags.push("seen".into());
        s.commit(Changeset {
            at: 11,
            conversation_id: conv.id,
            inbox_id: Some(inbox),
            conversation: Some(conv.clone()),
            messages: vec![hello()],
            ..Default::default()
        })
        .await
        .unwrap();
        let again = s.context_of(conv.id).await.unwrap().expect("kept");
        assert_eq!(again.conversation.tags, ["seen"], "state is kept");
        assert!(
            s.messages(conv.id).await.unwrap().is_empty(),
            "the record is not"
        );
        assert!(
            s.pending_inbox(0, 10).await.unwrap().is_empty(),
            "processed, gone"
        );
        assert_eq!(
            s.ingest(vec![text("w1")], 12).await.unwrap(),
            [Ingested::Duplicate],
            "a redelivery after the commit is still a duplicate"
        );
        // A store with history keeps the message.
        let full = MemoryStore::new();
        full.ingest(vec![text("w1")], 10).await.unwrap();
        let ctx = full
            .load_context("whatsapp", "923001234567", None, None, 10)
            .await
            .unwrap();
        full.commit(Changeset {
            at: 11,
            conversation_id: ctx.conversation.id,
            conversation: Some(ctx.conversation.clone()),
            messages: vec![hello()],
            ..Default::default()
        })
        .await
        .unwrap();
        assert_eq!(full.messages(ctx.conversation.id).await.unwrap().len(), 1);
    }
}
