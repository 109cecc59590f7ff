//! `GET/POST /tokens`: API tokens. A new token's value is shown once, on the page that
//! answers its creation, and never again (only its hash is stored).

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use serde::Deserialize;

use super::error::UiResult;
use super::session::Session;
use super::{format, render, Ctx};
use crate::state::AppState;
use crate::usecases::tokens as uc;
use crate::usecases::UseCaseError;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/tokens", get(list).post(create))
        .route("/tokens/{id}/revoke", post(revoke))
}

pub struct TokenItem {
    pub id: i64,
    pub name: String,
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
    let tokens = uc::list(state)
        .await?
        .into_iter()
        .map(|t| TokenItem {
            id: t.id,
            name: t.name,
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
}

pub async fn create(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Form(f): Form<CreateForm>,
) -> UiResult<Response> {
    match uc::create(&state, &f.name, session.user_id).await {
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

pub async fn revoke(State(state): State<AppState>, Path(id): Path<i64>) -> UiResult<Response> {
    uc::revoke(&state, id).await?;
    Ok(Redirect::to("/tokens").into_response())
}
