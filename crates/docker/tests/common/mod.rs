//! Shared setup for the tests against the real Docker engine: the static runner, the local
//! images, payload archives, and a run that collects every event.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use bollard::query_parameters::{ListContainersOptionsBuilder, ListNetworksOptionsBuilder};
use cronium_core::transport::RunRequest;
use cronium_docker::{
    ContainerRun, ContainerSpec, DockerConfig, DockerError, DockerExecutor, LABEL_EXECUTION,
};
use cronium_protocol::{
    EventMeta, Interpreter, Manifest, RunContext, RunnerEvent, MANIFEST_FORMAT,
};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The static runner: `CRONIUM_RUNNER` if set, else built (incrementally) into a target dir of
/// its own, since the outer `cargo test` holds the lock of the shared one.
pub fn runner_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Ok(p) = std::env::var("CRONIUM_RUNNER") {
            return PathBuf::from(p);
        }
        let root = workspace_root();
        let target_dir = root.join("target/docker-tests");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(&root)
            .env("CARGO_TARGET_DIR", &target_dir)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .args([
                "build",
                "-q",
                "-p",
                "cronium-runner",
                "--target",
                "x86_64-unknown-linux-gnu",
            ])
            .status()
            .expect("run cargo build for the runner");
        assert!(status.success(), "building cronium-runner failed");
        let p = target_dir.join("x86_64-unknown-linux-gnu/debug/cronium-runner");
        std::fs::canonicalize(&p).unwrap_or(p)
    })
    .clone()
}

/// Builds the local images once (the script is fast when they are present).
pub fn ensure_images() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let out = Command::new(workspace_root().join("scripts/build-images.sh"))
            .output()
            .expect("run scripts/build-images.sh");
        assert!(
            out.status.success(),
            "build-images.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// Ids unique across test binaries running at the same time.
pub fn next_id() -> i64 {
    static COUNTER: AtomicI64 = AtomicI64::new(0);
    let base = (std::process::id() as i64 % 100_000) * 1_000;
    9_000_000_000 + base * 100 + COUNTER.fetch_add(1, Ordering::Relaxed)
}

pub async fn executor(tweak: impl FnOnce(&mut DockerConfig)) -> DockerExecutor {
    ensure_images();
    let mut config = DockerConfig::new(runner_path());
    tweak(&mut config);
    DockerExecutor::connect(config)
        .await
        .expect("connect to docker")
}

/// A payload archive in `dir` and the request that runs it.
pub fn request(
    dir: &Path,
    interpreter: Interpreter,
    script: &str,
    timeout: Duration,
    input: Value,
) -> RunRequest {
    let entrypoint = format!("script.{}", interpreter.extension());
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        interpreter,
        entrypoint: entrypoint.clone(),
        env: Default::default(),
        timeout_ms: timeout.as_millis() as u64,
        kill_grace_ms: 2_000,
        max_output_bytes: 10 * 1024 * 1024,
        event: EventMeta {
            id: 1,
            name: "docker-test".into(),
            version: 1,
        },
    };
    // JSON is YAML: the manifest needs no YAML writer here.
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let path = dir.join(format!("payload-{}.tar.gz", next_id()));
    let file = std::fs::File::create(&path).unwrap();
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (name, data) in [
        (cronium_protocol::MANIFEST_NAME, manifest.as_slice()),
        (entrypoint.as_str(), script.as_bytes()),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, name, data).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap().flush().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    use sha2::Digest;
    let sha = hex::encode(sha2::Sha256::digest(&bytes));
    RunRequest {
        payload_path: path,
        payload_sha256: sha,
        context: RunContext {
            job_id: 1,
            execution_id: 1,
            attempt: 1,
            trigger: "manual".into(),
            input,
            ..RunContext::default()
        },
        timeout,
        kill_grace: Duration::from_secs(2),
        control: None,
    }
}

pub struct Outcome {
    pub result: Result<ContainerRun, DockerError>,
    pub events: Vec<RunnerEvent>,
    pub execution_id: i64,
}

impl Outcome {
    pub fn run(&self) -> &ContainerRun {
        match &self.result {
            Ok(r) => r,
            Err(e) => panic!("run failed: {e}\nevents: {:#?}", self.events),
        }
    }

    /// The script's lines on one stream, in order. (Between stdout and stderr there is no order
    /// to check: they are two pipes, read concurrently.)
    pub fn stream_lines(&self, wanted: cronium_protocol::Stream) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                RunnerEvent::Log { stream, line, .. } if *stream == wanted => Some(line.clone()),
                _ => None,
            })
            .collect()
    }

    /// stdout and stderr lines of the script, in order.
    pub fn script_lines(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                RunnerEvent::Log { stream, line, .. }
                    if *stream != cronium_protocol::Stream::System =>
                {
                    Some(line.clone())
                }
                _ => None,
            })
            .collect()
    }

    pub fn all_lines(&self) -> String {
        self.events
            .iter()
            .filter_map(|e| match e {
                RunnerEvent::Log { line, .. } => Some(line.clone()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn output(&self) -> Option<Value> {
        self.events.iter().rev().find_map(|e| match e {
            RunnerEvent::Output { value } => Some(value.clone()),
            _ => None,
        })
    }
}

/// Runs `req` in a container and collects everything the sink received.
pub async fn run(
    exec: &DockerExecutor,
    interpreter: Interpreter,
    spec: &ContainerSpec,
    req: &RunRequest,
    cancel: CancellationToken,
) -> Outcome {
    let (tx, mut rx) = mpsc::channel(1024);
    let execution_id = next_id();
    let collect = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(e) = rx.recv().await {
            events.push(e);
        }
        events
    });
    let result = exec
        .run(
            execution_id,
            execution_id,
            interpreter,
            spec,
            req,
            &tx,
            cancel,
        )
        .await;
    drop(tx);
    let events = collect.await.unwrap();
    Outcome {
        result,
        events,
        execution_id,
    }
}

/// Containers and networks labelled with this execution id that still exist.
pub async fn leftovers(exec: &DockerExecutor, execution_id: i64) -> Vec<String> {
    let filter = HashMap::from([(
        "label".to_string(),
        vec![format!("{LABEL_EXECUTION}={execution_id}")],
    )]);
    let docker = exec.client();
    let mut found: Vec<String> = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filter)
                .build(),
        ))
        .await
        .unwrap()
        .into_iter()
        .map(|c| format!("container {}", c.id.unwrap_or_default()))
        .collect();
    found.extend(
        docker
            .list_networks(Some(
                ListNetworksOptionsBuilder::default()
                    .filters(&filter)
                    .build(),
            ))
            .await
            .unwrap()
            .into_iter()
            .map(|n| format!("network {}", n.name.unwrap_or_default())),
    );
    found
}

/// Asserts that the run left nothing behind. Cleanup of a run is awaited by `run` itself, so no
/// waiting is needed on the normal paths; a short poll covers the engine's own bookkeeping.
pub async fn assert_clean(exec: &DockerExecutor, execution_id: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = leftovers(exec, execution_id).await;
        if left.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "execution {execution_id} left {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
