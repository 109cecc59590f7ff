//! Prometheus metrics shared by the server, the scheduler and the agent. Gauges that mirror the
//! store (jobs by status, queue depth) are refreshed from it at scrape time; histograms and
//! counters are updated where things happen.

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabel {
    /// `local`, `container`, `runner-ssh`.
    pub transport: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

/// One SSH server (the per-server health gauges).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabel {
    pub server: String,
}

/// One server in one health status (1 for its current status, absent otherwise).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerStatusLabel {
    pub server: String,
    pub status: String,
}

/// One directory of a server: `work` or `deploy`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerDirLabel {
    pub server: String,
    pub dir: String,
}

/// The runner metrics of the design documents (seed 003's names, under the `cronium_` prefix;
/// counters get the `_total` suffix, durations `_seconds`), and the per-server health gauges,
/// refreshed from the store at scrape time.
pub struct RunnerMetrics {
    /// Deployment checks of runner-ssh runs (uploads, verifications and cache hits).
    pub deployments: Counter,
    pub deployments_failed: Counter,
    /// Deployment checks answered by the deployment cache or a runner already on the host.
    pub artifact_cache_hits: Counter,
    /// Deployment checks the cache could not answer (an upload, successful or not).
    pub artifact_cache_misses: Counter,
    /// New SSH connections that could not be opened.
    pub connection_failures: Counter,
    /// `cronium-runner health` over SSH, in seconds.
    pub health_check_duration: Histogram,
    /// An SSH execution from start to end (deployment included), in seconds.
    pub execution_duration: Histogram,
    /// From a log line leaving the runner to its being stored, in seconds.
    pub streaming_log_latency: Histogram,
    /// Generating a run's payload archive (manifest, tar, gzip, hash, write), in seconds; a
    /// payload the cache already holds generates nothing and is not observed.
    pub payload_generation_duration: Histogram,
    /// Later attempts of a job (a retry, or a recovery after its worker was lost) that continued
    /// the job's log after the lines an earlier attempt had stored, instead of starting over.
    pub partial_log_recovery: Counter,
    pub server_health: Family<ServerStatusLabel, Gauge>,
    pub server_health_failures: Family<ServerLabel, Gauge>,
    pub server_disk_free_bytes: Family<ServerDirLabel, Gauge>,
    pub server_disk_total_bytes: Family<ServerDirLabel, Gauge>,
    pub server_memory_available_bytes: Family<ServerLabel, Gauge>,
    pub server_memory_total_bytes: Family<ServerLabel, Gauge>,
    pub server_load1: Family<ServerLabel, Gauge<f64, AtomicU64>>,
    pub server_cpus: Family<ServerLabel, Gauge>,
}

impl RunnerMetrics {
    fn new() -> Self {
        RunnerMetrics {
            deployments: Counter::default(),
            deployments_failed: Counter::default(),
            artifact_cache_hits: Counter::default(),
            artifact_cache_misses: Counter::default(),
            connection_failures: Counter::default(),
            health_check_duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            execution_duration: Histogram::new(exponential_buckets(0.005, 2.0, 20)),
            streaming_log_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            payload_generation_duration: Histogram::new(exponential_buckets(0.00005, 2.0, 16)),
            partial_log_recovery: Counter::default(),
            server_health: Family::default(),
            server_health_failures: Family::default(),
            server_disk_free_bytes: Family::default(),
            server_disk_total_bytes: Family::default(),
            server_memory_available_bytes: Family::default(),
            server_memory_total_bytes: Family::default(),
            server_load1: Family::default(),
            server_cpus: Family::default(),
        }
    }

