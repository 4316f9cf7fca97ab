//! The four shop services. Each is a module with its routes, its storage and its migrations,
//! owns its own database, and is reached only over HTTP: the saga's participants call it with
//! an `Idempotency-Key`, and no service reads another's tables.
//!
//! By default `saga-shop` hosts all four under `/svc/{name}`; `saga-shop --service NAME` hosts
//! one alone, so they can be spread over processes or machines.
//!
//! What goes over the wire is in [`protocol`], shared with the saga's client; every answer
//! other than a result is a [`ServiceError`], whose status tells the saga whether to unwind (a
//! 4xx refusal) or to try again (a 5xx). A handler is a few lines: its faults, then its effect,
//! a named `async fn` on the writer's connection, run once per `Idempotency-Key` by [`db`].

pub mod billing;
pub mod db;
mod error;
mod idempotency;
pub mod orders;
pub mod payments;
pub mod protocol;
pub mod shipping;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use axum::Json;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::Serialize;
use serde::de::DeserializeOwned;
use shared::Fault;

pub use db::{DbError, Effect, ServiceDb};
pub use error::ServiceError;

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
    type Rejection = ServiceError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let key = header("idempotency-key")
            .filter(|k| !k.is_empty() && k.len() <= 200)
            .map(str::to_string)
            .ok_or(ServiceError::MissingKey)?;
        // Only the transient faults read it: a missing or garbled one counts as a first try.
        let attempt = header("x-saga-attempt")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        Ok(StepRequest { key, attempt })
    }
}

impl StepRequest {
    /// An action, as every service runs one: the faults that act before it, the effect once
    /// per key, then the `timeout` fault's silence after a success.
    pub async fn run_action<T, F>(
        &self,
        db: &ServiceDb,
        fault: Option<Fault>,
        effect: F,
    ) -> Result<Json<T>, ServiceError>
    where
        T: Serialize + DeserializeOwned + 'static,
        F: Effect<T>,
    {
        before_action(fault, self.attempt).await?;
        let result = db.idempotent(&self.key, effect).await?;
        after_action(fault).await;
        Ok(Json(result))
    }

    /// A compensation: its faults, then the effect once per key.
    pub async fn run_compensation<T, F>(
        &self,
        db: &ServiceDb,
        fault: Option<Fault>,
        effect: F,
    ) -> Result<Json<T>, ServiceError>
    where
        T: Serialize + DeserializeOwned + 'static,
        F: Effect<T>,
    {
        before_compensation(fault, self.attempt)?;
        self.run(db, effect).await
    }

    /// The effect once per key, no faults.
    pub async fn run<T, F>(&self, db: &ServiceDb, effect: F) -> Result<Json<T>, ServiceError>
    where
        T: Serialize + DeserializeOwned + 'static,
        F: Effect<T>,
    {
        db.idempotent(&self.key, effect).await.map(Json)
    }
}

/// Faults that act before an action (DESIGN.md §4): `fail` refuses, `transient` fails the
/// first N attempts, `delay` makes the service slow.
async fn before_action(fault: Option<Fault>, attempt: u32) -> Result<(), ServiceError> {
    match fault {
        Some(Fault::Fail) => Err(ServiceError::InjectedRefusal),
        Some(Fault::Transient { times }) if attempt <= times => {
            Err(ServiceError::InjectedTransient { attempt, times })
        }
        Some(Fault::Delay { ms }) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(())
        }
        _ => Ok(()),
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
fn before_compensation(fault: Option<Fault>, attempt: u32) -> Result<(), ServiceError> {
    let failing = match fault {
        Some(Fault::CompensationTransient { times }) => attempt <= times,
        Some(Fault::CompensationFail) => true,
        _ => false,
    };
    if failing {
        return Err(ServiceError::InjectedCompensationFailure { attempt });
    }
    Ok(())
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
