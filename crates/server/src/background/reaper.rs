//! The container reaper: every [`INTERVAL`], removes the containers and per-job networks that a
//! crashed agent left behind on this server's Docker engine (only ours, by label; see
//! `cronium_docker::reaper`).
//!
//! Containers of jobs still running anywhere (another agent on the same engine) are spared, so
//! a pass needs the store's list of running jobs. When that list cannot be read, the pass is
//! skipped: an empty list would make every container look orphaned.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cronium_docker::{DockerError, DockerExecutor, ReapReport};
use cronium_store::{JobFilter, Store, StoreError};
use tokio_util::sync::CancellationToken;

/// Time between passes.
pub const INTERVAL: Duration = Duration::from_secs(60);

/// Why a pass did nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReapError {
    /// Nothing was removed: without the running jobs, live containers cannot be told apart.
    #[error("cannot read the running jobs, so nothing was reaped: {0}")]
    RunningJobs(#[source] StoreError),
    #[error(transparent)]
    Docker(#[from] DockerError),
}

pub async fn run(store: Store, docker: Arc<DockerExecutor>, shutdown: CancellationToken) {
    loop {
        match reap_once(&store, &docker, SystemTime::now()).await {
            Ok(r) if !r.containers.is_empty() || !r.networks.is_empty() => {
                tracing::warn!(containers = ?r.containers, networks = ?r.networks, "reaped orphaned containers");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "container reaper: pass skipped"),
        }
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// One pass at `now`: reads the running jobs, then reaps what belongs to none of them. A store
/// error ends the pass before the engine is touched.
pub async fn reap_once(
    store: &Store,
    docker: &DockerExecutor,
    now: SystemTime,
) -> Result<ReapReport, ReapError> {
    let running = running_jobs(store).await.map_err(ReapError::RunningJobs)?;
    Ok(docker
        .reap_with(now, |job, _| running.contains(&job))
        .await?)
}

/// Ids of every running job, page by page (a partial list would doom the rest).
pub(crate) async fn running_jobs(store: &Store) -> Result<HashSet<i64>, StoreError> {
    const PAGE: i64 = 10_000;
    let mut ids = HashSet::new();
    let mut before_id = None;
    loop {
        let page = store
            .list_jobs(&JobFilter {
                status: Some(cronium_model::JobStatus::Running),
                limit: Some(PAGE),
                before_id,
                ..Default::default()
            })
            .await?;
        let full = page.len() as i64 == PAGE;
        before_id = page.iter().map(|j| j.id).min();
        ids.extend(page.into_iter().map(|j| j.id));
        if !full {
            return Ok(ids);
        }
    }
}
