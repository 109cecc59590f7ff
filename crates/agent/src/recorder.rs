//! Turns the runner event streams of one job's executions into stored state: numbered log lines
//! (one sequence per job, across attempts and servers), execution status and timings, outputs and
//! variable writes. It is the only writer of a job's log, so numbering needs no coordination.
//!
//! Everything it stores is masked first: every log line (script and system), every output, and,
//! through [`Recorder::masker`], the errors the job records. The agent teaches it the job's
//! secrets before the run starts ([`Recorder::learn_variables`], [`Recorder::learn_credentials`]);
//! a value a script writes to a secret variable is masked from the moment the recorder sees that
//! write. A secret cut in two by the runner's line cap is masked across the cut: a line of the
//! cap's length is held until the rest of it arrives.
//!
//! Every write carries the job's lease. A refused write means the lease was lost: the recorder
//! marks the job lost, cancels the run and writes nothing more, so it can never collide with the
//! new owner's sequence numbers.
//!
//! Lines are stored in batches: whatever has arrived while the previous batch was being written
//! goes in the next one, so an idle job's line reaches viewers at once and a flood of output is
//! written in large transactions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use cronium_core::clock::now_ms;
use cronium_core::logbus::LogBus;
use cronium_core::mask::{maskable, secret_texts, MaskError, Masker, MIN_SECRET_CHARS};
use cronium_core::transport::ControlRx;
use cronium_core::transport::EventSink;
use cronium_model::queue::{ExecutionUpdate, NewLogLine};
use cronium_model::ExecutionStatus;
use cronium_protocol::{api_error, ApiCall, Control, RunnerEvent, Stream, MAX_LINE_BYTES};
use cronium_ssh::Credential;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::queue::{JobQueue, Lease, QueueError, RemoteServer, Variables};
use crate::runtime::RuntimeApi;

const BATCH: usize = 2_000;
/// Retries of a batch the store failed to take, with doubling waits from 100 ms (about 3 s).
const STORE_RETRIES: u32 = 5;
/// The runner cuts a longer line into pieces of at least this many bytes (see
/// [`MAX_LINE_BYTES`]); a line this long may continue in the next one.
const CUT_LINE_BYTES: usize = MAX_LINE_BYTES - 3;

/// What the recorder learnt about each execution.
#[derive(Debug, Default, Clone)]
pub struct ExecutionFacts {
    /// The last output, masked.
    pub output: Option<Value>,
    pub condition: Option<bool>,
    pub runner_version: Option<String>,
    pub setup_ms: Option<u64>,
    pub started_at: Option<i64>,
    /// Why the helpers fell back from API to bundled mode, if they did.
    pub helpers_fallback: Option<String>,
}

/// What the recorder needs to answer an execution's relayed runtime API calls.
pub struct ApiContext {
    pub runtime: Arc<dyn RuntimeApi>,
    /// The execution's attempt (the claim its writes are fenced by).
    pub attempt: i32,
    /// What `input` answers.
    pub input: Value,
    /// What `event` answers.
    pub event: Value,
    replies: mpsc::Sender<Control>,
}

type ApiContexts = Arc<std::sync::Mutex<HashMap<Option<i64>, Arc<ApiContext>>>>;

/// The masker of one job, shared by the recorder's handle (the agent adds the secrets it
/// resolves) and its task (which adds secret variables a script writes).
#[derive(Clone, Default)]
pub struct SharedMasker(Arc<RwLock<Arc<Masker>>>);

