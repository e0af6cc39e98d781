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
    /// `ticket.created`, `sla.warning`, `sla.breached`.
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
            // Written by the SLA timers (the time issue): shown to the owner and the queue.
            "sla_warning" => out.push(ev("sla.warning", a.after.clone())),
            "sla_breached" => out.push(ev("sla.breached", a.after.clone())),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AuditRecord, Conversation, Priority, Status};

    #[test]
    fn a_changeset_becomes_what_an_inbox_shows() {
        let conv = Conversation {
            id: 7,
            contact_id: 1,
            channel: "whatsapp".into(),
            status: Status::Open,
            queue: Some("support".into()),
            assignee: Some("ayesha".into()),
            priority: Priority::Normal,
            tags: vec![],
            attributes: Default::default(),
            flow: None,
            last_customer_message_at: None,
            queued_at: None,
            sla: Default::default(),
            created_at: 0,
            updated_at: 0,
        };
        let audit = |action: &str, after: Value| AuditRecord {
            at: 5,
            actor: "system".into(),
            entity: "conversation:7".into(),
            action: action.into(),
            before: Value::Null,
            after,
        };
        let cs = Changeset {
            at: 5,
            conversation_id: 7,
            conversation: Some(conv),
            audit: vec![
                audit("routed", json!({ "queue": "support" })),
                audit("assigned", json!({ "assignee": "ayesha" })),
                audit("tagged", json!({ "tag": "x" })),
                audit("sla_warning", json!({ "kind": "first_response" })),
            ],
            ..Default::default()
        };
        let kinds: Vec<_> = events_of(&cs).iter().map(|e| e.kind).collect();
        // Routed and assigned in one change: the queue did not have to show it as waiting.
        assert_eq!(kinds, ["conversation.assigned", "sla.warning"]);
        assert!(events_of(&Changeset::default()).is_empty());
    }
}
