//! The job queue: claim order and atomicity, leases, fencing, recovery, retries, cancel, serial
//! jobs, listing.

use std::collections::HashSet;
use std::sync::Arc;

use cronium_model::{EventStatus, ExecutionStatus, JobStatus};
use cronium_store::{
    backoff_delay, CancelResult, Claimant, ExecutionUpdate, Heartbeat, JobFilter, JobOutcome,
    NewJob, StoreError,
};
use serde_json::json;

use crate::harness::{event_job, job, Ctx};

conformance!(
    enqueue_and_claim_in_order,
    claim_is_atomic_under_concurrency,
    batch_claims_take_each_job_once_oldest_first_and_one_serial_job_per_event,
    heartbeat_renews_and_reports_cancel,
    finish_records_the_outcome,
    fenced_attempts_ignore_stale_workers,
    recover_expired_requeues_then_fails,
    concurrent_recovery_recovers_once,
    retry_later_stores_backoff_on_row,
    cancel_queued_running_and_finished,
    serial_jobs_wait_for_running_sibling,
    list_filters_pages_and_counts,
    invalid_jobs_write_nothing,
    a_job_enqueued_with_overrides_carries_them_without_a_node,
);

fn ok(status: JobStatus) -> JobOutcome {
    JobOutcome {
        status,
        exit_code: Some(0),
        output: json!({"files": 12}),
        error: None,
    }
}

async fn enqueue_and_claim_in_order(t: Ctx) {
    let s = &t.store;
    assert_eq!(s.claim("w", 1000, 0).await.unwrap(), None);
    assert_eq!(s.next_run_at().await.unwrap(), None);
    let late = s.enqueue(&job("late", 300), 1).await.unwrap();
    let b = s.enqueue(&job("b", 100), 2).await.unwrap();
    let a = s.enqueue(&job("a", 100), 3).await.unwrap();
    assert_eq!(
        (b.status.as_str(), b.attempt, b.created_at),
        ("queued", 0, 2)
    );
    assert_eq!(b.input, json!({"k": "b"}));
    assert_eq!(b.output, serde_json::Value::Null);
    assert_eq!(s.next_run_at().await.unwrap(), Some(100));

    // Not due yet.
    assert_eq!(s.claim("w", 1000, 99).await.unwrap(), None);
    // Same run_at: lower id first.
    let c1 = s.claim("w1", 1000, 150).await.unwrap().unwrap();
    assert_eq!(c1.id, b.id);
    assert_eq!(
        (c1.status.as_str(), c1.attempt, c1.lease_owner.as_deref()),
        ("running", 1, Some("w1"))
    );
    assert_eq!(
        (c1.lease_expires_at, c1.started_at),
        (Some(1150), Some(150))
    );
    let c2 = s.claim("w2", 1000, 150).await.unwrap().unwrap();
    assert_eq!(c2.id, a.id);
    assert_eq!(s.claim("w3", 1000, 150).await.unwrap(), None);
    assert_eq!(s.next_run_at().await.unwrap(), Some(300));
    assert_eq!(s.claim("w3", 1000, 300).await.unwrap().unwrap().id, late.id);
    assert_eq!(s.get_job(c1.id).await.unwrap(), Some(c1));
    assert_eq!(s.get_job(late.id + 100).await.unwrap(), None);
    assert!(
        matches!(s.claim("", 1000, 0).await, Err(StoreError::Invalid(m)) if m.starts_with("worker"))
    );
    assert!(
        matches!(s.claim("w", 0, 0).await, Err(StoreError::Invalid(m)) if m.starts_with("lease_ms"))
    );
}

