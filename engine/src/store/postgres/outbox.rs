//! The outbox on PostgreSQL: due rows by lane, one claim at a time, and each send's outcome
//! with its message (and, for a webhook, the conversation's audit) in one transaction.

use super::*;

impl PgStore {
    pub(super) async fn due_outbox_impl(
        &self,
        now: Millis,
        full: &[String],
        busy: &[(i64, String)],
        limit: i64,
    ) -> Result<Vec<DueRow>> {
        let busy = serde_json::to_string(busy).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let rows = sqlx::query(
            "SELECT o.id, o.conversation_id, o.lane FROM outbox o \
             WHERE o.status = 'pending' AND o.next_attempt_at <= $1 \
             AND NOT (o.lane = ANY($2)) \
             AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements($3::text::jsonb) b \
                             WHERE (b->>0)::bigint = o.conversation_id AND b->>1 = o.lane) \
             AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.conversation_id = o.conversation_id \
                             AND e.lane = o.lane AND e.status = 'pending' AND e.id < o.id) \
             ORDER BY o.id LIMIT $4",
        )
        .bind(now)
        .bind(full)
        .bind(busy)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        all(&rows, |r| {
            Ok(DueRow {
                id: r.try_get("id")?,
                conversation_id: r.try_get("conversation_id")?,
                lane: r.try_get("lane")?,
            })
        })
    }

    pub(super) async fn claim_outbox_impl(
        &self,
        id: i64,
        now: Millis,
    ) -> Result<Option<OutboxRow>> {
        // The row lock makes a second instance's claim wait, then find the row no longer
        // pending: each row is claimed once.
        let r = sqlx::query(
            "UPDATE outbox SET status = 'sending', attempts = attempts + 1, updated_at = $2 \
             WHERE id = $1 AND status = 'pending' AND next_attempt_at <= $2 \
             AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.conversation_id = outbox.conversation_id \
                             AND e.lane = outbox.lane AND e.status = 'pending' AND e.id < outbox.id) \
             RETURNING id, conversation_id, message_id, attempts, payload",
        )
        .bind(id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        r.map(|r| {
            Ok(OutboxRow {
                id: r.try_get("id")?,
                conversation_id: r.try_get("conversation_id")?,
                message_id: r.try_get("message_id")?,
                attempts: r.try_get::<i64, _>("attempts")? as u32,
                item: parse(&r.try_get::<String, _>("payload")?, "outbox payload")?,
            })
        })
        .transpose()
    }

    pub(super) async fn outbox_sent_impl(
        &self,
        id: i64,
        provider_id: &str,
        now: Millis,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE outbox SET status = 'sent', updated_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE messages SET status = 'sent', provider_id = $1 WHERE id = (SELECT message_id FROM outbox WHERE id = $2)",
        )
        .bind(provider_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn outbox_failed_impl(
        &self,
        id: i64,
        error: &str,
        retry_at: Option<Millis>,
        now: Millis,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        match retry_at {
            Some(at) => {
                sqlx::query(
                    "UPDATE outbox SET status = 'pending', next_attempt_at = $1, last_error = $2, updated_at = $3 WHERE id = $4",
                )
                .bind(at)
                .bind(error)
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query(
                    "UPDATE outbox SET status = 'failed', last_error = $1, updated_at = $2 WHERE id = $3",
                )
                .bind(error)
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE messages SET status = 'failed', error = $1 WHERE id = (SELECT message_id FROM outbox WHERE id = $2)",
                )
                .bind(error)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                // A webhook has no message row: its failure goes on the conversation's audit
                // (conversation 0: a schedule's).
                sqlx::query(
                    "INSERT INTO audit (at, actor, entity, action, before, after) \
                     SELECT $1, 'system', CASE conversation_id WHEN 0 THEN 'schedules' ELSE 'conversation:' || conversation_id END, \
                       'webhook_failed', 'null', json_build_object('connector', payload::jsonb ->> 'connector', 'error', $2::text)::text \
                     FROM outbox WHERE id = $3 AND message_id IS NULL",
                )
                .bind(now)
                .bind(error)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn outbox_unknown_impl(
        &self,
        id: i64,
        error: &str,
        now: Millis,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE outbox SET status = 'unknown', last_error = $1, updated_at = $2 WHERE id = $3",
        )
        .bind(error)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE messages SET status = 'unknown', error = $1 WHERE id = (SELECT message_id FROM outbox WHERE id = $2)",
        )
        .bind(error)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn recover_outbox_impl(
        &self,
        now: Millis,
        claimed_before: Millis,
    ) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE messages SET status = 'unknown', error = 'the process stopped while sending; not sent again' \
             WHERE id IN (SELECT message_id FROM outbox WHERE status = 'sending' AND updated_at < $1)",
        )
        .bind(claimed_before)
        .execute(&mut *tx)
        .await?;
        let n = sqlx::query(
            "UPDATE outbox SET status = 'unknown', updated_at = $1 WHERE status = 'sending' AND updated_at < $2",
        )
        .bind(now)
        .bind(claimed_before)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n)
    }
}
