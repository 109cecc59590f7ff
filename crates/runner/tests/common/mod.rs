//! Shared test support: building payload archives, running the real `cronium-runner` binary and
//! reading its event stream. No mocks: real interpreters, real processes, real files.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cronium_protocol::{Finished, RunnerEvent, Stream};
use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::{json, Value};

pub const RUNNER: &str = env!("CARGO_BIN_EXE_cronium-runner");
pub const NODE: &str = "/usr/bin/node";
/// Prefix of the shared helper library directories the runner keeps in the work base.
pub const LIB_PREFIX: &str = "cronium-lib-";
/// The stamp file whose age is a user's last sweep of the work base.
pub const SWEEP_STAMP_PREFIX: &str = ".cronium-swept-";

/// The real python binary (the `python3` on PATH is a slow pyenv shim), resolved once.
pub fn python() -> &'static str {
    static PY: OnceLock<String> = OnceLock::new();
    PY.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys;print(sys.executable)"])
            .output()
            .expect("python3 runs");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    })
}

/// A manifest as JSON (valid YAML), with overrides merged in.
pub fn manifest(interpreter: &str, entrypoint: &str, extra: Value) -> Value {
    let mut m = json!({
        "format": 1,
        "interpreter": interpreter,
        "entrypoint": entrypoint,
        "timeout_ms": 30_000,
        "kill_grace_ms": 1_000,
        "event": {"id": 42, "name": "test-event", "version": 3},
    });
    merge(&mut m, extra);
    m
}

fn merge(base: &mut Value, extra: Value) {
    if let (Value::Object(b), Value::Object(e)) = (base, extra) {
        for (k, v) in e {
            b.insert(k, v);
        }
    }
}

/// A run context with the real interpreters resolved, with overrides merged in.
pub fn context(extra: Value) -> Value {
    let mut c = json!({
        "job_id": 11,
        "execution_id": 22,
        "attempt": 2,
        "trigger": "manual",
        "interpreters": {"python": python(), "node": NODE},
    });
    merge(&mut c, extra);
    c
}

/// Builds a .tar.gz from raw tar entries written by `build`.
pub fn archive(build: impl FnOnce(&mut tar::Builder<GzEncoder<Vec<u8>>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    build(&mut b);
    b.into_inner().unwrap().finish().unwrap()
}

pub fn add_file(b: &mut tar::Builder<GzEncoder<Vec<u8>>>, path: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, path, data).unwrap();
}

/// A payload holding `manifest.yaml` and the given files.
pub fn payload(manifest: &Value, files: &[(&str, &[u8])]) -> Vec<u8> {
    archive(|b| {
        add_file(b, "manifest.yaml", manifest.to_string().as_bytes());
        for (path, data) in files {
            add_file(b, path, data);
        }
    })
}

/// A one-script payload.
pub fn script(interpreter: &str, source: &str, extra: Value) -> Vec<u8> {
    let entry = match interpreter {
        "bash" => "main.sh",
        "python" => "main.py",
        _ => "main.js",
    };
    payload(
        &manifest(interpreter, entry, extra),
        &[(entry, source.as_bytes())],
    )
}

/// A scratch area for one test: the work base (must be empty after every run) and a place for
/// payload files and markers outside it.
pub struct Scratch {
    pub root: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("work")).unwrap();
        Scratch { root }
    }
    pub fn work(&self) -> PathBuf {
        self.root.path().join("work")
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }
    /// Entries left in the work base (every run must leave none), apart from the shared helper
    /// library directories (`cronium-lib-*`), which are meant to outlive the run.
    pub fn leftovers(&self) -> Vec<String> {
        std::fs::read_dir(self.work())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| !name.starts_with(LIB_PREFIX) && !name.starts_with(SWEEP_STAMP_PREFIX))
            .collect()
    }
    /// The shared helper library directories in the work base.
    pub fn lib_dirs(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.work())
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_string_lossy().starts_with(LIB_PREFIX))
            .map(|e| e.path())
            .collect()
    }
    pub fn assert_clean(&self) {
        assert_eq!(
            self.leftovers(),
            Vec::<String>::new(),
            "work base not empty"
        );
    }
}

pub struct RunOutput {
    pub events: Vec<RunnerEvent>,
    pub code: i32,
    pub stderr: String,
}

impl RunOutput {
    /// The final event, checking it is the only `Finished` and the last line.
    pub fn finished(&self) -> &Finished {
        let count = self
            .events
            .iter()
            .filter(|e| matches!(e, RunnerEvent::Finished(_)))
            .count();
        assert_eq!(count, 1, "exactly one Finished: {:?}", self.events);
        match self.events.last() {
            Some(RunnerEvent::Finished(f)) => f,
            other => panic!("last event is not Finished: {other:?}"),
        }
    }

    pub fn lines(&self, stream: Stream) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                RunnerEvent::Log {
                    stream: s, line, ..
                } if *s == stream => Some(line.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn stdout(&self) -> Vec<String> {
        self.lines(Stream::Stdout)
    }

    pub fn last_output(&self) -> Option<Value> {
        self.events.iter().rev().find_map(|e| match e {
            RunnerEvent::Output { value } => Some(value.clone()),
            _ => None,
        })
    }

    pub fn variables(&self) -> Vec<(String, Value)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                RunnerEvent::Variable { name, value } => Some((name.clone(), value.clone())),
                _ => None,
            })
            .collect()
    }

    pub fn conditions(&self) -> Vec<bool> {
        self.events
            .iter()
            .filter_map(|e| match e {
                RunnerEvent::Condition { value } => Some(*value),
                _ => None,
            })
            .collect()
    }
}

