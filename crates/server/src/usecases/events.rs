//! Events: list, read, create, apply (create or update by name), save from the editor's YAML,
//! delete, run now, and the schedule preview. The checks that depend on this installation
//! (servers named by the target exist, container limits) are made here, for the API and the
//! pages alike.

use cronium_core::clock::now_ms;
use cronium_core::spec::{self, EventSpec, EventStatus};
use cronium_model::Trigger;
use cronium_store::{Applied, EventRow, JobFilter, JobRow};
use serde_json::Value;

use cronium_store::HookKind;

use super::{audit, channels, hooks, runs, Actor, UseCaseError, UseCaseResult};
use crate::scheduler;
use crate::state::AppState;

/// Every event, by name.
pub async fn list(state: &AppState) -> UseCaseResult<Vec<EventRow>> {
    Ok(state.store.list_events().await?)
}

pub async fn get(state: &AppState, name: &str) -> UseCaseResult<EventRow> {
    state
        .store
        .get_event_by_name(name)
        .await?
        .ok_or_else(|| UseCaseError::NotFound(format!("event `{name}` not found")))
}

/// The event's spec; a stored spec that no longer parses is the event's state (a conflict to
/// resolve by applying a valid version), not a server fault.
pub fn spec_of(event: &EventRow) -> UseCaseResult<EventSpec> {
    spec::from_value(event.spec.clone()).map_err(|e| UseCaseError::Conflict {
        field: Some("spec".into()),
        message: format!(
            "event `{}` is broken ({}); apply a valid version",
            event.name,
            event.broken.clone().unwrap_or_else(|| e.to_string())
        ),
    })
}

/// Checks what depends on this installation: servers named by the target exist, container
/// limits are within the configured maximums.
pub async fn validate_target(state: &AppState, spec: &EventSpec) -> UseCaseResult<()> {
    super::check_target(state, "target", &spec.target).await?;
    channels::check_notify(state, &spec.notify).await?;
    hooks::check_unique(state, HookKind::Event, &spec.name, spec.webhook).await
}

/// An event as the audit log shows it: version, status and the event file fields.
pub fn audit_json(e: &EventRow) -> Value {
    serde_json::json!({"version": e.version, "status": e.status, "spec": e.spec})
}

/// Creates an event (a conflict when the name is taken).
pub async fn create(state: &AppState, actor: &Actor, spec: &EventSpec) -> UseCaseResult<EventRow> {
    let result = create_unrecorded(state, spec).await;
    audit::record(
        state,
        actor,
        "event.create",
        format!("event {}", spec.name),
        None,
        result,
        |e| Some(audit_json(e)),
    )
    .await
}

async fn create_unrecorded(state: &AppState, spec: &EventSpec) -> UseCaseResult<EventRow> {
    validate_target(state, spec).await?;
    let mut event = state
        .store
        .create_event_with_policy(
            &spec.name,
            spec.status,
            &spec.to_value(),
            &spec.policy(),
            now_ms(),
        )
        .await?;
    event.next_fire_at = scheduler::reschedule(state, &event).await?;
    hooks::applied(state, HookKind::Event, &spec.name, spec.webhook).await?;
    Ok(event)
}

/// Creates or updates the event named by `spec`; an update is a new version. Recorded as
/// `event.apply` unless nothing changed.
pub async fn apply(
    state: &AppState,
    actor: &Actor,
    spec: &EventSpec,
) -> UseCaseResult<(EventRow, Applied)> {
    let before = state.store.get_event_by_name(&spec.name).await?;
    let result = apply_unrecorded(state, spec).await;
    if matches!(result, Ok((_, Applied::Unchanged))) {
        return result;
    }
    audit::record(
        state,
        actor,
        "event.apply",
        format!("event {}", spec.name),
        before.as_ref().map(audit_json),
        result,
        |(e, _)| Some(audit_json(e)),
    )
    .await
}

async fn apply_unrecorded(
    state: &AppState,
    spec: &EventSpec,
) -> UseCaseResult<(EventRow, Applied)> {
    validate_target(state, spec).await?;
    let (mut event, applied) = state
        .store
        .apply_event_with_policy(
            &spec.name,
            spec.status,
            &spec.to_value(),
            &spec.policy(),
            now_ms(),
        )
        .await?;
    if applied != Applied::Unchanged {
        event.next_fire_at = scheduler::reschedule(state, &event).await?;
    }
    hooks::applied(state, HookKind::Event, &spec.name, spec.webhook).await?;
    Ok((event, applied))
}

