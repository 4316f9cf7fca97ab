//! The purchase saga: four steps, each calling one shop service over HTTP.
//!
//! | step              | action (service)                 | compensation      |
//! |-------------------|----------------------------------|-------------------|
//! | `place_order`     | orders: store, reserve stock      | `cancel_order`    |
//! | `create_invoice`  | billing: issue the invoice        | `void_invoice`    |
//! | `process_payment` | payments: charge; orders: confirm | `refund_payment`  |
//! | `ship_order`      | shipping: schedule, notify        | `cancel_shipment` |

mod client;
mod input;
mod steps;

pub use client::{ClientError, ServiceClient, ServiceUrls};
pub use input::{PurchaseInput, order_id_for, saga_id_for_order};
pub use steps::{SAGA_NAME, purchase_saga};