impl SharedMasker {
    /// The masker as it is now.
    pub fn current(&self) -> Arc<Masker> {
        match self.0.read() {
            Ok(m) => m.clone(),
            // A writer panicked between two plain assignments: the value is still whole.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn extend<I, S>(&self, secrets: I) -> Result<(), MaskError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut guard = self.0.write().unwrap_or_else(|p| p.into_inner());
        let mut next = Masker::clone(&guard);
        next.extend(secrets)?;
        *guard = Arc::new(next);
        Ok(())
    }

    /// `text` with every secret known so far masked.
    pub fn mask(&self, text: &str) -> String {
        self.current().mask(text).into_owned()
    }
}

/// What a recorder does when the store refuses one of its writes (another worker owns the
/// job now): sets `lost` and cancels `cancel`, which stops the run.
pub struct OnLeaseLost {
    pub lost: Arc<AtomicBool>,
    pub cancel: CancellationToken,
}

pub struct Recorder {
    tx: mpsc::Sender<(Option<i64>, RunnerEvent)>,
    task: JoinHandle<HashMap<Option<i64>, ExecutionFacts>>,
    forwarders: std::sync::Mutex<Vec<JoinHandle<()>>>,
    masker: SharedMasker,
    api: ApiContexts,
}

impl Recorder {
    /// Starts recording for `lease`, numbering lines from `first_seq`. When the store refuses a
    /// write (the lease was lost), it does what `on_lost` says.
    pub fn start(
        queue: Arc<dyn JobQueue>,
        bus: Arc<LogBus>,
        metrics: Arc<cronium_core::metrics::Metrics>,
        lease: Lease,
        first_seq: i64,
        on_lost: OnLeaseLost,
    ) -> Self {
        let OnLeaseLost { lost, cancel } = on_lost;
        let (tx, mut rx) = mpsc::channel::<(Option<i64>, RunnerEvent)>(4 * BATCH);
        let masker = SharedMasker::default();
        let api: ApiContexts = Default::default();
        let mut w = Writer {
            api: api.clone(),
            queue,
            bus,
            metrics,
            lease,
            masker: masker.clone(),
            cancel,
            lost,
            stopped: false,
            seq: first_seq - 1,
            lines: Vec::new(),
            facts: HashMap::new(),
            held: HashMap::new(),
            unstored: 0,
            starts: Vec::new(),
        };
        let task = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            while let Some(first) = rx.recv().await {
                batch.push(first);
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(e) => batch.push(e),
                        Err(_) => break,
                    }
                }
                if w.stopped {
                    // Keep draining, so that the transports never block on a full channel
                    // while the cancelled run winds down.
                    batch.clear();
                    continue;
                }
                // Taken after the batch arrived: a secret learnt before any of its events was
                // sent is in it.
                let mut masker = w.masker.current();
                let mut touched_outputs = Vec::new();
                for (exec, event) in batch.drain(..) {
                    if w.stopped {
                        break;
                    }
                    w.event(exec, event, &mut masker, &mut touched_outputs)
                        .await;
                }
                w.store_starts().await;
                // Outputs are written as they change, so a script that later fails or times out
                // keeps what it produced.
                for exec in touched_outputs {
                    w.write_output(exec, &masker).await;
                }
                w.store_lines().await;
            }
            w.finish().await
        });
        Recorder {
            tx,
            task,
            forwarders: std::sync::Mutex::new(Vec::new()),
            masker,
            api,
        }
    }

    /// Makes the recorder answer the runtime API calls of `execution_id` (API mode); returns the
    /// channel of answers the transport writes to the runner's stdin ([`RunRequest::control`]).
    ///
    /// [`RunRequest::control`]: cronium_core::transport::RunRequest::control
    pub fn api_channel(
        &self,
        execution_id: i64,
        runtime: Arc<dyn RuntimeApi>,
        attempt: i32,
        input: Value,
        event: Value,
    ) -> ControlRx {
        let (replies, rx) = mpsc::channel(256);
        let ctx = ApiContext {
            runtime,
            attempt,
            input,
            event,
            replies,
        };
        if let Ok(mut map) = self.api.lock() {
            map.insert(Some(execution_id), Arc::new(ctx));
        }
        Arc::new(tokio::sync::Mutex::new(rx))
    }

    /// A sink for one execution's events (what a transport writes to).
    pub fn sink_for(&self, execution_id: Option<i64>) -> EventSink {
        let (etx, mut erx) = mpsc::channel::<RunnerEvent>(BATCH);
        let tx = self.tx.clone();
        let forwarder = tokio::spawn(async move {
            while let Some(e) = erx.recv().await {
                if tx.send((execution_id, e)).await.is_err() {
                    break;
                }
            }
        });
        if let Ok(mut f) = self.forwarders.lock() {
            f.push(forwarder);
        }
        etx
    }

    /// A line written by the agent itself (masked like every other line).
    pub async fn system(&self, execution_id: Option<i64>, line: impl Into<String>) {
        let _ = self
            .tx
            .send((
                execution_id,
                RunnerEvent::Log {
                    seq: 0,
                    stream: Stream::System,
                    line: line.into(),
                    ts_ms: now_ms(),
                },
            ))
            .await;
    }

    /// The job's masker, for what the agent records outside the event stream (errors). It keeps
    /// learning until the recorder is closed.
    pub fn masker(&self) -> SharedMasker {
        self.masker.clone()
    }

    /// Learns the values of the secret variables a run sees; call it before the run starts.
    /// A secret too short to be masked is named (never shown) in a system line.
    pub async fn learn_variables(&self, vars: &Variables) -> Result<(), String> {
        let mut texts = Vec::new();
        for name in &vars.secret {
            let Some(value) = vars.values.get(name) else {
                continue;
            };
            let parts = secret_texts(value);
            if parts.iter().any(|p| !maskable(p)) {
                let what = if value.is_string() {
                    "is"
                } else {
                    "has values"
                };
                self.system(
                    None,
                    format!(
                        "[cronium] secret variable {name} {what} shorter than {MIN_SECRET_CHARS} \
                         characters: not masked in logs"
                    ),
                )
                .await;
            }
            texts.extend(parts);
        }
        self.masker.extend(texts).map_err(|e| e.to_string())
    }

    /// Learns the SSH credentials of the servers a job runs on (passwords, key passphrases, the
    /// body of private keys); call it before connecting.
    pub async fn learn_credentials(&self, servers: &[RemoteServer]) -> Result<(), String> {
        let mut texts = Vec::new();
        for server in servers {
            let (what, secret) = match &server.config.credential {
                Credential::Password(p) => ("password", p),
                Credential::Key { pem, passphrase } => {
                    // The key's base64 lines, not its BEGIN/END armour.
                    texts.extend(
                        pem.lines()
                            .filter(|l| !l.starts_with("-----"))
                            .map(str::to_string),
                    );
                    match passphrase {
                        Some(p) => ("key passphrase", p),
                        None => continue,
                    }
                }
            };
            if !secret.is_empty() && !maskable(secret) {
                self.system(
                    None,
                    format!(
                        "[cronium] the {what} of server {} is shorter than {MIN_SECRET_CHARS} \
                         characters: not masked in logs",
                        server.config.name
                    ),
                )
                .await;
            }
            texts.push(secret.clone());
        }
        self.masker.extend(texts).map_err(|e| e.to_string())
    }

    /// Waits until everything sent so far is stored; returns what was learnt per execution.
    /// Every sink handed out must have been dropped.
    pub async fn close(self) -> HashMap<Option<i64>, ExecutionFacts> {
        let forwarders = self.forwarders.into_inner().unwrap_or_default();
        for f in forwarders {
            let _ = f.await;
        }
        drop(self.tx);
        self.task.await.unwrap_or_default()
    }
}

