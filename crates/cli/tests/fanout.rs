//! Fan-out control against real `sshd` instances (the SSH crate's test support): `min_success`
//! deciding partial or failed, rolling batches with their pause and the batches a failure
//! stops, `cronium job retry --failed-only`, and the refusal of bad values naming the field.

#[path = "../../ssh/tests/support/mod.rs"]
mod sshd;
mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

/// A server deploying runners to a directory of its own on the hosts (all test hosts share one
/// login), removed at the end with the marker files the scripts look for.
struct TestServer {
    server: Server,
    deploy_dir: String,
    markers: Vec<std::path::PathBuf>,
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
        for m in &self.markers {
            let _ = std::fs::remove_file(m);
        }
    }
}

fn server() -> TestServer {
    let deploy_dir = format!(".cache/cronium-e2e-{:08x}", rand::random::<u32>());
    let server = Server::start_with(ServerOpts {
        args: vec![
            "--static-runner".into(),
            static_runner_bin().display().to_string(),
            "--ssh-deploy-dir".into(),
            deploy_dir.clone(),
        ],
        env: vec![("CRONIUM_ADMIN_PASSWORD".into(), PASSWORD.into())],
        ..Default::default()
    });
    TestServer {
        server,
        deploy_dir,
        markers: Vec::new(),
    }
}

const PASSWORD: &str = "correct-horse-battery-staple";

