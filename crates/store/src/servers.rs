//! Registered SSH servers and the history of runner deployments to them.
//!
//! Not for credentials in clear: the caller encrypts the credential before `create_server` and
//! decrypts it after reading; the store keeps ciphertext only.

use serde_json::Value;
use sqlx::any::AnyRow;

use crate::artifacts::ServerPlatform;
use crate::row::{i64_col, json, opt_i64, opt_text, text, to_json};
use crate::server_health::health_state;
use crate::store::map_opt;
use crate::{Store, StoreError};
use cronium_model::queue::{HealthState, NewDeployment, RunnerState};

#[derive(Debug, Clone, PartialEq)]
pub struct ServerRow {
    pub id: i64,
    pub name: String,
    pub host: String,
    pub port: i64,
    pub username: String,
    /// `key` or `password`.
    pub auth_kind: String,
    /// Ciphertext, opaque to the store.
    pub credential: Vec<u8>,
    pub host_key: Option<String>,
    pub pending_host_key: Option<String>,
    pub tags: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// The runner last verified on the host, if nothing has put it in doubt since.
    pub runner: Option<RunnerState>,
    /// The latest health check and reading (`record_health_check`).
    pub health: HealthState,
    /// The OS and architecture detected on contact (`set_server_platform`).
    pub platform: Option<ServerPlatform>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewServer {
    pub name: String,
    pub host: String,
    pub port: i64,
    pub username: String,
    pub auth_kind: String,
    pub credential: Vec<u8>,
    pub host_key: Option<String>,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentRow {
    pub id: i64,
    pub server_id: i64,
    pub version: String,
    pub sha256: String,
    /// `deployed`, `verified` (found intact on the host) or `failed`.
    pub outcome: String,
    pub attempts: i64,
    pub duration_ms: i64,
    pub error: Option<String>,
    pub at: i64,
}

const SERVER_COLS: &str = "id, name, host, port, username, auth_kind, credential, host_key, \
                           pending_host_key, tags, created_at, updated_at, runner_path, \
                           runner_sha256, runner_verified_at, health_checked_at, \
                           health_contact_at, health_failures, health_error, health_reading, \
                           health_reading_at, os, arch, platform_detected_at";

fn server_row(row: &AnyRow) -> Result<ServerRow, StoreError> {
    let tags = match json(row, "tags")? {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    Ok(ServerRow {
        id: i64_col(row, "id")?,
        name: text(row, "name")?,
        host: text(row, "host")?,
        port: i64_col(row, "port")?,
        username: text(row, "username")?,
        auth_kind: text(row, "auth_kind")?,
        credential: sqlx::Row::try_get(row, "credential")?,
        host_key: opt_text(row, "host_key")?,
        pending_host_key: opt_text(row, "pending_host_key")?,
        tags,
        created_at: i64_col(row, "created_at")?,
        updated_at: i64_col(row, "updated_at")?,
        runner: match (
            opt_text(row, "runner_path")?,
            opt_text(row, "runner_sha256")?,
            opt_i64(row, "runner_verified_at")?,
        ) {
            (Some(path), Some(sha256), Some(verified_at)) => Some(RunnerState {
                path,
                sha256,
                verified_at,
            }),
            _ => None,
        },
        health: health_state(row)?,
        platform: match (
            opt_text(row, "os")?,
            opt_text(row, "arch")?,
            opt_i64(row, "platform_detected_at")?,
        ) {
            (Some(os), Some(arch), Some(detected_at)) => Some(ServerPlatform {
                os,
                arch,
                detected_at,
            }),
            _ => None,
        },
    })
}

fn deployment_row(row: &AnyRow) -> Result<DeploymentRow, StoreError> {
    Ok(DeploymentRow {
        id: i64_col(row, "id")?,
        server_id: i64_col(row, "server_id")?,
        version: text(row, "version")?,
        sha256: text(row, "sha256")?,
        outcome: text(row, "outcome")?,
        attempts: i64_col(row, "attempts")?,
        duration_ms: i64_col(row, "duration_ms")?,
        error: opt_text(row, "error")?,
        at: i64_col(row, "at")?,
    })
}

impl Store {
    /// Registers a server; `Conflict("name")` when the name is taken.
    pub async fn create_server(&self, s: &NewServer, now: i64) -> Result<ServerRow, StoreError> {
        if !(1..=65535).contains(&s.port) {
            return Err(StoreError::Invalid(format!(
                "port: {} is not a TCP port",
                s.port
            )));
        }
        let tags = to_json("tags", &Value::from(s.tags.clone()))?;
        let row = sqlx::query(&format!(
            "INSERT INTO servers (name, host, port, username, auth_kind, credential, host_key, \
             pending_host_key, tags, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8, $9, $9) RETURNING {SERVER_COLS}"
        ))
        .bind(&s.name)
        .bind(&s.host)
        .bind(s.port)
        .bind(&s.username)
        .bind(&s.auth_kind)
        .bind(s.credential.clone())
        .bind(s.host_key.as_deref())
        .bind(tags)
        .bind(now)
        .fetch_one(&self.write)
        .await?;
        server_row(&row)
    }

    pub async fn get_server_by_name(&self, name: &str) -> Result<Option<ServerRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {SERVER_COLS} FROM servers WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.read)
        .await?;
        map_opt(row, server_row)
    }

    /// All servers, by name.
    pub async fn list_servers(&self) -> Result<Vec<ServerRow>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {SERVER_COLS} FROM servers ORDER BY name"))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(server_row).collect()
    }

