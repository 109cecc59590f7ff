//! Resource usage per execution through the whole path (runner, agent, store, API, CLI,
//! metrics): what the script's process tree used, orphans included. The container and SSH
//! transports are covered in `container.rs` and `ssh.rs`, the job page in `webui.rs`.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;

/// Python that burns `cpu` seconds of CPU time and keeps `mb` MiB resident (written, so the
/// pages are really there), then writes `done` (when given) and sleeps `linger` seconds.
pub fn burner(cpu: f64, mb: u32) -> String {
    format!(
        "import sys, time\n\
         block = b'x' * ({mb} << 20)\n\
         start = time.process_time()\n\
         while time.process_time() - start < {cpu}:\n    pass\n\
         if len(sys.argv) > 1:\n    open(sys.argv[1], 'w').close()\n\
         if len(sys.argv) > 2:\n    time.sleep(float(sys.argv[2]))\n"
    )
}

fn usage_of(job: &Value) -> &Value {
    &job["executions"][0]["usage"]
}

fn cpu_ms(u: &Value) -> i64 {
    u["cpu_user_ms"].as_i64().unwrap_or(0) + u["cpu_system_ms"].as_i64().unwrap_or(0)
}

const MIB: i64 = 1 << 20;

#[tokio::test]
async fn a_local_run_records_its_cpu_time_and_peak_memory() {
    let s = Server::start();
    let script = burner(0.25, 50);
    s.apply_yaml(&format!(
        "name: burn\ntype: python\nscript: |\n{}",
        indent(&script)
    ))
    .await;
    let id = s.run_event("burn", None).await;
    let j = s.wait_job(id, Duration::from_secs(60)).await;
    assert_eq!(j["status"], "succeeded", "{j}\n{}", s.log_text(id).await);
    let u = usage_of(&j);
    assert!(cpu_ms(u) >= 150, "cpu below what the script burnt: {u}");
    assert!(
        u["max_rss_bytes"].as_i64() >= Some(40 * MIB),
        "peak memory below the 50 MiB held: {u}"
    );
    // Outside a container there is no cgroup of the run's own.
    assert!(
        u["cgroup_cpu_ms"].is_null() && u["cgroup_memory_peak_bytes"].is_null(),
        "{u}"
    );

    // `job show --json` carries the same object; the human form names each figure.
    let o = s.cli(&["job", "show", &id.to_string(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let shown: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(&shown["executions"][0]["usage"], u);
    let o = s.cli(&["job", "show", &id.to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("usage: cpu "))
        .unwrap_or_else(|| panic!("no usage line in:\n{text}"));
    assert!(
        line.contains("user ")
            && line.contains("system ")
            && line.contains("MiB (largest process)"),
        "{line}"
    );

    // And the histograms count it, labelled by transport.
    let metrics = s.metrics().await.1;
    for needle in [
        "cronium_execution_cpu_seconds_count{transport=\"local\"} 1",
        "cronium_execution_peak_memory_bytes_count{transport=\"local\"} 1",
    ] {
        assert!(metrics.contains(needle), "{needle} missing:\n{metrics}");
    }
    let sum = metrics
        .lines()
        .find_map(|l| l.strip_prefix("cronium_execution_cpu_seconds_sum{transport=\"local\"} "))
        .and_then(|v| v.parse::<f64>().ok())
        .expect("cpu sum");
    assert!(sum >= 0.15, "cpu seconds sum {sum}");
}

/// The script's child starts a grandchild and exits at once, so the grandchild is re-parented
/// to the runner; it does all the work and is still alive (sleeping) when the script ends, so
/// the runner's cleanup kills and reaps it. Its CPU and memory still count.
#[tokio::test]
async fn an_orphaned_grandchild_that_outlives_its_parent_is_counted() {
    let s = Server::start();
    let dir = shared_tempdir();
    let burn = write(dir.path(), "burn.py", &burner(0.25, 50));
    let script = format!(
        "done=\"$PWD/done\"\n\
         sh -c 'python3 \"$0\" \"$1\" 600 & exit 0' {} \"$done\"\n\
         while [ ! -e \"$done\" ]; do sleep 0.05; done\n\
         echo grandchild-finished-its-work\n",
        burn.display()
    );
    s.apply_yaml(&format!(
        "name: orphan\ntype: bash\ntimeout: 60s\nscript: |\n{}",
        indent(&script)
    ))
    .await;
    let id = s.run_event("orphan", None).await;
    let j = s.wait_job(id, Duration::from_secs(60)).await;
    let log = s.log_text(id).await;
    assert_eq!(j["status"], "succeeded", "{j}\n{log}");
    assert!(log.contains("grandchild-finished-its-work"), "{log}");
    let u = usage_of(&j);
    assert!(cpu_ms(u) >= 150, "the grandchild's CPU is missing: {u}");
    assert!(
        u["max_rss_bytes"].as_i64() >= Some(40 * MIB),
        "the grandchild's memory is missing: {u}"
    );
}

/// An `http` event runs no process: its `usage` is null, not zeros that would read as "used
/// nothing".
#[tokio::test]
async fn an_http_run_has_no_usage() {
    let s = Server::start();
    s.apply_yaml("name: ping\ntype: http\nhttp: { method: GET, url: \"http://127.0.0.1:1/\" }\n")
        .await;
    let id = s.run_event("ping", None).await;
    let j = s.wait_job(id, Duration::from_secs(60)).await;
    assert!(j["executions"][0].is_object(), "{j}");
    assert!(usage_of(&j).is_null(), "{j}");
}

fn indent(script: &str) -> String {
    script.lines().map(|l| format!("  {l}\n")).collect()
}
