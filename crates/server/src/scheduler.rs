//! The scheduler: turns schedules into jobs at their instants. It never executes anything.
//!
//! - Each event's next instant is kept in the store (`next_fire_at`), computed from the previous
//!   *scheduled* instant, never from when a run ended: no drift.
//! - One scheduler leads per database: it holds the short leadership lease (the `scheduler`
//!   lock, [`LEASE_TTL`]), renewed on every pass; the others poll for it every
//!   [`FOLLOWER_POLL`]. Firing a tick checks that lease inside the fire transaction, so a
//!   scheduler that lost it cannot fire even a tick it computed while it led; and the job insert
//!   is unique on (event, instant) besides, so no tick ever fires twice.
//! - After downtime, ticks older than [`MISSED_GRACE_MS`] are handled by the event's missed-run
//!   policy (skip them, or run once) instead of being fired one by one.
//! - An event whose stored spec no longer parses is marked broken in the store (once per version,
//!   with one warning) and does not fire; a new version clears the mark. Specs are parsed once
//!   per (event, version, stored text), not on every pass.
//! - Changing or pausing an event recomputes its next instant at once ([`reschedule`]) and wakes
//!   the loop.
//!
//! Time comes from the injected [`Clock`], so tests drive [`Scheduler::step`] (or the loop) with a
//! manual clock instead of sleeping.
//!
//! Failover, measured against the 5 s bar: a leader renews at least every [`LEADER_MAX_SLEEP`]
//! (1 s), so when it is killed its lease has at most [`LEASE_TTL`] (3 s) left, and a follower
//! polling every [`FOLLOWER_POLL`] (0.5 s) takes over within 3.5 s of the kill; the first tick
//! after the kill is then fired at most 3.5 s late (plus a store round trip), and every tick of
//! the gap is still within [`MISSED_GRACE_MS`] (5 s), so none is lost to the missed-run policy.
//! A graceful stop unlocks at once: the follower leads within one poll.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cronium_core::clock::{now_ms, Clock};
use cronium_core::logbus::LogBus;
use cronium_core::metrics::Metrics;
use cronium_core::schedule::Schedule;
use cronium_core::spec::{self, EventSpec, EventStatus, Missed, Overlap};
use cronium_core::workflow::{self, WorkflowSpec};
use cronium_model::Trigger;
use cronium_store::{
    EventRow, FireResult, Lease, RunRequest, Store, StoreError, WorkflowFireResult, WorkflowRow,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;
use crate::usecases::runs;

/// A tick later than this is "missed" (the server was down or overloaded).
pub const MISSED_GRACE_MS: i64 = 5_000;
/// The store lock whose holder is the leading scheduler.
pub const LOCK_NAME: &str = "scheduler";
/// How long the leadership lease lasts without renewal: the time a killed leader keeps others
/// waiting. Three renewal periods, so a leader survives two slow passes or store round trips.
pub const LEASE_TTL: Duration = Duration::from_secs(3);
/// Longest a leader sleeps between passes, and so between renewals (and re-checks of a clock
/// that jumped).
pub const LEADER_MAX_SLEEP: Duration = Duration::from_secs(1);
/// How often a follower tries to take the lease.
pub const FOLLOWER_POLL: Duration = Duration::from_millis(500);

/// What the scheduler needs from the outside world; nothing else of the server.
#[derive(Clone)]
pub struct Deps {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    /// Woken after a job was enqueued.
    pub agent_wake: Arc<Notify>,
    /// Wakes the loop after an event changed.
    pub scheduler_wake: Arc<Notify>,
    pub clock: Arc<dyn Clock>,
    /// Told about each job a tick inserts (the live dashboard and job lists).
    pub bus: Arc<LogBus>,
}

#[derive(Debug, thiserror::Error)]
enum TickError {
    #[error("the leadership lease is no longer ours")]
    NotLeader,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A spec that parsed, with its schedule (parsed once too).
struct Parsed {
    spec: EventSpec,
    schedule: Option<Schedule>,
}

/// A workflow spec that parsed, with its schedule.
struct ParsedWorkflow {
    spec: WorkflowSpec,
    schedule: Option<Schedule>,
}

/// The parse of one workflow version, as [`Cached`] is for events.
struct CachedWorkflow {
    version: i64,
    raw: serde_json::Value,
    parsed: Result<Arc<ParsedWorkflow>, String>,
}

/// The parse of one event version: the spec, or why it is broken.
struct Cached {
    version: i64,
    /// The stored spec it was parsed from. Versions are immutable, so this only differs when
    /// something outside Cronium rewrote the row; comparing costs far less than a parse.
    raw: serde_json::Value,
    parsed: Result<Arc<Parsed>, String>,
}

/// One scheduler instance (one per server process). Drive it with [`run`](Self::run), or one
/// pass at a time with [`step`](Self::step).
pub struct Scheduler {
    deps: Deps,
    holder: String,
    lease: Option<Lease>,
    specs: HashMap<i64, Cached>,
    workflows: HashMap<i64, CachedWorkflow>,
}

/// A holder id unique to this process and start (host, pid, random), for servers without an
/// embedded agent whose worker id could serve.
pub fn new_holder_id() -> String {
    let host =
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "host".into());
    format!(
        "{}-{}-sched-{:04x}",
        host.trim(),
        std::process::id(),
        rand::random::<u16>()
    )
}

/// The next instant of an event after `now`, or None (no schedule, not active, one-shot past).
pub fn next_instant(event: &EventRow, spec: &EventSpec, after: i64) -> Option<i64> {
    next_with(event, spec.parsed_schedule().as_ref(), after)
}

fn next_with(event: &EventRow, schedule: Option<&Schedule>, after: i64) -> Option<i64> {
    if event.status != EventStatus::Active {
        return None;
    }
    schedule?.next_after(after, event.updated_at)
}

/// The next instant of a workflow after `after`, or None (no schedule, not active, one-shot
/// past). Workflows follow the events' rules: instants are anchored on `updated_at`.
pub fn next_workflow_instant(
    workflow: &WorkflowRow,
    schedule: Option<&Schedule>,
    after: i64,
) -> Option<i64> {
    if workflow.status != EventStatus::Active {
        return None;
    }
    schedule?.next_after(after, workflow.updated_at)
}

/// Recomputes the next instant of an event after it changed, and wakes the scheduler. Returns
/// the instant it stored.
pub async fn reschedule(state: &AppState, event: &EventRow) -> Result<Option<i64>, StoreError> {
    reschedule_at(&state.store, &state.scheduler_wake, event, now_ms()).await
}

/// [`reschedule`] with its dependencies given (the scheduler's tests drive `now`).
pub async fn reschedule_at(
    store: &Store,
    scheduler_wake: &Notify,
    event: &EventRow,
    now: i64,
) -> Result<Option<i64>, StoreError> {
    let next = spec::from_value(event.spec.clone())
        .ok()
        .and_then(|s| next_instant(event, &s, now));
    store.set_next_fire(event.id, next).await?;
    scheduler_wake.notify_one();
    Ok(next)
}

/// Runs a scheduler until `shutdown`.
pub async fn run(deps: Deps, holder: String, shutdown: CancellationToken) {
    Scheduler::new(deps, holder).run(shutdown).await
}

impl Scheduler {
    pub fn new(deps: Deps, holder: impl Into<String>) -> Self {
        Scheduler {
            deps,
            holder: holder.into(),
            lease: None,
            specs: HashMap::new(),
            workflows: HashMap::new(),
        }
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Whether this scheduler holds the leadership lease, as of its last pass.
    pub fn is_leader(&self) -> bool {
        self.lease.is_some()
    }

    /// Loops over [`step`](Self::step), sleeping on the clock between passes and waking early
    /// when an event changed. On shutdown it gives the lease up, so a follower takes over at
    /// its next poll instead of waiting for the expiry.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let clock = self.deps.clock.clone();
        let wake = self.deps.scheduler_wake.clone();
        loop {
            let sleep = self.step().await;
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    self.resign().await;
                    return;
                }
                _ = wake.notified() => {}
                _ = clock.sleep(sleep) => {}
            }
        }
    }

    /// One pass: takes or keeps the lease, fires every due tick if it leads, renews the lease.
    /// Returns how long to wait before the next pass.
    pub async fn step(&mut self) -> Duration {
        let now = self.deps.clock.now_ms();
        let held = self.lease.as_ref().is_some_and(|l| now < l.expires_at);
        if !held {
            self.acquire(now).await;
        }
        let Some(lease) = self.lease.clone() else {
            return FOLLOWER_POLL;
        };
        let earliest = match self.tick(&lease).await {
            Ok(earliest) => earliest,
            Err(TickError::NotLeader) => {
                self.lost("a fire was refused: another scheduler leads");
                return FOLLOWER_POLL;
            }
            Err(TickError::Store(e)) => {
                tracing::warn!(error = %e, "scheduler: tick failed");
                None
            }
        };
        // Renewed after firing, so a renewal's round trip never delays a tick; the fire itself
        // checked the lease. Just acquired: nothing to renew.
        if held {
            self.renew().await;
        }
        if self.lease.is_none() {
            return FOLLOWER_POLL;
        }
        let now = self.deps.clock.now_ms();
        earliest
            .map(|t| Duration::from_millis(u64::try_from(t - now).unwrap_or(0)))
            .unwrap_or(LEADER_MAX_SLEEP)
            .min(LEADER_MAX_SLEEP)
    }

    async fn acquire(&mut self, now: i64) {
        let was = self.lease.take();
        match self
            .deps
            .store
            .try_lock(LOCK_NAME, &self.holder, lease_ms(), now)
            .await
        {
            Ok(Some(lease)) => {
                if was.is_none() {
                    tracing::info!(holder = %self.holder, token = lease.token, "scheduler: leadership acquired");
                }
                self.lease = Some(lease);
                self.deps.metrics.scheduler_leader.set(1);
            }
            Ok(None) => {
                if was.is_some() {
                    self.lost("its lease expired and another scheduler took it");
                }
                self.deps.metrics.scheduler_leader.set(0);
            }
            Err(e) => {
                tracing::warn!(error = %e, "scheduler: leadership check failed");
                if was.is_some() {
                    self.lost("the lease could not be checked");
                }
                self.deps.metrics.scheduler_leader.set(0);
            }
        }
    }

    /// A failed renewal ends leadership at once: better no scheduler for a moment than two.
    async fn renew(&mut self) {
        let now = self.deps.clock.now_ms();
        match self
            .deps
            .store
            .try_lock(LOCK_NAME, &self.holder, lease_ms(), now)
            .await
        {
            Ok(Some(lease)) => self.lease = Some(lease),
            Ok(None) => self.lost("the renewal was refused: another scheduler took the lease"),
            Err(e) => {
                tracing::warn!(error = %e, "scheduler: lease renewal failed");
                self.lost("the lease could not be renewed");
            }
        }
    }

    fn lost(&mut self, why: &str) {
        self.lease = None;
        self.deps.metrics.scheduler_leader.set(0);
        tracing::warn!(holder = %self.holder, reason = why, "scheduler: leadership lost; no longer firing");
    }

    async fn resign(&mut self) {
        if let Some(lease) = self.lease.take() {
            if let Err(e) = self.deps.store.unlock(&lease).await {
                tracing::warn!(error = %e, "scheduler: could not release the lease; it expires by itself");
            }
        }
        self.deps.metrics.scheduler_leader.set(0);
    }

    /// The parsed spec of this event version, from the cache or parsed now. A version that does
    /// not parse is marked broken in the store and warned about once; None then.
    async fn parsed(&mut self, event: &EventRow) -> Result<Option<Arc<Parsed>>, StoreError> {
        if let Some(c) = self
            .specs
            .get(&event.id)
            .filter(|c| c.version == event.version && c.raw == event.spec)
        {
            return Ok(c.parsed.as_ref().ok().cloned());
        }
        let parsed = parse(event);
        match &parsed {
            Ok(_) if event.broken.is_some() => {
                // Marked by another server (or an older release) that could not parse it.
                self.deps
                    .store
                    .set_event_broken(event.id, event.version, None)
                    .await?;
                tracing::info!(event = %event.name, version = event.version, "event spec parses again; no longer broken");
            }
            Ok(_) => {}
            Err(reason) => {
                // Written even when the row reads as broken already: for a spec that is not JSON
                // the reason is computed at read time, and the column (what the metric counts)
                // may still be empty. Once per version and process, so cheap.
                self.deps
                    .store
                    .set_event_broken(event.id, event.version, Some(reason))
                    .await?;
                if event.next_fire_at.is_some() {
                    self.deps.store.set_next_fire(event.id, None).await?;
                }
                tracing::warn!(event = %event.name, version = event.version, reason = %reason,
                    "event is broken: its stored spec does not parse, so it will not fire until a valid version is applied");
            }
        }
        let ok = parsed.as_ref().ok().cloned();
        self.specs.insert(
            event.id,
            Cached {
                version: event.version,
                raw: event.spec.clone(),
                parsed,
            },
        );
        Ok(ok)
    }

    /// Fires every due event; returns the earliest future instant.
    async fn tick(&mut self, lease: &Lease) -> Result<Option<i64>, TickError> {
        let events = self.deps.store.list_events().await?;
        let present: std::collections::HashSet<i64> = events.iter().map(|e| e.id).collect();
        self.specs.retain(|id, _| present.contains(id));
        let mut earliest: Option<i64> = None;
        let mut soonest = |t: i64| earliest = Some(earliest.map_or(t, |e: i64| e.min(t)));
        for event in events {
            let Some(parsed) = self.parsed(&event).await? else {
                continue;
            };
            let now = self.deps.clock.now_ms();
            let due = match event.next_fire_at {
                Some(t) => t,
                None => {
                    // Active scheduled event without a computed instant (new, or resumed): compute it.
                    if let Some(next) = next_with(&event, parsed.schedule.as_ref(), now) {
                        self.deps.store.set_next_fire(event.id, Some(next)).await?;
                        soonest(next);
                    }
                    continue;
                }
            };
            if event.status != EventStatus::Active {
                self.deps.store.set_next_fire(event.id, None).await?;
                continue;
            }
            if due > now {
                soonest(due);
                continue;
            }
            if let Some(next) = self.fire(lease, &event, &parsed, due, now).await? {
                soonest(next);
            }
        }
        if let Some(next) = self.tick_workflows(lease).await? {
            soonest(next);
        }
        Ok(earliest)
    }

    /// The parsed spec of this workflow version, cached as for events; a version that does not
    /// parse is marked broken (once per version and process) and does not fire.
    async fn parsed_workflow(
        &mut self,
        w: &WorkflowRow,
    ) -> Result<Option<Arc<ParsedWorkflow>>, StoreError> {
        if let Some(c) = self
            .workflows
            .get(&w.id)
            .filter(|c| c.version == w.version && c.raw == w.spec)
        {
            return Ok(c.parsed.as_ref().ok().cloned());
        }
        let parsed = parse_workflow(w);
        match &parsed {
            Ok(_) if w.broken.is_some() => {
                self.deps
                    .store
                    .set_workflow_broken(w.id, w.version, None)
                    .await?;
            }
            Ok(_) => {}
            Err(reason) => {
                self.deps
                    .store
                    .set_workflow_broken(w.id, w.version, Some(reason))
                    .await?;
                if w.next_fire_at.is_some() {
                    self.deps.store.set_workflow_next_fire(w.id, None).await?;
                }
                tracing::warn!(workflow = %w.name, version = w.version, reason = %reason,
                    "workflow is broken: its stored spec does not parse, so it will not fire until a valid version is applied");
            }
        }
        let ok = parsed.as_ref().ok().cloned();
        self.workflows.insert(
            w.id,
            CachedWorkflow {
                version: w.version,
                raw: w.spec.clone(),
                parsed,
            },
        );
        Ok(ok)
    }

    /// Fires every due workflow; returns the earliest future instant.
    async fn tick_workflows(&mut self, lease: &Lease) -> Result<Option<i64>, TickError> {
        let workflows = self.deps.store.list_workflows().await?;
        let present: std::collections::HashSet<i64> = workflows.iter().map(|w| w.id).collect();
        self.workflows.retain(|id, _| present.contains(id));
        let mut earliest: Option<i64> = None;
        let mut soonest = |t: i64| earliest = Some(earliest.map_or(t, |e: i64| e.min(t)));
        for w in workflows {
            let Some(parsed) = self.parsed_workflow(&w).await? else {
                continue;
            };
            let now = self.deps.clock.now_ms();
            let Some(due) = w.next_fire_at else {
                if let Some(next) = next_workflow_instant(&w, parsed.schedule.as_ref(), now) {
                    self.deps
                        .store
                        .set_workflow_next_fire(w.id, Some(next))
                        .await?;
                    soonest(next);
                }
                continue;
            };
            if w.status != EventStatus::Active {
                self.deps.store.set_workflow_next_fire(w.id, None).await?;
                continue;
            }
            if due > now {
                soonest(due);
                continue;
            }
            if let Some(next) = self.fire_workflow(lease, &w, &parsed, due, now).await? {
                soonest(next);
            }
        }
        Ok(earliest)
    }

    /// Fires (or skips) the workflow's tick at `due`; returns the next instant.
    async fn fire_workflow(
        &self,
        lease: &Lease,
        w: &WorkflowRow,
        parsed: &ParsedWorkflow,
        due: i64,
        now: i64,
    ) -> Result<Option<i64>, TickError> {
        let store = &self.deps.store;
        let metrics = &self.deps.metrics;
        let spec = &parsed.spec;
        let Some(schedule) = &parsed.schedule else {
            store.set_workflow_next_fire(w.id, None).await?;
            return Ok(None);
        };
        let missed = now - due > MISSED_GRACE_MS;
        let next = if missed {
            schedule.next_after(now, w.updated_at)
        } else {
            schedule.next_after(due, w.updated_at)
        };
        let skip_reason = if missed && spec.missed == Missed::Skip {
            Some("missed")
        } else if spec.overlap == Overlap::Skip && store.has_active_workflow_run(w.id).await? {
            Some("overlap")
        } else {
            None
        };
        let req = skip_reason.is_none().then(|| RunRequest {
            trigger: Trigger::Schedule,
            input: None,
            queue: spec.overlap == Overlap::Queue,
        });
        match store
            .fire_workflow(lease, w.id, due, next, req.as_ref(), now)
            .await?
        {
            WorkflowFireResult::Fired(run) => {
                metrics
                    .scheduler_lag
                    .observe((run.created_at - due).max(0) as f64 / 1000.0);
                metrics.ticks.get_or_create(&kind("fired")).inc();
                self.deps.bus.job_changed(None);
                self.deps.agent_wake.notify_one();
                tracing::debug!(workflow = %w.name, run = run.id, lag_ms = run.created_at - due, "workflow fired");
            }
            WorkflowFireResult::Skipped => {
                let why = skip_reason.unwrap_or("skipped");
                metrics.ticks.get_or_create(&kind(why)).inc();
                tracing::info!(workflow = %w.name, instant = due, reason = why, "workflow tick skipped");
            }
            WorkflowFireResult::Duplicate => {
                tracing::info!(workflow = %w.name, instant = due, "workflow tick already fired by another scheduler");
            }
            WorkflowFireResult::NotLeader => return Err(TickError::NotLeader),
        }
        Ok(next)
    }

    /// Fires (or skips) the tick at `due`; returns the next instant.
    async fn fire(
        &self,
        lease: &Lease,
        event: &EventRow,
        parsed: &Parsed,
        due: i64,
        now: i64,
    ) -> Result<Option<i64>, TickError> {
        let store = &self.deps.store;
        let metrics = &self.deps.metrics;
        let spec = &parsed.spec;
        let missed = now - due > MISSED_GRACE_MS;
        let Some(schedule) = &parsed.schedule else {
            store.set_next_fire(event.id, None).await?;
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
        } else if spec.overlap == Overlap::Skip && store.has_active_job(event.id).await? {
            Some("overlap")
        } else {
            None
        };
        let job = skip_reason
            .is_none()
            .then(|| runs::new_job(event, spec, Trigger::Schedule, None, now, Some(due)));
        match store
            .fire(lease, event.id, due, next, job.as_ref(), now)
            .await?
        {
            FireResult::Fired(job) => {
                metrics
                    .scheduler_lag
                    .observe((job.created_at - due).max(0) as f64 / 1000.0);
                metrics.ticks.get_or_create(&kind("fired")).inc();
                self.deps.bus.job_changed(Some(job.id));
                self.deps.agent_wake.notify_one();
                tracing::debug!(event = %event.name, job = job.id, lag_ms = job.created_at - due, "fired");
            }
            FireResult::LimitReached => {
                // The store paused the event in the same transaction: nothing more to fire.
                tracing::info!(event = %event.name, instant = due, "execution limit reached; event paused");
                return Ok(None);
            }
            FireResult::Skipped => {
                let why = skip_reason.unwrap_or("skipped");
                metrics.ticks.get_or_create(&kind(why)).inc();
                tracing::info!(event = %event.name, instant = due, reason = why, "tick skipped");
            }
            FireResult::Duplicate => {
                tracing::info!(event = %event.name, instant = due, "tick already fired by another scheduler");
            }
            FireResult::NotLeader => return Err(TickError::NotLeader),
        }
        Ok(next)
    }
}

