-- Sends run concurrently, in order within a lane: one conversation's rows to one destination
-- (its WhatsApp number or web chat, or one webhook connector). Rows written before this have
-- the empty lane: one lane per conversation, as they were sent before.
ALTER TABLE outbox ADD COLUMN lane TEXT NOT NULL DEFAULT '';
CREATE INDEX outbox_pending_by_lane ON outbox (conversation_id, lane, id) WHERE status = 'pending';
