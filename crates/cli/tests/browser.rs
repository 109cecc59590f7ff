//! The web UI in a real browser: Debian's headless Chromium driven through chromium-driver
//! (WebDriver, thirtyfour) against the real `cronium serve`. Log in; create an event in the
//! editor with a mistake, see the error at its field and line, fix it and save; run it and see
//! its lines arrive live; cancel a running job; a fan-out's log over two real sshd servers
//! (per-server filter and prefix, follow and pause, search, and the stream cut under the page
//! by a TCP relay and resumed with `Last-Event-ID`, no line lost or doubled); the dashboard and
//! the job list updating live as jobs start and end; the dark theme; watch a workflow graph
//! change colour as its nodes finish, then retry and cancel runs from their page. The tests
//! save screenshots of the main pages into `docs/screenshots/` (the README shows them).
//!
//! What needs no browser (login required everywhere, CSRF, sessions, headers) is in
//! `webui.rs`. `scripts/test.sh` installs `chromium` and `chromium-driver` when missing.

#[path = "../../ssh/tests/support/mod.rs"]
mod sshd;
mod support;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;
use thirtyfour::prelude::*;

const PASSWORD: &str = "correct-horse-battery-staple";

/// chromedriver and one browser session; the driver process ends with it.
struct Browser {
    driver: Option<WebDriver>,
    chromedriver: Child,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.chromedriver.kill();
        let _ = self.chromedriver.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn which(names: &[&str]) -> String {
    for n in names {
        for dir in ["/usr/bin", "/usr/lib/chromium", "/usr/local/bin"] {
            let p = PathBuf::from(dir).join(n);
            if p.is_file() {
                return p.display().to_string();
            }
        }
    }
    panic!("none of {names:?} is installed: scripts/test.sh installs chromium and chromium-driver")
}

impl Browser {
    async fn start() -> Browser {
        let port = free_port();
        let chromedriver = Command::new(which(&["chromedriver"]))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let mut caps = DesiredCapabilities::chrome();
        caps.set_binary(&which(&["chromium", "chromium-browser"]))
            .expect("binary");
        for arg in [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
            "--force-prefers-reduced-motion",
        ] {
            caps.add_arg(arg).expect("arg");
        }
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let driver = loop {
            match WebDriver::new(&url, caps.clone()).await {
                Ok(d) => break d,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("chromedriver did not answer: {e}"),
            }
        };
        Browser {
            driver: Some(driver),
            chromedriver,
        }
    }

    fn d(&self) -> &WebDriver {
        self.driver.as_ref().expect("driver")
    }

    async fn quit(mut self) {
        if let Some(d) = self.driver.take() {
            let _ = d.quit().await;
        }
    }

    async fn goto(&self, s: &Server, path: &str) {
        self.goto_at(&s.url, path).await;
    }

    /// Opens `path` at `base` (the server, or a proxy in front of it).
    async fn goto_at(&self, base: &str, path: &str) {
        self.d().goto(format!("{base}{path}")).await.expect("goto");
    }

    /// Runs `script` in the page and returns its value.
    async fn js(&self, script: &str) -> serde_json::Value {
        self.d()
            .execute(script, vec![])
            .await
            .expect("script")
            .json()
            .clone()
    }

    async fn path(&self) -> String {
        let u = self.d().current_url().await.expect("url");
        match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        }
    }

