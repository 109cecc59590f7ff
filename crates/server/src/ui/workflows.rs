//! The workflow pages: the list (search by name; nodes, schedule, last run, next run), a
//! workflow's detail (definition, the graph as an SVG drawn by the server, recent runs, run
//! with input, versions) and a run's page (the graph with each node coloured by its status,
//! each node a link to its job; the nodes with the explanation of each; retry and cancel;
//! input and output; every node's log in one live view tagged by node).
//!
//! The run page is live while the run is not final: `/workflow-runs/{id}/stream` sends the
//! run's state (Server-Sent Events) each time the run's or a node's status changes, and
//! `app.js` changes the SVG nodes' classes and the table's cells in place; the stream ends
//! with the run. Without JavaScript the page shows the state it was loaded with.
//! The combined log is the API's stream of every node's log (`api::workflows::logs`),
//! behind the page's session. Layout of the graph: [`super::graph`].

use std::convert::Infallible;
use std::time::Duration;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use cronium_core::clock::now_ms;
use cronium_model::workflow::{EdgeKind, NodeKind, NodeRunStatus, WorkflowRunStatus};
use cronium_model::Trigger;
use cronium_store::{WorkflowGraph, WorkflowRow, WorkflowRunDetail, WorkflowRunRow};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{UiError, UiResult};
use super::graph::{self, GraphNode, NODE_H, NODE_W};
use super::session::Session;
use super::{format, render, Ctx};
use crate::authz::{get, post, Role, Routes};
use crate::state::AppState;
use crate::usecases::workflows as uc;
use crate::usecases::{Actor, UseCaseError};

/// Runs listed on a workflow's page.
const RECENT: i64 = 20;
/// The combined log opens at about this many last lines of each node (the node's job page
/// has the whole log), so a big log never reaches the page whole.
pub const NODE_TAIL: i64 = 200;

pub fn routes() -> Routes<AppState> {
    use Role::{Operator, Viewer};
    Routes::new()
        .route("/workflows", get(Viewer, list))
        .route("/workflows/{name}", get(Viewer, show))
        .route("/workflows/{name}/run", post(Operator, run))
        .route("/workflow-runs/{id}", get(Viewer, show_run))
        .route("/workflow-runs/{id}/retry", post(Operator, retry))
        .route("/workflow-runs/{id}/cancel", post(Operator, cancel))
        .route("/workflow-runs/{id}/stream", get(Viewer, stream))
        .route("/workflow-runs/{id}/log/stream", get(Viewer, log_stream))
}

/// A run as a row of a table.
pub struct RunItem {
    pub id: i64,
    pub workflow: String,
    pub status: WorkflowRunStatus,
    pub trigger: Trigger,
    pub attempt: i32,
    /// A sub-workflow's run (depth > 1).
    pub sub: bool,
    pub started: String,
    pub started_iso: String,
    pub started_short: String,
    pub took: String,
}

impl From<&WorkflowRunRow> for RunItem {
    fn from(r: &WorkflowRunRow) -> Self {
        let at = r.started_at.or(Some(r.created_at));
        RunItem {
            id: r.id,
            workflow: r.workflow_name.clone(),
            status: r.status,
            trigger: r.trigger,
            attempt: r.attempt,
            sub: r.depth > 1,
            started: format::ts(at),
            started_iso: format::iso(at),
            started_short: format::short(at),
            took: format::between(r.started_at, r.finished_at),
        }
    }
}

/// Recent workflow runs for the dashboard: running now, then the latest failures.
pub async fn dashboard_runs(state: &AppState) -> UiResult<(Vec<RunItem>, Vec<RunItem>)> {
    let running = uc::runs_in_status(state, WorkflowRunStatus::Running, 10).await?;
    let failed = uc::runs_in_status(state, WorkflowRunStatus::Failed, 5).await?;
    Ok((
        running.iter().map(RunItem::from).collect(),
        failed.iter().map(RunItem::from).collect(),
    ))
}

// ---------------------------------------------------------------------------------------
// The graph as the template draws it.

/// One node of the drawn graph.
pub struct NodeView {
    pub id: String,
    pub label: String,
    pub x: i64,
    pub y: i64,
    pub cx: i64,
    pub name_y: i64,
    pub state_y: i64,
    /// The status class (`succeeded`, ...), or `def` on the workflow's page.
    pub status: String,
    /// The second line: the status, or on the workflow's page what the node runs.
    pub state: String,
    /// Its job's page (or its sub-run's); empty when it has none yet.
    pub href: String,
    /// The node's accessible name.
    pub title: String,
}

