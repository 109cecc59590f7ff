//! Accounts, roles and the audit log against the real `cronium serve` and the real CLI:
//!
//! - the role matrix: **every** operation of `/api/v1/openapi.json`, called with an admin's,
//!   an operator's and a viewer's token and with none, each answer's class checked against the
//!   table below (allowed: neither 401 nor 403; denied: 403; no token: 401); an operation of
//!   the document missing from the table fails, and so does a table entry the document lacks;
//!   the pages the same way with each role's session (and the buttons a viewer must not see);
//! - narrowed and expiring tokens, disabled users (tokens and sessions stop at once), the
//!   `cronium user` and `cronium token` flows;
//! - the audit log: an entry for each kind of change, run, cancel, login and failed login,
//!   with before and after, and never a secret, on SQLite and PostgreSQL.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use reqwest::redirect::Policy;
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::*;

const PASSWORD: &str = "correct-horse-battery-staple";
/// A host key that parses (no host presents it).
const HOST_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMTzbbst47xEvVNW6qC8WZmL2oKrrONAv6PhPieyC96f";

/// The role an operation or a page needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Need {
    Viewer,
    Operator,
    Admin,
}
use Need::{Admin, Operator, Viewer};

/// Every operation behind an API token and the role it needs. A new route must be added here
/// (the test fails until it is), with the role PRODUCT.md gives it.
const API: &[(&str, &str, Need)] = &[
    ("GET", "/api/v1/events", Viewer),
    ("POST", "/api/v1/events", Operator),
    ("GET", "/api/v1/events/{name}", Viewer),
    ("PUT", "/api/v1/events/{name}", Operator),
    ("DELETE", "/api/v1/events/{name}", Operator),
    ("POST", "/api/v1/events/{name}/run", Operator),
    ("GET", "/api/v1/jobs", Viewer),
    ("GET", "/api/v1/jobs/{id}", Viewer),
    ("POST", "/api/v1/jobs/{id}/cancel", Operator),
    ("POST", "/api/v1/jobs/{id}/retry", Operator),
    ("GET", "/api/v1/jobs/{id}/logs", Viewer),
    ("GET", "/api/v1/jobs/{id}/logs/stream", Viewer),
    ("GET", "/api/v1/variables", Viewer),
    ("GET", "/api/v1/variables/{name}", Viewer),
    ("PUT", "/api/v1/variables/{name}", Operator),
    ("DELETE", "/api/v1/variables/{name}", Operator),
    // One's own tokens (an admin's reach is everyone's: checked below).
    ("GET", "/api/v1/tokens", Viewer),
    ("POST", "/api/v1/tokens", Viewer),
    ("DELETE", "/api/v1/tokens/{id}", Viewer),
    ("GET", "/api/v1/agents", Viewer),
    ("GET", "/api/v1/agent-tokens", Admin),
    ("POST", "/api/v1/agent-tokens", Admin),
    ("DELETE", "/api/v1/agent-tokens/{name}", Admin),
    ("GET", "/api/v1/users", Admin),
    ("POST", "/api/v1/users", Admin),
    ("GET", "/api/v1/users/{name}", Admin),
    ("PATCH", "/api/v1/users/{name}", Admin),
    // One's own password (`{name}` is the caller); anyone's for an admin.
    ("PUT", "/api/v1/users/{name}/password", Viewer),
    ("GET", "/api/v1/audit", Admin),
    ("GET", "/api/v1/servers", Viewer),
    ("GET", "/api/v1/runners", Viewer),
    ("POST", "/api/v1/runners", Admin),
    ("GET", "/api/v1/runners/pins", Viewer),
    ("POST", "/api/v1/runners/pins", Admin),
    ("POST", "/api/v1/runners/pins/remove", Admin),
    ("GET", "/api/v1/runners/rollouts", Viewer),
    ("POST", "/api/v1/runners/rollouts", Admin),
    ("GET", "/api/v1/runners/rollouts/{id}", Viewer),
    ("POST", "/api/v1/runners/rollback", Admin),
    ("POST", "/api/v1/servers/deploy", Admin),
    ("POST", "/api/v1/servers", Operator),
    ("GET", "/api/v1/servers/{name}", Viewer),
    ("DELETE", "/api/v1/servers/{name}", Operator),
    ("POST", "/api/v1/servers/{name}/test", Operator),
    ("POST", "/api/v1/servers/{name}/accept-key", Operator),
    ("PUT", "/api/v1/servers/{name}/credential", Operator),
    ("GET", "/api/v1/workflows", Viewer),
    ("GET", "/api/v1/workflows/{name}", Viewer),
    ("PUT", "/api/v1/workflows/{name}", Operator),
    ("DELETE", "/api/v1/workflows/{name}", Operator),
    ("GET", "/api/v1/workflows/{name}/runs", Viewer),
    ("POST", "/api/v1/workflows/{name}/runs", Operator),
    ("GET", "/api/v1/workflow-runs/{id}", Viewer),
    ("POST", "/api/v1/workflow-runs/{id}/retry", Operator),
    ("POST", "/api/v1/workflow-runs/{id}/cancel", Operator),
    ("GET", "/api/v1/workflow-runs/{id}/logs", Viewer),
    ("POST", "/api/v1/apply", Operator),
    ("POST", "/api/v1/prune", Admin),
    ("GET", "/api/v1/metrics/transports", Viewer),
    ("GET", "/api/v1/openapi.json", Viewer),
    ("GET", "/metrics", Viewer),
    ("GET", "/api/v1/events/{name}/hook", Operator),
    ("POST", "/api/v1/events/{name}/hook/rotate", Operator),
    ("GET", "/api/v1/workflows/{name}/hook", Operator),
    ("POST", "/api/v1/workflows/{name}/hook/rotate", Operator),
    ("GET", "/api/v1/channels", Viewer),
    ("POST", "/api/v1/channels", Admin),
    ("GET", "/api/v1/channels/{name}", Viewer),
    ("DELETE", "/api/v1/channels/{name}", Admin),
    ("POST", "/api/v1/channels/{name}/test", Operator),
];

