//! The pipeline: one event of one conversation at a time.
//!
//! load context → classify → the active flow consumes the message (unless an escape intent
//! interrupts) → rules in file order until `stop` → an unhandled customer message goes to
//! `settings.default_queue`; then the events the actions caused (status changed, ticket
//! created, flow completed, …) run through the rules too, with a depth bound (the loop guard).
//! Everything decided is one [`Changeset`], committed in one transaction.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use rhai::Dynamic;
use serde_json::{json, Map, Value};
use switchyard_rules::check::wa;
use switchyard_rules::pack::{
    ActionRt, LookupAction, Matcher, MessageRt, Next, Pack, RowsFrom, RuleOutcome,
};
use switchyard_rules::script::{dynamic_to_json, Clock, Vars};

use switchyard_rules::UNKNOWN;

use crate::model::*;
use crate::ports::{Lookup, LookupError};
use crate::store::{Changeset, NewJob, NewMessage, Store, StoreError, TicketChange};

mod act;
mod schedules;
mod shifts;
mod sla;
pub use act::{approved_templates, ActError, Acted, Actor, AgentAction, TicketUpdate};

/// How deep events caused by actions may chain (the loop guard), and how many one event may
/// cause in all.
pub const MAX_EVENT_DEPTH: u32 = 6;
pub const MAX_CAUSED_EVENTS: usize = 64;
/// The template sent to the customer when a lookup fails (the store is down), if the pack has
/// one, before a person takes over.
pub const STORE_UNAVAILABLE: &str = "store_unavailable";
/// Most `goto`s one event may follow inside a flow.
const MAX_STEPS_PER_EVENT: u32 = 20;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("conversation {0} vanished")]
    Missing(i64),
}

pub fn millis(t: DateTime<Utc>) -> Millis {
    t.timestamp_millis()
}

fn time(m: Millis) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(m).unwrap_or_default()
}

/// The engine: a pack, a store and the lookups, shared by every worker.
pub struct Engine {
    pub store: Arc<dyn Store>,
    pack: ArcSwap<Pack>,
    pub lookup: Arc<dyn Lookup>,
    /// One lock per conversation: inbox events and timers of a conversation never interleave.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Default queues by channel (one per WhatsApp number of a multi-brand shop), over the
    /// pack's `settings.default_queue`.
    default_queues: HashMap<String, String>,
    /// What committed changesets changed, for live inboxes.
    feed: tokio::sync::broadcast::Sender<crate::feed::FeedEvent>,
    pub metrics: crate::metrics::EngineMetrics,
}

/// A decided, not yet committed, event (see [`Engine::decide`]).
pub struct Decision {
    pub changeset: Changeset,
    /// A queue whose agent freed capacity: waiting conversations may be assigned.
    pub freed: Option<String>,
    pub processed: Processed,
    /// Set when there is nothing to commit (instances sharing the store).
    pub skipped: Option<Skip>,
    guard: ConvGuard,
}

/// Why an event was not processed by this call (only with a store several instances share).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Another instance processed it.
    Done,
    /// An earlier event of the conversation is not processed yet.
    NotYet,
    /// Another instance holds the conversation right now.
    Busy,
}

/// A conversation held by this process: the engine's own lock, and the store's hold against
/// other instances when the store is shared.
pub struct ConvGuard {
    _local: tokio::sync::OwnedMutexGuard<()>,
    shared: Option<crate::store::Held>,
}

impl ConvGuard {
    /// Whether other instances share the store (state must be re-checked under the hold).
    fn shared(&self) -> bool {
        self.shared.is_some()
    }
}

/// What processing an event produced (for tests and the CLI).
#[derive(Debug, Clone, Default)]
pub struct Processed {
    pub conversation_id: i64,
    pub intent: Option<String>,
    /// Shared with the committed changeset (not copied).
    pub trace: Arc<Value>,
}

impl Engine {
    pub fn new(store: Arc<dyn Store>, pack: Arc<Pack>, lookup: Arc<dyn Lookup>) -> Engine {
        Engine {
            store,
            pack: ArcSwap::new(pack),
            lookup,
            locks: Mutex::new(HashMap::new()),
            default_queues: HashMap::new(),
            feed: tokio::sync::broadcast::channel(1024).0,
            metrics: Default::default(),
        }
    }

