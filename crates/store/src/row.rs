//! Decoding helpers shared by the table modules: typed column reads from an `AnyRow`, with
//! booleans stored as 0/1 and JSON stored as text.
//!
//! Not for SQL: each module keeps its own statements next to their use.

use std::str::FromStr;

use cronium_model::UnknownValue;
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::StoreError;

pub(crate) fn i64_col(row: &AnyRow, col: &str) -> Result<i64, StoreError> {
    Ok(row.try_get::<i64, _>(col)?)
}

pub(crate) fn opt_i64(row: &AnyRow, col: &str) -> Result<Option<i64>, StoreError> {
    Ok(row.try_get::<Option<i64>, _>(col)?)
}

pub(crate) fn i32_col(row: &AnyRow, col: &str) -> Result<i32, StoreError> {
    let v = i64_col(row, col)?;
    i32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{col} = {v} does not fit in i32")))
}

pub(crate) fn opt_i32(row: &AnyRow, col: &str) -> Result<Option<i32>, StoreError> {
    match opt_i64(row, col)? {
        None => Ok(None),
        Some(v) => i32::try_from(v)
            .map(Some)
            .map_err(|_| StoreError::Corrupt(format!("{col} = {v} does not fit in i32"))),
    }
}

pub(crate) fn bool_col(row: &AnyRow, col: &str) -> Result<bool, StoreError> {
    Ok(i64_col(row, col)? != 0)
}

pub(crate) fn text(row: &AnyRow, col: &str) -> Result<String, StoreError> {
    Ok(row.try_get::<String, _>(col)?)
}

pub(crate) fn opt_text(row: &AnyRow, col: &str) -> Result<Option<String>, StoreError> {
    Ok(row.try_get::<Option<String>, _>(col)?)
}

/// A column holding a word of the vocabulary (a status, a trigger). A word the model does not
/// know (written by a newer version, or by hand) is corrupt data, not a panic.
pub(crate) fn word<T: FromStr<Err = UnknownValue>>(
    row: &AnyRow,
    col: &str,
) -> Result<T, StoreError> {
    parse_word(col, &text(row, col)?)
}

/// A stored word (a status, a kind) as its enum; `col` names it in the error.
pub(crate) fn parse_word<T: FromStr<Err = UnknownValue>>(
    col: &str,
    text: &str,
) -> Result<T, StoreError> {
    text.parse()
        .map_err(|e: UnknownValue| StoreError::Corrupt(format!("column {col}: {e}")))
}

/// A JSON column; SQL NULL reads as `Value::Null`.
pub(crate) fn json(row: &AnyRow, col: &str) -> Result<Value, StoreError> {
    parse_json(col, opt_text(row, col)?.as_deref())
}

/// The stored text of a JSON column (None for SQL NULL, read as `Value::Null`) as its value.
pub(crate) fn parse_json(col: &str, text: Option<&str>) -> Result<Value, StoreError> {
    match text {
        None => Ok(Value::Null),
        Some(s) => serde_json::from_str(s)
            .map_err(|e| StoreError::Corrupt(format!("column {col} holds invalid JSON: {e}"))),
    }
}

/// Serialises a JSON value for a TEXT column. Serialising a `Value` cannot fail (its map keys are
/// strings), but we still refuse to panic on the path.
pub(crate) fn to_json(field: &str, value: &Value) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Invalid(format!("{field}: cannot serialise JSON: {e}")))
}

pub(crate) fn bool_int(b: bool) -> i64 {
    i64::from(b)
}
