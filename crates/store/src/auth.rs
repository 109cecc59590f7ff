//! Users and API tokens. Only hashes are stored: the caller hashes passwords and tokens before
//! they reach the store and compares hashes it reads back.
//!
//! Every change of a user or a token writes its audit entry in the same transaction (the
//! caller builds the entry from the rows before and after, read inside that transaction), so a
//! change without its entry, or an entry without its change, cannot be committed.
//!
//! Not for hashing or permission checks: those belong to the server.

use cronium_model::Role;
use serde::Serialize;
use sqlx::any::AnyRow;

use crate::audit::{insert_audit_in, NewAudit};
use crate::row::{i64_col, opt_i64, opt_text, text, word};
use crate::store::map_opt;
use crate::{Store, StoreError};

/// `last_used_at` is rewritten at most this often per token, so that authenticating every API
/// call does not turn every read into a database write.
pub const LAST_USED_RESOLUTION_MS: i64 = 60_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
    pub role: Role,
    pub created_at: i64,
    /// Set while the user is disabled: no login, no token, no session works.
    pub disabled_at: Option<i64>,
    pub last_login_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenRow {
    pub id: i64,
    pub name: String,
    pub user_id: i64,
    /// The owner's name.
    pub username: String,
    /// The narrower role the token acts with; None: its user's role.
    pub role: Option<Role>,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    /// Within [`LAST_USED_RESOLUTION_MS`] of the last use.
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// A token that authenticates a request: the token and its owner as they are now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenAuth {
    pub token: TokenRow,
    pub user_role: Role,
}

/// A token to create (its hash only).
#[derive(Debug, Clone)]
pub struct NewToken<'a> {
    pub name: &'a str,
    pub token_hash: &'a str,
    pub user_id: i64,
    pub role: Option<Role>,
    pub expires_at: Option<i64>,
}

/// What to change on a user; None leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserUpdate {
    pub role: Option<Role>,
    pub disabled: Option<bool>,
    pub password_hash: Option<String>,
}

macro_rules! token_cols {
    () => {
        "t.id, t.name, t.user_id, u.username, t.role, t.expires_at, t.created_at, t.last_used_at, \
         t.revoked_at"
    };
}

macro_rules! user_cols {
    () => {
        "id, username, password_hash, role, created_at, disabled_at, last_login_at"
    };
}

fn token_row(row: &AnyRow) -> Result<TokenRow, StoreError> {
    Ok(TokenRow {
        id: i64_col(row, "id")?,
        name: text(row, "name")?,
        user_id: i64_col(row, "user_id")?,
        username: text(row, "username")?,
        role: match opt_text(row, "role")? {
            None => None,
            Some(r) => Some(
                r.parse()
                    .map_err(|e| StoreError::Corrupt(format!("column role: {e}")))?,
            ),
        },
        expires_at: opt_i64(row, "expires_at")?,
        created_at: i64_col(row, "created_at")?,
        last_used_at: opt_i64(row, "last_used_at")?,
        revoked_at: opt_i64(row, "revoked_at")?,
    })
}

fn user_row(row: &AnyRow) -> Result<UserRow, StoreError> {
    Ok(UserRow {
        id: i64_col(row, "id")?,
        username: text(row, "username")?,
        password_hash: text(row, "password_hash")?,
        role: word(row, "role")?,
        created_at: i64_col(row, "created_at")?,
        disabled_at: opt_i64(row, "disabled_at")?,
        last_login_at: opt_i64(row, "last_login_at")?,
    })
}

fn non_empty(field: &str, value: &str) -> Result<(), StoreError> {
    if value.trim().is_empty() {
        return Err(StoreError::Invalid(format!("{field}: must not be empty")));
    }
    Ok(())
}

impl Store {
    /// Creates a user and its audit entry (`audit` gets the new row); `Conflict("username")`
    /// if the name is taken.
    pub async fn create_user<F>(
        &self,
        username: &str,
        password_hash: &str,
        role: Role,
        now: i64,
        audit: F,
    ) -> Result<UserRow, StoreError>
    where
        F: FnOnce(&UserRow) -> NewAudit + Send,
    {
        non_empty("username", username)?;
        non_empty("password_hash", password_hash)?;
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(concat!(
            "INSERT INTO users (username, password_hash, role, created_at) VALUES ($1, $2, $3, $4) RETURNING ",
            user_cols!()
        ))
        .bind(username)
        .bind(password_hash)
        .bind(role.as_str())
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let user = user_row(&row)?;
        insert_audit_in(&mut tx, &audit(&user)).await?;
        tx.commit().await?;
        Ok(user)
    }

    pub async fn count_users(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(&self.read)
            .await?;
        i64_col(&row, "n")
    }

