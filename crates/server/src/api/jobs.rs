//! `/api/v1/jobs`: list with filters, detail with executions, cancel, logs (paged and live).

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use cronium_core::clock::now_ms;
use cronium_model::JobStatus;
use cronium_store::{CancelResult, JobFilter, JobRow};
use futures::Stream;
use serde::Deserialize;
use utoipa::IntoParams;

use super::dto::{JobDto, LogLineDto, LogPageDto};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{Path, Query};
use super::params::JobId;
use crate::state::AppState;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only jobs of this event.
    pub event: Option<String>,
    /// Only jobs with this status.
    #[param(value_type = Option<JobStatus>)]
    pub status: Option<String>,
    /// At most this many (default 50, max 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Only jobs with an id below this (paging, newest first).
    pub before: Option<i64>,
}

/// List jobs, newest first (without their executions).
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", operation_id = "list_jobs", params(ListQuery),
    responses(
        (status = 200, description = "The jobs, newest first", body = [JobDto]),
        (status = 422, description = "A query parameter is not valid (it is named)", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<JobDto>>> {
    // Parsed here rather than by the query extractor, so a bad value is a 422 naming the field.
    let status = q
        .status
        .as_deref()
        .map(str::parse::<JobStatus>)
        .transpose()
        .map_err(|e| ApiError::bad("status", e.to_string()))?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad("limit", "must be between 1 and 1000"));
    }
    let filter = JobFilter {
        event_name: q.event,
        event_id: None,
        status,
        limit: Some(limit),
        before_id: q.before,
    };
    let jobs = state.store.list_jobs(&filter).await?;
    Ok(Json(
        jobs.into_iter().map(|j| JobDto::new(j, None)).collect(),
    ))
}

async fn find(state: &AppState, id: i64) -> ApiResult<JobRow> {
    state
        .store
        .get_job(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("job {id} not found")))
}

