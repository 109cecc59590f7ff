//! direct-ssh: the script is sent over the channel's stdin to its interpreter, with no runner and
//! therefore no runtime helpers. The interpreter runs in its own process group (`setsid`), whose
//! id is printed first, so that a timeout or a cancel can kill the whole group (TERM, grace,
//! KILL) through a second exec channel; SSH signals are never used (OpenSSH refuses them for many
//! sessions). Output lines become `Log` events numbered here; a `Finished` closes the stream.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cronium_core::transport::{EventSink, RunRequest};
use cronium_protocol::{
    Finished, Interpreter, RunStatus, RunnerEvent, Stream, EXIT_CANCELLED, EXIT_TIMEOUT,
};
use russh::ChannelMsg;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::connection::{exec, Conn};
use crate::shell::{quote, quote_ansi_c, validate_env_name, validate_env_value};
use crate::{DirectScript, ServerConfig, SshError};

/// First stdout line of a direct run: the process group to kill.
const PGID_PREFIX: &str = "cronium-pgid ";
const KILL_STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// The exec command line and the first stdin line (the environment). The environment travels
/// over stdin, not on the command line, so that secret values never show in the host's process
/// list; a bash wrapper reads that one line (byte by byte, so the script stays unread), evals it,
/// and execs the interpreter on the rest of stdin.
///
/// When the login shell is bash and already leads its own process group (OpenSSH makes the
/// command a session leader), that shell does the work itself instead of starting another bash:
/// it evals a bash script read whole from stdin, or reads the environment and execs the
/// interpreter. That saves one bash start per run, about a quarter of a warm direct-ssh run's
/// CPU on the host. Any other login shell, or a command that is not a group leader, takes the
/// general path. A bash script holding a NUL byte (which `read -d ''` would stop at) always
/// takes the general path.
pub(crate) fn command_line(
    script: &DirectScript,
    req: &RunRequest,
) -> Result<(String, String), SshError> {
    let mut env_line = String::from("export");
    for (k, v) in &script.env {
        validate_env_name(k)?;
        validate_env_value(k, v)?;
        env_line.push(' ');
        env_line.push_str(k);
        env_line.push('=');
        env_line.push_str(&quote_ansi_c(v));
    }
    if script.env.is_empty() {
        env_line = ":".into();
    }
    env_line.push('\n');
    let program = req
        .context
        .interpreters
        .get(&script.interpreter)
        .cloned()
        .unwrap_or_else(|| {
            match script.interpreter {
                Interpreter::Bash => "bash",
                Interpreter::Python => "python3",
                Interpreter::Node => "node",
            }
            .to_string()
        });
    if script.interpreter == Interpreter::Bash {
        // bash reads the script from stdin itself: the pgid line and the environment simply go
        // first, which saves starting a second shell on every run.
        let prefix = format!("echo \"{PGID_PREFIX}$$\"\n{env_line}");
        if script.script.contains('\0') {
            return Ok((own_group(&format!("{} -s", quote(&program)), None), prefix));
        }
        // The whole script is read first, so that it sees an empty stdin (with `bash -s` a
        // `read` would consume the script's own next line); `eval` then runs the commands one by
        // one as `bash -s` would, and the variable is gone before the first of them.
        let here = "IFS= read -r -d '' cronium_script; \
                    eval \"unset cronium_script; $cronium_script\"";
        let command = format!("{} -c {}", quote(&program), quote(here));
        return Ok((own_group(&command, Some(here)), prefix));
    }
    let inner = format!(
        "echo \"{PGID_PREFIX}$$\"; IFS= read -r cronium_env || exit 125; eval \"$cronium_env\"; \
         unset cronium_env; exec {} -",
        quote(&program)
    );
    let command = format!("bash -c {}", quote(&inner));
    Ok((own_group(&command, Some(&inner)), env_line))
}

