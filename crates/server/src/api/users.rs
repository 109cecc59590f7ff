//! `/api/v1/users`: accounts (admin only, except one's own password).

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};

use super::body;
use super::dto::{PasswordBody, UserBody, UserDto, UserPatch};
use super::error::{ApiResult, ErrorBody};
use super::extract::{Body, Path};
use super::params::UserName;
use crate::state::AppState;
use crate::usecases::{users, Actor};

/// List users.
#[utoipa::path(get, path = "/api/v1/users", tag = "users", operation_id = "list_users",
    responses((status = 200, description = "Every user, by name", body = [UserDto])),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<UserDto>>> {
    Ok(Json(
        users::list(&state)
            .await?
            .into_iter()
            .map(UserDto::from)
            .collect(),
    ))
}

/// Add a user with a role and a password.
#[utoipa::path(post, path = "/api/v1/users", tag = "users", operation_id = "add_user",
    request_body = UserBody,
    responses(
        (status = 201, description = "The user", body = UserDto),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 413, description = "The body is over 2 MiB", body = ErrorBody),
        (status = 422, description = "The body is not valid (the field is named)", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn add(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Body(bytes): Body,
) -> ApiResult<(StatusCode, Json<UserDto>)> {
    let b: UserBody = body::json(&bytes)?;
    let u = users::add(&state, &actor, &b.name, b.role, &b.password).await?;
    Ok((StatusCode::CREATED, Json(UserDto::from(u))))
}

/// One user.
#[utoipa::path(get, path = "/api/v1/users/{name}", tag = "users", operation_id = "show_user",
    params(UserName),
    responses(
        (status = 200, description = "The user", body = UserDto),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 422, description = "The name is not valid", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn show(
    State(state): State<AppState>,
    Path(UserName { name }): Path<UserName>,
) -> ApiResult<Json<UserDto>> {
    Ok(Json(UserDto::from(users::get(&state, &name).await?)))
}

/// Change a user's role, or disable or enable it. Disabling ends its sessions and stops its
/// tokens at once.
#[utoipa::path(patch, path = "/api/v1/users/{name}", tag = "users", operation_id = "update_user",
    params(UserName),
    request_body = UserPatch,
    responses(
        (status = 200, description = "The user as changed", body = UserDto),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 409, description = "The change would leave no enabled admin", body = ErrorBody),
        (status = 413, description = "The body is over 2 MiB", body = ErrorBody),
        (status = 422, description = "The body is not valid (the field is named)", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(UserName { name }): Path<UserName>,
    Body(bytes): Body,
) -> ApiResult<Json<UserDto>> {
    let b: UserPatch = body::json(&bytes)?;
    let u = users::update(
        &state,
        &actor,
        &name,
        users::Change {
            role: b.role,
            disabled: b.disabled,
        },
    )
    .await?;
    Ok(Json(UserDto::from(u)))
}

/// Set a user's password (one's own, or anyone's for an admin); the user's sessions end.
#[utoipa::path(put, path = "/api/v1/users/{name}/password", tag = "users",
    operation_id = "set_user_password",
    params(UserName),
    request_body = PasswordBody,
    responses(
        (status = 204, description = "Set"),
        (status = 403, description = "Another user's password, and the token is not an admin's", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 413, description = "The body is over 2 MiB", body = ErrorBody),
        (status = 422, description = "The body is not valid (the field is named)", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn set_password(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(UserName { name }): Path<UserName>,
    Body(bytes): Body,
) -> ApiResult<StatusCode> {
    let b: PasswordBody = body::json(&bytes)?;
    users::set_password(&state, &actor, &name, &b.password).await?;
    Ok(StatusCode::NO_CONTENT)
}
