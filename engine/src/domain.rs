//! What happened to a conversation, once: a run emits each change as one [`DomainEvent`]
//! (`Run::emit`), and everything else is derived from it here — the audit records, the event
//! the rules see next (`conversation.assigned`, `ticket.created` …), the live feed, and the
//! rule-error metric. No other place spells these names.

use serde_json::{json, Value};
use switchyard_rules::config::RuleEvent;

use crate::model::{Millis, Priority, Status, Ticket};

/// One change a run made (or one thing that failed while making it).
#[derive(Debug, Clone, PartialEq)]
pub enum DomainEvent {
    /// The customer's first message opened the conversation.
    ConversationCreated,
    StatusChanged {
        from: Status,
        to: Status,
    },
    PriorityChanged {
        from: Priority,
        to: Priority,
    },
    /// Waiting until `until` (RFC 3339).
    Snoozed {
        until: String,
    },
    Tagged {
        tag: String,
    },
    Untagged {
        tag: String,
    },
    AttributeSet {
        key: String,
        before: Value,
        after: Value,
    },
    /// The contact's language set explicitly (`None`: detected from messages again).
    LanguageSet {
        before: Option<String>,
        after: Option<String>,
    },
    /// A condition, template or value failed to run; `detail` says where (and the error).
    ScriptFailed {
        detail: Value,
    },
    Lookup {
        connector: String,
        action: String,
        key: String,
        /// What was found (`true` or the list's length), or why it failed.
        outcome: Result<Value, String>,
    },
    WebhookQueued {
        connector: String,
    },
    TimerSet {
        timer: String,
        after_s: u64,
    },
    TicketCreated {
        ticket: Ticket,
        fields: Value,
    },
    TicketUpdated {
        ticket: i64,
        before: Value,
        after: Value,
    },
    FlowStarted {
        flow: String,
    },
    FlowEnded {
        flow: String,
        step: String,
        completed: bool,
        why: String,
    },
    /// Events caused by actions went too deep or too many: the chain was cut.
    LoopGuard {
        event: String,
        depth: u32,
        dropped: usize,
    },
    SlaMet {
        kind: String,
        due_at: Option<Millis>,
        at: Millis,
        breaches: u32,
    },
    /// A clock warned or breached; `sla` is what rules and the feed see.
    SlaFired {
        warning: bool,
        sla: Value,
    },
    /// The channel refused a send (closed window).
    SendRefused {
        reason: String,
    },
    Unassigned {
        from: String,
        why: String,
    },
    Routed {
        from: Option<String>,
        to: String,
    },
    Assigned {
        from: Option<String>,
        agent: String,
        queue: Option<String>,
    },
    /// A person wrote to the customer.
    AgentReplied {
        agent: String,
    },
}

/// An audit record of an event: the entity it is about (`conversation:<id>` unless it names a
/// ticket), the action, before and after.
pub struct AuditEntry {
    pub ticket: Option<i64>,
    pub action: &'static str,
    pub before: Value,
    pub after: Value,
}

