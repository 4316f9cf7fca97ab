//! Small display helpers.

/// `€89.99` style price from cents.
pub fn money(cents: i64) -> String {
    format!("€{}.{:02}", cents / 100, (cents % 100).abs())
}

/// Milliseconds since the epoch of an RFC 3339 timestamp, as the browser parses it.
pub fn ms(at: &str) -> f64 {
    js_sys::Date::parse(at)
}

pub fn now_ms() -> f64 {
    js_sys::Date::now()
}

/// `12:00:00.123` from an RFC 3339 timestamp.
pub fn clock(at: &str) -> String {
    at.get(11..23).unwrap_or(at).to_string()
}

pub fn duration(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{} ms", ms.round() as i64)
    } else {
        format!("{} s", hundredths((ms / 10.0).round() as i64))
    }
}

/// `12.34` from 1234: two decimals with integer formatting only (formatting a float pulls
/// the float-printing code into the page).
pub fn hundredths(n: i64) -> String {
    let sign = if n < 0 { "-" } else { "" };
    let n = n.abs();
    format!("{sign}{}.{:02}", n / 100, n % 100)
}

/// A saga's id, short: its last 8 hex digits. The first ones of a UUIDv7 are its timestamp,
/// the same for every saga started in the same few seconds; the last are random.
pub fn short_id(saga_id: &str) -> String {
    let start = saga_id.len().saturating_sub(8);
    saga_id.get(start..).unwrap_or(saga_id).to_string()
}
