//! The server's background loops besides the scheduler and the agent: each a module with a
//! `run(deps..., shutdown)` that takes only what it needs, started by [`crate::serve`] and ended
//! by its shutdown token.
//!
//! - [`payload_sweep`]: removes cached payload archives unused for a while.
//! - [`reaper`]: removes containers and networks a crashed agent left behind.
//! - (retention: the sweep of old jobs and logs belongs here too, as `retention.rs`.)
//!
//! Not for request handling (the `api` module) nor for deciding when jobs run (the scheduler).

pub mod payload_sweep;
pub mod reaper;
