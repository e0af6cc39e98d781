//! Who may see and change what: the one place that decides. The admin API, the live feed and
//! [`crate::Engine::act`] ask here; none of them compares roles or owners itself.
//!
//! The rules: supervisors and admins see and change everything (admin-only operations — tokens,
//! the rule pack, agents' records — need [`Role::Admin`]); an agent sees the conversations they
//! own and those in their queues, acts on the conversations they own (claiming is how they
//! come to own one), and sees and works the tickets they own.

use serde::{Deserialize, Serialize};

use crate::model::{Conversation, Ticket};

/// What a token or a session may do; ordered, so `role >= Role::Supervisor` reads as
/// "at least a supervisor".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Role {
    Agent,
    Supervisor,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Supervisor => "supervisor",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "agent" => Some(Role::Agent),
            "supervisor" => Some(Role::Supervisor),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Someone acting on the workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The actor of audit records: an agent id, `token:<id>` or `admin-token`.
    pub id: String,
    pub role: Role,
    /// The agent the caller acts as, if any.
    pub agent: Option<String>,
}

impl Actor {
    /// Whether the actor sees and changes every conversation and ticket.
    pub fn oversees(&self) -> bool {
        self.role >= Role::Supervisor
    }

    fn is(&self, agent: Option<&str>) -> bool {
        self.agent.is_some() && self.agent.as_deref() == agent
    }
}

/// Why something is not allowed. The message is what the caller is told (403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("this needs the {} role; the token is {}", need.as_str(), have.as_str())]
    Role { need: Role, have: Role },
    #[error("conversation {id} is neither yours nor in one of your queues")]
    NotVisible { id: i64 },
    #[error("conversation {id} is not yours{}", owner.as_deref().map(|o| format!(" (owner: {o})")).unwrap_or_else(|| " (claim it first)".into()))]
    NotOwner { id: i64, owner: Option<String> },
    #[error("ticket {id} is neither yours nor on a conversation you own")]
    TicketNotYours { id: i64 },
    #[error("only a supervisor gives a ticket to someone else")]
    TicketOwner,
    #[error("owner: agents see their own tickets only")]
    OthersTickets,
}

/// What a conversation action needs of its actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActKind {
    /// Taking an unowned conversation: any agent (whether it is free is the engine's check).
    Claim,
    /// Changing a ticket: decided per ticket by [`change_ticket`].
    Ticket,
    /// Everything else: the owner, or someone who oversees.
    Owned,
}

pub fn require(a: &Actor, need: Role) -> Result<(), Denied> {
    if a.role >= need {
        Ok(())
    } else {
        Err(Denied::Role { need, have: a.role })
    }
}

/// Whether `a` may see the conversation; `my_queues` are the agent's queues.
pub fn see_conversation(a: &Actor, c: &Conversation, my_queues: &[String]) -> Result<(), Denied> {
    if a.oversees() || a.is(c.assignee.as_deref()) {
        return Ok(());
    }
    match &c.queue {
        Some(q) if a.agent.is_some() && my_queues.contains(q) => Ok(()),
        _ => Err(Denied::NotVisible { id: c.id }),
    }
}

/// Whether `a` may act on conversation `id`, owned by `owner`.
pub fn act_on_conversation(
    a: &Actor,
    id: i64,
    owner: Option<&str>,
    kind: ActKind,
) -> Result<(), Denied> {
    if a.oversees() || kind != ActKind::Owned || a.is(owner) {
        Ok(())
    } else {
        Err(Denied::NotOwner {
            id,
            owner: owner.map(String::from),
        })
    }
}

/// The conversations a list shows `a`: `None` all; `Some((agent, queues))` those the agent owns
/// or that wait in their queues (an agent token without an agent sees none).
pub fn conversation_scope(a: &Actor, my_queues: Vec<String>) -> Option<(String, Vec<String>)> {
    if a.oversees() {
        return None;
    }
    match &a.agent {
        Some(me) => Some((me.clone(), my_queues)),
        None => Some((String::new(), Vec::new())),
    }
}

/// Whether a live-feed event about a conversation now in `queue` and owned by `assignee`
/// goes to `a`. An assignment is news for its new owner (and those who oversee), not for the
/// rest of the queue.
pub fn see_feed(
    a: &Actor,
    queue: Option<&str>,
    assignee: Option<&str>,
    assignment: bool,
    my_queues: &[String],
) -> bool {
    a.oversees()
        || a.is(assignee)
        || (!assignment
            && a.agent.is_some()
            && queue.is_some_and(|q| my_queues.iter().any(|m| m == q)))
}

