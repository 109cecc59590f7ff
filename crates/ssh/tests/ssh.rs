//! Integration tests of cronium-ssh against real OpenSSH sshd instances on 127.0.0.1 and the real
//! cronium-runner. Needs root (creates the `cronium-test` user via scripts/test-sshd.sh) and a
//! built runner (`cargo build -p cronium-runner`, or CRONIUM_RUNNER_BIN).

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cronium_protocol::{Interpreter, RunStatus, RunnerEvent, EXIT_TIMEOUT};
use cronium_ssh::{
    Credential, DeployOutcome, DirectScript, HostKeyStatus, Mode, SshError, SshExecutor,
};
use support::*;
use tokio_util::sync::CancellationToken;

fn bash(script: &str) -> DirectScript {
    DirectScript {
        interpreter: Interpreter::Bash,
        script: script.into(),
        env: BTreeMap::new(),
    }
}

async fn executor(tag: &str) -> SshExecutor {
    SshExecutor::new(config(tag), runner().await)
}

/// One runner-ssh run of `req` on `server`, never cancelled: its result and the events it sent.
async fn run_runner_ssh(
    ex: &SshExecutor,
    server: &cronium_ssh::ServerConfig,
    req: &cronium_core::transport::RunRequest,
) -> (Result<cronium_ssh::RemoteRun, SshError>, Vec<RunnerEvent>) {
    let (tx, mut rx) = sink();
    let run = ex
        .run(
            server,
            Mode::RunnerSsh,
            req,
            &bash(""),
            &tx,
            CancellationToken::new(),
        )
        .await;
    (run, drain(&mut rx))
}

