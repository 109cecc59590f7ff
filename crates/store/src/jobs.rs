//! The job queue: enqueue, claim with a lease, heartbeat, finish, retry, cancel, recover the jobs
//! of vanished workers, and the queries the UI and the scheduler need.
//!
//! Every state change a worker makes is fenced by `(lease_owner, attempt)`: "no row updated"
//! means the worker lost its lease and must stop. Retry policy (attempts, backoff) is data on the
//! row, so recovery on any server applies the same policy. Not for executing anything.
//!
//! A job of a workflow node (`node_run_id` set) ends through the same calls, but in a
//! transaction that first locks the node's run tree and then lets the workflow progress
//! (`progression::job_ended`): every path that puts such a job in a final state (`finish`,
//! `retry_later` when a cancel was pending, `cancel` of a queued job, `recover_expired` when it
//! fails or cancels the job) decides the node's successors in the commit that ended it. Jobs
//! without a node keep their single-statement paths.

use cronium_model::{Capability, Claimant, ExecutionStatus, JobStatus, Routing, Trigger};
use serde::Serialize;
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::AnyConnection;

use crate::events::pause_event;
use crate::executions::NewExecution;
use crate::progression::{job_ended, lock_job_tree};
use crate::row::{
    bool_col, bool_int, i32_col, i64_col, json, opt_i32, opt_i64, opt_text, text, to_json, word,
};
use crate::store::map_opt;
use crate::{Backend, Store, StoreError};
use cronium_model::backoff::{backoff_delay, row_jitter};
use cronium_model::queue::{HandedOff, Heartbeat, JobOutcome, JobRow};

/// Error recorded on a job whose worker stopped renewing its lease.
pub const WORKER_LOST: &str = "worker lost";

/// How many serial-job races a claim retries before reporting "nothing to claim".
const CLAIM_RETRIES: usize = 5;
/// Upper bound on jobs recovered per call, so one call stays short.
const RECOVER_BATCH: i64 = 500;

/// A job to enqueue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub event_id: Option<i64>,
    pub event_name: String,
    pub event_version: i64,
    /// What asked for the run.
    pub trigger: Trigger,
    pub input: Value,
    /// Not claimable before this instant.
    pub run_at: i64,
    /// Total attempts allowed (1 = no retry).
    pub max_attempts: i32,
    /// First retry delay; doubles per attempt up to `max_backoff_ms`.
    pub backoff_ms: i64,
    pub max_backoff_ms: i64,
    /// Never run while another job of the same event is running (overlap: queue).
    pub serial: bool,
    /// The schedule tick this job was fired for; at most one job per (event, tick).
    pub scheduled_for: Option<i64>,
    pub timeout_ms: i64,
    /// The event's `max_executions` (0 = no limit): at most this many jobs are ever created for
    /// `event_id`. Checked, and the event paused when reached, in the insert's transaction.
    pub max_executions: i64,
    /// Who may claim it: the capability its target needs and the agent tags it asks for.
    pub routing: Routing,
}

/// Filter for [`Store::list_jobs`]; all conditions are ANDed. Results are newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobFilter {
    pub event_name: Option<String>,
    pub event_id: Option<i64>,
    pub status: Option<JobStatus>,
    /// Default 100, at most 10 000.
    pub limit: Option<i64>,
    /// Only jobs with a smaller id (the last id of the previous page).
    pub before_id: Option<i64>,
    pub trigger: Option<Trigger>,
    /// Only jobs with an execution on this server.
    pub server: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum CancelResult {
    /// It was queued; it is now cancelled and will never run.
    Cancelled,
    /// It is running; its worker sees `cancel_requested` on its next heartbeat.
    Requested,
    /// It had already ended with this status.
    AlreadyFinished(JobStatus),
    NotFound,
}

/// A running job whose lease expired, as handled by [`Store::recover_expired`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecoveredJob {
    pub job_id: i64,
    /// The attempt that was lost.
    pub attempt: i32,
    /// The worker that held the lease.
    pub worker: Option<String>,
    /// `queued` (will be retried), `failed` (attempts used up) or `cancelled` (a cancel was
    /// pending).
    pub status: JobStatus,
    /// When it becomes claimable again, for `queued`.
    pub run_at: Option<i64>,
}

macro_rules! job_cols {
    () => {
        "id, event_id, event_name, event_version, trigger_kind, status, input, output, exit_code, \
         error, attempt, max_attempts, backoff_ms, max_backoff_ms, run_at, scheduled_for, serial, \
         timeout_ms, lease_owner, lease_expires_at, cancel_requested, created_at, started_at, \
         finished_at, node_run_id, overrides, capability, agent_tags"
    };
}

pub(crate) fn job_row(row: &AnyRow) -> Result<JobRow, StoreError> {
    Ok(JobRow {
        id: i64_col(row, "id")?,
        event_id: opt_i64(row, "event_id")?,
        event_name: text(row, "event_name")?,
        event_version: i64_col(row, "event_version")?,
        trigger: word(row, "trigger_kind")?,
        status: word(row, "status")?,
        input: json(row, "input")?,
        output: json(row, "output")?,
        exit_code: opt_i32(row, "exit_code")?,
        error: opt_text(row, "error")?,
        attempt: i32_col(row, "attempt")?,
        max_attempts: i32_col(row, "max_attempts")?,
        backoff_ms: i64_col(row, "backoff_ms")?,
        max_backoff_ms: i64_col(row, "max_backoff_ms")?,
        run_at: i64_col(row, "run_at")?,
        scheduled_for: opt_i64(row, "scheduled_for")?,
        serial: bool_col(row, "serial")?,
        timeout_ms: i64_col(row, "timeout_ms")?,
        lease_owner: opt_text(row, "lease_owner")?,
        lease_expires_at: opt_i64(row, "lease_expires_at")?,
        cancel_requested: bool_col(row, "cancel_requested")?,
        created_at: i64_col(row, "created_at")?,
        started_at: opt_i64(row, "started_at")?,
        finished_at: opt_i64(row, "finished_at")?,
        node_run_id: opt_i64(row, "node_run_id")?,
        overrides: json(row, "overrides")?,
        capability: opt_text(row, "capability")?
            .map(|c| {
                c.parse()
                    .map_err(|e| StoreError::Corrupt(format!("column capability: {e}")))
            })
            .transpose()?,
        agent_tags: tag_list(row)?,
    })
}

