//! `/api/v1/runners`: the runner artifacts the server registered (one per build, OS and
//! architecture) and which of them it deploys now; registering another one; pins, rollouts and
//! rollbacks; and `POST /api/v1/servers/deploy`. The rules are in `usecases::runner_versions`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use cronium_core::clock::rfc3339;
use cronium_store::{PinRow, PinScope, RolloutServerRow};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::body;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{Body, Path};
use crate::state::AppState;
use crate::usecases::runner_versions as rv;
use crate::usecases::Actor;

#[derive(Serialize, ToSchema)]
pub struct RunnerArtifactDto {
    /// As `cronium-runner --version` prints it.
    pub version: String,
    /// `linux`.
    pub os: String,
    /// `x86_64`, `aarch64`.
    pub arch: String,
    pub sha256: String,
    pub size_bytes: i64,
    /// The file on this server.
    pub path: String,
    /// First registered.
    #[schema(format = DateTime)]
    pub added_at: String,
    /// Last found at a server start.
    #[schema(format = DateTime)]
    pub seen_at: String,
    /// Deployed to servers of its platform now (found at this start); older builds are
    /// listed, not deployed.
    pub active: bool,
}

/// List runner artifacts.
#[utoipa::path(get, path = "/api/v1/runners", tag = "runners", operation_id = "list_runners",
    responses((status = 200, description = "Every registered runner, by OS and architecture, newest first", body = [RunnerArtifactDto])),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<RunnerArtifactDto>>> {
    let active: Vec<(String, String)> = state
        .ssh
        .as_ref()
        .map(|s| {
            s.runners()
                .iter()
                .map(|r| (r.sha256.clone(), r.platform.arch.clone()))
                .collect()
        })
        .unwrap_or_default();
    let rows = state.store.list_artifacts().await?;
    Ok(Json(
        rows.into_iter()
            .map(|a| RunnerArtifactDto {
                active: active.contains(&(a.sha256.clone(), a.arch.clone())),
                version: a.version,
                os: a.os,
                arch: a.arch,
                sha256: a.sha256,
                size_bytes: a.size,
                path: a.path,
                added_at: rfc3339(a.added_at),
                seen_at: rfc3339(a.seen_at),
            })
            .collect(),
    ))
}

fn artifact_dto(state: &AppState, a: cronium_store::ArtifactRow) -> RunnerArtifactDto {
    let active = state.ssh.as_ref().is_some_and(|s| {
        s.runners()
            .iter()
            .any(|r| r.sha256 == a.sha256 && r.platform.arch == a.arch)
    });
    RunnerArtifactDto {
        active,
        version: a.version,
        os: a.os,
        arch: a.arch,
        sha256: a.sha256,
        size_bytes: a.size,
        path: a.path,
        added_at: rfc3339(a.added_at),
        seen_at: rfc3339(a.seen_at),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"path": "/opt/cronium/runners/0.2.0/cronium-runner"}))]
pub struct AddRunnerBody {
    /// An absolute path on the Cronium server's file system. Its version comes from
    /// `PATH --version` when it runs there, else from the `cronium-runner.json` manifest beside
    /// it; it is copied into the data directory.
    pub path: String,
}

/// Register another runner binary.
#[utoipa::path(post, path = "/api/v1/runners", tag = "runners", operation_id = "add_runner",
    request_body = AddRunnerBody,
    responses(
        (status = 201, description = "The runner as registered (deployable at once)", body = RunnerArtifactDto),
        (status = 409, description = "Another build of that version and platform is registered", body = ErrorBody),
        (status = 422, description = "The path is not a runner binary whose version can be read", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn add(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Body(bytes): Body,
) -> ApiResult<(StatusCode, Json<RunnerArtifactDto>)> {
    let b: AddRunnerBody = body::json(&bytes)?;
    let row = rv::add_artifact(&state, &actor, &b.path).await?;
    Ok((StatusCode::CREATED, Json(artifact_dto(&state, row))))
}

#[derive(Serialize, ToSchema)]
pub struct PinDto {
    /// The pinned server, or null for a tag pin.
    #[schema(required)]
    pub server: Option<String>,
    /// The pinned tag, or null for a server pin.
    #[schema(required)]
    pub tag: Option<String>,
    pub version: String,
    #[schema(format = DateTime)]
    pub set_at: String,
    /// A user, or `rollout N`.
    pub set_by: String,
}

fn pin_dto(p: PinRow) -> PinDto {
    let (server, tag) = match p.scope {
        PinScope::Server(_) => (p.server_name, None),
        PinScope::Tag(t) => (None, Some(t)),
    };
    PinDto {
        server,
        tag,
        version: p.version,
        set_at: rfc3339(p.set_at),
        set_by: p.set_by,
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"version": "0.2.0", "tag": "web"}))]
pub struct PinBody {
    pub version: String,
    /// The server to pin; either this or `tag`.
    #[serde(default)]
    pub server: Option<String>,
    /// The tag to pin (every server with it that has no pin of its own); either this or
    /// `server`.
    #[serde(default)]
    pub tag: Option<String>,
}

