//! The fan-out rules of a `servers` target that are pure numbers: how many servers must succeed
//! (`min_success`), how the servers are cut into rolling batches (`batch`), and the job's status
//! from its servers' results. The agent applies them; the spec parser reads [`ServerCount`].
//!
//! Not here: running anything, resolving tags into servers (the store), the pause between
//! batches (the agent's clock).

use std::fmt;

use serde::{de, Deserialize, Deserializer, Serialize};

/// A number of servers, absolute (`2`) or as a percentage of the servers a job targets
/// (`"60%"`, rounded up, so never 0 of a non-empty fan-out). Both forms are at least 1; a
/// percentage is at most 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerCount {
    Count(u32),
    Percent(u8),
}

/// The percentage form as a JSON Schema pattern (the document's), the same rule as
/// [`ServerCount::parse`]'s for a string ending in `%`.
pub const PERCENT_PATTERN: &str = r"^\s*(?:[1-9][0-9]?|100)\s*%\s*$";

/// What the parser says when a [`ServerCount`] is not one.
const EXPECTED: &str = "expected a number of servers (at least 1, e.g. 2) or a percentage \
                        of the targeted servers from 1% to 100% (e.g. \"60%\")";

impl ServerCount {
    /// Reads `"60%"` (a percentage) or `"2"` (a count, as a YAML or JSON number reads): digits
    /// without sign or leading zero, as the schema's pattern says.
    pub fn parse(text: &str) -> Result<ServerCount, String> {
        let bad = || format!("`{text}`: {EXPECTED}");
        let t = text.trim();
        let (digits, percent) = match t.strip_suffix('%') {
            Some(p) => (p.trim_end(), true),
            None => (t, false),
        };
        let plain = !digits.is_empty()
            && !digits.starts_with('0')
            && digits.bytes().all(|b| b.is_ascii_digit());
        if !plain {
            return Err(bad());
        }
        if percent {
            match digits.parse::<u8>() {
                Ok(p) if p <= 100 => Ok(ServerCount::Percent(p)),
                _ => Err(bad()),
            }
        } else {
            digits
                .parse::<u32>()
                .map(ServerCount::Count)
                .map_err(|_| bad())
        }
    }

    /// How many of `total` servers this is: a count as written (it may exceed `total`, which
    /// the caller refuses where it matters), a percentage rounded up.
    pub fn of(self, total: usize) -> usize {
        match self {
            ServerCount::Count(n) => n as usize,
            ServerCount::Percent(p) => (total * usize::from(p)).div_ceil(100),
        }
    }
}

