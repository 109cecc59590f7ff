//! Payload validation: hostile or broken archives are refused with a message naming the problem,
//! nothing is executed, nothing is written outside the work base, and the working directory is
//! removed. Also the payload-on-stdin mode (`run - --control-stdin`).

mod common;

use std::time::Duration;

use common::*;
use cronium_protocol::{RunStatus, RunnerEvent};
use flate2::write::GzEncoder;
use serde_json::json;

/// A script that leaves a trace if it is ever run.
const TRACE: &str = "touch \"$MARKER\"\n";

fn ctx(scratch: &Scratch) -> serde_json::Value {
    context(json!({"env": {"MARKER": scratch.path("executed").to_str().unwrap()}}))
}

fn good_manifest() -> serde_json::Value {
    manifest("bash", "main.sh", json!({}))
}

/// Runs a payload that must be refused and checks the refusal.
fn assert_refused(scratch: &Scratch, payload: &[u8], needle: &str) -> String {
    let out = run(scratch, payload, &ctx(scratch));
    assert_refused_output(scratch, &out, needle)
}

fn assert_refused_output(scratch: &Scratch, out: &RunOutput, needle: &str) -> String {
    let fin = out.finished();
    assert_eq!(fin.status, RunStatus::Failed);
    assert_eq!(fin.exit_code, None);
    let error = fin.error.clone().unwrap_or_default();
    assert!(
        error.contains(needle),
        "error {error:?} should mention {needle:?}"
    );
    assert_eq!(out.code, 2);
    assert!(
        !out.events
            .iter()
            .any(|e| matches!(e, RunnerEvent::Started { .. })),
        "script started"
    );
    assert!(!scratch.path("executed").exists(), "script was executed");
    scratch.assert_clean();
    error
}

fn raw_entry(
    b: &mut tar::Builder<GzEncoder<Vec<u8>>>,
    name: &[u8],
    kind: tar::EntryType,
    link: Option<&str>,
    data: &[u8],
) {
    let mut h = tar::Header::new_gnu();
    // Written byte by byte: the tar crate's path setters refuse these names themselves.
    let gnu = h.as_gnu_mut().unwrap();
    gnu.name[..name.len()].copy_from_slice(name);
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    if let Some(link) = link {
        h.set_link_name(link).unwrap();
    }
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn with_good_payload(extra: impl FnOnce(&mut tar::Builder<GzEncoder<Vec<u8>>>)) -> Vec<u8> {
    archive(|b| {
        add_file(b, "manifest.yaml", good_manifest().to_string().as_bytes());
        add_file(b, "main.sh", TRACE.as_bytes());
        extra(b);
    })
}

#[test]
fn absolute_path_entry_is_refused() {
    let scratch = Scratch::new();
    let target = scratch.path("abs-escape");
    let p = with_good_payload(|b| {
        raw_entry(
            b,
            target.to_str().unwrap().as_bytes(),
            tar::EntryType::Regular,
            None,
            b"x",
        )
    });
    assert_refused(&scratch, &p, "absolute path");
    assert!(!target.exists());
}

#[test]
fn parent_dir_entry_is_refused() {
    let scratch = Scratch::new();
    let p = with_good_payload(|b| {
        raw_entry(b, b"../escape", tar::EntryType::Regular, None, b"x");
        raw_entry(b, b"a/../../escape2", tar::EntryType::Regular, None, b"x");
    });
    assert_refused(&scratch, &p, "`..` component");
    // The working directory sits in the work base: `..` would land there or above it.
    assert!(!scratch.work().join("escape").exists());
    assert!(!scratch.path("escape").exists());
    assert!(!scratch.path("escape2").exists());
}

#[test]
fn symlinks_are_refused() {
    let scratch = Scratch::new();
    let outside = scratch.path("outside");
    std::fs::create_dir(&outside).unwrap();
    let p = with_good_payload(|b| {
        raw_entry(
            b,
            b"link",
            tar::EntryType::Symlink,
            Some(outside.to_str().unwrap()),
            b"",
        );
        raw_entry(b, b"link/planted", tar::EntryType::Regular, None, b"x");
    });
    assert_refused(&scratch, &p, "`link` is a symbolic link");
    assert!(!outside.join("planted").exists());
}

#[test]
fn hard_links_are_refused() {
    let scratch = Scratch::new();
    let p = with_good_payload(|b| {
        raw_entry(b, b"hard", tar::EntryType::Link, Some("/etc/passwd"), b"");
    });
    assert_refused(&scratch, &p, "`hard` is a hard link");
}

#[test]
fn device_files_and_fifos_are_refused() {
    let scratch = Scratch::new();
    let p = with_good_payload(|b| raw_entry(b, b"pipe", tar::EntryType::Fifo, None, b""));
    assert_refused(&scratch, &p, "`pipe` is a fifo");
    let p = with_good_payload(|b| raw_entry(b, b"null", tar::EntryType::Char, None, b""));
    assert_refused(&scratch, &p, "`null` is a character device");
}

#[test]
fn oversized_compressed_archive_is_refused() {
    let scratch = Scratch::new();
    // A sparse file: 65 MiB on paper, nothing on disk.
    let path = scratch.path("huge.tgz");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(65 * 1024 * 1024).unwrap();
    let out = run_path(&scratch, &path, &ctx(&scratch));
    assert_refused_output(&scratch, &out, "64 MiB");
}

#[test]
fn oversized_uncompressed_entry_is_refused() {
    let scratch = Scratch::new();
    // 300 MiB of zeros compresses to a few hundred KiB: a classic zip bomb.
    let size: u64 = 300 * 1024 * 1024;
    let p = archive(|b| {
        add_file(b, "manifest.yaml", good_manifest().to_string().as_bytes());
        add_file(b, "main.sh", TRACE.as_bytes());
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, "bomb.bin", std::io::repeat(0).take(size))
            .unwrap();
    });
    assert!(
        p.len() < 2 * 1024 * 1024,
        "test archive is {} bytes",
        p.len()
    );
    assert_refused(&scratch, &p, "256 MiB");
}

