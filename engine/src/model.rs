//! The domain model (DESIGN.md §3): what the store keeps and the pipeline changes.
//! Times are milliseconds since the Unix epoch (UTC), so both SQL backends store integers.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
pub use switchyard_rules::config::{Priority, Status};

pub type Millis = i64;

/// The current time in [`Millis`].
pub fn now_millis() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

/// An RFC 3339 time in [`Millis`].
pub fn parse_rfc3339(s: &str) -> Option<Millis> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Contact {
    pub id: i64,
    pub channel: String,
    /// The channel's id for the customer (WhatsApp `wa_id`).
    pub external_id: String,
    pub name: Option<String>,
    /// E.164.
    pub phone: Option<String>,
    /// The language the customer writes in (`en`, `ur`, `roman_ur`, …), when known: picks
    /// template variants.
    pub language: Option<String>,
    /// Who set `language` explicitly (`rule`, `agent:ID`); `None` when it was detected from
    /// the customer's messages, so the next message's language replaces it.
    #[serde(default)]
    pub language_set_by: Option<String>,
    pub attributes: Map<String, Value>,
}

/// A question the bot asked outside any flow and waits to hear answered: which of two
/// intents an unsure message meant (`settings.clarify`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Asking {
    /// The message the question is about: run again with the intent the customer picks.
    pub text: String,
    /// The intents offered, in the buttons' order.
    pub intents: Vec<String>,
}

/// A running flow: where the customer is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FlowState {
    pub flow: String,
    pub step: String,
    /// Unrecognised replies so far in this step.
    pub retries: u32,
    /// The order (or other lookup results) the flow works on, kept between messages.
    #[serde(default)]
    pub bound: Map<String, Value>,
    /// The steps of this flow that asked the customer before the current one, latest last:
    /// a tap on one of their buttons is still understood (the customer changed their mind).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub asked: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Conversation {
    pub id: i64,
    pub contact_id: i64,
    pub channel: String,
    /// `new`, `open`, `waiting`, `escalated` or `resolved`.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub status: Status,
    pub queue: Option<String>,
    pub assignee: Option<String>,
    /// `low`, `normal`, `high` or `urgent`.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub priority: Priority,
    pub tags: Vec<String>,
    pub attributes: Map<String, Value>,
    pub flow: Option<FlowState>,
    /// What the bot asked outside a flow and waits to hear answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asking: Option<Asking>,
    pub last_customer_message_at: Option<Millis>,
    /// When it entered its current queue (waiting time for agents).
    pub queued_at: Option<Millis>,
    /// The SLA clocks running on it (its queue's policy).
    #[serde(default)]
    pub sla: SlaState,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// The SLA clocks of a conversation (its queue's policy) and whether a person has answered
/// in the current cycle (a resolution ends the cycle).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SlaState {
    pub clocks: Vec<SlaClock>,
    /// A person replied since the conversation last entered a queue.
    pub responded: bool,
}

impl SlaState {
    pub fn is_empty(&self) -> bool {
        self.clocks.is_empty() && !self.responded
    }
}

/// One SLA clock: what it measures, how much of its target has run, when it breaches. A
/// paused clock (the conversation waits on the customer) has no due time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SlaClock {
    /// `first_response`, `next_response` or `resolution`.
    pub kind: String,
    /// The target, in (business) milliseconds.
    pub target_ms: i64,
    /// Time that counted before the current running stretch (business time with a calendar).
    pub elapsed_ms: i64,
    /// Since when it runs; `None` while paused.
    pub running_since: Option<Millis>,
    /// When it breaches; `None` while paused.
    pub due_at: Option<Millis>,
    /// When `sla.warning` fires, if the policy warns and it has not warned yet.
    pub warn_at: Option<Millis>,
    pub warned: bool,
    /// Breaches so far (the clock restarts after each, so ladders can count).
    pub breaches: u32,
}

impl Conversation {
    /// A new conversation of a contact on a channel, as a store creates it: `new`, normal
    /// priority, in no queue, nothing else set.
    pub fn new(id: i64, contact_id: i64, channel: &str, now: Millis) -> Conversation {
        Conversation {
            id,
            contact_id,
            channel: channel.to_string(),
            status: Status::New,
            queue: None,
            assignee: None,
            priority: Priority::Normal,
            tags: vec![],
            attributes: Default::default(),
            flow: None,
            asking: None,
            last_customer_message_at: None,
            queued_at: None,
            sla: Default::default(),
            created_at: now,
            updated_at: now,
        }
    }

    /// An open WhatsApp conversation with nothing else set, for unit tests.
    #[cfg(test)]
    pub(crate) fn for_tests(id: i64, queue: Option<&str>, assignee: Option<&str>) -> Conversation {
        Conversation {
            status: Status::Open,
            queue: queue.map(String::from),
            assignee: assignee.map(String::from),
            ..Conversation::new(id, 1, "whatsapp", 0)
        }
    }

