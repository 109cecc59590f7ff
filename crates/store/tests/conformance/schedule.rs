//! Schedule state, firing ticks exactly once, and the leadership lock.

use std::sync::Arc;

use cronium_model::{EventStatus, Trigger};
use cronium_store::{FireResult, Lease, NewJob, Store, StoreError};
use serde_json::json;

use crate::harness::{event_job, Ctx};

conformance!(
    fire_enqueues_and_advances,
    fire_never_double_fires_a_tick,
    concurrent_fires_of_one_tick_fire_once,
    lock_exclusivity_and_expiry,
    concurrent_lock_attempts_elect_one,
    fire_is_fenced_by_the_leadership_lease,
    concurrent_fires_with_a_stale_and_a_current_lease_fire_once_as_the_leader,
    broken_mark_is_fenced_by_version_and_cleared_by_a_new_version,
    unparsable_spec_text_reads_as_a_broken_event,
);

/// A scheduler lease good from `now` for a long time (for tests about firing, not leadership).
async fn lead(s: &Store, holder: &str, now: i64) -> Lease {
    s.try_lock("scheduler", holder, 1_000_000_000, now)
        .await
        .unwrap()
        .expect("no one else holds the lock")
}

fn tick_job(event_id: i64, tick: i64) -> NewJob {
    NewJob {
        trigger: Trigger::Schedule,
        scheduled_for: Some(tick),
        ..event_job(event_id, "cron", tick)
    }
}

async fn fire_enqueues_and_advances(t: Ctx) {
    let s = &t.store;
    let l = lead(s, "a", 0).await;
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
        .fire(
            &l,
            e.id,
            1000,
            Some(2000),
            Some(&tick_job(e.id, 1000)),
            1001,
        )
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
        s.fire(&l, e.id, 2000, Some(3000), None, 2001)
            .await
            .unwrap(),
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
        s.fire(&l, e.id, 3000, None, Some(&tick_job(e.id, 3000)), 3001)
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
        s.fire(&l, e.id + 100, 1, None, None, 1).await,
        Err(StoreError::NotFound(_))
    ));
    // A job that does not belong to the tick is refused before anything is written.
    assert!(matches!(
        s.fire(&l, e.id, 4000, Some(5000), Some(&tick_job(e.id, 3999)), 4001).await,
        Err(StoreError::Invalid(m)) if m.starts_with("job.scheduled_for")
    ));
    assert_eq!(
        s.get_event(e.id).await.unwrap().unwrap().last_fired_at,
        Some(3000)
    );
}

async fn fire_never_double_fires_a_tick(t: Ctx) {
    let s = &t.store;
    let l = lead(s, "a", 0).await;
    let e = s
        .create_event("cron", EventStatus::Active, &json!({}), 0)
        .await
        .unwrap();
    assert!(matches!(
        s.fire(
            &l,
            e.id,
            1000,
            Some(2000),
            Some(&tick_job(e.id, 1000)),
            1000
        )
        .await
        .unwrap(),
        FireResult::Fired(_)
    ));
    // The same tick again (a second scheduler, or this one after a restart): nothing changes.
    assert_eq!(
        s.fire(
            &l,
            e.id,
            1000,
            Some(9999),
            Some(&tick_job(e.id, 1000)),
            1001
        )
        .await
        .unwrap(),
        FireResult::Duplicate
    );
    assert_eq!(
        s.fire(&l, e.id, 1000, Some(9999), None, 1001)
            .await
            .unwrap(),
        FireResult::Duplicate
    );
    // An older tick too.
    assert_eq!(
        s.fire(&l, e.id, 500, Some(9999), Some(&tick_job(e.id, 500)), 1001)
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
        s.fire(
            &l,
            e.id,
            2000,
            Some(3000),
            Some(&tick_job(e.id, 2000)),
            2000
        )
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
    let l = lead(&s, "a", 0).await;
    let e = s
        .create_event("cron", EventStatus::Active, &json!({}), 0)
        .await
        .unwrap();
    for tick in 1..=20i64 {
        let at = tick * 1000;
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                let l = l.clone();
                let job = tick_job(e.id, at);
                tokio::spawn(
                    async move { s.fire(&l, e.id, at, Some(at + 1000), Some(&job), at).await },
                )
            })
            .collect();
        let mut fired = 0;
        for h in handles {
            match h.await.unwrap().unwrap() {
                FireResult::Fired(_) => fired += 1,
                FireResult::Duplicate => {}
                other => panic!("no job was skipped or limited and the lease holds: {other:?}"),
            }
        }
        assert_eq!(fired, 1, "tick {at} fired {fired} times");
    }
    assert_eq!(s.count_jobs_for_event(e.id).await.unwrap(), 20);
}

