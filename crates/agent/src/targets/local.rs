//! The `local` target: the event's script in `cronium-runner`, a child process of the agent
//! ([`LocalTransport`], which `cronium run` uses on its own too).
//!
//! The runner reads the run context and then the payload from its stdin (so that it never needs
//! to read the data directory, where the payload cache lives) and treats EOF on stdin as
//! cancellation, so if the agent dies the runner still stops the script and cleans up. The agent
//! therefore never SIGKILLs the runner except as a last resort when it stops answering long
//! after its deadline.
//!
//! For the server, the runner starts with the clean environment and as the run user that
//! `isolation` decided, never with the server's own; `cronium run` (the user's own shell) keeps
//! its environment.
//!
//! With `prestart` (the server's agent), one runner is kept started ahead, waiting for its
//! context on stdin: a run takes it and starts the next one, so starting a runner process is
//! never on a run's critical path. It holds nothing before it is handed a run (no working
//! directory, no secret), runs with the same arguments, environment and user as any runner of
//! this transport, and exits by itself when the agent goes (EOF on its stdin).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cronium_core::transport::{
    next_control, pump_until_finished, send_cancel, send_context, send_control, EventSink,
    RunRequest, TransportError,
};
use cronium_protocol::Finished;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{
    Child, ChildStderr as Stderr, ChildStdin as Stdin, ChildStdout as Stdout, Command,
};
use tokio_util::sync::CancellationToken;

use super::Target;
use crate::claim_gate::ClaimGate;
use crate::exec::{failed, ExecResult, JobError, RunCtx};
use crate::isolation::RunUser;

/// The local target: one execution, in this agent's [`LocalTransport`].
pub(crate) struct Local;

#[async_trait]
impl Target for Local {
    async fn run(&self, ctx: &RunCtx, gate: &mut ClaimGate) -> Result<Vec<ExecResult>, JobError> {
        // Everything that can fail before the run is done before its execution exists, so
        // that a job that never ran leaves no execution stuck in `pending`.
        let payload = ctx.payload()?;
        let variables = ctx.variables().await?;
        let exec = ctx.start_execution().await?;
        gate.open();
        let sink = ctx.recorder.sink_for(Some(exec));
        let mut req = ctx.run_request(&payload, exec, None, variables);
        let helpers = ctx.enable_api(&mut req, Ok(())).await;
        let finished = match ctx.inner.local.run(&req, &sink, ctx.cancel.clone()).await {
            Ok(f) => f,
            // The runner could not be started or vanished: worth another attempt.
            Err(e) => failed(e.to_string()),
        };
        drop(sink);
        let mut result = ExecResult::new(Some(exec), None, finished);
        result.extra = helpers;
        Ok(vec![result])
    }
}

#[derive(Debug, Clone, Default)]
pub struct LocalTransport {
    /// The `cronium-runner` binary.
    pub runner: PathBuf,
    /// Where runners create their working directories (default: the system temp dir).
    pub work_base: Option<PathBuf>,
    /// The runner's whole environment (see `isolation::run_env`); None: this process's own.
    pub env: Option<BTreeMap<String, String>>,
    /// The user the runner runs as; None: this process's user.
    pub run_user: Option<RunUser>,
    /// Paths the runner hides from the script with Landlock (`--hide`): the data directory,
    /// when scripts run as the server's own user.
    pub hide: Vec<PathBuf>,
    /// The umask of the runner and so of the script: the one the server started with (the
    /// server itself runs with 077 so that its own files are private).
    pub umask: Option<u32>,
    /// Keep one runner started ahead of the next run (see the module's documentation).
    pub prestart: bool,
    /// The runner started ahead, when `prestart`; shared by the clones of this transport.
    pub warm: Arc<Mutex<Option<Child>>>,
}

impl LocalTransport {
    /// A transport for `cronium run`: the caller's environment and user.
    pub fn inheriting(runner: PathBuf) -> Self {
        LocalTransport {
            runner,
            ..Default::default()
        }
    }

