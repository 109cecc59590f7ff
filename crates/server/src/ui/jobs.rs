//! The jobs pages: the list (filters by status, event, server and trigger; keyset paging on
//! id, so a page deep in the history costs what the first one does; kept live by `live.rs`),
//! a job's detail (every execution per attempt and server, exit codes, outputs, timings, the
//! variables it wrote; cancel, re-run) and its log viewer.
//!
//! The log viewer opens at the tail: the page holds the last [`TAIL`] lines, rendered by the
//! server (so it works without JavaScript, with a link to older lines). `app.js` then follows
//! the live stream (`/jobs/{id}/log/stream`, the API's Server-Sent Events, resumed with
//! `Last-Event-ID`) and fetches older lines on demand as HTML fragments
//! (`/jobs/{id}/log/lines?before=SEQ`), so a 50 MB log never reaches the page whole. The whole
//! log is a plain-text download (`/jobs/{id}/log.txt`), streamed page by page.

use std::convert::Infallible;
use std::time::Duration;

use askama::Template;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use cronium_model::{JobStatus, Trigger};
use cronium_store::{ExecutionRow, JobRow};
use futures::StreamExt;
use serde::Deserialize;

use super::error::UiResult;
use super::session::Session;
use super::{format, render, Ctx};
use crate::authz::{get, post, Role, Routes};
use crate::state::AppState;
use crate::usecases::jobs::{self as uc, JobQuery, ServerLine};
use crate::usecases::Actor;
use crate::usecases::{self, UseCaseError};

/// Lines a log page opens with (its tail), and per "older" step.
pub const TAIL: i64 = 500;
/// Jobs per list page.
pub const PAGE: i64 = 50;

pub fn routes() -> Routes<AppState> {
    use Role::{Operator, Viewer};
    Routes::new()
        .route("/jobs", get(Viewer, list))
        .route("/jobs/{id}", get(Viewer, show))
        .route("/jobs/{id}/cancel", post(Operator, cancel))
        .route("/jobs/{id}/rerun", post(Operator, rerun))
        .route("/jobs/{id}/retry-failed", post(Operator, retry_failed))
        .route("/jobs/{id}/log/lines", get(Viewer, lines))
        .route("/jobs/{id}/log/stream", get(Viewer, stream))
        .route("/jobs/{id}/log.txt", get(Viewer, download))
}

/// A job as a row of a table.
pub struct JobItem {
    pub id: i64,
    pub event: String,
    pub status: JobStatus,
    pub exit_code: Option<i32>,
    pub trigger: Trigger,
    pub started: String,
    pub started_iso: String,
    /// `12-02 01:32:53`, for narrow tables.
    pub started_short: String,
    pub took: String,
}

impl From<JobRow> for JobItem {
    fn from(j: JobRow) -> Self {
        JobItem {
            id: j.id,
            event: j.event_name,
            status: j.status,
            exit_code: j.exit_code,
            trigger: j.trigger,
            started: format::ts(j.started_at.or(Some(j.created_at))),
            started_iso: format::iso(j.started_at.or(Some(j.created_at))),
            started_short: format::short(j.started_at.or(Some(j.created_at))),
            took: format::between(j.started_at, j.finished_at),
        }
    }
}

#[derive(Deserialize, Default)]
pub struct ListForm {
    status: Option<String>,
    event: Option<String>,
    server: Option<String>,
    trigger: Option<String>,
    before: Option<String>,
}

fn blank(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

impl ListForm {
    /// The filters (blank fields are no filter), without paging.
    pub fn query(&self) -> JobQuery {
        JobQuery {
            event: blank(self.event.clone()),
            status: blank(self.status.clone()),
            trigger: blank(self.trigger.clone()),
            server: blank(self.server.clone()),
            limit: None,
            before: None,
        }
    }

    /// The `before` of a later page; an error naming the field when it is not a job id.
    pub fn before(&self) -> Result<Option<i64>, &'static str> {
        match blank(self.before.clone()).map(|b| b.parse::<i64>()) {
            Some(Ok(b)) => Ok(Some(b)),
            Some(Err(_)) => Err("before: must be a job id"),
            None => Ok(None),
        }
    }

    /// The page's query string for its live stream (`/jobs/stream?...`).
    fn stream_query(&self) -> String {
        let q = self.query();
        let mut pairs: Vec<(&str, String)> = Vec::new();
        for (k, v) in [
            ("status", q.status),
            ("event", q.event),
            ("server", q.server),
            ("trigger", q.trigger),
            ("before", blank(self.before.clone())),
        ] {
            if let Some(v) = v {
                pairs.push((k, v));
            }
        }
        serde_urlencoded::to_string(&pairs).unwrap_or_default()
    }
}

