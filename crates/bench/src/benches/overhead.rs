//! `overhead`: enqueue-to-completion overhead of a trivial local job (bash `true`), one run at a
//! time: wall time from POST /run to the `end` event of the job's live log, minus the script's
//! own run time as the runner measured it (executions[0].run_ms). A direct `bash -c true` series
//! in the same run gives a second baseline that does not trust the runner's clock.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{median_of, time_direct, Ctx, JobTimes};
use crate::report::Report;
use crate::server::{Server, ServerOpts};
use crate::stats::Summary;

pub const TARGET_P50_MS: f64 = 5.0;

pub async fn run(ctx: &Ctx, n: usize) -> anyhow::Result<Report> {
    let mut server = Server::start(&ctx.bins, &ServerOpts::default())?;
    server
        .put_event(&json!({"name": "bench-true", "type": "bash", "script": "true\n"}))
        .await?;
    // Warm-up: connection pool, page cache, SQLite statement cache.
    for _ in 0..10 {
        one(&server).await?;
    }
    let mut wall = Vec::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let (ms, id) = one(&server).await?;
        wall.push(ms);
        ids.push(id);
    }
    // The same series on a new connection per request: what remains once connection reuse
    // (a viewer's kept-alive connection) cannot add a delayed-ACK wait.
    server.use_fresh_connections()?;
    let mut fresh_overhead = Vec::with_capacity(n);
    for _ in 0..n {
        let (ms, id) = one(&server).await?;
        let run_ms = server.job(id).await?["executions"][0]["run_ms"]
            .as_i64()
            .unwrap_or(0);
        fresh_overhead.push(ms - run_ms as f64);
    }
    let mut times = Vec::with_capacity(n);
    let mut overhead = Vec::with_capacity(n);
    for (id, w) in ids.iter().zip(&wall) {
        let job = server.job(*id).await?;
        if job["status"] != "succeeded" {
            anyhow::bail!("job {id} ended `{}`, not succeeded: {job}", job["status"]);
        }
        let t = JobTimes::of(&job);
        overhead.push(w - t.run_ms.unwrap_or(0) as f64);
        times.push(t);
    }
    // Baseline: the same script run directly, back to back.
    let bash = Path::new("/bin/bash");
    let mut direct = Vec::with_capacity(n);
    for _ in 0..n {
        direct.push(time_direct(bash, &["-c", "true"])?.0);
    }

    let wall_s = Summary::of(&wall).ok_or_else(|| anyhow::anyhow!("no runs"))?;
    let over_s = Summary::of(&overhead).ok_or_else(|| anyhow::anyhow!("no runs"))?;
    let direct_s = Summary::of(&direct).ok_or_else(|| anyhow::anyhow!("no direct runs"))?;
    let vs_direct = wall_s.p50 - direct_s.p50;
    let fresh_s = Summary::of(&fresh_overhead).ok_or_else(|| anyhow::anyhow!("no fresh runs"))?;

    let mut r = Report::new("overhead");
    r.at_most(
        "p50 overhead (wall − run_ms)",
        over_s.p50,
        TARGET_P50_MS,
        "ms",
    );
    r.info(
        "p99 overhead (wall − run_ms)",
        format!("{:.2} ms", over_s.p99),
    );
    r.info(
        "p50 / p99 overhead, new connection per request",
        format!("{:.2} ms / {:.2} ms", fresh_s.p50, fresh_s.p99),
    );
    r.info(
        "p50 wall / p50 direct `bash -c true`",
        format!(
            "{:.2} ms / {:.2} ms (Δ {:.2} ms)",
            wall_s.p50, direct_s.p50, vs_direct
        ),
    );
    r.note(format!(
        "median breakdown per job (ms, server clock): created→started {}, setup {}, run {}, agent bookkeeping {}; client-side rest {}",
        median_of(times.iter().map(|t| t.queue_ms())),
        median_of(times.iter().map(|t| t.setup_ms.map(|x| x as f64))),
        median_of(times.iter().map(|t| t.run_ms.map(|x| x as f64))),
        median_of(times.iter().map(|t| t.bookkeeping_ms())),
        median_of(times.iter().zip(&wall).map(|(t, w)| t.finished.map(|f| w - (f - t.created) as f64))),
    ));
    r.set("n", json!(n));
    r.set("wall_ms", wall_s.to_json());
    r.set("overhead_ms", over_s.to_json());
    r.set("direct_bash_ms", direct_s.to_json());
    r.set("overhead_fresh_connections_ms", fresh_s.to_json());
    r.set(
        "p50_wall_minus_direct_ms",
        json!(crate::stats::round3(vs_direct)),
    );
    println!("overhead: wall     {}", wall_s.line("ms"));
    println!("overhead: overhead {}", over_s.line("ms"));
    println!("overhead: direct   {}", direct_s.line("ms"));
    println!("overhead: fresh    {}", fresh_s.line("ms"));
    Ok(r)
}

/// One run: POST, then follow the live log to its `end` event. Returns (wall ms, job id).
async fn one(server: &Server) -> anyhow::Result<(f64, i64)> {
    let t = Instant::now();
    let id = server.run("bench-true", None).await?;
    let mut sse = server.stream(id).await?;
    let end = tokio::time::timeout(Duration::from_secs(30), sse.until_end())
        .await
        .map_err(|_| anyhow::anyhow!("job {id} did not end within 30 s"))??;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    if !end.data.contains("\"succeeded\"") {
        anyhow::bail!("job {id} ended: {}", end.data);
    }
    Ok((ms, id))
}
