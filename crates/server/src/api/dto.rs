//! JSON shapes of the API. Only this module knows them (with `servers.rs` for its resource and
//! `error.rs` for errors); handlers convert store rows here. Statuses and triggers are the typed
//! enums of `cronium-model` (declared as enums in the OpenAPI document), spelled as the store
//! keeps them.
//!
//! The schemas are exact, since the API fuzzer and `tests/openapi.rs` hold every response to
//! them: a field that is always present but may be null is `required` and nullable; one that
//! may be absent is not required; a value that can be any JSON is typed `Value` (an empty
//! schema), not `Object`; timestamps are RFC 3339 `date-time`.

use cronium_core::clock::rfc3339;
use cronium_model::workflow::{EdgeKind, Join, NodeKind, NodeRunStatus, WorkflowRunStatus};
use cronium_model::Role;
use cronium_model::{EventStatus, ExecutionStatus, JobStatus, Trigger};
use cronium_store::{
    Applied, AuditRow, EventRow, ExecutionRow, ExecutionUsage, JobRow, LogLine, NodeExplanation,
    NodeRunRow, TokenRow, UserRow, WorkflowNodeRow, WorkflowRow, WorkflowRunDetail, WorkflowRunRow,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::ToSchema;

fn ts(ms: Option<i64>) -> Option<String> {
    ms.map(rfc3339)
}

#[derive(Serialize, ToSchema)]
pub struct EventDto {
    pub id: i64,
    pub name: String,
    pub version: i64,
    /// The one place an event's status is reported (it is not repeated inside `spec`).
    pub status: EventStatus,
    /// The event file fields (an object), normalised, without `status`. Typed as any JSON:
    /// a stored spec that is not JSON reads as null, and one edited behind Cronium's back is
    /// returned as it is (`broken` then says why it does not fire).
    #[schema(value_type = Value, required)]
    pub spec: Value,
    #[schema(required, format = DateTime)]
    pub next_fire_at: Option<String>,
    #[schema(required, format = DateTime)]
    pub last_fired_at: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// Why the stored spec no longer parses (the event does not fire until a valid version is
    /// applied); null for a usable event.
    #[schema(required)]
    pub broken: Option<String>,
}

impl From<EventRow> for EventDto {
    fn from(e: EventRow) -> Self {
        EventDto {
            id: e.id,
            name: e.name,
            version: e.version,
            status: e.status,
            spec: e.spec,
            next_fire_at: ts(e.next_fire_at),
            last_fired_at: ts(e.last_fired_at),
            created_at: rfc3339(e.created_at),
            updated_at: rfc3339(e.updated_at),
            broken: e.broken,
        }
    }
}

/// What an apply did.
#[derive(Serialize, ToSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ApplyResult {
    Created,
    Updated,
    Unchanged,
}

impl From<Applied> for ApplyResult {
    fn from(a: Applied) -> Self {
        match a {
            Applied::Created => ApplyResult::Created,
            Applied::Updated => ApplyResult::Updated,
            Applied::Unchanged => ApplyResult::Unchanged,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ApplyDto {
    pub result: ApplyResult,
    /// The event as this apply wrote it (its version is the one this apply created).
    pub event: EventDto,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"input": {"dry_run": true}}))]
