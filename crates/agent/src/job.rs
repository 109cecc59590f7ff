//! One claimed job from start to outcome: heartbeats, the event version (parsed once, here, and
//! passed down to every execution), one execution per attempt (and per server), the final
//! status or a retry with backoff.
//!
//! Failures are classified ([`JobError`]): what can never succeed on another attempt (the event
//! is gone, its stored spec is invalid, a secret cannot be decrypted...) finishes the job
//! `failed` at once without consuming its retries; script failures, timeouts, unreachable hosts
//! and lost runners are retried as the event's policy says.
//!
//! Every write is fenced by the lease; when the store reports the lease lost, the job stops
//! writing at once (another worker owns it now) and the local run is cancelled.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cronium_core::clock::now_ms;
use cronium_core::duration::HumanDuration;
use cronium_core::fanout::{self, ServerCount, Verdict};
use cronium_core::spec::{self, EventSpec, Target};
use cronium_core::workflow::NodeOverrides;
use cronium_model::backoff_delay;
use cronium_model::queue::{ExecutionUpdate, ExecutionUsage, Heartbeat, JobOutcome, JobRow};
use cronium_model::{ExecutionStatus, JobStatus};
use cronium_protocol::{HelperMode, RunStatus};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::claim_gate::ClaimGate;
use crate::exec::{ExecResult, JobError, Prepared, RunCtx};
use crate::queue::Lease;
use crate::recorder::{ExecutionFacts, OnLeaseLost, Recorder};
use crate::{targets, Inner};

/// A successor node's job that a job's end claimed for the same worker (a hand-off), to run
/// next in the same slot, with what that end prepared for it.
pub(crate) struct Next {
    pub(crate) job: JobRow,
    pub(crate) more_ready: bool,
    pub(crate) prepared: Prepared,
}

