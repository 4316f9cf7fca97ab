//! Reading sagas: the list, one saga with its steps and events, and the SSE streams.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use std::collections::HashMap;

use saga_engine::{
    EngineError, RecordKind, Retried, SagaId, SagaRecord, SagaStatus, SagaSummary, StoreError,
};
use serde::Deserialize;
use shared::{
    CURRENCY, Event, STEPS, SagaDetail, SagaEvent, SagaFailure, SagaListItem, SagaRetried,
    SagaState, StepOutcome, Timeline, rfc3339_millis,
};

use super::{SharedState, sse};
use crate::error::ApiError;
use crate::purchase::{PurchaseInput, SAGA_NAME, order_id_for};
use crate::services::protocol::PlacedOrder;

/// The purchase's first step: its answer prices the order.
const PLACE_ORDER_STEP: &str = "place_order";

/// `GET /api/sagas`'s query; each value is read by hand, so that a refusal names its field
/// and never repeats the value.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    limit: Option<String>,
    before: Option<String>,
}

/// A page of the list holds this many sagas unless `limit` says otherwise (the page shows 50).
pub const DEFAULT_PAGE: u32 = 50;

/// The most a page can hold: beyond it the answer would be large enough to matter to the
/// server, and `before` reads further. A larger `limit` is refused rather than cut, so a
/// client that asked for everything is not left thinking it has it.
pub const MAX_PAGE: u32 = 500;

/// The response header of `GET /api/sagas` that says up to where in the log the list is
/// current: `/api/events?after=` it brings exactly what the list does not show yet.
pub const LOG_POSITION: HeaderName = HeaderName::from_static("x-log-position");

/// A query string the handler could not read, as the API's error rather than axum's text.
fn bad_query(rejection: QueryRejection) -> ApiError {
    ApiError::invalid(
        "query",
        format!(
            "the query string could not be read: {}",
            rejection.body_text()
        ),
    )
}

fn order_id(summary_definition: &str, id: SagaId) -> Option<String> {
    (summary_definition == SAGA_NAME).then(|| order_id_for(id))
}

fn list_item(s: SagaSummary, log: RowLog) -> SagaListItem {
    let purchase = log.purchase;
    SagaListItem {
        saga_id: s.saga_id.to_string(),
        order_id: order_id(&s.definition, s.saga_id),
        status: saga_state(s.status),
        started_at: rfc3339_millis(s.started_at_ms),
        finished_at: s.finished_at_ms.map(rfc3339_millis),
        customer: purchase.customer,
        currency: purchase.total_cents.map(|_| CURRENCY.to_string()),
        total_cents: purchase.total_cents,
        failure: purchase.failure,
        nodes: log.nodes,
    }
}

/// What a saga's log says for its row of the list, beyond its summary.
#[derive(Debug, Default)]
struct RowLog {
    /// A purchase's fields; none for a saga that is not one.
    purchase: Purchase,
    /// The nodes that wrote its records, in the order they first wrote one.
    nodes: Vec<String>,
}

/// The nodes that wrote `records` (one saga's, in `seq` order), each once, in the order they
/// first wrote one; a record from before records named their node is passed over.
fn nodes_of<'a>(records: impl Iterator<Item = &'a SagaRecord>) -> Vec<String> {
    let mut nodes: Vec<String> = Vec::new();
    for node in records.filter_map(|r| r.node.as_deref()) {
        if !nodes.iter().any(|n| n == node) {
            nodes.push(node.to_string());
        }
    }
    nodes
}

/// What a purchase's log says for its row of the list, beyond its summary.
#[derive(Debug, Default)]
struct Purchase {
    customer: Option<String>,
    total_cents: Option<i64>,
    failure: Option<SagaFailure>,
}

