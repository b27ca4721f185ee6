-- The trace context of the event that asked for the email (W3C traceparent,
-- as in the kit's outbox), so the sender's "smtp send" span, sent later and
-- perhaps by another instance or after a restart, continues the order's trace.
ALTER TABLE notifications ADD COLUMN trace jsonb NOT NULL DEFAULT '{}'::jsonb;
