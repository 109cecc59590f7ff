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

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cronium_core::clock::now_ms;
use cronium_core::duration::HumanDuration;
use cronium_core::fanout::{self, ServerCount, Verdict};
use cronium_core::payload::{PayloadError, PayloadRef, PayloadSource};
use cronium_core::spec::{self, EventSpec, EventType, Target};
use cronium_core::transport::RunRequest;
use cronium_core::workflow::NodeOverrides;
use cronium_model::backoff_delay;
use cronium_model::queue::{
    ExecutionUpdate, ExecutionUsage, HandedOff, Heartbeat, JobOutcome, JobRow,
};
use cronium_model::{ExecutionStatus, JobStatus};
use cronium_protocol::{
    ApiSettings, EventMeta, Finished, HelperMode, RunContext, RunStatus, API_RELAY,
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::queue::{Lease, QueueError};
use crate::recorder::{ExecutionFacts, Recorder};
use crate::{http, targets, Inner};

/// Why a job could not run (or finish running) its executions, and whether another attempt
/// could help. Script failures are not errors here: they are execution results.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JobError {
    /// Can never succeed on another attempt: the event or its version is gone, the stored spec
    /// is invalid, the payload cannot be built, a secret or credential cannot be decrypted, a
    /// server is unknown. The job ends `failed` at once; its retries are not consumed.
    #[error("{0}")]
    Fatal(String),
    /// May succeed on another attempt: the store was unreachable, a transport was not available,
    /// the lease was lost. The event's retry policy applies.
    #[error("{0}")]
    Retryable(String),
}

impl JobError {
    pub(crate) fn fatal(message: impl Into<String>) -> Self {
        JobError::Fatal(message.into())
    }

    pub(crate) fn retryable(message: impl Into<String>) -> Self {
        JobError::Retryable(message.into())
    }

    /// The same kind of error, its message prefixed with what was being done.
    fn context(self, doing: &str) -> Self {
        match self {
            JobError::Fatal(m) => JobError::Fatal(format!("{doing}: {m}")),
            JobError::Retryable(m) => JobError::Retryable(format!("{doing}: {m}")),
        }
    }
}

impl From<QueueError> for JobError {
    fn from(e: QueueError) -> Self {
        if e.is_fatal() {
            JobError::Fatal(e.to_string())
        } else {
            JobError::Retryable(e.to_string())
        }
    }
}

/// The result of one execution, before it is turned into a job outcome.
pub(crate) struct ExecResult {
    pub(crate) execution_id: Option<i64>,
    pub(crate) server: Option<String>,
    pub(crate) finished: Finished,
    /// More fields for the execution's final write (mode, runner version, note), so that an
    /// execution costs as few store writes as possible: create, start, end.
    pub(crate) extra: ExecutionUpdate,
    /// Never started: its batch was not reached (an earlier one failed, or the job was
    /// cancelled between batches). Not what the job's status or error is taken from.
    pub(crate) not_run: bool,
    /// Not attempted because the server was unreachable (`skip_unreachable`): stored as a
    /// `skipped` execution; counts as a server that did not succeed.
    pub(crate) skipped: bool,
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
            not_run: false,
            skipped: false,
        }
    }
}

