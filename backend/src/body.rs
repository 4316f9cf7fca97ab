//! Reading a JSON request body, for the API and the services alike: the `Content-Type` parsed
//! as a media type, the whole body one JSON document, and refusals that say *where* the body is
//! wrong without ever repeating what it holds.
//!
//! serde's own messages quote the offending value (`invalid type: integer `4242424242424242`,
//! expected a string`), so a card number sent as a number, or typed into the wrong field, would
//! come back in the response and go into any log of it. Here a refusal is written from the
//! error's kind, its path and the *expected* shape (which comes from our types, not the input);
//! names taken from the input (map keys) are repeated only if they cannot be a card number or a
//! security code (see [`repeatable`]).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;

use crate::error::ApiError;

/// How long a request body may take to arrive, once its head has.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A request body read as one JSON document of type `T`; refused as [`ApiError::Invalid`] with
/// 415 (not JSON), 413 (too large), 408 (too slow: [`BODY_TIMEOUT`]), 400 (not one well-formed JSON document) or 422 (well-formed,
/// but not a `T`), `field` naming the path of what is wrong.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::Invalid {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                message: "send the body as JSON, with Content-Type: application/json".into(),
                field: None,
            });
        }
        // The head came within the connection's head timeout; the body has this long. Without
        // it, a body that never ends would hold its connection (and a slot under the cap) for
        // good. On a refusal the unread rest is not waited for: the connection closes.
        let read = tokio::time::timeout(BODY_TIMEOUT, Bytes::from_request(req, state));
        let read = read.await.map_err(|_| ApiError::Invalid {
            status: StatusCode::REQUEST_TIMEOUT,
            message: format!(
                "the request body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ),
            field: None,
        })?;
        let bytes = read.map_err(|rejection| {
            let status = rejection.status();
            let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
                format!(
                    "the body is larger than {} KiB",
                    crate::app::MAX_BODY_BYTES / 1024
                )
            } else {
                "the request body could not be read".to_string()
            };
            ApiError::Invalid {
                status,
                message,
                field: None,
            }
        })?;
        parse(&bytes).map(JsonBody)
    }
}

/// `application/json`, or a `+json` type (as axum's `Json` takes), whatever the case of its
/// letters and whatever parameters follow (`; charset=utf-8`). A prefix match would take
/// `application/jsonx`; a case-sensitive one would refuse `Application/JSON`.
pub fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<mime::Mime>().ok())
        .is_some_and(|m| {
            m.type_() == mime::APPLICATION
                && (m.subtype() == mime::JSON || m.suffix() == Some(mime::JSON))
        })
}

/// The body as one `T`: nothing but white space may follow the document, so trailing garbage
/// or a second document is refused rather than silently dropped.
///
/// Read in two passes, JSON first and then `T` from it, so that well-formed JSON of the wrong
/// shape is always a 422 with a path: read straight from the text, serde_json reports some
/// shape errors as syntax (a number where an enum's name should be is "expected value").
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let json = serde_json::Value::deserialize(&mut de).map_err(malformed)?;
    de.end().map_err(|_| ApiError::Invalid {
        status: StatusCode::BAD_REQUEST,
        message: "the body must be one JSON document with nothing after it".into(),
        field: None,
    })?;
    serde_path_to_error::deserialize(json).map_err(wrong_shape)
}

/// True if `name`, taken from the input, may be repeated in a refusal: a short name of
/// letters, digits, `_` and `-` with at most two digits, so never a card number nor a
/// security code (three or four digits).
pub fn repeatable(name: &str) -> bool {
    name.len() <= 40
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && name.chars().filter(char::is_ascii_digit).count() < 3
}

/// Well-formed JSON that is not a `T`: 422, with the path of what is wrong and what was
/// expected there.
fn wrong_shape(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let mut path = field_path(e.path());
    let shape = Shape::of(&e.into_inner());
    if let Shape::Missing(name) | Shape::Twice(name) = &shape {
        path.push(name.to_string());
    }
    let field = (!path.is_empty()).then(|| path.join("."));
    let what = field.as_deref().unwrap_or("the body");
    let message = match shape {
        Shape::Expected(expected) => format!("{what} must be {expected}"),
        Shape::Missing(_) => format!("{what} is missing"),
        Shape::Twice(_) => format!("{what} is given twice"),
        Shape::Other => format!("{what} is not what was expected"),
    };
    ApiError::Invalid {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        message,
        field,
    }
}

