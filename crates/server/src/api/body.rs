//! Request bodies parsed with errors that name the field at fault.

use axum::body::Bytes;
use serde::de::DeserializeOwned;

use super::error::ApiError;

pub fn json<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    let text = if bytes.is_empty() {
        &b"{}"[..]
    } else {
        &bytes[..]
    };
    let mut de = serde_json::Deserializer::from_slice(text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::bad("(body)", format!("not valid JSON: {inner}"))
        } else if path == "." {
            ApiError::bad("(body)", inner.to_string())
        } else {
            ApiError::bad(path, inner.to_string())
        }
    })
}
