//! The retention sweep: once at start and then every interval (`--retention-interval`, default
//! [`DEFAULT_INTERVAL`]), deletes the jobs (with their executions and log lines) that are past
//! their retention, and garbage-collects the payload cache and the runner work directories left
//! behind. The same [`Retention::sweep`] answers `POST /api/v1/prune` and its dry run.
//!
//! **Policy** (README "Retention"): a job is pruned when it has finished, finished longer ago
//! than its event's `retain` (else the server's `--retain`), and is not among its event's newest
//! `keep` finished jobs. `forever` (or `0`) keeps everything. Jobs of deleted events follow the
//! server's `--retain`; an event whose definition does not parse keeps all its jobs until it is
//! repaired (its `keep` is unknown). Queued and running jobs are never pruned.
//!
//! **Never blocking the queue**: the store deletes in short transactions
//! (`cronium_store::PruneLimits`: a few milliseconds each), and this loop pauses after each one
//! for as long as it took, so claims, heartbeats and log appends get the (single SQLite) writer
//! at least half of the time and wait at most one short step for it.
//!
//! **Work directories**: a local run's private directory (`cronium-run-*` under `--work-dir`,
//! or under its `user-<uid>` directory when runs execute as another user) is removed by its
//! runner, and a runner that was killed outright leaves it behind. Such a directory is removed
//! here when it is a real directory owned by the user it belongs to, older than the longest
//! event timeout plus [`WORK_DIR_MARGIN`], and not held by a live runner (each runner keeps an
//! exclusive `flock` on its directory while it runs). The runners' shared helper libraries
//! (`cronium-lib-*`) are the runners' own business and are left alone.
//!
//! Not for deciding what a job is (the store's rules) nor for the container reaper.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cronium_core::clock::now_ms;
use cronium_core::metrics::Metrics;
use cronium_core::payload::PayloadCache;
use cronium_core::spec::{self, Retain};
use cronium_store::{PruneCounts, PruneLimits, PruneRule, PruneScope, Store, StoreError};
use prometheus_client::metrics::counter::Counter;
use tokio_util::sync::CancellationToken;

/// Default time between sweeps.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);
/// Default server-wide retention (`--retain`).
pub const DEFAULT_RETAIN: Retain = Retain::For(Duration::from_secs(30 * 86_400));
/// Default age of audit log entries (`--audit-retain`).
pub const DEFAULT_AUDIT_RETAIN: Retain = Retain::For(Duration::from_secs(365 * 86_400));
/// A work directory is never removed before the longest event timeout plus this: its run may
/// still be ending (SIGKILL grace, the result being reported).
pub const WORK_DIR_MARGIN: Duration = Duration::from_secs(15 * 60);
/// Longest pause between two store steps of a sweep.
const MAX_PAUSE: Duration = Duration::from_millis(100);
/// Prefix of a run's work directory (as the runner names them).
const RUN_DIR_PREFIX: &str = "cronium-run-";
/// Prefix of a run user's directory under the work base (`cronium_agent::isolation`).
const USER_DIR_PREFIX: &str = "user-";

#[derive(Debug, Clone)]
pub struct RetentionConfig {
    /// `--retain`: how long finished jobs are kept unless their event says otherwise.
    pub retain: Retain,
    /// `--audit-retain`: how long audit log entries are kept.
    pub audit_retain: Retain,
    /// The payload cache, and how long an unused payload stays in it.
    pub payload_dir: PathBuf,
    pub payload_max_age: Duration,
    /// `--work-dir`: where local runs make their directories (None: nothing is collected).
    pub work_dir: Option<PathBuf>,
    /// How much one store transaction may delete.
    pub limits: PruneLimits,
}

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("retention: {0}")]
    Store(#[from] StoreError),
}

