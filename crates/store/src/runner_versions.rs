//! Runner versions: pins (a server's or a tag's wanted runner version) and rollouts (a version
//! taken to servers batch by batch: the rollout row and one row per server with its batch, its
//! previous version and what happened to it).
//!
//! Not for deciding anything about hosts (the server's rollout use case drives the batches and
//! writes the outcome here) nor for checking that a version has an artifact (the caller knows
//! the executor's artifacts). [`wanted_pin`] is the one rule of which pin applies to a server.

use sqlx::any::AnyRow;

use crate::row::{i64_col, opt_i64, opt_text, text};
use crate::{Store, StoreError};

/// What a pin applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinScope {
    Server(i64),
    Tag(String),
}

/// A pin as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinRow {
    pub id: i64,
    pub scope: PinScope,
    /// The pinned server's name (server pins).
    pub server_name: Option<String>,
    pub version: String,
    pub set_at: i64,
    /// A user name, or `rollout N`.
    pub set_by: String,
}

/// The pin that applies to a server with `server_id` and `tags`: its own, else the most
/// recently set pin of one of its tags (ties: the later row). `None`: the default version.
pub fn wanted_pin<'a>(pins: &'a [PinRow], server_id: i64, tags: &[String]) -> Option<&'a PinRow> {
    pins.iter()
        .find(|p| p.scope == PinScope::Server(server_id))
        .or_else(|| {
            pins.iter()
                .filter(|p| matches!(&p.scope, PinScope::Tag(t) if tags.contains(t)))
                .max_by_key(|p| (p.set_at, p.id))
        })
}

/// A rollout as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutRow {
    pub id: i64,
    pub version: String,
    pub tag: Option<String>,
    /// As given: `2` or `40%`.
    pub batch: String,
    pub pause_ms: i64,
    /// `running`, `succeeded`, `failed`, `rolled_back`.
    pub status: String,
    pub error: Option<String>,
    pub created_by: String,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    pub rolled_back_at: Option<i64>,
}

/// One server of a rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutServerRow {
    pub rollout_id: i64,
    pub server_id: i64,
    pub server_name: String,
    /// 1-based.
    pub batch: i64,
    /// `pending`, `upgraded`, `failed`, `reverted` (its batch failed), `rolled_back`.
    pub status: String,
    pub previous_version: String,
    /// The server's own pin before the rollout, restored by a rollback.
    pub previous_pin: Option<String>,
    pub error: Option<String>,
    pub updated_at: i64,
}

/// A rollout to start: its servers in batch order.
#[derive(Debug, Clone)]
pub struct NewRollout {
    pub version: String,
    pub tag: Option<String>,
    pub batch: String,
    pub pause_ms: i64,
    pub created_by: String,
    pub servers: Vec<NewRolloutServer>,
}

#[derive(Debug, Clone)]
pub struct NewRolloutServer {
    pub server_id: i64,
    pub server_name: String,
    pub batch: i64,
    pub previous_version: String,
    pub previous_pin: Option<String>,
}

/// Why a rollout was not created: one of its servers is in a running rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutBusy {
    pub server: String,
    pub rollout_id: i64,
}

const PIN_COLS: &str =
    "p.id, p.server_id, p.tag, p.version, p.set_at, p.set_by, s.name AS server_name";
const ROLLOUT_COLS: &str = "id, version, tag, batch, pause_ms, status, error, created_by, \
                            created_at, finished_at, rolled_back_at";
const ROLLOUT_SERVER_COLS: &str = "rollout_id, server_id, server_name, batch, status, \
                                   previous_version, previous_pin, error, updated_at";

fn pin_row(row: &AnyRow) -> Result<PinRow, StoreError> {
    let scope = match (opt_i64(row, "server_id")?, opt_text(row, "tag")?) {
        (Some(id), None) => PinScope::Server(id),
        (None, Some(tag)) => PinScope::Tag(tag),
        _ => {
            return Err(StoreError::Corrupt(
                "runner_pins: a pin needs exactly one of server_id and tag".into(),
            ))
        }
    };
    Ok(PinRow {
        id: i64_col(row, "id")?,
        scope,
        server_name: opt_text(row, "server_name")?,
        version: text(row, "version")?,
        set_at: i64_col(row, "set_at")?,
        set_by: text(row, "set_by")?,
    })
}

fn rollout_row(row: &AnyRow) -> Result<RolloutRow, StoreError> {
    Ok(RolloutRow {
        id: i64_col(row, "id")?,
        version: text(row, "version")?,
        tag: opt_text(row, "tag")?,
        batch: text(row, "batch")?,
        pause_ms: i64_col(row, "pause_ms")?,
        status: text(row, "status")?,
        error: opt_text(row, "error")?,
        created_by: text(row, "created_by")?,
        created_at: i64_col(row, "created_at")?,
        finished_at: opt_i64(row, "finished_at")?,
        rolled_back_at: opt_i64(row, "rolled_back_at")?,
    })
}