/// A piece of a long line, held until the rest of the line arrives (see [`Writer::take_log`]).
struct Held {
    stream: Stream,
    text: String,
    ts: i64,
}

/// The recorder task's state.
struct Writer {
    api: ApiContexts,
    queue: Arc<dyn JobQueue>,
    bus: Arc<LogBus>,
    /// `streaming_log_latency`: observed once per stored batch, for its oldest line.
    metrics: Arc<cronium_core::metrics::Metrics>,
    lease: Lease,
    masker: SharedMasker,
    cancel: CancellationToken,
    lost: Arc<AtomicBool>,
    /// The lease was lost: nothing more is written.
    stopped: bool,
    /// The last seq handed out.
    seq: i64,
    /// Lines of the current batch, masked and numbered.
    lines: Vec<NewLogLine>,
    facts: HashMap<Option<i64>, ExecutionFacts>,
    held: HashMap<(Option<i64>, &'static str), Held>,
    /// Lines the store did not take, reported in the log at the next batch it takes.
    unstored: usize,
    /// Executions' starts of the current batch, written in one transaction with
    /// [`Writer::store_starts`] (a 200-server fan-out starts 200 executions within milliseconds:
    /// one write each would queue them behind each other).
    starts: Vec<(i64, ExecutionUpdate)>,
}

impl Writer {
    async fn event(
        &mut self,
        exec: Option<i64>,
        event: RunnerEvent,
        masker: &mut Arc<Masker>,
        touched_outputs: &mut Vec<Option<i64>>,
    ) {
        match event {
            RunnerEvent::Log {
                stream,
                line,
                ts_ms,
                ..
            } => {
                let ts = if ts_ms > 0 { ts_ms } else { now_ms() };
                self.take_log(exec, stream, line, ts, masker);
            }
            RunnerEvent::Started {
                runner_version,
                setup_ms,
                ..
            } => {
                let f = self.facts.entry(exec).or_default();
                f.runner_version = Some(runner_version.clone());
                f.setup_ms = Some(setup_ms);
                f.started_at = Some(now_ms());
                if let Some(id) = exec {
                    let update = ExecutionUpdate {
                        status: Some(ExecutionStatus::Running),
                        started_at: f.started_at,
                        setup_ms: Some(setup_ms as i64),
                        runner_version: Some(runner_version),
                        ..Default::default()
                    };
                    // Written with the other starts of this batch, before its lines.
                    self.starts.push((id, update));
                }
            }
            RunnerEvent::Output { mut value } => {
                masker.mask_value(&mut value);
                self.facts.entry(exec).or_default().output = Some(value);
                if !touched_outputs.contains(&exec) {
                    touched_outputs.push(exec);
                }
            }
            RunnerEvent::Variable { name, value } => {
                match self
                    .queue
                    .set_variable(self.lease.job_id, exec, &name, &value)
                    .await
                {
                    Ok(false) => {}
                    Ok(true) => {
                        // Secret from now on: mask it in whatever follows (in bundled mode the
                        // run's lines came before this write; its outputs are masked again at
                        // the end).
                        match self.masker.extend(secret_texts(&value)) {
                            Ok(()) => *masker = self.masker.current(),
                            Err(e) => {
                                tracing::error!(error = %e, variable = %name, "masking a secret written by a script")
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, variable = %name, "storing a variable write");
                        let line = format!("[cronium] could not store variable {name}: {e}");
                        self.push(
                            exec,
                            Stream::System,
                            masker.mask(&line).into_owned(),
                            now_ms(),
                        );
                    }
                }
            }
            RunnerEvent::Condition { value } => {
                self.facts.entry(exec).or_default().condition = Some(value)
            }
            RunnerEvent::ApiCall { id, call } => {
                let ctx = self.api.lock().ok().and_then(|m| m.get(&exec).cloned());
                let Some(ctx) = ctx else {
                    tracing::warn!(
                        job = self.lease.job_id,
                        "runtime API call from an execution without API mode; ignored"
                    );
                    return;
                };
                let (status, body) = self.api_call(exec, &ctx, call, masker).await;
                if ctx
                    .replies
                    .try_send(Control::ApiReply { id, status, body })
                    .is_err()
                {
                    tracing::warn!(job = self.lease.job_id, "runtime API answer not delivered");
                }
            }
            RunnerEvent::HelperFallback { reason } => {
                let reason = masker.mask(&reason).into_owned();
                let f = self.facts.entry(exec).or_default();
                if f.helpers_fallback.is_none() {
                    f.helpers_fallback = Some(reason.clone());
                    if let Some(id) = exec {
                        let update = ExecutionUpdate {
                            helpers_note: Some(reason),
                            ..Default::default()
                        };
                        match self.queue.update_execution(&self.lease, id, &update).await {
                            Ok(true) => {}
                            Ok(false) => self.lose("recording the helpers' fallback"),
                            Err(e) => tracing::warn!(error = %e, "recording the helpers' fallback"),
                        }
                    }
                }
            }
            // The runner's last event: nothing more of this execution will continue a held line.
            RunnerEvent::Finished(_) => self.release_held(Some(exec), masker),
            RunnerEvent::Truncated { .. } => {}
        }
    }

    /// Answers one relayed runtime API call: an HTTP status and its JSON body. Values written
    /// are masked before they are stored; a refused write (the claim is gone) stops the run.
    async fn api_call(
        &mut self,
        exec: Option<i64>,
        ctx: &ApiContext,
        call: ApiCall,
        masker: &mut Arc<Masker>,
    ) -> (u16, Value) {
        use serde_json::json;
        let Some(id) = exec else {
            return (503, api_error(503, "no execution"));
        };
        let fail = |e: QueueError| {
            tracing::warn!(error = %e, "runtime API call");
            (
                500,
                api_error(500, &format!("the server could not do it: {e}")),
            )
        };
        let gone = api_error(
            409,
            "the execution's claim is gone (it ended or another attempt owns the job)",
        );
        match call {
            ApiCall::Input => (200, json!({ "value": ctx.input })),
            ApiCall::Event => (200, json!({ "value": ctx.event })),
            ApiCall::GetOutput => match ctx.runtime.results(id).await {
                Ok((output, _)) => (200, json!({ "value": output })),
                Err(e) => fail(e),
            },
            ApiCall::Output { value } | ApiCall::OutputKey { value, .. } if self.stopped => {
                let _ = value;
                (409, gone)
            }
            call @ (ApiCall::Output { .. } | ApiCall::OutputKey { .. }) => {
                let (key, mut value) = match call {
                    ApiCall::OutputKey { key, value } => (Some(key), value),
                    ApiCall::Output { value } => (None, value),
                    _ => return (500, api_error(500, "unreachable")),
                };
                masker.mask_value(&mut value);
                match ctx
                    .runtime
                    .set_output(id, ctx.attempt, key.as_deref(), &value)
                    .await
                {
                    Ok(Some(output)) => {
                        self.facts.entry(exec).or_default().output = Some(output.clone());
                        (200, json!({ "value": output }))
                    }
                    Ok(None) => {
                        self.lose("writing an output through the runtime API");
                        (409, gone)
                    }
                    Err(e) => fail(e),
                }
            }
            ApiCall::GetVariable { name } => match ctx.runtime.get_variable(&name).await {
                Ok(v) => (200, json!({ "value": v })),
                Err(e) => fail(e),
            },
            ApiCall::SetVariable { name, value } => {
                let valid = !name.is_empty()
                    && name.len() <= 200
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
                if !valid {
                    // The rule of the variables API.
                    return (
                        422,
                        api_error(422, "name: use 1 to 200 letters, digits, -, _ and ."),
                    );
                }
                match ctx
                    .runtime
                    .set_variable(id, ctx.attempt, &name, &value)
                    .await
                {
                    Ok(Some(secret)) => {
                        if secret {
                            match self.masker.extend(secret_texts(&value)) {
                                Ok(()) => *masker = self.masker.current(),
                                Err(e) => {
                                    tracing::error!(error = %e, variable = %name, "masking a secret written by a script")
                                }
                            }
                        }
                        (200, json!({ "value": value }))
                    }
                    Ok(None) => {
                        self.lose("writing a variable through the runtime API");
                        (409, gone)
                    }
                    Err(e) => fail(e),
                }
            }
            ApiCall::SetCondition { value } => {
                match ctx.runtime.set_condition(id, ctx.attempt, value).await {
                    Ok(true) => {
                        self.facts.entry(exec).or_default().condition = Some(value);
                        (200, json!({ "value": value }))
                    }
                    Ok(false) => {
                        self.lose("setting the condition through the runtime API");
                        (409, gone)
                    }
                    Err(e) => fail(e),
                }
            }
        }
    }

    /// Masks and numbers one line. A line as long as the runner's cut may be continued by the
    /// next line of its stream, so it is held until that one arrives and both are masked
    /// together: a secret cut in two is masked whole (in the first piece).
    fn take_log(
        &mut self,
        exec: Option<i64>,
        stream: Stream,
        mut line: String,
        ts: i64,
        masker: &Masker,
    ) {
        if stream == Stream::System || masker.is_empty() {
            // In place: no copy of the line on the hot path when there is nothing to mask.
            masker.mask_string(&mut line);
            return self.push(exec, stream, line, ts);
        }
        let cut = line.len() >= CUT_LINE_BYTES;
        let key = (exec, stream.as_str());
        if let Some(held) = self.held.remove(&key) {
            let (head, consumed) = masker.mask_across(&held.text, &line);
            self.push(exec, held.stream, head, held.ts);
            line.drain(..consumed);
            if consumed > 0 && line.is_empty() && !cut {
                return; // the whole line was the end of a masked secret
            }
        }
        if cut {
            self.held.insert(
                key,
                Held {
                    stream,
                    text: line,
                    ts,
                },
            );
        } else {
            masker.mask_string(&mut line);
            self.push(exec, stream, line, ts);
        }
    }

    /// Stores the held pieces of `exec` (every execution's when `None`) as they are.
    fn release_held(&mut self, exec: Option<Option<i64>>, masker: &Masker) {
        let mut keys: Vec<_> = self
            .held
            .keys()
            .filter(|(e, _)| exec.is_none_or(|x| x == *e))
            .copied()
            .collect();
        keys.sort();
        for key in keys {
            if let Some(mut h) = self.held.remove(&key) {
                masker.mask_string(&mut h.text);
                self.push(key.0, h.stream, h.text, h.ts);
            }
        }
    }

    fn push(&mut self, exec: Option<i64>, stream: Stream, line: String, ts: i64) {
        self.seq += 1;
        self.lines.push(NewLogLine {
            execution_id: exec,
            seq: self.seq,
            stream: stream.as_str().to_string(),
            line,
            ts,
        });
    }

    async fn write_output(&mut self, exec: Option<i64>, masker: &Masker) {
        if self.stopped {
            return;
        }
        let Some(id) = exec else { return };
        let Some(f) = self.facts.get_mut(&exec) else {
            return;
        };
        let Some(out) = f.output.as_mut() else { return };
        // Again: a secret variable written later in the same batch is masked too.
        masker.mask_value(out);
        let update = ExecutionUpdate {
            output: Some(out.clone()),
            ..Default::default()
        };
        match self.queue.update_execution(&self.lease, id, &update).await {
            Ok(true) => {}
            Ok(false) => self.lose("recording an output"),
            Err(e) => tracing::warn!(error = %e, "recording output"),
        }
    }

    /// Writes the batch's execution starts in one transaction. Fenced like every write: fewer
    /// rows written than starts means the lease was lost.
    async fn store_starts(&mut self) {
        if self.starts.is_empty() || self.stopped {
            self.starts.clear();
            return;
        }
        let starts = std::mem::take(&mut self.starts);
        match self.queue.update_executions(&self.lease, &starts).await {
            Ok(n) if n == starts.len() => {}
            Ok(_) => self.lose("recording the executions' start"),
            Err(e) => tracing::warn!(error = %e, "recording execution starts"),
        }
    }

    /// Stores the batch's lines, retrying store errors. Lines the store still refuses to take
    /// are counted and reported in the log with the next batch it takes, never dropped silently.
    async fn store_lines(&mut self) {
        if self.lines.is_empty() || self.stopped {
            self.lines.clear();
            return;
        }
        let mut lines = std::mem::take(&mut self.lines);
        let unreported = self.unstored;
        if unreported > 0 {
            self.seq += 1;
            lines.push(NewLogLine {
                execution_id: None,
                seq: self.seq,
                stream: Stream::System.as_str().into(),
                line: format!(
                    "[cronium] {unreported} log line(s) before this one could not be stored \
                     (the database failed; see the server's log)"
                ),
                ts: now_ms(),
            });
        }
        let mut attempt = 0;
        loop {
            match self.queue.append_logs(&self.lease, &lines).await {
                Ok(true) => {
                    self.unstored = 0;
                    self.bus.publish(self.lease.job_id, self.seq);
                    if let Some(oldest) = lines.iter().map(|l| l.ts).min() {
                        let ms = (now_ms() - oldest).max(0);
                        self.metrics
                            .runner
                            .streaming_log_latency
                            .observe(ms as f64 / 1000.0);
                    }
                    return;
                }
                Ok(false) => return self.lose("storing log lines"),
                // The previous try committed but its answer was lost: the lines are stored.
                Err(QueueError::Conflict(field)) if attempt > 0 && field == "seq" => {
                    self.unstored = 0;
                    self.bus.publish(self.lease.job_id, self.seq);
                    return;
                }
                Err(e) if attempt < STORE_RETRIES => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "storing log lines, retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
                }
                Err(e) => {
                    let count = lines.len() - usize::from(unreported > 0);
                    tracing::error!(job = self.lease.job_id, error = %e, lines = count, "log lines could not be stored");
                    self.unstored = unreported + count;
                    return;
                }
            }
        }
    }

    /// The store refused a fenced write: another worker owns the job now.
    fn lose(&mut self, what: &str) {
        if !self.stopped {
            tracing::warn!(
                job = self.lease.job_id,
                "lease lost while {what}; stopping the run"
            );
        }
        self.stopped = true;
        self.lines.clear();
        self.held.clear();
        self.lost.store(true, Ordering::SeqCst);
        self.cancel.cancel();
    }

    /// After the last event: stores what is held and returns the facts, outputs masked with
    /// every secret learnt during the run.
    async fn finish(mut self) -> HashMap<Option<i64>, ExecutionFacts> {
        let masker = self.masker.current();
        self.release_held(None, &masker);
        self.store_starts().await;
        self.store_lines().await;
        if self.unstored > 0 {
            tracing::error!(
                job = self.lease.job_id,
                lines = self.unstored,
                "the job ended with log lines the store did not take"
            );
        }
        for f in self.facts.values_mut() {
            if let Some(out) = f.output.as_mut() {
                masker.mask_value(out);
            }
        }
        self.facts
    }
}