    fn register(&self, r: &mut Registry) {
        r.register(
            "runner_deployments",
            "Runner deployment checks of runner-ssh runs",
            self.deployments.clone(),
        );
        r.register(
            "runner_deployments_failed",
            "Runner deployments that failed",
            self.deployments_failed.clone(),
        );
        r.register(
            "runner_artifact_cache_hits",
            "Deployment checks satisfied without an upload",
            self.artifact_cache_hits.clone(),
        );
        r.register(
            "runner_artifact_cache_misses",
            "Deployment checks that uploaded the runner",
            self.artifact_cache_misses.clone(),
        );
        r.register(
            "ssh_runner_connection_failures",
            "SSH connections that could not be opened",
            self.connection_failures.clone(),
        );
        r.register(
            "runner_health_check_duration_seconds",
            "cronium-runner health over SSH",
            self.health_check_duration.clone(),
        );
        r.register(
            "ssh_runner_execution_duration_seconds",
            "SSH executions from start to end, deployment included",
            self.execution_duration.clone(),
        );
        r.register(
            "streaming_log_latency_seconds",
            "From a log line leaving the runner to its being stored",
            self.streaming_log_latency.clone(),
        );
        r.register(
            "runner_payload_generation_duration_seconds",
            "Generating a run's payload archive (cache misses only)",
            self.payload_generation_duration.clone(),
        );
        r.register(
            "partial_log_recovery_count",
            "Later attempts that continued a job's log after an earlier attempt's lines",
            self.partial_log_recovery.clone(),
        );
        r.register(
            "server_health",
            "1 for each SSH server's current health status",
            self.server_health.clone(),
        );
        r.register(
            "server_health_failures",
            "Health checks of the server failed in a row",
            self.server_health_failures.clone(),
        );
        r.register(
            "server_disk_free_bytes",
            "Free space of the server's work and deploy directories (latest reading)",
            self.server_disk_free_bytes.clone(),
        );
        r.register(
            "server_disk_total_bytes",
            "Size of the file systems of the server's work and deploy directories",
            self.server_disk_total_bytes.clone(),
        );
        r.register(
            "server_memory_available_bytes",
            "Memory available on the server (latest reading)",
            self.server_memory_available_bytes.clone(),
        );
        r.register(
            "server_memory_total_bytes",
            "Memory of the server",
            self.server_memory_total_bytes.clone(),
        );
        r.register(
            "server_load1",
            "One-minute load average of the server (latest reading)",
            self.server_load1.clone(),
        );
        r.register(
            "server_cpus",
            "CPUs of the server",
            self.server_cpus.clone(),
        );
    }
}

/// Brings counter `c` up to `value` (a counter kept elsewhere, mirrored at scrape time).
pub fn mirror(c: &Counter, value: u64) {
    let cur = c.get();
    if value > cur {
        c.inc_by(value - cur);
    }
}

