//! Order statistics over samples (p50, p99, max): the figures every benchmark reports, because
//! the reference machine is shared and noisy and means hide the tail.
//!
//! Not for timing itself: benchmarks take their own clocks (wall `Instant`s, server timestamps).

use serde_json::{json, Value};

/// Order statistics of one series of samples, in the unit the samples were taken in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub min: f64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Summary {
    /// `None` for an empty series (a benchmark that produced no sample must say so, not print 0).
    pub fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        Some(Summary {
            n,
            min: s[0],
            p50: percentile_sorted(&s, 50.0),
            p99: percentile_sorted(&s, 99.0),
            max: s[n - 1],
            mean: s.iter().sum::<f64>() / n as f64,
        })
    }

    pub fn to_json(self) -> Value {
        json!({
            "n": self.n,
            "min": round3(self.min),
            "p50": round3(self.p50),
            "p99": round3(self.p99),
            "max": round3(self.max),
            "mean": round3(self.mean),
        })
    }

    /// One human line, e.g. `p50 1.234 ms  p99 5.678 ms  max 9.000 ms  (n=200)`.
    pub fn line(self, unit: &str) -> String {
        format!(
            "min {:.3} {unit}  p50 {:.3} {unit}  p99 {:.3} {unit}  max {:.3} {unit}  mean {:.3} {unit}  (n={})",
            self.min, self.p50, self.p99, self.max, self.mean, self.n
        )
    }
}

/// Nearest-rank percentile of an ascending, non-empty slice: always a value that was observed,
/// so a p99 over 100 samples is the second largest, not an interpolation.
fn percentile_sorted(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let xs: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Summary::of(&xs).unwrap();
        assert_eq!(s.p50, 50.0);
        assert_eq!(s.p99, 99.0);
        assert_eq!(s.max, 100.0);
        assert_eq!(s.min, 1.0);
        assert_eq!(s.n, 100);
    }

    #[test]
    fn unsorted_input_and_single_sample() {
        let s = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!(s.p50, 2.0);
        assert_eq!(s.p99, 3.0);
        let one = Summary::of(&[7.0]).unwrap();
        assert_eq!((one.p50, one.p99, one.max), (7.0, 7.0, 7.0));
        assert!(Summary::of(&[]).is_none());
    }
}
