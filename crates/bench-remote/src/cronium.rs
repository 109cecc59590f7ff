//! The Cronium side of the benchmark: a real `cronium serve` release process (started, stopped,
//! restarted on the same data directory for cold runs) and the few API calls the benchmark makes:
//! register a server, put an event, run it and time it from the POST to the job being final.
//!
//! Not a client library: only what the benchmark needs, with errors naming the call that failed
//! and what the server answered.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cronium_client::{Client, Method};
use serde_json::{json, Value};

use crate::procs;

/// The admin token given to every server this benchmark starts (>= 16 characters).
pub const TOKEN: &str = "crn_bench_remote_0123456789abcdef";

/// Polling interval when waiting by polling: short enough to add little to a 100 ms target,
/// long enough that the GETs (a 50-execution job each) do not steal much of the 2 cores from the
/// agent being measured.
pub const POLL_INTERVAL: Duration = Duration::from_millis(5);

#[derive(Debug, thiserror::Error)]
pub enum CroniumError {
    #[error("cannot start {bin}: {source}")]
    Spawn { bin: String, source: std::io::Error },
    #[error("the server did not print `Cronium listening on` within 60 s; its log is {log}")]
    NoBanner { log: String },
    #[error(transparent)]
    Api(#[from] cronium_client::Error),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("job {id} did not end within {secs} s (last status `{status}`)")]
    Timeout { id: i64, secs: u64, status: String },
    #[error("unexpected answer to {what}: {body}")]
    Shape { what: String, body: String },
    #[error("job {id} ended `{status}`, not `succeeded` (a failed run is not a benchmark sample): {detail}")]
    NotSucceeded {
        id: i64,
        status: String,
        detail: String,
    },
    #[error("job {id} ran {got} executions, expected {want}")]
    Executions { id: i64, got: usize, want: usize },
}

/// How to start a server: binaries and flags that stay the same across restarts.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub cronium: PathBuf,
    pub runner: PathBuf,
    pub static_runner: PathBuf,
    /// Data directory, kept across restarts (servers, events and pinned host keys survive).
    pub data_dir: PathBuf,
    /// Deploy directory on the hosts, relative to the login's home.
    pub deploy_dir: String,
    /// `serve --fanout-concurrency`; `None` measures the server's default.
    pub fanout_concurrency: Option<usize>,
    /// More `cronium serve` flags (e.g. `--health-interval 2s`).
    pub extra_args: Vec<String>,
    /// Wait for a job by polling GET /jobs/{id} every 5 ms instead of following its live log
    /// stream (to tell the stream's own latency from the job's).
    pub poll: bool,
}

/// A running `cronium serve`.
pub struct Server {
    child: Option<Child>,
    pub url: String,
    api: Client,
    poll: bool,
}

/// One timed run.
#[derive(Debug, Clone)]
pub struct Sample {
    /// From the POST that enqueued the job to the job being final, seen by the client.
    pub wall: Duration,
    /// The job's own `duration_ms` (started to finished, server side).
    pub job_ms: Option<i64>,
    /// Largest `setup_ms` over the job's executions (connection, deployment, payload upload).
    pub setup_ms_max: Option<i64>,
    /// Largest `run_ms` over the job's executions (the runner or the command running).
    pub run_ms_max: Option<i64>,
    /// From the job's creation to an agent starting it (`started_at - created_at`): the queue.
    pub queue_ms: Option<i64>,
    /// From the job's creation to it being final, server clock (`finished_at - created_at`);
    /// `wall` minus this is the API and live-stream path.
    pub server_ms: Option<i64>,
    /// How long the POST that enqueued the job took to answer.
    pub post: Duration,
    /// From the job starting to its first execution starting (claim, server resolution).
    pub first_start_ms: Option<i64>,
    /// From the first execution starting to the last one starting: how long the fan-out takes
    /// just to get every server going (sequential work per server shows up here).
    pub start_spread_ms: Option<i64>,
    /// From the last execution finishing to the job being final (collecting results, writes).
    pub tail_ms: Option<i64>,
}

fn ts(v: &Value, field: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::parse_from_rfc3339(v[field].as_str()?).ok()
}

/// Milliseconds between two RFC 3339 timestamps of a job.
fn between(job: &Value, from: &str, to: &str) -> Option<i64> {
    Some((ts(job, to)? - ts(job, from)?).num_milliseconds())
}

