//! The agent API, `/api/v1/agent/...`: what a remote `cronium agent` calls instead of the
//! store. One `POST` per [`JobQueue`] / [`RuntimeApi`] call (claims hand out up to `max` jobs,
//! log lines travel in batches), each performed by the same [`StoreQueue`] / [`StoreRuntime`]
//! the embedded agent uses, so every write is fenced exactly as the store fences it. The JSON
//! shapes are `cronium_agent::wire`'s, shared with the client.
//!
//! Authenticated by agent tokens only (`require_agent_token`): an API token opens none of
//! these routes, and an agent token opens nothing else. A lost lease is 409 `lease_lost`.
//! Since the agent runs elsewhere, the wake-ups its embedded twin gives this process's log bus
//! (lines stored, a job changed or ended) are given here, after each call's commit.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use cronium_agent::queue::{JobQueue, QueueError};
use cronium_agent::runtime::RuntimeApi;
use cronium_agent::wire::{self, code};
use cronium_core::clock::now_ms;
use cronium_model::Heartbeat;
use cronium_store::{AgentRegistration, AgentTokenRow, Claimant};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::agent::queue::{store_error, StoreQueue};
use crate::agent::runtime::StoreRuntime;
use crate::auth::hash_token;
use crate::state::AppState;

/// An agent API failure, answered as `{"error": {"code", "message", "field"?}}`.
#[derive(Debug)]
pub struct AgentError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
}

impl AgentError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        AgentError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    fn lease_lost() -> Self {
        AgentError::new(
            StatusCode::CONFLICT,
            code::LEASE_LOST,
            "the lease (job, worker, attempt) is no longer this worker's",
        )
    }
}

impl From<QueueError> for AgentError {
    fn from(e: QueueError) -> Self {
        let message = e.to_string();
        let (status, code, field) = match e {
            QueueError::Unavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, code::UNAVAILABLE, None)
            }
            QueueError::Fatal(_) => (StatusCode::INTERNAL_SERVER_ERROR, code::FATAL, None),
            QueueError::Conflict(f) => (StatusCode::CONFLICT, code::CONFLICT, Some(f)),
            QueueError::LeaseLost => return AgentError::lease_lost(),
            QueueError::Undecryptable(m) => {
                return AgentError::new(StatusCode::INTERNAL_SERVER_ERROR, code::UNDECRYPTABLE, m)
            }
            QueueError::UnknownServers(m) => {
                return AgentError::new(StatusCode::UNPROCESSABLE_ENTITY, code::UNKNOWN_SERVERS, m)
            }
            QueueError::Secret { name, reason } => {
                return AgentError {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    code: code::SECRET,
                    message: reason,
                    field: Some(name),
                }
            }
            QueueError::Other(_) => (StatusCode::INTERNAL_SERVER_ERROR, code::OTHER, None),
        };
        if status.is_server_error() {
            tracing::warn!(error = %message, "agent API call failed");
        }
        AgentError {
            status,
            code,
            message,
            field,
        }
    }
}

impl From<cronium_store::StoreError> for AgentError {
    fn from(e: cronium_store::StoreError) -> Self {
        store_error(e).into()
    }
}

impl IntoResponse for AgentError {
    fn into_response(self) -> Response {
        let body = wire::ErrorBody {
            error: wire::ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
                field: self.field,
            },
        };
        let mut r = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

type Answer<T> = Result<Json<T>, AgentError>;

/// Parses a request body, naming the field at fault.
fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, AgentError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let mut err = AgentError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            code::INVALID,
            format!("{path}: {}", e.inner()),
        );
        err.field = Some(path);
        err
    })
}

fn ok<T: Serialize>(v: T) -> Answer<T> {
    Ok(Json(v))
}

fn fenced(written: bool) -> Answer<wire::Done> {
    if written {
        ok(wire::Done {})
    } else {
        Err(AgentError::lease_lost())
    }
}

