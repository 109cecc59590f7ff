//! `failover`: two servers on one PostgreSQL database share an every-second schedule; the one
//! holding the scheduler's leadership lease is killed with `kill -9`, and the survivor must fire
//! the next ticks within 5 s of their instants, none twice and none lost (PRODUCT.md, Agents).
//! Each trial uses a fresh database and a fresh pair of servers; the figure is the worst lag
//! (created_at − scheduled_for) of a tick due after the kill, median and max over the trials.

use std::time::{Duration, Instant};

use cronium_client::Method;
use serde_json::{json, Value};

use super::Ctx;
use crate::report::Report;
use crate::server::{fresh_pg_database, ts_ms, Server, ServerOpts};
use crate::stats::Summary;

pub const TARGET_MS: f64 = 5000.0;
const EVENT: &str = "bench-failover";
/// How long after the kill the ticks are watched: past the 3 s lease and the 5 s bar.
const WATCH_MS: i64 = 8000;

/// One trial's figures.
struct Trial {
    /// Worst created_at − scheduled_for of the ticks due after the kill.
    worst_lag_ms: i64,
    /// From the kill to the survivor's first fired tick.
    first_fire_ms: i64,
    doubles: usize,
    missing: usize,
}

pub async fn run(ctx: &Ctx, trials: usize) -> anyhow::Result<Report> {
    let Some(base) = ctx.pg_url.as_deref() else {
        anyhow::bail!(
            "failover needs PostgreSQL: pass --pg-url or set CRONIUM_TEST_PG_URL (scripts/test-pg.sh)"
        );
    };
    let mut results = vec![];
    for i in 0..trials.max(1) {
        let t = trial(ctx, base).await?;
        println!(
            "failover: trial {}: worst lag {} ms, first fire {} ms after the kill, {} doubles, {} missing",
            i + 1,
            t.worst_lag_ms,
            t.first_fire_ms,
            t.doubles,
            t.missing
        );
        results.push(t);
    }
    let worst: Vec<f64> = results.iter().map(|t| t.worst_lag_ms as f64).collect();
    let first: Vec<f64> = results.iter().map(|t| t.first_fire_ms as f64).collect();
    let w = Summary::of(&worst).ok_or_else(|| anyhow::anyhow!("no trial"))?;
    let f = Summary::of(&first).ok_or_else(|| anyhow::anyhow!("no trial"))?;
    let doubles: usize = results.iter().map(|t| t.doubles).sum();
    let missing: usize = results.iter().map(|t| t.missing).sum();
    let mut r = Report::new("failover");
    r.at_most(
        "worst tick lag after kill -9 of the leader (max of trials)",
        w.max,
        TARGET_MS,
        "ms",
    );
    r.info(
        "worst tick lag, median of trials",
        format!("{:.0} ms ({} trials)", w.p50, results.len()),
    );
    r.info(
        "kill → survivor's first tick, median / max",
        format!("{:.0} / {:.0} ms", f.p50, f.max),
    );
    r.holds(
        "no tick twice, none lost",
        doubles == 0 && missing == 0,
        format!("{doubles} doubles, {missing} missing"),
    );
    r.set("worst_lag_ms", w.to_json());
    r.set("first_fire_ms", f.to_json());
    r.set("doubles", json!(doubles));
    r.set("missing", json!(missing));
    Ok(r)
}

async fn trial(ctx: &Ctx, base: &str) -> anyhow::Result<Trial> {
    let db = fresh_pg_database(base).await?;
    let opts = ServerOpts {
        database_url: Some(db),
        ..ServerOpts::default()
    };
    let a = Server::start(&ctx.bins, &opts)?;
    let b = Server::start(&ctx.bins, &opts)?;
    a.put_event(&json!({
        "name": EVENT, "type": "bash", "script": "true\n",
        "schedule": "* * * * * *", "overlap": "allow",
    }))
    .await?;
    // Both servers up, ticks flowing, and one known leader.
    let (mut leader, survivor) = super::poll_until(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let ticks = scheduled(&a).await?.len();
            let la = a.gauge("cronium_scheduler_leader").await;
            let lb = b.gauge("cronium_scheduler_leader").await;
            Ok((ticks >= 3).then_some((la, lb)).and_then(|l| match l {
                (Some(x), Some(y)) if x == 1.0 && y == 0.0 => Some(true),
                (Some(x), Some(y)) if x == 0.0 && y == 1.0 => Some(false),
                _ => None,
            }))
        },
    )
    .await
    .map(|a_leads| if a_leads { (a, b) } else { (b, a) })?;
    let killed = now_ms();
    leader.kill9();
    let watch_until = killed + WATCH_MS;
    let deadline = Instant::now() + Duration::from_millis(WATCH_MS as u64 + 20_000);
    let jobs = loop {
        let jobs = scheduled(&survivor).await?;
        if jobs.iter().any(|(at, _)| *at > watch_until) {
            break jobs;
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "the survivor fired no tick due more than {WATCH_MS} ms after the kill (server log in its data directory)"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop(leader);
    let after: Vec<&(i64, i64)> = jobs.iter().filter(|(at, _)| *at > killed).collect();
    let worst_lag_ms = after.iter().map(|(at, c)| c - at).max().unwrap_or(0);
    let first_fire_ms = after.iter().map(|(_, c)| c - killed).min().unwrap_or(0);
    let mut instants: Vec<i64> = jobs.iter().map(|(at, _)| *at).collect();
    instants.sort_unstable();
    let doubles = instants.windows(2).filter(|w| w[0] == w[1]).count();
    let missing = instants
        .windows(2)
        .map(|w| ((w[1] - w[0]) / 1000 - 1).max(0) as usize)
        .sum();
    Ok(Trial {
        worst_lag_ms,
        first_fire_ms,
        doubles,
        missing,
    })
}

/// (scheduled_for, created_at) of every scheduled job of the event, in ms.
async fn scheduled(s: &Server) -> anyhow::Result<Vec<(i64, i64)>> {
    let v: Value = s
        .api(
            Method::GET,
            &format!("/api/v1/jobs?event={EVENT}&limit=1000"),
            None,
        )
        .await?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter(|j| j["trigger"] == "schedule")
        .filter_map(|j| Some((ts_ms(&j["scheduled_for"])?, ts_ms(&j["created_at"])?)))
        .collect())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
