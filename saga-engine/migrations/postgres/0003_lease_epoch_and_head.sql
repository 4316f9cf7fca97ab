-- Fencing: a saga's epoch grows by one each time it changes hands, and every record says the
-- epoch its node held the saga under. NULL in records written before records carried it.
ALTER TABLE sagas ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE saga_log ADD COLUMN epoch BIGINT;

-- Positions are given at commit time, under this one row's lock, taken as the last statement
-- of every append: transactions that write the log take their positions in the order they
-- commit, so positions are dense and every reader sees a prefix of them. (A sequence gives
-- numbers in the order transactions ask, and they can commit in another: a reader following
-- the position would skip a record committed late under a smaller one.)
CREATE TABLE saga_log_head (
    one      BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    position BIGINT  NOT NULL
);
INSERT INTO saga_log_head (position) SELECT COALESCE(MAX(position), 0) FROM saga_log;
ALTER TABLE saga_log ALTER COLUMN position DROP DEFAULT;
