//! The agent: claims jobs from the queue and executes them through a transport.
//!
//! It sees the queue only through [`queue::JobQueue`], so the same code runs embedded in the
//! server (the default) and, later, as separate `cronium agent` processes. It never decides *when*
//! something runs (that is the scheduler's job) and never runs user code itself: scripts run in
//! `cronium-runner`; only `http` events are carried out here, with an HTTP client.
//!
//! A job runs in `job.rs`, which hands the attempt's context (`exec::RunCtx`) to the job's
//! target (`targets`); both build on `exec.rs`, which knows neither.

// Functions take at most 6 arguments (`clippy.toml`); more go in a context struct.
#![deny(clippy::too_many_arguments)]

mod claim_gate;
pub mod credentials;
mod exec;
pub mod interpreters;
pub mod isolation;
mod job;
pub mod queue;
pub mod recorder;
pub mod remote;
pub mod runtime;
pub mod spool;
pub mod targets;
pub mod wire;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cronium_core::clock::now_ms;
use cronium_core::logbus::LogBus;
use cronium_core::metrics::Metrics;
use cronium_core::payload::PayloadCache;
use cronium_protocol::Interpreter;
use tokio::sync::{oneshot, Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::queue::JobQueue;
use crate::targets::local::LocalTransport;

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Unique per agent process; recorded as the lease owner.
    pub worker_id: String,
    /// Jobs run at once.
    pub concurrency: usize,
    /// How long a claim stays valid without a heartbeat.
    pub lease: Duration,
    /// Fallback poll interval when no wake-up arrives (e.g. jobs enqueued by another server).
    pub poll_interval: Duration,
    /// How long one claim may wait on the queue for a job (a remote agent's long-poll; zero
    /// for the embedded agent, which is woken in-process).
    pub claim_wait: Duration,
    /// The `cronium-runner` binary for local runs.
    pub runner_path: PathBuf,
    /// Where payload archives are cached.
    pub payload_dir: PathBuf,
    /// Where runners create their working directories (None: the system temp dir).
    pub work_base: Option<PathBuf>,
    /// Cap on the log bytes kept per execution.
    pub max_output_bytes: u64,
    /// SIGTERM-to-SIGKILL grace on timeout and cancel.
    pub kill_grace: Duration,
    /// Most servers one job runs on at once.
    pub fanout_concurrency: usize,
    /// Interpreter binaries to use for local runs instead of the ones found on `PATH`.
    pub interpreters: BTreeMap<Interpreter, String>,
    /// The user local runs execute as (see `isolation::choose_run_user`); None: this process's.
    pub run_user: Option<isolation::RunUser>,
    /// Variables of this process's environment that local runs get (`--pass-env`).
    pub pass_env: Vec<String>,
    /// What local runs must not reach (the data directory): hidden by the runner with Landlock
    /// when they run as this process's own user (as another user, its 0700 mode is enough).
    pub private_paths: Vec<PathBuf>,
    /// The umask of local runs (None: this process's).
    pub run_umask: Option<u32>,
    /// The helpers mode of events and nodes that do not choose one (`cronium serve --helpers`).
    pub helpers: cronium_protocol::HelperMode,
    /// On shutdown, how long running jobs may take to finish. Jobs still running after it are
    /// left to lease recovery (their runners stop the scripts when the agent exits).
    pub shutdown_grace: Duration,
    /// What makes a server `unreachable` for a target's `skip_unreachable`.
    pub health_thresholds: cronium_core::health::Thresholds,
}

impl AgentConfig {
    pub fn new(runner_path: PathBuf, payload_dir: PathBuf) -> Self {
        AgentConfig {
            worker_id: default_worker_id(),
            concurrency: 16,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            claim_wait: Duration::ZERO,
            runner_path,
            payload_dir,
            work_base: None,
            max_output_bytes: cronium_protocol::DEFAULT_MAX_OUTPUT_BYTES,
            kill_grace: Duration::from_millis(cronium_protocol::DEFAULT_KILL_GRACE_MS),
            shutdown_grace: Duration::from_secs(10),
            fanout_concurrency: 256,
            interpreters: BTreeMap::new(),
            run_user: None,
            pass_env: Vec::new(),
            private_paths: Vec::new(),
            run_umask: None,
            helpers: cronium_protocol::HelperMode::Bundled,
            health_thresholds: Default::default(),
        }
    }
}

fn default_worker_id() -> String {
    let host =
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "host".into());
    format!(
        "{}-{}-{:04x}",
        host.trim(),
        std::process::id(),
        rand::random::<u16>()
    )
}