/// `jobs.agent_tags`: NULL (no tags) or a JSON array of strings.
fn tag_list(row: &AnyRow) -> Result<Vec<String>, StoreError> {
    match json(row, "agent_tags")? {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                other => Err(StoreError::Corrupt(format!(
                    "jobs.agent_tags: {other} is not a string"
                ))),
            })
            .collect(),
        other => Err(StoreError::Corrupt(format!(
            "jobs.agent_tags: {other} is not an array"
        ))),
    }
}

/// What `jobs.agent_tags` keeps: NULL for none (so that the claim never reads JSON for an
/// untagged job), else the tags as a JSON array, sorted and without repeats.
pub(crate) fn tags_column(tags: &[String]) -> Result<Option<String>, StoreError> {
    if tags.is_empty() {
        return Ok(None);
    }
    let mut tags = tags.to_vec();
    tags.sort();
    tags.dedup();
    to_json(
        "agent_tags",
        &Value::Array(tags.into_iter().map(Value::String).collect()),
    )
    .map(Some)
}

pub(crate) fn validate_new_job(job: &NewJob) -> Result<(), StoreError> {
    let invalid = |m: String| Err(StoreError::Invalid(m));
    if job.event_name.trim().is_empty() {
        return invalid("event_name: must not be empty".into());
    }
    if job.max_attempts < 1 {
        return invalid(format!(
            "max_attempts: must be at least 1, got {}",
            job.max_attempts
        ));
    }
    if job.backoff_ms < 0 {
        return invalid(format!(
            "backoff_ms: must not be negative, got {}",
            job.backoff_ms
        ));
    }
    if job.max_backoff_ms < 0 {
        return invalid(format!(
            "max_backoff_ms: must not be negative, got {}",
            job.max_backoff_ms
        ));
    }
    if job.timeout_ms < 0 {
        return invalid(format!(
            "timeout_ms: must not be negative, got {}",
            job.timeout_ms
        ));
    }
    if job.max_executions < 0 {
        return invalid(format!(
            "max_executions: must not be negative, got {}",
            job.max_executions
        ));
    }
    if let Some((i, _)) = job
        .routing
        .agent_tags
        .iter()
        .enumerate()
        .find(|(_, t)| t.trim().is_empty())
    {
        return invalid(format!("agent_tags[{i}]: must not be empty"));
    }
    Ok(())
}

/// What an event's `max_executions` allows for one more job.
pub(crate) enum Limit {
    /// No limit, or not an event's job.
    Unlimited,
    /// The job may be created; `last` when it is the one that reaches the limit.
    Allows { last: bool },
    /// The event already has `limit` jobs.
    Reached { limit: i64 },
}

/// Counts the event's jobs against `job.max_executions`, inside the insert's transaction and
/// after locking the event row (`for_update`, PostgreSQL; SQLite's write transaction already
/// holds the database), so that concurrent inserts at the limit are serialised: the second one
/// counts the first one's job and cannot also pass.
pub(crate) async fn check_limit(
    conn: &mut AnyConnection,
    for_update: &str,
    job: &NewJob,
) -> Result<Limit, StoreError> {
    let (Some(event_id), limit) = (job.event_id, job.max_executions) else {
        return Ok(Limit::Unlimited);
    };
    if limit == 0 {
        return Ok(Limit::Unlimited);
    }
    let event = sqlx::query(&format!("SELECT id FROM events WHERE id = $1{for_update}"))
        .bind(event_id)
        .fetch_optional(&mut *conn)
        .await?;
    if event.is_none() {
        return Err(StoreError::NotFound(format!("event {event_id}")));
    }
    let row = sqlx::query("SELECT COUNT(*) AS n FROM jobs WHERE event_id = $1")
        .bind(event_id)
        .fetch_one(&mut *conn)
        .await?;
    let count = i64_col(&row, "n")?;
    Ok(if count >= limit {
        Limit::Reached { limit }
    } else {
        Limit::Allows {
            last: count + 1 >= limit,
        }
    })
}

/// The capability test of a claim (`$4`..`$6`: the claimant's capabilities, padded): a job
/// from before routing (NULL) is anyone's.
/// What every claim sets on the row it takes ($1 worker, $2 lease end, $3 now).
macro_rules! claim_set {
    () => {
        "UPDATE jobs SET status = 'running', attempt = attempt + 1, lease_owner = $1, \
         lease_expires_at = $2, started_at = COALESCE(started_at, $3) "
    };
}

/// Every one of the job's `agent_tags` among the claimant's ($7, a JSON array); an untagged
/// job costs the NULL test only.
macro_rules! tags_filter_sqlite {
    () => {
        "AND (j.agent_tags IS NULL OR NOT EXISTS (SELECT 1 FROM json_each(j.agent_tags) t \
         WHERE t.value NOT IN (SELECT a.value FROM json_each($7) a))) "
    };
}

macro_rules! tags_filter_postgres {
    () => {
        "AND (j.agent_tags IS NULL OR CAST(j.agent_tags AS jsonb) <@ CAST($7 AS jsonb)) "
    };
}

macro_rules! routing_filter {
    () => {
        "AND (j.capability IS NULL OR j.capability IN ($4, $5, $6)) "
    };
}