/// Every page behind the login and the role it needs (paths as sent: a `{name}` or `{id}`
/// that exists nowhere, so that an allowed change finds nothing to change).
const PAGES: &[(&str, &str, Need)] = &[
    ("GET", "/", Viewer),
    ("GET", "/events", Viewer),
    ("GET", "/new-event", Operator),
    ("POST", "/new-event", Operator),
    ("GET", "/events/some-event", Viewer),
    ("GET", "/events/some-event/edit", Operator),
    ("POST", "/events/nothing-here/edit", Operator),
    ("POST", "/events/nothing-here/run", Operator),
    ("POST", "/events/nothing-here/delete", Operator),
    ("GET", "/jobs", Viewer),
    ("GET", "/jobs/stream", Viewer),
    ("GET", "/jobs/999999", Viewer),
    ("POST", "/jobs/999999/cancel", Operator),
    ("POST", "/jobs/999999/rerun", Operator),
    ("POST", "/jobs/999999/retry-failed", Operator),
    ("GET", "/jobs/999999/log/lines?before=10", Viewer),
    ("GET", "/jobs/999999/log/stream", Viewer),
    ("GET", "/jobs/999999/log.txt", Viewer),
    ("GET", "/workflows", Viewer),
    ("GET", "/workflows/some-flow", Viewer),
    ("POST", "/workflows/nothing-here/run", Operator),
    ("GET", "/workflow-runs/999999", Viewer),
    ("POST", "/workflow-runs/999999/retry", Operator),
    ("POST", "/workflow-runs/999999/cancel", Operator),
    ("GET", "/workflow-runs/999999/stream", Viewer),
    ("GET", "/workflow-runs/999999/log/stream", Viewer),
    ("GET", "/servers", Viewer),
    ("GET", "/add-server", Operator),
    ("POST", "/add-server", Operator),
    ("GET", "/servers/nothing-here", Viewer),
    ("POST", "/servers/nothing-here/test", Operator),
    ("POST", "/servers/nothing-here/accept-key", Operator),
    ("POST", "/servers/nothing-here/delete", Operator),
    ("GET", "/agents", Viewer),
    ("POST", "/agents/tokens", Admin),
    ("POST", "/agents/tokens/nothing-here/revoke", Admin),
    ("GET", "/variables", Viewer),
    ("POST", "/variables", Operator),
    ("POST", "/variables/nothing-here/delete", Operator),
    ("GET", "/tokens", Viewer),
    ("POST", "/tokens", Viewer),
    ("POST", "/tokens/999999/revoke", Viewer),
    ("GET", "/users", Admin),
    ("POST", "/users", Admin),
    ("POST", "/users/nothing-here", Admin),
    ("GET", "/audit", Admin),
];

fn server() -> Server {
    Server::start_with(ServerOpts {
        env: vec![("CRONIUM_ADMIN_PASSWORD".into(), PASSWORD.into())],
        ..Default::default()
    })
}

fn server_on(database_url: Option<String>) -> Server {
    Server::start_with(ServerOpts {
        env: vec![("CRONIUM_ADMIN_PASSWORD".into(), PASSWORD.into())],
        database_url,
        ..Default::default()
    })
}

/// Adds a user with [`PASSWORD`] and returns a token of theirs (made by the admin).
async fn user_with_token(s: &Server, name: &str, role: &str) -> String {
    let (st, u) = s
        .api(
            "POST",
            "/api/v1/users",
            Some(json!({"name": name, "role": role, "password": PASSWORD})),
        )
        .await;
    assert_eq!(st, 201, "{u}");
    assert_eq!(
        (u["name"].as_str(), u["role"].as_str()),
        (Some(name), Some(role))
    );
    let (st, t) = s
        .api(
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": format!("{name}-cli"), "user": name})),
        )
        .await;
    assert_eq!(st, 201, "{t}");
    assert_eq!(t["user"], name);
    t["token"].as_str().expect("token").to_string()
}

fn concrete(template: &str, me: &str) -> String {
    if template == "/api/v1/users/{name}/password" {
        return format!("/api/v1/users/{me}/password");
    }
    template
        .replace("{name}", "nothing-here")
        .replace("{id}", "999999")
}

fn body_for(method: &str, template: &str) -> Option<Value> {
    match (method, template) {
        ("GET" | "DELETE", _) => None,
        (_, "/api/v1/prune") => Some(json!({"dry_run": true})),
        (_, "/api/v1/users/{name}/password") => Some(json!({"password": "short"})),
        _ => Some(json!({})),
    }
}

