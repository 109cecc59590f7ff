//! The retry backoff formula, shared by the store (lease recovery) and the agent (failed
//! attempts) so both space retries the same way.
//!
//! Not a scheduler: it computes a delay, the caller adds it to its `now`.

/// Largest relative jitter applied to a delay (±20 %).
pub const MAX_JITTER: f64 = 0.2;

/// Delay before retrying after attempt number `attempt` (1-based) failed:
/// `backoff_ms * 2^(attempt-1)`, capped at `max_backoff_ms` (when positive), then scaled by
/// `1 + jitter`, where `jitter` is clamped to ±[`MAX_JITTER`] (pass a random value in that range,
/// or 0 for none). Never negative; saturates instead of overflowing.
pub fn backoff_delay(backoff_ms: i64, max_backoff_ms: i64, attempt: i32, jitter: f64) -> i64 {
    let base = backoff_ms.max(0);
    // 2^62 already saturates any i64 delay; larger shifts would overflow the shift itself.
    let doublings = attempt.saturating_sub(1).clamp(0, 62) as u32;
    let mut delay = base.saturating_mul(1i64 << doublings);
    if max_backoff_ms > 0 {
        delay = delay.min(max_backoff_ms);
    }
    let jitter = if jitter.is_finite() {
        jitter.clamp(-MAX_JITTER, MAX_JITTER)
    } else {
        0.0
    };
    // f64 holds delays up to 2^53 ms (285 000 years) exactly; `as` saturates beyond.
    ((delay as f64) * (1.0 + jitter)).round().max(0.0) as i64
}

/// A jitter in ±[`MAX_JITTER`] derived from the job and attempt, so retries of many jobs lost at
/// once spread out, while the store still never needs a random source (tests stay repeatable).
pub fn row_jitter(job_id: i64, attempt: i32) -> f64 {
    // splitmix64 finaliser: a well-mixed 64-bit value from the pair.
    let mut z = (job_id as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(attempt as u64);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let unit = (z >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
    (unit * 2.0 - 1.0) * MAX_JITTER
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_then_caps() {
        assert_eq!(backoff_delay(1000, 60_000, 1, 0.0), 1000);
        assert_eq!(backoff_delay(1000, 60_000, 2, 0.0), 2000);
        assert_eq!(backoff_delay(1000, 60_000, 4, 0.0), 8000);
        assert_eq!(backoff_delay(1000, 60_000, 10, 0.0), 60_000);
        assert_eq!(backoff_delay(1000, 60_000, i32::MAX, 0.0), 60_000);
        assert_eq!(backoff_delay(1000, 0, 3, 0.0), 4000, "no cap when max is 0");
        assert_eq!(
            backoff_delay(1000, 60_000, 0, 0.0),
            1000,
            "attempt 0 treated as 1"
        );
    }

    #[test]
    fn jitter_is_clamped_to_twenty_percent() {
        assert_eq!(backoff_delay(1000, 0, 1, 0.1), 1100);
        assert_eq!(backoff_delay(1000, 0, 1, 5.0), 1200);
        assert_eq!(backoff_delay(1000, 0, 1, -5.0), 800);
        assert_eq!(backoff_delay(1000, 0, 1, f64::NAN), 1000);
        assert_eq!(backoff_delay(-5, 0, 1, 0.0), 0);
    }

    #[test]
    fn row_jitter_stays_in_range_and_varies() {
        let values: Vec<f64> = (1..200).map(|id| row_jitter(id, 1)).collect();
        assert!(values
            .iter()
            .all(|j| (-MAX_JITTER..=MAX_JITTER).contains(j)));
        assert!(values.iter().any(|j| *j > 0.1) && values.iter().any(|j| *j < -0.1));
    }
}
