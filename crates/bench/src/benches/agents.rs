//! `agents`: remote agents (`cronium agent` processes on this machine) against a server on
//! PostgreSQL, beside the embedded agent:
//!
//! - trivial-job throughput: the embedded agent, then a `--no-agent` server with 1, 2 and 4
//!   remote agents (each with the embedded agent's concurrency); bar: 2 agents ≥ 0.8× embedded;
//! - the queue alone: jobs claimed in batches and finished through the agent API by the
//!   agent's own HTTP client, nothing executed; bar ≥ 2,000 jobs/s;
//! - claim latency: a long-polling claimer, the time from the run's POST to the claim's answer;
//! - a killed agent: `kill -9` of the agent running a job, the time until another agent runs it
//!   again (attempt 2); bar ≤ 15 s, with the agent's default lease.
//!
//! Not the scheduler's failover (`failover`) nor the replicas' log latency (`replicas`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cronium_agent::queue::{JobQueue, Lease};
use cronium_agent::remote::HttpQueue;
use cronium_client::Method;
use cronium_model::queue::JobOutcome;
use cronium_model::JobStatus;
use futures::StreamExt;
use serde_json::{json, Value};

use super::Ctx;
use crate::report::Report;
use crate::server::{fresh_pg_database, Server, ServerOpts};
use crate::stats::Summary;

/// Slots of the embedded agent and of each remote agent.
const CONCURRENCY: usize = 8;

pub struct Sizes {
    /// Trivial jobs per throughput figure (≤ 999).
    pub jobs: usize,
    /// Jobs through the queue alone.
    pub queue_jobs: usize,
    /// Claim latency samples.
    pub samples: usize,
    /// Killed-agent trials.
    pub trials: usize,
}

