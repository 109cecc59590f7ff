//! The reaper: removes containers and per-job networks that a crashed agent left behind.
//!
//! Only objects carrying `io.cronium.managed=true` are considered (filtered by the engine and
//! checked again here), only when older than the configured grace, and never while their execution
//! is live (running through this executor, or declared live by the caller's predicate, e.g. the
//! store's view of running executions across agents). Everything else on the engine is left alone.

use std::time::{SystemTime, UNIX_EPOCH};

use bollard::query_parameters::{ListContainersOptionsBuilder, ListNetworksOptionsBuilder};

use crate::cleanup::remove_objects;
use crate::error::DockerError;
use crate::executor::DockerExecutor;
use crate::labels::{managed_filter, Owner};

/// What one reaper pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReapReport {
    /// Ids of the containers removed.
    pub containers: Vec<String>,
    /// Names of the networks removed.
    pub networks: Vec<String>,
    /// Our objects left in place because they are young or live.
    pub kept: usize,
    /// Our orphans that could not be removed this time (logged; retried on the next pass).
    pub failed: usize,
}

impl DockerExecutor {
    /// Removes our orphaned containers and networks older than `reap_grace` whose execution is not
    /// running through this executor.
    pub async fn reap(&self, now: SystemTime) -> Result<ReapReport, DockerError> {
        self.reap_with(now, |_job, _execution| false).await
    }

    /// As [`reap`](Self::reap), also sparing executions for which `is_live(job_id, execution_id)`
    /// is true (with several agents on one engine, pass the store's list of running executions).
    pub async fn reap_with<F>(&self, now: SystemTime, is_live: F) -> Result<ReapReport, DockerError>
    where
        F: Fn(i64, i64) -> bool,
    {
        let now_s = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let grace = self.config.reap_grace.as_secs();
        let live: std::collections::HashSet<i64> =
            self.live.lock().map(|s| s.clone()).unwrap_or_default();
        let spare = |owner: &Owner| -> bool {
            // Without a creation label we cannot tell the age: treat as old (it is ours anyway).
            let young = owner
                .created_epoch
                .is_some_and(|c| now_s.saturating_sub(c) < grace);
            let running_here = owner.execution_id.is_some_and(|e| live.contains(&e));
            let running_elsewhere = matches!(
                (owner.job_id, owner.execution_id),
                (Some(j), Some(e)) if is_live(j, e)
            );
            young || running_here || running_elsewhere
        };

        let mut report = ReapReport::default();
        let filter = managed_filter();
        let containers = self
            .docker
            .list_containers(Some(
                ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&filter)
                    .build(),
            ))
            .await?;
        for c in containers {
            let (Some(id), Some(owner)) = (c.id.clone(), Owner::parse(c.labels.as_ref())) else {
                continue;
            };
            if spare(&owner) {
                report.kept += 1;
                continue;
            }
            if remove_objects(&self.docker, Some(id.clone()), None).await {
                report.containers.push(id);
            } else {
                report.failed += 1;
            }
        }

        // After the containers: a network cannot go while a container is attached to it.
        let networks = self
            .docker
            .list_networks(Some(
                ListNetworksOptionsBuilder::default()
                    .filters(&filter)
                    .build(),
            ))
            .await?;
        for n in networks {
            let (Some(name), Some(owner)) = (n.name.clone(), Owner::parse(n.labels.as_ref()))
            else {
                continue;
            };
            if spare(&owner) {
                report.kept += 1;
                continue;
            }
            if remove_objects(&self.docker, None, Some(name.clone())).await {
                report.networks.push(name);
            } else {
                report.failed += 1;
            }
        }
        if !report.containers.is_empty() || !report.networks.is_empty() {
            tracing::info!(containers = ?report.containers, networks = ?report.networks, "reaped orphans");
        }
        Ok(report)
    }
}
