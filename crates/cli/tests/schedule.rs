//! The scheduler and the queue through the real server: firing on time without drift, overlap
//! and missed-run policies, execution limits, one scheduler per database, recovery of the jobs of
//! a crashed server.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

fn ms(t: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(t.as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

async fn jobs_of(s: &Server, event: &str) -> Vec<Value> {
    let (_, list) = s
        .api(
            "GET",
            &format!("/api/v1/jobs?event={event}&limit=1000"),
            None,
        )
        .await;
    let mut v = list.as_array().cloned().unwrap_or_default();
    v.reverse();
    v
}

#[tokio::test]
async fn cron_fires_at_each_instant_without_drift() {
    let s = Server::start();
    // Each run takes 1.3 s, longer than the period: instants must still be every second
    // (overlap allow), computed from the schedule, not from run ends.
    s.apply_yaml(
        "name: tick\ntype: bash\nschedule: '* * * * * *'\noverlap: allow\nscript: sleep 1.3\n",
    )
    .await;
    s.wait_for("5 scheduled jobs", Duration::from_secs(30), || async {
        jobs_of(&s, "tick").await.len() >= 5
    })
    .await;
    let jobs = jobs_of(&s, "tick").await;
    let instants: Vec<i64> = jobs.iter().map(|j| ms(&j["scheduled_for"])).collect();
    for w in instants.windows(2) {
        assert_eq!(w[1] - w[0], 1000, "instants {instants:?}");
    }
    for (j, at) in jobs.iter().zip(&instants) {
        assert_eq!(at % 1000, 0, "instant not on a whole second: {at}");
        let lag = ms(&j["created_at"]) - at;
        assert!(
            (0..1000).contains(&lag),
            "enqueued {lag} ms after its instant"
        );
        assert_eq!(j["trigger"], "schedule");
    }
}

#[tokio::test]
async fn overlap_skip_drops_ticks_while_a_run_is_active() {
    let s = Server::start();
    s.apply_yaml(
        "name: slow\ntype: bash\nschedule: '* * * * * *'\noverlap: skip\nscript: sleep 2.5\n",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let jobs = jobs_of(&s, "slow").await;
    assert!(!jobs.is_empty());
    // Never two runs at once: each job starts after the previous one ended.
    for w in jobs.windows(2) {
        if let (Some(end), Some(start)) =
            (w[0]["finished_at"].as_str(), w[1]["started_at"].as_str())
        {
            assert!(
                ms(&Value::String(start.into())) >= ms(&Value::String(end.into())),
                "overlap: {w:?}"
            );
        }
    }
    // Far fewer jobs than ticks.
    assert!(
        jobs.len() <= 3,
        "{} jobs in 6 s with 2.5 s runs",
        jobs.len()
    );
}

#[tokio::test]
async fn overlap_queue_runs_ticks_one_after_another() {
    let s = Server::start();
    s.apply_yaml(
        "name: serial\ntype: bash\nschedule: '* * * * * *'\noverlap: queue\nscript: sleep 1.5\n",
    )
    .await;
    s.wait_for("3 finished runs", Duration::from_secs(30), || async {
        jobs_of(&s, "serial")
            .await
            .iter()
            .filter(|j| j["status"] == "succeeded")
            .count()
            >= 3
    })
    .await;
    let mut runs: Vec<(i64, i64)> = jobs_of(&s, "serial")
        .await
        .iter()
        .filter(|j| j["status"] == "succeeded")
        .map(|j| (ms(&j["started_at"]), ms(&j["finished_at"])))
        .collect();
    runs.sort();
    for w in runs.windows(2) {
        assert!(w[1].0 >= w[0].1, "queued runs overlapped: {runs:?}");
    }
}

#[tokio::test]
async fn max_executions_pauses_the_event() {
    let s = Server::start();
    s.apply_yaml(
        "name: thrice\ntype: bash\nschedule: '* * * * * *'\nmax_executions: 3\nscript: echo run\n",
    )
    .await;
    s.wait_for(
        "the event to pause itself",
        Duration::from_secs(30),
        || async { s.api("GET", "/api/v1/events/thrice", None).await.1["status"] == "paused" },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(jobs_of(&s, "thrice").await.len(), 3);
    let (_, ev) = s.api("GET", "/api/v1/events/thrice", None).await;
    assert_eq!(ev["next_fire_at"], Value::Null);
}

#[tokio::test]
async fn pausing_takes_effect_at_once() {
    let s = Server::start();
    s.apply_yaml("name: p\ntype: bash\nschedule: '* * * * * *'\nscript: echo x\n")
        .await;
    s.wait_for("a first run", Duration::from_secs(10), || async {
        !jobs_of(&s, "p").await.is_empty()
    })
    .await;
    s.apply_yaml("name: p\ntype: bash\nschedule: '* * * * * *'\nscript: echo x\nstatus: paused\n")
        .await;
    let n = jobs_of(&s, "p").await.len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        jobs_of(&s, "p").await.len() <= n + 1,
        "kept firing after pause"
    );
    // Changing the schedule takes effect at once too.
    s.apply_yaml("name: p\ntype: bash\nschedule: { every: 300ms }\nscript: echo x\n")
        .await;
    let before = jobs_of(&s, "p").await.len();
    s.wait_for("fast ticks", Duration::from_secs(10), || async {
        jobs_of(&s, "p").await.len() >= before + 4
    })
    .await;
}

async fn downtime(missed: &str) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let mut a = Server::start_with(ServerOpts {
        data_dir: Some(data.clone()),
        ..Default::default()
    });
    a.apply_yaml(&format!(
        "name: m\ntype: bash\nschedule: '* * * * * *'\nmissed: {missed}\nscript: echo x\n"
    ))
    .await;
    a.wait_for("a run", Duration::from_secs(10), || async {
        !jobs_of(&a, "m").await.is_empty()
    })
    .await;
    a.stop();
    let stopped = cronium_core_now();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let b = Server::start_with(ServerOpts {
        data_dir: Some(data),
        ..Default::default()
    });
    let restarted = cronium_core_now();
    b.wait_for("runs after restart", Duration::from_secs(10), || async {
        jobs_of(&b, "m")
            .await
            .iter()
            .any(|j| ms(&j["scheduled_for"]) > restarted)
    })
    .await;
    jobs_of(&b, "m")
        .await
        .into_iter()
        .filter(|j| {
            let at = ms(&j["scheduled_for"]);
            at > stopped && at < restarted - 1000
        })
        .collect()
}

fn cronium_core_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn missed_ticks_are_skipped_after_downtime() {
    let during = downtime("skip").await;
    assert!(during.is_empty(), "missed ticks were run: {during:?}");
}

#[tokio::test]
async fn missed_ticks_run_once_after_downtime() {
    let during = downtime("run_once").await;
    assert_eq!(
        during.len(),
        1,
        "expected exactly one catch-up run: {during:?}"
    );
}

#[tokio::test]
async fn two_servers_on_one_postgres_never_fire_a_tick_twice() {
    let db = fresh_pg_database().await;
    let lease = vec!["--lease".to_string(), "2s".to_string()];
    let a = Server::start_with(ServerOpts {
        database_url: Some(db.clone()),
        args: lease.clone(),
        ..Default::default()
    });
    let mut b = Server::start_with(ServerOpts {
        database_url: Some(db),
        args: lease,
        ..Default::default()
    });
    a.apply_yaml(
        "name: once\ntype: bash\nschedule: '* * * * * *'\noverlap: allow\nscript: echo x\n",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Leadership moves when a server dies; still no tick twice.
    b.crash();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let jobs = jobs_of(&a, "once").await;
    assert!(jobs.len() >= 4, "{} jobs", jobs.len());
    let mut instants: Vec<i64> = jobs.iter().map(|j| ms(&j["scheduled_for"])).collect();
    let n = instants.len();
    instants.sort();
    instants.dedup();
    assert_eq!(instants.len(), n, "a tick fired twice");
    // Both servers' agents share the queue; the jobs the crashed one held are recovered: every
    // job fired before the crash ends succeeded.
    let ids: Vec<i64> = jobs.iter().map(|j| j["id"].as_i64().unwrap()).collect();
    for id in ids {
        let j = a.wait_job(id, Duration::from_secs(60)).await;
        assert_eq!(j["status"], "succeeded", "{j}");
    }
}

#[tokio::test]
async fn jobs_of_a_crashed_server_are_recovered_when_the_lease_expires() {
    let db = fresh_pg_database().await;
    let dir = shared_tempdir();
    let marker = dir.path().join("started");
    let lease = vec!["--lease".to_string(), "2s".to_string()];
    let mut a = Server::start_with(ServerOpts {
        database_url: Some(db.clone()),
        args: lease.clone(),
        ..Default::default()
    });
    a.apply_yaml(&format!(
        "name: survivor\ntype: bash\nretries: {{ max_attempts: 2, backoff: 100ms }}\nscript: |\n  if [ \"$CRONIUM_ATTEMPT\" = 1 ]; then touch {}; sleep 300; fi\n  echo second attempt\n",
        marker.display()
    ))
    .await;
    let id = a.run_event("survivor", None).await;
    a.wait_for(
        "the first attempt to start",
        Duration::from_secs(30),
        || async { marker.exists() },
    )
    .await;
    a.crash();
    let started = Instant::now();
    let b = Server::start_with(ServerOpts {
        database_url: Some(db),
        args: lease,
        ..Default::default()
    });
    let j = b.wait_job(id, Duration::from_secs(60)).await;
    assert_eq!(j["status"], "succeeded", "{j}");
    assert!(started.elapsed() < Duration::from_secs(30));
    let xs = j["executions"].as_array().unwrap();
    assert_eq!(xs[0]["status"], "lost", "{j}");
    assert_eq!(xs.last().unwrap()["status"], "succeeded");
    assert!(b.log_text(id).await.contains("second attempt"));
}
