//! The container overhead benchmark (PRODUCT.md quality bar): a trivial bash event with a
//! `container` target run through a real Cronium server, against a plain
//! `docker run --rm cronium/bash:1 bash -c true` timed as a whole command, interleaved so that
//! both see the same machine load.
//!
//! Not a Docker benchmark: the image is built locally (scripts/build-images.sh), never pulled.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cronium::{CroniumError, Sample, Server, ServerSpec};
use crate::stats::{fmt_opt, median, median_ms};

pub const IMAGE: &str = "cronium/bash:1";

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(transparent)]
    Cronium(#[from] CroniumError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{cmd} failed ({status}): {stderr}")]
    Command {
        cmd: String,
        status: String,
        stderr: String,
    },
}

#[derive(Debug, Default)]
pub struct ContainerResult {
    pub cronium: Vec<Sample>,
    pub docker: Vec<Duration>,
}

async fn checked(cmd: &mut tokio::process::Command) -> Result<(), ContainerError> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|source| ContainerError::Io {
            what: shown.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ContainerError::Command {
            cmd: shown,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// Builds the image when it is missing (scripts/build-images.sh is idempotent and fast when
/// everything is present).
pub async fn ensure_image(workspace: &Path) -> Result<(), ContainerError> {
    let present = tokio::process::Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .map(|s| s.success())
        .unwrap_or(false);
    if !present {
        eprintln!("{IMAGE} is missing: running scripts/build-images.sh");
        checked(&mut tokio::process::Command::new(
            workspace.join("scripts/build-images.sh"),
        ))
        .await?;
    }
    Ok(())
}

/// One plain `docker run --rm IMAGE bash -c true`, timed as a whole command.
async fn docker_once() -> Result<Duration, ContainerError> {
    let t = Instant::now();
    checked(
        tokio::process::Command::new("docker")
            .args(["run", "--rm", IMAGE, "bash", "-c", "true"])
            .stdout(Stdio::null()),
    )
    .await?;
    Ok(t.elapsed())
}

/// Runs `runs` interleaved pairs (after one unmeasured warm-up of each).
pub async fn run(
    workspace: &Path,
    bins: &ServerSpec,
    runs: usize,
) -> Result<ContainerResult, ContainerError> {
    ensure_image(workspace).await?;
    let work = tempfile::Builder::new()
        .prefix("cronium-bench-container-")
        .tempdir()
        .map_err(|source| ContainerError::Io {
            what: "create a work directory".into(),
            source,
        })?;
    let spec = ServerSpec {
        data_dir: work.path().join("data"),
        ..bins.clone()
    };
    let server = Server::start(&spec)?;
    server
        .put_event(&json!({
            "name": "bench-container", "type": "bash", "script": "true",
            "target": {"container": {}},
        }))
        .await?;
    server.run_timed("bench-container", 1).await?;
    docker_once().await?;
    let mut r = ContainerResult::default();
    for _ in 0..runs {
        r.cronium
            .push(server.run_timed("bench-container", 1).await?);
        r.docker.push(docker_once().await?);
    }
    Ok(r)
}

pub fn markdown(r: &ContainerResult) -> String {
    let walls: Vec<Duration> = r.cronium.iter().map(|s| s.wall).collect();
    let c = median(&walls);
    let d = median(&r.docker);
    let ratio = match (c, d) {
        (Some(c), Some(d)) if d > Duration::ZERO => Some(c.as_secs_f64() / d.as_secs_f64()),
        _ => None,
    };
    let m = |f: fn(&Sample) -> Option<i64>| {
        let v: Vec<i64> = r.cronium.iter().filter_map(f).collect();
        median_ms(&v)
            .map(|x| format!("{x} ms"))
            .unwrap_or_else(|| "n/a".into())
    };
    let mut s = String::new();
    s.push_str("| run | median | samples |\n| --- | ---: | ---: |\n");
    s.push_str(&format!(
        "| cronium, container target (POST run -> final) | {} | {} |\n",
        fmt_opt(c),
        walls.len()
    ));
    s.push_str(&format!(
        "| `docker run --rm {IMAGE} bash -c true` | {} | {} |\n",
        fmt_opt(d),
        r.docker.len()
    ));
    s.push_str(&format!(
        "\nCronium: POST answered median {}, created -> final (server clock) median {}, queue (created -> started) median {}, job `duration_ms` median {}, execution `setup_ms` median {}, `run_ms` median {}.\n",
        fmt_opt(median(&r.cronium.iter().map(|x| x.post).collect::<Vec<_>>())),
        m(|x| x.server_ms),
        m(|x| x.queue_ms),
        m(|x| x.job_ms),
        m(|x| x.setup_ms_max),
        m(|x| x.run_ms_max)
    ));
    match ratio {
        Some(x) => s.push_str(&format!(
            "\nRatio cronium / docker run: **{x:.2}x** (target <= 1.2x): **{}**\n",
            if x <= 1.2 { "PASS" } else { "FAIL" }
        )),
        None => s.push_str("\nRatio: n/a\n"),
    }
    s
}
