//! The wire contract between the server side (agent and transports) and `cronium-runner`.
//!
//! Three things cross that boundary:
//! - the **manifest** (`manifest.yaml` inside a payload archive): what to run and how, derived from
//!   one event version only, so that the archive is content-addressed and cacheable;
//! - the **run context**: everything specific to one execution (job id, attempt, input, variables
//!   snapshot, helper mode). It is never written into the cached archive; the runner reads it as the
//!   first line of its stdin (`--control-stdin`) or from a file (`--context FILE`);
//! - the **event stream**: JSON lines the runner writes to its stdout (logs, outputs, variable
//!   writes, condition, final result).
//!
//! This crate is deliberately tiny (serde only) because the runner must stay a small static binary.
//! It holds no I/O.

mod health;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use health::{Disk, Health};

/// Version of the manifest format; the runner refuses manifests newer than it knows.
pub const MANIFEST_FORMAT: u32 = 1;
/// Name of the manifest inside a payload archive.
pub const MANIFEST_NAME: &str = "manifest.yaml";
/// Exit code reported for a run that hit its timeout (as coreutils `timeout`).
pub const EXIT_TIMEOUT: i32 = 124;
/// Exit code reported for a cancelled run (as a shell does for SIGTERM).
pub const EXIT_CANCELLED: i32 = 143;
/// Default grace between SIGTERM and SIGKILL.
pub const DEFAULT_KILL_GRACE_MS: u64 = 5_000;
/// Default cap on the log bytes kept for one execution.
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 10 * 1024 * 1024;
/// Longest script line the runner sends as one [`RunnerEvent::Log`]: a longer line arrives as
/// several events of this size (less up to 3 bytes, so as not to split a character), which the
/// agent knows when it masks secrets across the cut.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// The interpreter a script runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interpreter {
    Bash,
    Python,
    Node,
}

impl Interpreter {
    pub fn as_str(self) -> &'static str {
        match self {
            Interpreter::Bash => "bash",
            Interpreter::Python => "python",
            Interpreter::Node => "node",
        }
    }

    /// Conventional file extension of a script in this language.
    pub fn extension(self) -> &'static str {
        match self {
            Interpreter::Bash => "sh",
            Interpreter::Python => "py",
            Interpreter::Node => "js",
        }
    }

    /// Program names searched on `PATH`, in order, when the run context names no binary.
    pub fn candidates(self) -> &'static [&'static str] {
        match self {
            Interpreter::Bash => &["bash"],
            Interpreter::Python => &["python3", "python"],
            Interpreter::Node => &["node", "nodejs"],
        }
    }
}

/// `manifest.yaml`: what one event version runs. Identical for every run of that version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Format version, [`MANIFEST_FORMAT`].
    pub format: u32,
    pub interpreter: Interpreter,
    /// Path of the script inside the archive, relative, no `..`.
    pub entrypoint: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub timeout_ms: u64,
    #[serde(default = "default_kill_grace_ms")]
    pub kill_grace_ms: u64,
    #[serde(default = "default_max_output_bytes")]
    pub max_output_bytes: u64,
    pub event: EventMeta,
}

fn default_kill_grace_ms() -> u64 {
    DEFAULT_KILL_GRACE_MS
}

fn default_max_output_bytes() -> u64 {
    DEFAULT_MAX_OUTPUT_BYTES
}

/// Identity of the event a payload was built from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventMeta {
    pub id: i64,
    pub name: String,
    pub version: i64,
}

/// How runtime helpers reach their data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HelperMode {
    /// Files in the working directory, read back by the runner (works offline).
    #[default]
    Bundled,
    /// Live calls to the server's runtime API.
    Api,
}

impl HelperMode {
    pub fn as_str(self) -> &'static str {
        match self {
            HelperMode::Bundled => "bundled",
            HelperMode::Api => "api",
        }
    }
}

impl std::str::FromStr for HelperMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "bundled" => Ok(HelperMode::Bundled),
            "api" => Ok(HelperMode::Api),
            other => Err(format!(
                "unknown helpers mode `{other}` (expected bundled or api)"
            )),
        }
    }
}

/// Settings for [`HelperMode::Api`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    /// Where the runner offers the endpoint: [`API_RELAY`] (a Unix socket in the run's private
    /// directory whose calls it relays on its event stream) is the only value runners know.
    pub endpoint: String,
    /// The execution's runtime token; the runner refuses calls without it.
    pub token: String,
}

