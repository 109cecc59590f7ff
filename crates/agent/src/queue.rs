//! The agent's narrow interface to the job queue. Everything the agent reads or writes goes
//! through [`JobQueue`], so that the same agent code runs inside the server (on the store
//! directly: the server's `agent::queue::StoreQueue`) and as a separate `cronium agent`
//! process (over the agent API). The data it carries is `cronium_model::queue`'s: this crate
//! never links the store.
//!
//! Every write that belongs to a claimed job carries its [`Lease`] (job, worker, attempt): the
//! store refuses writes from a worker that lost the lease, and the agent treats a refused write as
//! "stop working on this job".

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use cronium_model::queue::{
    ExecutionRow, ExecutionUpdate, HandedOff, HealthState, Heartbeat, JobOutcome, JobRow,
    NewDeployment, NewLogLine, RunnerState,
};
use cronium_model::ExecutionStatus;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Proof of ownership of a claimed job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub job_id: i64,
    pub worker: String,
    pub attempt: i32,
}

/// A registered server, ready to connect to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoteServer {
    pub id: i64,
    pub config: cronium_ssh::ServerConfig,
    /// Its health checks as stored, for `skip_unreachable`.
    pub health: HealthState,
}

/// The variables a run sees: every value (secret ones decrypted) and which of them are secret,
/// so that their values can be masked in what the run produces.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Variables {
    pub values: BTreeMap<String, Value>,
    /// Names of the secret variables among `values`.
    pub secret: BTreeSet<String>,
}

/// Why a queue call failed, in terms that do not depend on how the queue is reached (the store
/// in the server, the agent API over HTTP). A lost lease is not an error of the fenced calls,
/// which answer `false` / `None` / [`Heartbeat::Lost`]; [`QueueError::LeaseLost`] is for a
/// transport that only learns it as an answer to something else.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue cannot answer now (store or server unreachable, a transient failure): another
    /// try later may succeed.
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    /// An answer no later try can change (a stored row that cannot be read, a request the
    /// server refuses as malformed).
    #[error("{0}")]
    Fatal(String),
    /// A unique value met twice; the field is named (`seq`: those log lines are stored).
    #[error("conflict on {0}")]
    Conflict(String),
    /// The worker no longer holds the job's attempt: stop working on it, write nothing more.
    #[error("the job's lease was lost")]
    LeaseLost,
    /// A stored secret (a variable, a server credential) cannot be decrypted: wrong key or a
    /// damaged row. The message names it.
    #[error("{0}")]
    Undecryptable(String),
    /// A target names servers that are not registered.
    #[error("unknown server(s): {0}")]
    UnknownServers(String),
    /// A secret variable whose value cannot be had; the reason never holds the value.
    #[error("secret variable {name} cannot be read: {reason}")]
    Secret { name: String, reason: String },
    #[error("{0}")]
    Other(String),
}

impl QueueError {
    /// True when asking again cannot give another answer (as opposed to an unreachable store):
    /// the job that met it must not be retried.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            QueueError::Undecryptable(_)
                | QueueError::Secret { .. }
                | QueueError::UnknownServers(_)
                | QueueError::Fatal(_)
        )
    }
}

