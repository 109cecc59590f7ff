//! [`SseReader`]: the one reader of the server's Server-Sent Events streams (a job's live log,
//! a workflow run's log, the pages' streams), each [`SseEvent`] stamped with the instant it
//! arrived (the log-latency benchmark measures exactly that).
//!
//! The fields the server sends: `event`, `id`, `data` (several `data:` lines join with `\n`);
//! comments (`: keep-alive`) and other fields (`retry`) are skipped. Not a reconnecting
//! client: when the stream ends, the caller decides whether to open it again (the CLI's
//! followers resume from the last `id`; a benchmark reports the gap).

use std::collections::VecDeque;
use std::time::SystemTime;

use reqwest::Method;

use crate::error::Error;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field (`message` when absent, as the SSE specification says).
    pub event: String,
    /// This event's own `id:` field, if it had one.
    pub id: Option<String>,
    pub data: String,
    /// When the chunk that completed this event was read from the socket.
    pub arrived: SystemTime,
}

/// Reads the events of one streaming response.
pub struct SseReader {
    resp: reqwest::Response,
    /// The request's path, for errors.
    path: String,
    parser: Parser,
}

impl SseReader {
    /// Reads `resp`'s body (whose status the caller has checked) as an event stream.
    pub fn new(resp: reqwest::Response) -> SseReader {
        SseReader {
            path: resp.url().path().to_string(),
            resp,
            parser: Parser::default(),
        }
    }

    /// The next event, or `None` when the server closed the stream (an unfinished event is
    /// dropped, as the specification says). A connection lost mid-stream is
    /// [`Error::Unreachable`].
    pub async fn next(&mut self) -> Result<Option<SseEvent>, Error> {
        loop {
            if let Some(e) = self.parser.ready.pop_front() {
                return Ok(Some(e));
            }
            let chunk = self
                .resp
                .chunk()
                .await
                .map_err(|source| Error::Unreachable {
                    method: Method::GET,
                    path: self.path.clone(),
                    source,
                })?;
            match chunk {
                None => return Ok(None),
                Some(c) => self.parser.feed(&c, SystemTime::now()),
            }
        }
    }

    /// Reads until an event named `event` and returns it; [`Error::Closed`] when the stream
    /// ends first.
    pub async fn until(&mut self, event: &str) -> Result<SseEvent, Error> {
        while let Some(e) = self.next().await? {
            if e.event == event {
                return Ok(e);
            }
        }
        Err(Error::Closed {
            path: self.path.clone(),
            event: event.into(),
        })
    }

    /// Reads until the `end` event the server's streams finish with.
    pub async fn until_end(&mut self) -> Result<SseEvent, Error> {
        self.until("end").await
    }
}

/// The line parser, fed chunks as they arrive (a line or an event may span several).
#[derive(Default)]
struct Parser {
    /// Bytes of a line not ended yet.
    buf: Vec<u8>,
    ready: VecDeque<SseEvent>,
    event: Option<String>,
    id: Option<String>,
    data: Option<String>,
}

impl Parser {
    fn feed(&mut self, chunk: &[u8], arrived: SystemTime) {
        self.buf.extend_from_slice(chunk);
        let mut start = 0;
        while let Some(nl) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + nl;
            let line = &self.buf[start..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let line = String::from_utf8_lossy(line).into_owned();
            start = end + 1;
            self.line(&line, arrived);
        }
        self.buf.drain(..start);
    }

    fn line(&mut self, line: &str, arrived: SystemTime) {
        if line.is_empty() {
            // A blank line dispatches the event; one without data is no event.
            let event = self.event.take();
            let id = self.id.take();
            if let Some(data) = self.data.take() {
                self.ready.push_back(SseEvent {
                    event: event.unwrap_or_else(|| "message".into()),
                    id,
                    data,
                    arrived,
                });
            }
            return;
        }
        if line.starts_with(':') {
            return; // a comment: the server's keep-alive
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.into()),
            "id" => self.id = Some(value.into()),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.into()),
            },
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(p: &mut Parser) -> Vec<(String, Option<String>, String)> {
        p.ready.drain(..).map(|e| (e.event, e.id, e.data)).collect()
    }

    fn ev(event: &str, id: Option<&str>, data: &str) -> (String, Option<String>, String) {
        (event.into(), id.map(str::to_string), data.into())
    }

    #[test]
    fn events_split_across_chunks_anywhere_are_read_whole() {
        let stream: &[u8] = b"event: line\nid: 1\ndata: {\"a\":1}\n\n: keep-alive\n\nevent: line\r\nid: 2\r\ndata: x\r\ndata: y\r\n\r\nevent: end\ndata: {}\n\n";
        let want = vec![
            ev("line", Some("1"), "{\"a\":1}"),
            ev("line", Some("2"), "x\ny"),
            ev("end", None, "{}"),
        ];
        // Every cut point, including inside `\r\n` and inside a field name.
        for cut in 0..stream.len() {
            let mut p = Parser::default();
            let now = SystemTime::now();
            p.feed(&stream[..cut], now);
            p.feed(&stream[cut..], now);
            assert_eq!(fields(&mut p), want, "cut at {cut}");
            assert!(p.buf.is_empty());
        }
        // One byte at a time.
        let mut p = Parser::default();
        for b in stream {
            p.feed(std::slice::from_ref(b), SystemTime::now());
        }
        assert_eq!(fields(&mut p), want);
    }

    #[test]
    fn an_event_is_stamped_with_the_chunk_that_completed_it() {
        let mut p = Parser::default();
        let t0 = SystemTime::UNIX_EPOCH;
        let t1 = t0 + std::time::Duration::from_secs(1);
        p.feed(b"event: line\ndata: a\n", t0);
        assert!(p.ready.is_empty());
        p.feed(b"\n", t1);
        assert_eq!(p.ready.pop_front().map(|e| e.arrived), Some(t1));
    }

    #[test]
    fn fields_follow_the_specification() {
        let mut p = Parser::default();
        p.feed(
            b"data:no space\n\ndata\n\nevent: x\n\nretry: 10\ndata:  two spaces\n\ndata: a\ndata:\ndata: b\n\n",
            SystemTime::now(),
        );
        assert_eq!(
            fields(&mut p),
            vec![
                // No `event:` is `message`; no space after the colon is fine.
                ev("message", None, "no space"),
                // A field without a colon has an empty value.
                ev("message", None, ""),
                // `event: x` without data dispatched nothing (and was forgotten); only the
                // first space after the colon is dropped; `retry` is ignored.
                ev("message", None, " two spaces"),
                // An empty data line is an empty line of the data.
                ev("message", None, "a\n\nb"),
            ]
        );
    }
}
