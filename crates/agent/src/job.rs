//! One claimed job from start to outcome: heartbeats, the event version, one execution per
//! attempt (and per server), the final status or a retry with backoff.
//!
//! Every write is fenced by the lease; when the store reports the lease lost, the job stops
//! writing at once (another worker owns it now) and the local run is cancelled.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cronium_core::clock::now_ms;
use cronium_core::payload::PayloadSource;
use cronium_core::spec::{self, EventSpec, EventType, Target};
use cronium_core::transport::RunRequest;
use cronium_protocol::{EventMeta, Finished, HelperMode, RunContext, RunStatus};
use cronium_store::{backoff_delay, ExecutionUpdate, Heartbeat, JobOutcome, JobRow};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::queue::Lease;
use crate::recorder::{ExecutionFacts, Recorder};
use crate::{http, targets, Inner};

/// The result of one execution, before it is turned into a job outcome.
pub(crate) struct ExecResult {
    pub(crate) execution_id: Option<i64>,
    pub(crate) server: Option<String>,
    pub(crate) finished: Finished,
    /// More fields for the execution's final write (mode, runner version, note), so that an
    /// execution costs as few store writes as possible: create, start, end.
    pub(crate) extra: ExecutionUpdate,
}

impl ExecResult {
    pub(crate) fn new(
        execution_id: Option<i64>,
        server: Option<String>,
        finished: Finished,
    ) -> Self {
        ExecResult {
            execution_id,
            server,
            finished,
            extra: ExecutionUpdate::default(),
        }
    }
}

