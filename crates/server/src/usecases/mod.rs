//! The use cases: what a user can do, called alike by the JSON API (`api/`) and the web pages
//! (`ui/`), so that no rule exists in one and not the other. Each takes the [`AppState`] and
//! plain values and returns store rows or a [`UseCaseError`]; neither JSON shapes nor HTML live
//! here, and neither the API nor the pages talk to the store for anything a use case does.
//!
//! [`AppState`]: crate::state::AppState

pub mod events;
pub mod jobs;
pub mod runs;
pub mod servers;
pub mod tokens;
pub mod variables;

use cronium_core::spec::SpecError;
use cronium_store::StoreError;

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
    /// The request conflicts with the current state (a name taken, a job already ended).
    #[error("{message}")]
    Conflict {
        field: Option<String>,
        message: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
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

pub type UseCaseResult<T> = Result<T, UseCaseError>;
