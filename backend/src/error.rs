//! The one place where errors become HTTP responses: `{"error": "...", "field": ...}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use saga_engine::{EngineError, StoreError};
use shared::ApiErrorBody;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is wrong; `field` names the offending input when there is one.
    #[error("{message}")]
    Invalid {
        status: StatusCode,
        message: String,
        field: Option<String>,
    },
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Invalid {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            field: Some(field.into()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, field) = match &self {
            ApiError::Invalid { status, field, .. } => (*status, field.clone()),
            ApiError::NotFound(_) | ApiError::Engine(EngineError::UnknownSaga(_)) => {
                (StatusCode::NOT_FOUND, None)
            }
            ApiError::Engine(_) | ApiError::Store(_) => {
                tracing::error!(error = %self, "request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, None)
            }
        };
        let error = match status {
            StatusCode::INTERNAL_SERVER_ERROR => {
                "something went wrong on our side; the request was not completed".to_string()
            }
            _ => self.to_string(),
        };
        (status, Json(ApiErrorBody { error, field })).into_response()
    }
}