/// [`ApiSettings::endpoint`]: the runner serves the runtime API on a Unix socket in the run's
/// private directory and relays each call as [`RunnerEvent::ApiCall`].
pub const API_RELAY: &str = "relay";
/// Path prefix of the runtime API, on the runner's socket and on the server.
pub const RUNTIME_PREFIX: &str = "/api/v1/runtime/";

/// One runtime API call, relayed by the runner to the agent (or made over HTTP to the server).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ApiCall {
    Input,
    Event,
    GetOutput,
    /// Replace the whole output.
    Output {
        value: Value,
    },
    /// Set one key of the output object.
    OutputKey {
        key: String,
        value: Value,
    },
    GetVariable {
        name: String,
    },
    SetVariable {
        name: String,
        value: Value,
    },
    SetCondition {
        value: bool,
    },
}

impl ApiCall {
    /// The call a request to the runtime API stands for: `path` is what follows
    /// [`RUNTIME_PREFIX`] (percent-decoded segments), `body` the parsed JSON body of a `PUT`
    /// (`{"value": ...}`). The error names what is wrong, for a 404/405/422 answer.
    pub fn from_request(
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<ApiCall, ApiRouteError> {
        let segments: Vec<&str> = path.split('/').collect();
        let value = || -> Result<Value, ApiRouteError> {
            match body {
                Some(Value::Object(map)) => map.get("value").cloned().ok_or_else(|| {
                    ApiRouteError::Body("value: missing (the body is {\"value\": ...})".into())
                }),
                Some(_) => Err(ApiRouteError::Body(
                    "expected a JSON object {\"value\": ...}".into(),
                )),
                None => Err(ApiRouteError::Body(
                    "a JSON body {\"value\": ...} is required".into(),
                )),
            }
        };
        let call = match (method, segments.as_slice()) {
            ("GET", ["input"]) => ApiCall::Input,
            ("GET", ["event"]) => ApiCall::Event,
            ("GET", ["output"]) => ApiCall::GetOutput,
            ("PUT", ["output"]) => ApiCall::Output { value: value()? },
            ("PUT", ["output", key]) if !key.is_empty() => ApiCall::OutputKey {
                key: key.to_string(),
                value: value()?,
            },
            ("GET", ["variables", name]) if !name.is_empty() => ApiCall::GetVariable {
                name: name.to_string(),
            },
            ("PUT", ["variables", name]) if !name.is_empty() => ApiCall::SetVariable {
                name: name.to_string(),
                value: value()?,
            },
            ("PUT", ["condition"]) => match value()? {
                Value::Bool(b) => ApiCall::SetCondition { value: b },
                other => {
                    return Err(ApiRouteError::Body(format!(
                        "value: expected true or false, got {other}"
                    )))
                }
            },
            (
                _,
                ["input"]
                | ["event"]
                | ["output"]
                | ["output", _]
                | ["variables", _]
                | ["condition"],
            ) => return Err(ApiRouteError::Method(method.to_string())),
            _ => return Err(ApiRouteError::NotFound(path.to_string())),
        };
        Ok(call)
    }
}

/// The body of a runtime API error, in the server's one error shape:
/// `{"error": {"code": ..., "message": ...}}`.
pub fn api_error(status: u16, message: &str) -> Value {
    let code = match status {
        401 => "unauthorized",
        404 => "not_found",
        409 => "conflict",
        413 => "too_large",
        400 | 405 | 422 => "invalid",
        _ => "internal",
    };
    serde_json::json!({ "error": { "code": code, "message": message } })
}

/// Why a request is not a runtime API call.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiRouteError {
    NotFound(String),
    Method(String),
    Body(String),
}

impl ApiRouteError {
    /// HTTP status and message.
    pub fn status(&self) -> (u16, String) {
        match self {
            ApiRouteError::NotFound(p) => (404, format!("no runtime API operation at `{p}`")),
            ApiRouteError::Method(m) => (405, format!("method {m} is not allowed here")),
            ApiRouteError::Body(m) => (422, m.clone()),
        }
    }
}

