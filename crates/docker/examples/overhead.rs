//! Container run overhead: `DockerExecutor::run` of a trivial bash script versus a plain
//! `docker run --rm IMAGE bash -c 'echo hi'` of the same image, interleaved, median of N.
//!
//!   CRONIUM_RUNNER=/path/to/static/cronium-runner \
//!     cargo run --release -p cronium-docker --example overhead -- [N] [IMAGE]
//!
//! The product's bar is a ratio of at most 1.2.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cronium_core::transport::RunRequest;
use cronium_docker::{ContainerSpec, DockerConfig, DockerExecutor};
use cronium_protocol::{EventMeta, Interpreter, Manifest, RunContext, RunStatus, MANIFEST_FORMAT};
use tokio_util::sync::CancellationToken;

fn payload(dir: &Path, script: &str) -> anyhow::Result<RunRequest> {
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        interpreter: Interpreter::Bash,
        entrypoint: "script.sh".into(),
        env: Default::default(),
        timeout_ms: 60_000,
        kill_grace_ms: 2_000,
        max_output_bytes: 1 << 20,
        event: EventMeta {
            id: 1,
            name: "overhead".into(),
            version: 1,
        },
    };
    let manifest = serde_json::to_vec(&manifest)?;
    let path = dir.join("payload.tar.gz");
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&path)?,
        flate2::Compression::default(),
    );
    let mut tar = tar::Builder::new(gz);
    for (name, data) in [
        ("manifest.yaml", manifest.as_slice()),
        ("script.sh", script.as_bytes()),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, name, data)?;
    }
    tar.into_inner()?.finish()?.flush()?;
    Ok(RunRequest {
        payload_path: path,
        payload_sha256: String::new(),
        context: RunContext {
            trigger: "manual".into(),
            ..RunContext::default()
        },
        timeout: Duration::from_secs(60),
        kill_grace: Duration::from_secs(2),
        control: None,
    })
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(15);
    let image = args.next().unwrap_or_else(|| "cronium/bash:1".into());
    let runner = std::env::var("CRONIUM_RUNNER")
        .map_err(|_| anyhow::anyhow!("set CRONIUM_RUNNER to the static cronium-runner"))?;
    let exec = DockerExecutor::connect(DockerConfig::new(runner)).await?;
    let dir = tempfile::tempdir()?;
    let req = payload(dir.path(), "echo hi")?;
    let spec = ContainerSpec {
        image: Some(image.clone()),
        ..ContainerSpec::default()
    };

    let ours_once = || async {
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let t = Instant::now();
        let r = exec
            .run(
                1,
                1,
                Interpreter::Bash,
                &spec,
                &req,
                &tx,
                CancellationToken::new(),
            )
            .await?;
        let took = t.elapsed();
        drop(tx);
        drain.await?;
        anyhow::ensure!(r.finished.status == RunStatus::Succeeded, "{r:?}");
        anyhow::Ok(took)
    };
    // `hardened`: the same isolation as ours, so that the comparison is about orchestration only.
    let docker_once = |hardened: bool| -> anyhow::Result<Duration> {
        let mut args = vec!["run", "--rm", "-i"];
        if hardened {
            args.extend([
                "--network",
                "none",
                "--read-only",
                "--user",
                "65534:65534",
                "--cap-drop",
                "ALL",
                "--init",
            ]);
        }
        args.extend([image.as_str(), "bash", "-c", "echo hi"]);
        let t = Instant::now();
        let out = Command::new("docker").args(&args).output()?;
        anyhow::ensure!(out.status.success(), "docker run failed: {out:?}");
        Ok(t.elapsed())
    };

    // Warm-up: page cache, image layers, the engine's own caches.
    ours_once().await?;
    docker_once(false)?;
    let (mut ours, mut plain, mut hardened) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        ours.push(ours_once().await?);
        plain.push(docker_once(false)?);
        hardened.push(docker_once(true)?);
    }
    let (o, p, h) = (median(&mut ours), median(&mut plain), median(&mut hardened));
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("image {image}, N={n}, medians:");
    println!("  cronium DockerExecutor::run        {:7.1} ms", ms(o));
    println!(
        "  docker run --rm (plain)            {:7.1} ms  ratio {:.2}",
        ms(p),
        ms(o) / ms(p)
    );
    println!(
        "  docker run --rm (same hardening)   {:7.1} ms  ratio {:.2}",
        ms(h),
        ms(o) / ms(h)
    );
    Ok(())
}
