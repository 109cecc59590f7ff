//! Signed webhooks against the real binary: a hook's secret shown once by `cronium event hook`,
//! a signed request runs the event with its body as input; every bad request (bad, missing or
//! stale signature, a replay, an unknown or disabled hook, a paused event, an oversize body,
//! bad JSON) gets its status and runs nothing; GitHub's form with a captured-style `push`
//! payload; rotation; a workflow's hook; the secret never at rest in clear.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

/// A GitHub `push` event as GitHub sends it (shortened: the fields a script reads).
const GITHUB_PUSH: &str = r#"{
  "ref": "refs/heads/main",
  "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
  "after": "76ae82c7b1a177c8d03f9e96e0adf2466113728f",
  "repository": {
    "id": 186853002,
    "node_id": "MDEwOlJlcG9zaXRvcnkxODY4NTMwMDI=",
    "name": "hello-world",
    "full_name": "octo-org/hello-world",
    "private": false,
    "owner": {"name": "octo-org", "login": "octo-org", "id": 6811672, "type": "Organization"},
    "html_url": "https://github.com/octo-org/hello-world",
    "default_branch": "main"
  },
  "pusher": {"name": "octocat", "email": "octocat@github.com"},
  "sender": {"login": "octocat", "id": 583231, "type": "User"},
  "created": false,
  "deleted": false,
  "forced": false,
  "compare": "https://github.com/octo-org/hello-world/compare/6113728f27ae...76ae82c7b1a1",
  "commits": [
    {
      "id": "76ae82c7b1a177c8d03f9e96e0adf2466113728f",
      "tree_id": "b4f0a8e2f2b4c2d3f4e5a6b7c8d9e0f1a2b3c4d5",
      "distinct": true,
      "message": "Fix the build \u2014 and say \"why\"",
      "timestamp": "2026-12-01T10:44:12+01:00",
      "url": "https://github.com/octo-org/hello-world/commit/76ae82c7b1a177c8d03f9e96e0adf2466113728f",
      "author": {"name": "Mona Octocat", "email": "mona@github.com", "username": "mona"},
      "committer": {"name": "GitHub", "email": "noreply@github.com", "username": "web-flow"},
      "added": [], "removed": [], "modified": ["README.md"]
    }
  ],
  "head_commit": {
    "id": "76ae82c7b1a177c8d03f9e96e0adf2466113728f",
    "message": "Fix the build \u2014 and say \"why\"",
    "timestamp": "2026-12-01T10:44:12+01:00"
  }
}"#;

/// An event whose output is its input: what the run got.
const ECHO_EVENT: &str = r#"
name: deploy
type: python
webhook: true
script: |
  import cronium
  cronium.output({"got": cronium.input()})
"#;

async fn post_hook(
    s: &Server,
    name: &str,
    body: &[u8],
    headers: &[(&str, String)],
) -> (u16, Value) {
    let mut rb = s
        .http
        .post(format!("{}/hooks/{name}", s.url))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in headers {
        rb = rb.header(*k, v);
    }
    let resp = rb.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn signed(secret: &str, ts: i64, body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        ("X-Cronium-Timestamp", ts.to_string()),
        ("X-Cronium-Signature", cronium_signature(secret, ts, body)),
    ]
}

/// A request to a hook: what it is, the hook, the body, the headers, the status it gets.
type Case = (&'static str, &'static str, Vec<u8>, Headers, u16);
type Headers = Vec<(&'static str, String)>;

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

async fn job_count(s: &Server) -> usize {
    let (status, jobs) = s.api("GET", "/api/v1/jobs?limit=1000", None).await;
    assert_eq!(status, 200, "{jobs}");
    jobs.as_array().map_or(0, Vec::len)
}

/// `cronium event hook NAME`: (url, secret when shown).
fn hook_cli(s: &Server, kind: &str, name: &str, rotate: bool) -> (String, Option<String>) {
    let mut args = vec![kind, "hook", name];
    if rotate {
        args.push("--rotate");
    }
    let out = s.cli(&args);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_string())
    };
    let url = field("url:").expect("url line");
    let secret = field("secret:").filter(|v| v.starts_with("cwh_"));
    (url, secret)
}

