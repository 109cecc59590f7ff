//! Workflows: versions and graph rows, inline-node events, and runs driven through the real
//! queue by hand (claim, finish, cancel, recover with a driven clock): edge kinds, joins, skip
//! propagation, input merging, fan-out and fan-in, the final status, cancel, timeout, retry,
//! sub-workflows, crashes between steps and concurrent branch ends.

use std::collections::HashMap;

use cronium_model::workflow::{
    EdgeKind::{self, *},
    Join, NodeBody, NodeDefinition, NodeRunStatus as N, WorkflowDefinition, WorkflowRunStatus as R,
};
use cronium_model::{EventStatus, ExecutionStatus, JobPolicy, JobStatus, PolicyOverride, Trigger};
use cronium_store::{
    Applied, AttemptEnd, CancelRunResult, ExecutionUpdate, Heartbeat, JobFilter, JobOutcome,
    JobRow, RunFilter, RunRequest, Store, StoreError, WorkflowFireResult, WorkflowRow,
    WorkflowRunDetail, WorkflowRunRow,
};
use serde_json::{json, Value};

use crate::harness::Ctx;

conformance!(
    an_attempts_end_is_one_write_with_its_executions_and_successors,
    an_attempts_end_hands_the_ready_successor_to_its_worker,
    apply_writes_versions_graph_rows_and_inline_events,
    bad_definitions_are_refused_with_nothing_stored,
    event_policy_is_stored_beside_the_spec,
    success_failure_and_always_edges,
    condition_edges_follow_the_condition_set,
    join_all_and_any,
    skips_propagate_with_their_reasons,
    input_merges_through_real_jobs,
    fan_out_and_fan_in_keep_the_order_of_after,
    final_status_follows_the_handled_failures,
    node_jobs_carry_the_policy_and_overrides,
    a_node_that_cannot_start_fails_with_the_reason,
    max_executions_reached_by_a_node_fails_it,
    cancel_cancels_queued_jobs_asks_running_ones_and_skips_waiting_nodes,
    cancel_of_a_single_node_job_lets_the_run_progress,
    retry_later_with_a_pending_cancel_ends_the_node,
    runs_past_their_deadline_time_out,
    retry_keeps_the_succeeded_nodes_and_reruns_the_rest,
    sub_workflow_runs_end_their_parent_node,
    sub_workflows_nest_at_most_max_depth,
    crash_between_steps_enqueues_the_successor_exactly_once,
    concurrent_branch_ends_start_exactly_one_join,
    overlap_queue_waits_for_the_active_run,
    fire_workflow_is_fenced_and_once_per_tick,
    delete_workflow_cancels_its_runs_and_removes_its_events,
    explain_says_why_each_node_stands_where_it_does,
    a_node_job_finds_its_run_and_seeded_runs_read_back,
);

const W: &str = "w";
const LEASE: i64 = 60_000;

fn policy() -> JobPolicy {
    JobPolicy {
        max_attempts: 1,
        backoff_ms: 1000,
        max_backoff_ms: 5000,
        timeout_ms: 60_000,
        max_executions: 0,
    }
}

fn edges(after: &[(&str, EdgeKind)]) -> Vec<(String, EdgeKind)> {
    after.iter().map(|(a, k)| (a.to_string(), *k)).collect()
}

/// A node running the user event `event`.
fn node(id: &str, event: &str, after: &[(&str, EdgeKind)]) -> NodeDefinition {
    NodeDefinition {
        id: id.into(),
        body: NodeBody::Event { name: event.into() },
        join: Join::All,
        after: edges(after),
        input: json!({}),
        overrides: Value::Null,
        policy: PolicyOverride::default(),
    }
}

/// An inline node with its own script.
fn inline(id: &str, after: &[(&str, EdgeKind)]) -> NodeDefinition {
    NodeDefinition {
        body: NodeBody::Inline {
            spec: json!({"type": "bash", "script": format!("echo {id}")}),
            policy: policy(),
        },
        policy: PolicyOverride::all(&policy()),
        ..node(id, "", after)
    }
}

/// A node running the workflow `workflow`.
fn sub(id: &str, workflow: &str, after: &[(&str, EdgeKind)]) -> NodeDefinition {
    NodeDefinition {
        body: NodeBody::Workflow {
            name: workflow.into(),
        },
        ..node(id, "", after)
    }
}

fn any(mut n: NodeDefinition) -> NodeDefinition {
    n.join = Join::Any;
    n
}

/// A definition whose stored spec changes whenever its nodes do.
fn def(name: &str, nodes: Vec<NodeDefinition>) -> WorkflowDefinition {
    WorkflowDefinition {
        name: name.into(),
        status: EventStatus::Active,
        spec: json!({"name": name, "nodes": serde_json::to_value(&nodes).unwrap()}),
        input: json!({}),
        timeout_ms: None,
        nodes,
    }
}

async fn events(s: &Store, names: &[&str]) {
    for name in names {
        s.create_event_with_policy(
            name,
            EventStatus::Active,
            &json!({"type": "bash", "script": "x"}),
            &policy(),
            1,
        )
        .await
        .unwrap();
    }
}

async fn apply(s: &Store, d: &WorkflowDefinition) -> WorkflowRow {
    s.apply_workflow(d, 10).await.unwrap().0
}

fn manual(input: Option<Value>) -> RunRequest {
    RunRequest {
        trigger: Trigger::Manual,
        input,
        queue: false,
    }
}

async fn start(s: &Store, wf: &WorkflowRow, now: i64) -> WorkflowRunRow {
    s.start_workflow_run(wf.id, &manual(None), now)
        .await
        .unwrap()
}

async fn detail(s: &Store, run: i64) -> WorkflowRunDetail {
    s.get_workflow_run(run).await.unwrap().expect("run exists")
}

/// Each node's status, by node id.
async fn statuses(s: &Store, run: i64) -> HashMap<String, N> {
    detail(s, run)
        .await
        .nodes
        .into_iter()
        .map(|n| (n.node_id, n.status))
        .collect()
}

async fn status_of(s: &Store, run: i64, node: &str) -> N {
    statuses(s, run).await[node]
}

async fn reason_of(s: &Store, run: i64, node: &str) -> String {
    let d = detail(s, run).await;
    let n = d.nodes.iter().find(|n| n.node_id == node).unwrap();
    n.reason.clone().unwrap_or_default()
}

async fn job_of(s: &Store, run: i64, node: &str) -> JobRow {
    let d = detail(s, run).await;
    let n = d.nodes.iter().find(|n| n.node_id == node).unwrap();
    let id = n
        .job_id
        .unwrap_or_else(|| panic!("node {node} has no job: {n:?}"));
    s.get_job(id).await.unwrap().unwrap()
}

/// The node's job, claimed by `W` (claiming whatever comes before it in the queue too).
async fn claim_node(s: &Store, run: i64, node: &str, now: i64) -> JobRow {
    let job = job_of(s, run, node).await;
    if job.status == JobStatus::Running {
        return job;
    }
    loop {
        let c = s
            .claim(W, LEASE, now)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("the job of {node} is not claimable"));
        if c.id == job.id {
            return c;
        }
    }
}

/// Runs a node's job to `status` with `output`, its one execution setting `condition`.
async fn end_node(
    s: &Store,
    run: i64,
    node: &str,
    status: JobStatus,
    output: Value,
    condition: Option<bool>,
    now: i64,
) -> JobRow {
    let job = claim_node(s, run, node, now).await;
    let exec = s
        .create_execution(job.id, W, job.attempt, None, ExecutionStatus::Running, now)
        .await
        .unwrap()
        .unwrap();
    let exec_status = match status {
        JobStatus::Succeeded => ExecutionStatus::Succeeded,
        JobStatus::TimedOut => ExecutionStatus::TimedOut,
        JobStatus::Cancelled => ExecutionStatus::Cancelled,
        _ => ExecutionStatus::Failed,
    };
    let update = ExecutionUpdate {
        status: Some(exec_status),
        condition,
        ..Default::default()
    };
    assert!(s
        .update_execution(exec.id, W, job.attempt, &update)
        .await
        .unwrap());
    let outcome = JobOutcome {
        status,
        exit_code: Some(if status == JobStatus::Succeeded { 0 } else { 1 }),
        output,
        error: (status != JobStatus::Succeeded).then(|| format!("{node} went {status}")),
    };
    assert!(s
        .finish(job.id, W, job.attempt, &outcome, now)
        .await
        .unwrap());
    s.get_job(job.id).await.unwrap().unwrap()
}

async fn ok(s: &Store, run: i64, node: &str, now: i64) -> JobRow {
    end_node(s, run, node, JobStatus::Succeeded, json!({}), None, now).await
}

async fn fail(s: &Store, run: i64, node: &str, now: i64) -> JobRow {
    end_node(s, run, node, JobStatus::Failed, Value::Null, None, now).await
}

async fn run_status(s: &Store, run: i64) -> R {
    detail(s, run).await.run.status
}

/// Jobs of node runs, whatever their status.
async fn node_jobs(s: &Store) -> Vec<JobRow> {
    s.list_jobs(&JobFilter::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|j| j.node_run_id.is_some())
        .collect()
}

