-- The version of a customer's public view (the customers bucket), bumped by
-- any change of it; a reader given two states keeps the newer.
ALTER TABLE customers ADD COLUMN version bigint NOT NULL DEFAULT 1;
