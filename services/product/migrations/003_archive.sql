-- An archived product is off sale: products.list leaves it out and
-- orders.place refuses it, but it stays, so placed orders and their lines
-- still name it. Null while the product is for sale.
ALTER TABLE products ADD COLUMN archived_at timestamptz;
