//! `cronium-runner serve`: a long-lived runner on one SSH channel that starts runs on request, so
//! that a warm run on a pooled connection costs one message instead of a new SSH session, a login
//! shell and a runner exec.
//!
//! Each run is a child `cronium-runner run - --control-stdin` (the same code path as every other
//! target, started from `/proc/self/exe`); this process only relays bytes. Framing, all lines:
//!
//! - in (stdin): `run ID N` followed by exactly N bytes, which become the child's stdin (the run
//!   context line, the payload length line, the payload); `cancel ID` sends the child a cancel
//!   line and closes its stdin; `control ID N` followed by exactly N bytes (one control line:
//!   the answer to a relayed runtime API call) is written to the child's stdin as it is. EOF
//!   closes every child's stdin, which cancels its run, and the server exits once they are gone.
//! - out (stdout): `!ready VERSION` once at start; then `ID LINE` for each stdout line of run ID
//!   (the runner's JSON events, unchanged), `ID !err LINE` for its stderr lines, and last
//!   `ID !exit CODE` when it has exited (128 + signal number when killed by a signal). A run
//!   refused before it started gets only `!err` and `!exit` lines.
//!
//! One thread polls stdin and every child's pipes: relaying a run costs no thread. A child's
//! stdin is written without blocking (a queue per child), so a child that talks before it reads
//! cannot stall the others.
//!
//! Not for running anything itself: no script, payload or helper is touched here.

use std::collections::HashMap;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio};

use cronium_protocol::Control;

use crate::fdio::{read_fd, take_lines};
use crate::payload::MAX_COMPRESSED_BYTES;

/// Most runs one server relays at once (a client runs one at a time per connection; the margin
/// is for runs still shutting down after a cancel).
const MAX_RUNS: usize = 64;
/// Largest request body: the payload limit plus room for the context (variables, input).
const MAX_REQUEST_BYTES: u64 = MAX_COMPRESSED_BYTES + 16 * 1024 * 1024;
/// Largest control line (an answer carrying a variable's value).
const MAX_CONTROL_BYTES: u64 = 16 * 1024 * 1024;
/// Exit code reported for a run that could not be started at all.
const EXIT_REFUSED: i32 = 125;
/// Exit code reported when the runner binary was removed from the host: the client redeploys.
pub const EXIT_MISSING: i32 = 127;
/// Size of the one read buffer.
const READ_BUF: usize = 64 * 1024;

/// Lines for stdout, written together once per round of the loop.
#[derive(Default)]
struct Out {
    buf: Vec<u8>,
}

impl Out {
    fn line(&mut self, parts: &[&[u8]]) {
        for p in parts {
            self.buf.extend_from_slice(p);
        }
        self.buf.push(b'\n');
    }

    fn refuse(&mut self, id: u64, code: i32, why: &str) {
        self.line(&[format!("{id} !err {why}").as_bytes()]);
        self.line(&[format!("{id} !exit {code}").as_bytes()]);
    }

    /// Writes what was gathered; a controller that stopped reading only loses its own lines.
    fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let mut stdout = io::stdout().lock();
        let _ = stdout.write_all(&self.buf).and_then(|()| stdout.flush());
        self.buf.clear();
    }
}

/// One output pipe of a child, with the part of a line read so far.
struct Pipe<R> {
    file: Option<R>,
    partial: Vec<u8>,
}

impl<R: AsRawFd> Pipe<R> {
    fn new(file: R) -> Self {
        Pipe {
            file: Some(file),
            partial: Vec::new(),
        }
    }

    fn fd(&self) -> Option<RawFd> {
        self.file.as_ref().map(|f| f.as_raw_fd())
    }

