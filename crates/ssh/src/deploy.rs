//! Runner deployment: make sure the right `cronium-runner` is on the host, executable and intact,
//! and remember it. Upload over SFTP (or `cat > file` over an exec channel when the host has no
//! SFTP subsystem) to a temporary name, check the checksum, rename into place, ask it for its
//! version. A partial upload is removed. Not responsible for running anything with the runner.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use russh_sftp::client::SftpSession;
use russh_sftp::protocol::OpenFlags;
use tokio::io::AsyncWriteExt;

use crate::config::parse_version;
use crate::connection::{exec, Conn};
use crate::metrics::{add, inc, Metrics};
use crate::shell::quote;
use crate::{RunnerArtifact, ServerConfig, SshConfig, SshError};

/// How a deployment check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployOutcome {
    /// The runner was uploaded and verified.
    Deployed,
    /// The runner was known to be there (this process's cache, or the caller's
    /// [`crate::KnownRunner`]); the host was not asked.
    Cached,
    /// The runner was already on the host and passed the checksum and `--version` checks just
    /// now; nothing uploaded.
    Verified,
    Failed,
}

impl DeployOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            DeployOutcome::Deployed => "deployed",
            DeployOutcome::Cached => "cached",
            DeployOutcome::Verified => "verified",
            DeployOutcome::Failed => "failed",
        }
    }
}

/// What the caller stores in the deployment history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentRecord {
    pub server: String,
    pub version: String,
    pub sha256: String,
    /// Path of the runner on the host (relative to the login's home unless absolute).
    pub path: String,
    /// Unix milliseconds when the check started.
    pub at_ms: i64,
    pub outcome: DeployOutcome,
    /// Upload attempts made (0 when cached).
    pub attempts: u32,
    pub duration_ms: u64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    host: String,
    port: u16,
    user: String,
}

#[derive(Debug, Clone)]
struct CacheEntry {
    path: String,
    sha256: String,
    verified: Instant,
}

/// Per-server knowledge of deployed runners, plus a lock per server so that concurrent runs on
/// one host upload at most once.
#[derive(Default)]
pub(crate) struct DeployCache {
    entries: Mutex<HashMap<CacheKey, CacheEntry>>,
    /// When each server's entry was last invalidated (unix ms): a [`crate::KnownRunner`]
    /// verified before that is not trusted, whatever the caller's store still says.
    invalidated: Mutex<HashMap<CacheKey, i64>>,
    locks: Mutex<HashMap<CacheKey, Arc<tokio::sync::Mutex<()>>>>,
}

fn key(server: &ServerConfig) -> CacheKey {
    CacheKey {
        host: server.host.clone(),
        port: server.port,
        user: server.user.clone(),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl DeployCache {
    /// Forgets what is known about `server` (the binary vanished, or a run failed oddly).
    pub fn invalidate(&self, server: &ServerConfig) {
        if let Ok(mut e) = self.entries.lock() {
            e.remove(&key(server));
        }
        if let Ok(mut i) = self.invalidated.lock() {
            i.insert(key(server), now_ms());
        }
    }

    /// Fills the cache from the caller's [`crate::KnownRunner`] when it matches this runner and
    /// path, is younger than `max_age` and newer than the last invalidation. True when filled.
    fn trust_known(
        &self,
        server: &ServerConfig,
        runner: &RunnerArtifact,
        path: &str,
        max_age: Duration,
    ) -> bool {
        let Some(known) = &server.known_runner else {
            return false;
        };
        if known.path != path || known.sha256 != runner.sha256 {
            return false;
        }
        let invalidated = self
            .invalidated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key(server))
            .copied();
        if invalidated.is_some_and(|at| at >= known.verified_at_ms) {
            return false;
        }
        // A verification "in the future" (clock moved back) counts as just now.
        let age =
            Duration::from_millis(now_ms().saturating_sub(known.verified_at_ms).max(0) as u64);
        if age >= max_age {
            return false;
        }
        let verified = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.insert(
            key(server),
            CacheEntry {
                path: path.to_string(),
                sha256: runner.sha256.clone(),
                verified,
            },
        );
        true
    }

    fn lock_for(&self, server: &ServerConfig) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(key(server)).or_default().clone()
    }

    fn fresh(
        &self,
        server: &ServerConfig,
        runner: &RunnerArtifact,
        path: &str,
        max_age: Duration,
    ) -> bool {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(&key(server)).is_some_and(|e| {
            e.path == path && e.sha256 == runner.sha256 && e.verified.elapsed() < max_age
        })
    }

    fn store(&self, server: &ServerConfig, runner: &RunnerArtifact, path: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.insert(
            key(server),
            CacheEntry {
                path: path.to_string(),
                sha256: runner.sha256.clone(),
                verified: Instant::now(),
            },
        );
    }
}

