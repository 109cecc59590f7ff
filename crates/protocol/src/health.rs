//! What `cronium-runner health` prints: one JSON object describing the host it runs on, read by
//! the server after runs and on its health interval. Data only; the runner fills it from
//! `/proc` and `statvfs`, the server judges it (`cronium_core::health`).

use serde::{Deserialize, Serialize};

/// One health reading of a host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// The runner's version (`X.Y.Z`).
    pub runner_version: String,
    /// Load averages over 1, 5 and 15 minutes (`/proc/loadavg`).
    pub load: [f64; 3],
    /// CPUs online.
    pub cpus: u32,
    /// `MemTotal` in bytes.
    pub memory_total_bytes: u64,
    /// `MemAvailable` in bytes (what can be had without swapping).
    pub memory_available_bytes: u64,
    /// Seconds since boot.
    pub uptime_s: u64,
    /// The file system of the runs' work directory.
    pub work_dir: Disk,
    /// The file system of the directory the runner is deployed in.
    pub deploy_dir: Disk,
}

/// Space on the file system holding `path`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    pub path: String,
    pub total_bytes: u64,
    /// Free to an unprivileged user (`f_bavail`), which is what a run can write.
    pub free_bytes: u64,
}

impl Disk {
    /// Free space as a percentage of the total (100 for an empty or sizeless file system).
    pub fn free_percent(&self) -> f64 {
        if self.total_bytes == 0 {
            return 100.0;
        }
        self.free_bytes as f64 * 100.0 / self.total_bytes as f64
    }
}

impl Health {
    /// Available memory as a percentage of the total (100 when the total is unknown).
    pub fn memory_available_percent(&self) -> f64 {
        if self.memory_total_bytes == 0 {
            return 100.0;
        }
        self.memory_available_bytes as f64 * 100.0 / self.memory_total_bytes as f64
    }
}