pub(crate) struct Inner {
    pub(crate) config: AgentConfig,
    pub(crate) queue: Arc<dyn JobQueue>,
    pub(crate) bus: Arc<LogBus>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) wake: Arc<Notify>,
    pub(crate) payloads: PayloadCache,
    pub(crate) local: LocalTransport,
    pub(crate) http: reqwest::Client,
    pub(crate) interpreters: BTreeMap<Interpreter, String>,
    pub(crate) docker: Option<Arc<cronium_docker::DockerExecutor>>,
    pub(crate) ssh: Option<cronium_ssh::SshExecutor>,
    pub(crate) runtime: Option<Arc<dyn runtime::RuntimeApi>>,
    /// Parsed event specs by (event id, version): a stored version never changes, so each is
    /// read and validated once, not on every run.
    pub(crate) specs: job::SpecCache,
    /// Set when the agent stops claiming: a job's end then hands no successor to its slot.
    pub(crate) draining: std::sync::atomic::AtomicBool,
}

/// The remote transports an agent can use; a target whose transport is missing fails its jobs
/// with a message that says so.
#[derive(Default, Clone)]
pub struct Transports {
    pub docker: Option<Arc<cronium_docker::DockerExecutor>>,
    pub ssh: Option<cronium_ssh::SshExecutor>,
    /// Answers runtime API calls (API mode); None: API mode falls back to bundled.
    pub runtime: Option<Arc<dyn runtime::RuntimeApi>>,
}

/// A running agent. Cheap to clone.
#[derive(Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

