//! Events and their immutable versions: create, update, apply (create-or-update by name), read,
//! delete, status changes.
//!
//! The spec is opaque JSON here: validating it is the caller's job (cronium-core). The event's
//! status is a column beside it (`events.status`, the only place it lives), never inside it.
//! Schedule state (`next_fire_at`, `last_fired_at`) is written by `schedule.rs`, not here. The
//! `broken` mark is the scheduler's verdict on a stored spec it cannot use; a new version clears
//! it.

use cronium_model::EventStatus;
use serde::Serialize;
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Transaction};

use crate::row::{i64_col, json, opt_i64, opt_text, text, to_json, word};
use crate::store::map_opt;
use crate::{Store, StoreError};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRow {
    pub id: i64,
    pub name: String,
    /// Starts at 1; bumped when the spec or the status changes through an update.
    pub version: i64,
    pub status: EventStatus,
    pub spec: Value,
    pub created_at: i64,
    pub updated_at: i64,
    pub next_fire_at: Option<i64>,
    pub last_fired_at: Option<i64>,
    /// Why this version's stored spec cannot be used (it no longer parses), as found by the
    /// scheduler, or at read time when the stored text is not even JSON (then `spec` is Null).
    /// None for a usable event.
    pub broken: Option<String>,
}

/// What [`Store::apply_event`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Applied {
    Created,
    Updated,
    Unchanged,
}

macro_rules! event_cols {
    () => {
        "id, name, version, status, spec, created_at, updated_at, next_fire_at, last_fired_at, broken"
    };
}

fn event_row(row: &AnyRow) -> Result<EventRow, StoreError> {
    let mut broken = opt_text(row, "broken")?;
    // One event whose stored text is not JSON must not make every listing of events fail (and
    // with it the scheduler for all the others): it reads as a broken event instead.
    let spec = match json(row, "spec") {
        Ok(v) => v,
        Err(StoreError::Corrupt(why)) => {
            broken.get_or_insert(format!("spec: the stored text is not JSON ({why})"));
            Value::Null
        }
        Err(e) => return Err(e),
    };
    Ok(EventRow {
        id: i64_col(row, "id")?,
        name: text(row, "name")?,
        version: i64_col(row, "version")?,
        status: word(row, "status")?,
        spec,
        created_at: i64_col(row, "created_at")?,
        updated_at: i64_col(row, "updated_at")?,
        next_fire_at: opt_i64(row, "next_fire_at")?,
        last_fired_at: opt_i64(row, "last_fired_at")?,
        broken,
    })
}

fn check_name(name: &str) -> Result<(), StoreError> {
    if name.trim().is_empty() {
        return Err(StoreError::Invalid("name: must not be empty".into()));
    }
    Ok(())
}

