//! What the caller hands the executor: the server to reach, the executor's tuning, the runner
//! binary to deploy and the script for direct-ssh runs. Plain data plus validation; no I/O except
//! [`RunnerArtifact::from_path`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use cronium_protocol::Interpreter;
use sha2::{Digest, Sha256};

use crate::SshError;

/// A registered SSH server. Serde: the server sends it (credential included) to a remote agent
/// over its authenticated agent API.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct ServerConfig {
    /// The server's name in Cronium (used in messages and the deployment record).
    pub name: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub credential: Credential,
    /// Pinned host key in OpenSSH format (`ssh-ed25519 AAAA...`); `None` = trust on first use.
    pub host_key: Option<String>,
    /// The runner the caller's store remembers as verified on this host (by this or an earlier
    /// agent process). Trusted without checking the host while it is younger than
    /// [`SshConfig::reverify_after`] and matches the runner and path to use; a run that then
    /// finds it missing redeploys it.
    pub known_runner: Option<KnownRunner>,
    /// The OS and architecture the caller's store remembers for this host (detected on an
    /// earlier contact). `None`: the executor asks the host (`uname -s; uname -m`) before the
    /// first deployment and remembers the answer ([`crate::SshExecutor::detected_platform`]).
    pub platform: Option<Platform>,
    /// The runner version this server should run (its pin, or a pin on one of its tags);
    /// `None`: the executor's default ([`crate::SshExecutor::default_version`], the runner
    /// this Cronium ships with). No artifact of that version for the host's platform is an
    /// error of the execution ([`SshError::NoArtifact`]), never a silent other version.
    pub runner_version: Option<String>,
}

/// A host's (or a runner binary's) OS and architecture, normalised: `os` is `uname -s` in lower
/// case (`linux`), `arch` is `uname -m` with the aliases folded (`amd64` is `x86_64`, `arm64`
/// is `aarch64`).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Platform {
    pub os: String,
    pub arch: String,
}

impl Platform {
    /// From what `uname -s` and `uname -m` print (or a stored row). `None` when either is empty
    /// or not a plain name.
    pub fn new(os: &str, arch: &str) -> Option<Platform> {
        let plain = |v: &str| {
            !v.is_empty()
                && v.len() <= 64
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        };
        let os = os.trim().to_ascii_lowercase();
        let arch = match arch.trim().to_ascii_lowercase().as_str() {
            "amd64" | "x64" => "x86_64".to_string(),
            "arm64" | "armv8" | "armv8l" => "aarch64".to_string(),
            other => other.to_string(),
        };
        (plain(&os) && plain(&arch)).then_some(Platform { os, arch })
    }

    /// The machine this process runs on.
    pub fn local() -> Platform {
        Platform {
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)
    }
}

/// A runner deployment verified on a host: what the store keeps per server so that a restarted
/// agent does not re-check every host (a checksum of the 2 MB binary and a `--version` call)
/// before its first run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KnownRunner {
    /// Path on the host, as [`crate::DeploymentRecord::path`].
    pub path: String,
    pub sha256: String,
    /// Unix milliseconds of the verification (upload or check on the host).
    pub verified_at_ms: i64,
}

impl std::fmt::Debug for ServerConfig {
    // Hand-written so that credentials never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("host_key", &self.host_key)
            .field("known_runner", &self.known_runner)
            .field("platform", &self.platform)
            .field("runner_version", &self.runner_version)
            .finish_non_exhaustive()
    }
}

