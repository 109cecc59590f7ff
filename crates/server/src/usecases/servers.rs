//! SSH servers: register (credentials encrypted before they reach the store), list, read,
//! remove, test (pinning the host key on first contact, recording a changed one as pending),
//! accept a changed host key, and replace a credential once the host has accepted it.

use cronium_agent::credentials;
use cronium_core::clock::now_ms;
use cronium_core::spec::validate_name;
use cronium_ssh::{Credential, HostKeyStatus, ServerConfig, SshError, TestReport};
use cronium_store::{DeploymentRow, NewServer, ServerRow};

use super::{audit, Actor, UseCaseError, UseCaseResult};
use crate::state::AppState;

/// What registering a server takes (the API's body, the page's form).
#[derive(Debug, Clone)]
pub struct Registration {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    /// OpenSSH or PEM text; either this or `password`.
    pub private_key: Option<String>,
    pub passphrase: Option<String>,
    pub password: Option<String>,
    /// The host key to trust; pinned on first contact when absent.
    pub host_key: Option<String>,
    pub tags: Vec<String>,
}

/// Every registered server, by name.
pub async fn list(state: &AppState) -> UseCaseResult<Vec<ServerRow>> {
    Ok(state.store.list_servers().await?)
}

pub async fn get(state: &AppState, name: &str) -> UseCaseResult<ServerRow> {
    state
        .store
        .get_server_by_name(name)
        .await?
        .ok_or_else(|| UseCaseError::NotFound(format!("server `{name}` not found")))
}

/// The server's health now: its stored checks judged with the configured thresholds.
pub fn health(state: &AppState, s: &ServerRow) -> cronium_core::health::Verdict {
    cronium_core::health::judge(&observed(s), now_ms(), &state.health)
}

/// What the store holds of a server's checks, as the rule reads it.
pub fn observed(s: &ServerRow) -> cronium_core::health::Observed<'_> {
    cronium_core::health::Observed {
        checked_at: s.health.checked_at,
        contact_at: s.health.contact_at,
        failures: s.health.failures,
        error: s.health.error.as_deref(),
        reading: s.health.reading.as_ref(),
    }
}

