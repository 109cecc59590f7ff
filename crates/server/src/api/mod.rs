//! The HTTP API under `/api/v1` (JSON), `/metrics` (Prometheus) and `/healthz`.
//! `POST /hooks/{name}` is public: a webhook is authenticated by its HMAC signature
//! (`hooks.rs`). Every other route except `/healthz` requires `Authorization: Bearer <token>`: an API token, except
//! under `/api/v1/runtime`, which takes only an execution's runtime token (`runtime.rs`); a
//! session cookie never authenticates them. The pages (`crate::ui`) are merged in here, behind
//! their login.

pub mod apply;
pub mod body;
pub mod channels;
pub mod doc;
pub mod dto;
pub mod error;
pub mod events;
pub mod extract;
pub mod hooks;
pub mod jobs;
pub mod params;
pub mod prune;
pub mod runtime;
pub mod servers;
pub mod tokens;
pub mod variables;
pub mod workflows;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cronium_core::clock::now_ms;
use cronium_model::JobStatus;
use utoipa::OpenApi;

use self::doc::ApiDoc;
use self::dto::{DockerStateDto, HealthDto, TransportMetricsDto};
use self::error::ApiError;
use crate::auth::hash_token;
use crate::state::AppState;

/// Largest request body (an event with a 1 MiB script fits).
pub const MAX_BODY: usize = 2 * 1024 * 1024;

/// Who made the request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: i64,
    pub token_id: i64,
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta", operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", body = Object)),
    security(("bearer" = [])))]
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Whether the server and its database are up. Needs no token.
#[utoipa::path(get, path = "/healthz", tag = "meta", operation_id = "healthz",
    responses(
        (status = 200, description = "Up", body = HealthDto),
        (status = 503, description = "The database cannot be reached", body = HealthDto),
    ),
    security(()))]
pub async fn healthz(State(state): State<AppState>) -> Response {
    match state.store.next_run_at().await {
        Ok(_) => Json(HealthDto {
            status: "ok".into(),
        })
        .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "health check: store unreachable");
            (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                Json(HealthDto {
                    status: "store unreachable".into(),
                }),
            )
                .into_response()
        }
    }
}

/// Prometheus metrics (OpenMetrics text): jobs by status, queue depth, scheduler lag and
/// leadership, run durations, broken events, SSH transport counters.
#[utoipa::path(get, path = "/metrics", tag = "meta", operation_id = "metrics",
    responses((status = 200, description = "OpenMetrics text",
        content_type = "application/openmetrics-text", body = String)),
    security(("bearer" = [])))]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let counts = state.store.job_counts_by_status().await?;
    let count = |status: JobStatus| {
        counts
            .iter()
            .find(|(s, _)| *s == status)
            .map_or(0, |(_, n)| *n)
    };
    for &status in JobStatus::ALL {
        state
            .metrics
            .jobs
            .get_or_create(&cronium_core::metrics::StatusLabel {
                status: status.as_str().into(),
            })
            .set(count(status));
    }
    let queued = count(JobStatus::Queued);
    state.metrics.queue_depth.set(queued);
    state
        .metrics
        .events_broken
        .set(state.store.count_broken_events().await?);
    if let Some(ssh) = &state.ssh {
        for (name, value) in ssh_counters(&ssh.metrics()) {
            state.metrics.set_counter(name, value);
        }
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response())
}

fn ssh_counters(m: &cronium_ssh::MetricsSnapshot) -> Vec<(&'static str, u64)> {
    vec![
        ("ssh_executions_total", m.executions_total),
        ("ssh_executions_succeeded", m.executions_succeeded),
        ("ssh_executions_failed", m.executions_failed),
        ("ssh_executions_timed_out", m.executions_timed_out),
        ("ssh_executions_cancelled", m.executions_cancelled),
        ("ssh_executions_lost", m.executions_lost),
        ("ssh_deployments_total", m.deployments_total),
        ("ssh_deployments_succeeded", m.deployments_succeeded),
        ("ssh_deployments_failed", m.deployments_failed),
        ("ssh_deployments_cached", m.deployments_cached),
        ("ssh_deployments_verified", m.deployments_verified),
        ("ssh_uploads", m.uploads),
        ("ssh_serve_sessions", m.serve_sessions),
        ("ssh_serve_unavailable", m.serve_unavailable),
        ("ssh_fallbacks", m.fallbacks),
        ("ssh_pool_hits", m.pool_hits),
        ("ssh_pool_misses", m.pool_misses),
        ("ssh_execution_ms_sum", m.execution_ms_sum),
        ("ssh_execution_count", m.execution_count),
        ("ssh_deployment_ms_sum", m.deployment_ms_sum),
        ("ssh_deployment_count", m.deployment_count),
    ]
}

/// Counters of the SSH transport (executions, deployments, pool) as JSON.
#[utoipa::path(get, path = "/api/v1/metrics/transports", tag = "metrics",
    operation_id = "transport_metrics",
    responses((status = 200, description = "The transports' counters", body = TransportMetricsDto)),
    security(("bearer" = [])))]