/// A `cronium agent` process, killed when dropped.
struct Agent {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Agent {
    fn start(ctx: &Ctx, url: &str, token: &str, name: &str) -> anyhow::Result<Agent> {
        let dir = tempfile::Builder::new()
            .prefix("cronium-bench-agent-")
            .tempdir()?;
        let log = std::fs::File::create(dir.path().join("agent.log"))?;
        let child = Command::new(&ctx.bins.cronium)
            .args(["agent", "--url", url, "--name", name])
            .arg("--concurrency")
            .arg(CONCURRENCY.to_string())
            .arg("--runner")
            .arg(&ctx.bins.runner)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("CRONIUM_AGENT_TOKEN", token)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {}: {e}", ctx.bins.cronium.display()))?;
        Ok(Agent { child, _dir: dir })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

async fn agent_token(server: &Server, name: &str) -> anyhow::Result<String> {
    let v = server
        .api(
            Method::POST,
            "/api/v1/agent-tokens",
            Some(&json!({ "name": name })),
        )
        .await?;
    v["token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("POST /api/v1/agent-tokens answered without a token: {v}"))
}

/// Waits until `names` are all listed as connected.
async fn wait_connected(server: &Server, names: &[String]) -> anyhow::Result<()> {
    super::poll_until(
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async {
            let v = server.api(Method::GET, "/api/v1/agents", None).await?;
            let list = v.as_array().cloned().unwrap_or_default();
            let up = names.iter().all(|n| {
                list.iter()
                    .any(|a| a["name"] == n.as_str() && a["state"] == "connected")
            });
            Ok(up.then_some(()))
        },
    )
    .await
}

fn pg_opts(url: String, no_agent: bool) -> ServerOpts {
    let mut extra_args = vec!["--concurrency".to_string(), CONCURRENCY.to_string()];
    if no_agent {
        extra_args.push("--no-agent".into());
    }
    ServerOpts {
        database_url: Some(url),
        extra_args,
        env: vec![],
        data_dir: None,
    }
}

pub async fn run(ctx: &Ctx, sizes: &Sizes) -> anyhow::Result<Report> {
    let mut r = Report::new("agents");
    let Some(base) = ctx.pg_url.clone() else {
        anyhow::bail!("agents needs PostgreSQL (--pg-url or CRONIUM_TEST_PG_URL)");
    };

    // Throughput: the embedded agent, then 1, 2 and 4 remote agents.
    let embedded = {
        let server = Server::start(&ctx.bins, &pg_opts(fresh_pg_database(&base).await?, false))?;
        super::throughput::measure(&server, sizes.jobs).await?
    };
    r.info(
        format!("embedded agent: {} trivial jobs", sizes.jobs),
        format!("{:.0} jobs/s", embedded.jobs_per_s),
    );
    let mut by_agents = serde_json::Map::new();
    let mut two = None;
    for n in [1usize, 2, 4] {
        let server = Server::start(&ctx.bins, &pg_opts(fresh_pg_database(&base).await?, true))?;
        let token = agent_token(&server, "bench").await?;
        let names: Vec<String> = (0..n).map(|i| format!("bench-{i}")).collect();
        let mut agents = Vec::new();
        for name in &names {
            agents.push(Agent::start(ctx, &server.url, &token, name)?);
        }
        wait_connected(&server, &names).await?;
        let f = super::throughput::measure(&server, sizes.jobs).await?;
        r.info(
            format!("{n} remote agent(s): {} trivial jobs", sizes.jobs),
            format!(
                "{:.0} jobs/s ({:.2}× embedded)",
                f.jobs_per_s,
                f.jobs_per_s / embedded.jobs_per_s
            ),
        );
        if n == 2 {
            two = Some(f.jobs_per_s);
        }
        by_agents.insert(n.to_string(), f.json());
        drop(agents);
    }
    if let Some(two) = two {
        r.at_least(
            "2 remote agents / embedded",
            two / embedded.jobs_per_s,
            0.8,
            "×",
        );
    }
    r.set("embedded", embedded.json());
    r.set("remote", Value::Object(by_agents));

    // The queue alone, and claim latency: the bench is the only claimer of a --no-agent server.
    let server = Server::start(&ctx.bins, &pg_opts(fresh_pg_database(&base).await?, true))?;
    let token = agent_token(&server, "bench").await?;
    let queue = HttpQueue::new(&server.url, &token)?;
    let (rate, workers) = queue_only(&server, &queue, sizes.queue_jobs).await?;
    r.at_least(
        format!(
            "queue alone: {} jobs claimed and finished ({workers} claimers, batches of {BATCH})",
            sizes.queue_jobs
        ),
        rate,
        2000.0,
        "jobs/s",
    );
    r.set("queue_jobs_per_s", json!(rate.round()));
    let latency = claim_latency(&server, &queue, sizes.samples).await?;
    r.info(
        "claim latency (POST run → long-poll answer)",
        latency.line("ms"),
    );
    r.set("claim_latency_ms", latency.to_json());
    drop(server);

    // A killed agent.
    let mut recovered = Vec::new();
    for trial in 0..sizes.trials {
        recovered.push(killed_agent(ctx, &base, trial).await?);
    }
    if let Some(s) = Summary::of(&recovered) {
        r.at_most(
            format!(
                "killed agent: its job running again elsewhere (max of {})",
                s.n
            ),
            s.max,
            15.0,
            "s",
        );
        r.info("killed agent: recovery", s.line("s"));
        r.set("killed_agent_s", s.to_json());
    }
    Ok(r)
}

/// Jobs handed out per claim in the queue-only run.
const BATCH: usize = 32;

/// Enqueues `k` jobs, then claims (in batches) and finishes them through the agent API with
/// several claimers at once; jobs per second from the first claim to the last finish.
async fn queue_only(server: &Server, queue: &HttpQueue, k: usize) -> anyhow::Result<(f64, usize)> {
    const WORKERS: usize = 8;
    server
        .put_event(&json!({"name": "bench-queue", "type": "bash", "script": "true\n"}))
        .await?;
    let enqueued: Vec<_> = futures::stream::iter(0..k)
        .map(|_| server.run("bench-queue", None))
        .buffer_unordered(16)
        .collect()
        .await;
    for e in enqueued {
        e?;
    }
    let outcome = JobOutcome {
        status: JobStatus::Succeeded,
        exit_code: Some(0),
        output: json!({}),
        error: None,
    };
    let start = Instant::now();
    let done: Vec<anyhow::Result<usize>> = futures::stream::iter(0..WORKERS)
        .map(|w| {
            let queue = queue.clone();
            let outcome = outcome.clone();
            async move {
                let worker = format!("bench-queue-{w}");
                let mut finished = 0;
                loop {
                    let jobs = queue
                        .claim_many(&worker, 60_000, BATCH, Duration::ZERO)
                        .await?;
                    if jobs.is_empty() {
                        return Ok(finished);
                    }
                    for job in jobs {
                        let lease = Lease {
                            job_id: job.id,
                            worker: worker.clone(),
                            attempt: job.attempt,
                        };
                        if !queue.finish(&lease, &outcome).await? {
                            anyhow::bail!("job {}: finish refused (lease lost)", job.id);
                        }
                        finished += 1;
                    }
                }
            }
        })
        .buffer_unordered(WORKERS)
        .collect()
        .await;
    let secs = start.elapsed().as_secs_f64();
    let mut total = 0;
    for d in done {
        total += d?;
    }
    if total != k {
        anyhow::bail!("the queue handed out {total} of {k} jobs");
    }
    Ok((k as f64 / secs, WORKERS))
}

/// One long-poll claimer waits; the time from the start of the run's POST to the claim's
/// answer, `n` times (each job finished before the next).
async fn claim_latency(server: &Server, queue: &HttpQueue, n: usize) -> anyhow::Result<Summary> {
    server
        .put_event(&json!({"name": "bench-claim", "type": "bash", "script": "true\n"}))
        .await?;
    let mut samples = Vec::with_capacity(n);
    let outcome = JobOutcome {
        status: JobStatus::Succeeded,
        exit_code: Some(0),
        output: json!({}),
        error: None,
    };
    for _ in 0..n {
        let q = queue.clone();
        let waiting = tokio::spawn(async move {
            let jobs = q
                .claim_many("bench-claim", 60_000, 1, Duration::from_secs(20))
                .await;
            (jobs, Instant::now())
        });
        // Let the claim reach the server and start waiting.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let t0 = Instant::now();
        let id = server.run("bench-claim", None).await?;
        let (jobs, t1) = waiting.await?;
        let jobs = jobs?;
        let Some(job) = jobs.first() else {
            anyhow::bail!("the long-poll claim ended without job {id}");
        };
        samples.push((t1 - t0).as_secs_f64() * 1000.0);
        let lease = Lease {
            job_id: job.id,
            worker: "bench-claim".into(),
            attempt: job.attempt,
        };
        queue.finish(&lease, &outcome).await?;
    }
    Summary::of(&samples).ok_or_else(|| anyhow::anyhow!("no claim latency sample"))
}

/// Two agents, a long job on one of them, `kill -9` of that one: seconds until the job runs
/// again (attempt 2) on the other.
async fn killed_agent(ctx: &Ctx, base: &str, trial: usize) -> anyhow::Result<f64> {
    let url = fresh_pg_database(base).await?;
    let server = Server::start(&ctx.bins, &pg_opts(url.clone(), true))?;
    let token = agent_token(&server, "bench").await?;
    let names: Vec<String> = (0..2).map(|i| format!("kill-{trial}-{i}")).collect();
    let mut agents = Vec::new();
    for name in &names {
        agents.push(Agent::start(ctx, &server.url, &token, name)?);
    }
    wait_connected(&server, &names).await?;
    server
        .put_event(&json!({
            "name": "bench-long",
            "type": "bash",
            "script": "sleep 120\n",
            "retries": {"max_attempts": 2, "backoff": "1ms"},
        }))
        .await?;
    let id = server.run("bench-long", None).await?;
    let db = sqlx::PgPool::connect(&url).await?;
    // The worker id is `HOST-PID-RANDOM`: the holder is the agent whose pid is in it.
    let owner: String = super::poll_until(
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async {
            let row: Option<(Option<String>, String)> =
                sqlx::query_as("SELECT lease_owner, status FROM jobs WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&db)
                    .await?;
            Ok(row.and_then(|(o, s)| (s == "running").then_some(o).flatten()))
        },
    )
    .await?;
    let holder = agents
        .iter()
        .position(|a| owner.contains(&format!("-{}-", a.pid())))
        .ok_or_else(|| anyhow::anyhow!("job {id} is held by `{owner}`, none of the agents"))?;
    agents[holder].kill9();
    let killed = Instant::now();
    super::poll_until(
        Duration::from_secs(120),
        Duration::from_millis(50),
        || async {
            let job = server.job(id).await?;
            let again = job["attempt"].as_i64().unwrap_or(0) >= 2 && job["status"] == "running";
            Ok(again.then_some(()))
        },
    )
    .await?;
    let secs = killed.elapsed().as_secs_f64();
    db.close().await;
    drop(agents);
    Ok(secs)
}
