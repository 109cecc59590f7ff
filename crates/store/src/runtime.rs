//! The runtime API's rows: per-execution tokens (only their SHA-256 is stored) and the writes a
//! running script makes through the API (output, condition, variables), each fenced by the
//! execution's claim: the execution is not final, its job is `running` at the execution's
//! attempt. A recovered or re-claimed job has a new attempt, so a stale run cannot write.
//!
//! Not for hashing or checking tokens' format (the server does), nor masking (the agent's
//! recorder, and the server's runtime handlers, mask before they call).

use serde_json::{Map, Value};
use sqlx::any::AnyRow;

use crate::row::{i32_col, i64_col, json, opt_i64, opt_text, text, to_json, word};
use crate::store::map_opt;
use crate::variables::VariableValue;
use crate::{Backend, Store, StoreError};
use cronium_model::Trigger;

/// What a valid runtime token opens: its execution, with what the runtime API serves.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeExecution {
    pub execution_id: i64,
    pub job_id: i64,
    pub attempt: i32,
    pub server: Option<String>,
    pub output: Value,
    pub event_id: Option<i64>,
    pub event_name: String,
    pub event_version: i64,
    pub trigger: Trigger,
    pub input: Value,
    pub expires_at: i64,
}

/// The claim condition on an execution row `e` (its id is `$1`, its attempt `$2`).
const FENCE: &str = concat!(
    "e.id = $1 AND e.attempt = $2 AND e.status IN ",
    live_execution_statuses!(),
    " AND EXISTS (SELECT 1 FROM jobs j WHERE j.id = e.job_id AND j.status = 'running' \
     AND j.attempt = e.attempt)"
);

fn runtime_row(row: &AnyRow) -> Result<RuntimeExecution, StoreError> {
    Ok(RuntimeExecution {
        execution_id: i64_col(row, "id")?,
        job_id: i64_col(row, "job_id")?,
        attempt: i32_col(row, "attempt")?,
        server: opt_text(row, "server")?,
        output: json(row, "output")?,
        event_id: opt_i64(row, "event_id")?,
        event_name: text(row, "event_name")?,
        event_version: i64_col(row, "event_version")?,
        trigger: word(row, "trigger_kind")?,
        input: json(row, "input")?,
        expires_at: i64_col(row, "api_token_expires_at")?,
    })
}

impl Store {
    /// Ties a runtime token (its SHA-256, hex) to an execution of the attempt `worker` holds,
    /// valid until `expires_at`, and records the helpers mode `api`. False when the lease is lost.
    pub async fn set_execution_token(
        &self,
        exec_id: i64,
        worker: &str,
        attempt: i32,
        token_sha256: &str,
        expires_at: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE executions SET api_token_sha256 = $1, api_token_expires_at = $2, \
               helpers = 'api' \
             WHERE id = $3 AND attempt = $4 AND EXISTS (SELECT 1 FROM jobs j \
               WHERE j.id = executions.job_id AND j.lease_owner = $5 AND j.attempt = $4 \
               AND j.status = 'running')",
        )
        .bind(token_sha256)
        .bind(expires_at)
        .bind(exec_id)
        .bind(i64::from(attempt))
        .bind(worker)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The execution a runtime token opens at `now`: None when no execution has it, it expired,
    /// the execution ended or its job moved on to another attempt.
    pub async fn runtime_execution(
        &self,
        token_sha256: &str,
        now: i64,
    ) -> Result<Option<RuntimeExecution>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT e.id, e.job_id, e.attempt, e.server, e.output, e.api_token_expires_at, \
               j.event_id, j.event_name, j.event_version, j.trigger_kind, j.input \
             FROM executions e JOIN jobs j ON j.id = e.job_id \
             WHERE e.api_token_sha256 = $1 AND e.api_token_expires_at > $2 \
               AND e.status IN ",
            live_execution_statuses!(),
            " AND j.status = 'running' AND j.attempt = e.attempt"
        ))
        .bind(token_sha256)
        .bind(now)
        .fetch_optional(&self.read)
        .await?;
        map_opt(row, runtime_row)
    }

    /// Forgets the runtime tokens of a job's executions (at the end of an attempt), so that
    /// not even their hashes outlive the runs.
    pub async fn revoke_execution_tokens(&self, job_id: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE executions SET api_token_sha256 = NULL \
             WHERE job_id = $1 AND api_token_sha256 IS NOT NULL",
        )
        .bind(job_id)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected())
    }

    /// Sets the whole output (`key` None) or one key of it (the output becomes an object) of a
    /// running execution; returns the whole new output, or None when the claim is gone.
    pub async fn runtime_set_output(
        &self,
        exec_id: i64,
        attempt: i32,
        key: Option<&str>,
        value: &Value,
    ) -> Result<Option<Value>, StoreError> {
        let mut tx = self.begin_write().await?;
        let lock = match self.backend() {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE OF e",
        };
        let row = sqlx::query(&format!(
            "SELECT e.output FROM executions e WHERE {FENCE}{lock}"
        ))
        .bind(exec_id)
        .bind(i64::from(attempt))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let output = match key {
            None => value.clone(),
            Some(k) => {
                let mut map = match json(&row, "output")? {
                    Value::Object(m) => m,
                    _ => Map::new(),
                };
                map.insert(k.to_string(), value.clone());
                Value::Object(map)
            }
        };
        sqlx::query("UPDATE executions SET output = $1 WHERE id = $2")
            .bind(to_json("output", &output)?)
            .bind(exec_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(output))
    }

    /// Sets the workflow condition of a running execution. False when the claim is gone.
    pub async fn runtime_set_condition(
        &self,
        exec_id: i64,
        attempt: i32,
        value: bool,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(&format!(
            "UPDATE executions SET condition = $3 WHERE id IN \
               (SELECT e.id FROM executions e WHERE {FENCE})"
        ))
        .bind(exec_id)
        .bind(i64::from(attempt))
        .bind(i64::from(value))
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Writes a variable for a running execution, in the transaction that checks its claim.
    /// False (nothing written) when the claim is gone.
    pub async fn runtime_set_variable(
        &self,
        exec_id: i64,
        attempt: i32,
        name: &str,
        value: VariableValue,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let lock = match self.backend() {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR SHARE OF e",
        };
        let owned = sqlx::query(&format!(
            "SELECT e.id, e.job_id FROM executions e WHERE {FENCE}{lock}"
        ))
        .bind(exec_id)
        .bind(i64::from(attempt))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(owned) = owned else {
            return Ok(false);
        };
        let job_id = i64_col(&owned, "job_id")?;
        let secret = matches!(value, VariableValue::Secret(_));
        Self::set_variable_on(&mut *tx, name, value, now).await?;
        Self::record_variable_write(&mut *tx, job_id, Some(exec_id), name, secret, now).await?;
        tx.commit().await?;
        Ok(true)
    }
}