fn queue(state: &AppState) -> StoreQueue {
    StoreQueue {
        store: state.store.clone(),
        secrets: state.secrets.clone(),
        claimant: Claimant::untagged(),
    }
}

/// The queue of the agent running as `worker`, whose claims take only what its registration
/// says it can run (its tags and capabilities). A worker that never registered claims as a
/// plain agent: local jobs without `agent_tags`.
async fn queue_for(state: &AppState, worker: &str) -> Result<StoreQueue, AgentError> {
    let claimant = match state.store.agent_by_worker(worker).await? {
        Some(a) => Claimant::from_registration(&a.tags, &a.capabilities),
        None => Claimant {
            tags: Vec::new(),
            capabilities: vec![cronium_store::Capability::Local],
        },
    };
    Ok(StoreQueue {
        claimant,
        ..queue(state)
    })
}

fn runtime(state: &AppState) -> StoreRuntime {
    StoreRuntime {
        store: state.store.clone(),
        secrets: state.secrets.clone(),
    }
}

/// How long a verified agent token is taken on trust before it is read again.
const TOKEN_TRUST: Duration = Duration::from_secs(1);

/// Agent tokens verified within [`TOKEN_TRUST`], by hash: an agent's calls (several per job)
/// do not each read the token. A revoke through this server clears it at once; one through
/// another replica takes effect here within [`TOKEN_TRUST`].
#[derive(Default)]
pub struct TokenCache {
    tokens: std::sync::Mutex<
        std::collections::HashMap<String, (cronium_store::AgentTokenRow, Instant)>,
    >,
}

impl TokenCache {
    fn get(&self, hash: &str) -> Option<cronium_store::AgentTokenRow> {
        let map = self.tokens.lock().ok()?;
        map.get(hash)
            .filter(|(_, at)| at.elapsed() < TOKEN_TRUST)
            .map(|(t, _)| t.clone())
    }

    fn put(&self, hash: String, token: cronium_store::AgentTokenRow) {
        if let Ok(mut map) = self.tokens.lock() {
            // Few tokens in practice; stale entries go whenever the map is written.
            map.retain(|_, (_, at)| at.elapsed() < TOKEN_TRUST);
            map.insert(hash, (token, Instant::now()));
        }
    }

    /// Forgets every token (after a revoke).
    pub fn clear(&self) {
        if let Ok(mut map) = self.tokens.lock() {
            map.clear();
        }
    }
}

/// Lets through requests with a valid, unrevoked agent token (never an API token).
pub async fn require_agent_token(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let unauthorized = || {
        AgentError::new(
            StatusCode::UNAUTHORIZED,
            code::UNAUTHORIZED,
            "the agent API needs an agent token (`cronium agent token create NAME`): \
             send `Authorization: Bearer <token>`",
        )
        .into_response()
    };
    let Some(token) = token else {
        return unauthorized();
    };
    let hash = hash_token(token);
    if let Some(t) = state.agent_tokens.get(&hash) {
        req.extensions_mut().insert(t);
        return next.run(req).await;
    }
    match state.store.find_agent_token(&hash, now_ms()).await {
        Ok(Some(t)) => {
            state.agent_tokens.put(hash, t.clone());
            req.extensions_mut().insert(t);
            next.run(req).await
        }
        Ok(None) => unauthorized(),
        Err(e) => AgentError::from(e).into_response(),
    }
}

