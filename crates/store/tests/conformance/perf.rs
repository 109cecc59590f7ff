//! Measurements, not conformance: `cargo test --release -p cronium-store --test conformance --
//! --ignored --nocapture perf` prints the store's share of the job round trip per backend.

use std::time::{Duration, Instant};

use cronium_model::{ExecutionStatus, JobStatus};
use cronium_store::{ExecutionUpdate, JobOutcome, NewLogLine};
use serde_json::json;

use crate::harness::{job, run_postgres, run_sqlite, Ctx};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --ignored --nocapture in release"]
async fn perf_sqlite() {
    run_sqlite(round_trip).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --ignored --nocapture in release"]
async fn perf_postgres() {
    run_postgres(round_trip).await
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// What an agent does per local job: enqueue, claim, execution pending -> running -> done, a log
/// batch, finish.
async fn round_trip(t: Ctx) {
    let s = &t.store;
    const N: usize = 1000;
    let mut times = Vec::with_capacity(N);
    let started = Instant::now();
    for i in 0..N {
        let t0 = Instant::now();
        let now = i as i64;
        let j = s.enqueue(&job("perf", now), now).await.unwrap();
        let c = s.claim("w", 60_000, now).await.unwrap().unwrap();
        assert_eq!(c.id, j.id);
        let e = s
            .create_execution(c.id, "w", 1, None, ExecutionStatus::Pending, now)
            .await
            .unwrap()
            .unwrap();
        let running = ExecutionUpdate {
            status: Some(ExecutionStatus::Running),
            ..Default::default()
        };
        assert!(s.update_execution(e.id, "w", 1, &running).await.unwrap());
        let line = NewLogLine {
            execution_id: Some(e.id),
            seq: 1,
            stream: "stdout".into(),
            line: "hi".into(),
            ts: now,
        };
        assert!(s.append_logs(c.id, "w", 1, &[line]).await.unwrap());
        let done = ExecutionUpdate {
            status: Some(ExecutionStatus::Succeeded),
            exit_code: Some(0),
            ..Default::default()
        };
        assert!(s.update_execution(e.id, "w", 1, &done).await.unwrap());
        let outcome = JobOutcome {
            status: JobStatus::Succeeded,
            exit_code: Some(0),
            output: json!({}),
            error: None,
        };
        assert!(s.finish(c.id, "w", 1, &outcome, now).await.unwrap());
        times.push(t0.elapsed());
    }
    let total = started.elapsed();
    times.sort();
    eprintln!(
        "{:?}: job round trip (7 store calls) p50 {:?} p99 {:?}, {:.0} jobs/s sequential",
        s.backend(),
        pct(&times, 0.5),
        pct(&times, 0.99),
        N as f64 / total.as_secs_f64()
    );
}
