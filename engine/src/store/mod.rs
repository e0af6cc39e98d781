//! The `Store` port: everything the engine keeps. Two durable implementations live beside it:
//! SQLite, embedded ([`sqlite::SqliteStore`]), and PostgreSQL ([`postgres::PgStore`]); [`open`]
//! picks one by the URL's scheme. `rows.rs` and `queries.rs` are written once for both. A
//! third, [`memory::MemoryStore`], keeps the same records in the process's memory for what is
//! thrown away at the end (replays, pack tests); nothing that acknowledges a customer uses it.
//!
//! The pipeline reads a conversation's context, decides in memory, and hands the store one
//! [`Changeset`]: the new state, its audit records, the outbound messages and the trace, which
//! the store writes in **one transaction** together with marking the event processed.

use async_trait::async_trait;
use serde_json::Value;

use crate::model::*;

pub mod memory;
pub mod postgres;
pub(crate) mod queries;
pub(crate) mod reads;
pub(crate) mod rows;
pub mod sqlite;

/// What went wrong in a store. It names no database library: each backend turns its own
/// errors into these (`store/rows.rs` for sqlx, `store/sqlite/writer.rs` for rusqlite).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A statement or the connection failed (the backend's own message).
    #[error("database: {0}")]
    Db(String),
    #[error("migrations: {0}")]
    Migrate(String),
    #[error("stored data is not valid: {0}")]
    Corrupt(String),
    #[error("the store is shutting down")]
    Closed,
    /// The database cannot be reached or refuses the connection.
    #[error("cannot connect to the database: {0}")]
    Unreachable(String),
    /// Another process owns the database (a SQLite file is served by one process).
    #[error("{0}")]
    InUse(String),
}

/// A database URL as it may be printed or logged: a password in it (`user:password@`, or a
/// `password=` parameter) becomes `***`.
pub fn redact(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest = scheme_end + 3;
        let auth_end = out[rest..].find(['/', '?']).map_or(out.len(), |i| rest + i);
        if let Some(at) = out[rest..auth_end].rfind('@') {
            if let Some(colon) = out[rest..rest + at].find(':') {
                out.replace_range(rest + colon + 1..rest + at, "***");
            }
        }
    }
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect();
        out = format!("{head}{}", query.join("&"));
    }
    out
}

/// Claims the database for this serving process: a SQLite file's exclusive lock (held until
/// the value is dropped), or nothing for PostgreSQL, which several instances share.
pub fn claim(url: &str) -> Result<Option<sqlite::Claim>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(None)
    } else {
        sqlite::claim(url)
    }
}

/// Opens the store a URL names: `postgres://…` (or `postgresql://…`) is PostgreSQL, which
/// several instances may share; anything else SQLite (`sqlite://file.db`, `sqlite::memory:`),
/// owned by one process. Migrations run on open.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>> {
    open_with(url, Default::default()).await
}

/// [`open`] with PostgreSQL's pool settings.
pub async fn open_with(
    url: &str,
    pg: crate::store::postgres::PgSettings,
) -> Result<std::sync::Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let pg = crate::store::postgres::PgStore::open(url, pg).await?;
        Ok(std::sync::Arc::new(pg))
    } else {
        Ok(std::sync::Arc::new(
            crate::store::sqlite::SqliteStore::open(url).await?,
        ))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What [`Store::hold`] returns: the hold lasts until it is dropped.
pub type Held = Box<dyn std::any::Any + Send>;

/// The result of committing one event to the inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    /// Stored under this inbox id.
    New(i64),
    /// The same `(channel, provider_id)` was stored before: nothing to do.
    Duplicate,
}

/// An outbound or inbound message to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    pub direction: Direction,
    pub kind: String,
    pub body: String,
    pub payload: Value,
    pub provider_id: Option<String>,
    pub author: String,
    pub status: String,
    /// For outbound messages: the outbox row to send.
    pub outbound: Option<Outbound>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TicketChange {
    pub ticket: Ticket,
    pub created: bool,
    pub actor: String,
    /// What changed, for the ticket's history.
    pub change: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub kind: JobKind,
    pub name: String,
    pub due_at: Millis,
}

