//! The contract between the agent and the transports that carry a payload to a runner (a local
//! child process, a container, an SSH channel) and its event stream back.
//!
//! A transport gets a [`RunRequest`], makes `cronium-runner run PAYLOAD --control-stdin` happen
//! wherever it runs, writes the run context as the first line of the runner's stdin, forwards every
//! [`RunnerEvent`] of the runner's stdout to the agent's channel, and on cancellation writes a
//! cancel control line (or closes stdin). Timeouts are enforced by the runner itself, from the
//! manifest; a transport only adds a safety margin for a runner that stops answering.

use std::path::PathBuf;
use std::time::Duration;

use cronium_protocol::{Control, Finished, RunContext, RunnerEvent};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// One execution to carry out.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The payload archive on the agent's disk (content-addressed).
    pub payload_path: PathBuf,
    /// SHA-256 of the archive, hex.
    pub payload_sha256: String,
    pub context: RunContext,
    /// The event's timeout (also in the manifest, where the runner enforces it).
    pub timeout: Duration,
    /// SIGTERM-to-SIGKILL grace (also in the manifest).
    pub kill_grace: Duration,
    /// API mode: the answers to the runner's relayed runtime API calls
    /// ([`RunnerEvent::ApiCall`]), which the transport writes to the runner's stdin as they
    /// come ([`next_control`], [`send_control`]). `None`: the run makes no such calls.
    pub control: Option<ControlRx>,
}

/// The receiving end of a run's control messages (see [`RunRequest::control`]); shared so that
/// the request stays `Clone`, but read by one transport only.
pub type ControlRx = std::sync::Arc<tokio::sync::Mutex<mpsc::Receiver<Control>>>;

/// The next control message for the runner; never resolves when there is none to wait for
/// (no channel, or its sender is gone), so that it can sit in a `select!`.
pub async fn next_control(control: &Option<ControlRx>) -> Control {
    if let Some(rx) = control {
        if let Some(c) = rx.lock().await.recv().await {
            return c;
        }
    }
    std::future::pending().await
}

/// Writes one control line to the runner's stdin.
pub async fn send_control<W: AsyncWrite + Unpin>(
    stdin: &mut W,
    control: &Control,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(control).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stdin.write_all(&line).await?;
    stdin.flush().await
}

impl RunRequest {
    /// How long a transport waits for the runner's final event before it gives up on the runner:
    /// the timeout, the grace period and a margin for setup and cleanup.
    pub fn hard_deadline(&self) -> Duration {
        self.timeout + self.kill_grace + Duration::from_secs(30)
    }
}

/// Where runner events go: the agent stores them in order.
pub type EventSink = mpsc::Sender<RunnerEvent>;

/// Failures of the transport itself (not of the script).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("could not start the runner: {0}")]
    Spawn(String),
    #[error("runner output is not valid: {0}")]
    Protocol(String),
    #[error("the runner ended without reporting a result{}", .0.as_ref().map(|s| format!(" ({s})")).unwrap_or_default())]
    NoResult(Option<String>),
    #[error("lost contact with the runner: {0}")]
    Lost(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Writes the run context as the first line of the runner's stdin.
pub async fn send_context<W: AsyncWrite + Unpin>(
    stdin: &mut W,
    context: &RunContext,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(context).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stdin.write_all(&line).await?;
    stdin.flush().await
}

/// Writes a cancel control line to the runner's stdin.
pub async fn send_cancel<W: AsyncWrite + Unpin>(stdin: &mut W) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(&Control::Cancel).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stdin.write_all(&line).await?;
    stdin.flush().await
}

/// Reads the runner's stdout to its end, forwarding every event to `sink`, and returns the final
/// result. Lines that are not events (a runner must print none, but a broken host might) are
/// forwarded as system log lines rather than dropped.
pub async fn pump_events<R: AsyncBufRead + Unpin>(
    reader: R,
    sink: &EventSink,
) -> Result<Finished, TransportError> {
    let mut lines = reader.lines();
    let mut finished = None;
    while let Some(line) = lines.next_line().await? {
        if let Some(RunnerEvent::Finished(f)) = forward_line(&line, sink).await {
            finished = Some(f);
        }
    }
    finished.ok_or(TransportError::NoResult(None))
}

/// As [`pump_events`], but returns as soon as the `finished` event is forwarded: the runner's
/// last event, after which it only removes its run directory and exits. A local transport
/// reaps the process after that, off the run's path. Without a `finished` event, reads to the
/// end like [`pump_events`]. `seen` is set at the first line read.
pub async fn pump_until_finished<R: AsyncBufRead + Unpin>(
    reader: R,
    sink: &EventSink,
    seen: &std::sync::atomic::AtomicBool,
) -> Result<Finished, TransportError> {
    let mut lines = reader.lines();
    while let Some(line) = lines.next_line().await? {
        seen.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(RunnerEvent::Finished(f)) = forward_line(&line, sink).await {
            return Ok(f);
        }
    }
    Err(TransportError::NoResult(None))
}

/// Forwards one line of a runner's stdout to `sink` and returns the event it carried. A line
/// that is not an event is forwarded as a system log line (and `None` returned); an empty line
/// is skipped.
pub async fn forward_line(line: &str, sink: &EventSink) -> Option<RunnerEvent> {
    if line.is_empty() {
        return None;
    }
    match RunnerEvent::parse(line) {
        Ok(event) => {
            let _ = sink.send(event.clone()).await;
            Some(event)
        }
        Err(_) => {
            tracing::warn!(line = %line, "non-protocol line from runner");
            let _ = sink
                .send(RunnerEvent::Log {
                    seq: 0, // the agent numbers lines per job
                    stream: cronium_protocol::Stream::System,
                    line: format!("[runner] {line}"),
                    ts_ms: 0,
                })
                .await;
            None
        }
    }
}