impl ServerConfig {
    pub(crate) fn validate(&self) -> Result<(), SshError> {
        let bad = |field, reason: &str| {
            Err(SshError::InvalidConfig {
                field,
                reason: reason.to_string(),
            })
        };
        if self.host.trim().is_empty() {
            return bad("host", "must not be empty");
        }
        if self.port == 0 {
            return bad("port", "must be between 1 and 65535");
        }
        if self.user.is_empty() {
            return bad("user", "must not be empty");
        }
        if let Some(k) = &self.host_key {
            if russh::keys::PublicKey::from_openssh(k.trim()).is_err() {
                return bad(
                    "host_key",
                    "is not an OpenSSH public key (expected e.g. 'ssh-ed25519 AAAA...')",
                );
            }
        }
        // The key itself is decoded when connecting (an encrypted key costs a KDF run, which a
        // warm run on a pooled connection must not pay); only emptiness is checked here.
        match &self.credential {
            Credential::Key { pem, .. } if pem.trim().is_empty() => {
                return bad("credential.key", "must not be empty");
            }
            Credential::Password(p) if p.is_empty() => {
                return bad("credential.password", "must not be empty");
            }
            _ => {}
        }
        Ok(())
    }

    pub(crate) fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// How the executor logs in.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub enum Credential {
    /// A private key in OpenSSH or PEM format, with its passphrase if it is encrypted.
    Key {
        pem: String,
        passphrase: Option<String>,
    },
    Password(String),
}

/// Tuning of the executor. [`Default`] gives the documented defaults.
#[derive(Debug, Clone)]
pub struct SshConfig {
    /// Connections kept (and opened at most at once) per server.
    pub pool_size: usize,
    /// An idle pooled connection older than this is closed instead of reused.
    pub idle_timeout: Duration,
    /// Silence from the server after which a keepalive is sent.
    pub keepalive_interval: Duration,
    /// Unanswered keepalives after which the connection counts as dead.
    pub keepalive_max: usize,
    /// TCP connect, handshake and authentication together.
    pub connect_timeout: Duration,
    /// Where runners are deployed: relative to the login's home, or absolute.
    pub deploy_dir: String,
    pub deploy_attempts: u32,
    /// Wait before the second deployment attempt; doubled for each further one.
    pub deploy_backoff: Duration,
    /// A cached deployment is checked on the host again after this long.
    pub reverify_after: Duration,
    /// runner-ssh keeps one `cronium-runner serve` per pooled connection and sends each run to
    /// it (no new SSH session, login shell or runner exec per run). Off: one exec channel per
    /// run, as it also falls back to when the serve mode cannot start.
    pub persistent_runner: bool,
    /// Where the runner makes each run's private directory on the hosts (`--work-base`); `None`:
    /// the runner's default (`$TMPDIR`, else `/dev/shm`, else `/tmp`).
    pub work_dir: Option<String>,
}

impl Default for SshConfig {
    fn default() -> Self {
        SshConfig {
            pool_size: 10,
            idle_timeout: Duration::from_secs(300),
            keepalive_interval: Duration::from_secs(5),
            keepalive_max: 3,
            connect_timeout: Duration::from_secs(10),
            deploy_dir: ".cache/cronium".into(),
            deploy_attempts: 3,
            deploy_backoff: Duration::from_secs(2),
            reverify_after: Duration::from_secs(24 * 3600),
            persistent_runner: true,
            work_dir: None,
        }
    }
}

impl SshConfig {
    /// ` --work-base DIR` for a runner command line (shell-quoted), or nothing.
    pub(crate) fn work_base_arg(&self) -> String {
        match self.work_dir.as_deref().map(str::trim) {
            Some(d) if !d.is_empty() => format!(" --work-base {}", crate::shell::quote(d)),
            _ => String::new(),
        }
    }

    /// The deploy directory as the remote shell and SFTP see it (`~/` dropped: both start in the
    /// login's home).
    pub(crate) fn remote_deploy_dir(&self) -> String {
        let d = self.deploy_dir.trim();
        let d = d.strip_prefix("~/").unwrap_or(d);
        let d = d.trim_end_matches('/');
        if d.is_empty() || d == "~" {
            ".".into()
        } else {
            d.into()
        }
    }
}

