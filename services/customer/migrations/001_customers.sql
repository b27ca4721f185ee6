CREATE TABLE customers (
  id             uuid PRIMARY KEY,
  -- Stored trimmed and lower-cased, so uniqueness ignores case.
  email          text NOT NULL UNIQUE,
  name           text NOT NULL,
  role           text NOT NULL DEFAULT 'customer' CHECK (role IN ('customer', 'admin')),
  -- scrypt$N$r$p$salt$hash, never leaves this service.
  password_hash  text NOT NULL,
  created_at     timestamptz NOT NULL DEFAULT now()
);
