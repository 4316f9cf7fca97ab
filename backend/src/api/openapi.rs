//! `GET /api/openapi.json`: the OpenAPI 3.1 document of the JSON API (DESIGN.md §3).
//!
//! The bodies' schemas are derived from the very types the handlers serialise and parse
//! (`shared`'s `ToSchema` derives, behind its `openapi` feature), so a field added to a body
//! shows up here by itself. The operations are declared below, one empty function each, named
//! after its handler: utoipa reads the attribute and nobody calls the function, which keeps the
//! handlers free of documentation and the whole contract, with every status an operation can
//! answer, in one file.
//!
//! What must stay true: the document describes what the server *does*, not what it should.
//! `cargo xtask schemathesis` fuzzes the server against it: any response whose status, media
//! type or body the document does not allow, and any request that breaks the document but is
//! accepted, fails the run. A rule the validation enforces and a JSON Schema keyword can say
//! (a pattern, a bound, an enumeration) is written here; the rest (the Luhn check, a SKU that
//! must be in the catalog, an expiry not in the past) is a 422 the document lists.

use axum::Json;
use serde_json::json;
use shared::{ApiErrorBody, CatalogItem, OrderAccepted, OrderRequest, OrderView, SagaDetail};
use shared::{STEPS, SagaListItem, SagaRetried, SagaState, StepState};
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::openapi::RefOr;
use utoipa::openapi::path::Parameter;
use utoipa::openapi::schema::{
    AdditionalProperties, Object, ObjectBuilder, OneOfBuilder, Ref, Schema, SchemaType, Type,
};
use utoipa::{Modify, OpenApi};

/// `GET /api/openapi.json`.
pub async fn document() -> Json<OpenApiDoc> {
    Json(ApiDoc::openapi())
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Saga shop",
        description = "A shop whose every purchase is a saga over four services (orders, billing, \
            payments, shipping). `POST /api/orders` starts one; the rest reads sagas, orders and \
            their events. Every error is `{\"error\": \"<a sentence>\", \"field\": \"<input at fault>\" | null}`."
    ),
    paths(
        operations::catalog,
        operations::place_order,
        operations::get_order,
        operations::list_sagas,
        operations::get_saga,
        operations::saga_events,
        operations::retry_saga,
        operations::all_events,
    ),
    modifiers(&Rules),
    tags(
        (name = "orders", description = "The catalog, placing an order, what each service holds for it."),
        (name = "sagas", description = "The sagas and their events, as lists, details and live streams."),
    )
)]
pub struct ApiDoc;

/// The free-text fields of an order and their longest length (`shared::rules`): the server
/// trims them before counting and refuses an empty one or one with a control character.
const TEXT_FIELDS: [(&str, &str, usize); 5] = [
    ("Customer", "name", 100),
    ("Address", "line1", 200),
    ("Address", "city", 100),
    ("Address", "postal_code", 20),
    ("PaymentInput", "wallet_id", 64),
];

/// What the validation enforces beyond the Rust types, where no derive attribute can say it
/// (a computed pattern, the values of a string that is an enumeration on the server side, the
/// fixed keys of `faults`).
struct Rules;

impl Modify for Rules {
    fn modify(&self, doc: &mut OpenApiDoc) {
        if let Some(components) = doc.components.as_mut() {
            let schemas = &mut components.schemas;
            for (schema, field, max) in TEXT_FIELDS {
                edit_property(schemas.get_mut(schema), field, |p| {
                    p.pattern = Some(text_pattern(max));
                });
            }
            for (schema, field, values) in enumerations() {
                edit_property(schemas.get_mut(schema), field, |p| {
                    p.enum_values = Some(values.iter().map(|v| json!(v)).collect());
                });
            }
            if let Some(RefOr::T(Schema::Object(order))) = schemas.get_mut("OrderRequest") {
                order.properties.insert("faults".into(), faults_schema());
            }
        }
        for (path, parameter) in parameters(doc) {
            parameter_rules(path, parameter);
        }
    }
}

fn saga_statuses() -> Vec<&'static str> {
    SagaState::LOGGED.iter().map(|s| s.as_str()).collect()
}