/// The latest reading, when the stored one is a health report.
pub fn reading(s: &ServerRow) -> Option<cronium_protocol::Health> {
    s.health
        .reading
        .as_ref()
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

/// The server's last health checks, newest first.
pub async fn health_checks(
    state: &AppState,
    server: &ServerRow,
    limit: i64,
) -> UseCaseResult<Vec<cronium_store::HealthCheckRow>> {
    Ok(state.store.list_health_checks(server.id, limit).await?)
}

/// The server's runner deployments, newest first.
pub async fn deployments(
    state: &AppState,
    server: &ServerRow,
    limit: i64,
) -> UseCaseResult<Vec<DeploymentRow>> {
    Ok(state.store.list_deployments(server.id, limit).await?)
}

/// A server as the audit log shows it: never its credentials.
pub fn audit_json(s: &ServerRow) -> serde_json::Value {
    serde_json::json!({
        "name": s.name,
        "host": s.host,
        "port": s.port,
        "user": s.username,
        "auth": s.auth_kind,
        "host_key": s.host_key,
        "pending_host_key": s.pending_host_key,
        "tags": s.tags,
    })
}

/// Checks and registers a server; a conflict when the name is taken.
pub async fn register(
    state: &AppState,
    actor: &Actor,
    r: Registration,
) -> UseCaseResult<ServerRow> {
    let target = format!("server {}", r.name.chars().take(100).collect::<String>());
    let result = register_unrecorded(state, r).await;
    audit::record(state, actor, "server.add", target, None, result, |s| {
        Some(audit_json(s))
    })
    .await
}

async fn register_unrecorded(state: &AppState, r: Registration) -> UseCaseResult<ServerRow> {
    validate_name(&r.name)?;
    if r.host.trim().is_empty() || r.host.trim().chars().any(|c| c.is_whitespace()) {
        return Err(UseCaseError::invalid(
            "host",
            "must be a host name or address",
        ));
    }
    if r.port == 0 {
        return Err(UseCaseError::invalid("port", "must be between 1 and 65535"));
    }
    if r.user.trim().is_empty() {
        return Err(UseCaseError::invalid("user", "must not be empty"));
    }
    for t in &r.tags {
        validate_name(t).map_err(|e| UseCaseError::invalid("tags", e.message))?;
    }
    let credential = credential_of(r.private_key, r.passphrase, r.password)?;
    if let Some(k) = &r.host_key {
        cronium_ssh::validate_host_key(k)
            .map_err(|reason| UseCaseError::invalid("host_key", reason))?;
    }
    Ok(state
        .store
        .create_server(
            &NewServer {
                name: r.name.clone(),
                host: r.host.trim().to_string(),
                port: i64::from(r.port),
                username: r.user,
                auth_kind: credentials::kind(&credential).into(),
                credential: credentials::encrypt(&state.secrets, &r.name, &credential),
                host_key: r.host_key.map(|k| k.trim().to_string()),
                tags: r.tags,
            },
            now_ms(),
        )
        .await?)
}

/// A credential from the API's fields: a private key that this client can read (with its
/// passphrase), or a password that is not empty; exactly one of them.
fn credential_of(
    private_key: Option<String>,
    passphrase: Option<String>,
    password: Option<String>,
) -> UseCaseResult<Credential> {
    match (private_key, password) {
        (Some(pem), None) => {
            cronium_ssh::validate_private_key(&pem, passphrase.as_deref())
                .map_err(|reason| UseCaseError::invalid("private_key", reason))?;
            Ok(Credential::Key { pem, passphrase })
        }
        (None, Some(p)) if !p.is_empty() => Ok(Credential::Password(p)),
        (None, Some(_)) => Err(UseCaseError::invalid("password", "must not be empty")),
        (Some(_), Some(_)) => Err(UseCaseError::invalid(
            "password",
            "give either private_key or password, not both",
        )),
        (None, None) => Err(UseCaseError::invalid(
            "private_key",
            "a private_key or a password is required",
        )),
    }
}

/// The connection settings of a stored server, with the runner version its pins ask for.
pub async fn config_with_pins(state: &AppState, s: &ServerRow) -> UseCaseResult<ServerConfig> {
    let pins = state.store.list_pins().await?;
    let mut cfg = config_of(state, s)?;
    cfg.runner_version = cronium_store::wanted_pin(&pins, s.id, &s.tags).map(|p| p.version.clone());
    Ok(cfg)
}

/// The connection settings of a stored server (the default runner version: see
/// [`config_with_pins`]).
pub fn config_of(state: &AppState, s: &ServerRow) -> UseCaseResult<ServerConfig> {
    let internal = |m: String| UseCaseError::Store(cronium_store::StoreError::Corrupt(m));
    Ok(ServerConfig {
        name: s.name.clone(),
        host: s.host.clone(),
        port: u16::try_from(s.port).map_err(|_| internal("stored port out of range".into()))?,
        user: s.username.clone(),
        credential: credentials::decrypt(&state.secrets, &s.name, &s.credential)
            .map_err(|e| internal(e.to_string()))?,
        host_key: s.host_key.clone(),
        known_runner: s.runner.as_ref().map(|r| cronium_ssh::KnownRunner {
            path: r.path.clone(),
            sha256: r.sha256.clone(),
            verified_at_ms: r.verified_at,
        }),
        platform: s
            .platform
            .as_ref()
            .and_then(|p| cronium_ssh::Platform::new(&p.os, &p.arch)),
        runner_version: None,
    })
}

/// Removes a server (past executions keep its name) and drops its pooled connections.
pub async fn remove(state: &AppState, actor: &Actor, name: &str) -> UseCaseResult<()> {
    let row = get(state, name).await?;
    let result = state
        .store
        .delete_server(row.id)
        .await
        .map(|_| ())
        .map_err(UseCaseError::from);
    if let Some(ssh) = &state.ssh {
        if let Ok(cfg) = config_of(state, &row) {
            ssh.forget(&cfg);
        }
    }
    audit::record(
        state,
        actor,
        "server.remove",
        format!("server {name}"),
        Some(audit_json(&row)),
        result,
        |_| None,
    )
    .await
}

/// How a test saw the host key: `matches`, `first_use` (now pinned), `changed` (now pending).
pub fn key_status(r: &TestReport) -> Option<&'static str> {
    match &r.host_key_status {
        Some(HostKeyStatus::Matches) => Some("matches"),
        Some(HostKeyStatus::FirstUse) => Some("first_use"),
        Some(HostKeyStatus::Changed { .. }) => Some("changed"),
        None => None,
    }
}

