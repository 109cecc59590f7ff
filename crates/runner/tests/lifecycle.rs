//! Process lifecycle: exit codes, timeouts, cancellation, leftover processes, results reported on
//! failure and timeout, live streaming, and the working directory removed on every path.

mod common;

use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use common::*;
use cronium_protocol::{RunStatus, RunnerEvent, Stream};
use serde_json::json;

#[test]
fn exit_code_and_started_event() {
    let scratch = Scratch::new();
    let out = run(
        &scratch,
        &script("bash", "echo out; echo err >&2; exit 7\n", json!({})),
        &context(json!({})),
    );
    assert!(
        matches!(out.events.first(), Some(RunnerEvent::Started { pid, .. }) if *pid > 0),
        "{:?}",
        out.events
    );
    let fin = out.finished();
    assert_eq!(fin.status, RunStatus::Failed);
    assert_eq!(fin.exit_code, Some(7));
    assert_eq!(fin.signal, None);
    assert_eq!(out.code, 7);
    assert_eq!(out.lines(Stream::Stdout), vec!["out"]);
    assert_eq!(out.lines(Stream::Stderr), vec!["err"]);
    scratch.assert_clean();
}

#[test]
fn death_by_signal_reports_128_plus_signal() {
    let scratch = Scratch::new();
    let out = run(
        &scratch,
        &script("bash", "kill -KILL $$\n", json!({})),
        &context(json!({})),
    );
    let fin = out.finished();
    assert_eq!(fin.status, RunStatus::Failed);
    assert_eq!(fin.exit_code, Some(137));
    assert_eq!(fin.signal, Some(9));
    assert_eq!(out.code, 137);
    scratch.assert_clean();
}

#[test]
fn outputs_and_variables_survive_a_failing_script() {
    let scratch = Scratch::new();
    let src = "cronium.output '{\"done\": 1}'\ncronium.setVariable last ok\nexit 1\n";
    let out = run(
        &scratch,
        &script("bash", src, json!({})),
        &context(json!({})),
    );
    assert_eq!(out.finished().status, RunStatus::Failed);
    assert_eq!(out.finished().exit_code, Some(1));
    assert_eq!(out.last_output(), Some(json!({"done": 1})));
    assert_eq!(out.variables(), vec![("last".to_string(), json!("ok"))]);
    scratch.assert_clean();
}

#[test]
fn outputs_and_variables_survive_a_timeout() {
    let scratch = Scratch::new();
    let src = "import cronium, time\ncronium.output({'partial': [1, 2]})\n\
               cronium.setVariable('progress', 50)\ntime.sleep(1000)\n";
    let out = run(
        &scratch,
        &script(
            "python",
            src,
            json!({"timeout_ms": 800, "kill_grace_ms": 200}),
        ),
        &context(json!({})),
    );
    let fin = out.finished();
    assert_eq!(fin.status, RunStatus::TimedOut);
    assert_eq!(fin.exit_code, Some(124));
    assert_eq!(out.code, 124);
    assert_eq!(out.last_output(), Some(json!({"partial": [1, 2]})));
    assert_eq!(out.variables(), vec![("progress".to_string(), json!(50))]);
    scratch.assert_clean();
}

/// A script that ignores SIGTERM and leaves children in and out of its process group.
const STUBBORN: &str = r#"trap '' TERM
sleep 1000 & echo $! >> "$PIDFILE"
bash -c 'while :; do sleep 1; done' & echo $! >> "$PIDFILE"
setsid bash -c 'echo $$ >> "$0"; exec sleep 1000' "$PIDFILE" &
( setsid sleep 1000 & echo $! >> "$PIDFILE" )
echo $$ >> "$PIDFILE"
echo ready
while :; do sleep 0.05; done
"#;

