//! Local runs cannot reach the server's secrets: its environment, its command line, its data
//! directory. Against the real server binary, which runs as root here, so scripts run as the
//! unprivileged run user by default.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

const ADMIN_PASSWORD: &str = "adm1n-pass-w0rd-secret";
const PG_PASSWORD: &str = "hunter2-secret";
const ENCRYPTION_KEY: &str = "6b65792d6d6174657269616c2d666f722d7468652d746573742d6f6e6c792121";

/// A bash script that looks everywhere a script could find the server's secrets and prints
/// what it finds; every file it tries is reported `READ-OK name` or `DENIED name`.
const HUNTER: &str = r#"echo "== id: $(id)"
echo "== env"; env
echo "== server environ"
if tr '\0' '\n' < /proc/$SERVER_PID/environ; then echo "READ-OK environ"; else echo "DENIED environ"; fi
echo "== server cmdline"; tr '\0' ' ' < /proc/$SERVER_PID/cmdline; echo
echo "== every environ"
for f in /proc/[0-9]*/environ; do tr '\0' '\n' < "$f" 2>/dev/null; done | grep -a -i -E 'cronium_|postgres' || true
for f in secret.key cronium.db cronium.db-wal cronium.db-shm payloads; do
  if [ -e "$DATA_DIR/$f" ] || ls -d "$DATA_DIR/$f" >/dev/null 2>&1; then echo "EXISTS-VISIBLE $f"; fi
  if cat "$DATA_DIR/$f" >/dev/null 2>&1 || ls "$DATA_DIR/$f" >/dev/null 2>&1; then
    echo "READ-OK $f"; strings "$DATA_DIR/$f" 2>/dev/null | head -c 100000
  else echo "DENIED $f"; fi
done
if ls "$DATA_DIR"; then echo "READ-OK ls"; else echo "DENIED ls"; fi
echo "== done"
"#;

async fn run_script(s: &Server, name: &str, script: &str, env: Value) -> (Value, String) {
    s.apply_yaml(
        &serde_json::to_string(&json!({
            "name": name, "type": "bash", "script": script, "env": env,
        }))
        .unwrap(),
    )
    .await;
    let id = s.run_event(name, None).await;
    let job = s.wait_job(id, Duration::from_secs(60)).await;
    let log = s.log_text(id).await;
    (job, log)
}

/// Runs [`HUNTER`] on `s` and asserts it found none of `secrets` and could open nothing of the
/// data directory.
async fn hunt(s: &Server, secrets: &[&str]) {
    let (job, log) = run_script(
        s,
        "hunter",
        HUNTER,
        json!({
            "SERVER_PID": s.child.id().to_string(),
            "DATA_DIR": s.data_dir.display().to_string(),
        }),
    )
    .await;
    assert_eq!(job["status"], "succeeded", "{job}\n{log}");
    assert!(log.contains("== done"), "{log}");
    assert!(
        log.contains("uid=") && !log.contains("uid=0("),
        "ran as root: {log}"
    );
    for secret in secrets {
        assert!(!log.contains(secret), "the script found `{secret}`:\n{log}");
    }
    for f in [
        "secret.key",
        "cronium.db",
        "cronium.db-wal",
        "cronium.db-shm",
        "payloads",
    ] {
        if s.data_dir.join(f).exists() {
            assert!(log.contains(&format!("DENIED {f}")), "{f}:\n{log}");
        }
    }
    for line in ["DENIED environ", "DENIED ls"] {
        assert!(log.contains(line), "{line}:\n{log}");
    }
    assert!(!log.contains("READ-OK"), "{log}");
    assert!(!log.contains("EXISTS-VISIBLE"), "{log}");
}

