//! `replicas`: two servers on one PostgreSQL, A with the agent and the scheduler, B with
//! `--no-agent --no-scheduler`. The log-latency job (a line every ~10 ms) runs on A's agent and
//! is followed on A (the in-process bus) and then on B (woken through `LISTEN/NOTIFY`): the same
//! script → viewer latency, p50/p99. Also the round trip of one `NOTIFY` statement as the relay
//! sends it, the cost of one log batch's signal (the relay sends at most one statement per
//! batch, fewer when batches queue while one is on its way; the agent never waits for it).

use std::time::Instant;

use super::log_latency::{measure, TARGET_P99_MS};
use super::Ctx;
use crate::report::Report;
use crate::server::{fresh_pg_database, Server, ServerOpts};
use crate::stats::Summary;

/// NOTIFY statements timed.
const NOTIFIES: usize = 2000;

pub async fn run(ctx: &Ctx, lines: usize) -> anyhow::Result<Report> {
    let Some(base) = ctx.pg_url.as_deref() else {
        anyhow::bail!(
            "replicas needs PostgreSQL: pass --pg-url or set CRONIUM_TEST_PG_URL (scripts/test-pg.sh)"
        );
    };
    let db = fresh_pg_database(base).await?;
    let a = Server::start(
        &ctx.bins,
        &ServerOpts {
            database_url: Some(db.clone()),
            ..ServerOpts::default()
        },
    )?;
    let b = Server::start(
        &ctx.bins,
        &ServerOpts {
            database_url: Some(db.clone()),
            extra_args: vec!["--no-agent".into(), "--no-scheduler".into()],
            ..ServerOpts::default()
        },
    )?;
    let same = measure(&a, &a, lines, "replicas").await?;
    let other = measure(&a, &b, lines, "replicas").await?;

    let notify = notify_cost(&db).await?;
    println!("replicas: one NOTIFY  {}", notify.line("ms"));

    let mut r = Report::new("replicas");
    for (who, rep) in [
        ("viewer on B, the other replica", other),
        ("viewer on A, the recording server", same),
    ] {
        for mut row in rep.rows {
            row.metric = format!("{who}: {}", row.metric);
            r.rows.push(row);
        }
        for (k, v) in rep.json {
            if k != "bench" {
                r.set(
                    &format!(
                        "{}_{k}",
                        who.split(',').next().unwrap_or(who).replace(' ', "_")
                    ),
                    v,
                );
            }
        }
    }
    r.info(
        "one NOTIFY statement (a log batch's signal) p50 / p99",
        format!("{:.3} ms / {:.3} ms", notify.p50, notify.p99),
    );
    r.set("notify_ms", notify.to_json());
    r.note(format!(
        "bar: p99 ≤ {TARGET_P99_MS} ms for a viewer on either replica"
    ));
    Ok(r)
}

/// Round trips of the statement the relay sends, with a typical payload, on a connection of
/// its own.
async fn notify_cost(db: &str) -> anyhow::Result<Summary> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(db).await?;
    let mut samples = Vec::with_capacity(NOTIFIES);
    for i in 0..NOTIFIES {
        let payload = format!("v1 0123456789abcdef L{}:{}", 1000 + i % 7, i);
        let t = Instant::now();
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind("cronium_bench")
            .bind(payload)
            .execute(&mut conn)
            .await?;
        samples.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let _ = conn.close().await;
    Summary::of(&samples).ok_or_else(|| anyhow::anyhow!("no NOTIFY timed"))
}
