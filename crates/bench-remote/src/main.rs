//! `cronium-bench-remote`: SSH fan-out and container overhead benchmarks (see the crate docs).
//! Parses flags, builds the binaries under test and prints the figures as markdown.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use cronium_bench_remote::{binaries, container, fanout, helpers, procs};

#[derive(Parser, Debug)]
#[command(
    name = "cronium-bench-remote",
    about = "SSH fan-out and container overhead benchmarks"
)]
struct Cli {
    /// The Cronium workspace (binaries under target/, scripts/).
    #[arg(long, global = true, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))]
    workspace: PathBuf,
    /// Use the binaries already in target/ instead of building them.
    #[arg(long, global = true)]
    no_build: bool,
    /// Wait for each job by polling GET /api/v1/jobs/{id} every 5 ms instead of following its
    /// live log stream (SSE) to its `end` event.
    #[arg(long, global = true)]
    poll: bool,
    /// Virtual environment for parallel-ssh and Ansible (created and reused).
    #[arg(long, global = true, default_value = "/tmp/cronium-bench-remote-venv")]
    venv: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// SSH fan-out: Cronium (runner-ssh, direct-ssh) against parallel-ssh and Ansible.
    Ssh(SshArgs),
    /// Container overhead: Cronium's container target against `docker run --rm`.
    Container(ContainerArgs),
    /// Runtime helpers in API mode over SSH on loopback: a helper call's round trip.
    Helpers {
        /// Helper calls measured.
        #[arg(short = 'n', long, default_value_t = 1000)]
        calls: usize,
    },
    /// Both.
    All {
        #[command(flatten)]
        ssh: SshArgs,
        #[command(flatten)]
        container: ContainerArgs,
    },
}

#[derive(clap::Args, Debug)]
struct SshArgs {
    /// Fleet sizes, comma-separated.
    #[arg(long, default_value = "1,10,50")]
    servers: String,
    /// Warm samples per mode.
    #[arg(long, default_value_t = 15)]
    warm: usize,
    /// Cold samples per mode (one server restart each).
    #[arg(long, default_value_t = 9)]
    cold: usize,
    /// Ansible runs per fleet size.
    #[arg(long, default_value_t = 3)]
    ansible: usize,
    /// `cronium serve --fanout-concurrency` (default: the server's own default).
    #[arg(long)]
    fanout_concurrency: Option<usize>,
    /// Seconds of health collection measured per fleet size (interval checks every 2 s on
    /// pooled connections, nothing else running); 0 skips it.
    #[arg(long, default_value_t = 10)]
    health_secs: u64,
}

#[derive(clap::Args, Debug)]
struct ContainerArgs {
    /// Interleaved pairs (cronium run, docker run).
    #[arg(long, default_value_t = 15)]
    runs: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    procs::install_ctrl_c();
    let workspace = cli.workspace.canonicalize()?;
    let (ssh, cont) = match &cli.cmd {
        Cmd::Ssh(s) => (Some(s), None),
        Cmd::Container(c) => (None, Some(c)),
        Cmd::Helpers { .. } => (None, None),
        Cmd::All { ssh, container } => (Some(ssh), Some(container)),
    };
    let ssh_opts = match ssh {
        Some(s) => Some(fanout::FanoutOpts {
            servers: fanout::parse_servers(&s.servers)?,
            warm: s.warm.max(1),
            cold: s.cold.max(1),
            ansible: s.ansible,
            venv: cli.venv.clone(),
            concurrency: s.fanout_concurrency,
            health_secs: s.health_secs,
        }),
        None => None,
    };
    let bins = binaries::prepare(&workspace, !cli.no_build, cli.poll)?;
    let mut out = format!(
        "Machine: {}\nCompletion seen by: {}\n",
        binaries::machine(),
        if cli.poll {
            "polling GET /api/v1/jobs/{id} every 5 ms"
        } else {
            "the live log stream's `end` event (SSE)"
        }
    );
    if let Some(opts) = ssh_opts {
        let (results, versions) = fanout::run(&workspace, &bins, &opts).await?;
        out.push_str(&format!(
            "\n### SSH fan-out (load after: {})\n\n",
            binaries::load()
        ));
        out.push_str(&fanout::markdown(&results, &versions));
    }
    if let Cmd::Helpers { calls } = &cli.cmd {
        let r = helpers::run(&workspace, &bins, (*calls).max(10)).await?;
        out.push_str(&format!(
            "\n### Runtime helpers over SSH (load after: {})\n\n",
            binaries::load()
        ));
        out.push_str(&helpers::markdown(&r));
    }
    if let Some(c) = cont {
        let r = container::run(&workspace, &bins, c.runs.max(1)).await?;
        out.push_str(&format!(
            "\n### Container overhead (load after: {})\n\n",
            binaries::load()
        ));
        out.push_str(&container::markdown(&r));
    }
    println!("{out}");
    Ok(())
}
