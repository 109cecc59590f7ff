//! `ui`: the web UI's bars. A fresh installation is seeded through the store in bulk
//! (`Store::seed_history`: 100 000 finished jobs with one execution each and 95 log lines each,
//! plus one job with a 50 MB log: about 10 million lines), then a real `cronium serve` on it:
//! log in through the login form, then time every page `requests` times, one request at a
//! time on a kept-alive connection (the time from the request to the last byte of the page,
//! on loopback: the server's time plus a negligible transfer). Then a live job's log lines to
//! the open page's stream (`/jobs/ID/log/stream`, what `app.js` follows), and opening the 50 MB
//! log's page (its tail) and the first "older" step. SQLite, then PostgreSQL. The workflow
//! pages stand on a 12-node workflow applied through the API with a tenth as many ended
//! runs as jobs (`Store::seed_workflow_runs`, their nodes on the seeded jobs).

use std::collections::HashMap;
use std::time::{Duration, Instant, UNIX_EPOCH};

use cronium_client::{Method, SseReader};
use cronium_store::{SeedHistory, SeedWorkflowRuns, Store};
use serde_json::{json, Value};

use super::Ctx;
use crate::report::Report;
use crate::server::{fresh_pg_database, Server, ServerOpts};
use crate::stats::Summary;

pub const PAGE_P99_MS: f64 = 50.0;
pub const LINE_P99_MS: f64 = 100.0;
pub const OPEN_BIG_MS: f64 = 1000.0;
const PASSWORD: &str = "bench-password-0123";

pub struct Size {
    pub jobs: i64,
    pub lines: i64,
    pub big_mb: i64,
    pub requests: usize,
    pub postgres: bool,
}

pub async fn run(ctx: &Ctx, size: &Size) -> anyhow::Result<Report> {
    let mut report = Report::new("ui");
    let dir = tempfile::Builder::new()
        .prefix("cronium-bench-ui-")
        .tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    let sqlite = format!("sqlite:{}", data.join("cronium.db").display());
    backend(ctx, size, &mut report, "SQLite", &sqlite, Some(data)).await?;
    if size.postgres {
        match &ctx.pg_url {
            Some(base) => {
                let db = fresh_pg_database(base).await?;
                backend(ctx, size, &mut report, "PostgreSQL", &db, None).await?;
            }
            None => report.note("PostgreSQL skipped: no --pg-url / CRONIUM_TEST_PG_URL"),
        }
    }
    Ok(report)
}

/// A client with the session cookie of a login.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookie: String,
}

impl Browser {
    async fn login(base: &str) -> anyhow::Result<Browser> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let form = http.get(format!("{base}/login")).send().await?;
        let login_cookie = cookie_of(&form, "cronium_login")?;
        let body = form.text().await?;
        let csrf = between(&body, "name=\"csrf\" value=\"", "\"")?;
        let resp = http
            .post(format!("{base}/login"))
            .header("cookie", format!("cronium_login={login_cookie}"))
            .form(&[
                ("csrf", csrf.as_str()),
                ("username", "admin"),
                ("password", PASSWORD),
            ])
            .send()
            .await?;
        if resp.status().as_u16() != 303 {
            anyhow::bail!("login answered {}", resp.status());
        }
        let session = cookie_of(&resp, "cronium_session")?;
        Ok(Browser {
            http,
            base: base.to_string(),
            cookie: format!("cronium_session={session}"),
        })
    }

    /// GET `path`, read to the end; the time in ms and the body.
    async fn time(&self, path: &str) -> anyhow::Result<(f64, String)> {
        let t = Instant::now();
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await?;
        let status = resp.status();
        let body = resp.text().await?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        if status.as_u16() != 200 {
            anyhow::bail!(
                "GET {path} answered {status}: {}",
                body.chars().take(300).collect::<String>()
            );
        }
        Ok((ms, body))
    }
}

/// The node ids of the benchmark's workflow and their `after`: a build, four parallel
/// tests, a join, two deploys, a check, and three nodes on failure or always edges.
const FLOW: &[(&str, &[(&str, &str)])] = &[
    ("build", &[]),
    ("test-unit", &[("build", "success")]),
    ("test-api", &[("build", "success")]),
    ("test-ui", &[("build", "success")]),
    ("lint", &[("build", "success")]),
    (
        "package",
        &[
            ("test-unit", "success"),
            ("test-api", "success"),
            ("test-ui", "success"),
            ("lint", "always"),
        ],
    ),
    ("deploy-eu", &[("package", "success")]),
    ("deploy-us", &[("package", "success")]),
    (
        "smoke",
        &[("deploy-eu", "success"), ("deploy-us", "success")],
    ),
    ("rollback", &[("smoke", "failure")]),
    ("announce", &[("smoke", "condition")]),
    ("report", &[("smoke", "always"), ("rollback", "always")]),
];

