//! The scheduler against a real store (an SQLite file and a PostgreSQL database), with time
//! driven by a manual clock: each test moves the clock and runs passes ([`Scheduler::step`]) or
//! the loop itself, and asserts on the jobs in the store. Nothing here sleeps for time to pass.
//!
//! PostgreSQL variants need `CRONIUM_TEST_PG_URL` (see scripts/test-pg.sh); without it they fail.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cronium_core::clock::{Clock, ManualClock};
use cronium_core::metrics::{KindLabel, Metrics};
use cronium_core::spec;
use cronium_model::{EventStatus, JobStatus, Trigger};
use cronium_server::scheduler::{
    self, Deps, Scheduler, FOLLOWER_POLL, LEASE_TTL, LOCK_NAME, MISSED_GRACE_MS,
};
use cronium_store::{EventRow, JobFilter, JobOutcome, JobRow, Store};
use sqlx::{Connection, Executor};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// 2026-01-01T00:00:00Z: a whole minute, so cron seconds line up with the test's offsets.
const T0: i64 = 1_767_225_600_000;

/// `both!(a, b)` turns each async fn `a(Store)` into the tests `a::sqlite` and `a::postgres`.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    crate::on_sqlite(super::$name).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    crate::on_postgres(super::$name).await
                }
            }
        )*
    };
}

both!(
    fires_each_tick_at_its_instant,
    two_schedulers_fire_each_tick_once,
    follower_takes_over_a_killed_leader_within_the_lease,
    a_scheduler_that_lost_the_lease_fires_nothing,
    a_refused_renewal_stops_firing_at_once,
    graceful_stop_hands_over_at_once,
    missed_ticks_are_skipped_after_downtime,
    missed_ticks_run_once_after_downtime,
    overlap_skip_drops_ticks_while_a_job_is_active,
    overlap_queue_enqueues_every_tick_serially,
    cron_follows_the_time_zone_across_dst,
    a_paused_event_stops_firing,
    a_one_shot_at_fires_once,
    max_executions_pauses_the_event,
    a_broken_event_is_marked_skipped_and_repaired,
    the_loop_wakes_on_the_injected_clock,
    workflows_fire_at_their_instants,
    workflow_overlap_skip_and_queue,
    workflow_missed_ticks_skip_or_run_once,
    a_broken_workflow_is_marked_and_repaired,
);

async fn on_sqlite<F, Fut>(body: F)
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite:{}/cronium.db", dir.path().display());
    let store = Store::open(&url).await.expect("open sqlite store");
    let result = tokio::spawn(body(store.clone())).await;
    store.close().await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn on_postgres<F, Fut>(body: F)
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let server = std::env::var("CRONIUM_TEST_PG_URL").expect(
        "CRONIUM_TEST_PG_URL is not set: run `eval \"$(scripts/test-pg.sh | tail -n1)\"` first",
    );
    let name = format!("cronium_sched_{:016x}", rand::random::<u64>());
    let mut admin = sqlx::PgConnection::connect(&server)
        .await
        .expect("connect to CRONIUM_TEST_PG_URL");
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create test database");
    let url = match server.rfind('/') {
        Some(i) => format!("{}/{name}", &server[..i]),
        None => panic!("bad CRONIUM_TEST_PG_URL {server}"),
    };
    let store = Store::open(&url).await.expect("open postgres store");
    let result = tokio::spawn(body(store.clone())).await;
    store.close().await;
    admin
        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await
        .expect("drop test database");
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// A scheduler on `store` with its own manual clock and metrics.
struct Node {
    sched: Scheduler,
    clock: Arc<ManualClock>,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
}

fn node(store: &Store, holder: &str, now: i64) -> Node {
    let clock = Arc::new(ManualClock::new(now));
    let metrics = Arc::new(Metrics::new());
    let wake = Arc::new(Notify::new());
    let deps = Deps {
        store: store.clone(),
        metrics: metrics.clone(),
        agent_wake: Arc::new(Notify::new()),
        scheduler_wake: wake.clone(),
        clock: clock.clone(),
        bus: Arc::new(cronium_core::logbus::LogBus::new()),
    };
    Node {
        sched: Scheduler::new(deps, holder),
        clock,
        metrics,
        wake,
    }
}

impl Node {
    /// Moves this node's clock to `t` and runs one pass.
    async fn step_at(&mut self, t: i64) -> Duration {
        self.clock.set(t);
        self.sched.step().await
    }

