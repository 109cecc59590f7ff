//! The container target: each execution runs `cronium-runner` in a fresh, hardened Docker container.
//!
//! What this crate is for: turning one [`cronium_core::transport::RunRequest`] into one container
//! (image chosen per language or per event, the static runner bind-mounted read-only, resource
//! limits within global maximums, read-only root filesystem, no capabilities, no new privileges,
//! network `none`, a per-job network or a named one), streaming the runner's events back, reporting
//! out-of-memory kills as such, and removing everything it created on every path. A reaper removes
//! what a crashed agent left behind, touching only objects labelled as ours.
//!
//! What it is not for: running user code (only the runner does that: helpers, timeouts and results
//! live there), storing anything, or deciding retries. It talks to the engine API only (bollard),
//! never to the `docker` CLI.

mod cleanup;
mod config;
mod error;
mod executor;
mod image;
mod labels;
mod limits;
mod reaper;

pub use config::{ContainerRun, DockerConfig, PullPolicy};
pub use error::DockerError;
pub use executor::{DockerExecutor, RUNNER_MOUNT_PATH};
pub use labels::{LABEL_CREATED, LABEL_EXECUTION, LABEL_JOB, LABEL_MANAGED, NAME_PREFIX};
pub use limits::{format_bytes, ContainerSpec, LimitError, Limits, NetworkMode};
pub use reaper::ReapReport;
