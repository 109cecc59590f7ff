//! The web UI over plain HTTP against the real `cronium serve`: what guards the pages (a
//! login on every page, CSRF on every state change, failed-login delays, session expiry,
//! logout and id rotation, a cookie that never authenticates the API) and what every page
//! sends (Content-Security-Policy, no inline script, hashed immutable assets); the live job
//! statuses' stream (filters respected, jobs moving between the dashboard's blocks) and the
//! variable writes of a job; the workflow pages (the run form's refusals at the field, the
//! server-drawn graph with a status class per node, the live stream that ends with the run,
//! retry, cancel). What needs a real browser (the editor, the live log, cancel, a graph
//! changing colour) is in `browser.rs`.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use reqwest::redirect::Policy;
use reqwest::StatusCode;
use support::*;

const PASSWORD: &str = "correct-horse-battery-staple";

fn server(args: &[&str]) -> Server {
    Server::start_with(ServerOpts {
        env: vec![("CRONIUM_ADMIN_PASSWORD".into(), PASSWORD.into())],
        args: args.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    })
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
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Web {
    fn new(s: &Server) -> Web {
        Web {
            http: reqwest::Client::builder()
                .redirect(Policy::none())
                .build()
                .expect("client"),
            base: s.url.clone(),
            cookies: HashMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let req = if self.cookies.is_empty() {
            req
        } else {
            req.header("cookie", self.cookie_header())
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
            headers: resp.headers().clone(),
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

    /// Logs in with the session cookie the browser had, if any, sent along (a logged-in
    /// browser is sent on from the form, so the form is fetched without it).
    async fn login_with(&mut self, user: &str, password: &str) -> Page {
        let had = self.cookies.remove("cronium_session");
        let page = self.get("/login").await;
        if let Some(c) = had {
            self.cookies.insert("cronium_session".into(), c);
        }
        let csrf = field(&page.body, "csrf");
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

    async fn login(&mut self) {
        let p = self.login_with("admin", PASSWORD).await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "login: {}", p.body);
        assert_eq!(p.location, "/");
    }

    /// The CSRF token of the session, from a page's layout.
    async fn csrf(&mut self) -> String {
        let page = self.get("/").await;
        assert_eq!(page.status, StatusCode::OK);
        attr(&page.body, "data-csrf")
    }
}

/// The value of the hidden input `name`.
fn field(html: &str, name: &str) -> String {
    let at = html
        .find(&format!("name=\"{name}\" value=\""))
        .unwrap_or_else(|| panic!("no field {name} in {html}"));
    let rest = &html[at + name.len() + 15..];
    rest[..rest.find('"').expect("end of value")].to_string()
}

fn attr(html: &str, name: &str) -> String {
    let at = html
        .find(&format!("{name}=\""))
        .unwrap_or_else(|| panic!("no {name} in {html}"));
    let rest = &html[at + name.len() + 2..];
    rest[..rest.find('"').expect("end of attribute")].to_string()
}

const PAGES: &[&str] = &[
    "/",
    "/events",
    "/new-event",
    "/new-event?type=python",
    "/events/some-event",
    "/events/some-event/edit",
    "/jobs",
    "/jobs?status=failed",
    "/jobs/1",
    "/jobs/1/log/lines?before=10",
    "/jobs/1/log/stream",
    "/jobs/1/log.txt",
    "/jobs/stream",
    "/jobs/stream?view=dashboard",
    "/servers",
    "/servers/web1",
    "/agents",
    "/variables",
    "/tokens",
    "/workflows",
    "/workflows?q=flow",
    "/workflows/some-flow",
    "/workflow-runs/1",
    "/workflow-runs/1/stream",
    "/workflow-runs/1/log/stream",
];

const FORMS: &[&str] = &[
    "/new-event",
    "/events/some-event/edit",
    "/events/some-event/run",
    "/events/some-event/delete",
    "/jobs/1/cancel",
    "/jobs/1/rerun",
    "/jobs/1/retry-failed",
    "/variables",
    "/variables/v/delete",
    "/tokens",
    "/tokens/1/revoke",
    "/agents/tokens",
    "/agents/tokens/t/revoke",
    "/workflows/some-flow/run",
    "/workflow-runs/1/retry",
    "/workflow-runs/1/cancel",
    "/logout",
];

#[tokio::test]
async fn no_page_is_reachable_without_a_login() {
    let s = server(&[]);
    s.apply_yaml("name: some-event\ntype: bash\nscript: echo hi\n")
        .await;
    let mut web = Web::new(&s);
    for path in PAGES {
        let p = web.get(path).await;
        assert_eq!(
            p.status,
            StatusCode::SEE_OTHER,
            "{path} answered without a login"
        );
        let want = if *path == "/" {
            "/login".to_string()
        } else {
            format!("/login?next={}", urlencode(path))
        };
        assert_eq!(p.location, want, "{path}");
        assert!(!p.body.contains("some-event"), "{path} leaked content");
    }
    for path in FORMS {
        let p = web
            .post(
                path,
                &[("csrf", "x"), ("yaml", "name: z\ntype: bash\nscript: x\n")],
            )
            .await;
        assert_eq!(
            p.status,
            StatusCode::SEE_OTHER,
            "POST {path} without a login"
        );
        assert!(
            p.location.starts_with("/login"),
            "POST {path}: {}",
            p.location
        );
    }
    // Nothing was created, run or deleted.
    let (_, events) = s.api("GET", "/api/v1/events", None).await;
    assert_eq!(events.as_array().map(Vec::len), Some(1));
    let (_, jobs) = s.api("GET", "/api/v1/jobs", None).await;
    assert_eq!(jobs.as_array().map(Vec::len), Some(0));

    // After a login, `next` brings the user back to the page asked for.
    let login = web.get("/login?next=%2Fjobs%3Fstatus%3Dfailed").await;
    let csrf = field(&login.body, "csrf");
    assert_eq!(field(&login.body, "next"), "/jobs?status=failed");
    let p = web
        .post(
            "/login",
            &[
                ("csrf", &csrf),
                ("username", "admin"),
                ("password", PASSWORD),
                ("next", "/jobs?status=failed"),
            ],
        )
        .await;
    assert_eq!(p.location, "/jobs?status=failed");
    // ...but never to another site.
    let login = web.get("/login").await;
    assert_eq!(
        login.status,
        StatusCode::SEE_OTHER,
        "logged in: /login goes on"
    );
}

fn urlencode(s: &str) -> String {
    s.replace('%', "%25")
        .replace('/', "%2F")
        .replace('?', "%3F")
        .replace('=', "%3D")
        .replace('&', "%26")
}

#[tokio::test]
async fn a_form_posted_without_its_csrf_token_is_refused() {
    let s = server(&[]);
    let mut web = Web::new(&s);
    web.login().await;
    let csrf = web.csrf().await;
    let yaml = "name: made-here\ntype: bash\nscript: echo hi\n";

    let p = web.post("/new-event", &[("yaml", yaml)]).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN, "{}", p.body);
    assert!(p.body.contains("security token"), "{}", p.body);
    let p = web
        .post("/new-event", &[("yaml", yaml), ("csrf", "0000")])
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    // The real token with its last character changed (to one it is not).
    let last = if csrf.ends_with('0') { '1' } else { '0' };
    let wrong = format!("{}{last}", &csrf[..csrf.len() - 1]);
    let p = web
        .post("/new-event", &[("yaml", yaml), ("csrf", &wrong)])
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    // A JSON body cannot carry the token past the check either.
    let req = web
        .http
        .post(format!("{}/new-event", web.base))
        .header("content-type", "application/json")
        .body(format!("{{\"yaml\": \"x\", \"csrf\": \"{csrf}\"}}"));
    assert_eq!(web.send(req).await.status, StatusCode::FORBIDDEN);
    let (status, _) = s.api("GET", "/api/v1/events/made-here", None).await;
    assert_eq!(status, 404, "a refused form changed nothing");

    // Logout is a state change too.
    let p = web.post("/logout", &[]).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    assert_eq!(web.get("/").await.status, StatusCode::OK, "still logged in");

    // With the token (form field or header), the same request works.
    let p = web
        .post("/new-event", &[("yaml", yaml), ("csrf", &csrf)])
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    assert_eq!(p.location, "/events/made-here?done=created");
    let req = web
        .http
        .post(format!("{}/events/made-here/run", web.base))
        .header("x-csrf-token", &csrf)
        .form(&[("input", "")]);
    let p = web.send(req).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    assert!(p.location.starts_with("/jobs/"), "{}", p.location);

    // The login form has its own token: a cross-site login post is refused.
    let mut other = Web::new(&s);
    let p = other
        .post(
            "/login",
            &[
                ("csrf", "forged"),
                ("username", "admin"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    assert!(!other.cookies.contains_key("cronium_session"));
}

#[tokio::test]
async fn the_session_cookie_never_authenticates_the_api() {
    let s = server(&[]);
    let mut web = Web::new(&s);
    web.login().await;
    let csrf = web.csrf().await;
    let cookie = web.cookie_header();
    for (method, path) in [
        ("GET", "/api/v1/events"),
        ("POST", "/api/v1/events/x/run"),
        ("POST", "/api/v1/tokens"),
        ("GET", "/metrics"),
    ] {
        let resp = web
            .http
            .request(method.parse().expect("method"), format!("{}{path}", s.url))
            .header("cookie", &cookie)
            .header("x-csrf-token", &csrf)
            .header("content-type", "application/json")
            .body("{\"name\": \"stolen\"}")
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
    }
    let (_, tokens) = s.api("GET", "/api/v1/tokens", None).await;
    assert_eq!(
        tokens.as_array().map(Vec::len),
        Some(1),
        "no token was made"
    );
}

#[tokio::test]
async fn failed_logins_are_delayed_more_and_more() {
    let s = server(&[]);
    let mut web = Web::new(&s);
    for i in 0..3 {
        let p = web.login_with("admin", "wrong").await;
        assert_eq!(p.status, StatusCode::UNAUTHORIZED, "attempt {i}");
        assert!(p.body.contains("Wrong user name or password"));
    }
    // The fourth attempt comes too soon: refused without looking at the password.
    let p = web.login_with("admin", PASSWORD).await;
    assert_eq!(p.status, StatusCode::TOO_MANY_REQUESTS, "{}", p.body);
    assert!(p.body.contains("Too many failed logins"), "{}", p.body);
    assert!(!web.cookies.contains_key("cronium_session"));
    // A user name that does not exist is counted the same way (and answers alike).
    let p = web.login_with("nobody", "x").await;
    assert_eq!(
        p.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the address is delayed too"
    );

    // After the delay (1 s after the third failure), the right password works and clears
    // the counters.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let p = web.login_with("admin", PASSWORD).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let p = web.login_with("admin", "wrong").await;
    assert_eq!(
        p.status,
        StatusCode::UNAUTHORIZED,
        "counting starts again from zero"
    );
}

#[tokio::test]
async fn sessions_end_at_logout_idle_expiry_and_next_login() {
    let s = server(&["--session-idle", "2s"]);
    let mut web = Web::new(&s);
    web.login().await;
    let first = web.cookies["cronium_session"].clone();
    assert_eq!(web.get("/events").await.status, StatusCode::OK);

    // A new login gets a new id, and the session the browser had before is ended.
    web.login().await;
    let second = web.cookies["cronium_session"].clone();
    assert_ne!(first, second);
    let mut old = Web::new(&s);
    old.cookies.insert("cronium_session".into(), first.clone());
    assert_eq!(
        old.get("/events").await.status,
        StatusCode::SEE_OTHER,
        "old id still works"
    );

    // A forged secret for a real id is not a session.
    let (id, _) = second.split_once('.').expect("id.secret");
    old.cookies
        .insert("cronium_session".into(), format!("{id}.{}", "0".repeat(64)));
    assert_eq!(old.get("/events").await.status, StatusCode::SEE_OTHER);

    // Unused for longer than --session-idle: the session is over.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let p = web.get("/events").await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(p.location, "/login?next=%2Fevents");

    // Logout ends it at once, on the server, not just in the browser.
    web.login().await;
    let kept = web.cookies["cronium_session"].clone();
    let csrf = web.csrf().await;
    let p = web.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(p.location, "/login");
    assert!(
        !web.cookies.contains_key("cronium_session"),
        "cookie cleared"
    );
    web.cookies.insert("cronium_session".into(), kept);
    assert_eq!(
        web.get("/").await.status,
        StatusCode::SEE_OTHER,
        "the row is gone"
    );
}

#[tokio::test]
async fn cookies_are_http_only_same_site_and_secure_when_asked() {
    for (args, secure) in [(&[][..], false), (&["--secure-cookies"][..], true)] {
        let s = server(args);
        let web = Web::new(&s);
        let page = web
            .http
            .get(format!("{}/login", s.url))
            .send()
            .await
            .expect("login page");
        let login_cookie = page.headers()["set-cookie"]
            .to_str()
            .expect("text")
            .to_string();
        let body = page.text().await.expect("body");
        let csrf = field(&body, "csrf");
        let resp = web
            .http
            .post(format!("{}/login", s.url))
            .header("cookie", login_cookie.split(';').next().expect("pair"))
            .form(&[
                ("csrf", csrf.as_str()),
                ("username", "admin"),
                ("password", PASSWORD),
            ])
            .send()
            .await
            .expect("login");
        let session = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().expect("text").to_string())
            .find(|c| c.starts_with("cronium_session="))
            .expect("a session cookie");
        assert!(session.contains("HttpOnly"), "{session}");
        assert!(session.contains("SameSite=Lax"), "{session}");
        assert!(session.contains("Path=/"), "{session}");
        assert_eq!(session.contains("Secure"), secure, "{session}");
    }
}

#[tokio::test]
async fn pages_send_a_strict_csp_no_inline_script_and_hashed_immutable_assets() {
    let s = server(&[]);
    s.apply_yaml("name: some-event\ntype: bash\nscript: echo '<script>alert(1)</script>'\n")
        .await;
    let job = s.run_event("some-event", None).await;
    s.wait_job(job, Duration::from_secs(30)).await;
    let mut web = Web::new(&s);
    web.login().await;
    let mut assets = std::collections::BTreeSet::new();
    for path in [
        "/",
        "/events",
        "/events/some-event",
        "/events/some-event/edit",
        "/new-event",
        "/jobs",
        &format!("/jobs/{job}"),
        "/servers",
        "/agents",
        "/variables",
        "/tokens",
    ] {
        let p = web.get(path).await;
        assert_eq!(p.status, StatusCode::OK, "{path}: {}", p.body);
        let csp = p.headers["content-security-policy"].to_str().expect("csp");
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"));
        assert_eq!(p.headers["cache-control"], "no-store", "{path}");
        // Every script has a src; no handler attributes; the script's output is escaped.
        for (i, _) in p.body.match_indices("<script") {
            assert!(
                p.body[i..].starts_with("<script src=\"/assets/app."),
                "{path}: inline script"
            );
        }
        assert!(
            !p.body.contains(" onclick=") && !p.body.contains(" onload="),
            "{path}"
        );
        assert!(
            !p.body.contains("<script>alert(1)"),
            "{path}: unescaped output"
        );
        for (i, _) in p.body.match_indices("\"/assets/") {
            let rest = &p.body[i + 1..];
            assets.insert(rest[..rest.find('"').expect("end")].to_string());
        }
    }
    assert_eq!(assets.len(), 3, "{assets:?}");
    for a in &assets {
        let p = web.get(a).await;
        assert_eq!(p.status, StatusCode::OK, "{a}");
        assert_eq!(
            p.headers["cache-control"],
            "public, max-age=31536000, immutable"
        );
        // The name carries the content's hash: a stale name is not served.
        let stale = a.replacen(".", ".000000000000x", 1);
        assert_eq!(
            web.get(&stale).await.status,
            StatusCode::NOT_FOUND,
            "{stale}"
        );
    }
}

#[tokio::test]
async fn secret_variables_are_write_only_and_a_new_token_is_shown_once() {
    let s = server(&[]);
    let mut web = Web::new(&s);
    web.login().await;
    let csrf = web.csrf().await;
    let p = web
        .post(
            "/variables",
            &[
                ("csrf", &csrf),
                ("name", "db-password"),
                ("value", "hunter2-very-secret"),
                ("secret", "1"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let p = web
        .post(
            "/variables",
            &[("csrf", &csrf), ("name", "region"), ("value", "\"eu\"")],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    let page = web.get("/variables").await;
    assert!(page.body.contains("db-password") && page.body.contains("secret"));
    assert!(
        !page.body.contains("hunter2-very-secret"),
        "a secret is never shown"
    );
    assert!(page.body.contains("&#34;eu&#34;"), "a plain value is");
    let (_, v) = s.api("GET", "/api/v1/variables/db-password", None).await;
    assert_eq!(
        (v["secret"].as_bool(), v["value"].is_null()),
        (Some(true), true)
    );
    // A bad name is refused at its field; a refused secret is not sent back to the page.
    let p = web
        .post(
            "/variables",
            &[
                ("csrf", &csrf),
                ("name", "bad name"),
                ("value", "another-secret-value"),
                ("secret", "1"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(p.body.contains("data-field=\"name\""), "{}", p.body);
    assert!(!p.body.contains("another-secret-value"));

    let p = web
        .post("/tokens", &[("csrf", &csrf), ("name", "ci-deploy")])
        .await;
    assert_eq!(p.status, StatusCode::CREATED, "{}", p.body);
    let value = p
        .body
        .split("id=\"new-token\">")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .expect("the token")
        .to_string();
    assert!(value.starts_with("crn_"), "{value}");
    // It works for the API...
    let (status, _) = s
        .api_with_token("GET", "/api/v1/events", None, Some(&value))
        .await;
    assert_eq!(status, 200);
    // ...and is never shown again.
    let page = web.get("/tokens").await;
    assert!(page.body.contains("ci-deploy") && !page.body.contains(&value));
    let p = web
        .post("/tokens", &[("csrf", &csrf), ("name", "  ")])
        .await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        p.body.contains("name: must be 1 to 100 characters"),
        "{}",
        p.body
    );
}

/// A Server-Sent Events reader over a page's session, which applies the `view` events of
/// `/jobs/stream` to a model of the page: each block's row keys and each row's HTML.
struct Live {
    resp: reqwest::Response,
    buf: String,
    blocks: HashMap<String, Vec<String>>,
    rows: HashMap<String, HashMap<String, String>>,
    /// Every key any `view` event ever named, per block.
    ever: HashMap<String, Vec<String>>,
}

impl Live {
    async fn open(web: &Web, path: &str) -> Live {
        let resp = web
            .http
            .get(format!("{}{path}", web.base))
            .header("cookie", web.cookie_header())
            .header("accept", "text/event-stream")
            .send()
            .await
            .expect("stream");
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/event-stream"));
        Live {
            resp,
            buf: String::new(),
            blocks: HashMap::new(),
            rows: HashMap::new(),
            ever: HashMap::new(),
        }
    }

    /// The next event (name, data), or None after `within`.
    async fn next(&mut self, within: Duration) -> Option<(String, serde_json::Value)> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(i) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..i + 2).collect();
                let mut event = "message".to_string();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                let v = serde_json::from_str(&data).expect("event data is JSON");
                if event == "view" {
                    self.apply(&v);
                }
                return Some((event, v));
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .ok()?
                .expect("stream read")?;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    fn apply(&mut self, v: &serde_json::Value) {
        let view = v["view"].as_str().expect("view").to_string();
        let keys: Vec<String> = v["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| k.as_str().expect("key").to_string())
            .collect();
        let rows = self.rows.entry(view.clone()).or_default();
        for (k, html) in v["rows"].as_object().expect("rows") {
            rows.insert(k.clone(), html.as_str().expect("html").to_string());
        }
        rows.retain(|k, _| keys.contains(k));
        self.ever
            .entry(view.clone())
            .or_default()
            .extend(keys.clone());
        self.blocks.insert(view, keys);
    }

    /// The HTML of job `id`'s row in block `view`, if the page shows it.
    fn row(&self, view: &str, id: i64) -> Option<&str> {
        self.rows
            .get(view)
            .and_then(|r| r.get(&id.to_string()))
            .map(String::as_str)
    }

    /// Reads events until `f` holds for the model; panics with `what` after `within`.
    async fn until(&mut self, what: &str, within: Duration, f: impl Fn(&Live) -> bool) {
        let deadline = tokio::time::Instant::now() + within;
        while !f(self) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            assert!(
                !left.is_zero() && self.next(left).await.is_some(),
                "timed out waiting for {what}; the page shows {:?}",
                self.blocks
            );
        }
    }
}

/// The dashboard's and the job list's live stream: a job that starts appears under running
/// and in the list, one that ends leaves running and shows its final status, a failure joins
/// the recent failures; a `status=failed` list never gains the running job; each stream's
/// first event is the whole view (a reconnected page resyncs); a filter that does not parse is
/// refused naming it.
#[tokio::test]
async fn live_statuses_move_jobs_between_blocks_and_respect_the_list_filters() {
    let s = server(&[]);
    let dir = shared_tempdir();
    let marker = dir.path().join("go");
    s.apply_yaml(&format!(
        "name: slow\ntype: bash\nscript: |\n  while [ ! -e {} ]; do sleep 0.05; done\n  echo done\n",
        marker.display()
    ))
    .await;
    s.apply_yaml("name: breaks\ntype: bash\nscript: exit 3\n")
        .await;
    let mut web = Web::new(&s);
    web.login().await;

    let bad = web.get("/jobs/stream?status=bogus").await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.body.contains("status"), "{}", bad.body);
    let bad = web.get("/jobs/stream?view=everything").await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.body.contains("view"), "{}", bad.body);

    let mut dash = Live::open(&web, "/jobs/stream?view=dashboard").await;
    let mut all = Live::open(&web, "/jobs/stream").await;
    let mut failed = Live::open(&web, "/jobs/stream?status=failed").await;
    let quick = Duration::from_secs(5);
    dash.until("the whole dashboard first", quick, |l| {
        ["running", "failures", "next"]
            .iter()
            .all(|b| l.blocks.get(*b).is_some_and(Vec::is_empty))
    })
    .await;
    all.until("the whole list first", quick, |l| {
        l.blocks.get("list").is_some_and(Vec::is_empty)
    })
    .await;
    failed
        .until("the failed list first", quick, |l| {
            l.blocks.contains_key("list")
        })
        .await;

    let slow = s.run_event("slow", None).await;
    let within = Duration::from_secs(30);
    dash.until("the job under running", within, |l| {
        l.row("running", slow)
            .is_some_and(|h| h.contains("badge running") && h.contains("/jobs/"))
    })
    .await;
    all.until("the running job in the list", within, |l| {
        l.row("list", slow)
            .is_some_and(|h| h.contains("badge running"))
    })
    .await;

    std::fs::write(&marker, "go").expect("marker");
    dash.until("the job to leave running", within, |l| {
        l.blocks.get("running").is_some_and(Vec::is_empty)
    })
    .await;
    all.until("its final status in the list", within, |l| {
        l.row("list", slow)
            .is_some_and(|h| h.contains("badge succeeded") && h.contains("exit 0"))
    })
    .await;

    let broken = s.run_event("breaks", None).await;
    dash.until("the failure under recent failures", within, |l| {
        l.row("failures", broken)
            .is_some_and(|h| h.contains("badge failed") && h.contains("exit 3"))
    })
    .await;
    failed
        .until("the failure in the failed list", within, |l| {
            l.row("list", broken)
                .is_some_and(|h| h.contains("badge failed"))
        })
        .await;
    all.until("both jobs, newest first", within, |l| {
        l.blocks.get("list") == Some(&vec![broken.to_string(), slow.to_string()])
    })
    .await;
    assert!(
        !failed.ever["list"].contains(&slow.to_string()),
        "a status=failed list was sent the job that ran and succeeded: {:?}",
        failed.ever
    );
    // The no-script page is complete at load time, and names its stream with its filters.
    let page = web.get("/jobs?status=failed").await;
    assert!(page.body.contains(&format!("data-job=\"{broken}\"")));
    assert!(!page.body.contains(&format!("data-job=\"{slow}\"")));
    assert!(
        page.body
            .contains("data-live-jobs=\"/jobs/stream?status=failed\""),
        "{}",
        page.body
    );
}

/// A job's page and the API list the variables the job wrote (name, secret or not, by which
/// execution, when), never their values.
#[tokio::test]
async fn a_jobs_variable_writes_are_shown_without_their_values() {
    let s = server(&[]);
    let (status, _) = s
        .api(
            "PUT",
            "/api/v1/variables/api-key",
            Some(serde_json::json!({"value": "old-secret-value-1", "secret": true})),
        )
        .await;
    assert_eq!(status, 200);
    s.apply_yaml("name: writer\ntype: bash\nscript: |\n  cronium.setVariable counter 41\n  cronium.setVariable api-key rotated-secret-value-2\n  echo wrote\n").await;
    let id = s.run_event("writer", None).await;
    let job = s.wait_job(id, Duration::from_secs(60)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let writes = job["variable_writes"].as_array().expect("variable_writes");
    let seen: Vec<(&str, bool)> = writes
        .iter()
        .map(|w| (w["name"].as_str().unwrap_or_default(), w["secret"] == true))
        .collect();
    assert_eq!(seen, [("counter", false), ("api-key", true)], "{job}");
    let exec = job["executions"][0]["id"].as_i64().expect("execution");
    assert!(writes.iter().all(|w| w["execution_id"] == exec), "{job}");
    assert!(writes.iter().all(|w| w.get("value").is_none()), "{job}");
    let (_, v) = s.api("GET", "/api/v1/variables/counter", None).await;
    assert_eq!(v["value"], 41);

    let mut web = Web::new(&s);
    web.login().await;
    let page = web.get(&format!("/jobs/{id}")).await;
    assert_eq!(page.status, StatusCode::OK);
    let section = page
        .body
        .split("id=\"writes-h\"")
        .nth(1)
        .expect("the variable writes section");
    let section = &section[..section.find("</section>").expect("its end")];
    assert!(
        section.contains(">counter<") && section.contains(">api-key<"),
        "{section}"
    );
    assert!(section.contains("badge secret"), "{section}");
    assert!(section.contains("attempt 1"), "{section}");
    assert!(
        !page.body.contains("rotated-secret-value-2"),
        "a secret value on the page"
    );
    assert!(!page.body.contains("old-secret-value-1"));
    // Timings per execution: the Took column, the whole execution's wall time.
    assert!(page.body.contains(">Took</abbr></th>"));
}

/// A job's page shows what each execution used: CPU time (its split in the title) and the
/// peak memory of the largest process.
#[tokio::test]
async fn a_jobs_page_shows_what_each_execution_used() {
    let s = server(&[]);
    s.apply_yaml("name: hungry\ntype: python\nscript: |\n  import time\n  block = b'x' * (50 << 20)\n  start = time.process_time()\n  while time.process_time() - start < 0.2:\n      pass\n").await;
    let id = s.run_event("hungry", None).await;
    let job = s.wait_job(id, Duration::from_secs(60)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let usage = &job["executions"][0]["usage"];
    let cpu =
        usage["cpu_user_ms"].as_i64().unwrap_or(0) + usage["cpu_system_ms"].as_i64().unwrap_or(0);

    let mut web = Web::new(&s);
    web.login().await;
    let page = web.get(&format!("/jobs/{id}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains(">Peak memory</abbr></th>"),
        "no usage columns"
    );
    let cell = |class: &str| -> String {
        let start = page
            .body
            .find(&format!("class=\"{class}\""))
            .unwrap_or_else(|| panic!("no {class} cell"));
        let rest = &page.body[start..];
        let open = rest.find('>').expect("cell start") + 1;
        rest[open..open + rest[open..].find("</td>").expect("cell end")].to_string()
    };
    let shown_cpu = cell("usage-cpu");
    // Under a second the page shows whole milliseconds: the API's figure exactly.
    let expected = if cpu < 1000 {
        format!("{cpu} ms")
    } else {
        format!("{:.1} s", cpu as f64 / 1000.0)
    };
    assert_eq!(shown_cpu, expected, "{usage}");
    assert!(
        page.body.contains("title=\"user "),
        "the CPU split is missing"
    );
    let memory = cell("usage-memory");
    assert!(memory.ends_with(" MiB"), "{memory}");
    let mib: f64 = memory
        .trim_end_matches(" MiB")
        .parse()
        .expect("a number of MiB");
    assert!(mib >= 40.0, "{memory}");
}

/// A workflow with a failure branch that is skipped, a node gated on a file (held running
/// until `gate` exists, then failing unhandled unless `go` exists), and a node after it.
fn gated_workflow(dir: &std::path::Path) -> serde_json::Value {
    let gate = dir.join("gate");
    let go = dir.join("go");
    serde_json::json!({
        "name": "gated",
        "nodes": [
            {"id": "prepare", "type": "bash", "script": "echo preparing"},
            {"id": "gate", "type": "bash", "after": ["prepare"], "timeout": "2m",
             "script": format!("echo waiting\nwhile [ ! -f {g} ]; do sleep 0.05; done\ntest -f {o} || {{ echo 'no go'; exit 3; }}\necho passed",
                g = gate.display(), o = go.display())},
            {"id": "cleanup", "type": "bash", "after": {"prepare": "failure"}, "script": "echo cleaning"},
            {"id": "report", "type": "bash", "after": ["gate"], "script": "echo reported"},
        ]
    })
}

async fn wait_run_status(s: &Server, id: i64, want: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, d) = s
            .api("GET", &format!("/api/v1/workflow-runs/{id}"), None)
            .await;
        if d["run"]["status"] == want {
            return d;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "run {id} is not {want}: {d:#}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn count(html: &str, needle: &str) -> usize {
    html.matches(needle).count()
}

#[tokio::test]
async fn workflow_pages_run_with_input_draw_the_run_and_retry_and_cancel_it() {
    let s = server(&[]);
    let dir = shared_tempdir();
    let (st, body) = s
        .api(
            "PUT",
            "/api/v1/workflows/gated",
            Some(gated_workflow(dir.path())),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    let mut web = Web::new(&s);
    web.login().await;
    let csrf = web.csrf().await;

    // The list: name, node count, never run.
    let p = web.get("/workflows").await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(p.body.contains("href=\"/workflows/gated\""), "{}", p.body);
    assert!(
        p.body.contains("<td>4</td>") && p.body.contains("never"),
        "{}",
        p.body
    );
    let p = web.get("/workflows?q=nothing-like-it").await;
    assert!(p.body.contains("No workflow matches"), "{}", p.body);

    // The detail: the graph drawn by the server, one group per node, edges by kind.
    let p = web.get("/workflows/gated").await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(p.body.contains("<svg class=\"graph\""), "{}", p.body);
    assert_eq!(count(&p.body, "<g class=\"node def\""), 4, "{}", p.body);
    for n in ["prepare", "gate", "cleanup", "report"] {
        assert!(p.body.contains(&format!("data-node=\"{n}\"")), "{n}");
    }
    assert_eq!(count(&p.body, "<path class=\"edge failure\""), 1);
    assert_eq!(count(&p.body, "<path class=\"edge success\""), 2);

    // The run form: without its CSRF token, with bad JSON, with a non-object: refused,
    // the error at the field, nothing run.
    let p = web.post("/workflows/gated/run", &[("input", "{}")]).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    let p = web
        .post(
            "/workflows/gated/run",
            &[("csrf", &csrf), ("input", "{\"a\": ")],
        )
        .await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(p.body.contains("data-field=\"input\""), "{}", p.body);
    assert!(p.body.contains("input: not valid JSON"), "{}", p.body);
    assert!(p.body.contains("aria-invalid=\"true\""));
    assert!(
        p.body.contains("{&#34;a&#34;: </textarea>"),
        "the text is kept: {}",
        p.body
    );
    let p = web
        .post(
            "/workflows/gated/run",
            &[("csrf", &csrf), ("input", "[1, 2]")],
        )
        .await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        p.body.contains("input: expected a JSON object"),
        "{}",
        p.body
    );
    let (_, runs) = s.api("GET", "/api/v1/workflows/gated/runs", None).await;
    assert_eq!(
        runs.as_array().map(Vec::len),
        Some(0),
        "nothing ran: {runs}"
    );

    // A good run: the page of the run, live while it runs.
    let p = web
        .post(
            "/workflows/gated/run",
            &[("csrf", &csrf), ("input", "{\"version\": \"1.4\"}")],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    assert!(p.location.starts_with("/workflow-runs/"), "{}", p.location);
    let run: i64 = p.location["/workflow-runs/".len()..]
        .split('?')
        .next()
        .and_then(|i| i.parse().ok())
        .expect("run id");
    let d = wait_run_status(&s, run, "running").await;
    assert_eq!(d["run"]["input"]["version"], "1.4");
    s.wait_for("gate to run", Duration::from_secs(60), || async {
        let (_, d) = s
            .api("GET", &format!("/api/v1/workflow-runs/{run}"), None)
            .await;
        d["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|n| n["node"] == "gate" && n["status"] == "running")
    })
    .await;
    let p = web.get(&format!("/workflow-runs/{run}")).await;
    assert_eq!(p.status, StatusCode::OK);
    assert_eq!(count(&p.body, "<g class=\"node "), 4, "{}", p.body);
    assert!(
        p.body
            .contains("<g class=\"node succeeded\" data-node=\"prepare\""),
        "{}",
        p.body
    );
    assert!(
        p.body
            .contains("<g class=\"node running\" data-node=\"gate\""),
        "{}",
        p.body
    );
    assert!(
        p.body
            .contains("<g class=\"node waiting\" data-node=\"report\""),
        "{}",
        p.body
    );
    assert!(p.body.contains("data-live=\"true\""));
    assert!(
        p.body.contains("id=\"cancel-form\">"),
        "cancel offered: {}",
        p.body
    );
    assert!(p
        .body
        .contains("skipped: prepare succeeded, edge needs failure"));
    assert!(
        p.body.contains("waiting for gate (running)"),
        "the explanation: {}",
        p.body
    );
    // Each node links to its job; the job links back to the run.
    let prepare_job = d["nodes"][0]["job_id"].as_i64().expect("prepare's job");
    assert!(p.body.contains(&format!("href=\"/jobs/{prepare_job}\"")));
    let j = web.get(&format!("/jobs/{prepare_job}")).await;
    assert!(
        j.body.contains(&format!(
            "href=\"/workflow-runs/{run}\" id=\"workflow-run\""
        )),
        "{}",
        j.body
    );

    // The live stream: the state now, then the changes; it ends with the run.
    let live = {
        let req = web
            .http
            .get(format!("{}/workflow-runs/{run}/stream", web.base))
            .header("cookie", web.cookie_header());
        req.send().await.expect("stream")
    };
    assert_eq!(live.status(), StatusCode::OK);
    assert!(live.headers()["content-type"]
        .to_str()
        .unwrap_or_default()
        .starts_with("text/event-stream"));
    // The gate fails (no `go` file), unhandled: report is skipped, the run fails.
    std::fs::write(dir.path().join("gate"), "").expect("gate");
    let body = tokio::time::timeout(Duration::from_secs(60), live.text())
        .await
        .expect("the stream ends with the run")
        .expect("stream body");
    assert!(body.starts_with("event: state"), "{body}");
    assert!(
        body.contains("event: end\ndata: {\"status\":\"failed\"}"),
        "{body}"
    );
    assert!(body.contains("\"node\":\"cleanup\""), "{body}");
    let last_state = body
        .split("event: state\ndata: ")
        .last()
        .and_then(|t| t.lines().next())
        .expect("a state");
    let last: serde_json::Value = serde_json::from_str(last_state).expect("state json");
    assert_eq!(last["final"], true);
    assert_eq!(last["retryable"], true);
    let status_of = |v: &serde_json::Value, n: &str| {
        v["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|x| x["node"] == n)
            .map(|x| x["status"].clone())
    };
    assert_eq!(status_of(&last, "gate"), Some("failed".into()));
    assert_eq!(status_of(&last, "report"), Some("skipped".into()));

    // The ended run's page: final classes, the skip reason, retry offered, no cancel.
    let p = web.get(&format!("/workflow-runs/{run}")).await;
    assert!(
        p.body
            .contains("<g class=\"node failed\" data-node=\"gate\""),
        "{}",
        p.body
    );
    assert!(p
        .body
        .contains("<g class=\"node skipped\" data-node=\"cleanup\""));
    assert!(p
        .body
        .contains("<g class=\"node skipped\" data-node=\"report\""));
    assert!(
        p.body.contains("skipped: gate failed, edge needs success"),
        "{}",
        p.body
    );
    assert!(p.body.contains("id=\"cancel-form\" hidden"), "{}", p.body);
    assert!(!p.body.contains("id=\"retry-form\" hidden"), "{}", p.body);
    // The combined log of every node, tagged by node.
    let logs = web.get(&format!("/workflow-runs/{run}/log/stream")).await;
    assert_eq!(logs.status, StatusCode::OK);
    assert!(
        logs.body.contains("\"node\":\"gate\"") && logs.body.contains("no go"),
        "{}",
        logs.body
    );
    assert!(logs.body.contains("\"node\":\"prepare\"") && logs.body.contains("preparing"));
    assert!(!logs.body.contains("cleaning"), "a skipped node has no log");
    let p = web
        .get(&format!("/workflow-runs/{run}/log/stream?after=nonsense"))
        .await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);

    // Cancel of an ended run is refused; retry without the token is refused.
    let p = web
        .post(&format!("/workflow-runs/{run}/cancel"), &[("csrf", &csrf)])
        .await;
    assert_eq!(p.status, StatusCode::CONFLICT, "{}", p.body);
    let p = web.post(&format!("/workflow-runs/{run}/retry"), &[]).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);

    // Retry from the failure: prepare is kept, gate passes now, report runs.
    std::fs::write(dir.path().join("go"), "").expect("go");
    let p = web
        .post(&format!("/workflow-runs/{run}/retry"), &[("csrf", &csrf)])
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let retry: i64 = p.location["/workflow-runs/".len()..]
        .split('?')
        .next()
        .and_then(|i| i.parse().ok())
        .expect("retry id");
    assert!(p.location.ends_with("?done=retried"), "{}", p.location);
    assert_ne!(retry, run);
    wait_run_status(&s, retry, "succeeded").await;
    let p = web.get(&format!("/workflow-runs/{retry}")).await;
    assert!(
        p.body
            .contains("<g class=\"node succeeded\" data-node=\"report\""),
        "{}",
        p.body
    );
    assert!(
        p.body
            .contains(&format!("retry of <a href=\"/workflow-runs/{run}\">")),
        "{}",
        p.body
    );
    assert!(
        p.body.contains("id=\"retry-form\" hidden"),
        "a succeeded run is not retried"
    );
    // The stream of an ended run sends its state and ends at once.
    let live = web.get(&format!("/workflow-runs/{retry}/stream")).await;
    assert!(
        live.body
            .contains("event: end\ndata: {\"status\":\"succeeded\"}"),
        "{}",
        live.body
    );

    // Cancel a running run from its page.
    std::fs::remove_file(dir.path().join("gate")).expect("close the gate");
    let p = web
        .post("/workflows/gated/run", &[("csrf", &csrf), ("input", "")])
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let third: i64 = p.location["/workflow-runs/".len()..]
        .split('?')
        .next()
        .and_then(|i| i.parse().ok())
        .expect("run id");
    s.wait_for("gate to run again", Duration::from_secs(60), || async {
        let (_, d) = s
            .api("GET", &format!("/api/v1/workflow-runs/{third}"), None)
            .await;
        d["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|n| n["node"] == "gate" && n["status"] == "running")
    })
    .await;
    let p = web
        .post(
            &format!("/workflow-runs/{third}/cancel"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    assert!(
        p.location
            .starts_with(&format!("/workflow-runs/{third}?done=cancel")),
        "{}",
        p.location
    );
    let d = wait_run_status(&s, third, "cancelled").await;
    let p = web.get(&format!("/workflow-runs/{third}")).await;
    assert!(
        p.body
            .contains("<g class=\"node cancelled\" data-node=\"gate\""),
        "{}",
        p.body
    );
    assert!(
        p.body
            .contains("<span class=\"badge cancelled\" id=\"run-status\""),
        "{d:#}"
    );

    // The dashboard shows workflow runs; the list shows the last run.
    let p = web.get("/").await;
    assert!(p.body.contains("Workflow runs"), "{}", p.body);
    assert!(
        p.body.contains(&format!("href=\"/workflow-runs/{run}\"")),
        "the failed run: {}",
        p.body
    );
    let p = web.get("/workflows").await;
    assert!(
        p.body.contains(&format!("href=\"/workflow-runs/{third}\"")),
        "{}",
        p.body
    );
    // A run that does not exist is a 404 page.
    assert_eq!(
        web.get("/workflow-runs/999999").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        web.get("/workflows/nope").await.status,
        StatusCode::NOT_FOUND
    );
}
