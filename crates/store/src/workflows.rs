//! Workflows and their immutable versions: apply (create or update by name, in one
//! transaction, answering with the version written), read, list, delete, status and schedule
//! state; and each version's graph as rows (`workflow_nodes`, `workflow_edges`) that the
//! progression evaluates without parsing any spec.
//!
//! The caller passes a [`WorkflowDefinition`] (cronium-core's `WorkflowSpec::definition`); the
//! spec inside it is opaque JSON here, kept as the version. The store still refuses a graph it
//! could not run (unknown node ids, cycles, unknown events or sub-workflows, a sub-workflow
//! that comes back to this one), naming the field, with nothing written.
//!
//! An inline node is applied as an event of its own named `WORKFLOW/NODE` (`workflow_id` set),
//! so payload caching and event versions work unchanged; its node row pins the event version
//! this workflow version wrote. A node dropped from the workflow archives its event (runs of the
//! older version may still need it); deleting the workflow deletes them all.
//!
//! Not for runs: those are `workflow_runs.rs` and `progression.rs`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use cronium_model::workflow::{
    topological_order, EdgeKind, Join, NodeBody, NodeKind, WorkflowDefinition, WorkflowRunStatus,
};
use cronium_model::{EventStatus, PolicyOverride};
use serde::Serialize;
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::AnyConnection;

use crate::events::{
    check_policy, delete_event_rows, event_cols, event_row, insert_event, update_locked, Applied,
};
use crate::progression::{lock_trees, stop_tree, Env};
use crate::row::{i32_col, i64_col, json, opt_i32, opt_i64, opt_text, text, to_json, word};
use crate::store::map_opt;
use crate::{Store, StoreError};

/// A workflow: its current version's spec and status, and its schedule state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkflowRow {
    pub id: i64,
    pub name: String,
    /// Starts at 1; bumped when the spec or the status changes through an apply.
    pub version: i64,
    pub status: EventStatus,
    pub spec: Value,
    pub created_at: i64,
    pub updated_at: i64,
    pub next_fire_at: Option<i64>,
    pub last_fired_at: Option<i64>,
    /// Why the scheduler cannot use this version's stored spec; None when it can.
    pub broken: Option<String>,
}

/// One immutable version of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkflowVersionRow {
    pub workflow_id: i64,
    pub version: i64,
    pub status: EventStatus,
    pub spec: Value,
    /// The default input of a run of this version.
    pub input: Value,
    /// The whole run's timeout; None for none.
    pub timeout_ms: Option<i64>,
    pub created_at: i64,
}

/// One node of a version's graph, as the progression reads it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkflowNodeRow {
    pub node_id: String,
    /// Its place in the file.
    pub position: i32,
    pub kind: NodeKind,
    /// The event an `event` node runs (by name, resolved when its job is made), or the
    /// `WORKFLOW/NODE` event of an `inline` node.
    pub event_name: Option<String>,
    /// For an `inline` node: its event and the version this workflow version pinned.
    pub event_id: Option<i64>,
    pub event_version: Option<i64>,
    /// The workflow a `workflow` node runs, by name.
    pub sub_workflow: Option<String>,
    pub join: Join,
    pub input: Value,
    /// What the agent applies over the event spec (target, env, helpers); Null for none.
    pub overrides: Value,
    /// The node's overrides of its event's policy (all set for an inline node).
    pub policy: PolicyOverride,
    /// Incoming edges in the order of the node's `after`.
    pub after: Vec<(String, EdgeKind)>,
}

/// A version's graph: its nodes in file order, with their incoming edges.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkflowGraph {
    pub nodes: Vec<WorkflowNodeRow>,
}

impl WorkflowGraph {
    /// The kinds of the edges leaving `node_id`.
    pub fn outgoing(&self, node_id: &str) -> Vec<EdgeKind> {
        self.nodes
            .iter()
            .flat_map(|n| n.after.iter())
            .filter(|(from, _)| from == node_id)
            .map(|(_, kind)| *kind)
            .collect()
    }

