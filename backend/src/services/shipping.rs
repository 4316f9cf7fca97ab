//! The shipping service: schedules a shipment with a tracking number and an estimated delivery
//! date (express is sooner), tells the customer when to expect it, and refuses countries it
//! does not deliver to.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use shared::{Address, Delivery, Fault, NotificationView, ShipmentView, iso_date, rfc3339_millis};
use sqlx::Row;

use super::{ServiceDb, StepRequest, db_failure, new_id, now_ms, refusal, reply};
use crate::body::JsonBody;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/shipping");

/// Where we deliver. Anything else (say `AQ`) makes `ship_order` fail.
pub const SERVED_COUNTRIES: [&str; 16] = [
    "AT", "AU", "BE", "CA", "CH", "DE", "DK", "ES", "FR", "GB", "IE", "IT", "NL", "PT", "SE", "US",
];

#[derive(Clone)]
pub struct Shipping {
    db: ServiceDb,
}

#[derive(Debug, Deserialize)]
pub struct Ship {
    pub order_id: String,
    pub address: Address,
    pub delivery: Delivery,
    pub email: String,
    pub fault: Option<Fault>,
}

#[derive(Debug, Deserialize)]
pub struct ShipmentRef {
    pub order_id: String,
    pub fault: Option<Fault>,
}

impl Shipping {
    pub async fn open(database: &str) -> Result<Self, super::DbError> {
        Ok(Shipping {
            db: ServiceDb::open(database, "shipping", &MIGRATOR).await?,
        })
    }

    /// Its database, for the server to close when it stops.
    pub fn db(&self) -> &ServiceDb {
        &self.db
    }

    pub fn router(self) -> Router {
        Router::new()
            .route("/ship_order", post(ship_order))
            .route("/cancel_shipment", post(cancel_shipment))
            .route("/shipments/{order_id}", get(get_shipment))
            .route("/notifications/{order_id}", get(get_notification))
            .with_state(Arc::new(self))
    }
}

type Svc = State<Arc<Shipping>>;

fn tracking_number() -> String {
    let digits = uuid::Uuid::new_v4().as_u128() % 10_000_000_000;
    format!("SS{digits:010}GB")
}

async fn ship_order(State(svc): Svc, step: StepRequest, JsonBody(req): JsonBody<Ship>) -> Response {
    let fault = req.fault;
    step.run_action(&svc.db, fault, move |tx| {
            Box::pin(async move {
                if !SERVED_COUNTRIES.contains(&req.address.country.as_str()) {
                    return Ok((422, json!({ "error": format!("we do not ship to {}", req.address.country), "field": "address.country" })));
                }
                let cancelled = sqlx::query("SELECT order_id FROM cancelled_orders WHERE order_id = $1")
                    .bind(&req.order_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if cancelled.is_some() {
                    return Ok(refusal(format!("the shipment of order {} was cancelled before it was scheduled", req.order_id)));
                }
                let now = now_ms();
                let eta = iso_date(now.div_euclid(86_400_000) + req.delivery.days());
                let shipment = ShipmentView {
                    shipment_id: new_id("shp"),
                    status: "scheduled".into(),
                    tracking_number: tracking_number(),
                    estimated_delivery: eta.clone(),
                };
                sqlx::query(
                    "INSERT INTO shipments (shipment_id, order_id, status, tracking_number, estimated_delivery, country, delivery, created_at_ms)
                     VALUES ($1, $2, 'scheduled', $3, $4, $5, $6, $7)",
                )
                .bind(&shipment.shipment_id)
                .bind(&req.order_id)
                .bind(&shipment.tracking_number)
                .bind(&eta)
                .bind(&req.address.country)
                .bind(json!(req.delivery).as_str().unwrap_or("standard").to_string())
                .bind(now)
                .execute(&mut *tx)
                .await?;
                let message = format!(
                    "Your order {} is on its way: tracking number {}, expected on {eta}.",
                    req.order_id, shipment.tracking_number
                );
                sqlx::query("INSERT INTO notifications (order_id, email, message, sent_at_ms) VALUES ($1, $2, $3, $4)")
                    .bind(&req.order_id)
                    .bind(&req.email)
                    .bind(&message)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                Ok((200, json!(shipment)))
            })
        })
        .await
}

async fn cancel_shipment(
    State(svc): Svc,
    step: StepRequest,
    JsonBody(req): JsonBody<ShipmentRef>,
) -> Response {
    let fault = req.fault;
    step.run_compensation(&svc.db, fault, move |tx| {
        Box::pin(async move {
            sqlx::query("UPDATE shipments SET status = 'cancelled' WHERE order_id = $1")
                .bind(&req.order_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO cancelled_orders (order_id) VALUES ($1) ON CONFLICT DO NOTHING",
            )
            .bind(&req.order_id)
            .execute(&mut *tx)
            .await?;
            Ok((
                200,
                json!({ "order_id": req.order_id, "status": "cancelled" }),
            ))
        })
    })
    .await
}

async fn get_shipment(State(svc): Svc, Path(order_id): Path<String>) -> Response {
    let row = sqlx::query("SELECT shipment_id, status, tracking_number, estimated_delivery FROM shipments WHERE order_id = $1")
        .bind(&order_id)
        .fetch_optional(&svc.db.pool)
        .await;
    match row {
        Ok(Some(r)) => reply(
            200,
            json!(ShipmentView {
                shipment_id: r.try_get("shipment_id").unwrap_or_default(),
                status: r.try_get("status").unwrap_or_default(),
                tracking_number: r.try_get("tracking_number").unwrap_or_default(),
                estimated_delivery: r.try_get("estimated_delivery").unwrap_or_default(),
            }),
        ),
        Ok(None) => reply(
            404,
            json!({ "error": format!("no shipment for order {order_id}"), "field": null }),
        ),
        Err(e) => db_failure(e),
    }
}

async fn get_notification(State(svc): Svc, Path(order_id): Path<String>) -> Response {
    let row =
        sqlx::query("SELECT email, message, sent_at_ms FROM notifications WHERE order_id = $1")
            .bind(&order_id)
            .fetch_optional(&svc.db.pool)
            .await;
    match row {
        Ok(Some(r)) => reply(
            200,
            json!(NotificationView {
                email: r.try_get("email").unwrap_or_default(),
                message: r.try_get("message").unwrap_or_default(),
                sent_at: rfc3339_millis(r.try_get("sent_at_ms").unwrap_or_default()),
            }),
        ),
        Ok(None) => reply(
            404,
            json!({ "error": format!("no notification for order {order_id}"), "field": null }),
        ),
        Err(e) => db_failure(e),
    }
}