async fn claim_is_atomic_under_concurrency(t: Ctx) {
    const JOBS: usize = 300;
    const WORKERS: usize = 8;
    let s = Arc::new(t.store.clone());
    let mut ids = HashSet::new();
    for i in 0..JOBS {
        ids.insert(
            s.enqueue(&job(&format!("j{i}"), (i % 7) as i64), 0)
                .await
                .unwrap()
                .id,
        );
    }
    let handles: Vec<_> = (0..WORKERS)
        .map(|w| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                while let Some(j) = s.claim(&format!("w{w}"), 60_000, 100).await.unwrap() {
                    assert_eq!(j.attempt, 1);
                    mine.push(j.id);
                }
                mine
            })
        })
        .collect();
    let mut claimed = Vec::new();
    for h in handles {
        claimed.extend(h.await.unwrap());
    }
    let unique: HashSet<i64> = claimed.iter().copied().collect();
    assert_eq!(claimed.len(), JOBS, "every job claimed exactly once");
    assert_eq!(unique, ids);
    assert_eq!(
        s.job_counts_by_status().await.unwrap(),
        vec![(JobStatus::Running, JOBS as i64)]
    );
}

async fn heartbeat_renews_and_reports_cancel(t: Ctx) {
    let s = &t.store;
    s.enqueue(&job("h", 0), 0).await.unwrap();
    let j = s.claim("w", 1000, 10).await.unwrap().unwrap();
    assert_eq!(
        s.heartbeat(j.id, "w", 1, 1000, 500).await.unwrap(),
        Heartbeat::Ok {
            cancel_requested: false
        }
    );
    assert_eq!(
        s.get_job(j.id).await.unwrap().unwrap().lease_expires_at,
        Some(1500)
    );
    // Renewed lease: not recovered at a time the first lease would have expired.
    assert!(s.recover_expired(1200).await.unwrap().is_empty());
    assert_eq!(s.cancel(j.id, 600).await.unwrap(), CancelResult::Requested);
    assert_eq!(
        s.heartbeat(j.id, "w", 1, 1000, 700).await.unwrap(),
        Heartbeat::Ok {
            cancel_requested: true
        }
    );
    assert_eq!(
        s.heartbeat(j.id, "other", 1, 1000, 700).await.unwrap(),
        Heartbeat::Lost
    );
    assert_eq!(
        s.heartbeat(j.id, "w", 2, 1000, 700).await.unwrap(),
        Heartbeat::Lost
    );
    assert_eq!(
        s.heartbeat(j.id + 100, "w", 1, 1000, 700).await.unwrap(),
        Heartbeat::Lost
    );
}

async fn finish_records_the_outcome(t: Ctx) {
    let s = &t.store;
    s.enqueue(&job("f", 0), 0).await.unwrap();
    let j = s.claim("w", 1000, 10).await.unwrap().unwrap();
    assert!(matches!(
        s.finish(j.id, "w", 1, &ok(JobStatus::Running), 20).await,
        Err(StoreError::Invalid(m)) if m.starts_with("status")
    ));
    assert_eq!(
        s.get_job(j.id).await.unwrap().unwrap().status,
        JobStatus::Running
    );
    let outcome = JobOutcome {
        status: JobStatus::Failed,
        exit_code: Some(3),
        output: json!({"partial": true}),
        error: Some("exit code 3".into()),
    };
    assert!(s.finish(j.id, "w", 1, &outcome, 20).await.unwrap());
    let done = s.get_job(j.id).await.unwrap().unwrap();
    assert_eq!(
        (done.status.as_str(), done.exit_code, done.finished_at),
        ("failed", Some(3), Some(20))
    );
    assert_eq!(done.output, json!({"partial": true}));
    assert_eq!(done.error.as_deref(), Some("exit code 3"));
    // Finishing twice is refused: the outcome is written once.
    assert!(!s
        .finish(j.id, "w", 1, &ok(JobStatus::Succeeded), 30)
        .await
        .unwrap());
    assert_eq!(
        s.get_job(j.id).await.unwrap().unwrap().status,
        JobStatus::Failed
    );
    assert!(!s.has_active_job(0).await.unwrap());
}