/// Everything specific to one execution. Sent to the runner, never stored in the payload archive.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunContext {
    pub job_id: i64,
    pub execution_id: i64,
    pub attempt: u32,
    /// What started the job: `schedule`, `manual`, `api`, `workflow`, `retry`, ...
    pub trigger: String,
    /// Server name for SSH runs, `None` for local and container runs.
    #[serde(default)]
    pub server: Option<String>,
    #[serde(default)]
    pub input: Value,
    /// Snapshot of the variables visible to the script (secret ones decrypted).
    #[serde(default)]
    pub variables: BTreeMap<String, Value>,
    #[serde(default)]
    pub helper_mode: HelperMode,
    #[serde(default)]
    pub api: Option<ApiSettings>,
    /// Interpreter binaries already resolved by the caller (`python` -> `/usr/bin/python3.11`),
    /// so that no slow shim is run on every execution. Missing entries are looked up on `PATH`.
    #[serde(default)]
    pub interpreters: BTreeMap<Interpreter, String>,
    /// Extra environment for this run only (overrides the manifest's).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// Which stream a log line came from. `System` lines are written by the runner or the agent
/// (truncation marker, deployment progress, errors), not by the script.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
    System,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::System => "system",
        }
    }
}

/// Terminal status of one run as the runner saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::TimedOut => "timed_out",
            RunStatus::Cancelled => "cancelled",
        }
    }
}

/// The final record of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finished {
    pub status: RunStatus,
    /// The script's exit code; [`EXIT_TIMEOUT`] on timeout; `None` when it never started.
    pub exit_code: Option<i32>,
    /// Signal that ended the script's process, if any.
    #[serde(default)]
    pub signal: Option<i32>,
    /// Time from the interpreter's start to its end.
    pub run_ms: u64,
    /// A message when the runner itself failed (bad payload, interpreter missing, ...).
    #[serde(default)]
    pub error: Option<String>,
    /// What the script's process tree used, when it was measured (older runners, runs that
    /// never started and `direct-ssh` have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// Resources one run used, as the runner measured them once every process of the script was
/// reaped.
///
/// The CPU times and `max_rss_bytes` are `getrusage(RUSAGE_CHILDREN)` of the runner, a child
/// subreaper: they cover the script's main process and every descendant that was reaped, orphans
/// re-parented to the runner included. `max_rss_bytes` is the resident set of the *largest
/// single process* of the tree at its peak, not the sum of the tree. The `cgroup_*` figures are
/// the whole container's (every process in it, the runner and page cache charged to it
/// included), read from its cgroup when the runner runs in a container (`--cgroup-usage`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// CPU time in user mode, milliseconds.
    pub cpu_user_ms: u64,
    /// CPU time in kernel mode, milliseconds.
    pub cpu_system_ms: u64,
    /// Peak resident set of the largest single process of the tree, bytes.
    pub max_rss_bytes: u64,
    /// CPU time of the whole container's cgroup (user and system), milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_cpu_ms: Option<u64>,
    /// Peak memory of the whole container's cgroup, bytes (cgroup v2 `memory.peak`, v1
    /// `memory.max_usage_in_bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_memory_peak_bytes: Option<u64>,
}

/// One line of the runner's stdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum RunnerEvent {
    /// The interpreter has been started.
    Started {
        runner_version: String,
        pid: u32,
        /// Time spent unpacking and preparing before the interpreter started.
        setup_ms: u64,
    },
    /// One line of output. `seq` starts at 1 and increases by one per line within a run.
    Log {
        seq: u64,
        stream: Stream,
        line: String,
        ts_ms: i64,
    },
    /// The script's whole output object after an update.
    Output { value: Value },
    /// The script wrote a variable.
    Variable { name: String, value: Value },
    /// The script set the workflow condition.
    Condition { value: bool },
    /// The output cap was reached; later lines were dropped (the marker is also sent as a log line).
    Truncated { kept_bytes: u64, limit_bytes: u64 },
    /// A runtime API call the script made on the runner's socket (API mode), to be answered
    /// with [`Control::ApiReply`] of the same `id` on the runner's stdin.
    ApiCall { id: u64, call: ApiCall },
    /// The helpers could not reach the runtime API and used bundled mode instead.
    HelperFallback { reason: String },
    /// The run is over; always the last event.
    Finished(Finished),
}

impl RunnerEvent {
    /// Encodes the event as one JSON line, newline included.
    pub fn to_line(&self) -> String {
        // Serialising these plain types cannot fail.
        let mut s = serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"));
        s.push('\n');
        s
    }

    /// Parses one line of the runner's stdout.
    pub fn parse(line: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(line.trim_end())
    }
}

/// A message the controller writes to the runner's stdin after the context line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Control {
    /// Stop the script: SIGTERM to its process group, SIGKILL after the grace period.
    Cancel,
    /// The answer to [`RunnerEvent::ApiCall`] `id`: an HTTP status and its JSON body
    /// (`{"value": ...}` on success, `{"error": ...}` otherwise).
    ApiReply { id: u64, status: u16, body: Value },
}