#[derive(Template)]
#[template(path = "jobs.html")]
struct JobsPage {
    ctx: Ctx,
    jobs: Vec<JobItem>,
    status: String,
    event: String,
    server: String,
    trigger: String,
    statuses: Vec<&'static str>,
    triggers: Vec<&'static str>,
    servers: Vec<String>,
    error: Option<String>,
    /// The query of the next (older) page, when there may be one.
    older: Option<String>,
    /// Whether this is a page after the first.
    paged: bool,
    /// The live statuses' stream of this page (none when its filters are refused).
    live: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Query(f): Query<ListForm>,
) -> UiResult<Response> {
    let mut q = f.query();
    let (status, event, server, trigger) = (
        q.status.clone(),
        q.event.clone(),
        q.server.clone(),
        q.trigger.clone(),
    );
    let mut error = None;
    let before = f.before().unwrap_or_else(|m| {
        error = Some(m.to_string());
        None
    });
    q.limit = Some(PAGE);
    q.before = before;
    let jobs = match uc::list(&state, &q).await {
        Ok(j) => j,
        Err(UseCaseError::Invalid { message, .. }) => {
            error = Some(message);
            Vec::new()
        }
        Err(e) => return Err(e.into()),
    };
    let older = (jobs.len() as i64 == PAGE)
        .then(|| jobs.last().map(|j| j.id))
        .flatten()
        .map(|last| {
            let mut pairs: Vec<(&str, String)> = Vec::new();
            for (k, v) in [
                ("status", &status),
                ("event", &event),
                ("server", &server),
                ("trigger", &trigger),
            ] {
                if let Some(v) = v {
                    pairs.push((k, v.clone()));
                }
            }
            pairs.push(("before", last.to_string()));
            serde_urlencoded::to_string(&pairs).unwrap_or_default()
        });
    let servers = usecases::servers::list(&state)
        .await?
        .into_iter()
        .map(|s| s.name)
        .collect();
    // A page whose filters are refused has nothing to keep live.
    let live = error
        .is_none()
        .then(|| format!("/jobs/stream?{}", f.stream_query()));
    Ok(render(&JobsPage {
        live,
        ctx: Ctx::new(&session, "jobs"),
        jobs: jobs.into_iter().map(JobItem::from).collect(),
        status: status.unwrap_or_default(),
        event: event.unwrap_or_default(),
        server: server.unwrap_or_default(),
        trigger: trigger.unwrap_or_default(),
        statuses: JobStatus::ALL.iter().map(|s| s.as_str()).collect(),
        triggers: Trigger::ALL.iter().map(|s| s.as_str()).collect(),
        servers,
        error,
        older,
        paged: before.is_some(),
    }))
}

pub struct ExecItem {
    pub id: i64,
    pub attempt: i32,
    pub server: String,
    pub status: String,
    pub exit_code: Option<i32>,
    pub mode: String,
    pub runner_version: String,
    pub started: String,
    pub setup: String,
    pub run: String,
    pub took: String,
    pub error: String,
    pub note: String,
    pub output: String,
    /// CPU time of the process tree (user + system), empty when not measured.
    pub cpu: String,
    /// Its split, for the cell's title: `user 200 ms, system 43 ms`.
    pub cpu_split: String,
    /// Peak resident memory of the tree's largest process.
    pub memory: String,
    /// A container run's cgroup figures: `container: 260 ms CPU, 58 MiB peak`, else empty.
    pub container_usage: String,
}

impl From<ExecutionRow> for ExecItem {
    fn from(x: ExecutionRow) -> Self {
        ExecItem {
            id: x.id,
            attempt: x.attempt,
            server: x.server.unwrap_or_else(|| "(local)".into()),
            status: x.status.to_string(),
            exit_code: x.exit_code,
            mode: x.mode.unwrap_or_default(),
            runner_version: x.runner_version.unwrap_or_default(),
            started: format::ts(x.started_at),
            setup: format::duration(x.setup_ms),
            run: format::duration(x.run_ms),
            // Wall time of the whole execution: connection, deployment and setup included, so
            // never less than Setup + Run (started -> finished alone was, confusingly).
            took: format::between(Some(x.created_at), x.finished_at),
            error: x.error.unwrap_or_default(),
            note: x.note.unwrap_or_default(),
            output: format::json(&x.output),
            cpu: format::cpu(&x.usage),
            cpu_split: match (x.usage.cpu_user_ms, x.usage.cpu_system_ms) {
                (Some(u), Some(s)) => format!(
                    "user {}, system {}",
                    format::duration(Some(u)),
                    format::duration(Some(s))
                ),
                _ => String::new(),
            },
            memory: format::bytes(x.usage.max_rss_bytes),
            container_usage: container_usage(&x.usage),
        }
    }
}