/// Regression: a worker whose lease expired (recovered, then re-claimed by another worker) must
/// not be able to heartbeat, finish, create or update executions of the job.
async fn fenced_attempts_ignore_stale_workers(t: Ctx) {
    let s = &t.store;
    s.enqueue(
        &NewJob {
            max_attempts: 3,
            ..job("fenced", 0)
        },
        0,
    )
    .await
    .unwrap();
    let first = s.claim("old", 1000, 0).await.unwrap().unwrap();
    let old_exec = s
        .create_execution(first.id, "old", 1, None, ExecutionStatus::Running, 10)
        .await
        .unwrap()
        .unwrap();

    // The old worker stalls; its lease expires; the job is recovered and claimed by "new".
    let rec = s.recover_expired(2000).await.unwrap();
    assert_eq!(rec.len(), 1);
    let run_at = rec[0].run_at.unwrap();
    let second = s.claim("new", 1000, run_at).await.unwrap().unwrap();
    assert_eq!((second.id, second.attempt), (first.id, 2));
    let new_exec = s
        .create_execution(first.id, "new", 2, None, ExecutionStatus::Running, run_at)
        .await
        .unwrap()
        .unwrap();

    // Everything the stale worker tries is refused and changes nothing.
    assert_eq!(
        s.heartbeat(first.id, "old", 1, 1000, run_at).await.unwrap(),
        Heartbeat::Lost
    );
    assert!(!s
        .finish(first.id, "old", 1, &ok(JobStatus::Succeeded), run_at)
        .await
        .unwrap());
    assert!(!s
        .retry_later(first.id, "old", 1, run_at + 5, "x", run_at)
        .await
        .unwrap());
    assert_eq!(
        s.create_execution(first.id, "old", 1, None, ExecutionStatus::Running, run_at)
            .await
            .unwrap(),
        None
    );
    let upd = ExecutionUpdate {
        status: Some(ExecutionStatus::Succeeded),
        exit_code: Some(0),
        ..Default::default()
    };
    assert!(!s
        .update_execution(old_exec.id, "old", 1, &upd)
        .await
        .unwrap());
    assert!(!s
        .update_execution(new_exec.id, "old", 1, &upd)
        .await
        .unwrap());
    // The same worker name with the stale attempt number (a restarted agent reusing its id, its
    // old task still running) is refused too: the attempt is the fencing token.
    assert_eq!(
        s.heartbeat(first.id, "new", 1, 1000, run_at).await.unwrap(),
        Heartbeat::Lost
    );
    assert!(!s
        .finish(first.id, "new", 1, &ok(JobStatus::Succeeded), run_at)
        .await
        .unwrap());
    assert!(!s
        .retry_later(first.id, "new", 1, run_at + 5, "x", run_at)
        .await
        .unwrap());
    assert_eq!(
        s.create_execution(first.id, "new", 1, None, ExecutionStatus::Running, run_at)
            .await
            .unwrap(),
        None
    );
    assert!(!s
        .update_execution(old_exec.id, "new", 1, &upd)
        .await
        .unwrap());
    assert!(!s
        .update_execution(new_exec.id, "new", 1, &upd)
        .await
        .unwrap());
    // Even with the current attempt number, a different worker is refused.
    assert!(!s
        .update_execution(new_exec.id, "old", 2, &upd)
        .await
        .unwrap());
    assert!(!s
        .finish(first.id, "old", 2, &ok(JobStatus::Succeeded), run_at)
        .await
        .unwrap());

    let row = s.get_job(first.id).await.unwrap().unwrap();
    assert_eq!(
        (row.status.as_str(), row.attempt, row.lease_owner.as_deref()),
        ("running", 2, Some("new"))
    );
    let execs = s.list_executions(first.id).await.unwrap();
    assert_eq!(
        execs.iter().map(|e| e.status.as_str()).collect::<Vec<_>>(),
        ["lost", "running"]
    );

    // The current owner still can.
    assert_eq!(
        s.heartbeat(first.id, "new", 2, 1000, run_at + 1)
            .await
            .unwrap(),
        Heartbeat::Ok {
            cancel_requested: false
        }
    );
    assert!(s
        .update_execution(new_exec.id, "new", 2, &upd)
        .await
        .unwrap());
    assert!(s
        .finish(first.id, "new", 2, &ok(JobStatus::Succeeded), run_at + 2)
        .await
        .unwrap());
    assert_eq!(
        s.get_job(first.id).await.unwrap().unwrap().status,
        JobStatus::Succeeded
    );
}

