//! The application state and the router.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get};
use saga_engine::{Engine, SagaStore};
use tokio::sync::watch;
use tower_http::services::{ServeDir, ServeFile};

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
/// API's JSON 404), and the frontend for every other path (the page routes itself, so unknown
/// paths get `index.html`). The services are nested by the
/// caller, which knows which ones this process hosts.
pub fn router(state: AppState, static_dir: &Path) -> Router {
    let index = ServeFile::new(static_dir.join("index.html"));
    let frontend = ServeDir::new(static_dir).fallback(index);
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .nest(
            "/api",
            api::router().layer(DefaultBodyLimit::max(MAX_BODY_BYTES)),
        )
        // The one path under /api that the nested router's fallback does not reach.
        .route("/api/", any(api::not_found))
        .fallback_service(frontend)
        .with_state(Arc::new(state))
}

async fn metrics(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
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
