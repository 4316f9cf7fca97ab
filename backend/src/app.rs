//! The application state and the router.

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use saga_engine::{Engine, SagaStore};
use tower_http::services::{ServeDir, ServeFile};

use crate::api;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub allow_crash_faults: bool,
}

impl AppState {
    pub fn store(&self) -> &dyn SagaStore {
        self.engine.store()
    }
}

/// The whole HTTP surface: `/healthz`, the API under `/api`, and the frontend for every other
/// path (the page routes itself, so unknown paths get `index.html`).
pub fn router(state: AppState, static_dir: &Path) -> Router {
    let index = ServeFile::new(static_dir.join("index.html"));
    let frontend = ServeDir::new(static_dir).fallback(index);
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .nest("/api", api::router())
        .fallback_service(frontend)
        .with_state(Arc::new(state))
}
