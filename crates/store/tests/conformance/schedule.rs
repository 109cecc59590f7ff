//! Schedule state, firing ticks exactly once, and the leadership lock.

use std::sync::Arc;

use cronium_model::{EventStatus, Trigger};
use cronium_store::{FireResult, NewJob, StoreError};
use serde_json::json;

use crate::harness::{event_job, Ctx};

conformance!(
    fire_enqueues_and_advances,
    fire_never_double_fires_a_tick,
    concurrent_fires_of_one_tick_fire_once,
    lock_exclusivity_and_expiry,
    concurrent_lock_attempts_elect_one,
);

fn tick_job(event_id: i64, tick: i64) -> NewJob {
    NewJob {
        trigger: Trigger::Schedule,
        scheduled_for: Some(tick),
        ..event_job(event_id, "cron", tick)
    }
}

async fn fire_enqueues_and_advances(t: Ctx) {
    let s = &t.store;
    let e = s
        .create_event("cron", EventStatus::Active, &json!({}), 0)
        .await
        .unwrap();
    s.set_next_fire(e.id, Some(1000)).await.unwrap();
    assert_eq!(
        s.get_event(e.id).await.unwrap().unwrap().next_fire_at,
        Some(1000)
    );
    let scheduled = s.list_scheduled_events().await.unwrap();
    assert_eq!(scheduled.iter().map(|e| e.id).collect::<Vec<_>>(), [e.id]);

    let fired = s
        .fire(e.id, 1000, Some(2000), Some(&tick_job(e.id, 1000)), 1001)
        .await
        .unwrap();
    let FireResult::Fired(job) = fired else {
        panic!("expected Fired, got {fired:?}")
    };
    assert_eq!(
        (job.status.as_str(), job.scheduled_for, job.trigger.as_str()),
        ("queued", Some(1000), "schedule")
    );
    assert_eq!(job.created_at, 1001);
    let ev = s.get_event(e.id).await.unwrap().unwrap();
    assert_eq!(
        (ev.last_fired_at, ev.next_fire_at),
        (Some(1000), Some(2000))
    );

    // A skipped tick (overlap: skip) advances the schedule without a job.
    assert_eq!(
        s.fire(e.id, 2000, Some(3000), None, 2001).await.unwrap(),
        FireResult::Skipped
    );
    let ev = s.get_event(e.id).await.unwrap().unwrap();
    assert_eq!(
        (ev.last_fired_at, ev.next_fire_at),
        (Some(2000), Some(3000))
    );
    assert_eq!(s.count_jobs_for_event(e.id).await.unwrap(), 1);

    // The last tick of an `at:` schedule: nothing next.
    assert!(matches!(
        s.fire(e.id, 3000, None, Some(&tick_job(e.id, 3000)), 3001)
            .await
            .unwrap(),
        FireResult::Fired(_)
    ));
    let ev = s.get_event(e.id).await.unwrap().unwrap();
    assert_eq!((ev.last_fired_at, ev.next_fire_at), (Some(3000), None));
    assert!(s.list_scheduled_events().await.unwrap().is_empty());

    s.set_next_fire(e.id, None).await.unwrap();
    assert!(matches!(
        s.set_next_fire(e.id + 100, Some(1)).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.fire(e.id + 100, 1, None, None, 1).await,
        Err(StoreError::NotFound(_))
    ));
    // A job that does not belong to the tick is refused before anything is written.
    assert!(matches!(
        s.fire(e.id, 4000, Some(5000), Some(&tick_job(e.id, 3999)), 4001).await,
        Err(StoreError::Invalid(m)) if m.starts_with("job.scheduled_for")
    ));
    assert_eq!(
        s.get_event(e.id).await.unwrap().unwrap().last_fired_at,
        Some(3000)
    );
}

