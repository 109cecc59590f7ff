//! Runner versions through the server and the CLI, against real `sshd` hosts: a second runner
//! version registered with `runner add` (scripts/build-runner.sh --next builds it: the same
//! source reporting `X.Y.Z-next`), rolled out to a tag of five hosts in batches of two; the
//! fourth host is broken (its deploy directory belongs to root, so the new binary cannot be
//! uploaded) and stops the rollout at the second batch: the first batch runs the new version
//! (a job's executions say so), the broken batch's other host stays on the old one, the last
//! batch is untouched; `rollback` returns the first batch to the old version. On the way: one
//! rollout at a time per server (409), the cleanup of old versions on a host (our files beyond
//! the last two go, a file that is not ours stays), `server deploy --tag` with the broken host
//! (non-zero exit, the table says why), pins (a server's beats its tag's, which beats the
//! default; an unknown version is refused naming the platform), `server list`'s runner column,
//! and the API's refusals (403 for a viewer, 422 naming the field of a bad body).
//!
//! Four of the hosts log in as the same test user, so they share one deploy directory; the
//! broken one logs in as the other test user, whose deploy directory is made root's.

#[path = "../../ssh/tests/support/mod.rs"]
mod sshd;
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

/// The runner of the next version: CRONIUM_NEXT_RUNNER (scripts/test.sh sets it), else the one
/// `scripts/build-runner.sh --next` builds. Missing is a failure, not a skip.
fn next_runner_bin() -> PathBuf {
    if let Ok(p) = std::env::var("CRONIUM_NEXT_RUNNER") {
        return PathBuf::from(p);
    }
    let p =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/runner/next/cronium-runner");
    assert!(
        p.is_file(),
        "{} is missing: run scripts/build-runner.sh --next (scripts/test.sh does)",
        p.display()
    );
    p
}

fn version_of(bin: &Path) -> String {
    let o = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .strip_prefix("cronium-runner ")
        .unwrap_or_else(|| panic!("{} --version: {o:?}", bin.display()))
        .to_string()
}

fn sh_home(rel: &str) -> PathBuf {
    Path::new("/home").join(sshd::SH_USER).join(rel)
}

struct Setup {
    server: Server,
    deploy_dir: String,
    _runners: tempfile::TempDir,
    old: String,
    next: String,
    bin: PathBuf,
    next_bin: PathBuf,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(sshd::home_path(&self.deploy_dir));
        let _ = std::fs::remove_dir_all(sh_home(&self.deploy_dir));
    }
}

fn start_server(bin: &Path, deploy_dir: &str, data_dir: Option<PathBuf>) -> Server {
    Server::start_with(ServerOpts {
        data_dir,
        args: vec![
            "--static-runner".into(),
            bin.display().to_string(),
            "--ssh-deploy-dir".into(),
            deploy_dir.to_string(),
            "--health-interval".into(),
            "0".into(),
        ],
        ..Default::default()
    })
}

fn setup() -> Setup {
    setup_in(None)
}

