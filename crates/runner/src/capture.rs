//! Reading the script's stdout and stderr: one read whenever the run loop finds a pipe readable,
//! bytes split into lines, decoded lossily, handed to the [`Emitter`] as they arrive.
//!
//! Pipes are always drained to EOF, even past the output cap, so a chatty script never blocks on a
//! full pipe. Not for numbering or capping lines: the emitter does that for both streams at once.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

use cronium_protocol::Stream;

use crate::emit::{now_ms, Emitter};

/// Longest line emitted as one event; longer lines are cut into chunks of this size.
pub use cronium_protocol::MAX_LINE_BYTES;

/// Accumulates bytes and yields complete lines (without the newline).
#[derive(Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    /// Adds `data` and appends every complete line (or full-size chunk) to `out`.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<String>) {
        self.buf.extend_from_slice(data);
        let mut start = 0;
        loop {
            let pending = &self.buf[start..];
            match pending.iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    chunk_into(&pending[..nl], out);
                    start += nl + 1;
                }
                None if pending.len() >= MAX_LINE_BYTES => {
                    let cut = char_boundary(pending, MAX_LINE_BYTES);
                    out.push(decode(&pending[..cut]));
                    start += cut;
                }
                None => break,
            }
        }
        self.buf.drain(..start);
    }

    /// Emits what is left after EOF (a last line without a newline).
    pub fn finish(&mut self, out: &mut Vec<String>) {
        if !self.buf.is_empty() {
            chunk_into(&self.buf, out);
            self.buf.clear();
        }
    }
}

fn chunk_into(mut line: &[u8], out: &mut Vec<String>) {
    while line.len() > MAX_LINE_BYTES {
        let cut = char_boundary(line, MAX_LINE_BYTES);
        out.push(decode(&line[..cut]));
        line = &line[cut..];
    }
    out.push(decode(line));
}

/// Moves a cut at `at` back (at most 3 bytes) so it does not split a UTF-8 sequence in two.
fn char_boundary(bytes: &[u8], at: usize) -> usize {
    let mut cut = at;
    while cut > at - 3 && cut < bytes.len() && (bytes[cut] & 0xC0) == 0x80 {
        cut -= 1;
    }
    cut
}

/// Invalid UTF-8 becomes U+FFFD rather than an error: output is for people to read.
fn decode(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One of the script's output pipes, read by the run loop whenever it is readable.
pub struct Capture {
    file: Option<File>,
    stream: Stream,
    splitter: LineSplitter,
    lines: Vec<String>,
}

impl Capture {
    pub fn new(file: File, stream: Stream) -> Capture {
        Capture {
            file: Some(file),
            stream,
            splitter: LineSplitter::default(),
            lines: Vec::new(),
        }
    }

    /// The descriptor to poll, until EOF.
    pub fn fd(&self) -> Option<RawFd> {
        self.file.as_ref().map(|f| f.as_raw_fd())
    }

    /// The pipe is readable (or closed): one read into `buf`, its whole lines emitted at once.
    pub fn on_readable(&mut self, buf: &mut [u8], emitter: &Emitter) {
        let Some(fd) = self.fd() else { return };
        match crate::fdio::read_fd(fd, buf) {
            Ok(0) => self.close(emitter),
            Ok(n) => {
                if emitter.is_truncated() {
                    return; // keep draining, nothing more is kept
                }
                self.splitter.push(&buf[..n], &mut self.lines);
                if !self.lines.is_empty() {
                    emitter.script_lines(self.stream, std::mem::take(&mut self.lines), now_ms());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                diag!("cronium-runner: reading {}: {e}", self.stream.as_str());
                self.close(emitter);
            }
        }
    }

    /// EOF: a last line without a newline is emitted, the pipe closed.
    fn close(&mut self, emitter: &Emitter) {
        self.file = None;
        self.splitter.finish(&mut self.lines);
        if !self.lines.is_empty() && !emitter.is_truncated() {
            emitter.script_lines(self.stream, std::mem::take(&mut self.lines), now_ms());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_across_reads() {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        s.push(b"ab", &mut out);
        assert!(out.is_empty());
        s.push(b"c\nde\n\nf", &mut out);
        assert_eq!(out, ["abc", "de", ""]);
        s.finish(&mut out);
        assert_eq!(out, ["abc", "de", "", "f"]);
    }

    #[test]
    fn long_lines_are_chunked_without_splitting_characters() {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        // 'é' is two bytes; an odd prefix puts a character across the 64 KiB boundary.
        let mut line = b"x".to_vec();
        line.extend("é".repeat(MAX_LINE_BYTES).as_bytes());
        line.push(b'\n');
        s.push(&line, &mut out);
        assert!(out.len() >= 3);
        assert!(out.iter().all(|l| l.len() <= MAX_LINE_BYTES));
        assert!(!out.concat().contains('\u{FFFD}'));
        assert_eq!(out.concat().len(), line.len() - 1);
    }
}
