//! The shipping service: schedules a shipment with a tracking number and an estimated delivery
//! date (express is sooner), tells the customer when to expect it, and refuses countries it
//! does not deliver to.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use shared::{NotificationView, ShipmentView, iso_date, rfc3339_millis};
use sqlx::{AnyConnection, AnyPool, Row};

use super::protocol::{
    CANCEL_SHIPMENT, Compensate, SHIP_ORDER, Ship, Updated, UpdatedTo, delivery_name,
};
use super::{ServiceDb, ServiceError, StepRequest, new_id, now_ms};
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

impl Shipping {
    pub async fn open(database: &str, schema_prefix: Option<&str>) -> Result<Self, super::DbError> {
        Ok(Shipping {
            db: ServiceDb::open(database, schema_prefix, "shipping", &MIGRATOR).await?,
        })
    }

    /// Its database, for the server to close when it stops.
    pub fn db(&self) -> &ServiceDb {
        &self.db
    }

    pub fn router(self) -> Router {
        Router::new()
            .route(SHIP_ORDER.path, post(ship_order))
            .route(CANCEL_SHIPMENT.path, post(cancel_shipment))
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

async fn ship_order(
    State(svc): Svc,
    step: StepRequest,
    JsonBody(req): JsonBody<Ship>,
) -> Result<Json<ShipmentView>, ServiceError> {
    let fault = req.fault;
    step.run_action(&svc.db, fault, |tx| Box::pin(schedule_shipment(tx, req)))
        .await
}

async fn cancel_shipment(
    State(svc): Svc,
    step: StepRequest,
    JsonBody(req): JsonBody<Compensate>,
) -> Result<Json<Updated>, ServiceError> {
    let fault = req.fault;
    step.run_compensation(&svc.db, fault, |tx| Box::pin(mark_cancelled(tx, req)))
        .await
}

async fn get_shipment(
    State(svc): Svc,
    Path(order_id): Path<String>,
) -> Result<Json<ShipmentView>, ServiceError> {
    load_shipment(&svc.db.pool, &order_id).await.map(Json)
}

async fn get_notification(
    State(svc): Svc,
    Path(order_id): Path<String>,
) -> Result<Json<NotificationView>, ServiceError> {
    load_notification(&svc.db.pool, &order_id).await.map(Json)
}

/// Schedule the shipment and tell the customer when to expect it, unless the country is not
/// served or a cancellation for the order came first (then refused, so the late action does
/// nothing).
async fn schedule_shipment(
    tx: &mut AnyConnection,
    req: Ship,
) -> Result<ShipmentView, ServiceError> {
    if !SERVED_COUNTRIES.contains(&req.address.country.as_str()) {
        return Err(ServiceError::CountryNotServed {
            country: req.address.country,
        });
    }
    let cancelled = sqlx::query("SELECT order_id FROM cancelled_orders WHERE order_id = $1")
        .bind(&req.order_id)
        .fetch_optional(&mut *tx)
        .await?;
    if cancelled.is_some() {
        return Err(ServiceError::ShipmentCancelledFirst {
            order_id: req.order_id,
        });
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
    .bind(delivery_name(req.delivery))
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let message = format!(
        "Your order {} is on its way: tracking number {}, expected on {eta}.",
        req.order_id, shipment.tracking_number
    );
    sqlx::query(
        "INSERT INTO notifications (order_id, email, message, sent_at_ms) VALUES ($1, $2, $3, $4)",
    )
    .bind(&req.order_id)
    .bind(&req.email)
    .bind(&message)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(shipment)
}

/// Cancel the order's shipment, and remember the cancellation so a shipment arriving later is
/// refused.
async fn mark_cancelled(tx: &mut AnyConnection, req: Compensate) -> Result<Updated, ServiceError> {
    sqlx::query("UPDATE shipments SET status = 'cancelled' WHERE order_id = $1")
        .bind(&req.order_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO cancelled_orders (order_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(&req.order_id)
        .execute(&mut *tx)
        .await?;
    Ok(Updated {
        order_id: req.order_id,
        status: UpdatedTo::Cancelled,
    })
}

async fn load_shipment(pool: &AnyPool, order_id: &str) -> Result<ShipmentView, ServiceError> {
    let row = sqlx::query(
        "SELECT shipment_id, status, tracking_number, estimated_delivery FROM shipments WHERE order_id = $1",
    )
    .bind(order_id)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| ServiceError::NothingFor {
        what: "shipment",
        order_id: order_id.to_string(),
    })?;
    Ok(ShipmentView {
        shipment_id: row.try_get("shipment_id")?,
        status: row.try_get("status")?,
        tracking_number: row.try_get("tracking_number")?,
        estimated_delivery: row.try_get("estimated_delivery")?,
    })
}

async fn load_notification(
    pool: &AnyPool,
    order_id: &str,
) -> Result<NotificationView, ServiceError> {
    let row =
        sqlx::query("SELECT email, message, sent_at_ms FROM notifications WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(pool)
            .await?
            .ok_or_else(|| ServiceError::NothingFor {
                what: "notification",
                order_id: order_id.to_string(),
            })?;
    Ok(NotificationView {
        email: row.try_get("email")?,
        message: row.try_get("message")?,
        sent_at: rfc3339_millis(row.try_get("sent_at_ms")?),
    })
}