#[test]
fn too_many_entries_are_refused() {
    let scratch = Scratch::new();
    let p = with_good_payload(|b| {
        for i in 0..10_000 {
            add_file(b, &format!("f/{i}"), b"");
        }
    });
    assert_refused(&scratch, &p, "more than 10000 entries");
}

#[test]
fn missing_manifest_is_refused() {
    let scratch = Scratch::new();
    let p = archive(|b| add_file(b, "main.sh", TRACE.as_bytes()));
    assert_refused(&scratch, &p, "no manifest.yaml");
}

#[test]
fn unknown_interpreter_is_refused() {
    let scratch = Scratch::new();
    let p = payload(
        &manifest("ruby", "main.sh", json!({})),
        &[("main.sh", TRACE.as_bytes())],
    );
    let error = assert_refused(&scratch, &p, "manifest.yaml is invalid");
    assert!(error.contains("ruby"), "{error}");
}

#[test]
fn unknown_manifest_field_is_refused() {
    let scratch = Scratch::new();
    let p = payload(
        &manifest("bash", "main.sh", json!({"surprise": true})),
        &[("main.sh", TRACE.as_bytes())],
    );
    assert_refused(&scratch, &p, "surprise");
}

#[test]
fn newer_manifest_format_is_refused() {
    let scratch = Scratch::new();
    let p = payload(
        &manifest("bash", "main.sh", json!({"format": 2})),
        &[("main.sh", TRACE.as_bytes())],
    );
    assert_refused(&scratch, &p, "manifest format 2 is not supported");
}

#[test]
fn bad_entrypoints_are_refused() {
    let scratch = Scratch::new();
    let cases = [
        (
            "nope.sh",
            "entrypoint `nope.sh` is missing from the payload",
        ),
        ("/bin/sh", "entrypoint `/bin/sh` is an absolute path"),
        (
            "../main.sh",
            "entrypoint `../main.sh` contains a `..` component",
        ),
        ("dir", "entrypoint `dir` is not a regular file"),
        ("", "entrypoint `` is empty"),
    ];
    for (entry, needle) in cases {
        let p = archive(|b| {
            add_file(
                b,
                "manifest.yaml",
                manifest("bash", entry, json!({})).to_string().as_bytes(),
            );
            add_file(b, "main.sh", TRACE.as_bytes());
            add_file(b, "dir/inner", b"");
        });
        assert_refused(&scratch, &p, needle);
    }
}

