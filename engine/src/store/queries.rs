//! The admin API's list queries and figures, written once for both stores: what differs by
//! SQL dialect is a [`Dialect`]; the filters, order and paging are the same text.

use serde_json::Value;
use sqlx::{Database, Encode, QueryBuilder, Type};

use crate::store::rows::like_escape;
use crate::store::{AuditQuery, ConversationQuery, TicketQuery};

/// The few SQL snippets the stores write differently.
pub(crate) struct Dialect {
    /// Opens and closes "the conversation `v` has the tag bound between them".
    pub tag: (&'static str, &'static str),
    /// Case-insensitive `LIKE` (SQLite's `LIKE` is, for ASCII).
    pub like: &'static str,
    /// Put before a column so that a broad filter on it does not pick its index (SQLite's
    /// unary `+`): the list then walks the waiting order and stops after one page.
    pub noindex: &'static str,
}

pub(crate) const SQLITE: Dialect = Dialect {
    tag: (
        " AND EXISTS (SELECT 1 FROM json_each(v.tags) t WHERE t.value = ",
        ")",
    ),
    like: "LIKE",
    noindex: "+",
};

pub(crate) const POSTGRES: Dialect = Dialect {
    tag: (" AND v.tags::jsonb ? ", ""),
    like: "ILIKE",
    noindex: "",
};

/// The conversation list ([`ConversationQuery`]): longest waiting first, cursor after
/// `(waiting_since, id)`; rows for [`crate::store::rows::line`].
pub(crate) fn conversations<'a, DB>(d: &Dialect, q: &ConversationQuery) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    String: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    // The page is chosen first; the newest message's preview is read for its rows only.
    let mut b = QueryBuilder::<DB>::new(
        "SELECT x.*, (SELECT substr(body, 1, 280) FROM messages m WHERE m.conversation_id = x.id ORDER BY m.id DESC LIMIT 1) AS last_message \
         FROM (SELECT v.*, c.name AS contact_name, c.phone AS contact_phone, \
           coalesce(v.queued_at, v.created_at) AS waiting_since \
         FROM conversations v JOIN contacts c ON c.id = v.contact_id WHERE 1 = 1",
    );
    if let Some(s) = q.status {
        b.push(" AND v.status = ").push_bind(s.as_str().to_string());
    }
    if let Some(x) = &q.queue {
        b.push(" AND v.queue = ").push_bind(x.clone());
    }
    if let Some(x) = &q.assignee {
        b.push(" AND v.assignee = ").push_bind(x.clone());
    }
    let n = d.noindex;
    if q.unassigned {
        b.push(format!(
            " AND {n}v.assignee IS NULL AND {n}v.queue IS NOT NULL"
        ));
    }
    if let Some(c) = q.contact {
        b.push(" AND v.contact_id = ").push_bind(c);
    }
    if let Some(x) = &q.tag {
        b.push(d.tag.0).push_bind(x.clone()).push(d.tag.1);
    }
    if let Some(p) = q.priority {
        b.push(" AND v.priority = ")
            .push_bind(p.as_str().to_string());
    }
    if let Some(text) = q.q.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        let pattern = format!("%{}%", like_escape(text));
        let like = d.like;
        b.push(format!(" AND (c.name {like} "))
            .push_bind(pattern.clone())
            .push(format!(" ESCAPE '\\' OR c.phone {like} "))
            .push_bind(pattern.clone())
            .push(format!(
                " ESCAPE '\\' OR EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = v.id AND m.body {like} "
            ))
            .push_bind(pattern)
            .push(" ESCAPE '\\'))");
    }
    if let Some((agent, queues)) = &q.visible_to {
        b.push(format!(" AND ({n}v.assignee = "))
            .push_bind(agent.clone());
        for x in queues {
            b.push(format!(" OR {n}v.queue = ")).push_bind(x.clone());
        }
        b.push(")");
    }
    if let Some((since, id)) = q.after {
        b.push(" AND (coalesce(v.queued_at, v.created_at), v.id) > (")
            .push_bind(since)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    b.push(" ORDER BY waiting_since, v.id LIMIT ")
        .push_bind(q.limit)
        .push(") x ORDER BY x.waiting_since, x.id");
    b
}