/// A claimant as claim parameters: three capability words (padded with the first, or with a
/// word no job has when it has none) and its tags as a JSON array.
fn claimant_params(claimant: &Claimant) -> Result<([&'static str; 3], String), StoreError> {
    let mut caps = ["none"; 3];
    let mut words: Vec<&'static str> = claimant.capabilities.iter().map(|c| c.as_str()).collect();
    words.sort();
    words.dedup();
    for (i, slot) in caps.iter_mut().enumerate() {
        if let Some(w) = words.get(i).or(words.first()) {
            *slot = w;
        }
    }
    let tags = to_json(
        "tags",
        &Value::Array(claimant.tags.iter().cloned().map(Value::String).collect()),
    )?;
    Ok((caps, tags))
}

fn check_lease(worker: &str, lease_ms: i64) -> Result<(), StoreError> {
    if worker.is_empty() {
        return Err(StoreError::Invalid("worker: must not be empty".into()));
    }
    if lease_ms <= 0 {
        return Err(StoreError::Invalid(format!(
            "lease_ms: must be positive, got {lease_ms}"
        )));
    }
    Ok(())
}

/// What makes a job a workflow node's: the node run, and the node's overrides of its event.
/// Without a node run: a job with overrides of its own (a retry of a fan-out's failed servers).
pub(crate) struct NodeLink<'a> {
    pub node_run_id: Option<i64>,
    pub overrides: &'a Value,
}

/// Inserts a queued job. With `skip_duplicate_tick`, a job for an (event, tick) that already has
/// one is not inserted and `None` is returned; otherwise that is `Conflict("scheduled_for")`.
pub(crate) async fn insert_job(
    conn: &mut AnyConnection,
    job: &NewJob,
    node: Option<NodeLink<'_>>,
    now: i64,
    skip_duplicate_tick: bool,
) -> Result<Option<JobRow>, StoreError> {
    const INSERT: &str = concat!(
        "INSERT INTO jobs (event_id, event_name, event_version, trigger_kind, status, input, run_at, ",
        "max_attempts, backoff_ms, max_backoff_ms, serial, scheduled_for, timeout_ms, created_at, ",
        "node_run_id, overrides, capability, agent_tags) ",
        "VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) RETURNING ",
        job_cols!()
    );
    const INSERT_SKIP: &str = concat!(
        "INSERT INTO jobs (event_id, event_name, event_version, trigger_kind, status, input, run_at, ",
        "max_attempts, backoff_ms, max_backoff_ms, serial, scheduled_for, timeout_ms, created_at, ",
        "node_run_id, overrides, capability, agent_tags) ",
        "VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) ",
        "ON CONFLICT (event_id, scheduled_for) DO NOTHING RETURNING ",
        job_cols!()
    );
    let input = to_json("input", &job.input)?;
    let overrides = match &node {
        Some(n) if !n.overrides.is_null() => Some(to_json("overrides", n.overrides)?),
        _ => None,
    };
    let row = sqlx::query(if skip_duplicate_tick {
        INSERT_SKIP
    } else {
        INSERT
    })
    .bind(job.event_id)
    .bind(job.event_name.as_str())
    .bind(job.event_version)
    .bind(job.trigger.as_str())
    .bind(input)
    .bind(job.run_at)
    .bind(i64::from(job.max_attempts))
    .bind(job.backoff_ms)
    .bind(job.max_backoff_ms)
    .bind(bool_int(job.serial))
    .bind(job.scheduled_for)
    .bind(job.timeout_ms)
    .bind(now)
    .bind(node.as_ref().and_then(|n| n.node_run_id))
    .bind(overrides)
    .bind(job.routing.capability.as_str())
    .bind(tags_column(&job.routing.agent_tags)?)
    .fetch_optional(conn)
    .await?;
    map_opt(row, job_row)
}

/// What [`Store::finish_attempt`] writes: the attempt (job, worker, attempt number), whether
/// the job is a node's (`node_run_id` of the claimed row), its executions' final updates and
/// the job's outcome.
#[derive(Debug, Clone, Copy)]
pub struct AttemptEnd<'a> {
    pub job_id: i64,
    pub worker: &'a str,
    pub attempt: i32,
    pub node_run_id: Option<i64>,
    pub executions: &'a [(i64, crate::ExecutionUpdate)],
    pub outcome: &'a JobOutcome,
}

/// An attempt's end: the job's outcome, fenced by its lease (`$6` id, `$7` worker, `$8`
/// attempt).
const FINISH: &str = "UPDATE jobs SET status = $1, exit_code = $2, output = $3, error = $4, \
     finished_at = $5, lease_expires_at = NULL \
     WHERE id = $6 AND lease_owner = $7 AND attempt = $8 AND status = 'running'";

/// [`FINISH`] (with whatever `sql` appends to it) bound to `outcome`, its serialised `output`
/// and the attempt `(job id, worker, attempt)`.
fn finish_query<'q>(
    sql: &'q str,
    outcome: &'q JobOutcome,
    output: &'q str,
    now: i64,
    (job_id, worker, attempt): (i64, &'q str, i32),
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    sqlx::query(sql)
        .bind(outcome.status.as_str())
        .bind(outcome.exit_code.map(i64::from))
        .bind(output)
        .bind(outcome.error.as_deref())
        .bind(now)
        .bind(job_id)
        .bind(worker)
        .bind(i64::from(attempt))
}

fn check_final(outcome: &JobOutcome) -> Result<(), StoreError> {
    if outcome.status.is_final() {
        return Ok(());
    }
    let finals: Vec<&str> = JobStatus::FINAL.iter().map(|s| s.as_str()).collect();
    Err(StoreError::Invalid(format!(
        "status: `{}` is not a final status; expected one of {}",
        outcome.status,
        finals.join(", ")
    )))
}

