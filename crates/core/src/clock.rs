//! Wall-clock time as epoch milliseconds: the one unit every timestamp in Cronium uses, and the
//! [`Clock`] that loops which depend on time (the scheduler) are given, so that tests drive time
//! with a [`ManualClock`] instead of sleeping.
//!
//! Not for timeouts of I/O (those are plain `tokio::time` deadlines): only for code whose logic
//! depends on what time it is.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// RFC 3339 text for an epoch-ms timestamp (UTC, millisecond precision).
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// A source of the current time and of sleeps measured on it.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
    /// Completes once `d` has passed on this clock.
    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// The real clock: [`now_ms`] and `tokio::time::sleep`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        now_ms()
    }

    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(tokio::time::sleep(d))
    }
}

/// A clock that only moves when told to ([`set`](Self::set), [`advance`](Self::advance)); its
/// sleeps end when the clock reaches their deadline. For tests of time-dependent loops.
#[derive(Debug)]
pub struct ManualClock {
    now: watch::Sender<i64>,
}

impl ManualClock {
    pub fn new(now_ms: i64) -> Self {
        ManualClock {
            now: watch::Sender::new(now_ms),
        }
    }

    /// Moves the clock to `now_ms` (backwards too: a wall clock can jump back) and wakes the
    /// sleepers whose deadline has come.
    pub fn set(&self, now_ms: i64) {
        self.now.send_replace(now_ms);
    }

    pub fn advance(&self, d: Duration) {
        let step = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        self.now.send_modify(|t| *t = t.saturating_add(step));
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        *self.now.borrow()
    }

    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let deadline = self
            .now_ms()
            .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let mut rx = self.now.subscribe();
        Box::pin(async move {
            // The sender lives as long as `self`, which outlives this future: an error (sender
            // gone) cannot happen, and would only end the sleep early.
            let _ = rx.wait_for(|t| *t >= deadline).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_sleep_ends_when_the_clock_reaches_its_deadline() {
        let clock = std::sync::Arc::new(ManualClock::new(1_000));
        let c = clock.clone();
        let sleeper = tokio::spawn(async move {
            c.sleep(Duration::from_millis(500)).await;
            c.now_ms()
        });
        // Let the sleeper start sleeping at 1_000 (a current-thread runtime: it runs on yield).
        tokio::task::yield_now().await;
        clock.advance(Duration::from_millis(499));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished(), "woke before its deadline");
        clock.advance(Duration::from_millis(1));
        let woke_at = tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("sleep did not end at its deadline")
            .expect("sleeper");
        assert_eq!(woke_at, 1_500);
    }
}