pub struct RunBody {
    /// The run's input (any JSON); the event's default input when absent or null.
    #[schema(value_type = Value)]
    #[serde(default)]
    pub input: Option<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedDto {
    pub id: i64,
}

#[derive(Serialize, ToSchema)]
pub struct ExecutionDto {
    pub id: i64,
    pub attempt: i32,
    /// Server name; null for local and container runs.
    #[schema(required)]
    pub server: Option<String>,
    pub status: ExecutionStatus,
    #[schema(required)]
    pub exit_code: Option<i32>,
    #[schema(required)]
    pub runner_version: Option<String>,
    /// How it ran: `runner-ssh`, `direct-ssh`, `container`, `http`...; null for a local run.
    #[schema(required)]
    pub mode: Option<String>,
    #[schema(required, format = DateTime)]
    pub started_at: Option<String>,
    #[schema(required, format = DateTime)]
    pub finished_at: Option<String>,
    #[schema(required)]
    pub setup_ms: Option<i64>,
    #[schema(required)]
    pub run_ms: Option<i64>,
    #[schema(required)]
    pub error: Option<String>,
    /// The outputs the script set: any JSON.
    #[schema(value_type = Value, required)]
    pub output: Value,
    #[schema(required)]
    pub note: Option<String>,
    /// The workflow condition the script set, if any.
    #[schema(required)]
    pub condition: Option<bool>,
    /// The runtime helpers' mode: `bundled` or `api`; null for `http` runs and older rows.
    #[schema(required)]
    pub helpers: Option<String>,
    /// Why API mode fell back to bundled mode, when it did.
    #[schema(required)]
    pub helpers_note: Option<String>,
    /// What the run used, as its runner measured it; null when it was not measured (`http`
    /// and `direct-ssh` runs, runs that never started, rows from before it was recorded).
    #[schema(required)]
    pub usage: Option<UsageDto>,
}

/// Resources one execution used.
#[derive(Serialize, ToSchema)]
pub struct UsageDto {
    /// CPU time of the script's process tree in user mode (every process of it, orphans
    /// included), milliseconds.
    #[schema(required)]
    pub cpu_user_ms: Option<i64>,
    /// CPU time of the script's process tree in kernel mode, milliseconds.
    #[schema(required)]
    pub cpu_system_ms: Option<i64>,
    /// Peak resident memory of the largest single process of the tree (not the tree's sum),
    /// bytes.
    #[schema(required)]
    pub max_rss_bytes: Option<i64>,
    /// Container runs: CPU time of the container's whole cgroup, milliseconds; null elsewhere
    /// or when the kernel does not offer it.
    #[schema(required)]
    pub cgroup_cpu_ms: Option<i64>,
    /// Container runs: peak memory of the container's whole cgroup (every process, the page
    /// cache charged to it), bytes; null elsewhere or when the kernel does not offer it.
    #[schema(required)]
    pub cgroup_memory_peak_bytes: Option<i64>,
}

impl From<ExecutionUsage> for UsageDto {
    fn from(u: ExecutionUsage) -> Self {
        UsageDto {
            cpu_user_ms: u.cpu_user_ms,
            cpu_system_ms: u.cpu_system_ms,
            max_rss_bytes: u.max_rss_bytes,
            cgroup_cpu_ms: u.cgroup_cpu_ms,
            cgroup_memory_peak_bytes: u.cgroup_memory_peak_bytes,
        }
    }
}

impl From<ExecutionRow> for ExecutionDto {
    fn from(x: ExecutionRow) -> Self {
        ExecutionDto {
            id: x.id,
            attempt: x.attempt,
            server: x.server,
            status: x.status,
            exit_code: x.exit_code,
            runner_version: x.runner_version,
            mode: x.mode,
            started_at: ts(x.started_at),
            finished_at: ts(x.finished_at),
            setup_ms: x.setup_ms,
            run_ms: x.run_ms,
            error: x.error,
            output: x.output,
            note: x.note,
            condition: x.condition,
            helpers: x.helpers,
            helpers_note: x.helpers_note,
            usage: (!x.usage.is_empty()).then(|| x.usage.into()),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct JobDto {
    pub id: i64,
    /// Event name.
    pub event: String,
    /// Null once the event has been deleted.
    #[schema(required)]
    pub event_id: Option<i64>,
    pub event_version: i64,
    pub status: JobStatus,
    pub trigger: Trigger,
    pub attempt: i32,
    pub max_attempts: i32,
    #[schema(required)]
    pub exit_code: Option<i32>,
    /// The script's outputs (per server for multi-server runs): any JSON.
    #[schema(value_type = Value, required)]
    pub output: Value,
    #[schema(required)]
    pub error: Option<String>,
    /// The run's input: any JSON.
    #[schema(value_type = Value, required)]
    pub input: Value,
    pub cancel_requested: bool,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub run_at: String,
    /// The schedule's instant this job was fired for; null for other triggers.
    #[schema(required, format = DateTime)]
    pub scheduled_for: Option<String>,
    #[schema(required, format = DateTime)]
    pub started_at: Option<String>,
    #[schema(required, format = DateTime)]
    pub finished_at: Option<String>,
    #[schema(required)]
    pub duration_ms: Option<i64>,
    /// Only in the answer for one job (`GET /api/v1/jobs/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executions: Option<Vec<ExecutionDto>>,
    /// The variables the job's scripts wrote, in order (never their values). Only in the
    /// answer for one job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variable_writes: Option<Vec<VariableWriteDto>>,
    /// What its target needs of the agent that claims it (`local`, `container`, `ssh`); null
    /// for a job enqueued before routing existed.
    #[schema(required)]
    pub capability: Option<cronium_model::Capability>,
    /// Only an agent with all these tags claims it (empty: any agent).
    pub agent_tags: Vec<String>,
    /// The worker holding (or that last held) its lease: an agent's `worker` in
    /// `GET /api/v1/agents`.
    #[schema(required)]
    pub worker: Option<String>,
    /// Only in the answer for one queued job that no connected agent can take: why it waits
    /// ("an agent with tags gpu, eu (none connected)").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
}

/// A variable a job's script wrote (`cronium.setVariable`): its name, never its value.
#[derive(Serialize, ToSchema)]
pub struct VariableWriteDto {
    pub name: String,
    /// The execution (server, attempt) that wrote it; null when not known.
    #[schema(required)]
    pub execution_id: Option<i64>,
    /// The variable is secret (its value is write-only).
    pub secret: bool,
    #[schema(format = DateTime)]
    pub written_at: String,
}

impl From<cronium_store::VariableWrite> for VariableWriteDto {
    fn from(w: cronium_store::VariableWrite) -> Self {
        VariableWriteDto {
            name: w.name,
            execution_id: w.execution_id,
            secret: w.secret,
            written_at: rfc3339(w.written_at),
        }
    }
}

impl JobDto {
    pub fn new(j: JobRow, executions: Option<Vec<ExecutionRow>>) -> Self {
        JobDto {
            duration_ms: j.started_at.zip(j.finished_at).map(|(s, f)| f - s),
            id: j.id,
            event: j.event_name,
            event_id: j.event_id,
            event_version: j.event_version,
            status: j.status,
            trigger: j.trigger,
            attempt: j.attempt,
            max_attempts: j.max_attempts,
            exit_code: j.exit_code,
            output: j.output,
            error: j.error,
            input: j.input,
            cancel_requested: j.cancel_requested,
            created_at: rfc3339(j.created_at),
            run_at: rfc3339(j.run_at),
            scheduled_for: ts(j.scheduled_for),
            started_at: ts(j.started_at),
            finished_at: ts(j.finished_at),
            executions: executions.map(|xs| xs.into_iter().map(ExecutionDto::from).collect()),
            variable_writes: None,
            capability: j.capability,
            agent_tags: j.agent_tags,
            worker: j.lease_owner,
            waiting_for: None,
        }
    }

    /// With why it waits (the answer for one job).
    pub fn with_waiting_for(mut self, waiting_for: Option<String>) -> Self {
        self.waiting_for = waiting_for;
        self
    }

    /// With the variables the job wrote (the answer for one job).
    pub fn with_writes(mut self, writes: Vec<cronium_store::VariableWrite>) -> Self {
        self.variable_writes = Some(writes.into_iter().map(VariableWriteDto::from).collect());
        self
    }
}

#[derive(Serialize, ToSchema, Clone)]
pub struct LogLineDto {
    pub seq: i64,
    #[schema(format = DateTime)]
    pub ts: String,
    /// `stdout` and `stderr` of the script, `system`: Cronium's own messages.
    #[schema(schema_with = log_stream)]
    pub stream: String,
    pub line: String,
    #[schema(required)]
    pub execution_id: Option<i64>,
    /// Server the line came from (multi-server runs).
    #[schema(required)]
    pub server: Option<String>,
}

fn log_stream() -> ObjectBuilder {
    one_of(&["stdout", "stderr", "system"])
}

/// A string that is one of `values` (for fields the store keeps as text).
pub fn one_of(values: &[&str]) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.iter().copied()))
}

impl LogLineDto {
    pub fn new(l: LogLine, server: Option<String>) -> Self {
        LogLineDto {
            seq: l.seq,
            ts: rfc3339(l.ts),
            stream: l.stream,
            line: l.line,
            execution_id: l.execution_id,
            server,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct LogPageDto {
    pub lines: Vec<LogLineDto>,
    /// Pass as `after` to get the next page.
    pub next_after: i64,
    /// The job has ended and every line has been returned.
    pub done: bool,
    pub status: JobStatus,
}

#[derive(Serialize, ToSchema)]
pub struct VariableDto {
    pub name: String,
    /// The value: any JSON; always null for secret variables.
    #[schema(value_type = Value, required)]
    pub value: Value,
    pub secret: bool,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"value": {"url": "https://example.org"}, "secret": false}))]
pub struct VariableBody {
    /// Any JSON (null included); at most 1 MiB as JSON text.
    #[schema(value_type = Value, required)]
    pub value: Value,
    #[serde(default)]
    pub secret: bool,
}

#[derive(Serialize, ToSchema)]
pub struct TokenDto {
    pub id: i64,
    pub name: String,
    /// The owner's name.
    pub user: String,
    /// The narrower role the token acts with; null: its owner's role.
    #[schema(required)]
    pub role: Option<Role>,
    #[schema(required, format = DateTime)]
    pub expires_at: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Within a minute of the last use.
    #[schema(required, format = DateTime)]
    pub last_used_at: Option<String>,
    #[schema(required, format = DateTime)]
    pub revoked_at: Option<String>,
    /// Only in the response that creates the token; never shown again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl From<TokenRow> for TokenDto {
    fn from(t: TokenRow) -> Self {
        TokenDto {
            id: t.id,
            name: t.name,
            user: t.username,
            role: t.role,
            expires_at: ts(t.expires_at),
            created_at: rfc3339(t.created_at),
            last_used_at: ts(t.last_used_at),
            revoked_at: ts(t.revoked_at),
            token: None,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "ci", "role": "viewer", "expires_in": "30d"}))]
