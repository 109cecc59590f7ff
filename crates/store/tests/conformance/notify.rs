//! Webhook secrets and replays; notification channels and the outbox: written once with the
//! final state, claimed, retried with a later attempt, fenced by attempt, reclaimed after a
//! claim lapses, delivered once.

use cronium_model::{EventStatus, JobStatus};
use cronium_store::{HookKind, JobOutcome, NewChannel, NewNotification, NotifySource, StoreError};
use serde_json::json;

use crate::harness::{event_job, Ctx};

conformance!(hook_secrets_and_replays, outbox_claim_retry_and_fencing);

async fn hook_secrets_and_replays(t: Ctx) {
    let s = &t.store;
    assert_eq!(s.get_hook(HookKind::Event, "a").await.unwrap(), None);
    let h = s
        .ensure_hook(HookKind::Event, "a", &[1, 2, 3], 10)
        .await
        .unwrap();
    assert_eq!((h.secret.clone(), h.revealed), (vec![1, 2, 3], false));
    // A second ensure keeps the first secret; the workflow of the same name is another hook.
    let again = s
        .ensure_hook(HookKind::Event, "a", &[9, 9], 11)
        .await
        .unwrap();
    assert_eq!(again.secret, vec![1, 2, 3]);
    assert_eq!(s.get_hook(HookKind::Workflow, "a").await.unwrap(), None);
    // Shown once.
    assert!(s.reveal_hook(HookKind::Event, "a").await.unwrap());
    assert!(!s.reveal_hook(HookKind::Event, "a").await.unwrap());
    let rotated = s
        .rotate_hook(HookKind::Event, "a", &[4, 5], 20)
        .await
        .unwrap();
    assert_eq!(
        (
            rotated.secret,
            rotated.revealed,
            rotated.created_at,
            rotated.rotated_at
        ),
        (vec![4, 5], true, 10, 20)
    );

    // Replays: a key is accepted once until it expires; expired keys are pruned.
    assert!(s
        .remember_delivery(HookKind::Event, "a", "sig1", 1_000, 100)
        .await
        .unwrap());
    assert!(!s
        .remember_delivery(HookKind::Event, "a", "sig1", 1_000, 200)
        .await
        .unwrap());
    // The same key for another hook is not a replay.
    assert!(s
        .remember_delivery(HookKind::Workflow, "a", "sig1", 1_000, 200)
        .await
        .unwrap());
    assert_eq!(s.count_remembered_deliveries().await.unwrap(), 2);
    assert!(s
        .remember_delivery(HookKind::Event, "a", "sig2", 5_000, 2_000)
        .await
        .unwrap());
    assert_eq!(
        s.count_remembered_deliveries().await.unwrap(),
        1,
        "the keys past their expiry were pruned"
    );
    s.delete_hook(HookKind::Event, "a").await.unwrap();
    assert_eq!(s.get_hook(HookKind::Event, "a").await.unwrap(), None);
    assert_eq!(s.count_remembered_deliveries().await.unwrap(), 0);
}

