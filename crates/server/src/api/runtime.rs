//! `/api/v1/runtime/...`: the runtime API over HTTP, for a script that calls the server itself
//! with its execution's token (`CRONIUM_API_TOKEN`). The helpers do not come here: they speak to
//! the runner's socket, which relays the same operations to the agent over the run's own
//! connection (see `cronium_agent::recorder`); this is the same contract for a caller that has
//! a route to the server.
//!
//! Only a runtime token opens these routes (an API token is refused, as a runtime token is by
//! every other route: it is not in the tokens table). A token opens one execution, while it runs,
//! until its deadline; writes are fenced by the execution's claim in the store. Values written are
//! masked with the secret variables' values before they are stored, as the recorder masks the
//! relayed ones. The JSON shapes live here, as the servers resource's do in `servers.rs`.

use crate::agent::queue::StoreQueue;
use crate::agent::runtime::StoreRuntime;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::Json;
use cronium_agent::queue::JobQueue;
use cronium_agent::runtime::RuntimeApi;
use cronium_core::clock::now_ms;
use cronium_core::crypto::token_sha256;
use cronium_core::mask::{secret_texts, Masker};
use cronium_store::RuntimeExecution;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::body;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{Body, Path};
use super::params::VariableName;
use crate::state::AppState;
use crate::usecases::variables::validate_name;

/// Every answer of the runtime API: the value read, or the value as written.
#[derive(Serialize, ToSchema)]
pub struct RuntimeValue {
    /// Any JSON (null when a variable does not exist).
    #[schema(value_type = Value)]
    pub value: Value,
}

/// The body of every runtime write.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuntimeValueBody {
    /// Any JSON (for `condition`: true or false).
    #[schema(value_type = Value)]
    pub value: Value,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct OutputKey {
    /// A key of the output object: 1 to 200 characters.
    #[param(schema_with = output_key)]
    pub key: String,
}

fn output_key() -> utoipa::openapi::schema::ObjectBuilder {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some(r"^.{1,200}$"))
}

/// The execution the request's runtime token opens.
async fn caller(state: &AppState, headers: &HeaderMap) -> ApiResult<RuntimeExecution> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(ApiError::Unauthorized)?;
    state
        .store
        .runtime_execution(&token_sha256(token), now_ms())
        .await?
        .ok_or(ApiError::Unauthorized)
}

fn runtime(state: &AppState) -> StoreRuntime {
    StoreRuntime {
        store: state.store.clone(),
        secrets: state.secrets.clone(),
    }
}

fn gone() -> ApiError {
    ApiError::Conflict {
        field: None,
        message: "the execution's claim is gone (it ended or another attempt owns the job)".into(),
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(e)
}

/// `value` with every secret variable's value masked.
async fn masked(state: &AppState, mut value: Value) -> ApiResult<Value> {
    let queue = StoreQueue {
        store: state.store.clone(),
        secrets: state.secrets.clone(),
        claimant: cronium_store::Claimant::untagged(),
    };
    let vars = queue.variables().await.map_err(internal)?;
    let texts: Vec<String> = vars
        .secret
        .iter()
        .filter_map(|n| vars.values.get(n))
        .flat_map(secret_texts)
        .collect();
    if !texts.is_empty() {
        let mut masker = Masker::default();
        masker.extend(texts).map_err(internal)?;
        masker.mask_value(&mut value);
    }
    Ok(value)
}

/// The run's input.
#[utoipa::path(get, path = "/api/v1/runtime/input", tag = "runtime", operation_id = "runtime_input",
    responses((status = 200, description = "The run's input (an object, {} when none)", body = RuntimeValue)),
    security(("runtime" = [])))]
pub async fn input(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Json<RuntimeValue>> {
    let exec = caller(&state, &headers).await?;
    let value = match exec.input {
        Value::Null => Value::Object(Default::default()),
        v => v,
    };
    Ok(Json(RuntimeValue { value }))
}

/// The run's event metadata: id, name, job_id, execution_id, attempt, trigger, server, version.
#[utoipa::path(get, path = "/api/v1/runtime/event", tag = "runtime", operation_id = "runtime_event",
    responses((status = 200, description = "The run's event metadata", body = RuntimeValue)),
    security(("runtime" = [])))]
pub async fn event(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Json<RuntimeValue>> {
    let e = caller(&state, &headers).await?;
    Ok(Json(RuntimeValue {
        value: serde_json::json!({
            "id": e.event_id,
            "name": e.event_name,
            "job_id": e.job_id,
            "execution_id": e.execution_id,
            "attempt": e.attempt,
            "trigger": e.trigger.as_str(),
            "server": e.server,
            "version": e.event_version,
        }),
    }))
}

/// The run's output as stored now.
#[utoipa::path(get, path = "/api/v1/runtime/output", tag = "runtime", operation_id = "runtime_get_output",
    responses((status = 200, description = "The output (null before any is set)", body = RuntimeValue)),
    security(("runtime" = [])))]
