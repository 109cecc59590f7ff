//! Test support: starts the real `cronium` binary as a server on a free loopback port, with its
//! own data directory, and talks to it over HTTP and through the CLI.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const TOKEN: &str = "crn_test_token_0123456789abcdef";

pub fn cronium_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cronium"))
}

/// The runner: CRONIUM_RUNNER, else the one cargo built next to `cronium`.
pub fn runner_bin() -> PathBuf {
    if let Ok(p) = std::env::var("CRONIUM_RUNNER") {
        return PathBuf::from(p);
    }
    let p = cronium_bin().with_file_name("cronium-runner");
    assert!(
        p.is_file(),
        "{} is missing: build it first (`cargo build -p cronium-runner`, or run scripts/test.sh)",
        p.display()
    );
    p
}

/// The static runner for containers and SSH servers: CRONIUM_STATIC_RUNNER, else the one
/// scripts/build-runner.sh builds.
pub fn static_runner_bin() -> PathBuf {
    if let Ok(p) = std::env::var("CRONIUM_STATIC_RUNNER") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/runner/cronium-runner");
    assert!(
        p.is_file(),
        "no static runner: run scripts/build-runner.sh (or scripts/test.sh)"
    );
    p
}

/// A fresh database on the test PostgreSQL server (see scripts/test-pg.sh).
pub async fn fresh_pg_database() -> String {
    use sqlx::Connection;
    let base = std::env::var("CRONIUM_TEST_PG_URL")
        .expect("CRONIUM_TEST_PG_URL is not set: run `eval \"$(scripts/test-pg.sh | tail -n1)\"` or scripts/test.sh");
    let name = format!("cronium_srv_{:016x}", rand::random::<u64>());
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .expect("connect to test PostgreSQL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create database");
    match base.rfind('/') {
        Some(i) => format!("{}/{name}", &base[..i]),
        None => panic!("bad CRONIUM_TEST_PG_URL {base}"),
    }
}

#[derive(Default)]
pub struct ServerOpts {
    pub data_dir: Option<PathBuf>,
    /// The runner for local runs (default: [`runner_bin`]).
    pub runner: Option<PathBuf>,
    pub database_url: Option<String>,
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
    /// Where the server's log (stderr) goes; default: the test's stderr.
    pub log_file: Option<PathBuf>,
    /// The server's working directory (default: the test's).
    pub current_dir: Option<PathBuf>,
}

pub struct Server {
    pub child: Child,
    pub url: String,
    pub token: String,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub http: reqwest::Client,
    /// First-start messages the server printed.
    pub banner: Vec<String>,
}

impl Server {
    pub fn start() -> Server {
        Self::start_with(ServerOpts::default())
    }

