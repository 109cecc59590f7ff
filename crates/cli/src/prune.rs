//! `cronium prune [--dry-run] [--json]`: asks the server to remove now what is past its
//! retention (`POST /api/v1/prune`), or only to count it, and prints what went or would go.

use anyhow::Result;
use cronium_client::Method;
use serde_json::{json, Value};

use crate::cli::PruneArgs;
use crate::client::Client;

pub async fn prune(args: PruneArgs) -> Result<i32> {
    let r = Client::new(&args.client)?
        .request(
            Method::POST,
            "/api/v1/prune",
            Some(&json!({"dry_run": args.dry_run})),
        )
        .await?;
    if args.client.json {
        println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
    } else {
        print!("{}", text(&r));
    }
    Ok(0)
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// The report as a table per event, then the files.
fn text(r: &Value) -> String {
    let dry = r["dry_run"].as_bool().unwrap_or(false);
    let retain = r["retain"].as_str().unwrap_or("?");
    let events = r["events"].as_array().cloned().unwrap_or_default();
    let work_dirs = r["work_dirs"].as_array().cloned().unwrap_or_default();
    let mut out = String::new();
    let nothing = events.is_empty() && n(&r["payloads"]) == 0 && work_dirs.is_empty();
    if nothing {
        out.push_str(&format!(
            "Nothing {} (--retain {retain}).\n",
            if dry { "would go" } else { "to prune" }
        ));
    } else {
        out.push_str(&format!(
            "{} (--retain {retain}, unless an event sets retain or keep):\n",
            if dry {
                "Would remove (dry run, nothing changed)"
            } else {
                "Removed"
            }
        ));
    }
    if !events.is_empty() {
        let row = |name: &str, c: &Value| {
            vec![
                name.to_string(),
                n(&c["jobs"]).to_string(),
                n(&c["executions"]).to_string(),
                n(&c["log_lines"]).to_string(),
            ]
        };
        let mut rows: Vec<Vec<String>> = events
            .iter()
            .map(|e| row(e["event"].as_str().unwrap_or("-"), e))
            .collect();
        rows.push(row("(total)", &r["total"]));
        out.push_str(&crate::table::render(
            &["EVENT", "JOBS", "EXECUTIONS", "LOG LINES"],
            &rows,
        ));
    }
    if n(&r["payloads"]) > 0 {
        out.push_str(&format!(
            "unused cached payloads: {} ({} bytes)\n",
            n(&r["payloads"]),
            n(&r["payload_bytes"])
        ));
    }
    if !work_dirs.is_empty() {
        out.push_str(&format!(
            "work directories of killed runs: {}\n",
            work_dirs.len()
        ));
        for d in &work_dirs {
            out.push_str(&format!("  {}\n", d.as_str().unwrap_or("-")));
        }
    }
    let skipped = r["skipped_events"].as_array().cloned().unwrap_or_default();
    if !skipped.is_empty() {
        let names: Vec<&str> = skipped.iter().filter_map(Value::as_str).collect();
        out.push_str(&format!(
            "kept whole (their definition does not parse): {}\n",
            names.join(", ")
        ));
    }
    if r["interrupted"].as_bool().unwrap_or(false) {
        out.push_str("interrupted: the server is shutting down; the rest goes at its next sweep\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_reads_as_a_table() {
        let r = json!({
            "dry_run": true, "retain": "30d",
            "total": {"jobs": 3, "executions": 3, "log_lines": 120},
            "events": [
                {"event": "backup", "jobs": 2, "executions": 2, "log_lines": 100},
                {"event": "ping", "jobs": 1, "executions": 1, "log_lines": 20},
            ],
            "payloads": 1, "payload_bytes": 512, "work_dirs": ["/w/cronium-run-1"],
            "skipped_events": ["broken-one"], "interrupted": false,
        });
        let t = text(&r);
        assert!(
            t.starts_with("Would remove (dry run, nothing changed) (--retain 30d"),
            "{t}"
        );
        let backup = t.lines().find(|l| l.starts_with("backup")).unwrap();
        assert_eq!(
            backup.split_whitespace().collect::<Vec<_>>(),
            ["backup", "2", "2", "100"]
        );
        let total = t.lines().find(|l| l.starts_with("(total)")).unwrap();
        assert_eq!(
            total.split_whitespace().collect::<Vec<_>>(),
            ["(total)", "3", "3", "120"]
        );
        assert!(t.contains("unused cached payloads: 1 (512 bytes)"), "{t}");
        assert!(t.contains("  /w/cronium-run-1\n"), "{t}");
        assert!(t.contains("does not parse): broken-one"), "{t}");
        let empty = json!({"dry_run": false, "retain": "forever", "events": [], "payloads": 0, "work_dirs": []});
        assert_eq!(text(&empty), "Nothing to prune (--retain forever).\n");
    }
}
