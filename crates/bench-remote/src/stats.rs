//! Small statistics over timing samples: the median the report quotes, and formatting.
//!
//! Not a statistics library: medians and min/max only, which is what the targets are stated in.

use std::time::Duration;

/// Median of `xs` (mean of the two middle values for an even count); `None` when empty.
pub fn median(xs: &[Duration]) -> Option<Duration> {
    if xs.is_empty() {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort();
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    })
}

/// Median of integer milliseconds (server-side figures).
pub fn median_ms(xs: &[i64]) -> Option<i64> {
    let d: Vec<Duration> = xs
        .iter()
        .map(|x| Duration::from_millis((*x).max(0) as u64))
        .collect();
    median(&d).map(|d| d.as_millis() as i64)
}

/// Machine-wide busy CPU time so far (user + nice + system + irq + softirq over all cores, from
/// /proc/stat), in milliseconds. The difference over a loop divided by its runs is the CPU one
/// run costs on the machine, agent and "remote" side together (they share the cores on
/// loopback); other load on the machine is counted too.
pub fn busy_cpu_ms() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq: skip idle (3) and iowait (4).
    let busy = f.first()? + f.get(1)? + f.get(2)? + f.get(5)? + f.get(6)?;
    // USER_HZ is 100 on Linux for every architecture the runner targets.
    Some(busy * 10.0)
}

/// `123.4 ms` below 10 s, `12.34 s` above.
pub fn fmt(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10_000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

pub fn fmt_opt(d: Option<Duration>) -> String {
    d.map(fmt).unwrap_or_else(|| "n/a".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[ms(5), ms(1), ms(3)]), Some(ms(3)));
        assert_eq!(
            median(&[ms(4), ms(1), ms(3), ms(2)]),
            Some(Duration::from_micros(2500))
        );
        assert_eq!(median(&[]), None);
        assert_eq!(median_ms(&[7, 1, 100]), Some(7));
    }
}
