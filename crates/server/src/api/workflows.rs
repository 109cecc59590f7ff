//! `/api/v1/workflows` and `/api/v1/workflow-runs`: apply by name, list, show (spec, graph,
//! versions), delete, run with input, runs of a workflow, run detail with nodes and the
//! explanation, retry, cancel, and every node's log as one live stream.
//!
//! The operations are `usecases::workflows` (shared with the web UI); this module only turns
//! requests into calls and rows into the JSON shapes of `dto.rs`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::{Extension, Json};
use cronium_core::clock::now_ms;
use cronium_model::Trigger;
use cronium_store::StoreError;
use futures::Stream;
use serde::Deserialize;
use utoipa::IntoParams;

use super::body;
use super::doc::WorkflowApplyBody;
use super::dto::{
    CreatedDto, GraphNodeDto, RunBody, WorkflowApplyDto, WorkflowDto, WorkflowLogLineDto,
    WorkflowRunDetailDto, WorkflowRunDto, WorkflowShowDto, WorkflowVersionDto,
};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{Body, Path, Query};
use super::params::{RunId, WorkflowName};
use crate::state::AppState;
use crate::usecases::jobs::retry_read;
use crate::usecases::workflows as uc;
use crate::usecases::Actor;

/// List workflows.
#[utoipa::path(get, path = "/api/v1/workflows", tag = "workflows", operation_id = "list_workflows",
    responses((status = 200, description = "Every workflow, by name", body = [WorkflowDto])),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<WorkflowDto>>> {
    Ok(Json(
        uc::list(&state)
            .await?
            .into_iter()
            .map(WorkflowDto::from)
            .collect(),
    ))
}

