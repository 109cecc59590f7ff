//! The agent's narrow interface to the job queue. Everything the agent reads or writes goes
//! through [`JobQueue`], so that the same agent code runs inside the server (on the store
//! directly, [`StoreQueue`]) and, later, as a separate `cronium agent` process (over the API).
//!
//! Every write that belongs to a claimed job carries its [`Lease`] (job, worker, attempt): the
//! store refuses writes from a worker that lost the lease, and the agent treats a refused write as
//! "stop working on this job".

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use cronium_core::clock::now_ms;
use cronium_core::crypto::SecretBox;
use cronium_model::ExecutionStatus;
use cronium_store::{
    ExecutionRow, ExecutionUpdate, HandedOff, Heartbeat, JobOutcome, JobRow, NewDeployment,
    NewLogLine, RunnerState, Store, StoreError, VariableValue,
};
use serde_json::Value;

/// Proof of ownership of a claimed job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub job_id: i64,
    pub worker: String,
    pub attempt: i32,
}

/// A registered server, ready to connect to.
#[derive(Debug, Clone)]
pub struct RemoteServer {
    pub id: i64,
    pub config: cronium_ssh::ServerConfig,
    /// Its health checks as stored, for `skip_unreachable`.
    pub health: cronium_store::HealthState,
}

/// The variables a run sees: every value (secret ones decrypted) and which of them are secret,
/// so that their values can be masked in what the run produces.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Variables {
    pub values: BTreeMap<String, Value>,
    /// Names of the secret variables among `values`.
    pub secret: BTreeSet<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored secret (a variable, a server credential) cannot be decrypted: wrong key or a
    /// damaged row. The message names it.
    #[error("{0}")]
    Undecryptable(String),
    /// A target names servers that are not registered.
    #[error("unknown server(s): {0}")]
    UnknownServers(String),
    /// A secret variable whose value cannot be had; the reason never holds the value.
    #[error("secret variable {name} cannot be read: {reason}")]
    Secret { name: String, reason: String },
    #[error("{0}")]
    Other(String),
}

impl QueueError {
    /// True when asking again cannot give another answer (as opposed to an unreachable store):
    /// the job that met it must not be retried.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            QueueError::Undecryptable(_)
                | QueueError::Secret { .. }
                | QueueError::UnknownServers(_)
                | QueueError::Store(StoreError::Corrupt(_))
        )
    }
}

#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
    async fn claim(&self, worker: &str, lease_ms: i64) -> Result<Option<JobRow>, QueueError>;
    async fn heartbeat(&self, lease: &Lease, lease_ms: i64) -> Result<Heartbeat, QueueError>;
    /// The event spec of the version the job was enqueued with.
    async fn event_spec(&self, job: &JobRow) -> Result<Option<Value>, QueueError>;
    async fn start_execution(
        &self,
        lease: &Lease,
        server: Option<&str>,
        status: ExecutionStatus,
    ) -> Result<Option<ExecutionRow>, QueueError>;
    /// One execution per server, created together (one store transaction for a fan-out).
    async fn start_executions(
        &self,
        lease: &Lease,
        servers: &[&str],
        status: ExecutionStatus,
    ) -> Result<Option<Vec<ExecutionRow>>, QueueError>;
    async fn update_execution(
        &self,
        lease: &Lease,
        execution_id: i64,
        update: &ExecutionUpdate,
    ) -> Result<bool, QueueError>;
    /// Several execution updates of one attempt, written together. Returns how many were written.
    async fn update_executions(
        &self,
        lease: &Lease,
        updates: &[(i64, ExecutionUpdate)],
    ) -> Result<usize, QueueError>;
    /// Highest stored log seq of the job (0 when none), to continue numbering after a retry.
    async fn max_log_seq(&self, job_id: i64) -> Result<i64, QueueError>;
    /// Stores log lines of the claimed attempt. False (nothing stored) when the lease was lost.
    async fn append_logs(&self, lease: &Lease, lines: &[NewLogLine]) -> Result<bool, QueueError>;
    /// Every variable, secret ones decrypted, for a run's snapshot. A secret that cannot be
    /// decrypted (another encryption key) or does not decode is an error naming it, never a
    /// silent null.
    async fn variables(&self) -> Result<Variables, QueueError>;
    /// A variable written by a script of job `job_id` (its execution, when known), recorded as
    /// a write of that job (never its value); a secret variable stays secret. True when it is
    /// secret.
    async fn set_variable(
        &self,
        job_id: i64,
        execution_id: Option<i64>,
        name: &str,
        value: &Value,
    ) -> Result<bool, QueueError>;
    async fn finish(&self, lease: &Lease, outcome: &JobOutcome) -> Result<bool, QueueError>;
    /// The attempt's end as one write: its executions' final updates and the job's outcome
    /// (`node_run_id` is the claimed row's: a node's job also starts its ready successors).
    /// False when the lease was lost. With `handoff` (a lease, in ms), a successor it made
    /// ready is claimed for this worker in the same write and returned, to run next.
    async fn finish_attempt(
        &self,
        lease: &Lease,
        node_run_id: Option<i64>,
        executions: &[(i64, ExecutionUpdate)],
        outcome: &JobOutcome,
        handoff: Option<i64>,
    ) -> Result<(bool, Option<HandedOff>), QueueError>;
    async fn retry_later(
        &self,
        lease: &Lease,
        run_at: i64,
        error: &str,
    ) -> Result<bool, QueueError>;
    /// Requeues or fails jobs whose worker vanished; returns how many.
    async fn recover_expired(&self) -> Result<usize, QueueError>;
    /// Earliest `run_at` among queued jobs, to sleep until a delayed retry is due.
    async fn next_run_at(&self) -> Result<Option<i64>, QueueError>;
    /// The servers a `servers` target names, by name or by tag, with their credentials. Unknown
    /// names are an error that says which.
    async fn resolve_servers(
        &self,
        names: &[String],
        tags: &[String],
    ) -> Result<Vec<RemoteServer>, QueueError>;
    /// Pins the key a server presented on first contact.
    async fn pin_host_key(&self, server_id: i64, key: &str) -> Result<(), QueueError>;
    /// Remembers a changed host key for an operator to accept.
    async fn host_key_changed(&self, server_id: i64, observed_key: &str) -> Result<(), QueueError>;
    async fn record_deployment(
        &self,
        server_id: i64,
        deployment: &NewDeployment,
    ) -> Result<(), QueueError>;
    /// Stores the OS and architecture detected on a server.
    async fn set_platform(&self, server_id: i64, os: &str, arch: &str) -> Result<(), QueueError>;
    /// Remembers the runner verified on a server (`None`: forget it, an error put it in doubt).
    async fn set_runner_state(
        &self,
        server_id: i64,
        state: Option<&RunnerState>,
    ) -> Result<(), QueueError>;
}

