//! The store: the single source of truth of a Cronium installation (queue, schedule state, logs,
//! results, variables, users and API tokens, workflows and their runs, webhook secrets,
//! notification channels and their outbox), on SQLite (embedded
//! default) or PostgreSQL (several servers and agents).
//!
//! One set of behaviours on both backends: every query is one SQL text run through sqlx's `Any`
//! driver (`$1` placeholders work on both); the few places where the dialects differ (row locks
//! on PostgreSQL, `BEGIN IMMEDIATE` on SQLite) branch on [`Backend`] next to the SQL. The
//! conformance suite in `tests/` runs every operation against both.
//!
//! The store never reads the clock: every timestamp (`now`, epoch milliseconds) is passed in by
//! the caller, so tests and schedulers drive time. It knows nothing about event specs (opaque
//! JSON), cron, transports or HTTP; it enforces the queue's invariants (claim once, fence every
//! state change by attempt and worker, one job per schedule tick, never more jobs than an
//! event's `max_executions`, a workflow's next step in the commit that ended the step before)
//! and nothing else. Workflow graphs are rows it evaluates with the pure rules of
//! `cronium_model::workflow`; it never parses a workflow or event spec. Statuses and triggers are the enums of
//! `cronium-model`; a word the model does not know, read back from the database, is
//! [`StoreError::Corrupt`].

/// The statuses of an execution that has not ended (`ExecutionStatus::is_final` is false), as
/// an SQL list: the one definition every query that asks "is it still live" uses.
macro_rules! live_execution_statuses {
    () => {
        "('pending', 'deploying', 'running')"
    };
}

mod agents;
mod artifacts;
mod audit;
mod auth;
mod batch;
mod bus;
mod error;
mod events;
mod executions;
mod hooks;
mod jobs;
mod logs;
mod notify;
mod progression;
mod retention;
mod row;
mod runner_versions;
mod runtime;
mod schedule;
mod seed;
mod server_health;
mod servers;
mod sessions;
mod store;
mod variables;
mod workflow_runs;
mod workflows;

pub use agents::{AgentRegistration, AgentRow, AgentTokenRow};
pub use artifacts::{ArtifactRow, NewArtifact, ServerPlatform};
pub use audit::{AuditFilter, AuditRow, NewAudit};
pub use auth::{NewToken, TokenAuth, TokenRow, UserRow, UserUpdate, LAST_USED_RESOLUTION_MS};
pub use batch::{BatchChange, BatchResult, EventApply};
pub use bus::{BusListener, MAX_PAYLOAD};
pub use cronium_model::backoff::backoff_delay;
/// The rows the agent's queue interface carries live in `cronium-model` (a remote agent speaks
/// them without the store); re-exported here so that store callers name them as before.
pub use cronium_model::queue::{
    ExecutionRow, ExecutionUpdate, ExecutionUsage, HandedOff, HealthState, Heartbeat, JobOutcome,
    JobRow, NewDeployment, NewLogLine, RunnerState,
};
pub use cronium_model::routing::{Capability, Claimant, Routing};
pub use error::StoreError;
pub use events::{Applied, EventRow};
pub use hooks::{HookKind, HookRow};
pub use jobs::{AttemptEnd, CancelResult, JobFilter, NewJob, RecoveredJob};
pub use logs::LogLine;
pub use notify::{ChannelRow, NewChannel, NewNotification, NotifySource, OutboxRow};
pub use retention::{
    PruneCounts, PruneLimits, PruneRule, PruneScope, PruneStep, PRUNE_STEP_JOBS,
    PRUNE_STEP_LOG_LINES,
};
pub use runner_versions::{
    wanted_pin, NewRollout, NewRolloutServer, PinRow, PinScope, RolloutBusy, RolloutRow,
    RolloutServerRow,
};
pub use runtime::RuntimeExecution;
pub use schedule::{FireResult, Lease};
pub use seed::{SeedHistory, SeedWorkflowRuns};
pub use server_health::{HealthCheckRow, NewHealthCheck};
pub use servers::{DeploymentRow, NewServer, ServerRow};
pub use sessions::{NewSession, SessionRow, SESSION_TOUCH_MS};
pub use store::{Backend, Store};
pub use variables::{VariableRow, VariableValue, VariableWrite};
pub use workflow_runs::{
    CancelRunResult, NodeExplanation, NodeRunRow, RunFilter, RunRequest, WorkflowFireResult,
    WorkflowRunDetail, WorkflowRunRow,
};
pub use workflows::{WorkflowGraph, WorkflowNodeRow, WorkflowRow, WorkflowVersionRow};

#[cfg(test)]
mod tests {
    use cronium_model::ExecutionStatus;

    /// The SQL list of live statuses is exactly the statuses that are not final: a status added
    /// to the model without it here would make the runtime fence refuse a live run.
    #[test]
    fn the_live_execution_list_is_every_status_that_is_not_final() {
        let listed: Vec<&str> = live_execution_statuses!()
            .trim_matches(['(', ')'])
            .split(", ")
            .map(|s| s.trim_matches('\''))
            .collect();
        let live: Vec<&str> = ExecutionStatus::ALL
            .iter()
            .filter(|s| !s.is_final())
            .map(|s| s.as_str())
            .collect();
        assert_eq!(listed, live);
    }
}
