//! Runner artifacts per architecture through the server and the CLI, against real `sshd`
//! instances: the runners found beside the configured one are registered and listed
//! (`runner list`, `GET /api/v1/runners`); each host's OS and architecture are detected on
//! first contact and stored (`server list|show`, the API); the artifact of the host's
//! architecture is the one deployed; a host of an architecture without a runner (a fake
//! `uname` on that sshd's `PATH` says `riscv64`) falls back to direct-ssh in auto mode and is a
//! clear error in runner-ssh mode.
//!
//! The aarch64 host is a fake too (`uname -m` says `aarch64` on this x86_64 machine): the
//! aarch64 binary is uploaded to it, which proves the selection, and then cannot run here
//! (no binfmt); the aarch64 binary itself runs under qemu in crates/runner/tests/aarch64.rs.

#[path = "../../ssh/tests/support/mod.rs"]
mod sshd;
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use support::*;

struct Setup {
    server: Server,
    deploy_dir: String,
    /// The runner directory given to the server: `cronium-runner` (x86_64) and
    /// `linux-aarch64/cronium-runner` with its manifest.
    _runners: tempfile::TempDir,
    x86_sha: String,
    arm_sha: String,
    arm_bytes: Vec<u8>,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(sshd::home_path(&self.deploy_dir));
    }
}

fn sha_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// The aarch64 runner scripts/build-runner.sh cross-builds beside the static one.
fn aarch64_runner() -> PathBuf {
    let p = static_runner_bin()
        .parent()
        .unwrap()
        .join("linux-aarch64/cronium-runner");
    assert!(
        p.is_file(),
        "{} is missing: run scripts/build-runner.sh (it cross-builds aarch64)",
        p.display()
    );
    p
}

