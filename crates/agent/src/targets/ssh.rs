//! The servers target: fan-out to SSH servers. Each server gets the same payload and run
//! context as the local target, handed to a runner deployed there (or the script alone, in
//! `direct-ssh`), its stream recorded the same way.
//!
//! A fan-out runs its servers in one batch, or in the rolling batches of the target's `batch`
//! with its `pause` between them; a batch with a failure stops the later ones, whose
//! executions (created with the others, `pending`) end `cancelled` with the reason as their
//! note. How many must succeed (`min_success`) is the job's status, decided in `job.rs`. With
//! `skip_unreachable`, the servers the health checks judge `unreachable` are not attempted:
//! their executions end `skipped` with the reason, and count as servers that did not succeed.
//!
//! What can fail before a run (no transport, unknown servers, undecryptable credentials, the
//! payload, a `min_success` larger than the servers) fails before any execution is created, as
//! a [`JobError`] that says whether another attempt could help. A server that cannot be reached
//! or whose run fails is an execution result (retryable), not an error of the job.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use cronium_core::clock::now_ms;
use cronium_core::fanout::{self, ServerCount};
use cronium_core::health;
use cronium_core::payload::PayloadRef;
use cronium_core::spec::{ServerMode, ServersTarget};
use cronium_model::queue::ExecutionUpdate;
use cronium_model::{ExecutionStatus, ServerHealth};
use cronium_protocol::{Finished, Interpreter, RunStatus};
use cronium_ssh::{DirectScript, Mode, SshError, SshExecutor};
use serde_json::Value;
use tokio::sync::Semaphore;

use super::deployments::{
    forget_runner, record_deployment, record_deployment_failure, remember_runner,
};
use super::Target;
use crate::claim_gate::ClaimGate;
use crate::exec::{failed, ExecResult, JobError, RunCtx};
use crate::queue::{Lease, RemoteServer};
use crate::recorder::Recorder;
use crate::Inner;

/// The servers target: one execution per server the target resolves to.
pub(crate) struct Servers<'a>(pub(crate) &'a ServersTarget);

fn ssh_mode(m: ServerMode) -> Mode {
    match m {
        ServerMode::RunnerSsh => Mode::RunnerSsh,
        ServerMode::DirectSsh => Mode::DirectSsh,
        ServerMode::Auto => Mode::Auto,
    }
}

#[async_trait]
impl Target for Servers<'_> {
    async fn run(&self, ctx: &RunCtx, gate: &mut ClaimGate) -> Result<Vec<ExecResult>, JobError> {
        gate.open();
        run_servers(ctx, self.0).await
    }
}

async fn run_servers(ctx: &RunCtx, target: &ServersTarget) -> Result<Vec<ExecResult>, JobError> {
    let (inner, lease, recorder, cancel) = (&ctx.inner, &ctx.lease, &ctx.recorder, &ctx.cancel);
    let ssh = inner.ssh.as_ref().ok_or_else(|| {
        JobError::retryable("the servers target is unavailable: this agent has no SSH transport")
    })?;
    let interpreter = ctx
        .spec
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
    let payload = Arc::new(ctx.payload()?);
    let variables = Arc::new(ctx.variables().await?);
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
        target,
        server: ServerRun {
            ctx: RunCtx {
                cancel: group.clone(),
                ..ctx.clone()
            },
            ssh: ssh.clone(),
            payload,
            variables,
            interpreter,
            mode: ssh_mode(target.mode),
        },
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

/// One fan-out: its target's settings and what each server's run starts from.
struct Fanout<'a> {
    target: &'a ServersTarget,
    server: ServerRun,
}

/// What one server's run needs; every server of a fan-out gets a clone. Its context's cancel
/// is the fan-out's group: cancelled with the job, or by the first failure when the target
/// does not continue on failure.
#[derive(Clone)]
struct ServerRun {
    ctx: RunCtx,
    ssh: SshExecutor,
    /// One payload for every server, built once per job.
    payload: Arc<PayloadRef>,
    /// One variables snapshot for every server.
    variables: Arc<BTreeMap<String, Value>>,
    interpreter: Interpreter,
    mode: Mode,
}

impl Fanout<'_> {
    /// Runs one batch (every server, when there are no batches) at the target's concurrency
    /// and waits for all of it.
    async fn run_batch(&self, batch: Vec<(RemoteServer, i64)>) -> Vec<ExecResult> {
        let inner = &self.server.ctx.inner;
        let limit = self
            .target
            .concurrency
            .map_or(inner.config.fanout_concurrency, |c| c as usize)
            .clamp(1, inner.config.fanout_concurrency.max(1));
        let slots = Arc::new(Semaphore::new(limit));
        let mut tasks = tokio::task::JoinSet::new();
        // Servers start in the order the target lists them (a slot is taken before each
        // spawn), so that with a small concurrency and `continue_on_failure: false` the first
        // ones decide.
        for (server, exec_id) in batch {
            let permit = slots.clone().acquire_owned().await;
            let run = self.server.clone();
            let fail_fast = !self.target.continue_on_failure;
            tasks.spawn(async move {
                let _permit = permit;
                let r = run.on_server(&server, exec_id).await;
                let (recorder, group) = (&run.ctx.recorder, &run.ctx.cancel);
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

impl ServerRun {
    /// Runs the job on one server and records what the run learnt about it (platform, host
    /// key, deployment).
    async fn on_server(&self, server: &RemoteServer, exec_id: i64) -> ExecResult {
        let ServerRun {
            ctx,
            ssh,
            payload,
            variables,
            interpreter,
            mode,
        } = self;
        let (inner, spec, recorder, cancel, mode) =
            (&ctx.inner, &ctx.spec, &ctx.recorder, &ctx.cancel, *mode);
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
        let mut req = ctx.run_request(payload, exec_id, Some(&name), BTreeMap::clone(variables));
        // Interpreter paths of this machine mean nothing on the server.
        req.context.interpreters.clear();
        let relay = match mode {
            Mode::DirectSsh => Err("direct-ssh has no runner to relay the runtime API".to_string()),
            _ => Ok(()),
        };
        let helpers = ctx.enable_api(&mut req, relay).await;
        let mut extra = ExecutionUpdate {
            mode: Some(mode.as_str().into()),
            ..helpers.clone()
        };
        let direct = DirectScript {
            interpreter: *interpreter,
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
                            format!(
                                "[cronium] runner unavailable, ran in direct-ssh mode: {reason}"
                            ),
                        )
                        .await;
                }
                let helpers = match run.mode_used {
                    // No runner ran: whatever was asked, the helpers were bundled (or absent).
                    Mode::DirectSsh if helpers.helpers.as_deref() == Some("api") => {
                        ExecutionUpdate {
                            helpers: Some("bundled".into()),
                            helpers_note: Some(
                                "direct-ssh has no runner to relay the runtime API".into(),
                            ),
                            ..Default::default()
                        }
                    }
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
}
