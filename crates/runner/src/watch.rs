//! The run's one loop: a single `poll(2)` over the script's stdout and stderr, the control lines
//! on stdin and the signal self-pipe (termination signals, SIGCHLD), woken at least every tick.
//!
//! One thread does it all, on purpose: a thread per pipe, one for stdin, one for signals and one
//! waiting for the script cost the runner five thread creations and their stacks on every run,
//! more than the rest of its work for a short script. Not for what the phases of a run decide
//! (timeout, grace period, cleanup): that is `run`.

use std::os::fd::RawFd;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use cronium_protocol::Stream;

use crate::capture::Capture;
use crate::control::{ControlChannel, SignalPipe};
use crate::emit::Emitter;
use crate::process::Script;

/// How often the caller's periodic work (helper updates, orphans, the deadline) is done.
pub const TICK: Duration = Duration::from_millis(50);
/// Size of the one read buffer shared by every descriptor.
const READ_BUF: usize = 64 * 1024;

/// Why [`Watch::next`] returned.
pub enum Wake {
    /// The script's main process ended (raw wait status).
    Exited(ExitStatus),
    /// Stop the run (control message, stdin EOF, signal to the runner).
    Cancel(&'static str),
    /// A tick passed, or the caller's `until`.
    Tick,
}

pub struct Watch {
    pid: u32,
    exited: bool,
    outputs: [Capture; 2],
    control: Option<ControlChannel>,
    signals: Option<SignalPipe>,
    buf: Vec<u8>,
    next_tick: Instant,
    /// A cancel seen in the same round as the script's end, returned next.
    pending_cancel: Option<&'static str>,
}

impl Watch {
    pub fn new(
        script: Script,
        control: Option<ControlChannel>,
        signals: Option<SignalPipe>,
    ) -> Watch {
        let mut watch = Watch {
            pid: script.pid,
            exited: false,
            outputs: [
                Capture::new(script.stdout, Stream::Stdout),
                Capture::new(script.stderr, Stream::Stderr),
            ],
            control,
            signals,
            buf: vec![0u8; READ_BUF],
            next_tick: Instant::now() + TICK,
            pending_cancel: None,
        };
        // Control lines that arrived with the payload (a cancel sent right after it).
        watch.pending_cancel = watch.control.as_mut().and_then(|c| c.take_read_ahead());
        watch
    }

    /// Handles whatever is ready until the script's main process ends, a cancel arrives, a tick
    /// passes or `until` is reached, whichever is first. Output is read all along.
    pub fn next(&mut self, until: Option<Instant>, emitter: &Emitter) -> Wake {
        loop {
            if let Some(reason) = self.pending_cancel.take() {
                return Wake::Cancel(reason);
            }
            let now = Instant::now();
            if now >= self.next_tick {
                self.next_tick = now + TICK;
                // SIGCHLD may have been missed (no pipe): the tick looks too.
                if let Some(status) = self.try_wait() {
                    return Wake::Exited(status);
                }
                return Wake::Tick;
            }
            if until.is_some_and(|u| now >= u) {
                return Wake::Tick;
            }
            let wake_at = until.map_or(self.next_tick, |u| u.min(self.next_tick));
            let mut fds = Fds::default();
            for (i, out) in self.outputs.iter().enumerate() {
                if let Some(fd) = out.fd() {
                    fds.push(Source::Output(i), fd);
                }
            }
            if self.control.as_ref().is_some_and(|c| c.is_open()) {
                fds.push(Source::Control, ControlChannel::FD);
            }
            if let Some(s) = &self.signals {
                fds.push(Source::Signals, s.fd());
            }
            let mut child = false;
            for source in fds.ready(wake_at.saturating_duration_since(now)) {
                match source {
                    Source::Output(i) => self.outputs[i].on_readable(&mut self.buf, emitter),
                    Source::Control => {
                        if let Some(reason) = self
                            .control
                            .as_mut()
                            .and_then(|c| c.on_readable(&mut self.buf))
                        {
                            self.pending_cancel = Some(reason);
                        }
                    }
                    Source::Signals => {
                        if let Some(s) = &self.signals {
                            let seen = s.drain();
                            child |= seen.child;
                            if seen.terminate {
                                self.pending_cancel = Some("runner received a termination signal");
                            }
                        }
                    }
                }
            }
            if child {
                if let Some(status) = self.try_wait() {
                    return Wake::Exited(status);
                }
            }
        }
    }

    /// Reads the pipes until both reached EOF; false if `until` came first.
    pub fn drain_output(&mut self, until: Instant, emitter: &Emitter) -> bool {
        loop {
            let mut fds = Fds::default();
            for (i, out) in self.outputs.iter().enumerate() {
                if let Some(fd) = out.fd() {
                    fds.push(Source::Output(i), fd);
                }
            }
            if fds.len == 0 {
                return true;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            for source in fds.ready(left) {
                if let Source::Output(i) = source {
                    self.outputs[i].on_readable(&mut self.buf, emitter);
                }
            }
        }
    }

    /// The main process's status if it has ended (reaped here, once).
    fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exited {
            return None;
        }
        let mut status: libc::c_int = 0;
        loop {
            // SAFETY: waitpid on our own child, writing into `status`.
            let rc = unsafe { libc::waitpid(self.pid as libc::pid_t, &mut status, libc::WNOHANG) };
            if rc == 0 {
                return None;
            }
            self.exited = true;
            if rc == self.pid as libc::pid_t {
                return Some(ExitStatus::from_raw(status));
            }
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                self.exited = false;
                continue;
            }
            diag!("cronium-runner: waitpid failed: {err}");
            // Report a failure rather than hang the run forever.
            return Some(ExitStatus::from_raw(255 << 8));
        }
    }
}

#[derive(Clone, Copy)]
enum Source {
    Output(usize),
    Control,
    Signals,
}

/// Most descriptors one round polls: the two output pipes, the control channel, the signal pipe.
const MAX_FDS: usize = 4;

/// The descriptors of one round, without an allocation per round.
struct Fds {
    sources: [Source; MAX_FDS],
    pfds: [libc::pollfd; MAX_FDS],
    len: usize,
}

impl Default for Fds {
    fn default() -> Self {
        Fds {
            sources: [Source::Signals; MAX_FDS],
            pfds: [libc::pollfd {
                fd: -1,
                events: 0,
                revents: 0,
            }; MAX_FDS],
            len: 0,
        }
    }
}

impl Fds {
    fn push(&mut self, source: Source, fd: RawFd) {
        self.sources[self.len] = source;
        self.pfds[self.len] = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        self.len += 1;
    }

    /// The sources that are readable or closed within `timeout` (none on timeout or
    /// interruption). An invalid descriptor counts as ready: its read fails and closes it.
    fn ready(&mut self, timeout: Duration) -> impl Iterator<Item = Source> + '_ {
        // Rounded up, so that a wait of less than a millisecond does not spin.
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
        // SAFETY: the first `len` entries of `pfds` are a valid array of that length.
        let n = unsafe { libc::poll(self.pfds.as_mut_ptr(), self.len as libc::nfds_t, ms) };
        let len = if n > 0 { self.len } else { 0 };
        self.pfds[..len]
            .iter()
            .zip(&self.sources[..len])
            .filter(|(p, _)| {
                p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
            })
            .map(|(_, &s)| s)
    }
}
