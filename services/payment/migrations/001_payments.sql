-- One payment per order: the unique order_id is what makes "never charge an
-- order twice" hold even when two deliveries race.
CREATE TABLE payments (
  id                  uuid PRIMARY KEY,
  order_id            uuid NOT NULL UNIQUE,
  customer_id         uuid NOT NULL,
  amount              bigint NOT NULL CHECK (amount >= 0),
  currency            text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
  status              text NOT NULL CHECK (status IN ('CAPTURED', 'DECLINED', 'REFUNDED')),
  decline_reason      text,
  -- The provider's id of the charge (null when declined), and of its refund.
  provider_reference  text,
  refund_reference    text,
  created_at          timestamptz NOT NULL DEFAULT now(),
  updated_at          timestamptz NOT NULL DEFAULT now()
);

-- Tombstones: orders cancelled before any payment was attempted. The
-- reservation of such an order may still arrive (the two events come from
-- different streams, in either order); it must then not be charged.
CREATE TABLE cancelled_orders (
  order_id      uuid PRIMARY KEY,
  reason_code   text NOT NULL,
  cancelled_at  timestamptz NOT NULL DEFAULT now()
);