fn container_usage(u: &cronium_store::ExecutionUsage) -> String {
    let mut parts = Vec::new();
    if let Some(ms) = u.cgroup_cpu_ms {
        parts.push(format!("{} CPU", format::duration(Some(ms))));
    }
    if let Some(b) = u.cgroup_memory_peak_bytes {
        parts.push(format!("{} peak", format::bytes(Some(b))));
    }
    match parts.is_empty() {
        true => String::new(),
        false => format!("container: {}", parts.join(", ")),
    }
}

/// A variable the job wrote, as the page shows it (never its value).
pub struct WriteItem {
    pub name: String,
    pub secret: bool,
    /// `attempt 1 · web-1`, or empty when the execution is unknown.
    pub by: String,
    pub at: String,
    pub iso: String,
}

/// A log line as the page shows it.
pub struct LineItem {
    pub seq: i64,
    pub stream: String,
    pub server: String,
    pub text: String,
    pub time: String,
    /// Cronium's own "output truncated" marker.
    pub truncated: bool,
}

impl From<ServerLine> for LineItem {
    fn from(l: ServerLine) -> Self {
        let truncated =
            l.line.stream == "system" && l.line.line.starts_with("[cronium] output truncated");
        LineItem {
            seq: l.line.seq,
            stream: l.line.stream,
            server: l.server.unwrap_or_default(),
            time: format::ts(Some(l.line.ts)),
            text: l.line.line,
            truncated,
        }
    }
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobPage {
    ctx: Ctx,
    job: JobItem,
    attempt: i32,
    max_attempts: i32,
    error: String,
    input: String,
    output: String,
    created: String,
    finished: String,
    executions: Vec<ExecItem>,
    writes: Vec<WriteItem>,
    servers: Vec<String>,
    lines: Vec<LineItem>,
    /// The seq of the first line shown, when older lines exist.
    older: Option<i64>,
    last_seq: i64,
    active: bool,
    cancel_requested: bool,
    done: Option<String>,
    /// For a workflow node's job: its run and node.
    workflow_run: Option<WorkflowLink>,
    /// An ended fan-out (not a node's) with servers that did not succeed: the
    /// "Retry failed servers" button.
    retry_failed: bool,
    /// A queued job no connected agent can take: why it waits.
    waiting_for: Option<String>,
}

/// The workflow run (and node) a node's job belongs to.
pub struct WorkflowLink {
    pub run: i64,
    pub node: String,
}

#[derive(Deserialize, Default)]
pub struct ShowQuery {
    /// Show the log lines before this seq instead of the tail (the no-script "older" link).
    before: Option<i64>,
    /// What the redirect after an action says it did (`cancelled`, `cancel_requested`).
    done: Option<String>,
}

fn done_message(done: Option<&str>) -> Option<String> {
    match done? {
        "cancelled" => Some("The job was cancelled.".into()),
        "cancel_requested" => {
            Some("Cancellation requested: the runner is stopping the script.".into())
        }
        "started" => Some("Job started.".into()),
        _ => None,
    }
}

pub async fn show(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<i64>,
    Query(q): Query<ShowQuery>,
) -> UiResult<Response> {
    let (job, executions) = uc::detail(&state, id).await?;
    let workflow_run = usecases::workflows::run_of_job(&state, &job)
        .await?
        .map(|(run, node)| WorkflowLink { run, node });
    let writes = uc::variable_writes(&state, id).await?;
    let waiting_for = uc::waiting_for(&state, &job).await?;
    let lines = uc::log_tail(&state, id, q.before, TAIL).await?;
    let by: std::collections::HashMap<i64, String> = executions
        .iter()
        .map(|x| {
            let mut s = format!("attempt {}", x.attempt);
            if let Some(server) = &x.server {
                s.push_str(" · ");
                s.push_str(server);
            }
            (x.id, s)
        })
        .collect();
    let writes: Vec<WriteItem> = writes
        .into_iter()
        .map(|w| WriteItem {
            by: w
                .execution_id
                .and_then(|x| by.get(&x).cloned())
                .unwrap_or_default(),
            at: format::ts(Some(w.written_at)),
            iso: format::iso(Some(w.written_at)),
            secret: w.secret,
            name: w.name,
        })
        .collect();
    let retry_failed = job.status.is_final()
        && job.node_run_id.is_none()
        && uc::failed_servers(&job, &executions).is_some_and(|f| !f.is_empty());
    let mut servers: Vec<String> = executions.iter().filter_map(|x| x.server.clone()).collect();
    servers.sort();
    servers.dedup();
    let older = (lines.len() as i64 == TAIL)
        .then(|| lines.first().map(|l| l.line.seq))
        .flatten();
    let last_seq = lines
        .last()
        .map_or(q.before.map_or(0, |b| b - 1), |l| l.line.seq);
    Ok(render(&JobPage {
        ctx: Ctx::new(&session, "jobs"),
        attempt: job.attempt,
        max_attempts: job.max_attempts,
        error: job.error.clone().unwrap_or_default(),
        input: format::json(&job.input),
        output: format::json(&job.output),
        created: format::ts(Some(job.created_at)),
        finished: format::ts(job.finished_at),
        active: !job.status.is_final(),
        cancel_requested: job.cancel_requested,
        job: JobItem::from(job),
        executions: executions.into_iter().map(ExecItem::from).collect(),
        writes,
        servers,
        lines: lines.into_iter().map(LineItem::from).collect(),
        older,
        last_seq,
        done: done_message(q.done.as_deref()),
        workflow_run,
        retry_failed,
        waiting_for,
    }))
}

pub async fn cancel(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<i64>,
) -> UiResult<Response> {
    let job = uc::cancel(&state, &actor, id).await?;
    let done = if job.status == JobStatus::Cancelled {
        "cancelled"
    } else {
        "cancel_requested"
    };
    Ok(Redirect::to(&format!("/jobs/{id}?done={done}")).into_response())
}

pub async fn rerun(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<i64>,
) -> UiResult<Response> {
    let job = uc::rerun(&state, &actor, id).await?;
    Ok(Redirect::to(&format!("/jobs/{}?done=started", job.id)).into_response())
}

/// `cronium job retry --failed-only` from the job page: a new job on the servers that did not
/// succeed.
pub async fn retry_failed(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<i64>,
) -> UiResult<Response> {
    let job = uc::retry(&state, &actor, id, true).await?;
    Ok(Redirect::to(&format!("/jobs/{}?done=started", job.id)).into_response())
}

#[derive(Template)]
#[template(path = "log_lines_partial.html")]
struct LinesPartial {
    lines: Vec<LineItem>,
}

#[derive(Deserialize)]
pub struct LinesQuery {
    before: i64,
}

/// Older lines, as an HTML fragment for the viewer to put above what it shows. The header
/// `X-Older` holds the seq to ask for next (none: the start of the log was reached).
pub async fn lines(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Query(q): Query<LinesQuery>,
) -> UiResult<Response> {
    let lines = uc::log_tail(&state, id, Some(q.before), TAIL).await?;
    let older = (lines.len() as i64 == TAIL)
        .then(|| lines.first().map(|l| l.line.seq))
        .flatten();
    let mut resp = render(&LinesPartial {
        lines: lines.into_iter().map(LineItem::from).collect(),
    });
    if let Some(o) = older.and_then(|o| header::HeaderValue::from_str(&o.to_string()).ok()) {
        resp.headers_mut().insert("x-older", o);
    }
    Ok(resp)
}

#[derive(Deserialize)]
pub struct StreamQuery {
    after: Option<i64>,
}

/// The live log for the viewer: the API's stream (same events, same resume rules), behind
/// the page's session instead of a token.
pub async fn stream(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Query(q): Query<StreamQuery>,
    headers: HeaderMap,
) -> UiResult<Response> {
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let after = resume.or(q.after).unwrap_or(0);
    let events = uc::log_stream(&state, id, after).await?;
    let sse = Sse::new(events.map(|e| Ok::<_, Infallible>(crate::api::jobs::sse_event(e))))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)));
    Ok(sse.into_response())
}

