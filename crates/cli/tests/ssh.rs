//! The servers target through the server and the CLI, against real `sshd` instances (the SSH
//! crate's test support: plain login user, per-instance host keys): registration, fan-out with
//! per-server executions, partial results, fail-fast, host key pinning and changes.

#[path = "../../ssh/tests/support/mod.rs"]
mod sshd;
mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

/// A server whose runner deployments go to a directory of its own on the hosts (all test hosts
/// share one login), so that each test sees a first deployment; removed at the end.
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

fn server() -> TestServer {
    let deploy_dir = format!(".cache/cronium-e2e-{:08x}", rand::random::<u32>());
    server_in(None, deploy_dir)
}

/// A server on `data_dir` (a fresh one when `None`) deploying to `deploy_dir` on the hosts,
/// which it removes when dropped.
fn server_in(data_dir: Option<std::path::PathBuf>, deploy_dir: String) -> TestServer {
    let server = start_on(data_dir, &deploy_dir);
    TestServer { server, deploy_dir }
}

/// A server on `data_dir` deploying to `deploy_dir`, which outlives it.
fn start_on(data_dir: Option<std::path::PathBuf>, deploy_dir: &str) -> Server {
    Server::start_with(ServerOpts {
        data_dir,
        args: vec![
            "--static-runner".into(),
            static_runner_bin().display().to_string(),
            "--ssh-deploy-dir".into(),
            deploy_dir.to_string(),
        ],
        ..Default::default()
    })
}

/// Registers `h` as NAME through the CLI with a key file and tags.
fn add(s: &Server, name: &str, h: &sshd::Sshd, tags: &[&str], keyfile: &std::path::Path) {
    let mut extra = vec!["--key-file", keyfile.to_str().unwrap()];
    for t in tags {
        extra.extend(["--tag", t]);
    }
    s.add_server(name, h.port, sshd::USER, &extra);
}

/// `type base64` without the comment.
fn key_only(k: &str) -> String {
    k.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

fn keyfile(dir: &std::path::Path) -> std::path::PathBuf {
    write(dir, "id_ed25519", &sshd::env().client_key)
}

#[tokio::test]
async fn fan_out_by_tag_records_each_server_and_ends_partial() {
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path());
    let hosts: Vec<sshd::Sshd> = (0..4).map(|_| sshd::Sshd::start()).collect();
    for (i, h) in hosts.iter().enumerate() {
        add(&s, &format!("node{i}"), h, &["fleet"], &key);
    }
    s.apply_yaml(
        "name: fleet-check\ntype: bash\ntarget: { tags: [fleet] }\nscript: |\n  echo \"hello from $CRONIUM_SERVER\"\n  cronium.output server \"$(cronium.event server)\"\n  if [ \"$CRONIUM_SERVER\" = node2 ]; then echo broken >&2; exit 2; fi\n",
    )
    .await;
    let o = s.cli(&["event", "run", "fleet-check", "--follow"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // Live lines are prefixed with the server.
    assert!(
        stdout(&o).contains("[node1] hello from node1"),
        "{}",
        stdout(&o)
    );
    let (_, jobs) = s.api("GET", "/api/v1/jobs?event=fleet-check", None).await;
    let id = jobs[0]["id"].as_i64().unwrap();
    let j = s.job(id).await;
    assert_eq!(j["status"], "partial", "{j}");
    let xs = j["executions"].as_array().unwrap();
    assert_eq!(xs.len(), 4);
    for x in xs {
        let server = x["server"].as_str().unwrap();
        assert_eq!(x["mode"], "runner-ssh", "{x}");
        assert!(x["runner_version"].as_str().is_some(), "{x}");
        if server == "node2" {
            assert_eq!(
                (x["status"].as_str(), x["exit_code"].as_i64()),
                (Some("failed"), Some(2)),
                "{x}"
            );
        } else {
            assert_eq!(x["status"], "succeeded", "{x}");
            assert_eq!(x["output"], json!({"server": server}));
        }
    }
    assert_eq!(j["output"]["node0"], json!({"server": "node0"}));
    // Log lines carry their server.
    let (_, page) = s.api("GET", &format!("/api/v1/jobs/{id}/logs"), None).await;
    let lines = page["lines"].as_array().unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l["server"] == "node3" && l["line"] == "hello from node3"),
        "{page}"
    );
    // First contact pinned each host key, and the deployment is on record.
    let (_, srv) = s.api("GET", "/api/v1/servers/node0", None).await;
    assert_eq!(
        srv["host_key"].as_str().map(key_only),
        Some(key_only(&hosts[0].host_key())),
        "{srv}"
    );
    assert_eq!(srv["deployments"][0]["outcome"], "deployed", "{srv}");
    let (_, m) = s.api("GET", "/api/v1/metrics/transports", None).await;
    assert!(m["ssh"]["executions_total"].as_u64() >= Some(4), "{m}");
}

