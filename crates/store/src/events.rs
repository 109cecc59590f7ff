//! Events and their immutable versions: create, update, apply (create-or-update by name), read,
//! delete, status changes, and the event's job policy.
//!
//! The spec is opaque JSON here: validating it is the caller's job (cronium-core). The event's
//! status is a column beside it (`events.status`, the only place it lives), never inside it.
//! So is its job policy (`max_attempts`, backoff, timeout, `max_executions`: `EventSpec::policy`
//! in cronium-core), written by the `*_with_policy` writes so that a workflow node's job can be
//! built from rows alone; a write without it (or a row older than workflows) leaves the policy
//! unknown (`policy: None`), and such an event's workflow nodes fail until it is applied again
//! (see [`Store::events_without_policy`] to backfill).
//!
//! Events named `WORKFLOW/NODE` with `workflow_id` set are the inline nodes of workflows: written
//! and deleted with their workflow (`workflows.rs`), hidden from [`Store::list_events`], never
//! deleted on their own; `/` is refused in the names of other events.
//! Schedule state (`next_fire_at`, `last_fired_at`) is written by `schedule.rs`, not here. The
//! `broken` mark is the scheduler's verdict on a stored spec it cannot use; a new version clears
//! it.

use cronium_model::{EventStatus, JobPolicy};
use serde::Serialize;
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::AnyConnection;

use crate::row::{i64_col, json, opt_i32, opt_i64, opt_text, text, to_json, word};
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
    /// The job policy of the current version, None when it was written without one (before
    /// workflows existed, or through a write that did not give it).
    pub policy: Option<JobPolicy>,
    /// The workflow whose inline node this event is; None for a user's event.
    pub workflow_id: Option<i64>,
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
        "id, name, version, status, spec, created_at, updated_at, next_fire_at, last_fired_at, \
         broken, max_attempts, backoff_ms, max_backoff_ms, timeout_ms, max_executions, workflow_id"
    };
}
pub(crate) use event_cols;

pub(crate) fn event_row(row: &AnyRow) -> Result<EventRow, StoreError> {
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
        policy: policy_cols(row)?,
        workflow_id: opt_i64(row, "workflow_id")?,
    })
}

/// The five policy columns, all set or none.
fn policy_cols(row: &AnyRow) -> Result<Option<JobPolicy>, StoreError> {
    let cols = (
        opt_i32(row, "max_attempts")?,
        opt_i64(row, "backoff_ms")?,
        opt_i64(row, "max_backoff_ms")?,
        opt_i64(row, "timeout_ms")?,
        opt_i64(row, "max_executions")?,
    );
    Ok(match cols {
        (
            Some(max_attempts),
            Some(backoff_ms),
            Some(max_backoff_ms),
            Some(timeout_ms),
            Some(max_executions),
        ) => Some(JobPolicy {
            max_attempts,
            backoff_ms,
            max_backoff_ms,
            timeout_ms,
            max_executions,
        }),
        _ => None,
    })
}

/// A policy the queue can use: what `validate_new_job` would refuse on a job is refused here.
pub(crate) fn check_policy(field: &str, p: &JobPolicy) -> Result<(), StoreError> {
    let bad = |what: &str, v: i64| {
        Err(StoreError::Invalid(format!(
            "{field}.{what}: must not be negative, got {v}"
        )))
    };
    if p.max_attempts < 1 {
        return Err(StoreError::Invalid(format!(
            "{field}.max_attempts: must be at least 1, got {}",
            p.max_attempts
        )));
    }
    for (what, v) in [
        ("backoff_ms", p.backoff_ms),
        ("max_backoff_ms", p.max_backoff_ms),
        ("timeout_ms", p.timeout_ms),
        ("max_executions", p.max_executions),
    ] {
        if v < 0 {
            return bad(what, v);
        }
    }
    Ok(())
}

/// The name of a user's event: not empty, and without `/`, which only the events of inline
/// workflow nodes (`WORKFLOW/NODE`) have.
pub(crate) fn check_name(name: &str) -> Result<(), StoreError> {
    if name.trim().is_empty() {
        return Err(StoreError::Invalid("name: must not be empty".into()));
    }
    if name.contains('/') {
        return Err(StoreError::Invalid(format!(
            "name: `{name}` contains `/`, which is reserved for the inline nodes of workflows"
        )));
    }
    Ok(())
}

