//! What every request handler and background task of the server shares.

use std::path::PathBuf;
use std::sync::Arc;

use cronium_core::crypto::SecretBox;
use cronium_core::logbus::LogBus;
use cronium_core::metrics::Metrics;
use cronium_store::Store;
use tokio::sync::Notify;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub secrets: Arc<SecretBox>,
    pub bus: Arc<LogBus>,
    pub metrics: Arc<Metrics>,
    /// Wakes the embedded agent after an enqueue.
    pub agent_wake: Arc<Notify>,
    /// Wakes the scheduler after an event changed.
    pub scheduler_wake: Arc<Notify>,
    pub data_dir: PathBuf,
    /// The SSH transport (also used by `server test`).
    pub ssh: Option<cronium_ssh::SshExecutor>,
    /// The container transport, when a Docker engine was reachable at start.
    pub docker: Option<Arc<cronium_docker::DockerExecutor>>,
    /// The retention sweep (its loop, and `POST /api/v1/prune`).
    pub retention: Arc<crate::background::retention::Retention>,
    /// Web UI settings (sessions, cookies).
    pub ui: Arc<crate::ui::UiConfig>,
    /// Webhooks and notifications: the public URL, the delivery client and its waker.
    pub hooks: Arc<crate::notify::Hub>,
    /// The thresholds that judge servers' health (`serve --health-*`).
    pub health: Arc<cronium_core::health::Thresholds>,
    /// Cancelled when the server begins to stop: long-polls (the agent API's claims) answer at
    /// once instead of holding the graceful shutdown.
    pub stopping: tokio_util::sync::CancellationToken,
    /// Agent tokens verified within the last second (the agent API's calls).
    pub agent_tokens: Arc<crate::api::agent::TokenCache>,
}