    /// Whether the channel's service window is open now (see
    /// [`switchyard_rules::ChannelCaps::window_open`]).
    pub fn window_open(&self, caps: &switchyard_rules::ChannelCaps, now: Millis) -> bool {
        caps.window_open(self.last_customer_message_at, now)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Direction {
    In,
    Out,
}

/// A message as stored: both directions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Message {
    pub id: i64,
    pub conversation_id: i64,
    pub direction: Direction,
    /// `text`, `button`, `list`, `template`, `buttons`, `media`, `unsupported`, …
    pub kind: String,
    /// What a person reads: the text, the tapped title, the rendered template.
    pub body: String,
    /// The rest: tapped id, buttons sent, template name and parameters, media ids.
    pub payload: Value,
    pub provider_id: Option<String>,
    /// `customer`, `bot`, or an agent id.
    pub author: String,
    /// `received` for inbound; `pending`, `sent`, `delivered`, `read`, `failed`, `unknown` for outbound.
    pub status: String,
    pub error: Option<String>,
    pub created_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Note {
    pub id: i64,
    pub conversation_id: i64,
    pub author: String,
    pub text: String,
    pub created_at: Millis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum TicketStatus {
    Open,
    Pending,
    Resolved,
    Closed,
}

switchyard_rules::names!(TicketStatus {
    Open = "open",
    Pending = "pending",
    Resolved = "resolved",
    Closed = "closed",
});

impl TicketStatus {
    pub fn is_open(self) -> bool {
        matches!(self, TicketStatus::Open | TicketStatus::Pending)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Ticket {
    pub id: i64,
    pub conversation_id: i64,
    pub title: String,
    pub category: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub priority: Priority,
    pub status: TicketStatus,
    pub owner: Option<String>,
    pub queue: Option<String>,
    pub due_at: Option<Millis>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Agent {
    pub id: String,
    pub name: String,
    /// `agent`, `supervisor` or `admin`.
    pub role: String,
    pub queues: Vec<String>,
    /// Most open conversations at once.
    pub capacity: u32,
    /// `online`, `away` or `offline`.
    pub availability: String,
    /// The pack calendar of the agent's working hours; `None` for always on shift.
    #[serde(default)]
    pub shift: Option<String>,
}

/// An agent who could take a conversation, with what assignment policies look at.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentLoad {
    pub id: String,
    pub open: u32,
    pub capacity: u32,
    pub last_assigned_at: Option<Millis>,
    /// Their shift's calendar, if any.
    pub shift: Option<String>,
}

/// Append-only: who changed what, from what to what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditRecord {
    pub at: Millis,
    /// `customer`, `rule:<name>`, `flow:<name>`, an agent id, or `system`.
    pub actor: String,
    /// `conversation:12`, `ticket:4`, `agent:ayesha`, …
    pub entity: String,
    pub action: String,
    pub before: Value,
    pub after: Value,
}

/// What a durable timer is for (the `kind` column of `jobs`; serialized as that name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum JobKind {
    /// A flow step's `timeout`; the job's name is `flow/step`.
    FlowTimeout,
    /// A `timer` action; the name is the timer's.
    Timer,
    /// An SLA clock's due time; the name is the clock (`first_response` …).
    Sla,
    /// An SLA clock's `warn_at`.
    SlaWarning,
    /// The end of a snooze.
    Snooze,
    /// A kind this version does not know (written by a newer one): fired as done, traced.
    Other(String),
}

impl From<String> for JobKind {
    fn from(s: String) -> JobKind {
        JobKind::parse(&s)
    }
}

impl From<JobKind> for String {
    fn from(k: JobKind) -> String {
        k.as_str().to_string()
    }
}

impl JobKind {
    pub fn as_str(&self) -> &str {
        match self {
            JobKind::FlowTimeout => "flow_timeout",
            JobKind::Timer => "timer",
            JobKind::Sla => "sla",
            JobKind::SlaWarning => "sla_warning",
            JobKind::Snooze => "snooze",
            JobKind::Other(s) => s,
        }
    }

    pub fn parse(s: &str) -> JobKind {
        match s {
            "flow_timeout" => JobKind::FlowTimeout,
            "timer" => JobKind::Timer,
            "sla" => JobKind::Sla,
            "sla_warning" => JobKind::SlaWarning,
            "snooze" => JobKind::Snooze,
            other => JobKind::Other(other.to_string()),
        }
    }
}

/// A due timer: flow step timeout, `timer` action, snooze.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: i64,
    pub conversation_id: i64,
    pub kind: JobKind,
    /// For flow timeouts `flow/step`; for timers their name.
    pub name: String,
    pub due_at: Millis,
}

/// What arrives from a channel or a store, before it has a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Inbound {
    /// A customer message.
    Message {
        channel: String,
        /// The customer's id on the channel.
        from: String,
        name: Option<String>,
        phone: Option<String>,
        provider_id: String,
        /// `text`, `button`, `list`, `media`, `location`, `unsupported`, …
        kind: String,
        text: String,
        /// The tapped button or list row id.
        choice: Option<String>,
        #[serde(default)]
        payload: Value,
    },
    /// An event from a store connector (`order.created`, …) about a customer.
    Order {
        channel: String,
        /// The customer's id on the channel the conversation happens on.
        to: String,
        name: Option<String>,
        phone: Option<String>,
        /// The webhook's id (deduplication).
        provider_id: String,
        event: String,
        order: Value,
    },
    /// A delivery status of a message we sent, after it moved the message forward: runs the
    /// `message.status` rules of the conversation.
    Status {
        channel: String,
        /// The customer the message went to.
        to: String,
        /// `status:<wamid>:<status>` (deduplication: each status of a message once).
        provider_id: String,
        /// The provider's id of our message (`wamid`).
        message: String,
        /// `sent`, `delivered`, `read`, `failed`.
        status: String,
        /// For `failed`: the code and reason.
        error: Option<String>,
    },
}

impl Inbound {
    pub fn channel(&self) -> &str {
        match self {
            Inbound::Message { channel, .. }
            | Inbound::Order { channel, .. }
            | Inbound::Status { channel, .. } => channel,
        }
    }
    pub fn provider_id(&self) -> &str {
        match self {
            Inbound::Message { provider_id, .. }
            | Inbound::Order { provider_id, .. }
            | Inbound::Status { provider_id, .. } => provider_id,
        }
    }
    /// The customer the event is about: events with the same key are processed in order.
    pub fn contact_key(&self) -> String {
        match self {
            Inbound::Message { channel, from, .. } => format!("{channel}:{from}"),
            Inbound::Order { channel, to, .. } | Inbound::Status { channel, to, .. } => {
                format!("{channel}:{to}")
            }
        }
    }
}

/// An inbox row: a committed, deduplicated event.
#[derive(Debug, Clone, PartialEq)]
pub struct InboxRow {
    pub id: i64,
    pub key: String,
    pub event: Inbound,
}

/// A message the bot or an agent sends, as the channel needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outbound {
    pub channel: String,
    pub to: String,
    /// The text form (what the sandbox, web chat and agents see).
    pub text: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buttons: Vec<(String, String)>,
    /// List rows `(id, title)`, with the button that opens the list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<OutboundList>,
    /// An approved WhatsApp template, used outside the 24-hour window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<OutboundTemplate>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboundList {
    pub button: String,
    pub rows: Vec<(String, String)>,
    /// Each row's description, in the order of `rows` (empty when no row has one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub descriptions: Vec<Option<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboundTemplate {
    pub name: String,
    pub language: String,
    pub params: Vec<String>,
    pub buttons: Vec<String>,
}

