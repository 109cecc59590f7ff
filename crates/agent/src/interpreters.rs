//! Resolves interpreters once, at agent start, to real binaries: a version manager's shim (pyenv,
//! nvm, asdf) costs tens of milliseconds on every run, which would dominate short jobs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cronium_protocol::Interpreter;

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

/// Asks the interpreter itself where its binary is (this sees through shims).
fn self_reported(program: &Path, code_flag: &str, code: &str) -> Option<PathBuf> {
    let out = std::process::Command::new(program)
        .args([code_flag, code])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
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
        Interpreter::Python => self_reported(&found, "-c", "import sys; print(sys.executable)"),
        Interpreter::Node => self_reported(&found, "-e", "console.log(process.execPath)"),
        Interpreter::Bash => None,
    }
    .unwrap_or(found);
    let real = std::fs::canonicalize(&real).unwrap_or(real);
    Some(real.display().to_string())
}

/// The real binaries of the interpreters found on this machine; `overrides` (from the
/// configuration) win and are not looked up.
pub fn resolve(overrides: &BTreeMap<Interpreter, String>) -> BTreeMap<Interpreter, String> {
    let mut out = overrides.clone();
    for interp in [Interpreter::Bash, Interpreter::Python, Interpreter::Node] {
        if out.contains_key(&interp) {
            continue;
        }
        if let Some(real) = resolve_one(interp) {
            out.insert(interp, real);
        }
    }
    tracing::info!(?out, "interpreters resolved");
    out
}