/// `finish_attempt`: the executions' ends, the job's outcome and the successors it makes ready
/// in one write; nothing of it when the lease is lost; right also when the caller's idea of
/// whether the job is a node's is wrong.
async fn an_attempts_end_is_one_write_with_its_executions_and_successors(t: Ctx) {
    let s = &t.store;
    events(s, &["e"]).await;
    let wf = apply(
        s,
        &def(
            "w",
            vec![
                node("a", "e", &[]),
                node("b", "e", &[("a", Success)]),
                node("c", "e", &[("b", Success)]),
            ],
        ),
    )
    .await;
    let run = start(s, &wf, 100).await;
    let outcome = JobOutcome {
        status: JobStatus::Succeeded,
        exit_code: Some(0),
        output: json!({"k": 1}),
        error: None,
    };
    let end = ExecutionUpdate {
        status: Some(ExecutionStatus::Succeeded),
        exit_code: Some(0),
        finished_at: Some(200),
        ..Default::default()
    };
    let a = claim_node(s, run.id, "a", 150).await;
    let xa = s
        .create_execution(a.id, W, a.attempt, None, ExecutionStatus::Running, 150)
        .await
        .unwrap()
        .unwrap();
    // Another worker's end of a's attempt: nothing written, neither the execution nor the job.
    assert!(!s
        .finish_attempt(
            &AttemptEnd {
                job_id: a.id,
                worker: "other",
                attempt: a.attempt,
                node_run_id: a.node_run_id,
                executions: &[(xa.id, end.clone())],
                outcome: &outcome,
            },
            200,
        )
        .await
        .unwrap());
    assert_eq!(
        s.get_job(a.id).await.unwrap().unwrap().status,
        JobStatus::Running
    );
    let x = s.list_executions(a.id).await.unwrap();
    assert_eq!(x[0].status, ExecutionStatus::Running);
    assert_eq!(status_of(s, run.id, "b").await, N::Waiting);

    assert!(s
        .finish_attempt(
            &AttemptEnd {
                job_id: a.id,
                worker: W,
                attempt: a.attempt,
                node_run_id: a.node_run_id,
                executions: &[(xa.id, end.clone())],
                outcome: &outcome,
            },
            200,
        )
        .await
        .unwrap());
    let done = s.get_job(a.id).await.unwrap().unwrap();
    assert_eq!(
        (done.status, done.finished_at),
        (JobStatus::Succeeded, Some(200))
    );
    let x = s.list_executions(a.id).await.unwrap();
    assert_eq!(
        (x[0].status, x[0].exit_code),
        (ExecutionStatus::Succeeded, Some(0))
    );
    // The successor was made ready by the same write.
    assert_eq!(status_of(s, run.id, "b").await, N::Queued);
    assert_eq!(job_of(s, run.id, "b").await.status, JobStatus::Queued);

    // A caller that does not know b is a node's job: the general path still ends it, and c
    // becomes ready.
    let b = claim_node(s, run.id, "b", 300).await;
    let xb = s
        .create_execution(b.id, W, b.attempt, None, ExecutionStatus::Running, 300)
        .await
        .unwrap()
        .unwrap();
    assert!(s
        .finish_attempt(
            &AttemptEnd {
                job_id: b.id,
                worker: W,
                attempt: b.attempt,
                node_run_id: None,
                executions: &[(xb.id, end)],
                outcome: &outcome,
            },
            400,
        )
        .await
        .unwrap());
    assert_eq!(
        s.list_executions(b.id).await.unwrap()[0].status,
        ExecutionStatus::Succeeded
    );
    assert_eq!(status_of(s, run.id, "c").await, N::Queued);
}

/// `finish_attempt_and_claim`: the successor a node's end makes ready is claimed for the same
/// worker by the same write (running, its attempt 1, leased); a fan-out's second ready successor
/// is left queued for anyone; a lost lease hands nothing.
async fn an_attempts_end_hands_the_ready_successor_to_its_worker(t: Ctx) {
    let s = &t.store;
    events(s, &["e"]).await;
    let wf = apply(
        s,
        &def(
            "w",
            vec![
                node("a", "e", &[]),
                node("b", "e", &[("a", Success)]),
                node("c", "e", &[("a", Success)]),
            ],
        ),
    )
    .await;
    let run = start(s, &wf, 100).await;
    let outcome = JobOutcome {
        status: JobStatus::Succeeded,
        exit_code: Some(0),
        output: json!({}),
        error: None,
    };
    let a = claim_node(s, run.id, "a", 150).await;
    let end = |worker| AttemptEnd {
        job_id: a.id,
        worker,
        attempt: a.attempt,
        node_run_id: a.node_run_id,
        executions: &[],
        outcome: &outcome,
    };
    // Not the lease holder: nothing written, nothing handed.
    let (written, next) = s
        .finish_attempt_and_claim(&end("other"), 30_000, 200)
        .await
        .unwrap();
    assert!(!written && next.is_none());
    assert_eq!(status_of(s, run.id, "b").await, N::Waiting);

    let (written, next) = s
        .finish_attempt_and_claim(&end(W), 30_000, 200)
        .await
        .unwrap();
    assert!(written);
    let handed = next.expect("a ready successor is handed to the worker");
    assert!(
        handed.more_ready,
        "the other successor is left ready for the claim loop"
    );
    // A local job runs one execution: created by the same write, pending, fenced to the
    // worker's attempt.
    let execution = handed.execution.clone().expect("the successor's execution");
    assert_eq!(
        (
            execution.job_id,
            execution.attempt,
            execution.server.as_deref()
        ),
        (handed.job.id, 1, None)
    );
    assert_eq!(
        (execution.status, execution.created_at),
        (ExecutionStatus::Pending, 200)
    );
    assert_eq!(
        s.list_executions(handed.job.id).await.unwrap(),
        vec![execution.clone()]
    );
    assert!(s
        .update_execution(
            execution.id,
            W,
            1,
            &ExecutionUpdate {
                status: Some(ExecutionStatus::Running),
                ..Default::default()
            }
        )
        .await
        .unwrap());
    let next = handed.job;
    let stored = s.get_job(next.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.attempt, stored.started_at),
        (JobStatus::Running, 1, Some(200))
    );
    assert_eq!(stored.lease_owner.as_deref(), Some(W));
    assert_eq!(stored.lease_expires_at, Some(30_200));
    // Exactly one of b and c was handed; the other waits in the queue for any worker.
    let b = job_of(s, run.id, "b").await;
    let c = job_of(s, run.id, "c").await;
    let mut statuses = [b.status, c.status];
    statuses.sort_by_key(|s| s.as_str());
    assert_eq!(statuses, [JobStatus::Queued, JobStatus::Running]);
    let other = s
        .claim("w2", 30_000, 300)
        .await
        .unwrap()
        .expect("the other successor");
    assert_ne!(other.id, next.id);
    // The successor left in the queue got no execution from the end: its claimer makes its own.
    assert!(s.list_executions(other.id).await.unwrap().is_empty());

    // A chain: the one successor is handed, and nothing else is left for the claim loop.
    let chain = apply(
        s,
        &def(
            "chain",
            vec![node("x", "e", &[]), node("y", "e", &[("x", Success)])],
        ),
    )
    .await;
    let run = start(s, &chain, 400).await;
    let x = claim_node(s, run.id, "x", 450).await;
    let (written, next) = s
        .finish_attempt_and_claim(
            &AttemptEnd {
                job_id: x.id,
                worker: W,
                attempt: x.attempt,
                node_run_id: x.node_run_id,
                executions: &[],
                outcome: &outcome,
            },
            30_000,
            500,
        )
        .await
        .unwrap();
    assert!(written);
    let handed = next.expect("y is handed to the worker");
    assert!(!handed.more_ready, "nothing else became ready");
    assert_eq!(handed.job.id, job_of(s, run.id, "y").await.id);
}

async fn apply_writes_versions_graph_rows_and_inline_events(t: Ctx) {
    let s = &t.store;
    events(s, &["build"]).await;
    let d = def(
        "release",
        vec![
            node("build", "build", &[]),
            inline("smoke", &[("build", Success)]),
            any(node(
                "notify",
                "build",
                &[("smoke", Always), ("build", Failure)],
            )),
        ],
    );
    let (wf, applied) = s.apply_workflow(&d, 10).await.unwrap();
    assert_eq!(
        (wf.name.as_str(), wf.version, applied),
        ("release", 1, Applied::Created)
    );
    assert_eq!(wf.spec, d.spec);
    assert_eq!(
        s.get_workflow_by_name("release").await.unwrap(),
        Some(wf.clone())
    );
    assert_eq!(s.list_workflows().await.unwrap(), vec![wf.clone()]);

    let graph = s.workflow_graph(wf.id, 1).await.unwrap().unwrap();
    let ids: Vec<&str> = graph.nodes.iter().map(|n| n.node_id.as_str()).collect();
    assert_eq!(ids, ["build", "smoke", "notify"]);
    // `after` order survives the rows: smoke before build.
    assert_eq!(
        graph.nodes[2].after,
        edges(&[("smoke", Always), ("build", Failure)])
    );
    assert_eq!(graph.nodes[2].join, Join::Any);
    assert_eq!(graph.outgoing("build"), [Success, Failure]);

    // The inline node is an event of its own, hidden from the users' events, pinned.
    let inline_events = s.list_inline_events(Some(wf.id)).await.unwrap();
    assert_eq!(inline_events.len(), 1);
    let smoke = &inline_events[0];
    assert_eq!(
        (smoke.name.as_str(), smoke.workflow_id, smoke.version),
        ("release/smoke", Some(wf.id), 1)
    );
    assert_eq!(smoke.policy, Some(policy()));
    assert_eq!(
        (graph.nodes[1].event_id, graph.nodes[1].event_version),
        (Some(smoke.id), Some(1))
    );
    let users: Vec<String> = s
        .list_events()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(users, ["build"]);
    // It is changed and deleted with its workflow only.
    assert!(
        matches!(s.delete_event(smoke.id).await, Err(StoreError::Invalid(m)) if m.contains("inline node"))
    );
    assert!(matches!(
        s.apply_event("release/smoke", EventStatus::Active, &json!({}), 1).await,
        Err(StoreError::Invalid(m)) if m.starts_with("name:")
    ));

    // The same definition again: nothing written.
    let (same, applied) = s.apply_workflow(&d, 20).await.unwrap();
    assert_eq!(
        (same.version, applied, same.updated_at),
        (1, Applied::Unchanged, 10)
    );

    // A new version: the inline script changed (a new event version, pinned), a node gone.
    let mut changed = inline("smoke", &[("build", Success)]);
    changed.body = NodeBody::Inline {
        spec: json!({"type": "bash", "script": "echo changed"}),
        policy: policy(),
    };
    let d2 = def("release", vec![node("build", "build", &[]), changed]);
    let (wf2, applied) = s.apply_workflow(&d2, 30).await.unwrap();
    assert_eq!((wf2.version, applied), (2, Applied::Updated));
    let g2 = s.workflow_graph(wf.id, 2).await.unwrap().unwrap();
    assert_eq!(g2.nodes.len(), 2);
    assert_eq!(g2.nodes[1].event_version, Some(2));
    // Version 1 keeps its graph and its pin.
    assert_eq!(
        s.workflow_graph(wf.id, 1).await.unwrap().unwrap().nodes[1].event_version,
        Some(1)
    );
    assert_eq!(
        s.get_workflow_version(wf.id, 1)
            .await
            .unwrap()
            .unwrap()
            .spec,
        d.spec
    );
    assert_eq!(
        s.get_workflow_version(wf.id, 2)
            .await
            .unwrap()
            .unwrap()
            .spec,
        d2.spec
    );
    assert_eq!(s.workflows_using_event("build").await.unwrap(), ["release"]);
    assert!(s.workflows_using_event("other").await.unwrap().is_empty());

    // A node removed from the workflow archives its inline event (old runs may need it).
    let d3 = def("release", vec![node("build", "build", &[])]);
    s.apply_workflow(&d3, 40).await.unwrap();
    let kept = s.get_event_by_name("release/smoke").await.unwrap().unwrap();
    assert_eq!(kept.status, EventStatus::Archived);
}

