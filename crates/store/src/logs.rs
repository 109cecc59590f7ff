//! Log lines of jobs: batched appends (the hot path: up to 50 MB per job) and paged reads by
//! sequence number, which is what live viewers follow.
//!
//! Appends are fenced like every other write about a claimed job: a batch is stored only while
//! its worker still holds the job's running attempt, checked in the batch's own transaction.
//! Not for fan-out to viewers: the server notifies them after a batch is stored.

use std::sync::OnceLock;

use cronium_model::queue::NewLogLine;
use serde::Serialize;
use sqlx::any::AnyRow;

use crate::row::{i64_col, opt_i64, text};
use crate::store::map_opt;
use crate::{Backend, Store, StoreError};

/// Rows per INSERT: 6 parameters each stays far below both backends' parameter limits
/// (SQLite 32 766, PostgreSQL 65 535) while amortising the round trip.
const CHUNK_ROWS: usize = 1000;
const COLS: usize = 6;
/// Largest page [`Store::read_logs`] returns.
pub const MAX_READ_LIMIT: i64 = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    pub job_id: i64,
    pub execution_id: Option<i64>,
    pub seq: i64,
    pub stream: String,
    pub line: String,
    pub ts: i64,
}

fn log_line(row: &AnyRow) -> Result<LogLine, StoreError> {
    Ok(LogLine {
        job_id: i64_col(row, "job_id")?,
        execution_id: opt_i64(row, "execution_id")?,
        seq: i64_col(row, "seq")?,
        stream: text(row, "stream")?,
        line: text(row, "line")?,
        ts: i64_col(row, "ts")?,
    })
}

fn insert_sql(backend: Backend, rows: usize) -> String {
    let mut sql = String::with_capacity(80 + rows * 40);
    sql.push_str("INSERT INTO logs (job_id, execution_id, seq, stream, line, ts) VALUES ");
    for r in 0..rows {
        if r > 0 {
            sql.push(',');
        }
        match backend {
            // Anonymous `?` on SQLite: sqlite3_bind_parameter_name is a linear search, so binding
            // 3000 numbered parameters is quadratic (it took 70 % of the append time).
            Backend::Sqlite => sql.push_str("(?, ?, ?, ?, ?, ?)"),
            Backend::Postgres => {
                let b = r * COLS;
                sql.push_str(&format!(
                    "(${}, ${}, ${}, ${}, ${}, ${})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6
                ));
            }
        }
    }
    sql
}

fn full_chunk_sql(backend: Backend) -> &'static str {
    static SQLITE: OnceLock<String> = OnceLock::new();
    static POSTGRES: OnceLock<String> = OnceLock::new();
    match backend {
        Backend::Sqlite => SQLITE.get_or_init(|| insert_sql(backend, CHUNK_ROWS)),
        Backend::Postgres => POSTGRES.get_or_init(|| insert_sql(backend, CHUNK_ROWS)),
    }
}

