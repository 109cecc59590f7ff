//! `POST /api/v1/apply`: a directory's events or workflows in one transaction (what
//! `cronium event apply -f DIR` and `cronium workflow apply -f DIR` call).

use axum::extract::State;
use axum::{Extension, Json};
use cronium_core::clock::now_ms;

use super::body;
use super::dto::{ApplyBatchBody, ApplyBatchDto, BatchKind, ChangeDto};
use super::error::{ApiResult, ErrorBody};
use super::extract::Body;
use crate::state::AppState;
use crate::usecases::apply::{apply_batch, Kind};
use crate::usecases::Actor;

/// Apply many events or many workflows at once: all or nothing. With `prune`, what `items`
/// does not name is deleted; with `dry_run`, the answer says what would change and nothing
/// does. The first invalid item is named with its field (`items[2].nodes[1].event`).
#[utoipa::path(post, path = "/api/v1/apply", tag = "apply", operation_id = "apply_batch",
    request_body(content = ApplyBatchBody),
    responses(
        (status = 200, description = "What was (or would be) created, updated, left unchanged or deleted", body = ApplyBatchDto),
        (status = 413, description = "The body is over 2 MiB", body = ErrorBody),
        (status = 422, description = "An item is not valid (the item and field are named); nothing changed", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn apply(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Body(bytes): Body,
) -> ApiResult<Json<ApplyBatchDto>> {
    let b: ApplyBatchBody = body::json(&bytes)?;
    let kind = match b.kind {
        BatchKind::Events => Kind::Events,
        BatchKind::Workflows => Kind::Workflows,
    };
    let changes = apply_batch(&state, &actor, kind, b.items, b.prune, b.dry_run, now_ms()).await?;
    Ok(Json(ApplyBatchDto {
        dry_run: b.dry_run,
        changes: changes
            .into_iter()
            .map(|c| ChangeDto {
                name: c.name,
                result: c.result.into(),
            })
            .collect(),
    }))
}