impl Store {
    /// Adds a queued job, claimable from `job.run_at`.
    ///
    /// With `job.max_executions`, in one transaction: refused with
    /// [`StoreError::LimitReached`] when the event already has that many jobs (the event is
    /// paused, if it was active), and the event is paused (status `paused`, no next fire) when
    /// this job reaches the limit.
    pub async fn enqueue(&self, job: &NewJob, now: i64) -> Result<JobRow, StoreError> {
        self.enqueue_with_overrides(job, &Value::Null, now).await
    }

    /// As [`Store::enqueue`], the job carrying `overrides` of its event spec (read by the agent
    /// with `cronium_core::workflow::NodeOverrides`; Null: none), as a retry of a fan-out's
    /// failed servers narrows the target.
    pub async fn enqueue_with_overrides(
        &self,
        job: &NewJob,
        overrides: &Value,
        now: i64,
    ) -> Result<JobRow, StoreError> {
        validate_new_job(job)?;
        let link = || {
            (!overrides.is_null()).then_some(NodeLink {
                node_run_id: None,
                overrides,
            })
        };
        let duplicate = || StoreError::Conflict("scheduled_for".into());
        let mut tx = match (job.event_id, job.max_executions) {
            (Some(_), limit) if limit > 0 => self.begin_write().await?,
            // No limit: one statement, no transaction (the common, fast path).
            _ => {
                let mut conn = self.write.acquire().await?;
                return insert_job(&mut conn, job, link(), now, false)
                    .await?
                    .ok_or_else(duplicate);
            }
        };
        let last = match check_limit(&mut tx, self.for_update(), job).await? {
            Limit::Unlimited => false,
            Limit::Allows { last } => last,
            Limit::Reached { limit } => {
                if let Some(event_id) = job.event_id {
                    pause_event(&mut tx, event_id, now).await?;
                }
                tx.commit().await?;
                return Err(StoreError::LimitReached {
                    event: job.event_name.clone(),
                    limit,
                });
            }
        };
        let row = insert_job(&mut tx, job, link(), now, false)
            .await?
            .ok_or_else(duplicate)?;
        if let (true, Some(event_id)) = (last, job.event_id) {
            pause_event(&mut tx, event_id, now).await?;
        }
        tx.commit().await?;
        Ok(row)
    }

    /// Claims the oldest due queued job (by `run_at`, then id) for `worker`, in one statement:
    /// status `running`, `attempt + 1`, lease until `now + lease_ms`. Serial jobs whose event
    /// already has a running job are passed over. `None` when nothing is claimable. As
    /// [`Store::claim_as`] with [`Claimant::untagged`]: any job without `agent_tags`.
    pub async fn claim(
        &self,
        worker: &str,
        lease_ms: i64,
        now: i64,
    ) -> Result<Option<JobRow>, StoreError> {
        self.claim_as(worker, &Claimant::untagged(), lease_ms, now)
            .await
    }

    /// As [`Store::claim`], for a claimant that takes only the jobs it can run: a job's
    /// capability must be one of `claimant.capabilities` (a job from before routing, with none,
    /// is anyone's), and every one of its `agent_tags` one of `claimant.tags`. The filter is
    /// part of the one claim statement; an untagged job costs one NULL test, never a JSON read.
    pub async fn claim_as(
        &self,
        worker: &str,
        claimant: &Claimant,
        lease_ms: i64,
        now: i64,
    ) -> Result<Option<JobRow>, StoreError> {
        check_lease(worker, lease_ms)?;
        const CLAIM_SQLITE: &str = concat!(
            claim_set!(),
            "WHERE id = (SELECT j.id FROM jobs j WHERE j.status = 'queued' AND j.run_at <= $3 ",
            "AND (j.serial = 0 OR NOT EXISTS (SELECT 1 FROM jobs r WHERE r.event_id = j.event_id AND r.status = 'running')) ",
            routing_filter!(),
            tags_filter_sqlite!(),
            "ORDER BY j.run_at, j.id LIMIT 1) ",
            "RETURNING ",
            job_cols!()
        );
        // SKIP LOCKED: concurrent claimers take different rows instead of queueing on one.
        const CLAIM_POSTGRES: &str = concat!(
            claim_set!(),
            "WHERE id = (SELECT j.id FROM jobs j WHERE j.status = 'queued' AND j.run_at <= $3 ",
            "AND (j.serial = 0 OR NOT EXISTS (SELECT 1 FROM jobs r WHERE r.event_id = j.event_id AND r.status = 'running')) ",
            routing_filter!(),
            tags_filter_postgres!(),
            "ORDER BY j.run_at, j.id LIMIT 1 FOR UPDATE OF j SKIP LOCKED) AND status = 'queued' ",
            "RETURNING ",
            job_cols!()
        );
        let (caps, tags) = claimant_params(claimant)?;
        let sql = match self.backend {
            Backend::Sqlite => CLAIM_SQLITE,
            Backend::Postgres => CLAIM_POSTGRES,
        };
        for _ in 0..CLAIM_RETRIES {
            let claimed = sqlx::query(sql)
                .bind(worker)
                .bind(now.saturating_add(lease_ms))
                .bind(now)
                .bind(caps[0])
                .bind(caps[1])
                .bind(caps[2])
                .bind(tags.as_str())
                .fetch_optional(&self.write)
                .await;
            match claimed {
                Ok(row) => return map_opt(row, job_row),
                // Two claimers took serial jobs of one event at the same time (both saw no
                // running job in their snapshot); the unique index refused the second. Try
                // again: the new snapshot sees the running job and passes over its siblings.
                Err(e) => match StoreError::from_db(e) {
                    StoreError::Conflict(field) if field == "serial" => continue,
                    other => return Err(other),
                },
            }
        }
        Ok(None)
    }

