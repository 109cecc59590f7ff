//! Connection pools, one per server identity (address, user, credential, pinned key). A run leases
//! a connection for its whole duration; the lease goes back to the pool when it is dropped,
//! unless the run marked it broken. Idle connections are health-checked before reuse and closed
//! after the idle timeout. Not responsible for deciding *what* runs on a connection.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::connection::{self, Conn};
use crate::metrics::{inc, Metrics};
use crate::{Credential, ServerConfig, SshConfig, SshError};

/// Identity of a server for pooling: two configs that would log in differently never share a
/// connection (a changed credential or pinned key must not reuse an old session).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ServerKey {
    pub host: String,
    pub port: u16,
    pub user: String,
    secret_hash: u64,
    host_key: Option<String>,
}

impl ServerKey {
    pub fn of(server: &ServerConfig) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        match &server.credential {
            Credential::Key { pem, passphrase } => {
                0u8.hash(&mut h);
                pem.hash(&mut h);
                passphrase.hash(&mut h);
            }
            Credential::Password(p) => {
                1u8.hash(&mut h);
                p.hash(&mut h);
            }
        }
        ServerKey {
            host: server.host.clone(),
            port: server.port,
            user: server.user.clone(),
            secret_hash: h.finish(),
            host_key: server.host_key.as_ref().map(|k| k.trim().to_string()),
        }
    }
}

struct Idle {
    conn: Arc<Conn>,
    since: Instant,
}

struct ServerPool {
    idle: Vec<Idle>,
    /// Bounds the connections open at once to this server (in use plus idle).
    slots: Arc<Semaphore>,
}

pub(crate) struct Pool {
    cfg: SshConfig,
    servers: Mutex<HashMap<ServerKey, ServerPool>>,
    /// When every server's idle list was last pruned (locked only under `servers`).
    pruned: Mutex<Instant>,
    metrics: Arc<Metrics>,
}

/// How often a take also prunes the idle lists of all the other servers.
const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// A connection checked out of the pool.
pub(crate) struct Lease {
    pub conn: Arc<Conn>,
    key: ServerKey,
    pool: Arc<Pool>,
    broken: bool,
    _permit: OwnedSemaphorePermit,
}

impl Lease {
    /// The connection must not be reused (it failed or the server misbehaved).
    pub fn mark_broken(&mut self) {
        self.broken = true;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.broken || self.conn.handle.is_closed() {
            return;
        }
        if let Ok(mut servers) = self.pool.servers.lock() {
            if let Some(sp) = servers.get_mut(&self.key) {
                sp.idle.push(Idle {
                    conn: self.conn.clone(),
                    since: Instant::now(),
                });
            }
        }
        // The permit is released after the connection is back, so a waiter finds it idle.
    }
}

impl Pool {
    pub fn new(cfg: SshConfig, metrics: Arc<Metrics>) -> Self {
        Pool {
            cfg,
            servers: Mutex::new(HashMap::new()),
            pruned: Mutex::new(Instant::now()),
            metrics,
        }
    }

    fn slots(&self, key: &ServerKey) -> Arc<Semaphore> {
        let mut servers = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        servers
            .entry(key.clone())
            .or_insert_with(|| ServerPool {
                idle: Vec::new(),
                slots: Arc::new(Semaphore::new(self.cfg.pool_size.max(1))),
            })
            .slots
            .clone()
    }

    /// Takes the most recently used idle connection that is still fresh. A call also drops the
    /// expired and closed idle connections of all servers, at most once per [`PRUNE_EVERY`], so
    /// that a server nobody runs on any more does not keep sessions open (there is no background
    /// task to do it) while a fan-out to N servers does not walk N lists N times under the lock.
    fn take_idle(&self, key: &ServerKey) -> Option<(Arc<Conn>, Duration)> {
        let mut servers = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let fresh = |i: &Idle| {
            now.duration_since(i.since) < self.cfg.idle_timeout && !i.conn.handle.is_closed()
        };
        {
            let mut pruned = self.pruned.lock().unwrap_or_else(|p| p.into_inner());
            if now.duration_since(*pruned) >= PRUNE_EVERY {
                *pruned = now;
                for sp in servers.values_mut() {
                    sp.idle.retain(fresh);
                }
            }
        }
        let sp = servers.get_mut(key)?;
        sp.idle.retain(fresh);
        sp.idle.pop().map(|i| (i.conn, now.duration_since(i.since)))
    }