/// Create or update a workflow by name (what `cronium workflow apply` calls). Refused with
/// nothing stored, the node and field named, for a cycle, an unknown event, node id or
/// sub-workflow, or any field that is not valid.
#[utoipa::path(put, path = "/api/v1/workflows/{name}", tag = "workflows", operation_id = "apply_workflow",
    params(WorkflowName),
    request_body(content = WorkflowApplyBody,
        description = "The workflow file fields as JSON; `name`, when given, must be the one in the path"),
    responses(
        (status = 200, description = "What the apply did, and the workflow as it wrote it", body = WorkflowApplyDto),
        (status = 404, description = "The path names no workflow (an empty name)", body = ErrorBody),
        (status = 413, description = "The body is over 2 MiB", body = ErrorBody),
        (status = 422, description = "The workflow is not valid (the node and field are named)", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn apply(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(WorkflowName { name }): Path<WorkflowName>,
    Body(bytes): Body,
) -> ApiResult<Json<WorkflowApplyDto>> {
    let value: serde_json::Value = body::json(&bytes)?;
    let (row, applied) = uc::apply(&state, &actor, Some(&name), value, now_ms()).await?;
    Ok(Json(WorkflowApplyDto {
        result: applied.into(),
        workflow: row.into(),
    }))
}

/// Show a workflow: its current spec, its graph and its versions.
#[utoipa::path(get, path = "/api/v1/workflows/{name}", tag = "workflows", operation_id = "show_workflow",
    params(WorkflowName),
    responses(
        (status = 200, description = "The workflow", body = WorkflowShowDto),
        (status = 404, description = "No such workflow", body = ErrorBody),
        (status = 422, description = "The name is not valid UTF-8", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn show(
    State(state): State<AppState>,
    Path(WorkflowName { name }): Path<WorkflowName>,
) -> ApiResult<Json<WorkflowShowDto>> {
    let view = uc::show(&state, &name).await?;
    Ok(Json(WorkflowShowDto {
        workflow: view.workflow.into(),
        nodes: view
            .graph
            .map(|g| g.nodes.into_iter().map(GraphNodeDto::from).collect())
            .unwrap_or_default(),
        versions: view
            .versions
            .into_iter()
            .map(|v| WorkflowVersionDto {
                version: v.version,
                status: v.status,
                timeout_ms: v.timeout_ms,
                created_at: cronium_core::clock::rfc3339(v.created_at),
            })
            .collect(),
    }))
}

/// Delete a workflow: its active runs are cancelled; past runs, jobs and logs are kept.
#[utoipa::path(delete, path = "/api/v1/workflows/{name}", tag = "workflows", operation_id = "delete_workflow",
    params(WorkflowName),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such workflow", body = ErrorBody),
        (status = 422, description = "The name is not valid UTF-8", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(WorkflowName { name }): Path<WorkflowName>,
) -> ApiResult<StatusCode> {
    uc::delete(&state, &actor, &name, now_ms()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Start a run of a workflow, optionally with input (an object; default: the workflow's
/// input). Returns the run's id.
#[utoipa::path(post, path = "/api/v1/workflows/{name}/runs", tag = "workflows", operation_id = "run_workflow",
    params(WorkflowName),
    request_body(content = Option<RunBody>, description = "Optional input (no body: the workflow's default input)"),
    responses(
        (status = 201, description = "The new run", body = CreatedDto),
        (status = 404, description = "No such workflow", body = ErrorBody),
        (status = 409, description = "The workflow is broken (its stored spec no longer parses)", body = ErrorBody),
        (status = 413, description = "The body is over 2 MiB", body = ErrorBody),
        (status = 422, description = "The input is not an object, or the workflow is archived", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn run(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(WorkflowName { name }): Path<WorkflowName>,
    Body(bytes): Body,
) -> ApiResult<(StatusCode, Json<CreatedDto>)> {
    let body: RunBody = body::optional_json(&bytes)?;
    let run = uc::run(&state, &actor, &name, body.input, Trigger::Manual, now_ms()).await?;
    Ok((StatusCode::CREATED, Json(CreatedDto { id: run.id })))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    /// At most this many (default 50, max 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Only runs with an id below this (paging, newest first).
    pub before: Option<i64>,
}

/// Runs of a workflow, newest first.
#[utoipa::path(get, path = "/api/v1/workflows/{name}/runs", tag = "workflows", operation_id = "list_workflow_runs",
    params(WorkflowName, RunsQuery),
    responses(
        (status = 200, description = "The runs, newest first", body = [WorkflowRunDto]),
        (status = 404, description = "No such workflow (and no runs of that name)", body = ErrorBody),
        (status = 422, description = "A parameter is not valid (it is named)", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn runs(
    State(state): State<AppState>,
    Path(WorkflowName { name }): Path<WorkflowName>,
    Query(q): Query<RunsQuery>,
) -> ApiResult<Json<Vec<WorkflowRunDto>>> {
    let runs = uc::runs(&state, &name, q.limit.unwrap_or(50), q.before).await?;
    Ok(Json(runs.into_iter().map(WorkflowRunDto::from).collect()))
}

/// A run with every node (status, job, input, output, reason, times) and, for each node, why
/// it ran, was skipped or still waits.
#[utoipa::path(get, path = "/api/v1/workflow-runs/{id}", tag = "workflows", operation_id = "show_workflow_run",
    params(RunId),
    responses(
        (status = 200, description = "The run with its nodes and the explanation", body = WorkflowRunDetailDto),
        (status = 404, description = "No such run", body = ErrorBody),
        (status = 422, description = "The id is not an integer", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn show_run(
    State(state): State<AppState>,
    Path(RunId { id }): Path<RunId>,
) -> ApiResult<Json<WorkflowRunDetailDto>> {
    Ok(Json(uc::run_detail(&state, id).await?.into()))
}

/// Retry an ended run from its failure: a new run (attempt + 1) where the nodes that
/// succeeded keep their outputs and the failed and skipped ones, and what follows them, run
/// again with the workflow's current events.
#[utoipa::path(post, path = "/api/v1/workflow-runs/{id}/retry", tag = "workflows", operation_id = "retry_workflow_run",
    params(RunId),
    responses(
        (status = 201, description = "The new run", body = WorkflowRunDto),
        (status = 404, description = "No such run, or its workflow was deleted", body = ErrorBody),
        (status = 409, description = "The run has not ended, succeeded, or is a sub-workflow run", body = ErrorBody),
        (status = 422, description = "The id is not an integer", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn retry(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(RunId { id }): Path<RunId>,
) -> ApiResult<(StatusCode, Json<WorkflowRunDto>)> {
    let run = uc::retry(&state, &actor, id, now_ms()).await?;
    Ok((StatusCode::CREATED, Json(run.into())))
}

/// Cancel a run: waiting nodes are skipped, queued node jobs cancelled, running ones stopped.
#[utoipa::path(post, path = "/api/v1/workflow-runs/{id}/cancel", tag = "workflows", operation_id = "cancel_workflow_run",
    params(RunId),
    responses(
        (status = 200, description = "The run: `cancelled`, or still `running` with `cancel_requested` until its running jobs have stopped", body = WorkflowRunDto),
        (status = 404, description = "No such run", body = ErrorBody),
        (status = 409, description = "The run has already ended", body = ErrorBody),
        (status = 422, description = "The id is not an integer", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(RunId { id }): Path<RunId>,
) -> ApiResult<Json<WorkflowRunDto>> {
    Ok(Json(uc::cancel(&state, &actor, id, now_ms()).await?.into()))
}

/// Where a workflow log stream stands: the last seq sent per job. Written as the SSE id
/// `JOB:SEQ,JOB:SEQ...`, read back from `Last-Event-ID`.
fn parse_cursor(text: &str) -> Option<BTreeMap<i64, i64>> {
    let mut out = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (job, seq) = part.split_once(':')?;
        out.insert(job.trim().parse().ok()?, seq.trim().parse().ok()?);
    }
    Some(out)
}

fn cursor_text(after: &BTreeMap<i64, i64>) -> String {
    after
        .iter()
        .map(|(j, s)| format!("{j}:{s}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A node's job to follow: its label (`NODE`, or `NODE/SUBNODE` in a sub-run), its job, and
/// whether the node had ended when it was read (then every line of its job is stored).
struct Followed {
    node: String,
    node_run_id: i64,
    job_id: i64,
    ended: bool,
}

/// The node jobs of a run and of its sub-runs (depth first, in file order), and the run's
/// status as read before them.
async fn followed(
    state: &AppState,
    id: i64,
) -> Result<Option<(cronium_model::workflow::WorkflowRunStatus, Vec<Followed>)>, StoreError> {
    let Some(top) = retry_read(|| state.store.get_workflow_run(id)).await? else {
        return Ok(None);
    };
    let status = top.run.status;
    let mut out = Vec::new();
    let mut todo: VecDeque<(String, cronium_store::WorkflowRunDetail)> = VecDeque::new();
    todo.push_back((String::new(), top));
    let mut seen = 0;
    while let Some((prefix, detail)) = todo.pop_front() {
        for n in detail.nodes {
            let label = format!("{prefix}{}", n.node_id);
            if let Some(job_id) = n.job_id {
                out.push(Followed {
                    node: label.clone(),
                    node_run_id: n.id,
                    job_id,
                    ended: n.status.is_final(),
                });
            }
            if let Some(sub) = n.sub_run_id {
                seen += 1;
                if seen > 1000 {
                    continue;
                }
                if let Some(d) = retry_read(|| state.store.get_workflow_run(sub)).await? {
                    todo.push_back((format!("{label}/"), d));
                }
            }
        }
    }
    Ok(Some((status, out)))
}

/// Every node's log of a run as one Server-Sent Events stream: `line` events (data: a
/// `WorkflowLogLineDto`, tagged by node), then one `end` event with the run's final status.
/// The nodes a retry kept from an earlier run are not repeated (their log is that run's).
/// Each event's id is the stream's position (`JOB:SEQ,...`); resume with `Last-Event-ID`:
/// nothing is missed, nothing is sent twice. A store read error (after a few tries) ends the
/// stream with one `error` event, `{"message", "after"}`, never with `end`.
#[utoipa::path(get, path = "/api/v1/workflow-runs/{id}/logs", tag = "logs", operation_id = "workflow_run_log_stream",
    params(RunId,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this position (the id of the last event received: `JOB:SEQ,JOB:SEQ...`)")),
    responses(
        (status = 200, description = "Server-Sent Events: `line` (id: the stream position; data: a `WorkflowLogLineDto`), then one `end` \
(data: `{\"status\": WorkflowRunStatus}`) or one `error` (data: `{\"message\": string, \"after\": position}`); \
comments keep the connection alive every 15 s", content_type = "text/event-stream", body = String),
        (status = 404, description = "No such run", body = ErrorBody),
        (status = 422, description = "The id is not an integer, or Last-Event-ID is not a position", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn logs(
    State(state): State<AppState>,
    Path(RunId { id }): Path<RunId>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    uc::run_detail(&state, id).await?;
    let after = match headers.get("last-event-id") {
        None => BTreeMap::new(),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(parse_cursor)
            .ok_or_else(|| ApiError::bad("Last-Event-ID", "expected JOB:SEQ,JOB:SEQ..."))?,
    };

    struct Cursor {
        state: AppState,
        id: i64,
        after: BTreeMap<i64, i64>,
        /// Jobs whose node had ended and whose every line was sent, and the jobs of nodes a
        /// retry kept from an earlier run (their log is that run's).
        done: std::collections::HashSet<i64>,
        /// Jobs known to be this run's own (their `node_run_id` is the node's).
        own: std::collections::HashSet<i64>,
        servers: HashMap<i64, HashMap<i64, String>>,
        pending: VecDeque<Event>,
        ended: bool,
    }
    impl Cursor {
        fn fail(&mut self, what: &str, error: Option<StoreError>) {
            let message = match &error {
                Some(e) => {
                    tracing::error!(run = self.id, error = %e, "workflow live log: {what} failed");
                    format!("{what} failed: the database could not be read (see the server's log)")
                }
                None => what.to_string(),
            };
            let data = serde_json::json!({"message": message, "after": cursor_text(&self.after)});
            self.pending
                .push_back(Event::default().event("error").data(data.to_string()));
            self.ended = true;
        }

        /// One pass over every node job: queues the new lines; true when there were any.
        async fn pass(&mut self) -> Result<bool, ()> {
            // The run's status before the lines: once final, every node job has ended.
            let (status, jobs) = match followed(&self.state, self.id).await {
                Ok(Some(x)) => x,
                Ok(None) => {
                    self.fail(&format!("workflow run {} no longer exists", self.id), None);
                    return Err(());
                }
                Err(e) => {
                    self.fail("reading the run", Some(e));
                    return Err(());
                }
            };
            let mut any = false;
            for f in jobs {
                if self.done.contains(&f.job_id) {
                    continue;
                }
                if !self.own.contains(&f.job_id) {
                    let store = self.state.store.clone();
                    match retry_read(|| store.get_job(f.job_id)).await {
                        Ok(Some(job)) if job.node_run_id == Some(f.node_run_id) => {
                            self.own.insert(f.job_id);
                        }
                        // Kept by a retry (another run's job), or deleted by retention.
                        Ok(_) => {
                            self.done.insert(f.job_id);
                            continue;
                        }
                        Err(e) => {
                            self.fail("reading a node's job", Some(e));
                            return Err(());
                        }
                    }
                }
                let from = self.after.get(&f.job_id).copied().unwrap_or(0);
                let store = self.state.store.clone();
                let lines = match retry_read(|| store.read_logs(f.job_id, from, 1000)).await {
                    Ok(l) => l,
                    Err(e) => {
                        self.fail("reading the log", Some(e));
                        return Err(());
                    }
                };
                if f.ended && lines.len() < 1000 {
                    self.done.insert(f.job_id);
                }
                if lines.is_empty() {
                    continue;
                }
                any = true;
                let known = self.servers.entry(f.job_id).or_default();
                if lines
                    .iter()
                    .any(|l| l.execution_id.is_some_and(|x| !known.contains_key(&x)))
                {
                    match retry_read(|| store.list_executions(f.job_id)).await {
                        Ok(xs) => {
                            *known = xs
                                .into_iter()
                                .filter_map(|x| x.server.map(|s| (x.id, s)))
                                .collect();
                        }
                        Err(e) => {
                            self.fail("reading the job's executions", Some(e));
                            return Err(());
                        }
                    }
                }
                let known = self.servers.get(&f.job_id).cloned().unwrap_or_default();
                for l in lines {
                    self.after.insert(f.job_id, l.seq);
                    let server = l.execution_id.and_then(|x| known.get(&x).cloned());
                    let dto = WorkflowLogLineDto::new(f.node.clone(), f.job_id, l, server);
                    let data = serde_json::to_string(&dto).unwrap_or_default();
                    self.pending.push_back(
                        Event::default()
                            .event("line")
                            .id(cursor_text(&self.after))
                            .data(data),
                    );
                }
            }
            if !any && status.is_final() {
                let end = serde_json::json!({"status": status});
                self.pending
                    .push_back(Event::default().event("end").data(end.to_string()));
                self.ended = true;
            }
            Ok(any)
        }
    }

    let cursor = Cursor {
        state,
        id,
        after,
        done: Default::default(),
        own: Default::default(),
        servers: HashMap::new(),
        pending: VecDeque::new(),
        ended: false,
    };
    let stream = futures::stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(e) = c.pending.pop_front() {
                return Some((Ok(e), c));
            }
            if c.ended {
                return None;
            }
            match c.pass().await {
                Ok(true) => continue,
                Ok(false) if c.ended || !c.pending.is_empty() => continue,
                Ok(false) => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(()) => continue,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
