//! The container target through the server: the same helpers and results as a local run, in a
//! fresh container from the language's image (built by scripts/build-images.sh).

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

fn server() -> Server {
    Server::start_with(ServerOpts {
        args: vec![
            "--static-runner".into(),
            static_runner_bin().display().to_string(),
            "--container-max-memory".into(),
            "1g".into(),
        ],
        ..Default::default()
    })
}

#[tokio::test]
async fn container_runs_report_like_local_runs() {
    let s = server();
    s.apply_yaml(
        "name: boxed\ntype: python\ntarget: { container: { memory: 128m, pids: 64 } }\nscript: |\n  import cronium, os\n  print('uid', os.getuid())\n  cronium.output({'who': cronium.input()['who'], 'ro': not os.access('/usr', os.W_OK)})\n  cronium.setVariable('boxed_seen', True)\n",
    )
    .await;
    let id = s
        .run_event("boxed", Some(json!({"who": "container"})))
        .await;
    let j = s.wait_job(id, Duration::from_secs(120)).await;
    assert_eq!(j["status"], "succeeded", "{j}\n{}", s.log_text(id).await);
    assert_eq!(j["output"], json!({"who": "container", "ro": true}));
    let x = &j["executions"][0];
    assert_eq!(x["mode"], "container");
    assert!(
        x["note"]
            .as_str()
            .unwrap_or_default()
            .contains("cronium/python:1"),
        "{x}"
    );
    assert!(x["runner_version"].as_str().is_some(), "{x}");
    assert!(
        s.log_text(id).await.contains("uid 65534"),
        "not run as nobody"
    );
    let (_, v) = s.api("GET", "/api/v1/variables/boxed_seen", None).await;
    assert_eq!(v["value"], true);
}

#[tokio::test]
async fn container_limits_above_the_maximum_are_refused_when_applied() {
    let s = server();
    let (status, r) = s
        .api(
            "PUT",
            "/api/v1/events/greedy",
            Some(json!({"name": "greedy", "type": "bash", "script": "true", "target": {"container": {"memory": "8g"}}})),
        )
        .await;
    assert_eq!(status, 422, "{r}");
    assert_eq!(r["error"]["field"], "target.container.memory", "{r}");
    let (status, _) = s.api("GET", "/api/v1/events/greedy", None).await;
    assert_eq!(status, 404, "a refused event was stored");
}

#[tokio::test]
async fn container_timeouts_and_failures() {
    let s = server();
    s.apply_yaml(
        "name: boxed-slow\ntype: bash\ntimeout: 2s\ntarget: { container: {} }\nscript: sleep 60\n",
    )
    .await;
    s.apply_yaml(
        "name: boxed-fail\ntype: node\ntarget: { container: {} }\nscript: process.exit(4)\n",
    )
    .await;
    let slow = s.run_event("boxed-slow", None).await;
    let fail = s.run_event("boxed-fail", None).await;
    let j = s.wait_job(slow, Duration::from_secs(120)).await;
    assert_eq!(
        (j["status"].as_str(), j["exit_code"].as_i64()),
        (Some("timed_out"), Some(124)),
        "{j}"
    );
    let j = s.wait_job(fail, Duration::from_secs(120)).await;
    assert_eq!(
        (j["status"].as_str(), j["exit_code"].as_i64()),
        (Some("failed"), Some(4)),
        "{j}"
    );
}

/// A container run records the runner's figures for the script's tree and the container's
/// cgroup's own (the whole container: cgroup v2 `memory.peak` / `cpu.stat`, or v1's
/// `memory.max_usage_in_bytes` / `cpuacct.usage` on a v1 engine).
#[tokio::test]
async fn a_container_run_records_its_cgroup_usage() {
    let s = server();
    let script = "import time\nblock = b'x' * (50 << 20)\nstart = time.process_time()\nwhile time.process_time() - start < 0.25:\n    pass\n";
    let indented: String = script.lines().map(|l| format!("  {l}\n")).collect();
    s.apply_yaml(&format!(
        "name: boxed-burn\ntype: python\ntarget: {{ container: {{ memory: 256m }} }}\nscript: |\n{indented}"
    ))
    .await;
    let id = s.run_event("boxed-burn", None).await;
    let j = s.wait_job(id, Duration::from_secs(120)).await;
    let log = s.log_text(id).await;
    assert_eq!(j["status"], "succeeded", "{j}\n{log}");
    let u = &j["executions"][0]["usage"];
    let mib = 1i64 << 20;
    let cpu = u["cpu_user_ms"].as_i64().unwrap_or(0) + u["cpu_system_ms"].as_i64().unwrap_or(0);
    assert!(cpu >= 150, "{u}");
    assert!(u["max_rss_bytes"].as_i64() >= Some(40 * mib), "{u}");
    assert!(
        u["cgroup_memory_peak_bytes"].as_i64() >= Some(40 * mib),
        "no cgroup peak memory: {u}\n{log}"
    );
    assert!(
        u["cgroup_cpu_ms"].as_i64() >= Some(150),
        "no cgroup CPU time: {u}\n{log}"
    );
    assert!(!log.contains("usage not measured"), "{log}");
    let metrics = s.metrics().await.1;
    for needle in [
        "cronium_execution_cpu_seconds_count{transport=\"container\"} 1",
        "cronium_execution_container_peak_memory_bytes_count 1",
    ] {
        assert!(metrics.contains(needle), "{needle} missing:\n{metrics}");
    }
}
