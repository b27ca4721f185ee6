-- One row per email, written by the consumer in the same transaction as its
-- inbox entry, then delivered by the sender loop. The row is the record of
-- what was (or is being) sent.
CREATE TABLE notifications (
  id               uuid PRIMARY KEY,
  -- The envelope id of the event that caused it: one email per event, ever.
  event_id         text NOT NULL UNIQUE,
  event_type       text NOT NULL,
  customer_id      uuid NOT NULL,
  order_id         uuid,
  -- Recipient as known when the event was handled; '' when the customer does not exist.
  email            text NOT NULL,
  subject          text NOT NULL,
  body             text NOT NULL,
  status           text NOT NULL DEFAULT 'PENDING' CHECK (status IN ('PENDING', 'SENT', 'FAILED')),
  attempts         integer NOT NULL DEFAULT 0,
  next_attempt_at  timestamptz NOT NULL DEFAULT now(),
  last_error       text,
  sent_at          timestamptz,
  created_at       timestamptz NOT NULL DEFAULT now()
);

-- The sender's queue: only pending rows, by due time.
CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE status = 'PENDING';
-- listByCustomer: newest first, keyset on (created_at, id).
CREATE INDEX notifications_by_customer ON notifications (customer_id, created_at DESC, id DESC);