    fn ticks(&self, kind: &str) -> u64 {
        self.metrics
            .ticks
            .get_or_create(&KindLabel { kind: kind.into() })
            .get()
    }
}

/// Applies an event file as the API does (validated, normalised) and reschedules it at `now`.
async fn apply(store: &Store, yaml: &str, now: i64) -> EventRow {
    let spec = spec::parse_yaml(yaml).expect("valid event file");
    let (event, _) = store
        .apply_event(&spec.name, spec.status, &spec.to_value(), now)
        .await
        .expect("apply");
    scheduler::reschedule_at(store, &Notify::new(), &event, now)
        .await
        .expect("reschedule");
    store.get_event(event.id).await.unwrap().unwrap()
}

async fn jobs(store: &Store, event: &str) -> Vec<JobRow> {
    let mut v = store
        .list_jobs(&JobFilter {
            event_name: Some(event.into()),
            limit: Some(10_000),
            ..Default::default()
        })
        .await
        .unwrap();
    v.reverse();
    v
}

async fn instants(store: &Store, event: &str) -> Vec<i64> {
    jobs(store, event)
        .await
        .iter()
        .map(|j| j.scheduled_for.expect("a scheduled job"))
        .collect()
}

fn every_second(from: i64, to: i64) -> Vec<i64> {
    (from..=to).step_by(1000).collect()
}

async fn fires_each_tick_at_its_instant(store: Store) {
    let mut a = node(&store, "a", T0 + 300);
    apply(
        &store,
        "name: tick\ntype: bash\nschedule: '* * * * * *'\noverlap: allow\nscript: 'true'\n",
        T0 + 300,
    )
    .await;
    // Between instants: nothing due; the loop is told to sleep until the next one.
    assert_eq!(a.step_at(T0 + 300).await, Duration::from_millis(700));
    assert!(a.sched.is_leader());
    assert!(jobs(&store, "tick").await.is_empty());
    for k in 1..=5 {
        let at = T0 + k * 1000;
        a.step_at(at).await;
        // A pass 1 ms before the next instant fires nothing more.
        assert_eq!(a.step_at(at + 999).await, Duration::from_millis(1));
    }
    let js = jobs(&store, "tick").await;
    assert_eq!(
        js.iter()
            .map(|j| j.scheduled_for.unwrap())
            .collect::<Vec<_>>(),
        every_second(T0 + 1000, T0 + 5000)
    );
    for j in &js {
        assert_eq!(j.created_at, j.scheduled_for.unwrap(), "fired late: {j:?}");
        assert_eq!(j.trigger, Trigger::Schedule);
    }
    // A late pass (the process was busy) does not shift later instants: no drift.
    a.step_at(T0 + 6400).await;
    a.step_at(T0 + 7000).await;
    assert_eq!(
        instants(&store, "tick").await,
        every_second(T0 + 1000, T0 + 7000)
    );
    assert_eq!(a.ticks("fired"), 7);
}

async fn two_schedulers_fire_each_tick_once(store: Store) {
    let mut a = node(&store, "a", T0);
    let mut b = node(&store, "b", T0);
    apply(
        &store,
        "name: once\ntype: bash\nschedule: '* * * * * *'\noverlap: allow\nscript: 'true'\n",
        T0,
    )
    .await;
    for k in 1..=10 {
        let t = T0 + k * 1000;
        // Both wake at the instant, in either order.
        if k % 2 == 0 {
            a.step_at(t).await;
            b.step_at(t).await;
        } else {
            b.step_at(t).await;
            a.step_at(t).await;
        }
        assert!(
            a.sched.is_leader() != b.sched.is_leader(),
            "exactly one leads at {k}"
        );
    }
    assert_eq!(
        instants(&store, "once").await,
        every_second(T0 + 1000, T0 + 10_000)
    );
    assert_eq!(a.ticks("fired") + b.ticks("fired"), 10);
}

