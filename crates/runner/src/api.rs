//! API mode: the runtime API on a Unix socket in the run's private directory, relayed on the
//! runner's own event stream.
//!
//! The socket speaks plain HTTP/1.1 (so `curl --unix-socket` works) with keep-alive. Each request
//! must carry `Authorization: Bearer <the execution's token>`; a valid one becomes a
//! [`RunnerEvent::ApiCall`] with a fresh id on stdout, and the connection waits for the
//! [`Control::ApiReply`](cronium_protocol::Control) of that id, which the control thread hands to
//! [`deliver`]. No network port is opened: the socket lives in the run's 0700 directory (inside
//! the container for container runs, on the host under the login user for SSH runs), so only the
//! run's own user reaches it, and it disappears with the directory.
//!
//! Not for the helpers' client side: that is `helper_cmd` (Bash, Node) and `cronium.py`.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use cronium_protocol::{api_error, ApiCall, RunnerEvent, RUNTIME_PREFIX};
use serde_json::Value;

use crate::emit::Emitter;

/// File name of the socket inside `.cronium/`.
pub const SOCKET_FILE: &str = "api.sock";
/// Longest request body accepted (a value set through the API).
const MAX_BODY: usize = 4 * 1024 * 1024;
/// Longest request head (request line and headers).
const MAX_HEAD: usize = 16 * 1024;
/// How long a call waits for the controller's answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest path `sockaddr_un` takes (108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

type Reply = (u16, Value);

/// Calls waiting for their answer, by id.
struct Pending {
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, SyncSender<Reply>>>,
    /// The controller can no longer answer (stdin ended).
    closed: AtomicBool,
}

fn pending() -> &'static Pending {
    static PENDING: OnceLock<Pending> = OnceLock::new();
    PENDING.get_or_init(|| Pending {
        next: AtomicU64::new(1),
        waiting: Mutex::new(HashMap::new()),
        closed: AtomicBool::new(false),
    })
}

/// Hands the controller's answer to the call waiting for it (unknown ids are ignored: a call
/// that gave up waiting).
pub fn deliver(id: u64, status: u16, body: Value) {
    let waiter = pending()
        .waiting
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&id);
    if let Some(tx) = waiter {
        let _ = tx.try_send((status, body));
    }
}

/// The controller is gone: every waiting call (and every later one) fails at once.
pub fn close() {
    let p = pending();
    p.closed.store(true, Ordering::SeqCst);
    p.waiting.lock().unwrap_or_else(|p| p.into_inner()).clear();
}

/// The socket of one run; removed with the run's directory.
pub struct ApiSocket {
    pub path: PathBuf,
}

/// Binds the socket in `dir` (the run's `.cronium/`) and serves it on a thread. An error means
/// the helpers will find no endpoint and fall back to bundled mode (the caller says so in the
/// log).
pub fn start(dir: &Path, token: String, emitter: Arc<Emitter>) -> io::Result<ApiSocket> {
    let path = dir.join(SOCKET_FILE);
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(io::Error::other(format!(
            "the socket path {} is longer than the {MAX_SOCKET_PATH} bytes a Unix socket allows",
            path.display()
        )));
    }
    let listener = UnixListener::bind(&path)?;
    // The directory is already 0700; the socket is private too, whatever the umask.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let token = Arc::new(token);
    std::thread::Builder::new()
        .name("api".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let token = token.clone();
                let emitter = emitter.clone();
                let spawned = std::thread::Builder::new()
                    .name("api-conn".into())
                    .stack_size(256 * 1024)
                    .spawn(move || serve_connection(conn, &token, &emitter));
                if let Err(e) = spawned {
                    diag!("cronium-runner: cannot serve an API connection: {e}");
                }
            }
        })?;
    Ok(ApiSocket { path })
}

/// One parsed request.
struct Request {
    method: String,
    path: String,
    authorization: Option<String>,
    body: Vec<u8>,
    keep_alive: bool,
}

fn serve_connection(conn: UnixStream, token: &str, emitter: &Emitter) {
    let Ok(write_half) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    let mut writer = io::BufWriter::new(write_half);
    loop {
        let request = match read_request(&mut reader) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                let _ = respond(&mut writer, 400, &api_error(400, &e.to_string()), false);
                return;
            }
        };
        let (status, body) = answer(&request, token, emitter);
        if respond(&mut writer, status, &body, request.keep_alive).is_err() || !request.keep_alive {
            return;
        }
    }
}

