//! `POST /api/orders` (start a purchase), `GET /api/orders/{id}` (what every service holds for
//! it) and `GET /api/catalog`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use saga_engine::{EngineError, SagaId, SagaStatus};
use shared::{CatalogItem, OrderAccepted, OrderRequest, OrderView, PaymentInput, rules};

use super::SharedState;
use super::validate::check_order;
use crate::error::ApiError;
use crate::purchase::{PurchaseInput, SAGA_NAME, order_id_for, saga_id_for_order};
use crate::services::ServiceName;
use crate::services::orders::StoredOrder;
use crate::services::payments::{CardToken, PaymentRef, TokeniseCard};

/// Saga ids for `Idempotency-Key`s are UUIDv5 in this namespace: the same key always names the
/// same saga, across restarts, with nothing extra to store.
const IDEMPOTENCY_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x5a6a_5b09_0e4c_4f0e_9d1e_7c3b_2a41_0c7d);

fn unavailable(service: ServiceName, e: String) -> ApiError {
    tracing::warn!(%service, error = %e, "service unavailable");
    ApiError::Invalid {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: format!(
            "the {service} service is not answering; nothing was ordered, please try again"
        ),
        field: None,
    }
}

pub async fn catalog(State(state): State<SharedState>) -> Result<Json<Vec<CatalogItem>>, ApiError> {
    let items = state
        .client
        .get::<Vec<CatalogItem>>(ServiceName::Orders, "catalog")
        .await
        .map_err(|e| unavailable(ServiceName::Orders, e))?
        .unwrap_or_default();
    Ok(Json(items))
}

fn parse_order(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<OrderRequest, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().starts_with("application/json"));
    if !is_json {
        return Err(ApiError::Invalid {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message: "send the order as JSON, with Content-Type: application/json".into(),
            field: None,
        });
    }
    let body = body.map_err(|rejection| {
        let status = rejection.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "the order is larger than 1 MiB".to_string()
        } else {
            format!("the request body could not be read: {rejection}")
        };
        ApiError::Invalid {
            status,
            message,
            field: None,
        }
    })?;
    let mut de = serde_json::Deserializer::from_slice(&body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_data() {
            // Never echo the value itself (it could be a card number): serde's message names
            // the expected shape, which is what a person needs.
            let field = (path != ".").then_some(path);
            let what = field.as_deref().unwrap_or("the order");
            ApiError::Invalid {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                message: format!(
                    "{what} is not what was expected: {}",
                    strip_position(&inner.to_string())
                ),
                field,
            }
        } else {
            ApiError::Invalid {
                status: StatusCode::BAD_REQUEST,
                message: format!("the body is not valid JSON: {inner}"),
                field: None,
            }
        }
    })
}

fn strip_position(message: &str) -> &str {
    message.split(" at line ").next().unwrap_or(message)
}