    /// Indices into `nodes`, each after its upstream nodes. A graph the store wrote is acyclic;
    /// should one not be, the file order is returned rather than a panic.
    pub fn order(&self) -> Vec<usize> {
        let index: HashMap<&str, usize> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.node_id.as_str(), i))
            .collect();
        let edges: Vec<(usize, usize)> = self
            .nodes
            .iter()
            .enumerate()
            .flat_map(|(to, n)| {
                n.after
                    .iter()
                    .filter_map(|(from, _)| index.get(from.as_str()).map(|&f| (f, to)))
                    .collect::<Vec<_>>()
            })
            .collect();
        topological_order(self.nodes.len(), &edges)
            .unwrap_or_else(|_| (0..self.nodes.len()).collect())
    }
}

macro_rules! workflow_cols {
    () => {
        "id, name, version, status, spec, created_at, updated_at, next_fire_at, last_fired_at, broken"
    };
}

fn workflow_row(row: &AnyRow) -> Result<WorkflowRow, StoreError> {
    let mut broken = opt_text(row, "broken")?;
    // As for events: one row whose text is not JSON must not break every listing.
    let spec = match json(row, "spec") {
        Ok(v) => v,
        Err(StoreError::Corrupt(why)) => {
            broken.get_or_insert(format!("spec: the stored text is not JSON ({why})"));
            Value::Null
        }
        Err(e) => return Err(e),
    };
    Ok(WorkflowRow {
        id: i64_col(row, "id")?,
        name: text(row, "name")?,
        version: i64_col(row, "version")?,
        status: word(row, "status")?,
        spec,
        created_at: i64_col(row, "created_at")?,
        updated_at: i64_col(row, "updated_at")?,
        next_fire_at: opt_i64(row, "next_fire_at")?,
        last_fired_at: opt_i64(row, "last_fired_at")?,
        broken,
    })
}

/// Reads a version row (`SELECT *`-free: the columns named).
pub(crate) async fn load_version(
    conn: &mut AnyConnection,
    workflow_id: i64,
    version: i64,
) -> Result<Option<WorkflowVersionRow>, StoreError> {
    let row = sqlx::query(
        "SELECT workflow_id, version, status, spec, input, timeout_ms, created_at \
         FROM workflow_versions WHERE workflow_id = $1 AND version = $2",
    )
    .bind(workflow_id)
    .bind(version)
    .fetch_optional(&mut *conn)
    .await?;
    map_opt(row, version_row)
}

fn version_row(r: &AnyRow) -> Result<WorkflowVersionRow, StoreError> {
    Ok(WorkflowVersionRow {
        workflow_id: i64_col(r, "workflow_id")?,
        version: i64_col(r, "version")?,
        status: word(r, "status")?,
        spec: json(r, "spec")?,
        input: json(r, "input")?,
        timeout_ms: opt_i64(r, "timeout_ms")?,
        created_at: i64_col(r, "created_at")?,
    })
}

/// The graphs of workflow versions, by (workflow id, version), shared by the clones of a
/// [`crate::Store`]. A version's graph rows are written once, in the transaction that creates
/// the version, and never changed; ids are never reused (SQLite `AUTOINCREMENT`, PostgreSQL
/// identity), so an entry can only go stale by the workflow's deletion, which evicts it (and
/// after which its runs no longer name the workflow). Only the progression of a run reads
/// through it, for a version the run was created with: one the database already holds.
/// Bounded: emptied when full (a miss costs two reads).
#[derive(Debug, Default)]
pub(crate) struct GraphCache(std::sync::Mutex<HashMap<(i64, i64), Arc<WorkflowGraph>>>);

impl GraphCache {
    const MAX: usize = 256;

    /// Version `version` of workflow `workflow_id`, from the cache or read through `conn`.
    pub(crate) async fn get(
        &self,
        conn: &mut AnyConnection,
        workflow_id: i64,
        version: i64,
    ) -> Result<Option<Arc<WorkflowGraph>>, StoreError> {
        let key = (workflow_id, version);
        if let Some(g) = self.0.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(Some(g));
        }
        let Some(graph) = load_graph(conn, workflow_id, version).await? else {
            return Ok(None);
        };
        let graph = Arc::new(graph);
        if let Ok(mut map) = self.0.lock() {
            if map.len() >= Self::MAX {
                map.clear();
            }
            map.insert(key, graph.clone());
        }
        Ok(Some(graph))
    }

    /// Forgets every version of workflow `workflow_id` (deleted).
    pub(crate) fn evict(&self, workflow_id: i64) {
        if let Ok(mut map) = self.0.lock() {
            map.retain(|(w, _), _| *w != workflow_id);
        }
    }
}

