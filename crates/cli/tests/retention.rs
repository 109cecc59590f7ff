//! Retention through the real server: the background sweep prunes jobs past their retention
//! (the server's `--retain`, an event's `retain`, its newest `keep` kept) and never a running
//! job; `cronium prune --dry-run` reports what would go and changes nothing; `cronium prune`
//! removes it, with the unused payloads and the work directories of killed runs, on SQLite and
//! PostgreSQL.
//!
//! Jobs are made old by moving their `finished_at` back in the server's database, as the passing
//! of days would.

mod support;

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use support::*;

const DAY_MS: i64 = 86_400_000;

/// Runs `sql` on the server's database: its SQLite file, or `pg`.
async fn execute(s: &Server, pg: Option<&str>, sql: &str) {
    use sqlx::Connection;
    match pg {
        Some(url) => {
            let mut c = sqlx::PgConnection::connect(url).await.expect("connect");
            sqlx::query(sql).execute(&mut c).await.expect(sql);
        }
        None => {
            let db = s.data_path("cronium.db");
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite:{}", db.display()))
                .await
                .expect("open the server's database");
            sqlx::query(sql).execute(&mut c).await.expect(sql);
        }
    }
}

async fn sqlite_count(s: &Server, sql: &str) -> i64 {
    use sqlx::{Connection, Row};
    let db = s.data_path("cronium.db");
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite:{}", db.display()))
        .await
        .expect("open the server's database");
    sqlx::query(sql).fetch_one(&mut c).await.expect(sql).get(0)
}

/// Moves the finish (and start and creation) of `ids` back by `days`.
async fn age(s: &Server, pg: Option<&str>, ids: &[i64], days: i64) {
    let list = ids
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let back = days * DAY_MS;
    execute(
        s,
        pg,
        &format!(
            "UPDATE jobs SET finished_at = finished_at - {back}, started_at = started_at - {back}, \
             created_at = created_at - {back} WHERE id IN ({list})"
        ),
    )
    .await;
}

async fn exists(s: &Server, id: i64) -> bool {
    let (status, body) = s.api("GET", &format!("/api/v1/jobs/{id}"), None).await;
    assert!(status == 200 || status == 404, "job {id}: {status} {body}");
    status == 200
}

/// Runs the event `n` times, one after another, each to its end.
async fn runs(s: &Server, event: &str, n: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let id = s.run_event(event, None).await;
        let j = s.wait_job(id, Duration::from_secs(30)).await;
        assert_eq!(j["status"], "succeeded", "{j}");
        ids.push(id);
    }
    ids
}

async fn metric(s: &Server, series: &str) -> f64 {
    s.metric(series)
        .await
        .unwrap_or_else(|| panic!("{series} not on /metrics"))
}

fn bash_event(name: &str, extra: &str) -> String {
    format!(
        "name: {name}\ntype: bash\ntimeout: 5m\ninput: {{ secs: 0 }}\n{extra}\nscript: |\n  sleep \"$(cronium.input secs)\"\n  for i in 1 2 3; do echo \"line $i\"; done\n"
    )
}