impl Purchase {
    /// Read from the purchase saga's records: the customer from its input, the total from
    /// `place_order`'s answer, the failure from the first action that failed for good. The
    /// input and the answer are read as the types the saga wrote them as; one that does not
    /// read is a log that is not what the saga wrote, an error rather than a blank.
    fn from_records<'a>(
        saga_id: SagaId,
        records: impl Iterator<Item = &'a SagaRecord>,
    ) -> Result<Self, StoreError> {
        let unreadable = |what: &str, e: serde_json::Error| {
            StoreError::Corrupt(format!("saga {saga_id}: {what} does not read: {e}"))
        };
        let mut purchase = Purchase::default();
        for r in records {
            match &r.kind {
                RecordKind::SagaStarted { input, .. } => {
                    let input = PurchaseInput::deserialize(input)
                        .map_err(|e| unreadable("the purchase's input", e))?;
                    purchase.customer = Some(input.customer.short_name());
                }
                RecordKind::StepSucceeded { output, .. }
                    if r.step.as_deref() == Some(PLACE_ORDER_STEP) =>
                {
                    let placed = PlacedOrder::deserialize(output)
                        .map_err(|e| unreadable("place_order's answer", e))?;
                    purchase.total_cents = Some(placed.total_cents);
                }
                RecordKind::StepFailed { error, outcome, .. } if purchase.failure.is_none() => {
                    let step = r.step.clone().ok_or_else(|| {
                        StoreError::Corrupt(format!("saga {saga_id}: a failed step is unnamed"))
                    })?;
                    purchase.failure = Some(SagaFailure {
                        step,
                        error: error.clone(),
                        outcome: step_outcome(*outcome),
                    });
                }
                _ => {}
            }
        }
        Ok(purchase)
    }
}

/// Each of `sagas` with what its log says (the nodes that wrote it; for a purchase, its
/// fields too), read in one call to the store however many sagas the page holds.
async fn row_logs(
    state: &SharedState,
    sagas: &[SagaSummary],
) -> Result<HashMap<SagaId, RowLog>, StoreError> {
    let ids: Vec<SagaId> = sagas.iter().map(|s| s.saga_id).collect();
    let records = state.store().sagas_records(&ids).await?;
    let mut by_saga: HashMap<SagaId, Vec<&SagaRecord>> = HashMap::new();
    for r in &records {
        by_saga.entry(r.saga_id).or_default().push(r);
    }
    sagas
        .iter()
        .filter_map(|s| Some((s, by_saga.remove(&s.saga_id)?)))
        .map(|(s, records)| {
            let purchase = if s.definition == SAGA_NAME {
                Purchase::from_records(s.saga_id, records.iter().copied())?
            } else {
                Purchase::default()
            };
            let nodes = nodes_of(records.into_iter());
            Ok((s.saga_id, RowLog { purchase, nodes }))
        })
        .collect()
}

/// A log record as the public event stream shows it. The saga's input (customer details) stays
/// in the log: `saga_started` only says which saga and order it is.
pub fn event(r: &SagaRecord) -> SagaEvent {
    SagaEvent {
        saga_id: r.saga_id.to_string(),
        seq: r.seq,
        at: rfc3339_millis(r.at_ms),
        step: r.step.clone(),
        attempt: r.attempt,
        node: r.node.as_deref().map(str::to_string),
        event: wire_event(&r.kind),
    }
}

/// The engine's record kind as the API's event: one arm per kind, so a kind the engine gains
/// does not compile until the API says how to show it.
fn wire_event(kind: &RecordKind) -> Event {
    match kind.clone() {
        RecordKind::SagaStarted { saga, input } => Event::SagaStarted {
            saga,
            order_id: input
                .get("order_id")
                .and_then(|o| o.as_str())
                .map(str::to_string),
            card_last4: input
                .pointer("/payment/last4")
                .and_then(|o| o.as_str())
                .map(str::to_string),
        },
        RecordKind::StepStarted { timeout_ms } => Event::StepStarted { timeout_ms },
        RecordKind::StepSucceeded {
            output,
            duration_ms,
        } => Event::StepSucceeded {
            output,
            duration_ms,
        },
        RecordKind::StepFailed {
            error,
            outcome,
            retryable,
            duration_ms,
        } => Event::StepFailed {
            error,
            outcome: step_outcome(outcome),
            retryable,
            duration_ms,
        },
        RecordKind::StepRetrying {
            error,
            outcome_unknown,
            delay_ms,
            duration_ms,
        } => Event::StepRetrying {
            error,
            outcome_unknown,
            delay_ms,
            duration_ms,
        },
        RecordKind::CompensationStarted {} => Event::CompensationStarted {},
        RecordKind::CompensationSucceeded { duration_ms } => {
            Event::CompensationSucceeded { duration_ms }
        }
        RecordKind::CompensationFailed {
            error,
            will_retry,
            delay_ms,
            duration_ms,
        } => Event::CompensationFailed {
            error,
            will_retry,
            delay_ms,
            duration_ms,
        },
        RecordKind::SagaCompleted {} => Event::SagaCompleted {},
        RecordKind::SagaCompensated {} => Event::SagaCompensated {},
        RecordKind::SagaStuck { step, error } => Event::SagaStuck { step, error },
        RecordKind::SagaResumed {} => Event::SagaResumed {},
    }
}

