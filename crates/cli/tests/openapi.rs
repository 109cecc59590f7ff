//! The OpenAPI document is exact: real answers of every route of the real server, successes and
//! errors, are held to `/api/v1/openapi.json` (the status is listed for the operation, the
//! content type too, the body validates against the schema with every `$ref` resolved, and the
//! documented headers are sent), so a violation is caught without the fuzzer's luck
//! (scripts/fuzz-api.sh fuzzes the same document).

#[path = "../../ssh/tests/support/mod.rs"]
mod sshd;
mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

/// A host key that parses (no host presents it: nothing connects with it).
const HOST_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMTzbbst47xEvVNW6qC8WZmL2oKrrONAv6PhPieyC96f";

/// One real answer.
struct Answer {
    status: u16,
    content_type: Option<String>,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

enum Body {
    None,
    Json(Value),
    Raw(Vec<u8>),
}

/// The document and what has been checked against it.
struct Checker<'a> {
    server: &'a Server,
    doc: Value,
    /// (method, path template, status) of every answer checked.
    seen: BTreeSet<(String, String, u16)>,
}

/// `/` and `~` escaped for a JSON pointer.
fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

impl<'a> Checker<'a> {
    async fn new(server: &'a Server) -> Checker<'a> {
        let (status, doc) = server.api("GET", "/api/v1/openapi.json", None).await;
        assert_eq!(status, 200, "{doc}");
        Checker {
            server,
            doc,
            seen: BTreeSet::new(),
        }
    }

    async fn send(&self, method: &str, path: &str, body: Body, token: Option<&str>) -> Answer {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut rb = self
            .server
            .http
            .request(m, format!("{}{path}", self.server.url));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        rb = match body {
            Body::None => rb,
            Body::Json(v) => rb.json(&v),
            Body::Raw(bytes) => rb.header("content-type", "application/json").body(bytes),
        };
        let resp = rb.send().await.expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp.bytes().await.expect("body").to_vec();
        Answer {
            status,
            content_type,
            headers,
            body,
        }
    }

    /// Sends a request with the token, asserts its status and checks the answer against the
    /// operation `method template`.
    async fn hit(
        &mut self,
        method: &str,
        template: &str,
        path: &str,
        body: Body,
        expect: u16,
    ) -> Answer {
        let token = self.server.token.clone();
        self.hit_with(method, template, path, body, Some(&token), expect)
            .await
    }

    async fn hit_with(
        &mut self,
        method: &str,
        template: &str,
        path: &str,
        body: Body,
        token: Option<&str>,
        expect: u16,
    ) -> Answer {
        let a = self.send(method, path, body, token).await;
        assert_eq!(
            a.status,
            expect,
            "{method} {path}: {}",
            String::from_utf8_lossy(&a.body)
        );
        self.check(method, template, path, &a);
        a
    }

    /// A request with a body one byte over the limit (see `Server::request_with_body_of`):
    /// a 413.
    fn hit_too_large(&mut self, method: &str, template: &str, path: &str) {
        let (status, headers, body) = self
            .server
            .request_with_body_of(method, path, (2 << 20) + 1);
        assert_eq!(status, 413, "{method} {path}");
        let mut map = reqwest::header::HeaderMap::new();
        for (k, v) in &headers {
            if let (Ok(k), Ok(v)) = (
                reqwest::header::HeaderName::from_bytes(k.as_bytes()),
                reqwest::header::HeaderValue::from_str(v),
            ) {
                map.insert(k, v);
            }
        }
        let content_type = headers
            .iter()
            .find(|(k, _)| k == "content-type")
            .map(|(_, v)| v.clone());
        let a = Answer {
            status,
            content_type,
            headers: map,
            body,
        };
        self.check(method, template, path, &a);
    }

    /// The schema at `pointer` (inside the document) validates `instance`; every `$ref` in it
    /// resolves against the whole document.
    fn validate(&self, pointer: &str, instance: &Value) -> Vec<String> {
        let mut root = self.doc.clone();
        // A URI fragment: the path templates' braces are percent-encoded.
        let fragment = pointer.replace('{', "%7B").replace('}', "%7D");
        root["$ref"] = json!(format!("#{fragment}"));
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&root)
            .unwrap_or_else(|e| panic!("the schema at {pointer} does not compile: {e}"));
        validator
            .iter_errors(instance)
            .map(|e| format!("{e} (at `{}`)", e.instance_path()))
            .collect()
    }

    /// Checks one answer against the document.
    fn check(&mut self, method: &str, template: &str, path: &str, a: &Answer) {
        let what = format!("{method} {path} -> {}", a.status);
        let op_pointer = format!(
            "/paths/{}/{}",
            escape(template),
            method.to_ascii_lowercase()
        );
        let op = self
            .doc
            .pointer(&op_pointer)
            .unwrap_or_else(|| panic!("{what}: {method} {template} is not in the document"));
        let mut resp_pointer = format!("{op_pointer}/responses/{}", a.status);
        let mut resp = op["responses"]
            .get(a.status.to_string())
            .unwrap_or_else(|| {
                panic!(
                    "{what}: status not documented (documented: {:?}); body {}",
                    op["responses"]
                        .as_object()
                        .map(|m| m.keys().collect::<Vec<_>>()),
                    String::from_utf8_lossy(&a.body)
                )
            })
            .clone();
        if let Some(r) = resp["$ref"].as_str() {
            resp_pointer = r.trim_start_matches('#').to_string();
            resp = self
                .doc
                .pointer(&resp_pointer)
                .unwrap_or_else(|| panic!("{what}: dangling {r}"))
                .clone();
        }
        match resp.get("content").and_then(Value::as_object) {
            None => assert!(
                a.body.is_empty(),
                "{what}: the document gives no content, the answer has a body"
            ),
            Some(content) => {
                let ct = a
                    .content_type
                    .as_deref()
                    .unwrap_or_else(|| panic!("{what}: no content type"));
                let media = ct.split(';').next().unwrap_or_default().trim();
                assert!(
                    content.contains_key(media),
                    "{what}: content type {ct} not documented ({:?})",
                    content.keys().collect::<Vec<_>>()
                );
                if media == "application/json" {
                    let body: Value = serde_json::from_slice(&a.body)
                        .unwrap_or_else(|e| panic!("{what}: not JSON ({e})"));
                    let errors = self.validate(
                        &format!("{resp_pointer}/content/{}/schema", escape(media)),
                        &body,
                    );
                    assert!(
                        errors.is_empty(),
                        "{what}: the body violates the document:\n  {}\nbody: {body}",
                        errors.join("\n  ")
                    );
                }
            }
        }
        for (name, header) in resp["headers"].as_object().into_iter().flatten() {
            let value = a
                .headers
                .get(name.as_str())
                .and_then(|v| v.to_str().ok())
                .unwrap_or_else(|| panic!("{what}: documented header {name} missing"));
            let errors = self.validate(
                &format!("{resp_pointer}/headers/{}/schema", escape(name)),
                &json!(value),
            );
            assert!(errors.is_empty(), "{what}: header {name}: {errors:?}");
            let _ = header;
        }
        self.seen
            .insert((method.to_string(), template.to_string(), a.status));
    }