async fn follower_takes_over_a_killed_leader_within_the_lease(store: Store) {
    let ttl = LEASE_TTL.as_millis() as i64;
    let poll = FOLLOWER_POLL.as_millis() as i64;
    let mut a = node(&store, "a", T0);
    let mut b = node(&store, "b", T0);
    apply(
        &store,
        "name: f\ntype: bash\nschedule: '* * * * * *'\noverlap: allow\nscript: 'true'\n",
        T0,
    )
    .await;
    a.step_at(T0).await;
    assert!(a.sched.is_leader());
    // a leads, passing at every instant (so renewing every second); b polls.
    let mut t = T0;
    while t < T0 + 4000 {
        t += poll;
        if t % 1000 == 0 {
            a.step_at(t).await;
        }
        b.step_at(t).await;
        assert!(!b.sched.is_leader());
    }
    // a is killed right after its pass at T0 + 4000: it never steps again. b keeps polling.
    let killed = T0 + 4000;
    let mut took_over = None;
    while t < killed + 10_000 {
        t += poll;
        b.step_at(t).await;
        if b.sched.is_leader() && took_over.is_none() {
            took_over = Some(t);
        }
    }
    let took_over = took_over.expect("b never took over");
    assert!(
        took_over - killed <= ttl + poll,
        "takeover {} ms after the kill",
        took_over - killed
    );
    assert!(
        ttl + poll < MISSED_GRACE_MS,
        "a failover must stay within the missed grace"
    );
    // Every tick fired once, none lost to the missed-run policy; those of the gap at most
    // TTL + poll late.
    let js = jobs(&store, "f").await;
    assert_eq!(
        js.iter()
            .map(|j| j.scheduled_for.unwrap())
            .collect::<Vec<_>>(),
        every_second(T0 + 1000, killed + 10_000)
    );
    for j in &js {
        let lag = j.created_at - j.scheduled_for.unwrap();
        assert!(lag <= ttl + poll, "tick fired {lag} ms late: {j:?}");
        // The product's bar is 5 s; keep a second of it for store round trips and a busy host.
        assert!(
            lag <= 4000,
            "tick fired {lag} ms late, too close to the 5 s bar"
        );
    }
    assert_eq!(b.ticks("missed"), 0);
}

async fn a_scheduler_that_lost_the_lease_fires_nothing(store: Store) {
    let ttl = LEASE_TTL.as_millis() as i64;
    let mut a = node(&store, "a", T0);
    let mut b = node(&store, "b", T0);
    apply(
        &store,
        "name: l\ntype: bash\nschedule: '* * * * * *'\noverlap: allow\nscript: 'true'\n",
        T0,
    )
    .await;
    a.step_at(T0).await;
    assert!(a.sched.is_leader());
    // a stalls (paused, partitioned); its lease runs out and b takes over, firing the first tick
    // of the gap (one per pass).
    b.step_at(T0 + ttl).await;
    assert!(b.sched.is_leader());
    assert_eq!(instants(&store, "l").await, vec![T0 + 1000]);
    // a wakes up believing its lease still good (its clock says T0 + ttl - 1) and finds the
    // tick T0 + 2000 due: the fire is refused in the store, and a steps down at once.
    a.step_at(T0 + ttl - 1).await;
    assert!(!a.sched.is_leader());
    assert_eq!(a.metrics.scheduler_leader.get(), 0);
    assert_eq!(instants(&store, "l").await, vec![T0 + 1000]);
    assert_eq!(a.ticks("fired"), 0);
    // It stays a follower while b renews; b fires the rest of the gap, once each.
    for t in [T0 + ttl, T0 + ttl, T0 + ttl + 1000] {
        b.step_at(t).await;
        a.step_at(t).await;
        assert!(!a.sched.is_leader() && b.sched.is_leader());
    }
    assert_eq!(
        instants(&store, "l").await,
        every_second(T0 + 1000, T0 + ttl + 1000)
    );
    assert_eq!(a.ticks("fired"), 0);
}

async fn a_refused_renewal_stops_firing_at_once(store: Store) {
    let ttl = LEASE_TTL.as_millis() as i64;
    let mut a = node(&store, "a", T0);
    let mut b = node(&store, "b", T0);
    // Nothing due for a while: a's passes only renew.
    apply(
        &store,
        "name: r\ntype: bash\nschedule: { every: 10s }\noverlap: allow\nscript: 'true'\n",
        T0,
    )
    .await;
    a.step_at(T0).await;
    assert!(a.sched.is_leader());
    assert_eq!(a.metrics.scheduler_leader.get(), 1);
    b.step_at(T0 + ttl).await;
    assert!(b.sched.is_leader());
    // a's next pass (its clock still inside its lease) has nothing to fire, and its renewal is
    // refused: it is a follower from this pass on.
    a.step_at(T0 + ttl - 1).await;
    assert!(!a.sched.is_leader());
    assert_eq!(a.metrics.scheduler_leader.get(), 0);
    // b renews every second up to the event's instant; there a passes first and fires nothing.
    for t in (T0 + ttl + 1000..T0 + 10_000).step_by(1000) {
        b.step_at(t).await;
    }
    a.step_at(T0 + 10_000).await;
    assert!(!a.sched.is_leader());
    b.step_at(T0 + 10_000).await;
    assert_eq!(instants(&store, "r").await, vec![T0 + 10_000]);
    assert_eq!((a.ticks("fired"), b.ticks("fired")), (0, 1));
}

