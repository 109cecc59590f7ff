//! `/api/v1/audit`: the audit log, newest first, keyset paged (admin only).

use axum::extract::State;
use axum::Json;
use cronium_store::AuditFilter;
use serde::Deserialize;
use utoipa::IntoParams;

use super::dto::AuditDto;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::Query;
use crate::state::AppState;
use crate::usecases::audit;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only entries at or after this instant (RFC 3339).
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// Only entries by this user name (`-` for failed logins, `system` for the server).
    pub actor: Option<String>,
    /// Only this action (`job.run`), or every action of a kind with a trailing dot (`event.`).
    pub action: Option<String>,
    /// At most this many (default 100, max 500).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// Only entries with an id below this (the next page: the last id of this one).
    pub before: Option<i64>,
}

/// The audit log, newest first: every change, run, cancel, login and failed login.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", operation_id = "list_audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "The entries, newest first", body = [AuditDto]),
        (status = 422, description = "A query parameter is not valid (it is named)", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<Vec<AuditDto>>> {
    let since = match q.since.as_deref() {
        None => None,
        Some(s) => Some(
            chrono::DateTime::parse_from_rfc3339(s)
                .map_err(|e| ApiError::bad("since", format!("not an RFC 3339 instant: {e}")))?
                .timestamp_millis(),
        ),
    };
    let rows = audit::list(
        &state,
        AuditFilter {
            since,
            actor: q.actor,
            action: q.action,
            before_id: q.before,
            limit: q.limit.unwrap_or(100),
        },
    )
    .await?;
    Ok(Json(rows.into_iter().map(AuditDto::from).collect()))
}
