//! The SQLite writer: one thread owning the only writing connection (rusqlite).
//!
//! Every write of the store arrives here as a [`WriteOp`]. The thread takes whatever is
//! pending (up to [`GROUP_MAX`]) and writes all inbox batches and changesets of it in **one
//! transaction**, with cached prepared statements, then acknowledges them — nobody hears
//! "ok" before the COMMIT. If the group fails, it is rolled back and every operation is
//! retried in its own transaction, so one bad changeset fails alone. Other writes (claims,
//! outbox bookkeeping, agents) run as closures on the same connection, one transaction each.
//!
//! Why a thread of its own with rusqlite rather than sqlx: sqlx runs each SQLite statement on
//! a worker thread of its own, and the hand-off costs more than the statement (DESIGN.md §7);
//! here a statement is a function call. JSON is encoded by the caller ([`Encoded::new`],
//! [`EncodedEvent::new`]), on the runtime's threads, so the writer only binds and steps.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::ContextCache;
use crate::model::*;
use crate::store::*;

/// Most operations written in one transaction.
const GROUP_MAX: usize = 512;

/// A write that is not an inbox batch or a changeset: runs alone, in its own transaction.
pub(super) type Job = Box<dyn FnOnce(&mut Connection) + Send>;

pub(super) enum WriteOp {
    Ingest(
        Vec<EncodedEvent>,
        Millis,
        oneshot::Sender<Result<Vec<Ingested>>>,
    ),
    Commit(Box<Encoded>, oneshot::Sender<Result<()>>),
    Run(Job),
}

/// An inbound event ready to be inserted into the inbox.
pub(super) struct EncodedEvent {
    channel: String,
    provider_id: String,
    key: String,
    json: String,
}

impl EncodedEvent {
    pub(super) fn new(e: &Inbound) -> EncodedEvent {
        EncodedEvent {
            channel: e.channel().to_string(),
            provider_id: e.provider_id().to_string(),
            key: e.contact_key(),
            json: json(e),
        }
    }
}

/// A changeset with its JSON encoded and its large values dropped, on the caller's thread.
pub(super) struct Encoded {
    /// The changeset without its trace, audit values and message payloads.
    pub(super) cs: Changeset,
    trace: Option<(String, String)>,
    /// `(before, after)` per audit record.
    audit: Vec<(String, String)>,
    /// Per message: its payload, and its outbox row `(payload, lane)` if it is outbound.
    messages: Vec<(String, Option<(String, String)>)>,
    /// `(payload, lane)` per webhook.
    webhooks: Vec<(String, String)>,
    ticket_changes: Vec<String>,
}

impl Encoded {
    pub(super) fn new(mut cs: Changeset) -> Encoded {
        use std::mem::take;
        let trace = cs.trace.take().map(|(hash, t)| (hash, json(&t)));
        let audit = cs
            .audit
            .iter_mut()
            .map(|a| (json(&take(&mut a.before)), json(&take(&mut a.after))))
            .collect();
        let messages = cs
            .messages
            .iter_mut()
            .map(|m| {
                let payload = json(&take(&mut m.payload));
                let outbox = m.outbound.take().map(|o| {
                    let item = OutboxItem::Message(Box::new(o));
                    (json(&item), item.destination())
                });
                (payload, outbox)
            })
            .collect();
        let webhooks = take(&mut cs.webhooks)
            .into_iter()
            .map(|(connector, body)| {
                let item = OutboxItem::Webhook { connector, body };
                (json(&item), item.destination())
            })
            .collect();
        let ticket_changes = cs
            .tickets
            .iter_mut()
            .map(|t| json(&take(&mut t.change)))
            .collect();
        Encoded {
            cs,
            trace,
            audit,
            messages,
            webhooks,
            ticket_changes,
        }
    }
}

pub(super) use crate::store::rows::json;

/// Opens a connection to the (migrated) database file with the store's settings.
pub(super) fn connect(path: &Path, synchronous: &str) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(30))?;
    // 64 MiB of page cache: the hot pages of the inbox, messages and conversations stay in
    // memory. WAL with FULL sync (the default): a COMMIT is on disk before it is acknowledged,
    // against power loss too; NORMAL (an explicit choice in the URL) is durable against a
    // process crash only, up to the last checkpoint against power loss.
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = ON; \
         PRAGMA cache_size = -16384; PRAGMA temp_store = MEMORY;"
    ))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Starts the checkpointer: a thread with its own connection that copies the WAL back into
