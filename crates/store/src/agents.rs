//! Remote agents: the tokens that open the agent API (and nothing else), and the registry of
//! agents (`cronium agent` processes and the servers' embedded agents) with their heartbeats.
//!
//! Not for the queue: an agent's claims are ordinary leases (`jobs.rs`), its `worker` is the
//! lease owner; the registry only says who is there and what it can run.

use serde::Serialize;
use serde_json::Value;
use sqlx::any::AnyRow;

use crate::row::{bool_int, i64_col, json, opt_i64, text, to_json};
use crate::store::map_opt;
use crate::{Store, StoreError, LAST_USED_RESOLUTION_MS};

/// An agent token as stored (its hash, never its value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentTokenRow {
    pub id: i64,
    pub name: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// What an agent says of itself when it (re)registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRegistration {
    pub name: String,
    pub worker: String,
    pub version: String,
    pub tags: Vec<String>,
    /// `local`, `container`, `ssh`: the targets it can run.
    pub capabilities: Vec<String>,
    pub concurrency: i64,
    pub embedded: bool,
    pub token_id: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentRow {
    pub name: String,
    pub worker: String,
    pub version: String,
    pub tags: Vec<String>,
    pub capabilities: Vec<String>,
    pub concurrency: i64,
    pub embedded: bool,
    pub started_at: i64,
    pub last_heartbeat_at: i64,
    pub stopped_at: Option<i64>,
    /// Jobs running under its worker's leases now.
    pub running_jobs: i64,
}

const TOKEN_COLS: &str = "id, name, created_at, last_used_at, revoked_at";

fn token_row(row: &AnyRow) -> Result<AgentTokenRow, StoreError> {
    Ok(AgentTokenRow {
        id: i64_col(row, "id")?,
        name: text(row, "name")?,
        created_at: i64_col(row, "created_at")?,
        last_used_at: opt_i64(row, "last_used_at")?,
        revoked_at: opt_i64(row, "revoked_at")?,
    })
}

fn strings(row: &AnyRow, col: &str) -> Result<Vec<String>, StoreError> {
    match json(row, col)? {
        Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                other => Err(StoreError::Corrupt(format!(
                    "agents.{col}: {other} is not a string"
                ))),
            })
            .collect(),
        other => Err(StoreError::Corrupt(format!(
            "agents.{col}: {other} is not an array"
        ))),
    }
}

fn agent_row(row: &AnyRow) -> Result<AgentRow, StoreError> {
    Ok(AgentRow {
        name: text(row, "name")?,
        worker: text(row, "worker")?,
        version: text(row, "version")?,
        tags: strings(row, "tags")?,
        capabilities: strings(row, "capabilities")?,
        concurrency: i64_col(row, "concurrency")?,
        embedded: i64_col(row, "embedded")? != 0,
        started_at: i64_col(row, "started_at")?,
        last_heartbeat_at: i64_col(row, "last_heartbeat_at")?,
        stopped_at: opt_i64(row, "stopped_at")?,
        running_jobs: i64_col(row, "running_jobs")?,
    })
}

fn string_array(field: &str, items: &[String]) -> Result<String, StoreError> {
    to_json(
        field,
        &Value::Array(items.iter().cloned().map(Value::String).collect()),
    )
}

impl Store {
    /// Stores a new agent token's hash under `name`; `Conflict("name")` when the name is taken
    /// (revoked tokens keep theirs).
    pub async fn create_agent_token(
        &self,
        name: &str,
        token_hash: &str,
        now: i64,
    ) -> Result<AgentTokenRow, StoreError> {
        if name.trim().is_empty() {
            return Err(StoreError::Invalid("name: must not be empty".into()));
        }
        if token_hash.trim().is_empty() {
            return Err(StoreError::Invalid("token_hash: must not be empty".into()));
        }
        let row = sqlx::query(&format!(
            "INSERT INTO agent_tokens (name, token_hash, created_at) VALUES ($1, $2, $3) \
             RETURNING {TOKEN_COLS}"
        ))
        .bind(name)
        .bind(token_hash)
        .bind(now)
        .fetch_one(&self.write)
        .await?;
        token_row(&row)
    }

