//! The embedded store: SQLite (WAL) through sqlx.
//!
//! sqlx runs every SQLite statement on a worker thread, and handing work to another core costs
//! more than the statement (DESIGN.md §7). So all writes go through **one writer task** that
//! group-commits whatever is pending — inbox batches and pipeline changesets — in one
//! transaction, each in its own savepoint so one bad changeset cannot take the others down.
//! Reads use a separate pool.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Connection, QueryBuilder, Row, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use crate::model::*;
use crate::store::*;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Most events or changesets written in one transaction.
const GROUP_MAX: usize = 512;

enum WriteOp {
    Ingest(Vec<Inbound>, Millis, oneshot::Sender<Result<Vec<Ingested>>>),
    Commit(Box<Changeset>, oneshot::Sender<Result<()>>),
}

pub struct SqliteStore {
    read: SqlitePool,
    write: SqlitePool,
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
}

async fn staffed_queues(conn: &mut SqliteConnection) -> Result<std::collections::HashSet<String>> {
    let v: Vec<String> = sqlx::query_scalar("SELECT DISTINCT q.value FROM agents a, json_each(a.queues) q WHERE a.availability = 'online'")
        .fetch_all(conn)
        .await?;
    Ok(v.into_iter().collect())
}

/// Contexts by conversation id, and conversation ids by `channel:external_id`.
#[derive(Debug, Default)]
struct ContextCache {
    inner: std::sync::Mutex<(HashMap<i64, Context>, HashMap<String, i64>)>,
}

const CACHE_MAX: usize = 50_000;

impl ContextCache {
    fn by_key(&self, key: &str) -> Option<Context> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.1.get(key).and_then(|id| g.0.get(id)).cloned()
    }
    fn by_id(&self, id: i64) -> Option<Context> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .get(&id)
            .cloned()
    }
    fn put(&self, ctx: &Context) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.0.len() >= CACHE_MAX {
            g.0.clear();
            g.1.clear();
        }
        let key = format!("{}:{}", ctx.contact.channel, ctx.contact.external_id);
        g.1.insert(key, ctx.conversation.id);
        g.0.insert(
            ctx.conversation.id,
            Context {
                created: false,
                ..ctx.clone()
            },
        );
    }
    /// After a commit: the cached context becomes what was written.
    fn committed(&self, cs: &Changeset) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some(ctx) = g.0.get_mut(&cs.conversation_id) else {
            return;
        };
        if let Some(c) = &cs.conversation {
            ctx.conversation = c.clone();
        }
        if let Some(c) = &cs.contact {
            ctx.contact = c.clone();
        }
        if let Some(t) = cs.tickets.last() {
            ctx.ticket = t.ticket.status.is_open().then(|| t.ticket.clone());
        }
    }
    fn forget(&self, id: i64) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .remove(&id);
    }
}

impl SqliteStore {
    /// Opens (creating it if missing) and migrates the database at `url`
    /// (`sqlite://path.db`, `sqlite::memory:`).
    pub async fn open(url: &str) -> Result<SqliteStore> {
        let memory = url.contains(":memory:") || url.contains("mode=memory");
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(if memory {
                SqliteJournalMode::Memory
            } else {
                SqliteJournalMode::Wal
            })
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true)
            // 64 MiB of page cache per connection: the hot pages of the inbox, messages and
            // conversations stay in memory.
            .pragma("cache_size", "-65536")
            .pragma("temp_store", "memory");
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(opts.clone())
            .await?;
        MIGRATOR.run(&write).await?;
        // An in-memory database lives in its one connection: read through it too.
        let read = if memory {
            write.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(opts.read_only(true))
                .await?
        };
        let last_ticket: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM tickets")
            .fetch_one(&write)
            .await?;
        let last_message: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM messages")
            .fetch_one(&write)
            .await?;
        let ids = Arc::new(Ids {
            message: last_message.into(),
        });
        let cache = Arc::new(ContextCache::default());
        let (tx, rx) = mpsc::channel(4096);
        // The writer runs on a thread of its own: with hundreds of conversations being decided
        // on the shared runtime, its statement-by-statement wake-ups would otherwise queue
        // behind them, and every conversation waits for the writer.
        let pool = write.clone();
        let wcache = cache.clone();
        std::thread::Builder::new()
            .name("switchyard-sqlite-writer".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(writer(pool, ids, wcache, rx)),
                    Err(e) => tracing::error!(error = %e, "cannot start the SQLite writer"),
                }
            })
            .map_err(|e| {
                StoreError::Corrupt(format!("cannot start the SQLite writer thread: {e}"))
            })?;
        let staffed = staffed_queues(&mut *write.acquire().await?).await?.into();
        Ok(SqliteStore {
            read,
            write,
            writer: tx,
            last_ticket: last_ticket.into(),
            cache,
            staffed,
        })
    }
}

