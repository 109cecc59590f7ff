//! The one error type of the HTTP edge: maps every failure to a status code and a JSON body
//! `{"error": {"code": ..., "message": ..., "field": ...}}` naming the field at fault. Internal
//! errors are logged with their cause and returned as a generic 500.

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cronium_core::spec::SpecError;
use cronium_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    /// What went wrong, starting with the field at fault when there is one.
    pub message: String,
    /// The field (or parameter) at fault, as a path into the request (`retries.backoff`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// The kind of error; each has one HTTP status.
#[derive(Serialize, ToSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 422: the request is not valid (the field is named).
    Invalid,
    /// 401: no token, or not a valid one.
    Unauthorized,
    /// 403: the token's role (or its user's) does not allow this.
    Forbidden,
    /// 404
    NotFound,
    /// 409: the request conflicts with the current state (a name taken, a limit reached...).
    Conflict,
    /// 413: the request body is over the limit.
    TooLarge,
    /// 400: a webhook's body is not a JSON object.
    Malformed,
    /// 500: details are in the server's log.
    Internal,
}

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
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{message}")]
    Conflict {
        field: Option<String>,
        message: String,
    },
    #[error("request body too large")]
    TooLarge,
    /// 400: a body that is not what the route takes (a webhook's JSON).
    #[error("{0}")]
    Malformed(String),
    /// 401 without a bearer challenge: a webhook's signature is missing, wrong, stale or
    /// replayed.
    #[error("{0}")]
    BadSignature(String),
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

/// A path parameter that does not parse (`/jobs/abc`) is a 422 naming it, in the one error
/// shape, not axum's plain-text 400.
impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        use axum::extract::path::ErrorKind;
        match e {
            PathRejection::FailedToDeserializePathParams(e) => {
                let field = match e.kind() {
                    ErrorKind::ParseErrorAtKey { key, .. }
                    | ErrorKind::InvalidUtf8InPathParam { key }
                    | ErrorKind::DeserializeError { key, .. } => key.clone(),
                    _ => "(path)".to_string(),
                };
                ApiError::bad(field, e.body_text())
            }
            other => ApiError::internal(other.body_text()),
        }
    }
}

/// A query string that does not parse, or names an unknown parameter, is a 422.
impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        let text = e.body_text();
        let detail = text
            .strip_prefix("Failed to deserialize query string: ")
            .unwrap_or(&text);
        ApiError::bad(query_field(detail), detail.to_string())
    }
}

/// The parameter a query-string error names: `limit: invalid digit...` (a value that does not
/// parse) or ``unknown field `colour`, expected ...`` (an unknown parameter).
fn query_field(detail: &str) -> String {
    if let Some(rest) = detail.split_once("unknown field `").map(|(_, r)| r) {
        if let Some((field, _)) = rest.split_once('`') {
            return field.to_string();
        }
    }
    match detail.split_once(": ") {
        Some((key, _))
            if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
        {
            key.to_string()
        }
        _ => "(query)".to_string(),
    }
}

/// A body over the limit is a 413; one that cannot be read is a 422.
impl From<BytesRejection> for ApiError {
    fn from(e: BytesRejection) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge
        } else {
            ApiError::bad("(body)", e.body_text())
        }
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

impl From<crate::usecases::UseCaseError> for ApiError {
    fn from(e: crate::usecases::UseCaseError) -> Self {
        use crate::usecases::UseCaseError;
        match e {
            UseCaseError::Invalid { field, message } => ApiError::BadRequest { field, message },
            UseCaseError::NotFound(message) => ApiError::NotFound(message),
            UseCaseError::Forbidden(message) => ApiError::Forbidden(message),
            UseCaseError::Conflict { field, message } => ApiError::Conflict { field, message },
            UseCaseError::Store(e) => e.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, field) = match &self {
            ApiError::BadRequest { field, .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::Invalid,
                field.clone(),
            ),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, None),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, ErrorCode::Forbidden, None),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::NotFound, None),
            ApiError::Conflict { field, .. } => {
                (StatusCode::CONFLICT, ErrorCode::Conflict, field.clone())
            }
            ApiError::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::TooLarge, None),
            ApiError::Malformed(_) => (
                StatusCode::BAD_REQUEST,
                ErrorCode::Malformed,
                Some("(body)".to_string()),
            ),
            ApiError::BadSignature(_) => (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, None),
            ApiError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal, None)
            }
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code,
                message: self.to_string(),
                field,
            },
        };
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

#[cfg(test)]
mod tests {
    use super::query_field;

    #[test]
    fn query_errors_name_the_parameter() {
        assert_eq!(query_field("limit: invalid digit found in string"), "limit");
        assert_eq!(
            query_field("unknown field `colour`, expected one of `event`, `status`"),
            "colour"
        );
        assert_eq!(query_field("something else"), "(query)");
    }
}