    /// The unrevoked agent token with this hash, its `last_used_at` written at most once per
    /// [`LAST_USED_RESOLUTION_MS`].
    pub async fn find_agent_token(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<AgentTokenRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {TOKEN_COLS} FROM agent_tokens WHERE token_hash = $1 AND revoked_at IS NULL"
        ))
        .bind(token_hash)
        .fetch_optional(&self.read)
        .await?;
        let Some(mut token) = map_opt(row, token_row)? else {
            return Ok(None);
        };
        let stale = token
            .last_used_at
            .is_none_or(|t| now.saturating_sub(t) >= LAST_USED_RESOLUTION_MS);
        if stale {
            sqlx::query("UPDATE agent_tokens SET last_used_at = $1 WHERE id = $2")
                .bind(now)
                .bind(token.id)
                .execute(&self.write)
                .await?;
            token.last_used_at = Some(now);
        }
        Ok(Some(token))
    }

    pub async fn list_agent_tokens(&self) -> Result<Vec<AgentTokenRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {TOKEN_COLS} FROM agent_tokens ORDER BY id"
        ))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(token_row).collect()
    }

    /// Revokes the agent token named `name`: None when there is none or it was revoked.
    pub async fn revoke_agent_token(
        &self,
        name: &str,
        now: i64,
    ) -> Result<Option<AgentTokenRow>, StoreError> {
        let row = sqlx::query(&format!(
            "UPDATE agent_tokens SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL \
             RETURNING {TOKEN_COLS}"
        ))
        .bind(now)
        .bind(name)
        .fetch_optional(&self.write)
        .await?;
        map_opt(row, token_row)
    }

    /// Records an agent's start (a new row, or the same name started again: its worker,
    /// version, tags and capabilities replaced, `stopped_at` cleared).
    pub async fn register_agent(
        &self,
        a: &AgentRegistration,
        now: i64,
    ) -> Result<AgentRow, StoreError> {
        if a.name.trim().is_empty() {
            return Err(StoreError::Invalid("name: must not be empty".into()));
        }
        sqlx::query(
            "INSERT INTO agents (name, worker, version, tags, capabilities, concurrency, \
             embedded, token_id, started_at, last_heartbeat_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) \
             ON CONFLICT (name) DO UPDATE SET worker = excluded.worker, \
             version = excluded.version, tags = excluded.tags, \
             capabilities = excluded.capabilities, concurrency = excluded.concurrency, \
             embedded = excluded.embedded, token_id = excluded.token_id, \
             started_at = excluded.started_at, last_heartbeat_at = excluded.last_heartbeat_at, \
             stopped_at = NULL",
        )
        .bind(&a.name)
        .bind(&a.worker)
        .bind(&a.version)
        .bind(string_array("tags", &a.tags)?)
        .bind(string_array("capabilities", &a.capabilities)?)
        .bind(a.concurrency)
        .bind(bool_int(a.embedded))
        .bind(a.token_id)
        .bind(now)
        .execute(&self.write)
        .await?;
        self.get_agent(&a.name).await?.ok_or_else(|| {
            StoreError::Corrupt(format!("agent {}: registered, then not found", a.name))
        })
    }

    /// An agent's heartbeat: false when no agent of that name runs as `worker` (it registered
    /// again elsewhere, or never did), so that the caller registers anew.
    pub async fn agent_heartbeat(
        &self,
        name: &str,
        worker: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE agents SET last_heartbeat_at = $1, stopped_at = NULL \
             WHERE name = $2 AND worker = $3",
        )
        .bind(now)
        .bind(name)
        .bind(worker)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Marks an agent stopped (it drained and exited).
    pub async fn agent_stopped(
        &self,
        name: &str,
        worker: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE agents SET stopped_at = $1, last_heartbeat_at = $1 \
             WHERE name = $2 AND worker = $3",
        )
        .bind(now)
        .bind(name)
        .bind(worker)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn get_agent(&self, name: &str) -> Result<Option<AgentRow>, StoreError> {
        let row = sqlx::query(&format!("{AGENT_SELECT} WHERE a.name = $1"))
            .bind(name)
            .fetch_optional(&self.read)
            .await?;
        map_opt(row, agent_row)
    }

    /// The agent whose process runs as `worker` (the lease owner of its claims).
    pub async fn agent_by_worker(&self, worker: &str) -> Result<Option<AgentRow>, StoreError> {
        let row = sqlx::query(&format!("{AGENT_SELECT} WHERE a.worker = $1"))
            .bind(worker)
            .fetch_optional(&self.read)
            .await?;
        map_opt(row, agent_row)
    }

    /// What the agents heard of in the last `fresh_ms` (and not stopped) can take: the
    /// claimants [`cronium_model::routing::waiting_for`] weighs a queued job against.
    pub async fn connected_claimants(
        &self,
        now: i64,
        fresh_ms: i64,
    ) -> Result<Vec<cronium_model::Claimant>, StoreError> {
        let rows = sqlx::query(
            "SELECT tags, capabilities FROM agents \
             WHERE stopped_at IS NULL AND last_heartbeat_at >= $1",
        )
        .bind(now.saturating_sub(fresh_ms))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(cronium_model::Claimant::from_registration(
                    &strings(r, "tags")?,
                    &strings(r, "capabilities")?,
                ))
            })
            .collect()
    }

    /// Every agent, by name, with the jobs running under its worker now.
    pub async fn list_agents(&self) -> Result<Vec<AgentRow>, StoreError> {
        let rows = sqlx::query(&format!("{AGENT_SELECT} ORDER BY a.name"))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(agent_row).collect()
    }
}

const AGENT_SELECT: &str = "SELECT a.name, a.worker, a.version, a.tags, a.capabilities, \
     a.concurrency, a.embedded, a.started_at, a.last_heartbeat_at, a.stopped_at, \
     (SELECT COUNT(*) FROM jobs j WHERE j.status = 'running' AND j.lease_owner = a.worker) \
     AS running_jobs FROM agents a";
