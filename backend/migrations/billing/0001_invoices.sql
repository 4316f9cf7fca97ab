-- The billing service: invoices, the record for accounting.
CREATE TABLE invoices (
    invoice_id    TEXT PRIMARY KEY,
    order_id      TEXT   NOT NULL UNIQUE,
    status        TEXT   NOT NULL, -- issued | void
    lines         TEXT   NOT NULL, -- JSON
    total_cents   BIGINT NOT NULL,
    issued_at_ms  BIGINT NOT NULL
);

-- A void that arrived before (or instead of) its invoice: the invoice must then never be issued.
CREATE TABLE voided_orders (order_id TEXT PRIMARY KEY);

CREATE TABLE idempotency (
    key    TEXT PRIMARY KEY,
    status BIGINT NOT NULL,
    body   TEXT   NOT NULL
);