fn answer(request: &Request, token: &str, emitter: &Emitter) -> Reply {
    let presented = request
        .authorization
        .as_deref()
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(t) if constant_time_eq(t.as_bytes(), token.as_bytes()) => {}
        Some(_) => return error(401, "the runtime token is not valid for this execution"),
        None => return error(401, "missing `Authorization: Bearer $CRONIUM_API_TOKEN`"),
    }
    let Some(rest) = request.path.strip_prefix(RUNTIME_PREFIX) else {
        return error(
            404,
            &format!("no runtime API operation at `{}`", request.path),
        );
    };
    let rest = rest.split('?').next().unwrap_or_default();
    let decoded: Vec<String> = rest.split('/').map(percent_decode).collect();
    let body = match request.body.is_empty() {
        true => None,
        false => match serde_json::from_slice::<Value>(&request.body) {
            Ok(v) => Some(v),
            Err(e) => return error(422, &format!("the body is not JSON: {e}")),
        },
    };
    let call = match ApiCall::from_request(&request.method, &decoded.join("/"), body.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            let (status, message) = e.status();
            return error(status, &message);
        }
    };
    relay(call, emitter)
}

/// Sends the call on the event stream and waits for its answer.
fn relay(call: ApiCall, emitter: &Emitter) -> Reply {
    let p = pending();
    if p.closed.load(Ordering::SeqCst) {
        return error(503, "the run's controller is gone");
    }
    let id = p.next.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::sync_channel(1);
    p.waiting
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id, tx);
    emitter.event(&RunnerEvent::ApiCall { id, call });
    match rx.recv_timeout(REPLY_TIMEOUT) {
        Ok(reply) => reply,
        Err(_) => {
            p.waiting
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            error(503, "no answer from the server")
        }
    }
}

fn error(status: u16, message: &str) -> Reply {
    (status, api_error(status, message))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `%xx` sequences decoded; anything malformed is kept as it is.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads one request; `None` at a clean EOF between requests.
fn read_request(reader: &mut impl BufRead) -> io::Result<Option<Request>> {
    let mut head_bytes = 0;
    let mut line = String::new();
    // Request line (blank lines before it are tolerated, as RFC 9112 asks).
    loop {
        line.clear();
        let n = reader.take(MAX_HEAD as u64).read_line(&mut line)?;
        if n == 0 {
            return Ok(None);
        }
        head_bytes += n;
        if !line.trim().is_empty() {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("malformed request line"));
    };
    let (method, path) = (method.to_string(), path.to_string());
    let mut keep_alive = version == "HTTP/1.1";
    let mut authorization = None;
    let mut length = 0usize;
    loop {
        line.clear();
        let n = reader.take(MAX_HEAD as u64).read_line(&mut line)?;
        head_bytes += n;
        if n == 0 || head_bytes > MAX_HEAD {
            return Err(invalid("request head too long or cut short"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let Some((name, value)) = l.split_once(':') else {
            return Err(invalid("malformed header"));
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "authorization" => authorization = Some(value.to_string()),
            "content-length" => {
                length = value
                    .parse()
                    .map_err(|_| invalid("Content-Length is not a number"))?;
                if length > MAX_BODY {
                    return Err(invalid("body larger than 4 MiB"));
                }
            }
            "connection" => {
                let v = value.to_ascii_lowercase();
                if v.contains("close") {
                    keep_alive = false;
                } else if v.contains("keep-alive") {
                    keep_alive = true;
                }
            }
            "transfer-encoding" => return Err(invalid("chunked bodies are not supported")),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Some(Request {
        method,
        path,
        authorization,
        body,
        keep_alive,
    }))
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

fn respond(out: &mut impl Write, status: u16, body: &Value, keep_alive: bool) -> io::Result<()> {
    let body = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        422 => "Unprocessable Entity",
        503 => "Service Unavailable",
        _ => "Error",
    };
    write!(
        out,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n",
        body.len(),
        if keep_alive { "" } else { "Connection: close\r\n" }
    )?;
    out.write_all(&body)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_percent_escapes() {
        assert_eq!(percent_decode("a%20b%2Fc"), "a b/c");
        assert_eq!(percent_decode("bad%zz%"), "bad%zz%");
    }

    #[test]
    fn parses_a_request_with_body() {
        let raw = b"PUT /api/v1/runtime/output HTTP/1.1\r\nAuthorization: Bearer t\r\nContent-Length: 11\r\n\r\n{\"value\":1}";
        let r = read_request(&mut &raw[..]).unwrap().unwrap();
        assert_eq!(r.method, "PUT");
        assert_eq!(r.authorization.as_deref(), Some("Bearer t"));
        assert_eq!(r.body, b"{\"value\":1}");
        assert!(r.keep_alive);
    }
}