/// The job page's HTML as the logged-in admin sees it (a session of its own: login form, CSRF
/// token, cookie).
async fn job_page(s: &Server, id: i64) -> String {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cookies = |r: &reqwest::Response| -> String {
        r.headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|c| c.to_str().ok()?.split(';').next().map(str::to_string))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let form = http.get(format!("{}/login", s.url)).send().await.unwrap();
    let jar = cookies(&form);
    let html = form.text().await.unwrap();
    let marker = "name=\"csrf\" value=\"";
    let at = html.find(marker).expect("csrf field") + marker.len();
    let csrf = &html[at..at + html[at..].find('"').unwrap()];
    let login = http
        .post(format!("{}/login", s.url))
        .header("cookie", &jar)
        .form(&[
            ("csrf", csrf),
            ("username", "admin"),
            ("password", PASSWORD),
            ("next", "/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303, "login");
    let session = cookies(&login);
    let page = http
        .get(format!("{}/jobs/{id}", s.url))
        .header("cookie", session)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    page.text().await.unwrap()
}

/// Starts `n` sshd instances and registers them as PREFIX0..PREFIXn-1, tagged `tag`.
fn hosts(s: &Server, prefix: &str, n: usize, tag: &str, dir: &std::path::Path) -> Vec<sshd::Sshd> {
    let key = write(dir, "id_ed25519", &sshd::env().client_key);
    let hosts: Vec<sshd::Sshd> = (0..n).map(|_| sshd::Sshd::start()).collect();
    for (i, h) in hosts.iter().enumerate() {
        let name = format!("{prefix}{i}");
        s.add_server(
            &name,
            h.port,
            sshd::USER,
            &["--key-file", key.to_str().unwrap(), "--tag", tag],
        );
    }
    hosts
}

/// (server, status) of each execution of a job, by server.
fn statuses(j: &Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = j["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["server"].as_str().unwrap_or("-").to_string(),
                x["status"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn execution<'a>(j: &'a Value, server: &str) -> &'a Value {
    j["executions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["server"] == server)
        .unwrap_or_else(|| panic!("no execution on {server}: {j}"))
}

fn pair(server: &str, status: &str) -> (String, String) {
    (server.to_string(), status.to_string())
}

#[tokio::test]
async fn min_success_makes_a_fan_out_partial_or_failed() {
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    let _hosts = hosts(&s, "ms", 3, "ms", dir.path());
    let script = "script: |\n  if [ \"$CRONIUM_SERVER\" = ms1 ]; then echo broken >&2; exit 4; fi\n  echo fine\n";
    for (name, min) in [("min-two", "2"), ("min-sixty", "'60%'"), ("min-all", "3")] {
        s.apply_yaml(&format!(
            "name: {name}\ntype: bash\ntarget: {{ tags: [ms], min_success: {min} }}\n{script}"
        ))
        .await;
    }
    // Without min_success, today's rule: one success makes it partial.
    s.apply_yaml(&format!(
        "name: min-none\ntype: bash\ntarget: {{ tags: [ms] }}\n{script}"
    ))
    .await;
    let mut ids = Vec::new();
    for name in ["min-two", "min-sixty", "min-all", "min-none"] {
        ids.push((name, s.run_event(name, None).await));
    }
    for &(name, id) in &ids {
        let j = s.wait_job(id, Duration::from_secs(90)).await;
        let want = if name == "min-all" {
            "failed"
        } else {
            "partial"
        };
        assert_eq!(j["status"], want, "{name}: {j}");
        assert_eq!(
            statuses(&j),
            vec![
                pair("ms0", "succeeded"),
                pair("ms1", "failed"),
                pair("ms2", "succeeded")
            ],
            "{name}"
        );
        if name == "min-all" {
            let error = j["error"].as_str().unwrap_or_default();
            assert!(
                error.contains(
                    "2 of 3 servers succeeded (not: ms1), fewer than target.min_success (3)"
                ),
                "{error}"
            );
        }
    }

    // Only the failed server runs again, through the API the CLI calls: the new job's one
    // execution names it, and without min_success (dropped from a retry) its failure fails it.
    let all = ids[2].1;
    let (status, r) = s
        .api(
            "POST",
            &format!("/api/v1/jobs/{all}/retry"),
            Some(json!({"failed_only": true})),
        )
        .await;
    assert_eq!(status, 201, "{r}");
    let again = r["id"].as_i64().unwrap();
    let j = s.wait_job(again, Duration::from_secs(90)).await;
    assert_eq!(statuses(&j), vec![pair("ms1", "failed")], "{j}");
    assert_eq!(j["status"], "failed", "{j}");
    assert_eq!(j["event"], "min-all", "{j}");

    // A workflow node's target override carries min_success through the same spec path.
    let wf = "name: fan-wf\nnodes:\n  - id: check\n    event: min-none\n    target: { tags: [ms], min_success: '100%' }\n";
    let v: Value = serde_saphyr::from_str(wf).unwrap();
    let (status, body) = s.api("PUT", "/api/v1/workflows/fan-wf", Some(v)).await;
    assert_eq!(status, 200, "{body}");
    let (status, r) = s.api("POST", "/api/v1/workflows/fan-wf/runs", None).await;
    assert_eq!(status, 201, "{r}");
    let run = r["id"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let job = loop {
        let (_, d) = s
            .api("GET", &format!("/api/v1/workflow-runs/{run}"), None)
            .await;
        if let Some(id) = d["nodes"][0]["job_id"].as_i64() {
            break id;
        }
        assert!(Instant::now() < deadline, "no job for the node: {d}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let j = s.wait_job(job, Duration::from_secs(90)).await;
    assert_eq!(
        j["status"], "failed",
        "without the override it would be partial: {j}"
    );
    let error = j["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("fewer than target.min_success (100%)"),
        "{error}"
    );
}

#[tokio::test]
async fn a_rolling_fan_out_runs_batch_after_batch_and_stops_at_a_failed_batch() {
    let mut s = server();
    let dir = tempfile::tempdir().unwrap();
    let _hosts = hosts(&s, "roll", 4, "roll", dir.path());
    // Every server takes a while, so that two waves cannot overlap by chance.
    s.apply_yaml(
        "name: rolling\ntype: bash\ntarget: { tags: [roll], batch: 2, pause: 1s }\nscript: |\n  sleep 1\n  echo \"done on $CRONIUM_SERVER\"\n",
    )
    .await;
    let id = s.run_event("rolling", None).await;
    let j = s.wait_job(id, Duration::from_secs(90)).await;
    assert_eq!(j["status"], "succeeded", "{j}");
    // Epoch ms of an execution's RFC 3339 time.
    let at = |server: &str, field: &str| {
        let text = execution(&j, server)[field]
            .as_str()
            .unwrap_or_else(|| panic!("{server}: no {field}: {j}"));
        chrono::DateTime::parse_from_rfc3339(text)
            .unwrap_or_else(|e| panic!("{server}: {field} {text}: {e}"))
            .timestamp_millis()
    };
    let first_ended = at("roll0", "finished_at").max(at("roll1", "finished_at"));
    let second_started = at("roll2", "started_at").min(at("roll3", "started_at"));
    assert!(
        second_started >= first_ended + 1000,
        "the second batch started at {second_started}, the first ended at {first_ended} \
         (pause 1s): {j}"
    );
    eprintln!(
        "rolling: batch 2 started {} ms after batch 1 ended (pause 1s)",
        second_started - first_ended
    );
    let log = s.log_text(id).await;
    for line in [
        "batch 1 of 2: roll0, roll1",
        "pausing 1s before batch 2",
        "batch 2 of 2: roll2, roll3",
    ] {
        assert!(log.contains(line), "{line}: {log}");
    }

    // A failure in the first batch: the second never runs and is recorded, saying why.
    let marker = sshd::home_path(&format!("fanout-marker-{:08x}", rand::random::<u32>()));
    s.markers.push(marker.clone());
    s.apply_yaml(&format!(
        "name: rolling-bad\ntype: bash\ntarget: {{ tags: [roll], batch: '50%' }}\nscript: |\n  if [ \"$CRONIUM_SERVER\" = roll1 ] && [ ! -e {} ]; then exit 3; fi\n  echo ok\n",
        marker.display()
    ))
    .await;
    let bad = s.run_event("rolling-bad", None).await;
    let j = s.wait_job(bad, Duration::from_secs(90)).await;
    assert_eq!(j["status"], "partial", "{j}");
    assert_eq!(
        statuses(&j),
        vec![
            pair("roll0", "succeeded"),
            pair("roll1", "failed"),
            pair("roll2", "cancelled"),
            pair("roll3", "cancelled")
        ]
    );
    for server in ["roll2", "roll3"] {
        let x = execution(&j, server);
        assert_eq!(x["note"], "not run: batch 1 failed", "{x}");
        assert!(x["started_at"].is_null(), "never started: {x}");
    }
    let log = s.log_text(bad).await;
    assert!(
        log.contains("batch 1 failed (roll1); the 1 later batch(es) do not run"),
        "{log}"
    );

    // The job page offers the retry of the failed servers.
    assert!(
        job_page(&s, bad).await.contains("id=\"retry-failed\""),
        "no Retry failed servers button"
    );

    // Retry only what did not succeed: roll1 (failed) and roll2, roll3 (not run), still in
    // batches of 50% (of the three), with the same version: a newer one (which would fail
    // roll1 whatever the marker says) is not what a retry runs.
    std::fs::write(&marker, "").unwrap();
    s.apply_yaml(
        "name: rolling-bad\ntype: bash\ntarget: { tags: [roll], batch: '50%' }\nscript: |\n  if [ \"$CRONIUM_SERVER\" = roll1 ]; then exit 5; fi\n",
    )
    .await;
    let o = s.cli(&["job", "retry", &bad.to_string(), "--failed-only"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let again: i64 = stdout(&o).trim().parse().expect("the new job's id");
    assert_ne!(again, bad);
    let j = s.wait_job(again, Duration::from_secs(90)).await;
    assert_eq!(j["status"], "succeeded", "{j}");
    assert_eq!(j["event_version"], 1, "{j}");
    assert_eq!(
        statuses(&j),
        vec![
            pair("roll1", "succeeded"),
            pair("roll2", "succeeded"),
            pair("roll3", "succeeded")
        ]
    );
    let log = s.log_text(again).await;
    assert!(log.contains("batch 1 of 2: roll1, roll2"), "{log}");
    assert!(!job_page(&s, again).await.contains("id=\"retry-failed\""));
    // The retry is in the audit log with what it re-ran.
    let (_, audit) = s.api("GET", "/api/v1/audit?action=job.retry", None).await;
    assert!(audit.to_string().contains("roll3"), "{audit}");

    // Refused: nothing failed in the retry, and a job that has not ended.
    let o = s.cli(&["job", "retry", &again.to_string(), "--failed-only"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains(&format!("job {again} has no failed server")),
        "{}",
        stderr(&o)
    );
    s.apply_yaml(
        "name: rolling-slow\ntype: bash\ntarget: { tags: [roll], batch: 1, pause: 60s }\nscript: echo ok\n",
    )
    .await;
    let slow = s.run_event("rolling-slow", None).await;
    s.wait_for("the pause", Duration::from_secs(60), || async {
        s.log_text(slow).await.contains("pausing 1m")
    })
    .await;
    let o = s.cli(&["job", "retry", &slow.to_string(), "--failed-only"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("has not ended"), "{}", stderr(&o));

    // A cancel during the pause stops the job promptly: the request wakes the agent's
    // heartbeat at once (the default lease, 30 s, beats every 10 s), the later batches
    // recorded as not run.
    let asked = Instant::now();
    let o = s.cli(&["job", "cancel", &slow.to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j = s.wait_job(slow, Duration::from_secs(5)).await;
    eprintln!(
        "rolling: cancelled during a 60 s pause, ended {:?} after the request",
        asked.elapsed()
    );
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(execution(&j, "roll0")["status"], "succeeded", "{j}");
    for server in ["roll1", "roll2", "roll3"] {
        let x = execution(&j, server);
        assert_eq!(x["status"], "cancelled", "{x}");
        assert_eq!(x["note"], "not run: the job was cancelled", "{x}");
    }
}

#[tokio::test]
async fn bad_fan_out_values_are_refused_naming_the_field_and_nothing_is_stored() {
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    let _hosts = hosts(&s, "bad", 2, "bad", dir.path());
    for (target, field) in [
        (
            json!({"tags": ["bad"], "min_success": 0}),
            "target.min_success",
        ),
        (
            json!({"tags": ["bad"], "min_success": "0%"}),
            "target.min_success",
        ),
        (
            json!({"tags": ["bad"], "min_success": "101%"}),
            "target.min_success",
        ),
        (
            json!({"tags": ["bad"], "min_success": "abc"}),
            "target.min_success",
        ),
        (
            json!({"tags": ["bad"], "min_success": -1}),
            "target.min_success",
        ),
        (
            json!({"servers": ["bad0"], "min_success": 2}),
            "target.min_success",
        ),
        (json!({"tags": ["bad"], "batch": 0}), "target.batch"),
        (json!({"tags": ["bad"], "pause": "5s"}), "target.pause"),
    ] {
        let body = json!({"name": "bad-one", "type": "bash", "script": "echo", "target": target});
        let (status, e) = s.api("PUT", "/api/v1/events/bad-one", Some(body)).await;
        assert_eq!(status, 422, "{target}: {e}");
        assert_eq!(e["error"]["field"], field, "{target}: {e}");
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains(field),
            "{target}: {e}"
        );
        let (status, _) = s.api("GET", "/api/v1/events/bad-one", None).await;
        assert_eq!(status, 404, "{target}: stored");
    }
    // Through the CLI, from a YAML file.
    let file = write(
        dir.path(),
        "bad.yaml",
        "name: bad-file\ntype: bash\nscript: echo\ntarget: { tags: [bad], min_success: '0%' }\n",
    );
    let o = s.cli(&["event", "apply", "-f", file.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("target.min_success"), "{}", stderr(&o));
    let (status, _) = s.api("GET", "/api/v1/events/bad-file", None).await;
    assert_eq!(status, 404);

    // A count larger than the servers the tags resolve to is known when the job runs.
    s.apply_yaml(
        "name: too-many\ntype: bash\ntarget: { tags: [bad], min_success: 3 }\nscript: echo\n",
    )
    .await;
    let id = s.run_event("too-many", None).await;
    let j = s.wait_job(id, Duration::from_secs(60)).await;
    assert_eq!(j["status"], "failed", "{j}");
    assert!(
        j["error"]
            .as_str()
            .unwrap_or_default()
            .contains("target.min_success: 3 is more than the 2 server(s)"),
        "{j}"
    );
    assert_eq!(j["executions"], json!([]), "{j}");
    // A job that is not a fan-out cannot be retried failed-only.
    s.apply_yaml("name: local-one\ntype: bash\nscript: exit 1\n")
        .await;
    let local = s.run_event("local-one", None).await;
    s.wait_job(local, Duration::from_secs(60)).await;
    let o = s.cli(&["job", "retry", &local.to_string(), "--failed-only"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("is not a fan-out"), "{}", stderr(&o));
}
