-- The idempotency keys of orders.place. The primary key is what makes a
-- repeated placement safe whatever the timing: a second attempt's INSERT waits
-- for the first one's transaction and then finds the key taken, so one key
-- makes one order. Rows older than ORDER_IDEMPOTENCY_KEY_HOURS are pruned.
CREATE TABLE order_requests (
  customer_id      uuid NOT NULL,
  idempotency_key  text NOT NULL,
  -- sha256 of the request without customer and key: the same key with another request is refused.
  fingerprint      text NOT NULL,
  order_id         uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
  created_at       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (customer_id, idempotency_key)
);
CREATE INDEX order_requests_by_age ON order_requests (created_at);
