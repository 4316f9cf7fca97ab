//! Reading sagas: the list and (later) one saga with its steps and events.

use axum::Json;
use axum::extract::{Query, State};
use saga_engine::SagaStatus;
use serde::Deserialize;
use shared::{SagaListItem, rfc3339_millis};

use super::SharedState;
use crate::error::ApiError;

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    limit: Option<u32>,
}

/// `GET /api/sagas?status=&limit=`: recent sagas, newest first.
pub async fn list_sagas(
    State(state): State<SharedState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<SagaListItem>>, ApiError> {
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(s.parse::<SagaStatus>().map_err(|_| {
            ApiError::invalid("status", format!("status must be one of running, compensating, completed, compensated, stuck; got {s:?}"))
        })?),
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let sagas = state.store().list_sagas(status, limit).await?;
    Ok(Json(
        sagas
            .into_iter()
            .map(|s| SagaListItem {
                saga_id: s.saga_id.to_string(),
                order_id: None,
                status: s.status.to_string(),
                started_at: rfc3339_millis(s.started_at_ms),
                finished_at: s.finished_at_ms.map(rfc3339_millis),
            })
            .collect(),
    ))
}
