-- Orders, their lines and their status history. Money is integer minor units.
CREATE TABLE orders (
  id            uuid PRIMARY KEY,
  customer_id   uuid NOT NULL,
  status        text NOT NULL CHECK (status IN ('PENDING', 'CONFIRMED', 'CANCELLED')),
  currency      text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
  total_amount  bigint NOT NULL CHECK (total_amount >= 0),
  cancel_reason text CHECK (cancel_reason IN ('OUT_OF_STOCK', 'PAYMENT_DECLINED', 'CUSTOMER_CANCELLED', 'DEADLINE_EXCEEDED')),
  -- A PENDING order still PENDING at this instant is cancelled by the sweeper.
  deadline_at   timestamptz NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  CHECK ((status = 'CANCELLED') = (cancel_reason IS NOT NULL))
);

-- A customer's orders newest first, keyset-paged on (created_at, id).
CREATE INDEX orders_by_customer ON orders (customer_id, created_at DESC, id DESC);
-- The sweeper only ever looks at pending orders by deadline.
CREATE INDEX orders_pending_by_deadline ON orders (deadline_at) WHERE status = 'PENDING';

CREATE TABLE order_lines (
  order_id     uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
  position     integer NOT NULL,
  product_id   uuid NOT NULL,
  sku          text NOT NULL,
  name         text NOT NULL,
  quantity     integer NOT NULL CHECK (quantity > 0),
  unit_amount  bigint NOT NULL CHECK (unit_amount >= 0),
  line_amount  bigint NOT NULL CHECK (line_amount >= 0),
  PRIMARY KEY (order_id, position),
  UNIQUE (order_id, product_id)
);

CREATE TABLE order_status_history (
  seq       bigserial PRIMARY KEY,
  order_id  uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
  status    text NOT NULL CHECK (status IN ('PENDING', 'CONFIRMED', 'CANCELLED')),
  reason    text,
  at        timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX order_status_history_by_order ON order_status_history (order_id, seq);
