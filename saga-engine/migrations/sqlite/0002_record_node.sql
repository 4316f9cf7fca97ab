-- Which node wrote each record: several nodes may share one database. NULL in records
-- written before records named their node.
ALTER TABLE saga_log ADD COLUMN node TEXT;
