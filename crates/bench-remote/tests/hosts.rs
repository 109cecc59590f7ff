//! The benchmark's hosts are real sshd instances that accept the generated key for the plain
//! login user, and every one of them (with its sessions) is gone once the fleet is dropped: a
//! benchmark that leaked 50 sshd processes would skew every later measurement on the machine.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cronium_bench_remote::hosts::{Fleet, USER};

fn workspace() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn alive(pid: u32) -> bool {
    // A zombie still has a /proc entry; its state letter is Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

#[test]
fn fleet_accepts_the_key_and_is_killed_on_drop() {
    let fleet = Fleet::start(workspace(), 3).expect("start 3 sshd");
    let pids: Vec<u32> = fleet.hosts.iter().filter_map(|h| h.pid()).collect();
    assert_eq!(pids.len(), 3);
    let mut ports = fleet.ports();
    ports.dedup();
    assert_eq!(ports.len(), 3, "each host has its own port");
    for port in fleet.ports() {
        let out = Command::new("ssh")
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args(["-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-i"])
            .arg(&fleet.key.path)
            .args([
                "-p",
                &port.to_string(),
                &format!("{USER}@127.0.0.1"),
                "echo ok-$USER",
            ])
            .output()
            .expect("run ssh");
        assert!(
            out.status.success(),
            "ssh to port {port}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("ok-{USER}")
        );
    }
    drop(fleet);
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "sshd still running after drop: {pids:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn zero_hosts_is_refused_with_a_precise_error() {
    let err = Fleet::start(workspace(), 0)
        .err()
        .expect("0 hosts must fail");
    assert!(err.to_string().contains("at least one host"), "{err}");
}