async fn graceful_stop_hands_over_at_once(store: Store) {
    let mut a = node(&store, "a", T0);
    let mut b = node(&store, "b", T0);
    apply(
        &store,
        "name: g\ntype: bash\nschedule: '* * * * * *'\nscript: 'true'\n",
        T0,
    )
    .await;
    a.step_at(T0).await;
    assert!(a.sched.is_leader());
    let clock = a.clock.clone();
    let metrics = a.metrics.clone();
    let shutdown = CancellationToken::new();
    let looping = tokio::spawn(a.sched.run(shutdown.clone()));
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), looping)
        .await
        .expect("the loop did not stop")
        .unwrap();
    assert_eq!(metrics.scheduler_leader.get(), 0);
    // No time has passed (a's lease has 3 s left), yet b leads at once: a unlocked.
    assert_eq!(clock.now_ms(), T0);
    b.step_at(T0).await;
    assert!(b.sched.is_leader(), "b had to wait for a's lease to expire");
    assert_eq!(
        store.lock_holder(LOCK_NAME, T0).await.unwrap().as_deref(),
        Some("b")
    );
}

/// Fires `m` at T0+1 s and T0+2 s, then "stops the server" for 10 s and runs one pass after.
async fn downtime(store: &Store, missed: &str) -> (Node, Vec<i64>) {
    let mut a = node(store, "a", T0);
    apply(
        store,
        &format!(
            "name: m\ntype: bash\nschedule: '* * * * * *'\noverlap: allow\nmissed: {missed}\nscript: 'true'\n"
        ),
        T0,
    )
    .await;
    a.step_at(T0 + 1000).await;
    a.step_at(T0 + 2000).await;
    // Down from T0 + 2.5 s to T0 + 12.5 s (a crash: the lease is left to expire); a new
    // process (new holder) starts.
    let mut restarted = node(store, "a2", T0 + 12_500);
    restarted.step_at(T0 + 12_500).await;
    restarted.step_at(T0 + 13_000).await;
    (restarted, instants(store, "m").await)
}

async fn missed_ticks_are_skipped_after_downtime(store: Store) {
    let (r, fired) = downtime(&store, "skip").await;
    assert_eq!(
        fired,
        vec![T0 + 1000, T0 + 2000, T0 + 13_000],
        "missed ticks were run"
    );
    assert_eq!(r.ticks("missed"), 1);
}

async fn missed_ticks_run_once_after_downtime(store: Store) {
    let (r, fired) = downtime(&store, "run_once").await;
    // One catch-up run for the whole gap (for its first missed instant), then the schedule.
    assert_eq!(fired, vec![T0 + 1000, T0 + 2000, T0 + 3000, T0 + 13_000]);
    let catch_up = &jobs(&store, "m").await[2];
    assert_eq!(catch_up.created_at, T0 + 12_500);
    assert_eq!(r.ticks("fired"), 2);
    // The 10 s of downtime must be longer than the grace, or nothing was missed.
    const { assert!(MISSED_GRACE_MS < 10_000) };
}

async fn overlap_skip_drops_ticks_while_a_job_is_active(store: Store) {
    let mut a = node(&store, "a", T0);
    apply(
        &store,
        "name: s\ntype: bash\nschedule: '* * * * * *'\noverlap: skip\nscript: 'true'\n",
        T0,
    )
    .await;
    a.step_at(T0 + 1000).await;
    // Queued, then running: the next ticks are dropped.
    a.step_at(T0 + 2000).await;
    let job = store
        .claim("w", 60_000, T0 + 2100)
        .await
        .unwrap()
        .expect("the first job");
    a.step_at(T0 + 3000).await;
    a.step_at(T0 + 4000).await;
    assert_eq!(instants(&store, "s").await, vec![T0 + 1000]);
    assert_eq!(a.ticks("overlap"), 3);
    // Once it ended, the next tick fires again.
    let outcome = JobOutcome {
        status: JobStatus::Succeeded,
        exit_code: Some(0),
        output: serde_json::json!({}),
        error: None,
    };
    assert!(store
        .finish(job.id, "w", job.attempt, &outcome, T0 + 4500)
        .await
        .unwrap());
    a.step_at(T0 + 5000).await;
    assert_eq!(instants(&store, "s").await, vec![T0 + 1000, T0 + 5000]);
}

