//! Variables: named JSON values scripts read and write. Secret ones are encrypted at rest and
//! never returned once written (write-only, in the API and the pages).

use cronium_agent::queue::variable_context;
use cronium_core::clock::now_ms;
use cronium_store::{VariableRow, VariableValue};
use serde_json::Value;

use super::{audit, Actor, UseCaseError, UseCaseResult};
use crate::state::AppState;

/// Largest variable value, as JSON text.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;

pub fn validate_name(name: &str) -> UseCaseResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(UseCaseError::invalid(
            "name",
            "use 1 to 200 letters, digits, -, _ and .",
        ))
    }
}

pub async fn list(state: &AppState) -> UseCaseResult<Vec<VariableRow>> {
    Ok(state.store.list_variables().await?)
}

pub async fn get(state: &AppState, name: &str) -> UseCaseResult<VariableRow> {
    state
        .store
        .get_variable(name)
        .await?
        .ok_or_else(|| UseCaseError::NotFound(format!("variable `{name}` not found")))
}

/// A variable as the audit log shows it: its name and whether it is secret, never its value.
pub fn audit_json(v: &VariableRow) -> Value {
    serde_json::json!({
        "name": v.name,
        "secret": matches!(v.value, VariableValue::Secret(_)),
    })
}

/// Creates or replaces a variable; a secret one is encrypted before it reaches the store.
pub async fn set(
    state: &AppState,
    actor: &Actor,
    name: &str,
    value: Value,
    secret: bool,
) -> UseCaseResult<VariableRow> {
    let before = match validate_name(name) {
        Ok(()) => state.store.get_variable(name).await?,
        Err(_) => None,
    };
    let result = set_unrecorded(state, name, value, secret).await;
    audit::record(
        state,
        actor,
        "variable.set",
        format!("variable {}", name.chars().take(200).collect::<String>()),
        before.as_ref().map(audit_json),
        result,
        |v| Some(audit_json(v)),
    )
    .await
}

async fn set_unrecorded(
    state: &AppState,
    name: &str,
    value: Value,
    secret: bool,
) -> UseCaseResult<VariableRow> {
    validate_name(name)?;
    let text =
        serde_json::to_vec(&value).map_err(|e| UseCaseError::invalid("value", e.to_string()))?;
    if text.len() > MAX_VALUE_BYTES {
        return Err(UseCaseError::invalid(
            "value",
            format!("is {} bytes; the limit is {MAX_VALUE_BYTES}", text.len()),
        ));
    }
    let value = if secret {
        VariableValue::Secret(state.secrets.encrypt(&variable_context(name), &text))
    } else {
        VariableValue::Plain(value)
    };
    state.store.set_variable(name, value, now_ms()).await?;
    get(state, name).await
}

pub async fn delete(state: &AppState, actor: &Actor, name: &str) -> UseCaseResult<()> {
    let before = state.store.get_variable(name).await?;
    let result = match state.store.delete_variable(name).await? {
        true => Ok(()),
        false => Err(UseCaseError::NotFound(format!(
            "variable `{name}` not found"
        ))),
    };
    audit::record(
        state,
        actor,
        "variable.delete",
        format!("variable {}", name.chars().take(200).collect::<String>()),
        before.as_ref().map(audit_json),
        result,
        |_| None,
    )
    .await
}
