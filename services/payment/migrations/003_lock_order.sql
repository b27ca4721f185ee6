-- The charge and the refund consumers of an order each take the order's
-- advisory lock, then read what is recorded about it: in one round trip,
-- through this function (store.ts: lockOrder).
--
-- Why a function and not one plain statement: at READ COMMITTED a statement
-- reads from a snapshot taken when it starts, before it waits for the lock,
-- so reads beside the lock in the same statement would miss the payment or
-- tombstone the previous holder of the lock committed meanwhile (and charge
-- an order whose cancellation they never saw). A VOLATILE function takes a
-- fresh snapshot for each query it runs, so the read below sees everything
-- committed before the lock was granted (test/lock-order.test.ts).
CREATE FUNCTION lock_order(lock_class integer, order_key text)
RETURNS TABLE (
  id                  uuid,
  order_id            uuid,
  customer_id         uuid,
  amount              bigint,
  currency            text,
  status              text,
  decline_reason      text,
  provider_reference  text,
  created_at          timestamptz,
  updated_at          timestamptz,
  -- Cancelled before any payment (a row in cancelled_orders).
  cancelled           boolean
)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  -- Two keys, as before this function: apart from the single-key locks of migrations.
  PERFORM pg_advisory_xact_lock(lock_class, hashtext(order_key));
  -- Always one row: the payment's columns are null when there is none.
  RETURN QUERY
    SELECT p.id, p.order_id, p.customer_id, p.amount, p.currency, p.status, p.decline_reason, p.provider_reference,
           p.created_at, p.updated_at,
           EXISTS (SELECT 1 FROM cancelled_orders c WHERE c.order_id = order_key::uuid)
      FROM (SELECT 1) AS one LEFT JOIN payments p ON p.order_id = order_key::uuid;
END
$$;
