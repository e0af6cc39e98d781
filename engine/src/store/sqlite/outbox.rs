//! The outbox on SQLite: due rows by lane, one claim at a time, each send's outcome with its
//! message (and, for a webhook, the conversation's audit) in one write; delivery statuses.

use super::*;

impl SqliteStore {
    pub(super) async fn due_outbox_impl(
        &self,
        now: Millis,
        full: &[String],
        busy: &[(i64, String)],
        limit: i64,
    ) -> Result<Vec<DueRow>> {
        let rows = sqlx::query(
            "SELECT o.id, o.conversation_id, o.lane FROM outbox o \
             WHERE o.status = 'pending' AND o.next_attempt_at <= $1 \
             AND o.lane NOT IN (SELECT value FROM json_each($2)) \
             AND NOT EXISTS (SELECT 1 FROM json_each($3) b WHERE json_extract(b.value, '$[0]') = o.conversation_id \
                             AND json_extract(b.value, '$[1]') = o.lane) \
             AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.conversation_id = o.conversation_id \
                             AND e.lane = o.lane AND e.status = 'pending' AND e.id < o.id) \
             ORDER BY o.id LIMIT $4",
        )
        .bind(now)
        .bind(serde_json::to_string(full).map_err(|e| StoreError::Corrupt(e.to_string()))?)
        .bind(serde_json::to_string(busy).map_err(|e| StoreError::Corrupt(e.to_string()))?)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DueRow {
                    id: r.try_get("id")?,
                    conversation_id: r.try_get("conversation_id")?,
                    lane: r.try_get("lane")?,
                })
            })
            .collect()
    }

    pub(super) async fn claim_outbox_impl(
        &self,
        id: i64,
        now: Millis,
    ) -> Result<Option<OutboxRow>> {
        let row: Option<(i64, i64, Option<i64>, i64, String)> = self
            .write(move |tx| {
                let mut st = tx.prepare_cached(
                    "UPDATE outbox SET status = 'sending', attempts = attempts + 1, updated_at = ?2 \
                     WHERE id = ?1 AND status = 'pending' AND next_attempt_at <= ?2 \
                     AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.conversation_id = outbox.conversation_id \
                                     AND e.lane = outbox.lane AND e.status = 'pending' AND e.id < outbox.id) \
                     RETURNING id, conversation_id, message_id, attempts, payload",
                )?;
                let mut rows = st.query_map(params![id, now], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })?;
                Ok(rows.next().transpose()?)
            })
            .await?;
        row.map(|(id, conversation_id, message_id, attempts, payload)| {
            Ok(OutboxRow {
                id,
                conversation_id,
                message_id,
                attempts: attempts as u32,
                item: parse(&payload, "outbox payload")?,
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
        let provider_id = provider_id.to_string();
        self.write(move |tx| {
            tx.execute("UPDATE outbox SET status = 'sent', updated_at = ?1 WHERE id = ?2", params![now, id])?;
            tx.execute(
                "UPDATE messages SET status = 'sent', provider_id = ?1 WHERE id = (SELECT message_id FROM outbox WHERE id = ?2)",
                params![provider_id, id],
            )?;
            Ok(())
        })
        .await
    }

    pub(super) async fn outbox_failed_impl(
        &self,
        id: i64,
        error: &str,
        retry_at: Option<Millis>,
        now: Millis,
    ) -> Result<()> {
        let error = error.to_string();
        self.write(move |tx| {
            match retry_at {
                Some(at) => {
                    tx.execute(
                        "UPDATE outbox SET status = 'pending', next_attempt_at = ?1, last_error = ?2, updated_at = ?3 WHERE id = ?4",
                        params![at, error, now, id],
                    )?;
                }
                None => {
                    tx.execute(
                        "UPDATE outbox SET status = 'failed', last_error = ?1, updated_at = ?2 WHERE id = ?3",
                        params![error, now, id],
                    )?;
                    tx.execute(
                        "UPDATE messages SET status = 'failed', error = ?1 WHERE id = (SELECT message_id FROM outbox WHERE id = ?2)",
                        params![error, id],
                    )?;
                    // A webhook has no message row: its failure goes on the conversation's
                    // audit (conversation 0: a schedule's).
                    tx.execute(
                        "INSERT INTO audit (at, actor, entity, action, before, after) \
                         SELECT ?1, 'system', CASE conversation_id WHEN 0 THEN 'schedules' ELSE 'conversation:' || conversation_id END, \
                           'webhook_failed', 'null', json_object('connector', json_extract(payload, '$.connector'), 'error', ?2) \
                         FROM outbox WHERE id = ?3 AND message_id IS NULL",
                        params![now, error, id],
                    )?;
                }
            }
            Ok(())
        })
        .await
    }

    pub(super) async fn outbox_unknown_impl(
        &self,
        id: i64,
        error: &str,
        now: Millis,
    ) -> Result<()> {
        let error = error.to_string();
        self.write(move |tx| {
            tx.execute(
                "UPDATE outbox SET status = 'unknown', last_error = ?1, updated_at = ?2 WHERE id = ?3",
                params![error, now, id],
            )?;
            tx.execute(
                "UPDATE messages SET status = 'unknown', error = ?1 WHERE id = (SELECT message_id FROM outbox WHERE id = ?2)",
                params![error, id],
            )?;
            Ok(())
        })
        .await
    }

    pub(super) async fn recover_outbox_impl(
        &self,
        now: Millis,
        claimed_before: Millis,
    ) -> Result<u64> {
        self.write(move |tx| {
            tx.execute(
                "UPDATE messages SET status = 'unknown', error = 'the process stopped while sending; not sent again' \
                 WHERE id IN (SELECT message_id FROM outbox WHERE status = 'sending' AND updated_at < ?1)",
                params![claimed_before],
            )?;
            let n = tx.execute(
                "UPDATE outbox SET status = 'unknown', updated_at = ?1 WHERE status = 'sending' AND updated_at < ?2",
                params![now, claimed_before],
            )?;
            Ok(n as u64)
        })
        .await
    }

    pub(super) async fn record_status_impl(
        &self,
        channel: &str,
        provider_id: &str,
        status: &str,
        error: Option<&str>,
        now: Millis,
    ) -> Result<StatusRecorded> {
        // How far a message has come; a status only ever moves it forward.
        const RANK: &str = "CASE {} WHEN 'pending' THEN 0 WHEN 'sending' THEN 0 WHEN 'unknown' THEN 0 WHEN 'sent' THEN 1 \
                            WHEN 'delivered' THEN 2 WHEN 'failed' THEN 2 WHEN 'read' THEN 3 ELSE 0 END";
        let new_rank = RANK.replace("{}", "?1");
        let old_rank = RANK.replace("{}", "status");
        let (channel, provider_id) = (channel.to_string(), provider_id.to_string());
        let (status, error) = (status.to_string(), error.map(str::to_string));
        self.write(move |tx| {
            let updated = tx.execute(
                &format!(
                    "UPDATE messages SET status = ?1, error = COALESCE(?2, error) \
                     WHERE channel = ?3 AND provider_id = ?4 AND direction = 'out' AND {old_rank} < {new_rank}"
                ),
                params![status, error, channel, provider_id],
            )?;
            if updated > 0 {
                return Ok(StatusRecorded::Updated);
            }
            let known: Option<String> = tx
                .query_row(
                    "SELECT status FROM messages WHERE channel = ?1 AND provider_id = ?2",
                    params![channel, provider_id],
                    |r| r.get(0),
                )
                .optional()?;
            match known {
                Some(s) if s == status => return Ok(StatusRecorded::Repeated),
                Some(_) => return Ok(StatusRecorded::Unchanged),
                None => {}
            }
            tx.execute(
                "INSERT INTO audit (at, actor, entity, action, before, after) \
                 VALUES (?1, 'system', ?2, 'status_for_unknown_message', 'null', ?3)",
                params![
                    now,
                    format!("message:{channel}:{provider_id}"),
                    json(&serde_json::json!({ "status": status, "error": error }))
                ],
            )?;
            Ok(StatusRecorded::UnknownMessage)
        })
        .await
    }
}
