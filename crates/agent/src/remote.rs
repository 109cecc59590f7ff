//! [`HttpQueue`]: the agent's [`JobQueue`] and [`RuntimeApi`] over the agent API
//! (`/api/v1/agent/...`, shapes in [`crate::wire`]), for a `cronium agent` on another machine.
//!
//! Calls that may safely be sent again (reads, heartbeats, fenced writes whose repeat the store
//! refuses or makes harmless: log lines carry their seqs) are retried with backoff when the
//! server cannot be reached; a claim is never resent blindly (a lost answer leaves its jobs to
//! lease recovery). A lost lease (409 `lease_lost`) becomes the trait's "lost" answer.

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
use crate::wire::{self, code};

/// Tries of an idempotent call before its error is returned (with backoff between).
const TRIES: u32 = 6;
/// First backoff; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The agent API of one server, with an agent token.
#[derive(Clone)]
pub struct HttpQueue {
    base: String,
    token: String,
    http: reqwest::Client,
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
        let http = reqwest::Client::builder()
            .user_agent(concat!("cronium-agent/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| QueueError::Fatal(format!("HTTP client: {e}")))?;
        Ok(HttpQueue {
            base: format!("{}{}", url.trim_end_matches('/'), wire::PREFIX),
            token: token.trim().to_string(),
            http,
        })
    }

    async fn once<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<T, CallError> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .timeout(timeout)
            .json(body)
            .send()
            .await
            .map_err(|e| CallError::Transport(e.to_string()))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| CallError::Transport(e.to_string()))?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&bytes).map_err(|e| CallError::Answer {
                status,
                body: wire::ErrorBody {
                    error: wire::ErrorDetail {
                        code: code::FATAL.into(),
                        message: format!("the server's answer to {path} does not parse: {e}"),
                        field: None,
                    },
                },
            });
        }
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| wire::ErrorBody {
            error: wire::ErrorDetail {
                code: if status >= 500 {
                    code::UNAVAILABLE
                } else {
                    code::FATAL
                }
                .into(),
                message: format!(
                    "{path}: HTTP {status}: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                ),
                field: None,
            },
        });
        Err(CallError::Answer { status, body })
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
        let r: Option<wire::Done> = fenced(self.call("/execution/update", &req).await)?;
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
        let r: wire::Count = self
            .call("/executions/update", &req)
            .await
            .map_err(into_error)?;
        Ok(r.count)
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
        let r: Option<wire::Done> = fenced(self.call("/finish", &req).await)?;
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
        let r: Option<wire::FinishedAttempt> = fenced(self.call("/finish-attempt", &req).await)?;
        Ok(match r {
            Some(r) => (true, r.handed_off),
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
        let r: Option<wire::Done> = fenced(self.call("/retry-later", &req).await)?;
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