    /// The live feed of what committed changes did (see [`crate::feed`]).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<crate::feed::FeedEvent> {
        self.feed.subscribe()
    }

    /// Commits a changeset, then tells the feed's subscribers (if any) what it changed.
    async fn commit(&self, cs: Changeset) -> Result<(), EngineError> {
        let events = if self.feed.receiver_count() > 0 {
            crate::feed::events_of(&cs)
        } else {
            Vec::new()
        };
        let errors = cs
            .audit
            .iter()
            .filter(|a| a.action == "script_failed")
            .count();
        self.store.commit(cs).await?;
        if errors > 0 {
            self.metrics.rule_errors.inc_by(errors as u64);
        }
        for e in events {
            let _ = self.feed.send(e);
        }
        Ok(())
    }

    /// Conversations on `channel` that nothing handled go to `queue` instead of the pack's
    /// default queue (while the pack has that queue).
    pub fn with_default_queue(mut self, channel: &str, queue: &str) -> Engine {
        self.default_queues
            .insert(channel.to_string(), queue.to_string());
        self
    }

    /// The queue for what nothing handled on `channel`.
    fn default_queue(&self, channel: &str, pack: &Pack) -> String {
        self.default_queues
            .get(channel)
            .filter(|q| pack.queues.contains_key(q.as_str()))
            .cloned()
            .unwrap_or_else(|| pack.settings.default_queue.clone())
    }

    pub fn pack(&self) -> Arc<Pack> {
        self.pack.load_full()
    }

    /// Swaps in a new, already validated pack; events in flight finish on the old one.
    pub fn replace_pack(&self, pack: Arc<Pack>) {
        self.pack.store(pack);
    }

    /// The lock of a contact's conversation on a channel (key `channel:external_id`).
    fn lock_for(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() > 10_000 {
            m.retain(|_, l| Arc::strong_count(l) > 1);
        }
        m.entry(key.to_string()).or_default().clone()
    }

    /// [`Engine::hold`] without waiting for another instance: `None` when one holds `key`.
    async fn try_hold(&self, key: &str) -> Result<Option<ConvGuard>, EngineError> {
        let local = self.lock_for(key).lock_owned().await;
        if !self.store.shared() {
            return Ok(Some(ConvGuard {
                _local: local,
                shared: None,
            }));
        }
        Ok(self.store.try_hold(key).await?.map(|h| ConvGuard {
            _local: local,
            shared: Some(h),
        }))
    }

    /// Holds `key` in this process and, on a shared store, against other instances.
    async fn hold(&self, key: &str) -> Result<ConvGuard, EngineError> {
        let local = self.lock_for(key).lock_owned().await;
        let shared = self.store.hold(key).await?;
        Ok(ConvGuard {
            _local: local,
            shared,
        })
    }

    /// A conversation's context, read under its lock.
    async fn locked_context(
        &self,
        conversation_id: i64,
    ) -> Result<Option<(crate::store::Context, ConvGuard)>, EngineError> {
        let Some(ctx) = self.store.context_of(conversation_id).await? else {
            return Ok(None);
        };
        let key = format!("{}:{}", ctx.contact.channel, ctx.contact.external_id);
        let guard = self.hold(&key).await?;
        // Again, under the lock.
        Ok(self
            .store
            .context_of(conversation_id)
            .await?
            .map(|c| (c, guard)))
    }

    /// Processes one committed inbox event and commits its outcome (marking it processed).
    pub async fn process(&self, row: &InboxRow, now: Millis) -> Result<Processed, EngineError> {
        self.process_turn(row, now, true).await.map(|(p, _)| p)
    }

    /// [`Engine::process`] for the workers: with `wait` false, a conversation another
    /// instance holds is not waited for (`Skip::Busy`). Says why nothing was committed.
    pub async fn process_turn(
        &self,
        row: &InboxRow,
        now: Millis,
        wait: bool,
    ) -> Result<(Processed, Option<Skip>), EngineError> {
        // Lock first, then read: the state read is the state decided on.
        let guard = if wait {
            self.hold(&row.key).await?
        } else {
            match self.try_hold(&row.key).await? {
                Some(g) => g,
                None => return Ok((Processed::default(), Some(Skip::Busy))),
            }
        };
        let d = self.decide_held(row, now, guard).await?;
        if d.skipped.is_some() {
            return Ok((d.processed, d.skipped));
        }
        self.commit(d.changeset).await?;
        drop(d.guard);
        if let Some(q) = d.freed {
            self.assign_waiting(&q, now).await?;
        }
        Ok((d.processed, None))
    }

    /// Everything [`Engine::process`] does but the commit: loads the context and decides.
    /// The returned decision holds the conversation's lock until it is dropped.
    pub async fn decide(&self, row: &InboxRow, now: Millis) -> Result<Decision, EngineError> {
        let guard = self.hold(&row.key).await?;
        self.decide_held(row, now, guard).await
    }

    /// [`Engine::decide`] with the conversation already held (its key is the row's).
    async fn decide_held(
        &self,
        row: &InboxRow,
        now: Millis,
        guard: ConvGuard,
    ) -> Result<Decision, EngineError> {
        let (channel, ext, name, phone) = match &row.event {
            Inbound::Message {
                channel,
                from,
                name,
                phone,
                ..
            } => (channel, from, name, phone),
            Inbound::Order {
                channel,
                to,
                name,
                phone,
                ..
            } => (channel, to, name, phone),
            Inbound::Status { channel, to, .. } => (channel, to, &None, &None),
        };
        if guard.shared() {
            // Instances sharing the store: this event may be done, or not its turn yet.
            let skip = match self.store.inbox_turn(row.id, &row.key).await? {
                crate::store::InboxTurn::Next => None,
                crate::store::InboxTurn::Done => Some(Skip::Done),
                crate::store::InboxTurn::NotYet => Some(Skip::NotYet),
            };
            if skip.is_some() {
                return Ok(Decision {
                    changeset: Changeset::default(),
                    freed: None,
                    processed: Processed::default(),
                    skipped: skip,
                    guard,
                });
            }
        }
        let ctx = self
            .store
            .load_context(channel, ext, name.as_deref(), phone.as_deref(), now)
            .await?;
        let created = ctx.created;
        let pack = self.pack();
        let mut run = Run::new(self, &pack, ctx, now);
        run.cs.inbox_id = Some(row.id);
        if created {
            run.caused("conversation.created", json!({}), 1);
        }
        match &row.event {
            Inbound::Message {
                kind,
                text,
                choice,
                payload,
                provider_id,
                name,
                phone,
                ..
            } => {
                run.on_message(
                    kind,
                    text,
                    choice.as_deref(),
                    payload,
                    provider_id,
                    name.as_deref(),
                    phone.as_deref(),
                )
                .await?;
            }
            Inbound::Order { event, order, .. } => {
                run.on_event(event, Some(order.clone())).await?;
            }
            Inbound::Status {
                message,
                status,
                error,
                ..
            } => {
                run.on_status(message, status, error.as_deref()).await?;
            }
        }
        run.drain_caused().await?;
        let freed = run.freed_queue();
        let changeset = run.finish();
        let processed = Processed {
            conversation_id: changeset.conversation_id,
            intent: out_intent(&changeset),
            trace: changeset
                .trace
                .as_ref()
                .map(|t| t.1.clone())
                .unwrap_or_default(),
        };
        Ok(Decision {
            changeset,
            freed,
            processed,
            skipped: None,
            guard,
        })
    }

    /// Gives waiting conversations of `queue` to agents who can take them, longest-waiting
    /// first, per the queue's policy. Called when an agent comes online or frees capacity.
    /// Returns how many were assigned.
    pub async fn assign_waiting(&self, queue: &str, now: Millis) -> Result<usize, EngineError> {
        let mut assigned = 0;
        for id in self.store.waiting_conversations(queue, 100).await? {
            let Some(ctx) = self.locked_context(id).await? else {
                continue;
            };
            let (ctx, _guard) = ctx;
            if ctx.conversation.assignee.is_some()
                || ctx.conversation.queue.as_deref() != Some(queue)
            {
                continue;
            }
            let pack = self.pack();
            let mut run = Run::new(self, &pack, ctx, now);
            run.route(queue, "system", 0).await?;
            if run.conv.assignee.is_none() {
                // Nobody can take more: the rest keep waiting too.
                break;
            }
            assigned += 1;
            run.drain_caused().await?;
            let out = run.finish();
            self.commit(out).await?;
        }
        Ok(assigned)
    }

    /// Saves an agent; one who is online pulls waiting conversations of their queues.
    pub async fn save_agent(
        &self,
        agent: &Agent,
        actor: &str,
        now: Millis,
    ) -> Result<usize, EngineError> {
        self.store.upsert_agent(agent, actor, now).await?;
        let mut n = 0;
        if agent.availability == "online" {
            for q in &agent.queues {
                n += self.assign_waiting(q, now).await?;
            }
        }
        Ok(n)
    }

    /// A channel refused a message because the customer service window is closed: the
    /// conversation goes to the default queue with a note saying what happened and what to do
    /// (send an approved template), audited as `system`.
    pub async fn send_refused(
        &self,
        conversation_id: i64,
        reason: &str,
        now: Millis,
    ) -> Result<(), EngineError> {
        let (ctx, _guard) = self
            .locked_context(conversation_id)
            .await?
            .ok_or(EngineError::Missing(conversation_id))?;
        let pack = self.pack();
        let mut run = Run::new(self, &pack, ctx, now);
        run.audit(
            "system",
            "send_refused",
            Value::Null,
            json!({ "reason": reason }),
        );
        let note = format!(
            "WhatsApp refused a reply because the customer's 24-hour window is closed ({reason}). \
             Reach them with an approved template."
        );
        run.handoff(None, None, Some(note), "system", 0).await?;
        run.drain_caused().await?;
        let out = run.finish();
        self.commit(out).await?;
        Ok(())
    }

    /// Fires a due job (flow timeout, timer, snooze) and commits its outcome.
    pub async fn fire_job(&self, job: &Job, now: Millis) -> Result<Processed, EngineError> {
        let (ctx, _guard) = self
            .locked_context(job.conversation_id)
            .await?
            .ok_or(EngineError::Missing(job.conversation_id))?;
        if _guard.shared() && !self.store.job_pending(job.id).await? {
            // Another instance fired it.
            return Ok(Processed::default());
        }
        let pack = self.pack();
        let mut run = Run::new(self, &pack, ctx, now);
        run.cs.job_id = Some(job.id);
        run.on_job(job).await?;
        run.drain_caused().await?;
        let freed = run.freed_queue();
        let out = run.finish();
        let processed = Processed {
            conversation_id: out.conversation_id,
            intent: None,
            trace: out.trace.as_ref().map(|t| t.1.clone()).unwrap_or_default(),
        };
        self.commit(out).await?;
        drop(_guard);
        if let Some(q) = freed {
            self.assign_waiting(&q, now).await?;
        }
        Ok(processed)
    }
}

fn out_intent(cs: &Changeset) -> Option<String> {
    cs.trace
        .as_ref()
        .and_then(|(_, t)| t["intent"]["intent"].as_str().map(String::from))
}

/// What to do after an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    /// Stop this action list (a lookup failed and the conversation went to a human, or the
    /// running flow was replaced).
    Abort,
    /// `stop`: no further rules for this event.
    Stop,
}

/// The state of one event's processing.
struct Run<'a> {
    eng: &'a Engine,
    pack: &'a Pack,
    now: Millis,
    clock: Clock,
    contact: Contact,
    conv: Conversation,
    ticket: Option<Ticket>,
    cs: Changeset,
    vars: Vars,
    trace: Vec<Value>,
    intent_trace: Value,
    caused: VecDeque<(String, Value, u32)>,
    caused_total: usize,
    contact_changed: bool,
    steps_followed: u32,
    /// Lookup results and event data for a flow that starts later in this event.
    pending_bound: Map<String, Value>,
    /// While reassigning: the agent the conversation is taken from.
    not_to: Option<String>,
    /// The state the scope's `conversation`, `contact` and `ticket` were last built from:
    /// [`Run::refresh_vars`] rebuilds only what changed since.
    vars_of: (
        Option<Conversation>,
        Option<Contact>,
        Option<Option<Ticket>>,
    ),
}

