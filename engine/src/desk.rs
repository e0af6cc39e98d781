//! The engine's query facade: what the admin API (and any page built on it) reads and the few
//! records it keeps outside conversations (tokens, agents), as `Engine` methods. Reads of a
//! conversation or a ticket take the [`Actor`] and ask [`crate::access`], so no caller can
//! forget the check; the store itself stays private to the engine.

use serde_json::Value;

use crate::access::{self, Actor, Denied};
use crate::model::*;
use crate::reports::KpiFacts;
use crate::store::NewToken;
use crate::store::{
    AuditQuery, ConversationLine, ConversationQuery, QueueStats, StoreError, TicketQuery,
    TokenRecord,
};
use crate::trace::Trace;
use crate::Engine;

/// Why a read gave nothing.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A conversation with everything a person working it reads.
#[derive(Debug, Clone, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConversationDetail {
    /// Status, queue, owner, priority, tags, attributes and flow state.
    pub conversation: Conversation,
    pub contact: Option<Contact>,
    /// Both directions, with delivery status and author.
    pub messages: Vec<Message>,
    /// Internal notes: never sent.
    pub notes: Vec<Note>,
    pub tickets: Vec<Ticket>,
    /// Whether the channel's service window is open (WhatsApp: 24 hours from the customer's
    /// last message): free text allowed.
    pub window_open: bool,
    /// The pack's approved templates: what can be sent when the window is closed.
    pub templates: Vec<String>,
}

/// The customer panel: who they are, their other conversations, their orders.
#[derive(Debug, Clone, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CustomerView {
    pub contact: Option<Contact>,
    /// Their other conversations the caller may see, newest first.
    pub conversations: Vec<ConversationLine>,
    /// The store connector asked for orders, if the pack has one.
    pub store: Option<String>,
    /// Their orders as the store gives them (`name`, `status`, `courier`, `tracking_url`,
    /// `payment`, …), newest first.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub orders: Vec<Value>,
    /// Why the orders could not be read (the store unavailable).
    pub orders_error: Option<String>,
}

type R<T> = Result<T, StoreError>;

impl Engine {
    /// Inbound events received at or after `since`, after inbox id `after` (a shadow pack
    /// reads what the live one decided on).
    pub async fn inbox_since(
        &self,
        since: Millis,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Millis, crate::model::Inbound)>, crate::store::StoreError> {
        self.store.inbox_since(since, after, limit).await
    }

    /// The queues an agent belongs to (none for a caller who is no agent).
    pub async fn queues_of(&self, a: &Actor) -> R<Vec<String>> {
        Ok(match &a.agent {
            Some(me) => self
                .store
                .agent(me)
                .await?
                .map(|x| x.queues)
                .unwrap_or_default(),
            None => Vec::new(),
        })
    }

    /// The conversation, if `a` may see it.
    pub async fn conversation_for(&self, a: &Actor, id: i64) -> Result<Conversation, Refused> {
        let conv = self
            .store
            .conversation(id)
            .await?
            .ok_or_else(|| Refused::NotFound(format!("no conversation {id}")))?;
        let queues = if a.oversees() {
            Vec::new()
        } else {
            self.queues_of(a).await?
        };
        access::see_conversation(a, &conv, &queues)?;
        Ok(conv)
    }

    /// The conversation with its contact, messages, notes and tickets, if `a` may see it.
    pub async fn conversation_view(
        &self,
        a: &Actor,
        id: i64,
        now: Millis,
    ) -> Result<ConversationDetail, Refused> {
        let conversation = self.conversation_for(a, id).await?;
        Ok(ConversationDetail {
            contact: self.store.contact(conversation.contact_id).await?,
            messages: self.store.messages(id).await?,
            notes: self.store.notes(id).await?,
            tickets: self.store.tickets(id).await?,
            window_open: self.window_open(&conversation, now),
            templates: crate::pipeline::approved_templates(&self.pack()),
            conversation,
        })
    }

