//! The HTTP API under `/api/v1` (JSON), `/metrics` (Prometheus) and `/healthz`.
//! `POST /hooks/{name}` is public: a webhook is authenticated by its HMAC signature
//! (`hooks.rs`). Every other route except `/healthz` requires `Authorization: Bearer <token>`: an API token, except
//! under `/api/v1/runtime`, which takes only an execution's runtime token (`runtime.rs`); a
//! session cookie never authenticates them. Each route behind an API token declares the role
//! it needs in [`api_routes`] (`crate::authz`). The pages (`crate::ui`) are merged in here, behind
//! their login.

pub mod agent;
pub mod agents;
pub mod apply;
pub mod audit;
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
pub mod runners;
pub mod runtime;
pub mod servers;
pub mod tokens;
pub mod users;
pub mod variables;
pub mod workflows;

use axum::extract::ConnectInfo;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get as plain_get;
use axum::{Json, Router};
use cronium_core::clock::now_ms;
use cronium_model::JobStatus;
use utoipa::OpenApi;

use self::doc::ApiDoc;
use self::dto::{DockerStateDto, HealthDto, TransportMetricsDto};
use self::error::ApiError;
use crate::auth::hash_token;
use crate::authz::{delete, get, post, put, Role, Routes, Rule};
use crate::state::AppState;
use crate::usecases::Actor;

/// Largest request body (an event with a 1 MiB script fits).
pub const MAX_BODY: usize = 2 * 1024 * 1024;

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
        let m = ssh.metrics();
        for (name, value) in ssh_counters(&m) {
            state.metrics.set_counter(name, value);
        }
        let r = &state.metrics.runner;
        use cronium_core::metrics::mirror;
        mirror(&r.deployments, m.deployments_total);
        mirror(&r.deployments_failed, m.deployments_failed);
        mirror(&r.artifact_cache_hits, m.deployments_cached);
        mirror(
            &r.artifact_cache_misses,
            m.deployments_total.saturating_sub(m.deployments_cached),
        );
        mirror(&r.connection_failures, m.connection_failures);
    }
    server_health_gauges(&state).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response())
}