impl DomainEvent {
    /// The audit records the event writes (the conversation's, and a ticket's own).
    pub fn audit(&self) -> Vec<AuditEntry> {
        use DomainEvent::*;
        let conv = |action, before, after| AuditEntry {
            ticket: None,
            action,
            before,
            after,
        };
        match self {
            ConversationCreated | AgentReplied { .. } => vec![],
            StatusChanged { from, to } => vec![conv(
                "status_changed",
                json!({ "status": from.as_str() }),
                json!({ "status": to.as_str() }),
            )],
            PriorityChanged { from, to } => vec![conv(
                "priority_changed",
                json!({ "priority": from.as_str() }),
                json!({ "priority": to.as_str() }),
            )],
            Snoozed { until } => vec![conv("snoozed", Value::Null, json!({ "until": until }))],
            Tagged { tag } => vec![conv("tagged", Value::Null, json!({ "tag": tag }))],
            Untagged { tag } => vec![conv("untagged", json!({ "tag": tag }), Value::Null)],
            AttributeSet { key, before, after } => vec![conv(
                "attribute_set",
                json!({ key.clone(): before }),
                json!({ key.clone(): after }),
            )],
            LanguageSet { before, after } => vec![conv(
                "language_set",
                json!({ "language": before }),
                json!({ "language": after }),
            )],
            ScriptFailed { detail } => vec![conv("script_failed", Value::Null, detail.clone())],
            Lookup {
                connector,
                action,
                key,
                outcome,
            } => vec![conv(
                "lookup",
                json!({ "connector": connector, "action": action, "key": key }),
                match outcome {
                    Ok(found) => json!({ "found": found }),
                    Err(why) => json!({ "failed": why }),
                },
            )],
            WebhookQueued { connector } => vec![conv(
                "webhook_queued",
                Value::Null,
                json!({ "connector": connector }),
            )],
            TimerSet { timer, after_s } => vec![conv(
                "timer_set",
                Value::Null,
                json!({ "timer": timer, "after_s": after_s }),
            )],
            TicketCreated { ticket, fields } => vec![
                AuditEntry {
                    ticket: Some(ticket.id),
                    action: "created",
                    before: Value::Null,
                    after: fields.clone(),
                },
                conv("ticket_opened", Value::Null, json!({ "ticket": ticket.id })),
            ],
            TicketUpdated {
                ticket,
                before,
                after,
            } => vec![AuditEntry {
                ticket: Some(*ticket),
                action: "updated",
                before: before.clone(),
                after: after.clone(),
            }],
            FlowStarted { flow } => {
                vec![conv("flow_started", Value::Null, json!({ "flow": flow }))]
            }
            FlowEnded {
                flow,
                step,
                completed,
                why,
            } => vec![conv(
                if *completed {
                    "flow_completed"
                } else {
                    "flow_abandoned"
                },
                json!({ "flow": flow, "step": step }),
                json!({ "why": why }),
            )],
            LoopGuard {
                event,
                depth,
                dropped,
            } => vec![conv(
                "loop_guard",
                Value::Null,
                json!({ "event": event, "depth": depth, "dropped": dropped,
                        "why": "events caused by actions went too deep; the chain was cut" }),
            )],
            SlaMet {
                kind,
                due_at,
                at,
                breaches,
            } => vec![conv(
                "sla_met",
                json!({ "kind": kind, "due_at": due_at }),
                json!({ "kind": kind, "at": at, "breaches": breaches }),
            )],
            SlaFired { warning, sla } => vec![conv(
                if *warning {
                    "sla_warning"
                } else {
                    "sla_breached"
                },
                Value::Null,
                sla.clone(),
            )],
            SendRefused { reason } => {
                vec![conv(
                    "send_refused",
                    Value::Null,
                    json!({ "reason": reason }),
                )]
            }
            Unassigned { from, why } => vec![conv(
                "unassigned",
                json!({ "assignee": from }),
                json!({ "assignee": null, "why": why }),
            )],
            Routed { from, to } => vec![conv(
                "routed",
                json!({ "queue": from }),
                json!({ "queue": to }),
            )],
            Assigned { from, agent, queue } => vec![conv(
                "assigned",
                json!({ "assignee": from }),
                json!({ "assignee": agent, "queue": queue }),
            )],
        }
    }

    /// The event the rules see next, with its `event` data.
    pub fn rule_event(&self) -> Option<(RuleEvent, Value)> {
        use DomainEvent::*;
        Some(match self {
            ConversationCreated => (RuleEvent::ConversationCreated, json!({})),
            StatusChanged { from, to } => (
                RuleEvent::ConversationStatusChanged,
                json!({ "from": from.as_str(), "to": to.as_str() }),
            ),
            Assigned { agent, .. } => (
                RuleEvent::ConversationAssigned,
                json!({ "assignee": agent }),
            ),
            TicketCreated { ticket, .. } => {
                (RuleEvent::TicketCreated, json!({ "ticket": ticket.id }))
            }
            TicketUpdated { ticket, .. } => (RuleEvent::TicketUpdated, json!({ "ticket": ticket })),
            FlowEnded {
                flow,
                step,
                completed,
                why,
            } => (
                if *completed {
                    RuleEvent::FlowCompleted
                } else {
                    RuleEvent::FlowAbandoned
                },
                json!({ "flow": flow, "step": step, "why": why }),
            ),
            AgentReplied { agent } => (RuleEvent::AgentReplied, json!({ "agent": agent })),
            _ => return None,
        })
    }

    /// What the live feed shows of it: `(kind, data)`. `owned` is whether the conversation has
    /// an owner after the change (a conversation routed and assigned in one change did not
    /// wait in its queue).
    pub fn feed(&self, owned: bool) -> Option<(&'static str, Value)> {
        use DomainEvent::*;
        Some(match self {
            Routed { to, .. } if !owned => ("conversation.queued", json!({ "queue": to })),
            Assigned { agent, queue, .. } => (
                "conversation.assigned",
                json!({ "assignee": agent, "queue": queue }),
            ),
            StatusChanged { to, .. } => (
                "conversation.status_changed",
                json!({ "status": to.as_str() }),
            ),
            TicketCreated { ticket, .. } => ("ticket.created", json!({ "ticket": ticket.id })),
            SlaFired { warning: true, sla } => ("sla.warning", sla.clone()),
            SlaFired {
                warning: false,
                sla,
            } => ("sla.breached", sla.clone()),
            _ => return None,
        })
    }

    /// Whether it counts as a rule error (`switchyard_rule_errors_total`).
    pub fn is_rule_error(&self) -> bool {
        matches!(self, DomainEvent::ScriptFailed { .. })
    }
}
