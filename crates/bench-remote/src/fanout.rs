//! The SSH fan-out benchmark (PRODUCT.md quality bar): a trivial command on 1, 10 and 50 (up to
//! 200) local sshd hosts through Cronium (runner-ssh: warm, cold, cold with the first deployment;
//! direct-ssh: warm, cold), then parallel-ssh (warm, cold) and Ansible on the same hosts in the
//! same run; and the cost of health collection (interval checks on pooled connections).
//!
//! Not a load test: one job at a time, each timed from the POST to the job being final.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cronium_client::Method;
use serde_json::json;

use crate::cronium::{CroniumError, Sample, Server, ServerSpec};
use crate::hosts::{Fleet, HostsError, USER};
use crate::peers::{self, PeersError, Venv};
use crate::stats::{busy_cpu_ms, fmt, fmt_opt, median, median_ms};

#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    #[error(transparent)]
    Hosts(#[from] HostsError),
    #[error(transparent)]
    Cronium(#[from] CroniumError),
    #[error(transparent)]
    Peers(#[from] PeersError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("--servers: {0}")]
    Servers(String),
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct FanoutOpts {
    pub servers: Vec<usize>,
    /// Warm samples per mode (after one unmeasured warm-up run).
    pub warm: usize,
    /// Cold samples per mode (one server restart each).
    pub cold: usize,
    /// Ansible runs.
    pub ansible: usize,
    pub venv: PathBuf,
    /// `serve --fanout-concurrency`; `None` measures the server's default.
    pub concurrency: Option<usize>,
    /// Seconds of interval health checks measured per fleet size (0: not measured).
    pub health_secs: u64,
}

/// The `--health-interval` of the health measurement.
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(2);

/// The cost of collecting `cronium-runner health` (interval checks on pooled connections, no
/// runs meanwhile).
#[derive(Debug, Default, Clone)]
pub struct HealthCost {
    /// Checks that ran during the window (`cronium_runner_health_check_duration_seconds_count`).
    pub checks: u64,
    /// Interval passes in the window.
    pub intervals: f64,
    /// The stored duration of each check in the window (ms, as the server records it).
    pub durations_ms: Vec<i64>,
    /// CPU of the hosts' side (sshd sessions, shells, runners) per check, ms.
    pub hosts_cpu_per_check: Option<f64>,
    /// CPU of the Cronium server process per check, ms.
    pub client_cpu_per_check: Option<f64>,
}

/// Parses `--servers 1,10,50`: positive counts, at most 200 (the sshd MaxStartups budget).
pub fn parse_servers(s: &str) -> Result<Vec<usize>, FanoutError> {
    let mut out = vec![];
    for part in s.split(',') {
        let part = part.trim();
        let n: usize = part
            .parse()
            .map_err(|_| FanoutError::Servers(format!("`{part}` is not a number of servers")))?;
        if n == 0 || n > 200 {
            return Err(FanoutError::Servers(format!(
                "{n} servers: must be between 1 and 200"
            )));
        }
        out.push(n);
    }
    Ok(out)
}

/// Figures for one fleet size.
#[derive(Debug, Default)]
pub struct FanoutResult {
    pub n: usize,
    pub rs_deploy: Vec<Sample>,
    pub rs_cold: Vec<Sample>,
    pub rs_warm: Vec<Sample>,
    pub ds_cold: Vec<Sample>,
    pub ds_warm: Vec<Sample>,
    pub pssh_cold: Vec<Duration>,
    pub pssh_warm: Vec<Duration>,
    pub ansible: Vec<Duration>,
    /// Machine-wide CPU per warm run (ms): runner-ssh, direct-ssh, parallel-ssh.
    pub cpu_rs_warm: Option<f64>,
    pub cpu_ds_warm: Option<f64>,
    pub cpu_pssh_warm: Option<f64>,
    /// Client-side process CPU per warm run (ms): the Cronium server, the parallel-ssh client.
    pub client_rs_warm: Option<f64>,
    pub client_ds_warm: Option<f64>,
    pub client_pssh_warm: Option<f64>,
    /// CPU per cold fan-out (medians over the cold samples): runner-ssh, direct-ssh.
    pub cold_cpu_rs: ColdCpu,
    pub cold_cpu_ds: ColdCpu,
    /// Health checks that ran during the warm loops (after-run checks), per warm run.
    pub health_rs_warm: Option<f64>,
    pub health_ds_warm: Option<f64>,
    pub health: Option<HealthCost>,
}

/// CPU of a cold fan-out (ms).
#[derive(Debug, Default, Clone, Copy)]
pub struct ColdCpu {
    /// All cores during the timed run (wall-clock bounded, unlike the other two).
    pub machine: Option<f64>,
    /// The hosts' side: every sshd, shell, runner and script of the fan-out.
    pub hosts: Option<f64>,
    /// The Cronium server process.
    pub client: Option<f64>,
}

impl ColdCpu {
    /// Each figure's median over `samples` ([`crate::stats::median`]).
    fn median(samples: &[ColdCpu]) -> ColdCpu {
        let of = |f: fn(&ColdCpu) -> Option<f64>| {
            let ds: Vec<Duration> = samples
                .iter()
                .filter_map(f)
                .map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0))
                .collect();
            median(&ds).map(|d| d.as_secs_f64() * 1000.0)
        };
        ColdCpu {
            machine: of(|c| c.machine),
            hosts: of(|c| c.hosts),
            client: of(|c| c.client),
        }
    }
}

/// CPU per run over a loop, from two [`busy_cpu_ms`] readings.
fn per_run(before: Option<f64>, after: Option<f64>, runs: usize) -> Option<f64> {
    Some((after? - before?) / runs.max(1) as f64)
}

/// One line of the main table: tool, warm, cold and cold-with-deploy samples.
type Row = (&'static str, Vec<Duration>, Vec<Duration>, Vec<Duration>);

fn walls(s: &[Sample]) -> Vec<Duration> {
    s.iter().map(|x| x.wall).collect()
}

/// Removes a deploy directory from the login's home when dropped (also on error).
struct DeployCleanup(PathBuf);

impl Drop for DeployCleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn home_of(user: &str) -> PathBuf {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.first() == Some(&user)).then(|| f.get(5).map(PathBuf::from))?
            })
        })
        .unwrap_or_else(|| Path::new("/home").join(user))
}