/// Returns the [`Next`] job when this job's end handed one off. `prepared`: what its
/// predecessor's end prepared for it (empty for a claimed job).
pub(crate) async fn execute(
    inner: Arc<Inner>,
    job: JobRow,
    mut gate: ClaimGate,
    prepared: Prepared,
) -> Option<Next> {
    // Shared with the run's context (and each server's, in a fan-out).
    let job = Arc::new(job);
    let lease = Lease {
        job_id: job.id,
        worker: inner.config.worker_id.clone(),
        attempt: job.attempt,
    };
    let cancel = CancellationToken::new();
    let lost = Arc::new(AtomicBool::new(false));
    // Registered before the heartbeat starts, so that no request made in between is missed.
    // Dropped when this returns, whichever way.
    let cancel_watch = inner.bus.watch_cancel(job.id);
    let heartbeat = tokio::spawn(heartbeat_loop(
        inner.clone(),
        lease.clone(),
        cancel.clone(),
        lost.clone(),
        cancel_watch.notify(),
    ));
    let prepared = Arc::new(std::sync::Mutex::new(prepared));
    let first_seq = match first_log_seq(&inner, &job).await {
        Ok(seq) => seq,
        Err(message) => {
            // Without it no line can be numbered safely: the attempt fails, visibly, on the job.
            tracing::error!(job = job.id, error = %message, "reading the job's log position");
            heartbeat.abort();
            let mut next = None;
            if !lost.load(Ordering::SeqCst) {
                let done;
                (done, next) = conclude(
                    &inner,
                    &job,
                    &lease,
                    Err(JobError::retryable(message)),
                    &HashMap::new(),
                    None,
                )
                .await;
                if done {
                    inner.bus.finish(job.id);
                }
                inner.bus.job_changed(Some(job.id));
            }
            if next.is_none() {
                inner.wake.notify_one();
            }
            return next;
        }
    };
    let recorder = Arc::new(Recorder::start(
        inner.queue.clone(),
        inner.bus.clone(),
        inner.metrics.clone(),
        lease.clone(),
        first_seq,
        OnLeaseLost {
            lost: lost.clone(),
            cancel: cancel.clone(),
        },
    ));
    if job.attempt > 1 {
        recorder
            .system(
                None,
                format!("[cronium] attempt {} of {}", job.attempt, job.max_attempts),
            )
            .await;
    }

    // The fan-out's `min_success`, known once the spec is read, for the job's status.
    let mut min_success = None;
    let results = async {
        let spec = load_spec(&inner, &job).await?;
        if let Target::Servers(t) = &spec.target {
            min_success = t.min_success;
        }
        let ctx = RunCtx {
            inner: inner.clone(),
            job: job.clone(),
            lease: lease.clone(),
            spec: spec.clone(),
            recorder: recorder.clone(),
            cancel: cancel.clone(),
            prepared: prepared.clone(),
        };
        let target = targets::for_spec(&spec);
        target.run(&ctx, &mut gate).await
    }
    .await;
    // An execution the hand-off created that the target never took (it failed before the run).
    let unused = prepared.lock().ok().and_then(|mut p| p.execution.take());
    if let Err(e) = &results {
        let line = match e {
            JobError::Fatal(m) => {
                format!("[cronium] {m} (not retried: another attempt cannot succeed)")
            }
            JobError::Retryable(m) => format!("[cronium] {m}"),
        };
        recorder.system(None, line).await;
    }
    let masker = recorder.masker();
    let facts = match Arc::try_unwrap(recorder) {
        Ok(r) => r.close().await,
        Err(_) => {
            tracing::error!(
                job = job.id,
                "recorder still shared after the executions ended"
            );
            HashMap::new()
        }
    };
    let mut facts = facts;
    if let Some(runtime) = &inner.runtime {
        api_results(runtime.as_ref(), job.id, &results, &mut facts).await;
    }
    heartbeat.abort();
    drop(cancel_watch);
    if lost.load(Ordering::SeqCst) {
        tracing::warn!(
            job = job.id,
            "lease lost; leaving the outcome to the new owner"
        );
        return None;
    }
    let results = mask_results(results, &masker);
    if let Some(id) = unused {
        end_unused_execution(&inner, &lease, id, &results).await;
    }
    let (done, next) = conclude(&inner, &job, &lease, results, &facts, min_success).await;
    if done {
        inner.bus.finish(job.id);
    }
    // Final, or queued again for a retry: either way the dashboards and lists change.
    inner.bus.job_changed(Some(job.id));
    // Other work may have become ready (other successors, a serial sibling...). With a
    // hand-off the next job's gate wakes the loop once that job has made its first write.
    if next.is_none() {
        inner.wake.notify_one();
    }
    next
}

/// Ends an execution that the hand-off created for a run that never started (the target failed
/// before it), so that no execution is left `pending`: failed, with the job's error.
async fn end_unused_execution(
    inner: &Inner,
    lease: &Lease,
    id: i64,
    results: &Result<Vec<ExecResult>, JobError>,
) {
    let error = match results {
        Err(JobError::Fatal(m) | JobError::Retryable(m)) => m.clone(),
        Ok(_) => "the run did not start".to_string(),
    };
    let update = ExecutionUpdate {
        status: Some(ExecutionStatus::Failed),
        finished_at: Some(now_ms()),
        error: Some(error),
        ..Default::default()
    };
    if let Err(e) = inner.queue.update_execution(lease, id, &update).await {
        tracing::warn!(execution = id, error = %e, "ending an execution that never ran");
    }
}