pub fn see_ticket(a: &Actor, t: &Ticket, conversation_owner: Option<&str>) -> Result<(), Denied> {
    if a.oversees() || a.is(t.owner.as_deref()) || a.is(conversation_owner) {
        Ok(())
    } else {
        Err(Denied::TicketNotYours { id: t.id })
    }
}

/// Whether `a` may change the ticket; `new_owner` is the change's owner, when it sets one.
pub fn change_ticket(
    a: &Actor,
    t: &Ticket,
    conversation_owner: Option<&str>,
    new_owner: Option<&Option<String>>,
) -> Result<(), Denied> {
    see_ticket(a, t, conversation_owner)?;
    if !a.oversees() && new_owner.is_some_and(|o| *o != t.owner) {
        return Err(Denied::TicketOwner);
    }
    Ok(())
}

/// How a ticket list is narrowed: `(owner, visible_to)`. Those who oversee get what they
/// asked for; an agent gets the tickets they own or whose conversation they own (`visible_to`),
/// optionally only their own (asking for another's is refused).
pub fn ticket_filter(
    a: &Actor,
    asked: Option<String>,
) -> Result<(Option<String>, Option<String>), Denied> {
    if a.oversees() {
        return Ok((asked, None));
    }
    let me = a.agent.clone().unwrap_or_default();
    match asked {
        Some(o) if o != me => Err(Denied::OthersTickets),
        asked => Ok((asked, Some(me))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Priority, TicketStatus};

    fn actor(role: Role, agent: Option<&str>) -> Actor {
        Actor {
            id: agent.unwrap_or("token:1").into(),
            role,
            agent: agent.map(String::from),
        }
    }

    fn conv(queue: Option<&str>, assignee: Option<&str>) -> Conversation {
        Conversation::for_tests(7, queue, assignee)
    }

    #[test]
    fn agents_see_theirs_and_their_queues_and_act_on_theirs() {
        let ayesha = actor(Role::Agent, Some("ayesha"));
        let queues = vec!["support".to_string()];
        assert!(see_conversation(&ayesha, &conv(Some("support"), None), &queues).is_ok());
        assert!(see_conversation(&ayesha, &conv(Some("cod"), Some("ayesha")), &[]).is_ok());
        assert_eq!(
            see_conversation(&ayesha, &conv(Some("cod"), Some("bilal")), &queues),
            Err(Denied::NotVisible { id: 7 })
        );
        // An agent token without an agent owns nothing, even an unowned conversation.
        let nobody = actor(Role::Agent, None);
        assert!(see_conversation(&nobody, &conv(None, None), &[]).is_err());
        assert!(act_on_conversation(&nobody, 7, None, ActKind::Owned).is_err());
        let e = act_on_conversation(&ayesha, 7, Some("bilal"), ActKind::Owned).unwrap_err();
        assert_eq!(e.to_string(), "conversation 7 is not yours (owner: bilal)");
        assert!(act_on_conversation(&ayesha, 7, Some("bilal"), ActKind::Claim).is_ok());
        let sup = actor(Role::Supervisor, None);
        assert!(act_on_conversation(&sup, 7, Some("bilal"), ActKind::Owned).is_ok());
        assert!(see_feed(&ayesha, Some("support"), None, false, &queues));
        assert!(!see_feed(
            &ayesha,
            Some("support"),
            Some("bilal"),
            true,
            &queues
        ));
        assert!(!see_feed(
            &ayesha,
            Some("cod"),
            Some("bilal"),
            false,
            &queues
        ));
        assert_eq!(
            require(&ayesha, Role::Supervisor).unwrap_err().to_string(),
            "this needs the supervisor role; the token is agent"
        );
        assert_eq!(
            ticket_filter(&ayesha, Some("bilal".into())),
            Err(Denied::OthersTickets)
        );
        assert_eq!(
            ticket_filter(&ayesha, None),
            Ok((None, Some("ayesha".into())))
        );
        assert_eq!(ticket_filter(&sup, None), Ok((None, None)));
        // A ticket nobody owns, on a conversation ayesha owns: hers to see and work.
        let t = Ticket {
            id: 3,
            conversation_id: 7,
            title: "Damaged parcel".into(),
            category: None,
            priority: Priority::High,
            status: TicketStatus::Open,
            owner: None,
            queue: Some("complaints".into()),
            due_at: None,
            created_at: 0,
            updated_at: 0,
        };
        assert!(see_ticket(&ayesha, &t, Some("ayesha")).is_ok());
        assert!(change_ticket(&ayesha, &t, Some("ayesha"), None).is_ok());
        assert!(see_ticket(&ayesha, &t, Some("bilal")).is_err());
        assert!(change_ticket(&ayesha, &t, Some("ayesha"), Some(&Some("bilal".into()))).is_err());
    }
}