/// The agent API's routes (relative to [`wire::PREFIX`]), behind [`require_agent_token`].
pub fn router(state: AppState) -> axum::Router<AppState> {
    use axum::routing::post;
    axum::Router::new()
        .route("/register", post(register))
        .route("/beat", post(beat))
        .route("/stopped", post(stopped))
        .route("/claim", post(claim))
        .route("/heartbeat", post(heartbeat))
        .route("/event-spec", post(event_spec))
        .route("/execution", post(start_execution))
        .route("/executions", post(start_executions))
        .route("/execution/update", post(update_execution))
        .route("/executions/update", post(update_executions))
        .route("/log-seq", post(max_log_seq))
        .route("/logs", post(append_logs))
        .route("/variables", post(variables))
        .route("/variable", post(set_variable))
        .route("/finish", post(finish))
        .route("/finish-attempt", post(finish_attempt))
        .route("/retry-later", post(retry_later))
        .route("/recover-expired", post(recover_expired))
        .route("/next-run-at", post(next_run_at))
        .route("/running-jobs", post(running_jobs))
        .route("/servers/resolve", post(resolve_servers))
        .route("/servers/pin-host-key", post(pin_host_key))
        .route("/servers/host-key-changed", post(host_key_changed))
        .route("/servers/deployment", post(record_deployment))
        .route("/servers/platform", post(set_platform))
        .route("/servers/runner-state", post(set_runner_state))
        .route("/runtime/token", post(set_token))
        .route("/runtime/revoke-tokens", post(revoke_tokens))
        .route("/runtime/variable/get", post(runtime_get_variable))
        .route("/runtime/variable/set", post(runtime_set_variable))
        .route("/runtime/output", post(runtime_set_output))
        .route("/runtime/condition", post(runtime_set_condition))
        .route("/runtime/results", post(runtime_results))
        .route_layer(axum::middleware::from_fn_with_state(
            state,
            require_agent_token,
        ))
}

async fn register(
    State(state): State<AppState>,
    Extension(token): Extension<AgentTokenRow>,
    body: Bytes,
) -> Answer<cronium_store::AgentRow> {
    let r: wire::Register = parse(&body)?;
    check_registration(&r)?;
    let row = state
        .store
        .register_agent(
            &AgentRegistration {
                name: r.name,
                worker: r.worker,
                version: r.version,
                tags: r.tags,
                capabilities: r.capabilities,
                concurrency: r.concurrency,
                embedded: false,
                token_id: Some(token.id),
            },
            now_ms(),
        )
        .await?;
    ok(row)
}

/// What an agent says of itself, checked as the jobs it will be matched with are: tags by the
/// rule of names (a job's `agent_tags` follow it, so another tag could never match), the
/// capabilities among those jobs need, at least one slot.
fn check_registration(r: &wire::Register) -> Result<(), AgentError> {
    let invalid = |field: String, message: String| {
        let mut err = AgentError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            code::INVALID,
            format!("{field}: {message}"),
        );
        err.field = Some(field);
        err
    };
    if r.worker.trim().is_empty() {
        return Err(invalid("worker".into(), "must not be empty".into()));
    }
    for (i, tag) in r.tags.iter().enumerate() {
        cronium_core::spec::validate_name(tag)
            .map_err(|e| invalid(format!("tags[{i}]"), e.message))?;
    }
    for (i, c) in r.capabilities.iter().enumerate() {
        if !matches!(c.as_str(), "local" | "container" | "ssh") {
            return Err(invalid(
                format!("capabilities[{i}]"),
                format!("`{c}` is not one of local, container, ssh"),
            ));
        }
    }
    if r.concurrency < 1 {
        return Err(invalid(
            "concurrency".into(),
            format!("must be at least 1, got {}", r.concurrency),
        ));
    }
    Ok(())
}

async fn beat(State(state): State<AppState>, body: Bytes) -> Answer<wire::Known> {
    let r: wire::AgentBeat = parse(&body)?;
    let known = state
        .store
        .agent_heartbeat(&r.name, &r.worker, now_ms())
        .await?;
    ok(wire::Known { known })
}

async fn stopped(State(state): State<AppState>, body: Bytes) -> Answer<wire::Known> {
    let r: wire::AgentBeat = parse(&body)?;
    let known = state
        .store
        .agent_stopped(&r.name, &r.worker, now_ms())
        .await?;
    ok(wire::Known { known })
}

