//! The audit log: append-only rows of who changed or ran what, from where, with the object
//! before and after. The store never updates a row (a trigger refuses it); retention deletes
//! rows past their age ([`Store::prune_audit_step`]).
//!
//! Not for deciding what goes in: the server builds the entries (and leaves secrets and
//! variable values out); users and tokens write theirs in the transaction of the change.

use serde::Serialize;
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{Any, Transaction};

use crate::row::{i64_col, json, opt_i64, opt_text, text, to_json};
use crate::{Store, StoreError};

/// An entry to append.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NewAudit {
    pub at: i64,
    /// The acting user's id (None: the system, or a failed login).
    pub actor_id: Option<i64>,
    /// The acting user's name at the time (`-` when there is none).
    pub actor: String,
    pub token_id: Option<i64>,
    pub session_id: Option<String>,
    /// The client's address.
    pub source: Option<String>,
    /// `event.apply`, `job.run`, `login.failed`...
    pub action: String,
    /// What the action was about (`event nightly`, `job 42`, the name tried at a login).
    pub target: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    /// `ok`, or why it failed.
    pub outcome: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRow {
    pub id: i64,
    #[serde(flatten)]
    pub entry: NewAudit,
}

/// Which entries to read, newest first: those with an id below `before_id` (the keyset of the
/// previous page), at or after `since`, by `actor`, with `action` (exact, or a prefix ending
/// in `.`: `event.` is every event action).
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub since: Option<i64>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub before_id: Option<i64>,
    pub limit: i64,
}

fn audit_row(row: &AnyRow) -> Result<AuditRow, StoreError> {
    let opt_json = |col: &str| -> Result<Option<Value>, StoreError> {
        Ok(match json(row, col)? {
            Value::Null => None,
            v => Some(v),
        })
    };
    Ok(AuditRow {
        id: i64_col(row, "id")?,
        entry: NewAudit {
            at: i64_col(row, "at")?,
            actor_id: opt_i64(row, "actor_id")?,
            actor: text(row, "actor")?,
            token_id: opt_i64(row, "token_id")?,
            session_id: opt_text(row, "session_id")?,
            source: opt_text(row, "source")?,
            action: text(row, "action")?,
            target: text(row, "target")?,
            before: opt_json("before_json")?,
            after: opt_json("after_json")?,
            outcome: text(row, "outcome")?,
        },
    })
}

const INSERT: &str = "INSERT INTO audit_log (at, actor_id, actor, token_id, session_id, source, \
    action, target, before_json, after_json, outcome) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id";

fn opt_json_text(field: &str, v: &Option<Value>) -> Result<Option<String>, StoreError> {
    v.as_ref().map(|v| to_json(field, v)).transpose()
}

/// Appends `e` inside `tx` (the transaction of the change it records).
pub(crate) async fn insert_audit_in(
    tx: &mut Transaction<'static, Any>,
    e: &NewAudit,
) -> Result<i64, StoreError> {
    let row = sqlx::query(INSERT)
        .bind(e.at)
        .bind(e.actor_id)
        .bind(&e.actor)
        .bind(e.token_id)
        .bind(e.session_id.as_deref())
        .bind(e.source.as_deref())
        .bind(&e.action)
        .bind(&e.target)
        .bind(opt_json_text("before", &e.before)?)
        .bind(opt_json_text("after", &e.after)?)
        .bind(&e.outcome)
        .fetch_one(&mut **tx)
        .await?;
    i64_col(&row, "id")
}

impl Store {
    /// Appends an entry on its own (for changes the store cannot join it to).
    pub async fn insert_audit(&self, e: &NewAudit) -> Result<i64, StoreError> {
        let mut tx = self.begin_write().await?;
        let id = insert_audit_in(&mut tx, e).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// A page of entries, newest first (see [`AuditFilter`]).
    pub async fn list_audit(&self, f: &AuditFilter) -> Result<Vec<AuditRow>, StoreError> {
        let (exact, prefix) = match f.action.as_deref() {
            Some(a) if a.ends_with('.') => (None, Some(format!("{a}%"))),
            Some(a) => (Some(a.to_string()), None),
            None => (None, None),
        };
        let rows = sqlx::query(
            "SELECT id, at, actor_id, actor, token_id, session_id, source, action, target, \
             before_json, after_json, outcome FROM audit_log \
             WHERE ($1 IS NULL OR id < $1) AND ($2 IS NULL OR at >= $2) \
             AND ($3 IS NULL OR actor = $3) AND ($4 IS NULL OR action = $4) \
             AND ($5 IS NULL OR action LIKE $5) \
             ORDER BY id DESC LIMIT $6",
        )
        .bind(f.before_id)
        .bind(f.since)
        .bind(f.actor.as_deref())
        .bind(exact)
        .bind(prefix)
        .bind(f.limit.clamp(1, 1000))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(audit_row).collect()
    }

    /// Deletes up to `limit` of the oldest entries older than `before` (retention); returns
    /// how many.
    pub async fn prune_audit_step(&self, before: i64, limit: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM audit_log WHERE id IN \
             (SELECT id FROM audit_log WHERE at < $1 ORDER BY id LIMIT $2)",
        )
        .bind(before)
        .bind(limit)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected())
    }

    /// How many entries are older than `before` (the dry run of pruning).
    pub async fn count_audit_before(&self, before: i64) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM audit_log WHERE at < $1")
            .bind(before)
            .fetch_one(&self.read)
            .await?;
        i64_col(&row, "n")
    }
}
