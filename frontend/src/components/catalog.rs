//! The products with their price and live stock, each with an add-to-cart button.

use leptos::prelude::*;

use crate::app::ShopState;
use crate::format::money;

#[component]
pub fn Catalog(state: ShopState) -> impl IntoView {
    let add = move |sku: String| {
        state
            .cart
            .update(|cart| match cart.iter_mut().find(|(s, _)| *s == sku) {
                Some((_, qty)) => *qty = (*qty + 1).min(shared::rules::MAX_QTY),
                None => cart.push((sku, 1)),
            });
    };
    view! {
        <div class="panel">
            <h2>"Catalog"</h2>
            {move || state.catalog_error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
            <ul class="catalog">
                <For each=move || state.catalog.get() key=|item| (item.sku.clone(), item.stock) let:item>
                    {
                        let sku = item.sku.clone();
                        let out = item.stock == 0;
                        view! {
                            <li class="product">
                                <span class="name">{item.name.clone()}</span>
                                <span class="sku">{item.sku.clone()}</span>
                                <span class="price">{money(item.price_cents)}</span>
                                <span class="stock" class:out=out>
                                    {if out { "out of stock".to_string() } else { format!("{} in stock", item.stock) }}
                                </span>
                                <button
                                    data-testid=format!("add-{}", item.sku)
                                    aria-label=format!("Add {} to the cart", item.name)
                                    on:click=move |_| add(sku.clone())
                                >
                                    "Add"
                                </button>
                            </li>
                        }
                    }
                </For>
            </ul>
        </div>
    }
}