pub struct EdgeView {
    pub path: String,
    pub kind: &'static str,
    pub label: &'static str,
    pub label_x: i64,
    pub label_y: i64,
}

pub struct GraphView {
    pub width: i64,
    pub height: i64,
    pub w: i64,
    pub h: i64,
    pub nodes: Vec<NodeView>,
    pub edges: Vec<EdgeView>,
    /// What the picture shows, for screen readers.
    pub title: String,
    /// Every edge kind (an arrowhead marker each).
    pub kinds: Vec<&'static str>,
}

fn edge_label(kind: EdgeKind) -> &'static str {
    match kind {
        EdgeKind::Success => "success",
        EdgeKind::Failure => "failure",
        EdgeKind::Always => "always",
        EdgeKind::Condition => "condition",
        EdgeKind::NotCondition => "not condition",
    }
}

fn what_it_runs(n: &cronium_store::WorkflowNodeRow) -> String {
    match n.kind {
        NodeKind::Event => format!("event {}", n.event_name.as_deref().unwrap_or("?")),
        NodeKind::Inline => "inline script".into(),
        NodeKind::Workflow => format!("workflow {}", n.sub_workflow.as_deref().unwrap_or("?")),
    }
}

/// The node's link: its job, or its sub-workflow's run.
fn node_href(job: Option<i64>, sub_run: Option<i64>) -> String {
    match (job, sub_run) {
        (Some(j), _) => format!("/jobs/{j}"),
        (None, Some(r)) => format!("/workflow-runs/{r}"),
        _ => String::new(),
    }
}

/// Draws `graph`; `run`, when given, colours each node by its status in that run.
fn graph_view(graph: &WorkflowGraph, run: Option<&WorkflowRunDetail>, title: String) -> GraphView {
    let input: Vec<GraphNode> = graph
        .nodes
        .iter()
        .map(|n| GraphNode {
            id: n.node_id.clone(),
            after: n.after.clone(),
        })
        .collect();
    let l = graph::layout(&input);
    let nodes = l
        .nodes
        .iter()
        .map(|b| {
            let def = &graph.nodes[b.index];
            let node_run = run.and_then(|r| r.nodes.iter().find(|n| n.node_id == b.id));
            let (status, state, href) = match (run, node_run) {
                (Some(_), Some(n)) => (
                    n.status.to_string(),
                    status_words(n.status).to_string(),
                    node_href(n.job_id, n.sub_run_id),
                ),
                (Some(_), None) => ("waiting".into(), "waiting".into(), String::new()),
                (None, _) => ("def".into(), what_it_runs(def), String::new()),
            };
            NodeView {
                title: format!("{}: {state}", b.id),
                id: b.id.clone(),
                label: b.label.clone(),
                x: b.x,
                y: b.y,
                cx: b.cx,
                name_y: b.y + 19,
                state_y: b.y + 36,
                status,
                state,
                href,
            }
        })
        .collect();
    let edges = l
        .edges
        .iter()
        .map(|e| EdgeView {
            path: e.path.clone(),
            kind: e.kind.as_str(),
            label: edge_label(e.kind),
            label_x: e.label_x,
            label_y: e.label_y,
        })
        .collect();
    GraphView {
        width: l.width,
        height: l.height,
        w: NODE_W,
        h: NODE_H,
        nodes,
        edges,
        title,
        kinds: EdgeKind::ALL.iter().map(|k| k.as_str()).collect(),
    }
}

fn status_words(s: NodeRunStatus) -> &'static str {
    match s {
        NodeRunStatus::TimedOut => "timed out",
        other => other.as_str(),
    }
}

// ---------------------------------------------------------------------------------------
// The list.

pub struct WorkflowItem {
    pub name: String,
    pub status: String,
    pub nodes: usize,
    pub schedule: String,
    pub next: String,
    pub last: Option<RunItem>,
    pub broken: Option<String>,
}

fn spec_str(spec: &Value, key: &str) -> String {
    spec.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    q: Option<String>,
}

