//! Bundled-mode runtime helpers: the files the runner provides before the script starts (input,
//! event metadata, variables snapshot, the Python/Node/Bash helper libraries) and the environment
//! that points the interpreters at them.
//!
//! Two places, chosen to create as few inodes per run as possible (on ext4 under many concurrent
//! runs, allocating and freeing inodes is most of the runner's own CPU time):
//!
//! - the run's data (`input.json`, `event.json`, `variables.json`, later `updates.jsonl`) goes
//!   flat into the run's private `.cronium/` ([`HELPER_DIR_ENV`] names it);
//! - the static helper libraries (`cronium.py`, `cronium.js`, `cronium.bash`) are written once
//!   into a shared directory `<work base>/cronium-lib-<euid>-<hash>` (see [`shared_lib_dir`]) and
//!   reused by every later run of the same user and runner build. Only when that directory cannot
//!   be used safely are they written into `.cronium/` as well.
//!
//! Not for reading results back: that is `updates`. Not for API mode, which is refused earlier.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

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
/// The helper libraries: file name and content.
const LIBRARIES: [(&str, &str); 3] = [
    (PYTHON_LIB, PYTHON_MODULE),
    (NODE_LIB, NODE_MODULE),
    (BASH_LIB, BASH_FUNCTIONS),
];
/// Environment variable naming the `.cronium/` directory for the helpers.
pub const HELPER_DIR_ENV: &str = "CRONIUM_HELPER_DIR";
/// Prefix of the shared library directories under the work base (`cronium-lib-<euid>-<hash>`).
pub const LIB_DIR_PREFIX: &str = "cronium-lib-";
/// A shared library directory whose timestamp is older than this is touched when used, so that
/// its age tells how long ago it was last used (the sweeper removes other builds' old ones).
const LIB_DIR_TOUCH_AFTER: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, thiserror::Error)]
#[error("cannot prepare the runtime helpers in {path}: {source}")]
pub struct BundleError {
    path: PathBuf,
    source: io::Error,
}

/// Where one run's helper files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Helpers {
    /// The run's `.cronium/`: input, event, variables and updates ([`HELPER_DIR_ENV`]).
    pub data_dir: PathBuf,
    /// The directory holding `cronium.py`, `cronium.js` and `cronium.bash`: the shared one under
    /// the work base, or `data_dir` when the shared one could not be used.
    pub lib_dir: PathBuf,
}

/// Creates `.cronium/` under `workdir`, makes sure the helper libraries exist (shared under
/// `base`, the work base, else in `.cronium/` too) and says where both are. Nothing of the run
/// is needed for it: a runner started ahead of its run does it while it waits for the run, and
/// [`write_run_files`] adds the run's data once it is known.
///
/// `.cronium/` is kept flat on purpose: every directory and file created here is also deleted at
/// the end, and each one costs a measurable part of a trivial run (inode allocation, `discard`).
/// So the files sit directly in `.cronium/`, `updates.jsonl` is created by the first helper that
/// writes, and the libraries are only written here when the shared directory is unusable (Node
/// finds `cronium.js` on NODE_PATH exactly as it would `cronium/index.js`, wherever it is).
pub fn prepare(base: &Path, workdir: &Path) -> Result<Helpers, BundleError> {
    let dir = workdir.join(RESERVED_DIR);
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(err(&dir))?;
    let lib_dir = match shared_lib_dir(base) {
        Ok(lib_dir) => lib_dir,
        Err(e) => {
            diag!(
                "cronium-runner: not sharing the helper libraries under {}: {e}; writing them into the run's directory",
                base.display()
            );
            for (name, content) in LIBRARIES {
                let path = dir.join(name);
                fs::write(&path, content).map_err(err(&path))?;
            }
            dir.clone()
        }
    };
    Ok(Helpers {
        data_dir: dir,
        lib_dir,
    })
}