/// Claims up to `max` jobs; when none is claimable, holds the request until one is (woken by
/// the store's claim wake-up, `agent_wake`, which every enqueue in this process notifies, and
/// by a due delayed retry) or `wait_ms` passed.
async fn claim(State(state): State<AppState>, body: Bytes) -> Answer<wire::ClaimResponse> {
    let r: wire::ClaimRequest = parse(&body)?;
    let q = queue_for(&state, &r.worker).await?;
    let deadline = Instant::now() + Duration::from_millis(r.wait_ms.min(wire::MAX_CLAIM_WAIT_MS));
    loop {
        let jobs = q.claim_batch(&r.worker, r.lease_ms, r.max).await?;
        let left = deadline.saturating_duration_since(Instant::now());
        if !jobs.is_empty() || left.is_zero() {
            for job in &jobs {
                state.bus.job_changed(Some(job.id));
            }
            return ok(wire::ClaimResponse { jobs });
        }
        // A delayed retry falls due without a wake-up; jobs enqueued through another replica
        // wake this one through its relay (replicas.rs), at worst a second late.
        let due = match q.next_run_at().await? {
            Some(at) => Duration::from_millis((at - now_ms()).max(1) as u64),
            None => Duration::from_secs(1),
        };
        tokio::select! {
            _ = state.agent_wake.notified() => {}
            _ = tokio::time::sleep(due.min(left).min(Duration::from_secs(1))) => {}
            _ = state.stopping.cancelled() => return ok(wire::ClaimResponse { jobs }),
        }
    }
}

async fn heartbeat(State(state): State<AppState>, body: Bytes) -> Answer<wire::HeartbeatResponse> {
    let r: wire::HeartbeatRequest = parse(&body)?;
    match queue(&state).heartbeat(&r.lease, r.lease_ms).await? {
        Heartbeat::Ok { cancel_requested } => ok(wire::HeartbeatResponse { cancel_requested }),
        Heartbeat::Lost => Err(AgentError::lease_lost()),
    }
}

async fn event_spec(State(state): State<AppState>, body: Bytes) -> Answer<wire::EventSpecResponse> {
    let r: wire::EventSpecRequest = parse(&body)?;
    let spec = match r.event_id {
        Some(id) => state.store.get_event_version(id, r.event_version).await?,
        None => None,
    };
    ok(wire::EventSpecResponse { spec })
}

async fn start_execution(
    State(state): State<AppState>,
    body: Bytes,
) -> Answer<wire::StartedExecution> {
    let r: wire::StartExecution = parse(&body)?;
    match queue(&state)
        .start_execution(&r.lease, r.server.as_deref(), r.status)
        .await?
    {
        Some(execution) => {
            state.bus.job_changed(Some(r.lease.job_id));
            ok(wire::StartedExecution { execution })
        }
        None => Err(AgentError::lease_lost()),
    }
}

async fn start_executions(
    State(state): State<AppState>,
    body: Bytes,
) -> Answer<wire::StartedExecutions> {
    let r: wire::StartExecutions = parse(&body)?;
    let servers: Vec<&str> = r.servers.iter().map(String::as_str).collect();
    match queue(&state)
        .start_executions(&r.lease, &servers, r.status)
        .await?
    {
        Some(executions) => {
            state.bus.job_changed(Some(r.lease.job_id));
            ok(wire::StartedExecutions { executions })
        }
        None => Err(AgentError::lease_lost()),
    }
}

async fn update_execution(State(state): State<AppState>, body: Bytes) -> Answer<wire::Done> {
    let r: wire::UpdateExecution = parse(&body)?;
    let written = queue(&state)
        .update_execution(&r.lease, r.execution_id, &r.update)
        .await?;
    fenced(written)
}

async fn update_executions(State(state): State<AppState>, body: Bytes) -> Answer<wire::Count> {
    let r: wire::UpdateExecutions = parse(&body)?;
    let count = queue(&state)
        .update_executions(&r.lease, &r.updates)
        .await?;
    ok(wire::Count { count })
}

async fn max_log_seq(State(state): State<AppState>, body: Bytes) -> Answer<wire::Seq> {
    let r: wire::JobId = parse(&body)?;
    let seq = queue(&state).max_log_seq(r.job_id).await?;
    ok(wire::Seq { seq })
}

