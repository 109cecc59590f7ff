//! What a run used: the CPU time and peak memory of the script's process tree, and in a
//! container its cgroup's figures, read once every process of the script has been reaped.
//!
//! `getrusage(RUSAGE_CHILDREN)` covers every child the runner waited for and, through them, every
//! descendant those children waited for. The runner is a child subreaper (`process`), so the
//! orphans a script leaves behind are re-parented to it and reaped by it, and are counted too.
//! The runner starts no other child than the script, so the figures are the script's alone.
//! `ru_maxrss` is the peak resident set of the largest single process, not of the tree summed:
//! the kernel keeps no tree-wide peak outside a cgroup.
//!
//! Not for limits (the container's engine and the kernel enforce them) nor for health figures of
//! the host.

use std::fs;
use std::path::{Path, PathBuf};

use cronium_protocol::Usage;

/// The resources of every reaped descendant of the runner, so far.
pub fn children() -> Usage {
    // SAFETY: getrusage only writes into `ru`.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    if rc != 0 {
        return Usage::default();
    }
    Usage {
        cpu_user_ms: timeval_ms(ru.ru_utime),
        cpu_system_ms: timeval_ms(ru.ru_stime),
        // Linux reports ru_maxrss in KiB.
        max_rss_bytes: (ru.ru_maxrss.max(0) as u64).saturating_mul(1024),
        cgroup_cpu_ms: None,
        cgroup_memory_peak_bytes: None,
    }
}

fn timeval_ms(t: libc::timeval) -> u64 {
    (t.tv_sec.max(0) as u64)
        .saturating_mul(1000)
        .saturating_add(t.tv_usec.max(0) as u64 / 1000)
}

/// The figures of the cgroup the runner is in, as a container sees its own.
#[derive(Debug, Default, PartialEq)]
pub struct CgroupUsage {
    pub cpu_ms: Option<u64>,
    pub memory_peak_bytes: Option<u64>,
    /// Which figure could not be read, and why, for the run's log.
    pub missing: Vec<String>,
}

/// Reads the runner's own cgroup under `root` (`/sys/fs/cgroup`): cgroup v2 (`memory.peak`,
/// `cpu.stat`'s `usage_usec`) at the root of a private cgroup namespace or at the path
/// `/proc/self/cgroup` names, else cgroup v1 (`memory/memory.max_usage_in_bytes`,
/// `cpuacct/cpuacct.usage`), whose per-controller directories the engine mounts as the
/// container's own. A figure the kernel does not offer stays `None`, with the reason in
/// `missing`: `memory.peak` exists from Linux 5.19.
pub fn cgroup(root: &Path, self_cgroup: &str) -> CgroupUsage {
    let mut out = CgroupUsage::default();
    let v2_dirs = v2_dirs(root, self_cgroup);
    let v2 = v2_dirs
        .iter()
        .find(|d| d.join("cgroup.controllers").is_file());
    if let Some(dir) = v2 {
        out.cpu_ms = read_cpu_stat(&dir.join("cpu.stat"));
        out.memory_peak_bytes = read_u64(&dir.join("memory.peak"));
        if out.cpu_ms.is_none() {
            out.missing
                .push(format!("{}: no usage_usec", dir.join("cpu.stat").display()));
        }
        if out.memory_peak_bytes.is_none() {
            out.missing.push(format!(
                "{} is absent (cgroup v2 has it from Linux 5.19)",
                dir.join("memory.peak").display()
            ));
        }
        return out;
    }
    let memory = root.join("memory/memory.max_usage_in_bytes");
    let cpu = root.join("cpuacct/cpuacct.usage");
    out.memory_peak_bytes = read_u64(&memory);
    // cpuacct.usage is in nanoseconds.
    out.cpu_ms = read_u64(&cpu).map(|ns| ns / 1_000_000);
    if out.memory_peak_bytes.is_none() {
        out.missing.push(format!(
            "neither cgroup v2 memory.peak nor {} can be read",
            memory.display()
        ));
    }
    if out.cpu_ms.is_none() {
        out.missing.push(format!(
            "neither cgroup v2 cpu.stat nor {} can be read",
            cpu.display()
        ));
    }
    out
}

/// The cgroup v2 directories that may be ours: the root (a private cgroup namespace shows the
/// container's cgroup there), then the path of the `0::` line of `/proc/self/cgroup`.
fn v2_dirs(root: &Path, self_cgroup: &str) -> Vec<PathBuf> {
    let mut dirs = vec![root.to_path_buf()];
    if let Some(path) = self_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim().trim_start_matches('/'))
        .filter(|p| !p.is_empty())
    {
        dirs.push(root.join(path));
    }
    // The root of the host's hierarchy has no memory.peak; a deeper directory comes first.
    dirs.reverse();
    dirs
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn read_cpu_stat(path: &Path) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|us| us / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_v2_figures_are_read_from_our_own_directory() {
        let root = tempfile::tempdir().unwrap();
        let own = root.path().join("docker/abc");
        fs::create_dir_all(&own).unwrap();
        fs::write(own.join("cgroup.controllers"), "cpu memory\n").unwrap();
        fs::write(own.join("memory.peak"), "52428800\n").unwrap();
        fs::write(
            own.join("cpu.stat"),
            "usage_usec 250000\nuser_usec 200000\nsystem_usec 50000\n",
        )
        .unwrap();
        let u = cgroup(root.path(), "0::/docker/abc\n");
        assert_eq!(u.memory_peak_bytes, Some(52_428_800));
        assert_eq!(u.cpu_ms, Some(250));
        assert!(u.missing.is_empty(), "{:?}", u.missing);
    }

    #[test]
    fn cgroup_v2_without_memory_peak_says_so() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("cgroup.controllers"), "cpu memory\n").unwrap();
        fs::write(root.path().join("cpu.stat"), "usage_usec 1000\n").unwrap();
        let u = cgroup(root.path(), "0::/\n");
        assert_eq!(u.cpu_ms, Some(1));
        assert_eq!(u.memory_peak_bytes, None);
        assert!(u.missing[0].contains("memory.peak"), "{:?}", u.missing);
    }

    #[test]
    fn cgroup_v1_figures_are_read_per_controller() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("memory")).unwrap();
        fs::create_dir_all(root.path().join("cpuacct")).unwrap();
        fs::write(
            root.path().join("memory/memory.max_usage_in_bytes"),
            "1048576\n",
        )
        .unwrap();
        fs::write(root.path().join("cpuacct/cpuacct.usage"), "3000000000\n").unwrap();
        let u = cgroup(root.path(), "12:memory:/docker/abc\n");
        assert_eq!(u.memory_peak_bytes, Some(1_048_576));
        assert_eq!(u.cpu_ms, Some(3000));
        assert!(u.missing.is_empty());
    }

    #[test]
    fn no_cgroup_at_all_names_what_is_missing() {
        let root = tempfile::tempdir().unwrap();
        let u = cgroup(root.path(), "");
        assert_eq!((u.cpu_ms, u.memory_peak_bytes), (None, None));
        assert_eq!(u.missing.len(), 2);
        assert!(u.missing[0].contains("memory.max_usage_in_bytes"));
    }
}
