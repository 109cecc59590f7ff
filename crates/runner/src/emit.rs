//! The runner's stdout: the only place protocol events are written.
//!
//! Every event goes through one [`Emitter`] so that lines from the stdout and stderr reader threads,
//! helper updates and the final result never interleave, log lines get one contiguous `seq` across
//! both streams, and the output cap is enforced in one place. Not for diagnostics: those go to
//! stderr.

use std::io::{self, BufWriter, Stdout, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use cronium_protocol::{RunnerEvent, Stream};

/// Serialises events to stdout; shared by reference between threads.
pub struct Emitter {
    inner: Mutex<Inner>,
    /// Set once a write to stdout failed: nobody is listening any more, so the run is cancelled.
    broken: AtomicBool,
}

struct Inner {
    out: BufWriter<Stdout>,
    /// Last `seq` handed out.
    seq: u64,
    /// Bytes of script output kept so far (line contents, without newlines).
    kept: u64,
    limit: u64,
    truncated: bool,
}

/// Milliseconds since the Unix epoch, for `ts_ms`.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Emitter {
    pub fn new(limit: u64) -> Self {
        Emitter {
            inner: Mutex::new(Inner {
                out: BufWriter::with_capacity(64 * 1024, io::stdout()),
                seq: 0,
                kept: 0,
                limit,
                truncated: false,
            }),
            broken: AtomicBool::new(false),
        }
    }

    /// Sets the output cap once the manifest is known (before any log line is emitted).
    pub fn set_limit(&self, limit: u64) {
        self.lock().limit = limit;
    }

    /// True once stdout could not be written.
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    /// True once the output cap was reached.
    pub fn is_truncated(&self) -> bool {
        self.lock().truncated
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means another thread panicked mid-write; the stream is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes one event and flushes it.
    pub fn event(&self, event: &RunnerEvent) {
        let mut inner = self.lock();
        let ok = write_event(&mut inner.out, event).and_then(|()| inner.out.flush());
        self.note(ok);
    }

    /// Writes a runner-authored log line (stream `system`); it is not counted against the cap.
    pub fn system_line(&self, line: String) {
        let mut inner = self.lock();
        inner.seq += 1;
        let event = RunnerEvent::Log {
            seq: inner.seq,
            stream: Stream::System,
            line,
            ts_ms: now_ms(),
        };
        let ok = write_event(&mut inner.out, &event).and_then(|()| inner.out.flush());
        self.note(ok);
    }

    /// Writes a batch of script lines read together from one pipe, then flushes once: a live
    /// viewer gets them within the time of one read, without a syscall per line under load.
    /// Lines beyond the cap are dropped; the first dropped one triggers the truncation marker.
    pub fn script_lines(&self, stream: Stream, lines: Vec<String>, ts_ms: i64) {
        let mut inner = self.lock();
        let mut result = Ok(());
        for line in lines {
            if inner.truncated {
                break;
            }
            let len = line.len() as u64;
            if inner.kept + len > inner.limit {
                inner.truncated = true;
                inner.seq += 1;
                let (kept, limit) = (inner.kept, inner.limit);
                let marker = RunnerEvent::Log {
                    seq: inner.seq,
                    stream: Stream::System,
                    line: format!("[cronium] output truncated after {kept} bytes (limit {limit})"),
                    ts_ms,
                };
                let trunc = RunnerEvent::Truncated {
                    kept_bytes: kept,
                    limit_bytes: limit,
                };
                result = result
                    .and_then(|()| write_event(&mut inner.out, &marker))
                    .and_then(|()| write_event(&mut inner.out, &trunc));
                break;
            }
            inner.kept += len;
            inner.seq += 1;
            let event = RunnerEvent::Log {
                seq: inner.seq,
                stream,
                line,
                ts_ms,
            };
            result = result.and_then(|()| write_event(&mut inner.out, &event));
        }
        let ok = result.and_then(|()| inner.out.flush());
        self.note(ok);
    }

    fn note(&self, result: io::Result<()>) {
        if result.is_err() && !self.broken.swap(true, Ordering::Relaxed) {
            diag!("cronium-runner: stdout is closed; cancelling the run");
        }
    }
}

/// Same bytes as [`RunnerEvent::to_line`], written straight into the buffer.
fn write_event(out: &mut impl Write, event: &RunnerEvent) -> io::Result<()> {
    serde_json::to_writer(&mut *out, event).map_err(io::Error::other)?;
    out.write_all(b"\n")
}