/// A runner binary to deploy (static), for one OS and architecture.
#[derive(Debug, Clone)]
pub struct RunnerArtifact {
    pub path: PathBuf,
    /// As printed by `cronium-runner --version` (`X.Y.Z`).
    pub version: String,
    /// SHA-256 of the file, hex.
    pub sha256: String,
    /// Size of the file in bytes.
    pub size: u64,
    /// Where it runs: from the ELF header (`e_machine`); a file that is not ELF (a wrapper
    /// script in tests) runs where this process runs.
    pub platform: Platform,
}

/// The name of the manifest `scripts/build-runner.sh` writes next to each binary:
/// `{"version": "X.Y.Z", "sha256": "..."}`. How the server knows the version of a binary it
/// cannot run (the aarch64 one on an x86_64 server).
pub const MANIFEST_NAME: &str = "cronium-runner.json";

/// The architecture of an ELF file from its header, `None` when it is not ELF (or an
/// architecture Cronium does not name).
fn elf_platform(bytes: &[u8]) -> Option<Platform> {
    if bytes.len() < 20 || &bytes[..4] != b"\x7fELF" {
        return None;
    }
    // e_machine, at offset 18, in the file's byte order (EI_DATA: 1 little, 2 big endian).
    let m = match bytes[5] {
        2 => u16::from_be_bytes([bytes[18], bytes[19]]),
        _ => u16::from_le_bytes([bytes[18], bytes[19]]),
    };
    let arch = match m {
        0x3e => "x86_64",
        0xb7 => "aarch64",
        0xf3 => "riscv64",
        0x28 => "arm",
        0x03 => "i686",
        _ => return None,
    };
    Some(Platform {
        os: "linux".into(),
        arch: arch.into(),
    })
}

impl RunnerArtifact {
    /// Reads the binary at `path`: hashes it, reads its platform from its header, and asks it
    /// for its version.
    pub async fn from_path(path: impl Into<PathBuf>) -> Result<Self, SshError> {
        let path = path.into();
        let bytes = tokio::fs::read(&path).await.map_err(|e| {
            SshError::Io(format!("cannot read runner binary {}: {e}", path.display()))
        })?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let platform = elf_platform(&bytes).unwrap_or_else(Platform::local);
        let size = bytes.len() as u64;
        let out = tokio::process::Command::new(&path)
            .arg("--version")
            .output()
            .await
            .map_err(|e| SshError::Io(format!("cannot run {} --version: {e}", path.display())))?;
        let version = parse_version(&String::from_utf8_lossy(&out.stdout)).ok_or_else(|| {
            SshError::Io(format!(
                "{} --version printed no version (expected 'cronium-runner X.Y.Z')",
                path.display()
            ))
        })?;
        Ok(RunnerArtifact {
            path,
            version,
            sha256,
            size,
            platform,
        })
    }

