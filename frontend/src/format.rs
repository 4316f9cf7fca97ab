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
        format!("{ms:.0} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}
