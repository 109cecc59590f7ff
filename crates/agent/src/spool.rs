//! A remote agent's bounded on-disk buffer of the fenced writes of its jobs while the server
//! cannot be reached (see [`crate::remote::HttpQueue`], which fills and drains it).
//!
//! One append-only file per job attempt, `job-<job>-attempt-<n>.spool` under the spool
//! directory: a header line with the attempt's lease (job, worker, attempt: the worker id is kept
//! so that a restarted agent delivers with the lease the server knows), then one JSON record per
//! line, in the order the writes were made (log batches in seq order, execution updates, the
//! attempt's end). Records are removed only once the server acknowledged them: the number of
//! bytes delivered is kept beside the file (`.sent`), and the file is removed when everything in
//! it is delivered. Losing `.sent` (a crash between an answer and its write) only resends
//! records, which is harmless: log lines are refused on their seqs, execution updates set the
//! same values again, and an attempt's end sent twice meets the ended attempt.
//!
//! Bounded: the spool files together hold at most `max_bytes`. A log line that does not fit is
//! dropped and counted; a record "N lines dropped: the agent's buffer was full" is written in
//! their place (with the seq of the first dropped line) before the next record that is written,
//! so nothing is lost silently. Execution updates and attempt ends always go in (they are small
//! and there are few of them).
//!
//! fsync policy: records are written with one `write` each (a crash of the agent process loses
//! nothing: the page cache has them); the file is synced when an attempt's end is written. A
//! machine crash may cut the last record: a record without its final newline, or that does not
//! parse, ends the file (a warning names it) and is never delivered.

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cronium_core::clock::now_ms;
use cronium_model::queue::{ExecutionUpdate, JobOutcome, NewLogLine};
use serde::{Deserialize, Serialize};

use crate::queue::Lease;

/// One buffered write of an attempt (its lease is the file's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    Logs {
        lines: Vec<NewLogLine>,
    },
    UpdateExecution {
        execution_id: i64,
        update: Box<ExecutionUpdate>,
    },
    UpdateExecutions {
        updates: Vec<(i64, ExecutionUpdate)>,
    },
    Finish {
        outcome: JobOutcome,
    },
    FinishAttempt {
        node_run_id: Option<i64>,
        executions: Vec<(i64, ExecutionUpdate)>,
        outcome: JobOutcome,
    },
    RetryLater {
        run_at: i64,
        error: String,
    },
}

impl Record {
    /// The attempt's last write: nothing of it follows.
    pub fn ends_attempt(&self) -> bool {
        matches!(
            self,
            Record::Finish { .. } | Record::FinishAttempt { .. } | Record::RetryLater { .. }
        )
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    cronium_spool: u32,
    lease: Lease,
}

/// The marker written in place of dropped lines.
pub fn dropped_line(n: u64) -> String {
    format!("[cronium] {n} lines dropped: the agent's buffer was full")
}

type Key = (i64, i32);

fn key(lease: &Lease) -> Key {
    (lease.job_id, lease.attempt)
}

struct SpoolFile {
    lease: Lease,
    path: PathBuf,
    /// Open for appending while this process writes to it (None for a file found at start).
    file: Option<File>,
    /// Bytes in the file (records past a cut one excluded).
    len: u64,
    /// Bytes delivered (the header included).
    sent: u64,
    /// Lines dropped since the last record written, and the seq of the first of them.
    dropped: u64,
    first_dropped_seq: i64,
}

impl SpoolFile {
    fn sent_path(&self) -> PathBuf {
        self.path.with_extension("sent")
    }
}

#[derive(Default)]
struct State {
    files: BTreeMap<Key, SpoolFile>,
    /// Bytes of every spool file.
    total: u64,
    /// Attempts the server said are no longer this agent's: their writes are refused.
    lost: HashSet<Key>,
}

/// The spool directory of one agent.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
    /// Woken when a spool file is created (the delivery loop sleeps while there is none).
    pub wake: tokio::sync::Notify,
}