/// Connects and reports reachability, login, host key, OS/arch and runner (an unreachable
/// host is a report, not an error). Pins the key on first contact; records a changed key as
/// pending, to be accepted after checking it.
/// Recorded as `server.test`, with the server before and after (a pinned or pending key).
pub async fn test(state: &AppState, actor: &Actor, name: &str) -> UseCaseResult<TestReport> {
    let before = get(state, name).await?;
    let result = test_unrecorded(state, name).await;
    let after = state.store.get_server_by_name(name).await.ok().flatten();
    audit::record(
        state,
        actor,
        "server.test",
        format!("server {name}"),
        Some(audit_json(&before)),
        result,
        |_| after.as_ref().map(audit_json),
    )
    .await
}

async fn test_unrecorded(state: &AppState, name: &str) -> UseCaseResult<TestReport> {
    let row = get(state, name).await?;
    let ssh = state.ssh.as_ref().ok_or_else(|| {
        UseCaseError::invalid(
            "server",
            "the SSH transport is not available on this server",
        )
    })?;
    let cfg = config_with_pins(state, &row).await?;
    let r = ssh.test(&cfg).await;
    match (&r.host_key_status, &r.host_key) {
        (Some(HostKeyStatus::FirstUse), Some(k)) => {
            state.store.pin_host_key(row.id, k, now_ms()).await?;
        }
        (Some(HostKeyStatus::Changed { .. }), Some(k)) => {
            state
                .store
                .set_pending_host_key(row.id, Some(k), now_ms())
                .await?;
        }
        _ => {}
    }
    if r.authenticated {
        store_platform(state, ssh, &row, &cfg).await;
    }
    Ok(r)
}

/// Stores the platform the executor detected on `cfg` when it is not the row's.
pub async fn store_platform(
    state: &AppState,
    ssh: &cronium_ssh::SshExecutor,
    row: &ServerRow,
    cfg: &ServerConfig,
) {
    if let Some(p) = ssh.detected_platform(cfg) {
        if cfg.platform.as_ref() != Some(&p) {
            if let Err(e) = state
                .store
                .set_server_platform(row.id, &p.os, &p.arch, now_ms())
                .await
            {
                tracing::warn!(server = %row.name, error = %e, "storing the detected platform");
            }
        }
    }
}

/// Trusts `key` (default: the pending key the server presented) as the server's host key.
pub async fn accept_key(
    state: &AppState,
    actor: &Actor,
    name: &str,
    key: Option<String>,
) -> UseCaseResult<ServerRow> {
    let before = get(state, name).await?;
    let result = accept_key_unrecorded(state, name, key).await;
    audit::record(
        state,
        actor,
        "server.accept_key",
        format!("server {name}"),
        Some(audit_json(&before)),
        result,
        |s| Some(audit_json(s)),
    )
    .await
}

async fn accept_key_unrecorded(
    state: &AppState,
    name: &str,
    key: Option<String>,
) -> UseCaseResult<ServerRow> {
    let row = get(state, name).await?;
    let key = match key.or(row.pending_host_key.clone()) {
        Some(k) => k,
        None => {
            return Err(UseCaseError::invalid(
                "host_key",
                format!("server `{name}` has no pending host key; run `cronium server test {name}` first or give the key"),
            ))
        }
    };
    cronium_ssh::validate_host_key(&key)
        .map_err(|reason| UseCaseError::invalid("host_key", reason))?;
    state
        .store
        .accept_host_key(row.id, key.trim(), now_ms())
        .await?;
    if let Some(ssh) = &state.ssh {
        if let Ok(cfg) = config_of(state, &row) {
            ssh.forget(&cfg);
        }
    }
    get(state, name).await
}