async fn recover_expired_requeues_then_fails(t: Ctx) {
    let s = &t.store;
    let new = NewJob {
        max_attempts: 2,
        backoff_ms: 10_000,
        max_backoff_ms: 60_000,
        ..job("r", 0)
    };
    let j = s.enqueue(&new, 0).await.unwrap();
    let c = s.claim("w", 1000, 0).await.unwrap().unwrap();
    let exec = s
        .create_execution(c.id, "w", 1, Some("web1"), ExecutionStatus::Pending, 1)
        .await
        .unwrap()
        .unwrap();
    let partial = ExecutionUpdate {
        status: Some(ExecutionStatus::Running),
        output: Some(json!({"progress": 50})),
        ..Default::default()
    };
    assert!(s.update_execution(exec.id, "w", 1, &partial).await.unwrap());
    let done_exec = s
        .create_execution(c.id, "w", 1, Some("web2"), ExecutionStatus::Succeeded, 1)
        .await
        .unwrap()
        .unwrap();

    // Not expired yet at the lease's last instant.
    assert!(s.recover_expired(1000).await.unwrap().is_empty());
    let rec = s.recover_expired(1001).await.unwrap();
    assert_eq!(rec.len(), 1);
    let r = &rec[0];
    assert_eq!(
        (r.job_id, r.attempt, r.worker.as_deref(), r.status.as_str()),
        (j.id, 1, Some("w"), "queued")
    );
    // Backoff stored on the row: 10 s for the first retry, within ±20 % jitter.
    let run_at = r.run_at.unwrap();
    let delay = run_at - 1001;
    assert!((8_000..=12_000).contains(&delay), "delay {delay}");
    let row = s.get_job(j.id).await.unwrap().unwrap();
    assert_eq!(
        (
            row.status.as_str(),
            row.run_at,
            row.attempt,
            row.lease_owner.clone()
        ),
        ("queued", run_at, 1, None)
    );
    assert_eq!(row.error.as_deref(), Some("worker lost"));

    let execs = s.list_executions(j.id).await.unwrap();
    assert_eq!(execs[0].id, exec.id);
    assert_eq!(execs[0].status, ExecutionStatus::Lost);
    assert_eq!(
        execs[0].output,
        json!({"progress": 50}),
        "output up to the loss is kept"
    );
    assert_eq!(execs[0].finished_at, Some(1001));
    assert_eq!(
        (execs[1].id, execs[1].status.as_str()),
        (done_exec.id, "succeeded"),
        "finished executions untouched"
    );

    // Not claimable before the backoff; then attempt 2.
    assert_eq!(s.claim("w2", 1000, run_at - 1).await.unwrap(), None);
    let c2 = s.claim("w2", 1000, run_at).await.unwrap().unwrap();
    assert_eq!(
        (c2.attempt, c2.started_at),
        (2, Some(0)),
        "started_at is the first claim"
    );

    // Lost again with no attempts left: failed.
    let rec = s.recover_expired(run_at + 1001).await.unwrap();
    assert_eq!((rec[0].status.as_str(), rec[0].run_at), ("failed", None));
    let row = s.get_job(j.id).await.unwrap().unwrap();
    assert_eq!(
        (row.status.as_str(), row.error.as_deref(), row.finished_at),
        ("failed", Some("worker lost"), Some(run_at + 1001))
    );
    assert!(s
        .recover_expired(run_at + 100_000)
        .await
        .unwrap()
        .is_empty());

    // A cancel pending when the worker vanished wins over a retry.
    let k = s
        .enqueue(
            &NewJob {
                max_attempts: 5,
                ..job("k", 0)
            },
            0,
        )
        .await
        .unwrap();
    s.claim("w", 1000, 0).await.unwrap().unwrap();
    assert_eq!(s.cancel(k.id, 10).await.unwrap(), CancelResult::Requested);
    let rec = s.recover_expired(5000).await.unwrap();
    assert_eq!(rec[0].status, JobStatus::Cancelled);
    assert_eq!(
        s.get_job(k.id).await.unwrap().unwrap().status,
        JobStatus::Cancelled
    );
}