#[test]
fn timeout_kills_a_term_ignoring_tree_including_setsid_children() {
    let scratch = Scratch::new();
    let pidfile = scratch.path("pids");
    let (timeout, grace) = (1_500u64, 700u64);
    let started = Instant::now();
    let out = run(
        &scratch,
        &script(
            "bash",
            STUBBORN,
            json!({"timeout_ms": timeout, "kill_grace_ms": grace}),
        ),
        &context(json!({"env": {"PIDFILE": pidfile.to_str().unwrap()}})),
    );
    let elapsed = started.elapsed();
    let fin = out.finished();
    assert_eq!(fin.status, RunStatus::TimedOut, "{:?}", out.events);
    assert_eq!(fin.exit_code, Some(124));
    assert_eq!(out.code, 124);
    // SIGTERM was ignored, so the run lasts the timeout plus the whole grace period, not more.
    assert!(
        elapsed >= Duration::from_millis(timeout + grace),
        "{elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(timeout + grace + 3_000),
        "{elapsed:?}"
    );
    let pids = read_pids(&pidfile);
    assert_eq!(pids.len(), 5, "script did not record every pid: {pids:?}");
    for pid in pids {
        assert!(!alive(pid), "process {pid} survived the runner");
    }
    scratch.assert_clean();
}

#[test]
fn background_processes_left_by_a_successful_script_are_killed() {
    let scratch = Scratch::new();
    let pidfile = scratch.path("pids");
    let left = scratch.path("left-the-group");
    // The script waits until its setsid child has really left the process group (the marker is
    // written after setsid, by the program setsid started): otherwise a script that exits first
    // lets the group kill catch that child, and the descendant sweep goes untested.
    let src = r#"sleep 1000 & echo $! >> "$PIDFILE"
( setsid sh -c 'echo $$ > "$LEFT"; exec sleep 1000' >/dev/null 2>&1 & )
while [ ! -s "$LEFT" ]; do sleep 0.01; done
cat "$LEFT" >> "$PIDFILE"
echo done
exit 0
"#;
    let started = Instant::now();
    let out = run(
        &scratch,
        &script("bash", src, json!({})),
        &context(json!({"env": {
            "PIDFILE": pidfile.to_str().unwrap(),
            "LEFT": left.to_str().unwrap(),
        }})),
    );
    assert_eq!(
        out.finished().status,
        RunStatus::Succeeded,
        "{:?}",
        out.events
    );
    assert_eq!(out.stdout(), vec!["done"]);
    assert!(started.elapsed() < Duration::from_secs(10));
    let pids = read_pids(&pidfile);
    assert_eq!(pids.len(), 2, "{pids:?}");
    for pid in pids {
        assert!(!alive(pid), "background process {pid} survived the runner");
    }
    scratch.assert_clean();
}

/// A script whose main process and a grandchild (a subshell in its process group) both trap
/// SIGTERM and keep running; the grandchild writes `term` when the signal arrives, then `alive`
/// lines every 50 ms, so the marker file shows how long it lived after SIGTERM.
const TERM_TRAPPING_TREE: &str = r#"(
  trap 'termed=1; echo "term $EPOCHREALTIME" >> "$MARK"' TERM
  echo $BASHPID >> "$PIDFILE"
  while :; do
    if [ -n "$termed" ]; then echo "alive $EPOCHREALTIME" >> "$MARK"; fi
    sleep 0.05
  done
) &
# "ready" only once the grandchild's trap is set (it writes its pid after setting it).
until [ -s "$PIDFILE" ]; do sleep 0.01; done
echo $$ >> "$PIDFILE"
trap 'echo main got TERM' TERM
echo ready
while :; do sleep 0.05; done
"#;

/// Times (s) of the marker lines of [`TERM_TRAPPING_TREE`] that start with `word`.
fn marks(path: &std::path::Path, word: &str) -> Vec<f64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix(word)?.trim().parse().ok())
        .collect()
}

/// Asserts that the grandchild of [`TERM_TRAPPING_TREE`] got SIGTERM, lived through the grace
/// period and was then killed.
fn assert_grandchild_got_term_then_grace(mark: &std::path::Path, pids: &[u32], grace_ms: u64) {
    let term = marks(mark, "term ");
    assert_eq!(
        term.len(),
        1,
        "the grandchild did not get SIGTERM (only the direct child was signalled?): {:?}",
        std::fs::read_to_string(mark).unwrap_or_default()
    );
    let last_alive = marks(mark, "alive ").into_iter().fold(0.0, f64::max);
    let lived_ms = (last_alive - term[0]) * 1000.0;
    // It writes every 50 ms until SIGKILL, so the last line is at most ~50 ms (plus scheduling
    // delay) before the end of the grace period, and never after it.
    assert!(
        lived_ms >= grace_ms as f64 - 400.0,
        "the grandchild lived only {lived_ms:.0} ms after SIGTERM, not the {grace_ms} ms grace"
    );
    assert!(
        lived_ms <= grace_ms as f64 + 1_000.0,
        "the grandchild lived {lived_ms:.0} ms after SIGTERM, past the {grace_ms} ms grace"
    );
    assert_eq!(pids.len(), 2, "{pids:?}");
    for &pid in pids {
        assert!(!alive(pid), "process {pid} survived the runner");
    }
}

