//! The JSON API under `/api` (DESIGN.md §3).

mod openapi;
mod orders;
mod sagas;
pub mod sse;
mod validate;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use crate::app::AppState;

pub type SharedState = Arc<AppState>;

pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/openapi.json", get(openapi::document))
        .route("/catalog", get(orders::catalog))
        .route("/orders", post(orders::place_order))
        .route("/orders/{order_id}", get(orders::get_order))
        .route("/sagas", get(sagas::list_sagas))
        .route("/sagas/{id}", get(sagas::get_saga))
        .route("/sagas/{id}/events", get(sagas::saga_events))
        .route("/events", get(sagas::all_events))
}