    /// A runner ready for a run, and whether it was started ahead: the one started ahead if it
    /// is still alive, else a new one.
    fn runner_for_run(&self) -> Result<(Child, Stdin, Stdout, Stderr, bool), TransportError> {
        let warm = match self.prestart {
            true => self.warm.lock().ok().and_then(|mut w| w.take()),
            false => None,
        };
        if let Some(mut child) = warm {
            // Gone meanwhile (killed, out of memory): start one the usual way.
            if let Ok(None) = child.try_wait() {
                if let Some((stdin, stdout, stderr)) = take_pipes(&mut child) {
                    return Ok((child, stdin, stdout, stderr, true));
                }
            }
            let _ = child.start_kill();
        }
        let (child, stdin, stdout, stderr) = self.new_runner()?;
        Ok((child, stdin, stdout, stderr, false))
    }

    /// A runner started now, with its pipes.
    fn new_runner(&self) -> Result<(Child, Stdin, Stdout, Stderr), TransportError> {
        let mut child = self.spawn_runner()?;
        let (stdin, stdout, stderr) = take_pipes(&mut child)
            .ok_or_else(|| TransportError::Spawn("runner pipes unavailable".into()))?;
        Ok((child, stdin, stdout, stderr))
    }

    /// With `prestart`, starts the runner of the next run unless one is waiting already. A
    /// failure is only logged: the next run then starts its runner itself, and reports why.
    fn prestart_next(&self) {
        if !self.prestart {
            return;
        }
        let Ok(mut warm) = self.warm.lock() else {
            return;
        };
        if warm.is_some() {
            return;
        }
        match self.spawn_runner() {
            Ok(child) => *warm = Some(child),
            Err(e) => tracing::warn!(error = %e, "cannot start a runner ahead of the next run"),
        }
    }

    /// Starts `cronium-runner run - --control-stdin` with this transport's settings; it waits
    /// for its context on stdin.
    fn spawn_runner(&self) -> Result<Child, TransportError> {
        // Nothing runs between fork and exec: the runner sets its umask and becomes the run user
        // itself (`--umask`, `--run-as`) before anything else, so that the standard library
        // starts it with posix_spawn rather than a fork of this server's whole address space.
        let mut cmd = Command::new(&self.runner);
        cmd.arg("run").arg("-").arg("--control-stdin");
        if let Some(base) = &self.work_base {
            cmd.arg("--work-base").arg(base);
        }
        for path in &self.hide {
            cmd.arg("--hide").arg(path);
        }
        if let Some(mask) = self.umask {
            cmd.arg("--umask").arg(format!("{mask:03o}"));
        }
        if let Some(user) = &self.run_user {
            cmd.arg("--run-as").arg(user.runner_arg());
            // The server's working directory may be one the run user cannot enter.
            cmd.current_dir("/");
        }
        if let Some(env) = &self.env {
            cmd.env_clear().envs(env);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| TransportError::Spawn(format!("{}: {e}", self.runner.display())))
    }

    pub async fn run(
        &self,
        req: &RunRequest,
        sink: &EventSink,
        cancel: CancellationToken,
    ) -> Result<Finished, TransportError> {
        // A payload is a compressed script (kilobytes) read back from the page cache: read in
        // place, without the blocking pool's two thread hops on every run.
        let payload = std::fs::read(&req.payload_path).map_err(|e| {
            TransportError::Spawn(format!(
                "cannot read the payload {}: {e}",
                req.payload_path.display()
            ))
        })?;
        let seen = AtomicBool::new(false);
        let (result, warm) = self.run_once(req, sink, &cancel, &payload, &seen).await;
        if warm && !seen.load(Ordering::Relaxed) && !cancel.is_cancelled() {
            if let Err(TransportError::NoResult(why)) = &result {
                // The runner started ahead died after the check, its pipe taking the hand-over
                // (killed, out of memory): it said nothing, so the script never started. Once
                // more, on a runner started now.
                tracing::warn!(reason = ?why, "the runner started ahead died before the run began; starting another");
                let seen = AtomicBool::new(false);
                return self.run_once(req, sink, &cancel, &payload, &seen).await.0;
            }
        }
        result
    }

