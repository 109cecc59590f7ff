//! Runs one test body against a fresh SQLite file and a fresh PostgreSQL database.

use std::future::Future;

use cronium_model::Trigger;
use cronium_store::{NewJob, Store};
use serde_json::json;
use sqlx::{Connection, Executor};

/// What a test body gets: the store, and the URL it was opened with (to reopen it).
pub struct Ctx {
    pub store: Store,
    pub url: String,
}

/// `conformance!(a, b)` turns the async fns `a(Ctx)` and `b(Ctx)` of the calling module into the
/// tests `a::sqlite`, `a::postgres`, `b::sqlite`, `b::postgres`.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn sqlite() {
                    crate::harness::run_sqlite(super::$name).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn postgres() {
                    crate::harness::run_postgres(super::$name).await
                }
            }
        )*
    };
}

pub async fn run_sqlite<F, Fut>(body: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dir = tempfile::tempdir().expect("tempdir");
    // A directory that does not exist yet: open must create it.
    let url = format!("sqlite:{}/data/cronium.db", dir.path().display());
    let store = Store::open(&url).await.expect("open sqlite store");
    let result = tokio::spawn(body(Ctx {
        store: store.clone(),
        url,
    }))
    .await;
    store.close().await;
    drop(dir);
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

pub async fn run_postgres<F, Fut>(body: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let server = std::env::var("CRONIUM_TEST_PG_URL").unwrap_or_else(|_| {
        panic!(
            "CRONIUM_TEST_PG_URL is not set: the PostgreSQL variants of the store conformance \
             suite need a server. Run `eval \"$(scripts/test-pg.sh | tail -n1)\"` from the \
             repository root, then rerun the tests."
        )
    });
    let name = format!("cronium_test_{:016x}", rand::random::<u64>());
    let mut admin = sqlx::PgConnection::connect(&server)
        .await
        .unwrap_or_else(|e| panic!("connect to CRONIUM_TEST_PG_URL={server}: {e}"));
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create test database");
    let url = with_database(&server, &name);
    let store = Store::open(&url).await.expect("open postgres store");
    let result = tokio::spawn(body(Ctx {
        store: store.clone(),
        url,
    }))
    .await;
    store.close().await;
    // Dropped on success and on failure alike; FORCE ends connections a failed body leaked.
    admin
        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await
        .expect("drop test database");
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// `postgres://u@h:p/db?x` with its database replaced by `name`.
fn with_database(server: &str, name: &str) -> String {
    let (base, query) = match server.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (server, String::new()),
    };
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
    let root = match base[after_scheme..].find('/') {
        Some(i) => &base[..after_scheme + i],
        None => base,
    };
    format!("{root}/{name}{query}")
}

/// A manual job for event `name` (no event row), due at `run_at`.
pub fn job(name: &str, run_at: i64) -> NewJob {
    NewJob {
        event_id: None,
        event_name: name.to_string(),
        event_version: 1,
        trigger: Trigger::Manual,
        input: json!({"k": name}),
        run_at,
        max_attempts: 1,
        backoff_ms: 1000,
        max_backoff_ms: 60_000,
        serial: false,
        scheduled_for: None,
        timeout_ms: 60_000,
        max_executions: 0,
        routing: Default::default(),
    }
}

/// A job for an existing event.
pub fn event_job(event_id: i64, name: &str, run_at: i64) -> NewJob {
    NewJob {
        event_id: Some(event_id),
        ..job(name, run_at)
    }
}
