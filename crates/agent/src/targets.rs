//! The remote targets: a container per run (Docker) and fan-out to SSH servers. Both hand the
//! same payload and run context as the local target to a runner elsewhere and record the
//! runner's stream the same way; they differ only in transport.
//!
//! A fan-out runs its servers in one batch, or in the rolling batches of the target's `batch`
//! with its `pause` between them; a batch with a failure stops the later ones, whose
//! executions (created with the others, `pending`) end `cancelled` with the reason as their
//! note. How many must succeed (`min_success`) is the job's status, decided in `job.rs`. With
//! `skip_unreachable`, the servers the health checks judge `unreachable` are not attempted:
//! their executions end `skipped` with the reason, and count as servers that did not succeed.
//!
//! What can fail before a run (no transport, unknown servers, undecryptable credentials, the
//! payload, a `min_success` larger than the servers) fails before any execution is created, as a [`JobError`] that says whether another
//! attempt could help. A server that cannot be reached or whose run fails is an execution
//! result (retryable), not an error of the job.

use std::collections::BTreeMap;
use std::sync::Arc;

use cronium_core::clock::now_ms;
use cronium_core::fanout::{self, ServerCount};
use cronium_core::health;
use cronium_core::payload::PayloadRef;
use cronium_core::spec::{ContainerNetwork, ContainerTarget, EventSpec, ServerMode, ServersTarget};
use cronium_docker::{ContainerSpec, Limits, NetworkMode};
use cronium_model::queue::{ExecutionUpdate, JobRow, NewDeployment, RunnerState};
use cronium_model::{ExecutionStatus, ServerHealth};
use cronium_protocol::{Finished, RunStatus};
use cronium_ssh::{DeployOutcome, DirectScript, Mode, SshError};
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::job::{enable_api, payload, run_request, variables_snapshot, ExecResult, JobError};
use crate::queue::{Lease, RemoteServer};
use crate::recorder::Recorder;
use crate::Inner;

fn failed(error: String) -> Finished {
    Finished {
        status: RunStatus::Failed,
        exit_code: None,
        signal: None,
        run_ms: 0,
        error: Some(error),
        usage: None,
    }
}

/// The container settings of an event, as the Docker transport takes them.
pub fn container_spec(c: &ContainerTarget) -> ContainerSpec {
    ContainerSpec {
        image: c.image.clone(),
        limits: Limits {
            cpus: c.cpus,
            memory_bytes: c.memory.map(|m| i64::try_from(m.0).unwrap_or(i64::MAX)),
            pids: c.pids,
        },
        network: match &c.network {
            ContainerNetwork::None => NetworkMode::None,
            ContainerNetwork::Isolated => NetworkMode::Isolated,
            ContainerNetwork::Named(n) => NetworkMode::Named(n.clone()),
        },
        interpreter_path: None,
    }
}

pub(crate) async fn run_container(
    inner: &Arc<Inner>,
    job: &JobRow,
    lease: &Lease,
    spec: &EventSpec,
    target: &ContainerTarget,
    recorder: &Recorder,
    cancel: &CancellationToken,
) -> Result<Vec<ExecResult>, JobError> {
    // Retryable: the engine may be back (or another agent may have one) by the next attempt.
    let docker = inner.docker.as_ref().ok_or_else(|| {
        JobError::retryable("the container target is unavailable: this agent has no Docker engine (see `cronium serve` logs)")
    })?;
    let interpreter = spec
        .kind
        .interpreter()
        .ok_or_else(|| JobError::fatal("http events do not run in containers"))?;
    let payload = payload(inner, job, spec)?;
    let variables = variables_snapshot(inner, recorder).await?;
    let exec = inner
        .queue
        .start_execution(lease, None, ExecutionStatus::Pending)
        .await?
        .ok_or_else(|| JobError::retryable("lease lost before the execution started"))?;
    let mut req = run_request(inner, job, spec, &payload, exec.id, None, variables);
    // Interpreter paths of this machine mean nothing inside the image.
    req.context.interpreters.clear();
    let sink = recorder.sink_for(Some(exec.id));
    let cspec = container_spec(target);
    let helpers = enable_api(inner, job, spec, lease, recorder, &mut req, Ok(())).await;
    let mut extra = ExecutionUpdate {
        mode: Some("container".into()),
        ..helpers
    };
    let finished = match docker
        .run(
            job.id,
            exec.id,
            interpreter,
            &cspec,
            &req,
            &sink,
            cancel.clone(),
        )
        .await
    {
        Ok(run) => {
            let note = format!(
                "image {}{}",
                run.image,
                if run.oom_killed {
                    "; out of memory"
                } else {
                    ""
                }
            );
            extra.note = Some(note);
            run.finished
        }
        Err(e) => failed(e.to_string()),
    };
    drop(sink);
    let mut r = ExecResult::new(Some(exec.id), None, finished);
    r.extra = extra;
    Ok(vec![r])
}

