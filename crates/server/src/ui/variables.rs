//! `GET/POST /variables`: the variables scripts read and write. A secret's value is never
//! shown once written (write-only): the page says "secret" and offers to replace it.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use cronium_store::VariableValue;
use serde::Deserialize;
use serde_json::Value;

use super::error::UiResult;
use super::session::Session;
use super::{format, render, Ctx};
use crate::authz::{get, post, Role, Routes};
use crate::state::AppState;
use crate::usecases::variables as uc;
use crate::usecases::{Actor, UseCaseError};

pub fn routes() -> Routes<AppState> {
    Routes::new()
        .route(
            "/variables",
            get(Role::Viewer, list).post(Role::Operator, set),
        )
        .route("/variables/{name}/delete", post(Role::Operator, delete))
}

pub struct VarItem {
    pub name: String,
    /// None for a secret.
    pub value: Option<String>,
    pub updated: String,
}

#[derive(Template)]
#[template(path = "variables.html")]
struct VariablesPage {
    ctx: Ctx,
    vars: Vec<VarItem>,
    error: Option<(String, String)>,
    form_name: String,
    form_value: String,
    form_secret: bool,
}

async fn page(
    state: &AppState,
    session: &Session,
    error: Option<(String, String)>,
    form: Option<&SetForm>,
) -> UiResult<VariablesPage> {
    let vars = uc::list(state)
        .await?
        .into_iter()
        .map(|v| VarItem {
            value: match v.value {
                VariableValue::Plain(v) => Some(v.to_string()),
                VariableValue::Secret(_) => None,
            },
            name: v.name,
            updated: format::ts(Some(v.updated_at)),
        })
        .collect();
    Ok(VariablesPage {
        ctx: Ctx::new(session, "variables"),
        vars,
        error,
        form_name: form.map(|f| f.name.clone()).unwrap_or_default(),
        // A secret typed into a refused form is not sent back to the page.
        form_value: form
            .filter(|f| f.secret.is_none())
            .map(|f| f.value.clone())
            .unwrap_or_default(),
        form_secret: form.is_some_and(|f| f.secret.is_some()),
    })
}

pub async fn list(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> UiResult<Response> {
    Ok(render(&page(&state, &session, None, None).await?))
}

#[derive(Deserialize)]
pub struct SetForm {
    name: String,
    value: String,
    secret: Option<String>,
}

/// Sets a variable; the value is JSON, or else taken as a string.
pub async fn set(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Form(f): Form<SetForm>,
) -> UiResult<Response> {
    let value = serde_json::from_str::<Value>(f.value.trim())
        .unwrap_or_else(|_| Value::String(f.value.clone()));
    match uc::set(
        &state,
        &session.actor(),
        f.name.trim(),
        value,
        f.secret.is_some(),
    )
    .await
    {
        Ok(_) => Ok(Redirect::to("/variables").into_response()),
        Err(e @ UseCaseError::Invalid { .. }) => {
            let field = e.field().unwrap_or("value").to_string();
            let p = page(&state, &session, Some((field, e.to_string())), Some(&f)).await?;
            Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&p)).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn delete(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
) -> UiResult<Response> {
    uc::delete(&state, &actor, &name).await?;
    Ok(Redirect::to("/variables").into_response())
}
