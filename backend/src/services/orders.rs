//! The orders service: the catalog with its stock, and orders. `place_order` stores the order
//! and reserves its stock in one transaction (a conditional decrement, so concurrent orders
//! never oversell); `cancel_order` marks it cancelled and releases the stock.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;
use shared::{Address, CatalogItem, Customer, Delivery, Fault, OrderItem};
use sqlx::Row;

use super::{ServiceDb, StepRequest, db_failure, now_ms, refusal, reply};
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

/// A line of an order, priced from the catalog when the order was placed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderLine {
    pub sku: String,
    pub name: String,
    pub qty: i64,
    pub unit_price_cents: i64,
}

#[derive(Debug, Deserialize)]
pub struct PlaceOrder {
    pub order_id: String,
    pub saga_id: String,
    pub customer: Customer,
    pub address: Address,
    pub delivery: Delivery,
    pub items: Vec<OrderItem>,
    pub fault: Option<Fault>,
}

/// What `place_order` answers; the saga passes it on to billing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlacedOrder {
    pub order_id: String,
    pub lines: Vec<OrderLine>,
    pub delivery_fee_cents: i64,
    pub total_cents: i64,
}

#[derive(Debug, Deserialize)]
pub struct OrderRef {
    pub order_id: String,
    pub fault: Option<Fault>,
}

/// An order as the orders service holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredOrder {
    pub order_id: String,
    pub saga_id: String,
    pub status: String,
    pub total_cents: i64,
    pub lines: Vec<OrderLine>,
}