#[test]
fn reserved_helper_directory_is_refused() {
    let scratch = Scratch::new();
    let p = with_good_payload(|b| add_file(b, ".cronium/input.json", b"{}"));
    assert_refused(&scratch, &p, "reserved");
}

#[test]
fn corrupt_archive_is_refused() {
    let scratch = Scratch::new();
    assert_refused(&scratch, b"this is not gzip", "not a valid tar.gz");
}

#[test]
fn yaml_manifest_with_subdirectories_runs() {
    let scratch = Scratch::new();
    let yaml = "format: 1\ninterpreter: bash\nentrypoint: ./scripts/main.sh\n\
                timeout_ms: 10000\nenv:\n  GREETING: hello\nevent:\n  id: 1\n  name: yaml\n  version: 1\n";
    let p = archive(|b| {
        add_file(b, "manifest.yaml", yaml.as_bytes());
        add_file(
            b,
            "scripts/main.sh",
            b"echo \"$GREETING\"; cat scripts/data.txt\n",
        );
        add_file(b, "scripts/data.txt", b"data\n");
    });
    let out = run(&scratch, &p, &context(json!({})));
    assert_eq!(
        out.finished().status,
        RunStatus::Succeeded,
        "{:?}",
        out.events
    );
    assert_eq!(out.stdout(), vec!["hello", "data"]);
    scratch.assert_clean();
}

#[test]
fn payload_on_stdin_runs_with_helpers_and_control_channel() {
    let scratch = Scratch::new();
    let src = "cronium.output \"$(cronium.input)\"\necho ready\nsleep 1000\n";
    let p = script("bash", src, json!({"kill_grace_ms": 2_000}));
    let mut live = Live::start_stdin(&scratch, &p, &context(json!({"input": {"k": [1, "v"]}})));
    live.wait_for(
        Duration::from_secs(10),
        |e| matches!(e, RunnerEvent::Log { line, .. } if line == "ready"),
    );
    // After the archive bytes, the same stdin carries control lines.
    live.send("{\"t\":\"cancel\"}\n");
    let out = live.finish(Duration::from_secs(20));
    assert_eq!(
        out.finished().status,
        RunStatus::Cancelled,
        "{:?}",
        out.events
    );
    assert_eq!(out.last_output(), Some(json!({"k": [1, "v"]})));
    // Nothing of the payload is left behind: no file was ever written outside the work base.
    assert_eq!(
        std::fs::read_dir(scratch.root.path()).unwrap().count(),
        1,
        "only the work base exists"
    );
    scratch.assert_clean();
}

#[test]
fn payload_on_stdin_is_validated_like_a_file() {
    let scratch = Scratch::new();
    let p = with_good_payload(|b| raw_entry(b, b"../evil", tar::EntryType::Regular, None, b"x"));
    let live = Live::start_stdin(&scratch, &p, &ctx(&scratch));
    let out = live.finish(Duration::from_secs(20));
    assert_refused_output(&scratch, &out, "`..` component");
}

#[test]
fn payload_on_stdin_with_bad_length_is_refused() {
    let scratch = Scratch::new();
    let cases: [(&str, &[u8], &str); 3] = [
        ("abc\n", b"", "not a decimal byte count"),
        ("999999999999\n", b"", "64 MiB"),
        (
            "100\n",
            b"short",
            "stdin ended after 5 of the 100 payload bytes",
        ),
    ];
    for (length_line, bytes, needle) in cases {
        let mut live = Live::start_raw(&scratch);
        live.send(&format!("{}\n{length_line}", ctx(&scratch)));
        live.send_bytes(bytes);
        live.close_stdin();
        let out = live.finish(Duration::from_secs(20));
        assert_refused_output(&scratch, &out, needle);
    }
}

#[test]
fn invalid_run_context_is_refused() {
    let scratch = Scratch::new();
    let mut live = Live::start_raw(&scratch);
    live.send("{\"job_id\": \"not a number\"}\n");
    let out = live.finish(Duration::from_secs(20));
    assert_refused_output(&scratch, &out, "run context is not valid");
}

use std::io::Read as _;