pub struct TokenBody {
    /// 1 to 100 characters, not all blank (kept without surrounding blanks).
    #[schema(min_length = 1, max_length = 100, pattern = r"\S")]
    pub name: String,
    /// Narrow the token to this role (at most its owner's, and the caller's).
    pub role: Option<Role>,
    /// The token stops working this long after its creation (`30d`, `12h`, `3600`); none by
    /// default.
    #[schema(example = "30d")]
    pub expires_in: Option<String>,
    /// The owner (an admin may create a token for another user); default: the caller.
    pub user: Option<String>,
}

/// A user (never its password).
#[derive(Serialize, ToSchema)]
pub struct UserDto {
    pub name: String,
    pub role: Role,
    pub disabled: bool,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(required, format = DateTime)]
    pub disabled_at: Option<String>,
    #[schema(required, format = DateTime)]
    pub last_login_at: Option<String>,
}

impl From<UserRow> for UserDto {
    fn from(u: UserRow) -> Self {
        UserDto {
            name: u.username,
            role: u.role,
            disabled: u.disabled_at.is_some(),
            created_at: rfc3339(u.created_at),
            disabled_at: ts(u.disabled_at),
            last_login_at: ts(u.last_login_at),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "alice", "role": "operator", "password": "correct horse battery"}))]
