//! runner-ssh on a persistent `cronium-runner serve` channel: one per pooled connection, started
//! by the connection's first run and kept for the connection's life, so that a warm run costs
//! one request on an open channel instead of a new SSH session, a login shell and a runner exec.
//! The framing is described in the runner's `serve.rs`; each run there is an ordinary
//! `cronium-runner run - --control-stdin` child, so the event stream is exactly the per-run one.
//!
//! A lease gives one run exclusive use of its connection, so a session serves one run at a time;
//! lines of an earlier run that was abandoned (ids differ) are skipped. When the session cannot
//! be started for a reason other than a missing binary, the caller falls back to one exec
//! channel per run (`runner_run.rs`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cronium_core::transport::{
    forward_line, next_control, send_context, send_control, EventSink, RunRequest,
};
use cronium_protocol::{Finished, RunnerEvent};
use russh::ChannelMsg;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::connection::Conn;
use crate::runner_run::{
    runner_missing, unreadable_payload, RunnerRunError, REPORT_GRACE, STDERR_CAP,
};
use crate::shell::quote;
use crate::{ServerConfig, SshError};

/// Lines buffered between the channel reader and the run (backpressure beyond that: the reader
/// waits, the SSH window fills, the remote runner blocks on its stdout).
const LINE_BUFFER: usize = 4096;
/// Exit code of a run the serve refused because its binary was deleted (runner's serve.rs).
const EXIT_MISSING: i32 = 127;

/// What the channel reader saw besides the lines.
#[derive(Default)]
struct SessionEnd {
    status: Option<u32>,
    stderr: Vec<u8>,
}

/// A running `cronium-runner serve` on one connection.
pub(crate) struct ServeSession {
    path: String,
    write: russh::ChannelWriteHalf<russh::client::Msg>,
    lines: mpsc::Receiver<String>,
    end: Arc<Mutex<SessionEnd>>,
    next_id: u64,
    /// `!ready` seen. The first run does not wait for it before sending its request (a round
    /// trip saved per host on a cold fan-out); it checks it before anything else it reads.
    ready: bool,
    /// Set when a run could not tell where the stream stands (lost lines, protocol error).
    broken: bool,
    /// This runner has no serve mode (it refused it): later runs on the connection go straight
    /// to an exec channel of their own instead of asking again.
    unsupported: bool,
}

/// Why starting a session failed.
pub(crate) enum StartError {
    /// The binary is not on the host: redeploy.
    Missing(String),
    /// Anything else: fall back to an exec channel per run.
    Other(String),
}

impl ServeSession {
    async fn start(conn: &Conn, path: &str, work_base_arg: &str) -> Result<Self, StartError> {
        let channel = conn
            .handle
            .channel_open_session()
            .await
            .map_err(|e| StartError::Other(format!("cannot open a channel: {e}")))?;
        let (mut read, write) = channel.split();
        write
            .exec(false, format!("{} serve{work_base_arg}", quote(path)))
            .await
            .map_err(|e| StartError::Other(format!("exec request failed: {e}")))?;
        let (tx, lines) = mpsc::channel(LINE_BUFFER);
        let end = Arc::new(Mutex::new(SessionEnd::default()));
        {
            let end = end.clone();
            tokio::spawn(async move {
                let mut buf: Vec<u8> = Vec::new();
                while let Some(msg) = read.wait().await {
                    match msg {
                        ChannelMsg::Data { data } => {
                            buf.extend_from_slice(&data);
                            while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                                let line: Vec<u8> = buf.drain(..=nl).collect();
                                let text = String::from_utf8_lossy(&line[..nl]).into_owned();
                                if tx.send(text).await.is_err() {
                                    // The session was dropped; nobody reads any more.
                                    return;
                                }
                            }
                        }
                        ChannelMsg::ExtendedData { data, .. } => {
                            if let Ok(mut e) = end.lock() {
                                let room = STDERR_CAP.saturating_sub(e.stderr.len());
                                e.stderr.extend_from_slice(&data[..data.len().min(room)]);
                            }
                        }
                        ChannelMsg::ExitStatus { exit_status } => {
                            if let Ok(mut e) = end.lock() {
                                e.status = Some(exit_status);
                            }
                        }
                        ChannelMsg::Close => break,
                        _ => {}
                    }
                }
                // Dropping `tx` tells the session the channel is gone.
            });
        }
        Ok(ServeSession {
            path: path.to_string(),
            write,
            lines,
            end,
            next_id: 0,
            ready: false,
            broken: false,
            unsupported: false,
        })
    }

    /// Why the serve process ended before it said `!ready`: a missing binary, or anything else.
    fn start_failure(&self) -> StartError {
        let (status, stderr) = self
            .end
            .lock()
            .map(|e| {
                (
                    e.status,
                    String::from_utf8_lossy(&e.stderr).trim().to_string(),
                )
            })
            .unwrap_or_default();
        let why = format!("exit status {status:?}: {stderr}");
        if runner_missing(status, &stderr) {
            StartError::Missing(why)
        } else {
            StartError::Other(format!("the runner's serve mode ended at once ({why})"))
        }
    }

    /// The serve process has said `!ready`.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    fn stderr(&self) -> String {
        self.end
            .lock()
            .map(|e| String::from_utf8_lossy(&e.stderr).trim().to_string())
            .unwrap_or_default()
    }
}

