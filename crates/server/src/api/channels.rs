//! `/api/v1/channels`: notification channels (add, list, show, remove, test). The rules are
//! in `usecases::channels`; secret settings are never answered.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};

use super::body;
use super::dto::{ChannelBody, ChannelCreatedDto, ChannelDto, ChannelTestDto};
use super::error::{ApiResult, ErrorBody};
use super::extract::{Body, Path};
use super::params::ChannelName;
use crate::state::AppState;
use crate::usecases::{channels, Actor};

/// List channels with their delivery state (last success, last error, pending).
#[utoipa::path(get, path = "/api/v1/channels", tag = "channels", operation_id = "list_channels",
    responses((status = 200, description = "Every channel, by name", body = [ChannelDto])),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<ChannelDto>>> {
    let rows = channels::list(&state).await?;
    Ok(Json(rows.into_iter().map(ChannelDto::from).collect()))
}

/// Add a channel (409 when the name is taken).
#[utoipa::path(post, path = "/api/v1/channels", tag = "channels", operation_id = "create_channel",
    request_body(content = ChannelBody),
    responses(
        (status = 201, description = "The channel; `secret` once for a webhook channel given none", body = ChannelCreatedDto),
        (status = 409, description = "A channel of that name exists", body = ErrorBody),
        (status = 413, description = "The body is over 2 MiB", body = ErrorBody),
        (status = 422, description = "The channel is not valid (the field is named)", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Body(bytes): Body,
) -> ApiResult<(StatusCode, Json<ChannelCreatedDto>)> {
    let b: ChannelBody = body::json(&bytes)?;
    let (row, secret) = channels::create(&state, &actor, &b.into()).await?;
    Ok((
        StatusCode::CREATED,
        Json(ChannelCreatedDto {
            channel: row.into(),
            secret,
        }),
    ))
}

/// Show a channel.
#[utoipa::path(get, path = "/api/v1/channels/{name}", tag = "channels", operation_id = "show_channel",
    params(ChannelName),
    responses(
        (status = 200, description = "The channel", body = ChannelDto),
        (status = 404, description = "No such channel", body = ErrorBody),
        (status = 422, description = "The name is not valid", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn show(
    State(state): State<AppState>,
    Path(ChannelName { name }): Path<ChannelName>,
) -> ApiResult<Json<ChannelDto>> {
    Ok(Json(channels::get(&state, &name).await?.into()))
}

/// Remove a channel and its undelivered notifications (409 while an event or workflow names
/// it in `notify`).
#[utoipa::path(delete, path = "/api/v1/channels/{name}", tag = "channels", operation_id = "delete_channel",
    params(ChannelName),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such channel", body = ErrorBody),
        (status = 409, description = "An event or workflow still notifies it", body = ErrorBody),
        (status = 422, description = "The name is not valid", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(ChannelName { name }): Path<ChannelName>,
) -> ApiResult<StatusCode> {
    channels::delete(&state, &actor, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Send a test message now (outside the outbox); its outcome is also the channel's last
/// success or error.
#[utoipa::path(post, path = "/api/v1/channels/{name}/test", tag = "channels", operation_id = "test_channel",
    params(ChannelName),
    responses(
        (status = 200, description = "Whether it was delivered", body = ChannelTestDto),
        (status = 404, description = "No such channel", body = ErrorBody),
        (status = 422, description = "The name is not valid", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn test(
    State(state): State<AppState>,
    Path(ChannelName { name }): Path<ChannelName>,
) -> ApiResult<Json<ChannelTestDto>> {
    let error = channels::test(&state, &name).await?;
    Ok(Json(ChannelTestDto {
        delivered: error.is_none(),
        error,
    }))
}
