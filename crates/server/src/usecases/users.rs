//! Users: add, list, change role, disable and enable, set a password; and what a login
//! records. Passwords are hashed with Argon2id (off the async threads). Every change writes its
//! audit entry in the store transaction of the change.
//!
//! Rules: only an admin manages users (the routes say so); a user may change their own
//! password; no change may leave the installation without an enabled admin. Disabling a user,
//! or changing its password, ends all its sessions at once; a disabled user's tokens stop
//! working at their next request (authentication reads the user).

use cronium_core::clock::now_ms;
use cronium_model::Role;
use cronium_store::{NewAudit, StoreError, UserRow, UserUpdate};
use serde_json::{json, Value};

use super::audit;
use super::{Actor, UseCaseError, UseCaseResult};
use crate::auth;
use crate::state::AppState;

/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 8;

/// A user as the audit log shows it (never the password hash).
pub fn audit_json(u: &UserRow) -> Value {
    json!({
        "name": u.username,
        "role": u.role,
        "disabled": u.disabled_at.is_some(),
    })
}

/// 1 to 64 characters: lowercase letters, digits, `.`, `_`, `-`, starting with a letter or a
/// digit.
pub fn validate_name(name: &str) -> UseCaseResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(UseCaseError::invalid(
            "name",
            "must be 1 to 64 characters of a-z, 0-9, `.`, `_`, `-`, starting with a letter or a digit",
        ))
    }
}

fn validate_password(password: &str) -> UseCaseResult<()> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(UseCaseError::invalid(
            "password",
            format!("must be at least {MIN_PASSWORD} characters"),
        ));
    }
    if password.len() > 1024 {
        return Err(UseCaseError::invalid(
            "password",
            "must be at most 1024 bytes",
        ));
    }
    Ok(())
}

async fn hash(password: &str) -> UseCaseResult<String> {
    let p = password.to_string();
    tokio::task::spawn_blocking(move || auth::hash_password(&p))
        .await
        .map_err(|e| UseCaseError::Store(StoreError::Invalid(format!("password: {e}"))))?
        .map_err(|e| UseCaseError::invalid("password", e))
}

/// Every user, by name.
pub async fn list(state: &AppState) -> UseCaseResult<Vec<UserRow>> {
    Ok(state.store.list_users().await?)
}

pub async fn get(state: &AppState, name: &str) -> UseCaseResult<UserRow> {
    state
        .store
        .get_user_by_name(name)
        .await?
        .ok_or_else(|| UseCaseError::NotFound(format!("user `{name}` not found")))
}

/// Adds a user (`Conflict` on `name` when taken).
pub async fn add(
    state: &AppState,
    actor: &Actor,
    name: &str,
    role: Role,
    password: &str,
) -> UseCaseResult<UserRow> {
    let result: UseCaseResult<UserRow> = async {
        validate_name(name)?;
        validate_password(password)?;
        let h = hash(password).await?;
        state
            .store
            .create_user(name, &h, role, now_ms(), |u| {
                audit::entry(
                    actor,
                    "user.add",
                    format!("user {name}"),
                    None,
                    Some(audit_json(u)),
                    "ok",
                )
            })
            .await
            .map_err(|e| match e {
                StoreError::Conflict(_) => UseCaseError::Conflict {
                    field: Some("name".into()),
                    message: format!("name: user `{name}` already exists"),
                },
                e => e.into(),
            })
    }
    .await;
    refused(state, actor, "user.add", name, result).await
}

/// Records a refused change (a successful one wrote its entry in its transaction).
async fn refused<T>(
    state: &AppState,
    actor: &Actor,
    action: &str,
    name: &str,
    result: UseCaseResult<T>,
) -> UseCaseResult<T> {
    if let Err(e) = &result {
        audit::append(
            state,
            audit::entry(
                actor,
                action,
                format!("user {name}"),
                None,
                None,
                format!("error: {e}"),
            ),
        )
        .await;
    }
    result
}

/// What an admin changes on a user.
#[derive(Debug, Clone, Default)]
pub struct Change {
    pub role: Option<Role>,
    pub disabled: Option<bool>,
}

