//! Events: create, update, apply, versions, conflicts, status, delete.

use cronium_model::EventStatus;
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
    concurrent_applies_each_return_the_version_they_wrote,
    unknown_words_in_the_database_are_corrupt_data,
    migration_removes_the_status_copy_from_stored_specs,
);

async fn open_is_idempotent_and_migrated(t: Ctx) {
    t.store
        .create_event("a", EventStatus::Active, &json!({}), 1)
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
        .create_event("backup", EventStatus::Active, &spec, 1000)
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
        .create_event("alpha", EventStatus::Paused, &json!({}), 1001)
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

    s.set_event_status(b.id, EventStatus::Active, 2000)
        .await
        .unwrap();
    let b2 = s.get_event(b.id).await.unwrap().unwrap();
    assert_eq!(
        (b2.status.as_str(), b2.version, b2.updated_at),
        ("active", 1, 2000)
    );
    assert!(matches!(
        s.set_event_status(b.id + 100, EventStatus::Active, 1).await,
        Err(StoreError::NotFound(_))
    ));

    assert!(s.delete_event(e.id).await.unwrap());
    assert!(!s.delete_event(e.id).await.unwrap());
    assert_eq!(s.get_event(e.id).await.unwrap(), None);
    assert_eq!(s.get_event_version(e.id, 1).await.unwrap(), None);
    // The name is free again.
    s.create_event("backup", EventStatus::Active, &spec, 3000)
        .await
        .unwrap();
}

async fn apply_creates_updates_and_leaves_unchanged(t: Ctx) {
    let s = &t.store;
    let v1 = json!({"script": "echo 1", "timeout": "1m"});
    let (e, applied) = s
        .apply_event("nightly", EventStatus::Active, &v1, 10)
        .await
        .unwrap();
    assert_eq!((applied, e.version), (Applied::Created, 1));

    // Same spec, keys in another order: unchanged, no new version, updated_at untouched.
    let v1_reordered: serde_json::Value =
        serde_json::from_str(r#"{"timeout":"1m","script":"echo 1"}"#).unwrap();
    let (same, applied) = s
        .apply_event("nightly", EventStatus::Active, &v1_reordered, 20)
        .await
        .unwrap();
    assert_eq!(
        (applied, same.version, same.updated_at),
        (Applied::Unchanged, 1, 10)
    );

    let v2 = json!({"script": "echo 2", "timeout": "1m"});
    let (e2, applied) = s
        .apply_event("nightly", EventStatus::Active, &v2, 30)
        .await
        .unwrap();
    assert_eq!(
        (applied, e2.id, e2.version, e2.updated_at),
        (Applied::Updated, e.id, 2, 30)
    );
    assert_eq!(e2.created_at, 10);

    // A status change alone is a new version too.
    let (e3, applied) = s
        .apply_event("nightly", EventStatus::Paused, &v2, 40)
        .await
        .unwrap();
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
        .create_event("u", EventStatus::Active, &json!({"a": 1}), 1)
        .await
        .unwrap();
    let same = s
        .update_event(e.id, EventStatus::Active, &json!({"a": 1}), 2)
        .await
        .unwrap();
    assert_eq!((same.version, same.updated_at), (1, 1));
    let changed = s
        .update_event(e.id, EventStatus::Active, &json!({"a": 2}), 3)
        .await
        .unwrap();
    assert_eq!((changed.version, changed.updated_at), (2, 3));
    assert_eq!(changed.spec, json!({"a": 2}));
    assert_eq!(s.get_event(e.id).await.unwrap(), Some(changed));
    assert!(matches!(
        s.update_event(e.id + 100, EventStatus::Active, &json!({}), 4)
            .await,
        Err(StoreError::NotFound(_))
    ));
}

async fn name_conflict_writes_nothing(t: Ctx) {
    let s = &t.store;
    let first = s
        .create_event("dup", EventStatus::Active, &json!({"v": 1}), 1)
        .await
        .unwrap();
    match s
        .create_event("dup", EventStatus::Paused, &json!({"v": 2}), 2)
        .await
    {
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
    // Statuses are typed (`EventStatus`): an unknown one cannot be passed. Names can be bad.
    assert!(matches!(
        s.create_event(" ", EventStatus::Active, &json!({}), 1).await,
        Err(StoreError::Invalid(m)) if m.starts_with("name:")
    ));
    assert!(matches!(
        s.apply_event("", EventStatus::Active, &json!({}), 1).await,
        Err(StoreError::Invalid(m)) if m.starts_with("name:")
    ));
    assert!(s.list_events().await.unwrap().is_empty());
}

async fn delete_keeps_jobs_with_their_event_name(t: Ctx) {
    let s = &t.store;
    let e = s
        .create_event("gone", EventStatus::Active, &json!({}), 1)
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
                tokio::spawn(async move {
                    s.apply_event(&name, EventStatus::Active, &json!({"v": 1}), 1)
                        .await
                })
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

async fn concurrent_applies_each_return_the_version_they_wrote(t: Ctx) {
    let s = std::sync::Arc::new(t.store.clone());
    let handles: Vec<_> = (0..10)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let spec = json!({"v": i});
                let (row, _) = s
                    .apply_event("shared", EventStatus::Active, &spec, i)
                    .await
                    .unwrap();
                (row, spec)
            })
        })
        .collect();
    let mut versions = Vec::new();
    for h in handles {
        let (row, spec) = h.await.unwrap();
        // The row returned is the one this call wrote, not whatever was latest when it returned.
        assert_eq!(row.spec, spec, "version {}", row.version);
        assert_eq!(
            s.get_event_version(row.id, row.version).await.unwrap(),
            Some(spec)
        );
        versions.push(row.version);
    }
    versions.sort();
    assert_eq!(versions, (1..=10).collect::<Vec<i64>>());
}