/// Applies the benchmark's workflow (through the API, as a user would) and writes `runs`
/// ended runs of it through the store, their nodes on the seeded jobs `first..=last`.
/// Returns the newest run's id.
async fn seed_workflow(
    url: &str,
    server: &Server,
    first: i64,
    last: i64,
    runs: i64,
    start_ms: i64,
) -> anyhow::Result<i64> {
    let nodes: Vec<Value> = FLOW
        .iter()
        .enumerate()
        .map(|(i, (id, after))| {
            let after: serde_json::Map<String, Value> = after
                .iter()
                .map(|(from, kind)| (from.to_string(), json!(kind)))
                .collect();
            json!({"id": id, "event": format!("bench-{i}"), "after": after})
        })
        .collect();
    let spec = json!({"name": "bench-flow", "input": {"version": "1.4"}, "nodes": nodes});
    server
        .api(Method::PUT, "/api/v1/workflows/bench-flow", Some(&spec))
        .await?;
    let store = Store::open(url).await?;
    let w = store
        .get_workflow_by_name("bench-flow")
        .await?
        .ok_or_else(|| anyhow::anyhow!("the applied workflow is not stored"))?;
    let (_, newest) = store
        .seed_workflow_runs(&SeedWorkflowRuns {
            workflow_id: w.id,
            workflow_name: w.name.clone(),
            version: w.version,
            nodes: FLOW.iter().map(|(id, _)| id.to_string()).collect(),
            runs: runs.max(1),
            first_job_id: first,
            jobs: last - first + 1,
            chunk: 1000,
            start_ms,
        })
        .await?;
    store.settle_after_seed().await?;
    store.close().await;
    Ok(newest)
}

fn cookie_of(resp: &reqwest::Response, name: &str) -> anyhow::Result<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| {
            c.strip_prefix(&format!("{name}="))
                .map(|r| r.split(';').next().unwrap_or_default().to_string())
        })
        .ok_or_else(|| anyhow::anyhow!("no {name} cookie"))
}

fn between(s: &str, start: &str, end: &str) -> anyhow::Result<String> {
    let i = s
        .find(start)
        .ok_or_else(|| anyhow::anyhow!("no `{start}` in the page"))?
        + start.len();
    let j = s[i..]
        .find(end)
        .ok_or_else(|| anyhow::anyhow!("no end of `{start}`"))?;
    Ok(s[i..i + j].to_string())
}