/// Applies the event file fields `value` to the event `name`: `name` in the fields, when
/// given, must be the same.
pub async fn apply_named(
    state: &AppState,
    actor: &Actor,
    name: &str,
    mut value: Value,
) -> UseCaseResult<(EventRow, Applied)> {
    match value.get("name") {
        None => {
            if let Some(obj) = value.as_object_mut() {
                obj.insert("name".into(), Value::String(name.to_string()));
            }
        }
        Some(n) if n.as_str() == Some(name) => {}
        Some(_) => {
            return Err(UseCaseError::invalid(
                "name",
                format!("does not match the URL (`{name}`)"),
            ))
        }
    }
    let spec = spec::from_value(value)?;
    apply(state, actor, &spec).await
}

/// What the editor saves: the YAML of a new event (`existing` None: the name must be free) or
/// of a new version of `existing` (whose name it must keep).
pub async fn save_yaml(
    state: &AppState,
    actor: &Actor,
    existing: Option<&str>,
    yaml: &str,
) -> UseCaseResult<(EventRow, Applied)> {
    let spec = spec::parse_yaml(yaml)?;
    match existing {
        Some(name) if spec.name != name => Err(UseCaseError::invalid(
            "name",
            format!(
                "is `{}`; this editor saves `{name}` (create a new event to rename)",
                spec.name
            ),
        )),
        Some(_) => apply(state, actor, &spec).await,
        None => Ok((create(state, actor, &spec).await?, Applied::Created)),
    }
}

pub async fn delete(state: &AppState, actor: &Actor, name: &str) -> UseCaseResult<()> {
    let event = get(state, name).await?;
    let result = state
        .store
        .delete_event(event.id)
        .await
        .map_err(UseCaseError::from);
    if result.is_ok() {
        hooks::deleted(state, HookKind::Event, name).await?;
    }
    state.scheduler_wake.notify_one();
    audit::record(
        state,
        actor,
        "event.delete",
        format!("event {name}"),
        Some(audit_json(&event)),
        result.map(|_| ()),
        |_| None,
    )
    .await
}

/// Runs an event now. `input` None means the event's default input. A conflict when the
/// event is broken or reached its `max_executions` (it is paused then); invalid when archived.
pub async fn run(
    state: &AppState,
    actor: &Actor,
    name: &str,
    input: Option<Value>,
    trigger: Trigger,
) -> UseCaseResult<JobRow> {
    let result = run_unrecorded(state, name, input, trigger).await;
    audit::record(
        state,
        actor,
        "job.run",
        format!("event {name}"),
        None,
        result,
        |j| Some(serde_json::json!({"job": j.id, "trigger": j.trigger})),
    )
    .await
}

async fn run_unrecorded(
    state: &AppState,
    name: &str,
    input: Option<Value>,
    trigger: Trigger,
) -> UseCaseResult<JobRow> {
    let event = get(state, name).await?;
    if event.status == EventStatus::Archived {
        return Err(UseCaseError::invalid(
            "status",
            format!("event `{name}` is archived"),
        ));
    }
    let spec = spec_of(&event)?;
    let now = now_ms();
    let job = runs::new_job(&event, &spec, trigger, input, now, None);
    // The limit check, the insert and the pause at the limit are one store transaction.
    let job = state.store.enqueue(&job, now).await?;
    state.bus.job_changed(Some(job.id));
    state.agent_wake.notify_one();
    Ok(job)
}

/// The event's latest jobs, newest first.
pub async fn history(state: &AppState, event: &EventRow, limit: i64) -> UseCaseResult<Vec<JobRow>> {
    Ok(state
        .store
        .list_jobs(&JobFilter {
            event_id: Some(event.id),
            limit: Some(limit),
            ..Default::default()
        })
        .await?)
}

/// The next `n` instants of the event's schedule after `now` (epoch ms), as the scheduler
/// computes them; empty for an event without a schedule or one that does not parse.
pub fn next_instants(event: &EventRow, spec: &EventSpec, now: i64, n: usize) -> Vec<i64> {
    let Some(schedule) = spec.parsed_schedule() else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(n);
    let mut after = now;
    while out.len() < n {
        match schedule.next_after(after, event.updated_at) {
            Some(t) if t > after => {
                out.push(t);
                after = t;
            }
            _ => break,
        }
    }
    out
}
