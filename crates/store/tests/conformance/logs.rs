//! Logs: batched appends fenced by the claim, paging by seq, max seq, conflicts, bulk volume.

use cronium_model::ExecutionStatus;
use cronium_store::{JobOutcome, NewLogLine, Store, StoreError};
use serde_json::json;

use crate::harness::{job, Ctx};

conformance!(
    logs_page_and_max_seq,
    duplicate_seq_writes_nothing,
    hundred_thousand_lines_in_batches,
    stale_worker_lines_refused_after_recovery_new_owner_kept,
    lines_refused_unless_the_attempt_is_running,
);

/// Enqueues a job and claims it as `worker` (attempt 1).
async fn claimed(s: &Store, name: &str, worker: &str) -> i64 {
    let j = s.enqueue(&job(name, 0), 0).await.unwrap();
    let c = s.claim(worker, 60_000, 0).await.unwrap().unwrap();
    assert_eq!(c.id, j.id);
    j.id
}

fn line(seq: i64, text: &str) -> NewLogLine {
    NewLogLine {
        execution_id: None,
        seq,
        stream: if seq % 2 == 0 { "stderr" } else { "stdout" }.into(),
        line: text.into(),
        ts: 1000 + seq,
    }
}

async fn logs_page_and_max_seq(t: Ctx) {
    let s = &t.store;
    let j = s.enqueue(&job("l", 0), 0).await.unwrap();
    let other = s.enqueue(&job("o", 0), 0).await.unwrap();
    assert_eq!(s.max_log_seq(j.id).await.unwrap(), 0);
    assert!(s.read_logs(j.id, 0, 10).await.unwrap().is_empty());
    assert!(s.append_logs(j.id, "w", 1, &[]).await.unwrap());

    let exec = {
        s.claim("w", 1000, 0).await.unwrap().unwrap();
        s.create_execution(j.id, "w", 1, None, ExecutionStatus::Running, 0)
            .await
            .unwrap()
            .unwrap()
    };
    s.claim("w", 1000, 0).await.unwrap().unwrap();
    let mut batch: Vec<NewLogLine> = (1..=5).map(|i| line(i, &format!("line {i}"))).collect();
    batch[0].execution_id = Some(exec.id);
    batch[1].line = "with \0 nul, ünïcödé and \"quotes\"".into();
    assert!(s.append_logs(j.id, "w", 1, &batch).await.unwrap());
    assert!(s
        .append_logs(j.id, "w", 1, &[line(6, "six"), line(8, "eight")])
        .await
        .unwrap());
    assert!(s
        .append_logs(other.id, "w", 1, &[line(1, "other job")])
        .await
        .unwrap());

    assert_eq!(s.max_log_seq(j.id).await.unwrap(), 8);
    assert_eq!(s.max_log_seq(other.id).await.unwrap(), 1);
    let page = s.read_logs(j.id, 0, 3).await.unwrap();
    assert_eq!(page.iter().map(|l| l.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(
        (
            page[0].job_id,
            page[0].execution_id,
            page[0].stream.as_str(),
            page[0].ts
        ),
        (j.id, Some(exec.id), "stdout", 1001)
    );
    assert_eq!(page[1].line, "with \u{FFFD} nul, ünïcödé and \"quotes\"");
    let rest = s.read_logs(j.id, 3, 100).await.unwrap();
    assert_eq!(rest.iter().map(|l| l.seq).collect::<Vec<_>>(), [4, 5, 6, 8]);
    assert_eq!(rest[3].line, "eight");
    assert!(s.read_logs(j.id, 8, 100).await.unwrap().is_empty());
    assert!(
        matches!(s.read_logs(j.id, 0, 0).await, Err(StoreError::Invalid(m)) if m.starts_with("limit"))
    );
}

async fn duplicate_seq_writes_nothing(t: Ctx) {
    let s = &t.store;
    let j = claimed(s, "d", "w").await;
    assert!(s
        .append_logs(j, "w", 1, &[line(1, "a"), line(2, "b")])
        .await
        .unwrap());
    // The batch spans several chunks and its last line collides: nothing of it is kept.
    let mut batch: Vec<NewLogLine> = (3..1200).map(|i| line(i, "x")).collect();
    batch.push(line(1300, "y"));
    assert!(s.append_logs(j, "w", 1, &batch).await.unwrap());
    let colliding: Vec<NewLogLine> = (1301..2000)
        .map(|i| line(i, "z"))
        .chain([line(2000, "z")])
        .collect();
    assert!(s.append_logs(j, "w", 1, &colliding[..10]).await.unwrap());
    match s.append_logs(j, "w", 1, &colliding).await {
        Err(StoreError::Conflict(field)) => assert_eq!(field, "seq"),
        other => panic!("expected Conflict(seq), got {other:?}"),
    }
    assert_eq!(s.max_log_seq(j).await.unwrap(), 1310);
    assert_eq!(s.read_logs(j, 1310, 10).await.unwrap().len(), 0);

    for bad in [
        vec![line(5000, "a"), line(5000, "b")],
        vec![line(0, "zero")],
        vec![line(6001, "a"), line(6000, "b")],
    ] {
        assert!(
            matches!(s.append_logs(j, "w", 1, &bad).await, Err(StoreError::Invalid(m)) if m.contains(".seq"))
        );
    }
    let mut no_stream = line(7000, "a");
    no_stream.stream.clear();
    assert!(
        matches!(s.append_logs(j, "w", 1, &[no_stream]).await, Err(StoreError::Invalid(m)) if m.contains(".stream"))
    );
    assert_eq!(s.max_log_seq(j).await.unwrap(), 1310);
}

async fn hundred_thousand_lines_in_batches(t: Ctx) {
    const LINES: i64 = 100_000;
    const BATCH: i64 = 5_000;
    let s = &t.store;
    let j = claimed(s, "big", "w").await;
    let started = std::time::Instant::now();
    let mut seq = 0;
    while seq < LINES {
        let batch: Vec<NewLogLine> = (seq + 1..=seq + BATCH)
            .map(|i| {
                line(
                    i,
                    &format!("{i:08} the quick brown fox jumps over the lazy dog"),
                )
            })
            .collect();
        assert!(s.append_logs(j, "w", 1, &batch).await.unwrap());
        seq += BATCH;
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{:?}: appended {LINES} lines in {elapsed:?}",
        t.store.backend()
    );
    assert_eq!(s.max_log_seq(j).await.unwrap(), LINES);
    // Read it all back in pages: every line present, in order, none twice.
    let mut after = 0;
    let mut count = 0;
    loop {
        let page = s.read_logs(j, after, 20_000).await.unwrap();
        if page.is_empty() {
            break;
        }
        for l in &page {
            count += 1;
            assert_eq!(l.seq, count);
            assert!(l.line.starts_with(&format!("{count:08} ")));
        }
        after = page.last().unwrap().seq;
    }
    assert_eq!(count, LINES);
}

/// Item 1 of issue 10: a worker that lost its lease must not add lines after the job was
/// recovered, and can never collide with the new owner's numbering.
async fn stale_worker_lines_refused_after_recovery_new_owner_kept(t: Ctx) {
    let s = &t.store;
    let mut spec = job("stale", 0);
    spec.max_attempts = 2;
    spec.backoff_ms = 10;
    let j = s.enqueue(&spec, 0).await.unwrap();
    assert_eq!(s.claim("old", 1000, 0).await.unwrap().unwrap().id, j.id);
    assert!(s
        .append_logs(j.id, "old", 1, &[line(1, "old 1"), line(2, "old 2")])
        .await
        .unwrap());

    // The old worker stops heartbeating; its lease expires and the job is recovered.
    let recovered = s.recover_expired(2000).await.unwrap();
    assert_eq!(recovered.len(), 1);
    // Between recovery and the new claim, nobody owns the job: the old worker is refused.
    assert!(!s
        .append_logs(j.id, "old", 1, &[line(3, "old late")])
        .await
        .unwrap());
    let c = s.claim("new", 60_000, 10_000).await.unwrap().unwrap();
    assert_eq!((c.id, c.attempt), (j.id, 2));
    let next = s.max_log_seq(j.id).await.unwrap() + 1;
    assert_eq!(next, 3);
    // The old worker, unaware, keeps sending lines numbered after its own: all refused, and
    // nothing of them is stored, so the new owner's seq 3 and 4 are free.
    for late in [
        vec![line(3, "old late")],
        vec![line(4, "old later"), line(5, "old latest")],
    ] {
        assert!(!s.append_logs(j.id, "old", 1, &late).await.unwrap());
    }
    // The old worker's name with the new attempt, or the new worker with the old attempt:
    // neither is the claim.
    assert!(!s
        .append_logs(j.id, "old", 2, &[line(3, "x")])
        .await
        .unwrap());
    assert!(!s
        .append_logs(j.id, "new", 1, &[line(3, "x")])
        .await
        .unwrap());
    assert!(s
        .append_logs(
            j.id,
            "new",
            2,
            &[line(next, "new 3"), line(next + 1, "new 4")]
        )
        .await
        .unwrap());
    assert!(!s
        .append_logs(j.id, "old", 1, &[line(5, "old after")])
        .await
        .unwrap());

    let all = s.read_logs(j.id, 0, 100).await.unwrap();
    let got: Vec<(i64, &str)> = all.iter().map(|l| (l.seq, l.line.as_str())).collect();
    assert_eq!(
        got,
        [(1, "old 1"), (2, "old 2"), (3, "new 3"), (4, "new 4")]
    );
}

/// Lines are stored only while the attempt runs: not for a job never claimed, nor after its
/// worker finished it or gave it back for a retry, nor for a job that does not exist.
async fn lines_refused_unless_the_attempt_is_running(t: Ctx) {
    let s = &t.store;
    let queued = s.enqueue(&job("queued", 1_000_000), 0).await.unwrap();
    assert!(!s
        .append_logs(queued.id, "w", 0, &[line(1, "never claimed")])
        .await
        .unwrap());
    assert!(!s
        .append_logs(queued.id, "w", 1, &[line(1, "never claimed")])
        .await
        .unwrap());
    assert!(!s
        .append_logs(9_999_999, "w", 1, &[line(1, "no such job")])
        .await
        .unwrap());

    let j = claimed(s, "finished", "w").await;
    assert!(s.append_logs(j, "w", 1, &[line(1, "last")]).await.unwrap());
    let outcome = JobOutcome {
        status: cronium_model::JobStatus::Succeeded,
        exit_code: Some(0),
        output: json!(null),
        error: None,
    };
    assert!(s.finish(j, "w", 1, &outcome, 5).await.unwrap());
    assert!(!s
        .append_logs(j, "w", 1, &[line(2, "after the end")])
        .await
        .unwrap());

    let mut spec = job("retried", 0);
    spec.max_attempts = 3;
    let r = s.enqueue(&spec, 0).await.unwrap();
    assert_eq!(s.claim("w", 60_000, 0).await.unwrap().unwrap().id, r.id);
    assert!(s
        .retry_later(r.id, "w", 1, 1_000_000, "boom", 5)
        .await
        .unwrap());
    assert!(!s
        .append_logs(r.id, "w", 1, &[line(1, "after the retry")])
        .await
        .unwrap());

    assert_eq!(s.max_log_seq(queued.id).await.unwrap(), 0);
    assert_eq!(s.max_log_seq(j).await.unwrap(), 1);
    assert_eq!(s.max_log_seq(r.id).await.unwrap(), 0);
    assert_eq!(s.read_logs(j, 0, 10).await.unwrap()[0].line, "last");
}

/// PostgreSQL runs appends and lease recovery on different connections at once: an append that
/// reaches its fence while a recovery holds the job row must wait for it and then be refused
/// (without the row lock it would read the old row, pass the fence and store a line after the
/// recovery). SQLite needs no such test: one write transaction at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn append_racing_a_recovery_waits_for_it_and_is_refused_postgres() {
    crate::harness::run_postgres(append_racing_a_recovery(true)).await
}

/// The same race on SQLite, where the recovery's write transaction holds the database lock:
/// the append runs after it and is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn append_racing_a_recovery_waits_for_it_and_is_refused_sqlite() {
    crate::harness::run_sqlite(append_racing_a_recovery(false)).await
}