/// The engine's outcome of a failed action as the API's.
fn step_outcome(outcome: saga_engine::StepOutcome) -> StepOutcome {
    match outcome {
        saga_engine::StepOutcome::Failed => StepOutcome::Failed,
        saga_engine::StepOutcome::Unknown => StepOutcome::Unknown,
    }
}

/// The engine's saga status as the API's saga state.
pub fn saga_state(status: SagaStatus) -> SagaState {
    match status {
        SagaStatus::Running => SagaState::Running,
        SagaStatus::Compensating => SagaState::Compensating,
        SagaStatus::Completed => SagaState::Completed,
        SagaStatus::Compensated => SagaState::Compensated,
        SagaStatus::Stuck => SagaState::Stuck,
    }
}

/// A saga id, or a 404. A 404 never repeats the id asked for: a path can hold anything, and a
/// client knows what it asked.
fn parse_saga_id(id: &str) -> Result<SagaId, ApiError> {
    id.parse()
        .map_err(|_| ApiError::NotFound("there is no saga with that id".into()))
}

/// `GET /api/sagas?status=&limit=&before=`: recent sagas, newest first, [`DEFAULT_PAGE`] of
/// them unless `limit` (1 to [`MAX_PAGE`]) says otherwise; `before=<saga_id>` gives the page
/// after that saga (pass the last one of a page to read the next). In [`LOG_POSITION`] the
/// log position read *before* the list: every record up to it is committed, so the list
/// shows it, and a stream resumed after it brings every later one. A page that fetches the
/// list and then follows `/api/events?after=` that position misses nothing in between (a
/// record after it that the list already shows arrives again, as a change the page already
/// has).
pub async fn list_sagas(
    State(state): State<SharedState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<([(HeaderName, String); 1], Json<Vec<SagaListItem>>), ApiError> {
    let Query(q) = query.map_err(bad_query)?;
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(s.parse::<SagaStatus>().map_err(|_| {
            ApiError::invalid(
                "status",
                "status must be one of running, compensating, completed, compensated, stuck",
            )
        })?),
    };
    let limit = match q.limit.as_deref() {
        None | Some("") => DEFAULT_PAGE,
        Some(l) => l
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=MAX_PAGE).contains(l))
            .ok_or_else(|| {
                ApiError::invalid(
                    "limit",
                    format!(
                        "limit must be a whole number from 1 to {MAX_PAGE}; \
                         read further pages with before=<the last saga_id of a page>"
                    ),
                )
            })?,
    };
    let before = match q.before.as_deref() {
        None | Some("") => None,
        Some(b) => {
            let not_listed =
                || ApiError::invalid("before", "before must be the saga_id of a saga in the list");
            let id: SagaId = b.trim().parse().map_err(|_| not_listed())?;
            state.store().saga(id).await?.ok_or_else(not_listed)?;
            Some(id)
        }
    };
    let position = state.store().last_position().await?;
    let sagas = state.store().list_sagas(status, before, limit).await?;
    let mut logs = row_logs(&state, &sagas).await?;
    let items = sagas
        .into_iter()
        .map(|s| {
            // A saga whose records the read did not bring (none yet) shows none of their
            // fields.
            let log = logs.remove(&s.saga_id).unwrap_or_default();
            list_item(s, log)
        })
        .collect();
    Ok(([(LOG_POSITION, position.to_string())], Json(items)))
}

/// `GET /api/sagas/{id}`: the saga, its steps as its events say, and the events.
pub async fn get_saga(
    State(state): State<SharedState>,
    super::IdPath(id): super::IdPath,
) -> Result<Json<SagaDetail>, ApiError> {
    let saga_id = parse_saga_id(&id)?;
    let summary = state
        .store()
        .saga(saga_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("there is no saga with that id".into()))?;
    let events: Vec<SagaEvent> = state
        .store()
        .saga_records(saga_id, 0)
        .await?
        .iter()
        .map(event)
        .collect();
    let steps: &[&str] = if summary.definition == SAGA_NAME {
        &STEPS
    } else {
        &[]
    };
    let timeline = Timeline::from_events(&id, steps, &events);
    Ok(Json(SagaDetail {
        saga_id: saga_id.to_string(),
        order_id: order_id(&summary.definition, saga_id),
        status: saga_state(summary.status),
        steps: timeline.steps,
        events,
    }))
}