async fn bad_definitions_are_refused_with_nothing_stored(t: Ctx) {
    let s = &t.store;
    events(s, &["e"]).await;
    s.apply_workflow(&def("other", vec![node("a", "e", &[])]), 1)
        .await
        .unwrap();
    let refer = |name: &str, to: &str| def(name, vec![sub("s", to, &[])]);
    let mut dup = def("w", vec![node("a", "e", &[]), node("a", "e", &[])]);
    dup.spec = json!("dup");
    let mut bad_input = def("w", vec![node("a", "e", &[])]);
    bad_input.input = json!([1]);
    let mut bad_node_input = def("w", vec![node("a", "e", &[])]);
    bad_node_input.nodes[0].input = json!("x");
    let mut bad_attempts = def("w", vec![node("a", "e", &[])]);
    bad_attempts.nodes[0].policy.max_attempts = Some(0);
    let cases: Vec<(WorkflowDefinition, &str)> = vec![
        (
            def("w", vec![]),
            "nodes: a workflow needs at least one node",
        ),
        (
            def(
                "w",
                vec![
                    node("a", "e", &[("b", Success)]),
                    node("b", "e", &[("a", Success)]),
                ],
            ),
            "nodes: cycle a -> b -> a",
        ),
        (
            def("w", vec![node("a", "e", &[("zz", Success)])]),
            "nodes[0].after.zz: unknown node",
        ),
        (
            def("w", vec![node("a", "e", &[("a", Success)])]),
            "nodes[0].after.a: a node cannot come after itself",
        ),
        (dup, "nodes[1].id: `a` is already the id of nodes[0]"),
        (
            def("w", vec![node("a", "nope", &[])]),
            "nodes[0].event: unknown event `nope`",
        ),
        (
            refer("w", "ghost"),
            "nodes[0].workflow: unknown workflow `ghost`",
        ),
        (
            refer("w", "w"),
            "nodes[0].workflow: a workflow cannot run itself",
        ),
        (bad_input, "input: must be an object"),
        (bad_node_input, "nodes[0].input: must be an object"),
        (
            bad_attempts,
            "nodes[0].retries.max_attempts: must be at least 1",
        ),
        (
            def("a/b", vec![node("a", "e", &[])]),
            "name: `a/b` contains `/`",
        ),
    ];
    for (d, message) in cases {
        match s.apply_workflow(&d, 2).await {
            Err(StoreError::Invalid(m)) => assert_eq!(m, message),
            other => panic!("{message}: {other:?}"),
        }
        assert!(
            s.get_workflow_by_name(&d.name).await.unwrap().is_none(),
            "{message}"
        );
    }
    // Recursion through stored workflows: b -> c, then c -> b is refused; nothing of c stays.
    s.apply_workflow(&refer("c0", "other"), 3).await.unwrap();
    s.apply_workflow(&refer("b", "c0"), 3).await.unwrap();
    match s.apply_workflow(&refer("c0", "b"), 4).await {
        Err(StoreError::Invalid(m)) => assert_eq!(m, "nodes[0].workflow: recursion: c0 -> b -> c0"),
        other => panic!("{other:?}"),
    }
    let c0 = s.get_workflow_by_name("c0").await.unwrap().unwrap();
    assert_eq!(c0.version, 1, "the refused version was not written");
    assert_eq!(
        s.workflow_references("c0").await.unwrap(),
        Some(vec!["other".to_string()])
    );
    assert_eq!(s.workflow_references("ghost").await.unwrap(), None);
    // An inline node of a refused definition leaves no event behind.
    let d = def("w", vec![inline("x", &[]), node("a", "nope", &[])]);
    assert!(s.apply_workflow(&d, 5).await.is_err());
    assert!(s.get_event_by_name("w/x").await.unwrap().is_none());
    assert_eq!(s.list_workflows().await.unwrap().len(), 3);
    // A bad run request writes nothing either.
    let other = s.get_workflow_by_name("other").await.unwrap().unwrap();
    assert!(matches!(
        s.start_workflow_run(other.id, &manual(Some(json!([1]))), 6).await,
        Err(StoreError::Invalid(m)) if m.starts_with("input:")
    ));
    assert!(s
        .list_workflow_runs(&RunFilter::default())
        .await
        .unwrap()
        .is_empty());
    assert!(node_jobs(s).await.is_empty());
}

async fn event_policy_is_stored_beside_the_spec(t: Ctx) {
    let s = &t.store;
    let spec = json!({"type": "bash", "script": "x"});
    let p = JobPolicy {
        max_attempts: 3,
        backoff_ms: 2000,
        max_backoff_ms: 9000,
        timeout_ms: 600_000,
        max_executions: 5,
    };
    let e = s
        .create_event_with_policy("a", EventStatus::Active, &spec, &p, 1)
        .await
        .unwrap();
    assert_eq!(e.policy, Some(p));
    assert_eq!(e.workflow_id, None);
    // A write without the policy leaves it unknown for a new spec...
    let e2 = s
        .update_event(
            e.id,
            EventStatus::Active,
            &json!({"type": "bash", "script": "y"}),
            2,
        )
        .await
        .unwrap();
    assert_eq!((e2.version, e2.policy), (2, None));
    assert_eq!(s.events_without_policy().await.unwrap().len(), 1);
    // ...and the backfill is fenced by the version.
    assert!(!s.set_event_policy(e.id, 1, &p).await.unwrap());
    assert!(s.set_event_policy(e.id, 2, &p).await.unwrap());
    assert!(s.events_without_policy().await.unwrap().is_empty());
    // An unchanged spec given with a policy writes it without a new version.
    let (old, _) = s
        .apply_event("b", EventStatus::Active, &spec, 3)
        .await
        .unwrap();
    assert_eq!(old.policy, None);
    let (now, applied) = s
        .apply_event_with_policy("b", EventStatus::Active, &spec, &p, 4)
        .await
        .unwrap();
    assert_eq!(
        (now.version, applied, now.policy),
        (1, Applied::Unchanged, Some(p))
    );
    let bad = JobPolicy {
        max_attempts: 0,
        ..p
    };
    assert!(matches!(
        s.apply_event_with_policy("c", EventStatus::Active, &spec, &bad, 5).await,
        Err(StoreError::Invalid(m)) if m.starts_with("policy.max_attempts")
    ));
    assert!(s.get_event_by_name("c").await.unwrap().is_none());
}

