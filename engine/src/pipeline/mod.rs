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
use switchyard_rules::config::InterruptThen;
use switchyard_rules::pack::{
    ActionRt, HandoffReason, LookupAction, Matcher, MessageRt, Next, Pack, RowsFrom, RuleOutcome,
    StepRt,
};
use switchyard_rules::script::{dynamic_to_json, Clock, Vars};
use switchyard_rules::{ChannelCaps, Channels};

use switchyard_rules::UNKNOWN;

use crate::domain::DomainEvent;
use crate::model::*;
use crate::ports::{Lookup, LookupError};
use crate::store::{Changeset, NewJob, NewMessage, Store, StoreError, TicketChange};
use crate::trace::{IntentTrace, Step, Trace};

mod act;
mod actions;
mod clarify;
mod events;
mod flows;
mod lookup;
mod routing;
mod run;
mod schedules;
mod send;
mod shifts;
mod sla;
pub use act::{approved_templates, ActError, Acted, Actor, AgentAction, TicketUpdate};

/// How deep events caused by actions may chain (the loop guard), and how many one event may
/// cause in all.
pub const MAX_EVENT_DEPTH: u32 = 6;
pub const MAX_CAUSED_EVENTS: usize = 64;
/// Most `goto`s one event may follow inside a flow.
const MAX_STEPS_PER_EVENT: u32 = 20;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("conversation {0} vanished")]
    Missing(i64),
    /// A task doing the work stopped before it finished (it panicked).
    #[error("{0}")]
    Stopped(String),
}

pub fn millis(t: DateTime<Utc>) -> Millis {
    t.timestamp_millis()
}

fn time(m: Millis) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(m).unwrap_or_default()
}

/// The engine: a pack, a store and the lookups, shared by every worker.
pub struct Engine {
    pub(crate) store: Arc<dyn Store>,
    /// The pack and the lookups built for it, swapped together (a reload replaces both).
    rules: ArcSwap<Rules>,
    /// One lock per conversation: inbox events and timers of a conversation never interleave.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Default queues by channel (one per WhatsApp number of a multi-brand shop), over the
    /// pack's `settings.default_queue`.
    default_queues: HashMap<String, String>,
    /// What each channel can carry (service window, list limits).
    channels: Channels,
    /// What committed changesets changed, for live inboxes.
    feed: tokio::sync::broadcast::Sender<crate::feed::FeedEvent>,
    pub metrics: crate::metrics::EngineMetrics,
}

/// A pack with the lookups built for it.
struct Rules {
    pack: Arc<Pack>,
    lookup: Arc<dyn Lookup>,
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
    pub trace: Arc<Trace>,
}

impl Engine {
    pub fn new(store: Arc<dyn Store>, pack: Arc<Pack>, lookup: Arc<dyn Lookup>) -> Engine {
        Engine {
            store,
            rules: ArcSwap::from_pointee(Rules { pack, lookup }),
            locks: Mutex::new(HashMap::new()),
            default_queues: HashMap::new(),
            channels: Channels::standard(),
            feed: tokio::sync::broadcast::channel(1024).0,
            metrics: Default::default(),
        }
    }

    /// Serves these channels (the standard ones by default).
    pub fn with_channels(mut self, channels: Channels) -> Engine {
        self.channels = channels;
        self
    }

    /// What a conversation's channel can carry.
    pub fn caps(&self, channel: &str) -> ChannelCaps {
        self.channels.of(channel)
    }

    /// Whether free-form messages may go to this conversation now.
    pub fn window_open(&self, conv: &Conversation, now: Millis) -> bool {
        conv.window_open(&self.caps(&conv.channel), now)
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
        let errors = cs.events.iter().filter(|e| e.is_rule_error()).count();
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
        self.rules.load().pack.clone()
    }

    /// The lookups (the pack's store and HTTP connectors) serving now.
    pub(crate) fn lookup(&self) -> Arc<dyn Lookup> {
        self.rules.load().lookup.clone()
    }

    /// Swaps in a new, already validated pack, keeping the lookups; events in flight finish on
    /// the old one.
    pub fn replace_pack(&self, pack: Arc<Pack>) {
        self.rules.rcu(|r| Rules {
            pack: pack.clone(),
            lookup: r.lookup.clone(),
        });
    }

    /// Swaps in a new pack and the lookups built for it, in one step: no event sees the new
    /// pack with the old connectors.
    pub fn replace_pack_and_lookup(&self, pack: Arc<Pack>, lookup: Arc<dyn Lookup>) {
        self.rules.store(Arc::new(Rules { pack, lookup }));
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

    /// [`Engine::process`], showing the changeset to `see` before it is committed (the
    /// replay's observations).
    pub async fn process_with<T>(
        &self,
        row: &InboxRow,
        now: Millis,
        see: impl FnOnce(&Changeset, &Processed) -> T,
    ) -> Result<T, EngineError> {
        let d = self.decide(row, now).await?;
        let t = see(&d.changeset, &d.processed);
        if d.skipped.is_none() {
            self.commit(d.changeset).await?;
        }
        drop(d.guard);
        if let Some(q) = d.freed {
            self.assign_waiting(&q, now).await?;
        }
        Ok(t)
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
            run.emit("system", DomainEvent::ConversationCreated, 0);
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
        run.acknowledge(matches!(row.event, Inbound::Message { .. }))
            .await?;
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
        run.emit(
            "system",
            DomainEvent::SendRefused {
                reason: reason.to_string(),
            },
            0,
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
        run.acknowledge(false).await?;
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
        .and_then(|(_, t)| t.intent().map(String::from))
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
/// What a waiting flow step made of a message (see [`Run::answer_of`]).
#[derive(Debug, Clone)]
enum Answer {
    /// The `on` entry at this index, how it matched (for the trace), and whether the
    /// customer chose it: tapped it, typed its title, or said what its title says ("haan"
    /// to "Yes, cancel it") — not a guess from the classifier or a bare "no" read as
    /// "Cancel". Only a chosen answer lets an irreversible action run.
    On(usize, String, bool),
    /// The value its `capture` takes.
    Capture(Value),
}

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
    trace: Vec<Step>,
    intent_trace: Option<IntentTrace>,
    caused: VecDeque<(String, Value, u32)>,
    caused_total: usize,
    contact_changed: bool,
    steps_followed: u32,
    /// Lookup results and event data for a flow that starts later in this event.
    pending_bound: Map<String, Value>,
    /// Templates that failed to render since the current message began (a message with a
    /// hole that did not render is not sent).
    holes: Vec<String>,
    /// Why the last message was not sent, when a hole did not render.
    blocked: Option<String>,
    /// While reassigning: the agent the conversation is taken from.
    not_to: Option<String>,
    /// The bot queued a message for the customer in this run.
    said: bool,
    /// The conversation was handed to a person (a hand-off, or a route to another queue).
    handed: bool,
    /// Why, when the bot knows: the acknowledgement [`Run::acknowledge`] sends.
    handoff_reason: Option<HandoffReason>,
    /// The customer's message in this run answered a waiting step with one of its choices
    /// (a button tapped, its title typed, or a plain yes/no for it): what an irreversible
    /// store action needs ([`switchyard_rules::pack::LookupAction::irreversible`]).
    chose: bool,
    /// The state the scope's `conversation`, `contact` and `ticket` were last built from:
    /// [`Run::refresh_vars`] rebuilds only what changed since.
    vars_of: (
        Option<Conversation>,
        Option<Contact>,
        Option<Option<Ticket>>,
    ),
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
