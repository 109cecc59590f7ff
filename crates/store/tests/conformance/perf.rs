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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --ignored --nocapture in release"]
async fn perf_prune_sqlite() {
    run_sqlite(claims_during_prune).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --ignored --nocapture in release"]
async fn perf_prune_postgres() {
    run_postgres(claims_during_prune).await
}

/// Claim latency while retention deletes a large history (one 50 MB log of 500 000 lines and
/// 2 000 small jobs), against the same claims with nothing pruning.
async fn claims_during_prune(t: Ctx) {
    use cronium_store::{PruneLimits, PruneRule, PruneScope};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let s = &t.store;
    let text = "x".repeat(90);
    let seed = |lines: i64, at: i64| {
        let text = text.clone();
        async move {
            let j = s.enqueue(&job("old", 0), 0).await.unwrap();
            let c = s.claim("seed", 60_000, 0).await.unwrap().unwrap();
            assert_eq!(c.id, j.id);
            s.create_execution(c.id, "seed", 1, None, ExecutionStatus::Running, 0)
                .await
                .unwrap()
                .unwrap();
            for chunk in (1..=lines).collect::<Vec<_>>().chunks(10_000) {
                let batch: Vec<NewLogLine> = chunk
                    .iter()
                    .map(|&seq| NewLogLine {
                        execution_id: None,
                        seq,
                        stream: "stdout".into(),
                        line: format!("{seq:08} {text}"),
                        ts: seq,
                    })
                    .collect();
                assert!(s.append_logs(c.id, "seed", 1, &batch).await.unwrap());
            }
            let outcome = JobOutcome {
                status: JobStatus::Succeeded,
                exit_code: Some(0),
                output: json!({}),
                error: None,
            };
            assert!(s.finish(c.id, "seed", 1, &outcome, at).await.unwrap());
        }
    };
    let seeding = Instant::now();
    seed(500_000, 1).await;
    for i in 0..2_000 {
        seed(20, 2 + i).await;
    }
    eprintln!(
        "{:?}: seeded 2001 jobs, 540000 log lines in {:?}",
        s.backend(),
        seeding.elapsed()
    );

    // One claim at a time, as an agent with work queued does; returns the claim times.
    let claims = |stop: Arc<AtomicBool>, max: usize| {
        let s = s.clone();
        async move {
            let mut times = Vec::new();
            let outcome = JobOutcome {
                status: JobStatus::Succeeded,
                exit_code: Some(0),
                output: json!({}),
                error: None,
            };
            while !stop.load(Ordering::Relaxed) && times.len() < max {
                let now = 1_000_000_000_000;
                s.enqueue(&job("new", now), now).await.unwrap();
                let t0 = Instant::now();
                let c = s.claim("w", 60_000, now).await.unwrap().unwrap();
                times.push(t0.elapsed());
                assert!(s.finish(c.id, "w", 1, &outcome, now).await.unwrap());
            }
            times.sort();
            times
        }
    };
    let idle = claims(Arc::new(AtomicBool::new(false)), 500).await;

    let done = Arc::new(AtomicBool::new(false));
    let during = tokio::spawn(claims(done.clone(), usize::MAX));
    let rule = PruneRule {
        scope: PruneScope::DeletedEvents,
        finished_before: 1_000_000,
        keep: 0,
    };
    let pruning = Instant::now();
    let (mut steps, mut lines, mut step_times) = (0, 0, Vec::new());
    loop {
        let t0 = Instant::now();
        let step = s.prune_step(&rule, &PruneLimits::default()).await.unwrap();
        step_times.push(t0.elapsed());
        steps += 1;
        lines += step.total().log_lines;
        if !step.more {
            break;
        }
        // As the server's retention loop does: a pause as long as the step.
        tokio::time::sleep(t0.elapsed()).await;
    }
    let prune_time = pruning.elapsed();
    done.store(true, Ordering::Relaxed);
    let during = during.await.unwrap();
    step_times.sort();
    assert_eq!(lines, 540_000);
    eprintln!(
        "{:?}: pruned 2001 jobs and {lines} log lines in {prune_time:?} ({steps} steps, p50 {:?}, max {:?})",
        s.backend(),
        pct(&step_times, 0.5),
        step_times.last().unwrap(),
    );
    eprintln!(
        "{:?}: claim latency idle p50 {:?} p99 {:?} max {:?}; during the prune ({} claims) p50 {:?} p99 {:?} max {:?}",
        s.backend(),
        pct(&idle, 0.5),
        pct(&idle, 0.99),
        idle.last().unwrap(),
        during.len(),
        pct(&during, 0.5),
        pct(&during, 0.99),
        during.last().unwrap(),
    );
}
