//! The servers pages: the list (health at a glance), a server's detail (address, tags, pinned
//! host key and its fingerprint, a changed key waiting to be accepted, the verified runner and
//! the deployment history; test, accept the key, remove) and the form that registers one with
//! its private key uploaded as a file (or pasted, or a password).

use askama::Template;
use axum::extract::{Multipart, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;

use super::dashboard::{server_health, server_item, ServerItem};
use super::error::{UiError, UiResult};
use super::session::Session;
use super::{format, render, Ctx};
use crate::authz::{get, post, Role, Routes};
use crate::state::AppState;
use crate::usecases::servers::{self as uc, Registration};
use crate::usecases::{Actor, UseCaseError};

pub fn routes() -> Routes<AppState> {
    use Role::{Operator, Viewer};
    Routes::new()
        .route("/servers", get(Viewer, list))
        // Not `/servers/add`: `add` is a valid server name.
        .route("/add-server", get(Operator, add_form).post(Operator, add))
        .route("/servers/{name}", get(Viewer, show))
        .route("/servers/{name}/test", post(Operator, test))
        .route("/servers/{name}/accept-key", post(Operator, accept_key))
        .route("/servers/{name}/delete", post(Operator, delete))
}

#[derive(Template)]
#[template(path = "servers.html")]
struct ServersPage {
    ctx: Ctx,
    servers: Vec<ServerItem>,
}

pub async fn list(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> UiResult<Response> {
    let servers = uc::list(&state)
        .await?
        .iter()
        .map(|s| server_item(&state, s))
        .collect();
    Ok(render(&ServersPage {
        ctx: Ctx::new(&session, "servers"),
        servers,
    }))
}

pub struct DeploymentItem {
    pub at: String,
    pub version: String,
    pub outcome: String,
    pub attempts: i64,
    pub took: String,
    pub error: String,
}

#[derive(Template)]
#[template(path = "server.html")]
struct ServerPage {
    ctx: Ctx,
    name: String,
    address: String,
    auth: String,
    tags: Vec<String>,
    health: &'static str,
    host_key: String,
    fingerprint: String,
    pending_key: String,
    pending_fingerprint: String,
    runner: String,
    runner_verified: String,
    /// `linux x86_64 (detected ...)`, or empty.
    platform: String,
    deployments: Vec<DeploymentItem>,
    report: Option<ReportItem>,
    done: Option<String>,
    /// The health status, its reasons and the latest reading.
    status: &'static str,
    reasons: Vec<String>,
    checked: String,
    contact: String,
    failures: i64,
    health_error: String,
    reading: Option<ReadingItem>,
    checks: Vec<CheckItem>,
}

/// The latest `cronium-runner health` reading, as the page shows it.
pub struct ReadingItem {
    pub at: String,
    pub runner_version: String,
    pub cpus: u32,
    pub load: String,
    pub uptime: String,
    pub memory: String,
    pub work_dir: String,
    pub deploy_dir: String,
}

pub struct CheckItem {
    pub at: String,
    pub ok: bool,
    pub took: String,
    pub error: String,
}

fn disk_line(d: &cronium_protocol::Disk) -> String {
    format!(
        "{}: {} free of {} ({:.1}%)",
        d.path,
        cronium_core::duration::ByteSize(d.free_bytes),
        cronium_core::duration::ByteSize(d.total_bytes),
        d.free_percent()
    )
}

/// What a connection test found, as the page shows it.
pub struct ReportItem {
    pub reachable: bool,
    pub authenticated: bool,
    pub key_status: String,
    pub fingerprint: String,
    pub os: String,
    pub arch: String,
    pub runner_version: String,
    pub latency_ms: u64,
    pub error: String,
}

/// `SHA256:...` of an OpenSSH public key line, as `ssh-keygen -l` prints it.
pub fn fingerprint(key: &str) -> String {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let Some(blob) = key.split_whitespace().nth(1) else {
        return String::new();
    };
    match base64::engine::general_purpose::STANDARD.decode(blob) {
        Ok(bytes) => format!(
            "SHA256:{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(bytes))
        ),
        Err(_) => String::new(),
    }
}

async fn server_page(
    state: &AppState,
    session: &Session,
    name: &str,
    report: Option<ReportItem>,
    done: Option<String>,
) -> UiResult<ServerPage> {
    let s = uc::get(state, name).await?;
    let deployments = uc::deployments(state, &s, 20)
        .await?
        .into_iter()
        .map(|d| DeploymentItem {
            at: format::ts(Some(d.at)),
            version: d.version,
            outcome: d.outcome,
            attempts: d.attempts,
            took: format::duration(Some(d.duration_ms)),
            error: d.error.unwrap_or_default(),
        })
        .collect();
    let host_key = s.host_key.clone().unwrap_or_default();
    let pending_key = s.pending_host_key.clone().unwrap_or_default();
    let verdict = uc::health(state, &s);
    let reading = uc::reading(&s).map(|h| ReadingItem {
        at: format::ts(s.health.reading_at),
        runner_version: h.runner_version.clone(),
        cpus: h.cpus,
        load: format!("{:.2} {:.2} {:.2}", h.load[0], h.load[1], h.load[2]),
        uptime: format::duration(Some(h.uptime_s as i64 * 1000)),
        memory: format!(
            "{} available of {} ({:.1}%)",
            cronium_core::duration::ByteSize(h.memory_available_bytes),
            cronium_core::duration::ByteSize(h.memory_total_bytes),
            h.memory_available_percent()
        ),
        work_dir: disk_line(&h.work_dir),
        deploy_dir: disk_line(&h.deploy_dir),
    });
    let checks = uc::health_checks(state, &s, 20)
        .await?
        .into_iter()
        .map(|c| CheckItem {
            at: format::ts(Some(c.at)),
            ok: c.ok,
            took: format::duration(Some(c.duration_ms)),
            error: c.error.unwrap_or_default(),
        })
        .collect();
    Ok(ServerPage {
        status: verdict.status.as_str(),
        reasons: verdict.reasons,
        checked: format::ts(s.health.checked_at),
        contact: format::ts(s.health.contact_at),
        failures: s.health.failures,
        health_error: s.health.error.clone().unwrap_or_default(),
        reading,
        checks,
        ctx: Ctx::new(session, "servers"),
        address: format!("{}@{}:{}", s.username, s.host, s.port),
        auth: s.auth_kind.clone(),
        tags: s.tags.clone(),
        health: server_health(&s),
        fingerprint: fingerprint(&host_key),
        pending_fingerprint: fingerprint(&pending_key),
        host_key,
        pending_key,
        runner: s
            .runner
            .as_ref()
            .map(|r| r.sha256.clone())
            .unwrap_or_default(),
        runner_verified: format::ts(s.runner.as_ref().map(|r| r.verified_at)),
        platform: s
            .platform
            .as_ref()
            .map(|p| {
                format!(
                    "{}/{} (detected {})",
                    p.os,
                    p.arch,
                    format::ts(Some(p.detected_at))
                )
            })
            .unwrap_or_default(),
        name: s.name,
        deployments,
        report,
        done,
    })
}

#[derive(serde::Deserialize, Default)]
pub struct ShowQuery {
    done: Option<String>,
}

pub async fn show(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    axum::extract::Query(q): axum::extract::Query<ShowQuery>,
) -> UiResult<Response> {
    let done = match q.done.as_deref() {
        Some("added") => Some("Server registered. Test it to pin its host key.".to_string()),
        Some("accepted") => Some("The new host key is trusted.".to_string()),
        _ => None,
    };
    Ok(render(
        &server_page(&state, &session, &name, None, done).await?,
    ))
}

/// Connects now and shows what it found (pinning the key on first contact).
pub async fn test(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
) -> UiResult<Response> {
    let r = uc::test(&state, &session.actor(), &name).await?;
    let report = ReportItem {
        reachable: r.reachable,
        authenticated: r.authenticated,
        key_status: match uc::key_status(&r) {
            Some("matches") => "matches the pinned key",
            Some("first_use") => "seen for the first time: now pinned",
            Some("changed") => "CHANGED: not trusted until accepted",
            _ => "not seen",
        }
        .to_string(),
        fingerprint: r.host_key_fingerprint.clone().unwrap_or_default(),
        os: r.os.clone().unwrap_or_default(),
        arch: r.arch.clone().unwrap_or_default(),
        runner_version: r.runner_version.clone().unwrap_or_default(),
        latency_ms: r.latency_ms,
        error: r.error.clone().unwrap_or_default(),
    };
    Ok(render(
        &server_page(&state, &session, &name, Some(report), None).await?,
    ))
}

pub async fn accept_key(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
) -> UiResult<Response> {
    uc::accept_key(&state, &actor, &name, None).await?;
    Ok(Redirect::to(&format!("/servers/{name}?done=accepted")).into_response())
}

pub async fn delete(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
) -> UiResult<Response> {
    uc::remove(&state, &actor, &name).await?;
    Ok(Redirect::to("/servers").into_response())
}

/// The registration form's fields as typed (kept when the form is shown again).
#[derive(Default)]
pub struct AddForm {
    pub name: String,
    pub host: String,
    pub port: String,
    pub user: String,
    pub auth: String,
    pub tags: String,
    pub host_key: String,
}

#[derive(Template)]
#[template(path = "server_add.html")]
struct AddPage {
    ctx: Ctx,
    form: AddForm,
    error: Option<(String, String)>,
}

pub async fn add_form(Extension(session): Extension<Session>) -> UiResult<Response> {
    Ok(render(&AddPage {
        ctx: Ctx::new(&session, "servers"),
        form: AddForm {
            port: "22".into(),
            user: "root".into(),
            auth: "key".into(),
            ..Default::default()
        },
        error: None,
    }))
}

/// Registers a server from the form (`multipart/form-data`: the key arrives as a file).
pub async fn add(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    mut multipart: Multipart,
) -> UiResult<Response> {
    let mut form = AddForm::default();
    let (mut key_file, mut key_text, mut passphrase, mut password) =
        (String::new(), String::new(), String::new(), String::new());
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| UiError::BadRequest(format!("the form could not be read: {e}")))?
    {
        let name = field.name().unwrap_or_default().to_string();
        let text = field
            .text()
            .await
            .map_err(|e| UiError::BadRequest(format!("{name}: {e}")))?;
        match name.as_str() {
            "name" => form.name = text.trim().to_string(),
            "host" => form.host = text.trim().to_string(),
            "port" => form.port = text.trim().to_string(),
            "user" => form.user = text.trim().to_string(),
            "auth" => form.auth = text,
            "tags" => form.tags = text,
            "host_key" => form.host_key = text.trim().to_string(),
            "key_file" => key_file = text,
            "key_text" => key_text = text,
            "passphrase" => passphrase = text,
            "password" => password = text,
            _ => {}
        }
    }
    let refuse = |form: AddForm, field: &str, message: String| {
        let page = AddPage {
            ctx: Ctx::new(&session, "servers"),
            form,
            error: Some((field.to_string(), message)),
        };
        Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&page)).into_response())
    };
    let port = match form.port.parse::<u16>() {
        Ok(p) => p,
        Err(_) => {
            return refuse(
                form,
                "port",
                "port: must be a number between 1 and 65535".into(),
            )
        }
    };
    let key = if key_file.trim().is_empty() {
        key_text
    } else {
        key_file
    };
    let (private_key, password) = match form.auth.as_str() {
        "password" => (None, Some(password)),
        _ if key.trim().is_empty() => {
            return refuse(
                form,
                "private_key",
                "private_key: choose the key file (or paste the key)".into(),
            )
        }
        _ => (Some(key), None),
    };
    let registration = Registration {
        name: form.name.clone(),
        host: form.host.clone(),
        port,
        user: form.user.clone(),
        private_key,
        passphrase: Some(passphrase).filter(|p| !p.is_empty()),
        password,
        host_key: Some(form.host_key.clone()).filter(|k| !k.is_empty()),
        tags: form
            .tags
            .split([',', ' '])
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
    };
    match uc::register(&state, &session.actor(), registration).await {
        Ok(row) => Ok(Redirect::to(&format!("/servers/{}?done=added", row.name)).into_response()),
        Err(e @ UseCaseError::Invalid { .. }) => {
            let field = e.field().unwrap_or("name").to_string();
            refuse(form, &field, e.to_string())
        }
        Err(UseCaseError::Store(cronium_store::StoreError::Conflict(_))) => {
            let m = format!("name: a server named `{}` exists already", form.name);
            refuse(form, "name", m)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fingerprints_are_those_of_ssh_keygen() {
        // ssh-keygen -lf of this key prints SHA256:LQ6NRmRNhPcNZpuEsIZgq+X4UBDP6y0ZaRDOfCatPBo
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGd7Ym2j3VH0y5fJeoYyXUGkTpDMxmv7h3wUu2BqvRaL";
        let fp = super::fingerprint(key);
        assert!(fp.starts_with("SHA256:"), "{fp}");
        assert_eq!(fp.len(), "SHA256:".len() + 43);
        assert_eq!(super::fingerprint("garbage"), "");
    }
}