fn append_racing_a_recovery(
    postgres: bool,
) -> impl FnOnce(Ctx) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    move |t: Ctx| {
        Box::pin(async move {
            use sqlx::{Connection, Executor};
            let s = t.store.clone();
            let j = claimed(&s, "race", "old").await;
            assert!(s.append_logs(j, "old", 1, &[line(1, "a")]).await.unwrap());

            // A recovery in progress on another connection: the job row updated, not committed.
            let mut recovery = sqlx::AnyConnection::connect(&t.url).await.unwrap();
            let begin = if postgres { "BEGIN" } else { "BEGIN IMMEDIATE" };
            recovery.execute(begin).await.unwrap();
            recovery
                .execute(
                    format!(
                        "UPDATE jobs SET status = 'queued', lease_owner = NULL, \
                         lease_expires_at = NULL WHERE id = {j}"
                    )
                    .as_str(),
                )
                .await
                .unwrap();

            let appender = s.clone();
            let append = tokio::spawn(async move {
                appender
                    .append_logs(j, "old", 1, &[line(2, "during the recovery")])
                    .await
            });
            if postgres {
                // Wait until the append is blocked on the job row, then let the recovery commit.
                let mut watch = sqlx::PgConnection::connect(&t.url).await.unwrap();
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                loop {
                    let waiting: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM pg_stat_activity \
                         WHERE datname = current_database() AND wait_event_type = 'Lock'",
                    )
                    .fetch_one(&mut watch)
                    .await
                    .unwrap();
                    if waiting > 0 {
                        break;
                    }
                    assert!(
                        !append.is_finished(),
                        "the append did not wait for the recovery"
                    );
                    assert!(
                        std::time::Instant::now() < deadline,
                        "the append never waited for the job row"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
            recovery.execute("COMMIT").await.unwrap();
            assert!(!append.await.unwrap().unwrap(), "a stale append was stored");
            let all = s.read_logs(j, 0, 10).await.unwrap();
            assert_eq!(all.iter().map(|l| l.seq).collect::<Vec<_>>(), [1]);
        })
    }
}
