//! Bulk history for benchmarks: finished jobs with one execution each and their log lines,
//! written with `INSERT ... SELECT` over a counter (one SQL text on both backends), so that a
//! benchmark can stand on 100 000 jobs and 10 million lines in minutes rather than hours.
//!
//! Not for anything but seeding an empty installation: it writes final rows directly, with
//! none of the queue's fences or policies.

use crate::row::i64_col;
use crate::{Store, StoreError};

/// What [`Store::seed_history`] writes.
#[derive(Debug, Clone)]
pub struct SeedHistory {
    /// Finished jobs, spread over `events` (ids `first_event_id ..`, `events` of them, in
    /// a fresh database consecutive). Status by job: 70 % succeeded, 15 % failed, 5 % each
    /// timed_out, cancelled and partial; a third fired by the schedule; a quarter on servers
    /// `web0`..`web7`.
    pub jobs: i64,
    pub first_event_id: i64,
    pub events: i64,
    /// Log lines of each job (about 60 bytes each).
    pub lines_per_job: i64,
    /// Jobs per statement (and so per transaction).
    pub chunk: i64,
    /// The time of the oldest job (epoch ms); each later one a second after.
    pub start_ms: i64,
}

/// What [`Store::seed_workflow_runs`] writes.
#[derive(Debug, Clone)]
pub struct SeedWorkflowRuns {
    /// A workflow applied normally (its version's graph is stored).
    pub workflow_id: i64,
    pub workflow_name: String,
    pub version: i64,
    /// Its node ids, in file order.
    pub nodes: Vec<String>,
    pub runs: i64,
    /// The node runs' jobs: among `jobs` seeded jobs from `first_job_id`.
    pub first_job_id: i64,
    pub jobs: i64,
    /// Runs per statement.
    pub chunk: i64,
    /// The time of the oldest run (epoch ms); each later one a second after.
    pub start_ms: i64,
}

const COUNTER: &str =
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1) ";