/// The whole log as text (`[server] ` before each line of a multi-server run, stderr marked),
/// read from the store page by page while it is sent.
pub async fn download(State(state): State<AppState>, Path(id): Path<i64>) -> UiResult<Response> {
    let job = uc::get(&state, id).await?;
    let servers = uc::servers_of(&state, id).await?;
    let many = servers
        .values()
        .collect::<std::collections::HashSet<_>>()
        .len()
        > 1;
    let body = futures::stream::unfold(Some(0i64), move |after| {
        let state = state.clone();
        let servers = servers.clone();
        async move {
            let after = after?;
            match state.store.read_logs(id, after, 5000).await {
                Ok(lines) if lines.is_empty() => None,
                Ok(lines) => {
                    let next = lines.last().map(|l| l.seq);
                    let mut text = String::new();
                    for l in lines {
                        if many {
                            if let Some(s) = l.execution_id.and_then(|x| servers.get(&x)) {
                                text.push_str(&format!("[{s}] "));
                            }
                        }
                        if l.stream == "stderr" {
                            text.push_str("stderr| ");
                        }
                        text.push_str(&l.line);
                        text.push('\n');
                    }
                    Some((Ok::<_, std::io::Error>(text), next))
                }
                Err(e) => {
                    tracing::error!(job = id, error = %e, "log download: read failed");
                    Some((
                        Err(std::io::Error::other("the log could not be read")),
                        None,
                    ))
                }
            }
        }
    });
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_string(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"job-{}-{}.log\"",
                    job.id,
                    job.event_name.replace(['"', '/'], "_")
                ),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}