/// [`JobQueue`] on the store, for the agent embedded in the server.
#[derive(Clone)]
pub struct StoreQueue {
    pub store: Store,
    pub secrets: Arc<SecretBox>,
}

pub fn variable_context(name: &str) -> String {
    format!("variable:{name}")
}

#[async_trait]
impl JobQueue for StoreQueue {
    async fn claim(&self, worker: &str, lease_ms: i64) -> Result<Option<JobRow>, QueueError> {
        Ok(self.store.claim(worker, lease_ms, now_ms()).await?)
    }

    async fn heartbeat(&self, lease: &Lease, lease_ms: i64) -> Result<Heartbeat, QueueError> {
        Ok(self
            .store
            .heartbeat(
                lease.job_id,
                &lease.worker,
                lease.attempt,
                lease_ms,
                now_ms(),
            )
            .await?)
    }

    async fn event_spec(&self, job: &JobRow) -> Result<Option<Value>, QueueError> {
        let Some(event_id) = job.event_id else {
            return Ok(None);
        };
        Ok(self
            .store
            .get_event_version(event_id, job.event_version)
            .await?)
    }

    async fn start_execution(
        &self,
        lease: &Lease,
        server: Option<&str>,
        status: ExecutionStatus,
    ) -> Result<Option<ExecutionRow>, QueueError> {
        Ok(self
            .store
            .create_execution(
                lease.job_id,
                &lease.worker,
                lease.attempt,
                server,
                status,
                now_ms(),
            )
            .await?)
    }

    async fn start_executions(
        &self,
        lease: &Lease,
        servers: &[&str],
        status: ExecutionStatus,
    ) -> Result<Option<Vec<ExecutionRow>>, QueueError> {
        Ok(self
            .store
            .create_executions(
                lease.job_id,
                &lease.worker,
                lease.attempt,
                servers,
                status,
                now_ms(),
            )
            .await?)
    }

    async fn update_execution(
        &self,
        lease: &Lease,
        execution_id: i64,
        update: &ExecutionUpdate,
    ) -> Result<bool, QueueError> {
        Ok(self
            .store
            .update_execution(execution_id, &lease.worker, lease.attempt, update)
            .await?)
    }

    async fn update_executions(
        &self,
        lease: &Lease,
        updates: &[(i64, ExecutionUpdate)],
    ) -> Result<usize, QueueError> {
        Ok(self
            .store
            .update_executions(&lease.worker, lease.attempt, updates)
            .await?)
    }

    async fn max_log_seq(&self, job_id: i64) -> Result<i64, QueueError> {
        Ok(self.store.max_log_seq(job_id).await?)
    }

