//! Workflows against a real `cronium serve`: every edge kind and join rule, skip propagation
//! with its reason, data merging, conditions set in bash, python and node, bad input refused
//! with nothing stored (API and CLI), `run --follow`, `run-show --explain`, retry after a fix,
//! cancel, the whole-run timeout, kill -9 of the server mid-run, directory apply with
//! `--dry-run` and `--prune`, a handed-off node that cannot start its run.

#[path = "../../ssh/tests/support/mod.rs"]
mod sshd;
mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

async fn apply_workflow(s: &Server, yaml: &str) -> Value {
    let v: Value = serde_saphyr::from_str(yaml).expect("yaml");
    let name = v["name"].as_str().expect("name").to_string();
    let (status, body) = s
        .api("PUT", &format!("/api/v1/workflows/{name}"), Some(v))
        .await;
    assert_eq!(status, 200, "apply workflow {name}: {body}");
    body
}

async fn start_run(s: &Server, name: &str, input: Option<Value>) -> i64 {
    let body = input.map(|i| json!({"input": i}));
    let (status, r) = s
        .api("POST", &format!("/api/v1/workflows/{name}/runs"), body)
        .await;
    assert_eq!(status, 201, "run {name}: {r}");
    r["id"].as_i64().expect("run id")
}

async fn run_detail(s: &Server, id: i64) -> Value {
    let (status, r) = s
        .api("GET", &format!("/api/v1/workflow-runs/{id}"), None)
        .await;
    assert_eq!(status, 200, "run {id}: {r}");
    r
}

/// Waits until the run has ended; returns its detail.
async fn wait_run(s: &Server, id: i64, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let d = run_detail(s, id).await;
        let st = d["run"]["status"].as_str().unwrap_or_default().to_string();
        if !["queued", "running"].contains(&st.as_str()) {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "run {id} still {st} after {within:?}: {d:#}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn node<'a>(d: &'a Value, id: &str) -> &'a Value {
    d["nodes"]
        .as_array()
        .and_then(|ns| ns.iter().find(|n| n["node"] == id))
        .unwrap_or_else(|| panic!("no node {id} in {d:#}"))
}

fn why<'a>(d: &'a Value, id: &str) -> &'a str {
    d["explain"]
        .as_array()
        .and_then(|ns| ns.iter().find(|n| n["node"] == id))
        .and_then(|n| n["why"].as_str())
        .unwrap_or_else(|| panic!("no explanation of {id} in {d:#}"))
}

fn status<'a>(d: &'a Value, id: &str) -> &'a str {
    node(d, id)["status"].as_str().unwrap_or_default()
}

const EDGES: &str = r#"
name: edges
input: { k: "workflow", from_workflow: true }
nodes:
  - id: a
    type: bash
    script: |
      cronium.output '{"k": "a", "a": 1}'
      cronium.setCondition true
  - id: b
    type: python
    script: |
      import cronium
      cronium.output({"k": "b", "b": 2})
      cronium.setCondition(False)
  - id: js
    type: node
    script: |
      const cronium = require('cronium');
      cronium.output({ n: 3 });
      cronium.setCondition(true);
  - id: merge
    type: bash
    after: [a, b]
    input: { own: "yes", k: "own" }
    script: 'cronium.output "$(cronium.input)"'
  - id: f
    type: bash
    after: [a]
    script: 'echo failing; exit 3'
  - id: on_failure
    type: bash
    after: { f: failure }
    script: 'echo handled'
  - id: on_success
    type: bash
    after: { f: success }
    script: 'echo never'
  - id: downstream
    type: bash
    after: [on_success]
    script: 'echo never either'
  - id: always
    type: bash
    after: { on_success: always }
    script: 'echo always'
  - id: cond_bash
    type: bash
    after: { a: condition }
    script: 'echo a said true'
  - id: notcond_bash
    type: bash
    after: { a: not_condition }
    script: 'echo never'
  - id: cond_python
    type: bash
    after: { b: condition }
    script: 'echo never'
  - id: notcond_python
    type: bash
    after: { b: not_condition }
    script: 'echo b said false'
  - id: cond_node
    type: bash
    after: { js: condition }
    script: 'echo n said true'
  - id: any
    type: bash
    after: { f: success, a: success }
    join: any
    script: 'echo one was enough'
  - id: all
    type: bash
    after: { f: success, a: success }
    script: 'echo never'
"#;

