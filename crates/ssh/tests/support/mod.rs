//! Test support: real OpenSSH `sshd` instances on 127.0.0.1, each with its own host key, all
//! logging in as the plain user `cronium-test` (prepared by scripts/test-sshd.sh), plus helpers
//! to build payloads and inspect processes on the "host" (this machine).
//!
//! An [`Sshd`] is killed, with every process it started, when dropped.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cronium_core::transport::RunRequest;
use cronium_protocol::{
    EventMeta, Interpreter, Manifest, RunContext, RunnerEvent, MANIFEST_FORMAT,
};
use cronium_ssh::{Credential, RunnerArtifact, ServerConfig, SshConfig};

pub const USER: &str = "cronium-test";
/// A second login (made by scripts/test-sshd.sh) whose shell is /bin/sh, not bash.
pub const SH_USER: &str = "cronium-test-sh";
pub const PASSWORD: &str = "cronium-test-password";

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Machine preparation and the shared client key, once per test process.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub client_key: String,
    pub client_pub: String,
    pub other_key: String,
}

pub fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let script = workspace_root().join("scripts/test-sshd.sh");
        let st = Command::new(&script)
            .stdout(Stdio::null())
            .status()
            .expect("run scripts/test-sshd.sh");
        assert!(st.success(), "scripts/test-sshd.sh failed");
        let dir = tempfile::tempdir().expect("tempdir");
        let keygen = |name: &str| {
            let path = dir.path().join(name);
            let st = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
                .arg(&path)
                .status()
                .expect("ssh-keygen");
            assert!(st.success());
            (
                std::fs::read_to_string(&path).unwrap(),
                std::fs::read_to_string(path.with_extension("pub")).unwrap(),
            )
        };
        let (client_key, client_pub) = keygen("client");
        let (other_key, _) = keygen("other");
        Env {
            dir,
            client_key,
            client_pub,
            other_key,
        }
    })
}

/// The runner binary under test: `CRONIUM_RUNNER_BIN`, else the first build found in target/
/// (static release build preferred).
pub async fn runner() -> RunnerArtifact {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    let path = PATH.get_or_init(|| {
        if let Ok(p) = std::env::var("CRONIUM_RUNNER_BIN") {
            return PathBuf::from(p);
        }
        let target = workspace_root().join("target");
        let candidates = [
            "runner/cronium-runner",
            "x86_64-unknown-linux-gnu/release-runner/cronium-runner",
            "x86_64-unknown-linux-musl/release-runner/cronium-runner",
            "release-runner/cronium-runner",
            "release/cronium-runner",
            "debug/cronium-runner",
        ];
        // The shipped (static, release) build first; a debug build only when nothing else exists.
        candidates
            .iter()
            .map(|c| target.join(c))
            .find(|p| p.exists())
            .unwrap_or_else(|| {
                panic!(
                    "no cronium-runner binary: run scripts/build-runner.sh (or \
                     `cargo build -p cronium-runner`) first, or set CRONIUM_RUNNER_BIN"
                )
            })
    });
    RunnerArtifact::from_path(path.clone())
        .await
        .expect("runner artifact")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One sshd instance.
pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub sftp: bool,
    /// sshd's `LogLevel` (its log is `dir/sshd.log`).
    log_level: &'static str,
    /// Appended to the generated sshd_config.
    extra_config: String,
    child: Option<Child>,
}

impl Sshd {
    pub fn start() -> Sshd {
        Self::start_with(true)
    }

    pub fn start_with(sftp: bool) -> Sshd {
        Self::start_logging(sftp, "ERROR")
    }

    /// An sshd that logs at `log_level` (DEBUG1 shows the negotiated algorithms) into
    /// [`Sshd::log`].
    pub fn start_logging(sftp: bool, log_level: &'static str) -> Sshd {
        Self::start_configured(sftp, log_level, "")
    }

    /// An sshd with `extra` appended to its configuration (e.g. `SetEnv PATH=...` to give its
    /// sessions a fake `uname`).
    pub fn start_with_config(extra: &str) -> Sshd {
        Self::start_configured(true, "ERROR", extra)
    }

