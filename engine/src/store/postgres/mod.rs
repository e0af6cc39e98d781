//! The shared store: PostgreSQL, for several `switchyard serve` instances on one database.
//!
//! A changeset's writing is in [`commit`]; what both stores share is in `reads.rs`, `rows.rs`
//! and `queries.rs`.
//!
//! Every write is a transaction of its own on a pooled connection (PostgreSQL orders
//! concurrent writers itself); a changeset is one transaction, like on SQLite. Nothing is
//! cached in the process: another instance may have changed any row. Migrations are in
//! `migrations/postgres` and run at open (or with `switchyard migrate`).

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};

use crate::model::*;
use crate::store::queries;
use crate::store::rows::{self, json, parse, CONTEXT_SELECT};
use crate::store::*;

mod commit;
mod outbox;
use commit::{apply, audit_row};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// How the pool behaves; the defaults suit one instance of a few. An instance uses up to
/// `3 × max_connections + 1` connections: the pool, twice as many holding conversations
/// (one per conversation in flight), and one for LISTEN.
#[derive(Debug, Clone)]
pub struct PgSettings {
    pub max_connections: u32,
    /// Waiting for a free connection (or a reconnect) longer than this is an error.
    pub acquire_timeout: Duration,
    /// `statement_timeout` of every connection: a query running longer is cancelled.
    pub statement_timeout: Duration,
}

impl Default for PgSettings {
    fn default() -> Self {
        PgSettings {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(30),
        }
    }
}

pub struct PgStore {
    pool: PgPool,
    /// Connections that hold conversations (one open transaction each, with an advisory
    /// lock): separate from `pool`, so holding never starves the work done under the hold.
    holds: PgPool,
    /// For LISTEN (a connection of its own, made when the workers start).
    opts: PgConnectOptions,
}

/// The advisory lock inbox inserts take in turn ("SWYI").
const INBOX_LOCK: i64 = 0x5357_5949;

impl PgStore {
    /// Connects to `url` (`postgres://user@host/db`) and applies the migrations. An
    /// unreachable database is an error at once (after `acquire_timeout`), not a hang.
    pub async fn open(url: &str, settings: PgSettings) -> Result<PgStore> {
        let store = PgStore::connect(url, settings).await?;
        MIGRATOR.run(&store.pool).await?;
        Ok(store)
    }

    /// Connects without migrating (see [`PgStore::migrate`]).
    pub async fn connect(url: &str, settings: PgSettings) -> Result<PgStore> {
        PgStore::connect_with(url.parse()?, settings).await
    }

    /// [`PgStore::open`] with options built in code (tests point them at a database of their own).
    pub async fn open_with(opts: PgConnectOptions, settings: PgSettings) -> Result<PgStore> {
        let store = PgStore::connect_with(opts, settings).await?;
        MIGRATOR.run(&store.pool).await?;
        Ok(store)
    }

    async fn connect_with(opts: PgConnectOptions, settings: PgSettings) -> Result<PgStore> {
        // One connection first: a database that refuses (down, wrong password, no such
        // database) says why at once, instead of a pool timing out after `acquire_timeout`.
        {
            use sqlx::{ConnectOptions, Connection};
            let c = tokio::time::timeout(settings.acquire_timeout, opts.connect())
                .await
                .map_err(|_| {
                    StoreError::Unreachable(format!(
                        "no answer from {}:{} in {:?}",
                        opts.get_host(),
                        opts.get_port(),
                        settings.acquire_timeout
                    ))
                })?
                .map_err(|e| {
                    StoreError::Unreachable(format!("{}:{}: {e}", opts.get_host(), opts.get_port()))
                })?;
            let _ = c.close().await;
        }
        let opts = opts.options([(
            "statement_timeout",
            format!("{}", settings.statement_timeout.as_millis()),
        )]);
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(opts.clone())
            .await?;
        // A hold waits for another instance to let go: no statement timeout there.
        let holds = PgPoolOptions::new()
            .max_connections(settings.max_connections * 2)
            .idle_timeout(Duration::from_secs(30))
            .min_connections(0)
            .acquire_timeout(settings.acquire_timeout)
            .connect_lazy_with(opts.clone().options([("statement_timeout", "0")]));
        Ok(PgStore { pool, holds, opts })
    }