/// After an attempt's runs: revokes its runtime tokens, and takes the output and condition of
/// each API-mode execution from the store, where every API write (relayed or over HTTP) went.
async fn api_results(
    runtime: &dyn crate::runtime::RuntimeApi,
    job_id: i64,
    results: &Result<Vec<ExecResult>, JobError>,
    facts: &mut HashMap<Option<i64>, ExecutionFacts>,
) {
    let Ok(results) = results else { return };
    let api: Vec<i64> = results
        .iter()
        .filter(|r| r.extra.helpers.as_deref() == Some(HelperMode::Api.as_str()))
        .filter_map(|r| r.execution_id)
        .collect();
    if api.is_empty() {
        return;
    }
    if let Err(e) = runtime.revoke_tokens(job_id).await {
        // They die anyway: a token opens only a running execution.
        tracing::warn!(job = job_id, error = %e, "revoking runtime tokens");
    }
    for id in api {
        match runtime.results(id).await {
            Ok((output, condition)) => {
                let f = facts.entry(Some(id)).or_default();
                if !output.is_null() {
                    f.output = Some(output);
                }
                if condition.is_some() {
                    f.condition = condition;
                }
            }
            Err(e) => tracing::warn!(job = job_id, error = %e, "reading API-mode results"),
        }
    }
}

/// Where this attempt's log lines start. Only the lease holder writes a job's log, so a first
/// attempt starts from an empty log and a later one after the highest stored line: a store error
/// is retried, then fails the attempt (guessing would collide with the stored lines).
async fn first_log_seq(inner: &Inner, job: &JobRow) -> Result<i64, String> {
    if job.attempt <= 1 {
        return Ok(1);
    }
    let mut tries = 0;
    loop {
        match inner.queue.max_log_seq(job.id).await {
            Ok(max) => {
                if max > 0 {
                    // The earlier attempt's lines stay; this one continues after them.
                    inner.metrics.runner.partial_log_recovery.inc();
                }
                return Ok(max + 1);
            }
            Err(e) if tries < 4 => {
                tries += 1;
                tracing::warn!(job = job.id, error = %e, tries, "reading the job's last log line, retrying");
                tokio::time::sleep(std::time::Duration::from_millis(100 << tries)).await;
            }
            Err(e) => return Err(format!("cannot read the job's log to continue it: {e}")),
        }
    }
}

/// The executions' errors and notes and the job's error, with the job's secrets masked.
fn mask_results(
    results: Result<Vec<ExecResult>, JobError>,
    masker: &crate::recorder::SharedMasker,
) -> Result<Vec<ExecResult>, JobError> {
    let masker = masker.current();
    let mask = |s: &mut Option<String>| {
        if let Some(text) = s {
            masker.mask_string(text);
        }
    };
    match results {
        Err(JobError::Fatal(m)) => Err(JobError::Fatal(masker.mask(&m).into_owned())),
        Err(JobError::Retryable(m)) => Err(JobError::Retryable(masker.mask(&m).into_owned())),
        Ok(mut results) => {
            for r in &mut results {
                mask(&mut r.finished.error);
                mask(&mut r.extra.error);
                mask(&mut r.extra.note);
            }
            Ok(results)
        }
    }
}

async fn heartbeat_loop(
    inner: Arc<Inner>,
    lease: Lease,
    cancel: CancellationToken,
    lost: Arc<AtomicBool>,
    cancel_wake: Arc<tokio::sync::Notify>,
) {
    let lease_ms = inner.config.lease.as_millis() as i64;
    let every = inner.config.lease / 3;
    loop {
        // A cancel requested in this process (through the API or the UI) beats at once, so
        // that it stops a run, or a rolling fan-out's pause, without waiting for the next
        // beat. Remote agents hear of it at their next beat.
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = cancel_wake.notified() => {}
        }
        match inner.queue.heartbeat(&lease, lease_ms).await {
            Ok(Heartbeat::Ok { cancel_requested }) => {
                if cancel_requested && !cancel.is_cancelled() {
                    tracing::info!(job = lease.job_id, "cancellation requested");
                    cancel.cancel();
                }
            }
            Ok(Heartbeat::Lost) => {
                lost.store(true, Ordering::SeqCst);
                cancel.cancel();
                return;
            }
            Err(e) => tracing::warn!(job = lease.job_id, error = %e, "heartbeat failed"),
        }
    }
}