/// Writes the run's data (input, event, variables) into the `.cronium/` [`prepare`] made.
pub fn write_run_files(
    helpers: &Helpers,
    manifest: &Manifest,
    context: &RunContext,
) -> Result<(), BundleError> {
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
    let files: [(&str, Vec<u8>); 3] = [
        (INPUT_FILE, input.into_bytes()),
        (EVENT_FILE, event.to_string().into_bytes()),
        (VARIABLES_FILE, variables),
    ];
    for (name, bytes) in files {
        let path = helpers.data_dir.join(name);
        fs::write(&path, bytes).map_err(err(&path))?;
    }
    Ok(())
}

/// The [`BundleError`] of an I/O failure on `path`.
fn err(path: &Path) -> impl FnOnce(io::Error) -> BundleError {
    let path = path.to_path_buf();
    move |source| BundleError { path, source }
}

/// Name of this build's shared library directory: `cronium-lib-<euid>-<hash16>`, the hash
/// covering the libraries' content so that a runner with different helpers never uses it.
pub fn shared_lib_name() -> String {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    format!("{LIB_DIR_PREFIX}{euid}-{LIBRARIES_HASH:016x}")
}

/// [`libraries_hash`], computed at compile time (not on every run).
const LIBRARIES_HASH: u64 = libraries_hash();

/// 64-bit FNV-1a over the libraries, each followed by a NUL (which none of them contains), so
/// that moving text from one library to the next changes the hash.
const fn libraries_hash() -> u64 {
    let mut hash = FNV_OFFSET;
    let mut i = 0;
    while i < LIBRARIES.len() {
        hash = fnv1a(fnv1a(hash, LIBRARIES[i].1.as_bytes()), &[0]);
        i += 1;
    }
    hash
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// Continues a 64-bit FNV-1a hash (start from [`FNV_OFFSET`]) over `bytes`.
const fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(PRIME);
        i += 1;
    }
    hash
}

/// Creates (or reuses) this build's shared library directory under `base`, checks that nobody
/// but us can have put anything in it, makes sure each library has exactly the expected content
/// and returns the directory. Any error means "do not share".
///
/// Safe for concurrent runners: the directory is created with `create` (an existing one is
/// reused only after the checks), and a missing or wrong library is written to a unique temporary
/// name and renamed into place, so a reader sees the old file or the complete new one.
pub fn shared_lib_dir(base: &Path) -> io::Result<PathBuf> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    // The base may legitimately be a symlink (/tmp on some systems), so it is followed here.
    let base_mode = fs::metadata(base)?.mode();
    if base_mode & 0o022 != 0 && base_mode & 0o1000 == 0 {
        // Anyone who can write to it could rename our directory away and put theirs in its place.
        return Err(refuse(format!(
            "the work base is writable by group or others and not sticky (mode {:o})",
            base_mode & 0o7777
        )));
    }
    let dir = base.join(shared_lib_name());
    match fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    // symlink_metadata: a symlink planted under our name is refused, never followed.
    let meta = fs::symlink_metadata(&dir)?;
    if !meta.is_dir() {
        return Err(refuse(format!("{} is not a directory", dir.display())));
    }
    if meta.uid() != euid {
        return Err(refuse(format!(
            "{} is owned by uid {}, not {euid}",
            dir.display(),
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(refuse(format!(
            "{} has mode {:o}, not private",
            dir.display(),
            meta.mode() & 0o7777
        )));
    }
    for (name, content) in LIBRARIES {
        ensure_file(&dir, name, content.as_bytes())?;
    }
    touch_if_old(&dir, &meta);
    Ok(dir)
}

fn refuse(reason: String) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, reason)
}