fn ssh_mode(m: ServerMode) -> Mode {
    match m {
        ServerMode::RunnerSsh => Mode::RunnerSsh,
        ServerMode::DirectSsh => Mode::DirectSsh,
        ServerMode::Auto => Mode::Auto,
    }
}

pub(crate) async fn run_servers(
    inner: &Arc<Inner>,
    job: &JobRow,
    lease: &Lease,
    spec: &Arc<EventSpec>,
    target: &ServersTarget,
    recorder: &Arc<Recorder>,
    cancel: &CancellationToken,
) -> Result<Vec<ExecResult>, JobError> {
    let ssh = inner.ssh.as_ref().ok_or_else(|| {
        JobError::retryable("the servers target is unavailable: this agent has no SSH transport")
    })?;
    let interpreter = spec
        .kind
        .interpreter()
        .ok_or_else(|| JobError::fatal("http events do not run on servers"))?;
    let servers = inner
        .queue
        .resolve_servers(&target.servers, &target.tags)
        .await?;
    if servers.is_empty() {
        // Retryable: a server with the tag may be registered before the next attempt.
        return Err(JobError::retryable(format!(
            "no registered server has any of the tags {:?}",
            target.tags
        )));
    }
    recorder
        .learn_credentials(&servers)
        .await
        .map_err(JobError::retryable)?;
    // One payload for every server (built once per job), one variables snapshot.
    let payload = Arc::new(payload(inner, job, spec)?);
    let variables = Arc::new(variables_snapshot(inner, recorder).await?);
    let mut servers = servers;
    order_servers(&mut servers, &target.servers);
    if let Some(ServerCount::Count(n)) = target.min_success {
        // Fatal: the next attempt, seconds away, resolves the same servers.
        if n as usize > servers.len() {
            return Err(JobError::fatal(format!(
                "target.min_success: {n} is more than the {} server(s) the target resolved to",
                servers.len()
            )));
        }
    }
    // Servers the health checks mark unreachable are recorded as skipped, not attempted.
    let (servers, unreachable) = split_unreachable(inner, target, servers);
    let skipped = skip(inner, lease, recorder, &unreachable).await?;
    let batches = fanout::batches(servers.len(), target.batch);
    // Cancelling the job cancels every server; with continue_on_failure: false the first failure
    // cancels the others too.
    let group = cancel.child_token();
    // Every server's execution exists from the start, so that a batch never run is still
    // recorded: the first batch's are deploying, the later ones' pending until their turn.
    let names: Vec<&str> = servers.iter().map(|s| s.config.name.as_str()).collect();
    let first = batches.first().map_or(0, |b| b.end);
    let mut executions = Vec::new();
    if first > 0 {
        executions = inner
            .queue
            .start_executions(lease, &names[..first], ExecutionStatus::Deploying)
            .await?
            .ok_or_else(|| JobError::retryable("lease lost before the executions started"))?;
    }
    if first < names.len() {
        executions.extend(
            inner
                .queue
                .start_executions(lease, &names[first..], ExecutionStatus::Pending)
                .await?
                .ok_or_else(|| JobError::retryable("lease lost before the executions started"))?,
        );
    }
    let ids: Vec<i64> = executions.iter().map(|e| e.id).collect();
    let fanout = Fanout {
        inner,
        ssh,
        job,
        lease,
        spec,
        target,
        recorder,
        group: &group,
        payload,
        variables,
        interpreter,
    };
    let mut servers = servers.into_iter().map(Some).collect::<Vec<_>>();
    let mut results = Vec::with_capacity(servers.len() + skipped.len());
    results.extend(skipped);
    let count = batches.len();
    for (i, range) in batches.into_iter().enumerate() {
        let batch: Vec<(RemoteServer, i64)> = range
            .clone()
            .filter_map(|k| servers[k].take().map(|s| (s, ids[k])))
            .collect();
        if count > 1 {
            if i > 0 {
                let pause = target
                    .pause
                    .filter(|p| !p.0.is_zero() && !group.is_cancelled());
                if let Some(pause) = pause {
                    recorder
                        .system(
                            None,
                            format!("[cronium] pausing {pause} before batch {}", i + 1),
                        )
                        .await;
                    // Promptly stopped by a cancel of the job (or a lost lease).
                    tokio::select! {
                        _ = tokio::time::sleep(pause.0) => {}
                        _ = group.cancelled() => {}
                    }
                }
                if group.is_cancelled() {
                    results.extend(not_run(&batch, "not run: the job was cancelled"));
                    continue;
                }
                let deploying: Vec<(i64, ExecutionUpdate)> = batch
                    .iter()
                    .map(|(_, id)| {
                        let update = ExecutionUpdate {
                            status: Some(ExecutionStatus::Deploying),
                            ..Default::default()
                        };
                        (*id, update)
                    })
                    .collect();
                if let Err(e) = inner.queue.update_executions(lease, &deploying).await {
                    tracing::warn!(error = %e, "marking a batch deploying");
                }
            }
            let listed: Vec<&str> = batch.iter().map(|(s, _)| s.config.name.as_str()).collect();
            recorder
                .system(
                    None,
                    format!(
                        "[cronium] batch {} of {count}: {}",
                        i + 1,
                        listed.join(", ")
                    ),
                )
                .await;
        }
        let done = fanout.run_batch(batch).await;
        let failed: Vec<String> = done
            .iter()
            .filter(|r| r.finished.status != RunStatus::Succeeded)
            .filter_map(|r| r.server.clone())
            .collect();
        results.extend(done);
        if !failed.is_empty() && i + 1 < count {
            // A rolling fan-out stops at the first batch with a failure: the later batches'
            // servers are recorded as cancelled, saying why.
            let note = if cancel.is_cancelled() {
                "not run: the job was cancelled".to_string()
            } else {
                format!("not run: batch {} failed", i + 1)
            };
            recorder
                .system(
                    None,
                    format!(
                        "[cronium] batch {} failed ({}); the {} later batch(es) do not run",
                        i + 1,
                        failed.join(", "),
                        count - i - 1
                    ),
                )
                .await;
            let rest: Vec<(RemoteServer, i64)> = servers
                .iter_mut()
                .zip(&ids)
                .filter_map(|(s, id)| s.take().map(|s| (s, *id)))
                .collect();
            results.extend(not_run(&rest, &note));
            break;
        }
    }
    results.sort_by(|a, b| a.server.cmp(&b.server));
    Ok(results)
}