async fn lock_exclusivity_and_expiry(t: Ctx) {
    let s = &t.store;
    let a1 = s
        .try_lock("scheduler", "a", 1000, 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((a1.holder.as_str(), a1.expires_at), ("a", 1000));
    assert_eq!(
        s.lock_holder("scheduler", 500).await.unwrap().as_deref(),
        Some("a")
    );
    assert_eq!(
        s.try_lock("scheduler", "b", 1000, 500).await.unwrap(),
        None,
        "held by a"
    );
    // Renewal by the holder extends the lease to 600 + 1000 and keeps the token.
    let a2 = s
        .try_lock("scheduler", "a", 1000, 600)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((a2.token, a2.expires_at), (a1.token, 1600));
    assert_eq!(
        s.try_lock("scheduler", "b", 1000, 1200).await.unwrap(),
        None,
        "renewed lease still running"
    );
    // Expired: b takes over with a new token, and a can no longer renew.
    assert_eq!(s.lock_holder("scheduler", 1600).await.unwrap(), None);
    let b1 = s
        .try_lock("scheduler", "b", 1000, 1600)
        .await
        .unwrap()
        .unwrap();
    assert!(b1.token > a2.token, "takeover keeps token {}", b1.token);
    assert_eq!(
        s.try_lock("scheduler", "a", 1000, 1700).await.unwrap(),
        None
    );
    // The same holder taking its own expired lock again gets a new token too: someone may have
    // led in between.
    let b2 = s
        .try_lock("scheduler", "b", 1000, 2600)
        .await
        .unwrap()
        .unwrap();
    assert!(b2.token > b1.token);
    // Locks are independent by name.
    assert!(s
        .try_lock("other", "a", 1000, 1700)
        .await
        .unwrap()
        .is_some());
    // Only the current grant unlocks: a's old lease and b's superseded one are no-ops.
    s.unlock(&a2).await.unwrap();
    s.unlock(&b1).await.unwrap();
    assert_eq!(
        s.try_lock("scheduler", "c", 1000, 2700).await.unwrap(),
        None
    );
    s.unlock(&b2).await.unwrap();
    // Unlocked: c need not wait for the expiry (3600).
    let c = s
        .try_lock("scheduler", "c", 1000, 2700)
        .await
        .unwrap()
        .unwrap();
    assert!(
        c.token > b2.token,
        "a token is never reused after an unlock"
    );
    assert!(
        matches!(s.try_lock("scheduler", "c", 0, 2800).await, Err(StoreError::Invalid(m)) if m.starts_with("ttl_ms"))
    );
    assert!(
        matches!(s.try_lock("scheduler", "", 10, 2800).await, Err(StoreError::Invalid(m)) if m.starts_with("holder"))
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
            if h.await.unwrap().unwrap().is_some() {
                winners += 1;
            }
        }
        assert_eq!(winners, 1, "round {round}");
    }
}

