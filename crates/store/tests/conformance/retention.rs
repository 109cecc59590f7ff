//! Retention: pruning by age, `keep`, per-event rules and the jobs of deleted events; queued and
//! running jobs untouched; the dry run deletes nothing; steps stay within their limits, so a
//! big log goes over several calls while other writers proceed in between.

use std::collections::BTreeMap;

use cronium_model::{EventStatus, ExecutionStatus, JobStatus};
use cronium_store::{
    JobOutcome, NewLogLine, PruneCounts, PruneLimits, PruneRule, PruneScope, Store, StoreError,
};
use serde_json::json;
use sqlx::Connection;

use crate::harness::{event_job, job, Ctx};

conformance!(
    prune_deletes_old_finished_jobs_with_their_rows,
    keep_spares_the_newest_finished_jobs,
    rules_per_event_and_for_deleted_events,
    queued_and_running_jobs_are_never_pruned,
    dry_run_counts_what_would_go_and_deletes_nothing,
    a_big_log_goes_in_bounded_steps_between_other_writes,
    many_jobs_go_in_batches,
    bad_rules_and_limits_are_refused,
);

/// Runs `new` to completion: claimed, one execution, `lines` log lines, finished at `at`.
async fn finished(s: &Store, new: cronium_store::NewJob, lines: i64, at: i64) -> i64 {
    let queued = s.enqueue(&new, 0).await.unwrap();
    let claimed = s.claim("w", 60_000, 0).await.unwrap().unwrap();
    assert_eq!(claimed.id, queued.id, "another job was queued");
    let e = s
        .create_execution(claimed.id, "w", 1, None, ExecutionStatus::Running, 0)
        .await
        .unwrap()
        .unwrap();
    let batch: Vec<NewLogLine> = (1..=lines)
        .map(|seq| NewLogLine {
            execution_id: Some(e.id),
            seq,
            stream: "stdout".into(),
            line: format!("line {seq}"),
            ts: seq,
        })
        .collect();
    assert!(s.append_logs(claimed.id, "w", 1, &batch).await.unwrap());
    let outcome = JobOutcome {
        status: JobStatus::Succeeded,
        exit_code: Some(0),
        output: json!({}),
        error: None,
    };
    assert!(s.finish(claimed.id, "w", 1, &outcome, at).await.unwrap());
    claimed.id
}

async fn exists(s: &Store, id: i64) -> bool {
    s.get_job(id).await.unwrap().is_some()
}

async fn log_count(s: &Store, id: i64) -> usize {
    s.read_logs(id, 0, 100_000).await.unwrap().len()
}

/// Steps until the rule has nothing more; the sum of what went, by event.
async fn prune_all(s: &Store, rule: &PruneRule) -> BTreeMap<String, PruneCounts> {
    let mut total: BTreeMap<String, PruneCounts> = BTreeMap::new();
    for _ in 0..1000 {
        let step = s.prune_step(rule, &PruneLimits::default()).await.unwrap();
        for (name, c) in &step.by_event {
            total.entry(name.clone()).or_default().add(c);
        }
        if !step.more {
            return total;
        }
    }
    panic!("prune never finished");
}

fn counts(jobs: u64, executions: u64, log_lines: u64) -> PruneCounts {
    PruneCounts {
        jobs,
        executions,
        log_lines,
    }
}

fn deleted(before: i64) -> PruneRule {
    PruneRule {
        scope: PruneScope::DeletedEvents,
        finished_before: before,
        keep: 0,
    }
}

async fn prune_deletes_old_finished_jobs_with_their_rows(t: Ctx) {
    let s = &t.store;
    let old = finished(s, job("old", 0), 3, 10).await;
    let edge = finished(s, job("edge", 0), 1, 100).await;
    let recent = finished(s, job("recent", 0), 1, 500).await;
    let cancelled = s.enqueue(&job("cancelled", 0), 0).await.unwrap().id;
    s.cancel(cancelled, 50).await.unwrap();

    let went = prune_all(s, &deleted(100)).await;
    assert_eq!(
        went,
        BTreeMap::from([
            ("old".to_string(), counts(1, 1, 3)),
            ("cancelled".to_string(), counts(1, 0, 0)),
        ])
    );
    assert!(!exists(s, old).await && !exists(s, cancelled).await);
    assert!(s.list_executions(old).await.unwrap().is_empty());
    assert_eq!(log_count(s, old).await, 0);
    // `finished_before` is exclusive.
    assert!(exists(s, edge).await && exists(s, recent).await);
    assert_eq!(log_count(s, recent).await, 1);
    assert!(prune_all(s, &deleted(100)).await.is_empty());
}

