//! `chain40`: 40 light Python runs (a recursive fib(10), then print) chained through the queue,
//! each enqueued when the previous one's live log ended, against the same 40 scripts run directly
//! back to back with the real python binary, in the same benchmark. The chain is repeated and the
//! median total of each side is reported (the machine is shared).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{median_of, real_python, time_direct, Ctx, JobTimes};
use crate::report::Report;
use crate::server::{Server, ServerOpts};
use crate::stats::Summary;

pub const TARGET_TOTAL_S: f64 = 1.0;
pub const TARGET_PER_RUN_MS: f64 = 5.0;
const RUNS: usize = 40;

const FIBO: &str =
    "def fibo(n):\n    return n if n < 2 else fibo(n - 1) + fibo(n - 2)\n\nprint(fibo(10))\n";

/// The distribution's own interpreter, used by default: what a fresh Debian machine runs. A
/// version manager's interpreter can carry site hooks (`.pth` files) that cost tens of
/// milliseconds on every start, which would measure the machine rather than Cronium.
const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// `python`: use this interpreter on both sides (default: [`SYSTEM_PYTHON`] if present, else the
/// one `python3` on PATH resolves to); the server finds it first on its PATH as `python3`.
pub async fn run(ctx: &Ctx, reps: usize, python: Option<PathBuf>) -> anyhow::Result<Report> {
    let dir = tempfile::tempdir()?;
    let mut opts = ServerOpts::default();
    let system = PathBuf::from(SYSTEM_PYTHON);
    let python = python.or_else(|| system.exists().then_some(system));
    let python = match python {
        None => real_python()?,
        Some(p) => {
            let p = std::fs::canonicalize(&p)
                .map_err(|e| anyhow::anyhow!("--python `{}`: {e}", p.display()))?;
            let bin = dir.path().join("bin");
            std::fs::create_dir(&bin)?;
            std::os::unix::fs::symlink(&p, bin.join("python3"))?;
            let path = std::env::var("PATH").unwrap_or_default();
            opts.env
                .push(("PATH".into(), format!("{}:{path}", bin.display())));
            p
        }
    };
    let script = dir.path().join("fibo.py");
    std::fs::write(&script, FIBO)?;
    let script_arg = script.display().to_string();
    let (_, out) = time_direct(&python, &[&script_arg])?;
    if String::from_utf8_lossy(&out).trim() != "55" {
        anyhow::bail!(
            "fibo.py printed `{}`, expected 55",
            String::from_utf8_lossy(&out).trim()
        );
    }

    let server = Server::start(&ctx.bins, &opts)?;
    server
        .put_event(&json!({"name": "bench-fibo", "type": "python", "script": FIBO}))
        .await?;
    for _ in 0..3 {
        chained(&server, 1).await?;
    }

    let mut queued = Vec::with_capacity(reps);
    let mut direct = Vec::with_capacity(reps);
    let mut ids = vec![];
    for _ in 0..reps.max(1) {
        // Interleaved, so both sides see the same background load.
        let t = Instant::now();
        for _ in 0..RUNS {
            time_direct(&python, &[&script_arg])?;
        }
        direct.push(t.elapsed().as_secs_f64() * 1000.0);
        let (ms, these) = chained(&server, RUNS).await?;
        queued.push(ms);
        ids = these;
    }
    let mut times = vec![];
    for id in &ids {
        let job = server.job(*id).await?;
        let t = JobTimes::of(&job);
        times.push(t);
    }

    let q = Summary::of(&queued).ok_or_else(|| anyhow::anyhow!("no chain"))?;
    let d = Summary::of(&direct).ok_or_else(|| anyhow::anyhow!("no direct series"))?;
    let per_run = (q.p50 - d.p50) / RUNS as f64;
    let mut r = Report::new("chain40");
    r.at_most(
        "40 chained runs, total (median)",
        q.p50 / 1000.0,
        TARGET_TOTAL_S,
        "s",
    );
    r.at_most(
        "orchestration overhead per run",
        per_run,
        TARGET_PER_RUN_MS,
        "ms",
    );
    r.info(
        "same 40 scripts run directly (median)",
        format!(
            "{:.3} s ({:.1} ms/run); queued/direct {:.2}×",
            d.p50 / 1000.0,
            d.p50 / RUNS as f64,
            q.p50 / d.p50
        ),
    );
    r.info("python", format!("`{}`", python.display()));
    r.note(format!(
        "median per run of the last chain (ms, server clock): created→started {}, setup {}, run {}, agent bookkeeping {}",
        median_of(times.iter().map(|t| t.queue_ms())),
        median_of(times.iter().map(|t| t.setup_ms.map(|x| x as f64))),
        median_of(times.iter().map(|t| t.run_ms.map(|x| x as f64))),
        median_of(times.iter().map(|t| t.bookkeeping_ms())),
    ));
    println!("chain40: queued total {}", q.line("ms"));
    println!("chain40: direct total {}", d.line("ms"));
    r.set("reps", json!(reps));
    r.set("python", json!(python.display().to_string()));
    r.set("queued_total_ms", q.to_json());
    r.set("direct_total_ms", d.to_json());
    r.set("overhead_per_run_ms", json!(crate::stats::round3(per_run)));
    Ok(r)
}

/// `n` runs, each enqueued when the previous one ended. Returns (wall ms, job ids).
async fn chained(server: &Server, n: usize) -> anyhow::Result<(f64, Vec<i64>)> {
    let t = Instant::now();
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let id = server.run("bench-fibo", None).await?;
        let mut sse = server.stream(id).await?;
        let end = tokio::time::timeout(Duration::from_secs(30), sse.until_end())
            .await
            .map_err(|_| anyhow::anyhow!("job {id} did not end within 30 s"))??;
        if !end.data.contains("\"succeeded\"") {
            anyhow::bail!("job {id} ended: {}", end.data);
        }
        ids.push(id);
    }
    Ok((t.elapsed().as_secs_f64() * 1000.0, ids))
}
