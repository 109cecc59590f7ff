//! The peers Cronium is measured against on the same hosts in the same run: parallel-ssh (the
//! Python library, driven by a small script) and Ansible (`ansible all -m raw`), both installed by
//! the benchmark from PyPI into a virtual environment made with the real Python binary (not the
//! slow pyenv shim, whose start-up would be charged to the peers).
//!
//! Not a wrapper around either tool: each is invoked the way its users would, and the benchmark
//! only times it and checks that every host answered.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum PeersError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{cmd} failed ({status}): {stderr}")]
    Command {
        cmd: String,
        status: String,
        stderr: String,
    },
    #[error("the parallel-ssh script printed no result line: {stdout}")]
    PsshOutput { stdout: String },
}

/// A virtual environment with parallel-ssh and ansible-core.
pub struct Venv {
    pub dir: PathBuf,
}

fn output(cmd: &mut Command) -> Result<std::process::Output, PeersError> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| PeersError::Io {
            what: shown.clone(),
            source,
        })?;
    if !out.status.success() {
        let mut stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        stderr.push_str(&String::from_utf8_lossy(&out.stdout));
        // The end of a long pip or ansible output is where the cause is.
        let tail: String = stderr
            .chars()
            .rev()
            .take(4000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(PeersError::Command {
            cmd: shown,
            status: out.status.to_string(),
            stderr: tail,
        });
    }
    Ok(out)
}

impl Venv {
    /// Creates (or reuses) the venv at `dir` and installs the peers into it.
    pub fn ensure(dir: &Path) -> Result<Venv, PeersError> {
        let venv = Venv {
            dir: dir.to_path_buf(),
        };
        let py = venv.python();
        let ready = py.exists()
            && Command::new(&py)
                .args(["-c", "import pssh.clients, ansible"])
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
            && venv.ansible().exists();
        if ready {
            return Ok(venv);
        }
        // The pyenv shim re-resolves the interpreter on every call; ask it once for the real one.
        let out = output(Command::new("python3").args(["-c", "import sys;print(sys.executable)"]))?;
        let real = String::from_utf8_lossy(&out.stdout).trim().to_string();
        eprintln!("creating a venv at {} with {real}", dir.display());
        output(Command::new(&real).args(["-m", "venv"]).arg(dir))?;
        eprintln!("pip install parallel-ssh ansible-core (once)");
        output(Command::new(&py).args([
            "-m",
            "pip",
            "install",
            "-q",
            "parallel-ssh",
            "ansible-core",
        ]))?;
        Ok(venv)
    }

    pub fn python(&self) -> PathBuf {
        self.dir.join("bin/python")
    }

    pub fn ansible(&self) -> PathBuf {
        self.dir.join("bin/ansible")
    }

    /// Installed versions, for the report.
    pub fn versions(&self) -> String {
        let script = "import importlib.metadata as m\n\
                      print('parallel-ssh', m.version('parallel-ssh'), '/ ansible-core', m.version('ansible-core'))";
        Command::new(self.python())
            .args(["-c", script])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    }
}

/// What the parallel-ssh script measured (seconds).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct PsshTimes {
    pub cold: Vec<f64>,
    pub warm: Vec<f64>,
    /// Machine-wide busy CPU per warm run (ms), read from /proc/stat like the Cronium figure.
    pub warm_cpu_ms: Option<f64>,
    /// CPU of the client process per warm run (ms).
    pub warm_client_cpu_ms: Option<f64>,
}

/// The parallel-ssh driver: cold = a new ParallelSSHClient per sample (new connections);
/// warm = one client reused (its connections stay open). Every host must exit 0.
const PSSH_SCRIPT: &str = r#"
import json, os, sys, time
from pssh.clients import ParallelSSHClient
from pssh.config import HostConfig

cfg = json.loads(sys.argv[1])
hosts = ['127.0.0.1'] * len(cfg['ports'])
host_config = [HostConfig(port=p, user=cfg['user'], private_key=cfg['key'], allow_agent=False, identity_auth=False) for p in cfg['ports']]

def once(client):
    out = client.run_command('true')
    client.join(out)
    codes = [o.exit_code for o in out]
    if len(codes) != len(hosts) or any(c != 0 for c in codes):
        raise SystemExit('parallel-ssh: not every host exited 0: %r' % (codes,))

