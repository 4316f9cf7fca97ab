-- The orders service: the catalog with its stock, and the orders placed against it.
CREATE TABLE products (
    sku         TEXT PRIMARY KEY,
    name        TEXT   NOT NULL,
    price_cents BIGINT NOT NULL,
    stock       BIGINT NOT NULL CHECK (stock >= 0)
);

CREATE TABLE orders (
    order_id       TEXT PRIMARY KEY,
    saga_id        TEXT   NOT NULL,
    status         TEXT   NOT NULL, -- pending | confirmed | cancelled
    customer       TEXT   NOT NULL, -- JSON
    address        TEXT   NOT NULL, -- JSON
    delivery       TEXT   NOT NULL,
    lines          TEXT   NOT NULL, -- JSON: [{sku, name, qty, unit_price_cents}]
    total_cents    BIGINT NOT NULL,
    created_at_ms  BIGINT NOT NULL
);

CREATE TABLE idempotency (
    key    TEXT PRIMARY KEY,
    status BIGINT NOT NULL,
    body   TEXT   NOT NULL
);
