//! [`DockerExecutor`]: one execution = one fresh container running the bind-mounted static runner.
//!
//! The flow of [`DockerExecutor::run`]: check limits, make sure the image is there, create the
//! per-job network if asked, create the container (labelled, hardened), attach to its stdio
//! *before* starting it (so no output is lost), start it, write the run context and the payload
//! to the runner's stdin, forward the runner's events, and on cancellation write a cancel line.
//! When the runner is done: wait for the container to exit, read the engine's OOM verdict, and
//! remove the container and network. A drop guard removes them too when the future is dropped
//! mid-run (the agent's task aborted); the reaper covers the agent process dying.
//!
//! Not for timeouts of the script (the runner enforces them): this module only has a backstop
//! that stops the container when the runner misses [`RunRequest::hard_deadline`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig, NetworkCreateRequest};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, KillContainerOptionsBuilder,
    StopContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use cronium_core::transport::{
    next_control, pump_events, send_cancel, send_context, send_control, EventSink, RunRequest,
};
use cronium_protocol::{
    Finished, Interpreter, RunStatus, RunnerEvent, Stream, EXIT_CANCELLED, EXIT_TIMEOUT,
};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::io::StreamReader;
use tokio_util::sync::CancellationToken;

use crate::cleanup::{LiveGuard, Owned};
use crate::config::{ContainerRun, DockerConfig, PullPolicy};
use crate::error::DockerError;
use crate::labels::{self, NAME_PREFIX};
use crate::limits::{self, format_bytes, ContainerSpec, LimitError, Limits, NetworkMode};

/// Where the runner binary appears inside every container (read-only bind mount).
pub const RUNNER_MOUNT_PATH: &str = "/opt/cronium/cronium-runner";

/// Runs executions in containers. Cheap to share (`Arc` it); every call is independent.
pub struct DockerExecutor {
    pub(crate) docker: Docker,
    pub(crate) config: DockerConfig,
    host_cpus: Option<f64>,
    /// Executions running through this executor: never reaped, whatever their age.
    pub(crate) live: Arc<Mutex<HashSet<i64>>>,
}

impl std::fmt::Debug for DockerExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerExecutor")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A system log line for the job's log (numbered by the agent).
pub(crate) fn system_line(line: String) -> RunnerEvent {
    RunnerEvent::Log {
        seq: 0,
        stream: Stream::System,
        line,
        ts_ms: now_ms(),
    }
}