    /// The customer of a conversation `a` may see: their other conversations `a` may see
    /// (newest first), and their orders from the pack's store connector (the first `shopify`,
    /// `static` or `demo` one) by their phone, newest first.
    pub async fn customer_for(&self, a: &Actor, id: i64) -> Result<CustomerView, Refused> {
        let conv = self.conversation_for(a, id).await?;
        let contact = self.store.contact(conv.contact_id).await?;
        let mut others = self
            .conversations_for(
                a,
                ConversationQuery {
                    contact: Some(conv.contact_id),
                    limit: 50,
                    ..Default::default()
                },
            )
            .await?;
        others.retain(|l| l.conversation.id != id);
        others.sort_by_key(|l| std::cmp::Reverse(l.conversation.created_at));
        let pack = self.pack();
        let store = pack.connectors.iter().find_map(|(name, c)| {
            matches!(
                c,
                switchyard_rules::pack::ConnectorRt::Shopify { .. }
                    | switchyard_rules::pack::ConnectorRt::Static { .. }
                    | switchyard_rules::pack::ConnectorRt::Demo
            )
            .then(|| name.clone())
        });
        let phone = contact.as_ref().and_then(|c| c.phone.clone());
        let (orders, orders_error) = match (&store, &phone) {
            (Some(name), Some(phone)) => match self
                .lookup()
                .call(
                    name,
                    switchyard_rules::pack::LookupAction::FindOrders,
                    &Value::String(phone.clone()),
                    None,
                )
                .await
            {
                Ok(Some(Value::Array(v))) => (v, None),
                Ok(_) => (Vec::new(), None),
                Err(e) => (Vec::new(), Some(e.to_string())),
            },
            _ => (Vec::new(), None),
        };
        Ok(CustomerView {
            contact,
            conversations: others,
            store,
            orders,
            orders_error,
        })
    }

    /// The media of one of the conversation's messages, if `a` may see the conversation.
    pub async fn media_for(
        &self,
        a: &Actor,
        conversation: i64,
        message: i64,
    ) -> Result<MediaRecord, Refused> {
        self.conversation_for(a, conversation).await?;
        self.store
            .media(message)
            .await?
            .filter(|m| m.conversation_id == conversation)
            .ok_or_else(|| {
                Refused::NotFound(format!(
                    "no media of message {message} in conversation {conversation} (not a media message, or not fetched yet)"
                ))
            })
    }

    /// The decision traces of a conversation `a` may see, oldest first, with the hash of the
    /// pack that decided each.
    pub async fn traces_for(&self, a: &Actor, id: i64) -> Result<Vec<(String, Trace)>, Refused> {
        self.conversation_for(a, id).await?;
        Ok(self.traces(id).await?)
    }

    /// The decision traces of a conversation, oldest first (for the CLI and tests).
    pub async fn traces(&self, id: i64) -> R<Vec<(String, Trace)>> {
        Ok(self
            .store
            .traces(id)
            .await?
            .into_iter()
            .map(|(hash, t)| (hash, Trace::read(&t)))
            .collect())
    }

    /// The conversation list, narrowed to what `a` may see.
    pub async fn conversations_for(
        &self,
        a: &Actor,
        mut q: ConversationQuery,
    ) -> R<Vec<ConversationLine>> {
        let queues = if a.oversees() {
            Vec::new()
        } else {
            self.queues_of(a).await?
        };
        q.visible_to = access::conversation_scope(a, queues);
        self.store.list_conversations(&q).await
    }

    /// The ticket, if `a` may see it.
    pub async fn ticket_for(&self, a: &Actor, id: i64) -> Result<Ticket, Refused> {
        let t = self
            .store
            .ticket(id)
            .await?
            .ok_or_else(|| Refused::NotFound(format!("no ticket {id}")))?;
        let owner = self
            .store
            .conversation(t.conversation_id)
            .await?
            .and_then(|c| c.assignee);
        access::see_ticket(a, &t, owner.as_deref())?;
        Ok(t)
    }

    /// Tickets, narrowed to what `a` may see: an agent's own and those of the conversations
    /// they own (an agent asking for another's is refused).
    pub async fn tickets_for(&self, a: &Actor, mut q: TicketQuery) -> Result<Vec<Ticket>, Refused> {
        (q.owner, q.visible_to) = access::ticket_filter(a, q.owner)?;
        Ok(self.store.list_tickets(&q).await?)
    }

    pub async fn ticket_history(&self, id: i64) -> R<Vec<Value>> {
        self.store.ticket_history(id).await
    }

    /// The open ticket of a conversation, if any.
    pub async fn open_ticket(&self, conversation_id: i64) -> R<Option<Ticket>> {
        self.store.open_ticket(conversation_id).await
    }

    pub async fn audit_records(&self, q: &AuditQuery) -> R<Vec<(i64, AuditRecord)>> {
        self.store.list_audit(q).await
    }

