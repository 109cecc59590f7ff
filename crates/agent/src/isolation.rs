//! What keeps a local run away from the server that started it: the user it runs as, the
//! environment it gets, and the paths the runner hides from it.
//!
//! - **User**: when the server runs as root, local runs execute as an unprivileged user
//!   ([`DEFAULT_RUN_USER`], created on first need, or the one `--run-as` names); `--run-as root`
//!   opts out. A server that is not root runs scripts as itself (it cannot switch users).
//! - **Environment**: never the server's own (which holds `CRONIUM_ADMIN_TOKEN`, the database URL,
//!   the encryption key...): a safe `PATH` with the interpreters' directories, `HOME`, `USER`,
//!   `LOGNAME`, the locale and `TZ`, and what the operator allow-lists (`--pass-env`). The runner
//!   adds the event's `env` and the `CRONIUM_*` run variables.
//! - **Hidden paths**: when scripts run as the server's own user, the 0700 data directory does
//!   not stop them, so the runner hides it with Landlock where the kernel has it.
//!
//! Not for starting the runner (that is `local`) nor for choosing interpreters (`interpreters`).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The user local runs execute as when the server runs as root and `--run-as` is not given.
pub const DEFAULT_RUN_USER: &str = "cronium-run";
/// Home of [`DEFAULT_RUN_USER`] when Cronium creates it.
const DEFAULT_RUN_HOME: &str = "/var/lib/cronium-run";

#[derive(Debug, thiserror::Error)]
pub enum IsolationError {
    #[error("--run-as {0}: no such user")]
    NoSuchUser(String),
    #[error("--run-as {user}: this server runs as uid {uid}, not root, so it cannot start runs as another user; leave --run-as out (scripts then run as the server's own user)")]
    NotRoot { user: String, uid: u32 },
    #[error("cannot look up user {user}: {source}")]
    Lookup { user: String, source: nix::Error },
    #[error("the server runs as root, so local runs execute as the unprivileged user `{DEFAULT_RUN_USER}`, which could not be created ({reason}); create a user for them (e.g. `useradd --system --create-home --home-dir {DEFAULT_RUN_HOME} {DEFAULT_RUN_USER}`) and pass --run-as USER, or pass --run-as root to run scripts as root")]
    CreateUser { reason: String },
    #[error("--pass-env {0}: variables starting with CRONIUM_ are the server's own and never passed to scripts")]
    PassEnvCronium(String),
    #[error("--pass-env `{0}`: not an environment variable name")]
    PassEnvName(String),
}

/// An unprivileged user local runs execute as (the server being root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, as `initgroups` would set them.
    pub groups: Vec<u32>,
    pub home: PathBuf,
}

impl RunUser {
    /// Looks a user up by name.
    pub fn lookup(name: &str) -> Result<Option<RunUser>, IsolationError> {
        let lookup_err = |source| IsolationError::Lookup {
            user: name.to_string(),
            source,
        };
        let Some(u) = nix::unistd::User::from_name(name).map_err(lookup_err)? else {
            return Ok(None);
        };
        let cname = CString::new(name).map_err(|_| IsolationError::NoSuchUser(name.into()))?;
        let groups = nix::unistd::getgrouplist(&cname, u.gid)
            .map_err(lookup_err)?
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        Ok(Some(RunUser {
            name: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            groups,
            home: u.dir,
        }))
    }

