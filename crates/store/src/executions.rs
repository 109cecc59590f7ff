//! Executions: one row per attempt and per server of a job, created and updated by the worker
//! that holds the job's lease (fenced by worker and attempt, like every job change).
//!
//! Not for the job's own outcome: that is `jobs.rs` (`finish`).

use cronium_model::queue::{ExecutionRow, ExecutionUpdate, ExecutionUsage};
use cronium_model::ExecutionStatus;
use sqlx::any::AnyRow;

use crate::row::{i32_col, i64_col, json, opt_i32, opt_i64, opt_text, to_json, word};
use crate::store::map_opt;
use crate::{Store, StoreError};

macro_rules! execution_cols {
    () => {
        "id, job_id, attempt, server, status, exit_code, started_at, finished_at, setup_ms, run_ms, \
         runner_version, error, output, mode, note, condition, helpers, helpers_note, cpu_user_ms, \
         cpu_system_ms, max_rss_bytes, cgroup_cpu_ms, cgroup_memory_peak_bytes, created_at"
    };
}

/// An execution to create for the attempt `worker` holds ([`Store::create_execution_on`]).
#[derive(Clone, Copy)]
pub(crate) struct NewExecution<'a> {
    pub(crate) job_id: i64,
    pub(crate) worker: &'a str,
    pub(crate) attempt: i32,
    pub(crate) server: Option<&'a str>,
    pub(crate) status: ExecutionStatus,
}

fn execution_row(row: &AnyRow) -> Result<ExecutionRow, StoreError> {
    Ok(ExecutionRow {
        id: i64_col(row, "id")?,
        job_id: i64_col(row, "job_id")?,
        attempt: i32_col(row, "attempt")?,
        server: opt_text(row, "server")?,
        status: word(row, "status")?,
        exit_code: opt_i32(row, "exit_code")?,
        started_at: opt_i64(row, "started_at")?,
        finished_at: opt_i64(row, "finished_at")?,
        setup_ms: opt_i64(row, "setup_ms")?,
        run_ms: opt_i64(row, "run_ms")?,
        runner_version: opt_text(row, "runner_version")?,
        error: opt_text(row, "error")?,
        output: json(row, "output")?,
        mode: opt_text(row, "mode")?,
        note: opt_text(row, "note")?,
        condition: opt_i64(row, "condition")?.map(|c| c != 0),
        helpers: opt_text(row, "helpers")?,
        helpers_note: opt_text(row, "helpers_note")?,
        usage: ExecutionUsage {
            cpu_user_ms: opt_i64(row, "cpu_user_ms")?,
            cpu_system_ms: opt_i64(row, "cpu_system_ms")?,
            max_rss_bytes: opt_i64(row, "max_rss_bytes")?,
            cgroup_cpu_ms: opt_i64(row, "cgroup_cpu_ms")?,
            cgroup_memory_peak_bytes: opt_i64(row, "cgroup_memory_peak_bytes")?,
        },
        created_at: i64_col(row, "created_at")?,
    })
}

impl Store {
    /// Creates an execution for the attempt `worker` holds. `None` (nothing written) when the
    /// worker no longer owns that running attempt.
    pub async fn create_execution(
        &self,
        job_id: i64,
        worker: &str,
        attempt: i32,
        server: Option<&str>,
        status: ExecutionStatus,
        now: i64,
    ) -> Result<Option<ExecutionRow>, StoreError> {
        let new = NewExecution {
            job_id,
            worker,
            attempt,
            server,
            status,
        };
        Self::create_execution_on(&self.write, &new, now).await
    }

