//! The products with their price and live stock, each with an add-to-cart button.

use leptos::prelude::*;
use shared::CatalogItem;

use crate::app::ShopState;
use crate::components::alert_while;
use crate::components::cart::max_qty;
use crate::format::money;
use crate::reactive::list;

#[component]
pub fn Catalog(state: ShopState) -> impl IntoView {
    view! {
        <div class="panel">
            <h2>"Catalog"</h2>
            {alert_while("catalog-error", move || state.catalog_error.get())}
            <ul class="catalog">
                {list(move || state.catalog.with(|items| items.iter().map(|item| product(state, item)).collect()))}
            </ul>
        </div>
    }
}

fn product(state: ShopState, item: &CatalogItem) -> AnyView {
    let sku = item.sku.clone();
    let out = item.stock == 0;
    // One more, up to the stock: past it the cart line says why it stops.
    let add = move |_| {
        let max = max_qty(state, &sku);
        state
            .cart
            .update(|cart| match cart.iter_mut().find(|(s, _)| *s == sku) {
                Some((_, qty)) => *qty = (*qty + 1).min(max),
                None => cart.push((sku.clone(), 1)),
            });
    };
    view! {
        <li class="product">
            <span class="name">{item.name.clone()}</span>
            <span class="sku">{item.sku.clone()}</span>
            <span class="price">{money(item.price_cents)}</span>
            <span class=if out { "stock out" } else { "stock" }>
                {if out { "out of stock".to_string() } else { format!("{} in stock", item.stock) }}
            </span>
            <button
                data-testid=format!("add-{}", item.sku)
                aria-label=format!("Add {} to the cart", item.name)
                disabled=out
                on:click=add
            >
                "Add"
            </button>
        </li>
    }
    .into_any()
}