/// The event version the job was enqueued with, parsed once for the whole job: every execution
/// and server gets this one value.
/// Parsed specs of stored event versions, which never change. Bounded: emptied when full (a
/// miss costs one read of the store).
#[derive(Default)]
pub(crate) struct SpecCache(std::sync::Mutex<HashMap<(i64, i64), Arc<EventSpec>>>);

impl SpecCache {
    const MAX: usize = 1024;

    fn get(&self, key: (i64, i64)) -> Option<Arc<EventSpec>> {
        self.0.lock().ok()?.get(&key).cloned()
    }

    fn put(&self, key: (i64, i64), spec: Arc<EventSpec>) {
        if let Ok(mut map) = self.0.lock() {
            if map.len() >= Self::MAX {
                map.clear();
            }
            map.insert(key, spec);
        }
    }
}

async fn load_spec(inner: &Inner, job: &JobRow) -> Result<Arc<EventSpec>, JobError> {
    let key = job.event_id.map(|id| (id, job.event_version));
    let stored = match key.and_then(|k| inner.specs.get(k)) {
        Some(spec) => spec,
        None => {
            let spec = Arc::new(stored_spec(inner, job).await?);
            if let Some(k) = key {
                inner.specs.put(k, spec.clone());
            }
            spec
        }
    };
    // A node's job, or a failed-only retry (overrides without a node): its own copy.
    if job.node_run_id.is_none() && job.overrides.is_null() {
        return Ok(stored);
    }
    let mut spec = EventSpec::clone(&stored);
    apply_node_overrides(job, &mut spec)?;
    Ok(Arc::new(spec))
}

/// The job's event version as stored, parsed and checked.
async fn stored_spec(inner: &Inner, job: &JobRow) -> Result<EventSpec, JobError> {
    let value = inner
        .queue
        .event_spec(job)
        .await
        .map_err(|e| JobError::from(e).context("cannot load the event"))?
        .ok_or_else(|| {
            JobError::fatal(format!(
                "event `{}` (version {}) no longer exists",
                job.event_name, job.event_version
            ))
        })?;
    // A stored version: the event of an inline workflow node has a `WORKFLOW/NODE` name, which
    // an event file could not have.
    spec::from_stored_value(value)
        .map_err(|e| JobError::fatal(format!("the stored event is invalid: {e}")))
}

/// A workflow node's job runs its event under the node's overrides: the target (local,
/// container, servers with their `mode`) replaced, the env merged over the event's, and the
/// timeout the job was made with (the event's, or the node's `timeout`). Retries are the job's
/// own columns and the input was merged by the store, so nothing else is needed here. Jobs of
/// anything but a node are left as their event says.
///
/// A job made by `cronium job retry --failed-only` carries overrides too, without a node: its
/// target narrowed to the servers to run again.
fn apply_node_overrides(job: &JobRow, spec: &mut EventSpec) -> Result<(), JobError> {
    if job.node_run_id.is_none() && job.overrides.is_null() {
        return Ok(());
    }
    let overrides = NodeOverrides::from_value(&job.overrides)
        .map_err(|e| JobError::fatal(format!("the job's overrides are invalid: {e}")))?;
    overrides.apply(spec);
    if job.node_run_id.is_none() {
        return Ok(());
    }
    if let Ok(ms) = u64::try_from(job.timeout_ms) {
        if ms > 0 {
            spec.timeout = HumanDuration(std::time::Duration::from_millis(ms));
        }
    }
    Ok(())
}

/// The runner's usage figures as the execution row stores them.
fn usage_of(u: cronium_protocol::Usage) -> ExecutionUsage {
    let n = |v: u64| Some(i64::try_from(v).unwrap_or(i64::MAX));
    ExecutionUsage {
        cpu_user_ms: n(u.cpu_user_ms),
        cpu_system_ms: n(u.cpu_system_ms),
        max_rss_bytes: n(u.max_rss_bytes),
        cgroup_cpu_ms: u.cgroup_cpu_ms.and_then(n),
        cgroup_memory_peak_bytes: u.cgroup_memory_peak_bytes.and_then(n),
    }
}

