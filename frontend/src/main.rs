//! The shop's browser side: a Leptos app rendered on the client, compiled to WebAssembly.
//! It talks to the backend with gloo-net, using the request and response types of `shared`.

mod app;

fn main() {
    console_error_panic_hook_lite();
    leptos::mount::mount_to_body(app::App);
}

/// Panics go to the browser console instead of vanishing into a trapped wasm instance.
fn console_error_panic_hook_lite() {
    std::panic::set_hook(Box::new(|info| {
        leptos::logging::error!("{info}");
    }));
}
