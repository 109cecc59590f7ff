//! Remote execution over SSH: the transport for the `servers` target.
//!
//! [`SshExecutor`] holds a connection pool per server, the runner deployment cache and the
//! metrics. It runs one execution on one server in one of three modes:
//! - `runner-ssh`: deploy `cronium-runner` once per server (SFTP, or `cat > file` when the host has
//!   no SFTP subsystem), then stream the run context and the payload over the stdin of one exec
//!   channel and forward the runner's event stream;
//! - `direct-ssh`: send the script itself to the interpreter (`bash -s`, `python3 -`, `node -`)
//!   in its own process group, with no runtime helpers;
//! - `auto`: runner-ssh, falling back to direct-ssh when the runner cannot be deployed (or no
//!   runner is built for the host's OS and architecture).
//!
//! The executor holds every registered runner artifact, several versions per platform; the
//! host's platform is detected with `uname -s; uname -m` before its first deployment (unless the
//! caller knows it), and the artifact is the one of that platform and the server's wanted
//! version ([`ServerConfig::runner_version`], else the default). `versions.rs` deploys a given
//! version without running anything (rollouts, `server deploy`), checks it and removes old ones.
//!
//! This crate is not the store, the fan-out or the scheduler: it runs one execution on one server
//! and returns what the caller must record (the observed host key to pin, the deployment record).
//! Fan-out is the caller running many [`SshExecutor::run`] futures at once; the executor is
//! `Clone` and shares its pools between them.

mod config;
mod connection;
mod deploy;
mod direct;
mod error;
mod executor;
mod health;
mod metrics;
mod pool;
mod runner_run;
mod serve_run;
mod shell;
mod validate;
mod versions;

pub use config::{
    is_runner_file_name, Credential, DirectScript, KnownRunner, Mode, Platform, RunnerArtifact,
    ServerConfig, SshConfig, MANIFEST_NAME,
};
pub use deploy::{DeployOutcome, DeploymentRecord};
pub use error::SshError;
pub use executor::{HostKeyStatus, RemoteRun, SshExecutor, TestReport};
pub use health::{Contact, HealthCheck, HealthConnection};
pub use metrics::MetricsSnapshot;
pub use shell::{quote, validate_env_name};
pub use validate::{validate_host_key, validate_private_key};
pub use versions::{DeployedRunner, VersionDeploy};