async fn concurrent_recovery_recovers_once(t: Ctx) {
    let s = Arc::new(t.store.clone());
    for i in 0..40 {
        s.enqueue(
            &NewJob {
                max_attempts: 3,
                ..job(&format!("c{i}"), 0)
            },
            0,
        )
        .await
        .unwrap();
    }
    while s.claim("dead", 100, 0).await.unwrap().is_some() {}
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.recover_expired(1000).await.unwrap() })
        })
        .collect();
    let mut ids = Vec::new();
    for h in handles {
        ids.extend(h.await.unwrap().into_iter().map(|r| r.job_id));
    }
    ids.sort();
    let before = ids.len();
    ids.dedup();
    assert_eq!(
        (before, ids.len()),
        (40, 40),
        "each job recovered exactly once"
    );
}

async fn retry_later_stores_backoff_on_row(t: Ctx) {
    let s = &t.store;
    let j = s
        .enqueue(
            &NewJob {
                max_attempts: 3,
                backoff_ms: 2000,
                max_backoff_ms: 5000,
                ..job("rt", 0)
            },
            0,
        )
        .await
        .unwrap();
    let c = s.claim("w", 1000, 0).await.unwrap().unwrap();
    assert_eq!(
        (c.backoff_ms, c.max_backoff_ms, c.max_attempts),
        (2000, 5000, 3)
    );
    let run_at = 100 + backoff_delay(c.backoff_ms, c.max_backoff_ms, c.attempt, 0.0);
    assert!(s
        .retry_later(j.id, "w", 1, run_at, "exit code 1", 100)
        .await
        .unwrap());
    let q = s.get_job(j.id).await.unwrap().unwrap();
    assert_eq!(
        (q.status.as_str(), q.run_at, q.error.as_deref(), q.attempt),
        ("queued", 2100, Some("exit code 1"), 1)
    );
    assert_eq!(q.finished_at, None);
    // Not claimable before run_at.
    assert_eq!(s.claim("w", 1000, 2099).await.unwrap(), None);
    let c2 = s.claim("w", 1000, 2100).await.unwrap().unwrap();
    assert_eq!(c2.attempt, 2);
    // Second retry doubles, capped by max_backoff.
    assert_eq!(
        backoff_delay(c2.backoff_ms, c2.max_backoff_ms, 2, 0.0),
        4000
    );
    assert_eq!(
        backoff_delay(c2.backoff_ms, c2.max_backoff_ms, 3, 0.0),
        5000
    );
    // A cancel requested during the run wins over the retry.
    assert_eq!(s.cancel(j.id, 2200).await.unwrap(), CancelResult::Requested);
    assert!(s
        .retry_later(j.id, "w", 2, 9000, "exit code 1", 2300)
        .await
        .unwrap());
    let q = s.get_job(j.id).await.unwrap().unwrap();
    assert_eq!(
        (q.status.as_str(), q.finished_at),
        ("cancelled", Some(2300))
    );
    assert_eq!(s.claim("w", 1000, 100_000).await.unwrap(), None);
}