    /// One read; every whole line goes out behind `prefix` (at EOF the rest too). Invalid UTF-8
    /// is replaced (the runner's own stdout is always UTF-8 JSON; stderr may not be).
    fn on_readable(&mut self, buf: &mut [u8], prefix: &str, out: &mut Out) {
        let Some(fd) = self.fd() else { return };
        let n = match read_fd(fd, buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(_) => 0,
        };
        if n == 0 {
            self.file = None;
        } else {
            self.partial.extend_from_slice(&buf[..n]);
        }
        take_lines(&mut self.partial, n == 0, |line| {
            emit_line(prefix, line, out)
        });
    }
}

fn emit_line(prefix: &str, mut line: &[u8], out: &mut Out) {
    while let Some(l) = line.strip_suffix(b"\r") {
        line = l;
    }
    match std::str::from_utf8(line) {
        Ok(text) => out.line(&[prefix.as_bytes(), text.as_bytes()]),
        Err(_) => out.line(&[prefix.as_bytes(), String::from_utf8_lossy(line).as_bytes()]),
    }
}

/// One run's child: its pipes and what is still to be written to its stdin.
struct Run {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Bytes for its stdin not yet written, from `written` on.
    queue: Vec<u8>,
    written: usize,
    /// Close its stdin once the queue is written (a cancel, or our own stdin ended).
    close_after: bool,
    stdout: Pipe<ChildStdout>,
    stderr: Pipe<ChildStderr>,
    out_prefix: String,
    err_prefix: String,
}

impl Run {
    fn send(&mut self, bytes: &[u8]) {
        if self.stdin.is_some() && !self.close_after {
            self.queue.extend_from_slice(bytes);
        }
    }

    /// Writes as much of the queue as the pipe takes now.
    fn on_writable(&mut self) {
        let Some(stdin) = &self.stdin else { return };
        while self.written < self.queue.len() {
            let rest = &self.queue[self.written..];
            // SAFETY: write(2) from a valid buffer to our own descriptor.
            let n = unsafe { libc::write(stdin.as_raw_fd(), rest.as_ptr().cast(), rest.len()) };
            if n > 0 {
                self.written += n as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return,
                // The child stopped reading (it ended, or refused the request): nothing more
                // will reach it.
                _ => {
                    self.stdin = None;
                    self.queue.clear();
                    self.written = 0;
                    return;
                }
            }
        }
        self.queue.clear();
        self.written = 0;
        if self.close_after {
            self.stdin = None; // EOF also means cancel, covering a child still reading.
        }
    }

    fn wants_write(&self) -> bool {
        self.stdin.is_some() && (self.written < self.queue.len() || self.close_after)
    }

    fn outputs_done(&self) -> bool {
        self.stdout.file.is_none() && self.stderr.file.is_none()
    }
}

/// What the request reader is in the middle of.
enum Reading {
    Header,
    /// A body of `len` bytes for `run` or `control` of `id`.
    Body {
        run: bool,
        id: u64,
        len: usize,
    },
}

/// The relay's state.
struct Relay {
    work_base: Option<PathBuf>,
    /// The path the controller started us from: if it disappears (deleted on the host), new runs
    /// are refused as missing so that the controller redeploys instead of trusting a ghost.
    exe_path: Option<PathBuf>,
    runs: HashMap<u64, Run>,
    input: Vec<u8>,
    input_open: bool,
    reading: Reading,
    out: Out,
}

/// Runs the relay until stdin ends; returns the process exit code.
pub fn serve(work_base: Option<PathBuf>) -> i32 {
    let mut relay = Relay {
        work_base,
        exe_path: std::env::current_exe().ok(),
        runs: HashMap::new(),
        input: Vec::new(),
        input_open: true,
        reading: Reading::Header,
        out: Out::default(),
    };
    relay
        .out
        .line(&[format!("!ready {}", crate::VERSION).as_bytes()]);
    relay.out.flush();
    let mut buf = vec![0u8; READ_BUF];
    while relay.input_open || !relay.runs.is_empty() {
        relay.round(&mut buf);
        relay.out.flush();
    }
    0
}