impl fmt::Display for ServerCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerCount::Count(n) => write!(f, "{n}"),
            ServerCount::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Serialize for ServerCount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ServerCount::Count(n) => s.serialize_u32(*n),
            ServerCount::Percent(_) => s.serialize_str(&self.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for ServerCount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ServerCount;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                match u32::try_from(v) {
                    Ok(n) if n > 0 => Ok(ServerCount::Count(n)),
                    _ => Err(E::custom(format!("`{v}`: {EXPECTED}"))),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!("`{v}`: {EXPECTED}"))),
                }
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Err(E::custom(format!("`{v}`: {EXPECTED}")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                // A count is written as a number; a string is a percentage.
                match ServerCount::parse(v) {
                    Ok(c @ ServerCount::Percent(_)) => Ok(c),
                    _ => Err(E::custom(format!("`{v}`: {EXPECTED}"))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// The servers `0..total` cut into consecutive batches of `batch` (of `total`, at least 1):
/// one batch of everything without `batch`.
pub fn batches(total: usize, batch: Option<ServerCount>) -> Vec<std::ops::Range<usize>> {
    let size = batch.map_or(total, |b| b.of(total)).max(1);
    (0..total)
        .step_by(size)
        .map(|start| start..(start + size).min(total))
        .collect()
}

/// How a fan-out ended, from its servers' results, before the statuses' words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every server succeeded.
    Succeeded,
    /// Some servers failed, but enough succeeded.
    Partial,
    /// Too few succeeded: with `min_success`, fewer than required; without it, none. The job
    /// ends as its first unsuccessful execution did (failed, timed out, cancelled).
    Failed,
}

/// The job's verdict when `ok` of `total` servers succeeded. Without `min_success`, one success
/// makes it partial (the rule before `min_success` existed); with it, at least that many
/// successes (of `total` for a percentage) make it partial and fewer fail it.
pub fn verdict(total: usize, ok: usize, min_success: Option<ServerCount>) -> Verdict {
    if ok == total && total > 0 {
        return Verdict::Succeeded;
    }
    let required = min_success.map_or(1, |m| m.of(total).max(1));
    if ok >= required {
        Verdict::Partial
    } else {
        Verdict::Failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_percentages_parse_and_print_back() {
        for (text, want) in [
            ("2", ServerCount::Count(2)),
            (" 2 ", ServerCount::Count(2)),
            ("60%", ServerCount::Percent(60)),
            ("100%", ServerCount::Percent(100)),
            ("1%", ServerCount::Percent(1)),
        ] {
            assert_eq!(ServerCount::parse(text), Ok(want), "{text}");
        }
        assert_eq!(ServerCount::Percent(60).to_string(), "60%");
        assert_eq!(ServerCount::Count(3).to_string(), "3");
        for bad in [
            "0", "0%", "101%", "abc", "-1", "-5%", "", "%", "2.5", "1e3", "+3", "060%", "256%",
        ] {
            let e = ServerCount::parse(bad).unwrap_err();
            assert!(e.contains("percentage"), "{bad}: {e}");
        }
    }

    #[test]
    fn json_forms() {
        let read = |v: serde_json::Value| serde_json::from_value::<ServerCount>(v);
        assert_eq!(read(serde_json::json!(3)).unwrap(), ServerCount::Count(3));
        assert_eq!(
            read(serde_json::json!("50%")).unwrap(),
            ServerCount::Percent(50)
        );
        for bad in [
            serde_json::json!(0),
            serde_json::json!(-1),
            serde_json::json!(1.5),
            serde_json::json!(true),
            serde_json::json!("abc"),
            serde_json::json!("3"),
            serde_json::json!("0%"),
            serde_json::json!("101%"),
        ] {
            assert!(read(bad.clone()).is_err(), "{bad}");
        }
        assert_eq!(
            serde_json::to_value(ServerCount::Percent(50)).unwrap(),
            serde_json::json!("50%")
        );
        assert_eq!(
            serde_json::to_value(ServerCount::Count(2)).unwrap(),
            serde_json::json!(2)
        );
    }

    #[test]
    fn percentages_round_up() {
        assert_eq!(ServerCount::Percent(60).of(3), 2);
        assert_eq!(ServerCount::Percent(50).of(4), 2);
        assert_eq!(ServerCount::Percent(1).of(3), 1);
        assert_eq!(ServerCount::Percent(100).of(3), 3);
        assert_eq!(ServerCount::Percent(34).of(3), 2);
        assert_eq!(ServerCount::Count(5).of(3), 5);
    }

    #[test]
    fn batches_cut_in_order() {
        assert_eq!(batches(4, Some(ServerCount::Count(2))), vec![0..2, 2..4]);
        assert_eq!(
            batches(5, Some(ServerCount::Count(2))),
            vec![0..2, 2..4, 4..5]
        );
        assert_eq!(batches(3, None), vec![0..3]);
        assert_eq!(batches(3, Some(ServerCount::Count(10))), vec![0..3]);
        assert_eq!(
            batches(4, Some(ServerCount::Percent(25))),
            vec![0..1, 1..2, 2..3, 3..4]
        );
        assert_eq!(batches(3, Some(ServerCount::Percent(50))), vec![0..2, 2..3]);
        assert!(batches(0, Some(ServerCount::Count(2))).is_empty());
    }

    #[test]
    fn the_verdict_follows_min_success() {
        use Verdict::*;
        // Without min_success: the rule from before it existed.
        assert_eq!(verdict(3, 3, None), Succeeded);
        assert_eq!(verdict(3, 1, None), Partial);
        assert_eq!(verdict(3, 0, None), Failed);
        assert_eq!(verdict(1, 0, None), Failed);
        // With it.
        let two = Some(ServerCount::Count(2));
        assert_eq!(verdict(3, 3, two), Succeeded);
        assert_eq!(verdict(3, 2, two), Partial);
        assert_eq!(verdict(3, 1, two), Failed);
        let sixty = Some(ServerCount::Percent(60));
        assert_eq!(verdict(3, 2, sixty), Partial);
        assert_eq!(verdict(3, 1, sixty), Failed);
        let all = Some(ServerCount::Count(3));
        assert_eq!(verdict(3, 2, all), Failed);
        assert_eq!(verdict(3, 3, all), Succeeded);
    }
}