/// Deployment context shared by the executor.
pub(crate) struct Deployer<'a> {
    pub cfg: &'a SshConfig,
    pub runner: &'a RunnerArtifact,
    pub cache: &'a DeployCache,
    pub metrics: &'a Metrics,
}

/// Output of a short command on the host that a deployment needs.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

impl Deployer<'_> {
    pub fn remote_path(&self) -> String {
        format!(
            "{}/{}",
            self.cfg.remote_deploy_dir(),
            self.runner.remote_name()
        )
    }

    /// Makes sure the runner is on the host. Always returns a record (also on failure, for the
    /// history); the error says why it failed.
    pub async fn ensure(
        &self,
        conn: &Conn,
        server: &ServerConfig,
    ) -> (DeploymentRecord, Result<String, SshError>) {
        let started = Instant::now();
        let at_ms = now_ms();
        let path = self.remote_path();
        inc(&self.metrics.deployments_total);
        let record = |outcome, attempts, error: Option<String>| DeploymentRecord {
            server: server.name.clone(),
            version: self.runner.version.clone(),
            sha256: self.runner.sha256.clone(),
            path: path.clone(),
            at_ms,
            outcome,
            attempts,
            duration_ms: started.elapsed().as_millis() as u64,
            error,
        };
        if self
            .cache
            .fresh(server, self.runner, &path, self.cfg.reverify_after)
        {
            inc(&self.metrics.deployments_cached);
            return (record(DeployOutcome::Cached, 0, None), Ok(path));
        }
        // One upload per host at a time; whoever waited finds the cache filled.
        let lock = self.cache.lock_for(server);
        let _guard = lock.lock().await;
        if self
            .cache
            .fresh(server, self.runner, &path, self.cfg.reverify_after)
        {
            inc(&self.metrics.deployments_cached);
            return (record(DeployOutcome::Cached, 0, None), Ok(path));
        }
        // A restarted agent: the caller's store remembers a recent verification.
        if self
            .cache
            .trust_known(server, self.runner, &path, self.cfg.reverify_after)
        {
            inc(&self.metrics.deployments_cached);
            return (record(DeployOutcome::Cached, 0, None), Ok(path));
        }
        // Not known (cache expired or invalidated): the binary may still be there.
        if self.verify(conn, &path).await.is_ok() {
            self.cache.store(server, self.runner, &path);
            inc(&self.metrics.deployments_cached);
            inc(&self.metrics.deployments_verified);
            return (record(DeployOutcome::Verified, 0, None), Ok(path));
        }
        let attempts = self.cfg.deploy_attempts.max(1);
        let mut last_err = String::new();
        for attempt in 1..=attempts {
            if attempt > 1 {
                let backoff = self.cfg.deploy_backoff * 2u32.saturating_pow(attempt - 2);
                tokio::time::sleep(backoff).await;
                if conn.handle.is_closed() {
                    last_err = format!("{last_err}; connection closed before attempt {attempt}");
                    break;
                }
            }
            match self.upload_once(conn, &path, attempt).await {
                Ok(()) => {
                    self.cache.store(server, self.runner, &path);
                    inc(&self.metrics.deployments_succeeded);
                    let rec = record(DeployOutcome::Deployed, attempt, None);
                    add(&self.metrics.deployment_ms_sum, rec.duration_ms);
                    inc(&self.metrics.deployment_count);
                    return (rec, Ok(path));
                }
                Err(e) => {
                    tracing::warn!(server = %server.name, attempt, error = %e, "runner deployment failed");
                    last_err = e;
                }
            }
        }
        self.cache.invalidate(server);
        inc(&self.metrics.deployments_failed);
        let reason = format!("after {attempts} attempt(s): {last_err}");
        let rec = record(DeployOutcome::Failed, attempts, Some(reason.clone()));
        add(&self.metrics.deployment_ms_sum, rec.duration_ms);
        inc(&self.metrics.deployment_count);
        (
            rec,
            Err(SshError::Deploy {
                server: server.name.clone(),
                reason,
                record: None,
            }),
        )
    }

    /// Checks the binary at `path`: checksum and `--version`.
    async fn verify(&self, conn: &Conn, path: &str) -> Result<(), String> {
        let q = quote(path);
        // The directory is created on the way: a first upload then needs no separate mkdir.
        let dir = quote(&self.cfg.remote_deploy_dir());
        let cmd = format!("mkdir -p {dir} 2>/dev/null; sha256sum {q} && {q} --version");
        let out = exec(conn, &cmd, None, STEP_TIMEOUT).await?;
        if !out.ok() {
            return Err(format!("verification failed: {}", out.stderr_str()));
        }
        self.check_output(&out.stdout_str())
    }

    fn check_output(&self, stdout: &str) -> Result<(), String> {
        let sum = stdout.split_whitespace().next().unwrap_or_default();
        if sum != self.runner.sha256 {
            return Err(format!(
                "checksum mismatch on the host: expected {}, found {sum}",
                self.runner.sha256
            ));
        }
        match parse_version(stdout) {
            Some(v) if v == self.runner.version => Ok(()),
            Some(v) => Err(format!(
                "the deployed runner reports version {v}, expected {}",
                self.runner.version
            )),
            None => Err("the deployed runner printed no version".into()),
        }
    }

    async fn upload_once(&self, conn: &Conn, path: &str, attempt: u32) -> Result<(), String> {
        inc(&self.metrics.uploads);
        let dir = self.cfg.remote_deploy_dir();
        // The verification before the first attempt already ran `mkdir -p`; a retry runs it on
        // its own to report precisely why the directory cannot be created.
        if attempt > 1 {
            let out = exec(
                conn,
                &format!("mkdir -p {}", quote(&dir)),
                None,
                STEP_TIMEOUT,
            )
            .await?;
            if !out.ok() {
                return Err(format!(
                    "cannot create the deploy directory {dir}: {}",
                    out.stderr_str()
                ));
            }
        }
        let bytes = tokio::fs::read(&self.runner.path).await.map_err(|e| {
            format!(
                "cannot read the runner binary {}: {e}",
                self.runner.path.display()
            )
        })?;
        let tmp = format!(
            "{dir}/.{}.part-{:08x}",
            self.runner.remote_name(),
            rand_u32()
        );
        let result = self.upload_and_install(conn, &bytes, &tmp, path).await;
        if result.is_err() {
            // Never leave a partial file behind; the rename is the last step, so `path` is
            // either the old complete binary or absent.
            let _ = exec(conn, &format!("rm -f {}", quote(&tmp)), None, STEP_TIMEOUT).await;
        }
        result
    }

    async fn upload_and_install(
        &self,
        conn: &Conn,
        bytes: &[u8],
        tmp: &str,
        path: &str,
    ) -> Result<(), String> {
        match sftp_upload(conn, bytes, tmp).await {
            Ok(()) => {}
            Err(SftpFailure::NoSubsystem(why)) => {
                tracing::info!(reason = %why, "no SFTP subsystem; uploading over an exec channel");
                let out = exec(
                    conn,
                    &format!("cat > {}", quote(tmp)),
                    Some(bytes),
                    STEP_TIMEOUT,
                )
                .await?;
                if !out.ok() {
                    return Err(format!("upload with cat failed: {}", out.stderr_str()));
                }
            }
            Err(SftpFailure::Other(e)) => return Err(format!("SFTP upload failed: {e}")),
        }
        let (qt, qp) = (quote(tmp), quote(path));
        let sum = quote(&format!("^{} ", self.runner.sha256));
        // Check the upload, then put it in place without ever replacing a good binary: a runner
        // that is running from it (another agent, another run) must keep a valid
        // /proc/self/exe. `ln` creates the name atomically or fails when it exists; only a bad
        // existing file is replaced.
        let cmd = format!(
            "chmod 755 {qt} && sha256sum {qt} | grep -q {sum} \
             || {{ echo 'the uploaded file has the wrong checksum' >&2; exit 1; }}; \
             ln {qt} {qp} 2>/dev/null || sha256sum {qp} 2>/dev/null | grep -q {sum} || mv -f {qt} {qp} || exit 1; \
             rm -f {qt}; echo {sha}; {qp} --version",
            sha = self.runner.sha256
        );
        let out = exec(conn, &cmd, None, STEP_TIMEOUT).await?;
        if !out.ok() {
            return Err(format!("install failed: {}", out.stderr_str()));
        }
        self.check_output(&out.stdout_str())
    }
}