#[derive(Clone, Copy)]
enum Source {
    Input,
    Stdout(u64),
    Stderr(u64),
    Stdin(u64),
}

impl Relay {
    /// One poll over everything, and what it found ready handled.
    fn round(&mut self, buf: &mut [u8]) {
        let mut sources = Vec::with_capacity(1 + 3 * self.runs.len());
        let mut pfds = Vec::with_capacity(sources.capacity());
        let mut add = |source, fd, events| {
            sources.push(source);
            pfds.push(libc::pollfd {
                fd,
                events,
                revents: 0,
            });
        };
        if self.input_open {
            add(Source::Input, 0, libc::POLLIN);
        }
        for (&id, run) in &self.runs {
            if let Some(fd) = run.stdout.fd() {
                add(Source::Stdout(id), fd, libc::POLLIN);
            }
            if let Some(fd) = run.stderr.fd() {
                add(Source::Stderr(id), fd, libc::POLLIN);
            }
            if let (true, Some(stdin)) = (run.wants_write(), &run.stdin) {
                add(Source::Stdin(id), stdin.as_raw_fd(), libc::POLLOUT);
            }
        }
        // SAFETY: `pfds` is a valid array of its length.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, -1) };
        if n <= 0 {
            return; // interrupted: poll again
        }
        let mut ended = Vec::new();
        for (p, source) in pfds.iter().zip(sources) {
            if p.revents == 0 {
                continue;
            }
            match source {
                Source::Input => self.on_input(buf),
                Source::Stdout(id) | Source::Stderr(id) | Source::Stdin(id) => {
                    let Some(run) = self.runs.get_mut(&id) else {
                        continue;
                    };
                    match source {
                        Source::Stdout(_) => {
                            run.stdout.on_readable(buf, &run.out_prefix, &mut self.out)
                        }
                        Source::Stderr(_) => {
                            run.stderr.on_readable(buf, &run.err_prefix, &mut self.out)
                        }
                        _ => run.on_writable(),
                    }
                    if run.outputs_done() {
                        ended.push(id);
                    }
                }
            }
        }
        for id in ended {
            if let Some(mut run) = self.runs.remove(&id) {
                // Both pipes are at EOF: the child has exited or is about to.
                let code = match run.child.wait() {
                    Ok(st) => st
                        .code()
                        .or_else(|| st.signal().map(|s| 128 + s))
                        .unwrap_or(255),
                    Err(_) => 255,
                };
                self.out.line(&[format!("{id} !exit {code}").as_bytes()]);
            }
        }
    }