/// What an outbox row delivers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutboxItem {
    Message(Box<Outbound>),
    Webhook { connector: String, body: Value },
}

impl OutboxItem {
    /// Where it goes: a channel (one WhatsApp number, web chat) or a webhook connector. Sends
    /// to one destination are bounded in number; a conversation's rows to one destination
    /// (its lane) go out in order.
    pub fn destination(&self) -> String {
        match self {
            OutboxItem::Message(m) => format!("channel:{}", m.channel),
            OutboxItem::Webhook { connector, .. } => format!("webhook:{connector}"),
        }
    }
}

/// An outbox row that is due, as the dispatcher first sees it (not claimed yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueRow {
    pub id: i64,
    pub conversation_id: i64,
    /// [`OutboxItem::destination`], or `""` for rows written before lanes existed.
    pub lane: String,
}

/// An outbox row claimed for sending.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub id: i64,
    pub conversation_id: i64,
    pub message_id: Option<i64>,
    pub attempts: u32,
    pub item: OutboxItem,
}

/// An inbound media message whose bytes are to be fetched.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaTask {
    pub message_id: i64,
    pub conversation_id: i64,
    pub channel: String,
    /// The message's payload (`{type, message: {<type>: {id, mime_type, sha256, …}}}`).
    pub payload: Value,
    pub attempts: u32,
}

/// What the store keeps of a message's media: the bytes once `stored`; why not when `failed`;
/// when to try again when `retry`.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaRecord {
    pub message_id: i64,
    pub conversation_id: i64,
    /// `stored`, `retry` or `failed`.
    pub status: String,
    pub mime_type: Option<String>,
    pub bytes: Option<Vec<u8>>,
    pub error: Option<String>,
    pub attempts: u32,
    pub next_attempt_at: Option<Millis>,
    pub updated_at: Millis,
}