fn target_of(server: Option<String>, tag: Option<String>) -> Result<rv::PinTarget, ApiError> {
    match (server, tag) {
        (Some(s), None) => Ok(rv::PinTarget::Server(s)),
        (None, Some(t)) => Ok(rv::PinTarget::Tag(t)),
        (Some(_), Some(_)) => Err(ApiError::bad("tag", "give either server or tag, not both")),
        (None, None) => Err(ApiError::bad("server", "a server or a tag is required")),
    }
}

/// List runner pins.
#[utoipa::path(get, path = "/api/v1/runners/pins", tag = "runners", operation_id = "list_runner_pins",
    responses((status = 200, description = "Every pin: server pins, then tag pins", body = [PinDto])),
    security(("bearer" = [])))]
pub async fn list_pins(State(state): State<AppState>) -> ApiResult<Json<Vec<PinDto>>> {
    Ok(Json(
        rv::list_pins(&state)
            .await?
            .into_iter()
            .map(pin_dto)
            .collect(),
    ))
}

/// Pin a server or a tag to a runner version.
#[utoipa::path(post, path = "/api/v1/runners/pins", tag = "runners", operation_id = "set_runner_pin",
    request_body = PinBody,
    responses(
        (status = 200, description = "The pin as set", body = PinDto),
        (status = 404, description = "No such server", body = ErrorBody),
        (status = 422, description = "No runner of that version for a platform concerned (named), an unknown tag, a bad body", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn set_pin(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Body(bytes): Body,
) -> ApiResult<Json<PinDto>> {
    let b: PinBody = body::json(&bytes)?;
    let target = target_of(b.server, b.tag)?;
    Ok(Json(pin_dto(
        rv::pin(&state, &actor, target, &b.version).await?,
    )))
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct UnpinBody {
    #[serde(default)]
    pub server: Option<String>,
    #[serde(default)]
    pub tag: Option<String>,
}

/// Remove a server's or a tag's pin.
#[utoipa::path(post, path = "/api/v1/runners/pins/remove", tag = "runners", operation_id = "remove_runner_pin",
    request_body = UnpinBody,
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such server, or no pin", body = ErrorBody),
        (status = 422, description = "Neither or both of server and tag", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn remove_pin(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Body(bytes): Body,
) -> ApiResult<StatusCode> {
    let b: UnpinBody = body::json(&bytes)?;
    rv::unpin(&state, &actor, target_of(b.server, b.tag)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"version": "0.2.0", "tag": "web", "batch": "10%", "pause": "30s"}))]
pub struct RolloutBody {
    pub version: String,
    /// The servers of this tag; every server when absent.
    #[serde(default)]
    pub tag: Option<String>,
    /// Servers per batch: a count (`2`, at least 1) or a share (`10%`, 1 to 100 %). Default `10%`.
    #[serde(default)]
    pub batch: Option<BatchValue>,
    /// The wait between batches (`30s`, `2m`, `0s`). Default `30s`.
    #[serde(default)]
    pub pause: Option<String>,
}

/// A batch size as JSON: `2` or `"2"` or `"10%"`.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum BatchValue {
    Count(i64),
    Text(String),
}

#[derive(Serialize, ToSchema)]
pub struct RolloutServerDto {
    pub server: String,
    /// 1-based.
    pub batch: i64,
    /// `pending`, `upgraded`, `failed`, `reverted` (its batch failed: back on
    /// `previous_version`), `rolled_back`.
    pub status: String,
    pub previous_version: String,
    #[schema(required)]
    pub error: Option<String>,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct RolloutDto {
    pub id: i64,
    pub version: String,
    #[schema(required)]
    pub tag: Option<String>,
    pub batch: String,
    pub pause_ms: i64,
    /// `running`, `succeeded`, `failed` (stopped at a failed batch, or interrupted by a
    /// restart), `rolled_back`.
    pub status: String,
    #[schema(required)]
    pub error: Option<String>,
    pub created_by: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime, required)]
    pub finished_at: Option<String>,
    #[schema(format = DateTime, required)]
    pub rolled_back_at: Option<String>,
    /// Only in the answer for one rollout, by batch and name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub servers: Option<Vec<RolloutServerDto>>,
}

fn rollout_dto(r: cronium_store::RolloutRow, servers: Option<Vec<RolloutServerRow>>) -> RolloutDto {
    RolloutDto {
        id: r.id,
        version: r.version,
        tag: r.tag,
        batch: r.batch,
        pause_ms: r.pause_ms,
        status: r.status,
        error: r.error,
        created_by: r.created_by,
        created_at: rfc3339(r.created_at),
        finished_at: r.finished_at.map(rfc3339),
        rolled_back_at: r.rolled_back_at.map(rfc3339),
        servers: servers.map(|v| {
            v.into_iter()
                .map(|s| RolloutServerDto {
                    server: s.server_name,
                    batch: s.batch,
                    status: s.status,
                    previous_version: s.previous_version,
                    error: s.error,
                    updated_at: rfc3339(s.updated_at),
                })
                .collect()
        }),
    }
}