/// The ticket list ([`TicketQuery`]), newest first.
pub(crate) fn tickets<'a, DB>(q: &TicketQuery) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    String: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut b = QueryBuilder::<DB>::new("SELECT * FROM tickets WHERE 1 = 1");
    if let Some(s) = q.status {
        b.push(" AND status = ").push_bind(s.as_str().to_string());
    }
    for (col, v) in [
        ("queue", &q.queue),
        ("owner", &q.owner),
        ("category", &q.category),
    ] {
        if let Some(x) = v {
            b.push(format!(" AND {col} = ")).push_bind(x.clone());
        }
    }
    if let Some(p) = q.priority {
        b.push(" AND priority = ").push_bind(p.as_str().to_string());
    }
    if let Some(me) = &q.visible_to {
        b.push(" AND (owner = ")
            .push_bind(me.clone())
            .push(" OR conversation_id IN (SELECT id FROM conversations WHERE assignee = ")
            .push_bind(me.clone())
            .push("))");
    }
    if let Some(id) = q.before {
        b.push(" AND id < ").push_bind(id);
    }
    b.push(" ORDER BY id DESC LIMIT ").push_bind(q.limit);
    b
}

/// The audit listing ([`AuditQuery`]), newest first; an entity ending in `:` is a prefix.
pub(crate) fn audit<'a, DB>(q: &AuditQuery) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    String: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut b = QueryBuilder::<DB>::new("SELECT * FROM audit WHERE 1 = 1");
    match q.entity.as_deref() {
        Some(e) if e.ends_with(':') => {
            b.push(" AND entity LIKE ")
                .push_bind(format!("{}%", like_escape(e)))
                .push(" ESCAPE '\\'");
        }
        Some(e) => {
            b.push(" AND entity = ").push_bind(e.to_string());
        }
        None => {}
    }
    for (col, v) in [("actor", &q.actor), ("action", &q.action)] {
        if let Some(x) = v {
            b.push(format!(" AND {col} = ")).push_bind(x.clone());
        }
    }
    if let Some(t) = q.from {
        b.push(" AND at >= ").push_bind(t);
    }
    if let Some(t) = q.to {
        b.push(" AND at < ").push_bind(t);
    }
    if let Some(id) = q.before {
        b.push(" AND id < ").push_bind(id);
    }
    b.push(" ORDER BY id DESC LIMIT ").push_bind(q.limit);
    b
}

/// Open and waiting conversations (`SELECT … FROM conversations`), the same in both dialects.
pub(crate) const OPEN_AND_WAITING: &str =
    "SELECT count(*), count(*) FILTER (WHERE assignee IS NULL AND queue IS NOT NULL) \
     FROM conversations WHERE status <> 'resolved'";

/// Waiting and assigned per queue, the same in both dialects.
pub(crate) const BY_QUEUE: &str =
    "SELECT queue, count(*) FILTER (WHERE assignee IS NULL), count(*) FILTER (WHERE assignee IS NOT NULL) \
     FROM conversations WHERE status <> 'resolved' AND queue IS NOT NULL GROUP BY queue";

/// The `stats` a schedule sees, from the figures above and the open conversations per tag.
pub(crate) fn stats_json(
    (open, waiting): (i64, i64),
    queues: Vec<(String, i64, i64)>,
    tags: Vec<(String, i64)>,
) -> Value {
    let mut q = serde_json::Map::new();
    for (name, w, a) in queues {
        q.insert(name, serde_json::json!({ "waiting": w, "assigned": a }));
    }
    let tags: serde_json::Map<String, Value> =
        tags.into_iter().map(|(t, n)| (t, n.into())).collect();
    let cod = tags.get("cod_unconfirmed").cloned().unwrap_or(0.into());
    serde_json::json!({
        "open": open,
        "waiting": waiting,
        "queues": q,
        "tags": tags,
        "cod_unconfirmed": cod,
    })
}