    /// Every user, by name.
    pub async fn list_users(&self) -> Result<Vec<UserRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            user_cols!(),
            " FROM users ORDER BY username"
        ))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(user_row).collect()
    }

    pub async fn get_user(&self, id: i64) -> Result<Option<UserRow>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            user_cols!(),
            " FROM users WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.read)
        .await?;
        map_opt(row, user_row)
    }

    pub async fn get_user_by_name(&self, username: &str) -> Result<Option<UserRow>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            user_cols!(),
            " FROM users WHERE username = $1"
        ))
        .bind(username)
        .fetch_optional(&self.read)
        .await?;
        map_opt(row, user_row)
    }

    /// Changes a user (role, disabled, password) and writes its audit entry (`audit` gets the
    /// rows before and after) in one transaction. Disabling a user or changing its password
    /// ends every session of the user in that transaction too (its tokens stop working
    /// because authentication reads the user). `NotFound` when there is no such user.
    pub async fn update_user<F>(
        &self,
        username: &str,
        change: &UserUpdate,
        now: i64,
        audit: F,
    ) -> Result<UserRow, StoreError>
    where
        F: FnOnce(&UserRow, &UserRow) -> NewAudit + Send,
    {
        if let Some(h) = &change.password_hash {
            non_empty("password_hash", h)?;
        }
        let mut tx = self.begin_write().await?;
        let sql = format!(
            "SELECT {} FROM users WHERE username = $1{}",
            user_cols!(),
            self.for_update()
        );
        let row = sqlx::query(&sql)
            .bind(username)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(before) = map_opt(row, user_row)? else {
            return Err(StoreError::NotFound(format!("user {username}")));
        };
        let mut after = before.clone();
        if let Some(r) = change.role {
            after.role = r;
        }
        match change.disabled {
            Some(true) if before.disabled_at.is_none() => after.disabled_at = Some(now),
            Some(false) => after.disabled_at = None,
            _ => {}
        }
        if let Some(h) = &change.password_hash {
            after.password_hash = h.clone();
        }
        sqlx::query(
            "UPDATE users SET role = $1, disabled_at = $2, password_hash = $3 WHERE id = $4",
        )
        .bind(after.role.as_str())
        .bind(after.disabled_at)
        .bind(&after.password_hash)
        .bind(after.id)
        .execute(&mut *tx)
        .await?;
        if after.disabled_at.is_some() || change.password_hash.is_some() {
            sqlx::query("DELETE FROM sessions WHERE user_id = $1")
                .bind(after.id)
                .execute(&mut *tx)
                .await?;
        }
        insert_audit_in(&mut tx, &audit(&before, &after)).await?;
        tx.commit().await?;
        Ok(after)
    }

    /// Records a successful login.
    pub async fn record_login(&self, user_id: i64, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET last_login_at = $1 WHERE id = $2")
            .bind(now)
            .bind(user_id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Stores a token's hash and its audit entry (`audit` gets the new row) in one
    /// transaction. `Conflict("token_hash")` if that hash exists; `Invalid` if the user does
    /// not.
    pub async fn create_token<F>(
        &self,
        t: &NewToken<'_>,
        now: i64,
        audit: F,
    ) -> Result<TokenRow, StoreError>
    where
        F: FnOnce(&TokenRow) -> NewAudit + Send,
    {
        non_empty("name", t.name)?;
        non_empty("token_hash", t.token_hash)?;
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "INSERT INTO tokens (name, token_hash, user_id, role, expires_at, created_at) \
             SELECT $1, $2, id, $3, $4, $5 FROM users WHERE id = $6 RETURNING id",
        )
        .bind(t.name)
        .bind(t.token_hash)
        .bind(t.role.map(Role::as_str))
        .bind(t.expires_at)
        .bind(now)
        .bind(t.user_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(StoreError::Invalid(format!(
                "user_id: no user {}",
                t.user_id
            )));
        };
        let id = i64_col(&row, "id")?;
        let row = sqlx::query(concat!(
            "SELECT ",
            token_cols!(),
            " FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.id = $1"
        ))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let token = token_row(&row)?;
        insert_audit_in(&mut tx, &audit(&token)).await?;
        tx.commit().await?;
        Ok(token)
    }

    /// The token with this hash when it authenticates at `now`: not revoked, not expired, its
    /// user not disabled. Marks it used at most once per [`LAST_USED_RESOLUTION_MS`].
    pub async fn find_token(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<TokenAuth>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            token_cols!(),
            ", u.role AS user_role FROM tokens t JOIN users u ON u.id = t.user_id \
             WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND u.disabled_at IS NULL \
             AND (t.expires_at IS NULL OR t.expires_at > $2)"
        ))
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.read)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut token = token_row(&row)?;
        let user_role: Role = word(&row, "user_role")?;
        let stale = token
            .last_used_at
            .is_none_or(|t| now.saturating_sub(t) >= LAST_USED_RESOLUTION_MS);
        if stale {
            sqlx::query("UPDATE tokens SET last_used_at = $1 WHERE id = $2")
                .bind(now)
                .bind(token.id)
                .execute(&self.write)
                .await?;
            token.last_used_at = Some(now);
        }
        Ok(Some(TokenAuth { token, user_role }))
    }

    /// Tokens, revoked ones included, by id: every user's, or `user_id`'s only.
    pub async fn list_tokens(&self, user_id: Option<i64>) -> Result<Vec<TokenRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            token_cols!(),
            " FROM tokens t JOIN users u ON u.id = t.user_id \
             WHERE ($1 IS NULL OR t.user_id = $1) ORDER BY t.id"
        ))
        .bind(user_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(token_row).collect()
    }

    /// Revokes a token (only if `user_id` owns it, when given) and writes its audit entry in
    /// one transaction. None if there is no such token, it was already revoked, or it is
    /// someone else's.
    pub async fn revoke_token<F>(
        &self,
        id: i64,
        user_id: Option<i64>,
        now: i64,
        audit: F,
    ) -> Result<Option<TokenRow>, StoreError>
    where
        F: FnOnce(&TokenRow) -> NewAudit + Send,
    {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL \
             AND ($3 IS NULL OR user_id = $3)",
        )
        .bind(now)
        .bind(id)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        let row = sqlx::query(concat!(
            "SELECT ",
            token_cols!(),
            " FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.id = $1"
        ))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let token = token_row(&row)?;
        insert_audit_in(&mut tx, &audit(&token)).await?;
        tx.commit().await?;
        Ok(Some(token))
    }
}