#[test]
fn on_timeout_grandchildren_get_sigterm_and_the_grace_period_before_sigkill() {
    let scratch = Scratch::new();
    let (pidfile, mark) = (scratch.path("pids"), scratch.path("mark"));
    let (timeout, grace) = (1_000u64, 1_500u64);
    let out = run(
        &scratch,
        &script(
            "bash",
            TERM_TRAPPING_TREE,
            json!({"timeout_ms": timeout, "kill_grace_ms": grace}),
        ),
        &context(json!({"env": {
            "PIDFILE": pidfile.to_str().unwrap(),
            "MARK": mark.to_str().unwrap(),
        }})),
    );
    assert_eq!(
        out.finished().status,
        RunStatus::TimedOut,
        "{:?}",
        out.events
    );
    assert!(
        out.stdout().iter().any(|l| l == "main got TERM"),
        "{:?}",
        out.events
    );
    assert_grandchild_got_term_then_grace(&mark, &read_pids(&pidfile), grace);
    scratch.assert_clean();
}

#[test]
fn on_cancel_grandchildren_get_sigterm_and_the_grace_period_before_sigkill() {
    let scratch = Scratch::new();
    let (pidfile, mark) = (scratch.path("pids"), scratch.path("mark"));
    let grace = 1_500u64;
    let mut live = Live::start(
        &scratch,
        &script("bash", TERM_TRAPPING_TREE, json!({"kill_grace_ms": grace})),
        &context(json!({"env": {
            "PIDFILE": pidfile.to_str().unwrap(),
            "MARK": mark.to_str().unwrap(),
        }})),
    );
    live.wait_for(
        Duration::from_secs(10),
        |e| matches!(e, RunnerEvent::Log { line, .. } if line == "ready"),
    );
    live.send("{\"t\":\"cancel\"}\n");
    let out = live.finish(Duration::from_secs(20));
    assert_eq!(
        out.finished().status,
        RunStatus::Cancelled,
        "{:?}",
        out.events
    );
    assert_grandchild_got_term_then_grace(&mark, &read_pids(&pidfile), grace);
    scratch.assert_clean();
}

const WAITER: &str = r#"sleep 1000 & echo $! >> "$PIDFILE"
( setsid sleep 1000 & echo $! >> "$PIDFILE" )
echo $$ >> "$PIDFILE"
echo ready
wait
"#;

fn cancel_test(cancel: impl FnOnce(&mut Live)) {
    let scratch = Scratch::new();
    let pidfile = scratch.path("pids");
    let mut live = Live::start(
        &scratch,
        &script("bash", WAITER, json!({"kill_grace_ms": 5_000})),
        &context(json!({"env": {"PIDFILE": pidfile.to_str().unwrap()}})),
    );
    live.wait_for(
        Duration::from_secs(10),
        |e| matches!(e, RunnerEvent::Log { line, .. } if line == "ready"),
    );
    assert_eq!(
        scratch.leftovers().len(),
        1,
        "working directory exists while running"
    );
    let cancelled_at = Instant::now();
    cancel(&mut live);
    let out = live.finish(Duration::from_secs(20));
    // bash dies on SIGTERM, so the runner does not wait out the 5 s grace period.
    assert!(cancelled_at.elapsed() < Duration::from_secs(4));
    let fin = out.finished();
    assert_eq!(fin.status, RunStatus::Cancelled, "{:?}", out.events);
    assert_eq!(fin.exit_code, Some(143));
    assert_eq!(out.code, 143);
    let pids = read_pids(&pidfile);
    assert_eq!(pids.len(), 3, "{pids:?}");
    for pid in pids {
        assert!(!alive(pid), "process {pid} survived the cancel");
    }
    scratch.assert_clean();
}

#[test]
fn cancel_by_closing_stdin() {
    cancel_test(|live| live.close_stdin());
}

