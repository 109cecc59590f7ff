//! `runner-size`: size of the static runner built by scripts/build-runner.sh (the binary shipped to
//! containers and SSH hosts); without that script, the release-runner profile binary.
//!
//! Not a build check: the script itself verifies static linking; this reads the size it left.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use super::Ctx;
use crate::report::Report;

pub const TARGET_BYTES: u64 = 3 * 1024 * 1024;

pub async fn run(ctx: &Ctx, build: bool, given: Option<PathBuf>) -> anyhow::Result<Report> {
    let script = ctx.root.join("scripts/build-runner.sh");
    let (path, how) = match given {
        Some(p) => (p, "given path".to_string()),
        None if build && script.is_file() => {
            // The script prints the binary's path on its last line.
            let out = Command::new(&script).current_dir(&ctx.root).output()?;
            if !out.status.success() {
                anyhow::bail!(
                    "scripts/build-runner.sh failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .rev()
                        .take(5)
                        .collect::<Vec<_>>()
                        .join(" / ")
                );
            }
            let stdout = String::from_utf8_lossy(&out.stdout);
            let last = stdout.lines().last().unwrap_or_default().trim().to_string();
            (PathBuf::from(last), "scripts/build-runner.sh".to_string())
        }
        None => {
            let candidates = [
                ctx.root.join("target/runner/cronium-runner"),
                ctx.root.join("target/release-runner/cronium-runner"),
            ];
            match candidates.iter().find(|p| p.is_file()) {
                Some(p) => (p.clone(), "existing release-runner build".to_string()),
                None => (
                    ctx.bins.runner.clone(),
                    "release build (not the shipped profile)".to_string(),
                ),
            }
        }
    };
    let bytes = size(&path)?;
    let mut r = Report::new("runner-size");
    r.at_most(
        "runner binary size",
        bytes as f64 / (1024.0 * 1024.0),
        TARGET_BYTES as f64 / (1024.0 * 1024.0),
        "MiB",
    );
    r.info("runner measured", format!("`{}` ({how})", path.display()));
    let release_runner = ctx.root.join("target/release/cronium-runner");
    if release_runner != path {
        if let Ok(release) = size(&release_runner) {
            r.info(
                "release-profile runner (dynamic, for comparison)",
                format!("{:.2} MiB", release as f64 / 1048576.0),
            );
        }
    }
    r.set("path", json!(path.display().to_string()));
    r.set("bytes", json!(bytes));
    r.set("how", json!(how));
    Ok(r)
}

fn size(p: &Path) -> anyhow::Result<u64> {
    std::fs::metadata(p)
        .map(|m| m.len())
        .map_err(|e| anyhow::anyhow!("reading the size of `{}`: {e}", p.display()))
}
