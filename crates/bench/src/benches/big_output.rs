//! `big-output`: a script writes 50 MB of numbered 100-byte lines (the server runs with
//! `--max-output 100m` so nothing is cut); the paged logs API must return every line, in order,
//! with contiguous seq. Prints MB/s and the time from the script's end to the job's success.

use std::time::{Duration, Instant, UNIX_EPOCH};

use cronium_client::Method;
use serde_json::{json, Value};

use super::{real_python, Ctx, JobTimes};
use crate::report::Report;
use crate::server::{Server, ServerOpts};

/// Bytes per line, newline included: `{i:09}` + space + padding + `\n`.
const LINE: usize = 100;

pub async fn run(ctx: &Ctx, mb: usize) -> anyhow::Result<Report> {
    let n = mb * 1_000_000 / LINE;
    let pad = "x".repeat(LINE - 11);
    // The END marker goes to stderr after stdout is flushed: its timestamp is the script's end.
    let script = format!(
        "import sys, time\nw = sys.stdout.write\nfor i in range({n}):\n    w(f\"{{i:09d}} {pad}\\n\")\nsys.stdout.flush()\nsys.stderr.write(f\"END {{time.time_ns()}}\\n\")\n"
    );
    let opts = ServerOpts {
        database_url: None,
        extra_args: vec!["--max-output".into(), "100m".into()],
        env: vec![],
        data_dir: None,
    };
    let server = Server::start(&ctx.bins, &opts)?;
    server
        .put_event(&json!({"name": "bench-big", "type": "python", "script": script}))
        .await?;

    // Reference: the same script straight into a pipe.
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("big.py");
    std::fs::write(&file, &script)?;
    let (direct_ms, direct_out) =
        super::time_direct(&real_python()?, &[&file.display().to_string()])?;
    if direct_out.len() != n * LINE {
        anyhow::bail!(
            "the script wrote {} bytes directly, expected {}",
            direct_out.len(),
            n * LINE
        );
    }
    drop(direct_out);

    let t = Instant::now();
    let id = server.run("bench-big", None).await?;
    let job = server
        .wait_final(id, Duration::from_millis(10), Duration::from_secs(600))
        .await?;
    let observed_done = now_ns();
    let wall_ms = t.elapsed().as_secs_f64() * 1000.0;
    if job["status"] != "succeeded" {
        anyhow::bail!("job {id} ended `{}`: {}", job["status"], job["error"]);
    }
    let times = JobTimes::of(&server.job(id).await?);

    // Read it all back through the paged API and check it.
    let read = Instant::now();
    let mut after = 0i64;
    let mut prev_seq: Option<i64> = None;
    let mut gaps = 0usize;
    let mut expected = 0usize;
    let mut disorder = 0usize;
    let mut stdout_bytes = 0usize;
    let mut end_ns: Option<i128> = None;
    loop {
        let page = server
            .api(
                Method::GET,
                &format!("/api/v1/jobs/{id}/logs?after={after}&limit=10000"),
                None,
            )
            .await?;
        let lines = page["lines"].as_array().cloned().unwrap_or_default();
        for l in &lines {
            let seq = l["seq"].as_i64().unwrap_or(-1);
            if let Some(p) = prev_seq {
                if seq != p + 1 {
                    gaps += 1;
                }
            }
            prev_seq = Some(seq);
            let text = l["line"].as_str().unwrap_or_default();
            match l["stream"].as_str() {
                Some("stdout") => {
                    stdout_bytes += text.len() + 1;
                    let num = text.get(..9).and_then(|x| x.parse::<usize>().ok());
                    if num != Some(expected) || text.len() != LINE - 1 {
                        disorder += 1;
                    }
                    expected += 1;
                }
                _ => {
                    if let Some(ns) = text
                        .strip_prefix("END ")
                        .and_then(|x| x.trim().parse::<i128>().ok())
                    {
                        end_ns = Some(ns);
                    }
                }
            }
        }
        after = page["next_after"].as_i64().unwrap_or(after);
        if page["done"] == Value::Bool(true) || lines.is_empty() {
            break;
        }
    }
    let read_ms = read.elapsed().as_secs_f64() * 1000.0;
    let all = expected == n && disorder == 0 && gaps == 0;

    let mut r = Report::new("big-output");
    r.holds(
        format!("{mb} MB ({n} lines) all stored, in order, contiguous seq"),
        all,
        format!("{expected}/{n} lines, {disorder} out of order or cut, {gaps} seq gaps"),
    );
    let mbs = |ms: f64| (n * LINE) as f64 / 1e6 / (ms / 1000.0);
    let job_ms = match (times.started, times.finished) {
        (Some(s), Some(f)) => (f - s) as f64,
        _ => wall_ms,
    };
    r.info(
        "throughput: job started→finished / direct to a pipe",
        format!(
            "{:.1} MB/s ({:.0} ms) / {:.1} MB/s ({:.0} ms)",
            mbs(job_ms),
            job_ms,
            mbs(direct_ms),
            direct_ms
        ),
    );
    match end_ns {
        Some(end) => {
            let end_ms = end as f64 / 1e6;
            let fin = times.finished.map(|f| f as f64 - end_ms);
            let seen = observed_done as f64 / 1e6 - end_ms;
            r.info(
                "script end → job succeeded (finished_at / seen by a 10 ms poll)",
                format!(
                    "{} ms / {:.0} ms",
                    fin.map_or("-".into(), |x| format!("{x:.0}")),
                    seen
                ),
            );
            r.set("end_to_finished_ms", json!(fin.map(|x| x.round())));
            r.set("end_to_seen_ms", json!(seen.round()));
        }
        None => r.info(
            "script end → job succeeded",
            "END marker not found in the log",
        ),
    }
    r.info(
        "reading it back (paged API, 10000 lines/page)",
        format!("{read_ms:.0} ms"),
    );
    r.set("mb", json!(mb));
    r.set("lines", json!(n));
    r.set("lines_ok", json!(all));
    r.set("stdout_bytes", json!(stdout_bytes));
    r.set("job_ms", json!(job_ms));
    r.set("direct_ms", json!(direct_ms.round()));
    r.set("mb_per_s", json!(crate::stats::round3(mbs(job_ms))));
    r.set("read_back_ms", json!(read_ms.round()));
    r.set("setup_ms", json!(times.setup_ms));
    r.set("run_ms", json!(times.run_ms));
    Ok(r)
}

fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}
