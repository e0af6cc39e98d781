//! The embedded store: SQLite in WAL mode.
//!
//! The writes are in [`writer`], the context cache in `cache.rs`, the file's claim and its
//! durability setting in `claim.rs`; what both stores share is in `reads.rs`, `rows.rs` and
//! `queries.rs`.
//!
//! Writes go through **one writer thread** ([`writer`]) that owns the only writing connection
//! and group-commits whatever is pending — inbox batches and pipeline changesets — in one
//! transaction. Reads use a pool of read-only sqlx connections, and the pipeline's hot read
//! (a conversation's context) is served from a write-through cache. Migrations run through
//! sqlx at start.
//!
//! One process owns a SQLite file: the cache and the ids handed out in memory rely on it.
//! Several instances share PostgreSQL instead.

mod cache;
mod claim;
mod outbox;
mod writer;

use cache::ContextCache;
use claim::synchronous_of;
pub use claim::{claim, Claim};

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};
use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, Sqlite};
use tokio::sync::{mpsc, oneshot};

use crate::model::*;
use crate::store::*;
use writer::{json, Encoded, EncodedEvent, WriteOp};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

pub struct SqliteStore {
    read: SqlitePool,
    writer: mpsc::Sender<WriteOp>,
    /// The last ticket number handed out. One process owns a SQLite file (several instances
    /// share PostgreSQL instead), so numbers are allocated in memory, without a write.
    last_ticket: std::sync::atomic::AtomicI64,
    /// Recently used conversation contexts, kept equal to what is committed (the writer
    /// updates them after each COMMIT): the pipeline then reads nothing for a known customer.
    cache: Arc<ContextCache>,
    /// Queues with at least one online agent (refreshed when an agent is saved): routing to a
    /// queue nobody works reads nothing.
    staffed: std::sync::RwLock<std::collections::HashSet<String>>,
    /// Dropped with the store: stops the checkpointer.
    _checkpointer: std::sync::mpsc::Sender<()>,
    /// For `sqlite::memory:`: the temporary directory holding the file, removed on drop.
    _temp: Option<tempfile::TempDir>,
}

fn staffed_queues(conn: &rusqlite::Connection) -> Result<std::collections::HashSet<String>> {
    let mut st = conn.prepare_cached(
        "SELECT DISTINCT q.value FROM agents a, json_each(a.queues) q WHERE a.availability = 'online'",
    )?;
    let v = st
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(v)
}

impl SqliteStore {
    /// Opens (creating it if missing) and migrates the database at `url` (`sqlite://path.db`).
    /// `sqlite::memory:` gives a fresh database in a temporary file, removed when the store
    /// is dropped (the writer and the readers are separate connections, so the database
    /// cannot live in one connection's memory).
    ///
    /// Commits are durable against power loss (`synchronous=FULL`): what a webhook was
    /// acknowledged for is on disk. `?synchronous=normal` on the URL trades that for speed (a
    /// power cut may then lose the last commits before a checkpoint), as an explicit choice.
    pub async fn open(url: &str) -> Result<SqliteStore> {
        let (url, sync) = synchronous_of(url)?;
        let url = url.as_str();
        let memory = url.contains(":memory:") || url.contains("mode=memory");
        // A throwaway database (pack tests, replays) has nothing to keep across a power cut.
        let sync = if memory { "OFF" } else { sync };
        let (path, temp): (PathBuf, _) = if memory {
            // In RAM where the system has a tmpfs (`/dev/shm`): a throwaway store's writes
            // never reach the disk a durable store on the same machine fsyncs to.
            let shm = std::path::Path::new("/dev/shm");
            let dir = if shm.is_dir() {
                tempfile::Builder::new()
                    .prefix("switchyard-")
                    .tempdir_in(shm)
            } else {
                Err(std::io::Error::other("no /dev/shm"))
            }
            .or_else(|_| tempfile::tempdir())
            .map_err(|e| {
                StoreError::Corrupt(format!("cannot create a temporary directory: {e}"))
            })?;
            (dir.path().join("switchyard.db"), Some(dir))
        } else {
            let opts = SqliteConnectOptions::from_str(url)?;
            (opts.get_filename().to_path_buf(), None)
        };
        let opts = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true)
            .pragma("cache_size", "-16384")
            .pragma("temp_store", "memory");
        {
            // Through a one-connection pool: `Migrator::run` on a `&mut SqliteConnection` makes
            // the future not provably `Send` (sqlx's `Acquire` lifetimes), and a replay store is
            // opened from tasks that must be.
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(opts.clone())
                .await?;
            MIGRATOR.run(&pool).await?;
            pool.close().await;
        }
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts.read_only(true))
            .await?;
        let conn = writer::connect(&path, sync)?;
        let last_ticket: i64 =
            conn.query_row("SELECT COALESCE(MAX(id), 0) FROM tickets", [], |r| r.get(0))?;
        let last_message: i64 =
            conn.query_row("SELECT COALESCE(MAX(id), 0) FROM messages", [], |r| {
                r.get(0)
            })?;
        let staffed = staffed_queues(&conn)?.into();
        let cache = Arc::new(ContextCache::default());
        let writer = writer::start(conn, last_message, cache.clone())?;
        let (checkpointer, stop) = std::sync::mpsc::channel();
        writer::start_checkpointer(&path, sync, stop)?;
        Ok(SqliteStore {
            read,
            writer,
            last_ticket: last_ticket.into(),
            cache,
            staffed,
            _checkpointer: checkpointer,
            _temp: temp,
        })
    }

    /// The writer connection's `synchronous` setting (`full` unless the URL says otherwise).
    pub async fn synchronous(&self) -> Result<String> {
        self.write(|tx| {
            let n: i64 = tx.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
            Ok(match n {
                0 => "off",
                1 => "normal",
                2 => "full",
                _ => "extra",
            }
            .to_string())
        })
        .await
    }

    /// Runs `f` on the writer's connection in one transaction, after what is queued before it.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.send(WriteOp::Run(Box::new(move |conn| {
            let _ = tx.send(writer::in_tx(conn, f));
        })))
        .await?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

