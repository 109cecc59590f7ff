//! Turning an event into a job: shared by manual runs (API, CLI) and the scheduler, so that both
//! apply the same retry policy, overlap flag and execution limit.

use cronium_core::spec::{EventSpec, EventStatus, Overlap};
use cronium_store::{EventRow, NewJob, Store, StoreError};
use serde_json::Value;

/// The job for one run of `event`. `input` None means the event's default input.
pub fn new_job(
    event: &EventRow,
    spec: &EventSpec,
    trigger: &str,
    input: Option<Value>,
    run_at: i64,
    scheduled_for: Option<i64>,
) -> NewJob {
    NewJob {
        event_id: Some(event.id),
        event_name: event.name.clone(),
        event_version: event.version,
        trigger: trigger.to_string(),
        input: input.unwrap_or_else(|| spec.input.clone()),
        run_at,
        max_attempts: spec.retries.max_attempts as i32,
        backoff_ms: spec.retries.backoff.as_millis(),
        max_backoff_ms: spec.retries.max_backoff.as_millis(),
        serial: spec.overlap == Overlap::Queue,
        scheduled_for,
        timeout_ms: spec.timeout.as_millis(),
    }
}

/// After a job was created: an event with `max_executions` pauses itself once it has that many
/// runs. Returns true when it was paused.
pub async fn apply_execution_limit(
    store: &Store,
    event: &EventRow,
    spec: &EventSpec,
    now: i64,
) -> Result<bool, StoreError> {
    if spec.max_executions == 0 {
        return Ok(false);
    }
    let count = store.count_jobs_for_event(event.id).await?;
    if count >= spec.max_executions as i64 {
        store
            .set_event_status(event.id, EventStatus::Paused.as_str(), now)
            .await?;
        store.set_next_fire(event.id, None).await?;
        tracing::info!(event = %event.name, runs = count, "execution limit reached; event paused");
        return Ok(true);
    }
    Ok(false)
}
