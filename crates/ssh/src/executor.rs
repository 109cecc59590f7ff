//! [`SshExecutor`]: the public face of the crate. Picks the mode, leases a connection, deploys the
//! runner when needed, runs, falls back in auto mode, and counts. Holds no per-run state.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use cronium_core::transport::{EventSink, RunRequest};
use cronium_protocol::{Finished, RunStatus, RunnerEvent, Stream};
use tokio_util::sync::CancellationToken;

use crate::connection::{self, exec, fingerprint_of};
use crate::deploy::{DeployCache, Deployer};
use crate::direct::{kill_group, run_direct};
use crate::metrics::{add, inc, Metrics, MetricsSnapshot};
use crate::pool::{Lease, Pool};
use crate::runner_run::{run_runner, RunnerRunError};
use crate::serve_run;
use crate::shell::quote;
use crate::{
    DeploymentRecord, DirectScript, Mode, Platform, RunnerArtifact, ServerConfig, SshConfig,
    SshError,
};

/// The result of one execution on one server.
#[derive(Debug, Clone)]
pub struct RemoteRun {
    pub finished: Finished,
    /// `RunnerSsh` or `DirectSsh` (never `Auto`).
    pub mode_used: Mode,
    /// Why auto mode fell back to direct-ssh.
    pub fallback_reason: Option<String>,
    /// The deployment check of this run (runner-ssh and auto), for the deployment history.
    /// When the binary had vanished and was redeployed, this is the redeployment.
    pub deployment: Option<DeploymentRecord>,
    /// The host key the server presented (OpenSSH format): the caller pins it on first use.
    pub observed_host_key: String,
    pub runner_version: Option<String>,
}

/// How the server's host key compares with the pinned one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyStatus {
    Matches,
    /// Nothing pinned yet: the caller should pin [`TestReport::host_key`].
    FirstUse,
    Changed {
        expected_fingerprint: String,
    },
}

/// Result of [`SshExecutor::test`] (`cronium server test NAME`).
#[derive(Debug, Clone)]
pub struct TestReport {
    pub server: String,
    pub reachable: bool,
    pub authenticated: bool,
    /// Presented host key, OpenSSH format.
    pub host_key: Option<String>,
    pub host_key_fingerprint: Option<String>,
    pub host_key_status: Option<HostKeyStatus>,
    /// `uname -s`, e.g. `Linux`.
    pub os: Option<String>,
    /// `uname -m`, e.g. `x86_64`.
    pub arch: Option<String>,
    /// Version of the current runner if it is deployed on the host.
    pub runner_version: Option<String>,
    /// Connect, log in and probe, in milliseconds.
    pub latency_ms: u64,
    pub error: Option<String>,
}

pub(crate) struct Inner {
    pub(crate) cfg: SshConfig,
    /// Every registered runner: several versions per platform, at most one per (platform,
    /// version). Grows at run time (`add_runner`, `cronium runner add`).
    pub(crate) runners: std::sync::RwLock<Vec<RunnerArtifact>>,
    /// The version of the runner this Cronium ships with (the first given): what a server with
    /// no pin runs.
    pub(crate) default_version: String,
    /// Platforms detected on contact, by host, port and user.
    pub(crate) platforms: std::sync::Mutex<HashMap<(String, u16, String), Platform>>,
    pub(crate) pool: Arc<Pool>,
    pub(crate) cache: DeployCache,
    pub(crate) metrics: Arc<Metrics>,
    /// Where each run's [`crate::Contact`] goes (`observe_contacts`).
    pub(crate) contacts: std::sync::OnceLock<tokio::sync::mpsc::Sender<crate::Contact>>,
}

/// Runs executions on SSH servers. Cheap to clone; clones share pools, cache and metrics.
#[derive(Clone)]
pub struct SshExecutor {
    pub(crate) inner: Arc<Inner>,
}

