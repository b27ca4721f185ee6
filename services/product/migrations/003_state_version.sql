-- The version of a product's public view (the catalog bucket): bumped in the
-- transaction of every change a reader can see (create, restock, reserve,
-- release), so a reader given two states of one product keeps the newer.
ALTER TABLE products ADD COLUMN version bigint NOT NULL DEFAULT 1;
