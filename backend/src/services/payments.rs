//! The payments service: tokenises cards (keeping only the last four digits, the expiry and how
//! the test card behaves), charges a card token or a wallet, and refunds in full.
//!
//! Test cards: `4000000000000002` is declined, `4000000000009995` has insufficient funds; every
//! other valid card pays. Wallet `empty-wallet` has insufficient funds.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use shared::PaymentView;
use sqlx::{AnyConnection, AnyPool, Row};

use super::protocol::{
    Charge, Compensate, PROCESS_PAYMENT, REFUND_PAYMENT, TOKENISE_CARD, Updated, UpdatedTo,
};
// Where `POST /api/orders` has always found them.
pub use super::protocol::{CardToken, PaymentRef, TokeniseCard};
use super::{ServiceDb, ServiceError, StepRequest, new_id, now_ms};
use crate::body::JsonBody;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/payments");

pub const DECLINED_CARD: &str = "4000000000000002";
pub const INSUFFICIENT_FUNDS_CARD: &str = "4000000000009995";
pub const EMPTY_WALLET: &str = "empty-wallet";

#[derive(Clone)]
pub struct Payments {
    db: ServiceDb,
}

impl Payments {
    pub async fn open(database: &str, schema_prefix: Option<&str>) -> Result<Self, super::DbError> {
        Ok(Payments {
            db: ServiceDb::open(database, schema_prefix, "payments", &MIGRATOR).await?,
        })
    }

    /// Its database, for the server to close when it stops.
    pub fn db(&self) -> &ServiceDb {
        &self.db
    }

    pub fn router(self) -> Router {
        Router::new()
            .route(TOKENISE_CARD.path, post(tokenise))
            .route(PROCESS_PAYMENT.path, post(process_payment))
            .route(REFUND_PAYMENT.path, post(refund_payment))
            .route("/payments/{order_id}", get(get_payment))
            .with_state(Arc::new(self))
    }
}

type Svc = State<Arc<Payments>>;

/// How a test card behaves when charged, as `card_tokens.behaviour` holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Pays,
    Declined,
    InsufficientFunds,
}

impl Behaviour {
    fn of(digits: &str) -> Self {
        match digits {
            DECLINED_CARD => Behaviour::Declined,
            INSUFFICIENT_FUNDS_CARD => Behaviour::InsufficientFunds,
            _ => Behaviour::Pays,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Behaviour::Pays => "ok",
            Behaviour::Declined => "declined",
            Behaviour::InsufficientFunds => "insufficient_funds",
        }
    }

    fn parse(stored: &str) -> Result<Self, ServiceError> {
        [
            Behaviour::Pays,
            Behaviour::Declined,
            Behaviour::InsufficientFunds,
        ]
        .into_iter()
        .find(|b| b.as_str() == stored)
        .ok_or_else(|| {
            ServiceError::corrupt(
                "a card token's behaviour",
                format_args!("{stored:?} is no behaviour"),
            )
        })
    }
}

/// Turn a card (already validated by the API) into a token. The number is not stored.
async fn tokenise(
    State(svc): Svc,
    JsonBody(req): JsonBody<TokeniseCard>,
) -> Result<Json<CardToken>, ServiceError> {
    let digits: String = req
        .card_number
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    if digits.len() < 12 {
        return Err(ServiceError::CardTooShort);
    }
    let token = CardToken {
        token: new_id("tok"),
        last4: digits[digits.len() - 4..].to_string(),
    };
    let card = (req.expiry, Behaviour::of(&digits));
    svc.db
        .write(|conn| Box::pin(store_token(conn, token, card)))
        .await
        .map(Json)
}

async fn process_payment(
    State(svc): Svc,
    step: StepRequest,
    JsonBody(req): JsonBody<Charge>,
) -> Result<Json<PaymentView>, ServiceError> {
    let fault = req.fault;
    step.run_action(&svc.db, fault, |tx| Box::pin(take_payment(tx, req)))
        .await
}

