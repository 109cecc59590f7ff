//! Retention: deleting old finished jobs with their executions and log lines in short steps, and
//! counting what such a deletion would remove (the dry run).
//!
//! The policy is the caller's: the server turns its `--retain` and the events' `retain`/`keep`
//! into one [`PruneRule`] per event (and one for the jobs of deleted events); the store only
//! applies a rule: the finished jobs of its scope that finished before its instant, except the
//! newest `keep` finished ones. Queued and running jobs are never touched.
//!
//! **Short steps.** One call of [`Store::prune_step`] is one write transaction that deletes at
//! most [`PruneLimits::jobs`] jobs and [`PruneLimits::log_lines`] log lines, so the single
//! SQLite writer (and PostgreSQL's row locks) are held for milliseconds and claims, heartbeats
//! and log appends proceed between steps. A job with more lines than a step may delete loses
//! its oldest lines first, over several steps, and its row goes last, in the step that deletes
//! its last lines: a job row never disappears while it still has log lines (nor executions).
//! A job whose deletion has begun is marked (`jobs.pruning`) and finished by the next step of
//! any rule, so a partly deleted job (already past its retention) never stays behind because
//! the policy changed in between.
//!
//! Not for deciding the policy (the server's retention loop) nor for reading the clock: every
//! instant is the caller's.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{Any, Transaction};

use crate::row::{i64_col, text};
use crate::{Store, StoreError};

/// Default of [`PruneLimits::jobs`].
pub const PRUNE_STEP_JOBS: i64 = 500;
/// Default of [`PruneLimits::log_lines`]: a few milliseconds of deleting on SQLite (BENCHMARKS.md).
pub const PRUNE_STEP_LOG_LINES: i64 = 2_000;

/// Which jobs a [`PruneRule`] covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PruneScope {
    /// The jobs of one event, by id.
    Event(i64),
    /// The jobs whose event was deleted (`event_id` NULL; they keep their `event_name`).
    DeletedEvents,
}

/// What may be deleted: the finished jobs of `scope` that finished before `finished_before`,
/// except the newest `keep` finished jobs of the scope (by finish time, then id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneRule {
    pub scope: PruneScope,
    /// Epoch ms; jobs that finished at or after it stay.
    pub finished_before: i64,
    /// Finished jobs kept whatever their age (0: none).
    pub keep: i64,
}

/// How much one [`Store::prune_step`] may delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneLimits {
    /// Jobs (1 to 10 000).
    pub jobs: i64,
    /// Log lines (1 to 1 000 000).
    pub log_lines: i64,
}

impl Default for PruneLimits {
    fn default() -> Self {
        PruneLimits {
            jobs: PRUNE_STEP_JOBS,
            log_lines: PRUNE_STEP_LOG_LINES,
        }
    }
}

/// Rows deleted, or that a dry run found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PruneCounts {
    pub jobs: u64,
    pub executions: u64,
    pub log_lines: u64,
}

impl PruneCounts {
    pub fn add(&mut self, other: &PruneCounts) {
        self.jobs += other.jobs;
        self.executions += other.executions;
        self.log_lines += other.log_lines;
    }

    pub fn is_empty(&self) -> bool {
        self.jobs == 0 && self.executions == 0 && self.log_lines == 0
    }
}

/// What one [`Store::prune_step`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PruneStep {
    /// Rows deleted, by event name. A job deleted over several steps counts once, in its last.
    pub by_event: BTreeMap<String, PruneCounts>,
    /// True while the rule (or a deletion begun earlier) has more to delete: call again.
    pub more: bool,
}

impl PruneStep {
    pub fn total(&self) -> PruneCounts {
        let mut t = PruneCounts::default();
        for c in self.by_event.values() {
            t.add(c);
        }
        t
    }
}

/// The jobs a rule selects, as SQL conditions on `jobs` and the values of their placeholders,
/// numbered from `$1`.
struct Selection {
    sql: String,
    binds: Vec<i64>,
}

impl Selection {
    fn scope(scope: PruneScope) -> Selection {
        // A node's job stays while its workflow run (or the top run of its tree) is going:
        // retry and explain read it.
        let base = "finished_at IS NOT NULL AND status NOT IN ('queued', 'running') \
            AND (node_run_id IS NULL OR NOT EXISTS (SELECT 1 FROM workflow_node_runs n \
            JOIN workflow_runs r ON r.id = n.run_id \
            LEFT JOIN workflow_runs t ON t.id = r.root_run_id \
            WHERE n.id = jobs.node_run_id \
            AND (r.status IN ('queued', 'running') OR t.status IN ('queued', 'running'))))";
        match scope {
            PruneScope::Event(id) => Selection {
                sql: format!("event_id = $1 AND {base}"),
                binds: vec![id],
            },
            PruneScope::DeletedEvents => Selection {
                sql: format!("event_id IS NULL AND {base}"),
                binds: vec![],
            },
        }
    }