/// What a sweep removed, or (dry run) would remove.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub dry_run: bool,
    /// Jobs, executions and log lines, by event name.
    pub by_event: BTreeMap<String, PruneCounts>,
    /// Cached payload archives, and their bytes.
    pub payloads: u64,
    pub payload_bytes: u64,
    /// Stale work directories of runs.
    pub work_dirs: Vec<PathBuf>,
    /// Events whose definition does not parse: none of their jobs is pruned.
    pub skipped_events: Vec<String>,
    /// The sweep stopped early (shutdown); what it reports went.
    pub interrupted: bool,
    /// Ended workflow runs deleted (with their node runs); 0 in a dry run.
    pub workflow_runs: u64,
    /// Audit log entries older than the audit retention (what would go, in a dry run).
    pub audit_entries: u64,
}

impl SweepReport {
    pub fn total(&self) -> PruneCounts {
        let mut t = PruneCounts::default();
        for c in self.by_event.values() {
            t.add(c);
        }
        t
    }

    pub fn is_empty(&self) -> bool {
        self.by_event.is_empty() && self.payloads == 0 && self.work_dirs.is_empty()
    }
}

/// `cronium_pruned_*_total` on /metrics.
#[derive(Default)]
struct Counters {
    jobs: Counter,
    executions: Counter,
    log_lines: Counter,
}

/// The sweep and what it needs; shared by the loop and the API.
pub struct Retention {
    store: Store,
    config: RetentionConfig,
    counters: Counters,
    /// One deleting sweep at a time in this process (the loop and `cronium prune`).
    sweeping: tokio::sync::Mutex<()>,
    /// Cancelled at shutdown: a sweep stops between two steps (an API call's too).
    stop: CancellationToken,
}

/// The rules of one sweep, from the events as they are now.
struct Plan {
    rules: Vec<PruneRule>,
    skipped_events: Vec<String>,
    /// The longest timeout of any event (at least the default timeout).
    longest_timeout: Duration,
    /// Ended workflow runs that finished before this go (with their node runs).
    workflow_runs_before: Option<i64>,
}

impl Retention {
    /// Registers the counters on `metrics`.
    pub fn new(store: Store, config: RetentionConfig, metrics: &Metrics) -> Retention {
        let counters = Counters::default();
        metrics.with_registry(|r| {
            r.register(
                "pruned_jobs",
                "Jobs deleted by retention",
                counters.jobs.clone(),
            );
            r.register(
                "pruned_executions",
                "Executions deleted by retention",
                counters.executions.clone(),
            );
            r.register(
                "pruned_log_lines",
                "Log lines deleted by retention",
                counters.log_lines.clone(),
            );
        });
        Retention {
            store,
            config,
            counters,
            sweeping: tokio::sync::Mutex::new(()),
            stop: CancellationToken::new(),
        }
    }

    pub fn config(&self) -> &RetentionConfig {
        &self.config
    }

