//! The peer of the workflow benchmark: Prefect 3 (pinned, installed from PyPI into a venv under
//! `target/bench-venv/` on first use) running a sequential flow of N fibo(10) tasks
//! (`crates/bench/prefect/flow.py`). Prefect's tasks are Python functions in one process, so it
//! starts no interpreter per task where a Cronium node runs a script; the report says so.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::stats::Summary;

pub const VERSION: &str = "3.9.1";
const FLOW: &str = include_str!("../../prefect/flow.py");

/// What one Prefect process measured.
pub struct PrefectRun {
    /// The first flow, which also starts Prefect's ephemeral server.
    pub first_flow_ms: f64,
    /// The following flows.
    pub flows: Summary,
    pub import_ms: f64,
}

/// Installs Prefect if needed and runs `reps` warm flows of `n` tasks (after one cold one).
pub fn run(root: &Path, python: &Path, n: usize, reps: usize) -> anyhow::Result<PrefectRun> {
    let venv = install(root, python)?;
    let dir = tempfile::Builder::new()
        .prefix("cronium-bench-prefect-")
        .tempdir()?;
    let script = dir.path().join("flow.py");
    std::fs::write(&script, FLOW)?;
    let out = Command::new(venv.join("bin/python"))
        .arg(&script)
        .arg(n.to_string())
        .arg(reps.to_string())
        // Its own home (database, settings), no telemetry, quiet logs.
        .env("PREFECT_HOME", dir.path().join("home"))
        .env("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        .env("PREFECT_LOGGING_LEVEL", "WARNING")
        .output()
        .map_err(|e| anyhow::anyhow!("running Prefect's python: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| l.starts_with('{'));
    let v: Value = match (out.status.success(), line) {
        (true, Some(l)) => serde_json::from_str(l)?,
        _ => anyhow::bail!(
            "the Prefect flow failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .join(" | ")
        ),
    };
    let flows: Vec<f64> = v["flow_ms"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_f64)
        .collect();
    Ok(PrefectRun {
        first_flow_ms: v["first_flow_ms"].as_f64().unwrap_or(f64::NAN),
        flows: Summary::of(&flows).ok_or_else(|| anyhow::anyhow!("Prefect reported no flow"))?,
        import_ms: v["import_ms"].as_f64().unwrap_or(f64::NAN),
    })
}

/// The venv with Prefect `VERSION`, created with `python` on first use.
fn install(root: &Path, python: &Path) -> anyhow::Result<PathBuf> {
    let venv = root.join(format!("target/bench-venv/prefect-{VERSION}"));
    if venv.join(".installed").is_file() {
        return Ok(venv);
    }
    eprintln!(
        "installing Prefect {VERSION} into {} (once)",
        venv.display()
    );
    let _ = std::fs::remove_dir_all(&venv);
    let status = Command::new(python)
        .args(["-m", "venv"])
        .arg(&venv)
        .status()?;
    if !status.success() {
        anyhow::bail!(
            "`{} -m venv` failed (Debian: apt-get install python3-venv)",
            python.display()
        );
    }
    let status = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .arg(format!("prefect=={VERSION}"))
        .status()?;
    if !status.success() {
        anyhow::bail!("pip install prefect=={VERSION} failed (PyPI reachable?)");
    }
    std::fs::write(venv.join(".installed"), VERSION)?;
    Ok(venv)
}
