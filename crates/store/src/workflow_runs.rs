//! Workflow runs and their node runs: start a run (by hand, the API, a webhook), fire a
//! scheduled one fenced by the scheduler's lease, cancel, time out the runs past their
//! deadline, retry from the failure, and read runs with their nodes (and why each node ran, was
//! skipped or still waits).
//!
//! Every write here is one transaction that holds the run tree's lock and lets the run
//! progress (`progression.rs`): starting a run inserts it, its node runs and the jobs of its
//! start nodes together; cancelling cancels the queued node jobs and asks the running ones to
//! stop in the same commit. What happens when a node's job ends is not here: `jobs.rs` calls the
//! progression from every path that ends a job.

use std::collections::HashMap;

use cronium_model::workflow::{
    decide, NodeKind, NodeRunStatus, Outcome, Upstream, WorkflowRunStatus,
};
use cronium_model::{EventStatus, Trigger};
use serde::Serialize;
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::AnyConnection;

use crate::progression::{after_end, create_run, lock_trees, stop_tree, Env, NewRun};
use crate::row::{
    bool_col, i32_col, i64_col, json, opt_i64, opt_text, parse_json, parse_word, text, word,
};
use crate::schedule::{lease_held, Lease};
use crate::store::map_opt;
use crate::workflows::{load_graph, load_version, WorkflowGraph};
use crate::{Store, StoreError};

/// Upper bound on runs timed out per call of [`Store::expire_workflow_runs`].
const EXPIRE_BATCH: i64 = 500;

/// One run of one workflow version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkflowRunRow {
    pub id: i64,
    /// None once the workflow is deleted (the run keeps `workflow_name`).
    pub workflow_id: Option<i64>,
    pub workflow_name: String,
    pub workflow_version: i64,
    pub trigger: Trigger,
    pub status: WorkflowRunStatus,
    /// The run's input (the version's default input, or the one given).
    pub input: Value,
    /// Once ended: the outputs of its end nodes (no edge leaving them) that succeeded, merged
    /// as a node's input is (`cronium_model::workflow::merge_input`); Null before.
    pub output: Value,
    /// Why it failed, was cancelled or timed out.
    pub error: Option<String>,
    /// The run this one retries (`retry_workflow_run`).
    pub retry_of: Option<i64>,
    /// 1 for a first run, + 1 per retry.
    pub attempt: i32,
    /// For a sub-run: the `workflow` node run that started it.
    pub parent_node_run_id: Option<i64>,
    /// The top run of this run's tree (itself for a top run).
    pub root_run_id: i64,
    /// 1 for a top run, + 1 per level of sub-workflow.
    pub depth: i32,
    /// Started with `queue`: waits (status `queued`) while another top run of the workflow is
    /// active.
    pub serial: bool,
    /// The schedule tick it was fired for; at most one run per (workflow, tick).
    pub scheduled_for: Option<i64>,
    /// When it times out (its version's `timeout`), None for no timeout.
    pub deadline_at: Option<i64>,
    /// Set (cancelled or timed_out) once the run was stopped; it ends so once its running node
    /// jobs have.
    pub stop: Option<WorkflowRunStatus>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

impl WorkflowRunRow {
    /// Whether the run was asked to stop (cancelled, or timed out).
    pub fn cancel_requested(&self) -> bool {
        self.stop.is_some()
    }
}

/// One node of one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeRunRow {
    pub id: i64,
    pub run_id: i64,
    pub node_id: String,
    /// The node's place in the workflow file.
    pub position: i32,
    pub kind: NodeKind,
    /// Read through [`Store::get_workflow_run`], a node whose job was claimed is `running`
    /// (the store writes `queued` when it makes the job; the claim does not touch node runs).
    pub status: NodeRunStatus,
    pub job_id: Option<i64>,
    /// For a `workflow` node: its sub-run.
    pub sub_run_id: Option<i64>,
    /// The input its job (or sub-run) got; Null until decided.
    pub input: Value,
    /// Its job's output (or its sub-run's); Null until it ended.
    pub output: Value,
    /// The condition its script set, if it did (see `progression::record_job_node_end` for
    /// fan-outs).
    pub condition: Option<bool>,
    /// Why it ran or was skipped, in words ("ran: build succeeded (success)"); "kept from run
    /// N" for a node a retry kept. None while waiting.
    pub reason: Option<String>,
    /// Why it failed, was cancelled or could not start.
    pub error: Option<String>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// A run with its nodes (by position) and its version's graph (None once the workflow is
