-- Cron schedules of the pack: when each fires next. A firing and the move to the next tick
-- are one transaction (so each tick fires once); a tick missed while the process was down
-- fires once at start, then the next one after now.
CREATE TABLE schedules (
    name          TEXT PRIMARY KEY,
    next_at       INTEGER NOT NULL,
    last_fired_at INTEGER
);
