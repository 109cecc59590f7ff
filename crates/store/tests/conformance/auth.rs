//! Users, API tokens (hashes only; owner, narrowed role, expiry, cheap last use) and the audit
//! log (written in the transaction of a user's or token's change, filtered and keyset paged,
//! append-only, pruned by age).

use cronium_model::Role;
use cronium_store::{AuditFilter, NewAudit, NewToken, StoreError, UserUpdate};
use serde_json::json;

use crate::harness::Ctx;

conformance!(
    users_and_tokens,
    disabled_users_and_expired_tokens_stop_at_once,
    audit_log_filters_pages_and_prunes,
);

fn entry(action: &str, target: &str) -> NewAudit {
    NewAudit {
        at: 5,
        actor: "system".into(),
        action: action.into(),
        target: target.into(),
        outcome: "ok".into(),
        ..Default::default()
    }
}

fn token<'a>(name: &'a str, hash: &'a str, user_id: i64) -> NewToken<'a> {
    NewToken {
        name,
        token_hash: hash,
        user_id,
        role: None,
        expires_at: None,
    }
}

async fn users_and_tokens(t: Ctx) {
    let s = &t.store;
    assert_eq!(s.count_users().await.unwrap(), 0);
    let admin = s
        .create_user("admin", "argon2$hash", Role::Admin, 1, |u| {
            entry("user.add", &format!("user {}", u.username))
        })
        .await
        .unwrap();
    assert_eq!(s.count_users().await.unwrap(), 1);
    assert!(matches!(
        s.create_user("admin", "h", Role::Viewer, 2, |_| entry("user.add", "x")).await,
        Err(StoreError::Conflict(f)) if f == "username"
    ));
    // The refused insert wrote no audit entry either: one transaction.
    let log = s
        .list_audit(&AuditFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].entry.target, "user admin");
    assert_eq!(s.count_users().await.unwrap(), 1);
    let u = s.get_user_by_name("admin").await.unwrap().unwrap();
    assert_eq!(
        (u.id, u.password_hash.as_str(), u.role, u.disabled_at),
        (admin.id, "argon2$hash", Role::Admin, None)
    );
    assert_eq!(s.get_user(admin.id).await.unwrap(), Some(u));
    assert_eq!(s.get_user_by_name("nobody").await.unwrap(), None);
    let viewer = s
        .create_user("vera", "h2", Role::Viewer, 3, |_| {
            entry("user.add", "user vera")
        })
        .await
        .unwrap();
    assert_eq!(
        s.list_users()
            .await
            .unwrap()
            .iter()
            .map(|u| (u.username.as_str(), u.role))
            .collect::<Vec<_>>(),
        [("admin", Role::Admin), ("vera", Role::Viewer)]
    );

    let tok = s
        .create_token(&token("ci", "sha256:aaa", admin.id), 10, |t| {
            entry("token.create", &format!("token {}", t.id))
        })
        .await
        .unwrap();
    assert_eq!(
        (
            tok.name.as_str(),
            tok.user_id,
            tok.username.as_str(),
            tok.role,
            tok.created_at,
            tok.last_used_at,
            tok.revoked_at
        ),
        ("ci", admin.id, "admin", None, 10, None, None)
    );
    assert!(matches!(
        s.create_token(&token("again", "sha256:aaa", admin.id), 11, |_| entry("token.create", "x")).await,
        Err(StoreError::Conflict(f)) if f == "token_hash"
    ));
    assert!(matches!(
        s.create_token(&token("orphan", "sha256:bbb", admin.id + 100), 11, |_| entry("token.create", "x")).await,
        Err(StoreError::Invalid(m)) if m.starts_with("user_id")
    ));
    let narrowed = s
        .create_token(
            &NewToken {
                role: Some(Role::Viewer),
                expires_at: Some(1_000_000),
                ..token("ro", "sha256:ddd", admin.id)
            },
            12,
            |_| entry("token.create", "token ro"),
        )
        .await
        .unwrap();
    assert_eq!(
        (narrowed.role, narrowed.expires_at),
        (Some(Role::Viewer), Some(1_000_000))
    );

    let found = s.find_token("sha256:aaa", 100_000).await.unwrap().unwrap();
    assert_eq!(
        (found.token.id, found.token.last_used_at, found.user_role),
        (tok.id, Some(100_000), Role::Admin)
    );
    assert_eq!(
        s.list_tokens(None).await.unwrap()[0].last_used_at,
        Some(100_000)
    );
    // Used again soon after: still found; last_used_at kept at minute resolution.
    let again = s.find_token("sha256:aaa", 100_500).await.unwrap().unwrap();
    assert_eq!(again.token.last_used_at, Some(100_000));
    let later = s.find_token("sha256:aaa", 200_000).await.unwrap().unwrap();
    assert_eq!(later.token.last_used_at, Some(200_000));
    assert_eq!(s.find_token("sha256:zzz", 1).await.unwrap(), None);

    let mine = s
        .create_token(&token("cli", "sha256:ccc", viewer.id), 20, |_| {
            entry("token.create", "token cli")
        })
        .await
        .unwrap();
    // Only its owner's tokens for a user's view.
    assert_eq!(
        s.list_tokens(Some(viewer.id))
            .await
            .unwrap()
            .iter()
            .map(|t| t.id)
            .collect::<Vec<_>>(),
        [mine.id]
    );
    // Revoking someone else's token as a user: nothing happens, nothing is logged.
    let before = s
        .list_audit(&AuditFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .len();
    assert_eq!(
        s.revoke_token(tok.id, Some(viewer.id), 1, |_| entry("token.revoke", "x"))
            .await
            .unwrap(),
        None
    );
    let revoked = s
        .revoke_token(tok.id, None, 300_000, |t| {
            entry("token.revoke", &format!("token {}", t.id))
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked.revoked_at, Some(300_000));
    assert_eq!(
        s.revoke_token(tok.id, None, 300_001, |_| entry("token.revoke", "x"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.list_audit(&AuditFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .len(),
        before + 1
    );
    assert_eq!(
        s.find_token("sha256:aaa", 300_002).await.unwrap(),
        None,
        "revoked tokens are not found"
    );
    let list = s.list_tokens(None).await.unwrap();
    assert_eq!(
        list.iter()
            .map(|t| (t.id, t.revoked_at))
            .collect::<Vec<_>>(),
        [
            (tok.id, Some(300_000)),
            (narrowed.id, None),
            (mine.id, None)
        ]
    );
    assert!(s.find_token("sha256:ccc", 1).await.unwrap().is_some());
}

async fn disabled_users_and_expired_tokens_stop_at_once(t: Ctx) {
    let s = &t.store;
    let op = s
        .create_user("olga", "h", Role::Operator, 1, |_| {
            entry("user.add", "user olga")
        })
        .await
        .unwrap();
    s.create_token(
        &NewToken {
            expires_at: Some(50_000),
            ..token("short", "sha256:exp", op.id)
        },
        1,
        |_| entry("token.create", "t"),
    )
    .await
    .unwrap();
    s.create_token(&token("long", "sha256:long", op.id), 1, |_| {
        entry("token.create", "t")
    })
    .await
    .unwrap();
    assert!(s.find_token("sha256:exp", 49_999).await.unwrap().is_some());
    assert_eq!(s.find_token("sha256:exp", 50_000).await.unwrap(), None);
    s.create_session(
        &cronium_store::NewSession {
            id: "sess",
            secret_hash: "x",
            user_id: op.id,
            csrf_token: "c",
            expires_at: 1_000_000,
        },
        None,
        2,
    )
    .await
    .unwrap();
    assert_eq!(
        s.get_session("sess").await.unwrap().unwrap().role,
        Role::Operator
    );

    // A role change is seen by the next authentication.
    let after = s
        .update_user(
            "olga",
            &UserUpdate {
                role: Some(Role::Viewer),
                ..Default::default()
            },
            3,
            |b, a| NewAudit {
                before: Some(json!({"role": b.role})),
                after: Some(json!({"role": a.role})),
                ..entry("user.set_role", "user olga")
            },
        )
        .await
        .unwrap();
    assert_eq!(after.role, Role::Viewer);
    assert_eq!(
        s.find_token("sha256:long", 4)
            .await
            .unwrap()
            .unwrap()
            .user_role,
        Role::Viewer
    );
    let log = s
        .list_audit(&AuditFilter {
            action: Some("user.set_role".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        (log[0].entry.before.clone(), log[0].entry.after.clone()),
        (
            Some(json!({"role": "operator"})),
            Some(json!({"role": "viewer"}))
        )
    );

    // Disabled: its tokens and sessions stop at the next request; sessions are gone.
    let off = s
        .update_user(
            "olga",
            &UserUpdate {
                disabled: Some(true),
                ..Default::default()
            },
            5,
            |_, _| entry("user.disable", "user olga"),
        )
        .await
        .unwrap();
    assert_eq!(off.disabled_at, Some(5));
    assert_eq!(s.find_token("sha256:long", 6).await.unwrap(), None);
    assert_eq!(s.get_session("sess").await.unwrap(), None);
    // Enabled again: the tokens work again (they were not revoked), the sessions do not.
    s.update_user(
        "olga",
        &UserUpdate {
            disabled: Some(false),
            ..Default::default()
        },
        7,
        |_, _| entry("user.enable", "user olga"),
    )
    .await
    .unwrap();
    assert!(s.find_token("sha256:long", 8).await.unwrap().is_some());

    // A new password ends every session of the user.
    for id in ["s1", "s2"] {
        s.create_session(
            &cronium_store::NewSession {
                id,
                secret_hash: "x",
                user_id: op.id,
                csrf_token: "c",
                expires_at: 1_000_000,
            },
            None,
            9,
        )
        .await
        .unwrap();
    }
    let pw = s
        .update_user(
            "olga",
            &UserUpdate {
                password_hash: Some("new-hash".into()),
                ..Default::default()
            },
            10,
            |_, _| entry("user.passwd", "user olga"),
        )
        .await
        .unwrap();
    assert_eq!(pw.password_hash, "new-hash");
    assert_eq!(s.get_session("s1").await.unwrap(), None);
    assert_eq!(s.get_session("s2").await.unwrap(), None);
    assert!(matches!(
        s.update_user("nobody", &UserUpdate::default(), 1, |_, _| entry("x", "y"))
            .await,
        Err(StoreError::NotFound(_))
    ));
    s.record_login(op.id, 11).await.unwrap();
    assert_eq!(
        s.get_user(op.id).await.unwrap().unwrap().last_login_at,
        Some(11)
    );
}

async fn audit_log_filters_pages_and_prunes(t: Ctx) {
    let s = &t.store;
    let mut ids = vec![];
    for i in 0..25i64 {
        let (actor, action) = match i % 3 {
            0 => ("alice", "event.apply"),
            1 => ("bob", "job.run"),
            _ => ("alice", "event.delete"),
        };
        ids.push(
            s.insert_audit(&NewAudit {
                at: 1_000 + i,
                actor_id: Some(1),
                actor: actor.into(),
                token_id: Some(7),
                source: Some("127.0.0.1".into()),
                action: action.into(),
                target: format!("event e{i}"),
                before: (i % 2 == 0).then(|| json!({"version": i})),
                after: Some(json!({"version": i + 1})),
                outcome: "ok".into(),
                ..Default::default()
            })
            .await
            .unwrap(),
        );
    }
    let page = |before_id: Option<i64>| AuditFilter {
        before_id,
        limit: 10,
        ..Default::default()
    };
    // Keyset pages, newest first, without gaps or repeats.
    let mut seen = vec![];
    let mut cursor = None;
    loop {
        let rows = s.list_audit(&page(cursor)).await.unwrap();
        if rows.is_empty() {
            break;
        }
        cursor = rows.last().map(|r| r.id);
        seen.extend(rows.iter().map(|r| r.id));
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
    let first = &s.list_audit(&page(None)).await.unwrap()[0];
    assert_eq!(
        (
            first.entry.actor.as_str(),
            first.entry.token_id,
            first.entry.source.as_deref(),
            first.entry.before.clone(),
            first.entry.after.clone()
        ),
        (
            "alice",
            Some(7),
            Some("127.0.0.1"),
            Some(json!({"version": 24})),
            Some(json!({"version": 25}))
        )
    );

    let count = |f: AuditFilter| async move { s.list_audit(&f).await.unwrap().len() };
    let all = || AuditFilter {
        limit: 1000,
        ..Default::default()
    };
    assert_eq!(
        count(AuditFilter {
            actor: Some("bob".into()),
            ..all()
        })
        .await,
        8
    );
    assert_eq!(
        count(AuditFilter {
            action: Some("event.".into()),
            ..all()
        })
        .await,
        17
    );
    assert_eq!(
        count(AuditFilter {
            action: Some("event.delete".into()),
            actor: Some("alice".into()),
            ..all()
        })
        .await,
        8
    );
    assert_eq!(
        count(AuditFilter {
            since: Some(1_020),
            ..all()
        })
        .await,
        5
    );

    // Append-only: the database itself refuses to rewrite an entry.
    let raw = sqlx::AnyPool::connect(&t.url).await.unwrap();
    let forged = sqlx::query("UPDATE audit_log SET outcome = 'forged'")
        .execute(&raw)
        .await;
    assert!(forged.is_err(), "an audit entry was rewritten");
    raw.close().await;
    assert_eq!(count(AuditFilter { ..all() }).await, 25);

    // Retention: the oldest go, step by step.
    assert_eq!(s.count_audit_before(1_010).await.unwrap(), 10);
    assert_eq!(s.prune_audit_step(1_010, 4).await.unwrap(), 4);
    assert_eq!(s.prune_audit_step(1_010, 100).await.unwrap(), 6);
    assert_eq!(s.prune_audit_step(1_010, 100).await.unwrap(), 0);
    assert_eq!(count(all()).await, 15);
}
