//! The `local` transport: `cronium-runner` as a child process of the agent.
//!
//! The runner reads the run context from its stdin and treats EOF on stdin as cancellation, so
//! if the agent dies the runner still stops the script and cleans up. The agent therefore never
//! SIGKILLs the runner except as a last resort when it stops answering long after its deadline.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use cronium_core::transport::{
    pump_events, send_cancel, send_context, EventSink, RunRequest, TransportError,
};
use cronium_protocol::Finished;
use tokio::io::{AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct LocalTransport {
    /// The `cronium-runner` binary.
    pub runner: PathBuf,
    /// Where runners create their working directories (default: the system temp dir).
    pub work_base: Option<PathBuf>,
}

impl LocalTransport {
    pub async fn run(
        &self,
        req: &RunRequest,
        sink: &EventSink,
        cancel: CancellationToken,
    ) -> Result<Finished, TransportError> {
        let mut cmd = Command::new(&self.runner);
        cmd.arg("run").arg(&req.payload_path).arg("--control-stdin");
        if let Some(base) = &self.work_base {
            cmd.arg("--work-base").arg(base);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| TransportError::Spawn(format!("{}: {e}", self.runner.display())))?;
        let (Some(mut stdin), Some(stdout), Some(mut stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(TransportError::Spawn("runner pipes unavailable".into()));
        };
        send_context(&mut stdin, &req.context).await?;

        // The runner's own diagnostics, kept for the error message if it ends without a result.
        let diag = tokio::spawn(async move {
            let mut buf = Vec::new();
            let _ = (&mut stderr).take(64 * 1024).read_to_end(&mut buf).await;
            String::from_utf8_lossy(&buf).trim().to_string()
        });

        let pump = pump_events(BufReader::with_capacity(64 * 1024, stdout), sink);
        tokio::pin!(pump);
        let deadline = tokio::time::sleep(req.hard_deadline());
        tokio::pin!(deadline);
        let mut cancelled = false;
        let result = loop {
            tokio::select! {
                r = &mut pump => break r,
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
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        if status.is_err() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        match result {
            Err(TransportError::NoResult(_)) => {
                let msg = diag.await.unwrap_or_default();
                Err(TransportError::NoResult((!msg.is_empty()).then_some(msg)))
            }
            other => other,
        }
    }
}
