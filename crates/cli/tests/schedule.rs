//! The scheduler and the queue through the real server: firing on time without drift, overlap
//! policies, execution limits, pausing, broken events, failover between servers on one
//! PostgreSQL (kill -9 and graceful stop of the leader), recovery of the jobs of a crashed
//! server.
//!
//! Every test waits for conditions with deadlines, never for a fixed time. Where "nothing more
//! happened" must be shown, a second event ticking every second is the witness: once it has
//! fired twice more, the scheduler has made passes since. What needs control of time (missed
//! ticks after downtime, DST, fencing of a stale leader) is in the driven-clock tests of the
//! server crate (crates/server/tests/scheduler.rs).

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

/// A witness event: fires every second, does nothing.
const PULSE: &str =
    "name: pulse\ntype: bash\nschedule: '* * * * * *'\noverlap: allow\nscript: 'true'\n";

fn ms(t: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(t.as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
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

async fn is_leader(s: &Server) -> bool {
    s.metric("cronium_scheduler_leader").await == Some(1.0)
}

/// Waits until the pulse event has fired `n` more ticks: the scheduler made passes since.
async fn scheduler_passes(s: &Server, n: usize) {
    let before = jobs_of(s, "pulse").await.len();
    s.wait_for("pulse ticks", Duration::from_secs(30), || async {
        jobs_of(s, "pulse").await.len() >= before + n
    })
    .await;
}

fn instants(jobs: &[Value]) -> Vec<i64> {
    jobs.iter().map(|j| ms(&j["scheduled_for"])).collect()
}

/// Asserts that `instants` are every second from the first to the last, each once.
fn assert_every_second_once(instants: &[i64]) {
    let mut sorted = instants.to_vec();
    sorted.sort();
    let n = sorted.len();
    sorted.dedup();
    assert_eq!(sorted.len(), n, "a tick fired twice: {instants:?}");
    for w in sorted.windows(2) {
        assert_eq!(w[1] - w[0], 1000, "a tick was lost: {sorted:?}");
    }
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
    let instants = instants(&jobs);
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
    s.wait_for(
        "two finished runs and a skipped tick",
        Duration::from_secs(30),
        || async {
            let done = jobs_of(&s, "slow")
                .await
                .iter()
                .filter(|j| j["status"] == "succeeded")
                .count();
            done >= 2
                && s.metric("cronium_scheduler_ticks_total{kind=\"overlap\"}")
                    .await
                    .unwrap_or(0.0)
                    >= 1.0
        },
    )
    .await;
    let jobs = jobs_of(&s, "slow").await;
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
    // The ticks that came during a 2.5 s run were dropped, not queued.
    for w in instants(&jobs).windows(2) {
        assert!(w[1] - w[0] >= 2000, "a tick during a run fired: {w:?}");
    }
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
    s.apply_yaml(PULSE).await;
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
    let (_, ev) = s.api("GET", "/api/v1/events/thrice", None).await;
    assert_eq!(ev["next_fire_at"], Value::Null);
    scheduler_passes(&s, 2).await;
    assert_eq!(jobs_of(&s, "thrice").await.len(), 3);
}

#[tokio::test]
async fn pausing_takes_effect_at_once() {
    let s = Server::start();
    s.apply_yaml(PULSE).await;
    s.apply_yaml("name: p\ntype: bash\nschedule: '* * * * * *'\nscript: echo x\n")
        .await;
    s.wait_for("a first run", Duration::from_secs(10), || async {
        !jobs_of(&s, "p").await.is_empty()
    })
    .await;
    let paused = s
        .apply_yaml(
            "name: p\ntype: bash\nschedule: '* * * * * *'\nscript: echo x\nstatus: paused\n",
        )
        .await;
    assert_eq!(paused["event"]["next_fire_at"], Value::Null);
    // At most a tick the scheduler was already firing when the pause committed.
    let n = jobs_of(&s, "p").await.len();
    scheduler_passes(&s, 2).await;
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

/// Rewrites one event's stored spec behind the server's back, in its SQLite file.
async fn corrupt_spec(db: &Path, event: &str, sql_spec_expr: &str) {
    use sqlx::Connection;
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite:{}", db.display()))
        .await
        .expect("open the server's database");
    let done = sqlx::query(&format!(
        "UPDATE events SET spec = {sql_spec_expr} WHERE name = ?"
    ))
    .bind(event)
    .execute(&mut c)
    .await
    .expect("corrupt the spec");
    assert_eq!(done.rows_affected(), 1);
}

#[tokio::test]
async fn an_event_whose_stored_spec_no_longer_parses_is_shown_broken() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let s = Server::start_with(ServerOpts {
        log_file: Some(log.clone()),
        ..Default::default()
    });
    s.apply_yaml(PULSE).await;
    let victim =
        "name: victim\ntype: bash\nschedule: '* * * * * *'\noverlap: allow\nscript: 'true'\n";
    s.apply_yaml(victim).await;
    s.apply_yaml("name: mangled\ntype: bash\nscript: 'true'\n")
        .await;
    s.wait_for("a first victim run", Duration::from_secs(10), || async {
        !jobs_of(&s, "victim").await.is_empty()
    })
    .await;
    // A schedule this release does not understand (a hand edit, a newer release's format), and
    // a spec that is not JSON at all.
    let db = s.data_path("cronium.db");
    corrupt_spec(
        &db,
        "victim",
        "json_set(spec, '$.schedule', 'whenever you like')",
    )
    .await;
    corrupt_spec(&db, "mangled", "'{\"name\": \"mangled\", '").await;

    s.wait_for("the broken marks", Duration::from_secs(10), || async {
        let (_, list) = s.api("GET", "/api/v1/events", None).await;
        list.as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["broken"].is_string())
            .count()
            == 2
    })
    .await;
    let (status, ev) = s.api("GET", "/api/v1/events/victim", None).await;
    assert_eq!(status, 200);
    let why = ev["broken"].as_str().unwrap();
    assert!(
        why.starts_with("schedule:") && why.contains("whenever you like"),
        "{why}"
    );
    assert_eq!(
        ev["next_fire_at"],
        Value::Null,
        "a broken event shows no next run"
    );
    let (_, ev) = s.api("GET", "/api/v1/events/mangled", None).await;
    assert!(
        ev["broken"]
            .as_str()
            .is_some_and(|w| w.starts_with("spec: the stored text is not JSON")),
        "{ev}"
    );
    // Running one by hand says why it cannot run.
    let (status, body) = s
        .api(
            "POST",
            "/api/v1/events/victim/run",
            Some(serde_json::json!({})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(body.to_string().contains("broken"), "{body}");

    // The CLI list marks both; `event show` says why.
    let out = s.cli(&["event", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let list = stdout(&out);
    for name in ["victim", "mangled"] {
        let line = list
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} not listed: {list}"));
        assert!(line.contains("BROKEN"), "{line}");
    }
    assert!(!list
        .lines()
        .find(|l| l.starts_with("pulse"))
        .unwrap()
        .contains("BROKEN"));
    let out = s.cli(&["event", "show", "victim"]);
    assert!(
        stdout(&out).contains("BROKEN:    schedule:"),
        "{}",
        stdout(&out)
    );

    assert_eq!(s.metric("cronium_events_broken").await, Some(2.0));

    // It never fires while broken, and the warning is logged once, not on every pass.
    let fired = jobs_of(&s, "victim").await.len();
    scheduler_passes(&s, 3).await;
    assert_eq!(
        jobs_of(&s, "victim").await.len(),
        fired,
        "a broken event fired"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let warnings = text
        .lines()
        .filter(|l| l.contains("event is broken") && l.contains("victim"))
        .count();
    assert_eq!(warnings, 1, "server log:\n{text}");

    // Applying a valid version repairs it.
    let applied = s.apply_yaml(victim).await;
    assert_eq!(applied["event"]["broken"], Value::Null);
    s.wait_for(
        "the repaired event to fire",
        Duration::from_secs(10),
        || async { jobs_of(&s, "victim").await.len() > fired },
    )
    .await;
    assert_eq!(s.metric("cronium_events_broken").await, Some(1.0));
}

/// Every second; a run the dead server's agent had claimed is run again by the survivor's.
const BEAT: &str = "name: beat\ntype: bash\nschedule: '* * * * * *'\noverlap: allow\nretries: { max_attempts: 2, backoff: 100ms }\nscript: 'true'\n";

/// Two servers on one fresh PostgreSQL database, each with a 2 s job lease.
async fn two_servers() -> (Server, Server) {
    let db = fresh_pg_database().await;
    let opts = || ServerOpts {
        database_url: Some(db.clone()),
        args: vec!["--lease".into(), "2s".into()],
        ..Default::default()
    };
    (Server::start_with(opts()), Server::start_with(opts()))
}

/// Waits until exactly one of the servers leads; returns (leader, follower).
async fn leader_of(a: Server, b: Server) -> (Server, Server) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match (is_leader(&a).await, is_leader(&b).await) {
            (true, false) => return (a, b),
            (false, true) => return (b, a),
            seen => assert!(Instant::now() < deadline, "no single leader: {seen:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn after_kill_9_of_the_leader_another_server_fires_the_next_tick_within_5s() {
    let (a, b) = two_servers().await;
    a.apply_yaml(BEAT).await;
    let (mut leader, follower) = leader_of(a, b).await;
    follower
        .wait_for("3 ticks", Duration::from_secs(30), || async {
            jobs_of(&follower, "beat").await.len() >= 3
        })
        .await;
    leader.crash();
    let killed = now_ms();
    follower
        .wait_for(
            "ticks well after the kill",
            Duration::from_secs(30),
            || async {
                jobs_of(&follower, "beat")
                    .await
                    .iter()
                    .any(|j| ms(&j["scheduled_for"]) > killed + 6000)
            },
        )
        .await;
    assert!(is_leader(&follower).await);
    let jobs = jobs_of(&follower, "beat").await;
    // No tick twice, none lost: the failover is inside the missed-run grace.
    assert_every_second_once(&instants(&jobs));
    // Those due after the kill were fired by the survivor within 5 s of their instant.
    let after: Vec<(i64, i64)> = jobs
        .iter()
        .map(|j| {
            (
                ms(&j["scheduled_for"]),
                ms(&j["created_at"]) - ms(&j["scheduled_for"]),
            )
        })
        .filter(|(at, _)| *at > killed)
        .collect();
    let worst = after.iter().map(|(_, lag)| *lag).max().unwrap();
    assert!(worst < 5000, "a tick fired {worst} ms late: {after:?}");
    // A tick due right after the kill waited for the lease to expire: the failover did happen
    // through the lease, not because the leader was still firing.
    assert!(worst >= 500, "no tick waited for the failover: {after:?}");
    // The jobs the dead server's agent had claimed are recovered by the survivor's.
    for j in &jobs {
        let id = j["id"].as_i64().unwrap();
        let done = follower.wait_job(id, Duration::from_secs(60)).await;
        assert_eq!(done["status"], "succeeded", "{done}");
    }
}

#[tokio::test]
async fn graceful_stop_of_the_leader_hands_over_at_once() {
    let (a, b) = two_servers().await;
    a.apply_yaml(BEAT).await;
    let (mut leader, follower) = leader_of(a, b).await;
    follower
        .wait_for("3 ticks", Duration::from_secs(30), || async {
            jobs_of(&follower, "beat").await.len() >= 3
        })
        .await;
    let stopped = now_ms();
    leader.stop();
    follower
        .wait_for("ticks after the stop", Duration::from_secs(30), || async {
            jobs_of(&follower, "beat")
                .await
                .iter()
                .any(|j| ms(&j["scheduled_for"]) > stopped + 3000)
        })
        .await;
    let jobs = jobs_of(&follower, "beat").await;
    assert_every_second_once(&instants(&jobs));
    // The stopping leader unlocked: the survivor took over at its next poll (0.5 s), not when
    // the 3 s lease ran out (which would leave the next tick 2 s late or more).
    let after: Vec<(i64, i64)> = jobs
        .iter()
        .map(|j| {
            (
                ms(&j["scheduled_for"]),
                ms(&j["created_at"]) - ms(&j["scheduled_for"]),
            )
        })
        .filter(|(at, _)| *at > stopped)
        .collect();
    let worst = after.iter().map(|(_, lag)| *lag).max().unwrap();
    assert!(
        worst < 1500,
        "handover left a tick {worst} ms late: {after:?}"
    );
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
