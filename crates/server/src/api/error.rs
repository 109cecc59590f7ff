//! The one error type of the HTTP edge: maps every failure to a status code and a JSON body
//! `{"error": {"code": ..., "message": ..., "field": ...}}` naming the field at fault. Internal
//! errors are logged with their cause and returned as a generic 500.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cronium_core::spec::SpecError;
use cronium_store::StoreError;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest {
        field: Option<String>,
        message: String,
    },
    #[error("authentication required: send `Authorization: Bearer <token>`")]
    Unauthorized,
    #[error("{0}")]
    NotFound(String),
    #[error("{message}")]
    Conflict {
        field: Option<String>,
        message: String,
    },
    #[error("request body too large")]
    TooLarge,
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// A 422 naming the field at fault; the message starts with the field.
    pub fn bad(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = message.into();
        ApiError::BadRequest {
            message: if message.starts_with(&field) {
                message
            } else {
                format!("{field}: {message}")
            },
            field: Some(field),
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<SpecError> for ApiError {
    fn from(e: SpecError) -> Self {
        ApiError::BadRequest {
            message: e.to_string(),
            field: Some(e.field),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            StoreError::Conflict(field) => ApiError::Conflict {
                message: format!("{field}: already exists"),
                field: Some(field),
            },
            StoreError::Invalid(message) => ApiError::BadRequest {
                field: None,
                message,
            },
            e @ StoreError::LimitReached { .. } => ApiError::Conflict {
                message: e.to_string(),
                field: Some("max_executions".into()),
            },
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, field) = match &self {
            ApiError::BadRequest { field, .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid", field.clone())
            }
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", None),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", None),
            ApiError::Conflict { field, .. } => (StatusCode::CONFLICT, "conflict", field.clone()),
            ApiError::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "too_large", None),
            ApiError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal", None)
            }
        };
        let mut body = json!({"error": {"code": code, "message": self.to_string()}});
        if let Some(f) = field {
            body["error"]["field"] = json!(f);
        }
        let mut resp = (status, Json(body)).into_response();
        if matches!(self, ApiError::Unauthorized) {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