    /// One try of [`LocalTransport::run`]: on the runner started ahead when there is one
    /// (the bool says so), else on a new one. `seen` is set once the runner says anything.
    async fn run_once(
        &self,
        req: &RunRequest,
        sink: &EventSink,
        cancel: &CancellationToken,
        payload: &[u8],
        seen: &AtomicBool,
    ) -> (Result<Finished, TransportError>, bool) {
        let started = match self.runner_for_run() {
            Ok(r) => r,
            Err(e) => return (Err(e), false),
        };
        let (mut child, mut stdin, mut stdout, mut stderr, warm) = started;
        if let Err(e) = hand_over(&mut stdin, req, payload).await {
            if !warm {
                return (Err(e), false);
            }
            // The runner started ahead died between the check and the hand-over: a new one.
            let _ = child.start_kill();
            (child, stdin, stdout, stderr) = match self.new_runner() {
                Ok(r) => r,
                Err(e) => return (Err(e), false),
            };
            if let Err(e) = hand_over(&mut stdin, req, payload).await {
                return (Err(e), false);
            }
        }
        // The next run's runner starts while this one runs, on another of the runtime's threads:
        // starting a process is not this run's business.
        if self.prestart {
            let transport = self.clone();
            tokio::spawn(async move { transport.prestart_next() });
        }

        // The runner's own diagnostics, kept for the error message if it ends without a result.
        let diag = tokio::spawn(async move {
            let mut buf = Vec::new();
            let _ = (&mut stderr).take(64 * 1024).read_to_end(&mut buf).await;
            String::from_utf8_lossy(&buf).trim().to_string()
        });

        let pump = pump_until_finished(BufReader::with_capacity(64 * 1024, stdout), sink, seen);
        tokio::pin!(pump);
        let deadline = tokio::time::sleep(req.hard_deadline());
        tokio::pin!(deadline);
        let mut cancelled = false;
        let result = loop {
            tokio::select! {
                r = &mut pump => break r,
                // API mode: the answers to the runner's relayed runtime API calls.
                control = next_control(&req.control) => {
                    let _ = send_control(&mut stdin, &control).await;
                }
                _ = cancel.cancelled(), if !cancelled => {
                    cancelled = true;
                    // Either a cancel line or EOF makes the runner stop the script.
                    let _ = send_cancel(&mut stdin).await;
                }
                _ = &mut deadline => {
                    let _ = child.start_kill();
                    break Err(TransportError::Lost(format!(
                        "runner did not finish within {:?} of its deadline; killed",
                        req.hard_deadline()
                    )));
                }
            }
        };
        drop(stdin);
        if result.is_ok() {
            // After `finished` the runner removes its run directory and exits: reaped here in
            // the background while the run's result is recorded (and killed if it hangs).
            drop(diag);
            tokio::spawn(reap(child));
            return (result, warm);
        }
        let pid = child.id();
        let status = reap(child).await;
        let result = match result {
            Err(TransportError::NoResult(_)) => {
                let mut msg = diag.await.unwrap_or_default();
                if msg.is_empty() {
                    // Nothing said: at least how it ended (a kill shows as its signal).
                    msg = match status {
                        Some(s) => format!("runner {} {s}", pid.unwrap_or_default()),
                        None => "its exit status is unknown".into(),
                    };
                }
                Err(TransportError::NoResult(Some(msg)))
            }
            other => other,
        };
        (result, warm)
    }
}

/// Waits for a runner's exit, killing it if it takes more than 10 s; how it ended.
async fn reap(mut child: Child) -> Option<std::process::ExitStatus> {
    match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
        Ok(status) => status.ok(),
        Err(_) => {
            let _ = child.start_kill();
            child.wait().await.ok()
        }
    }
}

fn take_pipes(child: &mut Child) -> Option<(Stdin, Stdout, Stderr)> {
    Some((
        child.stdin.take()?,
        child.stdout.take()?,
        child.stderr.take()?,
    ))
}

/// Writes the run's context, then the payload's length and bytes, to the runner's stdin.
async fn hand_over(
    stdin: &mut Stdin,
    req: &RunRequest,
    payload: &[u8],
) -> Result<(), TransportError> {
    send_context(stdin, &req.context).await?;
    stdin
        .write_all(format!("{}\n", payload.len()).as_bytes())
        .await?;
    stdin.write_all(payload).await?;
    stdin.flush().await?;
    Ok(())
}
