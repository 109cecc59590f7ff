//! The deployment bookkeeping of the SSH target: what a server's run learnt about its runner
//! (deployed, verified, failed) stored through the queue, so that the deployment history shows
//! and a restarted agent trusts a recent verification instead of checking every host again.
//! Failures to store are logged: they never change a run's result.

use cronium_core::clock::now_ms;
use cronium_model::queue::{NewDeployment, RunnerState};
use cronium_ssh::{DeployOutcome, DeploymentRecord};

use crate::queue::RemoteServer;
use crate::Inner;

/// Stores a deployment (or verification) in the server's history; cache hits are not stored.
pub(super) async fn record_deployment(inner: &Inner, server_id: i64, d: &DeploymentRecord) {
    // Cache hits happen on every run: they are counted in the metrics, not stored.
    if d.outcome == DeployOutcome::Cached {
        return;
    }
    let row = NewDeployment {
        version: d.version.clone(),
        sha256: d.sha256.clone(),
        outcome: d.outcome.as_str().into(),
        attempts: i64::from(d.attempts),
        duration_ms: d.duration_ms as i64,
        error: d.error.clone(),
        at: d.at_ms,
    };
    if let Err(e) = inner.queue.record_deployment(server_id, &row).await {
        tracing::warn!(error = %e, "recording a deployment");
    }
}

/// Persists a verification (upload or check on the host) so that a restarted agent trusts it
/// for the re-verification period instead of checking every host again; a failed deployment
/// forgets what was known.
pub(super) async fn remember_runner(inner: &Inner, server: &RemoteServer, d: &DeploymentRecord) {
    let state = match d.outcome {
        DeployOutcome::Deployed | DeployOutcome::Verified => RunnerState {
            path: d.path.clone(),
            sha256: d.sha256.clone(),
            verified_at: d.at_ms,
        },
        DeployOutcome::Failed => return forget_runner(inner, server).await,
        DeployOutcome::Cached => return,
    };
    if let Err(e) = inner.queue.set_runner_state(server.id, Some(&state)).await {
        tracing::warn!(server = %server.config.name, error = %e, "remembering the deployed runner");
    }
}

/// Forgets the runner a server was known to have: the next run (or agent start) checks it.
pub(super) async fn forget_runner(inner: &Inner, server: &RemoteServer) {
    if let Err(e) = inner.queue.set_runner_state(server.id, None).await {
        tracing::warn!(server = %server.config.name, error = %e, "forgetting the deployed runner");
    }
}

/// Stores a deployment that failed before the transport could say more than why.
pub(super) async fn record_deployment_failure(inner: &Inner, server_id: i64, error: &str) {
    let row = NewDeployment {
        version: String::new(),
        sha256: String::new(),
        outcome: DeployOutcome::Failed.as_str().into(),
        attempts: 0,
        duration_ms: 0,
        error: Some(error.to_string()),
        at: now_ms(),
    };
    let _ = inner.queue.record_deployment(server_id, &row).await;
}
