//! Container runs against the real Docker engine, with the real static runner and the local images
//! built by `scripts/build-images.sh`. Every test also checks that its run left no container or
//! network behind.

mod common;

use std::time::{Duration, Instant};

use common::*;
use cronium_docker::{ContainerSpec, DockerError, Limits, NetworkMode, PullPolicy};
use cronium_protocol::{Interpreter, RunStatus, RunnerEvent, Stream, EXIT_TIMEOUT};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const MIB: i64 = 1024 * 1024;

fn spec() -> ContainerSpec {
    ContainerSpec::default()
}

async fn helpers_round_trip(interpreter: Interpreter, script: &str) {
    let exec = executor(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let req = request(
        dir.path(),
        interpreter,
        script,
        Duration::from_secs(60),
        json!({"name": "docker"}),
    );
    let out = run(&exec, interpreter, &spec(), &req, CancellationToken::new()).await;
    let r = out.run();
    assert_eq!(r.finished.status, RunStatus::Succeeded, "{:#?}", out.events);
    assert_eq!(r.finished.exit_code, Some(0));
    assert!(!r.oom_killed);
    assert!(
        out.script_lines().iter().any(|l| l == "hello docker"),
        "{:#?}",
        out.events
    );
    let output = out.output().expect("an output event");
    assert_eq!(output["greeting"], "hello docker", "{output}");
    assert_eq!(output["lang"], interpreter.as_str());
    assert!(
        out.events.iter().any(|e| matches!(e,
            RunnerEvent::Variable { name, value } if name == "last_greeting" && value == "docker")),
        "{:#?}",
        out.events
    );
    assert!(
        matches!(out.events.last(), Some(RunnerEvent::Finished(_))),
        "the final event is last"
    );
    assert_clean(&exec, out.execution_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bash_helpers_work_in_a_container() {
    helpers_round_trip(
        Interpreter::Bash,
        r#"name=$(cronium.input name)
echo "hello $name"
cronium.output "{\"greeting\": \"hello $name\", \"lang\": \"bash\"}"
cronium.setVariable last_greeting "\"$name\""
"#,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_helpers_work_in_a_container() {
    helpers_round_trip(
        Interpreter::Python,
        r#"import cronium
inp = cronium.input()
print("hello", inp["name"], flush=True)
cronium.output({"greeting": "hello " + inp["name"], "lang": "python"})
cronium.setVariable("last_greeting", inp["name"])
"#,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_helpers_work_in_a_container() {
    helpers_round_trip(
        Interpreter::Node,
        r#"const cronium = require('cronium');
const inp = cronium.input();
console.log('hello ' + inp.name);
cronium.output({greeting: 'hello ' + inp.name, lang: 'node'});
cronium.setVariable('last_greeting', inp.name);
"#,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_code_of_a_failing_script_is_captured() {
    let exec = executor(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let req = request(
        dir.path(),
        Interpreter::Bash,
        "echo before; echo oops >&2; exit 7",
        Duration::from_secs(60),
        json!({}),
    );
    let out = run(
        &exec,
        Interpreter::Bash,
        &spec(),
        &req,
        CancellationToken::new(),
    )
    .await;
    let r = out.run();
    assert_eq!(r.finished.status, RunStatus::Failed);
    assert_eq!(r.finished.exit_code, Some(7));
    assert_eq!(out.stream_lines(Stream::Stdout), vec!["before"]);
    assert_eq!(out.stream_lines(Stream::Stderr), vec!["oops"]);
    assert_eq!(out.script_lines().len(), 2, "{:?}", out.script_lines());
    assert_clean(&exec, out.execution_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_hog_is_reported_as_out_of_memory() {
    let exec = executor(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let req = request(
        dir.path(),
        Interpreter::Python,
        "print('allocating', flush=True)\nx = bytearray(400 * 1024 * 1024)\nprint('survived')\n",
        Duration::from_secs(60),
        json!({}),
    );
    let spec = ContainerSpec {
        limits: Limits {
            memory_bytes: Some(64 * MIB),
            ..Limits::default()
        },
        ..spec()
    };
    let out = run(
        &exec,
        Interpreter::Python,
        &spec,
        &req,
        CancellationToken::new(),
    )
    .await;
    let r = out.run();
    assert!(r.oom_killed, "{:#?}", out.events);
    assert_eq!(r.finished.status, RunStatus::Failed);
    let error = r.finished.error.as_deref().unwrap_or_default();
    assert!(error.contains("out of memory (limit 64 MiB)"), "{error}");
    assert!(!out.script_lines().iter().any(|l| l == "survived"));
    // The agent sees the amended result too, not the runner's bare one.
    match out.events.last() {
        Some(RunnerEvent::Finished(f)) => assert_eq!(f, &r.finished),
        other => panic!("last event {other:?}"),
    }
    assert_clean(&exec, out.execution_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_bomb_is_contained_by_the_pids_limit() {
    let exec = executor(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let req = request(
        dir.path(),
        Interpreter::Python,
        r#"import os, time, cronium
n, err = 0, None
try:
    while n < 2000:
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        n += 1
except OSError as e:
    err = str(e)
cronium.output({"forked": n, "error": err})
"#,
        Duration::from_secs(60),
        json!({}),
    );
    let spec = ContainerSpec {
        limits: Limits {
            pids: Some(40),
            ..Limits::default()
        },
        ..spec()
    };
    let started = Instant::now();
    let out = run(
        &exec,
        Interpreter::Python,
        &spec,
        &req,
        CancellationToken::new(),
    )
    .await;
    out.run();
    let output = out.output().expect("output");
    let forked = output["forked"].as_i64().unwrap();
    assert!(forked < 40, "forked {forked} processes despite pids=40");
    assert!(
        output["error"]
            .as_str()
            .unwrap_or_default()
            .contains("unavailable"),
        "{output}"
    );
    // The sleeping children do not hold the run open: removing the container ends them.
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_clean(&exec, out.execution_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_limit_is_applied_and_observable() {
    let exec = executor(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    // The cgroup's quota, and a one-second busy loop's CPU time / wall time.
    let req = request(
        dir.path(),
        Interpreter::Python,
        r#"import os, time, cronium
def read(p):
    try:
        return open(p).read().strip()
    except OSError:
        return None
quota = read("/sys/fs/cgroup/cpu.max") or (read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") + " " + read("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))
w0, c0 = time.monotonic(), time.process_time()
while time.monotonic() - w0 < 1.5:
    pass
ratio = (time.process_time() - c0) / (time.monotonic() - w0)
cronium.output({"quota": quota, "ratio": ratio})
"#,
        Duration::from_secs(60),
        json!({}),
    );
    let spec = ContainerSpec {
        limits: Limits {
            cpus: Some(0.25),
            ..Limits::default()
        },
        ..spec()
    };
    let out = run(
        &exec,
        Interpreter::Python,
        &spec,
        &req,
        CancellationToken::new(),
    )
    .await;
    out.run();
    let output = out.output().expect("output");
    assert_eq!(output["quota"], "25000 100000", "{output}");
    let ratio = output["ratio"].as_f64().unwrap();
    // Contention can only lower the ratio; without the limit it would be close to 1.
    assert!(
        ratio < 0.4,
        "busy loop got {ratio} of a core with cpus=0.25"
    );
    assert_clean(&exec, out.execution_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_above_the_maximum_are_refused_before_anything_runs() {
    let exec = executor(|c| {
        c.maximums = Limits {
            cpus: Some(1.0),
            memory_bytes: Some(256 * MIB),
            pids: Some(100),
        };
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let req = request(
        dir.path(),
        Interpreter::Bash,
        "echo should-not-run",
        Duration::from_secs(10),
        json!({}),
    );
    for (limits, field, text) in [
        (
            Limits {
                memory_bytes: Some(1024 * MIB),
                ..Limits::default()
            },
            "memory",
            "container.memory: 1 GiB exceeds the maximum allowed (256 MiB)",
        ),
        (
            Limits {
                pids: Some(1000),
                ..Limits::default()
            },
            "pids",
            "container.pids: 1000 exceeds the maximum allowed (100)",
        ),
    ] {
        let spec = ContainerSpec { limits, ..spec() };
        let err = exec.check_limits(&spec).unwrap_err();
        assert_eq!(err.field(), field);
        let out = run(
            &exec,
            Interpreter::Bash,
            &spec,
            &req,
            CancellationToken::new(),
        )
        .await;
        match &out.result {
            Err(DockerError::Limit(e)) => assert_eq!(e.to_string(), text),
            other => panic!("expected a limit error, got {other:?}"),
        }
        assert!(out.events.is_empty(), "nothing ran: {:#?}", out.events);
        assert!(leftovers(&exec, out.execution_id).await.is_empty());
    }
    // No event limit: the maximums apply rather than "unlimited".
    assert_eq!(
        exec.check_limits(&spec()).unwrap().memory_bytes,
        Some(256 * MIB)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_fs_is_read_only_caps_are_dropped_and_user_is_nobody() {
    let exec = executor(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let req = request(
        dir.path(),
        Interpreter::Bash,
        r#"touch /should-fail 2>/dev/null && echo "root-writable" || echo "root-readonly"
touch /tmp/ok && echo "tmp-writable"
grep -E '^(CapEff|CapBnd|NoNewPrivs):' /proc/self/status | tr -s '\t' ' '
echo "uid=$(id -u) gid=$(id -g)"
"#,
        Duration::from_secs(60),
        json!({}),
    );
    let out = run(
        &exec,
        Interpreter::Bash,
        &spec(),
        &req,
        CancellationToken::new(),
    )
    .await;
    assert_eq!(out.run().finished.exit_code, Some(0), "{:#?}", out.events);
    let lines = out.script_lines();
    for expected in [
        "root-readonly",
        "tmp-writable",
        "CapEff: 0000000000000000",
        "CapBnd: 0000000000000000",
        "NoNewPrivs: 1",
        "uid=65534 gid=65534",
    ] {
        assert!(
            lines.iter().any(|l| l == expected),
            "{expected:?} not in {lines:?}"
        );
    }
    assert_clean(&exec, out.execution_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_none_has_only_loopback_and_isolated_gets_its_own_network() {
    let exec = executor(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let req = request(
        dir.path(),
        Interpreter::Bash,
        "ls /sys/class/net | tr '\\n' ' '; echo",
        Duration::from_secs(60),
        json!({}),
    );
    let out = run(
        &exec,
        Interpreter::Bash,
        &spec(),
        &req,
        CancellationToken::new(),
    )
    .await;
    out.run();
    assert_eq!(out.script_lines(), vec!["lo "]);
    assert_clean(&exec, out.execution_id).await;

    // Isolated: an interface on a network created for this run, gone afterwards.
    let req = request(
        dir.path(),
        Interpreter::Bash,
        "ls /sys/class/net | tr '\\n' ' '; echo",
        Duration::from_secs(60),
        json!({}),
    );
    let isolated = ContainerSpec {
        network: NetworkMode::Isolated,
        ..spec()
    };
    let out = run(
        &exec,
        Interpreter::Bash,
        &isolated,
        &req,
        CancellationToken::new(),
    )
    .await;
    out.run();
    assert_eq!(out.script_lines(), vec!["eth0 lo "]);
    assert_clean(&exec, out.execution_id).await;

    // A named network that does not exist: a clear error naming the field, nothing left.
    let named = ContainerSpec {
        network: NetworkMode::Named("cronium-test-no-such-network".into()),
        ..spec()
    };
    let out = run(
        &exec,
        Interpreter::Bash,
        &named,
        &req,
        CancellationToken::new(),
    )
    .await;
    let err = out.result.expect_err("missing network");
    assert!(
        err.to_string().contains("cronium-test-no-such-network"),
        "{err}"
    );
    assert_clean(&exec, out.execution_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_reports_timed_out_124() {
    let exec = executor(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let req = request(
        dir.path(),
        Interpreter::Bash,
        "echo started; sleep 60; echo not-reached",
        Duration::from_secs(1),
        json!({}),
    );
    let t = Instant::now();
    let out = run(
        &exec,
        Interpreter::Bash,
        &spec(),
        &req,
        CancellationToken::new(),
    )
    .await;
    let r = out.run();
    assert_eq!(r.finished.status, RunStatus::TimedOut, "{:#?}", out.events);
    assert_eq!(r.finished.exit_code, Some(EXIT_TIMEOUT));
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    assert_eq!(out.script_lines(), vec!["started"]);
    assert_clean(&exec, out.execution_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_mid_run_stops_the_container_quickly() {
    let exec = executor(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let req = request(
        dir.path(),
        Interpreter::Bash,
        "echo started; sleep 60; echo not-reached",
        Duration::from_secs(120),
        json!({}),
    );
    let cancel = CancellationToken::new();
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let execution_id = next_id();
    let canceller = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let mut events = Vec::new();
            let mut cancelled_at = None;
            while let Some(e) = rx.recv().await {
                let started = matches!(&e, RunnerEvent::Log { line, .. } if line == "started");
                events.push(e);
                if started && cancelled_at.is_none() {
                    cancelled_at = Some(Instant::now());
                    cancel.cancel();
                }
            }
            (events, cancelled_at)
        })
    };
    let result = exec
        .run(
            execution_id,
            execution_id,
            Interpreter::Bash,
            &spec(),
            &req,
            &tx,
            cancel,
        )
        .await;
    let returned_at = Instant::now();
    drop(tx);
    let (events, cancelled_at) = canceller.await.unwrap();
    let r = result.unwrap_or_else(|e| panic!("{e}: {events:#?}"));
    assert_eq!(r.finished.status, RunStatus::Cancelled, "{events:#?}");
    let took = returned_at - cancelled_at.expect("the script started");
    assert!(took < Duration::from_secs(3), "cancellation took {took:?}");
    assert_clean(&exec, execution_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_image_fails_with_an_error_naming_it() {
    for pull in [PullPolicy::IfMissing, PullPolicy::Never] {
        let exec = executor(|c| c.pull = pull).await;
        let dir = tempfile::tempdir().unwrap();
        let req = request(
            dir.path(),
            Interpreter::Bash,
            "echo hi",
            Duration::from_secs(10),
            json!({}),
        );
        let image = "cronium-test/does-not-exist:42";
        let spec = ContainerSpec {
            image: Some(image.into()),
            ..spec()
        };
        assert!(!exec.image_present(image).await.unwrap());
        let out = run(
            &exec,
            Interpreter::Bash,
            &spec,
            &req,
            CancellationToken::new(),
        )
        .await;
        match &out.result {
            Err(e @ DockerError::ImageUnavailable { image: named, .. }) => {
                assert_eq!(named, image);
                assert!(e.to_string().contains(image), "{e}");
            }
            other => panic!("{pull:?}: expected ImageUnavailable, got {other:?}"),
        }
        if pull == PullPolicy::IfMissing {
            // The attempt is visible in the job's log.
            assert!(
                out.all_lines().contains("pulling image"),
                "{}",
                out.all_lines()
            );
        }
        assert_clean(&exec, out.execution_id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_runner_runs_in_a_from_scratch_busybox_image() {
    let exec = executor(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let req = request(
        dir.path(),
        Interpreter::Bash,
        "echo \"hello from $(uname -s)\"; ls /; exit 3",
        Duration::from_secs(30),
        json!({}),
    );
    let spec = ContainerSpec {
        image: Some("cronium/scratch-sh:1".into()),
        // No bash in that image: busybox's sh runs the script.
        interpreter_path: Some("/bin/sh".into()),
        ..spec()
    };
    let out = run(
        &exec,
        Interpreter::Bash,
        &spec,
        &req,
        CancellationToken::new(),
    )
    .await;
    let r = out.run();
    assert_eq!(r.image, "cronium/scratch-sh:1");
    assert_eq!(r.finished.exit_code, Some(3), "{:#?}", out.events);
    let lines = out.script_lines();
    assert_eq!(lines.first().map(String::as_str), Some("hello from Linux"));
    // Nothing but what the image and the engine put there: no libc, no /usr.
    assert!(!lines.iter().any(|l| l == "usr" || l == "lib"), "{lines:?}");
    assert_clean(&exec, out.execution_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_run_mid_way_still_removes_its_container_and_network() {
    let exec = std::sync::Arc::new(executor(|_| {}).await);
    let dir = tempfile::tempdir().unwrap();
    let req = request(
        dir.path(),
        Interpreter::Bash,
        "echo started; sleep 60",
        Duration::from_secs(120),
        json!({}),
    );
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let execution_id = next_id();
    let task = {
        let exec = exec.clone();
        tokio::spawn(async move {
            let spec = ContainerSpec {
                network: NetworkMode::Isolated,
                ..ContainerSpec::default()
            };
            exec.run(
                execution_id,
                execution_id,
                Interpreter::Bash,
                &spec,
                &req,
                &tx,
                CancellationToken::new(),
            )
            .await
        })
    };
    while let Some(e) = rx.recv().await {
        if matches!(&e, RunnerEvent::Log { line, .. } if line == "started") {
            break;
        }
    }
    assert_eq!(leftovers(&exec, execution_id).await.len(), 2);
    // The agent aborts the task (e.g. on shutdown): no code after the await point runs.
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert_clean(&exec, execution_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_runner_is_stopped_by_the_backstop_on_cancel() {
    let exec = executor(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    // The script freezes its runner (same user, so it may): no event will ever come back.
    let req = request(
        dir.path(),
        Interpreter::Bash,
        "echo started; sleep 0.5; kill -STOP $PPID; sleep 120",
        Duration::from_secs(300),
        json!({}),
    );
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let cancel = CancellationToken::new();
    let execution_id = next_id();
    let exec = std::sync::Arc::new(exec);
    let watcher = {
        let (cancel, exec) = (cancel.clone(), exec.clone());
        tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                if matches!(&e, RunnerEvent::Log { line, .. } if line == "started") {
                    wait_until_runner_stopped(&exec, execution_id).await;
                    cancel.cancel();
                }
            }
        })
    };
    let t = Instant::now();
    let r = exec
        .run(
            execution_id,
            execution_id,
            Interpreter::Bash,
            &spec(),
            &req,
            &tx,
            cancel,
        )
        .await
        .unwrap();
    drop(tx);
    watcher.await.unwrap();
    assert_eq!(r.finished.status, RunStatus::Cancelled, "{r:?}");
    let error = r.finished.error.unwrap_or_default();
    assert!(error.contains("container was stopped"), "{error}");
    // kill grace (2 s) + 5 s margin, then an immediate stop.
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    assert_clean(&exec, execution_id).await;
}

/// Polls the container's process list until the runner is in the stopped state (`T`).
async fn wait_until_runner_stopped(exec: &cronium_docker::DockerExecutor, execution_id: i64) {
    use bollard::query_parameters::{ListContainersOptionsBuilder, TopOptionsBuilder};
    let filter = std::collections::HashMap::from([(
        "label".to_string(),
        vec![format!(
            "{}={execution_id}",
            cronium_docker::LABEL_EXECUTION
        )],
    )]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "the runner never stopped");
        let containers = exec
            .client()
            .list_containers(Some(
                ListContainersOptionsBuilder::default()
                    .filters(&filter)
                    .build(),
            ))
            .await
            .unwrap();
        if let Some(id) = containers.first().and_then(|c| c.id.clone()) {
            let top = exec
                .client()
                .top_processes(
                    &id,
                    Some(
                        TopOptionsBuilder::default()
                            .ps_args("-o pid,stat,args")
                            .build(),
                    ),
                )
                .await
                .unwrap();
            let stopped = top.processes.unwrap_or_default().iter().any(|p| {
                p.get(1).is_some_and(|s| s.starts_with('T'))
                    && p.get(2).is_some_and(|a| a.contains("cronium-runner run"))
            });
            if stopped {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_cancelled_before_it_starts_creates_nothing() {
    let exec = executor(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let req = request(
        dir.path(),
        Interpreter::Bash,
        "echo should-not-run",
        Duration::from_secs(10),
        json!({}),
    );
    let cancel = CancellationToken::new();
    cancel.cancel();
    let out = run(&exec, Interpreter::Bash, &spec(), &req, cancel).await;
    let r = out.run();
    assert_eq!(r.finished.status, RunStatus::Cancelled);
    assert!(r.container_id.is_empty());
    assert!(out.script_lines().is_empty());
    assert!(leftovers(&exec, out.execution_id).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow (150 s): run with --ignored"]
async fn a_long_silent_run_keeps_its_connection() {
    let exec = executor(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let req = request(
        dir.path(),
        Interpreter::Bash,
        "echo begin; sleep 150; echo end",
        Duration::from_secs(300),
        json!({}),
    );
    let out = run(
        &exec,
        Interpreter::Bash,
        &spec(),
        &req,
        CancellationToken::new(),
    )
    .await;
    let r = out.run();
    assert_eq!(r.finished.status, RunStatus::Succeeded, "{:#?}", out.events);
    assert_eq!(out.script_lines(), vec!["begin", "end"]);
    assert_clean(&exec, out.execution_id).await;
}