#[tokio::test]
async fn continue_on_failure_false_cancels_the_remaining_servers() {
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path());
    let hosts: Vec<sshd::Sshd> = (0..3).map(|_| sshd::Sshd::start()).collect();
    for (i, h) in hosts.iter().enumerate() {
        add(&s, &format!("ff{i}"), h, &[], &key);
    }
    s.apply_yaml(
        "name: failfast\ntype: bash\ntarget: { servers: [ff0, ff1, ff2], concurrency: 1, continue_on_failure: false }\nscript: |\n  if [ \"$CRONIUM_SERVER\" = ff0 ]; then exit 9; fi\n  sleep 30\n",
    )
    .await;
    let id = s.run_event("failfast", None).await;
    let j = s.wait_job(id, Duration::from_secs(60)).await;
    assert_eq!(j["status"], "failed", "{j}");
    let statuses: Vec<(String, String)> = j["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["server"].as_str().unwrap().to_string(),
                x["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        statuses.contains(&("ff0".into(), "failed".into())),
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .filter(|(n, _)| n != "ff0")
            .all(|(_, st)| st == "cancelled"),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn a_changed_host_key_is_refused_until_accepted() {
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path());
    let mut h = sshd::Sshd::start();
    add(&s, "moving", &h, &[], &key);
    let o = s.cli(&["server", "test", "moving", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (r["reachable"].as_bool(), r["authenticated"].as_bool()),
        (Some(true), Some(true)),
        "{r}"
    );
    assert_eq!(r["host_key_status"], "first_use");
    assert_eq!(r["os"], "Linux");

    h.new_host_key();
    h.restart();
    s.apply_yaml("name: on-moving\ntype: bash\ntarget: { servers: [moving] }\nscript: echo ran\n")
        .await;
    let id = s.run_event("on-moving", None).await;
    let j = s.wait_job(id, Duration::from_secs(60)).await;
    assert_eq!(j["status"], "failed", "{j}");
    assert!(j["error"].as_str().unwrap().contains("accept-key"), "{j}");
    assert!(
        !s.log_text(id).await.contains("\nran"),
        "ran despite a changed host key"
    );
    let (_, srv) = s.api("GET", "/api/v1/servers/moving", None).await;
    assert_eq!(
        srv["pending_host_key"].as_str().map(key_only),
        Some(key_only(&h.host_key()))
    );

    let o = s.cli(&["server", "accept-key", "moving"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let id = s.run_event("on-moving", None).await;
    let j = s.wait_job(id, Duration::from_secs(60)).await;
    assert_eq!(j["status"], "succeeded", "{j}");
}

#[tokio::test]
async fn direct_ssh_runs_without_a_runner() {
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path());
    let h = sshd::Sshd::start();
    add(&s, "plain", &h, &[], &key);
    s.apply_yaml("name: direct\ntype: python\ntarget: { servers: [plain], mode: direct-ssh }\nscript: |\n  import sys\n  print('direct', sys.version_info[0])\n").await;
    let id = s.run_event("direct", None).await;
    let j = s.wait_job(id, Duration::from_secs(60)).await;
    assert_eq!(j["status"], "succeeded", "{j}");
    assert_eq!(j["executions"][0]["mode"], "direct-ssh");
    assert!(
        j["executions"][0]["note"]
            .as_str()
            .unwrap_or_default()
            .contains("helpers were not available"),
        "{j}"
    );
    assert!(s.log_text(id).await.contains("direct 3"));
    // No runner, nothing measured: documented as not measured, null rather than zeros.
    assert!(j["executions"][0]["usage"].is_null(), "{j}");
}

/// A runner-ssh run records what the script used on the host, measured by the runner there
/// (through the persistent `cronium-runner serve` relay, each run a child runner of its own).
#[tokio::test]
async fn a_runner_ssh_run_records_the_remote_scripts_usage() {
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path());
    let h = sshd::Sshd::start();
    add(&s, "worker", &h, &[], &key);
    s.apply_yaml("name: remote-burn\ntype: python\ntarget: { servers: [worker], mode: runner-ssh }\nscript: |\n  import time\n  block = b'x' * (50 << 20)\n  start = time.process_time()\n  while time.process_time() - start < 0.25:\n      pass\n").await;
    let mib = 1i64 << 20;
    // Twice: the first run deploys the runner, the second goes through the warm relay.
    for _ in 0..2 {
        let id = s.run_event("remote-burn", None).await;
        let j = s.wait_job(id, Duration::from_secs(60)).await;
        assert_eq!(j["status"], "succeeded", "{j}\n{}", s.log_text(id).await);
        let x = &j["executions"][0];
        assert_eq!(x["mode"], "runner-ssh", "{x}");
        let u = &x["usage"];
        let cpu = u["cpu_user_ms"].as_i64().unwrap_or(0) + u["cpu_system_ms"].as_i64().unwrap_or(0);
        assert!(cpu >= 150, "{u}");
        assert!(u["max_rss_bytes"].as_i64() >= Some(40 * mib), "{u}");
        assert!(u["cgroup_memory_peak_bytes"].is_null(), "{u}");
    }
    let metrics = s.metrics().await.1;
    let needle = "cronium_execution_peak_memory_bytes_count{transport=\"runner-ssh\"} 2";
    assert!(metrics.contains(needle), "{needle} missing:\n{metrics}");
}

#[tokio::test]
async fn bad_server_input_is_refused() {
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    let garbage = write(dir.path(), "garbage", "not a key");
    // Each CLI mistake is refused with a message naming what is wrong.
    let garbage = garbage.to_str().unwrap();
    for (flag, value, needle) in [
        ("--key-file", garbage, "private_key"),
        ("--key-file", "/nonexistent", "--key-file"),
        ("--password-env", "NO_SUCH_VAR_X", "NO_SUCH_VAR_X"),
    ] {
        let o = s.cli(&["server", "add", "x", "--host", "127.0.0.1", flag, value]);
        assert!(
            !o.status.success() && stderr(&o).contains(needle),
            "{flag} {value}: {}",
            stderr(&o)
        );
    }
    let (status, r) = s
        .api(
            "POST",
            "/api/v1/servers",
            Some(
                json!({"name": "x", "host": "h", "password": "p", "host_key": "ssh-ed25519 nope"}),
            ),
        )
        .await;
    assert_eq!(
        (status, r["error"]["field"].as_str()),
        (422, Some("host_key")),
        "{r}"
    );
    let (status, r) = s
        .api(
            "POST",
            "/api/v1/servers",
            Some(json!({"name": "x", "host": "h"})),
        )
        .await;
    assert_eq!(status, 422, "{r}");
    let (_, list) = s.api("GET", "/api/v1/servers", None).await;
    assert_eq!(list, json!([]), "nothing registered");
    // An event naming an unknown server.
    let (status, r) = s
        .api("PUT", "/api/v1/events/e", Some(json!({"name": "e", "type": "bash", "script": "true", "target": {"servers": ["ghost"]}})))
        .await;
    assert_eq!(
        (status, r["error"]["field"].as_str()),
        (422, Some("target.servers")),
        "{r}"
    );
    // Credentials are not stored in clear.
    let (status, _) = s
        .api(
            "POST",
            "/api/v1/servers",
            Some(json!({"name": "pw", "host": "127.0.0.1", "password": "sup3r-s3cret-pw"})),
        )
        .await;
    assert_eq!(status, 201);
    s.assert_not_at_rest("sup3r-s3cret-pw");
    let (_, srv) = s.api("GET", "/api/v1/servers/pw", None).await;
    assert!(!srv.to_string().contains("sup3r"), "{srv}");
}

#[tokio::test]
async fn a_restarted_server_trusts_the_stored_deployment_and_redeploys_when_it_is_gone() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("data");
    let deploy_dir = format!(".cache/cronium-e2e-{:08x}", rand::random::<u32>());
    let dir = tempfile::tempdir().unwrap();
    let key = keyfile(dir.path());
    let h = sshd::Sshd::start();
    let event = "name: on-kept\ntype: bash\ntarget: { servers: [kept] }\nscript: echo ran\n";

    let s = start_on(Some(data_dir.clone()), &deploy_dir);
    add(&s, "kept", &h, &[], &key);
    s.apply_yaml(event).await;
    let id = s.run_event("on-kept", None).await;
    assert_eq!(
        s.wait_job(id, Duration::from_secs(60)).await["status"],
        "succeeded"
    );
    let (_, srv) = s.api("GET", "/api/v1/servers/kept", None).await;
    assert_eq!(srv["deployments"][0]["outcome"], "deployed", "{srv}");
    let path = srv["runner"]["path"]
        .as_str()
        .expect("runner state")
        .to_string();
    assert_eq!(
        srv["runner"]["sha256"], srv["deployments"][0]["sha256"],
        "{srv}"
    );
    let o = s.cli(&["server", "show", "kept"]);
    assert!(
        stdout(&o).contains(&format!("runner:    {path}")),
        "{}",
        stdout(&o)
    );
    drop(s);

    // Restarted: the stored verification is trusted; the host is neither checked nor uploaded to.
    let s = start_on(Some(data_dir.clone()), &deploy_dir);
    let id = s.run_event("on-kept", None).await;
    assert_eq!(
        s.wait_job(id, Duration::from_secs(60)).await["status"],
        "succeeded"
    );
    let (_, m) = s.api("GET", "/api/v1/metrics/transports", None).await;
    assert_eq!(
        (
            m["ssh"]["deployments_cached"].as_u64(),
            m["ssh"]["deployments_verified"].as_u64(),
            m["ssh"]["uploads"].as_u64()
        ),
        (Some(1), Some(0), Some(0)),
        "{m}"
    );
    let (_, srv) = s.api("GET", "/api/v1/servers/kept", None).await;
    assert_eq!(
        srv["deployments"].as_array().map(Vec::len),
        Some(1),
        "{srv}"
    );
    drop(s);

    // Restarted again, and the binary was deleted on the host meanwhile: the trusted path is
    // missing, so the run redeploys and still succeeds.
    std::fs::remove_file(sshd::home_path(&path)).unwrap();
    let s = server_in(Some(data_dir), deploy_dir);
    let id = s.run_event("on-kept", None).await;
    let j = s.wait_job(id, Duration::from_secs(60)).await;
    assert_eq!(j["status"], "succeeded", "{j}");
    assert!(s.log_text(id).await.contains("ran"));
    let (_, srv) = s.api("GET", "/api/v1/servers/kept", None).await;
    assert_eq!(srv["deployments"][0]["outcome"], "deployed", "{srv}");
    assert_eq!(
        srv["deployments"].as_array().map(Vec::len),
        Some(2),
        "{srv}"
    );
    assert!(sshd::home_path(&path).exists());
}
