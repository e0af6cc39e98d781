//! Rows to model values, for both stores: the mappers are written once over [`Cols`], which
//! SQLite's and PostgreSQL's rows implement. JSON columns are text in both schemas.

use sqlx::Row;

use crate::model::*;
use crate::store::{Context, Result, StoreError};

/// The column reads the mappers need.
pub(crate) trait Cols {
    fn text(&self, c: &str) -> Result<String>;
    fn opt_text(&self, c: &str) -> Result<Option<String>>;
    fn int(&self, c: &str) -> Result<i64>;
    fn opt_int(&self, c: &str) -> Result<Option<i64>>;
    fn flag(&self, c: &str) -> Result<bool>;
}

macro_rules! cols {
    ($row:ty) => {
        impl Cols for $row {
            fn text(&self, c: &str) -> Result<String> {
                Ok(self.try_get(c)?)
            }
            fn opt_text(&self, c: &str) -> Result<Option<String>> {
                Ok(self.try_get(c)?)
            }
            fn int(&self, c: &str) -> Result<i64> {
                Ok(self.try_get(c)?)
            }
            fn opt_int(&self, c: &str) -> Result<Option<i64>> {
                Ok(self.try_get(c)?)
            }
            fn flag(&self, c: &str) -> Result<bool> {
                Ok(self.try_get(c)?)
            }
        }
    };
}
cols!(sqlx::sqlite::SqliteRow);
cols!(sqlx::postgres::PgRow);