async fn fire_never_double_fires_a_tick(t: Ctx) {
    let s = &t.store;
    let e = s
        .create_event("cron", EventStatus::Active, &json!({}), 0)
        .await
        .unwrap();
    assert!(matches!(
        s.fire(e.id, 1000, Some(2000), Some(&tick_job(e.id, 1000)), 1000)
            .await
            .unwrap(),
        FireResult::Fired(_)
    ));
    // The same tick again (a second scheduler, or this one after a restart): nothing changes.
    assert_eq!(
        s.fire(e.id, 1000, Some(9999), Some(&tick_job(e.id, 1000)), 1001)
            .await
            .unwrap(),
        FireResult::Duplicate
    );
    assert_eq!(
        s.fire(e.id, 1000, Some(9999), None, 1001).await.unwrap(),
        FireResult::Duplicate
    );
    // An older tick too.
    assert_eq!(
        s.fire(e.id, 500, Some(9999), Some(&tick_job(e.id, 500)), 1001)
            .await
            .unwrap(),
        FireResult::Duplicate
    );
    let ev = s.get_event(e.id).await.unwrap().unwrap();
    assert_eq!(
        (ev.last_fired_at, ev.next_fire_at),
        (Some(1000), Some(2000))
    );
    assert_eq!(s.count_jobs_for_event(e.id).await.unwrap(), 1);

    // The tick's job already exists (enqueued outside fire): Duplicate, schedule not advanced.
    s.enqueue(&tick_job(e.id, 2000), 1500).await.unwrap();
    assert_eq!(
        s.fire(e.id, 2000, Some(3000), Some(&tick_job(e.id, 2000)), 2000)
            .await
            .unwrap(),
        FireResult::Duplicate
    );
    let ev = s.get_event(e.id).await.unwrap().unwrap();
    assert_eq!(
        (ev.last_fired_at, ev.next_fire_at),
        (Some(1000), Some(2000))
    );
    // And enqueueing a second job for a fired tick is a conflict.
    assert!(matches!(
        s.enqueue(&tick_job(e.id, 1000), 2000).await,
        Err(StoreError::Conflict(f)) if f == "scheduled_for"
    ));
}

async fn concurrent_fires_of_one_tick_fire_once(t: Ctx) {
    let s = Arc::new(t.store.clone());
    let e = s
        .create_event("cron", EventStatus::Active, &json!({}), 0)
        .await
        .unwrap();
    for tick in 1..=20i64 {
        let at = tick * 1000;
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                let job = tick_job(e.id, at);
                tokio::spawn(async move { s.fire(e.id, at, Some(at + 1000), Some(&job), at).await })
            })
            .collect();
        let mut fired = 0;
        for h in handles {
            match h.await.unwrap().unwrap() {
                FireResult::Fired(_) => fired += 1,
                FireResult::Duplicate => {}
                other => panic!("no job was skipped or limited: {other:?}"),
            }
        }
        assert_eq!(fired, 1, "tick {at} fired {fired} times");
    }
    assert_eq!(s.count_jobs_for_event(e.id).await.unwrap(), 20);
}

async fn lock_exclusivity_and_expiry(t: Ctx) {
    let s = &t.store;
    assert!(s.try_lock("scheduler", "a", 1000, 0).await.unwrap());
    assert!(
        !s.try_lock("scheduler", "b", 1000, 500).await.unwrap(),
        "held by a"
    );
    // Renewal by the holder extends the lease to 600 + 1000.
    assert!(s.try_lock("scheduler", "a", 1000, 600).await.unwrap());
    assert!(
        !s.try_lock("scheduler", "b", 1000, 1200).await.unwrap(),
        "renewed lease still running"
    );
    // Expired: b takes over, and a can no longer renew.
    assert!(s.try_lock("scheduler", "b", 1000, 1600).await.unwrap());
    assert!(!s.try_lock("scheduler", "a", 1000, 1700).await.unwrap());
    // Locks are independent by name.
    assert!(s.try_lock("other", "a", 1000, 1700).await.unwrap());
    // Only the holder can unlock.
    s.unlock("scheduler", "a").await.unwrap();
    assert!(!s.try_lock("scheduler", "c", 1000, 1800).await.unwrap());
    s.unlock("scheduler", "b").await.unwrap();
    assert!(s.try_lock("scheduler", "c", 1000, 1800).await.unwrap());
    assert!(
        matches!(s.try_lock("scheduler", "c", 0, 1900).await, Err(StoreError::Invalid(m)) if m.starts_with("ttl_ms"))
    );
    assert!(
        matches!(s.try_lock("scheduler", "", 10, 1900).await, Err(StoreError::Invalid(m)) if m.starts_with("holder"))
    );
}

async fn concurrent_lock_attempts_elect_one(t: Ctx) {
    let s = Arc::new(t.store.clone());
    for round in 0..10i64 {
        let name = format!("leader-{round}");
        let handles: Vec<_> = (0..6)
            .map(|i| {
                let s = s.clone();
                let name = name.clone();
                tokio::spawn(
                    async move { s.try_lock(&name, &format!("node-{i}"), 10_000, 0).await },
                )
            })
            .collect();
        let mut winners = 0;
        for h in handles {
            if h.await.unwrap().unwrap() {
                winners += 1;
            }
        }
        assert_eq!(winners, 1, "round {round}");
    }
}
