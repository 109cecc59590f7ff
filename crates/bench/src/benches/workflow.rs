//! `workflow`: the workflow bars of PRODUCT.md.
//!
//! - **Sequential**: a 40-node workflow of inline Python fibo(10) nodes, each after the previous
//!   one, against the same 40 scripts run directly back to back with the real python binary, in
//!   the same benchmark (interleaved, repeated, medians). The workflow's time is the run's own
//!   (server clock: created → finished), so the client's polling adds nothing.
//! - **Fan-in**: 100 parallel nodes and one join after all of them: how long after the last
//!   branch's job ended the join's job was claimed (its start), and decided (its node run
//!   started, in the transaction that ended the last branch).
//!
//! - **Peer**: Prefect 3 (`prefect.rs`) running a 40-task sequential flow of the same fibo(10),
//!   in the same run: its tasks are functions in one Python process, ours are 40 scripts, each
//!   its own interpreter, so the comparison favours Prefect by 40 interpreter starts.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cronium_client::Method;
use serde_json::{json, Value};

use super::{real_python, time_direct, Ctx};
use crate::report::Report;
use crate::server::{ts_ms, Server, ServerOpts};
use crate::stats::Summary;

pub const TARGET_PER_NODE_MS: f64 = 3.0;
pub const TARGET_JOIN_MS: f64 = 50.0;
const NODES: usize = 40;
const BRANCHES: usize = 100;

const FIBO: &str =
    "def fibo(n):\n    return n if n < 2 else fibo(n - 1) + fibo(n - 2)\n\nprint(fibo(10))\n";
const SYSTEM_PYTHON: &str = "/usr/bin/python3";

fn sequential() -> Value {
    let nodes: Vec<Value> = (0..NODES)
        .map(|i| {
            let mut n = json!({"id": format!("n{i:02}"), "type": "python", "script": FIBO});
            if i > 0 {
                n["after"] = json!([format!("n{:02}", i - 1)]);
            }
            n
        })
        .collect();
    json!({"name": "bench-seq", "nodes": nodes})
}

fn fan_in() -> Value {
    let mut nodes: Vec<Value> = (0..BRANCHES)
        .map(|i| json!({"id": format!("b{i:03}"), "type": "bash", "script": "true"}))
        .collect();
    let after: Vec<String> = (0..BRANCHES).map(|i| format!("b{i:03}")).collect();
    nodes.push(json!({"id": "join", "type": "bash", "script": "true", "after": after}));
    json!({"name": "bench-fan-in", "nodes": nodes})
}

