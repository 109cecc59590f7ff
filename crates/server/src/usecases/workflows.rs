//! The workflow operations the API and the web UI share: apply (one, or a directory's worth in
//! one transaction), read, list, delete, run, list runs, read a run with its explanation,
//! retry from the failure, cancel.
//!
//! Validation happens here once, in this order, and nothing is written before it passed: the
//! workflow file rules (`cronium_core::workflow::from_value`: node and field named, cycles
//! spelled out), what the installation must provide (servers named by a node's target exist,
//! container limits are within the maximums), then the references (`check_references`: events
//! and sub-workflows exist, no recursion); the store checks the graph once more in its
//! transaction.

use std::collections::{HashMap, HashSet};

use cronium_core::spec::Overlap;
use cronium_core::workflow::{self, check_references, WorkflowSpec};
use cronium_model::{EventStatus, Trigger};
use cronium_store::{
    Applied, CancelRunResult, RunFilter, RunRequest, Store, WorkflowGraph, WorkflowRow,
    WorkflowRunDetail, WorkflowRunRow, WorkflowVersionRow,
};
use serde_json::Value;

use super::{UseCaseError, UseCaseResult};
use crate::scheduler;
use crate::state::AppState;

/// A workflow with its current version's graph and every version.
#[derive(Debug, Clone)]
pub struct WorkflowView {
    pub workflow: WorkflowRow,
    /// None only when the rows of the current version are missing (never for a stored one).
    pub graph: Option<WorkflowGraph>,
    /// Newest first.
    pub versions: Vec<WorkflowVersionRow>,
}

/// Parses and validates a workflow (the API's JSON or a file's YAML as JSON), with what the
/// store and this installation know, without writing anything.
pub async fn validate(state: &AppState, value: Value) -> UseCaseResult<WorkflowSpec> {
    let spec = workflow::from_value(value)?;
    validate_targets(state, &spec).await?;
    validate_references(&state.store, &spec, &HashMap::new()).await?;
    Ok(spec)
}

/// Servers named by nodes' targets exist; container limits are within the maximums.
pub(crate) async fn validate_targets(state: &AppState, spec: &WorkflowSpec) -> UseCaseResult<()> {
    for (i, node) in spec.nodes.iter().enumerate() {
        if let Some(t) = &node.target {
            super::check_target(state, &format!("nodes[{i}].target"), t).await?;
        }
    }
    Ok(())
}

/// Events and sub-workflows named by the nodes exist, and sub-workflows neither recurse nor
/// nest too deep: the store's answers are read first (the check itself is synchronous).
pub(crate) async fn validate_references(
    store: &Store,
    spec: &WorkflowSpec,
    batch: &HashMap<String, Vec<String>>,
) -> UseCaseResult<()> {
    let mut events = HashSet::new();
    for name in spec.nodes.iter().filter_map(|n| n.event.as_deref()) {
        if !events.contains(name) && store.get_event_by_name(name).await?.is_some() {
            events.insert(name.to_string());
        }
    }
    // Every workflow reachable from this one's `workflow:` nodes, with its references.
    let mut subs: HashMap<String, Option<Vec<String>>> = HashMap::new();
    let mut todo = spec.sub_workflows();
    while let Some(name) = todo.pop() {
        if name == spec.name || subs.contains_key(&name) || subs.len() > 1000 {
            continue;
        }
        // A workflow applied in the same batch counts with its new references.
        let refs = match batch.get(&name) {
            Some(r) => Some(r.clone()),
            None => store.workflow_references(&name).await?,
        };
        todo.extend(refs.iter().flatten().cloned());
        subs.insert(name, refs);
    }
    check_references(
        spec,
        |name| events.contains(name),
        |name| subs.get(name).cloned().flatten(),
    )?;
    Ok(())
}

/// Creates or updates the workflow by name; `path_name`, when given (the API's path), must be
/// the file's `name` (or fills it in when the file has none).
pub async fn apply(
    state: &AppState,
    path_name: Option<&str>,
    mut value: Value,
    now: i64,
) -> UseCaseResult<(WorkflowRow, Applied)> {
    if let Some(name) = path_name {
        match value.get("name") {
            None => {
                if let Some(obj) = value.as_object_mut() {
                    obj.insert("name".into(), Value::String(name.to_string()));
                }
            }
            Some(n) if n.as_str() == Some(name) => {}
            Some(_) => {
                return Err(UseCaseError::invalid(
                    "name",
                    format!("does not match the URL (`{name}`)"),
                ))
            }
        }
    }
    let spec = validate(state, value).await?;
    let (mut row, applied) = state.store.apply_workflow(&spec.definition(), now).await?;
    if applied != Applied::Unchanged {
        row.next_fire_at = reschedule(state, &row, &spec, now).await?;
    }
    Ok((row, applied))
}

/// Stores when a workflow fires next (None: no schedule, not active) and wakes the scheduler.
pub async fn reschedule(
    state: &AppState,
    row: &WorkflowRow,
    spec: &WorkflowSpec,
    now: i64,
) -> UseCaseResult<Option<i64>> {
    let next = scheduler::next_workflow_instant(row, spec.parsed_schedule().as_ref(), now);
    state.store.set_workflow_next_fire(row.id, next).await?;
    state.scheduler_wake.notify_one();
    Ok(next)
}

pub async fn list(state: &AppState) -> UseCaseResult<Vec<WorkflowRow>> {
    Ok(state.store.list_workflows().await?)
}

