-- Switchyard schema v1 (PostgreSQL): the SQLite schema of migrations/sqlite 0001–0006 in one
-- file. Times are milliseconds since the Unix epoch, UTC. JSON columns hold text, as in
-- SQLite, so both stores share their row mappers (engine/src/rows.rs); queries cast to jsonb
-- where they look inside.

CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);

-- Ticket numbers are handed out before the decision commits (Store::allocate_id).
CREATE SEQUENCE ticket_ids;

CREATE TABLE contacts (
    id          BIGSERIAL PRIMARY KEY,
    channel     TEXT NOT NULL,
    external_id TEXT NOT NULL,
    name        TEXT,
    phone       TEXT,
    language    TEXT,
    attributes  TEXT NOT NULL DEFAULT '{}',
    created_at  BIGINT NOT NULL,
    UNIQUE (channel, external_id)
);

CREATE TABLE conversations (
    id                       BIGSERIAL PRIMARY KEY,
    contact_id               BIGINT NOT NULL REFERENCES contacts (id),
    channel                  TEXT NOT NULL,
    status                   TEXT NOT NULL,
    queue                    TEXT,
    assignee                 TEXT,
    priority                 TEXT NOT NULL,
    tags                     TEXT NOT NULL DEFAULT '[]',
    attributes               TEXT NOT NULL DEFAULT '{}',
    flow                     TEXT,
    last_customer_message_at BIGINT,
    queued_at                BIGINT,
    created_at               BIGINT NOT NULL,
    updated_at               BIGINT NOT NULL,
    sla                      TEXT,
    UNIQUE (contact_id, channel)
);
CREATE INDEX conversations_assignee ON conversations (assignee, status);
CREATE INDEX conversations_queue ON conversations (queue, status);

CREATE TABLE messages (
    id              BIGSERIAL PRIMARY KEY,
    conversation_id BIGINT NOT NULL REFERENCES conversations (id),
    channel         TEXT NOT NULL,
    direction       TEXT NOT NULL,
    kind            TEXT NOT NULL,
    body            TEXT NOT NULL,
    payload         TEXT NOT NULL DEFAULT 'null',
    provider_id     TEXT,
    author          TEXT NOT NULL,
    status          TEXT NOT NULL,
    error           TEXT,
    created_at      BIGINT NOT NULL
);
CREATE INDEX messages_conversation ON messages (conversation_id, id);
CREATE UNIQUE INDEX messages_provider ON messages (channel, provider_id) WHERE provider_id IS NOT NULL;

CREATE TABLE notes (
    id              BIGSERIAL PRIMARY KEY,
    conversation_id BIGINT NOT NULL REFERENCES conversations (id),
    author          TEXT NOT NULL,
    text            TEXT NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE INDEX notes_conversation ON notes (conversation_id);

CREATE TABLE tickets (
    id              BIGINT PRIMARY KEY,
    conversation_id BIGINT NOT NULL REFERENCES conversations (id),
    title           TEXT NOT NULL,
    category        TEXT,
    priority        TEXT NOT NULL,
    status          TEXT NOT NULL,
    owner           TEXT,
    queue           TEXT,
    due_at          BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX tickets_conversation ON tickets (conversation_id);

CREATE TABLE ticket_events (
    id        BIGSERIAL PRIMARY KEY,
    ticket_id BIGINT NOT NULL REFERENCES tickets (id),
    at        BIGINT NOT NULL,
    actor     TEXT NOT NULL,
    change    TEXT NOT NULL
);
CREATE INDEX ticket_events_ticket ON ticket_events (ticket_id);

CREATE TABLE agents (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    role             TEXT NOT NULL,
    queues           TEXT NOT NULL DEFAULT '[]',
    capacity         BIGINT NOT NULL,
    availability     TEXT NOT NULL,
    last_assigned_at BIGINT,
    shift            TEXT
);

CREATE TABLE audit (
    id     BIGSERIAL PRIMARY KEY,
    at     BIGINT NOT NULL,
    actor  TEXT NOT NULL,
    entity TEXT NOT NULL,
    action TEXT NOT NULL,
    before TEXT NOT NULL,
    after  TEXT NOT NULL
);
CREATE INDEX audit_entity ON audit (entity, id);

CREATE TABLE jobs (
    id              BIGSERIAL PRIMARY KEY,
    conversation_id BIGINT NOT NULL,
    kind            TEXT NOT NULL,
    name            TEXT NOT NULL,
    due_at          BIGINT NOT NULL,
    done_at         BIGINT
);
CREATE INDEX jobs_due ON jobs (due_at) WHERE done_at IS NULL;
CREATE INDEX jobs_pending_by_conversation ON jobs (conversation_id, kind, name) WHERE done_at IS NULL;

CREATE TABLE inbox (
    id           BIGSERIAL PRIMARY KEY,
    channel      TEXT NOT NULL,
    provider_id  TEXT NOT NULL,
    key          TEXT NOT NULL,
    event        TEXT NOT NULL,
    received_at  BIGINT NOT NULL,
    processed_at BIGINT,
    UNIQUE (channel, provider_id)
);
CREATE INDEX inbox_pending ON inbox (id) WHERE processed_at IS NULL;

CREATE TABLE outbox (
    id              BIGSERIAL PRIMARY KEY,
    message_id      BIGINT REFERENCES messages (id),
    conversation_id BIGINT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE status = 'pending';

CREATE TABLE traces (
    id              BIGSERIAL PRIMARY KEY,
    conversation_id BIGINT NOT NULL,
    inbox_id        BIGINT,
    pack_hash       TEXT NOT NULL,
    at              BIGINT NOT NULL,
    trace           TEXT NOT NULL
);
CREATE INDEX traces_conversation ON traces (conversation_id, id);

CREATE TABLE tokens (
    id          BIGSERIAL PRIMARY KEY,
    hash        TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL,
    agent       TEXT,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

CREATE TABLE schedules (
    name          TEXT PRIMARY KEY,
    next_at       BIGINT NOT NULL,
    last_fired_at BIGINT
);