#[tokio::test]
async fn a_signed_request_runs_the_event_and_every_bad_one_runs_nothing() {
    let s = Server::start();
    s.apply_yaml(ECHO_EVENT).await;
    let (url, secret) = hook_cli(&s, "event", "deploy", false);
    assert_eq!(url, format!("{}/hooks/deploy", s.url));
    let secret = secret.expect("the secret is shown the first time");
    let (_, again) = hook_cli(&s, "event", "deploy", false);
    assert_eq!(again, None, "and only the first time");

    // A good request: 202 with the job, which runs with the body as its input.
    let body = br#"{"version": "1.4.2", "env": "prod"}"#;
    // Signed 10 s ago (well inside the window), so that a new signature below differs.
    let (status, r) = post_hook(&s, "deploy", body, &signed(&secret, now() - 10, body)).await;
    assert_eq!(status, 202, "{r}");
    let job_id = r["job_id"].as_i64().expect("job_id");
    let job = s.wait_job(job_id, Duration::from_secs(60)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["trigger"], "webhook");
    assert_eq!(
        job["output"]["got"],
        json!({"version": "1.4.2", "env": "prod"})
    );
    let jobs = job_count(&s).await;
    assert_eq!(jobs, 1);

    // Every bad request: its status, and nothing run.
    let other = br#"{"version": "9"}"#;
    let ts = now();
    let cases: Vec<Case> = vec![
        ("no signature", "deploy", other.to_vec(), vec![], 401),
        (
            "a signature made with another secret",
            "deploy",
            other.to_vec(),
            signed("cwh_not_the_secret", ts, other),
            401,
        ),
        (
            "a signature of another body",
            "deploy",
            other.to_vec(),
            vec![
                ("X-Cronium-Timestamp", ts.to_string()),
                ("X-Cronium-Signature", cronium_signature(&secret, ts, body)),
            ],
            401,
        ),
        (
            "a timestamp moved after signing",
            "deploy",
            other.to_vec(),
            vec![
                ("X-Cronium-Timestamp", (ts + 1).to_string()),
                ("X-Cronium-Signature", cronium_signature(&secret, ts, other)),
            ],
            401,
        ),
        (
            "a stale timestamp (6 minutes old)",
            "deploy",
            other.to_vec(),
            signed(&secret, ts - 360, other),
            401,
        ),
        (
            "a timestamp from the future",
            "deploy",
            other.to_vec(),
            signed(&secret, ts + 360, other),
            401,
        ),
        (
            "the same body signed anew (another timestamp)",
            "deploy",
            body.to_vec(),
            signed(&secret, ts, body),
            202,
        ),
        (
            "the same request again",
            "deploy",
            body.to_vec(),
            signed(&secret, ts, body),
            401,
        ),
        (
            "an unknown hook",
            "nope",
            other.to_vec(),
            signed(&secret, ts, other),
            404,
        ),
        (
            "bad JSON",
            "deploy",
            b"{not json".to_vec(),
            signed(&secret, ts, b"{not json"),
            400,
        ),
        (
            "JSON that is not an object",
            "deploy",
            b"[1, 2]".to_vec(),
            signed(&secret, ts, b"[1, 2]"),
            400,
        ),
    ];
    let mut expected_jobs = jobs;
    for (what, name, body, headers, want) in cases {
        let (status, r) = post_hook(&s, name, &body, &headers).await;
        assert_eq!(status, want, "{what}: {r}");
        if want == 202 {
            expected_jobs += 1;
            s.wait_job(r["job_id"].as_i64().expect("job"), Duration::from_secs(60))
                .await;
        } else {
            assert!(
                r["error"]["message"].is_string(),
                "{what}: an error in the one shape: {r}"
            );
        }
        assert_eq!(job_count(&s).await, expected_jobs, "{what}: nothing run");
    }

    // Over 1 MiB: 413 before anything is read into a run.
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(1024 * 1024));
    let (status, _) = post_hook(
        &s,
        "deploy",
        big.as_bytes(),
        &signed(&secret, now(), big.as_bytes()),
    )
    .await;
    assert_eq!(status, 413);

    // A webhook that is not enabled answers as an unknown hook does.
    s.apply_yaml("name: plain\ntype: bash\nscript: echo hi\n")
        .await;
    let (status, r) = post_hook(&s, "plain", other, &signed(&secret, now(), other)).await;
    assert_eq!(status, 404, "{r}");
    let (_, r_unknown) = post_hook(&s, "nope", other, &signed(&secret, now(), other)).await;
    assert_eq!(r, r_unknown, "the same answer: no oracle");
    let out = s.cli(&["event", "hook", "plain"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("webhook: true"), "{}", stdout(&out));

    // Paused: 409, nothing run; active again: it runs.
    s.apply_yaml(&format!("{ECHO_EVENT}status: paused\n")).await;
    let b = br#"{"paused": true}"#;
    let (status, r) = post_hook(&s, "deploy", b, &signed(&secret, now(), b)).await;
    assert_eq!(status, 409, "{r}");
    assert_eq!(job_count(&s).await, expected_jobs);
    s.apply_yaml(ECHO_EVENT).await;
    let b = br#"{"paused": false}"#;
    let (status, r) = post_hook(&s, "deploy", b, &signed(&secret, now(), b)).await;
    assert_eq!(status, 202, "the same secret after re-applying: {r}");
    expected_jobs += 1;
    s.wait_job(r["job_id"].as_i64().expect("job"), Duration::from_secs(60))
        .await;

    // Rotation: a new secret shown once; the old one stops working at once.
    let (_, rotated) = hook_cli(&s, "event", "deploy", true);
    let rotated = rotated.expect("a rotation shows the new secret");
    assert_ne!(rotated, secret);
    let b = br#"{"after": "rotation"}"#;
    let (status, _) = post_hook(&s, "deploy", b, &signed(&secret, now(), b)).await;
    assert_eq!(status, 401, "the old secret");
    let (status, r) = post_hook(&s, "deploy", b, &signed(&rotated, now(), b)).await;
    assert_eq!(status, 202, "{r}");
    expected_jobs += 1;
    s.wait_job(r["job_id"].as_i64().expect("job"), Duration::from_secs(60))
        .await;
    assert_eq!(job_count(&s).await, expected_jobs);

    // Encrypted at rest.
    s.assert_not_at_rest(&secret);
    s.assert_not_at_rest(&rotated);
}

