//! `log-latency`: a script prints a line every ~10 ms carrying its own `time.time_ns()`; a live SSE
//! viewer records when each line arrives. Latency = arrival − the timestamp in the line. The
//! stored row's `ts` splits it into script → store and store → viewer.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Value};

use super::Ctx;
use crate::report::Report;
use crate::server::{ts_ms, Server, ServerOpts};
use crate::stats::Summary;

pub const TARGET_P99_MS: f64 = 50.0;

pub async fn run(ctx: &Ctx, lines: usize) -> anyhow::Result<Report> {
    let server = Server::start(&ctx.bins, &ServerOpts::default())?;
    measure(&server, &server, lines, "log-latency").await
}

/// Runs the printing job through `runner` (whose agent records it) and follows it on `viewer`'s
/// SSE (the same server, or another replica on the same PostgreSQL).
pub async fn measure(
    runner: &Server,
    viewer: &Server,
    lines: usize,
    name: &'static str,
) -> anyhow::Result<Report> {
    let script = format!(
        "import time\nfor i in range({lines}):\n    print(i, time.time_ns(), flush=True)\n    time.sleep(0.01)\n"
    );
    runner
        .put_event(&json!({"name": "bench-log", "type": "python", "script": script}))
        .await?;
    let id = runner.run("bench-log", None).await?;
    let mut sse = viewer.stream(id).await?;
    let connected_ns = now_ns();

    let mut total = Vec::with_capacity(lines);
    let mut to_store = Vec::with_capacity(lines);
    let mut to_viewer = Vec::with_capacity(lines);
    let mut next = 0usize;
    let mut before_connect = 0usize;
    let deadline = Duration::from_secs(60 + lines as u64 / 20);
    let end = tokio::time::timeout(deadline, async {
        while let Some(e) = sse.next().await? {
            if e.event == "end" {
                return Ok::<_, anyhow::Error>(e.data);
            }
            if e.event != "line" {
                continue;
            }
            let v: Value = serde_json::from_str(&e.data)?;
            // The SSE id is the line's seq: a resumed viewer relies on it matching.
            if e.id.as_deref().and_then(|x| x.parse::<i64>().ok()) != v["seq"].as_i64() {
                anyhow::bail!(
                    "SSE id {:?} does not match the line's seq {}",
                    e.id,
                    v["seq"]
                );
            }
            let text = v["line"].as_str().unwrap_or_default();
            let mut parts = text.split_whitespace();
            let (Some(i), Some(ns)) = (
                parts.next().and_then(|x| x.parse::<usize>().ok()),
                parts.next().and_then(|x| x.parse::<i128>().ok()),
            ) else {
                continue; // not a line of ours (a system line)
            };
            if i != next {
                anyhow::bail!("line {i} arrived where line {next} was expected");
            }
            next += 1;
            if ns < connected_ns {
                before_connect += 1;
                continue; // printed before the viewer attached: replayed history, not live
            }
            let arrived = e
                .arrived
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as i128)
                .unwrap_or(0);
            total.push((arrived - ns) as f64 / 1e6);
            if let Some(stored) = ts_ms(&v["ts"]) {
                to_store.push(stored as f64 - ns as f64 / 1e6);
                to_viewer.push(arrived as f64 / 1e6 - stored as f64);
            }
        }
        anyhow::bail!("the stream closed before the end event")
    })
    .await
    .map_err(|_| anyhow::anyhow!("job {id} did not end within {} s", deadline.as_secs()))??;
    if !end.contains("\"succeeded\"") {
        anyhow::bail!("job {id} ended: {end}");
    }
    if next != lines {
        anyhow::bail!("{next} of {lines} lines arrived");
    }

    let t = Summary::of(&total).ok_or_else(|| anyhow::anyhow!("no live line"))?;
    let s = Summary::of(&to_store).ok_or_else(|| anyhow::anyhow!("no stored ts"))?;
    let v = Summary::of(&to_viewer).ok_or_else(|| anyhow::anyhow!("no stored ts"))?;
    let mut r = Report::new(name);
    r.at_most(
        format!("p99 script → live viewer ({} lines)", t.n),
        t.p99,
        TARGET_P99_MS,
        "ms",
    );
    r.info(
        "p50 / max script → live viewer",
        format!("{:.2} ms / {:.2} ms", t.p50, t.max),
    );
    r.info(
        "p50 / p99 split: script → stored ts, stored ts → viewer",
        format!(
            "{:.1} / {:.1} ms, {:.1} / {:.1} ms",
            s.p50, s.p99, v.p50, v.p99
        ),
    );
    r.holds(
        "every line arrived once, in order",
        next == lines,
        format!("{next}/{lines}"),
    );
    println!("{name}: total      {}", t.line("ms"));
    println!("{name}: to store   {}", s.line("ms"));
    println!("{name}: to viewer  {}", v.line("ms"));
    r.set("lines", json!(lines));
    r.set("before_connect", json!(before_connect));
    r.set("latency_ms", t.to_json());
    r.set("script_to_store_ms", s.to_json());
    r.set("store_to_viewer_ms", v.to_json());
    Ok(r)
}

fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}
