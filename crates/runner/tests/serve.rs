//! `cronium-runner serve`: the relay kept on an SSH channel. Requests in, prefixed lines out, runs
//! cancelled one by one or all at once on EOF; the real binary with real scripts.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use common::*;
use cronium_protocol::{RunStatus, RunnerEvent};
use serde_json::{json, Value};

struct Serve {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Serve {
    fn start(bin: &Path, scratch: &Scratch) -> Serve {
        let mut child = Command::new(bin)
            .arg("serve")
            .arg("--work-base")
            .arg(scratch.work())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let stdin = child.stdin.take();
        let mut s = Serve {
            child,
            stdin,
            lines,
        };
        let first = s.next();
        assert!(first.starts_with("!ready "), "first line: {first}");
        s
    }

    fn next(&mut self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(30))
            .expect("a line from serve within 30 s")
    }

    fn send(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
    }

    /// `run ID N` with the context line, the payload length line and the payload as body.
    fn run(&mut self, id: u64, payload: &[u8], ctx: &Value) {
        let mut body = ctx.to_string().into_bytes();
        body.push(b'\n');
        body.extend_from_slice(format!("{}\n", payload.len()).as_bytes());
        body.extend_from_slice(payload);
        let mut req = format!("run {id} {}\n", body.len()).into_bytes();
        req.extend_from_slice(&body);
        self.send(&req);
    }

    /// Lines of run `id` until its `!exit`: (events, stderr lines, exit code). Lines of other
    /// runs met on the way are kept in `others`.
    fn collect(
        &mut self,
        id: u64,
        others: &mut Vec<String>,
    ) -> (Vec<RunnerEvent>, Vec<String>, i32) {
        let prefix = format!("{id} ");
        let (mut events, mut errs) = (vec![], vec![]);
        loop {
            let line = self.next();
            let Some(rest) = line.strip_prefix(&prefix) else {
                others.push(line);
                continue;
            };
            if let Some(code) = rest.strip_prefix("!exit ") {
                return (events, errs, code.parse().unwrap());
            }
            if let Some(e) = rest.strip_prefix("!err ") {
                errs.push(e.to_string());
                continue;
            }
            events.push(RunnerEvent::parse(rest).unwrap_or_else(|e| panic!("{rest}: {e}")));
        }
    }

    fn close(&mut self) {
        self.stdin.take();
    }

    fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn finished(events: &[RunnerEvent]) -> RunStatus {
    match events.last() {
        Some(RunnerEvent::Finished(f)) => f.status,
        other => panic!("last event is not Finished: {other:?}"),
    }
}

fn stdout_lines(events: &[RunnerEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            RunnerEvent::Log { line, stream, .. }
                if *stream == cronium_protocol::Stream::Stdout =>
            {
                Some(line.clone())
            }
            _ => None,
        })
        .collect()
}

fn processes_with(marker: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .count()
}

