//! The orders service: the catalog with its stock, and orders. `place_order` stores the order
//! and reserves its stock in one transaction (a conditional decrement, so concurrent orders
//! never oversell); `cancel_order` marks it cancelled and releases the stock.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use shared::{CatalogItem, OrderItem};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, Row};

use super::protocol::{
    CANCEL_ORDER, CONFIRM_ORDER, Compensate, OrderLine, OrderRef, PLACE_ORDER, PlaceOrder,
    PlacedOrder, Updated, UpdatedTo, delivery_name,
};
// Where `GET /api/orders/{id}` has always found it.
pub use super::protocol::StoredOrder;
use super::{ServiceDb, ServiceError, StepRequest, now_ms};
use crate::body::JsonBody;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/orders");

/// The catalog seeded on first start: (sku, name, price in cents, stock).
const CATALOG: [(&str, &str, i64, i64); 12] = [
    ("KB-01", "Mechanical keyboard", 8999, 25),
    ("MS-02", "Wireless mouse", 3499, 40),
    ("MN-03", "27\" 4K monitor", 32999, 10),
    ("HP-04", "Noise-cancelling headphones", 19999, 15),
    ("WC-05", "1080p webcam", 5999, 30),
    ("DK-06", "USB-C dock", 12999, 20),
    ("CH-07", "Ergonomic chair", 44999, 5),
    ("DS-08", "Standing desk", 59999, 4),
    ("LP-09", "Desk lamp", 4599, 35),
    ("SP-10", "Bluetooth speaker", 7999, 50),
    ("SS-11", "1 TB portable SSD", 10999, 22),
    ("CB-12", "Braided USB-C cable", 1499, 100),
];

#[derive(Clone)]
pub struct Orders {
    db: ServiceDb,
}