/// Records each execution's end and the job's outcome, or schedules a retry when the failure
/// is retryable and attempts are left. Returns true when the job reached a final status.
async fn conclude(
    inner: &Inner,
    job: &JobRow,
    lease: &Lease,
    results: Result<Vec<ExecResult>, JobError>,
    facts: &HashMap<Option<i64>, ExecutionFacts>,
    min_success: Option<ServerCount>,
) -> (bool, Option<Next>) {
    let now = now_ms();
    let (status, exit_code, output, error, retryable, updates) = match results {
        Err(JobError::Fatal(message)) => (
            JobStatus::Failed,
            None,
            Value::Null,
            Some(message),
            false,
            Vec::new(),
        ),
        Err(JobError::Retryable(message)) => (
            JobStatus::Failed,
            None,
            Value::Null,
            Some(message),
            true,
            Vec::new(),
        ),
        Ok(results) => {
            let mut updates = Vec::with_capacity(results.len());
            for r in &results {
                let status = match r.skipped {
                    true => ExecutionStatus::Skipped,
                    false => ExecutionStatus::from(r.finished.status),
                };
                inner
                    .metrics
                    .execution_finished(status.as_str(), r.finished.run_ms);
                if let Some(u) = &r.finished.usage {
                    let transport = r.extra.mode.as_deref().unwrap_or("local");
                    inner.metrics.execution_usage(transport, u);
                }
                let Some(id) = r.execution_id else { continue };
                let f = facts.get(&r.execution_id).cloned().unwrap_or_default();
                updates.push((
                    id,
                    ExecutionUpdate {
                        status: Some(status),
                        exit_code: r.finished.exit_code,
                        finished_at: r.extra.finished_at.or(Some(now)),
                        run_ms: Some(r.finished.run_ms as i64),
                        error: r.finished.error.clone(),
                        output: f.output.clone(),
                        condition: f.condition,
                        usage: r.finished.usage.map(usage_of).unwrap_or_default(),
                        ..r.extra.clone()
                    },
                ));
            }
            let (status, exit_code, output, error) = aggregate(&results, facts, min_success);
            // A script that failed or timed out may pass next time; a partial fan-out is an
            // outcome (retrying would re-run the servers that succeeded), a cancel is final.
            // A fan-out failed by `min_success` is retried whole, like one where no server
            // succeeded (`cronium job retry --failed-only` re-runs only the failed servers).
            let retryable = matches!(status, JobStatus::Failed | JobStatus::TimedOut);
            (status, exit_code, output, error, retryable, updates)
        }
    };
    if retryable && job.attempt < job.max_attempts {
        // One transaction for all of a job's executions (a fan-out ends them together). When
        // the job ends instead, they are written with its outcome, below.
        if !updates.is_empty() {
            if let Err(e) = inner.queue.update_executions(lease, &updates).await {
                tracing::warn!(error = %e, "recording execution ends");
            }
        }
        let delay = backoff_delay(
            job.backoff_ms,
            job.max_backoff_ms,
            job.attempt,
            rand::random::<f64>() * 0.4 - 0.2,
        );
        let reason = error
            .clone()
            .unwrap_or_else(|| format!("attempt {} {status}", job.attempt));
        match inner.queue.retry_later(lease, now + delay, &reason).await {
            Ok(true) => {
                tracing::info!(job = job.id, delay_ms = delay, "retry scheduled");
                return (false, None);
            }
            Ok(false) => return (false, None),
            Err(e) => tracing::warn!(error = %e, "scheduling a retry failed; finishing the job"),
        }
    }
    let outcome = JobOutcome {
        status,
        exit_code,
        output,
        error,
    };
    // A node's end hands its ready successor to this slot, unless the agent is stopping.
    let handoff = (job.node_run_id.is_some() && !inner.draining.load(Ordering::SeqCst))
        .then_some(inner.config.lease.as_millis() as i64);
    let finish = inner
        .queue
        .finish_attempt(lease, job.node_run_id, &updates, &outcome, handoff);
    // A successor handed off reads the variables first thing: read here, on another
    // connection, while the end is written. Every variable this job's scripts set is stored
    // already (the recorder is closed). A read that fails is only a lost head start: the
    // successor reads them again and reports the error itself.
    let (written, variables) = match handoff {
        Some(_) => {
            let (written, variables) = tokio::join!(finish, inner.queue.variables());
            (written, variables.ok())
        }
        None => (finish.await, None),
    };
    match written {
        Ok((true, next)) => (
            true,
            next.map(|handed| Next {
                job: handed.job,
                more_ready: handed.more_ready,
                prepared: Prepared {
                    variables,
                    execution: handed.execution.map(|e| e.id),
                },
            }),
        ),
        Ok((false, _)) => {
            tracing::warn!(job = job.id, "lease lost before the outcome was written");
            (false, None)
        }
        Err(e) => {
            tracing::error!(job = job.id, error = %e, "writing the outcome failed");
            (false, None)
        }
    }
}

