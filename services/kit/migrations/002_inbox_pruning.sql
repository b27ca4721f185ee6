-- The inbox pruner (consumer/inbox-pruner.ts) deletes a consumer's oldest rows
-- once its stream can no longer redeliver them: this index finds them without
-- reading the rest of the table.
CREATE INDEX inbox_by_age ON inbox (consumer, handled_at);
