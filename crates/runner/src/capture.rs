//! Reading the script's stdout and stderr: one thread per pipe, bytes split into lines, decoded
//! lossily, handed to the [`Emitter`] as they arrive.
//!
//! Pipes are always drained to EOF, even past the output cap, so a chatty script never blocks on a
//! full pipe. Not for numbering or capping lines: the emitter does that for both streams at once.

use std::io::{self, Read};
use std::sync::mpsc::Sender;
use std::sync::Arc;

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

/// Starts the reader thread for one pipe; `done` gets a message when the pipe reached EOF.
pub fn spawn_reader<R: Read + Send + 'static>(
    mut pipe: R,
    stream: Stream,
    emitter: Arc<Emitter>,
    done: Sender<()>,
) -> io::Result<()> {
    std::thread::Builder::new()
        .name(format!("read-{}", stream.as_str()))
        .spawn(move || {
            let mut splitter = LineSplitter::default();
            let mut buf = vec![0u8; 64 * 1024];
            let mut lines = Vec::new();
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if emitter.is_truncated() {
                            continue; // keep draining, nothing more is kept
                        }
                        splitter.push(&buf[..n], &mut lines);
                        if !lines.is_empty() {
                            emitter.script_lines(stream, std::mem::take(&mut lines), now_ms());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        diag!("cronium-runner: reading {}: {e}", stream.as_str());
                        break;
                    }
                }
            }
            splitter.finish(&mut lines);
            if !lines.is_empty() {
                emitter.script_lines(stream, lines, now_ms());
            }
            let _ = done.send(());
        })
        .map(|_| ())
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
