-- Storage of the built-in payment simulator (simulator.ts). It stands for the
-- provider's own books, so the service's code never reads it: only the
-- simulator (through its own connections) and tests do.

-- Every charge and refund the simulator answered, by idempotency key: a
-- repeated key gets the first answer back and moves no money again.
CREATE TABLE simulator_ledger (
  idempotency_key   text PRIMARY KEY,
  operation         text NOT NULL CHECK (operation IN ('charge', 'refund')),
  amount            bigint NOT NULL,
  currency          text NOT NULL,
  outcome           text NOT NULL CHECK (outcome IN ('captured', 'declined', 'refunded')),
  reason            text,
  reference         text UNIQUE,
  -- For refunds: the charge given back.
  charge_reference  text,
  created_at        timestamptz NOT NULL DEFAULT now()
);

-- A charge is refunded at most once, whatever key the refund comes with.
CREATE UNIQUE INDEX simulator_one_refund_per_charge ON simulator_ledger (charge_reference) WHERE operation = 'refund';

-- How often each key was asked, failed attempts included: drives
-- PAYMENT_FAIL_FIRST_ATTEMPTS and lets tests see retries.
CREATE TABLE simulator_calls (
  idempotency_key  text PRIMARY KEY,
  calls            integer NOT NULL,
  last_call_at     timestamptz NOT NULL DEFAULT now()
);
