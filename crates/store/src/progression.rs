//! The workflow engine, inside the store's transactions: what happens when a node's job ends,
//! when a run starts, is stopped or ends. There is no polling loop: every path that ends a
//! node's job calls [`job_ended`] in the transaction that ended it, which records the node's
//! outcome and decides, with the pure rules of `cronium_model::workflow`, every node that became
//! decidable (inserting its job, starting its sub-run, or skipping it with the reason), until
//! nothing more can be decided; a run whose nodes have all ended gets its final status, and a
//! sub-run's end is its parent node's end. A crash at any point therefore loses nothing and
//! repeats nothing: the next step is part of the commit that made it due.
//!
//! Concurrency: a tree of runs (a top run and its sub-runs) has one lock, the row of its root
//! run (`FOR UPDATE` on PostgreSQL; SQLite's write transaction holds the database). Every
//! progression takes it before it reads or writes any run or node run of the tree, and before
//! the job row it ends, so two branches ending at once are decided one after the other and a
//! join sees both ends: exactly one job for it. Claims, heartbeats and log writes never take it.
//!
//! The engine never runs anything: a node's run is an ordinary job (trigger `workflow`).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use cronium_model::workflow::{
    decide, merge_input, run_status, Decision, EdgeKind, NodeEnd, NodeKind, NodeRunStatus, Outcome,
    Upstream, WorkflowRunStatus, MAX_DEPTH,
};
use cronium_model::{Capability, EventStatus, JobPolicy, JobStatus, Routing, Trigger};
use serde_json::Value;
use sqlx::AnyConnection;

use crate::events::{event_cols, event_row, pause_event};
use crate::jobs::{check_limit, insert_job, Limit, NewJob, NodeLink};
use crate::row::{bool_int, i64_col, json, opt_i64, to_json, word};
use crate::store::map_opt;
use crate::workflow_runs::{load_node_run, load_node_runs, load_run, NodeRunRow, WorkflowRunRow};
use crate::workflows::{load_graph, load_version, GraphCache, WorkflowGraph, WorkflowNodeRow};
use crate::JobRow;
use crate::StoreError;

/// What every step of a progression needs: the row-lock suffix of the backend and the caller's
/// clock.
pub(crate) struct Env {
    pub for_update: &'static str,
    pub now: i64,
    /// The node jobs enqueued in this transaction, in order (for a hand-off to the worker that
    /// ended their predecessor: [`crate::Store::finish_attempt_and_claim`]).
    pub enqueued: std::sync::Mutex<Vec<i64>>,
    /// The store's cache of version graphs, read through by [`progress`]; None reads the rows.
    pub graphs: Option<std::sync::Arc<GraphCache>>,
}

impl Env {
    pub(crate) fn new(for_update: &'static str, now: i64) -> Self {
        Env {
            for_update,
            now,
            enqueued: Default::default(),
            graphs: None,
        }
    }

    /// The graph of version `version` of workflow `workflow_id`, through the cache if any.
    async fn graph(
        &self,
        conn: &mut AnyConnection,
        workflow_id: i64,
        version: i64,
    ) -> Result<Option<std::sync::Arc<WorkflowGraph>>, StoreError> {
        match &self.graphs {
            Some(cache) => cache.get(conn, workflow_id, version).await,
            None => Ok(load_graph(conn, workflow_id, version)
                .await?
                .map(std::sync::Arc::new)),
        }
    }
}

