//! In-process wake-ups for live log viewers: the agent publishes "job J has lines up to seq N"
//! after the lines are stored; viewers wait on it and then read the store. The store stays the
//! only source of lines (so a viewer never sees a line that is not stored, and reconnecting with
//! the last seq seen misses nothing); the bus only saves viewers from polling.
//!
//! It also carries cancel requests to the agent running a job in this process
//! ([`LogBus::cancel_requested`]): the request itself is in the store, which the agent's
//! heartbeat reads; the wake-up only makes it read now instead of at its next beat.
//!
//! Several server processes on one PostgreSQL each have their own bus: a [`Relay`] (set once,
//! [`LogBus::set_relay`]) hands every local wake-up to the other processes as a [`Signal`], and
//! what they send is applied with [`LogBus::apply`], which wakes only the watchers this process
//! has (it registers nothing). A lost signal loses no line, only promptness: viewers still reread
//! the store on their fallback timer, and [`LogBus::wake_all`] wakes every watcher when the
//! relay may have missed signals (its connection was lost).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::{broadcast, watch, Notify};

/// Latest stored seq per job, and whether the job has ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogMark {
    pub seq: i64,
    pub done: bool,
}

/// A job's state changed (queued, running, final, retry scheduled, cancelled): `job_id`, or
/// `None` when the writer does not know which jobs (a lease recovery, a scheduler pass).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobChanged {
    pub job_id: Option<i64>,
}

/// A wake-up as it travels between server processes (see [`Relay`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    /// Lines up to `seq` of `job` are stored ([`LogBus::publish`]).
    Lines { job: i64, seq: i64 },
    /// `job` reached a final status ([`LogBus::finish`]).
    Finished { job: i64 },
    /// A job's status changed ([`LogBus::job_changed`]).
    Changed { job: Option<i64> },
    /// A cancel of `job` was stored ([`LogBus::cancel_requested`]).
    Cancel { job: i64 },
}

/// Carries this process's wake-ups to the other server processes on the same database. Called
/// on the writer's path, so it must not wait (queue and send elsewhere).
pub trait Relay: Send + Sync + std::fmt::Debug {
    fn relay(&self, signal: Signal);
}

/// Status changes a slow viewer may fall behind by before it is told it lagged (and resyncs).
pub const STATUS_CAPACITY: usize = 256;

#[derive(Debug)]
pub struct LogBus {
    jobs: Mutex<HashMap<i64, watch::Sender<LogMark>>>,
    statuses: broadcast::Sender<JobChanged>,
    /// The jobs running in this process whose heartbeat listens for cancel requests.
    cancels: Mutex<HashMap<i64, Arc<Notify>>>,
    relay: OnceLock<Arc<dyn Relay>>,
}

impl Default for LogBus {
    fn default() -> Self {
        LogBus {
            jobs: Mutex::default(),
            statuses: broadcast::channel(STATUS_CAPACITY).0,
            cancels: Mutex::default(),
            relay: OnceLock::new(),
        }
    }
}

