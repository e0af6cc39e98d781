-- SLA clocks of a conversation (JSON array of {kind, started_at, due_at, warn_at, left_ms,
-- breaches}); NULL when none runs.
ALTER TABLE conversations ADD COLUMN sla TEXT;