/// With `skip_unreachable`, the servers judged `unreachable` now (with the reason) apart from the
/// ones to run; without it, every server runs.
fn split_unreachable(
    inner: &Inner,
    target: &ServersTarget,
    servers: Vec<RemoteServer>,
) -> (Vec<RemoteServer>, Vec<(RemoteServer, String)>) {
    if !target.skip_unreachable {
        return (servers, Vec::new());
    }
    let now = now_ms();
    let mut run = Vec::with_capacity(servers.len());
    let mut unreachable = Vec::new();
    for s in servers {
        let h = &s.health;
        let observed = health::Observed {
            checked_at: h.checked_at,
            contact_at: h.contact_at,
            failures: h.failures,
            error: h.error.as_deref(),
            reading: h.reading.as_ref(),
        };
        let v = health::judge(&observed, now, &inner.config.health_thresholds);
        if v.status == ServerHealth::Unreachable {
            unreachable.push((s, v.reasons.join("; ")));
        } else {
            run.push(s);
        }
    }
    (run, unreachable)
}

/// Records the unreachable servers' executions as skipped, with the reason as their note and
/// error; they count as servers that did not succeed.
async fn skip(
    inner: &Inner,
    lease: &Lease,
    recorder: &Recorder,
    unreachable: &[(RemoteServer, String)],
) -> Result<Vec<ExecResult>, JobError> {
    if unreachable.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<&str> = unreachable
        .iter()
        .map(|(s, _)| s.config.name.as_str())
        .collect();
    let executions = inner
        .queue
        .start_executions(lease, &names, ExecutionStatus::Pending)
        .await?
        .ok_or_else(|| JobError::retryable("lease lost before the executions started"))?;
    let mut results = Vec::with_capacity(unreachable.len());
    for ((server, why), exec) in unreachable.iter().zip(executions) {
        let note = format!("skipped: unreachable ({why})");
        recorder
            .system(
                Some(exec.id),
                format!("[cronium] {}: {note}", server.config.name),
            )
            .await;
        let finished = Finished {
            status: RunStatus::Failed,
            exit_code: None,
            signal: None,
            run_ms: 0,
            error: Some(note.clone()),
            usage: None,
        };
        let mut r = ExecResult::new(Some(exec.id), Some(server.config.name.clone()), finished);
        r.extra.note = Some(note);
        r.extra.finished_at = Some(now_ms());
        r.not_run = true;
        r.skipped = true;
        results.push(r);
    }
    Ok(results)
}

