//! The simple reads, written once for both stores: the same SQL (placeholders `$1`, `$2` …,
//! which sqlx passes to SQLite as numbered parameters too) and the same row mappers
//! ([`super::rows`]). Each backend's `Store` methods delegate here with its read pool; what
//! differs by dialect (JSON functions, the SQLite context cache, writes) stays in the backend.

use serde_json::Value;
use sqlx::Row;

use crate::model::*;
use crate::store::queries;
use crate::store::rows::{self, parse};
use crate::store::*;

/// The reads over one backend's pool.
pub(crate) struct Reads<'p, DB: sqlx::Database>(pub &'p sqlx::Pool<DB>);

fn all<R, T>(rows: &[R], f: impl Fn(&R) -> Result<T>) -> Result<Vec<T>> {
    rows.iter().map(f).collect()
}

/// The same methods for each backend: a macro rather than bounds over `sqlx::Database`,
/// whose executor and encoding bounds would outweigh the code they share.
macro_rules! reads {
    ($db:ty) => {
        impl Reads<'_, $db> {
        pub(crate) async fn contact(&self, id: i64) -> Result<Option<Contact>> {
            let r = sqlx::query("SELECT * FROM contacts WHERE id = $1")
                .bind(id)
                .fetch_optional(self.0)
                .await?;
            r.as_ref().map(|r| rows::contact(r, "")).transpose()
        }

        pub(crate) async fn conversation(&self, id: i64) -> Result<Option<Conversation>> {
            let r = sqlx::query("SELECT * FROM conversations WHERE id = $1")
                .bind(id)
                .fetch_optional(self.0)
                .await?;
            r.as_ref().map(rows::conversation).transpose()
        }

        pub(crate) async fn next_job_at(&self) -> Result<Option<Millis>> {
            Ok(
                sqlx::query_scalar("SELECT min(due_at) FROM jobs WHERE done_at IS NULL")
                    .fetch_one(self.0)
                    .await?,
            )
        }

        pub(crate) async fn agent(&self, id: &str) -> Result<Option<Agent>> {
            let r = sqlx::query("SELECT * FROM agents WHERE id = $1")
                .bind(id)
                .fetch_optional(self.0)
                .await?;
            r.as_ref().map(rows::agent).transpose()
        }

        pub(crate) async fn media_to_fetch(
            &self,
            after: i64,
            now: Millis,
            limit: i64,
        ) -> Result<Vec<MediaTask>> {
            let task = |r: &_| -> Result<MediaTask> {
                let r: &<$db as sqlx::Database>::Row = r;
                Ok(MediaTask {
                    message_id: r.try_get("id")?,
                    conversation_id: r.try_get("conversation_id")?,
                    channel: r.try_get("channel")?,
                    payload: parse(&r.try_get::<String, _>("payload")?, "message payload")?,
                    attempts: r.try_get::<i64, _>("attempts")? as u32,
                })
            };
            // New media messages (by the partial index on media messages), then due retries.
            let fresh = sqlx::query(
                "SELECT m.id, m.conversation_id, m.channel, m.payload, CAST(0 AS BIGINT) AS attempts FROM messages m \
                 WHERE m.kind = 'media' AND m.id > $1 AND m.direction = 'in' \
                 AND NOT EXISTS (SELECT 1 FROM media x WHERE x.message_id = m.id) ORDER BY m.id LIMIT $2",
            )
            .bind(after)
            .bind(limit)
            .fetch_all(self.0)
            .await?;
            let due = sqlx::query(
                "SELECT m.id, m.conversation_id, m.channel, m.payload, x.attempts FROM media x \
                 JOIN messages m ON m.id = x.message_id \
                 WHERE x.status = 'retry' AND x.next_attempt_at <= $1 ORDER BY x.next_attempt_at LIMIT $2",
            )
            .bind(now)
            .bind(limit)
            .fetch_all(self.0)
            .await?;
            fresh.iter().chain(due.iter()).map(task).collect()
        }

        pub(crate) async fn media(&self, message_id: i64) -> Result<Option<MediaRecord>> {
            let r = sqlx::query("SELECT * FROM media WHERE message_id = $1")
                .bind(message_id)
                .fetch_optional(self.0)
                .await?;
            r.map(|r| {
                Ok(MediaRecord {
                    message_id: r.try_get("message_id")?,
                    conversation_id: r.try_get("conversation_id")?,
                    status: r.try_get("status")?,
                    mime_type: r.try_get("mime_type")?,
                    bytes: r.try_get("bytes")?,
                    error: r.try_get("error")?,
                    attempts: r.try_get::<i64, _>("attempts")? as u32,
                    next_attempt_at: r.try_get("next_attempt_at")?,
                    updated_at: r.try_get("updated_at")?,
                })
            })
            .transpose()
        }

        pub(crate) async fn password_hash(&self, agent: &str) -> Result<Option<String>> {
            Ok(sqlx::query_scalar("SELECT password_hash FROM agents WHERE id = $1")
                .bind(agent)
                .fetch_optional(self.0)
                .await?
                .flatten())
        }

        pub(crate) async fn agents(&self) -> Result<Vec<Agent>> {
            let rows = sqlx::query("SELECT * FROM agents ORDER BY id")
                .fetch_all(self.0)
                .await?;
            all(&rows, rows::agent)
        }

        pub(crate) async fn owned_conversations(&self, agent: &str) -> Result<Vec<i64>> {
            Ok(sqlx::query_scalar(
                "SELECT id FROM conversations WHERE assignee = $1 AND status <> 'resolved' ORDER BY id",
            )
            .bind(agent)
            .fetch_all(self.0)
            .await?)
        }

        pub(crate) async fn due_schedules(&self, now: Millis) -> Result<Vec<(String, Millis)>> {
            Ok(sqlx::query_as(
                "SELECT name, next_at FROM schedules WHERE next_at <= $1 ORDER BY next_at, name",
            )
            .bind(now)
            .fetch_all(self.0)
            .await?)
        }

        pub(crate) async fn backlog(&self) -> Result<(i64, Vec<(String, i64)>)> {
            let inbox: i64 =
                sqlx::query_scalar("SELECT count(*) FROM inbox WHERE processed_at IS NULL")
                    .fetch_one(self.0)
                    .await?;
            let outbox: Vec<(String, i64)> =
                sqlx::query_as("SELECT status, count(*) FROM outbox GROUP BY status ORDER BY status")
                    .fetch_all(self.0)
                    .await?;
            Ok((inbox, outbox))
        }

        pub(crate) async fn ticket(&self, id: i64) -> Result<Option<Ticket>> {
            let r = sqlx::query("SELECT * FROM tickets WHERE id = $1")
                .bind(id)
                .fetch_optional(self.0)
                .await?;
            r.as_ref().map(|r| rows::ticket(r, "")).transpose()
        }

        pub(crate) async fn token(&self, hash: &str) -> Result<Option<TokenRecord>> {
            let r = sqlx::query(
                "SELECT id, role, agent, revoked_at, kind, expires_at FROM tokens WHERE hash = $1",
            )
                .bind(hash)
                .fetch_optional(self.0)
                .await?;
            r.map(|r| {
                Ok(TokenRecord {
                    id: r.try_get("id")?,
                    role: r.try_get("role")?,
                    agent: r.try_get("agent")?,
                    revoked: r.try_get::<Option<i64>, _>("revoked_at")?.is_some(),
                    kind: r.try_get("kind")?,
                    expires_at: r.try_get("expires_at")?,
                })
            })
            .transpose()
        }

        pub(crate) async fn messages(&self, conversation_id: i64) -> Result<Vec<Message>> {
            let rows = sqlx::query("SELECT * FROM messages WHERE conversation_id = $1 ORDER BY id")
                .bind(conversation_id)
                .fetch_all(self.0)
                .await?;
            all(&rows, rows::message)
        }

        pub(crate) async fn notes(&self, conversation_id: i64) -> Result<Vec<Note>> {
            let rows = sqlx::query("SELECT * FROM notes WHERE conversation_id = $1 ORDER BY id")
                .bind(conversation_id)
                .fetch_all(self.0)
                .await?;
            all(&rows, rows::note)
        }

        pub(crate) async fn ticket_history(&self, ticket_id: i64) -> Result<Vec<Value>> {
            let rows: Vec<String> =
                sqlx::query_scalar("SELECT change FROM ticket_events WHERE ticket_id = $1 ORDER BY id")
                    .bind(ticket_id)
                    .fetch_all(self.0)
                    .await?;
            rows.iter().map(|s| parse(s, "ticket event")).collect()
        }

        pub(crate) async fn audit(&self, entity: &str) -> Result<Vec<AuditRecord>> {
            let rows = sqlx::query("SELECT * FROM audit WHERE entity = $1 ORDER BY id")
                .bind(entity)
                .fetch_all(self.0)
                .await?;
            all(&rows, rows::audit)
        }

        pub(crate) async fn conversation_ids(&self) -> Result<Vec<i64>> {
            Ok(
                sqlx::query_scalar("SELECT id FROM conversations ORDER BY id")
                    .fetch_all(self.0)
                    .await?,
            )
        }

        pub(crate) async fn tickets(&self, conversation_id: i64) -> Result<Vec<Ticket>> {
            let rows = sqlx::query("SELECT * FROM tickets WHERE conversation_id = $1 ORDER BY id")
                .bind(conversation_id)
                .fetch_all(self.0)
                .await?;
            all(&rows, |r| rows::ticket(r, ""))
        }

        pub(crate) async fn traces(&self, conversation_id: i64) -> Result<Vec<(String, Value)>> {
            let rows = sqlx::query(
                "SELECT pack_hash, trace FROM traces WHERE conversation_id = $1 ORDER BY id",
            )
            .bind(conversation_id)
            .fetch_all(self.0)
            .await?;
            all(&rows, |r| {
                Ok((
                    r.try_get("pack_hash")?,
                    parse(&r.try_get::<String, _>("trace")?, "trace")?,
                ))
            })
        }

        pub(crate) async fn outbox_payloads(&self) -> Result<Vec<(String, Value)>> {
            let rows = sqlx::query("SELECT status, payload FROM outbox ORDER BY id")
                .fetch_all(self.0)
                .await?;
            all(&rows, |r| {
                Ok((
                    r.try_get("status")?,
                    parse(&r.try_get::<String, _>("payload")?, "outbox payload")?,
                ))
            })
        }

        pub(crate) async fn open_ticket(&self, conversation_id: i64) -> Result<Option<Ticket>> {
            let r = sqlx::query(
                "SELECT * FROM tickets WHERE conversation_id = $1 AND status IN ('open', 'pending') ORDER BY id DESC LIMIT 1",
            )
            .bind(conversation_id)
            .fetch_optional(self.0)
            .await?;
            r.as_ref().map(|r| rows::ticket(r, "")).transpose()
        }

        pub(crate) async fn list_tickets(&self, q: &TicketQuery) -> Result<Vec<Ticket>> {
            let mut b = queries::tickets::<$db>(q);
            let rows = b.build().fetch_all(self.0).await?;
            rows.iter().map(|r| rows::ticket(r, "")).collect()
        }

        pub(crate) async fn list_audit(&self, q: &AuditQuery) -> Result<Vec<(i64, AuditRecord)>> {
            let mut b = queries::audit::<$db>(q);
            let rows = b.build().fetch_all(self.0).await?;
            rows.iter()
                .map(|r| Ok((r.try_get("id")?, rows::audit(r)?)))
                .collect()
        }

        pub(crate) async fn due_jobs(&self, now: Millis, limit: i64) -> Result<Vec<Job>> {
            let rows = sqlx::query(
                "SELECT id, conversation_id, kind, name, due_at FROM jobs WHERE done_at IS NULL AND due_at <= $1 \
                 ORDER BY due_at, id LIMIT $2",
            )
            .bind(now)
            .bind(limit)
            .fetch_all(self.0)
            .await?;
            all(&rows, rows::job)
        }

        pub(crate) async fn inbox_since(
            &self,
            since: Millis,
            after: i64,
            limit: i64,
        ) -> Result<Vec<(i64, Millis, Inbound)>> {
            let rows = sqlx::query(
                "SELECT id, received_at, event FROM inbox WHERE received_at >= $1 AND id > $2 ORDER BY id LIMIT $3",
            )
            .bind(since)
            .bind(after)
            .bind(limit)
            .fetch_all(self.0)
            .await?;
            all(&rows, |r| {
                Ok((
                    r.try_get::<i64, _>("id")?,
                    r.try_get::<i64, _>("received_at")?,
                    parse(&r.try_get::<String, _>("event")?, "inbox event")?,
                ))
            })
        }

        pub(crate) async fn pending_inbox(&self, after: i64, limit: i64) -> Result<Vec<InboxRow>> {
            let rows = sqlx::query(
                "SELECT id, key, event FROM inbox WHERE processed_at IS NULL AND id > $1 ORDER BY id LIMIT $2",
            )
            .bind(after)
            .bind(limit)
            .fetch_all(self.0)
            .await?;
            all(&rows, rows::inbox)
        }

        pub(crate) async fn waiting_conversations(&self, queue: &str, limit: i64) -> Result<Vec<i64>> {
            Ok(sqlx::query_scalar(
                "SELECT id FROM conversations WHERE queue = $1 AND assignee IS NULL AND status <> 'resolved' \
                 ORDER BY queued_at, id LIMIT $2",
            )
            .bind(queue)
            .bind(limit)
            .fetch_all(self.0)
            .await?)
        }
        }
    };
}

reads!(sqlx::Sqlite);
reads!(sqlx::Postgres);