pub struct Metrics {
    registry: Mutex<Registry>,
    /// Jobs per status, from the store at scrape time.
    pub jobs: Family<StatusLabel, Gauge>,
    /// Queued jobs whose time has come.
    pub queue_depth: Gauge,
    /// Delay between a scheduled instant and the job being enqueued, in seconds.
    pub scheduler_lag: Histogram,
    /// Run time of finished executions, in seconds.
    pub run_duration: Histogram,
    /// Finished executions by final status.
    pub executions: Family<StatusLabel, Counter>,
    /// CPU time (user + system) of each measured execution's process tree, in seconds.
    pub execution_cpu: Family<TransportLabel, Histogram>,
    /// Peak resident set of the largest process of each measured execution, in bytes.
    pub execution_peak_memory: Family<TransportLabel, Histogram>,
    /// CPU time of a container run's whole cgroup, in seconds.
    pub container_cpu: Histogram,
    /// Peak memory of a container run's whole cgroup, in bytes.
    pub container_peak_memory: Histogram,
    /// Ticks fired / skipped by the scheduler.
    pub ticks: Family<KindLabel, Counter>,
    /// Counters kept elsewhere (a transport's atomics), mirrored at scrape time.
    pub transport: Family<KindLabel, Counter>,
    /// 1 while this server's scheduler holds the leadership lease, else 0.
    pub scheduler_leader: Gauge,
    /// Events whose stored spec no longer parses (they do not fire), from the store at scrape
    /// time.
    pub events_broken: Gauge,
    /// Seed 003's runner metrics and the per-server health gauges.
    pub runner: RunnerMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let m = Metrics {
            registry: Mutex::new(Registry::with_prefix("cronium")),
            jobs: Family::default(),
            queue_depth: Gauge::default(),
            scheduler_lag: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            run_duration: Histogram::new(exponential_buckets(0.005, 2.0, 20)),
            executions: Family::default(),
            execution_cpu: Family::new_with_constructor(cpu_histogram),
            execution_peak_memory: Family::new_with_constructor(memory_histogram),
            container_cpu: cpu_histogram(),
            container_peak_memory: memory_histogram(),
            ticks: Family::default(),
            transport: Family::default(),
            scheduler_leader: Gauge::default(),
            events_broken: Gauge::default(),
            runner: RunnerMetrics::new(),
        };
        if let Ok(mut r) = m.registry.lock() {
            r.register("jobs", "Jobs by status", m.jobs.clone());
            r.register(
                "queue_depth",
                "Queued jobs that are due",
                m.queue_depth.clone(),
            );
            r.register(
                "scheduler_lag_seconds",
                "Delay from a scheduled instant to its job being enqueued",
                m.scheduler_lag.clone(),
            );
            r.register(
                "run_duration_seconds",
                "Run time of finished executions",
                m.run_duration.clone(),
            );
            r.register(
                "executions",
                "Finished executions by status",
                m.executions.clone(),
            );
            r.register(
                "execution_cpu_seconds",
                "CPU time (user + system) of an execution's process tree, by transport",
                m.execution_cpu.clone(),
            );
            r.register(
                "execution_peak_memory_bytes",
                "Peak resident set of the largest process of an execution, by transport",
                m.execution_peak_memory.clone(),
            );
            r.register(
                "execution_container_cpu_seconds",
                "CPU time of a container execution's whole cgroup",
                m.container_cpu.clone(),
            );
            r.register(
                "execution_container_peak_memory_bytes",
                "Peak memory of a container execution's whole cgroup",
                m.container_peak_memory.clone(),
            );
            r.register(
                "scheduler_ticks",
                "Scheduler ticks by outcome",
                m.ticks.clone(),
            );
            r.register(
                "transport",
                "Transport counters: SSH executions, deployments, pool hits and misses, durations (ms)",
                m.transport.clone(),
            );
            r.register(
                "scheduler_leader",
                "1 while this server's scheduler holds the leadership lease",
                m.scheduler_leader.clone(),
            );
            r.register(
                "events_broken",
                "Events whose stored spec no longer parses; they do not fire",
                m.events_broken.clone(),
            );
            m.runner.register(&mut r);
        }
        m
    }

    /// Registers more metrics (e.g. a transport's) under the `cronium_` prefix.
    pub fn with_registry(&self, f: impl FnOnce(&mut Registry)) {
        if let Ok(mut r) = self.registry.lock() {
            f(&mut r);
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Ok(r) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        }
        out
    }

    /// Brings the mirrored counter `kind` up to `value` (counters only grow).
    pub fn set_counter(&self, kind: &str, value: u64) {
        let c = self.transport.get_or_create(&KindLabel {
            kind: kind.to_string(),
        });
        let cur = c.get();
        if value > cur {
            c.inc_by(value - cur);
        }
    }

    /// Observes what one execution used (`transport`: `local`, `container`, `runner-ssh`).
    pub fn execution_usage(&self, transport: &str, usage: &cronium_protocol::Usage) {
        let label = TransportLabel {
            transport: transport.to_string(),
        };
        let cpu_ms = usage.cpu_user_ms.saturating_add(usage.cpu_system_ms);
        self.execution_cpu
            .get_or_create(&label)
            .observe(cpu_ms as f64 / 1000.0);
        self.execution_peak_memory
            .get_or_create(&label)
            .observe(usage.max_rss_bytes as f64);
        if let Some(ms) = usage.cgroup_cpu_ms {
            self.container_cpu.observe(ms as f64 / 1000.0);
        }
        if let Some(bytes) = usage.cgroup_memory_peak_bytes {
            self.container_peak_memory.observe(bytes as f64);
        }
    }

    pub fn execution_finished(&self, status: &str, run_ms: u64) {
        self.executions
            .get_or_create(&StatusLabel {
                status: status.to_string(),
            })
            .inc();
        self.run_duration.observe(run_ms as f64 / 1000.0);
    }
}

/// 1 ms to about 9 h, doubling.
fn cpu_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 25))
}

/// 1 MiB to 64 GiB, doubling.
fn memory_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1_048_576.0, 2.0, 17))
}
