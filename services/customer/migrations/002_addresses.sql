-- Customers' saved shipping addresses. Changes to one customer's addresses
-- first lock the customer's row, so "at most one default, and one whenever
-- any address exists" and the count limit hold under concurrency; the
-- partial unique index makes the database refuse a second default anyway.
CREATE TABLE addresses (
  id           uuid PRIMARY KEY,
  customer_id  uuid NOT NULL REFERENCES customers (id),
  name         text NOT NULL CHECK (name ~ '\S'),
  line1        text NOT NULL CHECK (line1 ~ '\S'),
  line2        text NOT NULL DEFAULT '',
  city         text NOT NULL CHECK (city ~ '\S'),
  postal_code  text NOT NULL CHECK (postal_code ~ '\S'),
  country      text NOT NULL CHECK (country ~ '^[A-Z]{2}$'),
  is_default   boolean NOT NULL DEFAULT false,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX addresses_one_default ON addresses (customer_id) WHERE is_default;
CREATE INDEX addresses_by_customer ON addresses (customer_id, created_at, id);
