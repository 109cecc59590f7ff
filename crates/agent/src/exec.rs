//! What a job and its targets share: the run context of one attempt ([`RunCtx`]), the steps
//! every target takes with it (the payload, the variables snapshot, the execution, the run
//! request, API mode), the result of one execution ([`ExecResult`]) and the classified error
//! of a job ([`JobError`]).
//!
//! It sits below both `job.rs` (which builds the context and concludes the job) and the
//! `targets` (which run the executions): it knows neither, so the dependency goes one way.
//! It decides nothing about a job's outcome and starts no run itself.

use std::collections::BTreeMap;
use std::sync::Arc;

use cronium_core::clock::now_ms;
use cronium_core::payload::{PayloadError, PayloadRef, PayloadSource};
use cronium_core::spec::EventSpec;
use cronium_core::transport::RunRequest;
use cronium_model::queue::{ExecutionUpdate, JobRow};
use cronium_model::ExecutionStatus;
use cronium_protocol::{
    ApiSettings, EventMeta, Finished, HelperMode, RunContext, RunStatus, API_RELAY,
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::queue::{Lease, QueueError, Variables};
use crate::recorder::Recorder;
use crate::Inner;

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
    pub(crate) fn context(self, doing: &str) -> Self {
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

/// A run that failed before or without a result from the runner (it could not be started, the
/// transport failed): worth another attempt.
pub(crate) fn failed(error: String) -> Finished {
    Finished {
        status: RunStatus::Failed,
        exit_code: None,
        signal: None,
        run_ms: 0,
        error: Some(error),
        usage: None,
    }
}

/// Everything one attempt of a job runs with: built once by `job.rs` when the spec is read,
/// handed to the job's target. Cheap to clone (a fan-out gives each server task its own, with
/// the fan-out's cancel token).
#[derive(Clone)]
pub(crate) struct RunCtx {
    pub(crate) inner: Arc<Inner>,
    pub(crate) job: Arc<JobRow>,
    /// The claim every write of the attempt is fenced by.
    pub(crate) lease: Lease,
    /// The event version the job was enqueued with, parsed once (with a node's overrides).
    pub(crate) spec: Arc<EventSpec>,
    pub(crate) recorder: Arc<Recorder>,
    /// Cancelled when the job is cancelled or its lease is lost.
    pub(crate) cancel: CancellationToken,
    /// What the predecessor node's end prepared for this job (a hand-off), taken once.
    pub(crate) prepared: Arc<std::sync::Mutex<Prepared>>,
}

/// What a node's end prepares for the successor it hands off, so that the successor starts
/// without store calls of its own: the variables, read while the end was written, and its one
/// execution, created `pending` by the end's write (local, container and http jobs).
#[derive(Default)]
pub(crate) struct Prepared {
    /// Taken by the first [`RunCtx::variables`].
    pub(crate) variables: Option<Variables>,
    /// Taken by [`RunCtx::start_execution`]; still here after the run when the target failed
    /// before it started the run, and then ended as failed with the job's error.
    pub(crate) execution: Option<i64>,
}

impl RunCtx {
    /// The single execution of a local, http or container run, created `pending`.
    pub(crate) async fn start_execution(&self) -> Result<i64, JobError> {
        if let Some(id) = self
            .prepared
            .lock()
            .ok()
            .and_then(|mut p| p.execution.take())
        {
            return Ok(id);
        }
        Ok(self
            .inner
            .queue
            .start_execution(&self.lease, None, ExecutionStatus::Pending)
            .await?
            .ok_or_else(|| JobError::retryable("lease lost before the execution started"))?
            .id)
    }

    /// The variables a run sees (secret ones decrypted), read once per job, before the run
    /// starts; the recorder learns the secret ones, to mask them in everything the run produces.
    /// A secret that cannot be decrypted is fatal: no later attempt would decrypt it either.
    pub(crate) async fn variables(&self) -> Result<BTreeMap<String, Value>, JobError> {
        let prefetched = self
            .prepared
            .lock()
            .ok()
            .and_then(|mut p| p.variables.take());
        let vars = match prefetched {
            Some(vars) => vars,
            None => self
                .inner
                .queue
                .variables()
                .await
                .map_err(|e| JobError::from(e).context("cannot read variables"))?,
        };
        self.recorder
            .learn_variables(&vars)
            .await
            .map_err(JobError::retryable)?;
        Ok(vars.values)
    }

    /// The payload of the job's event version, built (or found in the cache) once per job,
    /// before any execution starts.
    pub(crate) fn payload(&self) -> Result<PayloadRef, JobError> {
        let (inner, job, spec) = (&self.inner, &self.job, &self.spec);
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
        let (payload, generated) =
            inner
                .payloads
                .get_or_build_timed(&src)
                .map_err(|e| match e {
                    // What the event holds cannot be encoded: the same spec fails the same way
                    // every time.
                    PayloadError::Manifest(_) => {
                        JobError::fatal(format!("cannot build the payload: {e}"))
                    }
                    // Writing it failed (disk full, permissions): that may be fixed before the
                    // next attempt.
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
        &self,
        payload: &PayloadRef,
        execution_id: i64,
        server: Option<&str>,
        variables: BTreeMap<String, Value>,
    ) -> RunRequest {
        let (inner, job) = (&self.inner, &self.job);
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
            timeout: self.spec.timeout.0,
            kill_grace: inner.config.kill_grace,
            control: None,
        }
    }

    /// The helpers mode of the job: its workflow node's override, else the event's `helpers`,
    /// else the server's `--helpers` default.
    pub(crate) fn helper_mode(&self) -> HelperMode {
        cronium_core::workflow::NodeOverrides::from_value(&self.job.overrides)
            .ok()
            .and_then(|o| o.helpers)
            .or(self.spec.helpers)
            .unwrap_or(self.inner.config.helpers)
    }

    /// Turns `req` into an API-mode request when the job asks for it: mints the execution's
    /// runtime token (only its SHA-256 is stored, valid until the run's hard deadline), gives
    /// the runner the token and the relay endpoint, and makes the recorder answer its calls.
    /// Returns what to record on the execution: `helpers` and, when API mode cannot be had, why.
    pub(crate) async fn enable_api(
        &self,
        req: &mut RunRequest,
        relay_possible: Result<(), String>,
    ) -> ExecutionUpdate {
        let (job, lease, recorder) = (&self.job, &self.lease, &self.recorder);
        let bundled = |note: Option<String>| ExecutionUpdate {
            helpers: Some(HelperMode::Bundled.as_str().into()),
            helpers_note: note,
            ..Default::default()
        };
        if self.helper_mode() != HelperMode::Api {
            return bundled(None);
        }
        if let Err(why) = relay_possible {
            return bundled(Some(why));
        }
        let Some(runtime) = self.inner.runtime.clone() else {
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
}