/// One job with its executions.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs", operation_id = "show_job", params(JobId),
    responses(
        (status = 200, description = "The job, with `executions`", body = JobDto),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 422, description = "The id is not an integer", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn show(
    State(state): State<AppState>,
    Path(JobId { id }): Path<JobId>,
) -> ApiResult<Json<JobDto>> {
    let job = find(&state, id).await?;
    let executions = state.store.list_executions(id).await?;
    Ok(Json(JobDto::new(job, Some(executions))))
}

/// Cancel a queued (at once) or running (the runner stops the script) job.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs", operation_id = "cancel_job", params(JobId),
    responses(
        (status = 200, description = "The job: `cancelled`, or still `running` with `cancel_requested`", body = JobDto),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job has already ended", body = ErrorBody),
        (status = 422, description = "The id is not an integer", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    Path(JobId { id }): Path<JobId>,
) -> ApiResult<Json<JobDto>> {
    match state.store.cancel(id, now_ms()).await? {
        CancelResult::NotFound => return Err(ApiError::NotFound(format!("job {id} not found"))),
        CancelResult::AlreadyFinished(status) => {
            return Err(ApiError::Conflict {
                field: None,
                message: format!("job {id} has already ended ({status})"),
            })
        }
        CancelResult::Cancelled => state.bus.finish(id),
        CancelResult::Requested => {}
    }
    let job = find(&state, id).await?;
    Ok(Json(JobDto::new(job, None)))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Return lines with a seq greater than this (default 0).
    pub after: Option<i64>,
    /// At most this many lines (default 1000, max 10000).
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<i64>,
}

async fn servers_of(state: &AppState, job_id: i64) -> ApiResult<HashMap<i64, String>> {
    Ok(state
        .store
        .list_executions(job_id)
        .await?
        .into_iter()
        .filter_map(|x| x.server.map(|s| (x.id, s)))
        .collect())
}

/// A page of a job's log.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/logs", tag = "logs", operation_id = "job_logs", params(JobId, LogQuery),
    responses(
        (status = 200, description = "Lines after `after`, in seq order", body = LogPageDto),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 422, description = "A parameter is not valid (it is named)", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn logs(
    State(state): State<AppState>,
    Path(JobId { id }): Path<JobId>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Json<LogPageDto>> {
    let limit = q.limit.unwrap_or(1000);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::bad("limit", "must be between 1 and 10000"));
    }
    let after = q.after.unwrap_or(0);
    // Read the status first: if it is final, every line was stored before it.
    let job = find(&state, id).await?;
    let lines = state.store.read_logs(id, after, limit).await?;
    let servers = servers_of(&state, id).await?;
    let next_after = lines.last().map_or(after, |l| l.seq);
    let done = job.status.is_final() && (lines.len() as i64) < limit;
    Ok(Json(LogPageDto {
        lines: lines
            .into_iter()
            .map(|l| {
                let server = l.execution_id.and_then(|x| servers.get(&x).cloned());
                LogLineDto::new(l, server)
            })
            .collect(),
        next_after,
        done,
        status: job.status,
    }))
}

/// Live log as Server-Sent Events: `line` events (id = seq, data = a log line as JSON), then one
/// `end` event with the job's final status. Resume with `Last-Event-ID` or `?after=SEQ`: nothing
/// is missed and nothing is sent twice. When the store cannot be read (after a few tries), or
/// the job is deleted, the stream ends with one `error` event instead, `{"message", "after"}`
/// (`after`: the last seq sent, where to resume), never with a silent end and lines missing.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/logs/stream", tag = "logs", operation_id = "job_log_stream",
    params(JobId, LogQuery,
        ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this seq (wins over `after`)")),
    responses(
        (status = 200, description = "Server-Sent Events: `line` (id: the seq; data: a `LogLineDto`), then one `end` \
(data: `{\"status\": JobStatus, \"exit_code\": integer|null}`) or one `error` (data: `{\"message\": string, \"after\": seq}`); \
comments keep the connection alive every 15 s", content_type = "text/event-stream", body = String),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 422, description = "A parameter is not valid (it is named)", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn stream(
    State(state): State<AppState>,
    Path(JobId { id }): Path<JobId>,
    Query(q): Query<LogQuery>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    find(&state, id).await?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let after = resume.or(q.after).unwrap_or(0);
    let rx = state.bus.subscribe(id);

    struct Cursor {
        state: AppState,
        id: i64,
        after: i64,
        rx: Option<tokio::sync::watch::Receiver<cronium_core::logbus::LogMark>>,
        pending: std::collections::VecDeque<Event>,
        ended: bool,
        servers: HashMap<i64, String>,
    }
    impl Cursor {
        /// Ends the stream with an `error` event; the details go to the server's log.
        fn fail(&mut self, what: &str, error: Option<cronium_store::StoreError>) {
            let message = match &error {
                Some(e) => {
                    tracing::error!(job = self.id, error = %e, "live log: {what} failed");
                    format!("{what} failed: the database could not be read (see the server's log)")
                }
                None => what.to_string(),
            };
            let data = serde_json::json!({"message": message, "after": self.after});
            self.pending
                .push_back(Event::default().event("error").data(data.to_string()));
            self.ended = true;
        }
    }
    let cursor = Cursor {
        state,
        id,
        after,
        rx,
        pending: Default::default(),
        ended: false,
        servers: HashMap::new(),
    };
    let stream = futures::stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(e) = c.pending.pop_front() {
                return Some((Ok(e), c));
            }
            if c.ended {
                if let Some(rx) = c.rx.take() {
                    drop(rx);
                    c.state.bus.release(c.id);
                }
                return None;
            }
            // Status before lines: once final, all lines are stored.
            let status = match retry_read(|| c.state.store.get_job(c.id)).await {
                Ok(Some(j)) => j,
                Ok(None) => {
                    c.fail(&format!("job {} no longer exists", c.id), None);
                    continue;
                }
                Err(e) => {
                    c.fail("reading the job", Some(e));
                    continue;
                }
            };
            let lines = match retry_read(|| c.state.store.read_logs(c.id, c.after, 1000)).await {
                Ok(lines) => lines,
                Err(e) => {
                    c.fail("reading the log", Some(e));
                    continue;
                }
            };
            if lines
                .iter()
                .any(|l| l.execution_id.is_some_and(|x| !c.servers.contains_key(&x)))
            {
                match retry_read(|| c.state.store.list_executions(c.id)).await {
                    Ok(xs) => {
                        c.servers = xs
                            .into_iter()
                            .filter_map(|x| x.server.map(|s| (x.id, s)))
                            .collect();
                    }
                    Err(e) => {
                        c.fail("reading the job's executions", Some(e));
                        continue;
                    }
                }
            }
            if !lines.is_empty() {
                for l in lines {
                    c.after = l.seq;
                    let server = l.execution_id.and_then(|x| c.servers.get(&x).cloned());
                    let dto = LogLineDto::new(l, server);
                    let data = serde_json::to_string(&dto).unwrap_or_default();
                    c.pending.push_back(
                        Event::default()
                            .event("line")
                            .id(dto.seq.to_string())
                            .data(data),
                    );
                }
                continue;
            }
            if status.status.is_final() {
                let end =
                    serde_json::json!({"status": status.status, "exit_code": status.exit_code});
                c.pending
                    .push_back(Event::default().event("end").data(end.to_string()));
                c.ended = true;
                continue;
            }
            // Wait for the agent's wake-up, or poll (jobs run by another server's agent).
            match c.rx.as_mut() {
                Some(rx) => {
                    let _ = tokio::time::timeout(Duration::from_millis(500), rx.changed()).await;
                }
                None => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// A store read for a live viewer, tried three times (a busy or restarting database) before
/// its error ends the stream.
pub(crate) async fn retry_read<T, F, Fut>(mut read: F) -> Result<T, cronium_store::StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, cronium_store::StoreError>>,
{
    let mut tries = 0;
    loop {
        match read().await {
            Ok(v) => return Ok(v),
            Err(e) if tries < 2 => {
                tries += 1;
                tracing::warn!(error = %e, tries, "live log: a read failed, retrying");
                tokio::time::sleep(Duration::from_millis(100 * tries)).await;
            }
            Err(e) => return Err(e),
        }
    }
}