pub struct UserBody {
    /// 1 to 64 of a-z, 0-9, `.`, `_`, `-`, starting with a letter or a digit.
    #[schema(pattern = r"^[a-z0-9][a-z0-9._-]{0,63}$")]
    pub name: String,
    pub role: Role,
    /// At least 8 characters.
    #[schema(min_length = 8, max_length = 1024)]
    pub password: String,
}

/// What to change on a user: give one or both.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"role": "viewer"}))]
pub struct UserPatch {
    pub role: Option<Role>,
    /// true disables the user (no login; its tokens and sessions stop at once); false enables.
    pub disabled: Option<bool>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"password": "correct horse battery"}))]
pub struct PasswordBody {
    /// At least 8 characters.
    #[schema(min_length = 8, max_length = 1024)]
    pub password: String,
}

/// One entry of the audit log.
#[derive(Serialize, ToSchema)]
pub struct AuditDto {
    pub id: i64,
    #[schema(format = DateTime)]
    pub at: String,
    /// The user's name at the time; `-` for a failed login, `system` for the server itself.
    pub actor: String,
    /// The API token used (null: a page session, or none).
    #[schema(required)]
    pub token_id: Option<i64>,
    /// The page session used (null: an API token, or none).
    #[schema(required)]
    pub session_id: Option<String>,
    /// The client's address.
    #[schema(required)]
    pub source: Option<String>,
    /// `event.apply`, `job.run`, `login.failed`...
    pub action: String,
    /// What the action was about: `event nightly`, `job 42`, `user alice`.
    pub target: String,
    /// The object before the change (never a secret); null when there was none.
    #[schema(value_type = Value, required)]
    pub before: Option<Value>,
    /// The object after the change (never a secret); null when there is none.
    #[schema(value_type = Value, required)]
    pub after: Option<Value>,
    /// `ok`, or `error: ...` with what the actor was told.
    pub outcome: String,
}

impl From<AuditRow> for AuditDto {
    fn from(a: AuditRow) -> Self {
        let e = a.entry;
        AuditDto {
            id: a.id,
            at: rfc3339(e.at),
            actor: e.actor,
            token_id: e.token_id,
            session_id: e.session_id,
            source: e.source,
            action: e.action,
            target: e.target,
            before: e.before,
            after: e.after,
            outcome: e.outcome,
        }
    }
}

