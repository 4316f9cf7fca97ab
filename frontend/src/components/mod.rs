//! One component per file, named for what it shows; and the alert they share.

use leptos::prelude::*;

use crate::reactive::dynamic;

pub mod cart;
pub mod catalog;
pub mod checkout;
pub mod fault_panel;
pub mod saga_list;
pub mod service_state;
pub mod timeline;

/// An alert (`role="alert"`) that is in the page only while `message` has something to say:
/// a screen reader announces it as it appears, and there is never an empty one. One function
/// for every alert of the shop, so its rendering code is in the page once.
pub fn alert_while(
    testid: &'static str,
    message: impl Fn() -> Option<String> + Send + Sync + 'static,
) -> AnyView {
    dynamic(move || match message() {
        Some(message) => {
            view! { <p class="error" role="alert" data-testid=testid>{message}</p> }.into_any()
        }
        None => ().into_any(),
    })
}
