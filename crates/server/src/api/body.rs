//! Request bodies parsed with errors that name the field at fault.
//!
//! An empty body reads as `{}`. Where the body is optional (the document says so), JSON `null`
//! means "no body" too, since that is what a client serialising a missing value sends.

use axum::body::Bytes;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A JSON object body (every body of the API is one). An array is refused too, although serde
/// would read it as a struct's fields in order: the document says object.
pub fn json<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    let text = if bytes.is_empty() {
        &b"{}"[..]
    } else {
        &bytes[..]
    };
    let value: serde_json::Value = serde_json::from_slice(text)
        .map_err(|e| ApiError::bad("(body)", format!("not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad("(body)", "expected a JSON object"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ApiError::bad("(body)", inner.to_string())
        } else {
            ApiError::bad(path, inner.to_string())
        }
    })
}

/// An optional body: empty, `{}` or `null` give `T::default()`.
pub fn optional_json<T: DeserializeOwned + Default>(bytes: &Bytes) -> Result<T, ApiError> {
    if bytes.trim_ascii() == b"null" {
        return Ok(T::default());
    }
    json(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Default, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Opt {
        #[serde(default)]
        a: Option<i64>,
    }

    /// Regression (found by the API fuzzer): an optional body sent as `null` was a 422.
    #[test]
    fn an_optional_body_may_be_empty_or_null() {
        for text in ["", "null", " null\n", "{}"] {
            let got: Opt = optional_json(&Bytes::from(text)).expect(text);
            assert_eq!(got, Opt::default(), "{text:?}");
        }
        let got: Opt = optional_json(&Bytes::from(r#"{"a": 3}"#)).unwrap();
        assert_eq!(got.a, Some(3));
        // Regression: serde reads an array as a struct's fields in order; the document says
        // object, so an array is refused.
        for text in ["[]", "[3]", "3", "\"a\""] {
            let err = optional_json::<Opt>(&Bytes::from(text)).unwrap_err();
            assert!(
                err.to_string().contains("(body): expected a JSON object"),
                "{err}"
            );
        }
        let err = json::<Opt>(&Bytes::from(r#"{"a": "x"}"#)).unwrap_err();
        assert!(err.to_string().starts_with("a: "), "{err}");
        let err = json::<Opt>(&Bytes::from("{oops")).unwrap_err();
        assert!(
            err.to_string().starts_with("(body): not valid JSON"),
            "{err}"
        );
        // A required body is still refused when null.
        assert!(json::<Opt>(&Bytes::from("null")).is_err());
    }
}
