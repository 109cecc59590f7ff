//! `GET/POST /tokens`: API tokens (one's own; an admin sees everyone's). A new token's value is
//! shown once, on the page that answers its creation, and never again (only its hash is
//! stored). Every user may manage their own tokens (`usecases::tokens` has the rules).

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
use crate::usecases::tokens as uc;
use crate::usecases::{Actor, UseCaseError};

pub fn routes() -> Routes<AppState> {
    Routes::new()
        .route(
            "/tokens",
            get(Role::Viewer, list).post(Role::Viewer, create),
        )
        .route("/tokens/{id}/revoke", post(Role::Viewer, revoke))
}

pub struct TokenItem {
    pub id: i64,
    pub name: String,
    pub user: String,
    /// The narrowed role, or empty.
    pub role: String,
    pub expires: String,
    pub expired: bool,
    pub created: String,
    pub last_used: String,
    pub revoked: String,
}

#[derive(Template)]
#[template(path = "tokens.html")]
struct TokensPage {
    ctx: Ctx,
    tokens: Vec<TokenItem>,
    /// The value of the token just created: shown this once.
    created: Option<(String, String)>,
    error: Option<String>,
}

async fn page(
    state: &AppState,
    session: &Session,
    created: Option<(String, String)>,
    error: Option<String>,
) -> UiResult<TokensPage> {
    let now = cronium_core::clock::now_ms();
    let tokens = uc::list(state, &session.actor())
        .await?
        .into_iter()
        .map(|t| TokenItem {
            id: t.id,
            name: t.name,
            user: t.username,
            role: t.role.map(|r| r.to_string()).unwrap_or_default(),
            expires: format::ts(t.expires_at),
            expired: t.expires_at.is_some_and(|e| e <= now),
            created: format::ts(Some(t.created_at)),
            last_used: format::ts(t.last_used_at),
            revoked: format::ts(t.revoked_at),
        })
        .collect();
    Ok(TokensPage {
        ctx: Ctx::new(session, "tokens"),
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
    /// Empty: the user's role.
    #[serde(default)]
    role: String,
    /// Empty: no expiry.
    #[serde(default)]
    expires_in: String,
}

pub async fn create(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Form(f): Form<CreateForm>,
) -> UiResult<Response> {
    let role = match f.role.trim() {
        "" => None,
        r => match r.parse::<Role>() {
            Ok(r) => Some(r),
            Err(e) => {
                let p = page(&state, &session, None, Some(format!("role: {e}"))).await?;
                return Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&p)).into_response());
            }
        },
    };
    let create = uc::Create {
        name: f.name,
        role,
        expires_in: Some(f.expires_in).filter(|e| !e.trim().is_empty()),
        user: None,
    };
    match uc::create(&state, &session.actor(), create).await {
        Ok((row, token)) => {
            let p = page(&state, &session, Some((row.name, token)), None).await?;
            Ok((StatusCode::CREATED, render(&p)).into_response())
        }
        Err(e @ UseCaseError::Invalid { .. }) => {
            let p = page(&state, &session, None, Some(e.to_string())).await?;
            Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&p)).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn revoke(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<i64>,
) -> UiResult<Response> {
    uc::revoke(&state, &actor, id).await?;
    Ok(Redirect::to("/tokens").into_response())
}