async fn overlap_queue_enqueues_every_tick_serially(store: Store) {
    let mut a = node(&store, "a", T0);
    apply(
        &store,
        "name: q\ntype: bash\nschedule: '* * * * * *'\noverlap: queue\nscript: 'true'\n",
        T0,
    )
    .await;
    for k in 1..=3 {
        a.step_at(T0 + k * 1000).await;
    }
    let js = jobs(&store, "q").await;
    assert_eq!(
        js.iter()
            .map(|j| j.scheduled_for.unwrap())
            .collect::<Vec<_>>(),
        every_second(T0 + 1000, T0 + 3000)
    );
    assert!(
        js.iter().all(|j| j.serial),
        "queued ticks must run one at a time"
    );
    // The queue hands them out one after another: the second waits for the first.
    let first = store.claim("w", 60_000, T0 + 3100).await.unwrap().unwrap();
    assert_eq!(first.scheduled_for, Some(T0 + 1000));
    assert!(store.claim("w", 60_000, T0 + 3100).await.unwrap().is_none());
}

async fn cron_follows_the_time_zone_across_dst(store: Store) {
    let ms = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis()
    };
    for (from, expected) in [
        // Spring forward (Europe/Berlin, 29 March 2026: 02:00 CET -> 03:00 CEST): 02:30 does not
        // exist that day; the run happens when the day's clock gets past it, at 03:00 CEST.
        (
            "2026-03-27T12:00:00Z",
            [
                "2026-03-28T01:30:00Z", // 02:30 CET
                "2026-03-29T01:00:00Z", // 03:00 CEST
                "2026-03-30T00:30:00Z", // 02:30 CEST
            ],
        ),
        // Fall back (25 October 2026: 03:00 CEST -> 02:00 CET): 02:30 happens twice; it runs
        // once, at the first.
        (
            "2026-10-23T12:00:00Z",
            [
                "2026-10-24T00:30:00Z", // 02:30 CEST
                "2026-10-25T00:30:00Z", // 02:30 CEST, not again at 02:30 CET
                "2026-10-26T01:30:00Z", // 02:30 CET
            ],
        ),
    ] {
        let name = format!("tz{}", &from[5..7]);
        let start = ms(from);
        let mut a = node(&store, &format!("a-{name}"), start);
        let e = apply(
            &store,
            &format!(
                "name: {name}\ntype: bash\nschedule: '0 30 2 * * *'\ntimezone: Europe/Berlin\noverlap: allow\nscript: 'true'\n"
            ),
            start,
        )
        .await;
        // Pass at every instant the store says is next (and once an hour in between, to show
        // nothing else fires).
        let mut t = start;
        let end = ms(expected[2]);
        let mut next = e.next_fire_at.expect("a next instant");
        while t < end {
            t = (t + 3_600_000).min(next);
            a.step_at(t).await;
            next = store
                .get_event(e.id)
                .await
                .unwrap()
                .unwrap()
                .next_fire_at
                .unwrap();
        }
        assert_eq!(
            instants(&store, &name).await,
            expected.iter().map(|s| ms(s)).collect::<Vec<_>>(),
            "{name}"
        );
        // Release the lease for the next case's scheduler.
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        a.sched.run(shutdown).await;
    }
}

async fn a_paused_event_stops_firing(store: Store) {
    let mut a = node(&store, "a", T0);
    let yaml = "name: p\ntype: bash\nschedule: '* * * * * *'\noverlap: allow\nscript: 'true'\n";
    apply(&store, yaml, T0).await;
    a.step_at(T0 + 1000).await;
    let paused = apply(&store, &format!("{yaml}status: paused\n"), T0 + 1500).await;
    assert_eq!(paused.next_fire_at, None);
    for k in 2..=5 {
        a.step_at(T0 + k * 1000).await;
    }
    assert_eq!(instants(&store, "p").await, vec![T0 + 1000]);
    // Resumed: it fires again from the next instant, not the ones it missed while paused.
    apply(&store, yaml, T0 + 5500).await;
    a.step_at(T0 + 6000).await;
    assert_eq!(instants(&store, "p").await, vec![T0 + 1000, T0 + 6000]);
}

