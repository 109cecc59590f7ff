//! Hides paths (`--hide`: the server's data directory) from the script with Landlock, for runs
//! that execute as the server's own user, where file modes cannot keep the script out.
//!
//! Landlock is an allow-list: a rule on a directory grants access to everything beneath it, so a
//! path cannot be subtracted from an allowed tree. The runner therefore grants everything *except*
//! the hidden paths by walking from `/` down to each of them and adding a rule for every sibling
//! it passes (every entry of `/` but the first component, and so on). What that costs the script:
//! the directories on the way (`/`, the home directory...) get no rule, so they cannot be listed
//! and nothing can be created directly in them; what they already held stays usable. Entries
//! created in them after the run started are out of reach too (deny by default). Symlinks get no
//! rule: what one points to is judged by its own path. A Landlock domain also keeps the script
//! from ptrace-ing (and so from reading `/proc/PID/environ` of) any process outside it, such as
//! the server.
//!
//! Best effort by design: on a kernel without Landlock the run goes on and the log says the data
//! directory is readable. Landlock needs `no_new_privs`, so setuid programs (sudo) do not raise
//! privileges in such a run. Not for anything else the script may do.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use landlock::{
    Access, AccessFs, LandlockStatus, PathBeneath, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetError, RulesetStatus, ABI,
};

/// The newest Landlock ABI this build knows; older kernels get what they support (best effort).
const ABI_WANTED: ABI = ABI::V9;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("--hide {0}: the root directory cannot be hidden")]
    HideRoot(PathBuf),
    #[error("cannot build the Landlock rules hiding {hidden}: {source}")]
    Ruleset {
        hidden: String,
        source: RulesetError,
    },
}

/// Restricts the calling thread (and so every process it starts from now on) so that nothing
/// under `hidden` can be reached, except what lies under `keep` (the work base, which a data
/// directory might contain). Returns the line that tells the run's log what was done.
pub fn hide(hidden: &[PathBuf], keep: &[&Path]) -> Result<String, SandboxError> {
    // A path that does not exist has nothing to hide; canonical paths, since rules follow the
    // real tree, not the names used to reach it.
    let hidden: BTreeSet<PathBuf> = hidden
        .iter()
        .filter_map(|p| fs::canonicalize(p).ok())
        .collect();
    if let Some(root) = hidden.iter().find(|p| p.parent().is_none()) {
        return Err(SandboxError::HideRoot(root.clone()));
    }
    let names = hidden
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let err = |source| SandboxError::Ruleset {
        hidden: names.clone(),
        source,
    };
    let ancestors: BTreeSet<PathBuf> = hidden
        .iter()
        .flat_map(|p| p.ancestors().skip(1).map(Path::to_path_buf))
        .collect();
    let all = AccessFs::from_all(ABI_WANTED);
    let file = AccessFs::from_file(ABI_WANTED);
    let mut ruleset = Ruleset::default()
        .handle_access(all)
        .map_err(err)?
        .create()
        .map_err(err)?;
    for dir in &ancestors {
        // An ancestor we cannot list gets no rules beneath it: denied, the safe direction.
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if ancestors.contains(&path) || hidden.contains(&path) {
                continue;
            }
            if let Some((fd, is_dir)) = open_beneath(&path) {
                let access = if is_dir { all } else { file };
                ruleset = ruleset
                    .add_rule(PathBeneath::new(fd, access))
                    .map_err(err)?;
            }
        }
    }
    for path in keep {
        let inside = fs::canonicalize(path).is_ok_and(|p| hidden.iter().any(|h| p.starts_with(h)));
        if inside {
            if let Some((fd, _)) = open_beneath(path) {
                ruleset = ruleset.add_rule(PathBeneath::new(fd, all)).map_err(err)?;
            }
        }
    }
    let status = ruleset.restrict_self().map_err(err)?;
    Ok(match (status.ruleset, status.landlock) {
        (RulesetStatus::NotEnforced, LandlockStatus::NotEnabled) => format!(
            "[cronium] Landlock is not enabled in this kernel: this script can read {names}; run the server as root so that scripts run as another user"
        ),
        (RulesetStatus::NotEnforced, _) => format!(
            "[cronium] Landlock is not available on this kernel: this script can read {names}; run the server as root so that scripts run as another user"
        ),
        (_, LandlockStatus::Available { effective_abi, .. }) => format!(
            "[cronium] Landlock (ABI {}): {names} hidden from this script",
            effective_abi as i32
        ),
        (_, _) => format!("[cronium] Landlock: {names} hidden from this script"),
    })
}

/// Opens `path` itself (never what a symlink points to) for a rule; `None` for a symlink or
/// something that vanished. The flag says whether it is a directory.
fn open_beneath(path: &Path) -> Option<(fs::File, bool)> {
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(path)
        .ok()?;
    let kind = f.metadata().ok()?.file_type();
    (!kind.is_symlink()).then_some((f, kind.is_dir()))
}
