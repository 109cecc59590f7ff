//! [`HttpQueue`]: the agent's [`JobQueue`] and [`RuntimeApi`] over the agent API
//! (`/api/v1/agent/...`, shapes in [`crate::wire`]), for a `cronium agent` on another machine.
//!
//! Calls that may safely be sent again (reads, heartbeats, fenced writes whose repeat the store
//! refuses or makes harmless: log lines carry their seqs) are retried with backoff when the
//! server cannot be reached; a claim is never resent blindly (a lost answer leaves its jobs to
//! lease recovery). A lost lease (409 `lease_lost`) becomes the trait's "lost" answer.
//!
//! With a [`Spool`] ([`HttpQueue::with_spool`], what `cronium agent` uses), the fenced writes of
//! a running job (log batches, execution updates, the attempt's end) that meet an unreachable
//! server (no answer, a timeout, 502/503/504) are buffered on disk instead, and so are the
//! attempt's later writes until the buffer is delivered, in order, by
//! [`HttpQueue::deliver_spool`]: the job keeps running. When the server is reachable nothing is
//! written to disk.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cronium_model::queue::{
    ExecutionRow, ExecutionUpdate, HandedOff, Heartbeat, JobOutcome, JobRow, NewDeployment,
    NewLogLine, RunnerState,
};
use cronium_model::ExecutionStatus;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::queue::{JobQueue, Lease, QueueError, RemoteServer, Variables};
use crate::runtime::RuntimeApi;
use crate::spool::{Next, Record, Spool};
use crate::wire::{self, code};

/// Tries of an idempotent call before its error is returned (with backoff between).
const TRIES: u32 = 6;
/// First backoff; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a write that may be buffered waits for an answer before it is buffered.
const WRITE_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest wait between two delivery attempts of the spool while the server is unreachable.
const MAX_DELIVERY_BACKOFF: Duration = Duration::from_secs(2);

/// The agent API of one server, with an agent token.
#[derive(Clone)]
pub struct HttpQueue {
    /// Based at the agent API's prefix (paths are `/claim`, `/logs`, ...).
    api: cronium_client::Client,
    spool: Option<Arc<Spool>>,
}

/// What a write that may be buffered got.
enum Written<T> {
    Answer(T),
    /// Buffered in the spool, to be delivered later: for the job, it is written.
    Buffered,
}

/// What delivering one buffered record got.
enum Delivered {
    Done,
    /// The attempt is no longer this agent's.
    Lost,
    /// No answer: try again later.
    Unreachable(String),
    /// An answer no resend can change: the record is given up (logged).
    Refused(String),
}

/// No answer, or an answer that says the server is not there (a proxy's 502/503/504).
fn unreachable(e: &CallError) -> bool {
    matches!(
        e,
        CallError::Transport(_)
            | CallError::Answer {
                status: 502..=504,
                ..
            }
    )
}

/// A failed call: the server's error answer, or no answer at all.
enum CallError {
    /// No answer (connection refused or reset, timeout): worth another try.
    Transport(String),
    Answer {
        status: u16,
        body: wire::ErrorBody,
    },
}

