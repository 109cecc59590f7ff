//! Workflows without I/O (PRODUCT.md "Workflow file"): the vocabulary of graphs and runs (edge
//! kinds, joins, node-run and run statuses), the pure rules the store evaluates inside the
//! transaction that ended a node's job (is an edge satisfied, does a node run or is it skipped
//! and why, what is its input, how did the run end), and the plain definition of a workflow
//! version that the spec parser produces and the store writes as rows.
//!
//! Everything here is a function of its arguments: the store reads rows, calls these, and
//! writes what they decide; the spec parser (cronium-core) uses the graph order to refuse
//! cycles. Not for parsing workflow files (cronium-core) or SQL (cronium-store).
//!
//! Reasons are sentences for people (`run-show --explain`): "ran: build succeeded (success)",
//! "skipped: deploy succeeded, edge needs failure", "waiting for deploy (running)".

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{vocabulary, EventStatus, JobPolicy, JobStatus, PolicyOverride};

/// How deep sub-workflows may nest: a run started by a `workflow:` node of a run started by a
/// `workflow:` node... at most this many runs from the top one down (the top run is depth 1).
pub const MAX_DEPTH: i32 = 5;

vocabulary! {
    /// When an edge `(from, kind)` lets its target run.
    pub enum EdgeKind ("edge kind") {
        /// `from` succeeded.
        Success = "success",
        /// `from` failed or timed out.
        Failure = "failure",
        /// `from` ended, whichever way (skipped and cancelled included).
        Always = "always",
        /// `from` succeeded and its script set the condition true.
        Condition = "condition",
        /// `from` succeeded and its script set the condition false, or did not set it.
        NotCondition = "not_condition",
    }
}

vocabulary! {
    /// How a node's incoming edges combine.
    #[derive(Default)]
    pub enum Join ("join") {
        /// Every incoming edge must be satisfied.
        #[default]
        All = "all",
        /// At least one incoming edge must be satisfied.
        Any = "any",
    }
}

vocabulary! {
    /// What a node of a workflow version runs.
    pub enum NodeKind ("node kind") {
        /// A job of an existing event (`event: NAME`).
        Event = "event",
        /// A job of the node's own script, stored as an event `WORKFLOW/NODE`.
        Inline = "inline",
        /// A run of another workflow (`workflow: NAME`).
        Workflow = "workflow",
    }
}

vocabulary! {
    /// Where one node of one run is.
    pub enum NodeRunStatus ("node run status") {
        /// Some upstream node has not ended yet.
        Waiting = "waiting",
        /// Decided to run: its job is in the queue.
        Queued = "queued",
        /// Its job was claimed, or its sub-workflow run is going.
        Running = "running",
        Succeeded = "succeeded",
        /// Its job failed (a partial fan-out counts as failed) or its sub-workflow run failed.
        Failed = "failed",
        TimedOut = "timed_out",
        Cancelled = "cancelled",
        /// Its edges decided it does not run; the reason is stored.
        Skipped = "skipped",
    }
}

impl NodeRunStatus {
    /// True once the node has ended: its outcome no longer changes.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            NodeRunStatus::Waiting | NodeRunStatus::Queued | NodeRunStatus::Running
        )
    }

    /// The outcome of a node whose job ended as `status`. A `partial` fan-out (some servers
    /// failed) is a failure: `failure` edges fire for it. A job that has not ended keeps its
    /// node `queued` or `running`.
    pub fn from_job(status: JobStatus) -> NodeRunStatus {
        match status {
            JobStatus::Queued => NodeRunStatus::Queued,
            JobStatus::Running => NodeRunStatus::Running,
            JobStatus::Succeeded => NodeRunStatus::Succeeded,
            JobStatus::Failed | JobStatus::Partial => NodeRunStatus::Failed,
            JobStatus::TimedOut => NodeRunStatus::TimedOut,
            JobStatus::Cancelled => NodeRunStatus::Cancelled,
        }
    }

    /// The outcome of a `workflow:` node whose sub-run ended as `status`.
    pub fn from_run(status: WorkflowRunStatus) -> NodeRunStatus {
        match status {
            WorkflowRunStatus::Queued => NodeRunStatus::Queued,
            WorkflowRunStatus::Running => NodeRunStatus::Running,
            WorkflowRunStatus::Succeeded => NodeRunStatus::Succeeded,
            WorkflowRunStatus::Failed => NodeRunStatus::Failed,
            WorkflowRunStatus::Cancelled => NodeRunStatus::Cancelled,
            WorkflowRunStatus::TimedOut => NodeRunStatus::TimedOut,
        }
    }

    /// The status in a sentence: "succeeded", "timed out".
    fn words(self) -> &'static str {
        match self {
            NodeRunStatus::TimedOut => "timed out",
            other => other.as_str(),
        }
    }
}

