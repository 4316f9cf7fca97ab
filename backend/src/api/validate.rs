//! Checking an order before any saga starts. Every rule names the field it is about and says
//! what is wrong in a sentence a shopper understands. The browser runs the same checks
//! (`shared::rules`) so it can say so before sending. A value from the input is repeated only
//! if it cannot be card data ([`repeatable`]): anything else could be a card number typed into
//! the wrong field.

use shared::{Fault, OrderRequest, PaymentInput, STEPS, rules};

use crate::body::repeatable;
use crate::error::ApiError;

fn unprocessable(field: impl Into<String>, message: impl Into<String>) -> ApiError {
    ApiError::Invalid {
        status: axum::http::StatusCode::UNPROCESSABLE_ENTITY,
        message: message.into(),
        field: Some(field.into()),
    }
}

/// Everything that can be judged without asking a service. `today` is (year, month) for the
/// card expiry check.
pub fn check_order(
    order: &OrderRequest,
    today: (i64, u32),
    allow_crash_faults: bool,
) -> Result<(), ApiError> {
    let field = |name: &str, value: &str, check: fn(&str) -> Result<(), String>| {
        check(value).map_err(|m| unprocessable(name, m))
    };
    field("customer.name", &order.customer.name, rules::name)?;
    field("customer.email", &order.customer.email, rules::email)?;
    field("address.line1", &order.address.line1, rules::line1)?;
    field("address.city", &order.address.city, rules::city)?;
    field(
        "address.postal_code",
        &order.address.postal_code,
        rules::postal_code,
    )?;
    field("address.country", &order.address.country, rules::country)?;
    if order.items.is_empty() {
        return Err(unprocessable(
            "items",
            "the cart is empty: add at least one product",
        ));
    }
    if order.items.len() > rules::MAX_LINES {
        return Err(unprocessable(
            "items",
            format!(
                "an order holds at most {} different products",
                rules::MAX_LINES
            ),
        ));
    }
    for (i, item) in order.items.iter().enumerate() {
        rules::quantity(item.qty).map_err(|m| unprocessable(format!("items[{i}].qty"), m))?;
        if order.items[..i].iter().any(|other| other.sku == item.sku) {
            let product = if repeatable(&item.sku) {
                item.sku.as_str()
            } else {
                "this product"
            };
            return Err(unprocessable(
                format!("items[{i}].sku"),
                format!("{product} is in the cart twice: change its quantity instead"),
            ));
        }
    }
    match &order.payment {
        PaymentInput::Card {
            card_number,
            expiry,
            cvc,
        } => {
            rules::card_number(card_number).map_err(|m| unprocessable("payment.card_number", m))?;
            rules::expiry(expiry, today).map_err(|m| unprocessable("payment.expiry", m))?;
            rules::cvc(cvc).map_err(|m| unprocessable("payment.cvc", m))?;
        }
        PaymentInput::Wallet { wallet_id } => {
            rules::wallet_id(wallet_id).map_err(|m| unprocessable("payment.wallet_id", m))?;
        }
    }
    for (step, fault) in &order.faults {
        if !STEPS.contains(&step.as_str()) {
            let (name, which) = if repeatable(step) {
                (format!("faults.{step}"), format!("no step {step:?}"))
            } else {
                ("faults.?".to_string(), "no such step".to_string())
            };
            return Err(unprocessable(
                name,
                format!("there is {which}; the steps are {}", STEPS.join(", ")),
            ));
        }
        let name = format!("faults.{step}");
        match *fault {
            Fault::Transient { times } | Fault::CompensationTransient { times }
                if !(1..=10).contains(&times) =>
            {
                return Err(unprocessable(name, "times must be between 1 and 10"));
            }
            Fault::Delay { ms } if ms > 60_000 => {
                return Err(unprocessable(name, "a delay can be at most 60000 ms"));
            }
            Fault::Crash if !allow_crash_faults => {
                return Err(unprocessable(
                    name,
                    "the crash fault is off: start the server with --allow-crash-faults",
                ));
            }
            _ => {}
        }
    }
    Ok(())
}
