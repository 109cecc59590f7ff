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
use cronium_model::{EventStatus, ExecutionStatus, JobStatus, Trigger};
use cronium_store::{
    Applied, EventRow, ExecutionRow, JobRow, LogLine, NodeExplanation, NodeRunRow, TokenRow,
    WorkflowNodeRow, WorkflowRow, WorkflowRunDetail, WorkflowRunRow,
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
        }
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
    #[schema(format = DateTime)]
    pub created_at: String,
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
            created_at: rfc3339(t.created_at),
            last_used_at: ts(t.last_used_at),
            revoked_at: ts(t.revoked_at),
            token: None,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "ci"}))]
pub struct TokenBody {
    /// 1 to 100 characters, not all blank (kept without surrounding blanks).
    #[schema(min_length = 1, max_length = 100, pattern = r"\S")]
    pub name: String,
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