    /// One sweep at `now` (epoch ms): jobs, payloads, work directories. A dry run only counts.
    pub async fn sweep(&self, now: i64, dry_run: bool) -> Result<SweepReport, RetentionError> {
        let _one_at_a_time = match dry_run {
            true => None,
            false => Some(self.sweeping.lock().await),
        };
        let plan = self.plan(now).await?;
        let mut report = SweepReport {
            dry_run,
            skipped_events: plan.skipped_events,
            ..Default::default()
        };
        if dry_run {
            report.by_event = self.store.prune_preview(&plan.rules).await?;
        } else {
            report.interrupted = !self.prune(&plan.rules, &mut report.by_event).await?;
            if let Some(before) = plan.workflow_runs_before.filter(|_| !report.interrupted) {
                loop {
                    let n = self
                        .store
                        .prune_workflow_runs_step(before, self.config.limits.jobs)
                        .await?;
                    report.workflow_runs += n;
                    if n < u64::try_from(self.config.limits.jobs).unwrap_or(0)
                        || self.stop.is_cancelled()
                    {
                        break;
                    }
                }
            }
        }
        if let Some(age) = self.config.audit_retain.age() {
            let before = now.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX));
            if dry_run {
                report.audit_entries =
                    u64::try_from(self.store.count_audit_before(before).await?).unwrap_or(0);
            } else {
                while !self.stop.is_cancelled() {
                    let n = self
                        .store
                        .prune_audit_step(before, self.config.limits.jobs)
                        .await?;
                    report.audit_entries += n;
                    if n < u64::try_from(self.config.limits.jobs).unwrap_or(0) {
                        break;
                    }
                }
            }
        }
        let cache = PayloadCache::new(&self.config.payload_dir);
        for (path, size) in cache.stale(self.config.payload_max_age) {
            if dry_run || fs::remove_file(&path).is_ok() {
                report.payloads += 1;
                report.payload_bytes += size;
            }
        }
        if let Some(base) = &self.config.work_dir {
            let min_age = plan.longest_timeout + WORK_DIR_MARGIN;
            let when = UNIX_EPOCH + Duration::from_millis(u64::try_from(now).unwrap_or(0));
            report.work_dirs = collect_work_dirs(base, when, min_age, dry_run);
        }
        Ok(report)
    }

    /// Applies the rules step by step; false when shutdown ended it early.
    async fn prune(
        &self,
        rules: &[PruneRule],
        by_event: &mut BTreeMap<String, PruneCounts>,
    ) -> Result<bool, RetentionError> {
        for rule in rules {
            loop {
                if self.stop.is_cancelled() {
                    return Ok(false);
                }
                let started = std::time::Instant::now();
                let step = self.store.prune_step(rule, &self.config.limits).await?;
                let total = step.total();
                self.counters.jobs.inc_by(total.jobs);
                self.counters.executions.inc_by(total.executions);
                self.counters.log_lines.inc_by(total.log_lines);
                for (name, c) in &step.by_event {
                    by_event.entry(name.clone()).or_default().add(c);
                }
                // Nothing deleted yet more to do happens only when another server deleted the
                // same rows meanwhile; its own sweep finishes them.
                if !step.more || total.is_empty() {
                    break;
                }
                // The writer is free between two steps; a pause as long as the step leaves it to
                // the queue at least half of the time (claims arriving now need not wait).
                tokio::time::sleep(started.elapsed().min(MAX_PAUSE)).await;
            }
        }
        Ok(true)
    }

    async fn plan(&self, now: i64) -> Result<Plan, RetentionError> {
        let before = |retain: Retain| {
            retain
                .age()
                .map(|age| now.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX)))
        };
        let mut plan = Plan {
            rules: Vec::new(),
            skipped_events: Vec::new(),
            longest_timeout: Duration::from_secs(spec::DEFAULT_TIMEOUT_SECS),
            workflow_runs_before: None,
        };
        for event in self.store.list_events().await? {
            let parsed = match &event.broken {
                Some(_) => None,
                None => spec::from_value(event.spec.clone()).ok(),
            };
            let Some(parsed) = parsed else {
                plan.skipped_events.push(event.name);
                continue;
            };
            plan.longest_timeout = plan.longest_timeout.max(parsed.timeout.0);
            if let Some(finished_before) = before(parsed.retain.unwrap_or(self.config.retain)) {
                plan.rules.push(PruneRule {
                    scope: PruneScope::Event(event.id),
                    finished_before,
                    keep: i64::try_from(parsed.keep).unwrap_or(i64::MAX),
                });
            }
        }
        // The events of inline workflow nodes follow their workflow's retention, which is the
        // server's `--retain` (a workflow file has no `retain`).
        if let Some(finished_before) = before(self.config.retain) {
            for event in self.store.list_inline_events(None).await? {
                plan.rules.push(PruneRule {
                    scope: PruneScope::Event(event.id),
                    finished_before,
                    keep: 0,
                });
            }
            plan.workflow_runs_before = Some(finished_before);
        }
        if let Some(finished_before) = before(self.config.retain) {
            plan.rules.push(PruneRule {
                scope: PruneScope::DeletedEvents,
                finished_before,
                keep: 0,
            });
        }
        Ok(plan)
    }
}

