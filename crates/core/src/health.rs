//! Judging a server's health: from what the store holds of its checks (last contact, failures in
//! a row, the latest `cronium-runner health` reading) and the configured thresholds, the status
//! `healthy`, `degraded`, `unreachable` or `unknown`, with the reasons in words. Pure: the clock
//! is a parameter, so the same rule serves the API, the pages, the CLI, the metrics and the
//! fan-out's `skip_unreachable`. Not for collecting readings (the server's health loop does).

use std::fmt;
use std::str::FromStr;

use cronium_model::ServerHealth;
use cronium_protocol::{Disk, Health};
use serde_json::Value;

use crate::duration::ByteSize;

/// A lower bound on free space: a share of the total or an absolute size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Minimum {
    Percent(f64),
    Bytes(u64),
}

impl Minimum {
    /// True when `free` of `total` is under this minimum.
    pub fn crossed(self, free: u64, total: u64) -> bool {
        match self {
            Minimum::Percent(p) => total > 0 && (free as f64) * 100.0 < p * total as f64,
            Minimum::Bytes(b) => free < b,
        }
    }
}

impl FromStr for Minimum {
    type Err = String;

    /// `10%` (0 to 100) or a size (`1g`, `512m`, a number of bytes).
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if let Some(p) = t.strip_suffix('%') {
            let v: f64 = p
                .trim()
                .parse()
                .map_err(|_| format!("`{s}` is not a percentage; use e.g. 10%"))?;
            if !(0.0..=100.0).contains(&v) {
                return Err(format!("`{s}`: a percentage must be between 0% and 100%"));
            }
            return Ok(Minimum::Percent(v));
        }
        if t == "0" {
            return Ok(Minimum::Bytes(0));
        }
        ByteSize::parse(t)
            .map(|b| Minimum::Bytes(b.0))
            .map_err(|e| format!("{e}, or a percentage such as 10%"))
    }
}

impl fmt::Display for Minimum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Minimum::Percent(p) => write!(f, "{p}%"),
            Minimum::Bytes(b) => write!(f, "{}", ByteSize(*b)),
        }
    }
}

/// When a server counts as degraded or unreachable (`serve --health-*`).
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    /// Free space of the work or deploy directory's file system under this: degraded.
    pub disk_free_min: Minimum,
    /// Available memory under this: degraded.
    pub memory_available_min: Minimum,
    /// This many failed checks in a row: unreachable.
    pub unreachable_after: u32,
    /// No contact for longer than this (ms): unreachable. `None`: contact age is not judged.
    pub stale_after_ms: Option<i64>,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            disk_free_min: Minimum::Percent(5.0),
            memory_available_min: Minimum::Percent(5.0),
            unreachable_after: 3,
            stale_after_ms: None,
        }
    }
}

/// What the store holds of a server's checks (its `HealthState`), as the rule needs it.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    pub checked_at: Option<i64>,
    pub contact_at: Option<i64>,
    pub failures: i64,
    pub error: Option<&'a str>,
    pub reading: Option<&'a Value>,
}

/// A status with its reasons (empty when healthy).
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub status: ServerHealth,
    pub reasons: Vec<String>,
}

/// The one rule: unreachable first (the failures in a row, then the contact's age), then
/// degraded (each directory's free space, then memory), else healthy; never checked is unknown.
pub fn judge(o: &Observed<'_>, now_ms: i64, t: &Thresholds) -> Verdict {
    let verdict = |status, reasons| Verdict { status, reasons };
    if o.checked_at.is_none() {
        return verdict(ServerHealth::Unknown, vec!["not checked yet".into()]);
    }
    let why = o.error.map(|e| format!(": {e}")).unwrap_or_default();
    if o.failures > 0 && o.failures >= i64::from(t.unreachable_after.max(1)) {
        return verdict(
            ServerHealth::Unreachable,
            vec![format!("{} checks failed in a row{why}", o.failures)],
        );
    }
    let Some(contact) = o.contact_at else {
        return verdict(
            ServerHealth::Unknown,
            vec![format!(
                "no contact yet ({} failed check(s){why})",
                o.failures
            )],
        );
    };
    if let Some(stale) = t.stale_after_ms {
        let age = now_ms.saturating_sub(contact);
        if age > stale {
            return verdict(
                ServerHealth::Unreachable,
                vec![format!(
                    "no contact for {}s (more than {}s)",
                    age / 1000,
                    stale / 1000
                )],
            );
        }
    }
    let Some(reading) = o.reading else {
        return verdict(ServerHealth::Healthy, Vec::new());
    };
    let Ok(h) = serde_json::from_value::<Health>(reading.clone()) else {
        return verdict(
            ServerHealth::Healthy,
            vec!["the stored reading is not a health report; thresholds not judged".into()],
        );
    };
    let mut reasons = Vec::new();
    for (what, d) in [
        ("work directory", &h.work_dir),
        ("deploy directory", &h.deploy_dir),
    ] {
        if t.disk_free_min.crossed(d.free_bytes, d.total_bytes) {
            reasons.push(disk_reason(what, d, t.disk_free_min));
        }
    }
    if t.memory_available_min
        .crossed(h.memory_available_bytes, h.memory_total_bytes)
    {
        reasons.push(format!(
            "memory: {} of {} available ({:.1}%), under {}",
            ByteSize(h.memory_available_bytes),
            ByteSize(h.memory_total_bytes),
            h.memory_available_percent(),
            t.memory_available_min
        ));
    }
    let status = if reasons.is_empty() {
        ServerHealth::Healthy
    } else {
        ServerHealth::Degraded
    };
    verdict(status, reasons)
}

