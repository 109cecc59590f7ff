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

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// Settings for [`HelperMode::Api`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    pub endpoint: String,
    pub token: String,
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
            }),
        ];
        for e in events {
            let line = e.to_line();
            assert_eq!(line.matches('\n').count(), 1, "{line}");
            assert_eq!(RunnerEvent::parse(&line).unwrap(), e);
        }
    }

    #[test]
    fn manifest_rejects_unknown_fields() {
        let json = r#"{"format":1,"interpreter":"bash","entrypoint":"s","timeout_ms":1,
            "event":{"id":1,"name":"x","version":1},"surprise":true}"#;
        let err = serde_json::from_str::<Manifest>(json).unwrap_err();
        assert!(err.to_string().contains("surprise"), "{err}");
    }
}
