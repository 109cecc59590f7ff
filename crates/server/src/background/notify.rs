//! The notification loop, in the server and never in the runner's or the agent's path, so a
//! notification can neither delay nor fail the job it reports.
//!
//! Each pass (every [`INTERVAL`], or at once when woken) does two things:
//! 1. **Outbox writing**: every job and workflow run that reached a final state and is not yet
//!    `notified` is matched against the `notify` rules of the version it ran; the messages and
//!    the `notified` mark are written in one store transaction (`record_notifications`), right
//!    after the final state's own commit. A crash in between leaves the mark unset, so the next
//!    pass (of this server or another) writes them: none lost, none doubled.
//! 2. **Delivery**: due outbox rows are claimed for [`CLAIM`], sent concurrently, and marked
//!    delivered, or failed with the next attempt after an exponential backoff (1 s doubling
//!    up to 10 min), given up after [`MAX_ATTEMPTS`]. A claim a stopped server left is taken
//!    again when it lapses, so pending deliveries survive a restart.

use std::collections::HashMap;
use std::time::Duration;

use cronium_core::clock::now_ms;
use cronium_core::spec::{self, matching_channels, NotifyOn, NotifyRule};
use cronium_core::workflow;
use cronium_model::workflow::WorkflowRunStatus;
use cronium_model::JobStatus;
use cronium_store::{ChannelRow, NewNotification, NotifySource, OutboxRow, StoreError};
use tokio_util::sync::CancellationToken;

use crate::notify::{deliver, message};
use crate::state::AppState;
use crate::usecases::channels;

/// Longest pause between passes (new final states are looked for this often).
pub const INTERVAL: Duration = Duration::from_millis(500);
/// How long a delivery is claimed (longer than a delivery's timeout).
const CLAIM: Duration = Duration::from_secs(60);
/// Attempts before a notification is given up.
pub const MAX_ATTEMPTS: i64 = 20;
/// Final states looked at per pass, and deliveries claimed per pass.
const BATCH: i64 = 100;
const DELIVERY_BATCH: i64 = 20;

/// The delay before attempt `attempt + 1`, after attempt `attempt` (1-based) failed.
pub fn backoff(attempt: i64) -> Duration {
    let exp = attempt.clamp(1, 20) - 1;
    Duration::from_secs((1u64 << exp).min(600))
}