#[tokio::test]
async fn a_local_script_hunting_for_secrets_finds_none_sqlite_and_key_file() {
    let s = Server::start_with(ServerOpts {
        env: vec![("CRONIUM_ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into())],
        ..Default::default()
    });
    let key = std::fs::read_to_string(s.data_path("secret.key")).unwrap();
    assert!(key.trim().len() >= 32, "{key}");
    hunt(&s, &[TOKEN, ADMIN_PASSWORD, key.trim()]).await;
}

#[tokio::test]
async fn a_local_script_hunting_for_secrets_finds_none_postgres_url_and_env_key() {
    let db = fresh_pg_database().await;
    // The test server trusts every password: this one only has to stay secret.
    let url = db.replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{PG_PASSWORD}@"),
        1,
    );
    assert!(url.contains(PG_PASSWORD), "{url}");
    let s = Server::start_with(ServerOpts {
        // In the environment, as the README says: a command line is readable by every user.
        env: vec![
            ("CRONIUM_DATABASE_URL".into(), url.clone()),
            ("CRONIUM_ENCRYPTION_KEY".into(), ENCRYPTION_KEY.into()),
            ("CRONIUM_ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into()),
        ],
        ..Default::default()
    });
    assert!(
        !s.data_path("secret.key").exists(),
        "the key came from the environment"
    );
    hunt(
        &s,
        &[TOKEN, ADMIN_PASSWORD, PG_PASSWORD, &url, ENCRYPTION_KEY],
    )
    .await;
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

#[tokio::test]
async fn the_data_directory_is_0700_and_its_files_0600_even_when_it_was_looser() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(data.join("payloads")).unwrap();
    std::fs::write(data.join("notes.txt"), "left by an older version").unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        data.join("payloads"),
        std::fs::Permissions::from_mode(0o775),
    )
    .unwrap();
    std::fs::set_permissions(
        data.join("notes.txt"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let s = Server::start_with(ServerOpts {
        data_dir: Some(data.clone()),
        ..Default::default()
    });
    // A run fills the payload cache and writes the WAL.
    let (job, log) = run_script(&s, "modes", "echo hi", json!({})).await;
    assert_eq!(job["status"], "succeeded", "{job}\n{log}");
    assert_eq!(mode(&data), 0o700);
    let files = files_under(&data);
    for name in [
        "cronium.db",
        "cronium.db-wal",
        "cronium.db-shm",
        "secret.key",
        "notes.txt",
    ] {
        assert!(
            files.iter().any(|f| f.ends_with(name)),
            "{name} missing: {files:?}"
        );
    }
    assert!(
        files
            .iter()
            .any(|f| f.parent().is_some_and(|d| d.ends_with("payloads"))),
        "no payload cached: {files:?}"
    );
    for f in &files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
        let mut dir = f.parent();
        while let Some(d) = dir.filter(|d| d.starts_with(&data)) {
            assert_eq!(mode(d), 0o700, "{}", d.display());
            dir = d.parent();
        }
    }
}

#[tokio::test]
async fn local_runs_execute_as_the_run_user_with_a_clean_documented_environment() {
    let s = Server::start_with(ServerOpts {
        env: vec![("SOME_SERVER_VARIABLE".into(), "server-only".into())],
        ..Default::default()
    });
    let (job, log) = run_script(
        &s,
        "whoami",
        "id -un; echo \"HOME=$HOME USER=$USER\"; echo \"PATH=$PATH\"; echo \"LANG=$LANG\"; echo \"SEEN=${SOME_SERVER_VARIABLE:-unset} EVENT=$FROM_EVENT\"; env | grep -c '^CRONIUM_ADMIN' || true",
        json!({"FROM_EVENT": "event-value"}),
    )
    .await;
    assert_eq!(job["status"], "succeeded", "{job}\n{log}");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines[0], "cronium-run", "{log}");
    assert_eq!(
        lines[1], "HOME=/var/lib/cronium-run USER=cronium-run",
        "{log}"
    );
    assert!(lines[2].ends_with("/usr/local/bin:/usr/bin:/bin"), "{log}");
    assert!(lines[3].starts_with("LANG=") && lines[3].len() > 5, "{log}");
    assert_eq!(lines[4], "SEEN=unset EVENT=event-value", "{log}");
    assert_eq!(lines[5], "0", "{log}");
}

#[tokio::test]
async fn run_as_names_the_user_and_root_opts_out_with_landlock_hiding_the_data_directory() {
    let s = Server::start_with(ServerOpts {
        args: vec!["--run-as".into(), "nobody".into()],
        ..Default::default()
    });
    let (job, log) = run_script(&s, "nobody", "id -un", json!({})).await;
    assert_eq!(job["status"], "succeeded", "{job}\n{log}");
    assert_eq!(log.trim(), "nobody");
    drop(s);

    let s = Server::start_with(ServerOpts {
        env: vec![("CRONIUM_RUN_AS".into(), "root".into())],
        ..Default::default()
    });
    let script = "id -u; if cat \"$DATA_DIR/secret.key\" >/dev/null 2>&1; then echo READ-OK; else echo DENIED; fi";
    let (job, log) = run_script(
        &s,
        "root",
        script,
        json!({"DATA_DIR": s.data_dir.display().to_string()}),
    )
    .await;
    assert_eq!(job["status"], "succeeded", "{job}\n{log}");
    let lines: Vec<&str> = log.lines().collect();
    if log.contains("Landlock is not") {
        // A kernel without Landlock: root reads everything, and the log says so.
        assert_eq!(lines[1..], ["0", "READ-OK"], "{log}");
        return;
    }
    assert!(lines[0].starts_with("[cronium] Landlock (ABI "), "{log}");
    assert!(lines[0].contains(&s.data_dir.canonicalize().unwrap().display().to_string()));
    assert_eq!(lines[1..], ["0", "DENIED"], "{log}");
}

#[tokio::test]
async fn pass_env_passes_the_named_variables_only() {
    let s = Server::start_with(ServerOpts {
        args: vec!["--pass-env".into(), "PASSED_ONE".into()],
        env: vec![
            ("PASSED_ONE".into(), "one".into()),
            ("CRONIUM_PASS_ENV".into(), "IGNORED_BY_THE_FLAG".into()),
            ("NOT_PASSED".into(), "two".into()),
        ],
        ..Default::default()
    });
    let (job, log) = run_script(
        &s,
        "passenv",
        "echo \"${PASSED_ONE:-unset} ${NOT_PASSED:-unset}\"",
        json!({}),
    )
    .await;
    assert_eq!(job["status"], "succeeded", "{job}\n{log}");
    assert_eq!(log.trim(), "one unset");
}

/// Starts `cronium serve` expecting it to fail at start; returns its stderr.
fn serve_fails(args: &[&str], env: &[(&str, &str)]) -> String {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(cronium_bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-docker",
            "--data-dir",
        ])
        .arg(data.path().join("d"))
        .arg("--runner")
        .arg(runner_bin())
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("cronium serve {args:?} did not fail");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    err
}

