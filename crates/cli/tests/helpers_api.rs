//! Runtime helpers in API mode, end to end through the real server, agent and runner: live
//! variables between runs, outputs and the condition visible while the run is still running,
//! the fallback to bundled mode when the socket is gone, and the runtime token's reach (one
//! execution, the runtime API only, dead once the execution ended, never stored or logged in
//! clear). Every language, on the local target, in containers (`network: none`) and over SSH
//! (real sshd on loopback).

#[path = "../../ssh/tests/support/mod.rs"]
mod sshd;
mod support;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

const LANGS: [&str; 3] = ["bash", "python", "node"];

/// A directory the run user may write into.
fn mark_dir(base: &Path, name: &str) -> std::path::PathBuf {
    let d = base.join(name);
    std::fs::create_dir(&d).expect("mkdir");
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    d
}

/// A script that sets an output key and the condition, then loops reading `live_<lang>` until
/// it reads `go-42`. A read made after the writer's marker existed must see the value (exit 3
/// otherwise): the write is live for the very next call.
fn reader(lang: &str) -> String {
    match lang {
        "bash" => r#"cronium.output phase waiting
cronium.setCondition true
while true; do
  if [ -e "$MARK/written" ]; then before=1; else before=0; fi
  v=$(cronium.getVariable live_bash)
  if [ "$v" = "go-42" ]; then cronium.output seen "$before"; exit 0; fi
  if [ $before = 1 ]; then echo "stale read after the write: $v"; exit 3; fi
  sleep 0.02
done
"#
        .into(),
        "python" => r#"import cronium, os, sys, time
cronium.output("phase", "waiting")
cronium.setCondition(True)
m = os.environ["MARK"]
while True:
    before = os.path.exists(m + "/written")
    v = cronium.getVariable("live_python")
    if v == "go-42":
        cronium.output("seen", 1 if before else 0)
        sys.exit(0)
    if before:
        print("stale read after the write:", v)
        sys.exit(3)
    time.sleep(0.02)
"#
        .into(),
        _ => r#"const c = require('cronium');
const fs = require('fs');
c.output('phase', 'waiting');
c.setCondition(true);
const m = process.env.MARK;
function loop() {
  const before = fs.existsSync(m + '/written');
  const v = c.getVariable('live_node');
  if (v === 'go-42') { c.output('seen', before ? 1 : 0); process.exit(0); }
  if (before) { console.log('stale read after the write:', v); process.exit(3); }
  setTimeout(loop, 20);
}
loop();
"#
        .into(),
    }
}

/// Writes `live_<lang>` through the helpers, then leaves the marker.
fn writer(lang: &str) -> String {
    match lang {
        "bash" => "cronium.setVariable live_bash go-42\ntouch \"$MARK/written\"\n".into(),
        "python" => "import cronium, os\ncronium.setVariable('live_python', 'go-42')\nopen(os.environ['MARK'] + '/written', 'w').close()\n".into(),
        _ => "const c = require('cronium');\nc.setVariable('live_node', 'go-42');\nrequire('fs').writeFileSync(process.env.MARK + '/written', '');\n".into(),
    }
}

