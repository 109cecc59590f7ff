//! What the controller sends the runner: the run context, optionally the payload itself, and
//! control messages (cancel, answers to relayed runtime API calls) on stdin; plus termination signals sent to the runner process.
//!
//! Turns all of them into [`Msg::Cancel`] for the run loop. Not for anything the script reads:
//! the script's own stdin is `/dev/null`.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Stdin};
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc::Sender;

use cronium_protocol::{Control, RunContext};

use crate::payload::MAX_COMPRESSED_BYTES;
use crate::run::Msg;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot read the run context file {path}: {source}")]
    ContextFile { path: String, source: io::Error },
    #[error("stdin closed before the run context line")]
    NoContext,
    #[error("cannot read stdin: {0}")]
    Stdin(io::Error),
    #[error("run context is not valid: {0}")]
    InvalidContext(serde_json::Error),
    #[error("payload length line on stdin is missing")]
    NoLength,
    #[error("payload length line on stdin is not a decimal byte count: `{0}`")]
    BadLength(String),
    #[error("payload archive is {0} bytes, more than the limit of {MAX_COMPRESSED_BYTES} bytes (64 MiB) compressed")]
    TooLarge(u64),
    #[error("stdin ended after {got} of the {expected} payload bytes")]
    ShortPayload { got: u64, expected: u64 },
}

pub fn context_from_file(path: &Path) -> Result<RunContext, ControlError> {
    let text = fs::read_to_string(path).map_err(|source| ControlError::ContextFile {
        path: path.display().to_string(),
        source,
    })?;
    serde_json::from_str(&text).map_err(ControlError::InvalidContext)
}

/// The context used when none is given (a manual run with no input).
pub fn default_context() -> RunContext {
    RunContext {
        trigger: "manual".to_string(),
        ..RunContext::default()
    }
}

/// The runner's stdin in `--control-stdin` mode, read in protocol order.
pub struct ControlStdin {
    reader: BufReader<Stdin>,
}

impl ControlStdin {
    pub fn new() -> Self {
        ControlStdin {
            reader: BufReader::with_capacity(64 * 1024, io::stdin()),
        }
    }

    fn line(&mut self) -> Result<Option<String>, ControlError> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(ControlError::Stdin)?;
        Ok((n > 0).then_some(line))
    }

    /// First line: the run context as JSON.
    pub fn read_context(&mut self) -> Result<RunContext, ControlError> {
        let line = self.line()?.ok_or(ControlError::NoContext)?;
        serde_json::from_str(line.trim_end()).map_err(ControlError::InvalidContext)
    }

    /// For PAYLOAD `-`: a decimal length line, then exactly that many bytes of `.tar.gz`.
    pub fn read_payload(&mut self) -> Result<Vec<u8>, ControlError> {
        let line = self.line()?.ok_or(ControlError::NoLength)?;
        let text = line.trim();
        let len: u64 = text
            .parse()
            .map_err(|_| ControlError::BadLength(text.chars().take(40).collect()))?;
        if len > MAX_COMPRESSED_BYTES {
            return Err(ControlError::TooLarge(len));
        }
        let mut buf = Vec::with_capacity(len as usize);
        (&mut self.reader)
            .take(len)
            .read_to_end(&mut buf)
            .map_err(ControlError::Stdin)?;
        if (buf.len() as u64) < len {
            return Err(ControlError::ShortPayload {
                got: buf.len() as u64,
                expected: len,
            });
        }
        Ok(buf)
    }

    /// Reads control lines until a cancel or EOF (which also means cancel) on its own thread.
    pub fn watch(mut self, tx: Sender<Msg>) {
        let spawned = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || loop {
                match self.line() {
                    Ok(None) => {
                        crate::api::close();
                        let _ = tx.send(Msg::Cancel("stdin closed"));
                        return;
                    }
                    Err(e) => {
                        crate::api::close();
                        diag!("cronium-runner: {e}; treating it as a cancel");
                        let _ = tx.send(Msg::Cancel("stdin failed"));
                        return;
                    }
                    Ok(Some(line)) if line.trim().is_empty() => {}
                    Ok(Some(line)) => match serde_json::from_str::<Control>(line.trim_end()) {
                        Ok(Control::Cancel) => {
                            let _ = tx.send(Msg::Cancel("cancel requested"));
                        }
                        Ok(Control::ApiReply { id, status, body }) => {
                            crate::api::deliver(id, status, body)
                        }
                        Err(e) => diag!("cronium-runner: ignoring control line: {e}"),
                    },
                }
            });
        if let Err(e) = spawned {
            diag!("cronium-runner: cannot watch stdin for control messages: {e}");
        }
    }
}

/// Write end of the self-pipe the signal handler writes to (-1 until installed).
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(_sig: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        // write(2) is async-signal-safe; a full pipe just means a cancel is already pending.
        unsafe {
            libc::write(fd, b"x".as_ptr().cast(), 1);
        }
    }
}

/// SIGTERM, SIGINT or SIGHUP sent to the runner cancel the run (the script is in its own process
/// group, so it does not receive them directly) instead of killing the runner and orphaning it.
pub fn cancel_on_signals(tx: Sender<Msg>) {
    let mut fds = [0 as libc::c_int; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        diag!(
            "cronium-runner: cannot create a signal pipe: {}",
            io::Error::last_os_error()
        );
        return;
    }
    SIGNAL_PIPE.store(fds[1], Ordering::Relaxed);
    let read_fd = fds[0];
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut byte = 0u8;
            loop {
                let n = unsafe { libc::read(read_fd, (&mut byte as *mut u8).cast(), 1) };
                if n == 1 {
                    let _ = tx.send(Msg::Cancel("runner received a termination signal"));
                } else if n == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted
                {
                    return;
                }
            }
        });
    if spawned.is_err() {
        return;
    }
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: the handler only loads an atomic and calls write(2).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}