/// Changes a user's role or disables / enables it. Refused when it would leave no enabled
/// admin.
pub async fn update(
    state: &AppState,
    actor: &Actor,
    name: &str,
    change: Change,
) -> UseCaseResult<UserRow> {
    let action = match (change.role, change.disabled) {
        (Some(_), None) => "user.set_role",
        (None, Some(true)) => "user.disable",
        (None, Some(false)) => "user.enable",
        _ => "user.update",
    };
    let result: UseCaseResult<UserRow> = async {
        if change.role.is_none() && change.disabled.is_none() {
            return Err(UseCaseError::invalid(
                "role",
                "nothing to change: give `role` or `disabled`",
            ));
        }
        let user = get(state, name).await?;
        let loses_admin = user.role == Role::Admin
            && user.disabled_at.is_none()
            && (change.role.is_some_and(|r| r != Role::Admin) || change.disabled == Some(true));
        if loses_admin {
            let admins = list(state)
                .await?
                .into_iter()
                .filter(|u| u.role == Role::Admin && u.disabled_at.is_none())
                .count();
            if admins <= 1 {
                return Err(UseCaseError::Conflict {
                    field: Some(
                        if change.role.is_some() {
                            "role"
                        } else {
                            "disabled"
                        }
                        .into(),
                    ),
                    message: format!(
                        "`{name}` is the last enabled admin: add or enable another admin first"
                    ),
                });
            }
        }
        let update = UserUpdate {
            role: change.role,
            disabled: change.disabled,
            password_hash: None,
        };
        Ok(state
            .store
            .update_user(name, &update, now_ms(), |b, a| {
                change_entry(actor, action, b, a)
            })
            .await?)
    }
    .await;
    refused(state, actor, action, name, result).await
}

fn change_entry(actor: &Actor, action: &str, before: &UserRow, after: &UserRow) -> NewAudit {
    audit::entry(
        actor,
        action,
        format!("user {}", after.username),
        Some(audit_json(before)),
        Some(audit_json(after)),
        "ok",
    )
}

/// Sets a user's password (an admin, or the user themselves); ends all the user's sessions.
pub async fn set_password(
    state: &AppState,
    actor: &Actor,
    name: &str,
    password: &str,
) -> UseCaseResult<UserRow> {
    let result: UseCaseResult<UserRow> = async {
        if !actor.is_admin() && actor.username != name {
            return Err(UseCaseError::Forbidden(format!(
                "only an admin sets another user's password ({} acts as {})",
                actor.username, actor.role
            )));
        }
        validate_password(password)?;
        get(state, name).await?;
        let h = hash(password).await?;
        let update = UserUpdate {
            password_hash: Some(h),
            ..Default::default()
        };
        Ok(state
            .store
            .update_user(name, &update, now_ms(), |b, a| {
                change_entry(actor, "user.passwd", b, a)
            })
            .await?)
    }
    .await;
    refused(state, actor, "user.passwd", name, result).await
}

/// Records a successful login (and the user's last login).
pub async fn logged_in(state: &AppState, user: &UserRow, session_id: &str, source: &str) {
    let now = now_ms();
    if let Err(e) = state.store.record_login(user.id, now).await {
        tracing::error!(error = %e, "cannot record the last login");
    }
    let actor = Actor {
        user_id: Some(user.id),
        username: user.username.clone(),
        role: user.role,
        token_id: None,
        session_id: Some(session_id.to_string()),
        source: Some(source.to_string()),
    };
    audit::append(
        state,
        audit::entry(
            &actor,
            "login",
            format!("user {}", user.username),
            None,
            None,
            "ok",
        ),
    )
    .await;
}

/// Records a failed login with the name tried and why (kept in the log only; the page says
/// the same thing whatever the reason).
pub async fn login_failed(state: &AppState, name_tried: &str, source: &str, why: &str) {
    let actor = Actor {
        user_id: None,
        username: "-".into(),
        role: Role::Viewer,
        token_id: None,
        session_id: None,
        source: Some(source.to_string()),
    };
    audit::append(
        state,
        audit::entry(
            &actor,
            "login.failed",
            format!("user {}", name_tried.chars().take(100).collect::<String>()),
            None,
            None,
            format!("error: {why}"),
        ),
    )
    .await;
}
