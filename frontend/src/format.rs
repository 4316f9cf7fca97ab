//! Small display helpers.

/// `€89.99` style price from cents.
pub fn money(cents: i64) -> String {
    format!("€{}.{:02}", cents / 100, (cents % 100).abs())
}

/// An amount in cents of `currency` (ISO 4217): `€89.99` for euros, `89.99 USD` otherwise.
pub fn money_in(cents: i64, currency: &str) -> String {
    match currency {
        "EUR" => money(cents),
        other => format!("{} {other}", hundredths(cents)),
    }
}

/// Milliseconds since the epoch of an RFC 3339 timestamp, as the browser parses it.
pub fn ms(at: &str) -> f64 {
    js_sys::Date::parse(at)
}

pub fn now_ms() -> f64 {
    js_sys::Date::now()
}

/// `12:00:00.123` from an RFC 3339 timestamp, in the browser's local time (the UTC digits of
/// the timestamp if the browser cannot read it).
pub fn clock(at: &str) -> String {
    let then = js_sys::Date::new(&leptos::wasm_bindgen::JsValue::from_f64(ms(at)));
    if then.get_time().is_nan() {
        return at.get(11..23).unwrap_or(at).to_string();
    }
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        then.get_hours(),
        then.get_minutes(),
        then.get_seconds(),
        then.get_milliseconds()
    )
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

/// The browser's local time of an RFC 3339 timestamp: `14:03:07` today, `6 Dec 14:03:07`
/// another day.
pub fn local_time(at: &str) -> String {
    let then = js_sys::Date::new(&leptos::wasm_bindgen::JsValue::from_f64(ms(at)));
    if then.get_time().is_nan() {
        return clock(at);
    }
    let time = format!(
        "{:02}:{:02}:{:02}",
        then.get_hours(),
        then.get_minutes(),
        then.get_seconds()
    );
    let today = js_sys::Date::new_0();
    let same_day = then.get_full_year() == today.get_full_year()
        && then.get_month() == today.get_month()
        && then.get_date() == today.get_date();
    if same_day {
        time
    } else {
        let month = MONTHS.get(then.get_month() as usize).copied().unwrap_or("");
        format!("{} {month} {time}", then.get_date())
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// How long ago something was, `ms` milliseconds back: `just now`, `40 s ago`, `2 min ago`,
/// `3 h ago`, `2 d ago`.
pub fn ago(ms: f64) -> String {
    let s = (ms / 1000.0).floor() as i64;
    match s {
        i64::MIN..5 => "just now".into(),
        5..60 => format!("{s} s ago"),
        60..3600 => format!("{} min ago", s / 60),
        3600..86400 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86400),
    }
}

/// A span of time as a person reads it: `420 ms`, `1.25 s`, `42 s`, `3 min 5 s`, `2 h 5 min`.
pub fn elapsed(ms: f64) -> String {
    let s = (ms / 1000.0).floor() as i64;
    match s {
        i64::MIN..10 => duration(ms.max(0.0)),
        10..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}
