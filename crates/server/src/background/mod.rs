//! The server's background loops besides the scheduler and the agent: each a module with a
//! `run(deps..., shutdown)` that takes only what it needs, started by [`crate::serve`] and ended
//! by its shutdown token.
//!
//! - [`retention`]: prunes old jobs, executions and log lines, and removes cached payloads unused
//!   for a while and the work directories of runners that were killed.
//! - [`reaper`]: removes containers and networks a crashed agent left behind.
//! - [`notify`]: writes the notifications of ended jobs and workflow runs into the outbox and
//!   delivers them, with retries.
//! - [`health`]: collects `cronium-runner health` from the SSH servers after runs and on an
//!   interval, and stores the latest reading and a short history per server.
//! - [`replicas`]: on PostgreSQL, sends this process's log-bus wake-ups to the other server
//!   replicas (`NOTIFY`) and applies theirs (`LISTEN`).
//! - [`workflows`]: times out workflow runs past their whole-run `timeout`; and, once at
//!   startup, the job policy of events written before workflows existed.
//!
//! Not for request handling (the `api` module) nor for deciding when jobs run (the scheduler).

pub mod health;
pub mod notify;
pub mod reaper;
pub mod replicas;
pub mod retention;
pub mod workflows;
