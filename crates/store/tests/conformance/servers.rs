//! SSH servers: registration, host key pinning and acceptance, deployment history.

use cronium_store::{NewDeployment, NewServer, RunnerState, StoreError};

use crate::harness::Ctx;

conformance!(servers_register_pin_and_deploy);
conformance!(servers_remember_the_verified_runner);
conformance!(servers_credential_change_is_fenced_by_the_pinned_key);

fn server(name: &str) -> NewServer {
    NewServer {
        name: name.into(),
        host: "127.0.0.1".into(),
        port: 2222,
        username: "deploy".into(),
        auth_kind: "key".into(),
        credential: vec![1, 0, 255, 7],
        host_key: None,
        tags: vec!["web".into(), "eu".into()],
    }
}

fn deployment(outcome: &str, at: i64) -> NewDeployment {
    NewDeployment {
        version: "0.1.0".into(),
        sha256: "ab".repeat(32),
        outcome: outcome.into(),
        attempts: 1,
        duration_ms: 120,
        error: (outcome == "failed").then(|| "sftp: permission denied".into()),
        at,
    }
}

async fn servers_register_pin_and_deploy(t: Ctx) {
    let s = &t.store;
    let web1 = s.create_server(&server("web1"), 10).await.unwrap();
    assert_eq!(
        (web1.name.as_str(), web1.port, web1.auth_kind.as_str()),
        ("web1", 2222, "key")
    );
    assert_eq!(
        (web1.credential.clone(), web1.tags.clone()),
        (
            vec![1, 0, 255, 7],
            vec!["web".to_string(), "eu".to_string()]
        )
    );
    assert_eq!(
        (
            web1.host_key.clone(),
            web1.pending_host_key.clone(),
            web1.created_at
        ),
        (None, None, 10)
    );
    match s.create_server(&server("web1"), 11).await {
        Err(StoreError::Conflict(field)) => assert_eq!(field, "name"),
        other => panic!("expected Conflict(name), got {other:?}"),
    }
    assert!(matches!(
        s.create_server(&NewServer { port: 70_000, ..server("bad") }, 11).await,
        Err(StoreError::Invalid(m)) if m.starts_with("port")
    ));
    let web0 = s
        .create_server(
            &NewServer {
                host_key: Some("ssh-ed25519 AAAA0".into()),
                ..server("web0")
            },
            12,
        )
        .await
        .unwrap();
    let names: Vec<String> = s
        .list_servers()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["web0", "web1"]);
    assert_eq!(
        s.get_server_by_name("web0").await.unwrap(),
        Some(web0.clone())
    );
    assert_eq!(s.get_server_by_name("nope").await.unwrap(), None);

    // Trust on first use: the first key is pinned, a later one does not replace it.
    assert!(s
        .pin_host_key(web1.id, "ssh-ed25519 AAAA1", 20)
        .await
        .unwrap());
    assert!(!s
        .pin_host_key(web1.id, "ssh-ed25519 EVIL", 21)
        .await
        .unwrap());
    assert!(!s
        .pin_host_key(web0.id, "ssh-ed25519 EVIL", 21)
        .await
        .unwrap());
    let w = s.get_server_by_name("web1").await.unwrap().unwrap();
    assert_eq!(
        (w.host_key.as_deref(), w.updated_at),
        (Some("ssh-ed25519 AAAA1"), 20)
    );

    // A changed key waits for an operator, then replaces the pinned one.
    s.set_pending_host_key(web1.id, Some("ssh-ed25519 NEW"), 30)
        .await
        .unwrap();
    let w = s.get_server_by_name("web1").await.unwrap().unwrap();
    assert_eq!(
        (w.host_key.as_deref(), w.pending_host_key.as_deref()),
        (Some("ssh-ed25519 AAAA1"), Some("ssh-ed25519 NEW"))
    );
    s.accept_host_key(web1.id, "ssh-ed25519 NEW", 40)
        .await
        .unwrap();
    let w = s.get_server_by_name("web1").await.unwrap().unwrap();
    assert_eq!(
        (
            w.host_key.as_deref(),
            w.pending_host_key.as_deref(),
            w.updated_at
        ),
        (Some("ssh-ed25519 NEW"), None, 40)
    );

    s.record_deployment(web1.id, &deployment("failed", 50))
        .await
        .unwrap();
    s.record_deployment(web1.id, &deployment("deployed", 51))
        .await
        .unwrap();
    s.record_deployment(web0.id, &deployment("cached", 52))
        .await
        .unwrap();
    let history = s.list_deployments(web1.id, 10).await.unwrap();
    assert_eq!(
        history
            .iter()
            .map(|d| d.outcome.as_str())
            .collect::<Vec<_>>(),
        ["deployed", "failed"],
        "newest first"
    );
    assert_eq!(
        (
            history[1].error.as_deref(),
            history[1].duration_ms,
            history[1].at
        ),
        (Some("sftp: permission denied"), 120, 50)
    );
    assert_eq!(s.list_deployments(web1.id, 1).await.unwrap().len(), 1);

    assert!(s.delete_server(web1.id).await.unwrap());
    assert!(!s.delete_server(web1.id).await.unwrap());
    assert_eq!(s.get_server_by_name("web1").await.unwrap(), None);
    assert!(
        s.list_deployments(web1.id, 10).await.unwrap().is_empty(),
        "history goes with the server"
    );
    assert_eq!(s.list_deployments(web0.id, 10).await.unwrap().len(), 1);
    // The name is free again.
    s.create_server(&server("web1"), 60).await.unwrap();
}