/// Makes sure `conn` has a live session for the runner at `path`.
pub(crate) async fn ensure_session<'a>(
    conn: &'a Conn,
    path: &str,
    work_base_arg: &str,
) -> Result<tokio::sync::MappedMutexGuard<'a, ServeSession>, StartError> {
    let mut guard = conn.serve.lock().await;
    if guard
        .as_ref()
        .is_some_and(|s| s.path == path && s.unsupported)
    {
        return Err(StartError::Other(
            "this runner has no serve mode (seen earlier on this connection)".into(),
        ));
    }
    let usable = guard
        .as_ref()
        .is_some_and(|s| s.path == path && !s.broken && !s.lines.is_closed());
    if !usable {
        if let Some(old) = guard.take() {
            // Closing the channel ends the old serve (EOF cancels anything it still runs).
            let _ = old.write.eof().await;
            let _ = old.write.close().await;
        }
        *guard = Some(ServeSession::start(conn, path, work_base_arg).await?);
    }
    // Some by now: kept above, or just started.
    tokio::sync::MutexGuard::try_map(guard, Option::as_mut)
        .map_err(|_| StartError::Other("no serve session".into()))
}

/// Payload archives being sent, by SHA-256: the runs of one fan-out (hundreds of servers at
/// once) share one read of the file instead of one blocking-pool read each. Entries are weak,
/// so the bytes live only as long as some run still holds them.
static PAYLOADS: Mutex<Vec<(String, std::sync::Weak<[u8]>)>> = Mutex::new(Vec::new());
/// Held while a payload is read, so that concurrent first runs wait for one read.
static LOADING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn cached_payload(sha256: &str) -> Option<Arc<[u8]>> {
    let list = PAYLOADS.lock().unwrap_or_else(|p| p.into_inner());
    list.iter()
        .find(|(sha, _)| sha == sha256)
        .and_then(|(_, bytes)| bytes.upgrade())
}

/// The request's payload bytes: shared with the other runs that send the same archive now
/// (payload files are content-addressed: one SHA-256, one content).
async fn payload_bytes(req: &RunRequest) -> std::io::Result<Arc<[u8]>> {
    if let Some(bytes) = cached_payload(&req.payload_sha256) {
        return Ok(bytes);
    }
    let _loading = LOADING.lock().await;
    if let Some(bytes) = cached_payload(&req.payload_sha256) {
        return Ok(bytes);
    }
    let bytes: Arc<[u8]> = tokio::fs::read(&req.payload_path).await?.into();
    let mut list = PAYLOADS.lock().unwrap_or_else(|p| p.into_inner());
    list.retain(|(_, b)| b.strong_count() > 0);
    list.push((req.payload_sha256.clone(), Arc::downgrade(&bytes)));
    Ok(bytes)
}

/// Why a run on a session produced no result.
pub(crate) enum ServeRunError {
    /// As from `runner_run::run_runner`.
    Run(RunnerRunError),
    /// The serve mode did not start (nothing ran): use an exec channel for this run.
    Unavailable(String),
}

