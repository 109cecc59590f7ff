//! Many events or workflows applied in one transaction (`apply_events_batch`,
//! `apply_workflows_batch`): all or nothing, prune, a dry run that changes nothing; and the
//! retention of workflow runs (a running run's node jobs are never pruned; ended runs go by age
//! with their node runs).

use cronium_model::workflow::{EdgeKind, Join, NodeBody, NodeDefinition, WorkflowDefinition};
use cronium_model::{EventStatus, ExecutionStatus, JobPolicy, JobStatus, PolicyOverride, Trigger};
use cronium_store::{
    BatchResult, EventApply, JobOutcome, PruneLimits, PruneRule, PruneScope, RunRequest, Store,
    StoreError,
};
use serde_json::{json, Value};

use crate::harness::Ctx;

conformance!(
    event_batches_are_all_or_nothing_with_prune_and_dry_run,
    workflow_batches_apply_in_order_with_prune_and_dry_run,
    workflow_runs_keep_their_jobs_while_going_and_go_by_age,
);

fn policy() -> JobPolicy {
    JobPolicy {
        max_attempts: 1,
        backoff_ms: 1000,
        max_backoff_ms: 5000,
        timeout_ms: 60_000,
        max_executions: 0,
    }
}

fn ev(name: &str, script: &str) -> EventApply {
    EventApply {
        name: name.into(),
        status: EventStatus::Active,
        spec: json!({"name": name, "type": "bash", "script": script}),
        policy: policy(),
    }
}

fn results<R>(changes: &[cronium_store::BatchChange<R>]) -> Vec<(String, BatchResult)> {
    changes.iter().map(|c| (c.name.clone(), c.result)).collect()
}

async fn event_names(s: &Store) -> Vec<String> {
    s.list_events()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect()
}

fn r(name: &str, result: BatchResult) -> (String, BatchResult) {
    (name.to_string(), result)
}

