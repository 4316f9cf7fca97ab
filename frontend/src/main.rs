//! The shop's browser side: a Leptos app rendered on the client, compiled to WebAssembly.
//! It talks to the backend with gloo-net (JSON and server-sent events), using the request,
//! response and event types of `shared`, and the same input rules and timeline projection.

mod api;
mod app;
mod components;
mod format;
mod live;
mod reactive;
mod route;

fn main() {
    std::panic::set_hook(Box::new(|info| {
        leptos::logging::error!("{info}");
    }));
    leptos::mount::mount_to_body(app::App);
}
