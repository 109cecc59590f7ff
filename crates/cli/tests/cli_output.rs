//! What the CLI prints: tables aligned whatever the width of their cells, `--json` on every list
//! command with the documented fields, shell completions.

mod support;

use std::process::Command;

use serde_json::Value;
use support::*;

/// The offsets (in characters) where each header's column starts.
fn header_offsets(header: &str, names: &[&str]) -> Vec<usize> {
    let mut from = 0;
    names
        .iter()
        .map(|n| {
            let at = from + header[from..].find(n).expect("header name");
            from = at + n.len();
            header[..at].chars().count()
        })
        .collect()
}

/// Every line has a cell starting at each column's offset: a blank before it, text at it (or
/// nothing up to the next column, for an empty cell).
fn assert_aligned(text: &str, names: &[&str]) {
    let mut lines = text.lines();
    let header = lines.next().expect("a header line");
    let offsets = header_offsets(header, names);
    for line in lines {
        let chars: Vec<char> = line.chars().collect();
        for (i, &at) in offsets.iter().enumerate() {
            let next = offsets.get(i + 1).copied().unwrap_or(usize::MAX);
            let empty = chars
                .iter()
                .skip(at)
                .take(next.saturating_sub(at))
                .all(|c| c.is_whitespace());
            let starts_here = chars.get(at).is_some_and(|c| !c.is_whitespace())
                && (at == 0 || chars[at - 1] == ' ');
            assert!(
                starts_here || empty,
                "column {} ({}) does not start at {at} on\n{line}\nin\n{text}",
                i + 1,
                names[i]
            );
        }
    }
}