    fn and(&mut self, condition: impl FnOnce(usize) -> String, values: &[i64]) {
        let next = self.binds.len() + 1;
        self.sql.push_str(" AND ");
        self.sql.push_str(&condition(next));
        self.binds.extend_from_slice(values);
    }

    fn query<'q>(
        &'q self,
        sql: &'q str,
    ) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
        let mut q = sqlx::query(sql);
        for v in &self.binds {
            q = q.bind(*v);
        }
        q
    }
}

fn check_rule(rule: &PruneRule) -> Result<(), StoreError> {
    if rule.keep < 0 {
        return Err(StoreError::Invalid(format!(
            "keep: must not be negative, got {}",
            rule.keep
        )));
    }
    Ok(())
}

/// The candidates of `rule`, oldest first: its scope, finished before its instant, and older
/// than the newest `keep` finished jobs. None when the scope has no more than `keep` finished
/// jobs (nothing may go).
async fn selection<'c, E>(exec: E, rule: &PruneRule) -> Result<Option<Selection>, StoreError>
where
    E: sqlx::Executor<'c, Database = Any>,
{
    let mut sel = Selection::scope(rule.scope);
    if rule.keep > 0 {
        // The keep-th newest finished job: everything strictly older than it may go.
        let newest = Selection::scope(rule.scope);
        let sql = format!(
            "SELECT finished_at, id FROM jobs WHERE {} ORDER BY finished_at DESC, id DESC LIMIT 1 OFFSET ${}",
            newest.sql,
            newest.binds.len() + 1
        );
        let row = newest
            .query(&sql)
            .bind(rule.keep - 1)
            .fetch_optional(exec)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let (at, id) = (i64_col(&row, "finished_at")?, i64_col(&row, "id")?);
        sel.and(
            |n| {
                format!(
                    "(finished_at < ${n} OR (finished_at = ${n} AND id < ${}))",
                    n + 1
                )
            },
            &[at, id],
        );
    }
    sel.and(|n| format!("finished_at < ${n}"), &[rule.finished_before]);
    Ok(Some(sel))
}

fn job_ref(row: &AnyRow) -> Result<(i64, String), StoreError> {
    Ok((i64_col(row, "id")?, text(row, "event_name")?))
}

impl Store {
    /// Deletes, in one short write transaction, what `rule` selects (oldest first) with its
    /// executions and log lines, within `limits`; deletions begun by earlier steps (of any rule)
    /// are finished first. Call again while the result says `more`.
    pub async fn prune_step(
        &self,
        rule: &PruneRule,
        limits: &PruneLimits,
    ) -> Result<PruneStep, StoreError> {
        check_rule(rule)?;
        if !(1..=10_000).contains(&limits.jobs) {
            return Err(StoreError::Invalid(format!(
                "limits.jobs: must be between 1 and 10000, got {}",
                limits.jobs
            )));
        }
        if !(1..=1_000_000).contains(&limits.log_lines) {
            return Err(StoreError::Invalid(format!(
                "limits.log_lines: must be between 1 and 1000000, got {}",
                limits.log_lines
            )));
        }
        let mut tx = self.begin_write().await?;
        let begun = sqlx::query(
            "SELECT id, event_name FROM jobs WHERE pruning = 1 \
             AND status NOT IN ('queued', 'running') ORDER BY id LIMIT $1",
        )
        .bind(limits.jobs)
        .fetch_all(&mut *tx)
        .await?;
        let mut jobs = begun.iter().map(job_ref).collect::<Result<Vec<_>, _>>()?;
        let room = limits.jobs - jobs.len() as i64;
        let mut full = room == 0;
        if room > 0 {
            if let Some(sel) = selection(&mut *tx, rule).await? {
                let sql = format!(
                    "SELECT id, event_name FROM jobs WHERE {} AND pruning = 0 \
                     ORDER BY finished_at, id LIMIT ${}",
                    sel.sql,
                    sel.binds.len() + 1
                );
                let rows = sel.query(&sql).bind(room).fetch_all(&mut *tx).await?;
                full = rows.len() as i64 == room;
                for row in &rows {
                    jobs.push(job_ref(row)?);
                }
            }
        }
        let mut step = PruneStep {
            more: full,
            ..Default::default()
        };
        let mut budget = limits.log_lines;
        for (id, event_name) in jobs {
            if budget == 0 {
                step.more = true;
                break;
            }
            let (counts, finished) = delete_job(&mut tx, id, budget).await?;
            budget -= counts.log_lines as i64;
            if !counts.is_empty() {
                step.by_event.entry(event_name).or_default().add(&counts);
            }
            if !finished {
                step.more = true;
                break;
            }
        }
        tx.commit().await?;
        Ok(step)
    }