/// Reads a version's graph; None when the version has no node rows (unknown version, or a
/// deleted workflow).
pub(crate) async fn load_graph(
    conn: &mut AnyConnection,
    workflow_id: i64,
    version: i64,
) -> Result<Option<WorkflowGraph>, StoreError> {
    let rows = sqlx::query(
        "SELECT node_id, position, kind, event_name, event_id, event_version, sub_workflow, \
         join_kind, input, overrides, timeout_ms, max_attempts, backoff_ms, max_backoff_ms \
         FROM workflow_nodes WHERE workflow_id = $1 AND version = $2 ORDER BY position",
    )
    .bind(workflow_id)
    .bind(version)
    .fetch_all(&mut *conn)
    .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut nodes = rows
        .iter()
        .map(|r| {
            Ok(WorkflowNodeRow {
                node_id: text(r, "node_id")?,
                position: i32_col(r, "position")?,
                kind: word(r, "kind")?,
                event_name: opt_text(r, "event_name")?,
                event_id: opt_i64(r, "event_id")?,
                event_version: opt_i64(r, "event_version")?,
                sub_workflow: opt_text(r, "sub_workflow")?,
                join: word(r, "join_kind")?,
                input: json(r, "input")?,
                overrides: json(r, "overrides")?,
                policy: PolicyOverride {
                    max_attempts: opt_i32(r, "max_attempts")?,
                    backoff_ms: opt_i64(r, "backoff_ms")?,
                    max_backoff_ms: opt_i64(r, "max_backoff_ms")?,
                    timeout_ms: opt_i64(r, "timeout_ms")?,
                },
                after: Vec::new(),
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let edges = sqlx::query(
        "SELECT from_node, to_node, kind FROM workflow_edges \
         WHERE workflow_id = $1 AND version = $2 ORDER BY to_node, position",
    )
    .bind(workflow_id)
    .bind(version)
    .fetch_all(&mut *conn)
    .await?;
    for e in &edges {
        let to = text(e, "to_node")?;
        if let Some(node) = nodes.iter_mut().find(|n| n.node_id == to) {
            node.after.push((text(e, "from_node")?, word(e, "kind")?));
        }
    }
    Ok(Some(WorkflowGraph { nodes }))
}

/// Everything about a definition the store can check without reading anything: the field at
/// fault is named as in the workflow file (`nodes[2].after.x: unknown node`).
pub(crate) fn validate_definition(def: &WorkflowDefinition) -> Result<(), StoreError> {
    let invalid = |m: String| Err(StoreError::Invalid(m));
    if def.name.trim().is_empty() {
        return invalid("name: must not be empty".into());
    }
    if def.name.contains('/') {
        return invalid(format!("name: `{}` contains `/`", def.name));
    }
    if !def.input.is_object() {
        return invalid("input: must be an object".into());
    }
    if def.timeout_ms.is_some_and(|t| t <= 0) {
        return invalid("timeout: must be greater than zero".into());
    }
    if def.nodes.is_empty() {
        return invalid("nodes: a workflow needs at least one node".into());
    }
    let mut index = HashMap::new();
    for (i, node) in def.nodes.iter().enumerate() {
        if node.id.is_empty() || node.id.contains('/') {
            return invalid(format!("nodes[{i}].id: `{}` is not a node id", node.id));
        }
        if let Some(first) = index.insert(node.id.as_str(), i) {
            return invalid(format!(
                "nodes[{i}].id: `{}` is already the id of nodes[{first}]",
                node.id
            ));
        }
    }
    let mut edges = Vec::new();
    for (i, node) in def.nodes.iter().enumerate() {
        if !node.input.is_object() {
            return invalid(format!("nodes[{i}].input: must be an object"));
        }
        if !(node.overrides.is_null() || node.overrides.is_object()) {
            return invalid(format!("nodes[{i}].overrides: must be an object or null"));
        }
        let p = node.policy;
        if p.max_attempts.is_some_and(|a| a < 1) {
            return invalid(format!(
                "nodes[{i}].retries.max_attempts: must be at least 1"
            ));
        }
        for (field, v) in [
            ("retries.backoff", p.backoff_ms),
            ("retries.max_backoff", p.max_backoff_ms),
        ] {
            if v.is_some_and(|v| v < 0) {
                return invalid(format!("nodes[{i}].{field}: must not be negative"));
            }
        }
        if p.timeout_ms.is_some_and(|t| t <= 0) {
            return invalid(format!("nodes[{i}].timeout: must be greater than zero"));
        }
        match &node.body {
            NodeBody::Event { name } if name.trim().is_empty() || name.contains('/') => {
                return invalid(format!("nodes[{i}].event: `{name}` is not an event name"));
            }
            NodeBody::Workflow { name } if name.trim().is_empty() || name.contains('/') => {
                return invalid(format!(
                    "nodes[{i}].workflow: `{name}` is not a workflow name"
                ));
            }
            NodeBody::Workflow { name } if *name == def.name => {
                return invalid(format!("nodes[{i}].workflow: a workflow cannot run itself"));
            }
            NodeBody::Inline { spec, policy } => {
                if !spec.is_object() {
                    return invalid(format!(
                        "nodes[{i}]: the inline event spec must be an object"
                    ));
                }
                check_policy(&format!("nodes[{i}].policy"), policy)?;
            }
            _ => {}
        }
        let mut seen = HashSet::new();
        for (from, _) in &node.after {
            let Some(&f) = index.get(from.as_str()) else {
                return invalid(format!("nodes[{i}].after.{from}: unknown node"));
            };
            if f == i {
                return invalid(format!(
                    "nodes[{i}].after.{from}: a node cannot come after itself"
                ));
            }
            if !seen.insert(f) {
                return invalid(format!("nodes[{i}].after.{from}: listed twice"));
            }
            edges.push((f, i));
        }
    }
    if let Err(cycle) = topological_order(def.nodes.len(), &edges) {
        let names: Vec<&str> = cycle.iter().map(|&i| def.nodes[i].id.as_str()).collect();
        return invalid(format!("nodes: cycle {}", names.join(" -> ")));
    }
    Ok(())
}

/// The `workflow:` references of the current version of workflow `name`; None when there is no
/// such workflow.
async fn sub_workflows_in(
    conn: &mut AnyConnection,
    name: &str,
) -> Result<Option<Vec<String>>, StoreError> {
    let wf = sqlx::query("SELECT id, version FROM workflows WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(wf) = wf else {
        return Ok(None);
    };
    let rows = sqlx::query(
        "SELECT sub_workflow FROM workflow_nodes WHERE workflow_id = $1 AND version = $2 \
         AND sub_workflow IS NOT NULL ORDER BY position",
    )
    .bind(i64_col(&wf, "id")?)
    .bind(i64_col(&wf, "version")?)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| text(r, "sub_workflow"))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Refuses references the rows say cannot run: an event node's event must exist (a user's
/// event), a workflow node's workflow too, and no chain of sub-workflows from it may come back
/// to this workflow. (How deep sub-workflows nest is checked when a run starts them, and by
/// `cronium_core::workflow::check_references` at apply time.)
async fn check_references(
    conn: &mut AnyConnection,
    def: &WorkflowDefinition,
) -> Result<(), StoreError> {
    for (i, node) in def.nodes.iter().enumerate() {
        match &node.body {
            NodeBody::Event { name } => {
                let found =
                    sqlx::query("SELECT id FROM events WHERE name = $1 AND workflow_id IS NULL")
                        .bind(name)
                        .fetch_optional(&mut *conn)
                        .await?;
                if found.is_none() {
                    return Err(StoreError::Invalid(format!(
                        "nodes[{i}].event: unknown event `{name}`"
                    )));
                }
            }
            NodeBody::Workflow { name } => {
                let Some(first) = sub_workflows_in(conn, name).await? else {
                    return Err(StoreError::Invalid(format!(
                        "nodes[{i}].workflow: unknown workflow `{name}`"
                    )));
                };
                // Breadth first over the stored graphs, remembering how each name was reached.
                let mut came_from: HashMap<String, String> = HashMap::new();
                let mut queue: VecDeque<(String, Vec<String>)> = VecDeque::new();
                queue.push_back((name.clone(), first));
                let mut seen = HashSet::from([name.clone()]);
                while let Some((at, children)) = queue.pop_front() {
                    for child in children {
                        if child == def.name {
                            let mut chain = vec![child.clone(), at.clone()];
                            let mut cur = at.clone();
                            while let Some(prev) = came_from.get(&cur) {
                                chain.push(prev.clone());
                                cur = prev.clone();
                            }
                            chain.push(def.name.clone());
                            chain.reverse();
                            return Err(StoreError::Invalid(format!(
                                "nodes[{i}].workflow: recursion: {}",
                                chain.join(" -> ")
                            )));
                        }
                        if seen.insert(child.clone()) {
                            came_from.insert(child.clone(), at.clone());
                            let next = sub_workflows_in(conn, &child).await?.unwrap_or_default();
                            queue.push_back((child, next));
                        }
                    }
                }
            }
            NodeBody::Inline { .. } => {}
        }
    }
    Ok(())
}

/// Writes version `version` of workflow `workflow_id`: the version row, its graph rows and the
/// events of its inline nodes (created, updated or left as they are, each pinned), archiving
/// the inline events of nodes this version no longer has.
async fn write_version(
    conn: &mut AnyConnection,
    for_update: &str,
    workflow_id: i64,
    version: i64,
    def: &WorkflowDefinition,
    spec_text: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO workflow_versions (workflow_id, version, status, spec, input, timeout_ms, \
         created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(workflow_id)
    .bind(version)
    .bind(def.status.as_str())
    .bind(spec_text)
    .bind(to_json("input", &def.input)?)
    .bind(def.timeout_ms)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let mut inline_names = Vec::new();
    for (i, node) in def.nodes.iter().enumerate() {
        let (event_name, event_id, event_version, sub_workflow) = match &node.body {
            NodeBody::Event { name } => (Some(name.clone()), None, None, None),
            NodeBody::Workflow { name } => (None, None, None, Some(name.clone())),
            NodeBody::Inline { spec, policy } => {
                let name = format!("{}/{}", def.name, node.id);
                let event =
                    upsert_inline_event(conn, for_update, i, &name, workflow_id, spec, policy, now)
                        .await?;
                inline_names.push(name.clone());
                (Some(name), Some(event.id), Some(event.version), None)
            }
        };
        let overrides = match &node.overrides {
            Value::Null => None,
            v => Some(to_json("overrides", v)?),
        };
        sqlx::query(
            "INSERT INTO workflow_nodes (workflow_id, version, node_id, position, kind, event_name, \
             event_id, event_version, sub_workflow, join_kind, input, overrides, timeout_ms, \
             max_attempts, backoff_ms, max_backoff_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )
        .bind(workflow_id)
        .bind(version)
        .bind(node.id.as_str())
        .bind(i as i64)
        .bind(node.body.kind().as_str())
        .bind(event_name)
        .bind(event_id)
        .bind(event_version)
        .bind(sub_workflow)
        .bind(node.join.as_str())
        .bind(to_json("input", &node.input)?)
        .bind(overrides)
        .bind(node.policy.timeout_ms)
        .bind(node.policy.max_attempts.map(i64::from))
        .bind(node.policy.backoff_ms)
        .bind(node.policy.max_backoff_ms)
        .execute(&mut *conn)
        .await?;
        for (position, (from, kind)) in node.after.iter().enumerate() {
            sqlx::query(
                "INSERT INTO workflow_edges (workflow_id, version, from_node, to_node, kind, position) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(workflow_id)
            .bind(version)
            .bind(from.as_str())
            .bind(node.id.as_str())
            .bind(kind.as_str())
            .bind(position as i64)
            .execute(&mut *conn)
            .await?;
        }
    }
    // Kept (archived), not deleted: a run of an older version may still start their jobs.
    let owned =
        sqlx::query("SELECT id, name FROM events WHERE workflow_id = $1 AND status <> 'archived'")
            .bind(workflow_id)
            .fetch_all(&mut *conn)
            .await?;
    for row in &owned {
        if !inline_names.contains(&text(row, "name")?) {
            sqlx::query("UPDATE events SET status = 'archived', updated_at = $1 WHERE id = $2")
                .bind(now)
                .bind(i64_col(row, "id")?)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

/// Creates or updates the event of an inline node (a new event version only when its spec
/// changed).
#[allow(clippy::too_many_arguments)]
async fn upsert_inline_event(
    conn: &mut AnyConnection,
    for_update: &str,
    index: usize,
    name: &str,
    workflow_id: i64,
    spec: &Value,
    policy: &cronium_model::JobPolicy,
    now: i64,
) -> Result<crate::EventRow, StoreError> {
    let spec_text = to_json("spec", spec)?;
    let sql = format!(
        concat!("SELECT ", event_cols!(), " FROM events WHERE name = $1{}"),
        for_update
    );
    let current = sqlx::query(&sql)
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
    match map_opt(current, event_row)? {
        None => {
            insert_event(
                conn,
                name,
                EventStatus::Active,
                &spec_text,
                Some(policy),
                Some(workflow_id),
                now,
            )
            .await
        }
        Some(e) if e.workflow_id == Some(workflow_id) => Ok(update_locked(
            conn,
            e,
            EventStatus::Active,
            spec,
            &spec_text,
            Some(policy),
            now,
        )
        .await?
        .0),
        Some(_) => Err(StoreError::Invalid(format!(
            "nodes[{index}]: the event name `{name}` of this inline node is taken by another event"
        ))),
    }
}

impl Store {
    /// Creates the workflow `def.name` or writes a new version of it, in one transaction: the
    /// version row, the graph rows and the events of its inline nodes. `Unchanged` (nothing
    /// written) when the spec and status are those of the current version. Refused with
    /// `Invalid` naming the field (`nodes[1].event: unknown event `deploy``), nothing written,
    /// when the graph cannot run.
    pub async fn apply_workflow(
        &self,
        def: &WorkflowDefinition,
        now: i64,
    ) -> Result<(WorkflowRow, Applied), StoreError> {
        validate_definition(def)?;
        let spec_text = to_json("spec", &def.spec)?;
        match self.apply_workflow_once(def, &spec_text, now).await {
            // Two servers applying a new name at once: the second becomes an update.
            Err(StoreError::Conflict(field)) if field == "name" => {
                self.apply_workflow_once(def, &spec_text, now).await
            }
            other => other,
        }
    }

    async fn apply_workflow_once(
        &self,
        def: &WorkflowDefinition,
        spec_text: &str,
        now: i64,
    ) -> Result<(WorkflowRow, Applied), StoreError> {
        let mut tx = self.begin_write().await?;
        let result = apply_workflow_in(&mut tx, self.for_update(), def, spec_text, now).await?;
        tx.commit().await?;
        Ok(result)
    }

    pub async fn get_workflow(&self, id: i64) -> Result<Option<WorkflowRow>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            workflow_cols!(),
            " FROM workflows WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.read)
        .await?;
        map_opt(row, workflow_row)
    }

    pub async fn get_workflow_by_name(
        &self,
        name: &str,
    ) -> Result<Option<WorkflowRow>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            workflow_cols!(),
            " FROM workflows WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.read)
        .await?;
        map_opt(row, workflow_row)
    }

    /// All workflows, by name.
    pub async fn list_workflows(&self) -> Result<Vec<WorkflowRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            workflow_cols!(),
            " FROM workflows ORDER BY name"
        ))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(workflow_row).collect()
    }

    /// Workflows whose `next_fire_at` is set, earliest first (what a scheduler loads).
    pub async fn list_scheduled_workflows(&self) -> Result<Vec<WorkflowRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            workflow_cols!(),
            " FROM workflows WHERE next_fire_at IS NOT NULL ORDER BY next_fire_at, id"
        ))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(workflow_row).collect()
    }

    /// A version of a workflow (what a run of that version runs).
    pub async fn get_workflow_version(
        &self,
        workflow_id: i64,
        version: i64,
    ) -> Result<Option<WorkflowVersionRow>, StoreError> {
        let mut conn = self.read.acquire().await?;
        load_version(&mut conn, workflow_id, version).await
    }

    /// Every version of a workflow, newest first (without their graphs).
    pub async fn list_workflow_versions(
        &self,
        workflow_id: i64,
    ) -> Result<Vec<WorkflowVersionRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT workflow_id, version, status, spec, input, timeout_ms, created_at \
             FROM workflow_versions WHERE workflow_id = $1 ORDER BY version DESC",
        )
        .bind(workflow_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(version_row).collect()
    }

    /// The graph of a version, as the progression evaluates it; None for an unknown version.
    pub async fn workflow_graph(
        &self,
        workflow_id: i64,
        version: i64,
    ) -> Result<Option<WorkflowGraph>, StoreError> {
        let mut conn = self.read.acquire().await?;
        load_graph(&mut conn, workflow_id, version).await
    }

    /// The `workflow:` references of the current version of `name` (None: no such workflow):
    /// the lookup `cronium_core::workflow::check_references` takes.
    pub async fn workflow_references(&self, name: &str) -> Result<Option<Vec<String>>, StoreError> {
        let mut conn = self.read.acquire().await?;
        sub_workflows_in(&mut conn, name).await
    }

    /// The workflows whose current version has a node running the event `event_name`, by name
    /// (for the API to refuse or warn before deleting an event).
    pub async fn workflows_using_event(&self, event_name: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT w.name FROM workflows w JOIN workflow_nodes n \
             ON n.workflow_id = w.id AND n.version = w.version \
             WHERE n.kind = 'event' AND n.event_name = $1 ORDER BY w.name",
        )
        .bind(event_name)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(|r| text(r, "name")).collect()
    }

    /// Changes only the status (pause, resume, archive): no new version.
    pub async fn set_workflow_status(
        &self,
        id: i64,
        status: EventStatus,
        now: i64,
    ) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE workflows SET status = $1, updated_at = $2 WHERE id = $3")
            .bind(status.as_str())
            .bind(now)
            .bind(id)
            .execute(&self.write)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("workflow {id}")));
        }
        Ok(())
    }

    /// Sets (or clears) when the workflow's schedule fires next.
    pub async fn set_workflow_next_fire(
        &self,
        id: i64,
        next_fire_at: Option<i64>,
    ) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE workflows SET next_fire_at = $1 WHERE id = $2")
            .bind(next_fire_at)
            .bind(id)
            .execute(&self.write)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("workflow {id}")));
        }
        Ok(())
    }

    /// Marks version `version` as broken with `reason` (None clears it); fenced by the version.
    pub async fn set_workflow_broken(
        &self,
        id: i64,
        version: i64,
        reason: Option<&str>,
    ) -> Result<bool, StoreError> {
        if reason.is_some_and(|r| r.trim().is_empty()) {
            return Err(StoreError::Invalid("reason: must not be empty".into()));
        }
        let done = sqlx::query("UPDATE workflows SET broken = $1 WHERE id = $2 AND version = $3")
            .bind(reason)
            .bind(id)
            .bind(version)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes a workflow, in one transaction: its active runs are cancelled first (queued node
    /// jobs cancelled, running ones asked to stop, waiting nodes skipped; a sub-run's parent node
    /// in another workflow ends cancelled), then its versions, graph rows and inline-node events
    /// go (their jobs stay, as for a deleted event). Its runs stay as history with `workflow_id`
    /// None. False if there was no such workflow.
    pub async fn delete_workflow(&self, id: i64, now: i64) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let deleted = delete_workflow_in(&mut tx, self.for_update(), id, now).await?;
        if deleted {
            tx.commit().await?;
            self.graphs.evict(id);
        } else {
            tx.rollback().await?;
        }
        Ok(deleted)
    }
}