/// Returns a successor node's job that this job's end claimed for this worker (a hand-off), to
/// run next in the same slot.
pub(crate) async fn execute(
    inner: Arc<Inner>,
    job: JobRow,
    mut gate: ClaimGate,
) -> Option<HandedOff> {
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

    // The fan-out's `min_success`, known once the spec is read, for the job's status.
    let mut min_success = None;
    let results = async {
        let spec = load_spec(&inner, &job).await?;
        if let Target::Servers(t) = &spec.target {
            min_success = t.min_success;
        }
        run_executions(&inner, &job, &lease, &spec, &recorder, &cancel, &mut gate).await
    }
    .await;
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

async fn run_executions(
    inner: &Arc<Inner>,
    job: &JobRow,
    lease: &Lease,
    spec: &Arc<EventSpec>,
    recorder: &Arc<Recorder>,
    cancel: &CancellationToken,
    gate: &mut ClaimGate,
) -> Result<Vec<ExecResult>, JobError> {
    match (&spec.kind, &spec.target) {
        (EventType::Http, Target::Local) => {
            let h = spec
                .http
                .as_ref()
                .ok_or_else(|| JobError::fatal("http: settings missing"))?;
            // An http event sees no variables, but a response may still echo a secret.
            variables_snapshot(inner, recorder).await?;
            let exec = start_execution(inner, lease).await?;
            gate.open();
            let sink = recorder.sink_for(Some(exec));
            let _ = inner
                .queue
                .update_execution(
                    lease,
                    exec,
                    &ExecutionUpdate {
                        status: Some(ExecutionStatus::Running),
                        started_at: Some(now_ms()),
                        mode: Some("http".into()),
                        ..Default::default()
                    },
                )
                .await;
            let finished =
                http::run_http(&inner.http, h, spec.timeout.0, &sink, cancel.clone()).await;
            drop(sink);
            Ok(vec![ExecResult::new(Some(exec), None, finished)])
        }
        (_, Target::Local) => {
            // Everything that can fail before the run is done before its execution exists, so
            // that a job that never ran leaves no execution stuck in `pending`.
            let payload = payload(inner, job, spec)?;
            let variables = variables_snapshot(inner, recorder).await?;
            let exec = start_execution(inner, lease).await?;
            gate.open();
            let sink = recorder.sink_for(Some(exec));
            let mut req = run_request(inner, job, spec, &payload, exec, None, variables);
            let helpers = enable_api(inner, job, spec, lease, recorder, &mut req, Ok(())).await;
            let finished = match inner.local.run(&req, &sink, cancel.clone()).await {
                Ok(f) => f,
                // The runner could not be started or vanished: worth another attempt.
                Err(e) => Finished {
                    status: RunStatus::Failed,
                    exit_code: None,
                    signal: None,
                    run_ms: 0,
                    error: Some(e.to_string()),
                    usage: None,
                },
            };
            drop(sink);
            let mut result = ExecResult::new(Some(exec), None, finished);
            result.extra = helpers;
            Ok(vec![result])
        }
        (_, Target::Container(c)) => {
            gate.open();
            targets::run_container(inner, job, lease, spec, c, recorder, cancel).await
        }
        (_, Target::Servers(t)) => {
            gate.open();
            targets::run_servers(inner, job, lease, spec, t, recorder, cancel).await
        }
    }
}

/// Tells the claim loop that a job has made its first write (or will not make one), so that the
/// loop's next claim does not compete with it for the store's write connection: a claimed job's
/// gate answers the loop waiting on it; a handed-off job's gate wakes the loop, which its
/// predecessor's end would otherwise have done at once. Opens when dropped too, on every path.
pub(crate) struct ClaimGate {
    started: Option<tokio::sync::oneshot::Sender<()>>,
    wake: Option<Arc<tokio::sync::Notify>>,
}

impl ClaimGate {
    /// For a job the claim loop just claimed and waits on.
    pub(crate) fn new(tx: tokio::sync::oneshot::Sender<()>) -> Self {
        ClaimGate {
            started: Some(tx),
            wake: None,
        }
    }

    /// For a job handed off by its predecessor's end: opening it wakes the claim loop.
    pub(crate) fn waking(wake: Arc<tokio::sync::Notify>) -> Self {
        ClaimGate {
            started: None,
            wake: Some(wake),
        }
    }

    /// For a handed-off job whose predecessor's end left nothing else ready: nobody waits.
    pub(crate) fn none() -> Self {
        ClaimGate {
            started: None,
            wake: None,
        }
    }

    /// Opens the gate; only the first call does anything.
    pub(crate) fn open(&mut self) {
        if let Some(tx) = self.started.take() {
            let _ = tx.send(());
        }
        if let Some(wake) = self.wake.take() {
            wake.notify_one();
        }
    }
}

impl Drop for ClaimGate {
    fn drop(&mut self) {
        self.open();
    }
}

/// The single execution of a local or container run, created `pending`.
async fn start_execution(inner: &Inner, lease: &Lease) -> Result<i64, JobError> {
    Ok(inner
        .queue
        .start_execution(lease, None, ExecutionStatus::Pending)
        .await?
        .ok_or_else(|| JobError::retryable("lease lost before the execution started"))?
        .id)
}

/// The variables a run sees (secret ones decrypted), read once per job, before the run starts;
/// the recorder learns the secret ones, to mask them in everything the run produces. A secret
/// that cannot be decrypted is fatal: no later attempt would decrypt it either.
pub(crate) async fn variables_snapshot(
    inner: &Inner,
    recorder: &Recorder,
) -> Result<BTreeMap<String, Value>, JobError> {
    let vars = inner
        .queue
        .variables()
        .await
        .map_err(|e| JobError::from(e).context("cannot read variables"))?;
    recorder
        .learn_variables(&vars)
        .await
        .map_err(JobError::retryable)?;
    Ok(vars.values)
}

/// The payload of the job's event version, built (or found in the cache) once per job, before
/// any execution starts.
pub(crate) fn payload(
    inner: &Inner,
    job: &JobRow,
    spec: &EventSpec,
) -> Result<PayloadRef, JobError> {
    let interpreter = spec
        .kind
        .interpreter()
        .ok_or_else(|| JobError::fatal("http events do not run in a runner"))?;
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
    let (payload, generated) = inner
        .payloads
        .get_or_build_timed(&src)
        .map_err(|e| match e {
            // What the event holds cannot be encoded: the same spec fails the same way every time.
            PayloadError::Manifest(_) => JobError::fatal(format!("cannot build the payload: {e}")),
            // Writing it failed (disk full, permissions): that may be fixed before the next attempt.
            PayloadError::Io { .. } => {
                JobError::retryable(format!("cannot store the payload: {e}"))
            }
        })?;
    if let Some(took) = generated {
        inner
            .metrics
            .runner
            .payload_generation_duration
            .observe(took.as_secs_f64());
    }
    Ok(payload)
}

/// The run request for one execution: the job's payload and this execution's run context.
pub(crate) fn run_request(
    inner: &Inner,
    job: &JobRow,
    spec: &EventSpec,
    payload: &PayloadRef,
    execution_id: i64,
    server: Option<&str>,
    variables: BTreeMap<String, Value>,
) -> RunRequest {
    RunRequest {
        payload_path: payload.path.clone(),
        payload_sha256: payload.sha256.clone(),
        context: RunContext {
            job_id: job.id,
            execution_id,
            // The claimed attempt (the lease's fencing token).
            attempt: job.attempt.max(1) as u32,
            trigger: job.trigger.as_str().to_string(),
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
        control: None,
    }
}

/// The helpers mode of a job: its workflow node's override, else the event's `helpers`, else
/// the server's `--helpers` default.
pub(crate) fn helper_mode(inner: &Inner, job: &JobRow, spec: &EventSpec) -> HelperMode {
    cronium_core::workflow::NodeOverrides::from_value(&job.overrides)
        .ok()
        .and_then(|o| o.helpers)
        .or(spec.helpers)
        .unwrap_or(inner.config.helpers)
}

/// Turns `req` into an API-mode request when the job asks for it: mints the execution's
/// runtime token (only its SHA-256 is stored, valid until the run's hard deadline), gives the
/// runner the token and the relay endpoint, and makes the recorder answer its calls. Returns
/// what to record on the execution: `helpers` and, when API mode cannot be had, why.
pub(crate) async fn enable_api(
    inner: &Inner,
    job: &JobRow,
    spec: &EventSpec,
    lease: &Lease,
    recorder: &Recorder,
    req: &mut RunRequest,
    relay_possible: Result<(), String>,
) -> ExecutionUpdate {
    let bundled = |note: Option<String>| ExecutionUpdate {
        helpers: Some(HelperMode::Bundled.as_str().into()),
        helpers_note: note,
        ..Default::default()
    };
    if helper_mode(inner, job, spec) != HelperMode::Api {
        return bundled(None);
    }
    if let Err(why) = relay_possible {
        return bundled(Some(why));
    }
    let Some(runtime) = inner.runtime.clone() else {
        return bundled(Some("this agent has no runtime API; bundled mode".into()));
    };
    let exec = req.context.execution_id;
    let token = cronium_core::crypto::new_runtime_token();
    // A script that prints its token shows it masked, like any secret of the job.
    if let Err(e) = recorder.masker().extend([token.as_str()]) {
        return bundled(Some(format!("cannot mask the runtime token: {e}")));
    }
    let expires_at = now_ms() + req.hard_deadline().as_millis() as i64;
    match runtime
        .set_token(
            lease,
            exec,
            &cronium_core::crypto::token_sha256(&token),
            expires_at,
        )
        .await
    {
        Ok(true) => {}
        Ok(false) => return bundled(Some("the lease was lost before API mode started".into())),
        Err(e) => return bundled(Some(format!("cannot store the runtime token: {e}"))),
    }
    let ctx = &req.context;
    let event = serde_json::json!({
        "id": job.event_id,
        "name": job.event_name,
        "job_id": job.id,
        "execution_id": exec,
        "attempt": ctx.attempt,
        "trigger": ctx.trigger,
        "server": ctx.server,
        "version": job.event_version,
    });
    let input = match &job.input {
        Value::Null => Value::Object(Default::default()),
        v => v.clone(),
    };
    req.control = Some(recorder.api_channel(exec, runtime, lease.attempt, input, event));
    req.context.helper_mode = HelperMode::Api;
    req.context.api = Some(ApiSettings {
        endpoint: API_RELAY.to_string(),
        token,
    });
    ExecutionUpdate {
        helpers: Some(HelperMode::Api.as_str().into()),
        ..Default::default()
    }
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
) -> (bool, Option<HandedOff>) {
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
    match inner
        .queue
        .finish_attempt(lease, job.node_run_id, &updates, &outcome, handoff)
        .await
    {
        Ok((true, next)) => (true, next),
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
