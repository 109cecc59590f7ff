//! `cronium-runner health`: the real binary's reading of this machine, checked against what the
//! kernel says through other means (`df`, `/proc`, `sysconf`).

use std::process::Command;

use cronium_protocol::Health;

const RUNNER: &str = env!("CARGO_BIN_EXE_cronium-runner");

fn df(path: &std::path::Path, field: &str) -> u64 {
    let out = Command::new("df")
        .args(["-B1", &format!("--output={field}")])
        .arg(path)
        .output()
        .expect("df runs");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .nth(1)
        .expect("df prints a value")
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn health_reports_this_host_as_json() {
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(RUNNER)
        .args(["health", "--work-dir"])
        .arg(work.path())
        .args(["--deploy-dir", "/"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "one JSON line: {text}");
    let h: Health = serde_json::from_str(&text).unwrap();
    assert_eq!(h.runner_version, env!("CARGO_PKG_VERSION"));
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) } as u32;
    assert_eq!(h.cpus, cpus);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert_eq!(h.memory_total_bytes, total_kib * 1024);
    assert!(h.memory_available_bytes > 0 && h.memory_available_bytes <= h.memory_total_bytes);
    assert!(h.load.iter().all(|l| *l >= 0.0), "{:?}", h.load);
    assert!(h.uptime_s > 0);
    assert_eq!(h.work_dir.path, work.path().display().to_string());
    assert_eq!(h.work_dir.total_bytes, df(work.path(), "size"));
    // Free space moves while other things write; df's figure is within a few MiB.
    let free = df(work.path(), "avail") as i64;
    assert!(
        (h.work_dir.free_bytes as i64 - free).abs() < 64 << 20,
        "{} vs df {free}",
        h.work_dir.free_bytes
    );
    assert!(h.work_dir.free_bytes <= h.work_dir.total_bytes);
    assert_eq!(h.deploy_dir.path, "/");
    assert_eq!(
        h.deploy_dir.total_bytes,
        df(std::path::Path::new("/"), "size")
    );
}

#[test]
fn health_defaults_to_the_binary_directory_for_deploy_dir() {
    let out = Command::new(RUNNER).arg("health").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let h: Health = serde_json::from_slice(&out.stdout).unwrap();
    let dir = std::path::Path::new(RUNNER).parent().unwrap();
    assert_eq!(
        std::fs::canonicalize(&h.deploy_dir.path).unwrap(),
        std::fs::canonicalize(dir).unwrap()
    );
    assert!(!h.work_dir.path.is_empty());
}

#[test]
fn health_of_a_missing_directory_fails_naming_the_flag() {
    let out = Command::new(RUNNER)
        .args(["health", "--work-dir", "/nonexistent/cronium-health"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--work-dir /nonexistent/cronium-health: "),
        "{err}"
    );
}