/// (first start - job start, last start - first start, job end - last execution end), in ms.
fn execution_spread(job: &Value, xs: &[Value]) -> (Option<i64>, Option<i64>, Option<i64>) {
    let starts: Vec<_> = xs.iter().filter_map(|x| ts(x, "started_at")).collect();
    let ends: Vec<_> = xs.iter().filter_map(|x| ts(x, "finished_at")).collect();
    let (first, last) = (starts.iter().min(), starts.iter().max());
    let first_start = first
        .zip(ts(job, "started_at"))
        .map(|(f, j)| (*f - j).num_milliseconds());
    let spread = first.zip(last).map(|(f, l)| (*l - *f).num_milliseconds());
    let tail = ends
        .iter()
        .max()
        .zip(ts(job, "finished_at"))
        .map(|(e, j)| (j - *e).num_milliseconds());
    (first_start, spread, tail)
}

impl Server {
    pub fn start(spec: &ServerSpec) -> Result<Server, CroniumError> {
        std::fs::create_dir_all(&spec.data_dir).map_err(|source| CroniumError::Io {
            what: format!("create {}", spec.data_dir.display()),
            source,
        })?;
        let log_path = spec.data_dir.join("server.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|source| CroniumError::Io {
                what: format!("open {}", log_path.display()),
                source,
            })?;
        let mut cmd = Command::new(&spec.cronium);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&spec.data_dir)
            .arg("--runner")
            .arg(&spec.runner)
            .arg("--static-runner")
            .arg(&spec.static_runner)
            .arg("--ssh-deploy-dir")
            .arg(&spec.deploy_dir);
        if let Some(c) = spec.fanout_concurrency {
            cmd.arg("--fanout-concurrency").arg(c.to_string());
        }
        let mut child = cmd
            .args(&spec.extra_args)
            .env("CRONIUM_ADMIN_TOKEN", TOKEN)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|source| CroniumError::Spawn {
                bin: spec.cronium.display().to_string(),
                source,
            })?;
        procs::register(child.id());
        let no_banner = || CroniumError::NoBanner {
            log: log_path.display().to_string(),
        };
        let Some(stdout) = child.stdout.take() else {
            procs::kill_tree(child.id());
            return Err(no_banner());
        };
        let (tx, rx) = std::sync::mpsc::channel();
        // Drains stdout for the server's whole life so that it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("Cronium listening on ") {
                        break rest
                            .split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_string();
                    }
                }
                Err(_) => {
                    stop_child(child);
                    return Err(no_banner());
                }
            }
        };
        let api = match client(&url) {
            Ok(api) => api,
            Err(e) => {
                stop_child(child);
                return Err(e.into());
            }
        };
        Ok(Server {
            child: Some(child),
            url,
            api,
            poll: spec.poll,
        })
    }

    /// The server process's id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// CPU the server process (HTTP, agent, SSH client, SQLite) has used so far, in ms.
    pub fn cpu_ms(&self) -> Option<f64> {
        procs::cpu_ms(self.pid()?, false)
    }

    /// Stops the server: SIGTERM, then SIGKILL after 10 s; children (sessions) go with it.
    pub fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            stop_child(c);
        }
    }

    pub async fn api(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CroniumError> {
        Ok(self.api.request(method, path, body).await?)
    }

    /// The value of one series of `/metrics` (e.g. `cronium_ssh_health_checks_total`); `None`
    /// when the server does not export it.
    pub async fn metric(&self, series: &str) -> Result<Option<f64>, CroniumError> {
        let text = self.api.text("/metrics").await?;
        Ok(metric_value(&text, series))
    }

    /// Registers an SSH server (host key pinned on first use by Cronium itself).
    pub async fn add_server(
        &self,
        name: &str,
        port: u16,
        user: &str,
        pem: &str,
        tags: &[String],
    ) -> Result<(), CroniumError> {
        let body = json!({
            "name": name, "host": "127.0.0.1", "port": port, "user": user,
            "private_key": pem, "tags": tags,
        });
        self.api(Method::POST, "/api/v1/servers", Some(&body))
            .await?;
        Ok(())
    }

    /// Creates or replaces an event from its JSON spec.
    pub async fn put_event(&self, spec: &Value) -> Result<(), CroniumError> {
        let name = spec["name"].as_str().unwrap_or_default();
        self.api(Method::PUT, &format!("/api/v1/events/{name}"), Some(spec))
            .await?;
        Ok(())
    }

    /// Runs `event` once and times it from the POST to the job being final. The end is seen on
    /// the live log stream (`event: end`), which the server pushes as soon as the job is final;
    /// a stream that closes early falls back to polling. The job must succeed with `executions`
    /// executions, or the sample is refused.
    pub async fn run_timed(&self, event: &str, executions: usize) -> Result<Sample, CroniumError> {
        let t0 = Instant::now();
        let created = self
            .api(
                Method::POST,
                &format!("/api/v1/events/{event}/run"),
                Some(&json!({})),
            )
            .await?;
        let post = t0.elapsed();
        let id = created["id"].as_i64().ok_or_else(|| CroniumError::Shape {
            what: "POST run".into(),
            body: created.to_string(),
        })?;
        if self.poll || !self.follow_to_end(id).await? {
            self.poll_final(id, Duration::from_secs(120)).await?;
        }
        let wall = t0.elapsed();
        let job = self
            .api(Method::GET, &format!("/api/v1/jobs/{id}"), None)
            .await?;
        let status = job["status"].as_str().unwrap_or_default();
        if status != "succeeded" {
            return Err(CroniumError::NotSucceeded {
                id,
                status: status.into(),
                detail: job["error"].to_string(),
            });
        }
        let xs = job["executions"].as_array().cloned().unwrap_or_default();
        if xs.len() != executions {
            return Err(CroniumError::Executions {
                id,
                got: xs.len(),
                want: executions,
            });
        }
        let max_of = |field: &str| xs.iter().filter_map(|x| x[field].as_i64()).max();
        let (first_start_ms, start_spread_ms, tail_ms) = execution_spread(&job, &xs);
        Ok(Sample {
            wall,
            job_ms: job["duration_ms"].as_i64(),
            setup_ms_max: max_of("setup_ms"),
            run_ms_max: max_of("run_ms"),
            queue_ms: between(&job, "created_at", "started_at"),
            server_ms: between(&job, "created_at", "finished_at"),
            post,
            first_start_ms,
            start_spread_ms,
            tail_ms,
        })
    }

    /// Reads the job's SSE log stream until `event: end`; false when the server refused the
    /// stream or closed it before that.
    async fn follow_to_end(&self, id: i64) -> Result<bool, CroniumError> {
        let path = format!("/api/v1/jobs/{id}/logs/stream");
        let mut sse = match self.api.stream(&path, None).await {
            Ok(sse) => sse,
            Err(cronium_client::Error::Status { .. }) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        match sse.until_end().await {
            Ok(_) => Ok(true),
            Err(cronium_client::Error::Closed { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn poll_final(&self, id: i64, timeout: Duration) -> Result<(), CroniumError> {
        let deadline = Instant::now() + timeout;
        loop {
            let job = self
                .api(Method::GET, &format!("/api/v1/jobs/{id}"), None)
                .await?;
            let status = job["status"].as_str().unwrap_or_default().to_string();
            if is_final(&status) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(CroniumError::Timeout {
                    id,
                    secs: timeout.as_secs(),
                    status,
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

/// The benchmark's client of `url`: no Nagle delay, connections kept (as many as the fan-out
/// opens).
fn client(url: &str) -> Result<Client, cronium_client::Error> {
    Client::builder(url)
        .token(TOKEN)
        .tcp_nodelay(true)
        .pool_max_idle_per_host(usize::MAX)
        .build()
}

/// Stops a server process: SIGTERM, then SIGKILL of its tree after 10 s.
fn stop_child(mut c: Child) {
    procs::signal(c.id(), libc::SIGTERM);
    if !procs::wait_exit(&mut c, Duration::from_secs(10)) {
        procs::kill_tree(c.id());
        let _ = c.wait();
    }
    procs::unregister(c.id());
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The value of `series` (name and labels exactly as exported) in a Prometheus text page.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

pub fn is_final(status: &str) -> bool {
    matches!(
        status,
        "succeeded" | "failed" | "timed_out" | "cancelled" | "partial"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_values_are_read_by_exact_series() {
        let page = "# HELP x\ncronium_a_total 3\ncronium_a_total_more 9\ncronium_b{s=\"x\"} 1.5\n";
        assert_eq!(metric_value(page, "cronium_a_total"), Some(3.0));
        assert_eq!(metric_value(page, "cronium_b{s=\"x\"}"), Some(1.5));
        assert_eq!(metric_value(page, "cronium_c"), None);
    }
}
