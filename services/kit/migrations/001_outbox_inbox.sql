-- Outbox: events written in the same transaction as the state change that
-- caused them, published to JetStream by the relay, then deleted.
CREATE TABLE outbox (
  seq         bigserial PRIMARY KEY,
  id          uuid NOT NULL UNIQUE,
  subject     text NOT NULL,
  payload     jsonb NOT NULL,
  -- Trace context at the time of writing, so the trace continues after a restart.
  trace       jsonb NOT NULL DEFAULT '{}',
  created_at  timestamptz NOT NULL DEFAULT now()
);

-- Inbox: every event a consumer has applied, written in the same transaction
-- as its effect, so a redelivery is recognised and skipped.
CREATE TABLE inbox (
  consumer    text NOT NULL,
  event_id    text NOT NULL,
  handled_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (consumer, event_id)
);