/// The sweep loop: a sweep at start, then one per `interval`, until `shutdown`, which also stops
/// a sweep the API started.
pub async fn run(
    retention: std::sync::Arc<Retention>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let stop = retention.stop.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        stop.cancel();
    });
    loop {
        match retention.sweep(now_ms(), false).await {
            Ok(r) if !r.is_empty() => {
                let t = r.total();
                tracing::info!(
                    jobs = t.jobs,
                    executions = t.executions,
                    log_lines = t.log_lines,
                    payloads = r.payloads,
                    work_dirs = r.work_dirs.len(),
                    "retention: pruned"
                );
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "retention sweep failed; retried at the next interval")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = retention.stop.cancelled() => return,
        }
    }
}

/// Removes (or, `dry_run`, lists) the stale run directories under `base` as of `now`.
fn collect_work_dirs(
    base: &Path,
    now: SystemTime,
    min_age: Duration,
    dry_run: bool,
) -> Vec<PathBuf> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(base) else {
        return found;
    };
    let mut runs = Vec::new();
    let mut user_dirs = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(RUN_DIR_PREFIX) {
            runs.push((entry.path(), me));
        } else if let Some(uid) = name
            .strip_prefix(USER_DIR_PREFIX)
            .and_then(|u| u.parse::<u32>().ok())
        {
            // Only a real directory that belongs to the user it is named after.
            if fs::symlink_metadata(entry.path()).is_ok_and(|m| m.is_dir() && m.uid() == uid) {
                user_dirs.push((entry.path(), uid));
            }
        }
    }
    for (dir, uid) in user_dirs {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(RUN_DIR_PREFIX)
            {
                runs.push((entry.path(), uid));
            }
        }
    }
    for (path, owner) in runs {
        if let Some(lock) = stale_run_dir(&path, owner, now, min_age) {
            if dry_run {
                found.push(path);
                continue;
            }
            match remove_run_dir(&path, me) {
                Ok(()) => found.push(path),
                Err(e) => {
                    tracing::warn!(dir = %path.display(), error = %e, "cannot remove a stale work directory")
                }
            }
            drop(lock);
        }
    }
    found
}

/// The directory held under our own exclusive `flock` when it is a stale run directory: a real
/// directory owned by `owner`, last modified at least `min_age` before `now`, that no live
/// runner holds.
fn stale_run_dir(path: &Path, owner: u32, now: SystemTime, min_age: Duration) -> Option<File> {
    // symlink_metadata: a symlink planted under the prefix is never followed.
    let meta = fs::symlink_metadata(path).ok()?;
    let old = meta
        .modified()
        .ok()
        .and_then(|m| now.duration_since(m).ok())
        .is_some_and(|age| age >= min_age);
    if !meta.is_dir() || meta.uid() != owner || !old {
        return None;
    }
    let dir = File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(path)
        .ok()?;
    // SAFETY: flock on a descriptor we own.
    let rc = unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    (rc == 0).then_some(dir)
}

/// Removes a run directory. A script may have left directories without write or search
/// permission (chmod 000); their owner (a server running scripts as itself) restores it and
/// tries again. Root needs no permission bits, and never changes any in a run user's tree.
fn remove_run_dir(path: &Path, me: u32) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied && me != 0 => {
            make_writable(path, me);
            fs::remove_dir_all(path)
        }
        other => other,
    }
}

fn make_writable(dir: &Path, me: u32) {
    let Ok(meta) = fs::symlink_metadata(dir) else {
        return;
    };
    if !meta.is_dir() || meta.uid() != me {
        return;
    }
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            make_writable(&entry.path(), me);
        }
    }
}