/// `POST /api/sagas/{id}/retry`: a person asks a stuck saga to retry its compensations, once
/// the outage behind it is over. Durable and idempotent: the request is logged once
/// (`saga_resumed`), a repeat answers the same with `resumed: false`, and a restart after the
/// request resumes the saga like any other. A saga that is not stuck, and never was, is a 409.
pub async fn retry_saga(
    State(state): State<SharedState>,
    super::IdPath(id): super::IdPath,
) -> Result<(StatusCode, Json<SagaRetried>), ApiError> {
    let saga_id = parse_saga_id(&id)?;
    let retried = state.engine.retry_stuck(saga_id).await.map_err(|e| match e {
        EngineError::UnknownSaga(_) => ApiError::NotFound("there is no saga with that id".into()),
        EngineError::NotStuck(_, status) => ApiError::Invalid {
            status: StatusCode::CONFLICT,
            message: format!(
                "the saga is {status}, not stuck: only a stuck saga's compensation can be retried"
            ),
            field: None,
        },
        e => ApiError::Engine(e),
    })?;
    // A repeat says where the first retry has got to: still unwinding, or done.
    let status = match retried {
        Retried::Resumed => SagaState::Compensating,
        Retried::Already => match state.store().saga(saga_id).await? {
            Some(summary) => saga_state(summary.status),
            None => SagaState::Compensating,
        },
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(SagaRetried {
            saga_id: saga_id.to_string(),
            status,
            resumed: retried == Retried::Resumed,
            events_url: format!("/api/sagas/{saga_id}/events"),
        }),
    ))
}

/// A number where a stream should resume, or a 400 saying what `field` must be.
fn resume_point(field: &str, value: &str, must_be: &str) -> Result<i64, ApiError> {
    value
        .trim()
        .parse()
        .map_err(|_| ApiError::invalid(field, format!("{field} must be a number, {must_be}")))
}

fn last_event_id(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| resume_point("Last-Event-ID", v, "the id of the last event received"))
        .transpose()
}

/// `GET /api/sagas/{id}/events`: history, then live; `id` is `seq`; ends after the final event.
/// Resumed past the end of a finished saga, it answers 204 No Content at once.
pub async fn saga_events(
    State(state): State<SharedState>,
    super::IdPath(id): super::IdPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let saga_id = parse_saga_id(&id)?;
    let Some(summary) = state.store().saga(saga_id).await? else {
        return Err(ApiError::NotFound("there is no saga with that id".into()));
    };
    let after = last_event_id(&headers)?.unwrap_or(0).max(0) as u64;
    // A finished saga resumed at (or past) its last record has nothing more to send. An
    // EventSource reconnects after the stream ends with the terminal event, landing exactly
    // here; 204 is what tells it to stop, where an empty stream would bring it back forever.
    if summary.status.is_finished() && state.store().saga_records(saga_id, after).await?.is_empty()
    {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let guard = state.metrics.sse_subscriber();
    let frames = state
        .engine
        .subscribe(saga_id, after)
        .take_while(|r| std::future::ready(r.is_ok()))
        .filter_map(move |r| {
            let _held = &guard;
            std::future::ready(r.ok().map(|rec| sse::frame(rec.seq as i64, &event(&rec))))
        })
        .take_until(state.shutdown_signal());
    Ok(sse::response(frames))
}

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    after: Option<String>,
}

/// `GET /api/events`: every saga's events, live. Here `id` is the event's position in the whole
/// log (a per-saga `seq` cannot say where a stream of all sagas stopped), so `Last-Event-ID`
/// resumes this stream too. `?after=N` starts it after position N, the way a page that has
/// just read the list asks for what came since (see [`list_sagas`]); a browser's
/// `EventSource` cannot send `Last-Event-ID` on its first request, only when it reconnects,
/// and then that header, the later position, wins. Frames come from one shared rendering
/// (see [`sse::EventsFeed`]).
pub async fn all_events(
    State(state): State<SharedState>,
    query: Result<Query<EventsQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(bad_query)?;
    let after = match last_event_id(&headers)? {
        Some(id) => Some(id),
        None => q
            .after
            .as_deref()
            .map(|a| {
                resume_point(
                    "after",
                    a,
                    "a log position such as an event's id or the list's x-log-position",
                )
            })
            .transpose()?,
    };
    Ok(sse::response(state.events.frames(after)))
}
