-- Catalog search (listProducts): a substring anywhere in name, sku or
-- description, any case (ILIKE '%…%'). A B-tree cannot serve that; trigram
-- GIN can, with the same semantics (docs/decisions.md, "Catalog search").
-- pg_trgm is a trusted extension: a database owner may create it, no superuser needed.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- One index for the three columns: each column's ILIKE is an index condition,
-- and their OR becomes a BitmapOr over it.
CREATE INDEX products_search ON products USING gin (name gin_trgm_ops, sku gin_trgm_ops, description gin_trgm_ops);
