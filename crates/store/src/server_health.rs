//! Health checks of SSH servers: the latest contact and reading on the server's row and a short
//! history per server, pruned to the last `keep` checks by the insert's own transaction.
//!
//! Not for judging a reading (`cronium_core::health` does, at read time, with the server's
//! thresholds): the store keeps what was seen and when, the reading as opaque JSON.

use cronium_model::queue::HealthState;
use serde_json::Value;
use sqlx::any::AnyRow;

use crate::row::{bool_col, bool_int, i64_col, json, opt_i64, opt_text, to_json};
use crate::{Store, StoreError};

/// One check to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewHealthCheck {
    pub at: i64,
    /// The host answered (`reading` is what it said, `None` when it had no runner to ask).
    pub ok: bool,
    pub duration_ms: i64,
    pub error: Option<String>,
    pub reading: Option<Value>,
}

/// One check of the history.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckRow {
    pub id: i64,
    pub server_id: i64,
    pub at: i64,
    pub ok: bool,
    pub duration_ms: i64,
    pub error: Option<String>,
    pub reading: Option<Value>,
}

/// Reads the health columns of a `servers` row (`SERVER_COLS` selects them).
pub(crate) fn health_state(row: &AnyRow) -> Result<HealthState, StoreError> {
    Ok(HealthState {
        checked_at: opt_i64(row, "health_checked_at")?,
        contact_at: opt_i64(row, "health_contact_at")?,
        failures: i64_col(row, "health_failures")?,
        error: opt_text(row, "health_error")?,
        reading: Some(json(row, "health_reading")?).filter(|v| !v.is_null()),
        reading_at: opt_i64(row, "health_reading_at")?,
    })
}

fn check_row(row: &AnyRow) -> Result<HealthCheckRow, StoreError> {
    Ok(HealthCheckRow {
        id: i64_col(row, "id")?,
        server_id: i64_col(row, "server_id")?,
        at: i64_col(row, "at")?,
        ok: bool_col(row, "ok")?,
        duration_ms: i64_col(row, "duration_ms")?,
        error: opt_text(row, "error")?,
        reading: Some(json(row, "reading")?).filter(|v| !v.is_null()),
    })
}

impl Store {
    /// Records one check of server `server_id`: appends it to the history, keeps only the last
    /// `keep` checks of that server, and updates the row's latest state, all in one transaction.
    /// A check older than the one the row already holds (a post-run check overtaken by an
    /// interval one) goes into the history only. Returns `false` when the server is gone.
    pub async fn record_health_check(
        &self,
        server_id: i64,
        check: &NewHealthCheck,
        keep: i64,
    ) -> Result<bool, StoreError> {
        if keep < 1 {
            return Err(StoreError::Invalid(format!(
                "keep: must be at least 1, got {keep}"
            )));
        }
        if check.duration_ms < 0 {
            return Err(StoreError::Invalid(format!(
                "duration_ms: must not be negative, got {}",
                check.duration_ms
            )));
        }
        let reading = match &check.reading {
            Some(v) => Some(to_json("reading", v)?),
            None => None,
        };
        let mut tx = self.begin_write().await?;
        let exists = sqlx::query(&format!(
            "SELECT id FROM servers WHERE id = $1{}",
            self.for_update()
        ))
        .bind(server_id)
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
        if !exists {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO server_health (server_id, at, ok, duration_ms, error, reading) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(server_id)
        .bind(check.at)
        .bind(bool_int(check.ok))
        .bind(check.duration_ms)
        .bind(check.error.as_deref())
        .bind(reading.as_deref())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM server_health WHERE server_id = $1 AND id NOT IN \
             (SELECT id FROM server_health WHERE server_id = $2 ORDER BY id DESC LIMIT $3)",
        )
        .bind(server_id)
        .bind(server_id)
        .bind(keep)
        .execute(&mut *tx)
        .await?;
        let fresh = "(health_checked_at IS NULL OR health_checked_at <= $1)";
        if check.ok {
            sqlx::query(&format!(
                "UPDATE servers SET health_checked_at = $2, health_contact_at = $3, \
                 health_failures = 0, health_error = $4, \
                 health_reading = COALESCE($5, health_reading), \
                 health_reading_at = CASE WHEN $6 = 1 THEN $7 ELSE health_reading_at END \
                 WHERE id = $8 AND {fresh}"
            ))
            .bind(check.at)
            .bind(check.at)
            .bind(check.at)
            .bind(check.error.as_deref())
            .bind(reading.as_deref())
            .bind(i64::from(reading.is_some()))
            .bind(check.at)
            .bind(server_id)
            .execute(&mut *tx)
            .await?;
        } else {
            sqlx::query(&format!(
                "UPDATE servers SET health_checked_at = $2, \
                 health_failures = health_failures + 1, health_error = $3 \
                 WHERE id = $4 AND {fresh}"
            ))
            .bind(check.at)
            .bind(check.at)
            .bind(check.error.as_deref())
            .bind(server_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// A server's last checks, newest first.
    pub async fn list_health_checks(
        &self,
        server_id: i64,
        limit: i64,
    ) -> Result<Vec<HealthCheckRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, server_id, at, ok, duration_ms, error, reading FROM server_health \
             WHERE server_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(server_id)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(check_row).collect()
    }
}
