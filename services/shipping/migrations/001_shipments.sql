-- One shipment per order: order_id is unique, so two deliveries of the same
-- confirmation (or a confirmation racing a cancellation) never make two.
--
-- The row is also the carrier's work queue (next_step_at) and the one
-- authority on whether the order may still be cancelled: the carrier ships
-- and a cancellation holds it under this row's lock (docs/decisions.md).
CREATE TABLE shipments (
  id               uuid PRIMARY KEY,
  order_id         uuid NOT NULL UNIQUE,
  customer_id      uuid NOT NULL,
  status           text NOT NULL CHECK (status IN ('LABEL_CREATED', 'SHIPPED', 'DELIVERED', 'CANCELLED')),
  carrier          text NOT NULL,
  tracking_number  text,
  -- [{status, at, note}], oldest first. Empty for a tombstone: an order
  -- cancelled before its shipment was created (no label was ever made).
  history          jsonb NOT NULL DEFAULT '[]'::jsonb,
  -- Set while a cancellation of the order is under way (shipments.hold): the
  -- carrier does not ship it; orders.events.cancelled ends the hold, or the
  -- check at next_step_at releases it if the order was not cancelled after all.
  held_at          timestamptz,
  -- When the carrier (or the hold check) next looks at it; null: nothing to do.
  next_step_at     timestamptz,
  -- Failed carrier calls for the current step, and the last one's error.
  step_attempts    integer NOT NULL DEFAULT 0,
  last_error       text,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  CHECK ((status IN ('SHIPPED', 'DELIVERED')) = (tracking_number IS NOT NULL))
);

-- The carrier's queue: only rows with something to do, by due time.
CREATE INDEX shipments_due ON shipments (next_step_at) WHERE next_step_at IS NOT NULL;
