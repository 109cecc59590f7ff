//! The reaper after an agent crash: a process running a container job is SIGKILLed; the
//! container and its per-job network stay behind; `reap` removes them once older than the grace,
//! spares live runs, and never touches a container that is not labelled as ours.
//!
//! The "agent" is this test binary re-executed to run the ignored `crash_child` test, so that a
//! real process holding a real attach connection dies mid-run.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use common::*;
use cronium_docker::{ContainerSpec, NetworkMode, LABEL_MANAGED};
use cronium_protocol::{Interpreter, RunStatus, RunnerEvent};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const CHILD_ENV: &str = "CRONIUM_DOCKER_CRASH_CHILD";

/// Runs in the child process only: starts a long container run and reports when it is under way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper process for agent_crash_leaves_orphans_that_the_reaper_removes"]
async fn crash_child() {
    if std::env::var(CHILD_ENV).is_err() {
        return;
    }
    let exec = executor(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let req = request(
        dir.path(),
        Interpreter::Bash,
        "echo started; sleep 300",
        Duration::from_secs(600),
        json!({}),
    );
    let spec = ContainerSpec {
        network: NetworkMode::Isolated,
        ..ContainerSpec::default()
    };
    let execution_id = next_id();
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            if matches!(&e, RunnerEvent::Log { line, .. } if line == "started") {
                println!("CHILD-STARTED {execution_id}");
            }
        }
    });
    let _ = exec
        .run(
            execution_id,
            execution_id,
            Interpreter::Bash,
            &spec,
            &req,
            &tx,
            CancellationToken::new(),
        )
        .await;
    panic!("the run should have been killed with its process");
}

async fn foreign_container(
    exec: &cronium_docker::DockerExecutor,
    labels: HashMap<String, String>,
) -> String {
    let name = format!("cronium-test-foreign-{}", next_id());
    exec.client()
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            ContainerCreateBody {
                image: Some("cronium/scratch-sh:1".into()),
                cmd: Some(vec!["sleep".into(), "300".into()]),
                labels: Some(labels),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_crash_leaves_orphans_that_the_reaper_removes() {
    let exec = executor(|c| c.reap_grace = Duration::from_secs(60)).await;

    // 1. An "agent" starts a container run and dies with SIGKILL.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        // The runner is already built: the child must not rebuild it.
        .env("CRONIUM_RUNNER", runner_path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let execution_id = tokio::task::spawn_blocking(move || {
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            // libtest prints "test crash_child ... " before it, on the same line.
            if let Some((_, id)) = line.split_once("CHILD-STARTED ") {
                return id.trim().parse::<i64>().unwrap();
            }
        }
        panic!("the child never started its run");
    });
    let execution_id = tokio::time::timeout(Duration::from_secs(120), execution_id)
        .await
        .expect("child started in time")
        .unwrap();
    child.kill().unwrap(); // SIGKILL: no destructor, no cleanup
    child.wait().unwrap();

    let orphans = leftovers(&exec, execution_id).await;
    assert_eq!(
        orphans.len(),
        2,
        "container and network survive the crash: {orphans:?}"
    );

    // 2. Containers that are not ours, one without labels and one explicitly not managed.
    let unlabelled = foreign_container(&exec, HashMap::new()).await;
    let not_managed = foreign_container(
        &exec,
        HashMap::from([(LABEL_MANAGED.to_string(), "false".to_string())]),
    )
    .await;

    // 3. A live run of this executor, in progress while the reaper passes.
    let dir = tempfile::tempdir().unwrap();
    let live_req = request(
        dir.path(),
        Interpreter::Bash,
        "echo live; sleep 3; echo still-here",
        Duration::from_secs(60),
        json!({}),
    );
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let live_id = next_id();
    let live_exec = std::sync::Arc::new(exec);
    let exec = live_exec.clone();
    let live = tokio::spawn(async move {
        live_exec
            .run(
                live_id,
                live_id,
                Interpreter::Bash,
                &ContainerSpec::default(),
                &live_req,
                &tx,
                CancellationToken::new(),
            )
            .await
    });
    while let Some(e) = rx.recv().await {
        if matches!(&e, RunnerEvent::Log { line, .. } if line == "live") {
            break;
        }
    }

    // Young orphans are kept (a run may be starting on another agent).
    let report = exec.reap(SystemTime::now()).await.unwrap();
    assert_eq!(leftovers(&exec, execution_id).await.len(), 2, "{report:?}");

    // A caller-declared live execution is spared even when old.
    let later = SystemTime::now() + Duration::from_secs(3600);
    exec.reap_with(later, |_, e| e == execution_id)
        .await
        .unwrap();
    assert_eq!(leftovers(&exec, execution_id).await.len(), 2);

    // Past the grace: the orphan container and network go; the rest stays.
    let report = exec.reap(later).await.unwrap();
    assert!(
        leftovers(&exec, execution_id).await.is_empty(),
        "{report:?}"
    );
    assert!(!report.networks.is_empty(), "{report:?}");
    for id in [&unlabelled, &not_managed] {
        exec.client()
            .inspect_container(id, None)
            .await
            .unwrap_or_else(|e| panic!("foreign container {id} was touched: {e}"));
    }

    // The live run was not disturbed.
    let live = live.await.unwrap().unwrap();
    assert_eq!(live.finished.status, RunStatus::Succeeded);
    assert_clean(&exec, live_id).await;

    for id in [unlabelled, not_managed] {
        exec.client()
            .remove_container(
                &id,
                Some(RemoveContainerOptionsBuilder::default().force(true).build()),
            )
            .await
            .unwrap();
    }
}
