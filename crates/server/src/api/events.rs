//! `/api/v1/events`: create, apply (create or update by name), list, show, delete, run now.
//!
//! A write answers with the row its own transaction wrote (never a re-read, which concurrent
//! writers could have changed in between), and the event's status is the `events.status`
//! column, never a copy inside the spec. The rules are in `usecases::events`.

use super::doc::EventApplyBody;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use cronium_core::spec::{self, EventSpec};
use cronium_model::Trigger;

use super::body;
use super::dto::{ApplyDto, CreatedDto, EventDto, RunBody};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{Body, Path};
use super::params::EventName;
use crate::state::AppState;
use crate::usecases::{events, Actor};

fn parse_spec(bytes: &Bytes) -> ApiResult<EventSpec> {
    let text = std::str::from_utf8(bytes).map_err(|_| ApiError::bad("(body)", "not UTF-8"))?;
    Ok(spec::parse_json(text)?)
}

/// List events.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", operation_id = "list_events",
    responses((status = 200, description = "Every event, by name", body = [EventDto])),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<EventDto>>> {
    let events = events::list(&state).await?;
    Ok(Json(events.into_iter().map(EventDto::from).collect()))
}

/// Create an event (409 when the name is taken).
#[utoipa::path(post, path = "/api/v1/events", tag = "events", operation_id = "create_event",
    request_body(content = EventSpec, description = "The event file fields as JSON"),
    responses(
        (status = 201, description = "The event as created", body = EventDto),
        (status = 409, description = "An event of that name exists", body = ErrorBody),
        (status = 413, description = "The body is over 2 MiB", body = ErrorBody),
        (status = 422, description = "The event is not valid (the field is named)", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Body(bytes): Body,
) -> ApiResult<(StatusCode, Json<EventDto>)> {
    let spec = parse_spec(&bytes)?;
    let event = events::create(&state, &actor, &spec).await?;
    Ok((StatusCode::CREATED, Json(event.into())))
}

/// Create or update an event by name (what `cronium event apply` calls).
#[utoipa::path(put, path = "/api/v1/events/{name}", tag = "events", operation_id = "apply_event",
    params(EventName),
    request_body(content = EventApplyBody,
        description = "The event file fields as JSON; `name`, when given, must be the one in the path"),
    responses(
        (status = 200, description = "What the apply did, and the event as it wrote it", body = ApplyDto),
        (status = 404, description = "The path names no event (an empty name)", body = ErrorBody),
        (status = 413, description = "The body is over 2 MiB", body = ErrorBody),
        (status = 422, description = "The event is not valid (the field is named)", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn apply(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(EventName { name }): Path<EventName>,
    Body(bytes): Body,
) -> ApiResult<Json<ApplyDto>> {
    let value: serde_json::Value = body::json(&bytes)?;
    let (event, applied) = events::apply_named(&state, &actor, &name, value).await?;
    Ok(Json(ApplyDto {
        result: applied.into(),
        event: event.into(),
    }))
}

/// Show one event.
#[utoipa::path(get, path = "/api/v1/events/{name}", tag = "events", operation_id = "show_event",
    params(EventName),
    responses(
        (status = 200, description = "The event", body = EventDto),
        (status = 404, description = "No such event", body = ErrorBody),
        (status = 422, description = "The name is not valid UTF-8", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn show(
    State(state): State<AppState>,
    Path(EventName { name }): Path<EventName>,
) -> ApiResult<Json<EventDto>> {
    Ok(Json(events::get(&state, &name).await?.into()))
}

/// Delete an event. Its past jobs and logs are kept.
#[utoipa::path(delete, path = "/api/v1/events/{name}", tag = "events", operation_id = "delete_event",
    params(EventName),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such event", body = ErrorBody),
        (status = 422, description = "The name is not valid UTF-8", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(EventName { name }): Path<EventName>,
) -> ApiResult<StatusCode> {
    events::delete(&state, &actor, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Run an event now, optionally with input. Returns the new job's id. 409 when the event has
/// reached its `max_executions` (it is paused then).
#[utoipa::path(post, path = "/api/v1/events/{name}/run", tag = "events", operation_id = "run_event",
    params(EventName),
    request_body(content = Option<RunBody>, description = "Optional input (no body: the event's default input)"),
    responses(
        (status = 201, description = "The new job", body = CreatedDto),
        (status = 404, description = "No such event", body = ErrorBody),
        (status = 409, description = "The event is broken, or reached its `max_executions`", body = ErrorBody),
        (status = 413, description = "The body is over 2 MiB", body = ErrorBody),
        (status = 422, description = "The body is not valid, or the event is archived", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn run(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(EventName { name }): Path<EventName>,
    Body(bytes): Body,
) -> ApiResult<(StatusCode, Json<CreatedDto>)> {
    let body: RunBody = body::optional_json(&bytes)?;
    let job = events::run(&state, &actor, &name, body.input, Trigger::Manual).await?;
    Ok((StatusCode::CREATED, Json(CreatedDto { id: job.id })))
}
