//! Executions: creation and updates by the lease holder, listing.

use cronium_model::{ExecutionStatus, JobStatus};
use cronium_store::{AttemptEnd, ExecutionUpdate, ExecutionUsage, JobOutcome};
use serde_json::json;

use crate::harness::{job, Ctx};

conformance!(executions_create_update_list);

async fn executions_create_update_list(t: Ctx) {
    let s = &t.store;
    let j = s.enqueue(&job("e", 0), 0).await.unwrap();
    // Not running: no execution can be created.
    assert_eq!(
        s.create_execution(j.id, "w", 0, None, ExecutionStatus::Pending, 1)
            .await
            .unwrap(),
        None
    );
    s.claim("w", 10_000, 1).await.unwrap().unwrap();
    let web1 = s
        .create_execution(j.id, "w", 1, Some("web1"), ExecutionStatus::Pending, 2)
        .await
        .unwrap()
        .unwrap();
    let web2 = s
        .create_execution(j.id, "w", 1, Some("web2"), ExecutionStatus::Deploying, 3)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            web1.job_id,
            web1.attempt,
            web1.server.as_deref(),
            web1.status.as_str()
        ),
        (j.id, 1, Some("web1"), "pending")
    );
    assert_eq!(
        (web1.created_at, web1.output.clone(), web1.exit_code),
        (2, json!(null), None)
    );

    let full = ExecutionUpdate {
        status: Some(ExecutionStatus::Succeeded),
        exit_code: Some(0),
        started_at: Some(4),
        finished_at: Some(9),
        setup_ms: Some(2),
        run_ms: Some(3),
        runner_version: Some("0.1.0".into()),
        error: None,
        output: Some(json!({"ok": true})),
        mode: Some("runner-ssh".into()),
        note: Some("cached payload".into()),
        condition: Some(false),
        helpers: Some("api".into()),
        helpers_note: Some("socket gone".into()),
        usage: ExecutionUsage::default(),
    };
    assert!(s.update_execution(web1.id, "w", 1, &full).await.unwrap());
    // A partial update leaves the other fields alone.
    assert!(s
        .update_execution(
            web2.id,
            "w",
            1,
            &ExecutionUpdate {
                status: Some(ExecutionStatus::Running),
                ..Default::default()
            }
        )
        .await
        .unwrap());
    assert!(s
        .update_execution(
            web2.id,
            "w",
            1,
            &ExecutionUpdate {
                exit_code: Some(2),
                error: Some("boom".into()),
                ..Default::default()
            }
        )
        .await
        .unwrap());
    assert!(!s
        .update_execution(web2.id + 100, "w", 1, &ExecutionUpdate::default())
        .await
        .unwrap());

    let list = s.list_executions(j.id).await.unwrap();
    assert_eq!(list.len(), 2);
    let a = &list[0];
    assert_eq!(
        (a.status.as_str(), a.exit_code, a.started_at, a.finished_at),
        ("succeeded", Some(0), Some(4), Some(9))
    );
    assert_eq!(
        (a.setup_ms, a.run_ms, a.runner_version.as_deref()),
        (Some(2), Some(3), Some("0.1.0"))
    );
    assert_eq!(
        (a.mode.as_deref(), a.note.as_deref(), a.output.clone()),
        (
            Some("runner-ssh"),
            Some("cached payload"),
            json!({"ok": true})
        )
    );
    assert_eq!(a.condition, Some(false), "the workflow condition is kept");
    let b = &list[1];
    assert_eq!(
        (b.status.as_str(), b.exit_code, b.error.as_deref()),
        ("running", Some(2), Some("boom"))
    );
    assert_eq!(b.condition, None, "no condition unless the script set one");
    assert_eq!(s.get_execution(web2.id).await.unwrap().as_ref(), Some(b));
    assert!(s.list_executions(j.id + 100).await.unwrap().is_empty());

    // After finishing, the owner can still finalise its attempt's executions.
    let outcome = cronium_store::JobOutcome {
        status: JobStatus::Partial,
        exit_code: Some(2),
        output: json!({}),
        error: None,
    };
    assert!(s.finish(j.id, "w", 1, &outcome, 10).await.unwrap());
    assert!(s
        .update_execution(
            web2.id,
            "w",
            1,
            &ExecutionUpdate {
                status: Some(ExecutionStatus::Failed),
                finished_at: Some(10),
                ..Default::default()
            }
        )
        .await
        .unwrap());
    assert_eq!(
        s.get_execution(web2.id).await.unwrap().unwrap().status,
        ExecutionStatus::Failed
    );
    // But no new execution can be created for a finished job.
    assert_eq!(
        s.create_execution(j.id, "w", 1, None, ExecutionStatus::Pending, 11)
            .await
            .unwrap(),
        None
    );
}

conformance!(executions_record_what_they_used);

