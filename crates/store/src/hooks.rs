//! Webhook secrets and the replay table.
//!
//! A hook belongs to an event or a workflow (`HookKind`) by name; its secret is ciphertext the
//! caller made (the store never sees it in clear). `revealed` says whether the secret was shown
//! once already. The replay table remembers each accepted signature (or GitHub delivery id)
//! until it expires; `remember_delivery` refuses one seen before, and prunes what expired.

use sqlx::any::AnyRow;

use crate::row::{bool_col, i64_col, text};
use crate::store::map_opt;
use crate::{Store, StoreError};

/// What a hook starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookKind {
    Event,
    Workflow,
}

impl HookKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HookKind::Event => "event",
            HookKind::Workflow => "workflow",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HookRow {
    pub kind: HookKind,
    pub name: String,
    /// Ciphertext, opaque to the store.
    pub secret: Vec<u8>,
    /// The secret was shown once already.
    pub revealed: bool,
    pub created_at: i64,
    pub rotated_at: i64,
}

fn hook_row(kind: HookKind, row: &AnyRow) -> Result<HookRow, StoreError> {
    Ok(HookRow {
        kind,
        name: text(row, "name")?,
        secret: sqlx::Row::try_get(row, "secret")?,
        revealed: bool_col(row, "revealed")?,
        created_at: i64_col(row, "created_at")?,
        rotated_at: i64_col(row, "rotated_at")?,
    })
}

impl Store {
    /// The hook of `kind` `name`, if a secret was ever made for it.
    pub async fn get_hook(
        &self,
        kind: HookKind,
        name: &str,
    ) -> Result<Option<HookRow>, StoreError> {
        let row = sqlx::query(
            "SELECT name, secret, revealed, created_at, rotated_at FROM hooks \
             WHERE kind = $1 AND name = $2",
        )
        .bind(kind.as_str())
        .bind(name)
        .fetch_optional(&self.read)
        .await?;
        map_opt(row, |r| hook_row(kind, r))
    }

    /// Stores `secret` as the hook's unless it has one already; answers the hook as stored
    /// (the existing one wins a race).
    pub async fn ensure_hook(
        &self,
        kind: HookKind,
        name: &str,
        secret: &[u8],
        now: i64,
    ) -> Result<HookRow, StoreError> {
        sqlx::query(
            "INSERT INTO hooks (kind, name, secret, revealed, created_at, rotated_at) \
             VALUES ($1, $2, $3, 0, $4, $4) ON CONFLICT (kind, name) DO NOTHING",
        )
        .bind(kind.as_str())
        .bind(name)
        .bind(secret.to_vec())
        .bind(now)
        .execute(&self.write)
        .await?;
        let row = sqlx::query(
            "SELECT name, secret, revealed, created_at, rotated_at FROM hooks \
             WHERE kind = $1 AND name = $2",
        )
        .bind(kind.as_str())
        .bind(name)
        .fetch_one(&self.write)
        .await?;
        hook_row(kind, &row)
    }

    /// Marks the secret shown; false when it was shown before (or there is no hook), so that
    /// of two concurrent callers only one sees it.
    pub async fn reveal_hook(&self, kind: HookKind, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE hooks SET revealed = 1 WHERE kind = $1 AND name = $2 AND revealed = 0",
        )
        .bind(kind.as_str())
        .bind(name)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Replaces the hook's secret (creating the hook when missing); the new one counts as
    /// shown (the caller shows it). Deliveries remembered for the old secret are forgotten.
    pub async fn rotate_hook(
        &self,
        kind: HookKind,
        name: &str,
        secret: &[u8],
        now: i64,
    ) -> Result<HookRow, StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO hooks (kind, name, secret, revealed, created_at, rotated_at) \
             VALUES ($1, $2, $3, 1, $4, $4) ON CONFLICT (kind, name) DO UPDATE SET \
             secret = excluded.secret, revealed = 1, rotated_at = excluded.rotated_at",
        )
        .bind(kind.as_str())
        .bind(name)
        .bind(secret.to_vec())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(
            "SELECT name, secret, revealed, created_at, rotated_at FROM hooks \
             WHERE kind = $1 AND name = $2",
        )
        .bind(kind.as_str())
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
        let hook = hook_row(kind, &row)?;
        tx.commit().await?;
        Ok(hook)
    }

    /// Forgets a hook and its deliveries (its event or workflow was deleted).
    pub async fn delete_hook(&self, kind: HookKind, name: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        for sql in [
            "DELETE FROM hooks WHERE kind = $1 AND name = $2",
            "DELETE FROM hook_replays WHERE kind = $1 AND name = $2",
        ] {
            sqlx::query(sql)
                .bind(kind.as_str())
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Remembers `key` (a signature, or a delivery id) for the hook until `expires_at`. False
    /// when it is remembered already: a replay. Entries past their expiry are pruned first.
    pub async fn remember_delivery(
        &self,
        kind: HookKind,
        name: &str,
        key: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM hook_replays WHERE expires_at < $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query(
            "INSERT INTO hook_replays (kind, name, replay_key, expires_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (kind, name, replay_key) DO NOTHING",
        )
        .bind(kind.as_str())
        .bind(name)
        .bind(key)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// How many deliveries are remembered (for tests and metrics).
    pub async fn count_remembered_deliveries(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM hook_replays")
            .fetch_one(&self.read)
            .await?;
        i64_col(&row, "n")
    }
}