async fn writer(
    pool: SqlitePool,
    ids: Arc<Ids>,
    cache: Arc<ContextCache>,
    mut rx: mpsc::Receiver<WriteOp>,
) {
    while let Some(first) = rx.recv().await {
        let mut ops = vec![first];
        while ops.len() < GROUP_MAX {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        write_group(&pool, &ids, &cache, ops).await;
    }
}

/// Writes a group of operations. Fast path: one transaction for all of them, every inbox
/// event of the group in one multi-row statement. If anything fails, the group is rolled back
/// and each operation is retried in its own transaction, so one bad changeset fails alone.
async fn write_group(pool: &SqlitePool, ids: &Ids, cache: &ContextCache, ops: Vec<WriteOp>) {
    let fast: Result<Vec<GroupResult>> = async {
        let mut conn = pool.acquire().await?;
        let mut tx = conn.begin().await?;
        let events: Vec<Inbound> = ops
            .iter()
            .flat_map(|op| match op {
                WriteOp::Ingest(ev, _, _) => ev.clone(),
                WriteOp::Commit(..) => Vec::new(),
            })
            .collect();
        let now = ops.iter().find_map(|op| match op {
            WriteOp::Ingest(_, now, _) => Some(*now),
            WriteOp::Commit(..) => None,
        });
        let mut ingested = match now {
            Some(now) => insert_inbox(&mut tx, &events, now).await?.into_iter(),
            None => Vec::new().into_iter(),
        };
        let mut results = Vec::with_capacity(ops.len());
        let mut commits: Vec<&Changeset> = Vec::new();
        for op in &ops {
            match op {
                WriteOp::Ingest(ev, _, _) => results.push(GroupResult::Ingest(
                    (&mut ingested).take(ev.len()).collect(),
                )),
                WriteOp::Commit(cs, _) => {
                    commits.push(cs);
                    results.push(GroupResult::Commit);
                }
            }
        }
        apply_group(&mut tx, ids, &commits).await?;
        tx.commit().await?;
        Ok(results)
    }
    .await;
    match fast {
        // Nobody hears "ok" before the COMMIT: acknowledgements follow it.
        Ok(results) => {
            for op in &ops {
                if let WriteOp::Commit(cs, _) = op {
                    cache.committed(cs);
                }
            }
            for (op, r) in ops.into_iter().zip(results) {
                match (op, r) {
                    (WriteOp::Ingest(_, _, reply), GroupResult::Ingest(v)) => {
                        let _ = reply.send(Ok(v));
                    }
                    (WriteOp::Commit(_, reply), _) => {
                        let _ = reply.send(Ok(()));
                    }
                    (WriteOp::Ingest(_, _, reply), GroupResult::Commit) => {
                        let _ = reply
                            .send(Err(StoreError::Corrupt("group results out of step".into())));
                    }
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, ops = ops.len(), "group commit failed; writing one by one");
            for op in ops {
                match op {
                    WriteOp::Ingest(events, now, reply) => {
                        let r: Result<Vec<Ingested>> = async {
                            let mut conn = pool.acquire().await?;
                            let mut tx = conn.begin().await?;
                            let v = insert_inbox(&mut tx, &events, now).await?;
                            tx.commit().await?;
                            Ok(v)
                        }
                        .await;
                        let _ = reply.send(r);
                    }
                    WriteOp::Commit(cs, reply) => {
                        let r: Result<()> = async {
                            let mut conn = pool.acquire().await?;
                            let mut tx = conn.begin().await?;
                            apply_group(&mut tx, ids, &[&cs]).await?;
                            tx.commit().await?;
                            Ok(())
                        }
                        .await;
                        match &r {
                            Ok(()) => cache.committed(&cs),
                            Err(_) => cache.forget(cs.conversation_id),
                        }
                        let _ = reply.send(r);
                    }
                }
            }
        }
    }
}

enum GroupResult {
    Ingest(Vec<Ingested>),
    Commit,
}

async fn insert_inbox(
    conn: &mut SqliteConnection,
    events: &[Inbound],
    now: Millis,
) -> Result<Vec<Ingested>> {
    let mut out = vec![Ingested::Duplicate; events.len()];
    for (chunk_no, chunk) in events.chunks(1000).enumerate() {
        let mut qb =
            QueryBuilder::new("INSERT INTO inbox (channel, provider_id, key, event, received_at) ");
        qb.push_values(chunk, |mut b, e| {
            b.push_bind(e.channel().to_string())
                .push_bind(e.provider_id().to_string())
                .push_bind(e.contact_key())
                .push_bind(serde_json::to_string(e).unwrap_or_default())
                .push_bind(now);
        });
        qb.push(
            " ON CONFLICT (channel, provider_id) DO NOTHING RETURNING id, channel, provider_id",
        );
        let rows = qb.build().fetch_all(&mut *conn).await?;
        // Which event each inserted row is: the first of the chunk with that id.
        let mut first: HashMap<(&str, &str), usize> = HashMap::with_capacity(chunk.len());
        for (i, e) in chunk.iter().enumerate() {
            first.entry((e.channel(), e.provider_id())).or_insert(i);
        }
        for row in rows {
            let (id, ch, pid): (i64, String, String) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            if let Some(i) = first.get(&(ch.as_str(), pid.as_str())) {
                out[chunk_no * 1000 + i] = Ingested::New(id);
            }
        }
    }
    Ok(out)
}

fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// Rows per multi-row statement (SQLite allows 32,766 bound values).
const ROWS: usize = 1000;

/// Writes changesets: a handful of multi-row statements for the whole group, whatever its
/// size, since every statement is a round trip to sqlx's SQLite thread.
async fn apply_group(conn: &mut SqliteConnection, ids: &Ids, group: &[&Changeset]) -> Result<()> {
    use std::sync::atomic::Ordering::SeqCst;
    if group.is_empty() {
        return Ok(());
    }
    for cs in group {
        if let Some(c) = &cs.contact {
            sqlx::query("UPDATE contacts SET name = ?, phone = ?, language = ?, attributes = ? WHERE id = ?")
                .bind(&c.name)
                .bind(&c.phone)
                .bind(&c.language)
                .bind(json(&c.attributes))
                .bind(c.id)
                .execute(&mut *conn)
                .await?;
        }
    }
    let convs: Vec<(&Conversation, Millis)> = group
        .iter()
        .filter_map(|cs| cs.conversation.as_ref().map(|c| (c, cs.at)))
        .collect();
    for chunk in convs.chunks(ROWS) {
        let mut qb = QueryBuilder::new(
            "INSERT INTO conversations (id, contact_id, channel, status, queue, assignee, priority, tags, attributes, flow, \
             last_customer_message_at, queued_at, created_at, updated_at) ",
        );
        qb.push_values(chunk, |mut b, (c, at)| {
            b.push_bind(c.id)
                .push_bind(c.contact_id)
                .push_bind(c.channel.clone())
                .push_bind(c.status.as_str())
                .push_bind(c.queue.clone())
                .push_bind(c.assignee.clone())
                .push_bind(c.priority.as_str())
                .push_bind(json(&c.tags))
                .push_bind(json(&c.attributes))
                .push_bind(c.flow.as_ref().map(json))
                .push_bind(c.last_customer_message_at)
                .push_bind(c.queued_at)
                .push_bind(c.created_at)
                .push_bind(*at);
        });
        qb.push(
            " ON CONFLICT (id) DO UPDATE SET status = excluded.status, queue = excluded.queue, assignee = excluded.assignee, \
             priority = excluded.priority, tags = excluded.tags, attributes = excluded.attributes, flow = excluded.flow, \
             last_customer_message_at = excluded.last_customer_message_at, queued_at = excluded.queued_at, updated_at = excluded.updated_at",
        );
        qb.build().execute(&mut *conn).await?;
    }
    // Messages get their ids here (one writer owns the file), so outbox rows can point at them
    // without reading anything back.
    let mut msgs = Vec::new();
    let mut outbox: Vec<(Option<i64>, i64, String, Millis)> = Vec::new();
    for cs in group {
        let channel = cs
            .conversation
            .as_ref()
            .map(|c| c.channel.clone())
            .unwrap_or_default();
        for m in &cs.messages {
            let id = ids.message.fetch_add(1, SeqCst) + 1;
            if let Some(o) = &m.outbound {
                outbox.push((
                    Some(id),
                    cs.conversation_id,
                    json(&OutboxItem::Message(o.clone())),
                    cs.at,
                ));
            }
            msgs.push((id, cs.conversation_id, channel.clone(), m, cs.at));
        }
        for (connector, body) in &cs.webhooks {
            let item = OutboxItem::Webhook {
                connector: connector.clone(),
                body: body.clone(),
            };
            outbox.push((None, cs.conversation_id, json(&item), cs.at));
        }
    }
    for chunk in msgs.chunks(ROWS) {
        let mut qb = QueryBuilder::new("INSERT INTO messages (id, conversation_id, channel, direction, kind, body, payload, provider_id, author, status, created_at) ");
        qb.push_values(chunk, |mut b, (id, conv, channel, m, at)| {
            b.push_bind(*id)
                .push_bind(*conv)
                .push_bind(channel.clone())
                .push_bind(match m.direction {
                    Direction::In => "in",
                    Direction::Out => "out",
                })
                .push_bind(m.kind.clone())
                .push_bind(m.body.clone())
                .push_bind(json(&m.payload))
                .push_bind(m.provider_id.clone())
                .push_bind(m.author.clone())
                .push_bind(m.status.clone())
                .push_bind(*at);
        });
        qb.build().execute(&mut *conn).await?;
    }
    for chunk in outbox.chunks(ROWS) {
        let mut qb = QueryBuilder::new("INSERT INTO outbox (message_id, conversation_id, payload, status, next_attempt_at, created_at, updated_at) ");
        qb.push_values(chunk, |mut b, (mid, conv, payload, at)| {
            b.push_bind(*mid)
                .push_bind(*conv)
                .push_bind(payload.clone())
                .push_bind("pending")
                .push_bind(*at)
                .push_bind(*at)
                .push_bind(*at);
        });
        qb.build().execute(&mut *conn).await?;
    }
    let notes: Vec<(i64, &String, &String, Millis)> = group
        .iter()
        .flat_map(|cs| {
            cs.notes
                .iter()
                .map(move |(a, t)| (cs.conversation_id, a, t, cs.at))
        })
        .collect();
    for chunk in notes.chunks(ROWS) {
        let mut qb =
            QueryBuilder::new("INSERT INTO notes (conversation_id, author, text, created_at) ");
        qb.push_values(chunk, |mut b, (conv, a, t, at)| {
            b.push_bind(*conv)
                .push_bind((*a).clone())
                .push_bind((*t).clone())
                .push_bind(*at);
        });
        qb.build().execute(&mut *conn).await?;
    }
    // Tickets: created and updated rows in one upsert, their history in one insert.
    let tickets: Vec<(&TicketChange, Millis)> = group
        .iter()
        .flat_map(|cs| cs.tickets.iter().map(move |t| (t, cs.at)))
        .collect();
    for chunk in tickets.chunks(ROWS) {
        let mut qb = QueryBuilder::new("INSERT INTO tickets (id, conversation_id, title, category, priority, status, owner, queue, due_at, created_at, updated_at) ");
        qb.push_values(chunk, |mut b, (t, _)| {
            let k = &t.ticket;
            b.push_bind(k.id)
                .push_bind(k.conversation_id)
                .push_bind(k.title.clone())
                .push_bind(k.category.clone())
                .push_bind(k.priority.as_str())
                .push_bind(k.status.as_str())
                .push_bind(k.owner.clone())
                .push_bind(k.queue.clone())
                .push_bind(k.due_at)
                .push_bind(k.created_at)
                .push_bind(k.updated_at);
        });
        qb.push(
            " ON CONFLICT (id) DO UPDATE SET title = excluded.title, category = excluded.category, priority = excluded.priority, \
             status = excluded.status, owner = excluded.owner, queue = excluded.queue, due_at = excluded.due_at, updated_at = excluded.updated_at",
        );
        qb.build().execute(&mut *conn).await?;
        let mut qb = QueryBuilder::new("INSERT INTO ticket_events (ticket_id, at, actor, change) ");
        qb.push_values(chunk, |mut b, (t, at)| {
            b.push_bind(t.ticket.id)
                .push_bind(*at)
                .push_bind(t.actor.clone())
                .push_bind(json(&t.change));
        });
        qb.build().execute(&mut *conn).await?;
    }
    for cs in group {
        for (kind, name) in &cs.cancel_jobs {
            sqlx::query("UPDATE jobs SET done_at = ? WHERE conversation_id = ? AND kind = ? AND name = ? AND done_at IS NULL")
                .bind(cs.at)
                .bind(cs.conversation_id)
                .bind(kind)
                .bind(name)
                .execute(&mut *conn)
                .await?;
        }
        for a in &cs.assigned {
            sqlx::query("UPDATE agents SET last_assigned_at = ? WHERE id = ?")
                .bind(cs.at)
                .bind(a)
                .execute(&mut *conn)
                .await?;
        }
    }
    let audit: Vec<&AuditRecord> = group.iter().flat_map(|cs| cs.audit.iter()).collect();
    for chunk in audit.chunks(ROWS) {
        let mut qb =
            QueryBuilder::new("INSERT INTO audit (at, actor, entity, action, before, after) ");
        qb.push_values(chunk, |mut b, a| {
            b.push_bind(a.at)
                .push_bind(a.actor.clone())
                .push_bind(a.entity.clone())
                .push_bind(a.action.clone())
                .push_bind(json(&a.before))
                .push_bind(json(&a.after));
        });
        qb.build().execute(&mut *conn).await?;
    }
    let jobs: Vec<(i64, &NewJob)> = group
        .iter()
        .flat_map(|cs| cs.new_jobs.iter().map(move |j| (cs.conversation_id, j)))
        .collect();
    for chunk in jobs.chunks(ROWS) {
        let mut qb = QueryBuilder::new("INSERT INTO jobs (conversation_id, kind, name, due_at) ");
        qb.push_values(chunk, |mut b, (conv, j)| {
            b.push_bind(*conv)
                .push_bind(j.kind.clone())
                .push_bind(j.name.clone())
                .push_bind(j.due_at);
        });
        qb.build().execute(&mut *conn).await?;
    }
    let done: Vec<(i64, Millis)> = group
        .iter()
        .filter_map(|cs| cs.inbox_id.map(|i| (i, cs.at)))
        .collect();
    for chunk in done.chunks(ROWS) {
        // processed_at = the decision's time, per row.
        let mut qb = QueryBuilder::new("UPDATE inbox SET processed_at = CASE id ");
        for (id, at) in chunk {
            qb.push(" WHEN ")
                .push_bind(*id)
                .push(" THEN ")
                .push_bind(*at);
        }
        qb.push(" END WHERE id IN (");
        let mut sep = qb.separated(", ");
        for (id, _) in chunk {
            sep.push_bind(*id);
        }
        qb.push(")");
        qb.build().execute(&mut *conn).await?;
    }
    for cs in group {
        if let Some(id) = cs.job_id {
            sqlx::query("UPDATE jobs SET done_at = ? WHERE id = ?")
                .bind(cs.at)
                .bind(id)
                .execute(&mut *conn)
                .await?;
        }
    }
    let traces: Vec<(&Changeset, &(String, Value))> = group
        .iter()
        .filter_map(|cs| cs.trace.as_ref().map(|t| (*cs, t)))
        .collect();
    for chunk in traces.chunks(ROWS) {
        let mut qb = QueryBuilder::new(
            "INSERT INTO traces (conversation_id, inbox_id, pack_hash, at, trace) ",
        );
        qb.push_values(chunk, |mut b, (cs, (hash, trace))| {
            b.push_bind(cs.conversation_id)
                .push_bind(cs.inbox_id)
                .push_bind(hash.clone())
                .push_bind(cs.at)
                .push_bind(json(trace));
        });
        qb.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Ids this process hands out for the rows it inserts.
#[derive(Debug, Default)]
struct Ids {
    message: std::sync::atomic::AtomicI64,
}

fn parse<T: serde::de::DeserializeOwned>(s: &str, what: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn contact_from(r: &SqliteRow) -> Result<Contact> {
    contact_cols(r, "")
}

fn contact_cols(r: &SqliteRow, p: &str) -> Result<Contact> {
    let c = |n: &str| format!("{p}{n}");
    Ok(Contact {
        id: r.try_get(c("id").as_str())?,
        channel: r.try_get(c("channel").as_str())?,
        external_id: r.try_get(c("external_id").as_str())?,
        name: r.try_get(c("name").as_str())?,
        phone: r.try_get(c("phone").as_str())?,
        language: r.try_get(c("language").as_str())?,
        attributes: parse(
            &r.try_get::<String, _>(c("attributes").as_str())?,
            "contact attributes",
        )?,
    })
}

fn conversation_from(r: &SqliteRow) -> Result<Conversation> {
    let flow: Option<String> = r.try_get("flow")?;
    Ok(Conversation {
        id: r.try_get("id")?,
        contact_id: r.try_get("contact_id")?,
        channel: r.try_get("channel")?,
        status: status_from(&r.try_get::<String, _>("status")?),
        queue: r.try_get("queue")?,
        assignee: r.try_get("assignee")?,
        priority: priority_from(&r.try_get::<String, _>("priority")?),
        tags: parse(&r.try_get::<String, _>("tags")?, "tags")?,
        attributes: parse(&r.try_get::<String, _>("attributes")?, "attributes")?,
        flow: flow.map(|f| parse(&f, "flow state")).transpose()?,
        last_customer_message_at: r.try_get("last_customer_message_at")?,
        queued_at: r.try_get("queued_at")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn ticket_from(r: &SqliteRow) -> Result<Ticket> {
    ticket_cols(r, "")
}

fn ticket_cols(r: &SqliteRow, p: &str) -> Result<Ticket> {
    let c = |n: &str| format!("{p}{n}");
    Ok(Ticket {
        id: r.try_get(c("id").as_str())?,
        conversation_id: r.try_get(c("conversation_id").as_str())?,
        title: r.try_get(c("title").as_str())?,
        category: r.try_get(c("category").as_str())?,
        priority: priority_from(&r.try_get::<String, _>(c("priority").as_str())?),
        status: TicketStatus::parse(&r.try_get::<String, _>(c("status").as_str())?),
        owner: r.try_get(c("owner").as_str())?,
        queue: r.try_get(c("queue").as_str())?,
        due_at: r.try_get(c("due_at").as_str())?,
        created_at: r.try_get(c("created_at").as_str())?,
        updated_at: r.try_get(c("updated_at").as_str())?,
    })
}

/// Conversation, contact and open ticket in one row.
const CONTEXT_SELECT: &str = "SELECT v.*, \
    c.id AS c_id, c.channel AS c_channel, c.external_id AS c_external_id, c.name AS c_name, c.phone AS c_phone, \
    c.language AS c_language, c.attributes AS c_attributes, \
    t.id AS t_id, t.conversation_id AS t_conversation_id, t.title AS t_title, t.category AS t_category, \
    t.priority AS t_priority, t.status AS t_status, t.owner AS t_owner, t.queue AS t_queue, t.due_at AS t_due_at, \
    t.created_at AS t_created_at, t.updated_at AS t_updated_at \
    FROM conversations v JOIN contacts c ON c.id = v.contact_id \
    LEFT JOIN tickets t ON t.id = (SELECT id FROM tickets WHERE conversation_id = v.id AND status IN ('open', 'pending') ORDER BY id DESC LIMIT 1) ";

fn context_from(r: &SqliteRow) -> Result<Context> {
    let ticket = match r.try_get::<Option<i64>, _>("t_id")? {
        Some(_) => Some(ticket_cols(r, "t_")?),
        None => None,
    };
    Ok(Context {
        contact: contact_cols(r, "c_")?,
        conversation: conversation_from(r)?,
        created: false,
        ticket,
    })
}

impl SqliteStore {
    async fn send(&self, op: WriteOp) -> Result<()> {
        self.writer.send(op).await.map_err(|_| StoreError::Closed)
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ingest(&self, events: Vec<Inbound>, now: Millis) -> Result<Vec<Ingested>> {
        let (tx, rx) = oneshot::channel();
        self.send(WriteOp::Ingest(events, now, tx)).await?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn pending_inbox(&self, after: i64, limit: i64) -> Result<Vec<InboxRow>> {
        let rows = sqlx::query("SELECT id, key, event FROM inbox WHERE processed_at IS NULL AND id > ? ORDER BY id LIMIT ?")
            .bind(after)
            .bind(limit)
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(InboxRow {
                    id: r.try_get("id")?,
                    key: r.try_get("key")?,
                    event: parse(&r.try_get::<String, _>("event")?, "inbox event")?,
                })
            })
            .collect()
    }

    async fn skip_inbox(&self, inbox_id: i64, now: Millis, why: &str) -> Result<()> {
        let mut conn = self.write.acquire().await?;
        let mut tx = conn.begin().await?;
        sqlx::query("UPDATE inbox SET processed_at = ? WHERE id = ?")
            .bind(now)
            .bind(inbox_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO audit (at, actor, entity, action, before, after) VALUES (?, 'system', ?, 'skipped', 'null', ?)")
            .bind(now)
            .bind(format!("inbox:{inbox_id}"))
            .bind(json(&why))
            .execute(&mut *tx)
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
        // Fast path: both exist (a read, no write lock).
        let row = sqlx::query(
            "SELECT v.* FROM conversations v JOIN contacts c ON c.id = v.contact_id WHERE c.channel = ? AND c.external_id = ?",
        )
        .bind(channel)
        .bind(external_id)
        .fetch_optional(&self.read)
        .await?;
        if let Some(r) = row {
            let conv = conversation_from(&r)?;
            let contact = self
                .contact(conv.contact_id)
                .await?
                .ok_or_else(|| StoreError::Corrupt("conversation without contact".into()))?;
            return Ok((contact, conv, false));
        }
        let mut conn = self.write.acquire().await?;
        let mut tx = conn.begin().await?;
        let cid: i64 = sqlx::query_scalar(
            "INSERT INTO contacts (channel, external_id, name, phone, created_at) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (channel, external_id) DO UPDATE SET name = COALESCE(contacts.name, excluded.name) RETURNING id",
        )
        .bind(channel)
        .bind(external_id)
        .bind(name)
        .bind(phone)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let inserted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO conversations (contact_id, channel, status, priority, created_at, updated_at) VALUES (?, ?, 'new', 'normal', ?, ?) \
             ON CONFLICT (contact_id, channel) DO NOTHING RETURNING id",
        )
        .bind(cid)
        .bind(channel)
        .bind(now)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(id) = inserted {
            sqlx::query("INSERT INTO audit (at, actor, entity, action, before, after) VALUES (?, 'customer', ?, 'created', 'null', ?)")
                .bind(now)
                .bind(format!("conversation:{id}"))
                .bind(json(&serde_json::json!({ "channel": channel, "contact": cid, "status": "new" })))
                .execute(&mut *tx)
                .await?;
        }
        let r = sqlx::query("SELECT * FROM conversations WHERE contact_id = ? AND channel = ?")
            .bind(cid)
            .bind(channel)
            .fetch_one(&mut *tx)
            .await?;
        let conv = conversation_from(&r)?;
        let cr = sqlx::query("SELECT * FROM contacts WHERE id = ?")
            .bind(cid)
            .fetch_one(&mut *tx)
            .await?;
        let contact = contact_from(&cr)?;
        tx.commit().await?;
        Ok((contact, conv, inserted.is_some()))
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
            let ctx = context_from(&r)?;
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
        row.as_ref().map(context_from).transpose()
    }

    async fn contact(&self, id: i64) -> Result<Option<Contact>> {
        let r = sqlx::query("SELECT * FROM contacts WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        r.as_ref().map(contact_from).transpose()
    }

    async fn conversation(&self, id: i64) -> Result<Option<Conversation>> {
        let r = sqlx::query("SELECT * FROM conversations WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        r.as_ref().map(conversation_from).transpose()
    }

    async fn open_ticket(&self, conversation_id: i64) -> Result<Option<Ticket>> {
        let r = sqlx::query("SELECT * FROM tickets WHERE conversation_id = ? AND status IN ('open', 'pending') ORDER BY id DESC LIMIT 1")
            .bind(conversation_id)
            .fetch_optional(&self.read)
            .await?;
        r.as_ref().map(ticket_from).transpose()
    }

    async fn allocate_id(&self, counter: &str) -> Result<i64> {
        if counter == "ticket" {
            return Ok(self
                .last_ticket
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                + 1);
        }
        let mut conn = self.write.acquire().await?;
        let v: i64 = sqlx::query_scalar(
            "INSERT INTO counters (name, value) VALUES (?, 1) ON CONFLICT (name) DO UPDATE SET value = value + 1 RETURNING value",
        )
        .bind(counter)
        .fetch_one(&mut *conn)
        .await?;
        Ok(v)
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
            "SELECT a.id, a.capacity, a.last_assigned_at, \
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
            };
            if l.open < l.capacity {
                out.push(l);
            }
        }
        Ok(out)
    }

    async fn waiting_conversations(&self, queue: &str, limit: i64) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM conversations WHERE queue = ? AND assignee IS NULL AND status <> 'resolved' \
             ORDER BY queued_at, id LIMIT ?",
        )
        .bind(queue)
        .bind(limit)
        .fetch_all(&self.read)
        .await?)
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
        self.send(WriteOp::Commit(Box::new(cs), tx)).await?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn due_jobs(&self, now: Millis, limit: i64) -> Result<Vec<Job>> {
        let rows = sqlx::query("SELECT id, conversation_id, kind, name, due_at FROM jobs WHERE done_at IS NULL AND due_at <= ? ORDER BY due_at, id LIMIT ?")
            .bind(now)
            .bind(limit)
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Job {
                    id: r.try_get("id")?,
                    conversation_id: r.try_get("conversation_id")?,
                    kind: r.try_get("kind")?,
                    name: r.try_get("name")?,
                    due_at: r.try_get("due_at")?,
                })
            })
            .collect()
    }

    async fn claim_outbox(&self, now: Millis, limit: i64) -> Result<Vec<OutboxRow>> {
        let mut conn = self.write.acquire().await?;
        let rows = sqlx::query(
            "UPDATE outbox SET status = 'sending', attempts = attempts + 1, updated_at = ? \
             WHERE id IN (SELECT id FROM outbox WHERE status = 'pending' AND next_attempt_at <= ? ORDER BY id LIMIT ?) \
             RETURNING id, message_id, attempts, payload",
        )
        .bind(now)
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
        let mut out: Vec<OutboxRow> = rows
            .iter()
            .map(|r| {
                Ok(OutboxRow {
                    id: r.try_get("id")?,
                    message_id: r.try_get("message_id")?,
                    attempts: r.try_get::<i64, _>("attempts")? as u32,
                    item: parse(&r.try_get::<String, _>("payload")?, "outbox payload")?,
                })
            })
            .collect::<Result<_>>()?;
        out.sort_by_key(|r| r.id);
        Ok(out)
    }

    async fn outbox_sent(&self, id: i64, provider_id: &str, now: Millis) -> Result<()> {
        let mut conn = self.write.acquire().await?;
        let mut tx = conn.begin().await?;
        sqlx::query("UPDATE outbox SET status = 'sent', updated_at = ? WHERE id = ?")
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE messages SET status = 'sent', provider_id = ? WHERE id = (SELECT message_id FROM outbox WHERE id = ?)")
            .bind(provider_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn outbox_failed(
        &self,
        id: i64,
        error: &str,
        retry_at: Option<Millis>,
        now: Millis,
    ) -> Result<()> {
        let mut conn = self.write.acquire().await?;
        let mut tx = conn.begin().await?;
        match retry_at {
            Some(at) => {
                sqlx::query("UPDATE outbox SET status = 'pending', next_attempt_at = ?, last_error = ?, updated_at = ? WHERE id = ?")
                    .bind(at)
                    .bind(error)
                    .bind(now)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            None => {
                sqlx::query("UPDATE outbox SET status = 'failed', last_error = ?, updated_at = ? WHERE id = ?")
                    .bind(error)
                    .bind(now)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE messages SET status = 'failed', error = ? WHERE id = (SELECT message_id FROM outbox WHERE id = ?)")
                    .bind(error)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn recover_outbox(&self, now: Millis) -> Result<u64> {
        let mut conn = self.write.acquire().await?;
        let mut tx = conn.begin().await?;
        sqlx::query(
            "UPDATE messages SET status = 'unknown', error = 'the process stopped while sending; not sent again' \
             WHERE id IN (SELECT message_id FROM outbox WHERE status = 'sending')",
        )
        .execute(&mut *tx)
        .await?;
        let n = sqlx::query(
            "UPDATE outbox SET status = 'unknown', updated_at = ? WHERE status = 'sending'",
        )
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n)
    }

    async fn record_status(
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
        let new_rank = RANK.replace("{}", "?");
        let old_rank = RANK.replace("{}", "status");
        let mut conn = self.write.acquire().await?;
        let mut tx = conn.begin().await?;
        let updated = sqlx::query(&format!(
            "UPDATE messages SET status = ?, error = COALESCE(?, error) WHERE channel = ? AND provider_id = ? AND direction = 'out' AND {old_rank} < {new_rank}"
        ))
        .bind(status)
        .bind(error)
        .bind(channel)
        .bind(provider_id)
        .bind(status)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let outcome = if updated > 0 {
            StatusRecorded::Updated
        } else {
            let known: Option<i64> =
                sqlx::query_scalar("SELECT id FROM messages WHERE channel = ? AND provider_id = ?")
                    .bind(channel)
                    .bind(provider_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            match known {
                Some(_) => StatusRecorded::Unchanged,
                None => {
                    sqlx::query("INSERT INTO audit (at, actor, entity, action, before, after) VALUES (?, 'system', ?, 'status_for_unknown_message', 'null', ?)")
                        .bind(now)
                        .bind(format!("message:{channel}:{provider_id}"))
                        .bind(json(&serde_json::json!({ "status": status, "error": error })))
                        .execute(&mut *tx)
                        .await?;
                    StatusRecorded::UnknownMessage
                }
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn claim(&self, conversation_id: i64, agent: &str, now: Millis) -> Result<Claim> {
        let mut conn = self.write.acquire().await?;
        let mut tx = conn.begin().await?;
        let done = sqlx::query("UPDATE conversations SET assignee = ?, updated_at = ? WHERE id = ? AND assignee IS NULL")
            .bind(agent)
            .bind(now)
            .bind(conversation_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if done == 1 {
            sqlx::query("INSERT INTO audit (at, actor, entity, action, before, after) VALUES (?, ?, ?, 'assigned', ?, ?)")
                .bind(now)
                .bind(agent)
                .bind(format!("conversation:{conversation_id}"))
                .bind(json(&serde_json::json!({ "assignee": null })))
                .bind(json(&serde_json::json!({ "assignee": agent, "how": "claim" })))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            // After the COMMIT, so a reader cannot put the old owner back.
            self.cache.forget(conversation_id);
            return Ok(Claim::Claimed);
        }
        let owner: Option<Option<String>> =
            sqlx::query_scalar("SELECT assignee FROM conversations WHERE id = ?")
                .bind(conversation_id)
                .fetch_optional(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(match owner {
            None => Claim::NotFound,
            Some(Some(o)) if o == agent => Claim::Claimed,
            Some(Some(o)) => Claim::Taken(o),
            Some(None) => Claim::NotFound,
        })
    }

    async fn upsert_agent(&self, a: &Agent, now: Millis) -> Result<()> {
        let mut conn = self.write.acquire().await?;
        let mut tx = conn.begin().await?;
        sqlx::query(
            "INSERT INTO agents (id, name, role, queues, capacity, availability) VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, role = excluded.role, queues = excluded.queues, \
             capacity = excluded.capacity, availability = excluded.availability",
        )
        .bind(&a.id)
        .bind(&a.name)
        .bind(&a.role)
        .bind(json(&a.queues))
        .bind(a.capacity as i64)
        .bind(&a.availability)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO audit (at, actor, entity, action, before, after) VALUES (?, 'system', ?, 'saved', 'null', ?)")
            .bind(now)
            .bind(format!("agent:{}", a.id))
            .bind(json(a))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let staffed = staffed_queues(&mut conn).await?;
        *self.staffed.write().unwrap_or_else(|e| e.into_inner()) = staffed;
        Ok(())
    }

    async fn messages(&self, conversation_id: i64) -> Result<Vec<Message>> {
        let rows = sqlx::query("SELECT * FROM messages WHERE conversation_id = ? ORDER BY id")
            .bind(conversation_id)
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Message {
                    id: r.try_get("id")?,
                    conversation_id: r.try_get("conversation_id")?,
                    direction: if r.try_get::<String, _>("direction")? == "in" {
                        Direction::In
                    } else {
                        Direction::Out
                    },
                    kind: r.try_get("kind")?,
                    body: r.try_get("body")?,
                    payload: parse(&r.try_get::<String, _>("payload")?, "message payload")?,
                    provider_id: r.try_get("provider_id")?,
                    author: r.try_get("author")?,
                    status: r.try_get("status")?,
                    error: r.try_get("error")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    async fn notes(&self, conversation_id: i64) -> Result<Vec<Note>> {
        let rows = sqlx::query("SELECT * FROM notes WHERE conversation_id = ? ORDER BY id")
            .bind(conversation_id)
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Note {
                    id: r.try_get("id")?,
                    conversation_id: r.try_get("conversation_id")?,
                    author: r.try_get("author")?,
                    text: r.try_get("text")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    async fn tickets(&self, conversation_id: i64) -> Result<Vec<Ticket>> {
        let rows = sqlx::query("SELECT * FROM tickets WHERE conversation_id = ? ORDER BY id")
            .bind(conversation_id)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(ticket_from).collect()
    }

    async fn ticket_history(&self, ticket_id: i64) -> Result<Vec<Value>> {
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT change FROM ticket_events WHERE ticket_id = ? ORDER BY id")
                .bind(ticket_id)
                .fetch_all(&self.read)
                .await?;
        rows.iter().map(|s| parse(s, "ticket event")).collect()
    }

    async fn audit(&self, entity: &str) -> Result<Vec<AuditRecord>> {
        let rows = sqlx::query("SELECT * FROM audit WHERE entity = ? ORDER BY id")
            .bind(entity)
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditRecord {
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    entity: r.try_get("entity")?,
                    action: r.try_get("action")?,
                    before: parse(&r.try_get::<String, _>("before")?, "audit")?,
                    after: parse(&r.try_get::<String, _>("after")?, "audit")?,
                })
            })
            .collect()
    }

    async fn traces(&self, conversation_id: i64) -> Result<Vec<(String, Value)>> {
        let rows = sqlx::query(
            "SELECT pack_hash, trace FROM traces WHERE conversation_id = ? ORDER BY id",
        )
        .bind(conversation_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("pack_hash")?,
                    parse(&r.try_get::<String, _>("trace")?, "trace")?,
                ))
            })
            .collect()
    }

    async fn outbox_payloads(&self) -> Result<Vec<(String, Value)>> {
        let rows = sqlx::query("SELECT status, payload FROM outbox ORDER BY id")
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("status")?,
                    parse(&r.try_get::<String, _>("payload")?, "outbox payload")?,
                ))
            })
            .collect()
    }

    async fn conversation_ids(&self) -> Result<Vec<i64>> {
        Ok(
            sqlx::query_scalar("SELECT id FROM conversations ORDER BY id")
                .fetch_all(&self.read)
                .await?,
        )
    }
}
