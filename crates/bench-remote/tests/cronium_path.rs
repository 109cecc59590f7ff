//! The Cronium side of the benchmark against a real `cronium serve` (release build) and a real
//! sshd: a timed run counts only when the job succeeded on every server, in both modes, and a
//! failing script is refused as a sample instead of being timed.
//!
//! Uses the debug binaries `cargo build --workspace` makes (this checks the harness's logic, not
//! speed) and the static runner of scripts/build-runner.sh (or CRONIUM_STATIC_RUNNER).

use std::path::{Path, PathBuf};

use cronium_bench_remote::cronium::{CroniumError, Server, ServerSpec};
use cronium_bench_remote::hosts::{Fleet, USER};
use serde_json::json;

fn workspace() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .canonicalize()
        .expect("workspace root")
}

fn spec(data: &Path, deploy_dir: &str) -> ServerSpec {
    let ws = workspace();
    let spec = ServerSpec {
        cronium: ws.join("target/debug/cronium"),
        runner: ws.join("target/debug/cronium-runner"),
        static_runner: std::env::var_os("CRONIUM_STATIC_RUNNER")
            .map(PathBuf::from)
            .unwrap_or_else(|| ws.join("target/runner/cronium-runner")),
        data_dir: data.to_path_buf(),
        deploy_dir: deploy_dir.to_string(),
        fanout_concurrency: Some(50),
        extra_args: Vec::new(),
        poll: false,
    };
    for p in [&spec.cronium, &spec.runner, &spec.static_runner] {
        assert!(
            p.exists(),
            "{} is missing: run `cargo build --workspace` and scripts/build-runner.sh first \
             (scripts/test.sh does both)",
            p.display()
        );
    }
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_runs_need_success_on_every_server() {
    let fleet = Fleet::start(&workspace(), 2).expect("start sshd");
    let work = tempfile::tempdir().unwrap();
    let deploy_dir = format!(".cache/cronium-bench-test-{}", std::process::id());
    let home = Path::new("/home").join(USER).join(&deploy_dir);
    let server = Server::start(&spec(&work.path().join("data"), &deploy_dir)).expect("serve");
    for (i, port) in fleet.ports().into_iter().enumerate() {
        server
            .add_server(
                &format!("t{i}"),
                port,
                USER,
                &fleet.key.pem,
                &["bench".into()],
            )
            .await
            .expect("register a server");
    }
    for (name, mode, script) in [
        ("rs", "runner-ssh", "true"),
        ("ds", "direct-ssh", "true"),
        ("bad", "direct-ssh", "exit 3"),
    ] {
        server
            .put_event(&json!({"name": name, "type": "bash", "script": script,
                "target": {"tags": ["bench"], "mode": mode}}))
            .await
            .expect("put event");
    }

    let first = server.run_timed("rs", 2).await.expect("runner-ssh run");
    assert!(first.wall.as_millis() > 0);
    assert!(first.server_ms.is_some() && first.setup_ms_max.is_some());
    assert!(
        home.exists(),
        "the first runner-ssh run deployed into {}",
        home.display()
    );
    server.run_timed("ds", 2).await.expect("direct-ssh run");

    // Two servers matched: asking for three must be refused, not timed.
    match server.run_timed("ds", 3).await {
        Err(CroniumError::Executions {
            got: 2, want: 3, ..
        }) => {}
        other => panic!("expected an execution-count error, got {other:?}"),
    }
    match server.run_timed("bad", 2).await {
        Err(CroniumError::NotSucceeded { status, .. }) => assert_eq!(status, "failed"),
        other => panic!("a failing script must not be a sample, got {other:?}"),
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&home);
}
