//! The global settings of the container target and the result type of a run.
//!
//! Not for validation against the engine (done at connect time by the executor).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use cronium_protocol::{Finished, Interpreter};

use crate::limits::Limits;

/// Size of the writable `/tmp` (the runner's work directory; the root filesystem is read-only).
const DEFAULT_TMPFS_BYTES: i64 = 256 * 1024 * 1024;

/// Whether a missing image may be pulled from a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Pull when the image is not on the engine (progress goes to the job's log).
    #[default]
    IfMissing,
    /// Never pull: a missing image fails the run at once (air-gapped hosts).
    Never,
}

/// Global settings of the container target.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// The static `cronium-runner` on the agent's host; bind-mounted into every container.
    pub runner_path: PathBuf,
    /// Default image per language (`cronium/python:1`, ...), used when the event names none.
    pub images: BTreeMap<Interpreter, String>,
    /// Limits applied when the event sets none.
    pub defaults: Limits,
    /// Limits no event may exceed.
    pub maximums: Limits,
    /// `uid:gid` the runner and the script run as (`65534:65534`, nobody, by default).
    pub user: String,
    /// How old an orphan must be before [`DockerExecutor::reap`] removes it.
    pub reap_grace: Duration,
    pub pull: PullPolicy,
    /// Size of the tmpfs mounted on `/tmp`, in bytes.
    pub tmpfs_bytes: i64,
}

impl DockerConfig {
    /// The defaults: the images built by `scripts/build-images.sh`, nobody, no limits, 10 min grace.
    pub fn new(runner_path: impl Into<PathBuf>) -> Self {
        DockerConfig {
            runner_path: runner_path.into(),
            images: BTreeMap::from([
                (Interpreter::Bash, "cronium/bash:1".to_string()),
                (Interpreter::Python, "cronium/python:1".to_string()),
                (Interpreter::Node, "cronium/node:1".to_string()),
            ]),
            defaults: Limits::default(),
            maximums: Limits::default(),
            user: "65534:65534".to_string(),
            reap_grace: Duration::from_secs(600),
            pull: PullPolicy::IfMissing,
            tmpfs_bytes: DEFAULT_TMPFS_BYTES,
        }
    }
}

/// The outcome of one container run.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerRun {
    /// The runner's final record, amended when the engine saw an out-of-memory kill
    /// (`error: "out of memory (limit 64 MiB)"`) or when the backstop had to stop the container.
    pub finished: Finished,
    /// The engine reported an out-of-memory kill inside the container.
    pub oom_killed: bool,
    pub image: String,
    /// Empty when the run was cancelled before its container was created.
    pub container_id: String,
    /// The limits that were applied.
    pub limits: Limits,
}