#[tokio::test]
async fn every_operation_of_the_document_answers_each_role_as_the_table_says() {
    let s = server();
    let operator = user_with_token(&s, "olga", "operator").await;
    let viewer = user_with_token(&s, "vic", "viewer").await;
    let (_, doc) = s.api("GET", "/api/v1/openapi.json", None).await;

    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        // Public (`/healthz`), signed instead of a token (`/hooks/{name}`: tests/hooks.rs), or
        // an execution's token only (the runtime API).
        if path == "/healthz" || path == "/hooks/{name}" || path.starts_with("/api/v1/runtime/") {
            continue;
        }
        for (method, op) in item.as_object().expect("path item") {
            let m = method.to_ascii_uppercase();
            let need = API
                .iter()
                .find(|(tm, tp, _)| *tm == m && tp == path)
                .map(|(_, _, n)| *n)
                .unwrap_or_else(|| {
                    panic!("{m} {path} is in the document but not in the role table of this test")
                });
            // The document says the same role.
            let role = format!("{need:?}").to_ascii_lowercase();
            assert_eq!(op["x-cronium-role"], role.as_str(), "{m} {path}");
            documented.insert((m, path.clone()));
        }
    }
    for (m, p, _) in API {
        assert!(
            documented.contains(&(m.to_string(), p.to_string())),
            "{m} {p} is in the table but not in the document"
        );
    }

    let callers: [(&str, Option<&str>, Option<Need>); 4] = [
        ("admin", Some(TOKEN), Some(Admin)),
        ("olga", Some(&operator), Some(Operator)),
        ("vic", Some(&viewer), Some(Viewer)),
        ("nobody", None, None),
    ];
    let mut checked = 0;
    for (method, template, need) in API {
        for (me, token, role) in &callers {
            let path = concrete(template, me);
            let (status, answer) = tokio::time::timeout(
                Duration::from_secs(30),
                s.api_with_token(method, &path, body_for(method, template), *token),
            )
            .await
            .unwrap_or_else(|_| panic!("{method} {path} as {me}: no answer in 30 s"));
            match role {
                None => assert_eq!(status, 401, "{method} {path} without a token: {answer}"),
                Some(r) if r >= need => assert!(
                    status != 401 && status != 403,
                    "{method} {path} as {me} ({r:?}) was refused ({status}): {answer}"
                ),
                Some(r) => {
                    assert_eq!(status, 403, "{method} {path} as {me} ({r:?}): {answer}");
                    assert_eq!(answer["error"]["code"], "forbidden", "{answer}");
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, API.len() * 4);
}

#[tokio::test]
async fn tokens_are_narrowed_expire_and_belong_to_their_user() {
    let s = server();
    let operator = user_with_token(&s, "olga", "operator").await;
    let viewer = user_with_token(&s, "vic", "viewer").await;
    let as_ = |t: &str| Some(t.to_string());
    let event = json!({"name": "hello", "type": "bash", "script": "echo hi"});

    // An operator's token narrowed to viewer reads but cannot change.
    let (st, narrowed) = s
        .api_with_token(
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "ro", "role": "viewer"})),
            Some(&operator),
        )
        .await;
    assert_eq!(st, 201, "{narrowed}");
    assert_eq!(
        (narrowed["role"].as_str(), narrowed["user"].as_str()),
        (Some("viewer"), Some("olga"))
    );
    let ro = narrowed["token"].as_str().expect("token").to_string();
    let (st, _) = s
        .api_with_token("GET", "/api/v1/events", None, as_(&ro).as_deref())
        .await;
    assert_eq!(st, 200);
    let (st, e) = s
        .api_with_token(
            "POST",
            "/api/v1/events",
            Some(event.clone()),
            as_(&ro).as_deref(),
        )
        .await;
    assert_eq!(st, 403, "{e}");
    let (st, _) = s
        .api_with_token(
            "POST",
            "/api/v1/events",
            Some(event.clone()),
            Some(&operator),
        )
        .await;
    assert_eq!(st, 201);
    // A narrowed token cannot mint a wider one, nor a token above its user's role.
    let (st, e) = s
        .api_with_token(
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "wider", "role": "operator"})),
            Some(&ro),
        )
        .await;
    assert_eq!(
        (st, e["error"]["field"].as_str()),
        (422, Some("role")),
        "{e}"
    );
    let (st, e) = s
        .api_with_token(
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "wider", "role": "admin"})),
            Some(&operator),
        )
        .await;
    assert_eq!(
        (st, e["error"]["field"].as_str()),
        (422, Some("role")),
        "{e}"
    );
    // Made without a role by a narrowed token, a token gets the narrowed role.
    let (_, t) = s
        .api_with_token(
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "child"})),
            Some(&ro),
        )
        .await;
    assert_eq!(t["role"], "viewer", "{t}");
    // Only an admin makes a token for someone else.
    let (st, e) = s
        .api_with_token(
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "x", "user": "admin"})),
            Some(&operator),
        )
        .await;
    assert_eq!(st, 403, "{e}");

    // Everyone lists their own tokens; the admin everyone's.
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .expect("tokens")
            .iter()
            .map(|t| {
                format!(
                    "{}:{}",
                    t["user"].as_str().unwrap_or(""),
                    t["name"].as_str().unwrap_or("")
                )
            })
            .collect()
    };
    let (_, mine) = s
        .api_with_token("GET", "/api/v1/tokens", None, Some(&viewer))
        .await;
    assert_eq!(names(&mine), ["vic:vic-cli"]);
    let (_, all) = s.api("GET", "/api/v1/tokens", None).await;
    assert!(names(&all).contains(&"olga:ro".to_string()), "{all}");
    assert!(
        names(&all).contains(&"admin:admin (first start)".to_string()),
        "{all}"
    );
    // A viewer cannot revoke someone else's token (it is not theirs to see: 404)...
    let ro_id = narrowed["id"].as_i64().expect("id");
    let (st, _) = s
        .api_with_token(
            "DELETE",
            &format!("/api/v1/tokens/{ro_id}"),
            None,
            Some(&viewer),
        )
        .await;
    assert_eq!(st, 404);
    let (st, _) = s
        .api_with_token("GET", "/api/v1/events", None, Some(&ro))
        .await;
    assert_eq!(st, 200, "the token still works");
    // ...its owner can, and it stops at once.
    let (st, _) = s
        .api_with_token(
            "DELETE",
            &format!("/api/v1/tokens/{ro_id}"),
            None,
            Some(&operator),
        )
        .await;
    assert_eq!(st, 204);
    let (st, _) = s
        .api_with_token("GET", "/api/v1/events", None, Some(&ro))
        .await;
    assert_eq!(st, 401);

    // An expiring token works until it expires, then never again.
    let (st, short) = s
        .api_with_token(
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "short", "expires_in": "2s"})),
            Some(&operator),
        )
        .await;
    assert_eq!(st, 201, "{short}");
    assert!(short["expires_at"].is_string(), "{short}");
    let short = short["token"].as_str().expect("token").to_string();
    let (st, _) = s
        .api_with_token("GET", "/api/v1/jobs", None, Some(&short))
        .await;
    assert_eq!(st, 200);
    // Refused once its expiry (2 s) has passed: polled, with a deadline well past it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (st, _) = s
            .api_with_token("GET", "/api/v1/jobs", None, Some(&short))
            .await;
        if st == 401 {
            break;
        }
        assert_eq!(st, 200);
        assert!(
            std::time::Instant::now() < deadline,
            "an expired token still works"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for bad in ["soon", "0", "20000d"] {
        let (st, e) = s
            .api_with_token(
                "POST",
                "/api/v1/tokens",
                Some(json!({"name": "bad", "expires_in": bad})),
                Some(&operator),
            )
            .await;
        assert_eq!(
            (st, e["error"]["field"].as_str()),
            (422, Some("expires_in")),
            "{bad}: {e}"
        );
    }
    // The runtime API never takes an API token.
    let (st, _) = s.api("GET", "/api/v1/runtime/input", None).await;
    assert_eq!(st, 401);
}

