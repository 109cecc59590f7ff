//! Notification channels and the outbox.
//!
//! A channel's settings are JSON (`config`) and ciphertext (`secret`, made by the caller); the
//! store knows neither the kinds nor what a message says. The outbox is written in the
//! transaction that marks a job or workflow run `notified`, so that each final state is looked
//! at once and its notifications are never lost nor doubled ([`Store::record_notifications`]);
//! deliveries are claimed for a while ([`Store::claim_notifications`]), then marked delivered or
//! failed with the next attempt's time, each fenced by the attempt number it was claimed with.

use serde_json::Value;
use sqlx::any::AnyRow;

use crate::row::{i64_col, json, opt_i64, opt_text, text, to_json};
use crate::store::map_opt;
use crate::{Store, StoreError};

/// What a notification reports on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotifySource {
    Job,
    WorkflowRun,
}

impl NotifySource {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifySource::Job => "job",
            NotifySource::WorkflowRun => "workflow_run",
        }
    }

    fn table(self) -> &'static str {
        match self {
            NotifySource::Job => "jobs",
            NotifySource::WorkflowRun => "workflow_runs",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewChannel {
    pub name: String,
    /// `email` | `slack` | `discord` | `webhook` (checked by the caller).
    pub kind: String,
    /// The settings that are not secret.
    pub config: Value,
    /// Ciphertext of the secret settings.
    pub secret: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChannelRow {
    pub id: i64,
    pub name: String,
    pub kind: String,
    pub config: Value,
    pub secret: Option<Vec<u8>>,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_success_at: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
    /// Notifications not yet delivered (and not given up).
    pub pending: i64,
    /// Notifications given up after their last attempt.
    pub given_up: i64,
}

macro_rules! channel_cols {
    () => {
        "c.id AS id, c.name AS name, c.kind AS kind, c.config AS config, c.secret AS secret, \
         c.created_at AS created_at, c.updated_at AS updated_at, \
         c.last_success_at AS last_success_at, c.last_error AS last_error, \
         c.last_error_at AS last_error_at, \
         (SELECT COUNT(*) FROM notifications n WHERE n.channel_id = c.id \
            AND n.delivered_at IS NULL AND n.gave_up_at IS NULL) AS pending, \
         (SELECT COUNT(*) FROM notifications n WHERE n.channel_id = c.id \
            AND n.gave_up_at IS NOT NULL) AS given_up"
    };
}

fn channel_row(row: &AnyRow) -> Result<ChannelRow, StoreError> {
    Ok(ChannelRow {
        id: i64_col(row, "id")?,
        name: text(row, "name")?,
        kind: text(row, "kind")?,
        config: json(row, "config")?,
        secret: sqlx::Row::try_get(row, "secret")?,
        created_at: i64_col(row, "created_at")?,
        updated_at: i64_col(row, "updated_at")?,
        last_success_at: opt_i64(row, "last_success_at")?,
        last_error: opt_text(row, "last_error")?,
        last_error_at: opt_i64(row, "last_error_at")?,
        pending: i64_col(row, "pending")?,
        given_up: i64_col(row, "given_up")?,
    })
}

/// A notification to write with a final state.
#[derive(Debug, Clone, PartialEq)]
pub struct NewNotification {
    pub channel_id: i64,
    /// Which rule matched: `failure` | `recovery` | `success` | `timeout`.
    pub on: String,
    pub message: Value,
}

/// A claimed delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub id: i64,
    pub channel_id: i64,
    pub source: String,
    pub source_id: i64,
    pub on: String,
    pub message: Value,
    /// This attempt's number (1 for the first): the fencing token of its outcome.
    pub attempts: i64,
    pub last_error: Option<String>,
    pub delivered_at: Option<i64>,
    pub gave_up_at: Option<i64>,
}

fn outbox_row(row: &AnyRow) -> Result<OutboxRow, StoreError> {
    Ok(OutboxRow {
        id: i64_col(row, "id")?,
        channel_id: i64_col(row, "channel_id")?,
        source: text(row, "source_kind")?,
        source_id: i64_col(row, "source_id")?,
        on: text(row, "on_kind")?,
        message: json(row, "message")?,
        attempts: i64_col(row, "attempts")?,
        last_error: opt_text(row, "last_error")?,
        delivered_at: opt_i64(row, "delivered_at")?,
        gave_up_at: opt_i64(row, "gave_up_at")?,
    })
}

const OUTBOX_COLS: &str = "id, channel_id, source_kind, source_id, on_kind, message, attempts, \
     last_error, delivered_at, gave_up_at";

impl Store {
    /// Creates a channel (a conflict on `name` when taken).
    pub async fn create_channel(
        &self,
        channel: &NewChannel,
        now: i64,
    ) -> Result<ChannelRow, StoreError> {
        if channel.name.trim().is_empty() {
            return Err(StoreError::Invalid("name: must not be empty".into()));
        }
        let done = sqlx::query(
            "INSERT INTO channels (name, kind, config, secret, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(&channel.name)
        .bind(&channel.kind)
        .bind(to_json("config", &channel.config)?)
        .bind(channel.secret.clone())
        .bind(now)
        .execute(&self.write)
        .await
        .map_err(|e| match StoreError::from_db(e) {
            StoreError::Conflict(_) => StoreError::Conflict("name".into()),
            other => other,
        })?;
        debug_assert!(done.rows_affected() == 1);
        self.get_channel_on(&self.write, &channel.name)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("channel `{}`", channel.name)))
    }

    pub async fn get_channel(&self, name: &str) -> Result<Option<ChannelRow>, StoreError> {
        self.get_channel_on(&self.read, name).await
    }

    async fn get_channel_on(
        &self,
        pool: &sqlx::AnyPool,
        name: &str,
    ) -> Result<Option<ChannelRow>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            channel_cols!(),
            " FROM channels c WHERE c.name = $1"
        ))
        .bind(name)
        .fetch_optional(pool)
        .await?;
        map_opt(row, channel_row)
    }

    pub async fn get_channel_by_id(&self, id: i64) -> Result<Option<ChannelRow>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            channel_cols!(),
            " FROM channels c WHERE c.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.read)
        .await?;
        map_opt(row, channel_row)
    }

    /// Every channel, by name, with its delivery state.
    pub async fn list_channels(&self) -> Result<Vec<ChannelRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            channel_cols!(),
            " FROM channels c ORDER BY c.name"
        ))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(channel_row).collect()
    }

    /// Deletes a channel and its undelivered notifications; false when there was none.
    pub async fn delete_channel(&self, name: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "DELETE FROM notifications WHERE channel_id IN (SELECT id FROM channels WHERE name = $1)",
        )
        .bind(name)
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query("DELETE FROM channels WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Up to `limit` jobs (or workflow runs) in a final state whose notifications were not
    /// written yet, oldest first.
    pub async fn pending_notify_sources(
        &self,
        source: NotifySource,
        limit: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let finals = match source {
            NotifySource::Job => "'succeeded', 'failed', 'timed_out', 'cancelled', 'partial'",
            NotifySource::WorkflowRun => "'succeeded', 'failed', 'timed_out', 'cancelled'",
        };
        let sql = format!(
            "SELECT id FROM {} WHERE notified = 0 AND status IN ({finals}) ORDER BY id LIMIT $1",
            source.table()
        );
        let rows = sqlx::query(&sql).bind(limit).fetch_all(&self.read).await?;
        rows.iter().map(|r| i64_col(r, "id")).collect()
    }

    /// Marks jobs (or runs) notified that have nothing to notify, in one statement.
    pub async fn mark_notified(&self, source: NotifySource, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let list = ids
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        // Integers only: nothing to bind.
        let sql = format!(
            "UPDATE {} SET notified = 1 WHERE notified = 0 AND id IN ({list})",
            source.table()
        );
        sqlx::query(&sql).execute(&self.write).await?;
        Ok(())
    }

    /// The status of the last job of `event_id` (or run of the workflow `event_id`) that ended
    /// before `finished_at`, other than `id` and not cancelled: what `recovery` compares with.
    pub async fn previous_final_status(
        &self,
        source: NotifySource,
        owner_id: i64,
        id: i64,
        finished_at: i64,
    ) -> Result<Option<String>, StoreError> {
        let (owner_col, finals) = match source {
            NotifySource::Job => ("event_id", "'succeeded', 'failed', 'timed_out', 'partial'"),
            NotifySource::WorkflowRun => ("workflow_id", "'succeeded', 'failed', 'timed_out'"),
        };
        let sql = format!(
            "SELECT status FROM {} WHERE {owner_col} = $1 AND id <> $2 AND status IN ({finals}) \
             AND finished_at IS NOT NULL AND finished_at <= $3 \
             ORDER BY finished_at DESC, id DESC LIMIT 1",
            source.table()
        );
        let row = sqlx::query(&sql)
            .bind(owner_id)
            .bind(id)
            .bind(finished_at)
            .fetch_optional(&self.read)
            .await?;
        map_opt(row, |r| text(r, "status"))
    }

    /// Marks the job (or run) `id` notified and writes its notifications, in one transaction.
    /// False, with nothing written, when it was marked already (another server did it).
    pub async fn record_notifications(
        &self,
        source: NotifySource,
        id: i64,
        notifications: &[NewNotification],
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let sql = format!(
            "UPDATE {} SET notified = 1 WHERE id = $1 AND notified = 0",
            source.table()
        );
        let marked = sqlx::query(&sql).bind(id).execute(&mut *tx).await?;
        if marked.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        for n in notifications {
            sqlx::query(
                "INSERT INTO notifications (channel_id, source_kind, source_id, on_kind, message, \
                 attempts, next_attempt_at, created_at) VALUES ($1, $2, $3, $4, $5, 0, $6, $6) \
                 ON CONFLICT (channel_id, source_kind, source_id) DO NOTHING",
            )
            .bind(n.channel_id)
            .bind(source.as_str())
            .bind(id)
            .bind(&n.on)
            .bind(to_json("message", &n.message)?)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Claims up to `limit` due deliveries until `claim_until`: each one's attempt count goes
    /// up by one (the token its outcome is fenced by). A claim not ended by then (the server
    /// stopped) is claimed again.
    pub async fn claim_notifications(
        &self,
        now: i64,
        claim_until: i64,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let due = "delivered_at IS NULL AND gave_up_at IS NULL AND next_attempt_at <= $2 \
                   AND (claimed_until IS NULL OR claimed_until < $2)";
        let sql = format!(
            "UPDATE notifications SET claimed_until = $1, attempts = attempts + 1 \
             WHERE id IN (SELECT id FROM notifications WHERE {due} ORDER BY id LIMIT $3) \
             AND {due} RETURNING {OUTBOX_COLS}"
        );
        let rows = sqlx::query(&sql)
            .bind(claim_until)
            .bind(now)
            .bind(limit)
            .fetch_all(&self.write)
            .await?;
        let mut out = rows.iter().map(outbox_row).collect::<Result<Vec<_>, _>>()?;
        out.sort_by_key(|n| n.id);
        Ok(out)
    }

    /// The claimed delivery `id` (at attempt `attempt`) went through. False when the claim was
    /// lost (another delivery task took it over).
    pub async fn notification_delivered(
        &self,
        id: i64,
        attempt: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE notifications SET delivered_at = $1, claimed_until = NULL, last_error = NULL \
             WHERE id = $2 AND attempts = $3 AND delivered_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .bind(attempt)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            sqlx::query(
                "UPDATE channels SET last_success_at = $1 \
                 WHERE id = (SELECT channel_id FROM notifications WHERE id = $2)",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// The claimed delivery `id` failed with `error`: tried again at `retry_at`, or given up
    /// when None. The channel's last error says so either way.
    pub async fn notification_failed(
        &self,
        id: i64,
        attempt: i64,
        error: &str,
        retry_at: Option<i64>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE notifications SET claimed_until = NULL, last_error = $1, \
             next_attempt_at = $2, gave_up_at = $3 \
             WHERE id = $4 AND attempts = $5 AND delivered_at IS NULL",
        )
        .bind(error)
        .bind(retry_at.unwrap_or(now))
        .bind(if retry_at.is_none() { Some(now) } else { None })
        .bind(id)
        .bind(attempt)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            sqlx::query(
                "UPDATE channels SET last_error = $1, last_error_at = $2 \
                 WHERE id = (SELECT channel_id FROM notifications WHERE id = $3)",
            )
            .bind(error)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a channel test's outcome on the channel (no outbox row).
    pub async fn channel_tested(
        &self,
        channel_id: i64,
        error: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        let q = match error {
            None => sqlx::query("UPDATE channels SET last_success_at = $1 WHERE id = $2")
                .bind(now)
                .bind(channel_id),
            Some(e) => {
                sqlx::query("UPDATE channels SET last_error = $3, last_error_at = $1 WHERE id = $2")
                    .bind(now)
                    .bind(channel_id)
                    .bind(e)
            }
        };
        q.execute(&self.write).await?;
        Ok(())
    }

    /// The notifications of a channel, oldest first (for tests and diagnostics).
    pub async fn list_notifications(&self, channel_id: i64) -> Result<Vec<OutboxRow>, StoreError> {
        let sql =
            format!("SELECT {OUTBOX_COLS} FROM notifications WHERE channel_id = $1 ORDER BY id");
        let rows = sqlx::query(&sql)
            .bind(channel_id)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(outbox_row).collect()
    }

    /// When the next delivery is due (None: nothing pending), so a delivery task sleeps until
    /// then.
    pub async fn next_notification_at(&self) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(
            "SELECT MIN(CASE WHEN claimed_until IS NOT NULL AND claimed_until > next_attempt_at \
             THEN claimed_until ELSE next_attempt_at END) AS t FROM notifications \
             WHERE delivered_at IS NULL AND gave_up_at IS NULL",
        )
        .fetch_one(&self.read)
        .await?;
        opt_i64(&row, "t")
    }
}
