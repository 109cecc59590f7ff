//! What the controller sends the runner: the run context, optionally the payload itself, and
//! control messages (cancel, answers to relayed runtime API calls) on stdin; plus termination signals sent to the runner process.
//!
//! Hands the run loop (`watch`) what it polls: the control lines left on stdin and the self-pipe
//! of the signal handlers (termination signals, and SIGCHLD for the script's end). Not for
//! anything the script reads: the script's own stdin is `/dev/null`.

use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

use cronium_protocol::{Control, RunContext};

use crate::fdio::{read_fd, take_lines};
use crate::payload::MAX_COMPRESSED_BYTES;

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

/// The runner's own stdin, read without the standard library's global buffer, so that what
/// the setup read ahead is known exactly and handed to the run loop.
struct Fd0;

impl Read for Fd0 {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        read_fd(0, buf)
    }
}

/// The runner's stdin in `--control-stdin` mode, read in protocol order.
pub struct ControlStdin {
    reader: BufReader<Fd0>,
}

impl ControlStdin {
    pub fn new() -> Self {
        ControlStdin {
            reader: BufReader::with_capacity(64 * 1024, Fd0),
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

    /// The rest of stdin, control lines, for the run loop: with what was already read ahead.
    pub fn into_channel(self) -> ControlChannel {
        ControlChannel {
            pending: self.reader.buffer().to_vec(),
            open: true,
        }
    }
}

/// Control lines on stdin while the script runs (cancel, answers to relayed API calls), read by
/// the run loop whenever stdin is readable. EOF also means cancel.
pub struct ControlChannel {
    /// Bytes read but not yet a whole line.
    pending: Vec<u8>,
    open: bool,
}

impl ControlChannel {
    /// The descriptor to poll while [`ControlChannel::is_open`].
    pub const FD: RawFd = 0;

    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Handles the whole lines read ahead during setup; a cancel among them is returned.
    pub fn take_read_ahead(&mut self) -> Option<&'static str> {
        self.take_lines(false)
    }

    /// Stdin is readable (or closed): one read, then every whole line; returns why the run
    /// must stop when a cancel came or stdin ended.
    pub fn on_readable(&mut self, buf: &mut [u8]) -> Option<&'static str> {
        match read_fd(Self::FD, buf) {
            Ok(0) => {
                self.open = false;
                let cancel = self.take_lines(true);
                crate::api::close();
                Some(cancel.unwrap_or("stdin closed"))
            }
            Ok(n) => {
                self.pending.extend_from_slice(&buf[..n]);
                self.take_lines(false)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) => {
                self.open = false;
                crate::api::close();
                diag!("cronium-runner: cannot read stdin: {e}; treating it as a cancel");
                Some("stdin failed")
            }
        }
    }

    /// Acts on every whole line in `pending` (and with `last`, on a final one without newline).
    fn take_lines(&mut self, last: bool) -> Option<&'static str> {
        let mut cancel = None;
        take_lines(&mut self.pending, last, |line| {
            let line = String::from_utf8_lossy(line);
            let line = line.trim();
            if line.is_empty() {
                return;
            }
            match serde_json::from_str::<Control>(line) {
                Ok(Control::Cancel) => cancel = Some("cancel requested"),
                Ok(Control::ApiReply { id, status, body }) => crate::api::deliver(id, status, body),
                Err(e) => diag!("cronium-runner: ignoring control line: {e}"),
            }
        });
        cancel
    }
}

/// Write end of the self-pipe the signal handlers write to (-1 until installed).
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

/// Byte a termination signal writes.
const TERMINATE: u8 = b'x';
/// Byte SIGCHLD writes.
const CHILD: u8 = b'c';

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = if sig == libc::SIGCHLD {
            CHILD
        } else {
            TERMINATE
        };
        // write(2) is async-signal-safe and the pipe does not block: a full pipe just means a
        // wake-up is already pending. errno is kept for the code the signal interrupted.
        // SAFETY: errno location and write(2) on our own descriptor.
        unsafe {
            let errno = *libc::__errno_location();
            libc::write(fd, (&byte as *const u8).cast(), 1);
            *libc::__errno_location() = errno;
        }
    }
}

/// What the signal pipe said since it was last read.
#[derive(Default, Clone, Copy)]
pub struct Signalled {
    /// SIGTERM, SIGINT or SIGHUP: cancel the run.
    pub terminate: bool,
    /// SIGCHLD: a child changed state.
    pub child: bool,
}

/// The read end of the self-pipe: SIGTERM, SIGINT or SIGHUP sent to the runner cancel the run
/// (the script is in its own process group, so it does not receive them directly) instead of
/// killing the runner and orphaning it; SIGCHLD wakes the run loop when the script ends.
pub struct SignalPipe {
    read: OwnedFd,
}

impl SignalPipe {
    /// Creates the pipe and installs the handlers; before the script is started, so that its
    /// end cannot go unnoticed.
    pub fn install() -> io::Result<SignalPipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 writes two descriptors into `fds`, which we then own.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both are fresh descriptors; the write end lives as long as the process.
        let read = unsafe { OwnedFd::from_raw_fd(fds[0]) };
        SIGNAL_PIPE.store(fds[1], Ordering::Relaxed);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGCHLD] {
            // SAFETY: the handler only loads an atomic and calls write(2).
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as *const () as usize;
                action.sa_flags = libc::SA_RESTART
                    | if sig == libc::SIGCHLD {
                        libc::SA_NOCLDSTOP
                    } else {
                        0
                    };
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(sig, &action, std::ptr::null_mut());
            }
        }
        Ok(SignalPipe { read })
    }

    pub fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// Empties the pipe; what it held.
    pub fn drain(&self) -> Signalled {
        let mut seen = Signalled::default();
        let mut buf = [0u8; 64];
        while let Ok(n @ 1..) = read_fd(self.fd(), &mut buf) {
            for &b in &buf[..n] {
                match b {
                    TERMINATE => seen.terminate = true,
                    _ => seen.child = true,
                }
            }
        }
        seen
    }
}
