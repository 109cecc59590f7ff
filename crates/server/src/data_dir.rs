//! The data directory's protection: it holds the database, the encryption key and the payload
//! cache, so it is mode 0700 and every file in it 0600, whatever the umask and whatever an older
//! version or the operator left behind. Not for what goes in it.

use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The umask this process started with, before [`make_private_by_default`] (the one scripts get).
static STARTED_WITH: OnceLock<u32> = OnceLock::new();

/// Sets the process umask to 077 so that every file the server creates from now on (the
/// database and its `-wal` and `-shm`, the key, payloads) is private; returns the umask it had
/// at start, for the processes it starts on the user's behalf. Idempotent.
pub fn make_private_by_default() -> u32 {
    *STARTED_WITH.get_or_init(|| {
        // SAFETY: umask cannot fail; it only swaps the process's mask.
        unsafe { libc::umask(0o077) as u32 }
    })
}

/// Creates `dir` with mode 0700 (and missing parents), or tightens an existing one: the
/// directory and every directory under it to 0700, every other file to 0600. Symlinks are left
/// alone (never followed). Returns the paths whose mode was tightened, to be logged.
pub fn secure(dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mut tightened = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.file_type().is_symlink() {
            continue;
        }
        let want = if meta.is_dir() { 0o700 } else { 0o600 };
        let mode = meta.permissions().mode() & 0o7777;
        if mode & !want != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & want))?;
            tightened.push(path.clone());
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(tightened)
}

/// The file of a `sqlite:` database URL (`sqlite:PATH`, `sqlite://PATH`, with any `?options`).
pub fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

/// Creates an SQLite database file with mode 0600 before SQLite does: SQLite gives its `-wal`
/// and `-shm` files the mode of the database file, so they are private too. An existing file
/// is left as it is (its mode is [`secure`]'s business).
pub fn precreate_sqlite(file: &Path) -> io::Result<()> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_name_their_file() {
        assert_eq!(sqlite_file("sqlite:/d/c.db"), Some("/d/c.db".into()));
        assert_eq!(
            sqlite_file("sqlite:///d/c.db?mode=rwc"),
            Some("/d/c.db".into())
        );
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("postgres://u:p@h/db"), None);
    }

    #[test]
    fn a_loose_data_directory_is_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        std::fs::create_dir_all(dir.join("payloads")).unwrap();
        std::fs::write(dir.join("cronium.db"), b"x").unwrap();
        std::fs::write(dir.join("payloads/p.tar.gz"), b"x").unwrap();
        for (p, m) in [("", 0o755), ("payloads", 0o777), ("cronium.db", 0o644)] {
            std::fs::set_permissions(dir.join(p), std::fs::Permissions::from_mode(m)).unwrap();
        }
        std::os::unix::fs::symlink("/etc/hostname", dir.join("link")).unwrap();
        let tightened = secure(&dir).unwrap();
        assert_eq!(tightened.len(), 4, "{tightened:?}");
        let mode = |p: &str| {
            std::fs::symlink_metadata(dir.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(
            (
                mode(""),
                mode("payloads"),
                mode("cronium.db"),
                mode("payloads/p.tar.gz")
            ),
            (0o700, 0o700, 0o600, 0o600)
        );
        assert!(secure(&dir).unwrap().is_empty(), "nothing left to tighten");
    }
}
