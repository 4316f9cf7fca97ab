//! The page: the shop on the left (catalog, cart, checkout with the fault panel), the live
//! saga timeline on the right, and every saga below. State lives here and is handed down.

use std::collections::BTreeMap;

use leptos::prelude::*;
use leptos::task::spawn_local;
use shared::{CatalogItem, SagaEvent};

use crate::api;
use crate::components::cart::Cart;
use crate::components::catalog::Catalog;
use crate::components::checkout::{Checkout, CheckoutForm};
use crate::components::fault_panel::FaultChoice;
use crate::components::saga_list::SagaList;
use crate::components::timeline::Timeline;
use crate::live;
use crate::route::{Route, navigate, use_route};

/// The shop's state, shared by its components.
#[derive(Clone, Copy)]
pub struct ShopState {
    pub catalog: RwSignal<Vec<CatalogItem>>,
    pub catalog_error: RwSignal<Option<String>>,
    /// sku → quantity, in the order added.
    pub cart: RwSignal<Vec<(String, i64)>>,
    pub form: RwSignal<CheckoutForm>,
    pub faults: RwSignal<BTreeMap<String, FaultChoice>>,
    pub route: RwSignal<Route>,
}

impl ShopState {
    pub fn refresh_catalog(self) {
        spawn_local(async move {
            match api::catalog().await {
                Ok(items) => {
                    self.catalog.set(items);
                    self.catalog_error.set(None);
                }
                Err(e) => self.catalog_error.set(Some(e.message)),
            }
        });
    }
}

#[component]
pub fn App() -> impl IntoView {
    let route = use_route();
    let state = ShopState {
        catalog: RwSignal::new(Vec::new()),
        catalog_error: RwSignal::new(None),
        cart: RwSignal::new(Vec::new()),
        form: RwSignal::new(CheckoutForm::default()),
        faults: RwSignal::new(BTreeMap::new()),
        route,
    };
    state.refresh_catalog();

    // The saga on show, followed live.
    let events = RwSignal::new(Vec::<SagaEvent>::new());
    let generation = RwSignal::new(0u64);
    // Bumped when a stuck saga is retried: its stream had ended, and is followed again.
    let refollow = RwSignal::new(0u64);
    let saga_id = Memo::new(move |_| match route.get() {
        Route::Saga(id) => Some(id),
        Route::Shop => None,
    });
    Effect::new(move |_| {
        let id = saga_id.get();
        refollow.track();
        generation.update(|g| *g += 1);
        events.set(Vec::new());
        if let Some(id) = id {
            live::follow_saga(id, events, generation, move || state.refresh_catalog());
        }
    });

    view! {
        <header class="top">
            <h1 class="brand-title">
                <a href="/" class="brand" on:click=move |ev| {
                    ev.prevent_default();
                    navigate(route, Route::Shop);
                }>"Saga shop"</a>
            </h1>
            <span class="tagline">"Every purchase is a saga: four services, four local transactions, and a compensation for each."</span>
            <LiveStatus />
        </header>
        <main class="layout">
            <section class="shop" aria-label="Shop">
                <Catalog state=state />
                <Cart state=state />
                <Checkout state=state />
            </section>
            <section class="watch" aria-label="Saga">
                <Timeline saga_id=saga_id events=events refollow=refollow />
            </section>
        </main>
        <SagaList route=route />
    }
}

/// Whether the page is receiving live updates: a person must not mistake a stalled page for
/// a stalled saga.
#[component]
fn LiveStatus() -> impl IntoView {
    let state = move || {
        if live::reconnecting() {
            "reconnecting"
        } else {
            "live"
        }
    };
    view! {
        <span class=move || format!("live-status {}", state()) data-testid="live-status" data-state=state role="status">
            {move || if live::reconnecting() {
                "Live updates paused: the server is not answering, reconnecting…"
            } else {
                "Live"
            }}
        </span>
    }
}
