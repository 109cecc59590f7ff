//! The use cases: what a user can do, called alike by the JSON API (`api/`) and the web pages
//! (`ui/`), so that no rule exists in one and not the other. Each takes the [`AppState`] and
//! plain values and returns store rows or a [`UseCaseError`]; neither JSON shapes nor HTML live
//! here, and neither the API nor the pages talk to the store for anything a use case does.
//!
//! [`AppState`]: crate::state::AppState

pub mod agents;
pub mod apply;
pub mod audit;
pub mod channels;
pub mod events;
pub mod hooks;
pub mod jobs;
pub mod prune;
pub mod runner_versions;
pub mod runs;
pub mod servers;
pub mod tokens;
pub mod users;
pub mod variables;
pub mod workflows;

use cronium_core::spec::{SpecError, Target};
use cronium_model::Role;
use cronium_store::StoreError;

use crate::state::AppState;

/// Who is acting: the user behind an API token or a page session, as authenticated for this
/// request. `role` is what the request may do: the user's role, or the token's narrower one.
/// Every use case that changes something takes it, to check the rules finer than a route's
/// role (`crate::authz`) and to write the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub user_id: Option<i64>,
    pub username: String,
    pub role: Role,
    pub token_id: Option<i64>,
    /// The page session's id (None for an API token).
    pub session_id: Option<String>,
    /// The client's address.
    pub source: Option<String>,
}

impl Actor {
    /// The server itself (first start, background work): no user, every right.
    pub fn system() -> Actor {
        Actor {
            user_id: None,
            username: "system".into(),
            role: Role::Admin,
            token_id: None,
            session_id: None,
            source: None,
        }
    }

    /// A signed webhook request: acts for the hook's event or workflow, as an operator would
    /// (it can run that one thing, which the signature proved it may).
    pub fn webhook(name: &str, source: Option<String>) -> Actor {
        Actor {
            user_id: None,
            username: format!("webhook:{name}"),
            role: Role::Operator,
            token_id: None,
            session_id: None,
            source,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role.allows(Role::Admin)
    }
}

/// Why a use case refused or failed. Each edge maps it once: the API to a status and its JSON
/// error, the pages to a message next to the field.
#[derive(Debug, thiserror::Error)]
pub enum UseCaseError {
    /// The request is not valid; `field` is a path into it (`retries.backoff`).
    #[error("{message}")]
    Invalid {
        field: Option<String>,
        message: String,
    },
    #[error("{0}")]
    NotFound(String),
    /// The actor may not do this (a rule finer than the route's role: someone else's token).
    #[error("{0}")]
    Forbidden(String),
    /// The request conflicts with the current state (a name taken, a job already ended).
    #[error("{message}")]
    Conflict {
        field: Option<String>,
        message: String,
    },
    /// The store failed (or refused in a way no variant above names).
    #[error(transparent)]
    Store(StoreError),
}

impl UseCaseError {
    /// A validation error naming `field`; the message starts with the field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = message.into();
        UseCaseError::Invalid {
            message: if message.starts_with(&field) {
                message
            } else {
                format!("{field}: {message}")
            },
            field: Some(field),
        }
    }

    /// The field at fault, when the error names one.
    pub fn field(&self) -> Option<&str> {
        match self {
            UseCaseError::Invalid { field, .. } | UseCaseError::Conflict { field, .. } => {
                field.as_deref()
            }
            _ => None,
        }
    }
}

impl From<SpecError> for UseCaseError {
    fn from(e: SpecError) -> Self {
        UseCaseError::Invalid {
            message: e.to_string(),
            field: Some(e.field),
        }
    }
}

/// The store's refusals keep their meaning: `Invalid("nodes[1].event: unknown event ...")`
/// names its field before the first `: `.
impl From<StoreError> for UseCaseError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Invalid(message) => match message.split_once(": ") {
                Some((field, rest)) if !field.is_empty() && !field.contains(' ') => {
                    UseCaseError::invalid(field, rest)
                }
                _ => UseCaseError::Invalid {
                    field: None,
                    message,
                },
            },
            StoreError::NotFound(what) => UseCaseError::NotFound(format!("{what} not found")),
            StoreError::Conflict(field) => UseCaseError::Conflict {
                message: format!("{field}: already exists"),
                field: Some(field),
            },
            e @ StoreError::LimitReached { .. } => UseCaseError::Conflict {
                message: e.to_string(),
                field: Some("max_executions".into()),
            },
            other => UseCaseError::Store(other),
        }
    }
}

pub type UseCaseResult<T> = Result<T, UseCaseError>;

/// What a target needs from this installation: the servers it names are registered, the
/// container limits it asks for are within the maximums. `field` is the target's path
/// (`target`, `nodes[2].target`).
pub async fn check_target(state: &AppState, field: &str, target: &Target) -> UseCaseResult<()> {
    match target {
        Target::Local => Ok(()),
        Target::Servers(t) => {
            if t.servers.is_empty() {
                return Ok(());
            }
            let known = state.store.list_servers().await?;
            if let Some(missing) = t
                .servers
                .iter()
                .find(|n| !known.iter().any(|s| &s.name == *n))
            {
                return Err(UseCaseError::invalid(
                    format!("{field}.servers"),
                    format!("unknown server `{missing}` (register it with `cronium server add`)"),
                ));
            }
            Ok(())
        }
        Target::Container(c) => {
            if let Some(docker) = &state.docker {
                docker
                    .check_limits(&cronium_agent::targets::container_spec(c))
                    .map_err(|e| {
                        UseCaseError::invalid(
                            format!("{field}.container.{}", e.field()),
                            e.to_string(),
                        )
                    })?;
            }
            Ok(())
        }
    }
}
