//! One changeset in one PostgreSQL transaction: state, audit, messages, notes, tickets,
//! jobs, outbox rows, the trace, and the event marked processed.

use super::*;

pub(super) async fn audit_row(
    tx: &mut Transaction<'_, Postgres>,
    at: Millis,
    actor: &str,
    entity: &str,
    action: &str,
    before: &str,
    after: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit (at, actor, entity, action, before, after) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(at)
    .bind(actor)
    .bind(entity)
    .bind(action)
    .bind(before)
    .bind(after)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Writes one changeset inside `tx` (see [`Changeset`]).
pub(super) async fn apply(tx: &mut Transaction<'_, Postgres>, cs: &Changeset) -> Result<()> {
    let at = cs.at;
    if let Some(c) = &cs.contact {
        sqlx::query(
            "UPDATE contacts SET name = $1, phone = $2, language = $3, attributes = $4, language_set_by = $6 WHERE id = $5",
        )
        .bind(&c.name)
        .bind(&c.phone)
        .bind(&c.language)
        .bind(json(&c.attributes))
        .bind(c.id)
        .bind(&c.language_set_by)
        .execute(&mut **tx)
        .await?;
    }
    if let Some(c) = &cs.conversation {
        sqlx::query(
            "UPDATE conversations SET status = $1, queue = $2, assignee = $3, priority = $4, tags = $5, attributes = $6, \
             flow = $7, last_customer_message_at = $8, queued_at = $9, updated_at = $10, sla = $11, asking = $13 WHERE id = $12",
        )
        .bind(c.status.as_str())
        .bind(&c.queue)
        .bind(&c.assignee)
        .bind(c.priority.as_str())
        .bind(json(&c.tags))
        .bind(json(&c.attributes))
        .bind(c.flow.as_ref().map(json))
        .bind(c.last_customer_message_at)
        .bind(c.queued_at)
        .bind(at)
        .bind((!c.sla.is_empty()).then(|| json(&c.sla)))
        .bind(c.id)
        .bind(c.asking.as_ref().map(json))
        .execute(&mut **tx)
        .await?;
    }
    let channel = cs
        .conversation
        .as_ref()
        .map(|c| c.channel.as_str())
        .unwrap_or("");
    // An outbox row, in its lane (see `OutboxItem::destination`).
    async fn outbox(
        tx: &mut Transaction<'_, Postgres>,
        message: Option<i64>,
        conversation: i64,
        item: &OutboxItem,
        at: Millis,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO outbox (message_id, conversation_id, payload, status, next_attempt_at, created_at, updated_at, lane) \
             VALUES ($1, $2, $3, 'pending', $4, $4, $4, $5)",
        )
        .bind(message)
        .bind(conversation)
        .bind(json(item))
        .bind(at)
        .bind(item.destination())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
    for m in &cs.messages {
        let direction = match m.direction {
            Direction::In => "in",
            Direction::Out => "out",
        };
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO messages (conversation_id, channel, direction, kind, body, payload, provider_id, author, status, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
        )
        .bind(cs.conversation_id)
        .bind(channel)
        .bind(direction)
        .bind(&m.kind)
        .bind(&m.body)
        .bind(json(&m.payload))
        .bind(&m.provider_id)
        .bind(&m.author)
        .bind(&m.status)
        .bind(at)
        .fetch_one(&mut **tx)
        .await?;
        if let Some(o) = &m.outbound {
            let item = OutboxItem::Message(Box::new(o.clone()));
            outbox(tx, Some(id), cs.conversation_id, &item, at).await?;
        }
    }
    for (connector, body) in &cs.webhooks {
        let item = OutboxItem::Webhook {
            connector: connector.clone(),
            body: body.clone(),
        };
        outbox(tx, None, cs.conversation_id, &item, at).await?;
    }
    for (author, text) in &cs.notes {
        sqlx::query(
            "INSERT INTO notes (conversation_id, author, text, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(cs.conversation_id)
        .bind(author)
        .bind(text)
        .bind(at)
        .execute(&mut **tx)
        .await?;
    }
    for t in &cs.tickets {
        let k = &t.ticket;
        sqlx::query(
            "INSERT INTO tickets (id, conversation_id, title, category, priority, status, owner, queue, due_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (id) DO UPDATE SET title = excluded.title, category = excluded.category, priority = excluded.priority, \
             status = excluded.status, owner = excluded.owner, queue = excluded.queue, due_at = excluded.due_at, updated_at = excluded.updated_at",
        )
        .bind(k.id)
        .bind(k.conversation_id)
        .bind(&k.title)
        .bind(&k.category)
        .bind(k.priority.as_str())
        .bind(k.status.as_str())
        .bind(&k.owner)
        .bind(&k.queue)
        .bind(k.due_at)
        .bind(k.created_at)
        .bind(k.updated_at)
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "INSERT INTO ticket_events (ticket_id, at, actor, change) VALUES ($1, $2, $3, $4)",
        )
        .bind(k.id)
        .bind(at)
        .bind(&t.actor)
        .bind(json(&t.change))
        .execute(&mut **tx)
        .await?;
    }
    for (kind, name) in &cs.cancel_jobs {
        sqlx::query(
            "UPDATE jobs SET done_at = $1 WHERE conversation_id = $2 AND kind = $3 AND name = $4 AND done_at IS NULL",
        )
        .bind(at)
        .bind(cs.conversation_id)
        .bind(kind.as_str())
        .bind(name)
        .execute(&mut **tx)
        .await?;
    }
    for a in &cs.assigned {
        sqlx::query("UPDATE agents SET last_assigned_at = $1 WHERE id = $2")
            .bind(at)
            .bind(a)
            .execute(&mut **tx)
            .await?;
    }
    for a in &cs.audit {
        audit_row(
            tx,
            a.at,
            &a.actor,
            &a.entity,
            &a.action,
            &json(&a.before),
            &json(&a.after),
        )
        .await?;
    }
    for j in &cs.new_jobs {
        sqlx::query(
            "INSERT INTO jobs (conversation_id, kind, name, due_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(cs.conversation_id)
        .bind(j.kind.as_str())
        .bind(&j.name)
        .bind(j.due_at)
        .execute(&mut **tx)
        .await?;
    }
    if let Some(id) = cs.inbox_id {
        sqlx::query("UPDATE inbox SET processed_at = $1 WHERE id = $2")
            .bind(at)
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    if let Some(id) = cs.job_id {
        sqlx::query("UPDATE jobs SET done_at = $1 WHERE id = $2")
            .bind(at)
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    if let Some((hash, t)) = &cs.trace {
        sqlx::query(
            "INSERT INTO traces (conversation_id, inbox_id, pack_hash, at, trace) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(cs.conversation_id)
        .bind(cs.inbox_id)
        .bind(hash)
        .bind(at)
        .bind(json(&**t))
        .execute(&mut **tx)
        .await?;
    }
    match &cs.schedule {
        Some((name, Some(next))) => {
            sqlx::query("UPDATE schedules SET next_at = $1, last_fired_at = $2 WHERE name = $3")
                .bind(next)
                .bind(at)
                .bind(name)
                .execute(&mut **tx)
                .await?;
        }
        Some((name, None)) => {
            sqlx::query("DELETE FROM schedules WHERE name = $1")
                .bind(name)
                .execute(&mut **tx)
                .await?;
        }
        None => {}
    }
    Ok(())
}