async fn fire_is_fenced_by_the_leadership_lease(t: Ctx) {
    let s = &t.store;
    let e = s
        .create_event("cron", EventStatus::Active, &json!({}), 0)
        .await
        .unwrap();
    let job = |tick| tick_job(e.id, tick);
    // A lease the store never granted (no lock row at all): nothing fires.
    let forged = Lease {
        name: "scheduler".into(),
        holder: "a".into(),
        token: 1,
        expires_at: i64::MAX,
    };
    assert_eq!(
        s.fire(&forged, e.id, 1000, Some(2000), Some(&job(1000)), 1000)
            .await
            .unwrap(),
        FireResult::NotLeader
    );
    let a = s
        .try_lock("scheduler", "a", 3000, 0)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        s.fire(&a, e.id, 1000, Some(2000), Some(&job(1000)), 1000)
            .await
            .unwrap(),
        FireResult::Fired(_)
    ));
    // At its expiry the lease no longer fires, nor skips.
    assert_eq!(
        s.fire(&a, e.id, 2000, Some(3000), Some(&job(2000)), 3000)
            .await
            .unwrap(),
        FireResult::NotLeader
    );
    assert_eq!(
        s.fire(&a, e.id, 2000, Some(3000), None, 3000)
            .await
            .unwrap(),
        FireResult::NotLeader
    );
    // b takes over. a, paused before its lease ran out, wakes up with a tick it computed then
    // (and its own stale clock, 2999): still refused, because the lock changed hands.
    let b = s
        .try_lock("scheduler", "b", 3000, 3000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        s.fire(&a, e.id, 2000, Some(3000), Some(&job(2000)), 2999)
            .await
            .unwrap(),
        FireResult::NotLeader
    );
    let ev = s.get_event(e.id).await.unwrap().unwrap();
    assert_eq!(
        (ev.last_fired_at, ev.next_fire_at),
        (Some(1000), Some(2000)),
        "a fenced fire changed the schedule"
    );
    assert_eq!(s.count_jobs_for_event(e.id).await.unwrap(), 1);
    // The new leader fires the tick; a renewal keeps its lease good for later ticks.
    assert!(matches!(
        s.fire(&b, e.id, 2000, Some(3000), Some(&job(2000)), 3001)
            .await
            .unwrap(),
        FireResult::Fired(_)
    ));
    s.try_lock("scheduler", "b", 3000, 5000)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        s.fire(&b, e.id, 3000, Some(4000), Some(&job(3000)), 7000)
            .await
            .unwrap(),
        FireResult::Fired(_)
    ));
    // After an unlock (graceful stop), b's lease is gone at once, before its expiry.
    s.unlock(&b).await.unwrap();
    assert_eq!(
        s.fire(&b, e.id, 4000, Some(5000), Some(&job(4000)), 7001)
            .await
            .unwrap(),
        FireResult::NotLeader
    );
    // A lease of another lock name does not count as the scheduler's.
    let other = s.try_lock("other", "b", 3000, 7001).await.unwrap().unwrap();
    let mut renamed = other.clone();
    renamed.name = "scheduler".into();
    assert_eq!(
        s.fire(&renamed, e.id, 4000, Some(5000), None, 7002)
            .await
            .unwrap(),
        FireResult::NotLeader
    );
    // A bad job is still refused before the lease is even looked at.
    assert!(matches!(
        s.fire(&forged, e.id, 4000, Some(5000), Some(&job(3999)), 7002).await,
        Err(StoreError::Invalid(m)) if m.starts_with("job.scheduled_for")
    ));
    assert_eq!(s.count_jobs_for_event(e.id).await.unwrap(), 3);
}

async fn concurrent_fires_with_a_stale_and_a_current_lease_fire_once_as_the_leader(t: Ctx) {
    let s = Arc::new(t.store.clone());
    let e = s
        .create_event("cron", EventStatus::Active, &json!({}), 0)
        .await
        .unwrap();
    for round in 0..10i64 {
        let base = round * 100_000;
        // a leads, stalls past its lease; b takes over while a fires with what it knew.
        let a = s
            .try_lock("scheduler", "a", 1000, base)
            .await
            .unwrap()
            .unwrap();
        let takeover = {
            let s = s.clone();
            tokio::spawn(async move { s.try_lock("scheduler", "b", 1000, base + 1000).await })
        };
        let stale = {
            let s = s.clone();
            let job = tick_job(e.id, base + 500);
            tokio::spawn(async move {
                s.fire(
                    &a,
                    e.id,
                    base + 500,
                    Some(base + 600),
                    Some(&job),
                    base + 999,
                )
                .await
            })
        };
        let b = takeover
            .await
            .unwrap()
            .unwrap()
            .expect("a's lease had expired");
        let stale = stale.await.unwrap().unwrap();
        // Either a fired before the takeover committed, or it was refused: never after.
        assert!(
            matches!(stale, FireResult::Fired(_) | FireResult::NotLeader),
            "round {round}: {stale:?}"
        );
        let tick = base + 500;
        let again = s
            .fire(
                &b,
                e.id,
                tick,
                Some(tick + 100),
                Some(&tick_job(e.id, tick)),
                base + 1001,
            )
            .await
            .unwrap();
        match stale {
            FireResult::Fired(_) => assert_eq!(again, FireResult::Duplicate, "round {round}"),
            _ => assert!(
                matches!(again, FireResult::Fired(_)),
                "round {round}: {again:?}"
            ),
        }
        s.unlock(&b).await.unwrap();
    }
    assert_eq!(s.count_jobs_for_event(e.id).await.unwrap(), 10);
}

