//! `/api/v1/events`: create, apply (create or update by name), list, show, delete, run now.
//!
//! A write answers with the row its own transaction wrote (never a re-read, which concurrent
//! writers could have changed in between), and the event's status is the `events.status`
//! column, never a copy inside the spec.

use super::doc::EventApplyBody;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use cronium_core::clock::now_ms;
use cronium_core::spec::{self, EventSpec, EventStatus, Target};
use cronium_model::Trigger;
use cronium_store::{Applied, EventRow};

use super::body;
use super::dto::{ApplyDto, CreatedDto, EventDto, RunBody};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{Body, Path};
use super::params::EventName;
use crate::state::AppState;
use crate::{runs, scheduler};

fn parse_spec(bytes: &Bytes) -> ApiResult<EventSpec> {
    let text = std::str::from_utf8(bytes).map_err(|_| ApiError::bad("(body)", "not UTF-8"))?;
    Ok(spec::parse_json(text)?)
}

/// Checks what depends on this installation: servers named by the target exist, container
/// limits are within the configured maximums.
async fn validate_target(state: &AppState, spec: &EventSpec) -> ApiResult<()> {
    match &spec.target {
        Target::Local => Ok(()),
        Target::Servers(t) => {
            let known = state.store.list_servers().await?;
            if let Some(missing) = t
                .servers
                .iter()
                .find(|n| !known.iter().any(|s| &s.name == *n))
            {
                return Err(ApiError::bad(
                    "target.servers",
                    format!("unknown server `{missing}` (register it with `cronium server add`)"),
                ));
            }
            Ok(())
        }
        Target::Container(c) => {
            if let Some(docker) = &state.docker {
                docker
                    .check_limits(&cronium_agent::targets::container_spec(c))
                    .map_err(|e| {
                        ApiError::bad(format!("target.container.{}", e.field()), e.to_string())
                    })?;
            }
            Ok(())
        }
    }
}

pub(crate) async fn find(state: &AppState, name: &str) -> ApiResult<EventRow> {
    state
        .store
        .get_event_by_name(name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("event `{name}` not found")))
}

/// List events.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", operation_id = "list_events",
    responses((status = 200, description = "Every event, by name", body = [EventDto])),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<EventDto>>> {
    let events = state.store.list_events().await?;
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
    Body(bytes): Body,
) -> ApiResult<(StatusCode, Json<EventDto>)> {
    let spec = parse_spec(&bytes)?;
    validate_target(&state, &spec).await?;
    let mut event = state
        .store
        .create_event_with_policy(
            &spec.name,
            spec.status,
            &spec.to_value(),
            &spec.policy(),
            now_ms(),
        )
        .await?;
    event.next_fire_at = scheduler::reschedule(&state, &event).await?;
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
    Path(EventName { name }): Path<EventName>,
    Body(bytes): Body,
) -> ApiResult<Json<ApplyDto>> {
    let mut value: serde_json::Value = body::json(&bytes)?;
    match value.get("name") {
        None => {
            if let Some(obj) = value.as_object_mut() {
                obj.insert("name".into(), serde_json::Value::String(name.clone()));
            }
        }
        Some(n) if n.as_str() == Some(name.as_str()) => {}
        Some(_) => {
            return Err(ApiError::bad(
                "name",
                format!("does not match the URL (`{name}`)"),
            ))
        }
    }
    let spec = spec::from_value(value)?;
    validate_target(&state, &spec).await?;
    let (mut event, applied) = state
        .store
        .apply_event_with_policy(
            &spec.name,
            spec.status,
            &spec.to_value(),
            &spec.policy(),
            now_ms(),
        )
        .await?;
    if applied != Applied::Unchanged {
        event.next_fire_at = scheduler::reschedule(&state, &event).await?;
    }
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
    Ok(Json(find(&state, &name).await?.into()))
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
    Path(EventName { name }): Path<EventName>,
) -> ApiResult<StatusCode> {
    let event = find(&state, &name).await?;
    state.store.delete_event(event.id).await?;
    state.scheduler_wake.notify_one();
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
    Path(EventName { name }): Path<EventName>,
    Body(bytes): Body,
) -> ApiResult<(StatusCode, Json<CreatedDto>)> {
    let body: RunBody = body::optional_json(&bytes)?;
    let event = find(&state, &name).await?;
    if event.status == EventStatus::Archived {
        return Err(ApiError::bad(
            "status",
            format!("event `{name}` is archived"),
        ));
    }
    // A broken event (its stored spec no longer parses) is the event's state, not a server fault.
    let spec = spec::from_value(event.spec.clone()).map_err(|e| ApiError::Conflict {
        field: Some("spec".into()),
        message: format!(
            "event `{name}` is broken ({}); apply a valid version",
            event.broken.clone().unwrap_or_else(|| e.to_string())
        ),
    })?;
    let now = now_ms();
    let job = runs::new_job(&event, &spec, Trigger::Manual, body.input, now, None);
    // The limit check, the insert and the pause at the limit are one store transaction.
    let job = state.store.enqueue(&job, now).await?;
    state.agent_wake.notify_one();
    Ok((StatusCode::CREATED, Json(CreatedDto { id: job.id })))
}
