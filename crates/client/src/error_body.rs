//! The JSON body of the server's error answers, `{"error": {"code", "message", "field"?}}`: the
//! one definition the agent API writes (`cronium_agent::wire` re-exports it) and every client
//! reads. The public API's `api::error` writes the same shape with its own typed code (and the
//! OpenAPI schema), which [`ErrorDetail::code`] reads as a plain string.

use serde::{Deserialize, Serialize};

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// The kind of error (`invalid`, `not_found`, `lease_lost`, ...).
    pub code: String,
    /// What went wrong, starting with the field at fault when there is one.
    pub message: String,
    /// The field (or parameter) at fault, as a path into the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}
