//! The live feed: what just changed, for the agents' inbox (server-sent events in `api`).
//! Each committed changeset becomes zero or more [`FeedEvent`]s on a broadcast channel; a
//! subscriber that falls behind loses the oldest and is told so by the channel.

use serde::Serialize;
use serde_json::{json, Value};

use crate::domain::DomainEvent;
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
    let owned = conv.assignee.is_some();
    for e in &cs.events {
        if let Some((kind, data)) = e.feed(owned) {
            out.push(match e {
                // The event goes to the agent it names (later changes may have moved it on).
                DomainEvent::Assigned { agent, .. } => FeedEvent {
                    assignee: Some(agent.clone()),
                    ..ev(kind, data)
                },
                _ => ev(kind, data),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Conversation;

    #[test]
    fn a_changeset_becomes_what_an_inbox_shows() {
        let conv = Conversation::for_tests(7, Some("support"), Some("ayesha"));
        let cs = Changeset {
            at: 5,
            conversation_id: 7,
            conversation: Some(conv),
            events: vec![
                DomainEvent::Routed {
                    from: None,
                    to: "support".into(),
                },
                DomainEvent::Assigned {
                    from: None,
                    agent: "ayesha".into(),
                    queue: Some("support".into()),
                },
                DomainEvent::Tagged { tag: "x".into() },
                DomainEvent::SlaFired {
                    warning: true,
                    sla: json!({ "kind": "first_response" }),
                },
            ],
            ..Default::default()
        };
        let kinds: Vec<_> = events_of(&cs).iter().map(|e| e.kind).collect();
        // Routed and assigned in one change: the queue did not have to show it as waiting.
        assert_eq!(kinds, ["conversation.assigned", "sla.warning"]);
        assert!(events_of(&Changeset::default()).is_empty());
    }
}
