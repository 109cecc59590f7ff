//! The health loop: collects `cronium-runner health` from every SSH server and stores the
//! latest reading and a short history (`Store::record_health_check`).
//!
//! Two triggers, both on pooled connections (`cronium_ssh::HealthConnection`):
//! - **after each run**: the executor reports a [`Contact`]; a contact whose transport failed
//!   is recorded as a failed check at once, one that worked is followed by a check on the idle
//!   connection the run gave back (never a new login) once the server has had no run for
//!   [`AFTER_RUN_QUIET`]: a burst of runs (back-to-back fan-outs) is checked once, after it,
//!   instead of having health commands compete with its runs; one whose deployment or runner
//!   failed (the host may or may not be there) is checked at once, logging in if need be;
//! - **every `interval`** (`serve --health-interval`, 0 disables): every server, at most
//!   [`CONCURRENCY`] at once, on an idle pooled connection, or a new one (which stays pooled)
//!   when the server has none open; a server whose connections are all busy is left to its runs,
//!   and so is one in a burst of runs (its after-run check follows) or checked less than half an
//!   interval ago.
//!
//! Not for judging the readings (`cronium_core::health::judge`, at read time) nor for running
//! anything but the health command.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cronium_core::clock::now_ms;
use cronium_core::health::Thresholds;
use cronium_ssh::{Contact, HealthConnection, ServerConfig, SshExecutor};
use cronium_store::NewHealthCheck;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::state::AppState;
use crate::usecases::servers::config_of;

/// Checks of all servers at once, at most.
pub const CONCURRENCY: usize = 16;
/// An after-run check waits until the server has had no run for this long.
pub const AFTER_RUN_QUIET: Duration = Duration::from_secs(3);
/// Contacts waiting to be handled; more are dropped (never blocking a run).
pub const CONTACT_QUEUE: usize = 1024;

/// `serve --health-*`.
#[derive(Debug, Clone)]
pub struct HealthConfig {
    /// Between interval checks; zero: only after runs.
    pub interval: Duration,
    /// Checks kept per server.
    pub keep: i64,
    pub thresholds: Thresholds,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval: Duration::from_secs(60),
            keep: 20,
            thresholds: Thresholds::default(),
        }
    }
}

impl HealthConfig {
    /// The thresholds with the contact age judged: three intervals without contact is
    /// unreachable, unless `--health-stale-after` said otherwise (no interval: not judged).
    pub fn effective_thresholds(&self) -> Thresholds {
        let mut t = self.thresholds.clone();
        if t.stale_after_ms.is_none() && !self.interval.is_zero() {
            t.stale_after_ms = Some(self.interval.as_millis() as i64 * 3);
        }
        t
    }
}

/// Registers the contact channel on the executor; the receiver goes to [`run`].
pub fn observe(ssh: &SshExecutor) -> Option<mpsc::Receiver<Contact>> {
    let (tx, rx) = mpsc::channel(CONTACT_QUEUE);
    ssh.observe_contacts(tx).then_some(rx)
}

/// The latest run contact of each server waiting for its quiet period, by server name.
#[derive(Default)]
struct Recent(Mutex<(u64, HashMap<String, u64>)>);

impl Recent {
    /// Notes a run contact of `name`; the returned ticket is current until the next one.
    fn note(&self, name: &str) -> u64 {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.0 += 1;
        let ticket = g.0;
        g.1.insert(name.to_string(), ticket);
        ticket
    }

    /// True while a run contact of `name` waits for its quiet period: the server is in a burst
    /// of runs, and a check follows it.
    fn busy(&self, name: &str) -> bool {
        let g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.1.contains_key(name)
    }

    /// True (and forgotten) when no run of `name` came after the one that got `ticket`.
    fn take(&self, name: &str, ticket: u64) -> bool {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if g.1.get(name) == Some(&ticket) {
            g.1.remove(name);
            return true;
        }
        false
    }
}

pub async fn run(
    state: AppState,
    ssh: SshExecutor,
    config: HealthConfig,
    mut contacts: Option<mpsc::Receiver<Contact>>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    let recent = Arc::new(Recent::default());
    let interval = (!config.interval.is_zero()).then_some(config.interval);
    // The first interval pass runs at once: a restarted server learns its fleet's state.
    let mut next = tokio::time::Instant::now();
    loop {
        let tick = async {
            match interval {
                Some(_) => tokio::time::sleep_until(next).await,
                None => std::future::pending().await,
            }
        };
        let contact = async {
            match contacts.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick => {
                next = tokio::time::Instant::now() + interval.unwrap_or_default();
                interval_pass(&state, &ssh, &config, &slots, &recent).await;
            }
            c = contact => match c {
                Some(c) => after_run(&state, &ssh, &config, &recent, c),
                None => contacts = None,
            }
        }
    }
}

