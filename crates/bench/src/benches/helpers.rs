//! `helpers`: the runtime helpers' cost. API mode: the round trip of one helper call measured
//! inside the script (Python's `cronium.getVariable` and `cronium.output(key, v)` on the run's
//! socket, relayed through the runner's pipes to the agent and the store and back; Bash's
//! `cronium.getVariable`, a runner process per call), p50/p99. Beside it, bundled mode: the
//! same Python read (a file read) and the cost per run of each mode (a trivial Python run that
//! sets one output key, POST to the `end` of its live log).

use std::time::{Duration, Instant};

use cronium_client::Method;
use serde_json::{json, Value};

use super::Ctx;
use crate::report::Report;
use crate::server::{Server, ServerOpts};
use crate::stats::Summary;

pub const TARGET_P50_MS: f64 = 2.0;

const PY_CALLS: &str = r#"import cronium, time
n = cronium.input().get("n", 2000)
cronium.getVariable("bench")
read, write = [], []
for _ in range(n):
    t = time.perf_counter(); cronium.getVariable("bench"); read.append((time.perf_counter() - t) * 1000)
for i in range(n // 4):
    t = time.perf_counter(); cronium.output("k", i); write.append((time.perf_counter() - t) * 1000)
cronium.output({"read": read, "write": write})
"#;

const BASH_CALLS: &str = r#"n=$(cronium.input n)
out=""
for i in $(seq "$n"); do
  t0=$(date +%s%N); cronium.getVariable bench >/dev/null; t1=$(date +%s%N)
  out="$out,$(( (t1 - t0) / 1000 ))"
done
cronium.output read "[${out#,}]"
"#;

const PY_RUN: &str = "import cronium\ncronium.output('done', True)\n";

pub async fn run(ctx: &Ctx, n: usize) -> anyhow::Result<Report> {
    let server = Server::start(&ctx.bins, &ServerOpts::default())?;
    server
        .api(
            Method::PUT,
            "/api/v1/variables/bench",
            Some(&json!({"value": {"counter": 41}})),
        )
        .await?;
    for (name, kind, script, helpers) in [
        ("calls-api", "python", PY_CALLS, "api"),
        ("calls-bundled", "python", PY_CALLS, "bundled"),
        ("calls-bash-api", "bash", BASH_CALLS, "api"),
        ("run-api", "python", PY_RUN, "api"),
        ("run-bundled", "python", PY_RUN, "bundled"),
    ] {
        server
            .put_event(&json!({"name": name, "type": kind, "script": script,
                "helpers": helpers, "timeout": "10m"}))
            .await?;
    }
    let samples = |job: &Value, key: &str, scale: f64| -> Vec<f64> {
        job["output"][key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_f64)
            .map(|x| x * scale)
            .collect()
    };
    let calls = |name: &'static str, input: Value| {
        let server = &server;
        async move {
            let id = server.run(name, Some(input)).await?;
            let job = server
                .wait_final(id, Duration::from_millis(50), Duration::from_secs(600))
                .await?;
            if job["status"] != "succeeded" {
                anyhow::bail!("{name} ended {}: {job}", job["status"]);
            }
            if name != "calls-bundled" && job["executions"][0]["helpers"] != "api" {
                anyhow::bail!("{name} did not run in API mode: {job}");
            }
            Ok::<Value, anyhow::Error>(job)
        }
    };
    let api = calls("calls-api", json!({"n": n})).await?;
    let read =
        Summary::of(&samples(&api, "read", 1.0)).ok_or_else(|| anyhow::anyhow!("no reads"))?;
    let write =
        Summary::of(&samples(&api, "write", 1.0)).ok_or_else(|| anyhow::anyhow!("no writes"))?;
    let bundled = calls("calls-bundled", json!({"n": n})).await?;
    let bundled_read = Summary::of(&samples(&bundled, "read", 1.0))
        .ok_or_else(|| anyhow::anyhow!("no bundled reads"))?;
    let bash = calls("calls-bash-api", json!({"n": (n / 10).max(20)})).await?;
    // Microseconds from `date +%s%N` in the script.
    let bash_read = Summary::of(&samples(&bash, "read", 0.001))
        .ok_or_else(|| anyhow::anyhow!("no bash reads"))?;

    // Cost per run of each mode: the same trivial Python run, one at a time.
    let runs = (n / 20).clamp(20, 200);
    let mut per_run = Vec::new();
    for name in ["run-bundled", "run-api"] {
        for _ in 0..3 {
            one(&server, name).await?;
        }
        let mut wall = Vec::with_capacity(runs);
        for _ in 0..runs {
            wall.push(one(&server, name).await?);
        }
        per_run.push(Summary::of(&wall).ok_or_else(|| anyhow::anyhow!("no runs"))?);
    }

    let mut r = Report::new("helpers");
    r.at_most(
        "API mode, p50 helper round trip (Python getVariable, local)",
        read.p50,
        TARGET_P50_MS,
        "ms",
    );
    r.info(
        "API mode, p99 round trip (Python getVariable)",
        format!("{:.3} ms", read.p99),
    );
    r.info(
        "API mode, p50 / p99 Python output(key, v) (stored before it returns)",
        format!("{:.3} ms / {:.3} ms", write.p50, write.p99),
    );
    r.info(
        "API mode, p50 / p99 Bash cronium.getVariable (a runner process per call)",
        format!("{:.2} ms / {:.2} ms", bash_read.p50, bash_read.p99),
    );
    r.info(
        "bundled mode, p50 / p99 Python getVariable (a file read)",
        format!("{:.3} ms / {:.3} ms", bundled_read.p50, bundled_read.p99),
    );
    r.info(
        "p50 wall of a trivial Python run, bundled / api",
        format!(
            "{:.2} ms / {:.2} ms (Δ {:.2} ms per run)",
            per_run[0].p50,
            per_run[1].p50,
            per_run[1].p50 - per_run[0].p50
        ),
    );
    r.set("n", json!(n));
    r.set("api_read_ms", read.to_json());
    r.set("api_write_ms", write.to_json());
    r.set("api_bash_read_ms", bash_read.to_json());
    r.set("bundled_read_ms", bundled_read.to_json());
    r.set("run_bundled_ms", per_run[0].to_json());
    r.set("run_api_ms", per_run[1].to_json());
    println!("helpers: api read      {}", read.line("ms"));
    println!("helpers: api write     {}", write.line("ms"));
    println!("helpers: api bash read {}", bash_read.line("ms"));
    println!("helpers: bundled read  {}", bundled_read.line("ms"));
    println!("helpers: run bundled   {}", per_run[0].line("ms"));
    println!("helpers: run api       {}", per_run[1].line("ms"));
    Ok(r)
}

/// One run to the `end` of its live log; wall ms.
async fn one(server: &Server, name: &str) -> anyhow::Result<f64> {
    let t = Instant::now();
    let id = server.run(name, None).await?;
    let mut sse = server.stream(id).await?;
    let end = tokio::time::timeout(Duration::from_secs(60), sse.until_end())
        .await
        .map_err(|_| anyhow::anyhow!("job {id} did not end within 60 s"))??;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    if !end.data.contains("\"succeeded\"") {
        anyhow::bail!("job {id} ended: {}", end.data);
    }
    Ok(ms)
}
