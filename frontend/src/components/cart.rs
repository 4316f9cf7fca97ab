//! The cart: quantities to change, lines to remove, and the total with the delivery fee.

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
    let (s1, s2) = (sku.clone(), sku.clone());
    view! {
        <li>
            <span class="name">{name.clone()}</span>
            <label class="qty">
                <span class="visually-hidden">{format!("Quantity of {name}")}</span>
                <input
                    type="number"
                    min="1"
                    max="99"
                    data-testid=format!("qty-{sku}")
                    prop:value=qty.to_string()
                    on:change=move |ev| {
                        let q = event_target_value(&ev).parse::<i64>().unwrap_or(1).clamp(1, 99);
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
        </li>
    }
    .into_any()
}