/// the database every 100 ms (`PRAGMA wal_checkpoint(PASSIVE)`, which never blocks the
/// writer or the readers), so the writer's COMMITs never pay for it. The writer's automatic
/// checkpoint stays on as a backstop at 10,000 pages (~40 MB of WAL), should this thread fall
/// behind. It ends when `stop`'s sender is dropped.
pub(super) fn start_checkpointer(
    path: &Path,
    synchronous: &str,
    stop: std::sync::mpsc::Receiver<()>,
) -> Result<()> {
    let conn = connect(path, synchronous)?;
    std::thread::Builder::new()
        .name("switchyard-sqlite-checkpointer".into())
        .spawn(move || {
            use std::sync::mpsc::RecvTimeoutError;
            while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(Duration::from_millis(100))
            {
                let r: rusqlite::Result<(i64, i64, i64)> =
                    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    });
                if let Err(e) = r {
                    tracing::warn!(error = %e, "WAL checkpoint failed; retrying");
                }
            }
        })
        .map_err(|e| StoreError::Corrupt(format!("cannot start the SQLite checkpointer: {e}")))?;
    Ok(())
}

/// Starts the writer thread on `conn`. It ends when every sender is dropped.
pub(super) fn start(
    mut conn: Connection,
    next_message_id: i64,
    cache: Arc<ContextCache>,
) -> Result<mpsc::Sender<WriteOp>> {
    let (tx, mut rx) = mpsc::channel::<WriteOp>(4096);
    conn.execute_batch("PRAGMA wal_autocheckpoint = 10000;")?;
    let ids = AtomicI64::new(next_message_id);
    std::thread::Builder::new()
        .name("switchyard-sqlite-writer".into())
        .spawn(move || {
            while let Some(first) = rx.blocking_recv() {
                let mut group = Vec::new();
                let mut jobs = Vec::new();
                let mut take = |op| match op {
                    WriteOp::Run(f) => jobs.push(f),
                    op => group.push(op),
                };
                take(first);
                for _ in 1..GROUP_MAX {
                    match rx.try_recv() {
                        Ok(op) => take(op),
                        Err(_) => break,
                    }
                }
                if !group.is_empty() {
                    write_group(&mut conn, &ids, &cache, group);
                }
                for f in jobs {
                    f(&mut conn);
                }
            }
        })
        .map_err(|e| StoreError::Corrupt(format!("cannot start the SQLite writer thread: {e}")))?;
    Ok(tx)
}

