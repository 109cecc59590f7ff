//! `/api/v1/tokens`: API tokens. The clear token is shown once, in the creation response.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};

use super::body;
use super::dto::{TokenBody, TokenDto};
use super::error::{ApiResult, ErrorBody};
use super::extract::{Body, Path};
use super::params::TokenId;
use crate::state::AppState;
use crate::usecases::{tokens, Actor};

/// List tokens (never their values): an admin's lists every user's, anyone else's their own.
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", operation_id = "list_tokens",
    responses((status = 200, description = "The tokens, revoked ones included, with owner, role, expiry and last use", body = [TokenDto])),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
) -> ApiResult<Json<Vec<TokenDto>>> {
    Ok(Json(
        tokens::list(&state, &actor)
            .await?
            .into_iter()
            .map(TokenDto::from)
            .collect(),
    ))
}

/// Create a token (for oneself, or for another user as an admin), maybe narrowed to a role and
/// with an expiry; the response holds its value, shown only this once.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", operation_id = "create_token",
    request_body = TokenBody,
    responses(
        (status = 201, description = "The token, with its value (`token`) shown this once", body = TokenDto),
        (status = 403, description = "A token for another user, and the caller is not an admin", body = ErrorBody),
        (status = 413, description = "The body is over 2 MiB", body = ErrorBody),
        (status = 422, description = "The body is not valid (the field is named)", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Body(bytes): Body,
) -> ApiResult<(StatusCode, Json<TokenDto>)> {
    let body: TokenBody = body::json(&bytes)?;
    let (row, token) = tokens::create(
        &state,
        &actor,
        tokens::Create {
            name: body.name,
            role: body.role,
            expires_in: body.expires_in,
            user: body.user,
        },
    )
    .await?;
    let mut dto = TokenDto::from(row);
    dto.token = Some(token);
    Ok((StatusCode::CREATED, Json(dto)))
}

/// Revoke a token (one's own, or anyone's as an admin); it stops working at once.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens", operation_id = "revoke_token",
    params(TokenId),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such token (of the caller's, unless an admin), or already revoked", body = ErrorBody),
        (status = 422, description = "The id is not an integer", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(TokenId { id }): Path<TokenId>,
) -> ApiResult<StatusCode> {
    tokens::revoke(&state, &actor, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