pub(crate) async fn execute(inner: Arc<Inner>, job: JobRow) {
    let lease = Lease {
        job_id: job.id,
        worker: inner.config.worker_id.clone(),
        attempt: job.attempt,
    };
    let cancel = CancellationToken::new();
    let lost = Arc::new(AtomicBool::new(false));
    let heartbeat = tokio::spawn(heartbeat_loop(
        inner.clone(),
        lease.clone(),
        cancel.clone(),
        lost.clone(),
    ));
    let first_seq = match first_log_seq(&inner, &job).await {
        Ok(seq) => seq,
        Err(message) => {
            // Without it no line can be numbered safely: the attempt fails, visibly, on the job.
            tracing::error!(job = job.id, error = %message, "reading the job's log position");
            heartbeat.abort();
            if !lost.load(Ordering::SeqCst) {
                conclude(&inner, &job, &lease, Err(message), &HashMap::new()).await;
            }
            inner.wake.notify_one();
            return;
        }
    };
    let recorder = Arc::new(Recorder::start(
        inner.queue.clone(),
        inner.bus.clone(),
        lease.clone(),
        first_seq,
        cancel.clone(),
        lost.clone(),
    ));
    if job.attempt > 1 {
        recorder
            .system(
                None,
                format!("[cronium] attempt {} of {}", job.attempt, job.max_attempts),
            )
            .await;
    }

    let results = match load_spec(&inner, &job).await {
        Ok(spec) => run_executions(&inner, &job, &lease, &spec, &recorder, &cancel).await,
        Err(message) => Err(message),
    };
    if let Err(message) = &results {
        // In the log too, where a follower looks (e.g. a secret that no longer decrypts).
        recorder.system(None, format!("[cronium] {message}")).await;
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
    heartbeat.abort();
    if lost.load(Ordering::SeqCst) {
        tracing::warn!(
            job = job.id,
            "lease lost; leaving the outcome to the new owner"
        );
        return;
    }
    let results = mask_results(results, &masker);
    let done = conclude(&inner, &job, &lease, results, &facts).await;
    if done {
        inner.bus.finish(job.id);
    }
    inner.wake.notify_one();
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
            Ok(max) => return Ok(max + 1),
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
    results: Result<Vec<ExecResult>, String>,
    masker: &crate::recorder::SharedMasker,
) -> Result<Vec<ExecResult>, String> {
    let masker = masker.current();
    let mask = |s: &mut Option<String>| {
        if let Some(text) = s {
            masker.mask_string(text);
        }
    };
    match results {
        Err(message) => Err(masker.mask(&message).into_owned()),
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
) {
    let lease_ms = inner.config.lease.as_millis() as i64;
    let every = inner.config.lease / 3;
    loop {
        tokio::time::sleep(every).await;
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

async fn load_spec(inner: &Inner, job: &JobRow) -> Result<EventSpec, String> {
    let value = inner
        .queue
        .event_spec(job)
        .await
        .map_err(|e| format!("cannot load the event: {e}"))?
        .ok_or_else(|| {
            format!(
                "event {} (version {}) no longer exists",
                job.event_name, job.event_version
            )
        })?;
    spec::from_value(value).map_err(|e| format!("stored event is invalid: {e}"))
}

async fn run_executions(
    inner: &Arc<Inner>,
    job: &JobRow,
    lease: &Lease,
    spec: &EventSpec,
    recorder: &Arc<Recorder>,
    cancel: &CancellationToken,
) -> Result<Vec<ExecResult>, String> {
    match (&spec.kind, &spec.target) {
        (_, Target::Local) => {
            // An http event sees no variables, but a response may still echo a secret.
            let variables = variables_snapshot(inner, recorder).await?;
            let exec = inner
                .queue
                .start_execution(lease, None, "pending")
                .await
                .map_err(|e| e.to_string())?
                .ok_or("lease lost before the execution started")?;
            let sink = recorder.sink_for(Some(exec.id));
            let finished = if spec.kind == EventType::Http {
                let Some(h) = &spec.http else {
                    return Err("http settings missing".into());
                };
                let _ = inner
                    .queue
                    .update_execution(
                        lease,
                        exec.id,
                        &ExecutionUpdate {
                            status: Some("running".into()),
                            started_at: Some(now_ms()),
                            mode: Some("http".into()),
                            ..Default::default()
                        },
                    )
                    .await;
                http::run_http(&inner.http, h, spec.timeout.0, &sink, cancel.clone()).await
            } else {
                let req = run_request(inner, job, lease, spec, exec.id, None, variables)?;
                match inner.local.run(&req, &sink, cancel.clone()).await {
                    Ok(f) => f,
                    Err(e) => Finished {
                        status: RunStatus::Failed,
                        exit_code: None,
                        signal: None,
                        run_ms: 0,
                        error: Some(e.to_string()),
                    },
                }
            };
            drop(sink);
            Ok(vec![ExecResult::new(Some(exec.id), None, finished)])
        }
        (_, Target::Container(c)) => {
            targets::run_container(inner, job, lease, spec, c, recorder, cancel).await
        }
        (_, Target::Servers(t)) => {
            targets::run_servers(inner, job, lease, spec, t, recorder, cancel).await
        }
    }
}

/// The variables a run sees (secret ones decrypted), read once per job; the recorder learns
/// the secret ones, to mask them in everything the run produces. Read before the run starts.
pub(crate) async fn variables_snapshot(
    inner: &Inner,
    recorder: &Recorder,
) -> Result<std::collections::BTreeMap<String, serde_json::Value>, String> {
    let vars = inner
        .queue
        .variables()
        .await
        .map_err(|e| format!("cannot read variables: {e}"))?;
    recorder.learn_variables(&vars).await?;
    Ok(vars.values)
}

/// The run request for one execution: payload (cached per event version) and run context.
pub(crate) fn run_request(
    inner: &Inner,
    job: &JobRow,
    lease: &Lease,
    spec: &EventSpec,
    execution_id: i64,
    server: Option<&str>,
    variables: std::collections::BTreeMap<String, serde_json::Value>,
) -> Result<RunRequest, String> {
    let interpreter = spec
        .kind
        .interpreter()
        .ok_or("http events do not run in a runner")?;
    let src = PayloadSource {
        interpreter,
        script: spec.script.as_deref().unwrap_or_default(),
        env: spec.env.clone(),
        timeout: spec.timeout.0,
        kill_grace: inner.config.kill_grace,
        max_output_bytes: inner.config.max_output_bytes,
        event: EventMeta {
            id: job.event_id.unwrap_or_default(),
            name: job.event_name.clone(),
            version: job.event_version,
        },
    };
    let payload = inner
        .payloads
        .get_or_build(&src)
        .map_err(|e| e.to_string())?;
    Ok(RunRequest {
        payload_path: payload.path,
        payload_sha256: payload.sha256,
        context: RunContext {
            job_id: job.id,
            execution_id,
            attempt: lease.attempt.max(1) as u32,
            trigger: job.trigger.clone(),
            server: server.map(str::to_string),
            input: job.input.clone(),
            variables,
            helper_mode: HelperMode::Bundled,
            api: None,
            interpreters: inner.interpreters.clone(),
            env: Default::default(),
        },
        timeout: spec.timeout.0,
        kill_grace: inner.config.kill_grace,
    })
}

/// Records each execution's end and the job's outcome (or schedules a retry).
/// Returns true when the job reached a final status.
async fn conclude(
    inner: &Inner,
    job: &JobRow,
    lease: &Lease,
    results: Result<Vec<ExecResult>, String>,
    facts: &HashMap<Option<i64>, ExecutionFacts>,
) -> bool {
    let now = now_ms();
    let (status, exit_code, output, error) = match &results {
        Err(message) => ("failed", None, Value::Null, Some(message.clone())),
        Ok(results) => {
            let mut updates = Vec::with_capacity(results.len());
            for r in results {
                inner
                    .metrics
                    .execution_finished(r.finished.status.as_str(), r.finished.run_ms);
                let Some(id) = r.execution_id else { continue };
                let f = facts.get(&r.execution_id).cloned().unwrap_or_default();
                updates.push((
                    id,
                    ExecutionUpdate {
                        status: Some(r.finished.status.as_str().into()),
                        exit_code: r.finished.exit_code,
                        finished_at: Some(now),
                        run_ms: Some(r.finished.run_ms as i64),
                        error: r.finished.error.clone(),
                        output: f.output.clone(),
                        condition: f.condition,
                        ..r.extra.clone()
                    },
                ));
            }
            // One transaction for all of a job's executions (a fan-out ends them together).
            if let Err(e) = inner.queue.update_executions(lease, &updates).await {
                tracing::warn!(error = %e, "recording execution ends");
            }
            aggregate(results, facts)
        }
    };
    let retryable = matches!(status, "failed" | "timed_out") && job.attempt < job.max_attempts;
    if retryable {
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
                return false;
            }
            Ok(false) => return false,
            Err(e) => tracing::warn!(error = %e, "scheduling a retry failed; finishing the job"),
        }
    }
    let outcome = JobOutcome {
        status: status.to_string(),
        exit_code,
        output,
        error,
    };
    match inner.queue.finish(lease, &outcome).await {
        Ok(true) => true,
        Ok(false) => {
            tracing::warn!(job = job.id, "lease lost before the outcome was written");
            false
        }
        Err(e) => {
            tracing::error!(job = job.id, error = %e, "writing the outcome failed");
            false
        }
    }
}

/// The job's status from its executions: all succeeded => succeeded; some => partial; none =>
/// the (single) failure's status.
fn aggregate(
    results: &[ExecResult],
    facts: &HashMap<Option<i64>, ExecutionFacts>,
) -> (&'static str, Option<i32>, Value, Option<String>) {
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
    let first_bad = results
        .iter()
        .find(|r| r.finished.status != RunStatus::Succeeded);
    let status = match first_bad {
        None => "succeeded",
        Some(_) if ok > 0 => "partial",
        Some(bad) => bad.finished.status.as_str(),
    };
    let exit_code = match first_bad {
        None => results.first().and_then(|r| r.finished.exit_code),
        Some(bad) => bad.finished.exit_code,
    };
    let error = first_bad.and_then(|r| {
        r.finished.error.clone().map(|e| match &r.server {
            Some(s) => format!("{s}: {e}"),
            None => e,
        })
    });
    (status, exit_code, output, error)
}