vocabulary! {
    /// Where a workflow run is.
    pub enum WorkflowRunStatus ("workflow run status") {
        /// Waiting for an earlier run of the same workflow to end (overlap `queue`): none of
        /// its nodes has started.
        Queued = "queued",
        Running = "running",
        /// Every node that failed was handled by a `failure` or `always` edge.
        Succeeded = "succeeded",
        /// A node failed (or timed out) with no `failure` or `always` edge leaving it.
        Failed = "failed",
        /// The run was cancelled, or a node was cancelled with no `always` edge leaving it.
        Cancelled = "cancelled",
        /// The run outlived its `timeout`.
        TimedOut = "timed_out",
    }
}

impl WorkflowRunStatus {
    /// True once the run has ended.
    pub fn is_final(self) -> bool {
        !matches!(self, WorkflowRunStatus::Queued | WorkflowRunStatus::Running)
    }
}

/// How an upstream node stands, as far as edges care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub status: NodeRunStatus,
    /// The condition its script set (for a fan-out: true only when every execution that
    /// succeeded set it true; see the store). `None` when it set none.
    pub condition: Option<bool>,
}

impl Outcome {
    pub fn new(status: NodeRunStatus, condition: Option<bool>) -> Self {
        Outcome { status, condition }
    }
}

/// Whether an edge of `kind` is satisfied by an upstream node that stands at `outcome`. A node
/// that has not ended satisfies nothing yet.
pub fn edge_satisfied(kind: EdgeKind, outcome: Outcome) -> bool {
    use NodeRunStatus as S;
    match kind {
        EdgeKind::Success => outcome.status == S::Succeeded,
        EdgeKind::Failure => matches!(outcome.status, S::Failed | S::TimedOut),
        EdgeKind::Always => outcome.status.is_final(),
        EdgeKind::Condition => outcome.status == S::Succeeded && outcome.condition == Some(true),
        EdgeKind::NotCondition => outcome.status == S::Succeeded && outcome.condition != Some(true),
    }
}

/// One incoming edge of a node being decided, with where its upstream node stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upstream<'a> {
    pub node: &'a str,
    pub kind: EdgeKind,
    pub outcome: Outcome,
}

/// What [`decide`] says about a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Some upstream node has not ended ("waiting for deploy (running)").
    Wait { reason: String },
    /// Start its job (or sub-run): "ran: build succeeded (success)".
    Run { reason: String },
    /// It does not run: "skipped: deploy succeeded, edge needs failure".
    Skip { reason: String },
}

impl Decision {
    pub fn reason(&self) -> &str {
        match self {
            Decision::Wait { reason } | Decision::Run { reason } | Decision::Skip { reason } => {
                reason
            }
        }
    }
}

/// "deploy succeeded", "smoke succeeded with condition false" (the condition only where the
/// edge looks at it).
fn how_it_ended(u: &Upstream<'_>) -> String {
    let mut s = format!("{} {}", u.node, u.outcome.status.words());
    if matches!(u.kind, EdgeKind::Condition | EdgeKind::NotCondition)
        && u.outcome.status == NodeRunStatus::Succeeded
    {
        s.push_str(match u.outcome.condition {
            Some(true) => " with condition true",
            Some(false) => " with condition false",
            None => " without setting the condition",
        });
    }
    s
}

