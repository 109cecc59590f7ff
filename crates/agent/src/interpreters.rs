//! Resolves interpreters once, at agent start, to real binaries: a version manager's shim (pyenv,
//! nvm, asdf) costs tens of milliseconds on every run, which would dominate short jobs.
//!
//! When local runs execute as another user (see `isolation`), each interpreter is checked by
//! running it as that user: one under a private home (`/root/.pyenv/...`) cannot be run by
//! anyone else, so a system interpreter on the safe `PATH` (`/usr/bin/python3`) is used instead,
//! and the start log says so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cronium_protocol::Interpreter;

use crate::isolation::{safe_path, RunUser};

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The code that makes an interpreter print the path of its own binary.
fn self_report(interp: Interpreter) -> (&'static str, &'static str) {
    match interp {
        Interpreter::Python => ("-c", "import sys; print(sys.executable)"),
        Interpreter::Node => ("-e", "console.log(process.execPath)"),
        Interpreter::Bash => ("-c", "echo \"$BASH\""),
    }
}

/// Asks the interpreter itself where its binary is (this sees through shims), running it as
/// `user` when given (with a clean environment, as a run would).
fn self_reported(program: &Path, interp: Interpreter, user: Option<&RunUser>) -> Option<PathBuf> {
    let (flag, code) = self_report(interp);
    let mut cmd = std::process::Command::new(program);
    cmd.args([flag, code])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if let Some(u) = user {
        cmd.env_clear()
            .env("PATH", safe_path(u.uid))
            .env("HOME", &u.home)
            .current_dir("/");
        u.apply(&mut cmd);
    }
    let out = cmd.output().ok()?;
    if !out.status.success() {
        return None;
    }
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    is_executable(&p).then_some(p)
}

/// The real binary of one interpreter, if it is installed.
pub fn resolve_one(interp: Interpreter) -> Option<String> {
    let found = interp.candidates().iter().find_map(|c| which(c))?;
    let real = match interp {
        Interpreter::Bash => None,
        _ => self_reported(&found, interp, None),
    }
    .unwrap_or(found);
    let real = std::fs::canonicalize(&real).unwrap_or(real);
    Some(real.display().to_string())
}

/// The first interpreter on the safe `PATH` that `user` can run, as its real binary.
fn resolve_for(interp: Interpreter, user: &RunUser) -> Option<String> {
    for dir in std::env::split_paths(safe_path(user.uid)) {
        for name in interp.candidates() {
            let candidate = dir.join(name);
            if !is_executable(&candidate) {
                continue;
            }
            if let Some(real) = self_reported(&candidate, interp, Some(user)) {
                let real = std::fs::canonicalize(&real).unwrap_or(real);
                return Some(real.display().to_string());
            }
        }
    }
    None
}

/// The real binaries of the interpreters found on this machine; `overrides` (from the
/// configuration) win and are not looked up. With a run `user`, every interpreter is one that
/// user can run (see the module docs).
pub fn resolve(
    overrides: &BTreeMap<Interpreter, String>,
    user: Option<&RunUser>,
) -> BTreeMap<Interpreter, String> {
    let mut out = BTreeMap::new();
    for interp in [Interpreter::Bash, Interpreter::Python, Interpreter::Node] {
        let name = interp.as_str();
        if let Some(path) = overrides.get(&interp) {
            if let Some(u) = user {
                if self_reported(Path::new(path), interp, Some(u)).is_none() {
                    tracing::warn!(interpreter = name, path = %path, user = %u.name, "the configured interpreter cannot be run by the run user: its local runs will fail");
                }
            }
            out.insert(interp, path.clone());
            continue;
        }
        let found = resolve_one(interp);
        let usable = match (&found, user) {
            (Some(path), Some(u)) => self_reported(Path::new(path), interp, Some(u)).is_some(),
            (found, _) => found.is_some(),
        };
        if usable {
            out.extend(found.map(|p| (interp, p)));
            continue;
        }
        let Some(u) = user else { continue };
        match resolve_for(interp, u) {
            Some(system) => {
                if let Some(path) = &found {
                    tracing::info!(interpreter = name, unusable = %path, using = %system, user = %u.name, "the interpreter on the server's PATH cannot be run by the run user; using a system one");
                }
                out.insert(interp, system);
            }
            None => {
                tracing::warn!(interpreter = name, user = %u.name, server_path = ?found, "no interpreter the run user can run: its local runs will fail (install one in /usr/bin, or pass --{name})")
            }
        }
    }
    tracing::info!(?out, "interpreters resolved");
    out
}
