//! Web UI sessions and failed-login counters. The server hashes the session secret before it
//! reaches the store and decides expiry and delays; the store keeps the rows.
//!
//! Not for cookies, CSRF checks or password hashing: those belong to the server's `ui` module.

use sqlx::any::AnyRow;

use crate::row::{i64_col, text};
use crate::store::map_opt;
use crate::{Store, StoreError};

/// `last_seen_at` is rewritten at most this often (or a quarter of the idle limit when that
/// is shorter), so that every page view is not a write.
pub const SESSION_TOUCH_MS: i64 = 60_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// The public half of the cookie.
    pub id: String,
    /// SHA-256 (hex) of the secret half of the cookie.
    pub secret_hash: String,
    pub user_id: i64,
    pub username: String,
    /// The user's role, as it is now.
    pub role: cronium_model::Role,
    pub csrf_token: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    /// Absolute end of the session.
    pub expires_at: i64,
}

/// A session to create.
#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    pub id: &'a str,
    pub secret_hash: &'a str,
    pub user_id: i64,
    pub csrf_token: &'a str,
    pub expires_at: i64,
}

fn session_row(row: &AnyRow) -> Result<SessionRow, StoreError> {
    Ok(SessionRow {
        id: text(row, "id")?,
        secret_hash: text(row, "secret_hash")?,
        user_id: i64_col(row, "user_id")?,
        username: text(row, "username")?,
        role: crate::row::word(row, "role")?,
        csrf_token: text(row, "csrf_token")?,
        created_at: i64_col(row, "created_at")?,
        last_seen_at: i64_col(row, "last_seen_at")?,
        expires_at: i64_col(row, "expires_at")?,
    })
}

impl Store {
    /// Creates a session; `replaces`, when given, is deleted in the same transaction (the id
    /// rotates at login: a session id known before the login is worthless after it).
    pub async fn create_session(
        &self,
        s: &NewSession<'_>,
        replaces: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        if let Some(old) = replaces {
            sqlx::query("DELETE FROM sessions WHERE id = $1")
                .bind(old)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO sessions (id, secret_hash, user_id, csrf_token, created_at, last_seen_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $5, $6)",
        )
        .bind(s.id)
        .bind(s.secret_hash)
        .bind(s.user_id)
        .bind(s.csrf_token)
        .bind(now)
        .bind(s.expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The session with this id, with its user's name and role; None when there is none or
    /// its user is disabled (expiry is the caller's decision: it knows the idle limit).
    pub async fn get_session(&self, id: &str) -> Result<Option<SessionRow>, StoreError> {
        let row = sqlx::query(
            "SELECT s.id, s.secret_hash, s.user_id, u.username, u.role, s.csrf_token, s.created_at, \
             s.last_seen_at, s.expires_at FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.id = $1 AND u.disabled_at IS NULL",
        )
        .bind(id)
        .fetch_optional(&self.read)
        .await?;
        map_opt(row, session_row)
    }

    /// Records activity, at most once per `resolution_ms` (see [`SESSION_TOUCH_MS`]).
    pub async fn touch_session(
        &self,
        session: &SessionRow,
        now: i64,
        resolution_ms: i64,
    ) -> Result<(), StoreError> {
        if now - session.last_seen_at < resolution_ms {
            return Ok(());
        }
        sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id = $2")
            .bind(now)
            .bind(&session.id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Ends a session (logout, expiry). False when there was none.
    pub async fn delete_session(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(id)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Ends every session of a user (logout everywhere); returns how many.
    pub async fn delete_user_sessions(&self, user_id: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected())
    }

    /// Deletes sessions past their absolute end or idle since before `idle_before`.
    pub async fn delete_expired_sessions(
        &self,
        now: i64,
        idle_before: i64,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1 OR last_seen_at < $2")
            .bind(now)
            .bind(idle_before)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected())
    }

    /// `(failures, last failure)` recorded for `key` since its last success.
    pub async fn login_failures(&self, key: &str) -> Result<Option<(i64, i64)>, StoreError> {
        let row = sqlx::query("SELECT failures, last_at FROM login_failures WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.read)
            .await?;
        map_opt(row, |r| {
            Ok((i64_col(r, "failures")?, i64_col(r, "last_at")?))
        })
    }

    /// Counts one more failed login for `key`; returns the new count.
    pub async fn record_login_failure(&self, key: &str, now: i64) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "INSERT INTO login_failures (key, failures, last_at) VALUES ($1, 1, $2) \
             ON CONFLICT (key) DO UPDATE SET failures = login_failures.failures + 1, last_at = excluded.last_at \
             RETURNING failures",
        )
        .bind(key)
        .bind(now)
        .fetch_one(&self.write)
        .await?;
        i64_col(&row, "failures")
    }

    /// Forgets the failures of `key` (after a successful login).
    pub async fn clear_login_failures(&self, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM login_failures WHERE key = $1")
            .bind(key)
            .execute(&self.write)
            .await?;
        Ok(())
    }
}
