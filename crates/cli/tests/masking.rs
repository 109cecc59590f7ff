//! Secrets never reach a log in clear text (issue 10, item 2): the values of secret variables,
//! server passwords and what an http event's response echoes are replaced by `***` in stored
//! and streamed log lines, outputs and error messages, before anything is stored, so the clear
//! value is in no file of the data directory either. Also: a secret that cannot be decrypted
//! fails the run with a message naming it (item 6).

#[path = "../../ssh/tests/support/mod.rs"]
mod sshd;
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "S3cr3t-Value-42";
/// Characters every JSON encoder escapes, and a non-ASCII one Python's json.dumps escapes.
const TRICKY: &str = "q\"uo\\te-wörd-77";

async fn set_secret(s: &Server, name: &str, value: Value) {
    let (status, r) = s
        .api(
            "PUT",
            &format!("/api/v1/variables/{name}"),
            Some(json!({"value": value, "secret": true})),
        )
        .await;
    assert!(status < 300, "set {name}: {status} {r}");
}

/// The forms of `secret` that must appear nowhere: as is, and as stored inside JSON text
/// (escaped, or with `\uXXXX` for non-ASCII).
fn forms(secret: &str) -> Vec<String> {
    let escaped = serde_json::to_string(secret).unwrap();
    let escaped = escaped.trim_matches('"').to_string();
    let ascii: String = escaped
        .chars()
        .map(|c| {
            if c.is_ascii() {
                c.to_string()
            } else {
                format!("\\u{:04x}", c as u32)
            }
        })
        .collect();
    let mut v = vec![secret.to_string(), escaped, ascii];
    v.dedup();
    v
}

/// The job's whole log as the SSE stream sends it (the job has ended: the stream ends too).
async fn sse_text(s: &Server, id: i64) -> String {
    let resp = s
        .http
        .get(format!("{}/api/v1/jobs/{id}/logs/stream", s.url))
        .bearer_auth(&s.token)
        .send()
        .await
        .expect("stream");
    assert_eq!(resp.status(), 200);
    let text = tokio::time::timeout(Duration::from_secs(30), resp.text())
        .await
        .expect("the stream of an ended job ends")
        .expect("stream body");
    assert!(text.contains("event: end"), "{text}");
    text
}