pub(crate) fn parse<T: serde::de::DeserializeOwned>(s: &str, what: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// A closed set's value as stored (`open`, `urgent` …); anything else is corrupt data.
fn name<T: std::str::FromStr<Err = switchyard_rules::config::UnknownName>>(s: &str) -> Result<T> {
    s.parse()
        .map_err(|e: switchyard_rules::config::UnknownName| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// A contact from columns named `{p}id`, `{p}channel`, …
pub(crate) fn contact(r: &impl Cols, p: &str) -> Result<Contact> {
    let c = |n: &str| format!("{p}{n}");
    Ok(Contact {
        id: r.int(&c("id"))?,
        channel: r.text(&c("channel"))?,
        external_id: r.text(&c("external_id"))?,
        name: r.opt_text(&c("name"))?,
        phone: r.opt_text(&c("phone"))?,
        language: r.opt_text(&c("language"))?,
        language_set_by: r.opt_text(&c("language_set_by"))?,
        attributes: parse(&r.text(&c("attributes"))?, "contact attributes")?,
    })
}

pub(crate) fn conversation(r: &impl Cols) -> Result<Conversation> {
    Ok(Conversation {
        id: r.int("id")?,
        contact_id: r.int("contact_id")?,
        channel: r.text("channel")?,
        status: name(&r.text("status")?)?,
        queue: r.opt_text("queue")?,
        assignee: r.opt_text("assignee")?,
        priority: name(&r.text("priority")?)?,
        tags: parse(&r.text("tags")?, "tags")?,
        attributes: parse(&r.text("attributes")?, "attributes")?,
        flow: r
            .opt_text("flow")?
            .map(|f| parse(&f, "flow state"))
            .transpose()?,
        asking: r
            .opt_text("asking")?
            .map(|a| parse(&a, "question asked"))
            .transpose()?,
        last_customer_message_at: r.opt_int("last_customer_message_at")?,
        queued_at: r.opt_int("queued_at")?,
        sla: r
            .opt_text("sla")?
            .map(|s| parse(&s, "SLA clocks"))
            .transpose()?
            .unwrap_or_default(),
        created_at: r.int("created_at")?,
        updated_at: r.int("updated_at")?,
    })
}

pub(crate) fn agent(r: &impl Cols) -> Result<Agent> {
    Ok(Agent {
        id: r.text("id")?,
        name: r.text("name")?,
        role: r.text("role")?,
        queues: parse(&r.text("queues")?, "agent queues")?,
        capacity: r.int("capacity")? as u32,
        availability: r.text("availability")?,
        shift: r.opt_text("shift")?,
    })
}

pub(crate) fn audit(r: &impl Cols) -> Result<AuditRecord> {
    Ok(AuditRecord {
        at: r.int("at")?,
        actor: r.text("actor")?,
        entity: r.text("entity")?,
        action: r.text("action")?,
        before: parse(&r.text("before")?, "audit")?,
        after: parse(&r.text("after")?, "audit")?,
    })
}

/// A ticket from columns named `{p}id`, `{p}conversation_id`, …
pub(crate) fn ticket(r: &impl Cols, p: &str) -> Result<Ticket> {
    let c = |n: &str| format!("{p}{n}");
    Ok(Ticket {
        id: r.int(&c("id"))?,
        conversation_id: r.int(&c("conversation_id"))?,
        title: r.text(&c("title"))?,
        category: r.opt_text(&c("category"))?,
        priority: name(&r.text(&c("priority"))?)?,
        status: name(&r.text(&c("status"))?)?,
        owner: r.opt_text(&c("owner"))?,
        queue: r.opt_text(&c("queue"))?,
        due_at: r.opt_int(&c("due_at"))?,
        created_at: r.int(&c("created_at"))?,
        updated_at: r.int(&c("updated_at"))?,
    })
}

/// Conversation, contact and open ticket in one row (append `WHERE …`).
pub(crate) const CONTEXT_SELECT: &str = "SELECT v.*, \
    c.id AS c_id, c.channel AS c_channel, c.external_id AS c_external_id, c.name AS c_name, c.phone AS c_phone, \
    c.language AS c_language, c.language_set_by AS c_language_set_by, c.attributes AS c_attributes, \
    t.id AS t_id, t.conversation_id AS t_conversation_id, t.title AS t_title, t.category AS t_category, \
    t.priority AS t_priority, t.status AS t_status, t.owner AS t_owner, t.queue AS t_queue, t.due_at AS t_due_at, \
    t.created_at AS t_created_at, t.updated_at AS t_updated_at \
    FROM conversations v JOIN contacts c ON c.id = v.contact_id \
    LEFT JOIN tickets t ON t.id = (SELECT id FROM tickets WHERE conversation_id = v.id AND status IN ('open', 'pending') ORDER BY id DESC LIMIT 1) ";

pub(crate) fn context(r: &impl Cols) -> Result<Context> {
    let ticket = match r.opt_int("t_id")? {
        Some(_) => Some(ticket(r, "t_")?),
        None => None,
    };
    Ok(Context {
        contact: contact(r, "c_")?,
        conversation: conversation(r)?,
        created: false,
        ticket,
    })
}

pub(crate) fn message(r: &impl Cols) -> Result<Message> {
    Ok(Message {
        id: r.int("id")?,
        conversation_id: r.int("conversation_id")?,
        direction: if r.text("direction")? == "in" {
            Direction::In
        } else {
            Direction::Out
        },
        kind: r.text("kind")?,
        body: r.text("body")?,
        payload: parse(&r.text("payload")?, "message payload")?,
        provider_id: r.opt_text("provider_id")?,
        author: r.text("author")?,
        status: r.text("status")?,
        error: r.opt_text("error")?,
        created_at: r.int("created_at")?,
    })
}

pub(crate) fn note(r: &impl Cols) -> Result<Note> {
    Ok(Note {
        id: r.int("id")?,
        conversation_id: r.int("conversation_id")?,
        author: r.text("author")?,
        text: r.text("text")?,
        created_at: r.int("created_at")?,
    })
}

pub(crate) fn job(r: &impl Cols) -> Result<Job> {
    Ok(Job {
        id: r.int("id")?,
        conversation_id: r.int("conversation_id")?,
        kind: JobKind::parse(&r.text("kind")?),
        name: r.text("name")?,
        due_at: r.int("due_at")?,
    })
}

pub(crate) fn inbox(r: &impl Cols) -> Result<InboxRow> {
    Ok(InboxRow {
        id: r.int("id")?,
        key: r.text("key")?,
        event: parse(&r.text("event")?, "inbox event")?,
    })
}

pub(crate) fn line(r: &impl Cols) -> Result<crate::store::ConversationLine> {
    Ok(crate::store::ConversationLine {
        conversation: conversation(r)?,
        contact_name: r.opt_text("contact_name")?,
        contact_phone: r.opt_text("contact_phone")?,
        waiting_since: r.int("waiting_since")?,
        last_message: r.opt_text("last_message")?,
    })
}

/// `text` for a `LIKE … ESCAPE '\'` pattern.
pub(crate) fn like_escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// A row of the KPI query (`id`, `created_at`, `queued_at`, `human_at`, `resolved_at`,
/// `assigned`).
pub(crate) fn conversation_facts(r: &impl Cols) -> Result<crate::reports::ConversationFacts> {
    Ok(crate::reports::ConversationFacts {
        id: r.int("id")?,
        created_at: r.int("created_at")?,
        queued_at: r.opt_int("queued_at")?,
        first_human_reply_at: r.opt_int("human_at")?,
        resolved_at: r.opt_int("resolved_at")?,
        assigned: r.flag("assigned")?,
    })
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Db(e.to_string())
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migrate(e.to_string())
    }
}
