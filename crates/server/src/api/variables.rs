//! `/api/v1/variables`: named JSON values scripts read and write. Secret ones are encrypted at
//! rest and never returned in clear text once written.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use cronium_core::clock::rfc3339;
use cronium_store::{VariableRow, VariableValue};
use serde_json::Value;

use super::body;
use super::dto::{VariableBody, VariableDto};
use super::error::{ApiResult, ErrorBody};
use super::extract::{Body, Path};
use super::params::VariableName;
use crate::state::AppState;
use crate::usecases::{variables, Actor};

fn dto(row: VariableRow) -> VariableDto {
    let (value, secret) = match row.value {
        VariableValue::Plain(v) => (v, false),
        VariableValue::Secret(_) => (Value::Null, true),
    };
    VariableDto {
        name: row.name,
        value,
        secret,
        updated_at: rfc3339(row.updated_at),
    }
}

/// List variables (secret values are null).
#[utoipa::path(get, path = "/api/v1/variables", tag = "variables", operation_id = "list_variables",
    responses((status = 200, description = "Every variable, by name", body = [VariableDto])),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<VariableDto>>> {
    Ok(Json(
        variables::list(&state)
            .await?
            .into_iter()
            .map(dto)
            .collect(),
    ))
}

/// Read one variable (a secret one's value is null).
#[utoipa::path(get, path = "/api/v1/variables/{name}", tag = "variables", operation_id = "show_variable",
    params(VariableName),
    responses(
        (status = 200, description = "The variable", body = VariableDto),
        (status = 404, description = "No such variable", body = ErrorBody),
        (status = 422, description = "The name is not valid UTF-8", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn show(
    State(state): State<AppState>,
    Path(VariableName { name }): Path<VariableName>,
) -> ApiResult<Json<VariableDto>> {
    let row = variables::get(&state, &name).await?;
    Ok(Json(dto(row)))
}

/// Create or replace a variable.
#[utoipa::path(put, path = "/api/v1/variables/{name}", tag = "variables", operation_id = "set_variable",
    params(VariableName),
    request_body = VariableBody,
    responses(
        (status = 200, description = "The variable as stored (a secret one's value is null)", body = VariableDto),
        (status = 404, description = "The path names no variable (an empty name)", body = ErrorBody),
        (status = 413, description = "The body is over 2 MiB", body = ErrorBody),
        (status = 422, description = "The name or the body is not valid (the field is named)", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn set(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(VariableName { name }): Path<VariableName>,
    Body(bytes): Body,
) -> ApiResult<Json<VariableDto>> {
    variables::validate_name(&name)?;
    let body: VariableBody = body::json(&bytes)?;
    let row = variables::set(&state, &actor, &name, body.value, body.secret).await?;
    Ok(Json(dto(row)))
}

/// Delete a variable.
#[utoipa::path(delete, path = "/api/v1/variables/{name}", tag = "variables", operation_id = "delete_variable",
    params(VariableName),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such variable", body = ErrorBody),
        (status = 422, description = "The name is not valid UTF-8", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(VariableName { name }): Path<VariableName>,
) -> ApiResult<StatusCode> {
    variables::delete(&state, &actor, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