#[tokio::test]
async fn tables_align_for_any_id_width() {
    let s = Server::start();
    s.apply_yaml("name: a\ntype: bash\nscript: 'true'\n").await;
    s.apply_yaml(
        "name: a-much-longer-event-name-than-thirty-characters\ntype: bash\nscript: 'true'\n",
    )
    .await;
    // Ids 1 to 11: one and two digits in one table.
    for i in 0..11 {
        let event = if i % 2 == 0 {
            "a"
        } else {
            "a-much-longer-event-name-than-thirty-characters"
        };
        s.run_event(event, None).await;
    }
    let o = s.cli(&["job", "list", "--limit", "50"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert_eq!(text.lines().count(), 12, "{text}");
    assert!(text.lines().any(|l| l.starts_with("11 ")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("9 ")), "{text}");
    assert_aligned(
        &text,
        &["ID", "EVENT", "STATUS", "TRIGGER", "EXIT", "CREATED"],
    );

    let o = s.cli(&["event", "list"]);
    assert_aligned(
        &stdout(&o),
        &["NAME", "TYPE", "STATUS", "SCHEDULE", "NEXT RUN"],
    );
    for name in ["t", "a-token-with-a-long-name"] {
        assert!(s.cli(&["token", "create", name]).status.success());
    }
    let o = s.cli(&["token", "list"]);
    assert_aligned(
        &stdout(&o),
        &[
            "ID",
            "NAME",
            "USER",
            "ROLE",
            "CREATED",
            "EXPIRES",
            "LAST USED",
            "REVOKED",
        ],
    );
    let o = s.cli(&["user", "list"]);
    assert_aligned(
        &stdout(&o),
        &["NAME", "ROLE", "STATE", "CREATED", "LAST LOGIN"],
    );
    for (name, value) in [("x", "1"), ("a-long-variable-name", "\"text\"")] {
        assert!(s.cli(&["var", "set", name, value]).status.success());
    }
    let o = s.cli(&["var", "list"]);
    assert_aligned(&stdout(&o), &["NAME", "VALUE"]);
    for (name, host, tag) in [
        ("w1", "127.0.0.1", "web"),
        ("a-long-server-name", "localhost", "db"),
    ] {
        let o = Command::new(cronium_bin())
            .args([
                "server",
                "add",
                name,
                "--host",
                host,
                "--tag",
                tag,
                "--password-env",
            ])
            .arg("CRONIUM_TEST_SERVER_PW")
            .env("CRONIUM_TEST_SERVER_PW", "pw")
            .env("CRONIUM_URL", &s.url)
            .env("CRONIUM_TOKEN", &s.token)
            .output()
            .expect("server add");
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let o = s.cli(&["server", "list"]);
    assert_aligned(
        &stdout(&o),
        &["NAME", "ADDRESS", "USER", "HOST KEY", "TAGS"],
    );
}

#[tokio::test]
async fn every_list_command_prints_json_with_the_documented_fields() {
    let s = Server::start();
    s.apply_yaml("name: listed\ntype: bash\nscript: 'true'\n")
        .await;
    s.run_event("listed", None).await;
    assert!(s.cli(&["var", "set", "v", "1"]).status.success());
    let o = Command::new(cronium_bin())
        .args([
            "server",
            "add",
            "srv",
            "--host",
            "127.0.0.1",
            "--password-env",
            "PW",
        ])
        .env("PW", "pw")
        .env("CRONIUM_URL", &s.url)
        .env("CRONIUM_TOKEN", &s.token)
        .output()
        .expect("server add");
    assert!(o.status.success(), "{}", stderr(&o));
    for (command, fields) in [
        (
            &["event", "list"][..],
            &[
                "name",
                "version",
                "status",
                "spec",
                "next_fire_at",
                "broken",
            ][..],
        ),
        (
            &["job", "list"],
            &[
                "id",
                "event",
                "status",
                "trigger",
                "exit_code",
                "created_at",
            ],
        ),
        (&["var", "list"], &["name", "value", "secret", "updated_at"]),
        (
            &["token", "list"],
            &[
                "id",
                "name",
                "user",
                "role",
                "expires_at",
                "created_at",
                "last_used_at",
                "revoked_at",
            ],
        ),
        (
            &["user", "list"],
            &["name", "role", "disabled", "created_at", "last_login_at"],
        ),
        (
            &["server", "list"],
            &["name", "host", "port", "user", "auth", "host_key", "tags"],
        ),
    ] {
        let mut args = command.to_vec();
        args.push("--json");
        let o = s.cli(&args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        let v: Value = serde_json::from_str(&stdout(&o))
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", stdout(&o)));
        let items = v
            .as_array()
            .unwrap_or_else(|| panic!("{args:?}: not a list"));
        assert!(!items.is_empty(), "{args:?}: empty");
        for item in items {
            for f in fields {
                assert!(item.get(*f).is_some(), "{args:?}: no `{f}` in {item}");
            }
        }
    }
}

#[test]
fn completions_print_a_script_for_each_shell() {
    for (shell, needle, json_flag) in [
        ("bash", "complete -F", "--json"),
        ("zsh", "#compdef cronium", "--json"),
        ("fish", "complete -c cronium", "-l json"),
    ] {
        let o = Command::new(cronium_bin())
            .args(["completions", shell])
            .output()
            .expect("cronium completions");
        assert!(o.status.success(), "{shell}: {}", stderr(&o));
        let script = stdout(&o);
        assert!(script.contains(needle), "{shell}: {script}");
        // Subcommands and their flags are completed.
        assert!(
            script.contains("event") && script.contains(json_flag),
            "{shell}"
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let o = Command::new(cronium_bin())
        .args(["completions", "bash"])
        .output()
        .expect("cronium completions");
    let path = write(dir.path(), "cronium.bash", &stdout(&o));
    let check = Command::new("bash")
        .arg("-n")
        .arg(&path)
        .output()
        .expect("bash -n");
    assert!(check.status.success(), "bash -n: {}", stderr(&check));
    let o = Command::new(cronium_bin())
        .args(["completions", "tcsh"])
        .output()
        .expect("cronium completions");
    assert!(!o.status.success(), "an unknown shell is refused");
}

/// `cronium ... | head` ends quietly, as Unix tools do: no panic about the broken pipe.
#[test]
fn a_client_command_piped_into_head_ends_without_a_panic() {
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "'{}' completions bash | head -n 1 >/dev/null; echo \"${{PIPESTATUS[0]}}\"",
            cronium_bin().display()
        ))
        .output()
        .expect("bash");
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "stderr: {err}");
    // Killed by SIGPIPE (141 in bash) or finished before head closed the pipe.
    let code = stdout(&o).trim().to_string();
    assert!(
        code == "141" || code == "0",
        "exit status {code}, stderr: {err}"
    );
}

/// The systemd units shipped in deploy/systemd start the binary with flags it has: each
/// `ExecStart` names our binary, a subcommand and only options its `--help` lists.
#[test]
fn the_shipped_systemd_units_use_only_flags_the_binary_has() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/systemd");
    let mut units = 0;
    for entry in std::fs::read_dir(&dir).expect("deploy/systemd") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("service") {
            continue;
        }
        units += 1;
        let text = std::fs::read_to_string(&path).expect("read unit");
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap_or_else(|| panic!("{}: no ExecStart", path.display()));
        let mut words = exec.split_whitespace();
        assert_eq!(words.next(), Some("/usr/local/bin/cronium"), "{exec}");
        let sub = words.next().expect("a subcommand");
        let help = Command::new(cronium_bin())
            .args([sub, "--help"])
            .output()
            .expect("run --help");
        assert!(
            help.status.success(),
            "{}: `cronium {sub}` does not exist",
            path.display()
        );
        let help = String::from_utf8_lossy(&help.stdout).to_string();
        for w in words.filter(|w| w.starts_with("--")) {
            let flag = w.split('=').next().unwrap_or(w);
            assert!(
                help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                "{}: `cronium {sub}` has no {flag}",
                path.display()
            );
        }
        for key in [
            "User=",
            "EnvironmentFile=",
            "KillSignal=SIGTERM",
            "WantedBy=",
        ] {
            assert!(text.contains(key), "{}: no {key}", path.display());
        }
    }
    assert!(units >= 1, "no unit in {}", dir.display());
}