impl LogBus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends every wake-up from now on to the other server processes too. Only the first
    /// relay set counts (false when one was already set).
    pub fn set_relay(&self, relay: Arc<dyn Relay>) -> bool {
        self.relay.set(relay).is_ok()
    }

    fn relay(&self, signal: Signal) {
        if let Some(r) = self.relay.get() {
            r.relay(signal);
        }
    }

    /// A job's status changed in the store (call after the commit). Never waits: without
    /// receivers the change is dropped, a lagging receiver loses its oldest wake-ups.
    pub fn job_changed(&self, job_id: Option<i64>) {
        let _ = self.statuses.send(JobChanged { job_id });
        self.relay(Signal::Changed { job: job_id });
    }

    /// A wake-up sent by another server process: wakes the watchers of this one, registers
    /// nothing (a job nobody here watches is ignored) and relays nothing.
    pub fn apply(&self, signal: Signal) {
        match signal {
            Signal::Lines { job, seq } => {
                if let Some(tx) = self.existing(job) {
                    tx.send_modify(|m| m.seq = m.seq.max(seq));
                }
            }
            Signal::Finished { job } => {
                if let Some(tx) = self.existing(job) {
                    tx.send_modify(|m| m.done = true);
                }
                self.forget_unwatched(job);
            }
            Signal::Changed { job } => {
                let _ = self.statuses.send(JobChanged { job_id: job });
            }
            Signal::Cancel { job } => self.wake_cancel(job),
        }
    }

    /// Wakes every watcher of this process (log viewers, status streams, cancel listeners), as
    /// if each had been signalled: for when signals from other processes may have been lost.
    /// Each rereads the store, so nothing is missed.
    pub fn wake_all(&self) {
        let senders: Vec<_> = match self.jobs.lock() {
            Ok(jobs) => jobs.values().cloned().collect(),
            Err(_) => Vec::new(),
        };
        for tx in senders {
            tx.send_modify(|_| {});
        }
        let _ = self.statuses.send(JobChanged { job_id: None });
        let cancels = self.cancels.lock().unwrap_or_else(|e| e.into_inner());
        for n in cancels.values() {
            n.notify_one();
        }
    }

    fn existing(&self, job_id: i64) -> Option<watch::Sender<LogMark>> {
        self.jobs.lock().ok()?.get(&job_id).cloned()
    }

    /// Every status change from now on (see [`LogBus::job_changed`]).
    pub fn watch_jobs(&self) -> broadcast::Receiver<JobChanged> {
        self.statuses.subscribe()
    }

    fn sender(&self, job_id: i64) -> Option<watch::Sender<LogMark>> {
        let mut jobs = self.jobs.lock().ok()?;
        Some(
            jobs.entry(job_id)
                .or_insert_with(|| watch::channel(LogMark::default()).0)
                .clone(),
        )
    }

    /// Lines up to `seq` of `job_id` are stored.
    pub fn publish(&self, job_id: i64, seq: i64) {
        if let Some(tx) = self.sender(job_id) {
            tx.send_modify(|m| m.seq = m.seq.max(seq));
        }
        self.relay(Signal::Lines { job: job_id, seq });
    }

    /// The job has reached a final status; viewers can stop after reading the rest.
    pub fn finish(&self, job_id: i64) {
        if let Some(tx) = self.sender(job_id) {
            tx.send_modify(|m| m.done = true);
        }
        self.forget_unwatched(job_id);
        self.relay(Signal::Finished { job: job_id });
    }

    /// Forgets a job once nobody listens; late subscribers read the store and see the status.
    fn forget_unwatched(&self, job_id: i64) {
        if let Ok(mut jobs) = self.jobs.lock() {
            if jobs.get(&job_id).is_some_and(|tx| tx.receiver_count() == 0) {
                jobs.remove(&job_id);
            }
        }
    }

    /// What the heartbeat of `job_id` waits on besides its timer: notified (a permit kept if
    /// it is not waiting yet) when a cancel of the job is requested in this process, for as
    /// long as the returned guard lives.
    pub fn watch_cancel(self: &Arc<Self>, job_id: i64) -> CancelWatch {
        let mut cancels = self.cancels.lock().unwrap_or_else(|e| e.into_inner());
        let notify = cancels.entry(job_id).or_default().clone();
        CancelWatch {
            bus: self.clone(),
            job_id,
            notify,
        }
    }

    /// A cancel of `job_id` was stored: wakes its heartbeat if it runs in this process (a job
    /// run by another process is woken through the [`Relay`], or learns it at its next beat).
    pub fn cancel_requested(&self, job_id: i64) {
        self.wake_cancel(job_id);
        self.relay(Signal::Cancel { job: job_id });
    }

    fn wake_cancel(&self, job_id: i64) {
        let cancels = self.cancels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = cancels.get(&job_id) {
            n.notify_one();
        }
    }

    /// A receiver that changes whenever new lines of `job_id` are stored.
    pub fn subscribe(&self, job_id: i64) -> Option<watch::Receiver<LogMark>> {
        self.sender(job_id).map(|tx| tx.subscribe())
    }

    /// Drops the entry of a job nobody watches any more.
    pub fn release(&self, job_id: i64) {
        if let Ok(mut jobs) = self.jobs.lock() {
            if jobs
                .get(&job_id)
                .is_some_and(|tx| tx.receiver_count() == 0 && tx.borrow().done)
            {
                jobs.remove(&job_id);
            }
        }
    }
}

/// A job's registration for cancel wake-ups ([`LogBus::watch_cancel`]); dropped when the job's
/// run in this process ends, on every path.
pub struct CancelWatch {
    bus: Arc<LogBus>,
    job_id: i64,
    notify: Arc<Notify>,
}

impl CancelWatch {
    /// The wake-up to wait on.
    pub fn notify(&self) -> Arc<Notify> {
        self.notify.clone()
    }
}

