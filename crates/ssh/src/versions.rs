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

#[cfg(test)]
mod tests {
    use crate::{
        Credential, Platform, RunnerArtifact, ServerConfig, SshConfig, SshError, SshExecutor,
    };

    fn artifact(version: &str, arch: &str, sha: char) -> RunnerArtifact {
        RunnerArtifact {
            path: "/nonexistent".into(),
            version: version.into(),
            sha256: std::iter::repeat_n(sha, 64).collect(),
            size: 1,
            platform: Platform {
                os: "linux".into(),
                arch: arch.into(),
            },
        }
    }

    fn server(arch: &str, version: Option<&str>) -> ServerConfig {
        ServerConfig {
            name: "web".into(),
            host: "127.0.0.1".into(),
            port: 22,
            user: "deploy".into(),
            credential: Credential::Password("x".into()),
            host_key: None,
            known_runner: None,
            platform: Platform::new("Linux", arch),
            runner_version: version.map(str::to_string),
        }
    }

    #[test]
    fn the_wanted_version_picks_the_artifact_and_a_missing_one_is_an_error() {
        let ex = SshExecutor::with_runners(
            SshConfig::default(),
            vec![
                artifact("0.1.0", "x86_64", 'a'),
                artifact("0.2.0", "x86_64", 'b'),
                artifact("0.1.0", "aarch64", 'c'),
            ],
        );
        assert_eq!(ex.default_version(), "0.1.0");
        let pick = |arch, v| {
            let s = server(arch, v);
            let p = s.platform.clone().unwrap();
            ex.artifact_for(&s, &p)
        };
        assert_eq!(pick("x86_64", None).unwrap().version, "0.1.0");
        assert_eq!(
            pick("x86_64", Some("0.2.0")).unwrap().sha256,
            "b".repeat(64)
        );
        assert_eq!(pick("aarch64", None).unwrap().sha256, "c".repeat(64));
        // A version the platform does not have: an error naming server, platform and version
        // (never another version, and not the "unsupported platform" auto mode falls back on).
        match pick("aarch64", Some("0.2.0")) {
            Err(e @ SshError::NoArtifact { .. }) => assert_eq!(
                e.to_string(),
                "no runner 0.2.0 for server 'web' (linux/aarch64): versions registered for linux/aarch64: 0.1.0"
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            pick("riscv64", None),
            Err(SshError::UnsupportedPlatform { .. })
        ));
    }

    #[test]
    fn a_version_means_one_build() {
        let ex =
            SshExecutor::with_runners(SshConfig::default(), vec![artifact("0.1.0", "x86_64", 'a')]);
        assert_eq!(ex.add_runner(artifact("0.1.0", "x86_64", 'a')), Ok(false));
        let e = ex.add_runner(artifact("0.1.0", "x86_64", 'd')).unwrap_err();
        assert!(e.contains("already registered with another build"), "{e}");
        assert_eq!(ex.add_runner(artifact("0.2.0", "x86_64", 'd')), Ok(true));
        assert_eq!(
            ex.versions_for(&Platform::new("linux", "x86_64").unwrap()),
            "0.1.0, 0.2.0"
        );
        assert_eq!(ex.runners().len(), 2);
    }
}