/// Whether a node runs, given its `join` and its incoming edges in the order of its `after`
/// (PRODUCT.md: a node runs when its upstream nodes have all ended and `join: all` has every
/// incoming edge satisfied, or `join: any` at least one; otherwise it is skipped). A node with
/// no incoming edge runs at once. Even with `join: any`, a node waits until every upstream
/// node has ended, so that its input holds every upstream output.
pub fn decide(join: Join, upstream: &[Upstream<'_>]) -> Decision {
    let pending: Vec<String> = upstream
        .iter()
        .filter(|u| !u.outcome.status.is_final())
        .map(|u| format!("{} ({})", u.node, u.outcome.status))
        .collect();
    if !pending.is_empty() {
        return Decision::Wait {
            reason: format!("waiting for {}", pending.join(", ")),
        };
    }
    if upstream.is_empty() {
        return Decision::Run {
            reason: "ran: start node (no after)".into(),
        };
    }
    let (met, unmet): (Vec<_>, Vec<_>) = upstream
        .iter()
        .partition(|u| edge_satisfied(u.kind, u.outcome));
    let runs = match join {
        Join::All => unmet.is_empty(),
        Join::Any => !met.is_empty(),
    };
    if runs {
        let why: Vec<String> = met
            .iter()
            .map(|u| format!("{} ({})", how_it_ended(u), u.kind))
            .collect();
        Decision::Run {
            reason: format!("ran: {}", why.join(", ")),
        }
    } else {
        let why: Vec<String> = unmet
            .iter()
            .map(|u| format!("{}, edge needs {}", how_it_ended(u), u.kind))
            .collect();
        Decision::Skip {
            reason: format!("skipped: {}", why.join("; ")),
        }
    }
}

/// A node's input (PRODUCT.md "Data"): the workflow run's input, then the node's own `input`,
/// then the outputs of its upstream nodes in the order of its `after`, merged key by key (later
/// wins); every upstream output is also kept whole under `nodes.<id>`, so nothing an upstream
/// node wrote is lost.
///
/// Only objects merge key-wise: an input or output that is not an object (a string, a list,
/// null) adds no keys, but an upstream output is still kept whole under `nodes.<id>`. The key
/// `nodes` is shared: when the merged keys already hold an object `nodes` (a user's, or the
/// output of a sub-workflow), the upstream ids are added into it (an id there is replaced by the
/// upstream output of that id); a `nodes` that is not an object is replaced. A node with no
/// upstream gets no `nodes` key from this rule.
pub fn merge_input(
    workflow_input: &Value,
    node_input: &Value,
    upstream: &[(&str, &Value)],
) -> Value {
    let mut merged = Map::new();
    let layers = [workflow_input, node_input]
        .into_iter()
        .chain(upstream.iter().map(|(_, output)| *output));
    for layer in layers {
        if let Value::Object(keys) = layer {
            for (k, v) in keys {
                merged.insert(k.clone(), v.clone());
            }
        }
    }
    if upstream.is_empty() {
        return Value::Object(merged);
    }
    if !matches!(merged.get("nodes"), Some(Value::Object(_))) {
        merged.insert("nodes".into(), Value::Object(Map::new()));
    }
    if let Some(Value::Object(nodes)) = merged.get_mut("nodes") {
        for (id, output) in upstream {
            nodes.insert((*id).to_string(), (*output).clone());
        }
    }
    Value::Object(merged)
}

/// One node of a run when the run's status is computed: how it stands, and the kinds of the
/// edges leaving it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeEnd<'a> {
    pub status: NodeRunStatus,
    pub outgoing: &'a [EdgeKind],
}

