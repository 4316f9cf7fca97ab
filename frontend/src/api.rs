//! Calls to the backend's JSON API.

use gloo_net::http::{Request, Response};
use serde::de::DeserializeOwned;
use shared::{
    ApiErrorBody, CatalogItem, OrderAccepted, OrderRequest, OrderView, SagaListItem, SagaRetried,
    SagaState,
};

/// What went wrong with a request, ready to show.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiFailure {
    pub message: String,
    pub field: Option<String>,
}

impl ApiFailure {
    fn network(e: impl std::fmt::Display) -> Self {
        ApiFailure {
            message: format!("the server could not be reached: {e}"),
            field: None,
        }
    }
}

/// The body, read as JSON with [`parse_json`].
async fn body<T: DeserializeOwned>(response: &Response) -> Result<T, String> {
    let text = response.text().await.map_err(|e| e.to_string())?;
    parse_json(&text)
}

/// JSON text into `T`: parsed by the browser's `JSON.parse`, read with serde-wasm-bindgen, so
/// the page carries no JSON parser of its own.
pub fn parse_json<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    let value = js_sys::JSON::parse(text).map_err(|_| "not JSON".to_string())?;
    serde_wasm_bindgen::from_value(value).map_err(|e| e.to_string())
}

async fn decode<T: DeserializeOwned>(response: Response) -> Result<T, ApiFailure> {
    if response.ok() {
        return body(&response).await.map_err(|e| ApiFailure {
            message: format!("unexpected answer: {e}"),
            field: None,
        });
    }
    let status = response.status();
    match body::<ApiErrorBody>(&response).await {
        Ok(body) => Err(ApiFailure {
            message: body.error,
            field: body.field,
        }),
        Err(_) => Err(ApiFailure {
            message: format!("the server answered {status}"),
            field: None,
        }),
    }
}

async fn fetch(url: &str) -> Result<Response, ApiFailure> {
    Request::get(url).send().await.map_err(ApiFailure::network)
}

async fn get<T: DeserializeOwned>(url: &str) -> Result<T, ApiFailure> {
    decode(fetch(url).await?).await
}

pub async fn catalog() -> Result<Vec<CatalogItem>, ApiFailure> {
    get("/api/catalog").await
}

/// The newest `limit` sagas (only those in `status`, if given), and the log position up to
/// which they are current (the `x-log-position` header; `None` if it is missing):
/// `/api/events?after=` it brings what the list does not show yet.
pub async fn sagas(
    limit: usize,
    status: Option<SagaState>,
) -> Result<(Vec<SagaListItem>, Option<i64>), ApiFailure> {
    let status = status.map(SagaState::as_str).unwrap_or_default();
    let response = fetch(&format!("/api/sagas?limit={limit}&status={status}")).await?;
    let position = response
        .headers()
        .get("x-log-position")
        .and_then(|p| p.parse().ok());
    Ok((decode(response).await?, position))
}

pub async fn order(order_id: &str) -> Result<OrderView, ApiFailure> {
    get(&format!("/api/orders/{order_id}")).await
}

pub async fn place_order(order: &OrderRequest) -> Result<OrderAccepted, ApiFailure> {
    let request = Request::post("/api/orders")
        .json(order)
        .map_err(ApiFailure::network)?;
    let response = request.send().await.map_err(ApiFailure::network)?;
    decode(response).await
}

/// Ask a stuck saga to retry its compensations (`POST /api/sagas/{id}/retry`).
pub async fn retry_saga(saga_id: &str) -> Result<SagaRetried, ApiFailure> {
    let response = Request::post(&format!("/api/sagas/{saga_id}/retry"))
        .send()
        .await
        .map_err(ApiFailure::network)?;
    decode(response).await
}

/// Whether the server knows a saga with this id: `Some(false)` on a 404, `None` when it could
/// not be asked (the page then carries on as if it did).
pub async fn saga_exists(saga_id: &str) -> Option<bool> {
    let response = fetch(&format!("/api/sagas/{saga_id}")).await.ok()?;
    match response.status() {
        404 => Some(false),
        200 => Some(true),
        _ => None,
    }
}