impl<'a> Run<'a> {
    fn new(eng: &'a Engine, pack: &'a Pack, ctx: crate::store::Context, now: Millis) -> Run<'a> {
        let crate::store::Context {
            contact,
            conversation: conv,
            ticket,
            ..
        } = ctx;
        let clock = Clock {
            now: time(now),
            window_open: conv.window_open(now),
        };
        let mut vars = pack.empty_vars();
        vars.set(
            "now",
            Dynamic::from(
                time(now)
                    .with_timezone(&pack.settings.timezone)
                    .to_rfc3339(),
            ),
        );
        if let Some(fs) = &conv.flow {
            for (k, v) in &fs.bound {
                vars.set_json(k, v);
            }
        }
        let cs = Changeset {
            at: now,
            conversation_id: conv.id,
            ..Default::default()
        };
        Run {
            eng,
            pack,
            now,
            clock,
            contact,
            conv,
            ticket,
            cs,
            vars,
            trace: Vec::new(),
            intent_trace: Value::Null,
            caused: VecDeque::new(),
            caused_total: 0,
            contact_changed: false,
            steps_followed: 0,
            pending_bound: Map::new(),
            not_to: None,
            vars_of: (None, None, None),
        }
    }

    /// The queue whose agent just freed capacity (their conversation was resolved).
    fn freed_queue(&self) -> Option<String> {
        let resolved = self.conv.status == Status::Resolved && self.conv.assignee.is_some();
        let was_open = self
            .cs
            .audit
            .iter()
            .any(|a| a.action == "status_changed" && a.after["status"] == "resolved");
        (resolved && was_open)
            .then(|| self.conv.queue.clone())
            .flatten()
    }

    fn finish(mut self) -> Changeset {
        self.cs.conversation = Some(self.conv.clone());
        if self.contact_changed {
            self.cs.contact = Some(self.contact.clone());
        }
        let trace = json!({
            "at": time(self.now).to_rfc3339(),
            "intent": self.intent_trace,
            "steps": self.trace,
        });
        self.cs.trace = Some((self.pack.hash.clone(), Arc::new(trace)));
        self.cs
    }

    // ---- scope -------------------------------------------------------------------------

    fn refresh_vars(&mut self) {
        self.clock.window_open = self.conv.window_open(self.now);
        if self.vars_of.0.as_ref() != Some(&self.conv) {
            self.set_conversation_var();
            self.vars_of.0 = Some(self.conv.clone());
        }
        if self.vars_of.1.as_ref() != Some(&self.contact) {
            self.set_contact_var();
            self.vars_of.1 = Some(self.contact.clone());
        }
        if self.vars_of.2.as_ref() != Some(&self.ticket) {
            match &self.ticket {
                Some(t) => self.vars.set_json("ticket", &ticket_json(t)),
                None => self.vars.set("ticket", Dynamic::UNIT),
            }
            self.vars_of.2 = Some(self.ticket.clone());
        }
    }

    fn set_conversation_var(&mut self) {
        let c = &self.conv;
        self.vars.set_json(
            "conversation",
            &json!({
                "id": c.id,
                "channel": c.channel,
                "status": c.status.as_str(),
                "queue": c.queue,
                "assignee": c.assignee,
                "priority": c.priority.as_str(),
                "tags": c.tags,
                "attributes": c.attributes,
                "flow": c.flow.as_ref().map(|f| f.flow.clone()),
                "step": c.flow.as_ref().map(|f| f.step.clone()),
            }),
        );
    }

    fn set_contact_var(&mut self) {
        let k = &self.contact;
        let mut contact = k.attributes.clone();
        contact.insert("id".into(), json!(k.id));
        contact.insert("name".into(), json!(k.name));
        contact.insert("phone".into(), json!(k.phone));
        contact.insert("language".into(), json!(k.language));
        contact.insert("external_id".into(), json!(k.external_id));
        self.vars.set_json("contact", &Value::Object(contact));
    }

    fn render(&mut self, t: &switchyard_rules::template::Template, actor: &str) -> String {
        let mut scope = self.vars.scope();
        match t.render(&self.pack.sandbox, &mut scope, self.clock) {
            Ok(s) => s,
            Err(e) => {
                self.audit(
                    actor,
                    "script_failed",
                    Value::Null,
                    json!({ "template": t.source(), "error": e.to_string() }),
                );
                self.trace.push(
                    json!({ "template_failed": t.source(), "by": actor, "error": e.to_string() }),
                );
                String::new()
            }
        }
    }

    // ---- bookkeeping -------------------------------------------------------------------

    fn audit(&mut self, actor: &str, action: &str, before: Value, after: Value) {
        self.cs.audit.push(AuditRecord {
            at: self.now,
            actor: actor.to_string(),
            entity: format!("conversation:{}", self.conv.id),
            action: action.to_string(),
            before,
            after,
        });
    }

    fn caused(&mut self, event: &str, payload: Value, depth: u32) {
        self.caused.push_back((event.to_string(), payload, depth));
    }

    fn set_status(&mut self, status: Status, actor: &str, depth: u32) {
        if self.conv.status == status {
            return;
        }
        let from = self.conv.status;
        self.audit(
            actor,
            "status_changed",
            json!({ "status": from.as_str() }),
            json!({ "status": status.as_str() }),
        );
        self.conv.status = status;
        self.sla_on_status(from, status, actor);
        self.caused(
            "conversation.status_changed",
            json!({ "from": from.as_str(), "to": status.as_str() }),
            depth + 1,
        );
    }

    fn set_priority(&mut self, p: Priority, actor: &str) {
        if self.conv.priority == p {
            return;
        }
        self.audit(
            actor,
            "priority_changed",
            json!({ "priority": self.conv.priority.as_str() }),
            json!({ "priority": p.as_str() }),
        );
        self.conv.priority = p;
        self.sla_recompute();
    }

    /// Puts the conversation aside (`waiting`) until `d` passes or the customer writes.
    fn snooze(&mut self, d: std::time::Duration, actor: &str, depth: u32) {
        self.cs.cancel_jobs.push(("snooze".into(), "snooze".into()));
        self.cs.new_jobs.push(NewJob {
            kind: "snooze".into(),
            name: "snooze".into(),
            due_at: self.now + d.as_millis() as i64,
        });
        self.audit(
            actor,
            "snoozed",
            Value::Null,
            json!({ "until": time(self.now + d.as_millis() as i64).to_rfc3339() }),
        );
        self.set_status(Status::Waiting, actor, depth);
    }

    /// Notes, like messages, are append-only records with their author and time: the row is
    /// its own audit record.
    fn note(&mut self, actor: &str, text: String) {
        if !text.trim().is_empty() {
            self.cs.notes.push((actor.to_string(), text));
        }
    }

    // ---- events ------------------------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    async fn on_message(
        &mut self,
        kind: &str,
        text: &str,
        choice: Option<&str>,
        payload: &Value,
        provider_id: &str,
        name: Option<&str>,
        phone: Option<&str>,
    ) -> Result<(), EngineError> {
        // The customer's own details fill gaps, never overwrite what an agent set.
        if self.contact.name.is_none() && name.is_some() {
            self.contact.name = name.map(String::from);
            self.contact_changed = true;
        }
        if self.contact.phone.is_none() && phone.is_some() {
            self.contact.phone = phone.map(String::from);
            self.contact_changed = true;
        }
        self.cs.messages.push(NewMessage {
            direction: Direction::In,
            kind: kind.to_string(),
            body: text.to_string(),
            payload: if choice.is_some() {
                json!({ "choice": choice, "raw": payload })
            } else {
                payload.clone()
            },
            provider_id: Some(provider_id.to_string()),
            author: "customer".into(),
            status: "received".into(),
            outbound: None,
        });
        self.conv.last_customer_message_at = Some(self.now);
        if matches!(self.conv.status, Status::Resolved | Status::Waiting) {
            self.cs.cancel_jobs.push(("snooze".into(), "snooze".into()));
            self.set_status(Status::Open, "customer", 0);
        }
        self.sla_on_customer_message();

        // Classify.
        let (cls, entities) = self.pack.classify(text);
        self.intent_trace = json!({
            "intent": cls.intent,
            "confidence": (cls.confidence as f64 * 1000.0).round() / 1000.0,
            "scores": cls.scores.iter().take(3).map(|(n, s)| json!([n, (*s as f64 * 1000.0).round() / 1000.0])).collect::<Vec<_>>(),
            "threshold": (self.pack.settings.intent_threshold as f64 * 1000.0).round() / 1000.0,
        });
        self.vars.set_json(
            "message",
            &json!({ "text": text, "kind": kind, "choice": choice }),
        );
        self.vars.set("intent", Dynamic::from(cls.intent.clone()));
        self.vars
            .set("confidence", Dynamic::from(cls.confidence as f64));
        self.vars
            .set_json("entities", &Value::Object(entities.clone()));
        self.vars
            .set_json("event", &json!({ "name": "message.received" }));
        self.refresh_vars();

        // The active flow first.
        let mut handled = false;
        if let Some(fs) = self.conv.flow.clone() {
            // A tapped button of the current step is an answer, whatever its text classifies as.
            let tapped = choice.is_some_and(|c| {
                self.pack
                    .flows
                    .get(&fs.flow)
                    .and_then(|f| f.steps.get(&fs.step))
                    .is_some_and(|st| {
                        st.on
                            .iter()
                            .any(|(m, _)| matches!(m, Matcher::Choice(id) if id == c))
                            || (st.capture.is_some()
                                && matches!(
                                    &st.send,
                                    Some(MessageRt::List {
                                        rows_from: Some(_),
                                        ..
                                    })
                                ))
                    })
            });
            if !tapped && self.pack.settings.escape_intents.contains(&cls.intent) {
                self.trace
                    .push(json!({ "flow": fs.flow, "step": fs.step, "escaped_by": cls.intent }));
                self.end_flow(
                    false,
                    &format!("the customer asked for `{}`", cls.intent),
                    "customer",
                    1,
                );
            } else {
                self.step_flow(&fs, text, choice, &cls.intent, &entities)
                    .await?;
                handled = true;
            }
        }
        if !handled {
            handled = self.run_rules("message.received", &cls.intent, 0).await?;
        }
        if !handled && self.conv.assignee.is_none() && self.conv.queue.is_none() {
            let q = self.eng.default_queue(&self.conv.channel, self.pack);
            self.trace.push(json!({ "unhandled": true, "route": q }));
            self.route(&q, "system", 0).await?;
        }
        Ok(())
    }

    async fn on_event(&mut self, event: &str, order: Option<Value>) -> Result<(), EngineError> {
        if let Some(o) = order {
            // For the rules, and for a flow they start (a running flow keeps its own order).
            self.vars.set_json("order", &o);
            self.pending_bound.insert("order".into(), o);
        }
        self.vars.set_json("event", &json!({ "name": event }));
        self.refresh_vars();
        self.run_rules(event, UNKNOWN, 0).await?;
        Ok(())
    }

    /// A delivery status that moved one of our messages forward: the `message.status` rules
    /// see `event.status`, `event.error` and `event.message` (the provider's id).
    async fn on_status(
        &mut self,
        message: &str,
        status: &str,
        error: Option<&str>,
    ) -> Result<(), EngineError> {
        self.vars.set_json(
            "event",
            &json!({ "name": "message.status", "message": message, "status": status, "error": error }),
        );
        self.trace
            .push(json!({ "status": status, "message": message }));
        self.refresh_vars();
        self.run_rules("message.status", UNKNOWN, 0).await?;
        Ok(())
    }

    async fn on_job(&mut self, job: &Job) -> Result<(), EngineError> {
        self.refresh_vars();
        match job.kind.as_str() {
            "flow_timeout" => {
                let Some(fs) = self.conv.flow.clone() else {
                    self.trace
                        .push(json!({ "timeout": job.name, "stale": "no flow running" }));
                    return Ok(());
                };
                if format!("{}/{}", fs.flow, fs.step) != job.name {
                    self.trace
                        .push(json!({ "timeout": job.name, "stale": "the flow moved on" }));
                    return Ok(());
                }
                let Some(step) = self
                    .pack
                    .flows
                    .get(&fs.flow)
                    .and_then(|f| f.steps.get(&fs.step))
                else {
                    self.lost_step(&fs).await?;
                    return Ok(());
                };
                let Some((_, next)) = step.timeout.clone() else {
                    return Ok(());
                };
                self.trace
                    .push(json!({ "flow": fs.flow, "step": fs.step, "timeout": true }));
                let actor = format!("flow:{}", fs.flow);
                self.follow(&fs.flow, &next, &actor).await?;
            }
            "timer" => {
                let ev = format!("timer.{}", job.name);
                self.vars.set_json("event", &json!({ "name": ev }));
                self.run_rules(&ev, UNKNOWN, 0).await?;
            }
            "sla" | "sla_warning" => self.on_sla_job(job).await?,
            "snooze" => {
                self.trace.push(json!({ "snooze": "ended" }));
                self.set_status(Status::Open, "system", 0);
            }
            other => {
                self.trace
                    .push(json!({ "job": other, "ignored": "unknown kind" }));
            }
        }
        Ok(())
    }

    /// Runs the events caused by actions through the rules, with the loop guard.
    async fn drain_caused(&mut self) -> Result<(), EngineError> {
        while let Some((event, payload, depth)) = self.caused.pop_front() {
            self.caused_total += 1;
            if depth > MAX_EVENT_DEPTH || self.caused_total > MAX_CAUSED_EVENTS {
                let dropped = self.caused.len() + 1;
                self.caused.clear();
                self.trace
                    .push(json!({ "loop_guard": event, "depth": depth, "dropped": dropped }));
                self.audit(
                    "system",
                    "loop_guard",
                    Value::Null,
                    json!({ "event": event, "depth": depth, "dropped": dropped, "why": "events caused by actions went too deep; the chain was cut" }),
                );
                break;
            }
            let mut ev = payload.as_object().cloned().unwrap_or_default();
            ev.insert("name".into(), json!(event));
            self.vars.set_json("event", &Value::Object(ev));
            self.refresh_vars();
            self.run_rules(&event, UNKNOWN, depth).await?;
        }
        Ok(())
    }

    /// Rules for `event` in file order until `stop`. Returns whether any matched.
    async fn run_rules(
        &mut self,
        event: &str,
        intent: &str,
        depth: u32,
    ) -> Result<bool, EngineError> {
        self.refresh_vars();
        let mut scope = self.vars.scope();
        let ev = self.pack.evaluate(event, intent, &mut scope, self.clock);
        drop(scope);
        let mut matched = false;
        for (idx, outcome) in &ev.outcomes {
            let rule = &self.pack.rules[*idx];
            let actor = format!("rule:{}", rule.name);
            match outcome {
                RuleOutcome::Matched => {
                    self.trace
                        .push(json!({ "event": event, "rule": rule.name, "matched": true }));
                    matched = true;
                }
                RuleOutcome::NotMatched => {
                    self.trace
                        .push(json!({ "event": event, "rule": rule.name, "matched": false }));
                    continue;
                }
                RuleOutcome::Failed(e) => {
                    self.trace.push(
                        json!({ "event": event, "rule": rule.name, "failed": e.to_string() }),
                    );
                    self.audit(
                        &actor,
                        "script_failed",
                        Value::Null,
                        json!({ "error": e.to_string() }),
                    );
                    continue;
                }
            }
            // Conditions were evaluated on the state before any action: rules see one event.
            let actions = rule.actions.clone();
            if self.exec(&actions, &actor, depth).await? == Flow::Stop {
                break;
            }
        }
        Ok(matched)
    }

    // ---- flows -------------------------------------------------------------------------

    async fn start_flow(
        &mut self,
        name: &str,
        actor: &str,
        depth: u32,
    ) -> Result<Flow, EngineError> {
        if self.conv.flow.is_some() {
            self.end_flow(
                false,
                &format!("replaced by flow `{name}`"),
                actor,
                depth + 1,
            );
        }
        let Some(f) = self.pack.flows.get(name) else {
            return Ok(Flow::Continue);
        };
        let start = f.start.clone();
        let bound = std::mem::take(&mut self.pending_bound);
        self.conv.flow = Some(FlowState {
            flow: name.to_string(),
            step: start.clone(),
            retries: 0,
            bound,
        });
        self.audit(actor, "flow_started", Value::Null, json!({ "flow": name }));
        self.trace
            .push(json!({ "flow": name, "started_by": actor }));
        self.enter_step(name, &start).await?;
        Ok(Flow::Continue)
    }

    fn end_flow(&mut self, completed: bool, why: &str, actor: &str, depth: u32) {
        let Some(fs) = self.conv.flow.take() else {
            return;
        };
        self.cs
            .cancel_jobs
            .push(("flow_timeout".into(), format!("{}/{}", fs.flow, fs.step)));
        let ev = if completed {
            "flow.completed"
        } else {
            "flow.abandoned"
        };
        self.audit(
            actor,
            if completed {
                "flow_completed"
            } else {
                "flow_abandoned"
            },
            json!({ "flow": fs.flow, "step": fs.step }),
            json!({ "why": why }),
        );
        self.trace
            .push(json!({ "flow": fs.flow, "ended": ev, "why": why }));
        self.caused(
            ev,
            json!({ "flow": fs.flow, "step": fs.step, "why": why }),
            depth + 1,
        );
    }

    async fn enter_step(&mut self, flow: &str, step: &str) -> Result<(), EngineError> {
        self.steps_followed += 1;
        let actor = format!("flow:{flow}");
        if self.steps_followed > MAX_STEPS_PER_EVENT {
            self.handoff(None, None, Some(format!("Flow `{flow}` went through more than {MAX_STEPS_PER_EVENT} steps at once; stopped at `{step}`")), &actor, 1).await?;
            return Ok(());
        }
        let Some(st) = self
            .pack
            .flows
            .get(flow)
            .and_then(|f| f.steps.get(step))
            .cloned()
        else {
            let fs = FlowState {
                flow: flow.into(),
                step: step.into(),
                retries: 0,
                bound: Map::new(),
            };
            return self.lost_step(&fs).await;
        };
        if let Some(fs) = self.conv.flow.as_mut() {
            if fs.step != step {
                self.cs
                    .cancel_jobs
                    .push(("flow_timeout".into(), format!("{}/{}", fs.flow, fs.step)));
            }
            fs.step = step.to_string();
            fs.retries = 0;
        }
        self.trace.push(json!({ "flow": flow, "step": step }));
        if self.exec(&st.actions, &actor, 0).await? != Flow::Continue || !self.in_flow(flow) {
            return Ok(());
        }
        if let Some(m) = &st.send {
            self.send(m, &actor, 0).await?;
            if !self.in_flow(flow) {
                return Ok(());
            }
        }
        if let Some(h) = &st.handoff {
            self.exec(std::slice::from_ref(h), &actor, 0).await?;
            self.end_flow(true, "handed off", &actor, 0);
            return Ok(());
        }
        if st.waits() {
            if let Some((after, _)) = &st.timeout {
                self.cs.new_jobs.push(NewJob {
                    kind: "flow_timeout".into(),
                    name: format!("{flow}/{step}"),
                    due_at: self.now + after.as_millis() as i64,
                });
            }
            return Ok(());
        }
        if let Some((i, next)) = self.decide_branch(&st.branch, flow, step, &actor) {
            self.trace
                .push(json!({ "flow": flow, "step": step, "branch": i }));
            return Box::pin(self.follow(flow, &next, &actor)).await;
        }
        if st.next.end {
            self.end_flow(true, "completed", &actor, 0);
        } else if let Some(g) = &st.next.goto {
            Box::pin(self.enter_step(flow, g)).await?;
        }
        Ok(())
    }

    /// The first entry of a step's `branch` whose condition holds (a condition that fails to
    /// run is audited and counts as false), with its index.
    fn decide_branch(
        &mut self,
        branch: &[(Option<rhai::AST>, Next)],
        flow: &str,
        step: &str,
        actor: &str,
    ) -> Option<(usize, Next)> {
        if branch.is_empty() {
            return None;
        }
        self.refresh_vars();
        let mut scope = self.vars.scope();
        for (i, (cond, next)) in branch.iter().enumerate() {
            let holds = match cond {
                None => Ok(true),
                Some(ast) => self.pack.sandbox.eval_bool(ast, &mut scope, self.clock),
            };
            match holds {
                Ok(true) => return Some((i, next.clone())),
                Ok(false) => {}
                Err(e) => {
                    self.audit(
                        actor,
                        "script_failed",
                        Value::Null,
                        json!({ "flow": flow, "step": step, "branch": i, "error": e.to_string() }),
                    );
                    self.trace.push(
                        json!({ "flow": flow, "step": step, "branch": i, "failed": e.to_string() }),
                    );
                }
            }
        }
        None
    }

    fn in_flow(&self, flow: &str) -> bool {
        self.conv.flow.as_ref().is_some_and(|f| f.flow == flow)
    }

    /// A branch: its actions, then `goto` or `end`.
    async fn follow(&mut self, flow: &str, next: &Next, actor: &str) -> Result<(), EngineError> {
        if self.exec(&next.actions, actor, 0).await? != Flow::Continue || !self.in_flow(flow) {
            return Ok(());
        }
        if next.end {
            self.end_flow(true, "completed", actor, 0);
        } else if let Some(g) = &next.goto {
            Box::pin(self.enter_step(flow, g)).await?;
        }
        Ok(())
    }

    async fn step_flow(
        &mut self,
        fs: &FlowState,
        text: &str,
        choice: Option<&str>,
        intent: &str,
        entities: &Map<String, Value>,
    ) -> Result<(), EngineError> {
        let Some(st) = self
            .pack
            .flows
            .get(&fs.flow)
            .and_then(|f| f.steps.get(&fs.step))
            .cloned()
        else {
            return self.lost_step(fs).await;
        };
        let actor = format!("flow:{}", fs.flow);
        let typed = text.trim().to_lowercase();
        let hit = st.on.iter().find(|(m, _)| match m {
            Matcher::Choice(id) => choice == Some(id.as_str()) || typed == id.to_lowercase(),
            Matcher::Intent(i) => i == intent,
            Matcher::Regex(r) => r.is_match(text),
        });
        if let Some((m, next)) = hit {
            let how = match m {
                Matcher::Choice(id) => format!("choice {id}"),
                Matcher::Intent(i) => format!("intent {i}"),
                Matcher::Regex(r) => format!("pattern {r}"),
            };
            self.trace
                .push(json!({ "flow": fs.flow, "step": fs.step, "answer": how }));
            self.cs
                .cancel_jobs
                .push(("flow_timeout".into(), format!("{}/{}", fs.flow, fs.step)));
            let next = next.clone();
            return self.follow(&fs.flow, &next, &actor).await;
        }
        if let Some((into, entity)) = &st.capture {
            // A row tapped in a list built from data is captured by its id (the rows are
            // ours, so no entity check).
            let rows_from = matches!(
                &st.send,
                Some(MessageRt::List {
                    rows_from: Some(_),
                    ..
                })
            );
            let value = match (choice.filter(|_| rows_from), entity) {
                (Some(c), _) => Some(json!(c)),
                (None, Some(e)) => entities.get(e).cloned(),
                (None, None) if !text.trim().is_empty() => Some(json!(text.trim())),
                (None, None) => None,
            };
            if let Some(v) = value {
                let before = self
                    .conv
                    .attributes
                    .get(into)
                    .cloned()
                    .unwrap_or(Value::Null);
                self.audit(
                    &actor,
                    "attribute_set",
                    json!({ into.clone(): before }),
                    json!({ into.clone(): v.clone() }),
                );
                self.conv.attributes.insert(into.clone(), v);
                self.trace
                    .push(json!({ "flow": fs.flow, "step": fs.step, "captured": into }));
                self.cs
                    .cancel_jobs
                    .push(("flow_timeout".into(), format!("{}/{}", fs.flow, fs.step)));
                self.refresh_vars();
                let next = st.next.clone();
                return self.follow(&fs.flow, &next, &actor).await;
            }
        }
        // Not understood: ask again, or hand off after the retries.
        let retries = fs.retries + 1;
        if retries > st.retries {
            self.trace.push(json!({ "flow": fs.flow, "step": fs.step, "unrecognised": retries, "handoff": true }));
            let note = format!(
                "Flow `{}` stopped at step `{}` after {} unrecognised replies; the last was: \"{}\"",
                fs.flow, fs.step, retries, text
            );
            self.end_flow(false, "unrecognised replies", &actor, 0);
            self.handoff(None, None, Some(note), &actor, 0).await?;
            return Ok(());
        }
        if let Some(f) = self.conv.flow.as_mut() {
            f.retries = retries;
        }
        self.trace.push(json!({ "flow": fs.flow, "step": fs.step, "unrecognised": retries, "asked_again": true }));
        if let Some(m) = &st.send {
            self.send(m, &actor, 0).await?;
        }
        Ok(())
    }

    /// The step the conversation is in no longer exists (the pack changed): a human takes over.
    async fn lost_step(&mut self, fs: &FlowState) -> Result<(), EngineError> {
        let note = format!(
            "Flow `{}` step `{}` no longer exists in the rule pack; please take over",
            fs.flow, fs.step
        );
        self.trace
            .push(json!({ "flow": fs.flow, "step": fs.step, "missing": true }));
        self.end_flow(false, "step missing after a reload", "system", 0);
        self.handoff(None, None, Some(note), "system", 0).await
    }

    // ---- actions -----------------------------------------------------------------------

    async fn exec(
        &mut self,
        actions: &[ActionRt],
        actor: &str,
        depth: u32,
    ) -> Result<Flow, EngineError> {
        for a in actions {
            let r = self.exec_one(a, actor, depth).await?;
            if r != Flow::Continue {
                return Ok(r);
            }
        }
        Ok(Flow::Continue)
    }

    async fn exec_one(
        &mut self,
        a: &ActionRt,
        actor: &str,
        depth: u32,
    ) -> Result<Flow, EngineError> {
        match a {
            ActionRt::Reply(m) => self.send(m, actor, depth).await?,
            ActionRt::StartFlow(name) => {
                return Box::pin(self.start_flow(name, actor, depth)).await
            }
            ActionRt::EndFlow => self.end_flow(true, &format!("ended by {actor}"), actor, depth),
            ActionRt::Route { queue } => self.route(queue, actor, depth).await?,
            ActionRt::Reassign => self.reassign(actor, depth).await?,
            ActionRt::Assign { agent, queue } => {
                if let Some(q) = queue {
                    self.route(q, actor, depth).await?;
                }
                if let Some(a) = agent {
                    self.assign(a, actor, depth);
                }
            }
            ActionRt::Handoff { queue, agent, note } => {
                let note = note.as_ref().map(|n| self.render(n, actor));
                self.handoff(queue.clone(), agent.clone(), note, actor, depth)
                    .await?;
            }
            ActionRt::Tag(t) => {
                if !self.conv.tags.contains(t) {
                    self.audit(actor, "tagged", Value::Null, json!({ "tag": t }));
                    self.conv.tags.push(t.clone());
                }
            }
            ActionRt::Untag(t) => {
                if self.conv.tags.contains(t) {
                    self.audit(actor, "untagged", json!({ "tag": t }), Value::Null);
                    self.conv.tags.retain(|x| x != t);
                }
            }
            ActionRt::Set { key, value } => {
                self.refresh_vars();
                let mut scope = self.vars.scope();
                match self.pack.sandbox.eval(value, &mut scope, self.clock) {
                    Ok(v) => {
                        let v = dynamic_to_json(&v);
                        let before = self
                            .conv
                            .attributes
                            .get(key)
                            .cloned()
                            .unwrap_or(Value::Null);
                        self.audit(
                            actor,
                            "attribute_set",
                            json!({ key.clone(): before }),
                            json!({ key.clone(): v.clone() }),
                        );
                        self.conv.attributes.insert(key.clone(), v);
                    }
                    Err(e) => {
                        self.trace
                            .push(json!({ "set": key, "by": actor, "failed": e.to_string() }));
                        self.audit(
                            actor,
                            "script_failed",
                            Value::Null,
                            json!({ "set": key, "error": e.to_string() }),
                        );
                    }
                }
            }
            ActionRt::SetStatus(s) => self.set_status(*s, actor, depth),
            ActionRt::SetPriority(p) => self.set_priority(*p, actor),
            ActionRt::Ticket {
                title,
                category,
                priority,
                queue,
            } => {
                let title = title.as_ref().map(|t| self.render(t, actor));
                self.ticket(
                    title,
                    category.clone(),
                    *priority,
                    queue.clone(),
                    actor,
                    depth,
                )
                .await?;
            }
            ActionRt::Escalate {
                queue,
                reason,
                priority,
            } => {
                let reason = reason.as_ref().map(|r| self.render(r, actor));
                self.route(queue, actor, depth).await?;
                if *priority > self.conv.priority {
                    self.set_priority(*priority, actor);
                }
                self.set_status(Status::Escalated, actor, depth);
                let title = reason
                    .clone()
                    .unwrap_or_else(|| format!("Escalated to {queue}"));
                self.ticket(
                    Some(title),
                    Some("escalation".into()),
                    Some(*priority),
                    Some(queue.clone()),
                    actor,
                    depth,
                )
                .await?;
                if let Some(r) = reason {
                    self.note(actor, format!("Escalated: {r}"));
                }
            }
            ActionRt::Note(t) => {
                let text = self.render(t, actor);
                self.note(actor, text);
            }
            ActionRt::Lookup {
                connector,
                action,
                by,
                bind,
                value,
            } => {
                return self
                    .lookup(
                        connector,
                        *action,
                        by.as_ref(),
                        bind,
                        value.as_ref(),
                        actor,
                        depth,
                    )
                    .await;
            }
            ActionRt::Webhook { connector, body } => {
                let text = body
                    .as_ref()
                    .map(|b| self.render(b, actor))
                    .unwrap_or_default();
                let payload = json!({
                    "text": text,
                    "conversation": self.conv.id,
                    "event": self.vars.get("event").map(dynamic_to_json).unwrap_or(Value::Null),
                    "at": time(self.now).to_rfc3339(),
                });
                self.audit(
                    actor,
                    "webhook_queued",
                    Value::Null,
                    json!({ "connector": connector }),
                );
                self.cs.webhooks.push((connector.clone(), payload));
            }
            ActionRt::Timer { name, after } => {
                self.cs.cancel_jobs.push(("timer".into(), name.clone()));
                self.cs.new_jobs.push(NewJob {
                    kind: "timer".into(),
                    name: name.clone(),
                    due_at: self.now + after.as_millis() as i64,
                });
                self.audit(
                    actor,
                    "timer_set",
                    Value::Null,
                    json!({ "timer": name, "after_s": after.as_secs() }),
                );
            }
            ActionRt::Snooze(d) => self.snooze(*d, actor, depth),
            ActionRt::Stop => return Ok(Flow::Stop),
        }
        Ok(Flow::Continue)
    }

    #[allow(clippy::too_many_arguments)]
    async fn lookup(
        &mut self,
        connector: &str,
        action: LookupAction,
        by: Option<&rhai::AST>,
        bind: &str,
        value: Option<&switchyard_rules::template::Template>,
        actor: &str,
        depth: u32,
    ) -> Result<Flow, EngineError> {
        self.refresh_vars();
        let key = match by {
            Some(ast) => {
                let mut scope = self.vars.scope();
                match self.pack.sandbox.eval(ast, &mut scope, self.clock) {
                    Ok(v) => dynamic_to_json(&v),
                    Err(e) => {
                        self.audit(
                            actor,
                            "script_failed",
                            Value::Null,
                            json!({ "lookup": connector, "error": e.to_string() }),
                        );
                        Value::Null
                    }
                }
            }
            None => self
                .vars
                .get(bind)
                .map(dynamic_to_json)
                .unwrap_or(Value::Null),
        };
        let value = value.map(|v| self.render(v, actor));
        let name = format!("{action:?}");
        let result = if key.is_null() || key == json!("") {
            if action == LookupAction::FindOrders {
                // Nothing to look up by: no orders, and the flow asks for a number.
                Ok(Some(json!([])))
            } else {
                Err(LookupError::NoKey)
            }
        } else {
            self.eng
                .lookup
                .call(connector, action, &key, value.as_deref())
                .await
        };
        let result = match result {
            Ok(None) if action == LookupAction::FindOrders => Ok(Some(json!([]))),
            r => r,
        };
        match result {
            Ok(Some(v)) => {
                // `find_orders` always answers a list (empty: nothing found).
                let found = v.as_array().map_or(json!(true), |a| json!(a.len()));
                self.trace.push(
                    json!({ "lookup": connector, "action": name, "key": key, "found": found }),
                );
                self.audit(
                    actor,
                    "lookup",
                    json!({ "connector": connector, "action": name, "key": key }),
                    json!({ "found": found }),
                );
                self.vars.set_json(bind, &v);
                // Kept by the running flow, and by a flow started later in this event.
                if let Some(fs) = self.conv.flow.as_mut() {
                    fs.bound.insert(bind.to_string(), v.clone());
                }
                self.pending_bound.insert(bind.to_string(), v);
                Ok(Flow::Continue)
            }
            other => {
                let store_down = matches!(other, Err(LookupError::Failed(_)));
                let why = match other {
                    Ok(_) => format!("found nothing for {key}"),
                    Err(e) => e.to_string(),
                };
                self.trace.push(
                    json!({ "lookup": connector, "action": name, "key": key, "failed": why }),
                );
                self.audit(
                    actor,
                    "lookup",
                    json!({ "connector": connector, "action": name, "key": key }),
                    json!({ "failed": why }),
                );
                let note =
                    format!("Lookup `{name}` on `{connector}` {why}; the bot could not go on");
                if self.conv.flow.is_some() {
                    self.end_flow(false, "a lookup failed", actor, depth);
                }
                // The store is down (not "nothing found"): the pack's apology, if it has one.
                if store_down && self.pack.templates.contains_key(STORE_UNAVAILABLE) {
                    let m = MessageRt::Template(STORE_UNAVAILABLE.into());
                    Box::pin(self.send(&m, actor, depth)).await?;
                }
                self.handoff(None, None, Some(note), actor, depth).await?;
                Ok(Flow::Abort)
            }
        }
    }

    async fn ticket(
        &mut self,
        title: Option<String>,
        category: Option<String>,
        priority: Option<Priority>,
        queue: Option<String>,
        actor: &str,
        depth: u32,
    ) -> Result<(), EngineError> {
        match self.ticket.clone() {
            Some(mut t) => {
                let before = ticket_json(&t);
                if let Some(p) = priority {
                    t.priority = t.priority.max(p);
                }
                if category.is_some() && t.category.is_none() {
                    t.category = category;
                }
                if let Some(q) = queue {
                    t.queue = Some(q);
                }
                t.updated_at = self.now;
                let after = ticket_json(&t);
                self.cs.audit.push(AuditRecord {
                    at: self.now,
                    actor: actor.into(),
                    entity: format!("ticket:{}", t.id),
                    action: "updated".into(),
                    before: before.clone(),
                    after: after.clone(),
                });
                self.cs.tickets.push(TicketChange { ticket: t.clone(), created: false, actor: actor.into(), change: json!({ "updated": { "before": before, "after": after }, "why": "the open ticket of this conversation was raised again" }) });
                self.caused("ticket.updated", json!({ "ticket": t.id }), depth + 1);
                self.ticket = Some(t);
            }
            None => {
                let id = self.eng.store.allocate_id("ticket").await?;
                let t = Ticket {
                    id,
                    conversation_id: self.conv.id,
                    title: title
                        .filter(|s| !s.trim().is_empty())
                        .unwrap_or_else(|| "Ticket".into()),
                    category,
                    priority: priority.unwrap_or(Priority::Normal),
                    status: TicketStatus::Open,
                    owner: self.conv.assignee.clone(),
                    queue: queue.or_else(|| self.conv.queue.clone()),
                    // The conversation's resolution SLA, when one runs.
                    due_at: self.resolution_due(),
                    created_at: self.now,
                    updated_at: self.now,
                };
                let after = ticket_json(&t);
                self.cs.audit.push(AuditRecord {
                    at: self.now,
                    actor: actor.into(),
                    entity: format!("ticket:{id}"),
                    action: "created".into(),
                    before: Value::Null,
                    after: after.clone(),
                });
                self.audit(actor, "ticket_opened", Value::Null, json!({ "ticket": id }));
                self.cs.tickets.push(TicketChange {
                    ticket: t.clone(),
                    created: true,
                    actor: actor.into(),
                    change: json!({ "created": after }),
                });
                self.caused("ticket.created", json!({ "ticket": id }), depth + 1);
                self.ticket = Some(t);
            }
        }
        self.refresh_vars();
        Ok(())
    }

    async fn handoff(
        &mut self,
        queue: Option<String>,
        agent: Option<String>,
        note: Option<String>,
        actor: &str,
        depth: u32,
    ) -> Result<(), EngineError> {
        if let Some(fs) = &self.conv.flow {
            let why = format!("handed off by {actor}");
            let completed = actor == format!("flow:{}", fs.flow);
            self.end_flow(completed, &why, actor, depth);
        }
        if let Some(n) = note {
            self.note(actor, n);
        }
        let q = queue.unwrap_or_else(|| self.eng.default_queue(&self.conv.channel, self.pack));
        self.route(&q, actor, depth).await?;
        if let Some(a) = agent {
            self.assign(&a, actor, depth);
        }
        if self.conv.status == Status::New || self.conv.status == Status::Resolved {
            self.set_status(Status::Open, actor, depth);
        }
        self.trace.push(json!({ "handoff": q, "by": actor }));
        Ok(())
    }

    /// Takes the conversation from its owner and assigns it again in its queue, never to the
    /// same owner; with nobody else free it waits in the queue.
    async fn reassign(&mut self, actor: &str, depth: u32) -> Result<(), EngineError> {
        let (Some(prev), Some(queue)) = (self.conv.assignee.clone(), self.conv.queue.clone())
        else {
            self.trace
                .push(json!({ "reassign": "skipped", "why": "no owner or no queue" }));
            return Ok(());
        };
        self.unassign(actor, "reassigned");
        self.route_without(&queue, Some(prev), actor, depth).await
    }

    /// Takes the conversation from its owner, audited with why; returns who had it.
    fn unassign(&mut self, actor: &str, why: &str) -> Option<String> {
        let prev = self.conv.assignee.take()?;
        self.audit(
            actor,
            "unassigned",
            json!({ "assignee": prev }),
            json!({ "assignee": null, "why": why }),
        );
        Some(prev)
    }

    /// [`Run::route`], never picking `prev` (the owner the conversation was just taken from).
    async fn route_without(
        &mut self,
        queue: &str,
        prev: Option<String>,
        actor: &str,
        depth: u32,
    ) -> Result<(), EngineError> {
        self.not_to = prev;
        let r = self.route(queue, actor, depth).await;
        self.not_to = None;
        r
    }

    /// Puts the conversation in `queue` and assigns it per the queue's policy.
    async fn route(&mut self, queue: &str, actor: &str, depth: u32) -> Result<(), EngineError> {
        if self.conv.queue.as_deref() != Some(queue) {
            self.audit(
                actor,
                "routed",
                json!({ "queue": self.conv.queue }),
                json!({ "queue": queue }),
            );
            self.conv.queue = Some(queue.to_string());
            self.conv.queued_at = Some(self.now);
            if self.conv.status == Status::New {
                self.set_status(Status::Open, actor, depth);
            }
            // The owner keeps it only if they work that queue.
            if let Some(a) = self.conv.assignee.clone() {
                let members = self.eng.store.eligible_agents(queue).await?;
                if !members.iter().any(|m| m.id == a) {
                    self.unassign(actor, "moved to another queue");
                }
            }
            self.trace.push(json!({ "route": queue, "by": actor }));
        }
        self.sla_on_route();
        if self.conv.assignee.is_some() {
            return Ok(());
        }
        let policy = self.pack.queues.get(queue).map(|q| q.assignment);
        use switchyard_rules::config::Assignment as A;
        let Some(policy) = policy.filter(|p| *p != A::Manual) else {
            return Ok(());
        };
        let mut agents = self.eng.store.eligible_agents(queue).await?;
        // Agents given conversations earlier in this same event count as busier.
        for a in &mut agents {
            a.open += self.cs.assigned.iter().filter(|x| **x == a.id).count() as u32;
        }
        let now = time(self.now);
        let in_shift =
            |a: &AgentLoad| match a.shift.as_ref().and_then(|c| self.pack.calendars.get(c)) {
                Some(cal) => cal.is_open(now),
                // No shift, or a calendar the pack no longer has: always on.
                None => true,
            };
        agents
            .retain(|a| a.open < a.capacity && Some(&a.id) != self.not_to.as_ref() && in_shift(a));
        let pick = match policy {
            A::LeastLoaded => agents.iter().min_by(|a, b| {
                (a.open, a.last_assigned_at, &a.id).cmp(&(b.open, b.last_assigned_at, &b.id))
            }),
            // Who had it before is read only when there is a choice to make.
            A::Sticky if agents.len() > 1 => {
                let prev = self.eng.store.previous_assignee(self.conv.id).await?;
                agents
                    .iter()
                    .find(|a| Some(&a.id) == prev.as_ref())
                    .or_else(|| {
                        agents.iter().min_by(|a, b| {
                            (a.last_assigned_at, &a.id).cmp(&(b.last_assigned_at, &b.id))
                        })
                    })
            }
            _ => agents
                .iter()
                .min_by(|a, b| (a.last_assigned_at, &a.id).cmp(&(b.last_assigned_at, &b.id))),
        };
        match pick.map(|a| a.id.clone()) {
            Some(id) => self.assign(&id, actor, depth),
            None => self
                .trace
                .push(json!({ "queue": queue, "waiting": "no agent available" })),
        }
        Ok(())
    }

    fn assign(&mut self, agent: &str, actor: &str, depth: u32) {
        if self.conv.assignee.as_deref() == Some(agent) {
            return;
        }
        self.audit(
            actor,
            "assigned",
            json!({ "assignee": self.conv.assignee }),
            json!({ "assignee": agent, "queue": self.conv.queue }),
        );
        self.conv.assignee = Some(agent.to_string());
        self.cs.assigned.push(agent.to_string());
        if let Some(t) = self.ticket.as_mut() {
            if t.owner.is_none() {
                t.owner = Some(agent.to_string());
            }
        }
        self.trace.push(json!({ "assigned": agent }));
        self.caused(
            "conversation.assigned",
            json!({ "assignee": agent }),
            depth + 1,
        );
    }

    /// A list's rows from data: one per element of `rows_from` (at most WhatsApp's 10, ids
    /// unique), each rendered with the element as `item`; texts cut to WhatsApp's limits.
    fn rows_from(&mut self, rf: &RowsFrom, actor: &str) -> Vec<(String, String, Option<String>)> {
        self.refresh_vars();
        let mut scope = self.vars.scope();
        let items = match self.pack.sandbox.eval(&rf.from, &mut scope, self.clock) {
            Ok(v) if v.is_array() => v.into_array().unwrap_or_default(),
            Ok(v) if v.is_unit() => vec![],
            Ok(v) => {
                let e = format!("`rows_from` gave {}, not an array", v.type_name());
                self.audit(
                    actor,
                    "script_failed",
                    Value::Null,
                    json!({ "rows_from": e }),
                );
                vec![]
            }
            Err(e) => {
                self.audit(
                    actor,
                    "script_failed",
                    Value::Null,
                    json!({ "rows_from": e.to_string() }),
                );
                vec![]
            }
        };
        let total = items.len();
        let mut rows: Vec<(String, String, Option<String>)> = Vec::new();
        for item in items {
            if rows.len() == wa::LIST_ROWS {
                break;
            }
            let mut scope = self.vars.scope();
            scope.push_constant_dynamic("item", item);
            let mut render = |t: &switchyard_rules::template::Template, max: usize| {
                t.render(&self.pack.sandbox, &mut scope, self.clock)
                    .map(|s| cut(s.trim(), max))
            };
            let row = (|| {
                let id = render(&rf.id, wa::ROW_ID)?;
                let title = render(&rf.title, wa::ROW_TITLE)?;
                let description = match &rf.description {
                    Some(d) => Some(render(d, wa::ROW_DESCRIPTION)?).filter(|d| !d.is_empty()),
                    None => None,
                };
                Ok::<_, switchyard_rules::script::ScriptError>((id, title, description))
            })();
            match row {
                Ok((id, title, d)) if !id.is_empty() && !rows.iter().any(|r| r.0 == id) => {
                    let title = if title.is_empty() {
                        cut(&id, wa::ROW_TITLE)
                    } else {
                        title
                    };
                    rows.push((id, title, d));
                }
                Ok(_) => {}
                Err(e) => {
                    self.audit(
                        actor,
                        "script_failed",
                        Value::Null,
                        json!({ "row": e.to_string() }),
                    );
                }
            }
        }
        if total > rows.len() {
            self.trace
                .push(json!({ "list_rows": rows.len(), "of": total, "by": actor }));
        }
        rows
    }

    /// Renders and queues a message from the bot; honours the 24-hour window on WhatsApp.
    async fn send(&mut self, m: &MessageRt, actor: &str, depth: u32) -> Result<(), EngineError> {
        self.send_as(m, actor, "bot", depth).await
    }

    /// [`Run::send`] with the message's author (`bot`, or the agent who replied).
    async fn send_as(
        &mut self,
        m: &MessageRt,
        actor: &str,
        author: &str,
        depth: u32,
    ) -> Result<(), EngineError> {
        self.refresh_vars();
        let lang = self.contact.language.clone();
        let default_lang = self.pack.settings.default_language.clone();
        let mut out = Outbound {
            channel: self.conv.channel.clone(),
            to: self.contact.external_id.clone(),
            text: String::new(),
            buttons: vec![],
            list: None,
            template: None,
        };
        let kind;
        match m {
            MessageRt::Text(t) => {
                kind = "text";
                out.text = self.render(t, actor);
            }
            MessageRt::Template(name) => {
                kind = "template";
                let Some(tpl) = self.pack.templates.get(name) else {
                    return Ok(());
                };
                if let Some(v) = tpl.variant(lang.as_deref(), &default_lang) {
                    out.text = self.render(v, actor);
                }
                if let Some(wa) = &tpl.whatsapp {
                    let params = wa.body.iter().map(|p| self.render(p, actor)).collect();
                    out.template = Some(OutboundTemplate {
                        name: wa.name.clone(),
                        language: wa.language.clone(),
                        params,
                        buttons: wa.buttons.clone(),
                    });
                }
            }
            MessageRt::Buttons { body, buttons, .. } => {
                kind = "buttons";
                out.text = self.render(body, actor);
                out.buttons = buttons.clone();
            }
            MessageRt::List {
                body,
                button,
                sections,
                rows_from,
                ..
            } => {
                kind = "list";
                out.text = self.render(body, actor);
                let rows = match rows_from {
                    Some(rf) => self.rows_from(rf, actor),
                    None => sections
                        .iter()
                        .flat_map(|(_, r)| r.iter().cloned())
                        .collect(),
                };
                if rows.is_empty() {
                    let note = format!(
                        "The bot had nothing to list (no rows) for: \"{}\"; please take over",
                        out.text
                    );
                    self.trace
                        .push(json!({ "send": kind, "by": actor, "blocked": "no rows" }));
                    let q = self.conv.queue.clone();
                    return Box::pin(self.handoff(q, None, Some(note), actor, depth)).await;
                }
                out.list = Some(OutboundList {
                    button: button.clone(),
                    descriptions: if rows.iter().any(|r| r.2.is_some()) {
                        rows.iter().map(|r| r.2.clone()).collect()
                    } else {
                        vec![]
                    },
                    rows: rows.into_iter().map(|(id, title, _)| (id, title)).collect(),
                });
            }
        }
        // WhatsApp allows free-form messages only within 24 hours of the customer's last one.
        let window = !has_service_window(&self.conv.channel) || self.conv.window_open(self.now);
        if window {
            // Inside the window the text form goes out, with the template's quick replies as
            // reply buttons when they fit.
            if let Some(t) = out.template.take() {
                if t.buttons.len() <= 3 {
                    out.buttons = t.buttons.iter().map(|b| (b.clone(), b.clone())).collect();
                } else {
                    out.template = Some(t);
                }
            }
        } else if out.template.is_none() {
            let note = format!("Could not send outside WhatsApp's 24-hour window (only approved templates may be): \"{}\"", out.text);
            self.trace
                .push(json!({ "send": kind, "by": actor, "blocked": "24-hour window" }));
            let q = self.conv.queue.clone();
            return Box::pin(self.handoff(q, None, Some(note), actor, depth)).await;
        }
        let payload = json!({
            "buttons": out.buttons,
            "list": out.list,
            "template": out.template,
        });
        // The message row (author, time, status) is its own record: no audit row besides.
        self.trace.push(json!({ "send": kind, "by": actor }));
        if author != "bot" {
            self.sla_on_agent_reply(actor);
        }
        self.cs.messages.push(NewMessage {
            direction: Direction::Out,
            kind: kind.into(),
            body: out.text.clone(),
            payload,
            provider_id: None,
            author: author.into(),
            status: "pending".into(),
            outbound: Some(out),
        });
        Ok(())
    }
}

/// `s` in at most `max` characters (an ellipsis marks a cut).
fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn ticket_json(t: &Ticket) -> Value {
    json!({
        "id": t.id,
        "title": t.title,
        "category": t.category,
        "priority": t.priority.as_str(),
        "status": t.status.as_str(),
        "owner": t.owner,
        "queue": t.queue,
    })
}

#[cfg(test)]
mod tests {
    use super::cut;

    #[test]
    fn cut_keeps_short_texts_and_marks_a_cut_within_the_limit() {
        assert_eq!(cut("#10234 · packed", 24), "#10234 · packed");
        let long = cut("#1011 waiting for the courier to pick it up", 24);
        assert_eq!(long.chars().count(), 24);
        assert!(
            long.starts_with("#1011 waiting for the") && long.ends_with('…'),
            "{long}"
        );
        // Characters, not bytes: Urdu is cut on a character boundary.
        assert_eq!(cut("آپ کا آرڈر روانہ ہو گیا ہے", 5).chars().count(), 5);
    }
}