impl Drop for CancelWatch {
    fn drop(&mut self) {
        let mut cancels = self.bus.cancels.lock().unwrap_or_else(|e| e.into_inner());
        // Only its own entry: a later attempt of the job may have registered another.
        if cancels
            .get(&self.job_id)
            .is_some_and(|n| Arc::ptr_eq(n, &self.notify))
        {
            cancels.remove(&self.job_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_cancel_request_wakes_only_its_jobs_watcher_even_before_it_waits() {
        let bus = Arc::new(LogBus::new());
        let mine = bus.watch_cancel(1);
        let other = bus.watch_cancel(2);
        // Requested before anyone waits: the permit is kept.
        bus.cancel_requested(1);
        tokio::time::timeout(Duration::from_secs(1), mine.notify().notified())
            .await
            .expect("woken");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), other.notify().notified())
                .await
                .is_err(),
            "another job's watcher was woken"
        );
        // Dropped: a late request wakes nothing (and does not fail).
        drop(mine);
        bus.cancel_requested(1);
        assert!(!bus.cancels.lock().unwrap().contains_key(&1));
        drop(other);
        assert!(bus.cancels.lock().unwrap().is_empty());
    }

    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<Signal>>);

    impl Relay for Recorder {
        fn relay(&self, signal: Signal) {
            self.0.lock().unwrap().push(signal);
        }
    }

    #[tokio::test]
    async fn every_local_wake_up_is_relayed_and_applied_signals_are_not() {
        let bus = LogBus::new();
        let relay = Arc::new(Recorder::default());
        assert!(bus.set_relay(relay.clone()));
        assert!(!bus.set_relay(relay.clone()), "only one relay");
        bus.publish(1, 4);
        bus.job_changed(Some(1));
        bus.job_changed(None);
        bus.cancel_requested(1);
        bus.finish(1);
        assert_eq!(
            *relay.0.lock().unwrap(),
            vec![
                Signal::Lines { job: 1, seq: 4 },
                Signal::Changed { job: Some(1) },
                Signal::Changed { job: None },
                Signal::Cancel { job: 1 },
                Signal::Finished { job: 1 },
            ]
        );
        relay.0.lock().unwrap().clear();
        bus.apply(Signal::Lines { job: 2, seq: 1 });
        bus.apply(Signal::Changed { job: None });
        assert!(
            relay.0.lock().unwrap().is_empty(),
            "applied signals go nowhere"
        );
    }

    #[tokio::test]
    async fn an_applied_signal_wakes_only_existing_watchers_and_registers_nothing() {
        let bus = Arc::new(LogBus::new());
        let mut rx = bus.subscribe(5).unwrap();
        let mut statuses = bus.watch_jobs();
        let cancel = bus.watch_cancel(5);
        bus.apply(Signal::Lines { job: 5, seq: 3 });
        tokio::time::timeout(Duration::from_secs(1), rx.changed())
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(rx.borrow_and_update().seq, 3);
        bus.apply(Signal::Lines { job: 5, seq: 2 });
        assert_eq!(rx.borrow().seq, 3, "a late signal never lowers the mark");
        bus.apply(Signal::Changed { job: Some(5) });
        assert_eq!(statuses.recv().await.unwrap().job_id, Some(5));
        bus.apply(Signal::Cancel { job: 5 });
        tokio::time::timeout(Duration::from_secs(1), cancel.notify().notified())
            .await
            .expect("cancel woken");
        // A job nobody here watches: nothing registered.
        bus.apply(Signal::Lines { job: 6, seq: 1 });
        bus.apply(Signal::Finished { job: 6 });
        assert!(!bus.jobs.lock().unwrap().contains_key(&6));
        bus.apply(Signal::Finished { job: 5 });
        assert!(rx.borrow().done);
    }

    #[tokio::test]
    async fn wake_all_wakes_every_kind_of_watcher() {
        let bus = Arc::new(LogBus::new());
        let mut a = bus.subscribe(1).unwrap();
        let mut b = bus.subscribe(2).unwrap();
        let mut statuses = bus.watch_jobs();
        let cancel = bus.watch_cancel(3);
        bus.wake_all();
        for rx in [&mut a, &mut b] {
            tokio::time::timeout(Duration::from_secs(1), rx.changed())
                .await
                .expect("log watcher woken")
                .unwrap();
        }
        assert_eq!(statuses.recv().await.unwrap().job_id, None);
        tokio::time::timeout(Duration::from_secs(1), cancel.notify().notified())
            .await
            .expect("cancel watcher woken");
    }
}