def busy_ms():
    f = [float(x) for x in open('/proc/stat').readline().split()[1:]]
    return (f[0] + f[1] + f[2] + f[5] + f[6]) * 10.0

def client_ms():
    t = os.times()
    return (t.user + t.system) * 1000.0

def new_client():
    return ParallelSSHClient(hosts, host_config=host_config, pool_size=len(hosts), num_retries=1, timeout=30)

cold = []
for _ in range(cfg['cold']):
    t = time.perf_counter()
    c = new_client()
    once(c)
    cold.append(time.perf_counter() - t)
    del c

client = new_client()
once(client)  # opens the connections; not a warm sample
warm = []
cpu0, cl0 = busy_ms(), client_ms()
for _ in range(cfg['warm']):
    t = time.perf_counter()
    once(client)
    warm.append(time.perf_counter() - t)
k = max(1, cfg['warm'])
res = {'cold': cold, 'warm': warm, 'warm_cpu_ms': (busy_ms() - cpu0) / k,
       'warm_client_cpu_ms': (client_ms() - cl0) / k}
print('RESULT ' + json.dumps(res))
"#;

/// Runs the parallel-ssh measurement against `ports`.
pub fn parallel_ssh(
    venv: &Venv,
    ports: &[u16],
    user: &str,
    key: &Path,
    cold: usize,
    warm: usize,
) -> Result<PsshTimes, PeersError> {
    let cfg = serde_json::json!({
        "ports": ports, "user": user, "key": key, "cold": cold, "warm": warm,
    });
    let out = output(
        Command::new(venv.python())
            .args(["-c", PSSH_SCRIPT])
            .arg(cfg.to_string()),
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .and_then(|j| serde_json::from_str(j).ok())
        .ok_or(PeersError::PsshOutput { stdout })
}

/// One `ansible all -m raw -a true -f 50` over `ports`, timed as a whole command. Each call gets a
/// fresh ControlPath directory so that it opens new connections (Ansible's ControlPersist would
/// otherwise reuse the previous call's masters and measure something no cold run sees).
pub fn ansible_once(
    venv: &Venv,
    ports: &[u16],
    user: &str,
    key: &Path,
    work: &Path,
) -> Result<Duration, PeersError> {
    let inv = work.join("inventory.ini");
    let mut text = String::from("[bench]\n");
    for (i, p) in ports.iter().enumerate() {
        text.push_str(&format!(
            "h{i} ansible_host=127.0.0.1 ansible_port={p} ansible_user={user} \
             ansible_ssh_private_key_file={}\n",
            key.display()
        ));
    }
    std::fs::write(&inv, text).map_err(|source| PeersError::Io {
        what: format!("write {}", inv.display()),
        source,
    })?;
    let cp = tempfile::Builder::new()
        .prefix("cp-")
        .tempdir_in(work)
        .map_err(|source| PeersError::Io {
            what: "create an ansible control path dir".into(),
            source,
        })?;
    let mut cmd = Command::new(venv.ansible());
    cmd.arg("all")
        .arg("-i")
        .arg(&inv)
        .args(["-m", "raw", "-a", "true", "-f", "50"])
        .env("ANSIBLE_HOST_KEY_CHECKING", "False")
        .env("ANSIBLE_SSH_CONTROL_PATH_DIR", cp.path())
        .env("ANSIBLE_LOCAL_TEMP", work.join("ansible-tmp"))
        .env("ANSIBLE_NOCOLOR", "1")
        // venv/bin on PATH so that ansible's own helpers resolve to the venv, not the pyenv shim.
        .env(
            "PATH",
            format!(
                "{}:{}",
                venv.dir.join("bin").display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        );
    let t = Instant::now();
    output(&mut cmd)?;
    let took = t.elapsed();
    // Close the control masters this call left (they would hold sessions for 60 s).
    for entry in std::fs::read_dir(cp.path()).into_iter().flatten().flatten() {
        let _ = Command::new("ssh")
            .args(["-o", &format!("ControlPath={}", entry.path().display())])
            .args(["-O", "exit", "dummy"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    Ok(took)
}