/// Creates the workflow `def.name` or writes a new version of it inside the caller's
/// transaction (the row locked first): what `apply_workflow` and the batch apply share.
pub(crate) async fn apply_workflow_in(
    tx: &mut AnyConnection,
    for_update: &str,
    def: &WorkflowDefinition,
    spec_text: &str,
    now: i64,
) -> Result<(WorkflowRow, Applied), StoreError> {
    let sql = format!(
        concat!(
            "SELECT ",
            workflow_cols!(),
            " FROM workflows WHERE name = $1{}"
        ),
        for_update
    );
    let current = sqlx::query(&sql)
        .bind(def.name.as_str())
        .fetch_optional(&mut *tx)
        .await?;
    let current = map_opt(current, workflow_row)?;
    if let Some(c) = &current {
        if c.status == def.status && c.spec == def.spec {
            return Ok((c.clone(), Applied::Unchanged));
        }
    }
    check_references(tx, def).await?;
    let (row, applied) = match current {
        None => {
            let row = sqlx::query(concat!(
                "INSERT INTO workflows (name, version, status, spec, created_at, updated_at) ",
                "VALUES ($1, 1, $2, $3, $4, $4) RETURNING ",
                workflow_cols!()
            ))
            .bind(def.name.as_str())
            .bind(def.status.as_str())
            .bind(spec_text)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            (workflow_row(&row)?, Applied::Created)
        }
        Some(c) => {
            let row = sqlx::query(concat!(
                "UPDATE workflows SET version = $1, status = $2, spec = $3, updated_at = $4, ",
                "broken = NULL WHERE id = $5 RETURNING ",
                workflow_cols!()
            ))
            .bind(c.version + 1)
            .bind(def.status.as_str())
            .bind(spec_text)
            .bind(now)
            .bind(c.id)
            .fetch_one(&mut *tx)
            .await?;
            (workflow_row(&row)?, Applied::Updated)
        }
    };
    write_version(tx, for_update, row.id, row.version, def, spec_text, now).await?;
    Ok((row, applied))
}

