//! Opening a store: choosing the backend from the URL, sizing the pools, applying the SQLite
//! pragmas and running the migrations. Also the transaction helper every write path uses.
//!
//! Not for queries: those live in the module of the table they touch.

use std::path::Path;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, Executor, Transaction};

use crate::workflows::GraphCache;
use crate::StoreError;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// SQLite writes serialise on the file lock anyway; one writer connection avoids busy retries
/// between our own connections, and readers proceed in parallel thanks to WAL.
const SQLITE_READERS: u32 = 4;
const POSTGRES_CONNECTIONS: u32 = 16;
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// Per-connection SQLite settings. WAL is persistent in the file but harmless to repeat;
/// synchronous=NORMAL is safe with WAL (a power loss may drop the last commits, never corrupt);
/// busy_timeout covers other processes (a CLI, a second agent) holding the write lock.
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
     PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;";

/// Which database engine a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Handle to the store. Cheap to clone: it wraps connection pools.
#[derive(Clone, Debug)]
pub struct Store {
    /// Transactions and writes. On SQLite a single connection; on PostgreSQL the same pool as
    /// `read`.
    pub(crate) write: AnyPool,
    /// Plain reads.
    pub(crate) read: AnyPool,
    pub(crate) backend: Backend,
    /// The graphs of workflow versions the progression has read: immutable rows, so read once.
    pub(crate) graphs: std::sync::Arc<GraphCache>,
}

impl Store {
    /// Opens (creating and migrating if needed) the database at `url`: `sqlite:PATH` (the file
    /// and its directory are created when missing; `sqlite::memory:` for a private in-memory
    /// database) or `postgres://...` (the database must exist).
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::open_postgres(url).await
        } else if url.starts_with("sqlite:") {
            Self::open_sqlite(url).await
        } else {
            Err(StoreError::UnsupportedUrl(redact(url)))
        }
    }

    async fn open_postgres(url: &str) -> Result<Store, StoreError> {
        let pool = AnyPoolOptions::new()
            .max_connections(POSTGRES_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(url)
            .await?;
        // The migrator takes a PostgreSQL advisory lock, so several servers may open at once.
        POSTGRES_MIGRATIONS.run(&pool).await?;
        Ok(Store {
            write: pool.clone(),
            read: pool,
            backend: Backend::Postgres,
            graphs: Default::default(),
        })
    }

    async fn open_sqlite(url: &str) -> Result<Store, StoreError> {
        let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let memory = path.is_empty()
            || path == ":memory:"
            || query.is_some_and(|q| q.contains("mode=memory"));
        let url = if memory || query.is_some_and(|q| q.contains("mode=")) {
            url.to_string()
        } else {
            if let Some(dir) = Path::new(path).parent() {
                if !dir.as_os_str().is_empty() {
                    std::fs::create_dir_all(dir)?;
                }
            }
            let sep = if query.is_some() { '&' } else { '?' };
            format!("{url}{sep}mode=rwc")
        };

        let options = |max: u32| {
            AnyPoolOptions::new()
                .max_connections(max)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                // A SQLite connection is a file opened in this process: it cannot have been
                // dropped by a network or a restarted server, and the pool's default ping
                // before each acquire is one more round trip to the connection's worker
                // thread on every statement outside a transaction and every transaction.
                .test_before_acquire(false)
                .after_connect(|conn, _meta| {
                    Box::pin(async move {
                        conn.execute(SQLITE_PRAGMAS).await?;
                        Ok(())
                    })
                })
        };
        let mut write_options = options(1);
        if memory {
            // The database lives only as long as its one connection: never let the pool recycle it.
            write_options = write_options
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        let write = write_options.connect(&url).await?;
        SQLITE_MIGRATIONS.run(&write).await?;
        // An in-memory database exists once per connection: everything must share the writer.
        let read = if memory {
            write.clone()
        } else {
            options(SQLITE_READERS).connect(&url).await?
        };
        Ok(Store {
            write,
            read,
            backend: Backend::Sqlite,
            graphs: Default::default(),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes every connection (waits for checked-out ones to come back).
    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }

    /// Starts a write transaction. On SQLite it takes the write lock up front (`BEGIN
    /// IMMEDIATE`): a deferred transaction that reads and then writes can fail with
    /// SQLITE_BUSY_SNAPSHOT when another process wrote in between, and busy_timeout does not
    /// help there.
    pub(crate) async fn begin_write(&self) -> Result<Transaction<'static, Any>, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => self.write.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.write.begin().await?,
        })
    }

    /// ` FOR UPDATE` on PostgreSQL, nothing on SQLite (where the write transaction already holds
    /// the database lock). Appended to a SELECT that reads a row the transaction will change.
    pub(crate) fn for_update(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        }
    }
}

/// Hides a password in a URL before it goes into an error message.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_string(),
    }
}

/// Used by modules that fetch an optional row and decode it.
pub(crate) fn map_opt<T>(
    row: Option<AnyRow>,
    f: impl FnOnce(&AnyRow) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    row.as_ref().map(f).transpose()
}