async fn success_failure_and_always_edges(t: Ctx) {
    let s = &t.store;
    events(s, &["e"]).await;
    let wf = apply(
        s,
        &def(
            "w",
            vec![
                node("a", "e", &[]),
                node("on_ok", "e", &[("a", Success)]),
                node("on_fail", "e", &[("a", Failure)]),
                node("anyway", "e", &[("a", Always)]),
            ],
        ),
    )
    .await;
    let run = start(s, &wf, 100).await;
    assert_eq!(run.status, R::Running);
    assert_eq!(status_of(s, run.id, "a").await, N::Queued);
    assert_eq!(status_of(s, run.id, "on_ok").await, N::Waiting);
    // The start node's job was inserted with the run, trigger workflow.
    let a_job = job_of(s, run.id, "a").await;
    assert_eq!(
        (a_job.trigger, a_job.status),
        (Trigger::Workflow, JobStatus::Queued)
    );
    ok(s, run.id, "a", 200).await;
    let st = statuses(s, run.id).await;
    assert_eq!(
        (st["on_ok"], st["on_fail"], st["anyway"]),
        (N::Queued, N::Skipped, N::Queued)
    );
    assert_eq!(
        reason_of(s, run.id, "on_fail").await,
        "skipped: a succeeded, edge needs failure"
    );
    assert_eq!(
        reason_of(s, run.id, "on_ok").await,
        "ran: a succeeded (success)"
    );
    // A queued node whose job has been claimed reads `running` in the run's detail; the other
    // queued one stays `queued`.
    claim_node(s, run.id, "on_ok", 250).await;
    let st = statuses(s, run.id).await;
    let anyway_job = job_of(s, run.id, "anyway").await;
    let expected = match anyway_job.status {
        JobStatus::Running => N::Running,
        _ => N::Queued,
    };
    assert_eq!((st["on_ok"], st["anyway"]), (N::Running, expected));

    let run2 = start(s, &wf, 300).await;
    fail(s, run2.id, "a", 400).await;
    let st = statuses(s, run2.id).await;
    assert_eq!(
        (st["on_ok"], st["on_fail"], st["anyway"]),
        (N::Skipped, N::Queued, N::Queued)
    );
    // A timeout is a failure too.
    let run3 = start(s, &wf, 500).await;
    end_node(s, run3.id, "a", JobStatus::TimedOut, Value::Null, None, 600).await;
    let st = statuses(s, run3.id).await;
    assert_eq!(
        (st["on_ok"], st["on_fail"], st["anyway"]),
        (N::Skipped, N::Queued, N::Queued)
    );
    assert_eq!(
        reason_of(s, run3.id, "on_fail").await,
        "ran: a timed out (failure)"
    );
}

async fn condition_edges_follow_the_condition_set(t: Ctx) {
    let s = &t.store;
    events(s, &["e"]).await;
    let wf = apply(
        s,
        &def(
            "w",
            vec![
                node("smoke", "e", &[]),
                node("yes", "e", &[("smoke", Condition)]),
                node("no", "e", &[("smoke", NotCondition)]),
            ],
        ),
    )
    .await;
    for (condition, yes, no) in [
        (Some(true), N::Queued, N::Skipped),
        (Some(false), N::Skipped, N::Queued),
        (None, N::Skipped, N::Queued),
    ] {
        let run = start(s, &wf, 100).await;
        end_node(
            s,
            run.id,
            "smoke",
            JobStatus::Succeeded,
            json!({}),
            condition,
            200,
        )
        .await;
        let d = detail(s, run.id).await;
        assert_eq!(d.nodes[0].condition, condition);
        let st = statuses(s, run.id).await;
        assert_eq!((st["yes"], st["no"]), (yes, no), "condition {condition:?}");
    }
    // A failed node satisfies neither, whatever its condition.
    let run = start(s, &wf, 300).await;
    end_node(
        s,
        run.id,
        "smoke",
        JobStatus::Failed,
        Value::Null,
        Some(true),
        400,
    )
    .await;
    let st = statuses(s, run.id).await;
    assert_eq!((st["yes"], st["no"]), (N::Skipped, N::Skipped));
    // A fan-out: true only when every execution that succeeded set it true.
    let run = start(s, &wf, 500).await;
    let job = claim_node(s, run.id, "smoke", 600).await;
    let execs = s
        .create_executions(
            job.id,
            W,
            job.attempt,
            &["web1", "web2"],
            ExecutionStatus::Running,
            600,
        )
        .await
        .unwrap()
        .unwrap();
    for (exec, condition) in execs.iter().zip([Some(true), None]) {
        let u = ExecutionUpdate {
            status: Some(ExecutionStatus::Succeeded),
            condition,
            ..Default::default()
        };
        assert!(s
            .update_execution(exec.id, W, job.attempt, &u)
            .await
            .unwrap());
    }
    let outcome = JobOutcome {
        status: JobStatus::Succeeded,
        exit_code: Some(0),
        output: json!({}),
        error: None,
    };
    assert!(s
        .finish(job.id, W, job.attempt, &outcome, 700)
        .await
        .unwrap());
    let st = statuses(s, run.id).await;
    assert_eq!((st["yes"], st["no"]), (N::Skipped, N::Queued));
}

async fn join_all_and_any(t: Ctx) {
    let s = &t.store;
    events(s, &["e"]).await;
    let wf = apply(
        s,
        &def(
            "w",
            vec![
                node("a", "e", &[]),
                node("b", "e", &[]),
                node("all", "e", &[("a", Success), ("b", Success)]),
                any(node("rollback", "e", &[("a", Failure), ("b", Failure)])),
            ],
        ),
    )
    .await;
    let run = start(s, &wf, 100).await;
    fail(s, run.id, "a", 200).await;
    // Not decided while an upstream node runs, even with join: any.
    let st = statuses(s, run.id).await;
    assert_eq!((st["all"], st["rollback"]), (N::Waiting, N::Waiting));
    ok(s, run.id, "b", 300).await;
    let st = statuses(s, run.id).await;
    assert_eq!((st["all"], st["rollback"]), (N::Skipped, N::Queued));
    assert_eq!(
        reason_of(s, run.id, "all").await,
        "skipped: a failed, edge needs success"
    );
    assert_eq!(
        reason_of(s, run.id, "rollback").await,
        "ran: a failed (failure)"
    );

    let run = start(s, &wf, 400).await;
    ok(s, run.id, "a", 500).await;
    ok(s, run.id, "b", 500).await;
    let st = statuses(s, run.id).await;
    assert_eq!((st["all"], st["rollback"]), (N::Queued, N::Skipped));
    assert_eq!(
        reason_of(s, run.id, "rollback").await,
        "skipped: a succeeded, edge needs failure; b succeeded, edge needs failure"
    );
    assert_eq!(
        reason_of(s, run.id, "all").await,
        "ran: a succeeded (success), b succeeded (success)"
    );
}

async fn skips_propagate_with_their_reasons(t: Ctx) {
    let s = &t.store;
    events(s, &["e"]).await;
    let wf = apply(
        s,
        &def(
            "w",
            vec![
                node("a", "e", &[]),
                node("b", "e", &[("a", Failure)]),
                node("c", "e", &[("b", Success)]),
                node("d", "e", &[("c", Condition)]),
                node("e", "e", &[("d", Always)]),
            ],
        ),
    )
    .await;
    let run = start(s, &wf, 100).await;
    ok(s, run.id, "a", 200).await;
    let st = statuses(s, run.id).await;
    assert_eq!(
        (st["b"], st["c"], st["d"], st["e"]),
        (N::Skipped, N::Skipped, N::Skipped, N::Queued)
    );
    assert_eq!(
        reason_of(s, run.id, "c").await,
        "skipped: b skipped, edge needs success"
    );
    assert_eq!(
        reason_of(s, run.id, "d").await,
        "skipped: c skipped, edge needs condition"
    );
    assert_eq!(reason_of(s, run.id, "e").await, "ran: d skipped (always)");
    assert_eq!(run_status(s, run.id).await, R::Running);
    ok(s, run.id, "e", 300).await;
    // Skipped branches are no failure.
    assert_eq!(run_status(s, run.id).await, R::Succeeded);
}

async fn input_merges_through_real_jobs(t: Ctx) {
    let s = &t.store;
    events(s, &["e"]).await;
    let mut a = node("a", "e", &[]);
    a.input = json!({"v": "a-in"});
    let mut c = node("c", "e", &[("b", Success), ("a", Success)]);
    c.input = json!({"n": true, "v": "c-in"});
    let mut d = def("w", vec![a, node("b", "e", &[]), c]);
    d.input = json!({"v": "workflow", "w": 1});
    let wf = apply(s, &d).await;
    let run = start(s, &wf, 100).await;
    assert_eq!(run.input, json!({"v": "workflow", "w": 1}));
    // A start node: the workflow input under its own.
    assert_eq!(
        job_of(s, run.id, "a").await.input,
        json!({"v": "a-in", "w": 1})
    );
    end_node(
        s,
        run.id,
        "a",
        JobStatus::Succeeded,
        json!({"v": "from-a", "x": 1}),
        None,
        200,
    )
    .await;
    end_node(
        s,
        run.id,
        "b",
        JobStatus::Succeeded,
        json!("plain text"),
        None,
        200,
    )
    .await;
    // c: workflow input, then its own, then b and a in its `after` order (a last: a wins).
    let input = job_of(s, run.id, "c").await.input;
    assert_eq!(
        input,
        json!({"v": "from-a", "w": 1, "n": true, "x": 1,
               "nodes": {"b": "plain text", "a": {"v": "from-a", "x": 1}}})
    );
    let ids: Vec<&String> = input["nodes"].as_object().unwrap().keys().collect();
    assert_eq!(ids, ["b", "a"], "upstream outputs in the order of after");
    let stored = detail(s, run.id).await;
    assert_eq!(stored.nodes[2].input, input);
    // The run's input given at start replaces the default.
    let run2 = s
        .start_workflow_run(wf.id, &manual(Some(json!({"v": "given"}))), 300)
        .await
        .unwrap();
    assert_eq!(job_of(s, run2.id, "a").await.input, json!({"v": "a-in"}));
    assert_eq!(job_of(s, run2.id, "b").await.input, json!({"v": "given"}));
    // The run's output: its end nodes' outputs, merged.
    end_node(
        s,
        run.id,
        "c",
        JobStatus::Succeeded,
        json!({"done": true}),
        None,
        400,
    )
    .await;
    let r = detail(s, run.id).await.run;
    assert_eq!(r.status, R::Succeeded);
    assert_eq!(
        r.output,
        json!({"done": true, "nodes": {"c": {"done": true}}})
    );
}

