//! Types that cross the wire between the backend and the browser: request and response bodies
//! of the HTTP API and the events of the SSE streams. Defined once here, used by both sides.

pub mod api;
pub mod event;
pub mod rules;
pub mod story;
pub mod timeline;

pub use api::*;
pub use event::*;
pub use timeline::*;

use serde::{Deserialize, Serialize};

/// Every 4xx/5xx body: a sentence for a person, and the input at fault if there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiErrorBody {
    pub error: String,
    /// The input at fault (`items[0].qty`, `Idempotency-Key`), or `null`.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub field: Option<String>,
}

/// A row of `GET /api/sagas`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SagaListItem {
    #[cfg_attr(feature = "openapi", schema(format = "uuid"))]
    pub saga_id: String,
    /// `null` for a saga that is not a purchase.
    #[cfg_attr(
        feature = "openapi",
        schema(required = true, pattern = "^ord_[0-9a-f]{32}$")
    )]
    pub order_id: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub status: SagaState,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub started_at: String,
    #[cfg_attr(feature = "openapi", schema(required = true, format = DateTime))]
    pub finished_at: Option<String>,
    /// Who is buying, as a list shows them: the first name and the initial of the last
    /// ("Ada L.", [`Customer::short_name`]); never the email or the address. `null` for a
    /// saga that is not a purchase.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub customer: Option<String>,
    /// What the order costs, items and delivery, in cents of `currency`, as the orders service
    /// priced it when it placed the order. `null` until it has, and for good if it never did
    /// (the stock ran out, or the saga is not a purchase).
    #[cfg_attr(feature = "openapi", schema(required = true, minimum = 0))]
    pub total_cents: Option<i64>,
    /// The ISO 4217 code of `total_cents` ([`CURRENCY`]); `null` exactly when it is.
    #[cfg_attr(feature = "openapi", schema(required = true, pattern = "^[A-Z]{3}$"))]
    pub currency: Option<String>,
    /// Why the saga turned back, once it has: the step whose action failed for good and its
    /// error. `null` while every action went through (and for a saga that is not a purchase).
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub failure: Option<SagaFailure>,
    /// The nodes (their `--node-id`) that wrote the saga's records, each once, in the order
    /// they first wrote one: one node for a saga driven from start to end by the node that
    /// started it, more once another node took it over (its node stopped answering or shut
    /// down) or a person's retry ran on another node. Empty for a log from before records
    /// named their node.
    pub nodes: Vec<String>,
}

/// The currency of every amount of the API: the catalog's prices are in euro cents.
pub const CURRENCY: &str = "EUR";

/// The action that failed for good and turned a saga back: what its `step_failed` event says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SagaFailure {
    /// The step (`process_payment`).
    pub step: String,
    /// What went wrong, for a person ("the card was declined").
    pub error: String,
    /// `unknown` if the action may have been applied (it timed out).
    pub outcome: StepOutcome,
}

/// `202 Accepted` to `POST /api/sagas/{id}/retry`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SagaRetried {
    #[cfg_attr(feature = "openapi", schema(format = "uuid"))]
    pub saga_id: String,
    /// `compensating`: the saga unwinds on from where it stopped.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub status: SagaState,
    /// `false` when it had been resumed already: nothing more was done.
    pub resumed: bool,
    /// `/api/sagas/{saga_id}/events`, to follow it unwind.
    pub events_url: String,
}

/// Milliseconds since the Unix epoch as RFC 3339 UTC with milliseconds
/// (`2026-11-24T12:00:00.123Z`), the timestamp format of the whole API.
pub fn rfc3339_millis(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// `YYYY-MM-DD` of a day count since 1970-01-01.
pub fn iso_date(days_since_epoch: i64) -> String {
    let (y, m, d) = civil_from_days(days_since_epoch);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Howard Hinnant's `civil_from_days`: proleptic Gregorian calendar, exact for any day.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_timestamps_and_dates() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_millis(1_795_953_600_123),
            "2026-11-29T12:00:00.123Z"
        );
        assert_eq!(iso_date(20_454), "2026-01-01");
        assert_eq!(iso_date(11_016), "2000-02-29");
    }
}