/// The job's status from its executions: all succeeded => succeeded; enough succeeded
/// (`min_success`, else one) => partial; fewer => failed, or, when none succeeded, the first
/// failure's status (timed out, cancelled...).
fn aggregate(
    results: &[ExecResult],
    facts: &HashMap<Option<i64>, ExecutionFacts>,
    min_success: Option<ServerCount>,
) -> (JobStatus, Option<i32>, Value, Option<String>) {
    if results.is_empty() {
        // Every server task died before reporting (a panic): nothing ran to an end.
        let error = "no execution reported a result".to_string();
        return (JobStatus::Failed, None, Value::Null, Some(error));
    }
    let ok = results
        .iter()
        .filter(|r| r.finished.status == RunStatus::Succeeded)
        .count();
    let output_of = |r: &ExecResult| {
        facts
            .get(&r.execution_id)
            .and_then(|f| f.output.clone())
            .unwrap_or(Value::Null)
    };
    let single = results.len() == 1;
    let output = if single {
        output_of(&results[0])
    } else {
        Value::Object(
            results
                .iter()
                .map(|r| (r.server.clone().unwrap_or_default(), output_of(r)))
                .collect(),
        )
    };
    // The first server that ran and did not succeed (one whose batch never ran says nothing).
    let bad = |r: &&ExecResult| r.finished.status != RunStatus::Succeeded;
    let first_bad =
        (results.iter().filter(bad).find(|r| !r.not_run)).or_else(|| results.iter().find(bad));
    let verdict = fanout::verdict(results.len(), ok, min_success);
    let status = match (verdict, first_bad) {
        (Verdict::Succeeded, _) | (_, None) => JobStatus::Succeeded,
        (Verdict::Partial, Some(_)) => JobStatus::Partial,
        // Some servers succeeded, fewer than `min_success` asks.
        (Verdict::Failed, Some(_)) if ok > 0 => JobStatus::Failed,
        (Verdict::Failed, Some(bad)) => JobStatus::from(bad.finished.status),
    };
    let exit_code = match first_bad {
        None => results.first().and_then(|r| r.finished.exit_code),
        Some(bad) => bad.finished.exit_code,
    };
    let mut error = first_bad.and_then(|r| {
        r.finished.error.clone().map(|e| match &r.server {
            Some(s) => format!("{s}: {e}"),
            None => e,
        })
    });
    if let (Some(m), Verdict::Failed, true) = (min_success, verdict, ok > 0) {
        let not: Vec<&str> = results
            .iter()
            .filter(bad)
            .filter_map(|r| r.server.as_deref())
            .collect();
        let why = format!(
            "{ok} of {} servers succeeded (not: {}), fewer than target.min_success ({m})",
            results.len(),
            not.join(", ")
        );
        error = Some(match error {
            Some(e) => format!("{why}; {e}"),
            None => why,
        });
    }
    (status, exit_code, output, error)
}