async fn fan_out_and_fan_in_keep_the_order_of_after(t: Ctx) {
    let s = &t.store;
    events(s, &["e"]).await;
    let branches = ["b3", "b1", "b2"];
    let mut nodes = vec![node("root", "e", &[])];
    for b in branches {
        nodes.push(node(b, "e", &[("root", Success)]));
    }
    nodes.push(node(
        "join",
        "e",
        &[("b3", Success), ("b1", Success), ("b2", Success)],
    ));
    let wf = apply(s, &def("w", nodes)).await;
    let run = start(s, &wf, 100).await;
    ok(s, run.id, "root", 200).await;
    // Fan-out: every branch queued by the commit that ended root.
    let st = statuses(s, run.id).await;
    assert!(branches.iter().all(|b| st[*b] == N::Queued), "{st:?}");
    for b in ["b1", "b2"] {
        end_node(
            s,
            run.id,
            b,
            JobStatus::Succeeded,
            json!({"k": b}),
            None,
            300,
        )
        .await;
        assert_eq!(status_of(s, run.id, "join").await, N::Waiting, "after {b}");
    }
    end_node(
        s,
        run.id,
        "b3",
        JobStatus::Succeeded,
        json!({"k": "b3"}),
        None,
        400,
    )
    .await;
    let input = job_of(s, run.id, "join").await.input;
    // Later in `after` wins: b2 comes last.
    assert_eq!(input["k"], "b2");
    let ids: Vec<&String> = input["nodes"].as_object().unwrap().keys().collect();
    assert_eq!(ids, ["b3", "b1", "b2"]);
    assert_eq!(node_jobs(s).await.len(), 5);
}

async fn final_status_follows_the_handled_failures(t: Ctx) {
    let s = &t.store;
    events(s, &["e"]).await;
    // deploy fails, rollback (failure edge) handles it: the run succeeds.
    let handled = apply(
        s,
        &def(
            "handled",
            vec![
                node("deploy", "e", &[]),
                node("rollback", "e", &[("deploy", Failure)]),
            ],
        ),
    )
    .await;
    let run = start(s, &handled, 100).await;
    fail(s, run.id, "deploy", 200).await;
    assert_eq!(run_status(s, run.id).await, R::Running);
    ok(s, run.id, "rollback", 300).await;
    let r = detail(s, run.id).await.run;
    assert_eq!(
        (r.status, r.finished_at, r.error),
        (R::Succeeded, Some(300), None)
    );
    // deploy fails with only a success edge leaving it: the run fails, naming it.
    let unhandled = apply(
        s,
        &def(
            "unhandled",
            vec![
                node("deploy", "e", &[]),
                node("smoke", "e", &[("deploy", Success)]),
            ],
        ),
    )
    .await;
    let run = start(s, &unhandled, 400).await;
    fail(s, run.id, "deploy", 500).await;
    let r = detail(s, run.id).await.run;
    assert_eq!(r.status, R::Failed);
    assert_eq!(
        r.error.as_deref(),
        Some("node `deploy` failed and no failure or always edge leaves it: deploy went failed")
    );
    // A partial fan-out is a failure of its node.
    let run = start(s, &unhandled, 600).await;
    end_node(
        s,
        run.id,
        "deploy",
        JobStatus::Partial,
        json!({}),
        None,
        700,
    )
    .await;
    assert_eq!(status_of(s, run.id, "deploy").await, N::Failed);
    assert_eq!(run_status(s, run.id).await, R::Failed);
}

async fn node_jobs_carry_the_policy_and_overrides(t: Ctx) {
    let s = &t.store;
    let p = JobPolicy {
        max_attempts: 3,
        backoff_ms: 2000,
        max_backoff_ms: 8000,
        timeout_ms: 600_000,
        max_executions: 0,
    };
    let e = s
        .create_event_with_policy(
            "deploy",
            EventStatus::Active,
            &json!({"type": "bash"}),
            &p,
            1,
        )
        .await
        .unwrap();
    let mut n = node("deploy", "deploy", &[]);
    n.policy.timeout_ms = Some(5000);
    n.overrides = json!({"target": {"servers": ["web1"]}, "env": {"A": "b"}});
    let wf = apply(s, &def("w", vec![n, inline("smoke", &[])])).await;
    let run = start(s, &wf, 100).await;
    let job = job_of(s, run.id, "deploy").await;
    let node_run = detail(s, run.id).await.nodes[0].id;
    assert_eq!(
        (
            job.event_id,
            job.event_name.as_str(),
            job.event_version,
            job.trigger
        ),
        (Some(e.id), "deploy", 1, Trigger::Workflow)
    );
    assert_eq!(
        (
            job.max_attempts,
            job.backoff_ms,
            job.max_backoff_ms,
            job.timeout_ms
        ),
        (3, 2000, 8000, 5000)
    );
    assert_eq!(job.node_run_id, Some(node_run));
    assert_eq!(
        job.overrides,
        json!({"target": {"servers": ["web1"]}, "env": {"A": "b"}})
    );
    let smoke = job_of(s, run.id, "smoke").await;
    assert_eq!(smoke.event_name, "w/smoke");
    assert_eq!(
        (smoke.timeout_ms, smoke.overrides.clone()),
        (60_000, Value::Null)
    );
    // The agent reads the pinned version of the inline event.
    let spec = s
        .get_event_version(smoke.event_id.unwrap(), smoke.event_version)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(spec["script"], "echo smoke");
    // A node's job retries with its stored policy: recovery requeues it, the node stays queued.
    let claimed = claim_node(s, run.id, "deploy", 200).await;
    let recovered = s.recover_expired(200 + LEASE + 1).await.unwrap();
    assert_eq!(recovered.len(), 1);
    assert_eq!(recovered[0].status, JobStatus::Queued);
    assert_eq!(status_of(s, run.id, "deploy").await, N::Queued);
    assert_eq!(claimed.attempt, 1);
}

async fn a_node_that_cannot_start_fails_with_the_reason(t: Ctx) {
    let s = &t.store;
    events(s, &["gone", "old"]).await;
    // An event written without its policy (before workflows existed).
    let old = s.get_event_by_name("old").await.unwrap().unwrap();
    s.update_event(old.id, EventStatus::Active, &json!({"v": 2}), 2)
        .await
        .unwrap();
    let wf = apply(
        s,
        &def(
            "w",
            vec![
                node("a", "gone", &[]),
                node("handler", "old", &[("a", Failure)]),
            ],
        ),
    )
    .await;
    let gone = s.get_event_by_name("gone").await.unwrap().unwrap();
    assert!(s.delete_event(gone.id).await.unwrap());
    let run = start(s, &wf, 100).await;
    let d = detail(s, run.id).await;
    assert_eq!(d.nodes[0].status, N::Failed);
    assert_eq!(
        d.nodes[0].error.as_deref(),
        Some("event `gone` no longer exists")
    );
    assert_eq!(d.nodes[0].job_id, None);
    // Its failure edge fired at once, in the same transaction; that node could not start either.
    assert_eq!(d.nodes[1].status, N::Failed);
    assert!(
        d.nodes[1]
            .error
            .as_deref()
            .unwrap()
            .contains("no stored job policy"),
        "{:?}",
        d.nodes[1]
    );
    assert_eq!(d.run.status, R::Failed);
    assert!(node_jobs(s).await.is_empty());
}

async fn max_executions_reached_by_a_node_fails_it(t: Ctx) {
    let s = &t.store;
    let limited = JobPolicy {
        max_executions: 1,
        ..policy()
    };
    let e = s
        .create_event_with_policy("once", EventStatus::Active, &json!({}), &limited, 1)
        .await
        .unwrap();
    let wf = apply(s, &def("w", vec![node("a", "once", &[])])).await;
    let first = start(s, &wf, 100).await;
    assert_eq!(status_of(s, first.id, "a").await, N::Queued);
    // The job that reached the limit paused the event, in the run's transaction.
    assert_eq!(
        s.get_event(e.id).await.unwrap().unwrap().status,
        EventStatus::Paused
    );
    let second = start(s, &wf, 200).await;
    let d = detail(s, second.id).await;
    assert_eq!(d.nodes[0].status, N::Failed);
    assert_eq!(
        d.nodes[0].error.as_deref(),
        Some("event `once` is paused: it reached its limit of 1 executions (max_executions)")
    );
    assert_eq!(d.run.status, R::Failed);
    assert_eq!(s.count_jobs_for_event(e.id).await.unwrap(), 1);
}

async fn cancel_cancels_queued_jobs_asks_running_ones_and_skips_waiting_nodes(t: Ctx) {
    let s = &t.store;
    events(s, &["e"]).await;
    let wf = apply(
        s,
        &def(
            "w",
            vec![
                node("running", "e", &[]),
                node("queued", "e", &[]),
                node("waiting", "e", &[("running", Success)]),
            ],
        ),
    )
    .await;
    let run = start(s, &wf, 100).await;
    let running = claim_node(s, run.id, "running", 200).await;
    let queued = job_of(s, run.id, "queued").await;
    assert_eq!(
        s.cancel_workflow_run(run.id, 300).await.unwrap(),
        CancelRunResult::Requested
    );
    assert_eq!(
        s.get_job(queued.id).await.unwrap().unwrap().status,
        JobStatus::Cancelled
    );
    assert_eq!(
        s.heartbeat(running.id, W, running.attempt, LEASE, 300)
            .await
            .unwrap(),
        Heartbeat::Ok {
            cancel_requested: true
        }
    );
    let d = detail(s, run.id).await;
    assert!(d.run.cancel_requested());
    assert_eq!(
        d.run.status,
        R::Running,
        "still running: one job has not stopped"
    );
    let st = statuses(s, run.id).await;
    assert_eq!((st["queued"], st["waiting"]), (N::Cancelled, N::Skipped));
    assert_eq!(
        reason_of(s, run.id, "waiting").await,
        "skipped: run cancelled"
    );
    // Cancelling again changes nothing more.
    assert_eq!(
        s.cancel_workflow_run(run.id, 350).await.unwrap(),
        CancelRunResult::Requested
    );
    // The running job stops (even a success would not start anything now): the run ends.
    end_node(
        s,
        run.id,
        "running",
        JobStatus::Cancelled,
        Value::Null,
        None,
        400,
    )
    .await;
    let r = detail(s, run.id).await.run;
    assert_eq!((r.status, r.finished_at), (R::Cancelled, Some(400)));
    assert_eq!(
        s.cancel_workflow_run(run.id, 500).await.unwrap(),
        CancelRunResult::AlreadyFinished(R::Cancelled)
    );
    assert_eq!(
        s.cancel_workflow_run(run.id + 100, 500).await.unwrap(),
        CancelRunResult::NotFound
    );
    // Nothing running: the run ends at once.
    let run = start(s, &wf, 600).await;
    assert_eq!(
        s.cancel_workflow_run(run.id, 700).await.unwrap(),
        CancelRunResult::Cancelled
    );
    assert_eq!(run_status(s, run.id).await, R::Cancelled);
    assert!(node_jobs(s)
        .await
        .iter()
        .filter(|j| j.status == JobStatus::Queued)
        .all(|j| j.node_run_id.is_none()));
}

