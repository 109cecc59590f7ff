//! The JSON shapes of the agent API (`/api/v1/agent/...`): one request (and answer) per
//! [`JobQueue`](crate::queue::JobQueue) and [`RuntimeApi`](crate::runtime::RuntimeApi) call,
//! plus registration. Defined once here, used by both ends: the server's `api/agent.rs` and
//! [`crate::remote::HttpQueue`], so the two cannot drift.
//!
//! Every call about a claimed job carries its [`Lease`]; a fenced call whose lease is gone is
//! answered 409 with the code [`code::LEASE_LOST`], which the client turns back into the
//! trait's "lost" answer (`false`, `None`, `Heartbeat::Lost`).

use cronium_model::queue::{
    ExecutionRow, ExecutionUpdate, HandedOff, JobOutcome, JobRow, NewDeployment, NewLogLine,
    RunnerState,
};
use cronium_model::ExecutionStatus;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::queue::{Lease, RemoteServer};

/// Where the agent API lives on a server.
pub const PREFIX: &str = "/api/v1/agent";

/// Longest a claim waits on the server for a job (the client's long-poll).
pub const MAX_CLAIM_WAIT_MS: u64 = 25_000;

/// The `error.code` of the agent API's error answers.
pub mod code {
    /// 409: the lease (job, worker, attempt) is no longer this worker's.
    pub const LEASE_LOST: &str = "lease_lost";
    /// 409: a unique value met twice (`field`: `seq` means the log lines are stored already).
    pub const CONFLICT: &str = "conflict";
    /// 422: the request is not what the route takes (`field` names what is wrong).
    pub const INVALID: &str = "invalid";
    /// 422: a target names servers that are not registered.
    pub const UNKNOWN_SERVERS: &str = "unknown_servers";
    /// 500: a stored secret does not decrypt.
    pub const UNDECRYPTABLE: &str = "undecryptable";
    /// 500: a secret variable cannot be read (`field` is its name).
    pub const SECRET: &str = "secret";
    /// 500: an answer no retry changes (a stored row the server cannot read).
    pub const FATAL: &str = "fatal";
    /// 503: the store cannot answer now.
    pub const UNAVAILABLE: &str = "unavailable";
    /// 401: no agent token, or not a valid one.
    pub const UNAUTHORIZED: &str = "unauthorized";
    pub const OTHER: &str = "other";
}

/// An error answer: `{"error": {"code", "message", "field"?}}` (the API's error shape), defined
/// by the client crate so that every client of the server reads the one definition.
pub use cronium_client::{ErrorBody, ErrorDetail};

/// No data: the answer of calls that only succeed or fail.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Done {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimRequest {
    pub worker: String,
    pub lease_ms: i64,
    /// Most jobs handed out by this answer (at least 1).
    pub max: usize,
    /// How long the server may hold the request when nothing is claimable (capped at
    /// [`MAX_CLAIM_WAIT_MS`]); 0 answers at once.
    pub wait_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimResponse {
    pub jobs: Vec<JobRow>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    pub lease: Lease,
    pub lease_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    pub cancel_requested: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventSpecRequest {
    pub event_id: Option<i64>,
    pub event_version: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventSpecResponse {
    pub spec: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartExecution {
    pub lease: Lease,
    pub server: Option<String>,
    pub status: ExecutionStatus,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartedExecution {
    pub execution: ExecutionRow,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartExecutions {
    pub lease: Lease,
    pub servers: Vec<String>,
    pub status: ExecutionStatus,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartedExecutions {
    pub executions: Vec<ExecutionRow>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateExecution {
    pub lease: Lease,
    pub execution_id: i64,
    pub update: ExecutionUpdate,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateExecutions {
    pub lease: Lease,
    pub updates: Vec<(i64, ExecutionUpdate)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Count {
    pub count: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobId {
    pub job_id: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Seq {
    pub seq: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppendLogs {
    pub lease: Lease,
    /// In seq order; a batch is stored whole or not at all.
    pub lines: Vec<NewLogLine>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetJobVariable {
    pub job_id: i64,
    pub execution_id: Option<i64>,
    pub name: String,
    pub value: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Secret {
    pub secret: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Finish {
    pub lease: Lease,
    pub outcome: JobOutcome,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinishAttempt {
    pub lease: Lease,
    pub node_run_id: Option<i64>,
    pub executions: Vec<(i64, ExecutionUpdate)>,
    pub outcome: JobOutcome,
    pub handoff: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinishedAttempt {
    pub handed_off: Option<HandedOff>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RetryLater {
    pub lease: Lease,
    pub run_at: i64,
    pub error: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NextRunAt {
    pub at: Option<i64>,
}

/// The ids of every running job (for a remote agent's container reaper).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunningJobs {
    pub jobs: Vec<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResolveServers {
    pub names: Vec<String>,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResolvedServers {
    pub servers: Vec<RemoteServer>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PinHostKey {
    pub server_id: i64,
    pub key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordDeployment {
    pub server_id: i64,
    pub deployment: NewDeployment,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetPlatform {
    pub server_id: i64,
    pub os: String,
    pub arch: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetRunnerState {
    pub server_id: i64,
    pub state: Option<RunnerState>,
}

/// The runtime calls (helpers in API mode) a remote agent's runners relay.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetToken {
    pub lease: Lease,
    pub execution_id: i64,
    pub token_sha256: String,
    pub expires_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VariableName {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VariableFound {
    /// False when the variable does not exist (`value` is then null).
    pub found: bool,
    pub value: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuntimeSetVariable {
    pub execution_id: i64,
    pub attempt: i32,
    pub name: String,
    pub value: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuntimeSetOutput {
    pub execution_id: i64,
    pub attempt: i32,
    pub key: Option<String>,
    pub value: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Output {
    pub output: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuntimeSetCondition {
    pub execution_id: i64,
    pub attempt: i32,
    pub value: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecutionId {
    pub execution_id: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub output: Value,
    pub condition: Option<bool>,
}

/// What a `cronium agent` says of itself at start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Register {
    pub name: String,
    pub worker: String,
    pub version: String,
    pub tags: Vec<String>,
    /// `local`, `container` (a Docker engine answered), `ssh`.
    pub capabilities: Vec<String>,
    pub concurrency: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentBeat {
    pub name: String,
    pub worker: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Known {
    /// False: the server does not know this agent as this worker; register again.
    pub known: bool,
}
