//! Runs through the whole path (server, agent, payload, runner, helpers, store) in every language,
//! and `cronium run` without a server.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

#[tokio::test]
async fn helpers_work_in_every_language_through_the_server() {
    let s = Server::start();
    s.api(
        "PUT",
        "/api/v1/variables/base",
        Some(json!({"value": {"n": 40}})),
    )
    .await;
    let scripts = [
        (
            "bash",
            r#"n=$(cronium.getVariable base | python3 -c 'import json,sys;print(json.load(sys.stdin)["n"])')
cronium.output who "$(cronium.input who)"
cronium.output event "$(cronium.event name)"
cronium.setVariable from_bash '{"lang":"bash","n":'"$((n+2))"'}'
cronium.setCondition true
"#,
        ),
        (
            "python",
            r#"import cronium
n = cronium.getVariable('base')['n']
cronium.output({'who': cronium.input()['who'], 'event': cronium.event()['name']})
cronium.setVariable('from_python', {'lang': 'python', 'n': n + 2})
cronium.setCondition(True)
"#,
        ),
        (
            "node",
            r#"const c = require('cronium');
const n = c.getVariable('base').n;
c.output({who: c.input().who, event: c.event().name});
c.setVariable('from_node', {lang: 'node', n: n + 2});
c.setCondition(true);
"#,
        ),
    ];
    for (lang, script) in scripts {
        let name = format!("helpers-{lang}");
        let (status, r) = s
            .api(
                "PUT",
                &format!("/api/v1/events/{name}"),
                Some(json!({"name": name, "type": lang, "script": script})),
            )
            .await;
        assert_eq!(status, 200, "{r}");
        let id = s.run_event(&name, Some(json!({"who": "ünïcødé ✓"}))).await;
        let j = s.wait_job(id, Duration::from_secs(60)).await;
        assert_eq!(
            j["status"],
            "succeeded",
            "{lang}: {j}\n{}",
            s.log_text(id).await
        );
        assert_eq!(j["output"]["who"], "ünïcødé ✓", "{lang}: {j}");
        assert_eq!(j["output"]["event"], name.as_str(), "{lang}: {j}");
        assert_eq!(
            j["executions"][0]["condition"], true,
            "{lang}: setCondition not recorded: {j}"
        );
        let (_, v) = s
            .api("GET", &format!("/api/v1/variables/from_{lang}"), None)
            .await;
        assert_eq!(v["value"], json!({"lang": lang, "n": 42}), "{lang}: {v}");
    }
}

#[tokio::test]
async fn outputs_survive_a_timeout() {
    let s = Server::start();
    s.apply_yaml(
        "name: late\ntype: python\ntimeout: 1s\nscript: |\n  import cronium, time\n  cronium.output({'progress': 50})\n  cronium.setVariable('late_progress', 50)\n  time.sleep(60)\n",
    )
    .await;
    let id = s.run_event("late", None).await;
    let j = s.wait_job(id, Duration::from_secs(30)).await;
    assert_eq!(j["status"], "timed_out", "{j}");
    assert_eq!(j["exit_code"], 124);
    assert_eq!(j["output"], json!({"progress": 50}));
    let (_, v) = s.api("GET", "/api/v1/variables/late_progress", None).await;
    assert_eq!(v["value"], 50);
}

/// `serve --runner` with a path relative to where the server was started: every run starts in
/// a working directory of its own, where the relative path would name nothing.
#[tokio::test]
async fn a_relative_runner_path_is_taken_from_the_servers_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("bin")).expect("mkdir");
    std::fs::copy(runner_bin(), dir.path().join("bin/cronium-runner")).expect("copy runner");
    let s = Server::start_with(ServerOpts {
        runner: Some("bin/cronium-runner".into()),
        current_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    });
    s.apply_yaml("name: rel\ntype: bash\nscript: echo from-relative\n")
        .await;
    let id = s.run_event("rel", None).await;
    let j = s.wait_job(id, Duration::from_secs(30)).await;
    assert_eq!(j["status"], "succeeded", "{j}");
    assert!(s.log_text(id).await.contains("from-relative"));
}

#[tokio::test]
async fn payloads_are_reused_until_the_event_changes() {
    let s = Server::start();
    s.apply_yaml("name: p\ntype: bash\nscript: echo one\n")
        .await;
    for _ in 0..3 {
        let id = s.run_event("p", None).await;
        s.wait_job(id, Duration::from_secs(30)).await;
    }
    let count = || {
        std::fs::read_dir(s.data_path("payloads"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert_eq!(count(), 1, "one payload for one event version");
    s.apply_yaml("name: p\ntype: bash\nscript: echo two\n")
        .await;
    let id = s.run_event("p", None).await;
    let j = s.wait_job(id, Duration::from_secs(30)).await;
    assert_eq!(j["event_version"], 2);
    assert!(s.log_text(id).await.contains("two"));
    assert_eq!(count(), 2, "a new payload for the new version");
}

#[tokio::test]
async fn output_cap_keeps_the_start_and_marks_the_cut() {
    let s = Server::start_with(ServerOpts {
        args: vec!["--max-output".into(), "64k".into()],
        ..Default::default()
    });
    s.apply_yaml("name: chatty\ntype: bash\nscript: |\n  for i in $(seq 1 20000); do echo \"line $i of chatter\"; done\n  printf 'bad utf8: \\xff\\xfe end\\n' >&2\n  exit 0\n").await;
    let id = s.run_event("chatty", None).await;
    let j = s.wait_job(id, Duration::from_secs(60)).await;
    assert_eq!(j["status"], "succeeded", "{j}");
    let log = s.log_text(id).await;
    assert!(log.starts_with("line 1 of chatter"), "{}", &log[..100]);
    assert!(log.contains("truncated"), "no truncation marker");
    assert!(!log.contains("line 20000 of"), "kept past the cap");
    assert!(log.len() < 80 * 1024, "{} bytes kept", log.len());
}

#[test]
fn cronium_run_executes_a_file_with_helpers_and_no_server() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "job.py",
        "import cronium\nprint('hi', cronium.input()['x'])\ncronium.output({'double': cronium.input()['x'] * 2})\ncronium.setVariable('seen', cronium.getVariable('start'))\n",
    );
    let o = Command::new(cronium_bin())
        .args([
            "run",
            f.to_str().unwrap(),
            "--input",
            "{\"x\": 21}",
            "--var",
            "start=go",
            "--json",
        ])
        .env("CRONIUM_RUNNER", runner_bin())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["status"], "succeeded");
    assert_eq!(r["output"], json!({"double": 42}));
    assert_eq!(r["variables"], json!({"seen": "go"}));

    let bad = write(dir.path(), "bad.sh", "echo oops >&2\nexit 5\n");
    let o = Command::new(cronium_bin())
        .args(["run", bad.to_str().unwrap()])
        .env("CRONIUM_RUNNER", runner_bin())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(5));
    assert!(stderr(&o).contains("oops"));
    let o = Command::new(cronium_bin())
        .args(["run", "/nonexistent.py"])
        .env("CRONIUM_RUNNER", runner_bin())
        .output()
        .unwrap();
    assert!(
        !o.status.success() && stderr(&o).contains("cannot read"),
        "{}",
        stderr(&o)
    );
    let o = Command::new(cronium_bin())
        .args(["run", bad.to_str().unwrap(), "--input", "{x"])
        .env("CRONIUM_RUNNER", runner_bin())
        .output()
        .unwrap();
    assert!(stderr(&o).contains("--input"), "{}", stderr(&o));
}