async fn cancel_of_a_single_node_job_lets_the_run_progress(t: Ctx) {
    let s = &t.store;
    events(s, &["e"]).await;
    let wf = apply(
        s,
        &def(
            "w",
            vec![
                node("a", "e", &[]),
                node("after_ok", "e", &[("a", Success)]),
                node("cleanup", "e", &[("a", Always)]),
            ],
        ),
    )
    .await;
    let run = start(s, &wf, 100).await;
    let job = job_of(s, run.id, "a").await;
    assert_eq!(
        s.cancel(job.id, 200).await.unwrap(),
        cronium_store::CancelResult::Cancelled
    );
    let st = statuses(s, run.id).await;
    assert_eq!(
        (st["a"], st["after_ok"], st["cleanup"]),
        (N::Cancelled, N::Skipped, N::Queued)
    );
    ok(s, run.id, "cleanup", 300).await;
    // Handled by an always edge: the run succeeds.
    assert_eq!(run_status(s, run.id).await, R::Succeeded);
    // Unhandled (no always edge): the run ends cancelled.
    let wf2 = apply(
        s,
        &def(
            "w2",
            vec![node("a", "e", &[]), node("b", "e", &[("a", Success)])],
        ),
    )
    .await;
    let run = start(s, &wf2, 400).await;
    let job = job_of(s, run.id, "a").await;
    s.cancel(job.id, 500).await.unwrap();
    assert_eq!(run_status(s, run.id).await, R::Cancelled);
}

async fn retry_later_with_a_pending_cancel_ends_the_node(t: Ctx) {
    let s = &t.store;
    events(s, &["e"]).await;
    let wf = apply(
        s,
        &def(
            "w",
            vec![node("a", "e", &[]), node("b", "e", &[("a", Always)])],
        ),
    )
    .await;
    let run = start(s, &wf, 100).await;
    let job = claim_node(s, run.id, "a", 200).await;
    // A plain retry keeps the node queued.
    assert!(s
        .retry_later(job.id, W, job.attempt, 300, "try again", 250)
        .await
        .unwrap());
    assert_eq!(status_of(s, run.id, "a").await, N::Queued);
    let job = claim_node(s, run.id, "a", 300).await;
    assert_eq!(
        s.cancel(job.id, 310).await.unwrap(),
        cronium_store::CancelResult::Requested
    );
    assert!(s
        .retry_later(job.id, W, job.attempt, 400, "again", 320)
        .await
        .unwrap());
    let st = statuses(s, run.id).await;
    assert_eq!((st["a"], st["b"]), (N::Cancelled, N::Queued));
}

async fn runs_past_their_deadline_time_out(t: Ctx) {
    let s = &t.store;
    events(s, &["e"]).await;
    let mut d = def(
        "w",
        vec![
            node("a", "e", &[]),
            node("b", "e", &[]),
            node("c", "e", &[("a", Success)]),
        ],
    );
    d.timeout_ms = Some(1000);
    let wf = apply(s, &d).await;
    let run = start(s, &wf, 100).await;
    assert_eq!(run.deadline_at, Some(1100));
    let a = claim_node(s, run.id, "a", 200).await;
    assert!(s.expire_workflow_runs(1099).await.unwrap().is_empty());
    let expired = s.expire_workflow_runs(1100).await.unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(
        (expired[0].id, expired[0].stop),
        (run.id, Some(R::TimedOut))
    );
    let st = statuses(s, run.id).await;
    assert_eq!((st["b"], st["c"]), (N::Cancelled, N::Skipped));
    assert_eq!(reason_of(s, run.id, "c").await, "skipped: run timed out");
    assert!(matches!(
        s.heartbeat(a.id, W, a.attempt, LEASE, 1100).await.unwrap(),
        Heartbeat::Ok {
            cancel_requested: true
        }
    ));
    // Timed out once, whoever calls again.
    assert!(s.expire_workflow_runs(1200).await.unwrap().is_empty());
    end_node(
        s,
        run.id,
        "a",
        JobStatus::Cancelled,
        Value::Null,
        None,
        1300,
    )
    .await;
    let r = detail(s, run.id).await.run;
    assert_eq!(
        (r.status, r.error.as_deref()),
        (R::TimedOut, Some("run timed out"))
    );
    // A run without a timeout never expires.
    let wf2 = apply(s, &def("no-timeout", vec![node("a", "e", &[])])).await;
    let run2 = start(s, &wf2, 100).await;
    assert_eq!(run2.deadline_at, None);
    assert!(s
        .expire_workflow_runs(i64::MAX / 2)
        .await
        .unwrap()
        .is_empty());
}

async fn retry_keeps_the_succeeded_nodes_and_reruns_the_rest(t: Ctx) {
    let s = &t.store;
    events(s, &["e"]).await;
    let wf = apply(
        s,
        &def(
            "w",
            vec![
                node("build", "e", &[]),
                node("test", "e", &[]),
                node("deploy", "e", &[("build", Success), ("test", Success)]),
                node("notify", "e", &[("deploy", Success)]),
            ],
        ),
    )
    .await;
    let run = start(s, &wf, 100).await;
    assert!(matches!(
        s.retry_workflow_run(run.id, Trigger::Manual, 150).await,
        Err(StoreError::Invalid(m)) if m.contains("still running")
    ));
    let build = end_node(
        s,
        run.id,
        "build",
        JobStatus::Succeeded,
        json!({"artifact": "a1"}),
        None,
        200,
    )
    .await;
    fail(s, run.id, "test", 200).await;
    let st = statuses(s, run.id).await;
    assert_eq!((st["deploy"], st["notify"]), (N::Skipped, N::Skipped));
    assert_eq!(run_status(s, run.id).await, R::Failed);
    let jobs_before = node_jobs(s).await.len();

    let retry = s
        .retry_workflow_run(run.id, Trigger::Manual, 300)
        .await
        .unwrap();
    assert_eq!(
        (retry.retry_of, retry.attempt, retry.status),
        (Some(run.id), 2, R::Running)
    );
    let d = detail(s, retry.id).await;
    let kept = &d.nodes[0];
    assert_eq!((kept.status, kept.job_id), (N::Succeeded, Some(build.id)));
    assert_eq!(kept.output, json!({"artifact": "a1"}));
    assert_eq!(
        kept.reason.as_deref(),
        Some(&*format!("kept from run {}", run.id))
    );
    // Only test runs again (a new job); deploy waits for it.
    assert_eq!(
        (d.nodes[1].status, d.nodes[2].status),
        (N::Queued, N::Waiting)
    );
    assert_eq!(node_jobs(s).await.len(), jobs_before + 1);
    ok(s, retry.id, "test", 400).await;
    // deploy's input has the kept output.
    assert_eq!(
        job_of(s, retry.id, "deploy").await.input["nodes"]["build"],
        json!({"artifact": "a1"})
    );
    ok(s, retry.id, "deploy", 500).await;
    ok(s, retry.id, "notify", 600).await;
    assert_eq!(run_status(s, retry.id).await, R::Succeeded);
    // The old run is as it was; a succeeded run has nothing to retry.
    assert_eq!(run_status(s, run.id).await, R::Failed);
    assert!(matches!(
        s.retry_workflow_run(retry.id, Trigger::Manual, 700).await,
        Err(StoreError::Invalid(m)) if m.contains("nothing to retry")
    ));
    assert!(matches!(
        s.retry_workflow_run(retry.id + 100, Trigger::Manual, 700)
            .await,
        Err(StoreError::NotFound(_))
    ));
}