/// Runs `command` as the leader of its own process group, so that a timeout or a cancel can kill
/// the whole group. OpenSSH already starts each session's command as a session (and group)
/// leader: then a plain `exec` keeps that group and saves a process per run; otherwise
/// `setsid -w` makes one (and passes the exit status back). `in_bash` is what `command` would run
/// in its bash: a group-leading login shell that is bash runs it itself instead, saving the start
/// of another bash.
fn own_group(command: &str, in_bash: Option<&str>) -> String {
    let leader = match in_bash {
        Some(here) => {
            format!("if [ -n \"$BASH_VERSION\" ]; then unset g; {here}; else exec {command}; fi")
        }
        None => format!("exec {command}"),
    };
    format!(
        "if read -r _ _ _ _ g _ < /proc/$$/stat 2>/dev/null && [ \"$g\" = \"$$\" ]; \
         then {leader}; else exec setsid -w {command}; fi"
    )
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Splits channel bytes into lines and numbers them.
struct LineSplitter {
    buf: Vec<u8>,
    stream: Stream,
}

impl LineSplitter {
    fn push(&mut self, data: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(data);
        let mut lines = Vec::new();
        while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=i).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            lines.push(String::from_utf8_lossy(&line).into_owned());
        }
        lines
    }
    fn rest(&mut self) -> Option<String> {
        if self.buf.is_empty() {
            None
        } else {
            let line = String::from_utf8_lossy(&self.buf).into_owned();
            self.buf.clear();
            Some(line)
        }
    }
}

struct Emitter<'a> {
    sink: &'a EventSink,
    seq: u64,
}

impl Emitter<'_> {
    async fn log(&mut self, stream: Stream, line: String) {
        self.seq += 1;
        let _ = self
            .sink
            .send(RunnerEvent::Log {
                seq: self.seq,
                stream,
                line,
                ts_ms: now_ms(),
            })
            .await;
    }
}

/// Why the run stopped early.
#[derive(Clone, Copy, PartialEq)]
enum Stop {
    Timeout,
    Cancel,
}

