//! JSON shapes of the API. Only this module knows them; handlers convert store rows here.
//! Statuses and triggers are the typed enums of `cronium-model` (declared as enums in the
//! OpenAPI document), spelled as the store keeps them.

use cronium_core::clock::rfc3339;
use cronium_model::{EventStatus, ExecutionStatus, JobStatus, Trigger};
use cronium_store::{Applied, EventRow, ExecutionRow, JobRow, LogLine, TokenRow};
use serde::{Deserialize, Serialize};
use serde_json::Value;
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
    /// The event file fields, normalised, without `status`.
    #[schema(value_type = Object)]
    pub spec: Value,
    pub next_fire_at: Option<String>,
    pub last_fired_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Why the stored spec no longer parses (the event does not fire until a valid version is
    /// applied); null for a usable event.
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
pub struct RunBody {
    /// The run's input; the event's default input when absent.
    #[schema(value_type = Object)]
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
    pub server: Option<String>,
    pub status: ExecutionStatus,
    pub exit_code: Option<i32>,
    pub runner_version: Option<String>,
    pub mode: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub setup_ms: Option<i64>,
    pub run_ms: Option<i64>,
    pub error: Option<String>,
    #[schema(value_type = Object)]
    pub output: Value,
    pub note: Option<String>,
    /// The workflow condition the script set, if any.
    pub condition: Option<bool>,
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
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct JobDto {
    pub id: i64,
    /// Event name.
    pub event: String,
    pub event_id: Option<i64>,
    pub event_version: i64,
    pub status: JobStatus,
    pub trigger: Trigger,
    pub attempt: i32,
    pub max_attempts: i32,
    pub exit_code: Option<i32>,
    /// The script's outputs (per server for multi-server runs).
    #[schema(value_type = Object)]
    pub output: Value,
    pub error: Option<String>,
    #[schema(value_type = Object)]
    pub input: Value,
    pub cancel_requested: bool,
    pub created_at: String,
    pub run_at: String,
    pub scheduled_for: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executions: Option<Vec<ExecutionDto>>,
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
        }
    }
}

#[derive(Serialize, ToSchema, Clone)]
pub struct LogLineDto {
    pub seq: i64,
    pub ts: String,
    /// stdout | stderr | system
    pub stream: String,
    pub line: String,
    pub execution_id: Option<i64>,
    /// Server the line came from (multi-server runs).
    pub server: Option<String>,
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
    /// The value; always null for secret variables.
    #[schema(value_type = Object)]
    pub value: Value,
    pub secret: bool,
    pub updated_at: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VariableBody {
    #[schema(value_type = Object)]
    pub value: Value,
    #[serde(default)]
    pub secret: bool,
}

#[derive(Serialize, ToSchema)]
pub struct TokenDto {
    pub id: i64,
    pub name: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
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
pub struct TokenBody {
    pub name: String,
}