/// deleted).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkflowRunDetail {
    pub run: WorkflowRunRow,
    pub nodes: Vec<NodeRunRow>,
    pub graph: Option<WorkflowGraph>,
}

/// Why one node stands where it does, for `run-show --explain`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeExplanation {
    pub node_id: String,
    pub status: NodeRunStatus,
    /// In words: the stored reason and what followed, or for a waiting node what it waits for
    /// ("waiting for deploy (running)").
    pub why: String,
    pub job_id: Option<i64>,
    pub sub_run_id: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

impl WorkflowRunDetail {
    /// Each node, in file order, with why it ran, was skipped or still waits.
    pub fn explain(&self) -> Vec<NodeExplanation> {
        self.nodes
            .iter()
            .map(|n| {
                let reason = n.reason.clone().unwrap_or_default();
                let why = match n.status {
                    NodeRunStatus::Waiting => self.waiting_for(n),
                    NodeRunStatus::Queued => format!("{reason}; its job is queued"),
                    NodeRunStatus::Running => match n.sub_run_id {
                        Some(r) => format!("{reason}; its sub-workflow run {r} is running"),
                        None => format!("{reason}; its job is running"),
                    },
                    NodeRunStatus::Skipped => reason,
                    ended => {
                        let mut s = if reason.is_empty() {
                            ended.to_string()
                        } else {
                            format!("{reason}; then {ended}")
                        };
                        if let Some(e) = &n.error {
                            s.push_str(": ");
                            s.push_str(e);
                        }
                        s
                    }
                };
                NodeExplanation {
                    node_id: n.node_id.clone(),
                    status: n.status,
                    why,
                    job_id: n.job_id,
                    sub_run_id: n.sub_run_id,
                    started_at: n.started_at,
                    finished_at: n.finished_at,
                }
            })
            .collect()
    }

    fn waiting_for(&self, n: &NodeRunRow) -> String {
        let Some(node) = self
            .graph
            .as_ref()
            .and_then(|g| g.nodes.iter().find(|g| g.node_id == n.node_id))
        else {
            return "waiting".into();
        };
        let upstream: Vec<Upstream<'_>> = node
            .after
            .iter()
            .map(|(from, kind)| Upstream {
                node: from,
                kind: *kind,
                outcome: self
                    .nodes
                    .iter()
                    .find(|u| &u.node_id == from)
                    .map(|u| Outcome::new(u.status, u.condition))
                    .unwrap_or(Outcome::new(NodeRunStatus::Waiting, None)),
            })
            .collect();
        if self.run.status == WorkflowRunStatus::Queued {
            return "waiting for an earlier run of the workflow to end (overlap: queue)".into();
        }
        decide(node.join, &upstream).reason().to_string()
    }
}

/// How to start a run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRequest {
    pub trigger: Trigger,
    /// The run's input (an object); None for the version's default input.
    pub input: Option<Value>,
    /// Overlap `queue`: when another top run of the workflow is queued or running, the new one
    /// is inserted `queued` and starts when they have ended.
    pub queue: bool,
}

/// What [`Store::cancel_workflow_run`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum CancelRunResult {
    /// It has ended, cancelled (nothing of it was running).
    Cancelled,
    /// Its running node jobs were asked to stop; it ends cancelled when they have.
    Requested,
    /// It had already ended with this status.
    AlreadyFinished(WorkflowRunStatus),
    NotFound,
}