fn rollout_server_row(row: &AnyRow) -> Result<RolloutServerRow, StoreError> {
    Ok(RolloutServerRow {
        rollout_id: i64_col(row, "rollout_id")?,
        server_id: i64_col(row, "server_id")?,
        server_name: text(row, "server_name")?,
        batch: i64_col(row, "batch")?,
        status: text(row, "status")?,
        previous_version: text(row, "previous_version")?,
        previous_pin: opt_text(row, "previous_pin")?,
        error: opt_text(row, "error")?,
        updated_at: i64_col(row, "updated_at")?,
    })
}

fn check_version(v: &str) -> Result<(), StoreError> {
    if v.is_empty()
        || v.len() > 64
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(StoreError::Invalid(format!(
            "version: '{v}' must be 1 to 64 letters, digits, '_', '-' or '.'"
        )));
    }
    Ok(())
}

const ROLLOUT_STATUSES: [&str; 4] = ["running", "succeeded", "failed", "rolled_back"];
const SERVER_STATUSES: [&str; 5] = ["pending", "upgraded", "failed", "reverted", "rolled_back"];

impl Store {
    /// Pins `scope` to `version`, replacing its pin (a new row: the replaced one's `set_at`
    /// no longer counts).
    pub async fn set_pin(
        &self,
        scope: &PinScope,
        version: &str,
        set_by: &str,
        now: i64,
    ) -> Result<PinRow, StoreError> {
        check_version(version)?;
        let mut tx = self.begin_write().await?;
        let (server_id, tag) = match scope {
            PinScope::Server(id) => (Some(*id), None),
            PinScope::Tag(t) => (None, Some(t.as_str())),
        };
        match scope {
            PinScope::Server(id) => {
                sqlx::query("DELETE FROM runner_pins WHERE server_id = $1")
                    .bind(*id)
                    .execute(&mut *tx)
                    .await?
            }
            PinScope::Tag(t) => {
                sqlx::query("DELETE FROM runner_pins WHERE tag = $1")
                    .bind(t.as_str())
                    .execute(&mut *tx)
                    .await?
            }
        };
        let id: i64 = sqlx::Row::try_get(
            &sqlx::query(
                "INSERT INTO runner_pins (server_id, tag, version, set_at, set_by) \
                 VALUES ($1, $2, $3, $4, $5) RETURNING id",
            )
            .bind(server_id)
            .bind(tag)
            .bind(version)
            .bind(now)
            .bind(set_by)
            .fetch_one(&mut *tx)
            .await?,
            "id",
        )?;
        let row = sqlx::query(&format!(
            "SELECT {PIN_COLS} FROM runner_pins p LEFT JOIN servers s ON s.id = p.server_id \
             WHERE p.id = $1"
        ))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let pin = pin_row(&row)?;
        tx.commit().await?;
        Ok(pin)
    }

    /// Removes `scope`'s pin; whether there was one.
    pub async fn remove_pin(&self, scope: &PinScope) -> Result<bool, StoreError> {
        let done = match scope {
            PinScope::Server(id) => {
                sqlx::query("DELETE FROM runner_pins WHERE server_id = $1")
                    .bind(*id)
                    .execute(&self.write)
                    .await?
            }
            PinScope::Tag(t) => {
                sqlx::query("DELETE FROM runner_pins WHERE tag = $1")
                    .bind(t.as_str())
                    .execute(&self.write)
                    .await?
            }
        };
        Ok(done.rows_affected() > 0)
    }