fn parse_stdout(stdout: &[u8]) -> Vec<RunnerEvent> {
    String::from_utf8(stdout.to_vec())
        .expect("runner stdout is UTF-8")
        .lines()
        .map(|l| RunnerEvent::parse(l).unwrap_or_else(|e| panic!("bad event line {l:?}: {e}")))
        .collect()
}

/// Runs a payload file with `--context FILE` and waits for the end.
pub fn run(scratch: &Scratch, payload: &[u8], ctx: &Value) -> RunOutput {
    let payload_path = scratch.path("payload.tgz");
    std::fs::write(&payload_path, payload).unwrap();
    run_path(scratch, &payload_path, ctx)
}

pub fn run_path(scratch: &Scratch, payload_path: &Path, ctx: &Value) -> RunOutput {
    run_path_with(scratch, payload_path, ctx, &[])
}

/// [`run`] with more runner arguments.
pub fn run_with(scratch: &Scratch, payload: &[u8], ctx: &Value, extra: &[&str]) -> RunOutput {
    let payload_path = scratch.path("payload.tgz");
    std::fs::write(&payload_path, payload).unwrap();
    run_path_with(scratch, &payload_path, ctx, extra)
}

fn run_path_with(scratch: &Scratch, payload_path: &Path, ctx: &Value, extra: &[&str]) -> RunOutput {
    run_launched(&[Path::new(RUNNER)], scratch, payload_path, ctx, extra)
}

/// Runs a payload file with `launcher` (the runner binary, or an emulator and then the runner:
/// `[qemu-aarch64-static, runner]`).
pub fn run_launched(
    launcher: &[&Path],
    scratch: &Scratch,
    payload_path: &Path,
    ctx: &Value,
    extra: &[&str],
) -> RunOutput {
    let ctx_path = scratch.path("context.json");
    std::fs::write(&ctx_path, ctx.to_string()).unwrap();
    let (program, rest) = launcher.split_first().expect("a launcher");
    let out = Command::new(program)
        .args(rest.iter())
        .arg("run")
        .arg(payload_path)
        .arg("--context")
        .arg(&ctx_path)
        .arg("--work-base")
        .arg(scratch.work())
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    RunOutput {
        events: parse_stdout(&out.stdout),
        code: out.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A runner started with `--control-stdin`, its events read on a thread as they come.
pub struct Live {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub events: Receiver<RunnerEvent>,
    pub seen: Vec<RunnerEvent>,
}

impl Live {
    /// Starts the runner on a payload file and sends the context line.
    pub fn start(scratch: &Scratch, payload: &[u8], ctx: &Value) -> Live {
        let payload_path = scratch.path("payload.tgz");
        std::fs::write(&payload_path, payload).unwrap();
        let mut live = Live::spawn(scratch, payload_path.to_str().unwrap());
        live.send(&format!("{ctx}\n"));
        live
    }

    /// Starts the runner with PAYLOAD `-`: context, length line, archive bytes on stdin.
    pub fn start_stdin(scratch: &Scratch, payload: &[u8], ctx: &Value) -> Live {
        let mut live = Live::spawn(scratch, "-");
        let mut data = format!("{ctx}\n{}\n", payload.len()).into_bytes();
        data.extend_from_slice(payload);
        let stdin = live.stdin.as_mut().unwrap();
        stdin.write_all(&data).unwrap();
        stdin.flush().unwrap();
        live
    }

    fn spawn(scratch: &Scratch, payload_arg: &str) -> Live {
        let mut child = Command::new(RUNNER)
            .args(["run", payload_arg, "--control-stdin", "--work-base"])
            .arg(scratch.work())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let line = line.unwrap();
                let event = RunnerEvent::parse(&line)
                    .unwrap_or_else(|e| panic!("bad event line {line:?}: {e}"));
                if tx.send(event).is_err() {
                    return;
                }
            }
        });
        Live {
            stdin: child.stdin.take(),
            child,
            events: rx,
            seen: Vec::new(),
        }
    }

    pub fn send(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// Waits (with a deadline) for an event matching `pred`; returns it.
    pub fn wait_for(
        &mut self,
        within: Duration,
        pred: impl Fn(&RunnerEvent) -> bool,
    ) -> RunnerEvent {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(e) => {
                    self.seen.push(e.clone());
                    if pred(&e) {
                        return e;
                    }
                }
                Err(_) => panic!("no matching event within {within:?}; seen {:?}", self.seen),
            }
        }
    }

    /// Reads the rest of the stream and the exit code.
    pub fn finish(mut self, within: Duration) -> RunOutput {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(e) => self.seen.push(e),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    panic!("runner did not finish within {within:?}: {:?}", self.seen);
                }
            }
        }
        let status = self.child.wait().unwrap();
        RunOutput {
            events: self.seen,
            code: status.code().unwrap_or(-1),
            stderr: String::new(),
        }
    }
}

/// Polls `cond` until it holds or `within` passes.
pub fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// True while a process with this pid exists (zombies included: they are not reaped yet).
pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Pids written one per line to a file by a test script.
pub fn read_pids(path: &Path) -> Vec<u32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

impl Live {
    /// Starts the runner with PAYLOAD `-` and writes nothing yet.
    pub fn start_raw(scratch: &Scratch) -> Live {
        Live::spawn(scratch, "-")
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
    }
}