/// What [`Store::fire_workflow`] did with a tick.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum WorkflowFireResult {
    /// The run was started (or queued behind an active one) and the schedule advanced.
    Fired(WorkflowRunRow),
    /// No run was asked for (overlap or missed-run policy); the schedule advanced.
    Skipped,
    /// This tick was already handled; nothing changed.
    Duplicate,
    /// The lease is not the current one: nothing changed, the caller must stop firing.
    NotLeader,
}

/// Filter for [`Store::list_workflow_runs`]; conditions are ANDed, newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunFilter {
    pub workflow_id: Option<i64>,
    pub workflow_name: Option<String>,
    pub status: Option<WorkflowRunStatus>,
    /// Default 100, at most 10 000.
    pub limit: Option<i64>,
    /// Only runs with a smaller id (the last id of the previous page).
    pub before_id: Option<i64>,
}

macro_rules! run_cols {
    () => {
        "id, workflow_id, workflow_name, workflow_version, trigger_kind, status, input, output, \
         error, retry_of, attempt, parent_node_run_id, root_run_id, depth, serial, scheduled_for, \
         deadline_at, stop_status, created_at, started_at, finished_at"
    };
}

fn run_row(row: &AnyRow) -> Result<WorkflowRunRow, StoreError> {
    let id = i64_col(row, "id")?;
    let stop = opt_text(row, "stop_status")?
        .map(|s| {
            s.parse::<WorkflowRunStatus>()
                .map_err(|e| StoreError::Corrupt(format!("column stop_status: {e}")))
        })
        .transpose()?;
    Ok(WorkflowRunRow {
        id,
        workflow_id: opt_i64(row, "workflow_id")?,
        workflow_name: text(row, "workflow_name")?,
        workflow_version: i64_col(row, "workflow_version")?,
        trigger: word(row, "trigger_kind")?,
        status: word(row, "status")?,
        input: json(row, "input")?,
        output: json(row, "output")?,
        error: opt_text(row, "error")?,
        retry_of: opt_i64(row, "retry_of")?,
        attempt: i32_col(row, "attempt")?,
        parent_node_run_id: opt_i64(row, "parent_node_run_id")?,
        root_run_id: opt_i64(row, "root_run_id")?.unwrap_or(id),
        depth: i32_col(row, "depth")?,
        serial: bool_col(row, "serial")?,
        scheduled_for: opt_i64(row, "scheduled_for")?,
        deadline_at: opt_i64(row, "deadline_at")?,
        stop,
        created_at: i64_col(row, "created_at")?,
        started_at: opt_i64(row, "started_at")?,
        finished_at: opt_i64(row, "finished_at")?,
    })
}