    /// Claims up to `max` due queued jobs for `worker`, oldest first, as [`claim`](Self::claim)
    /// does one: jobs of non-serial events in one statement, then (while fewer than `max`)
    /// one at a time, which takes serial jobs too (two serial jobs of one event must never be
    /// claimed by one statement, since neither sees the other running).
    pub async fn claim_batch(
        &self,
        worker: &str,
        claimant: &Claimant,
        lease_ms: i64,
        now: i64,
        max: usize,
    ) -> Result<Vec<JobRow>, StoreError> {
        check_lease(worker, lease_ms)?;
        let max = max.clamp(1, 1000);
        let mut out = Vec::new();
        if max > 1 {
            const BATCH_SQLITE: &str = concat!(
                claim_set!(),
                "WHERE id IN (SELECT j.id FROM jobs j WHERE j.status = 'queued' AND j.run_at <= $3 ",
                "AND j.serial = 0 ",
                routing_filter!(),
                tags_filter_sqlite!(),
                "ORDER BY j.run_at, j.id LIMIT $8) ",
                "RETURNING ",
                job_cols!()
            );
            const BATCH_POSTGRES: &str = concat!(
                claim_set!(),
                "WHERE id IN (SELECT j.id FROM jobs j WHERE j.status = 'queued' AND j.run_at <= $3 ",
                "AND j.serial = 0 ",
                routing_filter!(),
                tags_filter_postgres!(),
                "ORDER BY j.run_at, j.id LIMIT $8 FOR UPDATE OF j SKIP LOCKED) ",
                "AND status = 'queued' RETURNING ",
                job_cols!()
            );
            let (caps, tags) = claimant_params(claimant)?;
            let sql = match self.backend {
                Backend::Sqlite => BATCH_SQLITE,
                Backend::Postgres => BATCH_POSTGRES,
            };
            let rows = sqlx::query(sql)
                .bind(worker)
                .bind(now.saturating_add(lease_ms))
                .bind(now)
                .bind(caps[0])
                .bind(caps[1])
                .bind(caps[2])
                .bind(tags.as_str())
                .bind(max as i64)
                .fetch_all(&self.write)
                .await?;
            for row in &rows {
                out.push(job_row(row)?);
            }
            // RETURNING follows no ORDER BY: hand them out oldest first.
            out.sort_by_key(|j| (j.run_at, j.id));
        }
        while out.len() < max {
            match self.claim_as(worker, claimant, lease_ms, now).await? {
                Some(job) => out.push(job),
                None => break,
            }
        }
        Ok(out)
    }

    /// Renews the lease of a running attempt to `now + lease_ms`.
    pub async fn heartbeat(
        &self,
        job_id: i64,
        worker: &str,
        attempt: i32,
        lease_ms: i64,
        now: i64,
    ) -> Result<Heartbeat, StoreError> {
        check_lease(worker, lease_ms)?;
        let row = sqlx::query(
            "UPDATE jobs SET lease_expires_at = $1 \
             WHERE id = $2 AND lease_owner = $3 AND attempt = $4 AND status = 'running' \
             RETURNING cancel_requested",
        )
        .bind(now.saturating_add(lease_ms))
        .bind(job_id)
        .bind(worker)
        .bind(i64::from(attempt))
        .fetch_optional(&self.write)
        .await?;
        Ok(match row {
            Some(row) => Heartbeat::Ok {
                cancel_requested: bool_col(&row, "cancel_requested")?,
            },
            None => Heartbeat::Lost,
        })
    }

