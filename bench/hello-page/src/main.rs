//! A minimal Leptos client-side page: the smallest thing our frontend could be.

use leptos::prelude::*;

fn main() {
    leptos::mount::mount_to_body(|| view! { <p>"Hello"</p> });
}
