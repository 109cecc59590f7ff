//! `cronium agent`: the agent on another machine, talking only HTTP(S) to a server's agent API
//! (`cronium_agent::remote::HttpQueue`), never to the database; and `cronium agent list` /
//! `cronium agent token ...`, clients of the API.
//!
//! The agent registers (name, version, tags, what it can run), beats every few seconds
//! (registering again when the server forgot it), claims with long-polls, and on SIGTERM
//! drains: it stops claiming, lets what runs finish (up to `--drain-timeout`), says it stopped
//! and exits 0. An unreachable server is retried with backoff, never fatal.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use cronium_agent::remote::HttpQueue;
use cronium_agent::{wire, Agent, AgentConfig, Transports};
use cronium_client::Method;
use cronium_core::duration::HumanDuration;
use cronium_core::logbus::LogBus;
use cronium_core::metrics::Metrics;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::cli::{AgentArgs, AgentCmd, AgentRunArgs, AgentTokenCmd};
use crate::client::Client;
use crate::commands::print_json;
use crate::table;

/// Between two heartbeats of the agent (the server shows it `unreachable` after 30 s).
const BEAT_EVERY: Duration = Duration::from_secs(5);
/// Longest wait between two registration attempts while the server is unreachable.
const MAX_RECONNECT: Duration = Duration::from_secs(30);
/// Between two passes of the container reaper (the first pass runs at start).
const REAP_EVERY: Duration = Duration::from_secs(60);

