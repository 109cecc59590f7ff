//! Routing: a claim takes only the jobs its claimant can run (every `agent_tags` among its
//! tags, the job's capability among its capabilities); jobs without tags are claimed as
//! before, by anyone with the capability.

use cronium_store::{Capability, Claimant, NewJob, Routing, StoreError};

use crate::harness::{job, Ctx};

conformance!(
    a_claim_takes_only_jobs_whose_tags_and_capability_the_claimant_has,
    untagged_jobs_are_claimed_as_before,
    bad_agent_tags_are_refused_naming_the_index,
    a_batch_claim_filters_as_a_single_claim_does,
);

fn routed(name: &str, run_at: i64, capability: Capability, tags: &[&str]) -> NewJob {
    NewJob {
        routing: Routing {
            capability,
            agent_tags: tags.iter().map(|t| t.to_string()).collect(),
        },
        ..job(name, run_at)
    }
}

fn claimant(tags: &[&str], capabilities: &[Capability]) -> Claimant {
    Claimant {
        tags: tags.iter().map(|t| t.to_string()).collect(),
        capabilities: capabilities.to_vec(),
    }
}

async fn a_claim_takes_only_jobs_whose_tags_and_capability_the_claimant_has(t: Ctx) {
    let s = &t.store;
    let gpu = s
        .enqueue(&routed("gpu", 0, Capability::Local, &["gpu", "eu"]), 0)
        .await
        .unwrap();
    // Kept sorted, without repeats.
    assert_eq!(gpu.agent_tags, ["eu", "gpu"]);
    assert_eq!(gpu.capability, Some(Capability::Local));
    let eu = s
        .enqueue(&routed("eu", 1, Capability::Local, &["eu", "eu"]), 0)
        .await
        .unwrap();
    assert_eq!(eu.agent_tags, ["eu"]);
    let container = s
        .enqueue(&routed("box", 2, Capability::Container, &[]), 0)
        .await
        .unwrap();
    assert!(container.agent_tags.is_empty());
    let ssh_eu = s
        .enqueue(&routed("fan", 3, Capability::Ssh, &["eu"]), 0)
        .await
        .unwrap();
    let plain = s.enqueue(&job("plain", 4), 0).await.unwrap();

    // An agent tagged eu (and more) that runs local jobs only: the eu job, then the untagged
    // one; never the gpu job (a tag it lacks), the container job nor the SSH job.
    let eu_local = claimant(&["eu", "ssd"], &[Capability::Local]);
    let ids = |v: &[Option<cronium_store::JobRow>]| -> Vec<Option<i64>> {
        v.iter().map(|j| j.as_ref().map(|j| j.id)).collect()
    };
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(s.claim_as("eu-local", &eu_local, 60_000, 10).await.unwrap());
    }
    assert_eq!(ids(&got), [Some(eu.id), Some(plain.id), None]);

    // Without a tag (the embedded agent): the container job, not the tagged ones.
    let embedded = claimant(
        &[],
        &[Capability::Local, Capability::Container, Capability::Ssh],
    );
    let got = [
        s.claim_as("embedded", &embedded, 60_000, 10).await.unwrap(),
        s.claim_as("embedded", &embedded, 60_000, 10).await.unwrap(),
    ];
    assert_eq!(ids(&got), [Some(container.id), None]);
    // No capability at all: nothing.
    let none = claimant(&["eu", "gpu"], &[]);
    assert!(s
        .claim_as("none", &none, 60_000, 10)
        .await
        .unwrap()
        .is_none());
    // Tagged eu with SSH: the fan-out; tagged gpu and eu: the gpu job.
    let eu_ssh = claimant(&["eu"], &[Capability::Ssh]);
    let c = s
        .claim_as("eu-ssh", &eu_ssh, 60_000, 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (c.id, c.lease_owner.as_deref()),
        (ssh_eu.id, Some("eu-ssh"))
    );
    let both = claimant(&["gpu", "eu"], &[Capability::Local]);
    let c = s
        .claim_as("both", &both, 60_000, 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.id, gpu.id);
    assert_eq!(c.agent_tags, ["eu", "gpu"]);
    assert!(s
        .claim_as("both", &both, 60_000, 10)
        .await
        .unwrap()
        .is_none());
}

async fn untagged_jobs_are_claimed_as_before(t: Ctx) {
    let s = &t.store;
    let a = s.enqueue(&job("a", 0), 0).await.unwrap();
    assert_eq!(a.capability, Some(Capability::Local));
    assert!(a.agent_tags.is_empty());
    let tagged = s
        .enqueue(&routed("t", 1, Capability::Local, &["eu"]), 0)
        .await
        .unwrap();
    let b = s.enqueue(&job("b", 2), 0).await.unwrap();
    // The plain claim (any capability, no tag) takes the untagged jobs in order and passes
    // over the tagged one.
    let c = s.claim("w", 60_000, 10).await.unwrap().unwrap();
    assert_eq!(c.id, a.id);
    let c = s.claim("w", 60_000, 10).await.unwrap().unwrap();
    assert_eq!(c.id, b.id);
    assert!(s.claim("w", 60_000, 10).await.unwrap().is_none());
    let eu = claimant(&["eu"], &[Capability::Local]);
    let c = s.claim_as("w2", &eu, 60_000, 10).await.unwrap().unwrap();
    assert_eq!(c.id, tagged.id);
    // A job as a registration of unknown capabilities words leaves it: local only.
    let from = Claimant::from_registration(&[], &["local".into(), "quantum".into()]);
    assert_eq!(from.capabilities, [Capability::Local]);
}

async fn bad_agent_tags_are_refused_naming_the_index(t: Ctx) {
    let s = &t.store;
    match s
        .enqueue(&routed("x", 0, Capability::Local, &["eu", " "]), 0)
        .await
    {
        Err(StoreError::Invalid(m)) => assert!(m.starts_with("agent_tags[1]:"), "{m}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(s.claim("w", 60_000, 10).await.unwrap().is_none());
    assert!(s.list_jobs(&Default::default()).await.unwrap().is_empty());
}

async fn a_batch_claim_filters_as_a_single_claim_does(t: Ctx) {
    let s = &t.store;
    let gpu = s
        .enqueue(&routed("gpu", 0, Capability::Local, &["gpu"]), 0)
        .await
        .unwrap();
    let eu = s
        .enqueue(&routed("eu", 1, Capability::Local, &["eu"]), 0)
        .await
        .unwrap();
    let container = s
        .enqueue(&routed("box", 2, Capability::Container, &[]), 0)
        .await
        .unwrap();
    let plain = s.enqueue(&job("plain", 3), 0).await.unwrap();
    let eu_local = claimant(&["eu"], &[Capability::Local]);
    let got: Vec<i64> = s
        .claim_batch("eu-local", &eu_local, 60_000, 10, 10)
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(got, [eu.id, plain.id]);
    let embedded = claimant(&[], &[Capability::Local, Capability::Container]);
    let got: Vec<i64> = s
        .claim_batch("embedded", &embedded, 60_000, 10, 10)
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(got, [container.id], "never the gpu job {}", gpu.id);
}