/// Writes a group of inbox batches and changesets: one transaction for all of them; if
/// anything fails, each again in its own transaction.
fn write_group(conn: &mut Connection, ids: &AtomicI64, cache: &ContextCache, ops: Vec<WriteOp>) {
    match write_all(conn, ids, &ops) {
        Ok(mut ingested) => {
            ingested.reverse();
            for op in ops {
                match op {
                    WriteOp::Ingest(_, _, reply) => {
                        let _ = reply.send(Ok(ingested.pop().unwrap_or_default()));
                    }
                    WriteOp::Commit(e, reply) => {
                        cache.committed(&e.cs);
                        let _ = reply.send(Ok(()));
                    }
                    WriteOp::Run(f) => f(conn),
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, ops = ops.len(), "group commit failed; writing one by one");
            for op in ops {
                match op {
                    WriteOp::Ingest(events, now, reply) => {
                        let r = in_tx(conn, |tx| insert_inbox(tx, &events, now));
                        let _ = reply.send(r);
                    }
                    WriteOp::Commit(e, reply) => {
                        let r = in_tx(conn, |tx| apply(tx, ids, &[&e]));
                        match &r {
                            Ok(()) => cache.committed(&e.cs),
                            Err(_) => cache.forget(e.cs.conversation_id),
                        }
                        let _ = reply.send(r);
                    }
                    WriteOp::Run(f) => f(conn),
                }
            }
        }
    }
}

fn write_all(
    conn: &mut Connection,
    ids: &AtomicI64,
    ops: &[WriteOp],
) -> Result<Vec<Vec<Ingested>>> {
    in_tx(conn, |tx| {
        let mut ingested = Vec::new();
        let mut commits = Vec::new();
        for op in ops {
            match op {
                WriteOp::Ingest(events, now, _) => ingested.push(insert_inbox(tx, events, *now)?),
                WriteOp::Commit(e, _) => commits.push(&**e),
                WriteOp::Run(_) => {}
            }
        }
        apply(tx, ids, &commits)?;
        Ok(ingested)
    })
}

/// Runs `f` in an immediate transaction: committed if it returns `Ok`, rolled back if not.
pub(super) fn in_tx<T>(
    conn: &mut Connection,
    f: impl FnOnce(&Transaction<'_>) -> Result<T>,
) -> Result<T> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let v = f(&tx)?;
    tx.commit()?;
    Ok(v)
}

fn insert_inbox(
    tx: &Transaction<'_>,
    events: &[EncodedEvent],
    now: Millis,
) -> Result<Vec<Ingested>> {
    let mut st = tx.prepare_cached(
        "INSERT INTO inbox (channel, provider_id, key, event, received_at) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (channel, provider_id) DO NOTHING RETURNING id",
    )?;
    events
        .iter()
        .map(|e| {
            let id: Option<i64> = st
                .query_row(params![e.channel, e.provider_id, e.key, e.json, now], |r| {
                    r.get(0)
                })
                .optional()?;
            Ok(id.map_or(Ingested::Duplicate, Ingested::New))
        })
        .collect()
}

/// Writes changesets, row by row through cached statements.
fn apply(tx: &Transaction<'_>, ids: &AtomicI64, group: &[&Encoded]) -> Result<()> {
    let mut contact = tx.prepare_cached(
        "UPDATE contacts SET name = ?1, phone = ?2, language = ?3, attributes = ?4, language_set_by = ?6 WHERE id = ?5",
    )?;
    let mut conversation = tx.prepare_cached(
        "INSERT INTO conversations (id, contact_id, channel, status, queue, assignee, priority, tags, attributes, flow, \
         last_customer_message_at, queued_at, created_at, updated_at, sla, asking) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) \
         ON CONFLICT (id) DO UPDATE SET status = excluded.status, queue = excluded.queue, assignee = excluded.assignee, \
         priority = excluded.priority, tags = excluded.tags, attributes = excluded.attributes, flow = excluded.flow, \
         last_customer_message_at = excluded.last_customer_message_at, queued_at = excluded.queued_at, updated_at = excluded.updated_at, \
         sla = excluded.sla, asking = excluded.asking",
    )?;
    let mut message = tx.prepare_cached(
        "INSERT INTO messages (id, conversation_id, channel, direction, kind, body, payload, provider_id, author, status, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    let mut outbox = tx.prepare_cached(
        "INSERT INTO outbox (message_id, conversation_id, payload, lane, status, next_attempt_at, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?5, 'pending', ?4, ?4, ?4)",
    )?;
    let mut note = tx.prepare_cached(
        "INSERT INTO notes (conversation_id, author, text, created_at) VALUES (?1, ?2, ?3, ?4)",
    )?;
    let mut ticket = tx.prepare_cached(
        "INSERT INTO tickets (id, conversation_id, title, category, priority, status, owner, queue, due_at, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
         ON CONFLICT (id) DO UPDATE SET title = excluded.title, category = excluded.category, priority = excluded.priority, \
         status = excluded.status, owner = excluded.owner, queue = excluded.queue, due_at = excluded.due_at, updated_at = excluded.updated_at",
    )?;
    let mut ticket_event = tx.prepare_cached(
        "INSERT INTO ticket_events (ticket_id, at, actor, change) VALUES (?1, ?2, ?3, ?4)",
    )?;
    let mut cancel_job = tx.prepare_cached(
        "UPDATE jobs SET done_at = ?1 WHERE conversation_id = ?2 AND kind = ?3 AND name = ?4 AND done_at IS NULL",
    )?;
    let mut assigned =
        tx.prepare_cached("UPDATE agents SET last_assigned_at = ?1 WHERE id = ?2")?;
    let mut audit = tx.prepare_cached(
        "INSERT INTO audit (at, actor, entity, action, before, after) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    let mut new_job = tx.prepare_cached(
        "INSERT INTO jobs (conversation_id, kind, name, due_at) VALUES (?1, ?2, ?3, ?4)",
    )?;
    let mut processed = tx.prepare_cached("UPDATE inbox SET processed_at = ?1 WHERE id = ?2")?;
    let mut job_done = tx.prepare_cached("UPDATE jobs SET done_at = ?1 WHERE id = ?2")?;
    let mut trace = tx.prepare_cached(
        "INSERT INTO traces (conversation_id, inbox_id, pack_hash, at, trace) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for e in group {
        let cs = &e.cs;
        let at = cs.at;
        if let Some(c) = &cs.contact {
            contact.execute(params![
                c.name,
                c.phone,
                c.language,
                json(&c.attributes),
                c.id,
                c.language_set_by
            ])?;
        }
        if let Some(c) = &cs.conversation {
            conversation.execute(params![
                c.id,
                c.contact_id,
                c.channel,
                c.status.as_str(),
                c.queue,
                c.assignee,
                c.priority.as_str(),
                json(&c.tags),
                json(&c.attributes),
                c.flow.as_ref().map(json),
                c.last_customer_message_at,
                c.queued_at,
                c.created_at,
                at,
                (!c.sla.is_empty()).then(|| json(&c.sla)),
                c.asking.as_ref().map(json),
            ])?;
        }
        let channel = cs
            .conversation
            .as_ref()
            .map(|c| c.channel.as_str())
            .unwrap_or("");
        // Messages get their ids here (one writer owns the file), so outbox rows can point at
        // them without reading anything back.
        for (m, (payload, out)) in cs.messages.iter().zip(&e.messages) {
            let id = ids.fetch_add(1, SeqCst) + 1;
            let direction = match m.direction {
                Direction::In => "in",
                Direction::Out => "out",
            };
            message.execute(params![
                id,
                cs.conversation_id,
                channel,
                direction,
                m.kind,
                m.body,
                payload,
                m.provider_id,
                m.author,
                m.status,
                at
            ])?;
            if let Some((item, lane)) = out {
                outbox.execute(params![id, cs.conversation_id, item, at, lane])?;
            }
        }
        for (item, lane) in &e.webhooks {
            outbox.execute(params![None::<i64>, cs.conversation_id, item, at, lane])?;
        }
        for (author, text) in &cs.notes {
            note.execute(params![cs.conversation_id, author, text, at])?;
        }
        for (t, change) in cs.tickets.iter().zip(&e.ticket_changes) {
            let k = &t.ticket;
            ticket.execute(params![
                k.id,
                k.conversation_id,
                k.title,
                k.category,
                k.priority.as_str(),
                k.status.as_str(),
                k.owner,
                k.queue,
                k.due_at,
                k.created_at,
                k.updated_at
            ])?;
            ticket_event.execute(params![k.id, at, t.actor, change])?;
        }
        for (kind, name) in &cs.cancel_jobs {
            cancel_job.execute(params![at, cs.conversation_id, kind.as_str(), name])?;
        }
        for a in &cs.assigned {
            assigned.execute(params![at, a])?;
        }
        for (a, (before, after)) in cs.audit.iter().zip(&e.audit) {
            audit.execute(params![a.at, a.actor, a.entity, a.action, before, after])?;
        }
        for j in &cs.new_jobs {
            new_job.execute(params![
                cs.conversation_id,
                j.kind.as_str(),
                j.name,
                j.due_at
            ])?;
        }
        if let Some(id) = cs.inbox_id {
            processed.execute(params![at, id])?;
        }
        if let Some(id) = cs.job_id {
            job_done.execute(params![at, id])?;
        }
        if let Some((hash, t)) = &e.trace {
            trace.execute(params![cs.conversation_id, cs.inbox_id, hash, at, t])?;
        }
        match &cs.schedule {
            Some((name, Some(next))) => {
                tx.prepare_cached(
                    "UPDATE schedules SET next_at = ?1, last_fired_at = ?2 WHERE name = ?3",
                )?
                .execute(params![next, at, name])?;
            }
            Some((name, None)) => {
                tx.prepare_cached("DELETE FROM schedules WHERE name = ?1")?
                    .execute(params![name])?;
            }
            None => {}
        }
    }
    Ok(())
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Db(e.to_string())
    }
}
