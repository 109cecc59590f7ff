//! The client against a real HTTP server: a tokio `TcpListener` on port 0 that answers each
//! request with raw bytes, written in the pieces a test chooses (to split events across reads).

use std::sync::Arc;
use std::time::Duration;

use cronium_client::{Client, Error, Method};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// One request as the server read it.
#[derive(Debug)]
struct Seen {
    method: String,
    path: String,
    /// Header lines, names lowercased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What to answer: the pieces of the raw response, written one after the other, flushed,
/// a few ms apart. `None`: never answer (a server that hangs).
type Answer = Option<Vec<Vec<u8>>>;

/// Starts the server; returns its base URL and the requests it reads.
async fn server(
    answer: impl Fn(&Seen) -> Answer + Send + Sync + 'static,
) -> (String, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let (tx, answer) = (tx.clone(), answer.clone());
            tokio::spawn(async move {
                let Some(seen) = read_request(&mut sock).await else {
                    return;
                };
                let reply = answer(&seen);
                let _ = tx.send(seen);
                let Some(pieces) = reply else {
                    // Hold the connection open without a word.
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    return;
                };
                for p in pieces {
                    if sock.write_all(&p).await.is_err() {
                        return;
                    }
                    let _ = sock.flush().await;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let _ = sock.shutdown().await;
            });
        }
    });
    (base, rx)
}

async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let mut chunk = [0u8; 4096];
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Seen {
        method,
        path,
        headers,
        body,
    })
}

/// A whole response with a body.
fn reply(status: &str, content_type: &str, body: &[u8]) -> Answer {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    Some(vec![[head.as_bytes(), body].concat()])
}

fn client(base: &str) -> Client {
    Client::builder(base)
        .token("crn_test_token")
        .build()
        .unwrap()
}

#[derive(Serialize)]
struct Ping {
    n: i64,
}

#[derive(Deserialize, Debug, PartialEq)]
struct Pong {
    n: i64,
}