    /// Makes `cmd` start as this user: supplementary groups first, then the group, then the user
    /// (after `setuid` the others are no longer allowed). Needs a root parent. A fork: used once
    /// at start-up (probing interpreters), never per run (see [`RunUser::runner_arg`]).
    pub fn apply(&self, cmd: &mut Command) {
        use std::os::unix::process::CommandExt;
        let (uid, gid, groups) = (self.uid, self.gid, self.groups.clone());
        // SAFETY: only async-signal-safe system calls on memory captured before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    /// The runner's `--run-as` value: it becomes this user itself, first thing (supplementary
    /// groups, then the group, then the user). Needs a root parent.
    pub fn runner_arg(&self) -> String {
        let groups: Vec<String> = self.groups.iter().map(|g| g.to_string()).collect();
        format!("{}:{}:{}", self.uid, self.gid, groups.join(","))
    }
}

/// Who local runs execute as: `Some(user)` to switch to, or `None` for this process's own user.
///
/// `flag` is `--run-as`. Without it a root server uses [`DEFAULT_RUN_USER`], creating it with
/// `useradd --system` when it does not exist yet, so that a first start as root has working and
/// unprivileged local runs; any other server runs scripts as itself.
pub fn choose_run_user(flag: Option<&str>) -> Result<Option<RunUser>, IsolationError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    match flag.map(str::trim).filter(|f| !f.is_empty()) {
        Some(name) => {
            let user =
                RunUser::lookup(name)?.ok_or_else(|| IsolationError::NoSuchUser(name.into()))?;
            if user.uid == euid {
                Ok(None)
            } else if euid != 0 {
                Err(IsolationError::NotRoot {
                    user: name.into(),
                    uid: euid,
                })
            } else {
                Ok(Some(user))
            }
        }
        None if euid != 0 => Ok(None),
        None => match RunUser::lookup(DEFAULT_RUN_USER)? {
            Some(user) => Ok(Some(user)),
            None => {
                create_default_user()?;
                RunUser::lookup(DEFAULT_RUN_USER)?.map(Some).ok_or_else(|| {
                    IsolationError::CreateUser {
                        reason: "useradd succeeded but the user is not there".into(),
                    }
                })
            }
        },
    }
}

/// `useradd --system` for [`DEFAULT_RUN_USER`], with a home of its own (scripts expect a
/// writable `HOME`) and no login shell. Another server creating it at the same moment is fine.
fn create_default_user() -> Result<(), IsolationError> {
    let out = Command::new("useradd")
        .args([
            "--system",
            "--user-group",
            "--create-home",
            "--home-dir",
            DEFAULT_RUN_HOME,
            "--shell",
            "/usr/sbin/nologin",
            "--comment",
            "Cronium local runs",
            DEFAULT_RUN_USER,
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| IsolationError::CreateUser {
            reason: format!("cannot run useradd: {e}"),
        })?;
    if out.status.success() {
        tracing::warn!(
            user = DEFAULT_RUN_USER,
            home = DEFAULT_RUN_HOME,
            "created the system user local runs execute as (--run-as to choose another)"
        );
        return Ok(());
    }
    // Exit code 9: the name is taken, e.g. by a server that started at the same time.
    if matches!(RunUser::lookup(DEFAULT_RUN_USER), Ok(Some(_))) {
        return Ok(());
    }
    Err(IsolationError::CreateUser {
        reason: format!(
            "useradd: {}",
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .trim_end_matches('.')
        ),
    })
}

/// Checks the `--pass-env` allow-list: variable names, none of the server's own `CRONIUM_*`.
pub fn check_pass_env(names: &[String]) -> Result<(), IsolationError> {
    for name in names {
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(IsolationError::PassEnvName(name.clone()));
        }
        if name.to_ascii_uppercase().starts_with("CRONIUM_") {
            return Err(IsolationError::PassEnvCronium(name.clone()));
        }
    }
    Ok(())
}

/// The `PATH` of local runs before the interpreters' directories: the distribution's default
/// for a login of that user (Debian's `login.defs`), with the `sbin` directories for root only.
pub fn safe_path(uid: u32) -> &'static str {
    if uid == 0 {
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    } else {
        "/usr/local/bin:/usr/bin:/bin"
    }
}

