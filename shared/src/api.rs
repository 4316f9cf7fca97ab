//! Bodies of the shop API (DESIGN.md §3): what the browser sends and what it gets back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::{Event, SagaState, StepState};

mod tagged;

/// The four steps of a purchase, in order; also the keys of [`OrderRequest::faults`].
pub const STEPS: [&str; 4] = [
    "place_order",
    "create_invoice",
    "process_payment",
    "ship_order",
];

/// A row of `GET /api/catalog`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CatalogItem {
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
    pub stock: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Customer {
    /// 1 to 100 characters, not counting surrounding whitespace; no control characters.
    pub name: String,
    /// `local@domain.tld`: no whitespace, a dotted domain of letters, digits and hyphens.
    #[cfg_attr(feature = "openapi", schema(format = Email))]
    pub email: String,
}

impl Customer {
    /// The name as a list of orders shows it: the first name and the initial of the last
    /// ("Ada Lovelace" → "Ada L."), or the one name there is ("Plato"). Enough to tell
    /// orders apart at a glance, little enough to show anyone who can see the list.
    pub fn short_name(&self) -> String {
        let mut words = self.name.split_whitespace();
        let first = words.next().unwrap_or_default();
        match words.last().and_then(|last| last.chars().next()) {
            Some(initial) => format!("{first} {initial}."),
            None => first.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Address {
    /// 1 to 200 characters, not counting surrounding whitespace; no control characters.
    pub line1: String,
    /// 1 to 100 characters, not counting surrounding whitespace; no control characters.
    pub city: String,
    /// 1 to 20 characters, not counting surrounding whitespace; no control characters.
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, upper case.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Z]{2}$", example = "GB"))]
    pub country: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    Standard,
    Express,
}

impl Delivery {
    /// The delivery fee billed on top of the items.
    pub fn fee_cents(self) -> i64 {
        match self {
            Delivery::Standard => 499,
            Delivery::Express => 1499,
        }
    }

    /// Days from shipping to the estimated delivery.
    pub fn days(self) -> i64 {
        match self {
            Delivery::Standard => 5,
            Delivery::Express => 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrderItem {
    /// A `sku` of `GET /api/catalog`, at most once per order.
    #[cfg_attr(feature = "openapi", schema(example = "KB-01"))]
    pub sku: String,
    /// 1 to 99 (`rules::MAX_QTY`).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 99))]
    pub qty: i64,
}

/// How the customer pays, as submitted. The card number never goes further than validation
/// and the payment service's tokenisation. Read through `api/tagged.rs`, so that an error in a
/// field is reported at its full path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(
    tag = "method",
    rename_all = "snake_case",
    try_from = "tagged::PaymentFields"
)]
pub enum PaymentInput {
    Card {
        /// 12 to 19 digits passing the Luhn check; spaces and dashes between them are allowed.
        #[cfg_attr(
            feature = "openapi",
            schema(
                pattern = "^[ -]*([0-9][ -]*){12,19}$",
                example = "4242 4242 4242 4242"
            )
        )]
        card_number: String,
        /// `MM/YY`, not before the current month.
        #[cfg_attr(
            feature = "openapi",
            schema(
                pattern = "^\\s*(0[1-9]|1[0-2]|\\+[1-9])/[0-9]{2}\\s*$",
                example = "12/30"
            )
        )]
        expiry: String,
        #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9]{3,4}$", example = "123"))]
        cvc: String,
    },
    Wallet {
        /// 1 to 64 characters, not counting surrounding whitespace; no control characters.
        wallet_id: String,
    },
}

/// One injected fault (DESIGN.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(
    tag = "kind",
    rename_all = "snake_case",
    try_from = "tagged::FaultFields"
)]
pub enum Fault {
    Fail,
    Transient {
        #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10))]
        times: u32,
    },
    Delay {
        #[cfg_attr(feature = "openapi", schema(maximum = 60000))]
        ms: u64,
    },
    Timeout,
    CompensationTransient {
        #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10))]
        times: u32,
    },
    CompensationFail,
    /// Refused with 422 unless the server runs with `--allow-crash-faults`.
    Crash,
}

impl Fault {
    /// The kinds, as the fault picker offers them (after `none`).
    pub const KINDS: [&'static str; 7] = [
        "fail",
        "transient",
        "delay",
        "timeout",
        "compensation_transient",
        "compensation_fail",
        "crash",
    ];
}