#[derive(Template)]
#[template(path = "workflows.html")]
struct WorkflowsPage {
    ctx: Ctx,
    workflows: Vec<WorkflowItem>,
    total: usize,
    q: String,
}

pub async fn list(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Query(f): Query<ListQuery>,
) -> UiResult<Response> {
    let all = uc::list(&state).await?;
    let q = f.q.unwrap_or_default().trim().to_lowercase();
    let mut workflows = Vec::new();
    for w in all.iter().filter(|w| q.is_empty() || w.name.contains(&q)) {
        // One indexed read per listed workflow: its latest run.
        let last = uc::recent_runs(&state, w.id, 1).await?;
        workflows.push(WorkflowItem {
            name: w.name.clone(),
            status: w.status.to_string(),
            nodes: w
                .spec
                .get("nodes")
                .and_then(Value::as_array)
                .map_or(0, Vec::len),
            schedule: spec_str(&w.spec, "schedule"),
            next: format::ts(w.next_fire_at),
            last: last.first().map(RunItem::from),
            broken: w.broken.clone(),
        });
    }
    Ok(render(&WorkflowsPage {
        ctx: Ctx::new(&session, "workflows"),
        workflows,
        total: all.len(),
        q,
    }))
}

// ---------------------------------------------------------------------------------------
// A workflow.

pub struct VersionItem {
    pub version: i64,
    pub status: String,
    pub created: String,
    pub current: bool,
}

#[derive(Template)]
#[template(path = "workflow.html")]
struct WorkflowPage {
    ctx: Ctx,
    name: String,
    status: String,
    version: i64,
    schedule: String,
    next: String,
    broken: Option<String>,
    yaml: String,
    graph: Option<GraphView>,
    runs: Vec<RunItem>,
    versions: Vec<VersionItem>,
    /// The run form's text and its error (at the field).
    input: String,
    run_error: Option<String>,
}

/// The YAML the page shows: the stored file fields and the workflow's status.
fn yaml_of(w: &WorkflowRow) -> String {
    let mut v = w.spec.clone();
    if let Some(obj) = v.as_object_mut() {
        obj.insert("status".into(), Value::String(w.status.to_string()));
    }
    serde_saphyr::to_string(&v).unwrap_or_else(|_| v.to_string())
}

async fn workflow_page(
    state: &AppState,
    session: &Session,
    name: &str,
    input: Option<String>,
    run_error: Option<String>,
) -> UiResult<WorkflowPage> {
    let view = uc::show(state, name).await?;
    let w = &view.workflow;
    let runs = uc::recent_runs(state, w.id, RECENT).await?;
    let input = input.unwrap_or_else(|| match w.spec.get("input") {
        Some(v @ Value::Object(m)) if !m.is_empty() => {
            serde_json::to_string_pretty(v).unwrap_or_default()
        }
        _ => String::new(),
    });
    Ok(WorkflowPage {
        ctx: Ctx::new(session, "workflows"),
        name: w.name.clone(),
        status: w.status.to_string(),
        version: w.version,
        schedule: spec_str(&w.spec, "schedule"),
        next: format::ts(w.next_fire_at),
        broken: w.broken.clone(),
        yaml: yaml_of(w),
        graph: view
            .graph
            .as_ref()
            .map(|g| graph_view(g, None, format!("Graph of workflow {}", w.name))),
        runs: runs.iter().map(RunItem::from).collect(),
        versions: view
            .versions
            .iter()
            .map(|v| VersionItem {
                version: v.version,
                status: v.status.to_string(),
                created: format::ts(Some(v.created_at)),
                current: v.version == w.version,
            })
            .collect(),
        input,
        run_error,
    })
}

pub async fn show(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
) -> UiResult<Response> {
    Ok(render(
        &workflow_page(&state, &session, &name, None, None).await?,
    ))
}

#[derive(Deserialize)]
pub struct RunForm {
    #[serde(default)]
    input: String,
}

/// Runs the workflow with the form's input (empty: the workflow's default input). Bad input
/// is shown at the field (422) and nothing runs.
pub async fn run(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
    Form(f): Form<RunForm>,
) -> UiResult<Response> {
    let input = match f.input.trim() {
        "" => None,
        text => match serde_json::from_str::<Value>(text) {
            Ok(v) => Some(v),
            Err(e) => {
                let message = format!("input: not valid JSON: {e}");
                return refuse_run(&state, &session, &name, f.input, message).await;
            }
        },
    };
    match uc::run(&state, &actor, &name, input, Trigger::Manual, now_ms()).await {
        Ok(run) => {
            Ok(Redirect::to(&format!("/workflow-runs/{}?done=started", run.id)).into_response())
        }
        Err(e @ (UseCaseError::Invalid { .. } | UseCaseError::Conflict { .. })) => {
            refuse_run(&state, &session, &name, f.input, e.to_string()).await
        }
        Err(e) => Err(e.into()),
    }
}