    /// Applies the migrations that are not applied yet; returns how many there are in all.
    pub async fn migrate(&self) -> Result<usize> {
        MIGRATOR.run(&self.pool).await?;
        Ok(MIGRATOR.iter().count())
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

fn all<T>(rows: &[PgRow], f: impl Fn(&PgRow) -> Result<T>) -> Result<Vec<T>> {
    rows.iter().map(f).collect()
}

impl PgStore {
    /// The reads shared with SQLite.
    fn reads(&self) -> crate::store::reads::Reads<'_, Postgres> {
        crate::store::reads::Reads(&self.pool)
    }
}

#[async_trait]
impl Store for PgStore {
    async fn ingest(&self, events: Vec<Inbound>, now: Millis) -> Result<Vec<Ingested>> {
        let mut tx = self.pool.begin().await?;
        // Inbox ids in commit order: the scheduler reads rows after the last id it saw, so a
        // row must never commit after one with a higher id. A transaction-scoped lock makes
        // inbox inserts take turns (each is a few rows; the lock is held until COMMIT).
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(INBOX_LOCK)
            .execute(&mut *tx)
            .await?;
        let mut out = Vec::with_capacity(events.len());
        for e in &events {
            let id: Option<i64> = sqlx::query_scalar(
                "INSERT INTO inbox (channel, provider_id, key, event, received_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (channel, provider_id) DO NOTHING RETURNING id",
            )
            .bind(e.channel())
            .bind(e.provider_id())
            .bind(e.contact_key())
            .bind(json(e))
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            out.push(id.map_or(Ingested::Duplicate, Ingested::New));
        }
        if out.iter().any(|i| matches!(i, Ingested::New(_))) {
            // Every instance's scheduler wakes at the COMMIT (see `listen`).
            sqlx::query("SELECT pg_notify('switchyard_inbox', '')")
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(out)
    }

    fn shared(&self) -> bool {
        true
    }

    async fn hold(&self, key: &str) -> Result<Option<Held>> {
        // A transaction-scoped advisory lock on a connection of its own: released when the
        // hold is dropped (the transaction rolls back) or when this process dies (PostgreSQL
        // ends its session), so a crashed instance never keeps a conversation.
        let mut tx = self.holds.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(key)
            .execute(&mut *tx)
            .await?;
        Ok(Some(Box::new(tx)))
    }

    async fn try_hold(&self, key: &str) -> Result<Option<Held>> {
        let mut tx = self.holds.begin().await?;
        let got: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(key)
                .fetch_one(&mut *tx)
                .await?;
        Ok(got.then(|| Box::new(tx) as Held))
    }

    async fn inbox_turn(&self, id: i64, key: &str) -> Result<InboxTurn> {
        let oldest: Option<i64> =
            sqlx::query_scalar("SELECT min(id) FROM inbox WHERE key = $1 AND processed_at IS NULL")
                .bind(key)
                .fetch_one(&self.pool)
                .await?;
        Ok(match oldest {
            Some(o) if o == id => InboxTurn::Next,
            Some(o) if o < id => InboxTurn::NotYet,
            // Nothing older is unprocessed and this one is not either: it is done.
            _ => InboxTurn::Done,
        })
    }

    async fn job_pending(&self, id: i64) -> Result<bool> {
        Ok(
            sqlx::query_scalar("SELECT done_at IS NULL FROM jobs WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .unwrap_or(false),
        )
    }

    fn listen(&self, wake: std::sync::Arc<tokio::sync::Notify>) {
        let opts = self.opts.clone();
        // Ends when the workers are gone (this task holds the last handle of `wake`).
        let alive = |w: &std::sync::Arc<tokio::sync::Notify>| std::sync::Arc::strong_count(w) > 1;
        tokio::spawn(async move {
            while alive(&wake) {
                let listener = async {
                    let mut l = sqlx::postgres::PgListener::connect_with(
                        &PgPool::connect_lazy_with(opts.clone()),
                    )
                    .await?;
                    l.listen("switchyard_inbox").await?;
                    while alive(&wake) {
                        tokio::select! {
                            n = l.recv() => {
                                n?;
                                wake.notify_one();
                            }
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                    Ok::<(), sqlx::Error>(())
                };
                if let Err(e) = listener.await {
                    tracing::warn!(error = %e, "LISTEN for new work stopped; polling until it is back");
                    // Whatever came meanwhile is found by the poll.
                    wake.notify_one();
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        });
    }

    async fn inbox_since(
        &self,
        since: Millis,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Millis, Inbound)>> {
        self.reads().inbox_since(since, after, limit).await
    }

    async fn pending_inbox(&self, after: i64, limit: i64) -> Result<Vec<InboxRow>> {
        self.reads().pending_inbox(after, limit).await
    }

    async fn skip_inbox(&self, inbox_id: i64, now: Millis, why: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE inbox SET processed_at = $1 WHERE id = $2")
            .bind(now)
            .bind(inbox_id)
            .execute(&mut *tx)
            .await?;
        let entity = format!("inbox:{inbox_id}");
        audit_row(
            &mut tx,
            now,
            "system",
            &entity,
            "skipped",
            "null",
            &json(&why),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn open_conversation(
        &self,
        channel: &str,
        external_id: &str,
        name: Option<&str>,
        phone: Option<&str>,
        now: Millis,
    ) -> Result<(Contact, Conversation, bool)> {
        let mut tx = self.pool.begin().await?;
        let contact_row = sqlx::query(
            "INSERT INTO contacts (channel, external_id, name, phone, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (channel, external_id) DO UPDATE SET name = COALESCE(contacts.name, excluded.name) RETURNING *",
        )
        .bind(channel)
        .bind(external_id)
        .bind(name)
        .bind(phone)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let contact = rows::contact(&contact_row, "")?;
        let inserted = sqlx::query(
            "INSERT INTO conversations (contact_id, channel, status, priority, created_at, updated_at) \
             VALUES ($1, $2, 'new', 'normal', $3, $3) ON CONFLICT (contact_id, channel) DO NOTHING RETURNING *",
        )
        .bind(contact.id)
        .bind(channel)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let (conv, created) = match inserted {
            Some(r) => {
                let conv = rows::conversation(&r)?;
                let after = json(
                    &serde_json::json!({ "channel": channel, "contact": contact.id, "status": "new" }),
                );
                let entity = format!("conversation:{}", conv.id);
                audit_row(&mut tx, now, "customer", &entity, "created", "null", &after).await?;
                (conv, true)
            }
            None => {
                let r = sqlx::query(
                    "SELECT * FROM conversations WHERE contact_id = $1 AND channel = $2",
                )
                .bind(contact.id)
                .bind(channel)
                .fetch_one(&mut *tx)
                .await?;
                (rows::conversation(&r)?, false)
            }
        };
        tx.commit().await?;
        Ok((contact, conv, created))
    }

    async fn load_context(
        &self,
        channel: &str,
        external_id: &str,
        name: Option<&str>,
        phone: Option<&str>,
        now: Millis,
    ) -> Result<Context> {
        let row = sqlx::query(&format!(
            "{CONTEXT_SELECT} WHERE c.channel = $1 AND c.external_id = $2"
        ))
        .bind(channel)
        .bind(external_id)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(r) = row {
            return rows::context(&r);
        }
        let (contact, conversation, created) = self
            .open_conversation(channel, external_id, name, phone, now)
            .await?;
        let ticket = self.open_ticket(conversation.id).await?;
        Ok(Context {
            contact,
            conversation,
            created,
            ticket,
        })
    }

    async fn context_of(&self, conversation_id: i64) -> Result<Option<Context>> {
        let row = sqlx::query(&format!("{CONTEXT_SELECT} WHERE v.id = $1"))
            .bind(conversation_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rows::context).transpose()
    }

    async fn contact(&self, id: i64) -> Result<Option<Contact>> {
        self.reads().contact(id).await
    }

    async fn conversation(&self, id: i64) -> Result<Option<Conversation>> {
        self.reads().conversation(id).await
    }

    async fn open_ticket(&self, conversation_id: i64) -> Result<Option<Ticket>> {
        self.reads().open_ticket(conversation_id).await
    }

    async fn allocate_id(&self, counter: &str) -> Result<i64> {
        if counter == "ticket" {
            return Ok(sqlx::query_scalar("SELECT nextval('ticket_ids')")
                .fetch_one(&self.pool)
                .await?);
        }
        Ok(sqlx::query_scalar(
            "INSERT INTO counters (name, value) VALUES ($1, 1) \
             ON CONFLICT (name) DO UPDATE SET value = counters.value + 1 RETURNING value",
        )
        .bind(counter)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn eligible_agents(&self, queue: &str) -> Result<Vec<AgentLoad>> {
        let rows = sqlx::query(
            "SELECT a.id, a.capacity, a.last_assigned_at, a.shift, \
               (SELECT count(*) FROM conversations v WHERE v.assignee = a.id AND v.status <> 'resolved') AS open \
             FROM agents a \
             WHERE a.availability = 'online' AND a.queues::jsonb ? $1 ORDER BY a.id",
        )
        .bind(queue)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in rows {
            let l = AgentLoad {
                id: r.try_get("id")?,
                open: r.try_get::<i64, _>("open")? as u32,
                capacity: r.try_get::<i64, _>("capacity")? as u32,
                last_assigned_at: r.try_get("last_assigned_at")?,
                shift: r.try_get("shift")?,
            };
            if l.open < l.capacity {
                out.push(l);
            }
        }
        Ok(out)
    }

    async fn waiting_conversations(&self, queue: &str, limit: i64) -> Result<Vec<i64>> {
        self.reads().waiting_conversations(queue, limit).await
    }

    async fn previous_assignee(&self, conversation_id: i64) -> Result<Option<String>> {
        let r: Option<Option<String>> = sqlx::query_scalar(
            "SELECT after::jsonb ->> 'assignee' FROM audit WHERE entity = $1 \
             AND after::jsonb ->> 'assignee' IS NOT NULL ORDER BY id DESC LIMIT 1",
        )
        .bind(format!("conversation:{conversation_id}"))
        .fetch_optional(&self.pool)
        .await?;
        Ok(r.flatten())
    }

    async fn commit(&self, cs: Changeset) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        apply(&mut tx, &cs).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn next_job_at(&self) -> Result<Option<Millis>> {
        self.reads().next_job_at().await
    }

    async fn due_jobs(&self, now: Millis, limit: i64) -> Result<Vec<Job>> {
        self.reads().due_jobs(now, limit).await
    }

    async fn due_outbox(
        &self,
        now: Millis,
        full: &[String],
        busy: &[(i64, String)],
        limit: i64,
    ) -> Result<Vec<DueRow>> {
        self.due_outbox_impl(now, full, busy, limit).await
    }

    async fn claim_outbox(&self, id: i64, now: Millis) -> Result<Option<OutboxRow>> {
        self.claim_outbox_impl(id, now).await
    }

    async fn outbox_sent(&self, id: i64, provider_id: &str, now: Millis) -> Result<()> {
        self.outbox_sent_impl(id, provider_id, now).await
    }

    async fn outbox_failed(
        &self,
        id: i64,
        error: &str,
        retry_at: Option<Millis>,
        now: Millis,
    ) -> Result<()> {
        self.outbox_failed_impl(id, error, retry_at, now).await
    }

    async fn outbox_unknown(&self, id: i64, error: &str, now: Millis) -> Result<()> {
        self.outbox_unknown_impl(id, error, now).await
    }

    async fn recover_outbox(&self, now: Millis, claimed_before: Millis) -> Result<u64> {
        self.recover_outbox_impl(now, claimed_before).await
    }

    async fn record_status(
        &self,
        channel: &str,
        provider_id: &str,
        status: &str,
        error: Option<&str>,
        now: Millis,
    ) -> Result<StatusRecorded> {
        const RANK: &str = "CASE {} WHEN 'pending' THEN 0 WHEN 'sending' THEN 0 WHEN 'unknown' THEN 0 WHEN 'sent' THEN 1 \
                            WHEN 'delivered' THEN 2 WHEN 'failed' THEN 2 WHEN 'read' THEN 3 ELSE 0 END";
        let new_rank = RANK.replace("{}", "$1::text");
        let old_rank = RANK.replace("{}", "status");
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(&format!(
            "UPDATE messages SET status = $1, error = COALESCE($2, error) \
             WHERE channel = $3 AND provider_id = $4 AND direction = 'out' AND {old_rank} < {new_rank}"
        ))
        .bind(status)
        .bind(error)
        .bind(channel)
        .bind(provider_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let r = if updated > 0 {
            StatusRecorded::Updated
        } else {
            let known: Option<String> = sqlx::query_scalar(
                "SELECT status FROM messages WHERE channel = $1 AND provider_id = $2",
            )
            .bind(channel)
            .bind(provider_id)
            .fetch_optional(&mut *tx)
            .await?;
            match known {
                Some(s) if s == status => StatusRecorded::Repeated,
                Some(_) => StatusRecorded::Unchanged,
                None => {
                    let entity = format!("message:{channel}:{provider_id}");
                    let after = json(&serde_json::json!({ "status": status, "error": error }));
                    audit_row(
                        &mut tx,
                        now,
                        "system",
                        &entity,
                        "status_for_unknown_message",
                        "null",
                        &after,
                    )
                    .await?;
                    StatusRecorded::UnknownMessage
                }
            }
        };
        tx.commit().await?;
        Ok(r)
    }

    async fn upsert_agent(&self, a: &Agent, actor: &str, now: Millis) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO agents (id, name, role, queues, capacity, availability, shift) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, role = excluded.role, queues = excluded.queues, \
             capacity = excluded.capacity, availability = excluded.availability, shift = excluded.shift",
        )
        .bind(&a.id)
        .bind(&a.name)
        .bind(&a.role)
        .bind(json(&a.queues))
        .bind(a.capacity as i64)
        .bind(&a.availability)
        .bind(&a.shift)
        .execute(&mut *tx)
        .await?;
        let entity = format!("agent:{}", a.id);
        let before: Option<String> = sqlx::query_scalar(
            "SELECT after FROM audit WHERE entity = $1 ORDER BY id DESC LIMIT 1",
        )
        .bind(&entity)
        .fetch_optional(&mut *tx)
        .await?;
        let before = before.unwrap_or_else(|| "null".into());
        audit_row(&mut tx, now, actor, &entity, "saved", &before, &json(a)).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn agent(&self, id: &str) -> Result<Option<Agent>> {
        self.reads().agent(id).await
    }

    async fn agents(&self) -> Result<Vec<Agent>> {
        self.reads().agents().await
    }

    async fn owned_conversations(&self, agent: &str) -> Result<Vec<i64>> {
        self.reads().owned_conversations(agent).await
    }

    async fn queue_stats(&self, queues: &[String]) -> Result<Vec<QueueStats>> {
        let mut out = Vec::new();
        for q in queues {
            let r = sqlx::query(
                "SELECT \
                   count(*) FILTER (WHERE assignee IS NULL) AS waiting, \
                   min(queued_at) FILTER (WHERE assignee IS NULL) AS oldest, \
                   count(*) FILTER (WHERE assignee IS NOT NULL) AS assigned, \
                   (SELECT count(*) FROM agents a WHERE a.availability = 'online' AND a.queues::jsonb ? $1) AS online, \
                   count(*) FILTER (WHERE EXISTS (SELECT 1 FROM audit x WHERE x.entity = 'conversation:' || conversations.id \
                     AND x.action = 'sla_breached')) AS breached \
                 FROM conversations WHERE queue = $1 AND status <> 'resolved'",
            )
            .bind(q)
            .fetch_one(&self.pool)
            .await?;
            out.push(QueueStats {
                queue: q.clone(),
                waiting: r.try_get("waiting")?,
                oldest_waiting_since: r.try_get("oldest")?,
                assigned: r.try_get("assigned")?,
                agents_online: r.try_get("online")?,
                breached: r.try_get("breached")?,
            });
        }
        Ok(out)
    }

    async fn list_conversations(&self, q: &ConversationQuery) -> Result<Vec<ConversationLine>> {
        let mut b = queries::conversations::<Postgres>(&queries::POSTGRES, q);
        let rows = b.build().fetch_all(&self.pool).await?;
        rows.iter().map(rows::line).collect()
    }

    async fn kpi_facts(
        &self,
        from: Millis,
        to: Millis,
        queue: Option<&str>,
    ) -> Result<crate::reports::KpiFacts> {
        use crate::reports::KpiFacts;
        let rows = sqlx::query(
            "SELECT v.id, v.created_at, \
               (SELECT min(at) FROM audit a WHERE a.entity = 'conversation:' || v.id AND a.action = 'routed') AS queued_at, \
               (SELECT min(created_at) FROM messages m WHERE m.conversation_id = v.id AND m.direction = 'out' AND m.author <> 'bot') AS human_at, \
               (SELECT min(at) FROM audit a WHERE a.entity = 'conversation:' || v.id AND a.action = 'status_changed' \
                  AND a.after::jsonb ->> 'status' = 'resolved') AS resolved_at, \
               EXISTS (SELECT 1 FROM audit a WHERE a.entity = 'conversation:' || v.id AND a.action = 'assigned') AS assigned \
             FROM conversations v WHERE v.created_at >= $1 AND v.created_at < $2 AND ($3::text IS NULL OR v.queue = $3) ORDER BY v.id",
        )
        .bind(from)
        .bind(to)
        .bind(queue)
        .fetch_all(&self.pool)
        .await?;
        let conversations = all(&rows, rows::conversation_facts)?;
        let counts = |sql: &'static str| async move {
            let rows: Vec<(Option<String>, i64)> = sqlx::query_as(sql)
                .bind(from)
                .bind(to)
                .bind(queue)
                .fetch_all(&self.pool)
                .await?;
            Ok::<_, StoreError>(
                rows.into_iter()
                    .map(|(k, n)| (k.unwrap_or_default(), n))
                    .collect(),
            )
        };
        Ok(KpiFacts {
            conversations,
            assignments: counts(
                "SELECT after::jsonb ->> 'assignee', count(*) FROM audit \
                 WHERE action = 'assigned' AND entity LIKE 'conversation:%' AND at >= $1 AND at < $2 \
                 AND ($3::text IS NULL OR after::jsonb ->> 'queue' = $3) GROUP BY 1",
            )
            .await?,
            replies: counts(
                "SELECT author, count(*) FROM messages \
                 WHERE direction = 'out' AND author <> 'bot' AND created_at >= $1 AND created_at < $2 \
                 AND ($3::text IS NULL OR conversation_id IN (SELECT id FROM conversations WHERE queue = $3)) GROUP BY 1",
            )
            .await?,
            tickets_opened: counts(
                "SELECT category, count(*) FROM tickets \
                 WHERE created_at >= $1 AND created_at < $2 AND ($3::text IS NULL OR queue = $3) GROUP BY 1",
            )
            .await?,
            tickets_resolved: counts(
                "SELECT after::jsonb ->> 'category', count(*) FROM audit \
                 WHERE entity LIKE 'ticket:%' AND action = 'updated' AND at >= $1 AND at < $2 \
                 AND after::jsonb ->> 'status' = 'resolved' AND before::jsonb ->> 'status' <> 'resolved' \
                 AND ($3::text IS NULL OR after::jsonb ->> 'queue' = $3) GROUP BY 1",
            )
            .await?,
            sla_breaches: sqlx::query_scalar(
                "SELECT count(*) FROM audit WHERE action = 'sla_breached' AND at >= $1 AND at < $2 \
                 AND ($3::text IS NULL OR after::jsonb ->> 'queue' = $3)",
            )
            .bind(from)
            .bind(to)
            .bind(queue)
            .fetch_one(&self.pool)
            .await?,
        })
    }

    async fn init_schedules(&self, schedules: &[(String, Millis)]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for (name, next) in schedules {
            sqlx::query("INSERT INTO schedules (name, next_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
                .bind(name)
                .bind(next)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn due_schedules(&self, now: Millis) -> Result<Vec<(String, Millis)>> {
        self.reads().due_schedules(now).await
    }

    async fn stats(&self) -> Result<Value> {
        let open = sqlx::query_as(queries::OPEN_AND_WAITING)
            .fetch_one(&self.pool)
            .await?;
        let queues = sqlx::query_as(queries::BY_QUEUE)
            .fetch_all(&self.pool)
            .await?;
        let tags = sqlx::query_as(
            "SELECT t.value, count(*) FROM conversations v, jsonb_array_elements_text(v.tags::jsonb) AS t(value) \
             WHERE v.status <> 'resolved' GROUP BY t.value",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(queries::stats_json(open, queues, tags))
    }

    async fn backlog(&self) -> Result<(i64, Vec<(String, i64)>)> {
        self.reads().backlog().await
    }

    async fn ticket(&self, id: i64) -> Result<Option<Ticket>> {
        self.reads().ticket(id).await
    }

    async fn list_tickets(&self, q: &TicketQuery) -> Result<Vec<Ticket>> {
        self.reads().list_tickets(q).await
    }

    async fn list_audit(&self, q: &AuditQuery) -> Result<Vec<(i64, AuditRecord)>> {
        self.reads().list_audit(q).await
    }

    async fn create_token(&self, t: &NewToken<'_>, actor: &str, now: Millis) -> Result<i64> {
        let mut tx = self.pool.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO tokens (hash, role, agent, created_at, kind, expires_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(t.hash)
        .bind(t.role)
        .bind(t.agent)
        .bind(now)
        .bind(t.kind)
        .bind(t.expires_at)
        .fetch_one(&mut *tx)
        .await?;
        // The audit names the token by id, never by its value or hash.
        let after = json(&serde_json::json!({
            "role": t.role, "agent": t.agent, "kind": t.kind, "expires_at": t.expires_at
        }));
        audit_row(
            &mut tx,
            now,
            actor,
            &format!("token:{id}"),
            "created",
            "null",
            &after,
        )
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn token(&self, hash: &str) -> Result<Option<TokenRecord>> {
        self.reads().token(hash).await
    }

    async fn set_password(
        &self,
        agent: &str,
        hash: Option<&str>,
        actor: &str,
        now: Millis,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query("UPDATE agents SET password_hash = $1 WHERE id = $2")
            .bind(hash)
            .bind(agent)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 1 {
            // Never the hash: only that it changed.
            let action = if hash.is_some() {
                "password_set"
            } else {
                "password_cleared"
            };
            audit_row(
                &mut tx,
                now,
                actor,
                &format!("agent:{agent}"),
                action,
                "null",
                "null",
            )
            .await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn password_hash(&self, agent: &str) -> Result<Option<String>> {
        self.reads().password_hash(agent).await
    }

    async fn media_to_fetch(&self, after: i64, now: Millis, limit: i64) -> Result<Vec<MediaTask>> {
        self.reads().media_to_fetch(after, now, limit).await
    }

    async fn save_media(&self, m: &MediaRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO media (message_id, conversation_id, status, mime_type, size, bytes, error, attempts, next_attempt_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (message_id) DO UPDATE SET status = excluded.status, mime_type = excluded.mime_type, \
             size = excluded.size, bytes = excluded.bytes, error = excluded.error, attempts = excluded.attempts, \
             next_attempt_at = excluded.next_attempt_at, updated_at = excluded.updated_at",
        )
        .bind(m.message_id)
        .bind(m.conversation_id)
        .bind(&m.status)
        .bind(&m.mime_type)
        .bind(m.bytes.as_ref().map(|b| b.len() as i64))
        .bind(&m.bytes)
        .bind(&m.error)
        .bind(m.attempts as i64)
        .bind(m.next_attempt_at)
        .bind(m.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn media(&self, message_id: i64) -> Result<Option<MediaRecord>> {
        self.reads().media(message_id).await
    }

    async fn revoke_token(&self, id: i64, actor: &str, now: Millis) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let n =
            sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if n == 1 {
            audit_row(
                &mut tx,
                now,
                actor,
                &format!("token:{id}"),
                "revoked",
                "null",
                "null",
            )
            .await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn messages(&self, conversation_id: i64) -> Result<Vec<Message>> {
        self.reads().messages(conversation_id).await
    }

    async fn notes(&self, conversation_id: i64) -> Result<Vec<Note>> {
        self.reads().notes(conversation_id).await
    }

    async fn tickets(&self, conversation_id: i64) -> Result<Vec<Ticket>> {
        self.reads().tickets(conversation_id).await
    }

    async fn ticket_history(&self, ticket_id: i64) -> Result<Vec<Value>> {
        self.reads().ticket_history(ticket_id).await
    }

    async fn audit(&self, entity: &str) -> Result<Vec<AuditRecord>> {
        self.reads().audit(entity).await
    }

    async fn traces(&self, conversation_id: i64) -> Result<Vec<(String, Value)>> {
        self.reads().traces(conversation_id).await
    }

    async fn outbox_payloads(&self) -> Result<Vec<(String, Value)>> {
        self.reads().outbox_payloads().await
    }

    async fn prune(&self, before: Millis) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for (table, cond) in PRUNE {
            let sql = format!(
                "DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE {} LIMIT {PRUNE_BATCH})",
                cond.replace("{}", "$1")
            );
            let mut total = 0u64;
            loop {
                let n = sqlx::query(&sql)
                    .bind(before)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                total += n;
                if n < PRUNE_BATCH as u64 {
                    break;
                }
            }
            out.push((table.to_string(), total));
        }
        Ok(out)
    }

    async fn conversation_ids(&self) -> Result<Vec<i64>> {
        self.reads().conversation_ids().await
    }
}