/// Everything one event changed, written atomically.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changeset {
    pub at: Millis,
    pub conversation_id: i64,
    /// The inbox row this event came from: marked processed in the same transaction.
    pub inbox_id: Option<i64>,
    /// The job that fired this event: marked done in the same transaction.
    pub job_id: Option<i64>,
    pub contact: Option<Contact>,
    /// The conversation after the event.
    pub conversation: Option<Conversation>,
    pub messages: Vec<NewMessage>,
    /// `(author, text)`.
    pub notes: Vec<(String, String)>,
    pub tickets: Vec<TicketChange>,
    pub audit: Vec<AuditRecord>,
    /// What changed, as the run emitted it (for the live feed and the metrics; not stored:
    /// the audit records above are its durable form).
    pub events: Vec<crate::domain::DomainEvent>,
    pub new_jobs: Vec<NewJob>,
    /// `(kind, name)` of this conversation's pending jobs to cancel.
    pub cancel_jobs: Vec<(JobKind, String)>,
    /// Outbound webhooks `(connector, body)`, delivered from the outbox.
    pub webhooks: Vec<(String, Value)>,
    /// Agents given a conversation (for round robin).
    pub assigned: Vec<String>,
    /// `(pack hash, trace)`.
    pub trace: Option<(String, std::sync::Arc<crate::trace::Trace>)>,
    /// A schedule that fired: `(name, next firing)`; `None` forgets a schedule the pack lost.
    pub schedule: Option<(String, Option<Millis>)>,
}

/// A conversation with what the pipeline needs to decide about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    pub contact: Contact,
    pub conversation: Conversation,
    /// Whether the conversation was created by this call.
    pub created: bool,
    /// Its open ticket, if any.
    pub ticket: Option<Ticket>,
}

/// Where an inbox event stands for an instance that holds its conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxTurn {
    /// The oldest unprocessed event of its conversation: process it.
    Next,
    /// Processed already (by another instance).
    Done,
    /// An earlier event of the conversation is unprocessed (this instance has not read it,
    /// or another instance has it): not yet.
    NotYet,
}

/// What recording a delivery status did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusRecorded {
    Updated,
    /// The message already has this status (a redelivery).
    Repeated,
    /// Older than what the message already has (a late `delivered` after `read`).
    Unchanged,
    /// No outbound message has that id; the status was audited.
    UnknownMessage,
}

/// A stored API token (its hash only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: i64,
    /// `agent`, `supervisor` or `admin`.
    pub role: String,
    /// The agent it acts as, if any.
    pub agent: Option<String>,
    pub revoked: bool,
    /// `api` (a bearer token) or `session` (a browser's log-in, in a cookie).
    pub kind: String,
    /// When it stops being accepted; `None` for never (API tokens).
    pub expires_at: Option<Millis>,
}

/// A token to store: only its SHA-256 is kept.
#[derive(Debug, Clone, Copy)]
pub struct NewToken<'a> {
    pub hash: &'a str,
    pub role: &'a str,
    pub agent: Option<&'a str>,
    /// `api` or `session`.
    pub kind: &'a str,
    pub expires_at: Option<Millis>,
}

/// Filters of the conversation list; `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConversationQuery {
    pub status: Option<Status>,
    pub queue: Option<String>,
    pub assignee: Option<String>,
    /// Only conversations in a queue that nobody owns.
    pub unassigned: bool,
    /// Only this contact's conversations.
    pub contact: Option<i64>,
    pub tag: Option<String>,
    pub priority: Option<Priority>,
    /// Text searched in the messages, the contact's name and phone.
    pub q: Option<String>,
    /// An agent's view: conversations they own or in these queues.
    pub visible_to: Option<(String, Vec<String>)>,
    /// Resume after this `(waiting_since, id)`.
    pub after: Option<(Millis, i64)>,
    pub limit: i64,
}

/// A line of the conversation list.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConversationLine {
    #[serde(flatten)]
    pub conversation: Conversation,
    pub contact_name: Option<String>,
    pub contact_phone: Option<String>,
    /// Since when it waits: it entered its queue, else it was created. The list is longest
    /// waiting first.
    pub waiting_since: Millis,
    /// A preview of the newest message: its first 280 characters.
    pub last_message: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TicketQuery {
    pub status: Option<TicketStatus>,
    pub queue: Option<String>,
    pub owner: Option<String>,
    /// An agent's view: tickets they own or whose conversation they own.
    pub visible_to: Option<String>,
    pub category: Option<String>,
    pub priority: Option<Priority>,
    /// Ids below this (the list is newest first).
    pub before: Option<i64>,
    pub limit: i64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditQuery {
    /// `conversation:12`, or a prefix ending in `:` (`ticket:`).
    pub entity: Option<String>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub from: Option<Millis>,
    pub to: Option<Millis>,
    /// Ids below this (the list is newest first).
    pub before: Option<i64>,
    pub limit: i64,
}

/// A queue's state for supervisors.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueueStats {
    pub queue: String,
    /// Conversations in the queue with no owner, not resolved.
    pub waiting: i64,
    /// When the longest-waiting of them entered the queue.
    pub oldest_waiting_since: Option<Millis>,
    /// Owned and not resolved.
    pub assigned: i64,
    pub agents_online: i64,
    /// Conversations in the queue, not resolved, with an SLA breach on record (audit action
    /// `sla_breached`).
    pub breached: i64,
}

