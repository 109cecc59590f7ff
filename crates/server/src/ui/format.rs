//! How pages write times, durations and JSON. Times are UTC unless a page says otherwise
//! (an event's schedule preview uses the event's time zone).

use chrono::{TimeZone, Utc};
use serde_json::Value;

/// `2026-12-02 01:10:54 UTC`; empty for none.
pub fn ts(ms: Option<i64>) -> String {
    ms.and_then(|ms| Utc.timestamp_millis_opt(ms).single())
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// `12-02 01:10:54` (UTC), for narrow tables.
pub fn short(ms: Option<i64>) -> String {
    ms.and_then(|ms| Utc.timestamp_millis_opt(ms).single())
        .map(|t| t.format("%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// RFC 3339 for `<time datetime>`.
pub fn iso(ms: Option<i64>) -> String {
    ms.map(cronium_core::clock::rfc3339).unwrap_or_default()
}

/// The instant in time zone `tz` (`Europe/Berlin`), with its offset; UTC when the zone is
/// unknown.
pub fn ts_in(ms: i64, tz: &str) -> String {
    let Some(t) = Utc.timestamp_millis_opt(ms).single() else {
        return String::new();
    };
    match tz.parse::<chrono_tz::Tz>() {
        Ok(zone) => t
            .with_timezone(&zone)
            .format("%a %Y-%m-%d %H:%M:%S %Z (%:z)")
            .to_string(),
        Err(_) => t.format("%a %Y-%m-%d %H:%M:%S UTC").to_string(),
    }
}

/// `850 ms`, `12.3 s`, `4 min 05 s`, `2 h 03 min`; empty for none.
pub fn duration(ms: Option<i64>) -> String {
    let Some(ms) = ms.filter(|m| *m >= 0) else {
        return String::new();
    };
    match ms {
        0..=999 => format!("{ms} ms"),
        1000..=59_999 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{} min {:02} s", ms / 60_000, (ms / 1000) % 60),
        _ => format!("{} h {:02} min", ms / 3_600_000, (ms / 60_000) % 60),
    }
}

/// Between two instants, or since `start` when `end` is none and `now` is given.
pub fn between(start: Option<i64>, end: Option<i64>) -> String {
    match (start, end) {
        (Some(s), Some(e)) => duration(Some(e - s)),
        _ => String::new(),
    }
}

/// Indented JSON; empty for null and `{}`.
pub fn json(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Object(m) if m.is_empty() => String::new(),
        v => serde_json::to_string_pretty(v).unwrap_or_default(),
    }
}

/// An execution's CPU time: `243 ms` (user + system), empty when not measured.
pub fn cpu(u: &cronium_store::ExecutionUsage) -> String {
    match (u.cpu_user_ms, u.cpu_system_ms) {
        (None, None) => String::new(),
        (user, sys) => duration(Some(user.unwrap_or(0) + sys.unwrap_or(0))),
    }
}

/// `50.2 MiB`; empty for none.
pub fn bytes(b: Option<i64>) -> String {
    b.filter(|b| *b >= 0)
        .map(cronium_docker::format_bytes)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(Some(850)), "850 ms");
        assert_eq!(duration(Some(12_340)), "12.3 s");
        assert_eq!(duration(Some(245_000)), "4 min 05 s");
        assert_eq!(duration(Some(7_380_000)), "2 h 03 min");
        assert_eq!(duration(None), "");
    }

    #[test]
    fn instants_in_a_zone() {
        // 2026-01-01T00:00:00Z is 01:00 in Berlin (winter).
        let ms = 1_767_225_600_000;
        assert_eq!(
            ts_in(ms, "Europe/Berlin"),
            "Thu 2026-01-01 01:00:00 CET (+01:00)"
        );
        assert_eq!(ts(Some(ms)), "2026-01-01 00:00:00 UTC");
    }
}