async fn a_one_shot_at_fires_once(store: Store) {
    let mut a = node(&store, "a", T0);
    let at = T0 + 5000;
    let e = apply(
        &store,
        "name: once\ntype: bash\nschedule: { at: '2026-01-01T00:00:05Z' }\nscript: 'true'\n",
        T0,
    )
    .await;
    assert_eq!(e.next_fire_at, Some(at));
    a.step_at(at - 1).await;
    assert!(jobs(&store, "once").await.is_empty());
    a.step_at(at).await;
    for k in 1..=3 {
        a.step_at(at + k * 1000).await;
    }
    assert_eq!(instants(&store, "once").await, vec![at]);
    assert_eq!(
        store.get_event(e.id).await.unwrap().unwrap().next_fire_at,
        None
    );
}

async fn max_executions_pauses_the_event(store: Store) {
    let mut a = node(&store, "a", T0);
    let e = apply(
        &store,
        "name: thrice\ntype: bash\nschedule: '* * * * * *'\noverlap: allow\nmax_executions: 3\nscript: 'true'\n",
        T0,
    )
    .await;
    for k in 1..=6 {
        a.step_at(T0 + k * 1000).await;
    }
    assert_eq!(
        instants(&store, "thrice").await,
        every_second(T0 + 1000, T0 + 3000)
    );
    let e = store.get_event(e.id).await.unwrap().unwrap();
    assert_eq!((e.status.as_str(), e.next_fire_at), ("paused", None));
}

async fn a_broken_event_is_marked_skipped_and_repaired(store: Store) {
    let mut a = node(&store, "a", T0);
    let good = "name: ok\ntype: bash\nschedule: '* * * * * *'\noverlap: allow\nscript: 'true'\n";
    apply(&store, good, T0).await;
    let bad_yaml =
        "name: bad\ntype: bash\nschedule: '* * * * * *'\noverlap: allow\nscript: 'true'\n";
    let bad = apply(&store, bad_yaml, T0).await;
    // Its stored spec stops parsing (written by a newer release, or by hand): the store takes
    // any JSON.
    let mut spec = bad.spec.clone();
    spec["schedule"] = "every second, please".into();
    let bad = store
        .update_event(bad.id, EventStatus::Active, &spec, T0 + 100)
        .await
        .unwrap();
    a.step_at(T0 + 1000).await;
    let marked = store.get_event(bad.id).await.unwrap().unwrap();
    let reason = marked.broken.clone().expect("marked broken");
    assert!(reason.starts_with("schedule:"), "{reason}");
    assert_eq!(marked.version, bad.version);
    assert_eq!(
        marked.next_fire_at, None,
        "a broken event shows no next run"
    );
    assert_eq!(store.count_broken_events().await.unwrap(), 1);
    // The other events are not held up; the broken one never fires.
    for k in 2..=3 {
        a.step_at(T0 + k * 1000).await;
    }
    assert_eq!(
        instants(&store, "ok").await,
        every_second(T0 + 1000, T0 + 3000)
    );
    assert!(jobs(&store, "bad").await.is_empty());
    // A valid version clears the mark and it fires again.
    apply(&store, bad_yaml, T0 + 3500).await;
    assert_eq!(store.count_broken_events().await.unwrap(), 0);
    a.step_at(T0 + 4000).await;
    assert_eq!(instants(&store, "bad").await, vec![T0 + 4000]);
    assert_eq!(store.get_event(bad.id).await.unwrap().unwrap().broken, None);
}

