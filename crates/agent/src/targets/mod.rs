//! The execution targets: where a job's executions run. One module per target, each behind
//! the one [`Target`] trait: `local` (a `cronium-runner` child process), `http` (the request
//! made here, for `http` events), `container` (a fresh Docker container per run) and `ssh`
//! (the fan-out to servers, with `deployments` the bookkeeping of the runners it deploys).
//!
//! A target gets the attempt's [`RunCtx`] and returns one [`ExecResult`] per execution; it
//! records the runner's stream through the context's recorder. What the results make of the
//! job (its status, a retry) is `job.rs`'s business, not a target's.

use async_trait::async_trait;
use cronium_core::spec::{self, EventSpec, EventType};

use crate::claim_gate::ClaimGate;
use crate::exec::{ExecResult, JobError, RunCtx};

mod container;
mod deployments;
mod http;
pub mod local;
mod ssh;

pub use container::container_spec;

/// Runs one attempt's executions on one kind of target.
#[async_trait]
pub(crate) trait Target: Send + Sync {
    /// Runs the job's executions (one, or one per server) and returns their results, in the
    /// order they are stored. `gate` is opened once the first execution is written, or before
    /// a run whose preparation may take long. An error means no execution ran to a result:
    /// what can fail before a run fails before any execution is created.
    async fn run(&self, ctx: &RunCtx, gate: &mut ClaimGate) -> Result<Vec<ExecResult>, JobError>;
}

/// The target a job's event runs on: an `http` event's request is made here; anything else
/// runs where its `target` says. (An `http` event given a container or servers target fails
/// there, saying so.)
pub(crate) fn for_spec(spec: &EventSpec) -> Box<dyn Target + '_> {
    match (&spec.kind, &spec.target) {
        (EventType::Http, spec::Target::Local) => Box::new(http::Http),
        (_, spec::Target::Local) => Box::new(local::Local),
        (_, spec::Target::Container(c)) => Box::new(container::Container(c)),
        (_, spec::Target::Servers(t)) => Box::new(ssh::Servers(t)),
    }
}
