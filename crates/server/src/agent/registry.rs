//! The embedded agent in the agents registry (`cronium agent list`, `GET /api/v1/agents`):
//! registered at start under its worker id, a heartbeat every few seconds, marked stopped at
//! shutdown. Remote agents do the same through the agent API (`api/agent.rs`).

use std::time::Duration;

use cronium_core::clock::now_ms;
use cronium_store::{AgentRegistration, Capability, Claimant, Store};
use tokio_util::sync::CancellationToken;

/// Between two heartbeats (an agent unheard of for 30 s shows `unreachable`).
const BEAT_EVERY: Duration = Duration::from_secs(5);

/// What the embedded agent can run.
pub struct Embedded {
    pub worker: String,
    pub concurrency: usize,
    /// Its Docker engine answered (and `--no-docker` was not given).
    pub container: bool,
}

/// What the embedded agent claims: local and SSH jobs always (an SSH job it cannot deploy to
/// fails saying why), container jobs only with a usable Docker engine, and never a job with
/// `agent_tags` (it has no tags).
pub fn embedded_claimant(container: bool) -> Claimant {
    let mut capabilities = vec![Capability::Local, Capability::Ssh];
    if container {
        capabilities.insert(1, Capability::Container);
    }
    Claimant {
        tags: Vec::new(),
        capabilities,
    }
}

pub async fn embedded(store: Store, e: Embedded, shutdown: CancellationToken) {
    let claimant = embedded_claimant(e.container);
    let registration = AgentRegistration {
        name: e.worker.clone(),
        worker: e.worker.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        tags: Vec::new(),
        capabilities: claimant
            .capabilities
            .iter()
            .map(|c| c.as_str().to_string())
            .collect(),
        concurrency: i64::try_from(e.concurrency).unwrap_or(i64::MAX),
        embedded: true,
        token_id: None,
    };
    let mut registered = false;
    loop {
        let now = now_ms();
        let beat = match registered {
            true => store.agent_heartbeat(&e.worker, &e.worker, now).await,
            false => Ok(false),
        };
        match beat {
            Ok(true) => {}
            Ok(false) => match store.register_agent(&registration, now).await {
                Ok(_) => registered = true,
                Err(err) => tracing::warn!(error = %err, "registering the embedded agent"),
            },
            Err(err) => tracing::warn!(error = %err, "embedded agent heartbeat"),
        }
        tokio::select! {
            _ = tokio::time::sleep(BEAT_EVERY) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    if registered {
        if let Err(err) = store.agent_stopped(&e.worker, &e.worker, now_ms()).await {
            tracing::warn!(error = %err, "marking the embedded agent stopped");
        }
    }
}
