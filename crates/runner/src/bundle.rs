//! Bundled-mode runtime helpers: the files the runner writes into `.cronium/` before the script
//! starts (input, event metadata, variables snapshot, the Python/Node/Bash helper libraries) and
//! the environment that points the interpreters at them.
//!
//! Not for reading results back: that is `updates`. Not for API mode, which is refused earlier.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use cronium_protocol::{Manifest, RunContext};
use serde_json::{json, Value};

use crate::payload::RESERVED_DIR;

const PYTHON_MODULE: &str = include_str!("helpers/cronium.py");
const NODE_MODULE: &str = include_str!("helpers/cronium.js");
const BASH_FUNCTIONS: &str = include_str!("helpers/cronium.bash");

/// File names inside `.cronium/`, shared with the `helper` subcommand and the update tail.
pub const INPUT_FILE: &str = "input.json";
pub const EVENT_FILE: &str = "event.json";
pub const VARIABLES_FILE: &str = "variables.json";
pub const UPDATES_FILE: &str = "updates.jsonl";
const PYTHON_LIB: &str = "cronium.py";
const NODE_LIB: &str = "cronium.js";
const BASH_LIB: &str = "cronium.bash";
/// Environment variable naming the `.cronium/` directory for the helpers.
pub const HELPER_DIR_ENV: &str = "CRONIUM_HELPER_DIR";

#[derive(Debug, thiserror::Error)]
#[error("cannot prepare the runtime helpers in {path}: {source}")]
pub struct BundleError {
    path: PathBuf,
    source: io::Error,
}

/// Writes `.cronium/` under `workdir` and returns it.
///
/// Kept flat on purpose: every directory and file created here is also deleted at the end, and
/// on a disk mounted with `discard` each one costs a measurable part of a trivial run. So the
/// helper libraries sit directly in `.cronium/` (Node finds `cronium.js` on NODE_PATH exactly as
/// it would `cronium/index.js`), and `updates.jsonl` is created by the first helper that writes.
pub fn write(
    workdir: &Path,
    manifest: &Manifest,
    context: &RunContext,
) -> Result<PathBuf, BundleError> {
    let dir = workdir.join(RESERVED_DIR);
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BundleError { path, source }
    };
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(err(&dir))?;

    let event = json!({
        "id": manifest.event.id,
        "name": manifest.event.name,
        "job_id": context.job_id,
        "execution_id": context.execution_id,
        "attempt": context.attempt,
        "trigger": context.trigger,
        "server": context.server,
        "version": manifest.event.version,
    });
    let input = match &context.input {
        Value::Null => "{}".to_string(),
        v => v.to_string(),
    };
    let variables = serde_json::to_vec(&context.variables).unwrap_or_else(|_| b"{}".to_vec());
    let files: [(&str, Vec<u8>); 6] = [
        (INPUT_FILE, input.into_bytes()),
        (EVENT_FILE, event.to_string().into_bytes()),
        (VARIABLES_FILE, variables),
        (PYTHON_LIB, PYTHON_MODULE.as_bytes().to_vec()),
        (NODE_LIB, NODE_MODULE.as_bytes().to_vec()),
        (BASH_LIB, BASH_FUNCTIONS.as_bytes().to_vec()),
    ];
    for (name, bytes) in files {
        let path = dir.join(name);
        fs::write(&path, bytes).map_err(err(&path))?;
    }
    Ok(dir)
}

/// Environment for the script: the manifest's, then the context's, then what Cronium provides.
/// The runner's own environment is inherited underneath by the caller.
pub fn environment(
    manifest: &Manifest,
    context: &RunContext,
    helper_dir: &Path,
    runner_bin: &Path,
) -> BTreeMap<OsString, OsString> {
    let mut env: BTreeMap<OsString, OsString> = BTreeMap::new();
    for (k, v) in manifest.env.iter().chain(context.env.iter()) {
        env.insert(k.into(), v.into());
    }
    let mut set = |k: &str, v: OsString| {
        env.insert(k.into(), v);
    };
    set("CRONIUM_JOB_ID", context.job_id.to_string().into());
    set(
        "CRONIUM_EXECUTION_ID",
        context.execution_id.to_string().into(),
    );
    set("CRONIUM_EVENT_ID", manifest.event.id.to_string().into());
    set("CRONIUM_EVENT_NAME", manifest.event.name.clone().into());
    set(
        "CRONIUM_EVENT_VERSION",
        manifest.event.version.to_string().into(),
    );
    set("CRONIUM_ATTEMPT", context.attempt.to_string().into());
    set("CRONIUM_TRIGGER", context.trigger.clone().into());
    if let Some(server) = &context.server {
        set("CRONIUM_SERVER", server.clone().into());
    }
    set(HELPER_DIR_ENV, helper_dir.into());
    set("CRONIUM_RUNNER_BIN", runner_bin.into());
    set("BASH_ENV", helper_dir.join(BASH_LIB).into());
    let python_path = prepend_path(helper_dir.to_path_buf(), lookup(&env, "PYTHONPATH"));
    let node_path = prepend_path(helper_dir.to_path_buf(), lookup(&env, "NODE_PATH"));
    env.insert("PYTHONPATH".into(), python_path);
    env.insert("NODE_PATH".into(), node_path);
    env
}

/// A variable as the script will see it: overridden in `env`, else inherited.
pub fn lookup(env: &BTreeMap<OsString, OsString>, key: &str) -> Option<OsString> {
    env.get(&OsString::from(key))
        .cloned()
        .or_else(|| std::env::var_os(key))
}

fn prepend_path(first: PathBuf, rest: Option<OsString>) -> OsString {
    let mut out = first.into_os_string();
    if let Some(rest) = rest.filter(|r| !r.is_empty()) {
        out.push(":");
        out.push(rest);
    }
    out
}