async fn sub_workflow_runs_end_their_parent_node(t: Ctx) {
    let s = &t.store;
    events(s, &["e"]).await;
    let mut child_def = def("child", vec![inline("work", &[])]);
    child_def.input = json!({"child_default": 1});
    apply(s, &child_def).await;
    let parent = apply(
        s,
        &def(
            "parent",
            vec![
                node("prepare", "e", &[]),
                sub("call", "child", &[("prepare", Success)]),
                node("after", "e", &[("call", Success)]),
            ],
        ),
    )
    .await;
    let run = start(s, &parent, 100).await;
    end_node(
        s,
        run.id,
        "prepare",
        JobStatus::Succeeded,
        json!({"p": 1}),
        None,
        200,
    )
    .await;
    let d = detail(s, run.id).await;
    let call = &d.nodes[1];
    assert_eq!(call.status, N::Running);
    let child_id = call.sub_run_id.expect("the node started a sub-run");
    let child = detail(s, child_id).await;
    assert_eq!(
        (
            child.run.parent_node_run_id,
            child.run.root_run_id,
            child.run.depth,
            child.run.trigger
        ),
        (Some(call.id), run.id, 2, Trigger::Workflow)
    );
    // The sub-run's input is the node's merged input (not the child's default).
    assert_eq!(
        child.run.input,
        json!({"p": 1, "nodes": {"prepare": {"p": 1}}})
    );
    assert_eq!(child.nodes[0].status, N::Queued);
    end_node(
        s,
        child_id,
        "work",
        JobStatus::Succeeded,
        json!({"built": true}),
        None,
        300,
    )
    .await;
    let child = detail(s, child_id).await.run;
    assert_eq!(child.status, R::Succeeded);
    let d = detail(s, run.id).await;
    assert_eq!(d.nodes[1].status, N::Succeeded);
    assert_eq!(d.nodes[1].output, child.output);
    assert_eq!(d.nodes[2].status, N::Queued);
    assert_eq!(
        job_of(s, run.id, "after").await.input["nodes"]["call"]["built"],
        json!(true)
    );
    // A failing sub-run fails its node; cancelling the parent cancels the sub-run's jobs.
    let run = start(s, &parent, 400).await;
    ok(s, run.id, "prepare", 500).await;
    let child_id = detail(s, run.id).await.nodes[1].sub_run_id.unwrap();
    let work = job_of(s, child_id, "work").await;
    assert_eq!(
        s.cancel_workflow_run(run.id, 600).await.unwrap(),
        CancelRunResult::Cancelled
    );
    assert_eq!(
        s.get_job(work.id).await.unwrap().unwrap().status,
        JobStatus::Cancelled
    );
    assert_eq!(run_status(s, child_id).await, R::Cancelled);
    let d = detail(s, run.id).await;
    assert_eq!(
        (d.nodes[1].status, d.nodes[2].status, d.run.status),
        (N::Cancelled, N::Skipped, R::Cancelled)
    );
    let run = start(s, &parent, 700).await;
    ok(s, run.id, "prepare", 800).await;
    let child_id = detail(s, run.id).await.nodes[1].sub_run_id.unwrap();
    fail(s, child_id, "work", 900).await;
    let d = detail(s, run.id).await;
    assert_eq!(
        (d.nodes[1].status, d.nodes[2].status),
        (N::Failed, N::Skipped)
    );
    assert_eq!(d.run.status, R::Failed);
    assert!(d.nodes[1]
        .error
        .as_deref()
        .unwrap()
        .contains("node `work` failed"));
    // A sub-run cannot be retried by itself.
    assert!(matches!(
        s.retry_workflow_run(child_id, Trigger::Manual, 1000).await,
        Err(StoreError::Invalid(m)) if m.contains("sub-workflow run")
    ));
}

async fn sub_workflows_nest_at_most_max_depth(t: Ctx) {
    let s = &t.store;
    // l6 -> l5 -> ... -> l1: six levels, one more than allowed.
    apply(s, &def("l1", vec![inline("leaf", &[])])).await;
    for i in 2..=6 {
        apply(
            s,
            &def(
                &format!("l{i}"),
                vec![sub("down", &format!("l{}", i - 1), &[])],
            ),
        )
        .await;
    }
    let top = s.get_workflow_by_name("l6").await.unwrap().unwrap();
    let run = start(s, &top, 100).await;
    // Five runs were started; the fifth's node could not start a sixth, and failed.
    let runs = s.list_workflow_runs(&RunFilter::default()).await.unwrap();
    assert_eq!(runs.len(), 5);
    assert!(runs
        .iter()
        .all(|r| r.root_run_id == run.id && r.status == R::Failed));
    let deepest = runs.iter().find(|r| r.depth == 5).unwrap();
    let d = detail(s, deepest.id).await;
    assert!(
        d.nodes[0]
            .error
            .as_deref()
            .unwrap()
            .contains("nest at most 5 levels"),
        "{:?}",
        d.nodes[0]
    );
    assert!(node_jobs(s).await.is_empty());
    // Five levels run.
    let l5 = s.get_workflow_by_name("l5").await.unwrap().unwrap();
    let run = start(s, &l5, 200).await;
    assert_eq!(run.status, R::Running);
    assert_eq!(node_jobs(s).await.len(), 1);
}

async fn crash_between_steps_enqueues_the_successor_exactly_once(t: Ctx) {
    let s = &t.store;
    events(s, &["e"]).await;
    let wf = apply(
        s,
        &def(
            "w",
            vec![
                node("a", "e", &[]),
                node("on_ok", "e", &[("a", Success)]),
                node("on_fail", "e", &[("a", Failure)]),
            ],
        ),
    )
    .await;
    // A node just finished, then the server dies: the successor is in the same commit.
    let run = start(s, &wf, 100).await;
    ok(s, run.id, "a", 200).await;
    let reopened = Store::open(&t.url).await.unwrap();
    assert_eq!(status_of(&reopened, run.id, "on_ok").await, N::Queued);
    let on_ok_run = detail(&reopened, run.id).await.nodes[1].id;
    let on_ok: Vec<JobRow> = node_jobs(&reopened)
        .await
        .into_iter()
        .filter(|j| j.node_run_id == Some(on_ok_run))
        .collect();
    assert_eq!(on_ok.len(), 1);
    assert!(reopened
        .recover_expired(10_000_000)
        .await
        .unwrap()
        .is_empty());
    reopened.close().await;
    ok(s, run.id, "on_ok", 300).await;
    assert_eq!(run_status(s, run.id).await, R::Succeeded);

    // A node running when its worker dies: recovery fails it (no attempts left) and, in the
    // same transaction, starts its failure successor, once.
    let run = start(s, &wf, 1000).await;
    let a = claim_node(s, run.id, "a", 1100).await;
    let reopened = Store::open(&t.url).await.unwrap();
    let later = 1100 + LEASE + 1;
    let recovered = reopened.recover_expired(later).await.unwrap();
    assert_eq!(recovered.len(), 1);
    assert_eq!(recovered[0].status, JobStatus::Failed);
    assert_eq!(status_of(&reopened, run.id, "on_fail").await, N::Queued);
    // Neither the stale worker nor a second recovery repeats the step.
    let late = JobOutcome {
        status: JobStatus::Succeeded,
        exit_code: Some(0),
        output: json!({}),
        error: None,
    };
    assert!(!reopened
        .finish(a.id, W, a.attempt, &late, later)
        .await
        .unwrap());
    assert!(reopened
        .recover_expired(later + 1)
        .await
        .unwrap()
        .is_empty());
    let d = detail(&reopened, run.id).await;
    assert_eq!(
        (d.nodes[0].status, d.nodes[1].status, d.nodes[2].status),
        (N::Failed, N::Skipped, N::Queued)
    );
    assert_eq!(d.nodes[0].error.as_deref(), Some("worker lost"));
    let for_run: Vec<JobRow> = node_jobs(&reopened)
        .await
        .into_iter()
        .filter(|j| d.nodes.iter().any(|n| Some(n.id) == j.node_run_id))
        .collect();
    assert_eq!(
        for_run.len(),
        2,
        "a and on_fail, nothing twice: {for_run:?}"
    );
    reopened.close().await;
}

async fn concurrent_branch_ends_start_exactly_one_join(t: Ctx) {
    let s = &t.store;
    events(s, &["e"]).await;
    const BRANCHES: usize = 8;
    let mut nodes = Vec::new();
    let ids: Vec<String> = (0..BRANCHES).map(|i| format!("b{i}")).collect();
    for id in &ids {
        nodes.push(node(id, "e", &[]));
    }
    let after: Vec<(&str, EdgeKind)> = ids.iter().map(|i| (i.as_str(), Success)).collect();
    nodes.push(node("join", "e", &after));
    let wf = apply(s, &def("w", nodes)).await;
    for round in 0..3 {
        let run = start(s, &wf, 100).await;
        let mut claimed = Vec::new();
        for id in &ids {
            claimed.push(claim_node(s, run.id, id, 200).await);
        }
        let mut tasks = Vec::new();
        for job in claimed {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let outcome = JobOutcome {
                    status: JobStatus::Succeeded,
                    exit_code: Some(0),
                    output: json!({"from": job.id}),
                    error: None,
                };
                s.finish(job.id, W, job.attempt, &outcome, 300).await
            }));
        }
        for t in tasks {
            assert!(t.await.unwrap().unwrap(), "every finish is recorded");
        }
        let d = detail(s, run.id).await;
        let join = d.nodes.iter().find(|n| n.node_id == "join").unwrap();
        assert_eq!(join.status, N::Queued, "round {round}");
        let join_jobs: Vec<JobRow> = node_jobs(s)
            .await
            .into_iter()
            .filter(|j| j.node_run_id == Some(join.id))
            .collect();
        assert_eq!(join_jobs.len(), 1, "round {round}: exactly one join job");
        assert_eq!(
            join_jobs[0].input["nodes"].as_object().unwrap().len(),
            BRANCHES
        );
    }
}