async fn the_loop_wakes_on_the_injected_clock(store: Store) {
    let a = node(&store, "a", T0 + 100);
    apply(
        &store,
        "name: w\ntype: bash\nschedule: { at: '2026-01-01T00:00:02Z' }\nscript: 'true'\n",
        T0,
    )
    .await;
    let (clock, wake, metrics) = (a.clock.clone(), a.wake.clone(), a.metrics.clone());
    let shutdown = CancellationToken::new();
    let looping = tokio::spawn(a.sched.run(shutdown.clone()));
    let within =
        |what: &'static str,
         cond: Box<dyn Fn() -> futures::future::BoxFuture<'static, bool> + Send>| async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while !cond().await {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "timed out waiting for {what}"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
    let m = metrics.clone();
    within(
        "leadership",
        Box::new(move || {
            let m = m.clone();
            Box::pin(async move { m.scheduler_leader.get() == 1 })
        }),
    )
    .await;
    // The loop sleeps on its clock (or is finishing its first pass); moving the clock to the
    // instant wakes it, and the tick is stamped with the clock's time, not the machine's. (The
    // instant is inside the first lease: a pass still running when the clock jumps past the
    // lease would rightly have its fire refused.)
    clock.set(T0 + 2000);
    let s = store.clone();
    within(
        "the tick",
        Box::new(move || {
            let s = s.clone();
            Box::pin(async move { !jobs(&s, "w").await.is_empty() })
        }),
    )
    .await;
    let j = &jobs(&store, "w").await[0];
    assert_eq!(
        (j.scheduled_for, j.created_at),
        (Some(T0 + 2000), T0 + 2000)
    );
    // An event applied while the loop sleeps is picked up when the loop is woken.
    apply(
        &store,
        "name: w2\ntype: bash\nschedule: { at: '2026-01-01T00:00:02.500Z' }\nscript: 'true'\n",
        T0 + 2000,
    )
    .await;
    wake.notify_one();
    clock.set(T0 + 2500);
    let s = store.clone();
    within(
        "the new event",
        Box::new(move || {
            let s = s.clone();
            Box::pin(async move { !jobs(&s, "w2").await.is_empty() })
        }),
    )
    .await;
    assert_eq!(instants(&store, "w").await, vec![T0 + 2000]);
    // Shutdown gives the lease up.
    shutdown.cancel();
    looping.await.unwrap();
    assert_eq!(metrics.scheduler_leader.get(), 0);
    assert_eq!(store.lock_holder(LOCK_NAME, T0 + 2500).await.unwrap(), None);
}

/// Applies a workflow file as the API does and stores its next instant at `now`.
async fn apply_workflow(store: &Store, yaml: &str, now: i64) -> cronium_store::WorkflowRow {
    let spec = cronium_core::workflow::parse_yaml(yaml).expect("valid workflow file");
    apply_definition(store, &spec, spec.definition(), now).await
}

async fn apply_definition(
    store: &Store,
    spec: &cronium_core::workflow::WorkflowSpec,
    def: cronium_model::workflow::WorkflowDefinition,
    now: i64,
) -> cronium_store::WorkflowRow {
    let (row, _) = store
        .apply_workflow(&def, now)
        .await
        .expect("apply workflow");
    let next = scheduler::next_workflow_instant(&row, spec.parsed_schedule().as_ref(), now);
    store.set_workflow_next_fire(row.id, next).await.unwrap();
    store.get_workflow(row.id).await.unwrap().unwrap()
}