#[async_trait]
pub trait Store: Send + Sync {
    /// Commits events to the inbox (deduplicated); returns only after the commit.
    async fn ingest(&self, events: Vec<Inbound>, now: Millis) -> Result<Vec<Ingested>>;
    /// Unprocessed inbox rows with `id > after`, oldest first.
    async fn pending_inbox(&self, after: i64, limit: i64) -> Result<Vec<InboxRow>>;
    /// Inbound events received at or after `since`, after inbox id `after`, in inbox order:
    /// `(id, received_at, event)` (what `switchyard export` writes).
    async fn inbox_since(
        &self,
        since: Millis,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Millis, Inbound)>>;
    /// Marks an inbox row processed without changes (e.g. an event that cannot be processed).
    async fn skip_inbox(&self, inbox_id: i64, now: Millis, why: &str) -> Result<()>;

    /// The contact and its conversation on this channel, created when new (with audit).
    /// Returns whether the conversation was created.
    async fn open_conversation(
        &self,
        channel: &str,
        external_id: &str,
        name: Option<&str>,
        phone: Option<&str>,
        now: Millis,
    ) -> Result<(Contact, Conversation, bool)>;
    /// [`Store::open_conversation`] plus the open ticket, in as few round trips as the
    /// backend can.
    async fn load_context(
        &self,
        channel: &str,
        external_id: &str,
        name: Option<&str>,
        phone: Option<&str>,
        now: Millis,
    ) -> Result<Context> {
        let (contact, conversation, created) = self
            .open_conversation(channel, external_id, name, phone, now)
            .await?;
        let ticket = self.open_ticket(conversation.id).await?;
        Ok(Context {
            contact,
            conversation,
            created,
            ticket,
        })
    }
    /// The context of an existing conversation.
    async fn context_of(&self, conversation_id: i64) -> Result<Option<Context>> {
        let Some(conversation) = self.conversation(conversation_id).await? else {
            return Ok(None);
        };
        let Some(contact) = self.contact(conversation.contact_id).await? else {
            return Ok(None);
        };
        let ticket = self.open_ticket(conversation_id).await?;
        Ok(Some(Context {
            contact,
            conversation,
            created: false,
            ticket,
        }))
    }
    async fn contact(&self, id: i64) -> Result<Option<Contact>>;
    async fn conversation(&self, id: i64) -> Result<Option<Conversation>>;
    async fn open_ticket(&self, conversation_id: i64) -> Result<Option<Ticket>>;
    /// A new id from a named counter (ticket numbers), allocated before the decision commits.
    async fn allocate_id(&self, counter: &str) -> Result<i64>;
    /// Online members of `queue` under capacity.
    async fn eligible_agents(&self, queue: &str) -> Result<Vec<AgentLoad>>;
    /// Conversations waiting in `queue` for an agent, longest-waiting first.
    async fn waiting_conversations(&self, queue: &str, limit: i64) -> Result<Vec<i64>>;
    /// The agent who last had a conversation with this contact (for `sticky`).
    async fn previous_assignee(&self, conversation_id: i64) -> Result<Option<String>>;

    /// Writes a changeset in one transaction.
    async fn commit(&self, cs: Changeset) -> Result<()>;

    /// When the earliest pending job is due.
    async fn next_job_at(&self) -> Result<Option<Millis>>;
    /// Jobs due at `now`, not done.
    async fn due_jobs(&self, now: Millis, limit: i64) -> Result<Vec<Job>>;

