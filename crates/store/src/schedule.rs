//! Schedule state (`next_fire_at`, `last_fired_at` on events), firing a tick exactly once, and
//! the lease-based named lock schedulers use to elect a leader.
//!
//! A lock is a row (name, holder, expiry, fencing token). [`Store::try_lock`] takes or renews it
//! and returns the [`Lease`]; [`Store::fire`] takes that lease and checks, inside its own
//! transaction, that it is still the current unexpired one, so a scheduler that lost leadership
//! (paused, partitioned, slow) cannot fire, even a tick it computed while it led.
//!
//! Not for computing schedules: cron and time zones live in cronium-core; the scheduler passes
//! the instants in. Not a clock either: every `now` is the caller's.

use serde::Serialize;
use sqlx::AnyConnection;

use crate::events::pause_event;
use crate::jobs::{check_limit, insert_job, validate_new_job, Limit, NewJob};
use crate::row::{i64_col, text};
use crate::JobRow;
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
    /// The lease given is no longer the current unexpired one: another scheduler leads now (or
    /// nobody does). Nothing changed; the caller must stop firing.
    NotLeader,
}

/// A held lock, as [`Store::try_lock`] granted it. Writes fenced by a lease compare all of it
/// with the lock row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    /// Bumped every time the lock is granted afresh (to a new holder, or to the same one after
    /// it expired), kept by renewals of an unexpired lease.
    pub token: i64,
    /// Epoch ms after which the lease no longer counts.
    pub expires_at: i64,
}

/// Whether `lease` is still the lock's current, unexpired grant at `now`, the lock row locked
/// for the rest of the transaction on PostgreSQL (`for_update`), so that a takeover waits for
/// the caller's commit. Every fire (events, workflows) checks this in its own transaction.
pub(crate) async fn lease_held(
    conn: &mut AnyConnection,
    for_update: &str,
    lease: &Lease,
    now: i64,
) -> Result<bool, StoreError> {
    let sql = format!(
        "SELECT token FROM locks WHERE name = $1 AND holder = $2 AND token = $3 \
         AND expires_at > $4{for_update}"
    );
    let held = sqlx::query(&sql)
        .bind(&lease.name)
        .bind(&lease.holder)
        .bind(lease.token)
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(held.is_some())
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
    /// Only the leader fires: unless `lease` is still the lock's current grant (same holder and
    /// token) and unexpired at `now`, the result is [`FireResult::NotLeader`] and nothing
    /// changes. On PostgreSQL the lock row is locked for the transaction, so a takeover waits
    /// for this fire to commit, or this fire sees the takeover.
    ///
    /// A tick is handled at most once, whoever calls: a tick at or before the event's
    /// `last_fired_at`, or one that already has a job (unique `(event_id, scheduled_for)`), gives
    /// [`FireResult::Duplicate`] and changes nothing. `job`, when given, must carry this
    /// `event_id` and `scheduled_for`; its `max_executions` is checked in the same transaction,
    /// as [`Store::enqueue`] does.
    pub async fn fire(
        &self,
        lease: &Lease,
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
        if !lease_held(&mut tx, self.for_update(), lease, now).await? {
            tx.rollback().await?;
            return Ok(FireResult::NotLeader);
        }
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
        let Some(row) = insert_job(&mut tx, job, None, now, true).await? else {
            tx.rollback().await?;
            return Ok(FireResult::Duplicate);
        };
        if last {
            pause_event(&mut tx, event_id, now).await?;
        }
        tx.commit().await?;
        Ok(FireResult::Fired(row))
    }

    /// Acquires the lock `name` for `holder` until `now + ttl_ms`, or renews it if `holder`
    /// already has it. `None` when someone else holds an unexpired lease.
    ///
    /// A renewal of an unexpired lease keeps its token; any other grant (a new holder, or the
    /// same holder after its lease expired, when someone else may have led in between) bumps
    /// it, so writes fenced by the older [`Lease`] fail.
    pub async fn try_lock(
        &self,
        name: &str,
        holder: &str,
        ttl_ms: i64,
        now: i64,
    ) -> Result<Option<Lease>, StoreError> {
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
        let expires_at = now.saturating_add(ttl_ms);
        // One statement, so two contenders cannot both win: the upsert's conflict path takes the
        // row lock (PostgreSQL) or runs under the database lock (SQLite), and its WHERE decides.
        let row = sqlx::query(
            "INSERT INTO locks (name, holder, expires_at, token) VALUES ($1, $2, $3, 1) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
               expires_at = excluded.expires_at, \
               token = CASE WHEN locks.holder = excluded.holder AND locks.expires_at > $4 \
                       THEN locks.token ELSE locks.token + 1 END \
             WHERE locks.holder = excluded.holder OR locks.expires_at <= $4 \
             RETURNING token",
        )
        .bind(name)
        .bind(holder)
        .bind(expires_at)
        .bind(now)
        .fetch_optional(&self.write)
        .await?;
        row.map(|r| {
            Ok(Lease {
                name: name.to_string(),
                holder: holder.to_string(),
                token: i64_col(&r, "token")?,
                expires_at,
            })
        })
        .transpose()
    }

    /// Gives the lease up at once (a graceful stop), so another holder need not wait for it to
    /// expire. A no-op when the lease is no longer the current one.
    pub async fn unlock(&self, lease: &Lease) -> Result<(), StoreError> {
        // Expired rather than deleted: the row keeps its token, so the next grant gets a higher
        // one and tokens never repeat.
        sqlx::query(
            "UPDATE locks SET expires_at = 0 WHERE name = $1 AND holder = $2 AND token = $3",
        )
        .bind(&lease.name)
        .bind(&lease.holder)
        .bind(lease.token)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Who holds the lock `name` at `now`, if anyone (for operators and tests; deciding whether
    /// to act goes through [`Store::try_lock`] and the fenced writes).
    pub async fn lock_holder(&self, name: &str, now: i64) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT holder FROM locks WHERE name = $1 AND expires_at > $2")
            .bind(name)
            .bind(now)
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| text(&r, "holder")).transpose()
    }
}
