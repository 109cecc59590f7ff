//! Agents: agent tokens (hash only, unique names, revocation) and the agent registry
//! (registration, re-registration, heartbeats fenced by worker, running jobs counted).

use cronium_store::{AgentRegistration, StoreError};

use crate::harness::{job, Ctx};

conformance!(
    agent_tokens_are_found_by_hash_until_revoked,
    agents_register_heartbeat_and_count_their_running_jobs,
);

async fn agent_tokens_are_found_by_hash_until_revoked(t: Ctx) {
    let s = &t.store;
    let a = s.create_agent_token("edge", "hash-a", 10).await.unwrap();
    assert_eq!((a.name.as_str(), a.revoked_at), ("edge", None));
    assert!(matches!(
        s.create_agent_token("edge", "hash-b", 11).await,
        Err(StoreError::Conflict(f)) if f == "name"
    ));
    assert!(matches!(
        s.create_agent_token(" ", "hash-c", 11).await,
        Err(StoreError::Invalid(m)) if m.starts_with("name:")
    ));
    s.create_agent_token("other", "hash-o", 12).await.unwrap();

    let found = s.find_agent_token("hash-a", 100).await.unwrap().unwrap();
    assert_eq!((found.id, found.last_used_at), (a.id, Some(100)));
    assert!(s.find_agent_token("hash-x", 100).await.unwrap().is_none());
    // An API token's hash is not an agent token.
    assert!(s.find_agent_token("", 100).await.unwrap().is_none());

    let revoked = s.revoke_agent_token("edge", 200).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(200));
    assert!(s.revoke_agent_token("edge", 201).await.unwrap().is_none());
    assert!(s.revoke_agent_token("nobody", 201).await.unwrap().is_none());
    assert!(s.find_agent_token("hash-a", 300).await.unwrap().is_none());
    assert!(s.find_agent_token("hash-o", 300).await.unwrap().is_some());
    let names: Vec<_> = s
        .list_agent_tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.name, t.revoked_at.is_some()))
        .collect();
    assert_eq!(names, [("edge".into(), true), ("other".into(), false)]);
}

async fn agents_register_heartbeat_and_count_their_running_jobs(t: Ctx) {
    let s = &t.store;
    let reg = |worker: &str| AgentRegistration {
        name: "edge-1".into(),
        worker: worker.into(),
        version: "0.1.0".into(),
        tags: vec!["gpu".into(), "eu".into()],
        capabilities: vec!["local".into(), "ssh".into()],
        concurrency: 4,
        embedded: false,
        token_id: None,
    };
    let a = s.register_agent(&reg("w1"), 1000).await.unwrap();
    assert_eq!(a.tags, ["gpu", "eu"]);
    assert_eq!(a.capabilities, ["local", "ssh"]);
    assert_eq!(
        (a.started_at, a.last_heartbeat_at, a.running_jobs),
        (1000, 1000, 0)
    );

    assert!(s.agent_heartbeat("edge-1", "w1", 2000).await.unwrap());
    assert!(!s.agent_heartbeat("edge-1", "w-other", 2000).await.unwrap());
    assert!(!s.agent_heartbeat("nobody", "w1", 2000).await.unwrap());

    // A running job under its worker's lease is counted; a queued one is not.
    s.enqueue(&job("a", 0), 0).await.unwrap();
    s.enqueue(&job("b", 0), 0).await.unwrap();
    s.claim("w1", 60_000, 0).await.unwrap().unwrap();
    let a = s.get_agent("edge-1").await.unwrap().unwrap();
    assert_eq!((a.last_heartbeat_at, a.running_jobs), (2000, 1));

    assert!(s.agent_stopped("edge-1", "w1", 3000).await.unwrap());
    assert_eq!(
        s.get_agent("edge-1").await.unwrap().unwrap().stopped_at,
        Some(3000)
    );
    // Started again (a new process, a new worker): the old worker's heartbeats are refused.
    let mut again = reg("w2");
    again.tags = vec!["eu".into()];
    let a = s.register_agent(&again, 4000).await.unwrap();
    assert_eq!(
        (a.worker.as_str(), a.stopped_at, a.running_jobs),
        ("w2", None, 0)
    );
    assert_eq!(a.tags, ["eu"]);
    assert!(!s.agent_heartbeat("edge-1", "w1", 5000).await.unwrap());
    s.register_agent(
        &AgentRegistration {
            name: "server-a".into(),
            embedded: true,
            ..reg("w3")
        },
        4000,
    )
    .await
    .unwrap();
    let all: Vec<_> = s
        .list_agents()
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.name, a.embedded))
        .collect();
    assert_eq!(all, [("edge-1".into(), false), ("server-a".into(), true)]);
}