#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
    async fn claim(&self, worker: &str, lease_ms: i64) -> Result<Option<JobRow>, QueueError>;
    /// Like [`JobQueue::claim`], but may wait up to `wait` for a claimable job (the agent API's
    /// long-poll). The default answers at once: the embedded agent is woken in-process.
    async fn claim_wait(
        &self,
        worker: &str,
        lease_ms: i64,
        wait: std::time::Duration,
    ) -> Result<Option<JobRow>, QueueError> {
        let _ = wait;
        self.claim(worker, lease_ms).await
    }
    async fn heartbeat(&self, lease: &Lease, lease_ms: i64) -> Result<Heartbeat, QueueError>;
    /// The event spec of the version the job was enqueued with.
    async fn event_spec(&self, job: &JobRow) -> Result<Option<Value>, QueueError>;
    async fn start_execution(
        &self,
        lease: &Lease,
        server: Option<&str>,
        status: ExecutionStatus,
    ) -> Result<Option<ExecutionRow>, QueueError>;
    /// One execution per server, created together (one store transaction for a fan-out).
    async fn start_executions(
        &self,
        lease: &Lease,
        servers: &[&str],
        status: ExecutionStatus,
    ) -> Result<Option<Vec<ExecutionRow>>, QueueError>;
    async fn update_execution(
        &self,
        lease: &Lease,
        execution_id: i64,
        update: &ExecutionUpdate,
    ) -> Result<bool, QueueError>;
    /// Several execution updates of one attempt, written together. Returns how many were written.
    async fn update_executions(
        &self,
        lease: &Lease,
        updates: &[(i64, ExecutionUpdate)],
    ) -> Result<usize, QueueError>;
    /// Highest stored log seq of the job (0 when none), to continue numbering after a retry.
    async fn max_log_seq(&self, job_id: i64) -> Result<i64, QueueError>;
    /// Stores log lines of the claimed attempt. False (nothing stored) when the lease was lost.
    async fn append_logs(&self, lease: &Lease, lines: &[NewLogLine]) -> Result<bool, QueueError>;
    /// Every variable, secret ones decrypted, for a run's snapshot. A secret that cannot be
    /// decrypted (another encryption key) or does not decode is an error naming it, never a
    /// silent null.
    async fn variables(&self) -> Result<Variables, QueueError>;
    /// A variable written by a script of job `job_id` (its execution, when known), recorded as
    /// a write of that job (never its value); a secret variable stays secret. True when it is
    /// secret.
    async fn set_variable(
        &self,
        job_id: i64,
        execution_id: Option<i64>,
        name: &str,
        value: &Value,
    ) -> Result<bool, QueueError>;
    async fn finish(&self, lease: &Lease, outcome: &JobOutcome) -> Result<bool, QueueError>;
    /// The attempt's end as one write: its executions' final updates and the job's outcome
    /// (`node_run_id` is the claimed row's: a node's job also starts its ready successors).
    /// False when the lease was lost. With `handoff` (a lease, in ms), a successor it made
    /// ready is claimed for this worker in the same write and returned, to run next.
    async fn finish_attempt(
        &self,
        lease: &Lease,
        node_run_id: Option<i64>,
        executions: &[(i64, ExecutionUpdate)],
        outcome: &JobOutcome,
        handoff: Option<i64>,
    ) -> Result<(bool, Option<HandedOff>), QueueError>;
    async fn retry_later(
        &self,
        lease: &Lease,
        run_at: i64,
        error: &str,
    ) -> Result<bool, QueueError>;
    /// Requeues or fails jobs whose worker vanished; returns how many.
    async fn recover_expired(&self) -> Result<usize, QueueError>;
    /// Earliest `run_at` among queued jobs, to sleep until a delayed retry is due.
    async fn next_run_at(&self) -> Result<Option<i64>, QueueError>;
    /// The servers a `servers` target names, by name or by tag, with their credentials. Unknown
    /// names are an error that says which.
    async fn resolve_servers(
        &self,
        names: &[String],
        tags: &[String],
    ) -> Result<Vec<RemoteServer>, QueueError>;
    /// Pins the key a server presented on first contact.
    async fn pin_host_key(&self, server_id: i64, key: &str) -> Result<(), QueueError>;
    /// Remembers a changed host key for an operator to accept.
    async fn host_key_changed(&self, server_id: i64, observed_key: &str) -> Result<(), QueueError>;
    async fn record_deployment(
        &self,
        server_id: i64,
        deployment: &NewDeployment,
    ) -> Result<(), QueueError>;
    /// Stores the OS and architecture detected on a server.
    async fn set_platform(&self, server_id: i64, os: &str, arch: &str) -> Result<(), QueueError>;
    /// Remembers the runner verified on a server (`None`: forget it, an error put it in doubt).
    async fn set_runner_state(
        &self,
        server_id: i64,
        state: Option<&RunnerState>,
    ) -> Result<(), QueueError>;
}

/// The encryption context of a secret variable's value (bound to its name).
pub fn variable_context(name: &str) -> String {
    format!("variable:{name}")
}
