//! One runner-ssh execution on an already deployed runner: `RUNNER run - --control-stdin` on one
//! exec channel, with the run context, the payload length and the payload streamed over stdin
//! (the payload never touches the host's disk outside the runner's own workdir), the event stream
//! forwarded to the sink, and cancellation as a cancel line followed by EOF. OpenSSH refuses
//! signal requests for many sessions, so no SSH signal is ever used.

use std::time::Duration;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use cronium_core::transport::{
    next_control, pump_events, send_cancel, send_context, send_control, EventSink, RunRequest,
    TransportError,
};
use cronium_protocol::{Finished, RunnerEvent};
use russh::ChannelMsg;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

use crate::connection::Conn;
use crate::shell::quote;
use crate::{ServerConfig, SshError};

/// The runner's stdin, after the context and payload went through.
type Stdin = Box<dyn tokio::io::AsyncWrite + Send + Unpin>;

/// Why a runner run produced no result.
pub(crate) enum RunnerRunError {
    /// The runner binary is not on the host (deleted behind our back): redeploy and retry.
    Missing(String),
    /// Any other failure, with the script's pid (its process group) when the runner had
    /// started it: after a lost connection the caller kills that group over a new one.
    Other(SshError, Option<u32>),
}

/// What the channel reader saw besides stdout.
#[derive(Default)]
struct ChannelEnd {
    status: Option<u32>,
    signal: Option<String>,
    stderr: Vec<u8>,
}

/// Cap on the runner's stderr kept for error messages (the runner reports through stdout).
pub(crate) const STDERR_CAP: usize = 16 * 1024;
/// After cancellation or the hard deadline, how long the runner gets to report.
pub(crate) const REPORT_GRACE: Duration = Duration::from_secs(10);

/// Whether a runner command that ended with `status` and `stderr` failed because the binary is
/// not on the host (deleted behind our back): the shell's "not found" or "cannot execute".
pub(crate) fn runner_missing(status: Option<u32>, stderr: &str) -> bool {
    status == Some(127)
        || status == Some(126)
        || stderr.contains("No such file")
        || stderr.contains("not found")
}

/// The request's payload file cannot be read.
pub(crate) fn unreadable_payload(req: &RunRequest, e: std::io::Error) -> RunnerRunError {
    RunnerRunError::Other(
        SshError::InvalidRequest {
            field: "payload_path".into(),
            reason: format!("cannot open {}: {e}", req.payload_path.display()),
        },
        None,
    )
}