    pub fn start_with(opts: ServerOpts) -> Server {
        let (tmp, data_dir) = match opts.data_dir {
            Some(d) => (None, d),
            None => {
                let t = tempfile::tempdir().expect("tempdir");
                let d = t.path().join("data");
                (Some(t), d)
            }
        };
        let mut cmd = Command::new(cronium_bin());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .arg("--runner")
            .arg(opts.runner.clone().unwrap_or_else(runner_bin))
            .args(&opts.args)
            .env("CRONIUM_ADMIN_TOKEN", TOKEN)
            .env(
                "CRONIUM_LOG",
                std::env::var("CRONIUM_TEST_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(match &opts.log_file {
                Some(path) => Stdio::from(std::fs::File::create(path).expect("create log file")),
                None => Stdio::inherit(),
            });
        if let Some(db) = &opts.database_url {
            cmd.arg("--database-url").arg(db);
        }
        if let Some(dir) = &opts.current_dir {
            cmd.current_dir(dir);
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn cronium serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut banner = vec![];
        let url = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("server did not start; printed: {banner:?}"));
            if let Some(rest) = line.strip_prefix("Cronium listening on ") {
                break rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
            }
            banner.push(line);
        };
        Server {
            child,
            url,
            token: TOKEN.into(),
            data_dir,
            _tmp: tmp,
            http: reqwest::Client::new(),
            banner,
        }
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(cronium_bin())
            .args(args)
            .env("CRONIUM_URL", &self.url)
            .env("CRONIUM_TOKEN", &self.token)
            .env("CRONIUM_RUNNER", runner_bin())
            .stdin(Stdio::null())
            .output()
            .expect("run cronium CLI")
    }

    pub async fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.api_with_token(method, path, body, Some(&self.token))
            .await
    }

    pub async fn api_with_token(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut rb = self.http.request(m, format!("{}{}", self.url, path));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Sends a request with a body of `size` bytes over a plain connection and reads the answer:
    /// (status, headers in lowercase, body). For bodies just over the server's limit: the whole
    /// body is written before the answer is read, so the server (which refuses once it has read
    /// past its limit, then closes) never closes on a client still writing, which an HTTP client
    /// library reports as a failed request instead of the answer.
    pub fn request_with_body_of(
        &self,
        method: &str,
        path: &str,
        size: usize,
    ) -> (u16, Vec<(String, String)>, Vec<u8>) {
        use std::io::{Read, Write};
        let addr = self.url.trim_start_matches("http://");
        let mut conn = std::net::TcpStream::connect(addr).expect("connect");
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        write!(
            conn,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n",
            self.token
        )
        .expect("write head");
        conn.write_all(&vec![b' '; size]).expect("write body");
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        let (head_end, length) = loop {
            let n = conn.read(&mut buf).expect("read answer");
            assert!(n > 0, "connection closed before an answer");
            raw.extend_from_slice(&buf[..n]);
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                break (end + 4, length);
            }
        };
        while raw.len() < head_end + length {
            let n = conn.read(&mut buf).expect("read body");
            assert!(n > 0, "connection closed inside the body");
            raw.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .expect("status line");
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        (status, headers, raw[head_end..head_end + length].to_vec())
    }

    /// Applies an event given as YAML through the API.
    pub async fn apply_yaml(&self, yaml: &str) -> Value {
        let v: Value = serde_saphyr::from_str(yaml).expect("yaml");
        let name = v["name"].as_str().expect("name").to_string();
        let (status, body) = self
            .api("PUT", &format!("/api/v1/events/{name}"), Some(v))
            .await;
        assert_eq!(status, 200, "apply {name}: {body}");
        body
    }

    pub async fn run_event(&self, name: &str, input: Option<Value>) -> i64 {
        let body = match input {
            Some(i) => serde_json::json!({"input": i}),
            None => serde_json::json!({}),
        };
        let (status, r) = self
            .api("POST", &format!("/api/v1/events/{name}/run"), Some(body))
            .await;
        assert_eq!(status, 201, "run {name}: {r}");
        r["id"].as_i64().expect("job id")
    }

    pub async fn job(&self, id: i64) -> Value {
        let (status, j) = self.api("GET", &format!("/api/v1/jobs/{id}"), None).await;
        assert_eq!(status, 200, "job {id}: {j}");
        j
    }

    /// Waits until the job reaches a final status and returns it.
    pub async fn wait_job(&self, id: i64, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let j = self.job(id).await;
            let st = j["status"].as_str().unwrap_or_default();
            if ["succeeded", "failed", "timed_out", "cancelled", "partial"].contains(&st) {
                return j;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} still {st} after {within:?}: {j}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for a condition on the server, polling.
    pub async fn wait_for<F, Fut>(&self, what: &str, within: Duration, mut f: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + within;
        while !f().await {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// `GET /metrics` with the admin token: the status and the Prometheus text.
    pub async fn metrics(&self) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}/metrics", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("GET /metrics");
        let status = r.status().as_u16();
        (status, r.text().await.expect("metrics text"))
    }

    /// `cronium server add NAME --host 127.0.0.1 --port PORT --user USER` and `extra` (the
    /// credential, tags...): a test sshd on loopback; panics with the CLI's error on failure.
    pub fn add_server(&self, name: &str, port: u16, user: &str, extra: &[&str]) {
        let port = port.to_string();
        let mut args = vec![
            "server",
            "add",
            name,
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--user",
            user,
        ];
        args.extend_from_slice(extra);
        let o = self.cli(&args);
        assert!(
            o.status.success(),
            "server add {name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// The value of an unlabelled metric (or of one series, `name{label="v"}`) on /metrics;
    /// None when the series is not there.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let (status, body) = self.metrics().await;
        assert_eq!(status, 200, "/metrics: {body}");
        body.lines().find_map(|l| {
            let rest = l.strip_prefix(series)?.strip_prefix(' ')?;
            rest.split_whitespace().next()?.parse().ok()
        })
    }

    pub async fn log_text(&self, id: i64) -> String {
        let (_, page) = self
            .api("GET", &format!("/api/v1/jobs/{id}/logs?limit=10000"), None)
            .await;
        page["lines"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| l["line"].as_str().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops the server abruptly (SIGKILL), as a crash would.
    pub fn crash(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the server gracefully (SIGTERM) and waits for it.
    pub fn stop(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.crash();
    }

    pub fn data_path(&self, rel: &str) -> PathBuf {
        self.data_dir.join(rel)
    }

    /// Asserts that `secret` is stored nowhere in the data directory in clear: every file is
    /// read (the SQLite database, its `-wal` and `-shm`, the payload cache...), since in WAL
    /// mode recent writes live in `cronium.db-wal`, not in `cronium.db`.
    pub fn assert_not_at_rest(&self, secret: &str) {
        let files = files_under(&self.data_dir);
        assert!(
            files.iter().any(|f| f.ends_with("cronium.db")),
            "no database in {}: {files:?}",
            self.data_dir.display()
        );
        for f in files {
            let bytes = std::fs::read(&f).unwrap_or_else(|e| panic!("read {}: {e}", f.display()));
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "`{secret}` is stored in clear in {}",
                f.display()
            );
        }
    }
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let entry = entry.expect("dir entry");
            let kind = entry.file_type().expect("file type");
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    out
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary directory every user may write to (sticky, like /tmp), for files that local
/// scripts write: a server started as root runs them as its unprivileged run user, who cannot
/// enter a private temporary directory of the test.
pub fn shared_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777))
        .expect("chmod tempdir");
    dir
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write file");
    p
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// HMAC-SHA256 of the concatenated `parts` with `secret`, in hex.
pub fn hmac_hex(secret: &[u8], parts: &[&[u8]]) -> String {
    use hmac::Mac;
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC key");
    for p in parts {
        m.update(p);
    }
    hex::encode(m.finalize().into_bytes())
}

/// Cronium's webhook signature: `sha256=HEX(HMAC(secret, "{ts}.{body}"))`.
pub fn cronium_signature(secret: &str, ts: i64, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hmac_hex(secret.as_bytes(), &[ts.to_string().as_bytes(), b".", body])
    )
}

/// GitHub's webhook signature: `sha256=HEX(HMAC(secret, body))`.
pub fn github_signature(secret: &str, body: &[u8]) -> String {
    format!("sha256={}", hmac_hex(secret.as_bytes(), &[body]))
}