impl Store {
    /// Creates an event at version 1. `Conflict("name")` if the name is taken (nothing written).
    /// The job policy is left unknown: prefer [`Store::create_event_with_policy`].
    pub async fn create_event(
        &self,
        name: &str,
        status: EventStatus,
        spec: &Value,
        now: i64,
    ) -> Result<EventRow, StoreError> {
        self.create_event_inner(name, status, spec, None, now).await
    }

    /// [`Store::create_event`] with the event's job policy (`EventSpec::policy`), so that its
    /// workflow nodes can run.
    pub async fn create_event_with_policy(
        &self,
        name: &str,
        status: EventStatus,
        spec: &Value,
        policy: &JobPolicy,
        now: i64,
    ) -> Result<EventRow, StoreError> {
        self.create_event_inner(name, status, spec, Some(policy), now)
            .await
    }

    async fn create_event_inner(
        &self,
        name: &str,
        status: EventStatus,
        spec: &Value,
        policy: Option<&JobPolicy>,
        now: i64,
    ) -> Result<EventRow, StoreError> {
        check_name(name)?;
        if let Some(p) = policy {
            check_policy("policy", p)?;
        }
        let spec_text = to_json("spec", spec)?;
        let mut tx = self.begin_write().await?;
        let row = insert_event(&mut tx, name, status, &spec_text, policy, None, now).await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Replaces an event's spec and status. The version is bumped (and a version row written)
    /// only when one of them differs from the stored one; `updated_at` only moves then too.
    /// A new spec written this way has no known job policy: prefer
    /// [`Store::update_event_with_policy`].
    pub async fn update_event(
        &self,
        id: i64,
        status: EventStatus,
        spec: &Value,
        now: i64,
    ) -> Result<EventRow, StoreError> {
        self.update_event_inner(id, status, spec, None, now).await
    }

    /// [`Store::update_event`] with the event's job policy. Given for an unchanged spec, the
    /// policy is still written (without a new version): that is how an old row gets one.
    pub async fn update_event_with_policy(
        &self,
        id: i64,
        status: EventStatus,
        spec: &Value,
        policy: &JobPolicy,
        now: i64,
    ) -> Result<EventRow, StoreError> {
        self.update_event_inner(id, status, spec, Some(policy), now)
            .await
    }

    async fn update_event_inner(
        &self,
        id: i64,
        status: EventStatus,
        spec: &Value,
        policy: Option<&JobPolicy>,
        now: i64,
    ) -> Result<EventRow, StoreError> {
        if let Some(p) = policy {
            check_policy("policy", p)?;
        }
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
        if let Some(owner) = current.workflow_id {
            return Err(inline_event_refused(&current.name, owner));
        }
        let (row, _) =
            update_locked(&mut tx, current, status, spec, &spec_text, policy, now).await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Creates the event `name` or updates it in place, in one transaction. The job policy is
    /// left unknown on a new spec: prefer [`Store::apply_event_with_policy`].
    pub async fn apply_event(
        &self,
        name: &str,
        status: EventStatus,
        spec: &Value,
        now: i64,
    ) -> Result<(EventRow, Applied), StoreError> {
        self.apply_event_inner(name, status, spec, None, now).await
    }

    /// [`Store::apply_event`] with the event's job policy (`EventSpec::policy`), so that its
    /// workflow nodes can run. Given for an unchanged spec, the policy is still written (the
    /// answer stays `Unchanged`, no new version).
    pub async fn apply_event_with_policy(
        &self,
        name: &str,
        status: EventStatus,
        spec: &Value,
        policy: &JobPolicy,
        now: i64,
    ) -> Result<(EventRow, Applied), StoreError> {
        self.apply_event_inner(name, status, spec, Some(policy), now)
            .await
    }

    async fn apply_event_inner(
        &self,
        name: &str,
        status: EventStatus,
        spec: &Value,
        policy: Option<&JobPolicy>,
        now: i64,
    ) -> Result<(EventRow, Applied), StoreError> {
        check_name(name)?;
        if let Some(p) = policy {
            check_policy("policy", p)?;
        }
        let spec_text = to_json("spec", spec)?;
        match self
            .apply_once(name, status, spec, &spec_text, policy, now)
            .await
        {
            // Two servers applying a new name at once (PostgreSQL: neither saw the row, the
            // second insert hit the unique name): the second becomes an update of the first.
            Err(StoreError::Conflict(field)) if field == "name" => {
                self.apply_once(name, status, spec, &spec_text, policy, now)
                    .await
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
        policy: Option<&JobPolicy>,
        now: i64,
    ) -> Result<(EventRow, Applied), StoreError> {
        let mut tx = self.begin_write().await?;
        let result = apply_event_in(
            &mut tx,
            self.for_update(),
            name,
            status,
            spec,
            spec_text,
            policy,
            now,
        )
        .await?;
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

    /// The users' events, by name (not the events of inline workflow nodes: see
    /// [`Store::list_inline_events`]).
    pub async fn list_events(&self) -> Result<Vec<EventRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_cols!(),
            " FROM events WHERE workflow_id IS NULL ORDER BY name"
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

    /// The events of inline workflow nodes (`WORKFLOW/NODE`), of one workflow or of all, by
    /// name: what [`Store::list_events`] leaves out.
    pub async fn list_inline_events(
        &self,
        workflow_id: Option<i64>,
    ) -> Result<Vec<EventRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_cols!(),
            " FROM events WHERE workflow_id IS NOT NULL AND ($1 IS NULL OR workflow_id = $1) ",
            "ORDER BY name"
        ))
        .bind(workflow_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(event_row).collect()
    }

    /// Users' events whose job policy is unknown (written before workflows existed, or
    /// without one): the server parses each spec and writes it with
    /// [`Store::set_event_policy`].
    pub async fn events_without_policy(&self) -> Result<Vec<EventRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_cols!(),
            " FROM events WHERE workflow_id IS NULL AND (max_attempts IS NULL OR backoff_ms IS NULL ",
            "OR max_backoff_ms IS NULL OR timeout_ms IS NULL OR max_executions IS NULL) ORDER BY id"
        ))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(event_row).collect()
    }

