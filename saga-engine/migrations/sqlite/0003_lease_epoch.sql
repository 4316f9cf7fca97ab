-- Fencing: a saga's epoch grows by one each time it changes hands, and every record says the
-- epoch its node held the saga under. NULL in records written before records carried it.
ALTER TABLE sagas ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE saga_log ADD COLUMN epoch INTEGER;
