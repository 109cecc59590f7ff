//! The one place page errors are rendered: every failure of a page handler becomes a
//! [`UiError`], shown as a small HTML page with its status. Internal causes go to the server's
//! log, never to the page. A validation error of a form is not a `UiError`: the form's page
//! shows it next to its field.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use super::assets;
use crate::usecases::UseCaseError;

#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error("{0}")]
    NotFound(String),
    /// A state-changing request without its CSRF token (or with a wrong one).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooMany(String),
    #[error("internal error")]
    Internal(String),
}

impl From<UseCaseError> for UiError {
    fn from(e: UseCaseError) -> Self {
        match e {
            UseCaseError::Invalid { message, .. } => UiError::BadRequest(message),
            UseCaseError::NotFound(m) => UiError::NotFound(m),
            UseCaseError::Forbidden(m) => UiError::Forbidden(m),
            UseCaseError::Conflict { message, .. } => UiError::Conflict(message),
            UseCaseError::Store(cronium_store::StoreError::NotFound(what)) => {
                UiError::NotFound(format!("{what} not found"))
            }
            UseCaseError::Store(cronium_store::StoreError::Conflict(field)) => {
                UiError::Conflict(format!("{field}: already exists"))
            }
            e @ UseCaseError::Store(cronium_store::StoreError::LimitReached { .. }) => {
                UiError::Conflict(e.to_string())
            }
            UseCaseError::Store(e) => UiError::Internal(e.to_string()),
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    title: &'a str,
    message: String,
    css: &'a str,
    icon: &'a str,
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let (status, title) = match &self {
            UiError::NotFound(_) => (StatusCode::NOT_FOUND, "Not found"),
            UiError::Forbidden(_) => (StatusCode::FORBIDDEN, "Forbidden"),
            UiError::BadRequest(_) => (StatusCode::UNPROCESSABLE_ENTITY, "Not valid"),
            UiError::Conflict(_) => (StatusCode::CONFLICT, "Conflict"),
            UiError::TooMany(_) => (StatusCode::TOO_MANY_REQUESTS, "Too many attempts"),
            UiError::Internal(cause) => {
                tracing::error!(%cause, "page failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong")
            }
        };
        let message = match &self {
            UiError::Internal(_) => {
                "The server could not show this page; the details are in its log.".into()
            }
            other => other.to_string(),
        };
        let a = assets::get();
        let page = ErrorPage {
            status: status.as_u16(),
            title,
            message,
            css: &a.css.path,
            icon: &a.icon.path,
        };
        let html = page
            .render()
            .unwrap_or_else(|_| format!("<!doctype html><title>{title}</title><h1>{title}</h1>"));
        (status, Html(html)).into_response()
    }
}

pub type UiResult<T> = Result<T, UiError>;