async fn apply(s: &Server, name: &str, lang: &str, script: &str, env: Value) {
    let (status, r) = s
        .api(
            "PUT",
            &format!("/api/v1/events/{name}"),
            Some(
                json!({"name": name, "type": lang, "script": script, "helpers": "api",
                "timeout": "60s", "env": env}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{r}");
}

#[tokio::test]
async fn a_variable_written_by_one_run_is_read_by_the_next_call_of_another_in_every_language() {
    let s = Server::start();
    let tmp = shared_tempdir();
    for lang in LANGS {
        let mark = mark_dir(tmp.path(), lang);
        let env = json!({"MARK": mark.to_string_lossy()});
        apply(
            &s,
            &format!("reader-{lang}"),
            lang,
            &reader(lang),
            env.clone(),
        )
        .await;
        apply(&s, &format!("writer-{lang}"), lang, &writer(lang), env).await;

        let reader_job = s.run_event(&format!("reader-{lang}"), None).await;
        // The output key and the condition are stored while the reader still runs.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let seen_running = loop {
            let j = s.job(reader_job).await;
            let x = &j["executions"][0];
            if x["output"]["phase"] == "waiting" && x["condition"] == true {
                break j;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{lang}: no live output: {j}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // Still running: the reader waits for a write nobody has made yet.
        assert_eq!(seen_running["status"], "running", "{seen_running}");
        assert_eq!(
            seen_running["executions"][0]["helpers"], "api",
            "{seen_running}"
        );
        let (_, v) = s
            .api("GET", &format!("/api/v1/variables/live_{lang}"), None)
            .await;
        assert_ne!(
            v["value"], "go-42",
            "{lang}: the variable exists too early: {v}"
        );

        let writer_job = s.run_event(&format!("writer-{lang}"), None).await;
        let w = s.wait_job(writer_job, Duration::from_secs(30)).await;
        assert_eq!(
            w["status"],
            "succeeded",
            "{lang} writer: {w}\n{}",
            s.log_text(writer_job).await
        );
        let r = s.wait_job(reader_job, Duration::from_secs(30)).await;
        assert_eq!(
            r["status"],
            "succeeded",
            "{lang} reader: {r}\n{}",
            s.log_text(reader_job).await
        );
        assert_eq!(r["output"]["phase"], "waiting", "{r}");
        assert!(r["output"]["seen"].is_number(), "{r}");
        assert_eq!(r["executions"][0]["condition"], true, "{r}");
        assert_eq!(r["executions"][0]["helpers"], "api", "{r}");
        assert!(r["executions"][0]["helpers_note"].is_null(), "{r}");
        let (_, v) = s
            .api("GET", &format!("/api/v1/variables/live_{lang}"), None)
            .await;
        assert_eq!(v["value"], "go-42", "{v}");
    }
}

/// Removes the run's socket, then uses the helpers: they fall back to bundled mode, the
/// writes still reach the store at the end, and the execution record says so.
fn fallback(lang: &str) -> String {
    match lang {
        "bash" => r#"rm -f "${CRONIUM_API_ENDPOINT#unix:}"
cronium.setVariable fb_bash yes
cronium.output fb "$(cronium.getVariable fb_bash)"
"#
        .into(),
        "python" => r#"import cronium, os
os.remove(os.environ["CRONIUM_API_ENDPOINT"][len("unix:"):])
cronium.setVariable("fb_python", "yes")
cronium.output("fb", cronium.getVariable("fb_python"))
"#
        .into(),
        _ => r#"const c = require('cronium');
require('fs').unlinkSync(process.env.CRONIUM_API_ENDPOINT.slice('unix:'.length));
c.setVariable('fb_node', 'yes');
c.output('fb', c.getVariable('fb_node'));
"#
        .into(),
    }
}

#[tokio::test]
async fn helpers_fall_back_to_bundled_mode_when_the_endpoint_is_gone_and_say_so() {
    let s = Server::start();
    for lang in LANGS {
        let name = format!("fallback-{lang}");
        apply(&s, &name, lang, &fallback(lang), json!({})).await;
        let id = s.run_event(&name, None).await;
        let j = s.wait_job(id, Duration::from_secs(30)).await;
        let log = s.log_text(id).await;
        assert_eq!(j["status"], "succeeded", "{lang}: {j}\n{log}");
        assert_eq!(j["output"]["fb"], "yes", "{lang}: {j}");
        let x = &j["executions"][0];
        assert_eq!(x["helpers"], "api", "{x}");
        let note = x["helpers_note"].as_str().unwrap_or_default();
        assert!(note.contains("api.sock"), "{lang}: {note:?}");
        assert!(log.contains("fell back to bundled mode"), "{log}");
        let (_, v) = s
            .api("GET", &format!("/api/v1/variables/fb_{lang}"), None)
            .await;
        assert_eq!(v["value"], "yes", "{lang}: {v}");
        let shown = s.cli(&["job", "show", &id.to_string()]);
        assert!(
            stdout(&shown).contains("helpers: api (fell back from api:"),
            "{}",
            stdout(&shown)
        );
    }
    // Bundled mode stays the default, and says so.
    s.apply_yaml("name: plain\ntype: bash\nscript: cronium.output x 1\n")
        .await;
    let id = s.run_event("plain", None).await;
    let j = s.wait_job(id, Duration::from_secs(30)).await;
    assert_eq!(j["executions"][0]["helpers"], "bundled", "{j}");
    assert_eq!(j["output"]["x"], 1, "{j}");
}

/// One request on a runner's socket; the status.
fn socket_status(socket: &Path, token: &str, path: &str) -> u16 {
    let mut c = UnixStream::connect(socket).expect("connect to the run's socket");
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut answer = String::new();
    c.read_to_string(&mut answer).expect("read");
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

const SECURITY_SCRIPT: &str = r#"import os, time
m = os.environ["MARK"]; me = os.environ["ME"]
with open(m + "/" + me + ".endpoint", "w") as f:
    f.write(os.environ["CRONIUM_API_ENDPOINT"])
with open(m + "/" + me + ".token.tmp", "w") as f:
    f.write(os.environ["CRONIUM_API_TOKEN"])
os.rename(m + "/" + me + ".token.tmp", m + "/" + me + ".token")
print("my token is", os.environ["CRONIUM_API_TOKEN"])
while not os.path.exists(m + "/go"):
    time.sleep(0.02)
"#;

#[tokio::test]
async fn a_runtime_token_opens_its_own_execution_only_and_dies_with_it() {
    let s = Server::start();
    let tmp = shared_tempdir();
    let mark = mark_dir(tmp.path(), "sec");
    for me in ["a", "b"] {
        apply(
            &s,
            &format!("sec-{me}"),
            "python",
            SECURITY_SCRIPT,
            json!({"MARK": mark.to_string_lossy(), "ME": me}),
        )
        .await;
    }
    let job_a = s.run_event("sec-a", Some(json!({"who": "a"}))).await;
    let job_b = s.run_event("sec-b", Some(json!({"who": "b"}))).await;
    let read = |me: &str| {
        let p = mark.join(format!("{me}.token"));
        std::fs::read_to_string(p).ok()
    };
    s.wait_for("both tokens", Duration::from_secs(30), || async {
        read("a").is_some() && read("b").is_some()
    })
    .await;
    let (ta, tb) = (read("a").unwrap_or_default(), read("b").unwrap_or_default());
    assert!(ta.starts_with("crt_") && ta != tb, "{ta} {tb}");
    let exec_of = |j: &Value| j["executions"][0]["id"].clone();
    let ja = s.job(job_a).await;

    // Over HTTP, each token opens its own execution and nothing else.
    let (st, ev) = s
        .api_with_token("GET", "/api/v1/runtime/event", None, Some(&ta))
        .await;
    assert_eq!(st, 200, "{ev}");
    assert_eq!(ev["value"]["execution_id"], exec_of(&ja), "{ev}");
    assert_eq!(ev["value"]["name"], "sec-a", "{ev}");
    let (_, input) = s
        .api_with_token("GET", "/api/v1/runtime/input", None, Some(&tb))
        .await;
    assert_eq!(input["value"]["who"], "b", "{input}");
    let (st, out) = s
        .api_with_token(
            "PUT",
            "/api/v1/runtime/output",
            Some(json!({"value": {"by": "a"}})),
            Some(&ta),
        )
        .await;
    assert_eq!(st, 200, "{out}");
    assert_eq!(s.job(job_a).await["executions"][0]["output"]["by"], "a");
    assert!(s.job(job_b).await["executions"][0]["output"].is_null());
    // Bad input changes nothing and says what is wrong.
    let (st, e) = s
        .api_with_token(
            "PUT",
            "/api/v1/runtime/condition",
            Some(json!({"value": "yes"})),
            Some(&ta),
        )
        .await;
    assert_eq!(st, 422, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("true or false"),
        "{e}"
    );
    assert!(s.job(job_a).await["executions"][0]["condition"].is_null());

    // The runtime token opens no other endpoint; an API token opens no runtime one.
    for path in [
        "/api/v1/jobs",
        "/api/v1/variables",
        "/api/v1/events",
        "/metrics",
    ] {
        let (st, body) = s.api_with_token("GET", path, None, Some(&ta)).await;
        assert_eq!(st, 401, "{path}: {body}");
    }
    let (st, _) = s.api("GET", "/api/v1/runtime/input", None).await;
    assert_eq!(st, 401);
    let (st, _) = s
        .api_with_token("GET", "/api/v1/runtime/input", None, None)
        .await;
    assert_eq!(st, 401);

    // On the runner's socket: only the run's own token.
    let socket_a = std::fs::read_to_string(mark.join("a.endpoint")).expect("endpoint");
    let socket_a = Path::new(socket_a.trim_start_matches("unix:"));
    assert_eq!(socket_status(socket_a, &tb, "/api/v1/runtime/input"), 401);
    assert_eq!(socket_status(socket_a, "", "/api/v1/runtime/input"), 401);
    assert_eq!(socket_status(socket_a, &ta, "/api/v1/runtime/input"), 200);
    assert_eq!(socket_status(socket_a, &ta, "/api/v1/runtime/nothing"), 404);
    let dir = socket_a.parent().and_then(Path::parent).expect("run dir");
    let mode = std::fs::metadata(dir)
        .expect("run dir")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the run's directory is private: {mode:o}");

    // Ended: the token is refused at once.
    std::fs::write(mark.join("go"), "").expect("go");
    for id in [job_a, job_b] {
        let j = s.wait_job(id, Duration::from_secs(30)).await;
        assert_eq!(j["status"], "succeeded", "{j}\n{}", s.log_text(id).await);
    }
    for t in [&ta, &tb] {
        let (st, body) = s
            .api_with_token("GET", "/api/v1/runtime/input", None, Some(t))
            .await;
        assert_eq!(st, 401, "{body}");
    }
    // Never in logs (the printed token is masked) nor at rest in clear.
    let log = s.log_text(job_a).await;
    assert!(log.contains("my token is"), "{log}");
    assert!(!log.contains(&ta), "{log}");
    s.assert_not_at_rest(&ta);
    s.assert_not_at_rest(&tb);
}

/// Like [`reader`], with the marker in the store instead of a file (a container or an SSH host
/// shares no directory with the test): the writer sets `$LIVE` then `$MARKER`; a read of
/// `$LIVE` made after `$MARKER` was seen must see the value.
fn remote_reader(lang: &str) -> String {
    match lang {
        "bash" => r#"cronium.output phase waiting
cronium.setCondition true
while true; do
  m=$(cronium.getVariable "$MARKER")
  v=$(cronium.getVariable "$LIVE")
  if [ "$v" = "go-42" ]; then cronium.output seen 1; exit 0; fi
  if [ -n "$m" ]; then echo "stale read after the write: $v"; exit 3; fi
  sleep 0.02
done
"#
        .into(),
        "python" => r#"import cronium, os, sys, time
cronium.output("phase", "waiting")
cronium.setCondition(True)
while True:
    m = cronium.getVariable(os.environ["MARKER"])
    v = cronium.getVariable(os.environ["LIVE"])
    if v == "go-42":
        cronium.output("seen", 1)
        sys.exit(0)
    if m is not None:
        print("stale read after the write:", v)
        sys.exit(3)
    time.sleep(0.02)
"#
        .into(),
        _ => r#"const c = require('cronium');
c.output('phase', 'waiting');
c.setCondition(true);
function loop() {
  const m = c.getVariable(process.env.MARKER);
  const v = c.getVariable(process.env.LIVE);
  if (v === 'go-42') { c.output('seen', 1); process.exit(0); }
  if (m !== null) { console.log('stale read after the write:', v); process.exit(3); }
  setTimeout(loop, 20);
}
loop();
"#
        .into(),
    }
}

const REMOTE_WRITER: &str =
    "cronium.setVariable \"$LIVE\" go-42\ncronium.setVariable \"$MARKER\" 1\n";

async fn apply_on(s: &Server, name: &str, lang: &str, script: &str, env: Value, target: Value) {
    let (status, r) = s
        .api(
            "PUT",
            &format!("/api/v1/events/{name}"),
            Some(
                json!({"name": name, "type": lang, "script": script, "helpers": "api",
                "timeout": "120s", "env": env, "target": target}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{r}");
}

/// The reader on `target` sees the local writer's write, its output and condition are live,
/// in every language.
async fn live_variables_on(s: &Server, tag: &str, target: Value) {
    for lang in LANGS {
        let env =
            json!({"LIVE": format!("live_{tag}_{lang}"), "MARKER": format!("mark_{tag}_{lang}")});
        let reader_name = format!("reader-{tag}-{lang}");
        let writer_name = format!("writer-{tag}-{lang}");
        apply_on(
            s,
            &reader_name,
            lang,
            &remote_reader(lang),
            env.clone(),
            target.clone(),
        )
        .await;
        apply_on(s, &writer_name, "bash", REMOTE_WRITER, env, json!("local")).await;
        let reader_job = s.run_event(&reader_name, None).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let live = loop {
            let j = s.job(reader_job).await;
            let x = &j["executions"][0];
            if x["output"]["phase"] == "waiting" && x["condition"] == true {
                break j;
            }
            assert!(
                std::time::Instant::now() < deadline && j["status"] != "failed",
                "{tag}/{lang}: no live output: {j}\n{}",
                s.log_text(reader_job).await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(live["status"], "running", "{live}");
        assert_eq!(live["executions"][0]["helpers"], "api", "{live}");
        let writer_job = s.run_event(&writer_name, None).await;
        let w = s.wait_job(writer_job, Duration::from_secs(30)).await;
        assert_eq!(
            w["status"],
            "succeeded",
            "{w}\n{}",
            s.log_text(writer_job).await
        );
        let r = s.wait_job(reader_job, Duration::from_secs(60)).await;
        assert_eq!(
            r["status"],
            "succeeded",
            "{tag}/{lang}: {r}\n{}",
            s.log_text(reader_job).await
        );
        let x = &r["executions"][0];
        assert_eq!(x["output"], json!({"phase": "waiting", "seen": 1}), "{r}");
        assert_eq!(
            (x["condition"].clone(), x["helpers"].clone()),
            (json!(true), json!("api")),
            "{r}"
        );
        assert!(x["helpers_note"].is_null(), "{r}");
    }
}

/// Removes the socket, then writes: bundled fallback, recorded.
async fn fallback_on(s: &Server, tag: &str, target: Value) {
    let name = format!("fallback-{tag}");
    let script = "rm -f \"${CRONIUM_API_ENDPOINT#unix:}\"\ncronium.setVariable \"fb_$TAG\" yes\ncronium.output fb \"$(cronium.getVariable \"fb_$TAG\")\"\n";
    apply_on(s, &name, "bash", script, json!({"TAG": tag}), target).await;
    let id = s.run_event(&name, None).await;
    let j = s.wait_job(id, Duration::from_secs(120)).await;
    assert_eq!(j["status"], "succeeded", "{j}\n{}", s.log_text(id).await);
    assert_eq!(j["output"]["fb"], "yes", "{j}");
    let note = j["executions"][0]["helpers_note"]
        .as_str()
        .unwrap_or_default();
    assert!(note.contains("api.sock"), "{tag}: {j}");
    let (_, v) = s
        .api("GET", &format!("/api/v1/variables/fb_{tag}"), None)
        .await;
    assert_eq!(v["value"], "yes", "{v}");
}

fn remote_server(extra: &[&str]) -> Server {
    let mut args = vec![
        "--static-runner".to_string(),
        static_runner_bin().display().to_string(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    Server::start_with(ServerOpts {
        args,
        ..Default::default()
    })
}

#[tokio::test]
async fn api_mode_works_in_containers_without_a_network() {
    let s = remote_server(&[]);
    let boxed = json!({"container": {"network": "none"}});
    live_variables_on(&s, "box", boxed.clone()).await;
    fallback_on(&s, "box", boxed.clone()).await;
    // Nothing but loopback inside, and the helpers still reach the server.
    let script = "import cronium, os, socket\nnets = sorted(os.listdir('/sys/class/net'))\nreached = []\nfor host in ['172.17.0.1', '10.0.2.2', '1.1.1.1']:\n    try:\n        socket.create_connection((host, 80), timeout=1).close()\n        reached.append(host)\n    except OSError:\n        pass\ncronium.output({'nets': nets, 'reached': reached, 'who': cronium.event()['name']})\n";
    apply_on(&s, "isolated", "python", script, json!({}), boxed).await;
    let id = s.run_event("isolated", None).await;
    let j = s.wait_job(id, Duration::from_secs(120)).await;
    assert_eq!(j["status"], "succeeded", "{j}\n{}", s.log_text(id).await);
    assert_eq!(
        j["output"],
        json!({"nets": ["lo"], "reached": [], "who": "isolated"}),
        "{j}"
    );
    assert_eq!(j["executions"][0]["helpers"], "api", "{j}");
}

/// Registers an sshd instance as NAME with the test key.
fn add_host(s: &Server, name: &str, h: &sshd::Sshd, dir: &Path) {
    let key = write(dir, "id_ed25519", &sshd::env().client_key);
    let key = key.to_str().unwrap_or_default();
    s.add_server(name, h.port, sshd::USER, &["--key-file", key]);
}

#[tokio::test]
async fn api_mode_works_over_ssh_and_the_socket_is_the_login_users_alone() {
    let deploy = format!(".cache/cronium-helpers-{:08x}", rand::random::<u32>());
    let s = remote_server(&["--ssh-deploy-dir", &deploy]);
    let dir = tempfile::tempdir().expect("tempdir");
    let h = sshd::Sshd::start();
    add_host(&s, "h1", &h, dir.path());
    let on_h1 = json!({"servers": ["h1"]});
    live_variables_on(&s, "ssh", on_h1.clone()).await;
    fallback_on(&s, "ssh", on_h1.clone()).await;

    // Another user of the host cannot connect to the run's socket; the login user can.
    let script = "cronium.output endpoint \"$CRONIUM_API_ENDPOINT\"\nwhile [ -z \"$(cronium.getVariable ssh_done)\" ]; do sleep 0.05; done\n";
    apply_on(&s, "holder", "bash", script, json!({}), on_h1.clone()).await;
    let id = s.run_event("holder", None).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let endpoint = loop {
        let j = s.job(id).await;
        if let Some(e) = j["executions"][0]["output"]["endpoint"].as_str() {
            break e.to_string();
        }
        assert!(std::time::Instant::now() < deadline, "no endpoint: {j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let socket = endpoint.trim_start_matches("unix:").to_string();
    let connect_as = |user: &str| {
        let code = format!(
            "import socket; s = socket.socket(socket.AF_UNIX); s.connect({socket:?}); print('connected')"
        );
        std::process::Command::new("su")
            .args(["-s", "/bin/sh", user, "-c"])
            .arg(format!("python3 -c \"{}\"", code.replace('"', "\\\"")))
            .output()
            .expect("su")
    };
    let other = connect_as("cronium-test-sh");
    assert!(
        !other.status.success(),
        "another user connected: {}",
        stdout(&other)
    );
    assert!(
        stderr(&other).contains("Permission denied"),
        "{}",
        stderr(&other)
    );
    let owner = connect_as(sshd::USER);
    assert!(
        owner.status.success(),
        "the login user cannot connect: {}",
        stderr(&owner)
    );
    s.api(
        "PUT",
        "/api/v1/variables/ssh_done",
        Some(json!({"value": 1})),
    )
    .await;
    let j = s.wait_job(id, Duration::from_secs(60)).await;
    assert_eq!(j["status"], "succeeded", "{j}\n{}", s.log_text(id).await);

    // direct-ssh has no runner: API mode is recorded as bundled there, with the reason.
    apply_on(
        &s,
        "direct",
        "bash",
        "echo plain\n",
        json!({}),
        json!({"servers": ["h1"], "mode": "direct-ssh"}),
    )
    .await;
    let id = s.run_event("direct", None).await;
    let j = s.wait_job(id, Duration::from_secs(60)).await;
    assert_eq!(j["status"], "succeeded", "{j}");
    let x = &j["executions"][0];
    assert_eq!(x["helpers"], "bundled", "{x}");
    assert!(
        x["helpers_note"]
            .as_str()
            .unwrap_or_default()
            .contains("direct-ssh"),
        "{x}"
    );
    let _ = std::fs::remove_dir_all(sshd::home_path(&deploy));
}
