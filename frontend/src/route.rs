//! The page's two places: the shop (`/`) and one saga (`/sagas/{id}`), kept in the address bar
//! with the History API so a saga can be linked, reloaded and navigated back to.

use leptos::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Shop,
    Saga(String),
}

impl Route {
    pub fn parse(path: &str) -> Route {
        match path.strip_prefix("/sagas/") {
            Some(id) if !id.is_empty() => Route::Saga(id.trim_end_matches('/').to_string()),
            _ => Route::Shop,
        }
    }

    pub fn path(&self) -> String {
        match self {
            Route::Shop => "/".into(),
            Route::Saga(id) => format!("/sagas/{id}"),
        }
    }

    pub fn current() -> Route {
        Route::parse(&window().location().pathname().unwrap_or_default())
    }
}

/// The route as a signal, following back/forward.
pub fn use_route() -> RwSignal<Route> {
    let route = RwSignal::new(Route::current());
    let handle = window_event_listener(leptos::ev::popstate, move |_| route.set(Route::current()));
    on_cleanup(move || handle.remove());
    route
}

pub fn navigate(route: RwSignal<Route>, to: Route) {
    if route.get_untracked() != to {
        let _ = window().history().and_then(|h| {
            h.push_state_with_url(&leptos::wasm_bindgen::JsValue::NULL, "", Some(&to.path()))
        });
        route.set(to);
    }
}