/// A raw connection to the test database, to write what the store itself never would.
async fn raw(t: &Ctx) -> sqlx::AnyPool {
    sqlx::AnyPool::connect(&t.url)
        .await
        .expect("raw connection")
}

async fn unknown_words_in_the_database_are_corrupt_data(t: Ctx) {
    let s = &t.store;
    let e = s
        .create_event("odd", EventStatus::Active, &json!({}), 1)
        .await
        .unwrap();
    let j = s.enqueue(&event_job(e.id, "odd", 0), 1).await.unwrap();
    let db = raw(&t).await;
    sqlx::query("UPDATE events SET status = 'sleeping' WHERE id = $1")
        .bind(e.id)
        .execute(&db)
        .await
        .unwrap();
    sqlx::query("UPDATE jobs SET status = 'done', trigger_kind = 'cron' WHERE id = $1")
        .bind(j.id)
        .execute(&db)
        .await
        .unwrap();
    db.close().await;
    match s.get_event(e.id).await {
        Err(StoreError::Corrupt(m)) => assert!(
            m.contains("status") && m.contains("sleeping") && m.contains("active"),
            "names the column, the value and the valid ones: {m}"
        ),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(matches!(s.get_job(j.id).await, Err(StoreError::Corrupt(_))));
    assert!(matches!(s.list_events().await, Err(StoreError::Corrupt(_))));
}

async fn migration_removes_the_status_copy_from_stored_specs(t: Ctx) {
    let s = &t.store;
    // What earlier versions wrote: the status inside the spec as well as beside it.
    let legacy = json!({"type": "bash", "script": "echo", "status": "paused"});
    let e = s
        .create_event("legacy", EventStatus::Paused, &legacy, 1)
        .await
        .unwrap();
    let plain = s
        .create_event("plain", EventStatus::Active, &json!([1, 2]), 1)
        .await
        .unwrap();
    // Run migration 5 again, as an upgrade from a store that predates it would.
    let db = raw(&t).await;
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 5")
        .execute(&db)
        .await
        .unwrap();
    db.close().await;
    let again = Store::open(&t.url).await.unwrap();
    let stripped = json!({"type": "bash", "script": "echo"});
    let row = again.get_event(e.id).await.unwrap().unwrap();
    assert_eq!(
        (row.spec, row.status),
        (stripped.clone(), EventStatus::Paused)
    );
    assert_eq!(
        again.get_event_version(e.id, 1).await.unwrap(),
        Some(stripped)
    );
    // Specs without a status (or that are not objects) are left alone.
    assert_eq!(
        again.get_event(plain.id).await.unwrap().unwrap().spec,
        json!([1, 2])
    );
    again.close().await;
}

#[tokio::test]
async fn in_memory_sqlite_store_works() {
    let s = Store::open("sqlite::memory:").await.unwrap();
    assert_eq!(s.backend(), cronium_store::Backend::Sqlite);
    let e = s
        .create_event("mem", EventStatus::Active, &json!({}), 1)
        .await
        .unwrap();
    // Reads go through the same single connection, so they see the writes.
    assert_eq!(s.get_event_by_name("mem").await.unwrap(), Some(e));
}