impl Orders {
    /// Open the orders database, seeding the catalog on first start (with `seed_stock` of each
    /// product instead of the catalog's figures, when given).
    pub async fn open(database: &str, seed_stock: Option<i64>) -> Result<Self, super::DbError> {
        let db = ServiceDb::open(database, "orders", &MIGRATOR).await?;
        let mut tx = db.pool.begin().await?;
        let count: i64 = sqlx::query("SELECT COUNT(*) AS n FROM products")
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if count == 0 {
            for (sku, name, price, stock) in CATALOG {
                sqlx::query(
                    "INSERT INTO products (sku, name, price_cents, stock) VALUES ($1, $2, $3, $4)",
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
            .route("/place_order", post(place_order))
            .route("/confirm_order", post(confirm_order))
            .route("/cancel_order", post(cancel_order))
            .route("/orders/{order_id}", get(get_order))
            .with_state(Arc::new(self))
    }

    pub async fn catalog(&self) -> Result<Vec<CatalogItem>, sqlx::Error> {
        let rows = sqlx::query("SELECT sku, name, price_cents, stock FROM products ORDER BY sku")
            .fetch_all(&self.db.pool)
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
}

type Svc = State<Arc<Orders>>;

async fn catalog(State(svc): Svc) -> Response {
    match svc.catalog().await {
        Ok(items) => reply(200, json!(items)),
        Err(e) => db_failure(e),
    }
}

async fn place_order(
    State(svc): Svc,
    step: StepRequest,
    JsonBody(req): JsonBody<PlaceOrder>,
) -> Response {
    let fault = req.fault;
    step.run_action(&svc.db, fault, move |tx| {
            Box::pin(async move {
                let existing = sqlx::query("SELECT status FROM orders WHERE order_id = $1")
                    .bind(&req.order_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if existing.is_some() {
                    return Ok(refusal(format!("order {} was cancelled before it was placed", req.order_id)));
                }
                let mut lines = Vec::with_capacity(req.items.len());
                for item in &req.items {
                    let product = sqlx::query("SELECT name, price_cents FROM products WHERE sku = $1")
                        .bind(&item.sku)
                        .fetch_optional(&mut *tx)
                        .await?;
                    let Some(product) = product else {
                        return Ok(refusal(format!("there is no product {}", item.sku)));
                    };
                    // Reserve: decrement only if enough is left, atomically.
                    let reserved = sqlx::query("UPDATE products SET stock = stock - $1 WHERE sku = $2 AND stock >= $3")
                        .bind(item.qty)
                        .bind(&item.sku)
                        .bind(item.qty)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if reserved == 0 {
                        // Returning a refusal rolls nothing back by itself: undo this order's
                        // earlier reservations in the same transaction.
                        for line in &lines {
                            release(tx, line).await?;
                        }
                        return Ok(refusal(format!("not enough stock for {} (ordered {})", item.sku, item.qty)));
                    }
                    lines.push(OrderLine {
                        sku: item.sku.clone(),
                        name: product.try_get("name")?,
                        qty: item.qty,
                        unit_price_cents: product.try_get("price_cents")?,
                    });
                }
                let fee = req.delivery.fee_cents();
                let total = lines.iter().map(|l| l.qty * l.unit_price_cents).sum::<i64>() + fee;
                sqlx::query(
                    "INSERT INTO orders (order_id, saga_id, status, customer, address, delivery, lines, total_cents, created_at_ms)
                     VALUES ($1, $2, 'pending', $3, $4, $5, $6, $7, $8)",
                )
                .bind(&req.order_id)
                .bind(&req.saga_id)
                .bind(json!(req.customer).to_string())
                .bind(json!(req.address).to_string())
                .bind(json!(req.delivery).as_str().unwrap_or("standard").to_string())
                .bind(json!(lines).to_string())
                .bind(total)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
                let placed = PlacedOrder {
                    order_id: req.order_id.clone(),
                    lines,
                    delivery_fee_cents: fee,
                    total_cents: total,
                };
                Ok((200, json!(placed)))
            })
        })
        .await
}

async fn release(tx: &mut sqlx::AnyConnection, line: &OrderLine) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE products SET stock = stock + $1 WHERE sku = $2")
        .bind(line.qty)
        .bind(&line.sku)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Called by the payment step once the payment is captured.
async fn confirm_order(
    State(svc): Svc,
    step: StepRequest,
    JsonBody(req): JsonBody<OrderRef>,
) -> Response {
    step.run(&svc.db, move |tx| {
        Box::pin(async move {
            let changed = sqlx::query(
                "UPDATE orders SET status = 'confirmed' WHERE order_id = $1 AND status = 'pending'",
            )
            .bind(&req.order_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if changed == 0 {
                return Ok(refusal(format!("order {} is not pending", req.order_id)));
            }
            Ok((
                200,
                json!({ "order_id": req.order_id, "status": "confirmed" }),
            ))
        })
    })
    .await
}

async fn cancel_order(
    State(svc): Svc,
    step: StepRequest,
    JsonBody(req): JsonBody<OrderRef>,
) -> Response {
    let fault = req.fault;
    step.run_compensation(&svc.db, fault, move |tx| {
            Box::pin(async move {
                let row = sqlx::query("SELECT status, lines FROM orders WHERE order_id = $1")
                    .bind(&req.order_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                match row {
                    None => {
                        // Cancelled before it was placed: leave a cancelled order behind, so a
                        // late `place_order` finds it and does nothing.
                        sqlx::query(
                            "INSERT INTO orders (order_id, saga_id, status, customer, address, delivery, lines, total_cents, created_at_ms)
                             VALUES ($1, '', 'cancelled', '{}', '{}', '', '[]', 0, $2)",
                        )
                        .bind(&req.order_id)
                        .bind(now_ms())
                        .execute(&mut *tx)
                        .await?;
                    }
                    Some(row) => {
                        let status: String = row.try_get("status")?;
                        if status != "cancelled" {
                            let lines: String = row.try_get("lines")?;
                            let lines: Vec<OrderLine> = serde_json::from_str(&lines).unwrap_or_default();
                            for line in &lines {
                                release(tx, line).await?;
                            }
                            sqlx::query("UPDATE orders SET status = 'cancelled' WHERE order_id = $1")
                                .bind(&req.order_id)
                                .execute(&mut *tx)
                                .await?;
                        }
                    }
                }
                Ok((200, json!({ "order_id": req.order_id, "status": "cancelled" })))
            })
        })
        .await
}

async fn get_order(State(svc): Svc, Path(order_id): Path<String>) -> Response {
    let row = sqlx::query(
        "SELECT order_id, saga_id, status, total_cents, lines FROM orders WHERE order_id = $1",
    )
    .bind(&order_id)
    .fetch_optional(&svc.db.pool)
    .await;
    match row {
        Ok(Some(r)) => {
            let lines: String = r.try_get("lines").unwrap_or_default();
            let order = StoredOrder {
                order_id: r.try_get("order_id").unwrap_or_default(),
                saga_id: r.try_get("saga_id").unwrap_or_default(),
                status: r.try_get("status").unwrap_or_default(),
                total_cents: r.try_get("total_cents").unwrap_or_default(),
                lines: serde_json::from_str(&lines).unwrap_or_default(),
            };
            reply(200, json!(order))
        }
        Ok(None) => reply(
            404,
            json!({ "error": format!("no order {order_id}"), "field": null }),
        ),
        Err(e) => db_failure(e),
    }
}