/// What [`Spool::next`] found.
pub enum Next {
    /// The next record to deliver, and its length in bytes (to [`Spool::ack`] it).
    Record(Lease, Record, u64),
    /// Everything is delivered (the file was removed).
    Empty,
}

impl Spool {
    /// Opens `dir` (created 0700 if missing) and takes over the spool files a previous run of
    /// the agent left there. A cut or unreadable last record is ignored with a warning.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<Spool> {
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let mut state = State::default();
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "spool"))
            .collect();
        names.sort();
        for path in names {
            match load(&path) {
                Ok(Some(f)) => {
                    tracing::warn!(
                        job = f.lease.job_id,
                        attempt = f.lease.attempt,
                        bytes = f.len - f.sent,
                        "buffered writes of an earlier run of this agent: delivering them"
                    );
                    state.total += f.len;
                    state.files.insert(key(&f.lease), f);
                }
                Ok(None) => {
                    let _ = std::fs::remove_file(&path);
                    let _ = std::fs::remove_file(path.with_extension("sent"));
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "an unreadable spool file is ignored")
                }
            }
        }
        Ok(Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            state: Mutex::new(state),
            wake: tokio::sync::Notify::new(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Every change under the lock is a few plain assignments after the I/O succeeded.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True when writes of this attempt are buffered and not yet delivered: the next ones must
    /// follow them (into the spool) to stay in order.
    pub fn holds(&self, lease: &Lease) -> bool {
        self.state().files.contains_key(&key(lease))
    }

    /// True when the server said this attempt is no longer this agent's.
    pub fn is_lost(&self, lease: &Lease) -> bool {
        self.state().lost.contains(&key(lease))
    }

    /// True when nothing waits for delivery.
    pub fn is_empty(&self) -> bool {
        self.state().files.is_empty()
    }

    /// Bytes of every spool file.
    pub fn bytes(&self) -> u64 {
        self.state().total
    }

    /// The attempts with buffered writes.
    pub fn attempts(&self) -> Vec<Lease> {
        self.state()
            .files
            .values()
            .map(|f| f.lease.clone())
            .collect()
    }

    /// Buffers one write of `lease`'s attempt. Log lines beyond the bound are dropped and
    /// counted (see the module's doc); an error is the disk's.
    pub fn append(&self, lease: &Lease, record: Record) -> std::io::Result<()> {
        let mut guard = self.state();
        let state = &mut *guard;
        let k = key(lease);
        let created = !state.files.contains_key(&k);
        if created {
            let path = self.dir.join(format!(
                "job-{}-attempt-{}.spool",
                lease.job_id, lease.attempt
            ));
            // Left by an attempt of the same number whose records were discarded: replaced.
            let _ = std::fs::remove_file(&path);
            let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
            let mut header = serde_json::to_vec(&Header {
                cronium_spool: 1,
                lease: lease.clone(),
            })
            .map_err(std::io::Error::other)?;
            header.push(b'\n');
            file.write_all(&header)?;
            let _ = std::fs::remove_file(path.with_extension("sent"));
            state.total += header.len() as u64;
            state.files.insert(
                k,
                SpoolFile {
                    lease: lease.clone(),
                    path,
                    file: Some(file),
                    len: header.len() as u64,
                    sent: 0,
                    dropped: 0,
                    first_dropped_seq: 0,
                },
            );
        }
        let Some(f) = state.files.get_mut(&k) else {
            return Err(std::io::Error::other("spool file vanished"));
        };
        if f.file.is_none() {
            // A file of an earlier run: this process does not write to it (that run's attempt
            // is over), but keep it appendable for completeness.
            f.file = Some(OpenOptions::new().append(true).open(&f.path)?);
        }
        let ends = record.ends_attempt();
        // Lines of this batch that do not fit: (how many, the first one's seq). They come after
        // the lines kept, so their marker is written later, with the next record.
        let mut tail: (u64, i64) = (0, 0);
        let record = match record {
            Record::Logs { lines } => {
                let mut kept = Vec::with_capacity(lines.len());
                let mut room = self.max_bytes.saturating_sub(state.total);
                for line in lines {
                    // A line's share of the record: its JSON and a separator (64 bytes: the
                    // record's own framing, with room to spare).
                    let size = serde_json::to_vec(&line).map(|v| v.len()).unwrap_or(0) as u64 + 1;
                    if tail.0 > 0 || size + 64 > room {
                        if tail.0 == 0 {
                            tail.1 = line.seq;
                        }
                        tail.0 += 1;
                        continue;
                    }
                    room -= size;
                    kept.push(line);
                }
                if kept.is_empty() {
                    if f.dropped == 0 {
                        f.first_dropped_seq = tail.1;
                        tracing::warn!(
                            job = lease.job_id,
                            "the agent's buffer is full: log lines are dropped (and counted)"
                        );
                    }
                    f.dropped += tail.0;
                    drop(guard);
                    if created {
                        self.wake.notify_one();
                    }
                    return Ok(());
                }
                Record::Logs { lines: kept }
            }
            other => other,
        };
        let mut written = 0u64;
        if f.dropped > 0 {
            let marker = Record::Logs {
                lines: vec![NewLogLine {
                    execution_id: None,
                    seq: f.first_dropped_seq,
                    stream: "system".into(),
                    line: dropped_line(f.dropped),
                    ts: now_ms(),
                }],
            };
            written += write_record(f, &marker)?;
            f.dropped = 0;
        }
        written += write_record(f, &record)?;
        if tail.0 > 0 {
            tracing::warn!(
                job = lease.job_id,
                "the agent's buffer is full: log lines are dropped (and counted)"
            );
            f.dropped = tail.0;
            f.first_dropped_seq = tail.1;
        }
        if ends {
            if let Some(file) = &f.file {
                file.sync_data()?;
            }
        }
        state.total += written;
        drop(guard);
        if created {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Writes the marker of lines dropped since the last record, if any (at delivery, when the
    /// attempt wrote nothing since).
    fn flush_dropped(&self, state: &mut State, k: Key) -> std::io::Result<()> {
        let Some(f) = state.files.get_mut(&k) else {
            return Ok(());
        };
        if f.dropped == 0 {
            return Ok(());
        }
        if f.file.is_none() {
            f.file = Some(OpenOptions::new().append(true).open(&f.path)?);
        }
        let marker = Record::Logs {
            lines: vec![NewLogLine {
                execution_id: None,
                seq: f.first_dropped_seq,
                stream: "system".into(),
                line: dropped_line(f.dropped),
                ts: now_ms(),
            }],
        };
        let n = write_record(f, &marker)?;
        f.dropped = 0;
        state.total += n;
        Ok(())
    }

    /// The next record of `lease`'s attempt to deliver. When everything is delivered, the file
    /// is removed and [`Next::Empty`] returned.
    pub fn next(&self, lease: &Lease) -> std::io::Result<Next> {
        let mut guard = self.state();
        let state = &mut *guard;
        let k = key(lease);
        let Some(f) = state.files.get_mut(&k) else {
            return Ok(Next::Empty);
        };
        if f.sent == 0 {
            f.sent = header_len(&f.path)?;
        }
        if f.sent >= f.len && f.dropped > 0 {
            self.flush_dropped(state, k)?;
        }
        let Some(f) = state.files.get_mut(&k) else {
            return Ok(Next::Empty);
        };
        if f.sent >= f.len {
            let len = f.len;
            let path = f.path.clone();
            let sent_path = f.sent_path();
            state.files.remove(&k);
            state.total = state.total.saturating_sub(len);
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(&sent_path);
            return Ok(Next::Empty);
        }
        let mut r = BufReader::new(File::open(&f.path)?);
        r.seek(SeekFrom::Start(f.sent))?;
        let mut line = Vec::new();
        (&mut r).take(f.len - f.sent).read_until(b'\n', &mut line)?;
        match serde_json::from_slice::<Record>(&line) {
            Ok(rec) if line.ends_with(b"\n") => {
                Ok(Next::Record(f.lease.clone(), rec, line.len() as u64))
            }
            _ => {
                // Checked when the file was opened; a file changed under the agent.
                tracing::warn!(file = %f.path.display(), offset = f.sent, "an unreadable spool record ends the file");
                let cut = f.len - f.sent;
                f.len = f.sent;
                state.total = state.total.saturating_sub(cut);
                Ok(Next::Empty)
            }
        }
    }

    /// The server acknowledged the record [`Spool::next`] returned (`bytes` long).
    pub fn ack(&self, lease: &Lease, bytes: u64) {
        let mut state = self.state();
        let Some(f) = state.files.get_mut(&key(lease)) else {
            return;
        };
        f.sent += bytes;
        // Not synced: a lost position only resends acknowledged records (harmless).
        if let Err(e) = std::fs::write(f.sent_path(), f.sent.to_string()) {
            tracing::warn!(file = %f.sent_path().display(), error = %e, "recording delivered spool records");
        }
    }

    /// The server says the attempt is no longer this agent's: its buffered writes are dropped
    /// (with a warning naming the job) and its later writes refused.
    pub fn discard(&self, lease: &Lease, why: &str) {
        let mut state = self.state();
        let k = key(lease);
        state.lost.insert(k);
        if let Some(f) = state.files.remove(&k) {
            state.total = state.total.saturating_sub(f.len);
            tracing::warn!(
                job = lease.job_id,
                attempt = lease.attempt,
                bytes = f.len.saturating_sub(f.sent),
                "{why}: the buffered log lines and results of job {} attempt {} are discarded",
                lease.job_id,
                lease.attempt
            );
            let _ = std::fs::remove_file(&f.path);
            let _ = std::fs::remove_file(f.sent_path());
        }
    }
}

fn write_record(f: &mut SpoolFile, record: &Record) -> std::io::Result<u64> {
    let mut bytes = serde_json::to_vec(record).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    let Some(file) = f.file.as_mut() else {
        return Err(std::io::Error::other("spool file not open"));
    };
    if let Err(e) = file.write_all(&bytes) {
        // A full disk: what was written of the record goes, so that the file stays whole
        // (the file is in append mode, so the next record starts at the new end).
        let _ = file.set_len(f.len);
        return Err(e);
    }
    f.len += bytes.len() as u64;
    Ok(bytes.len() as u64)
}

fn header_len(path: &Path) -> std::io::Result<u64> {
    let mut r = BufReader::new(File::open(path)?);
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)?;
    Ok(line.len() as u64)
}

/// Reads a spool file left by an earlier run: its lease, where delivery stopped, and how much of
/// it is whole. `None`: nothing to deliver in it.
fn load(path: &Path) -> std::io::Result<Option<SpoolFile>> {
    let mut r = BufReader::new(File::open(path)?);
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)?;
    let header: Header = match serde_json::from_slice(&line) {
        Ok(h) if line.ends_with(b"\n") => h,
        _ => {
            tracing::warn!(file = %path.display(), "a spool file without a whole header is ignored");
            return Ok(None);
        }
    };
    let mut len = line.len() as u64;
    loop {
        line.clear();
        let n = r.read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        let whole = line.ends_with(b"\n") && serde_json::from_slice::<Record>(&line).is_ok();
        if !whole {
            tracing::warn!(
                file = %path.display(),
                job = header.lease.job_id,
                offset = len,
                bytes = n,
                "a cut spool record (the agent stopped while writing it) is ignored"
            );
            break;
        }
        len += n as u64;
    }
    // Only whole records stay: later appends start on a record boundary.
    let actual = std::fs::metadata(path)?.len();
    if actual > len {
        OpenOptions::new().write(true).open(path)?.set_len(len)?;
    }
    let sent_path = path.with_extension("sent");
    let sent = std::fs::read_to_string(&sent_path)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|s| *s <= len)
        .unwrap_or(0);
    if sent >= len || len == header_len(path)? {
        return Ok(None);
    }
    Ok(Some(SpoolFile {
        lease: header.lease,
        path: path.to_path_buf(),
        file: None,
        len,
        sent,
        dropped: 0,
        first_dropped_seq: 0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cronium_model::JobStatus;

    fn lease(job: i64) -> Lease {
        Lease {
            job_id: job,
            worker: "w-1".into(),
            attempt: 1,
        }
    }

    fn lines(from: i64, n: i64) -> Record {
        Record::Logs {
            lines: (from..from + n)
                .map(|seq| NewLogLine {
                    execution_id: Some(7),
                    seq,
                    stream: "stdout".into(),
                    line: format!("line-{seq}"),
                    ts: seq,
                })
                .collect(),
        }
    }

    fn outcome() -> JobOutcome {
        JobOutcome {
            status: JobStatus::Succeeded,
            exit_code: Some(0),
            output: serde_json::Value::Null,
            error: None,
        }
    }

    /// Delivers everything of `lease` (acknowledging each record).
    fn drain(s: &Spool, lease: &Lease) -> Vec<Record> {
        let mut out = Vec::new();
        loop {
            match s.next(lease).expect("next") {
                Next::Record(l, r, n) => {
                    assert_eq!(&l, lease);
                    out.push(r);
                    s.ack(lease, n);
                }
                Next::Empty => return out,
            }
        }
    }

    fn seqs(records: &[Record]) -> Vec<i64> {
        records
            .iter()
            .flat_map(|r| match r {
                Record::Logs { lines } => lines.iter().map(|l| l.seq).collect(),
                _ => Vec::new(),
            })
            .collect()
    }

    #[test]
    fn records_come_back_in_order_and_survive_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = lease(3);
        {
            let s = Spool::open(dir.path(), 1 << 20).expect("open");
            assert!(!s.holds(&l));
            s.append(&l, lines(1, 3)).expect("append");
            s.append(
                &l,
                Record::UpdateExecution {
                    execution_id: 7,
                    update: Box::default(),
                },
            )
            .expect("append");
            s.append(&l, lines(4, 2)).expect("append");
            s.append(
                &l,
                Record::FinishAttempt {
                    node_run_id: None,
                    executions: vec![],
                    outcome: outcome(),
                },
            )
            .expect("append");
            assert!(s.holds(&l));
            // One record delivered before the "crash".
            let Next::Record(_, first, n) = s.next(&l).expect("next") else {
                panic!("a record")
            };
            assert_eq!(first, lines(1, 3));
            s.ack(&l, n);
        }
        let s = Spool::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(
            s.attempts(),
            vec![l.clone()],
            "the lease (worker too) is kept"
        );
        let got = drain(&s, &l);
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(matches!(got[0], Record::UpdateExecution { .. }));
        assert_eq!(got[1], lines(4, 2));
        assert!(matches!(got[2], Record::FinishAttempt { .. }));
        assert!(s.is_empty());
        assert_eq!(s.bytes(), 0);
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("dir").count(),
            0,
            "delivered files are removed"
        );
    }

    #[test]
    fn lines_beyond_the_bound_are_dropped_counted_and_reported_in_their_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Spool::open(dir.path(), 2048).expect("open");
        let l = lease(4);
        for seq in 1..=100 {
            s.append(&l, lines(seq, 1)).expect("append");
        }
        assert!(s.bytes() <= 2048, "bounded: {}", s.bytes());
        // The end always goes in, after the marker of what was dropped.
        s.append(&l, Record::Finish { outcome: outcome() })
            .expect("append");
        let got = drain(&s, &l);
        let kept = seqs(&got);
        assert!(kept.windows(2).all(|w| w[0] < w[1]), "in order: {kept:?}");
        let marker = got
            .iter()
            .find_map(|r| match r {
                Record::Logs { lines } if lines[0].stream == "system" => Some(lines[0].clone()),
                _ => None,
            })
            .expect("a marker line");
        let stored = kept.len() as u64 - 1; // the marker has a seq too
        let dropped = 100 - stored;
        assert!(dropped > 0);
        assert_eq!(marker.line, dropped_line(dropped));
        assert_eq!(
            marker.seq,
            stored as i64 + 1,
            "in place of the first dropped line"
        );
        assert!(matches!(got.last(), Some(Record::Finish { .. })));
    }

    #[test]
    fn a_batch_cut_by_the_bound_is_followed_by_its_marker_in_seq_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Spool::open(dir.path(), 4096).expect("open");
        let l = lease(9);
        s.append(&l, lines(1, 100)).expect("append");
        // Delivered with nothing written since: the marker comes at the end.
        let got = drain(&s, &l);
        let all = seqs(&got);
        assert!(all.windows(2).all(|w| w[0] < w[1]), "in seq order: {all:?}");
        let Some(Record::Logs { lines: last }) = got.last() else {
            panic!("a marker last: {got:?}")
        };
        let kept = all.len() as u64 - 1;
        assert!(kept > 0 && kept < 100, "{kept}");
        assert_eq!(last[0].line, dropped_line(100 - kept));
        assert_eq!(last[0].seq, kept as i64 + 1);
        assert!(s.is_empty());
    }

    #[test]
    fn lines_dropped_before_any_was_kept_are_still_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Spool::open(dir.path(), 4096).expect("open");
        // Another attempt filled the buffer.
        s.append(&lease(1), lines(1, 100)).expect("append");
        let l = lease(2);
        s.append(&l, lines(1, 3)).expect("append");
        let got = drain(&s, &l);
        assert_eq!(got.len(), 1, "{got:?}");
        let Record::Logs { lines: marker } = &got[0] else {
            panic!("{got:?}")
        };
        assert_eq!(marker[0].line, dropped_line(3));
        assert_eq!(marker[0].seq, 1);
    }

    #[test]
    fn a_cut_last_record_is_ignored_with_a_warning_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = lease(5);
        let path;
        {
            let s = Spool::open(dir.path(), 1 << 20).expect("open");
            s.append(&l, lines(1, 2)).expect("append");
            s.append(&l, lines(3, 2)).expect("append");
            path = dir.path().join("job-5-attempt-1.spool");
        }
        // The agent died in the middle of a write.
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(br#"{"kind":"logs","lines":[{"execution_id":7,"se"#)
            .expect("write");
        drop(f);
        let s = Spool::open(dir.path(), 1 << 20).expect("reopen");
        let got = drain(&s, &l);
        assert_eq!(got, vec![lines(1, 2), lines(3, 2)]);

        // A file with only part of its header holds nothing and is removed.
        std::fs::write(dir.path().join("job-6-attempt-1.spool"), b"{\"cronium_sp").expect("write");
        let s = Spool::open(dir.path(), 1 << 20).expect("reopen");
        assert!(s.is_empty());
    }

    #[test]
    fn a_discarded_attempt_refuses_later_writes_and_leaves_no_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Spool::open(dir.path(), 1 << 20).expect("open");
        let l = lease(8);
        s.append(&l, lines(1, 5)).expect("append");
        s.discard(&l, "the server says the lease was lost");
        assert!(s.is_lost(&l));
        assert!(!s.holds(&l));
        assert_eq!(s.bytes(), 0);
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
    }
}
