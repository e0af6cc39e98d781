-- Customers' photos, voice notes and documents, kept in the store (WhatsApp's media ids expire
-- after days, its download URLs after minutes), so every instance can serve them to agents.
-- One row per inbound media message: `stored` with its bytes, or `failed` with why (and,
-- while it may still work, when to try again).
CREATE TABLE media (
    message_id      BIGINT PRIMARY KEY REFERENCES messages (id),
    conversation_id BIGINT NOT NULL,
    status          TEXT NOT NULL,
    mime_type       TEXT,
    size            BIGINT,
    bytes           BYTEA,
    error           TEXT,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX media_retry ON media (next_attempt_at) WHERE status = 'retry';
CREATE INDEX messages_media ON messages (id) WHERE kind = 'media';