    /// A raw request with extra headers and no token (a webhook's), checked as `hit` checks.
    async fn hit_hook(
        &mut self,
        template: &str,
        path: &str,
        body: &[u8],
        headers: &[(&str, String)],
        expect: u16,
    ) -> Answer {
        let mut rb = self
            .server
            .http
            .post(format!("{}{path}", self.server.url))
            .header("content-type", "application/json")
            .body(body.to_vec());
        for (k, v) in headers {
            rb = rb.header(*k, v);
        }
        let resp = rb.send().await.expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp.bytes().await.expect("body").to_vec();
        let a = Answer {
            status,
            content_type,
            headers,
            body,
        };
        assert_eq!(
            a.status,
            expect,
            "POST {path}: {}",
            String::from_utf8_lossy(&a.body)
        );
        self.check("POST", template, path, &a);
        a
    }

    /// Every operation of the document was answered with a success at least once.
    fn assert_every_operation_succeeded(&self) {
        for (path, item) in self.doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                let m = method.to_ascii_uppercase();
                assert!(
                    self.seen
                        .iter()
                        .any(|(sm, sp, st)| *sm == m && sp == path && (200..300).contains(st)),
                    "{m} {path} was never answered with a success: {:?}",
                    self.seen
                );
            }
        }
    }
}

/// Parses a Server-Sent Events body into (event, data) pairs.
fn sse_events(body: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(body);
    let mut out = vec![];
    for block in text.split("\n\n") {
        let (mut event, mut data) = (String::new(), String::new());
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        if !event.is_empty() {
            out.push((event, data));
        }
    }
    out
}