async fn runs_of(store: &Store, name: &str) -> Vec<cronium_store::WorkflowRunRow> {
    let mut v = store
        .list_workflow_runs(&cronium_store::RunFilter {
            workflow_name: Some(name.into()),
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    v.reverse();
    v
}

fn wf(name: &str, extra: &str) -> String {
    format!(
        "name: {name}\nschedule: '* * * * * *'\n{extra}nodes:\n  - id: a\n    type: bash\n    script: 'true'\n"
    )
}

async fn workflows_fire_at_their_instants(store: Store) {
    let mut a = node(&store, "a", T0 + 300);
    apply_workflow(&store, &wf("flow", "overlap: allow\n"), T0 + 300).await;
    a.step_at(T0 + 300).await;
    assert!(runs_of(&store, "flow").await.is_empty());
    for k in 1..=3 {
        a.step_at(T0 + k * 1000).await;
        a.step_at(T0 + k * 1000 + 999).await;
    }
    let runs = runs_of(&store, "flow").await;
    assert_eq!(
        runs.iter()
            .map(|r| r.scheduled_for.unwrap())
            .collect::<Vec<_>>(),
        every_second(T0 + 1000, T0 + 3000)
    );
    for r in &runs {
        assert_eq!(r.trigger, Trigger::Schedule);
        assert_eq!(r.created_at, r.scheduled_for.unwrap(), "fired late: {r:?}");
    }
    // Each run's start node is an ordinary queued job (trigger workflow).
    let js = jobs(&store, "flow/a").await;
    assert_eq!(js.len(), 3);
    assert!(js.iter().all(|j| j.trigger == Trigger::Workflow));
    assert_eq!(a.ticks("fired"), 3);
    // A second scheduler never fires the same tick again.
    let mut b = node(&store, "b", T0 + 3000);
    b.step_at(T0 + 3000).await;
    assert_eq!(runs_of(&store, "flow").await.len(), 3);
}

async fn workflow_overlap_skip_and_queue(store: Store) {
    let mut a = node(&store, "a", T0);
    apply_workflow(&store, &wf("skipper", "overlap: skip\n"), T0).await;
    apply_workflow(&store, &wf("queuer", "overlap: queue\n"), T0).await;
    a.step_at(T0 + 1000).await;
    a.step_at(T0 + 2000).await;
    a.step_at(T0 + 3000).await;
    // skip: one run while it is active; queue: every tick, the later ones waiting.
    assert_eq!(runs_of(&store, "skipper").await.len(), 1);
    assert_eq!(a.ticks("overlap"), 2);
    let queued = runs_of(&store, "queuer").await;
    assert_eq!(queued.len(), 3);
    assert_eq!(
        queued.iter().map(|r| r.status).collect::<Vec<_>>(),
        [
            cronium_model::workflow::WorkflowRunStatus::Running,
            cronium_model::workflow::WorkflowRunStatus::Queued,
            cronium_model::workflow::WorkflowRunStatus::Queued
        ]
    );
    // Once skipper's run ended (its node job finished), its next tick fires.
    let job = jobs(&store, "skipper/a").await.remove(0);
    let claimed = loop {
        let c = store
            .claim("w", 60_000, T0 + 3100)
            .await
            .unwrap()
            .expect("a job");
        if c.id == job.id {
            break c;
        }
    };
    let outcome = JobOutcome {
        status: JobStatus::Succeeded,
        exit_code: Some(0),
        output: serde_json::json!({}),
        error: None,
    };
    assert!(store
        .finish(claimed.id, "w", claimed.attempt, &outcome, T0 + 3500)
        .await
        .unwrap());
    a.step_at(T0 + 4000).await;
    let runs = runs_of(&store, "skipper").await;
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1].scheduled_for, Some(T0 + 4000));
}

async fn workflow_missed_ticks_skip_or_run_once(store: Store) {
    let mut a = node(&store, "a", T0);
    apply_workflow(&store, &wf("skips", "overlap: allow\nmissed: skip\n"), T0).await;
    apply_workflow(
        &store,
        &wf("catches-up", "overlap: allow\nmissed: run_once\n"),
        T0,
    )
    .await;
    a.step_at(T0 + 1000).await;
    // Down for 10 s.
    a.step_at(T0 + 11_500).await;
    a.step_at(T0 + 12_000).await;
    let instants = |runs: Vec<cronium_store::WorkflowRunRow>| {
        runs.iter()
            .map(|r| r.scheduled_for.unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        instants(runs_of(&store, "skips").await),
        vec![T0 + 1000, T0 + 12_000]
    );
    let caught = runs_of(&store, "catches-up").await;
    assert_eq!(caught.len(), 3, "one catch-up run for the gap: {caught:?}");
    assert_eq!(caught[1].created_at, T0 + 11_500);
    assert_eq!(caught[2].scheduled_for, Some(T0 + 12_000));
}

async fn a_broken_workflow_is_marked_and_repaired(store: Store) {
    let mut a = node(&store, "a", T0);
    let yaml = wf("fragile", "overlap: allow\n");
    let spec = cronium_core::workflow::parse_yaml(&yaml).unwrap();
    let row = apply_definition(&store, &spec, spec.definition(), T0).await;
    // A stored version that no longer parses (written by hand, or by a newer release).
    let mut def = spec.definition();
    def.spec["schedule"] = "every second, please".into();
    store.apply_workflow(&def, T0 + 100).await.unwrap();
    a.step_at(T0 + 1000).await;
    let marked = store.get_workflow(row.id).await.unwrap().unwrap();
    let reason = marked.broken.clone().expect("marked broken");
    assert!(reason.starts_with("schedule"), "{reason}");
    assert_eq!(marked.next_fire_at, None);
    a.step_at(T0 + 2000).await;
    assert!(runs_of(&store, "fragile").await.is_empty());
    // A valid version clears the mark and it fires again.
    apply_definition(&store, &spec, spec.definition(), T0 + 2500).await;
    a.step_at(T0 + 3000).await;
    assert_eq!(runs_of(&store, "fragile").await.len(), 1);
    assert_eq!(
        store.get_workflow(row.id).await.unwrap().unwrap().broken,
        None
    );
}
