//! The errors of the SSH transport, worded for the operator who has to fix the server, not for the
//! developer. Script failures are not errors: they come back as a `Finished` record.

/// Why an SSH execution (or a server test) could not be carried out.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SshError {
    #[error(
        "host key of server '{server}' changed: expected {expected}, the server presented {observed}; \
         if this change is expected, trust the new key with `cronium server accept-key {server}`"
    )]
    HostKeyChanged {
        server: String,
        /// Fingerprint (SHA256:...) of the pinned key.
        expected: String,
        /// Fingerprint of the key the server presented.
        observed: String,
        /// The presented key in OpenSSH format, for `accept-key`.
        observed_key: String,
    },
    #[error("host key of server '{server}' was rejected: {reason}")]
    HostKeyRejected { server: String, reason: String },
    #[error("authentication to server '{server}' as '{user}' failed: {reason}")]
    Auth {
        server: String,
        user: String,
        reason: String,
    },
    #[error("server '{server}' ({addr}) is unreachable: {reason}")]
    Unreachable {
        server: String,
        addr: String,
        reason: String,
    },
    #[error("could not deploy the runner to server '{server}': {reason}")]
    Deploy {
        server: String,
        reason: String,
        /// The failed deployment, for the deployment history.
        record: Option<Box<crate::DeploymentRecord>>,
    },
    /// The login worked but a plain command did not (a forced command, a shell that is not
    /// one): what [`crate::SshExecutor::check_login`] reports after authenticating.
    #[error("server '{server}' accepted the login but could not run a command: {reason}")]
    Command { server: String, reason: String },
    #[error("lost the connection to server '{server}': {reason}")]
    Lost { server: String, reason: String },
    /// No runner artifact is built for the host's OS and architecture (auto mode falls back
    /// to direct-ssh).
    #[error(
        "no runner for server '{server}': it is {platform}, and runners are available for {available}"
    )]
    UnsupportedPlatform {
        server: String,
        platform: String,
        /// The platforms there are runners for, comma-separated (`linux/aarch64, linux/x86_64`).
        available: String,
    },
    /// The server's wanted runner version has no artifact for its platform (a pin to a version
    /// that was never registered for it). Not a reason to fall back to direct-ssh in auto mode,
    /// nor to run another version: the execution fails.
    #[error(
        "no runner {version} for server '{server}' ({platform}): versions registered for {platform}: {available}"
    )]
    NoArtifact {
        server: String,
        platform: String,
        version: String,
        available: String,
    },
    #[error("invalid server configuration: {field}: {reason}")]
    InvalidConfig { field: &'static str, reason: String },
    #[error("invalid run request: {field}: {reason}")]
    InvalidRequest { field: String, reason: String },
    #[error("runner on server '{server}' misbehaved: {reason}")]
    Protocol { server: String, reason: String },
    #[error("local I/O error: {0}")]
    Io(String),
}

impl SshError {
    /// Whether retrying the same execution later could succeed (network trouble) as opposed to a
    /// problem an operator must fix first (credentials, host key, configuration).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            SshError::Unreachable { .. } | SshError::Lost { .. } | SshError::Deploy { .. }
        )
    }
}

impl From<std::io::Error> for SshError {
    fn from(e: std::io::Error) -> Self {
        SshError::Io(e.to_string())
    }
}
