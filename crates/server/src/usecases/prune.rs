//! Pruning now what is past its retention (`POST /api/v1/prune`, `cronium prune`): the
//! retention sweep, recorded in the audit log (`prune`, with what went) unless it is a dry
//! run.

use cronium_core::clock::now_ms;
use serde_json::json;

use super::{audit, Actor, UseCaseError, UseCaseResult};
use crate::background::retention::{RetentionError, SweepReport};
use crate::state::AppState;

pub async fn prune(state: &AppState, actor: &Actor, dry_run: bool) -> UseCaseResult<SweepReport> {
    let result = state
        .retention
        .sweep(now_ms(), dry_run)
        .await
        .map_err(|e| match e {
            RetentionError::Store(e) => UseCaseError::from(e),
        });
    if dry_run {
        return result;
    }
    audit::record(state, actor, "prune", "retention", None, result, |r| {
        let t = r.total();
        Some(json!({
            "jobs": t.jobs,
            "executions": t.executions,
            "log_lines": t.log_lines,
            "workflow_runs": r.workflow_runs,
            "audit_entries": r.audit_entries,
            "payloads": r.payloads,
            "work_dirs": r.work_dirs.len(),
        }))
    })
    .await
}
