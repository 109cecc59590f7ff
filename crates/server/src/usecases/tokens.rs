//! API tokens: the clear value exists only in the answer to its creation; the store keeps its
//! SHA-256.

use cronium_core::clock::now_ms;
use cronium_store::TokenRow;

use super::{UseCaseError, UseCaseResult};
use crate::auth;
use crate::state::AppState;

/// Every token, revoked ones included (never their values).
pub async fn list(state: &AppState) -> UseCaseResult<Vec<TokenRow>> {
    Ok(state.store.list_tokens().await?)
}

/// Creates a token for `user_id`; returns the row and the clear value, to be shown once.
pub async fn create(
    state: &AppState,
    name: &str,
    user_id: i64,
) -> UseCaseResult<(TokenRow, String)> {
    // Counted in characters, as the document's maxLength is.
    let trimmed = name.trim();
    if trimmed.is_empty() || name.chars().count() > 100 {
        return Err(UseCaseError::invalid(
            "name",
            "must be 1 to 100 characters, not all blank",
        ));
    }
    let token = auth::new_token();
    let row = state
        .store
        .create_token(trimmed, &auth::hash_token(&token), user_id, now_ms())
        .await?;
    Ok((row, token))
}

/// Revokes a token; it stops working at once.
pub async fn revoke(state: &AppState, id: i64) -> UseCaseResult<()> {
    if state.store.revoke_token(id, now_ms()).await? {
        Ok(())
    } else {
        Err(UseCaseError::NotFound(format!(
            "token {id} not found or already revoked"
        )))
    }
}
