-- The shipping service: shipments and the delivery notifications sent to customers.
CREATE TABLE shipments (
    shipment_id         TEXT PRIMARY KEY,
    order_id            TEXT NOT NULL UNIQUE,
    status              TEXT NOT NULL, -- scheduled | cancelled
    tracking_number     TEXT NOT NULL,
    estimated_delivery  TEXT NOT NULL,
    country             TEXT NOT NULL,
    delivery            TEXT NOT NULL,
    created_at_ms       BIGINT NOT NULL
);

CREATE TABLE notifications (
    order_id    TEXT PRIMARY KEY,
    email       TEXT   NOT NULL,
    message     TEXT   NOT NULL,
    sent_at_ms  BIGINT NOT NULL
);

CREATE TABLE cancelled_orders (order_id TEXT PRIMARY KEY);

CREATE TABLE idempotency (
    key    TEXT PRIMARY KEY,
    status BIGINT NOT NULL,
    body   TEXT   NOT NULL
);