/// A stable digest (FNV-1a) of the order as submitted, card number reduced to its last four.
fn digest(order: &OrderRequest) -> String {
    let mut order = order.clone();
    if let PaymentInput::Card {
        card_number, cvc, ..
    } = &mut order.payment
    {
        let digits = rules::card_digits(card_number).unwrap_or_default();
        *card_number = digits[digits.len().saturating_sub(4)..].to_string();
        cvc.clear();
    }
    let text = serde_json::to_string(&order).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn accepted(saga_id: SagaId, order_id: String) -> Response {
    let location = format!("/api/sagas/{saga_id}");
    let body = OrderAccepted {
        saga_id: saga_id.to_string(),
        order_id,
        events_url: format!("{location}/events"),
    };
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

/// The answer for a key that already started a saga: the same saga, if it is the same order.
async fn replay(
    state: &SharedState,
    saga_id: SagaId,
    digest: &str,
) -> Result<Option<Response>, ApiError> {
    if state.store().saga(saga_id).await?.is_none() {
        return Ok(None);
    }
    let records = state.store().saga_records(saga_id, 0).await?;
    let input: Option<PurchaseInput> = records
        .first()
        .and_then(|r| r.detail.get("input"))
        .and_then(|i| serde_json::from_value(i.clone()).ok());
    match input {
        Some(input) if input.request_digest == digest => {
            Ok(Some(accepted(saga_id, input.order_id)))
        }
        _ => Err(ApiError::Invalid {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: "this Idempotency-Key was already used for a different order; use a new key"
                .into(),
            field: None,
        }),
    }
}

pub async fn place_order(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let order = parse_order(&headers, body)?;
    let today = rules::year_month(crate::services::now_ms());
    check_order(&order, today, state.allow_crash_faults)?;
    let catalog = catalog(State(state.clone())).await?.0;
    for (i, item) in order.items.iter().enumerate() {
        if !catalog.iter().any(|c| c.sku == item.sku) {
            return Err(ApiError::Invalid {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                message: format!("there is no product {:?} in the catalog", item.sku),
                field: Some(format!("items[{i}].sku")),
            });
        }
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty());
    if key.is_some_and(|k| k.len() > 200) {
        return Err(ApiError::invalid(
            "Idempotency-Key",
            "the Idempotency-Key can be at most 200 characters",
        ));
    }
    let saga_id = match key {
        Some(k) => SagaId(uuid::Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, k.as_bytes())),
        None => SagaId::new(),
    };
    let digest = digest(&order);
    if key.is_some()
        && let Some(response) = replay(&state, saga_id, &digest).await?
    {
        return Ok(response);
    }
    let payment = match &order.payment {
        PaymentInput::Card {
            card_number,
            expiry,
            ..
        } => {
            let request = TokeniseCard {
                card_number: rules::card_digits(card_number).unwrap_or_default(),
                expiry: expiry.clone(),
            };
            let token: CardToken = state
                .client
                .post(ServiceName::Payments, "tokens", &request)
                .await
                .map_err(|e| unavailable(ServiceName::Payments, e))?;
            PaymentRef::Card {
                token: token.token,
                last4: token.last4,
            }
        }
        PaymentInput::Wallet { wallet_id } => PaymentRef::Wallet {
            wallet_id: wallet_id.trim().to_string(),
        },
    };
    let order_id = order_id_for(saga_id);
    let input = PurchaseInput {
        order_id: order_id.clone(),
        customer: order.customer,
        address: order.address,
        delivery: order.delivery,
        items: order.items,
        payment,
        faults: order.faults,
        request_digest: digest.clone(),
    };
    match state.engine.start_with_id(saga_id, SAGA_NAME, &input).await {
        Ok(_) => Ok(accepted(saga_id, order_id)),
        // Two submissions with one key raced; the other won.
        Err(EngineError::DuplicateSaga(_)) => match replay(&state, saga_id, &digest).await? {
            Some(response) => Ok(response),
            None => Err(ApiError::Engine(EngineError::DuplicateSaga(saga_id))),
        },
        Err(e) => Err(e.into()),
    }
}

pub async fn get_order(
    State(state): State<SharedState>,
    Path(order_id): Path<String>,
) -> Result<Json<OrderView>, ApiError> {
    let not_found = || ApiError::NotFound(format!("there is no order {order_id}"));
    let saga_id = saga_id_for_order(&order_id).ok_or_else(not_found)?;
    let saga = state.store().saga(saga_id).await?.ok_or_else(not_found)?;
    let c = &state.client;
    let paths = [
        "orders",
        "invoices",
        "payments",
        "shipments",
        "notifications",
    ]
    .map(|p| format!("{p}/{order_id}"));
    let (order, invoice, payment, shipment, notification) = tokio::join!(
        c.get::<StoredOrder>(ServiceName::Orders, &paths[0]),
        c.get(ServiceName::Billing, &paths[1]),
        c.get(ServiceName::Payments, &paths[2]),
        c.get(ServiceName::Shipping, &paths[3]),
        c.get(ServiceName::Shipping, &paths[4]),
    );
    let order = order.map_err(|e| unavailable(ServiceName::Orders, e))?;
    let (status, total_cents) = match &order {
        Some(o) => (o.status.clone(), o.total_cents),
        // Never placed: still to come while the saga runs, otherwise it did not go through.
        None if saga.status == SagaStatus::Running => ("pending".to_string(), 0),
        None => ("cancelled".to_string(), 0),
    };
    Ok(Json(OrderView {
        order_id: order_id.clone(),
        saga_id: saga_id.to_string(),
        status,
        total_cents,
        invoice: invoice.map_err(|e| unavailable(ServiceName::Billing, e))?,
        payment: payment.map_err(|e| unavailable(ServiceName::Payments, e))?,
        shipment: shipment.map_err(|e| unavailable(ServiceName::Shipping, e))?,
        notification: notification.map_err(|e| unavailable(ServiceName::Shipping, e))?,
    }))
}