impl DockerExecutor {
    /// Connects to the local engine (`DOCKER_HOST` or the default socket), negotiating the API
    /// version, and checks the configuration.
    pub async fn connect(config: DockerConfig) -> Result<Self, DockerError> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| DockerError::Connect(e.to_string()))?;
        Self::with_client(docker, config).await
    }

    /// As [`connect`](Self::connect), with a client the caller built (another host, a timeout).
    pub async fn with_client(docker: Docker, config: DockerConfig) -> Result<Self, DockerError> {
        let meta = std::fs::metadata(&config.runner_path).map_err(|e| {
            DockerError::Config(format!("runner_path {}: {e}", config.runner_path.display()))
        })?;
        if !meta.is_file() {
            return Err(DockerError::Config(format!(
                "runner_path {} is not a file",
                config.runner_path.display()
            )));
        }
        if !config.runner_path.is_absolute() {
            return Err(DockerError::Config(format!(
                "runner_path {} must be absolute (it is bind-mounted)",
                config.runner_path.display()
            )));
        }
        check_static_elf(&config.runner_path)?;
        limits::validate_config(&config.defaults, &config.maximums)
            .map_err(|e| DockerError::Config(format!("defaults/maximums: {e}")))?;
        if config.user.trim().is_empty() {
            return Err(DockerError::Config("user must not be empty".into()));
        }
        // Old engines (this crate is tested on API 1.41) refuse a client newer than they are.
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| DockerError::Connect(e.to_string()))?;
        let info = docker
            .info()
            .await
            .map_err(|e| DockerError::Connect(e.to_string()))?;
        Ok(DockerExecutor {
            docker,
            config,
            host_cpus: info.ncpu.map(|n| n as f64),
            live: Arc::new(Mutex::new(HashSet::new())),
        })
    }

    /// The engine client, for callers that need more than this API (tests, diagnostics).
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    pub fn config(&self) -> &DockerConfig {
        &self.config
    }

    /// The limits a run of `spec` would get, or which field is out of bounds.
    pub fn check_limits(&self, spec: &ContainerSpec) -> Result<Limits, LimitError> {
        limits::effective(
            &spec.limits,
            &self.config.defaults,
            &self.config.maximums,
            self.host_cpus,
        )
    }

    /// The image a run of `spec` with `interpreter` uses.
    pub fn image_for(
        &self,
        interpreter: Interpreter,
        spec: &ContainerSpec,
    ) -> Result<String, DockerError> {
        match &spec.image {
            Some(i) if i.trim().is_empty() => Err(DockerError::Spec(
                "container.image: must not be empty".into(),
            )),
            Some(i) => Ok(i.clone()),
            None => self
                .config
                .images
                .get(&interpreter)
                .cloned()
                .ok_or_else(|| DockerError::no_image(interpreter)),
        }
    }

    /// Whether `image` is on the engine.
    pub async fn image_present(&self, image: &str) -> Result<bool, DockerError> {
        crate::image::present(&self.docker, image).await
    }

    async fn ensure_image(&self, image: &str, sink: &EventSink) -> Result<(), DockerError> {
        if self.image_present(image).await? {
            return Ok(());
        }
        match self.config.pull {
            PullPolicy::Never => Err(DockerError::ImageUnavailable {
                image: image.to_string(),
                reason: "it is not on this Docker engine and pulling is disabled (build it with scripts/build-images.sh or docker load it)".into(),
            }),
            PullPolicy::IfMissing => crate::image::pull(&self.docker, image, sink).await,
        }
    }

    /// Runs one execution in a fresh container and removes it afterwards.
    ///
    /// Returns `Ok` with the runner's result whatever the script did (failed, timed out, killed
    /// for memory, cancelled); `Err` only when the container machinery failed, after cleaning up.
    #[allow(clippy::too_many_arguments)]
    pub async fn run(
        &self,
        job_id: i64,
        execution_id: i64,
        interpreter: Interpreter,
        spec: &ContainerSpec,
        req: &RunRequest,
        sink: &EventSink,
        cancel: CancellationToken,
    ) -> Result<ContainerRun, DockerError> {
        let limits = self.check_limits(spec)?;
        check_network(&spec.network)?;
        let image = self.image_for(interpreter, spec)?;
        // A pull can take minutes: cancellation must not wait for it.
        tokio::select! {
            r = self.ensure_image(&image, sink) => r?,
            _ = cancel.cancelled() => {}
        }
        if cancel.is_cancelled() {
            let finished = Finished {
                status: RunStatus::Cancelled,
                exit_code: None,
                signal: None,
                run_ms: 0,
                error: Some("cancelled before the container started".into()),
                usage: None,
            };
            let _ = sink.send(RunnerEvent::Finished(finished.clone())).await;
            return Ok(ContainerRun {
                finished,
                oom_killed: false,
                image,
                container_id: String::new(),
                limits,
            });
        }

        let _live = LiveGuard::register(&self.live, execution_id);
        let mut owned = Owned {
            docker: self.docker.clone(),
            container: None,
            network: None,
        };
        let result = self
            .run_owned(
                &mut owned,
                job_id,
                execution_id,
                interpreter,
                spec,
                limits,
                image,
                req,
                sink,
                cancel,
            )
            .await;
        // Awaited here on every path that returns; `Owned`'s drop covers the future being dropped.
        owned.remove().await;
        result
    }

    /// Everything of a run after the checks; whatever it creates is recorded in `owned`.
    #[allow(clippy::too_many_arguments)]
    async fn run_owned(
        &self,
        owned: &mut Owned,
        job_id: i64,
        execution_id: i64,
        interpreter: Interpreter,
        spec: &ContainerSpec,
        limits: Limits,
        image: String,
        req: &RunRequest,
        sink: &EventSink,
        cancel: CancellationToken,
    ) -> Result<ContainerRun, DockerError> {
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let labels = labels::for_run(job_id, execution_id, created);
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("{NAME_PREFIX}-{job_id}-{execution_id}-{}", &suffix[..8]);

        let network_mode = match &spec.network {
            NetworkMode::None => "none".to_string(),
            NetworkMode::Named(n) => n.clone(),
            NetworkMode::Isolated => {
                self.docker
                    .create_network(NetworkCreateRequest {
                        name: name.clone(),
                        driver: Some("bridge".into()),
                        labels: Some(labels.clone()),
                        ..Default::default()
                    })
                    .await?;
                owned.network = Some(name.clone());
                name.clone()
            }
        };

        let body = self.container_body(&image, &limits, network_mode, labels);
        let container = self
            .docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                body,
            )
            .await
            .map_err(|e| match e {
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 404,
                    message,
                } if message.contains("network") => {
                    DockerError::Spec(format!("container.network: {message}"))
                }
                e => e.into(),
            })?;
        let id = container.id;
        owned.container = Some(id.clone());

        let attach = self
            .docker
            .attach_container(
                &id,
                Some(
                    AttachContainerOptionsBuilder::default()
                        .stdin(true)
                        .stdout(true)
                        .stderr(true)
                        .stream(true)
                        .build(),
                ),
            )
            .await?;
        self.docker.start_container(&id, None).await?;

        let context = context_for_container(req, interpreter, spec);
        let outcome = self.drive(&id, attach, &context, req, sink, &cancel).await;

        // The runner exits right after its final event; give it a moment, then make sure.
        let exit = self.wait_exit(&id, Duration::from_secs(5)).await;
        let state = self
            .docker
            .inspect_container(&id, None)
            .await
            .ok()
            .and_then(|c| c.state);
        let oom_killed = state.as_ref().and_then(|s| s.oom_killed).unwrap_or(false);
        let container_exit = state.as_ref().and_then(|s| s.exit_code).or(exit);

        match outcome {
            Ok(mut finished) => {
                if oom_killed {
                    amend_oom(&mut finished, limits.memory_bytes);
                }
                let _ = sink.send(RunnerEvent::Finished(finished.clone())).await;
                Ok(ContainerRun {
                    finished,
                    oom_killed,
                    image,
                    container_id: id,
                    limits,
                })
            }
            Err(message) if oom_killed => {
                // The kernel killed the runner itself: still an out-of-memory result, not a
                // transport failure.
                let mut finished = Finished {
                    status: RunStatus::Failed,
                    exit_code: container_exit.map(|c| c as i32),
                    signal: Some(9),
                    run_ms: 0,
                    error: Some(message),
                    usage: None,
                };
                amend_oom(&mut finished, limits.memory_bytes);
                let _ = sink.send(RunnerEvent::Finished(finished.clone())).await;
                Ok(ContainerRun {
                    finished,
                    oom_killed,
                    image,
                    container_id: id,
                    limits,
                })
            }
            Err(message) => Err(DockerError::Runner {
                container: id,
                message,
            }),
        }
    }

    fn container_body(
        &self,
        image: &str,
        limits: &Limits,
        network_mode: String,
        labels: HashMap<String, String>,
    ) -> ContainerCreateBody {
        let host_config = HostConfig {
            binds: Some(vec![format!(
                "{}:{RUNNER_MOUNT_PATH}:ro",
                self.config.runner_path.display()
            )]),
            network_mode: Some(network_mode),
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([(
                "/tmp".to_string(),
                // exec: the runner's bash helpers are small executables in the work directory.
                format!(
                    "rw,exec,nosuid,nodev,mode=1777,size={}",
                    self.config.tmpfs_bytes
                ),
            )])),
            cap_drop: Some(vec!["ALL".to_string()]),
            security_opt: Some(vec!["no-new-privileges".to_string()]),
            // A real init as PID 1 reaps orphans and forwards `docker stop`'s SIGTERM to the runner.
            init: Some(true),
            nano_cpus: limits.cpus.map(|c| (c * 1e9) as i64),
            memory: limits.memory_bytes,
            // Swap equal to memory: no swap, so that a hog is killed instead of crawling.
            memory_swap: limits.memory_bytes,
            pids_limit: limits.pids,
            ..Default::default()
        };
        ContainerCreateBody {
            image: Some(image.to_string()),
            user: Some(self.config.user.clone()),
            entrypoint: Some(vec![RUNNER_MOUNT_PATH.to_string()]),
            cmd: Some(vec![
                "run".to_string(),
                "-".to_string(),
                "--control-stdin".to_string(),
                "--work-base".to_string(),
                "/tmp".to_string(),
                // The runner is alone in the container's cgroup: its figures are the run's.
                "--cgroup-usage".to_string(),
            ]),
            env: Some(vec!["TMPDIR=/tmp".to_string(), "HOME=/tmp".to_string()]),
            // No WorkingDir=/tmp: the engine would then create /tmp in images that lack it and
            // mount the tmpfs with mode 0755 instead of 1777 (not writable by the user).
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            open_stdin: Some(true),
            stdin_once: Some(true),
            tty: Some(false),
            labels: Some(labels),
            host_config: Some(host_config),
            ..Default::default()
        }
    }

    /// Feeds the runner and collects its events. `Err` carries a message for a run that produced
    /// no final event (the runner crashed, could not start, or stopped answering).
    async fn drive(
        &self,
        id: &str,
        attach: bollard::container::AttachContainerResults,
        context: &cronium_protocol::RunContext,
        req: &RunRequest,
        sink: &EventSink,
        cancel: &CancellationToken,
    ) -> Result<Finished, String> {
        let bollard::container::AttachContainerResults { output, mut input } = attach;
        let stderr_tail = Arc::new(Mutex::new(StderrLines::default()));
        let (stderr_tx, mut stderr_rx) = mpsc::unbounded_channel::<bytes::Bytes>();
        let stdout = output.filter_map(move |item| {
            let stderr_tx = stderr_tx.clone();
            async move {
                match item {
                    Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                        Some(Ok(message))
                    }
                    Ok(LogOutput::StdErr { message }) => {
                        let _ = stderr_tx.send(message);
                        None
                    }
                    Ok(LogOutput::StdIn { .. }) => None,
                    Err(e) => Some(Err(std::io::Error::other(e))),
                }
            }
        });
        let reader = StreamReader::new(Box::pin(stdout));
        let (inner_tx, mut inner_rx) = mpsc::channel::<RunnerEvent>(256);
        let pump = async move {
            let r = pump_events(reader, &inner_tx).await;
            drop(inner_tx);
            r
        };
        // Everything but the final event goes straight to the agent; the final event is held back
        // so that it can be amended (OOM) before the agent sees it.
        let forward = async {
            while let Some(ev) = inner_rx.recv().await {
                if !matches!(ev, RunnerEvent::Finished(_)) {
                    let _ = sink.send(ev).await;
                }
            }
        };
        let tail = stderr_tail.clone();
        let stderr = async {
            while let Some(chunk) = stderr_rx.recv().await {
                let lines = tail.lock().map(|mut t| t.push(&chunk)).unwrap_or_default();
                for line in lines {
                    let _ = sink.send(system_line(format!("[runner] {line}"))).await;
                }
            }
        };
        let pumping = async {
            let (r, (), ()) = tokio::join!(pump, forward, stderr);
            r
        };
        tokio::pin!(pumping);

        // Input first: context line, payload length line, payload bytes. Stdin then stays open:
        // EOF means "cancel" to the runner.
        let feed = async {
            send_context(&mut input, context).await?;
            let payload = tokio::fs::read(&req.payload_path).await?;
            input
                .write_all(format!("{}\n", payload.len()).as_bytes())
                .await?;
            input.write_all(&payload).await?;
            input.flush().await
        };
        let deadline = tokio::time::sleep(req.hard_deadline());
        tokio::pin!(deadline);
        tokio::select! {
            r = feed => {
                if let Err(e) = r {
                    // The runner died before reading everything; its output says why.
                    tracing::warn!(container = id, error = %e, "writing the runner's input failed");
                }
            }
            _ = &mut deadline => {}
        }

        let mut cancelled = false;
        let mut backstop: Option<RunStatus> = None;
        let result = loop {
            tokio::select! {
                r = &mut pumping => break r,
                // API mode: answers to the runner's relayed runtime calls (its socket is inside
                // this container, so the run needs no network).
                control = next_control(&req.control) => {
                    let _ = send_control(&mut input, &control).await;
                }
                _ = cancel.cancelled(), if !cancelled => {
                    cancelled = true;
                    let _ = send_cancel(&mut input).await;
                    // The runner needs the grace to stop the script; then we stop it ourselves.
                    deadline.as_mut().reset(tokio::time::Instant::now() + req.kill_grace + Duration::from_secs(5));
                }
                _ = &mut deadline => {
                    if backstop.is_some() {
                        break Err(cronium_core::transport::TransportError::Lost(
                            "the container did not stop".into(),
                        ));
                    }
                    let status = if cancelled { RunStatus::Cancelled } else { RunStatus::TimedOut };
                    backstop = Some(status);
                    tracing::warn!(container = id, "runner missed its deadline; stopping the container");
                    let grace = if cancelled { 0 } else { req.kill_grace.as_secs().max(1) as i32 };
                    let _ = self
                        .docker
                        .stop_container(id, Some(StopContainerOptionsBuilder::default().t(grace).build()))
                        .await;
                    deadline.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(10));
                }
            }
        };
        let _ = input.shutdown().await;
        match (result, backstop) {
            (Ok(f), _) => Ok(f),
            (Err(_), Some(status)) => Ok(Finished {
                status,
                exit_code: Some(if status == RunStatus::Cancelled {
                    EXIT_CANCELLED
                } else {
                    EXIT_TIMEOUT
                }),
                signal: None,
                run_ms: 0,
                error: Some(format!(
                    "the runner did not finish in time; the container was stopped ({})",
                    if status == RunStatus::Cancelled {
                        "cancelled"
                    } else {
                        "hard deadline"
                    }
                )),
                usage: None,
            }),
            (Err(e), None) => {
                let tail = stderr_tail.lock().map(|t| t.tail()).unwrap_or_default();
                Err(if tail.is_empty() {
                    e.to_string()
                } else {
                    format!("{e}; runner stderr: {tail}")
                })
            }
        }
    }

    /// Waits for the container to exit (returns its exit code), killing it after `patience`.
    async fn wait_exit(&self, id: &str, patience: Duration) -> Option<i64> {
        let opts = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        let mut wait = self.docker.wait_container(id, Some(opts));
        match tokio::time::timeout(patience, wait.next()).await {
            Ok(Some(Ok(r))) => Some(r.status_code),
            // bollard turns a non-zero exit into an error carrying the code.
            Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. }))) => {
                Some(code)
            }
            _ => {
                let _ = self
                    .docker
                    .kill_container(
                        id,
                        Some(
                            KillContainerOptionsBuilder::default()
                                .signal("KILL")
                                .build(),
                        ),
                    )
                    .await;
                None
            }
        }
    }
}

