//! What the agent needs to answer the runtime API calls a runner relays (API mode): a narrow
//! trait, [`RuntimeApi`], implemented on the store for the agent embedded in the server
//! (the server's `agent::runtime::StoreRuntime`) and over HTTP for a remote agent. Every write is fenced by the
//! execution's claim (execution id and attempt; the store checks the job is still running at
//! that attempt), so a stale attempt cannot write.
//!
//! Not for masking (the recorder masks before it calls) nor for the HTTP routes of the same
//! operations (the server's `api/runtime.rs`).

use async_trait::async_trait;
use serde_json::Value;

use crate::queue::{Lease, QueueError};

/// The runtime operations of one execution, as the agent performs them.
#[async_trait]
pub trait RuntimeApi: Send + Sync + 'static {
    /// Ties `token_sha256` to the execution of `lease`, valid until `expires_at`. False when
    /// the lease is lost.
    async fn set_token(
        &self,
        lease: &Lease,
        execution_id: i64,
        token_sha256: &str,
        expires_at: i64,
    ) -> Result<bool, QueueError>;
    /// Forgets the tokens of the job's executions.
    async fn revoke_tokens(&self, job_id: i64) -> Result<(), QueueError>;
    /// A variable's current value (secret ones decrypted); None when it does not exist.
    async fn get_variable(&self, name: &str) -> Result<Option<Value>, QueueError>;
    /// Writes a variable (a secret one stays secret): None when the claim is gone, else
    /// whether it is secret.
    async fn set_variable(
        &self,
        execution_id: i64,
        attempt: i32,
        name: &str,
        value: &Value,
    ) -> Result<Option<bool>, QueueError>;
    /// Sets the output or one key of it; the whole new output, None when the claim is gone.
    async fn set_output(
        &self,
        execution_id: i64,
        attempt: i32,
        key: Option<&str>,
        value: &Value,
    ) -> Result<Option<Value>, QueueError>;
    async fn set_condition(
        &self,
        execution_id: i64,
        attempt: i32,
        value: bool,
    ) -> Result<bool, QueueError>;
    /// The stored output and condition of an execution (what API writes left there).
    async fn results(&self, execution_id: i64) -> Result<(Value, Option<bool>), QueueError>;
}
