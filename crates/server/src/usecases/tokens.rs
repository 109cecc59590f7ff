//! API tokens: the clear value exists only in the answer to its creation; the store keeps its
//! SHA-256. A token belongs to a user and acts with that user's role, or a narrower one, until
//! it expires or is revoked.
//!
//! Rules: everyone manages their own tokens; an admin lists and revokes everyone's and creates
//! tokens for another user. A token's role never exceeds its owner's role nor the role of the
//! one creating it (a narrowed token cannot mint a wider one). Every change writes its audit
//! entry in the store transaction of the change.

use std::time::Duration;

use cronium_core::clock::now_ms;
use cronium_core::duration::HumanDuration;
use cronium_model::Role;
use cronium_store::{NewToken, TokenRow};
use serde_json::{json, Value};

use super::{audit, users, Actor, UseCaseError, UseCaseResult};
use crate::auth;
use crate::state::AppState;

/// The longest lifetime a token may be given.
pub const MAX_EXPIRY: Duration = Duration::from_secs(10 * 365 * 86_400);

/// A token as the audit log shows it (never its value or hash).
pub fn audit_json(t: &TokenRow) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "user": t.username,
        "role": t.role,
        "expires_at": t.expires_at.map(cronium_core::clock::rfc3339),
        "revoked": t.revoked_at.is_some(),
    })
}

/// The tokens the actor may see, revoked ones included (never their values): an admin's
/// view is every token, anyone else's their own.
pub async fn list(state: &AppState, actor: &Actor) -> UseCaseResult<Vec<TokenRow>> {
    let only = if actor.is_admin() {
        None
    } else {
        Some(actor.user_id.unwrap_or(-1))
    };
    Ok(state.store.list_tokens(only).await?)
}

/// What a new token is.
#[derive(Debug, Clone, Default)]
pub struct Create {
    pub name: String,
    /// Narrower than the owner's role; None: the owner's role (or the creator's, when that is
    /// narrower).
    pub role: Option<Role>,
    /// `30d`, `12h`...; None: no expiry.
    pub expires_in: Option<String>,
    /// The owner (admin only); None: the actor.
    pub user: Option<String>,
}

/// Creates a token; returns the row and the clear value, to be shown once.
pub async fn create(
    state: &AppState,
    actor: &Actor,
    c: Create,
) -> UseCaseResult<(TokenRow, String)> {
    let result = create_checked(state, actor, &c).await;
    if let Err(e) = &result {
        audit::append(
            state,
            audit::entry(
                actor,
                "token.create",
                format!("token {}", c.name.trim()),
                None,
                None,
                format!("error: {e}"),
            ),
        )
        .await;
    }
    result
}

async fn create_checked(
    state: &AppState,
    actor: &Actor,
    c: &Create,
) -> UseCaseResult<(TokenRow, String)> {
    // Counted in characters, as the document's maxLength is.
    let trimmed = c.name.trim();
    if trimmed.is_empty() || c.name.chars().count() > 100 {
        return Err(UseCaseError::invalid(
            "name",
            "must be 1 to 100 characters, not all blank",
        ));
    }
    let owner = match c.user.as_deref() {
        Some(u) if u != actor.username => {
            if !actor.is_admin() {
                return Err(UseCaseError::Forbidden(format!(
                    "only an admin creates tokens for another user ({} acts as {})",
                    actor.username, actor.role
                )));
            }
            users::get(state, u).await.map_err(|e| match e {
                UseCaseError::NotFound(m) => UseCaseError::invalid("user", m),
                e => e,
            })?
        }
        _ => match actor.user_id {
            Some(id) => state
                .store
                .get_user(id)
                .await?
                .ok_or_else(|| UseCaseError::invalid("user", "the actor has no account"))?,
            None => return Err(UseCaseError::invalid("user", "name the token's owner")),
        },
    };
    if owner.disabled_at.is_some() {
        return Err(UseCaseError::invalid(
            "user",
            format!("user `{}` is disabled", owner.username),
        ));
    }
    let ceiling = owner.role.min(actor.role);
    let role = match c.role {
        Some(r) if !ceiling.allows(r) => {
            return Err(UseCaseError::invalid(
                "role",
                format!(
                    "`{r}` is above what this token may be given (`{ceiling}`: the owner's role, or the creator's when narrower)"
                ),
            ))
        }
        Some(r) => Some(r),
        None if ceiling != owner.role => Some(ceiling),
        None => None,
    };
    let now = now_ms();
    let expires_at = match c.expires_in.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => {
            let d = HumanDuration::parse(text)
                .map_err(|e| UseCaseError::invalid("expires_in", e))?
                .0;
            if d.is_zero() || d > MAX_EXPIRY {
                return Err(UseCaseError::invalid(
                    "expires_in",
                    "must be more than 0 and at most 3650d",
                ));
            }
            Some(now + i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2))
        }
    };
    let token = auth::new_token();
    let hash = auth::hash_token(&token);
    let row = state
        .store
        .create_token(
            &NewToken {
                name: trimmed,
                token_hash: &hash,
                user_id: owner.id,
                role,
                expires_at,
            },
            now,
            |t| {
                audit::entry(
                    actor,
                    "token.create",
                    format!("token {}", t.id),
                    None,
                    Some(audit_json(t)),
                    "ok",
                )
            },
        )
        .await?;
    Ok((row, token))
}

/// Revokes a token (the actor's own, or any for an admin); it stops working at once.
pub async fn revoke(state: &AppState, actor: &Actor, id: i64) -> UseCaseResult<TokenRow> {
    let only = if actor.is_admin() {
        None
    } else {
        Some(actor.user_id.unwrap_or(-1))
    };
    let revoked = state
        .store
        .revoke_token(id, only, now_ms(), |t| {
            let mut before = audit_json(t);
            before["revoked"] = json!(false);
            audit::entry(
                actor,
                "token.revoke",
                format!("token {id}"),
                Some(before),
                Some(audit_json(t)),
                "ok",
            )
        })
        .await?;
    match revoked {
        Some(t) => Ok(t),
        None => {
            let e = UseCaseError::NotFound(format!("token {id} not found or already revoked"));
            audit::append(
                state,
                audit::entry(
                    actor,
                    "token.revoke",
                    format!("token {id}"),
                    None,
                    None,
                    format!("error: {e}"),
                ),
            )
            .await;
            Err(e)
        }
    }
}
