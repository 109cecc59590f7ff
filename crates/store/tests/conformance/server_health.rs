//! Server health: the latest state on the server's row, the bounded history, stale checks.

use cronium_store::{HealthState, NewHealthCheck, NewServer, StoreError};
use serde_json::json;

use crate::harness::Ctx;

conformance!(server_health_keeps_the_latest_state_and_a_bounded_history);
conformance!(server_health_ignores_an_older_check_and_a_removed_server);

fn server(name: &str) -> NewServer {
    NewServer {
        name: name.into(),
        host: "127.0.0.1".into(),
        port: 2222,
        username: "deploy".into(),
        auth_kind: "key".into(),
        credential: vec![1],
        host_key: None,
        tags: vec![],
    }
}

fn ok(at: i64, free: u64) -> NewHealthCheck {
    NewHealthCheck {
        at,
        ok: true,
        duration_ms: 12,
        error: None,
        reading: Some(json!({"work_dir": {"free_bytes": free}})),
    }
}

fn failed(at: i64, why: &str) -> NewHealthCheck {
    NewHealthCheck {
        at,
        ok: false,
        duration_ms: 3,
        error: Some(why.into()),
        reading: None,
    }
}

async fn server_health_keeps_the_latest_state_and_a_bounded_history(t: Ctx) {
    let s = &t.store;
    let web1 = s.create_server(&server("web1"), 1).await.unwrap();
    let web2 = s.create_server(&server("web2"), 1).await.unwrap();
    assert_eq!(web1.health, HealthState::default());

    assert!(s
        .record_health_check(web1.id, &ok(100, 5), 3)
        .await
        .unwrap());
    let w = s.get_server_by_name("web1").await.unwrap().unwrap();
    assert_eq!(
        w.health,
        HealthState {
            checked_at: Some(100),
            contact_at: Some(100),
            failures: 0,
            error: None,
            reading: Some(json!({"work_dir": {"free_bytes": 5}})),
            reading_at: Some(100),
        }
    );

    // Failures count up and keep the last reading (its time says how old it is).
    s.record_health_check(web1.id, &failed(200, "connection refused"), 3)
        .await
        .unwrap();
    s.record_health_check(web1.id, &failed(300, "timed out"), 3)
        .await
        .unwrap();
    let w = s.get_server_by_name("web1").await.unwrap().unwrap();
    assert_eq!(
        (
            w.health.checked_at,
            w.health.contact_at,
            w.health.failures,
            w.health.error.as_deref(),
            w.health.reading_at
        ),
        (Some(300), Some(100), 2, Some("timed out"), Some(100))
    );
    assert!(w.health.reading.is_some());

    // A contact without a reading (no runner on the host yet) resets the failures and says why
    // there is no new reading; the old one stays.
    let no_runner = NewHealthCheck {
        error: Some("runner not deployed".into()),
        reading: None,
        ..ok(400, 0)
    };
    s.record_health_check(web1.id, &no_runner, 3).await.unwrap();
    let w = s.get_server_by_name("web1").await.unwrap().unwrap();
    assert_eq!(
        (
            w.health.contact_at,
            w.health.failures,
            w.health.error.as_deref(),
            w.health.reading_at
        ),
        (Some(400), 0, Some("runner not deployed"), Some(100))
    );
    s.record_health_check(web1.id, &ok(500, 9), 3)
        .await
        .unwrap();
    s.record_health_check(web2.id, &ok(510, 1), 3)
        .await
        .unwrap();

    // The history holds the last 3 checks of web1, newest first; web2's are its own.
    let history = s.list_health_checks(web1.id, 10).await.unwrap();
    let ats: Vec<(i64, bool)> = history.iter().map(|h| (h.at, h.ok)).collect();
    assert_eq!(ats, [(500, true), (400, true), (300, false)]);
    assert_eq!(history[2].error.as_deref(), Some("timed out"));
    assert_eq!(history[2].duration_ms, 3);
    assert_eq!(
        history[0].reading,
        Some(json!({"work_dir": {"free_bytes": 9}}))
    );
    assert_eq!(history[1].reading, None);
    assert_eq!(s.list_health_checks(web1.id, 1).await.unwrap().len(), 1);
    assert_eq!(s.list_health_checks(web2.id, 10).await.unwrap().len(), 1);

    // Bad input changes nothing.
    match s.record_health_check(web1.id, &ok(600, 1), 0).await {
        Err(StoreError::Invalid(m)) => assert!(m.starts_with("keep:"), "{m}"),
        other => panic!("expected Invalid(keep), got {other:?}"),
    }
    let negative = NewHealthCheck {
        duration_ms: -1,
        ..ok(600, 1)
    };
    match s.record_health_check(web1.id, &negative, 3).await {
        Err(StoreError::Invalid(m)) => assert!(m.starts_with("duration_ms:"), "{m}"),
        other => panic!("expected Invalid(duration_ms), got {other:?}"),
    }
    assert_eq!(s.list_health_checks(web1.id, 10).await.unwrap()[0].at, 500);

    // The history goes with its server.
    assert!(s.delete_server(web1.id).await.unwrap());
    assert!(s.list_health_checks(web1.id, 10).await.unwrap().is_empty());
}

async fn server_health_ignores_an_older_check_and_a_removed_server(t: Ctx) {
    let s = &t.store;
    let web = s.create_server(&server("web"), 1).await.unwrap();
    s.record_health_check(web.id, &failed(200, "refused"), 5)
        .await
        .unwrap();
    // A check that began earlier but ends later (a post-run check overtaken by the interval's)
    // is history only: the row keeps the newer state.
    s.record_health_check(web.id, &ok(150, 1), 5).await.unwrap();
    let w = s.get_server_by_name("web").await.unwrap().unwrap();
    assert_eq!(
        (w.health.checked_at, w.health.contact_at, w.health.failures),
        (Some(200), None, 1)
    );
    assert_eq!(s.list_health_checks(web.id, 10).await.unwrap().len(), 2);
    assert!(!s
        .record_health_check(web.id + 1000, &ok(300, 1), 5)
        .await
        .unwrap());
}
