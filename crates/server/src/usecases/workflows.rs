//! The workflow operations the API and the web UI share: apply (one, or a directory's worth in
//! one transaction), read, list, delete, run, list runs, read a run with its explanation,
//! retry from the failure, cancel; and a run watched as it changes (the live run page).
//!
//! Validation happens here once, in this order, and nothing is written before it passed: the
//! workflow file rules (`cronium_core::workflow::from_value`: node and field named, cycles
//! spelled out), what the installation must provide (servers named by a node's target exist,
//! container limits are within the maximums), then the references (`check_references`: events
//! and sub-workflows exist, no recursion); the store checks the graph once more in its
//! transaction.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use cronium_core::logbus::LogMark;
use cronium_core::spec::Overlap;
use cronium_core::workflow::{self, check_references, WorkflowSpec};
use cronium_model::workflow::WorkflowRunStatus;
use cronium_model::{EventStatus, Trigger};
use cronium_store::{
    Applied, CancelRunResult, HookKind, JobRow, RunFilter, RunRequest, Store, WorkflowGraph,
    WorkflowRow, WorkflowRunDetail, WorkflowRunRow, WorkflowVersionRow,
};
use futures::Stream;
use serde_json::Value;

use super::jobs::retry_read;
use super::{audit, Actor, UseCaseError, UseCaseResult};
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
    super::channels::check_notify(state, &spec.notify).await?;
    super::hooks::check_unique(state, HookKind::Workflow, &spec.name, spec.webhook).await?;
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
/// A workflow as the audit log shows it: version, status and the workflow file fields.
pub fn audit_json(w: &WorkflowRow) -> Value {
    serde_json::json!({"version": w.version, "status": w.status, "spec": w.spec})
}