/// The results of servers whose batch never ran (an earlier batch failed, or the job was
/// cancelled between batches): cancelled, with the reason as the execution's note.
fn not_run(servers: &[(RemoteServer, i64)], why: &str) -> Vec<ExecResult> {
    servers
        .iter()
        .map(|(server, id)| {
            let finished = Finished {
                status: RunStatus::Cancelled,
                exit_code: None,
                signal: None,
                run_ms: 0,
                error: None,
                usage: None,
            };
            let mut r = ExecResult::new(Some(*id), Some(server.config.name.clone()), finished);
            r.extra.note = Some(why.to_string());
            r.not_run = true;
            r
        })
        .collect()
}

/// What every server of one fan-out shares.
struct Fanout<'a> {
    inner: &'a Arc<Inner>,
    ssh: &'a cronium_ssh::SshExecutor,
    job: &'a JobRow,
    lease: &'a Lease,
    spec: &'a Arc<EventSpec>,
    target: &'a ServersTarget,
    recorder: &'a Arc<Recorder>,
    group: &'a CancellationToken,
    payload: Arc<PayloadRef>,
    variables: Arc<BTreeMap<String, Value>>,
    interpreter: cronium_protocol::Interpreter,
}

impl Fanout<'_> {
    /// Runs one batch (every server, when there are no batches) at the target's concurrency
    /// and waits for all of it.
    async fn run_batch(&self, batch: Vec<(RemoteServer, i64)>) -> Vec<ExecResult> {
        let inner = self.inner;
        let limit = self
            .target
            .concurrency
            .map_or(inner.config.fanout_concurrency, |c| c as usize)
            .clamp(1, inner.config.fanout_concurrency.max(1));
        let slots = Arc::new(Semaphore::new(limit));
        let mode = ssh_mode(self.target.mode);
        let interpreter = self.interpreter;
        let mut tasks = tokio::task::JoinSet::new();
        // Servers start in the order the target lists them (a slot is taken before each
        // spawn), so that with a small concurrency and `continue_on_failure: false` the first
        // ones decide.
        for (server, exec_id) in batch {
            let permit = slots.clone().acquire_owned().await;
            let (variables, payload) = (self.variables.clone(), self.payload.clone());
            let lease = self.lease.clone();
            let (inner, job, spec, recorder, group, ssh) = (
                inner.clone(),
                self.job.clone(),
                self.spec.clone(),
                self.recorder.clone(),
                self.group.clone(),
                self.ssh.clone(),
            );
            let fail_fast = !self.target.continue_on_failure;
            tasks.spawn(async move {
                let _permit = permit;
                let r = run_on_server(&inner, &ssh, &job, &lease, &spec, &payload, interpreter, mode, &server, exec_id, &recorder, &group, &variables).await;
                if fail_fast && r.finished.status != RunStatus::Succeeded && !group.is_cancelled() {
                    recorder
                        .system(r.execution_id, format!("[cronium] {} failed; cancelling the other servers (continue_on_failure: false)", server.config.name))
                        .await;
                    group.cancel();
                }
                r
            });
        }
        let mut results = Vec::new();
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(r) => results.push(r),
                Err(e) => tracing::error!(error = %e, "a server task panicked"),
            }
        }
        results
    }
}

