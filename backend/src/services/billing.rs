//! The billing service: issues the invoice for an order (lines priced when the order was
//! placed, plus the delivery fee) and voids it when the purchase unwinds.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use shared::{Fault, InvoiceView};
use sqlx::Row;

use super::orders::OrderLine;
use super::{ServiceDb, StepRequest, db_failure, new_id, now_ms, refusal, reply};
use crate::body::JsonBody;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/billing");

#[derive(Clone)]
pub struct Billing {
    db: ServiceDb,
}

#[derive(Debug, Deserialize)]
pub struct IssueInvoice {
    pub order_id: String,
    pub lines: Vec<OrderLine>,
    pub delivery_fee_cents: i64,
    pub fault: Option<Fault>,
}

#[derive(Debug, Deserialize)]
pub struct InvoiceRef {
    pub order_id: String,
    pub fault: Option<Fault>,
}

impl Billing {
    pub async fn open(database: &str) -> Result<Self, super::DbError> {
        Ok(Billing {
            db: ServiceDb::open(database, "billing", &MIGRATOR).await?,
        })
    }

    /// Its database, for the server to close when it stops.
    pub fn db(&self) -> &ServiceDb {
        &self.db
    }

    pub fn router(self) -> Router {
        Router::new()
            .route("/create_invoice", post(create_invoice))
            .route("/void_invoice", post(void_invoice))
            .route("/invoices/{order_id}", get(get_invoice))
            .with_state(Arc::new(self))
    }
}

type Svc = State<Arc<Billing>>;

async fn create_invoice(
    State(svc): Svc,
    step: StepRequest,
    JsonBody(req): JsonBody<IssueInvoice>,
) -> Response {
    let fault = req.fault;
    step.run_action(&svc.db, fault, move |tx| {
            Box::pin(async move {
                let voided = sqlx::query("SELECT order_id FROM voided_orders WHERE order_id = $1")
                    .bind(&req.order_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if voided.is_some() {
                    return Ok(refusal(format!("the invoice for order {} was voided before it was issued", req.order_id)));
                }
                let total = req.lines.iter().map(|l| l.qty * l.unit_price_cents).sum::<i64>() + req.delivery_fee_cents;
                let invoice = InvoiceView { invoice_id: new_id("inv"), status: "issued".into(), total_cents: total };
                sqlx::query(
                    "INSERT INTO invoices (invoice_id, order_id, status, lines, total_cents, issued_at_ms) VALUES ($1, $2, 'issued', $3, $4, $5)",
                )
                .bind(&invoice.invoice_id)
                .bind(&req.order_id)
                .bind(json!(req.lines).to_string())
                .bind(total)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
                Ok((200, json!(invoice)))
            })
        })
        .await
}

async fn void_invoice(
    State(svc): Svc,
    step: StepRequest,
    JsonBody(req): JsonBody<InvoiceRef>,
) -> Response {
    let fault = req.fault;
    step.run_compensation(&svc.db, fault, move |tx| {
        Box::pin(async move {
            sqlx::query("UPDATE invoices SET status = 'void' WHERE order_id = $1")
                .bind(&req.order_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("INSERT INTO voided_orders (order_id) VALUES ($1) ON CONFLICT DO NOTHING")
                .bind(&req.order_id)
                .execute(&mut *tx)
                .await?;
            Ok((200, json!({ "order_id": req.order_id, "status": "void" })))
        })
    })
    .await
}

async fn get_invoice(State(svc): Svc, Path(order_id): Path<String>) -> Response {
    let row =
        sqlx::query("SELECT invoice_id, status, total_cents FROM invoices WHERE order_id = $1")
            .bind(&order_id)
            .fetch_optional(&svc.db.pool)
            .await;
    match row {
        Ok(Some(r)) => reply(
            200,
            json!(InvoiceView {
                invoice_id: r.try_get("invoice_id").unwrap_or_default(),
                status: r.try_get("status").unwrap_or_default(),
                total_cents: r.try_get("total_cents").unwrap_or_default(),
            }),
        ),
        Ok(None) => reply(
            404,
            json!({ "error": format!("no invoice for order {order_id}"), "field": null }),
        ),
        Err(e) => db_failure(e),
    }
}
