//! What people do through the admin API: claim, assign, hand off, change status, priority and
//! tags, write internal notes, reply, and work on tickets. Each runs like an inbox event: under
//! the conversation's lock, through the same [`Run`], firing its events (`conversation.assigned`,
//! `agent.replied`, `conversation.status_changed`, `ticket.*`) through the rules, and committing
//! state, audit records, outbox rows and the trace in one transaction.

use serde_json::json;
use switchyard_rules::pack::MessageRt;
use switchyard_rules::template::Template;

use super::{Engine, EngineError, Run};
use crate::domain::DomainEvent;
use crate::model::*;
use crate::store::TicketChange;

pub use crate::access::Actor;
use crate::access::{self, ActKind, Denied};

/// One change to a conversation.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentAction {
    /// The caller's agent takes an unowned conversation.
    Claim,
    /// Gives the conversation to an agent (moving it to `queue` first, when given).
    Assign {
        agent: Option<String>,
        queue: Option<String>,
    },
    /// To a queue (assigned per its policy) or an agent, with a note for whoever takes it.
    Handoff {
        queue: Option<String>,
        agent: Option<String>,
        note: Option<String>,
    },
    Status(Status),
    /// Waiting until this long has passed (or the customer writes), then open again.
    Snooze(std::time::Duration),
    Priority(Priority),
    /// The contact's language for templates (`None`: detected from their messages again).
    Language(Option<String>),
    Tags {
        add: Vec<String>,
        remove: Vec<String>,
    },
    /// An internal note: stored, never sent.
    Note(String),
    /// A message to the customer through the outbox: free text, or a template by name.
    Reply {
        text: Option<String>,
        template: Option<String>,
    },
    /// Opens a ticket for the conversation (or raises its open one).
    OpenTicket {
        title: String,
        category: Option<String>,
        priority: Option<Priority>,
    },
    /// Changes one of the conversation's tickets.
    UpdateTicket {
        ticket: i64,
        change: TicketUpdate,
    },
}

/// Fields of a ticket to change; `None` leaves one as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TicketUpdate {
    pub status: Option<TicketStatus>,
    pub priority: Option<Priority>,
    /// `Some(None)` clears the owner.
    pub owner: Option<Option<String>>,
    pub category: Option<String>,
}