impl Orders {
    /// Open the orders database, seeding the catalog on first start (with `seed_stock` of each
    /// product instead of the catalog's figures, when given).
    pub async fn open(
        database: &str,
        schema_prefix: Option<&str>,
        seed_stock: Option<i64>,
    ) -> Result<Self, super::DbError> {
        // Every order takes from the same products' stock: several nodes' writers take turns.
        let db = ServiceDb::open_with(
            database,
            schema_prefix,
            "orders",
            &MIGRATOR,
            super::db::Writers::TakeTurns,
        )
        .await?;
        let mut tx = db.pool.begin().await?;
        let count: i64 = sqlx::query("SELECT COUNT(*) AS n FROM products")
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if count == 0 {
            for (sku, name, price, stock) in CATALOG {
                sqlx::query(
                    // Another node starting on the same database may seed it at the same time.
                    "INSERT INTO products (sku, name, price_cents, stock) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                )
                .bind(sku)
                .bind(name)
                .bind(price)
                .bind(seed_stock.unwrap_or(stock).max(0))
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(Orders { db })
    }

    /// Its database, for the server to close when it stops.
    pub fn db(&self) -> &ServiceDb {
        &self.db
    }

    pub fn router(self) -> Router {
        Router::new()
            .route("/catalog", get(catalog))
            .route(PLACE_ORDER.path, post(place_order))
            .route(CONFIRM_ORDER.path, post(confirm_order))
            .route(CANCEL_ORDER.path, post(cancel_order))
            .route("/orders/{order_id}", get(get_order))
            .with_state(Arc::new(self))
    }
}

type Svc = State<Arc<Orders>>;

async fn catalog(State(svc): Svc) -> Result<Json<Vec<CatalogItem>>, ServiceError> {
    load_catalog(&svc.db.pool).await.map(Json)
}

async fn place_order(
    State(svc): Svc,
    step: StepRequest,
    JsonBody(req): JsonBody<PlaceOrder>,
) -> Result<Json<PlacedOrder>, ServiceError> {
    let fault = req.fault;
    step.run_action(&svc.db, fault, |tx| Box::pin(reserve_stock(tx, req)))
        .await
}

/// Called by the payment step once the payment is captured.
async fn confirm_order(
    State(svc): Svc,
    step: StepRequest,
    JsonBody(req): JsonBody<OrderRef>,
) -> Result<Json<Updated>, ServiceError> {
    step.run(&svc.db, |tx| Box::pin(confirm_pending(tx, req)))
        .await
}

async fn cancel_order(
    State(svc): Svc,
    step: StepRequest,
    JsonBody(req): JsonBody<Compensate>,
) -> Result<Json<Updated>, ServiceError> {
    let fault = req.fault;
    step.run_compensation(&svc.db, fault, |tx| Box::pin(cancel_and_release(tx, req)))
        .await
}

async fn get_order(
    State(svc): Svc,
    Path(order_id): Path<String>,
) -> Result<Json<StoredOrder>, ServiceError> {
    load_order(&svc.db.pool, &order_id).await.map(Json)
}

/// An order's state in this service, as its `status` column holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OrderStatus {
    Pending,
    Confirmed,
    Cancelled,
}

impl OrderStatus {
    fn read(row: &AnyRow, order_id: &str) -> Result<Self, ServiceError> {
        let status: String = row.try_get("status")?;
        match status.as_str() {
            "pending" => Ok(OrderStatus::Pending),
            "confirmed" => Ok(OrderStatus::Confirmed),
            "cancelled" => Ok(OrderStatus::Cancelled),
            other => Err(ServiceError::corrupt(
                format!("the status of order {order_id}"),
                format_args!("{other:?} is no order status"),
            )),
        }
    }
}

/// An order's lines, as `place_order` stored them: what `cancel_order` puts back on the shelf.
fn read_lines(row: &AnyRow, order_id: &str) -> Result<Vec<OrderLine>, ServiceError> {
    let what = || format!("the lines of order {order_id}");
    let lines: String = row
        .try_get("lines")
        .map_err(|e| ServiceError::corrupt(what(), e))?;
    serde_json::from_str(&lines).map_err(|e| ServiceError::corrupt(what(), e))
}

/// Store the order and reserve its stock, in the writer's transaction. An order already there
/// can only be the tombstone of a cancellation that came first: refused, so the late action
/// does nothing.
async fn reserve_stock(
    tx: &mut AnyConnection,
    req: PlaceOrder,
) -> Result<PlacedOrder, ServiceError> {
    let existing = sqlx::query("SELECT status FROM orders WHERE order_id = $1")
        .bind(&req.order_id)
        .fetch_optional(&mut *tx)
        .await?;
    if existing.is_some() {
        return Err(ServiceError::OrderCancelledFirst {
            order_id: req.order_id,
        });
    }
    let mut lines = Vec::with_capacity(req.items.len());
    for item in &req.items {
        match reserve_line(tx, item).await {
            Ok(line) => lines.push(line),
            Err(refusal) if refusal.is_answer() => {
                // A refusal rolls nothing back by itself: undo this order's earlier
                // reservations in the same transaction.
                for line in &lines {
                    release(tx, line).await?;
                }
                return Err(refusal);
            }
            // A failure fails the whole batch, which undoes them.
            Err(failure) => return Err(failure),
        }
    }
    let fee = req.delivery.fee_cents();
    let total = lines
        .iter()
        .map(|l| l.qty * l.unit_price_cents)
        .sum::<i64>()
        + fee;
    let encode = |what, e| ServiceError::encode(what, e);
    sqlx::query(
        "INSERT INTO orders (order_id, saga_id, status, customer, address, delivery, lines, total_cents, created_at_ms)
         VALUES ($1, $2, 'pending', $3, $4, $5, $6, $7, $8)",
    )
    .bind(&req.order_id)
    .bind(&req.saga_id)
    .bind(serde_json::to_string(&req.customer).map_err(|e| encode("the customer", e))?)
    .bind(serde_json::to_string(&req.address).map_err(|e| encode("the address", e))?)
    .bind(delivery_name(req.delivery))
    .bind(serde_json::to_string(&lines).map_err(|e| encode("the lines", e))?)
    .bind(total)
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    Ok(PlacedOrder {
        order_id: req.order_id,
        lines,
        delivery_fee_cents: fee,
        total_cents: total,
    })
}

/// Take one line's quantity off the shelf if that much is left: a conditional decrement, so
/// concurrent orders never oversell. Priced as the catalog says now.
async fn reserve_line(tx: &mut AnyConnection, item: &OrderItem) -> Result<OrderLine, ServiceError> {
    let product = sqlx::query("SELECT name, price_cents FROM products WHERE sku = $1")
        .bind(&item.sku)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| ServiceError::UnknownProduct {
            sku: item.sku.clone(),
        })?;
    let reserved =
        sqlx::query("UPDATE products SET stock = stock - $1 WHERE sku = $2 AND stock >= $3")
            .bind(item.qty)
            .bind(&item.sku)
            .bind(item.qty)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    if reserved == 0 {
        return Err(ServiceError::OutOfStock {
            sku: item.sku.clone(),
            qty: item.qty,
        });
    }
    Ok(OrderLine {
        sku: item.sku.clone(),
        name: product.try_get("name")?,
        qty: item.qty,
        unit_price_cents: product.try_get("price_cents")?,
    })
}

async fn release(tx: &mut AnyConnection, line: &OrderLine) -> Result<(), ServiceError> {
    sqlx::query("UPDATE products SET stock = stock + $1 WHERE sku = $2")
        .bind(line.qty)
        .bind(&line.sku)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// A pending order becomes confirmed; any other is refused.
async fn confirm_pending(tx: &mut AnyConnection, req: OrderRef) -> Result<Updated, ServiceError> {
    let changed = sqlx::query(
        "UPDATE orders SET status = 'confirmed' WHERE order_id = $1 AND status = 'pending'",
    )
    .bind(&req.order_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if changed == 0 {
        return Err(ServiceError::NotPending {
            order_id: req.order_id,
        });
    }
    Ok(Updated {
        order_id: req.order_id,
        status: UpdatedTo::Confirmed,
    })
}

/// Mark the order cancelled and put its stock back. An order whose lines cannot be read is not
/// touched: cancelled without them, its stock would stay reserved for good.
async fn cancel_and_release(
    tx: &mut AnyConnection,
    req: Compensate,
) -> Result<Updated, ServiceError> {
    let row = sqlx::query("SELECT status, lines FROM orders WHERE order_id = $1")
        .bind(&req.order_id)
        .fetch_optional(&mut *tx)
        .await?;
    match row {
        None => {
            // Cancelled before it was placed: leave a cancelled order behind, so a late
            // `place_order` finds it and does nothing.
            sqlx::query(
                "INSERT INTO orders (order_id, saga_id, status, customer, address, delivery, lines, total_cents, created_at_ms)
                 VALUES ($1, '', 'cancelled', '{}', '{}', '', '[]', 0, $2)",
            )
            .bind(&req.order_id)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        }
        Some(row) if OrderStatus::read(&row, &req.order_id)? == OrderStatus::Cancelled => {}
        Some(row) => {
            for line in &read_lines(&row, &req.order_id)? {
                release(tx, line).await?;
            }
            sqlx::query("UPDATE orders SET status = 'cancelled' WHERE order_id = $1")
                .bind(&req.order_id)
                .execute(&mut *tx)
                .await?;
        }
    }
    Ok(Updated {
        order_id: req.order_id,
        status: UpdatedTo::Cancelled,
    })
}

async fn load_catalog(pool: &AnyPool) -> Result<Vec<CatalogItem>, ServiceError> {
    let rows = sqlx::query("SELECT sku, name, price_cents, stock FROM products ORDER BY sku")
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(CatalogItem {
                sku: r.try_get("sku")?,
                name: r.try_get("name")?,
                price_cents: r.try_get("price_cents")?,
                stock: r.try_get("stock")?,
            })
        })
        .collect()
}

async fn load_order(pool: &AnyPool, order_id: &str) -> Result<StoredOrder, ServiceError> {
    let row = sqlx::query(
        "SELECT order_id, saga_id, status, total_cents, lines FROM orders WHERE order_id = $1",
    )
    .bind(order_id)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| ServiceError::NoOrder {
        order_id: order_id.to_string(),
    })?;
    Ok(StoredOrder {
        order_id: row.try_get("order_id")?,
        saga_id: row.try_get("saga_id")?,
        status: row.try_get("status")?,
        total_cents: row.try_get("total_cents")?,
        lines: read_lines(&row, order_id)?,
    })
}
