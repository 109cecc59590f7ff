//! Variables scripts read and write at run time: plain ones as JSON, secret ones as ciphertext.
//!
//! Not for encryption: the caller encrypts before `set_variable` and decrypts after reading; the
//! store only keeps the bytes apart from plain values.

use serde_json::Value;
use sqlx::any::AnyRow;

use crate::row::{bool_col, i64_col, json, opt_i64, text, to_json};
use crate::store::map_opt;
use crate::{Store, StoreError};

#[derive(Debug, Clone, PartialEq)]
pub enum VariableValue {
    Plain(Value),
    /// Ciphertext, opaque to the store.
    Secret(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct VariableRow {
    pub name: String,
    pub value: VariableValue,
    pub updated_at: i64,
}

/// A variable written by a job (`cronium.setVariable`): never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariableWrite {
    pub name: String,
    pub job_id: i64,
    /// The execution (server, attempt) that wrote it, when the writer knew.
    pub execution_id: Option<i64>,
    pub secret: bool,
    pub written_at: i64,
}

fn variable_row(row: &AnyRow) -> Result<VariableRow, StoreError> {
    let name = text(row, "name")?;
    let value = if bool_col(row, "is_secret")? {
        let bytes: Option<Vec<u8>> = sqlx::Row::try_get(row, "secret")?;
        VariableValue::Secret(bytes.ok_or_else(|| {
            StoreError::Corrupt(format!("secret variable {name:?} has no ciphertext"))
        })?)
    } else {
        VariableValue::Plain(json(row, "value")?)
    };
    Ok(VariableRow {
        name,
        value,
        updated_at: i64_col(row, "updated_at")?,
    })
}

impl Store {
    /// Creates or replaces a variable (a plain one may become secret and back).
    pub async fn set_variable(
        &self,
        name: &str,
        value: VariableValue,
        now: i64,
    ) -> Result<(), StoreError> {
        Self::set_variable_on(&self.write, name, value, now).await
    }

    pub(crate) async fn set_variable_on<'c, E>(
        executor: E,
        name: &str,
        value: VariableValue,
        now: i64,
    ) -> Result<(), StoreError>
    where
        E: sqlx::Executor<'c, Database = sqlx::Any>,
    {
        if name.trim().is_empty() {
            return Err(StoreError::Invalid("name: must not be empty".into()));
        }
        let (is_secret, plain, secret) = match &value {
            VariableValue::Plain(v) => (0i64, Some(to_json("value", v)?), None),
            VariableValue::Secret(bytes) => (1i64, None, Some(bytes.clone())),
        };
        sqlx::query(
            "INSERT INTO variables (name, is_secret, value, secret, updated_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (name) DO UPDATE SET is_secret = excluded.is_secret, value = excluded.value, \
             secret = excluded.secret, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(is_secret)
        .bind(plain)
        .bind(secret)
        .bind(now)
        .execute(executor)
        .await?;
        Ok(())
    }

    /// Writes a variable for job `job_id` (its execution, when known) and records the write
    /// (name, job, execution, secret or not, time; never the value), in one transaction.
    pub async fn set_job_variable(
        &self,
        job_id: i64,
        execution_id: Option<i64>,
        name: &str,
        value: VariableValue,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let secret = matches!(value, VariableValue::Secret(_));
        Self::set_variable_on(&mut *tx, name, value, now).await?;
        Self::record_variable_write(&mut *tx, job_id, execution_id, name, secret, now).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn record_variable_write<'c, E>(
        executor: E,
        job_id: i64,
        execution_id: Option<i64>,
        name: &str,
        secret: bool,
        now: i64,
    ) -> Result<(), StoreError>
    where
        E: sqlx::Executor<'c, Database = sqlx::Any>,
    {
        sqlx::query(
            "INSERT INTO variable_writes (job_id, execution_id, name, is_secret, written_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(job_id)
        .bind(execution_id)
        .bind(name)
        .bind(i64::from(secret))
        .bind(now)
        .execute(executor)
        .await?;
        Ok(())
    }

    /// What job `job_id` wrote, in order.
    pub async fn list_variable_writes(
        &self,
        job_id: i64,
    ) -> Result<Vec<VariableWrite>, StoreError> {
        let rows = sqlx::query(
            "SELECT job_id, execution_id, name, is_secret, written_at FROM variable_writes \
             WHERE job_id = $1 ORDER BY id",
        )
        .bind(job_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(VariableWrite {
                    name: text(row, "name")?,
                    job_id: i64_col(row, "job_id")?,
                    execution_id: opt_i64(row, "execution_id")?,
                    secret: bool_col(row, "is_secret")?,
                    written_at: i64_col(row, "written_at")?,
                })
            })
            .collect()
    }

    pub async fn get_variable(&self, name: &str) -> Result<Option<VariableRow>, StoreError> {
        let row = sqlx::query(
            "SELECT name, is_secret, value, secret, updated_at FROM variables WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.read)
        .await?;
        map_opt(row, variable_row)
    }

    /// All variables, by name.
    pub async fn list_variables(&self) -> Result<Vec<VariableRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, is_secret, value, secret, updated_at FROM variables ORDER BY name",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(variable_row).collect()
    }

    /// False if there was no such variable.
    pub async fn delete_variable(&self, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM variables WHERE name = $1")
            .bind(name)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
