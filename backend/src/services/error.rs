//! Every answer of a service other than its result, and the one place where each becomes an
//! HTTP status and a `{"error", "field"}` body.
//!
//! The status is what the saga reads (`purchase::steps`): a 4xx is the service saying no, so
//! the step fails for good and the saga unwinds; a 5xx is a failure worth trying again. So a
//! refusal must never be a 5xx, and a fault on our side (an unreadable row, a database that
//! does not answer) must never be a 4xx: that would unwind a purchase, or let a compensation
//! pass, on a bug.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use shared::ApiErrorBody;

use super::db::DbError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    // Refusals (4xx): the service said no and applied nothing. An action's or compensation's
    // refusal is stored under its `Idempotency-Key`, so a repeat gets it again.
    #[error("order {order_id} was cancelled before it was placed")]
    OrderCancelledFirst { order_id: String },
    #[error("there is no product {sku}")]
    UnknownProduct { sku: String },
    #[error("not enough stock for {sku} (ordered {qty})")]
    OutOfStock { sku: String, qty: i64 },
    #[error("order {order_id} is not pending")]
    NotPending { order_id: String },
    #[error("the invoice for order {order_id} was voided before it was issued")]
    InvoiceVoidedFirst { order_id: String },
    #[error("the card number is too short")]
    CardTooShort,
    #[error("the payment for order {order_id} was refunded before it was taken")]
    PaymentRefundedFirst { order_id: String },
    #[error("unknown card token")]
    UnknownCardToken,
    #[error("the card was declined")]
    CardDeclined,
    #[error("the card has insufficient funds")]
    CardInsufficientFunds,
    #[error("the wallet has insufficient funds")]
    WalletInsufficientFunds,
    #[error("we do not ship to {country}")]
    CountryNotServed { country: String },
    #[error("the shipment of order {order_id} was cancelled before it was scheduled")]
    ShipmentCancelledFirst { order_id: String },
    /// The `fail` fault (DESIGN.md §4).
    #[error("the service refused the request (injected fault: fail)")]
    InjectedRefusal,
    /// A refusal given earlier under the same `Idempotency-Key`, as it was stored: the same
    /// status and body again, whatever kind of refusal it was.
    #[error("{message}")]
    Repeated {
        status: StatusCode,
        message: String,
        field: Option<String>,
    },

    // Requests that cannot be served as sent.
    #[error("the Idempotency-Key header is required")]
    MissingKey,
    #[error("no order {order_id}")]
    NoOrder { order_id: String },
    /// No invoice, payment, shipment or notification (`what`) for an order.
    #[error("no {what} for order {order_id}")]
    NothingFor {
        what: &'static str,
        order_id: String,
    },

    // Failures (5xx): never stored, so the saga's next attempt runs the effect afresh.
    /// The `transient` fault.
    #[error(
        "the service is temporarily unavailable (injected fault: transient, attempt {attempt} of {times})"
    )]
    InjectedTransient { attempt: u32, times: u32 },
    /// The `compensation_transient` and `compensation_fail` faults.
    #[error("the compensation failed (injected fault, attempt {attempt})")]
    InjectedCompensationFailure { attempt: u32 },
    #[error("the service's database is unavailable")]
    Unavailable(#[from] DbError),
    /// A stored row that does not hold what it must: nothing is done with it (a default in its
    /// place would, say, cancel an order and release no stock), and the request fails until
    /// someone repairs the row. `reason` goes to the log, not to the caller.
    #[error("the service cannot read {what}")]
    Corrupt { what: String, reason: String },
    /// A value of ours that would not serialise: a bug, not the caller's fault.
    #[error("the service could not write {what}")]
    Encode { what: &'static str, reason: String },
}

impl ServiceError {
    /// `what` (say "the lines of order ord_…") cannot be read, for `reason`.
    pub fn corrupt(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        ServiceError::Corrupt {
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    /// `what` could not be serialised, for `reason`.
    pub fn encode(what: &'static str, reason: impl std::fmt::Display) -> Self {
        ServiceError::Encode {
            what,
            reason: reason.to_string(),
        }
    }

    pub fn status(&self) -> StatusCode {
        use ServiceError::*;
        match self {
            OrderCancelledFirst { .. }
            | UnknownProduct { .. }
            | OutOfStock { .. }
            | NotPending { .. }
            | InvoiceVoidedFirst { .. }
            | PaymentRefundedFirst { .. }
            | UnknownCardToken
            | ShipmentCancelledFirst { .. } => StatusCode::CONFLICT,
            CardDeclined | CardInsufficientFunds | WalletInsufficientFunds => {
                StatusCode::PAYMENT_REQUIRED
            }
            CardTooShort | CountryNotServed { .. } | InjectedRefusal => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Repeated { status, .. } => *status,
            MissingKey => StatusCode::BAD_REQUEST,
            NoOrder { .. } | NothingFor { .. } => StatusCode::NOT_FOUND,
            InjectedTransient { .. } | InjectedCompensationFailure { .. } | Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Corrupt { .. } | Encode { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The input at fault, when the refusal is about one.
    pub fn field(&self) -> Option<String> {
        match self {
            ServiceError::CardTooShort => Some("payment.card_number".into()),
            ServiceError::CountryNotServed { .. } => Some("address.country".into()),
            ServiceError::Repeated { field, .. } => field.clone(),
            _ => None,
        }
    }

    /// The body on the wire (and in the idempotency table).
    pub fn body(&self) -> ApiErrorBody {
        ApiErrorBody {
            error: self.to_string(),
            field: self.field(),
        }
    }

    /// Whether this is an answer to keep under the request's key (a 4xx: the same request
    /// would be refused again) rather than a failure, which fails the write's batch.
    pub fn is_answer(&self) -> bool {
        self.status().is_client_error()
    }

    /// What the log needs beyond the public sentence.
    fn detail(&self) -> Option<String> {
        match self {
            ServiceError::Unavailable(e) => Some(e.to_string()),
            ServiceError::Corrupt { reason, .. } | ServiceError::Encode { reason, .. } => {
                Some(reason.clone())
            }
            _ => None,
        }
    }
}

/// A statement that failed. A value that would not decode is a row that does not hold what it
/// must; anything else is the database not doing its job.
impl From<sqlx::Error> for ServiceError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::ColumnIndexOutOfBounds { .. }
            | sqlx::Error::TypeNotFound { .. } => ServiceError::corrupt("a stored row", e),
            e => ServiceError::Unavailable(DbError::Sql(e)),
        }
    }
}

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        let status = self.status();
        match self.detail() {
            Some(detail) => tracing::error!(error = %self, %detail, "service failure"),
            None if status.is_server_error() => tracing::debug!(error = %self, "service failure"),
            None => {}
        }
        (status, Json(self.body())).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The saga's retry classification reads these statuses: refusals are 4xx, our own
    /// failures 5xx.
    #[test]
    fn refusals_are_client_errors_and_failures_server_errors() {
        let refusals = [
            ServiceError::OutOfStock {
                sku: "KB-01".into(),
                qty: 3,
            },
            ServiceError::CardDeclined,
            ServiceError::CountryNotServed {
                country: "AQ".into(),
            },
            ServiceError::InjectedRefusal,
        ];
        assert!(refusals.iter().all(ServiceError::is_answer));
        let failures = [
            ServiceError::corrupt("the lines of order o", "expected value"),
            ServiceError::Unavailable(DbError::WriterGone),
            ServiceError::InjectedTransient {
                attempt: 1,
                times: 2,
            },
            ServiceError::InjectedCompensationFailure { attempt: 1 },
        ];
        assert!(failures.iter().all(|e| e.status().is_server_error()));
        assert_eq!(
            serde_json::to_value(ServiceError::CardDeclined.body()).unwrap(),
            serde_json::json!({ "error": "the card was declined", "field": null })
        );
    }

    /// The log gets why a row is unreadable; the caller only which row.
    #[test]
    fn a_corrupt_row_names_the_record_but_not_its_content() {
        let e = ServiceError::corrupt("the lines of order o1", "invalid type: string \"x\"");
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            e.body().error,
            "the service cannot read the lines of order o1"
        );
    }
}