pub(crate) async fn run_runner(
    conn: &Conn,
    server: &ServerConfig,
    runner_path: &str,
    work_base_arg: &str,
    req: &RunRequest,
    sink: &EventSink,
    cancel: &CancellationToken,
) -> Result<Finished, RunnerRunError> {
    let lost = |reason: String| {
        RunnerRunError::Other(
            SshError::Lost {
                server: server.name.clone(),
                reason,
            },
            None,
        )
    };
    let payload = tokio::fs::File::open(&req.payload_path)
        .await
        .map_err(|e| unreadable_payload(req, e))?;
    let payload_len = payload
        .metadata()
        .await
        .map_err(|e| RunnerRunError::Other(SshError::Io(e.to_string()), None))?
        .len();

    let channel = conn
        .handle
        .channel_open_session()
        .await
        .map_err(|e| lost(format!("cannot open a channel: {e}")))?;
    let (mut read, write) = channel.split();
    let command = format!(
        "{} run - --control-stdin{}",
        quote(runner_path),
        work_base_arg
    );
    // No reply awaited: stdin follows at once (the channel keeps the order), saving a round
    // trip per run; a failed exec shows up as a closed channel without a result.
    write
        .exec(false, command)
        .await
        .map_err(|e| lost(format!("exec request failed: {e}")))?;

    // stdin: context line, payload length line, payload bytes. The channel stays open afterwards
    // for control lines; the runner treats EOF as cancel.
    let mut writer: Stdin = Box::new(write.make_writer());
    let context = req.context.clone();
    let mut stdin_task = tokio::spawn(async move {
        let mut payload = payload;
        send_context(&mut writer, &context).await?;
        writer
            .write_all(format!("{payload_len}\n").as_bytes())
            .await?;
        tokio::io::copy(&mut payload, &mut writer).await?;
        writer.flush().await?;
        Ok::<_, std::io::Error>(writer)
    });

    // stdout goes through a pipe into the shared event pump; the rest is kept for diagnosis.
    let (mut pipe_w, pipe_r) = tokio::io::duplex(64 * 1024);
    let reader_task = tokio::spawn(async move {
        let mut end = ChannelEnd::default();
        while let Some(msg) = read.wait().await {
            match msg {
                ChannelMsg::Data { data } => {
                    // Once the pump has stopped this fails at once; reading goes on for the
                    // exit status.
                    let _ = pipe_w.write_all(&data).await;
                }
                ChannelMsg::ExtendedData { data, .. } => {
                    let room = STDERR_CAP.saturating_sub(end.stderr.len());
                    end.stderr.extend_from_slice(&data[..data.len().min(room)]);
                }
                ChannelMsg::ExitStatus { exit_status } => end.status = Some(exit_status),
                ChannelMsg::ExitSignal { signal_name, .. } => {
                    end.signal = Some(format!("{signal_name:?}"))
                }
                ChannelMsg::Eof => {
                    let _ = pipe_w.shutdown().await;
                }
                ChannelMsg::Close => break,
                _ => {}
            }
        }
        drop(pipe_w);
        end
    });

    // Events pass through a forwarder that notes the script's pid from `Started`.
    let (inner_tx, mut inner_rx) = tokio::sync::mpsc::channel::<RunnerEvent>(1024);
    let script_pid = Arc::new(AtomicU32::new(0));
    let forwarder = {
        let (sink, script_pid) = (sink.clone(), script_pid.clone());
        tokio::spawn(async move {
            while let Some(event) = inner_rx.recv().await {
                if let RunnerEvent::Started { pid, .. } = &event {
                    script_pid.store(*pid, Ordering::Relaxed);
                }
                let _ = sink.send(event).await;
            }
        })
    };
    // Boxed so that it can be dropped (ending its borrow of `inner_tx`) before the forwarder is
    // awaited.
    let mut pump = Box::pin(pump_events(BufReader::new(pipe_r), &inner_tx));
    let hard = tokio::time::sleep(req.hard_deadline());
    tokio::pin!(hard);
    let mut stopping = false;
    let mut stdin_done: Option<Result<_, String>> = None;
    let result = loop {
        tokio::select! {
            r = &mut pump => break r,
            r = &mut stdin_task, if stdin_done.is_none() => {
                stdin_done = Some(match r {
                    Ok(Ok(w)) => Ok(w),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(e.to_string()),
                });
            }
            // API mode: answers to the runner's relayed runtime calls, once the payload is sent.
            control = next_control(&req.control), if matches!(stdin_done, Some(Ok(_))) => {
                if let Some(Ok(w)) = stdin_done.as_mut() {
                    let _ = send_control(w, &control).await;
                }
            }
            _ = cancel.cancelled(), if !stopping => {
                stopping = true;
                stop(&write, &mut stdin_task, &mut stdin_done).await;
                hard.as_mut().reset(tokio::time::Instant::now() + req.kill_grace + REPORT_GRACE);
            }
            _ = &mut hard => {
                if stopping {
                    // Even the cancel went unanswered: give up on this runner.
                    let _ = write.close().await;
                    reader_task.abort();
                    break Err(TransportError::Lost(format!(
                        "the runner did not report a result within {} s of the deadline",
                        (req.kill_grace + REPORT_GRACE).as_secs()
                    )));
                }
                tracing::warn!(server = %server.name, "runner silent past the hard deadline; cancelling");
                stopping = true;
                stop(&write, &mut stdin_task, &mut stdin_done).await;
                hard.as_mut().reset(tokio::time::Instant::now() + req.kill_grace + REPORT_GRACE);
            }
        }
    };
    drop(pump);
    drop(inner_tx);
    // Every event is in the sink before the run returns.
    let _ = forwarder.await;
    let pid = match script_pid.load(Ordering::Relaxed) {
        0 => None,
        p => Some(p),
    };
    if !stdin_task.is_finished() {
        stdin_task.abort();
    }
    let end = match tokio::time::timeout(Duration::from_secs(5), reader_task).await {
        Ok(Ok(end)) => end,
        _ => ChannelEnd::default(),
    };
    let _ = write.close().await;
    match result {
        Ok(finished) => Ok(finished),
        Err(e) => {
            let stderr = String::from_utf8_lossy(&end.stderr).trim().to_string();
            if runner_missing(end.status, &stderr) {
                return Err(RunnerRunError::Missing(format!(
                    "exit status {:?}: {stderr}",
                    end.status
                )));
            }
            if let TransportError::Lost(reason) = e {
                return Err(RunnerRunError::Other(
                    SshError::Lost {
                        server: server.name.clone(),
                        reason,
                    },
                    pid,
                ));
            }
            if conn.handle.is_closed() || (end.status.is_none() && end.signal.is_none()) {
                return Err(RunnerRunError::Other(
                    SshError::Lost {
                        server: server.name.clone(),
                        reason: format!(
                            "the connection closed before the runner reported a result ({e})"
                        ),
                    },
                    pid,
                ));
            }
            Err(RunnerRunError::Other(
                SshError::Protocol {
                    server: server.name.clone(),
                    reason: format!(
                        "the runner ended (status {:?}, signal {:?}) without a result: {}{}",
                        end.status,
                        end.signal,
                        e,
                        if stderr.is_empty() {
                            String::new()
                        } else {
                            format!("; stderr: {stderr}")
                        }
                    ),
                },
                pid,
            ))
        }
    }
}

/// Asks the runner to stop: a cancel line when stdin is free, then EOF (which the runner also
/// reads as cancel, covering a payload that was still being sent).
async fn stop(
    write: &russh::ChannelWriteHalf<russh::client::Msg>,
    stdin_task: &mut tokio::task::JoinHandle<std::io::Result<Stdin>>,
    stdin_done: &mut Option<Result<Stdin, String>>,
) {
    if stdin_done.is_none() {
        if stdin_task.is_finished() {
            *stdin_done = Some(match stdin_task.await {
                Ok(Ok(w)) => Ok(w),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            });
        } else {
            stdin_task.abort();
        }
    }
    if let Some(Ok(w)) = stdin_done.as_mut() {
        let _ = send_cancel(w).await;
    }
    let _ = write.eof().await;
}