/// Named servers first, in the order the target names them; servers matched by tag after, by name.
fn order_servers(servers: &mut [RemoteServer], names: &[String]) {
    servers.sort_by_key(|s| {
        let pos = names
            .iter()
            .position(|n| *n == s.config.name)
            .unwrap_or(usize::MAX);
        (pos, s.config.name.clone())
    });
}

#[allow(clippy::too_many_arguments)]
async fn run_on_server(
    inner: &Arc<Inner>,
    ssh: &cronium_ssh::SshExecutor,
    job: &JobRow,
    lease: &Lease,
    spec: &EventSpec,
    payload: &PayloadRef,
    interpreter: cronium_protocol::Interpreter,
    mode: Mode,
    server: &RemoteServer,
    exec_id: i64,
    recorder: &Recorder,
    cancel: &CancellationToken,
    variables: &BTreeMap<String, Value>,
) -> ExecResult {
    let name = server.config.name.clone();
    if cancel.is_cancelled() {
        let cancelled = Finished {
            status: RunStatus::Cancelled,
            exit_code: None,
            signal: None,
            run_ms: 0,
            error: Some("cancelled before it started".into()),
            usage: None,
        };
        return ExecResult::new(Some(exec_id), Some(name), cancelled);
    }
    let mut req = run_request(
        inner,
        job,
        spec,
        payload,
        exec_id,
        Some(&name),
        variables.clone(),
    );
    // Interpreter paths of this machine mean nothing on the server.
    req.context.interpreters.clear();
    let relay = match mode {
        Mode::DirectSsh => Err("direct-ssh has no runner to relay the runtime API".to_string()),
        _ => Ok(()),
    };
    let helpers = enable_api(inner, job, spec, lease, recorder, &mut req, relay).await;
    let mut extra = ExecutionUpdate {
        mode: Some(mode.as_str().into()),
        ..helpers.clone()
    };
    let direct = DirectScript {
        interpreter,
        script: spec.script.clone().unwrap_or_default(),
        env: spec.env.clone(),
    };
    let sink = recorder.sink_for(Some(exec_id));
    let started = std::time::Instant::now();
    let result = ssh
        .run(&server.config, mode, &req, &direct, &sink, cancel.clone())
        .await;
    inner
        .metrics
        .runner
        .execution_duration
        .observe(started.elapsed().as_secs_f64());
    drop(sink);
    // First contact (or a changed machine): store what the deployment detected, whatever the
    // run's outcome.
    if let Some(p) = ssh.detected_platform(&server.config) {
        if server.config.platform.as_ref() != Some(&p) {
            if let Err(e) = inner.queue.set_platform(server.id, &p.os, &p.arch).await {
                tracing::warn!(server = %name, error = %e, "storing the detected platform");
            }
        }
    }
    let finished = match result {
        Ok(run) => {
            if server.config.host_key.is_none() {
                if let Err(e) = inner
                    .queue
                    .pin_host_key(server.id, &run.observed_host_key)
                    .await
                {
                    tracing::warn!(server = %name, error = %e, "pinning the host key");
                }
            }
            if let Some(d) = &run.deployment {
                record_deployment(inner, server.id, d).await;
                remember_runner(inner, server, d).await;
            }
            let mut note = (run.mode_used == Mode::DirectSsh).then(|| {
                "direct-ssh: no runner, so the runtime helpers were not available".to_string()
            });
            if let Some(reason) = &run.fallback_reason {
                note = Some(format!("auto: fell back to direct-ssh ({reason})"));
                recorder
                    .system(
                        Some(exec_id),
                        format!("[cronium] runner unavailable, ran in direct-ssh mode: {reason}"),
                    )
                    .await;
            }
            let helpers = match run.mode_used {
                // No runner ran: whatever was asked, the helpers were bundled (or absent).
                Mode::DirectSsh if helpers.helpers.as_deref() == Some("api") => ExecutionUpdate {
                    helpers: Some("bundled".into()),
                    helpers_note: Some("direct-ssh has no runner to relay the runtime API".into()),
                    ..Default::default()
                },
                _ => helpers,
            };
            extra = ExecutionUpdate {
                mode: Some(run.mode_used.as_str().into()),
                runner_version: run.runner_version.clone(),
                note,
                ..helpers
            };
            run.finished
        }
        Err(e) => {
            if mode != Mode::DirectSsh {
                // Any error puts the deployment in doubt: the next agent start checks the host.
                forget_runner(inner, server).await;
            }
            if let SshError::HostKeyChanged { observed_key, .. } = &e {
                let _ = inner.queue.host_key_changed(server.id, observed_key).await;
            }
            if let SshError::Deploy { record, reason, .. } = &e {
                match record {
                    Some(r) => record_deployment(inner, server.id, r).await,
                    None => record_deployment_failure(inner, server.id, reason).await,
                }
            }
            recorder
                .system(Some(exec_id), format!("[cronium] {e}"))
                .await;
            failed(e.to_string())
        }
    };
    let mut r = ExecResult::new(Some(exec_id), Some(name), finished);
    // When this server ended, not when the whole fan-out did (the executions are written
    // together at the end): a rolling fan-out's batches show in these times.
    extra.finished_at = Some(now_ms());
    r.extra = extra;
    r
}

