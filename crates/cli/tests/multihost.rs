//! Multi-host fault tests (issue 14, item 4): Cronium servers in Docker containers of their own
//! on a private network, sharing one PostgreSQL, are killed (`docker kill`, SIGKILL), cut off
//! from the network (`docker network disconnect`) and restarted one after the other under load.
//! After each fault: no job lost or run twice to completion, exactly one outcome per attempt,
//! every stored log line of an attempt once and in order, schedules fired once per tick.
//!
//! The containers run the binaries of this build (bind-mounted read-only) in the local
//! `cronium/runtime:bookworm` image (scripts/build-images.sh); PostgreSQL runs on the host,
//! listening only on the private network's gateway address, so a container cut off from the
//! network loses the database as a server on another machine would. Every script appends a
//! `JOB ATTEMPT` line to a file on a volume shared by every container at its very end: that file
//! tells how many times each job ran to completion, whatever the database says.
//!
//! The agent tests run two servers without agents of their own (`--no-agent`) and three
//! `cronium agent` containers that reach them by one name (`http://cronium:8080`, every server's
//! address in Docker's DNS, as behind a load balancer); only the agents run jobs.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::{Connection, Row};
use support::*;

const IMAGE: &str = "cronium/runtime:bookworm";

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("run the docker CLI")
}

fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A PostgreSQL cluster of its own on the host, listening on `host:port` only.
struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    host: String,
    /// The server's options, for a restart.
    opts: String,
}