async fn broken_mark_is_fenced_by_version_and_cleared_by_a_new_version(t: Ctx) {
    let s = &t.store;
    let e = s
        .create_event("b", EventStatus::Active, &json!({"v": 1}), 0)
        .await
        .unwrap();
    assert_eq!(e.broken, None);
    assert_eq!(s.count_broken_events().await.unwrap(), 0);
    assert!(s
        .set_event_broken(e.id, 1, Some("schedule: invalid cron"))
        .await
        .unwrap());
    let got = s.get_event(e.id).await.unwrap().unwrap();
    assert_eq!(got.broken.as_deref(), Some("schedule: invalid cron"));
    assert_eq!(
        s.list_events().await.unwrap()[0].broken.as_deref(),
        Some("schedule: invalid cron")
    );
    assert_eq!(s.count_broken_events().await.unwrap(), 1);
    // A status change is no new spec: still broken.
    s.set_event_status(e.id, EventStatus::Paused, 1)
        .await
        .unwrap();
    assert!(s.get_event(e.id).await.unwrap().unwrap().broken.is_some());
    // A new version clears the mark...
    let (v2, _) = s
        .apply_event("b", EventStatus::Active, &json!({"v": 2}), 2)
        .await
        .unwrap();
    assert_eq!((v2.version, v2.broken), (2, None));
    assert_eq!(s.count_broken_events().await.unwrap(), 0);
    // ...and a verdict about the old version, arriving late, does not stick to the new one.
    assert!(!s.set_event_broken(e.id, 1, Some("late")).await.unwrap());
    assert_eq!(s.get_event(e.id).await.unwrap().unwrap().broken, None);
    // The mark can be cleared explicitly (the spec parses again), and an empty reason is refused.
    assert!(s.set_event_broken(e.id, 2, Some("x")).await.unwrap());
    assert!(s.set_event_broken(e.id, 2, None).await.unwrap());
    assert_eq!(s.get_event(e.id).await.unwrap().unwrap().broken, None);
    assert!(matches!(
        s.set_event_broken(e.id, 2, Some(" ")).await,
        Err(StoreError::Invalid(m)) if m.starts_with("reason")
    ));
    // update_event clears it too.
    s.set_event_broken(e.id, 2, Some("x")).await.unwrap();
    let v3 = s
        .update_event(e.id, EventStatus::Active, &json!({"v": 3}), 3)
        .await
        .unwrap();
    assert_eq!((v3.version, v3.broken), (3, None));
}

async fn unparsable_spec_text_reads_as_a_broken_event(t: Ctx) {
    let s = &t.store;
    let good = s
        .create_event("good", EventStatus::Active, &json!({"v": 1}), 0)
        .await
        .unwrap();
    let bad = s
        .create_event("bad", EventStatus::Active, &json!({"v": 1}), 0)
        .await
        .unwrap();
    // Damage done outside Cronium (a hand edit, a faulty restore).
    {
        use sqlx::Connection;
        if t.url.starts_with("sqlite:") {
            let mut c = sqlx::SqliteConnection::connect(&t.url).await.unwrap();
            sqlx::query("UPDATE events SET spec = '{not json' WHERE id = ?")
                .bind(bad.id)
                .execute(&mut c)
                .await
                .unwrap();
        } else {
            let mut c = sqlx::PgConnection::connect(&t.url).await.unwrap();
            sqlx::query("UPDATE events SET spec = '{not json' WHERE id = $1")
                .bind(bad.id)
                .execute(&mut c)
                .await
                .unwrap();
        }
    }
    // Listing still works, and says which event is broken and why.
    let all = s.list_events().await.unwrap();
    assert_eq!(all.len(), 2);
    let b = all.iter().find(|e| e.id == bad.id).unwrap();
    assert_eq!(b.spec, serde_json::Value::Null);
    assert!(
        b.broken
            .as_deref()
            .is_some_and(|r| r.starts_with("spec: the stored text is not JSON")),
        "{:?}",
        b.broken
    );
    let g = all.iter().find(|e| e.id == good.id).unwrap();
    assert_eq!((g.spec.clone(), g.broken.clone()), (json!({"v": 1}), None));
    // Applying a valid spec repairs it.
    let (fixed, _) = s
        .apply_event("bad", EventStatus::Active, &json!({"v": 2}), 1)
        .await
        .unwrap();
    assert_eq!((fixed.spec, fixed.broken), (json!({"v": 2}), None));
}
