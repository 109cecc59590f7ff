//! Web UI sessions (hash of the secret, CSRF token, rotation at login, touch resolution,
//! expiry sweep) and failed-login counters; the job list's UI filters (trigger, server),
//! recent failures and reading a log backwards from a seq.

use cronium_model::{ExecutionStatus, JobStatus, Trigger};
use cronium_store::{JobFilter, JobOutcome, NewLogLine, NewSession};
use serde_json::json;

use crate::harness::{job, Ctx};

conformance!(
    sessions_rotate_touch_and_expire,
    login_failures_count_until_cleared,
    jobs_filter_by_trigger_and_server_and_failures,
    logs_read_backwards_from_a_seq,
);

fn new_session<'a>(id: &'a str, user_id: i64, expires_at: i64) -> NewSession<'a> {
    NewSession {
        id,
        secret_hash: "hash-of-secret",
        user_id,
        csrf_token: "csrf-token",
        expires_at,
    }
}

async fn sessions_rotate_touch_and_expire(t: Ctx) {
    let s = &t.store;
    let user = s
        .create_user("admin", "h", cronium_model::Role::Admin, 1, |_| {
            cronium_store::NewAudit::default()
        })
        .await
        .unwrap()
        .id;
    s.create_session(&new_session("a", user, 10_000), None, 100)
        .await
        .unwrap();
    let a = s.get_session("a").await.unwrap().unwrap();
    assert_eq!(
        (
            a.user_id,
            a.username.as_str(),
            a.secret_hash.as_str(),
            a.csrf_token.as_str()
        ),
        (user, "admin", "hash-of-secret", "csrf-token")
    );
    assert_eq!(
        (a.created_at, a.last_seen_at, a.expires_at),
        (100, 100, 10_000)
    );
    assert_eq!(s.get_session("nope").await.unwrap(), None);

    // A login that replaces `a`: one transaction ends it and starts `b`.
    s.create_session(&new_session("b", user, 20_000), Some("a"), 200)
        .await
        .unwrap();
    assert_eq!(s.get_session("a").await.unwrap(), None);
    let b = s.get_session("b").await.unwrap().unwrap();

    // Touches within the resolution write nothing; later ones do.
    s.touch_session(&b, 250, 100).await.unwrap();
    assert_eq!(s.get_session("b").await.unwrap().unwrap().last_seen_at, 200);
    s.touch_session(&b, 300, 100).await.unwrap();
    assert_eq!(s.get_session("b").await.unwrap().unwrap().last_seen_at, 300);

    // The sweep takes sessions past their end or idle since before the cut.
    s.create_session(&new_session("c", user, 400), None, 300)
        .await
        .unwrap();
    s.create_session(&new_session("d", user, 90_000), None, 50)
        .await
        .unwrap();
    assert_eq!(
        s.delete_expired_sessions(500, 100).await.unwrap(),
        2,
        "c ended, d idle"
    );
    assert!(s.get_session("b").await.unwrap().is_some());
    assert!(s.delete_session("b").await.unwrap());
    assert!(!s.delete_session("b").await.unwrap());
}

async fn login_failures_count_until_cleared(t: Ctx) {
    let s = &t.store;
    assert_eq!(s.login_failures("user:admin").await.unwrap(), None);
    assert_eq!(s.record_login_failure("user:admin", 10).await.unwrap(), 1);
    assert_eq!(s.record_login_failure("user:admin", 20).await.unwrap(), 2);
    assert_eq!(
        s.record_login_failure("addr:127.0.0.1", 30).await.unwrap(),
        1
    );
    assert_eq!(s.login_failures("user:admin").await.unwrap(), Some((2, 20)));
    s.clear_login_failures("user:admin").await.unwrap();
    assert_eq!(s.login_failures("user:admin").await.unwrap(), None);
    assert_eq!(
        s.login_failures("addr:127.0.0.1").await.unwrap(),
        Some((1, 30))
    );
}

async fn finish(t: &Ctx, id: i64, status: JobStatus, server: Option<&str>) {
    let s = &t.store;
    let c = s.claim("w", 60_000, 0).await.unwrap().unwrap();
    assert_eq!(c.id, id);
    s.create_execution(id, "w", 1, server, ExecutionStatus::Running, 0)
        .await
        .unwrap()
        .unwrap();
    let outcome = JobOutcome {
        status,
        exit_code: Some(0),
        output: json!({}),
        error: None,
    };
    assert!(s.finish(id, "w", 1, &outcome, 1).await.unwrap());
}

