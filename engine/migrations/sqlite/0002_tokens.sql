-- API tokens: only a SHA-256 of each token is kept; the token itself is shown once, at creation.
CREATE TABLE tokens (
    id          INTEGER PRIMARY KEY,
    hash        TEXT NOT NULL UNIQUE,
    -- `agent`, `supervisor` or `admin`.
    role        TEXT NOT NULL,
    agent       TEXT,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
