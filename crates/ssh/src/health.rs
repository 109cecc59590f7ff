//! Health checks of a server over SSH: `cronium-runner health` run on a pooled connection, and the
//! contacts the executor reports after each run so that the server can check right away on the
//! connection the run gave back. Never a second login when a pooled connection is there: a check
//! opens a channel on an idle pooled connection without leasing it (so a run that wants it
//! meanwhile is not pushed to log in), an after-run check uses that or nothing, an interval
//! check logs in only when the server has no connection open at all, and skips a server whose
//! connections are all busy (their runs report contacts of their own).
//!
//! Not for judging a reading (`cronium_core::health`) nor for storing it (the server does).

use std::time::{Duration, Instant};

use cronium_protocol::Health;

use crate::connection::exec;
use crate::deploy::Deployer;
use crate::metrics::inc;
use crate::shell::quote;
use crate::{ServerConfig, SshError, SshExecutor};

/// What the command prints when the runner is not on the host (nothing deployed yet).
const NO_RUNNER: &str = "cronium-health: no runner";

/// One health check that reached the host.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    /// What `cronium-runner health` said; `None` when it could not say (see `error`).
    pub reading: Option<Health>,
    /// Why there is no reading although the host answered (no runner deployed yet, an older
    /// runner without `health`, a work directory that does not exist).
    pub error: Option<String>,
    pub duration: Duration,
}

/// Where a health check may get its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthConnection {
    /// An idle pooled connection or nothing (after a run: the one it just gave back).
    IdleOnly,
    /// An idle pooled connection; a new login (pooled afterwards) only when none is open; nothing
    /// when every connection is leased by a run.
    PooledOrLogin,
}

/// A server the executor just used for a run, and whether the transport failed (the connection,
/// the login or the host key: not the script).
#[derive(Clone)]
pub struct Contact {
    pub server: ServerConfig,
    pub failure: Option<String>,
    /// The run ended with an error that does not say whether the host is still there (the
    /// deployment or the runner failed, maybe because the connection died): check it even if
    /// that takes a new login.
    pub doubtful: bool,
}

impl SshExecutor {
    /// Sends a [`Contact`] after every run (at most one receiver; a full channel drops contacts,
    /// never delaying a run). Returns false when an observer is already set.
    pub fn observe_contacts(&self, tx: tokio::sync::mpsc::Sender<Contact>) -> bool {
        self.inner.contacts.set(tx).is_ok()
    }

    pub(crate) fn report_contact(&self, server: &ServerConfig, error: Option<&SshError>) {
        let Some(tx) = self.inner.contacts.get() else {
            return;
        };
        let (failure, doubtful) = match error {
            None => (None, false),
            // Not a contact failure by itself: the health check that follows decides.
            Some(SshError::Deploy { .. } | SshError::Protocol { .. }) => (None, true),
            Some(SshError::InvalidConfig { .. } | SshError::InvalidRequest { .. }) => return,
            Some(SshError::Io(_)) => return,
            // The host answered; it only has no runner of ours.
            Some(SshError::UnsupportedPlatform { .. }) => (None, false),
            Some(e) => (Some(e.to_string()), false),
        };
        let _ = tx.try_send(Contact {
            server: server.clone(),
            failure,
            doubtful,
        });
    }

    /// Runs `cronium-runner health` on `server`. `Ok(None)`: no connection to use (see
    /// [`HealthConnection`]), nothing was checked. `Err`: the host could not be reached or the
    /// command channel failed, which counts as a failed check.
    pub async fn health(
        &self,
        server: &ServerConfig,
        how: HealthConnection,
    ) -> Result<Option<HealthCheck>, SshError> {
        server.validate()?;
        let pool = &self.inner.pool;
        // An idle connection is used in place (a channel of its own); a new login happens only
        // when the server has no connection at all, and the lease returns it to the pool.
        let mut lease = None;
        let conn = match pool.peek_idle(server) {
            Some(c) => c,
            None if how == HealthConnection::IdleOnly => return Ok(None),
            None if pool.in_use(server) > 0 => return Ok(None),
            None => match pool.get(server).await {
                Ok(l) => {
                    let c = l.conn.clone();
                    lease = Some(l);
                    c
                }
                Err(e) => {
                    inc(&self.inner.metrics.health_checks);
                    inc(&self.inner.metrics.health_failures);
                    return Err(e);
                }
            },
        };
        inc(&self.inner.metrics.health_checks);
        let started = Instant::now();
        let Some(runner) = self.probe_artifact(server) else {
            return Ok(Some(HealthCheck {
                reading: None,
                error: Some(format!(
                    "no runner for this server's platform ({})",
                    self.known_platform_name(server)
                )),
                duration: started.elapsed(),
            }));
        };
        let path = Deployer {
            cfg: &self.inner.cfg,
            runner: &runner,
            cache: &self.inner.cache,
            metrics: &self.inner.metrics,
        }
        .remote_path();
        let cfg = &self.inner.cfg;
        let work = match cfg.work_dir.as_deref().map(str::trim) {
            Some(d) if !d.is_empty() => format!(" --work-dir {}", quote(d)),
            _ => String::new(),
        };
        let q = quote(&path);
        let cmd = format!(
            "if [ -x {q} ]; then exec {q} health --deploy-dir {}{work}; else echo '{NO_RUNNER}'; fi",
            quote(&cfg.remote_deploy_dir())
        );
        let out = match exec(&conn, &cmd, None, cfg.connect_timeout).await {
            Ok(o) => o,
            Err(reason) => {
                // A peeked connection that failed is left to the pool's own checks (a run pings
                // a quiet connection before it uses it).
                if let Some(l) = lease.as_mut() {
                    l.mark_broken();
                }
                inc(&self.inner.metrics.health_failures);
                return Err(SshError::Lost {
                    server: server.name.clone(),
                    reason: format!("health check: {reason}"),
                });
            }
        };
        let duration = started.elapsed();
        let stdout = out.stdout_str();
        let check = |reading, error| {
            Ok(Some(HealthCheck {
                reading,
                error,
                duration,
            }))
        };
        if stdout.trim() == NO_RUNNER {
            return check(None, Some("no runner deployed on the host yet".into()));
        }
        if !out.ok() {
            let why = out.stderr_str().chars().take(300).collect::<String>();
            return check(
                None,
                Some(format!(
                    "`cronium-runner health` failed ({}): {why}",
                    out.status
                        .map_or_else(|| "no exit status".into(), |c| format!("exit status {c}"))
                )),
            );
        }
        match serde_json::from_str::<Health>(stdout.trim()) {
            Ok(h) => check(Some(h), None),
            Err(e) => check(
                None,
                Some(format!(
                    "`cronium-runner health` printed no health report: {e}"
                )),
            ),
        }
    }
}