    /// Reads a binary built for another machine: its version comes from the manifest next to
    /// it ([`MANIFEST_NAME`]), whose `sha256` must be the file's (a manifest of another build is
    /// refused).
    pub async fn from_path_with_manifest(path: impl Into<PathBuf>) -> Result<Self, SshError> {
        let path = path.into();
        let bytes = tokio::fs::read(&path).await.map_err(|e| {
            SshError::Io(format!("cannot read runner binary {}: {e}", path.display()))
        })?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let platform = elf_platform(&bytes).ok_or_else(|| {
            SshError::Io(format!(
                "{} is not an ELF binary of a known architecture",
                path.display()
            ))
        })?;
        let manifest_path = path.with_file_name(MANIFEST_NAME);
        let text = tokio::fs::read_to_string(&manifest_path)
            .await
            .map_err(|e| {
                SshError::Io(format!(
                    "cannot read {} (written by scripts/build-runner.sh): {e}",
                    manifest_path.display()
                ))
            })?;
        let m: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| SshError::Io(format!("{}: {e}", manifest_path.display())))?;
        let field = |name: &str| {
            m.get(name)
                .and_then(|v| v.as_str())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .ok_or_else(|| {
                    SshError::Io(format!(
                        "{}: {name}: missing or not a non-empty string",
                        manifest_path.display()
                    ))
                })
        };
        let (version, listed) = (field("version")?, field("sha256")?);
        if !listed.eq_ignore_ascii_case(&sha256) {
            return Err(SshError::Io(format!(
                "{}: sha256 is {listed}, but {} has {sha256} (a manifest of another build)",
                manifest_path.display(),
                path.display()
            )));
        }
        Ok(RunnerArtifact {
            path,
            version,
            sha256,
            size: bytes.len() as u64,
            platform,
        })
    }

    /// The configured runner and the ones for other platforms shipped beside it: every
    /// `linux-*/cronium-runner` in the runner's directory (and in its parent, when the
    /// configured runner is itself in a `linux-*` directory). A binary for this machine is
    /// asked for its version; one for another machine needs its manifest. One artifact per
    /// platform: the configured runner wins for its own. Binaries that cannot be read are
    /// left out, each with the reason in the second list.
    pub async fn discover(configured: &std::path::Path) -> (Vec<RunnerArtifact>, Vec<String>) {
        let mut found: Vec<RunnerArtifact> = Vec::new();
        let mut problems = Vec::new();
        match RunnerArtifact::from_path(configured).await {
            Ok(a) => found.push(a),
            Err(e) => problems.push(e.to_string()),
        }
        let mut dirs = Vec::new();
        if let Some(dir) = configured.parent() {
            dirs.push(dir.to_path_buf());
            let in_arch_dir = dir
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("linux-"));
            if let (true, Some(up)) = (in_arch_dir, dir.parent()) {
                dirs.push(up.to_path_buf());
            }
        }
        let mut candidates = Vec::new();
        for dir in dirs {
            let Ok(mut rd) = tokio::fs::read_dir(&dir).await else {
                continue;
            };
            while let Ok(Some(entry)) = rd.next_entry().await {
                let name = entry.file_name();
                if name.to_str().is_some_and(|n| n.starts_with("linux-")) {
                    let bin = entry.path().join("cronium-runner");
                    if bin.is_file() {
                        candidates.push(bin);
                    }
                }
            }
        }
        candidates.sort();
        let local = Platform::local();
        for bin in candidates {
            let bytes_platform = match tokio::fs::read(&bin).await {
                Ok(b) => elf_platform(&b),
                Err(e) => {
                    problems.push(format!("cannot read runner binary {}: {e}", bin.display()));
                    continue;
                }
            };
            let artifact = match bytes_platform {
                Some(p) if p == local => RunnerArtifact::from_path(&bin).await,
                _ => RunnerArtifact::from_path_with_manifest(&bin).await,
            };
            match artifact {
                Ok(a) if found.iter().any(|f| f.platform == a.platform) => {
                    // The configured runner (or an earlier directory) already covers it.
                    let _ = a;
                }
                Ok(a) => found.push(a),
                Err(e) => problems.push(e.to_string()),
            }
        }
        (found, problems)
    }

    /// File name on the host: versioned so that several versions can coexist while agents roll.
    pub fn remote_name(&self) -> String {
        let sha8: String = self.sha256.chars().take(8).collect();
        format!("cronium-runner-{}-{}", self.version, sha8)
    }
}

/// Whether `name` (a file name in the deploy directory) is one of ours: exactly
/// `cronium-runner-VERSION-SHA8` as [`RunnerArtifact::remote_name`] makes it (VERSION of letters,
/// digits, `.`, `_`, `-`; SHA8 eight lower-case hex digits). Anything else (a temporary
/// `.cronium-runner-*.part-*`, an operator's `cronium-runner-notes.txt`) is not.
pub fn is_runner_file_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("cronium-runner-") else {
        return false;
    };
    let Some((version, sha8)) = rest.rsplit_once('-') else {
        return false;
    };
    !version.is_empty()
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && sha8.len() == 8
        && sha8
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

