//! Events: create, update, apply, versions, conflicts, status, delete.

use cronium_store::{Applied, Store, StoreError};
use serde_json::json;

use crate::harness::{event_job, Ctx};

conformance!(
    open_is_idempotent_and_migrated,
    create_get_list_delete,
    apply_creates_updates_and_leaves_unchanged,
    update_bumps_version_only_on_change,
    name_conflict_writes_nothing,
    invalid_input_writes_nothing,
    delete_keeps_jobs_with_their_event_name,
    concurrent_applies_of_a_new_name_create_once,
);

async fn open_is_idempotent_and_migrated(t: Ctx) {
    t.store
        .create_event("a", "active", &json!({}), 1)
        .await
        .unwrap();
    // Reopening runs the migrations again: already applied, nothing lost.
    let again = Store::open(&t.url).await.unwrap();
    assert_eq!(again.backend(), t.store.backend());
    assert_eq!(again.list_events().await.unwrap().len(), 1);
    again.close().await;
    assert!(matches!(
        Store::open("mysql://x").await,
        Err(StoreError::UnsupportedUrl(_))
    ));
}

async fn create_get_list_delete(t: Ctx) {
    let s = &t.store;
    let spec = json!({"type": "bash", "script": "echo hi", "nested": {"a": [1, 2]}});
    let e = s
        .create_event("backup", "active", &spec, 1000)
        .await
        .unwrap();
    assert_eq!(
        (e.name.as_str(), e.version, e.status.as_str()),
        ("backup", 1, "active")
    );
    assert_eq!(e.spec, spec);
    assert_eq!((e.created_at, e.updated_at), (1000, 1000));
    assert_eq!((e.next_fire_at, e.last_fired_at), (None, None));

    assert_eq!(s.get_event(e.id).await.unwrap(), Some(e.clone()));
    assert_eq!(
        s.get_event_by_name("backup").await.unwrap(),
        Some(e.clone())
    );
    assert_eq!(s.get_event(e.id + 100).await.unwrap(), None);
    assert_eq!(s.get_event_by_name("nope").await.unwrap(), None);
    assert_eq!(
        s.get_event_version(e.id, 1).await.unwrap(),
        Some(spec.clone())
    );
    assert_eq!(s.get_event_version(e.id, 2).await.unwrap(), None);

    let b = s
        .create_event("alpha", "paused", &json!({}), 1001)
        .await
        .unwrap();
    let names: Vec<String> = s
        .list_events()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["alpha", "backup"]);

    s.set_event_status(b.id, "active", 2000).await.unwrap();
    let b2 = s.get_event(b.id).await.unwrap().unwrap();
    assert_eq!(
        (b2.status.as_str(), b2.version, b2.updated_at),
        ("active", 1, 2000)
    );
    assert!(matches!(
        s.set_event_status(b.id + 100, "active", 1).await,
        Err(StoreError::NotFound(_))
    ));

    assert!(s.delete_event(e.id).await.unwrap());
    assert!(!s.delete_event(e.id).await.unwrap());
    assert_eq!(s.get_event(e.id).await.unwrap(), None);
    assert_eq!(s.get_event_version(e.id, 1).await.unwrap(), None);
    // The name is free again.
    s.create_event("backup", "active", &spec, 3000)
        .await
        .unwrap();
}

