-- Catalog search (listProducts): a substring anywhere in name, sku or
-- description, any case (ILIKE '%…%'). A B-tree cannot serve that; trigram
-- GIN can, with the same semantics (docs/decisions.md, "Catalog search").
-- pg_trgm is a trusted extension: a database owner may create it, no superuser needed.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- One index per column, their OR a BitmapOr. Not one index over the three
-- columns: the planner costs a scan of a multicolumn GIN index by the whole
-- index, three times too dear, and then prefers reading the table.
CREATE INDEX products_search_name ON products USING gin (name gin_trgm_ops);
CREATE INDEX products_search_sku ON products USING gin (sku gin_trgm_ops);
CREATE INDEX products_search_description ON products USING gin (description gin_trgm_ops);
