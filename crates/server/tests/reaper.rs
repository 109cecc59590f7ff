//! The container reaper loop against a real Docker engine and a real store: when the store
//! cannot say which jobs are running, a pass removes nothing (regression: a store error used to
//! read as "nothing runs", and every container of ours would have been reaped).
//!
//! The bait is a real container labelled as ours, with a creation label far in the past; the
//! passes are given a `now` just past that container's grace, so that they can only ever reap
//! the bait (every container a real run creates carries today's date and is young at that
//! `now`), whatever else runs on the shared engine.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cronium_docker::{
    DockerConfig, DockerExecutor, LABEL_CREATED, LABEL_EXECUTION, LABEL_JOB, LABEL_MANAGED,
};
use cronium_server::background::reaper::{reap_once, ReapError};
use cronium_store::Store;

/// The static runner (the executor checks it is one): CRONIUM_STATIC_RUNNER, else the one
/// scripts/build-runner.sh builds.
fn static_runner() -> PathBuf {
    if let Ok(p) = std::env::var("CRONIUM_STATIC_RUNNER") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/runner/cronium-runner");
    assert!(
        p.is_file(),
        "no static runner: run scripts/build-runner.sh (or scripts/test.sh)"
    );
    std::fs::canonicalize(&p).unwrap_or(p)
}

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("run the docker CLI")
}

/// A stopped container labelled as one of ours, created (by its label) at epoch second
/// `created`; removed when dropped.
struct Bait(String);

impl Bait {
    fn create(job: i64, created: u64) -> Bait {
        let out = docker(&[
            "create",
            "--label",
            &format!("{LABEL_MANAGED}=true"),
            "--label",
            &format!("{LABEL_JOB}={job}"),
            "--label",
            &format!("{LABEL_EXECUTION}={job}"),
            "--label",
            &format!("{LABEL_CREATED}={created}"),
            "cronium/scratch-sh:1",
            "sleep",
            "300",
        ]);
        assert!(
            out.status.success(),
            "docker create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Bait(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn exists(&self) -> bool {
        docker(&["inspect", "--format", "{{.Id}}", &self.0])
            .status
            .success()
    }
}

impl Drop for Bait {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reaper_removes_nothing_when_it_cannot_read_the_running_jobs() {
    let executor = DockerExecutor::connect(DockerConfig::new(static_runner()))
        .await
        .expect("connect to the Docker engine");
    let grace = Duration::from_secs(600);
    assert_eq!(DockerConfig::new(static_runner()).reap_grace, grace);
    // Created at epoch second 1000 (by its label); the pass runs at second 1000 + grace + 1.
    let created = 1_000;
    let now = UNIX_EPOCH + Duration::from_secs(created) + grace + Duration::from_secs(1);
    assert!(now < SystemTime::now());
    let bait = Bait::create(9_100_000_000 + i64::from(std::process::id()), created);

    // A store that fails every query: its pool is closed.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}/cronium.db", dir.path().display());
    let broken = Store::open(&url).await.unwrap();
    broken.close().await;
    let err = reap_once(&broken, &executor, now)
        .await
        .expect_err("a pass without the running jobs must fail");
    assert!(matches!(err, ReapError::RunningJobs(_)), "{err}");
    assert!(
        err.to_string().contains("nothing was reaped"),
        "the error must say so: {err}"
    );
    assert!(
        bait.exists(),
        "the reaper removed a container it could not vouch for"
    );

    // With the store readable (no job running), the same pass reaps the bait: it was fair game.
    let store = Store::open(&url).await.unwrap();
    let report = reap_once(&store, &executor, now).await.expect("a pass");
    assert!(report.containers.contains(&bait.0), "{report:?}");
    assert!(!bait.exists());
}