/// Leaves `dir/name` alone if it is a regular file holding exactly `content`; otherwise replaces
/// it atomically.
fn ensure_file(dir: &Path, name: &str, content: &[u8]) -> io::Result<()> {
    let path = dir.join(name);
    if has_content(&path, content) {
        return Ok(());
    }
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        // Read-only: the libraries are never edited in place, only replaced.
        .mode(0o444)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .and_then(|mut f| f.write_all(content))
        .and_then(|()| fs::rename(&tmp, &path));
    match written {
        Ok(()) if name == PYTHON_LIB => {
            // Python validates its cached bytecode by the source's mtime (in seconds) and size
            // only, so a cache compiled from the replaced content could still be used.
            let _ = fs::remove_dir_all(dir.join("__pycache__"));
            Ok(())
        }
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// True if `path` is a regular file (not a symlink) with exactly `content`.
fn has_content(path: &Path, content: &[u8]) -> bool {
    let Ok(file) = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    else {
        return false;
    };
    match file.metadata() {
        Ok(m) if m.is_file() && m.len() == content.len() as u64 => {}
        _ => return false,
    }
    // One byte more than expected, to notice a file that grew since the metadata call.
    let mut found = Vec::with_capacity(content.len() + 1);
    match file.take(content.len() as u64 + 1).read_to_end(&mut found) {
        Ok(_) => found == content,
        Err(_) => false,
    }
}

/// Sets the directory's timestamps to now if they are older than [`LIB_DIR_TOUCH_AFTER`] (rarely,
/// to avoid a metadata write per run). Best effort.
fn touch_if_old(dir: &Path, meta: &fs::Metadata) {
    let old = meta
        .modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .is_some_and(|age| age >= LIB_DIR_TOUCH_AFTER);
    if old {
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.set_modified(SystemTime::now());
        }
    }
}

/// Environment for the script: the manifest's, then the context's, then what Cronium provides.
/// The runner's own environment is inherited underneath by the caller.
pub fn environment(
    manifest: &Manifest,
    context: &RunContext,
    helpers: &Helpers,
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
    set(HELPER_DIR_ENV, helpers.data_dir.clone().into());
    set("CRONIUM_RUNNER_BIN", runner_bin.into());
    set("BASH_ENV", helpers.lib_dir.join(BASH_LIB).into());
    let python_path = prepend_path(helpers.lib_dir.clone(), lookup(&env, "PYTHONPATH"));
    let node_path = prepend_path(helpers.lib_dir.clone(), lookup(&env, "NODE_PATH"));
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn base() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        dir
    }

    fn assert_libraries(dir: &Path) {
        for (name, content) in LIBRARIES {
            let path = dir.join(name);
            let meta = fs::symlink_metadata(&path).expect("library exists");
            assert!(meta.is_file(), "{} is a regular file", path.display());
            assert_eq!(fs::read_to_string(&path).expect("read"), content, "{name}");
        }
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn fnv1a_matches_reference_vectors() {
        assert_eq!(fnv1a(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(FNV_OFFSET, b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(
            fnv1a(fnv1a(FNV_OFFSET, b"foo"), b"bar"),
            0x8594_4171_f739_67e8
        );
    }

    #[test]
    fn lib_dir_name_has_euid_and_content_hash() {
        let name = shared_lib_name();
        let euid = unsafe { libc::geteuid() };
        let hash = name
            .strip_prefix(&format!("cronium-lib-{euid}-"))
            .expect("prefix and euid");
        assert_eq!(hash.len(), 16, "{name}");
        assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()), "{name}");
        assert_eq!(hash, format!("{:016x}", libraries_hash()));
    }

    #[test]
    fn shared_dir_is_created_private_and_reused() {
        let base = base();
        let first = shared_lib_dir(base.path()).expect("shared dir");
        assert_eq!(first, base.path().join(shared_lib_name()));
        let meta = fs::symlink_metadata(&first).expect("exists");
        assert!(meta.is_dir());
        assert_eq!(meta.mode() & 0o777, 0o700);
        assert_libraries(&first);
        let inode = fs::metadata(first.join(PYTHON_LIB)).expect("meta").ino();
        let second = shared_lib_dir(base.path()).expect("shared dir again");
        assert_eq!(first, second);
        // Kept as it was, not rewritten.
        assert_eq!(
            fs::metadata(second.join(PYTHON_LIB)).expect("meta").ino(),
            inode
        );
        assert_eq!(entries(&first), vec![BASH_LIB, NODE_LIB, PYTHON_LIB]);
    }

    #[test]
    fn wrong_or_missing_library_is_replaced() {
        let base = base();
        let dir = shared_lib_dir(base.path()).expect("shared dir");
        let elsewhere = base.path().join("elsewhere");
        fs::write(&elsewhere, BASH_FUNCTIONS).expect("write");
        fs::remove_file(dir.join(PYTHON_LIB)).expect("rm");
        fs::write(dir.join(PYTHON_LIB), "print('stale')\n").expect("write");
        // Same length, different bytes: the length check alone would not notice.
        fs::remove_file(dir.join(NODE_LIB)).expect("rm");
        fs::write(dir.join(NODE_LIB), NODE_MODULE.replace('a', "b")).expect("write");
        // A symlink to the right content is still replaced by a regular file.
        fs::remove_file(dir.join(BASH_LIB)).expect("rm");
        std::os::unix::fs::symlink(&elsewhere, dir.join(BASH_LIB)).expect("symlink");
        assert_eq!(shared_lib_dir(base.path()).expect("shared dir"), dir);
        assert_libraries(&dir);
        assert_eq!(entries(&dir), vec![BASH_LIB, NODE_LIB, PYTHON_LIB]);
        assert_eq!(
            fs::read_to_string(&elsewhere).expect("read"),
            BASH_FUNCTIONS
        );
        fs::remove_file(dir.join(PYTHON_LIB)).expect("rm");
        assert_eq!(shared_lib_dir(base.path()).expect("shared dir"), dir);
        assert_libraries(&dir);
    }

    #[test]
    fn unsafe_shared_dir_is_refused() {
        // A symlink under our name, even to a private directory of ours.
        let base = base();
        let target = base.path().join("target");
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&target)
            .expect("mkdir");
        std::os::unix::fs::symlink(&target, base.path().join(shared_lib_name())).expect("ln");
        assert!(shared_lib_dir(base.path()).is_err());
        assert_eq!(
            entries(&target),
            Vec::<String>::new(),
            "nothing written through it"
        );

        // Ours but open to others.
        let base = self::base();
        let dir = base.path().join(shared_lib_name());
        fs::create_dir(&dir).expect("mkdir");
        for mode in [0o777, 0o750, 0o701] {
            fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).expect("chmod");
            assert!(shared_lib_dir(base.path()).is_err(), "mode {mode:o}");
        }
        assert_eq!(
            entries(&dir),
            Vec::<String>::new(),
            "nothing written into it"
        );

        // A regular file under our name.
        let base = self::base();
        fs::write(base.path().join(shared_lib_name()), "x").expect("write");
        assert!(shared_lib_dir(base.path()).is_err());
    }

    #[test]
    fn shared_dir_owned_by_someone_else_is_refused() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root to chown");
            return;
        }
        let base = base();
        let dir = base.path().join(shared_lib_name());
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .expect("mkdir");
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).expect("chown");
        assert!(shared_lib_dir(base.path()).is_err());
        assert_eq!(entries(&dir), Vec::<String>::new());
    }

    #[test]
    fn base_writable_by_others_needs_the_sticky_bit() {
        let base = base();
        for mode in [0o777, 0o775, 0o757] {
            fs::set_permissions(base.path(), fs::Permissions::from_mode(mode)).expect("chmod");
            assert!(shared_lib_dir(base.path()).is_err(), "mode {mode:o}");
            assert_eq!(entries(base.path()), Vec::<String>::new(), "mode {mode:o}");
        }
        fs::set_permissions(base.path(), fs::Permissions::from_mode(0o1777)).expect("chmod");
        let dir = shared_lib_dir(base.path()).expect("sticky base is fine");
        assert_libraries(&dir);
    }

    #[test]
    fn concurrent_preparation_is_safe() {
        let base = base();
        let dirs: Vec<PathBuf> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|_| s.spawn(|| shared_lib_dir(base.path()).expect("shared dir")))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        assert!(dirs.iter().all(|d| d == &dirs[0]));
        assert_libraries(&dirs[0]);
        assert_eq!(entries(&dirs[0]), vec![BASH_LIB, NODE_LIB, PYTHON_LIB]);
    }
}
