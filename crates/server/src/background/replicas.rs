//! Live wake-ups between server replicas on one PostgreSQL. The log bus of each process
//! ([`cronium_core::logbus`]) wakes only that process's viewers; [`PgRelay`] queues every local
//! wake-up and [`run_sender`] sends what has queued as `NOTIFY` on [`CHANNEL`] (one statement per
//! batch, off the writer's path: the agent's log insert never waits for it, and the lines of a
//! job that queue while a batch is on its way go out as one signal). [`run_listener`] `LISTEN`s
//! and applies what the other replicas sent ([`LogBus::apply`]); after its connection was lost
//! (signals may be lost with it) it wakes every watcher of this process, which rereads the store.
//!
//! Signals are wake-ups only: the store stays the source of every line, status and cancel
//! request. A payload is `v1 ORIGIN TOKEN...`, tokens `L<job>:<seq>` (lines stored),
//! `F<job>` (final), `S<job>` / `S*` (status changed), `C<job>` (cancel requested); ORIGIN lets a
//! replica skip its own signals. SQLite has one process: nothing of this runs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cronium_core::logbus::{LogBus, Relay, Signal};
use cronium_store::{BusListener, Store, MAX_PAYLOAD};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The PostgreSQL notification channel of the log bus.
pub const CHANNEL: &str = "cronium_bus";

/// Longest wait between two attempts to connect the listener.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The signals queued since the last batch went out, coalesced: per job the highest seq, each
/// final job, status change and cancel once.
#[derive(Debug, Default)]
struct Pending {
    lines: BTreeMap<i64, i64>,
    finished: BTreeSet<i64>,
    changed: BTreeSet<i64>,
    changed_unknown: bool,
    cancels: BTreeSet<i64>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.lines.is_empty()
            && self.finished.is_empty()
            && self.changed.is_empty()
            && !self.changed_unknown
            && self.cancels.is_empty()
    }

    fn tokens(&self) -> Vec<String> {
        let mut t: Vec<String> = self
            .lines
            .iter()
            .map(|(job, seq)| format!("L{job}:{seq}"))
            .collect();
        t.extend(self.finished.iter().map(|j| format!("F{j}")));
        t.extend(self.changed.iter().map(|j| format!("S{j}")));
        if self.changed_unknown {
            t.push("S*".into());
        }
        t.extend(self.cancels.iter().map(|j| format!("C{j}")));
        t
    }
}

/// The [`Relay`] of a server on PostgreSQL: queues, never waits.
#[derive(Debug)]
pub struct PgRelay {
    origin: String,
    pending: Mutex<Pending>,
    wake: Notify,
}

impl Default for PgRelay {
    fn default() -> Self {
        PgRelay {
            origin: format!("{:016x}", rand::random::<u64>()),
            pending: Mutex::default(),
            wake: Notify::new(),
        }
    }
}

impl PgRelay {
    pub fn new() -> Self {
        Self::default()
    }

    /// This process's id in the payloads.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Everything queued, as payloads of at most [`MAX_PAYLOAD`] bytes; empties the queue.
    fn take_payloads(&self) -> Vec<String> {
        let pending = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut *p)
        };
        if pending.is_empty() {
            return Vec::new();
        }
        encode(&self.origin, &pending.tokens())
    }
}

impl Relay for PgRelay {
    fn relay(&self, signal: Signal) {
        {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            match signal {
                Signal::Lines { job, seq } => {
                    let s = p.lines.entry(job).or_insert(seq);
                    *s = (*s).max(seq);
                }
                Signal::Finished { job } => {
                    p.finished.insert(job);
                }
                Signal::Changed { job: Some(job) } => {
                    p.changed.insert(job);
                }
                Signal::Changed { job: None } => p.changed_unknown = true,
                Signal::Cancel { job } => {
                    p.cancels.insert(job);
                }
            }
        }
        self.wake.notify_one();
    }
}

/// Payloads `v1 ORIGIN TOKEN...` holding every token once, in order, each below the limit.
fn encode(origin: &str, tokens: &[String]) -> Vec<String> {
    let head = format!("v1 {origin}");
    let mut out = Vec::new();
    let mut cur = head.clone();
    for t in tokens {
        if cur.len() + 1 + t.len() > MAX_PAYLOAD && cur.len() > head.len() {
            out.push(std::mem::replace(&mut cur, head.clone()));
        }
        cur.push(' ');
        cur.push_str(t);
    }
    if cur.len() > head.len() {
        out.push(cur);
    }
    out
}

/// The sender and the signals of a payload; `None` when it is not one (then the caller wakes
/// everything rather than guess).
fn decode(payload: &str) -> Option<(&str, Vec<Signal>)> {
    let mut words = payload.split(' ');
    if words.next()? != "v1" {
        return None;
    }
    let origin = words.next()?;
    let mut signals = Vec::new();
    for w in words {
        let (kind, rest) = w.split_at_checked(1)?;
        let signal = match kind {
            "L" => {
                let (job, seq) = rest.split_once(':')?;
                Signal::Lines {
                    job: job.parse().ok()?,
                    seq: seq.parse().ok()?,
                }
            }
            "F" => Signal::Finished {
                job: rest.parse().ok()?,
            },
            "S" if rest == "*" => Signal::Changed { job: None },
            "S" => Signal::Changed {
                job: Some(rest.parse().ok()?),
            },
            "C" => Signal::Cancel {
                job: rest.parse().ok()?,
            },
            _ => return None,
        };
        signals.push(signal);
    }
    Some((origin, signals))
}