fn parse(event: &EventRow) -> Result<Arc<Parsed>, String> {
    // The store reads a spec that is not even JSON as Null, with the reason already given.
    if event.spec.is_null() {
        return Err(event
            .broken
            .clone()
            .unwrap_or_else(|| "spec: missing".into()));
    }
    let spec = spec::from_value(event.spec.clone()).map_err(|e| e.to_string())?;
    let schedule = match &spec.schedule {
        None => None,
        Some(text) => {
            Some(Schedule::parse(&text.0, &spec.timezone).map_err(|e| format!("schedule: {e}"))?)
        }
    };
    Ok(Arc::new(Parsed { spec, schedule }))
}

fn parse_workflow(w: &WorkflowRow) -> Result<Arc<ParsedWorkflow>, String> {
    if w.spec.is_null() {
        return Err(w.broken.clone().unwrap_or_else(|| "spec: missing".into()));
    }
    let spec = workflow::from_value(w.spec.clone()).map_err(|e| e.to_string())?;
    let schedule = match &spec.schedule {
        None => None,
        Some(text) => {
            Some(Schedule::parse(&text.0, &spec.timezone).map_err(|e| format!("schedule: {e}"))?)
        }
    };
    Ok(Arc::new(ParsedWorkflow { spec, schedule }))
}

fn lease_ms() -> i64 {
    i64::try_from(LEASE_TTL.as_millis()).unwrap_or(i64::MAX)
}

fn kind(k: &str) -> cronium_core::metrics::KindLabel {
    cronium_core::metrics::KindLabel {
        kind: k.to_string(),
    }
}
