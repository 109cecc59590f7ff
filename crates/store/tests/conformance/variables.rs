//! Variables: plain JSON and secret ciphertext, upsert, list, delete.

use cronium_store::{StoreError, VariableValue};
use serde_json::json;

use crate::harness::{job, Ctx};

conformance!(variables_plain_and_secret);
conformance!(a_jobs_variable_writes_are_recorded_without_their_values);

async fn a_jobs_variable_writes_are_recorded_without_their_values(t: Ctx) {
    let s = &t.store;
    let a = s.enqueue(&job("writer", 0), 0).await.unwrap();
    let b = s.enqueue(&job("other", 0), 0).await.unwrap();
    s.set_job_variable(a.id, None, "counter", VariableValue::Plain(json!(1)), 5)
        .await
        .unwrap();
    s.set_job_variable(a.id, None, "token", VariableValue::Secret(vec![9, 9]), 6)
        .await
        .unwrap();
    s.set_job_variable(b.id, None, "counter", VariableValue::Plain(json!(2)), 7)
        .await
        .unwrap();
    let w = s.list_variable_writes(a.id).await.unwrap();
    let seen: Vec<_> = w
        .iter()
        .map(|w| (w.name.as_str(), w.job_id, w.secret, w.written_at))
        .collect();
    assert_eq!(
        seen,
        [("counter", a.id, false, 5), ("token", a.id, true, 6)]
    );
    assert_eq!(s.list_variable_writes(b.id).await.unwrap().len(), 1);
    // The values went to the variables, as a plain write would.
    assert_eq!(
        s.get_variable("counter").await.unwrap().unwrap().value,
        VariableValue::Plain(json!(2))
    );
    // A refused write (bad name) records nothing.
    assert!(s
        .set_job_variable(a.id, None, " ", VariableValue::Plain(json!(0)), 8)
        .await
        .is_err());
    assert_eq!(s.list_variable_writes(a.id).await.unwrap().len(), 2);
}

async fn variables_plain_and_secret(t: Ctx) {
    let s = &t.store;
    assert_eq!(s.get_variable("x").await.unwrap(), None);
    s.set_variable(
        "plain",
        VariableValue::Plain(json!({"n": 1, "list": ["a"]})),
        10,
    )
    .await
    .unwrap();
    let cipher = vec![0u8, 1, 2, 255, 254, 0];
    s.set_variable("secret", VariableValue::Secret(cipher.clone()), 11)
        .await
        .unwrap();

    let p = s.get_variable("plain").await.unwrap().unwrap();
    assert_eq!(
        (p.value, p.updated_at),
        (VariableValue::Plain(json!({"n": 1, "list": ["a"]})), 10)
    );
    let sec = s.get_variable("secret").await.unwrap().unwrap();
    assert_eq!(sec.value, VariableValue::Secret(cipher.clone()));

    // Upsert: replaces value and kind.
    s.set_variable("plain", VariableValue::Plain(json!("text")), 20)
        .await
        .unwrap();
    s.set_variable("secret", VariableValue::Plain(json!(42)), 21)
        .await
        .unwrap();
    let all = s.list_variables().await.unwrap();
    assert_eq!(
        all.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        ["plain", "secret"]
    );
    assert_eq!(
        (all[0].value.clone(), all[0].updated_at),
        (VariableValue::Plain(json!("text")), 20)
    );
    assert_eq!(all[1].value, VariableValue::Plain(json!(42)));
    s.set_variable("secret", VariableValue::Secret(cipher.clone()), 22)
        .await
        .unwrap();
    assert_eq!(
        s.get_variable("secret").await.unwrap().unwrap().value,
        VariableValue::Secret(cipher)
    );

    assert!(matches!(
        s.set_variable("", VariableValue::Plain(json!(1)), 1).await,
        Err(StoreError::Invalid(m)) if m.starts_with("name")
    ));
    assert!(s.delete_variable("plain").await.unwrap());
    assert!(!s.delete_variable("plain").await.unwrap());
    assert_eq!(s.list_variables().await.unwrap().len(), 1);
}