impl From<RunnerRunError> for ServeRunError {
    fn from(e: RunnerRunError) -> Self {
        ServeRunError::Run(e)
    }
}

/// Runs one request on `session`; `ready_timeout` bounds the wait for a new session's `!ready`.
pub(crate) async fn run_on_session(
    session: &mut ServeSession,
    conn: &Conn,
    server: &ServerConfig,
    req: &RunRequest,
    sink: &EventSink,
    cancel: &CancellationToken,
    ready_timeout: Duration,
) -> Result<Finished, ServeRunError> {
    let lost = |reason: String, pid: Option<u32>| {
        ServeRunError::Run(RunnerRunError::Other(
            SshError::Lost {
                server: server.name.clone(),
                reason,
            },
            pid,
        ))
    };
    let payload = payload_bytes(req)
        .await
        .map_err(|e| unreadable_payload(req, e))?;
    // The request body: context line, payload length line, payload (what `run -` reads).
    let mut context = Vec::with_capacity(1024);
    send_context(&mut context, &req.context)
        .await
        .map_err(|e| {
            RunnerRunError::Other(
                SshError::InvalidRequest {
                    field: "context".into(),
                    reason: e.to_string(),
                },
                None,
            )
        })?;
    let len_line = format!("{}\n", payload.len());
    session.next_id += 1;
    let id = session.next_id;
    let body_len = context.len() + len_line.len() + payload.len();
    let header = format!("run {id} {body_len}\n");
    let mut request = Vec::with_capacity(header.len() + body_len);
    for part in [header.as_bytes(), &context, len_line.as_bytes(), &payload] {
        request.extend_from_slice(part);
    }
    drop(payload);
    if let Err(e) = session.write.data_bytes(request).await {
        session.broken = true;
        if !session.ready {
            // Most likely the serve process never started: wait for its channel to close and
            // say why (a missing binary is redeployed, anything else falls back).
            let drained = tokio::time::timeout(ready_timeout, async {
                while session.lines.recv().await.is_some() {}
            })
            .await;
            if drained.is_ok() {
                return Err(match session.start_failure() {
                    StartError::Missing(why) => RunnerRunError::Missing(why).into(),
                    StartError::Other(why) => ServeRunError::Unavailable(why),
                });
            }
        }
        return Err(lost(format!("cannot send the run request: {e}"), None));
    }

    let prefix = format!("{id} ");
    let mut finished: Option<Finished> = None;
    let mut script_pid: Option<u32> = None;
    let mut stderr = String::new();
    let hard = tokio::time::sleep(req.hard_deadline());
    tokio::pin!(hard);
    let not_ready = tokio::time::sleep(ready_timeout);
    tokio::pin!(not_ready);
    let mut stopping = false;
    let exit_code: Option<i32> = loop {
        tokio::select! {
            line = session.lines.recv() => {
                if !session.ready {
                    match line {
                        Some(l) if l.starts_with("!ready ") => {
                            session.ready = true;
                            continue;
                        }
                        Some(l) => {
                            session.unsupported = true;
                            return Err(ServeRunError::Unavailable(format!(
                                "unexpected first line from the runner: {}",
                                l.chars().take(200).collect::<String>()
                            )));
                        }
                        None => {
                            return Err(match session.start_failure() {
                                StartError::Missing(why) => {
                                    session.broken = true;
                                    RunnerRunError::Missing(why).into()
                                }
                                StartError::Other(why) => {
                                    session.unsupported = true;
                                    ServeRunError::Unavailable(why)
                                }
                            });
                        }
                    }
                }
                let Some(line) = line else { break None };
                let Some(rest) = line.strip_prefix(&prefix) else {
                    // An earlier, abandoned run's lines (or noise): not ours.
                    continue;
                };
                if let Some(code) = rest.strip_prefix("!exit ") {
                    break Some(code.trim().parse().unwrap_or(255));
                }
                if let Some(err) = rest.strip_prefix("!err ") {
                    if stderr.len() < STDERR_CAP {
                        stderr.push_str(err);
                        stderr.push('\n');
                    }
                    continue;
                }
                match forward_line(rest, sink).await {
                    Some(RunnerEvent::Started { pid, .. }) => script_pid = Some(pid),
                    Some(RunnerEvent::Finished(f)) => finished = Some(f),
                    _ => {}
                }
            }
            _ = &mut not_ready, if !session.ready => {
                session.broken = true;
                return Err(ServeRunError::Unavailable(format!(
                    "the runner's serve mode did not answer within {} s",
                    ready_timeout.as_secs()
                )));
            }
            // API mode: an answer to a relayed runtime call, framed for the serve relay.
            control = next_control(&req.control) => {
                let mut line = Vec::new();
                if send_control(&mut line, &control).await.is_ok() {
                    let mut framed = format!("control {id} {}\n", line.len()).into_bytes();
                    framed.extend_from_slice(&line);
                    let _ = session.write.data_bytes(framed).await;
                }
            }
            _ = cancel.cancelled(), if !stopping => {
                stopping = true;
                let _ = session.write.data_bytes(format!("cancel {id}\n").into_bytes()).await;
                hard.as_mut().reset(tokio::time::Instant::now() + req.kill_grace + REPORT_GRACE);
            }
            _ = &mut hard => {
                if stopping {
                    session.broken = true;
                    return Err(lost(format!(
                        "the runner did not report a result within {} s of the deadline",
                        (req.kill_grace + REPORT_GRACE).as_secs()
                    ), script_pid));
                }
                tracing::warn!(server = %server.name, "runner silent past the hard deadline; cancelling");
                stopping = true;
                let _ = session.write.data_bytes(format!("cancel {id}\n").into_bytes()).await;
                hard.as_mut().reset(tokio::time::Instant::now() + req.kill_grace + REPORT_GRACE);
            }
        }
    };
    let stderr = stderr.trim().to_string();
    match (finished, exit_code) {
        (Some(f), Some(_)) => Ok(f),
        (_, Some(EXIT_MISSING)) if script_pid.is_none() => {
            session.broken = true;
            Err(RunnerRunError::Missing(stderr).into())
        }
        (f, None) => {
            session.broken = true;
            let why = if conn.handle.is_closed() {
                "the connection closed before the runner reported a result".to_string()
            } else {
                format!(
                    "the runner's serve channel closed before the run ended{}",
                    match session.stderr() {
                        s if s.is_empty() => String::new(),
                        s => format!(": {s}"),
                    }
                )
            };
            match f {
                // Everything arrived but the exit line: the result stands.
                Some(f) => Ok(f),
                None => Err(lost(why, script_pid)),
            }
        }
        (None, Some(code)) => Err(ServeRunError::Run(RunnerRunError::Other(
            SshError::Protocol {
                server: server.name.clone(),
                reason: format!(
                    "the runner ended (status {code}) without a result{}",
                    if stderr.is_empty() {
                        String::new()
                    } else {
                        format!("; stderr: {stderr}")
                    }
                ),
            },
            script_pid,
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &std::path::Path, sha: &str) -> RunRequest {
        RunRequest {
            payload_path: path.to_path_buf(),
            payload_sha256: sha.into(),
            context: Default::default(),
            timeout: Duration::from_secs(1),
            kill_grace: Duration::from_secs(1),
            control: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_sending_one_payload_share_one_read_while_they_hold_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.tgz");
        std::fs::write(&path, b"first").unwrap();
        let sha = format!("test-{}", std::process::id());
        let req = request(&path, &sha);
        let reads: Vec<_> = (0..50)
            .map(|_| {
                let req = req.clone();
                tokio::spawn(async move { payload_bytes(&req).await.unwrap() })
            })
            .collect();
        let mut held = Vec::new();
        for r in reads {
            held.push(r.await.unwrap());
        }
        assert!(
            held.iter().all(|b| Arc::ptr_eq(b, &held[0])),
            "read more than once"
        );
        assert_eq!(&held[0][..], b"first");
        // Held by nobody any more: the next run reads the file again.
        drop(held);
        std::fs::write(&path, b"second").unwrap();
        assert_eq!(&payload_bytes(&req).await.unwrap()[..], b"second");
        // Another archive is another read.
        let other = dir.path().join("q.tgz");
        std::fs::write(&other, b"other").unwrap();
        let b = payload_bytes(&request(&other, &format!("{sha}-q")))
            .await
            .unwrap();
        assert_eq!(&b[..], b"other");
    }
}