pub async fn run(state: AppState, shutdown: CancellationToken) {
    loop {
        if let Err(e) = write_outbox(&state).await {
            tracing::warn!(error = %e, "notifications: writing the outbox failed");
        }
        match deliver_due(&state).await {
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "notifications: delivery pass failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = state.hooks.wake.notified() => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// What an end is, most specific first, for [`matching_channels`].
fn job_ons(status: JobStatus, previous: Option<&str>) -> Vec<NotifyOn> {
    let failed_before = matches!(previous, Some("failed" | "timed_out" | "partial"));
    match status {
        JobStatus::Succeeded if failed_before => vec![NotifyOn::Recovery, NotifyOn::Success],
        JobStatus::Succeeded => vec![NotifyOn::Success],
        JobStatus::TimedOut => vec![NotifyOn::Timeout, NotifyOn::Failure],
        JobStatus::Failed | JobStatus::Partial => vec![NotifyOn::Failure],
        _ => vec![],
    }
}

fn run_ons(status: WorkflowRunStatus, previous: Option<&str>) -> Vec<NotifyOn> {
    let failed_before = matches!(previous, Some("failed" | "timed_out"));
    match status {
        WorkflowRunStatus::Succeeded if failed_before => {
            vec![NotifyOn::Recovery, NotifyOn::Success]
        }
        WorkflowRunStatus::Succeeded => vec![NotifyOn::Success],
        WorkflowRunStatus::TimedOut => vec![NotifyOn::Timeout, NotifyOn::Failure],
        WorkflowRunStatus::Failed => vec![NotifyOn::Failure],
        _ => vec![],
    }
}

/// The outbox rows of one end: a rule's channel that no longer exists is skipped (logged).
fn rows(
    channels: &[ChannelRow],
    rules: &[NotifyRule],
    ons: &[NotifyOn],
    what: &str,
    mut build: impl FnMut(NotifyOn) -> serde_json::Value,
) -> Vec<NewNotification> {
    matching_channels(rules, ons)
        .into_iter()
        .filter_map(
            |(name, on)| match channels.iter().find(|c| c.name == name) {
                Some(c) => Some(NewNotification {
                    channel_id: c.id,
                    on: on.as_str().into(),
                    message: build(on),
                }),
                None => {
                    tracing::warn!(channel = %name, %what, "notification skipped: no such channel");
                    None
                }
            },
        )
        .collect()
}

/// Writes the notifications of every final state not yet looked at. Answers how many outbox
/// rows were written.
pub async fn write_outbox(state: &AppState) -> Result<usize, StoreError> {
    let store = &state.store;
    let jobs = store
        .pending_notify_sources(NotifySource::Job, BATCH)
        .await?;
    let runs = store
        .pending_notify_sources(NotifySource::WorkflowRun, BATCH)
        .await?;
    if jobs.is_empty() && runs.is_empty() {
        return Ok(0);
    }
    let channels = store.list_channels().await?;
    let base = state.hooks.public_url().to_string();
    let mut written = 0;
    // Each version's rules are read once per pass; ends with nothing to send are marked in
    // one statement, so a busy queue costs one write per pass, not one per job.
    let mut rules_of: HashMap<(i64, i64), Vec<NotifyRule>> = HashMap::new();
    let mut quiet = Vec::new();
    for id in jobs {
        let Some(job) = store.get_job(id).await? else {
            continue;
        };
        let rules = match job.event_id {
            Some(event_id) => {
                let key = (event_id, job.event_version);
                if let std::collections::hash_map::Entry::Vacant(slot) = rules_of.entry(key) {
                    let rules = match store.get_event_version(event_id, job.event_version).await? {
                        Some(v) => spec::from_stored_value(v)
                            .map(|s| s.notify)
                            .unwrap_or_default(),
                        None => vec![],
                    };
                    slot.insert(rules);
                }
                rules_of.get(&key).cloned().unwrap_or_default()
            }
            None => vec![],
        };
        let mut out = Vec::new();
        if !rules.is_empty() {
            let previous = match (job.event_id, job.finished_at) {
                (Some(e), Some(f)) => {
                    store
                        .previous_final_status(NotifySource::Job, e, job.id, f)
                        .await?
                }
                _ => None,
            };
            let ons = job_ons(job.status, previous.as_deref());
            if !matching_channels(&rules, &ons).is_empty() {
                let tail: Vec<String> = store
                    .read_logs_before(job.id, i64::MAX, message::LOG_TAIL_LINES)
                    .await?
                    .into_iter()
                    .map(|l| l.line)
                    .collect();
                let url = format!("{base}/jobs/{}", job.id);
                out = rows(&channels, &rules, &ons, &job.event_name, |on| {
                    message::build(&message::Subject {
                        kind: "job",
                        id: job.id,
                        name: &job.event_name,
                        on: on.as_str(),
                        status: job.status.as_str(),
                        exit_code: job.exit_code,
                        started_at: job.started_at,
                        finished_at: job.finished_at,
                        error: job.error.as_deref(),
                        trigger: job.trigger.as_str(),
                        url: url.clone(),
                        log_tail: tail.clone(),
                    })
                });
            }
        }
        if out.is_empty() {
            quiet.push(job.id);
        } else if store
            .record_notifications(NotifySource::Job, job.id, &out, now_ms())
            .await?
        {
            written += out.len();
        }
    }
    store.mark_notified(NotifySource::Job, &quiet).await?;
    let mut quiet = Vec::new();
    for id in runs {
        let Some(detail) = store.get_workflow_run(id).await? else {
            continue;
        };
        let run = &detail.run;
        let rules = match run.workflow_id {
            Some(wid) => match store
                .get_workflow_version(wid, run.workflow_version)
                .await?
            {
                Some(v) => workflow::from_value(v.spec)
                    .map(|s| s.notify)
                    .unwrap_or_default(),
                None => vec![],
            },
            None => vec![],
        };
        let mut out = Vec::new();
        if !rules.is_empty() {
            let previous = match (run.workflow_id, run.finished_at) {
                (Some(w), Some(f)) => {
                    store
                        .previous_final_status(NotifySource::WorkflowRun, w, run.id, f)
                        .await?
                }
                _ => None,
            };
            let ons = run_ons(run.status, previous.as_deref());
            if !matching_channels(&rules, &ons).is_empty() {
                let tail: Vec<String> = detail
                    .nodes
                    .iter()
                    .map(|n| {
                        let mut l = format!("{}: {}", n.node_id, n.status.as_str());
                        if let Some(e) = n.error.as_deref().or(n.reason.as_deref()) {
                            l.push_str(&format!(" ({e})"));
                        }
                        l
                    })
                    .collect();
                let url = format!("{base}/workflow-runs/{}", run.id);
                out = rows(&channels, &rules, &ons, &run.workflow_name, |on| {
                    message::build(&message::Subject {
                        kind: "workflow_run",
                        id: run.id,
                        name: &run.workflow_name,
                        on: on.as_str(),
                        status: run.status.as_str(),
                        exit_code: None,
                        started_at: run.started_at,
                        finished_at: run.finished_at,
                        error: run.error.as_deref(),
                        trigger: run.trigger.as_str(),
                        url: url.clone(),
                        log_tail: tail.clone(),
                    })
                });
            }
        }
        if out.is_empty() {
            quiet.push(run.id);
        } else if store
            .record_notifications(NotifySource::WorkflowRun, run.id, &out, now_ms())
            .await?
        {
            written += out.len();
        }
    }
    store
        .mark_notified(NotifySource::WorkflowRun, &quiet)
        .await?;
    if written > 0 {
        state.hooks.wake.notify_one();
    }
    Ok(written)
}

/// Claims the due deliveries and sends them concurrently. Answers how many were delivered.
pub async fn deliver_due(state: &AppState) -> Result<usize, StoreError> {
    let now = now_ms();
    let claimed = state
        .store
        .claim_notifications(now, now + CLAIM.as_millis() as i64, DELIVERY_BATCH)
        .await?;
    if claimed.is_empty() {
        return Ok(0);
    }
    let mut loaded: HashMap<i64, Result<deliver::Channel, String>> = HashMap::new();
    for n in &claimed {
        if loaded.contains_key(&n.channel_id) {
            continue;
        }
        let c = match state.store.get_channel_by_id(n.channel_id).await? {
            Some(row) => channels::load(state, &row),
            None => Err("the channel was removed".into()),
        };
        loaded.insert(n.channel_id, c);
    }
    let sends = claimed.iter().map(|n| {
        let channel = loaded.get(&n.channel_id).cloned();
        async move {
            let outcome = match channel {
                Some(Ok(c)) => deliver::send(&state.hooks, &c, &n.message).await,
                Some(Err(e)) => Err(e),
                None => Err("the channel was removed".into()),
            };
            (n, outcome)
        }
    });
    let results = futures::future::join_all(sends).await;
    let mut delivered = 0;
    for (n, outcome) in results {
        delivered += usize::from(record(state, n, outcome).await?);
    }
    Ok(delivered)
}

async fn record(
    state: &AppState,
    n: &OutboxRow,
    outcome: Result<(), String>,
) -> Result<bool, StoreError> {
    let now = now_ms();
    match outcome {
        Ok(()) => {
            state
                .store
                .notification_delivered(n.id, n.attempts, now)
                .await
        }
        Err(e) => {
            let retry_at =
                (n.attempts < MAX_ATTEMPTS).then(|| now + backoff(n.attempts).as_millis() as i64);
            match retry_at {
                Some(_) => {
                    tracing::info!(notification = n.id, attempt = n.attempts, error = %e, "notification not delivered; will retry")
                }
                None => {
                    tracing::warn!(notification = n.id, attempt = n.attempts, error = %e, "notification given up")
                }
            }
            state
                .store
                .notification_failed(n.id, n.attempts, &e, retry_at, now)
                .await
                .map(|_| false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_ten_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(15), Duration::from_secs(600));
    }

    #[test]
    fn a_success_after_a_failure_is_a_recovery() {
        assert_eq!(
            job_ons(JobStatus::Succeeded, Some("failed")),
            vec![NotifyOn::Recovery, NotifyOn::Success]
        );
        assert_eq!(
            job_ons(JobStatus::Succeeded, Some("succeeded")),
            vec![NotifyOn::Success]
        );
        assert_eq!(
            job_ons(JobStatus::TimedOut, None),
            vec![NotifyOn::Timeout, NotifyOn::Failure]
        );
        assert!(job_ons(JobStatus::Cancelled, None).is_empty());
    }
}
