//! The store's error type, and the one place where database constraint violations are turned into
//! [`StoreError::Conflict`] naming the field at fault.
//!
//! Not for HTTP status mapping: the server maps these variants to status codes at its edge.

/// Everything a store operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The thing the operation targets does not exist (the message says what).
    #[error("not found: {0}")]
    NotFound(String),
    /// A uniqueness rule was violated; the payload is the field at fault (e.g. `name`).
    #[error("conflict: {0} is already taken")]
    Conflict(String),
    /// The caller passed a value the store refuses (the message names the field and the problem).
    /// Nothing was written.
    #[error("invalid {0}")]
    Invalid(String),
    /// The event already has `limit` jobs (`max_executions`): no job was created, and the event
    /// is paused.
    #[error(
        "event `{event}` is paused: it reached its limit of {limit} executions (max_executions)"
    )]
    LimitReached { event: String, limit: i64 },
    /// A value read back from the database cannot be decoded (e.g. JSON text that does not parse).
    #[error("corrupt data in the store: {0}")]
    Corrupt(String),
    #[error("unsupported database URL {0:?}: expected sqlite:PATH or postgres://...")]
    UnsupportedUrl(String),
    #[error(transparent)]
    Database(sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot prepare the database location: {0}")]
    Io(#[from] std::io::Error),
}

impl StoreError {
    /// Wraps a database error, mapping unique-constraint violations to `Conflict(field)`.
    ///
    /// Every query result goes through here (via `?`), so callers never inspect
    /// driver error codes themselves.
    pub(crate) fn from_db(err: sqlx::Error) -> StoreError {
        if let sqlx::Error::Database(db) = &err {
            if db.is_unique_violation() {
                // PostgreSQL names the constraint; SQLite only says
                // "UNIQUE constraint failed: table.col, table.col".
                let key = match db.constraint() {
                    Some(c) => c.to_string(),
                    None => db
                        .message()
                        .rsplit_once(": ")
                        .map(|(_, cols)| cols.to_string())
                        .unwrap_or_default(),
                };
                return StoreError::Conflict(conflict_field(&key).to_string());
            }
        }
        StoreError::Database(err)
    }
}

/// Maps a PostgreSQL constraint name or an SQLite column list to the field a user sees.
fn conflict_field(key: &str) -> &str {
    match key {
        "events_name_key" | "events.name" => "name",
        "variables_pkey" | "variables.name" => "name",
        "users_username_key" | "users.username" => "username",
        "tokens_token_hash_key" | "tokens.token_hash" => "token_hash",
        "logs_pkey" | "logs.job_id, logs.seq" => "seq",
        "jobs_event_id_scheduled_for_key" | "jobs.event_id, jobs.scheduled_for" => "scheduled_for",
        "jobs_serial_running" | "jobs.event_id" => "serial",
        "event_versions_pkey" | "event_versions.event_id, event_versions.version" => "version",
        "servers_name_key" | "servers.name" => "name",
        "agent_tokens_name_key" | "agent_tokens.name" => "name",
        "agent_tokens_token_hash_key" | "agent_tokens.token_hash" => "token_hash",
        "workflows_name_key" | "workflows.name" => "name",
        "workflow_runs_workflow_id_scheduled_for_key"
        | "workflow_runs.workflow_id, workflow_runs.scheduled_for" => "scheduled_for",
        // A constraint added without an entry here: SQLite's "table.col" still gives the column
        // (the conformance suite catches a PostgreSQL name missing from this list).
        other => other.rsplit_once('.').map_or(other, |(_, col)| col),
    }
}

/// Every `?` on a sqlx result goes through the conflict mapping.
impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> StoreError {
        StoreError::from_db(err)
    }
}

#[cfg(test)]
mod tests {
    use super::conflict_field;

    #[test]
    fn both_dialects_name_the_same_field() {
        assert_eq!(
            conflict_field("events_name_key"),
            conflict_field("events.name")
        );
        assert_eq!(conflict_field("logs_pkey"), "seq");
        assert_eq!(conflict_field("logs.job_id, logs.seq"), "seq");
        assert_eq!(conflict_field("something_else"), "something_else");
    }
}
