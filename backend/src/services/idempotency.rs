//! The idempotency every action and compensation relies on: the answer a write gave under
//! its `Idempotency-Key`, kept in the service's `idempotency` table in the transaction of the
//! write itself, and given again to every repeat of the key.
//!
//! An answer is a result or a refusal (a 4xx), kept as its HTTP status and body: a repeat gets
//! exactly what the first request got, whatever kind of refusal it was and whichever version
//! of the service wrote it. A failure is no answer and is never kept, so the next attempt runs
//! the write afresh.

use std::collections::HashMap;

use axum::http::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;
use shared::ApiErrorBody;
use sqlx::{AnyConnection, Row};

use super::ServiceError;

/// What running a write came to: an answer, or a failure that fails its batch.
pub(super) type Written = Result<Answer, ServiceError>;

/// A write's answer, given once its batch committed.
#[derive(Debug)]
pub(super) enum Answer {
    /// The effect's result, as JSON.
    Done(String),
    /// The effect's refusal (a 4xx), which applied nothing.
    Refused(ServiceError),
}

/// An answer as the idempotency table keeps it: the HTTP status and body a repeat gets.
#[derive(Debug, Clone)]
pub(super) struct Stored {
    status: i64,
    body: String,
}

impl Answer {
    pub(super) fn of<T: Serialize>(outcome: Result<T, ServiceError>) -> Written {
        match outcome {
            Ok(value) => serde_json::to_string(&value)
                .map(Answer::Done)
                .map_err(|e| ServiceError::encode("its answer", e)),
            Err(refusal) if refusal.is_answer() => Ok(Answer::Refused(refusal)),
            Err(failure) => Err(failure),
        }
    }

    pub(super) fn stored(&self) -> Result<Stored, ServiceError> {
        match self {
            Answer::Done(body) => Ok(Stored {
                status: 200,
                body: body.clone(),
            }),
            Answer::Refused(refusal) => Ok(Stored {
                status: i64::from(refusal.status().as_u16()),
                body: serde_json::to_string(&refusal.body())
                    .map_err(|e| ServiceError::encode("its refusal", e))?,
            }),
        }
    }

    /// The answer stored for a key used before. A row that is not an answer a write could have
    /// given is an error, never taken for a default: the request would otherwise be answered
    /// with something it was never given.
    pub(super) fn from_stored(stored: &Stored) -> Written {
        let corrupt = |reason: &dyn std::fmt::Display| {
            ServiceError::corrupt("the stored answer to this request", reason)
        };
        let status = u16::try_from(stored.status)
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .ok_or_else(|| corrupt(&format_args!("status {}", stored.status)))?;
        if status.is_success() {
            Ok(Answer::Done(stored.body.clone()))
        } else if status.is_client_error() {
            let body: ApiErrorBody = serde_json::from_str(&stored.body).map_err(|e| corrupt(&e))?;
            Ok(Answer::Refused(ServiceError::Repeated {
                status,
                message: body.error,
                field: body.field,
            }))
        } else {
            Err(corrupt(&format_args!("status {status}")))
        }
    }

    pub(super) fn into_result<T: DeserializeOwned>(self) -> Result<T, ServiceError> {
        match self {
            Answer::Done(body) => serde_json::from_str(&body)
                .map_err(|e| ServiceError::corrupt("the stored answer to this request", e)),
            Answer::Refused(refusal) => Err(refusal),
        }
    }
}

/// The stored answers of whichever of `keys` were already used, in one query.
pub(super) async fn answered(
    conn: &mut AnyConnection,
    keys: &[&str],
) -> sqlx::Result<HashMap<String, Stored>> {
    let mut known = HashMap::new();
    if keys.is_empty() {
        return Ok(known);
    }
    let marks: Vec<String> = (1..=keys.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT key, status, body FROM idempotency WHERE key IN ({})",
        marks.join(", ")
    );
    // One statement per batch size: not worth a place in the prepared-statement cache.
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
    for key in keys {
        query = query.bind(*key);
    }
    for row in query.fetch_all(&mut *conn).await? {
        let stored = Stored {
            status: row.try_get("status")?,
            body: row.try_get("body")?,
        };
        known.insert(row.try_get("key")?, stored);
    }
    Ok(known)
}

/// Store the answers of keys used for the first time in this batch, in one statement.
pub(super) async fn record(
    conn: &mut AnyConnection,
    fresh: &[(String, Stored)],
) -> sqlx::Result<()> {
    if fresh.is_empty() {
        return Ok(());
    }
    let rows: Vec<String> = (0..fresh.len())
        .map(|i| format!("(${}, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3))
        .collect();
    let sql = format!(
        "INSERT INTO idempotency (key, status, body) VALUES {}",
        rows.join(", ")
    );
    // One statement per batch size: not worth a place in the prepared-statement cache.
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
    for (key, stored) in fresh {
        query = query
            .bind(key.as_str())
            .bind(stored.status)
            .bind(stored.body.as_str());
    }
    query.execute(&mut *conn).await?;
    Ok(())
}