    /// [`Store::create_execution`] on `executor` (a transaction's connection, or a pool).
    pub(crate) async fn create_execution_on<'c, E>(
        executor: E,
        new: &NewExecution<'_>,
        now: i64,
    ) -> Result<Option<ExecutionRow>, StoreError>
    where
        E: sqlx::Executor<'c, Database = sqlx::Any>,
    {
        let NewExecution {
            job_id,
            worker,
            attempt,
            server,
            status,
        } = *new;
        // INSERT ... SELECT from the job row: the fence and the insert are one statement.
        let row = sqlx::query(concat!(
            "INSERT INTO executions (job_id, attempt, server, status, created_at) ",
            "SELECT id, attempt, $1, $2, $3 FROM jobs ",
            "WHERE id = $4 AND lease_owner = $5 AND attempt = $6 AND status = 'running' ",
            "RETURNING ",
            execution_cols!()
        ))
        .bind(server)
        .bind(status.as_str())
        .bind(now)
        .bind(job_id)
        .bind(worker)
        .bind(i64::from(attempt))
        .fetch_optional(executor)
        .await?;
        map_opt(row, execution_row)
    }

    /// Creates one execution per server for the attempt `worker` holds, in one transaction (a
    /// fan-out to many servers costs one commit, not one per server). `None` (nothing written)
    /// when the worker no longer owns that running attempt.
    pub async fn create_executions(
        &self,
        job_id: i64,
        worker: &str,
        attempt: i32,
        servers: &[&str],
        status: ExecutionStatus,
        now: i64,
    ) -> Result<Option<Vec<ExecutionRow>>, StoreError> {
        let mut tx = self.begin_write().await?;
        let owned = sqlx::query(&format!(
            "SELECT id FROM jobs WHERE id = $1 AND lease_owner = $2 AND attempt = $3 \
             AND status = 'running'{}",
            self.for_update()
        ))
        .bind(job_id)
        .bind(worker)
        .bind(i64::from(attempt))
        .fetch_optional(&mut *tx)
        .await?;
        if owned.is_none() {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(servers.len());
        for server in servers {
            let row = sqlx::query(concat!(
                "INSERT INTO executions (job_id, attempt, server, status, created_at) ",
                "VALUES ($1, $2, $3, $4, $5) RETURNING ",
                execution_cols!()
            ))
            .bind(job_id)
            .bind(i64::from(attempt))
            .bind(*server)
            .bind(status.as_str())
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            out.push(execution_row(&row)?);
        }
        tx.commit().await?;
        Ok(Some(out))
    }

    /// Applies `update` to an execution of the attempt `worker` owns (or owned and finished
    /// itself). False (nothing written) when the lease was lost: the job was recovered or
    /// re-claimed, or the execution belongs to another attempt.
    pub async fn update_execution(
        &self,
        exec_id: i64,
        worker: &str,
        attempt: i32,
        update: &ExecutionUpdate,
    ) -> Result<bool, StoreError> {
        Self::update_execution_on(&self.write, exec_id, worker, attempt, update).await
    }

    /// Applies several updates of one attempt's executions in one transaction (the end of a
    /// fan-out). Returns how many were written; updates of a lost lease write nothing.
    pub async fn update_executions(
        &self,
        worker: &str,
        attempt: i32,
        updates: &[(i64, ExecutionUpdate)],
    ) -> Result<usize, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut written = 0;
        for (exec_id, update) in updates {
            if Self::update_execution_on(&mut *tx, *exec_id, worker, attempt, update).await? {
                written += 1;
            }
        }
        tx.commit().await?;
        Ok(written)
    }

    pub(crate) async fn update_execution_on<'c, E>(
        executor: E,
        exec_id: i64,
        worker: &str,
        attempt: i32,
        update: &ExecutionUpdate,
    ) -> Result<bool, StoreError>
    where
        E: sqlx::Executor<'c, Database = sqlx::Any>,
    {
        let output = update
            .output
            .as_ref()
            .map(|v| to_json("output", v))
            .transpose()?;
        let done = sqlx::query(
            "UPDATE executions SET \
               status = COALESCE($1, status), exit_code = COALESCE($2, exit_code), \
               started_at = COALESCE($3, started_at), finished_at = COALESCE($4, finished_at), \
               setup_ms = COALESCE($5, setup_ms), run_ms = COALESCE($6, run_ms), \
               runner_version = COALESCE($7, runner_version), error = COALESCE($8, error), \
               output = COALESCE($9, output), mode = COALESCE($10, mode), note = COALESCE($11, note), \
               condition = COALESCE($15, condition), helpers = COALESCE($16, helpers), \
               helpers_note = COALESCE($17, helpers_note), \
               cpu_user_ms = COALESCE($18, cpu_user_ms), cpu_system_ms = COALESCE($19, cpu_system_ms), \
               max_rss_bytes = COALESCE($20, max_rss_bytes), cgroup_cpu_ms = COALESCE($21, cgroup_cpu_ms), \
               cgroup_memory_peak_bytes = COALESCE($22, cgroup_memory_peak_bytes) \
             WHERE id = $12 AND attempt = $13 AND EXISTS (SELECT 1 FROM jobs j \
               WHERE j.id = executions.job_id AND j.lease_owner = $14 AND j.attempt = $13)",
        )
        .bind(update.status.map(ExecutionStatus::as_str))
        .bind(update.exit_code.map(i64::from))
        .bind(update.started_at)
        .bind(update.finished_at)
        .bind(update.setup_ms)
        .bind(update.run_ms)
        .bind(update.runner_version.as_deref())
        .bind(update.error.as_deref())
        .bind(output)
        .bind(update.mode.as_deref())
        .bind(update.note.as_deref())
        .bind(exec_id)
        .bind(i64::from(attempt))
        .bind(worker)
        .bind(update.condition.map(i64::from))
        .bind(update.helpers.as_deref())
        .bind(update.helpers_note.as_deref())
        .bind(update.usage.cpu_user_ms)
        .bind(update.usage.cpu_system_ms)
        .bind(update.usage.max_rss_bytes)
        .bind(update.usage.cgroup_cpu_ms)
        .bind(update.usage.cgroup_memory_peak_bytes)
        .execute(executor)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn get_execution(&self, exec_id: i64) -> Result<Option<ExecutionRow>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            execution_cols!(),
            " FROM executions WHERE id = $1"
        ))
        .bind(exec_id)
        .fetch_optional(&self.read)
        .await?;
        map_opt(row, execution_row)
    }

    /// A job's executions, in creation order (attempt by attempt).
    pub async fn list_executions(&self, job_id: i64) -> Result<Vec<ExecutionRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            execution_cols!(),
            " FROM executions WHERE job_id = $1 ORDER BY id"
        ))
        .bind(job_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(execution_row).collect()
    }
}
