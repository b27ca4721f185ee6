CREATE TABLE products (
  id            uuid PRIMARY KEY,
  -- Stored as given; unique regardless of case (see products_sku_key).
  sku           text NOT NULL,
  name          text NOT NULL CHECK (name <> ''),
  description   text NOT NULL DEFAULT '',
  -- Integer minor units (cents), never floating point.
  price_amount  bigint NOT NULL CHECK (price_amount >= 0),
  currency      text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
  -- Units in the warehouse, and how many of them are promised to orders not
  -- yet confirmed; available = on_hand - reserved. bigint so that restocking
  -- cannot overflow.
  on_hand       bigint NOT NULL DEFAULT 0 CHECK (on_hand >= 0),
  reserved      bigint NOT NULL DEFAULT 0 CHECK (reserved >= 0),
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  -- The database itself refuses to promise more than there is: whatever the
  -- code does, available never goes below zero.
  CONSTRAINT products_reserved_within_on_hand CHECK (reserved <= on_hand)
);

-- "ab-1" and "AB-1" would name the same article to a person: one of them only.
CREATE UNIQUE INDEX products_sku_key ON products (lower(sku));

-- Keyset paging of the catalog: ORDER BY name, id and WHERE (name, id) > cursor.
CREATE INDEX products_name_id ON products (name, id);
