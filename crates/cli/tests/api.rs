//! The core platform through the real `cronium` binary: auth, events, bad input, runs, logs,
//! variables, tokens, OpenAPI and metrics. Store behaviour on both backends is covered by the
//! store's conformance suite; these tests run the server on SQLite (and PostgreSQL where the
//! behaviour is about several servers).

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

#[tokio::test]
async fn every_endpoint_requires_a_token_and_only_hashes_are_stored() {
    let s = Server::start();
    for (m, path) in [
        ("GET", "/api/v1/events"),
        ("POST", "/api/v1/events"),
        ("PUT", "/api/v1/events/x"),
        ("POST", "/api/v1/events/x/run"),
        ("GET", "/api/v1/jobs"),
        ("GET", "/api/v1/jobs/1"),
        ("POST", "/api/v1/jobs/1/cancel"),
        ("GET", "/api/v1/jobs/1/logs"),
        ("GET", "/api/v1/jobs/1/logs/stream"),
        ("GET", "/api/v1/variables"),
        ("PUT", "/api/v1/variables/x"),
        ("GET", "/api/v1/tokens"),
        ("POST", "/api/v1/tokens"),
        ("GET", "/api/v1/openapi.json"),
        ("GET", "/metrics"),
    ] {
        let (status, body) = s.api_with_token(m, path, Some(json!({})), None).await;
        assert_eq!(status, 401, "{m} {path} without token: {body}");
        let (status, _) = s
            .api_with_token(m, path, Some(json!({})), Some("crn_wrong"))
            .await;
        assert_eq!(status, 401, "{m} {path} with a wrong token");
    }
    let (status, body) = s.api_with_token("GET", "/healthz", None, None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));

    // The token given on first start works; the database holds only its hash.
    let (status, _) = s.api("GET", "/api/v1/events", None).await;
    assert_eq!(status, 200);
    s.assert_not_at_rest(TOKEN);
}

#[tokio::test]
async fn first_start_without_a_token_prints_one_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let mut a = Server::start_with(ServerOpts {
        data_dir: Some(data.clone()),
        env: vec![("CRONIUM_ADMIN_TOKEN".into(), String::new())],
        ..Default::default()
    });
    let printed = a.banner.join("\n");
    let token = printed
        .lines()
        .find_map(|l| l.trim().strip_prefix("API token:"))
        .map(|t| t.trim().to_string())
        .unwrap_or_else(|| panic!("no token printed: {printed}"));
    assert!(token.starts_with("crn_"), "{printed}");
    let (status, _) = a
        .api_with_token("GET", "/api/v1/events", None, Some(&token))
        .await;
    assert_eq!(status, 200);
    a.stop();
    let b = Server::start_with(ServerOpts {
        data_dir: Some(data),
        env: vec![("CRONIUM_ADMIN_TOKEN".into(), String::new())],
        ..Default::default()
    });
    assert!(
        !b.banner.join("\n").contains("API token"),
        "printed again: {:?}",
        b.banner
    );
    let (status, _) = b
        .api_with_token("GET", "/api/v1/events", None, Some(&token))
        .await;
    assert_eq!(status, 200, "token survives a restart");
}

