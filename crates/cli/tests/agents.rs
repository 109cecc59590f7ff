//! Remote agents against a real `cronium serve --no-agent` and real `cronium agent` processes
//! over HTTP: jobs and workflow nodes run on the agent with every log line stored once and in
//! order; kill -9 of an agent mid-job and the job runs again on another agent with one
//! outcome; agent tokens and API tokens each refused where the other belongs; a log batch sent
//! again is stored once; the lease is fenced at the HTTP edge; a server unreachable for a
//! while (a TCP proxy the test stops) leaves a running job running, its writes buffered on disk
//! and delivered in order once it is back, bounded, and discarded when the lease ran out.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

/// A `cronium agent` process; killed (SIGKILL) when dropped.
struct AgentProc {
    child: Child,
    _dir: tempfile::TempDir,
}

impl AgentProc {
    fn start(s: &Server, token: &str, name: &str, extra: &[&str]) -> AgentProc {
        Self::start_at(&s.url, token, name, extra)
    }

    /// As [`start`](Self::start), with extra environment.
    fn start_env(
        s: &Server,
        token: &str,
        name: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> AgentProc {
        Self::start_in(
            tempfile::tempdir().expect("tempdir"),
            &s.url,
            token,
            name,
            extra,
            env,
        )
    }

    /// An agent talking to the server at `url` (a proxy in front of it).
    fn start_at(url: &str, token: &str, name: &str, extra: &[&str]) -> AgentProc {
        Self::start_in(
            tempfile::tempdir().expect("tempdir"),
            url,
            token,
            name,
            extra,
            &[],
        )
    }

    /// Kills this agent (SIGKILL) and starts another on the same data directory.
    fn restart(mut self, url: &str, token: &str, name: &str, extra: &[&str]) -> AgentProc {
        self.kill9();
        let dir = tempfile::tempdir().expect("tempdir");
        let old = std::mem::replace(&mut self._dir, dir);
        drop(self);
        Self::start_in(old, url, token, name, extra, &[])
    }

    fn start_in(
        dir: tempfile::TempDir,
        url: &str,
        token: &str,
        name: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> AgentProc {
        let child = Command::new(cronium_bin())
            .envs(env.iter().copied())
            .args(["agent", "--url", url, "--token", token, "--name", name])
            .arg("--runner")
            .arg(runner_bin())
            .arg("--data-dir")
            .arg(dir.path().join("agent"))
            .args(extra)
            .env(
                "CRONIUM_LOG",
                std::env::var("CRONIUM_TEST_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env_remove("CRONIUM_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn cronium agent");
        AgentProc { child, _dir: dir }
    }

    /// Files in the agent's spool directory.
    fn spool_files(&self) -> Vec<String> {
        std::fs::read_dir(self._dir.path().join("agent").join("spool"))
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn agent_token(s: &Server, name: &str) -> String {
    let o = s.cli(&["agent", "token", "create", name]);
    assert!(o.status.success(), "{}", stderr(&o));
    let token = stdout(&o).trim().to_string();
    assert!(token.starts_with("crn_"), "{token}");
    token
}

async fn wait_agent_connected(s: &Server, name: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, list) = s.api("GET", "/api/v1/agents", None).await;
        let a = list
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["name"] == name && a["state"] == "connected")
            .cloned();
        if let Some(a) = a {
            return a;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "agent {name} not connected: {list}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn log_lines(s: &Server, id: i64) -> Vec<(i64, String)> {
    let (status, page) = s
        .api("GET", &format!("/api/v1/jobs/{id}/logs?limit=10000"), None)
        .await;
    assert_eq!(status, 200, "{page}");
    page["lines"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            (
                l["seq"].as_i64().unwrap_or_default(),
                l["line"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn no_agent_server() -> Server {
    Server::start_with(ServerOpts {
        args: vec!["--no-agent".into()],
        ..Default::default()
    })
}

#[tokio::test]
async fn a_remote_agent_runs_jobs_and_workflow_nodes_with_every_line_once_in_order() {
    let s = no_agent_server();
    let token = agent_token(&s, "edge");
    let _agent = AgentProc::start(&s, &token, "edge-1", &["--tag", "eu", "--concurrency", "2"]);
    let a = wait_agent_connected(&s, "edge-1").await;
    assert_eq!(a["embedded"], false, "{a}");
    assert_eq!(a["tags"], json!(["eu"]), "{a}");
    assert!(
        a["capabilities"]
            .as_array()
            .is_some_and(|c| c.contains(&json!("local"))),
        "{a}"
    );

    s.apply_yaml(
        "name: count\ntype: bash\nscript: |\n  for i in $(seq 1 300); do echo line-$i; done\n  cronium.output n 300\n",
    )
    .await;
    let id = s.run_event("count", None).await;
    let j = s.wait_job(id, Duration::from_secs(60)).await;
    assert_eq!(j["status"], "succeeded", "{j}");
    let lines = log_lines(&s, id).await;
    let seqs: Vec<i64> = lines.iter().map(|l| l.0).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seqs not increasing: {seqs:?}"
    );
    let printed: Vec<&str> = lines
        .iter()
        .map(|l| l.1.as_str())
        .filter(|l| l.starts_with("line-"))
        .collect();
    let expected: Vec<String> = (1..=300).map(|i| format!("line-{i}")).collect();
    assert_eq!(printed, expected, "every line once, in order");

    // A workflow's nodes run on the agent too (the server has none).
    let wf: Value = serde_saphyr::from_str(
        "name: pipeline\nnodes:\n  - id: a\n    type: bash\n    script: |\n      cronium.output '{\"k\": 1}'\n  - id: b\n    type: bash\n    after: [a]\n    script: echo second\n",
    )
    .expect("yaml");
    let (status, body) = s.api("PUT", "/api/v1/workflows/pipeline", Some(wf)).await;
    assert_eq!(status, 200, "{body}");
    let (status, run) = s.api("POST", "/api/v1/workflows/pipeline/runs", None).await;
    assert!(status == 201 || status == 200, "{status} {run}");
    let run_id = run["id"].as_i64().expect("run id");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let last = loop {
        let (_, d) = s
            .api("GET", &format!("/api/v1/workflow-runs/{run_id}"), None)
            .await;
        let st = &d["run"]["status"];
        if st != "running" && st != "queued" {
            break d;
        }
        assert!(std::time::Instant::now() < deadline, "run not ended: {d}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(last["run"]["status"], "succeeded", "{last}");
    let nodes: Vec<&Value> = last["nodes"].as_array().into_iter().flatten().collect();
    assert!(
        nodes.len() == 2 && nodes.iter().all(|n| n["status"] == "succeeded"),
        "{last}"
    );

    let o = s.cli(&["agent", "list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("edge-1") && out.contains("remote") && out.contains("connected"),
        "{out}"
    );
}

#[tokio::test]
async fn a_job_of_a_killed_agent_runs_again_on_another_agent_with_one_outcome() {
    let s = no_agent_server();
    let token = agent_token(&s, "edge");
    let mut first = AgentProc::start(&s, &token, "first", &["--lease", "2s"]);
    wait_agent_connected(&s, "first").await;
    s.apply_yaml(
        "name: slow\ntype: bash\nretries: { max_attempts: 3, backoff: 100ms }\nscript: |\n  echo \"start-$CRONIUM_ATTEMPT\"\n  if [ \"$CRONIUM_ATTEMPT\" = 1 ]; then sleep 60; fi\n  echo finished\n",
    )
    .await;
    let id = s.run_event("slow", None).await;
    s.wait_for(
        "the first attempt prints",
        Duration::from_secs(30),
        || async { s.log_text(id).await.contains("start-1") },
    )
    .await;
    first.kill9();
    let killed_at = std::time::Instant::now();
    let _second = AgentProc::start(&s, &token, "second", &["--lease", "2s"]);
    let j = s.wait_job(id, Duration::from_secs(60)).await;
    assert_eq!(j["status"], "succeeded", "{j}");
    assert_eq!(j["attempt"], 2, "{j}");
    assert!(
        killed_at.elapsed() < Duration::from_secs(15),
        "recovered in {:?}",
        killed_at.elapsed()
    );
    let text = s.log_text(id).await;
    assert_eq!(text.matches("finished").count(), 1, "{text}");
    assert!(
        text.contains("start-1") && text.contains("start-2"),
        "{text}"
    );
    let succeeded = j["executions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["status"] == "succeeded")
        .count();
    assert_eq!(succeeded, 1, "exactly one outcome: {j}");
}

#[tokio::test]
async fn agent_tokens_open_the_agent_api_only_and_api_tokens_never_open_it() {
    let s = no_agent_server();
    let token = agent_token(&s, "edge");
    let claim = json!({"worker": "w", "lease_ms": 1000, "max": 1, "wait_ms": 0});
    let (status, body) = s
        .api_with_token(
            "POST",
            "/api/v1/agent/claim",
            Some(claim.clone()),
            Some(&token),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["jobs"], json!([]));

    // The admin's API token is refused on agent routes...
    let (status, body) = s
        .api("POST", "/api/v1/agent/claim", Some(claim.clone()))
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    // ...and the agent token everywhere else.
    for path in ["/api/v1/jobs", "/api/v1/agents", "/api/v1/agent-tokens"] {
        let (status, body) = s.api_with_token("GET", path, None, Some(&token)).await;
        assert_eq!(status, 401, "{path}: {body}");
    }
    // A forged one, none at all.
    let (status, _) = s
        .api_with_token(
            "POST",
            "/api/v1/agent/claim",
            Some(claim.clone()),
            Some("crn_0000000000000000000000000000000000000000000000000000000000000000"),
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = s
        .api_with_token("POST", "/api/v1/agent/claim", Some(claim.clone()), None)
        .await;
    assert_eq!(status, 401);

    // Revoked: refused from the next call.
    let o = s.cli(&["agent", "token", "revoke", "edge"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (status, _) = s
        .api_with_token("POST", "/api/v1/agent/claim", Some(claim), Some(&token))
        .await;
    assert_eq!(status, 401);
    let (_, list) = s.api("GET", "/api/v1/agent-tokens", None).await;
    assert!(list[0]["revoked_at"].is_string(), "{list}");
    assert!(
        list[0].get("token").is_none(),
        "never the value again: {list}"
    );
    // Names are unique; a bad one is refused naming the field.
    let (status, body) = s
        .api(
            "POST",
            "/api/v1/agent-tokens",
            Some(json!({"name": "edge"})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = s
        .api("POST", "/api/v1/agent-tokens", Some(json!({"name": " "})))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "name", "{body}");
}

#[tokio::test]
async fn a_log_batch_sent_again_is_stored_once_and_every_call_is_fenced_by_the_lease() {
    let s = no_agent_server();
    let token = agent_token(&s, "edge");
    s.apply_yaml("name: x\ntype: bash\nscript: echo hi\n").await;
    let id = s.run_event("x", None).await;
    let call = |path: &'static str, body: Value| {
        let s = &s;
        let token = token.clone();
        async move {
            s.api_with_token(
                "POST",
                &format!("/api/v1/agent{path}"),
                Some(body),
                Some(&token),
            )
            .await
        }
    };
    let (status, claimed) = call(
        "/claim",
        json!({"worker": "w1", "lease_ms": 60000, "max": 4, "wait_ms": 5000}),
    )
    .await;
    assert_eq!(status, 200, "{claimed}");
    assert_eq!(claimed["jobs"][0]["id"], id, "{claimed}");
    let attempt = claimed["jobs"][0]["attempt"].clone();
    let lease = json!({"job_id": id, "worker": "w1", "attempt": attempt});
    let (status, exec) = call(
        "/execution",
        json!({"lease": lease, "server": null, "status": "running"}),
    )
    .await;
    assert_eq!(status, 200, "{exec}");
    let exec_id = exec["execution"]["id"].clone();
    let batch = json!({"lease": lease, "lines": [
        {"execution_id": exec_id, "seq": 1, "stream": "stdout", "line": "one", "ts": 1},
        {"execution_id": exec_id, "seq": 2, "stream": "stdout", "line": "two", "ts": 2},
    ]});
    let (status, body) = call("/logs", batch.clone()).await;
    assert_eq!(status, 200, "{body}");
    // The same batch again (its answer was lost): refused on its seqs, nothing stored twice.
    let (status, body) = call("/logs", batch).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict", "{body}");
    assert_eq!(body["error"]["field"], "seq", "{body}");
    assert_eq!(
        log_lines(&s, id).await,
        [(1, "one".to_string()), (2, "two".to_string())]
    );

    // Another worker's lease is lost, at every fenced call.
    let stale = json!({"job_id": id, "worker": "w2", "attempt": attempt});
    let (status, body) = call(
        "/logs",
        json!({"lease": stale, "lines": [{"execution_id": null, "seq": 3, "stream": "stdout", "line": "x", "ts": 3}]}),
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("lease_lost")),
        "{body}"
    );
    let (status, body) = call("/heartbeat", json!({"lease": stale, "lease_ms": 1000})).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("lease_lost")),
        "{body}"
    );
    // A malformed call names the field.
    let (status, body) = call("/heartbeat", json!({"lease": lease})).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid", "{body}");

    let end = json!({
        "lease": lease, "node_run_id": null, "handoff": null,
        "executions": [[exec_id, {"status": "succeeded", "exit_code": 0}]],
        "outcome": {"status": "succeeded", "exit_code": 0, "output": {"k": 1}, "error": null},
    });
    let (status, body) = call("/finish-attempt", end.clone()).await;
    assert_eq!(status, 200, "{body}");
    // Sent again: the attempt has ended, the first outcome stands.
    let (status, body) = call("/finish-attempt", end).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("lease_lost")),
        "{body}"
    );
    let j = s.job(id).await;
    assert_eq!(j["status"], "succeeded", "{j}");
    assert_eq!(j["output"], json!({"k": 1}), "{j}");
}

#[tokio::test]
async fn helpers_in_api_mode_work_on_a_remote_agent() {
    let s = no_agent_server();
    let token = agent_token(&s, "edge");
    let _agent = AgentProc::start(&s, &token, "edge-api", &[]);
    wait_agent_connected(&s, "edge-api").await;
    let (status, body) = s
        .api(
            "PUT",
            "/api/v1/variables/seed",
            Some(json!({"value": "from-server"})),
        )
        .await;
    assert!(status == 200 || status == 201, "{body}");
    s.apply_yaml(
        "name: api-helpers\ntype: bash\nhelpers: api\nscript: |\n  v=$(cronium.getVariable seed)\n  echo \"read $v\"\n  cronium.setVariable written-remotely 42\n  cronium.output seen \"$v\"\n  cronium.setCondition true\n",
    )
    .await;
    let id = s.run_event("api-helpers", None).await;
    let j = s.wait_job(id, Duration::from_secs(60)).await;
    assert_eq!(j["status"], "succeeded", "{j}");
    let x = &j["executions"][0];
    assert_eq!(
        x["helpers"], "api",
        "relayed through the agent API, not bundled: {j}"
    );
    assert_eq!(x["output"], json!({"seen": "from-server"}), "{j}");
    assert_eq!(x["condition"], true, "{j}");
    assert!(s.log_text(id).await.contains("read from-server"));
    let (_, v) = s
        .api("GET", "/api/v1/variables/written-remotely", None)
        .await;
    assert_eq!(v["value"], 42, "{v}");
}

#[tokio::test]
async fn sigterm_drains_the_agent_it_finishes_what_runs_claims_nothing_more_and_exits_0() {
    let s = no_agent_server();
    let token = agent_token(&s, "edge");
    let mut agent = AgentProc::start(&s, &token, "drainer", &[]);
    wait_agent_connected(&s, "drainer").await;
    let tmp = shared_tempdir();
    let gate = tmp.path().join("go");
    s.apply_yaml(&format!(
        "name: held\ntype: bash\nscript: |\n  echo started\n  while [ ! -e {} ]; do sleep 0.05; done\n  echo released\n",
        gate.display()
    ))
    .await;
    let id = s.run_event("held", None).await;
    s.wait_for("the job starts", Duration::from_secs(30), || async {
        s.log_text(id).await.contains("started")
    })
    .await;
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(agent.child.id() as i32, libc::SIGTERM);
    }
    // Draining: a job enqueued now is not claimed by it.
    let later = s.run_event("held", None).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        agent.child.try_wait().expect("wait").is_none(),
        "it waits for its job"
    );
    std::fs::write(&gate, b"").expect("release");
    let j = s.wait_job(id, Duration::from_secs(30)).await;
    assert_eq!(j["status"], "succeeded", "{j}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = agent.child.try_wait().expect("wait") {
            break st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the agent did not exit"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert_eq!(s.job(later).await["status"], "queued");
    let (_, list) = s.api("GET", "/api/v1/agents", None).await;
    assert_eq!(list[0]["state"], "stopped", "{list}");
}

#[tokio::test]
async fn cronium_agent_with_an_api_token_exits_non_zero_saying_the_token_was_refused() {
    let s = no_agent_server();
    let o = Command::new(cronium_bin())
        .args([
            "agent", "--url", &s.url, "--token", &s.token, "--name", "wrong",
        ])
        .arg("--runner")
        .arg(runner_bin())
        .arg("--data-dir")
        .arg(tempfile::tempdir().expect("tempdir").path().join("a"))
        .stdin(Stdio::null())
        .output()
        .expect("run cronium agent");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("refused the agent token"),
        "{}",
        stderr(&o)
    );
    let (_, list) = s.api("GET", "/api/v1/agents", None).await;
    assert_eq!(list, json!([]), "nothing registered");
}

#[tokio::test]
async fn a_bad_buffer_max_is_refused_naming_the_flag_and_nothing_is_registered() {
    let s = no_agent_server();
    let token = agent_token(&s, "edge");
    for (value, says) in [
        ("lots", "`lots` is not a size"),
        ("1KiB", "below the smallest buffer, 4KiB"),
        ("-5m", "--buffer-max"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = Command::new(cronium_bin())
            .args(["agent", "--url", &s.url, "--token", &token, "--name", "bad"])
            .arg("--runner")
            .arg(runner_bin())
            .arg("--data-dir")
            .arg(dir.path().join("a"))
            .arg(format!("--buffer-max={value}"))
            .stdin(Stdio::null())
            .output()
            .expect("run cronium agent");
        let err = stderr(&o);
        assert_ne!(o.status.code(), Some(0), "{value}: {err}");
        assert!(
            err.contains("--buffer-max") && err.contains(says),
            "{value}: {err}"
        );
        assert!(!dir.path().join("a").exists(), "nothing created: {value}");
    }
    let (_, list) = s.api("GET", "/api/v1/agents", None).await;
    assert_eq!(list, json!([]), "nothing registered");
}

#[tokio::test]
async fn a_remote_agent_runs_jobs_of_a_server_on_postgresql() {
    let s = Server::start_with(ServerOpts {
        args: vec!["--no-agent".into()],
        database_url: Some(fresh_pg_database().await),
        ..Default::default()
    });
    let token = agent_token(&s, "edge");
    let _agent = AgentProc::start(&s, &token, "edge-pg", &[]);
    wait_agent_connected(&s, "edge-pg").await;
    s.apply_yaml("name: pg\ntype: bash\nscript: |\n  for i in $(seq 1 50); do echo pg-$i; done\n")
        .await;
    let id = s.run_event("pg", None).await;
    let j = s.wait_job(id, Duration::from_secs(60)).await;
    assert_eq!(j["status"], "succeeded", "{j}");
    let printed: Vec<String> = log_lines(&s, id)
        .await
        .into_iter()
        .map(|l| l.1)
        .filter(|l| l.starts_with("pg-"))
        .collect();
    let expected: Vec<String> = (1..=50).map(|i| format!("pg-{i}")).collect();
    assert_eq!(printed, expected);
}

/// A TCP proxy in front of the server that the test can take down (its port closed, every
/// connection through it cut) and bring back on the same port: the server unreachable for an
/// agent, without Docker networks.
struct Proxy {
    addr: std::net::SocketAddr,
    target: std::net::SocketAddr,
    accept: Option<tokio::task::JoinHandle<()>>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(s: &Server) -> Proxy {
        let target: std::net::SocketAddr = s
            .url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("server address");
        let mut p = Proxy {
            addr: "127.0.0.1:0".parse().expect("addr"),
            target,
            accept: None,
            conns: Default::default(),
        };
        p.up().await;
        p
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn up(&mut self) {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_reuseaddr(true).expect("reuseaddr");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match socket.bind(self.addr) {
                Ok(()) => break,
                Err(e) => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "rebinding {}: {e}",
                        self.addr
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        let listener = socket.listen(128).expect("listen");
        self.addr = listener.local_addr().expect("addr");
        let target = self.target;
        let conns = self.conns.clone();
        self.accept = Some(tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                if let Ok(mut c) = conns.lock() {
                    c.retain(|h| !h.is_finished());
                    c.push(conn);
                }
            }
        }));
    }

    /// Closes the port (connections are refused) and cuts every connection through it.
    async fn down(&mut self) {
        if let Some(a) = self.accept.take() {
            a.abort();
            let _ = a.await;
        }
        let conns: Vec<_> = self
            .conns
            .lock()
            .map(|mut c| c.drain(..).collect())
            .unwrap_or_default();
        for c in conns {
            c.abort();
            let _ = c.await;
        }
    }
}

/// The numbered lines `prefix-N` of a log, in log order.
fn numbered(lines: &[(i64, String)], prefix: &str) -> Vec<i64> {
    lines
        .iter()
        .filter_map(|(_, l)| l.strip_prefix(prefix)?.parse().ok())
        .collect()
}

#[tokio::test]
async fn a_job_keeps_running_through_a_server_outage_and_every_line_arrives_once_in_order() {
    let s = no_agent_server();
    let token = agent_token(&s, "edge");
    let mut proxy = Proxy::start(&s).await;
    let agent = AgentProc::start_at(&proxy.url(), &token, "far", &["--lease", "60s"]);
    wait_agent_connected(&s, "far").await;
    s.apply_yaml(
        "name: ticks\ntype: bash\nretries: { max_attempts: 3, backoff: 100ms }\nscript: |\n  for i in $(seq 1 80); do echo n-$i; sleep 0.1; done\n",
    )
    .await;
    let id = s.run_event("ticks", None).await;
    s.wait_for("the job prints", Duration::from_secs(30), || async {
        s.log_text(id).await.contains("n-10\n")
    })
    .await;
    proxy.down().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = numbered(&log_lines(&s, id).await, "n-");
    assert!(
        agent.spool_files().iter().any(|f| f.ends_with(".spool")),
        "the agent buffers on disk while the server is unreachable: {:?}",
        agent.spool_files()
    );
    proxy.up().await;
    let j = s.wait_job(id, Duration::from_secs(60)).await;
    assert_eq!(j["status"], "succeeded", "{j}");
    assert_eq!(j["attempt"], 1, "the attempt survived the outage: {j}");
    let got = numbered(&log_lines(&s, id).await, "n-");
    assert!(during.len() < 60, "the outage held lines back: {during:?}");
    assert_eq!(
        got,
        (1..=80).collect::<Vec<i64>>(),
        "every line once, in order"
    );
    s.wait_for("the spool is emptied", Duration::from_secs(10), || async {
        agent.spool_files().is_empty()
    })
    .await;
}

#[tokio::test]
async fn a_job_that_ends_during_a_long_outage_within_its_lease_loses_nothing() {
    // Longer than the retries of an unbuffered agent (about 20 s for a log batch, 3 s for the
    // attempt's end, after which lines are counted as lost and the end is given up), shorter
    // than the lease.
    let s = no_agent_server();
    let token = agent_token(&s, "edge");
    let mut proxy = Proxy::start(&s).await;
    let agent = AgentProc::start_at(&proxy.url(), &token, "ends", &["--lease", "60s"]);
    wait_agent_connected(&s, "ends").await;
    s.apply_yaml(
        "name: short\ntype: bash\nretries: { max_attempts: 3, backoff: 100ms }\nscript: |\n  for i in $(seq 1 20); do echo n-$i; sleep 0.1; done\n  cronium.output done true\n",
    )
    .await;
    let id = s.run_event("short", None).await;
    s.wait_for("the job prints", Duration::from_secs(30), || async {
        s.log_text(id).await.contains("n-5\n")
    })
    .await;
    proxy.down().await;
    tokio::time::sleep(Duration::from_secs(25)).await;
    proxy.up().await;
    let j = s.wait_job(id, Duration::from_secs(20)).await;
    assert_eq!(j["status"], "succeeded", "{j}");
    assert_eq!(j["attempt"], 1, "{j}");
    assert_eq!(
        numbered(&log_lines(&s, id).await, "n-"),
        (1..=20).collect::<Vec<i64>>()
    );
    s.wait_for("the spool is emptied", Duration::from_secs(10), || async {
        agent.spool_files().is_empty()
    })
    .await;
}

#[tokio::test]
async fn a_full_buffer_drops_lines_counted_and_says_how_many_in_their_place() {
    let s = no_agent_server();
    let token = agent_token(&s, "edge");
    let mut proxy = Proxy::start(&s).await;
    let _agent = AgentProc::start_at(
        &proxy.url(),
        &token,
        "small",
        &["--lease", "60s", "--buffer-max", "4KiB"],
    );
    wait_agent_connected(&s, "small").await;
    s.apply_yaml(
        "name: flood\ntype: bash\nscript: |\n  for i in $(seq 1 80); do echo n-$i; sleep 0.1; done\n",
    )
    .await;
    let id = s.run_event("flood", None).await;
    s.wait_for("the job prints", Duration::from_secs(30), || async {
        s.log_text(id).await.contains("n-5\n")
    })
    .await;
    proxy.down().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    proxy.up().await;
    let j = s.wait_job(id, Duration::from_secs(60)).await;
    assert_eq!(j["status"], "succeeded", "{j}");
    let lines = log_lines(&s, id).await;
    let seqs: Vec<i64> = lines.iter().map(|l| l.0).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let got = numbered(&lines, "n-");
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order: {got:?}");
    let dropped: u64 = lines
        .iter()
        .filter_map(|(_, l)| {
            l.strip_prefix("[cronium] ")?
                .strip_suffix(" lines dropped: the agent's buffer was full")?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert!(dropped > 0, "the buffer overflowed: {lines:?}");
    assert_eq!(
        got.len() as u64 + dropped,
        80,
        "every line is there or counted as dropped: {got:?}"
    );
    assert_eq!(got.last(), Some(&80), "{got:?}");
}

#[tokio::test]
async fn an_outage_longer_than_the_lease_runs_the_job_elsewhere_and_discards_the_buffer() {
    let s = no_agent_server();
    let token = agent_token(&s, "edge");
    let mut proxy = Proxy::start(&s).await;
    let first = AgentProc::start_at(&proxy.url(), &token, "cut-off", &["--lease", "3s"]);
    wait_agent_connected(&s, "cut-off").await;
    s.apply_yaml(
        "name: long\ntype: bash\nretries: { max_attempts: 3, backoff: 100ms }\nscript: |\n  if [ \"$CRONIUM_ATTEMPT\" = 1 ]; then n=300; else n=5; fi\n  for i in $(seq 1 $n); do echo a$CRONIUM_ATTEMPT-$i; sleep 0.1; done\n",
    )
    .await;
    let id = s.run_event("long", None).await;
    s.wait_for(
        "the first attempt prints",
        Duration::from_secs(30),
        || async { s.log_text(id).await.contains("a1-5\n") },
    )
    .await;
    proxy.down().await;
    let _second = AgentProc::start(&s, &token, "other", &["--lease", "3s"]);
    let j = s.wait_job(id, Duration::from_secs(60)).await;
    assert_eq!(j["status"], "succeeded", "{j}");
    assert_eq!(j["attempt"], 2, "{j}");
    let before = log_lines(&s, id).await;
    assert!(
        first.spool_files().iter().any(|f| f.ends_with(".spool")),
        "the first agent buffered its attempt: {:?}",
        first.spool_files()
    );
    proxy.up().await;
    s.wait_for(
        "the first agent discards its buffer",
        Duration::from_secs(30),
        || async { first.spool_files().is_empty() },
    )
    .await;
    // Time for anything wrongly delivered to show.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = log_lines(&s, id).await;
    assert_eq!(after, before, "nothing of attempt 1 after its end");
    let first_of_2 = after
        .iter()
        .position(|(_, l)| l.starts_with("a2-"))
        .expect("attempt 2 lines");
    assert!(
        after[first_of_2..]
            .iter()
            .all(|(_, l)| !l.starts_with("a1-")),
        "{after:?}"
    );
    assert_eq!(numbered(&after, "a2-"), (1..=5).collect::<Vec<i64>>());
    let a1 = numbered(&after, "a1-");
    assert_eq!(a1, (1..=a1.len() as i64).collect::<Vec<i64>>(), "{a1:?}");
}

#[tokio::test]
async fn a_restarted_agent_delivers_what_it_buffered_with_the_lease_it_held() {
    let s = no_agent_server();
    let token = agent_token(&s, "edge");
    let mut proxy = Proxy::start(&s).await;
    let agent = AgentProc::start_at(&proxy.url(), &token, "again", &["--lease", "60s"]);
    wait_agent_connected(&s, "again").await;
    s.apply_yaml(
        "name: cut\ntype: bash\nretries: { max_attempts: 3, backoff: 100ms }\nscript: |\n  for i in $(seq 1 600); do echo n-$i; sleep 0.1; done\n",
    )
    .await;
    let id = s.run_event("cut", None).await;
    s.wait_for("the job prints", Duration::from_secs(30), || async {
        s.log_text(id).await.contains("n-5\n")
    })
    .await;
    proxy.down().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stored = numbered(&log_lines(&s, id).await, "n-");
    assert!(!agent.spool_files().is_empty(), "buffered");
    // The agent dies with a buffer; the server is back; the agent starts again.
    proxy.up().await;
    let agent = agent.restart(&proxy.url(), &token, "again", &["--lease", "60s"]);
    s.wait_for(
        "the restarted agent delivers its buffer",
        Duration::from_secs(20),
        || async { agent.spool_files().is_empty() },
    )
    .await;
    let got = numbered(&log_lines(&s, id).await, "n-");
    assert!(
        got.len() >= stored.len() + 10,
        "the buffered lines arrived: {} stored before, {} now",
        stored.len(),
        got.len()
    );
    assert_eq!(
        got,
        (1..=got.len() as i64).collect::<Vec<i64>>(),
        "once, in order"
    );
    let j = s.job(id).await;
    assert_eq!(
        j["attempt"], 1,
        "still the first attempt (its lease holds): {j}"
    );
}

const PASSWORD: &str = "correct-horse-battery-staple";

fn routing_server(args: &[&str]) -> Server {
    Server::start_with(ServerOpts {
        args: args.iter().map(|a| a.to_string()).collect(),
        env: vec![("CRONIUM_ADMIN_PASSWORD".into(), PASSWORD.into())],
        ..Default::default()
    })
}

/// The job page's HTML as the logged-in admin sees it.
async fn job_page(s: &Server, id: i64) -> String {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let cookies = |r: &reqwest::Response| -> String {
        r.headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|c| c.to_str().ok()?.split(';').next().map(str::to_string))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let form = http
        .get(format!("{}/login", s.url))
        .send()
        .await
        .expect("login form");
    let jar = cookies(&form);
    let html = form.text().await.expect("form");
    let marker = "name=\"csrf\" value=\"";
    let at = html.find(marker).expect("csrf field") + marker.len();
    let csrf = &html[at..at + html[at..].find('"').expect("csrf end")];
    let login = http
        .post(format!("{}/login", s.url))
        .header("cookie", &jar)
        .form(&[
            ("csrf", csrf),
            ("username", "admin"),
            ("password", PASSWORD),
            ("next", "/"),
        ])
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), 303, "login");
    let page = http
        .get(format!("{}/jobs/{id}", s.url))
        .header("cookie", cookies(&login))
        .send()
        .await
        .expect("job page");
    assert_eq!(page.status(), 200);
    page.text().await.expect("page")
}

/// The worker (lease owner) of each connected agent, by name.
async fn workers(s: &Server) -> std::collections::HashMap<String, String> {
    let (_, list) = s.api("GET", "/api/v1/agents", None).await;
    list.as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            (
                a["name"].as_str().unwrap_or_default().to_string(),
                a["worker"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Waits until the queued job says why it waits (the agents' registrations are seen).
async fn wait_waiting_for(s: &Server, id: i64) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let j = s.job(id).await;
        assert_eq!(j["status"], "queued", "{j}");
        if j["waiting_for"].is_string() {
            return j;
        }
        assert!(std::time::Instant::now() < deadline, "no waiting_for: {j}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn jobs_with_agent_tags_run_only_on_agents_with_those_tags_and_wait_visibly_otherwise() {
    let s = routing_server(&["--no-agent"]);
    let token = agent_token(&s, "edge");
    let _a = AgentProc::start(
        &s,
        &token,
        "agent-a",
        &["--tag", "eu", "--concurrency", "4"],
    );
    let _b = AgentProc::start(&s, &token, "agent-b", &["--concurrency", "4"]);
    wait_agent_connected(&s, "agent-a").await;
    wait_agent_connected(&s, "agent-b").await;
    let w = workers(&s).await;

    // Bad agent_tags: refused at apply naming the field, nothing stored.
    for (tags, field) in [
        (json!("eu"), "agent_tags"),
        (json!(["eu", "Bad"]), "agent_tags[1]"),
        (json!([1]), "agent_tags[0]"),
    ] {
        let (status, body) = s
            .api(
                "PUT",
                "/api/v1/events/bad",
                Some(json!({"name": "bad", "type": "bash", "script": "true", "agent_tags": tags})),
            )
            .await;
        assert_eq!(status, 422, "{tags}: {body}");
        assert_eq!(body["error"]["field"], field, "{tags}: {body}");
    }
    let (status, _) = s.api("GET", "/api/v1/events/bad", None).await;
    assert_eq!(status, 404, "nothing stored");

    s.apply_yaml("name: eu-only\ntype: bash\nagent_tags: [eu]\nscript: echo on-eu\n")
        .await;
    s.apply_yaml("name: anywhere\ntype: bash\nscript: echo anywhere\n")
        .await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(s.run_event("eu-only", None).await);
    }
    for id in ids {
        let j = s.wait_job(id, Duration::from_secs(60)).await;
        assert_eq!(j["status"], "succeeded", "{j}");
        assert_eq!(j["agent_tags"], json!(["eu"]), "{j}");
        assert_eq!(j["worker"], w["agent-a"].as_str(), "always on agent-a: {j}");
    }
    // An untagged job still runs anywhere.
    let id = s.run_event("anywhere", None).await;
    let j = s.wait_job(id, Duration::from_secs(60)).await;
    assert_eq!(j["status"], "succeeded", "{j}");
    assert!(j.get("waiting_for").is_none(), "{j}");

    // No agent has gpu: the job stays queued and says why, in the API, the CLI and the page.
    s.apply_yaml("name: gpu-only\ntype: bash\nagent_tags: [gpu]\nscript: echo on-gpu\n")
        .await;
    let id = s.run_event("gpu-only", None).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let j = wait_waiting_for(&s, id).await;
    assert_eq!(
        j["waiting_for"], "an agent with tag gpu (none connected)",
        "{j}"
    );
    let o = s.cli(&["job", "show", &id.to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("waiting for an agent with tag gpu (none connected)"),
        "{}",
        stdout(&o)
    );
    let o = s.cli(&["job", "show", &id.to_string(), "--json"]);
    let shown: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(shown["waiting_for"], j["waiting_for"], "{shown}");
    let page = job_page(&s, id).await;
    assert!(
        page.contains("Waiting for an agent with tag gpu (none connected)"),
        "{page}"
    );

    // An agent tagged gpu arrives: it runs there.
    let _c = AgentProc::start(&s, &token, "agent-gpu", &["--tag", "gpu"]);
    wait_agent_connected(&s, "agent-gpu").await;
    let j = s.wait_job(id, Duration::from_secs(60)).await;
    assert_eq!(j["status"], "succeeded", "{j}");
    let w = workers(&s).await;
    assert_eq!(j["worker"], w["agent-gpu"].as_str(), "{j}");
    assert!(j.get("waiting_for").is_none(), "{j}");

    // A workflow: a node's agent_tags override its event's (none here), an inline node's own.
    let (status, body) = s
        .api(
            "PUT",
            "/api/v1/workflows/routed",
            Some(json!({"name": "routed", "nodes": [
                {"id": "bad", "event": "anywhere", "agent_tags": ["NOPE"]},
            ]})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "nodes[0].agent_tags[0]", "{body}");
    let (status, _) = s.api("GET", "/api/v1/workflows/routed", None).await;
    assert_eq!(status, 404, "nothing stored");
    let (status, body) = s
        .api(
            "PUT",
            "/api/v1/workflows/routed",
            Some(json!({"name": "routed", "nodes": [
                {"id": "eu", "event": "anywhere", "agent_tags": ["eu"]},
                {"id": "gpu", "type": "bash", "script": "echo inline", "agent_tags": ["gpu"], "after": ["eu"]},
                {"id": "back", "event": "eu-only", "after": ["gpu"]},
            ]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for _ in 0..2 {
        let (status, run) = s.api("POST", "/api/v1/workflows/routed/runs", None).await;
        assert!(status == 201 || status == 200, "{status} {run}");
        let run_id = run["id"].as_i64().expect("run id");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let last = loop {
            let (_, d) = s
                .api("GET", &format!("/api/v1/workflow-runs/{run_id}"), None)
                .await;
            let st = &d["run"]["status"];
            if st != "running" && st != "queued" {
                break d;
            }
            assert!(std::time::Instant::now() < deadline, "run not ended: {d}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(last["run"]["status"], "succeeded", "{last}");
        for n in last["nodes"].as_array().into_iter().flatten() {
            let j = s.job(n["job_id"].as_i64().expect("job id")).await;
            let (tags, on): (Value, &[&str]) = match n["node"].as_str() {
                // Ends on agent-a, whose hand-off of the next node must not take it.
                Some("eu") => (json!(["eu"]), &["agent-a"]),
                Some("gpu") => (json!(["gpu"]), &["agent-gpu"]),
                _ => (json!(["eu"]), &["agent-a"]),
            };
            assert_eq!(j["agent_tags"], tags, "{n} {j}");
            let ran_on: Vec<&str> = on.iter().map(|a| w[*a].as_str()).collect();
            assert!(
                ran_on.contains(&j["worker"].as_str().unwrap_or_default()),
                "node {} ran on {} not one of {on:?}",
                n["node"],
                j["worker"]
            );
        }
    }
}

#[tokio::test]
async fn a_container_job_waits_for_an_agent_that_can_run_containers() {
    // The embedded agent without Docker, and a remote agent whose Docker engine is not there.
    let s = routing_server(&["--no-docker"]);
    let token = agent_token(&s, "edge");
    let _a = AgentProc::start_env(
        &s,
        &token,
        "no-docker",
        &[],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    let a = wait_agent_connected(&s, "no-docker").await;
    assert!(
        !a["capabilities"]
            .as_array()
            .is_some_and(|c| c.contains(&json!("container"))),
        "{a}"
    );
    s.apply_yaml(
        "name: boxed\ntype: bash\ntarget: { container: { image: alpine:3 } }\nscript: echo boxed\n",
    )
    .await;
    let id = s.run_event("boxed", None).await;
    // Local jobs still run meanwhile.
    s.apply_yaml("name: plain\ntype: bash\nscript: echo plain\n")
        .await;
    let plain = s.run_event("plain", None).await;
    let j = s.wait_job(plain, Duration::from_secs(60)).await;
    assert_eq!(j["status"], "succeeded", "{j}");
    let j = wait_waiting_for(&s, id).await;
    assert_eq!(j["capability"], "container", "{j}");
    assert_eq!(
        j["waiting_for"], "an agent that can run containers (none connected)",
        "{j}"
    );
    assert_eq!(j["attempt"], 0, "never claimed: {j}");
    let (_, list) = s.api("GET", "/api/v1/agents", None).await;
    assert!(
        list.as_array()
            .into_iter()
            .flatten()
            .all(|a| !a["capabilities"]
                .as_array()
                .is_some_and(|c| c.contains(&json!("container")))),
        "{list}"
    );
}

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("run docker")
}

/// A Cronium-labelled container as a crashed run would leave it (created long ago).
fn leftover_container(job: i64) -> String {
    let o = docker(&[
        "create",
        "--label",
        "io.cronium.managed=true",
        "--label",
        &format!("io.cronium.job={job}"),
        "--label",
        "io.cronium.execution=1",
        "--label",
        "io.cronium.created=1000",
        "cronium/scratch-sh:1",
        "sleep",
        "300",
    ]);
    assert!(o.status.success(), "docker create: {}", stderr(&o));
    stdout(&o).trim().to_string()
}

fn container_exists(id: &str) -> bool {
    docker(&["inspect", "--format", "{{.Id}}", id])
        .status
        .success()
}

/// A remote agent with a Docker engine reaps the containers crashed runs left on it, and
/// spares those of jobs running on another agent (whose containers it cannot tell from its
/// own but by the server's list of running jobs).
#[tokio::test]
async fn a_remote_agent_reaps_leftover_containers_but_never_those_of_running_jobs() {
    // The server has no engine of its own (so its reaper is not the one at work).
    let s = Server::start_with(ServerOpts {
        args: vec!["--no-agent".into(), "--no-docker".into()],
        ..Default::default()
    });
    let token = agent_token(&s, "edge");
    // Agent B: no Docker engine, so no reaper; it runs the long job.
    let _b = AgentProc::start_env(
        &s,
        &token,
        "b",
        &["--tag", "b"],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    wait_agent_connected(&s, "b").await;
    s.apply_yaml("name: long\ntype: bash\nagent_tags: [b]\nscript: sleep 60\n")
        .await;
    let running = s.run_event("long", None).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while s.job(running).await["status"] != "running" {
        assert!(
            std::time::Instant::now() < deadline,
            "the long job did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let orphan = leftover_container(running + 1000);
    let spared = leftover_container(running);
    // Agent A: with the engine; its reaper's first pass runs at start.
    let _a = AgentProc::start(&s, &token, "a", &[]);
    wait_agent_connected(&s, "a").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while container_exists(&orphan) {
        if std::time::Instant::now() > deadline {
            let _ = docker(&["rm", "-f", &orphan, &spared]);
            panic!("the leftover container of a job that runs nowhere was not reaped");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let kept = container_exists(&spared);
    let _ = docker(&["rm", "-f", &spared]);
    assert!(
        kept,
        "the container of a job running on another agent was removed"
    );
    assert_eq!(s.job(running).await["status"], "running");
}

/// A registration that could never be matched with jobs is refused naming the field, and
/// nothing is registered.
#[tokio::test]
async fn a_registration_with_bad_tags_or_capabilities_is_refused_naming_the_field() {
    let s = no_agent_server();
    let token = agent_token(&s, "edge");
    let base = json!({
        "name": "edge-1", "worker": "w-1", "version": "0.1.0",
        "tags": ["eu"], "capabilities": ["local"], "concurrency": 2,
    });
    let cases = [
        ("tags", json!(["eu", "Not OK"]), "tags[1]"),
        ("capabilities", json!(["local", "gpu"]), "capabilities[1]"),
        ("concurrency", json!(0), "concurrency"),
        ("worker", json!(" "), "worker"),
    ];
    for (key, value, field) in cases {
        let mut body = base.clone();
        body[key] = value;
        let (status, answer) = s
            .api_with_token("POST", "/api/v1/agent/register", Some(body), Some(&token))
            .await;
        assert_eq!(status, 422, "{key}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(field)),
            "{answer}"
        );
    }
    let (_, list) = s.api("GET", "/api/v1/agents", None).await;
    assert_eq!(list, json!([]), "nothing registered");
    let (status, answer) = s
        .api_with_token("POST", "/api/v1/agent/register", Some(base), Some(&token))
        .await;
    assert_eq!(status, 200, "{answer}");
}