/// The runner is mounted into arbitrary images (even `FROM scratch`): it must be a static ELF
/// executable. A dynamic one would fail in every container with an obscure "no such file".
fn check_static_elf(path: &std::path::Path) -> Result<(), DockerError> {
    use std::io::Read;
    let bad = |what: &str| DockerError::Config(format!("runner_path {}: {what}", path.display()));
    let mut head = Vec::new();
    std::fs::File::open(path)?
        .take(64 * 1024)
        .read_to_end(&mut head)?;
    if head.len() < 64 || &head[..4] != b"\x7fELF" || head[4] != 2 || head[5] != 1 {
        return Err(bad("not a 64-bit little-endian ELF executable"));
    }
    let u16_at = |o: usize| u16::from_le_bytes([head[o], head[o + 1]]) as usize;
    let mut phoff_bytes = [0u8; 8];
    phoff_bytes.copy_from_slice(&head[32..40]);
    let phoff = u64::from_le_bytes(phoff_bytes) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    for i in 0..phnum {
        let at = phoff.saturating_add(i.saturating_mul(phentsize));
        let Some(ptype) = head.get(at..at + 4) else {
            return Err(bad("program headers not where the ELF header says"));
        };
        // PT_INTERP: the binary needs a dynamic loader, which images do not have in general.
        if u32::from_le_bytes([ptype[0], ptype[1], ptype[2], ptype[3]]) == 3 {
            return Err(bad(
                "dynamically linked; containers need the static runner (built with crt-static)",
            ));
        }
    }
    Ok(())
}

