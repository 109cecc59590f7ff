//! [`Error`], what a call to the server can end with. Callers classify it (retry a transport
//! failure or a 503, word it for a user); it keeps what they need for that: the method and
//! path of the call, and of an answer its status and the server's `code`, `message`, `field`.

use reqwest::Method;

use crate::error_body::ErrorBody;

/// Longest piece of an unexpected body kept in an error (they end up in logs and terminals).
const BODY_SNIPPET: usize = 2_000;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `reqwest` client could not be built (its TLS backend, say).
    #[error("building the HTTP client: {0}")]
    Build(#[source] reqwest::Error),
    /// No answer, or not all of it: connection refused or reset, DNS, a timeout, a body or
    /// stream cut off.
    #[error("{method} {path}: {source}")]
    Unreachable {
        method: Method,
        path: String,
        #[source]
        source: reqwest::Error,
    },
    /// A non-2xx answer. `code`, `message` and `field` are the server's [`ErrorBody`]; a body of
    /// another shape (a proxy's page) leaves `code` and `field` empty and is the `message`,
    /// trimmed. (`code` and `field` are boxed `str`s to keep the error small: it is the `Err`
    /// of every call.)
    #[error("{method} {path}: HTTP {status}: {message}")]
    Status {
        method: Method,
        path: String,
        status: u16,
        code: Option<Box<str>>,
        message: String,
        field: Option<Box<str>>,
    },
    /// A 2xx answer whose body is not what the call expects.
    #[error("unexpected answer to {method} {path} (HTTP {status}): {reason}: {body}")]
    Shape {
        method: Method,
        path: String,
        status: u16,
        /// Why it does not parse.
        reason: String,
        /// The start of the body.
        body: String,
    },
    /// An event stream ended before the event the caller waited for.
    #[error("the event stream of {path} ended before its `{event}` event")]
    Closed { path: String, event: String },
}

impl Error {
    /// The error of a non-2xx answer with body `text`.
    pub(crate) fn status(method: Method, path: &str, status: u16, text: &str) -> Error {
        match serde_json::from_str::<ErrorBody>(text) {
            Ok(b) => Error::Status {
                method,
                path: path.into(),
                status,
                code: Some(b.error.code.into()),
                message: b.error.message,
                field: b.error.field.map(Into::into),
            },
            Err(_) => Error::Status {
                method,
                path: path.into(),
                status,
                code: None,
                message: text.trim().to_string(),
                field: None,
            },
        }
    }

    pub(crate) fn shape(
        method: Method,
        path: &str,
        status: u16,
        reason: impl ToString,
        body: &[u8],
    ) -> Error {
        Error::Shape {
            method,
            path: path.into(),
            status,
            reason: reason.to_string(),
            body: snippet(body),
        }
    }

    /// The answer's status, when there was an answer.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } | Error::Shape { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The server's `error.code`, for an error answer in the API's shape.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Status { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// No answer at all (see [`Error::Unreachable`]).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Unreachable { .. })
    }
}

/// The first [`BODY_SNIPPET`] bytes of `body` as text, cut on a character boundary.
pub(crate) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(BODY_SNIPPET)]);
    let mut s = text.into_owned();
    // A cut in the middle of a character shows as U+FFFD at the end: drop it.
    if body.len() > BODY_SNIPPET {
        while s.ends_with('\u{FFFD}') {
            s.pop();
        }
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_body_in_the_api_shape_is_read_field_by_field() {
        let e = Error::status(
            Method::POST,
            "/api/v1/events",
            422,
            r#"{"error":{"code":"invalid","message":"retries.backoff: not a duration","field":"retries.backoff"}}"#,
        );
        match e {
            Error::Status {
                status,
                code,
                message,
                field,
                ..
            } => {
                assert_eq!(status, 422);
                assert_eq!(code.as_deref(), Some("invalid"));
                assert_eq!(message, "retries.backoff: not a duration");
                assert_eq!(field.as_deref(), Some("retries.backoff"));
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn another_body_is_the_message_trimmed() {
        let e = Error::status(Method::GET, "/x", 502, "  <html>Bad Gateway</html>\n");
        assert_eq!(e.code(), None);
        assert_eq!(e.to_string(), "GET /x: HTTP 502: <html>Bad Gateway</html>");
        // JSON that is not the error shape is not mistaken for it.
        let e = Error::status(Method::GET, "/x", 500, r#"{"message":"m"}"#);
        assert!(
            matches!(e, Error::Status { code: None, ref message, .. } if message == r#"{"message":"m"}"#)
        );
    }

    #[test]
    fn a_long_body_is_cut_on_a_character_boundary() {
        let body = "é".repeat(BODY_SNIPPET);
        let s = snippet(body.as_bytes());
        assert!(s.ends_with('…'));
        assert!(!s.contains('\u{FFFD}'));
        assert!(s.len() <= BODY_SNIPPET + '…'.len_utf8());
    }
}
