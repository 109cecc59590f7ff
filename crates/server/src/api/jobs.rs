//! `/api/v1/jobs`: list with filters, detail with executions, cancel, retry (of every server or
//! only the failed ones), logs (paged and live).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::{Extension, Json};
use cronium_model::JobStatus;
use futures::{Stream, StreamExt};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::body;
use super::dto::{CreatedDto, JobDto, LogLineDto, LogPageDto};
use super::error::{ApiResult, ErrorBody};
use super::extract::{Body, Path, Query};
use super::params::JobId;
use crate::state::AppState;
use crate::usecases::jobs::{self, JobQuery, LogEvent};
use crate::usecases::Actor;

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
    // Parsed by the use case rather than by the query extractor, so a bad value is a 422
    // naming the field.
    let jobs = jobs::list(
        &state,
        &JobQuery {
            event: q.event,
            status: q.status,
            limit: q.limit,
            before: q.before,
            ..Default::default()
        },
    )
    .await?;
    Ok(Json(
        jobs.into_iter().map(|j| JobDto::new(j, None)).collect(),
    ))
}

/// One job with its executions.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs", operation_id = "show_job", params(JobId),
    responses(
        (status = 200, description = "The job, with `executions` and `variable_writes`", body = JobDto),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 422, description = "The id is not an integer", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn show(
    State(state): State<AppState>,
    Path(JobId { id }): Path<JobId>,
) -> ApiResult<Json<JobDto>> {
    let (job, executions) = jobs::detail(&state, id).await?;
    let writes = jobs::variable_writes(&state, id).await?;
    let waiting_for = jobs::waiting_for(&state, &job).await?;
    Ok(Json(
        JobDto::new(job, Some(executions))
            .with_writes(writes)
            .with_waiting_for(waiting_for),
    ))
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
    Extension(actor): Extension<Actor>,
    Path(JobId { id }): Path<JobId>,
) -> ApiResult<Json<JobDto>> {
    let job = jobs::cancel(&state, &actor, id).await?;
    Ok(Json(JobDto::new(job, None)))
}

/// What `POST /api/v1/jobs/{id}/retry` runs again.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryBody {
    /// Only the servers whose execution in the job's last attempt did not succeed (failed,
    /// timed out, lost, cancelled, or not run by a rolling fan-out), with the same event
    /// version. False or absent: run the event again (its current version, every server).
    #[serde(default)]
    pub failed_only: bool,
}

/// Run a job again: a new job of the same event with the job's input. With `failed_only`, a
/// fan-out's servers that did not succeed in its last attempt, and only them.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/retry", tag = "jobs", operation_id = "retry_job", params(JobId),
    request_body(content = Option<RetryBody>, description = "Optional (no body: run every server again)"),
    responses(
        (status = 201, description = "The new job", body = CreatedDto),
        (status = 404, description = "No such job, or its event is gone", body = ErrorBody),
        (status = 409, description = "`failed_only`: the job has not ended, is not a fan-out to servers, or has no failed server; or the event reached its `max_executions`", body = ErrorBody),
        (status = 413, description = "The body is over 2 MiB", body = ErrorBody),
        (status = 422, description = "The id or the body is not valid, or the event is archived", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn retry(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(JobId { id }): Path<JobId>,
    Body(bytes): Body,
) -> ApiResult<(StatusCode, Json<CreatedDto>)> {
    let body: RetryBody = body::optional_json(&bytes)?;
    let job = jobs::retry(&state, &actor, id, body.failed_only).await?;
    Ok((StatusCode::CREATED, Json(CreatedDto { id: job.id })))
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
    let page = jobs::log_page(&state, id, q.after, q.limit).await?;
    Ok(Json(LogPageDto {
        lines: page
            .lines
            .into_iter()
            .map(|l| LogLineDto::new(l.line, l.server))
            .collect(),
        next_after: page.next_after,
        done: page.done,
        status: page.status,
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
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let after = resume.or(q.after).unwrap_or(0);
    let events = jobs::log_stream(&state, id, after).await?;
    Ok(Sse::new(events.map(|e| Ok(sse_event(e))))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// One event of the live log, in the shapes the document gives.
pub(crate) fn sse_event(e: LogEvent) -> Event {
    match e {
        LogEvent::Line(l) => {
            let dto = LogLineDto::new(l.line, l.server);
            let data = serde_json::to_string(&dto).unwrap_or_default();
            Event::default()
                .event("line")
                .id(dto.seq.to_string())
                .data(data)
        }
        LogEvent::End { status, exit_code } => {
            let end = serde_json::json!({"status": status, "exit_code": exit_code});
            Event::default().event("end").data(end.to_string())
        }
        LogEvent::Error { message, after } => {
            let data = serde_json::json!({"message": message, "after": after});
            Event::default().event("error").data(data.to_string())
        }
    }
}