/// Seeds, serves, measures one backend.
async fn backend(
    ctx: &Ctx,
    size: &Size,
    report: &mut Report,
    name: &str,
    url: &str,
    data_dir: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    eprintln!(
        "-- ui: seeding {name} ({} jobs × {} lines + {} MB)",
        size.jobs, size.lines, size.big_mb
    );
    let t = Instant::now();
    let store = Store::open(url).await?;
    let mut first_event = 0;
    for i in 0..20 {
        let spec = json!({"name": format!("bench-{i}"), "type": "bash", "script": "echo hi",
            "schedule": "0 0 * * * *", "timezone": "Europe/Berlin"});
        let e = store
            .create_event(
                &format!("bench-{i}"),
                cronium_model::EventStatus::Active,
                &spec,
                1,
            )
            .await?;
        if i == 0 {
            first_event = e.id;
        }
    }
    let start_ms = chrono::Utc::now().timestamp_millis() - size.jobs * 1000 - 86_400_000;
    let (first, last) = store
        .seed_history(&SeedHistory {
            jobs: size.jobs,
            first_event_id: first_event,
            events: 20,
            lines_per_job: size.lines,
            chunk: 1000,
            start_ms,
        })
        .await?;
    // The big log: 100-byte lines on the newest job.
    let big_lines = size.big_mb * 1_000_000 / 100;
    store.seed_log(last, big_lines, 100, 20_000).await?;
    store.settle_after_seed().await?;
    store.close().await;
    let seeded_s = t.elapsed().as_secs_f64();
    let total_lines = size.jobs * size.lines + big_lines;
    report.info(
        format!("{name}: seeded"),
        format!(
            "{} jobs, {} log lines in {seeded_s:.0} s",
            last - first + 1,
            total_lines
        ),
    );

    let mut opts = ServerOpts {
        env: vec![("CRONIUM_ADMIN_PASSWORD".into(), PASSWORD.into())],
        data_dir,
        ..Default::default()
    };
    if url.starts_with("postgres") {
        opts.database_url = Some(url.to_string());
    }
    // The seeded jobs are older than the default retention: keep them.
    opts.extra_args = vec!["--retain".into(), "forever".into()];
    let server = Server::start(&ctx.bins, &opts)?;
    let b = Browser::login(&server.url).await?;
    let last_run = seed_workflow(url, &server, first, last, size.jobs / 10, start_ms).await?;
    report.info(
        format!("{name}: workflow runs seeded"),
        format!("{} runs of a 12-node workflow", size.jobs / 10),
    );
    let deep = first + (last - first) / 10;
    let pages: Vec<(&str, String)> = vec![
        ("dashboard", "/".into()),
        ("events", "/events".into()),
        ("event", "/events/bench-3".into()),
        ("event editor", "/events/bench-3/edit".into()),
        ("new event", "/new-event?type=python".into()),
        ("jobs", "/jobs".into()),
        ("jobs, failed", "/jobs?status=failed".into()),
        ("jobs, event", "/jobs?event=bench-7".into()),
        ("jobs, server", "/jobs?server=web3".into()),
        ("jobs, server without jobs", "/jobs?server=web-none".into()),
        (
            "jobs, server, deep",
            format!("/jobs?server=web5&before={deep}"),
        ),
        ("jobs, trigger", "/jobs?trigger=schedule".into()),
        ("jobs, 90 % deep", format!("/jobs?before={deep}")),
        (
            "jobs, failed, deep",
            format!("/jobs?status=failed&before={deep}"),
        ),
        ("job", format!("/jobs/{}", first + 12)),
        ("job, 50 MB log (tail)", format!("/jobs/{last}")),
        (
            "older log lines",
            format!("/jobs/{last}/log/lines?before={}", big_lines / 2),
        ),
        ("workflows", "/workflows".into()),
        ("workflow (graph, runs)", "/workflows/bench-flow".into()),
        (
            "workflow run (graph, nodes)",
            format!("/workflow-runs/{last_run}"),
        ),
        ("servers", "/servers".into()),
        ("variables", "/variables".into()),
        ("tokens", "/tokens".into()),
    ];
    let mut worst = 0.0f64;
    let mut per_page: HashMap<&str, Summary> = HashMap::new();
    for (label, path) in &pages {
        b.time(path).await?; // warm the connection and the statement cache
        let mut samples = Vec::with_capacity(size.requests);
        for _ in 0..size.requests {
            samples.push(b.time(path).await?.0);
        }
        let s = Summary::of(&samples).ok_or_else(|| anyhow::anyhow!("no samples"))?;
        worst = worst.max(s.p99);
        per_page.insert(label, s);
        report.info(format!("{name}: {label} (`{path}`)"), s.line("ms"));
    }
    report.at_most(
        format!("{name}: slowest page, p99"),
        worst,
        PAGE_P99_MS,
        "ms",
    );

    // Opening the 50 MB log: the page (with its tail), then the first step back.
    let mut open = Vec::new();
    for _ in 0..20 {
        let (ms, body) = b.time(&format!("/jobs/{last}")).await?;
        if !body.contains(&format!("line {big_lines} ")) {
            anyhow::bail!("the big log's page does not end with its last line");
        }
        open.push(ms);
    }
    let s = Summary::of(&open).ok_or_else(|| anyhow::anyhow!("no samples"))?;
    report.at_most(
        format!(
            "{name}: open the {} MB log (its tail), max of 20",
            size.big_mb
        ),
        s.max,
        OPEN_BIG_MS,
        "ms",
    );

    // A log line to the open page: a live job printing its own timestamps, followed through
    // the page's stream with the session cookie.
    let script = "import time\nfor i in range(600):\n    print(i, time.time_ns(), flush=True)\n    time.sleep(0.01)\n";
    server
        .put_event(&json!({"name": "bench-live", "type": "python", "script": script}))
        .await?;
    let id = server.run("bench-live", None).await?;
    let resp = b
        .http
        .get(format!("{}/jobs/{id}/log/stream", server.url))
        .header("cookie", &b.cookie)
        .send()
        .await?;
    if resp.status().as_u16() != 200 {
        anyhow::bail!("the page's stream answered {}", resp.status());
    }
    let connected_ns = now_ns();
    let mut sse = SseReader::new(resp);
    let mut lat = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(e) = sse.next().await? {
            if e.event == "end" {
                return Ok::<_, anyhow::Error>(());
            }
            if e.event != "line" {
                continue;
            }
            let v: Value = serde_json::from_str(&e.data)?;
            let text = v["line"].as_str().unwrap_or_default();
            let mut parts = text.split_whitespace();
            let (Some(_), Some(ns)) = (
                parts.next(),
                parts.next().and_then(|x| x.parse::<i128>().ok()),
            ) else {
                continue;
            };
            if ns < connected_ns {
                continue;
            }
            let arrived = e
                .arrived
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as i128)
                .unwrap_or(0);
            lat.push((arrived - ns) as f64 / 1e6);
        }
        anyhow::bail!("the stream closed before its end")
    })
    .await??;
    if lat.is_empty() {
        // Say why: the job's final state and its executions' errors.
        let job = server.job(id).await.unwrap_or(Value::Null);
        anyhow::bail!("no live lines from job {id}: {job}");
    }
    let s = Summary::of(&lat).ok_or_else(|| anyhow::anyhow!("no live lines"))?;
    report.at_most(
        format!(
            "{name}: log line to the open page, p99 ({} lines)",
            lat.len()
        ),
        s.p99,
        LINE_P99_MS,
        "ms",
    );
    report.info(format!("{name}: log line to the open page"), s.line("ms"));
    drop(server);
    let _ = per_page;
    Ok(())
}

fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}
