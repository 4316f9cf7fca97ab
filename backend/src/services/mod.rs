//! The four shop services. Each is a module with its routes, its storage and its migrations,
//! owns its own database, and is reached only over HTTP: the saga's participants call it with
//! an `Idempotency-Key`, and no service reads another's tables.
//!
//! By default `saga-shop` hosts all four under `/svc/{name}`; `saga-shop --service NAME` hosts
//! one alone, so they can be spread over processes or machines.

pub mod billing;
pub mod db;
pub mod orders;
pub mod payments;
pub mod shipping;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use axum::Json;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use shared::Fault;

pub use db::{DbError, Effect, ServiceDb};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceName {
    Orders,
    Billing,
    Payments,
    Shipping,
}

impl ServiceName {
    pub const ALL: [ServiceName; 4] = [
        ServiceName::Orders,
        ServiceName::Billing,
        ServiceName::Payments,
        ServiceName::Shipping,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ServiceName::Orders => "orders",
            ServiceName::Billing => "billing",
            ServiceName::Payments => "payments",
            ServiceName::Shipping => "shipping",
        }
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ServiceName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ServiceName::ALL
            .into_iter()
            .find(|n| n.as_str() == s)
            .ok_or_else(|| {
                format!("unknown service {s:?}: use orders, billing, payments or shipping")
            })
    }
}

/// What every action and compensation request carries besides its body: the
/// `Idempotency-Key` (required) and which attempt of the step this is (`X-Saga-Attempt`, for
/// the transient faults).
pub struct StepRequest {
    pub key: String,
    pub attempt: u32,
}

impl<S: Send + Sync> FromRequestParts<S> for StepRequest {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let key = header("idempotency-key")
            .filter(|k| !k.is_empty() && k.len() <= 200)
            .map(str::to_string)
            .ok_or_else(|| {
                reply(
                    400,
                    json!({ "error": "the Idempotency-Key header is required", "field": null }),
                )
            })?;
        let attempt = header("x-saga-attempt")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        Ok(StepRequest { key, attempt })
    }
}

impl StepRequest {
    /// An action, as every service runs one: the faults that act before it, the effect once
    /// per key, then the `timeout` fault's silence after a success.
    pub async fn run_action<F>(&self, db: &ServiceDb, fault: Option<Fault>, effect: F) -> Response
    where
        F: Effect,
    {
        if let Some((status, body)) = before_action(fault, self.attempt).await {
            return reply(status, body);
        }
        match db.idempotent(&self.key, effect).await {
            Ok((status, body)) => {
                if status == 200 {
                    after_action(fault).await;
                }
                reply(status, body)
            }
            Err(e) => db_failure(e),
        }
    }

    /// A compensation: its faults, then the effect once per key.
    pub async fn run_compensation<F>(
        &self,
        db: &ServiceDb,
        fault: Option<Fault>,
        effect: F,
    ) -> Response
    where
        F: Effect,
    {
        if let Some((status, body)) = before_compensation(fault, self.attempt) {
            return reply(status, body);
        }
        self.run(db, effect).await
    }

    /// The effect once per key, no faults.
    pub async fn run<F>(&self, db: &ServiceDb, effect: F) -> Response
    where
        F: Effect,
    {
        match db.idempotent(&self.key, effect).await {
            Ok((status, body)) => reply(status, body),
            Err(e) => db_failure(e),
        }
    }
}

pub fn reply(status: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(body)).into_response()
}

/// A business refusal: the participant said no and applied nothing.
pub fn refusal(message: impl Into<String>) -> (u16, Value) {
    (409, json!({ "error": message.into(), "field": null }))
}

pub fn db_failure(e: impl fmt::Display) -> Response {
    tracing::error!(error = %e, "service database error");
    reply(
        503,
        json!({ "error": "the service's database is unavailable", "field": null }),
    )
}

/// Faults that act before an action (DESIGN.md §4): `fail` refuses, `transient` answers 503 on
/// the first N attempts, `delay` makes the service slow. `None` means go ahead.
async fn before_action(fault: Option<Fault>, attempt: u32) -> Option<(u16, Value)> {
    match fault {
        Some(Fault::Fail) => Some((
            422,
            json!({ "error": "the service refused the request (injected fault: fail)", "field": null }),
        )),
        Some(Fault::Transient { times }) if attempt <= times => Some((
            503,
            json!({ "error": format!("the service is temporarily unavailable (injected fault: transient, attempt {attempt} of {times})"), "field": null }),
        )),
        Some(Fault::Delay { ms }) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            None
        }
        _ => None,
    }
}

/// The `timeout` fault: the effect is applied, but the answer never comes.
async fn after_action(fault: Option<Fault>) {
    if fault == Some(Fault::Timeout) {
        std::future::pending::<()>().await;
    }
}

/// Faults of a compensation: `compensation_transient` fails the first N attempts,
/// `compensation_fail` every one.
fn before_compensation(fault: Option<Fault>, attempt: u32) -> Option<(u16, Value)> {
    let failing = match fault {
        Some(Fault::CompensationTransient { times }) => attempt <= times,
        Some(Fault::CompensationFail) => true,
        _ => false,
    };
    failing.then(|| {
        (
            503,
            json!({ "error": format!("the compensation failed (injected fault, attempt {attempt})"), "field": null }),
        )
    })
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A new row id. Time-ordered (UUID v7), so that a batch's new rows land together at the end of
/// the table's primary-key index instead of in a page each (see `SagaId::new`).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}
