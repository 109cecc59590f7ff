//! The private working directory of one run.
//!
//! Created with mode 0700 under the work base, holds the unpacked payload and `.cronium/`, and is
//! removed when the [`WorkDir`] is dropped, on every path. A runner that is killed outright
//! (SIGKILL, out of memory) cannot clean up, so each live directory is held under an `flock`, and
//! [`sweep_stale`] lets a later run on that host remove directories nobody holds any more: at
//! most one run a minute per user and work base looks (the age of a stamp file,
//! `.cronium-swept-UID`, says when the last one did), because reading the work base on every run
//! costs each run time proportional to the runs alive beside it (0.6 ms per run with 200
//! concurrent runs on one host, measured).
//! Not responsible for what goes in the directory.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Prefix of every working directory's name.
const PREFIX: &str = "cronium-run-";
/// A directory younger than this is never swept: its runner may not have locked it yet.
const SWEEP_MIN_AGE: Duration = Duration::from_secs(60);
/// A user's sweep of a work base is skipped when its previous one is younger than this.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Prefix of the stamp file whose modification time is the user's last sweep of the work base.
pub(crate) const SWEEP_STAMP_PREFIX: &str = ".cronium-swept-";
/// Another build's shared helper library directory (`cronium-lib-*`, see `bundle`) unused for
/// this long is removed. Its runner touches it at least daily while using it.
const LIB_SWEEP_MIN_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum WorkDirError {
    #[error("cannot create the working directory under {base}: {source}")]
    Create { base: PathBuf, source: io::Error },
}

/// A directory that removes itself (and everything in it) when dropped.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
    removed: bool,
    /// Open on the directory with an exclusive `flock` for as long as the run lives (close-on-exec,
    /// so the script does not inherit it); released when the runner exits, however it exits.
    _lock: Option<File>,
}

impl WorkDir {
    /// Creates a fresh directory `cronium-run-*` with mode 0700 under `base`.
    pub fn create(base: &Path) -> Result<Self, WorkDirError> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let mut last_err = None;
        for _ in 0..16 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = base.join(format!("{PREFIX}{}-{nanos:08x}{n}", std::process::id()));
            // create (not create_all): fails if the name exists, so we never reuse someone's dir.
            match fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {
                    // The umask may have narrowed the mode; make it exactly 0700.
                    let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o700));
                    let lock = lock(&path);
                    return Ok(WorkDir {
                        path,
                        removed: false,
                        _lock: lock,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
                Err(source) => {
                    return Err(WorkDirError::Create {
                        base: base.to_path_buf(),
                        source,
                    })
                }
            }
        }
        Err(WorkDirError::Create {
            base: base.to_path_buf(),
            source: last_err.unwrap_or_else(|| io::Error::other("no free name")),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the directory now (idempotent); the drop does the same if this is never called.
    pub fn remove(&mut self) {
        if self.removed {
            return;
        }
        self.removed = true;
        if fs::remove_dir_all(&self.path).is_ok() {
            return;
        }
        // A script may have left directories without write or search permission (chmod 000);
        // as their owner we can restore it and try again.
        make_writable(&self.path);
        if let Err(e) = fs::remove_dir_all(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                diag!(
                    "cronium-runner: could not remove {}: {e}",
                    self.path.display()
                );
            }
        }
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        self.remove();
    }
}

fn make_writable(dir: &Path) {
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                make_writable(&entry.path());
            }
        }
    }
}

/// Opens `dir` and takes an exclusive, non-blocking `flock` on it; `None` if someone holds it.
fn lock(dir: &Path) -> Option<File> {
    let file = File::open(dir).ok()?;
    // SAFETY: flock on a descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    (rc == 0).then_some(file)
}

/// Removes working directories under `base` left by runners that died without cleaning up:
/// ours (same owner), older than a minute, and not locked by a live runner.
///
/// Shared helper library directories (`cronium-lib-*`) are never treated as working directories;
/// only ours of another runner build that were not used for a week are removed.
///
/// Skipped when this user swept `base` less than [`SWEEP_EVERY`] ago ([`swept_recently`]).
pub fn sweep_stale(base: &Path) {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let now = SystemTime::now();
    if swept_recently(base, uid, now) {
        return;
    }
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    let own_libs = format!("{}{uid}-", crate::bundle::LIB_DIR_PREFIX);
    let current_lib = crate::bundle::shared_lib_name();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&own_libs) && name != current_lib {
            sweep_old_lib_dir(&entry.path(), uid, now);
            continue;
        }
        if !name.starts_with(PREFIX) {
            continue;
        }
        let path = entry.path();
        // symlink_metadata: a symlink planted under our prefix is never followed.
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        let old_enough = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age >= SWEEP_MIN_AGE);
        if !meta.is_dir() || meta.uid() != uid || !old_enough {
            continue;
        }
        if let Some(_held) = lock(&path) {
            let mut stale = WorkDir {
                path,
                removed: false,
                _lock: None,
            };
            stale.remove();
        }
    }
}

/// True when `uid` swept `base` less than [`SWEEP_EVERY`] ago, by the stamp file's age. When
/// not, the stamp is set to `now` (created when missing) and the caller sweeps. A stamp that is
/// not a regular file of `uid` (a symlink, another user's file) is never trusted nor written:
/// then every run sweeps, as before stamps existed. A stamp from the future (the clock was set
/// back) counts as old.
fn swept_recently(base: &Path, uid: u32, now: SystemTime) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let stamp = base.join(format!("{SWEEP_STAMP_PREFIX}{uid}"));
    let open = |create: bool| {
        fs::OpenOptions::new()
            .write(true)
            .create_new(create)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&stamp)
    };
    match fs::symlink_metadata(&stamp) {
        Ok(meta) if meta.is_file() && meta.uid() == uid => {
            let fresh = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age < SWEEP_EVERY);
            if !fresh {
                if let Ok(f) = open(false) {
                    let _ = f.set_modified(now);
                }
            }
            fresh
        }
        Ok(_) => false,
        Err(_) => {
            let _ = open(true);
            false
        }
    }
}

/// Removes `dir`, another build's shared helper library directory, if it is a real directory of
/// ours that nobody touched for [`LIB_SWEEP_MIN_AGE`].
fn sweep_old_lib_dir(dir: &Path, uid: u32, now: SystemTime) {
    // symlink_metadata: a symlink planted under the prefix is never followed.
    let Ok(meta) = fs::symlink_metadata(dir) else {
        return;
    };
    let old_enough = meta
        .modified()
        .ok()
        .and_then(|m| now.duration_since(m).ok())
        .is_some_and(|age| age >= LIB_SWEEP_MIN_AGE);
    if meta.is_dir() && meta.uid() == uid && old_enough {
        // Best effort: a concurrent sweeper may be removing it too.
        let _ = fs::remove_dir_all(dir);
    }
}
