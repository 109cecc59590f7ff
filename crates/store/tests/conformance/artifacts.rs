//! Runner artifacts: registration at start (one row per build, refreshed when seen again), the
//! listing, bad input refused, and a server's detected platform.

use cronium_store::{NewArtifact, NewServer, ServerPlatform, StoreError};

use crate::harness::Ctx;

conformance!(artifacts_register_once_per_build_and_refresh);
conformance!(artifacts_refuse_bad_input_naming_the_field);
conformance!(server_platform_is_stored_once_and_on_change);

fn artifact(arch: &str, sha_digit: char, version: &str) -> NewArtifact {
    NewArtifact {
        version: version.into(),
        os: "linux".into(),
        arch: arch.into(),
        sha256: std::iter::repeat_n(sha_digit, 64).collect(),
        size: 2_000_000,
        path: format!("/opt/cronium/runner/linux-{arch}/cronium-runner"),
    }
}

async fn artifacts_register_once_per_build_and_refresh(t: Ctx) {
    let s = &t.store;
    assert!(s.list_artifacts().await.unwrap().is_empty());
    let x = s
        .register_artifact(&artifact("x86_64", 'a', "0.1.0"), 100)
        .await
        .unwrap();
    assert_eq!((x.added_at, x.seen_at, x.size), (100, 100, 2_000_000));
    s.register_artifact(&artifact("aarch64", 'b', "0.1.0"), 100)
        .await
        .unwrap();
    // The same build found again (moved): one row, path and seen_at refreshed, added_at kept.
    let mut moved = artifact("x86_64", 'a', "0.1.0");
    moved.path = "/srv/runner/cronium-runner".into();
    let again = s.register_artifact(&moved, 200).await.unwrap();
    assert_eq!(again.id, x.id);
    assert_eq!((again.added_at, again.seen_at), (100, 200));
    assert_eq!(again.path, "/srv/runner/cronium-runner");
    // A new build of the same arch is a new row, listed before the older one.
    s.register_artifact(&artifact("x86_64", 'c', "0.2.0"), 300)
        .await
        .unwrap();
    let all = s.list_artifacts().await.unwrap();
    let seen: Vec<(&str, &str)> = all
        .iter()
        .map(|a| (a.arch.as_str(), a.version.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("aarch64", "0.1.0"),
            ("x86_64", "0.2.0"),
            ("x86_64", "0.1.0")
        ]
    );
}

async fn artifacts_refuse_bad_input_naming_the_field(t: Ctx) {
    let s = &t.store;
    let cases: Vec<(NewArtifact, &str)> = vec![
        (
            NewArtifact {
                version: String::new(),
                ..artifact("x86_64", 'a', "x")
            },
            "version:",
        ),
        (
            NewArtifact {
                arch: "x86 64".into(),
                ..artifact("x86_64", 'a', "0.1.0")
            },
            "arch:",
        ),
        (
            NewArtifact {
                sha256: "abc".into(),
                ..artifact("x86_64", 'a', "0.1.0")
            },
            "sha256:",
        ),
        (
            NewArtifact {
                size: 0,
                ..artifact("x86_64", 'a', "0.1.0")
            },
            "size:",
        ),
        (
            NewArtifact {
                path: String::new(),
                ..artifact("x86_64", 'a', "0.1.0")
            },
            "path:",
        ),
    ];
    for (a, field) in cases {
        match s.register_artifact(&a, 1).await {
            Err(StoreError::Invalid(m)) => assert!(m.starts_with(field), "{field}: {m}"),
            other => panic!("{field}: expected Invalid, got {other:?}"),
        }
    }
    assert!(s.list_artifacts().await.unwrap().is_empty());
}

async fn server_platform_is_stored_once_and_on_change(t: Ctx) {
    let s = &t.store;
    let srv = s
        .create_server(
            &NewServer {
                name: "web1".into(),
                host: "127.0.0.1".into(),
                port: 22,
                username: "deploy".into(),
                auth_kind: "key".into(),
                credential: vec![1],
                host_key: None,
                tags: vec![],
            },
            1,
        )
        .await
        .unwrap();
    assert_eq!(srv.platform, None);
    assert!(s
        .set_server_platform(srv.id, "linux", "x86_64", 10)
        .await
        .unwrap());
    // The same again: nothing written, the first detection's time kept.
    assert!(!s
        .set_server_platform(srv.id, "linux", "x86_64", 20)
        .await
        .unwrap());
    let row = s.get_server_by_name("web1").await.unwrap().unwrap();
    assert_eq!(
        row.platform,
        Some(ServerPlatform {
            os: "linux".into(),
            arch: "x86_64".into(),
            detected_at: 10
        })
    );
    assert_eq!(row.updated_at, 1, "bookkeeping, not an operator's change");
    assert!(s
        .set_server_platform(srv.id, "linux", "aarch64", 30)
        .await
        .unwrap());
    let row = s.get_server_by_name("web1").await.unwrap().unwrap();
    assert_eq!(row.platform.unwrap().arch, "aarch64");
    match s.set_server_platform(srv.id, "linux", "", 40).await {
        Err(StoreError::Invalid(m)) => assert!(m.starts_with("arch:"), "{m}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
}