impl Agent {
    pub fn new(
        mut config: AgentConfig,
        queue: Arc<dyn JobQueue>,
        bus: Arc<LogBus>,
        metrics: Arc<Metrics>,
        transports: Transports,
    ) -> Self {
        if let Some(base) = &config.work_base {
            use std::os::unix::fs::DirBuilderExt;
            let made = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(base);
            if let Err(e) = made {
                tracing::warn!(dir = %base.display(), error = %e, "work directory unusable; using the system temp dir");
                config.work_base = None;
            }
        }
        let run_user = config.run_user.as_ref();
        if let (Some(base), Some(user)) = (&config.work_base, run_user) {
            match isolation::user_work_base(base, user) {
                Ok(dir) => config.work_base = Some(dir),
                Err(e) => {
                    tracing::warn!(dir = %base.display(), user = %user.name, error = %e, "work directory unusable for the run user; using the system temp dir");
                    config.work_base = None;
                }
            }
        }
        let interpreters = interpreters::resolve(&config.interpreters, run_user);
        let interpreter_dirs: Vec<PathBuf> = interpreters
            .values()
            .filter_map(|p| std::path::Path::new(p).parent().map(PathBuf::from))
            .collect();
        let local = LocalTransport {
            runner: config.runner_path.clone(),
            work_base: config.work_base.clone(),
            env: Some(isolation::run_env(
                run_user,
                &config.pass_env,
                &interpreter_dirs,
            )),
            run_user: config.run_user.clone(),
            // Another user cannot open the 0700 data directory; only our own user needs Landlock.
            hide: match run_user {
                Some(_) => Vec::new(),
                None => config.private_paths.clone(),
            },
            umask: config.run_umask,
            prestart: true,
            warm: Default::default(),
        };
        match run_user {
            Some(u) => tracing::info!(user = %u.name, uid = u.uid, "local runs execute as an unprivileged user"),
            // SAFETY: geteuid has no preconditions and cannot fail.
            None if unsafe { libc::geteuid() } == 0 => tracing::warn!("local runs execute as root (--run-as root): only Landlock keeps scripts from the data directory, and root can get around it"),
            None => tracing::info!("local runs execute as the server's own user, with the data directory hidden by Landlock where the kernel has it (each run's log says)"),
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("cronium/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Agent {
            inner: Arc::new(Inner {
                payloads: PayloadCache::new(config.payload_dir.clone()),
                config,
                queue,
                bus,
                metrics,
                wake: Arc::new(Notify::new()),
                local,
                http,
                interpreters,
                docker: transports.docker,
                ssh: transports.ssh,
                runtime: transports.runtime,
                specs: job::SpecCache::default(),
                draining: Default::default(),
            }),
        }
    }

    /// Notify this to make the agent look for work at once (after an enqueue).
    pub fn waker(&self) -> Arc<Notify> {
        self.inner.wake.clone()
    }

    pub fn worker_id(&self) -> &str {
        &self.inner.config.worker_id
    }

    /// Claims and runs jobs until `shutdown` is cancelled.
    pub async fn run(&self, shutdown: CancellationToken) {
        let inner = self.inner.clone();
        let slots = Arc::new(Semaphore::new(inner.config.concurrency.max(1)));
        let recovery = tokio::spawn(recovery_loop(inner.clone(), shutdown.clone()));
        let lease_ms = inner.config.lease.as_millis() as i64;
        let mut running = tokio::task::JoinSet::new();
        // Claims failed in a row: the wait before the next one doubles (a remote agent whose
        // server is unreachable backs off), back to the poll interval at the first success.
        let mut failures: u32 = 0;
        loop {
            while running.try_join_next().is_some() {}
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = shutdown.cancelled() => break,
            };
            let claimed = tokio::select! {
                c = inner.queue.claim_wait(&inner.config.worker_id, lease_ms, inner.config.claim_wait) => c,
                // A long-poll given up: a job it claimed meanwhile is left to lease recovery.
                _ = shutdown.cancelled() => break,
            };
            if claimed.is_ok() {
                failures = 0;
            }
            match claimed {
                Ok(Some(job)) => {
                    tracing::debug!(job = job.id, event = %job.event_name, attempt = job.attempt, "claimed");
                    inner.bus.job_changed(Some(job.id));
                    let inner = inner.clone();
                    let (started, first_write) = oneshot::channel();
                    running.spawn(async move {
                        let mut next = job::execute(
                            inner.clone(),
                            job,
                            claim_gate::ClaimGate::new(started),
                            exec::Prepared::default(),
                        )
                        .await;
                        // A successor node handed to this slot by the job's end runs at once.
                        while let Some(handed) = next {
                            let job = handed.job;
                            tracing::debug!(job = job.id, event = %job.event_name, attempt = job.attempt, "handed off");
                            inner.bus.job_changed(Some(job.id));
                            // The claim loop looks again only if the end left other work ready.
                            let gate = if handed.more_ready {
                                claim_gate::ClaimGate::waking(inner.wake.clone())
                            } else {
                                claim_gate::ClaimGate::none()
                            };
                            next = job::execute(inner.clone(), job, gate, handed.prepared).await;
                        }
                        drop(permit);
                    });
                    // The job's first write (its execution) goes before this loop's next
                    // claim: the store has one write connection, and a claim that finds
                    // nothing (the usual case when jobs come one at a time, as a workflow's
                    // nodes do) would only delay it. Bounded, so that a slow start never
                    // holds back the queue.
                    tokio::select! {
                        _ = first_write => {}
                        _ = tokio::time::sleep(CLAIM_GATE) => {}
                        _ = shutdown.cancelled() => break,
                    }
                }
                Ok(None) => {
                    drop(permit);
                    let wait = match inner.queue.next_run_at().await {
                        Ok(Some(at)) => Duration::from_millis(
                            (at - now_ms()).clamp(1, inner.config.poll_interval.as_millis() as i64)
                                as u64,
                        ),
                        _ => inner.config.poll_interval,
                    };
                    tokio::select! {
                        _ = inner.wake.notified() => {}
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.cancelled() => break,
                    }
                }
                Err(e) => {
                    drop(permit);
                    failures = failures.saturating_add(1);
                    let wait = (inner.config.poll_interval * 2u32.pow(failures.min(5) - 1))
                        .min(MAX_CLAIM_BACKOFF);
                    tracing::warn!(error = %e, retry_in = ?wait, "claiming failed");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.cancelled() => break,
                    }
                }
            }
        }
        inner
            .draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
        recovery.abort();
        if !running.is_empty() {
            tracing::info!(
                jobs = running.len(),
                "waiting for running jobs before shutting down"
            );
            let _ = tokio::time::timeout(inner.config.shutdown_grace, async {
                while running.join_next().await.is_some() {}
            })
            .await;
        }
    }
}

/// Longest wait between two claims after failed ones.
const MAX_CLAIM_BACKOFF: Duration = Duration::from_secs(30);

/// Longest the claim loop waits for a just-claimed job's first write before claiming again.
const CLAIM_GATE: Duration = Duration::from_millis(5);

/// Requeues jobs whose worker vanished (crashed agent, lost machine).
async fn recovery_loop(inner: Arc<Inner>, shutdown: CancellationToken) {
    // At most 2 s apart whatever the lease: a dead agent's jobs wait out its lease, not also
    // half of ours. One indexed UPDATE per pass.
    let every = (inner.config.lease / 2).clamp(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
        match inner.queue.recover_expired().await {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(jobs = n, "recovered jobs whose worker vanished");
                inner.bus.job_changed(None);
                inner.wake.notify_one();
            }
            Err(e) => tracing::warn!(error = %e, "lease recovery failed"),
        }
    }
}