    /// What pruning with `rules` (and finishing the deletions already begun) would delete, by
    /// event name, without deleting anything.
    pub async fn prune_preview(
        &self,
        rules: &[PruneRule],
    ) -> Result<BTreeMap<String, PruneCounts>, StoreError> {
        for rule in rules {
            check_rule(rule)?;
        }
        let mut out: BTreeMap<String, PruneCounts> = BTreeMap::new();
        let mut add = |rows: Vec<AnyRow>| -> Result<(), StoreError> {
            for row in &rows {
                let counts = PruneCounts {
                    jobs: count_col(row, "jobs")?,
                    executions: count_col(row, "executions")?,
                    log_lines: count_col(row, "log_lines")?,
                };
                out.entry(text(row, "event_name")?)
                    .or_default()
                    .add(&counts);
            }
            Ok(())
        };
        // Counted per job through the (job_id, ...) indexes of executions and logs; CAST because
        // PostgreSQL's SUM of BIGINT is NUMERIC.
        let counts = |condition: &str| {
            format!(
                "SELECT event_name, COUNT(*) AS jobs, \
                 CAST(COALESCE(SUM((SELECT COUNT(*) FROM executions e WHERE e.job_id = jobs.id)), 0) AS BIGINT) AS executions, \
                 CAST(COALESCE(SUM((SELECT COUNT(*) FROM logs l WHERE l.job_id = jobs.id)), 0) AS BIGINT) AS log_lines \
                 FROM jobs WHERE {condition} GROUP BY event_name"
            )
        };
        for rule in rules {
            if let Some(sel) = selection(&self.read, rule).await? {
                let sql = counts(&format!("{} AND pruning = 0", sel.sql));
                add(sel.query(&sql).fetch_all(&self.read).await?)?;
            }
        }
        let sql = counts("pruning = 1 AND status NOT IN ('queued', 'running')");
        add(sqlx::query(&sql).fetch_all(&self.read).await?)?;
        Ok(out)
    }
}

impl Store {
    /// Deletes, in one short write transaction, up to `limit` ended top workflow runs that
    /// finished before `finished_before` (epoch ms), each with its sub-runs and every node run
    /// of them, children first. Returns how many top runs went. Their jobs are the events'
    /// (pruned by their own rules); a run still going is never touched.
    pub async fn prune_workflow_runs_step(
        &self,
        finished_before: i64,
        limit: i64,
    ) -> Result<u64, StoreError> {
        if !(1..=10_000).contains(&limit) {
            return Err(StoreError::Invalid(format!(
                "limit: must be between 1 and 10000, got {limit}"
            )));
        }
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(
            "SELECT id FROM workflow_runs WHERE status IN \
             ('succeeded', 'failed', 'cancelled', 'timed_out') AND depth = 1 \
             AND finished_at IS NOT NULL AND finished_at < $1 ORDER BY id LIMIT $2",
        )
        .bind(finished_before)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let mut deleted = 0;
        for row in &rows {
            let id = i64_col(row, "id")?;
            sqlx::query(
                "DELETE FROM workflow_node_runs WHERE run_id IN \
                 (SELECT id FROM workflow_runs WHERE id = $1 OR root_run_id = $1)",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM workflow_runs WHERE root_run_id = $1 AND id <> $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            deleted += sqlx::query("DELETE FROM workflow_runs WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(deleted)
    }
}

fn count_col(row: &AnyRow, col: &str) -> Result<u64, StoreError> {
    let v = i64_col(row, col)?;
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{col} = {v} is negative")))
}

/// Deletes up to `budget` log lines of job `id`, oldest first, and, when none are left, its
/// executions and the job itself. Returns what went and whether the job is gone.
async fn delete_job(
    tx: &mut Transaction<'static, Any>,
    id: i64,
    budget: i64,
) -> Result<(PruneCounts, bool), StoreError> {
    // The first line beyond the budget: when there is one, the job keeps it and what follows.
    let cut = sqlx::query("SELECT seq FROM logs WHERE job_id = $1 ORDER BY seq LIMIT 1 OFFSET $2")
        .bind(id)
        .bind(budget)
        .fetch_optional(&mut **tx)
        .await?;
    if let Some(cut) = cut {
        let cut = i64_col(&cut, "seq")?;
        let lines = sqlx::query("DELETE FROM logs WHERE job_id = $1 AND seq < $2")
            .bind(id)
            .bind(cut)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        sqlx::query("UPDATE jobs SET pruning = 1 WHERE id = $1 AND pruning = 0")
            .bind(id)
            .execute(&mut **tx)
            .await?;
        let counts = PruneCounts {
            log_lines: lines,
            ..Default::default()
        };
        return Ok((counts, false));
    }
    // Children first and explicitly, so that no cascade deletes an unbounded number of rows.
    let log_lines = sqlx::query("DELETE FROM logs WHERE job_id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    sqlx::query("DELETE FROM variable_writes WHERE job_id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    let executions = sqlx::query("DELETE FROM executions WHERE job_id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    let jobs =
        sqlx::query("DELETE FROM jobs WHERE id = $1 AND status NOT IN ('queued', 'running')")
            .bind(id)
            .execute(&mut **tx)
            .await?
            .rows_affected();
    Ok((
        PruneCounts {
            jobs,
            executions,
            log_lines,
        },
        true,
    ))
}