/// `/healthz`.
#[derive(Serialize, ToSchema)]
pub struct HealthDto {
    /// `ok`, or `store unreachable` (with a 503).
    #[schema(schema_with = health_status)]
    pub status: String,
}

fn health_status() -> ObjectBuilder {
    one_of(&["ok", "store unreachable"])
}

/// Counters of the transports.
#[derive(Serialize, ToSchema)]
pub struct TransportMetricsDto {
    /// The SSH transport's counters by name (`executions_total`, `pool_hits`...); null when
    /// this server has no SSH transport.
    #[schema(required)]
    pub ssh: Option<std::collections::BTreeMap<String, u64>>,
    pub docker: DockerStateDto,
}

#[derive(Serialize, ToSchema)]
pub struct DockerStateDto {
    /// Whether this server reaches a Docker engine (container targets).
    pub available: bool,
}

/// A workflow: its current version's spec and status, and its schedule state.
#[derive(Serialize, ToSchema)]
pub struct WorkflowDto {
    pub id: i64,
    pub name: String,
    pub version: i64,
    /// The one place a workflow's status is reported (not repeated inside `spec`).
    pub status: EventStatus,
    /// The workflow file fields, normalised (`after` always a map), without `status`. Any
    /// JSON: a stored spec that no longer parses is returned as it is (`broken` says why).
    #[schema(value_type = Value, required)]
    pub spec: Value,
    #[schema(required, format = DateTime)]
    pub next_fire_at: Option<String>,
    #[schema(required, format = DateTime)]
    pub last_fired_at: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// Why the stored spec no longer parses (it does not fire); null for a usable workflow.
    #[schema(required)]
    pub broken: Option<String>,
}

