//! Errors of the container target, at the crate boundary. Script failures are not errors: they are
//! a [`cronium_protocol::Finished`] with a failed status inside an `Ok`.

use cronium_protocol::Interpreter;

use crate::limits::LimitError;

/// Failures of the container machinery itself (not of the script).
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The configuration given to [`crate::DockerExecutor::connect`] is unusable.
    #[error("invalid docker configuration: {0}")]
    Config(String),
    /// An event's container settings are unusable (names the field).
    #[error("invalid container settings: {0}")]
    Spec(String),
    /// The engine could not be reached or did not answer as expected.
    #[error("cannot reach the Docker engine: {0}")]
    Connect(String),
    /// An event asked for limits it may not have.
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// Neither the event nor the global configuration names an image for this language.
    #[error("no container image configured for {0} scripts (set one on the event or in the configuration)")]
    NoImage(&'static str),
    /// The image is not on this engine and could not be pulled.
    #[error("container image {image:?} is not available: {reason}")]
    ImageUnavailable { image: String, reason: String },
    /// The runner inside the container ended without a result, or stopped answering.
    #[error("runner in container {container} failed: {message}")]
    Runner { container: String, message: String },
    /// An engine call failed.
    #[error(transparent)]
    Engine(#[from] bollard::errors::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl DockerError {
    pub(crate) fn no_image(interpreter: Interpreter) -> Self {
        DockerError::NoImage(interpreter.as_str())
    }
}

/// True when the engine answered 404 (no such container, image or network).
pub(crate) fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}
