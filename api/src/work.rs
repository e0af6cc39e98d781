//! The agents' work: the conversation list, what people do to a conversation (claim, assign,
//! hand off, status, priority, tags, notes, reply) and tickets. Every change goes through
//! [`Engine::act`](switchyard_engine::Engine::act): under the conversation's lock, with its
//! events through the rules and its audit records in the same transaction.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;
use switchyard_engine::model::{now_millis as now, Conversation, Ticket};
use switchyard_engine::pipeline::{ActError, Acted, Actor, AgentAction, TicketUpdate};
use switchyard_engine::store::{ConversationLine, ConversationQuery, TicketQuery};

use crate::admin::{require, visible, Principal, Role};
use crate::extract::{Body, Id, Params};
use crate::{unavailable, ApiError, AppState};

impl From<ActError> for ApiError {
    fn from(e: ActError) -> Self {
        match e {
            ActError::NotFound(_) | ActError::NoTicket(_) => ApiError::NotFound(e.to_string()),
            ActError::Taken { .. } | ActError::Conflict(_) => ApiError::Conflict(e.to_string()),
            ActError::Forbidden(d) => d.into(),
            ActError::Invalid { .. } => ApiError::Unprocessable(e.to_string()),
            ActError::WindowClosed { templates } => ApiError::WindowClosed(templates),
            ActError::Engine(e) => ApiError::Unavailable(e.to_string()),
        }
    }
}

fn actor(p: &Principal) -> Actor {
    p.actor()
}

/// A closed set's value from a request (`status`, `priority` …), or 422 naming the field and
/// the values it takes.
pub(crate) fn parse_name<T>(field: &'static str, s: &str) -> Result<T, ApiError>
where
    T: std::str::FromStr<Err = switchyard_rules::config::UnknownName>,
{
    s.parse()
        .map_err(|e: switchyard_rules::config::UnknownName| {
            ApiError::Unprocessable(format!("{field}: {e}"))
        })
}

/// `limit`: 1 to 200, 50 when absent.
pub(crate) fn limit(l: Option<i64>) -> Result<i64, ApiError> {
    match l {
        None => Ok(50),
        Some(n) if (1..=200).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::Unprocessable(format!(
            "limit: {n} is not between 1 and 200"
        ))),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListConversations {
    /// `new`, `open`, `waiting`, `escalated` or `resolved`.
    status: Option<String>,
    queue: Option<String>,
    /// An agent id.
    assignee: Option<String>,
    /// `true`: only conversations in a queue that nobody owns.
    unassigned: Option<bool>,
    tag: Option<String>,
    /// `low`, `normal`, `high` or `urgent`.
    priority: Option<String>,
    /// Text in the messages, the contact's name or phone.
    q: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// 1 to 200 (50).
    limit: Option<i64>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ConversationPage {
    pub conversations: Vec<ConversationLine>,
    /// The next page's `cursor`, when there may be more.
    pub next_cursor: Option<String>,
}

/// Conversations, longest waiting first (since they entered their queue, else since created).
/// Agents see those they own and those in their queues.
#[utoipa::path(get, path = "/api/v1/conversations", tag = "conversations", params(ListConversations),
    security(("bearer" = [])),
    responses((status = 200, body = ConversationPage), (status = "4XX", body = crate::ErrorBody)))]
pub async fn list_conversations(
    State(s): State<Arc<AppState>>,
    p: Principal,
    Params(f): Params<ListConversations>,
) -> Result<Json<ConversationPage>, ApiError> {
    let limit = limit(f.limit)?;
    let after = match f.cursor.as_deref() {
        None => None,
        Some(c) => Some(
            c.split_once('.')
                .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
                .ok_or_else(|| {
                    ApiError::Unprocessable(
                        "cursor: not a cursor from this list's `next_cursor`".into(),
                    )
                })?,
        ),
    };
    let q = ConversationQuery {
        status: f
            .status
            .as_deref()
            .map(|x| parse_name("status", x))
            .transpose()?,
        queue: f.queue,
        assignee: f.assignee,
        unassigned: f.unassigned.unwrap_or(false),
        contact: None,
        tag: f.tag,
        priority: f
            .priority
            .as_deref()
            .map(|x| parse_name("priority", x))
            .transpose()?,
        q: f.q,
        // Narrowed to what the caller may see by the engine.
        visible_to: None,
        after,
        limit,
    };
    let lines = s
        .runtime
        .engine
        .conversations_for(&p.actor(), q)
        .await
        .map_err(unavailable)?;
    let next = (lines.len() as i64 == limit)
        .then(|| lines.last())
        .flatten()
        .map(|l| format!("{}.{}", l.waiting_since, l.conversation.id));
    Ok(Json(ConversationPage {
        conversations: lines,
        next_cursor: next,
    }))
}

async fn act(s: &AppState, p: &Principal, id: i64, action: AgentAction) -> Result<Acted, ApiError> {
    visible(s, p, id).await?;
    let acted = s.runtime.engine.act(id, action, &actor(p), now()).await?;
    s.runtime.wake_outbox();
    Ok(acted)
}

/// A conversation after a change.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Changed {
    pub conversation: Conversation,
    /// The ticket the change opened or changed, if any.
    pub ticket: Option<Ticket>,
}