    /// Due outbox rows that are first in their lane (no earlier row of the same conversation
    /// and lane is `pending`), oldest first, leaving out the destinations in `full` and the
    /// lanes in `busy` (`(conversation_id, lane)`): what the dispatcher can start now.
    async fn due_outbox(
        &self,
        now: Millis,
        full: &[String],
        busy: &[(i64, String)],
        limit: i64,
    ) -> Result<Vec<DueRow>>;
    /// Claims one row for sending (`pending` → `sending`, committed before the send) if it is
    /// still pending, due and first in its lane; `None` if another sender took it or an
    /// earlier row of its lane became pending again (a retry keeps its place).
    async fn claim_outbox(&self, id: i64, now: Millis) -> Result<Option<OutboxRow>>;
    async fn outbox_sent(&self, id: i64, provider_id: &str, now: Millis) -> Result<()>;
    /// A failed attempt: retried at `retry_at`, or failed for good when `None`.
    async fn outbox_failed(
        &self,
        id: i64,
        error: &str,
        retry_at: Option<Millis>,
        now: Millis,
    ) -> Result<()>;
    /// Rows left `sending` since before `claimed_before` (by a crash, this process's or
    /// another instance's) may or may not have gone out. They are never sent again (at most
    /// once); they become `unknown`, visible to agents. Returns how many.
    async fn recover_outbox(&self, now: Millis, claimed_before: Millis) -> Result<u64>;
    /// A send whose outcome is unknown (it may have arrived): the row and its message become
    /// `unknown` with the reason, and are never sent again automatically.
    async fn outbox_unknown(&self, id: i64, error: &str, now: Millis) -> Result<()>;

    /// Holds `key` (a conversation's `channel:external_id`, or `schedule:NAME`) against other
    /// instances sharing the store until the returned value is dropped; `None` when the store
    /// belongs to one process (SQLite), where the engine's own locks suffice.
    /// Whether several instances may share this store (PostgreSQL).
    fn shared(&self) -> bool {
        false
    }
    async fn hold(&self, _key: &str) -> Result<Option<Held>> {
        Ok(None)
    }
    /// [`Store::hold`] if no other instance holds `key` now; `Ok(None)` if one does (or
    /// the store belongs to one process — see [`Store::shared`]).
    async fn try_hold(&self, _key: &str) -> Result<Option<Held>> {
        Ok(None)
    }
    /// Where an inbox event stands, read under [`Store::hold`]: another instance may have
    /// processed it, or not yet an earlier event of the same conversation.
    async fn inbox_turn(&self, _id: i64, _key: &str) -> Result<InboxTurn> {
        Ok(InboxTurn::Next)
    }
    /// Whether a job is still pending, read under [`Store::hold`] (another instance may have
    /// fired it).
    async fn job_pending(&self, _id: i64) -> Result<bool> {
        Ok(true)
    }
    /// Wakes `wake` whenever any instance commits new work (PostgreSQL: LISTEN/NOTIFY); the
    /// workers poll as well, so a store without notifications needs nothing here.
    fn listen(&self, _wake: std::sync::Arc<tokio::sync::Notify>) {}

    /// A delivery status from the channel for the outbound message with this provider id.
    /// Statuses only move forward (`sent` → `delivered` → `read`; `failed` unless already
    /// read): a late or repeated one changes nothing. A status for a message we do not know is
    /// recorded in the audit log.
    async fn record_status(
        &self,
        channel: &str,
        provider_id: &str,
        status: &str,
        error: Option<&str>,
        now: Millis,
    ) -> Result<StatusRecorded>;
    /// Creates or updates an agent, audited as `actor`.
    async fn upsert_agent(&self, agent: &Agent, actor: &str, now: Millis) -> Result<()>;
    async fn agent(&self, id: &str) -> Result<Option<Agent>>;
    async fn agents(&self) -> Result<Vec<Agent>>;
    /// Sets (or with `None` clears) an agent's password hash (a PHC string), audited as
    /// `actor` without the hash; `false` when there is no such agent.
    async fn set_password(
        &self,
        agent: &str,
        hash: Option<&str>,
        actor: &str,
        now: Millis,
    ) -> Result<bool>;
    /// An agent's password hash, if one is set.
    async fn password_hash(&self, agent: &str) -> Result<Option<String>>;