fn same_key(a: &str, b: &str) -> bool {
    let f = |s: &str| s.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    f(a) == f(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_ssh_deploys_runs_helpers_and_caches() {
    let sshd = Sshd::start();
    let ex = executor("helpers").await;
    let _cleanup = DirCleanup::new(&ex);
    let server = sshd.server("helpers");
    let script = "echo hello-from-runner\n\
                  cronium.output result 42\n\
                  cronium.setVariable counter 3\n\
                  echo \"greeting=$(cronium.getVariable greeting)\"\n";
    let p = payload(Interpreter::Bash, script, Duration::from_secs(30));
    let req = request(&p, Duration::from_secs(30), "helpers");
    let (tx, mut rx) = sink();
    let run = ex
        .run(
            &server,
            Mode::RunnerSsh,
            &req,
            &bash(""),
            &tx,
            CancellationToken::new(),
        )
        .await
        .expect("first run");
    let events = drain(&mut rx);
    assert_eq!(run.finished.status, RunStatus::Succeeded, "{events:#?}");
    assert_eq!(run.mode_used, Mode::RunnerSsh);
    let lines = log_lines(&events);
    assert!(lines.iter().any(|l| l == "hello-from-runner"), "{lines:?}");
    assert!(lines.iter().any(|l| l == "greeting=hello"), "{lines:?}");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, RunnerEvent::Output { value } if value["result"] == 42)),
        "no output event: {events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, RunnerEvent::Variable { name, .. } if name == "counter")),
        "no variable event: {events:#?}"
    );
    assert!(matches!(events.last(), Some(RunnerEvent::Finished(_))));
    let dep = run.deployment.expect("deployment record");
    assert_eq!(dep.outcome, DeployOutcome::Deployed);
    assert_eq!(dep.attempts, 1);
    assert!(same_key(&run.observed_host_key, &sshd.host_key()));
    assert_eq!(run.runner_version.as_deref(), Some(dep.version.as_str()));
    // The binary is in place under its versioned name, executable, with no partial upload left.
    let dir = home_path(&ex.config().deploy_dir);
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let expected = format!("cronium-runner-{}-{}", dep.version, &dep.sha256[..8]);
    assert_eq!(names, vec![expected.clone()]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join(&expected))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);

    // Second run: cache hit, no upload, pooled connection.
    let before = ex.metrics();
    let run2 = ex
        .run(
            &server,
            Mode::RunnerSsh,
            &req,
            &bash(""),
            &tx,
            CancellationToken::new(),
        )
        .await
        .expect("second run");
    assert_eq!(run2.finished.status, RunStatus::Succeeded);
    assert_eq!(run2.deployment.unwrap().outcome, DeployOutcome::Cached);
    let after = ex.metrics();
    assert_eq!(after.uploads, before.uploads, "second run uploaded again");
    assert_eq!(after.deployments_cached, before.deployments_cached + 1);
    assert_eq!(after.pool_hits, before.pool_hits + 1);
    assert_eq!(after.executions_succeeded, 2);

    // A fresh executor (agent restart) finds the binary on the host: verified, not uploaded.
    let ex2 = SshExecutor::new(ex.config().clone(), runner().await);
    let run3 = ex2
        .run(
            &server,
            Mode::RunnerSsh,
            &req,
            &bash(""),
            &tx,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    let dep3 = run3.deployment.unwrap();
    assert_eq!(dep3.outcome, DeployOutcome::Verified);
    assert_eq!(
        (ex2.metrics().uploads, ex2.metrics().deployments_verified),
        (0, 1)
    );

    // A fresh executor given the stored verification trusts it: the host is not asked.
    let known = cronium_ssh::KnownRunner {
        path: dep3.path.clone(),
        sha256: dep3.sha256.clone(),
        verified_at_ms: dep3.at_ms,
    };
    let trusted = cronium_ssh::ServerConfig {
        known_runner: Some(known.clone()),
        ..server.clone()
    };
    let ex3 = SshExecutor::new(ex.config().clone(), runner().await);
    let run4 = run_runner_ssh(&ex3, &trusted, &req).await.0.unwrap();
    assert_eq!(run4.finished.status, RunStatus::Succeeded);
    assert_eq!(run4.deployment.unwrap().outcome, DeployOutcome::Cached);
    assert_eq!(
        (ex3.metrics().uploads, ex3.metrics().deployments_verified),
        (0, 0),
        "a trusted verification is not repeated"
    );

    // Older than reverify_after: checked on the host again.
    let stale = cronium_ssh::ServerConfig {
        known_runner: Some(cronium_ssh::KnownRunner {
            verified_at_ms: known.verified_at_ms - 25 * 3600 * 1000,
            ..known.clone()
        }),
        ..server.clone()
    };
    let ex4 = SshExecutor::new(ex.config().clone(), runner().await);
    let run5 = run_runner_ssh(&ex4, &stale, &req).await.0.unwrap();
    assert_eq!(run5.deployment.unwrap().outcome, DeployOutcome::Verified);

    // Trusted but gone from the host (deleted behind our back): redeployed, and the run succeeds.
    std::fs::remove_file(home_path(&known.path)).unwrap();
    let ex5 = SshExecutor::new(ex.config().clone(), runner().await);
    let run6 = run_runner_ssh(&ex5, &trusted, &req)
        .await
        .0
        .expect("run after the trusted binary was deleted");
    assert_eq!(run6.finished.status, RunStatus::Succeeded);
    assert_eq!(run6.deployment.unwrap().outcome, DeployOutcome::Deployed);
    assert_eq!(ex5.metrics().uploads, 1);
    assert!(home_path(&known.path).exists());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_is_redeployed_after_the_binary_is_deleted_on_the_host() {
    let sshd = Sshd::start();
    let ex = executor("redeploy").await;
    let _cleanup = DirCleanup::new(&ex);
    let server = sshd.server("redeploy");
    let p = payload(Interpreter::Bash, "echo ok\n", Duration::from_secs(30));
    let req = request(&p, Duration::from_secs(30), "redeploy");
    let (tx, _rx) = sink();
    let first = ex
        .run(
            &server,
            Mode::RunnerSsh,
            &req,
            &bash(""),
            &tx,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    let path = home_path(&first.deployment.unwrap().path);
    std::fs::remove_file(&path).unwrap();
    let second = ex
        .run(
            &server,
            Mode::RunnerSsh,
            &req,
            &bash(""),
            &tx,
            CancellationToken::new(),
        )
        .await
        .expect("run after deletion");
    assert_eq!(second.finished.status, RunStatus::Succeeded);
    assert_eq!(second.deployment.unwrap().outcome, DeployOutcome::Deployed);
    assert!(path.exists());
    assert_eq!(ex.metrics().uploads, 2);
    let _ = std::fs::remove_dir_all(home_path(&ex.config().deploy_dir));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_less_host_gets_the_runner_over_an_exec_channel() {
    let sshd = Sshd::start_with(false);
    let ex = executor("nosftp").await;
    let _cleanup = DirCleanup::new(&ex);
    let server = sshd.server("nosftp");
    let p = payload(Interpreter::Bash, "echo via-cat\n", Duration::from_secs(30));
    let req = request(&p, Duration::from_secs(30), "nosftp");
    let (tx, mut rx) = sink();
    let started = Instant::now();
    let run = ex
        .run(
            &server,
            Mode::RunnerSsh,
            &req,
            &bash(""),
            &tx,
            CancellationToken::new(),
        )
        .await
        .expect("run on a host without sftp");
    // The refusal is seen at once, not after the SFTP client's own 10 s wait for an answer.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "deploying without sftp took {:?}",
        started.elapsed()
    );
    assert_eq!(run.finished.status, RunStatus::Succeeded);
    assert_eq!(run.deployment.unwrap().outcome, DeployOutcome::Deployed);
    assert!(log_lines(&drain(&mut rx)).contains(&"via-cat".to_string()));
    let _ = std::fs::remove_dir_all(home_path(&ex.config().deploy_dir));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_host_key_is_refused_with_instructions() {
    let mut sshd = Sshd::start();
    let ex = executor("hostkey").await;
    let _cleanup = DirCleanup::new(&ex);
    let mut server = sshd.server("web1");
    server.host_key = Some(sshd.host_key());
    let report = ex.test(&server).await;
    assert_eq!(
        report.host_key_status,
        Some(HostKeyStatus::Matches),
        "{report:?}"
    );

    sshd.new_host_key();
    sshd.restart();
    let p = payload(Interpreter::Bash, "echo never\n", Duration::from_secs(30));
    let req = request(&p, Duration::from_secs(30), "web1");
    let (tx, mut rx) = sink();
    let err = ex
        .run(
            &server,
            Mode::DirectSsh,
            &req,
            &bash("echo never"),
            &tx,
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
    match &err {
        SshError::HostKeyChanged {
            observed_key,
            expected,
            observed,
            ..
        } => {
            assert!(same_key(observed_key, &sshd.host_key()));
            assert_ne!(expected, observed);
        }
        other => panic!("expected HostKeyChanged, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("cronium server accept-key web1"), "{msg}");
    assert!(msg.contains("SHA256:"), "{msg}");
    assert!(
        drain(&mut rx).is_empty(),
        "nothing may run on a host with a changed key"
    );
    let report = ex.test(&server).await;
    assert!(
        matches!(report.host_key_status, Some(HostKeyStatus::Changed { .. })),
        "{report:?}"
    );
    assert!(!report.authenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_test_reports_first_use_os_and_runner_state() {
    let sshd = Sshd::start();
    let ex = executor("report").await;
    let _cleanup = DirCleanup::new(&ex);
    let server = sshd.server("report");
    let report = ex.test(&server).await;
    assert!(report.reachable && report.authenticated, "{report:?}");
    assert_eq!(report.host_key_status, Some(HostKeyStatus::FirstUse));
    assert!(same_key(
        report.host_key.as_deref().unwrap(),
        &sshd.host_key()
    ));
    assert!(report
        .host_key_fingerprint
        .as_deref()
        .unwrap()
        .starts_with("SHA256:"));
    assert_eq!(report.os.as_deref(), Some("Linux"));
    assert_eq!(report.arch.as_deref(), Some(std::env::consts::ARCH));
    assert_eq!(report.runner_version, None);

    let p = payload(Interpreter::Bash, "true\n", Duration::from_secs(30));
    let (tx, _rx) = sink();
    ex.run(
        &server,
        Mode::RunnerSsh,
        &request(&p, Duration::from_secs(30), "report"),
        &bash(""),
        &tx,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let report = ex.test(&server).await;
    assert_eq!(report.runner_version, Some(runner().await.version));
    let _ = std::fs::remove_dir_all(home_path(&ex.config().deploy_dir));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_reported_as_auth_errors() {
    let sshd = Sshd::start();
    let ex = executor("auth").await;
    let _cleanup = DirCleanup::new(&ex);
    let p = payload(Interpreter::Bash, "true\n", Duration::from_secs(30));
    let req = request(&p, Duration::from_secs(30), "auth");
    let (tx, _rx) = sink();

    let mut wrong_key = sshd.server("auth");
    wrong_key.credential = Credential::Key {
        pem: env().other_key.clone(),
        passphrase: None,
    };
    let err = ex
        .run(
            &wrong_key,
            Mode::DirectSsh,
            &req,
            &bash("true"),
            &tx,
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, SshError::Auth { .. }), "{err:?}");
    assert!(err.to_string().contains("cronium-test"), "{err}");

    let mut wrong_pw = sshd.server("auth");
    wrong_pw.credential = Credential::Password("not-the-password".into());
    let err = ex
        .run(
            &wrong_pw,
            Mode::DirectSsh,
            &req,
            &bash("true"),
            &tx,
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, SshError::Auth { .. }), "{err:?}");

    let mut good_pw = sshd.server("auth");
    good_pw.credential = Credential::Password(PASSWORD.into());
    let run = ex
        .run(
            &good_pw,
            Mode::DirectSsh,
            &req,
            &bash("echo pw-ok"),
            &tx,
            CancellationToken::new(),
        )
        .await
        .expect("password login");
    assert_eq!(run.finished.status, RunStatus::Succeeded);

    // A passphrase-protected key: accepted with its passphrase, a clear error without it.
    let enc = sshd.dir.path().join("encrypted_key");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "open sesame", "-f"])
        .arg(&enc)
        .status()
        .unwrap();
    assert!(st.success());
    let mut authorized = std::fs::read_to_string(sshd.dir.path().join("authorized_keys")).unwrap();
    authorized.push_str(&std::fs::read_to_string(enc.with_extension("pub")).unwrap());
    std::fs::write(sshd.dir.path().join("authorized_keys"), authorized).unwrap();
    let mut encrypted = sshd.server("auth");
    encrypted.credential = Credential::Key {
        pem: std::fs::read_to_string(&enc).unwrap(),
        passphrase: Some("open sesame".into()),
    };
    let run = ex
        .run(
            &encrypted,
            Mode::DirectSsh,
            &req,
            &bash("true"),
            &tx,
            CancellationToken::new(),
        )
        .await
        .expect("login with an encrypted key");
    assert_eq!(run.finished.status, RunStatus::Succeeded);
    encrypted.credential = Credential::Key {
        pem: std::fs::read_to_string(&enc).unwrap(),
        passphrase: Some("wrong".into()),
    };
    let err = ex
        .run(
            &encrypted,
            Mode::DirectSsh,
            &req,
            &bash("true"),
            &tx,
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("credential.key"), "{err}");

    // A key that cannot be parsed is a configuration error naming the field.
    let mut garbage = sshd.server("auth");
    garbage.credential = Credential::Key {
        pem: "not a key".into(),
        passphrase: None,
    };
    let err = ex
        .run(
            &garbage,
            Mode::DirectSsh,
            &req,
            &bash("true"),
            &tx,
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("credential.key"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_port_is_unreachable_fast() {
    let _ = env();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let ex = executor("closed").await;
    let _cleanup = DirCleanup::new(&ex);
    let mut server = Sshd::start().server("closed");
    server.port = port;
    let p = payload(Interpreter::Bash, "true\n", Duration::from_secs(30));
    let (tx, _rx) = sink();
    let started = Instant::now();
    let err = ex
        .run(
            &server,
            Mode::RunnerSsh,
            &request(&p, Duration::from_secs(30), "closed"),
            &bash(""),
            &tx,
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, SshError::Unreachable { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let report = ex.test(&server).await;
    assert!(!report.reachable && report.error.is_some());
}

/// The key exchange is the one that costs sshd least among the safe ones this OpenSSH offers:
/// Debian 12's OpenSSH 9.2 has no ML-KEM hybrid, so ECDH on P-256 (OpenSSL) rather than X25519
/// (OpenSSH's reference code, about 3 ms more sshd CPU per connection), although sshd itself lists
/// X25519 first. The cipher is AES-GCM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_negotiate_p256_key_exchange_and_aes_gcm_with_openssh_9_2() {
    let sshd = Sshd::start_logging(true, "DEBUG1");
    let ex = executor("kex").await;
    let _cleanup = DirCleanup::new(&ex);
    let report = ex.test(&sshd.server("kex")).await;
    assert!(report.reachable, "{report:?}");
    let log = sshd.log();
    let kex: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("kex: algorithm:"))
        .collect();
    assert!(!kex.is_empty(), "sshd logged no key exchange:\n{log}");
    assert!(
        kex.iter()
            .all(|l| l.contains("kex: algorithm: ecdh-sha2-nistp256 ")
                || l.ends_with("kex: algorithm: ecdh-sha2-nistp256")),
        "{kex:?}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("kex: client->server cipher: aes256-gcm@openssh.com")),
        "{log}"
    );
}

/// Waits until a log line equal to `line` arrives, returning the events seen.
async fn wait_for_line(
    rx: &mut tokio::sync::mpsc::Receiver<RunnerEvent>,
    line: &str,
    timeout: Duration,
) -> Vec<RunnerEvent> {
    let mut seen = vec![];
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) => {
                let hit = matches!(&e, RunnerEvent::Log { line: l, .. } if l == line);
                seen.push(e);
                if hit {
                    return seen;
                }
            }
            _ => panic!("line {line:?} did not arrive; saw {seen:#?}"),
        }
    }
}

/// A script whose child and grandchild live long and are findable by a unique sleep length.
fn long_script(marker: &str) -> String {
    format!(
        "bash -c 'sleep {marker}; echo never' &\n( sleep {marker} ) &\necho started\nsleep {marker}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_dying_mid_run_is_detected_within_the_keepalive_window() {
    host_dying_mid_run(false, "3101").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_dying_mid_run_on_the_serve_session_is_detected_the_same_way() {
    host_dying_mid_run(true, "3104").await;
}

/// `through_serve`: a first run on the connection, so that the long run goes through the
/// connection's serve session rather than an exec channel of its own.
async fn host_dying_mid_run(through_serve: bool, tag: &str) {
    let sshd = Sshd::start();
    let ex = executor(&format!("dying{tag}")).await;
    let _cleanup = DirCleanup::new(&ex);
    let server = sshd.server("dying");
    if through_serve {
        let p = payload(Interpreter::Bash, "true\n", Duration::from_secs(30));
        let req = request(&p, Duration::from_secs(30), "dying");
        let first = run_runner_ssh(&ex, &server, &req).await.0.unwrap();
        assert_eq!(first.finished.status, RunStatus::Succeeded);
    }
    let marker = format!("{tag}.{}", std::process::id());
    let p = payload(
        Interpreter::Bash,
        &long_script(&marker),
        Duration::from_secs(600),
    );
    let req = request(&p, Duration::from_secs(600), "dying");
    let (tx, mut rx) = sink();
    let task = {
        let (ex, server, req) = (ex.clone(), server.clone(), req.clone());
        tokio::spawn(async move {
            ex.run(
                &server,
                Mode::RunnerSsh,
                &req,
                &bash(""),
                &tx,
                CancellationToken::new(),
            )
            .await
        })
    };
    wait_for_line(&mut rx, "started", Duration::from_secs(30)).await;
    // Freeze the server side of the connection, as a host that lost power or network would.
    let sessions = sshd.session_processes();
    assert!(!sessions.is_empty());
    for p in &sessions {
        signal(*p, libc_sig::STOP);
    }
    let cut = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("run must end within the keepalive window, not the job timeout")
        .unwrap();
    let detected = cut.elapsed();
    let err = result.unwrap_err();
    assert!(matches!(err, SshError::Lost { .. }), "{err:?}");
    // keepalive 1 s x 2 unanswered, plus scheduling slack.
    assert!(
        detected < Duration::from_secs(8),
        "detected after {detected:?}"
    );
    assert_eq!(ex.metrics().executions_lost, 1);
    // Nothing of the script survives: the executor reconnects and kills the script's process
    // group (sshd may take hours to notice a dead client, so the runner's EOF cannot be relied
    // on alone), and the dropped sessions give the runner EOF.
    for p in &sessions {
        signal(*p, libc_sig::KILL);
    }
    let gone = wait_for(Duration::from_secs(15), || {
        processes_with(&marker).is_empty()
    })
    .await;
    if !gone {
        let ps = std::process::Command::new("ps")
            .args(["-u", USER, "-o", "pid,ppid,pgid,stat,cmd"])
            .output()
            .unwrap();
        eprintln!("{}", String::from_utf8_lossy(&ps.stdout));
    }
    assert!(gone, "left running: {:?}", processes_with(&marker));
    assert_eq!(ex.metrics().serve_sessions, u64::from(through_serve));
    let _ = std::fs::remove_dir_all(home_path(&ex.config().deploy_dir));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_timeout_and_cancel_leave_no_process_behind() {
    let sshd = Sshd::start();
    let ex = executor("timeout").await;
    let _cleanup = DirCleanup::new(&ex);
    let server = sshd.server("timeout");

    // Timeout, enforced by the runner.
    let marker = format!("3102.{}", std::process::id());
    let p = payload(
        Interpreter::Bash,
        &long_script(&marker),
        Duration::from_secs(2),
    );
    let req = request(&p, Duration::from_secs(2), "timeout");
    let (tx, _rx) = sink();
    let started = Instant::now();
    let run = ex
        .run(
            &server,
            Mode::RunnerSsh,
            &req,
            &bash(""),
            &tx,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(run.finished.status, RunStatus::TimedOut);
    assert_eq!(run.finished.exit_code, Some(EXIT_TIMEOUT));
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_all_gone("left running after timeout", || processes_with(&marker)).await;

    // Cancellation: cancel line, then EOF.
    let marker = format!("3103.{}", std::process::id());
    let p = payload(
        Interpreter::Bash,
        &long_script(&marker),
        Duration::from_secs(600),
    );
    let req = request(&p, Duration::from_secs(600), "timeout");
    let (tx, mut rx) = sink();
    let cancel = CancellationToken::new();
    let task = {
        let (ex, server, req, cancel) = (ex.clone(), server.clone(), req.clone(), cancel.clone());
        tokio::spawn(async move {
            ex.run(&server, Mode::RunnerSsh, &req, &bash(""), &tx, cancel)
                .await
        })
    };
    wait_for_line(&mut rx, "started", Duration::from_secs(30)).await;
    cancel.cancel();
    let run = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("cancel must end the run")
        .unwrap()
        .unwrap();
    assert_eq!(run.finished.status, RunStatus::Cancelled);
    assert_all_gone("left running after cancel", || processes_with(&marker)).await;
    assert_eq!(ex.metrics().executions_timed_out, 1);
    assert_eq!(ex.metrics().executions_cancelled, 1);
    let _ = std::fs::remove_dir_all(home_path(&ex.config().deploy_dir));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_ssh_passes_hostile_env_values_literally() {
    let sshd = Sshd::start();
    let ex = executor("direct-env").await;
    let _cleanup = DirCleanup::new(&ex);
    let server = sshd.server("direct-env");
    let pwned = format!("/tmp/cronium-pwned-{}", std::process::id());
    let hostile = [
        ("A", format!("'; touch {pwned}; echo '")),
        ("B", format!("$(touch {pwned})")),
        ("C", format!("`touch {pwned}` \"quoted\" \\back")),
        ("D", "two words; and a ' quote".to_string()),
        ("E", "line1\nline2 \\x41 $'x' \u{e9}".to_string()),
    ];
    // The secret must not appear in any process's command line on the host (bash's own [[ ]]
    // matching, so that no helper process carries the secret in its arguments).
    let secret = format!("s3cret-{}", std::process::id());
    let mut script = bash(concat!(
        "for v in A B C D; do printf '%s=%s\\n' \"$v\" \"${!v}\"; done\n",
        "printf 'E=%s|\\n' \"$E\"\n",
        "n=0; for f in /proc/[0-9]*/cmdline; do c=$(tr '\\0' ' ' < \"$f\" 2>/dev/null); ",
        "[[ $c == *\"$SECRET\"* ]] && n=$((n+1)); done; echo \"secret-in-cmdlines=$n\"\n",
        "echo err-line >&2\nexit 3",
    ));
    script.env = hostile
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    script.env.insert("SECRET".into(), secret.clone());
    let p = payload(Interpreter::Bash, "true\n", Duration::from_secs(30));
    let req = request(&p, Duration::from_secs(30), "direct-env");
    let (tx, mut rx) = sink();
    let run = ex
        .run(
            &server,
            Mode::DirectSsh,
            &req,
            &script,
            &tx,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    let events = drain(&mut rx);
    assert_eq!(run.mode_used, Mode::DirectSsh);
    assert_eq!(run.finished.status, RunStatus::Failed);
    assert_eq!(run.finished.exit_code, Some(3));
    assert!(run.deployment.is_none() && run.runner_version.is_none());
    let lines = log_lines(&events);
    for (k, v) in &hostile[..4] {
        assert!(lines.contains(&format!("{k}={v}")), "{k}: {lines:?}");
    }
    // E holds a newline: it comes back as two lines, byte for byte.
    let joined = lines.join("\n");
    assert!(
        joined.contains(&format!("E={}|", hostile[4].1)),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"secret-in-cmdlines=0".to_string()),
        "{lines:?}"
    );
    assert!(
        !std::path::Path::new(&pwned).exists(),
        "injection succeeded"
    );
    // Sequence numbers are ours: 1, 2, 3, ... with the helper notice first.
    let seqs: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            RunnerEvent::Log { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert!(lines[0].contains("helpers"), "{lines:?}");
    assert!(events.iter().any(|e| matches!(e, RunnerEvent::Log { stream: cronium_protocol::Stream::Stderr, line, .. } if line == "err-line")));
    assert!(matches!(events.last(), Some(RunnerEvent::Finished(_))));

    // A bad name is refused before anything runs.
    let mut bad = bash("echo should-not-run");
    bad.env.insert("X;touch".into(), "v".into());
    let (tx, mut rx) = sink();
    let err = ex
        .run(
            &server,
            Mode::DirectSsh,
            &req,
            &bad,
            &tx,
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("env.X;touch"), "{err}");
    assert!(drain(&mut rx).is_empty());

    // Python through `python3 -`.
    let py = DirectScript {
        interpreter: Interpreter::Python,
        script: "import os\nprint('py', os.environ['Q'])\n".into(),
        env: BTreeMap::from([("Q".to_string(), "it's".to_string())]),
    };
    let (tx, mut rx) = sink();
    let run = ex
        .run(
            &server,
            Mode::DirectSsh,
            &req,
            &py,
            &tx,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(run.finished.status, RunStatus::Succeeded);
    assert!(log_lines(&drain(&mut rx)).contains(&"py it's".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_ssh_timeout_and_cancel_kill_the_remote_group() {
    direct_ssh_timeout_and_cancel(USER, "3104").await;
}

/// The same through the general path: a login shell that is not bash starts a bash of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_ssh_timeout_and_cancel_kill_the_remote_group_under_a_non_bash_login_shell() {
    direct_ssh_timeout_and_cancel(SH_USER, "3106").await;
}

async fn direct_ssh_timeout_and_cancel(user: &str, mark: &str) {
    let sshd = Sshd::start();
    let tag = format!("direct-kill-{mark}");
    let ex = executor(&tag).await;
    let _cleanup = DirCleanup::new(&ex);
    let server = sshd.server_as(&tag, user);
    let p = payload(Interpreter::Bash, "true\n", Duration::from_secs(30));

    let marker = format!("{mark}.{}", std::process::id());
    // The script ignores TERM: only the KILL after the grace ends it.
    let script = bash(&format!("trap '' TERM\n{}", long_script(&marker)));
    let req = request(&p, Duration::from_secs(2), &tag);
    let (tx, mut rx) = sink();
    let started = Instant::now();
    let run = ex
        .run(
            &server,
            Mode::DirectSsh,
            &req,
            &script,
            &tx,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(run.finished.status, RunStatus::TimedOut);
    assert_eq!(run.finished.exit_code, Some(EXIT_TIMEOUT));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(log_lines(&drain(&mut rx)).contains(&"started".to_string()));
    assert_all_gone("left running after timeout", || processes_with(&marker)).await;

    let marker = format!("{mark}5.{}", std::process::id());
    let script = bash(&long_script(&marker));
    let req = request(&p, Duration::from_secs(600), &tag);
    let (tx, mut rx) = sink();
    let cancel = CancellationToken::new();
    let task = {
        let (ex, server, req, cancel, script) = (
            ex.clone(),
            server.clone(),
            req.clone(),
            cancel.clone(),
            script.clone(),
        );
        tokio::spawn(async move {
            ex.run(&server, Mode::DirectSsh, &req, &script, &tx, cancel)
                .await
        })
    };
    wait_for_line(&mut rx, "started", Duration::from_secs(30)).await;
    cancel.cancel();
    let run = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("cancel must end the run")
        .unwrap()
        .unwrap();
    assert_eq!(run.finished.status, RunStatus::Cancelled);
    assert_all_gone("left running after cancel", || processes_with(&marker)).await;
}

/// A bash script runs in the login shell itself when that is bash (no second bash started), in a
/// bash of its own otherwise; Python gets its environment either way; a script holding a NUL
/// byte takes the general path and still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_ssh_runs_in_the_login_bash_and_under_other_login_shells() {
    let sshd = Sshd::start();
    let ex = executor("direct-shells").await;
    let _cleanup = DirCleanup::new(&ex);
    let p = payload(Interpreter::Bash, "true\n", Duration::from_secs(30));
    let req = request(&p, Duration::from_secs(30), "direct-shells");
    // The login shell's command line is the one that tests for bash; a bash of its own was
    // given only the reading and the eval.
    let probe = "case $BASH_EXECUTION_STRING in *BASH_VERSION*) w=yes;; *) w=no;; esac\n\
                 echo \"in-login-shell=$w\"\n\
                 echo \"script-var=${cronium_script-unset}\"\n\
                 echo \"env=$GREETING\"\nread -r x; echo \"stdin-rc=$?\"\nexit 4";
    let run = |user: &'static str, script: DirectScript| {
        let (ex, server, req) = (
            ex.clone(),
            sshd.server_as("direct-shells", user),
            req.clone(),
        );
        async move {
            let (tx, mut rx) = sink();
            let run = ex
                .run(
                    &server,
                    Mode::DirectSsh,
                    &req,
                    &script,
                    &tx,
                    CancellationToken::new(),
                )
                .await
                .unwrap();
            (run.finished.exit_code, log_lines(&drain(&mut rx)))
        }
    };
    let with_env = |mut s: DirectScript| {
        s.env.insert("GREETING".into(), "hello 'there'".into());
        s
    };
    for (user, in_login) in [(USER, "yes"), (SH_USER, "no")] {
        let (code, lines) = run(user, with_env(bash(probe))).await;
        assert_eq!(code, Some(4), "{user}: {lines:?}");
        for want in [
            format!("in-login-shell={in_login}"),
            "script-var=unset".to_string(),
            "env=hello 'there'".to_string(),
            "stdin-rc=1".to_string(),
        ] {
            assert!(lines.contains(&want), "{user}: {want} not in {lines:?}");
        }
        let python = DirectScript {
            interpreter: Interpreter::Python,
            script: "import os, sys\nprint('py', os.environ['GREETING'], os.getpgid(0) == os.getpid())\nsys.exit(5)\n".into(),
            env: BTreeMap::new(),
        };
        let (code, lines) = run(user, with_env(python)).await;
        assert_eq!(code, Some(5), "{user}: {lines:?}");
        assert!(
            lines.contains(&"py hello 'there' True".to_string()),
            "{user}: {lines:?}"
        );
    }
    // `bash -s` reads the script: no execution string at all.
    let (code, lines) = run(
        USER,
        bash("echo \"nul-ok=${BASH_EXECUTION_STRING:-none}\" # \0\n"),
    )
    .await;
    assert_eq!(code, Some(0), "{lines:?}");
    assert!(lines.contains(&"nul-ok=none".to_string()), "{lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_mode_falls_back_to_direct_when_deployment_fails() {
    let sshd = Sshd::start();
    let mut cfg = config("auto");
    cfg.deploy_dir = "/proc/cronium-cannot-exist".into();
    let ex = SshExecutor::new(cfg, runner().await);
    let _cleanup = DirCleanup::new(&ex);
    let server = sshd.server("auto");
    let p = payload(
        Interpreter::Bash,
        "echo via-runner\n",
        Duration::from_secs(30),
    );
    let req = request(&p, Duration::from_secs(30), "auto");
    let (tx, mut rx) = sink();
    let run = ex
        .run(
            &server,
            Mode::Auto,
            &req,
            &bash("echo via-direct"),
            &tx,
            CancellationToken::new(),
        )
        .await
        .expect("auto run");
    assert_eq!(run.mode_used, Mode::DirectSsh);
    assert_eq!(run.finished.status, RunStatus::Succeeded);
    let reason = run.fallback_reason.expect("fallback reason");
    assert!(reason.contains("/proc/cronium-cannot-exist"), "{reason}");
    let dep = run.deployment.expect("failed deployment record");
    assert_eq!(dep.outcome, DeployOutcome::Failed);
    assert_eq!(dep.attempts, 3);
    assert!(log_lines(&drain(&mut rx)).contains(&"via-direct".to_string()));
    let m = ex.metrics();
    assert_eq!((m.fallbacks, m.deployments_failed, m.uploads), (1, 1, 3));

    // runner-ssh alone reports the deployment failure.
    let err = ex
        .run(
            &server,
            Mode::RunnerSsh,
            &req,
            &bash(""),
            &tx,
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, SshError::Deploy { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_to_twenty_servers_with_one_down() {
    let hosts: Vec<Sshd> = (0..19).map(|_| Sshd::start()).collect();
    let ex = executor("fanout").await;
    let _cleanup = DirCleanup::new(&ex);
    let mut servers: Vec<_> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| h.server(&format!("web{i}")))
        .collect();
    let mut down = servers[0].clone();
    down.name = "down".into();
    down.port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    servers.push(down);
    let p = payload(
        Interpreter::Bash,
        "echo \"on $(cronium.event server)\"\n",
        Duration::from_secs(60),
    );
    let started = Instant::now();
    let runs = servers.iter().cloned().map(|s| {
        let ex = ex.clone();
        let req = request(&p, Duration::from_secs(60), &s.name);
        async move {
            let (tx, rx) = sink();
            let r = ex
                .run(
                    &s,
                    Mode::RunnerSsh,
                    &req,
                    &bash(""),
                    &tx,
                    CancellationToken::new(),
                )
                .await;
            (s.name.clone(), r, rx)
        }
    });
    let results = futures_join_all(runs).await;
    let elapsed = started.elapsed();
    let mut ok = 0;
    for (name, r, mut rx) in results {
        match r {
            Ok(run) => {
                assert_eq!(run.finished.status, RunStatus::Succeeded, "{name}");
                ok += 1;
                let lines = log_lines(&drain(&mut rx));
                assert!(lines.contains(&format!("on {name}")), "{name}: {lines:?}");
            }
            Err(e) => {
                assert_eq!(name, "down");
                assert!(matches!(e, SshError::Unreachable { .. }), "{e:?}");
            }
        }
    }
    assert_eq!(ok, 19);
    eprintln!("fan-out to 20 servers (cold, with deployment): {elapsed:?}");
    let _ = std::fs::remove_dir_all(home_path(&ex.config().deploy_dir));
}

/// `join_all` without pulling in the futures crate.
async fn futures_join_all<F>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let mut set = Vec::new();
    for f in futs {
        set.push(tokio::spawn(f));
    }
    let mut out = Vec::new();
    for h in set {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_connection_is_reused_and_replaced_after_the_server_restarts() {
    let mut sshd = Sshd::start();
    let ex = executor("pool").await;
    let _cleanup = DirCleanup::new(&ex);
    let server = sshd.server("pool");
    let p = payload(Interpreter::Bash, "true\n", Duration::from_secs(30));
    let req = request(&p, Duration::from_secs(30), "pool");
    let (tx, _rx) = sink();
    for _ in 0..2 {
        let run = ex
            .run(
                &server,
                Mode::DirectSsh,
                &req,
                &bash("echo one"),
                &tx,
                CancellationToken::new(),
            )
            .await
            .unwrap();
        assert_eq!(run.finished.status, RunStatus::Succeeded);
    }
    assert_eq!(ex.idle_connections(&server), 1);
    assert_eq!((ex.metrics().pool_hits, ex.metrics().pool_misses), (1, 1));
    // The server restarts: its sessions die, the pool notices and drops the connection.
    sshd.restart();
    assert!(
        wait_for(Duration::from_secs(10), || ex.idle_connections(&server)
            == 0)
        .await
    );
    let run = ex
        .run(
            &server,
            Mode::DirectSsh,
            &req,
            &bash("echo two"),
            &tx,
            CancellationToken::new(),
        )
        .await
        .expect("reconnects");
    assert_eq!(run.finished.status, RunStatus::Succeeded);
    assert_eq!(ex.metrics().pool_misses, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_runs_on_one_server_upload_the_runner_once() {
    let sshd = Sshd::start();
    let mut cfg = config("once");
    cfg.pool_size = 3;
    let ex = SshExecutor::new(cfg, runner().await);
    let _cleanup = DirCleanup::new(&ex);
    let server = sshd.server("once");
    let p = payload(Interpreter::Bash, "echo ran\n", Duration::from_secs(30));
    let runs = (0..6).map(|_| {
        let (ex, server) = (ex.clone(), server.clone());
        let req = request(&p, Duration::from_secs(30), "once");
        async move {
            let (tx, _rx) = sink();
            ex.run(
                &server,
                Mode::RunnerSsh,
                &req,
                &bash(""),
                &tx,
                CancellationToken::new(),
            )
            .await
        }
    });
    let results = futures_join_all(runs).await;
    let mut outcomes = vec![];
    for r in results {
        let run = r.expect("run");
        assert_eq!(run.finished.status, RunStatus::Succeeded);
        outcomes.push(run.deployment.unwrap().outcome);
    }
    let m = ex.metrics();
    assert_eq!(m.uploads, 1, "{outcomes:?}");
    assert_eq!(m.deployments_succeeded, 1);
    assert_eq!(m.deployments_cached, 5);
    // At most pool_size connections were opened; the others waited and reused them.
    assert!(m.pool_misses <= 3, "{m:?}");
    assert_eq!(m.pool_hits + m.pool_misses, 6);

    // Re-verification: with reverify_after = 0 every run checks the host again, and a
    // verified binary is not uploaded again.
    let mut cfg = ex.config().clone();
    cfg.reverify_after = Duration::ZERO;
    let ex2 = SshExecutor::new(cfg, runner().await);
    let (tx, _rx) = sink();
    let req = request(&p, Duration::from_secs(30), "once");
    for _ in 0..2 {
        let run = ex2
            .run(
                &server,
                Mode::RunnerSsh,
                &req,
                &bash(""),
                &tx,
                CancellationToken::new(),
            )
            .await
            .unwrap();
        assert_eq!(run.deployment.unwrap().outcome, DeployOutcome::Verified);
    }
    assert_eq!(
        (ex2.metrics().uploads, ex2.metrics().deployments_verified),
        (0, 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deployment_is_retried_and_leaves_no_partial_file() {
    let sshd = Sshd::start();
    // An artifact whose announced checksum is not the file's: every upload fails verification.
    let mut artifact = runner().await;
    artifact.sha256 = "0".repeat(64);
    let ex = SshExecutor::new(config("partial"), artifact);
    let _cleanup = DirCleanup::new(&ex);
    let server = sshd.server("partial");
    let p = payload(Interpreter::Bash, "true\n", Duration::from_secs(30));
    let (tx, mut rx) = sink();
    let started = Instant::now();
    let err = ex
        .run(
            &server,
            Mode::RunnerSsh,
            &request(&p, Duration::from_secs(30), "partial"),
            &bash(""),
            &tx,
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
    let SshError::Deploy { reason, record, .. } = &err else {
        panic!("expected a deployment error, got {err:?}");
    };
    assert!(reason.contains("after 3 attempt(s)"), "{reason}");
    assert!(reason.contains("checksum"), "{reason}");
    let record = record.as_ref().expect("record of the failed deployment");
    assert_eq!(record.outcome, DeployOutcome::Failed);
    assert_eq!(record.attempts, 3);
    // Backoff 100 ms then 200 ms between the attempts.
    assert!(started.elapsed() >= Duration::from_millis(300));
    let m = ex.metrics();
    assert_eq!((m.uploads, m.deployments_failed), (3, 1));
    let dir = home_path(&ex.config().deploy_dir);
    let left: Vec<_> = std::fs::read_dir(&dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left on the host: {left:?}");
    assert!(drain(&mut rx).is_empty(), "nothing ran");
}

/// `cronium-runner serve` processes under `sshd` (the runner's persistent sessions).
fn serve_processes(sshd: &Sshd) -> Vec<u32> {
    let Some(pid) = sshd.pid() else { return vec![] };
    descendants(pid)
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|raw| {
                let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
                cmd.contains("cronium-runner") && cmd.trim_end().ends_with(" serve")
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_share_one_runner_serve_per_connection_which_ends_with_it() {
    let sshd = Sshd::start();
    let ex = executor("serve").await;
    let _cleanup = DirCleanup::new(&ex);
    let server = sshd.server("serve");
    let p = payload(
        Interpreter::Bash,
        "echo \"run $(cronium.input n)\"\ncronium.output n \"$(cronium.input n)\"\n",
        Duration::from_secs(30),
    );
    for n in 1..=3 {
        let mut req = request(&p, Duration::from_secs(30), "serve");
        req.context.input = serde_json::json!({ "n": n });
        let (run, events) = run_runner_ssh(&ex, &server, &req).await;
        let run = run.expect("run");
        assert_eq!(run.finished.status, RunStatus::Succeeded, "{events:#?}");
        // Each run sees its own input and reports its own lines, nothing of the previous one.
        assert_eq!(log_lines(&events), vec![format!("run {n}")], "{events:#?}");
    }
    let m = ex.metrics();
    assert_eq!(
        (m.serve_sessions, m.serve_unavailable, m.pool_hits),
        (1, 0, 2),
        "one serve session on the one pooled connection: {m:?}"
    );
    assert_eq!(serve_processes(&sshd).len(), 1);

    // The session lives as long as its connection: gone when the executor (and pool) is.
    drop(ex);
    assert_all_gone("serve outlived its connection", || serve_processes(&sshd)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_without_serve_mode_falls_back_to_an_exec_channel_per_run() {
    let sshd = Sshd::start();
    let real = runner().await;
    // A runner build that knows `run` but not `serve` (as an older runner would).
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("cronium-runner-real");
    std::fs::copy(&real.path, &copy).unwrap();
    let wrapper = dir.path().join("cronium-runner");
    // Each time it is asked for serve mode, it notes it in `asked` (writable by the login user).
    let asked = dir.path().join("asked");
    std::fs::write(&asked, "").unwrap();
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ \"$1\" = serve ]; then echo serve >> {}; echo 'unknown command `serve`' >&2; exit 2; fi\nexec {} \"$@\"\n",
            asked.display(),
            copy.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    for p in [dir.path(), copy.as_path(), wrapper.as_path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&asked, std::fs::Permissions::from_mode(0o666)).unwrap();
    let artifact = cronium_ssh::RunnerArtifact::from_path(&wrapper)
        .await
        .unwrap();
    let ex = SshExecutor::new(config("noserve"), artifact);
    let _cleanup = DirCleanup::new(&ex);
    let server = sshd.server("noserve");
    let p = payload(
        Interpreter::Bash,
        "echo fallback-ok\n",
        Duration::from_secs(30),
    );
    let req = request(&p, Duration::from_secs(30), "noserve");
    // The first run on a connection never asks for serve mode; the second asks and falls back;
    // the third remembers the answer (still counted as unavailable, but not asked again).
    for _ in 0..3 {
        let (run, events) = run_runner_ssh(&ex, &server, &req).await;
        let run = run.expect("run");
        assert_eq!(run.finished.status, RunStatus::Succeeded);
        assert_eq!(log_lines(&events), vec!["fallback-ok".to_string()]);
    }
    let m = ex.metrics();
    assert_eq!((m.serve_sessions, m.serve_unavailable), (0, 2), "{m:?}");
    assert_eq!(
        std::fs::read_to_string(&asked).unwrap().lines().count(),
        1,
        "serve mode is asked for once per connection"
    );
    assert!(serve_processes(&sshd).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_work_in_memory_by_default_and_where_configured_otherwise() {
    let sshd = Sshd::start();
    let p = payload(Interpreter::Bash, "pwd\n", Duration::from_secs(30));
    let req = request(&p, Duration::from_secs(30), "workdir");
    let custom = format!("/tmp/cronium-wd-{}", std::process::id());
    std::fs::create_dir_all(&custom).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&custom, std::fs::Permissions::from_mode(0o1777)).unwrap();
    for (work_dir, expected) in [
        (None, "/dev/shm/cronium-run-".to_string()),
        (Some(custom.clone()), format!("{custom}/cronium-run-")),
    ] {
        let mut cfg = config("workdir");
        cfg.work_dir = work_dir;
        let ex = SshExecutor::new(cfg, runner().await);
        let _cleanup = DirCleanup::new(&ex);
        let server = sshd.server("workdir");
        // The first run on a connection uses an exec channel, the next ones the serve session:
        // both honour the setting.
        for _ in 0..2 {
            let (run, events) = run_runner_ssh(&ex, &server, &req).await;
            let run = run.unwrap();
            assert_eq!(run.finished.status, RunStatus::Succeeded);
            let lines = log_lines(&events);
            assert!(
                lines.len() == 1 && lines[0].starts_with(&expected),
                "expected a directory under {expected}: {lines:?}"
            );
        }
        assert_eq!(ex.metrics().serve_sessions, 1);
    }
    let _ = std::fs::remove_dir_all(&custom);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_output_through_the_serve_session_arrives_complete_and_in_order() {
    let sshd = Sshd::start();
    let ex = executor("serve-big").await;
    let _cleanup = DirCleanup::new(&ex);
    let server = sshd.server("serve-big");
    let n = 200_000;
    let p = payload(
        Interpreter::Bash,
        &format!("seq 1 {n}\necho done >&2\n"),
        Duration::from_secs(120),
    );
    let req = request(&p, Duration::from_secs(120), "serve-big");
    // The first run opens the connection (exec channel); the second goes through the serve.
    for _ in 0..2 {
        let (tx, mut rx) = sink();
        let collect = tokio::spawn(async move {
            let mut stdout = Vec::new();
            while let Some(e) = rx.recv().await {
                if let RunnerEvent::Log { line, stream, .. } = e {
                    if stream == cronium_protocol::Stream::Stdout {
                        stdout.push(line);
                    }
                }
            }
            stdout
        });
        let run = ex
            .run(
                &server,
                Mode::RunnerSsh,
                &req,
                &bash(""),
                &tx,
                CancellationToken::new(),
            )
            .await
            .expect("run");
        drop(tx);
        assert_eq!(run.finished.status, RunStatus::Succeeded);
        let lines = collect.await.unwrap();
        assert_eq!(lines.len(), n, "lines lost");
        assert!(
            lines
                .iter()
                .enumerate()
                .all(|(i, l)| *l == (i + 1).to_string()),
            "lines out of order"
        );
    }
    assert_eq!(ex.metrics().serve_sessions, 1);
}

#[tokio::test]
async fn check_login_proves_a_credential_and_forget_evicts_the_first_runs_connection() {
    let ex = executor("check").await;
    let _cleanup = DirCleanup::new(&ex);
    let sshd = Sshd::start();
    let server = sshd.server("check");
    // A working credential: the presented host key comes back, nothing is pooled.
    let key = ex.check_login(&server).await.expect("login");
    assert_eq!(
        key.split_whitespace().take(2).collect::<Vec<_>>(),
        sshd.host_key()
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
    );
    assert_eq!(ex.idle_connections(&server), 0);
    // A refused key, a wrong password, a pinned key the host does not present.
    let mut refused = sshd.server("check");
    refused.credential = Credential::Key {
        pem: env().other_key.clone(),
        passphrase: None,
    };
    let err = ex.check_login(&refused).await.unwrap_err();
    assert!(matches!(err, SshError::Auth { .. }), "{err:?}");
    let mut wrong_pw = sshd.server("check");
    wrong_pw.credential = Credential::Password("not-the-password".into());
    let err = ex.check_login(&wrong_pw).await.unwrap_err();
    assert!(matches!(err, SshError::Auth { .. }), "{err:?}");
    let mut pinned_elsewhere = sshd.server("check");
    pinned_elsewhere.host_key = Some(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMTzbbst47xEvVNW6qC8WZmL2oKrrONAv6PhPieyC96f".into(),
    );
    let err = ex.check_login(&pinned_elsewhere).await.unwrap_err();
    assert!(matches!(err, SshError::HostKeyChanged { .. }), "{err:?}");

    // A first run pools its connection under no pinned key; forgetting the server as it is
    // now (key pinned) still closes that connection.
    let p = payload(Interpreter::Bash, "echo hi", Duration::from_secs(30));
    let req = request(&p, Duration::from_secs(30), "check");
    let (tx, _rx) = sink();
    let run = ex
        .run(
            &server,
            Mode::DirectSsh,
            &req,
            &bash("echo hi"),
            &tx,
            CancellationToken::new(),
        )
        .await
        .expect("run");
    assert_eq!(run.finished.status, RunStatus::Succeeded);
    assert_eq!(ex.idle_connections(&server), 1);
    let mut pinned = sshd.server("check");
    pinned.host_key = Some(key);
    ex.forget(&pinned);
    assert_eq!(ex.idle_connections(&server), 0);
    assert_all_gone("sshd sessions after forget", || sshd.session_processes()).await;
}