/// A rollout id in the path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RolloutId {
    pub id: i64,
}

/// Start a rollout.
#[utoipa::path(post, path = "/api/v1/runners/rollouts", tag = "runners", operation_id = "start_rollout",
    request_body = RolloutBody,
    responses(
        (status = 202, description = "Started: follow it with `GET /api/v1/runners/rollouts/{id}`", body = RolloutDto),
        (status = 409, description = "A server is in another running rollout (named)", body = ErrorBody),
        (status = 422, description = "A bad batch or pause, an unknown tag, no runner of that version for a platform concerned", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn start_rollout(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Body(bytes): Body,
) -> ApiResult<(StatusCode, Json<RolloutDto>)> {
    let b: RolloutBody = body::json(&bytes)?;
    let batch = match b.batch {
        None => "10%".to_string(),
        Some(BatchValue::Count(n)) => n.to_string(),
        Some(BatchValue::Text(t)) => t,
    };
    let d = rv::start_rollout(
        &state,
        &actor,
        rv::RolloutRequest {
            version: b.version,
            tag: b.tag,
            batch,
            pause: b.pause.unwrap_or_else(|| "30s".into()),
        },
    )
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(rollout_dto(d.rollout, Some(d.servers))),
    ))
}

/// List rollouts.
#[utoipa::path(get, path = "/api/v1/runners/rollouts", tag = "runners", operation_id = "list_rollouts",
    responses((status = 200, description = "The last 100 rollouts, newest first (without servers)", body = [RolloutDto])),
    security(("bearer" = [])))]
pub async fn list_rollouts(State(state): State<AppState>) -> ApiResult<Json<Vec<RolloutDto>>> {
    Ok(Json(
        rv::list_rollouts(&state)
            .await?
            .into_iter()
            .map(|r| rollout_dto(r, None))
            .collect(),
    ))
}

/// Show a rollout with its servers.
#[utoipa::path(get, path = "/api/v1/runners/rollouts/{id}", tag = "runners", operation_id = "show_rollout",
    params(RolloutId),
    responses(
        (status = 200, description = "The rollout with `servers`", body = RolloutDto),
        (status = 404, description = "No such rollout", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn show_rollout(
    State(state): State<AppState>,
    Path(RolloutId { id }): Path<RolloutId>,
) -> ApiResult<Json<RolloutDto>> {
    let d = rv::get_rollout(&state, id).await?;
    Ok(Json(rollout_dto(d.rollout, Some(d.servers))))
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    /// The rollout to roll back; default: the latest (of `tag`, when given).
    #[serde(default)]
    pub rollout: Option<i64>,
    #[serde(default)]
    pub tag: Option<String>,
}

/// Roll a rollout back.
#[utoipa::path(post, path = "/api/v1/runners/rollback", tag = "runners", operation_id = "rollback_rollout",
    request_body = RollbackBody,
    responses(
        (status = 200, description = "Rolled back: each server it upgraded is on its previous version", body = RolloutDto),
        (status = 404, description = "No such rollout", body = ErrorBody),
        (status = 409, description = "Still running, already rolled back, or a server could not return (named)", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn rollback(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Body(bytes): Body,
) -> ApiResult<Json<RolloutDto>> {
    let b: RollbackBody = body::optional_json(&bytes)?;
    let d = rv::rollback(&state, &actor, b.rollout, b.tag).await?;
    Ok(Json(rollout_dto(d.rollout, Some(d.servers))))
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"tag": "web"}))]
pub struct DeployBody {
    /// Servers by name; with `tag`, the union. Neither: every server.
    #[serde(default)]
    pub servers: Vec<String>,
    #[serde(default)]
    pub tag: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DeployLineDto {
    pub server: String,
    /// `linux/x86_64`, or `unknown` when the host could not be asked.
    pub platform: String,
    pub version: String,
    /// `deployed`, `verified`, `cached` or `failed`.
    pub outcome: String,
    pub duration_ms: u64,
    #[schema(required)]
    pub error: Option<String>,
}

/// Pre-deploy servers' runners.
#[utoipa::path(post, path = "/api/v1/servers/deploy", tag = "servers", operation_id = "deploy_servers",
    request_body = DeployBody,
    responses(
        (status = 200, description = "One line per server, by name (a failed one says why)", body = [DeployLineDto]),
        (status = 404, description = "No such server", body = ErrorBody),
        (status = 422, description = "An unknown tag, a bad body", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn deploy(
    State(state): State<AppState>,
    Body(bytes): Body,
) -> ApiResult<Json<Vec<DeployLineDto>>> {
    let b: DeployBody = body::optional_json(&bytes)?;
    let lines = rv::deploy(&state, &b.servers, b.tag.as_deref()).await?;
    Ok(Json(
        lines
            .into_iter()
            .map(|l| DeployLineDto {
                server: l.server,
                platform: l.platform,
                version: l.version,
                outcome: l.outcome,
                duration_ms: l.duration_ms,
                error: l.error,
            })
            .collect(),
    ))
}
