//! `cronium-bench`: measures the PRODUCT.md quality bars against the real release binaries. Each
//! subcommand prints its figures and a one-line JSON summary; `all` runs them in turn and prints a
//! markdown table for BENCHMARKS.md.
//!
//! This file only parses the command line and dispatches; the benchmarks live in `benches/`.

mod benches;
mod report;
mod server;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use benches::Ctx;
use report::Report;
use server::Binaries;

#[derive(Parser, Debug)]
#[command(
    name = "cronium-bench",
    about = "Benchmarks for the Cronium quality bars"
)]
struct Cli {
    /// The `cronium` binary under test.
    #[arg(long, global = true, default_value = "target/release/cronium")]
    cronium: PathBuf,
    /// The `cronium-runner` binary the server runs jobs with. Default: the static runner from
    /// scripts/build-runner.sh (target/runner/cronium-runner, which `cronium serve` prefers for
    /// local runs too), else target/release/cronium-runner.
    #[arg(long, global = true)]
    runner: Option<PathBuf>,
    /// PostgreSQL superuser URL for the PostgreSQL figures (a fresh database per run).
    #[arg(
        long,
        global = true,
        env = "CRONIUM_TEST_PG_URL",
        hide_env_values = true
    )]
    pg_url: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Enqueue-to-completion overhead of a trivial local job, one at a time.
    Overhead {
        #[arg(short = 'n', long, default_value_t = 300)]
        runs: usize,
    },
    /// Jobs per second for K trivial jobs, on SQLite and PostgreSQL.
    Throughput {
        #[arg(short = 'k', long, default_value_t = 500)]
        jobs: usize,
    },
    /// Firing precision and drift of an every-second cron schedule.
    Cron {
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Resident memory of an idle server.
    IdleRss {
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// 40 chained Python fibo(10) runs through the queue vs directly.
    Chain40 {
        /// Repetitions of the whole chain (the median is reported).
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// Python to use on both sides (default: /usr/bin/python3 if present, else what `python3`
        /// on PATH really is).
        #[arg(long)]
        python: Option<PathBuf>,
    },
    /// Latency of log lines from a script to a live SSE viewer.
    LogLatency {
        #[arg(long, default_value_t = 1500)]
        lines: usize,
    },
    /// Two servers on one PostgreSQL (B with --no-agent --no-scheduler): log line latency from a
    /// script on A's agent to a viewer on A and on B, and the cost of one NOTIFY.
    Replicas {
        #[arg(long, default_value_t = 1500)]
        lines: usize,
    },
    /// 50 MB of output: nothing lost, throughput, end-to-success time.
    BigOutput {
        #[arg(long, default_value_t = 50)]
        mb: usize,
    },
    /// Remote agents on PostgreSQL: throughput beside the embedded agent (1, 2, 4 agents), the
    /// queue alone through the agent API, claim latency, a killed agent's recovery.
    Agents {
        /// Trivial jobs per throughput figure (at most 999).
        #[arg(short = 'k', long, default_value_t = 500)]
        jobs: usize,
        /// Jobs through the queue alone.
        #[arg(long, default_value_t = 5000)]
        queue_jobs: usize,
        /// Claim latency samples.
        #[arg(long, default_value_t = 200)]
        samples: usize,
        /// Killed-agent trials.
        #[arg(long, default_value_t = 3)]
        trials: usize,
    },
    /// kill -9 of the scheduler's leader among two servers on PostgreSQL: the survivor's tick lag.
    Failover {
        #[arg(long, default_value_t = 3)]
        trials: usize,
    },
    /// Workflows: a 40-node sequential fibo(10) workflow vs the same scripts run directly, and
    /// the start of a join after 100 parallel nodes.
    Workflow {
        #[arg(long, default_value_t = 5)]
        reps: usize,
        #[arg(long)]
        python: Option<PathBuf>,
    },
    /// Runtime helpers: API-mode round trip (p50/p99) beside bundled mode's cost.
    Helpers {
        /// Helper calls measured (Python); Bash makes a tenth of them.
        #[arg(short = 'n', long, default_value_t = 2000)]
        calls: usize,
    },
    /// Size of the static runner binary.
    RunnerSize {
        /// Build it with scripts/build-runner.sh first.
        #[arg(long)]
        build: bool,
        /// Measure this file instead.
        #[arg(long)]
        path: Option<PathBuf>,
    },
    /// Web UI: each page's time with 100 000 jobs and 10 million log lines stored (SQLite,
    /// then PostgreSQL), a log line to an open page, opening a 50 MB log.
    Ui {
        /// Jobs seeded (each with `--lines` log lines).
        #[arg(long, default_value_t = 100_000)]
        jobs: i64,
        /// Log lines per job (100 000 jobs × 95 + the 50 MB log ≈ 10 million).
        #[arg(long, default_value_t = 95)]
        lines: i64,
        /// Size of the big log, MB.
        #[arg(long, default_value_t = 50)]
        big_mb: i64,
        /// Requests per page.
        #[arg(long, default_value_t = 200)]
        requests: usize,
        /// SQLite only.
        #[arg(long)]
        sqlite_only: bool,
    },
    /// All of the above, then a markdown table.
    All {
        /// Shorter runs (a smoke test of the harness, not figures to publish).
        #[arg(long)]
        quick: bool,
        /// Skip building the static runner (measure whatever runner build exists).
        #[arg(long)]
        no_build: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the chosen benchmark(s); `Ok(false)` when a figure missed its target.
async fn run(cli: Cli) -> anyhow::Result<bool> {
    let root = std::env::current_dir()?;
    let ctx = Ctx {
        bins: Binaries {
            cronium: server::existing(&cli.cronium, "--cronium")?,
            runner: server::existing(
                &cli.runner.unwrap_or_else(|| {
                    let static_runner = PathBuf::from("target/runner/cronium-runner");
                    if static_runner.is_file() {
                        static_runner
                    } else {
                        PathBuf::from("target/release/cronium-runner")
                    }
                }),
                "--runner",
            )?,
        },
        pg_url: cli.pg_url,
        root,
    };
    let report = match cli.cmd {
        Cmd::Overhead { runs } => benches::overhead::run(&ctx, runs).await?,
        Cmd::Throughput { jobs } => benches::throughput::run(&ctx, jobs).await?,
        Cmd::Cron { seconds } => benches::cron::run(&ctx, seconds).await?,
        Cmd::IdleRss { seconds } => benches::idle_rss::run(&ctx, seconds).await?,
        Cmd::Chain40 { reps, python } => benches::chain40::run(&ctx, reps, python).await?,
        Cmd::LogLatency { lines } => benches::log_latency::run(&ctx, lines).await?,
        Cmd::Replicas { lines } => benches::replicas::run(&ctx, lines).await?,
        Cmd::Agents {
            jobs,
            queue_jobs,
            samples,
            trials,
        } => {
            benches::agents::run(
                &ctx,
                &benches::agents::Sizes {
                    jobs,
                    queue_jobs,
                    samples,
                    trials,
                },
            )
            .await?
        }
        Cmd::Failover { trials } => benches::failover::run(&ctx, trials).await?,
        Cmd::BigOutput { mb } => benches::big_output::run(&ctx, mb).await?,
        Cmd::Workflow { reps, python } => benches::workflow::run(&ctx, reps, python).await?,
        Cmd::Helpers { calls } => benches::helpers::run(&ctx, calls).await?,
        Cmd::RunnerSize { build, path } => benches::runner_size::run(&ctx, build, path).await?,
        Cmd::Ui {
            jobs,
            lines,
            big_mb,
            requests,
            sqlite_only,
        } => {
            benches::ui::run(
                &ctx,
                &benches::ui::Size {
                    jobs,
                    lines,
                    big_mb,
                    requests,
                    postgres: !sqlite_only,
                },
            )
            .await?
        }
        Cmd::All { quick, no_build } => return all(&ctx, quick, no_build).await,
    };
    report.print();
    Ok(report.passed())
}

async fn all(ctx: &Ctx, quick: bool, no_build: bool) -> anyhow::Result<bool> {
    let load_before = loadavg();
    let mut reports: Vec<Report> = vec![];
    // The runner build is CPU-heavy: done first so it does not overlap a timed benchmark.
    let (n, k, cron_s, reps, lines, mb) = if quick {
        (30, 100, 8, 1, 200, 5)
    } else {
        (300, 500, 60, 5, 1500, 50)
    };
    macro_rules! step {
        ($name:literal, $fut:expr) => {{
            eprintln!("-- running {} (load {})", $name, loadavg());
            let r = match $fut.await {
                Ok(r) => r,
                Err(e) => report::failed($name, &e),
            };
            r.print();
            reports.push(r);
        }};
    }
    step!(
        "runner-size",
        benches::runner_size::run(ctx, !no_build, None)
    );
    step!(
        "idle-rss",
        benches::idle_rss::run(ctx, if quick { 3 } else { 10 })
    );
    step!("overhead", benches::overhead::run(ctx, n));
    step!("chain40", benches::chain40::run(ctx, reps, None));
    step!("workflow", benches::workflow::run(ctx, reps, None));
    step!("log-latency", benches::log_latency::run(ctx, lines));
    step!("cron", benches::cron::run(ctx, cron_s));
    step!("throughput", benches::throughput::run(ctx, k));
    step!("big-output", benches::big_output::run(ctx, mb));
    step!(
        "helpers",
        benches::helpers::run(ctx, if quick { 200 } else { 2000 })
    );
    if ctx.pg_url.is_some() {
        step!(
            "failover",
            benches::failover::run(ctx, if quick { 1 } else { 3 })
        );
        step!("replicas", benches::replicas::run(ctx, lines));
        step!(
            "agents",
            benches::agents::run(
                ctx,
                &benches::agents::Sizes {
                    jobs: k,
                    queue_jobs: if quick { 500 } else { 5000 },
                    samples: if quick { 20 } else { 200 },
                    trials: if quick { 1 } else { 3 },
                }
            )
        );
    } else {
        eprintln!("-- not running failover nor replicas: they need PostgreSQL (--pg-url or CRONIUM_TEST_PG_URL)");
    }
    let load_after = loadavg();
    println!();
    println!("Load average (1/5/15 min) before: {load_before}; after: {load_after}");
    println!();
    print!("{}", report::markdown(&reports));
    for r in &reports {
        for n in &r.notes {
            println!("- `{}`: {n}", r.bench);
        }
    }
    Ok(reports.iter().all(Report::passed))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}
