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
//! Not for running anything itself: no script, payload or helper is touched here.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};

use cronium_protocol::Control;

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

type Out = Arc<Mutex<io::Stdout>>;

/// Writes one whole line to stdout (lines of different runs never interleave) and flushes it.
fn emit(out: &Out, line: &str) {
    let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
    let _ = o.write_all(line.as_bytes());
    let _ = o.write_all(b"\n");
    let _ = o.flush();
}

fn refuse(out: &Out, id: u64, code: i32, why: &str) {
    emit(out, &format!("{id} !err {why}"));
    emit(out, &format!("{id} !exit {code}"));
}

/// Runs the relay until stdin ends; returns the process exit code.
pub fn serve(work_base: Option<PathBuf>) -> i32 {
    let out: Out = Arc::new(Mutex::new(io::stdout()));
    // The path the controller started us from: if it disappears (deleted on the host), new runs
    // are refused as missing so that the controller redeploys instead of trusting a ghost.
    let exe_path = std::env::current_exe().ok();
    let children: Arc<Mutex<HashMap<u64, Option<ChildStdin>>>> = Arc::default();
    emit(&out, &format!("!ready {}", crate::VERSION));

    let mut input = BufReader::with_capacity(64 * 1024, io::stdin());
    let mut line = String::new();
    let mut waiters = Vec::new();
    loop {
        line.clear();
        match input.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                diag!("cronium-runner serve: cannot read stdin: {e}");
                break;
            }
        }
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some("run"), Some(id), Some(len), None) => {
                let (Ok(id), Ok(len)) = (id.parse::<u64>(), len.parse::<u64>()) else {
                    diag!("cronium-runner serve: malformed request `{}`", line.trim());
                    break;
                };
                if len > MAX_REQUEST_BYTES {
                    // The body cannot be skipped safely without reading it; stop here.
                    refuse(
                        &out,
                        id,
                        EXIT_REFUSED,
                        "request larger than the payload limit",
                    );
                    break;
                }
                let body = match read_exact_len(&mut input, len) {
                    Ok(b) => b,
                    Err(e) => {
                        refuse(&out, id, EXIT_REFUSED, &format!("request body: {e}"));
                        break;
                    }
                };
                if exe_path
                    .as_ref()
                    .is_some_and(|p| std::fs::metadata(p).is_err())
                {
                    refuse(
                        &out,
                        id,
                        EXIT_MISSING,
                        "the runner binary is no longer on the host (No such file)",
                    );
                    break;
                }
                let busy = children.lock().map(|c| c.len()).unwrap_or(usize::MAX);
                if busy >= MAX_RUNS {
                    refuse(&out, id, EXIT_REFUSED, "too many runs at once");
                    continue;
                }
                match start(id, &body, work_base.as_ref(), &out, &children) {
                    Ok(waiter) => waiters.push(waiter),
                    Err(e) => refuse(&out, id, EXIT_REFUSED, &format!("cannot start a run: {e}")),
                }
                waiters.retain(|w: &std::thread::JoinHandle<()>| !w.is_finished());
            }
            (Some("control"), Some(id), Some(len), None) => {
                let (Ok(id), Ok(len)) = (id.parse::<u64>(), len.parse::<u64>()) else {
                    diag!("cronium-runner serve: malformed request `{}`", line.trim());
                    break;
                };
                if len > MAX_CONTROL_BYTES {
                    diag!("cronium-runner serve: control line of {len} bytes refused");
                    break;
                }
                let body = match read_exact_len(&mut input, len) {
                    Ok(b) => b,
                    Err(e) => {
                        diag!("cronium-runner serve: control body: {e}");
                        break;
                    }
                };
                if let Ok(mut c) = children.lock() {
                    if let Some(Some(stdin)) = c.get_mut(&id) {
                        let _ = stdin.write_all(&body).and_then(|()| stdin.flush());
                    }
                }
            }
            (Some("cancel"), Some(id), None, None) => {
                let Ok(id) = id.parse::<u64>() else {
                    diag!("cronium-runner serve: malformed request `{}`", line.trim());
                    break;
                };
                let stdin = children
                    .lock()
                    .ok()
                    .and_then(|mut c| c.get_mut(&id).and_then(Option::take));
                if let Some(mut stdin) = stdin {
                    if let Ok(mut l) = serde_json::to_vec(&Control::Cancel) {
                        l.push(b'\n');
                        let _ = stdin.write_all(&l);
                    }
                    // Dropped here: EOF also means cancel, covering a child still reading.
                }
            }
            (None, ..) => {}
            _ => {
                diag!("cronium-runner serve: malformed request `{}`", line.trim());
                break;
            }
        }
    }
    // The controller is gone (or broke the protocol): every run still going is cancelled by
    // closing its stdin, and this process stays until each child has reported and exited.
    if let Ok(mut c) = children.lock() {
        for stdin in c.values_mut() {
            stdin.take();
        }
    }
    for w in waiters {
        let _ = w.join();
    }
    0
}

fn read_exact_len(input: &mut impl Read, len: u64) -> io::Result<Vec<u8>> {
    let mut body = Vec::with_capacity(len.min(1 << 20) as usize);
    input.take(len).read_to_end(&mut body)?;
    if (body.len() as u64) < len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("stdin ended after {} of {len} bytes", body.len()),
        ));
    }
    Ok(body)
}

/// Starts child run `id` with `body` on its stdin; the returned thread relays its output and
/// reports its exit.
fn start(
    id: u64,
    body: &[u8],
    work_base: Option<&PathBuf>,
    out: &Out,
    children: &Arc<Mutex<HashMap<u64, Option<ChildStdin>>>>,
) -> io::Result<std::thread::JoinHandle<()>> {
    let mut cmd = Command::new("/proc/self/exe");
    cmd.args(["run", "-", "--control-stdin"]);
    if let Some(base) = work_base {
        cmd.arg("--work-base").arg(base);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(io::Error::other("child pipes unavailable"));
    };
    // The child reads the whole body before it starts the script, so this cannot deadlock on a
    // full pipe; a child that died early (bad context) just makes the write fail.
    let _ = stdin.write_all(body);
    if let Ok(mut c) = children.lock() {
        c.insert(id, Some(stdin));
    }
    let err_relay = {
        let out = out.clone();
        std::thread::Builder::new()
            .name("relay-err".into())
            .spawn(move || relay(stderr, &out, &format!("{id} !err ")))?
    };
    let (out, children) = (out.clone(), children.clone());
    std::thread::Builder::new()
        .name("relay".into())
        .spawn(move || {
            relay(stdout, &out, &format!("{id} "));
            let _ = err_relay.join();
            let code = match child.wait() {
                Ok(st) => st
                    .code()
                    .or_else(|| st.signal().map(|s| 128 + s))
                    .unwrap_or(255),
                Err(_) => 255,
            };
            if let Ok(mut c) = children.lock() {
                c.remove(&id);
            }
            emit(&out, &format!("{id} !exit {code}"));
        })
}

/// Copies every line of `from` to stdout behind `prefix`; invalid UTF-8 is replaced (the
/// runner's own stdout is always UTF-8 JSON; stderr may not be).
fn relay(from: impl Read, out: &Out, prefix: &str) {
    let mut reader = BufReader::with_capacity(64 * 1024, from);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    buf.pop();
                }
                emit(out, &format!("{prefix}{}", String::from_utf8_lossy(&buf)));
            }
        }
    }
}
