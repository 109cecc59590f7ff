//! Runner health per server through the server and the CLI, against real `sshd` instances: the
//! reading collected after a run and on the interval, a host whose sshd is stopped becoming
//! `unreachable` and skipped by a fan-out with `skip_unreachable`, a disk threshold this
//! machine's disk trips marking `degraded`, and the health in `server list|show`, the API and
//! `/metrics`.

#[path = "../../ssh/tests/support/mod.rs"]
mod sshd;
mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

/// A server deploying to a directory of its own on the hosts (removed when dropped).
struct TestServer {
    server: Server,
    deploy_dir: String,
}

impl std::ops::Deref for TestServer {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(sshd::home_path(&self.deploy_dir));
    }
}

fn server(health_args: &[&str]) -> TestServer {
    let deploy_dir = format!(".cache/cronium-health-{:08x}", rand::random::<u32>());
    let mut args = vec![
        "--static-runner".to_string(),
        static_runner_bin().display().to_string(),
        "--ssh-deploy-dir".into(),
        deploy_dir.clone(),
    ];
    args.extend(health_args.iter().map(|a| a.to_string()));
    let server = Server::start_with(ServerOpts {
        args,
        ..Default::default()
    });
    TestServer { server, deploy_dir }
}

fn add(s: &Server, name: &str, h: &sshd::Sshd, keyfile: &std::path::Path) {
    let key = keyfile.to_str().unwrap();
    s.add_server(
        name,
        h.port,
        sshd::USER,
        &["--key-file", key, "--tag", "fleet"],
    );
}

async fn show(s: &Server, name: &str) -> Value {
    let (status, v) = s.api("GET", &format!("/api/v1/servers/{name}"), None).await;
    assert_eq!(status, 200, "{v}");
    v
}