/// A run's status from its nodes (PRODUCT.md): `running` while a node has not ended; once all
/// have, `stopped` (cancelled or timed out) when the run was stopped; else `failed` when a node
/// failed or timed out with no `failure` or `always` edge leaving it; else `cancelled` when a
/// node was cancelled (its job, by itself) with no `always` edge leaving it; else `succeeded`.
/// Skipped nodes do not count: a branch not taken is not a failure.
pub fn run_status(nodes: &[NodeEnd<'_>], stopped: Option<WorkflowRunStatus>) -> WorkflowRunStatus {
    use NodeRunStatus as S;
    if nodes.iter().any(|n| !n.status.is_final()) {
        return WorkflowRunStatus::Running;
    }
    if let Some(stop) = stopped {
        return stop;
    }
    let has = |n: &NodeEnd<'_>, kinds: &[EdgeKind]| n.outgoing.iter().any(|k| kinds.contains(k));
    let unhandled_failure = nodes.iter().any(|n| {
        matches!(n.status, S::Failed | S::TimedOut)
            && !has(n, &[EdgeKind::Failure, EdgeKind::Always])
    });
    if unhandled_failure {
        return WorkflowRunStatus::Failed;
    }
    let unhandled_cancel = nodes
        .iter()
        .any(|n| n.status == S::Cancelled && !has(n, &[EdgeKind::Always]));
    if unhandled_cancel {
        return WorkflowRunStatus::Cancelled;
    }
    WorkflowRunStatus::Succeeded
}

/// An order in which every node comes after the nodes it depends on (`edges` are `(from, to)`
/// indices into `0..count`; among the nodes ready at once, the lowest index comes first, so the
/// order is the file's wherever the graph allows). `Err` holds one cycle, its first node
/// repeated at the end (`[build, deploy, build]` as indices).
pub fn topological_order(count: usize, edges: &[(usize, usize)]) -> Result<Vec<usize>, Vec<usize>> {
    let mut successors = vec![Vec::new(); count];
    let mut indegree = vec![0usize; count];
    for &(from, to) in edges {
        successors[from].push(to);
        indegree[to] += 1;
    }
    let mut ready: std::collections::BTreeSet<usize> =
        (0..count).filter(|&n| indegree[n] == 0).collect();
    let mut order = Vec::with_capacity(count);
    while let Some(n) = ready.pop_first() {
        order.push(n);
        for &s in &successors[n] {
            indegree[s] -= 1;
            if indegree[s] == 0 {
                ready.insert(s);
            }
        }
    }
    if order.len() == count {
        return Ok(order);
    }
    // Every node left has an unprocessed predecessor, so walking predecessors among them never
    // stops: the walk from the lowest one enters a cycle, found at the first repeated node.
    let left: Vec<bool> = indegree.iter().map(|&d| d > 0).collect();
    let mut predecessor = vec![None; count];
    for &(from, to) in edges {
        if left[from] && left[to] && predecessor[to].is_none() {
            predecessor[to] = Some(from);
        }
    }
    let start = left.iter().position(|&l| l).unwrap_or(0);
    let mut seen = vec![false; count];
    seen[start] = true;
    // walk[i + 1] is a predecessor of walk[i]: the walk goes against the edges.
    let mut walk = vec![start];
    let mut at = start;
    while let Some(p) = predecessor[at] {
        if seen[p] {
            // p -> walk[last] -> ... -> walk[j + 1] -> p, forwards along the edges.
            let j = walk.iter().position(|&n| n == p).unwrap_or(0);
            let mut cycle = vec![p];
            cycle.extend(walk[j + 1..].iter().rev());
            cycle.push(p);
            return Err(normalise_cycle(cycle));
        }
        seen[p] = true;
        walk.push(p);
        at = p;
    }
    // Unreachable (every node left has a predecessor left), but never a panic.
    Err(vec![start, start])
}

/// Rotates a cycle (first node repeated last) so it starts at its lowest index: one spelling
/// per cycle whichever node the search met first.
fn normalise_cycle(mut cycle: Vec<usize>) -> Vec<usize> {
    cycle.pop();
    let lowest = (0..cycle.len()).min_by_key(|&i| cycle[i]).unwrap_or(0);
    cycle.rotate_left(lowest);
    if let Some(&first) = cycle.first() {
        cycle.push(first);
    }
    cycle
}

/// What a node runs, in a [`NodeDefinition`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeBody {
    /// A job of the event of this name.
    Event { name: String },
    /// The node's own script: `spec` is the normalised event spec stored as the event
    /// `WORKFLOW/NODE`, `policy` its attempts, backoff and timeout.
    Inline { spec: Value, policy: JobPolicy },
    /// A run of the workflow of this name.
    Workflow { name: String },
}

impl NodeBody {
    pub fn kind(&self) -> NodeKind {
        match self {
            NodeBody::Event { .. } => NodeKind::Event,
            NodeBody::Inline { .. } => NodeKind::Inline,
            NodeBody::Workflow { .. } => NodeKind::Workflow,
        }
    }
}

