//! Writes and their answers are atomic, through the real server on SQLite and PostgreSQL:
//! concurrent runs at an event's `max_executions` cannot both pass, and concurrent applies of
//! one event each report the version they wrote, as a user running `cronium event apply` sees it.

mod support;

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::{json, Value};
use support::*;

async fn on_postgres() -> Server {
    Server::start_with(ServerOpts {
        database_url: Some(fresh_pg_database().await),
        ..Default::default()
    })
}

/// Asks for `n` runs of `name` at once; returns the HTTP status and body of each answer.
async fn concurrent_runs(s: &Server, name: &str, n: usize) -> Vec<(u16, Value)> {
    let path = format!("/api/v1/events/{name}/run");
    let runs = (0..n).map(|_| s.api("POST", &path, Some(json!({}))));
    futures::future::join_all(runs).await
}

async fn runs_at_the_limit_cannot_both_pass(s: Server) {
    s.apply_yaml("name: once\ntype: bash\nmax_executions: 1\nscript: echo once\n")
        .await;
    s.apply_yaml("name: thrice\ntype: bash\nmax_executions: 3\nscript: echo thrice\n")
        .await;
    for (name, limit, asked) in [("once", 1, 2), ("thrice", 3, 8)] {
        let answers = concurrent_runs(&s, name, asked).await;
        let created = answers.iter().filter(|(st, _)| *st == 201).count();
        let refused: Vec<&Value> = answers
            .iter()
            .filter(|(st, _)| *st == 409)
            .map(|(_, b)| b)
            .collect();
        assert_eq!(created, limit, "{name}: {answers:?}");
        assert_eq!(refused.len(), asked - limit, "{name}: {answers:?}");
        for body in refused {
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("paused") && message.contains(&format!("limit of {limit}")),
                "{name}: the refusal says why: {body}"
            );
            assert_eq!(body["error"]["field"], "max_executions", "{body}");
        }
        let (_, event) = s.api("GET", &format!("/api/v1/events/{name}"), None).await;
        assert_eq!(event["status"], "paused", "{event}");
        let (_, jobs) = s
            .api("GET", &format!("/api/v1/jobs?event={name}"), None)
            .await;
        assert_eq!(jobs.as_array().map(Vec::len), Some(limit), "{jobs}");
    }
}

#[tokio::test]
async fn concurrent_runs_at_the_limit_cannot_both_pass_on_sqlite() {
    runs_at_the_limit_cannot_both_pass(Server::start()).await;
}

#[tokio::test]
async fn concurrent_runs_at_the_limit_cannot_both_pass_on_postgres() {
    runs_at_the_limit_cannot_both_pass(on_postgres().await).await;
}

/// Ten users apply ten different versions of one new event at once with the CLI. Regression:
/// the API re-read the event after writing, so all ten answered "version 10".
fn applies_each_report_the_version_they_wrote(s: &Server) {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<_> = (0..10)
        .map(|i| {
            write(
                dir.path(),
                &format!("shared-{i}.yaml"),
                &format!("name: shared\ntype: bash\nscript: echo {i}\n"),
            )
        })
        .collect();
    let children: Vec<_> = files
        .iter()
        .map(|f| {
            Command::new(cronium_bin())
                .args(["event", "apply", "-f"])
                .arg(f)
                .env("CRONIUM_URL", &s.url)
                .env("CRONIUM_TOKEN", &s.token)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn cronium event apply")
        })
        .collect();
    let mut versions = BTreeSet::new();
    for child in children {
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        // "event shared created (version 1)" / "event shared updated (version 7)"
        let out = stdout(&o);
        let version: i64 = out
            .split("(version ")
            .nth(1)
            .and_then(|rest| rest.split([')', ',']).next())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no version in {out:?}"));
        assert!(versions.insert(version), "version {version} reported twice");
    }
    assert_eq!(versions, (1..=10).collect::<BTreeSet<i64>>());
}

/// Ten `PUT /api/v1/events/NAME` at once, each with its own script: each answer is the row that
/// request wrote (its own script, its own version), and the versions are exactly 1..=10.
async fn puts_each_answer_the_row_they_wrote(s: &Server) {
    let puts = (0..10).map(|i| {
        let spec = json!({"type": "bash", "script": format!("echo {i}")});
        async move {
            let (status, body) = s.api("PUT", "/api/v1/events/direct", Some(spec)).await;
            (i, status, body)
        }
    });
    let mut versions = BTreeSet::new();
    for (i, status, body) in futures::future::join_all(puts).await {
        assert_eq!(status, 200, "{body}");
        let event = &body["event"];
        assert_eq!(event["spec"]["script"], format!("echo {i}"), "{body}");
        let version = event["version"].as_i64().expect("version");
        assert!(versions.insert(version), "version {version} reported twice");
    }
    assert_eq!(versions, (1..=10).collect::<BTreeSet<i64>>());
}

#[tokio::test]
async fn concurrent_applies_each_report_the_version_they_wrote_on_sqlite() {
    let s = Server::start();
    puts_each_answer_the_row_they_wrote(&s).await;
    applies_each_report_the_version_they_wrote(&s);
}

#[tokio::test]
async fn concurrent_applies_each_report_the_version_they_wrote_on_postgres() {
    let s = on_postgres().await;
    puts_each_answer_the_row_they_wrote(&s).await;
    applies_each_report_the_version_they_wrote(&s);
}