#[tokio::test]
async fn edges_joins_conditions_skips_and_data() {
    let s = Server::start();
    apply_workflow(&s, EDGES).await;
    let id = start_run(&s, "edges", None).await;
    let d = wait_run(&s, id, Duration::from_secs(60)).await;
    // f failed but a failure edge handles it: the run succeeded.
    assert_eq!(d["run"]["status"], "succeeded", "{d:#}");
    for (n, st) in [
        ("a", "succeeded"),
        ("b", "succeeded"),
        ("js", "succeeded"),
        ("merge", "succeeded"),
        ("f", "failed"),
        ("on_failure", "succeeded"),
        ("on_success", "skipped"),
        ("downstream", "skipped"),
        ("always", "succeeded"),
        ("cond_bash", "succeeded"),
        ("notcond_bash", "skipped"),
        ("cond_python", "skipped"),
        ("notcond_python", "succeeded"),
        ("cond_node", "succeeded"),
        ("any", "succeeded"),
        ("all", "skipped"),
    ] {
        assert_eq!(status(&d, n), st, "node {n}: {d:#}");
    }
    // Skipped with the reason in words, and the skip propagates with its own reason.
    assert_eq!(
        node(&d, "on_success")["reason"],
        "skipped: f failed, edge needs success",
        "{d:#}"
    );
    let r = node(&d, "downstream")["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(r.starts_with("skipped: on_success"), "{r}");
    assert!(why(&d, "notcond_bash").contains("condition"), "{d:#}");
    assert!(why(&d, "f").contains("failed"), "{}", why(&d, "f"));
    // Data: the workflow input, then the node's own input, then the upstream outputs in the
    // order of `after` (later wins), each also kept whole under nodes.<id>.
    let merged = &node(&d, "merge")["output"];
    assert_eq!(merged["k"], "b", "later upstream wins: {merged}");
    assert_eq!(merged["a"], 1, "{merged}");
    assert_eq!(merged["b"], 2, "{merged}");
    assert_eq!(merged["own"], "yes", "{merged}");
    assert_eq!(merged["from_workflow"], true, "{merged}");
    assert_eq!(merged["nodes"]["a"], json!({"k": "a", "a": 1}), "{merged}");
    assert_eq!(merged["nodes"]["b"], json!({"k": "b", "b": 2}), "{merged}");
    // Conditions set in the three languages reached the store.
    assert_eq!(node(&d, "a")["condition"], true);
    assert_eq!(node(&d, "b")["condition"], false);
    assert_eq!(node(&d, "js")["condition"], true);
    // Node runs are ordinary jobs (trigger workflow) with their log.
    let f_job = node(&d, "f")["job_id"].as_i64().expect("job of f");
    let job = s.job(f_job).await;
    assert_eq!(job["trigger"], "workflow", "{job}");
    assert_eq!(job["exit_code"], 3, "{job}");
    assert!(s.log_text(f_job).await.contains("failing"));
    assert!(node(&d, "on_success")["job_id"].is_null());
}

#[tokio::test]
async fn an_unhandled_failure_fails_the_run_and_retry_reruns_from_it() {
    let s = Server::start();
    let marks = shared_tempdir();
    let mark = marks.path().join("build-runs");
    s.apply_yaml(&format!(
        "name: build\ntype: bash\nscript: |\n  echo building\n  echo built >> {m}\n  cronium.output '{{\"artifact\": \"app-1.tar\"}}'\n",
        m = mark.display()
    ))
    .await;
    s.apply_yaml("name: deploy\ntype: bash\nscript: 'echo deploying; exit 7'\n")
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "release.yaml",
        r#"
name: release
nodes:
  - id: build
    event: build
  - id: deploy
    event: deploy
    after: [build]
  - id: announce
    type: bash
    after: [build, deploy]
    script: 'echo "announcing $(cronium.input artifact)"'
"#,
    );
    let o = s.cli(&["workflow", "apply", "-f", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("workflow release created"),
        "{}",
        stdout(&o)
    );

    // --follow prefixes every line with its node and exits non-zero: deploy failed unhandled.
    let o = s.cli(&["workflow", "run", "release", "--follow"]);
    let out = stdout(&o);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "stdout {out}\nstderr {err}");
    assert!(out.contains("[deploy] deploying"), "{out}");
    assert!(out.contains("[build] building"), "{out}");
    assert!(err.contains("failed"), "{err}");
    let run: i64 = {
        let (_, runs) = s.api("GET", "/api/v1/workflows/release/runs", None).await;
        runs[0]["id"].as_i64().expect("run id")
    };
    let d = run_detail(&s, run).await;
    assert_eq!(d["run"]["status"], "failed", "{d:#}");
    assert_eq!(status(&d, "announce"), "skipped");

    // --explain says why, in words.
    let o = s.cli(&["workflow", "run-show", &run.to_string(), "--explain"]);
    let out = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        out.contains("skipped: deploy failed, edge needs success"),
        "{out}"
    );
    // --json gives every node's job and output.
    let o = s.cli(&["workflow", "run-show", &run.to_string(), "--json"]);
    let v: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(node(&v, "build")["output"]["artifact"], "app-1.tar");

    // Fix the event, retry: build is kept (not run again), deploy and what follows run.
    s.apply_yaml("name: deploy\ntype: bash\nscript: 'echo deployed'\n")
        .await;
    let o = s.cli(&["workflow", "retry", &run.to_string(), "--follow"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{}", stderr(&o));
    assert!(out.contains("[announce] announcing app-1.tar"), "{out}");
    assert!(
        !out.contains("[build]"),
        "a kept node is not run again: {out}"
    );
    let (_, runs) = s.api("GET", "/api/v1/workflows/release/runs", None).await;
    let retry = &runs[0];
    assert_eq!(retry["retry_of"], run, "{runs}");
    assert_eq!(retry["attempt"], 2);
    assert_eq!(retry["status"], "succeeded");
    let d = run_detail(&s, retry["id"].as_i64().unwrap()).await;
    assert!(
        node(&d, "build")["reason"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("kept from run {run}")),
        "{d:#}"
    );
    assert_eq!(
        std::fs::read_to_string(&mark).unwrap().lines().count(),
        1,
        "build ran once over both runs"
    );
    // A succeeded run cannot be retried; an unknown one is a 404.
    let (st, body) = s
        .api(
            "POST",
            &format!("/api/v1/workflow-runs/{}/retry", retry["id"]),
            None,
        )
        .await;
    assert_eq!(st, 409, "{body}");
    let (st, _) = s
        .api("POST", "/api/v1/workflow-runs/999999/retry", None)
        .await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn bad_workflows_are_refused_naming_the_node_and_field_with_nothing_stored() {
    let s = Server::start();
    s.apply_yaml("name: build\ntype: bash\nscript: 'true'\n")
        .await;
    let cases = [
        (
            json!({"name": "w", "nodes": [
                {"id": "a", "event": "build", "after": ["b"]},
                {"id": "b", "event": "build", "after": ["a"]}]}),
            "nodes",
            "cycle",
        ),
        (
            json!({"name": "w", "nodes": [{"id": "a", "event": "nope"}]}),
            "nodes[0].event",
            "unknown event `nope`",
        ),
        (
            json!({"name": "w", "nodes": [
                {"id": "a", "event": "build"},
                {"id": "b", "event": "build", "after": {"deploy": "success"}}]}),
            "nodes[1].after.deploy",
            "unknown node",
        ),
        (
            json!({"name": "w", "nodes": [{"id": "a", "event": "build", "timeout": "soon"}]}),
            "nodes[0].timeout",
            "",
        ),
        (
            json!({"name": "w", "nodes": [{"id": "a", "event": "build", "after": {"x": "sometimes"}}]}),
            "nodes[0].after",
            "",
        ),
        (
            json!({"name": "w", "nodes": [{"id": "a", "event": "build", "target": {"servers": ["ghost"]}}]}),
            "nodes[0].target.servers",
            "unknown server `ghost`",
        ),
    ];
    for (body, field, words) in &cases {
        let (st, r) = s
            .api("PUT", "/api/v1/workflows/w", Some(body.clone()))
            .await;
        assert_eq!(st, 422, "{body}: {r}");
        let got = r["error"]["field"].as_str().unwrap_or_default();
        assert!(
            got.starts_with(field),
            "{body}: field {got}, want {field}: {r}"
        );
        let message = r["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(words), "{body}: {message}");
    }
    let (_, list) = s.api("GET", "/api/v1/workflows", None).await;
    assert_eq!(list, json!([]), "nothing was stored");
    let (_, events) = s.api("GET", "/api/v1/events", None).await;
    assert_eq!(events.as_array().map(Vec::len), Some(1));

    // The CLI names the file and the field, before sending anything.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "w.yaml",
        "name: w\nnodes:\n  - id: a\n    event: build\n  - id: b\n    event: build\n    after: [a, c]\n",
    );
    let o = s.cli(&["workflow", "apply", "-f", file.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("w.yaml: nodes[1].after.c: unknown node"),
        "{err}"
    );
    // And what only the server knows, naming the field.
    let file = write(
        dir.path(),
        "w.yaml",
        "name: w\nnodes:\n  - id: a\n    event: gone\n",
    );
    let o = s.cli(&["workflow", "apply", "-f", file.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("nodes[0].event: unknown event `gone`"),
        "{}",
        stderr(&o)
    );
    let (_, list) = s.api("GET", "/api/v1/workflows", None).await;
    assert_eq!(list, json!([]), "nothing was stored");
    // A run of an unknown workflow, bad input.
    let (st, _) = s.api("POST", "/api/v1/workflows/none/runs", None).await;
    assert_eq!(st, 404);
    apply_workflow(&s, "name: ok\nnodes:\n  - id: a\n    event: build\n").await;
    let (st, r) = s
        .api(
            "POST",
            "/api/v1/workflows/ok/runs",
            Some(json!({"input": [1, 2]})),
        )
        .await;
    assert_eq!(st, 422, "{r}");
    assert_eq!(r["error"]["field"], "input");
    let (_, runs) = s.api("GET", "/api/v1/workflows/ok/runs", None).await;
    assert_eq!(runs, json!([]));
}

#[tokio::test]
async fn cancel_stops_running_node_jobs_and_skips_the_rest() {
    let s = Server::start();
    apply_workflow(
        &s,
        r#"
name: slow
nodes:
  - id: wait
    type: bash
    script: 'echo started; sleep 60'
  - id: next
    type: bash
    after: [wait]
    script: 'echo never'
"#,
    )
    .await;
    let id = start_run(&s, "slow", None).await;
    s.wait_for("the node to run", Duration::from_secs(20), || async {
        let d = run_detail(&s, id).await;
        let job = node(&d, "wait")["job_id"].as_i64();
        match job {
            Some(j) => s.log_text(j).await.contains("started"),
            None => false,
        }
    })
    .await;
    let o = s.cli(&["workflow", "cancel", &id.to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let started = Instant::now();
    let d = wait_run(&s, id, Duration::from_secs(20)).await;
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(d["run"]["status"], "cancelled", "{d:#}");
    assert_eq!(status(&d, "wait"), "cancelled");
    assert_eq!(status(&d, "next"), "skipped");
    let job = s.job(node(&d, "wait")["job_id"].as_i64().unwrap()).await;
    assert_eq!(job["status"], "cancelled", "{job}");
    // An ended run cannot be cancelled again.
    let (st, _) = s
        .api("POST", &format!("/api/v1/workflow-runs/{id}/cancel"), None)
        .await;
    assert_eq!(st, 409);
}

#[tokio::test]
async fn a_run_past_its_timeout_is_stopped_timed_out() {
    let s = Server::start();
    apply_workflow(
        &s,
        r#"
name: late
timeout: 2s
nodes:
  - id: wait
    type: bash
    script: 'sleep 60'
  - id: next
    type: bash
    after: [wait]
    script: 'echo never'
"#,
    )
    .await;
    let started = Instant::now();
    let id = start_run(&s, "late", None).await;
    let o = s.cli(&["workflow", "run-show", &id.to_string(), "--json"]);
    let v: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert!(v["run"]["deadline_at"].is_string(), "{v}");
    let d = wait_run(&s, id, Duration::from_secs(30)).await;
    let took = started.elapsed();
    assert_eq!(d["run"]["status"], "timed_out", "{d:#}");
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert_eq!(status(&d, "next"), "skipped");
    let job = s.job(node(&d, "wait")["job_id"].as_i64().unwrap()).await;
    assert!(
        ["cancelled", "timed_out"].contains(&job["status"].as_str().unwrap_or_default()),
        "{job}"
    );
}

fn lines_of(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

fn restart(old: &Server) -> Server {
    Server::start_with(ServerOpts {
        data_dir: Some(old.data_dir.clone()),
        args: vec!["--lease".into(), "1s".into()],
        ..Default::default()
    })
}

/// Jobs of a run's nodes, as the job list shows them (trigger `workflow`).
async fn workflow_jobs(s: &Server) -> Vec<Value> {
    let (_, jobs) = s.api("GET", "/api/v1/jobs?limit=1000", None).await;
    jobs.as_array()
        .into_iter()
        .flatten()
        .filter(|j| j["trigger"] == "workflow")
        .cloned()
        .collect()
}

#[tokio::test]
async fn kill_9_while_a_node_runs_resumes_the_run_exactly_once() {
    let marks = shared_tempdir();
    let (a, b) = (marks.path().join("a"), marks.path().join("b"));
    let mut s = Server::start_with(ServerOpts {
        args: vec!["--lease".into(), "1s".into()],
        ..Default::default()
    });
    apply_workflow(
        &s,
        &format!(
            r#"
name: crashy
nodes:
  - id: a
    type: bash
    retries: {{ max_attempts: 2, backoff: 100ms }}
    script: 'echo run >> {a}; sleep 3; cronium.output "{{\"done\": true}}"'
  - id: b
    type: bash
    after: [a]
    script: 'echo run >> {b}; cronium.output "{{\"seen\": $(cronium.input done)}}"'
"#,
            a = a.display(),
            b = b.display()
        ),
    )
    .await;
    let id = start_run(&s, "crashy", None).await;
    s.wait_for("node a to start", Duration::from_secs(20), || async {
        lines_of(&a) == 1
    })
    .await;
    s.crash();
    let s2 = restart(&s);
    let d = wait_run(&s2, id, Duration::from_secs(60)).await;
    assert_eq!(d["run"]["status"], "succeeded", "{d:#}");
    // a's lost attempt was run again (at-least-once for a script), b exactly once.
    assert_eq!(lines_of(&a), 2);
    assert_eq!(lines_of(&b), 1);
    assert_eq!(node(&d, "b")["output"]["seen"], true, "{d:#}");
    let jobs = workflow_jobs(&s2).await;
    assert_eq!(jobs.len(), 2, "one job per node: {jobs:#?}");
    let a_job = s2.job(node(&d, "a")["job_id"].as_i64().unwrap()).await;
    assert_eq!(a_job["attempt"], 2, "{a_job}");
}

#[tokio::test]
async fn kill_9_just_after_a_node_finished_resumes_the_run_exactly_once() {
    let marks = shared_tempdir();
    let (b, c) = (marks.path().join("b"), marks.path().join("c"));
    let mut s = Server::start_with(ServerOpts {
        args: vec!["--lease".into(), "1s".into()],
        ..Default::default()
    });
    apply_workflow(
        &s,
        &format!(
            r#"
name: crashy2
nodes:
  - id: a
    type: bash
    script: 'cronium.output "{{\"v\": 1}}"'
  - id: b
    type: bash
    after: [a]
    retries: {{ max_attempts: 3, backoff: 100ms }}
    script: 'echo run >> {b}; sleep 1'
  - id: c
    type: bash
    after: [b]
    script: 'echo run >> {c}'
"#,
            b = b.display(),
            c = c.display()
        ),
    )
    .await;
    let id = start_run(&s, "crashy2", None).await;
    // The instant a's job has ended, b's job exists already (same transaction).
    s.wait_for("node a to end", Duration::from_secs(20), || async {
        let d = run_detail(&s, id).await;
        status(&d, "a") == "succeeded"
    })
    .await;
    s.crash();
    let s2 = restart(&s);
    let d = wait_run(&s2, id, Duration::from_secs(60)).await;
    assert_eq!(d["run"]["status"], "succeeded", "{d:#}");
    assert!(lines_of(&b) >= 1);
    assert_eq!(lines_of(&c), 1, "c ran exactly once");
    let jobs = workflow_jobs(&s2).await;
    assert_eq!(jobs.len(), 3, "one job per node: {jobs:#?}");
}

#[tokio::test]
async fn a_directory_is_applied_in_one_transaction_with_dry_run_and_prune() {
    let s = Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    write(d, "a.yaml", "name: ev-a\ntype: bash\nscript: 'echo a'\n");
    write(d, "b.yml", "name: ev-b\ntype: bash\nscript: 'echo b'\n");
    write(d, "notes.txt", "not an event");
    let path = d.to_str().unwrap();
    let o = s.cli(&["event", "apply", "-f", path, "--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("event ev-a would be created"), "{out}");
    assert!(out.contains("event ev-b would be created"), "{out}");
    let (_, events) = s.api("GET", "/api/v1/events", None).await;
    assert_eq!(events, json!([]), "a dry run changes nothing");
    let o = s.cli(&["event", "apply", "-f", path]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("event ev-a created"), "{}", stdout(&o));

    // One bad file: nothing of the directory is applied, the file and field are named.
    write(d, "b.yml", "name: ev-b\ntype: bash\nscript: 'echo b2'\n");
    write(
        d,
        "c.json",
        r#"{"name": "ev-c", "type": "bash", "script": "echo c", "target": {"servers": ["ghost"]}}"#,
    );
    let o = s.cli(&["event", "apply", "-f", path]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("c.json: target.servers"), "{err}");
    let (_, b) = s.api("GET", "/api/v1/events/ev-b", None).await;
    assert_eq!(b["version"], 1, "all or nothing: {b}");
    write(
        d,
        "c.json",
        r#"{"name": "ev-c", "type": "bash", "script": "echo c"}"#,
    );
    write(d, "d.yaml", "name: ev-b\ntype: bash\nscript: 'echo dup'\n");
    let o = s.cli(&["event", "apply", "-f", path]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("d.yaml: name: `ev-b`"),
        "{}",
        stderr(&o)
    );
    std::fs::remove_file(d.join("d.yaml")).unwrap();

    // --prune: what is not in the directory goes; --dry-run shows it first.
    std::fs::remove_file(d.join("a.yaml")).unwrap();
    let o = s.cli(&["event", "apply", "-f", path, "--prune", "--dry-run"]);
    let out = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.contains("event ev-b would be updated"), "{out}");
    assert!(out.contains("event ev-c would be created"), "{out}");
    assert!(out.contains("event ev-a would be deleted"), "{out}");
    let (_, events) = s.api("GET", "/api/v1/events", None).await;
    assert_eq!(events.as_array().map(Vec::len), Some(2));
    let o = s.cli(&["event", "apply", "-f", path, "--prune", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(r["dry_run"], false);
    let (_, events) = s.api("GET", "/api/v1/events", None).await;
    let names: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(names, ["ev-b", "ev-c"]);

    // Workflows: one uses the other as a sub-workflow, listed after it by file name.
    let w = tempfile::tempdir().expect("tempdir");
    let wp = w.path().to_str().unwrap();
    write(
        w.path(),
        "a-main.yaml",
        "name: main\nnodes:\n  - id: first\n    event: ev-b\n  - id: sub\n    workflow: sub\n    after: [first]\n",
    );
    write(
        w.path(),
        "z-sub.yaml",
        "name: sub\nnodes:\n  - id: only\n    event: ev-c\n",
    );
    let o = s.cli(&["workflow", "apply", "-f", wp]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("workflow main created"), "{out}");
    assert!(out.contains("workflow sub created"), "{out}");
    let id = start_run(&s, "main", None).await;
    let d = wait_run(&s, id, Duration::from_secs(30)).await;
    assert_eq!(d["run"]["status"], "succeeded", "{d:#}");
    apply_workflow(&s, "name: stray\nnodes:\n  - id: x\n    event: ev-b\n").await;
    let o = s.cli(&["workflow", "apply", "-f", wp, "--prune", "--dry-run"]);
    let out = stdout(&o);
    assert!(out.contains("workflow stray would be deleted"), "{out}");
    assert!(out.contains("workflow main unchanged"), "{out}");
    let (st, _) = s.api("GET", "/api/v1/workflows/stray", None).await;
    assert_eq!(st, 200);
    let o = s.cli(&["workflow", "apply", "-f", wp, "--prune"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (st, _) = s.api("GET", "/api/v1/workflows/stray", None).await;
    assert_eq!(st, 404);
    // A cycle across files is refused naming the file.
    write(
        w.path(),
        "z-sub.yaml",
        "name: sub\nnodes:\n  - id: only\n    workflow: main\n",
    );
    let o = s.cli(&["workflow", "apply", "-f", wp]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("recursion"), "{err}");
    assert!(err.contains(".yaml: nodes["), "{err}");
}

#[tokio::test]
async fn node_overrides_of_timeout_retries_env_and_input_take_effect() {
    let s = Server::start();
    let marks = shared_tempdir();
    let tries = marks.path().join("tries");
    s.apply_yaml(&format!(
        "name: flaky\ntype: bash\nenv: {{ GREETING: hello, KEEP: kept }}\ninput: {{ who: event }}\nscript: |\n  echo try >> {t}\n  cronium.output \"{{\\\"greeting\\\": \\\"$GREETING\\\", \\\"keep\\\": \\\"$KEEP\\\", \\\"who\\\": \\\"$(cronium.input who)\\\"}}\"\n  [ \"$(wc -l < {t})\" -ge 2 ]\n",
        t = tries.display()
    ))
    .await;
    s.apply_yaml("name: slow\ntype: bash\nscript: 'sleep 30'\n")
        .await;
    apply_workflow(
        &s,
        r#"
name: overrides
nodes:
  - id: flaky
    event: flaky
    env: { GREETING: bonjour }
    input: { who: node }
    retries: { max_attempts: 2, backoff: 100ms }
  - id: slow
    event: slow
    timeout: 1s
  - id: after_timeout
    type: bash
    after: { slow: failure }
    script: 'echo the timeout counts as a failure'
"#,
    )
    .await;
    let started = Instant::now();
    let id = start_run(&s, "overrides", None).await;
    let d = wait_run(&s, id, Duration::from_secs(60)).await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the node timeout was not applied"
    );
    assert_eq!(d["run"]["status"], "succeeded", "{d:#}");
    // env merged over the event's (the node's value wins), the node's input, its retries.
    assert_eq!(
        node(&d, "flaky")["output"],
        json!({"greeting": "bonjour", "keep": "kept", "who": "node"})
    );
    let job = s.job(node(&d, "flaky")["job_id"].as_i64().unwrap()).await;
    assert_eq!(job["attempt"], 2, "{job}");
    assert_eq!(lines_of(&tries), 2);
    assert_eq!(status(&d, "slow"), "timed_out", "{d:#}");
    assert_eq!(status(&d, "after_timeout"), "succeeded");
    // The event itself is unchanged: run directly, it has its own env and one attempt.
    std::fs::remove_file(&tries).unwrap();
    let j = s.run_event("flaky", None).await;
    let j = s.wait_job(j, Duration::from_secs(30)).await;
    assert_eq!(j["status"], "failed", "{j}");
    assert_eq!(j["output"]["greeting"], "hello", "{j}");
    assert_eq!(j["output"]["who"], "event", "{j}");
}

#[tokio::test]
async fn a_node_fans_out_to_servers_and_a_partial_feeds_a_failure_edge() {
    let deploy_dir = format!(".cache/cronium-wf-{:08x}", rand::random::<u32>());
    let s = Server::start_with(ServerOpts {
        args: vec![
            "--static-runner".into(),
            static_runner_bin().display().to_string(),
            "--ssh-deploy-dir".into(),
            deploy_dir.clone(),
        ],
        ..Default::default()
    });
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(sshd::home_path(&self.0));
        }
    }
    let _cleanup = Cleanup(deploy_dir);
    let dir = tempfile::tempdir().unwrap();
    let key = write(dir.path(), "id_ed25519", &sshd::env().client_key);
    let hosts: Vec<sshd::Sshd> = (0..3).map(|_| sshd::Sshd::start()).collect();
    for (i, h) in hosts.iter().enumerate() {
        let name = format!("web{i}");
        s.add_server(
            &name,
            h.port,
            sshd::USER,
            &["--key-file", key.to_str().unwrap(), "--tag", "web"],
        );
    }
    // A local event; the workflow sends it to the servers.
    s.apply_yaml(
        "name: check\ntype: bash\nscript: |\n  echo \"on ${CRONIUM_SERVER:-local}\"\n  cronium.output where \"${CRONIUM_SERVER:-local}\"\n  [ \"$CRONIUM_SERVER\" != web1 ]\n",
    )
    .await;
    apply_workflow(
        &s,
        r#"
name: fleet
nodes:
  - id: probe
    event: check
    target: { tags: [web], mode: runner-ssh }
  - id: direct
    event: check
    target: { servers: [web0], mode: direct-ssh }
  - id: repair
    type: bash
    after: { probe: failure }
    script: 'echo repairing'
  - id: celebrate
    type: bash
    after: { probe: success }
    script: 'echo never'
"#,
    )
    .await;
    let o = s.cli(&["workflow", "run", "fleet", "--follow"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{}", stderr(&o));
    assert!(out.contains("[probe] [web2] on web2"), "{out}");
    assert!(out.contains("[repair] repairing"), "{out}");
    let (_, runs) = s.api("GET", "/api/v1/workflows/fleet/runs", None).await;
    let d = run_detail(&s, runs[0]["id"].as_i64().unwrap()).await;
    assert_eq!(d["run"]["status"], "succeeded", "{d:#}");
    assert_eq!(status(&d, "probe"), "failed");
    assert_eq!(status(&d, "repair"), "succeeded");
    assert_eq!(
        node(&d, "celebrate")["reason"],
        "skipped: probe failed, edge needs success"
    );
    let probe = s.job(node(&d, "probe")["job_id"].as_i64().unwrap()).await;
    assert_eq!(probe["status"], "partial", "{probe}");
    let mut servers: Vec<&str> = probe["executions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x["server"].as_str())
        .collect();
    servers.sort();
    assert_eq!(servers, ["web0", "web1", "web2"]);
    let direct = s.job(node(&d, "direct")["job_id"].as_i64().unwrap()).await;
    assert_eq!(direct["status"], "succeeded", "{direct}");
    assert_eq!(direct["executions"][0]["mode"], "direct-ssh", "{direct}");
    assert_eq!(direct["executions"][0]["server"], "web0");
    // Run by itself the event stays local.
    let j = s.run_event("check", None).await;
    let j = s.wait_job(j, Duration::from_secs(30)).await;
    assert_eq!(j["executions"][0]["server"], Value::Null, "{j}");
    assert_eq!(j["output"]["where"], "local");
}

#[tokio::test]
async fn a_node_runs_its_local_event_in_a_container() {
    let s = Server::start_with(ServerOpts {
        args: vec![
            "--static-runner".into(),
            static_runner_bin().display().to_string(),
        ],
        ..Default::default()
    });
    s.apply_yaml(
        "name: where\ntype: python\nscript: |\n  import cronium, os\n  cronium.output({'in_container': os.path.exists('/.dockerenv') or os.getuid() == 65534})\n",
    )
    .await;
    apply_workflow(
        &s,
        "name: boxed\nnodes:\n  - id: boxed\n    event: where\n    target: { container: { memory: 128m } }\n  - id: plain\n    event: where\n",
    )
    .await;
    let id = start_run(&s, "boxed", None).await;
    let d = wait_run(&s, id, Duration::from_secs(120)).await;
    assert_eq!(d["run"]["status"], "succeeded", "{d:#}");
    let boxed = s.job(node(&d, "boxed")["job_id"].as_i64().unwrap()).await;
    assert_eq!(boxed["executions"][0]["mode"], "container", "{boxed}");
    assert_eq!(boxed["output"]["in_container"], true, "{boxed}");
    let plain = s.job(node(&d, "plain")["job_id"].as_i64().unwrap()).await;
    assert_ne!(plain["executions"][0]["mode"], "container", "{plain}");
}

#[tokio::test]
async fn events_stored_without_a_job_policy_get_one_at_start() {
    let mut s = Server::start();
    s.apply_yaml("name: legacy\ntype: bash\nretries: { max_attempts: 2 }\nscript: 'echo old'\n")
        .await;
    apply_workflow(
        &s,
        "name: uses-legacy\nnodes:\n  - id: a\n    event: legacy\n",
    )
    .await;
    s.stop();
    // As a release before workflows wrote it: no policy columns.
    {
        use sqlx::Connection;
        let db = s.data_path("cronium.db");
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite:{}", db.display()))
            .await
            .expect("open the database");
        sqlx::query(
            "UPDATE events SET max_attempts = NULL, backoff_ms = NULL, max_backoff_ms = NULL, \
             timeout_ms = NULL, max_executions = NULL WHERE name = 'legacy'",
        )
        .execute(&mut c)
        .await
        .expect("clear the policy");
    }
    let s2 = Server::start_with(ServerOpts {
        data_dir: Some(s.data_dir.clone()),
        ..Default::default()
    });
    let id = start_run(&s2, "uses-legacy", None).await;
    let d = wait_run(&s2, id, Duration::from_secs(30)).await;
    assert_eq!(d["run"]["status"], "succeeded", "{d:#}");
    let job = s2.job(node(&d, "a")["job_id"].as_i64().unwrap()).await;
    assert_eq!(
        job["max_attempts"], 2,
        "the policy came from the stored spec: {job}"
    );
}

/// Eight `true` nodes, each after the previous one.
const CHAIN: &str = r#"
name: chain8
nodes:
  - { id: n0, type: bash, script: 'true' }
  - { id: n1, type: bash, script: 'true', after: [n0] }
  - { id: n2, type: bash, script: 'true', after: [n1] }
  - { id: n3, type: bash, script: 'true', after: [n2] }
  - { id: n4, type: bash, script: 'true', after: [n3] }
  - { id: n5, type: bash, script: 'true', after: [n4] }
  - { id: n6, type: bash, script: 'true', after: [n5] }
  - { id: n7, type: bash, script: 'true', after: [n6] }
"#;

/// The successor of a node is queued in the transaction that ends the node's job, and the agent
/// that ended it looks for work at once: the successor's job is claimed without waiting for the
/// agent's poll interval (1 s). Server clock: each successor's job `started_at` within 400 ms of
/// its predecessor's `finished_at` (milliseconds when woken; were the agent waiting for its
/// poll, seven gaps would all stay under 400 ms with a chance of 0.4^7, about 1 in 600).
#[tokio::test]
async fn a_nodes_successor_is_claimed_without_waiting_for_a_poll() {
    let s = Server::start();
    apply_workflow(&s, CHAIN).await;
    let id = start_run(&s, "chain8", None).await;
    let d = wait_run(&s, id, Duration::from_secs(60)).await;
    assert_eq!(d["run"]["status"], "succeeded", "{d:#}");
    let ms = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_default())
            .map(|t| t.timestamp_millis())
            .unwrap_or_else(|e| panic!("time {v}: {e}"))
    };
    let mut prev_end = None;
    for i in 0..8 {
        let job_id = node(&d, &format!("n{i}"))["job_id"]
            .as_i64()
            .unwrap_or_else(|| panic!("n{i} has no job: {d:#}"));
        let job = s.job(job_id).await;
        if let Some(end) = prev_end {
            let gap = ms(&job["started_at"]) - end;
            assert!(
                (0..400).contains(&gap),
                "n{i} started {gap} ms after n{} ended: {job}",
                i - 1
            );
        }
        prev_end = Some(ms(&job["finished_at"]));
    }
}

/// A node's end creates its successor's execution in the same write (a hand-off). When the
/// successor then cannot start its run (here: its payload cannot be stored, because the
/// payload directory was replaced by a file while the first node ran), that execution ends
/// `failed` with the reason, never left `pending`, and the run fails on that node.
#[tokio::test]
async fn a_handed_off_node_that_cannot_start_leaves_no_pending_execution() {
    let s = Server::start();
    apply_workflow(
        &s,
        r#"
name: cannot-start
nodes:
  - id: first
    type: bash
    script: "sleep 2"
  - id: second
    type: bash
    script: "echo never"
    after: [first]
"#,
    )
    .await;
    let id = start_run(&s, "cannot-start", None).await;
    // Once the first node's execution runs, its runner has read the payload: the directory
    // can go (the node being `running` is not enough: that is its job's claim).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = run_detail(&s, id).await;
        if let Some(job_id) = node(&d, "first")["job_id"].as_i64() {
            let job = s.job(job_id).await;
            if job["executions"][0]["status"] == "running" {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the first node never ran: {d:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let payloads = s.data_dir.join("payloads");
    std::fs::remove_dir_all(&payloads).expect("remove the payload directory");
    std::fs::write(&payloads, b"not a directory").expect("a file in its place");

    let d = wait_run(&s, id, Duration::from_secs(60)).await;
    assert_eq!(d["run"]["status"], "failed", "{d:#}");
    assert_eq!(status(&d, "first"), "succeeded", "{d:#}");
    assert_eq!(status(&d, "second"), "failed", "{d:#}");
    let job = s
        .job(node(&d, "second")["job_id"].as_i64().expect("second's job"))
        .await;
    let xs = job["executions"].as_array().expect("executions");
    assert_eq!(
        xs.len(),
        1,
        "one execution, the one the hand-off made: {job:#}"
    );
    assert_eq!(xs[0]["status"], "failed", "{job:#}");
    let error = xs[0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("cannot store the payload"), "{job:#}");
    assert!(!s
        .log_text(job["id"].as_i64().unwrap_or_default())
        .await
        .contains("never"));
}