/// The runner's usage figures reach the row through the attempt's end, stay NULL when not
/// measured, and a stale worker cannot write them.
async fn executions_record_what_they_used(t: Ctx) {
    let s = &t.store;
    let j = s.enqueue(&job("usage", 0), 0).await.unwrap();
    let claimed = s.claim("w", 10_000, 1).await.unwrap().unwrap();
    let xs = s
        .create_executions(j.id, "w", 1, &["a", "b"], ExecutionStatus::Running, 2)
        .await
        .unwrap()
        .unwrap();
    let fresh = s.get_execution(xs[0].id).await.unwrap().unwrap();
    assert!(
        fresh.usage.is_empty(),
        "nothing measured yet: {:?}",
        fresh.usage
    );

    let measured = ExecutionUsage {
        cpu_user_ms: Some(212),
        cpu_system_ms: Some(31),
        // Beyond 32 bits: a big process must not wrap.
        max_rss_bytes: Some(6_000_000_000),
        cgroup_cpu_ms: Some(250),
        cgroup_memory_peak_bytes: Some(58_720_256),
    };
    let host_only = ExecutionUsage {
        cpu_user_ms: Some(5),
        cpu_system_ms: Some(0),
        max_rss_bytes: Some(4_194_304),
        ..Default::default()
    };
    let end = |usage| ExecutionUpdate {
        status: Some(ExecutionStatus::Succeeded),
        exit_code: Some(0),
        finished_at: Some(9),
        usage,
        ..Default::default()
    };
    let outcome = JobOutcome {
        status: JobStatus::Succeeded,
        exit_code: Some(0),
        output: json!({}),
        error: None,
    };
    let updates = [(xs[0].id, end(measured)), (xs[1].id, end(host_only))];
    // Another worker's end writes nothing.
    assert!(!s
        .finish_attempt(
            &AttemptEnd {
                job_id: j.id,
                worker: "other",
                attempt: claimed.attempt,
                node_run_id: None,
                executions: &updates,
                outcome: &outcome,
            },
            9,
        )
        .await
        .unwrap());
    assert!(s
        .get_execution(xs[0].id)
        .await
        .unwrap()
        .unwrap()
        .usage
        .is_empty());
    assert!(s
        .finish_attempt(
            &AttemptEnd {
                job_id: j.id,
                worker: "w",
                attempt: claimed.attempt,
                node_run_id: None,
                executions: &updates,
                outcome: &outcome,
            },
            9,
        )
        .await
        .unwrap());
    let list = s.list_executions(j.id).await.unwrap();
    assert_eq!(list[0].usage, measured);
    assert_eq!(list[1].usage, host_only);
    assert_eq!(
        (
            list[1].usage.cgroup_cpu_ms,
            list[1].usage.cgroup_memory_peak_bytes
        ),
        (None, None),
        "no cgroup figures outside a container"
    );
    // A later update without usage leaves the figures alone.
    assert!(s
        .update_execution(
            xs[0].id,
            "w",
            1,
            &ExecutionUpdate {
                note: Some("later".into()),
                ..Default::default()
            }
        )
        .await
        .unwrap());
    assert_eq!(
        s.get_execution(xs[0].id).await.unwrap().unwrap().usage,
        measured
    );
}

conformance!(executions_created_together_are_fenced_as_one);

async fn executions_created_together_are_fenced_as_one(t: Ctx) {
    let s = &t.store;
    let j = s.enqueue(&job("fan", 0), 0).await.unwrap();
    let claimed = s.claim("w", 1_000, 1).await.unwrap().unwrap();
    assert_eq!(claimed.id, j.id);
    let xs = s
        .create_executions(
            j.id,
            "w",
            1,
            &["a", "b", "c"],
            ExecutionStatus::Deploying,
            2,
        )
        .await
        .unwrap()
        .expect("owner creates");
    let names: Vec<_> = xs.iter().map(|x| x.server.clone().unwrap()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert!(xs
        .iter()
        .all(|x| x.status == ExecutionStatus::Deploying && x.attempt == 1));
    // A stale worker writes nothing, not even a part of the batch.
    assert!(s
        .create_executions(j.id, "other", 1, &["d"], ExecutionStatus::Deploying, 3)
        .await
        .unwrap()
        .is_none());
    assert!(s
        .create_executions(j.id, "w", 2, &["d"], ExecutionStatus::Deploying, 3)
        .await
        .unwrap()
        .is_none());
    assert_eq!(s.list_executions(j.id).await.unwrap().len(), 3);
    // Ended together, in one transaction; a stale worker's batch writes nothing.
    let done = |status, code| ExecutionUpdate {
        status: Some(status),
        exit_code: Some(code),
        ..Default::default()
    };
    let batch = vec![
        (xs[0].id, done(ExecutionStatus::Succeeded, 0)),
        (xs[1].id, done(ExecutionStatus::Failed, 3)),
    ];
    assert_eq!(s.update_executions("other", 1, &batch).await.unwrap(), 0);
    assert_eq!(s.update_executions("w", 1, &batch).await.unwrap(), 2);
    let now: Vec<_> = s
        .list_executions(j.id)
        .await
        .unwrap()
        .into_iter()
        .map(|x| (x.status, x.exit_code))
        .collect();
    assert_eq!(
        now,
        [
            (ExecutionStatus::Succeeded, Some(0)),
            (ExecutionStatus::Failed, Some(3)),
            (ExecutionStatus::Deploying, None)
        ]
    );
}