#[tokio::test]
async fn a_github_push_with_its_signature_runs_with_the_whole_payload() {
    let s = Server::start();
    s.apply_yaml(ECHO_EVENT).await;
    let (_, secret) = hook_cli(&s, "event", "deploy", false);
    let secret = secret.expect("secret");
    let body = GITHUB_PUSH.as_bytes();
    let headers = |delivery: &str, sig: String| {
        vec![
            ("X-GitHub-Event", "push".to_string()),
            ("X-GitHub-Delivery", delivery.to_string()),
            ("X-GitHub-Hook-ID", "292430182".to_string()),
            ("User-Agent", "GitHub-Hookshot/044aadd".to_string()),
            ("X-Hub-Signature-256", sig),
        ]
    };
    let delivery = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
    let (status, r) = post_hook(
        &s,
        "deploy",
        body,
        &headers(delivery, github_signature(&secret, body)),
    )
    .await;
    assert_eq!(status, 202, "{r}");
    let job = s
        .wait_job(r["job_id"].as_i64().expect("job"), Duration::from_secs(60))
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let payload: Value = serde_json::from_str(GITHUB_PUSH).expect("payload");
    assert_eq!(
        job["output"]["got"], payload,
        "the whole payload is the input"
    );
    assert_eq!(job["output"]["got"]["ref"], "refs/heads/main");

    // The same delivery again: refused by its id. Another body under a wrong signature, or
    // without a delivery id: refused.
    let (status, _) = post_hook(
        &s,
        "deploy",
        body,
        &headers(delivery, github_signature(&secret, body)),
    )
    .await;
    assert_eq!(status, 401, "a replayed delivery");
    let (status, _) = post_hook(
        &s,
        "deploy",
        body,
        &headers("another-delivery", github_signature("wrong", body)),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = post_hook(
        &s,
        "deploy",
        body,
        &[("X-Hub-Signature-256", github_signature(&secret, body))],
    )
    .await;
    assert_eq!(status, 401, "no delivery id");
    assert_eq!(job_count(&s).await, 1);
}

#[tokio::test]
async fn a_workflow_hook_starts_a_run() {
    let s = Server::start();
    s.apply_yaml("name: step\ntype: bash\nscript: echo step\n")
        .await;
    let wf = s.data_path("../release.yaml");
    std::fs::write(
        &wf,
        "name: release\nwebhook: true\nnodes:\n  - id: a\n    event: step\n",
    )
    .expect("write workflow");
    let out = s.cli(&["workflow", "apply", "-f", wf.to_str().expect("path")]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("cronium workflow hook release"),
        "the apply says where the secret is: {}",
        stdout(&out)
    );
    let (url, secret) = hook_cli(&s, "workflow", "release", false);
    assert_eq!(url, format!("{}/hooks/release", s.url));
    let secret = secret.expect("secret");
    let body = br#"{"version": "2"}"#;
    let (status, r) = post_hook(&s, "release", body, &signed(&secret, now(), body)).await;
    assert_eq!(status, 202, "{r}");
    let run = r["workflow_run_id"].as_i64().expect("workflow_run_id");
    s.wait_for("the run to end", Duration::from_secs(60), || async {
        let (_, r) = s
            .api("GET", &format!("/api/v1/workflow-runs/{run}"), None)
            .await;
        r["run"]["status"] == "succeeded"
    })
    .await;
    let (_, r) = s
        .api("GET", &format!("/api/v1/workflow-runs/{run}"), None)
        .await;
    assert_eq!(r["run"]["input"], json!({"version": "2"}), "{r}");
    assert_eq!(r["run"]["trigger"], "webhook");
}