#[tokio::test]
async fn the_background_sweep_prunes_by_age_keep_and_retain_and_spares_running_jobs() {
    let s = Server::start_with(ServerOpts {
        args: ["--retain", "30d", "--retention-interval", "200ms"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    });
    s.apply_yaml(&bash_event("plain", "")).await;
    s.apply_yaml(&bash_event("kept", "keep: 2")).await;
    s.apply_yaml(&bash_event("long", "retain: 90d")).await;
    let plain = runs(&s, "plain", 3).await;
    let kept = runs(&s, "kept", 4).await;
    let long = runs(&s, "long", 2).await;
    // Running, and as old as the others: never pruned.
    let running = s.run_event("plain", Some(json!({"secs": 120}))).await;
    s.wait_for("the slow run to start", Duration::from_secs(30), || async {
        s.job(running).await["status"] == "running"
    })
    .await;
    let pruned_before = metric(&s, "cronium_pruned_jobs_total").await;

    // One statement, so a sweep sees all of it or none of it.
    let list = |ids: &[i64]| {
        ids.iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    execute(
        &s,
        None,
        &format!(
            "UPDATE jobs SET \
               finished_at = finished_at - CASE WHEN id = {} THEN {} ELSE {} END, \
               created_at = created_at - {} \
             WHERE id IN ({}, {}, {}, {running}) AND (finished_at IS NOT NULL OR id = {running})",
            long[1],
            100 * DAY_MS,
            40 * DAY_MS,
            40 * DAY_MS,
            list(&plain[..2]),
            list(&kept),
            list(&long),
        ),
    )
    .await;

    // Each scope has a job that must go: once it is gone, its event's rule ran on the old
    // rows, and what it left is what it keeps.
    s.wait_for("the sweep", Duration::from_secs(30), || async {
        !exists(&s, plain[0]).await && !exists(&s, kept[0]).await && !exists(&s, long[1]).await
    })
    .await;
    assert!(!exists(&s, plain[1]).await);
    assert!(exists(&s, plain[2]).await, "a recent job was pruned");
    assert!(!exists(&s, kept[1]).await);
    assert!(
        exists(&s, kept[2]).await && exists(&s, kept[3]).await,
        "keep: 2 kept fewer"
    );
    assert!(
        exists(&s, long[0]).await,
        "retain: 90d pruned a 40-day-old job"
    );
    assert_eq!(s.job(running).await["status"], "running");
    // The logs and executions went with the jobs.
    for table in ["logs", "executions"] {
        let sql = format!(
            "SELECT COUNT(*) FROM {table} WHERE job_id IN ({}, {}, {})",
            plain[0], kept[0], long[1]
        );
        assert_eq!(sqlite_count(&s, &sql).await, 0, "{table} left behind");
    }
    assert!(s.log_text(plain[2]).await.contains("line 3"));

    let pruned = metric(&s, "cronium_pruned_jobs_total").await - pruned_before;
    assert_eq!(pruned, 5.0);
    // Three lines of the script's per job, at least.
    assert!(metric(&s, "cronium_pruned_log_lines_total").await >= 15.0);

    let (status, _) = s
        .api("POST", &format!("/api/v1/jobs/{running}/cancel"), None)
        .await;
    assert_eq!(status, 200);
    s.wait_job(running, Duration::from_secs(30)).await;
}

/// The run user's work directory under `work` when the server made one (it runs as root),
/// else `work` itself, with the uid that owns what runs leave there.
fn runs_base(work: &Path) -> (PathBuf, u32) {
    for entry in std::fs::read_dir(work).expect("work dir").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(uid) = name.strip_prefix("user-").and_then(|u| u.parse().ok()) {
            return (entry.path(), uid);
        }
    }
    // SAFETY: geteuid has no preconditions.
    (work.to_path_buf(), unsafe { libc::geteuid() })
}

/// A run directory as a killed runner leaves it: owned by `uid`, with a file, last changed
/// `age` ago.
fn run_dir(base: &Path, name: &str, uid: u32, age: Duration) -> PathBuf {
    let dir = base.join(name);
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("script.sh"), "echo hi").unwrap();
    std::os::unix::fs::chown(&dir, Some(uid), None).unwrap();
    std::os::unix::fs::chown(dir.join("script.sh"), Some(uid), None).unwrap();
    std::fs::File::open(&dir)
        .unwrap()
        .set_modified(SystemTime::now() - age)
        .unwrap();
    dir
}

