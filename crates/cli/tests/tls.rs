//! `cronium serve --tls-cert/--tls-key` serves HTTPS itself (a certificate made here, a
//! client trusting it), its cookies are Secure, plain HTTP is not answered on that port, and
//! a non-loopback `--listen` without TLS warns.

mod support;

use std::time::{Duration, Instant};

use support::*;

fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("certificate");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).expect("cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("key");
    (cert, key, ck.cert.pem())
}

#[tokio::test]
async fn https_with_a_self_signed_certificate() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (cert, key, pem) = self_signed(tmp.path());
    let s = Server::start_with(ServerOpts {
        args: vec![
            "--tls-cert".into(),
            cert.display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
        ],
        ..Default::default()
    });
    assert!(s.url.starts_with("https://127.0.0.1:"), "{}", s.url);
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).expect("pem"))
        .build()
        .expect("client");
    let r = client
        .get(format!("{}/healthz", s.url))
        .send()
        .await
        .expect("https request");
    assert_eq!(r.status(), 200);
    let r = client
        .get(format!("{}/api/v1/events", s.url))
        .bearer_auth(&s.token)
        .send()
        .await
        .expect("https request");
    assert_eq!(r.status(), 200);
    // Cookies are Secure under TLS without --secure-cookies.
    let r = client
        .get(format!("{}/login", s.url))
        .send()
        .await
        .expect("login page");
    let cookies: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    assert!(!cookies.is_empty());
    assert!(cookies.iter().all(|c| c.contains("; Secure")), "{cookies:?}");
    // A client that does not trust the certificate is refused, and plain HTTP gets nothing.
    assert!(reqwest::Client::new()
        .get(format!("{}/healthz", s.url))
        .send()
        .await
        .is_err());
    let plain = s.url.replace("https://", "http://");
    let r = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
        .get(format!("{plain}/healthz"))
        .send()
        .await;
    assert!(r.is_err(), "plain HTTP answered on the TLS port: {r:?}");
    // Many connections at once: each handshake in its own task.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let c = client.clone();
        let url = format!("{}/healthz", s.url);
        tasks.push(tokio::spawn(async move { c.get(url).send().await.map(|r| r.status()) }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task").expect("request"), 200);
    }
}

/// The server's log, once it holds `needle` or the time is up.
fn log_with(path: &std::path::Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn listening_beyond_loopback_without_tls_warns() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let log = tmp.path().join("server.log");
    let s = Server::start_with(ServerOpts {
        args: vec!["--listen".into(), "0.0.0.0:0".into()],
        log_file: Some(log.clone()),
        ..Default::default()
    });
    let text = log_with(&log, "WARNING");
    assert!(
        text.contains("WARNING: Cronium listens on 0.0.0.0:") && text.contains("without TLS"),
        "{text}"
    );
    drop(s);

    let (cert, key, _) = self_signed(tmp.path());
    let log2 = tmp.path().join("server2.log");
    let s = Server::start_with(ServerOpts {
        args: vec![
            "--listen".into(),
            "0.0.0.0:0".into(),
            "--tls-cert".into(),
            cert.display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
        ],
        log_file: Some(log2.clone()),
        ..Default::default()
    });
    assert!(s.url.starts_with("https://"), "{}", s.url);
    std::thread::sleep(Duration::from_millis(500));
    let text = std::fs::read_to_string(&log2).unwrap_or_default();
    assert_no_warning(&text);
    // On loopback, no warning either.
    let log3 = tmp.path().join("server3.log");
    let _s = Server::start_with(ServerOpts {
        log_file: Some(log3.clone()),
        ..Default::default()
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_no_warning(&std::fs::read_to_string(&log3).unwrap_or_default());
}

fn assert_no_warning(log: &str) {
    assert!(!log.contains("WARNING"), "a warning without cause: {log}");
}

#[test]
fn a_key_that_does_not_match_is_refused_at_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (cert, _, _) = self_signed(tmp.path());
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).expect("dir");
    let (_, key, _) = self_signed(&other);
    let out = std::process::Command::new(cronium_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path().join("data"))
        .arg("--runner")
        .arg(runner_bin())
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .env("CRONIUM_ADMIN_TOKEN", TOKEN)
        .output()
        .expect("serve");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--tls-cert/--tls-key"), "{}", stderr(&out));
    let out = std::process::Command::new(cronium_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .output()
        .expect("serve");
    assert!(!out.status.success(), "--tls-cert without --tls-key");
}
