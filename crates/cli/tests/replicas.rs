//! Several `cronium serve` on one PostgreSQL (issue 14, item 3): replica A runs the agent and
//! the scheduler, replica B runs neither (`--no-agent --no-scheduler`, API and UI only). A viewer
//! on B of a job A's agent records is woken through PostgreSQL `LISTEN/NOTIFY`: every line
//! arrives once, in order, each well within B's fallback reread (500 ms), so the test fails
//! without the notifications (20 lines each under 250 ms by chance: about 1 in a million). A
//! cancel through B stops the job on A at once (without the signal: at A's next heartbeat, 10 s
//! with the default 30 s lease). The web UI's job list stream on B shows a job A ran as final
//! within a second (its fallback reread is every 10 s). B alone fires no schedule and claims no
//! job; with A there is one fire per tick.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::Connection;
use support::*;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn ms(t: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(t.as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

fn replica(db: &str, args: &[&str]) -> Server {
    Server::start_with(ServerOpts {
        database_url: Some(db.to_string()),
        args: args.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    })
}

/// Replica B: API and UI only.
fn api_only(db: &str) -> Server {
    replica(db, &["--no-agent", "--no-scheduler"])
}

async fn drop_database(db: &str) {
    let name = db.rsplit('/').next().unwrap_or_default().to_string();
    let base = std::env::var("CRONIUM_TEST_PG_URL").unwrap_or_default();
    if let Ok(mut admin) = sqlx::PgConnection::connect(&base).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await;
    }
}

/// A live SSE stream read event by event.
struct Sse {
    resp: reqwest::Response,
    buf: String,
}

impl Sse {
    async fn open(s: &Server, path: &str) -> Sse {
        let resp = s
            .http
            .get(format!("{}{path}", s.url))
            .bearer_auth(&s.token)
            .send()
            .await
            .expect("open the stream");
        assert_eq!(resp.status(), 200, "{path}");
        Sse {
            resp,
            buf: String::new(),
        }
    }

    /// The next event (name, data), comments skipped; None when the stream ended.
    async fn next(&mut self) -> Option<(String, String)> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut name = String::from("message");
                let mut data = String::new();
                for l in block.lines() {
                    if let Some(v) = l.strip_prefix("event:") {
                        name = v.trim().to_string();
                    } else if let Some(v) = l.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() && name == "message" {
                    continue;
                }
                return Some((name, data));
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.resp.chunk())
                .await
                .expect("the stream stalled for 30 s")
                .expect("read the stream")?;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

#[tokio::test]
async fn a_viewer_on_another_replica_gets_every_line_at_once_and_its_cancel_stops_the_job() {
    let db = fresh_pg_database().await;
    let a = replica(&db, &[]);
    let b = api_only(&db);
    const LINES: usize = 20;
    a.apply_yaml(&format!(
        "name: slow\ntype: bash\ntimeout: 2m\nscript: |\n  for i in $(seq 1 {LINES}); do echo \"line $i $(date +%s%3N)\"; sleep 0.2; done\n"
    ))
    .await;
    // Queued through B: A's agent is woken by the signal (or its 1 s poll) and runs it.
    let id = b.run_event("slow", None).await;
    let mut sse = Sse::open(&b, &format!("/api/v1/jobs/{id}/logs/stream")).await;
    let mut seen = Vec::new();
    let mut latencies = Vec::new();
    let end = loop {
        let (name, data) = sse.next().await.expect("the stream ended without `end`");
        let arrived = now_ms();
        match name.as_str() {
            "line" => {
                let v: Value = serde_json::from_str(&data).unwrap();
                let text = v["line"].as_str().unwrap().to_string();
                let mut words = text.split(' ');
                assert_eq!(words.next(), Some("line"), "{text}");
                let n: usize = words.next().unwrap().parse().unwrap();
                let printed: i64 = words.next().unwrap().parse().unwrap();
                seen.push(n);
                latencies.push(arrived - printed);
            }
            "end" => break data,
            other => panic!("unexpected event {other}: {data}"),
        }
    };
    assert!(end.contains("succeeded"), "{end}");
    assert_eq!(
        seen,
        (1..=LINES).collect::<Vec<_>>(),
        "every line once, in order"
    );
    let worst = *latencies.iter().max().unwrap();
    eprintln!("script -> viewer on the other replica, ms: {latencies:?}");
    assert!(
        worst < 250,
        "a line took {worst} ms to reach the viewer on the other replica (its fallback reread is 500 ms): {latencies:?}"
    );

    // A cancel through B stops the run on A's agent at once.
    a.apply_yaml(
        "name: forever\ntype: bash\ntimeout: 5m\nscript: |\n  echo started\n  sleep 300\n",
    )
    .await;
    let id = b.run_event("forever", None).await;
    let mut sse = Sse::open(&b, &format!("/api/v1/jobs/{id}/logs/stream")).await;
    let (name, data) = sse.next().await.expect("a line");
    assert_eq!(name, "line", "{data}");
    assert!(data.contains("started"), "{data}");
    let asked = Instant::now();
    let (status, body) = b
        .api("POST", &format!("/api/v1/jobs/{id}/cancel"), None)
        .await;
    assert!(status == 200 || status == 202, "cancel: {status} {body}");
    let job = b.wait_job(id, Duration::from_secs(20)).await;
    let took = asked.elapsed();
    assert_eq!(job["status"], "cancelled", "{job}");
    eprintln!("cancel through the other replica: stopped after {took:?}");
    assert!(
        took < Duration::from_secs(1),
        "the cancel sent to B took {took:?} to stop the job on A"
    );
    drop(a);
    drop(b);
    drop_database(&db).await;
}

async fn jobs_of(s: &Server, event: &str) -> Vec<Value> {
    let (status, list) = s
        .api(
            "GET",
            &format!("/api/v1/jobs?event={event}&limit=1000"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{list}");
    list.as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_replica_without_scheduler_and_agent_fires_and_claims_nothing() {
    let db = fresh_pg_database().await;
    let b = api_only(&db);
    b.apply_yaml(
        "name: pulse\ntype: bash\nschedule: '* * * * * *'\noverlap: allow\nscript: 'true'\n",
    )
    .await;
    b.apply_yaml("name: once\ntype: bash\nscript: echo ran\n")
        .await;
    let id = b.run_event("once", None).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        jobs_of(&b, "pulse").await.is_empty(),
        "a --no-scheduler server fired a schedule"
    );
    assert_ne!(
        b.metric("cronium_scheduler_leader").await,
        Some(1.0),
        "a --no-scheduler server took the lease"
    );
    let job = b.job(id).await;
    assert_eq!(
        job["status"], "queued",
        "a --no-agent server claimed it: {job}"
    );
    assert!(job["started_at"].is_null(), "{job}");

    // A replica with both: the queued job runs, and each tick fires once.
    let a = replica(&db, &[]);
    let job = b.wait_job(id, Duration::from_secs(20)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    b.wait_for("4 ticks", Duration::from_secs(20), || async {
        jobs_of(&b, "pulse").await.len() >= 4
    })
    .await;
    let mut ticks: Vec<i64> = jobs_of(&b, "pulse")
        .await
        .iter()
        .map(|j| ms(&j["scheduled_for"]))
        .collect();
    ticks.sort();
    let n = ticks.len();
    ticks.dedup();
    assert_eq!(ticks.len(), n, "a tick fired twice: {ticks:?}");
    for w in ticks.windows(2) {
        assert_eq!(w[1] - w[0], 1000, "a tick was lost: {ticks:?}");
    }
    drop(a);
    drop(b);
    drop_database(&db).await;
}

const PASSWORD: &str = "correct-horse-battery-staple";

/// The `name=value` pairs of a response's cookies, added to `jar`.
fn keep_cookies(resp: &reqwest::Response, jar: &mut Vec<(String, String)>) {
    for c in resp.headers().get_all("set-cookie") {
        let c = c.to_str().unwrap();
        let kv = c.split(';').next().unwrap();
        let (k, v) = kv.split_once('=').unwrap();
        jar.retain(|(name, _)| name != k);
        jar.push((k.to_string(), v.to_string()));
    }
}

fn cookie_header(jar: &[(String, String)]) -> String {
    jar.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Logs in to the web UI of `s` through its form; returns the session's Cookie header.
async fn ui_login(s: &Server) -> String {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut jar = Vec::new();
    let page = http.get(format!("{}/login", s.url)).send().await.unwrap();
    keep_cookies(&page, &mut jar);
    let body = page.text().await.unwrap();
    let at = body.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    let csrf = body[at..].split('"').next().unwrap().to_string();
    let resp = http
        .post(format!("{}/login", s.url))
        .header("cookie", cookie_header(&jar))
        .form(&[
            ("csrf", csrf.as_str()),
            ("username", "admin"),
            ("password", PASSWORD),
            ("next", "/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303, "login");
    keep_cookies(&resp, &mut jar);
    cookie_header(&jar)
}

/// Every string inside a JSON value.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_job_list_stream_on_another_replica_shows_each_change_at_once() {
    let db = fresh_pg_database().await;
    let with_password = |args: &[&str]| {
        Server::start_with(ServerOpts {
            database_url: Some(db.clone()),
            env: vec![("CRONIUM_ADMIN_PASSWORD".into(), PASSWORD.into())],
            args: args.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        })
    };
    let a = with_password(&[]);
    let b = with_password(&["--no-agent", "--no-scheduler"]);
    a.apply_yaml("name: short\ntype: bash\nscript: sleep 0.3\n")
        .await;
    let cookie = ui_login(&b).await;
    let resp = b
        .http
        .get(format!("{}/jobs/stream", b.url))
        .header("cookie", cookie)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut sse = Sse {
        resp,
        buf: String::new(),
    };
    let (name, _) = sse.next().await.expect("the first view");
    assert_eq!(name, "view");
    // Three jobs in turn, each shown final on B well within B's 10 s fallback reread (by chance
    // without the signals: about 1 in 1000).
    for _ in 0..3 {
        let id = a.run_event("short", None).await;
        let job = a.wait_job(id, Duration::from_secs(20)).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        let finished = ms(&job["finished_at"]);
        let row = format!("data-job=\"{id}\"");
        let arrived = loop {
            let (name, data) = sse.next().await.expect("the stream goes on");
            if name != "view" {
                continue;
            }
            let mut texts = Vec::new();
            strings(&serde_json::from_str(&data).unwrap(), &mut texts);
            if texts
                .iter()
                .any(|t| t.contains(&row) && t.contains("badge succeeded"))
            {
                break now_ms();
            }
        };
        let lag = arrived - finished;
        eprintln!("job {id}: final on the other replica's job list after {lag} ms");
        assert!(
            lag < 1000,
            "job {id} was shown final on B {lag} ms after it ended on A"
        );
    }
    drop(a);
    drop(b);
    drop_database(&db).await;
}
