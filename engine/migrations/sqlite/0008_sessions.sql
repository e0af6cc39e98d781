-- The browser workspace: agents log in with a password (an argon2id hash, never the password)
-- and get a session: a token of kind `session` that expires, kept like API tokens (its
-- SHA-256 only) and revoked the same way.
ALTER TABLE agents ADD COLUMN password_hash TEXT;
ALTER TABLE tokens ADD COLUMN kind TEXT NOT NULL DEFAULT 'api';
ALTER TABLE tokens ADD COLUMN expires_at INTEGER;