impl From<WorkflowRow> for WorkflowDto {
    fn from(w: WorkflowRow) -> Self {
        WorkflowDto {
            id: w.id,
            name: w.name,
            version: w.version,
            status: w.status,
            spec: w.spec,
            next_fire_at: ts(w.next_fire_at),
            last_fired_at: ts(w.last_fired_at),
            created_at: rfc3339(w.created_at),
            updated_at: rfc3339(w.updated_at),
            broken: w.broken,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct WorkflowApplyDto {
    pub result: ApplyResult,
    /// The workflow as this apply wrote it.
    pub workflow: WorkflowDto,
}

/// One incoming edge of a node.
#[derive(Serialize, ToSchema)]
pub struct EdgeDto {
    /// The upstream node's id.
    pub from: String,
    pub on: EdgeKind,
}

/// One node of a version's graph.
#[derive(Serialize, ToSchema)]
pub struct GraphNodeDto {
    pub id: String,
    pub kind: NodeKind,
    /// The event an `event` node runs, or the `WORKFLOW/NODE` event of an `inline` node.
    #[schema(required)]
    pub event: Option<String>,
    /// The workflow a `workflow` node runs.
    #[schema(required)]
    pub workflow: Option<String>,
    pub join: Join,
    /// Incoming edges, in the order of the node's `after`.
    pub after: Vec<EdgeDto>,
}

impl From<WorkflowNodeRow> for GraphNodeDto {
    fn from(n: WorkflowNodeRow) -> Self {
        GraphNodeDto {
            id: n.node_id,
            kind: n.kind,
            event: n.event_name,
            workflow: n.sub_workflow,
            join: n.join,
            after: n
                .after
                .into_iter()
                .map(|(from, on)| EdgeDto { from, on })
                .collect(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct WorkflowVersionDto {
    pub version: i64,
    pub status: EventStatus,
    /// The whole run's timeout in milliseconds; null for none.
    #[schema(required)]
    pub timeout_ms: Option<i64>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// `GET /api/v1/workflows/{name}`: the workflow, its current graph, every version.
#[derive(Serialize, ToSchema)]
pub struct WorkflowShowDto {
    pub workflow: WorkflowDto,
    /// The current version's nodes in file order.
    pub nodes: Vec<GraphNodeDto>,
    /// Newest first.
    pub versions: Vec<WorkflowVersionDto>,
}

#[derive(Serialize, ToSchema)]
pub struct WorkflowRunDto {
    pub id: i64,
    /// Workflow name (kept after the workflow is deleted).
    pub workflow: String,
    /// Null once the workflow has been deleted.
    #[schema(required)]
    pub workflow_id: Option<i64>,
    pub workflow_version: i64,
    pub trigger: Trigger,
    pub status: WorkflowRunStatus,
    /// The run's input: any JSON (an object).
    #[schema(value_type = Value, required)]
    pub input: Value,
    /// Once ended: the merged outputs of its end nodes that succeeded; null before.
    #[schema(value_type = Value, required)]
    pub output: Value,
    #[schema(required)]
    pub error: Option<String>,
    /// The run this one retries.
    #[schema(required)]
    pub retry_of: Option<i64>,
    /// 1 for a first run, + 1 per retry.
    pub attempt: i32,
    /// The top run of this run's tree (itself for a top run).
    pub root_run_id: i64,
    /// 1 for a top run, + 1 per level of sub-workflow.
    pub depth: i32,
    /// Asked to stop (cancelled or timed out); it ends when its running node jobs have.
    pub cancel_requested: bool,
    #[schema(required, format = DateTime)]
    pub scheduled_for: Option<String>,
    #[schema(required, format = DateTime)]
    pub deadline_at: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(required, format = DateTime)]
    pub started_at: Option<String>,
    #[schema(required, format = DateTime)]
    pub finished_at: Option<String>,
}

impl From<WorkflowRunRow> for WorkflowRunDto {
    fn from(r: WorkflowRunRow) -> Self {
        WorkflowRunDto {
            cancel_requested: r.cancel_requested(),
            id: r.id,
            workflow: r.workflow_name,
            workflow_id: r.workflow_id,
            workflow_version: r.workflow_version,
            trigger: r.trigger,
            status: r.status,
            input: r.input,
            output: r.output,
            error: r.error,
            retry_of: r.retry_of,
            attempt: r.attempt,
            root_run_id: r.root_run_id,
            depth: r.depth,
            scheduled_for: ts(r.scheduled_for),
            deadline_at: ts(r.deadline_at),
            created_at: rfc3339(r.created_at),
            started_at: ts(r.started_at),
            finished_at: ts(r.finished_at),
        }
    }
}

/// One node of one run.
#[derive(Serialize, ToSchema)]
pub struct NodeRunDto {
    /// The node's id in the workflow file.
    pub node: String,
    pub kind: NodeKind,
    pub status: NodeRunStatus,
    /// Its job (`cronium job show`, `job logs`); null until it was queued, and for a
    /// `workflow` node.
    #[schema(required)]
    pub job_id: Option<i64>,
    /// For a `workflow` node: its sub-run.
    #[schema(required)]
    pub sub_run_id: Option<i64>,
    /// The input its job got: any JSON; null until decided.
    #[schema(value_type = Value, required)]
    pub input: Value,
    /// Its job's output: any JSON; null until it ended.
    #[schema(value_type = Value, required)]
    pub output: Value,
    /// The condition its script set, if it did.
    #[schema(required)]
    pub condition: Option<bool>,
    /// Why it ran or was skipped, in words; null while waiting.
    #[schema(required)]
    pub reason: Option<String>,
    /// Why it failed, was cancelled or could not start.
    #[schema(required)]
    pub error: Option<String>,
    #[schema(required, format = DateTime)]
    pub started_at: Option<String>,
    #[schema(required, format = DateTime)]
    pub finished_at: Option<String>,
}

impl From<NodeRunRow> for NodeRunDto {
    fn from(n: NodeRunRow) -> Self {
        NodeRunDto {
            node: n.node_id,
            kind: n.kind,
            status: n.status,
            job_id: n.job_id,
            sub_run_id: n.sub_run_id,
            input: n.input,
            output: n.output,
            condition: n.condition,
            reason: n.reason,
            error: n.error,
            started_at: ts(n.started_at),
            finished_at: ts(n.finished_at),
        }
    }
}

/// Why one node stands where it does.
#[derive(Serialize, ToSchema)]
pub struct NodeExplanationDto {
    pub node: String,
    pub status: NodeRunStatus,
    /// In words: "skipped: deploy succeeded, edge needs failure", "waiting for deploy (running)".
    pub why: String,
}

impl From<NodeExplanation> for NodeExplanationDto {
    fn from(e: NodeExplanation) -> Self {
        NodeExplanationDto {
            node: e.node_id,
            status: e.status,
            why: e.why,
        }
    }
}

/// `GET /api/v1/workflow-runs/{id}`.
#[derive(Serialize, ToSchema)]
pub struct WorkflowRunDetailDto {
    pub run: WorkflowRunDto,
    /// Every node in file order.
    pub nodes: Vec<NodeRunDto>,
    /// For each node, in file order, why it ran, was skipped or still waits.
    pub explain: Vec<NodeExplanationDto>,
}

impl From<WorkflowRunDetail> for WorkflowRunDetailDto {
    fn from(d: WorkflowRunDetail) -> Self {
        let explain = d.explain().into_iter().map(Into::into).collect();
        WorkflowRunDetailDto {
            run: d.run.into(),
            nodes: d.nodes.into_iter().map(Into::into).collect(),
            explain,
        }
    }
}

/// A line of a workflow run's live log: a node's job's log line, tagged by node.
#[derive(Serialize, ToSchema, Clone)]
pub struct WorkflowLogLineDto {
    /// The node's id (`SUBNODE` of a sub-workflow as `NODE/SUBNODE`).
    pub node: String,
    pub job_id: i64,
    pub seq: i64,
    #[schema(format = DateTime)]
    pub ts: String,
    #[schema(schema_with = log_stream)]
    pub stream: String,
    pub line: String,
    #[schema(required)]
    pub execution_id: Option<i64>,
    #[schema(required)]
    pub server: Option<String>,
}

impl WorkflowLogLineDto {
    pub fn new(node: String, job_id: i64, l: LogLine, server: Option<String>) -> Self {
        WorkflowLogLineDto {
            node,
            job_id,
            seq: l.seq,
            ts: rfc3339(l.ts),
            stream: l.stream,
            line: l.line,
            execution_id: l.execution_id,
            server,
        }
    }
}

/// What a batch apply holds.
#[derive(Deserialize, ToSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BatchKind {
    Events,
    Workflows,
}

/// `POST /api/v1/apply`: many events or many workflows in one transaction.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"kind": "events", "items": [{"name": "hello", "type": "bash", "script": "echo hi"}], "prune": false, "dry_run": true}))]
pub struct ApplyBatchBody {
    pub kind: BatchKind,
    /// The event or workflow files' fields as JSON, one object each (names unique).
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<Value>,
    /// Delete the events (or workflows) that `items` does not name.
    #[serde(default)]
    pub prune: bool,
    /// Only report what would change; nothing is kept.
    #[serde(default)]
    pub dry_run: bool,
}

/// What a batch apply did (or would do) to one name.
#[derive(Serialize, ToSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ChangeResult {
    Created,
    Updated,
    Unchanged,
    Deleted,
}

impl From<cronium_store::BatchResult> for ChangeResult {
    fn from(r: cronium_store::BatchResult) -> Self {
        use cronium_store::BatchResult as B;
        match r {
            B::Created => ChangeResult::Created,
            B::Updated => ChangeResult::Updated,
            B::Unchanged => ChangeResult::Unchanged,
            B::Deleted => ChangeResult::Deleted,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ChangeDto {
    pub name: String,
    pub result: ChangeResult,
}

#[derive(Serialize, ToSchema)]
pub struct ApplyBatchDto {
    /// True when nothing was kept.
    pub dry_run: bool,
    /// The items in the order given, then the deletions by name.
    pub changes: Vec<ChangeDto>,
}

/// A webhook: its URL, whether the current version enables it, and its secret the one time it
/// is shown (the first time it is asked for, and after a rotation).
#[derive(Serialize, ToSchema)]
pub struct HookDto {
    /// `event` or `workflow`.
    pub kind: String,
    pub name: String,
    /// Where to POST (`PUBLIC_URL/hooks/NAME`).
    pub url: String,
    /// `webhook: true` in the current version.
    pub enabled: bool,
    /// The secret, only when shown now (once); null otherwise.
    #[schema(required)]
    pub secret: Option<String>,
    /// When the secret was made; null before the webhook was first enabled.
    #[schema(required, format = DateTime)]
    pub created_at: Option<String>,
    /// When the secret was last replaced (its creation if never).
    #[schema(required, format = DateTime)]
    pub rotated_at: Option<String>,
}

impl From<crate::usecases::hooks::HookInfo> for HookDto {
    fn from(h: crate::usecases::hooks::HookInfo) -> Self {
        HookDto {
            kind: h.kind.as_str().into(),
            name: h.name,
            url: h.url,
            enabled: h.enabled,
            secret: h.secret,
            created_at: ts(h.created_at),
            rotated_at: ts(h.rotated_at),
        }
    }
}

/// What a webhook started: the job of an event, or the run of a workflow.
#[derive(Serialize, ToSchema)]
pub struct HookStartedDto {
    /// The new job (an event's hook); absent for a workflow's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<i64>,
    /// The new workflow run (a workflow's hook); absent for an event's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow_run_id: Option<i64>,
}

/// The type of a notification channel.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKindDto {
    Email,
    Slack,
    Discord,
    Webhook,
}

impl ChannelKindDto {
    fn as_str(self) -> &'static str {
        match self {
            ChannelKindDto::Email => "email",
            ChannelKindDto::Slack => "slack",
            ChannelKindDto::Discord => "discord",
            ChannelKindDto::Webhook => "webhook",
        }
    }
}

/// How an e-mail channel secures its SMTP connection.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTlsDto {
    /// STARTTLS, required (default; port 587).
    Starttls,
    /// TLS from the start (port 465).
    Tls,
    /// No encryption (port 25): a relay on this host or a trusted network only.
    None,
}

/// A channel to add. `type` says which fields apply: `url` for slack, discord and webhook
/// (plus `secret`, the HMAC key, for webhook: made when absent and answered once); `smtp_*`,
/// `from` and `to` for email. A field another type uses is refused, naming it. `url`,
/// `secret` and `smtp_password` are encrypted at rest and never shown back.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelBody {
    #[schema(schema_with = cronium_core::spec_schema::name)]
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ChannelKindDto,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub smtp_host: Option<String>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 65535)]
    pub smtp_port: Option<u16>,
    #[serde(default)]
    pub smtp_user: Option<String>,
    #[serde(default)]
    pub smtp_password: Option<String>,
    #[serde(default)]
    pub smtp_tls: Option<SmtpTlsDto>,
    /// A PEM file on the server with the CA certificate(s) to trust for the SMTP server
    /// (default: the public web PKI roots).
    #[serde(default)]
    pub smtp_ca_file: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Vec<String>,
}

impl From<ChannelBody> for crate::usecases::channels::ChannelInput {
    fn from(b: ChannelBody) -> Self {
        crate::usecases::channels::ChannelInput {
            name: b.name,
            kind: b.kind.as_str().into(),
            url: b.url,
            secret: b.secret,
            smtp_host: b.smtp_host,
            smtp_port: b.smtp_port,
            smtp_user: b.smtp_user,
            smtp_password: b.smtp_password,
            smtp_tls: b.smtp_tls.map(|t| {
                match t {
                    SmtpTlsDto::Starttls => "starttls",
                    SmtpTlsDto::Tls => "tls",
                    SmtpTlsDto::None => "none",
                }
                .into()
            }),
            smtp_ca_file: b.smtp_ca_file,
            from: b.from,
            to: b.to,
        }
    }
}

/// A notification channel and how its deliveries go. Secret settings are never shown: only
/// which ones are set.
#[derive(Serialize, ToSchema)]
pub struct ChannelDto {
    pub id: i64,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// The settings that are not secret (for email: smtp_host, smtp_port, smtp_tls, smtp_user,
    /// smtp_ca_file, from, to; empty for the others).
    #[schema(value_type = Object)]
    pub config: Value,
    /// The secret settings it holds (names only).
    pub secret_fields: Vec<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// The last delivery (or test) that went through.
    #[schema(required, format = DateTime)]
    pub last_success_at: Option<String>,
    /// The last delivery (or test) error.
    #[schema(required)]
    pub last_error: Option<String>,
    #[schema(required, format = DateTime)]
    pub last_error_at: Option<String>,
    /// Notifications waiting for delivery (retried with backoff).
    pub pending: i64,
    /// Notifications given up after their last attempt.
    pub given_up: i64,
}

impl From<cronium_store::ChannelRow> for ChannelDto {
    fn from(c: cronium_store::ChannelRow) -> Self {
        let secret_fields = crate::usecases::channels::secret_fields(&c)
            .into_iter()
            .map(String::from)
            .collect();
        ChannelDto {
            id: c.id,
            name: c.name,
            kind: c.kind,
            config: c.config,
            secret_fields,
            created_at: rfc3339(c.created_at),
            last_success_at: ts(c.last_success_at),
            last_error: c.last_error,
            last_error_at: ts(c.last_error_at),
            pending: c.pending,
            given_up: c.given_up,
        }
    }
}

/// A channel as added; `secret` is the HMAC key made for a webhook channel given none (shown
/// this once), else absent.
#[derive(Serialize, ToSchema)]
pub struct ChannelCreatedDto {
    #[serde(flatten)]
    pub channel: ChannelDto,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// A channel test's outcome (a test message sent at once, outside the outbox).
#[derive(Serialize, ToSchema)]
pub struct ChannelTestDto {
    pub delivered: bool,
    /// Why it was not delivered; null when it was.
    #[schema(required)]
    pub error: Option<String>,
}