#[test]
fn runs_are_relayed_in_turn_each_with_its_own_lines_and_input() {
    let scratch = Scratch::new();
    let mut s = Serve::start(Path::new(RUNNER), &scratch);
    let p = script(
        "bash",
        "echo \"hello $(cronium.input who)\"\necho warn >&2\ncronium.output who \"$(cronium.input who)\"\n",
        json!({}),
    );
    for (id, who) in [(1, "ada"), (2, "grace")] {
        s.run(id, &p, &context(json!({"input": {"who": who}})));
        let mut others = vec![];
        let (events, errs, code) = s.collect(id, &mut others);
        assert!(others.is_empty(), "{others:?}");
        assert_eq!(code, 0, "{errs:?}");
        assert_eq!(finished(&events), RunStatus::Succeeded);
        assert_eq!(stdout_lines(&events), vec![format!("hello {who}")]);
        assert!(
            events
                .iter()
                .any(|e| matches!(e, RunnerEvent::Output { value } if value["who"] == who)),
            "{events:?}"
        );
    }
    s.close();
    assert_eq!(s.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(scratch.leftovers().is_empty(), "{:?}", scratch.leftovers());
}

#[test]
fn cancel_stops_one_run_and_eof_cancels_the_rest_before_the_server_exits() {
    let scratch = Scratch::new();
    let mut s = Serve::start(Path::new(RUNNER), &scratch);
    let marker = format!("serve-cancel-{}", std::process::id());
    let long = script(
        "bash",
        &format!("( exec -a {marker} sleep 300 ) &\necho started\nwait\n"),
        json!({}),
    );
    s.run(5, &long, &context(json!({})));
    s.run(6, &long, &context(json!({})));
    // Both started (their `started` lines arrive in any order).
    let mut seen = 0;
    while seen < 2 {
        let l = s.next();
        if l.contains("\"line\":\"started\"") {
            seen += 1;
        }
    }
    s.send(b"cancel 5\n");
    let mut others = vec![];
    let (events, _, _) = s.collect(5, &mut others);
    assert_eq!(finished(&events), RunStatus::Cancelled);
    assert!(
        !others.iter().any(|l| l.starts_with("6 !exit")),
        "run 6 must still be going: {others:?}"
    );
    // EOF: the controller is gone. Run 6 is cancelled, reported, and then the server exits.
    s.close();
    let (events, _, _) = s.collect(6, &mut others);
    assert_eq!(finished(&events), RunStatus::Cancelled);
    assert_eq!(s.wait_exit(Duration::from_secs(20)), Some(0));
    assert_eq!(processes_with(&marker), 0, "a script process survived");
    assert!(scratch.leftovers().is_empty(), "{:?}", scratch.leftovers());
}

#[test]
fn bad_requests_are_refused_without_running_anything() {
    let scratch = Scratch::new();
    let mut s = Serve::start(Path::new(RUNNER), &scratch);
    // A body that is not a run context: that run fails on its own; the server goes on.
    s.send(b"run 1 4\n{}x\n");
    let mut others = vec![];
    let (events, _, code) = s.collect(1, &mut others);
    assert_ne!(code, 0);
    assert!(
        matches!(events.last(), Some(RunnerEvent::Finished(f)) if f.status == RunStatus::Failed),
        "{events:?}"
    );
    s.run(
        2,
        &script("bash", "echo fine\n", json!({})),
        &context(json!({})),
    );
    let (events, _, code) = s.collect(2, &mut others);
    assert_eq!((code, stdout_lines(&events)), (0, vec!["fine".to_string()]));
    // An announced body beyond the payload limit: refused, and the server stops (it cannot skip
    // that much input safely).
    s.send(b"run 3 999999999999\n");
    let (events, errs, code) = s.collect(3, &mut others);
    assert_eq!((events.len(), code), (0, 125));
    assert!(
        errs[0].contains("larger than the payload limit"),
        "{errs:?}"
    );
    assert_eq!(s.wait_exit(Duration::from_secs(10)), Some(0));
    // A line that is no request at all also ends it.
    let mut s = Serve::start(Path::new(RUNNER), &scratch);
    s.send(b"rm -rf /\n");
    assert_eq!(s.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(scratch.leftovers().is_empty(), "{:?}", scratch.leftovers());
}

#[test]
fn a_deleted_runner_binary_refuses_new_runs_as_missing() {
    let scratch = Scratch::new();
    let copy = scratch.path("cronium-runner-copy");
    std::fs::copy(RUNNER, &copy).unwrap();
    let mut s = Serve::start(&copy, &scratch);
    let p = script("bash", "echo before\n", json!({}));
    s.run(1, &p, &context(json!({})));
    let mut others = vec![];
    assert_eq!(s.collect(1, &mut others).2, 0);
    std::fs::remove_file(&copy).unwrap();
    s.run(2, &p, &context(json!({})));
    let (events, errs, code) = s.collect(2, &mut others);
    assert_eq!((events.len(), code), (0, 127), "{errs:?}");
    assert!(errs[0].contains("No such file"), "{errs:?}");
    assert_eq!(s.wait_exit(Duration::from_secs(10)), Some(0));
}