async fn keep_spares_the_newest_finished_jobs(t: Ctx) {
    let s = &t.store;
    let ev = s
        .create_event("kept", EventStatus::Active, &json!({}), 0)
        .await
        .unwrap();
    let mut ids = Vec::new();
    // Finish times out of id order, and a tie: the newest are by finish time, then id.
    for at in [40, 10, 30, 30, 20] {
        ids.push(finished(s, event_job(ev.id, "kept", 0), 1, at).await);
    }
    // Neither a queued nor a running job counts among the kept ones.
    let queued = s.enqueue(&event_job(ev.id, "kept", 0), 0).await.unwrap().id;
    let rule = PruneRule {
        scope: PruneScope::Event(ev.id),
        finished_before: 1_000,
        keep: 3,
    };
    let went = prune_all(s, &rule).await;
    assert_eq!(went["kept"], counts(2, 2, 2));
    // Kept: finished at 40, then the later of the two at 30 (ids[3]), then ids[2].
    let left: Vec<bool> = futures::future::join_all(ids.iter().map(|id| exists(s, *id))).await;
    assert_eq!(left, [true, false, true, true, false]);
    assert!(exists(s, queued).await);

    // `keep` only protects: the kept jobs still need to be older than the age to go.
    let young = PruneRule {
        keep: 1,
        finished_before: 35,
        ..rule
    };
    assert_eq!(prune_all(s, &young).await["kept"], counts(2, 2, 2));
    assert!(exists(s, ids[0]).await);
    // Fewer finished jobs than `keep`: nothing goes.
    let many = PruneRule { keep: 5, ..rule };
    assert!(prune_all(s, &many).await.is_empty());
    assert!(exists(s, ids[0]).await);
}

async fn rules_per_event_and_for_deleted_events(t: Ctx) {
    let s = &t.store;
    let a = s
        .create_event("a", EventStatus::Active, &json!({}), 0)
        .await
        .unwrap();
    let b = s
        .create_event("b", EventStatus::Active, &json!({}), 0)
        .await
        .unwrap();
    let gone = s
        .create_event("gone", EventStatus::Active, &json!({}), 0)
        .await
        .unwrap();
    let a_old = finished(s, event_job(a.id, "a", 0), 1, 50).await;
    let a_new = finished(s, event_job(a.id, "a", 0), 1, 150).await;
    let b_old = finished(s, event_job(b.id, "b", 0), 1, 500).await;
    let gone_old = finished(s, event_job(gone.id, "gone", 0), 2, 50).await;
    assert!(s.delete_event(gone.id).await.unwrap());

    // Each rule touches its own scope only.
    let rule_a = PruneRule {
        scope: PruneScope::Event(a.id),
        finished_before: 100,
        keep: 0,
    };
    assert_eq!(
        prune_all(s, &rule_a).await.keys().collect::<Vec<_>>(),
        ["a"]
    );
    assert!(!exists(s, a_old).await && exists(s, a_new).await);
    assert!(exists(s, b_old).await && exists(s, gone_old).await);

    let rule_b = PruneRule {
        scope: PruneScope::Event(b.id),
        finished_before: 1_000,
        keep: 0,
    };
    assert_eq!(prune_all(s, &rule_b).await["b"], counts(1, 1, 1));
    assert!(!exists(s, b_old).await && exists(s, a_new).await);

    // A deleted event's jobs keep their name and follow the rule for deleted events.
    assert_eq!(prune_all(s, &deleted(100)).await["gone"], counts(1, 1, 2));
    assert!(!exists(s, gone_old).await && exists(s, a_new).await);
}

async fn queued_and_running_jobs_are_never_pruned(t: Ctx) {
    let s = &t.store;
    let running = s.enqueue(&job("running", 0), 0).await.unwrap().id;
    let retried = s.enqueue(&job("retried", 0), 0).await.unwrap().id;
    assert_eq!(s.claim("w", 60_000, 0).await.unwrap().unwrap().id, running);
    assert_eq!(s.claim("w", 60_000, 0).await.unwrap().unwrap().id, retried);
    assert!(s
        .retry_later(retried, "w", 1, 1_000_000, "failed once", 5)
        .await
        .unwrap());
    let queued = s.enqueue(&job("queued", 0), 0).await.unwrap().id;
    // Even with a finish time (a row written by hand, or by an older release), neither a job
    // running nor one waiting is touched.
    let mut c = sqlx::AnyConnection::connect(&t.url).await.unwrap();
    sqlx::query("UPDATE jobs SET finished_at = 1")
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    let rule = deleted(i64::MAX);
    assert!(s.prune_preview(&[rule]).await.unwrap().is_empty());
    assert!(prune_all(s, &rule).await.is_empty());
    for id in [running, retried, queued] {
        assert!(exists(s, id).await, "job {id} was pruned");
    }
}