/// Spawns one check per server (bounded by `slots`); does not wait for them.
/// Servers in a burst of runs are left out (their check follows the burst), and so are those
/// checked less than half an interval ago (after a run): the interval pass only fills the gaps
/// the runs leave, instead of competing with them.
async fn interval_pass(
    state: &AppState,
    ssh: &SshExecutor,
    config: &HealthConfig,
    slots: &Arc<Semaphore>,
    recent: &Recent,
) {
    let half = config.interval.as_millis() as i64 / 2;
    let rows = match state.store.list_servers().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "health: listing the servers failed");
            return;
        }
    };
    let now = now_ms();
    // The pinned version is the one a check asks for its health.
    let pins = state.store.list_pins().await.unwrap_or_default();
    for row in rows {
        if recent.busy(&row.name) || row.health.checked_at.is_some_and(|t| now - t < half) {
            continue;
        }
        let cfg = match config_of(state, &row) {
            Ok(mut c) => {
                c.runner_version =
                    cronium_store::wanted_pin(&pins, row.id, &row.tags).map(|p| p.version.clone());
                c
            }
            Err(e) => {
                tracing::warn!(server = %row.name, error = %e, "health: cannot read the server's settings");
                continue;
            }
        };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (state, ssh, keep) = (state.clone(), ssh.clone(), config.keep);
        tokio::spawn(async move {
            let _permit = permit;
            check(
                &state,
                &ssh,
                row.id,
                &cfg,
                HealthConnection::PooledOrLogin,
                keep,
            )
            .await;
        });
    }
}

fn after_run(
    state: &AppState,
    ssh: &SshExecutor,
    config: &HealthConfig,
    recent: &Arc<Recent>,
    c: Contact,
) {
    let (state, ssh, keep, recent) = (state.clone(), ssh.clone(), config.keep, recent.clone());
    tokio::spawn(async move {
        if c.failure.is_none() && !c.doubtful {
            let ticket = recent.note(&c.server.name);
            tokio::time::sleep(AFTER_RUN_QUIET).await;
            if !recent.take(&c.server.name, ticket) {
                // A later run of the server will be followed by its own check.
                return;
            }
        }
        let row = match state.store.get_server_by_name(&c.server.name).await {
            Ok(Some(row)) => row,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(server = %c.server.name, error = %e, "health: reading the server failed");
                return;
            }
        };
        let id = row.id;
        // The version pinned now, not at the run: a rollout may have moved the server on
        // during the quiet period, and the check must read the runner it runs now.
        let mut c = c;
        if let Ok(pins) = state.store.list_pins().await {
            c.server.runner_version =
                cronium_store::wanted_pin(&pins, row.id, &row.tags).map(|p| p.version.clone());
        }
        if let Some(failure) = c.failure {
            record(
                &state,
                id,
                &c.server.name,
                failed(now_ms(), 0, failure),
                keep,
            )
            .await;
            return;
        }
        if c.doubtful {
            check(
                &state,
                &ssh,
                id,
                &c.server,
                HealthConnection::PooledOrLogin,
                keep,
            )
            .await;
        } else {
            check(
                &state,
                &ssh,
                id,
                &c.server,
                HealthConnection::IdleOnly,
                keep,
            )
            .await;
        }
    });
}

/// One check of one server, recorded (after a run with no idle connection left, the run's
/// contact alone; on the interval with none, nothing).
pub async fn check(
    state: &AppState,
    ssh: &SshExecutor,
    id: i64,
    server: &ServerConfig,
    how: HealthConnection,
    keep: i64,
) {
    let at = now_ms();
    let started = Instant::now();
    let outcome = ssh.health(server, how).await;
    let elapsed = started.elapsed();
    let check = match outcome {
        // After a run whose connection another run already took: the run itself was the
        // contact (so a server kept busy does not look stale), without a new reading.
        Ok(None) if how == HealthConnection::IdleOnly => NewHealthCheck {
            at,
            ok: true,
            duration_ms: 0,
            error: None,
            reading: None,
        },
        Ok(None) => return,
        Ok(Some(c)) => {
            state
                .metrics
                .runner
                .health_check_duration
                .observe(c.duration.as_secs_f64());
            NewHealthCheck {
                at,
                ok: true,
                duration_ms: c.duration.as_millis() as i64,
                error: c.error,
                reading: c.reading.and_then(|r| serde_json::to_value(r).ok()),
            }
        }
        Err(e) => failed(at, elapsed.as_millis() as i64, e.to_string()),
    };
    record(state, id, &server.name, check, keep).await;
}

fn failed(at: i64, duration_ms: i64, error: String) -> NewHealthCheck {
    NewHealthCheck {
        at,
        ok: false,
        duration_ms,
        error: Some(error),
        reading: None,
    }
}

async fn record(state: &AppState, id: i64, name: &str, check: NewHealthCheck, keep: i64) {
    if let Err(e) = state.store.record_health_check(id, &check, keep).await {
        tracing::warn!(server = %name, error = %e, "health: recording a check failed");
    }
}