/// Why an action was refused. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    #[error("no conversation {0}")]
    NotFound(i64),
    #[error("no ticket {0} on this conversation")]
    NoTicket(i64),
    #[error("conversation {conversation} is already owned by {owner}")]
    Taken { conversation: i64, owner: String },
    #[error(transparent)]
    Forbidden(#[from] Denied),
    /// A field's value cannot be used; the message starts with the field's name.
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// A conflict with the current state other than ownership (e.g. a second open ticket).
    #[error("{0}")]
    Conflict(String),
    /// Free text cannot go out: WhatsApp's 24-hour window is closed. These approved
    /// templates can.
    #[error("the customer's 24-hour window is closed: only an approved template can be sent")]
    WindowClosed { templates: Vec<String> },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl From<crate::store::StoreError> for ActError {
    fn from(e: crate::store::StoreError) -> Self {
        ActError::Engine(e.into())
    }
}

fn invalid(field: &'static str, message: impl Into<String>) -> ActError {
    ActError::Invalid {
        field,
        message: message.into(),
    }
}

/// The state after an action, for the API's answer.
#[derive(Debug, Clone)]
pub struct Acted {
    pub conversation: Conversation,
    /// The ticket the action opened or changed.
    pub ticket: Option<Ticket>,
    pub trace: std::sync::Arc<crate::trace::Trace>,
}

/// Allowed ticket moves: `open → pending → resolved → closed`, any open one straight to
/// resolved or closed, and a resolved or closed one reopened.
fn ticket_move_allowed(from: TicketStatus, to: TicketStatus) -> bool {
    use TicketStatus::*;
    from == to
        || matches!(
            (from, to),
            (Open, Pending)
                | (Pending, Open)
                | (Open | Pending, Resolved)
                | (Open | Pending | Resolved, Closed)
                | (Resolved | Closed, Open)
        )
}

impl Engine {
    /// Applies a person's action to a conversation, atomically with its audit records and the
    /// rules its events trigger.
    pub async fn act(
        &self,
        conversation_id: i64,
        action: AgentAction,
        by: &Actor,
        now: Millis,
    ) -> Result<Acted, ActError> {
        let (ctx, guard) = self
            .locked_context(conversation_id)
            .await?
            .ok_or(ActError::NotFound(conversation_id))?;
        let pack = self.pack();
        let owner = ctx.conversation.assignee.clone();
        let kind = match action {
            AgentAction::Claim => ActKind::Claim,
            AgentAction::UpdateTicket { .. } => ActKind::Ticket,
            _ => ActKind::Owned,
        };
        access::act_on_conversation(by, conversation_id, owner.as_deref(), kind)?;
        let check_queue = |field: &'static str, q: &Option<String>| match q {
            Some(q) if !pack.queues.contains_key(q.as_str()) => Err(invalid(
                field,
                format!(
                    "no queue `{q}` in the rule pack (queues: {})",
                    pack.queues.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )),
            _ => Ok(()),
        };
        let mut run = Run::new(self, &pack, ctx, now);
        let actor = by.id.as_str();
        let mut ticket_out = None;
        match action {
            AgentAction::Claim => {
                let me = by.agent.clone().ok_or_else(|| {
                    invalid(
                        "agent",
                        "this token acts for no agent, so it cannot own a conversation",
                    )
                })?;
                match owner {
                    Some(o) if o != me => {
                        return Err(ActError::Taken {
                            conversation: conversation_id,
                            owner: o,
                        })
                    }
                    Some(_) => {}
                    None => {
                        self.known_agent(&me).await?;
                        run.end_flow(false, &format!("claimed by {me}"), actor, 0);
                        run.assign(&me, actor, 0);
                    }
                }
            }
            AgentAction::Assign { agent, queue } => {
                check_queue("queue", &queue)?;
                if let Some(a) = &agent {
                    self.known_agent(a).await?;
                }
                if agent.is_none() && queue.is_none() {
                    return Err(invalid("agent", "name an agent, a queue or both"));
                }
                if let Some(q) = &queue {
                    run.route(q, actor, 0).await?;
                }
                if let Some(a) = agent {
                    run.end_flow(false, &format!("assigned to {a}"), actor, 0);
                    run.assign(&a, actor, 0);
                }
            }
            AgentAction::Handoff { queue, agent, note } => {
                check_queue("queue", &queue)?;
                if let Some(a) = &agent {
                    self.known_agent(a).await?;
                }
                if queue.is_none() && agent.is_none() {
                    return Err(invalid("queue", "name a queue, an agent or both"));
                }
                // The note says why; whoever takes it reads it first.
                let note = note.filter(|n| !n.trim().is_empty());
                let queue = queue.or_else(|| run.conv.queue.clone());
                // A hand-off lets go of the conversation: the named agent, or the queue's
                // policy among the others, picks the next owner.
                let prev = match &agent {
                    Some(a) if run.conv.assignee.as_ref() == Some(a) => None,
                    _ => run.unassign(actor, "handed off"),
                };
                run.not_to = prev;
                let r = run.handoff(queue, agent, note, actor, 0).await;
                run.not_to = None;
                r?;
            }
            AgentAction::Status(s) => {
                if s == Status::New {
                    return Err(invalid(
                        "status",
                        "a conversation cannot go back to `new`; use open, waiting, escalated or resolved",
                    ));
                }
                run.set_status(s, actor, 0);
            }
            AgentAction::Snooze(d) => {
                if d.is_zero() || d > std::time::Duration::from_secs(30 * 86400) {
                    return Err(invalid("for", "between 1 second and 30 days"));
                }
                run.snooze(d, actor, 0);
            }
            AgentAction::Priority(p) => run.set_priority(p, actor),
            AgentAction::Language(l) => run.set_language(l, actor),
            AgentAction::Tags { add, remove } => {
                for t in add.iter().chain(&remove) {
                    if t.trim().is_empty() || t.len() > 64 {
                        return Err(invalid("tags", "a tag is 1 to 64 characters"));
                    }
                }
                for t in add {
                    if !run.conv.tags.contains(&t) {
                        run.emit(actor, DomainEvent::Tagged { tag: t.clone() }, 0);
                        run.conv.tags.push(t);
                    }
                }
                for t in remove {
                    if run.conv.tags.contains(&t) {
                        run.emit(actor, DomainEvent::Untagged { tag: t.clone() }, 0);
                        run.conv.tags.retain(|x| *x != t);
                    }
                }
            }
            AgentAction::Note(text) => {
                if text.trim().is_empty() {
                    return Err(invalid("text", "a note needs text"));
                }
                run.note(actor, text);
            }
            AgentAction::Reply { text, template } => {
                let author = by.agent.clone().unwrap_or_else(|| by.id.clone());
                let window = run.eng.window_open(&run.conv, run.now);
                let message = match (text, template) {
                    (Some(t), None) => {
                        if t.trim().is_empty() {
                            return Err(invalid("text", "a reply needs text"));
                        }
                        if !window {
                            return Err(ActError::WindowClosed {
                                templates: approved_templates(&pack),
                            });
                        }
                        MessageRt::Text(Template::literal(&t))
                    }
                    (None, Some(name)) => {
                        let Some(tpl) = pack.templates.get(name.as_str()) else {
                            return Err(invalid(
                                "template",
                                format!("no template `{name}` in the rule pack"),
                            ));
                        };
                        if !window && tpl.whatsapp.is_none() {
                            return Err(ActError::WindowClosed {
                                templates: approved_templates(&pack),
                            });
                        }
                        MessageRt::Template(name)
                    }
                    _ => return Err(invalid("text", "send exactly one of `text` or `template`")),
                };
                // A person answering ends whatever the bot was doing.
                run.end_flow(false, &format!("{author} replied"), actor, 0);
                run.send_as(&message, actor, &author, 0).await?;
                // A template whose holes cannot be filled for this conversation is refused,
                // naming them; nothing is committed.
                if let Some(why) = run.blocked.take() {
                    return Err(invalid(
                        "template",
                        format!("it cannot be filled in for this conversation: {why}"),
                    ));
                }
                if run.conv.status == Status::New {
                    run.set_status(Status::Open, actor, 0);
                }
                run.emit(actor, DomainEvent::AgentReplied { agent: author }, 0);
            }
            AgentAction::OpenTicket {
                title,
                category,
                priority,
            } => {
                if title.trim().is_empty() {
                    return Err(invalid("title", "a ticket needs a title"));
                }
                // One open ticket per conversation: what was typed is not dropped silently.
                if let Some(t) = &run.ticket {
                    return Err(ActError::Conflict(format!(
                        "conversation {conversation_id} already has open ticket {} (\"{}\"): change it with PATCH /api/v1/tickets/{}",
                        t.id, t.title, t.id
                    )));
                }
                run.ticket(Some(title), category, priority, None, actor, 0)
                    .await?;
                ticket_out = run.ticket.clone();
            }
            AgentAction::UpdateTicket { ticket, change } => {
                let t = self
                    .store
                    .tickets(conversation_id)
                    .await?
                    .into_iter()
                    .find(|t| t.id == ticket)
                    .ok_or(ActError::NoTicket(ticket))?;
                access::change_ticket(by, &t, owner.as_deref(), change.owner.as_ref())?;
                ticket_out = Some(run.update_ticket(t, change, actor)?);
            }
        }
        run.drain_caused().await?;
        let freed = run.freed_queue();
        let cs = run.finish();
        let conversation = cs
            .conversation
            .clone()
            .ok_or(ActError::NotFound(conversation_id))?;
        let trace = cs.trace.as_ref().map(|t| t.1.clone()).unwrap_or_default();
        let ticket_out = match ticket_out {
            Some(t) => Some(
                cs.tickets
                    .iter()
                    .rev()
                    .find(|c| c.ticket.id == t.id)
                    .map(|c| c.ticket.clone())
                    .unwrap_or(t),
            ),
            None => None,
        };
        self.commit(cs).await?;
        drop(guard);
        if let Some(q) = freed {
            self.assign_waiting(&q, now).await?;
        }
        Ok(Acted {
            conversation,
            ticket: ticket_out,
            trace,
        })
    }

    async fn known_agent(&self, id: &str) -> Result<Agent, ActError> {
        self.store
            .agent(id)
            .await?
            .ok_or_else(|| invalid("agent", format!("no agent `{id}`")))
    }
}

/// The pack's templates WhatsApp approved (those with a `whatsapp:` part).
pub fn approved_templates(pack: &switchyard_rules::pack::Pack) -> Vec<String> {
    let mut v: Vec<String> = pack
        .templates
        .iter()
        .filter(|(_, t)| t.whatsapp.is_some())
        .map(|(n, _)| n.to_string())
        .collect();
    v.sort();
    v
}

impl Run<'_> {
    /// Changes a ticket with its history; `open → pending → resolved → closed`, reopen.
    fn update_ticket(
        &mut self,
        mut t: Ticket,
        change: TicketUpdate,
        actor: &str,
    ) -> Result<Ticket, ActError> {
        let before = super::ticket_json(&t);
        if let Some(s) = change.status {
            if !ticket_move_allowed(t.status, s) {
                return Err(invalid(
                    "status",
                    format!(
                        "a ticket cannot go from {} to {} (open → pending → resolved → closed; reopen with open)",
                        t.status.as_str(),
                        s.as_str()
                    ),
                ));
            }
            if s.is_open() && !t.status.is_open() {
                if let Some(other) = self.ticket.as_ref().filter(|o| o.id != t.id) {
                    return Err(ActError::Conflict(format!(
                        "ticket {} of this conversation is open; a conversation has one open ticket at a time",
                        other.id
                    )));
                }
            }
            t.status = s;
        }
        if let Some(p) = change.priority {
            t.priority = p;
        }
        if let Some(o) = change.owner {
            t.owner = o;
        }
        if let Some(c) = change.category {
            t.category = Some(c).filter(|c| !c.trim().is_empty());
        }
        let after = super::ticket_json(&t);
        if before == after {
            return Ok(t);
        }
        t.updated_at = self.now;
        self.emit(
            actor,
            DomainEvent::TicketUpdated {
                ticket: t.id,
                before: before.clone(),
                after: after.clone(),
            },
            0,
        );
        self.cs.tickets.push(TicketChange {
            ticket: t.clone(),
            created: false,
            actor: actor.into(),
            change: json!({ "updated": { "before": before, "after": after } }),
        });
        if t.status.is_open() {
            self.ticket = Some(t.clone());
        } else if self.ticket.as_ref().is_some_and(|o| o.id == t.id) {
            self.ticket = None;
        }
        Ok(t)
    }
}
