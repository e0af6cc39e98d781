-- Switchyard schema v1 (SQLite). Times are milliseconds since the Unix epoch, UTC.
-- JSON columns hold text.

CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);

CREATE TABLE contacts (
    id          INTEGER PRIMARY KEY,
    channel     TEXT NOT NULL,
    external_id TEXT NOT NULL,
    name        TEXT,
    phone       TEXT,
    language    TEXT,
    attributes  TEXT NOT NULL DEFAULT '{}',
    created_at  INTEGER NOT NULL,
    UNIQUE (channel, external_id)
);

-- One conversation per contact and channel; a resolved one reopens on a new message.
CREATE TABLE conversations (
    id                       INTEGER PRIMARY KEY,
    contact_id               INTEGER NOT NULL REFERENCES contacts (id),
    channel                  TEXT NOT NULL,
    status                   TEXT NOT NULL,
    queue                    TEXT,
    assignee                 TEXT,
    priority                 TEXT NOT NULL,
    tags                     TEXT NOT NULL DEFAULT '[]',
    attributes               TEXT NOT NULL DEFAULT '{}',
    flow                     TEXT,
    last_customer_message_at INTEGER,
    queued_at                INTEGER,
    created_at               INTEGER NOT NULL,
    updated_at               INTEGER NOT NULL,
    UNIQUE (contact_id, channel)
);
CREATE INDEX conversations_assignee ON conversations (assignee, status);
CREATE INDEX conversations_queue ON conversations (queue, status);

CREATE TABLE messages (
    id              INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations (id),
    channel         TEXT NOT NULL,
    direction       TEXT NOT NULL,
    kind            TEXT NOT NULL,
    body            TEXT NOT NULL,
    payload         TEXT NOT NULL DEFAULT 'null',
    provider_id     TEXT,
    author          TEXT NOT NULL,
    status          TEXT NOT NULL,
    error           TEXT,
    created_at      INTEGER NOT NULL
);
CREATE INDEX messages_conversation ON messages (conversation_id, id);
CREATE UNIQUE INDEX messages_provider ON messages (channel, provider_id) WHERE provider_id IS NOT NULL;

CREATE TABLE notes (
    id              INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations (id),
    author          TEXT NOT NULL,
    text            TEXT NOT NULL,
    created_at      INTEGER NOT NULL
);
CREATE INDEX notes_conversation ON notes (conversation_id);

CREATE TABLE tickets (
    id              INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations (id),
    title           TEXT NOT NULL,
    category        TEXT,
    priority        TEXT NOT NULL,
    status          TEXT NOT NULL,
    owner           TEXT,
    queue           TEXT,
    due_at          INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX tickets_conversation ON tickets (conversation_id);

CREATE TABLE ticket_events (
    id        INTEGER PRIMARY KEY,
    ticket_id INTEGER NOT NULL REFERENCES tickets (id),
    at        INTEGER NOT NULL,
    actor     TEXT NOT NULL,
    change    TEXT NOT NULL
);
CREATE INDEX ticket_events_ticket ON ticket_events (ticket_id);

CREATE TABLE agents (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    role             TEXT NOT NULL,
    queues           TEXT NOT NULL DEFAULT '[]',
    capacity         INTEGER NOT NULL,
    availability     TEXT NOT NULL,
    last_assigned_at INTEGER
);

CREATE TABLE audit (
    id     INTEGER PRIMARY KEY,
    at     INTEGER NOT NULL,
    actor  TEXT NOT NULL,
    entity TEXT NOT NULL,
    action TEXT NOT NULL,
    before TEXT NOT NULL,
    after  TEXT NOT NULL
);
CREATE INDEX audit_entity ON audit (entity, id);

CREATE TABLE jobs (
    id              INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations (id),
    kind            TEXT NOT NULL,
    name            TEXT NOT NULL,
    due_at          INTEGER NOT NULL,
    done_at         INTEGER
);
CREATE INDEX jobs_due ON jobs (due_at) WHERE done_at IS NULL;

-- Every event, committed before it is acknowledged; deduplicated on the provider's id.
CREATE TABLE inbox (
    id           INTEGER PRIMARY KEY,
    channel      TEXT NOT NULL,
    provider_id  TEXT NOT NULL,
    key          TEXT NOT NULL,
    event        TEXT NOT NULL,
    received_at  INTEGER NOT NULL,
    processed_at INTEGER,
    UNIQUE (channel, provider_id)
);
CREATE INDEX inbox_pending ON inbox (id) WHERE processed_at IS NULL;

-- What to send (messages through their channel, webhooks through their connector), written
-- in the transaction that decided it.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    message_id      INTEGER REFERENCES messages (id),
    conversation_id INTEGER NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL,   -- pending, sending, sent, failed, unknown
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE status = 'pending';

-- Why: one decision trace per event.
CREATE TABLE traces (
    id              INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL,
    inbox_id        INTEGER,
    pack_hash       TEXT NOT NULL,
    at              INTEGER NOT NULL,
    trace           TEXT NOT NULL
);
CREATE INDEX traces_conversation ON traces (conversation_id, id);