impl Store {
    /// Writes the history `s` describes; returns the id range of the jobs it wrote.
    pub async fn seed_history(&self, s: &SeedHistory) -> Result<(i64, i64), StoreError> {
        let before = self.max_job_id().await?;
        let mut done = 0;
        while done < s.jobs {
            let n = s.chunk.min(s.jobs - done);
            let sql = format!(
                "{COUNTER}INSERT INTO jobs (event_id, event_name, event_version, trigger_kind, status, input, output, \
                 exit_code, attempt, max_attempts, backoff_ms, max_backoff_ms, run_at, scheduled_for, timeout_ms, \
                 created_at, started_at, finished_at, notified) \
                 SELECT $2 + ((n.i + $3) % $4), 'bench-' || ((n.i + $3) % $4), 1, \
                 CASE WHEN (n.i + $3) % 3 = 0 THEN 'schedule' ELSE 'manual' END, \
                 CASE WHEN (n.i + $3) % 20 < 14 THEN 'succeeded' WHEN (n.i + $3) % 20 < 17 THEN 'failed' \
                      WHEN (n.i + $3) % 20 = 17 THEN 'timed_out' WHEN (n.i + $3) % 20 = 18 THEN 'cancelled' ELSE 'partial' END, \
                 '{{}}', '{{\"n\": 1}}', \
                 CASE WHEN (n.i + $3) % 20 < 14 THEN 0 ELSE 1 END, 1, 1, 1000, 60000, \
                 $5 + (n.i + $3) * 1000, CASE WHEN (n.i + $3) % 3 = 0 THEN $5 + (n.i + $3) * 1000 ELSE NULL END, 60000, \
                 $5 + (n.i + $3) * 1000, $5 + (n.i + $3) * 1000 + 5, $5 + (n.i + $3) * 1000 + 250, 1 FROM n"
            );
            let mut tx = self.begin_write().await?;
            sqlx::query(&sql)
                .bind(n)
                .bind(s.first_event_id)
                .bind(done)
                .bind(s.events)
                .bind(s.start_ms)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            done += n;
        }
        let after = self.max_job_id().await?;
        let (first, last) = (before + 1, after);
        let mut from = first;
        while from <= last {
            let to = (from + s.chunk - 1).min(last);
            let mut tx = self.begin_write().await?;
            sqlx::query(
                "INSERT INTO executions (job_id, attempt, server, status, exit_code, started_at, finished_at, \
                 setup_ms, run_ms, runner_version, output, created_at) \
                 SELECT id, 1, CASE WHEN id % 4 = 0 THEN 'web' || ((id / 4) % 8) ELSE NULL END, \
                 CASE WHEN status = 'partial' THEN 'failed' ELSE status END, exit_code, started_at, finished_at, \
                 3, 240, '0.1.0', output, created_at FROM jobs WHERE id BETWEEN $1 AND $2",
            )
            .bind(from)
            .bind(to)
            .execute(&mut *tx)
            .await?;
            if s.lines_per_job > 0 {
                let sql = format!(
                    "{COUNTER}INSERT INTO logs (job_id, execution_id, seq, stream, line, ts) \
                     SELECT x.job_id, x.id, n.i, CASE WHEN n.i % 10 = 0 THEN 'stderr' ELSE 'stdout' END, \
                     'line ' || n.i || ' of job ' || x.job_id || ': the quick brown fox jumps', x.started_at + n.i \
                     FROM executions x, n WHERE x.job_id BETWEEN $2 AND $3"
                );
                sqlx::query(&sql)
                    .bind(s.lines_per_job)
                    .bind(from)
                    .bind(to)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            from = to + 1;
        }
        Ok((first, last))
    }

    /// Appends `lines` lines of `bytes` bytes each to job `job_id`'s log after its last seq,
    /// `chunk` per transaction: a big log for a benchmark.
    pub async fn seed_log(
        &self,
        job_id: i64,
        lines: i64,
        bytes: usize,
        chunk: i64,
    ) -> Result<(), StoreError> {
        let pad = "x".repeat(bytes.saturating_sub(20));
        let mut done = self.max_log_seq(job_id).await?;
        let end = done + lines;
        while done < end {
            let n = chunk.min(end - done);
            let sql = format!(
                "{COUNTER}INSERT INTO logs (job_id, execution_id, seq, stream, line, ts) \
                 SELECT $2, NULL, $3 + n.i, 'stdout', 'line ' || ($3 + n.i) || ' ' || $4, $5 + n.i FROM n"
            );
            let mut tx = self.begin_write().await?;
            sqlx::query(&sql)
                .bind(n)
                .bind(job_id)
                .bind(done)
                .bind(pad.as_str())
                .bind(done)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            done += n;
        }
        Ok(())
    }

    /// Writes `s.runs` ended runs of a workflow version whose graph is stored, each with a
    /// node run per node (in `s.nodes`' order) pointing at one of the seeded jobs: the
    /// history a workflow's pages stand on in a benchmark. Every fifth run failed at its last
    /// node. Returns the id range of the runs.
    pub async fn seed_workflow_runs(&self, s: &SeedWorkflowRuns) -> Result<(i64, i64), StoreError> {
        let before = self.max_workflow_run_id().await?;
        let mut done = 0;
        while done < s.runs {
            let n = s.chunk.min(s.runs - done);
            let sql = format!(
                "{COUNTER}INSERT INTO workflow_runs (workflow_id, workflow_name, workflow_version, trigger_kind, \
                 status, input, output, attempt, depth, serial, created_at, started_at, finished_at) \
                 SELECT $2, $3, $4, CASE WHEN (n.i + $5) % 3 = 0 THEN 'schedule' ELSE 'manual' END, \
                 CASE WHEN (n.i + $5) % 5 = 0 THEN 'failed' ELSE 'succeeded' END, '{{\"version\": \"1.4\"}}', '{{}}', \
                 1, 1, 0, $6 + (n.i + $5) * 1000, $6 + (n.i + $5) * 1000 + 5, $6 + (n.i + $5) * 1000 + 900 FROM n"
            );
            let mut tx = self.begin_write().await?;
            sqlx::query(&sql)
                .bind(n)
                .bind(s.workflow_id)
                .bind(s.workflow_name.as_str())
                .bind(s.version)
                .bind(done)
                .bind(s.start_ms)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            done += n;
        }
        let (first, last) = (before + 1, self.max_workflow_run_id().await?);
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE workflow_runs SET root_run_id = id WHERE id BETWEEN $1 AND $2")
            .bind(first)
            .bind(last)
            .execute(&mut *tx)
            .await?;
        let count = s.nodes.len() as i64;
        for (pos, node) in s.nodes.iter().enumerate() {
            // Only our own numbers are written into the text; the node id is a parameter.
            let status = if pos + 1 == s.nodes.len() {
                "CASE WHEN r.status = 'failed' THEN 'failed' ELSE 'succeeded' END"
            } else {
                "'succeeded'"
            };
            let sql = format!(
                "INSERT INTO workflow_node_runs (run_id, node_id, position, kind, status, job_id, input, \
                 output, reason, started_at, finished_at) \
                 SELECT r.id, $5, {pos}, 'event', {status}, $1 + ((r.id * {count} + {pos}) % $2), '{{}}', \
                 '{{}}', 'ran: no upstream node', r.started_at + {pos} * 60, r.started_at + {pos} * 60 + 50 \
                 FROM workflow_runs r WHERE r.id BETWEEN $3 AND $4"
            );
            sqlx::query(&sql)
                .bind(s.first_job_id)
                .bind(s.jobs.max(1))
                .bind(first)
                .bind(last)
                .bind(node.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok((first, last))
    }

    async fn max_workflow_run_id(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT id FROM workflow_runs ORDER BY id DESC LIMIT 1")
            .fetch_optional(&self.read)
            .await?;
        Ok(crate::store::map_opt(row, |r| i64_col(r, "id"))?.unwrap_or(0))
    }

    /// Updates the planner's statistics after a bulk load (`ANALYZE`; on PostgreSQL
    /// `VACUUM ANALYZE`, so that autovacuum does not start on the fresh rows mid-measurement).
    pub async fn settle_after_seed(&self) -> Result<(), StoreError> {
        let sql = match self.backend {
            crate::Backend::Sqlite => "ANALYZE",
            crate::Backend::Postgres => {
                "VACUUM ANALYZE jobs, executions, logs, events, workflow_runs, workflow_node_runs"
            }
        };
        sqlx::query(sql).execute(&self.write).await?;
        Ok(())
    }

    async fn max_job_id(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT id FROM jobs ORDER BY id DESC LIMIT 1")
            .fetch_optional(&self.read)
            .await?;
        Ok(crate::store::map_opt(row, |r| i64_col(r, "id"))?.unwrap_or(0))
    }
}