/// The environment a local run starts from (see the module docs): everything the runner gets,
/// before the event's `env` and the `CRONIUM_*` run variables it adds.
///
/// `user` is the run user (None: this process's user); `interpreter_dirs` are put before the
/// safe `PATH` so that `python3` in a script is the interpreter the server resolved. A `PATH`
/// in `pass_env` replaces all of that.
pub fn run_env(
    user: Option<&RunUser>,
    pass_env: &[String],
    interpreter_dirs: &[PathBuf],
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = user.map_or_else(|| unsafe { libc::geteuid() }, |u| u.uid);
    let mut path: Vec<String> = Vec::new();
    for dir in interpreter_dirs {
        let dir = dir.display().to_string();
        if !path.contains(&dir) && !safe_path(uid).split(':').any(|d| d == dir) {
            path.push(dir);
        }
    }
    path.push(safe_path(uid).to_string());
    env.insert("PATH".to_string(), path.join(":"));
    let (name, home) = match user {
        Some(u) => (Some(u.name.clone()), Some(u.home.display().to_string())),
        None => {
            let me = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten();
            (
                me.as_ref().map(|u| u.name.clone()),
                std::env::var("HOME")
                    .ok()
                    .or_else(|| me.map(|u| u.dir.display().to_string())),
            )
        }
    };
    if let Some(name) = name {
        env.insert("USER".to_string(), name.clone());
        env.insert("LOGNAME".to_string(), name);
    }
    if let Some(home) = home {
        env.insert("HOME".to_string(), home);
    }
    // The locale and time zone are the machine's settings, not secrets; scripts print and parse
    // dates and text with them.
    for (key, value) in std::env::vars() {
        if key == "LANG" || key == "LANGUAGE" || key == "TZ" || key.starts_with("LC_") {
            env.insert(key, value);
        }
    }
    env.entry("LANG".to_string())
        .or_insert_with(|| "C.UTF-8".to_string());
    for name in pass_env {
        if name.to_ascii_uppercase().starts_with("CRONIUM_") {
            continue; // refused by check_pass_env; never passed whatever the caller did
        }
        match std::env::var(name) {
            Ok(value) => {
                env.insert(name.clone(), value);
            }
            Err(_) => {
                tracing::warn!(name = %name, "--pass-env names a variable this server does not have")
            }
        }
    }
    env
}

/// The work base for runs of `user` under the operator's `base`: `base/user-<uid>`, owned by
/// that user with mode 0700 (each run's directory inside is 0700 too). `base` stays the
/// server's; it only gains search permission for others (never loses a bit) so that the run
/// user can reach its own directory in it.
pub fn user_work_base(base: &Path, user: &RunUser) -> io::Result<PathBuf> {
    let meta = std::fs::metadata(base)?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    if meta.uid() == unsafe { libc::geteuid() } && meta.mode() & 0o001 == 0 {
        let mode = (meta.mode() & 0o7777) | 0o011;
        std::fs::set_permissions(base, std::fs::Permissions::from_mode(mode))?;
        tracing::info!(dir = %base.display(), mode = format!("{mode:o}"), "work directory made searchable for the run user");
    }
    let dir = base.join(format!("user-{}", user.uid));
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    // symlink_metadata: a symlink planted under the name is refused, never followed.
    let meta = std::fs::symlink_metadata(&dir)?;
    if !meta.is_dir() {
        return Err(io::Error::other(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    if meta.uid() != user.uid {
        std::os::unix::fs::lchown(&dir, Some(user.uid), Some(user.gid))?;
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_env_refuses_the_servers_own_variables_and_bad_names() {
        assert!(check_pass_env(&["HTTP_PROXY".into(), "my_var2".into()]).is_ok());
        for bad in ["CRONIUM_ADMIN_TOKEN", "cronium_database_url"] {
            assert!(
                matches!(check_pass_env(&[bad.into()]), Err(IsolationError::PassEnvCronium(n)) if n == bad),
                "{bad}"
            );
        }
        for bad in ["", "A=B", "1X", "A B"] {
            assert!(
                matches!(
                    check_pass_env(&[bad.into()]),
                    Err(IsolationError::PassEnvName(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_run_env_has_a_safe_path_with_the_interpreters_first_and_a_locale() {
        let user = RunUser {
            name: "someone".into(),
            uid: 4242,
            gid: 4242,
            groups: vec![4242],
            home: "/home/someone".into(),
        };
        let env = run_env(
            Some(&user),
            &[],
            &[
                "/opt/py/bin".into(),
                "/usr/bin".into(),
                "/opt/py/bin".into(),
            ],
        );
        assert_eq!(env["PATH"], "/opt/py/bin:/usr/local/bin:/usr/bin:/bin");
        assert_eq!(env["HOME"], "/home/someone");
        assert_eq!(env["USER"], "someone");
        assert!(env.contains_key("LANG"));
        assert!(env.keys().all(|k| !k.starts_with("CRONIUM_")), "{env:?}");
        let env = run_env(Some(&user), &["CRONIUM_ADMIN_TOKEN".into()], &[]);
        assert!(!env.contains_key("CRONIUM_ADMIN_TOKEN"));
    }
}