/// Refuses network modes that would undo the isolation: the host's network stack, or another
/// container's.
fn check_network(network: &NetworkMode) -> Result<(), DockerError> {
    let NetworkMode::Named(name) = network else {
        return Ok(());
    };
    let bad = if name.trim().is_empty() {
        Some("must not be empty")
    } else if name == "host" {
        Some("the host network is not allowed (it would share the host's network stack)")
    } else if name.starts_with("container:") {
        Some("joining another container's network is not allowed")
    } else {
        None
    };
    match bad {
        Some(reason) => Err(DockerError::Spec(format!(
            "container.network {name:?}: {reason}"
        ))),
        None => Ok(()),
    }
}

/// Adds the out-of-memory verdict to a runner's result.
fn amend_oom(finished: &mut Finished, memory: Option<i64>) {
    let what = match memory {
        Some(m) => format!("out of memory (limit {})", format_bytes(m)),
        None => "out of memory".to_string(),
    };
    finished.error = Some(match finished.error.take() {
        Some(prev) if !prev.is_empty() => format!("{what}; {prev}"),
        _ => what,
    });
    if finished.status == RunStatus::Succeeded {
        // A process of the script was killed: the run did not do what it was meant to.
        finished.status = RunStatus::Failed;
    }
}

/// The run context as the runner in the container must see it. The agent resolved interpreters on
/// its own host; those paths mean nothing in the image, where they are found on `PATH` unless the
/// event names one.
fn context_for_container(
    req: &RunRequest,
    interpreter: Interpreter,
    spec: &ContainerSpec,
) -> cronium_protocol::RunContext {
    let mut ctx = req.context.clone();
    ctx.interpreters.clear();
    if let Some(path) = &spec.interpreter_path {
        ctx.interpreters.insert(interpreter, path.clone());
    }
    ctx.server = None;
    ctx
}

