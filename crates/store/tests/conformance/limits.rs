//! `max_executions`: the limit is checked, and the event paused, in the transaction that inserts
//! the job, for manual enqueues and schedule ticks alike, so concurrent runs at the limit cannot
//! both pass.

use std::sync::Arc;

use cronium_model::{EventStatus, Trigger};
use cronium_store::{FireResult, NewJob, StoreError};
use serde_json::json;

use crate::harness::{event_job, Ctx};

conformance!(
    concurrent_enqueues_at_the_limit_create_exactly_the_limit,
    the_job_that_reaches_the_limit_pauses_the_event,
    schedule_ticks_stop_at_the_limit,
    concurrent_ticks_and_runs_share_one_limit,
);

fn limited(event_id: i64, limit: i64) -> NewJob {
    NewJob {
        max_executions: limit,
        routing: Default::default(),
        ..event_job(event_id, "limited", 0)
    }
}

fn tick(event_id: i64, at: i64, limit: i64) -> NewJob {
    NewJob {
        trigger: Trigger::Schedule,
        scheduled_for: Some(at),
        ..limited(event_id, limit)
    }
}

async fn concurrent_enqueues_at_the_limit_create_exactly_the_limit(t: Ctx) {
    let s = Arc::new(t.store.clone());
    let e = s
        .create_event("limited", EventStatus::Active, &json!({}), 0)
        .await
        .unwrap();
    s.set_next_fire(e.id, Some(5_000)).await.unwrap();
    const LIMIT: i64 = 3;
    let handles: Vec<_> = (0..12)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { s.enqueue(&limited(e.id, LIMIT), i).await })
        })
        .collect();
    let (mut created, mut refused) = (0, 0);
    for h in handles {
        match h.await.unwrap() {
            Ok(_) => created += 1,
            Err(StoreError::LimitReached { event, limit }) => {
                assert_eq!((event.as_str(), limit), ("limited", LIMIT));
                refused += 1;
            }
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert_eq!((created, refused), (LIMIT, 12 - LIMIT));
    assert_eq!(s.count_jobs_for_event(e.id).await.unwrap(), LIMIT);
    let paused = s.get_event(e.id).await.unwrap().unwrap();
    assert_eq!(
        (paused.status, paused.next_fire_at, paused.version),
        (EventStatus::Paused, None, 1),
        "paused in place: no new version"
    );
}

async fn the_job_that_reaches_the_limit_pauses_the_event(t: Ctx) {
    let s = &t.store;
    let e = s
        .create_event("limited", EventStatus::Active, &json!({}), 0)
        .await
        .unwrap();
    s.enqueue(&limited(e.id, 2), 10).await.unwrap();
    assert_eq!(
        s.get_event(e.id).await.unwrap().unwrap().status,
        EventStatus::Active
    );
    s.enqueue(&limited(e.id, 2), 20).await.unwrap();
    let after = s.get_event(e.id).await.unwrap().unwrap();
    assert_eq!((after.status, after.updated_at), (EventStatus::Paused, 20));
    // A paused event can still be run by hand while under its limit, but not at it.
    let err = s.enqueue(&limited(e.id, 2), 30).await.unwrap_err();
    assert!(
        err.to_string().contains("limit of 2 executions"),
        "the message names the limit: {err}"
    );
    // The limit is the job's, as the event's current spec says: raising it allows more runs.
    s.enqueue(&limited(e.id, 3), 40).await.unwrap();
    // Unlimited jobs (0) are never counted against anything.
    s.enqueue(&limited(e.id, 0), 50).await.unwrap();
    assert_eq!(s.count_jobs_for_event(e.id).await.unwrap(), 4);
    // A limited job of an event that no longer exists is refused, not inserted.
    assert!(matches!(
        s.enqueue(&limited(e.id + 100, 1), 60).await,
        Err(StoreError::NotFound(_))
    ));
    // A draft event at its limit is refused but keeps its status.
    let d = s
        .create_event("draft", EventStatus::Draft, &json!({}), 0)
        .await
        .unwrap();
    s.enqueue(&limited(d.id, 1), 70).await.unwrap();
    assert!(s.enqueue(&limited(d.id, 1), 80).await.is_err());
    assert_eq!(
        s.get_event(d.id).await.unwrap().unwrap().status,
        EventStatus::Draft
    );
}

async fn schedule_ticks_stop_at_the_limit(t: Ctx) {
    let s = &t.store;
    let e = s
        .create_event("limited", EventStatus::Active, &json!({}), 0)
        .await
        .unwrap();
    let l = s
        .try_lock("scheduler", "a", 1_000_000_000, 0)
        .await
        .unwrap()
        .expect("no one else holds the lock");
    let fire = |at: i64| {
        let job = tick(e.id, at, 2);
        let l = &l;
        async move { s.fire(l, e.id, at, Some(at + 1000), Some(&job), at).await }
    };
    assert!(matches!(fire(1000).await.unwrap(), FireResult::Fired(_)));
    let still = s.get_event(e.id).await.unwrap().unwrap();
    assert_eq!(
        (still.status, still.next_fire_at),
        (EventStatus::Active, Some(2000))
    );
    // The second tick reaches the limit: fired, and the event paused with no next instant.
    assert!(matches!(fire(2000).await.unwrap(), FireResult::Fired(_)));
    let paused = s.get_event(e.id).await.unwrap().unwrap();
    assert_eq!(
        (paused.status, paused.next_fire_at, paused.last_fired_at),
        (EventStatus::Paused, None, Some(2000))
    );
    // Resumed without raising the limit: the next tick is refused and pauses it again.
    s.set_event_status(e.id, EventStatus::Active, 2500)
        .await
        .unwrap();
    assert_eq!(fire(3000).await.unwrap(), FireResult::LimitReached);
    let again = s.get_event(e.id).await.unwrap().unwrap();
    assert_eq!(
        (again.status, again.next_fire_at),
        (EventStatus::Paused, None)
    );
    assert_eq!(s.count_jobs_for_event(e.id).await.unwrap(), 2);
}

async fn concurrent_ticks_and_runs_share_one_limit(t: Ctx) {
    let s = Arc::new(t.store.clone());
    let e = s
        .create_event("limited", EventStatus::Active, &json!({}), 0)
        .await
        .unwrap();
    const LIMIT: i64 = 4;
    let lease = s
        .try_lock("scheduler", "a", 1_000_000_000, 0)
        .await
        .unwrap()
        .expect("no one else holds the lock");
    let mut handles = Vec::new();
    for i in 0..8i64 {
        let s1 = s.clone();
        handles.push(tokio::spawn(async move {
            s1.enqueue(&limited(e.id, LIMIT), i).await.is_ok()
        }));
        let s2 = s.clone();
        let l = lease.clone();
        handles.push(tokio::spawn(async move {
            let at = (i + 1) * 1000;
            matches!(
                s2.fire(&l, e.id, at, None, Some(&tick(e.id, at, LIMIT)), at)
                    .await,
                Ok(FireResult::Fired(_))
            )
        }));
    }
    let mut created = 0;
    for h in handles {
        if h.await.unwrap() {
            created += 1;
        }
    }
    assert_eq!(created, LIMIT);
    assert_eq!(s.count_jobs_for_event(e.id).await.unwrap(), LIMIT);
    assert_eq!(
        s.get_event(e.id).await.unwrap().unwrap().status,
        EventStatus::Paused
    );
}
