//! The billing service: issues the invoice for an order (lines priced when the order was
//! placed, plus the delivery fee) and voids it when the purchase unwinds.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use shared::InvoiceView;
use sqlx::{AnyConnection, AnyPool, Row};

use super::protocol::{CREATE_INVOICE, Compensate, IssueInvoice, Updated, UpdatedTo, VOID_INVOICE};
use super::{ServiceDb, ServiceError, StepRequest, new_id, now_ms};
use crate::body::JsonBody;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/billing");

#[derive(Clone)]
pub struct Billing {
    db: ServiceDb,
}

impl Billing {
    pub async fn open(database: &str, schema_prefix: Option<&str>) -> Result<Self, super::DbError> {
        Ok(Billing {
            db: ServiceDb::open(database, schema_prefix, "billing", &MIGRATOR).await?,
        })
    }

    /// Its database, for the server to close when it stops.
    pub fn db(&self) -> &ServiceDb {
        &self.db
    }

    pub fn router(self) -> Router {
        Router::new()
            .route(CREATE_INVOICE.path, post(create_invoice))
            .route(VOID_INVOICE.path, post(void_invoice))
            .route("/invoices/{order_id}", get(get_invoice))
            .with_state(Arc::new(self))
    }
}

type Svc = State<Arc<Billing>>;

async fn create_invoice(
    State(svc): Svc,
    step: StepRequest,
    JsonBody(req): JsonBody<IssueInvoice>,
) -> Result<Json<InvoiceView>, ServiceError> {
    let fault = req.fault;
    step.run_action(&svc.db, fault, |tx| Box::pin(issue_invoice(tx, req)))
        .await
}

async fn void_invoice(
    State(svc): Svc,
    step: StepRequest,
    JsonBody(req): JsonBody<Compensate>,
) -> Result<Json<Updated>, ServiceError> {
    let fault = req.fault;
    step.run_compensation(&svc.db, fault, |tx| Box::pin(mark_void(tx, req)))
        .await
}

async fn get_invoice(
    State(svc): Svc,
    Path(order_id): Path<String>,
) -> Result<Json<InvoiceView>, ServiceError> {
    load_invoice(&svc.db.pool, &order_id).await.map(Json)
}

/// Issue the invoice, unless a void for the order came first (then refused, so the late action
/// does nothing).
async fn issue_invoice(
    tx: &mut AnyConnection,
    req: IssueInvoice,
) -> Result<InvoiceView, ServiceError> {
    let voided = sqlx::query("SELECT order_id FROM voided_orders WHERE order_id = $1")
        .bind(&req.order_id)
        .fetch_optional(&mut *tx)
        .await?;
    if voided.is_some() {
        return Err(ServiceError::InvoiceVoidedFirst {
            order_id: req.order_id,
        });
    }
    let total = req
        .lines
        .iter()
        .map(|l| l.qty * l.unit_price_cents)
        .sum::<i64>()
        + req.delivery_fee_cents;
    let invoice = InvoiceView {
        invoice_id: new_id("inv"),
        status: "issued".into(),
        total_cents: total,
    };
    let lines =
        serde_json::to_string(&req.lines).map_err(|e| ServiceError::encode("the lines", e))?;
    sqlx::query(
        "INSERT INTO invoices (invoice_id, order_id, status, lines, total_cents, issued_at_ms) VALUES ($1, $2, 'issued', $3, $4, $5)",
    )
    .bind(&invoice.invoice_id)
    .bind(&req.order_id)
    .bind(lines)
    .bind(total)
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    Ok(invoice)
}

/// Void the order's invoice, and remember the void so an invoice arriving later is refused.
async fn mark_void(tx: &mut AnyConnection, req: Compensate) -> Result<Updated, ServiceError> {
    sqlx::query("UPDATE invoices SET status = 'void' WHERE order_id = $1")
        .bind(&req.order_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO voided_orders (order_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(&req.order_id)
        .execute(&mut *tx)
        .await?;
    Ok(Updated {
        order_id: req.order_id,
        status: UpdatedTo::Void,
    })
}

async fn load_invoice(pool: &AnyPool, order_id: &str) -> Result<InvoiceView, ServiceError> {
    let row =
        sqlx::query("SELECT invoice_id, status, total_cents FROM invoices WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(pool)
            .await?
            .ok_or_else(|| ServiceError::NothingFor {
                what: "invoice",
                order_id: order_id.to_string(),
            })?;
    Ok(InvoiceView {
        invoice_id: row.try_get("invoice_id")?,
        status: row.try_get("status")?,
        total_cents: row.try_get("total_cents")?,
    })
}
