//! A real `cronium serve` process under test, started the way the integration tests start it
//! (loopback port 0, its own data directory, an admin token from the environment), and the few
//! API calls the benchmarks make against it.
//!
//! Not a client library for Cronium: only what the benchmarks need, with errors that say which
//! call failed and what the server answered.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cronium_client::{Client, Method, SseReader};
use serde_json::{json, Value};

pub const TOKEN: &str = "crn_bench_token_0123456789abcdef";

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot start {bin}: {source}")]
    Spawn { bin: String, source: std::io::Error },
    #[error("the server did not print its address within 60 s; stderr is in {log}")]
    NoBanner { log: String },
    #[error(transparent)]
    Api(#[from] cronium_client::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("job {id} did not end within {secs} s (last status `{status}`)")]
    Timeout { id: i64, secs: u64, status: String },
    #[error("unexpected answer to {what}: {body}")]
    Shape { what: String, body: String },
}

/// The release binaries under test.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub cronium: PathBuf,
    pub runner: PathBuf,
}

#[derive(Debug, Default, Clone)]
pub struct ServerOpts {
    pub database_url: Option<String>,
    pub extra_args: Vec<String>,
    /// Extra environment for the server process.
    pub env: Vec<(String, String)>,
    /// An existing data directory (seeded beforehand) instead of a fresh one.
    pub data_dir: Option<PathBuf>,
}

pub struct Server {
    child: Child,
    pub url: String,
    pub pid: u32,
    api: Client,
    /// Holds the data directory and the server's stderr log for the server's lifetime.
    _dir: tempfile::TempDir,
}

