//! SSH servers: what the pages read (the API's handlers in `api/servers.rs` still hold their
//! own writes; see ARCHITECTURE.md).

use cronium_store::{DeploymentRow, ServerRow};

use super::{UseCaseError, UseCaseResult};
use crate::state::AppState;

/// Every registered server, by name.
pub async fn list(state: &AppState) -> UseCaseResult<Vec<ServerRow>> {
    Ok(state.store.list_servers().await?)
}

pub async fn get(state: &AppState, name: &str) -> UseCaseResult<ServerRow> {
    state
        .store
        .get_server_by_name(name)
        .await?
        .ok_or_else(|| UseCaseError::NotFound(format!("server `{name}` not found")))
}

/// The server's runner deployments, newest first.
pub async fn deployments(
    state: &AppState,
    server: &ServerRow,
    limit: i64,
) -> UseCaseResult<Vec<DeploymentRow>> {
    Ok(state.store.list_deployments(server.id, limit).await?)
}
