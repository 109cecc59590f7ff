//! Jobs: list with filters (keyset paging on id), detail with executions, cancel, re-run, the
//! retry of a fan-out's failed servers, and their logs: a page after a seq, the tail before a
//! seq (a big log opens at its end), and the live stream that the API and the log viewer both
//! serve as Server-Sent Events.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use cronium_core::clock::now_ms;
use cronium_core::spec::{self, ServersTarget, Target};
use cronium_core::workflow::NodeOverrides;
use cronium_model::{EventStatus, ExecutionStatus, JobStatus, Trigger};
use cronium_store::{CancelResult, ExecutionRow, JobFilter, JobRow, LogLine, StoreError};
use futures::Stream;

use super::{audit, Actor, UseCaseError, UseCaseResult};
use crate::state::AppState;

/// The filters of a job list, as the user typed them (the API's query, the page's form).
#[derive(Debug, Clone, Default)]
pub struct JobQuery {
    pub event: Option<String>,
    pub status: Option<String>,
    pub trigger: Option<String>,
    pub server: Option<String>,
    pub limit: Option<i64>,
    pub before: Option<i64>,
}

/// Largest page of a job list.
pub const MAX_LIST: i64 = 1000;

/// Jobs matching `q`, newest first; each filter that does not parse is refused naming it.
pub async fn list(state: &AppState, q: &JobQuery) -> UseCaseResult<Vec<JobRow>> {
    let status = q
        .status
        .as_deref()
        .map(str::parse::<JobStatus>)
        .transpose()
        .map_err(|e| UseCaseError::invalid("status", e.to_string()))?;
    let trigger = q
        .trigger
        .as_deref()
        .map(str::parse::<Trigger>)
        .transpose()
        .map_err(|e| UseCaseError::invalid("trigger", e.to_string()))?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=MAX_LIST).contains(&limit) {
        return Err(UseCaseError::invalid(
            "limit",
            format!("must be between 1 and {MAX_LIST}"),
        ));
    }
    let filter = JobFilter {
        event_name: q.event.clone(),
        event_id: None,
        status,
        limit: Some(limit),
        before_id: q.before,
        trigger,
        server: q.server.clone(),
    };
    Ok(state.store.list_jobs(&filter).await?)
}

/// Jobs running now, newest first.
pub async fn running(state: &AppState, limit: i64) -> UseCaseResult<Vec<JobRow>> {
    Ok(state
        .store
        .list_jobs(&JobFilter {
            status: Some(JobStatus::Running),
            limit: Some(limit),
            ..Default::default()
        })
        .await?)
}

/// The newest jobs that failed, timed out or partly failed.
pub async fn recent_failures(state: &AppState, limit: i64) -> UseCaseResult<Vec<JobRow>> {
    Ok(state.store.recent_failures(limit).await?)
}

pub async fn get(state: &AppState, id: i64) -> UseCaseResult<JobRow> {
    state
        .store
        .get_job(id)
        .await?
        .ok_or_else(|| UseCaseError::NotFound(format!("job {id} not found")))
}

/// The job with every execution (per attempt and server).
pub async fn detail(state: &AppState, id: i64) -> UseCaseResult<(JobRow, Vec<ExecutionRow>)> {
    let job = get(state, id).await?;
    let executions = state.store.list_executions(id).await?;
    Ok((job, executions))
}

/// The variables job `id` wrote, in order (names and when, never values).
pub async fn variable_writes(
    state: &AppState,
    id: i64,
) -> UseCaseResult<Vec<cronium_store::VariableWrite>> {
    Ok(state.store.list_variable_writes(id).await?)
}

/// Why a queued job waits when no connected agent (one heard of within
/// [`crate::usecases::agents::CONNECTED_WITHIN_MS`], not stopped) can take it: "an agent with tags
/// gpu, eu (none connected)". None for any other job. Computed when a job is shown, never on
/// claim.
pub async fn waiting_for(state: &AppState, job: &JobRow) -> UseCaseResult<Option<String>> {
    if job.status != cronium_model::JobStatus::Queued {
        return Ok(None);
    }
    let connected = state
        .store
        .connected_claimants(now_ms(), crate::usecases::agents::CONNECTED_WITHIN_MS)
        .await?;
    Ok(cronium_model::routing::waiting_for(
        job.capability,
        &job.agent_tags,
        &connected,
    ))
}

/// Cancels a queued (at once) or running (the runner stops the script) job; a conflict when
/// it has already ended. Returns the job as it is after the request.
pub async fn cancel(state: &AppState, actor: &Actor, id: i64) -> UseCaseResult<JobRow> {
    let before = state.store.get_job(id).await.ok().flatten();
    let result = cancel_unrecorded(state, id).await;
    audit::record(
        state,
        actor,
        "job.cancel",
        format!("job {id}"),
        before.map(|j| serde_json::json!({"event": j.event_name, "status": j.status})),
        result,
        |j| Some(serde_json::json!({"event": j.event_name, "status": j.status})),
    )
    .await
}