#[test]
fn cancel_by_control_line() {
    cancel_test(|live| live.send("{\"t\":\"cancel\"}\n"));
}

#[test]
fn log_lines_stream_while_the_script_runs() {
    let scratch = Scratch::new();
    let marker = scratch.path("go");
    let src = r#"echo first
while [ ! -e "$MARKER" ]; do sleep 0.01; done
echo second
"#;
    let mut live = Live::start(
        &scratch,
        &script("bash", src, json!({})),
        &context(json!({"env": {"MARKER": marker.to_str().unwrap()}})),
    );
    // The first line must arrive while the script is still blocked on the marker.
    live.wait_for(
        Duration::from_secs(10),
        |e| matches!(e, RunnerEvent::Log { line, .. } if line == "first"),
    );
    std::fs::write(&marker, b"").unwrap();
    let out = live.finish(Duration::from_secs(10));
    assert_eq!(out.finished().status, RunStatus::Succeeded);
    assert_eq!(out.stdout(), vec!["first", "second"]);
    scratch.assert_clean();
}

#[test]
fn working_directory_is_private_and_removed_even_when_locked_down() {
    let scratch = Scratch::new();
    let src = r#"stat -c '%a' .
pwd
mkdir -p locked/inner && touch locked/inner/f && chmod 000 locked/inner locked
"#;
    let out = run(
        &scratch,
        &script("bash", src, json!({})),
        &context(json!({})),
    );
    assert_eq!(out.finished().status, RunStatus::Succeeded);
    let lines = out.stdout();
    assert_eq!(lines[0], "700");
    assert!(
        lines[1].starts_with(scratch.work().to_str().unwrap()),
        "{lines:?}"
    );
    scratch.assert_clean();
}

#[test]
fn an_interpreter_that_cannot_be_executed_fails_with_126_and_says_why() {
    let scratch = Scratch::new();
    let not_executable = scratch.path("python3");
    std::fs::write(&not_executable, "not a program\n").unwrap();
    let out = run(
        &scratch,
        &script("python", "print(1)\n", json!({})),
        &context(json!({"interpreters": {"python": not_executable.to_str().unwrap()}})),
    );
    let fin = out.finished();
    assert_eq!(fin.status, RunStatus::Failed);
    assert_eq!(fin.exit_code, Some(126), "{fin:?}");
    let error = fin.error.as_deref().unwrap_or("");
    assert!(
        error.contains(not_executable.to_str().unwrap()) && error.contains("ermission denied"),
        "{fin:?}"
    );
    assert_eq!(out.code, 126);
    scratch.assert_clean();
}

#[test]
fn a_killed_runner_takes_the_scripts_main_process_with_it() {
    let scratch = Scratch::new();
    let pidfile = scratch.path("pids");
    let mut live = Live::start(
        &scratch,
        &script(
            "bash",
            "echo $$ >> \"$PIDFILE\"\necho ready\nexec sleep 1000\n",
            json!({}),
        ),
        &context(json!({"env": {"PIDFILE": pidfile.to_str().unwrap()}})),
    );
    live.wait_for(
        Duration::from_secs(10),
        |e| matches!(e, RunnerEvent::Log { line, .. } if line == "ready"),
    );
    let pids = read_pids(&pidfile);
    assert_eq!(pids.len(), 1, "{pids:?}");
    assert!(alive(pids[0]));
    // SIGKILL: the runner cannot clean up; the parent-death signal is what ends the script.
    live.child.kill().unwrap();
    live.child.wait().unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || !alive(pids[0])),
        "the script's main process {} outlived its killed runner",
        pids[0]
    );
}

#[test]
fn missing_interpreter_fails_with_127() {
    let scratch = Scratch::new();
    let out = run(
        &scratch,
        &script("python", "print(1)\n", json!({})),
        &context(json!({"interpreters": {"python": "/nonexistent/python3"}})),
    );
    let fin = out.finished();
    assert_eq!(fin.status, RunStatus::Failed);
    assert_eq!(fin.exit_code, Some(127));
    assert!(
        fin.error
            .as_deref()
            .unwrap_or("")
            .contains("/nonexistent/python3"),
        "{fin:?}"
    );
    assert_eq!(out.code, 127);
    scratch.assert_clean();

    let out = run(
        &scratch,
        &script(
            "bash",
            "echo hi\n",
            json!({"env": {"PATH": "/nonexistent"}}),
        ),
        &context(json!({})),
    );
    let fin = out.finished();
    assert_eq!(fin.exit_code, Some(127));
    assert!(
        fin.error
            .as_deref()
            .unwrap_or("")
            .contains("bash interpreter not found"),
        "{fin:?}"
    );
    scratch.assert_clean();
}

