//! Users and API tokens (hashes only).

use cronium_store::StoreError;

use crate::harness::Ctx;

conformance!(users_and_tokens);

async fn users_and_tokens(t: Ctx) {
    let s = &t.store;
    assert_eq!(s.count_users().await.unwrap(), 0);
    let admin = s
        .create_user("admin", "argon2$hash", "admin", 1)
        .await
        .unwrap();
    assert_eq!(s.count_users().await.unwrap(), 1);
    assert!(matches!(
        s.create_user("admin", "h", "viewer", 2).await,
        Err(StoreError::Conflict(f)) if f == "username"
    ));
    assert_eq!(s.count_users().await.unwrap(), 1);
    let u = s.get_user_by_name("admin").await.unwrap().unwrap();
    assert_eq!(
        (u.id, u.password_hash.as_str(), u.role.as_str()),
        (admin, "argon2$hash", "admin")
    );
    assert_eq!(s.get_user(admin).await.unwrap(), Some(u));
    assert_eq!(s.get_user_by_name("nobody").await.unwrap(), None);

    let tok = s.create_token("ci", "sha256:aaa", admin, 10).await.unwrap();
    assert_eq!(
        (
            tok.name.as_str(),
            tok.user_id,
            tok.created_at,
            tok.last_used_at,
            tok.revoked_at
        ),
        ("ci", admin, 10, None, None)
    );
    assert!(matches!(
        s.create_token("again", "sha256:aaa", admin, 11).await,
        Err(StoreError::Conflict(f)) if f == "token_hash"
    ));
    assert!(matches!(
        s.create_token("orphan", "sha256:bbb", admin + 100, 11).await,
        Err(StoreError::Invalid(m)) if m.starts_with("user_id")
    ));

    let found = s.find_token("sha256:aaa", 100_000).await.unwrap().unwrap();
    assert_eq!((found.id, found.last_used_at), (tok.id, Some(100_000)));
    assert_eq!(
        s.list_tokens().await.unwrap()[0].last_used_at,
        Some(100_000)
    );
    // Used again soon after: still found; last_used_at kept at minute resolution.
    assert_eq!(
        s.find_token("sha256:aaa", 100_500)
            .await
            .unwrap()
            .unwrap()
            .last_used_at,
        Some(100_000)
    );
    assert_eq!(
        s.find_token("sha256:aaa", 200_000)
            .await
            .unwrap()
            .unwrap()
            .last_used_at,
        Some(200_000)
    );
    assert_eq!(s.find_token("sha256:zzz", 1).await.unwrap(), None);

    let second = s
        .create_token("cli", "sha256:ccc", admin, 20)
        .await
        .unwrap();
    assert!(s.revoke_token(tok.id, 300_000).await.unwrap());
    assert!(!s.revoke_token(tok.id, 300_001).await.unwrap());
    assert!(!s.revoke_token(second.id + 100, 1).await.unwrap());
    assert_eq!(
        s.find_token("sha256:aaa", 300_002).await.unwrap(),
        None,
        "revoked tokens are not found"
    );
    let list = s.list_tokens().await.unwrap();
    assert_eq!(
        list.iter()
            .map(|t| (t.id, t.revoked_at))
            .collect::<Vec<_>>(),
        [(tok.id, Some(300_000)), (second.id, None)]
    );
    assert!(s.find_token("sha256:ccc", 1).await.unwrap().is_some());
}
