//! In-process wake-ups for live log viewers: the agent publishes "job J has lines up to seq N"
//! after the lines are stored; viewers wait on it and then read the store. The store stays the
//! only source of lines (so a viewer never sees a line that is not stored, and reconnecting with
//! the last seq seen misses nothing); the bus only saves viewers from polling.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

/// Latest stored seq per job, and whether the job has ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogMark {
    pub seq: i64,
    pub done: bool,
}

#[derive(Debug, Default)]
pub struct LogBus {
    jobs: Mutex<HashMap<i64, watch::Sender<LogMark>>>,
}

impl LogBus {
    pub fn new() -> Self {
        Self::default()
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
    }

    /// The job has reached a final status; viewers can stop after reading the rest.
    pub fn finish(&self, job_id: i64) {
        if let Some(tx) = self.sender(job_id) {
            tx.send_modify(|m| m.done = true);
        }
        // Forget it once nobody listens; late subscribers read the store and see the status.
        if let Ok(mut jobs) = self.jobs.lock() {
            if jobs.get(&job_id).is_some_and(|tx| tx.receiver_count() == 0) {
                jobs.remove(&job_id);
            }
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