/// Not JSON: 400. serde_json's syntax messages name the rule broken ("expected `:`", "invalid
/// escape") and the position, never the text.
fn malformed(e: serde_json::Error) -> ApiError {
    let message = match e.classify() {
        serde_json::error::Category::Eof => {
            "the body is empty or ends before its JSON does".to_string()
        }
        _ => format!(
            "the body is not valid JSON: {} (line {}, column {})",
            without_position(&e),
            e.line(),
            e.column()
        ),
    };
    ApiError::Invalid {
        status: StatusCode::BAD_REQUEST,
        message,
        field: None,
    }
}

/// The path as field names: `payment.card_number`, `items[0].qty`. A key that is not
/// [`repeatable`] (it came from the input: a map's key) is shown as `?`.
fn field_path(path: &serde_path_to_error::Path) -> Vec<String> {
    let mut parts: Vec<String> = Vec::new();
    for segment in path {
        match segment {
            Segment::Seq { index } => match parts.last_mut() {
                Some(last) => last.push_str(&format!("[{index}]")),
                None => parts.push(format!("[{index}]")),
            },
            Segment::Map { key } | Segment::Enum { variant: key } if repeatable(key) => {
                parts.push(key.clone())
            }
            Segment::Map { .. } | Segment::Enum { .. } | Segment::Unknown => parts.push("?".into()),
        }
    }
    parts
}

/// What serde says is wrong, keeping only the parts that come from our types.
enum Shape {
    /// Wrong type, value or length, or an unknown variant: what was expected.
    Expected(String),
    /// A required field that is not there.
    Missing(String),
    /// A field given twice.
    Twice(String),
    /// Anything else: said without detail.
    Other,
}

impl Shape {
    /// serde's messages follow fixed forms (`serde::de::Error`'s provided methods): the
    /// value found comes first and the expected shape last, after `, expected `. So the text is
    /// cut at the *last* `, expected ` (a value could hold those words itself), and field names
    /// in backquotes are ours (`missing_field` and `duplicate_field` take `&'static str`).
    fn of(e: &serde_json::Error) -> Shape {
        let message = without_position(e);
        let quoted = |rest: &str| {
            rest.strip_prefix('`')
                .and_then(|r| r.strip_suffix('`'))
                .filter(|name| repeatable(name))
                .map(str::to_string)
        };
        if let Some(rest) = message.strip_prefix("missing field ") {
            return quoted(rest).map_or(Shape::Other, Shape::Missing);
        }
        if let Some(rest) = message.strip_prefix("duplicate field ") {
            return quoted(rest).map_or(Shape::Other, Shape::Twice);
        }
        let has_expectation = [
            "invalid type: ",
            "invalid value: ",
            "invalid length ",
            "unknown variant ",
        ]
        .iter()
        .any(|prefix| message.starts_with(prefix));
        match message.rsplit_once(", expected ") {
            Some((_, expected))
                if has_expectation && expected.chars().filter(char::is_ascii_digit).count() < 3 =>
            {
                Shape::Expected(expected.to_string())
            }
            _ => Shape::Other,
        }
    }
}

