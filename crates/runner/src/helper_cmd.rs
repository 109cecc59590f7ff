//! `cronium-runner helper OP [ARGS]`: the back end of the Bash helpers (`cronium.input`,
//! `cronium.output`, ...), run by the script inside a bundled-mode run.
//!
//! Reads the run's files in `$CRONIUM_HELPER_DIR` and appends updates to `updates.jsonl`; it
//! never talks to the controller (the runner forwards the updates). Values given on the command
//! line are JSON when they parse as JSON, strings otherwise; values printed are raw strings or
//! compact JSON.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use cronium_protocol::HelperUpdate;
use serde_json::{Map, Value};

use crate::bundle::{EVENT_FILE, HELPER_DIR_ENV, INPUT_FILE, UPDATES_FILE, VARIABLES_FILE};

#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("{HELPER_DIR_ENV} is not set: helpers only work inside a Cronium run")]
    NoDir,
    #[error("unknown helper `{0}` (expected input, output, getVariable, setVariable, event, setCondition)")]
    UnknownOp(String),
    #[error("usage: {0}")]
    Usage(&'static str),
    #[error("setCondition expects true or false, got `{0}`")]
    NotBool(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is not valid JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Runs one helper operation; returns the process exit code (errors are printed to stderr).
pub fn main(op: &str, args: &[String]) -> i32 {
    match run(op, args) {
        Ok(Some(text)) => {
            let mut out = io::stdout().lock();
            let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
            0
        }
        Ok(None) => 0,
        Err(e) => {
            diag!("cronium.{op}: {e}");
            2
        }
    }
}

fn run(op: &str, args: &[String]) -> Result<Option<String>, HelperError> {
    let dir = PathBuf::from(std::env::var_os(HELPER_DIR_ENV).ok_or(HelperError::NoDir)?);
    match (normalise(op), args) {
        ("input", []) => Ok(Some(show(&read_value(&dir, INPUT_FILE)?))),
        ("input", [key]) => Ok(read_value(&dir, INPUT_FILE)?.get(key).map(show)),
        ("input", _) => Err(HelperError::Usage("cronium.input [KEY]")),
        ("output", [value]) => {
            append(
                &dir,
                &HelperUpdate::Output {
                    value: parse(value),
                },
            )?;
            Ok(None)
        }
        ("output", [key, value]) => {
            append(
                &dir,
                &HelperUpdate::OutputKey {
                    key: key.clone(),
                    value: parse(value),
                },
            )?;
            Ok(None)
        }
        ("output", _) => Err(HelperError::Usage(
            "cronium.output JSON | cronium.output KEY VALUE",
        )),
        ("getVariable", [name]) => Ok(read_value(&dir, VARIABLES_FILE)?.get(name).map(show)),
        ("getVariable", _) => Err(HelperError::Usage("cronium.getVariable NAME")),
        ("setVariable", [name, value]) if !name.is_empty() => {
            set_variable(&dir, name, parse(value))?;
            Ok(None)
        }
        ("setVariable", _) => Err(HelperError::Usage("cronium.setVariable NAME VALUE")),
        ("event", []) => Ok(Some(show(&read_value(&dir, EVENT_FILE)?))),
        ("event", [field]) => Ok(read_value(&dir, EVENT_FILE)?.get(field).map(show)),
        ("event", _) => Err(HelperError::Usage("cronium.event [FIELD]")),
        ("setCondition", [value]) => {
            let value = match value.trim() {
                "true" => true,
                "false" => false,
                other => return Err(HelperError::NotBool(other.to_string())),
            };
            append(&dir, &HelperUpdate::SetCondition { value })?;
            Ok(None)
        }
        ("setCondition", _) => Err(HelperError::Usage("cronium.setCondition true|false")),
        _ => Err(HelperError::UnknownOp(op.to_string())),
    }
}

/// Accepts camelCase, snake_case and kebab-case spellings of an operation.
fn normalise(op: &str) -> &str {
    match op {
        "get-variable" | "get_variable" | "getVariable" => "getVariable",
        "set-variable" | "set_variable" | "setVariable" => "setVariable",
        "set-condition" | "set_condition" | "setCondition" => "setCondition",
        other => other,
    }
}

/// A command-line value: JSON when it parses as JSON, otherwise the string itself.
fn parse(arg: &str) -> Value {
    serde_json::from_str(arg).unwrap_or_else(|_| Value::String(arg.to_string()))
}

/// Strings raw (no quotes), anything else compact JSON; always newline-terminated.
fn show(value: &Value) -> String {
    let mut s = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    s.push('\n');
    s
}

/// A JSON file of `.cronium/`; a missing file or `null` reads as `{}`.
fn read_value(dir: &Path, name: &str) -> Result<Value, HelperError> {
    let path = dir.join(name);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Value::Object(Map::new())),
        Err(source) => return Err(HelperError::Io { path, source }),
    };
    match serde_json::from_slice(&bytes) {
        Ok(Value::Null) => Ok(Value::Object(Map::new())),
        Ok(v) => Ok(v),
        Err(source) => Err(HelperError::Json { path, source }),
    }
}

/// Appends one update line with a single write() on an O_APPEND descriptor.
fn append(dir: &Path, update: &HelperUpdate) -> Result<(), HelperError> {
    let path = dir.join(UPDATES_FILE);
    let mut line = serde_json::to_vec(update).map_err(|source| HelperError::Json {
        path: path.clone(),
        source,
    })?;
    line.push(b'\n');
    let io_err = |source| HelperError::Io {
        path: path.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_err)?;
    file.write_all(&line).map_err(io_err)
}

fn set_variable(dir: &Path, name: &str, value: Value) -> Result<(), HelperError> {
    append(
        dir,
        &HelperUpdate::SetVariable {
            name: name.to_string(),
            value: value.clone(),
        },
    )?;
    let mut vars = match read_value(dir, VARIABLES_FILE)? {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    vars.insert(name.to_string(), value);
    let path = dir.join(VARIABLES_FILE);
    let tmp = dir.join(format!("{VARIABLES_FILE}.{}.tmp", std::process::id()));
    let bytes = serde_json::to_vec(&vars).map_err(|source| HelperError::Json {
        path: path.clone(),
        source,
    })?;
    // Write then rename: a concurrent reader sees the old or the new file, never half of one.
    fs::write(&tmp, bytes)
        .and_then(|()| fs::rename(&tmp, &path))
        .map_err(|source| HelperError::Io { path, source })
}
