//! Turning an event into a job: shared by manual runs (API, CLI) and the scheduler, so that both
//! apply the same retry policy, overlap flag and execution limit. The limit itself is enforced by
//! the store, in the transaction that inserts the job (see `Store::enqueue`).

use cronium_core::spec::{EventSpec, Overlap};
use cronium_model::{Routing, Trigger};
use cronium_store::{EventRow, NewJob};
use serde_json::Value;

/// The job for one run of `event`. `input` None means the event's default input.
pub fn new_job(
    event: &EventRow,
    spec: &EventSpec,
    trigger: Trigger,
    input: Option<Value>,
    run_at: i64,
    scheduled_for: Option<i64>,
) -> NewJob {
    NewJob {
        event_id: Some(event.id),
        event_name: event.name.clone(),
        event_version: event.version,
        trigger,
        input: input.unwrap_or_else(|| spec.input.clone()),
        run_at,
        max_attempts: spec.retries.max_attempts as i32,
        backoff_ms: spec.retries.backoff.as_millis(),
        max_backoff_ms: spec.retries.max_backoff.as_millis(),
        serial: spec.overlap == Overlap::Queue,
        scheduled_for,
        timeout_ms: spec.timeout.as_millis(),
        max_executions: i64::try_from(spec.max_executions).unwrap_or(i64::MAX),
        routing: Routing {
            capability: spec.capability(),
            agent_tags: spec.agent_tags.clone(),
        },
    }
}
