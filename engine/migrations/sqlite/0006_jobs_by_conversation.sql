-- Cancelling a conversation's pending jobs (SLA clocks moved, a flow step answered, a timer
-- restarted) finds them by conversation, kind and name, not by scanning every job.
CREATE INDEX jobs_pending_by_conversation ON jobs (conversation_id, kind, name) WHERE done_at IS NULL;