fn setup_in(data_dir: Option<PathBuf>) -> Setup {
    let runners = tempfile::tempdir().unwrap();
    let bin = runners.path().join("cronium-runner");
    std::fs::copy(static_runner_bin(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let next_bin = runners.path().join("next-cronium-runner");
    std::fs::copy(next_runner_bin(), &next_bin).unwrap();
    std::fs::set_permissions(&next_bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Asked of the originals: running a file this process just wrote can fail with ETXTBSY
    // (another test thread's fork may still hold the write descriptor).
    let (old, next) = (
        version_of(&static_runner_bin()),
        version_of(&next_runner_bin()),
    );
    assert_ne!(old, next, "the next runner must report another version");
    let deploy_dir = format!(".cache/cronium-roll-{:08x}", rand::random::<u32>());
    let server = start_server(&bin, &deploy_dir, data_dir);
    Setup {
        server,
        deploy_dir,
        _runners: runners,
        old,
        next,
        bin,
        next_bin,
    }
}

/// Runs a job on `servers` (runner-ssh) and returns each server's runner version.
async fn versions_on(s: &Server, event: &str, servers: &[&str]) -> Vec<(String, String)> {
    s.apply_yaml(&format!(
        "name: {event}\ntype: bash\ntarget: {{ servers: [{}], mode: runner-ssh }}\nscript: echo ok\n",
        servers.join(", ")
    ))
    .await;
    let id = s.run_event(event, None).await;
    let j = s.wait_job(id, Duration::from_secs(90)).await;
    assert_eq!(j["status"], "succeeded", "{j}\n{}", s.log_text(id).await);
    let mut v: Vec<(String, String)> = j["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["server"].as_str().unwrap_or("?").to_string(),
                x["runner_version"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

async fn rollout_state(s: &Server, id: i64) -> Value {
    let (st, v) = s
        .api("GET", &format!("/api/v1/runners/rollouts/{id}"), None)
        .await;
    assert_eq!(st, 200, "{v}");
    v
}

fn server_status(r: &Value, name: &str) -> (String, Option<String>) {
    let x = r["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["server"] == name)
        .unwrap_or_else(|| panic!("{name} not in {r}"));
    (
        x["status"].as_str().unwrap().to_string(),
        x["error"].as_str().map(str::to_string),
    )
}

fn runner_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("cronium-runner"))
        .collect();
    v.sort();
    v
}

async fn user_token(s: &Server, name: &str, role: &str) -> String {
    let (st, u) = s
        .api(
            "POST",
            "/api/v1/users",
            Some(json!({"name": name, "role": role, "password": "a-long-password-1"})),
        )
        .await;
    assert_eq!(st, 201, "{u}");
    let (st, t) = s
        .api(
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": format!("{name}-cli"), "user": name})),
        )
        .await;
    assert_eq!(st, 201, "{t}");
    t["token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_rollout_stops_at_the_broken_batch_and_rolls_back() {
    let t = setup();
    let s = &t.server;
    let dir = tempfile::tempdir().unwrap();
    let key = write(dir.path(), "id_ed25519", &sshd::env().client_key);
    let key = key.to_str().unwrap();
    let hosts: Vec<sshd::Sshd> = (0..5).map(|_| sshd::Sshd::start()).collect();
    let names = ["h1", "h2", "h3", "h4", "h5"];
    for (i, (name, h)) in names.iter().zip(&hosts).enumerate() {
        // h4 logs in as the other user: its deploy directory is its own (made root's below).
        let user = if i == 3 { sshd::SH_USER } else { sshd::USER };
        s.add_server(name, h.port, user, &["--key-file", key, "--tag", "fleet"]);
    }

    // Everyone on the shipped version first (h4's deploy directory gets it too).
    let before = versions_on(s, "everyone", &names).await;
    assert!(before.iter().all(|(_, v)| v == &t.old), "{before:?}");
    // Then h4's deploy directory becomes root's: its old runner still runs, nothing new fits.
    let broken = sh_home(&t.deploy_dir);
    let st = std::process::Command::new("chown")
        .args(["root:root", broken.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o755)).unwrap();
    // In the shared deploy directory: an older runner of ours, and a file that is not ours.
    let shared = sshd::home_path(&t.deploy_dir);
    std::fs::write(shared.join("cronium-runner-0.0.1-deadbeef"), b"old").unwrap();
    std::fs::write(shared.join("cronium-runner-notes.txt"), b"keep me").unwrap();

    // The new version, registered with `runner add`.
    let o = s.cli(&["runner", "add", t.next_bin.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains(&t.next), "{}", stdout(&o));
    let (_, list) = s.api("GET", "/api/v1/runners", None).await;
    let added = list
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["version"] == t.next.as_str())
        .unwrap_or_else(|| panic!("{list}"));
    let copy = PathBuf::from(added["path"].as_str().unwrap());
    assert!(
        copy.starts_with(&s.data_dir),
        "copied into the data dir: {added}"
    );
    assert_eq!(
        std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // The rollout, followed by the CLI in the background.
    let cli = {
        let mut c = std::process::Command::new(cronium_bin());
        c.args([
            "runner",
            "rollout",
            "--version",
            &t.next,
            "--tag",
            "fleet",
            "--batch",
            "2",
            "--pause",
            "1s",
            "--url",
            &s.url,
            "--token",
            &s.token,
        ]);
        c.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c.spawn().unwrap()
    };
    // While it runs, a second rollout to the same servers is refused, naming one.
    let id = {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (_, v) = s.api("GET", "/api/v1/runners/rollouts", None).await;
            if let Some(id) = v
                .as_array()
                .and_then(|a| a.first())
                .and_then(|r| r["id"].as_i64())
            {
                break id;
            }
            assert!(std::time::Instant::now() < deadline, "no rollout started");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let (st, v) = s
        .api(
            "POST",
            "/api/v1/runners/rollouts",
            Some(json!({"version": t.next, "tag": "fleet", "batch": 1, "pause": "0s"})),
        )
        .await;
    assert_eq!(st, 409, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!("is in rollout {id}, which is still running")),
        "{msg}"
    );

    let out = cli.wait_with_output().unwrap();
    let (cli_out, cli_err) = (stdout(&out), stderr(&out));
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed rollout exits 1:\n{cli_out}\n{cli_err}"
    );
    assert!(
        cli_err.contains(&format!("rollout {id} ({})", t.next)),
        "{cli_err}"
    );
    assert!(
        cli_out.contains("SERVER") && cli_out.contains("PREVIOUS"),
        "{cli_out}"
    );
    assert!(cli_out.contains(": failed: batch 2 failed"), "{cli_out}");

    let r = rollout_state(s, id).await;
    assert_eq!(r["status"], "failed", "{r}");
    let err = r["error"].as_str().unwrap();
    assert!(
        err.starts_with("batch 2 failed") && err.contains("h4: "),
        "{err}"
    );
    assert_eq!(server_status(&r, "h1").0, "upgraded", "{r}");
    assert_eq!(server_status(&r, "h2").0, "upgraded", "{r}");
    let (h4, h4_err) = server_status(&r, "h4");
    assert_eq!(h4, "failed", "{r}");
    let h4_err = h4_err.unwrap();
    assert!(
        h4_err.contains("could not deploy the runner to server 'h4'")
            && h4_err.to_lowercase().contains("permission denied"),
        "{h4_err}"
    );
    assert_eq!(server_status(&r, "h3"), ("reverted".into(), None), "{r}");
    assert_eq!(
        server_status(&r, "h5"),
        ("pending".into(), None),
        "untouched: {r}"
    );

    // Jobs say which runner each host runs now.
    let after = versions_on(s, "after-rollout", &names).await;
    let want = |v1: &str, v2: &str| {
        vec![
            ("h1".to_string(), v1.to_string()),
            ("h2".to_string(), v1.to_string()),
            ("h3".to_string(), v2.to_string()),
            ("h4".to_string(), v2.to_string()),
            ("h5".to_string(), v2.to_string()),
        ]
    };
    assert_eq!(after, want(&t.next, &t.old));
    // The shared deploy directory keeps the two versions in use; the older runner of ours is
    // gone, the file that is not ours stays.
    let files = runner_files(&shared);
    assert_eq!(files.len(), 3, "{files:?}");
    assert!(
        files.contains(&"cronium-runner-notes.txt".to_string()),
        "{files:?}"
    );
    assert!(!files.iter().any(|f| f.contains("0.0.1")), "{files:?}");
    for v in [&t.old, &t.next] {
        assert!(
            files
                .iter()
                .any(|f| f.starts_with(&format!("cronium-runner-{v}-"))),
            "{v}: {files:?}"
        );
    }
    // `server list`: the runner column is each host's version now.
    let list = stdout(&s.cli(&["server", "list"]));
    let header = list.lines().next().unwrap();
    assert!(header.contains("RUNNER"), "{list}");
    for (name, v) in [("h1", &t.next), ("h3", &t.old)] {
        let line = list
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} not in\n{list}"));
        assert!(
            line.split_whitespace().any(|c| c == v.as_str()),
            "{name}: {line}"
        );
    }
    let show = stdout(&s.cli(&["server", "show", "h1"]));
    assert!(
        show.contains(&format!("version:   {} (server pin)", t.next)),
        "{show}"
    );

    // Rollback: the first batch returns to the old version, its pins as before.
    let o = s.cli(&["runner", "rollback", &id.to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("rolled_back"), "{}", stdout(&o));
    let r = rollout_state(s, id).await;
    assert_eq!(r["status"], "rolled_back", "{r}");
    assert_eq!(server_status(&r, "h1").0, "rolled_back", "{r}");
    let back = versions_on(s, "after-rollback", &names).await;
    assert_eq!(back, want(&t.old, &t.old));
    let show = stdout(&s.cli(&["server", "show", "h1"]));
    assert!(
        show.contains(&format!("version:   {} (default)", t.old)),
        "{show}"
    );
    let o = s.cli(&["runner", "rollback", &id.to_string()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("already rolled back"), "{}", stderr(&o));

    // `server deploy --tag fleet` to the new version: h4 fails, the exit code and table say so.
    let o = s.cli(&["runner", "pin", "--version", &t.next, "--tag", "fleet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = s.cli(&["server", "deploy", "--tag", "fleet"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{}", stderr(&o));
    let header = out.lines().next().unwrap();
    for col in ["SERVER", "PLATFORM", "VERSION", "OUTCOME", "MS", "ERROR"] {
        assert!(header.contains(col), "{out}");
    }
    for name in names {
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} not in\n{out}"));
        assert!(
            line.contains(&t.next) && line.contains("linux/x86_64"),
            "{line}"
        );
        if name == "h4" {
            assert!(
                line.contains("failed") && line.to_lowercase().contains("permission denied"),
                "{line}"
            );
        } else {
            assert!(
                ["deployed", "verified", "cached"]
                    .iter()
                    .any(|o| line.contains(o)),
                "{line}"
            );
        }
    }
    assert!(out.contains("5 server(s): 4 ok, 1 failed"), "{out}");
    let (_, h4) = s.api("GET", "/api/v1/servers/h4", None).await;
    assert_eq!(
        h4["deployments"][0]["outcome"], "failed",
        "in the history: {h4}"
    );

    // Pins: h1's own pin (the old version) beats the tag's; h2 follows the tag.
    let o = s.cli(&["runner", "pin", "--version", &t.old, "--server", "h1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (_, h1) = s.api("GET", "/api/v1/servers/h1", None).await;
    assert_eq!(h1["runner_version"], t.old.as_str(), "{h1}");
    assert_eq!(h1["runner_version_source"], "server pin", "{h1}");
    let (_, h2) = s.api("GET", "/api/v1/servers/h2", None).await;
    assert_eq!(h2["runner_version"], t.next.as_str(), "{h2}");
    assert_eq!(h2["runner_version_source"], "tag pin (fleet)", "{h2}");
    assert_eq!(
        versions_on(s, "pinned", &["h1", "h2"]).await,
        vec![
            ("h1".to_string(), t.old.clone()),
            ("h2".to_string(), t.next.clone())
        ]
    );
    let o = s.cli(&["runner", "pins"]);
    let pins = stdout(&o);
    assert!(
        pins.contains("server h1") && pins.contains("tag fleet"),
        "{pins}"
    );
    let o = s.cli(&["runner", "unpin", "--tag", "fleet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (_, h2) = s.api("GET", "/api/v1/servers/h2", None).await;
    assert_eq!(h2["runner_version_source"], "default", "{h2}");
    assert_eq!(h2["runner_version"], t.old.as_str(), "{h2}");
    // An unknown version is refused, naming the platform and what there is.
    let o = s.cli(&["runner", "pin", "--version", "9.9.9", "--server", "h2"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("no runner 9.9.9 for linux/x86_64 (server h2)")
            && e.contains(&format!(
                "registered for linux/x86_64: {}, {}",
                t.old, t.next
            )),
        "{e}"
    );
    let (st, v) = s
        .api(
            "POST",
            "/api/v1/runners/pins",
            Some(json!({"version": "9.9.9", "tag": "fleet"})),
        )
        .await;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (422, Some("version")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("server h1, h2, h3, h4, h5"),
        "{v}"
    );
}

#[tokio::test]
async fn the_api_refuses_viewers_and_bad_bodies_precisely() {
    let t = setup();
    let s = &t.server;
    let dir = tempfile::tempdir().unwrap();
    let key = write(dir.path(), "id_ed25519", &sshd::env().client_key);
    let h = sshd::Sshd::start();
    s.add_server(
        "solo",
        h.port,
        sshd::USER,
        &["--key-file", key.to_str().unwrap(), "--tag", "one"],
    );
    let viewer = user_token(s, "vic", "viewer").await;
    for (method, path, body) in [
        ("POST", "/api/v1/runners", json!({"path": "/bin/true"})),
        (
            "POST",
            "/api/v1/runners/pins",
            json!({"version": t.old, "server": "solo"}),
        ),
        (
            "POST",
            "/api/v1/runners/pins/remove",
            json!({"server": "solo"}),
        ),
        (
            "POST",
            "/api/v1/runners/rollouts",
            json!({"version": t.old}),
        ),
        ("POST", "/api/v1/runners/rollback", json!({})),
        ("POST", "/api/v1/servers/deploy", json!({})),
    ] {
        let (st, v) = s
            .api_with_token(method, path, Some(body), Some(&viewer))
            .await;
        assert_eq!(st, 403, "{method} {path}: {v}");
        assert_eq!(v["error"]["code"], "forbidden", "{v}");
    }
    for path in ["/api/v1/runners/pins", "/api/v1/runners/rollouts"] {
        let (st, v) = s.api_with_token("GET", path, None, Some(&viewer)).await;
        assert_eq!(st, 200, "{path}: {v}");
    }
    let bad = [
        (
            json!({"version": t.old, "tag": "one", "batch": "0"}),
            "batch",
            "'0' is not a number of servers",
        ),
        (
            json!({"version": t.old, "tag": "one", "batch": "150%"}),
            "batch",
            "'150%' is not a share of 1% to 100%",
        ),
        (
            json!({"version": t.old, "tag": "one", "pause": "x"}),
            "pause",
            "pause: ",
        ),
        (
            json!({"version": t.old, "tag": "nope"}),
            "tag",
            "no server has the tag `nope`",
        ),
        (
            json!({"version": "9.9.9", "tag": "one"}),
            "version",
            "no runner 9.9.9 for",
        ),
    ];
    for (body, field, words) in bad {
        let (st, v) = s
            .api("POST", "/api/v1/runners/rollouts", Some(body.clone()))
            .await;
        assert_eq!(st, 422, "{body}: {v}");
        assert_eq!(v["error"]["field"], field, "{body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(words), "{body}: {msg}");
    }
    let (_, v) = s.api("GET", "/api/v1/runners/rollouts", None).await;
    assert_eq!(v, json!([]), "nothing was started: {v}");
    let (st, v) = s
        .api(
            "POST",
            "/api/v1/runners/pins",
            Some(json!({"version": t.old})),
        )
        .await;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (422, Some("server")),
        "{v}"
    );
    let (st, v) = s
        .api(
            "POST",
            "/api/v1/runners",
            Some(json!({"path": "relative/path"})),
        )
        .await;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (422, Some("path")),
        "{v}"
    );
    let (st, v) = s.api("GET", "/api/v1/runners/rollouts/999", None).await;
    assert_eq!(st, 404, "{v}");
}

#[tokio::test]
async fn a_rollout_interrupted_by_a_restart_is_marked_failed() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("data");
    let mut t = setup_in(Some(data_dir.clone()));
    let dir = tempfile::tempdir().unwrap();
    let key = write(dir.path(), "id_ed25519", &sshd::env().client_key);
    let key = key.to_str().unwrap();
    let hosts: Vec<sshd::Sshd> = (0..2).map(|_| sshd::Sshd::start()).collect();
    for (name, h) in ["p1", "p2"].iter().zip(&hosts) {
        t.server.add_server(
            name,
            h.port,
            sshd::USER,
            &["--key-file", key, "--tag", "pair"],
        );
    }
    let o = t
        .server
        .cli(&["runner", "add", t.next_bin.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    // One server per batch and an hour between them: the rollout waits after batch 1.
    let (st, r) = t
        .server
        .api(
            "POST",
            "/api/v1/runners/rollouts",
            Some(json!({"version": t.next, "tag": "pair", "batch": "50%", "pause": "1h"})),
        )
        .await;
    assert_eq!(st, 202, "{r}");
    let id = r["id"].as_i64().unwrap();
    assert_eq!(r["status"], "running", "{r}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = rollout_state(&t.server, id).await;
        if server_status(&r, "p1").0 == "upgraded" {
            break;
        }
        assert_eq!(r["status"], "running", "{r}");
        assert!(
            std::time::Instant::now() < deadline,
            "batch 1 never ended: {r}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t.server.crash();
    t.server = start_server(&t.bin, &t.deploy_dir, Some(data_dir));
    let r = rollout_state(&t.server, id).await;
    assert_eq!(r["status"], "failed", "{r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .starts_with("interrupted: the Cronium server driving it stopped"),
        "{r}"
    );
    assert_eq!(server_status(&r, "p1").0, "upgraded", "{r}");
    assert_eq!(server_status(&r, "p2").0, "pending", "{r}");
    // The registered runner is deployable after the restart: p1 still runs it.
    assert_eq!(
        versions_on(&t.server, "after-restart", &["p1", "p2"]).await,
        vec![
            ("p1".to_string(), t.next.clone()),
            ("p2".to_string(), t.old.clone())
        ]
    );
    // A later rollout moves p1 on (back to the old version, on purpose): the first one cannot
    // be rolled back behind its back.
    let (st, later) = t
        .server
        .api(
            "POST",
            "/api/v1/runners/rollouts",
            Some(json!({"version": t.old, "tag": "pair", "batch": "50%", "pause": "0s"})),
        )
        .await;
    assert_eq!(st, 202, "{later}");
    let later = later["id"].as_i64().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while rollout_state(&t.server, later).await["status"] == "running" {
        assert!(
            std::time::Instant::now() < deadline,
            "rollout {later} never ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = rollout_state(&t.server, later).await;
    assert_eq!(r["status"], "succeeded", "{r}");
    let (st, r) = t
        .server
        .api(
            "POST",
            "/api/v1/runners/rollback",
            Some(json!({"rollout": id})),
        )
        .await;
    assert_eq!(st, 409, "{r}");
    assert!(
        r["error"]["message"].as_str().unwrap().contains(&format!(
            "server `p1` was upgraded again by the later rollout {later}"
        )),
        "{r}"
    );
    // The later one first (the latest of the tag), then the failed one.
    let (st, r) = t
        .server
        .api(
            "POST",
            "/api/v1/runners/rollback",
            Some(json!({"tag": "pair"})),
        )
        .await;
    assert_eq!((st, r["id"].as_i64()), (200, Some(later)), "{r}");
    let (st, r) = t
        .server
        .api(
            "POST",
            "/api/v1/runners/rollback",
            Some(json!({"rollout": id})),
        )
        .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["status"], "rolled_back", "{r}");
    assert_eq!(
        versions_on(&t.server, "after-rollbacks", &["p1", "p2"]).await,
        vec![
            ("p1".to_string(), t.old.clone()),
            ("p2".to_string(), t.old.clone())
        ]
    );
}