/// The stored lines of a job, in order.
async fn lines(s: &Server, id: i64) -> Vec<String> {
    s.log_text(id)
        .await
        .split('\n')
        .map(str::to_string)
        .collect()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Asserts that no form of `secret` is in the job's stored lines (API page and SSE stream), its
/// outputs, errors and executions, or any file of the data directory (database, -wal, -shm...).
async fn assert_nowhere(s: &Server, id: i64, secret: &str) {
    assert_not_in_job(s, id, secret).await;
    for form in forms(secret) {
        for f in files_under(&s.data_dir) {
            let bytes = std::fs::read(&f).unwrap_or_default();
            assert!(
                !bytes.windows(form.len()).any(|w| w == form.as_bytes()),
                "{form:?} in clear in {}",
                f.display()
            );
        }
    }
}

/// [`assert_nowhere`] but for the data directory, for an event whose definition holds the value.
async fn assert_not_in_job(s: &Server, id: i64, secret: &str) {
    let job = s.job(id).await;
    let page = s.log_text(id).await;
    let sse = sse_text(s, id).await;
    for form in forms(secret) {
        assert!(!page.contains(&form), "{form:?} in the stored log:\n{page}");
        assert!(!sse.contains(&form), "{form:?} in the SSE stream:\n{sse}");
        assert!(
            !job.to_string().contains(&form),
            "{form:?} in the job: {job}"
        );
    }
}

#[tokio::test]
async fn secret_variable_masked_alone_inside_a_line_split_over_writes_in_stderr_and_outputs() {
    let s = Server::start();
    set_secret(&s, "api_key", json!(SECRET)).await;
    set_secret(&s, "pin", json!("1234")).await;
    s.apply_yaml(
        r#"
name: mask-bash
type: bash
script: |
  secret=$(cronium.getVariable api_key)
  echo "$secret"
  echo "the key is $secret, keep it"
  # One line in two writes, apart in time so that the runner reads them separately.
  printf 'split:%s' "${secret:0:7}"; sleep 0.2; printf '%s:end\n' "${secret:7}"
  echo "on stderr $secret" >&2
  cronium.output key "$secret"
  cronium.output note "value=$secret"
"#,
    )
    .await;
    let id = s.run_event("mask-bash", None).await;
    let j = s.wait_job(id, Duration::from_secs(60)).await;
    assert_eq!(j["status"], "succeeded", "{j}");
    let log = lines(&s, id).await;
    for want in [
        "***",
        "the key is ***, keep it",
        "split:***:end",
        "on stderr ***",
    ] {
        assert!(log.iter().any(|l| l == want), "no line {want:?} in {log:?}");
    }
    assert_eq!(
        j["output"],
        json!({"key": "***", "note": "value=***"}),
        "{j}"
    );
    // A secret too short to be masked is named, never shown.
    assert!(
        log.iter()
            .any(|l| l.contains("secret variable pin is shorter than 6")),
        "{log:?}"
    );
    assert!(!log.iter().any(|l| l.contains("1234")), "{log:?}");
    assert_nowhere(&s, id, SECRET).await;

    // The CLI's live follower sees the masked lines too.
    let o = s.cli(&["event", "run", "mask-bash", "--follow"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("the key is ***, keep it"),
        "{}",
        stdout(&o)
    );
    assert!(!stdout(&o).contains(SECRET) && !stderr(&o).contains(SECRET));
}

#[tokio::test]
async fn secret_masked_in_python_and_node_including_its_json_encoded_forms() {
    let s = Server::start();
    set_secret(&s, "tricky", json!(TRICKY)).await;
    let scripts = [
        (
            "python",
            r#"import cronium, json, sys
s = cronium.getVariable('tricky')
print(s)
print(f"inside {s} line")
print(json.dumps({"k": s}))
print("err " + s, file=sys.stderr)
cronium.output({"k": s, "nested": {"list": [s], s: 1}})
"#,
            r#"{"k": "***"}"#,
        ),
        (
            "node",
            r#"const c = require('cronium');
const s = c.getVariable('tricky');
console.log(s);
console.log(`inside ${s} line`);
console.log(JSON.stringify({k: s}));
console.error('err ' + s);
c.output({k: s, nested: {list: [s], [s]: 1}});
"#,
            r#"{"k":"***"}"#,
        ),
    ];
    for (lang, script, json_line) in scripts {
        let name = format!("mask-{lang}");
        let (status, r) = s
            .api(
                "PUT",
                &format!("/api/v1/events/{name}"),
                Some(json!({"name": name, "type": lang, "script": script})),
            )
            .await;
        assert_eq!(status, 200, "{r}");
        let id = s.run_event(&name, None).await;
        let j = s.wait_job(id, Duration::from_secs(60)).await;
        assert_eq!(j["status"], "succeeded", "{lang}: {j}");
        let log = lines(&s, id).await;
        for want in ["***", "inside *** line", json_line, "err ***"] {
            assert!(
                log.iter().any(|l| l == want),
                "{lang}: no line {want:?} in {log:?}"
            );
        }
        assert_eq!(
            j["output"],
            json!({"k": "***", "nested": {"list": ["***"], "***": 1}}),
            "{lang}"
        );
        assert_nowhere(&s, id, TRICKY).await;
    }
}

#[tokio::test]
async fn a_secret_cut_by_the_runner_line_cap_is_masked_across_the_cut() {
    let s = Server::start();
    set_secret(&s, "api_key", json!(SECRET)).await;
    // 65533 bytes, then the secret: the runner cuts the line at 64 KiB, three bytes into it.
    s.apply_yaml(
        r#"
name: mask-long
type: bash
script: |
  secret=$(cronium.getVariable api_key)
  head -c 65533 /dev/zero | tr '\0' x; printf '%s after\n' "$secret"
  echo next
"#,
    )
    .await;
    let id = s.run_event("mask-long", None).await;
    let j = s.wait_job(id, Duration::from_secs(60)).await;
    assert_eq!(j["status"], "succeeded", "{j}");
    let log = lines(&s, id).await;
    let long = log
        .iter()
        .position(|l| l.starts_with("xxxx"))
        .expect("the long line");
    // Compared without printing 64 KiB on failure.
    let tail = &log[long][log[long].len().saturating_sub(8)..];
    assert!(
        log[long] == format!("{}***", "x".repeat(65533)),
        "the cut line ends with {tail:?}"
    );
    assert_eq!(&log[long + 1..], [" after", "next"]);
    assert!(!log.concat().contains(SECRET));
    assert_nowhere(&s, id, SECRET).await;
}

#[tokio::test]
async fn a_value_written_to_a_secret_variable_is_masked_from_then_on() {
    let s = Server::start();
    set_secret(&s, "rotating", json!("old-value-123")).await;
    s.apply_yaml(
        // Put together at run time, so that the event's definition does not hold the value.
        "name: rotate\ntype: bash\nscript: |\n  v=new-value\n  cronium.setVariable rotating \"$v-456\"\n  cronium.output written \"$v-456\"\n",
    )
    .await;
    let id = s.run_event("rotate", None).await;
    let j = s.wait_job(id, Duration::from_secs(60)).await;
    assert_eq!(j["status"], "succeeded", "{j}");
    // The write reaches the recorder after the run's lines (bundled mode), before its outputs
    // are final: the output is masked.
    assert_eq!(j["output"], json!({"written": "***"}), "{j}");
    assert_nowhere(&s, id, "new-value-456").await;
    // The next run sees it as a secret.
    s.apply_yaml(
        "name: print-rotated\ntype: bash\nscript: |\n  echo \"now $(cronium.getVariable rotating)\"\n",
    )
    .await;
    let id = s.run_event("print-rotated", None).await;
    let j = s.wait_job(id, Duration::from_secs(60)).await;
    assert_eq!(j["status"], "succeeded", "{j}");
    assert!(lines(&s, id).await.contains(&"now ***".to_string()));
    assert_nowhere(&s, id, "new-value-456").await;
}

/// A local HTTP server that answers every request with the secret in a header, in a JSON body
/// and on a line of its own.
async fn echo_server(secret: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let body =
                    format!("{{\n  \"token\": \"{secret}\",\n  \"echo\": \"{secret} again\"\n}}\n");
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nX-Echo: {secret}\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(resp.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test]
async fn http_event_response_echoing_a_secret_is_masked_in_output_and_log() {
    let s = Server::start();
    set_secret(&s, "api_key", json!(SECRET)).await;
    let port = echo_server(SECRET).await;
    s.apply_yaml(&format!(
        "name: echo\ntype: http\nhttp: {{ method: GET, url: \"http://127.0.0.1:{port}/\" }}\n"
    ))
    .await;
    let id = s.run_event("echo", None).await;
    let j = s.wait_job(id, Duration::from_secs(60)).await;
    assert_eq!(j["status"], "succeeded", "{j}");
    let out = &j["output"];
    assert_eq!(out["status"], 200, "{j}");
    assert_eq!(out["headers"]["x-echo"], "***", "{j}");
    assert_eq!(
        out["body"], "{\n  \"token\": \"***\",\n  \"echo\": \"*** again\"\n}\n",
        "{j}"
    );
    assert_eq!(
        out["json"],
        json!({"token": "***", "echo": "*** again"}),
        "{j}"
    );
    let log = lines(&s, id).await;
    assert!(
        log.contains(&"  \"echo\": \"*** again\"".to_string()),
        "{log:?}"
    );
    assert_nowhere(&s, id, SECRET).await;
}

#[tokio::test]
async fn a_secret_in_an_error_message_is_masked() {
    let s = Server::start();
    set_secret(&s, "api_key", json!(SECRET)).await;
    // A port nobody listens on: the request fails with an error that quotes the URL.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    s.apply_yaml(&format!(
        "name: refused\ntype: http\nhttp: {{ method: GET, url: \"http://127.0.0.1:{port}/?token={SECRET}\" }}\n"
    ))
    .await;
    let id = s.run_event("refused", None).await;
    let j = s.wait_job(id, Duration::from_secs(60)).await;
    assert_eq!(j["status"], "failed", "{j}");
    let error = j["error"].as_str().unwrap_or_default();
    assert!(error.contains("token=***"), "{j}");
    let exec_error = j["executions"][0]["error"].as_str().unwrap_or_default();
    assert!(exec_error.contains("token=***"), "{j}");
    assert!(
        s.log_text(id)
            .await
            .contains(&format!("GET http://127.0.0.1:{port}/?token=***")),
        "{}",
        s.log_text(id).await
    );
    // The event's own definition holds the value, so the database does too: not checked.
    assert_not_in_job(&s, id, SECRET).await;
}

#[tokio::test]
async fn server_password_is_masked_in_a_remote_run() {
    let s = Server::start_with(ServerOpts {
        args: vec![
            "--static-runner".into(),
            static_runner_bin().display().to_string(),
        ],
        ..Default::default()
    });
    let h = sshd::Sshd::start();
    let (status, r) = s
        .api(
            "POST",
            "/api/v1/servers",
            Some(json!({
                "name": "pw", "host": "127.0.0.1", "port": h.port, "user": sshd::USER,
                "password": sshd::PASSWORD,
            })),
        )
        .await;
    assert_eq!(status, 201, "{r}");
    // The password is put together on the host, so that the event's definition does not hold it.
    let (head, tail) = sshd::PASSWORD.split_at(4);
    s.apply_yaml(&format!(
        "name: on-pw\ntype: bash\ntarget: {{ servers: [pw], mode: direct-ssh }}\nscript: |\n  p='{head}''{tail}'\n  echo \"I know $p\"\n  echo \"$p\" >&2\n  exit 3\n"
    ))
    .await;
    let id = s.run_event("on-pw", None).await;
    let j = s.wait_job(id, Duration::from_secs(60)).await;
    assert_eq!(j["status"], "failed", "{j}");
    let log = lines(&s, id).await;
    assert!(log.contains(&"I know ***".to_string()), "{log:?}");
    assert!(log.contains(&"***".to_string()), "{log:?}");
    assert_nowhere(&s, id, sshd::PASSWORD).await;
}

#[tokio::test]
async fn a_secret_that_no_longer_decrypts_fails_the_run_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let with_key = |key: &str| ServerOpts {
        data_dir: Some(data_dir.clone()),
        env: vec![("CRONIUM_ENCRYPTION_KEY".into(), key.into())],
        ..Default::default()
    };
    let mut s = Server::start_with(with_key(&"11".repeat(32)));
    set_secret(&s, "db_password", json!("Tr0ub4dor&3-horse")).await;
    s.apply_yaml("name: uses-vars\ntype: bash\nscript: echo hello\n")
        .await;
    let id = s.run_event("uses-vars", None).await;
    assert_eq!(
        s.wait_job(id, Duration::from_secs(60)).await["status"],
        "succeeded"
    );
    s.stop();

    // Restarted with another key: the secret cannot be decrypted.
    let s = Server::start_with(with_key(&"22".repeat(32)));
    let id = s.run_event("uses-vars", None).await;
    let j = s.wait_job(id, Duration::from_secs(60)).await;
    assert_eq!(j["status"], "failed", "{j}");
    let error = j["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("secret variable db_password") && error.contains("encryption key"),
        "{j}"
    );
    // Said in the log too, and no execution is left behind as pending.
    let log = s.log_text(id).await;
    assert!(log.contains("secret variable db_password"), "{log}");
    assert!(!log.contains("hello"), "the script ran: {log}");
    assert!(
        j["executions"]
            .as_array()
            .is_none_or(|xs| xs.iter().all(|x| x["status"] != "pending")),
        "{j}"
    );
    assert!(!j.to_string().contains("Tr0ub4dor"), "{j}");
}
