//! A minimal Server-Sent Events reader over a streaming HTTP response: what a live log viewer
//! sees, with the instant each event arrived (the log-latency benchmark measures exactly that).
//!
//! Not a general SSE client: no reconnection and no `retry:` handling; a benchmark that loses its
//! stream reports an error instead of hiding the gap.

use std::time::SystemTime;

use futures::StreamExt;

#[derive(Debug, thiserror::Error)]
pub enum SseError {
    #[error("reading the event stream: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the event stream ended before an `end` event")]
    Closed,
}

/// One dispatched event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    /// The `event:` field (`message` when absent, as the SSE spec says).
    pub event: String,
    pub id: Option<String>,
    pub data: String,
    /// When the last byte of this event was read from the socket.
    pub arrived: SystemTime,
}

pub struct SseReader {
    /// Chunks copied out of reqwest's `Bytes` (the crate does not re-export the type); the copy
    /// is negligible next to the network path being measured.
    body: futures::stream::BoxStream<'static, reqwest::Result<Vec<u8>>>,
    buf: Vec<u8>,
    ready: std::collections::VecDeque<SseEvent>,
    event: Option<String>,
    id: Option<String>,
    data: Option<String>,
}

impl SseReader {
    pub fn new(resp: reqwest::Response) -> SseReader {
        let body = resp.bytes_stream().map(|r| r.map(|b| b.to_vec())).boxed();
        SseReader {
            body,
            buf: Vec::with_capacity(64 * 1024),
            ready: Default::default(),
            event: None,
            id: None,
            data: None,
        }
    }

    /// The next event, or `None` when the server closed the stream.
    pub async fn next(&mut self) -> Result<Option<SseEvent>, SseError> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Ok(Some(e));
            }
            match self.body.next().await {
                None => return Ok(None),
                Some(chunk) => {
                    let chunk = chunk?;
                    let arrived = SystemTime::now();
                    self.buf.extend_from_slice(chunk.as_ref());
                    self.parse(arrived);
                }
            }
        }
    }

    fn parse(&mut self, arrived: SystemTime) {
        let mut start = 0;
        while let Some(nl) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let mut line = &self.buf[start..start + nl];
            start += nl + 1;
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let line = String::from_utf8_lossy(line).into_owned();
            if line.is_empty() {
                if let Some(data) = self.data.take() {
                    self.ready.push_back(SseEvent {
                        event: self.event.take().unwrap_or_else(|| "message".into()),
                        id: self.id.take(),
                        data,
                        arrived,
                    });
                } else {
                    self.event = None;
                }
                continue;
            }
            if line.starts_with(':') {
                continue; // keep-alive comment
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f.to_string(), v.strip_prefix(' ').unwrap_or(v).to_string()),
                None => (line, String::new()),
            };
            match field.as_str() {
                "event" => self.event = Some(value),
                "id" => self.id = Some(value),
                "data" => match &mut self.data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(&value);
                    }
                    None => self.data = Some(value),
                },
                _ => {}
            }
        }
        self.buf.drain(..start);
    }

    /// Reads until the `end` event and returns it.
    pub async fn until_end(&mut self) -> Result<SseEvent, SseError> {
        while let Some(e) = self.next().await? {
            if e.event == "end" {
                return Ok(e);
            }
        }
        Err(SseError::Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader() -> SseReader {
        SseReader {
            body: futures::stream::empty().boxed(),
            buf: vec![],
            ready: Default::default(),
            event: None,
            id: None,
            data: None,
        }
    }

    #[test]
    fn parses_events_split_across_chunks() {
        let mut r = reader();
        let now = SystemTime::now();
        r.buf
            .extend_from_slice(b"event: line\nid: 1\ndata: {\"a\":1}\n\n: keep-alive\n\nevent: li");
        r.parse(now);
        r.buf.extend_from_slice(
            b"ne\r\nid: 2\r\ndata: x\r\ndata: y\r\n\r\nevent: end\ndata: {}\n\n",
        );
        r.parse(now);
        let got: Vec<_> = r.ready.drain(..).collect();
        assert_eq!(got.len(), 3);
        assert_eq!(
            (
                got[0].event.as_str(),
                got[0].id.as_deref(),
                got[0].data.as_str()
            ),
            ("line", Some("1"), "{\"a\":1}")
        );
        assert_eq!(
            (
                got[1].event.as_str(),
                got[1].id.as_deref(),
                got[1].data.as_str()
            ),
            ("line", Some("2"), "x\ny")
        );
        assert_eq!(got[2].event, "end");
        assert!(r.buf.is_empty());
    }
}
