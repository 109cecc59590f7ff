//! Health checks over SSH against real sshd instances and the real runner: a check rides on the
//! idle connection a run gave back (no second login), logs in only when nothing is pooled, says
//! when no runner is deployed, and fails when the host is gone. Needs what `tests/ssh.rs` needs.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use cronium_protocol::{Interpreter, RunStatus};
use cronium_ssh::{DirectScript, HealthConnection, Mode, SshConfig, SshExecutor};
use support::*;
use tokio_util::sync::CancellationToken;

fn bash(script: &str) -> DirectScript {
    DirectScript {
        interpreter: Interpreter::Bash,
        script: script.into(),
        env: BTreeMap::new(),
    }
}

async fn executor(cfg: SshConfig) -> SshExecutor {
    SshExecutor::new(cfg, runner().await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_rides_on_the_connection_a_run_gave_back() {
    let sshd = Sshd::start();
    let work = tempfile::tempdir().unwrap();
    // The test login works in it, as in /tmp.
    std::fs::set_permissions(
        work.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    let cfg = SshConfig {
        work_dir: Some(work.path().display().to_string()),
        ..config("health-pooled")
    };
    let ex = executor(cfg).await;
    let _cleanup = DirCleanup::new(&ex);
    let (tx, mut contacts) = tokio::sync::mpsc::channel(8);
    assert!(ex.observe_contacts(tx.clone()));
    assert!(!ex.observe_contacts(tx), "one observer only");
    let server = sshd.server("health-pooled");

    // Nothing pooled yet: an after-run check has nothing to ride on and checks nothing.
    let none = ex
        .health(&server, HealthConnection::IdleOnly)
        .await
        .unwrap();
    assert!(none.is_none());
    assert_eq!(ex.metrics().health_checks, 0);

    let p = payload(Interpreter::Bash, "echo hi", Duration::from_secs(30));
    let req = request(&p, Duration::from_secs(30), "health-pooled");
    let (sink_tx, _rx) = sink();
    let run = ex
        .run(
            &server,
            Mode::RunnerSsh,
            &req,
            &bash(""),
            &sink_tx,
            CancellationToken::new(),
        )
        .await
        .expect("run");
    assert_eq!(run.finished.status, RunStatus::Succeeded);
    let contact = tokio::time::timeout(Duration::from_secs(5), contacts.recv())
        .await
        .expect("a contact after the run")
        .expect("channel open");
    assert_eq!(contact.server.name, "health-pooled");
    assert_eq!(contact.failure, None);

    let before = ex.metrics();
    let check = ex
        .health(&server, HealthConnection::IdleOnly)
        .await
        .unwrap()
        .expect("the idle connection is there");
    let after = ex.metrics();
    assert_eq!(after.pool_misses, before.pool_misses, "no second login");
    // Used in place, not leased: a run wanting the connection meanwhile would get it.
    assert_eq!(after.pool_hits, before.pool_hits);
    assert_eq!(after.health_checks, 1);
    assert_eq!(check.error, None);
    let h = check.reading.expect("a reading");
    assert_eq!(h.runner_version, runner().await.version);
    assert_eq!(h.work_dir.path, work.path().display().to_string());
    assert_eq!(h.deploy_dir.path, ex.config().deploy_dir);
    assert!(h.deploy_dir.total_bytes > 0 && h.memory_total_bytes > 0 && h.cpus > 0);
    // The interval's kind of check takes the idle connection too.
    let again = ex
        .health(&server, HealthConnection::PooledOrLogin)
        .await
        .unwrap();
    assert!(again.is_some_and(|c| c.reading.is_some()));
    assert_eq!(ex.metrics().pool_misses, before.pool_misses);
    assert_eq!(ex.idle_connections(&server), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_without_a_runner_and_of_a_stopped_host() {
    let mut sshd = Sshd::start();
    let ex = executor(config("health-bare")).await;
    let _cleanup = DirCleanup::new(&ex);
    let (tx, mut contacts) = tokio::sync::mpsc::channel(8);
    ex.observe_contacts(tx);
    let server = sshd.server("health-bare");

    // No connection pooled: the interval's check logs in (and pools the connection); the host
    // answers, but nothing is deployed there yet.
    let check = ex
        .health(&server, HealthConnection::PooledOrLogin)
        .await
        .unwrap()
        .expect("logged in");
    assert_eq!(check.reading, None);
    let why = check.error.unwrap();
    assert!(why.contains("no runner deployed"), "{why}");
    assert_eq!(ex.metrics().pool_misses, 1);
    assert_eq!(ex.idle_connections(&server), 1);

    // The host goes away: the check fails, and so does a run, whose contact says why.
    sshd.kill_all();
    let gone = ex.health(&server, HealthConnection::PooledOrLogin).await;
    assert!(gone.is_err(), "{gone:?}");
    assert!(ex.metrics().health_failures >= 1);
    let p = payload(Interpreter::Bash, "echo hi", Duration::from_secs(30));
    let req = request(&p, Duration::from_secs(30), "health-bare");
    let (sink_tx, _rx) = sink();
    let run = ex
        .run(
            &server,
            Mode::RunnerSsh,
            &req,
            &bash(""),
            &sink_tx,
            CancellationToken::new(),
        )
        .await;
    assert!(run.is_err());
    let contact = tokio::time::timeout(Duration::from_secs(5), contacts.recv())
        .await
        .unwrap()
        .unwrap();
    let failure = contact.failure.expect("a transport failure");
    assert!(failure.contains("health-bare"), "{failure}");
    assert!(ex.metrics().connection_failures >= 1);
}
