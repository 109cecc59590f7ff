//! Notifications against real receivers started by the test: an HTTP listener (axum) taking
//! Slack, Discord and signed-webhook deliveries, and a real SMTP server (aiosmtpd, with
//! STARTTLS on a certificate made here). A failure then a recovery are delivered with the
//! right content and a valid signature; a receiver that is down gets the delivery once it is
//! up (retries); pending deliveries survive a server restart and arrive once.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use serde_json::{json, Value};
use support::*;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Got {
    path: String,
    headers: HeaderMap,
    body: Value,
}

type Inbox = Arc<Mutex<Vec<Got>>>;

/// An HTTP receiver on `addr` (port 0: any) until dropped.
struct Receiver {
    addr: SocketAddr,
    inbox: Inbox,
    stop: tokio_util::sync::CancellationToken,
}

impl Receiver {
    async fn start(addr: SocketAddr, inbox: Inbox) -> Receiver {
        async fn take(
            State(inbox): State<Inbox>,
            uri: axum::http::Uri,
            headers: HeaderMap,
            body: Bytes,
        ) -> &'static str {
            let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
            inbox.lock().expect("inbox").push(Got {
                path: uri.path().to_string(),
                headers,
                body,
            });
            "ok"
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new()
            .route("/{*path}", post(take))
            .with_state(inbox.clone());
        let stop = tokio_util::sync::CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { s.cancelled().await })
                .await;
        });
        Receiver { addr, inbox, stop }
    }

    fn got(&self) -> Vec<Got> {
        self.inbox.lock().expect("inbox").clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A free loopback port, nothing listening on it.
fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

async fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn add_channel(s: &Server, body: Value) -> Value {
    let (status, r) = s.api("POST", "/api/v1/channels", Some(body)).await;
    assert_eq!(status, 201, "{r}");
    r
}

async fn channel(s: &Server, name: &str) -> Value {
    let (status, r) = s
        .api("GET", &format!("/api/v1/channels/{name}"), None)
        .await;
    assert_eq!(status, 200, "{r}");
    r
}

/// An event that fails (exit 3, after a telling line) while `flag` exists, else succeeds.
fn flaky_event(name: &str, flag: &Path, channels: &[&str]) -> String {
    let mut y = format!(
        "name: {name}\ntype: bash\nscript: |\n  echo \"using $(cronium.getVariable api_key)\"\n  \
         if [ -e {} ]; then echo 'disk full on /var'; exit 3; fi\n  echo fine\nnotify:\n",
        flag.display()
    );
    for c in channels {
        y.push_str(&format!(
            "  - {{ on: [failure, recovery], channel: {c} }}\n"
        ));
    }
    y
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_then_a_recovery_reach_slack_discord_and_a_signed_webhook() {
    let s = Server::start();
    let rx = Receiver::start("127.0.0.1:0".parse().expect("addr"), Inbox::default()).await;
    let base = format!("http://{}", rx.addr);
    add_channel(
        &s,
        json!({"name": "slack", "type": "slack", "url": format!("{base}/slack/T0/B0/x")}),
    )
    .await;
    add_channel(
        &s,
        json!({"name": "discord", "type": "discord", "url": format!("{base}/discord")}),
    )
    .await;
    let hook_secret = "a-long-enough-hmac-secret-0123";
    let out = Command::new(cronium_bin())
        .args([
            "channel",
            "add",
            "hook",
            "--type",
            "webhook",
            "--webhook-url",
        ])
        .arg(format!("{base}/hook"))
        .args(["--secret-env", "HOOK_SECRET"])
        .env("CRONIUM_URL", &s.url)
        .env("CRONIUM_TOKEN", &s.token)
        .env("HOOK_SECRET", hook_secret)
        .output()
        .expect("channel add");
    assert!(out.status.success(), "{}", stderr(&out));
    // The secret variable a script prints is masked in its log, and so in the message.
    let (status, r) = s
        .api(
            "PUT",
            "/api/v1/variables/api_key",
            Some(json!({"value": "sk-very-secret-value", "secret": true})),
        )
        .await;
    assert_eq!(status, 200, "{r}");

    // A channel that does not exist is refused, naming the rule.
    let tmp = shared_tempdir();
    let flag = tmp.path().join("fail");
    let bad = flaky_event("flaky", &flag, &["slack", "nope"]);
    let v: Value = serde_saphyr::from_str(&bad).expect("yaml");
    let (status, r) = s.api("PUT", "/api/v1/events/flaky", Some(v)).await;
    assert_eq!(status, 422, "{r}");
    assert_eq!(r["error"]["field"], "notify[1].channel", "{r}");

    s.apply_yaml(&flaky_event("flaky", &flag, &["slack", "discord", "hook"]))
        .await;
    std::fs::write(&flag, "").expect("flag");
    let failed = s.run_event("flaky", None).await;
    let job = s.wait_job(failed, Duration::from_secs(60)).await;
    assert_eq!(job["status"], "failed");
    wait_until("3 failure messages", Duration::from_secs(30), || {
        rx.got().len() >= 3
    })
    .await;

    let got = rx.got();
    let by = |prefix: &str| -> Got {
        got.iter()
            .find(|g| g.path.starts_with(prefix))
            .unwrap_or_else(|| panic!("nothing at {prefix}: {got:?}"))
            .clone()
    };
    let slack = by("/slack/").body["text"]
        .as_str()
        .expect("slack text")
        .to_string();
    assert!(slack.contains("flaky failed (exit 3)"), "{slack}");
    assert!(
        slack.contains("disk full on /var"),
        "the log's last lines: {slack}"
    );
    assert!(
        slack.contains(&format!("{}/jobs/{failed}", s.url)),
        "a link: {slack}"
    );
    assert!(!slack.contains("sk-very-secret-value"), "masked: {slack}");
    let discord = by("/discord").body["content"]
        .as_str()
        .expect("discord content")
        .to_string();
    assert!(discord.contains("flaky failed (exit 3)"), "{discord}");
    let hook = by("/hook");
    assert_eq!(hook.body["on"], "failure");
    assert_eq!(hook.body["status"], "failed");
    assert_eq!(hook.body["exit_code"], 3);
    assert_eq!(hook.body["name"], "flaky");
    assert_eq!(hook.body["id"], failed);
    assert!(hook.body["duration_ms"].is_i64(), "{}", hook.body);
    assert!(
        hook.body["log_tail"]
            .as_array()
            .expect("log_tail")
            .iter()
            .any(|l| l == "disk full on /var"),
        "{}",
        hook.body
    );
    // Signed as our own hooks are: over "{timestamp}.{body}" with the channel's secret.
    let ts = hook.headers["x-cronium-timestamp"]
        .to_str()
        .expect("ts")
        .to_string();
    let sig = hook.headers["x-cronium-signature"].to_str().expect("sig");
    let raw = serde_json::to_vec(&hook.body).expect("body");
    assert_eq!(
        sig,
        cronium_signature(hook_secret, ts.parse().expect("ts"), &raw),
        "a valid signature"
    );
    assert!((chrono::Utc::now().timestamp() - ts.parse::<i64>().expect("ts")).abs() < 60);

    // The next success is a recovery, on every channel.
    std::fs::remove_file(&flag).expect("unflag");
    let ok = s.run_event("flaky", None).await;
    assert_eq!(
        s.wait_job(ok, Duration::from_secs(60)).await["status"],
        "succeeded"
    );
    wait_until("3 recovery messages", Duration::from_secs(30), || {
        rx.got().len() >= 6
    })
    .await;
    let got = rx.got();
    let hook = got
        .iter()
        .rev()
        .find(|g| g.path == "/hook")
        .expect("recovery at the webhook");
    assert_eq!(hook.body["on"], "recovery");
    assert_eq!(hook.body["id"], ok);
    let slack = got
        .iter()
        .rev()
        .find(|g| g.path.starts_with("/slack/"))
        .expect("slack")
        .body["text"]
        .as_str()
        .expect("text")
        .to_string();
    assert!(
        slack.contains("recovered") && slack.contains("flaky succeeded"),
        "{slack}"
    );
    // A success after a success is neither: nothing more is sent.
    let again = s.run_event("flaky", None).await;
    s.wait_job(again, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rx.got().len(), 6, "{:?}", rx.got());

    // The channels' state: delivered, nothing pending; the CLI lists it; secrets never shown.
    for name in ["slack", "discord", "hook"] {
        let c = channel(&s, name).await;
        assert_eq!(c["pending"], 0, "{c}");
        assert!(c["last_success_at"].is_string(), "{c}");
        assert_eq!(c["last_error"], Value::Null, "{c}");
        assert!(
            !c.to_string().contains(&base),
            "the URL is never shown: {c}"
        );
    }
    let out = s.cli(&["channel", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("slack") && stdout(&out).contains("PENDING"),
        "{}",
        stdout(&out)
    );
    let out = s.cli(&["channel", "show", "hook"]);
    assert!(!stdout(&out).contains(hook_secret), "{}", stdout(&out));
    s.assert_not_at_rest(hook_secret);
    s.assert_not_at_rest("/slack/T0/B0/x");

    // Removal is refused while the event notifies it; `channel test` sends now.
    let out = s.cli(&["channel", "remove", "slack"]);
    assert!(
        !out.status.success() && stderr(&out).contains("event flaky"),
        "{}",
        stderr(&out)
    );
    let out = s.cli(&["channel", "test", "discord"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until("the test message", Duration::from_secs(10), || {
        rx.got().len() == 7
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_is_down_gets_the_message_once_it_is_up() {
    let s = Server::start();
    let addr = free_port();
    add_channel(
        &s,
        json!({"name": "ops", "type": "webhook", "url": format!("http://{addr}/in")}),
    )
    .await;
    let tmp = shared_tempdir();
    let flag = tmp.path().join("fail");
    std::fs::write(&flag, "").expect("flag");
    s.apply_yaml(&flaky_event("flaky", &flag, &["ops"])).await;
    let job = s.run_event("flaky", None).await;
    s.wait_job(job, Duration::from_secs(60)).await;
    // Nothing listens: the delivery fails, is kept and retried.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let c = channel(&s, "ops").await;
        if c["last_error"].is_string() {
            assert_eq!(c["pending"], 1, "{c}");
            assert!(
                c["last_error"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("cannot connect"),
                "{c}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no failed attempt: {c}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The job is not held back by it.
    assert_eq!(s.job(job).await["status"], "failed");
    let rx = Receiver::start(addr, Inbox::default()).await;
    wait_until("the retried delivery", Duration::from_secs(40), || {
        !rx.got().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = rx.got();
    assert_eq!(got.len(), 1, "delivered once: {got:?}");
    assert_eq!(got[0].body["id"], job);
    let c = channel(&s, "ops").await;
    assert_eq!(c["pending"], 0, "{c}");
    assert!(c["last_success_at"].is_string(), "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_deliveries_survive_a_restart_and_arrive_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let opts = || ServerOpts {
        data_dir: Some(data.clone()),
        ..Default::default()
    };
    let mut s = Server::start_with(opts());
    let addr = free_port();
    add_channel(
        &s,
        json!({"name": "ops", "type": "slack", "url": format!("http://{addr}/in")}),
    )
    .await;
    let shared = shared_tempdir();
    let flag = shared.path().join("fail");
    std::fs::write(&flag, "").expect("flag");
    s.apply_yaml(&flaky_event("flaky", &flag, &["ops"])).await;
    let job = s.run_event("flaky", None).await;
    s.wait_job(job, Duration::from_secs(60)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !channel(&s, "ops").await["last_error"].is_string() {
        assert!(Instant::now() < deadline, "no failed attempt");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.stop();

    let rx = Receiver::start(addr, Inbox::default()).await;
    let s = Server::start_with(opts());
    wait_until(
        "the delivery after the restart",
        Duration::from_secs(40),
        || !rx.got().is_empty(),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = rx.got();
    assert_eq!(got.len(), 1, "delivered once: {got:?}");
    assert!(
        got[0].body["text"]
            .as_str()
            .is_some_and(|t| t.contains(&format!("[job {job}]"))),
        "{:?}",
        got[0].body
    );
    assert_eq!(channel(&s, "ops").await["pending"], 0);
}

/// The Python with aiosmtpd that scripts/test.sh installs (a venv under $CRONIUM_TEST_DIR),
/// or $CRONIUM_TEST_AIOSMTPD.
fn aiosmtpd_python() -> PathBuf {
    if let Ok(p) = std::env::var("CRONIUM_TEST_AIOSMTPD") {
        return PathBuf::from(p);
    }
    let dir = std::env::var("CRONIUM_TEST_DIR").unwrap_or_else(|_| "/tmp/cronium-test".into());
    let p = PathBuf::from(dir).join("aiosmtpd-1.4.6/bin/python");
    assert!(
        p.is_file(),
        "{} is missing: run scripts/test.sh (or scripts/test-smtp.sh), which installs aiosmtpd into a venv",
        p.display()
    );
    p
}

/// aiosmtpd on `addr` with STARTTLS (required) on `cert`/`key`, writing each message it gets
/// into `dir`. Killed when dropped.
struct Smtp(Child);

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const SMTP_SERVER: &str = r#"
import asyncio, email, email.policy, ssl, sys, pathlib
from aiosmtpd.controller import Controller
host, port, cert, key, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], pathlib.Path(sys.argv[5])
ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert, key)
class Keep:
    n = 0
    async def handle_DATA(self, server, session, envelope):
        Keep.n += 1
        tls = "tls" if session.ssl else "plain"
        msg = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        text = "Subject: " + str(msg["subject"]) + "\nFrom: " + str(msg["from"]) + "\n\n" + msg.get_body(("plain",)).get_content()
        (out / f"{Keep.n}.{tls}.txt").write_text(text)
        (out / f"{Keep.n}.rcpt").write_text("\n".join(envelope.rcpt_tos))
        return "250 OK"
c = Controller(Keep(), hostname=host, port=port, tls_context=ctx, require_starttls=True)
c.start()
print("ready", flush=True)
sys.stdin.read()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_mail_goes_over_starttls_to_a_real_smtp_server() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let cert = tmp.path().join("smtp.pem");
    let key = tmp.path().join("smtp.key");
    std::fs::write(&cert, ck.cert.pem()).expect("cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("key");
    let mail = tmp.path().join("mail");
    std::fs::create_dir(&mail).expect("mail dir");
    let script = tmp.path().join("smtp.py");
    std::fs::write(&script, SMTP_SERVER).expect("script");
    let addr = free_port();
    let mut child = Command::new(aiosmtpd_python())
        .arg(&script)
        .args(["127.0.0.1", &addr.port().to_string()])
        .arg(&cert)
        .arg(&key)
        .arg(&mail)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start aiosmtpd");
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("ready line");
        assert_eq!(line.trim(), "ready", "aiosmtpd did not start");
    }
    let _smtp = Smtp(child);

    let s = Server::start();
    // The server connects to `localhost` (the certificate's name) and trusts this CA.
    let (status, r) = s
        .api(
            "POST",
            "/api/v1/channels",
            Some(
                json!({"name": "mail", "type": "email", "smtp_host": "localhost",
                "smtp_port": addr.port(), "smtp_tls": "starttls",
                "smtp_ca_file": cert.display().to_string(),
                "from": "Cronium <cronium@example.com>", "to": ["ops@example.com"]}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{r}");
    // Precise refusals.
    for (body, field) in [
        (
            json!({"name": "m2", "type": "email", "from": "a@b.c", "to": ["x@y.z"]}),
            "smtp_host",
        ),
        (
            json!({"name": "m2", "type": "email", "smtp_host": "h", "from": "not an address", "to": ["x@y.z"]}),
            "from",
        ),
        (
            json!({"name": "m2", "type": "email", "smtp_host": "h", "from": "a@b.c", "to": ["x@y.z", "bad"]}),
            "to[1]",
        ),
        (
            json!({"name": "m2", "type": "email", "smtp_host": "h", "from": "a@b.c", "to": ["x@y.z"], "url": "http://x"}),
            "url",
        ),
        (json!({"name": "m2", "type": "slack"}), "url"),
    ] {
        let (status, r) = s.api("POST", "/api/v1/channels", Some(body)).await;
        assert_eq!(
            (status, r["error"]["field"].as_str()),
            (422, Some(field)),
            "{r}"
        );
    }

    let shared = shared_tempdir();
    let flag = shared.path().join("fail");
    std::fs::write(&flag, "").expect("flag");
    s.apply_yaml(&flaky_event("nightly", &flag, &["mail"]))
        .await;
    let failed = s.run_event("nightly", None).await;
    s.wait_job(failed, Duration::from_secs(60)).await;
    std::fs::remove_file(&flag).expect("unflag");
    let ok = s.run_event("nightly", None).await;
    s.wait_job(ok, Duration::from_secs(60)).await;
    let count = || {
        std::fs::read_dir(&mail)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "txt"))
                    .count()
            })
            .unwrap_or(0)
    };
    wait_until("two e-mails", Duration::from_secs(40), || count() >= 2).await;
    // Both came over STARTTLS (the server refuses mail before it), in either order.
    let mails: Vec<String> = (1..=2)
        .map(|n| {
            std::fs::read_to_string(mail.join(format!("{n}.tls.txt")))
                .unwrap_or_else(|e| panic!("mail {n} over TLS: {e}"))
        })
        .collect();
    let first = mails
        .iter()
        .find(|m| m.contains("nightly failed (exit 3)"))
        .unwrap_or_else(|| panic!("no failure mail: {mails:?}"));
    assert!(first.starts_with("Subject: [Cronium]"), "{first}");
    assert!(
        first.contains("From: Cronium <cronium@example.com>"),
        "{first}"
    );
    assert!(first.contains("disk full on /var"), "{first}");
    assert!(first.contains(&format!("/jobs/{failed}")), "{first}");
    assert!(
        mails
            .iter()
            .any(|m| m.contains("recovered") && m.contains("nightly succeeded")),
        "no recovery mail: {mails:?}"
    );
    for n in 1..=2 {
        assert_eq!(
            std::fs::read_to_string(mail.join(format!("{n}.rcpt")))
                .expect("rcpt")
                .trim(),
            "ops@example.com"
        );
    }
    // The server records a delivery once the SMTP server has answered, a moment after the
    // mail landed on its side.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let pending = channel(&s, "mail").await["pending"].clone();
        if pending == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "deliveries still pending: {pending}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
