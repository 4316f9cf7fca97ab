//! The purchase saga's input: everything its steps need, durable in the saga log. It holds no
//! card number (the card was tokenised before the saga started), so the log never does.

use std::collections::BTreeMap;

use saga_engine::SagaId;
use serde::{Deserialize, Serialize};
use shared::{Address, Customer, Delivery, Fault, OrderItem};

use crate::services::protocol::PaymentRef;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseInput {
    pub order_id: String,
    pub customer: Customer,
    pub address: Address,
    pub delivery: Delivery,
    pub items: Vec<OrderItem>,
    pub payment: PaymentRef,
    /// Injected faults by step name; part of the input so they survive a restart.
    #[serde(default)]
    pub faults: BTreeMap<String, Fault>,
    /// A digest of the submitted order, to tell a retried submission from a different order
    /// under the same `Idempotency-Key`.
    pub request_digest: String,
}

/// Orders are numbered after their saga: one purchase, one saga, one order.
pub fn order_id_for(saga: SagaId) -> String {
    format!("ord_{}", saga.0.simple())
}

pub fn saga_id_for_order(order_id: &str) -> Option<SagaId> {
    let hex = order_id.strip_prefix("ord_")?;
    uuid::Uuid::try_parse(hex).ok().map(SagaId)
}