    /// Records the end of a running attempt. False (and nothing written) when `worker` no longer
    /// owns `attempt`. The job keeps `lease_owner`, so the worker can still finalise the
    /// executions of its attempt.
    pub async fn finish(
        &self,
        job_id: i64,
        worker: &str,
        attempt: i32,
        outcome: &JobOutcome,
        now: i64,
    ) -> Result<bool, StoreError> {
        check_final(outcome)?;
        let output = to_json("output", &outcome.output)?;
        // A job without a node (almost every job): one statement, no transaction.
        let sql = format!("{FINISH} AND node_run_id IS NULL");
        let done = finish_query(&sql, outcome, &output, now, (job_id, worker, attempt))
            .execute(&self.write)
            .await?;
        if done.rows_affected() > 0 {
            return Ok(true);
        }
        // A node's job (or a worker that lost its lease): the node's successors are decided in
        // the transaction that ends it.
        let mut tx = self.begin_write().await?;
        if lock_job_tree(&mut tx, self.for_update(), job_id)
            .await?
            .is_none()
        {
            tx.rollback().await?;
            return Ok(false);
        }
        let sql = format!("{FINISH} RETURNING {}", job_cols!());
        let row = finish_query(&sql, outcome, &output, now, (job_id, worker, attempt))
            .fetch_optional(&mut *tx)
            .await?;
        let Some(job) = map_opt(row, job_row)? else {
            tx.rollback().await?;
            return Ok(false);
        };
        job_ended(&mut tx, self.env(now), &job).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// An attempt's end in one write transaction: its executions' final updates (fenced like
    /// [`Store::update_executions`]) and the job's outcome (like [`Store::finish`]), and, for a
    /// node's job (`node_run_id` of the claimed row), the successors that became ready. One
    /// commit instead of two or three; nothing of the end is visible before all of it is.
    /// False (and nothing written) when `worker` no longer owns `attempt`.
    pub async fn finish_attempt(&self, end: &AttemptEnd<'_>, now: i64) -> Result<bool, StoreError> {
        Ok(self.end_attempt(end, None, now).await?.0)
    }

    /// As [`Store::finish_attempt`], and, when the attempt's end makes a node's successor
    /// ready, claims that successor for the same worker in the same transaction (lease until
    /// `now + lease_ms`): the worker whose job just ended runs the next node at once, without a
    /// round trip through the queue. Serial successors and delayed ones are left to the queue.
    /// Returns whether the end was written, and the claimed successor.
    pub async fn finish_attempt_and_claim(
        &self,
        end: &AttemptEnd<'_>,
        lease_ms: i64,
        now: i64,
    ) -> Result<(bool, Option<HandedOff>), StoreError> {
        self.finish_attempt_and_claim_as(end, &Claimant::untagged(), lease_ms, now)
            .await
    }

    /// As [`Store::finish_attempt_and_claim`], the successor claimed only when `claimant` may
    /// take it (as [`Store::claim_as`]); otherwise it stays queued for an agent that can.
    pub async fn finish_attempt_and_claim_as(
        &self,
        end: &AttemptEnd<'_>,
        claimant: &Claimant,
        lease_ms: i64,
        now: i64,
    ) -> Result<(bool, Option<HandedOff>), StoreError> {
        check_lease(end.worker, lease_ms)?;
        self.end_attempt(end, Some((lease_ms, claimant)), now).await
    }

    async fn end_attempt(
        &self,
        end: &AttemptEnd<'_>,
        handoff: Option<(i64, &Claimant)>,
        now: i64,
    ) -> Result<(bool, Option<HandedOff>), StoreError> {
        let AttemptEnd {
            job_id,
            worker,
            attempt,
            node_run_id,
            executions,
            outcome,
        } = *end;
        check_final(outcome)?;
        let output = to_json("output", &outcome.output)?;
        let mut tx = self.begin_write().await?;
        // A node's job locks its run's tree first, as every other change of the tree does (on
        // SQLite the write transaction already holds the database: nothing to lock, and the
        // finish below checks that the job is a node's).
        if node_run_id.is_some()
            && !self.for_update().is_empty()
            && lock_job_tree(&mut tx, self.for_update(), job_id)
                .await?
                .is_none()
        {
            tx.rollback().await?;
            return Ok((false, None));
        }
        for (exec_id, update) in executions {
            Self::update_execution_on(&mut *tx, *exec_id, worker, attempt, update).await?;
        }
        let node_filter = match node_run_id {
            Some(_) => "AND node_run_id IS NOT NULL",
            None => "AND node_run_id IS NULL",
        };
        let sql = format!("{FINISH} {node_filter} RETURNING {}", job_cols!());
        let row = finish_query(&sql, outcome, &output, now, (job_id, worker, attempt))
            .fetch_optional(&mut *tx)
            .await?;
        let Some(job) = map_opt(row, job_row)? else {
            tx.rollback().await?;
            // Not ours any more, or the caller's idea of the node was wrong: the general path
            // decides, finding the row by what it is (rare: a lost lease).
            self.update_executions(worker, attempt, executions).await?;
            let written = self.finish(job_id, worker, attempt, outcome, now).await?;
            return Ok((written, None));
        };
        let mut next = None;
        if job.node_run_id.is_some() {
            let enqueued = job_ended(&mut tx, self.env(now), &job).await?;
            if let (Some((lease_ms, claimant)), Some(&first)) = (handoff, enqueued.first()) {
                // Inserted by this transaction, so no other claimer can see it yet.
                // Only when the worker may claim it: the same filter as a claim's.
                const HANDOFF_SQLITE: &str = concat!(
                    claim_set!(),
                    "WHERE id = (SELECT j.id FROM jobs j WHERE j.id = $8 AND j.status = 'queued' ",
                    "AND j.run_at <= $3 AND j.serial = 0 ",
                    routing_filter!(),
                    tags_filter_sqlite!(),
                    ") ",
                    "RETURNING ",
                    job_cols!()
                );
                const HANDOFF_POSTGRES: &str = concat!(
                    claim_set!(),
                    "WHERE id = (SELECT j.id FROM jobs j WHERE j.id = $8 AND j.status = 'queued' ",
                    "AND j.run_at <= $3 AND j.serial = 0 ",
                    routing_filter!(),
                    tags_filter_postgres!(),
                    ") ",
                    "RETURNING ",
                    job_cols!()
                );
                let (caps, tags) = claimant_params(claimant)?;
                let sql = match self.backend {
                    Backend::Sqlite => HANDOFF_SQLITE,
                    Backend::Postgres => HANDOFF_POSTGRES,
                };
                let row = sqlx::query(sql)
                    .bind(worker)
                    .bind(now.saturating_add(lease_ms))
                    .bind(now)
                    .bind(caps[0])
                    .bind(caps[1])
                    .bind(caps[2])
                    .bind(tags.as_str())
                    .bind(first)
                    .fetch_optional(&mut *tx)
                    .await?;
                if let Some(claimed) = map_opt(row, job_row)? {
                    // A target that runs one execution gets it from this write, not from one
                    // of its own (a fan-out creates one per server itself).
                    let single = matches!(
                        claimed.capability,
                        Some(Capability::Local | Capability::Container)
                    );
                    let mut execution = None;
                    if single {
                        let new = NewExecution {
                            job_id: claimed.id,
                            worker,
                            attempt: claimed.attempt,
                            server: None,
                            status: ExecutionStatus::Pending,
                        };
                        execution = Self::create_execution_on(&mut *tx, &new, now).await?;
                    }
                    next = Some(HandedOff {
                        job: claimed,
                        more_ready: enqueued.len() > 1 || job.serial,
                        execution,
                    });
                }
            }
        }
        tx.commit().await?;
        Ok((true, next))
    }

    /// Gives a failed attempt back to the queue, claimable from `run_at` (the caller computes it
    /// with [`backoff_delay`]). A cancel requested meanwhile wins: the job becomes `cancelled`.
    /// False (and nothing written) when `worker` no longer owns `attempt`.
    pub async fn retry_later(
        &self,
        job_id: i64,
        worker: &str,
        attempt: i32,
        run_at: i64,
        error: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        const RETRY: &str = "UPDATE jobs SET \
               status = CASE WHEN cancel_requested = 1 THEN 'cancelled' ELSE 'queued' END, \
               finished_at = CASE WHEN cancel_requested = 1 THEN $1 ELSE NULL END, \
               run_at = $2, error = $3, lease_expires_at = NULL \
             WHERE id = $4 AND lease_owner = $5 AND attempt = $6 AND status = 'running'";
        let done = sqlx::query(&format!("{RETRY} AND node_run_id IS NULL"))
            .bind(now)
            .bind(run_at)
            .bind(error)
            .bind(job_id)
            .bind(worker)
            .bind(i64::from(attempt))
            .execute(&self.write)
            .await?;
        if done.rows_affected() > 0 {
            return Ok(true);
        }
        // A node's job: when the pending cancel wins, the job ends here, and so does its node.
        let mut tx = self.begin_write().await?;
        if lock_job_tree(&mut tx, self.for_update(), job_id)
            .await?
            .is_none()
        {
            tx.rollback().await?;
            return Ok(false);
        }
        let row = sqlx::query(&format!("{RETRY} RETURNING {}", job_cols!()))
            .bind(now)
            .bind(run_at)
            .bind(error)
            .bind(job_id)
            .bind(worker)
            .bind(i64::from(attempt))
            .fetch_optional(&mut *tx)
            .await?;
        let Some(job) = map_opt(row, job_row)? else {
            tx.rollback().await?;
            return Ok(false);
        };
        if job.status.is_final() {
            job_ended(&mut tx, self.env(now), &job).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Cancels a job: a queued one at once, a running one by asking its worker (through
    /// [`Heartbeat::Ok`]'s `cancel_requested`).
    pub async fn cancel(&self, job_id: i64, now: i64) -> Result<CancelResult, StoreError> {
        // Single-row statements instead of a read-then-write: each is atomic, and a job moving
        // between states in between (claimed, retried) is caught by the next one or by another
        // round.
        for _ in 0..3 {
            let queued = sqlx::query(
                "UPDATE jobs SET status = 'cancelled', finished_at = $1 \
                 WHERE id = $2 AND status = 'queued' AND node_run_id IS NULL",
            )
            .bind(now)
            .bind(job_id)
            .execute(&self.write)
            .await?;
            if queued.rows_affected() > 0 {
                return Ok(CancelResult::Cancelled);
            }
            let row = sqlx::query("SELECT status, node_run_id FROM jobs WHERE id = $1")
                .bind(job_id)
                .fetch_optional(&self.write)
                .await?;
            let Some(row) = row else {
                return Ok(CancelResult::NotFound);
            };
            let status: JobStatus = word(&row, "status")?;
            if status.is_final() {
                return Ok(CancelResult::AlreadyFinished(status));
            }
            if status == JobStatus::Queued && opt_i64(&row, "node_run_id")?.is_some() {
                if self.cancel_queued_node_job(job_id, now).await? {
                    return Ok(CancelResult::Cancelled);
                }
                continue;
            }
            let running = sqlx::query(
                "UPDATE jobs SET cancel_requested = 1 WHERE id = $1 AND status = 'running'",
            )
            .bind(job_id)
            .execute(&self.write)
            .await?;
            if running.rows_affected() > 0 {
                return Ok(CancelResult::Requested);
            }
        }
        // Still flapping between queued and running after three rounds: report it as requested,
        // which is true of the last state we saw.
        Ok(CancelResult::Requested)
    }

    /// Cancels a queued node job and lets its workflow progress, in one transaction. False when
    /// it was no longer queued.
    async fn cancel_queued_node_job(&self, job_id: i64, now: i64) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        lock_job_tree(&mut tx, self.for_update(), job_id).await?;
        let row = sqlx::query(concat!(
            "UPDATE jobs SET status = 'cancelled', finished_at = $1 ",
            "WHERE id = $2 AND status = 'queued' RETURNING ",
            job_cols!()
        ))
        .bind(now)
        .bind(job_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(job) = map_opt(row, job_row)? else {
            tx.rollback().await?;
            return Ok(false);
        };
        job_ended(&mut tx, self.env(now), &job).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Handles running jobs whose lease expired before `now`: their unfinished executions of that
    /// attempt become `lost` (output kept), and the job is requeued with the backoff stored on
    /// the row, or `failed` ("worker lost") when its attempts are used up, or `cancelled` when a
    /// cancel was pending. Each job is fenced by its attempt, so several servers may run this at
    /// once: a job is recovered by exactly one of them.
    pub async fn recover_expired(&self, now: i64) -> Result<Vec<RecoveredJob>, StoreError> {
        let candidates = sqlx::query(
            "SELECT id, attempt, lease_owner, max_attempts, backoff_ms, max_backoff_ms, cancel_requested, \
             node_run_id FROM jobs WHERE status = 'running' AND lease_expires_at < $1 \
             ORDER BY lease_expires_at, id LIMIT $2",
        )
        .bind(now)
        .bind(RECOVER_BATCH)
        .fetch_all(&self.read)
        .await?;
        let mut recovered = Vec::with_capacity(candidates.len());
        for row in &candidates {
            let job_id = i64_col(row, "id")?;
            let attempt = i32_col(row, "attempt")?;
            let worker = opt_text(row, "lease_owner")?;
            let max_attempts = i32_col(row, "max_attempts")?;
            let (status, run_at, finished_at) = if bool_col(row, "cancel_requested")? {
                (JobStatus::Cancelled, None, Some(now))
            } else if attempt < max_attempts {
                let delay = backoff_delay(
                    i64_col(row, "backoff_ms")?,
                    i64_col(row, "max_backoff_ms")?,
                    attempt,
                    row_jitter(job_id, attempt),
                );
                (JobStatus::Queued, Some(now.saturating_add(delay)), None)
            } else {
                (JobStatus::Failed, None, Some(now))
            };

            let mut tx = self.begin_write().await?;
            if opt_i64(row, "node_run_id")?.is_some() {
                // The run tree first, as every progression of it does.
                lock_job_tree(&mut tx, self.for_update(), job_id).await?;
            }
            // lease_owner is cleared: the vanished worker must not touch this attempt's
            // executions any more (they are fenced by owner and attempt).
            let done = sqlx::query(concat!(
                "UPDATE jobs SET status = $1, run_at = COALESCE($2, run_at), finished_at = $3, ",
                "error = $4, lease_owner = NULL, lease_expires_at = NULL ",
                "WHERE id = $5 AND attempt = $6 AND status = 'running' AND lease_expires_at < $7 ",
                "RETURNING ",
                job_cols!()
            ))
            .bind(status.as_str())
            .bind(run_at)
            .bind(finished_at)
            .bind(WORKER_LOST)
            .bind(job_id)
            .bind(i64::from(attempt))
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(job) = map_opt(done, job_row)? else {
                // Renewed, finished or recovered by someone else since we looked.
                tx.rollback().await?;
                continue;
            };
            sqlx::query(concat!(
                "UPDATE executions SET status = 'lost', finished_at = COALESCE(finished_at, $1), \
                 error = COALESCE(error, $2) \
                 WHERE job_id = $3 AND attempt = $4 AND status IN ",
                live_execution_statuses!()
            ))
            .bind(now)
            .bind(WORKER_LOST)
            .bind(job_id)
            .bind(i64::from(attempt))
            .execute(&mut *tx)
            .await?;
            if job.status.is_final() {
                job_ended(&mut tx, self.env(now), &job).await?;
            }
            tx.commit().await?;
            recovered.push(RecoveredJob {
                job_id,
                attempt,
                worker,
                status,
                run_at,
            });
        }
        Ok(recovered)
    }

    pub async fn get_job(&self, id: i64) -> Result<Option<JobRow>, StoreError> {
        let row = sqlx::query(concat!("SELECT ", job_cols!(), " FROM jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        map_opt(row, job_row)
    }

    /// Jobs matching `filter`, newest first.
    pub async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<JobRow>, StoreError> {
        let limit = filter.limit.unwrap_or(100);
        if !(1..=10_000).contains(&limit) {
            return Err(StoreError::Invalid(format!(
                "limit: must be between 1 and 10000, got {limit}"
            )));
        }
        // Only the conditions in use appear in the SQL, so each combination gets a plan that
        // uses its index (at most 16 distinct statements, all cached).
        let mut sql = String::from(concat!("SELECT ", job_cols!(), " FROM jobs WHERE 1 = 1"));
        let mut n = 0;
        let mut next = || {
            n += 1;
            n
        };
        if filter.event_name.is_some() {
            sql.push_str(&format!(" AND event_name = ${}", next()));
        }
        if filter.event_id.is_some() {
            sql.push_str(&format!(" AND event_id = ${}", next()));
        }
        if filter.status.is_some() {
            sql.push_str(&format!(" AND status = ${}", next()));
        }
        if filter.before_id.is_some() {
            sql.push_str(&format!(" AND id < ${}", next()));
        }
        if filter.trigger.is_some() {
            sql.push_str(&format!(" AND trigger_kind = ${}", next()));
        }
        if filter.server.is_some() {
            // IN rather than EXISTS: the server's job ids come from its index, so a server
            // with few jobs (or none) is as fast as one with many, at any depth; EXISTS made
            // SQLite probe every job, newest first, until the page was full.
            sql.push_str(&format!(
                " AND id IN (SELECT x.job_id FROM executions x WHERE x.server = ${})",
                next()
            ));
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", next()));
        let mut query = sqlx::query(&sql);
        if let Some(v) = &filter.event_name {
            query = query.bind(v.as_str());
        }
        if let Some(v) = filter.event_id {
            query = query.bind(v);
        }
        if let Some(v) = filter.status {
            query = query.bind(v.as_str());
        }
        if let Some(v) = filter.before_id {
            query = query.bind(v);
        }
        if let Some(v) = filter.trigger {
            query = query.bind(v.as_str());
        }
        if let Some(v) = &filter.server {
            query = query.bind(v.as_str());
        }
        let rows = query.bind(limit).fetch_all(&self.read).await?;
        rows.iter().map(job_row).collect()
    }

    /// The newest jobs that ended badly (`failed`, `timed_out`, `partial`), newest first.
    pub async fn recent_failures(&self, limit: i64) -> Result<Vec<JobRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            job_cols!(),
            " FROM jobs WHERE status IN ('failed', 'timed_out', 'partial') ORDER BY id DESC LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(job_row).collect()
    }

    /// Whether the event has a queued or running job (overlap policy).
    pub async fn has_active_job(&self, event_id: i64) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT id FROM jobs WHERE event_id = $1 AND status IN ('queued', 'running') LIMIT 1",
        )
        .bind(event_id)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.is_some())
    }

    /// Jobs ever created for the event (`max_executions`).
    pub async fn count_jobs_for_event(&self, event_id: i64) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM jobs WHERE event_id = $1")
            .bind(event_id)
            .fetch_one(&self.read)
            .await?;
        i64_col(&row, "n")
    }

    /// `(status, count)` for every status that has jobs, by status.
    pub async fn job_counts_by_status(&self) -> Result<Vec<(JobStatus, i64)>, StoreError> {
        let rows =
            sqlx::query("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status ORDER BY status")
                .fetch_all(&self.read)
                .await?;
        rows.iter()
            .map(|r| Ok((word(r, "status")?, i64_col(r, "n")?)))
            .collect()
    }

    /// Earliest `run_at` of the queued jobs: when a worker with nothing to do should look again.
    pub async fn next_run_at(&self) -> Result<Option<i64>, StoreError> {
        // ORDER BY + LIMIT rather than MIN(): it walks the claim index, and the column keeps its
        // declared type on both backends.
        let row =
            sqlx::query("SELECT run_at FROM jobs WHERE status = 'queued' ORDER BY run_at LIMIT 1")
                .fetch_optional(&self.read)
                .await?;
        map_opt(row, |r| i64_col(r, "run_at"))
    }
}
