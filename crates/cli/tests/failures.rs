//! Failure classification through the real server: a job that can never succeed (its event was
//! deleted, its stored spec is invalid, a secret cannot be decrypted) ends `failed` after one
//! attempt with a clear error, although its event allows retries; a failing script uses them
//! (see also api.rs `failed_runs_are_retried_with_backoff`).

mod support;

use std::time::Duration;

use serde_json::json;
use sqlx::Connection;
use support::*;

/// The server's SQLite database, opened beside it (WAL: both may write), to damage what the
/// server itself never would.
async fn database(s: &Server) -> sqlx::SqliteConnection {
    let url = format!("sqlite:{}", s.data_path("cronium.db").display());
    sqlx::SqliteConnection::connect(&url)
        .await
        .expect("open the server's database")
}

/// Asserts the job ended `failed` in its first attempt, naming `reason`, and said in its log that
/// it was not retried.
async fn assert_failed_once(s: &Server, id: i64, reason: &str) {
    let job = s.wait_job(id, Duration::from_secs(30)).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["attempt"], 1, "a fatal failure consumed a retry: {job}");
    assert_eq!(job["max_attempts"], 3, "{job}");
    let error = job["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(reason),
        "error {error:?} should name {reason:?}"
    );
    let log = s.log_text(id).await;
    assert!(log.contains("not retried"), "{log}");
}

const RETRIES: &str = "retries: { max_attempts: 3, backoff: 100ms }\n";

#[tokio::test]
async fn a_corrupt_stored_spec_fails_once_without_retries() {
    let s = Server::start();
    s.apply_yaml(&format!(
        "name: corrupt\ntype: bash\n{RETRIES}script: echo hi\n"
    ))
    .await;
    // The version a job runs is damaged (the event's current row stays valid, so it can be run).
    let mut db = database(&s).await;
    sqlx::query(
        "UPDATE event_versions SET spec = '{\"name\": \"corrupt\", \"type\": \"cobol\"}' \
         WHERE event_id = (SELECT id FROM events WHERE name = 'corrupt')",
    )
    .execute(&mut db)
    .await
    .unwrap();
    db.close().await.unwrap();
    let id = s.run_event("corrupt", None).await;
    assert_failed_once(&s, id, "stored event is invalid").await;
}

#[tokio::test]
async fn an_undecryptable_secret_fails_once_without_retries() {
    let s = Server::start();
    let (status, body) = s
        .api(
            "PUT",
            "/api/v1/variables/api_key",
            Some(json!({"value": "s3cr3t", "secret": true})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    s.apply_yaml(&format!(
        "name: needs-secret\ntype: bash\n{RETRIES}script: echo hi\n"
    ))
    .await;
    // A secret is bound to its row: under another name its ciphertext no longer decrypts, as
    // with a damaged row or a changed key.
    let mut db = database(&s).await;
    sqlx::query("UPDATE variables SET name = 'moved_key' WHERE name = 'api_key'")
        .execute(&mut db)
        .await
        .unwrap();
    db.close().await.unwrap();
    let id = s.run_event("needs-secret", None).await;
    assert_failed_once(&s, id, "secret variable moved_key").await;
}

#[tokio::test]
async fn a_job_whose_event_was_deleted_fails_once_without_retries() {
    let s = Server::start();
    let dir = shared_tempdir();
    let release = dir.path().join("release");
    // overlap: queue keeps the second job queued while the first one runs, so the event can be
    // deleted before the second one is claimed.
    s.apply_yaml(&format!(
        "name: doomed\ntype: bash\noverlap: queue\n{RETRIES}script: |\n  while [ ! -e {} ]; do sleep 0.05; done\n  echo released\n",
        release.display()
    ))
    .await;
    let first = s.run_event("doomed", None).await;
    s.wait_for("the first job to run", Duration::from_secs(20), || async {
        s.job(first).await["status"] == "running"
    })
    .await;
    let second = s.run_event("doomed", None).await;
    assert_eq!(s.job(second).await["status"], "queued");
    let (status, _) = s.api("DELETE", "/api/v1/events/doomed", None).await;
    assert_eq!(status, 204);
    assert_failed_once(&s, second, "no longer exists").await;
    // The first job had its spec already: it runs to its end.
    std::fs::write(&release, "").unwrap();
    let done = s.wait_job(first, Duration::from_secs(20)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
}

#[tokio::test]
async fn a_failing_script_uses_its_retries() {
    let s = Server::start();
    s.apply_yaml(&format!(
        "name: flaky\ntype: bash\n{RETRIES}script: exit 3\n"
    ))
    .await;
    let id = s.run_event("flaky", None).await;
    let job = s.wait_job(id, Duration::from_secs(30)).await;
    assert_eq!(
        (
            job["status"].as_str(),
            job["attempt"].as_i64(),
            job["exit_code"].as_i64()
        ),
        (Some("failed"), Some(3), Some(3)),
        "{job}"
    );
}
