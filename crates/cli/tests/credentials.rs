//! Rotating a server's credential (`cronium server set-key`, `PUT /api/v1/servers/{name}/credential`)
//! against real `sshd` instances (the SSH crate's test support): the new credential is tested
//! before it is kept, a refused one changes nothing, pooled connections of the old one are not
//! reused, viewers are refused, and the audit log never holds the secret.

#[path = "../../ssh/tests/support/mod.rs"]
mod sshd;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

/// A host key that parses (no test host presents it).
const HOST_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMTzbbst47xEvVNW6qC8WZmL2oKrrONAv6PhPieyC96f";

/// A server deploying the runner to a directory of its own on the hosts (they share one
/// login); the directory is removed when dropped.
struct TestServer {
    server: Server,
    deploy_dir: String,
}

impl std::ops::Deref for TestServer {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(sshd::home_path(&self.deploy_dir));
    }
}

fn start(log_file: Option<PathBuf>, database_url: Option<String>) -> TestServer {
    let deploy_dir = format!(".cache/cronium-cred-{:08x}", rand::random::<u32>());
    let server = Server::start_with(ServerOpts {
        args: vec![
            "--static-runner".into(),
            static_runner_bin().display().to_string(),
            "--ssh-deploy-dir".into(),
            deploy_dir.clone(),
        ],
        log_file,
        database_url,
        ..Default::default()
    });
    TestServer { server, deploy_dir }
}

fn server_logging_to(log_file: Option<PathBuf>) -> TestServer {
    start(log_file, None)
}

fn server() -> TestServer {
    start(None, None)
}

/// A new ed25519 key pair in `dir`: (private key file, public key line, SHA256 fingerprint).
fn keypair(dir: &Path, name: &str, passphrase: &str) -> (PathBuf, String, String) {
    let path = dir.join(name);
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", passphrase, "-C", name, "-f"])
        .arg(&path)
        .status()
        .expect("ssh-keygen");
    assert!(st.success());
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    let fp = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(path.with_extension("pub"))
        .output()
        .expect("ssh-keygen -l");
    let fp = String::from_utf8_lossy(&fp.stdout)
        .split_whitespace()
        .nth(1)
        .expect("fingerprint")
        .to_string();
    (path, public, fp)
}

/// Registers `h` as NAME with the key in `keyfile` (or extra CLI arguments).
fn add(s: &Server, name: &str, port: u16, extra: &[&str]) {
    s.add_server(name, port, sshd::USER, extra);
}

/// Runs `event` to its end and returns the job.
async fn run(s: &Server, event: &str) -> Value {
    let id = s.run_event(event, None).await;
    s.wait_job(id, Duration::from_secs(60)).await
}

/// How many logins sshd accepted with the key of fingerprint `fp` (its log at VERBOSE).
fn logins_with(h: &sshd::Sshd, fp: &str) -> usize {
    h.log()
        .lines()
        .filter(|l| l.contains("Accepted publickey") && l.contains(fp))
        .count()
}

#[tokio::test]
async fn rotating_from_key_a_to_key_b_keeps_runs_working_after_a_is_revoked() {
    rotate_from_a_to_b(server()).await;
}

#[tokio::test]
async fn rotating_from_key_a_to_key_b_on_postgres() {
    rotate_from_a_to_b(start(None, Some(fresh_pg_database().await))).await;
}

