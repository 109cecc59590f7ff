//! Fan-out benchmark: a trivial command on 1, 10 and 50 local sshd hosts, cold (new connections)
//! and warm (pooled connections, runner already deployed), in runner-ssh and direct-ssh modes.
//!
//! Needs root (it prepares the `cronium-test` user with scripts/test-sshd.sh) and a runner binary
//! (CRONIUM_RUNNER_BIN, or the newest one under target/):
//!
//! ```text
//! cargo build --profile release-runner -p cronium-runner
//! cargo run --release -p cronium-ssh --example fanout -- 1 10 50
//! ```

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cronium_protocol::{Interpreter, RunStatus};
use cronium_ssh::{DirectScript, Mode, ServerConfig, SshExecutor};
use support::*;
use tokio_util::sync::CancellationToken;

async fn fan_out(
    ex: &SshExecutor,
    servers: &[ServerConfig],
    mode: Mode,
    p: &Payload,
    direct: &DirectScript,
) -> Duration {
    let started = Instant::now();
    let mut handles = Vec::new();
    for s in servers {
        let (ex, s, direct) = (ex.clone(), s.clone(), direct.clone());
        let req = request(p, Duration::from_secs(60), &s.name);
        handles.push(tokio::spawn(async move {
            let (tx, mut rx) = sink();
            let r = ex
                .run(&s, mode, &req, &direct, &tx, CancellationToken::new())
                .await;
            drop(tx);
            while rx.recv().await.is_some() {}
            r
        }));
    }
    for h in handles {
        match h.await.expect("join") {
            Ok(run) if run.finished.status == RunStatus::Succeeded => {}
            other => panic!("run failed: {other:?}"),
        }
    }
    started.elapsed()
}

fn ms(d: Duration) -> String {
    format!("{:>8.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1, 10, 50]
    } else {
        sizes
    };
    let max = sizes.iter().copied().max().unwrap_or(1);
    let hosts: Vec<Sshd> = (0..max).map(|_| Sshd::start()).collect();
    let runner = runner().await;
    eprintln!(
        "runner {} ({} bytes), {} sshd instances",
        runner.version,
        std::fs::metadata(&runner.path)
            .map(|m| m.len())
            .unwrap_or(0),
        hosts.len()
    );
    let p = payload(Interpreter::Bash, "true\n", Duration::from_secs(60));
    let direct = DirectScript {
        interpreter: Interpreter::Bash,
        script: "true".into(),
        env: BTreeMap::new(),
    };
    // Baseline on the same hosts in the same run: the OpenSSH client, one process per host
    // started all at once (what parallel-ssh does), cold by nature.
    let key_path = std::env::temp_dir().join(format!("cronium-fanout-key-{}", std::process::id()));
    std::fs::write(&key_path, &env().client_key).expect("write key");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    for &n in &sizes {
        let started = Instant::now();
        let children: Vec<_> = hosts[..n]
            .iter()
            .map(|h| {
                std::process::Command::new("ssh")
                    .args([
                        "-o",
                        "StrictHostKeyChecking=no",
                        "-o",
                        "UserKnownHostsFile=/dev/null",
                        "-o",
                        "BatchMode=yes",
                        "-o",
                        "LogLevel=ERROR",
                        "-i",
                    ])
                    .arg(&key_path)
                    .args([
                        "-p",
                        &h.port.to_string(),
                        &format!("{USER}@127.0.0.1"),
                        "true",
                    ])
                    .stdin(std::process::Stdio::null())
                    .spawn()
                    .expect("ssh")
            })
            .collect();
        let mut ok = 0;
        for mut c in children {
            if c.wait().map(|s| s.success()).unwrap_or(false) {
                ok += 1;
            }
        }
        println!(
            "openssh client x{n} (cold, parallel processes): {} ({ok}/{n} ok)",
            ms(started.elapsed())
        );
    }
    let _ = std::fs::remove_file(&key_path);

    println!(
        "{:>6} | {:>11} | {:>11} | {:>11} | {:>11} | {:>11}",
        "hosts", "direct cold", "direct warm", "runner+dep", "runner cold", "runner warm"
    );
    for n in sizes {
        let servers: Vec<ServerConfig> = hosts[..n]
            .iter()
            .enumerate()
            .map(|(i, h)| h.server(&format!("h{i}")))
            .collect();
        let cfg = config(&format!("bench{n}"));
        let _ = std::fs::remove_dir_all(home_path(&cfg.deploy_dir));

        let ex = SshExecutor::new(cfg.clone(), runner.clone());
        let direct_cold = fan_out(&ex, &servers, Mode::DirectSsh, &p, &direct).await;
        let direct_warm = fan_out(&ex, &servers, Mode::DirectSsh, &p, &direct).await;

        // First deployment: new connections plus the upload.
        let ex = SshExecutor::new(cfg.clone(), runner.clone());
        let runner_deploy = fan_out(&ex, &servers, Mode::RunnerSsh, &p, &direct).await;
        // New agent, runner already on the hosts: new connections plus a verification.
        let ex = SshExecutor::new(cfg.clone(), runner.clone());
        let runner_cold = fan_out(&ex, &servers, Mode::RunnerSsh, &p, &direct).await;
        let mut warm = Vec::new();
        for _ in 0..5 {
            warm.push(fan_out(&ex, &servers, Mode::RunnerSsh, &p, &direct).await);
        }
        warm.sort();
        let runner_warm = warm[warm.len() / 2];
        println!(
            "{n:>6} | {} | {} | {} | {} | {}  (warm runner median of 5; metrics {:?})",
            ms(direct_cold),
            ms(direct_warm),
            ms(runner_deploy),
            ms(runner_cold),
            ms(runner_warm),
            (ex.metrics().pool_hits, ex.metrics().pool_misses)
        );
        let _ = std::fs::remove_dir_all(home_path(&cfg.deploy_dir));
    }
}
