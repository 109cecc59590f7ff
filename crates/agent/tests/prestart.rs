//! The local transport's runner started ahead (`prestart`), against the real `cronium-runner`:
//! a run is handed to the runner that was waiting, a dead one is replaced without failing the
//! run, its setup is counted from the hand-over, and an idle one goes with its transport.
//!
//! The runner binary: `CRONIUM_RUNNER` (the test command exports the static one), else the
//! workspace's debug build.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cronium_agent::targets::local::LocalTransport;
use cronium_core::payload::{build_archive, sha256_hex, PayloadSource};
use cronium_core::transport::RunRequest;
use cronium_protocol::{EventMeta, Interpreter, RunContext, RunStatus, RunnerEvent};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn runner() -> PathBuf {
    if let Some(p) = std::env::var_os("CRONIUM_RUNNER") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/cronium-runner");
    assert!(
        p.is_file(),
        "build the runner first (cargo build -p cronium-runner) or set CRONIUM_RUNNER"
    );
    p
}

fn request(dir: &Path, script: &str) -> RunRequest {
    let bytes = build_archive(&PayloadSource {
        interpreter: Interpreter::Bash,
        script,
        env: Default::default(),
        timeout: Duration::from_secs(30),
        kill_grace: Duration::from_millis(500),
        max_output_bytes: 1 << 20,
        event: EventMeta {
            id: 1,
            name: "prestart".into(),
            version: 1,
        },
    })
    .expect("payload");
    let path = dir.join(format!("{}.tar.gz", sha256_hex(&bytes)));
    std::fs::write(&path, &bytes).expect("write payload");
    RunRequest {
        payload_path: path,
        payload_sha256: sha256_hex(&bytes),
        context: RunContext {
            trigger: "manual".into(),
            ..Default::default()
        },
        timeout: Duration::from_secs(30),
        kill_grace: Duration::from_millis(500),
        control: None,
    }
}

/// Runs `script`; returns its stdout lines and the runner's `setup_ms`.
async fn run(t: &LocalTransport, dir: &Path, script: &str) -> (Vec<String>, u64) {
    let (tx, mut rx) = mpsc::channel(1024);
    let finished = t
        .run(&request(dir, script), &tx, CancellationToken::new())
        .await
        .expect("run");
    drop(tx);
    assert_eq!(finished.status, RunStatus::Succeeded, "{finished:?}");
    let (mut lines, mut setup) = (Vec::new(), u64::MAX);
    while let Some(e) = rx.recv().await {
        match e {
            RunnerEvent::Log { line, .. } => lines.push(line),
            RunnerEvent::Started { setup_ms, .. } => setup = setup_ms,
            _ => {}
        }
    }
    (lines, setup)
}

fn warm_pid(t: &LocalTransport) -> Option<u32> {
    t.warm.lock().unwrap().as_ref().and_then(|c| c.id())
}

/// Waits up to 5 s for the runner started ahead of the next run.
async fn wait_warm(t: &LocalTransport) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(pid) = warm_pid(t) {
            return pid;
        }
        assert!(Instant::now() < deadline, "no runner was started ahead");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_is_handed_to_the_runner_started_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let t = LocalTransport {
        prestart: true,
        ..LocalTransport::inheriting(runner())
    };
    // The first run has nobody waiting; it starts the runner of the next one.
    let (lines, _) = run(&t, dir.path(), "echo first").await;
    assert_eq!(lines, ["first"]);
    let ahead = wait_warm(&t).await;

    // The script's parent is its runner: the one that was waiting. It waited 400 ms, and its
    // setup is still counted from the hand-over, not from its own start.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (lines, setup_ms) = run(&t, dir.path(), "echo parent=$PPID").await;
    assert_eq!(lines, [format!("parent={ahead}")]);
    assert!(setup_ms < 300, "setup counted the idle wait: {setup_ms} ms");
    let next = wait_warm(&t).await;
    assert_ne!(next, ahead, "a runner serves one run");

    // A runner started ahead that died meanwhile is replaced; the run does not fail.
    // SAFETY: kill(2) on a pid this test's transport started.
    unsafe { libc::kill(next as i32, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(next) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (lines, _) = run(&t, dir.path(), "echo parent=$PPID").await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_ne!(lines[0], format!("parent={next}"));

    // An idle runner goes with its transport (EOF on its stdin), leaving nothing behind.
    let idle = wait_warm(&t).await;
    drop(t);
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(idle) {
        assert!(
            Instant::now() < deadline,
            "the idle runner {idle} outlived its transport"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn without_prestart_nothing_is_started_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let t = LocalTransport::inheriting(runner());
    let (lines, _) = run(&t, dir.path(), "echo once").await;
    assert_eq!(lines, ["once"]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(warm_pid(&t), None);
}
