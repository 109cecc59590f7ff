//! `cronium-runner health`: one JSON object on stdout describing the host (load, CPUs, memory,
//! uptime, the free space of the work and deploy directories, the runner's version), so that the
//! server learns a host's state over the connection it already has, with nothing installed but
//! the runner. Reads `/proc` and `statvfs` only; judging the numbers is the server's business.

use std::ffi::CString;
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use cronium_protocol::{Disk, Health};

/// Exit code when a reading cannot be taken (a directory that does not exist, no `/proc`).
pub const EXIT_HEALTH_FAILED: i32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: &'static str,
        source: std::io::Error,
    },
    #[error("{path}: unexpected contents: {what}")]
    Parse { path: &'static str, what: String },
    #[error("{flag} {path}: {source}")]
    Statvfs {
        flag: &'static str,
        path: String,
        source: std::io::Error,
    },
}

/// Prints the reading (exit 0) or the reason it could not be taken on stderr (exit 1).
pub fn main(work_dir: Option<PathBuf>, deploy_dir: Option<PathBuf>) -> i32 {
    let work_dir = work_dir.unwrap_or_else(crate::run::default_work_base);
    let deploy_dir = deploy_dir.unwrap_or_else(default_deploy_dir);
    match read(&work_dir, &deploy_dir) {
        Ok(h) => {
            let line = serde_json::to_string(&h).unwrap_or_default();
            let mut out = std::io::stdout().lock();
            if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                return EXIT_HEALTH_FAILED;
            }
            0
        }
        Err(e) => {
            diag!("cronium-runner health: {e}");
            EXIT_HEALTH_FAILED
        }
    }
}

/// The directory this binary is in: where the server deployed it.
fn default_deploy_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."))
}

pub fn read(work_dir: &Path, deploy_dir: &Path) -> Result<Health, HealthError> {
    let loadavg = read_proc("/proc/loadavg")?;
    let meminfo = read_proc("/proc/meminfo")?;
    let uptime = read_proc("/proc/uptime")?;
    let (memory_total_bytes, memory_available_bytes) = parse_meminfo(&meminfo)?;
    Ok(Health {
        runner_version: crate::VERSION.to_string(),
        load: parse_loadavg(&loadavg)?,
        cpus: cpus(),
        memory_total_bytes,
        memory_available_bytes,
        uptime_s: parse_uptime(&uptime)?,
        work_dir: disk("--work-dir", work_dir)?,
        deploy_dir: disk("--deploy-dir", deploy_dir)?,
    })
}

fn read_proc(path: &'static str) -> Result<String, HealthError> {
    std::fs::read_to_string(path).map_err(|source| HealthError::Read { path, source })
}

fn parse_loadavg(text: &str) -> Result<[f64; 3], HealthError> {
    let bad = || HealthError::Parse {
        path: "/proc/loadavg",
        what: text.trim().chars().take(80).collect(),
    };
    let mut it = text.split_whitespace().map(str::parse::<f64>);
    let mut next = || it.next().and_then(Result::ok).ok_or_else(bad);
    Ok([next()?, next()?, next()?])
}

/// `MemTotal` and `MemAvailable`, in bytes.
fn parse_meminfo(text: &str) -> Result<(u64, u64), HealthError> {
    let field = |name: &str| -> Result<u64, HealthError> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .ok_or_else(|| HealthError::Parse {
                path: "/proc/meminfo",
                what: format!("no {name} line"),
            })
    };
    Ok((field("MemTotal")?, field("MemAvailable")?))
}

fn parse_uptime(text: &str) -> Result<u64, HealthError> {
    text.split_whitespace()
        .next()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| s as u64)
        .ok_or_else(|| HealthError::Parse {
            path: "/proc/uptime",
            what: text.trim().chars().take(80).collect(),
        })
}

fn cpus() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    u32::try_from(n).unwrap_or(1).max(1)
}

fn disk(flag: &'static str, path: &Path) -> Result<Disk, HealthError> {
    let err = |source| HealthError::Statvfs {
        flag,
        path: path.display().to_string(),
        source,
    };
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| err(std::io::Error::other("path contains a NUL byte")))?;
    // SAFETY: `c` is a valid NUL-terminated string and `st` a writable statvfs.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    let frsize = st.f_frsize as u64;
    Ok(Disk {
        path: path.display().to_string(),
        total_bytes: (st.f_blocks as u64).saturating_mul(frsize),
        free_bytes: (st.f_bavail as u64).saturating_mul(frsize),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        assert_eq!(
            parse_loadavg("0.52 1.25 2.00 3/512 1234\n").unwrap(),
            [0.52, 1.25, 2.0]
        );
        assert!(parse_loadavg("0.52 x").is_err());
        let mem = "MemTotal:       16384 kB\nMemFree:  10 kB\nMemAvailable:    8192 kB\n";
        assert_eq!(parse_meminfo(mem).unwrap(), (16384 * 1024, 8192 * 1024));
        let err = parse_meminfo("MemTotal: 5 kB\n").unwrap_err().to_string();
        assert!(err.contains("no MemAvailable line"), "{err}");
        assert_eq!(parse_uptime("12345.67 999.0\n").unwrap(), 12345);
        assert!(parse_uptime("-1 0").is_err());
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_its_flag() {
        let err = disk("--deploy-dir", Path::new("/nonexistent/cronium"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("--deploy-dir /nonexistent/cronium: "),
            "{err}"
        );
    }
}
