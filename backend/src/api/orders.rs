//! `POST /api/orders` (start a purchase), `GET /api/orders/{id}` (what every service holds for
//! it) and `GET /api/catalog`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use saga_engine::{EngineError, RecordKind, SagaId, SagaStatus};
use shared::{CatalogItem, OrderAccepted, OrderRequest, OrderView, PaymentInput, rules};

use super::SharedState;
use super::submissions::Submissions;
use super::validate::check_order;
use crate::body::{JsonBody, repeatable};
use crate::error::ApiError;
use crate::purchase::{ClientError, PurchaseInput, SAGA_NAME, order_id_for, saga_id_for_order};
use crate::services::ServiceName;
use crate::services::orders::StoredOrder;
use crate::services::payments::{CardToken, PaymentRef, TokeniseCard};

/// Saga ids for `Idempotency-Key`s are UUIDv5 in this namespace: the same key always names the
/// same saga, across restarts, with nothing extra to store.
const IDEMPOTENCY_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x5a6a_5b09_0e4c_4f0e_9d1e_7c3b_2a41_0c7d);

fn unavailable(service: ServiceName, e: ClientError) -> ApiError {
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
    let input: Option<PurchaseInput> = match records.first().map(|r| &r.kind) {
        Some(RecordKind::SagaStarted { input, .. }) => serde_json::from_value(input.clone()).ok(),
        _ => None,
    };
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

/// `POST /api/orders`: check the order, then start its saga, or, for an `Idempotency-Key`
/// already used, answer as the first time (see [`Submissions`]).
pub async fn place_order(
    State(state): State<SharedState>,
    Extension(submissions): Extension<Arc<Submissions>>,
    headers: HeaderMap,
    JsonBody(order): JsonBody<OrderRequest>,
) -> Result<Response, ApiError> {
    let today = rules::year_month(crate::services::now_ms());
    check_order(&order, today, state.allow_crash_faults)?;
    let catalog = catalog(State(state.clone())).await?.0;
    for (i, item) in order.items.iter().enumerate() {
        if !catalog.iter().any(|c| c.sku == item.sku) {
            let product = if repeatable(&item.sku) {
                format!("there is no product {:?} in the catalog", item.sku)
            } else {
                "there is no such product in the catalog".to_string()
            };
            return Err(ApiError::Invalid {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                message: product,
                field: Some(format!("items[{i}].sku")),
            });
        }
    }
    let digest = digest(&order);
    let Some(key) = idempotency_key(&headers)? else {
        return start_purchase(&state, SagaId::new(), order, digest).await;
    };
    let saga_id = SagaId(uuid::Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, key.as_bytes()));
    let _turn = submissions.turn(saga_id).await;
    if let Some(response) = replay(&state, saga_id, &digest).await? {
        return Ok(response);
    }
    start_purchase(&state, saga_id, order, digest).await
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let key = headers
        .get("idempotency-key")
        .map(|v| v.to_str())
        .transpose()
        .map_err(|_| {
            // Ignoring it would make every retry a new purchase.
            ApiError::invalid(
                "Idempotency-Key",
                "the Idempotency-Key must be visible ASCII characters",
            )
        })?
        .map(str::trim)
        .filter(|k| !k.is_empty());
    if key.is_some_and(|k| k.len() > 200) {
        return Err(ApiError::invalid(
            "Idempotency-Key",
            "the Idempotency-Key can be at most 200 characters",
        ));
    }
    Ok(key)
}

/// Tokenise the card and start the saga under `saga_id`; 202 once its first record is durable.
async fn start_purchase(
    state: &SharedState,
    saga_id: SagaId,
    order: OrderRequest,
    digest: String,
) -> Result<Response, ApiError> {
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
        // Another node on the same database started it first (in this process, submissions
        // take turns): its saga is committed, so it is the answer.
        Err(EngineError::DuplicateSaga(_)) => match replay(state, saga_id, &digest).await? {
            Some(response) => Ok(response),
            None => Err(ApiError::Invalid {
                status: StatusCode::CONFLICT,
                message: "an order with this Idempotency-Key is being placed right now; \
                          send it again in a moment for its answer"
                    .into(),
                field: None,
            }),
        },
        Err(e) => Err(e.into()),
    }
}

pub async fn get_order(
    State(state): State<SharedState>,
    super::IdPath(order_id): super::IdPath,
) -> Result<Json<OrderView>, ApiError> {
    // A path can hold anything, so a 404 does not repeat it.
    let not_found = || ApiError::NotFound("there is no order with that id".into());
    let saga_id = saga_id_for_order(&order_id).ok_or_else(not_found)?;
    let order_id = order_id_for(saga_id);
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