/// Runs the CLI as the holder of `token`, with `env` and `stdin`.
fn cli_as(s: &Server, token: &str, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    let mut cmd = Command::new(cronium_bin());
    cmd.args(args)
        .env("CRONIUM_URL", &s.url)
        .env("CRONIUM_TOKEN", token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run cronium CLI");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("CLI output")
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "failed: {}{}", stdout(o), stderr(o));
    stdout(o)
}

#[tokio::test]
async fn the_cli_manages_users_and_a_disabled_user_stops_at_once() {
    let s = server();
    let admin =
        |args: &[&str], env: &[(&str, &str)], stdin: &str| cli_as(&s, TOKEN, args, env, stdin);
    let out = ok(&admin(
        &[
            "user",
            "add",
            "alice",
            "--role",
            "operator",
            "--password-env",
            "ALICE_PW",
        ],
        &[("ALICE_PW", PASSWORD)],
        "",
    ));
    assert!(out.contains("user alice added (operator)"), "{out}");
    // A password on stdin (no terminal), and one that is too short.
    ok(&admin(
        &["user", "add", "bob", "--role", "viewer"],
        &[],
        "bobs-password\n",
    ));
    let short = admin(&["user", "add", "carl", "--role", "viewer"], &[], "short\n");
    assert!(!short.status.success());
    assert!(stderr(&short).contains("password"), "{}", stderr(&short));
    let bad_role = admin(
        &["user", "add", "dan", "--role", "root"],
        &[],
        "whatever-pw\n",
    );
    assert!(!bad_role.status.success());
    assert!(
        stderr(&bad_role).contains("viewer, operator, admin"),
        "{}",
        stderr(&bad_role)
    );
    let list = ok(&admin(&["user", "list"], &[], ""));
    let line = |name: &str| {
        list.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} not in {list}"))
            .to_string()
    };
    assert!(
        line("alice").contains("operator") && line("alice").contains("active"),
        "{list}"
    );
    assert!(line("bob").contains("viewer"), "{list}");
    assert!(line("admin").contains("admin"), "{list}");

    // A token for alice, narrowed and expiring, made by the admin.
    let made = admin(
        &[
            "token",
            "create",
            "alice-ci",
            "--user",
            "alice",
            "--role",
            "viewer",
            "--expires",
            "30d",
        ],
        &[],
        "",
    );
    let alice_token = ok(&made).trim().to_string();
    assert!(alice_token.starts_with("crn_"), "{alice_token}");
    let tokens = ok(&admin(&["token", "list"], &[], ""));
    let row = tokens
        .lines()
        .find(|l| l.contains("alice-ci"))
        .unwrap_or_else(|| panic!("alice-ci not in {tokens}"));
    assert!(row.contains("alice") && row.contains("viewer"), "{row}");
    assert!(!row.contains("never"), "an expiry is shown: {row}");
    assert!(
        tokens
            .lines()
            .next()
            .unwrap_or_default()
            .contains("LAST USED"),
        "{tokens}"
    );
    // alice's viewer token reads, and is refused a change with the role named.
    ok(&cli_as(&s, &alice_token, &["event", "list"], &[], ""));
    let refused = cli_as(&s, &alice_token, &["user", "list"], &[], "");
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("admin role"),
        "{}",
        stderr(&refused)
    );
    // Her own token list has her token only.
    let hers = ok(&cli_as(
        &s,
        &alice_token,
        &["token", "list", "--json"],
        &[],
        "",
    ));
    let hers: Value = serde_json::from_str(&hers).expect("json");
    assert_eq!(hers.as_array().map(Vec::len), Some(1), "{hers}");

    // A web session of alice's.
    let mut web = Web::new(&s);
    web.login("alice", PASSWORD).await;
    assert_eq!(web.get("/events").await.status, StatusCode::OK);

    ok(&admin(&["user", "set-role", "alice", "viewer"], &[], ""));
    let (_, u) = s.api("GET", "/api/v1/users/alice", None).await;
    assert_eq!(u["role"], "viewer");

    // Disabled: her token and her session stop at the next request, and she cannot log in.
    let out = ok(&admin(&["user", "disable", "alice"], &[], ""));
    assert!(out.contains("disabled"), "{out}");
    let (st, _) = s
        .api_with_token("GET", "/api/v1/events", None, Some(&alice_token))
        .await;
    assert_eq!(st, 401, "a disabled user's token still works");
    let p = web.get("/events").await;
    assert_eq!(
        p.status,
        StatusCode::SEE_OTHER,
        "a disabled user's session still works"
    );
    let p = Web::new(&s).login_with("alice", PASSWORD).await;
    assert_eq!(
        p.status,
        StatusCode::UNAUTHORIZED,
        "a disabled user logged in"
    );
    ok(&admin(&["user", "enable", "alice"], &[], ""));
    let (st, _) = s
        .api_with_token("GET", "/api/v1/events", None, Some(&alice_token))
        .await;
    assert_eq!(st, 200, "enabled again, her (unrevoked) token works again");

    // A new password ends her sessions; the new one logs in, the old one does not.
    let mut web = Web::new(&s);
    web.login("alice", PASSWORD).await;
    ok(&admin(
        &["user", "passwd", "alice"],
        &[],
        "a-brand-new-password\n",
    ));
    assert_eq!(web.get("/events").await.status, StatusCode::SEE_OTHER);
    assert_eq!(
        Web::new(&s).login_with("alice", PASSWORD).await.status,
        StatusCode::UNAUTHORIZED
    );
    Web::new(&s).login("alice", "a-brand-new-password").await;
    // Bob (a viewer) sets his own password, not alice's.
    let bob_token = {
        let (_, t) = s
            .api(
                "POST",
                "/api/v1/tokens",
                Some(json!({"name": "bob", "user": "bob"})),
            )
            .await;
        t["token"].as_str().expect("token").to_string()
    };
    ok(&cli_as(
        &s,
        &bob_token,
        &["user", "passwd", "bob", "--password-env", "PW"],
        &[("PW", "bobs-new-password")],
        "",
    ));
    let other = cli_as(
        &s,
        &bob_token,
        &["user", "passwd", "alice", "--password-env", "PW"],
        &[("PW", "hijacked-password")],
        "",
    );
    assert!(!other.status.success());
    assert!(
        stderr(&other).contains("only an admin"),
        "{}",
        stderr(&other)
    );

    // The last enabled admin cannot be disabled or demoted.
    let last = admin(&["user", "disable", "admin"], &[], "");
    assert!(!last.status.success());
    assert!(
        stderr(&last).contains("last enabled admin"),
        "{}",
        stderr(&last)
    );
    let last = admin(&["user", "set-role", "admin", "operator"], &[], "");
    assert!(
        stderr(&last).contains("last enabled admin"),
        "{}",
        stderr(&last)
    );

    // The audit log has each of these, newest first.
    let log = ok(&admin(
        &["audit", "--actor", "admin", "--action", "user.", "--json"],
        &[],
        "",
    ));
    let log: Value = serde_json::from_str(&log).expect("json");
    let actions: Vec<(&str, &str)> = log
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or(""),
                e["target"].as_str().unwrap_or(""),
            )
        })
        .collect();
    for want in [
        ("user.add", "user alice"),
        ("user.add", "user bob"),
        ("user.set_role", "user alice"),
        ("user.disable", "user alice"),
        ("user.enable", "user alice"),
        ("user.passwd", "user alice"),
        ("user.disable", "user admin"),
    ] {
        assert!(actions.contains(&want), "{want:?} not in {actions:?}");
    }
    let refused = log
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["action"] == "user.disable" && e["target"] == "user admin")
        .expect("refused entry");
    assert!(
        refused["outcome"]
            .as_str()
            .unwrap_or("")
            .starts_with("error:"),
        "{refused}"
    );
    let text = ok(&admin(&["audit", "--since", "1h"], &[], ""));
    assert!(
        text.contains("token.create") && text.contains("login"),
        "{text}"
    );
    let none = ok(&admin(
        &[
            "audit",
            "--since",
            "2000-01-01T00:00:00Z",
            "--actor",
            "nobody-at-all",
        ],
        &[],
        "",
    ));
    assert_eq!(none.lines().count(), 1, "only the header: {none}");
    let bad = admin(&["audit", "--since", "yesterday"], &[], "");
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("--since"), "{}", stderr(&bad));
}

