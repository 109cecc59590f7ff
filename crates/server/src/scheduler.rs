//! The scheduler: turns schedules into jobs at their instants. It never executes anything.
//!
//! - Each event's next instant is kept in the store (`next_fire_at`), computed from the previous
//!   *scheduled* instant, never from when a run ended: no drift.
//! - One scheduler is active per database: a lease-based lock in the store. Firing a tick inserts
//!   the job under a unique (event, instant) key in the same transaction that advances the
//!   schedule, so even two schedulers that both believe they lead never fire a tick twice.
//! - After downtime, ticks older than [`MISSED_GRACE_MS`] are handled by the event's missed-run
//!   policy (skip them, or run once) instead of being fired one by one.
//! - Changing or pausing an event recomputes its next instant at once ([`reschedule`]) and wakes
//!   the loop.

use std::time::Duration;

use cronium_core::clock::now_ms;
use cronium_core::spec::{self, EventSpec, EventStatus, Missed, Overlap};
use cronium_model::Trigger;
use cronium_store::{EventRow, FireResult, StoreError};
use tokio_util::sync::CancellationToken;

use crate::runs;
use crate::state::AppState;

/// A tick later than this is "missed" (the server was down or overloaded).
pub const MISSED_GRACE_MS: i64 = 5_000;
const LOCK_NAME: &str = "scheduler";
const LOCK_TTL_MS: i64 = 15_000;
const LOCK_RENEW_MS: i64 = 5_000;
/// Longest sleep, so that leadership and clock jumps are re-checked regularly.
const MAX_SLEEP: Duration = Duration::from_millis(1_000);

/// The next instant of an event after `now`, or None (no schedule, not active, one-shot past).
pub fn next_instant(event: &EventRow, spec: &EventSpec, after: i64) -> Option<i64> {
    if event.status != EventStatus::Active {
        return None;
    }
    spec.parsed_schedule()?.next_after(after, event.updated_at)
}

/// Recomputes the next instant of an event after it changed, and wakes the scheduler. Returns
/// the instant it stored.
pub async fn reschedule(state: &AppState, event: &EventRow) -> Result<Option<i64>, StoreError> {
    let next = spec::from_value(event.spec.clone())
        .ok()
        .and_then(|s| next_instant(event, &s, now_ms()));
    state.store.set_next_fire(event.id, next).await?;
    state.scheduler_wake.notify_one();
    Ok(next)
}

pub async fn run(state: AppState, holder: String, shutdown: CancellationToken) {
    let mut leader = false;
    let mut renewed_at = 0i64;
    loop {
        let now = now_ms();
        if !leader || now - renewed_at >= LOCK_RENEW_MS {
            match state
                .store
                .try_lock(LOCK_NAME, &holder, LOCK_TTL_MS, now)
                .await
            {
                Ok(true) => {
                    if !leader {
                        tracing::info!(%holder, "scheduler: leadership acquired");
                    }
                    leader = true;
                    renewed_at = now;
                }
                Ok(false) => {
                    if leader {
                        tracing::warn!("scheduler: leadership lost");
                    }
                    leader = false;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "scheduler: lock check failed");
                    leader = false;
                }
            }
        }
        let sleep = if leader {
            match tick(&state).await {
                Ok(Some(next)) => {
                    Duration::from_millis((next - now_ms()).max(0) as u64).min(MAX_SLEEP)
                }
                Ok(None) => MAX_SLEEP,
                Err(e) => {
                    tracing::warn!(error = %e, "scheduler: tick failed");
                    MAX_SLEEP
                }
            }
        } else {
            Duration::from_millis(LOCK_RENEW_MS as u64 / 2)
        };
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = state.scheduler_wake.notified() => {}
            _ = shutdown.cancelled() => {
                let _ = state.store.unlock(LOCK_NAME, &holder).await;
                return;
            }
        }
    }
}

/// Fires every due event; returns the earliest future instant.
async fn tick(state: &AppState) -> Result<Option<i64>, StoreError> {
    let events = state.store.list_events().await?;
    let mut earliest: Option<i64> = None;
    for event in events {
        let Ok(spec) = spec::from_value(event.spec.clone()) else {
            continue;
        };
        let now = now_ms();
        let due = match event.next_fire_at {
            Some(t) => t,
            None => {
                // Active scheduled event without a computed instant (new, or resumed): compute it.
                if let Some(next) = next_instant(&event, &spec, now) {
                    state.store.set_next_fire(event.id, Some(next)).await?;
                    earliest = Some(earliest.map_or(next, |e| e.min(next)));
                }
                continue;
            }
        };
        if event.status != EventStatus::Active {
            state.store.set_next_fire(event.id, None).await?;
            continue;
        }
        if due > now {
            earliest = Some(earliest.map_or(due, |e| e.min(due)));
            continue;
        }
        if let Some(next) = fire(state, &event, &spec, due, now).await? {
            earliest = Some(earliest.map_or(next, |e| e.min(next)));
        }
    }
    Ok(earliest)
}

/// Fires (or skips) the tick at `due`; returns the next instant.
async fn fire(
    state: &AppState,
    event: &EventRow,
    spec: &EventSpec,
    due: i64,
    now: i64,
) -> Result<Option<i64>, StoreError> {
    let missed = now - due > MISSED_GRACE_MS;
    let Some(schedule) = spec.parsed_schedule() else {
        state.store.set_next_fire(event.id, None).await?;
        return Ok(None);
    };
    // No drift: the next instant follows the scheduled one; after downtime, it follows now.
    let next = if missed {
        schedule.next_after(now, event.updated_at)
    } else {
        schedule.next_after(due, event.updated_at)
    };
    let skip_reason = if missed && spec.missed == Missed::Skip {
        Some("missed")
    } else if spec.overlap == Overlap::Skip && state.store.has_active_job(event.id).await? {
        Some("overlap")
    } else {
        None
    };
    let job = skip_reason
        .is_none()
        .then(|| runs::new_job(event, spec, Trigger::Schedule, None, now, Some(due)));
    match state
        .store
        .fire(event.id, due, next, job.as_ref(), now)
        .await?
    {
        FireResult::Fired(job) => {
            state
                .metrics
                .scheduler_lag
                .observe((job.created_at - due).max(0) as f64 / 1000.0);
            state.metrics.ticks.get_or_create(&kind("fired")).inc();
            state.agent_wake.notify_one();
            tracing::debug!(event = %event.name, job = job.id, lag_ms = job.created_at - due, "fired");
        }
        FireResult::LimitReached => {
            // The store paused the event in the same transaction: nothing more to fire.
            tracing::info!(event = %event.name, instant = due, "execution limit reached; event paused");
            return Ok(None);
        }
        FireResult::Skipped => {
            let why = skip_reason.unwrap_or("skipped");
            state.metrics.ticks.get_or_create(&kind(why)).inc();
            tracing::info!(event = %event.name, instant = due, reason = why, "tick skipped");
        }
        FireResult::Duplicate => {
            tracing::info!(event = %event.name, instant = due, "tick already fired by another scheduler");
        }
    }
    Ok(next)
}

fn kind(k: &str) -> cronium_core::metrics::KindLabel {
    cronium_core::metrics::KindLabel {
        kind: k.to_string(),
    }
}