/// The workflow's page again (422), with the form's text and the error at its field.
async fn refuse_run(
    state: &AppState,
    session: &Session,
    name: &str,
    input: String,
    message: String,
) -> UiResult<Response> {
    let page = workflow_page(state, session, name, Some(input), Some(message)).await?;
    Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&page)).into_response())
}

// ---------------------------------------------------------------------------------------
// A run.

/// One node of a run, as the table (and the live stream) show it.
pub struct NodeRow {
    pub id: String,
    pub status: String,
    pub state: String,
    pub href: String,
    /// `job #12`, `run #4`, or empty.
    pub link: String,
    pub started: String,
    pub ended: String,
    pub took: String,
    /// The explanation (`run-show --explain`'s words).
    pub why: String,
}

fn node_rows(d: &WorkflowRunDetail) -> Vec<NodeRow> {
    d.explain()
        .into_iter()
        .map(|e| NodeRow {
            href: node_href(e.job_id, e.sub_run_id),
            link: match (e.job_id, e.sub_run_id) {
                (Some(j), _) => format!("job #{j}"),
                (None, Some(r)) => format!("run #{r}"),
                _ => String::new(),
            },
            status: e.status.to_string(),
            state: status_words(e.status).to_string(),
            started: format::ts(e.started_at),
            ended: format::ts(e.finished_at),
            took: format::between(e.started_at, e.finished_at),
            why: e.why,
            id: e.node_id,
        })
        .collect()
}

/// What the live stream sends: the run's status and every node's row.
fn state_json(d: &WorkflowRunDetail) -> Value {
    let nodes: Vec<Value> = node_rows(d)
        .into_iter()
        .map(|n| {
            json!({
                "node": n.id, "status": n.status, "state": n.state, "href": n.href,
                "link": n.link, "started": n.started, "ended": n.ended, "took": n.took,
                "why": n.why,
            })
        })
        .collect();
    json!({
        "status": d.run.status,
        "final": d.run.status.is_final(),
        "cancel_requested": d.run.cancel_requested(),
        "retryable": retryable(&d.run),
        "error": d.run.error,
        "finished": format::ts(d.run.finished_at),
        "took": format::between(d.run.started_at, d.run.finished_at),
        "output": format::json(&d.run.output),
        "nodes": nodes,
    })
}

/// A run a retry can start from: an ended top run that did not succeed.
fn retryable(r: &WorkflowRunRow) -> bool {
    r.status.is_final() && r.status != WorkflowRunStatus::Succeeded && r.depth == 1
}

#[derive(Template)]
#[template(path = "workflow_run.html")]
struct RunPage {
    ctx: Ctx,
    run: RunItem,
    version: i64,
    error: String,
    input: String,
    output: String,
    created: String,
    finished: String,
    retry_of: Option<i64>,
    /// The top run, for a sub-workflow's run.
    root: Option<i64>,
    graph: Option<GraphView>,
    nodes: Vec<NodeRow>,
    active: bool,
    cancel_requested: bool,
    retryable: bool,
    done: Option<String>,
    /// Where the combined log starts (`JOB:SEQ,...`): each node's last [`NODE_TAIL`] lines.
    log_after: String,
    /// Whether a node's log was cut to its tail.
    log_cut: bool,
}

#[derive(Deserialize, Default)]
pub struct RunQuery {
    done: Option<String>,
}

fn done_message(done: Option<&str>) -> Option<String> {
    match done? {
        "started" => Some("Workflow run started.".into()),
        "retried" => Some("Retry started: the nodes that succeeded keep their outputs.".into()),
        "cancelled" => Some("The run was cancelled.".into()),
        "cancel_requested" => Some("Cancellation requested: its running jobs are stopping.".into()),
        _ => None,
    }
}