/// Kills process group `pgid`: TERM, then polls until the group is gone or `grace` passed,
/// then KILL. Runs on its own channel of `conn`, in the login shell, so only the POSIX form
/// `kill -s SIG -- -PGID` is used (dash refuses `kill -TERM -- -PGID` and `kill -0 -- -PGID`).
pub(crate) async fn kill_group(conn: &Conn, pgid: u32, grace: Duration) -> Result<(), String> {
    let g = format!("-{pgid}");
    exec(
        conn,
        &format!("kill -s TERM -- {g} 2>/dev/null"),
        None,
        KILL_STEP_TIMEOUT,
    )
    .await?;
    let deadline = Instant::now() + grace;
    loop {
        let alive = exec(
            conn,
            &format!("kill -s 0 -- {g} 2>/dev/null"),
            None,
            KILL_STEP_TIMEOUT,
        )
        .await?;
        if !alive.ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    exec(
        conn,
        &format!("kill -s KILL -- {g} 2>/dev/null"),
        None,
        KILL_STEP_TIMEOUT,
    )
    .await?;
    Ok(())
}

/// Outcome when the connection broke: the group id (if known) so the caller can clean up over a
/// new connection.
pub(crate) struct DirectLost {
    pub error: SshError,
    pub pgid: Option<u32>,
}

pub(crate) async fn run_direct(
    conn: &Conn,
    server: &ServerConfig,
    script: &DirectScript,
    req: &RunRequest,
    sink: &EventSink,
    cancel: &CancellationToken,
) -> Result<Finished, DirectLost> {
    let lost = |reason: String, pgid| DirectLost {
        error: SshError::Lost {
            server: server.name.clone(),
            reason,
        },
        pgid,
    };
    let (command, env_line) =
        command_line(script, req).map_err(|error| DirectLost { error, pgid: None })?;
    let mut emit = Emitter { sink, seq: 0 };
    emit.log(
        Stream::System,
        format!(
            "direct-ssh on {}: the script is sent to {} over SSH; runtime helpers (cronium.*) are not available in this mode",
            server.name,
            script.interpreter.as_str()
        ),
    )
    .await;

    let started = Instant::now();
    let channel = conn
        .handle
        .channel_open_session()
        .await
        .map_err(|e| lost(format!("cannot open a channel: {e}"), None))?;
    let (mut read, write) = channel.split();
    // No reply awaited, as in runner_run.rs: the script follows at once.
    write
        .exec(false, command)
        .await
        .map_err(|e| lost(format!("exec request failed: {e}"), None))?;
    let mut script_bytes = env_line.into_bytes();
    script_bytes.extend_from_slice(script.script.as_bytes());
    if !script_bytes.ends_with(b"\n") {
        script_bytes.push(b'\n');
    }
    let stdin = async {
        write.data_bytes(script_bytes).await?;
        write.eof().await
    };

    let mut out = LineSplitter {
        buf: Vec::new(),
        stream: Stream::Stdout,
    };
    let mut err = LineSplitter {
        buf: Vec::new(),
        stream: Stream::Stderr,
    };
    let mut pgid: Option<u32> = None;
    let mut status: Option<u32> = None;
    let mut signal: Option<String> = None;
    let mut stop: Option<Stop> = None;
    let mut closed = false;
    let deadline = tokio::time::sleep(req.timeout);
    tokio::pin!(deadline);
    tokio::pin!(stdin);
    let mut stdin_sent = false;

    while !closed {
        tokio::select! {
            r = &mut stdin, if !stdin_sent => {
                stdin_sent = true;
                if let Err(e) = r {
                    tracing::debug!(error = %e, "direct-ssh stdin closed early");
                }
            }
            msg = read.wait() => match msg {
                Some(ChannelMsg::Data { data }) => {
                    for line in out.push(&data) {
                        if pgid.is_none() {
                            if let Some(id) = line.strip_prefix(PGID_PREFIX) {
                                pgid = id.trim().parse().ok();
                                continue;
                            }
                        }
                        emit.log(out.stream, line).await;
                    }
                }
                Some(ChannelMsg::ExtendedData { data, .. }) => {
                    for line in err.push(&data) {
                        emit.log(err.stream, line).await;
                    }
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => status = Some(exit_status),
                Some(ChannelMsg::ExitSignal { signal_name, .. }) => signal = Some(format!("{signal_name:?}")),
                Some(ChannelMsg::Close) | None => closed = true,
                Some(_) => {}
            },
            _ = &mut deadline, if stop.is_none() => {
                stop = Some(Stop::Timeout);
                emit.log(Stream::System, format!("timeout of {} s reached; terminating the process group", req.timeout.as_secs_f64())).await;
            }
            _ = cancel.cancelled(), if stop.is_none() => {
                stop = Some(Stop::Cancel);
                emit.log(Stream::System, "cancelled; terminating the process group".into()).await;
            }
        }
        if let (Some(_), false) = (stop, closed) {
            // Kill in-line: the channel closes once the group is gone, ending the loop.
            match pgid {
                Some(id) => {
                    if let Err(e) = kill_group(conn, id, req.kill_grace).await {
                        return Err(lost(format!("could not stop the script: {e}"), Some(id)));
                    }
                }
                None => {
                    let _ = write.close().await;
                }
            }
            // Wait (bounded) for the channel to close now that the group is dead.
            let drain = async {
                while let Some(msg) = read.wait().await {
                    match msg {
                        ChannelMsg::Data { data } => {
                            for line in out.push(&data) {
                                emit.log(out.stream, line).await;
                            }
                        }
                        ChannelMsg::ExtendedData { data, .. } => {
                            for line in err.push(&data) {
                                emit.log(err.stream, line).await;
                            }
                        }
                        ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                        ChannelMsg::Close => break,
                        _ => {}
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
            closed = true;
        }
    }
    for (stream, rest) in [(Stream::Stdout, out.rest()), (Stream::Stderr, err.rest())] {
        if let Some(line) = rest {
            emit.log(stream, line).await;
        }
    }
    let run_ms = started.elapsed().as_millis() as u64;
    let finished = match stop {
        Some(Stop::Timeout) => Finished {
            status: RunStatus::TimedOut,
            exit_code: Some(EXIT_TIMEOUT),
            signal: None,
            run_ms,
            error: None,
            usage: None,
        },
        Some(Stop::Cancel) => Finished {
            status: RunStatus::Cancelled,
            exit_code: Some(EXIT_CANCELLED),
            signal: None,
            run_ms,
            error: None,
            usage: None,
        },
        None => match (status, &signal) {
            (Some(0), _) => Finished {
                status: RunStatus::Succeeded,
                exit_code: Some(0),
                signal: None,
                run_ms,
                error: None,
                usage: None,
            },
            (Some(code), _) => Finished {
                status: RunStatus::Failed,
                exit_code: Some(code as i32),
                signal: None,
                run_ms,
                error: match (code, pgid) {
                    (127, None) | (126, None) => {
                        Some("setsid or the interpreter is missing on the host".into())
                    }
                    _ => None,
                },
                usage: None,
            },
            (None, Some(sig)) => Finished {
                status: RunStatus::Failed,
                exit_code: None,
                signal: None,
                run_ms,
                error: Some(format!("killed by signal {sig}")),
                usage: None,
            },
            (None, None) => {
                return Err(lost(
                    "the connection closed before the script finished".into(),
                    pgid,
                ))
            }
        },
    };
    let _ = sink.send(RunnerEvent::Finished(finished.clone())).await;
    Ok(finished)
}