    async fn append_logs(&self, lease: &Lease, lines: &[NewLogLine]) -> Result<bool, QueueError> {
        Ok(self
            .store
            .append_logs(lease.job_id, &lease.worker, lease.attempt, lines)
            .await?)
    }

    async fn variables(&self) -> Result<Variables, QueueError> {
        let mut out = Variables::default();
        for row in self.store.list_variables().await? {
            let value = match row.value {
                VariableValue::Plain(v) => v,
                VariableValue::Secret(ct) => {
                    let secret_error = |reason: &str| QueueError::Secret {
                        name: row.name.clone(),
                        reason: reason.to_string(),
                    };
                    let clear = self
                        .secrets
                        .decrypt(&variable_context(&row.name), &ct)
                        .map_err(|_| {
                            secret_error(
                                "it does not decrypt with this server's encryption key (was \
                                 CRONIUM_ENCRYPTION_KEY or DATA_DIR/secret.key changed since it \
                                 was set?); restore that key or set the variable again",
                            )
                        })?;
                    // serde_json's message names a position, never the text it read.
                    let value = serde_json::from_slice(&clear).map_err(|e| {
                        secret_error(&format!("its decrypted value is not JSON ({e})"))
                    })?;
                    out.secret.insert(row.name.clone());
                    value
                }
            };
            out.values.insert(row.name, value);
        }
        Ok(out)
    }

    async fn set_variable(
        &self,
        job_id: i64,
        execution_id: Option<i64>,
        name: &str,
        value: &Value,
    ) -> Result<bool, QueueError> {
        let secret = matches!(
            self.store.get_variable(name).await?.map(|r| r.value),
            Some(VariableValue::Secret(_))
        );
        let v = if secret {
            let clear = serde_json::to_vec(value).map_err(|e| QueueError::Other(e.to_string()))?;
            VariableValue::Secret(self.secrets.encrypt(&variable_context(name), &clear))
        } else {
            VariableValue::Plain(value.clone())
        };
        self.store
            .set_job_variable(job_id, execution_id, name, v, now_ms())
            .await?;
        Ok(secret)
    }

    async fn finish(&self, lease: &Lease, outcome: &JobOutcome) -> Result<bool, QueueError> {
        Ok(self
            .store
            .finish(
                lease.job_id,
                &lease.worker,
                lease.attempt,
                outcome,
                now_ms(),
            )
            .await?)
    }

    async fn finish_attempt(
        &self,
        lease: &Lease,
        node_run_id: Option<i64>,
        executions: &[(i64, ExecutionUpdate)],
        outcome: &JobOutcome,
        handoff: Option<i64>,
    ) -> Result<(bool, Option<HandedOff>), QueueError> {
        let end = cronium_store::AttemptEnd {
            job_id: lease.job_id,
            worker: &lease.worker,
            attempt: lease.attempt,
            node_run_id,
            executions,
            outcome,
        };
        Ok(match handoff {
            Some(lease_ms) => {
                self.store
                    .finish_attempt_and_claim(&end, lease_ms, now_ms())
                    .await?
            }
            None => (self.store.finish_attempt(&end, now_ms()).await?, None),
        })
    }

    async fn retry_later(
        &self,
        lease: &Lease,
        run_at: i64,
        error: &str,
    ) -> Result<bool, QueueError> {
        Ok(self
            .store
            .retry_later(
                lease.job_id,
                &lease.worker,
                lease.attempt,
                run_at,
                error,
                now_ms(),
            )
            .await?)
    }

    async fn recover_expired(&self) -> Result<usize, QueueError> {
        Ok(self.store.recover_expired(now_ms()).await?.len())
    }

    async fn next_run_at(&self) -> Result<Option<i64>, QueueError> {
        Ok(self.store.next_run_at().await?)
    }