impl Store {
    /// Stores `lines` for the running attempt `attempt` of a job that `worker` holds, in one
    /// transaction (all or nothing), with multi-row inserts. False (nothing written) when the
    /// worker no longer owns that running attempt: its lease expired and the job was recovered,
    /// re-claimed or finished. A `seq` already stored for the job is `Conflict("seq")`; seqs
    /// within one call must be positive and strictly increasing. NUL characters, which
    /// PostgreSQL text cannot hold, become U+FFFD on both backends. An empty `lines` writes
    /// nothing and is true.
    ///
    /// The fence and the insert share the transaction, and on PostgreSQL the job row is locked
    /// (`FOR SHARE`), so lease recovery, which updates that row, is ordered with the append: a
    /// batch either commits before the recovery (and the next owner, which reads
    /// [`Store::max_log_seq`] after claiming, numbers its lines after it) or is refused. On
    /// SQLite the write transaction holds the database lock, which orders them the same way.
    pub async fn append_logs(
        &self,
        job_id: i64,
        worker: &str,
        attempt: i32,
        lines: &[NewLogLine],
    ) -> Result<bool, StoreError> {
        if lines.is_empty() {
            return Ok(true);
        }
        let mut prev = 0;
        for (i, l) in lines.iter().enumerate() {
            if l.seq <= prev {
                return Err(StoreError::Invalid(format!(
                    "lines[{i}].seq: {} must be positive and greater than the previous line's ({prev})",
                    l.seq
                )));
            }
            prev = l.seq;
            if l.stream.is_empty() {
                return Err(StoreError::Invalid(format!(
                    "lines[{i}].stream: must not be empty"
                )));
            }
        }
        let mut tx = self.begin_write().await?;
        // One indexed row per batch (not per line), so the 50 MB path keeps its speed.
        let owned = sqlx::query(match self.backend {
            Backend::Sqlite => {
                "SELECT id FROM jobs WHERE id = $1 AND lease_owner = $2 AND attempt = $3 \
                 AND status = 'running'"
            }
            // FOR SHARE is enough: it conflicts with the UPDATE of recovery, claim and finish,
            // and waiting appends re-check the row as that UPDATE left it.
            Backend::Postgres => {
                "SELECT id FROM jobs WHERE id = $1 AND lease_owner = $2 AND attempt = $3 \
                 AND status = 'running' FOR SHARE"
            }
        })
        .bind(job_id)
        .bind(worker)
        .bind(i64::from(attempt))
        .fetch_optional(&mut *tx)
        .await?;
        if owned.is_none() {
            tx.rollback().await?;
            return Ok(false);
        }
        for chunk in lines.chunks(CHUNK_ROWS) {
            let partial_sql;
            let (sql, persistent) = if chunk.len() == CHUNK_ROWS {
                (full_chunk_sql(self.backend), true)
            } else {
                partial_sql = insert_sql(self.backend, chunk.len());
                // Odd-sized tails would churn the prepared-statement cache; run them unprepared.
                (partial_sql.as_str(), false)
            };
            let mut query = sqlx::query(sql).persistent(persistent);
            for l in chunk {
                let line = if l.line.contains('\0') {
                    l.line.replace('\0', "\u{FFFD}")
                } else {
                    l.line.clone()
                };
                query = query
                    .bind(job_id)
                    .bind(l.execution_id)
                    .bind(l.seq)
                    .bind(l.stream.as_str())
                    .bind(line)
                    .bind(l.ts);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Up to `limit` lines of a job with `seq > after_seq`, in order. Follow a job by passing
    /// the last seq received.
    pub async fn read_logs(
        &self,
        job_id: i64,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<LogLine>, StoreError> {
        if !(1..=MAX_READ_LIMIT).contains(&limit) {
            return Err(StoreError::Invalid(format!(
                "limit: must be between 1 and {MAX_READ_LIMIT}, got {limit}"
            )));
        }
        let rows = sqlx::query(
            "SELECT job_id, execution_id, seq, stream, line, ts FROM logs \
             WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(job_id)
        .bind(after_seq)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(log_line).collect()
    }

    /// Up to `limit` lines of a job with `seq < before`, the last ones before it, in order:
    /// how a viewer opens a big log at its tail and loads older lines on demand.
    pub async fn read_logs_before(
        &self,
        job_id: i64,
        before_seq: i64,
        limit: i64,
    ) -> Result<Vec<LogLine>, StoreError> {
        if !(1..=MAX_READ_LIMIT).contains(&limit) {
            return Err(StoreError::Invalid(format!(
                "limit: must be between 1 and {MAX_READ_LIMIT}, got {limit}"
            )));
        }
        let rows = sqlx::query(
            "SELECT job_id, execution_id, seq, stream, line, ts FROM logs \
             WHERE job_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
        )
        .bind(job_id)
        .bind(before_seq)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        let mut lines = rows.iter().map(log_line).collect::<Result<Vec<_>, _>>()?;
        lines.reverse();
        Ok(lines)
    }

    /// Highest stored seq of a job, 0 when it has no lines (where a new owner continues).
    pub async fn max_log_seq(&self, job_id: i64) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT seq FROM logs WHERE job_id = $1 ORDER BY seq DESC LIMIT 1")
            .bind(job_id)
            .fetch_optional(&self.read)
            .await?;
        Ok(map_opt(row, |r| i64_col(r, "seq"))?.unwrap_or(0))
    }
}