/// Runs the whole fan-out benchmark on one fleet of `max(servers)` hosts.
pub async fn run(
    workspace: &Path,
    bins: &ServerSpec,
    opts: &FanoutOpts,
) -> Result<(Vec<FanoutResult>, String), FanoutError> {
    let max = opts.servers.iter().copied().max().unwrap_or(1);
    eprintln!("starting {max} sshd hosts");
    let fleet = Fleet::start(workspace, max)?;
    let venv = Venv::ensure(&opts.venv)?;
    let versions = venv.versions();
    let work = tempfile::Builder::new()
        .prefix("cronium-bench-remote-")
        .tempdir()
        .map_err(|source| FanoutError::Io {
            what: "create a work directory".into(),
            source,
        })?;
    let mut results = vec![];
    for &n in &opts.servers {
        results.push(one_size(&fleet, bins, opts, &venv, work.path(), n).await?);
    }
    Ok((results, versions))
}

async fn one_size(
    fleet: &Fleet,
    bins: &ServerSpec,
    opts: &FanoutOpts,
    venv: &Venv,
    work: &Path,
    n: usize,
) -> Result<FanoutResult, FanoutError> {
    let ports: Vec<u16> = fleet.ports().into_iter().take(n).collect();
    let mut r = FanoutResult {
        n,
        ..Default::default()
    };
    // A deploy directory no earlier run used: the first job must deploy the runner.
    let deploy_dir = format!(".cache/cronium-bench-{}-n{n}", std::process::id());
    let _cleanup = DeployCleanup(home_of(USER).join(&deploy_dir));
    let spec = ServerSpec {
        data_dir: work.join(format!("data-n{n}")),
        deploy_dir,
        fanout_concurrency: opts.concurrency,
        ..bins.clone()
    };

    eprintln!("[{n} servers] cronium: register, cold run with deployment");
    let mut server = Server::start(&spec)?;
    for (i, port) in ports.iter().enumerate() {
        server
            .add_server(
                &format!("bench-{i}"),
                *port,
                USER,
                &fleet.key.pem,
                &["bench".to_string()],
            )
            .await?;
    }
    for (name, mode) in [("fan-rs", "runner-ssh"), ("fan-ds", "direct-ssh")] {
        server
            .put_event(&json!({
                "name": name, "type": "bash", "script": "true",
                "target": {"tags": ["bench"], "mode": mode},
            }))
            .await?;
    }
    r.rs_deploy.push(server.run_timed("fan-rs", n).await?);
    eprintln!("[{n} servers] cronium runner-ssh warm");
    server.run_timed("fan-rs", n).await?;
    let (cpu, client) = (busy_cpu_ms(), server.cpu_ms());
    let checks = server.metric(HEALTH_CHECKS).await?;
    for _ in 0..opts.warm {
        r.rs_warm.push(server.run_timed("fan-rs", n).await?);
    }
    r.cpu_rs_warm = per_run(cpu, busy_cpu_ms(), opts.warm);
    r.client_rs_warm = per_run(client, server.cpu_ms(), opts.warm);
    r.health_rs_warm = per_run(checks, server.metric(HEALTH_CHECKS).await?, opts.warm);
    eprintln!("[{n} servers] cronium cold (server restarts)");
    let (mut rs_cpu, mut ds_cpu) = (vec![], vec![]);
    for _ in 0..opts.cold {
        for (event, samples, cpus) in [
            ("fan-rs", &mut r.rs_cold, &mut rs_cpu),
            ("fan-ds", &mut r.ds_cold, &mut ds_cpu),
        ] {
            server.stop();
            fleet.wait_idle(n, Duration::from_secs(5));
            server = Server::start(&spec)?;
            let (hosts, client, machine) = (fleet.cpu_ms(n), server.cpu_ms(), busy_cpu_ms());
            samples.push(server.run_timed(event, n).await?);
            let machine = per_run(machine, busy_cpu_ms(), 1);
            let client = per_run(client, server.cpu_ms(), 1);
            // The connections close with the server; their sshd processes are reaped then.
            server.stop();
            fleet.wait_idle(n, Duration::from_secs(5));
            cpus.push(ColdCpu {
                machine,
                hosts: per_run(hosts, fleet.cpu_ms(n), 1),
                client,
            });
        }
    }
    r.cold_cpu_rs = ColdCpu::median(&rs_cpu);
    r.cold_cpu_ds = ColdCpu::median(&ds_cpu);
    server = Server::start(&spec)?;
    eprintln!("[{n} servers] cronium direct-ssh warm");
    server.run_timed("fan-ds", n).await?;
    let (cpu, client) = (busy_cpu_ms(), server.cpu_ms());
    let checks = server.metric(HEALTH_CHECKS).await?;
    for _ in 0..opts.warm {
        r.ds_warm.push(server.run_timed("fan-ds", n).await?);
    }
    r.cpu_ds_warm = per_run(cpu, busy_cpu_ms(), opts.warm);
    r.client_ds_warm = per_run(client, server.cpu_ms(), opts.warm);
    r.health_ds_warm = per_run(checks, server.metric(HEALTH_CHECKS).await?, opts.warm);
    server.stop();
    if opts.health_secs > 0 {
        eprintln!("[{n} servers] cronium health collection cost");
        fleet.wait_idle(n, Duration::from_secs(5));
        r.health = Some(health_cost(fleet, &spec, n, opts.health_secs).await?);
    }

    eprintln!("[{n} servers] parallel-ssh");
    let key = fleet.key.path.clone();
    let pssh = {
        let (ports, key, cold, warm) = (ports.clone(), key.clone(), opts.cold, opts.warm);
        let venv_dir = venv.dir.clone();
        tokio::task::spawn_blocking(move || {
            peers::parallel_ssh(&Venv { dir: venv_dir }, &ports, USER, &key, cold, warm)
        })
        .await
        .map_err(|e| FanoutError::Io {
            what: "parallel-ssh task".into(),
            source: std::io::Error::other(e.to_string()),
        })??
    };
    r.pssh_cold = pssh
        .cold
        .iter()
        .map(|s| Duration::from_secs_f64(*s))
        .collect();
    r.pssh_warm = pssh
        .warm
        .iter()
        .map(|s| Duration::from_secs_f64(*s))
        .collect();
    r.cpu_pssh_warm = pssh.warm_cpu_ms;
    r.client_pssh_warm = pssh.warm_client_cpu_ms;

    eprintln!("[{n} servers] ansible");
    for _ in 0..opts.ansible {
        r.ansible
            .push(peers::ansible_once(venv, &ports, USER, &key, work)?);
    }
    Ok(r)
}