#[tokio::test]
async fn bad_event_input_names_the_field_and_writes_nothing() {
    let s = Server::start();
    s.apply_yaml("name: keep\ntype: bash\nscript: echo hi\n")
        .await;
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"name": "keep", "type": "bash", "script": "x", "surprise": 1}),
            "surprise",
            "unknown field",
        ),
        (
            json!({"name": "keep", "type": "bash", "script": "x", "schedule": "61 * * * *"}),
            "schedule",
            "cron",
        ),
        (
            json!({"name": "keep", "type": "bash", "script": "x", "timezone": "Mars/Base"}),
            "timezone",
            "Mars/Base",
        ),
        (
            json!({"name": "keep", "type": "bash", "script": "x", "timeout": "soon"}),
            "timeout",
            "duration",
        ),
        (
            json!({"name": "keep", "type": "bash", "script": "x", "retries": {"backoff": "x"}}),
            "retries.backoff",
            "duration",
        ),
        (
            json!({"name": "keep", "type": "cobol", "script": "x"}),
            "type",
            "cobol",
        ),
        (
            json!({"name": "keep", "type": "bash", "script": "x".repeat(1024 * 1024 + 1)}),
            "script",
            "limit",
        ),
        (
            json!({"name": "keep", "type": "bash"}),
            "script",
            "required",
        ),
    ];
    for (body, field, needle) in cases {
        let (status, r) = s
            .api("PUT", "/api/v1/events/keep", Some(body.clone()))
            .await;
        assert_eq!(status, 422, "{body}: {r}");
        assert_eq!(r["error"]["field"].as_str(), Some(field), "{r}");
        let msg = r["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{msg}");
    }
    // Malformed JSON.
    let resp = s
        .http
        .put(format!("{}/api/v1/events/keep", s.url))
        .bearer_auth(&s.token)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 422);
    // A name clash on create.
    let (status, r) = s
        .api(
            "POST",
            "/api/v1/events",
            Some(json!({"name": "keep", "type": "bash", "script": "echo other"})),
        )
        .await;
    assert_eq!(status, 409, "{r}");
    assert_eq!(r["error"]["field"], "name");
    // Nothing changed.
    let (_, ev) = s.api("GET", "/api/v1/events/keep", None).await;
    assert_eq!(ev["version"], 1);
    assert_eq!(ev["spec"]["script"], "echo hi");
    let (_, list) = s.api("GET", "/api/v1/events", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn cli_applies_files_and_reports_errors() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "job.py",
        "import cronium\ncronium.output({'got': cronium.input()})\n",
    );
    let f = write(
        dir.path(),
        "ev.yaml",
        "name: from-file\ntype: python\nscript_file: job.py\ninput: { a: 1 }\n",
    );
    let o = s.cli(&["event", "apply", "-f", f.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("created"), "{}", stdout(&o));
    let o = s.cli(&["event", "apply", "-f", f.to_str().unwrap()]);
    assert!(stdout(&o).contains("unchanged"), "{}", stdout(&o));

    let bad = write(
        dir.path(),
        "bad.yaml",
        "name: from-file\ntype: python\nscript: x\ntimeout: soon\n",
    );
    let o = s.cli(&["event", "apply", "-f", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("timeout"), "{}", stderr(&o));

    let o = s.cli(&["event", "list", "--json"]);
    let list: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list[0]["name"], "from-file");

    let o = s.cli(&[
        "event",
        "run",
        "from-file",
        "--input",
        "{\"b\": 2}",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let id = serde_json::from_slice::<Value>(&o.stdout).unwrap()["id"]
        .as_i64()
        .unwrap();
    let job = s.wait_job(id, Duration::from_secs(30)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["output"], json!({"got": {"b": 2}}));

    let o = s.cli(&["event", "run", "nope"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not found"), "{}", stderr(&o));
    let o = s.cli(&["event", "run", "from-file", "--input", "{oops"]);
    assert!(stderr(&o).contains("--input"), "{}", stderr(&o));

    let o = s.cli(&["event", "delete", "from-file"]);
    assert!(o.status.success());
    let (_, list) = s.api("GET", "/api/v1/events", None).await;
    assert_eq!(list, json!([]));
    // The job survives its event.
    assert_eq!(s.job(id).await["event"], "from-file");
}

#[tokio::test]
async fn follow_streams_the_log_and_exits_with_the_jobs_code() {
    let s = Server::start();
    s.apply_yaml("name: ok\ntype: bash\nscript: |\n  echo line-one\n  echo to-err >&2\n  echo \"in=$(cronium.input who)\"\n").await;
    s.apply_yaml("name: bad\ntype: bash\nscript: |\n  echo failing\n  exit 3\n")
        .await;
    s.apply_yaml("name: slow\ntype: bash\ntimeout: 1s\nscript: sleep 30\n")
        .await;

    let o = s.cli(&[
        "event",
        "run",
        "ok",
        "--input",
        "{\"who\":\"me\"}",
        "--follow",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("line-one") && stdout(&o).contains("in=me"),
        "{}",
        stdout(&o)
    );
    assert!(stderr(&o).contains("to-err"), "{}", stderr(&o));

    let o = s.cli(&["event", "run", "bad", "--follow"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stdout(&o).contains("failing"));

    let o = s.cli(&["event", "run", "slow", "--follow"]);
    assert_eq!(o.status.code(), Some(124), "{}", stderr(&o));
}

#[tokio::test]
async fn job_show_json_has_the_documented_fields() {
    let s = Server::start();
    s.apply_yaml("name: out\ntype: node\nscript: |\n  const c = require('cronium');\n  c.output({sum: 1 + 2});\n").await;
    let id = s.run_event("out", None).await;
    s.wait_job(id, Duration::from_secs(30)).await;
    let o = s.cli(&["job", "show", &id.to_string(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["id"], id);
    assert_eq!(j["event"], "out");
    assert_eq!(j["status"], "succeeded");
    assert_eq!(j["exit_code"], 0);
    assert_eq!(j["output"], json!({"sum": 3}));
    let x = &j["executions"][0];
    assert_eq!(x["server"], Value::Null);
    assert_eq!(x["status"], "succeeded");
    assert_eq!(x["exit_code"], 0);
    assert_eq!(x["attempt"], 1);
    assert!(
        x["runner_version"].as_str().is_some_and(|v| !v.is_empty()),
        "{x}"
    );
    assert!(
        x["setup_ms"].as_i64().is_some() && x["run_ms"].as_i64().is_some(),
        "{x}"
    );
}

#[tokio::test]
async fn failed_runs_are_retried_with_backoff() {
    let s = Server::start();
    s.apply_yaml(
        "name: flaky\ntype: bash\nretries: { max_attempts: 3, backoff: 300ms, max_backoff: 1s }\nscript: |\n  echo \"attempt $CRONIUM_ATTEMPT\"\n  exit 7\n",
    )
    .await;
    let id = s.run_event("flaky", None).await;
    let j = s.wait_job(id, Duration::from_secs(60)).await;
    assert_eq!(j["status"], "failed", "{j}");
    assert_eq!(j["exit_code"], 7);
    assert_eq!(j["attempt"], 3);
    let xs = j["executions"].as_array().unwrap();
    assert_eq!(xs.len(), 3, "{j}");
    let starts: Vec<i64> = xs
        .iter()
        .map(|x| chrono_ms(x["started_at"].as_str().unwrap()))
        .collect();
    // Backoff 300 ms then 600 ms (+-20% jitter), measured between starts.
    assert!(starts[1] - starts[0] >= 240, "{starts:?}");
    assert!(starts[2] - starts[1] >= 480, "{starts:?}");
    let log = s.log_text(id).await;
    for n in 1..=3 {
        assert!(log.contains(&format!("attempt {n}")), "{log}");
    }
    // Attempts 2 and 3 each continued the log after the lines already stored; the payload was
    // generated once (the later attempts found it in the cache).
    let (_, text) = s.metrics().await;
    for needle in [
        "cronium_partial_log_recovery_count_total 2",
        "cronium_runner_payload_generation_duration_seconds_count 1",
    ] {
        assert!(
            text.contains(needle),
            "{needle} missing from /metrics:\n{text}"
        );
    }
}

fn chrono_ms(t: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(t)
        .unwrap()
        .timestamp_millis()
}

#[tokio::test]
async fn cancel_stops_running_and_queued_jobs() {
    let s = Server::start_with(ServerOpts {
        args: vec!["--concurrency".into(), "1".into()],
        ..Default::default()
    });
    let dir = shared_tempdir();
    let pidfile = dir.path().join("pid");
    s.apply_yaml(&format!(
        "name: long\ntype: bash\nscript: |\n  echo $$ > {}\n  echo started\n  sleep 300\n",
        pidfile.display()
    ))
    .await;
    let running = s.run_event("long", None).await;
    let queued = s.run_event("long", None).await;
    s.wait_for("the script to start", Duration::from_secs(30), || async {
        pidfile.exists()
    })
    .await;
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    // Queued: cancelled at once.
    let o = s.cli(&["job", "cancel", &queued.to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(s.job(queued).await["status"], "cancelled");
    // Running: the runner stops the script.
    let o = s.cli(&["job", "cancel", &running.to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j = s.wait_job(running, Duration::from_secs(30)).await;
    assert_eq!(j["status"], "cancelled", "{j}");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "script {pid} still running"
    );
    // Cancelling a finished job is a conflict.
    let (status, _) = s
        .api("POST", &format!("/api/v1/jobs/{running}/cancel"), None)
        .await;
    assert_eq!(status, 409);
    let (status, _) = s.api("POST", "/api/v1/jobs/999999/cancel", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn variables_and_secrets() {
    let s = Server::start();
    let o = s.cli(&["var", "set", "greeting", "hello"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = s.cli(&["var", "set", "limits", "{\"max\": 5}"]);
    assert!(o.status.success());
    let o = s.cli(&[
        "var",
        "set",
        "db_password",
        "hunter2-very-secret",
        "--secret",
    ]);
    assert!(o.status.success());

    let o = s.cli(&["var", "get", "greeting"]);
    assert_eq!(stdout(&o).trim(), "hello");
    let (_, v) = s.api("GET", "/api/v1/variables/db_password", None).await;
    assert_eq!(v["secret"], true);
    assert_eq!(v["value"], Value::Null);
    let (_, list) = s.api("GET", "/api/v1/variables", None).await;
    assert!(!list.to_string().contains("hunter2"), "{list}");
    let o = s.cli(&["var", "get", "db_password"]);
    assert!(!o.status.success() && !stdout(&o).contains("hunter2"));
    // Encrypted at rest (SQLite may keep old pages around, and recent writes in the WAL).
    s.assert_not_at_rest("hunter2-very-secret");

    // Scripts read them (secrets decrypted) and write them back.
    s.apply_yaml(
        "name: vars\ntype: python\nscript: |\n  import cronium\n  cronium.output({'g': cronium.getVariable('greeting'), 'm': cronium.getVariable('limits')['max'], 'p': len(cronium.getVariable('db_password'))})\n  cronium.setVariable('greeting', 'bonjour')\n  cronium.setVariable('db_password', 'rotated-' + 'secret-value')\n  raise SystemExit(1)\n",
    )
    .await;
    let id = s.run_event("vars", None).await;
    let j = s.wait_job(id, Duration::from_secs(30)).await;
    assert_eq!(j["status"], "failed");
    // Written before the failure, so kept.
    assert_eq!(j["output"], json!({"g": "hello", "m": 5, "p": 19}));
    let (_, v) = s.api("GET", "/api/v1/variables/greeting", None).await;
    assert_eq!(v["value"], "bonjour");
    let (_, v) = s.api("GET", "/api/v1/variables/db_password", None).await;
    assert_eq!(
        (v["secret"].clone(), v["value"].clone()),
        (json!(true), Value::Null),
        "a secret stays secret"
    );
    // A secret written by a script is encrypted too (the script builds the value, so that its
    // source, stored in clear as it should be, does not hold it).
    s.assert_not_at_rest("rotated-secret-value");

    let (status, r) = s
        .api(
            "PUT",
            "/api/v1/variables/bad%20name",
            Some(json!({"value": 1})),
        )
        .await;
    assert_eq!(status, 422, "{r}");
    let (status, r) = s
        .api("PUT", "/api/v1/variables/x", Some(json!({"valeu": 1})))
        .await;
    assert_eq!(status, 422, "{r}");
    let o = s.cli(&["var", "delete", "greeting"]);
    assert!(o.status.success());
    let (status, _) = s.api("GET", "/api/v1/variables/greeting", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn tokens_can_be_created_listed_and_revoked() {
    let s = Server::start();
    let o = s.cli(&["token", "create", "ci", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let t: Value = serde_json::from_slice(&o.stdout).unwrap();
    let token = t["token"].as_str().unwrap().to_string();
    let id = t["id"].as_i64().unwrap();
    let (status, _) = s
        .api_with_token("GET", "/api/v1/jobs", None, Some(&token))
        .await;
    assert_eq!(status, 200);
    let (_, list) = s.api("GET", "/api/v1/tokens", None).await;
    assert!(!list.to_string().contains(&token), "token value listed");
    assert_eq!(list.as_array().unwrap().len(), 2);
    let o = s.cli(&["token", "revoke", &id.to_string()]);
    assert!(o.status.success());
    let (status, _) = s
        .api_with_token("GET", "/api/v1/jobs", None, Some(&token))
        .await;
    assert_eq!(status, 401, "revoked token still works");
}

#[tokio::test]
async fn openapi_metrics_and_health() {
    let s = Server::start();
    let (status, doc) = s.api("GET", "/api/v1/openapi.json", None).await;
    assert_eq!(status, 200);
    for p in [
        "/api/v1/events",
        "/api/v1/events/{name}/run",
        "/api/v1/jobs/{id}",
        "/api/v1/jobs/{id}/logs/stream",
        "/api/v1/variables/{name}",
        "/api/v1/tokens",
    ] {
        assert!(
            doc["paths"].get(p).is_some(),
            "{p} missing from the OpenAPI document"
        );
    }
    s.apply_yaml("name: m\ntype: bash\nscript: echo metrics\n")
        .await;
    let id = s.run_event("m", None).await;
    s.wait_job(id, Duration::from_secs(30)).await;
    let (_, text) = s.metrics().await;
    for needle in [
        "cronium_jobs{status=\"succeeded\"} 1",
        "cronium_queue_depth",
        "cronium_scheduler_lag_seconds",
        "cronium_run_duration_seconds_count 1",
    ] {
        assert!(
            text.contains(needle),
            "{needle} missing from /metrics:\n{text}"
        );
    }
}

#[tokio::test]
async fn logs_page_and_stream_resume_without_gaps_or_repeats() {
    let s = Server::start();
    s.apply_yaml(
        "name: count\ntype: bash\nscript: |\n  for i in $(seq 1 300); do echo \"line $i\"; done\n",
    )
    .await;
    let id = s.run_event("count", None).await;
    s.wait_job(id, Duration::from_secs(30)).await;
    let (_, page) = s
        .api(
            "GET",
            &format!("/api/v1/jobs/{id}/logs?after=0&limit=100"),
            None,
        )
        .await;
    assert_eq!(page["lines"].as_array().unwrap().len(), 100);
    assert_eq!(page["done"], false);
    let next = page["next_after"].as_i64().unwrap();
    let (_, page2) = s
        .api(
            "GET",
            &format!("/api/v1/jobs/{id}/logs?after={next}&limit=1000"),
            None,
        )
        .await;
    assert_eq!(page2["done"], true);
    let all: Vec<Value> = page["lines"]
        .as_array()
        .unwrap()
        .iter()
        .chain(page2["lines"].as_array().unwrap())
        .cloned()
        .collect();
    let seqs: Vec<i64> = all.iter().map(|l| l["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    assert!(all.iter().any(|l| l["line"] == "line 300"));

    // SSE from the middle: exactly the rest, then `end`.
    let resp = s
        .http
        .get(format!("{}/api/v1/jobs/{id}/logs/stream", s.url))
        .bearer_auth(&s.token)
        .header("Last-Event-ID", "150")
        .send()
        .await
        .unwrap();
    let body = resp.text().await.unwrap();
    let ids: Vec<i64> = body
        .lines()
        .filter_map(|l| l.strip_prefix("id:"))
        .map(|v| v.trim().parse().unwrap())
        .collect();
    assert_eq!(ids.first(), Some(&151));
    assert_eq!(ids, (151..=seqs.len() as i64).collect::<Vec<_>>());
    assert!(body.contains("event: end"), "{body}");
}

#[tokio::test]
async fn http_events_record_status_headers_and_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let (code, body) = if req.starts_with("POST /ok")
                    && req.contains("x-probe: 1")
                    && req.ends_with("ping")
                {
                    ("200 OK", "{\"pong\": true}")
                } else {
                    ("503 Service Unavailable", "down")
                };
                let resp = format!("HTTP/1.1 {code}\r\ncontent-type: application/json\r\nx-reply: yes\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    let s = Server::start();
    s.apply_yaml(&format!(
        "name: ping\ntype: http\nhttp: {{ method: POST, url: 'http://{addr}/ok', headers: {{ x-probe: '1' }}, body: ping, expect_status: [200] }}\n"
    ))
    .await;
    s.apply_yaml(&format!(
        "name: down\ntype: http\nhttp: {{ url: 'http://{addr}/down' }}\n"
    ))
    .await;
    let ok = s
        .wait_job(s.run_event("ping", None).await, Duration::from_secs(30))
        .await;
    assert_eq!(ok["status"], "succeeded", "{ok}");
    assert_eq!(ok["output"]["status"], 200);
    assert_eq!(ok["output"]["headers"]["x-reply"], "yes");
    assert_eq!(ok["output"]["json"], json!({"pong": true}));
    let down = s
        .wait_job(s.run_event("down", None).await, Duration::from_secs(30))
        .await;
    assert_eq!(down["status"], "failed", "{down}");
    assert!(down["error"].as_str().unwrap().contains("503"), "{down}");
}

#[tokio::test]
async fn the_event_status_lives_beside_the_spec_not_in_it() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let paused = write(
        dir.path(),
        "p.yaml",
        "name: quiet\ntype: bash\nstatus: paused\nscript: echo hi\n",
    );
    let o = s.cli(&["event", "apply", "-f", paused.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (_, e) = s.api("GET", "/api/v1/events/quiet", None).await;
    assert_eq!(
        (e["status"].as_str(), e["version"].as_i64()),
        (Some("paused"), Some(1))
    );
    assert_eq!(
        e["spec"].get("status"),
        None,
        "no second copy in the spec: {e}"
    );
    // `event show` still shows it, once, above the spec.
    let o = s.cli(&["event", "show", "quiet"]);
    let shown = stdout(&o);
    assert!(shown.contains("status:    paused"), "{shown}");
    let spec_part = shown.split("---").nth(1).unwrap_or_default();
    assert!(!spec_part.contains("status"), "{shown}");

    // A change of status alone is a new version; the same status again is not.
    let active = write(
        dir.path(),
        "a.yaml",
        "name: quiet\ntype: bash\nstatus: active\nscript: echo hi\n",
    );
    let o = s.cli(&["event", "apply", "-f", active.to_str().unwrap()]);
    assert!(stdout(&o).contains("updated (version 2"), "{}", stdout(&o));
    let o = s.cli(&["event", "apply", "-f", active.to_str().unwrap()]);
    assert!(
        stdout(&o).contains("unchanged (version 2"),
        "{}",
        stdout(&o)
    );
    let (_, e) = s.api("GET", "/api/v1/events/quiet", None).await;
    assert_eq!(e["status"], "active");
    assert_eq!(e["spec"].get("status"), None, "{e}");
}

#[tokio::test]
async fn openapi_declares_statuses_and_triggers_as_enums() {
    let s = Server::start();
    let (_, doc) = s.api("GET", "/api/v1/openapi.json", None).await;
    let schemas = &doc["components"]["schemas"];
    for (name, values) in [
        (
            "JobStatus",
            json!([
                "queued",
                "running",
                "succeeded",
                "failed",
                "timed_out",
                "cancelled",
                "partial"
            ]),
        ),
        (
            "ExecutionStatus",
            json!([
                "pending",
                "deploying",
                "running",
                "succeeded",
                "failed",
                "timed_out",
                "cancelled",
                "lost",
                "skipped"
            ]),
        ),
        (
            "EventStatus",
            json!(["active", "paused", "draft", "archived"]),
        ),
        (
            "Trigger",
            json!(["schedule", "manual", "api", "workflow", "webhook", "cli"]),
        ),
    ] {
        assert_eq!(schemas[name]["enum"], values, "{name}: {}", schemas[name]);
    }
    // The DTOs refer to them rather than saying "string".
    let reference = |dto: &str, field: &str| {
        let p = &schemas[dto]["properties"][field];
        serde_json::to_string(p).unwrap_or_default()
    };
    assert!(reference("JobDto", "status").contains("JobStatus"));
    assert!(reference("JobDto", "trigger").contains("Trigger"));
    assert!(reference("ExecutionDto", "status").contains("ExecutionStatus"));
    assert!(reference("EventDto", "status").contains("EventStatus"));
}

#[tokio::test]
async fn job_list_refuses_an_unknown_status_naming_the_valid_ones() {
    let s = Server::start();
    let (status, body) = s.api("GET", "/api/v1/jobs?status=done", None).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "status");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("timed_out"), "{message}");
    let o = s.cli(&["job", "list", "--status", "done"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("timed_out"), "{}", stderr(&o));
    let o = s.cli(&["job", "list", "--status", "timed_out"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Regression: a path parameter that did not parse (`/jobs/abc`) got axum's plain-text 400,
/// which the OpenAPI document does not describe; it is a 422 naming the parameter, in the one
/// error shape. So is a query parameter that does not parse or is unknown.
#[tokio::test]
async fn unparsable_parameters_are_a_422_naming_them() {
    let s = Server::start();
    for (path, field) in [
        ("/api/v1/jobs/abc", "id"),
        ("/api/v1/jobs/99999999999999999999999", "id"),
        ("/api/v1/tokens/1.5", "id"),
        ("/api/v1/jobs?limit=ten", "limit"),
        ("/api/v1/jobs?colour=red", "colour"),
        ("/api/v1/jobs/1/logs?after=x", "after"),
    ] {
        let method = if path.starts_with("/api/v1/tokens") {
            "DELETE"
        } else {
            "GET"
        };
        let (status, body) = s.api(method, path, None).await;
        assert_eq!(status, 422, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], "invalid", "{path}: {body}");
        assert_eq!(body["error"]["field"], field, "{path}: {body}");
    }
}

/// Regression: a body over the limit got axum's plain-text 413; it is a 413 in the one error
/// shape, and nothing is written.
#[tokio::test]
async fn a_body_over_the_limit_is_a_413_in_the_error_shape() {
    let s = Server::start();
    let (status, headers, body) =
        s.request_with_body_of("PUT", "/api/v1/events/big", (2 << 20) + 1);
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "content-type" && v.starts_with("application/json")),
        "{headers:?}"
    );
    let body: Value = serde_json::from_slice(&body).expect("a JSON error");
    assert_eq!(body["error"]["code"], "too_large", "{body}");
    let (status, _) = s.api("GET", "/api/v1/events/big", None).await;
    assert_eq!(status, 404);
}

/// Regression (found by the API fuzzer): `null` as the optional body of a run or of
/// accept-key was refused; it means "no body", as for an empty one.
#[tokio::test]
async fn a_null_optional_body_is_no_body() {
    let s = Server::start();
    s.apply_yaml("name: nb\ntype: bash\nscript: 'true'\ninput: {default: true}\n")
        .await;
    let resp = s
        .http
        .post(format!("{}/api/v1/events/nb/run", s.url))
        .bearer_auth(&s.token)
        .header("content-type", "application/json")
        .body("null")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let id = resp.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    assert_eq!(s.job(id).await["input"], json!({"default": true}));
}

/// Regression: a token name was limited to 100 bytes while the document says 100 characters.
#[tokio::test]
async fn token_names_are_counted_in_characters() {
    let s = Server::start();
    let name = "é".repeat(100);
    let (status, body) = s
        .api("POST", "/api/v1/tokens", Some(json!({"name": name})))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = s
        .api(
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "é".repeat(101)})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("name"))
    );
}