enum SftpFailure {
    NoSubsystem(String),
    Other(String),
}

async fn sftp_upload(conn: &Conn, bytes: &[u8], tmp: &str) -> Result<(), SftpFailure> {
    let mut channel = conn
        .handle
        .channel_open_session()
        .await
        .map_err(|e| SftpFailure::Other(format!("cannot open a channel: {e}")))?;
    channel
        .request_subsystem(true, "sftp")
        .await
        .map_err(|e| SftpFailure::NoSubsystem(e.to_string()))?;
    // The host's answer to the request: a host without the subsystem says so at once (without
    // this, the SFTP client would wait 10 s for an answer to its init message).
    let answer = tokio::time::timeout(STEP_TIMEOUT, async {
        loop {
            match channel.wait().await {
                Some(russh::ChannelMsg::Success) => return Ok(()),
                Some(russh::ChannelMsg::Failure) => {
                    return Err("the host refused the sftp subsystem".to_string())
                }
                Some(russh::ChannelMsg::Close) | Some(russh::ChannelMsg::Eof) | None => {
                    return Err("the channel closed after the sftp subsystem request".to_string())
                }
                Some(_) => {}
            }
        }
    })
    .await;
    match answer {
        Ok(Ok(())) => {}
        Ok(Err(why)) => return Err(SftpFailure::NoSubsystem(why)),
        Err(_) => {
            return Err(SftpFailure::NoSubsystem(
                "no answer to the sftp subsystem request".into(),
            ))
        }
    }
    // A subsystem that starts but does not speak SFTP shows up as the session failing to
    // initialise.
    let sftp =
        match tokio::time::timeout(STEP_TIMEOUT, SftpSession::new(channel.into_stream())).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(SftpFailure::NoSubsystem(e.to_string())),
            Err(_) => return Err(SftpFailure::NoSubsystem("no SFTP answer".into())),
        };
    let upload = async {
        let mut file = sftp
            .open_with_flags(
                tmp,
                OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE,
            )
            .await
            .map_err(|e| format!("cannot create {tmp}: {e}"))?;
        file.write_all(bytes)
            .await
            .map_err(|e| format!("write to {tmp} failed: {e}"))?;
        file.shutdown()
            .await
            .map_err(|e| format!("closing {tmp} failed: {e}"))?;
        Ok::<(), String>(())
    };
    let r = tokio::time::timeout(STEP_TIMEOUT, upload).await;
    let _ = sftp.close().await;
    match r {
        Ok(r) => r.map_err(SftpFailure::Other),
        Err(_) => Err(SftpFailure::Other("SFTP upload timed out".into())),
    }
}

