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
    // `index.html` shows a frame of the page while this bundle loads; the app takes its place
    // in the same task, so no frame is painted with neither or both.
    if let Some(frame) = leptos::prelude::document().get_element_by_id("frame") {
        frame.remove();
    }
    leptos::mount::mount_to_body(app::App);
}
