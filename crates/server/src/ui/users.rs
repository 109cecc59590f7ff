//! `GET/POST /users`: accounts (admin only): the list with role, state and last login; add a
//! user; change a role; disable, enable; set a password. Every rule is the use case's
//! (`usecases::users`): the last enabled admin cannot be demoted or disabled, disabling or a
//! new password ends the user's sessions at once.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use cronium_model::Role;
use serde::Deserialize;

use super::error::UiResult;
use super::session::Session;
use super::{format, render, Ctx};
use crate::authz::{get, post, Routes};
use crate::state::AppState;
use crate::usecases::users as uc;
use crate::usecases::UseCaseError;

pub fn routes() -> Routes<AppState> {
    Routes::new()
        .route("/users", get(Role::Admin, list).post(Role::Admin, add))
        .route("/users/{name}", post(Role::Admin, change))
}

pub struct UserItem {
    pub name: String,
    pub role: String,
    pub disabled: bool,
    pub created: String,
    pub last_login: String,
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    ctx: Ctx,
    users: Vec<UserItem>,
    roles: Vec<&'static str>,
    /// (field, message) of a refused form.
    error: Option<(String, String)>,
    done: Option<String>,
    form_name: String,
}

async fn page(
    state: &AppState,
    session: &Session,
    error: Option<(String, String)>,
    done: Option<String>,
    form_name: String,
) -> UiResult<UsersPage> {
    let users = uc::list(state)
        .await?
        .into_iter()
        .map(|u| UserItem {
            name: u.username,
            role: u.role.to_string(),
            disabled: u.disabled_at.is_some(),
            created: format::ts(Some(u.created_at)),
            last_login: format::ts(u.last_login_at),
        })
        .collect();
    Ok(UsersPage {
        ctx: Ctx::new(session, "users"),
        users,
        roles: Role::ALL.iter().map(|r| r.as_str()).collect(),
        error,
        done,
        form_name,
    })
}

#[derive(Deserialize)]
pub struct DoneQuery {
    done: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    axum::extract::Query(q): axum::extract::Query<DoneQuery>,
) -> UiResult<Response> {
    let done = match q.done.as_deref() {
        Some("added") => Some("User added.".to_string()),
        Some("changed") => Some("User changed.".to_string()),
        Some("password") => Some("Password set; the user's sessions ended.".to_string()),
        _ => None,
    };
    Ok(render(
        &page(&state, &session, None, done, String::new()).await?,
    ))
}

#[derive(Deserialize)]
pub struct AddForm {
    name: String,
    role: String,
    password: String,
}

fn parse_role(r: &str) -> Result<Role, UseCaseError> {
    r.trim()
        .parse::<Role>()
        .map_err(|e| UseCaseError::invalid("role", e.to_string()))
}

async fn refused(
    state: &AppState,
    session: &Session,
    e: UseCaseError,
    form_name: String,
) -> UiResult<Response> {
    match e {
        e @ (UseCaseError::Invalid { .. } | UseCaseError::Conflict { .. }) => {
            let field = e.field().unwrap_or("name").to_string();
            let p = page(
                state,
                session,
                Some((field, e.to_string())),
                None,
                form_name,
            )
            .await?;
            let status = match e {
                UseCaseError::Conflict { .. } => StatusCode::CONFLICT,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            Ok((status, render(&p)).into_response())
        }
        e => Err(e.into()),
    }
}

pub async fn add(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Form(f): Form<AddForm>,
) -> UiResult<Response> {
    let name = f.name.trim().to_string();
    let result = match parse_role(&f.role) {
        Ok(role) => uc::add(&state, &session.actor(), &name, role, &f.password).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => Ok(Redirect::to("/users?done=added").into_response()),
        Err(e) => refused(&state, &session, e, name).await,
    }
}

/// One of the changes of a user's row: `role`, `disable`, `enable` or `password`.
#[derive(Deserialize)]
pub struct ChangeForm {
    action: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    password: String,
}

pub async fn change(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    Form(f): Form<ChangeForm>,
) -> UiResult<Response> {
    let actor = session.actor();
    let result = match f.action.as_str() {
        "role" => match parse_role(&f.role) {
            Ok(role) => uc::update(
                &state,
                &actor,
                &name,
                uc::Change {
                    role: Some(role),
                    disabled: None,
                },
            )
            .await
            .map(|_| "changed"),
            Err(e) => Err(e),
        },
        "disable" | "enable" => uc::update(
            &state,
            &actor,
            &name,
            uc::Change {
                role: None,
                disabled: Some(f.action == "disable"),
            },
        )
        .await
        .map(|_| "changed"),
        "password" => uc::set_password(&state, &actor, &name, &f.password)
            .await
            .map(|_| "password"),
        other => Err(UseCaseError::invalid(
            "action",
            format!("unknown action `{other}`; expected role, disable, enable or password"),
        )),
    };
    match result {
        // Changing one's own password ended one's own session too: log in again.
        Ok("password") if name == session.username => Ok(Redirect::to("/login").into_response()),
        Ok(done) => Ok(Redirect::to(&format!("/users?done={done}")).into_response()),
        Err(e) => refused(&state, &session, e, String::new()).await,
    }
}
