//! `POST /api/v1/prune`: runs the retention sweep now (`cronium prune`), or with `dry_run` counts
//! what it would remove, changing nothing. Admin only (`api::api_routes`). Its JSON shapes live
//! here, with the handler (as in `servers.rs`).

use axum::extract::State;
use axum::{Extension, Json};
use cronium_store::PruneCounts;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::body;
use super::error::{ApiResult, ErrorBody};
use super::extract::Body;
use crate::background::retention::SweepReport;
use crate::state::AppState;
use crate::usecases::Actor;

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct PruneBody {
    /// Only count what would be removed.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Serialize, ToSchema)]
pub struct PruneCountsDto {
    pub jobs: u64,
    pub executions: u64,
    pub log_lines: u64,
}

impl From<PruneCounts> for PruneCountsDto {
    fn from(c: PruneCounts) -> Self {
        PruneCountsDto {
            jobs: c.jobs,
            executions: c.executions,
            log_lines: c.log_lines,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct EventPruneDto {
    pub event: String,
    #[serde(flatten)]
    pub counts: PruneCountsDto,
}

#[derive(Serialize, ToSchema)]
pub struct PruneDto {
    /// True when nothing was removed (the counts are what would go).
    pub dry_run: bool,
    /// The server's `--retain` (`30d`, `forever`...), for events that set no `retain`.
    pub retain: String,
    pub total: PruneCountsDto,
    /// Per event name, by name; only events with something to remove.
    pub events: Vec<EventPruneDto>,
    /// Cached payload archives unused for the payload max age, and their size.
    pub payloads: u64,
    pub payload_bytes: u64,
    /// Work directories of runs left behind by killed runners.
    pub work_dirs: Vec<String>,
    /// Events whose definition does not parse: all their jobs are kept.
    pub skipped_events: Vec<String>,
    /// The sweep stopped early (the server is shutting down).
    pub interrupted: bool,
    /// Audit log entries older than the audit retention (`--audit-retain`).
    pub audit_entries: u64,
}

fn dto(r: SweepReport, retain: String) -> PruneDto {
    PruneDto {
        dry_run: r.dry_run,
        retain,
        total: r.total().into(),
        events: r
            .by_event
            .into_iter()
            .map(|(event, c)| EventPruneDto {
                event,
                counts: c.into(),
            })
            .collect(),
        payloads: r.payloads,
        payload_bytes: r.payload_bytes,
        work_dirs: r
            .work_dirs
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        skipped_events: r.skipped_events,
        interrupted: r.interrupted,
        audit_entries: r.audit_entries,
    }
}

/// Prune now what is past its retention (jobs with their executions and logs, unused payloads,
/// stale work directories), or count it with `dry_run`.
#[utoipa::path(post, path = "/api/v1/prune", tag = "retention", operation_id = "prune",
    request_body(content = Option<PruneBody>, description = "Optional: `{\"dry_run\": true}` only counts"),
    responses(
        (status = 200, description = "What was removed (or, with `dry_run`, what would be)", body = PruneDto),
        (status = 413, description = "The body is over 2 MiB", body = ErrorBody),
        (status = 422, description = "The body is not a valid prune request", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn prune(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Body(bytes): Body,
) -> ApiResult<Json<PruneDto>> {
    let body: PruneBody = body::optional_json(&bytes)?;
    // A request dropped by its client drops the sweep with it: between two steps, or inside
    // one, whose transaction then rolls back. Shutdown stops it between two steps.
    let report = crate::usecases::prune::prune(&state, &actor, body.dry_run).await?;
    let retain = state.retention.config().retain.to_string();
    Ok(Json(dto(report, retain)))
}