    /// Inbound media messages whose bytes are not kept: those after message `after` with no
    /// record yet, and those whose retry is due at `now`; oldest first.
    async fn media_to_fetch(&self, after: i64, now: Millis, limit: i64) -> Result<Vec<MediaTask>>;
    /// Records a fetch: its bytes, a retry, or a failure for good (replacing what was there).
    async fn save_media(&self, m: &MediaRecord) -> Result<()>;
    /// A message's media record, bytes included.
    async fn media(&self, message_id: i64) -> Result<Option<MediaRecord>>;
    /// The conversations `agent` owns that are not resolved.
    async fn owned_conversations(&self, agent: &str) -> Result<Vec<i64>>;
    /// Waiting and assigned counts of these queues.
    async fn queue_stats(&self, queues: &[String]) -> Result<Vec<QueueStats>>;
    async fn list_conversations(&self, q: &ConversationQuery) -> Result<Vec<ConversationLine>>;
    async fn ticket(&self, id: i64) -> Result<Option<Ticket>>;
    async fn list_tickets(&self, q: &TicketQuery) -> Result<Vec<Ticket>>;
    /// Audit records, newest first, with their ids.
    async fn list_audit(&self, q: &AuditQuery) -> Result<Vec<(i64, AuditRecord)>>;
    /// Records the pack's schedules that have no next firing yet: `(name, next_at)`.
    async fn init_schedules(&self, schedules: &[(String, Millis)]) -> Result<()>;
    /// Schedules due at `now`: `(name, next_at)`, earliest first.
    async fn due_schedules(&self, now: Millis) -> Result<Vec<(String, Millis)>>;
    /// Figures for schedules' templates: open and waiting conversations, per queue, per tag.
    async fn stats(&self) -> Result<Value>;
    /// What the KPIs of conversations created in `[from, to)` are computed from.
    async fn kpi_facts(
        &self,
        from: Millis,
        to: Millis,
        queue: Option<&str>,
    ) -> Result<crate::reports::KpiFacts>;
    /// Unprocessed inbox events and outbox rows by status (for `/metrics`).
    async fn backlog(&self) -> Result<(i64, Vec<(String, i64)>)>;

    /// Stores a token (an API token or a browser session) by its hash, audited as `actor`;
    /// returns its id.
    async fn create_token(&self, t: &NewToken<'_>, actor: &str, now: Millis) -> Result<i64>;
    /// The token with this hash, revoked or not.
    async fn token(&self, hash: &str) -> Result<Option<TokenRecord>>;
    /// Revokes a token, audited as `actor`; `false` when there is no such live token.
    async fn revoke_token(&self, id: i64, actor: &str, now: Millis) -> Result<bool>;

    async fn messages(&self, conversation_id: i64) -> Result<Vec<Message>>;
    async fn notes(&self, conversation_id: i64) -> Result<Vec<Note>>;
    async fn tickets(&self, conversation_id: i64) -> Result<Vec<Ticket>>;
    async fn ticket_history(&self, ticket_id: i64) -> Result<Vec<Value>>;
    async fn audit(&self, entity: &str) -> Result<Vec<AuditRecord>>;
    /// Decision traces of a conversation, oldest first: `(pack hash, trace)`.
    async fn traces(&self, conversation_id: i64) -> Result<Vec<(String, Value)>>;
    /// Every outbox payload ever written (for the notes-never-leave proof and reports).
    async fn outbox_payloads(&self) -> Result<Vec<(String, Value)>>;
    async fn conversation_ids(&self) -> Result<Vec<i64>>;

    /// Deletes what only the machinery needed, older than `before`: processed inbox events,
    /// decision traces, done jobs, and outbox rows that are finished (sent, failed, unknown).
    /// Conversations, messages, notes, tickets and the audit stay. In batches, so the store
    /// keeps serving meanwhile. Returns how many rows went, per table.
    async fn prune(&self, before: Millis) -> Result<Vec<(String, u64)>>;
}

/// What [`Store::prune`] deletes: `(table, the condition of a row older than the cutoff)`,
/// `{}` standing for the cutoff's placeholder (`?1` on SQLite, `$1` on PostgreSQL).
pub(crate) const PRUNE: &[(&str, &str)] = &[
    ("inbox", "processed_at IS NOT NULL AND processed_at < {}"),
    ("traces", "at < {}"),
    ("jobs", "done_at IS NOT NULL AND done_at < {}"),
    (
        "outbox",
        "status IN ('sent', 'failed', 'unknown') AND updated_at < {}",
    ),
];

/// Rows deleted per transaction by [`Store::prune`].
pub(crate) const PRUNE_BATCH: i64 = 5_000;

#[cfg(test)]
mod tests {
    #[test]
    fn a_database_url_is_printed_without_its_password() {
        use super::redact;
        assert_eq!(
            redact("postgres://app:s3cr%40t@db.internal:5432/shop?sslmode=require"),
            "postgres://app:***@db.internal:5432/shop?sslmode=require"
        );
        assert_eq!(
            redact("postgresql://db/shop?user=app&password=hunter2"),
            "postgresql://db/shop?user=app&password=***"
        );
        assert_eq!(redact("postgres://app@db/shop"), "postgres://app@db/shop");
        assert_eq!(redact("sqlite://switchyard.db"), "sqlite://switchyard.db");
        assert_eq!(redact("sqlite::memory:"), "sqlite::memory:");
    }
}
