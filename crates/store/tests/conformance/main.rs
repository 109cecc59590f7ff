//! The store conformance suite: every store operation, written once, run against SQLite and
//! PostgreSQL (each test expands to `<name>::sqlite` and `<name>::postgres`).
//!
//! PostgreSQL variants need `CRONIUM_TEST_PG_URL` (start a server with `scripts/test-pg.sh`);
//! without it they fail rather than skip, so a green run always means both backends passed.

#[macro_use]
mod harness;

mod agents;
mod artifacts;
mod auth;
mod batch;
mod bus;
mod events;
mod executions;
mod limits;
mod logs;
mod notify;
mod perf;
mod queue;
mod retention;
mod routing;
mod runner_versions;
mod runtime;
mod schedule;
mod server_health;
mod servers;
mod sessions;
mod variables;
mod workflows;
