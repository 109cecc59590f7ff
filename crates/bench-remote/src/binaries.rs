//! The release binaries under test (`cronium`, `cronium-runner`, and the static runner shipped to
//! hosts and containers), built the way a release is, and a description of the machine and its
//! load for the report.
//!
//! Not a build system: it calls cargo and scripts/build-runner.sh and takes their answer.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::cronium::ServerSpec;

#[derive(Debug, thiserror::Error)]
pub enum BinariesError {
    #[error("{cmd}: {source}")]
    Io { cmd: String, source: std::io::Error },
    #[error("{cmd} failed with {status}")]
    Failed { cmd: String, status: String },
    #[error("{path} does not exist (build it, or drop --no-build)")]
    Missing { path: String },
}

fn status(cmd: &mut Command) -> Result<std::process::Output, BinariesError> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|source| BinariesError::Io {
            cmd: shown.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(BinariesError::Failed {
            cmd: shown,
            status: out.status.to_string(),
        });
    }
    Ok(out)
}

/// Builds (unless `build` is false) and locates the binaries; returns a spec whose data and
/// deploy directories the benchmarks fill in.
pub fn prepare(workspace: &Path, build: bool, poll: bool) -> Result<ServerSpec, BinariesError> {
    let release = workspace.join("target/release");
    let static_default = workspace.join("target/runner/cronium-runner");
    let static_runner = if build {
        status(Command::new("cargo").current_dir(workspace).args([
            "build",
            "--release",
            "-p",
            "cronium",
            "-p",
            "cronium-runner",
        ]))?;
        let out = status(&mut Command::new(workspace.join("scripts/build-runner.sh")))?;
        // The script prints the path on its last line.
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .map(|l| PathBuf::from(l.trim()))
            .unwrap_or(static_default)
    } else {
        static_default
    };
    let spec = ServerSpec {
        cronium: release.join("cronium"),
        runner: release.join("cronium-runner"),
        static_runner,
        data_dir: PathBuf::new(),
        deploy_dir: String::new(),
        fanout_concurrency: None,
        extra_args: Vec::new(),
        poll,
    };
    for p in [&spec.cronium, &spec.runner, &spec.static_runner] {
        if !p.exists() {
            return Err(BinariesError::Missing {
                path: p.display().to_string(),
            });
        }
    }
    Ok(spec)
}

/// Date, CPU, cores, memory and load, for the report header.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    format!(
        "{} UTC; {cpu}, {cores} cores, {mem_gib:.0} GiB; load average {}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M"),
        load()
    )
}

/// The 1/5/15-minute load averages.
pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}
