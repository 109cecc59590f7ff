//! `cronium runner rollout` following a rollout to its end (a progress line rewritten in place
//! on a terminal, one line per change otherwise, then a summary table), `runner rollouts ID`
//! and `rollback` printing that table, and `cronium server deploy`'s summary.
//!
//! Not for any rule of a rollout: the server drives it; this only reads its state.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::Result;
use cronium_client::Method;
use serde_json::Value;

use crate::client::Client;
use crate::table;

/// How often the rollout's state is read while it runs.
const POLL: Duration = Duration::from_millis(300);

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

/// One line of progress: `rollout 3 (0.2.0): batch 2/3 [####----] 2 upgraded, 0 failed, 3 pending`.
fn progress(r: &Value) -> String {
    let servers: Vec<&Value> = r["servers"].as_array().into_iter().flatten().collect();
    let count = |status: &str| servers.iter().filter(|x| s(x, "status") == status).count();
    let batches = servers
        .iter()
        .filter_map(|x| x["batch"].as_i64())
        .max()
        .unwrap_or(0);
    let current = servers
        .iter()
        .filter(|x| s(x, "status") == "pending")
        .filter_map(|x| x["batch"].as_i64())
        .min()
        .unwrap_or(batches);
    let done = servers.len() - count("pending");
    let width = 20usize;
    let filled = (done * width).checked_div(servers.len()).unwrap_or(0);
    format!(
        "rollout {} ({}): batch {current}/{batches} [{}{}] {} upgraded, {} failed, {} reverted, {} pending",
        r["id"],
        s(r, "version"),
        "#".repeat(filled),
        "-".repeat(width - filled),
        count("upgraded"),
        count("failed"),
        count("reverted"),
        count("pending"),
    )
}

/// Follows rollout `id` until it is no longer `running`; returns its last state.
pub async fn follow(api: &Client, id: i64, json: bool) -> Result<Value> {
    let tty = !json && std::io::stderr().is_terminal();
    let mut last = String::new();
    loop {
        let r = api.get(&format!("/api/v1/runners/rollouts/{id}")).await?;
        if !json {
            let line = progress(&r);
            if line != last {
                let mut err = std::io::stderr();
                if tty {
                    let _ = write!(err, "\r\x1b[2K{line}");
                } else {
                    let _ = writeln!(err, "{line}");
                }
                let _ = err.flush();
                last = line;
            }
        }
        if s(&r, "status") != "running" {
            if tty {
                eprintln!();
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print_summary(&r);
            }
            return Ok(r);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The rollout's status line and one row per server.
pub fn print_summary(r: &Value) {
    println!(
        "rollout {} of runner {} to {}: {}{}",
        r["id"],
        s(r, "version"),
        r["tag"]
            .as_str()
            .map_or("every server".to_string(), |t| format!("tag {t}")),
        s(r, "status"),
        r["error"]
            .as_str()
            .map(|e| format!(": {e}"))
            .unwrap_or_default()
    );
    let rows: Vec<Vec<String>> = r["servers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| {
            vec![
                s(x, "server").to_string(),
                x["batch"].to_string(),
                s(x, "status").to_string(),
                s(x, "previous_version").to_string(),
                x["error"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect();
    table::print(&["SERVER", "BATCH", "STATUS", "PREVIOUS", "ERROR"], &rows);
}

/// `POST /api/v1/servers/deploy` and its summary table; returns the lines.
pub async fn deploy(api: &Client, body: &Value, json: bool) -> Result<Value> {
    let tty = !json && std::io::stderr().is_terminal();
    if tty {
        eprint!("deploying runners...");
    }
    let v = api
        .request(Method::POST, "/api/v1/servers/deploy", Some(body))
        .await?;
    if tty {
        eprint!("\r\x1b[2K");
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(v);
    }
    let lines: Vec<&Value> = v.as_array().into_iter().flatten().collect();
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|l| {
            vec![
                s(l, "server").to_string(),
                s(l, "platform").to_string(),
                s(l, "version").to_string(),
                s(l, "outcome").to_string(),
                l["duration_ms"].to_string(),
                l["error"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect();
    table::print(
        &["SERVER", "PLATFORM", "VERSION", "OUTCOME", "MS", "ERROR"],
        &rows,
    );
    let failed = lines.iter().filter(|l| s(l, "outcome") == "failed").count();
    println!(
        "{} server(s): {} ok, {failed} failed",
        lines.len(),
        lines.len() - failed
    );
    Ok(v)
}