fn answer(a: Acted) -> Json<Changed> {
    Json(Changed {
        conversation: a.conversation,
        ticket: a.ticket,
    })
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct SnippetBody {
    pub name: String,
    /// Language (`en`, `ur`, …, or `text` for any) → text.
    pub variants: std::collections::BTreeMap<String, String>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct SnippetList {
    pub snippets: Vec<SnippetBody>,
    /// The pack's default language: the variant to pick when the customer's has none.
    pub default_language: String,
}

/// The pack's saved replies (`snippets:`), for the workspace's reply box.
#[utoipa::path(get, path = "/api/v1/snippets", tag = "conversations", security(("bearer" = [])),
    responses((status = 200, body = SnippetList), (status = "4XX", body = crate::ErrorBody)))]
pub async fn snippets(State(s): State<Arc<AppState>>, _p: Principal) -> Json<SnippetList> {
    let pack = s.runtime.engine.pack();
    Json(SnippetList {
        snippets: pack
            .snippets
            .iter()
            .map(|(name, v)| SnippetBody {
                name: name.clone(),
                variants: v.iter().cloned().collect(),
            })
            .collect(),
        default_language: pack.settings.default_language.clone(),
    })
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PresenceReport {
    /// The caller is typing in the conversation (lasts a few seconds).
    #[serde(default)]
    typing: bool,
    /// The caller has left the conversation.
    #[serde(default)]
    leaving: bool,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Viewers {
    /// Who is on the conversation now, the caller included (unless leaving).
    pub viewers: Vec<crate::presence::Viewer>,
}

/// Says the caller is viewing (or typing in, or has left) a conversation; answers who is on
/// it now. A page repeats it every few seconds while the conversation stays open; a viewer not
/// heard from for 30 s is gone. Changes reach the live feed as `presence` events.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/presence", tag = "conversations",
    params(("id" = i64, Path)), request_body = PresenceReport, security(("bearer" = [])),
    responses((status = 200, body = Viewers), (status = "4XX", body = crate::ErrorBody)))]
pub async fn presence(
    State(s): State<Arc<AppState>>,
    p: Principal,
    Id(id): Id,
    Body(b): Body<PresenceReport>,
) -> Result<Json<Viewers>, ApiError> {
    let c = s.runtime.engine.conversation_for(&p.actor(), id).await?;
    let who = p.agent.clone().unwrap_or_else(|| p.actor.clone());
    let viewers = s
        .presence
        .report((c.id, c.queue, c.assignee), &who, b.typing, b.leaving);
    Ok(Json(Viewers { viewers }))
}

/// Takes an unowned conversation for the token's agent. Atomic: of concurrent claims one wins,
/// the others get 409 naming the owner. Fires `conversation.assigned`.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/claim", tag = "conversations",
    params(("id" = i64, Path)), security(("bearer" = [])),
    responses((status = 200, body = Changed), (status = "4XX", body = crate::ErrorBody)))]