/// Starts a run of `name` and polls it to its end; returns the run detail.
async fn run_to_end(server: &Server, name: &str) -> anyhow::Result<Value> {
    let r = server
        .api(
            Method::POST,
            &format!("/api/v1/workflows/{name}/runs"),
            None,
        )
        .await?;
    let id = r["id"]
        .as_i64()
        .ok_or_else(|| anyhow::anyhow!("no run id: {r}"))?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let d = server
            .api(Method::GET, &format!("/api/v1/workflow-runs/{id}"), None)
            .await?;
        let status = d["run"]["status"].as_str().unwrap_or_default();
        if !["queued", "running"].contains(&status) {
            if status != "succeeded" {
                anyhow::bail!("run {id} of {name} ended {status}: {d}");
            }
            return Ok(d);
        }
        if Instant::now() > deadline {
            anyhow::bail!("run {id} of {name} still {status} after 300 s");
        }
        // The figures come from the server's own timestamps, so a coarse poll loses nothing,
        // and it keeps the benchmark's requests from competing with the run for the 2 cores.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Where a node's time goes, from the server's clock: the previous node's job end → this node's
/// job created → claimed (started) → its execution started → the execution's setup and run →
/// the execution's end → the job's end. One sample per node after the first, per repetition.
#[derive(Default)]
struct Phases {
    enqueue: Vec<f64>,
    claim: Vec<f64>,
    prepare: Vec<f64>,
    setup: Vec<f64>,
    run: Vec<f64>,
    rest: Vec<f64>,
    conclude: Vec<f64>,
}

impl Phases {
    async fn add(&mut self, server: &Server, detail: &Value) -> anyhow::Result<()> {
        let mut nodes = detail["nodes"].as_array().cloned().unwrap_or_default();
        nodes.sort_by(|a, b| a["node"].as_str().cmp(&b["node"].as_str()));
        let mut prev_end: Option<i64> = None;
        for n in &nodes {
            let Some(job_id) = n["job_id"].as_i64() else {
                continue;
            };
            let job = server.job(job_id).await?;
            let t = |k: &str| ts_ms(&job[k]);
            let (Some(created), Some(started), Some(finished)) =
                (t("created_at"), t("started_at"), t("finished_at"))
            else {
                continue;
            };
            let x = &job["executions"][0];
            let (Some(xs), Some(xf)) = (ts_ms(&x["started_at"]), ts_ms(&x["finished_at"])) else {
                continue;
            };
            let setup = x["setup_ms"].as_i64().unwrap_or(0);
            let run = x["run_ms"].as_i64().unwrap_or(0);
            if let Some(p) = prev_end {
                self.enqueue.push((created - p) as f64);
                self.claim.push((started - created) as f64);
                self.prepare.push((xs - started) as f64);
                self.setup.push(setup as f64);
                self.run.push(run as f64);
                self.rest.push(((xf - xs) - setup - run) as f64);
                self.conclude.push((finished - xf) as f64);
            }
            prev_end = Some(finished);
        }
        Ok(())
    }

    fn line(&self) -> String {
        let m = |v: &Vec<f64>| Summary::of(v).map_or(f64::NAN, |s| s.mean);
        format!(
            "end → successor created {:.2}, created → claimed {:.2}, claimed → execution started {:.2}, setup {:.2}, run {:.2}, execution's rest {:.2}, execution end → job end {:.2} (ms, means)",
            m(&self.enqueue),
            m(&self.claim),
            m(&self.prepare),
            m(&self.setup),
            m(&self.run),
            m(&self.rest),
            m(&self.conclude),
        )
    }
}

fn run_ms(d: &Value) -> anyhow::Result<f64> {
    let created = ts_ms(&d["run"]["created_at"]);
    let finished = ts_ms(&d["run"]["finished_at"]);
    match (created, finished) {
        (Some(c), Some(f)) => Ok((f - c) as f64),
        _ => anyhow::bail!("run without times: {}", d["run"]),
    }
}

pub async fn run(ctx: &Ctx, reps: usize, python: Option<PathBuf>) -> anyhow::Result<Report> {
    let dir = tempfile::tempdir()?;
    let mut opts = ServerOpts::default();
    let system = PathBuf::from(SYSTEM_PYTHON);
    let python = match python.or_else(|| system.exists().then_some(system)) {
        None => real_python()?,
        Some(p) => {
            let p = std::fs::canonicalize(&p)?;
            let bin = dir.path().join("bin");
            std::fs::create_dir(&bin)?;
            std::os::unix::fs::symlink(&p, bin.join("python3"))?;
            let path = std::env::var("PATH").unwrap_or_default();
            opts.env
                .push(("PATH".into(), format!("{}:{path}", bin.display())));
            p
        }
    };
    let script = dir.path().join("fibo.py");
    std::fs::write(&script, FIBO)?;
    let script_arg = script.display().to_string();

    let server = Server::start(&ctx.bins, &opts)?;
    for spec in [sequential(), fan_in()] {
        let name = spec["name"].as_str().unwrap_or_default().to_string();
        server
            .api(
                Method::PUT,
                &format!("/api/v1/workflows/{name}"),
                Some(&spec),
            )
            .await?;
    }
    // Warm-up: payloads built and cached, interpreter pages in memory.
    run_to_end(&server, "bench-seq").await?;

    let (mut queued, mut direct) = (Vec::new(), Vec::new());
    let mut phases = Phases::default();
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        for _ in 0..NODES {
            time_direct(&python, &[&script_arg])?;
        }
        direct.push(t.elapsed().as_secs_f64() * 1000.0);
        let d = run_to_end(&server, "bench-seq").await?;
        queued.push(run_ms(&d)?);
        phases.add(&server, &d).await?;
    }
    let q = Summary::of(&queued).ok_or_else(|| anyhow::anyhow!("no workflow run"))?;
    let d = Summary::of(&direct).ok_or_else(|| anyhow::anyhow!("no direct series"))?;
    let per_node = (q.p50 - d.p50) / NODES as f64;

    // Fan-in: the join's start after the last branch's end, per repetition.
    let (mut claimed, mut decided) = (Vec::new(), Vec::new());
    for _ in 0..reps.max(1) {
        let detail = run_to_end(&server, "bench-fan-in").await?;
        let nodes = detail["nodes"].as_array().cloned().unwrap_or_default();
        let mut last_end = 0;
        let mut join_job = None;
        let mut join_decided = None;
        for n in &nodes {
            let Some(job_id) = n["job_id"].as_i64() else {
                continue;
            };
            if n["node"] == "join" {
                join_job = Some(job_id);
                join_decided = ts_ms(&n["started_at"]);
                continue;
            }
            let job = server.job(job_id).await?;
            last_end = last_end.max(ts_ms(&job["finished_at"]).unwrap_or(0));
        }
        let join_job = join_job.ok_or_else(|| anyhow::anyhow!("the join did not run"))?;
        let job = server.job(join_job).await?;
        let started = ts_ms(&job["started_at"]).unwrap_or(0);
        claimed.push((started - last_end) as f64);
        decided.push((join_decided.unwrap_or(0) - last_end) as f64);
    }
    let c = Summary::of(&claimed).ok_or_else(|| anyhow::anyhow!("no fan-in run"))?;
    let dd = Summary::of(&decided).ok_or_else(|| anyhow::anyhow!("no fan-in run"))?;

    let mut r = Report::new("workflow");
    r.at_most(
        "40-node sequential workflow: orchestration overhead per node",
        per_node,
        TARGET_PER_NODE_MS,
        "ms",
    );
    r.info(
        "40-node sequential workflow, total (median)",
        format!(
            "{:.3} s (direct: {:.3} s; Windmill 4.4 s, Temporal 3.0 s, Hatchet 1.2 s published)",
            q.p50 / 1000.0,
            d.p50 / 1000.0
        ),
    );
    r.at_most(
        "100 parallel nodes + join: join job started after the last branch ended (median)",
        c.p50,
        TARGET_JOIN_MS,
        "ms",
    );
    r.info(
        "join decided after the last branch ended (median)",
        format!("{:.1} ms (the same transaction)", dd.p50),
    );
    // The peer, after ours so its install (first use) does not overlap our timings.
    match super::prefect::run(&ctx.root, &python, NODES, reps.max(1)) {
        Ok(p) => {
            r.info(
                "Prefect 3 40-task sequential flow of fibo(10) (median of warm flows)",
                format!(
                    "{:.3} s (first flow, starting its ephemeral server: {:.3} s; import {:.2} s); ours/Prefect {:.2}×",
                    p.flows.p50 / 1000.0,
                    p.first_flow_ms / 1000.0,
                    p.import_ms / 1000.0,
                    q.p50 / p.flows.p50
                ),
            );
            println!("workflow: prefect warm flows {}", p.flows.line("ms"));
            r.set("prefect_version", json!(super::prefect::VERSION));
            r.set("prefect_flow_ms", p.flows.to_json());
            r.set(
                "prefect_first_flow_ms",
                json!(crate::stats::round3(p.first_flow_ms)),
            );
        }
        Err(e) => r.note(format!("Prefect not measured: {e:#}")),
    }
    r.info("40-node sequential workflow: per node", phases.line());
    println!("workflow: per node: {}", phases.line());
    r.info("python", format!("`{}`", python.display()));
    println!("workflow: sequential total {}", q.line("ms"));
    println!("workflow: direct total {}", d.line("ms"));
    println!("workflow: join claimed after last branch {}", c.line("ms"));
    r.set("reps", json!(reps));
    r.set("sequential_total_ms", q.to_json());
    r.set("direct_total_ms", d.to_json());
    r.set(
        "overhead_per_node_ms",
        json!(crate::stats::round3(per_node)),
    );
    r.set("join_claimed_ms", c.to_json());
    r.set("join_decided_ms", dd.to_json());
    Ok(r)
}