    /// Leases a connection to `server`: a healthy pooled one, or a new one.
    pub async fn get(self: &Arc<Self>, server: &ServerConfig) -> Result<Lease, SshError> {
        let key = ServerKey::of(server);
        let permit = self
            .slots(&key)
            .acquire_owned()
            .await
            .map_err(|_| SshError::Io("connection pool closed".into()))?;
        while let Some((conn, idle_for)) = self.take_idle(&key) {
            // A connection that has been quiet for a while is pinged first: a peer that vanished
            // without closing TCP would otherwise only be noticed by the run itself.
            if idle_for >= self.cfg.keepalive_interval {
                let ping = tokio::time::timeout(self.cfg.connect_timeout, conn.handle.send_ping());
                if !matches!(ping.await, Ok(Ok(()))) || conn.handle.is_closed() {
                    continue;
                }
            }
            inc(&self.metrics.pool_hits);
            return Ok(Lease {
                conn,
                key,
                pool: self.clone(),
                broken: false,
                _permit: permit,
            });
        }
        inc(&self.metrics.pool_misses);
        let conn = connection::connect(server, &self.cfg)
            .await
            .inspect_err(|e| {
                if !matches!(e, SshError::InvalidConfig { .. }) {
                    inc(&self.metrics.connection_failures);
                }
            })?;
        Ok(Lease {
            conn: Arc::new(conn),
            key,
            pool: self.clone(),
            broken: false,
            _permit: permit,
        })
    }

    /// The most recently used idle connection to `server`, left in the pool: a health check
    /// opens a channel of its own on it, so a run that wants the connection meanwhile leases it
    /// as usual (SSH multiplexes channels) instead of logging in again. `None` when no idle
    /// connection is open.
    pub fn peek_idle(&self, server: &ServerConfig) -> Option<Arc<Conn>> {
        let key = ServerKey::of(server);
        let servers = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        servers.get(&key)?.idle.iter().rev().find_map(|i| {
            let fresh = now.duration_since(i.since) < self.cfg.idle_timeout;
            (fresh && !i.conn.handle.is_closed()).then(|| i.conn.clone())
        })
    }

    /// Connections to `server` leased right now (runs in progress).
    pub fn in_use(&self, server: &ServerConfig) -> usize {
        let key = ServerKey::of(server);
        let servers = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        // A lease holds a permit; idle connections hold none.
        servers.get(&key).map_or(0, |sp| {
            self.cfg
                .pool_size
                .max(1)
                .saturating_sub(sp.slots.available_permits())
        })
    }

    /// Idle connections to `server` that are still open.
    pub fn idle_count(&self, server: &ServerConfig) -> usize {
        let key = ServerKey::of(server);
        let servers = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        servers.get(&key).map_or(0, |sp| {
            sp.idle
                .iter()
                .filter(|i| !i.conn.handle.is_closed())
                .count()
        })
    }

    /// Closes every idle connection to `server`'s address and login, whatever credential and
    /// pinned key they were opened with (a first run opens its connection before the key is
    /// pinned), and forgets those pools, so that a connection still leased by a run is closed
    /// when the run gives it back instead of going idle (after a host key change was accepted,
    /// a credential change, or when the server is removed).
    pub fn forget(&self, server: &ServerConfig) {
        let key = ServerKey::of(server);
        let mut servers = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        servers.retain(|k, _| (&k.host, k.port, &k.user) != (&key.host, key.port, &key.user));
    }
}
