//! The cart: quantities to change, lines to remove, and the total with the delivery fee. A
//! quantity stops at the product's stock, and the line says so ("only 4 in stock").

use leptos::prelude::*;
use shared::Delivery;

use crate::app::ShopState;
use crate::format::money;
use crate::reactive::{dynamic, list, text};

/// Items plus delivery, priced from the catalog as the server will price them.
pub fn cart_total(state: ShopState) -> i64 {
    let catalog = state.catalog.get();
    let items: i64 = state
        .cart
        .get()
        .iter()
        .map(|(sku, qty)| {
            catalog
                .iter()
                .find(|c| &c.sku == sku)
                .map(|c| c.price_cents * qty)
                .unwrap_or(0)
        })
        .sum();
    let delivery = if state.form.get().delivery == "express" {
        Delivery::Express
    } else {
        Delivery::Standard
    };
    items + delivery.fee_cents()
}

#[component]
pub fn Cart(state: ShopState) -> impl IntoView {
    let empty = Memo::new(move |_| state.cart.with(Vec::is_empty));
    view! {
        <div class="panel">
            <h2>"Cart"</h2>
            {dynamic(move || if empty.get() {
                view! { <p class="muted">"Empty: add a product above."</p> }.into_any()
            } else {
                lines(state)
            })}
        </div>
    }
}

fn lines(state: ShopState) -> AnyView {
    view! {
        <ul class="cart">
            {list(move || state.cart.get().into_iter().map(|(sku, qty)| line(state, sku, qty)).collect())}
        </ul>
        <p class="total">
            "Total with delivery: " <strong data-testid="cart-total">{text(move || money(cart_total(state)))}</strong>
        </p>
    }
    .into_any()
}

/// How many of a product the cart can hold: its stock as last read, at most
/// [`MAX_QTY`](shared::rules::MAX_QTY), and never below one (a line holds at least one; if the
/// stock ran out since it was added, the line says so and the order's first step will refuse).
pub fn max_qty(state: ShopState, sku: &str) -> i64 {
    let stock = state.catalog.with_untracked(|c| {
        c.iter()
            .find(|i| i.sku == sku)
            .map_or(shared::rules::MAX_QTY, |i| i.stock)
    });
    stock.clamp(1, shared::rules::MAX_QTY)
}

/// What the line says of the stock: nothing while the cart holds less than there is.
fn stock_note(state: ShopState, sku: &str, qty: i64) -> String {
    let stock = state
        .catalog
        .with(|c| c.iter().find(|i| i.sku == sku).map(|i| i.stock));
    match stock {
        Some(0) => "out of stock now".into(),
        Some(stock) if qty == stock => format!("only {stock} in stock"),
        // The stock fell since the product was added: `place_order` will refuse this many.
        Some(stock) if qty > stock => format!("only {stock} in stock now"),
        _ => String::new(),
    }
}

/// One line of the cart. Rebuilt in place when the cart changes, so its input keeps focus.
fn line(state: ShopState, sku: String, qty: i64) -> AnyView {
    let (name, price) = state
        .catalog
        .with_untracked(|c| {
            c.iter()
                .find(|i| i.sku == sku)
                .map(|i| (i.name.clone(), i.price_cents))
        })
        .unwrap_or_default();
    let (s1, s2, s3) = (sku.clone(), sku.clone(), sku.clone());
    let max = max_qty(state, &sku);
    view! {
        <li>
            <span class="name">{name.clone()}</span>
            <label class="qty">
                <span class="visually-hidden">{format!("Quantity of {name}")}</span>
                <input
                    type="number"
                    min="1"
                    max=max.to_string()
                    data-testid=format!("qty-{sku}")
                    prop:value=qty.to_string()
                    on:change=move |ev| {
                        let q = event_target_value(&ev)
                            .parse::<i64>()
                            .unwrap_or(1)
                            .clamp(1, max_qty(state, &s1));
                        // The line may keep its node with the same quantity (typing 9 where 4
                        // is the most): the input must show what the cart holds.
                        event_target::<web_sys::HtmlInputElement>(&ev).set_value(&q.to_string());
                        state.cart.update(|c| {
                            if let Some(l) = c.iter_mut().find(|(s, _)| *s == s1) {
                                l.1 = q;
                            }
                        });
                    }
                />
            </label>
            <span class="price">{money(price * qty)}</span>
            <button class="link" aria-label=format!("Remove {name}") on:click=move |_| {
                state.cart.update(|c| c.retain(|(s, _)| *s != s2));
            }>"Remove"</button>
            <small class="stock-note" data-testid=format!("stock-note-{sku}")>
                {text(move || stock_note(state, &s3, qty))}
            </small>
        </li>
    }
    .into_any()
}
