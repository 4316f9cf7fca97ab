//! The JSON API under `/api` (DESIGN.md §3).

mod sagas;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;

use crate::app::AppState;

pub type SharedState = Arc<AppState>;

pub fn router() -> Router<SharedState> {
    Router::new().route("/sagas", get(sagas::list_sagas))
}