impl Store {
    /// Creates an event at version 1. `Conflict("name")` if the name is taken (nothing written).
    pub async fn create_event(
        &self,
        name: &str,
        status: EventStatus,
        spec: &Value,
        now: i64,
    ) -> Result<EventRow, StoreError> {
        check_name(name)?;
        let spec_text = to_json("spec", spec)?;
        let mut tx = self.begin_write().await?;
        let row = insert_event(&mut tx, name, status, &spec_text, now).await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Replaces an event's spec and status. The version is bumped (and a version row written)
    /// only when one of them differs from the stored one; `updated_at` only moves then too.
    pub async fn update_event(
        &self,
        id: i64,
        status: EventStatus,
        spec: &Value,
        now: i64,
    ) -> Result<EventRow, StoreError> {
        let spec_text = to_json("spec", spec)?;
        let mut tx = self.begin_write().await?;
        let sql = format!(
            concat!("SELECT ", event_cols!(), " FROM events WHERE id = $1{}"),
            self.for_update()
        );
        let current = sqlx::query(&sql).bind(id).fetch_optional(&mut *tx).await?;
        let Some(current) = map_opt(current, event_row)? else {
            return Err(StoreError::NotFound(format!("event {id}")));
        };
        let (row, _) = update_locked(&mut tx, current, status, spec, &spec_text, now).await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Creates the event `name` or updates it in place, in one transaction.
    pub async fn apply_event(
        &self,
        name: &str,
        status: EventStatus,
        spec: &Value,
        now: i64,
    ) -> Result<(EventRow, Applied), StoreError> {
        check_name(name)?;
        let spec_text = to_json("spec", spec)?;
        match self.apply_once(name, status, spec, &spec_text, now).await {
            // Two servers applying a new name at once (PostgreSQL: neither saw the row, the
            // second insert hit the unique name): the second becomes an update of the first.
            Err(StoreError::Conflict(field)) if field == "name" => {
                self.apply_once(name, status, spec, &spec_text, now).await
            }
            other => other,
        }
    }

    async fn apply_once(
        &self,
        name: &str,
        status: EventStatus,
        spec: &Value,
        spec_text: &str,
        now: i64,
    ) -> Result<(EventRow, Applied), StoreError> {
        let mut tx = self.begin_write().await?;
        let sql = format!(
            concat!("SELECT ", event_cols!(), " FROM events WHERE name = $1{}"),
            self.for_update()
        );
        let current = sqlx::query(&sql)
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        let result = match map_opt(current, event_row)? {
            None => (
                insert_event(&mut tx, name, status, spec_text, now).await?,
                Applied::Created,
            ),
            Some(current) => {
                let (row, changed) =
                    update_locked(&mut tx, current, status, spec, spec_text, now).await?;
                (
                    row,
                    if changed {
                        Applied::Updated
                    } else {
                        Applied::Unchanged
                    },
                )
            }
        };
        tx.commit().await?;
        Ok(result)
    }

    pub async fn get_event(&self, id: i64) -> Result<Option<EventRow>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            event_cols!(),
            " FROM events WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.read)
        .await?;
        map_opt(row, event_row)
    }

    pub async fn get_event_by_name(&self, name: &str) -> Result<Option<EventRow>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            event_cols!(),
            " FROM events WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.read)
        .await?;
        map_opt(row, event_row)
    }

    /// The spec an event had at `version` (what a job of that version ran).
    pub async fn get_event_version(
        &self,
        event_id: i64,
        version: i64,
    ) -> Result<Option<Value>, StoreError> {
        let row =
            sqlx::query("SELECT spec FROM event_versions WHERE event_id = $1 AND version = $2")
                .bind(event_id)
                .bind(version)
                .fetch_optional(&self.read)
                .await?;
        map_opt(row, |r| json(r, "spec"))
    }

    /// All events, by name.
    pub async fn list_events(&self) -> Result<Vec<EventRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_cols!(),
            " FROM events ORDER BY name"
        ))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(event_row).collect()
    }

    /// Events whose `next_fire_at` is set, earliest first (what a scheduler loads).
    pub async fn list_scheduled_events(&self) -> Result<Vec<EventRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_cols!(),
            " FROM events WHERE next_fire_at IS NOT NULL ORDER BY next_fire_at, id"
        ))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(event_row).collect()
    }

    /// Deletes an event and its versions. Its jobs stay (history) with `event_id` NULL and their
    /// `event_name` intact. False if there was no such event.
    pub async fn delete_event(&self, id: i64) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        // Explicit rather than relying on ON DELETE SET NULL alone, so the behaviour does not
        // depend on the connection's foreign_keys pragma.
        sqlx::query("UPDATE jobs SET event_id = NULL WHERE event_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM event_versions WHERE event_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM events WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Marks version `version` of an event as broken with `reason` (or clears the mark with
    /// `None`). Fenced by the version: a newer version applied meanwhile is left alone (false).
    pub async fn set_event_broken(
        &self,
        id: i64,
        version: i64,
        reason: Option<&str>,
    ) -> Result<bool, StoreError> {
        if reason.is_some_and(|r| r.trim().is_empty()) {
            return Err(StoreError::Invalid("reason: must not be empty".into()));
        }
        let done = sqlx::query("UPDATE events SET broken = $1 WHERE id = $2 AND version = $3")
            .bind(reason)
            .bind(id)
            .bind(version)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// How many events are marked broken.
    pub async fn count_broken_events(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM events WHERE broken IS NOT NULL")
            .fetch_one(&self.read)
            .await?;
        i64_col(&row, "n")
    }

    /// Changes only the status (pause, resume, archive): no new version, the spec is untouched.
    pub async fn set_event_status(
        &self,
        id: i64,
        status: EventStatus,
        now: i64,
    ) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE events SET status = $1, updated_at = $2 WHERE id = $3")
            .bind(status.as_str())
            .bind(now)
            .bind(id)
            .execute(&self.write)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("event {id}")));
        }
        Ok(())
    }
}

