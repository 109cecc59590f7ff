//! Counters of the executor (atomics, no locks): what an operator graphs and what tests assert
//! (a cache hit is "no upload happened").

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub executions_total: AtomicU64,
    pub executions_succeeded: AtomicU64,
    pub executions_failed: AtomicU64,
    pub executions_timed_out: AtomicU64,
    pub executions_cancelled: AtomicU64,
    pub executions_lost: AtomicU64,
    pub deployments_total: AtomicU64,
    pub deployments_succeeded: AtomicU64,
    pub deployments_failed: AtomicU64,
    pub deployments_cached: AtomicU64,
    pub deployments_verified: AtomicU64,
    pub uploads: AtomicU64,
    pub serve_sessions: AtomicU64,
    pub serve_unavailable: AtomicU64,
    pub fallbacks: AtomicU64,
    pub pool_hits: AtomicU64,
    pub pool_misses: AtomicU64,
    pub execution_ms_sum: AtomicU64,
    pub execution_count: AtomicU64,
    pub deployment_ms_sum: AtomicU64,
    pub deployment_count: AtomicU64,
    pub connection_failures: AtomicU64,
    pub health_checks: AtomicU64,
    pub health_failures: AtomicU64,
}

pub(crate) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn add(c: &AtomicU64, v: u64) {
    c.fetch_add(v, Ordering::Relaxed);
}

/// A copy of the counters at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub executions_total: u64,
    pub executions_succeeded: u64,
    pub executions_failed: u64,
    pub executions_timed_out: u64,
    pub executions_cancelled: u64,
    /// Executions that ended without a result (connection lost, runner vanished).
    pub executions_lost: u64,
    /// Deployment checks (each `runner-ssh` run makes one).
    pub deployments_total: u64,
    /// Checks that ended with a runner uploaded and verified.
    pub deployments_succeeded: u64,
    pub deployments_failed: u64,
    /// Checks satisfied by the cache or by the binary already on the host (no upload).
    pub deployments_cached: u64,
    /// Of those, the checks that verified the binary on the host (checksum and `--version`).
    pub deployments_verified: u64,
    /// Upload attempts (SFTP or exec fallback).
    pub uploads: u64,
    /// `cronium-runner serve` sessions started (one per pooled connection that ran runner-ssh).
    pub serve_sessions: u64,
    /// Runs that found the serve mode unavailable and used an exec channel of their own.
    pub serve_unavailable: u64,
    /// Auto-mode runs that fell back to direct-ssh.
    pub fallbacks: u64,
    pub pool_hits: u64,
    pub pool_misses: u64,
    pub execution_ms_sum: u64,
    pub execution_count: u64,
    pub deployment_ms_sum: u64,
    pub deployment_count: u64,
    /// New connections that could not be opened (unreachable, authentication, host key).
    pub connection_failures: u64,
    /// Health checks made (`SshExecutor::health`), and those that failed.
    pub health_checks: u64,
    pub health_failures: u64,
}

impl Metrics {
    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            executions_total: g(&self.executions_total),
            executions_succeeded: g(&self.executions_succeeded),
            executions_failed: g(&self.executions_failed),
            executions_timed_out: g(&self.executions_timed_out),
            executions_cancelled: g(&self.executions_cancelled),
            executions_lost: g(&self.executions_lost),
            deployments_total: g(&self.deployments_total),
            deployments_succeeded: g(&self.deployments_succeeded),
            deployments_failed: g(&self.deployments_failed),
            deployments_cached: g(&self.deployments_cached),
            deployments_verified: g(&self.deployments_verified),
            uploads: g(&self.uploads),
            serve_sessions: g(&self.serve_sessions),
            serve_unavailable: g(&self.serve_unavailable),
            fallbacks: g(&self.fallbacks),
            pool_hits: g(&self.pool_hits),
            pool_misses: g(&self.pool_misses),
            execution_ms_sum: g(&self.execution_ms_sum),
            execution_count: g(&self.execution_count),
            deployment_ms_sum: g(&self.deployment_ms_sum),
            deployment_count: g(&self.deployment_count),
            connection_failures: g(&self.connection_failures),
            health_checks: g(&self.health_checks),
            health_failures: g(&self.health_failures),
        }
    }
}