async fn dry_run_counts_what_would_go_and_deletes_nothing(t: Ctx) {
    let s = &t.store;
    let ev = s
        .create_event("ev", EventStatus::Active, &json!({}), 0)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for at in [10, 20, 30] {
        ids.push(finished(s, event_job(ev.id, "ev", 0), 4, at).await);
    }
    ids.push(finished(s, job("orphan", 0), 7, 10).await);
    ids.push(finished(s, job("orphan", 0), 1, 900).await);
    let rules = [
        PruneRule {
            scope: PruneScope::Event(ev.id),
            finished_before: 1_000,
            keep: 1,
        },
        deleted(100),
    ];
    let preview = s.prune_preview(&rules).await.unwrap();
    let expected = BTreeMap::from([
        ("ev".to_string(), counts(2, 2, 8)),
        ("orphan".to_string(), counts(1, 1, 7)),
    ]);
    assert_eq!(preview, expected);
    // Twice the same answer: nothing was deleted.
    assert_eq!(s.prune_preview(&rules).await.unwrap(), expected);
    for id in &ids {
        assert!(exists(s, *id).await);
        assert!(log_count(s, *id).await > 0);
    }
    // And it is what pruning then deletes.
    let mut went = prune_all(s, &rules[0]).await;
    went.extend(prune_all(s, &rules[1]).await);
    assert_eq!(went, expected);
}

async fn a_big_log_goes_in_bounded_steps_between_other_writes(t: Ctx) {
    let s = &t.store;
    let big = finished(s, job("big", 0), 12_345, 10).await;
    let limits = PruneLimits {
        jobs: 500,
        log_lines: 5_000,
    };
    let rule = deleted(100);

    let first = s.prune_step(&rule, &limits).await.unwrap();
    assert!(first.more);
    assert_eq!(first.total(), counts(0, 0, 5_000));
    // The oldest lines went first; the job row stays while it has lines.
    assert!(exists(s, big).await);
    let rest = s.read_logs(big, 0, 100_000).await.unwrap();
    assert_eq!(rest.len(), 7_345);
    assert_eq!(rest[0].seq, 5_001);
    // The dry run counts the job whose deletion has begun.
    assert_eq!(
        s.prune_preview(&[]).await.unwrap()["big"],
        counts(1, 1, 7_345)
    );

    // Between steps, other writers go on: a whole job round trip.
    let other = finished(s, job("other", 0), 3, 50).await;

    // The deletion begun is finished even by a rule that no longer selects the job.
    let nothing = deleted(0);
    let second = s.prune_step(&nothing, &limits).await.unwrap();
    assert_eq!(second.total(), counts(0, 0, 5_000));
    assert!(second.more);
    let third = s.prune_step(&nothing, &limits).await.unwrap();
    assert_eq!(third.total(), counts(1, 1, 2_345));
    assert!(!third.more);
    assert!(!exists(s, big).await);
    assert_eq!(log_count(s, big).await, 0);
    // The job written in between was never part of it.
    assert!(exists(s, other).await);
    assert_eq!(log_count(s, other).await, 3);
}

async fn many_jobs_go_in_batches(t: Ctx) {
    let s = &t.store;
    for i in 0..1_200 {
        let j = s.enqueue(&job("many", 0), 0).await.unwrap();
        s.cancel(j.id, i).await.unwrap();
    }
    let limits = PruneLimits {
        jobs: 500,
        log_lines: 5_000,
    };
    let mut steps = Vec::new();
    loop {
        let step = s.prune_step(&deleted(10_000), &limits).await.unwrap();
        steps.push((step.total().jobs, step.more));
        if !step.more {
            break;
        }
    }
    assert_eq!(steps, [(500, true), (500, true), (200, false)]);
    assert!(s
        .list_jobs(&cronium_store::JobFilter::default())
        .await
        .unwrap()
        .is_empty());
}

async fn bad_rules_and_limits_are_refused(t: Ctx) {
    let s = &t.store;
    let id = finished(s, job("x", 0), 1, 10).await;
    let rule = deleted(100);
    let bad_keep = PruneRule { keep: -1, ..rule };
    let cases = [
        (
            s.prune_step(&bad_keep, &PruneLimits::default()).await,
            "keep",
        ),
        (
            s.prune_step(
                &rule,
                &PruneLimits {
                    jobs: 0,
                    ..Default::default()
                },
            )
            .await,
            "limits.jobs",
        ),
        (
            s.prune_step(
                &rule,
                &PruneLimits {
                    log_lines: 0,
                    ..Default::default()
                },
            )
            .await,
            "limits.log_lines",
        ),
    ];
    for (result, field) in cases {
        match result {
            Err(StoreError::Invalid(m)) => assert!(m.starts_with(field), "{m} should name {field}"),
            other => panic!("expected Invalid({field}), got {other:?}"),
        }
    }
    assert!(matches!(
        s.prune_preview(&[bad_keep]).await,
        Err(StoreError::Invalid(m)) if m.starts_with("keep")
    ));
    assert!(exists(s, id).await, "a refused call deleted something");
}