async fn cancel_unrecorded(state: &AppState, id: i64) -> UseCaseResult<JobRow> {
    match state.store.cancel(id, now_ms()).await? {
        CancelResult::NotFound => {
            return Err(UseCaseError::NotFound(format!("job {id} not found")))
        }
        CancelResult::AlreadyFinished(status) => {
            return Err(UseCaseError::Conflict {
                field: None,
                message: format!("job {id} has already ended ({status})"),
            })
        }
        CancelResult::Cancelled => {
            state.bus.finish(id);
            state.bus.job_changed(Some(id));
        }
        // The agent ends the run and publishes its final status. An agent in this process
        // is woken to read the request at once instead of at its next beat (a third of the
        // lease).
        CancelResult::Requested => state.bus.cancel_requested(id),
    }
    get(state, id).await
}

/// Runs the job's event again with the job's input (a manual run of the current version).
pub async fn rerun(state: &AppState, actor: &Actor, id: i64) -> UseCaseResult<JobRow> {
    let job = get(state, id).await?;
    super::events::run(
        state,
        actor,
        &job.event_name,
        Some(job.input),
        Trigger::Manual,
    )
    .await
}

/// `cronium job retry`: without `failed_only` a re-run ([`rerun`]); with it, a new job that runs
/// the same event version again on only the servers whose execution in the job's last attempt
/// did not succeed (failed, timed out, lost, cancelled or never run by a rolling fan-out).
/// Refused (a conflict saying why) when the job has not ended, is not a fan-out to servers, or
/// has no such server.
pub async fn retry(
    state: &AppState,
    actor: &Actor,
    id: i64,
    failed_only: bool,
) -> UseCaseResult<JobRow> {
    if !failed_only {
        return rerun(state, actor, id).await;
    }
    let mut servers = Vec::new();
    let result = retry_failed_unrecorded(state, id, &mut servers).await;
    audit::record(
        state,
        actor,
        "job.retry",
        format!("job {id}"),
        None,
        result,
        |j| Some(serde_json::json!({"job": j.id, "retry_of": id, "servers": servers})),
    )
    .await
}

/// The servers of the job's last attempt whose execution did not succeed, in the order they
/// were started; `None` when no execution of that attempt ran on a server (not a fan-out).
pub fn failed_servers(job: &JobRow, executions: &[ExecutionRow]) -> Option<Vec<String>> {
    let last: Vec<&ExecutionRow> = executions
        .iter()
        .filter(|x| x.attempt == job.attempt && x.server.is_some())
        .collect();
    if last.is_empty() {
        return None;
    }
    Some(
        last.iter()
            .filter(|x| x.status != ExecutionStatus::Succeeded)
            .filter_map(|x| x.server.clone())
            .collect(),
    )
}

