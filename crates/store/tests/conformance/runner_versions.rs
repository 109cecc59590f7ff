//! Runner versions: pins (set, replaced, removed, listed; which one applies to a server) and
//! rollouts (created with their servers, one running rollout per server, per-server and
//! rollout status changes, running ones failed at start).

use cronium_store::{
    wanted_pin, NewRollout, NewRolloutServer, NewServer, PinScope, RolloutBusy, StoreError,
};

use crate::harness::Ctx;

conformance!(pins_are_set_replaced_listed_and_removed);
conformance!(a_server_pin_beats_the_newest_tag_pin);
conformance!(rollouts_keep_their_servers_and_refuse_an_overlap);
conformance!(running_rollouts_are_failed_at_start);

async fn server(t: &Ctx, name: &str, tags: &[&str]) -> i64 {
    t.store
        .create_server(
            &NewServer {
                name: name.into(),
                host: "127.0.0.1".into(),
                port: 22,
                username: "deploy".into(),
                auth_kind: "key".into(),
                credential: vec![1],
                host_key: None,
                tags: tags.iter().map(|t| t.to_string()).collect(),
            },
            1,
        )
        .await
        .unwrap()
        .id
}

async fn pins_are_set_replaced_listed_and_removed(t: Ctx) {
    let s = &t.store;
    let web1 = server(&t, "web1", &["web"]).await;
    assert!(s.list_pins().await.unwrap().is_empty());
    let p = s
        .set_pin(&PinScope::Server(web1), "0.1.0", "alice", 10)
        .await
        .unwrap();
    assert_eq!(p.scope, PinScope::Server(web1));
    assert_eq!(p.server_name.as_deref(), Some("web1"));
    assert_eq!(
        (p.version.as_str(), p.set_at, p.set_by.as_str()),
        ("0.1.0", 10, "alice")
    );
    s.set_pin(&PinScope::Tag("web".into()), "0.2.0", "bob", 20)
        .await
        .unwrap();
    // Replacing a pin leaves one row per scope.
    s.set_pin(&PinScope::Server(web1), "0.3.0", "rollout 1", 30)
        .await
        .unwrap();
    let all = s.list_pins().await.unwrap();
    let seen: Vec<(PinScope, &str)> = all
        .iter()
        .map(|p| (p.scope.clone(), p.version.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (PinScope::Server(web1), "0.3.0"),
            (PinScope::Tag("web".into()), "0.2.0")
        ]
    );
    // A bad version is refused naming the field, and nothing changes.
    let e = s
        .set_pin(&PinScope::Server(web1), "0.4 0; drop", "x", 40)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, StoreError::Invalid(m) if m.starts_with("version: ")),
        "{e}"
    );
    assert_eq!(s.list_pins().await.unwrap().len(), 2);
    assert!(s.remove_pin(&PinScope::Tag("web".into())).await.unwrap());
    assert!(!s.remove_pin(&PinScope::Tag("web".into())).await.unwrap());
    // A removed server takes its pin with it.
    s.delete_server(web1).await.unwrap();
    assert!(s.list_pins().await.unwrap().is_empty());
}

async fn a_server_pin_beats_the_newest_tag_pin(t: Ctx) {
    let s = &t.store;
    let a = server(&t, "a", &["web", "db"]).await;
    let b = server(&t, "b", &["web", "db"]).await;
    let tags = vec!["web".to_string(), "db".to_string()];
    s.set_pin(&PinScope::Tag("web".into()), "1.0.0", "x", 10)
        .await
        .unwrap();
    s.set_pin(&PinScope::Tag("db".into()), "2.0.0", "x", 20)
        .await
        .unwrap();
    let pins = s.list_pins().await.unwrap();
    assert_eq!(
        wanted_pin(&pins, b, &tags).map(|p| p.version.as_str()),
        Some("2.0.0"),
        "the newest tag pin"
    );
    // Set again later, web's pin is the newest.
    s.set_pin(&PinScope::Tag("web".into()), "1.1.0", "x", 30)
        .await
        .unwrap();
    s.set_pin(&PinScope::Server(a), "3.0.0", "x", 5)
        .await
        .unwrap();
    let pins = s.list_pins().await.unwrap();
    assert_eq!(
        wanted_pin(&pins, b, &tags).map(|p| p.version.as_str()),
        Some("1.1.0")
    );
    assert_eq!(
        wanted_pin(&pins, a, &tags).map(|p| p.version.as_str()),
        Some("3.0.0"),
        "its own pin, however old"
    );
    assert_eq!(wanted_pin(&pins, b, &[]), None, "no pin: the default");
}

fn rollout(servers: &[(i64, &str, i64)]) -> NewRollout {
    NewRollout {
        version: "0.2.0".into(),
        tag: Some("web".into()),
        batch: "2".into(),
        pause_ms: 1000,
        created_by: "alice".into(),
        servers: servers
            .iter()
            .map(|(id, name, batch)| NewRolloutServer {
                server_id: *id,
                server_name: name.to_string(),
                batch: *batch,
                previous_version: "0.1.0".into(),
                previous_pin: (*name == "b").then(|| "0.0.9".to_string()),
            })
            .collect(),
    }
}

