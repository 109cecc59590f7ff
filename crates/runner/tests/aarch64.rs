//! The aarch64 runner that scripts/build-runner.sh cross-compiles
//! (target/runner/linux-aarch64/cronium-runner), run under qemu-user (`qemu-aarch64-static` from
//! Debian's qemu-user-static, which scripts/test.sh installs): it is an aarch64 ELF, static, and
//! runs a payload end to end: streams told apart, exit code, the working directory removed. The
//! script it starts is the host's bash (qemu-user passes an x86_64 exec to the kernel).
//!
//! Missing artifacts fail the test: build them with scripts/build-runner.sh, or leave aarch64
//! out explicitly with `CRONIUM_RUNNER_ARCHS=x86_64` (then these tests are skipped, saying so).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use cronium_protocol::{RunStatus, RunnerEvent, Stream};
use serde_json::json;

/// The cross-built runner, or None when aarch64 was left out on purpose.
fn aarch64_runner() -> Option<PathBuf> {
    if let Ok(archs) = std::env::var("CRONIUM_RUNNER_ARCHS") {
        if !archs.split([',', ' ']).any(|a| a == "aarch64") {
            eprintln!("skipped: CRONIUM_RUNNER_ARCHS={archs} leaves aarch64 out");
            return None;
        }
    }
    let path = std::env::var_os("CRONIUM_RUNNER_AARCH64")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/runner/linux-aarch64/cronium-runner")
        });
    assert!(
        path.is_file(),
        "{} is missing: run scripts/build-runner.sh (or set CRONIUM_RUNNER_ARCHS=x86_64)",
        path.display()
    );
    Some(path)
}

fn qemu() -> PathBuf {
    let q = PathBuf::from("/usr/bin/qemu-aarch64-static");
    assert!(
        q.is_file(),
        "{} is missing: apt-get install qemu-user-static",
        q.display()
    );
    q
}

#[test]
fn the_aarch64_runner_is_a_static_aarch64_elf_that_starts() {
    let Some(runner) = aarch64_runner() else {
        return;
    };
    let bytes = std::fs::read(&runner).expect("read the runner");
    assert_eq!(&bytes[..4], b"\x7fELF", "not an ELF file");
    // e_machine, little-endian: 183 is EM_AARCH64.
    assert_eq!(
        u16::from_le_bytes([bytes[18], bytes[19]]),
        183,
        "not aarch64"
    );
    assert!(bytes.len() <= 3 * 1024 * 1024, "{} bytes", bytes.len());
    // A static binary has no program interpreter (no PT_INTERP segment, type 3).
    let phoff = u64::from_le_bytes(bytes[32..40].try_into().expect("e_phoff")) as usize;
    let phentsize = u16::from_le_bytes([bytes[54], bytes[55]]) as usize;
    let phnum = u16::from_le_bytes([bytes[56], bytes[57]]) as usize;
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let p_type = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("p_type"));
        assert_ne!(p_type, 3, "dynamically linked (PT_INTERP)");
    }
    let out = Command::new(qemu())
        .arg(&runner)
        .arg("--version")
        .output()
        .expect("start qemu");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("cronium-runner {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn the_aarch64_runner_runs_a_payload_under_qemu() {
    let Some(runner) = aarch64_runner() else {
        return;
    };
    let qemu = qemu();
    let scratch = Scratch::new();
    let payload_path = scratch.path("payload.tgz");
    std::fs::write(
        &payload_path,
        script("bash", "echo out; echo err >&2; exit 7\n", json!({})),
    )
    .expect("write the payload");
    let out = run_launched(
        &[qemu.as_path(), runner.as_path()],
        &scratch,
        &payload_path,
        &context(json!({})),
        &[],
    );
    assert!(
        matches!(out.events.first(), Some(RunnerEvent::Started { .. })),
        "{:?} {}",
        out.events,
        out.stderr
    );
    let fin = out.finished();
    assert_eq!((fin.status, fin.exit_code), (RunStatus::Failed, Some(7)));
    assert_eq!(out.code, 7);
    assert_eq!(out.lines(Stream::Stdout), vec!["out"]);
    assert_eq!(out.lines(Stream::Stderr), vec!["err"]);
    scratch.assert_clean();
}
