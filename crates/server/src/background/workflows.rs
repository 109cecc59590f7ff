//! The workflow loop: every [`INTERVAL`], times out the workflow runs past their whole-run
//! `timeout` (`Store::expire_workflow_runs`: each run stopped like a cancel, ending
//! `timed_out`), next to the agent's lease recovery. Several servers may run it at once: the
//! store times a run out once.
//!
//! Also here: [`backfill_event_policies`], run once by `serve()` at startup, which gives events
//! written before workflows existed the job policy columns their workflow nodes need.
//!
//! Not here: the progression of runs (it happens in the store, in the transaction that ends a
//! node's job), nor firing scheduled workflows (the scheduler).

use std::sync::Arc;
use std::time::Duration;

use cronium_core::clock::Clock;
use cronium_core::spec;
use cronium_store::{Store, StoreError};
use tokio_util::sync::CancellationToken;

/// Time between passes: how late past its deadline a run may be stopped.
pub const INTERVAL: Duration = Duration::from_millis(500);

pub async fn run(store: Store, clock: Arc<dyn Clock>, shutdown: CancellationToken) {
    loop {
        match expire_once(&store, clock.now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(runs = n, "workflow runs timed out"),
            Err(e) => tracing::warn!(error = %e, "workflow timeouts: pass failed"),
        }
        tokio::select! {
            _ = clock.sleep(INTERVAL) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// One pass at `now`: the number of runs timed out.
pub async fn expire_once(store: &Store, now: i64) -> Result<usize, StoreError> {
    Ok(store.expire_workflow_runs(now).await?.len())
}

/// Writes the job policy (`EventSpec::policy`) of every user event stored without one (written
/// by an older release). A spec that does not parse is left alone (the event is broken; its
/// nodes fail with "no stored job policy" until a valid version is applied). Returns how many
/// rows were given a policy.
pub async fn backfill_event_policies(store: &Store) -> Result<usize, StoreError> {
    let mut done = 0;
    for event in store.events_without_policy().await? {
        match spec::from_value(event.spec.clone()) {
            Ok(s) => {
                if store
                    .set_event_policy(event.id, event.version, &s.policy())
                    .await?
                {
                    done += 1;
                }
            }
            Err(e) => {
                tracing::warn!(event = %event.name, error = %e, "no job policy written: the stored spec does not parse")
            }
        }
    }
    Ok(done)
}