#[tokio::test]
async fn every_route_answers_as_the_document_says() {
    let s = Server::start();
    let mut c = Checker::new(&s).await;
    // The checker itself can fail: a wrong body is caught, through a `$ref`.
    assert!(!c
        .validate(
            "/paths/~1api~1v1~1jobs~1{id}/get/responses/200/content/application~1json/schema",
            &json!({"id": "one"})
        )
        .is_empty());

    // Meta routes; the token's absence.
    c.hit_with("GET", "/healthz", "/healthz", Body::None, None, 200)
        .await;
    c.hit(
        "GET",
        "/api/v1/openapi.json",
        "/api/v1/openapi.json",
        Body::None,
        200,
    )
    .await;
    c.hit_with(
        "GET",
        "/api/v1/events",
        "/api/v1/events",
        Body::None,
        None,
        401,
    )
    .await;
    c.hit_with(
        "GET",
        "/api/v1/jobs/{id}",
        "/api/v1/jobs/1",
        Body::None,
        Some("crn_wrong"),
        401,
    )
    .await;
    let m = c.hit("GET", "/metrics", "/metrics", Body::None, 200).await;
    assert!(String::from_utf8_lossy(&m.body).contains("cronium_jobs"));
    c.hit(
        "GET",
        "/api/v1/metrics/transports",
        "/api/v1/metrics/transports",
        Body::None,
        200,
    )
    .await;

    // Events.
    let event = json!({
        "name": "hello",
        "type": "bash",
        "script": "echo hello; echo oops >&2; cronium.output '{\"n\": 1, \"list\": [1, \"a\"]}'",
        "schedule": "0 0 3 * * *",
        "timezone": "Europe/Berlin",
        "retries": {"max_attempts": 2, "backoff": "1s"},
        "env": {"LEVEL": "info"},
        "input": [1, 2, 3],
        "tags": ["demo"],
    });
    let e = "/api/v1/events";
    let one = "/api/v1/events/{name}";
    c.hit("POST", e, e, Body::Json(event.clone()), 201).await;
    c.hit("POST", e, e, Body::Json(event.clone()), 409).await;
    c.hit("POST", e, e, Body::Json(json!({"name": "x"})), 422)
        .await;
    c.hit("POST", e, e, Body::Raw(b"{not json".to_vec()), 422)
        .await;
    c.hit_too_large("POST", e, e);
    let a = c
        .hit(
            "PUT",
            one,
            "/api/v1/events/hello",
            Body::Json(event.clone()),
            200,
        )
        .await;
    assert_eq!(a.json()["result"], "unchanged");
    c.hit(
        "PUT",
        one,
        "/api/v1/events/put-made",
        Body::Json(json!({"type": "http", "http": {"url": "http://127.0.0.1:9/", "method": "post"}, "status": "paused"})),
        200,
    )
    .await;
    c.hit(
        "PUT",
        one,
        "/api/v1/events/hello",
        Body::Json(json!({"name": "other", "type": "bash", "script": "true"})),
        422,
    )
    .await;
    c.hit(
        "PUT",
        one,
        "/api/v1/events/",
        Body::Json(event.clone()),
        404,
    )
    .await;
    c.hit_too_large("PUT", one, "/api/v1/events/big");
    c.hit_too_large(
        "POST",
        "/api/v1/events/{name}/run",
        "/api/v1/events/hello/run",
    );
    c.hit_too_large("PUT", "/api/v1/variables/{name}", "/api/v1/variables/big");
    c.hit_too_large("POST", "/api/v1/tokens", "/api/v1/tokens");
    c.hit_too_large("POST", "/api/v1/servers", "/api/v1/servers");
    c.hit_too_large(
        "POST",
        "/api/v1/servers/{name}/accept-key",
        "/api/v1/servers/nope/accept-key",
    );
    c.hit_too_large(
        "PUT",
        "/api/v1/servers/{name}/credential",
        "/api/v1/servers/nope/credential",
    );
    c.hit("GET", e, e, Body::None, 200).await;
    c.hit("GET", one, "/api/v1/events/hello", Body::None, 200)
        .await;
    c.hit("GET", one, "/api/v1/events/nope", Body::None, 404)
        .await;
    c.hit("GET", one, "/api/v1/events/%FF", Body::None, 422)
        .await;

    // Runs.
    let run = "/api/v1/events/{name}/run";
    let a = c
        .hit(
            "POST",
            run,
            "/api/v1/events/hello/run",
            Body::Json(json!({"input": "any JSON"})),
            201,
        )
        .await;
    let job_id = a.json()["id"].as_i64().expect("id");
    c.hit(
        "POST",
        run,
        "/api/v1/events/hello/run",
        Body::Raw(b"null".to_vec()),
        201,
    )
    .await;
    c.hit("POST", run, "/api/v1/events/nope/run", Body::None, 404)
        .await;
    c.hit(
        "POST",
        run,
        "/api/v1/events/hello/run",
        Body::Json(json!({"bogus": 1})),
        422,
    )
    .await;
    s.apply_yaml("name: once\ntype: bash\nscript: 'true'\nmax_executions: 1\n")
        .await;
    c.hit("POST", run, "/api/v1/events/once/run", Body::None, 201)
        .await;
    c.hit("POST", run, "/api/v1/events/once/run", Body::None, 409)
        .await;
    s.apply_yaml("name: old\ntype: bash\nscript: 'true'\nstatus: archived\n")
        .await;
    c.hit("POST", run, "/api/v1/events/old/run", Body::None, 422)
        .await;

    // Jobs.
    s.wait_job(job_id, Duration::from_secs(60)).await;
    let jobs = "/api/v1/jobs";
    let job = "/api/v1/jobs/{id}";
    c.hit("GET", jobs, jobs, Body::None, 200).await;
    c.hit(
        "GET",
        jobs,
        "/api/v1/jobs?status=succeeded&event=hello&limit=5&before=1000",
        Body::None,
        200,
    )
    .await;
    c.hit("GET", jobs, "/api/v1/jobs?status=done", Body::None, 422)
        .await;
    c.hit("GET", jobs, "/api/v1/jobs?limit=abc", Body::None, 422)
        .await;
    c.hit("GET", jobs, "/api/v1/jobs?unknown=1", Body::None, 422)
        .await;
    let a = c
        .hit(
            "GET",
            job,
            &format!("/api/v1/jobs/{job_id}"),
            Body::None,
            200,
        )
        .await;
    assert_eq!(a.json()["output"]["list"], json!([1, "a"]), "{}", a.json());
    c.hit("GET", job, "/api/v1/jobs/999999", Body::None, 404)
        .await;
    c.hit("GET", job, "/api/v1/jobs/abc", Body::None, 422).await;
    let cancel = "/api/v1/jobs/{id}/cancel";
    c.hit(
        "POST",
        cancel,
        &format!("/api/v1/jobs/{job_id}/cancel"),
        Body::None,
        409,
    )
    .await;
    c.hit(
        "POST",
        cancel,
        "/api/v1/jobs/999999/cancel",
        Body::None,
        404,
    )
    .await;
    c.hit("POST", cancel, "/api/v1/jobs/x/cancel", Body::None, 422)
        .await;
    s.apply_yaml("name: slow\ntype: bash\nscript: sleep 30\n")
        .await;
    let slow = s.run_event("slow", None).await;
    s.wait_for("the slow job to run", Duration::from_secs(30), || async {
        s.job(slow).await["status"] == "running"
    })
    .await;
    c.hit(
        "POST",
        cancel,
        &format!("/api/v1/jobs/{slow}/cancel"),
        Body::None,
        200,
    )
    .await;
    s.wait_job(slow, Duration::from_secs(30)).await;
    c.hit("GET", job, &format!("/api/v1/jobs/{slow}"), Body::None, 200)
        .await;

    // Retry: every server again (a re-run), or only a fan-out's failed ones.
    let retry = "/api/v1/jobs/{id}/retry";
    let at = format!("/api/v1/jobs/{slow}/retry");
    let again = c.hit("POST", retry, &at, Body::None, 201).await;
    let again = again.json()["id"].as_i64().expect("id");
    c.hit(
        "POST",
        cancel,
        &format!("/api/v1/jobs/{again}/cancel"),
        Body::None,
        200,
    )
    .await;
    let failed_only = Body::Json(json!({"failed_only": true}));
    // A local job is not a fan-out to servers.
    c.hit("POST", retry, &at, failed_only, 409).await;
    c.hit("POST", retry, "/api/v1/jobs/999999/retry", Body::None, 404)
        .await;
    c.hit("POST", retry, "/api/v1/jobs/x/retry", Body::None, 422)
        .await;
    let bad = Body::Json(json!({"failed_only": "yes"}));
    c.hit("POST", retry, &at, bad, 422).await;
    c.hit_too_large("POST", retry, &at);

    // Logs, paged and live.
    let logs = "/api/v1/jobs/{id}/logs";
    c.hit(
        "GET",
        logs,
        &format!("/api/v1/jobs/{job_id}/logs?after=0&limit=10"),
        Body::None,
        200,
    )
    .await;
    c.hit(
        "GET",
        logs,
        &format!("/api/v1/jobs/{job_id}/logs?limit=0"),
        Body::None,
        422,
    )
    .await;
    c.hit("GET", logs, "/api/v1/jobs/999999/logs", Body::None, 404)
        .await;
    let stream = "/api/v1/jobs/{id}/logs/stream";
    let a = c
        .hit(
            "GET",
            stream,
            &format!("/api/v1/jobs/{job_id}/logs/stream"),
            Body::None,
            200,
        )
        .await;
    let events = sse_events(&a.body);
    let lines: Vec<&(String, String)> = events.iter().filter(|(e, _)| e == "line").collect();
    assert!(!lines.is_empty(), "no line events: {events:?}");
    for (_, data) in &lines {
        let line: Value = serde_json::from_str(data).expect("line data is JSON");
        let errors = c.validate("/components/schemas/LogLineDto", &line);
        assert!(errors.is_empty(), "line event {line}: {errors:?}");
    }
    let (last, data) = events.last().expect("an end event");
    assert_eq!(last, "end", "{events:?}");
    let end: Value = serde_json::from_str(data).expect("end data is JSON");
    let status_errors = c.validate("/components/schemas/JobStatus", &end["status"]);
    assert!(
        status_errors.is_empty(),
        "end event {end}: {status_errors:?}"
    );
    c.hit(
        "GET",
        stream,
        "/api/v1/jobs/999999/logs/stream",
        Body::None,
        404,
    )
    .await;
    c.hit(
        "GET",
        stream,
        "/api/v1/jobs/abc/logs/stream",
        Body::None,
        422,
    )
    .await;

    // Variables.
    let vars = "/api/v1/variables";
    let var = "/api/v1/variables/{name}";
    for (name, value) in [
        ("n", json!(3)),
        ("s", json!("text")),
        ("nothing", Value::Null),
    ] {
        c.hit(
            "PUT",
            var,
            &format!("/api/v1/variables/{name}"),
            Body::Json(json!({"value": value})),
            200,
        )
        .await;
    }
    let a = c
        .hit(
            "PUT",
            var,
            "/api/v1/variables/API_KEY",
            Body::Json(json!({"value": {"k": "s3cr3t-value"}, "secret": true})),
            200,
        )
        .await;
    assert_eq!(a.json()["value"], Value::Null);
    c.hit(
        "PUT",
        var,
        "/api/v1/variables/bad%20name",
        Body::Json(json!({"value": 1})),
        422,
    )
    .await;
    c.hit(
        "PUT",
        var,
        "/api/v1/variables/n",
        Body::Json(json!({"secret": true})),
        422,
    )
    .await;
    c.hit(
        "PUT",
        var,
        "/api/v1/variables/n",
        Body::Json(json!({"value": "v".repeat(1024 * 1024 + 1)})),
        422,
    )
    .await;
    c.hit("GET", vars, vars, Body::None, 200).await;
    c.hit("GET", var, "/api/v1/variables/n", Body::None, 200)
        .await;
    c.hit("GET", var, "/api/v1/variables/missing", Body::None, 404)
        .await;
    c.hit("DELETE", var, "/api/v1/variables/n", Body::None, 204)
        .await;
    c.hit("DELETE", var, "/api/v1/variables/n", Body::None, 404)
        .await;

    // Retention.
    let prune = "/api/v1/prune";
    let a = c
        .hit(
            "POST",
            prune,
            prune,
            Body::Json(json!({"dry_run": true})),
            200,
        )
        .await;
    assert_eq!(a.json()["dry_run"], true);
    c.hit("POST", prune, prune, Body::None, 200).await;
    c.hit(
        "POST",
        prune,
        prune,
        Body::Json(json!({"dry_run": "yes"})),
        422,
    )
    .await;
    c.hit_too_large("POST", prune, prune);

    // Tokens.
    let tokens = "/api/v1/tokens";
    let token = "/api/v1/tokens/{id}";
    let a = c
        .hit(
            "POST",
            tokens,
            tokens,
            Body::Json(json!({"name": "ci"})),
            201,
        )
        .await;
    let token_id = a.json()["id"].as_i64().expect("id");
    c.hit(
        "POST",
        tokens,
        tokens,
        Body::Json(json!({"name": "  "})),
        422,
    )
    .await;
    c.hit("GET", tokens, tokens, Body::None, 200).await;
    c.hit(
        "DELETE",
        token,
        &format!("/api/v1/tokens/{token_id}"),
        Body::None,
        204,
    )
    .await;
    c.hit(
        "DELETE",
        token,
        &format!("/api/v1/tokens/{token_id}"),
        Body::None,
        404,
    )
    .await;
    c.hit("DELETE", token, "/api/v1/tokens/abc", Body::None, 422)
        .await;

    // Agents and agent tokens (the agent API itself, /api/v1/agent/..., is tests/agents.rs's).
    let agent_tokens = "/api/v1/agent-tokens";
    let agent_token = "/api/v1/agent-tokens/{name}";
    c.hit(
        "POST",
        agent_tokens,
        agent_tokens,
        Body::Json(json!({"name": "edge"})),
        201,
    )
    .await;
    c.hit(
        "POST",
        agent_tokens,
        agent_tokens,
        Body::Json(json!({"name": "edge"})),
        409,
    )
    .await;
    c.hit(
        "POST",
        agent_tokens,
        agent_tokens,
        Body::Json(json!({"name": "Not A Name"})),
        422,
    )
    .await;
    c.hit("GET", agent_tokens, agent_tokens, Body::None, 200)
        .await;
    c.hit(
        "DELETE",
        agent_token,
        "/api/v1/agent-tokens/edge",
        Body::None,
        204,
    )
    .await;
    c.hit(
        "DELETE",
        agent_token,
        "/api/v1/agent-tokens/edge",
        Body::None,
        404,
    )
    .await;
    c.hit("GET", "/api/v1/agents", "/api/v1/agents", Body::None, 200)
        .await;

    // Servers: registered on a loopback port nothing listens on, so a test reaches nothing.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let servers = "/api/v1/servers";
    let server = "/api/v1/servers/{name}";
    let body = json!({"name": "nowhere", "host": "127.0.0.1", "port": closed_port,
                      "user": "nobody", "password": "pw", "tags": ["web"]});
    c.hit("POST", servers, servers, Body::Json(body.clone()), 201)
        .await;
    c.hit("POST", servers, servers, Body::Json(body), 409).await;
    c.hit(
        "POST",
        servers,
        servers,
        Body::Json(json!({"name": "x", "host": "h"})),
        422,
    )
    .await;
    c.hit("GET", servers, servers, Body::None, 200).await;
    c.hit("GET", "/api/v1/runners", "/api/v1/runners", Body::None, 200)
        .await;
    c.hit("GET", server, "/api/v1/servers/nowhere", Body::None, 200)
        .await;
    c.hit("GET", server, "/api/v1/servers/nope", Body::None, 404)
        .await;
    let test = "/api/v1/servers/{name}/test";
    let a = c
        .hit(
            "POST",
            test,
            "/api/v1/servers/nowhere/test",
            Body::None,
            200,
        )
        .await;
    assert_eq!(a.json()["reachable"], false, "{}", a.json());
    c.hit("POST", test, "/api/v1/servers/nope/test", Body::None, 404)
        .await;
    let accept = "/api/v1/servers/{name}/accept-key";
    c.hit(
        "POST",
        accept,
        "/api/v1/servers/nowhere/accept-key",
        Body::None,
        422,
    )
    .await;
    c.hit(
        "POST",
        accept,
        "/api/v1/servers/nowhere/accept-key",
        Body::Json(json!({"host_key": HOST_KEY})),
        200,
    )
    .await;
    c.hit(
        "POST",
        accept,
        "/api/v1/servers/nope/accept-key",
        Body::None,
        404,
    )
    .await;
    // A credential is tested before it is kept: unreachable, then proven on a real sshd.
    let cred = "/api/v1/servers/{name}/credential";
    c.hit(
        "PUT",
        cred,
        "/api/v1/servers/nowhere/credential",
        Body::Json(json!({"password": "pw2"})),
        409,
    )
    .await;
    c.hit(
        "PUT",
        cred,
        "/api/v1/servers/nowhere/credential",
        Body::Json(json!({})),
        422,
    )
    .await;
    c.hit(
        "PUT",
        cred,
        "/api/v1/servers/nope/credential",
        Body::Json(json!({"password": "pw2"})),
        404,
    )
    .await;
    let host = sshd::Sshd::start();
    c.hit(
        "POST",
        servers,
        servers,
        Body::Json(
            json!({"name": "reached", "host": "127.0.0.1", "port": host.port,
                          "user": sshd::USER, "private_key": sshd::env().client_key}),
        ),
        201,
    )
    .await;
    c.hit(
        "PUT",
        cred,
        "/api/v1/servers/reached/credential",
        Body::Json(json!({"password": sshd::PASSWORD})),
        200,
    )
    .await;
    // Runner versions: add (the shipped build again: already there), pins_path, deploy_path, a rollout
    // (the unreachable server fails its batch), its state, a rollback_path.
    let runners_path = "/api/v1/runners";
    let shipped = static_runner_bin().display().to_string();
    let a = c
        .hit(
            "POST",
            runners_path,
            runners_path,
            Body::Json(json!({"path": shipped})),
            201,
        )
        .await;
    let shipped_version = a.json()["version"].as_str().unwrap().to_string();
    c.hit(
        "POST",
        runners_path,
        runners_path,
        Body::Json(json!({"path": "relative/cronium-runner"})),
        422,
    )
    .await;
    let pins_path = "/api/v1/runners/pins";
    c.hit(
        "POST",
        pins_path,
        pins_path,
        Body::Json(json!({"version": shipped_version, "server": "reached"})),
        200,
    )
    .await;
    c.hit(
        "POST",
        pins_path,
        pins_path,
        Body::Json(json!({"version": "9.9.9", "server": "reached"})),
        422,
    )
    .await;
    c.hit(
        "POST",
        pins_path,
        pins_path,
        Body::Json(json!({"version": shipped_version, "server": "nope"})),
        404,
    )
    .await;
    c.hit("GET", pins_path, pins_path, Body::None, 200).await;
    let unpin_path = "/api/v1/runners/pins/remove";
    c.hit(
        "POST",
        unpin_path,
        unpin_path,
        Body::Json(json!({"server": "reached"})),
        204,
    )
    .await;
    c.hit(
        "POST",
        unpin_path,
        unpin_path,
        Body::Json(json!({"server": "reached"})),
        404,
    )
    .await;
    c.hit("POST", unpin_path, unpin_path, Body::Json(json!({})), 422)
        .await;
    let deploy_path = "/api/v1/servers/deploy";
    let a = c
        .hit(
            "POST",
            deploy_path,
            deploy_path,
            Body::Json(json!({"servers": ["nowhere"]})),
            200,
        )
        .await;
    // (No host is written to: this test shares the test user's default deploy_path directory.)
    assert_eq!(a.json()[0]["outcome"], "failed", "{}", a.json());
    c.hit(
        "POST",
        deploy_path,
        deploy_path,
        Body::Json(json!({"servers": ["nope"]})),
        404,
    )
    .await;
    c.hit(
        "POST",
        deploy_path,
        deploy_path,
        Body::Json(json!({"tag": "nope"})),
        422,
    )
    .await;
    let rollouts_path = "/api/v1/runners/rollouts";
    c.hit(
        "POST",
        rollouts_path,
        rollouts_path,
        Body::Json(json!({"version": shipped_version, "batch": "150%"})),
        422,
    )
    .await;
    let a = c
        .hit(
            "POST",
            rollouts_path,
            rollouts_path,
            Body::Json(json!({"version": shipped_version, "batch": 1, "pause": "0s"})),
            202,
        )
        .await;
    let rollout_id = a.json()["id"].as_i64().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (_, r) = s
            .api("GET", &format!("{rollouts_path}/{rollout_id}"), None)
            .await;
        if r["status"] != "running" {
            assert_eq!(r["status"], "failed", "the unreachable server's batch: {r}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{r}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let rollout_one = "/api/v1/runners/rollouts/{id}";
    c.hit(
        "GET",
        rollout_one,
        &format!("{rollouts_path}/{rollout_id}"),
        Body::None,
        200,
    )
    .await;
    c.hit(
        "GET",
        rollout_one,
        &format!("{rollouts_path}/999999"),
        Body::None,
        404,
    )
    .await;
    c.hit("GET", rollouts_path, rollouts_path, Body::None, 200)
        .await;
    let rollback_path = "/api/v1/runners/rollback";
    c.hit(
        "POST",
        rollback_path,
        rollback_path,
        Body::Json(json!({"rollout": rollout_id})),
        200,
    )
    .await;
    c.hit(
        "POST",
        rollback_path,
        rollback_path,
        Body::Json(json!({"rollout": rollout_id})),
        409,
    )
    .await;
    c.hit(
        "POST",
        rollback_path,
        rollback_path,
        Body::Json(json!({"rollout": 999999})),
        404,
    )
    .await;
    c.hit("DELETE", server, "/api/v1/servers/reached", Body::None, 204)
        .await;
    c.hit("DELETE", server, "/api/v1/servers/nowhere", Body::None, 204)
        .await;
    c.hit("DELETE", server, "/api/v1/servers/nowhere", Body::None, 404)
        .await;

    // Workflows and their runs.
    let wfs = "/api/v1/workflows";
    let wf = "/api/v1/workflows/{name}";
    let wf_runs = "/api/v1/workflows/{name}/runs";
    let run_one = "/api/v1/workflow-runs/{id}";
    let flow = json!({
        "name": "flow",
        "input": {"v": 1},
        "nodes": [
            {"id": "hi", "event": "hello"},
            {"id": "inline", "type": "python", "after": ["hi"],
             "script": "import cronium\nprint('py')\ncronium.output({'x': 1})\ncronium.setCondition(True)"},
            {"id": "broken", "type": "bash", "after": {"inline": "condition"}, "script": "exit 1"},
            {"id": "never", "type": "bash", "after": {"broken": "success"}, "script": "true"},
        ],
    });
    c.hit(
        "PUT",
        wf,
        "/api/v1/workflows/flow",
        Body::Json(flow.clone()),
        200,
    )
    .await;
    let a = c
        .hit(
            "PUT",
            wf,
            "/api/v1/workflows/flow",
            Body::Json(flow.clone()),
            200,
        )
        .await;
    assert_eq!(a.json()["result"], "unchanged");
    c.hit(
        "PUT",
        wf,
        "/api/v1/workflows/loop",
        Body::Json(json!({"nodes": [
            {"id": "a", "event": "hello", "after": ["b"]},
            {"id": "b", "event": "hello", "after": ["a"]}]})),
        422,
    )
    .await;
    c.hit(
        "PUT",
        wf,
        "/api/v1/workflows/flow",
        Body::Json(json!({"name": "other", "nodes": [{"id": "a", "event": "hello"}]})),
        422,
    )
    .await;
    c.hit_too_large("PUT", wf, "/api/v1/workflows/big");
    c.hit(
        "PUT",
        wf,
        "/api/v1/workflows/ok",
        Body::Json(json!({"nodes": [{"id": "a", "type": "bash", "script": "echo ok"}]})),
        200,
    )
    .await;
    c.hit(
        "PUT",
        wf,
        "/api/v1/workflows/slow",
        Body::Json(json!({"nodes": [{"id": "a", "type": "bash", "script": "sleep 30"}]})),
        200,
    )
    .await;
    c.hit("GET", wfs, wfs, Body::None, 200).await;
    c.hit("GET", wf, "/api/v1/workflows/flow", Body::None, 200)
        .await;
    c.hit("GET", wf, "/api/v1/workflows/nope", Body::None, 404)
        .await;
    c.hit("GET", wf, "/api/v1/workflows/%FF", Body::None, 422)
        .await;
    let a = c
        .hit(
            "POST",
            wf_runs,
            "/api/v1/workflows/flow/runs",
            Body::Json(json!({"input": {"v": 2}})),
            201,
        )
        .await;
    let flow_run = a.json()["id"].as_i64().expect("run id");
    c.hit(
        "POST",
        wf_runs,
        "/api/v1/workflows/flow/runs",
        Body::Json(json!({"input": [1]})),
        422,
    )
    .await;
    c.hit(
        "POST",
        wf_runs,
        "/api/v1/workflows/nope/runs",
        Body::None,
        404,
    )
    .await;
    c.hit_too_large("POST", wf_runs, "/api/v1/workflows/flow/runs");
    let a = c
        .hit(
            "POST",
            wf_runs,
            "/api/v1/workflows/ok/runs",
            Body::None,
            201,
        )
        .await;
    let ok_run = a.json()["id"].as_i64().expect("run id");
    let a = c
        .hit(
            "POST",
            wf_runs,
            "/api/v1/workflows/slow/runs",
            Body::None,
            201,
        )
        .await;
    let slow_run = a.json()["id"].as_i64().expect("run id");
    c.hit(
        "GET",
        wf_runs,
        "/api/v1/workflows/flow/runs",
        Body::None,
        200,
    )
    .await;
    c.hit(
        "GET",
        wf_runs,
        "/api/v1/workflows/flow/runs?limit=0",
        Body::None,
        422,
    )
    .await;
    c.hit(
        "GET",
        wf_runs,
        "/api/v1/workflows/nope/runs",
        Body::None,
        404,
    )
    .await;
    // Regression (found by the fuzzer): paging the runs of no workflow is a 404 too.
    c.hit(
        "GET",
        wf_runs,
        "/api/v1/workflows/nope/runs?before=5",
        Body::None,
        404,
    )
    .await;
    // The live log of every node follows the run to its end.
    let logs = "/api/v1/workflow-runs/{id}/logs";
    let a = c
        .hit(
            "GET",
            logs,
            &format!("/api/v1/workflow-runs/{flow_run}/logs"),
            Body::None,
            200,
        )
        .await;
    let events = sse_events(&a.body);
    let lines: Vec<&(String, String)> = events.iter().filter(|(e, _)| e == "line").collect();
    assert!(
        lines.iter().any(|(_, d)| d.contains("\"node\":\"inline\"")),
        "{events:?}"
    );
    for (_, data) in &lines {
        let line: Value = serde_json::from_str(data).expect("line data is JSON");
        let errors = c.validate("/components/schemas/WorkflowLogLineDto", &line);
        assert!(errors.is_empty(), "line event {line}: {errors:?}");
    }
    let (last, data) = events.last().expect("an end event");
    assert_eq!(last, "end", "{events:?}");
    let end: Value = serde_json::from_str(data).expect("end data is JSON");
    assert_eq!(end["status"], "failed", "{end}");
    assert!(c
        .validate("/components/schemas/WorkflowRunStatus", &end["status"])
        .is_empty());
    c.hit(
        "GET",
        logs,
        "/api/v1/workflow-runs/999999/logs",
        Body::None,
        404,
    )
    .await;
    c.hit(
        "GET",
        logs,
        "/api/v1/workflow-runs/abc/logs",
        Body::None,
        422,
    )
    .await;
    let a = c
        .hit(
            "GET",
            run_one,
            &format!("/api/v1/workflow-runs/{flow_run}"),
            Body::None,
            200,
        )
        .await;
    assert!(a.json()["explain"].as_array().is_some_and(|e| e.len() == 4));
    c.hit(
        "GET",
        run_one,
        "/api/v1/workflow-runs/999999",
        Body::None,
        404,
    )
    .await;
    c.hit("GET", run_one, "/api/v1/workflow-runs/abc", Body::None, 422)
        .await;
    let retry = "/api/v1/workflow-runs/{id}/retry";
    c.hit(
        "POST",
        retry,
        &format!("/api/v1/workflow-runs/{flow_run}/retry"),
        Body::None,
        201,
    )
    .await;
    for _ in 0..200 {
        let (_, d) = s
            .api("GET", &format!("/api/v1/workflow-runs/{ok_run}"), None)
            .await;
        if d["run"]["status"] == "succeeded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.hit(
        "POST",
        retry,
        &format!("/api/v1/workflow-runs/{ok_run}/retry"),
        Body::None,
        409,
    )
    .await;
    c.hit(
        "POST",
        retry,
        "/api/v1/workflow-runs/999999/retry",
        Body::None,
        404,
    )
    .await;
    c.hit(
        "POST",
        retry,
        "/api/v1/workflow-runs/abc/retry",
        Body::None,
        422,
    )
    .await;
    let cancel = "/api/v1/workflow-runs/{id}/cancel";
    c.hit(
        "POST",
        cancel,
        &format!("/api/v1/workflow-runs/{slow_run}/cancel"),
        Body::None,
        200,
    )
    .await;
    c.hit(
        "POST",
        cancel,
        &format!("/api/v1/workflow-runs/{ok_run}/cancel"),
        Body::None,
        409,
    )
    .await;
    c.hit(
        "POST",
        cancel,
        "/api/v1/workflow-runs/999999/cancel",
        Body::None,
        404,
    )
    .await;
    c.hit(
        "POST",
        cancel,
        "/api/v1/workflow-runs/abc/cancel",
        Body::None,
        422,
    )
    .await;
    // Many at once.
    let batch = "/api/v1/apply";
    let a = c
        .hit(
            "POST",
            batch,
            batch,
            Body::Json(json!({"kind": "events", "items": [event.clone()], "dry_run": true})),
            200,
        )
        .await;
    assert_eq!(
        a.json()["changes"][0]["result"],
        "unchanged",
        "{}",
        a.json()
    );
    c.hit(
        "POST",
        batch,
        batch,
        Body::Json(json!({"kind": "workflows", "items": [flow.clone()], "prune": false})),
        200,
    )
    .await;
    c.hit(
        "POST",
        batch,
        batch,
        Body::Json(json!({"kind": "events", "items": [{"name": "x"}]})),
        422,
    )
    .await;
    c.hit_too_large("POST", batch, batch);
    c.hit("DELETE", wf, "/api/v1/workflows/slow", Body::None, 204)
        .await;
    c.hit("DELETE", wf, "/api/v1/workflows/slow", Body::None, 404)
        .await;
    // Its runs stay, with the workflow's name.
    c.hit(
        "GET",
        run_one,
        &format!("/api/v1/workflow-runs/{slow_run}"),
        Body::None,
        200,
    )
    .await;
    // The runtime API, with the token of a running API-mode execution.
    let marks = shared_tempdir();
    let mark = marks.path().display().to_string();
    c.hit(
        "POST",
        e,
        e,
        Body::Json(json!({"name": "live", "type": "bash", "helpers": "api",
            "env": {"MARK": mark},
            "script": "printf %s \"$CRONIUM_API_TOKEN\" > \"$MARK/t.tmp\"; mv \"$MARK/t.tmp\" \"$MARK/t\"\nwhile [ ! -e \"$MARK/go\" ]; do sleep 0.05; done\n"})),
        201,
    )
    .await;
    let live_job = c
        .hit(
            "POST",
            run,
            "/api/v1/events/live/run",
            Body::Json(json!({"input": {"k": 1}})),
            201,
        )
        .await
        .json()["id"]
        .as_i64()
        .expect("id");
    let token_file = marks.path().join("t");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !token_file.exists() {
        assert!(std::time::Instant::now() < deadline, "no runtime token");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let rt = std::fs::read_to_string(&token_file).expect("token");
    let rt = Some(rt.as_str());
    for (path, status) in [
        ("/api/v1/runtime/input", 200),
        ("/api/v1/runtime/event", 200),
        ("/api/v1/runtime/output", 200),
    ] {
        c.hit_with("GET", path, path, Body::None, rt, status).await;
    }
    let out = "/api/v1/runtime/output";
    c.hit_with(
        "PUT",
        out,
        out,
        Body::Json(json!({"value": {"a": 1}})),
        rt,
        200,
    )
    .await;
    c.hit_with("PUT", out, out, Body::Json(json!({"v": 1})), rt, 422)
        .await;
    c.hit_too_large("PUT", out, out);
    let key = "/api/v1/runtime/output/{key}";
    let a = c
        .hit_with(
            "PUT",
            key,
            "/api/v1/runtime/output/b",
            Body::Json(json!({"value": 2})),
            rt,
            200,
        )
        .await;
    assert_eq!(a.json()["value"], json!({"a": 1, "b": 2}));
    let rvar = "/api/v1/runtime/variables/{name}";
    c.hit_with(
        "PUT",
        rvar,
        "/api/v1/runtime/variables/rv",
        Body::Json(json!({"value": [1]})),
        rt,
        200,
    )
    .await;
    c.hit_with(
        "PUT",
        rvar,
        "/api/v1/runtime/variables/bad%20name",
        Body::Json(json!({"value": 1})),
        rt,
        422,
    )
    .await;
    let a = c
        .hit_with(
            "GET",
            rvar,
            "/api/v1/runtime/variables/rv",
            Body::None,
            rt,
            200,
        )
        .await;
    assert_eq!(a.json()["value"], json!([1]));
    c.hit_with(
        "GET",
        rvar,
        "/api/v1/runtime/variables/none",
        Body::None,
        rt,
        200,
    )
    .await;
    let cond = "/api/v1/runtime/condition";
    c.hit_with(
        "PUT",
        cond,
        cond,
        Body::Json(json!({"value": true})),
        rt,
        200,
    )
    .await;
    c.hit_with("PUT", cond, cond, Body::Json(json!({"value": 1})), rt, 422)
        .await;
    // An API token opens no runtime route.
    c.hit(
        "GET",
        "/api/v1/runtime/input",
        "/api/v1/runtime/input",
        Body::None,
        401,
    )
    .await;
    std::fs::write(marks.path().join("go"), "").expect("go");
    s.wait_job(live_job, std::time::Duration::from_secs(30))
        .await;
    // Ended: refused.
    c.hit_with(
        "GET",
        "/api/v1/runtime/input",
        "/api/v1/runtime/input",
        Body::None,
        rt,
        401,
    )
    .await;

    // Notification channels and webhooks.
    let chs = "/api/v1/channels";
    c.hit("GET", chs, chs, Body::None, 200).await;
    let a = c
        .hit(
            "POST",
            chs,
            chs,
            Body::Json(json!({"name": "ops", "type": "webhook", "url": "http://127.0.0.1:9/in"})),
            201,
        )
        .await;
    assert!(a.json()["secret"]
        .as_str()
        .is_some_and(|s| s.starts_with("cws_")));
    c.hit(
        "POST",
        chs,
        chs,
        Body::Json(json!({"name": "ops", "type": "slack", "url": "http://127.0.0.1:9/"})),
        409,
    )
    .await;
    c.hit(
        "POST",
        chs,
        chs,
        Body::Json(json!({"name": "m", "type": "email", "url": "http://127.0.0.1:9/"})),
        422,
    )
    .await;
    c.hit_too_large("POST", chs, chs);
    let ch = "/api/v1/channels/{name}";
    let a = c
        .hit("GET", ch, "/api/v1/channels/ops", Body::None, 200)
        .await;
    assert_eq!(a.json()["secret_fields"], json!(["url", "secret"]));
    c.hit("GET", ch, "/api/v1/channels/none", Body::None, 404)
        .await;
    let cht = "/api/v1/channels/{name}/test";
    let a = c
        .hit("POST", cht, "/api/v1/channels/ops/test", Body::None, 200)
        .await;
    assert_eq!(
        a.json()["delivered"],
        json!(false),
        "nothing listens on port 9"
    );
    c.hit("POST", cht, "/api/v1/channels/none/test", Body::None, 404)
        .await;
    c.hit(
        "PUT",
        one,
        "/api/v1/events/hooked",
        Body::Json(json!({"type": "bash", "script": "true", "webhook": true,
            "notify": [{"on": ["failure"], "channel": "ops"}]})),
        200,
    )
    .await;
    c.hit(
        "PUT",
        one,
        "/api/v1/events/hooked2",
        Body::Json(json!({"type": "bash", "script": "true",
            "notify": [{"on": ["failure"], "channel": "nope"}]})),
        422,
    )
    .await;
    c.hit("DELETE", ch, "/api/v1/channels/ops", Body::None, 409)
        .await;
    let eh = "/api/v1/events/{name}/hook";
    let a = c
        .hit("GET", eh, "/api/v1/events/hooked/hook", Body::None, 200)
        .await;
    let secret = a.json()["secret"]
        .as_str()
        .expect("secret once")
        .to_string();
    let a = c
        .hit("GET", eh, "/api/v1/events/hooked/hook", Body::None, 200)
        .await;
    assert_eq!(a.json()["secret"], Value::Null, "shown once");
    c.hit("GET", eh, "/api/v1/events/none/hook", Body::None, 404)
        .await;
    let ehr = "/api/v1/events/{name}/hook/rotate";
    c.hit(
        "POST",
        ehr,
        "/api/v1/events/hello/hook/rotate",
        Body::None,
        409,
    )
    .await;
    c.hit(
        "POST",
        ehr,
        "/api/v1/events/none/hook/rotate",
        Body::None,
        404,
    )
    .await;
    let a = c
        .hit(
            "POST",
            ehr,
            "/api/v1/events/hooked/hook/rotate",
            Body::None,
            200,
        )
        .await;
    let rotated = a.json()["secret"].as_str().expect("new secret").to_string();
    assert_ne!(rotated, secret);
    let hk = "/hooks/{name}";
    let body = br#"{"ref": "main"}"#;
    let ts = chrono::Utc::now().timestamp();
    let signed = |secret: &str, body: &[u8]| {
        vec![
            ("X-Cronium-Timestamp", ts.to_string()),
            ("X-Cronium-Signature", cronium_signature(secret, ts, body)),
        ]
    };
    // The old secret stopped working with the rotation.
    c.hit_hook(hk, "/hooks/hooked", body, &signed(&secret, body), 401)
        .await;
    let a = c
        .hit_hook(hk, "/hooks/hooked", body, &signed(&rotated, body), 202)
        .await;
    assert!(a.json()["job_id"].is_i64(), "{}", a.json());
    c.hit_hook(hk, "/hooks/hooked", body, &signed(&rotated, body), 401)
        .await;
    c.hit_hook(hk, "/hooks/none", body, &signed(&rotated, body), 404)
        .await;
    c.hit_hook(hk, "/hooks/hooked", b"[1]", &signed(&rotated, b"[1]"), 400)
        .await;
    c.hit_too_large("POST", hk, "/hooks/hooked");
    c.hit(
        "PUT",
        wf,
        "/api/v1/workflows/hooked-wf",
        Body::Json(json!({"webhook": true, "nodes": [{"id": "a", "event": "hooked"}]})),
        200,
    )
    .await;
    let wh = "/api/v1/workflows/{name}/hook";
    let a = c
        .hit(
            "GET",
            wh,
            "/api/v1/workflows/hooked-wf/hook",
            Body::None,
            200,
        )
        .await;
    assert!(a.json()["secret"].is_string());
    let whr = "/api/v1/workflows/{name}/hook/rotate";
    let a = c
        .hit(
            "POST",
            whr,
            "/api/v1/workflows/hooked-wf/hook/rotate",
            Body::None,
            200,
        )
        .await;
    let wsecret = a.json()["secret"].as_str().expect("secret").to_string();
    c.hit("GET", wh, "/api/v1/workflows/none/hook", Body::None, 404)
        .await;
    c.hit(
        "POST",
        whr,
        "/api/v1/workflows/none/hook/rotate",
        Body::None,
        404,
    )
    .await;
    let a = c
        .hit_hook(hk, "/hooks/hooked-wf", body, &signed(&wsecret, body), 202)
        .await;
    assert!(a.json()["workflow_run_id"].is_i64(), "{}", a.json());
    // A workflow cannot take the hook of an event of the same name.
    c.hit(
        "PUT",
        wf,
        "/api/v1/workflows/hooked",
        Body::Json(json!({"webhook": true, "nodes": [{"id": "a", "event": "hooked"}]})),
        422,
    )
    .await;
    c.hit("DELETE", wf, "/api/v1/workflows/hooked-wf", Body::None, 204)
        .await;
    c.hit("DELETE", one, "/api/v1/events/hooked", Body::None, 204)
        .await;
    c.hit("DELETE", ch, "/api/v1/channels/ops", Body::None, 204)
        .await;
    c.hit("DELETE", ch, "/api/v1/channels/ops", Body::None, 404)
        .await;

    // Deleting the event keeps its jobs (event_id becomes null); they still validate.
    c.hit("DELETE", one, "/api/v1/events/hello", Body::None, 204)
        .await;
    c.hit("DELETE", one, "/api/v1/events/hello", Body::None, 404)
        .await;
    c.hit(
        "GET",
        job,
        &format!("/api/v1/jobs/{job_id}"),
        Body::None,
        200,
    )
    .await;

    // Users, their tokens and the audit log; a role's refusal (403) in the one error shape.
    let users = "/api/v1/users";
    let user = "/api/v1/users/{name}";
    let password = "/api/v1/users/{name}/password";
    let a = c
        .hit(
            "POST",
            users,
            users,
            Body::Json(json!({"name": "vic", "role": "viewer", "password": "vics-password"})),
            201,
        )
        .await;
    assert_eq!(a.json()["role"], "viewer");
    c.hit(
        "POST",
        users,
        users,
        Body::Json(json!({"name": "vic", "role": "viewer", "password": "vics-password"})),
        409,
    )
    .await;
    c.hit(
        "POST",
        users,
        users,
        Body::Json(json!({"name": "Bad Name", "role": "viewer", "password": "long-enough"})),
        422,
    )
    .await;
    c.hit("GET", users, users, Body::None, 200).await;
    c.hit("GET", user, "/api/v1/users/vic", Body::None, 200)
        .await;
    c.hit("GET", user, "/api/v1/users/nobody", Body::None, 404)
        .await;
    c.hit(
        "PATCH",
        user,
        "/api/v1/users/vic",
        Body::Json(json!({"disabled": false})),
        200,
    )
    .await;
    c.hit(
        "PATCH",
        user,
        "/api/v1/users/admin",
        Body::Json(json!({"role": "viewer"})),
        409,
    )
    .await;
    c.hit(
        "PATCH",
        user,
        "/api/v1/users/nobody",
        Body::Json(json!({"role": "viewer"})),
        404,
    )
    .await;
    c.hit(
        "PUT",
        password,
        "/api/v1/users/vic/password",
        Body::Json(json!({"password": "vics-new-password"})),
        204,
    )
    .await;
    c.hit(
        "PUT",
        password,
        "/api/v1/users/vic/password",
        Body::Json(json!({"password": "short"})),
        422,
    )
    .await;
    let tokens = "/api/v1/tokens";
    let a = c
        .hit(
            "POST",
            tokens,
            tokens,
            Body::Json(json!({"name": "vic-ro", "user": "vic", "expires_in": "1d"})),
            201,
        )
        .await;
    let vic = a.json()["token"].as_str().expect("token").to_string();
    c.hit_with(
        "PUT",
        password,
        "/api/v1/users/admin/password",
        Body::Json(json!({"password": "not-his-to-set"})),
        Some(&vic),
        403,
    )
    .await;
    c.hit_with("GET", users, users, Body::None, Some(&vic), 403)
        .await;
    c.hit_with(
        "POST",
        tokens,
        tokens,
        Body::Json(json!({"name": "x", "user": "admin"})),
        Some(&vic),
        403,
    )
    .await;
    let log = "/api/v1/audit";
    let a = c
        .hit("GET", log, "/api/v1/audit?limit=3", Body::None, 200)
        .await;
    let last = a.json()[2]["id"].as_i64().expect("id");
    c.hit(
        "GET",
        log,
        &format!("/api/v1/audit?before={last}&action=user.&actor=admin&since=2020-01-01T00:00:00Z"),
        Body::None,
        200,
    )
    .await;
    c.hit("GET", log, "/api/v1/audit?since=soon", Body::None, 422)
        .await;
    c.hit_with("GET", log, log, Body::None, Some(&vic), 403)
        .await;

    c.assert_every_operation_succeeded();
}

/// What holds for every operation: the token's statuses, errors in the one shape, typed
/// parameters, unique operation ids; and values that can be any JSON are not typed `object`.
#[tokio::test]
async fn the_document_describes_every_operation_completely() {
    let s = Server::start();
    let (_, doc) = s.api("GET", "/api/v1/openapi.json", None).await;
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let what = format!("{method} {path}");
            let id = op["operationId"].as_str().expect("operationId");
            assert!(ids.insert(id.to_string()), "{what}: duplicate id {id}");
            let responses = op["responses"].as_object().expect("responses");
            // A webhook takes no token (its signature authenticates it) but answers 401 and 500.
            let hook = path == "/hooks/{name}";
            let public = path == "/healthz" || hook;
            for status in ["401", "500"] {
                assert_eq!(
                    responses.contains_key(status),
                    !public || hook,
                    "{what}: {status}"
                );
            }
            // The runtime API takes an execution's token (scheme `runtime`), the rest an API token.
            let scheme = match path.starts_with("/api/v1/runtime/") {
                true => "runtime",
                false => "bearer",
            };
            let secured = op["security"]
                .as_array()
                .is_some_and(|reqs| reqs.iter().any(|r| r.get(scheme).is_some()));
            assert_eq!(secured, !public, "{what}: security");
            for (status, resp) in responses {
                let resp = match resp["$ref"].as_str() {
                    Some(r) => doc
                        .pointer(r.trim_start_matches('#'))
                        .expect("response ref"),
                    None => resp,
                };
                if status.starts_with('4') || status == "500" {
                    assert_eq!(
                        resp["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{what} {status}"
                    );
                }
            }
            for p in op["parameters"].as_array().into_iter().flatten() {
                if p["in"] == "path" {
                    assert_eq!(p["required"], true, "{what}: {p}");
                    let schema = &p["schema"];
                    assert!(
                        schema["type"] == "integer" && schema["format"] == "int64"
                            || schema["pattern"].is_string(),
                        "{what}: path parameter without an integer format or a pattern: {p}"
                    );
                }
            }
        }
    }
    let schemas = &doc["components"]["schemas"];
    for (dto, field) in [
        ("VariableDto", "value"),
        ("VariableBody", "value"),
        ("JobDto", "output"),
        ("JobDto", "input"),
        ("ExecutionDto", "output"),
        ("EventDto", "spec"),
        ("RunBody", "input"),
        ("EventSpec", "input"),
    ] {
        let p = &schemas[dto]["properties"][field];
        assert!(p.is_object(), "{dto}.{field} missing");
        assert!(
            p.get("type").is_none() && p.get("$ref").is_none(),
            "{dto}.{field} must accept any JSON: {p}"
        );
    }
    assert_eq!(
        doc["paths"]["/api/v1/jobs/{id}/logs/stream"]["get"]["responses"]["200"]["content"]
            .as_object()
            .map(|m| m.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["text/event-stream".to_string()])
    );
}

/// The name pattern the document declares accepts exactly the names the server accepts.
#[test]
fn the_name_pattern_is_the_name_rule() {
    let schema = json!({"type": "string", "pattern": cronium_core::spec::NAME_PATTERN});
    let validator = jsonschema::validator_for(&schema).expect("pattern compiles");
    let long = "a".repeat(100);
    let too_long = "a".repeat(101);
    for name in [
        "a",
        "nightly-backup",
        "a.b_c-d",
        ".hidden",
        "..x",
        "...",
        "0",
        "-",
        "_",
        &long,
        &too_long,
        "",
        ".",
        "..",
        "A",
        "a b",
        "é",
        "a/b",
    ] {
        assert_eq!(
            validator.is_valid(&json!(name)),
            cronium_core::spec::validate_name(name).is_ok(),
            "`{name}`"
        );
    }
}

#[test]
fn the_percentage_pattern_is_the_parser_rule() {
    use cronium_core::fanout::{ServerCount, PERCENT_PATTERN};
    let schema = json!({"type": "string", "pattern": PERCENT_PATTERN});
    let validator = jsonschema::validator_for(&schema).expect("pattern compiles");
    for text in [
        "1%", "60%", "100%", " 60 % ", "99%", "0%", "101%", "060%", "%", "60", "abc", "-5%", "+5%",
        "5.5%", "1000%", "60%%", "",
    ] {
        let parsed = serde_json::from_value::<ServerCount>(json!(text)).is_ok();
        assert_eq!(validator.is_valid(&json!(text)), parsed, "`{text}`");
    }
}