async fn rollouts_keep_their_servers_and_refuse_an_overlap(t: Ctx) {
    let s = &t.store;
    let a = server(&t, "a", &["web"]).await;
    let b = server(&t, "b", &["web"]).await;
    let c = server(&t, "c", &[]).await;
    let r = s
        .create_rollout(&rollout(&[(b, "b", 1), (a, "a", 1)]), 100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (r.status.as_str(), r.created_at, r.finished_at),
        ("running", 100, None)
    );
    let servers = s.rollout_servers(r.id).await.unwrap();
    let seen: Vec<(&str, &str, Option<&str>)> = servers
        .iter()
        .map(|x| {
            (
                x.server_name.as_str(),
                x.status.as_str(),
                x.previous_pin.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [("a", "pending", None), ("b", "pending", Some("0.0.9"))]
    );
    // One running rollout per server: refused, naming the server and the rollout; nothing
    // written. Another server is fine.
    let busy = s
        .create_rollout(&rollout(&[(c, "c", 1), (a, "a", 1)]), 110)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        busy,
        RolloutBusy {
            server: "a".into(),
            rollout_id: r.id
        }
    );
    assert_eq!(s.list_rollouts(10).await.unwrap().len(), 1);
    let other = s
        .create_rollout(&rollout(&[(c, "c", 1)]), 120)
        .await
        .unwrap()
        .unwrap();
    // Per-server status, then the end.
    assert!(s
        .set_rollout_server(r.id, a, "upgraded", None, 130)
        .await
        .unwrap());
    assert!(s
        .set_rollout_server(r.id, b, "failed", Some("disk full"), 130)
        .await
        .unwrap());
    assert!(matches!(
        s.set_rollout_server(r.id, b, "weird", None, 130).await,
        Err(StoreError::Invalid(m)) if m.starts_with("status: ")
    ));
    assert!(s
        .set_rollout_status(r.id, "failed", Some("batch 1 failed"), 140)
        .await
        .unwrap());
    assert!(
        !s.set_rollout_status(r.id, "succeeded", None, 150)
            .await
            .unwrap(),
        "ended once"
    );
    let got = s.get_rollout(r.id).await.unwrap().unwrap();
    assert_eq!(
        (got.status.as_str(), got.error.as_deref(), got.finished_at),
        ("failed", Some("batch 1 failed"), Some(140))
    );
    let b_row = s
        .rollout_servers(r.id)
        .await
        .unwrap()
        .into_iter()
        .find(|x| x.server_id == b)
        .unwrap();
    assert_eq!(
        (
            b_row.status.as_str(),
            b_row.error.as_deref(),
            b_row.updated_at
        ),
        ("failed", Some("disk full"), 130)
    );
    // Ended: its servers may be in a new rollout; a rollback marks it.
    assert!(s
        .create_rollout(&rollout(&[(a, "a", 1)]), 160)
        .await
        .unwrap()
        .is_ok());
    assert!(s
        .set_rollout_status(r.id, "rolled_back", None, 170)
        .await
        .unwrap());
    let got = s.get_rollout(r.id).await.unwrap().unwrap();
    assert_eq!(
        (got.status.as_str(), got.rolled_back_at, got.finished_at),
        ("rolled_back", Some(170), Some(140))
    );
    assert!(
        !s.set_rollout_status(other.id, "rolled_back", None, 180)
            .await
            .unwrap(),
        "not while running"
    );
    let ids: Vec<i64> = s
        .list_rollouts(10)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    assert!(s.get_rollout(9999).await.unwrap().is_none());
}

async fn running_rollouts_are_failed_at_start(t: Ctx) {
    let s = &t.store;
    let a = server(&t, "a", &[]).await;
    let b = server(&t, "b", &[]).await;
    let r1 = s
        .create_rollout(&rollout(&[(a, "a", 1)]), 10)
        .await
        .unwrap()
        .unwrap();
    let r2 = s
        .create_rollout(&rollout(&[(b, "b", 1)]), 10)
        .await
        .unwrap()
        .unwrap();
    s.set_rollout_status(r2.id, "succeeded", None, 20)
        .await
        .unwrap();
    let failed = s
        .fail_running_rollouts("interrupted: restart", 30)
        .await
        .unwrap();
    assert_eq!(failed, vec![r1.id]);
    let got = s.get_rollout(r1.id).await.unwrap().unwrap();
    assert_eq!(
        (got.status.as_str(), got.error.as_deref(), got.finished_at),
        ("failed", Some("interrupted: restart"), Some(30))
    );
    assert_eq!(
        s.get_rollout(r2.id).await.unwrap().unwrap().status,
        "succeeded"
    );
    assert!(s
        .fail_running_rollouts("again", 40)
        .await
        .unwrap()
        .is_empty());
}
