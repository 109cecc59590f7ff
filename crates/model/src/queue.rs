//! The data the agent's queue interface carries: the claimed job, its executions and their
//! updates, log lines, the attempt's outcome, the heartbeat's answer, and what the SSH target
//! records about a server. The store reads and writes these rows (and re-exports them); the
//! agent's `JobQueue` passes them, in the server directly and over the agent API as JSON, which
//! is why they live here, beside the statuses they carry, and not in the store.
//!
//! Not for behaviour: what a row means to the queue is the store's; how it travels is the
//! server's agent API and the agent's HTTP queue.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::{ExecutionStatus, JobStatus, Trigger};

/// A field whose presence matters even when it is `null` (`Some(Value::Null)`): absent is
/// `None`, present is `Some`, whatever it holds.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRow {
    pub id: i64,
    /// NULL once the event is deleted (the job keeps `event_name`).
    pub event_id: Option<i64>,
    pub event_name: String,
    pub event_version: i64,
    pub trigger: Trigger,
    pub status: JobStatus,
    pub input: Value,
    pub output: Value,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    /// Attempts started so far (0 while never claimed); the fencing token.
    pub attempt: i32,
    pub max_attempts: i32,
    pub backoff_ms: i64,
    pub max_backoff_ms: i64,
    pub run_at: i64,
    pub scheduled_for: Option<i64>,
    pub serial: bool,
    pub timeout_ms: i64,
    /// The worker holding (or, once finished, last holding) the lease.
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub cancel_requested: bool,
    pub created_at: i64,
    /// First claim.
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// The workflow node run this job is for (trigger `workflow`); None for every other job.
    pub node_run_id: Option<i64>,
    /// The node's overrides of the event spec, which the agent applies (`target`, `env`,
    /// `helpers`; read with `cronium_core::workflow::NodeOverrides`). Null when none.
    pub overrides: Value,
    /// What its target needs of the agent that claims it; None for a job enqueued before
    /// routing existed (any agent takes it).
    #[serde(default)]
    pub capability: Option<crate::Capability>,
    /// Only an agent with all these tags claims it (empty: any agent).
    #[serde(default)]
    pub agent_tags: Vec<String>,
}

/// The end of a run, as reported by its worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobOutcome {
    /// A final status ([`JobStatus::is_final`]).
    pub status: JobStatus,
    pub exit_code: Option<i32>,
    pub output: Value,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Heartbeat {
    /// Lease renewed; `cancel_requested` tells the worker to stop the run.
    Ok { cancel_requested: bool },
    /// The worker no longer owns this attempt: it must stop and write nothing more.
    Lost,
}

/// The successor a node's end claimed for the same worker
/// ([`Store::finish_attempt_and_claim`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandedOff {
    pub job: JobRow,
    /// Whether other work may have become claimable by the same end: more successors than the
    /// one handed off (left queued for any claimer), or a serial sibling of the ended job.
    /// False: the worker's claim loop has nothing new to look for.
    pub more_ready: bool,
    /// The job's one execution, created `pending` by the same write, when its target runs
    /// exactly one (local, container and http jobs); None for a fan-out, which creates one
    /// per server itself.
    #[serde(default)]
    pub execution: Option<ExecutionRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionRow {
    pub id: i64,
    pub job_id: i64,
    pub attempt: i32,
    /// The SSH server's name; `None` for local and container runs.
    pub server: Option<String>,
    pub status: ExecutionStatus,
    pub exit_code: Option<i32>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// Time spent getting the runner and payload in place.
    pub setup_ms: Option<i64>,
    /// Time the script itself ran.
    pub run_ms: Option<i64>,
    pub runner_version: Option<String>,
    pub error: Option<String>,
    pub output: Value,
    /// How it ran, e.g. `local`, `container`, `runner-ssh`, `direct-ssh`.
    pub mode: Option<String>,
    /// Free-form remark for users (e.g. "fell back to direct-ssh: ...").
    pub note: Option<String>,
    /// The workflow condition the script set (`setCondition`), if it did.
    pub condition: Option<bool>,
    /// The mode the runtime helpers used: `bundled` or `api` (None: not recorded, older rows).
    pub helpers: Option<String>,
    /// Why API mode fell back to bundled mode, when it did.
    pub helpers_note: Option<String>,
    /// What the run used ([`ExecutionUsage`]); all `None` when it was not measured.
    #[serde(flatten)]
    pub usage: ExecutionUsage,
    pub created_at: i64,
}

/// The resources an execution used, as its runner measured them (`cronium_protocol::Usage`).
/// Each `None` when not measured: older rows and runners, `direct-ssh` and `http` runs, runs that
/// never started; the `cgroup_*` figures exist for container runs only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExecutionUsage {
    /// CPU time of the script's process tree in user mode.
    pub cpu_user_ms: Option<i64>,
    /// CPU time of the script's process tree in kernel mode.
    pub cpu_system_ms: Option<i64>,
    /// Peak resident set of the largest single process of the tree (not the tree's sum).
    pub max_rss_bytes: Option<i64>,
    /// CPU time of the container's whole cgroup.
    pub cgroup_cpu_ms: Option<i64>,
    /// Peak memory of the container's whole cgroup.
    pub cgroup_memory_peak_bytes: Option<i64>,
}

impl ExecutionUsage {
    /// True when nothing was measured.
    pub fn is_empty(&self) -> bool {
        *self == ExecutionUsage::default()
    }
}

/// Fields to change on an execution; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExecutionUpdate {
    pub status: Option<ExecutionStatus>,
    pub exit_code: Option<i32>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub setup_ms: Option<i64>,
    pub run_ms: Option<i64>,
    pub runner_version: Option<String>,
    pub error: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub output: Option<Value>,
    pub mode: Option<String>,
    pub note: Option<String>,
    pub condition: Option<bool>,
    pub helpers: Option<String>,
    pub helpers_note: Option<String>,
    /// Usage figures to record; a `None` figure leaves the stored one.
    pub usage: ExecutionUsage,
}

/// A line to store; `seq` is assigned by the job's current owner, strictly increasing per job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewLogLine {
    pub execution_id: Option<i64>,
    pub seq: i64,
    /// `stdout`, `stderr`, or `system` for Cronium's own messages.
    pub stream: String,
    pub line: String,
    pub ts: i64,
}

/// A runner verified on a server: where, which build, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerState {
    pub path: String,
    pub sha256: String,
    /// Unix milliseconds.
    pub verified_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewDeployment {
    pub version: String,
    pub sha256: String,
    pub outcome: String,
    pub attempts: i64,
    pub duration_ms: i64,
    pub error: Option<String>,
    pub at: i64,
}

/// What is known of a server's health, as its row holds it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthState {
    /// The last check, successful or not (epoch ms).
    pub checked_at: Option<i64>,
    /// The last check the host answered.
    pub contact_at: Option<i64>,
    /// Checks failed in a row since the last contact.
    pub failures: i64,
    /// Why the last check failed, or what it could not read.
    pub error: Option<String>,
    /// The latest reading (`cronium-runner health` JSON) and when it was taken; kept when later
    /// checks fail, so that its age says how stale it is.
    pub reading: Option<Value>,
    pub reading_at: Option<i64>,
}