/// The strings of the bodies that only ever hold one of a few values.
fn enumerations() -> [(&'static str, &'static str, Vec<&'static str>); 9] {
    let step_statuses = StepState::ALL.iter().map(|s| s.as_str()).collect();
    [
        (
            "OrderView",
            "status",
            vec!["pending", "confirmed", "cancelled"],
        ),
        ("InvoiceView", "status", vec!["issued", "void"]),
        ("PaymentView", "status", vec!["captured", "refunded"]),
        ("ShipmentView", "status", vec!["scheduled", "cancelled"]),
        ("SagaListItem", "status", saga_statuses()),
        ("SagaDetail", "status", saga_statuses()),
        ("StepView", "status", step_statuses),
        ("StepView", "step", STEPS.to_vec()),
        ("SagaFailure", "step", STEPS.to_vec()),
    ]
}

/// utoipa gives an `Option` parameter the type `[T, "null"]`, but a parameter is left out by
/// leaving it out, never sent as null; and the list reads an empty value (`?status=`) as no
/// value at all.
fn parameter_rules(path: &str, parameter: &mut Parameter) {
    let Some(RefOr::T(Schema::Object(schema))) = parameter.schema.as_mut() else {
        return;
    };
    if let SchemaType::Array(types) = &schema.schema_type {
        let kept: Vec<Type> = types
            .iter()
            .filter(|t| **t != Type::Null)
            .cloned()
            .collect();
        if let [only] = kept.as_slice() {
            schema.schema_type = SchemaType::Type(only.clone());
        }
    }
    if path != "/api/sagas" {
        return;
    }
    if parameter.name == "status" {
        schema.enum_values = Some(saga_statuses().iter().map(|v| json!(v)).collect());
    }
    if let Some(given) = parameter.schema.take() {
        let empty = ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(Some(0));
        let one_of = OneOfBuilder::new().item(given).item(empty).build();
        parameter.schema = Some(RefOr::T(Schema::OneOf(one_of)));
    }
}

/// 1 to `max` characters once surrounding whitespace is trimmed, none of them a control
/// character: exactly `shared::rules::text`.
fn text_pattern(max: usize) -> String {
    let visible = r"[^\s\x00-\x1f\x7f-\x9f]";
    let printable = r"[^\x00-\x1f\x7f-\x9f]";
    format!(
        r"^\s*{visible}(?:{printable}{{0,{}}}{visible})?\s*$",
        max - 2
    )
}

/// `faults`: at most one fault per step, keyed by the step's name; any other key is a 422.
fn faults_schema() -> RefOr<Schema> {
    let mut faults = ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(
            "Faults to inject, by step name (DESIGN.md §4); optional.",
        ))
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    for step in STEPS {
        faults = faults.property(step, Ref::from_schema_name("Fault"));
    }
    RefOr::T(Schema::Object(faults.build()))
}

/// Apply `edit` to the schema of property `field` of a component, looking through the
/// variants of an enum (`oneOf`) for the one that has it.
fn edit_property(schema: Option<&mut RefOr<Schema>>, field: &str, edit: impl Fn(&mut Object)) {
    fn visit(schema: &mut RefOr<Schema>, field: &str, edit: &dyn Fn(&mut Object)) {
        match schema {
            RefOr::T(Schema::Object(object)) => {
                if let Some(RefOr::T(Schema::Object(property))) = object.properties.get_mut(field) {
                    edit(property);
                }
            }
            RefOr::T(Schema::OneOf(one_of)) => {
                for variant in &mut one_of.items {
                    visit(variant, field, edit);
                }
            }
            _ => {}
        }
    }
    if let Some(schema) = schema {
        visit(schema, field, &edit);
    }
}

/// Every parameter of every operation, with the operation's path.
fn parameters(doc: &mut OpenApiDoc) -> impl Iterator<Item = (&str, &mut Parameter)> {
    doc.paths.paths.iter_mut().flat_map(|(path, item)| {
        [&mut item.get, &mut item.post]
            .into_iter()
            .flatten()
            .flat_map(|op| op.parameters.iter_mut().flatten())
            .map(move |p| (path.as_str(), p))
    })
}

/// The operations, each an empty function carrying its description; the handlers are in
/// `orders.rs` and `sagas.rs`.
#[allow(dead_code)]
mod operations {
    use super::*;

    const UNAVAILABLE: &str =
        "A service the answer needs is not answering; nothing was changed, try again.";
    const NOT_FOUND: &str = "No such saga (an id that is not a UUID is unknown too).";