/// Key A registered, B added to authorized_keys, `set-key` to B: the pooled session of A is
/// closed, runs log in with B, and keep working once A is removed from the host.
async fn rotate_from_a_to_b(s: TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let (key_a, pub_a, fp_a) = keypair(dir.path(), "key-a", "");
    let (key_b, pub_b, fp_b) = keypair(dir.path(), "key-b", "");
    let h = sshd::Sshd::start_logging(true, "VERBOSE");
    let authorized = h.dir.path().join("authorized_keys");
    std::fs::write(&authorized, format!("{pub_a}{pub_b}")).unwrap();
    add(&s, "rot", h.port, &["--key-file", key_a.to_str().unwrap()]);
    s.apply_yaml("name: on-rot\ntype: bash\ntarget: { servers: [rot] }\nscript: echo ran\n")
        .await;
    let j = run(&s, "on-rot").await;
    assert_eq!(j["status"], "succeeded", "{j}");
    // The run left its connection (logged in with A) in the pool.
    assert!(!h.session_processes().is_empty(), "a pooled session");
    let a_logins = logins_with(&h, &fp_a);
    assert!(a_logins >= 1, "{}", h.log());

    let o = s.cli(&[
        "server",
        "set-key",
        "rot",
        "--key-file",
        key_b.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("tested and stored"), "{}", stdout(&o));
    assert_eq!(logins_with(&h, &fp_b), 1, "the test logged in with B");
    // The pooled session of A is closed, not kept for reuse.
    sshd::assert_all_gone("sessions logged in with the old key", || {
        h.session_processes()
    })
    .await;

    let j = run(&s, "on-rot").await;
    assert_eq!(j["status"], "succeeded", "{j}");
    assert!(s.log_text(j["id"].as_i64().unwrap()).await.contains("ran"));
    assert!(logins_with(&h, &fp_b) >= 2, "the run logged in with B");
    assert_eq!(logins_with(&h, &fp_a), a_logins, "nothing logged in with A");

    // A revoked on the host: runs still work.
    std::fs::write(&authorized, &pub_b).unwrap();
    let j = run(&s, "on-rot").await;
    assert_eq!(j["status"], "succeeded", "{j}");
    let (_, srv) = s.api("GET", "/api/v1/servers/rot", None).await;
    assert_eq!(srv["auth"], "key", "{srv}");
}

#[tokio::test]
async fn a_credential_the_host_refuses_changes_nothing_and_says_why() {
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    let key = write(dir.path(), "id_ed25519", &sshd::env().client_key);
    let key = key.to_str().unwrap();
    let refused = write(dir.path(), "other", &sshd::env().other_key);
    let h = sshd::Sshd::start();
    add(&s, "keep", h.port, &["--key-file", key]);
    s.apply_yaml("name: on-keep\ntype: bash\ntarget: { servers: [keep] }\nscript: echo ran\n")
        .await;
    assert_eq!(run(&s, "on-keep").await["status"], "succeeded");
    let (_, before) = s.api("GET", "/api/v1/servers/keep", None).await;

    // A key that is not in authorized_keys.
    let o = s.cli(&[
        "server",
        "set-key",
        "keep",
        "--key-file",
        refused.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("keep") && err.contains("authentication") && err.contains("did not accept"),
        "{err}"
    );
    // A wrong password.
    let o = Command::new(cronium_bin())
        .args(["server", "set-key", "keep", "--password-env", "NEW_PW"])
        .env("CRONIUM_URL", &s.url)
        .env("CRONIUM_TOKEN", &s.token)
        .env("NEW_PW", "not-the-password")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("keep") && stderr(&o).contains("did not accept the password"),
        "{}",
        stderr(&o)
    );
    // A file that is no key, and a key with the wrong passphrase: refused before any login.
    let garbage = write(dir.path(), "garbage", "not a key");
    let (locked, _, _) = keypair(dir.path(), "locked", "right-passphrase");
    let (status, r) = s
        .api(
            "PUT",
            "/api/v1/servers/keep/credential",
            Some(json!({"private_key": std::fs::read_to_string(&garbage).unwrap()})),
        )
        .await;
    assert_eq!(
        (status, r["error"]["field"].as_str()),
        (422, Some("private_key")),
        "{r}"
    );
    assert!(
        r["error"]["message"].as_str().unwrap().contains("keep"),
        "{r}"
    );
    let (status, r) = s
        .api(
            "PUT",
            "/api/v1/servers/keep/credential",
            Some(
                json!({"private_key": std::fs::read_to_string(&locked).unwrap(),
                        "passphrase": "wrong-passphrase"}),
            ),
        )
        .await;
    assert_eq!(
        (status, r["error"]["field"].as_str()),
        (422, Some("private_key")),
        "{r}"
    );
    let (status, r) = s
        .api("PUT", "/api/v1/servers/keep/credential", Some(json!({})))
        .await;
    assert_eq!(status, 422, "{r}");

    // Nothing changed: the server is as it was and runs still log in with the old key.
    let (_, after) = s.api("GET", "/api/v1/servers/keep", None).await;
    assert_eq!(after, before);
    let j = run(&s, "on-keep").await;
    assert_eq!(j["status"], "succeeded", "{j}");

    // A host key that does not match the pinned one: 409, nothing pinned or stored.
    add(
        &s,
        "impostor",
        h.port,
        &["--key-file", key, "--host-key", HOST_KEY],
    );
    let (status, r) = s
        .api(
            "PUT",
            "/api/v1/servers/impostor/credential",
            Some(json!({"private_key": sshd::env().client_key})),
        )
        .await;
    assert_eq!(
        (status, r["error"]["field"].as_str()),
        (409, Some("host_key")),
        "{r}"
    );
    let m = r["error"]["message"].as_str().unwrap();
    assert!(m.contains("impostor") && m.contains("host key"), "{r}");
    let (_, srv) = s.api("GET", "/api/v1/servers/impostor", None).await;
    assert_eq!(
        (srv["host_key"].as_str(), &srv["pending_host_key"]),
        (Some(HOST_KEY), &Value::Null),
        "{srv}"
    );

    // An unreachable host: 409 naming it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    add(&s, "gone", closed, &["--key-file", key]);
    let o = s.cli(&["server", "set-key", "gone", "--key-file", key]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("gone") && stderr(&o).contains("unreachable"),
        "{}",
        stderr(&o)
    );
    // Unknown server.
    let o = s.cli(&["server", "set-key", "ghost", "--key-file", key]);
    assert!(
        !o.status.success() && stderr(&o).contains("ghost"),
        "{}",
        stderr(&o)
    );
}

#[tokio::test]
async fn a_password_can_replace_a_key_and_is_never_shown() {
    let logs = tempfile::tempdir().unwrap();
    let log_file = logs.path().join("server.log");
    let s = server_logging_to(Some(log_file.clone()));
    let dir = tempfile::tempdir().unwrap();
    let key = write(dir.path(), "id_ed25519", &sshd::env().client_key);
    let h = sshd::Sshd::start();
    add(&s, "pw", h.port, &["--key-file", key.to_str().unwrap()]);
    s.apply_yaml("name: on-pw\ntype: bash\ntarget: { servers: [pw] }\nscript: echo ran\n")
        .await;
    // First contact through set-key pins the host key it saw.
    let o = Command::new(cronium_bin())
        .args([
            "server",
            "set-key",
            "pw",
            "--password-env",
            "NEW_PW",
            "--json",
        ])
        .env("CRONIUM_URL", &s.url)
        .env("CRONIUM_TOKEN", &s.token)
        .env("NEW_PW", sshd::PASSWORD)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let srv: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(srv["auth"], "password", "{srv}");
    let pinned = srv["host_key"].as_str().expect("pinned").to_string();
    assert_eq!(
        pinned.split_whitespace().take(2).collect::<Vec<_>>(),
        h.host_key().split_whitespace().take(2).collect::<Vec<_>>()
    );
    assert!(!srv.to_string().contains(sshd::PASSWORD), "{srv}");
    // Runs log in with the password now, even with no key authorized any more.
    std::fs::write(h.dir.path().join("authorized_keys"), "").unwrap();
    let j = run(&s, "on-pw").await;
    assert_eq!(j["status"], "succeeded", "{j}");

    // The audit entry has the change, without the secret.
    let (_, audit) = s
        .api("GET", "/api/v1/audit?action=server.set_key", None)
        .await;
    let entries = audit.as_array().expect("entries");
    assert_eq!(entries.len(), 1, "{audit}");
    assert_eq!(entries[0]["target"], "server pw", "{audit}");
    assert_eq!(entries[0]["outcome"], "ok", "{audit}");
    assert_eq!(entries[0]["after"]["auth"], "password", "{audit}");
    assert_eq!(entries[0]["before"]["auth"], "key", "{audit}");
    assert!(!audit.to_string().contains(sshd::PASSWORD), "{audit}");
    s.assert_not_at_rest(sshd::PASSWORD);
    let log = std::fs::read_to_string(&log_file).unwrap_or_default();
    assert!(
        !log.contains(sshd::PASSWORD),
        "the password is in the server's log"
    );
}

#[tokio::test]
async fn a_viewer_cannot_change_a_credential_and_every_attempt_is_audited() {
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    let key = write(dir.path(), "id_ed25519", &sshd::env().client_key);
    let h = sshd::Sshd::start();
    add(
        &s,
        "guarded",
        h.port,
        &["--key-file", key.to_str().unwrap()],
    );
    let (st, u) = s
        .api(
            "POST",
            "/api/v1/users",
            Some(json!({"name": "vic", "role": "viewer", "password": "correct-horse-battery"})),
        )
        .await;
    assert_eq!(st, 201, "{u}");
    let (st, t) = s
        .api(
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "vic-cli", "user": "vic"})),
        )
        .await;
    assert_eq!(st, 201, "{t}");
    let viewer = t["token"].as_str().unwrap().to_string();
    let body = json!({"private_key": sshd::env().other_key});
    let (st, r) = s
        .api_with_token(
            "PUT",
            "/api/v1/servers/guarded/credential",
            Some(body.clone()),
            Some(&viewer),
        )
        .await;
    assert_eq!(st, 403, "{r}");
    // A refused attempt by an operator is on record too, without the key.
    let (st, r) = s
        .api("PUT", "/api/v1/servers/guarded/credential", Some(body))
        .await;
    assert_eq!(st, 422, "{r}");
    let (_, audit) = s
        .api("GET", "/api/v1/audit?action=server.set_key", None)
        .await;
    let entries = audit.as_array().expect("entries");
    assert_eq!(
        entries.len(),
        1,
        "the viewer's request changed nothing: {audit}"
    );
    assert!(
        entries[0]["outcome"]
            .as_str()
            .unwrap()
            .starts_with("error:"),
        "{audit}"
    );
    let secret_line = sshd::env()
        .other_key
        .lines()
        .nth(1)
        .expect("a key body line")
        .to_string();
    assert!(!audit.to_string().contains(&secret_line), "{audit}");
}
