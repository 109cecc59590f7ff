//! `cronium-runner helper OP [ARGS]`: the back end of the Bash helpers (`cronium.input`,
//! `cronium.output`, ...), run by the script inside a bundled-mode run.
//!
//! Bundled mode: reads the run's files in `$CRONIUM_HELPER_DIR` and appends updates to
//! `updates.jsonl` (the runner forwards them). API mode (`$CRONIUM_API_ENDPOINT` is
//! `unix:PATH`): one HTTP/1.1 request on the run's socket, so Bash needs no curl; when the
//! socket cannot be reached it appends a `fallback` update (the execution record says so) and
//! does the bundled operation instead. Values given on the command line are JSON when they parse
//! as JSON, strings otherwise; values printed are raw strings or compact JSON. With `--json`
//! before the operation (what the Node helpers use), arguments must be JSON and the result is
//! printed as JSON (`null` when absent).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use cronium_protocol::{HelperUpdate, RUNTIME_PREFIX};
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
    #[error("argument `{0}` is not JSON (--json)")]
    NotJson(String),
    #[error("the runtime API answered {status}: {message}")]
    Api { status: u16, message: String },
    #[error("{path} is not valid JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Runs one helper operation; returns the process exit code (errors are printed to stderr).
pub fn main(op: &str, args: &[String]) -> i32 {
    let (json_mode, op, args) = match (op, args) {
        ("--json", [op, rest @ ..]) => (true, op.as_str(), rest),
        _ => (false, op, args),
    };
    let result = match api_endpoint() {
        Some(Ok((socket, token))) => match api_call(op, args, json_mode, &socket, &token) {
            Err(ApiFailure::Unreachable(reason)) => {
                fall_back(&reason);
                run(op, args, json_mode)
            }
            Err(ApiFailure::Helper(e)) => Err(e),
            Ok(v) => Ok(v),
        },
        Some(Err(reason)) => {
            fall_back(&reason);
            run(op, args, json_mode)
        }
        None => run(op, args, json_mode),
    };
    match result {
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

/// The socket and token of API mode; `None` in bundled mode; an error (the reason to fall
/// back) when API mode was asked for but no usable endpoint is set.
fn api_endpoint() -> Option<Result<(PathBuf, String), String>> {
    let endpoint = std::env::var("CRONIUM_API_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty());
    let asked = std::env::var("CRONIUM_HELPERS").is_ok_and(|m| m == "api");
    let Some(endpoint) = endpoint else {
        return asked.then(|| Err("CRONIUM_API_ENDPOINT is not set".to_string()));
    };
    let Some(path) = endpoint.strip_prefix("unix:") else {
        return Some(Err(format!(
            "CRONIUM_API_ENDPOINT `{endpoint}` is not unix:PATH (the Bash helpers speak to the run's socket)"
        )));
    };
    let Ok(token) = std::env::var("CRONIUM_API_TOKEN") else {
        return Some(Err("CRONIUM_API_TOKEN is not set".to_string()));
    };
    Some(Ok((PathBuf::from(path), token)))
}

/// Records in the updates file that this helper call used bundled mode.
fn fall_back(reason: &str) {
    diag!("cronium: the runtime API is unreachable ({reason}); using bundled mode");
    if let Some(dir) = std::env::var_os(HELPER_DIR_ENV) {
        let _ = append(
            Path::new(&dir),
            &HelperUpdate::Fallback {
                reason: reason.to_string(),
            },
        );
    }
}

enum ApiFailure {
    /// The socket could not be reached: fall back to bundled mode.
    Unreachable(String),
    /// The call was made and refused, or the arguments are wrong.
    Helper(HelperError),
}

impl From<HelperError> for ApiFailure {
    fn from(e: HelperError) -> Self {
        ApiFailure::Helper(e)
    }
}

/// One operation over the runtime API.
fn api_call(
    op: &str,
    args: &[String],
    json_mode: bool,
    socket: &Path,
    token: &str,
) -> Result<Option<String>, ApiFailure> {
    let arg = |a: &String| value_arg(a, json_mode);
    let enc = |s: &str| percent_encode(s);
    // (method, path after the prefix, body, field of the result to print)
    let (method, path, body, field): (&str, String, Option<Value>, Option<&String>) =
        match (normalise(op), args) {
            ("input", []) => ("GET", "input".into(), None, None),
            ("input", [key]) => ("GET", "input".into(), None, Some(key)),
            ("input", _) => return Err(HelperError::Usage("cronium.input [KEY]").into()),
            ("output", [value]) => ("PUT", "output".into(), Some(arg(value)?), None),
            ("output", [key, value]) => (
                "PUT",
                format!("output/{}", enc(key)),
                Some(arg(value)?),
                None,
            ),
            ("output", _) => {
                return Err(
                    HelperError::Usage("cronium.output JSON | cronium.output KEY VALUE").into(),
                )
            }
            ("getVariable", [name]) => ("GET", format!("variables/{}", enc(name)), None, None),
            ("getVariable", _) => return Err(HelperError::Usage("cronium.getVariable NAME").into()),
            ("setVariable", [name, value]) if !name.is_empty() => (
                "PUT",
                format!("variables/{}", enc(name)),
                Some(arg(value)?),
                None,
            ),
            ("setVariable", _) => {
                return Err(HelperError::Usage("cronium.setVariable NAME VALUE").into())
            }
            ("event", []) => ("GET", "event".into(), None, None),
            ("event", [f]) => ("GET", "event".into(), None, Some(f)),
            ("event", _) => return Err(HelperError::Usage("cronium.event [FIELD]").into()),
            ("setCondition", [value]) => {
                let v = match value.trim() {
                    "true" => true,
                    "false" => false,
                    other => return Err(HelperError::NotBool(other.to_string()).into()),
                };
                ("PUT", "condition".into(), Some(Value::Bool(v)), None)
            }
            ("setCondition", _) => {
                return Err(HelperError::Usage("cronium.setCondition true|false").into())
            }
            _ => return Err(HelperError::UnknownOp(op.to_string()).into()),
        };
    let body = body.map(|v| serde_json::json!({ "value": v }).to_string());
    let (status, answer) = http_request(socket, token, method, &path, body.as_deref())
        .map_err(|e| ApiFailure::Unreachable(format!("{}: {e}", socket.display())))?;
    if status != 200 {
        let message = answer
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("no message")
            .to_string();
        return Err(HelperError::Api { status, message }.into());
    }
    if method == "PUT" {
        return Ok(None);
    }
    let value = answer.get("value").cloned().unwrap_or(Value::Null);
    let value = match field {
        Some(f) => value.get(f.as_str()).cloned(),
        None => Some(value),
    };
    Ok(present(value, json_mode))
}

/// A command-line value: strict JSON with `--json`, else [`parse`].
fn value_arg(arg: &str, json_mode: bool) -> Result<Value, HelperError> {
    match json_mode {
        true => serde_json::from_str(arg).map_err(|_| HelperError::NotJson(arg.to_string())),
        false => Ok(parse(arg)),
    }
}

/// What a read prints: with `--json` always a JSON line (`null` when absent); otherwise
/// [`show`], and nothing when absent.
fn present(value: Option<Value>, json_mode: bool) -> Option<String> {
    match (json_mode, value) {
        (true, v) => Some(format!("{}\n", v.unwrap_or(Value::Null))),
        (false, Some(Value::Null)) | (false, None) => None,
        (false, Some(v)) => Some(show(&v)),
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One request on the socket (`Connection: close`); the status and the JSON body.
fn http_request(
    socket: &Path,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> io::Result<(u16, Value)> {
    use std::io::{BufRead, BufReader, Read};
    let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {RUNTIME_PREFIX}{path} HTTP/1.1\r\nHost: cronium\r\nAuthorization: Bearer {token}\r\n\
         Connection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("not an HTTP answer: {line:?}")))?;
    let mut length = None;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse::<u64>().ok();
            }
        }
    }
    let mut bytes = Vec::new();
    match length {
        Some(n) => reader.take(n).read_to_end(&mut bytes)?,
        None => reader.read_to_end(&mut bytes)?,
    };
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok((status, value))
}

fn run(op: &str, args: &[String], json_mode: bool) -> Result<Option<String>, HelperError> {
    let dir = PathBuf::from(std::env::var_os(HELPER_DIR_ENV).ok_or(HelperError::NoDir)?);
    if json_mode {
        return run_json(&dir, op, args);
    }
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

/// Bundled mode with `--json`: strict JSON in and out.
fn run_json(dir: &Path, op: &str, args: &[String]) -> Result<Option<String>, HelperError> {
    let arg = |a: &String| value_arg(a, true);
    let read = |name, key: Option<&String>| -> Result<Option<String>, HelperError> {
        let v = read_value(dir, name)?;
        let v = match key {
            Some(k) => v.get(k.as_str()).cloned(),
            None => Some(v),
        };
        Ok(present(v, true))
    };
    match (normalise(op), args) {
        ("input", []) => read(INPUT_FILE, None),
        ("input", [key]) => read(INPUT_FILE, Some(key)),
        ("event", []) => read(EVENT_FILE, None),
        ("event", [key]) => read(EVENT_FILE, Some(key)),
        ("getVariable", [name]) => read(VARIABLES_FILE, Some(name)),
        ("output", [value]) => {
            append(dir, &HelperUpdate::Output { value: arg(value)? })?;
            Ok(None)
        }
        ("output", [key, value]) => {
            append(
                dir,
                &HelperUpdate::OutputKey {
                    key: key.clone(),
                    value: arg(value)?,
                },
            )?;
            Ok(None)
        }
        ("setVariable", [name, value]) if !name.is_empty() => {
            set_variable(dir, name, arg(value)?)?;
            Ok(None)
        }
        ("setCondition", [value]) => match arg(value)? {
            Value::Bool(value) => {
                append(dir, &HelperUpdate::SetCondition { value })?;
                Ok(None)
            }
            other => Err(HelperError::NotBool(other.to_string())),
        },
        (op, _) => run(op, args, false),
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