/// Checks that produced an answer from the host (interval and after-run checks).
const HEALTH_CHECKS: &str = "cronium_runner_health_check_duration_seconds_count";

/// Interval health checks on pooled connections with nothing else running: a server with
/// `--health-interval 2s` runs the runner-ssh event once (which opens and pools a connection per
/// host and is followed by after-run checks), waits for those, then counts the checks, the
/// hosts' CPU (open sessions included) and its own CPU over `secs` seconds without runs.
async fn health_cost(
    fleet: &Fleet,
    spec: &ServerSpec,
    n: usize,
    secs: u64,
) -> Result<HealthCost, FanoutError> {
    let spec = ServerSpec {
        extra_args: vec![
            "--health-interval".into(),
            format!("{}s", HEALTH_INTERVAL.as_secs()),
        ],
        ..spec.clone()
    };
    let server = Server::start(&spec)?;
    server.run_timed("fan-rs", n).await?;
    // The after-run checks of that run, and the first interval pass, are over by then.
    tokio::time::sleep(HEALTH_INTERVAL + Duration::from_millis(500)).await;
    let t0 = chrono::Utc::now();
    let (hosts0, client0) = (fleet.tree_cpu_ms(n), server.cpu_ms());
    let checks0 = server.metric(HEALTH_CHECKS).await?;
    let window = Duration::from_secs(secs);
    tokio::time::sleep(window).await;
    let (hosts1, client1) = (fleet.tree_cpu_ms(n), server.cpu_ms());
    let checks1 = server.metric(HEALTH_CHECKS).await?;
    let t1 = chrono::Utc::now();
    let checks = match (checks0, checks1) {
        (Some(a), Some(b)) => (b - a).max(0.0) as u64,
        _ => 0,
    };
    let mut durations_ms = Vec::new();
    for i in 0..n {
        let s = server
            .api(Method::GET, &format!("/api/v1/servers/bench-{i}"), None)
            .await?;
        for c in s["health"]["history"].as_array().into_iter().flatten() {
            let at = c["at"]
                .as_str()
                .and_then(|a| chrono::DateTime::parse_from_rfc3339(a).ok());
            if at.is_some_and(|a| a >= t0 && a <= t1) && c["ok"] == true {
                if let Some(d) = c["duration_ms"].as_i64() {
                    durations_ms.push(d);
                }
            }
        }
    }
    let per_check = |a: Option<f64>, b: Option<f64>| {
        (checks > 0)
            .then(|| Some((b? - a?) / checks as f64))
            .flatten()
    };
    Ok(HealthCost {
        checks,
        intervals: window.as_secs_f64() / HEALTH_INTERVAL.as_secs_f64(),
        durations_ms,
        hosts_cpu_per_check: per_check(hosts0, hosts1),
        client_cpu_per_check: per_check(client0, client1),
    })
}