fn setup() -> Setup {
    let runners = tempfile::tempdir().unwrap();
    let x86 = std::fs::read(static_runner_bin()).unwrap();
    let bin = runners.path().join("cronium-runner");
    std::fs::write(&bin, &x86).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let arm = std::fs::read(aarch64_runner()).unwrap();
    let arm_dir = runners.path().join("linux-aarch64");
    std::fs::create_dir(&arm_dir).unwrap();
    std::fs::write(arm_dir.join("cronium-runner"), &arm).unwrap();
    std::fs::set_permissions(
        arm_dir.join("cronium-runner"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let version = {
        let o = std::process::Command::new(&bin)
            .arg("--version")
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .strip_prefix("cronium-runner ")
            .unwrap()
            .to_string()
    };
    // What scripts/build-runner.sh writes: the version of a binary that cannot run here.
    std::fs::write(
        arm_dir.join("cronium-runner.json"),
        format!(
            "{{\"version\": \"{version}\", \"sha256\": \"{}\"}}\n",
            sha_hex(&arm)
        ),
    )
    .unwrap();
    // A directory whose manifest belongs to another build is left out (and logged).
    let stale = runners.path().join("linux-riscv64");
    std::fs::create_dir(&stale).unwrap();
    std::fs::write(stale.join("cronium-runner"), &arm).unwrap();
    std::fs::write(
        stale.join("cronium-runner.json"),
        format!(
            "{{\"version\": \"{version}\", \"sha256\": \"{}\"}}\n",
            "0".repeat(64)
        ),
    )
    .unwrap();
    let deploy_dir = format!(".cache/cronium-arch-{:08x}", rand::random::<u32>());
    let server = Server::start_with(ServerOpts {
        args: vec![
            "--static-runner".into(),
            bin.display().to_string(),
            "--ssh-deploy-dir".into(),
            deploy_dir.clone(),
            "--health-interval".into(),
            "0".into(),
        ],
        ..Default::default()
    });
    Setup {
        server,
        deploy_dir,
        _runners: runners,
        x86_sha: sha_hex(&x86),
        arm_sha: sha_hex(&arm),
        arm_bytes: arm,
    }
}

/// A directory (readable by the sshd test user) with a `uname` that reports `arch` for `-m`.
fn fake_uname(arch: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = format!(
        "#!/bin/sh\ncase \"$1\" in\n  -m) echo {arch} ;;\n  -s) echo Linux ;;\n  *) exec /bin/uname \"$@\" ;;\nesac\n"
    );
    let f = d.path().join("uname");
    std::fs::write(&f, script).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

fn host_with_uname(fake: &Path) -> sshd::Sshd {
    sshd::Sshd::start_with_config(&format!(
        "SetEnv PATH={}:/usr/local/bin:/usr/bin:/bin\n",
        fake.display()
    ))
}

fn add(s: &Server, name: &str, h: &sshd::Sshd, keyfile: &Path) {
    s.add_server(
        name,
        h.port,
        sshd::USER,
        &["--key-file", keyfile.to_str().unwrap()],
    );
}

async fn show(s: &Server, name: &str) -> Value {
    let (status, v) = s.api("GET", &format!("/api/v1/servers/{name}"), None).await;
    assert_eq!(status, 200, "{v}");
    v
}

async fn run(s: &Server, event: &str, server: &str, mode: &str) -> (i64, Value) {
    s.apply_yaml(&format!(
        "name: {event}\ntype: bash\ntarget: {{ servers: [{server}], mode: {mode} }}\nscript: echo hello from $(uname -m)\n"
    ))
    .await;
    let id = s.run_event(event, None).await;
    (id, s.wait_job(id, Duration::from_secs(60)).await)
}

#[tokio::test]
async fn runners_are_listed_per_architecture() {
    let t = setup();
    let s = &t.server;
    let (status, v) = s.api("GET", "/api/v1/runners", None).await;
    assert_eq!(status, 200, "{v}");
    let rows = v.as_array().unwrap();
    let mut seen: Vec<(String, String, bool)> = rows
        .iter()
        .map(|r| {
            (
                r["arch"].as_str().unwrap().to_string(),
                r["sha256"].as_str().unwrap().to_string(),
                r["active"].as_bool().unwrap(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("aarch64".to_string(), t.arm_sha.clone(), true),
            ("x86_64".to_string(), t.x86_sha.clone(), true),
        ],
        "the stale riscv64 manifest is left out: {v}"
    );
    for r in rows {
        assert_eq!(r["os"], "linux", "{r}");
        assert!(r["size_bytes"].as_i64() > Some(100_000), "{r}");
        assert!(!r["version"].as_str().unwrap().is_empty(), "{r}");
    }
    let o = s.cli(&["runner", "list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let header = out.lines().next().unwrap();
    for col in ["OS", "ARCH", "VERSION", "SHA256", "SIZE", "ACTIVE", "PATH"] {
        assert!(header.contains(col), "{out}");
    }
    assert!(out.contains("aarch64") && out.contains("x86_64"), "{out}");
    assert!(out.contains(&t.arm_sha[..12]), "{out}");
    let o = s.cli(&["runner", "list", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(j.as_array().unwrap().len(), 2, "{j}");
}

#[tokio::test]
async fn each_host_gets_the_runner_of_its_architecture() {
    let t = setup();
    let s = &t.server;
    let dir = tempfile::tempdir().unwrap();
    let key = write(dir.path(), "id_ed25519", &sshd::env().client_key);
    let arm_uname = fake_uname("aarch64");
    let riscv_uname = fake_uname("riscv64");
    let hx = sshd::Sshd::start();
    let ha = host_with_uname(arm_uname.path());
    let hr = host_with_uname(riscv_uname.path());
    add(s, "x86", &hx, &key);
    add(s, "arm", &ha, &key);
    add(s, "riscv", &hr, &key);

    // Nothing detected before the first contact.
    let v = show(s, "x86").await;
    assert!(v["arch"].is_null() && v["os"].is_null(), "{v}");
    let list = stdout(&s.cli(&["server", "list"]));
    assert!(list.lines().next().unwrap().contains("ARCH"), "{list}");

    // x86_64: detected, the x86_64 runner deployed, the run succeeds.
    let (id, j) = run(s, "on-x86", "x86", "runner-ssh").await;
    assert_eq!(j["status"], "succeeded", "{j}\n{}", s.log_text(id).await);
    assert_eq!(j["executions"][0]["mode"], "runner-ssh", "{j}");
    let v = show(s, "x86").await;
    assert_eq!(
        (v["os"].as_str(), v["arch"].as_str()),
        (Some("linux"), Some("x86_64")),
        "{v}"
    );
    assert!(v["platform_detected_at"].is_string(), "{v}");
    assert_eq!(v["deployments"][0]["sha256"], t.x86_sha.as_str(), "{v}");
    assert_eq!(v["deployments"][0]["outcome"], "deployed", "{v}");

    // "aarch64": the aarch64 runner is the one uploaded (it cannot run on this machine, so the
    // deployment's `--version` check fails after the upload).
    let (_, j) = run(s, "on-arm", "arm", "runner-ssh").await;
    assert_eq!(j["status"], "failed", "{j}");
    let v = show(s, "arm").await;
    assert_eq!(v["arch"], "aarch64", "{v}");
    assert_eq!(v["deployments"][0]["sha256"], t.arm_sha.as_str(), "{v}");
    let remote = sshd::home_path(&format!(
        "{}/cronium-runner-{}-{}",
        t.deploy_dir,
        v["deployments"][0]["version"].as_str().unwrap(),
        &t.arm_sha[..8]
    ));
    assert_eq!(
        std::fs::read(&remote).unwrap_or_default(),
        t.arm_bytes,
        "the aarch64 binary is on the aarch64 host at {}",
        remote.display()
    );

    // riscv64, runner-ssh: a clear error naming the server, its arch and what there is.
    let (id, j) = run(s, "on-riscv", "riscv", "runner-ssh").await;
    assert_eq!(j["status"], "failed", "{j}");
    let log = s.log_text(id).await;
    let want = "no runner for server 'riscv': it is linux/riscv64, and runners are available for linux/aarch64, linux/x86_64";
    assert!(log.contains(want), "{want}\nnot in the log:\n{log}\n{j}");
    let v = show(s, "riscv").await;
    assert_eq!(v["arch"], "riscv64", "{v}");
    assert!(
        v["deployments"].as_array().unwrap().is_empty(),
        "nothing deployed: {v}"
    );

    // riscv64, auto: falls back to direct-ssh, says why, and succeeds.
    let (id, j) = run(s, "on-riscv-auto", "riscv", "auto").await;
    assert_eq!(j["status"], "succeeded", "{j}");
    let x = &j["executions"][0];
    assert_eq!(x["mode"], "direct-ssh", "{x}");
    let note = x["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("fell back to direct-ssh") && note.contains("linux/riscv64"),
        "{x}"
    );
    let log = s.log_text(id).await;
    assert!(log.contains("hello from riscv64"), "{log}");
    assert!(log.contains("ran in direct-ssh mode"), "{log}");

    // server list and show say each host's arch.
    let list = stdout(&s.cli(&["server", "list"]));
    for (name, arch) in [("x86", "x86_64"), ("arm", "aarch64"), ("riscv", "riscv64")] {
        let line = list
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} not in\n{list}"));
        assert!(line.split_whitespace().any(|c| c == arch), "{line}");
    }
    let o = s.cli(&["server", "show", "riscv"]);
    assert!(
        stdout(&o).contains("system:    linux riscv64"),
        "{}",
        stdout(&o)
    );
}
