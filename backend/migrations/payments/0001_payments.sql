-- The payments service. Card numbers are never stored: a card is tokenised on arrival and only
-- its last four digits, expiry and test behaviour are kept.
CREATE TABLE card_tokens (
    token      TEXT PRIMARY KEY,
    last4      TEXT NOT NULL,
    expiry     TEXT NOT NULL,
    behaviour  TEXT NOT NULL -- ok | declined | insufficient_funds
);

CREATE TABLE payments (
    payment_id      TEXT PRIMARY KEY,
    order_id        TEXT   NOT NULL UNIQUE,
    method          TEXT   NOT NULL, -- card | wallet
    card_last4      TEXT,
    wallet_id       TEXT,
    amount_cents    BIGINT NOT NULL,
    refunded_cents  BIGINT NOT NULL,
    status          TEXT   NOT NULL, -- captured | refunded
    captured_at_ms  BIGINT NOT NULL
);

CREATE TABLE refunded_orders (order_id TEXT PRIMARY KEY);

CREATE TABLE idempotency (
    key    TEXT PRIMARY KEY,
    status BIGINT NOT NULL,
    body   TEXT   NOT NULL
);