/// Sends the queued signals until `shutdown`: one `NOTIFY` statement per batch; what queues
/// while a batch is on its way goes out in the next. A failed send is logged and dropped (the
/// other replicas' viewers fall back to rereading on their timer).
pub async fn run_sender(relay: Arc<PgRelay>, store: Store, shutdown: CancellationToken) {
    let mut failing = false;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = relay.wake.notified() => {}
        }
        let payloads = relay.take_payloads();
        if payloads.is_empty() {
            continue;
        }
        let started = Instant::now();
        match store.notify(CHANNEL, &payloads).await {
            Ok(()) => {
                if failing {
                    tracing::info!("replicas: notifications sent again");
                    failing = false;
                }
                tracing::trace!(
                    payloads = payloads.len(),
                    micros = started.elapsed().as_micros() as u64,
                    "replicas: notified"
                );
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "replicas: notifying the other servers failed; their live viewers fall back to polling");
                    failing = true;
                }
            }
        }
    }
}

/// Listens on [`CHANNEL`] at `database_url` until `shutdown` and applies the other replicas'
/// signals to `bus`; a status change elsewhere (a job queued through another server) also wakes
/// this process's agent through `agent_wake`. Whenever it (re)connects, or its connection was
/// lost, it wakes every watcher of this process (signals sent meanwhile are lost; the store is
/// not).
pub async fn run_listener(
    bus: Arc<LogBus>,
    agent_wake: Arc<Notify>,
    database_url: String,
    origin: String,
    shutdown: CancellationToken,
) {
    let wake_all = || {
        bus.wake_all();
        agent_wake.notify_one();
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        let connected = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            r = BusListener::connect(&database_url, CHANNEL) => r,
        };
        match connected {
            Ok(mut listener) => {
                backoff = Duration::from_millis(100);
                wake_all();
                loop {
                    let next = tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => return,
                        n = listener.next() => n,
                    };
                    match next {
                        Ok(Some(payload)) => match decode(&payload) {
                            Some((from, _)) if from == origin => {}
                            Some((_, signals)) => {
                                if signals.iter().any(|s| matches!(s, Signal::Changed { .. })) {
                                    agent_wake.notify_one();
                                }
                                for s in signals {
                                    bus.apply(s);
                                }
                            }
                            None => {
                                tracing::warn!(payload = %payload, "replicas: a notification that is not a bus signal; waking every viewer");
                                wake_all();
                            }
                        },
                        Ok(None) => {
                            tracing::warn!("replicas: the listener's connection was lost and made again; waking every viewer");
                            wake_all();
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "replicas: the listener failed; reconnecting");
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "replicas: cannot listen for the other servers' signals; live viewers fall back to polling");
            }
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_coalesce_per_job_and_round_trip_through_payloads() {
        let relay = PgRelay::new();
        relay.relay(Signal::Lines { job: 7, seq: 3 });
        relay.relay(Signal::Lines { job: 7, seq: 9 });
        relay.relay(Signal::Lines { job: 7, seq: 5 });
        relay.relay(Signal::Finished { job: 7 });
        relay.relay(Signal::Changed { job: Some(7) });
        relay.relay(Signal::Changed { job: None });
        relay.relay(Signal::Cancel { job: 8 });
        let payloads = relay.take_payloads();
        assert_eq!(payloads.len(), 1);
        let (origin, signals) = decode(&payloads[0]).expect("decodes");
        assert_eq!(origin, relay.origin());
        assert_eq!(
            signals,
            vec![
                Signal::Lines { job: 7, seq: 9 },
                Signal::Finished { job: 7 },
                Signal::Changed { job: Some(7) },
                Signal::Changed { job: None },
                Signal::Cancel { job: 8 },
            ]
        );
        assert!(relay.take_payloads().is_empty(), "the queue was emptied");
    }

    #[test]
    fn a_large_batch_splits_below_the_payload_limit_and_keeps_every_signal() {
        let relay = PgRelay::new();
        for job in 0..2000 {
            relay.relay(Signal::Lines {
                job: 1_000_000 + job,
                seq: 123_456,
            });
        }
        let payloads = relay.take_payloads();
        assert!(payloads.len() > 1);
        let mut n = 0;
        for p in &payloads {
            assert!(p.len() <= MAX_PAYLOAD, "{} bytes", p.len());
            n += decode(p).expect("decodes").1.len();
        }
        assert_eq!(n, 2000);
    }

    #[test]
    fn what_is_not_a_signal_does_not_decode() {
        for bad in [
            "",
            "v2 x L1:2",
            "v1",
            "v1 o L1",
            "v1 o Lx:2",
            "v1 o Q1",
            "v1 o F",
        ] {
            assert!(decode(bad).is_none(), "{bad:?}");
        }
        assert_eq!(decode("v1 o").map(|(_, s)| s.len()), Some(0));
    }
}