fn pg_bindir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (scripts/test.sh installs it)")
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|d| d.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop().expect("an initdb under /usr/lib/postgresql")
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a PostgreSQL program, as the `postgres` user when we are root (they refuse root).
fn pg_command(bin: &Path, program: &str, args: &[&str]) -> Output {
    let exe = bin.join(program);
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    cmd.args(args).output().expect("run a PostgreSQL program")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Postgres {
    fn start(host: &str, subnet: &str) -> Postgres {
        let bin = pg_bindir();
        let dir = tempfile::Builder::new()
            .prefix("cronium-mh-pg")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let data = dir.path().join("data");
        if is_root() {
            let ok = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(ok.success());
        }
        let data_s = data.display().to_string();
        let out = pg_command(
            &bin,
            "initdb",
            &["-D", &data_s, "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Trust on the private network (the containers) and from this machine (the test), nothing else.
        let hba = format!(
            "local all all trust\nhost all all {subnet} trust\nhost all all samehost trust\n"
        );
        std::fs::write(data.join("pg_hba.conf"), hba).expect("write pg_hba.conf");
        let port = free_port();
        // fsync off (no machine crash to survive), but commits written before they are
        // acknowledged: a kill -9 of PostgreSQL must not lose what it said it stored.
        let opts = format!(
            "-c listen_addresses={host} -p {port} -c fsync=off \
             -c unix_socket_directories={data_s} -c max_connections=200"
        );
        let pg = Postgres {
            dir,
            bin,
            port,
            host: host.to_string(),
            opts,
        };
        pg.pg_ctl_start();
        pg
    }

    fn pg_ctl_start(&self) {
        let data_s = self.dir.path().join("data").display().to_string();
        let log = self.dir.path().join("pg.log").display().to_string();
        let out = pg_command(
            &self.bin,
            "pg_ctl",
            &["-D", &data_s, "-o", &self.opts, "-l", &log, "-w", "start"],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// `kill -9` of the postmaster; its backends end as they notice.
    fn kill9(&self) {
        let pidfile = self.dir.path().join("data").join("postmaster.pid");
        let text = std::fs::read_to_string(&pidfile).expect("postmaster.pid");
        let pid = text.lines().next().expect("a pid line").trim().to_string();
        let ok = Command::new("kill")
            .args(["-9", &pid])
            .status()
            .expect("kill");
        assert!(ok.success(), "kill -9 {pid}");
    }

    /// Starts it again after [`kill9`](Self::kill9) (crash recovery replays the WAL). Refused
    /// while a backend of the killed one still holds the shared memory: tried again until they
    /// have noticed and gone.
    fn restart(&self) {
        let data_s = self.dir.path().join("data").display().to_string();
        let log = self.dir.path().join("pg.log").display().to_string();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = pg_command(
                &self.bin,
                "pg_ctl",
                &["-D", &data_s, "-o", &self.opts, "-l", &log, "-w", "start"],
            );
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "pg_ctl start after kill -9: {}{}",
                String::from_utf8_lossy(&out.stdout),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn url(&self, db: &str) -> String {
        format!("postgres://postgres@{}:{}/{db}", self.host, self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data").display().to_string();
        let _ = pg_command(
            &self.bin,
            "pg_ctl",
            &["-D", &data, "-m", "immediate", "stop"],
        );
    }
}

/// A private Docker network, PostgreSQL on its gateway, and the containers started on it.
struct Cluster {
    net: String,
    prefix: String,
    pg: Postgres,
    shared: tempfile::TempDir,
    nodes: Vec<String>,
    http: reqwest::Client,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Cluster {
    async fn start() -> Cluster {
        let out = docker(&["image", "inspect", IMAGE]);
        assert!(
            out.status.success(),
            "the image {IMAGE} is missing: run scripts/build-images.sh"
        );
        let pid = std::process::id();
        let mut tries = 0;
        let (net, prefix) = loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let octet = 20 + (pid + n * 7) % 200;
            let prefix = format!("172.29.{octet}");
            let net = format!("cronium-mh-{pid}-{n}");
            let out = docker(&[
                "network",
                "create",
                "--subnet",
                &format!("{prefix}.0/24"),
                "--gateway",
                &format!("{prefix}.1"),
                &net,
            ]);
            if out.status.success() {
                break (net, prefix);
            }
            tries += 1;
            assert!(
                tries < 20,
                "cannot create a network: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let pg = Postgres::start(&format!("{prefix}.1"), &format!("{prefix}.0/24"));
        let mut admin = connect(&pg.url("postgres")).await;
        sqlx::query("CREATE DATABASE cronium")
            .execute(&mut admin)
            .await
            .expect("create the database");
        let shared = tempfile::Builder::new()
            .prefix("cronium-mh-shared")
            .tempdir_in("/tmp")
            .expect("tempdir");
        std::fs::write(shared.path().join("done"), "").expect("create the done file");
        for p in [shared.path().to_path_buf(), shared.path().join("done")] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        }
        Cluster {
            net,
            prefix,
            pg,
            shared,
            nodes: Vec::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("http client"),
        }
    }

    fn ip(&self, node: usize) -> String {
        format!("{}.{}", self.prefix, 10 + node)
    }

    fn name(&self, node: usize) -> String {
        format!("{}-s{node}", self.net)
    }

    fn url(&self, node: usize) -> String {
        format!("http://{}:8080", self.ip(node))
    }

    /// Starts server `node` (a container) with the embedded agent and the scheduler, and waits
    /// until its API answers.
    async fn start_server(&mut self, node: usize, extra: &[&str]) {
        let name = self.name(node);
        let ip = self.ip(node);
        let bin = cronium_bin().display().to_string();
        let runner = static_runner_bin().display().to_string();
        let shared = self.shared.path().display().to_string();
        let db = self.pg.url("cronium");
        let mut args: Vec<String> = [
            "run",
            "-d",
            "--name",
            &name,
            "--hostname",
            &name,
            "--network",
            &self.net,
            "--ip",
            &ip,
            // Agents reach "the servers" by this name: Docker's DNS answers every server's
            // address, so a call that cannot reach one goes to another (a load balancer's job).
            "--network-alias",
            "cronium",
            "-v",
            &format!("{bin}:/usr/local/bin/cronium:ro"),
            "-v",
            &format!("{runner}:/usr/local/bin/cronium-runner:ro"),
            "-v",
            &format!("{shared}:/shared"),
            "-e",
            &format!("CRONIUM_ADMIN_TOKEN={TOKEN}"),
            "-e",
            "CRONIUM_LOG=info",
            IMAGE,
            "cronium",
            "serve",
            "--listen",
            "0.0.0.0:8080",
            "--data-dir",
            "/data",
            "--database-url",
            &db,
            "--lease",
            "3s",
            "--runner",
            "/usr/local/bin/cronium-runner",
            "--run-as",
            "root",
            "--no-docker",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        docker_ok(&refs);
        self.nodes.push(name);
        self.wait_up(node).await;
    }

    fn agent_name(&self, n: usize) -> String {
        format!("{}-a{n}", self.net)
    }

    /// Creates the agents' token through server 0.
    async fn agent_token(&self) -> String {
        let (status, body) = self
            .api(
                0,
                "POST",
                "/api/v1/agent-tokens",
                Some(json!({"name": "fleet"})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["token"].as_str().expect("the token").to_string()
    }

    /// Starts agent `n` (a container) that reaches the servers as `http://cronium:8080`, and
    /// waits until the servers list it connected.
    async fn start_agent(&mut self, n: usize, token: &str, extra: &[&str]) {
        let name = self.agent_name(n);
        let ip = format!("{}.{}", self.prefix, 50 + n);
        let bin = cronium_bin().display().to_string();
        let runner = static_runner_bin().display().to_string();
        let shared = self.shared.path().display().to_string();
        let mut args: Vec<String> = [
            "run",
            "-d",
            "--name",
            &name,
            "--hostname",
            &name,
            "--network",
            &self.net,
            "--ip",
            &ip,
            "-v",
            &format!("{bin}:/usr/local/bin/cronium:ro"),
            "-v",
            &format!("{runner}:/usr/local/bin/cronium-runner:ro"),
            "-v",
            &format!("{shared}:/shared"),
            "-e",
            &format!("CRONIUM_AGENT_TOKEN={token}"),
            "-e",
            "CRONIUM_LOG=info",
            IMAGE,
            "cronium",
            "agent",
            "--url",
            "http://cronium:8080",
            "--name",
            &name,
            "--data-dir",
            "/agent",
            "--runner",
            "/usr/local/bin/cronium-runner",
            "--run-as",
            "root",
            "--concurrency",
            "4",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        docker_ok(&refs);
        self.nodes.push(name.clone());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, list) = self.api(0, "GET", "/api/v1/agents", None).await;
            let connected = list
                .as_array()
                .into_iter()
                .flatten()
                .any(|a| a["name"] == name.as_str() && a["state"] == "connected");
            if connected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "agent {name} did not connect: {list}\n{}",
                self.container_logs(&name)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn container_logs(&self, name: &str) -> String {
        let out = docker(&["logs", "--tail", "80", name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// The agent (by index) whose claim `job` is under now.
    async fn holder_of(&self, db: &mut sqlx::PgConnection, job: i64, agents: usize) -> usize {
        let owner: Option<String> =
            sqlx::query_scalar("SELECT lease_owner FROM jobs WHERE id = $1")
                .bind(job)
                .fetch_one(&mut *db)
                .await
                .expect("the job's lease");
        let owner = owner.unwrap_or_default();
        (0..agents)
            .find(|n| owner.starts_with(&format!("{}-", self.agent_name(*n))))
            .unwrap_or_else(|| panic!("job {job} is held by {owner:?}, not by an agent"))
    }

    async fn wait_up(&self, node: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = self
                .http
                .get(format!("{}/api/v1/events", self.url(node)))
                .bearer_auth(TOKEN)
                .send()
                .await
            {
                if r.status().is_success() {
                    return;
                }
            }
            if Instant::now() > deadline {
                let logs = docker(&["logs", "--tail", "50", &self.name(node)]);
                panic!(
                    "server {node} did not come up: {}{}",
                    String::from_utf8_lossy(&logs.stdout),
                    String::from_utf8_lossy(&logs.stderr)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn api(
        &self,
        node: usize,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut rb = self
            .http
            .request(m, format!("{}{path}", self.url(node)))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        match rb.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap_or_default();
                (
                    status,
                    serde_json::from_str(&text).unwrap_or(Value::String(text)),
                )
            }
            Err(e) => (0, Value::String(e.to_string())),
        }
    }

    async fn apply(&self, node: usize, yaml: &str) {
        let v: Value = serde_saphyr::from_str(yaml).expect("yaml");
        let name = v["name"].as_str().expect("name").to_string();
        let (status, body) = self
            .api(node, "PUT", &format!("/api/v1/events/{name}"), Some(v))
            .await;
        assert_eq!(status, 200, "apply {name}: {body}");
    }

    /// Starts a run of `event` through server `node`; None when that server did not answer.
    async fn try_run(&self, node: usize, event: &str) -> Option<i64> {
        let (status, body) = self
            .api(
                node,
                "POST",
                &format!("/api/v1/events/{event}/run"),
                Some(json!({})),
            )
            .await;
        match status {
            201 => body["id"].as_i64(),
            _ => None,
        }
    }

    fn kill(&self, node: usize) {
        docker_ok(&["kill", "-s", "KILL", &self.name(node)]);
    }

    fn disconnect(&self, node: usize) {
        docker_ok(&[
            "network",
            "disconnect",
            "--force",
            &self.net,
            &self.name(node),
        ]);
    }

    fn connect(&self, node: usize) {
        docker_ok(&[
            "network",
            "connect",
            "--ip",
            &self.ip(node),
            &self.net,
            &self.name(node),
        ]);
    }

    /// The database, straight (the host reaches the gateway address).
    async fn db(&self) -> sqlx::PgConnection {
        connect(&self.pg.url("cronium")).await
    }

    /// How many times each job ran to completion: the shared file's `JOB ATTEMPT` lines.
    fn completions(&self) -> BTreeMap<i64, Vec<i64>> {
        let text = std::fs::read_to_string(self.shared.path().join("done")).unwrap_or_default();
        let mut out: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for line in text.lines() {
            let mut w = line.split_whitespace();
            if let (Some(j), Some(a)) = (w.next(), w.next()) {
                if let (Ok(j), Ok(a)) = (j.parse(), a.parse()) {
                    out.entry(j).or_default().push(a);
                }
            }
        }
        out
    }

    fn server_logs(&self, node: usize) -> String {
        self.container_logs(&self.name(node))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &self.nodes {
            let _ = docker(&["rm", "-f", "-v", n]);
        }
        let _ = docker(&["network", "rm", &self.net]);
    }
}

async fn connect(url: &str) -> sqlx::PgConnection {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match sqlx::PgConnection::connect(url).await {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => panic!("connect to {url}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A job's state as stored.
struct Stored {
    status: String,
    attempt: i64,
    /// (attempt, status) of each execution.
    executions: Vec<(i64, String)>,
    /// The stdout lines of each attempt, in seq order.
    lines: BTreeMap<i64, Vec<String>>,
}

async fn stored(db: &mut sqlx::PgConnection, job: i64) -> Stored {
    let row = sqlx::query("SELECT status, attempt FROM jobs WHERE id = $1")
        .bind(job)
        .fetch_one(&mut *db)
        .await
        .expect("the job row");
    let executions =
        sqlx::query("SELECT attempt, status FROM executions WHERE job_id = $1 ORDER BY id")
            .bind(job)
            .fetch_all(&mut *db)
            .await
            .expect("executions")
            .iter()
            .map(|r| (r.get::<i64, _>(0), r.get::<String, _>(1)))
            .collect();
    let mut lines: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    let rows = sqlx::query(
        "SELECT e.attempt, l.line FROM logs l JOIN executions e ON e.id = l.execution_id \
         WHERE l.job_id = $1 AND l.stream = 'stdout' ORDER BY l.seq",
    )
    .bind(job)
    .fetch_all(&mut *db)
    .await
    .expect("log lines");
    for r in rows {
        lines
            .entry(r.get::<i64, _>(0))
            .or_default()
            .push(r.get::<String, _>(1));
    }
    Stored {
        status: row.get::<String, _>(0),
        attempt: row.get::<i64, _>(1),
        executions,
        lines,
    }
}

/// `line 1`, `line 2`, ...: the lines a counting script prints.
fn counting(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("line {i}")).collect()
}

/// An event that prints `lines` numbered lines, one every `every` seconds, then records its
/// completion in the shared file.
fn counting_event(name: &str, lines: usize, every: &str) -> String {
    format!(
        "name: {name}\ntype: bash\nretries: {{ max_attempts: 3, backoff: 100ms }}\nscript: |\n  \
         for i in $(seq 1 {lines}); do echo \"line $i\"; sleep {every}; done\n  \
         echo \"$CRONIUM_JOB_ID $CRONIUM_ATTEMPT\" >> /shared/done\n"
    )
}

/// Waits until `job` has stored at least `n` stdout lines.
async fn wait_lines(db: &mut sqlx::PgConnection, job: i64, n: i64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM logs WHERE job_id = $1 AND stream = 'stdout'")
                .bind(job)
                .fetch_one(&mut *db)
                .await
                .expect("count lines");
        if count >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "job {job}: {count} of {n} lines within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_final(db: &mut sqlx::PgConnection, job: i64, within: Duration) -> Stored {
    let deadline = Instant::now() + within;
    loop {
        let s = stored(db, job).await;
        if matches!(
            s.status.as_str(),
            "succeeded" | "failed" | "cancelled" | "timed_out"
        ) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "job {job} still {} after {within:?}",
            s.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The invariants every fault must keep for one job that was meant to succeed: it succeeded, ran
/// to completion exactly once, each attempt has exactly one execution with one outcome, the last
/// attempt's lines are all there once and in order, and an earlier attempt's lines are a prefix
/// of what its script printed (cut where it lost its claim), never a line twice.
fn assert_sound(
    job: i64,
    s: &Stored,
    completions: &BTreeMap<i64, Vec<i64>>,
    expected_lines: usize,
) {
    let counts: Vec<(i64, usize)> = s.lines.iter().map(|(a, l)| (*a, l.len())).collect();
    eprintln!(
        "job {job}: executions {:?}, stdout lines per attempt {counts:?}",
        s.executions
    );
    assert_eq!(s.status, "succeeded", "job {job}: {:?}", s.executions);
    let runs = completions.get(&job).cloned().unwrap_or_default();
    assert_eq!(
        runs.len(),
        1,
        "job {job} ran to completion {} times: attempts {runs:?}",
        runs.len()
    );
    assert_eq!(
        runs[0], s.attempt,
        "job {job}: the completed attempt is not the recorded one"
    );
    let mut attempts: Vec<i64> = s.executions.iter().map(|(a, _)| *a).collect();
    attempts.dedup();
    assert_eq!(
        attempts.len(),
        s.executions.len(),
        "job {job}: an attempt with more than one execution: {:?}",
        s.executions
    );
    for (a, status) in &s.executions {
        let want_final = if *a == s.attempt { "succeeded" } else { "" };
        if *a == s.attempt {
            assert_eq!(status, want_final, "job {job} attempt {a}");
        } else {
            assert!(
                matches!(status.as_str(), "lost" | "failed" | "cancelled"),
                "job {job} attempt {a} ended {status}"
            );
        }
    }
    let all = counting(expected_lines);
    for (a, lines) in &s.lines {
        if *a == s.attempt {
            assert_eq!(lines, &all, "job {job}: the last attempt's lines");
        } else {
            assert!(
                lines.len() <= all.len() && lines[..] == all[..lines.len()],
                "job {job} attempt {a}: lines not a clean prefix: {lines:?}"
            );
        }
    }
}

#[tokio::test]
async fn kill_9_of_the_server_running_a_job_the_other_runs_it_again_once() {
    let mut c = Cluster::start().await;
    c.start_server(0, &[]).await;
    // Long enough (8 s) that starting the second server never outlasts it, even under load.
    c.apply(0, &counting_event("count", 80, "0.1")).await;
    let mut db = c.db().await;
    let job = c
        .try_run(0, "count")
        .await
        .expect("start a run on server 0");
    // Only server 0 is up: its agent has the job. Kill it mid-run, with the other one running.
    wait_lines(&mut db, job, 5, Duration::from_secs(60)).await;
    c.start_server(1, &[]).await;
    c.kill(0);
    let killed = Instant::now();
    let s = wait_final(&mut db, job, Duration::from_secs(60)).await;
    let took = killed.elapsed();
    assert_sound(job, &s, &c.completions(), 80);
    assert!(
        s.attempt >= 2,
        "the job was not run again: {:?}",
        s.executions
    );
    // Recovered after the 3 s lease, then 80 lines of 0.1 s.
    assert!(
        took < Duration::from_secs(30),
        "recovered and finished in {took:?}"
    );
    // The killed server comes back and changes nothing of the finished job.
    docker_ok(&["start", &c.name(0)]);
    c.wait_up(0).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let again = stored(&mut db, job).await;
    assert_eq!(again.executions, s.executions);
    assert_eq!(c.completions().get(&job).map(Vec::len), Some(1));
}

#[tokio::test]
async fn a_server_cut_off_from_the_network_for_10s_loses_its_job_cleanly() {
    let mut c = Cluster::start().await;
    c.start_server(0, &[]).await;
    c.apply(0, &counting_event("chatty", 100, "0.2")).await;
    let mut db = c.db().await;
    let job = c
        .try_run(0, "chatty")
        .await
        .expect("start a run on server 0");
    wait_lines(&mut db, job, 5, Duration::from_secs(60)).await;
    c.start_server(1, &[]).await;
    c.disconnect(0);
    tokio::time::sleep(Duration::from_secs(10)).await;
    c.connect(0);
    let s = wait_final(&mut db, job, Duration::from_secs(90)).await;
    let completions = c.completions();
    assert_sound(job, &s, &completions, 100);
    assert!(
        s.attempt >= 2,
        "the job was not taken over: {:?}",
        s.executions
    );
    // The cut-off server is back and serves again.
    c.wait_up(0).await;
    let second = c.try_run(0, "chatty").await;
    assert!(
        second.is_some(),
        "server 0 does not take runs after it is reconnected: {}",
        c.server_logs(0)
    );
}

#[tokio::test]
async fn servers_restarted_one_after_the_other_under_load_lose_no_job() {
    let mut c = Cluster::start().await;
    c.start_server(0, &[]).await;
    c.start_server(1, &[]).await;
    c.apply(0, &counting_event("work", 5, "0.1")).await;
    let mut db = c.db().await;
    let mut jobs = Vec::new();
    let mut i = 0usize;
    // Load: a run every 100 ms through either server, while each is restarted in turn.
    for phase in 0..3 {
        if phase > 0 {
            let node = phase - 1;
            let name = c.name(node);
            let restart = tokio::task::spawn_blocking(move || {
                docker(&["restart", "-t", "20", &name]).status.success()
            });
            while !restart.is_finished() {
                if let Some(id) = run_anywhere(&c, i).await {
                    jobs.push(id);
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(
                restart.await.expect("restart task"),
                "docker restart failed"
            );
            c.wait_up(node).await;
        }
        for _ in 0..20 {
            if let Some(id) = run_anywhere(&c, i).await {
                jobs.push(id);
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(
        jobs.len() >= 50,
        "only {} runs could be started",
        jobs.len()
    );
    let completions = loop_until_done(&c, &mut db, &jobs).await;
    for &job in &jobs {
        let s = stored(&mut db, job).await;
        assert_sound(job, &s, &completions, 5);
    }
}

async fn run_anywhere(c: &Cluster, i: usize) -> Option<i64> {
    for node in [i % 2, (i + 1) % 2] {
        if let Some(id) = c.try_run(node, "work").await {
            return Some(id);
        }
    }
    None
}

async fn loop_until_done(
    c: &Cluster,
    db: &mut sqlx::PgConnection,
    jobs: &[i64],
) -> BTreeMap<i64, Vec<i64>> {
    for &job in jobs {
        wait_final(db, job, Duration::from_secs(120)).await;
    }
    c.completions()
}

#[tokio::test]
async fn schedules_fire_once_per_tick_while_the_scheduler_is_killed_and_cut_off() {
    let mut c = Cluster::start().await;
    c.start_server(0, &[]).await;
    c.start_server(1, &[]).await;
    c.apply(
        0,
        "name: tick\ntype: bash\nschedule: \"* * * * * *\"\nscript: |\n  echo \"$CRONIUM_JOB_ID $CRONIUM_ATTEMPT\" >> /shared/done\n",
    )
    .await;
    let mut db = c.db().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Whoever holds the scheduler: kill it, later cut the other one off.
    let holder: String = sqlx::query_scalar("SELECT holder FROM locks WHERE name = 'scheduler'")
        .fetch_one(&mut db)
        .await
        .expect("a scheduler lease");
    let first = if holder.contains(&c.name(0)) { 0 } else { 1 };
    c.kill(first);
    tokio::time::sleep(Duration::from_secs(8)).await;
    docker_ok(&["start", &c.name(first)]);
    c.wait_up(first).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let other = 1 - first;
    c.disconnect(other);
    tokio::time::sleep(Duration::from_secs(8)).await;
    c.connect(other);
    tokio::time::sleep(Duration::from_secs(6)).await;
    c.apply(0, "name: tick\ntype: bash\nscript: |\n  echo \"$CRONIUM_JOB_ID $CRONIUM_ATTEMPT\" >> /shared/done\n")
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ticks: Vec<i64> = sqlx::query_scalar(
        "SELECT scheduled_for FROM jobs WHERE event_name = 'tick' AND scheduled_for IS NOT NULL ORDER BY scheduled_for",
    )
    .fetch_all(&mut db)
    .await
    .expect("scheduled jobs");
    assert!(ticks.len() >= 15, "only {} ticks fired", ticks.len());
    let mut seen = std::collections::BTreeSet::new();
    for t in &ticks {
        assert!(seen.insert(*t), "tick {t} fired twice: {ticks:?}");
    }
    // Failover within 5 s: no gap of more than 6 s between fired ticks.
    for w in ticks.windows(2) {
        assert!(
            w[1] - w[0] <= 6_000,
            "a gap of {} ms between ticks: {ticks:?}",
            w[1] - w[0]
        );
    }
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM jobs WHERE event_name = 'tick' AND scheduled_for IS NOT NULL",
    )
    .fetch_all(&mut db)
    .await
    .expect("ids");
    for id in ids {
        wait_final(&mut db, id, Duration::from_secs(60)).await;
    }
    let completions = c.completions();
    for (job, runs) in &completions {
        assert_eq!(runs.len(), 1, "tick job {job} ran {} times", runs.len());
    }
}

/// Two servers without agents, three agents reaching them by one name.
async fn agent_cluster(agent_args: &[&str]) -> Cluster {
    let mut c = Cluster::start().await;
    c.start_server(0, &["--no-agent"]).await;
    c.start_server(1, &["--no-agent", "--no-scheduler"]).await;
    let token = c.agent_token().await;
    for n in 0..3 {
        c.start_agent(n, &token, agent_args).await;
    }
    c
}

#[tokio::test]
async fn kill_9_of_the_agent_running_a_job_another_agent_runs_it_once() {
    let c = agent_cluster(&["--lease", "3s"]).await;
    c.apply(0, &counting_event("count", 30, "0.1")).await;
    let mut db = c.db().await;
    let job = c.try_run(1, "count").await.expect("start a run");
    wait_lines(&mut db, job, 5, Duration::from_secs(60)).await;
    let holder = c.holder_of(&mut db, job, 3).await;
    docker_ok(&["kill", "-s", "KILL", &c.agent_name(holder)]);
    let killed = Instant::now();
    let s = wait_final(&mut db, job, Duration::from_secs(60)).await;
    let took = killed.elapsed();
    assert_sound(job, &s, &c.completions(), 30);
    assert!(
        s.attempt >= 2,
        "the job was not run again: {:?}",
        s.executions
    );
    assert!(
        took < Duration::from_secs(20),
        "recovered and finished in {took:?}"
    );
}

#[tokio::test]
async fn an_agent_cut_off_for_10s_while_its_script_prints_loses_no_line() {
    // A lease longer than the cut: the agent keeps its claim and sends what it held back.
    let c = agent_cluster(&["--lease", "30s"]).await;
    c.apply(0, &counting_event("chatty", 100, "0.2")).await;
    let mut db = c.db().await;
    let job = c.try_run(0, "chatty").await.expect("start a run");
    wait_lines(&mut db, job, 5, Duration::from_secs(60)).await;
    let holder = c.holder_of(&mut db, job, 3).await;
    let name = c.agent_name(holder);
    docker_ok(&["network", "disconnect", "--force", &c.net, &name]);
    tokio::time::sleep(Duration::from_secs(10)).await;
    docker_ok(&[
        "network",
        "connect",
        "--ip",
        &format!("{}.{}", c.prefix, 50 + holder),
        &c.net,
        &name,
    ]);
    let s = wait_final(&mut db, job, Duration::from_secs(120)).await;
    assert_sound(job, &s, &c.completions(), 100);
    eprintln!(
        "after the cut: attempt {} finished; lines per attempt {:?}",
        s.attempt,
        s.lines
            .iter()
            .map(|(a, l)| (*a, l.len()))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn servers_killed_one_after_the_other_under_load_agents_lose_no_job() {
    let c = agent_cluster(&["--lease", "3s"]).await;
    c.apply(0, &counting_event("work", 5, "0.1")).await;
    let mut db = c.db().await;
    let mut jobs = Vec::new();
    let mut i = 0usize;
    for phase in 0..3 {
        if phase > 0 {
            let node = phase - 1;
            c.kill(node);
            for _ in 0..20 {
                if let Some(id) = run_anywhere(&c, i).await {
                    jobs.push(id);
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            docker_ok(&["start", &c.name(node)]);
            c.wait_up(node).await;
        }
        for _ in 0..20 {
            if let Some(id) = run_anywhere(&c, i).await {
                jobs.push(id);
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(
        jobs.len() >= 80,
        "only {} runs could be started",
        jobs.len()
    );
    let completions = loop_until_done(&c, &mut db, &jobs).await;
    for &job in &jobs {
        let s = stored(&mut db, job).await;
        assert_sound(job, &s, &completions, 5);
    }
}

#[tokio::test]
async fn postgresql_killed_mid_job_and_restarted_the_job_ends_once() {
    let c = agent_cluster(&["--lease", "30s"]).await;
    c.apply(0, &counting_event("through", 60, "0.1")).await;
    let mut db = c.db().await;
    let job = c.try_run(0, "through").await.expect("start a run");
    wait_lines(&mut db, job, 5, Duration::from_secs(60)).await;
    drop(db);
    c.pg.kill9();
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.pg.restart();
    let mut db = c.db().await;
    let s = wait_final(&mut db, job, Duration::from_secs(120)).await;
    assert_sound(job, &s, &c.completions(), 60);
    eprintln!(
        "after the database restart: attempt {} finished; lines per attempt {:?}",
        s.attempt,
        s.lines
            .iter()
            .map(|(a, l)| (*a, l.len()))
            .collect::<Vec<_>>()
    );
    // The servers serve again: a new run succeeds.
    let after = c
        .try_run(1, "through")
        .await
        .expect("a run after the restart");
    let s = wait_final(&mut db, after, Duration::from_secs(120)).await;
    assert_sound(after, &s, &c.completions(), 60);
}