#[test]
fn api_helper_mode_is_refused_clearly() {
    let scratch = Scratch::new();
    let out = run(
        &scratch,
        &script("bash", "echo should-not-run\n", json!({})),
        &context(json!({"helper_mode": "api", "api": {"endpoint": "http://x", "token": "t"}})),
    );
    let fin = out.finished();
    assert_eq!(fin.status, RunStatus::Failed);
    assert_eq!(fin.exit_code, None);
    assert!(
        fin.error.as_deref().unwrap_or("").contains("api"),
        "{fin:?}"
    );
    assert!(out.stdout().is_empty());
    assert_eq!(out.code, 2);
    scratch.assert_clean();
}

#[test]
fn version_flag_prints_crate_version() {
    let out = std::process::Command::new(RUNNER)
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("cronium-runner {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn sigterm_to_the_runner_cancels_the_run() {
    let scratch = Scratch::new();
    let pidfile = scratch.path("pids");
    let mut live = Live::start(
        &scratch,
        &script("bash", WAITER, json!({})),
        &context(json!({"env": {"PIDFILE": pidfile.to_str().unwrap()}})),
    );
    live.wait_for(
        Duration::from_secs(10),
        |e| matches!(e, RunnerEvent::Log { line, .. } if line == "ready"),
    );
    let status = std::process::Command::new("kill")
        .args(["-TERM", &live.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = live.finish(Duration::from_secs(20));
    assert_eq!(
        out.finished().status,
        RunStatus::Cancelled,
        "{:?}",
        out.events
    );
    assert_eq!(out.code, 143);
    let pids = read_pids(&pidfile);
    // An empty pid file would make the loop below vacuous.
    assert_eq!(pids.len(), 3, "{pids:?}");
    for pid in pids {
        assert!(!alive(pid), "process {pid} survived");
    }
    scratch.assert_clean();
}

#[test]
fn orphans_that_exit_during_the_run_are_reaped_at_once() {
    let scratch = Scratch::new();
    // Daemonised children that exit become zombies of the runner (the subreaper) until reaped;
    // the script counts them from the inside, for up to 5 s.
    let src = r#"runner=$PPID
zombies() {
    n=0
    for f in /proc/[0-9]*/stat; do
        read -r line < "$f" 2>/dev/null || continue
        set -- ${line##*) }
        if [ "$1" = Z ] && [ "$2" = "$runner" ]; then n=$((n + 1)); fi
    done
    echo $n
}
for i in $(seq 20); do ( setsid true & ); done
for i in $(seq 100); do [ "$(zombies)" = 0 ] && break; sleep 0.05; done
echo "zombies=$(zombies)"
"#;
    let out = run(
        &scratch,
        &script("bash", src, json!({})),
        &context(json!({})),
    );
    assert_eq!(out.finished().status, RunStatus::Succeeded);
    assert_eq!(out.stdout(), vec!["zombies=0"]);
    scratch.assert_clean();
}

#[test]
fn huge_timeout_and_grace_values_do_not_crash_the_runner() {
    let scratch = Scratch::new();
    let out = run(
        &scratch,
        &script(
            "bash",
            "echo ok\n",
            json!({"timeout_ms": u64::MAX, "kill_grace_ms": u64::MAX}),
        ),
        &context(json!({})),
    );
    assert_eq!(out.finished().status, RunStatus::Succeeded);
    assert_eq!(out.stdout(), vec!["ok"]);
    scratch.assert_clean();
}

#[test]
fn command_line_errors_exit_2_with_usage() {
    let out = std::process::Command::new(RUNNER)
        .args(["run", "p.tgz", "--bogus"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`--bogus`") && stderr.contains("usage:"),
        "{stderr}"
    );
    // The one line on stdout is the final event, naming the problem.
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    match RunnerEvent::parse(&stdout).unwrap() {
        RunnerEvent::Finished(f) => {
            assert_eq!(f.status, RunStatus::Failed);
            assert!(f.error.unwrap().contains("`--bogus`"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn parallel_runs_stay_separate() {
    let scratch = Scratch::new();
    let src = "cronium.output n \"$(cronium.input n)\"\ncronium.setVariable seen \"$(cronium.input n)\"\n\
               echo \"run $(cronium.input n) in $PWD\"\n";
    let p = script("bash", src, json!({}));
    let mut runs: Vec<Live> = (0..8)
        .map(|n| Live::start_stdin(&scratch, &p, &context(json!({"input": {"n": n}}))))
        .collect();
    let outs: Vec<RunOutput> = runs
        .drain(..)
        .map(|live| live.finish(Duration::from_secs(30)))
        .collect();
    let mut dirs = std::collections::HashSet::new();
    for (n, out) in outs.iter().enumerate() {
        assert_eq!(
            out.finished().status,
            RunStatus::Succeeded,
            "{:?}",
            out.events
        );
        assert_eq!(out.last_output(), Some(json!({"n": n})));
        assert_eq!(out.variables(), vec![("seen".to_string(), json!(n))]);
        let line = &out.stdout()[0];
        assert!(line.starts_with(&format!("run {n} in ")), "{line}");
        dirs.insert(line.clone());
    }
    assert_eq!(dirs.len(), 8, "each run has its own working directory");
    scratch.assert_clean();
}

/// Regression: with stdout and stderr both gone (a dropped SSH channel), writing a diagnostic
/// used to panic the runner before it killed the script and removed its directory.
#[test]
fn a_vanished_controller_cancels_the_run_and_cleans_up() {
    use std::io::{BufRead, BufReader, Write};
    let scratch = Scratch::new();
    let pidfile = scratch.path("pids");
    let payload_path = scratch.path("payload.tgz");
    let src = "sleep 1000 & echo $! >> \"$PIDFILE\"\necho ready\nwhile :; do echo tick; sleep 0.01; done\n";
    std::fs::write(&payload_path, script("bash", src, json!({}))).unwrap();
    let mut child = std::process::Command::new(RUNNER)
        .arg("run")
        .arg(&payload_path)
        .args(["--control-stdin", "--work-base"])
        .arg(scratch.work())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let ctx = context(json!({"env": {"PIDFILE": pidfile.to_str().unwrap()}}));
    stdin.write_all(format!("{ctx}\n").as_bytes()).unwrap();
    stdin.flush().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.any(|l| l.unwrap().contains("\"line\":\"ready\"")));
    // Stdin stays open: only the output side disappears.
    drop(lines);
    drop(child.stderr.take());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "runner kept running without a reader"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(143), "{status:?}");
    let pids = read_pids(&pidfile);
    assert_eq!(pids.len(), 1);
    assert!(!alive(pids[0]), "background process survived");
    scratch.assert_clean();
    drop(stdin);
}

#[test]
fn directories_left_by_killed_runners_are_swept_by_the_next_run() {
    use std::time::SystemTime;
    let scratch = Scratch::new();
    let make = |name: &str, age: Duration| {
        let dir = scratch.work().join(name);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/file"), b"x").unwrap();
        std::fs::File::open(&dir)
            .unwrap()
            .set_modified(SystemTime::now() - age)
            .unwrap();
        dir
    };
    let hour = Duration::from_secs(3600);
    let stale = make("cronium-run-1-dead", hour);
    let young = make("cronium-run-2-young", Duration::ZERO);
    let held = make("cronium-run-3-held", hour);
    let foreign = make("cronium-run-4-foreign", hour);
    let unrelated = make("something-else", hour);
    std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
    // A live runner holds its directory's lock; the flock(1) tool stands in for one here.
    let mut holder = std::process::Command::new("flock")
        .arg("-x")
        .arg(&held)
        .args(["-c", "echo locked; exec sleep 600"])
        .stdout(std::process::Stdio::piped())
        // Its own group: flock forks the command, and killing only flock would orphan the
        // sleep (which would hold the test's output pipe open for ten minutes).
        .process_group(0)
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
        &mut first,
    )
    .unwrap();
    assert_eq!(first.trim(), "locked");

    let out = run(
        &scratch,
        &script("bash", "echo hi\n", json!({})),
        &context(json!({})),
    );
    assert_eq!(out.finished().status, RunStatus::Succeeded);
    // SAFETY: kill(2) on the holder's own process group.
    unsafe {
        libc::kill(-(holder.id() as i32), libc::SIGKILL);
    }
    holder.wait().unwrap();

    assert!(!stale.exists(), "stale directory was not swept");
    for kept in [&young, &held, &foreign, &unrelated] {
        assert!(kept.exists(), "{} must be kept", kept.display());
    }
}

/// At most one run a minute reads the work base to sweep it: a stale directory that appears
/// right after a sweep stays until the stamp of that sweep is a minute old; a stamp that is not
/// the user's own regular file is never trusted.
#[test]
fn the_work_base_is_swept_at_most_once_a_minute() {
    use std::time::SystemTime;
    let scratch = Scratch::new();
    let hi = || {
        let out = run(
            &scratch,
            &script("bash", "echo hi\n", json!({})),
            &context(json!({})),
        );
        assert_eq!(out.finished().status, RunStatus::Succeeded);
    };
    let stale = |name: &str| {
        let dir = scratch.work().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::File::open(&dir)
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(3600))
            .unwrap();
        dir
    };
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let stamp = scratch.work().join(format!("{SWEEP_STAMP_PREFIX}{uid}"));
    hi();
    assert!(stamp.is_file(), "no stamp after a sweep");
    let first = stale("cronium-run-1-dead");
    hi();
    assert!(first.exists(), "swept again within the minute");
    std::fs::File::options()
        .write(true)
        .open(&stamp)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(61))
        .unwrap();
    hi();
    assert!(
        !first.exists(),
        "not swept once the last sweep was a minute ago"
    );
    // A symlink in the stamp's place is neither followed nor trusted: every run sweeps.
    std::fs::remove_file(&stamp).unwrap();
    let target = scratch.path("elsewhere");
    std::fs::write(&target, b"keep").unwrap();
    std::os::unix::fs::symlink(&target, &stamp).unwrap();
    let second = stale("cronium-run-2-dead");
    hi();
    assert!(!second.exists(), "a symlinked stamp stopped the sweep");
    let third = stale("cronium-run-3-dead");
    hi();
    assert!(!third.exists(), "a symlinked stamp stopped the sweep");
    assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    std::fs::remove_file(&stamp).unwrap();
}

/// The runner's `Finished` carries the tree's usage: a grandchild started through a child
/// that exits at once (so re-parented to the runner, a subreaper) does the work and is still
/// alive when the script ends; the cleanup reaps it and its CPU and memory count.
#[test]
fn usage_counts_a_grandchild_that_outlives_its_parent() {
    let scratch = Scratch::new();
    let done = scratch.path("done");
    let burn = "import sys, time\nblock = b'x' * (50 << 20)\nstart = time.process_time()\nwhile time.process_time() - start < 0.25:\n    pass\nopen(sys.argv[1], 'w').close()\ntime.sleep(600)\n";
    let burn_path = scratch.path("burn.py");
    std::fs::write(&burn_path, burn).unwrap();
    let src = format!(
        "sh -c '{py} \"$0\" \"$1\" & exit 0' {} {}\nwhile [ ! -e {} ]; do sleep 0.05; done\n",
        burn_path.display(),
        done.display(),
        done.display(),
        py = python(),
    );
    let out = run(
        &scratch,
        &script("bash", &src, json!({})),
        &context(json!({})),
    );
    let fin = out.finished();
    assert_eq!(fin.status, RunStatus::Succeeded, "{:?}", out.events);
    let u = fin.usage.expect("usage measured");
    assert!(u.cpu_user_ms + u.cpu_system_ms >= 150, "{u:?}");
    assert!(u.max_rss_bytes >= 40 << 20, "{u:?}");
    // No cgroup figures unless the transport says the runner is alone in its cgroup.
    assert_eq!((u.cgroup_cpu_ms, u.cgroup_memory_peak_bytes), (None, None));
    scratch.assert_clean();
}

/// A run that never started measured nothing: no usage rather than zeros.
#[test]
fn a_run_that_never_started_reports_no_usage() {
    let scratch = Scratch::new();
    let out = run(&scratch, b"not a tar.gz", &context(json!({})));
    let fin = out.finished();
    assert_eq!(fin.status, RunStatus::Failed);
    assert_eq!(fin.usage, None);
}
