//! The servers pages: the list (health at a glance) and a server's detail (address, tags,
//! pinned host key and its fingerprint, a changed key waiting to be accepted, the verified
//! runner and the deployment history).

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};

use super::dashboard::{server_health, ServerItem};
use super::error::UiResult;
use super::session::Session;
use super::{format, render, Ctx};
use crate::state::AppState;
use crate::usecases::servers as uc;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/servers", get(list))
        .route("/servers/{name}", get(show))
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
        .map(|s| ServerItem {
            name: s.name.clone(),
            address: format!("{}@{}:{}", s.username, s.host, s.port),
            health: server_health(s),
            runner: s
                .runner
                .as_ref()
                .map(|r| format!("runner {}", &r.sha256[..r.sha256.len().min(12)]))
                .unwrap_or_else(|| "no runner yet".into()),
        })
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
    deployments: Vec<DeploymentItem>,
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

pub async fn show(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
) -> UiResult<Response> {
    let s = uc::get(&state, &name).await?;
    let deployments = uc::deployments(&state, &s, 20)
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
    Ok(render(&ServerPage {
        ctx: Ctx::new(&session, "servers"),
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
        name: s.name,
        deployments,
    }))
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