pub async fn transport_metrics(State(state): State<AppState>) -> Json<TransportMetricsDto> {
    let ssh = state.ssh.as_ref().map(|s| {
        ssh_counters(&s.metrics())
            .into_iter()
            .map(|(k, v)| (k.trim_start_matches("ssh_").to_string(), v))
            .collect()
    });
    Json(TransportMetricsDto {
        ssh,
        docker: DockerStateDto {
            available: state.docker.is_some(),
        },
    })
}

async fn require_token(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return ApiError::Unauthorized.into_response();
    };
    match state.store.find_token(&hash_token(token), now_ms()).await {
        Ok(Some(t)) => {
            req.extensions_mut().insert(Caller {
                user_id: t.user_id,
                token_id: t.id,
            });
            next.run(req).await
        }
        Ok(None) => ApiError::Unauthorized.into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

/// An unknown path: the API's JSON error under `/api` and `/metrics`, the pages' HTML one
/// elsewhere.
async fn fallback(uri: axum::http::Uri) -> Response {
    let path = uri.path();
    if path.starts_with("/api/") || path == "/api" || path.starts_with("/metrics") {
        not_found().await.into_response()
    } else {
        crate::ui::not_found().await
    }
}

/// The routes of webhooks and notification channels under `/api/v1` (behind the token), in
/// one place (`POST /hooks/{name}` itself is public: see [`router`]).
fn hooks_and_channels() -> Router<AppState> {
    Router::new()
        .route("/events/{name}/hook", get(hooks::show_event_hook))
        .route("/events/{name}/hook/rotate", post(hooks::rotate_event_hook))
        .route("/workflows/{name}/hook", get(hooks::show_workflow_hook))
        .route(
            "/workflows/{name}/hook/rotate",
            post(hooks::rotate_workflow_hook),
        )
        .route("/channels", get(channels::list).post(channels::create))
        .route(
            "/channels/{name}",
            get(channels::show).delete(channels::delete),
        )
        .route("/channels/{name}/test", post(channels::test))
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/events", get(events::list).post(events::create))
        .route(
            "/events/{name}",
            get(events::show).put(events::apply).delete(events::delete),
        )
        .route("/events/{name}/run", post(events::run))
        .route("/jobs", get(jobs::list))
        .route("/jobs/{id}", get(jobs::show))
        .route("/jobs/{id}/cancel", post(jobs::cancel))
        .route("/jobs/{id}/logs", get(jobs::logs))
        .route("/jobs/{id}/logs/stream", get(jobs::stream))
        .route("/variables", get(variables::list))
        .route(
            "/variables/{name}",
            get(variables::show)
                .put(variables::set)
                .delete(variables::delete),
        )
        .route("/tokens", get(tokens::list).post(tokens::create))
        .route("/tokens/{id}", axum::routing::delete(tokens::revoke))
        .route("/servers", get(servers::list).post(servers::create))
        .route(
            "/servers/{name}",
            get(servers::show).delete(servers::delete),
        )
        .route("/servers/{name}/test", post(servers::test))
        .route("/servers/{name}/accept-key", post(servers::accept_key))
        .route("/workflows", get(workflows::list))
        .route(
            "/workflows/{name}",
            get(workflows::show)
                .put(workflows::apply)
                .delete(workflows::delete),
        )
        .route(
            "/workflows/{name}/runs",
            get(workflows::runs).post(workflows::run),
        )
        .route("/workflow-runs/{id}", get(workflows::show_run))
        .route("/workflow-runs/{id}/retry", post(workflows::retry))
        .route("/workflow-runs/{id}/cancel", post(workflows::cancel))
        .route("/workflow-runs/{id}/logs", get(workflows::logs))
        .route("/apply", post(apply::apply))
        .route("/prune", post(prune::prune))
        .route("/metrics/transports", get(transport_metrics))
        .route("/openapi.json", get(openapi))
        .merge(hooks_and_channels())
        .fallback(not_found);
    // The runtime API checks its own token (an execution's), never an API token.
    let runtime_api = Router::new()
        .route("/input", get(runtime::input))
        .route("/event", get(runtime::event))
        .route("/output", get(runtime::get_output).put(runtime::set_output))
        .route("/output/{key}", axum::routing::put(runtime::set_output_key))
        .route(
            "/variables/{name}",
            get(runtime::get_variable).put(runtime::set_variable),
        )
        .route("/condition", axum::routing::put(runtime::set_condition))
        .fallback(not_found);
    let protected = Router::new()
        .nest("/api/v1", api)
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    // Public: a webhook authenticates by its signature, never by a token or a session.
    let public_hooks = Router::new()
        .route("/hooks/{name}", post(hooks::receive))
        .layer(DefaultBodyLimit::max(hooks::MAX_HOOK_BODY));
    Router::new()
        .nest("/api/v1/runtime", runtime_api)
        .merge(public_hooks)
        .merge(protected)
        .route("/healthz", get(healthz))
        .merge(crate::ui::router(state.clone()))
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}
