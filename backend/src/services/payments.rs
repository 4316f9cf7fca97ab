//! The payments service: tokenises cards (keeping only the last four digits, the expiry and how
//! the test card behaves), charges a card token or a wallet, and refunds in full.
//!
//! Test cards: `4000000000000002` is declined, `4000000000009995` has insufficient funds; every
//! other valid card pays. Wallet `empty-wallet` has insufficient funds.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;
use shared::{Fault, PaymentView};
use sqlx::Row;

use super::{ServiceDb, StepRequest, db_failure, new_id, now_ms, refusal, reply};
use crate::body::JsonBody;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/payments");

pub const DECLINED_CARD: &str = "4000000000000002";
pub const INSUFFICIENT_FUNDS_CARD: &str = "4000000000009995";
pub const EMPTY_WALLET: &str = "empty-wallet";

#[derive(Clone)]
pub struct Payments {
    db: ServiceDb,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TokeniseCard {
    pub card_number: String,
    pub expiry: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CardToken {
    pub token: String,
    pub last4: String,
}

/// How a purchase pays, as the saga carries it: never a card number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum PaymentRef {
    Card { token: String, last4: String },
    Wallet { wallet_id: String },
}

#[derive(Debug, Deserialize)]
pub struct Charge {
    pub order_id: String,
    pub amount_cents: i64,
    pub payment: PaymentRef,
    pub fault: Option<Fault>,
}

#[derive(Debug, Deserialize)]
pub struct RefundRef {
    pub order_id: String,
    pub fault: Option<Fault>,
}

impl Payments {
    pub async fn open(database: &str) -> Result<Self, super::DbError> {
        Ok(Payments {
            db: ServiceDb::open(database, "payments", &MIGRATOR).await?,
        })
    }

    /// Its database, for the server to close when it stops.
    pub fn db(&self) -> &ServiceDb {
        &self.db
    }

    pub fn router(self) -> Router {
        Router::new()
            .route("/tokens", post(tokenise))
            .route("/process_payment", post(process_payment))
            .route("/refund_payment", post(refund_payment))
            .route("/payments/{order_id}", get(get_payment))
            .with_state(Arc::new(self))
    }
}

type Svc = State<Arc<Payments>>;

/// Turn a card (already validated by the API) into a token. The number is not stored.
async fn tokenise(State(svc): Svc, JsonBody(req): JsonBody<TokeniseCard>) -> Response {
    let digits: String = req
        .card_number
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    if digits.len() < 12 {
        return reply(
            422,
            json!({ "error": "the card number is too short", "field": "payment.card_number" }),
        );
    }
    let behaviour = match digits.as_str() {
        DECLINED_CARD => "declined",
        INSUFFICIENT_FUNDS_CARD => "insufficient_funds",
        _ => "ok",
    };
    let token = CardToken {
        token: new_id("tok"),
        last4: digits[digits.len() - 4..].to_string(),
    };
    let expiry = req.expiry;
    let inserted = svc
        .db
        .write(move |conn| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO card_tokens (token, last4, expiry, behaviour) VALUES ($1, $2, $3, $4)",
                )
                .bind(&token.token)
                .bind(&token.last4)
                .bind(&expiry)
                .bind(behaviour)
                .execute(&mut *conn)
                .await?;
                Ok((200, json!(token)))
            })
        })
        .await;
    match inserted {
        Ok((status, body)) => reply(status, body),
        Err(e) => db_failure(e),
    }
}

async fn process_payment(
    State(svc): Svc,
    step: StepRequest,
    JsonBody(req): JsonBody<Charge>,
) -> Response {
    let fault = req.fault;
    step.run_action(&svc.db, fault, move |tx| {
            Box::pin(async move {
                let refunded = sqlx::query("SELECT order_id FROM refunded_orders WHERE order_id = $1")
                    .bind(&req.order_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if refunded.is_some() {
                    return Ok(refusal(format!("the payment for order {} was refunded before it was taken", req.order_id)));
                }
                let (method, last4, wallet) = match &req.payment {
                    PaymentRef::Card { token, .. } => {
                        let row = sqlx::query("SELECT last4, behaviour FROM card_tokens WHERE token = $1")
                            .bind(token)
                            .fetch_optional(&mut *tx)
                            .await?;
                        let Some(row) = row else {
                            return Ok(refusal("unknown card token"));
                        };
                        let behaviour: String = row.try_get("behaviour")?;
                        match behaviour.as_str() {
                            "declined" => return Ok((402, json!({ "error": "the card was declined", "field": null }))),
                            "insufficient_funds" => {
                                return Ok((402, json!({ "error": "the card has insufficient funds", "field": null })));
                            }
                            _ => {}
                        }
                        ("card", Some(row.try_get::<String, _>("last4")?), None)
                    }
                    PaymentRef::Wallet { wallet_id } => {
                        if wallet_id == EMPTY_WALLET {
                            return Ok((402, json!({ "error": "the wallet has insufficient funds", "field": null })));
                        }
                        ("wallet", None, Some(wallet_id.clone()))
                    }
                };
                let payment = PaymentView {
                    payment_id: new_id("pay"),
                    status: "captured".into(),
                    amount_cents: req.amount_cents,
                    refunded_cents: 0,
                    card_last4: last4,
                };
                sqlx::query(
                    "INSERT INTO payments (payment_id, order_id, method, card_last4, wallet_id, amount_cents, refunded_cents, status, captured_at_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, 0, 'captured', $7)",
                )
                .bind(&payment.payment_id)
                .bind(&req.order_id)
                .bind(method)
                .bind(payment.card_last4.clone())
                .bind(wallet)
                .bind(req.amount_cents)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
                Ok((200, json!(payment)))
            })
        })
        .await
}

async fn refund_payment(
    State(svc): Svc,
    step: StepRequest,
    JsonBody(req): JsonBody<RefundRef>,
) -> Response {
    let fault = req.fault;
    step.run_compensation(&svc.db, fault, move |tx| {
            Box::pin(async move {
                sqlx::query("UPDATE payments SET status = 'refunded', refunded_cents = amount_cents WHERE order_id = $1")
                    .bind(&req.order_id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("INSERT INTO refunded_orders (order_id) VALUES ($1) ON CONFLICT DO NOTHING")
                    .bind(&req.order_id)
                    .execute(&mut *tx)
                    .await?;
                Ok((200, json!({ "order_id": req.order_id, "status": "refunded" })))
            })
        })
        .await
}

async fn get_payment(State(svc): Svc, Path(order_id): Path<String>) -> Response {
    let row = sqlx::query("SELECT payment_id, status, amount_cents, refunded_cents, card_last4 FROM payments WHERE order_id = $1")
        .bind(&order_id)
        .fetch_optional(&svc.db.pool)
        .await;
    match row {
        Ok(Some(r)) => reply(
            200,
            json!(PaymentView {
                payment_id: r.try_get("payment_id").unwrap_or_default(),
                status: r.try_get("status").unwrap_or_default(),
                amount_cents: r.try_get("amount_cents").unwrap_or_default(),
                refunded_cents: r.try_get("refunded_cents").unwrap_or_default(),
                card_last4: r.try_get("card_last4").ok().flatten(),
            }),
        ),
        Ok(None) => reply(
            404,
            json!({ "error": format!("no payment for order {order_id}"), "field": null }),
        ),
        Err(e) => db_failure(e),
    }
}