/// Extracts `X.Y.Z` from `cronium-runner X.Y.Z`.
pub(crate) fn parse_version(out: &str) -> Option<String> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix("cronium-runner "))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// How to run on a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    RunnerSsh,
    DirectSsh,
    Auto,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::RunnerSsh => "runner-ssh",
            Mode::DirectSsh => "direct-ssh",
            Mode::Auto => "auto",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = SshError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "runner-ssh" => Ok(Mode::RunnerSsh),
            "direct-ssh" => Ok(Mode::DirectSsh),
            "auto" => Ok(Mode::Auto),
            other => Err(SshError::InvalidRequest {
                field: "mode".into(),
                reason: format!("'{other}' is not one of runner-ssh, direct-ssh, auto"),
            }),
        }
    }
}

/// The script itself, for direct-ssh (and auto's fallback).
#[derive(Debug, Clone)]
pub struct DirectScript {
    pub interpreter: Interpreter,
    pub script: String,
    /// Environment of the script (event env merged with the run's env by the caller).
    pub env: BTreeMap<String, String>,
}

#[cfg(test)]
mod platform_tests {
    use super::*;

    #[test]
    fn uname_output_is_normalised() {
        let p = |os, arch| Platform::new(os, arch).map(|p| p.to_string());
        assert_eq!(p("Linux\n", "x86_64\n").as_deref(), Some("linux/x86_64"));
        assert_eq!(p("Linux", "amd64").as_deref(), Some("linux/x86_64"));
        assert_eq!(p("Linux", "arm64").as_deref(), Some("linux/aarch64"));
        assert_eq!(p("Linux", "aarch64").as_deref(), Some("linux/aarch64"));
        assert_eq!(p("Linux", "riscv64").as_deref(), Some("linux/riscv64"));
        assert_eq!(p("Darwin", "arm64").as_deref(), Some("darwin/aarch64"));
        assert_eq!(p("Linux", ""), None);
        assert_eq!(p("", "x86_64"), None);
        assert_eq!(p("Linux", "x86 64; rm -rf"), None);
    }

    #[test]
    fn only_our_runner_file_names_are_ours() {
        assert!(is_runner_file_name("cronium-runner-0.1.0-abcdef01"));
        assert!(is_runner_file_name("cronium-runner-0.1.0-next-abcdef01"));
        assert!(!is_runner_file_name("cronium-runner-notes.txt"));
        assert!(!is_runner_file_name("cronium-runner-0.1.0-ABCDEF01"));
        assert!(!is_runner_file_name("cronium-runner-0.1.0-abcdef0"));
        assert!(!is_runner_file_name("cronium-runner--abcdef01"));
        assert!(!is_runner_file_name(
            ".cronium-runner-0.1.0-abcdef01.part-00000001"
        ));
        assert!(!is_runner_file_name("cronium-runner-0.1 0-abcdef01"));
        assert!(!is_runner_file_name("cronium-runner-$(rm)-abcdef01"));
        assert!(!is_runner_file_name("cronium-runner"));
    }

    #[test]
    fn the_elf_header_names_the_architecture() {
        let header = |class_data: u8, machine: [u8; 2]| {
            let mut h = vec![0u8; 64];
            h[..4].copy_from_slice(b"\x7fELF");
            h[5] = class_data;
            h[18..20].copy_from_slice(&machine);
            h
        };
        let arch = |b: &[u8]| elf_platform(b).map(|p| p.arch);
        assert_eq!(arch(&header(1, [0x3e, 0])).as_deref(), Some("x86_64"));
        assert_eq!(arch(&header(1, [0xb7, 0])).as_deref(), Some("aarch64"));
        assert_eq!(arch(&header(2, [0, 0xb7])).as_deref(), Some("aarch64"));
        assert_eq!(arch(&header(1, [0x99, 0x99])), None);
        assert_eq!(arch(b"#!/bin/sh\necho cronium-runner 0.1.0\n"), None);
        assert_eq!(arch(b""), None);
    }
}