async fn cancel_queued_running_and_finished(t: Ctx) {
    let s = &t.store;
    let q = s.enqueue(&job("q", 0), 0).await.unwrap();
    assert_eq!(s.cancel(q.id, 5).await.unwrap(), CancelResult::Cancelled);
    let qc = s.get_job(q.id).await.unwrap().unwrap();
    assert_eq!((qc.status.as_str(), qc.finished_at), ("cancelled", Some(5)));
    assert_eq!(
        s.claim("w", 1000, 10).await.unwrap(),
        None,
        "a cancelled job never runs"
    );
    assert_eq!(
        s.cancel(q.id, 6).await.unwrap(),
        CancelResult::AlreadyFinished(JobStatus::Cancelled)
    );

    let r = s.enqueue(&job("r", 0), 0).await.unwrap();
    s.claim("w", 1000, 10).await.unwrap().unwrap();
    assert_eq!(s.cancel(r.id, 11).await.unwrap(), CancelResult::Requested);
    let rc = s.get_job(r.id).await.unwrap().unwrap();
    assert_eq!((rc.status.as_str(), rc.cancel_requested), ("running", true));
    let cancelled = JobOutcome {
        status: JobStatus::Cancelled,
        exit_code: Some(143),
        output: json!(null),
        error: None,
    };
    assert!(s.finish(r.id, "w", 1, &cancelled, 12).await.unwrap());
    assert_eq!(
        s.cancel(r.id, 13).await.unwrap(),
        CancelResult::AlreadyFinished(JobStatus::Cancelled)
    );
    assert_eq!(
        s.cancel(r.id + 100, 13).await.unwrap(),
        CancelResult::NotFound
    );
}

async fn serial_jobs_wait_for_running_sibling(t: Ctx) {
    let s = &t.store;
    let e = s
        .create_event("serial", EventStatus::Active, &json!({}), 0)
        .await
        .unwrap();
    let other = s
        .create_event("other", EventStatus::Active, &json!({}), 0)
        .await
        .unwrap();
    let serial = |run_at| NewJob {
        serial: true,
        ..event_job(e.id, "serial", run_at)
    };
    let first = s.enqueue(&serial(0), 0).await.unwrap();
    let second = s.enqueue(&serial(1), 0).await.unwrap();
    let unrelated = s
        .enqueue(
            &NewJob {
                serial: true,
                ..event_job(other.id, "other", 2)
            },
            0,
        )
        .await
        .unwrap();

    assert!(s.has_active_job(e.id).await.unwrap());
    assert_eq!(s.claim("w", 1000, 10).await.unwrap().unwrap().id, first.id);
    // The second waits while the first runs; other events' jobs pass it.
    assert_eq!(
        s.claim("w", 1000, 10).await.unwrap().unwrap().id,
        unrelated.id
    );
    assert_eq!(s.claim("w", 1000, 10).await.unwrap(), None);
    assert!(s
        .finish(first.id, "w", 1, &ok(JobStatus::Succeeded), 20)
        .await
        .unwrap());
    assert_eq!(s.claim("w", 1000, 20).await.unwrap().unwrap().id, second.id);

    // Concurrent claimers never run two serial jobs of one event at once.
    let s2 = Arc::new(s.clone());
    assert!(s
        .finish(second.id, "w", 1, &ok(JobStatus::Succeeded), 30)
        .await
        .unwrap());
    for _ in 0..10 {
        s.enqueue(&serial(40), 40).await.unwrap();
    }
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let s = s2.clone();
            tokio::spawn(async move { s.claim(&format!("c{i}"), 1000, 50).await.unwrap() })
        })
        .collect();
    let mut got = 0;
    for h in handles {
        if h.await.unwrap().is_some() {
            got += 1;
        }
    }
    assert_eq!(got, 1, "exactly one serial job of the event runs");
}

