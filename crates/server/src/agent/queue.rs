//! [`JobQueue`] on the store: the queue of the agent embedded in the server, and what the agent
//! API (`api/agent.rs`) calls for a remote agent. The agent crate knows only the trait; this is
//! the one place where a queue call becomes store calls, with the secrets decrypted here (the
//! server holds the key) and store errors turned into the transport-neutral [`QueueError`].
//!
//! Not for HTTP shapes (`api/agent.rs`) nor for the runtime API (`runtime.rs` beside this).

use std::sync::Arc;

use async_trait::async_trait;
use cronium_agent::queue::{
    variable_context, JobQueue, Lease, QueueError, RemoteServer, Variables,
};
use cronium_core::clock::now_ms;
use cronium_core::crypto::SecretBox;
use cronium_model::ExecutionStatus;
use cronium_store::{
    Claimant, ExecutionRow, ExecutionUpdate, HandedOff, Heartbeat, JobOutcome, JobRow,
    NewDeployment, NewLogLine, RunnerState, Store, StoreError, VariableValue,
};
use serde_json::Value;

/// A store error as the agent sees it: a row the store cannot read is fatal (no retry reads it
/// better), a unique key met twice names its field (`seq`: the log lines are already stored),
/// anything else is the store being unavailable for now.
pub fn store_error(e: StoreError) -> QueueError {
    match e {
        StoreError::Corrupt(m) => QueueError::Fatal(m),
        StoreError::Conflict(field) => QueueError::Conflict(field),
        other => QueueError::Unavailable(other.to_string()),
    }
}

/// [`JobQueue`] on the store, for the agent embedded in the server.
#[derive(Clone)]
pub struct StoreQueue {
    pub store: Store,
    pub secrets: Arc<SecretBox>,
    /// What its claims (and the successors handed to it) may be: the embedded agent's own
    /// capabilities, or a remote agent's registration.
    pub claimant: Claimant,
}

impl StoreQueue {
    /// Up to `max` jobs in as few statements as the store can (`Store::claim_batch`), for the
    /// agent API's claims.
    pub async fn claim_batch(
        &self,
        worker: &str,
        lease_ms: i64,
        max: usize,
    ) -> Result<Vec<JobRow>, QueueError> {
        self.store
            .claim_batch(worker, &self.claimant, lease_ms, now_ms(), max)
            .await
            .map_err(store_error)
    }
}

#[async_trait]
impl JobQueue for StoreQueue {
    async fn claim(&self, worker: &str, lease_ms: i64) -> Result<Option<JobRow>, QueueError> {
        Ok(self
            .store
            .claim_as(worker, &self.claimant, lease_ms, now_ms())
            .await
            .map_err(store_error)?)
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
            .await
            .map_err(store_error)?)
    }

    async fn event_spec(&self, job: &JobRow) -> Result<Option<Value>, QueueError> {
        let Some(event_id) = job.event_id else {
            return Ok(None);
        };
        Ok(self
            .store
            .get_event_version(event_id, job.event_version)
            .await
            .map_err(store_error)?)
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
            .await
            .map_err(store_error)?)
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
            .await
            .map_err(store_error)?)
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
            .await
            .map_err(store_error)?)
    }

    async fn update_executions(
        &self,
        lease: &Lease,
        updates: &[(i64, ExecutionUpdate)],
    ) -> Result<usize, QueueError> {
        Ok(self
            .store
            .update_executions(&lease.worker, lease.attempt, updates)
            .await
            .map_err(store_error)?)
    }

    async fn max_log_seq(&self, job_id: i64) -> Result<i64, QueueError> {
        Ok(self.store.max_log_seq(job_id).await.map_err(store_error)?)
    }

    async fn append_logs(&self, lease: &Lease, lines: &[NewLogLine]) -> Result<bool, QueueError> {
        Ok(self
            .store
            .append_logs(lease.job_id, &lease.worker, lease.attempt, lines)
            .await
            .map_err(store_error)?)
    }

    async fn variables(&self) -> Result<Variables, QueueError> {
        let mut out = Variables::default();
        for row in self.store.list_variables().await.map_err(store_error)? {
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
            self.store
                .get_variable(name)
                .await
                .map_err(store_error)?
                .map(|r| r.value),
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
            .await
            .map_err(store_error)?;
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
            .await
            .map_err(store_error)?)
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
            Some(lease_ms) => self
                .store
                .finish_attempt_and_claim_as(&end, &self.claimant, lease_ms, now_ms())
                .await
                .map_err(store_error)?,
            None => (
                self.store
                    .finish_attempt(&end, now_ms())
                    .await
                    .map_err(store_error)?,
                None,
            ),
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
            .await
            .map_err(store_error)?)
    }

    async fn recover_expired(&self) -> Result<usize, QueueError> {
        Ok(self
            .store
            .recover_expired(now_ms())
            .await
            .map_err(store_error)?
            .len())
    }

    async fn next_run_at(&self) -> Result<Option<i64>, QueueError> {
        Ok(self.store.next_run_at().await.map_err(store_error)?)
    }

    async fn resolve_servers(
        &self,
        names: &[String],
        tags: &[String],
    ) -> Result<Vec<RemoteServer>, QueueError> {
        let all = self.store.list_servers().await.map_err(store_error)?;
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
        let pins = self.store.list_pins().await.map_err(store_error)?;
        let mut out = Vec::new();
        for row in all {
            let wanted = names.contains(&row.name) || row.tags.iter().any(|t| tags.contains(t));
            if !wanted {
                continue;
            }
            let credential =
                cronium_agent::credentials::decrypt(&self.secrets, &row.name, &row.credential)
                    .map_err(QueueError::Undecryptable)?;
            let port = u16::try_from(row.port).map_err(|_| {
                QueueError::Fatal(format!(
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
        self.store
            .pin_host_key(server_id, key, now_ms())
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn host_key_changed(&self, server_id: i64, observed_key: &str) -> Result<(), QueueError> {
        Ok(self
            .store
            .set_pending_host_key(server_id, Some(observed_key), now_ms())
            .await
            .map_err(store_error)?)
    }

    async fn record_deployment(
        &self,
        server_id: i64,
        deployment: &NewDeployment,
    ) -> Result<(), QueueError> {
        Ok(self
            .store
            .record_deployment(server_id, deployment)
            .await
            .map_err(store_error)?)
    }

    async fn set_platform(&self, server_id: i64, os: &str, arch: &str) -> Result<(), QueueError> {
        self.store
            .set_server_platform(server_id, os, arch, now_ms())
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn set_runner_state(
        &self,
        server_id: i64,
        state: Option<&RunnerState>,
    ) -> Result<(), QueueError> {
        Ok(self
            .store
            .set_runner_state(server_id, state)
            .await
            .map_err(store_error)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeSet;

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
            claimant: Claimant::untagged(),
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
                    routing: Default::default(),
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
