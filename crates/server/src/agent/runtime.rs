//! [`RuntimeApi`] on the store: how the embedded agent answers the runtime calls its runners
//! relay in API mode, and what the agent API calls for a remote agent's. Every write is fenced
//! by the execution's claim.
//!
//! Not for masking (the agent's recorder masks before it calls).

use std::sync::Arc;

use async_trait::async_trait;
use cronium_agent::queue::{variable_context, Lease, QueueError};
use cronium_agent::runtime::RuntimeApi;
use cronium_core::clock::now_ms;
use cronium_core::crypto::SecretBox;
use cronium_store::{Store, VariableValue};
use serde_json::Value;

use super::queue::store_error;

/// [`RuntimeApi`] on the store.
#[derive(Clone)]
pub struct StoreRuntime {
    pub store: Store,
    pub secrets: Arc<SecretBox>,
}

#[async_trait]
impl RuntimeApi for StoreRuntime {
    async fn set_token(
        &self,
        lease: &Lease,
        execution_id: i64,
        token_sha256: &str,
        expires_at: i64,
    ) -> Result<bool, QueueError> {
        Ok(self
            .store
            .set_execution_token(
                execution_id,
                &lease.worker,
                lease.attempt,
                token_sha256,
                expires_at,
            )
            .await
            .map_err(store_error)?)
    }

    async fn revoke_tokens(&self, job_id: i64) -> Result<(), QueueError> {
        self.store
            .revoke_execution_tokens(job_id)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn get_variable(&self, name: &str) -> Result<Option<Value>, QueueError> {
        let Some(row) = self.store.get_variable(name).await.map_err(store_error)? else {
            return Ok(None);
        };
        match row.value {
            VariableValue::Plain(v) => Ok(Some(v)),
            VariableValue::Secret(ct) => {
                let clear = self
                    .secrets
                    .decrypt(&variable_context(name), &ct)
                    .map_err(|_| QueueError::Secret {
                        name: name.to_string(),
                        reason: "it does not decrypt with this server's encryption key".into(),
                    })?;
                serde_json::from_slice(&clear)
                    .map(Some)
                    .map_err(|e| QueueError::Secret {
                        name: name.to_string(),
                        reason: format!("its decrypted value is not JSON ({e})"),
                    })
            }
        }
    }

    async fn set_variable(
        &self,
        execution_id: i64,
        attempt: i32,
        name: &str,
        value: &Value,
    ) -> Result<Option<bool>, QueueError> {
        let secret = matches!(
            self.store
                .get_variable(name)
                .await
                .map_err(store_error)?
                .map(|r| r.value),
            Some(VariableValue::Secret(_))
        );
        let v = if secret {
            let clear = serde_json::to_vec(value).map_err(|e| QueueError::Other(e.to_string()))?;
            VariableValue::Secret(self.secrets.encrypt(&variable_context(name), &clear))
        } else {
            VariableValue::Plain(value.clone())
        };
        let written = self
            .store
            .runtime_set_variable(execution_id, attempt, name, v, now_ms())
            .await
            .map_err(store_error)?;
        Ok(written.then_some(secret))
    }

    async fn set_output(
        &self,
        execution_id: i64,
        attempt: i32,
        key: Option<&str>,
        value: &Value,
    ) -> Result<Option<Value>, QueueError> {
        Ok(self
            .store
            .runtime_set_output(execution_id, attempt, key, value)
            .await
            .map_err(store_error)?)
    }

    async fn set_condition(
        &self,
        execution_id: i64,
        attempt: i32,
        value: bool,
    ) -> Result<bool, QueueError> {
        Ok(self
            .store
            .runtime_set_condition(execution_id, attempt, value)
            .await
            .map_err(store_error)?)
    }

    async fn results(&self, execution_id: i64) -> Result<(Value, Option<bool>), QueueError> {
        Ok(self
            .store
            .get_execution(execution_id)
            .await
            .map_err(store_error)?
            .map(|e| (e.output, e.condition))
            .unwrap_or((Value::Null, None)))
    }
}
