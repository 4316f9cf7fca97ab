//! The application state and the router.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::handler::Handler;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use saga_engine::{Engine, SagaStore};
use tokio::sync::watch;
use tower_http::services::{ServeDir, ServeFile};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::api;
use crate::api::sse::EventsFeed;
use crate::metrics::Metrics;
use crate::purchase::ServiceClient;

/// Request bodies larger than this are refused with 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub client: ServiceClient,
    pub allow_crash_faults: bool,
    pub metrics: Arc<Metrics>,
    /// `/api/events`: frames rendered once per record for all subscribers.
    pub events: EventsFeed,
    /// Flips to true on shutdown, so endless responses (SSE) end and the server can stop.
    pub shutdown: watch::Receiver<bool>,
}

impl AppState {
    pub fn store(&self) -> &dyn SagaStore {
        self.engine.store()
    }

    pub fn shutdown_signal(&self) -> impl Future<Output = ()> + Send + 'static + use<> {
        let mut rx = self.shutdown.clone();
        async move {
            let _ = rx.wait_for(|stopping| *stopping).await;
        }
    }
}

/// `/healthz`, `/metrics`, the API under `/api` (all of it: an unknown path there is the
/// API's JSON 404), and the frontend for every other path (see [`frontend`]). The services
/// are nested by the caller, which knows which ones this process hosts.
pub fn router(state: AppState, static_dir: &Path) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .nest(
            "/api",
            api::router().layer(DefaultBodyLimit::max(MAX_BODY_BYTES)),
        )
        // The one path under /api that the nested router's fallback does not reach.
        .route("/api/", any(api::not_found))
        .fallback_service(frontend(static_dir))
        .with_state(Arc::new(state))
}

/// The page's files, each sent brotli- or gzip-encoded when the client accepts it: `xtask
/// build` writes `NAME.br` and `NAME.gz` beside each, so a request costs no compression.
/// A path naming no file is a route of the page (`/sagas/{id}`), which routes itself:
/// `index.html`; unless its last segment has an extension (`/favicon.ico`, a missing
/// `.js`): that asks for a file, and gets a plain 404, not a page.
///
/// Every answer is `Cache-Control: no-cache`: the bundle's names (`pkg/saga_shop_frontend.js`,
/// `…_bg.wasm`) do not change with its content, so a browser keeping them would run an old
/// bundle against a new `index.html` and API. It keeps them and asks each time instead, with
/// the `ETag` and `Last-Modified` `ServeDir` sends; an unchanged file costs a 304.
///
/// `index.html` comes with a `Link` header preloading the bundle (see [`preload_links`]).
fn frontend(static_dir: &Path) -> Router {
    let index = ServeFile::new(static_dir.join("index.html"))
        .precompressed_br()
        .precompressed_gzip();
    let files = ServeDir::new(static_dir)
        .precompressed_br()
        .precompressed_gzip()
        .fallback(page_route.with_state(index));
    let preload = preload_links(static_dir);
    Router::new()
        .fallback_service(files)
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::LINK,
            move |response: &Response| {
                let html = response
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .is_some_and(|t| t.as_bytes().starts_with(b"text/html"));
                preload.clone().filter(|_| html)
            },
        ))
}

/// The `Link` header that sends the browser for the bundle in `pkg/` as soon as `index.html`
/// arrives: the wasm (`rel=preload; as=fetch; crossorigin`, which is how the bundle's JS
/// fetches it, so the browser uses the preloaded response) and the JS (`rel=modulepreload`).
/// Without it the wasm is asked for only once the JS has come and run: on a slow network a
/// round trip later, while the biggest file is the one the page waits for. Read from the
/// directory once at start, so it names what the build wrote; `None` without a bundle.
fn preload_links(static_dir: &Path) -> Option<HeaderValue> {
    let mut names: Vec<String> = std::fs::read_dir(static_dir.join("pkg"))
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .collect();
    // The wasm first: it is the long one.
    names.sort_by_key(|name| (!name.ends_with(".wasm"), name.clone()));
    let links: Vec<String> = names
        .iter()
        .filter_map(|name| match Path::new(name).extension()?.to_str()? {
            "wasm" => Some(format!("</pkg/{name}>; rel=preload; as=fetch; crossorigin")),
            "js" => Some(format!("</pkg/{name}>; rel=modulepreload")),
            _ => None,
        })
        .collect();
    if links.is_empty() {
        return None;
    }
    HeaderValue::from_str(&links.join(", ")).ok()
}

/// `index.html` for a route of the page; a 404 for a file that is not there.
async fn page_route(State(mut index): State<ServeFile>, request: Request) -> Response {
    let last_segment = request.uri().path().rsplit('/').next().unwrap_or_default();
    if last_segment.contains('.') {
        return StatusCode::NOT_FOUND.into_response();
    }
    match index.try_call(request).await {
        Ok(response) => response.map(axum::body::Body::new).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "reading index.html failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    match state.metrics.render(&state.engine) {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                crate::metrics::CONTENT_TYPE,
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering /metrics failed");
            axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
