//! Agents and agent tokens, for the API (`api/agents.rs`) and the web UI (`ui/agents.rs`):
//! an agent's state from its last heartbeat, and the audited creation and revocation of the
//! tokens that open the agent API. A token's value is returned once, by its creation; only its
//! SHA-256 is stored.

use cronium_core::clock::now_ms;
use cronium_store::{AgentRow, AgentTokenRow};
use serde_json::json;

use super::{audit, Actor, UseCaseError, UseCaseResult};
use crate::auth::{hash_token, new_token};
use crate::state::AppState;

/// An agent heard of within this long is `connected`.
pub const CONNECTED_WITHIN_MS: i64 = 30_000;

/// `stopped` (it said so), `connected` (a heartbeat within [`CONNECTED_WITHIN_MS`]) or
/// `unreachable`.
pub fn state_of(a: &AgentRow, now: i64) -> &'static str {
    if a.stopped_at.is_some() {
        "stopped"
    } else if now - a.last_heartbeat_at <= CONNECTED_WITHIN_MS {
        "connected"
    } else {
        "unreachable"
    }
}

/// Every agent that registered, remote and embedded.
pub async fn list(state: &AppState) -> UseCaseResult<Vec<AgentRow>> {
    Ok(state.store.list_agents().await?)
}

/// The agent tokens, revoked ones included (never their values).
pub async fn list_tokens(state: &AppState) -> UseCaseResult<Vec<AgentTokenRow>> {
    Ok(state.store.list_agent_tokens().await?)
}

/// Creates an agent token named `name`; returns it with its value (shown this once).
pub async fn create_token(
    state: &AppState,
    actor: &Actor,
    name: &str,
) -> UseCaseResult<(AgentTokenRow, String)> {
    let name = name.trim().to_string();
    cronium_core::spec::validate_name(&name)
        .map_err(|e| UseCaseError::invalid("name", e.message))?;
    let token = new_token();
    let result: UseCaseResult<_> = state
        .store
        .create_agent_token(&name, &hash_token(&token), now_ms())
        .await
        .map_err(UseCaseError::from);
    // The token's name and id, never its value.
    let row = audit::record(
        state,
        actor,
        "agent_token.create",
        format!("agent token {name}"),
        None,
        result,
        |t| Some(json!({"id": t.id, "name": t.name})),
    )
    .await?;
    Ok((row, token))
}

/// Revokes the agent token `name`: its agents are refused from their next call.
pub async fn revoke_token(
    state: &AppState,
    actor: &Actor,
    name: &str,
) -> UseCaseResult<AgentTokenRow> {
    let result = match state.store.revoke_agent_token(name, now_ms()).await {
        Ok(Some(t)) => {
            state.agent_tokens.clear();
            Ok(t)
        }
        Ok(None) => Err(UseCaseError::NotFound(format!(
            "no agent token {name}, or it is revoked"
        ))),
        Err(e) => Err(UseCaseError::from(e)),
    };
    audit::record(
        state,
        actor,
        "agent_token.revoke",
        format!("agent token {name}"),
        None,
        result,
        |t| Some(json!({"id": t.id, "name": t.name, "revoked": true})),
    )
    .await
}