pub(crate) async fn load_run(
    conn: &mut AnyConnection,
    id: i64,
) -> Result<Option<WorkflowRunRow>, StoreError> {
    let row = sqlx::query(concat!(
        "SELECT ",
        run_cols!(),
        " FROM workflow_runs WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    map_opt(row, run_row)
}

macro_rules! node_run_cols {
    () => {
        "n.id AS id, n.run_id AS run_id, n.node_id AS node_id, n.position AS position, \
         n.kind AS kind, n.status AS status, n.job_id AS job_id, n.sub_run_id AS sub_run_id, \
         n.input AS input, n.output AS output, n.condition AS condition, n.reason AS reason, \
         n.error AS error, n.started_at AS started_at, n.finished_at AS finished_at"
    };
}

fn node_run_row(row: &AnyRow) -> Result<NodeRunRow, StoreError> {
    Ok(NodeRunRow {
        id: i64_col(row, "id")?,
        run_id: i64_col(row, "run_id")?,
        node_id: text(row, "node_id")?,
        position: i32_col(row, "position")?,
        kind: word(row, "kind")?,
        status: word(row, "status")?,
        job_id: opt_i64(row, "job_id")?,
        sub_run_id: opt_i64(row, "sub_run_id")?,
        input: json(row, "input")?,
        output: json(row, "output")?,
        condition: opt_i64(row, "condition")?.map(|c| c != 0),
        reason: opt_text(row, "reason")?,
        error: opt_text(row, "error")?,
        started_at: opt_i64(row, "started_at")?,
        finished_at: opt_i64(row, "finished_at")?,
    })
}

/// One node run as stored, by its id (a node's start reads back only the row it wrote, not the
/// whole run's: a long sequential run would otherwise read every node run per node).
pub(crate) async fn load_node_run(
    conn: &mut AnyConnection,
    id: i64,
) -> Result<Option<NodeRunRow>, StoreError> {
    let row = sqlx::query(concat!(
        "SELECT ",
        node_run_cols!(),
        " FROM workflow_node_runs n WHERE n.id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    map_opt(row, node_run_row)
}

/// The node runs of a run as stored (a claimed job's node reads `queued`), by position.
///
/// Read as one row, the node runs aggregated into a JSON array by the database: a node's end
/// reads its run's node runs inside the write transaction, and every row of a multi-row result
/// costs a hand-off between threads on SQLite (a 40-node run's rows took 140 µs as rows, most
/// of the statement, against one row and one parse now).
pub(crate) async fn load_node_runs(
    conn: &mut AnyConnection,
    run_id: i64,
) -> Result<Vec<NodeRunRow>, StoreError> {
    // The columns of `node_run_cols!`, in the order of `NodeRunTuple`. Aggregated without an
    // order (not every supported SQLite has ORDER BY inside an aggregate); sorted below.
    const COLUMNS: &str = "n.id, n.run_id, n.node_id, n.position, n.kind, n.status, n.job_id, \
         n.sub_run_id, n.input, n.output, n.condition, n.reason, n.error, n.started_at, \
         n.finished_at";
    let sql = match conn.backend_name() {
        "PostgreSQL" => format!(
            "SELECT json_agg(json_build_array({COLUMNS}))::text AS nodes \
             FROM workflow_node_runs n WHERE n.run_id = $1"
        ),
        _ => format!(
            "SELECT json_group_array(json_array({COLUMNS})) AS nodes \
             FROM workflow_node_runs n WHERE n.run_id = $1"
        ),
    };
    let row = sqlx::query(&sql).bind(run_id).fetch_one(&mut *conn).await?;
    // PostgreSQL's json_agg of no rows is NULL, SQLite's json_group_array `[]`.
    let Some(text) = opt_text(&row, "nodes")? else {
        return Ok(Vec::new());
    };
    let tuples: Vec<NodeRunTuple> = serde_json::from_str(&text)
        .map_err(|e| StoreError::Corrupt(format!("node runs of run {run_id}: {e}")))?;
    let mut nodes = tuples
        .into_iter()
        .map(node_run_from_tuple)
        .collect::<Result<Vec<_>, _>>()?;
    nodes.sort_by_key(|n| n.position);
    Ok(nodes)
}

/// One node run as [`load_node_runs`] aggregates it: the columns in order, the JSON columns
/// (input, output) as the text they are stored as.
type NodeRunTuple = (
    i64,
    i64,
    String,
    i32,
    String,
    String,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
);

fn node_run_from_tuple(
    (
        id,
        run_id,
        node_id,
        position,
        kind,
        status,
        job_id,
        sub_run_id,
        input,
        output,
        condition,
        reason,
        error,
        started_at,
        finished_at,
    ): NodeRunTuple,
) -> Result<NodeRunRow, StoreError> {
    Ok(NodeRunRow {
        id,
        run_id,
        position,
        kind: parse_word("kind", &kind)?,
        status: parse_word("status", &status)?,
        node_id,
        job_id,
        sub_run_id,
        input: parse_json("input", input.as_deref())?,
        output: parse_json("output", output.as_deref())?,
        condition: condition.map(|c| c != 0),
        reason,
        error,
        started_at,
        finished_at,
    })
}

/// Refuses an input that is not an object (a node's input merges its keys).
fn check_input(input: &Value) -> Result<(), StoreError> {
    if input.is_object() {
        Ok(())
    } else {
        Err(StoreError::Invalid(
            "input: must be a JSON object of keys to values".into(),
        ))
    }
}

/// Starts (or queues) a top run of the current version of the workflow `workflow_id`, which the
/// caller has locked; None when `scheduled_for` already has a run.
async fn begin_run(
    conn: &mut AnyConnection,
    env: &Env,
    workflow_id: i64,
    req: &RunRequest,
    scheduled_for: Option<i64>,
) -> Result<Option<WorkflowRunRow>, StoreError> {
    let wf = sqlx::query(&format!(
        "SELECT name, version, status FROM workflows WHERE id = $1{}",
        env.for_update
    ))
    .bind(workflow_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(wf) = wf else {
        return Err(StoreError::NotFound(format!("workflow {workflow_id}")));
    };
    let name = text(&wf, "name")?;
    if word::<EventStatus>(&wf, "status")? == EventStatus::Archived {
        return Err(StoreError::Invalid(format!(
            "workflow: `{name}` is archived and cannot be run"
        )));
    }
    let version = i64_col(&wf, "version")?;
    let stored = load_version(conn, workflow_id, version)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("version {version} of workflow `{name}`")))?;
    let input = req.input.clone().unwrap_or(stored.input);
    check_input(&input)?;
    let queued = req.queue
        && sqlx::query(
            "SELECT id FROM workflow_runs WHERE workflow_id = $1 AND depth = 1 \
             AND status IN ('queued', 'running') LIMIT 1",
        )
        .bind(workflow_id)
        .fetch_optional(&mut *conn)
        .await?
        .is_some();
    let kept = HashMap::new();
    let run = create_run(
        conn,
        env,
        &NewRun {
            workflow_id,
            workflow_name: &name,
            version,
            trigger: req.trigger,
            input: &input,
            retry_of: None,
            attempt: 1,
            parent_node_run_id: None,
            root_run_id: None,
            depth: 1,
            queued,
            serial: req.queue,
            scheduled_for,
            kept: &kept,
        },
        scheduled_for.is_some(),
    )
    .await?;
    if let Some(run) = &run {
        if run.status.is_final() {
            after_end(conn, env, run.clone()).await?;
        }
    }
    Ok(run)
}

impl Store {
    /// What a progression needs from this store: the backend's row lock, the clock, the graph
    /// cache.
    pub(crate) fn env(&self, now: i64) -> Env {
        let mut env = Env::new(self.for_update(), now);
        env.graphs = Some(self.graphs.clone());
        env
    }

    /// Starts a run of the current version of workflow `workflow_id` in one transaction: the run,
    /// a node run per node (waiting) and the jobs of its start nodes (or, with `req.queue` and
    /// another run active, the run alone, `queued`). Refused (nothing written) for an archived
    /// workflow or an input that is not an object. The run may already have ended when this
    /// returns (every start node failed at once: its event is gone...).
    pub async fn start_workflow_run(
        &self,
        workflow_id: i64,
        req: &RunRequest,
        now: i64,
    ) -> Result<WorkflowRunRow, StoreError> {
        if let Some(input) = &req.input {
            check_input(input)?;
        }
        let mut tx = self.begin_write().await?;
        let run = begin_run(&mut tx, &self.env(now), workflow_id, req, None)
            .await?
            .ok_or_else(|| StoreError::Corrupt("the run was not inserted".into()))?;
        tx.commit().await?;
        Ok(run)
    }

    /// Handles the tick `scheduled_for` of a workflow in one transaction, as [`Store::fire`]
    /// does for events: only while `lease` is the lock's current unexpired grant at `now`
    /// (else `NotLeader`, nothing changed); at most once per tick (a tick at or before
    /// `last_fired_at`, or one that has a run, is `Duplicate`); sets `last_fired_at` and
    /// `next_fire_at` and, with `run`, starts the run (trigger `schedule`, or what `run` says).
    pub async fn fire_workflow(
        &self,
        lease: &Lease,
        workflow_id: i64,
        scheduled_for: i64,
        next_fire_at: Option<i64>,
        run: Option<&RunRequest>,
        now: i64,
    ) -> Result<WorkflowFireResult, StoreError> {
        if let Some(input) = run.and_then(|r| r.input.as_ref()) {
            check_input(input)?;
        }
        let mut tx = self.begin_write().await?;
        if !lease_held(&mut tx, self.for_update(), lease, now).await? {
            tx.rollback().await?;
            return Ok(WorkflowFireResult::NotLeader);
        }
        let advanced = sqlx::query(
            "UPDATE workflows SET last_fired_at = $1, next_fire_at = $2 \
             WHERE id = $3 AND (last_fired_at IS NULL OR last_fired_at < $1)",
        )
        .bind(scheduled_for)
        .bind(next_fire_at)
        .bind(workflow_id)
        .execute(&mut *tx)
        .await?;
        if advanced.rows_affected() == 0 {
            let exists = sqlx::query("SELECT id FROM workflows WHERE id = $1")
                .bind(workflow_id)
                .fetch_optional(&mut *tx)
                .await?;
            tx.rollback().await?;
            return match exists {
                None => Err(StoreError::NotFound(format!("workflow {workflow_id}"))),
                Some(_) => Ok(WorkflowFireResult::Duplicate),
            };
        }
        let Some(req) = run else {
            tx.commit().await?;
            return Ok(WorkflowFireResult::Skipped);
        };
        match begin_run(
            &mut tx,
            &self.env(now),
            workflow_id,
            req,
            Some(scheduled_for),
        )
        .await?
        {
            Some(run) => {
                tx.commit().await?;
                Ok(WorkflowFireResult::Fired(run))
            }
            None => {
                tx.rollback().await?;
                Ok(WorkflowFireResult::Duplicate)
            }
        }
    }

    /// Cancels a run and its active sub-runs, in one transaction: waiting nodes are skipped
    /// ("skipped: run cancelled"), queued node jobs cancelled, running ones asked to stop
    /// (`cancel_requested`); the run ends `cancelled` at once when nothing of it runs, else when
    /// its last running job has ended. Cancelling a sub-run ends its parent node `cancelled`
    /// (its parent run goes on, `always` edges firing).
    pub async fn cancel_workflow_run(
        &self,
        run_id: i64,
        now: i64,
    ) -> Result<CancelRunResult, StoreError> {
        let mut tx = self.begin_write().await?;
        lock_trees(&mut tx, self.for_update(), &[run_id]).await?;
        let Some(run) = load_run(&mut tx, run_id).await? else {
            tx.rollback().await?;
            return Ok(CancelRunResult::NotFound);
        };
        if run.status.is_final() {
            tx.rollback().await?;
            return Ok(CancelRunResult::AlreadyFinished(run.status));
        }
        let env = self.env(now);
        stop_tree(
            &mut tx,
            &env,
            run_id,
            WorkflowRunStatus::Cancelled,
            "run cancelled",
        )
        .await?;
        let after = load_run(&mut tx, run_id).await?;
        tx.commit().await?;
        Ok(match after {
            Some(r) if r.status.is_final() => CancelRunResult::Cancelled,
            _ => CancelRunResult::Requested,
        })
    }

    /// Times out the running runs whose deadline (their version's `timeout`) is at or before
    /// `now`: each is stopped like a cancel (and ends `timed_out`), in a transaction of its
    /// own. Returns the runs as they stand after. Several servers may call this at once: a run
    /// is timed out once. The server calls it from a background loop, next to lease recovery.
    pub async fn expire_workflow_runs(&self, now: i64) -> Result<Vec<WorkflowRunRow>, StoreError> {
        let due = sqlx::query(
            "SELECT id FROM workflow_runs WHERE status = 'running' AND deadline_at IS NOT NULL \
             AND deadline_at <= $1 AND stop_status IS NULL ORDER BY deadline_at, id LIMIT $2",
        )
        .bind(now)
        .bind(EXPIRE_BATCH)
        .fetch_all(&self.read)
        .await?;
        let mut expired = Vec::with_capacity(due.len());
        for row in &due {
            let id = i64_col(row, "id")?;
            let mut tx = self.begin_write().await?;
            lock_trees(&mut tx, self.for_update(), &[id]).await?;
            let still_due = load_run(&mut tx, id).await?.filter(|r| {
                r.status == WorkflowRunStatus::Running
                    && r.stop.is_none()
                    && r.deadline_at.is_some_and(|d| d <= now)
            });
            if still_due.is_none() {
                tx.rollback().await?;
                continue;
            }
            let env = self.env(now);
            stop_tree(
                &mut tx,
                &env,
                id,
                WorkflowRunStatus::TimedOut,
                "run timed out",
            )
            .await?;
            let after = load_run(&mut tx, id).await?;
            tx.commit().await?;
            expired.extend(after);
        }
        Ok(expired)
    }

    /// Retries an ended run from its failure, in one transaction: a new run of the same version
    /// and input (`retry_of`, `attempt + 1`) where the nodes that succeeded are kept as they
    /// ended (output, condition, job; reason "kept from run N") and every other node waits, so
    /// that failed and skipped nodes and everything downstream of them run again; the nodes
    /// whose upstream nodes have all ended are decided at once. Refused for a run that has not
    /// ended, that succeeded (nothing to retry), that is a sub-run (retry its top run), or
    /// whose workflow is gone.
    pub async fn retry_workflow_run(
        &self,
        run_id: i64,
        trigger: Trigger,
        now: i64,
    ) -> Result<WorkflowRunRow, StoreError> {
        let mut tx = self.begin_write().await?;
        let Some(old) = load_run(&mut tx, run_id).await? else {
            return Err(StoreError::NotFound(format!("workflow run {run_id}")));
        };
        if !old.status.is_final() {
            return Err(StoreError::Invalid(format!(
                "run: {run_id} is still {}; cancel it or wait for its end",
                old.status
            )));
        }
        if old.status == WorkflowRunStatus::Succeeded {
            return Err(StoreError::Invalid(format!(
                "run: {run_id} succeeded: there is nothing to retry"
            )));
        }
        if let Some(parent) = old.parent_node_run_id {
            return Err(StoreError::Invalid(format!(
                "run: {run_id} is a sub-workflow run (of node run {parent}); retry the run of \
                 run {}",
                old.root_run_id
            )));
        }
        let Some(workflow_id) = old.workflow_id else {
            return Err(StoreError::NotFound(format!(
                "workflow `{}` of run {run_id} (deleted)",
                old.workflow_name
            )));
        };
        let kept: HashMap<String, NodeRunRow> = load_node_runs(&mut tx, run_id)
            .await?
            .into_iter()
            .map(|n| (n.node_id.clone(), n))
            .collect();
        let env = self.env(now);
        let run = create_run(
            &mut tx,
            &env,
            &NewRun {
                workflow_id,
                workflow_name: &old.workflow_name,
                version: old.workflow_version,
                trigger,
                input: &old.input,
                retry_of: Some(run_id),
                attempt: old.attempt + 1,
                parent_node_run_id: None,
                root_run_id: None,
                depth: 1,
                queued: false,
                serial: false,
                scheduled_for: None,
                kept: &kept,
            },
            false,
        )
        .await?
        .ok_or_else(|| StoreError::Corrupt("the retry run was not inserted".into()))?;
        if run.status.is_final() {
            after_end(&mut tx, &env, run.clone()).await?;
        }
        tx.commit().await?;
        Ok(run)
    }

    /// A run with its nodes (a node whose job was claimed reads `running`) and its version's
    /// graph.
    pub async fn get_workflow_run(&self, id: i64) -> Result<Option<WorkflowRunDetail>, StoreError> {
        let mut conn = self.read.acquire().await?;
        let Some(run) = load_run(&mut conn, id).await? else {
            return Ok(None);
        };
        // The node runs as one row (see `load_node_runs`), then which of the queued ones have
        // their job claimed already: shown `running`. Two statements whatever the run's size.
        let mut nodes = load_node_runs(&mut conn, id).await?;
        if nodes.iter().any(|n| n.status == NodeRunStatus::Queued) {
            let running: Vec<i64> = sqlx::query_scalar(
                "SELECT j.id FROM workflow_node_runs n JOIN jobs j ON j.id = n.job_id \
                 WHERE n.run_id = $1 AND n.status = 'queued' AND j.status = 'running'",
            )
            .bind(id)
            .fetch_all(&mut *conn)
            .await?;
            for n in nodes.iter_mut() {
                if n.status == NodeRunStatus::Queued
                    && n.job_id.is_some_and(|j| running.contains(&j))
                {
                    n.status = NodeRunStatus::Running;
                }
            }
        }
        let graph = match run.workflow_id {
            Some(w) => load_graph(&mut conn, w, run.workflow_version).await?,
            None => None,
        };
        Ok(Some(WorkflowRunDetail { run, nodes, graph }))
    }

    /// Runs matching `filter`, newest first.
    pub async fn list_workflow_runs(
        &self,
        filter: &RunFilter,
    ) -> Result<Vec<WorkflowRunRow>, StoreError> {
        let limit = filter.limit.unwrap_or(100);
        if !(1..=10_000).contains(&limit) {
            return Err(StoreError::Invalid(format!(
                "limit: must be between 1 and 10000, got {limit}"
            )));
        }
        let mut sql = String::from(concat!(
            "SELECT ",
            run_cols!(),
            " FROM workflow_runs WHERE 1 = 1"
        ));
        let mut n = 0;
        let mut next = || {
            n += 1;
            n
        };
        if filter.workflow_id.is_some() {
            sql.push_str(&format!(" AND workflow_id = ${}", next()));
        }
        if filter.workflow_name.is_some() {
            sql.push_str(&format!(" AND workflow_name = ${}", next()));
        }
        if filter.status.is_some() {
            sql.push_str(&format!(" AND status = ${}", next()));
        }
        if filter.before_id.is_some() {
            sql.push_str(&format!(" AND id < ${}", next()));
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", next()));
        let mut query = sqlx::query(&sql);
        if let Some(v) = filter.workflow_id {
            query = query.bind(v);
        }
        if let Some(v) = &filter.workflow_name {
            query = query.bind(v.as_str());
        }
        if let Some(v) = filter.status {
            query = query.bind(v.as_str());
        }
        if let Some(v) = filter.before_id {
            query = query.bind(v);
        }
        let rows = query.bind(limit).fetch_all(&self.read).await?;
        rows.iter().map(run_row).collect()
    }

    /// The run a node run belongs to, and the node's id (a node job's page links back to it).
    pub async fn workflow_run_of_node_run(
        &self,
        node_run_id: i64,
    ) -> Result<Option<(i64, String)>, StoreError> {
        let row = sqlx::query("SELECT run_id, node_id FROM workflow_node_runs WHERE id = $1")
            .bind(node_run_id)
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| Ok((i64_col(&r, "run_id")?, text(&r, "node_id")?)))
            .transpose()
    }

    /// Whether the workflow has a top run queued or running (overlap policy).
    pub async fn has_active_workflow_run(&self, workflow_id: i64) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT id FROM workflow_runs WHERE workflow_id = $1 AND depth = 1 \
             AND status IN ('queued', 'running') LIMIT 1",
        )
        .bind(workflow_id)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.is_some())
    }
}