async fn event_batches_are_all_or_nothing_with_prune_and_dry_run(t: Ctx) {
    let s = &t.store;
    s.create_event_with_policy(
        "old",
        EventStatus::Active,
        &json!({"name": "old", "type": "bash", "script": "x"}),
        &policy(),
        1,
    )
    .await
    .unwrap();
    let batch = [ev("a", "echo a"), ev("b", "echo b")];
    let dry = s.apply_events_batch(&batch, true, true, 10).await.unwrap();
    assert_eq!(
        results(&dry),
        [
            r("a", BatchResult::Created),
            r("b", BatchResult::Created),
            r("old", BatchResult::Deleted)
        ]
    );
    assert_eq!(event_names(s).await, ["old"], "a dry run keeps nothing");
    let done = s
        .apply_events_batch(&batch, false, false, 20)
        .await
        .unwrap();
    assert_eq!(
        results(&done),
        [r("a", BatchResult::Created), r("b", BatchResult::Created)]
    );
    let a = done[0].row.clone().expect("row");
    assert!(a.policy.is_some(), "the policy is written with the spec");
    assert_eq!(event_names(s).await, ["a", "b", "old"]);
    // One bad item: nothing of the batch is written, the item is named.
    let bad = [ev("a", "echo changed"), ev("bad/name", "x")];
    match s.apply_events_batch(&bad, false, false, 30).await {
        Err(StoreError::Invalid(m)) => assert!(m.starts_with("items[1].name"), "{m}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    let twice = [ev("a", "1"), ev("a", "2")];
    match s.apply_events_batch(&twice, false, false, 30).await {
        Err(StoreError::Invalid(m)) => assert!(m.starts_with("items[1].name"), "{m}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert_eq!(s.get_event_by_name("a").await.unwrap().unwrap().version, 1);
    let pruned = s
        .apply_events_batch(&[ev("a", "echo a2"), ev("b", "echo b")], true, false, 40)
        .await
        .unwrap();
    assert_eq!(
        results(&pruned),
        [
            r("a", BatchResult::Updated),
            r("b", BatchResult::Unchanged),
            r("old", BatchResult::Deleted)
        ]
    );
    assert_eq!(event_names(s).await, ["a", "b"]);
}

fn node(id: &str, body: NodeBody, after: &[&str]) -> NodeDefinition {
    NodeDefinition {
        id: id.into(),
        body,
        join: Join::All,
        after: after
            .iter()
            .map(|a| (a.to_string(), EdgeKind::Success))
            .collect(),
        input: json!({}),
        overrides: Value::Null,
        policy: PolicyOverride::default(),
    }
}

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

fn event_node(id: &str, event: &str, after: &[&str]) -> NodeDefinition {
    node(id, NodeBody::Event { name: event.into() }, after)
}

async fn workflow_batches_apply_in_order_with_prune_and_dry_run(t: Ctx) {
    let s = &t.store;
    s.apply_events_batch(&[ev("e", "x")], false, false, 1)
        .await
        .unwrap();
    let stray = def("stray", vec![event_node("x", "e", &[])]);
    s.apply_workflow(&stray, 2).await.unwrap();
    let sub = def("sub", vec![event_node("only", "e", &[])]);
    let main = def(
        "main",
        vec![
            event_node("first", "e", &[]),
            node(
                "child",
                NodeBody::Workflow { name: "sub".into() },
                &["first"],
            ),
        ],
    );
    // The sub-workflow listed first is there for the next item to use.
    let batch = [sub.clone(), main.clone()];
    let dry = s
        .apply_workflows_batch(&batch, true, true, 10)
        .await
        .unwrap();
    assert_eq!(
        results(&dry),
        [
            r("sub", BatchResult::Created),
            r("main", BatchResult::Created),
            r("stray", BatchResult::Deleted)
        ]
    );
    assert!(s.get_workflow_by_name("main").await.unwrap().is_none());
    assert!(s.get_workflow_by_name("stray").await.unwrap().is_some());
    // Listed the other way round, main's sub-workflow does not exist yet: refused, nothing kept.
    match s
        .apply_workflows_batch(&[main.clone(), sub.clone()], false, false, 15)
        .await
    {
        Err(StoreError::Invalid(m)) => assert!(m.starts_with("items[0].nodes[1].workflow"), "{m}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(s.get_workflow_by_name("sub").await.unwrap().is_none());
    let done = s
        .apply_workflows_batch(&batch, true, false, 20)
        .await
        .unwrap();
    assert_eq!(
        results(&done),
        [
            r("sub", BatchResult::Created),
            r("main", BatchResult::Created),
            r("stray", BatchResult::Deleted)
        ]
    );
    assert!(s.get_workflow_by_name("stray").await.unwrap().is_none());
    let again = s
        .apply_workflows_batch(&batch, true, false, 30)
        .await
        .unwrap();
    assert_eq!(
        results(&again),
        [
            r("sub", BatchResult::Unchanged),
            r("main", BatchResult::Unchanged)
        ]
    );
    let unknown = def("bad", vec![event_node("x", "nope", &[])]);
    match s.apply_workflows_batch(&[unknown], false, false, 40).await {
        Err(StoreError::Invalid(m)) => assert!(m.starts_with("items[0].nodes[0].event"), "{m}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(s.get_workflow_by_name("bad").await.unwrap().is_none());
}

/// Claims the job `id` (and whatever is before it) and ends it succeeded at `now`.
async fn finish(s: &Store, id: i64, now: i64) {
    let job = loop {
        let c = s.claim("w", 60_000, now).await.unwrap().expect("claimable");
        if c.id == id {
            break c;
        }
    };
    let x = s
        .create_execution(
            job.id,
            "w",
            job.attempt,
            None,
            ExecutionStatus::Running,
            now,
        )
        .await
        .unwrap()
        .unwrap();
    let _ = x;
    let outcome = JobOutcome {
        status: JobStatus::Succeeded,
        exit_code: Some(0),
        output: json!({}),
        error: None,
    };
    assert!(s
        .finish(job.id, "w", job.attempt, &outcome, now)
        .await
        .unwrap());
}

async fn node_job(s: &Store, run: i64, node: &str) -> Option<i64> {
    let d = s.get_workflow_run(run).await.unwrap().expect("run");
    d.nodes
        .iter()
        .find(|n| n.node_id == node)
        .and_then(|n| n.job_id)
}

async fn workflow_runs_keep_their_jobs_while_going_and_go_by_age(t: Ctx) {
    let s = &t.store;
    s.apply_events_batch(&[ev("e", "x")], false, false, 1)
        .await
        .unwrap();
    let w = def(
        "w",
        vec![event_node("a", "e", &[]), event_node("b", "e", &["a"])],
    );
    let (w, _) = s.apply_workflow(&w, 2).await.unwrap();
    let req = RunRequest {
        trigger: Trigger::Manual,
        input: None,
        queue: false,
    };
    let run = s.start_workflow_run(w.id, &req, 100).await.unwrap();
    let a = node_job(s, run.id, "a").await.expect("a's job");
    finish(s, a, 200).await;
    let event = s.get_event_by_name("e").await.unwrap().unwrap();
    let rule = PruneRule {
        scope: PruneScope::Event(event.id),
        finished_before: 10_000,
        keep: 0,
    };
    let limits = PruneLimits::default();
    // The run is going: a's finished, old job stays (preview and step agree).
    let preview = s.prune_preview(&[rule]).await.unwrap();
    assert!(preview.is_empty(), "{preview:?}");
    let step = s.prune_step(&rule, &limits).await.unwrap();
    assert_eq!(step.total().jobs, 0);
    assert!(s.get_job(a).await.unwrap().is_some());
    let b = node_job(s, run.id, "b").await.expect("b's job");
    finish(s, b, 300).await;
    let ended = s.get_workflow_run(run.id).await.unwrap().unwrap().run;
    assert!(ended.status.is_final(), "{ended:?}");
    let step = s.prune_step(&rule, &limits).await.unwrap();
    assert_eq!(step.total().jobs, 2);
    // Ended runs go by age, with their node runs.
    assert_eq!(s.prune_workflow_runs_step(300, 100).await.unwrap(), 0);
    assert_eq!(s.prune_workflow_runs_step(301, 100).await.unwrap(), 1);
    assert!(s.get_workflow_run(run.id).await.unwrap().is_none());
    // A running one never goes.
    let going = s.start_workflow_run(w.id, &req, 400).await.unwrap();
    assert_eq!(s.prune_workflow_runs_step(i64::MAX, 100).await.unwrap(), 0);
    assert!(s.get_workflow_run(going.id).await.unwrap().is_some());
    assert!(s.prune_workflow_runs_step(1, 0).await.is_err());
}