    fn start_configured(sftp: bool, log_level: &'static str, extra: &str) -> Sshd {
        let env = env();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("authorized_keys"), &env.client_pub).unwrap();
        let mut s = Sshd {
            dir,
            port: free_port(),
            sftp,
            log_level,
            extra_config: extra.to_string(),
            child: None,
        };
        s.new_host_key();
        s.spawn();
        s
    }

    pub fn new_host_key(&mut self) {
        let key = self.dir.path().join("host_ed25519");
        let _ = std::fs::remove_file(&key);
        let _ = std::fs::remove_file(key.with_extension("pub"));
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// The host key in OpenSSH format (what a caller pins).
    pub fn host_key(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("host_ed25519.pub"))
            .unwrap()
            .trim()
            .to_string()
    }

    fn spawn(&mut self) {
        let d = self.dir.path();
        let mut cfg = format!(
            "ListenAddress 127.0.0.1\nPort {port}\nHostKey {d}/host_ed25519\nPidFile none\n\
             AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\n\
             PasswordAuthentication yes\nKbdInteractiveAuthentication no\nAllowUsers {USER} {SH_USER}\n\
             MaxStartups 200:30:300\nMaxSessions 100\nLogLevel {level}\nClientAliveInterval 0\n",
            port = self.port,
            d = d.display(),
            level = self.log_level
        );
        if self.sftp {
            cfg.push_str("Subsystem sftp /usr/lib/openssh/sftp-server\n");
        }
        cfg.push_str(&self.extra_config);
        std::fs::write(d.join("sshd_config"), cfg).unwrap();
        let log = std::fs::File::create(d.join("sshd.log")).unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sshd");
        self.child = Some(child);
        // Ready when it answers with its banner.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::Read;
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 4];
                if s.read_exact(&mut buf).is_ok() && &buf == b"SSH-" {
                    return;
                }
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "sshd exited ({st}): {}",
                    std::fs::read_to_string(d.join("sshd.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "sshd did not start on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// What sshd logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Stops the listener and every process it started (sessions, user processes).
    pub fn kill_all(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = c.id();
            for p in descendants(pid) {
                signal(p, libc_sig::KILL);
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the listener only and starts it again (e.g. after a host key change).
    pub fn restart(&mut self) {
        self.kill_all();
        self.spawn();
    }

    /// The per-connection sshd processes (not the listener, not user processes).
    pub fn session_processes(&self) -> Vec<u32> {
        let Some(pid) = self.pid() else { return vec![] };
        descendants(pid)
            .into_iter()
            .filter(|p| comm(*p).is_some_and(|c| c.starts_with("sshd")))
            .collect()
    }

    pub fn server(&self, name: &str) -> ServerConfig {
        self.server_as(name, USER)
    }

    /// The server as seen by `user` ([`USER`] or [`SH_USER`]).
    pub fn server_as(&self, name: &str, user: &str) -> ServerConfig {
        ServerConfig {
            name: name.to_string(),
            host: "127.0.0.1".into(),
            port: self.port,
            user: user.into(),
            credential: Credential::Key {
                pem: env().client_key.clone(),
                passphrase: None,
            },
            host_key: None,
            known_runner: None,
            platform: None,
            runner_version: None,
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill_all();
    }
}

pub mod libc_sig {
    pub const KILL: &str = "KILL";
    pub const STOP: &str = "STOP";
    pub const CONT: &str = "CONT";
}

pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

fn stat_ppid(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &s[s.rfind(')')? + 2..];
    after.split_whitespace().nth(1)?.parse().ok()
}

fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Every process below `root` in the parent tree.
pub fn descendants(root: u32) -> Vec<u32> {
    let pids: Vec<(u32, u32)> = all_pids()
        .into_iter()
        .filter_map(|p| Some((p, stat_ppid(p)?)))
        .collect();
    let mut out = vec![];
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (c, pp) in &pids {
            if *pp == p {
                out.push(*c);
                frontier.push(*c);
            }
        }
    }
    out
}

/// Processes whose command line contains `marker`.
pub fn processes_with(marker: &str) -> Vec<(u32, String)> {
    all_pids()
        .into_iter()
        .filter_map(|p| {
            let raw = std::fs::read(format!("/proc/{p}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
            cmd.contains(marker).then_some((p, cmd))
        })
        .collect()
}

/// Polls `cond` until it holds or `timeout` passes.
/// Waits up to 10 s for `list` to come back empty; fails with `what` and what is left.
pub async fn assert_all_gone<T: std::fmt::Debug>(what: &str, mut list: impl FnMut() -> Vec<T>) {
    let gone = wait_for(Duration::from_secs(10), || list().is_empty()).await;
    assert!(gone, "{what}: {:?}", list());
}

pub async fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Executor config for tests: a deploy dir of its own (all instances share one home) and short
/// keepalives and backoffs.
pub fn config(tag: &str) -> SshConfig {
    SshConfig {
        deploy_dir: format!(".cache/cronium-test-{tag}-{}", std::process::id()),
        keepalive_interval: Duration::from_secs(1),
        keepalive_max: 2,
        connect_timeout: Duration::from_secs(10),
        deploy_backoff: Duration::from_millis(100),
        ..SshConfig::default()
    }
}

pub fn home_path(rel: &str) -> PathBuf {
    Path::new("/home").join(USER).join(rel)
}

/// A payload archive (tar.gz with manifest.yaml and the script) in `dir`.
pub struct Payload {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub sha256: String,
}

pub fn payload(interpreter: Interpreter, script: &str, timeout: Duration) -> Payload {
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        interpreter,
        entrypoint: format!("script.{}", interpreter.extension()),
        env: BTreeMap::new(),
        timeout_ms: timeout.as_millis() as u64,
        kill_grace_ms: 1000,
        max_output_bytes: 10 * 1024 * 1024,
        event: EventMeta {
            id: 1,
            name: "ssh-test".into(),
            version: 1,
        },
    };
    // JSON is a subset of YAML: the runner's YAML reader takes it.
    let manifest_text = serde_json::to_string_pretty(&manifest).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("payload.tar.gz");
    let file = std::fs::File::create(&path).unwrap();
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (name, body) in [
        ("manifest.yaml".to_string(), manifest_text.as_bytes()),
        (manifest.entrypoint.clone(), script.as_bytes()),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, name, body).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap().flush().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    use sha2::Digest;
    let sha256 = hex::encode(sha2::Sha256::digest(&bytes));
    Payload { dir, path, sha256 }
}

pub fn request(p: &Payload, timeout: Duration, server: &str) -> RunRequest {
    RunRequest {
        payload_path: p.path.clone(),
        payload_sha256: p.sha256.clone(),
        context: RunContext {
            job_id: 7,
            execution_id: 70,
            attempt: 1,
            trigger: "manual".into(),
            server: Some(server.into()),
            input: serde_json::json!({"who": "ssh-test"}),
            variables: BTreeMap::from([("greeting".to_string(), serde_json::json!("hello"))]),
            interpreters: BTreeMap::from([(Interpreter::Python, "/usr/bin/python3".to_string())]),
            ..Default::default()
        },
        timeout,
        kill_grace: Duration::from_secs(1),
        control: None,
    }
}

/// Collects the events of a run.
pub fn sink() -> (
    cronium_core::transport::EventSink,
    tokio::sync::mpsc::Receiver<RunnerEvent>,
) {
    tokio::sync::mpsc::channel(100_000)
}

pub fn drain(rx: &mut tokio::sync::mpsc::Receiver<RunnerEvent>) -> Vec<RunnerEvent> {
    let mut v = vec![];
    while let Ok(e) = rx.try_recv() {
        v.push(e);
    }
    v
}

pub fn log_lines(events: &[RunnerEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            RunnerEvent::Log { line, .. } => Some(line.clone()),
            _ => None,
        })
        .collect()
}

/// Removes an executor's deploy directory from the test user's home when dropped, also when the
/// test fails.
pub struct DirCleanup(PathBuf);

impl DirCleanup {
    pub fn new(ex: &cronium_ssh::SshExecutor) -> Self {
        DirCleanup(home_path(&ex.config().deploy_dir))
    }
}

impl Drop for DirCleanup {
    fn drop(&mut self) {
        if self.0.starts_with(Path::new("/home").join(USER)) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
