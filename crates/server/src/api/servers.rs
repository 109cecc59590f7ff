//! `/api/v1/servers`: registered SSH servers (register, list, show, test, remove, accept a changed
//! host key, replace the credential) and their runner deployment history. Credentials are encrypted before they reach the
//! store and never returned. The rules are in `usecases::servers`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use cronium_core::clock::rfc3339;
use cronium_store::ServerRow;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::body;
use super::dto::one_of;
use super::error::{ApiResult, ErrorBody};
use super::extract::{Body, Path};
use super::params::ServerName;
use crate::state::AppState;
use crate::usecases::servers::{self, NewCredential, Registration};
use crate::usecases::Actor;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "web1", "host": "127.0.0.1", "port": 22, "user": "deploy",
                          "password": "secret", "tags": ["web"]}))]
pub struct ServerBody {
    #[schema(schema_with = cronium_core::spec_schema::name)]
    pub name: String,
    /// A host name or address (no blanks).
    #[schema(pattern = r"^\S+$")]
    pub host: String,
    #[serde(default = "default_port")]
    #[schema(minimum = 1, maximum = 65535)]
    pub port: u16,
    /// The login (default root).
    #[serde(default = "default_user")]
    #[schema(pattern = r"\S")]
    pub user: String,
    /// Private key, OpenSSH or PEM text. Either this or `password`.
    #[serde(default)]
    pub private_key: Option<String>,
    /// The private key's passphrase, if it has one.
    #[serde(default)]
    pub passphrase: Option<String>,
    /// The login's password (not empty). Either this or `private_key`.
    #[serde(default)]
    pub password: Option<String>,
    /// The host key to trust (`ssh-ed25519 AAAA...`); pinned on first contact when absent.
    #[serde(default)]
    pub host_key: Option<String>,
    /// Tags, each a name as for servers.
    #[serde(default)]
    #[schema(schema_with = cronium_core::spec_schema::names)]
    pub tags: Vec<String>,
}

fn default_port() -> u16 {
    22
}
fn default_user() -> String {
    "root".into()
}

#[derive(Serialize, ToSchema)]
pub struct ServerDto {
    pub name: String,
    pub host: String,
    #[schema(minimum = 1, maximum = 65535)]
    pub port: i64,
    pub user: String,
    /// `key` or `password` (the credential itself is never returned).
    #[schema(schema_with = auth_kind)]
    pub auth: String,
    /// The pinned host key; null until the first contact pins one.
    #[schema(required)]
    pub host_key: Option<String>,
    /// A different key the server presented, waiting for `accept-key`.
    #[schema(required)]
    pub pending_host_key: Option<String>,
    pub tags: Vec<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// The runner last verified on the host (uploaded, or found intact), unless an error has put
    /// it in doubt since. A restarted server trusts it for 24 h instead of checking the host.
    #[schema(required)]
    pub runner: Option<RunnerStateDto>,
    /// The OS detected on first contact (`uname -s`, lower case: `linux`); null until then.
    #[schema(required)]
    pub os: Option<String>,
    /// The architecture detected on first contact (`uname -m`, `amd64` folded into `x86_64`,
    /// `arm64` into `aarch64`); it picks the runner deployed. Null until then.
    #[schema(required)]
    pub arch: Option<String>,
    #[schema(format = DateTime, required)]
    pub platform_detected_at: Option<String>,
    /// Only in the answer for one server (`GET /api/v1/servers/{name}`), newest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployments: Option<Vec<DeploymentDto>>,
    /// The server's health: its checks judged now with the server's thresholds.
    pub health: ServerHealthDto,
    /// The runner version this server runs: its pin, else its tags' newest pin, else the
    /// default (the runner this Cronium ships with). Null without the SSH transport.
    #[schema(required)]
    pub runner_version: Option<String>,
    /// Which pin gives `runner_version`: `server pin`, `tag pin (TAG)` or `default`.
    #[schema(required)]
    pub runner_version_source: Option<String>,
}

