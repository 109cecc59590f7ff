//! `/api/v1/tokens`: API tokens. The clear token is shown once, in the creation response.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};

use super::body;
use super::dto::{TokenBody, TokenDto};
use super::error::{ApiResult, ErrorBody};
use super::extract::{Body, Path};
use super::params::TokenId;
use super::Caller;
use crate::state::AppState;
use crate::usecases::tokens;

/// List tokens (never their values).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", operation_id = "list_tokens",
    responses((status = 200, description = "Every token, revoked ones included", body = [TokenDto])),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<TokenDto>>> {
    Ok(Json(
        tokens::list(&state)
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
    let (row, token) = tokens::create(&state, &body.name, caller.user_id).await?;
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
    tokens::revoke(&state, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