pub async fn claim(
    State(s): State<Arc<AppState>>,
    p: Principal,
    Id(id): Id,
) -> Result<Json<Changed>, ApiError> {
    if p.agent.is_none() {
        return Err(ApiError::Unprocessable(
            "agent: this token acts for no agent, so it cannot own a conversation".into(),
        ));
    }
    Ok(answer(act(&s, &p, id, AgentAction::Claim).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignBody {
    agent: Option<String>,
    queue: Option<String>,
}

/// Gives the conversation to an agent and/or moves it to a queue (supervisor).
#[utoipa::path(post, path = "/api/v1/conversations/{id}/assign", tag = "conversations", request_body = AssignBody,
    params(("id" = i64, Path)), security(("bearer" = [])),
    responses((status = 200, body = Changed), (status = "4XX", body = crate::ErrorBody)))]
pub async fn assign(
    State(s): State<Arc<AppState>>,
    p: Principal,
    Id(id): Id,
    Body(b): Body<AssignBody>,
) -> Result<Json<Changed>, ApiError> {
    require(&p, Role::Supervisor)?;
    let a = AgentAction::Assign {
        agent: b.agent,
        queue: b.queue,
    };
    Ok(answer(act(&s, &p, id, a).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HandoffBody {
    queue: Option<String>,
    agent: Option<String>,
    note: Option<String>,
}

/// Hands the conversation to a queue (its policy picks the owner) or an agent, with a note; the
/// current owner lets go.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/handoff", tag = "conversations", request_body = HandoffBody,
    params(("id" = i64, Path)), security(("bearer" = [])),
    responses((status = 200, body = Changed), (status = "4XX", body = crate::ErrorBody)))]
pub async fn handoff(
    State(s): State<Arc<AppState>>,
    p: Principal,
    Id(id): Id,
    Body(b): Body<HandoffBody>,
) -> Result<Json<Changed>, ApiError> {
    let a = AgentAction::Handoff {
        queue: b.queue,
        agent: b.agent,
        note: b.note,
    };
    Ok(answer(act(&s, &p, id, a).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusBody {
    status: String,
}

/// Sets the status: `open`, `waiting`, `escalated` or `resolved`.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/status", tag = "conversations", request_body = StatusBody,
    params(("id" = i64, Path)), security(("bearer" = [])),
    responses((status = 200, body = Changed), (status = "4XX", body = crate::ErrorBody)))]
pub async fn status(
    State(s): State<Arc<AppState>>,
    p: Principal,
    Id(id): Id,
    Body(b): Body<StatusBody>,
) -> Result<Json<Changed>, ApiError> {
    let st = parse_name("status", &b.status)?;
    Ok(answer(act(&s, &p, id, AgentAction::Status(st)).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnoozeBody {
    /// How long, e.g. `2h`, `30m`, `1d` (up to 30 days).
    #[serde(rename = "for")]
    duration: String,
}

/// Puts the conversation aside (`waiting`, SLA clocks paused) until the time passes or the
/// customer writes; then it is open again.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/snooze", tag = "conversations", request_body = SnoozeBody,
    params(("id" = i64, Path)), security(("bearer" = [])),
    responses((status = 200, body = Changed), (status = "4XX", body = crate::ErrorBody)))]
pub async fn snooze(
    State(s): State<Arc<AppState>>,
    p: Principal,
    Id(id): Id,
    Body(b): Body<SnoozeBody>,
) -> Result<Json<Changed>, ApiError> {
    let d = switchyard_rules::calendar::parse_duration(&b.duration)
        .map_err(|e| ApiError::Unprocessable(format!("for: {e} (e.g. `2h`, `30m`)")))?;
    Ok(answer(act(&s, &p, id, AgentAction::Snooze(d)).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriorityBody {
    priority: String,
}

/// Sets the priority: `low`, `normal`, `high` or `urgent` (an agent on what they own).
#[utoipa::path(post, path = "/api/v1/conversations/{id}/priority", tag = "conversations", request_body = PriorityBody,
    params(("id" = i64, Path)), security(("bearer" = [])),
    responses((status = 200, body = Changed), (status = "4XX", body = crate::ErrorBody)))]
pub async fn priority(
    State(s): State<Arc<AppState>>,
    p: Principal,
    Id(id): Id,
    Body(b): Body<PriorityBody>,
) -> Result<Json<Changed>, ApiError> {
    let pr = parse_name("priority", &b.priority)?;
    Ok(answer(act(&s, &p, id, AgentAction::Priority(pr)).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LanguageBody {
    /// `en`, `ur`, `roman_ur`, … (kept until changed), or `auto`: the language of the
    /// customer's latest message again.
    language: String,
}

/// Sets the language the customer is answered in (template variants), for the conversation's
/// contact (an agent on what they own).
#[utoipa::path(post, path = "/api/v1/conversations/{id}/language", tag = "conversations", request_body = LanguageBody,
    params(("id" = i64, Path)), security(("bearer" = [])),
    responses((status = 200, body = Changed), (status = "4XX", body = crate::ErrorBody)))]
pub async fn language(
    State(s): State<Arc<AppState>>,
    p: Principal,
    Id(id): Id,
    Body(b): Body<LanguageBody>,
) -> Result<Json<Changed>, ApiError> {
    let lang = match b.language.as_str() {
        "auto" => None,
        l if switchyard_rules::lang::is_code(l) => Some(l.to_string()),
        l => {
            let shown: String = l.chars().take(40).collect();
            return Err(ApiError::Unprocessable(format!(
                "language: `{shown}` is not a language code (e.g. `en`, `ur`, `roman_ur`, or `auto`)"
            )));
        }
    };
    Ok(answer(act(&s, &p, id, AgentAction::Language(lang)).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TagsBody {
    #[serde(default)]
    add: Vec<String>,
    #[serde(default)]
    remove: Vec<String>,
}

/// Adds and removes tags (an agent on what they own).
#[utoipa::path(post, path = "/api/v1/conversations/{id}/tags", tag = "conversations", request_body = TagsBody,
    params(("id" = i64, Path)), security(("bearer" = [])),
    responses((status = 200, body = Changed), (status = "4XX", body = crate::ErrorBody)))]
pub async fn tags(
    State(s): State<Arc<AppState>>,
    p: Principal,
    Id(id): Id,
    Body(b): Body<TagsBody>,
) -> Result<Json<Changed>, ApiError> {
    let a = AgentAction::Tags {
        add: b.add,
        remove: b.remove,
    };
    Ok(answer(act(&s, &p, id, a).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoteBody {
    text: String,
}

/// Adds an internal note: stored with its author, never sent to the customer.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/notes", tag = "conversations", request_body = NoteBody,
    params(("id" = i64, Path)), security(("bearer" = [])),
    responses((status = 201, body = Changed), (status = "4XX", body = crate::ErrorBody)))]
pub async fn note(
    State(s): State<Arc<AppState>>,
    p: Principal,
    Id(id): Id,
    Body(b): Body<NoteBody>,
) -> Result<(StatusCode, Json<Changed>), ApiError> {
    let a = act(&s, &p, id, AgentAction::Note(b.text)).await?;
    Ok((StatusCode::CREATED, answer(a)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplyBody {
    text: Option<String>,
    template: Option<String>,
}

/// Sends `{text}` or an approved `{template}` to the customer through the outbox (the owner or
/// a supervisor). Outside WhatsApp's 24-hour window free text is refused with 422
/// `window_closed` and the templates that can be sent. Fires `agent.replied`.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/reply", tag = "conversations", request_body = ReplyBody,
    params(("id" = i64, Path)), security(("bearer" = [])),
    responses((status = 202, body = Changed), (status = "4XX", body = crate::ErrorBody)))]
pub async fn reply(
    State(s): State<Arc<AppState>>,
    p: Principal,
    Id(id): Id,
    Body(b): Body<ReplyBody>,
) -> Result<(StatusCode, Json<Changed>), ApiError> {
    let a = AgentAction::Reply {
        text: b.text,
        template: b.template,
    };
    let a = act(&s, &p, id, a).await?;
    Ok((StatusCode::ACCEPTED, answer(a)))
}

// ---- tickets ------------------------------------------------------------------------------

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListTickets {
    /// `open`, `pending`, `resolved` or `closed`.
    status: Option<String>,
    queue: Option<String>,
    /// An agent id (agents: only their own).
    owner: Option<String>,
    category: Option<String>,
    /// `low`, `normal`, `high` or `urgent`.
    priority: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<i64>,
    /// 1 to 200 (50).
    limit: Option<i64>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct TicketPage {
    pub tickets: Vec<Ticket>,
    pub next_cursor: Option<i64>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct TicketBody {
    pub ticket: Option<Ticket>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct TicketDetail {
    pub ticket: Ticket,
    /// Each change: who, when, before and after.
    pub history: Vec<Value>,
}

/// Tickets, newest first; agents see the tickets they own and those of the conversations they
/// own.
#[utoipa::path(get, path = "/api/v1/tickets", tag = "tickets", params(ListTickets),
    security(("bearer" = [])),
    responses((status = 200, body = TicketPage), (status = "4XX", body = crate::ErrorBody)))]
pub async fn list_tickets(
    State(s): State<Arc<AppState>>,
    p: Principal,
    Params(f): Params<ListTickets>,
) -> Result<Json<TicketPage>, ApiError> {
    let limit = limit(f.limit)?;
    // Refused (403) before the filters' values are looked at, as before.
    let (owner, visible_to) = switchyard_engine::access::ticket_filter(&p.actor(), f.owner)?;
    let q = TicketQuery {
        status: f
            .status
            .as_deref()
            .map(|x| parse_name("status", x))
            .transpose()?,
        queue: f.queue,
        owner,
        visible_to,
        category: f.category,
        priority: f
            .priority
            .as_deref()
            .map(|x| parse_name("priority", x))
            .transpose()?,
        before: f.cursor,
        limit,
    };
    let t = s.runtime.engine.tickets_for(&p.actor(), q).await?;
    let next = (t.len() as i64 == limit)
        .then(|| t.last().map(|t| t.id))
        .flatten();
    Ok(Json(TicketPage {
        tickets: t,
        next_cursor: next,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTicket {
    conversation: i64,
    title: String,
    category: Option<String>,
    priority: Option<String>,
}

/// Opens a ticket for a conversation → 201. A conversation has one open ticket: when it has
/// one, 409 names it (change it with `PATCH /api/v1/tickets/{id}`); nothing is written.
#[utoipa::path(post, path = "/api/v1/tickets", tag = "tickets", request_body = NewTicket,
    security(("bearer" = [])),
    responses((status = 201, body = TicketBody), (status = "4XX", body = crate::ErrorBody)))]
pub async fn create_ticket(
    State(s): State<Arc<AppState>>,
    p: Principal,
    Body(b): Body<NewTicket>,
) -> Result<(StatusCode, Json<TicketBody>), ApiError> {
    let priority = b
        .priority
        .as_deref()
        .map(|x| parse_name("priority", x))
        .transpose()?;
    let a = AgentAction::OpenTicket {
        title: b.title,
        category: b.category,
        priority,
    };
    let a = act(&s, &p, b.conversation, a).await?;
    Ok((StatusCode::CREATED, Json(TicketBody { ticket: a.ticket })))
}

/// A ticket `p` may see (see `switchyard_engine::access`).
async fn ticket_visible(
    s: &AppState,
    p: &Principal,
    id: i64,
) -> Result<switchyard_engine::model::Ticket, ApiError> {
    Ok(s.runtime.engine.ticket_for(&p.actor(), id).await?)
}

/// A ticket with its history.
#[utoipa::path(get, path = "/api/v1/tickets/{id}", tag = "tickets", params(("id" = i64, Path)),
    security(("bearer" = [])),
    responses((status = 200, body = TicketDetail), (status = "4XX", body = crate::ErrorBody)))]
pub async fn ticket(
    State(s): State<Arc<AppState>>,
    p: Principal,
    Id(id): Id,
) -> Result<Json<TicketDetail>, ApiError> {
    let t = ticket_visible(&s, &p, id).await?;
    let history = s
        .runtime
        .engine
        .ticket_history(id)
        .await
        .map_err(unavailable)?;
    Ok(Json(TicketDetail { ticket: t, history }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TicketPatch {
    status: Option<String>,
    priority: Option<String>,
    /// `null` clears the owner.
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<String>)]
    owner: Option<Option<String>>,
    category: Option<String>,
}

fn some<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// Changes a ticket, with history: `open → pending → resolved → closed`, reopen with `open`.
#[utoipa::path(patch, path = "/api/v1/tickets/{id}", tag = "tickets", request_body = TicketPatch,
    params(("id" = i64, Path)), security(("bearer" = [])),
    responses((status = 200, body = TicketBody), (status = "4XX", body = crate::ErrorBody)))]
pub async fn update_ticket(
    State(s): State<Arc<AppState>>,
    p: Principal,
    Id(id): Id,
    Body(b): Body<TicketPatch>,
) -> Result<Json<TicketBody>, ApiError> {
    let t = ticket_visible(&s, &p, id).await?;
    let change = TicketUpdate {
        status: b
            .status
            .as_deref()
            .map(|x| parse_name("status", x))
            .transpose()?,
        priority: b
            .priority
            .as_deref()
            .map(|x| parse_name("priority", x))
            .transpose()?,
        owner: b.owner,
        category: b.category,
    };
    // (An agent's owner change is refused by the engine before this matters.)
    if let (Some(Some(o)), true) = (&change.owner, p.actor().oversees()) {
        if s.runtime
            .engine
            .agent(o)
            .await
            .map_err(unavailable)?
            .is_none()
        {
            return Err(ApiError::Unprocessable(format!("owner: no agent `{o}`")));
        }
    }
    let a = s
        .runtime
        .engine
        .act(
            t.conversation_id,
            AgentAction::UpdateTicket { ticket: id, change },
            &actor(&p),
            now(),
        )
        .await?;
    Ok(Json(TicketBody { ticket: a.ticket }))
}
