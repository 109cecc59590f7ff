//! Payloads: the tar.gz (`manifest.yaml` + the script) that the runner executes, built from one
//! event version, content-addressed by SHA-256 and cached on disk while the event is unchanged.
//!
//! The archive is deterministic (fixed order, modes and timestamps), so the same event version
//! always yields the same address, and any change of script or settings yields a new one.
//! Per-run data (job id, input, variables) is not in here: it travels as the run context.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use cronium_protocol::{EventMeta, Interpreter, Manifest, MANIFEST_FORMAT, MANIFEST_NAME};
use flate2::write::GzEncoder;
use flate2::Compression;
use sha2::{Digest, Sha256};

/// What a payload is made from.
#[derive(Debug, Clone)]
pub struct PayloadSource<'a> {
    pub interpreter: Interpreter,
    pub script: &'a str,
    pub env: std::collections::BTreeMap<String, String>,
    pub timeout: Duration,
    pub kill_grace: Duration,
    pub max_output_bytes: u64,
    pub event: EventMeta,
}

/// A payload archive on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadRef {
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("cannot write payload {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot encode manifest: {0}")]
    Manifest(String),
}

/// Builds the archive bytes.
pub fn build_archive(src: &PayloadSource<'_>) -> Result<Vec<u8>, PayloadError> {
    let entrypoint = format!("script.{}", src.interpreter.extension());
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        interpreter: src.interpreter,
        entrypoint: entrypoint.clone(),
        env: src.env.clone(),
        timeout_ms: u64::try_from(src.timeout.as_millis()).unwrap_or(u64::MAX),
        kill_grace_ms: u64::try_from(src.kill_grace.as_millis()).unwrap_or(u64::MAX),
        max_output_bytes: src.max_output_bytes,
        event: src.event.clone(),
    };
    // JSON, which is YAML too: the runner reads it with a JSON parser first, several times
    // cheaper than a YAML parser's start on every run (a hand-written YAML manifest still works).
    let mut manifest_text = serde_json::to_string_pretty(&manifest)
        .map_err(|e| PayloadError::Manifest(e.to_string()))?;
    manifest_text.push('\n');
    let io = |source| PayloadError::Io {
        path: "(memory)".into(),
        source,
    };
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    for (name, body, mode) in [
        (MANIFEST_NAME, manifest_text.as_bytes(), 0o644),
        (entrypoint.as_str(), src.script.as_bytes(), 0o755),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, name, body).map_err(io)?;
    }
    let gz = tar.into_inner().map_err(io)?;
    gz.finish().map_err(io)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Content-addressed payload files under one directory, with an in-memory index from
/// (event id, version, settings) to the file so that unchanged events are not rebuilt.
#[derive(Debug)]
pub struct PayloadCache {
    dir: PathBuf,
    index: Mutex<HashMap<String, PayloadRef>>,
}

impl PayloadCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        PayloadCache {
            dir: dir.into(),
            index: Mutex::new(HashMap::new()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The payload for `src`, built and written only when not already cached.
    pub fn get_or_build(&self, src: &PayloadSource<'_>) -> Result<PayloadRef, PayloadError> {
        self.get_or_build_timed(src).map(|(r, _)| r)
    }

    /// As [`Self::get_or_build`], with how long generating it took (building the archive,
    /// hashing and writing it) when it was generated; `None` when the cache answered.
    pub fn get_or_build_timed(
        &self,
        src: &PayloadSource<'_>,
    ) -> Result<(PayloadRef, Option<Duration>), PayloadError> {
        // The env is part of the key: a workflow node may override its event's env, which
        // makes another payload of the same event version.
        let env = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            src.env.hash(&mut h);
            h.finish()
        };
        let key = format!(
            "{}:{}:{}:{}:{}:{env:x}",
            src.event.id,
            src.event.version,
            src.max_output_bytes,
            src.kill_grace.as_millis(),
            src.timeout.as_millis()
        );
        if let Some(hit) = self.index.lock().ok().and_then(|i| i.get(&key).cloned()) {
            if let Ok(meta) = std::fs::metadata(&hit.path) {
                // A file in use must not look unused to the age-based cleanup; refreshed at most
                // hourly, so a hit costs one stat as before.
                let marked = meta.modified().ok().and_then(|m| m.elapsed().ok());
                if marked.is_none_or(|age| age > USE_MARK_INTERVAL) {
                    mark_used(&hit.path);
                }
                return Ok((hit, None));
            }
        }
        let started = std::time::Instant::now();
        let bytes = build_archive(src)?;
        let sha256 = sha256_hex(&bytes);
        let path = self.dir.join(format!("{sha256}.tar.gz"));
        let io = |source| PayloadError::Io {
            path: path.display().to_string(),
            source,
        };
        if path.exists() {
            mark_used(&path);
        } else {
            std::fs::create_dir_all(&self.dir).map_err(io)?;
            // A temporary name of its own per call: concurrent first runs of an event must not
            // write into one file. The content is addressed by its hash, so whichever rename
            // lands last leaves the same bytes.
            let mut tmp = tempfile::Builder::new()
                .prefix(&format!(".{sha256}."))
                .suffix(".tmp")
                .tempfile_in(&self.dir)
                .map_err(io)?;
            tmp.write_all(&bytes).map_err(io)?;
            if let Err(e) = tmp.persist(&path) {
                if !path.exists() {
                    return Err(io(e.error));
                }
            }
        }
        let r = PayloadRef {
            path,
            sha256,
            size: bytes.len() as u64,
        };
        if let Ok(mut i) = self.index.lock() {
            i.insert(key, r.clone());
        }
        Ok((r, Some(started.elapsed())))
    }