/// Stores a batch of lines whole, or nothing: a batch sent again (its answer was lost) meets
/// its own seqs and is answered 409 `conflict` on `seq`, with nothing stored twice.
async fn append_logs(State(state): State<AppState>, body: Bytes) -> Answer<wire::Done> {
    let r: wire::AppendLogs = parse(&body)?;
    let written = queue(&state).append_logs(&r.lease, &r.lines).await?;
    if written {
        if let Some(last) = r.lines.iter().map(|l| l.seq).max() {
            state.bus.publish(r.lease.job_id, last);
        }
    }
    fenced(written)
}

async fn variables(State(state): State<AppState>) -> Answer<cronium_agent::queue::Variables> {
    ok(queue(&state).variables().await?)
}

async fn set_variable(State(state): State<AppState>, body: Bytes) -> Answer<wire::Secret> {
    let r: wire::SetJobVariable = parse(&body)?;
    let secret = queue(&state)
        .set_variable(r.job_id, r.execution_id, &r.name, &r.value)
        .await?;
    ok(wire::Secret { secret })
}

/// After a job's end: its live viewers are told it ended, and the claimers that a successor
/// or a retry may be ready.
fn ended(state: &AppState, job_id: i64) {
    state.bus.finish(job_id);
    state.bus.job_changed(Some(job_id));
    state.agent_wake.notify_one();
}

async fn finish(State(state): State<AppState>, body: Bytes) -> Answer<wire::Done> {
    let r: wire::Finish = parse(&body)?;
    let written = queue(&state).finish(&r.lease, &r.outcome).await?;
    if written {
        ended(&state, r.lease.job_id);
    }
    fenced(written)
}

async fn finish_attempt(
    State(state): State<AppState>,
    body: Bytes,
) -> Answer<wire::FinishedAttempt> {
    let r: wire::FinishAttempt = parse(&body)?;
    let q = match r.handoff {
        Some(_) => queue_for(&state, &r.lease.worker).await?,
        None => queue(&state),
    };
    let (written, handed_off) = q
        .finish_attempt(
            &r.lease,
            r.node_run_id,
            &r.executions,
            &r.outcome,
            r.handoff,
        )
        .await?;
    if !written {
        return Err(AgentError::lease_lost());
    }
    ended(&state, r.lease.job_id);
    if let Some(h) = &handed_off {
        state.bus.job_changed(Some(h.job.id));
    }
    ok(wire::FinishedAttempt { handed_off })
}

async fn retry_later(State(state): State<AppState>, body: Bytes) -> Answer<wire::Done> {
    let r: wire::RetryLater = parse(&body)?;
    let written = queue(&state)
        .retry_later(&r.lease, r.run_at, &r.error)
        .await?;
    if written {
        state.bus.job_changed(Some(r.lease.job_id));
        state.agent_wake.notify_one();
    }
    fenced(written)
}

async fn recover_expired(State(state): State<AppState>) -> Answer<wire::Count> {
    let count = queue(&state).recover_expired().await?;
    if count > 0 {
        state.bus.job_changed(None);
        state.agent_wake.notify_one();
    }
    ok(wire::Count { count })
}

async fn next_run_at(State(state): State<AppState>) -> Answer<wire::NextRunAt> {
    ok(wire::NextRunAt {
        at: queue(&state).next_run_at().await?,
    })
}

async fn running_jobs(State(state): State<AppState>) -> Answer<wire::RunningJobs> {
    let mut jobs: Vec<i64> = crate::background::reaper::running_jobs(&state.store)
        .await
        .map_err(AgentError::from)?
        .into_iter()
        .collect();
    jobs.sort_unstable();
    ok(wire::RunningJobs { jobs })
}

async fn resolve_servers(
    State(state): State<AppState>,
    body: Bytes,
) -> Answer<wire::ResolvedServers> {
    let r: wire::ResolveServers = parse(&body)?;
    let servers = queue(&state).resolve_servers(&r.names, &r.tags).await?;
    ok(wire::ResolvedServers { servers })
}

