//! The operations behind the API and the web UI, without HTTP: each takes the server's state
//! and plain values, and answers rows of the store or a [`UseCaseError`], which the `api`
//! module maps to statuses (and the UI to messages at the field).
//!
//! Not here: JSON shapes of the API (`api::dto`), SQL (the store), HTML.

pub mod apply;
pub mod workflows;

use cronium_core::spec::{SpecError, Target};
use cronium_store::StoreError;

use crate::state::AppState;

/// Why an operation refused or failed. Nothing was changed unless the variant says otherwise.
#[derive(Debug, thiserror::Error)]
pub enum UseCaseError {
    /// The input is not valid: `field` is a path into it (`nodes[2].after.deploy`).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// What the operation targets does not exist (the message says what).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state (a run still going, a broken version...).
    #[error("{message}")]
    Conflict {
        field: Option<String>,
        message: String,
    },
    #[error(transparent)]
    Store(StoreError),
}

impl UseCaseError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        UseCaseError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The field at fault, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            UseCaseError::Invalid { field, .. } => Some(field),
            UseCaseError::Conflict { field, .. } => field.as_deref(),
            _ => None,
        }
    }
}

impl From<SpecError> for UseCaseError {
    fn from(e: SpecError) -> Self {
        UseCaseError::Invalid {
            field: e.field,
            message: e.message,
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
                _ => UseCaseError::invalid("(body)", message),
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
