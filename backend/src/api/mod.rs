//! The JSON API under `/api` (DESIGN.md §3). Every answer under `/api` is the API's: an
//! unknown path is a JSON 404 and a known path with another method a JSON 405, never the
//! page's `index.html` (that fallback is for the page's own routes, outside `/api`).

mod openapi;
mod orders;
mod sagas;
pub mod sse;
mod submissions;
mod validate;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Router};

use crate::app::AppState;
use crate::error::ApiError;

pub type SharedState = Arc<AppState>;

/// The `{id}` of a path. One that cannot be read (not UTF-8 once percent-decoded) names
/// nothing there is, so it is the API's JSON 404 rather than axum's plain-text 400; it is not
/// repeated.
pub struct IdPath(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(id)| IdPath(id))
            .map_err(|_| ApiError::NotFound("there is nothing with that id".into()))
    }
}

pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/openapi.json", get(openapi::document))
        .route("/catalog", get(orders::catalog))
        .route("/orders", post(orders::place_order))
        .route("/orders/{order_id}", get(orders::get_order))
        .route("/sagas", get(sagas::list_sagas))
        .route("/sagas/{id}", get(sagas::get_saga))
        .route("/sagas/{id}/events", get(sagas::saga_events))
        .route("/sagas/{id}/retry", post(sagas::retry_saga))
        .route("/events", get(sagas::all_events))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(Extension(Arc::new(submissions::Submissions::default())))
}

/// The path is not part of the API. It is not repeated: it could hold anything.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("there is no such path in the API".into())
}

/// The path is the API's, the method is not one it answers. axum adds the `Allow` header; the
/// method is not repeated (an extension method is any token a client likes).
async fn method_not_allowed() -> ApiError {
    ApiError::Invalid {
        status: StatusCode::METHOD_NOT_ALLOWED,
        message: "this path does not take that method; the Allow header lists the ones it does"
            .into(),
        field: None,
    }
}
