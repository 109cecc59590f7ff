//! `/api/v1/runners`: the runner artifacts the server registered (one per build, OS and
//! architecture), and which of them it deploys now.

use axum::extract::State;
use axum::Json;
use cronium_core::clock::rfc3339;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiResult;
use crate::state::AppState;

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
