//! The agents' work: the conversation list, what people do to a conversation (claim, assign,
//! hand off, status, priority, tags, notes, reply) and tickets. Every change goes through
//! [`Engine::act`](switchyard_engine::Engine::act): under the conversation's lock, with its
//! events through the rules and its audit records in the same transaction.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use switchyard_engine::model::{now_millis as now, Priority, Status, TicketStatus};
use switchyard_engine::pipeline::{ActError, Acted, Actor, AgentAction, TicketUpdate};
use switchyard_engine::store::{ConversationQuery, TicketQuery};

use crate::admin::{require, visible, Principal, Role};
use crate::extract::{Body, Params};
use crate::{unavailable, ApiError, AppState};

impl From<ActError> for ApiError {
    fn from(e: ActError) -> Self {
        match e {
            ActError::NotFound(_) | ActError::NoTicket(_) => ApiError::NotFound(e.to_string()),
            ActError::Taken { .. } | ActError::Conflict(_) => ApiError::Conflict(e.to_string()),
            ActError::Forbidden(m) => ApiError::Forbidden(m),
            ActError::Invalid { .. } => ApiError::Unprocessable(e.to_string()),
            ActError::WindowClosed { templates } => ApiError::WindowClosed(templates),
            ActError::Engine(e) => ApiError::Unavailable(e.to_string()),
        }
    }
}

fn actor(p: &Principal) -> Actor {
    Actor {
        id: p.actor.clone(),
        agent: p.agent.clone(),
        supervisor: p.role >= Role::Supervisor,
    }
}

pub(crate) fn parse_status(field: &'static str, s: &str) -> Result<Status, ApiError> {
    Ok(match s {
        "new" => Status::New,
        "open" => Status::Open,
        "waiting" => Status::Waiting,
        "escalated" => Status::Escalated,
        "resolved" => Status::Resolved,
        _ => {
            return Err(ApiError::Unprocessable(format!(
                "{field}: `{s}` is not one of new, open, waiting, escalated, resolved"
            )))
        }
    })
}

pub(crate) fn parse_priority(field: &'static str, s: &str) -> Result<Priority, ApiError> {
    Ok(match s {
        "low" => Priority::Low,
        "normal" => Priority::Normal,
        "high" => Priority::High,
        "urgent" => Priority::Urgent,
        _ => {
            return Err(ApiError::Unprocessable(format!(
                "{field}: `{s}` is not one of low, normal, high, urgent"
            )))
        }
    })
}

