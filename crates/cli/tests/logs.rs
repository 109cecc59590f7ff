//! A job's log through the real server on PostgreSQL: log writes are fenced by the lease (a
//! worker whose lease was taken stops writing and cancels its run), and a live log whose store
//! read fails ends with an `error` event, which `--follow` reports with a non-zero exit, instead
//! of a normal end with lines missing (issue 10, items 1 and 6).

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::Connection;
use support::*;

/// A server on a fresh PostgreSQL database, and a connection to that database.
async fn pg_server(args: &[&str]) -> (Server, sqlx::PgConnection, String) {
    let db = fresh_pg_database().await;
    let server = Server::start_with(ServerOpts {
        database_url: Some(db.clone()),
        args: args.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    });
    let conn = sqlx::PgConnection::connect(&db)
        .await
        .expect("connect to the server's database");
    (server, conn, db)
}

/// Drops the test database once the server is gone.
async fn drop_database(mut server: Server, conn: sqlx::PgConnection, db: &str) {
    server.crash();
    drop(conn);
    let name = db.rsplit('/').next().unwrap_or_default().to_string();
    let base = std::env::var("CRONIUM_TEST_PG_URL").unwrap_or_default();
    if let Ok(mut admin) = sqlx::PgConnection::connect(&base).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await;
    }
}

/// A child process killed when the test ends, passed or not.
struct Follower(std::process::Child);

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The job's highest stored seq, read straight from the database.
async fn max_seq(conn: &mut sqlx::PgConnection, job: i64) -> i64 {
    sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(seq) FROM logs WHERE job_id = $1")
        .bind(job)
        .fetch_one(conn)
        .await
        .unwrap()
        .unwrap_or(0)
}

async fn wait_until<F, Fut>(what: &str, within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn follow_ends_with_an_error_when_the_log_cannot_be_read() {
    let (s, mut conn, db) = pg_server(&[]).await;
    let dir = shared_tempdir();
    let stop = dir.path().join("stop");
    s.apply_yaml(&format!(
        "name: waits\ntype: bash\ntimeout: 2m\nenv: {{ STOP: {} }}\nscript: |\n  echo first\n  while [ ! -e \"$STOP\" ]; do sleep 0.05; done\n",
        stop.display()
    ))
    .await;
    let id = s.run_event("waits", None).await;

    let mut follower = Follower(
        Command::new(cronium_bin())
            .args(["job", "logs", &id.to_string(), "--follow"])
            .env("CRONIUM_URL", &s.url)
            .env("CRONIUM_TOKEN", &s.token)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cronium job logs --follow"),
    );
    let follower = &mut follower.0;
    let mut out = BufReader::new(follower.stdout.take().unwrap()).lines();
    assert_eq!(
        out.next().and_then(Result::ok).as_deref(),
        Some("first"),
        "the follower prints the live line"
    );

    // The log can no longer be read while the job runs and the follower waits for lines.
    sqlx::query("ALTER TABLE logs RENAME TO logs_gone")
        .execute(&mut conn)
        .await
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = follower.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "the follower did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut follower.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "exit {status:?}, stderr: {err}");
    assert!(
        err.contains(&format!("the log stream of job {id} failed"))
            && err.contains("the database could not be read"),
        "{err}"
    );

    // The stream itself: an `error` event naming where to resume, and no `end`.
    let text = s
        .http
        .get(format!("{}/api/v1/jobs/{id}/logs/stream", s.url))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("event: error"), "{text}");
    assert!(text.contains("\"after\":0"), "{text}");
    assert!(!text.contains("event: end"), "{text}");

    std::fs::write(&stop, "").unwrap();
    drop_database(s, conn, &db).await;
}

#[tokio::test]
async fn a_worker_whose_lease_was_taken_stops_writing_and_cancels_its_run() {
    // A long lease: the heartbeat (every 20 s) would notice the loss late; the log write must.
    let (s, mut conn, db) = pg_server(&["--lease", "60s"]).await;
    let dir = shared_tempdir();
    let pidfile = dir.path().join("pid");
    s.apply_yaml(&format!(
        "name: chatty\ntype: bash\ntimeout: 2m\nenv: {{ PIDFILE: {} }}\nscript: |\n  echo $$ > \"$PIDFILE\"\n  while true; do echo tick; sleep 0.05; done\n",
        pidfile.display()
    ))
    .await;
    let id = s.run_event("chatty", None).await;
    wait_until("the script to run", Duration::from_secs(30), || async {
        std::fs::read_to_string(&pidfile).is_ok_and(|p| p.ends_with('\n'))
    })
    .await;
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while max_seq(&mut conn, id).await < 3 {
        assert!(Instant::now() < deadline, "no lines stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Another worker takes the job over (as after a recovery and a new claim).
    sqlx::query("UPDATE jobs SET lease_owner = 'thief' WHERE id = $1")
        .bind(id)
        .execute(&mut conn)
        .await
        .unwrap();
    // Committed after any append in flight (they hold the job row): nothing is stored after it.
    let at_steal = max_seq(&mut conn, id).await;

    wait_until(
        "the run to be cancelled",
        Duration::from_secs(10),
        || async { !std::path::Path::new(&format!("/proc/{pid}")).exists() },
    )
    .await;
    assert_eq!(
        max_seq(&mut conn, id).await,
        at_steal,
        "lines were stored after the lease was lost"
    );
    // The outcome is left to the new owner.
    let j = s.job(id).await;
    assert_eq!(j["status"], "running", "{j}");

    drop_database(s, conn, &db).await;
}