/// Splits the runner's stderr into lines and keeps the last few for error messages.
#[derive(Default)]
struct StderrLines {
    partial: Vec<u8>,
    last: std::collections::VecDeque<String>,
}

impl StderrLines {
    fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        self.partial.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(pos) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            self.last.push_back(line.clone());
            if self.last.len() > 5 {
                self.last.pop_front();
            }
            out.push(line);
        }
        out
    }

    fn tail(&self) -> String {
        let mut parts: Vec<String> = self.last.iter().cloned().collect();
        if !self.partial.is_empty() {
            parts.push(String::from_utf8_lossy(&self.partial).into_owned());
        }
        parts.join(" | ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_or_non_elf_runners_are_refused() {
        // This test binary itself is dynamically linked (the default for the gnu target).
        let me = std::env::current_exe().unwrap();
        let err = check_static_elf(&me).unwrap_err();
        assert!(err.to_string().contains("dynamically linked"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("runner.sh");
        std::fs::write(&script, "#!/bin/sh\n".repeat(10)).unwrap();
        let err = check_static_elf(&script).unwrap_err();
        assert!(err.to_string().contains("not a 64-bit"), "{err}");
    }

    #[test]
    fn networks_that_undo_isolation_are_refused() {
        for bad in ["host", "container:abc", " "] {
            let err = check_network(&NetworkMode::Named(bad.into())).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("invalid container settings: container.network"),
                "{err}"
            );
        }
        assert!(check_network(&NetworkMode::Named("backend".into())).is_ok());
        assert!(check_network(&NetworkMode::Isolated).is_ok());
    }

    #[test]
    fn oom_is_reported_with_the_limit() {
        let mut f = Finished {
            status: RunStatus::Failed,
            exit_code: Some(137),
            signal: Some(9),
            run_ms: 5,
            error: None,
            usage: None,
        };
        amend_oom(&mut f, Some(64 * 1024 * 1024));
        assert_eq!(f.error.as_deref(), Some("out of memory (limit 64 MiB)"));
    }

    #[test]
    fn stderr_is_split_into_lines_and_tail_kept() {
        let mut s = StderrLines::default();
        assert_eq!(s.push(b"a\nb"), vec!["a".to_string()]);
        assert_eq!(s.push(b"c\n"), vec!["bc".to_string()]);
        s.push(b"half");
        assert_eq!(s.tail(), "a | bc | half");
    }
}