/// A browser-like client: no redirects followed, cookies kept by name.
struct Web {
    http: reqwest::Client,
    base: String,
    cookies: HashMap<String, String>,
}

struct Page {
    status: StatusCode,
    location: String,
    body: String,
}

impl Web {
    fn new(s: &Server) -> Web {
        Web {
            http: reqwest::Client::builder()
                .redirect(Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            base: s.url.clone(),
            cookies: HashMap::new(),
        }
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let cookie = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let req = if cookie.is_empty() {
            req
        } else {
            req.header("cookie", cookie)
        };
        let resp = req.send().await.expect("request");
        for c in resp.headers().get_all("set-cookie") {
            let c = c.to_str().expect("cookie text");
            let (kv, attrs) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = kv.split_once('=').expect("cookie pair");
            if v.is_empty() || attrs.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_string(), v.to_string());
            }
        }
        Page {
            status: resp.status(),
            location: resp
                .headers()
                .get("location")
                .map(|v| v.to_str().unwrap_or_default().to_string())
                .unwrap_or_default(),
            body: resp.text().await.unwrap_or_default(),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let req = self.http.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let req = self.http.post(format!("{}{path}", self.base)).form(form);
        self.send(req).await
    }

    async fn login_with(&mut self, user: &str, password: &str) -> Page {
        let page = self.get("/login").await;
        let csrf = value_of(&page.body, "name=\"csrf\" value=\"");
        self.post(
            "/login",
            &[
                ("csrf", &csrf),
                ("username", user),
                ("password", password),
                ("next", "/"),
            ],
        )
        .await
    }

