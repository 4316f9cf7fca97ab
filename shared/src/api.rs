//! Bodies of the shop API (DESIGN.md §3): what the browser sends and what it gets back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
pub struct CatalogItem {
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
    pub stock: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub name: String,
    pub email: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub line1: String,
    pub city: String,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, upper case.
    pub country: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
pub struct OrderItem {
    pub sku: String,
    pub qty: i64,
}

/// How the customer pays, as submitted. The card number never goes further than validation
/// and the payment service's tokenisation. Read through `api/tagged.rs`, so that an error in a
/// field is reported at its full path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "method",
    rename_all = "snake_case",
    try_from = "tagged::PaymentFields"
)]
pub enum PaymentInput {
    Card {
        card_number: String,
        expiry: String,
        cvc: String,
    },
    Wallet {
        wallet_id: String,
    },
}

/// One injected fault (DESIGN.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "snake_case",
    try_from = "tagged::FaultFields"
)]
pub enum Fault {
    Fail,
    Transient { times: u32 },
    Delay { ms: u64 },
    Timeout,
    CompensationTransient { times: u32 },
    CompensationFail,
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
pub struct OrderRequest {
    pub customer: Customer,
    pub address: Address,
    pub delivery: Delivery,
    pub items: Vec<OrderItem>,
    pub payment: PaymentInput,
    #[serde(default)]
    pub faults: BTreeMap<String, Fault>,
}

/// `202 Accepted` to `POST /api/orders`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderAccepted {
    pub saga_id: String,
    pub order_id: String,
    pub events_url: String,
}

/// `GET /api/orders/{order_id}`: what each service holds for the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderView {
    pub order_id: String,
    pub saga_id: String,
    /// `pending`, `confirmed` or `cancelled`.
    pub status: String,
    pub total_cents: i64,
    pub invoice: Option<InvoiceView>,
    pub payment: Option<PaymentView>,
    pub shipment: Option<ShipmentView>,
    pub notification: Option<NotificationView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceView {
    pub invoice_id: String,
    /// `issued` or `void`.
    pub status: String,
    pub total_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentView {
    pub payment_id: String,
    /// `captured` or `refunded`.
    pub status: String,
    pub amount_cents: i64,
    pub refunded_cents: i64,
    pub card_last4: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentView {
    pub shipment_id: String,
    /// `scheduled` or `cancelled`.
    pub status: String,
    pub tracking_number: String,
    pub estimated_delivery: String,
}

/// The message telling the customer when the parcel arrives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationView {
    pub email: String,
    pub message: String,
    pub sent_at: String,
}

/// One event of a saga, as the SSE streams and `GET /api/sagas/{id}` carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaEvent {
    pub saga_id: String,
    pub seq: u64,
    #[serde(rename = "type")]
    pub kind: String,
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(default)]
    pub detail: serde_json::Value,
}

/// `GET /api/sagas/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaDetail {
    pub saga_id: String,
    pub order_id: Option<String>,
    pub status: String,
    pub steps: Vec<StepView>,
    pub events: Vec<SagaEvent>,
}

/// A step of a saga as seen from its events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepView {
    pub step: String,
    /// `pending`, `running`, `retrying`, `succeeded`, `failed`, `compensating`, `compensated`, `skipped`.
    pub status: String,
    pub attempts: u32,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub error: Option<String>,
}