/// Locks the trees of `runs` (their root rows), lowest root first so that two transactions
/// locking several trees cannot wait on each other.
pub(crate) async fn lock_trees(
    conn: &mut AnyConnection,
    for_update: &str,
    runs: &[i64],
) -> Result<(), StoreError> {
    if for_update.is_empty() {
        // SQLite: the write transaction already holds the database.
        return Ok(());
    }
    let mut roots = Vec::with_capacity(runs.len());
    for run in runs {
        let row = sqlx::query("SELECT root_run_id FROM workflow_runs WHERE id = $1")
            .bind(run)
            .fetch_optional(&mut *conn)
            .await?;
        if let Some(row) = row {
            roots.push(opt_i64(&row, "root_run_id")?.unwrap_or(*run));
        }
    }
    roots.sort_unstable();
    roots.dedup();
    for root in roots {
        sqlx::query(&format!(
            "SELECT id FROM workflow_runs WHERE id = $1{for_update}"
        ))
        .bind(root)
        .fetch_optional(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Locks the tree of the run job `job_id` is a node of, and returns its node run; None (nothing
/// locked) for a job that is no node's, or no job.
pub(crate) async fn lock_job_tree(
    conn: &mut AnyConnection,
    for_update: &str,
    job_id: i64,
) -> Result<Option<i64>, StoreError> {
    let row = sqlx::query(
        "SELECT j.node_run_id AS node_run_id, n.run_id AS run_id FROM jobs j \
         LEFT JOIN workflow_node_runs n ON n.id = j.node_run_id WHERE j.id = $1",
    )
    .bind(job_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let Some(node_run) = opt_i64(&row, "node_run_id")? else {
        return Ok(None);
    };
    if let Some(run) = opt_i64(&row, "run_id")? {
        lock_trees(conn, for_update, &[run]).await?;
    }
    Ok(Some(node_run))
}

/// Called by every path that put a job in a final state, in the same transaction and after the
/// job's tree was locked ([`lock_job_tree`]): records the node's outcome and lets its run
/// progress. A job that is no node's, or whose node has already ended, changes nothing.
pub(crate) async fn job_ended(
    conn: &mut AnyConnection,
    env: Env,
    job: &JobRow,
) -> Result<Vec<i64>, StoreError> {
    let Some(node_run) = job.node_run_id else {
        return Ok(Vec::new());
    };
    if !job.status.is_final() {
        return Ok(Vec::new());
    }
    let error = if job.status == JobStatus::Succeeded {
        None
    } else {
        Some(
            job.error
                .clone()
                .unwrap_or_else(|| format!("job {} {}", job.id, job.status)),
        )
    };
    let ended = record_job_node_end(conn, &env, node_run, job, error.as_deref()).await?;
    let Some(run_id) = ended else {
        return Ok(Vec::new());
    };
    if let Some(run) = progress(conn, &env, run_id).await? {
        after_end(conn, &env, run).await?;
    }
    Ok(env.enqueued.into_inner().unwrap_or_default())
}

/// Ends the node run of a node's job that has not ended yet, in one statement: its status, its
/// output and, when it succeeded, the condition its job set: among the executions of its last
/// attempt that succeeded, true only when every one of them set it true (a fan-out whose
/// servers disagree, or where some did not set it, reads as false); null when none of them set
/// it. Returns its run, None when it had already ended.
async fn record_job_node_end(
    conn: &mut AnyConnection,
    env: &Env,
    node_run: i64,
    job: &JobRow,
    error: Option<&str>,
) -> Result<Option<i64>, StoreError> {
    const SET: &str = "UPDATE workflow_node_runs SET status = $1, output = $2, condition = ";
    const OF_JOB: &str = "(SELECT CASE WHEN COUNT(condition) = 0 THEN NULL \
         WHEN COUNT(condition) = COUNT(*) AND MIN(condition) = 1 THEN 1 ELSE 0 END \
         FROM executions WHERE job_id = $6 AND attempt = $7 AND status = 'succeeded')";
    const REST: &str = ", error = COALESCE($3, error), finished_at = $4 \
         WHERE id = $5 AND status IN ('waiting', 'queued', 'running') RETURNING run_id";
    let condition = if job.status == JobStatus::Succeeded {
        OF_JOB
    } else {
        "NULL"
    };
    let sql = format!("{SET}{condition}{REST}");
    let mut q = sqlx::query(&sql)
        .bind(NodeRunStatus::from_job(job.status).as_str())
        .bind(to_json("output", &job.output)?)
        .bind(error)
        .bind(env.now)
        .bind(node_run);
    if job.status == JobStatus::Succeeded {
        q = q.bind(job.id).bind(i64::from(job.attempt));
    }
    let row = q.fetch_optional(&mut *conn).await?;
    map_opt(row, |r| i64_col(r, "run_id"))
}

/// Ends a node run that has not ended yet; returns its run, None when it had already ended.
async fn record_node_end(
    conn: &mut AnyConnection,
    env: &Env,
    node_run: i64,
    status: NodeRunStatus,
    output: &Value,
    condition: Option<bool>,
    error: Option<&str>,
) -> Result<Option<i64>, StoreError> {
    let row = sqlx::query(
        "UPDATE workflow_node_runs SET status = $1, output = $2, condition = $3, \
         error = COALESCE($4, error), finished_at = $5 \
         WHERE id = $6 AND status IN ('waiting', 'queued', 'running') RETURNING run_id",
    )
    .bind(status.as_str())
    .bind(to_json("output", output)?)
    .bind(condition.map(bool_int))
    .bind(error)
    .bind(env.now)
    .bind(node_run)
    .fetch_optional(&mut *conn)
    .await?;
    map_opt(row, |r| i64_col(r, "run_id"))
}

/// A new run to insert ([`create_run`]).
pub(crate) struct NewRun<'a> {
    pub workflow_id: i64,
    pub workflow_name: &'a str,
    pub version: i64,
    pub trigger: Trigger,
    pub input: &'a Value,
    pub retry_of: Option<i64>,
    pub attempt: i32,
    pub parent_node_run_id: Option<i64>,
    /// None: the run is the root of its own tree.
    pub root_run_id: Option<i64>,
    pub depth: i32,
    /// Queued behind an active run of the workflow (overlap: queue): inserted `queued`, its
    /// nodes decided when it starts.
    pub queued: bool,
    pub serial: bool,
    pub scheduled_for: Option<i64>,
    /// Node runs of an earlier attempt kept as they ended (retry): by node id.
    pub kept: &'a HashMap<String, NodeRunRow>,
}

/// Inserts a run and one node run per node of its version (waiting, or kept from the attempt
/// it retries), then, unless it is queued, decides its start nodes at once. None when
/// `skip_duplicate_tick` and the tick already has a run. The run may have ended by the time
/// this returns (every start node failed at once): the caller then hands it to
/// [`after_end`] unless it is a sub-run its parent is deciding.
pub(crate) async fn create_run(
    conn: &mut AnyConnection,
    env: &Env,
    new: &NewRun<'_>,
    skip_duplicate_tick: bool,
) -> Result<Option<WorkflowRunRow>, StoreError> {
    let version = load_version(conn, new.workflow_id, new.version)
        .await?
        .ok_or_else(|| {
            StoreError::NotFound(format!(
                "version {} of workflow `{}`",
                new.version, new.workflow_name
            ))
        })?;
    let graph = load_graph(conn, new.workflow_id, new.version)
        .await?
        .ok_or_else(|| {
            StoreError::Corrupt(format!(
                "version {} of workflow `{}` has no graph rows",
                new.version, new.workflow_name
            ))
        })?;
    let (status, started_at, deadline) = if new.queued {
        (WorkflowRunStatus::Queued, None, None)
    } else {
        let deadline = version.timeout_ms.map(|t| env.now.saturating_add(t));
        (WorkflowRunStatus::Running, Some(env.now), deadline)
    };
    let conflict = if skip_duplicate_tick {
        " ON CONFLICT (workflow_id, scheduled_for) DO NOTHING"
    } else {
        ""
    };
    let sql = format!(
        "INSERT INTO workflow_runs (workflow_id, workflow_name, workflow_version, trigger_kind, \
         status, input, retry_of, attempt, parent_node_run_id, root_run_id, depth, serial, \
         scheduled_for, deadline_at, created_at, started_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16){conflict} \
         RETURNING id"
    );
    let row = sqlx::query(&sql)
        .bind(new.workflow_id)
        .bind(new.workflow_name)
        .bind(new.version)
        .bind(new.trigger.as_str())
        .bind(status.as_str())
        .bind(to_json("input", new.input)?)
        .bind(new.retry_of)
        .bind(i64::from(new.attempt))
        .bind(new.parent_node_run_id)
        .bind(new.root_run_id)
        .bind(i64::from(new.depth))
        .bind(bool_int(new.serial))
        .bind(new.scheduled_for)
        .bind(deadline)
        .bind(env.now)
        .bind(started_at)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let run_id = i64_col(&row, "id")?;
    if new.root_run_id.is_none() {
        sqlx::query("UPDATE workflow_runs SET root_run_id = id WHERE id = $1")
            .bind(run_id)
            .execute(&mut *conn)
            .await?;
    }
    for node in &graph.nodes {
        let kept = new
            .kept
            .get(&node.node_id)
            .filter(|k| k.status == NodeRunStatus::Succeeded);
        let reason = new.retry_of.map(|old| format!("kept from run {old}"));
        match kept {
            Some(k) => {
                sqlx::query(
                    "INSERT INTO workflow_node_runs (run_id, node_id, position, kind, status, \
                     job_id, sub_run_id, input, output, condition, reason, started_at, \
                     finished_at) VALUES ($1, $2, $3, $4, 'succeeded', $5, $6, $7, $8, $9, $10, \
                     $11, $12)",
                )
                .bind(run_id)
                .bind(node.node_id.as_str())
                .bind(i64::from(node.position))
                .bind(node.kind.as_str())
                .bind(k.job_id)
                .bind(k.sub_run_id)
                .bind(to_json("input", &k.input)?)
                .bind(to_json("output", &k.output)?)
                .bind(k.condition.map(bool_int))
                .bind(reason)
                .bind(k.started_at)
                .bind(k.finished_at)
                .execute(&mut *conn)
                .await?;
            }
            None => {
                sqlx::query(
                    "INSERT INTO workflow_node_runs (run_id, node_id, position, kind, status) \
                     VALUES ($1, $2, $3, $4, 'waiting')",
                )
                .bind(run_id)
                .bind(node.node_id.as_str())
                .bind(i64::from(node.position))
                .bind(node.kind.as_str())
                .execute(&mut *conn)
                .await?;
            }
        }
    }
    if !new.queued {
        progress(conn, env, run_id).await?;
    }
    load_run(conn, run_id).await
}

/// The future of [`progress`], boxed: a run's progression may start a sub-run, whose own
/// progression is this same function.
type Progress<'a> =
    Pin<Box<dyn Future<Output = Result<Option<WorkflowRunRow>, StoreError>> + Send + 'a>>;

/// Decides every waiting node of run `run_id` whose upstream nodes have all ended (in
/// topological order, so that skips and immediate failures propagate in one pass), then ends
/// the run when all its nodes have ended. Returns the run when this call ended it. A stopped
/// run (cancelled, timed out) decides nothing more: it only ends once its last node has.
pub(crate) fn progress<'a>(conn: &'a mut AnyConnection, env: &'a Env, run_id: i64) -> Progress<'a> {
    Box::pin(async move {
        let Some(run) = load_run(conn, run_id).await? else {
            return Ok(None);
        };
        let stopped_while_queued = run.status == WorkflowRunStatus::Queued && run.stop.is_some();
        if run.status != WorkflowRunStatus::Running && !stopped_while_queued {
            return Ok(None);
        }
        let graph = match run.workflow_id {
            Some(w) => env.graph(conn, w, run.workflow_version).await?,
            None => None,
        };
        let mut nodes = load_node_runs(conn, run_id).await?;
        if let (None, Some(graph)) = (run.stop, &graph) {
            for idx in graph.order() {
                let node = &graph.nodes[idx];
                let Some(pos) = nodes.iter().position(|n| n.node_id == node.node_id) else {
                    continue;
                };
                if nodes[pos].status != NodeRunStatus::Waiting {
                    continue;
                }
                let decision = {
                    let upstream: Vec<Upstream<'_>> = node
                        .after
                        .iter()
                        .map(|(from, kind)| Upstream {
                            node: from,
                            kind: *kind,
                            // An upstream without a node run cannot happen (one per node is
                            // inserted with the run); reading it as skipped keeps the run moving.
                            outcome: nodes
                                .iter()
                                .find(|n| &n.node_id == from)
                                .map(|n| Outcome::new(n.status, n.condition))
                                .unwrap_or(Outcome::new(NodeRunStatus::Skipped, None)),
                        })
                        .collect();
                    decide(node.join, &upstream)
                };
                match decision {
                    Decision::Wait { .. } => {}
                    Decision::Skip { reason } => {
                        sqlx::query(
                            "UPDATE workflow_node_runs SET status = 'skipped', reason = $1, \
                             finished_at = $2 WHERE id = $3 AND status = 'waiting'",
                        )
                        .bind(&reason)
                        .bind(env.now)
                        .bind(nodes[pos].id)
                        .execute(&mut *conn)
                        .await?;
                        nodes[pos].status = NodeRunStatus::Skipped;
                        nodes[pos].reason = Some(reason);
                    }
                    Decision::Run { reason } => {
                        let input = {
                            let outputs: Vec<(&str, &Value)> = node
                                .after
                                .iter()
                                .filter_map(|(from, _)| {
                                    nodes
                                        .iter()
                                        .find(|n| &n.node_id == from)
                                        .map(|n| (from.as_str(), &n.output))
                                })
                                .collect();
                            merge_input(&run.input, &node.input, &outputs)
                        };
                        nodes[pos] =
                            start_node(conn, env, &run, node, &nodes[pos], &reason, input).await?;
                    }
                }
            }
        }
        if !nodes.iter().all(|n| n.status.is_final()) {
            return Ok(None);
        }
        end_run(conn, env, &run, graph.as_deref(), &nodes).await?;
        load_run(conn, run_id).await
    })
}

/// Gives a run whose nodes have all ended its final status (PRODUCT.md's rule), its output (the
/// outputs of its end nodes that succeeded, merged as a node's input would be) and, when it
/// failed, which node made it fail.
async fn end_run(
    conn: &mut AnyConnection,
    env: &Env,
    run: &WorkflowRunRow,
    graph: Option<&WorkflowGraph>,
    nodes: &[NodeRunRow],
) -> Result<(), StoreError> {
    let outgoing: Vec<Vec<EdgeKind>> = nodes
        .iter()
        .map(|n| graph.map(|g| g.outgoing(&n.node_id)).unwrap_or_default())
        .collect();
    let ends: Vec<NodeEnd<'_>> = nodes
        .iter()
        .zip(&outgoing)
        .map(|(n, out)| NodeEnd {
            status: n.status,
            outgoing: out,
        })
        .collect();
    let status = run_status(&ends, run.stop);
    let sinks: Vec<(&str, &Value)> = nodes
        .iter()
        .zip(&outgoing)
        .filter(|(n, out)| out.is_empty() && n.status == NodeRunStatus::Succeeded)
        .map(|(n, _)| (n.node_id.as_str(), &n.output))
        .collect();
    let output = merge_input(&Value::Null, &Value::Null, &sinks);
    let culprit = nodes.iter().zip(&outgoing).find(|(n, out)| match status {
        WorkflowRunStatus::Failed => {
            matches!(n.status, NodeRunStatus::Failed | NodeRunStatus::TimedOut)
                && !out
                    .iter()
                    .any(|k| matches!(k, EdgeKind::Failure | EdgeKind::Always))
        }
        WorkflowRunStatus::Cancelled if run.stop.is_none() => {
            n.status == NodeRunStatus::Cancelled && !out.contains(&EdgeKind::Always)
        }
        _ => false,
    });
    let error = culprit.map(|(n, _)| {
        let what = match n.status {
            NodeRunStatus::TimedOut => "timed out",
            NodeRunStatus::Cancelled => "was cancelled",
            _ => "failed",
        };
        let mut e = format!(
            "node `{}` {what} and no failure or always edge leaves it",
            n.node_id
        );
        if n.status == NodeRunStatus::Cancelled {
            e = format!("node `{}` {what} and no always edge leaves it", n.node_id);
        }
        match &n.error {
            Some(why) => format!("{e}: {why}"),
            None => e,
        }
    });
    sqlx::query(
        "UPDATE workflow_runs SET status = $1, output = $2, error = COALESCE(error, $3), \
         finished_at = $4 WHERE id = $5 AND status IN ('queued', 'running')",
    )
    .bind(status.as_str())
    .bind(to_json("output", &output)?)
    .bind(error)
    .bind(env.now)
    .bind(run.id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// What follows the end of a run: the next run of its workflow queued behind it starts (overlap
/// `queue`, top runs only), and a sub-run's end is its parent node's end, whose run then
/// progresses, up the tree.
pub(crate) async fn after_end(
    conn: &mut AnyConnection,
    env: &Env,
    run: WorkflowRunRow,
) -> Result<(), StoreError> {
    let mut ended = run;
    loop {
        if ended.depth == 1 {
            if let Some(workflow_id) = ended.workflow_id {
                start_queued_runs(conn, env, workflow_id).await?;
            }
        }
        let Some(parent) = ended.parent_node_run_id else {
            return Ok(());
        };
        let Some(parent_run) = record_node_end(
            conn,
            env,
            parent,
            NodeRunStatus::from_run(ended.status),
            &ended.output,
            None,
            ended.error.as_deref(),
        )
        .await?
        else {
            return Ok(());
        };
        match progress(conn, env, parent_run).await? {
            Some(run) => ended = run,
            None => return Ok(()),
        }
    }
}

/// Starts the oldest run of a workflow queued behind an active one, if no top run of it is
/// running any more (and the next, should that one end at once).
async fn start_queued_runs(
    conn: &mut AnyConnection,
    env: &Env,
    workflow_id: i64,
) -> Result<(), StoreError> {
    loop {
        let running = sqlx::query(
            "SELECT id FROM workflow_runs WHERE workflow_id = $1 AND status = 'running' \
             AND depth = 1 LIMIT 1",
        )
        .bind(workflow_id)
        .fetch_optional(&mut *conn)
        .await?;
        if running.is_some() {
            return Ok(());
        }
        let next = sqlx::query(
            "SELECT id, workflow_version FROM workflow_runs WHERE workflow_id = $1 \
             AND status = 'queued' AND stop_status IS NULL ORDER BY id LIMIT 1",
        )
        .bind(workflow_id)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(next) = next else {
            return Ok(());
        };
        let id = i64_col(&next, "id")?;
        lock_trees(conn, env.for_update, &[id]).await?;
        let timeout = load_version(conn, workflow_id, i64_col(&next, "workflow_version")?)
            .await?
            .and_then(|v| v.timeout_ms);
        let started = sqlx::query(
            "UPDATE workflow_runs SET status = 'running', started_at = $1, deadline_at = $2 \
             WHERE id = $3 AND status = 'queued'",
        )
        .bind(env.now)
        .bind(timeout.map(|t| env.now.saturating_add(t)))
        .bind(id)
        .execute(&mut *conn)
        .await?;
        if started.rows_affected() == 0 {
            return Ok(());
        }
        // Ended at once (every start node failed): the next queued one may start too.
        if progress(conn, env, id).await?.is_none() {
            return Ok(());
        }
    }
}

/// Starts a node the rules say runs: inserts its job (policy from the rows: the event's columns
/// under the node's overrides) or starts its sub-run. A node that cannot start (its event is
/// gone, archived, without a stored policy, or at its `max_executions`; its sub-workflow is gone
/// or would nest too deep) fails at once with the reason in `error`, so that `failure` edges
/// handle it. Returns the node run as it now stands.
#[allow(clippy::too_many_arguments)]
async fn start_node(
    conn: &mut AnyConnection,
    env: &Env,
    run: &WorkflowRunRow,
    node: &WorkflowNodeRow,
    current: &NodeRunRow,
    reason: &str,
    input: Value,
) -> Result<NodeRunRow, StoreError> {
    let node_run = current.id;
    let input_text = to_json("input", &input)?;
    let started = match node.kind {
        NodeKind::Event | NodeKind::Inline => {
            match node_job(conn, env, node, node_run, input.clone()).await? {
                Ok(job_id) => {
                    sqlx::query(
                        "UPDATE workflow_node_runs SET status = 'queued', job_id = $1, input = $2, \
                         reason = $3, started_at = $4 WHERE id = $5",
                    )
                    .bind(job_id)
                    .bind(&input_text)
                    .bind(reason)
                    .bind(env.now)
                    .bind(node_run)
                    .execute(&mut *conn)
                    .await?;
                    // What the statement wrote, without reading it back (the common path).
                    return Ok(NodeRunRow {
                        status: NodeRunStatus::Queued,
                        job_id: Some(job_id),
                        input,
                        reason: Some(reason.to_string()),
                        started_at: Some(env.now),
                        ..current.clone()
                    });
                }
                Err(why) => Err(why),
            }
        }
        NodeKind::Workflow => start_sub_run(conn, env, run, node, node_run, reason, &input).await?,
    };
    if let Err(why) = started {
        sqlx::query(
            "UPDATE workflow_node_runs SET status = 'failed', input = $1, reason = $2, error = $3, \
             started_at = $4, finished_at = $4 WHERE id = $5",
        )
        .bind(&input_text)
        .bind(reason)
        .bind(why)
        .bind(env.now)
        .bind(node_run)
        .execute(&mut *conn)
        .await?;
    }
    load_node_run(conn, node_run)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("node run {node_run} vanished")))
}

/// Inserts the job of an event or inline node; `Ok(Err(why))` when it cannot be made.
async fn node_job(
    conn: &mut AnyConnection,
    env: &Env,
    node: &WorkflowNodeRow,
    node_run: i64,
    input: Value,
) -> Result<Result<i64, String>, StoreError> {
    let name = node.event_name.clone().unwrap_or_default();
    let event = match node.kind {
        NodeKind::Inline => {
            let sql = concat!("SELECT ", event_cols!(), " FROM events WHERE id = $1");
            sqlx::query(sql)
                .bind(node.event_id)
                .fetch_optional(&mut *conn)
                .await?
        }
        _ => {
            let sql = concat!(
                "SELECT ",
                event_cols!(),
                " FROM events WHERE name = $1 AND workflow_id IS NULL"
            );
            sqlx::query(sql)
                .bind(&name)
                .fetch_optional(&mut *conn)
                .await?
        }
    };
    let Some(event) = map_opt(event, event_row)? else {
        return Ok(Err(format!("event `{name}` no longer exists")));
    };
    let (version, policy) = match node.kind {
        NodeKind::Inline => {
            // Pinned: this workflow version's script, with the policy written beside it.
            let version = node.event_version.unwrap_or(event.version);
            (version, node.policy.apply(&JobPolicy::default()))
        }
        _ => {
            if event.status == EventStatus::Archived {
                return Ok(Err(format!("event `{name}` is archived and cannot run")));
            }
            let Some(base) = event.policy else {
                return Ok(Err(format!(
                    "event `{name}` has no stored job policy (it was written before workflows \
                     existed): apply it again"
                )));
            };
            (event.version, node.policy.apply(&base))
        }
    };
    let job = NewJob {
        event_id: Some(event.id),
        event_name: event.name.clone(),
        event_version: version,
        trigger: Trigger::Workflow,
        input,
        run_at: env.now,
        max_attempts: policy.max_attempts,
        backoff_ms: policy.backoff_ms,
        max_backoff_ms: policy.max_backoff_ms,
        serial: false,
        scheduled_for: None,
        timeout_ms: policy.timeout_ms,
        max_executions: policy.max_executions,
        routing: Routing::default(),
    };
    let spec = if version == event.version {
        event.spec.clone()
    } else {
        // An inline node pinned to an older version of its workflow.
        let row =
            sqlx::query("SELECT spec FROM event_versions WHERE event_id = $1 AND version = $2")
                .bind(event.id)
                .bind(version)
                .fetch_optional(&mut *conn)
                .await?;
        map_opt(row, |r| json(r, "spec"))?.unwrap_or(Value::Null)
    };
    let job = NewJob {
        routing: node_routing(&spec, &node.overrides),
        ..job
    };
    let last = match check_limit(conn, env.for_update, &job).await? {
        Limit::Unlimited => false,
        Limit::Allows { last } => last,
        Limit::Reached { limit } => {
            pause_event(conn, event.id, env.now).await?;
            return Ok(Err(StoreError::LimitReached {
                event: event.name,
                limit,
            }
            .to_string()));
        }
    };
    let link = NodeLink {
        node_run_id: Some(node_run),
        overrides: &node.overrides,
    };
    let row = insert_job(conn, &job, Some(link), env.now, false)
        .await?
        .ok_or_else(|| StoreError::Conflict("scheduled_for".into()))?;
    if let Ok(mut enqueued) = env.enqueued.lock() {
        enqueued.push(row.id);
    }
    if last {
        pause_event(conn, event.id, env.now).await?;
    }
    Ok(Ok(row.id))
}

/// Who may claim a node's job, from the stored event spec and the node's overrides (both as
/// written by cronium-core: `target` is `"local"`, `{"container": ...}` or a servers mapping):
/// the override's `agent_tags` replace the event's, its `target` the event's.
pub(crate) fn node_routing(spec: &Value, overrides: &Value) -> Routing {
    let target = overrides
        .get("target")
        .or_else(|| spec.get("target"))
        .unwrap_or(&Value::Null);
    let capability = match target {
        Value::Object(m) if m.contains_key("container") => Capability::Container,
        Value::Object(_) => Capability::Ssh,
        Value::String(s) if s == "container" => Capability::Container,
        _ => Capability::Local,
    };
    let tags = overrides
        .get("agent_tags")
        .or_else(|| spec.get("agent_tags"))
        .and_then(Value::as_array)
        .map(|tags| {
            tags.iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Routing {
        capability,
        agent_tags: tags,
    }
}

/// Starts the sub-run of a `workflow` node (its input: the node's merged input), ending the
/// node at once when the sub-run ended at once. `Ok(Err(why))` when it cannot start.
#[allow(clippy::too_many_arguments)]
async fn start_sub_run(
    conn: &mut AnyConnection,
    env: &Env,
    run: &WorkflowRunRow,
    node: &WorkflowNodeRow,
    node_run: i64,
    reason: &str,
    input: &Value,
) -> Result<Result<(), String>, StoreError> {
    let name = node.sub_workflow.clone().unwrap_or_default();
    let wf = sqlx::query("SELECT id, version, status FROM workflows WHERE name = $1")
        .bind(&name)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(wf) = wf else {
        return Ok(Err(format!("workflow `{name}` no longer exists")));
    };
    if word::<EventStatus>(&wf, "status")? == EventStatus::Archived {
        return Ok(Err(format!("workflow `{name}` is archived and cannot run")));
    }
    if run.depth >= MAX_DEPTH {
        return Ok(Err(format!(
            "workflow `{name}` not started: sub-workflows nest at most {MAX_DEPTH} levels deep"
        )));
    }
    sqlx::query(
        "UPDATE workflow_node_runs SET status = 'running', input = $1, reason = $2, started_at = $3 \
         WHERE id = $4",
    )
    .bind(to_json("input", input)?)
    .bind(reason)
    .bind(env.now)
    .bind(node_run)
    .execute(&mut *conn)
    .await?;
    let kept = HashMap::new();
    let child = create_run(
        conn,
        env,
        &NewRun {
            workflow_id: i64_col(&wf, "id")?,
            workflow_name: &name,
            version: i64_col(&wf, "version")?,
            trigger: Trigger::Workflow,
            input,
            retry_of: None,
            attempt: 1,
            parent_node_run_id: Some(node_run),
            root_run_id: Some(run.root_run_id),
            depth: run.depth + 1,
            queued: false,
            serial: false,
            scheduled_for: None,
            kept: &kept,
        },
        false,
    )
    .await?
    .ok_or_else(|| StoreError::Corrupt("a sub-run was not inserted".into()))?;
    sqlx::query("UPDATE workflow_node_runs SET sub_run_id = $1 WHERE id = $2")
        .bind(child.id)
        .bind(node_run)
        .execute(&mut *conn)
        .await?;
    if child.status.is_final() {
        record_node_end(
            conn,
            env,
            node_run,
            NodeRunStatus::from_run(child.status),
            &child.output,
            None,
            child.error.as_deref(),
        )
        .await?;
    }
    Ok(Ok(()))
}

/// Stops run `run_id` and every active sub-run below it (cancel, timeout, workflow deleted):
/// marks them stopped, skips their waiting nodes, cancels their queued node jobs and asks the
/// running ones to stop (`cancel_requested`, seen by their workers' heartbeats). Runs with no
/// node left running end at once (deepest first, so that a sub-run's end reaches its parent
/// node); the others end when their last job does. The caller holds the tree's lock.
pub(crate) async fn stop_tree(
    conn: &mut AnyConnection,
    env: &Env,
    run_id: i64,
    stop: WorkflowRunStatus,
    why: &str,
) -> Result<(), StoreError> {
    let mut runs = vec![run_id];
    let mut i = 0;
    while i < runs.len() {
        let children = sqlx::query(
            "SELECT n.sub_run_id AS sub_run_id FROM workflow_node_runs n \
             JOIN workflow_runs r ON r.id = n.sub_run_id \
             WHERE n.run_id = $1 AND r.status IN ('queued', 'running') ORDER BY n.position",
        )
        .bind(runs[i])
        .fetch_all(&mut *conn)
        .await?;
        for c in &children {
            runs.push(i64_col(c, "sub_run_id")?);
        }
        i += 1;
    }
    for &run in &runs {
        sqlx::query(
            "UPDATE workflow_runs SET stop_status = $1, error = COALESCE(error, $2) \
             WHERE id = $3 AND status IN ('queued', 'running') AND stop_status IS NULL",
        )
        .bind(stop.as_str())
        .bind(why)
        .bind(run)
        .execute(&mut *conn)
        .await?;
        for node in load_node_runs(conn, run).await? {
            match (node.status, node.job_id) {
                (NodeRunStatus::Waiting, _) => {
                    sqlx::query(
                        "UPDATE workflow_node_runs SET status = 'skipped', reason = $1, \
                         finished_at = $2 WHERE id = $3 AND status = 'waiting'",
                    )
                    .bind(format!("skipped: {why}"))
                    .bind(env.now)
                    .bind(node.id)
                    .execute(&mut *conn)
                    .await?;
                }
                (NodeRunStatus::Queued | NodeRunStatus::Running, Some(job)) => {
                    stop_job(conn, env, node.id, job, why).await?;
                }
                // A running sub-workflow node is stopped through its sub-run (in `runs`).
                _ => {}
            }
        }
    }
    for &run in runs.iter().rev() {
        if let Some(ended) = progress(conn, env, run).await? {
            after_end(conn, env, ended).await?;
        }
    }
    Ok(())
}

/// Cancels a node's job if it is still queued (the node ends cancelled), or asks its worker to
/// stop it if it runs (the node ends when the job does).
async fn stop_job(
    conn: &mut AnyConnection,
    env: &Env,
    node_run: i64,
    job: i64,
    why: &str,
) -> Result<(), StoreError> {
    let cancelled = sqlx::query(
        "UPDATE jobs SET status = 'cancelled', finished_at = $1 WHERE id = $2 AND status = 'queued'",
    )
    .bind(env.now)
    .bind(job)
    .execute(&mut *conn)
    .await?;
    if cancelled.rows_affected() > 0 {
        record_node_end(
            conn,
            env,
            node_run,
            NodeRunStatus::Cancelled,
            &Value::Null,
            None,
            Some(why),
        )
        .await?;
        return Ok(());
    }
    sqlx::query("UPDATE jobs SET cancel_requested = 1 WHERE id = $1 AND status = 'running'")
        .bind(job)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_node_job_is_routed_by_its_overrides_then_its_event() {
        let local = json!({"name": "e", "type": "bash", "target": "local", "agent_tags": ["eu"]});
        let r = node_routing(&local, &Value::Null);
        assert_eq!(
            (r.capability, r.agent_tags),
            (Capability::Local, vec!["eu".into()])
        );
        // The node's target and tags replace the event's.
        let r = node_routing(
            &local,
            &json!({"target": {"container": {"image": "alpine"}}, "agent_tags": ["gpu"]}),
        );
        assert_eq!(
            (r.capability, r.agent_tags),
            (Capability::Container, vec!["gpu".into()])
        );
        let r = node_routing(
            &local,
            &json!({"target": {"tags": ["web"], "mode": "runner-ssh"}}),
        );
        assert_eq!(
            (r.capability, r.agent_tags),
            (Capability::Ssh, vec!["eu".into()])
        );
        // An event without either (an http event, a spec written before routing): local, any agent.
        let r = node_routing(&json!({"name": "h", "type": "http"}), &Value::Null);
        assert_eq!(r, Routing::default());
        let r = node_routing(
            &json!({"target": {"servers": ["a"]}}),
            &json!({"agent_tags": []}),
        );
        assert_eq!(
            (r.capability, r.agent_tags),
            (Capability::Ssh, Vec::<String>::new())
        );
    }
}
