-- One row per order this service has heard of. Claiming this row is the first
-- step of reserve, commit and release, so each is idempotent by order id and
-- two deliveries of one order's events take turns.
--   RESERVED   every line is held (reservations rows RESERVED)
--   REJECTED   nothing was held; a later `placed` of this order is ignored
--   COMMITTED  the order was confirmed: its units left the stock
--   RELEASED   the order was cancelled: its units went back
--   TOMBSTONE  cancelled before its `placed` event was handled: a late
--              `placed` is rejected instead of holding stock nobody releases
CREATE TABLE stock_orders (
  order_id    uuid PRIMARY KEY,
  status      text NOT NULL CHECK (status IN ('RESERVED', 'REJECTED', 'COMMITTED', 'RELEASED', 'TOMBSTONE')),
  -- Why it was rejected, for people reading the table.
  reason      text,
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The units an order holds, one row per product (lines of the same product are summed).
CREATE TABLE reservations (
  order_id    uuid NOT NULL REFERENCES stock_orders (order_id),
  product_id  uuid NOT NULL REFERENCES products (id),
  quantity    bigint NOT NULL CHECK (quantity > 0),
  status      text NOT NULL CHECK (status IN ('RESERVED', 'COMMITTED', 'RELEASED')),
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (order_id, product_id)
);

-- Which orders hold a product, for operators looking at a product's reserved units.
CREATE INDEX reservations_product ON reservations (product_id) WHERE status = 'RESERVED';