/// A server's health (`cronium-runner health` after runs and on the health interval).
#[derive(Serialize, ToSchema)]
pub struct ServerHealthDto {
    /// `unknown` (not checked yet), `healthy`, `degraded` (a disk or memory threshold is
    /// crossed) or `unreachable` (checks failed in a row, or no contact for too long).
    pub status: cronium_model::ServerHealth,
    /// Why the status is what it is, in words (empty when healthy).
    pub reasons: Vec<String>,
    #[schema(format = DateTime, required)]
    pub checked_at: Option<String>,
    /// The last check the host answered.
    #[schema(format = DateTime, required)]
    pub last_contact_at: Option<String>,
    /// Checks failed in a row since the last contact.
    pub failures: i64,
    /// Why the last check failed, or why it has no reading (no runner on the host yet).
    #[schema(required)]
    pub error: Option<String>,
    /// The latest reading; kept when later checks fail (see `reading_at`).
    #[schema(required)]
    pub reading: Option<ServerHealthReadingDto>,
    #[schema(format = DateTime, required)]
    pub reading_at: Option<String>,
    /// Only in the answer for one server: its last checks, newest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<ServerHealthCheckDto>>,
}

/// What `cronium-runner health` reported.
#[derive(Serialize, ToSchema)]
pub struct ServerHealthReadingDto {
    pub runner_version: String,
    /// Load averages over 1, 5 and 15 minutes.
    #[schema(min_items = 3, max_items = 3)]
    pub load: Vec<f64>,
    pub cpus: u32,
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
    pub uptime_s: u64,
    pub work_dir: ServerDiskDto,
    pub deploy_dir: ServerDiskDto,
}

#[derive(Serialize, ToSchema)]
pub struct ServerDiskDto {
    pub path: String,
    pub total_bytes: u64,
    /// Free to an unprivileged user.
    pub free_bytes: u64,
}

#[derive(Serialize, ToSchema)]
pub struct ServerHealthCheckDto {
    #[schema(format = DateTime)]
    pub at: String,
    /// The host answered.
    pub ok: bool,
    pub duration_ms: i64,
    #[schema(required)]
    pub error: Option<String>,
}

fn auth_kind() -> utoipa::openapi::schema::ObjectBuilder {
    one_of(&["key", "password"])
}

fn deploy_outcome() -> utoipa::openapi::schema::ObjectBuilder {
    one_of(&["deployed", "verified", "failed"])
}

fn host_key_status() -> utoipa::openapi::schema::ObjectBuilder {
    one_of(&["matches", "first_use", "changed"])
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            utoipa::openapi::schema::Type::String,
            utoipa::openapi::schema::Type::Null,
        ]))
        .enum_values(Some([
            serde_json::json!("matches"),
            serde_json::json!("first_use"),
            serde_json::json!("changed"),
            serde_json::Value::Null,
        ]))
}

