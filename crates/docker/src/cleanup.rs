//! Removal of what a run created, on every path: explicitly at the end of a run, from `Drop` when
//! the run's future is dropped half-way (the agent's task aborted), and for the reaper. Also the
//! set of live executions that the reaper must spare.
//!
//! Not for deciding what is an orphan: that is the reaper's job, from the labels.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bollard::query_parameters::RemoveContainerOptionsBuilder;
use bollard::Docker;

use crate::error::is_not_found;

/// Marks an execution as live for as long as its run is in progress.
pub(crate) struct LiveGuard {
    set: Arc<Mutex<HashSet<i64>>>,
    execution_id: i64,
}

impl LiveGuard {
    pub(crate) fn register(set: &Arc<Mutex<HashSet<i64>>>, execution_id: i64) -> Self {
        if let Ok(mut s) = set.lock() {
            s.insert(execution_id);
        }
        LiveGuard {
            set: set.clone(),
            execution_id,
        }
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        if let Ok(mut s) = self.set.lock() {
            s.remove(&self.execution_id);
        }
    }
}

/// The engine objects one run created. Removed explicitly at the end of a run, or from `Drop` when
/// the run's future is dropped half-way (the removal is then spawned on the runtime).
pub(crate) struct Owned {
    pub(crate) docker: Docker,
    pub(crate) container: Option<String>,
    pub(crate) network: Option<String>,
}

impl Owned {
    pub(crate) async fn remove(&mut self) {
        remove_objects(&self.docker, self.container.take(), self.network.take()).await;
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        if self.container.is_none() && self.network.is_none() {
            return;
        }
        let (docker, container, network) = (
            self.docker.clone(),
            self.container.take(),
            self.network.take(),
        );
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    remove_objects(&docker, container, network).await;
                });
            }
            // No runtime (process shutting down): the reaper will find them by their labels.
            Err(_) => tracing::warn!(?container, ?network, "left for the reaper"),
        }
    }
}

/// Force-removes a container (and its anonymous volumes) and then a network. Returns whether
/// everything named is gone (already gone counts). Failures are logged, never raised: cleanup
/// must not hide the run's own result, and the reaper retries later.
pub(crate) async fn remove_objects(
    docker: &Docker,
    container: Option<String>,
    network: Option<String>,
) -> bool {
    let mut gone = true;
    if let Some(id) = container {
        let opts = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        if let Err(e) = docker.remove_container(&id, Some(opts)).await {
            if !is_not_found(&e) {
                gone = false;
                tracing::warn!(container = %id, error = %e, "could not remove container; the reaper will retry");
            }
        }
    }
    if let Some(net) = network {
        if let Err(e) = docker.remove_network(&net).await {
            if !is_not_found(&e) {
                gone = false;
                tracing::warn!(network = %net, error = %e, "could not remove network; the reaper will retry");
            }
        }
    }
    gone
}
