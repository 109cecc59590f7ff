//! `cron`: firing precision of an every-second schedule (`* * * * * *`) over a window of about a
//! minute: per job, created_at and started_at minus scheduled_for; and no drift (consecutive
//! scheduled_for exactly 1000 ms apart, none missing, none twice).

use std::time::Duration;

use cronium_client::Method;
use serde_json::{json, Value};

use super::Ctx;
use crate::report::Report;
use crate::server::{is_final, ts_ms, Server, ServerOpts};
use crate::stats::Summary;

pub const TARGET_P99_MS: f64 = 20.0;

pub async fn run(ctx: &Ctx, seconds: u64) -> anyhow::Result<Report> {
    let server = Server::start(&ctx.bins, &ServerOpts::default())?;
    let mut spec = json!({
        "name": "bench-cron", "type": "bash", "script": "true\n",
        "schedule": "* * * * * *", "overlap": "allow",
    });
    server.put_event(&spec).await?;
    // The measurement window itself: the schedule fires once a second while we wait.
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    spec["status"] = json!("paused");
    server.put_event(&spec).await?;

    let path = "/api/v1/jobs?event=bench-cron&limit=1000";
    let jobs: Vec<Value> = super::poll_until(
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async {
            let v = server.api(Method::GET, path, None).await?;
            let list = v.as_array().cloned().unwrap_or_default();
            let all_final = list
                .iter()
                .all(|j| is_final(j["status"].as_str().unwrap_or_default()));
            Ok(all_final.then_some(list))
        },
    )
    .await?;

    let mut rows: Vec<(i64, i64, Option<i64>)> = jobs
        .iter()
        .filter(|j| j["trigger"] == "schedule")
        .filter_map(|j| {
            Some((
                ts_ms(&j["scheduled_for"])?,
                ts_ms(&j["created_at"])?,
                ts_ms(&j["started_at"]),
            ))
        })
        .collect();
    rows.sort();
    if rows.len() < 2 {
        anyhow::bail!("only {} scheduled jobs in {seconds} s", rows.len());
    }
    let start_lag: Vec<f64> = rows
        .iter()
        .filter_map(|(s, _, st)| st.map(|st| (st - s) as f64))
        .collect();
    let create_lag: Vec<f64> = rows.iter().map(|(s, c, _)| (c - s) as f64).collect();
    let gaps: Vec<i64> = rows.windows(2).map(|w| w[1].0 - w[0].0).collect();
    let twice = gaps.iter().filter(|g| **g == 0).count();
    let off = gaps.iter().filter(|g| **g != 1000).count();
    let span_s = (rows[rows.len() - 1].0 - rows[0].0) / 1000 + 1;
    let failed = jobs.iter().filter(|j| j["status"] != "succeeded").count();

    let st = Summary::of(&start_lag).ok_or_else(|| anyhow::anyhow!("no job started"))?;
    let cr = Summary::of(&create_lag).ok_or_else(|| anyhow::anyhow!("no job created"))?;
    let mut r = Report::new("cron");
    r.at_most(
        "p99 started_at − scheduled_for",
        st.p99,
        TARGET_P99_MS,
        "ms",
    );
    r.info(
        "started_at − scheduled_for p50 / max",
        format!("{:.0} ms / {:.0} ms", st.p50, st.max),
    );
    r.info(
        "created_at − scheduled_for p50 / p99 / max",
        format!("{:.0} / {:.0} / {:.0} ms", cr.p50, cr.p99, cr.max),
    );
    r.holds(
        "no drift: consecutive fires 1000 ms apart",
        off == 0,
        format!(
            "{} fires over {span_s} s, {off} gaps ≠ 1000 ms, {twice} doubles",
            rows.len()
        ),
    );
    if failed > 0 {
        r.note(format!(
            "{failed} of {} scheduled jobs did not succeed",
            jobs.len()
        ));
    }
    println!("cron: started - scheduled {}", st.line("ms"));
    println!("cron: created - scheduled {}", cr.line("ms"));
    r.set("fires", json!(rows.len()));
    r.set("span_s", json!(span_s));
    r.set("start_lag_ms", st.to_json());
    r.set("create_lag_ms", cr.to_json());
    r.set("gaps_not_1000", json!(off));
    r.set("double_fires", json!(twice));
    r.set("failed", json!(failed));
    Ok(r)
}
