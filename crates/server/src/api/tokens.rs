//! `/api/v1/tokens`: API tokens. The clear token is shown once, in the creation response.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use cronium_core::clock::now_ms;

use super::body;
use super::dto::{TokenBody, TokenDto};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{Body, Path};
use super::params::TokenId;
use super::Caller;
use crate::auth;
use crate::state::AppState;

/// List tokens (never their values).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", operation_id = "list_tokens",
    responses((status = 200, description = "Every token, revoked ones included", body = [TokenDto])),
    security(("bearer" = [])))]
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
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", operation_id = "create_token",
    request_body = TokenBody,
    responses(
        (status = 201, description = "The token, with its value (`token`) shown this once", body = TokenDto),
        (status = 413, description = "The body is over 2 MiB", body = ErrorBody),
        (status = 422, description = "The body is not valid (the field is named)", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(bytes): Body,
) -> ApiResult<(StatusCode, Json<TokenDto>)> {
    let body: TokenBody = body::json(&bytes)?;
    // Counted in characters, as the document's maxLength is.
    let name = body.name.trim();
    if name.is_empty() || body.name.chars().count() > 100 {
        return Err(ApiError::bad(
            "name",
            "must be 1 to 100 characters, not all blank",
        ));
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
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens", operation_id = "revoke_token",
    params(TokenId),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such token, or already revoked", body = ErrorBody),
        (status = 422, description = "The id is not an integer", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    Path(TokenId { id }): Path<TokenId>,
) -> ApiResult<StatusCode> {
    if state.store.revoke_token(id, now_ms()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!(
            "token {id} not found or already revoked"
        )))
    }
}