/// serde_json's message without the ` at line L column C` it appends (cut exactly, since the
/// message before it may quote the input, which could hold those words too).
fn without_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match text.strip_suffix(&suffix) {
        Some(message) => message.to_string(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use shared::OrderRequest as Order;

    use super::*;

    fn good() -> serde_json::Value {
        json!({
            "customer": {"name": "Ada Lovelace", "email": "ada@example.com"},
            "address": {"line1": "12 Analytical Row", "city": "London", "postal_code": "N1 9GU", "country": "GB"},
            "delivery": "standard",
            "items": [{"sku": "KB-01", "qty": 1}],
            "payment": {"method": "card", "card_number": "4242424242424242", "expiry": "12/30", "cvc": "123"},
            "faults": {},
        })
    }

    fn refused(body: &str) -> (StatusCode, String, Option<String>) {
        match parse::<Order>(body.as_bytes()) {
            Ok(order) => panic!("accepted: {order:?}"),
            Err(ApiError::Invalid {
                status,
                message,
                field,
            }) => (status, message, field),
            Err(other) => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_card_number_anywhere_is_never_repeated() {
        let card = json!(4242424242424242u64);
        let mut cases = Vec::new();
        for (pointer, value) in [
            ("/payment/card_number", card.clone()),
            ("/payment/cvc", json!(123)),
            ("/payment/cvc", json!(1234.5)),
            ("/payment/method", json!("4242424242424242")),
            ("/payment", json!("4242424242424242")),
            ("/payment", card.clone()),
            ("/delivery", json!("4242424242424242")),
            ("/delivery", card.clone()),
            ("/items/0/sku", card.clone()),
            ("/items/0/qty", json!("4242424242424242")),
            (
                "/faults",
                json!({"4242424242424242": {"kind": "transient", "times": -4242424242424242i64}}),
            ),
            (
                "/faults",
                json!({"4242424242424242": {"kind": "4242424242424242"}}),
            ),
            (
                "/payment/method",
                json!("a, expected 4242424242424242 at line 9 column 1"),
            ),
        ] {
            let mut body = good();
            *body
                .pointer_mut(pointer)
                .unwrap_or_else(|| panic!("{pointer}")) = value;
            cases.push((pointer, body.to_string()));
        }
        for (pointer, body) in cases {
            let (status, message, field) = refused(&body);
            assert_eq!(
                status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{pointer}: {message}"
            );
            let shown = format!("{message} {field:?}");
            for secret in ["4242", "123"] {
                assert!(!shown.contains(secret), "{pointer}: {shown}");
            }
        }
    }

    #[test]
    fn field_is_the_full_path_and_the_message_says_what_was_expected() {
        let mut body = good();
        body["payment"]["card_number"] = json!(4242424242424242u64);
        let (_, message, field) = refused(&body.to_string());
        assert_eq!(field.as_deref(), Some("payment.card_number"));
        assert_eq!(message, "payment.card_number must be a string");

        body = good();
        body["items"][0]["qty"] = json!("two");
        let (_, _, field) = refused(&body.to_string());
        assert_eq!(field.as_deref(), Some("items[0].qty"));

        body = good();
        body["payment"].as_object_mut().unwrap().remove("cvc");
        let (_, message, field) = refused(&body.to_string());
        assert_eq!(field.as_deref(), Some("payment.cvc"));
        assert_eq!(message, "payment.cvc is missing");

        body = good();
        body["payment"]["method"] = json!("cash");
        let (_, message, field) = refused(&body.to_string());
        assert_eq!(field.as_deref(), Some("payment.method"));
        assert!(message.contains("`card` or `wallet`"), "{message}");

        body = good();
        body["faults"] = json!({"ship_order": {"kind": "transient", "times": "x"}});
        let (_, _, field) = refused(&body.to_string());
        assert_eq!(field.as_deref(), Some("faults.ship_order.times"));

        body = good();
        body["faults"] = json!({"ship_order": {"kind": "delay"}});
        let (_, message, field) = refused(&body.to_string());
        assert_eq!(field.as_deref(), Some("faults.ship_order.ms"));
        assert_eq!(message, "faults.ship_order.ms is missing");

        body = good();
        body["faults"] = json!({"4242424242424242": {"kind": "transient", "times": "x"}});
        let (_, _, field) = refused(&body.to_string());
        assert_eq!(field.as_deref(), Some("faults.?.times"));

        let (_, _, field) = refused("[]");
        assert_eq!(field, None);
    }

    #[test]
    fn one_document_and_nothing_after_it() {
        let body = good().to_string();
        assert!(parse::<Order>(body.as_bytes()).is_ok());
        assert!(parse::<Order>(format!(" {body}\r\n ").as_bytes()).is_ok());
        for bad in [
            format!("{body}x"),
            format!("{body}{body}"),
            format!("{body} {{}}"),
            format!("{body},"),
            "{nope".to_string(),
            String::new(),
        ] {
            let (status, message, field) = refused(&bad);
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}: {message}");
            assert_eq!(field, None);
        }
    }

    #[test]
    fn media_types_are_parsed() {
        let with = |ct: &str| {
            let mut headers = HeaderMap::new();
            if let Ok(v) = ct.parse() {
                headers.insert(header::CONTENT_TYPE, v);
            }
            is_json(&headers)
        };
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "APPLICATION/JSON;charset=UTF-8",
            "application/merge-patch+json",
        ] {
            assert!(with(ok), "{ok}");
        }
        for refused in [
            "application/jsonx",
            "application/json-seq",
            "text/json",
            "text/plain",
            "application",
            "",
        ] {
            assert!(!with(refused), "{refused}");
        }
    }

    #[test]
    fn only_names_that_cannot_be_card_data_are_repeated() {
        for ok in ["line1", "ship_order", "KB-01", "card_number"] {
            assert!(repeatable(ok), "{ok}");
        }
        for secret in [
            "123",
            "4242424242424242",
            "4242 4242",
            "a1b2c3",
            &"x".repeat(41),
        ] {
            assert!(!repeatable(secret), "{secret}");
        }
    }
}