/// A replacement credential (the API's body): a private key (with its passphrase) or a password.
#[derive(Clone, Default)]
pub struct NewCredential {
    pub private_key: Option<String>,
    pub passphrase: Option<String>,
    pub password: Option<String>,
}

/// Replaces the credential of server `name`, tested before it is kept: a fresh connection with
/// the new credential (the pinned host key must match, as for every connection) runs `true`,
/// and only then is the credential stored, encrypted, and the server's pooled connections
/// (logged in with the old one) dropped. When the test fails nothing changes; the error names
/// the server and why (the login refused, the host key, the host unreachable, the key file).
/// Recorded as `server.set_key`, with the server before and after (never the credential).
pub async fn set_credential(
    state: &AppState,
    actor: &Actor,
    name: &str,
    c: NewCredential,
) -> UseCaseResult<ServerRow> {
    let before = get(state, name).await?;
    let result = set_credential_unrecorded(state, &before, c).await;
    audit::record(
        state,
        actor,
        "server.set_key",
        format!("server {name}"),
        Some(audit_json(&before)),
        result,
        |s| Some(audit_json(s)),
    )
    .await
}

async fn set_credential_unrecorded(
    state: &AppState,
    row: &ServerRow,
    c: NewCredential,
) -> UseCaseResult<ServerRow> {
    let name = &row.name;
    let field = if c.password.is_some() && c.private_key.is_none() {
        "password"
    } else {
        "private_key"
    };
    let credential =
        credential_of(c.private_key, c.passphrase, c.password).map_err(|e| match e {
            UseCaseError::Invalid {
                field: Some(f),
                message,
            } => UseCaseError::Invalid {
                message: format!("{message} (server `{name}` unchanged)"),
                field: Some(f),
            },
            other => other,
        })?;
    let ssh = state.ssh.as_ref().ok_or_else(|| {
        UseCaseError::invalid(
            "server",
            "the SSH transport is not available on this server",
        )
    })?;
    let old = config_of(state, row)?;
    let candidate = ServerConfig {
        credential: credential.clone(),
        ..old.clone()
    };
    let seen_key = ssh
        .check_login(&candidate)
        .await
        .map_err(|e| refused(name, field, e))?;
    let stored = state
        .store
        .set_server_credential(
            row.id,
            credentials::kind(&credential),
            &credentials::encrypt(&state.secrets, name, &credential),
            row.host_key.as_deref(),
            &seen_key,
            now_ms(),
        )
        .await?;
    if !stored {
        return Err(UseCaseError::Conflict {
            field: Some("host_key".into()),
            message: format!(
                "server `{name}`: its host key changed while the credential was tested; nothing was changed, try again"
            ),
        });
    }
    // Runs from now on log in with the new credential; no session of the old one is reused.
    ssh.forget(&old);
    get(state, name).await
}

/// Why the host did not take the new credential, as the caller's error: a refused login or an
/// unreadable key is the credential's fault (422, naming its field); a host key that does not
/// match, an unreachable host or a login that cannot run a command is the host's (409).
fn refused(name: &str, field: &str, e: SshError) -> UseCaseError {
    let message = format!("the new credential was not stored (server `{name}` unchanged): {e}");
    match e {
        SshError::Auth { .. } | SshError::InvalidConfig { .. } => UseCaseError::Invalid {
            message: format!("{field}: {message}"),
            field: Some(field.to_string()),
        },
        SshError::HostKeyChanged { .. } | SshError::HostKeyRejected { .. } => {
            UseCaseError::Conflict {
                message: format!("host_key: {message}"),
                field: Some("host_key".into()),
            }
        }
        _ => UseCaseError::Conflict {
            message,
            field: None,
        },
    }
}