    /// Our stdin is readable: one read, then every whole request in the buffer.
    fn on_input(&mut self, buf: &mut [u8]) {
        match read_fd(0, buf) {
            Ok(0) => {
                if let Reading::Body { run: true, id, len } = self.reading {
                    let got = self.input.len();
                    self.out.refuse(
                        id,
                        EXIT_REFUSED,
                        &format!("request body: stdin ended after {got} of {len} bytes"),
                    );
                }
                self.stop_input(None)
            }
            Ok(n) => {
                self.input.extend_from_slice(&buf[..n]);
                self.take_requests();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => self.stop_input(Some(format!("cannot read stdin: {e}"))),
        }
    }

    /// The controller is gone (or broke the protocol): every run still going is cancelled by
    /// closing its stdin, and this process stays until each child has reported and exited.
    fn stop_input(&mut self, why: Option<String>) {
        if let Some(why) = why {
            diag!("cronium-runner serve: {why}");
        }
        self.input_open = false;
        self.input = Vec::new();
        for run in self.runs.values_mut() {
            run.stdin = None;
            run.queue.clear();
        }
    }

    fn take_requests(&mut self) {
        let mut start = 0;
        while self.input_open {
            match self.reading {
                Reading::Header => {
                    let Some(nl) = self.input[start..].iter().position(|&b| b == b'\n') else {
                        if self.input.len() - start > 4096 {
                            self.stop_input(Some("request line longer than 4096 bytes".into()));
                        }
                        break;
                    };
                    let line = String::from_utf8_lossy(&self.input[start..start + nl]).into_owned();
                    start += nl + 1;
                    self.header(&line);
                }
                Reading::Body { run, id, len } => {
                    if self.input.len() - start < len {
                        break;
                    }
                    let body = self.input[start..start + len].to_vec();
                    start += len;
                    self.reading = Reading::Header;
                    match run {
                        true => self.start_run(id, body),
                        false => {
                            if let Some(r) = self.runs.get_mut(&id) {
                                r.send(&body);
                                r.on_writable();
                            }
                        }
                    }
                }
            }
        }
        if self.input_open {
            self.input.drain(..start);
        }
    }

    fn header(&mut self, line: &str) {
        let malformed = |relay: &mut Relay| {
            relay.stop_input(Some(format!("malformed request `{}`", line.trim())));
        };
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some(kind @ ("run" | "control")), Some(id), Some(len), None) => {
                let (Ok(id), Ok(len)) = (id.parse::<u64>(), len.parse::<u64>()) else {
                    return malformed(self);
                };
                let run = kind == "run";
                if run && len > MAX_REQUEST_BYTES {
                    // The body cannot be skipped safely without reading it; stop here.
                    self.out
                        .refuse(id, EXIT_REFUSED, "request larger than the payload limit");
                    return self.stop_input(None);
                }
                if !run && len > MAX_CONTROL_BYTES {
                    return self.stop_input(Some(format!("control line of {len} bytes refused")));
                }
                self.reading = Reading::Body {
                    run,
                    id,
                    len: len as usize,
                };
            }
            (Some("cancel"), Some(id), None, None) => {
                let Ok(id) = id.parse::<u64>() else {
                    return malformed(self);
                };
                if let Some(run) = self.runs.get_mut(&id) {
                    if let Ok(mut l) = serde_json::to_vec(&Control::Cancel) {
                        l.push(b'\n');
                        run.send(&l);
                    }
                    run.close_after = true;
                    run.on_writable();
                }
            }
            (None, ..) => {}
            _ => malformed(self),
        }
    }

    fn start_run(&mut self, id: u64, body: Vec<u8>) {
        if self
            .exe_path
            .as_ref()
            .is_some_and(|p| std::fs::metadata(p).is_err())
        {
            self.out.refuse(
                id,
                EXIT_MISSING,
                "the runner binary is no longer on the host (No such file)",
            );
            return self.stop_input(None);
        }
        if self.runs.len() >= MAX_RUNS {
            return self.out.refuse(id, EXIT_REFUSED, "too many runs at once");
        }
        match self.spawn(id, body) {
            Ok(run) => {
                self.runs.insert(id, run);
            }
            Err(e) => self
                .out
                .refuse(id, EXIT_REFUSED, &format!("cannot start a run: {e}")),
        }
    }

    /// Starts child run `id` with `body` queued for its stdin.
    fn spawn(&self, id: u64, body: Vec<u8>) -> io::Result<Run> {
        let mut cmd = Command::new("/proc/self/exe");
        cmd.args(["run", "-", "--control-stdin"]);
        if let Some(base) = &self.work_base {
            cmd.arg("--work-base").arg(base);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other("child pipes unavailable"));
        };
        // Our end only: the child's end stays blocking.
        // SAFETY: fcntl on a descriptor we own.
        unsafe {
            let fd = stdin.as_raw_fd();
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        let mut run = Run {
            child,
            stdin: Some(stdin),
            queue: body,
            written: 0,
            close_after: false,
            stdout: Pipe::new(stdout),
            stderr: Pipe::new(stderr),
            out_prefix: format!("{id} "),
            err_prefix: format!("{id} !err "),
        };
        run.on_writable();
        Ok(run)
    }
}