async fn servers_remember_the_verified_runner(t: Ctx) {
    let s = &t.store;
    let web = s.create_server(&server("web"), 10).await.unwrap();
    assert_eq!(web.runner, None, "nothing known at registration");
    let state = RunnerState {
        path: ".cache/cronium/cronium-runner-0.1.0-abcdef01".into(),
        sha256: "ab".repeat(32),
        verified_at: 1_795_000_000_123,
    };
    s.set_runner_state(web.id, Some(&state)).await.unwrap();
    let w = s.get_server_by_name("web").await.unwrap().unwrap();
    assert_eq!(w.runner.as_ref(), Some(&state));
    assert_eq!(
        w.updated_at, 10,
        "agent bookkeeping is not an operator change"
    );
    assert_eq!(
        s.list_servers().await.unwrap()[0].runner.as_ref(),
        Some(&state)
    );

    // Bad input changes nothing.
    let empty = RunnerState {
        path: String::new(),
        ..state.clone()
    };
    assert!(matches!(
        s.set_runner_state(web.id, Some(&empty)).await,
        Err(StoreError::Invalid(m)) if m.starts_with("runner.path")
    ));
    let w = s.get_server_by_name("web").await.unwrap().unwrap();
    assert_eq!(w.runner.as_ref(), Some(&state));

    // An error forgets it.
    s.set_runner_state(web.id, None).await.unwrap();
    let w = s.get_server_by_name("web").await.unwrap().unwrap();
    assert_eq!(w.runner, None);

    // Accepting a new host key (maybe a new machine) forgets it too.
    s.set_runner_state(web.id, Some(&state)).await.unwrap();
    s.accept_host_key(web.id, "ssh-ed25519 NEW", 20)
        .await
        .unwrap();
    let w = s.get_server_by_name("web").await.unwrap().unwrap();
    assert_eq!(
        (w.runner, w.host_key.as_deref()),
        (None, Some("ssh-ed25519 NEW"))
    );
}

async fn servers_credential_change_is_fenced_by_the_pinned_key(t: Ctx) {
    let s = &t.store;
    let web = s.create_server(&server("web"), 10).await.unwrap();
    // Nothing pinned: the proof's key is pinned with the new credential.
    assert!(s
        .set_server_credential(web.id, "password", &[9, 9], None, "ssh-ed25519 SEEN", 20)
        .await
        .unwrap());
    let w = s.get_server_by_name("web").await.unwrap().unwrap();
    assert_eq!(
        (
            w.auth_kind.as_str(),
            w.credential.clone(),
            w.host_key.as_deref(),
            w.updated_at
        ),
        ("password", vec![9, 9], Some("ssh-ed25519 SEEN"), 20)
    );
    // Proven against a key that is no longer the pinned one (or against none, now that one
    // is pinned): nothing changes.
    for expected in [Some("ssh-ed25519 OLD"), None] {
        assert!(!s
            .set_server_credential(web.id, "key", &[1], expected, "ssh-ed25519 OLD", 30)
            .await
            .unwrap());
    }
    // Proven against the pinned key: replaced, the pinned key kept.
    assert!(s
        .set_server_credential(
            web.id,
            "key",
            &[7],
            Some("ssh-ed25519 SEEN"),
            "ssh-ed25519 X",
            40
        )
        .await
        .unwrap());
    let w = s.get_server_by_name("web").await.unwrap().unwrap();
    assert_eq!(
        (
            w.auth_kind.as_str(),
            w.credential.clone(),
            w.host_key.as_deref()
        ),
        ("key", vec![7], Some("ssh-ed25519 SEEN"))
    );
}
