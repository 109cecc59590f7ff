//! `throughput`: enqueue K trivial jobs as fast as the API takes them, then time until all have
//! succeeded (the last `finished_at`, on the server's clock, minus the first POST); on SQLite and
//! on PostgreSQL with the same binary.
//!
//! Not a latency benchmark: jobs overlap (the embedded agent runs several at once).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cronium_client::Method;
use futures::StreamExt;
use serde_json::json;

use super::Ctx;
use crate::report::Report;
use crate::server::{fresh_pg_database, ts_ms, Server, ServerOpts};

/// POSTs in flight at once while enqueueing.
const CLIENTS: usize = 8;

pub async fn run(ctx: &Ctx, k: usize) -> anyhow::Result<Report> {
    let mut r = Report::new("throughput");
    let sqlite = one_backend(ctx, k, ServerOpts::default()).await?;
    r.info(
        format!("SQLite: {k} trivial jobs"),
        format!(
            "{:.0} jobs/s ({:.0} ms; enqueue {:.0} jobs/s)",
            sqlite.jobs_per_s, sqlite.total_ms, sqlite.enqueue_per_s
        ),
    );
    r.set("sqlite", sqlite.json());
    match &ctx.pg_url {
        None => {
            r.info(
                "PostgreSQL",
                "not measured: no --pg-url / CRONIUM_TEST_PG_URL",
            );
            r.set("postgres", json!(null));
        }
        Some(base) => {
            let url = fresh_pg_database(base).await?;
            let opts = ServerOpts {
                database_url: Some(url),
                extra_args: vec![],
                env: vec![],
                data_dir: None,
            };
            let pg = one_backend(ctx, k, opts).await?;
            r.info(
                format!("PostgreSQL: {k} trivial jobs"),
                format!(
                    "{:.0} jobs/s ({:.0} ms; enqueue {:.0} jobs/s)",
                    pg.jobs_per_s, pg.total_ms, pg.enqueue_per_s
                ),
            );
            r.info(
                "PostgreSQL / SQLite",
                format!("{:.2}×", pg.jobs_per_s / sqlite.jobs_per_s),
            );
            r.set("postgres", pg.json());
        }
    }
    Ok(r)
}

pub struct Figures {
    pub k: usize,
    pub total_ms: f64,
    pub enqueue_ms: f64,
    pub jobs_per_s: f64,
    pub enqueue_per_s: f64,
}

impl Figures {
    pub fn json(&self) -> serde_json::Value {
        json!({
            "k": self.k,
            "total_ms": self.total_ms.round(),
            "enqueue_ms": self.enqueue_ms.round(),
            "jobs_per_s": self.jobs_per_s.round(),
            "enqueue_per_s": self.enqueue_per_s.round(),
        })
    }
}

fn epoch_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn one_backend(ctx: &Ctx, k: usize, opts: ServerOpts) -> anyhow::Result<Figures> {
    let server = Server::start(&ctx.bins, &opts)?;
    measure(&server, k).await
}

/// K trivial jobs through `server` (whoever runs them: its embedded agent or remote agents).
pub async fn measure(server: &Server, k: usize) -> anyhow::Result<Figures> {
    if !(1..=999).contains(&k) {
        anyhow::bail!("-k must be between 1 and 999 (the job list API pages at 1000), got {k}");
    }
    for name in ["bench-warm", "bench-tp"] {
        server
            .put_event(&json!({"name": name, "type": "bash", "script": "true\n"}))
            .await?;
    }
    // One run of the measured event first: its payload is then cached, so the figure is the
    // steady state (and concurrent first runs do not race to write the same payload file).
    let mut warm_id = 0;
    for name in [
        "bench-warm",
        "bench-warm",
        "bench-warm",
        "bench-warm",
        "bench-tp",
    ] {
        warm_id = server.run(name, None).await?;
        server
            .wait_final(warm_id, Duration::from_millis(5), Duration::from_secs(30))
            .await?;
    }

    let t0 = epoch_ms();
    let start = std::time::Instant::now();
    let results: Vec<_> = futures::stream::iter(0..k)
        .map(|_| server.run("bench-tp", None))
        .buffer_unordered(CLIENTS)
        .collect()
        .await;
    let enqueue_ms = start.elapsed().as_secs_f64() * 1000.0;
    for res in results {
        res?;
    }
    // Completion is read from the rows' finished_at, so the poll interval does not bias it.
    let path = format!("/api/v1/jobs?event=bench-tp&limit={}", k + 1);
    let jobs = super::poll_until(
        Duration::from_secs(300),
        Duration::from_millis(50),
        || async {
            let v = server.api(Method::GET, &path, None).await?;
            let mut list = v.as_array().cloned().unwrap_or_default();
            list.retain(|j| j["id"].as_i64().is_some_and(|id| id > warm_id));
            let done = list.len() == k
                && list
                    .iter()
                    .all(|j| crate::server::is_final(j["status"].as_str().unwrap_or_default()));
            Ok(done.then_some(list))
        },
    )
    .await?;
    let bad: Vec<_> = jobs.iter().filter(|j| j["status"] != "succeeded").collect();
    if let Some(j) = bad.first() {
        anyhow::bail!("{} of {k} jobs did not succeed, e.g. {j}", bad.len());
    }
    let last = jobs
        .iter()
        .filter_map(|j| ts_ms(&j["finished_at"]))
        .max()
        .ok_or_else(|| anyhow::anyhow!("no finished_at on the jobs"))?;
    let total_ms = (last - t0) as f64;
    Ok(Figures {
        k,
        total_ms,
        enqueue_ms,
        jobs_per_s: k as f64 / (total_ms / 1000.0),
        enqueue_per_s: k as f64 / (enqueue_ms / 1000.0),
    })
}
