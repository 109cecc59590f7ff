//! `idle-rss`: resident memory of a freshly started server after it idled for a while (no
//! events, no jobs), read from /proc/PID/status.

use std::time::Duration;

use cronium_client::Method;
use serde_json::json;

use super::Ctx;
use crate::report::Report;
use crate::server::{Server, ServerOpts};

pub const TARGET_MB: f64 = 40.0;

pub async fn run(ctx: &Ctx, seconds: u64) -> anyhow::Result<Report> {
    let server = Server::start(&ctx.bins, &ServerOpts::default())?;
    let (start_rss, _) = server.rss_kb()?;
    // The idle period is what is measured: a scheduler or agent that allocates while idle shows.
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    // A health check proves the server is alive (a crashed server has no RSS to read).
    server.api(Method::GET, "/healthz", None).await?;
    let (rss, hwm) = server.rss_kb()?;
    let mb = rss as f64 / 1024.0;
    let mut r = Report::new("idle-rss");
    r.at_most(format!("VmRSS after {seconds} s idle"), mb, TARGET_MB, "MB");
    r.info(
        "VmRSS at start / VmHWM (peak)",
        format!(
            "{:.1} MB / {:.1} MB",
            start_rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        ),
    );
    r.set("idle_s", json!(seconds));
    r.set("rss_kb", json!(rss));
    r.set("rss_at_start_kb", json!(start_rss));
    r.set("hwm_kb", json!(hwm));
    Ok(r)
}