/// The per-server health gauges, from the store and the thresholds at scrape time (a removed
/// server's series disappear).
async fn server_health_gauges(state: &AppState) -> Result<(), ApiError> {
    use cronium_core::metrics::{ServerDirLabel, ServerLabel, ServerStatusLabel};
    let rows = crate::usecases::servers::list(state).await?;
    let r = &state.metrics.runner;
    r.server_health.clear();
    r.server_health_failures.clear();
    r.server_disk_free_bytes.clear();
    r.server_disk_total_bytes.clear();
    r.server_memory_available_bytes.clear();
    r.server_memory_total_bytes.clear();
    r.server_load1.clear();
    r.server_cpus.clear();
    let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    for row in &rows {
        let server = || ServerLabel {
            server: row.name.clone(),
        };
        let verdict = crate::usecases::servers::health(state, row);
        r.server_health
            .get_or_create(&ServerStatusLabel {
                server: row.name.clone(),
                status: verdict.status.as_str().into(),
            })
            .set(1);
        r.server_health_failures
            .get_or_create(&server())
            .set(row.health.failures);
        let Some(h) = crate::usecases::servers::reading(row) else {
            continue;
        };
        for (dir, d) in [("work", &h.work_dir), ("deploy", &h.deploy_dir)] {
            let label = ServerDirLabel {
                server: row.name.clone(),
                dir: dir.into(),
            };
            r.server_disk_free_bytes
                .get_or_create(&label)
                .set(clamp(d.free_bytes));
            r.server_disk_total_bytes
                .get_or_create(&label)
                .set(clamp(d.total_bytes));
        }
        r.server_memory_available_bytes
            .get_or_create(&server())
            .set(clamp(h.memory_available_bytes));
        r.server_memory_total_bytes
            .get_or_create(&server())
            .set(clamp(h.memory_total_bytes));
        r.server_load1.get_or_create(&server()).set(h.load[0]);
        r.server_cpus
            .get_or_create(&server())
            .set(i64::from(h.cpus));
    }
    Ok(())
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
        ("ssh_connection_failures", m.connection_failures),
        ("ssh_health_checks", m.health_checks),
        ("ssh_health_failures", m.health_failures),
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
    let source = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    match state.store.find_token(&hash_token(token), now_ms()).await {
        Ok(Some(t)) => {
            // A token acts with its user's role as it is now, or its own narrower one.
            let role = t.token.role.map_or(t.user_role, |r| r.min(t.user_role));
            req.extensions_mut().insert(Actor {
                user_id: Some(t.token.user_id),
                username: t.token.username,
                role,
                token_id: Some(t.token.id),
                session_id: None,
                source,
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

/// Every route of `/api/v1` with the role it needs (`crate::authz`): one rule per route,
/// declared here. Viewers read, operators change and run, admins manage users, everyone's
/// tokens, the audit log and pruning (README "Users and roles").
pub fn api_routes() -> Routes<AppState> {
    use Role::{Admin, Operator, Viewer};
    Routes::new()
        .route(
            "/events",
            get(Viewer, events::list).post(Operator, events::create),
        )
        .route(
            "/events/{name}",
            get(Viewer, events::show)
                .put(Operator, events::apply)
                .delete(Operator, events::delete),
        )
        .route("/events/{name}/run", post(Operator, events::run))
        .route("/jobs", get(Viewer, jobs::list))
        .route("/jobs/{id}", get(Viewer, jobs::show))
        .route("/jobs/{id}/cancel", post(Operator, jobs::cancel))
        .route("/jobs/{id}/retry", post(Operator, jobs::retry))
        .route("/jobs/{id}/logs", get(Viewer, jobs::logs))
        .route("/jobs/{id}/logs/stream", get(Viewer, jobs::stream))
        .route("/variables", get(Viewer, variables::list))
        .route(
            "/variables/{name}",
            get(Viewer, variables::show)
                .put(Operator, variables::set)
                .delete(Operator, variables::delete),
        )
        // Everyone's own tokens; an admin's view and reach is everyone's (usecases::tokens).
        .route(
            "/tokens",
            get(Viewer, tokens::list).post(Viewer, tokens::create),
        )
        .route("/tokens/{id}", delete(Viewer, tokens::revoke))
        .route("/agents", get(Viewer, agents::list))
        .route(
            "/agent-tokens",
            get(Admin, agents::list_tokens).post(Admin, agents::create_token),
        )
        .route("/agent-tokens/{name}", delete(Admin, agents::revoke_token))
        .route("/users", get(Admin, users::list).post(Admin, users::add))
        .route(
            "/users/{name}",
            get(Admin, users::show).patch(Admin, users::update),
        )
        // One's own password, or anyone's for an admin (usecases::users).
        .route("/users/{name}/password", put(Viewer, users::set_password))
        .route("/audit", get(Admin, audit::list))
        .route(
            "/servers",
            get(Viewer, servers::list).post(Operator, servers::create),
        )
        .route(
            "/servers/{name}",
            get(Viewer, servers::show).delete(Operator, servers::delete),
        )
        .route("/servers/{name}/test", post(Operator, servers::test))
        .route(
            "/runners",
            get(Viewer, runners::list).post(Admin, runners::add),
        )
        .route(
            "/runners/pins",
            get(Viewer, runners::list_pins).post(Admin, runners::set_pin),
        )
        .route("/runners/pins/remove", post(Admin, runners::remove_pin))
        .route(
            "/runners/rollouts",
            get(Viewer, runners::list_rollouts).post(Admin, runners::start_rollout),
        )
        .route("/runners/rollouts/{id}", get(Viewer, runners::show_rollout))
        .route("/runners/rollback", post(Admin, runners::rollback))
        .route("/servers/deploy", post(Admin, runners::deploy))
        .route(
            "/servers/{name}/accept-key",
            post(Operator, servers::accept_key),
        )
        .route(
            "/servers/{name}/credential",
            put(Operator, servers::set_credential),
        )
        .route("/workflows", get(Viewer, workflows::list))
        .route(
            "/workflows/{name}",
            get(Viewer, workflows::show)
                .put(Operator, workflows::apply)
                .delete(Operator, workflows::delete),
        )
        .route(
            "/workflows/{name}/runs",
            get(Viewer, workflows::runs).post(Operator, workflows::run),
        )
        .route("/workflow-runs/{id}", get(Viewer, workflows::show_run))
        .route(
            "/workflow-runs/{id}/retry",
            post(Operator, workflows::retry),
        )
        .route(
            "/workflow-runs/{id}/cancel",
            post(Operator, workflows::cancel),
        )
        .route("/workflow-runs/{id}/logs", get(Viewer, workflows::logs))
        .route("/apply", post(Operator, apply::apply))
        .route("/prune", post(Admin, prune::prune))
        .route("/metrics/transports", get(Viewer, transport_metrics))
        .route("/openapi.json", get(Viewer, openapi))
        // Webhooks (each hook's URL and secret; `POST /hooks/{name}` itself is public: see
        // [`router`]) and notification channels.
        .route("/events/{name}/hook", get(Operator, hooks::show_event_hook))
        .route(
            "/events/{name}/hook/rotate",
            post(Operator, hooks::rotate_event_hook),
        )
        .route(
            "/workflows/{name}/hook",
            get(Operator, hooks::show_workflow_hook),
        )
        .route(
            "/workflows/{name}/hook/rotate",
            post(Operator, hooks::rotate_workflow_hook),
        )
        .route(
            "/channels",
            get(Viewer, channels::list).post(Admin, channels::create),
        )
        .route(
            "/channels/{name}",
            get(Viewer, channels::show).delete(Admin, channels::delete),
        )
        .route("/channels/{name}/test", post(Operator, channels::test))
}

/// `/metrics` (outside `/api/v1`, behind the same tokens).
fn metrics_routes() -> Routes<AppState> {
    Routes::new().route("/metrics", get(Role::Viewer, metrics))
}

/// The rule of every route behind an API token, with its full path (`/api/v1/events`,
/// `/metrics`): what the OpenAPI document and the role matrix test read.
pub fn rules() -> Vec<Rule> {
    let mut r = api_routes().rules("/api/v1");
    r.extend(metrics_routes().rules(""));
    r
}

pub fn router(state: AppState) -> Router {
    let api = api_routes().into_router().fallback(not_found);
    // The runtime API checks its own token (an execution's), never an API token.
    let runtime_api = Router::new()
        .route("/input", plain_get(runtime::input))
        .route("/event", plain_get(runtime::event))
        .route(
            "/output",
            plain_get(runtime::get_output).put(runtime::set_output),
        )
        .route("/output/{key}", axum::routing::put(runtime::set_output_key))
        .route(
            "/variables/{name}",
            plain_get(runtime::get_variable).put(runtime::set_variable),
        )
        .route("/condition", axum::routing::put(runtime::set_condition))
        .fallback(not_found);
    let protected = Router::new()
        .nest("/api/v1", api)
        .merge(metrics_routes().into_router())
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    // Public: a webhook authenticates by its signature, never by a token or a session.
    let public_hooks = Router::new()
        .route("/hooks/{name}", axum::routing::post(hooks::receive))
        .layer(DefaultBodyLimit::max(hooks::MAX_HOOK_BODY));
    // The agent API checks its own tokens (agent tokens), never an API token.
    let agent_api = agent::router(state.clone()).fallback(not_found);
    Router::new()
        .nest("/api/v1/runtime", runtime_api)
        .nest(cronium_agent::wire::PREFIX, agent_api)
        .merge(public_hooks)
        .merge(protected)
        .route("/healthz", plain_get(healthz))
        .merge(crate::ui::router(state.clone()))
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every route behind an API token is in the OpenAPI document with the same method, and
    /// every operation of the document behind a token is a routed rule: neither can drift from
    /// the other. (The runtime API and `/healthz` are routed outside the rules.)
    #[test]
    fn the_rules_and_the_document_name_the_same_routes() {
        let routed: BTreeSet<(String, String)> = rules()
            .into_iter()
            .map(|r| (r.method.to_string(), r.path))
            .collect();
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("document");
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            // Public (`/healthz`), signed instead of a token (`/hooks/{name}`), or an
            // execution's token (the runtime API): outside the role rules.
            if path == "/healthz"
                || path == "/hooks/{name}"
                || path.starts_with("/api/v1/runtime/")
                || path.starts_with("/api/v1/agent/")
            {
                continue;
            }
            for method in item.as_object().expect("item").keys() {
                documented.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
        let missing: Vec<_> = routed.difference(&documented).collect();
        assert!(missing.is_empty(), "routed, not documented: {missing:?}");
        let unrouted: Vec<_> = documented.difference(&routed).collect();
        assert!(unrouted.is_empty(), "documented, not routed: {unrouted:?}");
    }

    /// Each operation says the role its route needs, and the ones above viewer list 403.
    #[test]
    fn the_document_states_each_role() {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("document");
        for r in rules() {
            let op = &doc["paths"][&r.path][r.method.as_str().to_ascii_lowercase()];
            assert_eq!(
                op["x-cronium-role"],
                r.role.as_str(),
                "{} {}",
                r.method,
                r.path
            );
            if r.role != Role::Viewer {
                assert!(
                    op["responses"].get("403").is_some(),
                    "{} {}: no 403",
                    r.method,
                    r.path
                );
            }
        }
    }
}