/// Pauses an active event that reached its `max_executions` (no next fire either), inside the
/// transaction that inserted (or refused) its job. Like [`Store::set_event_status`], no new
/// version. An event that is not active (draft, archived, already paused) keeps its status.
pub(crate) async fn pause_event(
    conn: &mut AnyConnection,
    event_id: i64,
    now: i64,
) -> Result<(), StoreError> {
    let paused = sqlx::query(
        "UPDATE events SET status = 'paused', next_fire_at = NULL, updated_at = $1 \
         WHERE id = $2 AND status = 'active'",
    )
    .bind(now)
    .bind(event_id)
    .execute(&mut *conn)
    .await?;
    if paused.rows_affected() > 0 {
        tracing::info!(event_id, "execution limit reached; event paused");
    }
    Ok(())
}

async fn insert_event(
    tx: &mut Transaction<'static, Any>,
    name: &str,
    status: EventStatus,
    spec_text: &str,
    now: i64,
) -> Result<EventRow, StoreError> {
    let row = sqlx::query(concat!(
        "INSERT INTO events (name, version, status, spec, created_at, updated_at) ",
        "VALUES ($1, 1, $2, $3, $4, $4) RETURNING ",
        event_cols!()
    ))
    .bind(name)
    .bind(status.as_str())
    .bind(spec_text)
    .bind(now)
    .fetch_one(&mut **tx)
    .await?;
    let event = event_row(&row)?;
    insert_version(tx, event.id, 1, status, spec_text, now).await?;
    Ok(event)
}

/// Updates a row the transaction already holds; returns the row and whether anything changed.
async fn update_locked(
    tx: &mut Transaction<'static, Any>,
    current: EventRow,
    status: EventStatus,
    spec: &Value,
    spec_text: &str,
    now: i64,
) -> Result<(EventRow, bool), StoreError> {
    // Value equality ignores object key order, so re-serialised but identical specs are no-ops.
    if current.status == status && &current.spec == spec {
        return Ok((current, false));
    }
    let version = current.version + 1;
    // A new version is a spec the caller validated: whatever made the old one broken is gone.
    let row = sqlx::query(concat!(
        "UPDATE events SET version = $1, status = $2, spec = $3, updated_at = $4, broken = NULL ",
        "WHERE id = $5 RETURNING ",
        event_cols!()
    ))
    .bind(version)
    .bind(status.as_str())
    .bind(spec_text)
    .bind(now)
    .bind(current.id)
    .fetch_one(&mut **tx)
    .await?;
    insert_version(tx, current.id, version, status, spec_text, now).await?;
    Ok((event_row(&row)?, true))
}

async fn insert_version(
    tx: &mut Transaction<'static, Any>,
    event_id: i64,
    version: i64,
    status: EventStatus,
    spec_text: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO event_versions (event_id, version, status, spec, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(event_id)
    .bind(version)
    .bind(status.as_str())
    .bind(spec_text)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