    /// Every pin: server pins first (by server name), then tag pins (by tag).
    pub async fn list_pins(&self) -> Result<Vec<PinRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {PIN_COLS} FROM runner_pins p LEFT JOIN servers s ON s.id = p.server_id \
             ORDER BY CASE WHEN p.server_id IS NULL THEN 1 ELSE 0 END, s.name, p.tag, p.id"
        ))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(pin_row).collect()
    }

    /// Creates a `running` rollout with its servers, all `pending`; refused (nothing written)
    /// when one of them is in another running rollout.
    pub async fn create_rollout(
        &self,
        r: &NewRollout,
        now: i64,
    ) -> Result<Result<RolloutRow, RolloutBusy>, StoreError> {
        check_version(&r.version)?;
        if r.servers.is_empty() {
            return Err(StoreError::Invalid(
                "servers: a rollout needs at least one server".into(),
            ));
        }
        let mut tx = self.begin_write().await?;
        // On PostgreSQL two creations could otherwise both find no running rollout.
        if self.backend == crate::Backend::Postgres {
            sqlx::query("LOCK TABLE runner_rollouts IN SHARE ROW EXCLUSIVE MODE")
                .execute(&mut *tx)
                .await?;
        }
        let running = sqlx::query(
            "SELECT rs.server_id, rs.server_name, r.id FROM runner_rollout_servers rs \
             JOIN runner_rollouts r ON r.id = rs.rollout_id WHERE r.status = 'running' \
             ORDER BY r.id",
        )
        .fetch_all(&mut *tx)
        .await?;
        for row in &running {
            let sid = i64_col(row, "server_id")?;
            if r.servers.iter().any(|s| s.server_id == sid) {
                return Ok(Err(RolloutBusy {
                    server: text(row, "server_name")?,
                    rollout_id: i64_col(row, "id")?,
                }));
            }
        }
        let row = sqlx::query(&format!(
            "INSERT INTO runner_rollouts (version, tag, batch, pause_ms, status, error, created_by, created_at) \
             VALUES ($1, $2, $3, $4, 'running', NULL, $5, $6) RETURNING {ROLLOUT_COLS}"
        ))
        .bind(&r.version)
        .bind(r.tag.as_deref())
        .bind(&r.batch)
        .bind(r.pause_ms)
        .bind(&r.created_by)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let rollout = rollout_row(&row)?;
        for s in &r.servers {
            sqlx::query(
                "INSERT INTO runner_rollout_servers (rollout_id, server_id, server_name, batch, status, \
                 previous_version, previous_pin, error, updated_at) \
                 VALUES ($1, $2, $3, $4, 'pending', $5, $6, NULL, $7)",
            )
            .bind(rollout.id)
            .bind(s.server_id)
            .bind(&s.server_name)
            .bind(s.batch)
            .bind(&s.previous_version)
            .bind(s.previous_pin.as_deref())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Ok(rollout))
    }

    pub async fn get_rollout(&self, id: i64) -> Result<Option<RolloutRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {ROLLOUT_COLS} FROM runner_rollouts WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(rollout_row).transpose()
    }

    /// Rollouts, newest first.
    pub async fn list_rollouts(&self, limit: i64) -> Result<Vec<RolloutRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {ROLLOUT_COLS} FROM runner_rollouts ORDER BY id DESC LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(rollout_row).collect()
    }

    /// A rollout's servers, by batch and name.
    pub async fn rollout_servers(&self, id: i64) -> Result<Vec<RolloutServerRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {ROLLOUT_SERVER_COLS} FROM runner_rollout_servers WHERE rollout_id = $1 \
             ORDER BY batch, server_name"
        ))
        .bind(id)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(rollout_server_row).collect()
    }

    /// Sets one server's status (and error) in a rollout; whether the row exists.
    pub async fn set_rollout_server(
        &self,
        rollout_id: i64,
        server_id: i64,
        status: &str,
        error: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        if !SERVER_STATUSES.contains(&status) {
            return Err(StoreError::Invalid(format!(
                "status: '{status}' is not one of {}",
                SERVER_STATUSES.join(", ")
            )));
        }
        let done = sqlx::query(
            "UPDATE runner_rollout_servers SET status = $1, error = $2, updated_at = $3 \
             WHERE rollout_id = $4 AND server_id = $5",
        )
        .bind(status)
        .bind(error)
        .bind(now)
        .bind(rollout_id)
        .bind(server_id)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Ends a rollout (`succeeded`, `failed`) or marks it `rolled_back`; whether it changed.
    /// `finished_at` is set once (when it left `running`), `rolled_back_at` by `rolled_back`.
    pub async fn set_rollout_status(
        &self,
        id: i64,
        status: &str,
        error: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        if !ROLLOUT_STATUSES.contains(&status) || status == "running" {
            return Err(StoreError::Invalid(format!(
                "status: '{status}' is not one of succeeded, failed, rolled_back"
            )));
        }
        let done = if status == "rolled_back" {
            sqlx::query(
                "UPDATE runner_rollouts SET status = 'rolled_back', rolled_back_at = $1, \
                 finished_at = COALESCE(finished_at, $1) WHERE id = $2 AND status <> 'running'",
            )
            .bind(now)
            .bind(id)
            .execute(&self.write)
            .await?
        } else {
            sqlx::query(
                "UPDATE runner_rollouts SET status = $1, error = $2, finished_at = $3 \
                 WHERE id = $4 AND status = 'running'",
            )
            .bind(status)
            .bind(error)
            .bind(now)
            .bind(id)
            .execute(&self.write)
            .await?
        };
        Ok(done.rows_affected() > 0)
    }

    /// Marks every `running` rollout `failed` with `reason` (a server start: nothing drives
    /// them any more). Returns their ids.
    pub async fn fail_running_rollouts(
        &self,
        reason: &str,
        now: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let rows = sqlx::query(
            "UPDATE runner_rollouts SET status = 'failed', error = $1, finished_at = $2 \
             WHERE status = 'running' RETURNING id",
        )
        .bind(reason)
        .bind(now)
        .fetch_all(&self.write)
        .await?;
        rows.iter().map(|r| i64_col(r, "id")).collect()
    }
}