#[tokio::test]
async fn typed_calls_send_the_token_and_the_body_and_read_the_answer() {
    let (base, mut seen) = server(|r| match r.path.as_str() {
        "/api/v1/echo" => reply("200 OK", "application/json", &r.body),
        "/api/v1/empty" => Some(vec![
            b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n".to_vec(),
        ]),
        _ => reply("404 Not Found", "text/plain", b"no"),
    })
    .await;
    let c = client(&format!("{base}/"));
    let pong: Pong = c
        .post("/api/v1/echo", &Ping { n: 7 }, Some(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(pong, Pong { n: 7 });
    let r = seen.recv().await.unwrap();
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/api/v1/echo")
    );
    assert_eq!(r.header("authorization"), Some("Bearer crn_test_token"));
    assert_eq!(r.header("content-type"), Some("application/json"));

    // An empty answer is JSON null, for `Value` and `Option` alike.
    let v = c
        .request(Method::DELETE, "/api/v1/empty", None)
        .await
        .unwrap();
    assert_eq!(v, Value::Null);
    let o: Option<Pong> = c.get("/api/v1/empty", None).await.unwrap();
    assert_eq!(o, None);
}

#[tokio::test]
async fn an_error_answer_is_read_from_the_servers_error_body() {
    let (base, _seen) = server(|r| match r.path.as_str() {
        "/api/v1/events" => reply(
            "422 Unprocessable Entity",
            "application/json",
            br#"{"error":{"code":"invalid","message":"schedule.cron: not a cron expression","field":"schedule.cron"}}"#,
        ),
        "/api/v1/proxy" => reply("502 Bad Gateway", "text/html", b"<html>bad gateway</html>\n"),
        "/api/v1/not-json" => reply("200 OK", "application/json", b"{\"jobs\": ["),
        _ => reply("404 Not Found", "text/plain", b"no"),
    })
    .await;
    let c = client(&base);
    let e = c
        .request(Method::POST, "/api/v1/events", Some(&json!({"name": "x"})))
        .await
        .unwrap_err();
    match &e {
        Error::Status {
            method,
            path,
            status,
            code,
            message,
            field,
        } => {
            assert_eq!(
                (method, path.as_str(), *status),
                (&Method::POST, "/api/v1/events", 422)
            );
            assert_eq!(code.as_deref(), Some("invalid"));
            assert_eq!(message, "schedule.cron: not a cron expression");
            assert_eq!(field.as_deref(), Some("schedule.cron"));
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(e.code(), Some("invalid"));
    assert_eq!(e.http_status(), Some(422));

    // Not the API's shape (a proxy's page): the text is the message.
    let e = c.get::<Value>("/api/v1/proxy", None).await.unwrap_err();
    assert!(
        matches!(&e, Error::Status { status: 502, code: None, message, .. } if message == "<html>bad gateway</html>"),
        "{e:?}"
    );

    // A success whose body does not parse.
    let e = c.get::<Value>("/api/v1/not-json", None).await.unwrap_err();
    assert!(
        matches!(&e, Error::Shape { status: 200, body, .. } if body == "{\"jobs\": ["),
        "{e:?}"
    );
    // A body that parses, but not as what the call asked for.
    let e = c.get::<Pong>("/api/v1/events", None).await.unwrap_err();
    assert_eq!(
        e.http_status(),
        Some(422),
        "an error answer stays one: {e:?}"
    );
}

#[tokio::test]
async fn no_answer_is_unreachable_and_a_call_timeout_is_honoured() {
    // A port nobody listens on any more.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    let e = client(&dead)
        .get::<Value>("/healthz", None)
        .await
        .unwrap_err();
    assert!(e.is_unreachable(), "{e:?}");
    assert!(e.to_string().starts_with("GET /healthz: "), "{e}");

    let (base, _seen) = server(|_| None).await;
    let t = std::time::Instant::now();
    let e = client(&base)
        .post::<_, Value>("/slow", &json!({}), Some(Duration::from_millis(200)))
        .await
        .unwrap_err();
    match e {
        Error::Unreachable { source, .. } => assert!(source.is_timeout(), "{source:?}"),
        e => panic!("{e:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn an_event_stream_is_read_across_chunks_with_its_ids() {
    let (base, mut seen) = server(|r| {
        let head =
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
                .to_vec();
        Some(match r.path.as_str() {
            "/api/v1/jobs/1/logs/stream" => vec![
                head,
                b": keep-alive\n\nevent: li".to_vec(),
                b"ne\nid: 7\ndata: {\"seq\":7,".to_vec(),
                b"\"line\":\"a\"}\n\nevent: line\r\nid: 8\r\ndata: first\r\n".to_vec(),
                b"data: second\r\n\r".to_vec(),
                b"\nevent: end\ndata: {\"status\":\"succeeded\"}\n\n".to_vec(),
            ],
            // Ends without `end`, an event left unfinished.
            _ => vec![head, b"event: line\ndata: x\n\nevent: end\n".to_vec()],
        })
    })
    .await;
    let c = client(&base);
    let mut sse = c
        .stream("/api/v1/jobs/1/logs/stream", Some("6"))
        .await
        .unwrap();
    let r = seen.recv().await.unwrap();
    assert_eq!(r.header("last-event-id"), Some("6"));
    assert_eq!(r.header("accept"), Some("text/event-stream"));
    assert_eq!(r.header("authorization"), Some("Bearer crn_test_token"));

    let a = sse.next().await.unwrap().unwrap();
    assert_eq!((a.event.as_str(), a.id.as_deref()), ("line", Some("7")));
    let v: Value = serde_json::from_str(&a.data).unwrap();
    assert_eq!(v, json!({"seq": 7, "line": "a"}));
    let b = sse.next().await.unwrap().unwrap();
    assert_eq!(
        (b.id.as_deref(), b.data.as_str()),
        (Some("8"), "first\nsecond")
    );
    assert!(b.arrived >= a.arrived);
    let end = sse.until_end().await.unwrap();
    assert_eq!(end.data, r#"{"status":"succeeded"}"#);
    assert_eq!(end.id, None);
    assert!(sse.next().await.unwrap().is_none());

    let mut sse = c.stream("/api/v1/jobs/2/logs/stream", None).await.unwrap();
    assert_eq!(seen.recv().await.unwrap().header("last-event-id"), None);
    let e = sse.until_end().await.unwrap_err();
    assert!(
        matches!(&e, Error::Closed { path, event } if path == "/api/v1/jobs/2/logs/stream" && event == "end"),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_refused_stream_is_a_status_error() {
    let (base, _seen) = server(|_| {
        reply(
            "404 Not Found",
            "application/json",
            br#"{"error":{"code":"not_found","message":"no job 9"}}"#,
        )
    })
    .await;
    let e = match client(&base)
        .stream("/api/v1/jobs/9/logs/stream", None)
        .await
    {
        Ok(_) => panic!("a 404 opened a stream"),
        Err(e) => e,
    };
    assert!(
        matches!(&e, Error::Status { status: 404, code: Some(c), message, .. } if &**c == "not_found" && message == "no job 9"),
        "{e:?}"
    );
}