/// A target from PRODUCT.md, applied to the 50-server figures.
fn verdict(value: Option<Duration>, limit: Duration) -> String {
    match value {
        Some(v) => format!(
            "{} ({:.2}x of {})",
            if v <= limit { "PASS" } else { "FAIL" },
            v.as_secs_f64() / limit.as_secs_f64(),
            fmt(limit)
        ),
        None => "n/a".into(),
    }
}

/// `a` must be below `b` (Cronium faster than the peer); `factor` is how many times faster.
fn faster(a: Option<Duration>, b: Option<Duration>, factor: f64) -> String {
    match (a, b) {
        (Some(a), Some(b)) if a > Duration::ZERO => {
            let x = b.as_secs_f64() / a.as_secs_f64();
            format!(
                "{} ({x:.2}x faster, need >= {factor}x)",
                if x >= factor { "PASS" } else { "FAIL" }
            )
        }
        _ => "n/a".into(),
    }
}

/// The markdown tables of the fan-out results.
pub fn markdown(results: &[FanoutResult], versions: &str) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "Peers: {versions}. Times are medians; `n=` is the sample count.\n\n"
    ));
    s.push_str("| servers | tool / mode | warm | cold (new connections) | cold + first deploy |\n");
    s.push_str("| ---: | --- | ---: | ---: | ---: |\n");
    let cell = |xs: &[Duration]| {
        if xs.is_empty() {
            "-".to_string()
        } else {
            format!("{} (n={})", fmt_opt(median(xs)), xs.len())
        }
    };
    for r in results {
        let rows: [Row; 4] = [
            (
                "cronium runner-ssh",
                walls(&r.rs_warm),
                walls(&r.rs_cold),
                walls(&r.rs_deploy),
            ),
            (
                "cronium direct-ssh",
                walls(&r.ds_warm),
                walls(&r.ds_cold),
                vec![],
            ),
            (
                "parallel-ssh",
                r.pssh_warm.clone(),
                r.pssh_cold.clone(),
                vec![],
            ),
            ("ansible (-m raw, -f 50)", vec![], r.ansible.clone(), vec![]),
        ];
        for (name, w, c, d) in rows {
            s.push_str(&format!(
                "| {} | {name} | {} | {} | {} |\n",
                r.n,
                cell(&w),
                cell(&c),
                cell(&d)
            ));
        }
    }

    s.push_str(
        "\nCPU per warm fan-out, in ms (mean over the warm runs). `machine`: all cores, from \
         /proc/stat (other load on the machine included); `client`: the Cronium server process \
         (HTTP, agent, SSH client, SQLite) or the parallel-ssh Python process; the rest is mostly \
         the hosts' side (sshd, shells, runners, scripts). On loopback all of it shares the 2 cores, so a fan-out cannot take less wall time than machine CPU / 2.\n\n\
         | servers | runner-ssh machine / client | direct-ssh machine / client | \
         parallel-ssh machine / client |\n| ---: | ---: | ---: | ---: |\n",
    );
    let cpu = |x: Option<f64>| x.map_or_else(|| "n/a".to_string(), |v| format!("{v:.0}"));
    for r in results {
        s.push_str(&format!(
            "| {} | {} / {} | {} / {} | {} / {} |\n",
            r.n,
            cpu(r.cpu_rs_warm),
            cpu(r.client_rs_warm),
            cpu(r.cpu_ds_warm),
            cpu(r.client_ds_warm),
            cpu(r.cpu_pssh_warm),
            cpu(r.client_pssh_warm)
        ));
    }

    s.push_str(
        "\nCPU per cold fan-out, in ms (medians over the cold samples). `machine`: all cores \
         during the timed run, as above; `hosts`: everything on \
         the hosts' side (the sshd processes of the new connections, shells, runners, scripts), \
         from the sshd listeners' reaped children; `client`: the Cronium server process (which \
         had just started).\n\n\
         | servers | runner-ssh machine / hosts / client | direct-ssh machine / hosts / client |\n\
         | ---: | ---: | ---: |\n",
    );
    for r in results {
        s.push_str(&format!(
            "| {} | {} / {} / {} | {} / {} / {} |\n",
            r.n,
            cpu(r.cold_cpu_rs.machine),
            cpu(r.cold_cpu_rs.hosts),
            cpu(r.cold_cpu_rs.client),
            cpu(r.cold_cpu_ds.machine),
            cpu(r.cold_cpu_ds.hosts),
            cpu(r.cold_cpu_ds.client),
        ));
    }

    s.push_str(
        "\nWhere Cronium's time goes (medians over samples of the slowest execution's \
                `setup_ms` (reported by the runner: unpacking and preparing, before the script) / `run_ms`, and the job's timestamps):\n\n",
    );
    s.push_str("| servers | run | client wall | POST answered | created -> final (server) | queue (created -> started) | job duration_ms | job start -> 1st execution start | 1st -> last execution start | last execution end -> job final | max setup_ms | max run_ms |\n");
    s.push_str(
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in results {
        for (name, xs) in [
            ("runner-ssh warm", &r.rs_warm),
            ("runner-ssh cold", &r.rs_cold),
            ("runner-ssh cold + deploy", &r.rs_deploy),
            ("direct-ssh warm", &r.ds_warm),
            ("direct-ssh cold", &r.ds_cold),
        ] {
            let m = |f: fn(&Sample) -> Option<i64>| {
                let v: Vec<i64> = xs.iter().filter_map(f).collect();
                median_ms(&v)
                    .map(|x| format!("{x} ms"))
                    .unwrap_or_else(|| "n/a".into())
            };
            s.push_str(&format!(
                "| {} | {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                r.n,
                fmt_opt(median(&walls(xs))),
                fmt_opt(median(&xs.iter().map(|x| x.post).collect::<Vec<_>>())),
                m(|x| x.server_ms),
                m(|x| x.queue_ms),
                m(|x| x.job_ms),
                m(|x| x.first_start_ms),
                m(|x| x.start_spread_ms),
                m(|x| x.tail_ms),
                m(|x| x.setup_ms_max),
                m(|x| x.run_ms_max),
            ));
        }
    }

    s.push_str(
        "\nHealth checks during the warm loops (after-run checks that ran, per warm fan-out), and \
         the cost of collecting health: interval checks (`--health-interval 2s`) on pooled \
         connections with nothing else running. `duration`: the check as the server stores it \
         (a channel on the pooled connection, `cronium-runner health`, its answer); `hosts CPU`: \
         the hosts' side per check (sshd session, shell, runner), from every process below the \
         sshd listeners; `client CPU`: the Cronium server process per check. One check per \
         server per interval, so the CPU per check is the CPU per server per interval.\n\n\
         | servers | checks per warm run, runner-ssh / direct-ssh | checks (intervals) | duration median / max | hosts CPU per server per interval | client CPU per server per interval |\n\
         | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let cpu2 = |x: Option<f64>| x.map_or_else(|| "n/a".to_string(), |v| format!("{v:.2} ms"));
    for r in results {
        let (checks, dur, hosts, client) = match &r.health {
            Some(h) => {
                let ds: Vec<i64> = h.durations_ms.clone();
                let dur = format!(
                    "{} / {} (n={})",
                    median_ms(&ds).map_or("n/a".into(), |x| format!("{x} ms")),
                    ds.iter().max().map_or("n/a".into(), |x| format!("{x} ms")),
                    ds.len()
                );
                (
                    format!("{} ({:.0})", h.checks, h.intervals),
                    dur,
                    cpu2(h.hosts_cpu_per_check),
                    cpu2(h.client_cpu_per_check),
                )
            }
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        s.push_str(&format!(
            "| {} | {} / {} | {checks} | {dur} | {hosts} | {client} |\n",
            r.n,
            r.health_rs_warm.map_or("n/a".into(), |v| format!("{v:.1}")),
            r.health_ds_warm.map_or("n/a".into(), |v| format!("{v:.1}")),
        ));
    }

    s.push_str(
        "\nAgainst parallel-ssh at every fleet size (warm and cold medians of this run):\n\n\
         | servers | runner-ssh warm | direct-ssh warm | runner-ssh cold | direct-ssh cold |\n\
         | ---: | --- | --- | --- | --- |\n",
    );
    for r in results {
        let (pw, pc) = (median(&r.pssh_warm), median(&r.pssh_cold));
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            r.n,
            faster(median(&walls(&r.rs_warm)), pw, 1.0),
            faster(median(&walls(&r.ds_warm)), pw, 1.0),
            faster(median(&walls(&r.rs_cold)), pc, 1.0),
            faster(median(&walls(&r.ds_cold)), pc, 1.0),
        ));
    }

    if let Some(r) = results.iter().find(|r| r.n == 50) {
        let rs_w = median(&walls(&r.rs_warm));
        let rs_c = median(&walls(&r.rs_cold));
        let rs_d = median(&walls(&r.rs_deploy));
        let ds_w = median(&walls(&r.ds_warm));
        let ds_c = median(&walls(&r.ds_cold));
        let pw = median(&r.pssh_warm);
        let pc = median(&r.pssh_cold);
        let an = median(&r.ansible);
        s.push_str("\nTargets (PRODUCT.md, 50 servers):\n\n| target | measured | verdict |\n| --- | ---: | --- |\n");
        let rows = [
            (
                "runner-ssh warm <= 150 ms",
                rs_w,
                verdict(rs_w, Duration::from_millis(150)),
            ),
            (
                "direct-ssh warm <= 100 ms",
                ds_w,
                verdict(ds_w, Duration::from_millis(100)),
            ),
            (
                "runner-ssh cold <= 1.2 s",
                rs_c,
                verdict(rs_c, Duration::from_millis(1200)),
            ),
            (
                "direct-ssh cold <= 1.2 s",
                ds_c,
                verdict(ds_c, Duration::from_millis(1200)),
            ),
            (
                "runner-ssh cold + deploy <= 2 s",
                rs_d,
                verdict(rs_d, Duration::from_secs(2)),
            ),
            (
                "runner-ssh warm faster than parallel-ssh warm",
                rs_w,
                faster(rs_w, pw, 1.0),
            ),
            (
                "direct-ssh warm faster than parallel-ssh warm",
                ds_w,
                faster(ds_w, pw, 1.0),
            ),
            (
                "runner-ssh cold faster than parallel-ssh cold",
                rs_c,
                faster(rs_c, pc, 1.0),
            ),
            (
                "direct-ssh cold faster than parallel-ssh cold",
                ds_c,
                faster(ds_c, pc, 1.0),
            ),
            (
                "runner-ssh cold >= 10x faster than Ansible",
                rs_c,
                faster(rs_c, an, 10.0),
            ),
            (
                "direct-ssh cold >= 10x faster than Ansible",
                ds_c,
                faster(ds_c, an, 10.0),
            ),
        ];
        for (name, v, verdict) in rows {
            s.push_str(&format!("| {name} | {} | {verdict} |\n", fmt_opt(v)));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_list_is_parsed_and_bad_counts_are_named() {
        assert_eq!(parse_servers("1,10,50").unwrap(), vec![1, 10, 50]);
        let e = parse_servers("1,x").unwrap_err().to_string();
        assert!(e.contains("`x` is not a number"), "{e}");
        let e = parse_servers("0").unwrap_err().to_string();
        assert!(e.contains("between 1 and 200"), "{e}");
    }

    #[test]
    fn verdicts_compare_against_the_limit() {
        let ms = Duration::from_millis;
        assert!(verdict(Some(ms(100)), ms(150)).starts_with("PASS"));
        assert!(verdict(Some(ms(200)), ms(150)).starts_with("FAIL"));
        assert!(faster(Some(ms(100)), Some(ms(1100)), 10.0).starts_with("PASS"));
        assert!(faster(Some(ms(200)), Some(ms(1100)), 10.0).starts_with("FAIL"));
    }
}