    /// The text of the element `by` finds, waiting up to 15 s for it to appear: after a
    /// click that submits a form, the next page may not have loaded yet. A live page may
    /// replace the element between finding it and reading it (stale): found again.
    async fn text_of(&self, by: By) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let text = match self.d().find(by.clone()).await {
                Ok(e) => e.text().await,
                Err(e) => Err(e),
            };
            match text {
                Ok(text) => return text,
                Err(e) if Instant::now() > deadline => panic!("element {by:?}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Waits until `f` holds for the page, polling; panics with `what` after `within`.
    async fn wait<F, Fut>(&self, what: &str, within: Duration, mut f: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + within;
        while !f().await {
            if Instant::now() > deadline {
                let src = self.d().source().await.unwrap_or_default();
                panic!("timed out waiting for {what}; page:\n{src}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn log_text(&self) -> String {
        self.text_of(By::Id("log")).await
    }

    /// Sets a textarea's whole text, as a paste would.
    async fn set_text(&self, id: &str, text: &str) {
        let el = self.d().find(By::Id(id)).await.expect("textarea");
        self.d()
            .execute(
                "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'));",
                vec![el.to_json().expect("json"), serde_json::json!(text)],
            )
            .await
            .expect("set text");
    }

    async fn click(&self, by: By) {
        self.d()
            .find(by)
            .await
            .expect("element")
            .click()
            .await
            .expect("click");
    }

    async fn shot(&self, name: &str) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots");
        std::fs::create_dir_all(&dir).expect("screenshots dir");
        self.d()
            .screenshot(&dir.join(format!("{name}.png")))
            .await
            .expect("screenshot");
    }

    async fn login(&self, s: &Server) {
        self.login_at(&s.url).await;
    }

    async fn login_at(&self, base: &str) {
        self.goto_at(base, "/").await;
        assert!(
            self.path().await.starts_with("/login"),
            "not sent to the login page"
        );
        let user = self.d().find(By::Id("username")).await.expect("user field");
        user.send_keys("admin").await.expect("type");
        self.d()
            .find(By::Id("password"))
            .await
            .expect("password field")
            .send_keys(PASSWORD)
            .await
            .expect("type");
        self.click(By::Css("button[type=submit]")).await;
        self.wait("the dashboard", Duration::from_secs(15), || async {
            self.path().await == "/"
        })
        .await;
    }
}

fn server() -> Server {
    Server::start_with(ServerOpts {
        env: vec![("CRONIUM_ADMIN_PASSWORD".into(), PASSWORD.into())],
        ..Default::default()
    })
}

/// Log in, make an event in the editor with a mistake, see the error at its field, fix it,
/// save; run it with input and watch its lines arrive live (one only after the page was open);
/// then the job's page and the lists.
#[tokio::test]
async fn edit_with_an_error_fix_save_run_and_watch_the_live_log() {
    let s = server();
    let marker_dir = shared_tempdir();
    let marker = marker_dir.path().join("go");
    let b = Browser::start().await;

    // The login page, a wrong password, then the right one.
    b.goto(&s, "/jobs").await;
    assert_eq!(b.path().await, "/login?next=%2Fjobs");
    b.shot("login").await;
    b.d()
        .find(By::Id("username"))
        .await
        .expect("user")
        .send_keys("admin")
        .await
        .expect("type");
    b.d()
        .find(By::Id("password"))
        .await
        .expect("pw")
        .send_keys("nope")
        .await
        .expect("type");
    b.click(By::Css("button[type=submit]")).await;
    assert!(b
        .text_of(By::Id("login-error"))
        .await
        .contains("Wrong user name or password"));
    b.login(&s).await;

    // A new event from the Python template, with a mistake in `retries.backoff`.
    b.goto(&s, "/new-event?type=python").await;
    let template = b
        .d()
        .find(By::Id("yaml"))
        .await
        .expect("editor")
        .value()
        .await
        .expect("value")
        .unwrap_or_default();
    assert!(template.contains("type: python"), "{template}");
    let script = format!(
        "name: greet\ntype: bash\nscript: |\n  echo \"hello $(cronium.input who)\"\n  echo oops >&2\n  while [ ! -e {m} ]; do sleep 0.05; done\n  echo after-marker\n  cronium.output done yes\ntimeout: 1m\nretries:\n  max_attempts: 2\n  backoff: 5 parsecs\ninput: {{ who: world }}\n",
        m = marker.display()
    );
    b.set_text("yaml", &script).await;
    b.click(By::Id("save")).await;
    b.wait("the editor's error", Duration::from_secs(10), || async {
        b.d().find(By::Id("editor-error")).await.is_ok()
    })
    .await;
    let err = b.d().find(By::Id("editor-error")).await.expect("error");
    assert_eq!(
        err.attr("data-field").await.expect("attr").as_deref(),
        Some("retries.backoff")
    );
    assert_eq!(
        err.attr("data-line").await.expect("attr").as_deref(),
        Some("12"),
        "the line of `backoff:`"
    );
    assert!(err
        .text()
        .await
        .expect("text")
        .contains("is not a duration"));
    // The gutter marks that line, and the text the user typed is kept.
    assert_eq!(b.text_of(By::Css(".gutter .bad")).await, "12");
    let kept = b
        .d()
        .find(By::Id("yaml"))
        .await
        .expect("editor")
        .value()
        .await
        .expect("v")
        .unwrap_or_default();
    assert!(kept.contains("5 parsecs"));
    b.shot("editor-error").await;
    let (status, _) = s.api("GET", "/api/v1/events/greet", None).await;
    assert_eq!(status, 404, "an invalid event is not saved");

    // Fixed and saved: the event page, with its version and the run form.
    b.set_text("yaml", &kept.replace("5 parsecs", "5s")).await;
    b.click(By::Id("save")).await;
    b.wait("the event page", Duration::from_secs(10), || async {
        b.path().await == "/events/greet?done=created"
    })
    .await;
    let (_, ev) = s.api("GET", "/api/v1/events/greet", None).await;
    assert_eq!(ev["spec"]["retries"]["backoff"], "5s");

    // Run with input; the job page opens and follows the log live.
    b.set_text("input", "{\"who\": \"browser\"}").await;
    b.click(By::Id("run")).await;
    b.wait("the job page", Duration::from_secs(10), || async {
        b.path().await.starts_with("/jobs/")
    })
    .await;
    b.wait("the first lines", Duration::from_secs(30), || async {
        b.log_text().await.contains("hello browser")
    })
    .await;
    let stderr = b
        .d()
        .find(By::Css("#log .line.stderr .txt"))
        .await
        .expect("a stderr line");
    assert_eq!(
        stderr.text().await.expect("text"),
        "oops",
        "stderr is told apart"
    );
    assert!(!b.log_text().await.contains("after-marker"));
    assert_eq!(b.text_of(By::Id("job-status")).await, "running");
    // This line is written after the page was open: only the live stream can bring it.
    std::fs::write(&marker, "go").expect("marker");
    b.wait(
        "the live line and the final status",
        Duration::from_secs(30),
        || async {
            b.log_text().await.contains("after-marker")
                && b.text_of(By::Id("job-status")).await == "succeeded"
        },
    )
    .await;
    assert_eq!(b.text_of(By::Id("job-exit")).await, "0");
    let id: i64 = b
        .path()
        .await
        .trim_start_matches("/jobs/")
        .split('?')
        .next()
        .expect("id")
        .parse()
        .expect("job id");
    let job = s.job(id).await;
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["input"]["who"], "browser");
    b.goto(&s, &format!("/jobs/{id}")).await;
    assert!(b
        .text_of(By::Id("job-output"))
        .await
        .contains("\"done\": \"yes\""));
    b.shot("job").await;
    b.d()
        .find(By::Id("log-search"))
        .await
        .expect("search")
        .send_keys("after")
        .await
        .expect("type");
    b.wait("the search to filter", Duration::from_secs(5), || async {
        b.text_of(By::Id("log-state"))
            .await
            .contains("1 of 3 loaded lines match")
    })
    .await;

    // The other pages, for the README.
    b.goto(&s, "/events/greet").await;
    assert!(b.text_of(By::Id("history-h")).await.contains("History"));
    b.shot("event").await;
    b.goto(&s, "/jobs").await;
    assert!(b.text_of(By::Css("table.jobs")).await.contains("greet"));
    b.shot("jobs").await;
    b.quit().await;
}

/// The dashboard of a busy installation: scheduled events, a failure, a job running now.
#[tokio::test]
async fn the_dashboard_shows_what_runs_what_failed_and_what_comes_next() {
    let s = server();
    s.apply_yaml("name: nightly-backup\ntype: bash\nscript: echo backup\nschedule: \"0 30 2 * * *\"\ntimezone: Europe/Berlin\n").await;
    s.apply_yaml("name: health-check\ntype: bash\nscript: echo ok\nschedule: every 1h\n")
        .await;
    s.apply_yaml("name: flaky-report\ntype: python\nscript: |\n  import sys\n  print('connecting to the warehouse')\n  sys.exit(3)\n").await;
    s.apply_yaml(
        "name: long-import\ntype: bash\nscript: |\n  echo importing\n  sleep 120\ntimeout: 5m\n",
    )
    .await;
    let failed = s.run_event("flaky-report", None).await;
    s.wait_job(failed, Duration::from_secs(60)).await;
    let running = s.run_event("long-import", None).await;
    s.wait_for("the import to run", Duration::from_secs(30), || async {
        s.job(running).await["status"] == "running"
    })
    .await;
    let b = Browser::start().await;
    b.login(&s).await;
    b.goto(&s, "/").await;
    let running_h = b.text_of(By::Id("running-h")).await;
    assert!(running_h.contains('1'), "{running_h}");
    let page = b.d().source().await.expect("source");
    assert!(
        page.contains(&format!("/jobs/{running}")),
        "the running job is listed"
    );
    assert!(
        page.contains(&format!("/jobs/{failed}")),
        "the failure is listed"
    );
    assert!(
        page.contains("/events/nightly-backup") && page.contains("/events/health-check"),
        "next runs"
    );
    b.shot("dashboard").await;
    b.goto(&s, "/events").await;
    b.shot("events").await;
    b.goto(&s, "/events/nightly-backup").await;
    // The preview is in the event's time zone: 02:30 in Berlin.
    let next = b.text_of(By::Css("ol.instants")).await;
    assert_eq!(next.lines().count(), 10, "{next}");
    assert!(next.lines().all(|l| l.contains("02:30:00 CE")), "{next}");
    // On a phone.
    b.d().set_window_rect(0, 0, 390, 844).await.expect("resize");
    b.goto(&s, "/").await;
    b.shot("dashboard-phone").await;
    let overflow = b
        .d()
        .execute(
            "return document.documentElement.scrollWidth > window.innerWidth + 1;",
            vec![],
        )
        .await
        .expect("script");
    assert_eq!(
        overflow.json(),
        &serde_json::json!(false),
        "the dashboard scrolls sideways on a phone"
    );
    s.api("POST", &format!("/api/v1/jobs/{running}/cancel"), None)
        .await;
    b.quit().await;
}

/// In the browser too: a page asked for without a login lands on the login form, and a form
/// whose CSRF field was taken out is refused with nothing done.
#[tokio::test]
async fn without_a_login_or_a_csrf_token_nothing_happens() {
    let s = server();
    s.apply_yaml("name: guarded\ntype: bash\nscript: echo hi\n")
        .await;
    let b = Browser::start().await;
    for path in [
        "/",
        "/events/guarded",
        "/jobs",
        "/servers",
        "/variables",
        "/tokens",
        "/new-event",
    ] {
        b.goto(&s, path).await;
        assert!(
            b.path().await.starts_with("/login"),
            "{path} shown without a login"
        );
        assert!(b.d().find(By::Id("password")).await.is_ok());
    }
    b.login(&s).await;
    b.goto(&s, "/events/guarded").await;
    b.d()
        .execute(
            "document.querySelectorAll('input[name=csrf]').forEach(function (e) { e.remove(); });",
            vec![],
        )
        .await
        .expect("remove the token");
    b.click(By::Id("run")).await;
    b.wait("the refusal", Duration::from_secs(10), || async {
        b.d()
            .title()
            .await
            .unwrap_or_default()
            .starts_with("Forbidden")
    })
    .await;
    assert!(b
        .d()
        .source()
        .await
        .expect("page")
        .contains("security token"));
    let (_, jobs) = s.api("GET", "/api/v1/jobs", None).await;
    assert_eq!(jobs.as_array().map(Vec::len), Some(0), "nothing ran");
    b.quit().await;
}

/// A running job is cancelled from its page: the script stops, the page says so.
#[tokio::test]
async fn cancel_a_running_job_from_its_page() {
    let s = server();
    s.apply_yaml("name: sleeper\ntype: bash\nscript: |\n  echo started\n  sleep 120\n  echo never\ntimeout: 5m\n").await;
    let b = Browser::start().await;
    b.login(&s).await;
    b.goto(&s, "/events/sleeper").await;
    b.click(By::Id("run")).await;
    b.wait("the job to start", Duration::from_secs(30), || async {
        b.path().await.starts_with("/jobs/") && b.log_text().await.contains("started")
    })
    .await;
    let id: i64 = b
        .path()
        .await
        .trim_start_matches("/jobs/")
        .split('?')
        .next()
        .expect("id")
        .parse()
        .expect("job id");
    b.shot("job-running").await;
    b.click(By::Id("cancel")).await;
    // The confirmation dialog (data-confirm).
    b.d().accept_alert().await.expect("confirm");
    b.wait("the cancellation", Duration::from_secs(30), || async {
        let t = b.text_of(By::Id("job-status")).await;
        t == "cancelled"
    })
    .await;
    let job = s.wait_job(id, Duration::from_secs(30)).await;
    assert_eq!(job["status"], "cancelled");
    assert!(!s.log_text(id).await.contains("never"));
    b.goto(&s, &format!("/jobs/{id}")).await;
    assert!(
        b.d().find(By::Id("cancel")).await.is_err(),
        "no cancel button on an ended job"
    );
    b.quit().await;
}

/// A big log opens at its tail, loads older lines when scrolled up, and the download holds
/// every line.
#[tokio::test]
async fn a_big_log_opens_at_its_tail_and_loads_older_lines_on_demand() {
    let s = server();
    s.apply_yaml("name: chatty\ntype: bash\nscript: |\n  for i in $(seq 1 3000); do echo \"line $i\"; done\n").await;
    let id = s.run_event("chatty", None).await;
    s.wait_job(id, Duration::from_secs(60)).await;
    let b = Browser::start().await;
    b.login(&s).await;
    b.goto(&s, &format!("/jobs/{id}")).await;
    let count = || async {
        b.d()
            .find_all(By::Css("#log .line"))
            .await
            .expect("lines")
            .len()
    };
    assert_eq!(count().await, 500, "the page opens with the tail only");
    assert!(b.log_text().await.contains("line 3000"));
    assert!(!b.log_text().await.contains("line 2500\n"));
    // Scrolling to the top fetches the 500 before.
    b.d()
        .execute("document.getElementById('log').scrollTop = 0; document.getElementById('log').dispatchEvent(new Event('scroll'));", vec![])
        .await
        .expect("scroll");
    b.wait("older lines", Duration::from_secs(10), || async {
        count().await >= 1000
    })
    .await;
    assert!(b.log_text().await.contains("line 2001"));
    // The download is the whole log.
    let resp = reqwest::get(format!("{}/jobs/{id}/log.txt", s.url))
        .await
        .expect("download");
    assert!(
        resp.url().path().starts_with("/login"),
        "the download needs the login too"
    );
    b.quit().await;
}

/// A server registered through the form with its key uploaded as a file, tested (its key
/// pinned), then its host key changes: the page says so and accepting it makes it trusted.
#[tokio::test]
async fn add_a_server_with_a_key_file_test_it_and_accept_a_changed_host_key() {
    let s = server();
    let dir = tempfile::tempdir().expect("tempdir");
    let key = write(dir.path(), "id_ed25519", &sshd::env().client_key);
    let mut h = sshd::Sshd::start();
    let b = Browser::start().await;
    b.login(&s).await;
    b.goto(&s, "/servers").await;
    b.click(By::LinkText("Add a server")).await;
    let typed = |id: &'static str, text: String| {
        let b = &b;
        async move {
            let el = b.d().find(By::Id(id)).await.expect("field");
            el.clear().await.expect("clear");
            el.send_keys(text).await.expect("type");
        }
    };
    typed("s-name", "web1".into()).await;
    typed("s-host", "127.0.0.1".into()).await;
    typed("s-port", h.port.to_string()).await;
    typed("s-user", sshd::USER.into()).await;
    typed("s-tags", "web, eu".into()).await;
    // A mistake first: no key chosen.
    b.click(By::Id("add")).await;
    b.wait("the form's error", Duration::from_secs(10), || async {
        b.d().find(By::Id("form-error")).await.is_ok()
    })
    .await;
    let err = b.d().find(By::Id("form-error")).await.expect("error");
    assert_eq!(
        err.attr("data-field").await.expect("attr").as_deref(),
        Some("private_key")
    );
    assert_eq!(
        b.d()
            .find(By::Id("s-name"))
            .await
            .expect("name")
            .value()
            .await
            .expect("v")
            .as_deref(),
        Some("web1"),
        "what was typed is kept"
    );
    // The key file, uploaded.
    b.d()
        .find(By::Id("s-key"))
        .await
        .expect("file input")
        .send_keys(key.display().to_string())
        .await
        .expect("choose file");
    b.click(By::Id("add")).await;
    b.wait("the server page", Duration::from_secs(10), || async {
        b.path().await == "/servers/web1?done=added"
    })
    .await;
    let (_, srv) = s.api("GET", "/api/v1/servers/web1", None).await;
    assert_eq!(srv["auth"], "key", "{srv}");
    assert_eq!(srv["tags"], serde_json::json!(["web", "eu"]));

    b.click(By::Id("test")).await;
    b.wait("the test report", Duration::from_secs(30), || async {
        b.d().find(By::Id("report")).await.is_ok()
    })
    .await;
    let report = b.text_of(By::Id("report")).await;
    assert!(
        report.contains("Reachable\nyes") || report.contains("Reachable yes"),
        "{report}"
    );
    assert!(
        report.contains("seen for the first time: now pinned"),
        "{report}"
    );
    assert!(report.contains("Linux"), "{report}");
    b.shot("server").await;

    // The host key changes: a test records it as pending, the page warns and offers to accept.
    h.new_host_key();
    h.restart();
    b.goto(&s, "/servers/web1").await;
    b.click(By::Id("test")).await;
    b.wait("the changed key", Duration::from_secs(30), || async {
        b.d().find(By::Id("accept-key")).await.is_ok()
    })
    .await;
    assert!(b.text_of(By::Id("report")).await.contains("CHANGED"));
    b.click(By::Id("accept-key")).await;
    b.d().accept_alert().await.expect("confirm");
    b.wait("the key accepted", Duration::from_secs(10), || async {
        b.path().await == "/servers/web1?done=accepted"
    })
    .await;
    b.click(By::Id("test")).await;
    b.wait("a matching key", Duration::from_secs(30), || async {
        b.d().find(By::Id("report")).await.is_ok()
    })
    .await;
    assert!(b
        .text_of(By::Id("report"))
        .await
        .contains("matches the pinned key"));
    b.quit().await;
}

/// A TCP relay between the browser and the server, so that a test can cut every connection
/// under the page (a network failure, not a server restart) and see what the browser sends
/// when it reconnects. Ends with the test (its tasks are aborted on drop).
struct Relay {
    base: String,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    /// The head of every request the browser sent (method, path, headers).
    heads: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(upstream: &str) -> Relay {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("relay listener");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> =
            Default::default();
        let heads: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let (c, h) = (conns.clone(), heads.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let heads = h.clone();
                let task = tokio::spawn(async move {
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = async {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match cr.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            let text = String::from_utf8_lossy(&buf[..n]).to_string();
                            if text.starts_with("GET ") || text.starts_with("POST ") {
                                if let Ok(mut hs) = heads.lock() {
                                    hs.push(text);
                                }
                            }
                            if sw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    };
                    let down = tokio::io::copy(&mut sr, &mut cw);
                    tokio::select! { _ = up => {}, _ = down => {} }
                });
                if let Ok(mut cs) = c.lock() {
                    cs.push(task.abort_handle());
                }
            }
        });
        Relay {
            base,
            conns,
            heads,
            accept,
        }
    }

