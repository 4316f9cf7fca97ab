//! What the saga and the services say to each other: every action's and compensation's path,
//! request body and answer, defined once for both sides (`purchase::ServiceClient` and the
//! handlers). A field renamed on one side is then a compile error on the other, not a saga that
//! unwinds on a 422.
//!
//! The JSON on the wire is serde's of these types; a refusal's is [`shared::ApiErrorBody`]
//! (see [`super::ServiceError`]). What the services answer about an order (`InvoiceView`, …)
//! is the API's own type, in `shared`, since `GET /api/orders/{id}` passes it on as it is.

use std::marker::PhantomData;

use serde::{Deserialize, Serialize};
use shared::{
    Address, Customer, Delivery, Fault, InvoiceView, OrderItem, PaymentView, ShipmentView,
};

use super::ServiceName;

/// A `POST` of one service: where, what it takes (`Req`) and what it answers (`Resp`).
pub struct Endpoint<Req, Resp> {
    pub service: ServiceName,
    /// The route under the service's base (`/place_order`).
    pub path: &'static str,
    types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp> Endpoint<Req, Resp> {
    const fn new(service: ServiceName, path: &'static str) -> Self {
        Endpoint {
            service,
            path,
            types: PhantomData,
        }
    }
}

// Not derived: a derive would ask `Req` and `Resp` to be `Copy` too.
impl<Req, Resp> Clone for Endpoint<Req, Resp> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<Req, Resp> Copy for Endpoint<Req, Resp> {}

pub const PLACE_ORDER: Endpoint<PlaceOrder, PlacedOrder> =
    Endpoint::new(ServiceName::Orders, "/place_order");
/// Sent by the payment step once the payment is captured.
pub const CONFIRM_ORDER: Endpoint<OrderRef, Updated> =
    Endpoint::new(ServiceName::Orders, "/confirm_order");
pub const CANCEL_ORDER: Endpoint<Compensate, Updated> =
    Endpoint::new(ServiceName::Orders, "/cancel_order");
pub const CREATE_INVOICE: Endpoint<IssueInvoice, InvoiceView> =
    Endpoint::new(ServiceName::Billing, "/create_invoice");
pub const VOID_INVOICE: Endpoint<Compensate, Updated> =
    Endpoint::new(ServiceName::Billing, "/void_invoice");
/// Outside the saga: `POST /api/orders` turns a card into a token before the saga starts.
pub const TOKENISE_CARD: Endpoint<TokeniseCard, CardToken> =
    Endpoint::new(ServiceName::Payments, "/tokens");
pub const PROCESS_PAYMENT: Endpoint<Charge, PaymentView> =
    Endpoint::new(ServiceName::Payments, "/process_payment");
pub const REFUND_PAYMENT: Endpoint<Compensate, Updated> =
    Endpoint::new(ServiceName::Payments, "/refund_payment");
pub const SHIP_ORDER: Endpoint<Ship, ShipmentView> =
    Endpoint::new(ServiceName::Shipping, "/ship_order");
pub const CANCEL_SHIPMENT: Endpoint<Compensate, Updated> =
    Endpoint::new(ServiceName::Shipping, "/cancel_shipment");

/// Every compensation's request: which order to undo the step for, and the step's fault.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Compensate {
    pub order_id: String,
    pub fault: Option<Fault>,
}

/// What a confirmation or a compensation answers: the order's part in this service, as it is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Updated {
    pub order_id: String,
    pub status: UpdatedTo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdatedTo {
    /// The order, once paid.
    Confirmed,
    /// The order or the shipment.
    Cancelled,
    /// The invoice.
    Void,
    /// The payment.
    Refunded,
}

// --- orders

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlaceOrder {
    pub order_id: String,
    pub saga_id: String,
    pub customer: Customer,
    pub address: Address,
    pub delivery: Delivery,
    pub items: Vec<OrderItem>,
    pub fault: Option<Fault>,
}

/// A line of an order, priced from the catalog when the order was placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub sku: String,
    pub name: String,
    pub qty: i64,
    pub unit_price_cents: i64,
}

/// What `place_order` answers; the saga passes it on to billing and payments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedOrder {
    pub order_id: String,
    pub lines: Vec<OrderLine>,
    pub delivery_fee_cents: i64,
    pub total_cents: i64,
}

/// `confirm_order`'s request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderRef {
    pub order_id: String,
}

/// An order as the orders service holds it (`GET /orders/{order_id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredOrder {
    pub order_id: String,
    pub saga_id: String,
    /// `pending`, `confirmed` or `cancelled`.
    pub status: String,
    pub total_cents: i64,
    pub lines: Vec<OrderLine>,
}

// --- billing

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssueInvoice {
    pub order_id: String,
    pub lines: Vec<OrderLine>,
    pub delivery_fee_cents: i64,
    pub fault: Option<Fault>,
}

// --- payments

/// A card as `POST /api/orders` received it, already validated. Goes to the payments service
/// only, which keeps its last four digits.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokeniseCard {
    pub card_number: String,
    pub expiry: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Charge {
    pub order_id: String,
    pub amount_cents: i64,
    pub payment: PaymentRef,
    pub fault: Option<Fault>,
}

// --- shipping

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ship {
    pub order_id: String,
    pub address: Address,
    pub delivery: Delivery,
    /// Where the delivery notification goes.
    pub email: String,
    pub fault: Option<Fault>,
}

/// How a delivery method is stored in a service's table: its name on the wire.
pub fn delivery_name(delivery: Delivery) -> &'static str {
    match delivery {
        Delivery::Standard => "standard",
        Delivery::Express => "express",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The bodies on the wire are those the services have always read: a compensation names
    /// its fault (`null` for none), a confirmation does not.
    #[test]
    fn bodies_keep_their_wire_form() {
        let undo = Compensate {
            order_id: "ord_1".into(),
            fault: None,
        };
        assert_eq!(
            serde_json::to_value(&undo).unwrap(),
            json!({ "order_id": "ord_1", "fault": null })
        );
        assert_eq!(
            serde_json::to_value(OrderRef {
                order_id: "ord_1".into()
            })
            .unwrap(),
            json!({ "order_id": "ord_1" })
        );
        let updated = Updated {
            order_id: "ord_1".into(),
            status: UpdatedTo::Void,
        };
        assert_eq!(
            serde_json::to_value(&updated).unwrap(),
            json!({ "order_id": "ord_1", "status": "void" })
        );
        assert_eq!(
            serde_json::to_value(PaymentRef::Wallet {
                wallet_id: "w".into()
            })
            .unwrap(),
            json!({ "method": "wallet", "wallet_id": "w" })
        );
        // A compensation sent without a fault, as by hand, still reads.
        let undo: Compensate = serde_json::from_value(json!({ "order_id": "ord_1" })).unwrap();
        assert!(undo.fault.is_none());
        for d in [Delivery::Standard, Delivery::Express] {
            assert_eq!(json!(d), json!(delivery_name(d)));
        }
    }
}