async fn retry_failed_unrecorded(
    state: &AppState,
    id: i64,
    servers: &mut Vec<String>,
) -> UseCaseResult<JobRow> {
    let conflict = |message: String| UseCaseError::Conflict {
        field: None,
        message,
    };
    let job = get(state, id).await?;
    if !job.status.is_final() {
        return Err(conflict(format!(
            "job {id} has not ended ({}); retry it once it has",
            job.status
        )));
    }
    if job.node_run_id.is_some() {
        return Err(conflict(format!(
            "job {id} is a workflow node's; retry its workflow run instead"
        )));
    }
    let executions = state.store.list_executions(id).await?;
    let Some(failed) = failed_servers(&job, &executions) else {
        return Err(conflict(format!(
            "job {id} is not a fan-out to servers: no execution of its last attempt ran on a server"
        )));
    };
    *servers = failed;
    if servers.is_empty() {
        return Err(conflict(format!(
            "job {id} has no failed server: every server of attempt {} succeeded",
            job.attempt
        )));
    }
    let gone = || UseCaseError::NotFound(format!("the event of job {id} no longer exists"));
    let event_id = job.event_id.ok_or_else(gone)?;
    let event = state.store.get_event(event_id).await?.ok_or_else(gone)?;
    if event.status == EventStatus::Archived {
        return Err(UseCaseError::invalid(
            "status",
            format!("event `{}` is archived", event.name),
        ));
    }
    let version = state
        .store
        .get_event_version(event_id, job.event_version)
        .await?
        .ok_or_else(|| {
            UseCaseError::NotFound(format!(
                "version {} of event `{}` no longer exists",
                job.event_version, event.name
            ))
        })?;
    let spec = spec::from_stored_value(version).map_err(|e| {
        conflict(format!(
            "version {} of event `{}` does not parse: {e}",
            job.event_version, event.name
        ))
    })?;
    // The target the job ran (a retry's narrowed one), narrowed to the servers to run again.
    let overrides = NodeOverrides::from_value(&job.overrides)
        .map_err(|e| conflict(format!("job {id} has invalid overrides: {e}")))?;
    let Target::Servers(ran) = overrides.target.unwrap_or_else(|| spec.target.clone()) else {
        return Err(conflict(format!("job {id} is not a fan-out to servers")));
    };
    let target = ServersTarget {
        servers: servers.clone(),
        tags: Vec::new(),
        // The retried servers all have to succeed: a `min_success` counted over the whole
        // fan-out means nothing over its failed part.
        min_success: None,
        ..ran
    };
    let overrides = NodeOverrides {
        target: Some(Target::Servers(target)),
        ..Default::default()
    };
    let overrides = serde_json::to_value(&overrides)
        .map_err(|e| UseCaseError::Store(StoreError::Invalid(e.to_string())))?;
    let now = now_ms();
    let mut new = super::runs::new_job(&event, &spec, Trigger::Manual, Some(job.input), now, None);
    // The same version as the job: a retry repeats what failed (`event run` runs the newest).
    new.event_version = job.event_version;
    // The agents the job asked for (a node's override included), on servers over SSH.
    new.routing = cronium_model::Routing {
        capability: cronium_model::Capability::Ssh,
        agent_tags: job.agent_tags.clone(),
    };
    let new = state
        .store
        .enqueue_with_overrides(&new, &overrides, now)
        .await?;
    state.bus.job_changed(Some(new.id));
    state.agent_wake.notify_one();
    Ok(new)
}

/// A log line with the server it came from (multi-server runs).
#[derive(Debug, Clone)]
pub struct ServerLine {
    pub line: LogLine,
    pub server: Option<String>,
}

/// The server of each execution of a job that ran on servers.
pub async fn servers_of(state: &AppState, job_id: i64) -> UseCaseResult<HashMap<i64, String>> {
    Ok(state
        .store
        .list_executions(job_id)
        .await?
        .into_iter()
        .filter_map(|x| x.server.map(|s| (x.id, s)))
        .collect())
}

fn with_servers(lines: Vec<LogLine>, servers: &HashMap<i64, String>) -> Vec<ServerLine> {
    lines
        .into_iter()
        .map(|line| ServerLine {
            server: line.execution_id.and_then(|x| servers.get(&x).cloned()),
            line,
        })
        .collect()
}

/// A page of a job's log after `after`.
pub struct LogPage {
    pub lines: Vec<ServerLine>,
    pub next_after: i64,
    /// The job is final and this page reached the end of its log.
    pub done: bool,
    pub status: JobStatus,
}

/// Largest page of log lines.
pub const MAX_LOG_PAGE: i64 = 10_000;

pub async fn log_page(
    state: &AppState,
    id: i64,
    after: Option<i64>,
    limit: Option<i64>,
) -> UseCaseResult<LogPage> {
    let limit = limit.unwrap_or(1000);
    if !(1..=MAX_LOG_PAGE).contains(&limit) {
        return Err(UseCaseError::invalid(
            "limit",
            format!("must be between 1 and {MAX_LOG_PAGE}"),
        ));
    }
    let after = after.unwrap_or(0);
    // Read the status first: if it is final, every line was stored before it.
    let job = get(state, id).await?;
    let lines = state.store.read_logs(id, after, limit).await?;
    let servers = servers_of(state, id).await?;
    let next_after = lines.last().map_or(after, |l| l.seq);
    let done = job.status.is_final() && (lines.len() as i64) < limit;
    Ok(LogPage {
        lines: with_servers(lines, &servers),
        next_after,
        done,
        status: job.status,
    })
}

/// The last `limit` lines before `before` (None: the end of the log), in order.
pub async fn log_tail(
    state: &AppState,
    id: i64,
    before: Option<i64>,
    limit: i64,
) -> UseCaseResult<Vec<ServerLine>> {
    if !(1..=MAX_LOG_PAGE).contains(&limit) {
        return Err(UseCaseError::invalid(
            "limit",
            format!("must be between 1 and {MAX_LOG_PAGE}"),
        ));
    }
    get(state, id).await?;
    let lines = state
        .store
        .read_logs_before(id, before.unwrap_or(i64::MAX), limit)
        .await?;
    let servers = servers_of(state, id).await?;
    Ok(with_servers(lines, &servers))
}