/// Polls `GET /api/v1/servers/NAME` until `pred` holds; returns that answer.
async fn wait_server(s: &Server, name: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = show(s, name).await;
        if pred(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: timed out waiting for {what}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn run_and_wait(s: &Server, event: &str) -> Value {
    let id = s.run_event(event, None).await;
    s.wait_job(id, Duration::from_secs(60)).await
}

#[tokio::test]
async fn health_after_runs_marks_a_stopped_host_unreachable_and_a_fan_out_skips_it() {
    // No interval: every reading here comes from the checks after runs.
    let s = server(&["--health-interval", "0", "--health-unreachable-after", "2"]);
    let dir = tempfile::tempdir().unwrap();
    let key = write(dir.path(), "id_ed25519", &sshd::env().client_key);
    let h0 = sshd::Sshd::start();
    let mut h1 = sshd::Sshd::start();
    add(&s, "h0", &h0, &key);
    add(&s, "h1", &h1, &key);
    let v = show(&s, "h0").await;
    assert_eq!(v["health"]["status"], "unknown", "{v}");
    assert!(v["health"]["checked_at"].is_null(), "{v}");

    s.apply_yaml("name: ping\ntype: bash\ntarget: { tags: [fleet] }\nscript: echo ok\n")
        .await;
    s.apply_yaml(
        "name: ping-skip\ntype: bash\ntarget: { tags: [fleet], skip_unreachable: true, min_success: 1 }\nscript: echo ok\n",
    )
    .await;
    let j = run_and_wait(&s, "ping").await;
    assert_eq!(j["status"], "succeeded", "{j}");
    for name in ["h0", "h1"] {
        let v = wait_server(&s, name, "a reading after the run", |v| {
            v["health"]["reading"].is_object()
        })
        .await;
        let h = &v["health"];
        assert_eq!(h["status"], "healthy", "{v}");
        assert_eq!(h["failures"], 0, "{v}");
        assert!(h["reasons"].as_array().unwrap().is_empty(), "{v}");
        let r = &h["reading"];
        assert!(
            r["runner_version"].as_str().is_some_and(|v| !v.is_empty()),
            "{v}"
        );
        assert!(r["cpus"].as_u64() >= Some(1), "{v}");
        assert_eq!(r["deploy_dir"]["path"], s.deploy_dir.as_str(), "{v}");
        assert!(r["work_dir"]["total_bytes"].as_u64() > Some(0), "{v}");
        assert_eq!(h["history"][0]["ok"], true, "{v}");
    }
    let o = s.cli(&["server", "list"]);
    let out = stdout(&o);
    let row = out
        .lines()
        .find(|l| l.starts_with("h0 "))
        .expect("h0's row");
    assert!(row.contains("healthy"), "{out}");
    assert!(out.lines().next().unwrap().contains("HEALTH"), "{out}");

    // h1's sshd stops: each run's failed connection is a failed check; two in a row make it
    // unreachable.
    h1.kill_all();
    let j = run_and_wait(&s, "ping").await;
    assert_eq!(j["status"], "partial", "{j}");
    let v = wait_server(&s, "h1", "a failed check", |v| v["health"]["failures"] == 1).await;
    assert_eq!(
        v["health"]["status"], "healthy",
        "one failure is not enough: {v}"
    );
    assert!(
        v["health"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("h1")),
        "{v}"
    );
    run_and_wait(&s, "ping").await;
    let v = wait_server(&s, "h1", "unreachable", |v| {
        v["health"]["status"] == "unreachable"
    })
    .await;
    let reasons = v["health"]["reasons"].to_string();
    assert!(reasons.contains("2 checks failed in a row"), "{v}");
    // The reading before the host went away is kept, with its time.
    assert!(v["health"]["reading"].is_object(), "{v}");
    let o = s.cli(&["server", "show", "h1"]);
    assert!(
        stdout(&o).contains("health:    unreachable"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("2 checks failed in a row"),
        "{}",
        stdout(&o)
    );
    let o = s.cli(&["server", "list", "--json"]);
    let list: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(list[1]["health"]["status"], "unreachable", "{list}");

    // With skip_unreachable, h1 is not attempted: a skipped execution with the reason.
    let attempts = show(&s, "h1").await["health"]["history"]
        .as_array()
        .unwrap()
        .len();
    let j = run_and_wait(&s, "ping-skip").await;
    assert_eq!(j["status"], "partial", "{j}");
    let xs = j["executions"].as_array().unwrap();
    let x1 = xs
        .iter()
        .find(|x| x["server"] == "h1")
        .expect("h1's execution");
    assert_eq!(x1["status"], "skipped", "{j}");
    let note = x1["note"].as_str().unwrap_or_default();
    assert!(
        note.starts_with("skipped: unreachable (2 checks failed in a row"),
        "{j}"
    );
    let x0 = xs.iter().find(|x| x["server"] == "h0").unwrap();
    assert_eq!(x0["status"], "succeeded", "{j}");
    let log = s.log_text(j["id"].as_i64().unwrap()).await;
    assert!(log.contains("h1: skipped: unreachable"), "{log}");
    // Not attempted: no connection was tried, so no new failed check.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = show(&s, "h1").await;
    assert_eq!(
        after["health"]["history"].as_array().unwrap().len(),
        attempts,
        "{after}"
    );
    assert_eq!(after["health"]["failures"], 2, "{after}");
}

#[tokio::test]
async fn interval_checks_mark_degraded_by_disk_then_unreachable_and_export_metrics() {
    // 100%: every real file system has less free than its size, so this machine's disk trips it.
    let s = server(&[
        "--health-interval",
        "1s",
        "--health-disk-free-min",
        "100%",
        "--health-unreachable-after",
        "2",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let key = write(dir.path(), "id_ed25519", &sshd::env().client_key);
    let mut h = sshd::Sshd::start();
    add(&s, "d0", &h, &key);
    // The interval reaches the host before any run: no runner there yet, nothing to judge.
    let v = wait_server(&s, "d0", "an interval check", |v| {
        !v["health"]["checked_at"].is_null()
    })
    .await;
    assert_eq!(v["health"]["status"], "healthy", "{v}");
    assert!(
        v["health"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("no runner deployed")),
        "{v}"
    );
    s.apply_yaml("name: once\ntype: bash\ntarget: { servers: [d0] }\nscript: echo ok\n")
        .await;
    assert_eq!(run_and_wait(&s, "once").await["status"], "succeeded");
    let v = wait_server(&s, "d0", "degraded", |v| {
        v["health"]["status"] == "degraded"
    })
    .await;
    let reasons: Vec<&str> = v["health"]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("disk: work directory ") && r.ends_with("under 100%")),
        "{v}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("disk: deploy directory ")),
        "{v}"
    );
    // Later checks come from the interval alone (one run, one after-run check).
    let v = wait_server(&s, "d0", "interval checks with readings", |v| {
        v["health"]["history"]
            .as_array()
            .is_some_and(|h| h.iter().filter(|c| c["ok"] == true).count() >= 4)
    })
    .await;
    assert!(v["health"]["reading"].is_object(), "{v}");

    let (status, text) = s.metrics().await;
    assert_eq!(status, 200);
    for needle in [
        "cronium_server_health{server=\"d0\",status=\"degraded\"} 1",
        "cronium_server_disk_free_bytes{server=\"d0\",dir=\"work\"}",
        "cronium_server_memory_available_bytes{server=\"d0\"}",
        "cronium_server_load1{server=\"d0\"}",
        "cronium_runner_health_check_duration_seconds_count",
        "cronium_runner_deployments_total 1",
        "cronium_runner_artifact_cache_misses_total 1",
        "cronium_ssh_runner_execution_duration_seconds_count 1",
        "cronium_streaming_log_latency_seconds_count",
        "cronium_ssh_runner_connection_failures_total 0",
    ] {
        assert!(text.contains(needle), "{needle} not in:\n{text}");
    }

    // The host goes away: the interval's checks fail, two in a row make it unreachable.
    h.kill_all();
    let v = wait_server(&s, "d0", "unreachable", |v| {
        v["health"]["status"] == "unreachable"
    })
    .await;
    assert!(v["health"]["failures"].as_i64() >= Some(2), "{v}");
    let (_, text) = s.metrics().await;
    assert!(
        text.contains("cronium_server_health{server=\"d0\",status=\"unreachable\"} 1"),
        "{text}"
    );
    assert!(!text.contains("status=\"degraded\"} 1"), "{text}");
    assert!(
        !text.contains("cronium_ssh_runner_connection_failures_total 0\n"),
        "{text}"
    );
}

/// The interval pass leaves a server in a burst of runs alone: its check follows the burst
/// (after the quiet period), instead of health commands competing with the runs every interval.
#[tokio::test]
async fn interval_checks_leave_a_server_alone_while_runs_keep_it_busy() {
    let s = server(&["--health-interval", "1s"]);
    let dir = tempfile::tempdir().unwrap();
    let key = write(dir.path(), "id_ed25519", &sshd::env().client_key);
    let h = sshd::Sshd::start();
    add(&s, "busy", &h, &key);
    s.apply_yaml("name: quick\ntype: bash\ntarget: { servers: [busy] }\nscript: echo ok\n")
        .await;
    let checks = "cronium_runner_health_check_duration_seconds_count";
    assert_eq!(run_and_wait(&s, "quick").await["status"], "succeeded");
    // Back-to-back runs for 4 s: 4 interval passes go by.
    let before = s.metric(checks).await.unwrap_or(0.0);
    let burst = Instant::now();
    let mut runs = 0;
    while burst.elapsed() < Duration::from_secs(4) {
        assert_eq!(run_and_wait(&s, "quick").await["status"], "succeeded");
        runs += 1;
    }
    let during = s.metric(checks).await.unwrap_or(0.0) - before;
    assert!(
        during <= 1.0,
        "{during} health checks during a burst of {runs} runs"
    );
    // Once the server is quiet, its check comes.
    s.wait_for(
        "the check after the burst",
        Duration::from_secs(15),
        || async { s.metric(checks).await.unwrap_or(0.0) > before + during },
    )
    .await;
}