    /// The products on sale and their stock.
    #[utoipa::path(get, path = "/api/catalog", tag = "orders",
        responses(
            (status = 200, description = "Every product.", body = [CatalogItem]),
            (status = 503, description = UNAVAILABLE, body = ApiErrorBody),
        ))]
    fn catalog() {}

    /// Place an order: start its purchase saga.
    ///
    /// The order is checked before anything starts; a refused order starts no saga. What
    /// happens afterwards (stock runs out, the card is declined, the country is not served) is
    /// the saga's business: follow it at `events_url`.
    #[utoipa::path(post, path = "/api/orders", tag = "orders",
        params(
            ("Idempotency-Key" = Option<String>, Header, max_length = 200,
                description = "Retrying with the same key and the same order returns the same saga \
                    instead of starting another; the same key with a different order is a 422. \
                    At most 200 characters once trimmed."),
        ),
        request_body(content = OrderRequest, content_type = "application/json"),
        responses(
            (status = 202, description = "The saga started (or had started, for a repeated Idempotency-Key).",
                body = OrderAccepted,
                headers(("Location" = String, description = "`/api/sagas/{saga_id}`"))),
            (status = 400, description = "The body is not JSON, or the Idempotency-Key is too long.", body = ApiErrorBody),
            (status = 409, description = "An order with this Idempotency-Key is being placed at this moment by \
                another node; sending it again gives its answer.", body = ApiErrorBody),
            (status = 408, description = "The body did not arrive within 10 s of the request's head.", body = ApiErrorBody),
            (status = 413, description = "The body is larger than 1 MiB.", body = ApiErrorBody),
            (status = 415, description = "The body is not sent as `application/json`.", body = ApiErrorBody),
            (status = 422, description = "The order is not a valid order: a field is missing, of the wrong type or \
                breaks a rule (unknown SKU, card failing the Luhn check, expired card, crash fault on a \
                server that does not allow it, an Idempotency-Key used for another order); `field` says which.",
                body = ApiErrorBody),
            (status = 503, description = UNAVAILABLE, body = ApiErrorBody),
        ))]
    fn place_order() {}

    /// What each service holds for an order (`null` where a service holds nothing).
    #[utoipa::path(get, path = "/api/orders/{order_id}", tag = "orders",
        params(("order_id" = String, Path, pattern = "^ord_[0-9a-f]{32}$",
            description = "The `order_id` that `POST /api/orders` answered.")),
        responses(
            (status = 200, description = "The order as each service sees it.", body = OrderView),
            (status = 404, description = "No such order.", body = ApiErrorBody),
            (status = 503, description = UNAVAILABLE, body = ApiErrorBody),
        ))]
    fn get_order() {}

    /// Recent sagas, newest first.
    #[utoipa::path(get, path = "/api/sagas", tag = "sagas",
        params(
            ("status" = Option<String>, Query, description = "Only the sagas in this status; empty for all."),
            ("limit" = Option<u32>, Query, minimum = 1, maximum = 500,
                description = "At most this many sagas (50 when absent); more than 500 is refused, read further pages with `before`."),
            ("before" = Option<String>, Query, format = "uuid",
                description = "The page after this saga: the `saga_id` of the last saga of the previous page \
                    (one that is not listed is refused)."),
        ),
        responses(
            (status = 200, description = "The sagas.", body = [SagaListItem],
                headers(("x-log-position" = i64, description = "The log position the list is current up to: \
                    `/api/events?after=` it brings every later change."))),
            (status = 400, description = "`status`, `limit` or `before` is not one the list accepts; `field` says which.",
                body = ApiErrorBody),
        ))]
    fn list_sagas() {}

    /// A saga: its status, its steps as its events say, and the events.
    #[utoipa::path(get, path = "/api/sagas/{id}", tag = "sagas",
        params(("id" = String, Path, format = "uuid", description = "The saga's id.")),
        responses(
            (status = 200, description = "The saga.", body = SagaDetail),
            (status = 404, description = NOT_FOUND, body = ApiErrorBody),
        ))]
    fn get_saga() {}

    /// A saga's events as server-sent events: its history, then live, ending after the
    /// terminal event (`saga_completed`, `saga_compensated`, `saga_stuck`).
    ///
    /// Each event is `id: <seq>`, `event: <type>`, `data: <SagaEvent as JSON>`.
    #[utoipa::path(get, path = "/api/sagas/{id}/events", tag = "sagas",
        params(
            ("id" = String, Path, format = "uuid", description = "The saga's id."),
            ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this `seq`."),
        ),
        responses(
            (status = 200, description = "The stream.", content_type = "text/event-stream", body = String),
            (status = 204, description = "Resumed at or past the end of a finished saga: nothing more will come \
                (an EventSource stops reconnecting)."),
            (status = 400, description = "Last-Event-ID is not a number.", body = ApiErrorBody),
            (status = 404, description = NOT_FOUND, body = ApiErrorBody),
        ))]
    fn saga_events() {}

    /// Retry a stuck saga's compensations, once the outage behind it is over: the saga unwinds
    /// on from where it stopped (`saga_resumed`, then its compensations). Idempotent.
    #[utoipa::path(post, path = "/api/sagas/{id}/retry", tag = "sagas",
        params(("id" = String, Path, format = "uuid", description = "The saga's id.")),
        responses(
            (status = 202, description = "The saga is unwinding again (`resumed: true`), or had been \
                resumed already (`resumed: false`).", body = SagaRetried),
            (status = 404, description = NOT_FOUND, body = ApiErrorBody),
            (status = 409, description = "The saga is not stuck and never was.", body = ApiErrorBody),
        ))]
    fn retry_saga() {}

    /// Every saga's events as server-sent events, live; the stream does not end.
    ///
    /// Here an event's `id` is its position in the whole log, which `Last-Event-ID` and
    /// `?after=` resume after (the header wins when both are given).
    #[utoipa::path(get, path = "/api/events", tag = "sagas",
        params(
            ("after" = Option<i64>, Query, description = "Start after this log position (e.g. `x-log-position` of `GET /api/sagas`)."),
            ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this log position."),
        ),
        responses(
            (status = 200, description = "The stream.", content_type = "text/event-stream", body = String),
            (status = 400, description = "`after` or Last-Event-ID is not a number.", body = ApiErrorBody),
        ))]
    fn all_events() {}
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn document_json() -> Value {
        serde_json::to_value(ApiDoc::openapi()).unwrap_or_default()
    }

    #[test]
    fn bounds_follow_the_rules() {
        let doc = document_json();
        let schemas = &doc["components"]["schemas"];
        assert_eq!(
            schemas["OrderItem"]["properties"]["qty"]["maximum"],
            json!(shared::rules::MAX_QTY)
        );
        assert_eq!(
            schemas["OrderRequest"]["properties"]["items"]["maxItems"],
            json!(shared::rules::MAX_LINES)
        );
        assert_eq!(
            schemas["Customer"]["properties"]["name"]["pattern"],
            json!(text_pattern(100))
        );
        let faults = &schemas["OrderRequest"]["properties"]["faults"];
        assert_eq!(faults["additionalProperties"], json!(false));
        for step in STEPS {
            assert_eq!(
                faults["properties"][step]["$ref"],
                json!("#/components/schemas/Fault")
            );
        }
    }

    /// A row of the list always has every field; those a saga may not have yet are `null`.
    #[test]
    fn a_list_row_names_its_purchase_fields_and_may_leave_them_null() {
        let doc = document_json();
        let row = &doc["components"]["schemas"]["SagaListItem"];
        let required: Vec<&str> = row["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for field in ["customer", "total_cents", "currency", "failure"] {
            assert!(required.contains(&field), "{field} in {required:?}");
            let schema = row["properties"][field].to_string();
            assert!(schema.contains("null"), "{field} may be null: {schema}");
        }
        let failure = &doc["components"]["schemas"]["SagaFailure"];
        assert_eq!(failure["properties"]["step"]["enum"], json!(STEPS));
        // The nodes are always there, an empty list for a log that names none.
        assert!(required.contains(&"nodes"), "nodes in {required:?}");
        assert_eq!(row["properties"]["nodes"]["type"], json!("array"));
        assert_eq!(row["properties"]["nodes"]["items"]["type"], json!("string"));
    }

    #[test]
    fn every_json_route_is_documented() {
        let doc = document_json();
        let paths: Vec<&str> = doc["paths"]
            .as_object()
            .map(|p| p.keys().map(String::as_str).collect())
            .unwrap_or_default();
        assert_eq!(
            paths,
            [
                "/api/catalog",
                "/api/events",
                "/api/orders",
                "/api/orders/{order_id}",
                "/api/sagas",
                "/api/sagas/{id}",
                "/api/sagas/{id}/events",
                "/api/sagas/{id}/retry",
            ]
        );
    }
}
