//! Validating and unpacking a payload archive (`.tar.gz` with `manifest.yaml` and the script).
//!
//! Everything an archive could do to escape or exhaust its directory is refused here with an error
//! naming the entry and the problem: size and entry-count limits, absolute paths, `..`, links of
//! any kind (symlinks and hard links are all rejected, not only escaping ones: a script payload
//! never needs them), device files and fifos. Only regular files and directories are written, so
//! no later write can be redirected outside the directory. Not for running anything.

use std::cell::Cell;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use cronium_protocol::{Manifest, MANIFEST_FORMAT, MANIFEST_NAME};
use flate2::read::MultiGzDecoder;
use tar::EntryType;

/// Largest accepted archive, compressed.
pub const MAX_COMPRESSED_BYTES: u64 = 64 * 1024 * 1024;
/// Largest accepted total of entry sizes once decompressed.
pub const MAX_UNCOMPRESSED_BYTES: u64 = 256 * 1024 * 1024;
/// Most entries (files and directories) an archive may hold.
pub const MAX_ENTRIES: usize = 10_000;
/// Directory inside the working directory reserved for the runtime helpers.
pub const RESERVED_DIR: &str = ".cronium";

#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("cannot read the payload archive {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("payload archive is {size} bytes, more than the limit of {MAX_COMPRESSED_BYTES} bytes (64 MiB) compressed")]
    TooLargeCompressed { size: u64 },
    #[error("payload archive expands to more than {MAX_UNCOMPRESSED_BYTES} bytes (256 MiB) uncompressed{}", entry.as_ref().map(|e| format!(" (at entry `{e}`)")).unwrap_or_default())]
    TooLargeUncompressed { entry: Option<String> },
    #[error("payload archive has more than {MAX_ENTRIES} entries")]
    TooManyEntries,
    #[error("payload entry `{0}` has an absolute path")]
    AbsolutePath(String),
    #[error("payload entry `{0}` has a `..` component")]
    ParentDir(String),
    #[error("payload entry `{path}` is a {kind}; only regular files and directories are allowed")]
    ForbiddenType { path: String, kind: &'static str },
    #[error("payload entry `{0}` is inside .cronium/, which is reserved for the runtime helpers")]
    Reserved(String),
    #[error("payload archive is not a valid tar.gz: {0}")]
    Corrupt(io::Error),
    #[error("cannot write payload entry `{path}`: {source}")]
    Write { path: String, source: io::Error },
    #[error("payload has no {MANIFEST_NAME}")]
    NoManifest,
    #[error("{MANIFEST_NAME} is not a regular file")]
    ManifestNotFile,
    #[error("{MANIFEST_NAME} is invalid: {0}")]
    Manifest(String),
    #[error("manifest format {found} is not supported by this runner (it supports 1 to {MANIFEST_FORMAT})")]
    Format { found: u32 },
    #[error("manifest entrypoint `{path}` {problem}")]
    Entrypoint { path: String, problem: &'static str },
    #[error("{MANIFEST_NAME} env: {0}")]
    Env(String),
}

/// Checks the size of an archive file and opens it.
pub fn open_file(path: &Path) -> Result<File, PayloadError> {
    let open_err = |source| PayloadError::Open {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(open_err)?;
    let size = file.metadata().map_err(open_err)?.len();
    if size > MAX_COMPRESSED_BYTES {
        return Err(PayloadError::TooLargeCompressed { size });
    }
    Ok(file)
}

/// Wraps the decompressed stream so that a tar stream longer than its headers announce (headers
/// and padding included) still cannot exceed the limit.
struct Limited<R> {
    inner: R,
    left: u64,
    exceeded: Rc<Cell<bool>>,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // One byte more tells "exactly at the limit" apart from "beyond it".
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? == 0 {
                return Ok(0);
            }
            self.exceeded.set(true);
            return Err(io::Error::other("uncompressed size limit exceeded"));
        }
        let max = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..max])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Largest accepted `manifest.yaml`.
const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