/// The seq of the last stored line of job `id`'s log (None: no line, or no such job).
pub async fn last_seq(state: &AppState, id: i64) -> UseCaseResult<Option<i64>> {
    let lines = state.store.read_logs_before(id, i64::MAX, 1).await?;
    Ok(lines.last().map(|l| l.seq))
}

/// What a live log stream yields.
#[derive(Debug)]
pub enum LogEvent {
    Line(ServerLine),
    /// The job is final and every line was sent.
    End {
        status: JobStatus,
        exit_code: Option<i32>,
    },
    /// The stream ends without its end: `after` is the last seq sent, where to resume.
    Error {
        message: String,
        after: i64,
    },
}

/// The live log of job `id` after seq `after`: every stored line in order, then `End` once
/// the job is final, or `Error` when the store cannot be read (never a silent end with lines
/// missing). Woken by the log bus (for a job another replica's agent records, through its
/// relay: `background::replicas`); rereads every 500 ms besides, in case a wake-up was lost.
pub async fn log_stream(
    state: &AppState,
    id: i64,
    after: i64,
) -> UseCaseResult<impl Stream<Item = LogEvent>> {
    get(state, id).await?;
    let rx = state.bus.subscribe(id);

    struct Cursor {
        state: AppState,
        id: i64,
        after: i64,
        rx: Option<tokio::sync::watch::Receiver<cronium_core::logbus::LogMark>>,
        pending: VecDeque<LogEvent>,
        ended: bool,
        servers: HashMap<i64, String>,
    }
    impl Cursor {
        /// Ends the stream with an `Error`; the details go to the server's log.
        fn fail(&mut self, what: &str, error: Option<StoreError>) {
            let message = match &error {
                Some(e) => {
                    tracing::error!(job = self.id, error = %e, "live log: {what} failed");
                    format!("{what} failed: the database could not be read (see the server's log)")
                }
                None => what.to_string(),
            };
            self.pending.push_back(LogEvent::Error {
                message,
                after: self.after,
            });
            self.ended = true;
        }
    }
    let cursor = Cursor {
        state: state.clone(),
        id,
        after,
        rx,
        pending: Default::default(),
        ended: false,
        servers: HashMap::new(),
    };
    Ok(futures::stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(e) = c.pending.pop_front() {
                return Some((e, c));
            }
            if c.ended {
                if let Some(rx) = c.rx.take() {
                    drop(rx);
                    c.state.bus.release(c.id);
                }
                return None;
            }
            // Status before lines: once final, all lines are stored.
            let status = match retry_read(|| c.state.store.get_job(c.id)).await {
                Ok(Some(j)) => j,
                Ok(None) => {
                    c.fail(&format!("job {} no longer exists", c.id), None);
                    continue;
                }
                Err(e) => {
                    c.fail("reading the job", Some(e));
                    continue;
                }
            };
            let lines = match retry_read(|| c.state.store.read_logs(c.id, c.after, 1000)).await {
                Ok(lines) => lines,
                Err(e) => {
                    c.fail("reading the log", Some(e));
                    continue;
                }
            };
            if lines
                .iter()
                .any(|l| l.execution_id.is_some_and(|x| !c.servers.contains_key(&x)))
            {
                match retry_read(|| c.state.store.list_executions(c.id)).await {
                    Ok(xs) => {
                        c.servers = xs
                            .into_iter()
                            .filter_map(|x| x.server.map(|s| (x.id, s)))
                            .collect();
                    }
                    Err(e) => {
                        c.fail("reading the job's executions", Some(e));
                        continue;
                    }
                }
            }
            if !lines.is_empty() {
                if let Some(last) = lines.last() {
                    c.after = last.seq;
                }
                let lines = with_servers(lines, &c.servers);
                c.pending.extend(lines.into_iter().map(LogEvent::Line));
                continue;
            }
            if status.status.is_final() {
                c.pending.push_back(LogEvent::End {
                    status: status.status,
                    exit_code: status.exit_code,
                });
                c.ended = true;
                continue;
            }
            // Wait for the agent's wake-up (this process's or, relayed, another replica's), or
            // reread after a while (a wake-up lost between replicas).
            match c.rx.as_mut() {
                Some(rx) => {
                    let _ = tokio::time::timeout(Duration::from_millis(500), rx.changed()).await;
                }
                None => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }))
}

/// A store read for a live viewer, tried three times (a busy or restarting database) before
/// its error ends the stream.
pub(crate) async fn retry_read<T, F, Fut>(mut read: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut tries = 0;
    loop {
        match read().await {
            Ok(v) => return Ok(v),
            Err(e) if tries < 2 => {
                tries += 1;
                tracing::warn!(error = %e, tries, "live log: a read failed, retrying");
                tokio::time::sleep(Duration::from_millis(100 * tries)).await;
            }
            Err(e) => return Err(e),
        }
    }
}