async fn pin_host_key(State(state): State<AppState>, body: Bytes) -> Answer<wire::Done> {
    let r: wire::PinHostKey = parse(&body)?;
    queue(&state).pin_host_key(r.server_id, &r.key).await?;
    ok(wire::Done {})
}

async fn host_key_changed(State(state): State<AppState>, body: Bytes) -> Answer<wire::Done> {
    let r: wire::PinHostKey = parse(&body)?;
    queue(&state).host_key_changed(r.server_id, &r.key).await?;
    ok(wire::Done {})
}

async fn record_deployment(State(state): State<AppState>, body: Bytes) -> Answer<wire::Done> {
    let r: wire::RecordDeployment = parse(&body)?;
    queue(&state)
        .record_deployment(r.server_id, &r.deployment)
        .await?;
    ok(wire::Done {})
}

async fn set_platform(State(state): State<AppState>, body: Bytes) -> Answer<wire::Done> {
    let r: wire::SetPlatform = parse(&body)?;
    queue(&state)
        .set_platform(r.server_id, &r.os, &r.arch)
        .await?;
    ok(wire::Done {})
}

async fn set_runner_state(State(state): State<AppState>, body: Bytes) -> Answer<wire::Done> {
    let r: wire::SetRunnerState = parse(&body)?;
    queue(&state)
        .set_runner_state(r.server_id, r.state.as_ref())
        .await?;
    ok(wire::Done {})
}

async fn set_token(State(state): State<AppState>, body: Bytes) -> Answer<wire::Done> {
    let r: wire::SetToken = parse(&body)?;
    let written = runtime(&state)
        .set_token(&r.lease, r.execution_id, &r.token_sha256, r.expires_at)
        .await?;
    fenced(written)
}

async fn revoke_tokens(State(state): State<AppState>, body: Bytes) -> Answer<wire::Done> {
    let r: wire::JobId = parse(&body)?;
    runtime(&state).revoke_tokens(r.job_id).await?;
    ok(wire::Done {})
}

async fn runtime_get_variable(
    State(state): State<AppState>,
    body: Bytes,
) -> Answer<wire::VariableFound> {
    let r: wire::VariableName = parse(&body)?;
    let value = runtime(&state).get_variable(&r.name).await?;
    ok(wire::VariableFound {
        found: value.is_some(),
        value: value.unwrap_or_default(),
    })
}

async fn runtime_set_variable(State(state): State<AppState>, body: Bytes) -> Answer<wire::Secret> {
    let r: wire::RuntimeSetVariable = parse(&body)?;
    match runtime(&state)
        .set_variable(r.execution_id, r.attempt, &r.name, &r.value)
        .await?
    {
        Some(secret) => ok(wire::Secret { secret }),
        None => Err(AgentError::lease_lost()),
    }
}

async fn runtime_set_output(State(state): State<AppState>, body: Bytes) -> Answer<wire::Output> {
    let r: wire::RuntimeSetOutput = parse(&body)?;
    match runtime(&state)
        .set_output(r.execution_id, r.attempt, r.key.as_deref(), &r.value)
        .await?
    {
        Some(output) => ok(wire::Output { output }),
        None => Err(AgentError::lease_lost()),
    }
}

async fn runtime_set_condition(State(state): State<AppState>, body: Bytes) -> Answer<wire::Done> {
    let r: wire::RuntimeSetCondition = parse(&body)?;
    let written = runtime(&state)
        .set_condition(r.execution_id, r.attempt, r.value)
        .await?;
    fenced(written)
}

async fn runtime_results(State(state): State<AppState>, body: Bytes) -> Answer<wire::Results> {
    let r: wire::ExecutionId = parse(&body)?;
    let (output, condition) = runtime(&state).results(r.execution_id).await?;
    ok(wire::Results { output, condition })
}