fn parse_ticket_status(field: &'static str, s: &str) -> Result<TicketStatus, ApiError> {
    Ok(match s {
        "open" => TicketStatus::Open,
        "pending" => TicketStatus::Pending,
        "resolved" => TicketStatus::Resolved,
        "closed" => TicketStatus::Closed,
        _ => {
            return Err(ApiError::Unprocessable(format!(
                "{field}: `{s}` is not one of open, pending, resolved, closed"
            )))
        }
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListConversations {
    status: Option<String>,
    queue: Option<String>,
    assignee: Option<String>,
    tag: Option<String>,
    priority: Option<String>,
    q: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

/// `GET /api/v1/conversations`: longest waiting first; `next_cursor` continues the list.
/// Agents see the conversations they own and those in their queues.
pub async fn list_conversations(
    State(s): State<Arc<AppState>>,
    p: Principal,
    Params(f): Params<ListConversations>,
) -> Result<Json<Value>, ApiError> {
    let store = &s.runtime.engine.store;
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
    let visible_to = match (p.role, &p.agent) {
        (Role::Agent, Some(me)) => {
            let queues = store
                .agent(me)
                .await
                .map_err(unavailable)?
                .map(|a| a.queues)
                .unwrap_or_default();
            Some((me.clone(), queues))
        }
        (Role::Agent, None) => Some((String::new(), Vec::new())),
        _ => None,
    };
    let q = ConversationQuery {
        status: f
            .status
            .as_deref()
            .map(|x| parse_status("status", x))
            .transpose()?,
        queue: f.queue,
        assignee: f.assignee,
        tag: f.tag,
        priority: f
            .priority
            .as_deref()
            .map(|x| parse_priority("priority", x))
            .transpose()?,
        q: f.q,
        visible_to,
        after,
        limit,
    };
    let lines = store.list_conversations(&q).await.map_err(unavailable)?;
    let next = (lines.len() as i64 == limit)
        .then(|| lines.last())
        .flatten()
        .map(|l| format!("{}.{}", l.waiting_since, l.conversation.id));
    Ok(Json(json!({ "conversations": lines, "next_cursor": next })))
}

async fn act(s: &AppState, p: &Principal, id: i64, action: AgentAction) -> Result<Acted, ApiError> {
    visible(s, p, id).await?;
    let acted = s.runtime.engine.act(id, action, &actor(p), now()).await?;
    s.runtime.wake_outbox();
    Ok(acted)
}

fn answer(a: Acted) -> Json<Value> {
    Json(json!({ "conversation": a.conversation, "ticket": a.ticket }))
}

/// `POST /api/v1/conversations/{id}/claim`: atomic; of concurrent claims one wins, the others
/// get 409 naming the owner. Fires `conversation.assigned`.
pub async fn claim(
    State(s): State<Arc<AppState>>,
    p: Principal,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    if p.agent.is_none() {
        return Err(ApiError::Unprocessable(
            "agent: this token acts for no agent, so it cannot own a conversation".into(),
        ));
    }
    Ok(answer(act(&s, &p, id, AgentAction::Claim).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignBody {
    agent: Option<String>,
    queue: Option<String>,
}

/// `POST /api/v1/conversations/{id}/assign` (supervisor): `{agent?, queue?}`.
pub async fn assign(
    State(s): State<Arc<AppState>>,
    p: Principal,
    Path(id): Path<i64>,
    Body(b): Body<AssignBody>,
) -> Result<Json<Value>, ApiError> {
    require(&p, Role::Supervisor)?;
    let a = AgentAction::Assign {
        agent: b.agent,
        queue: b.queue,
    };
    Ok(answer(act(&s, &p, id, a).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandoffBody {
    queue: Option<String>,
    agent: Option<String>,
    note: Option<String>,
}

/// `POST /api/v1/conversations/{id}/handoff`: `{queue?, agent?, note?}`; the owner lets go and
/// the queue's policy (or the named agent) takes it, with the note.
pub async fn handoff(
    State(s): State<Arc<AppState>>,
    p: Principal,
    Path(id): Path<i64>,
    Body(b): Body<HandoffBody>,
) -> Result<Json<Value>, ApiError> {
    let a = AgentAction::Handoff {
        queue: b.queue,
        agent: b.agent,
        note: b.note,
    };
    Ok(answer(act(&s, &p, id, a).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusBody {
    status: String,
}

/// `POST /api/v1/conversations/{id}/status`: `{status}`.
pub async fn status(
    State(s): State<Arc<AppState>>,
    p: Principal,
    Path(id): Path<i64>,
    Body(b): Body<StatusBody>,
) -> Result<Json<Value>, ApiError> {
    let st = parse_status("status", &b.status)?;
    Ok(answer(act(&s, &p, id, AgentAction::Status(st)).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorityBody {
    priority: String,
}

/// `POST /api/v1/conversations/{id}/priority` (supervisor): `{priority}`.
pub async fn priority(
    State(s): State<Arc<AppState>>,
    p: Principal,
    Path(id): Path<i64>,
    Body(b): Body<PriorityBody>,
) -> Result<Json<Value>, ApiError> {
    require(&p, Role::Supervisor)?;
    let pr = parse_priority("priority", &b.priority)?;
    Ok(answer(act(&s, &p, id, AgentAction::Priority(pr)).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagsBody {
    #[serde(default)]
    add: Vec<String>,
    #[serde(default)]
    remove: Vec<String>,
}

/// `POST /api/v1/conversations/{id}/tags` (supervisor): `{add?: [..], remove?: [..]}`.
pub async fn tags(
    State(s): State<Arc<AppState>>,
    p: Principal,
    Path(id): Path<i64>,
    Body(b): Body<TagsBody>,
) -> Result<Json<Value>, ApiError> {
    require(&p, Role::Supervisor)?;
    let a = AgentAction::Tags {
        add: b.add,
        remove: b.remove,
    };
    Ok(answer(act(&s, &p, id, a).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoteBody {
    text: String,
}

/// `POST /api/v1/conversations/{id}/notes`: an internal note; never sent to the customer.
pub async fn note(
    State(s): State<Arc<AppState>>,
    p: Principal,
    Path(id): Path<i64>,
    Body(b): Body<NoteBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let a = act(&s, &p, id, AgentAction::Note(b.text)).await?;
    Ok((StatusCode::CREATED, answer(a)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplyBody {
    text: Option<String>,
    template: Option<String>,
}

/// `POST /api/v1/conversations/{id}/reply`: `{text}` or `{template}` through the outbox (owner
/// or supervisor). Outside WhatsApp's 24-hour window free text is refused with 422
/// `window_closed` and the templates that can be sent. Fires `agent.replied`.
pub async fn reply(
    State(s): State<Arc<AppState>>,
    p: Principal,
    Path(id): Path<i64>,
    Body(b): Body<ReplyBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let a = AgentAction::Reply {
        text: b.text,
        template: b.template,
    };
    let a = act(&s, &p, id, a).await?;
    Ok((StatusCode::ACCEPTED, answer(a)))
}

// ---- tickets ------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListTickets {
    status: Option<String>,
    queue: Option<String>,
    owner: Option<String>,
    category: Option<String>,
    priority: Option<String>,
    cursor: Option<i64>,
    limit: Option<i64>,
}

/// `GET /api/v1/tickets`: newest first; agents see the tickets they own.
pub async fn list_tickets(
    State(s): State<Arc<AppState>>,
    p: Principal,
    Params(f): Params<ListTickets>,
) -> Result<Json<Value>, ApiError> {
    let limit = limit(f.limit)?;
    let owner = if p.role >= Role::Supervisor {
        f.owner
    } else {
        match (&f.owner, &p.agent) {
            (Some(o), Some(me)) if o != me => {
                return Err(ApiError::Forbidden(
                    "owner: agents see their own tickets only".into(),
                ))
            }
            _ => Some(p.agent.clone().unwrap_or_default()),
        }
    };
    let q = TicketQuery {
        status: f
            .status
            .as_deref()
            .map(|x| parse_ticket_status("status", x))
            .transpose()?,
        queue: f.queue,
        owner,
        category: f.category,
        priority: f
            .priority
            .as_deref()
            .map(|x| parse_priority("priority", x))
            .transpose()?,
        before: f.cursor,
        limit,
    };
    let t = s
        .runtime
        .engine
        .store
        .list_tickets(&q)
        .await
        .map_err(unavailable)?;
    let next = (t.len() as i64 == limit)
        .then(|| t.last().map(|t| t.id))
        .flatten();
    Ok(Json(json!({ "tickets": t, "next_cursor": next })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTicket {
    conversation: i64,
    title: String,
    category: Option<String>,
    priority: Option<String>,
}

/// `POST /api/v1/tickets`: `{conversation, title, category?, priority?}` → 201. A conversation
/// has one open ticket: when it has one, that ticket is raised instead (200).
pub async fn create_ticket(
    State(s): State<Arc<AppState>>,
    p: Principal,
    Body(b): Body<NewTicket>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let priority = b
        .priority
        .as_deref()
        .map(|x| parse_priority("priority", x))
        .transpose()?;
    let had = s
        .runtime
        .engine
        .store
        .open_ticket(b.conversation)
        .await
        .map_err(unavailable)?;
    let a = AgentAction::OpenTicket {
        title: b.title,
        category: b.category,
        priority,
    };
    let a = act(&s, &p, b.conversation, a).await?;
    let code = if had.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((code, Json(json!({ "ticket": a.ticket }))))
}

/// A ticket `p` may see: supervisors all, agents their own.
async fn ticket_visible(
    s: &AppState,
    p: &Principal,
    id: i64,
) -> Result<switchyard_engine::model::Ticket, ApiError> {
    let t = s
        .runtime
        .engine
        .store
        .ticket(id)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| ApiError::NotFound(format!("no ticket {id}")))?;
    if p.role < Role::Supervisor && (t.owner.is_none() || t.owner != p.agent) {
        return Err(ApiError::Forbidden(format!("ticket {id} is not yours")));
    }
    Ok(t)
}

/// `GET /api/v1/tickets/{id}`: the ticket with its history.
pub async fn ticket(
    State(s): State<Arc<AppState>>,
    p: Principal,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let t = ticket_visible(&s, &p, id).await?;
    let history = s
        .runtime
        .engine
        .store
        .ticket_history(id)
        .await
        .map_err(unavailable)?;
    Ok(Json(json!({ "ticket": t, "history": history })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketPatch {
    status: Option<String>,
    priority: Option<String>,
    /// `null` clears the owner.
    #[serde(default, deserialize_with = "some")]
    owner: Option<Option<String>>,
    category: Option<String>,
}

fn some<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// `PATCH /api/v1/tickets/{id}`: `{status?, priority?, owner?, category?}`, with history;
/// `open → pending → resolved → closed`, reopen with `open`.
pub async fn update_ticket(
    State(s): State<Arc<AppState>>,
    p: Principal,
    Path(id): Path<i64>,
    Body(b): Body<TicketPatch>,
) -> Result<Json<Value>, ApiError> {
    let t = ticket_visible(&s, &p, id).await?;
    let change = TicketUpdate {
        status: b
            .status
            .as_deref()
            .map(|x| parse_ticket_status("status", x))
            .transpose()?,
        priority: b
            .priority
            .as_deref()
            .map(|x| parse_priority("priority", x))
            .transpose()?,
        owner: b.owner,
        category: b.category,
    };
    // (An agent's owner change is refused by the engine before this matters.)
    if let (Some(Some(o)), true) = (&change.owner, p.role >= Role::Supervisor) {
        if s.runtime
            .engine
            .store
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
    Ok(Json(json!({ "ticket": a.ticket })))
}
