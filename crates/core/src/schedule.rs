//! When an event fires: a cron expression (5 or 6 fields, seconds first when 6) in a time zone,
//! a fixed interval (`every 30s`), a one-shot instant (`at 2026-01-01T00:00:00Z`), or nothing
//! (manual runs only).
//!
//! Every next instant is computed from the previous *scheduled* instant, never from the time a
//! run ended, so schedules do not drift.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// A parsed schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    Cron { cron: Box<Cron>, tz: Tz },
    Every(Duration),
    At(DateTime<Utc>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("invalid cron expression `{expr}`: {reason}")]
    Cron { expr: String, reason: String },
    #[error("unknown time zone `{0}` (use an IANA name such as Europe/Berlin or UTC)")]
    TimeZone(String),
    #[error("invalid interval `{0}`: {1}")]
    Interval(String, String),
    #[error("invalid instant `{0}`: use RFC 3339, e.g. 2026-01-31T02:30:00Z")]
    Instant(String),
}

pub fn parse_timezone(name: &str) -> Result<Tz, ScheduleError> {
    Tz::from_str(name.trim()).map_err(|_| ScheduleError::TimeZone(name.to_string()))
}

impl Schedule {
    /// Parses the textual forms: a cron expression, `every 30s` / `every: 30s` / `@every 30s`,
    /// `at 2026-...` / `at: 2026-...`.
    pub fn parse(text: &str, timezone: &str) -> Result<Schedule, ScheduleError> {
        let t = text.trim();
        let keyword = |k: &str| -> Option<String> {
            let rest = t.strip_prefix('@').unwrap_or(t);
            let rest = rest.strip_prefix(k)?;
            let rest = rest.strip_prefix(':').unwrap_or(rest);
            (rest.starts_with(' ') || rest.is_empty()).then(|| rest.trim().to_string())
        };
        if let Some(iv) = keyword("every") {
            let d = crate::duration::HumanDuration::parse(&iv)
                .map_err(|e| ScheduleError::Interval(iv.clone(), e))?
                .0;
            if d < Duration::from_millis(100) {
                return Err(ScheduleError::Interval(iv, "must be at least 100ms".into()));
            }
            return Ok(Schedule::Every(d));
        }
        if let Some(at) = keyword("at") {
            let when = DateTime::parse_from_rfc3339(&at)
                .map_err(|_| ScheduleError::Instant(at.clone()))?;
            return Ok(Schedule::At(when.with_timezone(&Utc)));
        }
        let tz = parse_timezone(timezone)?;
        let fields = t.split_whitespace().count();
        if !(5..=6).contains(&fields) && !t.starts_with('@') {
            return Err(ScheduleError::Cron {
                expr: t.to_string(),
                reason: format!("expected 5 or 6 fields, found {fields}"),
            });
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(t)
            .map_err(|e| ScheduleError::Cron {
                expr: t.to_string(),
                reason: e.to_string(),
            })?;
        // A pattern that never matches (e.g. 30 February) would silently never fire.
        let probe = Utc::now().with_timezone(&tz);
        if cron.find_next_occurrence(&probe, false).is_err() {
            return Err(ScheduleError::Cron {
                expr: t.to_string(),
                reason: "it never matches any date".into(),
            });
        }
        Ok(Schedule::Cron {
            cron: Box::new(cron),
            tz,
        })
    }

    /// The first instant strictly after `after_ms` (epoch ms), or `None` when there is none
    /// (a one-shot instant already past).
    ///
    /// For `every`, instants are aligned on `anchor_ms + k * interval` so that a late firing
    /// does not shift later ones.
    pub fn next_after(&self, after_ms: i64, anchor_ms: i64) -> Option<i64> {
        match self {
            Schedule::Cron { cron, tz } => {
                // Cron instants are whole seconds: search from the start of the current second.
                let whole = after_ms - after_ms.rem_euclid(1000);
                let after = tz.timestamp_millis_opt(whole).single()?;
                cron.find_next_occurrence(&after, false)
                    .ok()
                    .map(|t| t.with_timezone(&Utc).timestamp_millis())
            }
            Schedule::Every(d) => {
                let step = i64::try_from(d.as_millis()).ok()?.max(1);
                if after_ms < anchor_ms {
                    return Some(anchor_ms);
                }
                let k = (after_ms - anchor_ms) / step + 1;
                Some(anchor_ms + k * step)
            }
            Schedule::At(t) => {
                let ms = t.timestamp_millis();
                (ms > after_ms).then_some(ms)
            }
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Cron { cron, tz } => write!(f, "{} ({tz})", cron.pattern),
            Schedule::Every(d) => write!(f, "every {}", humantime::format_duration(*d)),
            Schedule::At(t) => write!(f, "at {}", t.to_rfc3339()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    #[test]
    fn six_field_cron_has_seconds_first() {
        let s = Schedule::parse("*/10 * * * * *", "UTC").unwrap();
        let t = ms("2026-01-01T00:00:05Z");
        assert_eq!(s.next_after(t, 0), Some(ms("2026-01-01T00:00:10Z")));
        // Strictly after: an instant on the boundary moves to the next one.
        assert_eq!(
            s.next_after(ms("2026-01-01T00:00:10Z"), 0),
            Some(ms("2026-01-01T00:00:20Z"))
        );
    }

    #[test]
    fn cron_instants_are_whole_seconds() {
        let s = Schedule::parse("* * * * * *", "UTC").unwrap();
        let t = ms("2026-01-01T00:00:05Z") + 385;
        assert_eq!(s.next_after(t, 0), Some(ms("2026-01-01T00:00:06Z")));
    }

    #[test]
    fn five_field_cron_in_a_time_zone() {
        let s = Schedule::parse("30 2 * * *", "Europe/Berlin").unwrap();
        // 02:30 Berlin in winter is 01:30 UTC.
        let next = s.next_after(ms("2026-01-10T12:00:00Z"), 0).unwrap();
        assert_eq!(next, ms("2026-01-11T01:30:00Z"));
    }

    #[test]
    fn bad_expressions_are_explained() {
        let e = Schedule::parse("61 * * * *", "UTC").unwrap_err();
        assert!(e.to_string().contains("61 * * * *"), "{e}");
        let e = Schedule::parse("* * *", "UTC").unwrap_err();
        assert!(e.to_string().contains("5 or 6 fields"), "{e}");
        let e = Schedule::parse("* * * * *", "Mars/Olympus").unwrap_err();
        assert!(matches!(e, ScheduleError::TimeZone(_)));
        assert!(Schedule::parse("every banana", "UTC").is_err());
        assert!(Schedule::parse("at tomorrow", "UTC").is_err());
    }

    #[test]
    fn intervals_stay_aligned_to_the_anchor() {
        let s = Schedule::parse("every: 30s", "UTC").unwrap();
        let anchor = 1_000_000;
        // Fired late (at +31.5 s): the next instant is still anchor + 60 s, not +61.5 s.
        assert_eq!(s.next_after(anchor + 31_500, anchor), Some(anchor + 60_000));
        assert_eq!(s.next_after(anchor - 5, anchor), Some(anchor));
    }

    #[test]
    fn one_shot_fires_once() {
        let s = Schedule::parse("at 2026-03-01T10:00:00Z", "UTC").unwrap();
        let t = ms("2026-03-01T10:00:00Z");
        assert_eq!(s.next_after(t - 1, 0), Some(t));
        assert_eq!(s.next_after(t, 0), None);
    }
}