/// One line of `.cronium/updates.jsonl`, written by the helpers in bundled mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum HelperUpdate {
    /// Replace the whole output.
    Output {
        value: Value,
    },
    /// Set one key of the output object.
    OutputKey {
        key: String,
        value: Value,
    },
    SetVariable {
        name: String,
        value: Value,
    },
    SetCondition {
        value: bool,
    },
    /// API mode could not reach the endpoint; this and later updates are bundled ones.
    Fallback {
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_as_single_lines() {
        let events = [
            RunnerEvent::Log {
                seq: 1,
                stream: Stream::Stderr,
                line: "a \"quoted\"\nline".into(),
                ts_ms: 5,
            },
            RunnerEvent::Finished(Finished {
                status: RunStatus::TimedOut,
                exit_code: Some(EXIT_TIMEOUT),
                signal: Some(15),
                run_ms: 10,
                error: None,
                usage: None,
            }),
            RunnerEvent::Finished(Finished {
                status: RunStatus::Succeeded,
                exit_code: Some(0),
                signal: None,
                run_ms: 10,
                error: None,
                usage: Some(Usage {
                    cpu_user_ms: 200,
                    cpu_system_ms: 3,
                    max_rss_bytes: 50 << 20,
                    cgroup_cpu_ms: Some(210),
                    cgroup_memory_peak_bytes: None,
                }),
            }),
        ];
        for e in events {
            let line = e.to_line();
            assert_eq!(line.matches('\n').count(), 1, "{line}");
            assert_eq!(RunnerEvent::parse(&line).unwrap(), e);
        }
    }

    #[test]
    fn finished_of_an_older_runner_reads_without_usage() {
        // A runner from before resource usage existed: no `usage` key at all.
        let line = r#"{"t":"finished","status":"succeeded","exit_code":0,"run_ms":4}"#;
        let RunnerEvent::Finished(f) = RunnerEvent::parse(line).unwrap() else {
            panic!("not a Finished: {line}");
        };
        assert_eq!(f.usage, None);
        // And a run without usage writes no key, so older agents read it unchanged.
        assert!(!RunnerEvent::Finished(f).to_line().contains("usage"));
        let with = r#"{"t":"finished","status":"failed","exit_code":1,"run_ms":4,
            "usage":{"cpu_user_ms":1,"cpu_system_ms":2,"max_rss_bytes":3}}"#;
        let RunnerEvent::Finished(f) = RunnerEvent::parse(with).unwrap() else {
            panic!("not a Finished: {with}");
        };
        let u = f.usage.unwrap();
        assert_eq!((u.cpu_user_ms, u.cpu_system_ms, u.max_rss_bytes), (1, 2, 3));
        assert_eq!((u.cgroup_cpu_ms, u.cgroup_memory_peak_bytes), (None, None));
    }

    #[test]
    fn runtime_routes_map_to_calls() {
        let v = serde_json::json!({"value": 3});
        assert_eq!(
            ApiCall::from_request("GET", "variables/n", None),
            Ok(ApiCall::GetVariable { name: "n".into() })
        );
        assert_eq!(
            ApiCall::from_request("PUT", "output/k", Some(&v)),
            Ok(ApiCall::OutputKey {
                key: "k".into(),
                value: serde_json::json!(3)
            })
        );
        assert_eq!(
            ApiCall::from_request("DELETE", "output", None)
                .unwrap_err()
                .status()
                .0,
            405
        );
        assert_eq!(
            ApiCall::from_request("GET", "nope", None)
                .unwrap_err()
                .status()
                .0,
            404
        );
        let e = ApiCall::from_request("PUT", "condition", Some(&v)).unwrap_err();
        assert_eq!(e.status().0, 422);
        assert!(e.status().1.contains("true or false"));
        assert_eq!(
            ApiCall::from_request("PUT", "output", None)
                .unwrap_err()
                .status()
                .0,
            422
        );
    }

    #[test]
    fn manifest_rejects_unknown_fields() {
        let json = r#"{"format":1,"interpreter":"bash","entrypoint":"s","timeout_ms":1,
            "event":{"id":1,"name":"x","version":1},"surprise":true}"#;
        let err = serde_json::from_str::<Manifest>(json).unwrap_err();
        assert!(err.to_string().contains("surprise"), "{err}");
    }
}