impl SshExecutor {
    /// An executor with one runner (the platform it was built for).
    pub fn new(config: SshConfig, runner: RunnerArtifact) -> Self {
        Self::with_runners(config, vec![runner])
    }

    /// An executor with these runners ([`RunnerArtifact::discover`], then the ones registered
    /// later); of two for the same platform and version the first is used. The first runner's
    /// version is the default ([`Self::default_version`]); it is also the one `test` and health
    /// checks look for on a host whose platform is not known yet.
    pub fn with_runners(config: SshConfig, runners: Vec<RunnerArtifact>) -> Self {
        let default_version = runners
            .first()
            .map(|r| r.version.clone())
            .unwrap_or_default();
        let mut unique: Vec<RunnerArtifact> = Vec::new();
        for r in runners {
            if !unique
                .iter()
                .any(|u| u.platform == r.platform && u.version == r.version)
            {
                unique.push(r);
            }
        }
        let metrics = Arc::new(Metrics::default());
        SshExecutor {
            inner: Arc::new(Inner {
                pool: Arc::new(Pool::new(config.clone(), metrics.clone())),
                cfg: config,
                runners: std::sync::RwLock::new(unique),
                default_version,
                platforms: Default::default(),
                cache: DeployCache::default(),
                metrics,
                contacts: std::sync::OnceLock::new(),
            }),
        }
    }

    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.metrics.snapshot()
    }

    pub fn config(&self) -> &SshConfig {
        &self.inner.cfg
    }

    /// The runners this executor can deploy: every platform and version.
    pub fn runners(&self) -> Vec<RunnerArtifact> {
        self.inner
            .runners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The version a server without a pin runs: the runner this Cronium ships with.
    pub fn default_version(&self) -> &str {
        &self.inner.default_version
    }

    /// Makes another runner deployable (`cronium runner add`). `Ok(false)`: this very build is
    /// already there. A different build of a (platform, version) already held is refused: a
    /// pin names a version, and it must mean one binary.
    pub fn add_runner(&self, a: RunnerArtifact) -> Result<bool, String> {
        let mut runners = self
            .inner
            .runners
            .write()
            .unwrap_or_else(|p| p.into_inner());
        match runners
            .iter()
            .find(|r| r.platform == a.platform && r.version == a.version)
        {
            Some(r) if r.sha256 == a.sha256 => Ok(false),
            Some(r) => Err(format!(
                "version {} for {} is already registered with another build (sha256 {}); give the new build another version",
                a.version, a.platform, r.sha256
            )),
            None => {
                runners.push(a);
                Ok(true)
            }
        }
    }

    /// The runner of `version` for `platform`, if registered.
    pub fn artifact(&self, platform: &Platform, version: &str) -> Option<RunnerArtifact> {
        self.inner
            .runners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|r| &r.platform == platform && r.version == version)
            .cloned()
    }

    /// The versions registered for `platform`, sorted (`0.1.0, 0.2.0`), or `none`.
    pub fn versions_for(&self, platform: &Platform) -> String {
        let mut v: Vec<String> = self
            .inner
            .runners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|r| &r.platform == platform)
            .map(|r| r.version.clone())
            .collect();
        v.sort();
        v.dedup();
        if v.is_empty() {
            "none".into()
        } else {
            v.join(", ")
        }
    }

    /// The platform this executor detected on `server` (by a run's deployment or `test`), for
    /// the caller to store.
    pub fn detected_platform(&self, server: &ServerConfig) -> Option<Platform> {
        self.inner
            .platforms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&platform_key(server))
            .cloned()
    }

    fn remember_platform(&self, server: &ServerConfig, p: Platform) {
        self.inner
            .platforms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(platform_key(server), p);
    }

    /// What is known of `server`'s platform: detected by this process, else the caller's.
    pub fn known_platform(&self, server: &ServerConfig) -> Option<Platform> {
        self.detected_platform(server)
            .or_else(|| server.platform.clone())
    }

    pub(crate) fn known_platform_name(&self, server: &ServerConfig) -> String {
        self.known_platform(server)
            .map_or_else(|| "unknown".into(), |p| p.to_string())
    }

    /// The version `server` should run: its wanted one, else the default.
    pub fn wanted_version<'a>(&'a self, server: &'a ServerConfig) -> &'a str {
        server
            .runner_version
            .as_deref()
            .unwrap_or(&self.inner.default_version)
    }

    /// The runner of `server`'s wanted version for platform `p`. No runner at all for `p`:
    /// [`SshError::UnsupportedPlatform`] (auto mode falls back); runners for `p` but not of
    /// that version: [`SshError::NoArtifact`] (it does not).
    pub(crate) fn artifact_for(
        &self,
        server: &ServerConfig,
        p: &Platform,
    ) -> Result<RunnerArtifact, SshError> {
        let version = self.wanted_version(server);
        if let Some(a) = self.artifact(p, version) {
            return Ok(a);
        }
        let runners = self.inner.runners.read().unwrap_or_else(|p| p.into_inner());
        if !runners.iter().any(|r| &r.platform == p) {
            drop(runners);
            return Err(SshError::UnsupportedPlatform {
                server: server.name.clone(),
                platform: p.to_string(),
                available: self.available(),
            });
        }
        drop(runners);
        Err(SshError::NoArtifact {
            server: server.name.clone(),
            platform: p.to_string(),
            version: version.to_string(),
            available: self.versions_for(p),
        })
    }

    /// The runner a health check looks for: the one of `server`'s wanted version for its
    /// known platform (none when there is no runner for it), else the first of that version.
    pub(crate) fn probe_artifact(&self, server: &ServerConfig) -> Option<RunnerArtifact> {
        match self.known_platform(server) {
            Some(p) => self.artifact_for(server, &p).ok(),
            None => {
                let version = self.wanted_version(server);
                let runners = self.inner.runners.read().unwrap_or_else(|p| p.into_inner());
                runners
                    .iter()
                    .find(|r| r.version == version)
                    .or(runners.first())
                    .cloned()
            }
        }
    }

    /// The platforms there are runners for: `linux/aarch64, linux/x86_64`.
    fn available(&self) -> String {
        let mut v: Vec<String> = self
            .inner
            .runners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|r| r.platform.to_string())
            .collect();
        v.sort();
        v.dedup();
        if v.is_empty() {
            "no platform".into()
        } else {
            v.join(", ")
        }
    }

    /// The runner for `server`: its wanted version for its known platform, or the one `uname`
    /// reports on `conn` (remembered). No runner for the platform:
    /// [`SshError::UnsupportedPlatform`]; none of that version: [`SshError::NoArtifact`].
    pub(crate) async fn select(
        &self,
        conn: &connection::Conn,
        server: &ServerConfig,
    ) -> Result<RunnerArtifact, SshError> {
        let platform = match self.known_platform(server) {
            Some(p) => p,
            None => {
                let failed = |reason: String| SshError::Deploy {
                    server: server.name.clone(),
                    reason: format!("cannot detect the host's OS and architecture: {reason}"),
                    record: None,
                };
                let out = exec(
                    conn,
                    "uname -s; uname -m",
                    None,
                    self.inner.cfg.connect_timeout,
                )
                .await
                .map_err(failed)?;
                let text = out.stdout_str();
                let mut lines = text.lines();
                let p = match (out.ok(), lines.next(), lines.next()) {
                    (true, Some(os), Some(arch)) => Platform::new(os, arch),
                    _ => None,
                }
                .ok_or_else(|| {
                    failed(format!(
                        "`uname -s; uname -m` printed {:?}{}",
                        text.chars().take(100).collect::<String>(),
                        if out.stderr_str().is_empty() {
                            String::new()
                        } else {
                            format!(
                                " ({})",
                                out.stderr_str().chars().take(200).collect::<String>()
                            )
                        }
                    ))
                })?;
                self.remember_platform(server, p.clone());
                p
            }
        };
        self.artifact_for(server, &platform)
    }

    /// Idle pooled connections to `server` that are still open (for status pages and tests).
    pub fn idle_connections(&self, server: &ServerConfig) -> usize {
        self.inner.pool.idle_count(server)
    }

    /// Drops pooled connections and the deployment cache entry of `server` (after `accept-key`,
    /// a credential change or removal).
    pub fn forget(&self, server: &ServerConfig) {
        self.inner.pool.forget(server);
        self.inner.cache.invalidate(server);
        self.inner
            .platforms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&platform_key(server));
    }

    /// Connects with a fresh connection (never pooled) and reports what an operator needs to
    /// register the server. Never fails: problems are in [`TestReport::error`].
    pub async fn test(&self, server: &ServerConfig) -> TestReport {
        let started = Instant::now();
        let mut report = TestReport {
            server: server.name.clone(),
            reachable: false,
            authenticated: false,
            host_key: None,
            host_key_fingerprint: None,
            host_key_status: None,
            os: None,
            arch: None,
            runner_version: None,
            latency_ms: 0,
            error: None,
        };
        let conn = match connection::connect(server, &self.inner.cfg).await {
            Ok(c) => c,
            Err(e) => {
                match &e {
                    SshError::HostKeyChanged {
                        expected,
                        observed,
                        observed_key,
                        ..
                    } => {
                        report.reachable = true;
                        report.host_key = Some(observed_key.clone());
                        report.host_key_fingerprint = Some(observed.clone());
                        report.host_key_status = Some(HostKeyStatus::Changed {
                            expected_fingerprint: expected.clone(),
                        });
                    }
                    SshError::Auth { .. } | SshError::HostKeyRejected { .. } => {
                        report.reachable = true
                    }
                    _ => {}
                }
                report.error = Some(e.to_string());
                report.latency_ms = started.elapsed().as_millis() as u64;
                return report;
            }
        };
        report.reachable = true;
        report.authenticated = true;
        report.host_key_fingerprint = Some(fingerprint_of(&conn.host_key));
        report.host_key_status = Some(if server.host_key.is_some() {
            HostKeyStatus::Matches
        } else {
            HostKeyStatus::FirstUse
        });
        report.host_key = Some(conn.host_key.clone());
        // The first runner of ours that runs on the host tells its version: the server's wanted
        // version first (with several on the host, the one it runs).
        let wanted = self.wanted_version(server).to_string();
        let mut runners = self.runners();
        runners.sort_by_key(|r| r.version != wanted);
        let probes: String = runners
            .iter()
            .map(|r| {
                let q = quote(
                    &Deployer {
                        cfg: &self.inner.cfg,
                        runner: r,
                        cache: &self.inner.cache,
                        metrics: &self.inner.metrics,
                    }
                    .remote_path(),
                );
                format!(" if [ -x {q} ] && {q} --version 2>/dev/null; then exit 0; fi;")
            })
            .collect();
        let cmd = format!("uname -s; uname -m;{probes} true");
        match exec(&conn, &cmd, None, self.inner.cfg.connect_timeout).await {
            Ok(out) => {
                let text = out.stdout_str();
                let mut lines = text.lines();
                report.os = lines.next().map(|s| s.trim().to_string());
                report.arch = lines.next().map(|s| s.trim().to_string());
                report.runner_version = crate::config::parse_version(&text);
                if let Some(p) = Platform::new(
                    report.os.as_deref().unwrap_or_default(),
                    report.arch.as_deref().unwrap_or_default(),
                ) {
                    self.remember_platform(server, p);
                }
            }
            Err(e) => report.error = Some(format!("probe command failed: {e}")),
        }
        let _ = conn
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "")
            .await;
        report.latency_ms = started.elapsed().as_millis() as u64;
        report
    }

    /// Logs in with a fresh connection (never pooled; the same host key check as every
    /// connection: a pinned key must match) and runs `true`. This is how a new credential is
    /// proven before it replaces the stored one. Returns the host key the server presented
    /// (OpenSSH format), for the caller to pin when none is pinned yet.
    pub async fn check_login(&self, server: &ServerConfig) -> Result<String, SshError> {
        let conn = connection::connect(server, &self.inner.cfg).await?;
        let out = exec(&conn, "true", None, self.inner.cfg.connect_timeout).await;
        let _ = conn
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "")
            .await;
        let failed = |reason: String| SshError::Command {
            server: server.name.clone(),
            reason,
        };
        match out {
            Ok(o) if o.ok() => Ok(conn.host_key.clone()),
            Ok(o) => Err(failed(format!(
                "`true` ended with {}{}",
                o.status.map_or_else(
                    || "no exit status".to_string(),
                    |c| format!("exit status {c}")
                ),
                if o.stderr_str().is_empty() {
                    String::new()
                } else {
                    format!(": {}", o.stderr_str().chars().take(200).collect::<String>())
                }
            ))),
            Err(e) => Err(failed(e)),
        }
    }

    /// Runs one execution on `server`. Script failures, timeouts and cancellations are
    /// `Ok(RemoteRun)` with the matching `Finished`; `Err` means the transport failed (host key,
    /// credentials, network, deployment in runner-ssh mode).
    pub async fn run(
        &self,
        server: &ServerConfig,
        mode: Mode,
        req: &RunRequest,
        direct: &DirectScript,
        sink: &EventSink,
        cancel: CancellationToken,
    ) -> Result<RemoteRun, SshError> {
        let m = &self.inner.metrics;
        inc(&m.executions_total);
        let started = Instant::now();
        let result = self
            .run_inner(server, mode, req, direct, sink, &cancel)
            .await;
        add(&m.execution_ms_sum, started.elapsed().as_millis() as u64);
        inc(&m.execution_count);
        match &result {
            Ok(r) => inc(match r.finished.status {
                RunStatus::Succeeded => &m.executions_succeeded,
                RunStatus::Failed => &m.executions_failed,
                RunStatus::TimedOut => &m.executions_timed_out,
                RunStatus::Cancelled => &m.executions_cancelled,
            }),
            Err(SshError::Lost { .. }) => inc(&m.executions_lost),
            Err(_) => inc(&m.executions_failed),
        }
        self.report_contact(server, result.as_ref().err());
        result
    }

    async fn run_inner(
        &self,
        server: &ServerConfig,
        mode: Mode,
        req: &RunRequest,
        direct: &DirectScript,
        sink: &EventSink,
        cancel: &CancellationToken,
    ) -> Result<RemoteRun, SshError> {
        server.validate()?;
        if mode != Mode::RunnerSsh {
            // Refuse bad env before touching the host.
            crate::direct::command_line(direct, req)?;
        }
        let mut lease = self.inner.pool.get(server).await?;
        match mode {
            Mode::DirectSsh => {
                self.direct(&mut lease, server, req, direct, sink, cancel, None, None)
                    .await
            }
            Mode::RunnerSsh => match self.runner(&mut lease, server, req, sink, cancel).await {
                Ok(r) => Ok(r),
                Err((rec, SshError::Deploy { server, reason, .. })) => Err(SshError::Deploy {
                    server,
                    reason,
                    record: rec.map(Box::new),
                }),
                Err((_, e)) => Err(e),
            },
            Mode::Auto => match self.runner(&mut lease, server, req, sink, cancel).await {
                Ok(r) => Ok(r),
                Err((record, e @ SshError::UnsupportedPlatform { .. }))
                | Err((record @ Some(_), e @ SshError::Deploy { .. })) => {
                    inc(&self.inner.metrics.fallbacks);
                    let reason = e.to_string();
                    let _ = sink
                        .send(RunnerEvent::Log {
                            seq: 0,
                            stream: Stream::System,
                            line: format!("auto mode: falling back to direct-ssh: {reason}"),
                            ts_ms: 0,
                        })
                        .await;
                    self.direct(
                        &mut lease,
                        server,
                        req,
                        direct,
                        sink,
                        cancel,
                        Some(reason),
                        record,
                    )
                    .await
                }
                Err((_, e)) => Err(e),
            },
        }
    }

    /// runner-ssh; on a deployment failure the error comes with the deployment record.
    async fn runner(
        &self,
        lease: &mut Lease,
        server: &ServerConfig,
        req: &RunRequest,
        sink: &EventSink,
        cancel: &CancellationToken,
    ) -> Result<RemoteRun, (Option<DeploymentRecord>, SshError)> {
        let runner = self
            .select(&lease.conn, server)
            .await
            .map_err(|e| (None, e))?;
        let deployer = Deployer {
            cfg: &self.inner.cfg,
            runner: &runner,
            cache: &self.inner.cache,
            metrics: &self.inner.metrics,
        };
        let mut retried = false;
        loop {
            let (record, path) = deployer.ensure(&lease.conn, server).await;
            let path = match path {
                Ok(p) => p,
                Err(e) => {
                    if lease.conn.handle.is_closed() {
                        lease.mark_broken();
                    }
                    return Err((Some(record), e));
                }
            };
            let outcome = if self.inner.cfg.persistent_runner {
                self.run_on_serve(&lease.conn, server, &path, req, sink, cancel)
                    .await
            } else {
                run_runner(
                    &lease.conn,
                    server,
                    &path,
                    &self.inner.cfg.work_base_arg(),
                    req,
                    sink,
                    cancel,
                )
                .await
            };
            match outcome {
                Ok(finished) => {
                    return Ok(RemoteRun {
                        finished,
                        mode_used: Mode::RunnerSsh,
                        fallback_reason: None,
                        deployment: Some(record),
                        observed_host_key: lease.conn.host_key.clone(),
                        runner_version: Some(runner.version.clone()),
                    })
                }
                Err(RunnerRunError::Missing(why)) if !retried => {
                    // The binary vanished behind the cache's back: forget, redeploy, retry once.
                    tracing::warn!(server = %server.name, %why, "runner missing on the host; redeploying");
                    let _ = sink
                        .send(RunnerEvent::Log {
                            seq: 0,
                            stream: Stream::System,
                            line: format!("runner missing on {} ({why}); redeploying", server.name),
                            ts_ms: 0,
                        })
                        .await;
                    self.inner.cache.invalidate(server);
                    retried = true;
                }
                Err(RunnerRunError::Missing(why)) => {
                    self.inner.cache.invalidate(server);
                    return Err((
                        Some(record),
                        SshError::Deploy {
                            server: server.name.clone(),
                            reason: format!("the runner is still missing after redeploying: {why}"),
                            record: None,
                        },
                    ));
                }
                Err(RunnerRunError::Other(e, pid)) => {
                    // Any error puts the deployment in doubt: verify it on the next run.
                    self.inner.cache.invalidate(server);
                    if matches!(e, SshError::Lost { .. } | SshError::Protocol { .. }) {
                        lease.mark_broken();
                    }
                    if let (SshError::Lost { .. }, Some(pid)) = (&e, pid) {
                        // The runner stops the script when it sees EOF, but sshd may not notice
                        // a dead client for a long time: stop the script's group ourselves.
                        self.kill_later(server, pid, req.kill_grace);
                    }
                    return Err((Some(record), e));
                }
            }
        }
    }

    /// A run through the connection's `cronium-runner serve` session; falls back to an exec
    /// channel for this run when the session cannot be started. A connection's first run uses
    /// an exec channel too: a connection opened for one run (a cold fan-out) would only pay for
    /// a serve process it never reuses; the second run starts the session.
    async fn run_on_serve(
        &self,
        conn: &connection::Conn,
        server: &ServerConfig,
        path: &str,
        req: &RunRequest,
        sink: &EventSink,
        cancel: &CancellationToken,
    ) -> Result<Finished, RunnerRunError> {
        let wb = self.inner.cfg.work_base_arg();
        if conn
            .runner_runs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            == 0
        {
            return run_runner(conn, server, path, &wb, req, sink, cancel).await;
        }
        let unavailable = |why: String| {
            inc(&self.inner.metrics.serve_unavailable);
            tracing::warn!(server = %server.name, reason = %why, "runner serve mode unavailable; one exec channel per run");
        };
        let timeout = self.inner.cfg.connect_timeout;
        match serve_run::ensure_session(conn, path, &wb).await {
            Ok(mut session) => {
                let was_ready = session.is_ready();
                let outcome = serve_run::run_on_session(
                    &mut session,
                    conn,
                    server,
                    req,
                    sink,
                    cancel,
                    timeout,
                )
                .await;
                if !was_ready && session.is_ready() {
                    inc(&self.inner.metrics.serve_sessions);
                }
                drop(session);
                match outcome {
                    Ok(f) => Ok(f),
                    Err(serve_run::ServeRunError::Run(e)) => Err(e),
                    Err(serve_run::ServeRunError::Unavailable(why)) => {
                        unavailable(why);
                        run_runner(conn, server, path, &wb, req, sink, cancel).await
                    }
                }
            }
            Err(serve_run::StartError::Missing(why)) => Err(RunnerRunError::Missing(why)),
            Err(serve_run::StartError::Other(why)) => {
                unavailable(why);
                run_runner(conn, server, path, &wb, req, sink, cancel).await
            }
        }
    }

    /// Kills process group `pgid` on `server` over a new connection, in the background and best
    /// effort: used after the run's own connection was lost (a host that is really down cannot
    /// be reached, and then its processes are not running either... or it gets them at reboot).
    fn kill_later(&self, server: &ServerConfig, pgid: u32, grace: std::time::Duration) {
        let (cfg, server) = (self.inner.cfg.clone(), server.clone());
        tokio::spawn(async move {
            match connection::connect(&server, &cfg).await {
                Ok(conn) => {
                    if let Err(e) = kill_group(&conn, pgid, grace).await {
                        tracing::warn!(server = %server.name, pgid, error = %e, "cleanup after a lost connection failed");
                    }
                }
                Err(e) => {
                    tracing::warn!(server = %server.name, pgid, error = %e, "cannot reconnect to clean up after a lost connection");
                }
            }
        });
    }

    #[allow(clippy::too_many_arguments)]
    async fn direct(
        &self,
        lease: &mut Lease,
        server: &ServerConfig,
        req: &RunRequest,
        script: &DirectScript,
        sink: &EventSink,
        cancel: &CancellationToken,
        fallback_reason: Option<String>,
        deployment: Option<DeploymentRecord>,
    ) -> Result<RemoteRun, SshError> {
        match run_direct(&lease.conn, server, script, req, sink, cancel).await {
            Ok(finished) => Ok(RemoteRun {
                finished,
                mode_used: Mode::DirectSsh,
                fallback_reason,
                deployment,
                observed_host_key: lease.conn.host_key.clone(),
                runner_version: None,
            }),
            Err(lost) => {
                lease.mark_broken();
                if let Some(pgid) = lost.pgid {
                    // Without a runner nothing on the host notices the lost connection.
                    self.kill_later(server, pgid, req.kill_grace);
                }
                Err(lost.error)
            }
        }
    }
}

fn platform_key(server: &ServerConfig) -> (String, u16, String) {
    (server.host.clone(), server.port, server.user.clone())
}