async fn jobs_filter_by_trigger_and_server_and_failures(t: Ctx) {
    let s = &t.store;
    let a = s.enqueue(&job("a", 0), 0).await.unwrap().id;
    finish(&t, a, JobStatus::Succeeded, Some("web1")).await;
    let b = s
        .enqueue(
            &cronium_store::NewJob {
                trigger: Trigger::Schedule,
                scheduled_for: Some(5),
                ..job("b", 0)
            },
            0,
        )
        .await
        .unwrap()
        .id;
    finish(&t, b, JobStatus::Failed, Some("web2")).await;
    let c = s.enqueue(&job("c", 0), 0).await.unwrap().id;
    finish(&t, c, JobStatus::TimedOut, None).await;
    let d = s.enqueue(&job("d", 0), 0).await.unwrap().id;
    let ids = |v: Vec<cronium_store::JobRow>| v.into_iter().map(|j| j.id).collect::<Vec<_>>();
    let list = |f: JobFilter| async move { ids(s.list_jobs(&f).await.unwrap()) };
    assert_eq!(
        list(JobFilter {
            trigger: Some(Trigger::Schedule),
            ..Default::default()
        })
        .await,
        vec![b]
    );
    assert_eq!(
        list(JobFilter {
            trigger: Some(Trigger::Manual),
            ..Default::default()
        })
        .await,
        vec![d, c, a]
    );
    assert_eq!(
        list(JobFilter {
            server: Some("web1".into()),
            ..Default::default()
        })
        .await,
        vec![a]
    );
    assert_eq!(
        list(JobFilter {
            server: Some("web3".into()),
            ..Default::default()
        })
        .await,
        Vec::<i64>::new()
    );
    assert_eq!(
        list(JobFilter {
            server: Some("web2".into()),
            status: Some(JobStatus::Failed),
            before_id: Some(d),
            ..Default::default()
        })
        .await,
        vec![b]
    );
    assert_eq!(ids(s.recent_failures(10).await.unwrap()), vec![c, b]);
    assert_eq!(ids(s.recent_failures(1).await.unwrap()), vec![c]);
}

async fn logs_read_backwards_from_a_seq(t: Ctx) {
    let s = &t.store;
    let j = s.enqueue(&job("l", 0), 0).await.unwrap();
    s.claim("w", 60_000, 0).await.unwrap().unwrap();
    let lines: Vec<NewLogLine> = (1..=10)
        .map(|i| NewLogLine {
            execution_id: None,
            seq: i,
            stream: "stdout".into(),
            line: format!("line {i}"),
            ts: i,
        })
        .collect();
    assert!(s.append_logs(j.id, "w", 1, &lines).await.unwrap());
    let seqs = |v: Vec<cronium_store::LogLine>| v.into_iter().map(|l| l.seq).collect::<Vec<_>>();
    assert_eq!(
        seqs(s.read_logs_before(j.id, i64::MAX, 3).await.unwrap()),
        vec![8, 9, 10],
        "the tail, in order"
    );
    assert_eq!(
        seqs(s.read_logs_before(j.id, 8, 3).await.unwrap()),
        vec![5, 6, 7]
    );
    assert_eq!(
        seqs(s.read_logs_before(j.id, 3, 10).await.unwrap()),
        vec![1, 2]
    );
    assert!(s.read_logs_before(j.id, 1, 10).await.unwrap().is_empty());
    assert!(
        s.read_logs_before(j.id, 5, 0).await.is_err(),
        "limit is checked"
    );
}

conformance!(seeded_history_is_what_was_asked);

async fn seeded_history_is_what_was_asked(t: Ctx) {
    let s = &t.store;
    let mut first_event = 0;
    for i in 0..3 {
        let e = s
            .create_event(
                &format!("bench-{i}"),
                cronium_model::EventStatus::Active,
                &json!({"name": format!("bench-{i}")}),
                1,
            )
            .await
            .unwrap();
        if i == 0 {
            first_event = e.id;
        }
    }
    let spec = cronium_store::SeedHistory {
        jobs: 40,
        first_event_id: first_event,
        events: 3,
        lines_per_job: 7,
        chunk: 15,
        start_ms: 1_000_000,
    };
    let (a, b) = s.seed_history(&spec).await.unwrap();
    assert_eq!(b - a + 1, 40);
    let all = s
        .list_jobs(&JobFilter {
            limit: Some(100),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 40);
    assert!(all
        .iter()
        .all(|j| j.status.is_final() && j.event_name.starts_with("bench-")));
    let failed = s
        .list_jobs(&JobFilter {
            status: Some(JobStatus::Failed),
            limit: Some(100),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(failed.len(), 6, "15 % of 40");
    let on_web = s
        .list_jobs(&JobFilter {
            server: Some("web0".into()),
            limit: Some(100),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!on_web.is_empty());
    assert_eq!(s.read_logs(a, 0, 100).await.unwrap().len(), 7);
    assert_eq!(s.list_executions(b).await.unwrap().len(), 1);
    s.seed_log(a, 25, 100, 10).await.unwrap();
    let lines = s.read_logs(a, 0, 100).await.unwrap();
    assert_eq!(lines.len(), 32);
    assert_eq!(lines.last().unwrap().seq, 32);
    assert_eq!(lines.last().unwrap().line.len(), "line 32 ".len() + 80);
}
