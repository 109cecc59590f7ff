//! Wake-ups between server processes on one PostgreSQL: `NOTIFY` on a channel, and a listener
//! of it. The payloads are opaque here (the server's relay encodes them). SQLite has no such
//! thing: one process per file, nothing to tell.

use sqlx::postgres::PgListener;

use crate::store::Backend;
use crate::{Store, StoreError};

/// The largest payload PostgreSQL accepts is 8000 bytes; callers split below this.
pub const MAX_PAYLOAD: usize = 7900;

impl Store {
    /// Whether other processes can be told of changes ([`Store::notify`]): PostgreSQL only.
    pub fn can_notify(&self) -> bool {
        self.backend == Backend::Postgres
    }

    /// Sends each of `payloads` (at most [`MAX_PAYLOAD`] bytes each) on `channel`, in one
    /// statement; delivered to every listener once this commits, in order. Does nothing on
    /// SQLite.
    pub async fn notify(&self, channel: &str, payloads: &[String]) -> Result<(), StoreError> {
        if !self.can_notify() || payloads.is_empty() {
            return Ok(());
        }
        if let Some(p) = payloads.iter().find(|p| p.len() > MAX_PAYLOAD) {
            return Err(StoreError::Invalid(format!(
                "payload: {} bytes, at most {MAX_PAYLOAD}",
                p.len()
            )));
        }
        let mut sql = String::from("SELECT ");
        for i in 0..payloads.len() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("pg_notify($1, ${})", i + 2));
        }
        let mut q = sqlx::query(&sql).bind(channel.to_string());
        for p in payloads {
            q = q.bind(p.clone());
        }
        q.execute(&self.write).await?;
        Ok(())
    }
}

/// A connection listening on one channel ([`Store::notify`]). It reconnects by itself; what was
/// sent while it was away is lost, which [`BusListener::next`] says.
pub struct BusListener {
    inner: PgListener,
}

impl BusListener {
    /// Connects to the PostgreSQL at `url` and listens on `channel`.
    pub async fn connect(url: &str, channel: &str) -> Result<BusListener, StoreError> {
        let mut inner = PgListener::connect(url).await?;
        inner.listen(channel).await?;
        Ok(BusListener { inner })
    }

    /// The next payload; `Ok(None)` when the connection was lost and made again (payloads sent
    /// in between are lost). An error: the listener could not reconnect (try a new one later).
    pub async fn next(&mut self) -> Result<Option<String>, StoreError> {
        Ok(self
            .inner
            .try_recv()
            .await?
            .map(|n| n.payload().to_string()))
    }
}