/// Recorded as `workflow.apply` unless nothing changed.
pub async fn apply(
    state: &AppState,
    actor: &Actor,
    path_name: Option<&str>,
    value: Value,
    now: i64,
) -> UseCaseResult<(WorkflowRow, Applied)> {
    let name = path_name
        .map(str::to_string)
        .or_else(|| {
            value
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_default();
    let before = match cronium_core::spec::validate_name(&name) {
        Ok(()) => state.store.get_workflow_by_name(&name).await?,
        Err(_) => None,
    };
    let result = apply_unrecorded(state, path_name, value, now).await;
    if matches!(result, Ok((_, Applied::Unchanged))) {
        return result;
    }
    audit::record(
        state,
        actor,
        "workflow.apply",
        format!("workflow {}", name.chars().take(100).collect::<String>()),
        before.as_ref().map(audit_json),
        result,
        |(w, _)| Some(audit_json(w)),
    )
    .await
}

async fn apply_unrecorded(
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
    super::hooks::applied(state, HookKind::Workflow, &spec.name, spec.webhook).await?;
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
pub async fn delete(state: &AppState, actor: &Actor, name: &str, now: i64) -> UseCaseResult<()> {
    let workflow = find(state, name).await?;
    let result = match state.store.delete_workflow(workflow.id, now).await? {
        true => Ok(()),
        false => Err(UseCaseError::NotFound(format!(
            "workflow `{name}` not found"
        ))),
    };
    if result.is_ok() {
        super::hooks::deleted(state, HookKind::Workflow, name).await?;
    }
    state.scheduler_wake.notify_one();
    audit::record(
        state,
        actor,
        "workflow.delete",
        format!("workflow {name}"),
        Some(audit_json(&workflow)),
        result,
        |_| None,
    )
    .await
}

/// Starts a run of the current version. `input` None: the workflow's default input; it must
/// be an object. With `overlap: queue` the run waits behind an active one; with `skip` or
/// `allow`, a run asked for by hand starts at once (overlap is the scheduler's rule).
pub async fn run(
    state: &AppState,
    actor: &Actor,
    name: &str,
    input: Option<Value>,
    trigger: Trigger,
    now: i64,
) -> UseCaseResult<WorkflowRunRow> {
    let result = run_unrecorded(state, name, input, trigger, now).await;
    audit::record(
        state,
        actor,
        "workflow.run",
        format!("workflow {name}"),
        None,
        result,
        |r| Some(serde_json::json!({"run": r.id, "trigger": trigger})),
    )
    .await
}

async fn run_unrecorded(
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
pub async fn retry(
    state: &AppState,
    actor: &Actor,
    id: i64,
    now: i64,
) -> UseCaseResult<WorkflowRunRow> {
    let result = retry_unrecorded(state, id, now).await;
    audit::record(
        state,
        actor,
        "workflow_run.retry",
        format!("workflow run {id}"),
        None,
        result,
        |r| Some(serde_json::json!({"run": r.id})),
    )
    .await
}

async fn retry_unrecorded(state: &AppState, id: i64, now: i64) -> UseCaseResult<WorkflowRunRow> {
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
pub async fn cancel(
    state: &AppState,
    actor: &Actor,
    id: i64,
    now: i64,
) -> UseCaseResult<WorkflowRunRow> {
    let result = cancel_unrecorded(state, id, now).await;
    audit::record(
        state,
        actor,
        "workflow_run.cancel",
        format!("workflow run {id}"),
        None,
        result,
        |r| Some(serde_json::json!({"run": r.id, "status": r.status})),
    )
    .await
}

async fn cancel_unrecorded(state: &AppState, id: i64, now: i64) -> UseCaseResult<WorkflowRunRow> {
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

/// The latest runs of a workflow by id, newest first (its page; the index on
/// `(workflow_id, id)` keeps it fast however many runs other workflows have).
pub async fn recent_runs(
    state: &AppState,
    workflow_id: i64,
    limit: i64,
) -> UseCaseResult<Vec<WorkflowRunRow>> {
    Ok(state
        .store
        .list_workflow_runs(&RunFilter {
            workflow_id: Some(workflow_id),
            limit: Some(limit),
            ..Default::default()
        })
        .await?)
}

/// The latest runs in one status, of every workflow, newest first (the dashboard).
pub async fn runs_in_status(
    state: &AppState,
    status: WorkflowRunStatus,
    limit: i64,
) -> UseCaseResult<Vec<WorkflowRunRow>> {
    Ok(state
        .store
        .list_workflow_runs(&RunFilter {
            status: Some(status),
            limit: Some(limit),
            ..Default::default()
        })
        .await?)
}

/// The run and node a node's job belongs to (None for a job of no workflow).
pub async fn run_of_job(state: &AppState, job: &JobRow) -> UseCaseResult<Option<(i64, String)>> {
    match job.node_run_id {
        Some(n) => Ok(state.store.workflow_run_of_node_run(n).await?),
        None => Ok(None),
    }
}

/// What a live run page needs to redraw: the run's status and each node's status and job.
fn fingerprint(d: &WorkflowRunDetail) -> Vec<(String, Option<i64>, Option<i64>)> {
    let mut f = vec![(
        format!("{}:{}", d.run.status, d.run.cancel_requested()),
        None,
        None,
    )];
    f.extend(
        d.nodes
            .iter()
            .map(|n| (n.status.to_string(), n.job_id, n.sub_run_id)),
    );
    f
}

/// How often a live run is read when nothing woke it (a node's job claimed, a sub-run
/// progressing, a job run by another server's agent): one small read of the run's rows.
const WATCH_POLL: Duration = Duration::from_millis(250);

/// A run as it changes: its detail now, then again each time its status or a node's status
/// or job changed, ending after the detail in which the run is final. Woken at once when one
/// of its node jobs ends in this process (the log bus's `done`), else every
/// [`WATCH_POLL`]; never faster. A store error (after a few tries) is the last item.
pub async fn watch_run(
    state: &AppState,
    id: i64,
) -> UseCaseResult<impl Stream<Item = UseCaseResult<WorkflowRunDetail>>> {
    let first = run_detail(state, id).await?;
    struct Watch {
        state: AppState,
        id: i64,
        /// The last detail read (the first one not yet sent when `sent` is false).
        current: WorkflowRunDetail,
        sent: bool,
        ended: bool,
        /// The log bus of each node job still going: its `done` wakes the watch.
        rxs: HashMap<i64, tokio::sync::watch::Receiver<LogMark>>,
    }
    impl Watch {
        /// Follows the jobs of the nodes still going; lets go of the others (their jobs have
        /// ended, as the store says: the bus entry is marked so and dropped).
        fn follow(&mut self) {
            let going: HashSet<i64> = self
                .current
                .nodes
                .iter()
                .filter(|n| !n.status.is_final() && !self.ended)
                .filter_map(|n| n.job_id)
                .collect();
            let over: Vec<i64> = self
                .rxs
                .keys()
                .filter(|j| !going.contains(j))
                .copied()
                .collect();
            for j in over {
                self.rxs.remove(&j);
                self.state.bus.finish(j);
            }
            for j in going {
                if !self.rxs.contains_key(&j) {
                    if let Some(rx) = self.state.bus.subscribe(j) {
                        self.rxs.insert(j, rx);
                    }
                }
            }
        }

        /// Until one followed job ends in this process, or [`WATCH_POLL`] passed.
        async fn wait(&mut self) {
            if self.rxs.is_empty() {
                tokio::time::sleep(WATCH_POLL).await;
                return;
            }
            let waits = self
                .rxs
                .values_mut()
                .map(|rx| Box::pin(async move { rx.wait_for(|m| m.done).await.is_ok() }));
            let _ = tokio::time::timeout(WATCH_POLL, futures::future::select_all(waits)).await;
        }
    }
    let w = Watch {
        state: state.clone(),
        id,
        current: first,
        sent: false,
        ended: false,
        rxs: HashMap::new(),
    };
    Ok(futures::stream::unfold(w, |mut w| async move {
        if w.ended {
            return None;
        }
        if !w.sent {
            w.sent = true;
            w.ended = w.current.run.status.is_final();
            return Some((Ok(w.current.clone()), w));
        }
        loop {
            w.follow();
            w.wait().await;
            let d = match retry_read(|| w.state.store.get_workflow_run(w.id)).await {
                Ok(Some(d)) => d,
                Ok(None) => {
                    w.ended = true;
                    w.rxs.clear();
                    let gone = UseCaseError::NotFound(format!("workflow run {} not found", w.id));
                    return Some((Err(gone), w));
                }
                Err(e) => {
                    w.ended = true;
                    w.rxs.clear();
                    return Some((Err(e.into()), w));
                }
            };
            let changed = fingerprint(&d) != fingerprint(&w.current);
            w.current = d;
            if changed {
                w.ended = w.current.run.status.is_final();
                if w.ended {
                    w.follow();
                }
                return Some((Ok(w.current.clone()), w));
            }
        }
    }))
}