pub async fn show_run(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<i64>,
    Query(q): Query<RunQuery>,
) -> UiResult<Response> {
    let d = uc::run_detail(&state, id).await?;
    let mut cursor = Vec::new();
    for job in d.nodes.iter().filter_map(|n| n.job_id) {
        if let Some(last) = crate::usecases::jobs::last_seq(&state, job).await? {
            if last > NODE_TAIL {
                cursor.push(format!("{job}:{}", last - NODE_TAIL));
            }
        }
    }
    let r = &d.run;
    let graph = d.graph.as_ref().map(|g| {
        graph_view(
            g,
            Some(&d),
            format!("Run {} of workflow {}: {}", r.id, r.workflow_name, r.status),
        )
    });
    Ok(render(&RunPage {
        ctx: Ctx::new(&session, "workflows"),
        run: RunItem::from(r),
        version: r.workflow_version,
        error: r.error.clone().unwrap_or_default(),
        input: format::json(&r.input),
        output: format::json(&r.output),
        created: format::ts(Some(r.created_at)),
        finished: format::ts(r.finished_at),
        retry_of: r.retry_of,
        root: (r.root_run_id != r.id).then_some(r.root_run_id),
        graph,
        nodes: node_rows(&d),
        active: !r.status.is_final(),
        cancel_requested: r.cancel_requested(),
        retryable: retryable(r),
        done: done_message(q.done.as_deref()),
        log_cut: !cursor.is_empty(),
        log_after: cursor.join(","),
    }))
}

pub async fn retry(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<i64>,
) -> UiResult<Response> {
    let run = uc::retry(&state, &actor, id, now_ms()).await?;
    Ok(Redirect::to(&format!("/workflow-runs/{}?done=retried", run.id)).into_response())
}

pub async fn cancel(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<i64>,
) -> UiResult<Response> {
    let run = uc::cancel(&state, &actor, id, now_ms()).await?;
    let done = if run.status.is_final() {
        "cancelled"
    } else {
        "cancel_requested"
    };
    Ok(Redirect::to(&format!("/workflow-runs/{id}?done={done}")).into_response())
}

/// The run's live state: a `state` event now and at each change, then `end` once the run is
/// final (the stream ends); a read error is one `error` event and the end of the stream.
pub async fn stream(State(state): State<AppState>, Path(id): Path<i64>) -> UiResult<Response> {
    let changes = uc::watch_run(&state, id).await?;
    let events = changes.flat_map(move |c| {
        let events: Vec<Event> = match c {
            Ok(d) => {
                let mut v = vec![Event::default()
                    .event("state")
                    .data(state_json(&d).to_string())];
                if d.run.status.is_final() {
                    let end = json!({"status": d.run.status});
                    v.push(Event::default().event("end").data(end.to_string()));
                }
                v
            }
            Err(e) => {
                tracing::error!(run = id, error = %e, "live workflow run: a read failed");
                let msg = json!({"message": "the run could not be read (see the server's log)"});
                vec![Event::default().event("error").data(msg.to_string())]
            }
        };
        futures::stream::iter(events.into_iter().map(Ok::<_, Infallible>))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

#[derive(Deserialize)]
pub struct LogQuery {
    /// Resume after this position (`JOB:SEQ,...`), when the browser did not send
    /// `Last-Event-ID` (a reconnection the script made itself).
    after: Option<String>,
}

/// Every node's log of the run, tagged by node: the API's stream behind the page's session.
pub async fn log_stream(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Query(q): Query<LogQuery>,
    mut headers: HeaderMap,
) -> UiResult<Response> {
    if !headers.contains_key("last-event-id") {
        if let Some(v) = q.after.and_then(|a| HeaderValue::from_str(&a).ok()) {
            headers.insert("last-event-id", v);
        }
    }
    let path = crate::api::extract::Path(crate::api::params::RunId { id });
    match crate::api::workflows::logs(State(state), path, headers).await {
        Ok(sse) => Ok(sse.into_response()),
        Err(e) => {
            let status = e.into_response().status();
            Err(match status {
                StatusCode::NOT_FOUND => UiError::NotFound(format!("workflow run {id} not found")),
                StatusCode::UNPROCESSABLE_ENTITY => {
                    UiError::BadRequest("after: expected JOB:SEQ,JOB:SEQ...".into())
                }
                _ => UiError::Internal(format!("workflow run {id}: the log could not be read")),
            })
        }
    }
}
