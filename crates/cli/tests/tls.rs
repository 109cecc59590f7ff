//! `cronium serve --tls-cert/--tls-key` serves HTTPS itself (a certificate made here, a
//! client trusting it), its cookies are Secure, plain HTTP is not answered on that port, and
//! a non-loopback `--listen` without TLS warns.

mod support;

use std::time::{Duration, Instant};

use support::*;

fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
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
    assert!(
        cookies.iter().all(|c| c.contains("; Secure")),
        "{cookies:?}"
    );
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
        tasks.push(tokio::spawn(async move {
            c.get(url).send().await.map(|r| r.status())
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task").expect("request"), 200);
    }
}

/// Starts `cronium serve` with `args` (its own data directory), waits until it listens, stops
/// it, and answers (stdout, stderr).
fn serve_briefly(dir: &std::path::Path, args: &[&str]) -> (String, String) {
    std::fs::create_dir_all(dir).expect("dir");
    let out = dir.join("stdout");
    let err = dir.join("stderr");
    let mut child = std::process::Command::new(cronium_bin())
        .arg("serve")
        .args(args)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--runner")
        .arg(runner_bin())
        .arg("--no-docker")
        .env("CRONIUM_ADMIN_TOKEN", TOKEN)
        .env("CRONIUM_LOG", "warn")
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("serve");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&out)
        .unwrap_or_default()
        .contains("Cronium listening on")
    {
        assert!(
            Instant::now() < deadline,
            "the server did not start: {}",
            std::fs::read_to_string(&err).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    (
        std::fs::read_to_string(&out).unwrap_or_default(),
        std::fs::read_to_string(&err).unwrap_or_default(),
    )
}

#[test]
fn listening_beyond_loopback_without_tls_warns() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_, err) = serve_briefly(&tmp.path().join("a"), &["--listen", "0.0.0.0:0"]);
    assert!(
        err.contains("WARNING: Cronium listens on 0.0.0.0:") && err.contains("without TLS"),
        "{err}"
    );

    let (cert, key, _) = self_signed(tmp.path());
    let (out, err) = serve_briefly(
        &tmp.path().join("b"),
        &[
            "--listen",
            "0.0.0.0:0",
            "--tls-cert",
            cert.to_str().expect("path"),
            "--tls-key",
            key.to_str().expect("path"),
        ],
    );
    assert!(
        out.contains("Cronium listening on https://0.0.0.0:"),
        "{out}"
    );
    assert!(!err.contains("WARNING"), "a warning under TLS: {err}");
    // On loopback, no warning either.
    let (_, err) = serve_briefly(&tmp.path().join("c"), &["--listen", "127.0.0.1:0"]);
    assert!(!err.contains("WARNING"), "a warning on loopback: {err}");
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
    assert!(
        stderr(&out).contains("--tls-cert/--tls-key"),
        "{}",
        stderr(&out)
    );
    let out = std::process::Command::new(cronium_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .output()
        .expect("serve");
    assert!(!out.status.success(), "--tls-cert without --tls-key");
}
