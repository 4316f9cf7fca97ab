-- The append-only saga log and the one-row-per-saga summary beside it.
CREATE TABLE saga_log (
    position INTEGER PRIMARY KEY,          -- store-wide order of commits
    saga_id  TEXT    NOT NULL,
    seq      INTEGER NOT NULL,             -- per saga, from 1, no gaps
    kind     TEXT    NOT NULL,
    at_ms    INTEGER NOT NULL,
    step     TEXT,
    attempt  INTEGER,
    detail   TEXT    NOT NULL,
    UNIQUE (saga_id, seq)
);

CREATE TABLE sagas (
    saga_id        TEXT PRIMARY KEY,
    definition     TEXT    NOT NULL,
    status         TEXT    NOT NULL,
    started_at_ms  INTEGER NOT NULL,
    finished_at_ms INTEGER,
    -- Which node drives the saga, and until when; room for several nodes on one database.
    owner          TEXT,
    lease_until_ms INTEGER
);

CREATE INDEX sagas_by_start ON sagas (started_at_ms DESC);
CREATE INDEX sagas_unfinished ON sagas (status) WHERE status IN ('running', 'compensating');