/// The remote agent's container reaper: every [`REAP_EVERY`], removes this engine's Cronium
/// containers and networks (by label, older than the executor's grace) whose job is running
/// nowhere, as the server's reaper does for its own engine. The running jobs come from the
/// server; when they cannot be read the pass is skipped (an empty list would doom every
/// container).
async fn reap_loop(
    queue: Arc<HttpQueue>,
    docker: Arc<cronium_docker::DockerExecutor>,
    shutdown: CancellationToken,
) {
    loop {
        match queue.running_jobs().await {
            Ok(jobs) => {
                let running: std::collections::HashSet<i64> = jobs.into_iter().collect();
                match docker
                    .reap_with(std::time::SystemTime::now(), |job, _| {
                        running.contains(&job)
                    })
                    .await
                {
                    Ok(r) if !r.containers.is_empty() || !r.networks.is_empty() => {
                        tracing::warn!(containers = ?r.containers, networks = ?r.networks, "reaped orphaned containers");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "container reaper: pass failed"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "container reaper: pass skipped (the running jobs could not be read)")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(REAP_EVERY) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

pub async fn agent(args: AgentArgs, runner: Result<PathBuf>) -> Result<i32> {
    match args.cmd {
        None => run(args.run, runner?).await,
        Some(AgentCmd::List { client }) => {
            let v = Client::new(&client)?.get("/api/v1/agents").await?;
            if client.json {
                print_json(&v);
            } else {
                let s = |a: &serde_json::Value, k: &str| a[k].as_str().unwrap_or("").to_string();
                let list = |a: &serde_json::Value, k: &str| {
                    a[k].as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|t| t.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                };
                let rows: Vec<Vec<String>> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        vec![
                            s(a, "name"),
                            s(a, "state"),
                            if a["embedded"].as_bool() == Some(true) {
                                "embedded".into()
                            } else {
                                "remote".into()
                            },
                            s(a, "version"),
                            list(a, "tags"),
                            list(a, "capabilities"),
                            s(a, "last_heartbeat_at"),
                            a["running_jobs"].to_string(),
                        ]
                    })
                    .collect();
                table::print(
                    &[
                        "NAME",
                        "STATE",
                        "KIND",
                        "VERSION",
                        "TAGS",
                        "RUNS",
                        "HEARTBEAT",
                        "RUNNING",
                    ],
                    &rows,
                );
            }
            Ok(0)
        }
        Some(AgentCmd::Token(cmd)) => token(cmd).await,
    }
}

async fn token(cmd: AgentTokenCmd) -> Result<i32> {
    match cmd {
        AgentTokenCmd::Create { name, client } => {
            let v = Client::new(&client)?
                .request(
                    Method::POST,
                    "/api/v1/agent-tokens",
                    Some(&json!({ "name": name })),
                )
                .await?;
            if client.json {
                print_json(&v);
            } else {
                println!("{}", v["token"].as_str().unwrap_or(""));
                eprintln!("agent token {name} created; it is shown only this once");
            }
        }
        AgentTokenCmd::List { client } => {
            let v = Client::new(&client)?.get("/api/v1/agent-tokens").await?;
            if client.json {
                print_json(&v);
            } else {
                let s = |a: &serde_json::Value, k: &str| a[k].as_str().unwrap_or("-").to_string();
                let rows: Vec<Vec<String>> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| {
                        vec![
                            s(t, "name"),
                            s(t, "created_at"),
                            s(t, "last_used_at"),
                            s(t, "revoked_at"),
                        ]
                    })
                    .collect();
                table::print(&["NAME", "CREATED", "LAST USED", "REVOKED"], &rows);
            }
        }
        AgentTokenCmd::Revoke { name, client } => {
            Client::new(&client)?
                .request(
                    Method::DELETE,
                    &format!("/api/v1/agent-tokens/{name}"),
                    None,
                )
                .await?;
            eprintln!("agent token {name} revoked");
        }
    }
    Ok(0)
}

/// `--buffer-max`: a size (`256MiB`, `256m`, `1g`, bytes) or 0 for none.
fn parse_buffer_max(v: &str) -> Result<u64> {
    let t = v.trim();
    if t == "0" {
        return Ok(0);
    }
    let lower = t.to_ascii_lowercase();
    let plain = lower
        .strip_suffix("ib")
        .map(|n| format!("{n}b"))
        .unwrap_or(lower);
    let n = cronium_core::duration::ByteSize::parse(&plain)
        .map_err(|e| anyhow!("--buffer-max: {}", e.replace(&plain, t)))?
        .0;
    if n < 4096 {
        return Err(anyhow!(
            "--buffer-max: {t} is below the smallest buffer, 4KiB (0 turns the buffer off)"
        ));
    }
    Ok(n)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "agent".into())
}

async fn run(args: AgentRunArgs, runner: PathBuf) -> Result<i32> {
    let token = args
        .token
        .clone()
        .ok_or_else(|| anyhow!("--token (or CRONIUM_AGENT_TOKEN) is required: an agent token from `cronium agent token create NAME`"))?;
    let lease = HumanDuration::parse(&args.lease)
        .map_err(|e| anyhow!("--lease: {e}"))?
        .0;
    let drain = HumanDuration::parse(&args.drain_timeout)
        .map_err(|e| anyhow!("--drain-timeout: {e}"))?
        .0;
    let buffer_max = parse_buffer_max(&args.buffer_max)?;
    if args.concurrency == 0 {
        return Err(anyhow!("--concurrency: must be at least 1"));
    }
    // The rule of `agent_tags` on events and nodes, so that every tag given can be asked for.
    for tag in &args.tags {
        cronium_core::spec::validate_name(tag)
            .map_err(|e| anyhow!("--tag {tag:?}: {}", e.message))?;
    }
    let data_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => PathBuf::from(
            std::env::var_os("HOME")
                .ok_or_else(|| anyhow!("--data-dir: not given and HOME is not set"))?,
        )
        .join(".cronium-agent"),
    };
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&data_dir)
            .with_context(|| format!("--data-dir {}", data_dir.display()))?;
    }
    let run_user = cronium_agent::isolation::choose_run_user(args.run_as.as_deref())
        .map_err(|e| anyhow!("--run-as: {e}"))?;
    let name = args.name.clone().unwrap_or_else(host_name);
    let mut queue = HttpQueue::new(&args.url, &token).map_err(|e| anyhow!("{e}"))?;
    if buffer_max > 0 {
        // Opened before anything runs: what an earlier run left is delivered first.
        let dir = data_dir.join("spool");
        let spool = cronium_agent::spool::Spool::open(&dir, buffer_max)
            .with_context(|| format!("--data-dir: the spool directory {}", dir.display()))?;
        queue = queue.with_spool(Arc::new(spool));
    }
    let queue = Arc::new(queue);
    let delivery_stop = CancellationToken::new();
    let delivery = {
        let queue = queue.clone();
        let stop = delivery_stop.clone();
        tokio::spawn(async move { queue.deliver_spool_loop(stop).await })
    };

    let mut config = AgentConfig::new(runner.clone(), data_dir.join("payloads"));
    config.concurrency = args.concurrency;
    config.lease = lease;
    config.claim_wait = Duration::from_millis(wire::MAX_CLAIM_WAIT_MS);
    config.shutdown_grace = drain;
    config.run_user = run_user;
    // Scripts never see the agent's own directory (payload cache, other runs' work dirs).
    config.private_paths = vec![std::fs::canonicalize(&data_dir).unwrap_or(data_dir.clone())];
    let mut transports = Transports {
        runtime: Some(queue.clone()),
        ..Default::default()
    };
    let mut capabilities = vec!["local".to_string()];
    // SSH targets: the runner given (a static build) and those for other platforms beside it.
    let (artifacts, problems) = cronium_ssh::RunnerArtifact::discover(&runner).await;
    for p in &problems {
        tracing::warn!(problem = %p, "a runner artifact was left out");
    }
    if artifacts.iter().any(|a| a.path == runner) {
        transports.ssh = Some(cronium_ssh::SshExecutor::with_runners(
            cronium_ssh::SshConfig::default(),
            artifacts,
        ));
        capabilities.push("ssh".into());
    }
    match cronium_docker::DockerExecutor::connect(cronium_docker::DockerConfig::new(runner)).await {
        Ok(d) => {
            transports.docker = Some(Arc::new(d));
            capabilities.push("container".into());
        }
        Err(e) => tracing::info!(error = %e, "no Docker engine: container targets unavailable"),
    }
    let registration = wire::Register {
        name: name.clone(),
        worker: config.worker_id.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        tags: args.tags.clone(),
        capabilities,
        concurrency: args.concurrency as i64,
    };
    let docker = transports.docker.clone();
    let agent = Agent::new(
        config,
        queue.clone(),
        Arc::new(LogBus::new()),
        Arc::new(Metrics::new()),
        transports,
    );
    let shutdown = CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
            tracing::info!("draining: no new claims; waiting for running jobs");
            shutdown.cancel();
        });
    }
    // Registered before the first claim, so that `agent list` shows what runs the jobs.
    let mut wait = Duration::from_millis(200);
    loop {
        match queue.register(&registration).await {
            Ok(()) => break,
            // A refused token (or a request the server cannot take) does not get better.
            Err(e @ cronium_agent::queue::QueueError::Fatal(_)) => {
                return Err(anyhow!("{}: {e}", args.url));
            }
            Err(e) => {
                tracing::warn!(url = %args.url, error = %e, "registering with the server; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.cancelled() => return Ok(0),
                }
                wait = (wait * 2).min(MAX_RECONNECT);
            }
        }
    }
    eprintln!(
        "Cronium agent {name} connected to {} (worker {})",
        args.url,
        agent.worker_id()
    );
    // The containers a crashed run of an agent left on this machine's engine go, those of
    // jobs running on any agent (another agent on the same engine) stay.
    let reaper = docker.map(|d| tokio::spawn(reap_loop(queue.clone(), d, shutdown.clone())));
    // A token refused after registration (revoked): the agent drains and exits 1, saying so.
    let refused: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let beats = {
        let queue = queue.clone();
        let shutdown = shutdown.clone();
        let refused = refused.clone();
        let beat = wire::AgentBeat {
            name: name.clone(),
            worker: registration.worker.clone(),
        };
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(BEAT_EVERY) => {}
                    _ = shutdown.cancelled() => return,
                }
                match queue.beat(&beat).await {
                    Ok(true) => {}
                    Ok(false) => {
                        if let Err(e) = queue.register(&registration).await {
                            tracing::warn!(error = %e, "registering again");
                        }
                    }
                    Err(cronium_agent::queue::QueueError::Fatal(m)) => {
                        tracing::error!(error = %m, "the server refused this agent: draining and stopping");
                        if let Ok(mut r) = refused.lock() {
                            *r = Some(m);
                        }
                        shutdown.cancel();
                        return;
                    }
                    Err(e) => tracing::warn!(error = %e, "agent heartbeat failed"),
                }
            }
        })
    };
    agent.run(shutdown).await;
    beats.abort();
    if let Some(r) = reaper {
        r.abort();
    }
    delivery_stop.cancel();
    let _ = delivery.await;
    if let Some(m) = refused.lock().ok().and_then(|r| r.clone()) {
        return Err(anyhow!("{}: {m}", args.url));
    }
    // What is still buffered gets one more try now; the rest waits for the next start.
    if queue.spool().is_some_and(|s| !s.is_empty()) {
        let delivered = tokio::time::timeout(Duration::from_secs(10), queue.deliver_spool()).await;
        if !matches!(delivered, Ok(true)) || queue.spool().is_some_and(|s| !s.is_empty()) {
            tracing::warn!(
                dir = %data_dir.join("spool").display(),
                "buffered writes left undelivered: the next start of this agent delivers them"
            );
        }
    }
    let beat = wire::AgentBeat {
        name,
        worker: agent.worker_id().to_string(),
    };
    if let Err(e) = queue.stopped(&beat).await {
        tracing::warn!(error = %e, "telling the server this agent stopped");
    }
    Ok(0)
}
