-- The inbox lists conversations longest waiting first (since they entered their queue, else
-- since created): walked in this order, a page stops after its rows instead of sorting every
-- conversation.
CREATE INDEX conversations_waiting ON conversations ((coalesce(queued_at, created_at)), id);
