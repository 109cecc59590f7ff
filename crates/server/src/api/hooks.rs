//! Webhooks: `POST /hooks/{name}` (public: authenticated by the request's signature alone, see
//! `usecases::hooks`), and under `/api/v1` (with a token) each hook's URL and secret, shown
//! once, and its rotation.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use cronium_store::HookKind;

use super::dto::{HookDto, HookStartedDto};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{Body, Path};
use super::params::{EventName, HookName, WorkflowName};
use crate::signature;
use crate::state::AppState;
use crate::usecases::hooks::{self, Delivery, HookError, Started};
use crate::usecases::Actor;

/// Largest webhook body.
pub const MAX_HOOK_BODY: usize = 1024 * 1024;

impl From<HookError> for ApiError {
    fn from(e: HookError) -> Self {
        match e {
            // Unknown and not enabled are one answer: the route says nothing more.
            HookError::NotFound => ApiError::NotFound("no such hook".into()),
            e @ (HookError::Signature(_) | HookError::Replayed) => {
                ApiError::BadSignature(e.to_string())
            }
            HookError::BadBody(m) => ApiError::Malformed(format!("body: {m}")),
            HookError::NotActive(m) => ApiError::Conflict {
                field: Some("status".into()),
                message: m,
            },
            HookError::UseCase(e) => e.into(),
        }
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Start a run of the event (else the workflow) `name` from a signed request. The body (a
/// JSON object, at most 1 MiB; GitHub's whole payload) becomes the run's input. Sign with
/// `X-Cronium-Timestamp: UNIX_SECONDS` and `X-Cronium-Signature: sha256=HEX(HMAC-SHA256(secret,
/// "{timestamp}.{body}"))`, the timestamp within 5 minutes; or GitHub's `X-Hub-Signature-256:
/// sha256=HEX(HMAC-SHA256(secret, body))` with `X-GitHub-Delivery`. A signature (or delivery
/// id) is accepted once. Nothing runs on any error.
#[utoipa::path(post, path = "/hooks/{name}", tag = "hooks", operation_id = "receive_hook",
    params(HookName,
        ("X-Cronium-Timestamp" = Option<String>, Header, description = "Unix seconds, signed with the body"),
        ("X-Cronium-Signature" = Option<String>, Header, description = "sha256=HEX(HMAC-SHA256(secret, \"{timestamp}.{body}\"))"),
        ("X-Hub-Signature-256" = Option<String>, Header, description = "GitHub's: sha256=HEX(HMAC-SHA256(secret, body))"),
        ("X-GitHub-Delivery" = Option<String>, Header, description = "GitHub's delivery id: the replay key with X-Hub-Signature-256"),
    ),
    request_body(content = Object, description = "Any JSON object: the run's input", content_type = "application/json"),
    responses(
        (status = 202, description = "Started: the job (an event's hook) or the workflow run", body = HookStartedDto),
        (status = 400, description = "The body is not a JSON object", body = ErrorBody),
        (status = 401, description = "The signature is missing, wrong, stale or was seen before", body = ErrorBody),
        (status = 404, description = "No such hook, or its webhook is not enabled", body = ErrorBody),
        (status = 409, description = "The event or workflow is paused (or draft, or archived), or reached its limit", body = ErrorBody),
        (status = 413, description = "The body is over 1 MiB", body = ErrorBody),
        (status = 422, description = "The path is not valid, or the run was refused (archived)", body = ErrorBody),
        (status = 500, description = "The server failed (details in its log)", body = ErrorBody),
    ),
    security(()))]
pub async fn receive(
    State(state): State<AppState>,
    Path(HookName { name }): Path<HookName>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Body(bytes): Body,
) -> ApiResult<(StatusCode, Json<HookStartedDto>)> {
    let delivery = Delivery {
        timestamp: header(&headers, signature::TIMESTAMP_HEADER),
        signature: header(&headers, signature::SIGNATURE_HEADER),
        github_signature: header(&headers, signature::GITHUB_SIGNATURE_HEADER),
        github_delivery: header(&headers, signature::GITHUB_DELIVERY_HEADER),
        body: &bytes,
    };
    let started = hooks::receive(
        &state,
        &name,
        &delivery,
        peer.map(|Extension(ConnectInfo(a))| a.ip().to_string()),
    )
    .await?;
    let dto = match started {
        Started::Job(job) => HookStartedDto {
            job_id: Some(job.id),
            workflow_run_id: None,
        },
        Started::Run(run) => HookStartedDto {
            job_id: None,
            workflow_run_id: Some(run.id),
        },
    };
    Ok((StatusCode::ACCEPTED, Json(dto)))
}

/// An event's webhook: its URL, and its secret the first time it is asked for (null after).
#[utoipa::path(get, path = "/api/v1/events/{name}/hook", tag = "hooks", operation_id = "show_event_hook",
    params(EventName),
    responses(
        (status = 200, description = "The hook", body = HookDto),
        (status = 404, description = "No such event", body = ErrorBody),
        (status = 422, description = "The name is not valid", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn show_event_hook(
    State(state): State<AppState>,
    Path(EventName { name }): Path<EventName>,
) -> ApiResult<Json<HookDto>> {
    Ok(Json(
        hooks::show(&state, HookKind::Event, &name).await?.into(),
    ))
}

/// Replace an event's webhook secret; the new one is answered this once and the old one stops
/// working at once.
#[utoipa::path(post, path = "/api/v1/events/{name}/hook/rotate", tag = "hooks", operation_id = "rotate_event_hook",
    params(EventName),
    responses(
        (status = 200, description = "The hook with its new secret", body = HookDto),
        (status = 404, description = "No such event", body = ErrorBody),
        (status = 409, description = "The event has no webhook (`webhook: true`)", body = ErrorBody),
        (status = 422, description = "The name is not valid", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn rotate_event_hook(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(EventName { name }): Path<EventName>,
) -> ApiResult<Json<HookDto>> {
    Ok(Json(
        hooks::rotate(&state, &actor, HookKind::Event, &name)
            .await?
            .into(),
    ))
}

/// A workflow's webhook: its URL, and its secret the first time it is asked for.
#[utoipa::path(get, path = "/api/v1/workflows/{name}/hook", tag = "hooks", operation_id = "show_workflow_hook",
    params(WorkflowName),
    responses(
        (status = 200, description = "The hook", body = HookDto),
        (status = 404, description = "No such workflow", body = ErrorBody),
        (status = 422, description = "The name is not valid", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn show_workflow_hook(
    State(state): State<AppState>,
    Path(WorkflowName { name }): Path<WorkflowName>,
) -> ApiResult<Json<HookDto>> {
    Ok(Json(
        hooks::show(&state, HookKind::Workflow, &name).await?.into(),
    ))
}

/// Replace a workflow's webhook secret (answered this once).
#[utoipa::path(post, path = "/api/v1/workflows/{name}/hook/rotate", tag = "hooks", operation_id = "rotate_workflow_hook",
    params(WorkflowName),
    responses(
        (status = 200, description = "The hook with its new secret", body = HookDto),
        (status = 404, description = "No such workflow", body = ErrorBody),
        (status = 409, description = "The workflow has no webhook (`webhook: true`)", body = ErrorBody),
        (status = 422, description = "The name is not valid", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn rotate_workflow_hook(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(WorkflowName { name }): Path<WorkflowName>,
) -> ApiResult<Json<HookDto>> {
    Ok(Json(
        hooks::rotate(&state, &actor, HookKind::Workflow, &name)
            .await?
            .into(),
    ))
}
