//! The benchmark's SSH hosts: N OpenSSH `sshd` instances on 127.0.0.1, each with its own port and
//! host key, all accepting one client ed25519 key generated here for the login user
//! `cronium-test` (prepared by scripts/test-sshd.sh). The same approach as
//! crates/ssh/tests/support, so the figures compare with the ssh crate's own tests.
//!
//! Not a general sshd manager: the config is fixed to what a fan-out benchmark needs. Every sshd
//! (with its sessions) is killed when the [`Fleet`] is dropped, and by the ctrl-c handler.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::procs;

/// The login user every host accepts.
pub const USER: &str = "cronium-test";

#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{cmd} failed with {status}")]
    Command { cmd: String, status: String },
    #[error("sshd on port {port} exited before accepting connections: {log}")]
    SshdExited { port: u16, log: String },
    #[error("sshd on port {port} did not answer with an SSH banner within 10 s")]
    SshdTimeout { port: u16 },
    #[error("a fleet needs at least one host (got 0)")]
    Empty,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HostsError {
    let what = what.into();
    move |source| HostsError::Io { what, source }
}

/// The client key every host trusts.
pub struct ClientKey {
    pub path: PathBuf,
    pub pem: String,
    pub public: String,
}

/// One running sshd.
pub struct Host {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

/// N sshd instances and the client key; owns a temporary directory holding all their files.
pub struct Fleet {
    pub hosts: Vec<Host>,
    pub key: ClientKey,
    _dir: tempfile::TempDir,
}

fn run(cmd: &mut Command) -> Result<(), HostsError> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .stdout(Stdio::null())
        .status()
        .map_err(io(shown.clone()))?;
    if status.success() {
        Ok(())
    } else {
        Err(HostsError::Command {
            cmd: shown,
            status: status.to_string(),
        })
    }
}

fn keygen(path: &Path, comment: &str) -> Result<(), HostsError> {
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path))
}

fn free_port() -> Result<u16, HostsError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io("bind a free port"))?;
    Ok(l.local_addr().map_err(io("read a bound port"))?.port())
}

impl Fleet {
    /// Prepares the machine (scripts/test-sshd.sh under `workspace`), generates the client key
    /// and starts `n` sshd instances, returning once each answers with its banner.
    pub fn start(workspace: &Path, n: usize) -> Result<Fleet, HostsError> {
        if n == 0 {
            return Err(HostsError::Empty);
        }
        run(&mut Command::new(workspace.join("scripts/test-sshd.sh")))?;
        let dir = tempfile::Builder::new()
            .prefix("cronium-bench-hosts-")
            .tempdir()
            .map_err(io("create the hosts directory"))?;
        let key_path = dir.path().join("client_ed25519");
        keygen(&key_path, "cronium-bench-remote")?;
        let key = ClientKey {
            pem: std::fs::read_to_string(&key_path).map_err(io("read the client key"))?,
            public: std::fs::read_to_string(key_path.with_extension("pub"))
                .map_err(io("read the client public key"))?,
            path: key_path,
        };
        let mut fleet = Fleet {
            hosts: Vec::with_capacity(n),
            key,
            _dir: dir,
        };
        for i in 0..n {
            let host_dir = fleet._dir.path().join(format!("host{i}"));
            std::fs::create_dir(&host_dir).map_err(io("create a host directory"))?;
            std::fs::write(host_dir.join("authorized_keys"), &fleet.key.public)
                .map_err(io("write authorized_keys"))?;
            keygen(&host_dir.join("host_ed25519"), &format!("host{i}"))?;
            let mut host = Host {
                port: free_port()?,
                dir: host_dir,
                child: None,
            };
            host.spawn()?;
            // Pushed at once so that a later failure still kills this one in Drop.
            fleet.hosts.push(host);
        }
        for h in &mut fleet.hosts {
            h.wait_ready()?;
        }
        Ok(fleet)
    }

    pub fn ports(&self) -> Vec<u16> {
        self.hosts.iter().map(|h| h.port).collect()
    }

    /// CPU (ms) used so far on the first `n` hosts: each sshd listener with everything it has
    /// reaped (the per-connection sshd processes with their sessions, shells, runners and
    /// scripts). A connection counts once its sshd has exited, that is after it closed.
    pub fn cpu_ms(&self, n: usize) -> Option<f64> {
        self.hosts
            .iter()
            .take(n)
            .map(|h| procs::cpu_ms(h.pid()?, true))
            .sum()
    }

    /// CPU (ms) used so far on the first `n` hosts, open connections included (every process
    /// below each listener, live or reaped: [`procs::tree_cpu_ms`]).
    pub fn tree_cpu_ms(&self, n: usize) -> Option<f64> {
        let roots: Vec<u32> = self.hosts.iter().take(n).filter_map(Host::pid).collect();
        procs::tree_cpu_ms(&roots)
    }

    /// Waits (up to `limit`) until no connection to the first `n` hosts is left open, so that
    /// [`Fleet::cpu_ms`] includes all of them.
    pub fn wait_idle(&self, n: usize, limit: Duration) {
        // A listener's direct children are its connections: /proc/PID/task/PID/children lists
        // them without scanning the whole process table for every host.
        let has_children = |pid: u32| {
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .is_ok_and(|c| !c.trim().is_empty())
        };
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if !self
                .hosts
                .iter()
                .take(n)
                .filter_map(Host::pid)
                .any(has_children)
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Host {
    fn spawn(&mut self) -> Result<(), HostsError> {
        let d = self.dir.display();
        // MaxStartups high: a 50-way cold fan-out opens 50 unauthenticated connections at once,
        // which sshd's default (10:30:100) would start dropping.
        let cfg = format!(
            "ListenAddress 127.0.0.1\nPort {port}\nHostKey {d}/host_ed25519\nPidFile none\n\
             AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nAllowUsers {USER}\n\
             MaxStartups 200:30:300\nMaxSessions 100\nLogLevel ERROR\nClientAliveInterval 0\n\
             Subsystem sftp /usr/lib/openssh/sftp-server\n",
            port = self.port
        );
        std::fs::write(self.dir.join("sshd_config"), cfg).map_err(io("write sshd_config"))?;
        let log =
            std::fs::File::create(self.dir.join("sshd.log")).map_err(io("create sshd.log"))?;
        let child = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(self.dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(io("start /usr/sbin/sshd"))?;
        procs::register(child.id());
        self.child = Some(child);
        Ok(())
    }

    fn wait_ready(&mut self) -> Result<(), HostsError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 4];
                if s.read_exact(&mut buf).is_ok() && &buf == b"SSH-" {
                    return Ok(());
                }
            }
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return Err(HostsError::SshdExited {
                    port: self.port,
                    log: std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default(),
                });
            }
            if Instant::now() >= deadline {
                return Err(HostsError::SshdTimeout { port: self.port });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The listener's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Kills the listener and every session and user process below it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            procs::kill_tree(c.id());
            procs::unregister(c.id());
            let _ = c.wait();
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop();
    }
}
