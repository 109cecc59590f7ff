//! The private working directory of one run.
//!
//! Created with mode 0700 under the work base, holds the unpacked payload and `.cronium/`, and is
//! removed when the [`WorkDir`] is dropped, on every path. Not responsible for what goes in it.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

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
            let path = base.join(format!("cronium-run-{}-{nanos:08x}{n}", std::process::id()));
            // create (not create_all): fails if the name exists, so we never reuse someone's dir.
            match fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {
                    // The umask may have narrowed the mode; make it exactly 0700.
                    let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o700));
                    return Ok(WorkDir {
                        path,
                        removed: false,
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
                eprintln!(
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