impl Server {
    pub fn start(bins: &Binaries, opts: &ServerOpts) -> Result<Server, ServerError> {
        let dir = tempfile::Builder::new()
            .prefix("cronium-bench-")
            .tempdir()?;
        let log_path = dir.path().join("server.log");
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = Command::new(&bins.cronium);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(
                opts.data_dir
                    .clone()
                    .unwrap_or_else(|| dir.path().join("data")),
            )
            .arg("--runner")
            .arg(&bins.runner)
            .args(&opts.extra_args)
            .env("CRONIUM_ADMIN_TOKEN", TOKEN)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        if let Some(db) = &opts.database_url {
            cmd.arg("--database-url").arg(db);
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().map_err(|source| ServerError::Spawn {
            bin: bins.cronium.display().to_string(),
            source,
        })?;
        let pid = child.id();
        let no_banner = || ServerError::NoBanner {
            log: log_path.display().to_string(),
        };
        let stdout = match child.stdout.take() {
            Some(s) => s,
            None => {
                let _ = child.kill();
                return Err(no_banner());
            }
        };
        let (tx, rx) = std::sync::mpsc::channel();
        // The server keeps writing to stdout; a reader thread drains it so it never blocks.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    // Nobody listens any more: keep draining.
                }
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
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(no_banner());
                }
            }
        };
        // CRONIUM_BENCH_FRESH_CONNECTIONS=1: a new TCP connection per request, to tell costs of
        // connection reuse (delayed ACK against Nagle) from the server's own work.
        let fresh = std::env::var_os("CRONIUM_BENCH_FRESH_CONNECTIONS").is_some_and(|v| v == "1");
        let api = match client(&url, fresh) {
            Ok(api) => api,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e.into());
            }
        };
        Ok(Server {
            child,
            url,
            pid,
            api,
            _dir: dir,
        })
    }

    /// From now on, open a new TCP connection per request (see `client`).
    pub fn use_fresh_connections(&mut self) -> Result<(), ServerError> {
        self.api = client(&self.url, true)?;
        Ok(())
    }

    pub async fn api(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ServerError> {
        Ok(self.api.request(method, path, body).await?)
    }

    /// Creates or replaces an event from its JSON spec.
    pub async fn put_event(&self, spec: &Value) -> Result<(), ServerError> {
        let name = spec["name"].as_str().unwrap_or_default();
        self.api(Method::PUT, &format!("/api/v1/events/{name}"), Some(spec))
            .await?;
        Ok(())
    }

    /// Enqueues a run of `event` and returns the job id.
    pub async fn run(&self, event: &str, input: Option<Value>) -> Result<i64, ServerError> {
        let body = json!({ "input": input });
        let v = self
            .api(
                Method::POST,
                &format!("/api/v1/events/{event}/run"),
                Some(&body),
            )
            .await?;
        v["id"].as_i64().ok_or_else(|| ServerError::Shape {
            what: "POST run".into(),
            body: v.to_string(),
        })
    }

    pub async fn job(&self, id: i64) -> Result<Value, ServerError> {
        self.api(Method::GET, &format!("/api/v1/jobs/{id}"), None)
            .await
    }

    /// Opens the live log of a job.
    pub async fn stream(&self, id: i64) -> Result<SseReader, ServerError> {
        Ok(self
            .api
            .stream(&format!("/api/v1/jobs/{id}/logs/stream"), None)
            .await?)
    }

    /// Polls a job until it reaches a final status, `interval` apart, and returns it.
    pub async fn wait_final(
        &self,
        id: i64,
        interval: Duration,
        timeout: Duration,
    ) -> Result<Value, ServerError> {
        let deadline = Instant::now() + timeout;
        loop {
            let job = self.job(id).await?;
            let status = job["status"].as_str().unwrap_or_default().to_string();
            if is_final(&status) {
                return Ok(job);
            }
            if Instant::now() >= deadline {
                return Err(ServerError::Timeout {
                    id,
                    secs: timeout.as_secs(),
                    status,
                });
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// `kill -9` of the server: no shutdown, no lease given up.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The value of a gauge on `/metrics` (`None` when the server does not answer or lacks it).
    pub async fn gauge(&self, name: &str) -> Option<f64> {
        let text = self.api.text("/metrics").await.ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// Resident memory of the server process, from /proc (kB): (VmRSS, VmHWM).
    pub fn rss_kb(&self) -> Result<(u64, u64), ServerError> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok((field("VmRSS:"), field("VmHWM:")))
    }
}

/// The API client of `url`, without Nagle's delay; `fresh`: no connection reuse, so every
/// request starts on a new connection (in TCP quick-ACK mode), which hides a server's missing
/// TCP_NODELAY.
fn client(url: &str, fresh: bool) -> Result<Client, cronium_client::Error> {
    Client::builder(url)
        .token(TOKEN)
        .tcp_nodelay(true)
        .pool_max_idle_per_host(if fresh { 0 } else { 64 })
        .build()
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn is_final(status: &str) -> bool {
    matches!(
        status,
        "succeeded" | "failed" | "timed_out" | "cancelled" | "partial"
    )
}

/// Milliseconds since the epoch of an RFC 3339 timestamp as the API prints it.
pub fn ts_ms(v: &Value) -> Option<i64> {
    let s = v.as_str()?;
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// A fresh PostgreSQL database on the server at `base` (a superuser URL); returns its URL.
pub async fn fresh_pg_database(base: &str) -> anyhow::Result<String> {
    use sqlx::Connection;
    let name = format!("cronium_bench_{:016x}", rand::random::<u64>());
    let mut conn = sqlx::PgConnection::connect(base)
        .await
        .map_err(|e| anyhow::anyhow!("connecting to PostgreSQL at the given URL: {e}"))?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await?;
    let _ = conn.close().await;
    let (prefix, query) = match base.split_once('?') {
        Some((p, q)) => (p, format!("?{q}")),
        None => (base, String::new()),
    };
    match prefix.rfind('/') {
        Some(i) if i > "postgres://".len() => Ok(format!("{}/{name}{query}", &prefix[..i])),
        _ => Ok(format!("{prefix}/{name}{query}")),
    }
}

/// Path helper: `path` if it is a file, with a readable error otherwise.
pub fn existing(path: &Path, what: &str) -> anyhow::Result<PathBuf> {
    if path.is_file() {
        Ok(path.to_path_buf())
    } else {
        anyhow::bail!(
            "{what} `{}` does not exist: build it with `cargo build --release -p cronium -p cronium-runner` or pass its path",
            path.display()
        )
    }
}