use crate::store::queries;
use crate::store::rows::{self, parse, CONTEXT_SELECT};

impl SqliteStore {
    /// The reads shared with PostgreSQL, on the read-only pool.
    fn reads(&self) -> crate::store::reads::Reads<'_, sqlx::Sqlite> {
        crate::store::reads::Reads(&self.read)
    }

    async fn send(&self, op: WriteOp) -> Result<()> {
        self.writer.send(op).await.map_err(|_| StoreError::Closed)
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ingest(&self, events: Vec<Inbound>, now: Millis) -> Result<Vec<Ingested>> {
        let (tx, rx) = oneshot::channel();
        let events = events.iter().map(EncodedEvent::new).collect();
        self.send(WriteOp::Ingest(events, now, tx)).await?;
        rx.await.map_err(|_| StoreError::Closed)?
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
        let why = json(&why);
        self.write(move |tx| {
            tx.execute("UPDATE inbox SET processed_at = ?1 WHERE id = ?2", params![now, inbox_id])?;
            tx.execute(
                "INSERT INTO audit (at, actor, entity, action, before, after) VALUES (?1, 'system', ?2, 'skipped', 'null', ?3)",
                params![now, format!("inbox:{inbox_id}"), why],
            )?;
            Ok(())
        })
        .await
    }

    async fn open_conversation(
        &self,
        channel: &str,
        external_id: &str,
        name: Option<&str>,
        phone: Option<&str>,
        now: Millis,
    ) -> Result<(Contact, Conversation, bool)> {
        // Fast path: both exist (a read, no write lock).
        let row = sqlx::query(
            "SELECT v.* FROM conversations v JOIN contacts c ON c.id = v.contact_id WHERE c.channel = ? AND c.external_id = ?",
        )
        .bind(channel)
        .bind(external_id)
        .fetch_optional(&self.read)
        .await?;
        if let Some(r) = row {
            let conv = rows::conversation(&r)?;
            let contact = self
                .contact(conv.contact_id)
                .await?
                .ok_or_else(|| StoreError::Corrupt("conversation without contact".into()))?;
            return Ok((contact, conv, false));
        }
        let (channel_, external_id_) = (channel.to_string(), external_id.to_string());
        let (name_, phone_) = (name.map(str::to_string), phone.map(str::to_string));
        let (cid, created) = self
            .write(move |tx| {
                let cid: i64 = tx.query_row(
                    "INSERT INTO contacts (channel, external_id, name, phone, created_at) VALUES (?1, ?2, ?3, ?4, ?5) \
                     ON CONFLICT (channel, external_id) DO UPDATE SET name = COALESCE(contacts.name, excluded.name) RETURNING id",
                    params![channel_, external_id_, name_, phone_, now],
                    |r| r.get(0),
                )?;
                let inserted: Option<i64> = tx
                    .query_row(
                        "INSERT INTO conversations (contact_id, channel, status, priority, created_at, updated_at) \
                         VALUES (?1, ?2, 'new', 'normal', ?3, ?3) ON CONFLICT (contact_id, channel) DO NOTHING RETURNING id",
                        params![cid, channel_, now],
                        |r| r.get(0),
                    )
                    .optional()?;
                if let Some(id) = inserted {
                    tx.execute(
                        "INSERT INTO audit (at, actor, entity, action, before, after) VALUES (?1, 'customer', ?2, 'created', 'null', ?3)",
                        params![
                            now,
                            format!("conversation:{id}"),
                            json(&serde_json::json!({ "channel": channel_, "contact": cid, "status": "new" }))
                        ],
                    )?;
                }
                Ok((cid, inserted.is_some()))
            })
            .await?;
        // Read back after the COMMIT (a reader sees it from here on).
        let r = sqlx::query("SELECT * FROM conversations WHERE contact_id = ? AND channel = ?")
            .bind(cid)
            .bind(channel)
            .fetch_one(&self.read)
            .await?;
        let conv = rows::conversation(&r)?;
        let contact = self
            .contact(cid)
            .await?
            .ok_or_else(|| StoreError::Corrupt("contact vanished after its insert".into()))?;
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
        if let Some(c) = self.cache.by_key(&format!("{channel}:{external_id}")) {
            return Ok(c);
        }
        let row = sqlx::query(&format!(
            "{CONTEXT_SELECT} WHERE c.channel = ? AND c.external_id = ?"
        ))
        .bind(channel)
        .bind(external_id)
        .fetch_optional(&self.read)
        .await?;
        if let Some(r) = row {
            let ctx = rows::context(&r)?;
            self.cache.put(&ctx);
            return Ok(ctx);
        }
        let (contact, conversation, created) = self
            .open_conversation(channel, external_id, name, phone, now)
            .await?;
        let ctx = Context {
            contact,
            conversation,
            created,
            ticket: None,
        };
        self.cache.put(&ctx);
        Ok(ctx)
    }

    async fn context_of(&self, conversation_id: i64) -> Result<Option<Context>> {
        if let Some(c) = self.cache.by_id(conversation_id) {
            return Ok(Some(c));
        }
        let row = sqlx::query(&format!("{CONTEXT_SELECT} WHERE v.id = ?"))
            .bind(conversation_id)
            .fetch_optional(&self.read)
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
            return Ok(self
                .last_ticket
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                + 1);
        }
        let counter = counter.to_string();
        self.write(move |tx| {
            Ok(tx.query_row(
                "INSERT INTO counters (name, value) VALUES (?1, 1) ON CONFLICT (name) DO UPDATE SET value = value + 1 RETURNING value",
                params![counter],
                |r| r.get(0),
            )?)
        })
        .await
    }

    async fn eligible_agents(&self, queue: &str) -> Result<Vec<AgentLoad>> {
        if !self
            .staffed
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(queue)
        {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT a.id, a.capacity, a.last_assigned_at, a.shift, \
               (SELECT count(*) FROM conversations v WHERE v.assignee = a.id AND v.status <> 'resolved') AS open \
             FROM agents a, json_each(a.queues) q \
             WHERE a.availability = 'online' AND q.value = ? ORDER BY a.id",
        )
        .bind(queue)
        .fetch_all(&self.read)
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
        let r: Option<String> = sqlx::query_scalar(
            "SELECT json_extract(after, '$.assignee') FROM audit WHERE entity = ? \
             AND json_extract(after, '$.assignee') IS NOT NULL ORDER BY id DESC LIMIT 1",
        )
        .bind(format!("conversation:{conversation_id}"))
        .fetch_optional(&self.read)
        .await?
        .flatten();
        Ok(r)
    }

    async fn commit(&self, cs: Changeset) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send(WriteOp::Commit(Box::new(Encoded::new(cs)), tx))
            .await?;
        rx.await.map_err(|_| StoreError::Closed)?
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
        self.record_status_impl(channel, provider_id, status, error, now)
            .await
    }

    async fn upsert_agent(&self, a: &Agent, actor: &str, now: Millis) -> Result<()> {
        let a = a.clone();
        let actor = actor.to_string();
        let staffed = self
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO agents (id, name, role, queues, capacity, availability, shift) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                     ON CONFLICT (id) DO UPDATE SET name = excluded.name, role = excluded.role, queues = excluded.queues, \
                     capacity = excluded.capacity, availability = excluded.availability, shift = excluded.shift",
                    params![a.id, a.name, a.role, json(&a.queues), a.capacity as i64, a.availability, a.shift],
                )?;
                tx.execute(
                    "INSERT INTO audit (at, actor, entity, action, before, after) VALUES (?1, ?2, ?3, 'saved', \
                     coalesce((SELECT after FROM audit WHERE entity = ?3 ORDER BY id DESC LIMIT 1), 'null'), ?4)",
                    params![now, actor, format!("agent:{}", a.id), json(&a)],
                )?;
                staffed_queues(tx)
            })
            .await?;
        *self.staffed.write().unwrap_or_else(|e| e.into_inner()) = staffed;
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
                   (SELECT count(*) FROM agents a, json_each(a.queues) j WHERE a.availability = 'online' AND j.value = ?1) AS online, \
                   count(*) FILTER (WHERE EXISTS (SELECT 1 FROM audit x WHERE x.entity = 'conversation:' || conversations.id \
                     AND x.action = 'sla_breached')) AS breached \
                 FROM conversations WHERE queue = ?1 AND status <> 'resolved'",
            )
            .bind(q)
            .fetch_one(&self.read)
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
        let mut b = queries::conversations::<Sqlite>(&queries::SQLITE, q);
        let rows = b.build().fetch_all(&self.read).await?;
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
                  AND json_extract(a.after, '$.status') = 'resolved') AS resolved_at, \
               EXISTS (SELECT 1 FROM audit a WHERE a.entity = 'conversation:' || v.id AND a.action = 'assigned') AS assigned \
             FROM conversations v WHERE v.created_at >= ?1 AND v.created_at < ?2 AND (?3 IS NULL OR v.queue = ?3) ORDER BY v.id",
        )
        .bind(from)
        .bind(to)
        .bind(queue)
        .fetch_all(&self.read)
        .await?;
        let conversations = rows
            .iter()
            .map(rows::conversation_facts)
            .collect::<Result<_>>()?;
        let counts = |sql: &'static str| async move {
            let rows: Vec<(Option<String>, i64)> = sqlx::query_as(sql)
                .bind(from)
                .bind(to)
                .bind(queue)
                .fetch_all(&self.read)
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
                "SELECT json_extract(after, '$.assignee'), count(*) FROM audit \
                 WHERE action = 'assigned' AND entity LIKE 'conversation:%' AND at >= ?1 AND at < ?2 \
                 AND (?3 IS NULL OR json_extract(after, '$.queue') = ?3) GROUP BY 1",
            )
            .await?,
            replies: counts(
                "SELECT author, count(*) FROM messages \
                 WHERE direction = 'out' AND author <> 'bot' AND created_at >= ?1 AND created_at < ?2 \
                 AND (?3 IS NULL OR conversation_id IN (SELECT id FROM conversations WHERE queue = ?3)) GROUP BY 1",
            )
            .await?,
            tickets_opened: counts(
                "SELECT category, count(*) FROM tickets \
                 WHERE created_at >= ?1 AND created_at < ?2 AND (?3 IS NULL OR queue = ?3) GROUP BY 1",
            )
            .await?,
            tickets_resolved: counts(
                "SELECT json_extract(after, '$.category'), count(*) FROM audit \
                 WHERE entity LIKE 'ticket:%' AND action = 'updated' AND at >= ?1 AND at < ?2 \
                 AND json_extract(after, '$.status') = 'resolved' AND json_extract(before, '$.status') <> 'resolved' \
                 AND (?3 IS NULL OR json_extract(after, '$.queue') = ?3) GROUP BY 1",
            )
            .await?,
            sla_breaches: sqlx::query_scalar(
                "SELECT count(*) FROM audit WHERE action = 'sla_breached' AND at >= ?1 AND at < ?2 \
                 AND (?3 IS NULL OR json_extract(after, '$.queue') = ?3)",
            )
            .bind(from)
            .bind(to)
            .bind(queue)
            .fetch_one(&self.read)
            .await?,
        })
    }

    async fn init_schedules(&self, schedules: &[(String, Millis)]) -> Result<()> {
        let schedules = schedules.to_vec();
        self.write(move |tx| {
            let mut st = tx.prepare_cached(
                "INSERT INTO schedules (name, next_at) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
            )?;
            for (name, next) in &schedules {
                st.execute(params![name, next])?;
            }
            Ok(())
        })
        .await
    }

    async fn due_schedules(&self, now: Millis) -> Result<Vec<(String, Millis)>> {
        self.reads().due_schedules(now).await
    }

    async fn stats(&self) -> Result<Value> {
        let open = sqlx::query_as(queries::OPEN_AND_WAITING)
            .fetch_one(&self.read)
            .await?;
        let queues = sqlx::query_as(queries::BY_QUEUE)
            .fetch_all(&self.read)
            .await?;
        let tags = sqlx::query_as(
            "SELECT t.value, count(*) FROM conversations v, json_each(v.tags) t \
             WHERE v.status <> 'resolved' GROUP BY t.value",
        )
        .fetch_all(&self.read)
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
        let (hash, role, kind) = (t.hash.to_string(), t.role.to_string(), t.kind.to_string());
        let (agent, actor, expires_at) =
            (t.agent.map(str::to_string), actor.to_string(), t.expires_at);
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO tokens (hash, role, agent, created_at, kind, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![hash, role, agent, now, kind, expires_at],
            )?;
            let id = tx.last_insert_rowid();
            // The audit names the token by id, never by its value or hash.
            tx.execute(
                "INSERT INTO audit (at, actor, entity, action, before, after) VALUES (?1, ?2, ?3, 'created', 'null', ?4)",
                params![now, actor, format!("token:{id}"), json(&serde_json::json!({ "role": role, "agent": agent, "kind": kind, "expires_at": expires_at }))],
            )?;
            Ok(id)
        })
        .await
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
        let (agent, hash, actor) = (
            agent.to_string(),
            hash.map(str::to_string),
            actor.to_string(),
        );
        self.write(move |tx| {
            let n = tx.execute(
                "UPDATE agents SET password_hash = ?1 WHERE id = ?2",
                params![hash, agent],
            )?;
            if n == 1 {
                // Never the hash: only that it changed.
                let action = if hash.is_some() { "password_set" } else { "password_cleared" };
                tx.execute(
                    "INSERT INTO audit (at, actor, entity, action, before, after) VALUES (?1, ?2, ?3, ?4, 'null', 'null')",
                    params![now, actor, format!("agent:{agent}"), action],
                )?;
            }
            Ok(n == 1)
        })
        .await
    }

    async fn password_hash(&self, agent: &str) -> Result<Option<String>> {
        self.reads().password_hash(agent).await
    }

    async fn media_to_fetch(&self, after: i64, now: Millis, limit: i64) -> Result<Vec<MediaTask>> {
        self.reads().media_to_fetch(after, now, limit).await
    }

    async fn save_media(&self, m: &MediaRecord) -> Result<()> {
        let m = m.clone();
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO media (message_id, conversation_id, status, mime_type, size, bytes, error, attempts, next_attempt_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
             ON CONFLICT (message_id) DO UPDATE SET status = excluded.status, mime_type = excluded.mime_type, \
             size = excluded.size, bytes = excluded.bytes, error = excluded.error, attempts = excluded.attempts, \
             next_attempt_at = excluded.next_attempt_at, updated_at = excluded.updated_at",
                params![
                    m.message_id,
                    m.conversation_id,
                    m.status,
                    m.mime_type,
                    m.bytes.as_ref().map(|b| b.len() as i64),
                    m.bytes,
                    m.error,
                    m.attempts,
                    m.next_attempt_at,
                    m.updated_at
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn media(&self, message_id: i64) -> Result<Option<MediaRecord>> {
        self.reads().media(message_id).await
    }

    async fn revoke_token(&self, id: i64, actor: &str, now: Millis) -> Result<bool> {
        let actor = actor.to_string();
        self.write(move |tx| {
            let n = tx.execute(
                "UPDATE tokens SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL",
                params![now, id],
            )?;
            if n == 1 {
                tx.execute(
                    "INSERT INTO audit (at, actor, entity, action, before, after) VALUES (?1, ?2, ?3, 'revoked', 'null', 'null')",
                    params![now, actor, format!("token:{id}")],
                )?;
            }
            Ok(n == 1)
        })
        .await
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
                cond.replace("{}", "?1")
            );
            let mut total = 0u64;
            loop {
                let sql = sql.clone();
                let n = self
                    .write(move |tx| Ok(tx.execute(&sql, params![before])? as u64))
                    .await?;
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