    async fn login(&mut self, user: &str, password: &str) {
        let p = self.login_with(user, password).await;
        assert_eq!(
            p.status,
            StatusCode::SEE_OTHER,
            "login of {user}: {}",
            p.body
        );
        assert_eq!(p.location, "/");
    }

    async fn csrf(&mut self) -> String {
        let page = self.get("/").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        value_of(&page.body, "data-csrf=\"")
    }
}

fn value_of(html: &str, prefix: &str) -> String {
    let at = html
        .find(prefix)
        .unwrap_or_else(|| panic!("no {prefix} in {html}"));
    let rest = &html[at + prefix.len()..];
    rest[..rest.find('"').expect("end of value")].to_string()
}

#[tokio::test]
async fn every_page_answers_each_role_as_the_table_says_and_shows_only_what_it_allows() {
    let s = server();
    user_with_token(&s, "olga", "operator").await;
    user_with_token(&s, "vic", "viewer").await;
    s.apply_yaml("name: some-event\ntype: bash\nscript: echo hi\n")
        .await;
    let job = s.run_event("some-event", None).await;
    s.wait_job(job, Duration::from_secs(60)).await;

    for (user, role) in [("admin", Admin), ("olga", Operator), ("vic", Viewer)] {
        let mut web = Web::new(&s);
        web.login(user, PASSWORD).await;
        let csrf = web.csrf().await;
        for (method, path, need) in PAGES {
            let p = match *method {
                "GET" => web.get(path).await,
                _ => web.post(path, &[("csrf", &csrf)]).await,
            };
            if role >= *need {
                assert!(
                    p.status != StatusCode::FORBIDDEN
                        && !(p.status == StatusCode::SEE_OTHER && p.location.starts_with("/login")),
                    "{method} {path} as {user}: refused ({}) {}",
                    p.status,
                    p.body
                );
            } else {
                assert_eq!(
                    p.status,
                    StatusCode::FORBIDDEN,
                    "{method} {path} as {user} ({role:?}): {}",
                    p.body
                );
                assert!(p.body.contains("role"), "the page says why: {}", p.body);
            }
        }
        // What the pages show: a viewer gets no button to change or run anything; only an
        // admin sees Users and Audit.
        let event = web.get("/events/some-event").await.body;
        let job_page = web.get(&format!("/jobs/{job}")).await.body;
        let nav = web.get("/").await.body;
        let operates = role >= Operator;
        assert_eq!(event.contains("id=\"run\""), operates, "{user}: run button");
        assert_eq!(
            event.contains("id=\"edit\""),
            operates,
            "{user}: edit button"
        );
        assert_eq!(
            job_page.contains("id=\"rerun\""),
            operates,
            "{user}: rerun button"
        );
        assert_eq!(
            nav.contains("href=\"/new-event\""),
            operates,
            "{user}: new event"
        );
        assert_eq!(
            nav.contains("href=\"/users\""),
            role == Admin,
            "{user}: users"
        );
        assert_eq!(
            nav.contains("href=\"/audit\""),
            role == Admin,
            "{user}: audit"
        );
        // Logging out is everyone's.
        let p = web.post("/logout", &[("csrf", &csrf)]).await;
        assert_eq!(
            (p.status, p.location.as_str()),
            (StatusCode::SEE_OTHER, "/login")
        );
    }
    // The Users page manages users; the Audit page shows what happened.
    let mut web = Web::new(&s);
    web.login("admin", PASSWORD).await;
    let csrf = web.csrf().await;
    let p = web
        .post(
            "/users",
            &[
                ("csrf", &csrf),
                ("name", "paula"),
                ("role", "operator"),
                ("password", "paulas-password"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let p = web
        .post(
            "/users",
            &[
                ("csrf", &csrf),
                ("name", "paula"),
                ("role", "viewer"),
                ("password", "paulas-password"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::CONFLICT, "{}", p.body);
    let p = web
        .post("/users/paula", &[("csrf", &csrf), ("action", "disable")])
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let users = web.get("/users").await.body;
    assert!(users.contains("id=\"user-paula\""), "{users}");
    let audit = web.get("/audit?action=user.").await.body;
    assert!(
        audit.contains("user.disable") && audit.contains("user paula"),
        "{audit}"
    );
    let audit = web.get("/audit?since=never").await;
    assert!(
        audit.body.contains("data-field=\"since\""),
        "{}",
        audit.body
    );
}

async fn audit(s: &Server, query: &str) -> Vec<Value> {
    let (st, log) = s
        .api("GET", &format!("/api/v1/audit?limit=500{query}"), None)
        .await;
    assert_eq!(st, 200, "{log}");
    log.as_array().expect("entries").clone()
}

fn find<'a>(log: &'a [Value], action: &str, target: &str) -> &'a Value {
    log.iter()
        .find(|e| e["action"] == action && e["target"] == target)
        .unwrap_or_else(|| {
            panic!(
                "no {action} {target} in {:?}",
                log.iter()
                    .map(|e| format!("{} {}", e["action"], e["target"]))
                    .collect::<Vec<_>>()
            )
        })
}

async fn every_change_run_and_login_is_audited_without_secrets(s: Server) {
    const SECRET: &str = "s3cr3t-value-7f1c";
    const PLAIN: &str = "plain-value-93ab";
    const SERVER_PASSWORD: &str = "server-pw-5d2e";
    const USER_PASSWORD: &str = "new-user-pw-8c41";
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let ev = |script: &str| json!({"type": "bash", "script": script});
    let call = |method: &'static str, path: String, body: Option<Value>, want: u16| {
        let s = &s;
        async move {
            let (st, v) = s.api(method, &path, body).await;
            assert_eq!(st, want, "{method} {path}: {v}");
            v
        }
    };
    call(
        "PUT",
        "/api/v1/events/alpha".into(),
        Some(ev("echo one")),
        200,
    )
    .await;
    call(
        "PUT",
        "/api/v1/events/alpha".into(),
        Some(ev("echo two")),
        200,
    )
    .await;
    // Unchanged: no entry.
    call(
        "PUT",
        "/api/v1/events/alpha".into(),
        Some(ev("echo two")),
        200,
    )
    .await;
    let run = call("POST", "/api/v1/events/alpha/run".into(), None, 201).await;
    call(
        "PUT",
        "/api/v1/events/slow".into(),
        Some(ev("sleep 30")),
        200,
    )
    .await;
    let slow = call("POST", "/api/v1/events/slow/run".into(), None, 201).await;
    let slow_id = slow["id"].as_i64().expect("id");
    call("POST", format!("/api/v1/jobs/{slow_id}/cancel"), None, 200).await;
    call(
        "PUT",
        "/api/v1/variables/api-key".into(),
        Some(json!({"value": SECRET, "secret": true})),
        200,
    )
    .await;
    call(
        "PUT",
        "/api/v1/variables/greeting".into(),
        Some(json!({"value": PLAIN})),
        200,
    )
    .await;
    call("DELETE", "/api/v1/variables/greeting".into(), None, 204).await;
    call(
        "POST",
        "/api/v1/servers".into(),
        Some(
            json!({"name": "nowhere", "host": "127.0.0.1", "port": closed_port,
                    "user": "nobody", "password": SERVER_PASSWORD}),
        ),
        201,
    )
    .await;
    call(
        "POST",
        "/api/v1/servers/nowhere/accept-key".into(),
        Some(json!({"host_key": HOST_KEY})),
        200,
    )
    .await;
    call("DELETE", "/api/v1/servers/nowhere".into(), None, 204).await;
    call(
        "PUT",
        "/api/v1/workflows/flow".into(),
        Some(json!({"nodes": [{"id": "a", "event": "alpha"}]})),
        200,
    )
    .await;
    // A directory apply: one entry per object, the pruned one included.
    call(
        "POST",
        "/api/v1/apply".into(),
        Some(json!({"kind": "events", "prune": true, "items": [
            {"name": "alpha", "type": "bash", "script": "echo three"},
            {"name": "beta", "type": "bash", "script": "echo b"},
        ]})),
        200,
    )
    .await;
    call("POST", "/api/v1/prune".into(), Some(json!({})), 200).await;
    call(
        "POST",
        "/api/v1/users".into(),
        Some(json!({"name": "nina", "role": "viewer", "password": USER_PASSWORD})),
        201,
    )
    .await;
    let tok = call(
        "POST",
        "/api/v1/tokens".into(),
        Some(json!({"name": "ci"})),
        201,
    )
    .await;
    let tok_value = tok["token"].as_str().expect("token").to_string();
    // Logins, good and bad (with the name tried).
    let mut web = Web::new(&s);
    web.login("nina", USER_PASSWORD).await;
    let p = Web::new(&s).login_with("mallory", "guess-123").await;
    assert_eq!(p.status, StatusCode::UNAUTHORIZED);
    let p = Web::new(&s).login_with("nina", "wrong-password").await;
    assert_eq!(p.status, StatusCode::UNAUTHORIZED);

    let log = audit(&s, "").await;
    let created = find(&log, "event.apply", "event alpha");
    // Newest first: the first match is the directory apply's update.
    assert_eq!(
        created["after"]["spec"]["script"], "echo three",
        "{created}"
    );
    let applies: Vec<&Value> = log
        .iter()
        .filter(|e| e["action"] == "event.apply" && e["target"] == "event alpha")
        .collect();
    assert_eq!(
        applies.len(),
        3,
        "create, update, batch update; the unchanged apply is not one"
    );
    let update = applies[1];
    assert_eq!(
        (
            update["before"]["version"].as_i64(),
            update["after"]["version"].as_i64()
        ),
        (Some(1), Some(2)),
        "{update}"
    );
    assert_eq!(update["before"]["spec"]["script"], "echo one");
    assert_eq!(update["after"]["spec"]["script"], "echo two");
    assert!(
        applies[2]["before"].is_null(),
        "a creation has no before: {}",
        applies[2]
    );
    assert_eq!(update["actor"], "admin");
    assert!(update["token_id"].is_i64(), "{update}");
    assert_eq!(update["source"], "127.0.0.1");
    assert_eq!(update["outcome"], "ok");
    let r = find(&log, "job.run", "event alpha");
    assert_eq!(r["after"]["job"], run["id"], "{r}");
    let c = find(&log, "job.cancel", &format!("job {slow_id}"));
    assert!(
        c["before"]["status"] == "queued" || c["before"]["status"] == "running",
        "{c}"
    );
    assert_eq!(c["after"]["event"], "slow", "{c}");
    let v = find(&log, "variable.set", "variable api-key");
    assert_eq!(v["after"], json!({"name": "api-key", "secret": true}));
    find(&log, "variable.delete", "variable greeting");
    let add = find(&log, "server.add", "server nowhere");
    assert_eq!(add["after"]["auth"], "password", "{add}");
    let accept = find(&log, "server.accept_key", "server nowhere");
    assert_eq!(accept["after"]["host_key"], HOST_KEY, "{accept}");
    assert!(accept["before"]["host_key"].is_null(), "{accept}");
    find(&log, "server.remove", "server nowhere");
    find(&log, "workflow.apply", "workflow flow");
    find(&log, "event.apply", "event beta");
    let pruned = find(&log, "event.delete", "event slow");
    assert_eq!(pruned["before"]["spec"]["script"], "sleep 30", "{pruned}");
    find(&log, "prune", "retention");
    find(&log, "user.add", "user nina");
    let t = find(&log, "token.create", &format!("token {}", tok["id"]));
    assert_eq!(t["after"]["name"], "ci");
    let login = find(&log, "login", "user nina");
    assert_eq!(login["actor"], "nina");
    assert!(login["session_id"].is_string(), "{login}");
    let failed = find(&log, "login.failed", "user mallory");
    assert_eq!(
        (failed["actor"].as_str(), failed["source"].as_str()),
        (Some("-"), Some("127.0.0.1"))
    );
    assert!(
        failed["outcome"]
            .as_str()
            .unwrap_or("")
            .contains("no such user"),
        "{failed}"
    );
    let wrong = find(&log, "login.failed", "user nina");
    assert!(
        wrong["outcome"]
            .as_str()
            .unwrap_or("")
            .contains("wrong password"),
        "{wrong}"
    );
    // The first start is in the log too.
    find(&log, "user.add", "user admin");

    // Filters and keyset pages.
    let only = audit(&s, "&action=variable.").await;
    assert!(only
        .iter()
        .all(|e| e["action"].as_str().unwrap_or("").starts_with("variable.")));
    assert_eq!(only.len(), 3);
    let by_nina = audit(&s, "&actor=nina").await;
    assert_eq!(by_nina.len(), 1, "{by_nina:?}");
    let page1: Vec<i64> = {
        let (_, v) = s.api("GET", "/api/v1/audit?limit=5", None).await;
        v.as_array()
            .expect("page")
            .iter()
            .map(|e| e["id"].as_i64().expect("id"))
            .collect()
    };
    let last = page1[4];
    let (_, next) = s
        .api("GET", &format!("/api/v1/audit?limit=5&before={last}"), None)
        .await;
    let next: Vec<i64> = next
        .as_array()
        .expect("page")
        .iter()
        .map(|e| e["id"].as_i64().expect("id"))
        .collect();
    assert!(
        next.iter().all(|id| *id < last) && next.len() == 5,
        "{page1:?} then {next:?}"
    );
    let (st, e) = s.api("GET", "/api/v1/audit?since=yesterday", None).await;
    assert_eq!(
        (st, e["error"]["field"].as_str()),
        (422, Some("since")),
        "{e}"
    );
    let (st, e) = s.api("GET", "/api/v1/audit?limit=0", None).await;
    assert_eq!(
        (st, e["error"]["field"].as_str()),
        (422, Some("limit")),
        "{e}"
    );

    // No secret anywhere in the log.
    let (_, whole) = s.api("GET", "/api/v1/audit?limit=500", None).await;
    let text = whole.to_string();
    for secret in [
        SECRET,
        PLAIN,
        SERVER_PASSWORD,
        USER_PASSWORD,
        "guess-123",
        "wrong-password",
        tok_value.as_str(),
        PASSWORD,
    ] {
        assert!(!text.contains(secret), "`{secret}` is in the audit log");
    }
    assert!(
        !text.contains("argon2"),
        "a password hash is in the audit log"
    );
}

#[tokio::test]
async fn every_change_run_and_login_is_audited_without_secrets_on_sqlite() {
    let s = server();
    every_change_run_and_login_is_audited_without_secrets(s).await;
}

#[tokio::test]
async fn every_change_run_and_login_is_audited_without_secrets_on_postgres() {
    let db = fresh_pg_database().await;
    let s = server_on(Some(db));
    every_change_run_and_login_is_audited_without_secrets(s).await;
}
