//! The audit log: what the use cases record of every change, run, cancel and login, and its
//! reading (newest first, keyset paged).
//!
//! **What goes in**: who ([`Actor`]: user, token or session, address), the action
//! (`event.apply`, `job.cancel`...), its target, the object before and after as JSON, and the
//! outcome (`ok`, or the error the actor got). Never a secret: variables appear by name (and
//! whether they are secret) only, servers without their credentials, users without their
//! password hash, tokens without their value or hash. A very large object (an event with a
//! big script) is replaced by its SHA-256 and size.
//!
//! **When**: users and tokens write their entry in the store transaction of the change
//! ([`entry`] is given to the store); every other change is recorded right after its own
//! transaction by [`record`] (a crash between the two loses the entry; a failure to write it
//! is logged, and does not undo or fail the change).

use cronium_core::clock::now_ms;
use cronium_store::{AuditFilter, AuditRow, NewAudit};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Actor, UseCaseError, UseCaseResult};
use crate::state::AppState;

/// Largest before/after object kept whole (bytes of JSON).
pub const MAX_OBJECT_BYTES: usize = 64 * 1024;

/// The most entries one page returns.
pub const MAX_PAGE: i64 = 500;

/// `v`, or its digest when it is larger than [`MAX_OBJECT_BYTES`].
pub fn bounded(v: Value) -> Value {
    let text = v.to_string();
    if text.len() <= MAX_OBJECT_BYTES {
        return v;
    }
    serde_json::json!({
        "truncated": true,
        "sha256": hex::encode(Sha256::digest(text.as_bytes())),
        "bytes": text.len(),
    })
}

/// An entry by `actor`, now.
pub fn entry(
    actor: &Actor,
    action: &str,
    target: impl Into<String>,
    before: Option<Value>,
    after: Option<Value>,
    outcome: impl Into<String>,
) -> NewAudit {
    NewAudit {
        at: now_ms(),
        actor_id: actor.user_id,
        actor: actor.username.clone(),
        token_id: actor.token_id,
        session_id: actor.session_id.clone(),
        source: actor.source.clone(),
        action: action.to_string(),
        target: target.into(),
        before: before.map(bounded),
        after: after.map(bounded),
        outcome: outcome.into(),
    }
}

/// The outcome word of a result: `ok`, or the error.
pub fn outcome<T>(r: &UseCaseResult<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("error: {e}"),
    }
}

/// Appends an entry on its own (after the change it records). A failure is logged, never
/// returned: the change is done.
pub async fn append(state: &AppState, e: NewAudit) {
    if let Err(err) = state.store.insert_audit(&e).await {
        tracing::error!(error = %err, action = %e.action, target = %e.target, "audit log: entry lost");
    }
}

/// Records the result of a change: `after` reads the object from the result when it
/// succeeded. Returns the result unchanged.
pub async fn record<T>(
    state: &AppState,
    actor: &Actor,
    action: &str,
    target: impl Into<String>,
    before: Option<Value>,
    result: UseCaseResult<T>,
    after: impl FnOnce(&T) -> Option<Value>,
) -> UseCaseResult<T> {
    let after = result.as_ref().ok().and_then(after);
    let before = if result.is_ok() { before } else { None };
    append(
        state,
        entry(actor, action, target, before, after, outcome(&result)),
    )
    .await;
    result
}

/// A page of entries, newest first.
pub async fn list(state: &AppState, mut filter: AuditFilter) -> UseCaseResult<Vec<AuditRow>> {
    if filter.limit < 1 || filter.limit > MAX_PAGE {
        return Err(UseCaseError::invalid(
            "limit",
            format!("must be 1 to {MAX_PAGE}"),
        ));
    }
    if let Some(a) = &filter.actor {
        if a.trim().is_empty() {
            filter.actor = None;
        }
    }
    if let Some(a) = &filter.action {
        if a.trim().is_empty() {
            filter.action = None;
        }
    }
    Ok(state.store.list_audit(&filter).await?)
}
