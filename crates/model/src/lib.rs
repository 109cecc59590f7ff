//! Cronium's vocabulary: the statuses of jobs, executions and events, the kinds of trigger
//! that ask for a run (PRODUCT.md "Statuses", "Vocabulary"), an event's job policy as data, and
//! the workflow vocabulary with its pure rules ([`workflow`]). Each is an enum defined once here,
//! with the one spelling the store keeps, the API returns and the CLI accepts: lowercase,
//! snake_case (`timed_out`).
//!
//! Every crate that names a status depends on this one: the store (its rows carry these types),
//! the agent, the API and the CLI. It is serde only (utoipa behind the `utoipa` feature, for the
//! server's OpenAPI document), so a remote agent or the CLI never needs the store to speak it.
//!
//! Not for behaviour: what a status means to the queue lives in the store, what it means to a
//! user lives in the API and the CLI. The one exception is [`workflow`]'s rules (edges, joins,
//! input merging, a run's final status), pure functions kept here so that the store, which
//! applies them in its transactions, and the API, which explains them, share one definition. The runner's own terms (`cronium_protocol::RunStatus`) are
//! mapped onto these here, in one place.

pub mod backoff;
mod policy;
pub mod queue;
mod role;
pub mod routing;
mod status;
mod trigger;
pub mod workflow;

pub use backoff::backoff_delay;
pub use policy::{JobPolicy, PolicyOverride};
pub use queue::{
    ExecutionRow, ExecutionUpdate, ExecutionUsage, HandedOff, HealthState, Heartbeat, JobOutcome,
    JobRow, NewDeployment, NewLogLine, RunnerState,
};
pub use role::Role;
pub use routing::{Capability, Claimant, Routing};
pub use status::{EventStatus, ExecutionStatus, JobStatus, ServerHealth};
pub use trigger::Trigger;

/// A word that is not one of a vocabulary's values (from the database, a query string, a
/// command-line flag). The message lists the valid values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{value}`; expected one of {}", .valid.join(", "))]
pub struct UnknownValue {
    /// What was being parsed: `job status`, `trigger`...
    pub kind: &'static str,
    pub value: String,
    pub valid: Vec<&'static str>,
}

/// Defines a vocabulary enum: its variants with their one spelling, `as_str`, `FromStr` (with an
/// error listing the valid values), `Display` and `ALL`. serde (and utoipa, which reads the same
/// attribute) spell variants `snake_case`; the unit tests check that every spelling given here is
/// that one.
macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($what:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in the order of the product's documentation.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The one spelling: what the store keeps and the API returns.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::UnknownValue;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err($crate::UnknownValue {
                        kind: $what,
                        value: s.to_string(),
                        valid: Self::ALL.iter().map(|v| v.as_str()).collect(),
                    }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use vocabulary;