async fn outbox_claim_retry_and_fencing(t: Ctx) {
    let s = &t.store;
    let ch = s
        .create_channel(
            &NewChannel {
                name: "ops".into(),
                kind: "slack".into(),
                config: json!({}),
                secret: Some(vec![7; 8]),
            },
            1,
        )
        .await
        .unwrap();
    assert_eq!((ch.pending, ch.last_success_at), (0, None));
    assert!(matches!(
        s.create_channel(
            &NewChannel {
                name: "ops".into(),
                kind: "discord".into(),
                config: json!({}),
                secret: None,
            },
            2,
        )
        .await,
        Err(StoreError::Conflict(f)) if f == "name"
    ));

    let ev = s
        .create_event("e", EventStatus::Active, &json!({}), 1)
        .await
        .unwrap();
    let job = s.enqueue(&event_job(ev.id, "e", 10), 10).await.unwrap();
    // Not final: not to notify yet.
    assert!(s
        .pending_notify_sources(NotifySource::Job, 10)
        .await
        .unwrap()
        .is_empty());
    let claimed = s.claim("w", 30_000, 20).await.unwrap().unwrap();
    assert_eq!(claimed.id, job.id);
    let outcome = JobOutcome {
        status: JobStatus::Failed,
        exit_code: Some(3),
        output: json!(null),
        error: None,
    };
    assert!(s
        .finish(job.id, "w", claimed.attempt, &outcome, 30)
        .await
        .unwrap());
    assert_eq!(
        s.pending_notify_sources(NotifySource::Job, 10)
            .await
            .unwrap(),
        vec![job.id]
    );
    assert_eq!(
        s.previous_final_status(NotifySource::Job, ev.id, job.id, 30)
            .await
            .unwrap(),
        None
    );
    let n = NewNotification {
        channel_id: ch.id,
        on: "failure".into(),
        message: json!({"status": "failed"}),
    };
    assert!(s
        .record_notifications(NotifySource::Job, job.id, std::slice::from_ref(&n), 40)
        .await
        .unwrap());
    // Recorded once: a second server looking at the same job writes nothing.
    assert!(!s
        .record_notifications(NotifySource::Job, job.id, &[n], 41)
        .await
        .unwrap());
    assert!(s
        .pending_notify_sources(NotifySource::Job, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(s.get_channel("ops").await.unwrap().unwrap().pending, 1);
    assert_eq!(s.next_notification_at().await.unwrap(), Some(40));

    // Claimed once; a second claim while the first holds finds nothing.
    let c1 = s.claim_notifications(50, 1_050, 10).await.unwrap();
    assert_eq!(c1.len(), 1);
    assert_eq!((c1[0].attempts, c1[0].on.as_str()), (1, "failure"));
    assert_eq!(c1[0].message, json!({"status": "failed"}));
    assert!(s
        .claim_notifications(60, 1_060, 10)
        .await
        .unwrap()
        .is_empty());
    // Failed: retried later, not before.
    assert!(s
        .notification_failed(c1[0].id, 1, "HTTP 503", Some(2_000), 70)
        .await
        .unwrap());
    let state = s.get_channel("ops").await.unwrap().unwrap();
    assert_eq!(
        (
            state.pending,
            state.last_error.as_deref(),
            state.last_error_at
        ),
        (1, Some("HTTP 503"), Some(70))
    );
    assert!(s
        .claim_notifications(1_999, 3_000, 10)
        .await
        .unwrap()
        .is_empty());
    let c2 = s.claim_notifications(2_000, 3_000, 10).await.unwrap();
    assert_eq!(c2[0].attempts, 2);
    // The claim lapses (the server stopped): claimed again, and the stale attempt's outcome
    // is refused.
    let c3 = s.claim_notifications(3_001, 4_000, 10).await.unwrap();
    assert_eq!(c3[0].attempts, 3);
    assert!(!s.notification_delivered(c2[0].id, 2, 3_100).await.unwrap());
    assert!(s.notification_delivered(c3[0].id, 3, 3_200).await.unwrap());
    assert!(!s.notification_delivered(c3[0].id, 3, 3_300).await.unwrap());
    let state = s.get_channel("ops").await.unwrap().unwrap();
    assert_eq!((state.pending, state.last_success_at), (0, Some(3_200)));
    assert!(s
        .claim_notifications(9_000, 10_000, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(s.next_notification_at().await.unwrap(), None);

    // A second job fails for good: given up, counted apart.
    let job2 = s.enqueue(&event_job(ev.id, "e", 100), 100).await.unwrap();
    let c = s.claim("w", 30_000, 5_000).await.unwrap().unwrap();
    let ok = JobOutcome {
        status: JobStatus::Succeeded,
        ..outcome.clone()
    };
    s.finish(job2.id, "w", c.attempt, &ok, 5_100).await.unwrap();
    assert_eq!(
        s.previous_final_status(NotifySource::Job, ev.id, job2.id, 5_100)
            .await
            .unwrap()
            .as_deref(),
        Some("failed"),
        "what recovery compares with"
    );
    s.record_notifications(
        NotifySource::Job,
        job2.id,
        &[NewNotification {
            channel_id: ch.id,
            on: "recovery".into(),
            message: json!({}),
        }],
        5_200,
    )
    .await
    .unwrap();
    let c = s.claim_notifications(5_300, 6_000, 10).await.unwrap();
    assert!(s
        .notification_failed(c[0].id, c[0].attempts, "refused", None, 5_400)
        .await
        .unwrap());
    let state = s.get_channel("ops").await.unwrap().unwrap();
    assert_eq!((state.pending, state.given_up), (0, 1));
    assert!(s
        .claim_notifications(99_000, 100_000, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(s.list_notifications(ch.id).await.unwrap().len(), 2);

    // Ends with nothing to send are marked in one statement.
    let job3 = s.enqueue(&event_job(ev.id, "e", 200), 200).await.unwrap();
    let c = s.claim("w", 30_000, 6_000).await.unwrap().unwrap();
    s.finish(job3.id, "w", c.attempt, &ok, 6_100).await.unwrap();
    assert_eq!(
        s.pending_notify_sources(NotifySource::Job, 10)
            .await
            .unwrap(),
        vec![job3.id]
    );
    s.mark_notified(NotifySource::Job, &[job3.id])
        .await
        .unwrap();
    s.mark_notified(NotifySource::Job, &[]).await.unwrap();
    assert!(s
        .pending_notify_sources(NotifySource::Job, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(!s
        .record_notifications(NotifySource::Job, job3.id, &[], 6_200)
        .await
        .unwrap());

    // Deleting the channel deletes its outbox.
    assert!(s.delete_channel("ops").await.unwrap());
    assert!(!s.delete_channel("ops").await.unwrap());
    assert!(s.list_notifications(ch.id).await.unwrap().is_empty());
}