    /// Writes the job policy of version `version` of an event (no new version). Fenced by the
    /// version: false, and nothing written, when another version was applied meanwhile (its
    /// writer gave, or will be asked for, its own policy).
    pub async fn set_event_policy(
        &self,
        id: i64,
        version: i64,
        policy: &JobPolicy,
    ) -> Result<bool, StoreError> {
        check_policy("policy", policy)?;
        let done = sqlx::query(
            "UPDATE events SET max_attempts = $1, backoff_ms = $2, max_backoff_ms = $3, \
             timeout_ms = $4, max_executions = $5 WHERE id = $6 AND version = $7",
        )
        .bind(i64::from(policy.max_attempts))
        .bind(policy.backoff_ms)
        .bind(policy.max_backoff_ms)
        .bind(policy.timeout_ms)
        .bind(policy.max_executions)
        .bind(id)
        .bind(version)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes an event and its versions. Its jobs stay (history) with `event_id` NULL and their
    /// `event_name` intact. False if there was no such event. The event of an inline workflow
    /// node is refused (it goes with its workflow). Workflows whose nodes name the event are
    /// left as they are (their nodes fail until it exists again): the API may refuse first,
    /// with [`Store::workflows_using_event`].
    pub async fn delete_event(&self, id: i64) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let owner = sqlx::query("SELECT name, workflow_id FROM events WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = owner {
            if let Some(workflow_id) = opt_i64(&row, "workflow_id")? {
                return Err(inline_event_refused(&text(&row, "name")?, workflow_id));
            }
        }
        let deleted = delete_event_rows(&mut tx, id).await?;
        tx.commit().await?;
        Ok(deleted)
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

pub(crate) async fn insert_event(
    conn: &mut AnyConnection,
    name: &str,
    status: EventStatus,
    spec_text: &str,
    policy: Option<&JobPolicy>,
    workflow_id: Option<i64>,
    now: i64,
) -> Result<EventRow, StoreError> {
    let row = sqlx::query(concat!(
        "INSERT INTO events (name, version, status, spec, created_at, updated_at, max_attempts, ",
        "backoff_ms, max_backoff_ms, timeout_ms, max_executions, workflow_id) ",
        "VALUES ($1, 1, $2, $3, $4, $4, $5, $6, $7, $8, $9, $10) RETURNING ",
        event_cols!()
    ))
    .bind(name)
    .bind(status.as_str())
    .bind(spec_text)
    .bind(now)
    .bind(policy.map(|p| i64::from(p.max_attempts)))
    .bind(policy.map(|p| p.backoff_ms))
    .bind(policy.map(|p| p.max_backoff_ms))
    .bind(policy.map(|p| p.timeout_ms))
    .bind(policy.map(|p| p.max_executions))
    .bind(workflow_id)
    .fetch_one(&mut *conn)
    .await?;
    let event = event_row(&row)?;
    insert_version(conn, event.id, 1, status, spec_text, now).await?;
    Ok(event)
}

/// Updates a row the transaction already holds; returns the row and whether a new version was
/// written. A policy given with an unchanged spec and status is written in place (no new
/// version); a new spec written without one leaves the policy unknown, as the old one belonged
/// to the old spec.
pub(crate) async fn update_locked(
    conn: &mut AnyConnection,
    current: EventRow,
    status: EventStatus,
    spec: &Value,
    spec_text: &str,
    policy: Option<&JobPolicy>,
    now: i64,
) -> Result<(EventRow, bool), StoreError> {
    // Value equality ignores object key order, so re-serialised but identical specs are no-ops.
    if current.status == status && &current.spec == spec {
        let Some(p) = policy.filter(|p| current.policy.as_ref() != Some(*p)) else {
            return Ok((current, false));
        };
        let row = sqlx::query(concat!(
            "UPDATE events SET max_attempts = $1, backoff_ms = $2, max_backoff_ms = $3, ",
            "timeout_ms = $4, max_executions = $5 WHERE id = $6 RETURNING ",
            event_cols!()
        ))
        .bind(i64::from(p.max_attempts))
        .bind(p.backoff_ms)
        .bind(p.max_backoff_ms)
        .bind(p.timeout_ms)
        .bind(p.max_executions)
        .bind(current.id)
        .fetch_one(&mut *conn)
        .await?;
        return Ok((event_row(&row)?, false));
    }
    let version = current.version + 1;
    // A new version is a spec the caller validated: whatever made the old one broken is gone.
    let row = sqlx::query(concat!(
        "UPDATE events SET version = $1, status = $2, spec = $3, updated_at = $4, broken = NULL, ",
        "max_attempts = $5, backoff_ms = $6, max_backoff_ms = $7, timeout_ms = $8, ",
        "max_executions = $9 WHERE id = $10 RETURNING ",
        event_cols!()
    ))
    .bind(version)
    .bind(status.as_str())
    .bind(spec_text)
    .bind(now)
    .bind(policy.map(|p| i64::from(p.max_attempts)))
    .bind(policy.map(|p| p.backoff_ms))
    .bind(policy.map(|p| p.max_backoff_ms))
    .bind(policy.map(|p| p.timeout_ms))
    .bind(policy.map(|p| p.max_executions))
    .bind(current.id)
    .fetch_one(&mut *conn)
    .await?;
    insert_version(conn, current.id, version, status, spec_text, now).await?;
    Ok((event_row(&row)?, true))
}

async fn insert_version(
    conn: &mut AnyConnection,
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
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Deletes an event's versions and row; its jobs stay (history) with `event_id` NULL.
pub(crate) async fn delete_event_rows(
    conn: &mut AnyConnection,
    id: i64,
) -> Result<bool, StoreError> {
    // Explicit rather than relying on ON DELETE SET NULL alone, so the behaviour does not
    // depend on the connection's foreign_keys pragma.
    sqlx::query("UPDATE jobs SET event_id = NULL WHERE event_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM event_versions WHERE event_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    let done = sqlx::query("DELETE FROM events WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// The refusal to change or delete an inline node's event by itself.
fn inline_event_refused(name: &str, workflow_id: i64) -> StoreError {
    StoreError::Invalid(format!(
        "event: `{name}` is an inline node of workflow {workflow_id}; change or delete the workflow"
    ))
}

/// Creates the event `name` or updates it in place, inside the caller's transaction (the row
/// locked first): what `apply_event` and the batch apply share.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn apply_event_in(
    tx: &mut AnyConnection,
    for_update: &str,
    name: &str,
    status: EventStatus,
    spec: &Value,
    spec_text: &str,
    policy: Option<&JobPolicy>,
    now: i64,
) -> Result<(EventRow, Applied), StoreError> {
    let sql = format!(
        concat!("SELECT ", event_cols!(), " FROM events WHERE name = $1{}"),
        for_update
    );
    let current = sqlx::query(&sql)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
    let result = match map_opt(current, event_row)? {
        None => (
            insert_event(tx, name, status, spec_text, policy, None, now).await?,
            Applied::Created,
        ),
        Some(current) => {
            let (row, changed) =
                update_locked(tx, current, status, spec, spec_text, policy, now).await?;
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
    Ok(result)
}