fn rand_u32() -> u32 {
    // Unique enough for a temporary name: time and a process-wide counter.
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    t ^ N.fetch_add(1, Ordering::Relaxed).wrapping_mul(2654435761)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Credential, KnownRunner};

    const PATH: &str = ".cache/cronium/cronium-runner-0.1.0-abababab";
    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn runner() -> RunnerArtifact {
        RunnerArtifact {
            path: "/nonexistent".into(),
            version: "0.1.0".into(),
            sha256: "ab".repeat(32),
            size: 1,
            platform: crate::Platform::local(),
        }
    }

    fn server(known: Option<KnownRunner>) -> ServerConfig {
        ServerConfig {
            name: "web".into(),
            host: "127.0.0.1".into(),
            port: 22,
            user: "deploy".into(),
            credential: Credential::Password("x".into()),
            host_key: None,
            known_runner: known,
            platform: None,
            runner_version: None,
        }
    }

    fn known(age_ms: i64) -> KnownRunner {
        KnownRunner {
            path: PATH.into(),
            sha256: "ab".repeat(32),
            verified_at_ms: now_ms() - age_ms,
        }
    }

    #[test]
    fn a_recent_matching_verification_is_trusted_and_fills_the_cache() {
        let cache = DeployCache::default();
        let s = server(Some(known(60_000)));
        assert!(!cache.fresh(&s, &runner(), PATH, DAY));
        assert!(cache.trust_known(&s, &runner(), PATH, DAY));
        assert!(cache.fresh(&s, &runner(), PATH, DAY));
        // The cache entry keeps the verification's age: it expires with it, not a day from now.
        assert!(!cache.fresh(&s, &runner(), PATH, Duration::from_secs(30)));
    }

    #[test]
    fn stale_foreign_or_missing_knowledge_is_not_trusted() {
        let cache = DeployCache::default();
        let r = runner();
        assert!(!cache.trust_known(&server(None), &r, PATH, DAY));
        let old = server(Some(known(25 * 3600 * 1000)));
        assert!(
            !cache.trust_known(&old, &r, PATH, DAY),
            "older than reverify_after"
        );
        let other_build = server(Some(KnownRunner {
            sha256: "cd".repeat(32),
            ..known(0)
        }));
        assert!(
            !cache.trust_known(&other_build, &r, PATH, DAY),
            "another build"
        );
        let elsewhere = server(Some(KnownRunner {
            path: "/opt/cronium/cronium-runner-0.1.0-abababab".into(),
            ..known(0)
        }));
        assert!(
            !cache.trust_known(&elsewhere, &r, PATH, DAY),
            "another deploy dir"
        );
        assert!(!cache.fresh(&old, &r, PATH, DAY));
    }

    #[test]
    fn an_error_in_this_process_outweighs_an_older_stored_verification() {
        let cache = DeployCache::default();
        let r = runner();
        let s = server(Some(known(1_000)));
        cache.invalidate(&s);
        assert!(
            !cache.trust_known(&s, &r, PATH, DAY),
            "verified before the invalidation"
        );
        // A verification after the invalidation (by another agent) is trusted again.
        let later = server(Some(KnownRunner {
            verified_at_ms: now_ms() + 5,
            ..known(0)
        }));
        assert!(cache.trust_known(&later, &r, PATH, DAY));
    }
}