    pub async fn kpi_facts(&self, from: Millis, to: Millis, queue: Option<&str>) -> R<KpiFacts> {
        self.store.kpi_facts(from, to, queue).await
    }

    /// Unprocessed inbox events and outbox rows by status.
    pub async fn backlog(&self) -> R<(i64, Vec<(String, i64)>)> {
        self.store.backlog().await
    }

    /// Records a delivery status of a sent message (forward only).
    pub async fn record_status(
        &self,
        channel: &str,
        provider_id: &str,
        status: &str,
        error: Option<&str>,
        now: Millis,
    ) -> R<crate::store::StatusRecorded> {
        self.store
            .record_status(channel, provider_id, status, error, now)
            .await
    }

    /// Commits events to the inbox (what a webhook acknowledges), for drivers that process
    /// in-process (the pack test runner, the CLI, tests).
    pub async fn ingest(
        &self,
        events: Vec<Inbound>,
        now: Millis,
    ) -> R<Vec<crate::store::Ingested>> {
        self.store.ingest(events, now).await
    }

    /// Unprocessed inbox events, oldest first.
    pub async fn pending_events(&self, limit: i64) -> R<Vec<InboxRow>> {
        self.store.pending_inbox(0, limit).await
    }

    /// Whether everything received is processed and nothing waits to be sent.
    pub async fn settled(&self) -> R<bool> {
        Ok(self.store.pending_inbox(0, 1).await?.is_empty()
            && !self
                .store
                .outbox_payloads()
                .await?
                .iter()
                .any(|(s, _)| s == "pending" || s == "sending"))
    }

    /// A customer's conversation on a channel with its contact and open ticket (created when
    /// new, as a first message would).
    pub async fn context_of(
        &self,
        channel: &str,
        customer: &str,
        now: Millis,
    ) -> R<crate::store::Context> {
        self.store
            .load_context(channel, customer, None, None, now)
            .await
    }

    /// Whether the database answers (one cheap read).
    pub async fn ping(&self) -> R<()> {
        self.store.pending_inbox(i64::MAX, 1).await.map(|_| ())
    }

    pub async fn queue_stats(&self, queues: &[String]) -> R<Vec<QueueStats>> {
        self.store.queue_stats(queues).await
    }

    pub async fn agent(&self, id: &str) -> R<Option<Agent>> {
        self.store.agent(id).await
    }

    pub async fn agents(&self) -> R<Vec<Agent>> {
        self.store.agents().await
    }

    pub async fn token(&self, hash: &str) -> R<Option<TokenRecord>> {
        self.store.token(hash).await
    }

    /// Stores an API token by its hash, audited as `actor`; returns its id.
    pub async fn create_token(
        &self,
        hash: &str,
        role: access::Role,
        agent: Option<&str>,
        actor: &str,
        now: Millis,
    ) -> R<i64> {
        let t = NewToken {
            hash,
            role: role.as_str(),
            agent,
            kind: "api",
            expires_at: None,
        };
        self.store.create_token(&t, actor, now).await
    }

    /// Stores an agent's browser session (by its hash) until `expires_at`, with the agent's
    /// role; audited as the agent. `None` when there is no such agent.
    pub async fn create_session(
        &self,
        agent: &str,
        hash: &str,
        expires_at: Millis,
        now: Millis,
    ) -> R<Option<(i64, access::Role)>> {
        let Some(a) = self.store.agent(agent).await? else {
            return Ok(None);
        };
        let role = access::Role::parse(&a.role).unwrap_or(access::Role::Agent);
        let t = NewToken {
            hash,
            role: role.as_str(),
            agent: Some(agent),
            kind: "session",
            expires_at: Some(expires_at),
        };
        Ok(Some((self.store.create_token(&t, agent, now).await?, role)))
    }

    /// Sets or clears an agent's password hash (a PHC string), audited as `actor`; `false`
    /// when there is no such agent.
    pub async fn set_password(
        &self,
        agent: &str,
        hash: Option<&str>,
        actor: &str,
        now: Millis,
    ) -> R<bool> {
        self.store.set_password(agent, hash, actor, now).await
    }

    /// An agent's password hash, if one is set.
    pub async fn password_hash(&self, agent: &str) -> R<Option<String>> {
        self.store.password_hash(agent).await
    }

    /// Revokes a token, audited as `actor`; `false` when there is no such live token.
    pub async fn revoke_token(&self, id: i64, actor: &str, now: Millis) -> R<bool> {
        self.store.revoke_token(id, actor, now).await
    }
}