async fn overlap_queue_waits_for_the_active_run(t: Ctx) {
    let s = &t.store;
    events(s, &["e"]).await;
    let wf = apply(s, &def("w", vec![node("a", "e", &[])])).await;
    let queue = RunRequest {
        trigger: Trigger::Schedule,
        input: None,
        queue: true,
    };
    let first = s.start_workflow_run(wf.id, &queue, 100).await.unwrap();
    let second = s.start_workflow_run(wf.id, &queue, 110).await.unwrap();
    assert_eq!((first.status, second.status), (R::Running, R::Queued));
    assert_eq!(second.started_at, None);
    assert_eq!(status_of(s, second.id, "a").await, N::Waiting);
    assert!(s.has_active_workflow_run(wf.id).await.unwrap());
    let explain = detail(s, second.id).await.explain();
    assert!(explain[0].why.contains("overlap: queue"), "{explain:?}");
    ok(s, first.id, "a", 200).await;
    // The first run's end started the second, in the same commit.
    let second = detail(s, second.id).await;
    assert_eq!(
        (second.run.status, second.run.started_at),
        (R::Running, Some(200))
    );
    assert_eq!(second.nodes[0].status, N::Queued);
    ok(s, second.run.id, "a", 300).await;
    assert!(!s.has_active_workflow_run(wf.id).await.unwrap());
    // A queued run can be cancelled before it starts.
    let a = s.start_workflow_run(wf.id, &queue, 400).await.unwrap();
    let b = s.start_workflow_run(wf.id, &queue, 400).await.unwrap();
    assert_eq!(
        s.cancel_workflow_run(b.id, 450).await.unwrap(),
        CancelRunResult::Cancelled
    );
    ok(s, a.id, "a", 500).await;
    assert_eq!(run_status(s, b.id).await, R::Cancelled);
}

async fn fire_workflow_is_fenced_and_once_per_tick(t: Ctx) {
    let s = &t.store;
    events(s, &["e"]).await;
    let wf = apply(s, &def("w", vec![node("a", "e", &[])])).await;
    let lease = s
        .try_lock("scheduler", "me", 3000, 100)
        .await
        .unwrap()
        .unwrap();
    let req = RunRequest {
        trigger: Trigger::Schedule,
        input: None,
        queue: false,
    };
    let fired = s
        .fire_workflow(&lease, wf.id, 1000, Some(2000), Some(&req), 200)
        .await
        .unwrap();
    let WorkflowFireResult::Fired(run) = fired else {
        panic!("{fired:?}");
    };
    assert_eq!(
        (run.trigger, run.scheduled_for),
        (Trigger::Schedule, Some(1000))
    );
    let w = s.get_workflow(wf.id).await.unwrap().unwrap();
    assert_eq!((w.last_fired_at, w.next_fire_at), (Some(1000), Some(2000)));
    // The same tick again, by anyone: nothing.
    assert_eq!(
        s.fire_workflow(&lease, wf.id, 1000, Some(2000), Some(&req), 210)
            .await
            .unwrap(),
        WorkflowFireResult::Duplicate
    );
    assert_eq!(
        s.fire_workflow(&lease, wf.id, 2000, Some(3000), None, 220)
            .await
            .unwrap(),
        WorkflowFireResult::Skipped
    );
    // A lease that expired, or was taken over, fires nothing.
    assert_eq!(
        s.fire_workflow(&lease, wf.id, 3000, Some(4000), Some(&req), 5000)
            .await
            .unwrap(),
        WorkflowFireResult::NotLeader
    );
    let other = s
        .try_lock("scheduler", "other", 3000, 5000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        s.fire_workflow(&lease, wf.id, 3000, Some(4000), Some(&req), 5001)
            .await
            .unwrap(),
        WorkflowFireResult::NotLeader
    );
    assert!(matches!(
        s.fire_workflow(&other, wf.id, 3000, Some(4000), Some(&req), 5001)
            .await
            .unwrap(),
        WorkflowFireResult::Fired(_)
    ));
    assert_eq!(
        s.list_workflow_runs(&RunFilter::default())
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(matches!(
        s.fire_workflow(&other, wf.id + 100, 1, None, None, 5002)
            .await,
        Err(StoreError::NotFound(_))
    ));
    // Schedule state and listings.
    s.set_workflow_next_fire(wf.id, Some(9000)).await.unwrap();
    assert_eq!(
        s.list_scheduled_workflows().await.unwrap()[0].next_fire_at,
        Some(9000)
    );
    assert!(s.set_workflow_broken(wf.id, 1, Some("bad")).await.unwrap());
    assert!(!s.set_workflow_broken(wf.id, 2, Some("bad")).await.unwrap());
    s.set_workflow_status(wf.id, EventStatus::Archived, 6000)
        .await
        .unwrap();
    assert!(matches!(
        s.start_workflow_run(wf.id, &manual(None), 6001).await,
        Err(StoreError::Invalid(m)) if m.contains("archived")
    ));
    let runs = s
        .list_workflow_runs(&RunFilter {
            workflow_name: Some("w".into()),
            limit: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].scheduled_for, Some(3000), "newest first");
}

async fn delete_workflow_cancels_its_runs_and_removes_its_events(t: Ctx) {
    let s = &t.store;
    events(s, &["e"]).await;
    let wf = apply(
        s,
        &def(
            "w",
            vec![
                inline("a", &[]),
                inline("b", &[]),
                node("c", "e", &[("a", Success)]),
            ],
        ),
    )
    .await;
    let run = start(s, &wf, 100).await;
    let a = claim_node(s, run.id, "a", 200).await;
    let b = job_of(s, run.id, "b").await;
    assert!(s.delete_workflow(wf.id, 300).await.unwrap());
    assert!(!s.delete_workflow(wf.id, 300).await.unwrap());
    assert!(s.get_workflow(wf.id).await.unwrap().is_none());
    assert!(s.list_inline_events(None).await.unwrap().is_empty());
    assert_eq!(
        s.get_job(b.id).await.unwrap().unwrap().status,
        JobStatus::Cancelled
    );
    // The run stays as history, stopping; the running job ends it.
    let d = detail(s, run.id).await;
    assert_eq!(
        (d.run.workflow_id, d.run.workflow_name.as_str()),
        (None, "w")
    );
    assert_eq!(d.run.error.as_deref(), Some("workflow deleted"));
    assert_eq!(d.graph, None);
    let job = s.get_job(a.id).await.unwrap().unwrap();
    assert_eq!(
        (job.event_id, job.event_name.as_str(), job.cancel_requested),
        (None, "w/a", true)
    );
    end_node(s, run.id, "a", JobStatus::Failed, Value::Null, None, 400).await;
    assert_eq!(run_status(s, run.id).await, R::Cancelled);
    assert_eq!(status_of(s, run.id, "c").await, N::Skipped);
}

async fn explain_says_why_each_node_stands_where_it_does(t: Ctx) {
    let s = &t.store;
    events(s, &["e"]).await;
    let wf = apply(
        s,
        &def(
            "w",
            vec![
                node("build", "e", &[]),
                node("deploy", "e", &[("build", Success)]),
                node("rollback", "e", &[("deploy", Failure)]),
                node("fix", "e", &[("build", Failure)]),
            ],
        ),
    )
    .await;
    let run = start(s, &wf, 100).await;
    claim_node(s, run.id, "build", 150).await;
    let why: Vec<String> = detail(s, run.id)
        .await
        .explain()
        .into_iter()
        .map(|e| e.why)
        .collect();
    assert_eq!(why[0], "ran: start node (no after); its job is running");
    assert_eq!(why[1], "waiting for build (running)");
    assert_eq!(why[2], "waiting for deploy (waiting)");
    ok(s, run.id, "build", 200).await;
    fail(s, run.id, "deploy", 300).await;
    let ex = detail(s, run.id).await.explain();
    assert_eq!(ex[0].why, "ran: start node (no after); then succeeded");
    assert_eq!(
        ex[1].why,
        "ran: build succeeded (success); then failed: deploy went failed"
    );
    assert_eq!(ex[2].why, "ran: deploy failed (failure); its job is queued");
    assert_eq!(
        (ex[3].status, ex[3].why.as_str()),
        (N::Skipped, "skipped: build succeeded, edge needs failure")
    );
    assert!(ex[1].job_id.is_some() && ex[1].finished_at == Some(300));
}

/// The job page's link back to its run, and the benchmark's seeded runs read like real ones.
async fn a_node_job_finds_its_run_and_seeded_runs_read_back(t: Ctx) {
    let s = &t.store;
    events(s, &["e"]).await;
    let wf = apply(
        s,
        &def(
            "w",
            vec![node("a", "e", &[]), node("b", "e", &[("a", Success)])],
        ),
    )
    .await;
    let run = start(s, &wf, 100).await;
    let a = job_of(s, run.id, "a").await;
    let node_run = a.node_run_id.expect("a node's job");
    assert_eq!(
        s.workflow_run_of_node_run(node_run).await.unwrap(),
        Some((run.id, "a".to_string()))
    );
    assert_eq!(
        s.workflow_run_of_node_run(node_run + 1000).await.unwrap(),
        None
    );

    let (first, last) = s
        .seed_workflow_runs(&cronium_store::SeedWorkflowRuns {
            workflow_id: wf.id,
            workflow_name: wf.name.clone(),
            version: wf.version,
            nodes: vec!["a".into(), "b".into()],
            runs: 5,
            first_job_id: a.id,
            jobs: 1,
            chunk: 2,
            start_ms: 1_000,
        })
        .await
        .unwrap();
    assert_eq!(last - first, 4);
    let runs = s
        .list_workflow_runs(&cronium_store::RunFilter {
            workflow_id: Some(wf.id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(runs.len(), 6, "the real run and five seeded");
    let d = detail(s, last).await;
    assert_eq!(d.run.status, R::Failed, "every fifth seeded run failed");
    assert_eq!(d.run.root_run_id, last);
    assert_eq!(d.nodes.len(), 2);
    assert_eq!(
        (d.nodes[0].status, d.nodes[1].status),
        (N::Succeeded, N::Failed)
    );
    assert!(d.nodes.iter().all(|n| n.job_id == Some(a.id)));
    assert!(d.graph.is_some());
    assert_eq!(detail(s, first).await.run.status, R::Succeeded);
}