/// `POST /api/orders`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({
    "customer": {"name": "Ada Lovelace", "email": "ada@example.com"},
    "address": {"line1": "12 Analytical Row", "city": "London", "postal_code": "N1 9GU", "country": "GB"},
    "delivery": "standard",
    "items": [{"sku": "KB-01", "qty": 1}],
    "payment": {"method": "card", "card_number": "4242424242424242", "expiry": "12/30", "cvc": "123"}
})))]
pub struct OrderRequest {
    pub customer: Customer,
    pub address: Address,
    pub delivery: Delivery,
    /// 1 to 20 lines (`rules::MAX_LINES`).
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 20))]
    pub items: Vec<OrderItem>,
    pub payment: PaymentInput,
    /// Faults to inject, by step name (DESIGN.md §4).
    #[serde(default)]
    pub faults: BTreeMap<String, Fault>,
}

/// `202 Accepted` to `POST /api/orders`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrderAccepted {
    #[cfg_attr(feature = "openapi", schema(format = "uuid"))]
    pub saga_id: String,
    #[cfg_attr(feature = "openapi", schema(pattern = "^ord_[0-9a-f]{32}$"))]
    pub order_id: String,
    /// `/api/sagas/{saga_id}/events`.
    pub events_url: String,
}

/// `GET /api/orders/{order_id}`: what each service holds for the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrderView {
    #[cfg_attr(feature = "openapi", schema(pattern = "^ord_[0-9a-f]{32}$"))]
    pub order_id: String,
    #[cfg_attr(feature = "openapi", schema(format = "uuid"))]
    pub saga_id: String,
    /// `pending`, `confirmed` or `cancelled`.
    pub status: String,
    pub total_cents: i64,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub invoice: Option<InvoiceView>,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub payment: Option<PaymentView>,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub shipment: Option<ShipmentView>,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub notification: Option<NotificationView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InvoiceView {
    pub invoice_id: String,
    /// `issued` or `void`.
    pub status: String,
    pub total_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PaymentView {
    pub payment_id: String,
    /// `captured` or `refunded`.
    pub status: String,
    pub amount_cents: i64,
    pub refunded_cents: i64,
    /// `null` for a wallet payment.
    #[cfg_attr(feature = "openapi", schema(required = true, pattern = "^[0-9]{4}$"))]
    pub card_last4: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ShipmentView {
    pub shipment_id: String,
    /// `scheduled` or `cancelled`.
    pub status: String,
    pub tracking_number: String,
    #[cfg_attr(feature = "openapi", schema(format = Date))]
    pub estimated_delivery: String,
}

/// The message telling the customer when the parcel arrives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NotificationView {
    pub email: String,
    pub message: String,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub sent_at: String,
}

/// One event of a saga, as the SSE streams and `GET /api/sagas/{id}` carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SagaEvent {
    #[cfg_attr(feature = "openapi", schema(format = "uuid"))]
    pub saga_id: String,
    /// Per saga, from 1, without gaps.
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub seq: u64,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// The node that wrote it (its `--node-id`); absent in records from before records named
    /// their node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Its `type` and `detail`: what happened, with that kind's fields (its output, its
    /// error, the order it started).
    #[serde(flatten)]
    pub event: Event,
}

/// `GET /api/sagas/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SagaDetail {
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
    pub steps: Vec<StepView>,
    pub events: Vec<SagaEvent>,
}

/// A step of a saga as seen from its events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StepView {
    pub step: String,
    /// `pending`, `running`, `retrying`, `succeeded`, `failed`, `compensating`, `compensated`, `skipped`.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub status: StepState,
    pub attempts: u32,
    #[cfg_attr(feature = "openapi", schema(required = true, format = DateTime))]
    pub started_at: Option<String>,
    #[cfg_attr(feature = "openapi", schema(required = true, format = DateTime))]
    pub finished_at: Option<String>,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub error: Option<String>,
    /// The node that wrote the step's latest record: which node drove it last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short(name: &str) -> String {
        Customer {
            name: name.into(),
            email: "a@example.com".into(),
        }
        .short_name()
    }

    #[test]
    fn a_customer_is_listed_by_first_name_and_last_initial() {
        assert_eq!(short("Ada Lovelace"), "Ada L.");
        assert_eq!(short("  Ada   King  Lovelace "), "Ada L.");
        assert_eq!(short("Jean-Luc Picard"), "Jean-Luc P.");
        assert_eq!(short("Plato"), "Plato");
        assert_eq!(short("Émile Zola"), "Émile Z.");
        assert_eq!(short("Zoë Ørsted"), "Zoë Ø.");
    }
}
