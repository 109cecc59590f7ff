//! The HTTP client of the CLI: requests with the token, errors turned into the server's message
//! (which names the field at fault), and the live log follower (SSE with resume).

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use cronium_model::JobStatus;
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::cli::ClientOpts;

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    pub fn new(opts: &ClientOpts) -> Result<Self> {
        let token = opts
            .token
            .clone()
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| anyhow!("no API token: pass --token or set CRONIUM_TOKEN (the server prints one on first start)"))?;
        Ok(Client {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .build()?,
            base: opts.url.trim_end_matches('/').to_string(),
            token,
        })
    }

    pub async fn request(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let url = format!("{}{}", self.base, path);
        let mut rb = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let resp = rb.send().await.with_context(|| {
            format!(
                "cannot reach the Cronium server at {} (is `cronium serve` running? see --url)",
                self.base
            )
        })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if status == StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        if !status.is_success() {
            let msg = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| text.trim().to_string());
            if status == StatusCode::UNAUTHORIZED {
                bail!("the server refused the token ({msg})");
            }
            bail!("{msg}");
        }
        serde_json::from_str(&text).with_context(|| format!("unexpected response from {url}"))
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        self.request(Method::GET, path, None).await
    }

    /// Streams a job's log to stdout/stderr until it ends; returns the final `end` event
    /// (`{"status", "exit_code"}`). Reconnects and resumes after the last line seen; an `error`
    /// event (the server could not read the log) is an error.
    pub async fn follow(&self, job_id: i64, mut after: i64) -> Result<Value> {
        let url = format!("{}/api/v1/jobs/{job_id}/logs/stream", self.base);
        let mut failures = 0;
        loop {
            let resp = self
                .http
                .get(&url)
                .bearer_auth(&self.token)
                .header("Last-Event-ID", after.to_string())
                .send()
                .await;
            let resp = match resp {
                Ok(r) if r.status().is_success() => r,
                Ok(r) => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    bail!("log stream: {status}: {}", text.trim());
                }
                Err(e) => {
                    failures += 1;
                    if failures > 10 {
                        return Err(e).context("log stream lost");
                    }
                    tokio::time::sleep(Duration::from_millis(200 * failures)).await;
                    continue;
                }
            };
            failures = 0;
            let mut body = resp.bytes_stream();
            let mut buf: Vec<u8> = Vec::new();
            let (mut event, mut data) = (String::new(), String::new());
            while let Some(chunk) = body.next().await {
                let Ok(chunk) = chunk else { break };
                buf.extend_from_slice(&chunk);
                while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let raw: Vec<u8> = buf.drain(..=pos).collect();
                    let line = String::from_utf8_lossy(&raw);
                    let line = line.trim_end_matches(['\n', '\r']);
                    if line.is_empty() {
                        if event == "line" {
                            if let Ok(v) = serde_json::from_str::<Value>(&data) {
                                after = v["seq"].as_i64().unwrap_or(after);
                                print_line(&v);
                            }
                        } else if event == "end" {
                            return Ok(serde_json::from_str(&data).unwrap_or(Value::Null));
                        } else if event == "error" {
                            // The server could not read the log: lines may be missing, so this
                            // is a failure, not an end.
                            let v: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                            let message = v["message"].as_str().unwrap_or(data.as_str());
                            bail!("the log stream of job {job_id} failed: {message}");
                        }
                        event.clear();
                        data.clear();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        if !data.is_empty() {
                            data.push('\n');
                        }
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
            }
            // Connection ended before `end`: resume from the last line seen.
        }
    }
}

impl Client {
    /// Streams every node's log of a workflow run to stdout/stderr, each line prefixed with its
    /// node id, until the run ends; returns the `end` event (`{"status"}`). Reconnects and
    /// resumes from the last position seen; an `error` event is an error.
    pub async fn follow_run(&self, run_id: i64) -> Result<Value> {
        let url = format!("{}/api/v1/workflow-runs/{run_id}/logs", self.base);
        let mut position: Option<String> = None;
        let mut failures = 0;
        loop {
            let mut rb = self.http.get(&url).bearer_auth(&self.token);
            if let Some(p) = &position {
                rb = rb.header("Last-Event-ID", p.as_str());
            }
            let resp = match rb.send().await {
                Ok(r) if r.status().is_success() => r,
                Ok(r) => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    bail!("log stream: {status}: {}", text.trim());
                }
                Err(e) => {
                    failures += 1;
                    if failures > 10 {
                        return Err(e).context("log stream lost");
                    }
                    tokio::time::sleep(Duration::from_millis(200 * failures)).await;
                    continue;
                }
            };
            failures = 0;
            let mut body = resp.bytes_stream();
            let mut buf: Vec<u8> = Vec::new();
            let (mut event, mut data, mut id) = (String::new(), String::new(), None::<String>);
            while let Some(chunk) = body.next().await {
                let Ok(chunk) = chunk else { break };
                buf.extend_from_slice(&chunk);
                while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let raw: Vec<u8> = buf.drain(..=pos).collect();
                    let line = String::from_utf8_lossy(&raw);
                    let line = line.trim_end_matches(['\n', '\r']);
                    if line.is_empty() {
                        match event.as_str() {
                            "line" => {
                                if let Ok(v) = serde_json::from_str::<Value>(&data) {
                                    print_node_line(&v);
                                }
                                if let Some(i) = id.take() {
                                    position = Some(i);
                                }
                            }
                            "end" => return Ok(serde_json::from_str(&data).unwrap_or(Value::Null)),
                            "error" => {
                                let v: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                                let message = v["message"].as_str().unwrap_or(data.as_str());
                                bail!("the log stream of workflow run {run_id} failed: {message}");
                            }
                            _ => {}
                        }
                        event.clear();
                        data.clear();
                        id = None;
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        if !data.is_empty() {
                            data.push('\n');
                        }
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
            }
        }
    }
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
