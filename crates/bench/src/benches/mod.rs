//! The benchmarks, one file each, named after the subcommand that runs it. Each starts its own
//! server (so one benchmark's leftovers never skew the next) and returns a `Report`.
//!
//! Not where figures are formatted (`report`) or where the server process is managed (`server`).

pub mod agents;
pub mod big_output;
pub mod chain40;
pub mod cron;
pub mod failover;
pub mod helpers;
pub mod idle_rss;
pub mod log_latency;
pub mod overhead;
pub mod prefect;
pub mod replicas;
pub mod runner_size;
pub mod throughput;
pub mod ui;
pub mod workflow;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::server::{ts_ms, Binaries};

/// What every benchmark may need from the command line.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub bins: Binaries,
    /// A PostgreSQL superuser URL (a fresh database is created per run); `None`: SQLite only.
    pub pg_url: Option<String>,
    /// The workspace root (for scripts/ and target/).
    pub root: PathBuf,
}

/// The real python binary behind whatever `python3` on PATH is (often a slow pyenv shim),
/// resolved once as PRODUCT.md asks.
pub fn real_python() -> anyhow::Result<PathBuf> {
    let out = Command::new("python3")
        .args(["-c", "import sys;print(sys.executable)"])
        .output()
        .map_err(|e| anyhow::anyhow!("running python3 to find the real interpreter: {e}"))?;
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !out.status.success() || !p.is_file() {
        anyhow::bail!(
            "python3 did not report a usable sys.executable (got `{}`)",
            p.display()
        );
    }
    Ok(p)
}

/// Wall time of one direct run of `program args...` with stdout captured, in ms.
pub fn time_direct(program: &Path, args: &[&str]) -> anyhow::Result<(f64, Vec<u8>)> {
    let t = Instant::now();
    let out = Command::new(program).args(args).output()?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    if !out.status.success() {
        anyhow::bail!(
            "{} {args:?} failed: {}",
            program.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((ms, out.stdout))
}

/// Server-side timestamps of a finished job and its first execution, in ms since the epoch
/// (durations in ms), for breakdowns of where the time went.
#[derive(Debug, Clone, Copy, Default)]
pub struct JobTimes {
    pub created: i64,
    pub started: Option<i64>,
    pub finished: Option<i64>,
    pub setup_ms: Option<i64>,
    pub run_ms: Option<i64>,
}

impl JobTimes {
    pub fn of(job: &Value) -> JobTimes {
        let x = &job["executions"][0];
        JobTimes {
            created: ts_ms(&job["created_at"]).unwrap_or(0),
            started: ts_ms(&job["started_at"]),
            finished: ts_ms(&job["finished_at"]),
            setup_ms: x["setup_ms"].as_i64(),
            run_ms: x["run_ms"].as_i64(),
        }
    }

    /// created → job started (claim latency).
    pub fn queue_ms(&self) -> Option<f64> {
        self.started.map(|s| (s - self.created) as f64)
    }

    /// job started → job finished, minus setup and run: the agent's own bookkeeping.
    pub fn bookkeeping_ms(&self) -> Option<f64> {
        let (s, f) = (self.started?, self.finished?);
        Some((f - s - self.setup_ms.unwrap_or(0) - self.run_ms.unwrap_or(0)) as f64)
    }
}

/// Median of a breakdown component over jobs, for the notes; `-` when no job had it.
pub fn median_of(xs: impl Iterator<Item = Option<f64>>) -> String {
    let v: Vec<f64> = xs.flatten().collect();
    match crate::stats::Summary::of(&v) {
        Some(s) => format!("{:.1}", s.p50),
        None => "-".into(),
    }
}

/// A time-bounded poll: the benchmarks wait for conditions, never for fixed sleeps.
pub async fn poll_until<F, Fut, T>(
    timeout: Duration,
    interval: Duration,
    mut f: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("condition not met within {} s", timeout.as_secs());
        }
        tokio::time::sleep(interval).await;
    }
}
