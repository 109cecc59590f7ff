//! The claim gate: how a just-claimed job tells the claim loop that it has made its first
//! write, so that the loop's next claim does not compete with it for the store's one write
//! connection. Not a lock: opening it only lets the loop go on sooner.

use std::sync::Arc;

use tokio::sync::{oneshot, Notify};

/// Tells the claim loop that a job has made its first write (or will not make one), so that the
/// loop's next claim does not compete with it for the store's write connection: a claimed job's
/// gate answers the loop waiting on it; a handed-off job's gate wakes the loop, which its
/// predecessor's end would otherwise have done at once. Opens when dropped too, on every path.
pub(crate) struct ClaimGate {
    started: Option<oneshot::Sender<()>>,
    wake: Option<Arc<Notify>>,
}

impl ClaimGate {
    /// For a job the claim loop just claimed and waits on.
    pub(crate) fn new(tx: oneshot::Sender<()>) -> Self {
        ClaimGate {
            started: Some(tx),
            wake: None,
        }
    }

    /// For a job handed off by its predecessor's end: opening it wakes the claim loop.
    pub(crate) fn waking(wake: Arc<Notify>) -> Self {
        ClaimGate {
            started: None,
            wake: Some(wake),
        }
    }

    /// For a handed-off job whose predecessor's end left nothing else ready: nobody waits.
    pub(crate) fn none() -> Self {
        ClaimGate {
            started: None,
            wake: None,
        }
    }

    /// Opens the gate; only the first call does anything.
    pub(crate) fn open(&mut self) {
        if let Some(tx) = self.started.take() {
            let _ = tx.send(());
        }
        if let Some(wake) = self.wake.take() {
            wake.notify_one();
        }
    }
}

impl Drop for ClaimGate {
    fn drop(&mut self) {
        self.open();
    }
}
