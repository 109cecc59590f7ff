//! `/api/v1/agents` (every agent, remote and embedded, with its state) and
//! `/api/v1/agent-tokens` (the tokens that open the agent API, `api/agent.rs`, and nothing
//! else). An agent token's value is shown once, in the creation response; only its SHA-256 is
//! stored.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use cronium_core::clock::{now_ms, rfc3339};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::body;
use super::error::{ApiResult, ErrorBody};
use super::extract::{Body, Path};
use crate::state::AppState;
use crate::usecases::Actor;

/// An agent: a `cronium agent` process, or a server's embedded agent.
#[derive(Serialize, ToSchema)]
pub struct AgentDto {
    pub name: String,
    /// The lease owner of its claims (`jobs.lease_owner`).
    pub worker: String,
    pub version: String,
    pub tags: Vec<String>,
    /// What it can run: `local`, `container`, `ssh`.
    pub capabilities: Vec<String>,
    pub concurrency: i64,
    pub embedded: bool,
    /// `connected` (a heartbeat within the last 30 s), `unreachable`, or `stopped`.
    pub state: String,
    pub started_at: String,
    pub last_heartbeat_at: String,
    #[schema(nullable)]
    pub stopped_at: Option<String>,
    pub running_jobs: i64,
}

impl AgentDto {
    fn from_row(a: cronium_store::AgentRow, now: i64) -> Self {
        let state = crate::usecases::agents::state_of(&a, now);
        AgentDto {
            name: a.name,
            worker: a.worker,
            version: a.version,
            tags: a.tags,
            capabilities: a.capabilities,
            concurrency: a.concurrency,
            embedded: a.embedded,
            state: state.into(),
            started_at: rfc3339(a.started_at),
            last_heartbeat_at: rfc3339(a.last_heartbeat_at),
            stopped_at: a.stopped_at.map(rfc3339),
            running_jobs: a.running_jobs,
        }
    }
}

/// An agent token (never its value, except in the creation response).
#[derive(Serialize, ToSchema)]
pub struct AgentTokenDto {
    pub id: i64,
    pub name: String,
    pub created_at: String,
    #[schema(nullable)]
    pub last_used_at: Option<String>,
    #[schema(nullable)]
    pub revoked_at: Option<String>,
    /// The token itself: only in the answer of its creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl From<cronium_store::AgentTokenRow> for AgentTokenDto {
    fn from(t: cronium_store::AgentTokenRow) -> Self {
        AgentTokenDto {
            id: t.id,
            name: t.name,
            created_at: rfc3339(t.created_at),
            last_used_at: t.last_used_at.map(rfc3339),
            revoked_at: t.revoked_at.map(rfc3339),
            token: None,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentTokenBody {
    /// A name for the token (unique).
    #[schema(schema_with = cronium_core::spec_schema::name)]
    pub name: String,
}

/// An agent token, by name.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct AgentTokenName {
    /// The token's name.
    #[param(schema_with = cronium_core::spec_schema::name, example = "edge-eu")]
    pub name: String,
}

/// Every agent that registered, remote and embedded, with its state and running jobs.
#[utoipa::path(get, path = "/api/v1/agents", tag = "agents", operation_id = "list_agents",
    responses((status = 200, description = "The agents, by name", body = [AgentDto])),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<AgentDto>>> {
    let now = now_ms();
    Ok(Json(
        crate::usecases::agents::list(&state)
            .await?
            .into_iter()
            .map(|a| AgentDto::from_row(a, now))
            .collect(),
    ))
}

/// The agent tokens, revoked ones included (never their values).
#[utoipa::path(get, path = "/api/v1/agent-tokens", tag = "agents", operation_id = "list_agent_tokens",
    responses((status = 200, description = "The agent tokens", body = [AgentTokenDto])),
    security(("bearer" = [])))]
pub async fn list_tokens(State(state): State<AppState>) -> ApiResult<Json<Vec<AgentTokenDto>>> {
    Ok(Json(
        crate::usecases::agents::list_tokens(&state)
            .await?
            .into_iter()
            .map(AgentTokenDto::from)
            .collect(),
    ))
}

/// Create an agent token: good for the agent API (`/api/v1/agent/...`) only. The answer holds
/// its value, shown only this once.
#[utoipa::path(post, path = "/api/v1/agent-tokens", tag = "agents", operation_id = "create_agent_token",
    request_body = AgentTokenBody,
    responses(
        (status = 201, description = "The token, with its value (`token`) shown this once", body = AgentTokenDto),
        (status = 409, description = "A token of that name exists (revoked ones keep their names)", body = ErrorBody),
        (status = 413, description = "The body is over 2 MiB", body = ErrorBody),
        (status = 422, description = "The body is not valid (the field is named)", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn create_token(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Body(bytes): Body,
) -> ApiResult<(StatusCode, Json<AgentTokenDto>)> {
    let b: AgentTokenBody = body::json(&bytes)?;
    let (row, token) = crate::usecases::agents::create_token(&state, &actor, &b.name).await?;
    let mut dto = AgentTokenDto::from(row);
    dto.token = Some(token);
    Ok((StatusCode::CREATED, Json(dto)))
}

/// Revoke an agent token: the agents using it are refused from their next call.
#[utoipa::path(delete, path = "/api/v1/agent-tokens/{name}", tag = "agents", operation_id = "revoke_agent_token",
    params(AgentTokenName),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such token, or already revoked", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn revoke_token(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(AgentTokenName { name }): Path<AgentTokenName>,
) -> ApiResult<StatusCode> {
    crate::usecases::agents::revoke_token(&state, &actor, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