    /// Payload files not used for `max_age`, with their sizes: what [`Self::cleanup`] removes.
    pub fn stale(&self, max_age: Duration) -> Vec<(PathBuf, u64)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let cutoff = SystemTime::now() - max_age;
        let mut stale = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let is_payload = path.extension().is_some_and(|e| e == "gz");
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if is_payload && meta.modified().is_ok_and(|t| t < cutoff) {
                stale.push((path, meta.len()));
            }
        }
        stale
    }

    /// Removes payload files not used for `max_age`. Returns how many were removed.
    pub fn cleanup(&self, max_age: Duration) -> std::io::Result<usize> {
        let mut removed = 0;
        for (path, _) in self.stale(max_age) {
            if std::fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
        if removed > 0 {
            if let Ok(mut i) = self.index.lock() {
                i.retain(|_, r| r.path.exists());
            }
        }
        Ok(removed)
    }
}

/// How often a payload in use has its modification time refreshed (the cleanup's "last used").
const USE_MARK_INTERVAL: Duration = Duration::from_secs(3600);

/// Marks a cached payload as used now, so that the age-based cleanup keeps it.
fn mark_used(path: &Path) {
    let _ = std::fs::File::options()
        .append(true)
        .open(path)
        .and_then(|f| f.set_modified(SystemTime::now()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(script: &str, version: i64) -> PayloadSource<'_> {
        PayloadSource {
            interpreter: Interpreter::Python,
            script,
            env: [("A".to_string(), "1".to_string())].into(),
            timeout: Duration::from_secs(60),
            kill_grace: Duration::from_secs(5),
            max_output_bytes: 1 << 20,
            event: EventMeta {
                id: 1,
                name: "e".into(),
                version,
            },
        }
    }

    #[test]
    fn archive_is_deterministic_and_holds_manifest_and_script() {
        let a = build_archive(&src("print(1)", 1)).unwrap();
        let b = build_archive(&src("print(1)", 1)).unwrap();
        assert_eq!(sha256_hex(&a), sha256_hex(&b));
        let c = build_archive(&src("print(2)", 1)).unwrap();
        assert_ne!(sha256_hex(&a), sha256_hex(&c));

        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&a[..]));
        let mut names = vec![];
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            let mut body = String::new();
            std::io::Read::read_to_string(&mut e, &mut body).unwrap();
            if name == MANIFEST_NAME {
                // JSON for the runner's fast path, and the YAML it is documented as.
                let j: Manifest = serde_json::from_str(&body).unwrap();
                let m: Manifest = serde_saphyr::from_str(&body).unwrap();
                assert_eq!(j, m);
                assert_eq!(m.entrypoint, "script.py");
                assert_eq!(m.timeout_ms, 60_000);
            } else {
                assert_eq!(body, "print(1)");
            }
            names.push(name);
        }
        assert_eq!(names, [MANIFEST_NAME, "script.py"]);
    }

    /// Regression: concurrent first runs of one event shared a temporary file name and one of
    /// them failed with "No such file or directory".
    #[test]
    fn concurrent_first_builds_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().to_path_buf();
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let base = base.clone();
                // A cache per thread on the same directory: no in-memory index hit.
                std::thread::spawn(move || {
                    PayloadCache::new(base)
                        .get_or_build(&src("print('same')", 7))
                        .map(|r| r.sha256)
                })
            })
            .collect();
        let shas: Vec<String> = threads
            .into_iter()
            .map(|t| t.join().unwrap().unwrap())
            .collect();
        assert!(shas.windows(2).all(|w| w[0] == w[1]));
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(files.len(), 1, "temporary files left: {files:?}");
    }

    #[test]
    fn cache_reuses_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PayloadCache::new(dir.path());
        let (a, built) = cache.get_or_build_timed(&src("print(1)", 1)).unwrap();
        assert!(built.is_some(), "the first call generates the payload");
        let (again, cached) = cache.get_or_build_timed(&src("print(1)", 1)).unwrap();
        assert_eq!(a, again);
        assert_eq!(cached, None, "a cache hit generates nothing");
        let b = cache.get_or_build(&src("print(2)", 2)).unwrap();
        assert_ne!(a.sha256, b.sha256);
        assert!(a.path.exists() && b.path.exists());
        assert_eq!(cache.cleanup(Duration::from_secs(3600)).unwrap(), 0);
        // Age the first file.
        let old = SystemTime::now() - Duration::from_secs(7200);
        std::fs::File::options()
            .append(true)
            .open(&a.path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(cache.stale(Duration::from_secs(3600)).len(), 1);
        assert!(a.path.exists(), "stale() removed something");
        assert_eq!(cache.cleanup(Duration::from_secs(3600)).unwrap(), 1);
        assert!(!a.path.exists() && b.path.exists());
        // Rebuilt on demand after cleanup.
        let c = cache.get_or_build(&src("print(1)", 1)).unwrap();
        assert!(c.path.exists());
    }

    /// Regression: a payload served from the in-memory index was never marked as used, so the
    /// cleanup removed the archive of an event that ran every minute once it was a week old.
    #[test]
    fn a_payload_in_use_is_not_cleaned_up_as_unused() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PayloadCache::new(dir.path());
        let a = cache.get_or_build(&src("print(1)", 1)).unwrap();
        let old = SystemTime::now() - Duration::from_secs(2 * 24 * 3600);
        std::fs::File::options()
            .append(true)
            .open(&a.path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        // Served from the index, as every run after the first is.
        assert_eq!(cache.get_or_build(&src("print(1)", 1)).unwrap(), a);
        assert!(cache.stale(Duration::from_secs(24 * 3600)).is_empty());
        assert_eq!(cache.cleanup(Duration::from_secs(24 * 3600)).unwrap(), 0);
        assert!(a.path.exists());
    }
}
