//! The one client of Cronium's HTTP API: what the CLI, a remote agent (`cronium agent`'s
//! `HttpQueue`) and the benchmarks use to talk to a server.
//!
//! - [`Client`] (made by [`Builder`]): a base URL, an optional bearer token and one configured
//!   `reqwest` client; JSON calls ([`Client::request`] for `Value`s, [`Client::send`],
//!   [`Client::post`] and [`Client::get`] for typed bodies) and [`Client::stream`] for the
//!   server's Server-Sent Events streams.
//! - [`Error`]: the one error of a call: no answer ([`Error::Unreachable`]), an error answer
//!   ([`Error::Status`], read from the server's [`ErrorBody`]), a success whose body is not
//!   what was asked for ([`Error::Shape`]).
//! - [`SseReader`]: the one SSE parser (fields `event`, `id`, `data`, multi-line data,
//!   comments), each [`SseEvent`] with the instant it arrived.
//!
//! Not here: what the calls mean. Retries, backoff, spooling and user-facing wording belong to
//! the callers (the agent's `remote.rs`, the CLI's `client.rs`); this crate depends on no other
//! Cronium crate, so every one of them can depend on it.

mod client;
mod error;
mod error_body;
mod sse;

pub use client::{Builder, Client};
pub use error::Error;
pub use error_body::{ErrorBody, ErrorDetail};
pub use reqwest::{Method, StatusCode};
pub use sse::{SseEvent, SseReader};