#[test]
fn bad_isolation_settings_are_refused_at_start_naming_the_setting() {
    let err = serve_fails(&["--pass-env", "CRONIUM_ADMIN_TOKEN"], &[]);
    assert!(err.contains("--pass-env CRONIUM_ADMIN_TOKEN"), "{err}");
    let err = serve_fails(&[], &[("CRONIUM_PASS_ENV", "OK,cronium_encryption_key")]);
    assert!(err.contains("--pass-env cronium_encryption_key"), "{err}");
    let err = serve_fails(&["--run-as", "no-such-user-here"], &[]);
    assert!(
        err.contains("--run-as no-such-user-here: no such user"),
        "{err}"
    );
}

#[tokio::test]
async fn scripts_find_python3_and_node_as_the_run_user() {
    let s = Server::start();
    let (job, log) = run_script(
        &s,
        "interpreters",
        "python3 -c 'import sys; print(\"python\", sys.version_info[0])'\nnode -e 'console.log(\"node\", typeof process.version)'",
        json!({}),
    )
    .await;
    assert_eq!(job["status"], "succeeded", "{job}\n{log}");
    assert_eq!(log.trim(), "python 3\nnode string");
}

#[tokio::test]
async fn a_runner_in_a_directory_the_run_user_cannot_enter_still_runs_with_its_helpers() {
    // As after `cargo build` in a clone under /root: the binary is executable, its directory
    // is private to root.
    let private = tempfile::tempdir().unwrap();
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let runner = private.path().join("cronium-runner");
    std::fs::copy(runner_bin(), &runner).unwrap();
    let s = Server::start_with(ServerOpts {
        runner: Some(runner),
        ..Default::default()
    });
    let (job, log) = run_script(&s, "helpers", "cronium.output answer 42\nid -un", json!({})).await;
    assert_eq!(job["status"], "succeeded", "{job}\n{log}");
    assert_eq!(job["output"], json!({"answer": 42}), "{log}");
    assert_eq!(log.trim(), "cronium-run");
}