fn cli_json(s: &Server, args: &[&str]) -> Value {
    let o = s.cli(args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", stdout(&o)))
}

fn counts(v: &Value) -> (u64, u64, u64) {
    let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
    (n("jobs"), n("executions"), n("log_lines"))
}

async fn dry_run_reports_and_prune_removes(pg: Option<String>) {
    let tmp = shared_tempdir();
    let work = tmp.path().join("work");
    let s = Server::start_with(ServerOpts {
        database_url: pg.clone(),
        // One sweep at start, none during the test: only `cronium prune` removes anything.
        args: vec![
            "--work-dir".into(),
            work.display().to_string(),
            "--retention-interval".into(),
            "1h".into(),
        ],
        ..Default::default()
    });
    let pg = pg.as_deref();
    s.apply_yaml(&bash_event("alpha", "")).await;
    s.apply_yaml(&bash_event("beta", "keep: 1")).await;
    let alpha = runs(&s, "alpha", 2).await;
    let beta = runs(&s, "beta", 3).await;
    age(&s, pg, &alpha, 40).await;
    age(&s, pg, &beta, 40).await;

    // A payload unused for eight days, and the directories runs left.
    let payloads: Vec<PathBuf> = std::fs::read_dir(s.data_path("payloads"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "gz"))
        .collect();
    assert_eq!(payloads.len(), 2, "{payloads:?}");
    std::fs::File::options()
        .append(true)
        .open(&payloads[0])
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(8 * 86_400))
        .unwrap();
    let (base, uid) = runs_base(&work);
    let two_days = Duration::from_secs(2 * 86_400);
    let stale = run_dir(&base, "cronium-run-1-killed", uid, two_days);
    let young = run_dir(&base, "cronium-run-2-young", uid, Duration::ZERO);
    let live = run_dir(&base, "cronium-run-3-live", uid, two_days);
    // A live runner holds its directory under an exclusive flock.
    let held = std::fs::File::open(&live).unwrap();
    // SAFETY: flock on a descriptor we own.
    assert_eq!(
        unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );

    let dry = cli_json(&s, &["prune", "--dry-run", "--json"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["retain"], "30d");
    let events = dry["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{dry}");
    assert_eq!(events[0]["event"], "alpha");
    // Each job: one execution, three lines of the script's and Cronium's own.
    let (jobs, executions, lines) = counts(&events[0]);
    assert_eq!((jobs, executions), (2, 2), "{dry}");
    assert!(lines >= 6, "{dry}");
    assert_eq!(events[1]["event"], "beta");
    assert_eq!(counts(&events[1]).0, 2, "keep: 1 keeps one of three: {dry}");
    assert_eq!(counts(&dry["total"]).0, 4);
    assert_eq!(dry["payloads"], 1);
    assert_eq!(dry["work_dirs"], json!([stale.display().to_string()]));
    // Nothing changed.
    for id in alpha.iter().chain(&beta) {
        assert!(exists(&s, *id).await, "the dry run pruned job {id}");
    }
    assert!(payloads[0].exists() && stale.exists());
    let text = stdout(&s.cli(&["prune", "--dry-run"]));
    assert!(text.starts_with("Would remove (dry run"), "{text}");
    assert!(text.contains("\nalpha "), "{text}");

    let done = cli_json(&s, &["prune", "--json"]);
    assert_eq!(done["dry_run"], false);
    assert_eq!(
        done["events"], dry["events"],
        "removed other than announced"
    );
    assert_eq!(done["payloads"], 1);
    assert_eq!(done["work_dirs"], dry["work_dirs"]);
    for id in alpha.iter().chain(&beta[..2]) {
        assert!(!exists(&s, *id).await, "job {id} survived");
    }
    assert!(exists(&s, beta[2]).await);
    assert!(!payloads[0].exists() && payloads[1].exists());
    assert!(!stale.exists());
    assert!(
        young.exists() && live.exists(),
        "a live or young work dir was removed"
    );

    let again = stdout(&s.cli(&["prune", "--dry-run"]));
    assert_eq!(again, "Nothing would go (--retain 30d).\n");
    drop(held);
}

#[tokio::test]
async fn dry_run_changes_nothing_then_prune_removes_it_sqlite() {
    dry_run_reports_and_prune_removes(None).await;
}

#[tokio::test]
async fn dry_run_changes_nothing_then_prune_removes_it_postgres() {
    dry_run_reports_and_prune_removes(Some(fresh_pg_database().await)).await;
}

#[tokio::test]
async fn bad_retention_flags_and_bodies_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(cronium_bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--retain",
            "a while",
            "--data-dir",
        ])
        .arg(tmp.path())
        .arg("--runner")
        .arg(runner_bin())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--retain: "), "{}", stderr(&o));
    assert!(stderr(&o).contains("forever"), "{}", stderr(&o));

    let s = Server::start_with(ServerOpts {
        args: ["--retain", "forever"].map(String::from).to_vec(),
        ..Default::default()
    });
    let (status, body) = s
        .api("POST", "/api/v1/prune", Some(json!({"dry_run": "yes"})))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "dry_run");
    let (status, body) = s
        .api("POST", "/api/v1/prune", Some(json!({"dryrun": true})))
        .await;
    assert_eq!(status, 422, "{body}");
    let (status, _) = s
        .api_with_token("POST", "/api/v1/prune", Some(json!({})), None)
        .await;
    assert_eq!(status, 401);

    let (status, body) = s
        .api(
            "PUT",
            "/api/v1/events/e",
            Some(json!({"name": "e", "type": "bash", "script": "true", "keep": -1})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "keep");
    // `forever`: nothing is old enough, however old.
    s.apply_yaml(&bash_event("e", "")).await;
    let id = runs(&s, "e", 1).await[0];
    age(&s, None, &[id], 3650).await;
    let r = cli_json(&s, &["prune", "--json"]);
    assert_eq!(r["retain"], "forever");
    assert_eq!(r["events"], json!([]));
    assert!(exists(&s, id).await);
}