async fn refund_payment(
    State(svc): Svc,
    step: StepRequest,
    JsonBody(req): JsonBody<Compensate>,
) -> Result<Json<Updated>, ServiceError> {
    let fault = req.fault;
    step.run_compensation(&svc.db, fault, |tx| Box::pin(refund(tx, req)))
        .await
}

async fn get_payment(
    State(svc): Svc,
    Path(order_id): Path<String>,
) -> Result<Json<PaymentView>, ServiceError> {
    load_payment(&svc.db.pool, &order_id).await.map(Json)
}

async fn store_token(
    conn: &mut AnyConnection,
    token: CardToken,
    (expiry, behaviour): (String, Behaviour),
) -> Result<CardToken, ServiceError> {
    sqlx::query(
        "INSERT INTO card_tokens (token, last4, expiry, behaviour) VALUES ($1, $2, $3, $4)",
    )
    .bind(&token.token)
    .bind(&token.last4)
    .bind(&expiry)
    .bind(behaviour.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(token)
}

/// Charge the card or the wallet, unless a refund for the order came first (then refused, so
/// the late action does nothing).
async fn take_payment(tx: &mut AnyConnection, req: Charge) -> Result<PaymentView, ServiceError> {
    let refunded = sqlx::query("SELECT order_id FROM refunded_orders WHERE order_id = $1")
        .bind(&req.order_id)
        .fetch_optional(&mut *tx)
        .await?;
    if refunded.is_some() {
        return Err(ServiceError::PaymentRefundedFirst {
            order_id: req.order_id,
        });
    }
    let (method, last4, wallet) = match &req.payment {
        PaymentRef::Card { token, .. } => ("card", Some(charge_card(tx, token).await?), None),
        PaymentRef::Wallet { wallet_id } if wallet_id == EMPTY_WALLET => {
            return Err(ServiceError::WalletInsufficientFunds);
        }
        PaymentRef::Wallet { wallet_id } => ("wallet", None, Some(wallet_id.clone())),
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
    Ok(payment)
}

/// Whether the card behind `token` pays; its last four digits if it does.
async fn charge_card(tx: &mut AnyConnection, token: &str) -> Result<String, ServiceError> {
    let card = sqlx::query("SELECT last4, behaviour FROM card_tokens WHERE token = $1")
        .bind(token)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(ServiceError::UnknownCardToken)?;
    let behaviour: String = card.try_get("behaviour")?;
    match Behaviour::parse(&behaviour)? {
        Behaviour::Pays => Ok(card.try_get("last4")?),
        Behaviour::Declined => Err(ServiceError::CardDeclined),
        Behaviour::InsufficientFunds => Err(ServiceError::CardInsufficientFunds),
    }
}

/// Refund the order's payment in full, and remember the refund so a payment arriving later is
/// refused.
async fn refund(tx: &mut AnyConnection, req: Compensate) -> Result<Updated, ServiceError> {
    sqlx::query(
        "UPDATE payments SET status = 'refunded', refunded_cents = amount_cents WHERE order_id = $1",
    )
    .bind(&req.order_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("INSERT INTO refunded_orders (order_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(&req.order_id)
        .execute(&mut *tx)
        .await?;
    Ok(Updated {
        order_id: req.order_id,
        status: UpdatedTo::Refunded,
    })
}

async fn load_payment(pool: &AnyPool, order_id: &str) -> Result<PaymentView, ServiceError> {
    let row = sqlx::query(
        "SELECT payment_id, status, amount_cents, refunded_cents, card_last4 FROM payments WHERE order_id = $1",
    )
    .bind(order_id)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| ServiceError::NothingFor {
        what: "payment",
        order_id: order_id.to_string(),
    })?;
    Ok(PaymentView {
        payment_id: row.try_get("payment_id")?,
        status: row.try_get("status")?,
        amount_cents: row.try_get("amount_cents")?,
        refunded_cents: row.try_get("refunded_cents")?,
        // NULL for a wallet payment.
        card_last4: row.try_get("card_last4")?,
    })
}
