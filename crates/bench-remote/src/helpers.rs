//! `helpers`: the runtime helpers' round trip in API mode over SSH on loopback. A Python script
//! on one sshd host (runner-ssh through the connection's `cronium-runner serve`) times its own
//! `cronium.getVariable` and `cronium.output(key, v)` calls: each goes to the runner's socket on
//! the host, is relayed on the SSH channel to the agent, answered from the store and sent back
//! the same way. Bundled mode's cost per run is measured beside it (the same trivial run in
//! each mode, POST to final).

use std::path::Path;
use std::time::Duration;

use cronium_client::Method;
use serde_json::{json, Value};

use crate::cronium::{Server, ServerSpec};
use crate::hosts::{Fleet, USER};

/// The PRODUCT bar for a helper call over SSH on loopback.
pub const TARGET_P50_MS: f64 = 5.0;

const PY_CALLS: &str = r#"import cronium, time
n = cronium.input().get("n", 1000)
cronium.getVariable("bench")
read, write = [], []
for _ in range(n):
    t = time.perf_counter(); cronium.getVariable("bench"); read.append((time.perf_counter() - t) * 1000)
for i in range(n // 4):
    t = time.perf_counter(); cronium.output("k", i); write.append((time.perf_counter() - t) * 1000)
cronium.output({"read": read, "write": write})
"#;

const PY_RUN: &str = "import cronium\ncronium.output('done', True)\n";

/// p50 and p99 of `xs` (nearest rank).
fn pct(xs: &mut [f64]) -> (f64, f64) {
    xs.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| xs[((xs.len() as f64 * q).ceil() as usize).clamp(1, xs.len()) - 1];
    (at(0.50), at(0.99))
}

pub struct HelpersResult {
    pub calls: usize,
    pub read: (f64, f64),
    pub write: (f64, f64),
    pub run_bundled_ms: f64,
    pub run_api_ms: f64,
}

pub async fn run(
    workspace: &Path,
    bins: &ServerSpec,
    calls: usize,
) -> anyhow::Result<HelpersResult> {
    let fleet = Fleet::start(workspace, 1)?;
    let work = tempfile::Builder::new()
        .prefix("cronium-bench-helpers-")
        .tempdir()?;
    let deploy_dir = format!(".cache/cronium-bench-helpers-{}", std::process::id());
    let spec = ServerSpec {
        data_dir: work.path().join("data"),
        deploy_dir: deploy_dir.clone(),
        ..bins.clone()
    };
    let mut server = Server::start(&spec)?;
    let port = fleet.ports()[0];
    server
        .add_server("h0", port, USER, &fleet.key.pem, &["bench".to_string()])
        .await?;
    server
        .api(
            Method::PUT,
            "/api/v1/variables/bench",
            Some(&json!({"value": {"counter": 41}})),
        )
        .await?;
    let target = json!({"servers": ["h0"]});
    for (name, script, helpers) in [
        ("calls-api", PY_CALLS, "api"),
        ("run-api", PY_RUN, "api"),
        ("run-bundled", PY_RUN, "bundled"),
    ] {
        server
            .put_event(&json!({"name": name, "type": "python", "script": script,
                "helpers": helpers, "target": target, "timeout": "10m"}))
            .await?;
    }
    // Deploy the runner and warm the connection first.
    server.run_timed("run-bundled", 1).await?;
    let id = server
        .api(
            Method::POST,
            "/api/v1/events/calls-api/run",
            Some(&json!({"input": {"n": calls}})),
        )
        .await?["id"]
        .as_i64()
        .ok_or_else(|| anyhow::anyhow!("no job id"))?;
    let job = loop {
        let job = server
            .api(Method::GET, &format!("/api/v1/jobs/{id}"), None)
            .await?;
        if crate::cronium::is_final(job["status"].as_str().unwrap_or_default()) {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if job["status"] != "succeeded" || job["executions"][0]["helpers"] != "api" {
        anyhow::bail!("the API-mode run over SSH did not succeed in API mode: {job}");
    }
    let samples = |key: &str| -> Vec<f64> {
        job["output"][key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_f64)
            .collect()
    };
    let (mut read, mut write) = (samples("read"), samples("write"));
    if read.is_empty() || write.is_empty() {
        anyhow::bail!("no samples in {job}");
    }
    let runs = 15;
    let mut per_run = Vec::new();
    for name in ["run-bundled", "run-api"] {
        server.run_timed(name, 1).await?;
        let mut wall = Vec::with_capacity(runs);
        for _ in 0..runs {
            wall.push(server.run_timed(name, 1).await?.wall.as_secs_f64() * 1000.0);
        }
        per_run.push(pct(&mut wall).0);
    }
    server.stop();
    let _ = std::fs::remove_dir_all(crate::fanout::home_of(USER).join(&deploy_dir));
    Ok(HelpersResult {
        calls,
        read: pct(&mut read),
        write: pct(&mut write),
        run_bundled_ms: per_run[0],
        run_api_ms: per_run[1],
    })
}

pub fn markdown(r: &HelpersResult) -> String {
    let verdict = if r.read.0 <= TARGET_P50_MS {
        "ok"
    } else {
        "MISSED"
    };
    format!(
        "| measure | p50 | p99 |\n| --- | --- | --- |\n\
         | API mode, Python getVariable over SSH ({} calls; bar p50 ≤ {TARGET_P50_MS} ms: {verdict}) | {:.3} ms | {:.3} ms |\n\
         | API mode, Python output(key, v) over SSH | {:.3} ms | {:.3} ms |\n\
         | wall of a trivial Python run on the host, bundled / api (warm connection) | {:.1} ms / {:.1} ms | |\n",
        r.calls, r.read.0, r.read.1, r.write.0, r.write.1, r.run_bundled_ms, r.run_api_ms
    )
}