#[derive(Serialize, ToSchema)]
pub struct RunnerStateDto {
    /// On the host, relative to the login's home unless absolute.
    pub path: String,
    pub sha256: String,
    #[schema(format = DateTime)]
    pub verified_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct DeploymentDto {
    pub version: String,
    pub sha256: String,
    /// `deployed` (uploaded and verified), `verified` (found intact on the host: checksum and
    /// `--version`) or `failed`.
    #[schema(schema_with = deploy_outcome)]
    pub outcome: String,
    pub attempts: i64,
    pub duration_ms: i64,
    #[schema(required)]
    pub error: Option<String>,
    #[schema(format = DateTime)]
    pub at: String,
}

#[derive(Serialize, ToSchema)]
pub struct TestReportDto {
    pub server: String,
    pub reachable: bool,
    pub authenticated: bool,
    #[schema(required)]
    pub host_key: Option<String>,
    #[schema(required)]
    pub host_key_fingerprint: Option<String>,
    /// matches | first_use (now pinned) | changed; null when no key was seen.
    #[schema(schema_with = host_key_status, required)]
    pub host_key_status: Option<String>,
    #[schema(required)]
    pub os: Option<String>,
    #[schema(required)]
    pub arch: Option<String>,
    /// Version of the runner deployed on the host, if any.
    #[schema(required)]
    pub runner_version: Option<String>,
    pub latency_ms: u64,
    #[schema(required)]
    pub error: Option<String>,
}

fn disk(d: cronium_protocol::Disk) -> ServerDiskDto {
    ServerDiskDto {
        path: d.path,
        total_bytes: d.total_bytes,
        free_bytes: d.free_bytes,
    }
}

fn health_dto(state: &AppState, s: &ServerRow) -> ServerHealthDto {
    let verdict = servers::health(state, s);
    ServerHealthDto {
        status: verdict.status,
        reasons: verdict.reasons,
        checked_at: s.health.checked_at.map(rfc3339),
        last_contact_at: s.health.contact_at.map(rfc3339),
        failures: s.health.failures,
        error: s.health.error.clone(),
        reading: servers::reading(s).map(|h| ServerHealthReadingDto {
            runner_version: h.runner_version,
            load: h.load.to_vec(),
            cpus: h.cpus,
            memory_total_bytes: h.memory_total_bytes,
            memory_available_bytes: h.memory_available_bytes,
            uptime_s: h.uptime_s,
            work_dir: disk(h.work_dir),
            deploy_dir: disk(h.deploy_dir),
        }),
        reading_at: s.health.reading_at.map(rfc3339),
        history: None,
    }
}

fn dto(state: &AppState, s: ServerRow) -> ServerDto {
    dto_with(state, s, &[])
}

/// The server with the runner version its pins ask for.
fn dto_with(state: &AppState, s: ServerRow, pins: &[cronium_store::PinRow]) -> ServerDto {
    let health = health_dto(state, &s);
    let wanted = state
        .ssh
        .as_ref()
        .map(|ssh| crate::usecases::runner_versions::wanted(ssh, pins, &s));
    ServerDto {
        health,
        runner_version: wanted.as_ref().map(|w| w.version.clone()),
        runner_version_source: wanted.map(|w| w.source),
        name: s.name,
        host: s.host,
        port: s.port,
        user: s.username,
        auth: s.auth_kind,
        host_key: s.host_key,
        pending_host_key: s.pending_host_key,
        tags: s.tags,
        created_at: rfc3339(s.created_at),
        runner: s.runner.map(|r| RunnerStateDto {
            path: r.path,
            sha256: r.sha256,
            verified_at: rfc3339(r.verified_at),
        }),
        deployments: None,
        os: s.platform.as_ref().map(|p| p.os.clone()),
        arch: s.platform.as_ref().map(|p| p.arch.clone()),
        platform_detected_at: s.platform.as_ref().map(|p| rfc3339(p.detected_at)),
    }
}

/// Register a server.
#[utoipa::path(post, path = "/api/v1/servers", tag = "servers", operation_id = "create_server",
    request_body = ServerBody,
    responses(
        (status = 201, description = "The server as registered", body = ServerDto),
        (status = 409, description = "A server of that name exists", body = ErrorBody),
        (status = 413, description = "The body is over 2 MiB", body = ErrorBody),
        (status = 422, description = "The body is not valid (the field is named)", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Body(bytes): Body,
) -> ApiResult<(StatusCode, Json<ServerDto>)> {
    let b: ServerBody = body::json(&bytes)?;
    let row = servers::register(
        &state,
        &actor,
        Registration {
            name: b.name,
            host: b.host,
            port: b.port,
            user: b.user,
            private_key: b.private_key,
            passphrase: b.passphrase,
            password: b.password,
            host_key: b.host_key,
            tags: b.tags,
        },
    )
    .await?;
    let pins = state.store.list_pins().await?;
    Ok((StatusCode::CREATED, Json(dto_with(&state, row, &pins))))
}

/// List servers.
#[utoipa::path(get, path = "/api/v1/servers", tag = "servers", operation_id = "list_servers",
    responses((status = 200, description = "Every server, by name (without deployments)", body = [ServerDto])),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<ServerDto>>> {
    let pins = state.store.list_pins().await?;
    Ok(Json(
        servers::list(&state)
            .await?
            .into_iter()
            .map(|s| dto_with(&state, s, &pins))
            .collect(),
    ))
}

/// Show a server with its recent runner deployments.
#[utoipa::path(get, path = "/api/v1/servers/{name}", tag = "servers", operation_id = "show_server",
    params(ServerName),
    responses(
        (status = 200, description = "The server, with `deployments`", body = ServerDto),
        (status = 404, description = "No such server", body = ErrorBody),
        (status = 422, description = "The name is not valid UTF-8", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn show(
    State(state): State<AppState>,
    Path(ServerName { name }): Path<ServerName>,
) -> ApiResult<Json<ServerDto>> {
    let row = servers::get(&state, &name).await?;
    let deployments = servers::deployments(&state, &row, 50).await?;
    let checks = servers::health_checks(&state, &row, 20).await?;
    let pins = state.store.list_pins().await?;
    let mut d = dto_with(&state, row, &pins);
    d.health.history = Some(
        checks
            .into_iter()
            .map(|c| ServerHealthCheckDto {
                at: rfc3339(c.at),
                ok: c.ok,
                duration_ms: c.duration_ms,
                error: c.error,
            })
            .collect(),
    );
    d.deployments = Some(
        deployments
            .into_iter()
            .map(|x| DeploymentDto {
                version: x.version,
                sha256: x.sha256,
                outcome: x.outcome,
                attempts: x.attempts,
                duration_ms: x.duration_ms,
                error: x.error,
                at: rfc3339(x.at),
            })
            .collect(),
    );
    Ok(Json(d))
}

/// Remove a server. Past executions keep its name.
#[utoipa::path(delete, path = "/api/v1/servers/{name}", tag = "servers", operation_id = "delete_server",
    params(ServerName),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such server", body = ErrorBody),
        (status = 422, description = "The name is not valid UTF-8", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(ServerName { name }): Path<ServerName>,
) -> ApiResult<StatusCode> {
    servers::remove(&state, &actor, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Connect to a server and report reachability, authentication, host key, OS/arch and runner.
/// On first contact the presented host key is pinned.
#[utoipa::path(post, path = "/api/v1/servers/{name}/test", tag = "servers", operation_id = "test_server",
    params(ServerName),
    responses(
        (status = 200, description = "What the connection found (a host that cannot be reached is a report, not an error)", body = TestReportDto),
        (status = 404, description = "No such server", body = ErrorBody),
        (status = 422, description = "The name is not valid UTF-8, or this server has no SSH transport", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn test(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(ServerName { name }): Path<ServerName>,
) -> ApiResult<Json<TestReportDto>> {
    let r = servers::test(&state, &actor, &name).await?;
    let status = servers::key_status(&r);
    Ok(Json(TestReportDto {
        server: r.server,
        reachable: r.reachable,
        authenticated: r.authenticated,
        host_key: r.host_key,
        host_key_fingerprint: r.host_key_fingerprint,
        host_key_status: status.map(str::to_string),
        os: r.os,
        arch: r.arch,
        runner_version: r.runner_version,
        latency_ms: r.latency_ms,
        error: r.error,
    }))
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct AcceptKeyBody {
    /// The key to trust; default (absent or null): the pending key the server presented.
    #[serde(default)]
    pub host_key: Option<String>,
}

/// Trust a changed host key (after checking it out of band).
#[utoipa::path(post, path = "/api/v1/servers/{name}/accept-key", tag = "servers", operation_id = "accept_server_key",
    params(ServerName),
    request_body(content = Option<AcceptKeyBody>, description = "Optional: the key to trust (no body: the pending one)"),
    responses(
        (status = 200, description = "The server with its new pinned key", body = ServerDto),
        (status = 404, description = "No such server", body = ErrorBody),
        (status = 413, description = "The body is over 2 MiB", body = ErrorBody),
        (status = 422, description = "No key to accept, or the key is not valid", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn accept_key(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(ServerName { name }): Path<ServerName>,
    Body(bytes): Body,
) -> ApiResult<Json<ServerDto>> {
    let b: AcceptKeyBody = body::optional_json(&bytes)?;
    let row = servers::accept_key(&state, &actor, &name, b.host_key).await?;
    Ok(Json(dto(&state, row)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"password": "new-secret"}))]
pub struct CredentialBody {
    /// Private key, OpenSSH or PEM text. Either this or `password`.
    #[serde(default)]
    pub private_key: Option<String>,
    /// The private key's passphrase, if it has one.
    #[serde(default)]
    pub passphrase: Option<String>,
    /// The login's password (not empty). Either this or `private_key`.
    #[serde(default)]
    pub password: Option<String>,
}

/// Replace a server's credential, tested first: the server logs in to the host with the new
/// credential (the pinned host key must match; nothing pinned: the key seen is pinned) and runs
/// `true`. Only then is it stored, and connections logged in with the old one are dropped.
/// When the test fails nothing changes.
#[utoipa::path(put, path = "/api/v1/servers/{name}/credential", tag = "servers", operation_id = "set_server_credential",
    params(ServerName),
    request_body = CredentialBody,
    responses(
        (status = 200, description = "The server, now with the new credential", body = ServerDto),
        (status = 404, description = "No such server", body = ErrorBody),
        (status = 409, description = "Not stored: the host key does not match the pinned one, the host is unreachable, or the login cannot run a command", body = ErrorBody),
        (status = 413, description = "The body is over 2 MiB", body = ErrorBody),
        (status = 422, description = "Not stored: the host refused the credential, the key cannot be read (wrong passphrase), or the body is not valid (the field is named)", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn set_credential(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(ServerName { name }): Path<ServerName>,
    Body(bytes): Body,
) -> ApiResult<Json<ServerDto>> {
    let b: CredentialBody = body::json(&bytes)?;
    let row = servers::set_credential(
        &state,
        &actor,
        &name,
        NewCredential {
            private_key: b.private_key,
            passphrase: b.passphrase,
            password: b.password,
        },
    )
    .await?;
    Ok(Json(dto(&state, row)))
}