/// A workflow run that is still going keeps its node jobs whatever their age; ended runs go
/// with the same age rule (their node runs with them), and inline-node events are pruned as
/// their workflow's (the server's `--retain`).
#[tokio::test]
async fn workflow_runs_keep_their_jobs_while_going_and_go_by_age_once_ended() {
    let s = Server::start_with(ServerOpts {
        args: ["--retain", "30d", "--retention-interval", "200ms"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    });
    for (name, second) in [("going", "sleep 60"), ("ended", "true")] {
        let body = json!({"nodes": [
            {"id": "a", "type": "bash", "script": "echo a"},
            {"id": "b", "type": "bash", "after": ["a"], "script": second},
        ]});
        let (st, r) = s
            .api("PUT", &format!("/api/v1/workflows/{name}"), Some(body))
            .await;
        assert_eq!(st, 200, "{r}");
    }
    let start = |name: &'static str| {
        let s = &s;
        async move {
            let (st, r) = s
                .api("POST", &format!("/api/v1/workflows/{name}/runs"), None)
                .await;
            assert_eq!(st, 201, "{r}");
            r["id"].as_i64().unwrap()
        }
    };
    let detail = |id: i64| {
        let s = &s;
        async move {
            s.api("GET", &format!("/api/v1/workflow-runs/{id}"), None)
                .await
        }
    };
    let going = start("going").await;
    let ended = start("ended").await;
    let job_of = |d: &Value, node: &str| {
        d["nodes"]
            .as_array()
            .and_then(|ns| ns.iter().find(|n| n["node"] == node))
            .and_then(|n| n["job_id"].as_i64())
    };
    s.wait_for(
        "node a of the going run to end and b to start",
        Duration::from_secs(30),
        || async {
            let (_, d) = detail(going).await;
            d["nodes"][1]["status"] == "running"
        },
    )
    .await;
    s.wait_for("the ended run to end", Duration::from_secs(30), || async {
        let (_, d) = detail(ended).await;
        d["run"]["status"] == "succeeded"
    })
    .await;
    let (_, g) = detail(going).await;
    let (_, e) = detail(ended).await;
    let going_a = job_of(&g, "a").expect("job");
    let ended_jobs = [job_of(&e, "a").unwrap(), job_of(&e, "b").unwrap()];
    age(&s, None, &[going_a], 40).await;
    age(&s, None, &ended_jobs, 40).await;
    execute(
        &s,
        None,
        &format!(
            "UPDATE workflow_runs SET finished_at = finished_at - {}, created_at = created_at - {} \
             WHERE id = {ended}",
            40 * DAY_MS,
            40 * DAY_MS
        ),
    )
    .await;
    s.wait_for(
        "the ended run to be pruned",
        Duration::from_secs(20),
        || async { detail(ended).await.0 == 404 },
    )
    .await;
    for id in ended_jobs {
        assert!(!exists(&s, id).await, "job {id} of the ended run was kept");
    }
    assert_eq!(
        sqlite_count(
            &s,
            &format!("SELECT COUNT(*) FROM workflow_node_runs WHERE run_id = {ended}")
        )
        .await,
        0
    );
    // Sweeps have run since the aging: the going run's old job is still there.
    assert!(
        exists(&s, going_a).await,
        "a job of a run still going was pruned"
    );
    let (_, g) = detail(going).await;
    assert_eq!(g["run"]["status"], "running");
    // Once that run has ended, its old job goes too (the run itself is recent and stays).
    let (st, _) = s
        .api(
            "POST",
            &format!("/api/v1/workflow-runs/{going}/cancel"),
            None,
        )
        .await;
    assert_eq!(st, 200);
    s.wait_for(
        "the old job of the ended run to go",
        Duration::from_secs(30),
        || async { !exists(&s, going_a).await },
    )
    .await;
    assert_eq!(detail(going).await.0, 200);
}