pub async fn get_output(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Json<RuntimeValue>> {
    let exec = caller(&state, &headers).await?;
    Ok(Json(RuntimeValue { value: exec.output }))
}

async fn write_output(
    state: &AppState,
    headers: &HeaderMap,
    key: Option<&str>,
    bytes: &axum::body::Bytes,
) -> ApiResult<Json<RuntimeValue>> {
    let exec = caller(state, headers).await?;
    let body: RuntimeValueBody = body::json(bytes)?;
    let value = masked(state, body.value).await?;
    let output = runtime(state)
        .set_output(exec.execution_id, exec.attempt, key, &value)
        .await
        .map_err(internal)?
        .ok_or_else(gone)?;
    Ok(Json(RuntimeValue { value: output }))
}

/// Replace the run's whole output (stored at once).
#[utoipa::path(put, path = "/api/v1/runtime/output", tag = "runtime", operation_id = "runtime_set_output",
    request_body = RuntimeValueBody,
    responses(
        (status = 200, description = "The whole output as stored (secrets masked)", body = RuntimeValue),
        (status = 409, description = "The execution's claim is gone", body = ErrorBody),
        (status = 413, description = "The body is over 2 MiB", body = ErrorBody),
        (status = 422, description = "The body is not {\"value\": ...}", body = ErrorBody),
    ),
    security(("runtime" = [])))]
pub async fn set_output(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(bytes): Body,
) -> ApiResult<Json<RuntimeValue>> {
    write_output(&state, &headers, None, &bytes).await
}

/// Set one key of the run's output object (stored at once).
#[utoipa::path(put, path = "/api/v1/runtime/output/{key}", tag = "runtime", operation_id = "runtime_set_output_key",
    params(OutputKey),
    request_body = RuntimeValueBody,
    responses(
        (status = 200, description = "The whole output as stored (secrets masked)", body = RuntimeValue),
        (status = 409, description = "The execution's claim is gone", body = ErrorBody),
        (status = 413, description = "The body is over 2 MiB", body = ErrorBody),
        (status = 422, description = "The key or the body is not valid", body = ErrorBody),
    ),
    security(("runtime" = [])))]
pub async fn set_output_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(OutputKey { key }): Path<OutputKey>,
    Body(bytes): Body,
) -> ApiResult<Json<RuntimeValue>> {
    if key.is_empty() || key.chars().count() > 200 {
        return Err(ApiError::bad("key", "use 1 to 200 characters"));
    }
    write_output(&state, &headers, Some(&key), &bytes).await
}

/// A variable's current value (secret ones in clear: the script needs them).
#[utoipa::path(get, path = "/api/v1/runtime/variables/{name}", tag = "runtime", operation_id = "runtime_get_variable",
    params(VariableName),
    responses(
        (status = 200, description = "The value, null when the variable does not exist", body = RuntimeValue),
        (status = 422, description = "The name is not valid", body = ErrorBody),
    ),
    security(("runtime" = [])))]
pub async fn get_variable(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(VariableName { name }): Path<VariableName>,
) -> ApiResult<Json<RuntimeValue>> {
    caller(&state, &headers).await?;
    validate_name(&name)?;
    let value = runtime(&state)
        .get_variable(&name)
        .await
        .map_err(internal)?
        .unwrap_or(Value::Null);
    Ok(Json(RuntimeValue { value }))
}

/// Write a variable (a secret one stays secret); the next read of any run sees it.
#[utoipa::path(put, path = "/api/v1/runtime/variables/{name}", tag = "runtime", operation_id = "runtime_set_variable",
    params(VariableName),
    request_body = RuntimeValueBody,
    responses(
        (status = 200, description = "The value written", body = RuntimeValue),
        (status = 409, description = "The execution's claim is gone", body = ErrorBody),
        (status = 413, description = "The body is over 2 MiB", body = ErrorBody),
        (status = 422, description = "The name or the body is not valid", body = ErrorBody),
    ),
    security(("runtime" = [])))]
pub async fn set_variable(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(VariableName { name }): Path<VariableName>,
    Body(bytes): Body,
) -> ApiResult<Json<RuntimeValue>> {
    let exec = caller(&state, &headers).await?;
    validate_name(&name)?;
    let body: RuntimeValueBody = body::json(&bytes)?;
    runtime(&state)
        .set_variable(exec.execution_id, exec.attempt, &name, &body.value)
        .await
        .map_err(internal)?
        .ok_or_else(gone)?;
    Ok(Json(RuntimeValue { value: body.value }))
}

/// Set the workflow condition (stored at once).
#[utoipa::path(put, path = "/api/v1/runtime/condition", tag = "runtime", operation_id = "runtime_set_condition",
    request_body = RuntimeValueBody,
    responses(
        (status = 200, description = "The condition as stored", body = RuntimeValue),
        (status = 409, description = "The execution's claim is gone", body = ErrorBody),
        (status = 413, description = "The body is over 2 MiB", body = ErrorBody),
        (status = 422, description = "The value is not true or false", body = ErrorBody),
    ),
    security(("runtime" = [])))]
pub async fn set_condition(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(bytes): Body,
) -> ApiResult<Json<RuntimeValue>> {
    let exec = caller(&state, &headers).await?;
    let body: RuntimeValueBody = body::json(&bytes)?;
    let Value::Bool(value) = body.value else {
        return Err(ApiError::bad("value", "expected true or false"));
    };
    let written = runtime(&state)
        .set_condition(exec.execution_id, exec.attempt, value)
        .await
        .map_err(internal)?;
    if !written {
        return Err(gone());
    }
    Ok(Json(RuntimeValue {
        value: Value::Bool(value),
    }))
}
