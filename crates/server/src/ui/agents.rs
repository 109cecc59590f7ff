//! `GET /agents`: every agent (remote `cronium agent` processes and each server's embedded one)
//! with its state, what it can run and what it runs now; for admins, the agent tokens, with
//! creation (the value shown once, on the answering page) and revocation.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::error::UiResult;
use super::session::Session;
use super::{format, render, Ctx};
use crate::authz::{get, post, Role, Routes};
use crate::state::AppState;
use crate::usecases::agents as uc;
use crate::usecases::{Actor, UseCaseError};

pub fn routes() -> Routes<AppState> {
    Routes::new()
        .route("/agents", get(Role::Viewer, list))
        .route("/agents/tokens", post(Role::Admin, create_token))
        .route(
            "/agents/tokens/{name}/revoke",
            post(Role::Admin, revoke_token),
        )
}

pub struct AgentItem {
    pub name: String,
    /// `connected`, `unreachable` or `stopped`.
    pub state: &'static str,
    pub embedded: bool,
    pub version: String,
    pub tags: String,
    pub capabilities: String,
    pub concurrency: i64,
    pub running: i64,
    pub heartbeat: String,
    pub started: String,
}

pub struct AgentTokenItem {
    pub name: String,
    pub created: String,
    pub last_used: String,
    pub revoked: String,
}

#[derive(Template)]
#[template(path = "agents.html")]
struct AgentsPage {
    ctx: Ctx,
    agents: Vec<AgentItem>,
    connected: usize,
    /// Admins only (the page shows no token section to others).
    tokens: Vec<AgentTokenItem>,
    created: Option<(String, String)>,
    error: Option<String>,
}

async fn page(
    state: &AppState,
    session: &Session,
    created: Option<(String, String)>,
    error: Option<String>,
) -> UiResult<AgentsPage> {
    let now = cronium_core::clock::now_ms();
    let agents: Vec<AgentItem> = uc::list(state)
        .await?
        .into_iter()
        .map(|a| AgentItem {
            state: uc::state_of(&a, now),
            heartbeat: format::duration(Some((now - a.last_heartbeat_at).max(0))),
            started: format::ts(Some(a.started_at)),
            name: a.name,
            embedded: a.embedded,
            version: a.version,
            tags: a.tags.join(", "),
            capabilities: a.capabilities.join(", "),
            concurrency: a.concurrency,
            running: a.running_jobs,
        })
        .collect();
    let ctx = Ctx::new(session, "agents");
    let tokens = if ctx.is_admin {
        uc::list_tokens(state)
            .await?
            .into_iter()
            .map(|t| AgentTokenItem {
                name: t.name,
                created: format::ts(Some(t.created_at)),
                last_used: format::ts(t.last_used_at),
                revoked: format::ts(t.revoked_at),
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(AgentsPage {
        connected: agents.iter().filter(|a| a.state == "connected").count(),
        ctx,
        agents,
        tokens,
        created,
        error,
    })
}

pub async fn list(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> UiResult<Response> {
    Ok(render(&page(&state, &session, None, None).await?))
}

#[derive(Deserialize)]
pub struct CreateForm {
    name: String,
}

pub async fn create_token(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Form(f): Form<CreateForm>,
) -> UiResult<Response> {
    match uc::create_token(&state, &session.actor(), &f.name).await {
        Ok((row, token)) => {
            let p = page(&state, &session, Some((row.name, token)), None).await?;
            Ok((StatusCode::CREATED, render(&p)).into_response())
        }
        Err(e @ (UseCaseError::Invalid { .. } | UseCaseError::Conflict { .. })) => {
            let p = page(&state, &session, None, Some(e.to_string())).await?;
            Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&p)).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn revoke_token(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
) -> UiResult<Response> {
    uc::revoke_token(&state, &actor, &name).await?;
    Ok(Redirect::to("/agents").into_response())
}
