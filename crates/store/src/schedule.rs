//! Schedule state (`next_fire_at`, `last_fired_at` on events), firing a tick exactly once, and
//! the lease-based named lock schedulers use to elect a leader.
//!
//! Not for computing schedules: cron and time zones live in cronium-core; the scheduler passes
//! the instants in.

use serde::Serialize;

use crate::events::pause_event;
use crate::jobs::{check_limit, insert_job, validate_new_job, JobRow, Limit, NewJob};
use crate::{Store, StoreError};

/// What [`Store::fire`] did with a tick.
// Returned once per tick and matched at once, never stored in bulk: boxing the row would only
// make callers dereference it.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum FireResult {
    /// The job was enqueued and the schedule advanced. When the job reached the event's
    /// `max_executions`, the event is now paused (no next fire).
    Fired(JobRow),
    /// No job was asked for (overlap or missed-run policy); the schedule advanced.
    Skipped,
    /// The event had already reached its `max_executions`: no job, the event is paused (no next
    /// fire) and the tick counts as handled.
    LimitReached,
    /// This tick was already handled (by another scheduler, or this one before a restart);
    /// nothing changed.
    Duplicate,
}

impl Store {
    /// Sets (or clears, with `None`) when the event should fire next.
    pub async fn set_next_fire(
        &self,
        event_id: i64,
        next_fire_at: Option<i64>,
    ) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE events SET next_fire_at = $1 WHERE id = $2")
            .bind(next_fire_at)
            .bind(event_id)
            .execute(&self.write)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("event {event_id}")));
        }
        Ok(())
    }

    /// Handles the tick `scheduled_for` of an event in one transaction: enqueues `job` (if any),
    /// sets `last_fired_at = scheduled_for` and `next_fire_at`.
    ///
    /// A tick is handled at most once, whoever calls: a tick at or before the event's
    /// `last_fired_at`, or one that already has a job (unique `(event_id, scheduled_for)`), gives
    /// [`FireResult::Duplicate`] and changes nothing. `job`, when given, must carry this
    /// `event_id` and `scheduled_for`; its `max_executions` is checked in the same transaction,
    /// as [`Store::enqueue`] does.
    pub async fn fire(
        &self,
        event_id: i64,
        scheduled_for: i64,
        next_fire_at: Option<i64>,
        job: Option<&NewJob>,
        now: i64,
    ) -> Result<FireResult, StoreError> {
        if let Some(job) = job {
            validate_new_job(job)?;
            if job.event_id != Some(event_id) {
                return Err(StoreError::Invalid(format!(
                    "job.event_id: {:?} is not the fired event {event_id}",
                    job.event_id
                )));
            }
            if job.scheduled_for != Some(scheduled_for) {
                return Err(StoreError::Invalid(format!(
                    "job.scheduled_for: {:?} is not the fired tick {scheduled_for}",
                    job.scheduled_for
                )));
            }
        }
        let mut tx = self.begin_write().await?;
        // On PostgreSQL the row lock taken here serialises concurrent fires of one event: the
        // second re-evaluates the WHERE after the first commits and matches nothing.
        let advanced = sqlx::query(
            "UPDATE events SET last_fired_at = $1, next_fire_at = $2 \
             WHERE id = $3 AND (last_fired_at IS NULL OR last_fired_at < $1)",
        )
        .bind(scheduled_for)
        .bind(next_fire_at)
        .bind(event_id)
        .execute(&mut *tx)
        .await?;
        if advanced.rows_affected() == 0 {
            let exists = sqlx::query("SELECT id FROM events WHERE id = $1")
                .bind(event_id)
                .fetch_optional(&mut *tx)
                .await?;
            tx.rollback().await?;
            return match exists {
                None => Err(StoreError::NotFound(format!("event {event_id}"))),
                Some(_) => Ok(FireResult::Duplicate),
            };
        }
        let Some(job) = job else {
            tx.commit().await?;
            return Ok(FireResult::Skipped);
        };
        let last = match check_limit(&mut tx, self.for_update(), job).await? {
            Limit::Unlimited => false,
            Limit::Allows { last } => last,
            Limit::Reached { .. } => {
                pause_event(&mut tx, event_id, now).await?;
                tx.commit().await?;
                return Ok(FireResult::LimitReached);
            }
        };
        let Some(row) = insert_job(&mut tx, job, now, true).await? else {
            tx.rollback().await?;
            return Ok(FireResult::Duplicate);
        };
        if last {
            pause_event(&mut tx, event_id, now).await?;
        }
        tx.commit().await?;
        Ok(FireResult::Fired(row))
    }

    /// Acquires the lock `name` for `holder` for `ttl_ms`, or renews it if `holder` already has
    /// it. True when `holder` holds the lock until `now + ttl_ms`; false when someone else holds
    /// an unexpired lease.
    pub async fn try_lock(
        &self,
        name: &str,
        holder: &str,
        ttl_ms: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        if name.is_empty() {
            return Err(StoreError::Invalid("name: must not be empty".into()));
        }
        if holder.is_empty() {
            return Err(StoreError::Invalid("holder: must not be empty".into()));
        }
        if ttl_ms <= 0 {
            return Err(StoreError::Invalid(format!(
                "ttl_ms: must be positive, got {ttl_ms}"
            )));
        }
        let done = sqlx::query(
            "INSERT INTO locks (name, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE locks.holder = excluded.holder OR locks.expires_at <= $4",
        )
        .bind(name)
        .bind(holder)
        .bind(now.saturating_add(ttl_ms))
        .bind(now)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Releases the lock if `holder` holds it (a no-op otherwise).
    pub async fn unlock(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM locks WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.write)
            .await?;
        Ok(())
    }
}