/// One node of a workflow version, as the spec parser normalised it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeDefinition {
    /// `[a-z0-9-_]`, unique in the workflow.
    pub id: String,
    pub body: NodeBody,
    pub join: Join,
    /// Incoming edges `(upstream id, kind)`, in the order of the node's `after` (the order its
    /// upstream outputs merge in).
    pub after: Vec<(String, EdgeKind)>,
    /// The node's own `input` (an object), merged over the run's input.
    pub input: Value,
    /// What the agent applies over the event spec (`target`, `env`, `helpers`), as an object;
    /// opaque to the store. Null when the node overrides none of them.
    pub overrides: Value,
    /// The node's `timeout` and `retries` over the event's.
    pub policy: PolicyOverride,
}

/// A workflow version as the store writes it: the stored spec and the graph as data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowDefinition {
    pub name: String,
    /// Kept beside the spec, as for events: active, paused, draft, archived.
    pub status: EventStatus,
    /// The normalised spec stored as the version (opaque to the store).
    pub spec: Value,
    /// The default input of a run (an object).
    pub input: Value,
    /// The whole run's `timeout`; `None` for none.
    pub timeout_ms: Option<i64>,
    /// In the order of the file.
    pub nodes: Vec<NodeDefinition>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use NodeRunStatus as S;

    #[test]
    fn every_value_has_one_spelling() {
        for v in EdgeKind::ALL {
            assert_eq!(serde_json::to_value(v).unwrap(), v.as_str());
            assert_eq!(v.as_str().parse::<EdgeKind>().unwrap(), *v);
        }
        for v in NodeRunStatus::ALL {
            assert_eq!(serde_json::to_value(v).unwrap(), v.as_str());
            assert_eq!(v.as_str().parse::<NodeRunStatus>().unwrap(), *v);
        }
        for v in WorkflowRunStatus::ALL {
            assert_eq!(serde_json::to_value(v).unwrap(), v.as_str());
            assert_eq!(v.as_str().parse::<WorkflowRunStatus>().unwrap(), *v);
        }
        for v in Join::ALL {
            assert_eq!(v.as_str().parse::<Join>().unwrap(), *v);
        }
        for v in NodeKind::ALL {
            assert_eq!(v.as_str().parse::<NodeKind>().unwrap(), *v);
        }
        assert_eq!(EdgeKind::NotCondition.as_str(), "not_condition");
        assert_eq!(Join::default(), Join::All);
        let e = "sometimes".parse::<EdgeKind>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown edge kind `sometimes`; expected one of success, failure, always, condition, \
             not_condition"
        );
    }

    /// PRODUCT.md: `failure` = failed or timed out; `always` = any end, skipped and cancelled
    /// included; `condition` = succeeded and set true; `not_condition` = succeeded and set false
    /// or not at all. Nothing is satisfied by a node that has not ended.
    #[test]
    fn edge_kinds() {
        use EdgeKind::*;
        let t = Some(true);
        let f = Some(false);
        #[rustfmt::skip]
        let table: &[(EdgeKind, NodeRunStatus, Option<bool>, bool)] = &[
            (Success, S::Succeeded, None, true),
            (Success, S::Succeeded, f, true),
            (Success, S::Failed, None, false),
            (Success, S::TimedOut, None, false),
            (Success, S::Skipped, None, false),
            (Success, S::Cancelled, None, false),
            (Failure, S::Failed, None, true),
            (Failure, S::TimedOut, None, true),
            (Failure, S::Succeeded, None, false),
            (Failure, S::Skipped, None, false),
            (Failure, S::Cancelled, None, false),
            (Always, S::Succeeded, None, true),
            (Always, S::Failed, None, true),
            (Always, S::TimedOut, None, true),
            (Always, S::Skipped, None, true),
            (Always, S::Cancelled, None, true),
            (Condition, S::Succeeded, t, true),
            (Condition, S::Succeeded, f, false),
            (Condition, S::Succeeded, None, false),
            (Condition, S::Failed, t, false),
            (NotCondition, S::Succeeded, f, true),
            (NotCondition, S::Succeeded, None, true),
            (NotCondition, S::Succeeded, t, false),
            (NotCondition, S::Failed, f, false),
            (NotCondition, S::Skipped, None, false),
        ];
        for &(kind, status, condition, want) in table {
            assert_eq!(
                edge_satisfied(kind, Outcome::new(status, condition)),
                want,
                "{kind} after {status} (condition {condition:?})"
            );
        }
        for kind in EdgeKind::ALL {
            for status in [S::Waiting, S::Queued, S::Running] {
                assert!(!edge_satisfied(*kind, Outcome::new(status, Some(true))));
            }
        }
    }

    fn up(
        node: &str,
        kind: EdgeKind,
        status: NodeRunStatus,
        condition: Option<bool>,
    ) -> Upstream<'_> {
        Upstream {
            node,
            kind,
            outcome: Outcome::new(status, condition),
        }
    }

    #[test]
    fn join_all_and_any() {
        use EdgeKind::*;
        let run = |r: &str| Decision::Run { reason: r.into() };
        let skip = |r: &str| Decision::Skip { reason: r.into() };
        let table: Vec<(Join, Vec<Upstream>, Decision)> = vec![
            (Join::All, vec![], run("ran: start node (no after)")),
            (
                Join::All,
                vec![up("build", Success, S::Succeeded, None)],
                run("ran: build succeeded (success)"),
            ),
            (
                Join::All,
                vec![up("deploy", Failure, S::Succeeded, None)],
                skip("skipped: deploy succeeded, edge needs failure"),
            ),
            (
                Join::All,
                vec![
                    up("a", Success, S::Succeeded, None),
                    up("b", Success, S::Failed, None),
                ],
                skip("skipped: b failed, edge needs success"),
            ),
            (
                Join::All,
                vec![
                    up("a", Success, S::Succeeded, None),
                    up("b", Always, S::TimedOut, None),
                ],
                run("ran: a succeeded (success), b timed out (always)"),
            ),
            (
                Join::Any,
                vec![
                    up("deploy", Failure, S::Failed, None),
                    up("smoke", Failure, S::Skipped, None),
                ],
                run("ran: deploy failed (failure)"),
            ),
            (
                Join::Any,
                vec![
                    up("deploy", Failure, S::Succeeded, None),
                    up("smoke", Failure, S::Succeeded, None),
                ],
                skip(
                    "skipped: deploy succeeded, edge needs failure; smoke succeeded, edge needs \
                     failure",
                ),
            ),
            (
                Join::All,
                vec![up("smoke", Condition, S::Succeeded, Some(true))],
                run("ran: smoke succeeded with condition true (condition)"),
            ),
            (
                Join::All,
                vec![up("smoke", Condition, S::Succeeded, None)],
                skip(
                    "skipped: smoke succeeded without setting the condition, edge needs condition",
                ),
            ),
            (
                Join::All,
                vec![up("smoke", NotCondition, S::Succeeded, Some(false))],
                run("ran: smoke succeeded with condition false (not_condition)"),
            ),
        ];
        for (join, upstream, want) in table {
            assert_eq!(decide(join, &upstream), want, "{join} {upstream:?}");
        }
    }

    /// Even `join: any` waits for every upstream node, so that its input holds every output.
    #[test]
    fn a_node_waits_until_every_upstream_ended() {
        for join in Join::ALL {
            let d = decide(
                *join,
                &[
                    up("a", EdgeKind::Success, S::Succeeded, None),
                    up("deploy", EdgeKind::Failure, S::Running, None),
                    up("b", EdgeKind::Success, S::Waiting, None),
                ],
            );
            assert_eq!(
                d,
                Decision::Wait {
                    reason: "waiting for deploy (running), b (waiting)".into()
                },
                "{join}"
            );
        }
    }

    /// A skipped node satisfies only `always`, so skips propagate down success, failure and
    /// condition edges, each with its reason.
    #[test]
    fn skip_propagation_reasons() {
        let table = [
            (
                EdgeKind::Success,
                "skipped: build skipped, edge needs success",
            ),
            (
                EdgeKind::Failure,
                "skipped: build skipped, edge needs failure",
            ),
            (
                EdgeKind::Condition,
                "skipped: build skipped, edge needs condition",
            ),
            (
                EdgeKind::NotCondition,
                "skipped: build skipped, edge needs not_condition",
            ),
        ];
        for (kind, reason) in table {
            assert_eq!(
                decide(Join::All, &[up("build", kind, S::Skipped, None)]),
                Decision::Skip {
                    reason: reason.into()
                }
            );
        }
        assert_eq!(
            decide(
                Join::All,
                &[up("build", EdgeKind::Always, S::Skipped, None)]
            ),
            Decision::Run {
                reason: "ran: build skipped (always)".into()
            }
        );
        assert_eq!(
            decide(Join::All, &[up("x", EdgeKind::Always, S::Cancelled, None)]).reason(),
            "ran: x cancelled (always)"
        );
    }

    #[test]
    fn merge_input_layers_and_conflicts() {
        let a = json!({"v": "a", "only_a": 1});
        let b = json!({"v": "b", "only_b": 2});
        type Case<'a> = (Value, Value, Vec<(&'a str, &'a Value)>, Value);
        let table: Vec<Case> = vec![
            // A root node: the workflow input under the node's own, no `nodes`.
            (
                json!({"version": "1.4", "env": "prod"}),
                json!({"env": "staging"}),
                vec![],
                json!({"version": "1.4", "env": "staging"}),
            ),
            // Upstream outputs in `after` order: later wins key by key; each kept whole.
            (
                json!({"v": "workflow"}),
                json!({"v": "node", "n": true}),
                vec![("a", &a), ("b", &b)],
                json!({"v": "b", "n": true, "only_a": 1, "only_b": 2,
                       "nodes": {"a": a.clone(), "b": b.clone()}}),
            ),
            (
                json!({}),
                json!({}),
                vec![("b", &b), ("a", &a)],
                json!({"v": "a", "only_a": 1, "only_b": 2, "nodes": {"a": a.clone(), "b": b.clone()}}),
            ),
        ];
        for (wf, node, upstream, want) in table {
            assert_eq!(merge_input(&wf, &node, &upstream), want, "{upstream:?}");
        }
    }

    #[test]
    fn merge_input_keeps_non_object_outputs_whole() {
        let text = json!("plain text");
        let list = json!([1, 2]);
        let null = Value::Null;
        let got = merge_input(
            &json!({"k": 1}),
            &Value::Null,
            &[("t", &text), ("l", &list), ("n", &null)],
        );
        assert_eq!(
            got,
            json!({"k": 1, "nodes": {"t": "plain text", "l": [1, 2], "n": null}})
        );
        // A workflow input that is not an object adds nothing.
        assert_eq!(
            merge_input(&json!("x"), &json!({"a": 1}), &[]),
            json!({"a": 1})
        );
    }

    /// `nodes` is shared: an object already there gets the upstream ids added (nothing of it is
    /// lost); anything else under `nodes` is replaced.
    #[test]
    fn merge_input_shares_the_nodes_key() {
        let out = json!({"r": 1});
        assert_eq!(
            merge_input(
                &json!({"nodes": {"mine": true, "a": "old"}}),
                &json!({}),
                &[("a", &out)]
            ),
            json!({"r": 1, "nodes": {"mine": true, "a": {"r": 1}}})
        );
        assert_eq!(
            merge_input(&json!({"nodes": 3}), &json!({}), &[("a", &out)]),
            json!({"r": 1, "nodes": {"a": {"r": 1}}})
        );
        // Without upstream nodes a user's `nodes` stays as it is.
        assert_eq!(
            merge_input(&json!({"nodes": 3}), &json!({}), &[]),
            json!({"nodes": 3})
        );
    }

    #[test]
    fn merge_input_keeps_the_order_of_after() {
        let a = json!({"x": 1});
        let b = json!({"y": 2});
        let got = merge_input(&json!({}), &json!({}), &[("b", &b), ("a", &a)]);
        let ids: Vec<&String> = got["nodes"].as_object().unwrap().keys().collect();
        assert_eq!(ids, ["b", "a"]);
    }

    #[test]
    fn final_status() {
        use EdgeKind::*;
        use WorkflowRunStatus as R;
        let n = |status, outgoing: &'static [EdgeKind]| NodeEnd { status, outgoing };
        let table: Vec<(Vec<NodeEnd>, Option<R>, R)> = vec![
            (
                vec![n(S::Succeeded, &[]), n(S::Succeeded, &[])],
                None,
                R::Succeeded,
            ),
            // A failure handled by a failure edge (the rollback ran) or an always edge.
            (
                vec![n(S::Failed, &[Failure]), n(S::Succeeded, &[])],
                None,
                R::Succeeded,
            ),
            (
                vec![n(S::TimedOut, &[Always]), n(S::Skipped, &[])],
                None,
                R::Succeeded,
            ),
            // A failure with only success edges leaving it is not handled.
            (
                vec![n(S::Failed, &[Success]), n(S::Skipped, &[])],
                None,
                R::Failed,
            ),
            (
                vec![n(S::TimedOut, &[]), n(S::Succeeded, &[])],
                None,
                R::Failed,
            ),
            (
                vec![n(S::Failed, &[Condition, NotCondition])],
                None,
                R::Failed,
            ),
            // Skipped branches are not failures.
            (
                vec![n(S::Succeeded, &[Failure]), n(S::Skipped, &[])],
                None,
                R::Succeeded,
            ),
            // A node cancelled on its own, unhandled: the run is cancelled; an always edge
            // handles it.
            (vec![n(S::Cancelled, &[Failure])], None, R::Cancelled),
            (
                vec![n(S::Cancelled, &[Always]), n(S::Succeeded, &[])],
                None,
                R::Succeeded,
            ),
            // An unhandled failure outweighs an unhandled cancel.
            (
                vec![n(S::Cancelled, &[]), n(S::Failed, &[])],
                None,
                R::Failed,
            ),
            // A stopped run ends as it was stopped, whatever its nodes did.
            (
                vec![n(S::Succeeded, &[]), n(S::Skipped, &[])],
                Some(R::Cancelled),
                R::Cancelled,
            ),
            (
                vec![n(S::Failed, &[]), n(S::Cancelled, &[])],
                Some(R::TimedOut),
                R::TimedOut,
            ),
            // Not over while a node has not ended.
            (
                vec![n(S::Succeeded, &[]), n(S::Running, &[])],
                None,
                R::Running,
            ),
            (vec![n(S::Waiting, &[])], Some(R::Cancelled), R::Running),
        ];
        for (nodes, stopped, want) in table {
            assert_eq!(run_status(&nodes, stopped), want, "{nodes:?} {stopped:?}");
        }
    }

    #[test]
    fn status_mappings() {
        assert_eq!(NodeRunStatus::from_job(JobStatus::Partial), S::Failed);
        assert_eq!(NodeRunStatus::from_job(JobStatus::TimedOut), S::TimedOut);
        assert_eq!(NodeRunStatus::from_job(JobStatus::Running), S::Running);
        assert_eq!(
            NodeRunStatus::from_run(WorkflowRunStatus::Cancelled),
            S::Cancelled
        );
        let finals: Vec<_> = NodeRunStatus::ALL.iter().filter(|s| s.is_final()).collect();
        assert_eq!(
            finals,
            [
                &S::Succeeded,
                &S::Failed,
                &S::TimedOut,
                &S::Cancelled,
                &S::Skipped
            ]
        );
        assert!(!WorkflowRunStatus::Queued.is_final());
        assert!(WorkflowRunStatus::TimedOut.is_final());
    }

    #[test]
    fn topological_order_and_cycles() {
        // release: build -> deploy -> smoke; rollback after deploy and smoke; announce after smoke.
        let edges = [(0, 1), (1, 2), (1, 3), (2, 3), (2, 4)];
        assert_eq!(topological_order(5, &edges), Ok(vec![0, 1, 2, 3, 4]));
        // File order is kept wherever the graph allows: 2 has no upstream and comes before 1's
        // successor.
        assert_eq!(topological_order(3, &[(0, 1)]), Ok(vec![0, 1, 2]));
        assert_eq!(topological_order(3, &[(2, 0)]), Ok(vec![1, 2, 0]));
        assert_eq!(topological_order(0, &[]), Ok(vec![]));
        type Case = (usize, &'static [(usize, usize)], &'static [usize]);
        let table: &[Case] = &[
            (2, &[(0, 1), (1, 0)], &[0, 1, 0]),
            (1, &[(0, 0)], &[0, 0]),
            (4, &[(0, 1), (1, 2), (2, 3), (3, 1)], &[1, 2, 3, 1]),
            // A node downstream of a cycle is not part of it.
            (4, &[(1, 2), (2, 1), (2, 3)], &[1, 2, 1]),
            (3, &[(2, 1), (1, 2)], &[1, 2, 1]),
        ];
        for &(count, edges, cycle) in table {
            assert_eq!(
                topological_order(count, edges),
                Err(cycle.to_vec()),
                "{edges:?}"
            );
        }
    }
}
