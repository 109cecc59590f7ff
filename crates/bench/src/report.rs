//! What a benchmark hands back: its figures checked against the PRODUCT.md quality bars, a
//! one-line JSON summary, and rows for the markdown table `cronium-bench all` prints.
//!
//! Not where anything is measured; benchmarks fill a `Report` and this module only formats it.

use serde_json::{json, Map, Value};

/// One figure, optionally held to a target.
#[derive(Debug, Clone)]
pub struct Row {
    pub metric: String,
    pub measured: String,
    /// The bar from PRODUCT.md, as text (`≤ 5 ms`); empty when the figure is informative only.
    pub target: String,
    /// `None` when there is no target.
    pub pass: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub bench: &'static str,
    pub rows: Vec<Row>,
    pub json: Map<String, Value>,
    /// Findings worth a line in BENCHMARKS.md (breakdowns, anomalies).
    pub notes: Vec<String>,
}

impl Report {
    pub fn new(bench: &'static str) -> Report {
        Report {
            bench,
            rows: vec![],
            json: Map::new(),
            notes: vec![],
        }
    }

    pub fn info(&mut self, metric: impl Into<String>, measured: impl Into<String>) {
        self.rows.push(Row {
            metric: metric.into(),
            measured: measured.into(),
            target: String::new(),
            pass: None,
        });
    }

    /// A figure with an upper bound.
    pub fn at_most(&mut self, metric: impl Into<String>, value: f64, bound: f64, unit: &str) {
        self.rows.push(Row {
            metric: metric.into(),
            measured: format!("{} {unit}", fmt_num(value)),
            target: format!("≤ {} {unit}", fmt_num(bound)),
            pass: Some(value <= bound),
        });
    }

    /// A figure with a lower bound.
    pub fn at_least(&mut self, metric: impl Into<String>, value: f64, bound: f64, unit: &str) {
        self.rows.push(Row {
            metric: metric.into(),
            measured: format!("{} {unit}", fmt_num(value)),
            target: format!("≥ {} {unit}", fmt_num(bound)),
            pass: Some(value >= bound),
        });
    }

    /// A yes/no property (no drift, no line lost).
    pub fn holds(&mut self, metric: impl Into<String>, ok: bool, detail: impl Into<String>) {
        self.rows.push(Row {
            metric: metric.into(),
            measured: detail.into(),
            target: "yes".into(),
            pass: Some(ok),
        });
    }

    pub fn set(&mut self, key: &str, v: Value) {
        self.json.insert(key.into(), v);
    }

    pub fn note(&mut self, n: impl Into<String>) {
        self.notes.push(n.into());
    }

    pub fn passed(&self) -> bool {
        self.rows.iter().all(|r| r.pass != Some(false))
    }

    /// The one-line JSON summary.
    pub fn json_line(&self) -> String {
        let mut m = self.json.clone();
        m.insert("bench".into(), json!(self.bench));
        m.insert("pass".into(), json!(self.passed()));
        Value::Object(m).to_string()
    }

    /// Human lines for the figures, then the JSON line.
    pub fn print(&self) {
        println!("== {} ==", self.bench);
        for r in &self.rows {
            let verdict = match r.pass {
                Some(true) => "  PASS",
                Some(false) => "  FAIL",
                None => "",
            };
            if r.target.is_empty() {
                println!("  {:<44} {}", r.metric, r.measured);
            } else {
                println!(
                    "  {:<44} {:<24} target {}{verdict}",
                    r.metric, r.measured, r.target
                );
            }
        }
        for n in &self.notes {
            println!("  note: {n}");
        }
        println!("{}", self.json_line());
    }
}

/// The markdown table over several reports.
pub fn markdown(reports: &[Report]) -> String {
    let mut out = String::from(
        "| Benchmark | Metric | Measured | Target | Result |\n|---|---|---|---|---|\n",
    );
    for r in reports {
        for row in &r.rows {
            let verdict = match row.pass {
                Some(true) => "pass",
                Some(false) => "**FAIL**",
                None => "",
            };
            let target = if row.target.is_empty() {
                "–"
            } else {
                &row.target
            };
            out.push_str(&format!(
                "| `{}` | {} | {} | {} | {} |\n",
                r.bench, row.metric, row.measured, target, verdict
            ));
        }
    }
    out
}

/// A failed benchmark still gets a row, so the table shows what could not be measured.
pub fn failed(bench: &'static str, err: &anyhow::Error) -> Report {
    let mut r = Report::new(bench);
    r.rows.push(Row {
        metric: "error".into(),
        measured: format!("{err:#}").replace('|', "/").replace('\n', " "),
        target: "runs".into(),
        pass: Some(false),
    });
    r.set("error", json!(format!("{err:#}")));
    r
}

/// Two decimals below 10, one below 100, none above: what a reader of the table needs.
pub fn fmt_num(x: f64) -> String {
    if x.abs() < 10.0 {
        format!("{x:.2}")
    } else if x.abs() < 100.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missed_bar_fails_the_report_and_shows_in_the_table() {
        let mut r = Report::new("overhead");
        r.at_most("p50 overhead", 4.0, 5.0, "ms");
        assert!(r.passed());
        r.at_most("p99 overhead", 7.5, 5.0, "ms");
        assert!(!r.passed());
        let md = markdown(&[r.clone()]);
        assert!(
            md.contains("| `overhead` | p50 overhead | 4.00 ms | ≤ 5.00 ms | pass |"),
            "{md}"
        );
        assert!(
            md.contains("| `overhead` | p99 overhead | 7.50 ms | ≤ 5.00 ms | **FAIL** |"),
            "{md}"
        );
        let j: Value = serde_json::from_str(&r.json_line()).unwrap();
        assert_eq!(j["bench"], "overhead");
        assert_eq!(j["pass"], false);
    }
}
