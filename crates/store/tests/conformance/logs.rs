//! Logs: batched appends, paging by seq, max seq, conflicts, bulk volume.

use cronium_model::ExecutionStatus;
use cronium_store::{NewLogLine, StoreError};

use crate::harness::{job, Ctx};

conformance!(
    logs_page_and_max_seq,
    duplicate_seq_writes_nothing,
    hundred_thousand_lines_in_batches
);

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
    s.append_logs(j.id, &[]).await.unwrap();

    let exec = {
        s.claim("w", 1000, 0).await.unwrap().unwrap();
        s.create_execution(j.id, "w", 1, None, ExecutionStatus::Running, 0)
            .await
            .unwrap()
            .unwrap()
    };
    let mut batch: Vec<NewLogLine> = (1..=5).map(|i| line(i, &format!("line {i}"))).collect();
    batch[0].execution_id = Some(exec.id);
    batch[1].line = "with \0 nul, ünïcödé and \"quotes\"".into();
    s.append_logs(j.id, &batch).await.unwrap();
    s.append_logs(j.id, &[line(6, "six"), line(8, "eight")])
        .await
        .unwrap();
    s.append_logs(other.id, &[line(1, "other job")])
        .await
        .unwrap();

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
    let j = s.enqueue(&job("d", 0), 0).await.unwrap();
    s.append_logs(j.id, &[line(1, "a"), line(2, "b")])
        .await
        .unwrap();
    // The batch spans several chunks and its last line collides: nothing of it is kept.
    let mut batch: Vec<NewLogLine> = (3..1200).map(|i| line(i, "x")).collect();
    batch.push(line(1300, "y"));
    s.append_logs(j.id, &batch).await.unwrap();
    let colliding: Vec<NewLogLine> = (1301..2000)
        .map(|i| line(i, "z"))
        .chain([line(2000, "z")])
        .collect();
    s.append_logs(j.id, &colliding[..10]).await.unwrap();
    match s.append_logs(j.id, &colliding).await {
        Err(StoreError::Conflict(field)) => assert_eq!(field, "seq"),
        other => panic!("expected Conflict(seq), got {other:?}"),
    }
    assert_eq!(s.max_log_seq(j.id).await.unwrap(), 1310);
    assert_eq!(s.read_logs(j.id, 1310, 10).await.unwrap().len(), 0);

    for bad in [
        vec![line(5000, "a"), line(5000, "b")],
        vec![line(0, "zero")],
        vec![line(6001, "a"), line(6000, "b")],
    ] {
        assert!(
            matches!(s.append_logs(j.id, &bad).await, Err(StoreError::Invalid(m)) if m.contains(".seq"))
        );
    }
    let mut no_stream = line(7000, "a");
    no_stream.stream.clear();
    assert!(
        matches!(s.append_logs(j.id, &[no_stream]).await, Err(StoreError::Invalid(m)) if m.contains(".stream"))
    );
    assert_eq!(s.max_log_seq(j.id).await.unwrap(), 1310);
}

async fn hundred_thousand_lines_in_batches(t: Ctx) {
    const LINES: i64 = 100_000;
    const BATCH: i64 = 5_000;
    let s = &t.store;
    let j = s.enqueue(&job("big", 0), 0).await.unwrap();
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
        s.append_logs(j.id, &batch).await.unwrap();
        seq += BATCH;
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{:?}: appended {LINES} lines in {elapsed:?}",
        t.store.backend()
    );
    assert_eq!(s.max_log_seq(j.id).await.unwrap(), LINES);
    // Read it all back in pages: every line present, in order, none twice.
    let mut after = 0;
    let mut count = 0;
    loop {
        let page = s.read_logs(j.id, after, 20_000).await.unwrap();
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
