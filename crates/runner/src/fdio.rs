//! What the poll loops (`watch` for a run, `serve` for the relay) share: one `read(2)` on a raw
//! descriptor, and the splitting of what was read into whole lines. Not for script output, whose
//! lines are also cut to a maximum length (`capture::LineSplitter`).

use std::io;
use std::os::fd::RawFd;

/// One `read(2)`, retried on EINTR.
pub fn read_fd(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is a valid writable buffer of its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Hands every whole line of `pending` (without its `\n`) to `each` and removes it; with `last`
/// (the input ended) also the rest, a last line without a newline.
pub fn take_lines(pending: &mut Vec<u8>, last: bool, mut each: impl FnMut(&[u8])) {
    let mut start = 0;
    while let Some(nl) = pending[start..].iter().position(|&b| b == b'\n') {
        each(&pending[start..start + nl]);
        start += nl + 1;
    }
    if last && start < pending.len() {
        each(&pending[start..]);
        start = pending.len();
    }
    pending.drain(..start);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_lines_are_taken_and_the_rest_kept_until_the_end() {
        let mut pending = b"one\ntwo\nthr".to_vec();
        let mut seen = Vec::new();
        take_lines(&mut pending, false, |l| seen.push(l.to_vec()));
        assert_eq!(seen, [b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(pending, b"thr");
        pending.extend_from_slice(b"ee");
        take_lines(&mut pending, true, |l| seen.push(l.to_vec()));
        assert_eq!(seen.last().map(Vec::as_slice), Some(&b"three"[..]));
        assert!(pending.is_empty());
    }
}