async fn apply_creates_updates_and_leaves_unchanged(t: Ctx) {
    let s = &t.store;
    let v1 = json!({"script": "echo 1", "timeout": "1m"});
    let (e, applied) = s.apply_event("nightly", "active", &v1, 10).await.unwrap();
    assert_eq!((applied, e.version), (Applied::Created, 1));

    // Same spec, keys in another order: unchanged, no new version, updated_at untouched.
    let v1_reordered: serde_json::Value =
        serde_json::from_str(r#"{"timeout":"1m","script":"echo 1"}"#).unwrap();
    let (same, applied) = s
        .apply_event("nightly", "active", &v1_reordered, 20)
        .await
        .unwrap();
    assert_eq!(
        (applied, same.version, same.updated_at),
        (Applied::Unchanged, 1, 10)
    );

    let v2 = json!({"script": "echo 2", "timeout": "1m"});
    let (e2, applied) = s.apply_event("nightly", "active", &v2, 30).await.unwrap();
    assert_eq!(
        (applied, e2.id, e2.version, e2.updated_at),
        (Applied::Updated, e.id, 2, 30)
    );
    assert_eq!(e2.created_at, 10);

    // A status change alone is a new version too.
    let (e3, applied) = s.apply_event("nightly", "paused", &v2, 40).await.unwrap();
    assert_eq!(
        (applied, e3.version, e3.status.as_str()),
        (Applied::Updated, 3, "paused")
    );

    assert_eq!(s.get_event_version(e.id, 1).await.unwrap(), Some(v1));
    assert_eq!(
        s.get_event_version(e.id, 2).await.unwrap(),
        Some(v2.clone())
    );
    assert_eq!(s.get_event_version(e.id, 3).await.unwrap(), Some(v2));
    assert_eq!(s.list_events().await.unwrap().len(), 1);
}

async fn update_bumps_version_only_on_change(t: Ctx) {
    let s = &t.store;
    let e = s
        .create_event("u", "active", &json!({"a": 1}), 1)
        .await
        .unwrap();
    let same = s
        .update_event(e.id, "active", &json!({"a": 1}), 2)
        .await
        .unwrap();
    assert_eq!((same.version, same.updated_at), (1, 1));
    let changed = s
        .update_event(e.id, "active", &json!({"a": 2}), 3)
        .await
        .unwrap();
    assert_eq!((changed.version, changed.updated_at), (2, 3));
    assert_eq!(changed.spec, json!({"a": 2}));
    assert_eq!(s.get_event(e.id).await.unwrap(), Some(changed));
    assert!(matches!(
        s.update_event(e.id + 100, "active", &json!({}), 4).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn name_conflict_writes_nothing(t: Ctx) {
    let s = &t.store;
    let first = s
        .create_event("dup", "active", &json!({"v": 1}), 1)
        .await
        .unwrap();
    match s.create_event("dup", "paused", &json!({"v": 2}), 2).await {
        Err(StoreError::Conflict(field)) => assert_eq!(field, "name"),
        other => panic!("expected Conflict(name), got {other:?}"),
    }
    let events = s.list_events().await.unwrap();
    assert_eq!(events, vec![first.clone()]);
    assert_eq!(s.get_event_version(first.id, 2).await.unwrap(), None);
    // The rolled-back insert left no orphan version rows under any id.
    for id in first.id + 1..first.id + 3 {
        assert_eq!(s.get_event_version(id, 1).await.unwrap(), None);
    }
}

async fn invalid_input_writes_nothing(t: Ctx) {
    let s = &t.store;
    match s.create_event("x", "sleeping", &json!({}), 1).await {
        Err(StoreError::Invalid(msg)) => assert!(msg.starts_with("status:"), "{msg}"),
        other => panic!("expected Invalid(status), got {other:?}"),
    }
    assert!(matches!(
        s.create_event(" ", "active", &json!({}), 1).await,
        Err(StoreError::Invalid(m)) if m.starts_with("name:")
    ));
    assert!(s.list_events().await.unwrap().is_empty());
    let e = s
        .create_event("x", "active", &json!({"a": 1}), 1)
        .await
        .unwrap();
    assert!(matches!(
        s.apply_event("x", "bogus", &json!({"a": 2}), 2).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.set_event_status(e.id, "bogus", 2).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(s.get_event(e.id).await.unwrap(), Some(e));
}

async fn delete_keeps_jobs_with_their_event_name(t: Ctx) {
    let s = &t.store;
    let e = s
        .create_event("gone", "active", &json!({}), 1)
        .await
        .unwrap();
    let j = s.enqueue(&event_job(e.id, "gone", 5), 2).await.unwrap();
    assert_eq!(j.event_id, Some(e.id));
    assert!(s.delete_event(e.id).await.unwrap());
    let j = s.get_job(j.id).await.unwrap().unwrap();
    assert_eq!((j.event_id, j.event_name.as_str()), (None, "gone"));
}

async fn concurrent_applies_of_a_new_name_create_once(t: Ctx) {
    let s = std::sync::Arc::new(t.store.clone());
    for round in 0..5 {
        let name = format!("race-{round}");
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                let name = name.clone();
                tokio::spawn(
                    async move { s.apply_event(&name, "active", &json!({"v": 1}), 1).await },
                )
            })
            .collect();
        let mut created = 0;
        for h in handles {
            match h.await.unwrap().unwrap() {
                (_, Applied::Created) => created += 1,
                (e, applied) => assert_eq!((applied, e.version), (Applied::Unchanged, 1)),
            }
        }
        assert_eq!(created, 1, "{name}");
    }
    assert_eq!(s.list_events().await.unwrap().len(), 5);
}

#[tokio::test]
async fn in_memory_sqlite_store_works() {
    let s = Store::open("sqlite::memory:").await.unwrap();
    assert_eq!(s.backend(), cronium_store::Backend::Sqlite);
    let e = s
        .create_event("mem", "active", &json!({}), 1)
        .await
        .unwrap();
    // Reads go through the same single connection, so they see the writes.
    assert_eq!(s.get_event_by_name("mem").await.unwrap(), Some(e));
}