fn disk_reason(what: &str, d: &Disk, min: Minimum) -> String {
    format!(
        "disk: {what} {} has {} free of {} ({:.1}%), under {min}",
        d.path,
        ByteSize(d.free_bytes),
        ByteSize(d.total_bytes),
        d.free_percent()
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn reading(work_free: u64, mem_avail: u64) -> Value {
        json!({
            "runner_version": "0.1.0", "load": [0.1, 0.2, 0.3], "cpus": 2,
            "memory_total_bytes": 1000, "memory_available_bytes": mem_avail, "uptime_s": 5,
            "work_dir": {"path": "/tmp", "total_bytes": 1000, "free_bytes": work_free},
            "deploy_dir": {"path": "/home/d/.cache/cronium", "total_bytes": 1000, "free_bytes": 900},
        })
    }

    fn seen(reading: Option<&Value>) -> Observed<'_> {
        Observed {
            checked_at: Some(1_000),
            contact_at: Some(1_000),
            failures: 0,
            error: None,
            reading,
        }
    }

    #[test]
    fn thresholds_mark_degraded_with_reasons() {
        let t = Thresholds::default();
        let r = reading(500, 500);
        assert_eq!(
            judge(&seen(Some(&r)), 2_000, &t).status,
            ServerHealth::Healthy
        );
        let r = reading(40, 30);
        let v = judge(&seen(Some(&r)), 2_000, &t);
        assert_eq!(v.status, ServerHealth::Degraded);
        assert_eq!(v.reasons.len(), 2, "{:?}", v.reasons);
        assert!(
            v.reasons[0]
                .starts_with("disk: work directory /tmp has 40 free of 1000 (4.0%), under 5%"),
            "{:?}",
            v.reasons
        );
        assert!(v.reasons[1].starts_with("memory: "), "{:?}", v.reasons);
        let bytes = Thresholds {
            disk_free_min: Minimum::Bytes(950),
            memory_available_min: Minimum::Bytes(0),
            ..t
        };
        let r = reading(500, 0);
        let v = judge(&seen(Some(&r)), 2_000, &bytes);
        // Both directories are under 950 bytes; no memory minimum at all.
        assert_eq!((v.status, v.reasons.len()), (ServerHealth::Degraded, 2));
    }

    #[test]
    fn failures_in_a_row_and_an_old_contact_mark_unreachable() {
        let t = Thresholds {
            stale_after_ms: Some(60_000),
            ..Thresholds::default()
        };
        let r = reading(500, 500);
        let mut o = seen(Some(&r));
        o.failures = 2;
        o.error = Some("connection refused");
        assert_eq!(judge(&o, 2_000, &t).status, ServerHealth::Healthy);
        o.failures = 3;
        let v = judge(&o, 2_000, &t);
        assert_eq!(v.status, ServerHealth::Unreachable);
        assert_eq!(v.reasons, ["3 checks failed in a row: connection refused"]);
        let o = seen(Some(&r));
        let v = judge(&o, 62_000, &t);
        assert_eq!(v.status, ServerHealth::Unreachable);
        assert_eq!(v.reasons, ["no contact for 61s (more than 60s)"]);
        assert_eq!(judge(&o, 61_000, &t).status, ServerHealth::Healthy);
    }

    #[test]
    fn unchecked_or_never_contacted_is_unknown() {
        let t = Thresholds::default();
        let mut o = seen(None);
        o.checked_at = None;
        assert_eq!(judge(&o, 0, &t).status, ServerHealth::Unknown);
        let o = Observed {
            contact_at: None,
            failures: 1,
            ..seen(None)
        };
        assert_eq!(judge(&o, 0, &t).status, ServerHealth::Unknown);
        // A contact without a reading (no runner yet) is healthy: nothing to judge.
        assert_eq!(judge(&seen(None), 0, &t).status, ServerHealth::Healthy);
    }

    #[test]
    fn minimums_parse_percentages_and_sizes() {
        assert_eq!("10%".parse::<Minimum>(), Ok(Minimum::Percent(10.0)));
        assert_eq!("1g".parse::<Minimum>(), Ok(Minimum::Bytes(1 << 30)));
        assert_eq!("0".parse::<Minimum>(), Ok(Minimum::Bytes(0)));
        assert!("101%"
            .parse::<Minimum>()
            .unwrap_err()
            .contains("between 0% and 100%"));
        assert!("lots"
            .parse::<Minimum>()
            .unwrap_err()
            .contains("percentage such as 10%"));
        assert_eq!(Minimum::Percent(5.0).to_string(), "5%");
        assert_eq!(Minimum::Bytes(1 << 30).to_string(), "1g");
    }
}