/// Unpacks a gzip-compressed tar stream into `dest` (an empty private directory) and returns the
/// bytes of `manifest.yaml`, which is kept in memory rather than written: the script has no use
/// for it, and every file created and deleted costs time on a local run.
pub fn unpack(compressed: impl Read, dest: &Path) -> Result<Option<Vec<u8>>, PayloadError> {
    let exceeded = Rc::new(Cell::new(false));
    let limited = Limited {
        inner: MultiGzDecoder::new(compressed.take(MAX_COMPRESSED_BYTES + 1)),
        // Headers and padding on top of the data: at most a few KiB per entry.
        left: MAX_UNCOMPRESSED_BYTES + (MAX_ENTRIES as u64 + 16) * 1536,
        exceeded: exceeded.clone(),
    };
    let corrupt = |e: io::Error| {
        if exceeded.get() {
            PayloadError::TooLargeUncompressed { entry: None }
        } else {
            PayloadError::Corrupt(e)
        }
    };
    let mut archive = tar::Archive::new(limited);
    let mut total: u64 = 0;
    let mut count = 0usize;
    let mut manifest = None;
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        count += 1;
        if count > MAX_ENTRIES {
            return Err(PayloadError::TooManyEntries);
        }
        let raw_path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            continue;
        }
        let rel = safe_relative(&raw_path)?;
        if let Some(kind) = forbidden_kind(kind) {
            return Err(PayloadError::ForbiddenType {
                path: raw_path,
                kind,
            });
        }
        let size = entry.header().entry_size().map_err(corrupt)?;
        total = total.saturating_add(size);
        if total > MAX_UNCOMPRESSED_BYTES {
            return Err(PayloadError::TooLargeUncompressed {
                entry: Some(raw_path),
            });
        }
        let Some(rel) = rel else { continue };
        if rel.starts_with(RESERVED_DIR) {
            return Err(PayloadError::Reserved(raw_path));
        }
        if rel.as_os_str() == MANIFEST_NAME {
            if kind == EntryType::Directory {
                return Err(PayloadError::ManifestNotFile);
            }
            if size > MAX_MANIFEST_BYTES {
                return Err(PayloadError::Manifest(format!(
                    "{size} bytes, more than the limit of {MAX_MANIFEST_BYTES}"
                )));
            }
            let mut bytes = Vec::with_capacity(size as usize);
            entry.read_to_end(&mut bytes).map_err(corrupt)?;
            manifest = Some(bytes);
            continue;
        }
        let target = dest.join(&rel);
        let write_err = |source| PayloadError::Write {
            path: raw_path.clone(),
            source,
        };
        if kind == EntryType::Directory {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&target)
                .map_err(write_err)?;
            continue;
        }
        if let Some(parent) = target.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(write_err)?;
        }
        // Keep the archived permission bits (an executable helper stays executable) but always
        // let the owner read and write, so cleanup and the interpreter can use the file.
        let mode = (entry.header().mode().unwrap_or(0o644) & 0o777) | 0o600;
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&target)
            .map_err(write_err)?;
        io::copy(&mut entry, &mut file).map_err(|e| {
            if exceeded.get() {
                PayloadError::TooLargeUncompressed {
                    entry: Some(raw_path.clone()),
                }
            } else {
                PayloadError::Corrupt(e)
            }
        })?;
    }
    Ok(manifest)
}

/// The normalised relative path of an entry, `None` for the archive root (`./`).
fn safe_relative(raw: &str) -> Result<Option<PathBuf>, PayloadError> {
    let mut out = PathBuf::new();
    for component in Path::new(raw).components() {
        match component {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir => return Err(PayloadError::ParentDir(raw.to_string())),
            Component::RootDir | Component::Prefix(_) => {
                return Err(PayloadError::AbsolutePath(raw.to_string()))
            }
        }
    }
    Ok(if out.as_os_str().is_empty() {
        None
    } else {
        Some(out)
    })
}

fn forbidden_kind(kind: EntryType) -> Option<&'static str> {
    match kind {
        EntryType::Regular | EntryType::Continuous | EntryType::Directory => None,
        EntryType::Symlink => Some("symbolic link"),
        EntryType::Link => Some("hard link"),
        EntryType::Char => Some("character device"),
        EntryType::Block => Some("block device"),
        EntryType::Fifo => Some("fifo"),
        EntryType::GNUSparse => Some("sparse file"),
        _ => Some("special entry"),
    }
}

/// Parses and checks `manifest.yaml` (as returned by [`unpack`]) and the entrypoint in `dir`.
pub fn load_manifest(dir: &Path, bytes: Option<Vec<u8>>) -> Result<Manifest, PayloadError> {
    let bytes = bytes.ok_or(PayloadError::NoManifest)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| PayloadError::Manifest("not valid UTF-8".to_string()))?;
    // The server writes JSON (a subset of YAML), read here by the cheaper parser; anything else,
    // or JSON it refuses, is read as the YAML it is documented to be (whose error is reported).
    let manifest: Manifest = match serde_json::from_str(&text) {
        Ok(m) => m,
        Err(_) => {
            serde_saphyr::from_str(&text).map_err(|e| PayloadError::Manifest(e.to_string()))?
        }
    };
    if manifest.format == 0 || manifest.format > MANIFEST_FORMAT {
        return Err(PayloadError::Format {
            found: manifest.format,
        });
    }
    check_entrypoint(dir, &manifest.entrypoint)?;
    check_env(&manifest.env).map_err(PayloadError::Env)?;
    Ok(manifest)
}

fn check_entrypoint(dir: &Path, entrypoint: &str) -> Result<(), PayloadError> {
    let bad = |problem| PayloadError::Entrypoint {
        path: entrypoint.to_string(),
        problem,
    };
    if entrypoint.is_empty() {
        return Err(bad("is empty"));
    }
    let rel = match safe_relative(entrypoint) {
        Ok(Some(rel)) => rel,
        Ok(None) => return Err(bad("names the payload root, not a file")),
        Err(PayloadError::AbsolutePath(_)) => return Err(bad("is an absolute path")),
        Err(_) => return Err(bad("contains a `..` component")),
    };
    match fs::symlink_metadata(dir.join(rel)) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(bad("is not a regular file")),
        Err(_) => Err(bad("is missing from the payload")),
    }
}

/// Environment names must be usable by `execve`: non-empty, no `=` and no NUL; values no NUL.
pub fn check_env(env: &std::collections::BTreeMap<String, String>) -> Result<(), String> {
    for (k, v) in env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(format!("`{k}` is not a valid environment variable name"));
        }
        if v.contains('\0') {
            return Err(format!("the value of `{k}` contains a NUL byte"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_normalised_and_escapes_refused() {
        assert_eq!(
            safe_relative("./a/./b").unwrap(),
            Some(PathBuf::from("a/b"))
        );
        assert_eq!(safe_relative("./").unwrap(), None);
        assert!(matches!(
            safe_relative("a/../../x"),
            Err(PayloadError::ParentDir(_))
        ));
        assert!(matches!(
            safe_relative("/etc/passwd"),
            Err(PayloadError::AbsolutePath(_))
        ));
    }
}