    /// Removes a server and its deployment history. Past executions keep the server's name.
    pub async fn delete_server(&self, id: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM servers WHERE id = $1")
            .bind(id)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Pins a host key on first contact: only when none is pinned yet (a concurrent first
    /// contact cannot replace a key another one pinned). Returns whether it was pinned.
    pub async fn pin_host_key(&self, id: i64, key: &str, now: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE servers SET host_key = $1, updated_at = $2 WHERE id = $3 AND host_key IS NULL",
        )
        .bind(key)
        .bind(now)
        .bind(id)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Replaces a server's credential (ciphertext, with its kind) once it has been proven
    /// against the host, and pins `seen_host_key` when no key was pinned yet. Fenced by the
    /// pinned key the proof was made against (`expected_host_key`): when it changed meanwhile
    /// (a key accepted, a first contact pinned one), nothing changes and `false` is returned.
    pub async fn set_server_credential(
        &self,
        id: i64,
        auth_kind: &str,
        credential: &[u8],
        expected_host_key: Option<&str>,
        seen_host_key: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE servers SET auth_kind = $1, credential = $2, \
             host_key = COALESCE(host_key, $3), updated_at = $4 \
             WHERE id = $5 AND (host_key = $6 OR (host_key IS NULL AND $7 = 0))",
        )
        .bind(auth_kind)
        .bind(credential.to_vec())
        .bind(seen_host_key)
        .bind(now)
        .bind(id)
        .bind(expected_host_key.unwrap_or_default())
        .bind(i64::from(expected_host_key.is_some()))
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Records a changed host key seen on contact, for an operator to check and accept.
    pub async fn set_pending_host_key(
        &self,
        id: i64,
        key: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE servers SET pending_host_key = $1, updated_at = $2 WHERE id = $3")
            .bind(key)
            .bind(now)
            .bind(id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Trusts a new host key (the pending one, or one given by the operator). A new key may
    /// mean a new machine, so what was known about its runner and platform is forgotten.
    pub async fn accept_host_key(&self, id: i64, key: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE servers SET host_key = $1, pending_host_key = NULL, runner_path = NULL, \
             runner_sha256 = NULL, runner_verified_at = NULL, os = NULL, arch = NULL, \
             platform_detected_at = NULL, updated_at = $2 WHERE id = $3",
        )
        .bind(key)
        .bind(now)
        .bind(id)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Remembers the runner just verified on a server, or forgets it (`None`: an error put the
    /// deployment in doubt). Does not touch `updated_at`: this is the agent's bookkeeping, not
    /// an operator's change.
    pub async fn set_runner_state(
        &self,
        id: i64,
        state: Option<&RunnerState>,
    ) -> Result<(), StoreError> {
        if let Some(s) = state {
            if s.path.is_empty() {
                return Err(StoreError::Invalid("runner.path: must not be empty".into()));
            }
            if s.sha256.is_empty() {
                return Err(StoreError::Invalid(
                    "runner.sha256: must not be empty".into(),
                ));
            }
        }
        sqlx::query(
            "UPDATE servers SET runner_path = $1, runner_sha256 = $2, runner_verified_at = $3 \
             WHERE id = $4",
        )
        .bind(state.map(|s| s.path.as_str()))
        .bind(state.map(|s| s.sha256.as_str()))
        .bind(state.map(|s| s.verified_at))
        .bind(id)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    pub async fn record_deployment(
        &self,
        server_id: i64,
        d: &NewDeployment,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO runner_deployments (server_id, version, sha256, outcome, attempts, duration_ms, error, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(server_id)
        .bind(&d.version)
        .bind(&d.sha256)
        .bind(&d.outcome)
        .bind(d.attempts)
        .bind(d.duration_ms)
        .bind(d.error.as_deref())
        .bind(d.at)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// A server's deployment history, newest first.
    pub async fn list_deployments(
        &self,
        server_id: i64,
        limit: i64,
    ) -> Result<Vec<DeploymentRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, server_id, version, sha256, outcome, attempts, duration_ms, error, at \
             FROM runner_deployments WHERE server_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(server_id)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(deployment_row).collect()
    }
}