    /// Drops every open connection: the browser sees its streams end abruptly.
    fn cut(&self) {
        if let Ok(mut cs) = self.conns.lock() {
            for c in cs.drain(..) {
                c.abort();
            }
        }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().map(|h| h.clone()).unwrap_or_default()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// A server that can reach SSH servers: the static runner, deployed to a directory of its own
/// on the hosts (removed by the caller).
fn ssh_server(deploy_dir: &str) -> Server {
    Server::start_with(ServerOpts {
        env: vec![("CRONIUM_ADMIN_PASSWORD".into(), PASSWORD.into())],
        args: vec![
            "--static-runner".into(),
            static_runner_bin().display().to_string(),
            "--ssh-deploy-dir".into(),
            deploy_dir.to_string(),
        ],
        ..Default::default()
    })
}

/// A fan-out where one server failed: the job page offers "Retry failed servers"; pressing it
/// starts a job on the failed server only, whose page the browser lands on and which succeeds.
#[tokio::test]
async fn retry_only_the_failed_servers_of_a_fan_out_from_its_page() {
    let deploy_dir = format!(".cache/cronium-ui-{:08x}", rand::random::<u32>());
    let s = ssh_server(&deploy_dir);
    let dir = tempfile::tempdir().expect("tempdir");
    let key = write(dir.path(), "id_ed25519", &sshd::env().client_key);
    let hosts = [sshd::Sshd::start(), sshd::Sshd::start()];
    for (name, h) in ["ok-a", "flaky-b"].iter().zip(&hosts) {
        s.add_server(
            name,
            h.port,
            sshd::USER,
            &["--key-file", key.to_str().expect("path")],
        );
    }
    let fixed = shared_tempdir();
    let marker = fixed.path().join("fixed");
    s.apply_yaml(&format!(
        "name: half-fleet\ntype: bash\ntarget: {{ servers: [ok-a, flaky-b] }}\nscript: |\n  if [ \"$CRONIUM_SERVER\" = flaky-b ] && [ ! -e {m} ]; then echo 'disk full' >&2; exit 3; fi\n  echo \"done on $CRONIUM_SERVER\"\n",
        m = marker.display()
    ))
    .await;
    let id = s.run_event("half-fleet", None).await;
    let j = s.wait_job(id, Duration::from_secs(120)).await;
    assert_ne!(j["status"], "succeeded", "{j}");

    let b = Browser::start().await;
    b.login(&s).await;
    b.goto(&s, &format!("/jobs/{id}")).await;
    let label = b.text_of(By::Id("retry-failed")).await;
    assert_eq!(label, "Retry failed servers");
    std::fs::write(&marker, "yes").expect("marker");
    b.click(By::Id("retry-failed")).await;
    b.wait("the retry's page", Duration::from_secs(15), || async {
        let p = b.path().await;
        p.starts_with("/jobs/") && !p.starts_with(&format!("/jobs/{id}"))
    })
    .await;
    let path = b.path().await;
    let retry: i64 = path
        .trim_start_matches("/jobs/")
        .split(['?', '/'])
        .next()
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("not a job page: {path}"));
    let r = s.wait_job(retry, Duration::from_secs(120)).await;
    assert_eq!(r["status"], "succeeded", "{r}");
    let servers: Vec<&str> = r["executions"]
        .as_array()
        .expect("executions")
        .iter()
        .filter_map(|x| x["server"].as_str())
        .collect();
    assert_eq!(servers, ["flaky-b"], "the retry ran on {servers:?}");
    b.goto(&s, &format!("/jobs/{retry}")).await;
    assert_eq!(b.text_of(By::Id("job-status")).await, "succeeded");
    assert!(b.log_text().await.contains("done on flaky-b"));
    // The execution's Took is its whole wall time: never less than its Setup plus its Run.
    let cells = b
        .js("var r = document.querySelector('table.executions tbody tr'); return Array.prototype.map.call(r.cells, function (c) { return c.textContent.trim(); });")
        .await;
    let cells: Vec<String> = cells
        .as_array()
        .expect("cells")
        .iter()
        .map(|c| c.as_str().unwrap_or_default().to_string())
        .collect();
    let ms = |t: &str| -> f64 {
        match t.split_once(' ') {
            Some((n, "ms")) => n.parse().expect("ms"),
            Some((n, "s")) => n.parse::<f64>().expect("s") * 1000.0,
            _ => panic!("unexpected duration {t:?} in {cells:?}"),
        }
    };
    let (setup, run, took) = (ms(&cells[7]), ms(&cells[8]), ms(&cells[9]));
    assert!(
        took + 1.0 >= setup + run,
        "Took {took} ms < Setup {setup} + Run {run}: {cells:?}"
    );
    b.shot("job-retry-failed").await;
    b.quit().await;
}

/// The seq of every line the viewer shows, in page order.
async fn shown_seqs(b: &Browser) -> Vec<i64> {
    let v = b
        .js("return Array.prototype.map.call(document.querySelectorAll('#log .line'), function (d) { return parseInt(d.getAttribute('data-seq'), 10); });")
        .await;
    v.as_array()
        .expect("seqs")
        .iter()
        .map(|x| x.as_i64().expect("seq"))
        .collect()
}

/// A fan-out over two real sshd servers, watched in the browser: every line carries its
/// server's prefix and the server filter shows one server's lines only; the live stream is cut
/// under the page (a TCP relay drops the connection, nothing restarts) while the script writes,
/// and the browser's own reconnection resumes with `Last-Event-ID`: no line lost, none doubled;
/// with follow paused, new lines do not move the view, and following again jumps to the end;
/// search shows the matching lines only, together with the server filter.
#[tokio::test]
async fn a_fan_out_log_by_server_resumes_after_a_cut_with_follow_pause_and_search() {
    let deploy_dir = format!(".cache/cronium-ui-{:08x}", rand::random::<u32>());
    let s = ssh_server(&deploy_dir);
    let dir = tempfile::tempdir().expect("tempdir");
    let key = write(dir.path(), "id_ed25519", &sshd::env().client_key);
    let hosts = [sshd::Sshd::start(), sshd::Sshd::start()];
    for (name, h) in ["web-a", "web-b"].iter().zip(&hosts) {
        s.add_server(
            name,
            h.port,
            sshd::USER,
            &["--key-file", key.to_str().expect("path")],
        );
    }
    let markers = shared_tempdir();
    let (m1, m2, m3) = (
        markers.path().join("one"),
        markers.path().join("two"),
        markers.path().join("three"),
    );
    s.apply_yaml(&format!(
        "name: fleet-log\ntype: bash\ntarget: {{ servers: [web-a, web-b] }}\ntimeout: 5m\nscript: |\n  for i in $(seq 1 5); do echo \"early $i from $CRONIUM_SERVER\"; done\n  echo \"warning on $CRONIUM_SERVER\" >&2\n  while [ ! -e {m1} ]; do sleep 0.05; done\n  for i in $(seq 1 10); do echo \"middle $i from $CRONIUM_SERVER\"; done\n  while [ ! -e {m2} ]; do sleep 0.05; done\n  for i in $(seq 11 30); do echo \"middle $i from $CRONIUM_SERVER\"; sleep 0.01; done\n  while [ ! -e {m3} ]; do sleep 0.05; done\n  for i in $(seq 1 150); do echo \"late $i from $CRONIUM_SERVER\"; done\n",
        m1 = m1.display(),
        m2 = m2.display(),
        m3 = m3.display()
    ))
    .await;
    let id = s.run_event("fleet-log", None).await;
    s.wait_for(
        "both servers' first lines",
        Duration::from_secs(90),
        || async {
            let t = s.log_text(id).await;
            t.contains("early 5 from web-a") && t.contains("early 5 from web-b")
        },
    )
    .await;

    let relay = Relay::start(&s.url).await;
    let b = Browser::start().await;
    b.login_at(&relay.base).await;
    b.goto_at(&relay.base, &format!("/jobs/{id}")).await;
    b.wait("the live stream", Duration::from_secs(15), || async {
        b.text_of(By::Id("log-state")).await == "live"
    })
    .await;
    // Every line carries its server, as a prefix and as data for the filter.
    let prefixes = b
        .js("return Array.prototype.map.call(document.querySelectorAll('#log .line'), function (d) { var s = d.querySelector('.srv'); return [s ? s.textContent : '', d.querySelector('.txt').textContent]; });")
        .await;
    let prefixes = prefixes.as_array().expect("lines");
    let early: Vec<_> = prefixes
        .iter()
        .filter(|p| p[1].as_str().unwrap_or_default().starts_with("early "))
        .collect();
    assert_eq!(early.len(), 10, "{prefixes:?}");
    for p in &early {
        let (srv, txt) = (p[0].as_str().unwrap(), p[1].as_str().unwrap());
        assert!(
            txt.ends_with(&format!("from {srv}")),
            "line {txt:?} prefixed {srv:?}"
        );
    }
    let options = b.text_of(By::Id("log-server")).await;
    assert!(
        options.contains("web-a") && options.contains("web-b"),
        "{options}"
    );
    let visible_servers = || async {
        let v = b
            .js("return Array.prototype.filter.call(document.querySelectorAll('#log .line'), function (d) { return !d.classList.contains('hidden'); }).map(function (d) { return d.getAttribute('data-server'); });")
            .await;
        v.as_array()
            .expect("servers")
            .iter()
            .map(|x| x.as_str().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    };
    b.d()
        .find(By::Css("#log-server option[value='']"))
        .await
        .expect("all");
    b.js("var s = document.getElementById('log-server'); s.value = 'web-b'; s.dispatchEvent(new Event('change')); return true;")
        .await;
    let only_b = visible_servers().await;
    assert!(
        !only_b.is_empty() && only_b.iter().all(|s| s == "web-b"),
        "{only_b:?}"
    );
    assert!(b
        .text_of(By::Id("log-state"))
        .await
        .contains("loaded lines match"));
    b.js("document.getElementById('log-h').scrollIntoView(); return true;")
        .await;
    b.shot("job-fanout").await;
    b.js("var s = document.getElementById('log-server'); s.value = ''; s.dispatchEvent(new Event('change')); return true;")
        .await;
    assert!(visible_servers().await.contains(&"web-a".to_string()));

    // Lines that arrive over the stream (so the browser has a last event id)...
    std::fs::write(&m1, "go").expect("marker one");
    b.wait(
        "the first middle lines, live",
        Duration::from_secs(30),
        || async {
            let t = b.log_text().await;
            t.contains("middle 10 from web-a") && t.contains("middle 10 from web-b")
        },
    )
    .await;
    // ...then the stream is cut under the page while the script writes the rest.
    let before_cut = shown_seqs(&b).await;
    let last_before = *before_cut.last().expect("lines before the cut");
    relay.cut();
    std::fs::write(&m2, "go").expect("marker two");
    b.wait(
        "the browser to reconnect and catch up",
        Duration::from_secs(60),
        || async {
            let t = b.log_text().await;
            t.contains("middle 30 from web-a") && t.contains("middle 30 from web-b")
        },
    )
    .await;
    let resumed = relay
        .heads()
        .into_iter()
        .filter(|h| h.starts_with(&format!("GET /jobs/{id}/log/stream")))
        .collect::<Vec<_>>();
    assert!(resumed.len() >= 2, "no reconnection seen: {resumed:?}");
    let again = resumed
        .last()
        .expect("the reconnection")
        .to_ascii_lowercase();
    let sent_id = again
        .lines()
        .find_map(|l| l.strip_prefix("last-event-id:"))
        .map(|v| v.trim().parse::<i64>().expect("an id"));
    assert!(
        sent_id.is_some_and(|n| n >= last_before),
        "the reconnection did not resume with Last-Event-ID >= {last_before}: {again}"
    );
    let seqs = shown_seqs(&b).await;
    let first = seqs[0];
    let want: Vec<i64> = (first..first + seqs.len() as i64).collect();
    assert_eq!(seqs, want, "a line lost or doubled across the cut");
    let text = b.log_text().await;
    for srv in ["web-a", "web-b"] {
        for i in 1..=30 {
            let line = format!("middle {i} from {srv}");
            assert_eq!(
                text.lines().filter(|l| l.ends_with(&line)).count(),
                1,
                "{line} shown other than once"
            );
        }
    }

    // Follow paused: new lines do not move the view; following again jumps to the end.
    b.js("var l = document.getElementById('log'); l.scrollTop = 0; l.dispatchEvent(new Event('scroll')); return true;")
        .await;
    let follow = b.d().find(By::Id("log-follow")).await.expect("follow");
    assert!(
        !follow.is_selected().await.expect("state"),
        "scrolling up pauses follow"
    );
    std::fs::write(&m3, "go").expect("marker three");
    b.wait("the late lines", Duration::from_secs(60), || async {
        let t = b.log_text().await;
        t.contains("late 150 from web-a") && t.contains("late 150 from web-b")
    })
    .await;
    let top = b
        .js("return document.getElementById('log').scrollTop;")
        .await;
    assert!(
        top.as_f64().unwrap_or(1e9) < 50.0,
        "the paused view moved to {top}"
    );
    follow.click().await.expect("follow again");
    let gap = b
        .js("var l = document.getElementById('log'); return l.scrollHeight - l.scrollTop - l.clientHeight;")
        .await;
    assert!(
        gap.as_f64().unwrap_or(1e9) < 24.0,
        "following again did not jump to the end: {gap}"
    );

    // Search, alone and with the server filter.
    b.d()
        .find(By::Id("log-search"))
        .await
        .expect("search")
        .send_keys("late 14")
        .await
        .expect("type");
    let matching = || async {
        let v = b
            .js("return Array.prototype.filter.call(document.querySelectorAll('#log .line'), function (d) { return !d.classList.contains('hidden'); }).map(function (d) { return d.textContent; });")
            .await;
        v.as_array()
            .expect("lines")
            .iter()
            .map(|x| x.as_str().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    };
    b.wait("the search to filter", Duration::from_secs(5), || async {
        matching().await.len() == 22
    })
    .await;
    // late 14, late 140..149 on each server.
    assert!(matching().await.iter().all(|l| l.contains("late 14")));
    b.js("var s = document.getElementById('log-server'); s.value = 'web-a'; s.dispatchEvent(new Event('change')); return true;")
        .await;
    let both = matching().await;
    assert_eq!(both.len(), 11, "{both:?}");
    assert!(both.iter().all(|l| l.contains("from web-a")), "{both:?}");
    assert_eq!(
        b.text_of(By::Id("log-state")).await,
        format!("11 of {} loaded lines match", shown_seqs(&b).await.len())
    );
    let job = s.wait_job(id, Duration::from_secs(60)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    b.quit().await;
    drop(relay);
    let _ = std::fs::remove_dir_all(sshd::home_path(&deploy_dir));
}

/// The dashboard and the job list follow jobs without a reload: a job that starts appears
/// under running, moves out when it ends; a failure joins the recent failures; a
/// `status=failed` list gains the failure but never the running job.
#[tokio::test]
async fn the_dashboard_and_the_job_list_update_live_as_jobs_start_and_end() {
    let s = server();
    let markers = shared_tempdir();
    s.apply_yaml("name: waits\ntype: bash\nscript: |\n  while [ ! -e \"$(cronium.input marker)\" ]; do sleep 0.05; done\n  echo done\ntimeout: 5m\n").await;
    s.apply_yaml("name: breaks\ntype: bash\nscript: |\n  echo failing\n  exit 3\n")
        .await;
    let b = Browser::start().await;
    b.login(&s).await;
    b.goto(&s, "/").await;
    b.js("window.__sameDocument = true; return true;").await;
    let live = || async { b.text_of(By::Css("[data-live-state]")).await == "live" };
    b.wait("the dashboard's stream", Duration::from_secs(15), live)
        .await;
    let row = |view: &'static str, id: i64| {
        let b = &b;
        async move {
            let v = b
                .js(&format!(
                    "var r = document.querySelector('tbody[data-view={view}] tr[data-key=\"{id}\"]'); return r ? r.textContent : null;"
                ))
                .await;
            v.as_str().map(str::to_string)
        }
    };
    let marker = markers.path().join("first");
    let first = s
        .run_event(
            "waits",
            Some(serde_json::json!({"marker": marker.display().to_string()})),
        )
        .await;
    b.wait("the job under running", Duration::from_secs(30), || async {
        row("running", first)
            .await
            .is_some_and(|t| t.contains("running"))
    })
    .await;
    assert_eq!(b.text_of(By::Css("[data-count=running]")).await, "1");
    assert!(!b
        .d()
        .find(By::Css("[data-empty=running]"))
        .await
        .expect("empty note")
        .is_displayed()
        .await
        .expect("shown"));
    b.shot("dashboard-live").await;
    std::fs::write(&marker, "go").expect("marker");
    b.wait(
        "the job to leave running",
        Duration::from_secs(30),
        || async { row("running", first).await.is_none() },
    )
    .await;
    assert_eq!(b.text_of(By::Css("[data-count=running]")).await, "0");
    assert!(b
        .d()
        .find(By::Css("[data-empty=running]"))
        .await
        .expect("empty note")
        .is_displayed()
        .await
        .expect("shown"));
    let broken = s.run_event("breaks", None).await;
    b.wait("the failure", Duration::from_secs(30), || async {
        row("failures", broken)
            .await
            .is_some_and(|t| t.contains("failed") && t.contains("exit 3"))
    })
    .await;
    assert_eq!(
        b.js("return window.__sameDocument === true;").await,
        serde_json::json!(true),
        "the dashboard reloaded instead of patching"
    );

    // The failed jobs' list: the failure arrives, the running job never does.
    b.goto(&s, "/jobs?status=failed").await;
    b.js("window.__sameDocument = true; return true;").await;
    b.wait("the list's stream", Duration::from_secs(15), live)
        .await;
    assert!(
        row("list", broken).await.is_some(),
        "the page is complete at load"
    );
    let marker2 = markers.path().join("second");
    let waiting = s
        .run_event(
            "waits",
            Some(serde_json::json!({"marker": marker2.display().to_string()})),
        )
        .await;
    s.wait_for("the second job to run", Duration::from_secs(30), || async {
        s.job(waiting).await["status"] == "running"
    })
    .await;
    let again = s.run_event("breaks", None).await;
    b.wait("the new failure at the top", Duration::from_secs(30), || async {
        b.js("var r = document.querySelector('tbody[data-view=list] tr'); return r ? r.getAttribute('data-key') : null;")
            .await
            == serde_json::json!(again.to_string())
    })
    .await;
    assert!(
        row("list", waiting).await.is_none(),
        "a status=failed list shows the running job"
    );
    // The unfiltered list shows it running, then done, without a reload.
    b.goto(&s, "/jobs").await;
    b.js("window.__sameDocument = true; return true;").await;
    b.wait("the list's stream", Duration::from_secs(15), live)
        .await;
    assert!(row("list", waiting)
        .await
        .is_some_and(|t| t.contains("running")));
    std::fs::write(&marker2, "go").expect("marker");
    b.wait("its final status", Duration::from_secs(30), || async {
        row("list", waiting)
            .await
            .is_some_and(|t| t.contains("succeeded") && t.contains("exit 0"))
    })
    .await;
    assert_eq!(
        b.js("return window.__sameDocument === true;").await,
        serde_json::json!(true)
    );
    b.quit().await;
}

/// Every visible element that is a light box on a dark page (a background of luminance over
/// 0.5) or whose own text has a contrast under 4.5:1 (WCAG AA) against the background it is
/// drawn on, as "TAG.class: what".
const UNREADABLE: &str = r#"
function rgba(c) { var m = c.match(/[\d.]+/g); if (!m) return null; return [+m[0], +m[1], +m[2], m.length > 3 ? +m[3] : 1]; }
function lum(c) { var v = c.slice(0, 3).map(function (x) { x = x / 255; return x <= 0.03928 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4); }); return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2]; }
function under(e) { for (; e; e = e.parentElement) { var c = rgba(getComputedStyle(e).backgroundColor); if (c && c[3] > 0.5) return c; } return [255, 255, 255, 1]; }
var bad = [];
document.querySelectorAll('body, body *').forEach(function (e) {
  if (!e.getClientRects().length || getComputedStyle(e).visibility === 'hidden') return;
  var name = e.tagName + '.' + e.className;
  var own = rgba(getComputedStyle(e).backgroundColor);
  var r = e.getBoundingClientRect();
  // A status dot (a few pixels, no text) is a colour, not a box.
  var dot = r.width < 16 && r.height < 16 && !e.textContent.trim();
  if (own && own[3] > 0.5 && lum(own) > 0.5 && !dot) bad.push(name + ': light background ' + getComputedStyle(e).backgroundColor);
  var text = Array.prototype.some.call(e.childNodes, function (n) { return n.nodeType === 3 && n.textContent.trim(); });
  if (!text || e.disabled) return;
  var fg = lum(rgba(getComputedStyle(e).color)), bg = lum(under(e));
  var ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
  if (ratio < 4.5) bad.push(name + ': contrast ' + ratio.toFixed(2) + ' (' + getComputedStyle(e).color + ' on ' + under(e).join(',') + ')');
});
return bad;
"#;

/// The dark theme (`prefers-color-scheme: dark`, emulated through the DevTools protocol):
/// screenshots of the dashboard, a job page, the editor with an error and the agents page, and no light box
/// left anywhere on them (every element's background is dark, its text light).
#[tokio::test]
async fn the_dark_theme_has_no_light_boxes_on_the_main_pages() {
    let s = server();
    s.apply_yaml(
        "name: nightly-backup\ntype: bash\nscript: echo backup\nschedule: \"0 30 2 * * *\"\n",
    )
    .await;
    s.apply_yaml("name: flaky-report\ntype: python\nscript: |\n  import sys\n  print('connecting to the warehouse')\n  print('timeout talking to db-2', file=sys.stderr)\n  sys.exit(3)\n").await;
    s.apply_yaml("name: counter\ntype: bash\nscript: |\n  echo counting\n  cronium.setVariable runs 1\n  cronium.output total 1\n").await;
    let failed = s.run_event("flaky-report", None).await;
    s.wait_job(failed, Duration::from_secs(60)).await;
    let ok = s.run_event("counter", None).await;
    s.wait_job(ok, Duration::from_secs(60)).await;
    let b = Browser::start().await;
    b.d()
        .cdp()
        .send_raw(
            "Emulation.setEmulatedMedia",
            serde_json::json!({"features": [{"name": "prefers-color-scheme", "value": "dark"}]}),
        )
        .await
        .expect("emulate the dark scheme");
    b.login(&s).await;
    for (path, name) in [
        ("/".to_string(), "dashboard-dark"),
        (format!("/jobs/{failed}"), "job-dark"),
        ("/events/counter/edit".to_string(), "editor-dark"),
        ("/agents".to_string(), "agents-dark"),
    ] {
        b.goto(&s, &path).await;
        assert_eq!(
            b.js("return window.matchMedia('(prefers-color-scheme: dark)').matches;")
                .await,
            serde_json::json!(true),
            "the dark scheme is not emulated"
        );
        if name == "editor-dark" {
            let yaml = b
                .d()
                .find(By::Id("yaml"))
                .await
                .expect("editor")
                .value()
                .await
                .expect("value")
                .unwrap_or_default();
            assert!(yaml.contains("timeout: 1h"), "{yaml}");
            b.set_text("yaml", &yaml.replace("timeout: 1h", "timeout: soon"))
                .await;
            b.click(By::Id("save")).await;
            b.wait("the editor's error", Duration::from_secs(10), || async {
                b.d().find(By::Id("editor-error")).await.is_ok()
            })
            .await;
        }
        let bad = b.js(UNREADABLE).await;
        assert_eq!(
            bad,
            serde_json::json!([]),
            "{name}: light boxes or dark text"
        );
        b.shot(name).await;
    }
    b.quit().await;
}

/// The class of a node's group in the run page's SVG (`node running`), read through
/// WebDriver as the page's script leaves it.
async fn node_class(b: &Browser, node: &str) -> String {
    match b
        .d()
        .find(By::Css(format!("svg.graph g.node[data-node='{node}']")))
        .await
    {
        Ok(el) => el.attr("class").await.ok().flatten().unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn wait_node(b: &Browser, node: &str, class: &str) {
    let want = format!("node {class}");
    b.wait(
        &format!("{node} to be {class}"),
        Duration::from_secs(60),
        || async { node_class(b, node).await == want },
    )
    .await;
}

fn run_id_of(path: &str) -> i64 {
    path.trim_start_matches("/workflow-runs/")
        .split('?')
        .next()
        .and_then(|i| i.parse().ok())
        .unwrap_or_else(|| panic!("not a run page: {path}"))
}

/// Watch a workflow graph change colour as nodes finish: the page is loaded once, and its
/// script moves each node through running, succeeded, failed or skipped (with its reason)
/// from the run's stream; retry and cancel through the page's buttons. Screenshots of the
/// workflow's page and of a run (light and dark).
#[tokio::test]
async fn watch_a_workflow_graph_change_colour_as_nodes_finish() {
    let s = server();
    let dir = shared_tempdir();
    let f = |name: &str| dir.path().join(name).display().to_string();
    let wf = serde_json::json!({
        "name": "release",
        "input": {"version": "1.4"},
        "nodes": [
            {"id": "build", "type": "bash",
             "script": format!("echo \"building $(cronium.input version)\"\nwhile [ ! -f {} ]; do sleep 0.05; done\necho built", f("built"))},
            {"id": "rollback", "type": "bash", "after": {"build": "failure"}, "script": "echo rolling back"},
            {"id": "test", "type": "python", "after": ["build"],
             "script": format!("import os, sys, time\nprint('testing', flush=True)\nwhile not os.path.exists('{}'):\n    time.sleep(0.05)\nif not os.path.exists('{}'):\n    print('3 tests failed', flush=True)\n    sys.exit(1)\nprint('all tests passed')", f("tested"), f("fixed"))},
            {"id": "docs", "type": "bash", "after": ["build"], "script": "echo docs built"},
            {"id": "publish", "type": "bash", "after": ["test", "docs"], "script": "echo published"},
            {"id": "announce", "type": "bash", "after": {"publish": "always"}, "script": "echo announced"},
        ]
    });
    let (st, body) = s.api("PUT", "/api/v1/workflows/release", Some(wf)).await;
    assert_eq!(st, 200, "{body}");
    let b = Browser::start().await;
    b.login(&s).await;

    // The list, then the workflow's page: the graph drawn by the server.
    b.goto(&s, "/workflows").await;
    b.click(By::LinkText("release")).await;
    b.wait("the workflow page", Duration::from_secs(15), || async {
        b.path().await == "/workflows/release"
    })
    .await;
    // A taller window, so that the screenshots hold the whole graph.
    b.d()
        .set_window_rect(0, 0, 1280, 1300)
        .await
        .expect("resize");
    let groups = b
        .d()
        .find_all(By::Css("svg.graph g.node"))
        .await
        .expect("nodes");
    assert_eq!(groups.len(), 6);
    b.shot("workflow").await;

    // Run it with the default input: the run's page, live.
    b.click(By::Id("run")).await;
    b.wait("the run page", Duration::from_secs(15), || async {
        b.path().await.starts_with("/workflow-runs/")
    })
    .await;
    let run = run_id_of(&b.path().await);
    wait_node(&b, "build", "running").await;
    assert_eq!(node_class(&b, "test").await, "node waiting");
    assert_eq!(node_class(&b, "publish").await, "node waiting");
    b.wait(
        "the build's line in the combined log",
        Duration::from_secs(30),
        || async {
            let t = b.log_text().await;
            t.contains("build") && t.contains("building 1.4")
        },
    )
    .await;

    // build succeeds: rollback is skipped with its reason, test and docs run.
    std::fs::write(f("built"), "").expect("built");
    wait_node(&b, "build", "succeeded").await;
    wait_node(&b, "rollback", "skipped").await;
    wait_node(&b, "test", "running").await;
    wait_node(&b, "docs", "succeeded").await;
    let why = b.text_of(By::Css("tr[data-node='rollback'] .n-why")).await;
    assert_eq!(why, "skipped: build succeeded, edge needs failure");
    let job_link = b
        .d()
        .find(By::Css("a[data-link='test']"))
        .await
        .expect("test's link")
        .attr("href")
        .await
        .expect("href")
        .unwrap_or_default();
    assert!(
        job_link.starts_with("/jobs/"),
        "a node links to its job: {job_link}"
    );
    b.shot("workflow-run").await;

    // test fails: publish is skipped, announce runs (always), the run fails; retry offered.
    std::fs::write(f("tested"), "").expect("tested");
    wait_node(&b, "test", "failed").await;
    wait_node(&b, "publish", "skipped").await;
    wait_node(&b, "announce", "succeeded").await;
    b.wait("the run to fail", Duration::from_secs(30), || async {
        b.text_of(By::Id("run-status")).await == "failed"
    })
    .await;
    let retry = b.d().find(By::Id("retry")).await.expect("retry");
    assert!(
        retry.is_displayed().await.expect("shown"),
        "retry is offered"
    );
    assert!(!b
        .d()
        .find(By::Id("cancel"))
        .await
        .expect("cancel")
        .is_displayed()
        .await
        .expect("shown"));
    b.wait("test's log", Duration::from_secs(30), || async {
        b.log_text().await.contains("3 tests failed")
    })
    .await;
    let why = b.text_of(By::Css("tr[data-node='publish'] .n-why")).await;
    assert_eq!(why, "skipped: test failed, edge needs success");
    // The node's job page links back to the run.
    b.goto(&s, &job_link).await;
    b.click(By::Id("workflow-run")).await;
    b.wait("back on the run", Duration::from_secs(15), || async {
        b.path().await == format!("/workflow-runs/{run}")
    })
    .await;
    // Dark theme, through the browser's emulation of prefers-color-scheme.
    let cdp = b.d().cdp();
    cdp.send_raw(
        "Emulation.setEmulatedMedia",
        serde_json::json!({"features": [{"name": "prefers-color-scheme", "value": "dark"}]}),
    )
    .await
    .expect("dark");
    b.d().refresh().await.expect("reload");
    wait_node(&b, "test", "failed").await;
    b.shot("workflow-run-dark").await;
    cdp.send_raw(
        "Emulation.setEmulatedMedia",
        serde_json::json!({"features": [{"name": "prefers-color-scheme", "value": "light"}]}),
    )
    .await
    .expect("light");

    // Fix and retry from the page: build and docs are kept, test passes, publish runs.
    std::fs::write(f("fixed"), "").expect("fixed");
    b.click(By::Id("retry")).await;
    b.wait("the retry's page", Duration::from_secs(15), || async {
        let p = b.path().await;
        p.starts_with("/workflow-runs/") && run_id_of(&p) != run
    })
    .await;
    wait_node(&b, "publish", "succeeded").await;
    b.wait("the retry to succeed", Duration::from_secs(30), || async {
        b.text_of(By::Id("run-status")).await == "succeeded"
    })
    .await;
    assert_eq!(node_class(&b, "build").await, "node succeeded");
    let why = b.text_of(By::Css("tr[data-node='build'] .n-why")).await;
    assert!(why.contains(&format!("kept from run {run}")), "{why}");

    // Cancel a running run from its page.
    std::fs::remove_file(f("built")).expect("remove");
    b.goto(&s, "/workflows/release").await;
    b.click(By::Id("run")).await;
    b.wait("the new run page", Duration::from_secs(15), || async {
        b.path().await.starts_with("/workflow-runs/")
    })
    .await;
    let third = run_id_of(&b.path().await);
    wait_node(&b, "build", "running").await;
    b.click(By::Id("cancel")).await;
    b.d().accept_alert().await.expect("confirm");
    b.wait("the cancellation", Duration::from_secs(30), || async {
        b.text_of(By::Id("run-status")).await == "cancelled"
    })
    .await;
    wait_node(&b, "build", "cancelled").await;
    let (_, d) = s
        .api("GET", &format!("/api/v1/workflow-runs/{third}"), None)
        .await;
    assert_eq!(d["run"]["status"], "cancelled", "{d:#}");
    b.quit().await;
}

/// An admin creates an agent token on the agents page (its value shown once), a real
/// `cronium agent` started with it appears there as connected beside the server's embedded
/// agent, and after a revoke from the page the agent is refused and exits 1.
#[tokio::test]
async fn create_an_agent_token_on_the_agents_page_and_see_the_agent_connect() {
    let s = server();
    let b = Browser::start().await;
    b.login(&s).await;
    b.goto(&s, "/agents").await;
    b.set_text("agent-token-name", "edge-eu").await;
    b.click(By::Css("form[action='/agents/tokens'] button[type=submit]"))
        .await;
    b.wait("the new token", Duration::from_secs(10), || async {
        b.d().find(By::Id("new-agent-token")).await.is_ok()
    })
    .await;
    let token = b.text_of(By::Id("new-agent-token")).await;
    assert!(token.starts_with("crn_"), "{token}");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = Command::new(cronium_bin())
        .args([
            "agent",
            "--url",
            &s.url,
            "--name",
            "edge-eu-1",
            "--tag",
            "eu",
        ])
        .arg("--runner")
        .arg(runner_bin())
        .arg("--data-dir")
        .arg(dir.path().join("agent"))
        .env("CRONIUM_AGENT_TOKEN", &token)
        .env_remove("CRONIUM_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cronium agent");
    // The page is server-rendered: reload until the agent is listed as connected.
    b.wait("the agent, connected", Duration::from_secs(30), || async {
        b.goto(&s, "/agents").await;
        match b
            .d()
            .find(By::Css("tr[data-agent='edge-eu-1'] td.state"))
            .await
        {
            Ok(td) => td.text().await.unwrap_or_default() == "connected",
            Err(_) => false,
        }
    })
    .await;
    let table = b.text_of(By::Id("agents")).await;
    assert!(table.contains("remote") && table.contains("eu"), "{table}");
    assert!(
        table.contains("embedded"),
        "the server's own agent is listed: {table}"
    );
    let tokens = b.text_of(By::Id("agent-tokens")).await;
    assert!(
        tokens.contains("edge-eu") && tokens.contains("active"),
        "{tokens}"
    );
    assert!(
        !b.d().source().await.expect("source").contains(&token[8..]),
        "the token's value is not shown again"
    );
    b.shot("agents").await;
    // On a phone: the tables scroll in their own box, the page does not.
    b.d().set_window_rect(0, 0, 390, 844).await.expect("resize");
    b.goto(&s, "/agents").await;
    b.shot("agents-phone").await;
    let overflow = b
        .js("return document.documentElement.scrollWidth > window.innerWidth + 1;")
        .await;
    assert_eq!(
        overflow,
        serde_json::json!(false),
        "the agents page overflows a phone"
    );

    // Revoke it from the page (the confirm dialog accepted by script).
    b.js("window.confirm = () => true; return true;").await;
    b.click(By::Css(
        "form[action='/agents/tokens/edge-eu/revoke'] button",
    ))
    .await;
    b.wait("the revoked token", Duration::from_secs(10), || async {
        b.text_of(By::Id("agent-tokens")).await.contains("revoked")
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = agent.try_wait().expect("try_wait") {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "the agent kept running after the revoke"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.code(), Some(1), "{status:?}");
    b.quit().await;
}
