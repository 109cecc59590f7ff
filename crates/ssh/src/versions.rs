//! Runner versions on a host without running anything: deploy a given version (a rollout's
//! batch, a rollback, `cronium server deploy`), check the deployed binary by running its
//! `health` command, and remove the versions a host no longer needs.
//!
//! Not for choosing which version a server should run (the caller's pins decide and pass it in
//! [`ServerConfig::runner_version`]) nor for recording anything (the caller stores the
//! [`DeploymentRecord`]).

use cronium_protocol::Health;

use crate::connection::exec;
use crate::deploy::Deployer;
use crate::shell::quote;
use crate::{
    is_runner_file_name, DeploymentRecord, RunnerArtifact, ServerConfig, SshError, SshExecutor,
};

/// A runner in place on a host.
#[derive(Debug, Clone)]
pub struct DeployedRunner {
    /// Path on the host (relative to the login's home unless absolute).
    pub path: String,
    pub artifact: RunnerArtifact,
}

/// What [`SshExecutor::deploy_version`] did: the record (none when the host could not be
/// reached or its platform has no runner of that version) and the outcome.
#[derive(Debug)]
pub struct VersionDeploy {
    pub record: Option<DeploymentRecord>,
    pub result: Result<DeployedRunner, SshError>,
}

impl SshExecutor {
    /// Makes sure `server`'s wanted version ([`ServerConfig::runner_version`], else the
    /// default) is on the host: verified in place, or uploaded (the same steps as before a run:
    /// checksum, rename, `--version`). Nothing is run.
    pub async fn deploy_version(&self, server: &ServerConfig) -> VersionDeploy {
        let fail = |e| VersionDeploy {
            record: None,
            result: Err(e),
        };
        if let Err(e) = server.validate() {
            return fail(e);
        }
        let lease = match self.inner.pool.get(server).await {
            Ok(l) => l,
            Err(e) => return fail(e),
        };
        let runner = match self.select(&lease.conn, server).await {
            Ok(r) => r,
            Err(e) => return fail(e),
        };
        let deployer = Deployer {
            cfg: &self.inner.cfg,
            runner: &runner,
            cache: &self.inner.cache,
            metrics: &self.inner.metrics,
        };
        let (record, path) = deployer.ensure(&lease.conn, server).await;
        let result = path.map(|path| DeployedRunner {
            path,
            artifact: runner.clone(),
        });
        let mut lease = lease;
        if result.is_err() && lease.conn.handle.is_closed() {
            lease.mark_broken();
        }
        VersionDeploy {
            record: Some(record),
            result,
        }
    }

    /// Runs `PATH health` of a deployed runner and checks that it answers with a health report
    /// of the expected version: the proof that the new binary starts on that host (its libc,
    /// its kernel, its `noexec` mounts), beyond the checksum.
    pub async fn check_runner(
        &self,
        server: &ServerConfig,
        deployed: &DeployedRunner,
    ) -> Result<(), SshError> {
        let lease = self.inner.pool.get(server).await?;
        let cfg = &self.inner.cfg;
        let cmd = format!(
            "{} health --deploy-dir {}",
            quote(&deployed.path),
            quote(&cfg.remote_deploy_dir())
        );
        let failed = |reason: String| SshError::Deploy {
            server: server.name.clone(),
            reason,
            record: None,
        };
        let out = exec(&lease.conn, &cmd, None, cfg.connect_timeout)
            .await
            .map_err(|e| failed(format!("health check of {}: {e}", deployed.path)))?;
        if !out.ok() {
            return Err(failed(format!(
                "`{} health` failed ({}): {}",
                deployed.path,
                out.status
                    .map_or_else(|| "no exit status".into(), |c| format!("exit status {c}")),
                out.stderr_str().chars().take(300).collect::<String>()
            )));
        }
        let h: Health = serde_json::from_str(out.stdout_str().trim()).map_err(|e| {
            failed(format!(
                "`{} health` printed no health report: {e}",
                deployed.path
            ))
        })?;
        if h.runner_version != deployed.artifact.version {
            return Err(failed(format!(
                "`{} health` reports version {}, expected {}",
                deployed.path, h.runner_version, deployed.artifact.version
            )));
        }
        Ok(())
    }

    /// Removes from `server`'s deploy directory every runner binary of ours
    /// ([`is_runner_file_name`]) whose name is not in `keep` (the current and previous
    /// versions' [`RunnerArtifact::remote_name`]). Files that are not ours are never touched.
    /// Returns the names removed.
    pub async fn remove_old_runners(
        &self,
        server: &ServerConfig,
        keep: &[String],
    ) -> Result<Vec<String>, SshError> {
        let lease = self.inner.pool.get(server).await?;
        let cfg = &self.inner.cfg;
        let dir = cfg.remote_deploy_dir();
        let failed = |reason: String| SshError::Command {
            server: server.name.clone(),
            reason,
        };
        // `ls -A` of the directory itself: one name per line (names of ours have no newline).
        let out = exec(
            &lease.conn,
            &format!("ls -1A -- {}", quote(&dir)),
            None,
            cfg.connect_timeout,
        )
        .await
        .map_err(|e| failed(format!("listing {dir}: {e}")))?;
        if !out.ok() {
            return Err(failed(format!(
                "listing {dir}: {}",
                out.stderr_str().chars().take(300).collect::<String>()
            )));
        }
        let doomed: Vec<String> = out
            .stdout_str()
            .lines()
            .map(str::trim_end)
            .filter(|n| is_runner_file_name(n) && !keep.iter().any(|k| k == n))
            .map(str::to_string)
            .collect();
        if doomed.is_empty() {
            return Ok(doomed);
        }
        let paths: Vec<String> = doomed
            .iter()
            .map(|n| quote(&format!("{dir}/{n}")))
            .collect();
        let out = exec(
            &lease.conn,
            &format!("rm -f -- {}", paths.join(" ")),
            None,
            cfg.connect_timeout,
        )
        .await
        .map_err(|e| failed(format!("removing old runners: {e}")))?;
        if !out.ok() {
            return Err(failed(format!(
                "removing old runners from {dir}: {}",
                out.stderr_str().chars().take(300).collect::<String>()
            )));
        }
        Ok(doomed)
    }
}