    async fn resolve_servers(
        &self,
        names: &[String],
        tags: &[String],
    ) -> Result<Vec<RemoteServer>, QueueError> {
        let all = self.store.list_servers().await?;
        let mut missing: Vec<&str> = names
            .iter()
            .filter(|n| !all.iter().any(|s| &s.name == *n))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            missing.sort();
            return Err(QueueError::UnknownServers(missing.join(", ")));
        }
        // The runner version each server runs: its pin, else its tags' (newest), else the
        // executor's default.
        let pins = self.store.list_pins().await?;
        let mut out = Vec::new();
        for row in all {
            let wanted = names.contains(&row.name) || row.tags.iter().any(|t| tags.contains(t));
            if !wanted {
                continue;
            }
            let credential = crate::credentials::decrypt(&self.secrets, &row.name, &row.credential)
                .map_err(QueueError::Undecryptable)?;
            let port = u16::try_from(row.port).map_err(|_| {
                StoreError::Corrupt(format!(
                    "server {}: port {} out of range",
                    row.name, row.port
                ))
            })?;
            out.push(RemoteServer {
                id: row.id,
                config: cronium_ssh::ServerConfig {
                    name: row.name,
                    host: row.host,
                    port,
                    user: row.username,
                    credential,
                    host_key: row.host_key,
                    known_runner: row.runner.map(|r| cronium_ssh::KnownRunner {
                        path: r.path,
                        sha256: r.sha256,
                        verified_at_ms: r.verified_at,
                    }),
                    platform: row
                        .platform
                        .as_ref()
                        .and_then(|p| cronium_ssh::Platform::new(&p.os, &p.arch)),
                    runner_version: cronium_store::wanted_pin(&pins, row.id, &row.tags)
                        .map(|p| p.version.clone()),
                },
                health: row.health,
            });
        }
        Ok(out)
    }

    async fn pin_host_key(&self, server_id: i64, key: &str) -> Result<(), QueueError> {
        self.store.pin_host_key(server_id, key, now_ms()).await?;
        Ok(())
    }

    async fn host_key_changed(&self, server_id: i64, observed_key: &str) -> Result<(), QueueError> {
        Ok(self
            .store
            .set_pending_host_key(server_id, Some(observed_key), now_ms())
            .await?)
    }

    async fn record_deployment(
        &self,
        server_id: i64,
        deployment: &NewDeployment,
    ) -> Result<(), QueueError> {
        Ok(self.store.record_deployment(server_id, deployment).await?)
    }

    async fn set_platform(&self, server_id: i64, os: &str, arch: &str) -> Result<(), QueueError> {
        self.store
            .set_server_platform(server_id, os, arch, now_ms())
            .await?;
        Ok(())
    }

    async fn set_runner_state(
        &self,
        server_id: i64,
        state: Option<&RunnerState>,
    ) -> Result<(), QueueError> {
        Ok(self.store.set_runner_state(server_id, state).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn a_secret_that_cannot_be_read_is_an_error_naming_it_never_null() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite:{}/cronium.db", dir.path().display()))
            .await
            .unwrap();
        let secrets = Arc::new(SecretBox::from_key(&[7; 32]));
        let queue = StoreQueue {
            store: store.clone(),
            secrets: secrets.clone(),
        };
        let set = |name: &str, value: VariableValue| {
            let store = store.clone();
            let name = name.to_string();
            async move { store.set_variable(&name, value, 0).await.unwrap() }
        };
        set("plain", VariableValue::Plain(json!(1))).await;
        let sealed = |key: u8, clear: &[u8]| {
            VariableValue::Secret(
                SecretBox::from_key(&[key; 32]).encrypt(&variable_context("token"), clear),
            )
        };

        // Decrypts, but is not JSON (it used to become null).
        set("token", sealed(7, b"hunter2-not-json")).await;
        let err = queue.variables().await.unwrap_err().to_string();
        assert!(
            err.contains("secret variable token") && err.contains("not JSON"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");

        // Encrypted with another key.
        set("token", sealed(8, b"\"hunter2-other-key\"")).await;
        let err = queue.variables().await.unwrap_err().to_string();
        assert!(
            err.contains("secret variable token") && err.contains("encryption key"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");

        set("token", sealed(7, b"\"hunter2-good\"")).await;
        let vars = queue.variables().await.unwrap();
        assert_eq!(vars.values["token"], json!("hunter2-good"));
        assert_eq!(vars.values["plain"], json!(1));
        assert_eq!(vars.secret, BTreeSet::from(["token".to_string()]));
        // A script's write to it stays secret, and says so; both are recorded as the job's
        // writes, without their values.
        let job = store
            .enqueue(
                &cronium_store::NewJob {
                    event_id: None,
                    event_name: "writer".into(),
                    event_version: 1,
                    trigger: cronium_model::Trigger::Manual,
                    input: json!({}),
                    run_at: 0,
                    max_attempts: 1,
                    backoff_ms: 1000,
                    max_backoff_ms: 1000,
                    serial: false,
                    scheduled_for: None,
                    timeout_ms: 60_000,
                    max_executions: 0,
                },
                0,
            )
            .await
            .unwrap();
        assert!(queue
            .set_variable(job.id, None, "token", &json!("next"))
            .await
            .unwrap());
        assert!(!queue
            .set_variable(job.id, None, "plain", &json!(2))
            .await
            .unwrap());
        let writes = store.list_variable_writes(job.id).await.unwrap();
        let seen: Vec<(&str, bool)> = writes.iter().map(|w| (w.name.as_str(), w.secret)).collect();
        assert_eq!(seen, [("token", true), ("plain", false)]);
        store.close().await;
    }
}
