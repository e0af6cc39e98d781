//! The live feed: what just changed, for the agents' inbox (server-sent events in `api`).
//! Each committed changeset becomes zero or more [`FeedEvent`]s on a broadcast channel; a
//! subscriber that falls behind loses the oldest and is told so by the channel.

use serde::Serialize;
use serde_json::{json, Value};

use crate::model::{Direction, Millis};
use crate::store::Changeset;

/// One thing an inbox shows. `queue` and `assignee` are the conversation's after the change,
/// so the API can send it only to those who may see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FeedEvent {
    /// `conversation.queued` (entered a queue, unowned), `conversation.assigned`,
    /// `message.received` (the customer wrote), `conversation.status_changed`,
    /// `ticket.created`.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub kind: &'static str,
    pub conversation_id: i64,
    pub queue: Option<String>,
    pub assignee: Option<String>,
    pub at: Millis,
    pub data: Value,
}

/// The feed events of a committed changeset.
pub fn events_of(cs: &Changeset) -> Vec<FeedEvent> {
    let Some(conv) = &cs.conversation else {
        return Vec::new();
    };
    let ev = |kind: &'static str, data: Value| FeedEvent {
        kind,
        conversation_id: cs.conversation_id,
        queue: conv.queue.clone(),
        assignee: conv.assignee.clone(),
        at: cs.at,
        data,
    };
    let mut out = Vec::new();
    for m in &cs.messages {
        if m.direction == Direction::In {
            out.push(ev(
                "message.received",
                json!({ "text": m.body, "kind": m.kind }),
            ));
        }
    }
    let entity = format!("conversation:{}", cs.conversation_id);
    for a in cs.audit.iter().filter(|a| a.entity == entity) {
        match a.action.as_str() {
            "routed" if conv.assignee.is_none() => {
                out.push(ev("conversation.queued", a.after.clone()))
            }
            "assigned" => out.push(FeedEvent {
                assignee: a.after["assignee"].as_str().map(String::from),
                ..ev("conversation.assigned", a.after.clone())
            }),
            "status_changed" => out.push(ev("conversation.status_changed", a.after.clone())),
            "ticket_opened" => out.push(ev("ticket.created", a.after.clone())),
            _ => {}
        }
    }
    out
}
