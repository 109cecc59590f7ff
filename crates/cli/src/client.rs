//! The CLI's client of the server: `cronium_client::Client` with the token, its errors worded
//! for a user (the server's message, which names the field at fault; what to check when the
//! server cannot be reached or refuses the token), and the live log followers (the shared SSE
//! reader, reconnecting and resuming after the last line seen).

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use cronium_client::{Error, Method, SseReader};
use cronium_model::JobStatus;
use serde_json::Value;

use crate::cli::ClientOpts;

pub struct Client {
    api: cronium_client::Client,
}

/// How often a follower tries to reconnect before it gives up.
const STREAM_TRIES: u32 = 10;

impl Client {
    pub fn new(opts: &ClientOpts) -> Result<Self> {
        let token = opts
            .token
            .clone()
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| anyhow!("no API token: pass --token or set CRONIUM_TOKEN (the server prints one on first start)"))?;
        let api = cronium_client::Client::builder(&opts.url)
            .token(token)
            .connect_timeout(Some(Duration::from_secs(5)))
            .build()?;
        Ok(Client { api })
    }

    pub async fn request(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        self.api
            .request(method, path, body)
            .await
            .map_err(|e| self.explain(e))
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        self.request(Method::GET, path, None).await
    }

    /// A client error in the user's words.
    fn explain(&self, e: Error) -> anyhow::Error {
        match e {
            Error::Unreachable { .. } => anyhow::Error::new(e).context(format!(
                "cannot reach the Cronium server at {} (is `cronium serve` running? see --url)",
                self.api.base()
            )),
            Error::Status {
                status: 401,
                message,
                ..
            } => anyhow!("the server refused the token ({message})"),
            Error::Status { message, .. } => anyhow!("{message}"),
            Error::Shape { ref path, .. } => {
                let context = format!("unexpected response from {}{path}", self.api.base());
                anyhow::Error::new(e).context(context)
            }
            e => anyhow::Error::new(e),
        }
    }

    /// Opens the event stream at `path`, resuming after `last_event_id`. `Ok(None)`: the server
    /// could not be reached, try again (up to [`STREAM_TRIES`] times in a row, with backoff);
    /// an answer that refuses the stream is an error.
    async fn open_stream(
        &self,
        path: &str,
        last_event_id: Option<&str>,
        failures: &mut u32,
    ) -> Result<Option<SseReader>> {
        match self.api.stream(path, last_event_id).await {
            Ok(sse) => {
                *failures = 0;
                Ok(Some(sse))
            }
            Err(e @ Error::Unreachable { .. }) => {
                *failures += 1;
                if *failures > STREAM_TRIES {
                    return Err(anyhow::Error::new(e).context("log stream lost"));
                }
                tokio::time::sleep(Duration::from_millis(200 * u64::from(*failures))).await;
                Ok(None)
            }
            Err(e) => Err(self.explain(e).context("log stream")),
        }
    }

    /// Streams a job's log to stdout/stderr until it ends; returns the final `end` event
    /// (`{"status", "exit_code"}`). Reconnects and resumes after the last line seen; an `error`
    /// event (the server could not read the log) is an error.
    pub async fn follow(&self, job_id: i64, mut after: i64) -> Result<Value> {
        let path = format!("/api/v1/jobs/{job_id}/logs/stream");
        let mut failures = 0;
        loop {
            let Some(mut sse) = self
                .open_stream(&path, Some(&after.to_string()), &mut failures)
                .await?
            else {
                continue;
            };
            // Until the connection ends (or breaks) before `end`: then resume from the last
            // line seen.
            while let Ok(Some(e)) = sse.next().await {
                match e.event.as_str() {
                    "line" => {
                        if let Ok(v) = serde_json::from_str::<Value>(&e.data) {
                            after = v["seq"].as_i64().unwrap_or(after);
                            print_line(&v);
                        }
                    }
                    "end" => return Ok(serde_json::from_str(&e.data).unwrap_or(Value::Null)),
                    // The server could not read the log: lines may be missing, so this is a
                    // failure, not an end.
                    "error" => bail!(
                        "the log stream of job {job_id} failed: {}",
                        error_message(&e.data)
                    ),
                    _ => {}
                }
            }
        }
    }

    /// Streams every node's log of a workflow run to stdout/stderr, each line prefixed with its
    /// node id, until the run ends; returns the `end` event (`{"status"}`). Reconnects and
    /// resumes from the last position seen; an `error` event is an error.
    pub async fn follow_run(&self, run_id: i64) -> Result<Value> {
        let path = format!("/api/v1/workflow-runs/{run_id}/logs");
        let mut position: Option<String> = None;
        let mut failures = 0;
        loop {
            let Some(mut sse) = self
                .open_stream(&path, position.as_deref(), &mut failures)
                .await?
            else {
                continue;
            };
            while let Ok(Some(e)) = sse.next().await {
                match e.event.as_str() {
                    "line" => {
                        if let Ok(v) = serde_json::from_str::<Value>(&e.data) {
                            print_node_line(&v);
                        }
                        if let Some(i) = e.id {
                            position = Some(i);
                        }
                    }
                    "end" => return Ok(serde_json::from_str(&e.data).unwrap_or(Value::Null)),
                    "error" => bail!(
                        "the log stream of workflow run {run_id} failed: {}",
                        error_message(&e.data)
                    ),
                    _ => {}
                }
            }
        }
    }
}

/// The `message` of an `error` event's data (`{"message"}`), else the data itself.
fn error_message(data: &str) -> String {
    serde_json::from_str::<Value>(data)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| data.to_string())
}

/// Prints one line of a workflow run's log, `[node] text` (`[node] [server] text` from a
/// server), to the stream it came from.
pub fn print_node_line(v: &Value) {
    let text = v["line"].as_str().unwrap_or_default();
    let node = v["node"].as_str().unwrap_or("?");
    let server = v["server"]
        .as_str()
        .map(|s| format!(" [{s}]"))
        .unwrap_or_default();
    match v["stream"].as_str() {
        Some("stderr") | Some("system") => eprintln!("[{node}]{server} {text}"),
        _ => println!("[{node}]{server} {text}"),
    }
}

/// Prints one log line (as the API returns it) to the stream it came from.
pub fn print_line(v: &Value) {
    let text = v["line"].as_str().unwrap_or_default();
    let prefix = v["server"]
        .as_str()
        .map(|s| format!("[{s}] "))
        .unwrap_or_default();
    match v["stream"].as_str() {
        Some("stderr") | Some("system") => eprintln!("{prefix}{text}"),
        _ => println!("{prefix}{text}"),
    }
}

/// The process exit code for a finished job: 0 on success, the script's code on failure, 124
/// on timeout.
pub fn exit_code_for(end: &Value) -> i32 {
    let status = end["status"]
        .as_str()
        .and_then(|s| s.parse::<JobStatus>().ok());
    match status {
        Some(JobStatus::Succeeded) => 0,
        Some(JobStatus::TimedOut) => 124,
        _ => end["exit_code"]
            .as_i64()
            .map(|c| c as i32)
            .filter(|c| *c != 0)
            .unwrap_or(1),
    }
}