async fn record_deployment(inner: &Inner, server_id: i64, d: &cronium_ssh::DeploymentRecord) {
    // Cache hits happen on every run: they are counted in the metrics, not stored.
    if d.outcome == DeployOutcome::Cached {
        return;
    }
    let row = NewDeployment {
        version: d.version.clone(),
        sha256: d.sha256.clone(),
        outcome: d.outcome.as_str().into(),
        attempts: i64::from(d.attempts),
        duration_ms: d.duration_ms as i64,
        error: d.error.clone(),
        at: d.at_ms,
    };
    if let Err(e) = inner.queue.record_deployment(server_id, &row).await {
        tracing::warn!(error = %e, "recording a deployment");
    }
}

/// Persists a verification (upload or check on the host) so that a restarted agent trusts it
/// for the re-verification period instead of checking every host again; a failed deployment
/// forgets what was known.
async fn remember_runner(inner: &Inner, server: &RemoteServer, d: &cronium_ssh::DeploymentRecord) {
    let state = match d.outcome {
        DeployOutcome::Deployed | DeployOutcome::Verified => RunnerState {
            path: d.path.clone(),
            sha256: d.sha256.clone(),
            verified_at: d.at_ms,
        },
        DeployOutcome::Failed => return forget_runner(inner, server).await,
        DeployOutcome::Cached => return,
    };
    if let Err(e) = inner.queue.set_runner_state(server.id, Some(&state)).await {
        tracing::warn!(server = %server.config.name, error = %e, "remembering the deployed runner");
    }
}

async fn forget_runner(inner: &Inner, server: &RemoteServer) {
    if let Err(e) = inner.queue.set_runner_state(server.id, None).await {
        tracing::warn!(server = %server.config.name, error = %e, "forgetting the deployed runner");
    }
}

async fn record_deployment_failure(inner: &Inner, server_id: i64, error: &str) {
    let row = NewDeployment {
        version: String::new(),
        sha256: String::new(),
        outcome: DeployOutcome::Failed.as_str().into(),
        attempts: 0,
        duration_ms: 0,
        error: Some(error.to_string()),
        at: now_ms(),
    };
    let _ = inner.queue.record_deployment(server_id, &row).await;
}
