//! `/api/v1/tokens`: API tokens. The clear token is shown once, in the creation response.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use cronium_core::clock::now_ms;

use super::body;
use super::dto::{TokenBody, TokenDto};
use super::error::{ApiError, ApiResult};
use super::Caller;
use crate::auth;
use crate::state::AppState;

/// List tokens (never their values).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens",
    responses((status = 200, body = [TokenDto])), security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<TokenDto>>> {
    Ok(Json(
        state
            .store
            .list_tokens()
            .await?
            .into_iter()
            .map(TokenDto::from)
            .collect(),
    ))
}

/// Create a token; the response holds its value, shown only this once.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = TokenBody,
    responses((status = 201, body = TokenDto), (status = 422)), security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    bytes: Bytes,
) -> ApiResult<(StatusCode, Json<TokenDto>)> {
    let body: TokenBody = body::json(&bytes)?;
    let name = body.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(ApiError::bad("name", "must be 1 to 100 characters"));
    }
    let token = auth::new_token();
    let row = state
        .store
        .create_token(name, &auth::hash_token(&token), caller.user_id, now_ms())
        .await?;
    let mut dto = TokenDto::from(row);
    dto.token = Some(token);
    Ok((StatusCode::CREATED, Json(dto)))
}

/// Revoke a token; it stops working at once.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens", params(("id" = i64, Path)),
    responses((status = 204), (status = 404)), security(("bearer" = [])))]
pub async fn revoke(State(state): State<AppState>, Path(id): Path<i64>) -> ApiResult<StatusCode> {
    if state.store.revoke_token(id, now_ms()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!(
            "token {id} not found or already revoked"
        )))
    }
}