async fn list_filters_pages_and_counts(t: Ctx) {
    let s = &t.store;
    let e = s
        .create_event("a", EventStatus::Active, &json!({}), 0)
        .await
        .unwrap();
    let mut a_ids = Vec::new();
    for i in 0..5 {
        a_ids.push(s.enqueue(&event_job(e.id, "a", i), i).await.unwrap().id);
    }
    let b = s.enqueue(&job("b", 0), 10).await.unwrap();
    let all = s.list_jobs(&JobFilter::default()).await.unwrap();
    assert_eq!(all.len(), 6);
    assert_eq!(all[0].id, b.id, "newest first");

    let page1 = s
        .list_jobs(&JobFilter {
            event_name: Some("a".into()),
            limit: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page1.iter().map(|j| j.id).collect::<Vec<_>>(),
        [a_ids[4], a_ids[3]]
    );
    let page2 = s
        .list_jobs(&JobFilter {
            event_name: Some("a".into()),
            limit: Some(2),
            before_id: Some(page1[1].id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page2.iter().map(|j| j.id).collect::<Vec<_>>(),
        [a_ids[2], a_ids[1]]
    );
    let by_id = s
        .list_jobs(&JobFilter {
            event_id: Some(e.id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_id.len(), 5);

    let c = s.claim("w", 1000, 100).await.unwrap().unwrap();
    assert_eq!(c.id, a_ids[0]);
    let running = s
        .list_jobs(&JobFilter {
            status: Some(JobStatus::Running),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(running.iter().map(|j| j.id).collect::<Vec<_>>(), [c.id]);
    let none = s
        .list_jobs(&JobFilter {
            status: Some(JobStatus::Running),
            event_name: Some("b".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());
    assert!(matches!(
        s.list_jobs(&JobFilter { limit: Some(0), ..Default::default() }).await,
        Err(StoreError::Invalid(m)) if m.starts_with("limit")
    ));

    assert_eq!(
        s.job_counts_by_status().await.unwrap(),
        vec![(JobStatus::Queued, 5), (JobStatus::Running, 1)]
    );
    assert_eq!(s.count_jobs_for_event(e.id).await.unwrap(), 5);
    assert_eq!(s.count_jobs_for_event(e.id + 100).await.unwrap(), 0);
    assert!(s.has_active_job(e.id).await.unwrap());
    for id in &a_ids {
        s.cancel(*id, 200).await.unwrap();
    }
    assert!(s
        .finish(c.id, "w", 1, &ok(JobStatus::Succeeded), 200)
        .await
        .unwrap());
    assert!(!s.has_active_job(e.id).await.unwrap());
}

async fn invalid_jobs_write_nothing(t: Ctx) {
    let s = &t.store;
    let cases: Vec<(NewJob, &str)> = vec![
        (
            NewJob {
                max_attempts: 0,
                ..job("x", 0)
            },
            "max_attempts",
        ),
        (
            NewJob {
                backoff_ms: -1,
                ..job("x", 0)
            },
            "backoff_ms",
        ),
        (
            NewJob {
                event_name: "".into(),
                ..job("x", 0)
            },
            "event_name",
        ),
        (
            NewJob {
                max_executions: -1,
                routing: Default::default(),
                ..job("x", 0)
            },
            "max_executions",
        ),
        (
            NewJob {
                timeout_ms: -5,
                ..job("x", 0)
            },
            "timeout_ms",
        ),
    ];
    for (bad, field) in cases {
        match s.enqueue(&bad, 0).await {
            Err(StoreError::Invalid(m)) => assert!(m.starts_with(field), "{m} should name {field}"),
            other => panic!("expected Invalid({field}), got {other:?}"),
        }
    }
    assert!(s.list_jobs(&JobFilter::default()).await.unwrap().is_empty());
}

/// A fan-out's failed-only retry is an ordinary job whose `overrides` narrow its target: kept on
/// the row (and the claim) without a node run, through both insert paths (plain, and the
/// `max_executions` transaction).
async fn a_job_enqueued_with_overrides_carries_them_without_a_node(t: Ctx) {
    let s = &t.store;
    let overrides = json!({"target": {"servers": ["web2"], "batch": 1}});
    let plain = s.enqueue(&job("plain", 0), 0).await.unwrap();
    assert_eq!(plain.overrides, serde_json::Value::Null);
    let retry = s
        .enqueue_with_overrides(&job("retry", 0), &overrides, 0)
        .await
        .unwrap();
    assert_eq!((&retry.overrides, retry.node_run_id), (&overrides, None));
    let e = s
        .create_event("limited", EventStatus::Active, &json!({}), 0)
        .await
        .unwrap();
    let limited = NewJob {
        max_executions: 5,
        routing: Default::default(),
        ..event_job(e.id, "limited", 0)
    };
    let counted = s
        .enqueue_with_overrides(&limited, &overrides, 0)
        .await
        .unwrap();
    assert_eq!(counted.overrides, overrides);
    let mut claimed = Vec::new();
    while let Some(j) = s.claim("w", 1000, 10).await.unwrap() {
        claimed.push((j.id, j.overrides));
    }
    claimed.sort_by_key(|(id, _)| *id);
    assert_eq!(
        claimed,
        vec![
            (plain.id, serde_json::Value::Null),
            (retry.id, overrides.clone()),
            (counted.id, overrides)
        ]
    );
}

async fn batch_claims_take_each_job_once_oldest_first_and_one_serial_job_per_event(t: Ctx) {
    let s = &t.store;
    assert!(s
        .claim_batch("w", &Claimant::untagged(), 1000, 0, 8)
        .await
        .unwrap()
        .is_empty());
    let e = s
        .create_event("serial-b", EventStatus::Active, &json!({}), 0)
        .await
        .unwrap();
    let serial = |run_at| NewJob {
        serial: true,
        ..event_job(e.id, "serial-b", run_at)
    };
    let s1 = s.enqueue(&serial(0), 0).await.unwrap();
    let s2 = s.enqueue(&serial(0), 0).await.unwrap();
    let mut plain = Vec::new();
    for i in 0..5 {
        plain.push(
            s.enqueue(&job(&format!("p{i}"), 5 - i), 0)
                .await
                .unwrap()
                .id,
        );
    }
    let later = s.enqueue(&job("later", 1000), 0).await.unwrap();
    // Five plain jobs due, oldest run_at first; then one of the two serial jobs, never both.
    let got = s
        .claim_batch("w", &Claimant::untagged(), 1000, 100, 10)
        .await
        .unwrap();
    let ids: Vec<i64> = got.iter().map(|j| j.id).collect();
    let mut expected: Vec<i64> = plain.iter().rev().copied().collect();
    expected.push(s1.id);
    assert_eq!(ids, expected, "{got:?}");
    for j in &got {
        assert_eq!(
            (j.status.as_str(), j.attempt, j.lease_owner.as_deref()),
            ("running", 1, Some("w"))
        );
        assert_eq!(j.lease_expires_at, Some(1100));
    }
    assert!(!ids.contains(&s2.id) && !ids.contains(&later.id));
    // `max` is honoured, and the rest waits.
    assert!(s
        .finish(s1.id, "w", 1, &ok(JobStatus::Succeeded), 110)
        .await
        .unwrap());
    let next = s
        .claim_batch("w2", &Claimant::untagged(), 1000, 120, 1)
        .await
        .unwrap();
    assert_eq!(next.iter().map(|j| j.id).collect::<Vec<_>>(), vec![s2.id]);
    assert!(s
        .claim_batch("w2", &Claimant::untagged(), 1000, 120, 4)
        .await
        .unwrap()
        .is_empty());
    assert!(
        matches!(s.claim_batch("", &Claimant::untagged(), 1000, 0, 4).await, Err(StoreError::Invalid(m)) if m.starts_with("worker"))
    );

    // Concurrent batch claimers: every job claimed exactly once.
    const JOBS: usize = 300;
    let mut ids = HashSet::new();
    for i in 0..JOBS {
        ids.insert(s.enqueue(&job(&format!("c{i}"), 200), 0).await.unwrap().id);
    }
    let shared = Arc::new(s.clone());
    let handles: Vec<_> = (0..6)
        .map(|w| {
            let s = shared.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let batch = s
                        .claim_batch(&format!("b{w}"), &Claimant::untagged(), 60_000, 300, 16)
                        .await
                        .unwrap();
                    if batch.is_empty() {
                        return mine;
                    }
                    mine.extend(batch.into_iter().map(|j| j.id));
                }
            })
        })
        .collect();
    let mut claimed = Vec::new();
    for h in handles {
        claimed.extend(h.await.unwrap());
    }
    let unique: HashSet<i64> = claimed.iter().copied().collect();
    assert_eq!(claimed.len(), JOBS, "every job claimed exactly once");
    assert_eq!(unique, ids);
}