pub async fn find(state: &AppState, name: &str) -> UseCaseResult<WorkflowRow> {
    state
        .store
        .get_workflow_by_name(name)
        .await?
        .ok_or_else(|| UseCaseError::NotFound(format!("workflow `{name}` not found")))
}

pub async fn show(state: &AppState, name: &str) -> UseCaseResult<WorkflowView> {
    let workflow = find(state, name).await?;
    let graph = state
        .store
        .workflow_graph(workflow.id, workflow.version)
        .await?;
    let versions = state.store.list_workflow_versions(workflow.id).await?;
    Ok(WorkflowView {
        workflow,
        graph,
        versions,
    })
}

/// Deletes a workflow (its active runs are cancelled first; its runs stay as history).
pub async fn delete(state: &AppState, name: &str, now: i64) -> UseCaseResult<()> {
    let workflow = find(state, name).await?;
    if !state.store.delete_workflow(workflow.id, now).await? {
        return Err(UseCaseError::NotFound(format!(
            "workflow `{name}` not found"
        )));
    }
    state.scheduler_wake.notify_one();
    Ok(())
}

/// Starts a run of the current version. `input` None: the workflow's default input; it must
/// be an object. With `overlap: queue` the run waits behind an active one; with `skip` or
/// `allow`, a run asked for by hand starts at once (overlap is the scheduler's rule).
pub async fn run(
    state: &AppState,
    name: &str,
    input: Option<Value>,
    trigger: Trigger,
    now: i64,
) -> UseCaseResult<WorkflowRunRow> {
    let workflow = find(state, name).await?;
    if workflow.status == EventStatus::Archived {
        return Err(UseCaseError::invalid(
            "status",
            format!("workflow `{name}` is archived"),
        ));
    }
    if let Some(i) = &input {
        if !i.is_object() {
            return Err(UseCaseError::invalid("input", "expected a JSON object"));
        }
    }
    let spec = workflow::from_value(workflow.spec.clone()).map_err(|e| UseCaseError::Conflict {
        field: Some("spec".into()),
        message: format!(
            "workflow `{name}` is broken ({}); apply a valid version",
            workflow.broken.clone().unwrap_or_else(|| e.to_string())
        ),
    })?;
    let req = RunRequest {
        trigger,
        input,
        queue: spec.overlap == Overlap::Queue,
    };
    let run = state
        .store
        .start_workflow_run(workflow.id, &req, now)
        .await?;
    state.bus.job_changed(None);
    state.agent_wake.notify_one();
    Ok(run)
}

/// Runs of a workflow, newest first. The workflow may be gone: its runs are found by name.
pub async fn runs(
    state: &AppState,
    name: &str,
    limit: i64,
    before: Option<i64>,
) -> UseCaseResult<Vec<WorkflowRunRow>> {
    if !(1..=1000).contains(&limit) {
        return Err(UseCaseError::invalid("limit", "must be between 1 and 1000"));
    }
    let runs = state
        .store
        .list_workflow_runs(&RunFilter {
            workflow_name: Some(name.to_string()),
            limit: Some(limit),
            before_id: before,
            ..Default::default()
        })
        .await?;
    // No runs: a 404 unless the workflow exists (a deleted one's runs are still found above).
    if runs.is_empty() {
        find(state, name).await?;
    }
    Ok(runs)
}

/// A run with its nodes and graph (`explain()` gives why each node stands where it does).
pub async fn run_detail(state: &AppState, id: i64) -> UseCaseResult<WorkflowRunDetail> {
    state
        .store
        .get_workflow_run(id)
        .await?
        .ok_or_else(|| UseCaseError::NotFound(format!("workflow run {id} not found")))
}

/// Retries an ended run from its failure: a new run where the nodes that succeeded keep their
/// outputs and everything else runs again.
pub async fn retry(state: &AppState, id: i64, now: i64) -> UseCaseResult<WorkflowRunRow> {
    let run = state
        .store
        .retry_workflow_run(id, Trigger::Manual, now)
        .await
        .map_err(|e| match e {
            // The run exists but cannot be retried now: a conflict with its state.
            cronium_store::StoreError::Invalid(m) => UseCaseError::Conflict {
                field: Some("run".into()),
                message: m.strip_prefix("run: ").unwrap_or(&m).to_string(),
            },
            other => other.into(),
        })?;
    state.bus.job_changed(None);
    state.agent_wake.notify_one();
    Ok(run)
}

/// Cancels a run: queued node jobs at once, running ones asked to stop. Answers the run as it
/// stands after (`cancelled`, or still `running` until its running jobs have stopped).
pub async fn cancel(state: &AppState, id: i64, now: i64) -> UseCaseResult<WorkflowRunRow> {
    match state.store.cancel_workflow_run(id, now).await? {
        CancelRunResult::NotFound => {
            return Err(UseCaseError::NotFound(format!(
                "workflow run {id} not found"
            )))
        }
        CancelRunResult::AlreadyFinished(status) => {
            return Err(UseCaseError::Conflict {
                field: None,
                message: format!("workflow run {id} has already ended ({status})"),
            })
        }
        CancelRunResult::Cancelled | CancelRunResult::Requested => {
            // Queued node jobs were cancelled in the store: the job views resync.
            state.bus.job_changed(None);
        }
    }
    Ok(run_detail(state, id).await?.run)
}
