//! Domain types and mechanisms shared by every server-side crate (store, agent, transports,
//! server, CLI): event and workflow specifications and their validation, schedules, payload building, secret
//! encryption and masking, and the [`transport`] contract through which the agent reaches a
//! runner.
//!
//! Not here: SQL (the store crate), HTTP shapes (the server crate), process or network I/O beyond
//! the local runner pipe.

pub mod clock;
pub mod crypto;
pub mod duration;
pub mod fanout;
pub mod health;
pub mod logbus;
pub mod mask;
pub mod metrics;
pub mod payload;
pub mod schedule;
pub mod spec;
#[cfg(feature = "utoipa")]
pub mod spec_schema;
pub mod transport;
pub mod workflow;
