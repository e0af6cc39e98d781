-- Several instances: before an instance processes an event it checks, under the
-- conversation's lock, that no earlier event of the conversation is unprocessed.
CREATE INDEX inbox_pending_by_key ON inbox (key, id) WHERE processed_at IS NULL;
