//! `cronium run FILE`: runs a script through the same runner and helpers as a scheduled run, with
//! no server, then prints the outputs, variable writes and condition it produced.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use cronium_agent::targets::local::LocalTransport;
use cronium_core::duration::HumanDuration;
use cronium_core::payload::{build_archive, sha256_hex, PayloadSource};
use cronium_core::transport::RunRequest;
use cronium_model::{ExecutionStatus, Trigger};
use cronium_protocol::{EventMeta, Interpreter, RunContext, RunStatus, RunnerEvent, Stream};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cli::RunArgs;
use crate::commands::json_or_string;

fn interpreter_for(path: &Path, kind: Option<&str>) -> Result<Interpreter> {
    let name = match kind {
        Some(k) => k.to_string(),
        None => match path.extension().and_then(|e| e.to_str()) {
            Some("sh" | "bash") => "bash".into(),
            Some("py") => "python".into(),
            Some("js" | "cjs" | "mjs") => "node".into(),
            _ => bail!(
                "cannot tell the language of {} from its extension; pass --type bash|python|node",
                path.display()
            ),
        },
    };
    match name.as_str() {
        "bash" => Ok(Interpreter::Bash),
        "python" => Ok(Interpreter::Python),
        "node" => Ok(Interpreter::Node),
        other => bail!("--type: unknown language `{other}` (bash, python or node)"),
    }
}

pub async fn run(args: RunArgs, runner: PathBuf) -> Result<i32> {
    let interpreter = interpreter_for(&args.file, args.kind.as_deref())?;
    let script = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let input: Value = match &args.input {
        Some(t) => serde_json::from_str(t).map_err(|e| anyhow!("--input: not valid JSON: {e}"))?,
        None => json!({}),
    };
    let timeout = HumanDuration::parse(&args.timeout)
        .map_err(|e| anyhow!("--timeout: {e}"))?
        .0;
    let mut variables = BTreeMap::new();
    for v in &args.vars {
        let (k, val) = v
            .split_once('=')
            .ok_or_else(|| anyhow!("--var {v}: expected NAME=VALUE"))?;
        variables.insert(k.to_string(), json_or_string(val));
    }
    let name = args
        .file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("script")
        .to_string();
    let bytes = build_archive(&PayloadSource {
        interpreter,
        script: &script,
        env: Default::default(),
        timeout,
        kill_grace: Duration::from_millis(cronium_protocol::DEFAULT_KILL_GRACE_MS),
        max_output_bytes: u64::MAX / 2,
        event: EventMeta {
            id: 0,
            name: name.clone(),
            version: 0,
        },
    })?;
    let dir = tempfile::tempdir()?;
    let payload = dir.path().join("payload.tar.gz");
    std::fs::write(&payload, &bytes)?;
    let req = RunRequest {
        payload_path: payload,
        payload_sha256: sha256_hex(&bytes),
        context: RunContext {
            trigger: Trigger::Cli.as_str().into(),
            input,
            variables,
            interpreters: cronium_agent::interpreters::resolve_one(interpreter)
                .map(|p| BTreeMap::from([(interpreter, p)]))
                .unwrap_or_default(),
            ..Default::default()
        },
        timeout,
        kill_grace: Duration::from_millis(cronium_protocol::DEFAULT_KILL_GRACE_MS),
        control: None,
    };
    // The user's own shell: the script sees the user's environment, as any command they run.
    let transport = LocalTransport::inheriting(runner);
    let (tx, mut rx) = mpsc::channel(1024);
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            c2.cancel();
        }
    });
    let json_out = args.json;
    let printer = tokio::spawn(async move {
        let mut output = Value::Null;
        let mut vars = serde_json::Map::new();
        let mut condition = None;
        while let Some(e) = rx.recv().await {
            match e {
                RunnerEvent::Log { stream, line, .. } => match stream {
                    Stream::Stdout if !json_out => println!("{line}"),
                    Stream::Stderr | Stream::System if !json_out => eprintln!("{line}"),
                    _ => {}
                },
                RunnerEvent::Output { value } => output = value,
                RunnerEvent::Variable { name, value } => {
                    vars.insert(name, value);
                }
                RunnerEvent::Condition { value } => condition = Some(value),
                _ => {}
            }
        }
        (output, vars, condition)
    });
    let finished = transport.run(&req, &tx, cancel).await;
    drop(tx);
    let (output, vars, condition) = printer.await.unwrap_or_default();
    let finished = finished.map_err(|e| anyhow!("{e}"))?;
    // Reported in the platform's words (the same as a server run's execution status).
    let status = ExecutionStatus::from(finished.status);
    let code = match finished.status {
        RunStatus::Succeeded => 0,
        RunStatus::TimedOut => 124,
        _ => finished.exit_code.filter(|c| *c != 0).unwrap_or(1),
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "status": status,
                "exit_code": finished.exit_code,
                "run_ms": finished.run_ms,
                "error": finished.error,
                "output": output,
                "variables": vars,
                "condition": condition,
            }))?
        );
    } else {
        eprintln!("--");
        eprintln!(
            "status:    {} (exit {}, {} ms)",
            status,
            finished.exit_code.map_or("-".into(), |c| c.to_string()),
            finished.run_ms
        );
        if let Some(e) = &finished.error {
            eprintln!("error:     {e}");
        }
        if !output.is_null() {
            eprintln!("output:    {output}");
        }
        for (k, v) in &vars {
            eprintln!("variable:  {k} = {v}");
        }
        if let Some(c) = condition {
            eprintln!("condition: {c}");
        }
    }
    Ok(code)
}