/// Deletes a workflow inside the caller's transaction (see `Store::delete_workflow`); false,
/// nothing changed, when there is no such workflow.
pub(crate) async fn delete_workflow_in(
    tx: &mut AnyConnection,
    for_update: &'static str,
    id: i64,
    now: i64,
) -> Result<bool, StoreError> {
    let exists = sqlx::query(&format!(
        "SELECT id FROM workflows WHERE id = $1{}",
        for_update
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    if exists.is_none() {
        return Ok(false);
    }
    let active = sqlx::query(
        "SELECT id FROM workflow_runs WHERE workflow_id = $1 AND status IN ('queued', 'running') \
         ORDER BY id",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    let runs: Vec<i64> = active
        .iter()
        .map(|r| i64_col(r, "id"))
        .collect::<Result<_, _>>()?;
    lock_trees(tx, for_update, &runs).await?;
    let env = Env::new(for_update, now);
    for run in &runs {
        stop_tree(
            tx,
            &env,
            *run,
            WorkflowRunStatus::Cancelled,
            "workflow deleted",
        )
        .await?;
    }
    sqlx::query("UPDATE workflow_runs SET workflow_id = NULL WHERE workflow_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let inline = sqlx::query("SELECT id FROM events WHERE workflow_id = $1")
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
    for row in &inline {
        delete_event_rows(tx, i64_col(row, "id")?).await?;
    }
    // Children first, explicitly: the behaviour does not depend on the foreign_keys pragma.
    for sql in [
        "DELETE FROM workflow_edges WHERE workflow_id = $1",
        "DELETE FROM workflow_nodes WHERE workflow_id = $1",
        "DELETE FROM workflow_versions WHERE workflow_id = $1",
        "DELETE FROM workflows WHERE id = $1",
    ] {
        sqlx::query(sql).bind(id).execute(&mut *tx).await?;
    }
    Ok(true)
}
