//! The runtime API's rows: a token opens its running execution only, until its deadline, and
//! not once the execution ended or its job moved to another attempt; writes are fenced by the
//! execution's claim.

use cronium_model::{ExecutionStatus, JobStatus};
use cronium_store::{JobOutcome, VariableValue};
use serde_json::json;

use crate::harness::{job, Ctx};

conformance!(runtime_tokens_open_one_running_execution_until_its_deadline);
conformance!(runtime_writes_are_fenced_by_the_claim);
conformance!(an_execution_still_deploying_takes_runtime_calls);

async fn runtime_tokens_open_one_running_execution_until_its_deadline(t: Ctx) {
    let s = &t.store;
    let a = s.enqueue(&job("a", 0), 0).await.unwrap();
    let b = s.enqueue(&job("b", 0), 0).await.unwrap();
    s.claim("w", 10_000, 1).await.unwrap().unwrap();
    s.claim("w", 10_000, 1).await.unwrap().unwrap();
    let ea = s
        .create_execution(a.id, "w", 1, None, ExecutionStatus::Running, 2)
        .await
        .unwrap()
        .unwrap();
    let eb = s
        .create_execution(b.id, "w", 1, None, ExecutionStatus::Running, 2)
        .await
        .unwrap()
        .unwrap();
    // Only the lease holder ties a token.
    assert!(!s
        .set_execution_token(ea.id, "other", 1, "ha", 1_000)
        .await
        .unwrap());
    assert!(s
        .set_execution_token(ea.id, "w", 1, "ha", 1_000)
        .await
        .unwrap());
    assert!(s
        .set_execution_token(eb.id, "w", 1, "hb", 5_000)
        .await
        .unwrap());
    let found = s.runtime_execution("ha", 999).await.unwrap().unwrap();
    assert_eq!(
        (found.execution_id, found.job_id, found.attempt),
        (ea.id, a.id, 1)
    );
    assert_eq!(found.event_name, "a");
    assert_eq!(
        s.get_execution(ea.id)
            .await
            .unwrap()
            .unwrap()
            .helpers
            .as_deref(),
        Some("api")
    );
    // Expired at its deadline; unknown hashes open nothing.
    assert!(s.runtime_execution("ha", 1_000).await.unwrap().is_none());
    assert!(s.runtime_execution("nope", 0).await.unwrap().is_none());
    assert_eq!(
        s.runtime_execution("hb", 999)
            .await
            .unwrap()
            .unwrap()
            .execution_id,
        eb.id
    );
    // Ended: refused, and revoked.
    let outcome = JobOutcome {
        status: JobStatus::Succeeded,
        exit_code: Some(0),
        output: json!(null),
        error: None,
    };
    assert!(s.finish(b.id, "w", 1, &outcome, 10).await.unwrap());
    assert!(s.runtime_execution("hb", 999).await.unwrap().is_none());
    assert_eq!(s.revoke_execution_tokens(b.id).await.unwrap(), 1);
    assert_eq!(s.revoke_execution_tokens(b.id).await.unwrap(), 0);
}

async fn runtime_writes_are_fenced_by_the_claim(t: Ctx) {
    let s = &t.store;
    let j = s.enqueue(&job("f", 0), 0).await.unwrap();
    s.claim("w", 100, 1).await.unwrap().unwrap();
    let e = s
        .create_execution(j.id, "w", 1, None, ExecutionStatus::Running, 2)
        .await
        .unwrap()
        .unwrap();
    let out = s
        .runtime_set_output(e.id, 1, Some("k"), &json!(1))
        .await
        .unwrap();
    assert_eq!(out, Some(json!({"k": 1})));
    let out = s
        .runtime_set_output(e.id, 1, Some("m"), &json!([2]))
        .await
        .unwrap();
    assert_eq!(out, Some(json!({"k": 1, "m": [2]})));
    assert!(s.runtime_set_condition(e.id, 1, true).await.unwrap());
    assert!(s
        .runtime_set_variable(e.id, 1, "v", VariableValue::Plain(json!("x")), 3)
        .await
        .unwrap());
    // Another attempt's claim: nothing written.
    assert_eq!(
        s.runtime_set_output(e.id, 2, None, &json!(0))
            .await
            .unwrap(),
        None
    );
    // The lease expires and the job is recovered (a new attempt later): the stale run is fenced.
    s.recover_expired(1_000).await.unwrap();
    assert_eq!(
        s.runtime_set_output(e.id, 1, None, &json!(0))
            .await
            .unwrap(),
        None
    );
    assert!(!s.runtime_set_condition(e.id, 1, false).await.unwrap());
    assert!(!s
        .runtime_set_variable(e.id, 1, "v", VariableValue::Plain(json!("stale")), 4)
        .await
        .unwrap());
    // The write that went through is the job's, with its execution; the refused one is not.
    let writes = s.list_variable_writes(j.id).await.unwrap();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(
        (
            writes[0].name.as_str(),
            writes[0].execution_id,
            writes[0].secret,
            writes[0].written_at
        ),
        ("v", Some(e.id), false, 3)
    );
    let row = s.get_execution(e.id).await.unwrap().unwrap();
    assert_eq!(
        (row.output, row.condition),
        (json!({"k": 1, "m": [2]}), Some(true))
    );
    let v = s.get_variable("v").await.unwrap().unwrap();
    assert_eq!(v.value, VariableValue::Plain(json!("x")));
}

/// The runner may be up and the script calling the runtime API before the recorder has stored
/// the execution's `running` mark (starts are written in batches): an execution still marked
/// `deploying` is as live as a running one, for its token and for every fenced write.
async fn an_execution_still_deploying_takes_runtime_calls(t: Ctx) {
    let s = &t.store;
    let j = s.enqueue(&job("d", 0), 0).await.unwrap();
    s.claim("w", 10_000, 1).await.unwrap().unwrap();
    let e = s
        .create_execution(j.id, "w", 1, None, ExecutionStatus::Deploying, 2)
        .await
        .unwrap()
        .unwrap();
    assert!(s
        .set_execution_token(e.id, "w", 1, "hd", 1_000)
        .await
        .unwrap());
    let found = s.runtime_execution("hd", 999).await.unwrap().unwrap();
    assert_eq!(found.execution_id, e.id);
    assert_eq!(
        s.runtime_set_output(e.id, 1, Some("k"), &json!(1))
            .await
            .unwrap(),
        Some(json!({"k": 1}))
    );
    assert!(s.runtime_set_condition(e.id, 1, true).await.unwrap());
    assert!(s
        .runtime_set_variable(e.id, 1, "dv", VariableValue::Plain(json!("x")), 3)
        .await
        .unwrap());
}