impl HttpQueue {
    /// `url` is the server's base URL (`https://cronium.example:8080`).
    pub fn new(url: &str, token: &str) -> Result<HttpQueue, QueueError> {
        let api = cronium_client::Client::builder(&format!(
            "{}{}",
            url.trim_end_matches('/'),
            wire::PREFIX
        ))
        .token(token)
        .user_agent(concat!("cronium-agent/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| QueueError::Fatal(e.to_string()))?;
        Ok(HttpQueue { api, spool: None })
    }

    /// Buffers the fenced writes of running jobs in `spool` while the server is unreachable.
    pub fn with_spool(mut self, spool: Arc<Spool>) -> HttpQueue {
        self.spool = Some(spool);
        self
    }

    pub fn spool(&self) -> Option<&Arc<Spool>> {
        self.spool.as_ref()
    }

    /// A fenced write of `lease`'s attempt. Without a spool: [`HttpQueue::call`]. With one: sent
    /// once, and buffered when the server does not answer, or when earlier writes of the attempt
    /// are still buffered (they go first); refused at once when the server already said the
    /// attempt is not this agent's.
    async fn write<B: Serialize, T: DeserializeOwned>(
        &self,
        lease: &Lease,
        path: &str,
        body: &B,
        record: impl FnOnce() -> Record,
    ) -> Result<Written<T>, CallError> {
        let Some(spool) = &self.spool else {
            return self.call(path, body).await.map(Written::Answer);
        };
        if spool.is_lost(lease) {
            return Err(lease_lost());
        }
        if spool.holds(lease) {
            return match spool.append(lease, record()) {
                Ok(()) => Ok(Written::Buffered),
                Err(e) => Err(CallError::Transport(format!(
                    "earlier writes are buffered and this one cannot be: {e}"
                ))),
            };
        }
        match self.once(path, body, WRITE_TIMEOUT).await {
            Err(e) if unreachable(&e) => match spool.append(lease, record()) {
                Ok(()) => {
                    tracing::warn!(
                        job = lease.job_id,
                        call = path,
                        "the server is unreachable: buffering the job's writes on disk"
                    );
                    Ok(Written::Buffered)
                }
                Err(io) => {
                    tracing::error!(job = lease.job_id, error = %io, "buffering a write on disk");
                    Err(e)
                }
            },
            other => other.map(Written::Answer),
        }
    }

    /// Delivers the spool, in order, attempt by attempt, each record removed once the server
    /// acknowledged it. Returns false when the server is unreachable (something is left).
    pub async fn deliver_spool(&self) -> bool {
        let Some(spool) = &self.spool else {
            return true;
        };
        for lease in spool.attempts() {
            loop {
                let (rec, bytes) = match spool.next(&lease) {
                    Ok(Next::Record(_, rec, bytes)) => (rec, bytes),
                    Ok(Next::Empty) => break,
                    Err(e) => {
                        tracing::error!(job = lease.job_id, error = %e, "reading the spool");
                        return false;
                    }
                };
                let ends = rec.ends_attempt();
                match self.deliver(&lease, rec).await {
                    Delivered::Done => spool.ack(&lease, bytes),
                    Delivered::Lost if ends => {
                        // Also what a resent end meets when the first one was written (its
                        // answer lost): either way nothing of the attempt is left to write.
                        spool.discard(
                            &lease,
                            "the server says the attempt is over (ended already, or its lease ran out and the job went elsewhere)",
                        );
                        break;
                    }
                    Delivered::Lost => {
                        spool.discard(
                            &lease,
                            "the server says the lease was lost (it ran out while the server was unreachable; the job went elsewhere)",
                        );
                        break;
                    }
                    Delivered::Unreachable(m) => {
                        tracing::debug!(error = %m, "delivering the spool: the server is still unreachable");
                        return false;
                    }
                    Delivered::Refused(m) => {
                        tracing::error!(job = lease.job_id, error = %m, "the server refused a buffered write; it is given up");
                        spool.ack(&lease, bytes);
                    }
                }
            }
        }
        true
    }

    /// Delivers the spool until `shutdown`: at once when it fills, then with backoff while the
    /// server does not answer.
    pub async fn deliver_spool_loop(&self, shutdown: tokio_util::sync::CancellationToken) {
        let Some(spool) = self.spool.clone() else {
            return;
        };
        let mut backoff = FIRST_BACKOFF;
        loop {
            if spool.is_empty() {
                backoff = FIRST_BACKOFF;
                tokio::select! {
                    _ = spool.wake.notified() => {}
                    // A safety net: a file created between the check and the wait.
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.cancelled() => return,
                }
                continue;
            }
            if self.deliver_spool().await {
                backoff = FIRST_BACKOFF;
                if !spool.is_empty() {
                    // Written meanwhile: the next round delivers it, after a breath.
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.cancelled() => return,
            }
            backoff = (backoff * 2).min(MAX_DELIVERY_BACKOFF);
        }
    }

    async fn deliver(&self, lease: &Lease, rec: Record) -> Delivered {
        let lease = lease.clone();
        let answer: Result<(), CallError> = match rec {
            Record::Logs { lines } => {
                let req = wire::AppendLogs { lease, lines };
                match self
                    .once::<_, wire::Done>("/logs", &req, WRITE_TIMEOUT)
                    .await
                {
                    // Stored by a try whose answer was lost: stored once.
                    Err(CallError::Answer { body, .. })
                        if body.error.code == code::CONFLICT
                            && body.error.field.as_deref() == Some("seq") =>
                    {
                        Ok(())
                    }
                    r => r.map(|_| ()),
                }
            }
            Record::UpdateExecution {
                execution_id,
                update,
            } => {
                let req = wire::UpdateExecution {
                    lease,
                    execution_id,
                    update: *update,
                };
                self.once::<_, wire::Done>("/execution/update", &req, WRITE_TIMEOUT)
                    .await
                    .map(|_| ())
            }
            Record::UpdateExecutions { updates } => {
                let n = updates.len();
                let req = wire::UpdateExecutions { lease, updates };
                match self
                    .once::<_, wire::Count>("/executions/update", &req, WRITE_TIMEOUT)
                    .await
                {
                    // Fewer rows than updates: the lease is not this worker's.
                    Ok(c) if c.count < n => Err(lease_lost()),
                    r => r.map(|_| ()),
                }
            }
            Record::Finish { outcome } => {
                let req = wire::Finish { lease, outcome };
                self.once::<_, wire::Done>("/finish", &req, WRITE_TIMEOUT)
                    .await
                    .map(|_| ())
            }
            Record::FinishAttempt {
                node_run_id,
                executions,
                outcome,
            } => {
                // No hand-off: this agent's slot moved on long ago.
                let req = wire::FinishAttempt {
                    lease,
                    node_run_id,
                    executions,
                    outcome,
                    handoff: None,
                };
                self.once::<_, wire::FinishedAttempt>("/finish-attempt", &req, WRITE_TIMEOUT)
                    .await
                    .map(|_| ())
            }
            Record::RetryLater { run_at, error } => {
                let req = wire::RetryLater {
                    lease,
                    run_at,
                    error,
                };
                self.once::<_, wire::Done>("/retry-later", &req, WRITE_TIMEOUT)
                    .await
                    .map(|_| ())
            }
        };
        match answer {
            Ok(()) => Delivered::Done,
            Err(e) if unreachable(&e) => Delivered::Unreachable(match e {
                CallError::Transport(m) => m,
                CallError::Answer { body, .. } => body.error.message,
            }),
            Err(e) => match into_error(e) {
                QueueError::LeaseLost => Delivered::Lost,
                QueueError::Unavailable(m) => Delivered::Unreachable(m),
                e => Delivered::Refused(e.to_string()),
            },
        }
    }

    /// One call, sent once.
    async fn once<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<T, CallError> {
        self.api
            .post(path, body, Some(timeout))
            .await
            .map_err(|e| call_error(path, e))
    }

    /// One call, sent again with backoff while the server cannot be reached or answers 503.
    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CallError> {
        let mut backoff = FIRST_BACKOFF;
        let mut tries = 0;
        loop {
            tries += 1;
            match self.once(path, body, Duration::from_secs(30)).await {
                Err(CallError::Transport(m)) if tries < TRIES => {
                    tracing::warn!(call = path, error = %m, "agent API unreachable; retrying");
                }
                Err(CallError::Answer { status: 503, .. }) if tries < TRIES => {}
                other => return other,
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Registers this agent (at start and whenever the server forgets it).
    pub async fn register(&self, r: &wire::Register) -> Result<(), QueueError> {
        let _: Value = self.call("/register", r).await.map_err(into_error)?;
        Ok(())
    }

    /// The agent's heartbeat; false when the server no longer knows it as this worker.
    pub async fn beat(&self, b: &wire::AgentBeat) -> Result<bool, QueueError> {
        let k: wire::Known = self
            .once("/beat", b, Duration::from_secs(10))
            .await
            .map_err(into_error)?;
        Ok(k.known)
    }

    pub async fn stopped(&self, b: &wire::AgentBeat) -> Result<(), QueueError> {
        let _: wire::Known = self.call("/stopped", b).await.map_err(into_error)?;
        Ok(())
    }

    /// The ids of every job running now, on any agent: what a container reaper must spare.
    pub async fn running_jobs(&self) -> Result<Vec<i64>, QueueError> {
        let r: wire::RunningJobs = self
            .call("/running-jobs", &wire::Done {})
            .await
            .map_err(into_error)?;
        Ok(r.jobs)
    }

    /// Claims up to `max` jobs, the server holding the request up to `wait` while none is
    /// claimable.
    pub async fn claim_many(
        &self,
        worker: &str,
        lease_ms: i64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<JobRow>, QueueError> {
        let req = wire::ClaimRequest {
            worker: worker.into(),
            lease_ms,
            max,
            wait_ms: wait.as_millis() as u64,
        };
        let r: wire::ClaimResponse = self
            .once("/claim", &req, wait + Duration::from_secs(10))
            .await
            .map_err(into_error)?;
        Ok(r.jobs)
    }
}

/// The client's error as the agent classifies it: no answer, or the server's answer (a body not
/// in the error shape, or a success that does not parse, get a code that says whether to try
/// again).
fn call_error(path: &str, e: cronium_client::Error) -> CallError {
    use cronium_client::Error;
    let answer =
        |status: u16, code: &str, message: String, field: Option<String>| CallError::Answer {
            status,
            body: wire::ErrorBody {
                error: wire::ErrorDetail {
                    code: code.into(),
                    message,
                    field,
                },
            },
        };
    match e {
        Error::Status {
            status,
            code: Some(code),
            message,
            field,
            ..
        } => answer(status, &code, message, field.map(String::from)),
        Error::Status {
            status,
            code: None,
            message,
            ..
        } => {
            let code = if status >= 500 {
                code::UNAVAILABLE
            } else {
                code::FATAL
            };
            let text: String = message.chars().take(200).collect();
            answer(status, code, format!("{path}: HTTP {status}: {text}"), None)
        }
        Error::Shape { status, reason, .. } => answer(
            status,
            code::FATAL,
            format!("the server's answer to {path} does not parse: {reason}"),
            None,
        ),
        e => CallError::Transport(e.to_string()),
    }
}

fn lease_lost() -> CallError {
    CallError::Answer {
        status: 409,
        body: wire::ErrorBody {
            error: wire::ErrorDetail {
                code: code::LEASE_LOST.into(),
                message: "the job's lease was lost".into(),
                field: None,
            },
        },
    }
}

fn into_error(e: CallError) -> QueueError {
    match e {
        CallError::Transport(m) => QueueError::Unavailable(m),
        CallError::Answer { status, body } => {
            let d = body.error;
            match d.code.as_str() {
                code::LEASE_LOST => QueueError::LeaseLost,
                code::CONFLICT => QueueError::Conflict(d.field.unwrap_or_default()),
                code::UNKNOWN_SERVERS => QueueError::UnknownServers(
                    d.message
                        .strip_prefix("unknown server(s): ")
                        .unwrap_or(&d.message)
                        .to_string(),
                ),
                code::UNDECRYPTABLE => QueueError::Undecryptable(d.message),
                code::SECRET => QueueError::Secret {
                    name: d.field.unwrap_or_default(),
                    reason: d.message,
                },
                code::UNAVAILABLE => QueueError::Unavailable(d.message),
                code::UNAUTHORIZED => {
                    QueueError::Fatal(format!("the server refused the agent token: {}", d.message))
                }
                code::FATAL | code::INVALID => QueueError::Fatal(d.message),
                _ if status >= 500 => QueueError::Unavailable(d.message),
                _ => QueueError::Other(d.message),
            }
        }
    }
}

/// A fenced call's answer: `Ok(None)` when the lease is lost.
fn fenced<T>(r: Result<T, CallError>) -> Result<Option<T>, QueueError> {
    match r.map_err(into_error) {
        Ok(v) => Ok(Some(v)),
        Err(QueueError::LeaseLost) => Ok(None),
        Err(e) => Err(e),
    }
}

#[async_trait]
impl JobQueue for HttpQueue {
    async fn claim(&self, worker: &str, lease_ms: i64) -> Result<Option<JobRow>, QueueError> {
        Ok(self
            .claim_many(worker, lease_ms, 1, Duration::ZERO)
            .await?
            .into_iter()
            .next())
    }

    async fn claim_wait(
        &self,
        worker: &str,
        lease_ms: i64,
        wait: Duration,
    ) -> Result<Option<JobRow>, QueueError> {
        Ok(self
            .claim_many(worker, lease_ms, 1, wait)
            .await?
            .into_iter()
            .next())
    }

    async fn heartbeat(&self, lease: &Lease, lease_ms: i64) -> Result<Heartbeat, QueueError> {
        let req = wire::HeartbeatRequest {
            lease: lease.clone(),
            lease_ms,
        };
        let r: Option<wire::HeartbeatResponse> = fenced(self.call("/heartbeat", &req).await)?;
        Ok(match r {
            Some(r) => Heartbeat::Ok {
                cancel_requested: r.cancel_requested,
            },
            None => Heartbeat::Lost,
        })
    }

    async fn event_spec(&self, job: &JobRow) -> Result<Option<Value>, QueueError> {
        let req = wire::EventSpecRequest {
            event_id: job.event_id,
            event_version: job.event_version,
        };
        let r: wire::EventSpecResponse =
            self.call("/event-spec", &req).await.map_err(into_error)?;
        Ok(r.spec)
    }

    async fn start_execution(
        &self,
        lease: &Lease,
        server: Option<&str>,
        status: ExecutionStatus,
    ) -> Result<Option<ExecutionRow>, QueueError> {
        // Not resent: a lost answer would create a second execution; the job's retry handles it.
        let req = wire::StartExecution {
            lease: lease.clone(),
            server: server.map(str::to_string),
            status,
        };
        let r: Option<wire::StartedExecution> =
            fenced(self.once("/execution", &req, Duration::from_secs(30)).await)?;
        Ok(r.map(|r| r.execution))
    }

    async fn start_executions(
        &self,
        lease: &Lease,
        servers: &[&str],
        status: ExecutionStatus,
    ) -> Result<Option<Vec<ExecutionRow>>, QueueError> {
        let req = wire::StartExecutions {
            lease: lease.clone(),
            servers: servers.iter().map(|s| s.to_string()).collect(),
            status,
        };
        let r: Option<wire::StartedExecutions> = fenced(
            self.once("/executions", &req, Duration::from_secs(30))
                .await,
        )?;
        Ok(r.map(|r| r.executions))
    }

    async fn update_execution(
        &self,
        lease: &Lease,
        execution_id: i64,
        update: &ExecutionUpdate,
    ) -> Result<bool, QueueError> {
        let req = wire::UpdateExecution {
            lease: lease.clone(),
            execution_id,
            update: update.clone(),
        };
        let r: Option<Written<wire::Done>> = fenced(
            self.write(lease, "/execution/update", &req, || {
                Record::UpdateExecution {
                    execution_id,
                    update: Box::new(update.clone()),
                }
            })
            .await,
        )?;
        Ok(r.is_some())
    }

    async fn update_executions(
        &self,
        lease: &Lease,
        updates: &[(i64, ExecutionUpdate)],
    ) -> Result<usize, QueueError> {
        let req = wire::UpdateExecutions {
            lease: lease.clone(),
            updates: updates.to_vec(),
        };
        let r: Option<Written<wire::Count>> = fenced(
            self.write(lease, "/executions/update", &req, || {
                Record::UpdateExecutions {
                    updates: updates.to_vec(),
                }
            })
            .await,
        )?;
        Ok(match r {
            Some(Written::Answer(c)) => c.count,
            Some(Written::Buffered) => updates.len(),
            None => 0,
        })
    }

    async fn max_log_seq(&self, job_id: i64) -> Result<i64, QueueError> {
        let r: wire::Seq = self
            .call("/log-seq", &wire::JobId { job_id })
            .await
            .map_err(into_error)?;
        Ok(r.seq)
    }

    async fn append_logs(&self, lease: &Lease, lines: &[NewLogLine]) -> Result<bool, QueueError> {
        let req = wire::AppendLogs {
            lease: lease.clone(),
            lines: lines.to_vec(),
        };
        if self.spool.is_some() {
            // Sent once; a batch with no answer is buffered, and delivered later, where a seq
            // conflict (a try whose answer was lost stored it) counts as delivered.
            let r: Option<Written<wire::Done>> = fenced(
                self.write(lease, "/logs", &req, || Record::Logs {
                    lines: lines.to_vec(),
                })
                .await,
            )?;
            return Ok(r.is_some());
        }
        let mut resent = false;
        let mut backoff = FIRST_BACKOFF;
        for tries in 1.. {
            match self
                .once::<_, wire::Done>("/logs", &req, Duration::from_secs(30))
                .await
            {
                Ok(_) => return Ok(true),
                Err(CallError::Transport(m)) if tries < TRIES => {
                    tracing::warn!(error = %m, "sending log lines; sending them again");
                    resent = true;
                }
                Err(e) => {
                    return match into_error(e) {
                        QueueError::LeaseLost => Ok(false),
                        // A resend after a lost answer: the batch is stored, once.
                        QueueError::Conflict(f) if resent && f == "seq" => Ok(true),
                        e => Err(e),
                    };
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        unreachable!("the loop returns")
    }

    async fn variables(&self) -> Result<Variables, QueueError> {
        self.call("/variables", &wire::Done {})
            .await
            .map_err(into_error)
    }

    async fn set_variable(
        &self,
        job_id: i64,
        execution_id: Option<i64>,
        name: &str,
        value: &Value,
    ) -> Result<bool, QueueError> {
        let req = wire::SetJobVariable {
            job_id,
            execution_id,
            name: name.into(),
            value: value.clone(),
        };
        let r: wire::Secret = self.call("/variable", &req).await.map_err(into_error)?;
        Ok(r.secret)
    }

    async fn finish(&self, lease: &Lease, outcome: &JobOutcome) -> Result<bool, QueueError> {
        let req = wire::Finish {
            lease: lease.clone(),
            outcome: outcome.clone(),
        };
        let r: Option<Written<wire::Done>> = fenced(
            self.write(lease, "/finish", &req, || Record::Finish {
                outcome: outcome.clone(),
            })
            .await,
        )?;
        Ok(r.is_some())
    }

    async fn finish_attempt(
        &self,
        lease: &Lease,
        node_run_id: Option<i64>,
        executions: &[(i64, ExecutionUpdate)],
        outcome: &JobOutcome,
        handoff: Option<i64>,
    ) -> Result<(bool, Option<HandedOff>), QueueError> {
        let req = wire::FinishAttempt {
            lease: lease.clone(),
            node_run_id,
            executions: executions.to_vec(),
            outcome: outcome.clone(),
            handoff,
        };
        // Resent on a lost answer: the second try finds the attempt ended (lease lost), and
        // the outcome the first one wrote stands.
        // Buffered: written for the job, without a hand-off (the successor is claimed the
        // usual way once the end is delivered).
        let r: Option<Written<wire::FinishedAttempt>> = fenced(
            self.write(lease, "/finish-attempt", &req, || Record::FinishAttempt {
                node_run_id,
                executions: executions.to_vec(),
                outcome: outcome.clone(),
            })
            .await,
        )?;
        Ok(match r {
            Some(Written::Answer(r)) => (true, r.handed_off),
            Some(Written::Buffered) => (true, None),
            None => (false, None),
        })
    }

    async fn retry_later(
        &self,
        lease: &Lease,
        run_at: i64,
        error: &str,
    ) -> Result<bool, QueueError> {
        let req = wire::RetryLater {
            lease: lease.clone(),
            run_at,
            error: error.into(),
        };
        let r: Option<Written<wire::Done>> = fenced(
            self.write(lease, "/retry-later", &req, || Record::RetryLater {
                run_at,
                error: error.into(),
            })
            .await,
        )?;
        Ok(r.is_some())
    }

    async fn recover_expired(&self) -> Result<usize, QueueError> {
        let r: wire::Count = self
            .call("/recover-expired", &wire::Done {})
            .await
            .map_err(into_error)?;
        Ok(r.count)
    }

    async fn next_run_at(&self) -> Result<Option<i64>, QueueError> {
        let r: wire::NextRunAt = self
            .call("/next-run-at", &wire::Done {})
            .await
            .map_err(into_error)?;
        Ok(r.at)
    }

    async fn resolve_servers(
        &self,
        names: &[String],
        tags: &[String],
    ) -> Result<Vec<RemoteServer>, QueueError> {
        let req = wire::ResolveServers {
            names: names.to_vec(),
            tags: tags.to_vec(),
        };
        let r: wire::ResolvedServers = self
            .call("/servers/resolve", &req)
            .await
            .map_err(into_error)?;
        Ok(r.servers)
    }

    async fn pin_host_key(&self, server_id: i64, key: &str) -> Result<(), QueueError> {
        let req = wire::PinHostKey {
            server_id,
            key: key.into(),
        };
        let _: wire::Done = self
            .call("/servers/pin-host-key", &req)
            .await
            .map_err(into_error)?;
        Ok(())
    }

    async fn host_key_changed(&self, server_id: i64, observed_key: &str) -> Result<(), QueueError> {
        let req = wire::PinHostKey {
            server_id,
            key: observed_key.into(),
        };
        let _: wire::Done = self
            .call("/servers/host-key-changed", &req)
            .await
            .map_err(into_error)?;
        Ok(())
    }

    async fn record_deployment(
        &self,
        server_id: i64,
        deployment: &NewDeployment,
    ) -> Result<(), QueueError> {
        let req = wire::RecordDeployment {
            server_id,
            deployment: deployment.clone(),
        };
        let _: wire::Done = self
            .call("/servers/deployment", &req)
            .await
            .map_err(into_error)?;
        Ok(())
    }

    async fn set_platform(&self, server_id: i64, os: &str, arch: &str) -> Result<(), QueueError> {
        let req = wire::SetPlatform {
            server_id,
            os: os.into(),
            arch: arch.into(),
        };
        let _: wire::Done = self
            .call("/servers/platform", &req)
            .await
            .map_err(into_error)?;
        Ok(())
    }

    async fn set_runner_state(
        &self,
        server_id: i64,
        state: Option<&RunnerState>,
    ) -> Result<(), QueueError> {
        let req = wire::SetRunnerState {
            server_id,
            state: state.cloned(),
        };
        let _: wire::Done = self
            .call("/servers/runner-state", &req)
            .await
            .map_err(into_error)?;
        Ok(())
    }
}

#[async_trait]
impl RuntimeApi for HttpQueue {
    async fn set_token(
        &self,
        lease: &Lease,
        execution_id: i64,
        token_sha256: &str,
        expires_at: i64,
    ) -> Result<bool, QueueError> {
        let req = wire::SetToken {
            lease: lease.clone(),
            execution_id,
            token_sha256: token_sha256.into(),
            expires_at,
        };
        let r: Option<wire::Done> = fenced(self.call("/runtime/token", &req).await)?;
        Ok(r.is_some())
    }

    async fn revoke_tokens(&self, job_id: i64) -> Result<(), QueueError> {
        let _: wire::Done = self
            .call("/runtime/revoke-tokens", &wire::JobId { job_id })
            .await
            .map_err(into_error)?;
        Ok(())
    }

    async fn get_variable(&self, name: &str) -> Result<Option<Value>, QueueError> {
        let r: wire::VariableFound = self
            .call(
                "/runtime/variable/get",
                &wire::VariableName { name: name.into() },
            )
            .await
            .map_err(into_error)?;
        Ok(r.found.then_some(r.value))
    }

    async fn set_variable(
        &self,
        execution_id: i64,
        attempt: i32,
        name: &str,
        value: &Value,
    ) -> Result<Option<bool>, QueueError> {
        let req = wire::RuntimeSetVariable {
            execution_id,
            attempt,
            name: name.into(),
            value: value.clone(),
        };
        let r: Option<wire::Secret> = fenced(self.call("/runtime/variable/set", &req).await)?;
        Ok(r.map(|r| r.secret))
    }

    async fn set_output(
        &self,
        execution_id: i64,
        attempt: i32,
        key: Option<&str>,
        value: &Value,
    ) -> Result<Option<Value>, QueueError> {
        let req = wire::RuntimeSetOutput {
            execution_id,
            attempt,
            key: key.map(str::to_string),
            value: value.clone(),
        };
        let r: Option<wire::Output> = fenced(self.call("/runtime/output", &req).await)?;
        Ok(r.map(|r| r.output))
    }

    async fn set_condition(
        &self,
        execution_id: i64,
        attempt: i32,
        value: bool,
    ) -> Result<bool, QueueError> {
        let req = wire::RuntimeSetCondition {
            execution_id,
            attempt,
            value,
        };
        let r: Option<wire::Done> = fenced(self.call("/runtime/condition", &req).await)?;
        Ok(r.is_some())
    }

    async fn results(&self, execution_id: i64) -> Result<(Value, Option<bool>), QueueError> {
        let r: wire::Results = self
            .call("/runtime/results", &wire::ExecutionId { execution_id })
            .await
            .map_err(into_error)?;
        Ok((r.output, r.condition))
    }
}
