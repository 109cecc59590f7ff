//! Users and API tokens. Only hashes are stored: the caller hashes passwords and tokens before
//! they reach the store and compares hashes it reads back.
//!
//! Not for hashing or permission checks: those belong to the server.

use serde::Serialize;
use sqlx::any::AnyRow;

use crate::row::{i64_col, opt_i64, text};
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
    pub role: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenRow {
    pub id: i64,
    pub name: String,
    pub user_id: i64,
    pub created_at: i64,
    /// Within [`LAST_USED_RESOLUTION_MS`] of the last use.
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

macro_rules! token_cols {
    () => {
        "id, name, user_id, created_at, last_used_at, revoked_at"
    };
}

fn token_row(row: &AnyRow) -> Result<TokenRow, StoreError> {
    Ok(TokenRow {
        id: i64_col(row, "id")?,
        name: text(row, "name")?,
        user_id: i64_col(row, "user_id")?,
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
        role: text(row, "role")?,
        created_at: i64_col(row, "created_at")?,
    })
}

fn non_empty(field: &str, value: &str) -> Result<(), StoreError> {
    if value.trim().is_empty() {
        return Err(StoreError::Invalid(format!("{field}: must not be empty")));
    }
    Ok(())
}

impl Store {
    /// Returns the new user's id; `Conflict("username")` if taken.
    pub async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        role: &str,
        now: i64,
    ) -> Result<i64, StoreError> {
        non_empty("username", username)?;
        non_empty("password_hash", password_hash)?;
        non_empty("role", role)?;
        let row = sqlx::query(
            "INSERT INTO users (username, password_hash, role, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(username)
        .bind(password_hash)
        .bind(role)
        .bind(now)
        .fetch_one(&self.write)
        .await?;
        i64_col(&row, "id")
    }

    pub async fn count_users(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(&self.read)
            .await?;
        i64_col(&row, "n")
    }

    pub async fn get_user(&self, id: i64) -> Result<Option<UserRow>, StoreError> {
        let row = sqlx::query(
            "SELECT id, username, password_hash, role, created_at FROM users WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.read)
        .await?;
        map_opt(row, user_row)
    }

    pub async fn get_user_by_name(&self, username: &str) -> Result<Option<UserRow>, StoreError> {
        let row = sqlx::query(
            "SELECT id, username, password_hash, role, created_at FROM users WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(&self.read)
        .await?;
        map_opt(row, user_row)
    }

    /// Stores a token's hash for `user_id`. `Conflict("token_hash")` if that hash exists;
    /// `Invalid` if the user does not.
    pub async fn create_token(
        &self,
        name: &str,
        token_hash: &str,
        user_id: i64,
        now: i64,
    ) -> Result<TokenRow, StoreError> {
        non_empty("name", name)?;
        non_empty("token_hash", token_hash)?;
        let row = sqlx::query(concat!(
            "INSERT INTO tokens (name, token_hash, user_id, created_at) ",
            "SELECT $1, $2, id, $3 FROM users WHERE id = $4 RETURNING ",
            token_cols!()
        ))
        .bind(name)
        .bind(token_hash)
        .bind(now)
        .bind(user_id)
        .fetch_optional(&self.write)
        .await?;
        map_opt(row, token_row)?
            .ok_or_else(|| StoreError::Invalid(format!("user_id: no user {user_id}")))
    }

    /// The unrevoked token with this hash, marking it used at `now`.
    pub async fn find_token(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<TokenRow>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            token_cols!(),
            " FROM tokens WHERE token_hash = $1 AND revoked_at IS NULL"
        ))
        .bind(token_hash)
        .fetch_optional(&self.read)
        .await?;
        let Some(mut token) = map_opt(row, token_row)? else {
            return Ok(None);
        };
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
        Ok(Some(token))
    }

    /// All tokens, revoked ones included, by id.
    pub async fn list_tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            token_cols!(),
            " FROM tokens ORDER BY id"
        ))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(token_row).collect()
    }

    /// False if there is no such token or it was already revoked.
    pub async fn revoke_token(&self, id: i64, now: i64) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(id)
                .execute(&self.write)
                .await?;
        Ok(done.rows_affected() > 0)
    }
}
