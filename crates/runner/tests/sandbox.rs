//! `--hide`: the script cannot reach a hidden directory (Landlock), while everything beside it
//! stays usable; the run's log says what was done.

mod common;

use common::*;
use cronium_protocol::{RunStatus, Stream};
use serde_json::json;

/// The Landlock ABI of the running kernel (0: none), asked the way the runner's crate does.
fn kernel_landlock_abi() -> i64 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attribute and size 0 this only returns the ABI version (or an error).
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    abi.max(0)
}

#[test]
fn a_hidden_directory_cannot_be_read_listed_or_changed_by_the_script() {
    let scratch = Scratch::new();
    let secret = scratch.path("data");
    let open = scratch.path("open");
    std::fs::create_dir_all(secret.join("payloads")).unwrap();
    std::fs::create_dir_all(&open).unwrap();
    std::fs::write(secret.join("secret.key"), "the-key-material").unwrap();
    std::fs::write(open.join("note"), "readable").unwrap();
    let src = r#"try() { if "$@" >/dev/null 2>&1; then echo "ALLOWED $*"; else echo "DENIED $*"; fi; }
try cat "$SECRET/secret.key"
try ls "$SECRET"
try ls "$SECRET/payloads"
try touch "$SECRET/new"
try rm -f "$SECRET/secret.key"
try cat /proc/$OUTSIDER/environ
try cat "$OPEN/note"
try touch "$OPEN/made-by-script"
try ls /usr/bin/env
"#;
    let out = run_with(
        &scratch,
        &script("bash", src, json!({})),
        &context(json!({"env": {
            "SECRET": secret.to_str().unwrap(),
            "OPEN": open.to_str().unwrap(),
            "OUTSIDER": std::process::id().to_string(),
        }})),
        &["--hide", secret.to_str().unwrap()],
    );
    assert_eq!(
        out.finished().status,
        RunStatus::Succeeded,
        "{:?}",
        out.events
    );
    let system = out.lines(Stream::System).join("\n");
    if kernel_landlock_abi() == 0 {
        assert!(
            system.contains("not"),
            "no word of the missing Landlock: {system}"
        );
        eprintln!("this kernel has no Landlock: only the report is checked");
        return;
    }
    assert!(system.contains("Landlock (ABI"), "{system}");
    assert!(system.contains("hidden from this script"), "{system}");
    let stdout = out.stdout();
    // SAFETY: geteuid has no preconditions.
    let is_root = unsafe { libc::geteuid() } == 0;
    let expect = [
        "DENIED cat {S}/secret.key",
        "DENIED ls {S}",
        "DENIED ls {S}/payloads",
        "DENIED touch {S}/new",
        "DENIED rm -f {S}/secret.key",
        // A process outside the script's Landlock domain (the test, as the server would be)
        // cannot be ptrace-read, so its environment is out of reach; root keeps that right
        // (CAP_SYS_PTRACE), so as root this only shows the line ran.
        if is_root {
            "ALLOWED cat /proc/{P}/environ"
        } else {
            "DENIED cat /proc/{P}/environ"
        },
        "ALLOWED cat {O}/note",
        "ALLOWED touch {O}/made-by-script",
        "ALLOWED ls /usr/bin/env",
    ];
    for (line, want) in stdout.iter().zip(expect) {
        let want = want
            .replace("{S}", secret.to_str().unwrap())
            .replace("{O}", open.to_str().unwrap())
            .replace("{P}", &std::process::id().to_string());
        assert!(
            line.starts_with(&want),
            "got {line:?}, want {want:?}: {stdout:?}"
        );
    }
    assert_eq!(stdout.len(), expect.len(), "{stdout:?}");
    assert_eq!(
        std::fs::read_to_string(secret.join("secret.key")).unwrap(),
        "the-key-material"
    );
    assert!(open.join("made-by-script").exists());
    scratch.assert_clean();
}

#[test]
fn without_hide_the_script_reaches_everything_its_user_can() {
    let scratch = Scratch::new();
    let dir = scratch.path("data");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("secret.key"), "k").unwrap();
    let out = run(
        &scratch,
        &script("bash", "cat \"$DIR/secret.key\"; echo", json!({})),
        &context(json!({"env": {"DIR": dir.to_str().unwrap()}})),
    );
    assert_eq!(out.stdout(), vec!["k"]);
    assert!(out
        .lines(Stream::System)
        .iter()
        .all(|l| !l.contains("Landlock")));
}

#[test]
fn hiding_the_root_directory_is_refused() {
    let scratch = Scratch::new();
    let out = run_with(
        &scratch,
        &script("bash", "echo never", json!({})),
        &context(json!({})),
        &["--hide", "/"],
    );
    let fin = out.finished();
    assert_eq!(fin.status, RunStatus::Failed);
    assert!(
        fin.error
            .as_deref()
            .unwrap_or_default()
            .contains("root directory"),
        "{fin:?}"
    );
    assert!(out.stdout().is_empty());
}
