//! `cronium`: the server (`cronium serve`) and the command-line client in one binary.
//! Only flag parsing and dispatch live here.

mod accounts;
mod agent;
mod cli;
mod client;
mod commands;
mod local_run;
mod notify;
mod prune;
mod rollout;
mod table;
mod workflow;

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use clap::Parser;
use cronium_core::duration::ByteSize;
use cronium_server::ServerConfig;
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command, ServeArgs};

/// The runner for local runs: the flag; else the static runner (`static_runner`) when it is at
/// least as new as the `cronium-runner` next to this binary; else that one; else PATH.
///
/// The static (musl) runner starts about 1 ms faster than a dynamically linked one (no dynamic
/// loading, no CPU probing at start), which is a fifth of the orchestration cost of a local run;
/// the age check keeps a stale static build from shadowing a freshly built runner in a source
/// tree.
fn find_runner(flag: Option<PathBuf>, static_runner: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = flag {
        return Ok(p);
    }
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("cronium-runner")));
    if let Some(p) = newest_runner(static_runner, sibling.as_deref()) {
        return Ok(p);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("cronium-runner");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(anyhow!(
        "cronium-runner not found next to cronium or on PATH; pass --runner or set CRONIUM_RUNNER"
    ))
}

/// The static runner when it exists and is at least as new as `sibling`, else `sibling` when it
/// exists.
fn newest_runner(static_runner: Option<&Path>, sibling: Option<&Path>) -> Option<PathBuf> {
    let sibling = sibling.filter(|p| p.is_file());
    if let Some(s) = static_runner.filter(|s| s.is_file()) {
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        if sibling.is_none_or(|d| modified(s) >= modified(d)) {
            return Some(s.to_path_buf());
        }
    }
    sibling.map(Path::to_path_buf)
}

/// A static runner built by scripts/build-runner.sh, when this binary runs from a source tree
/// (target/release/cronium -> target/runner/cronium-runner).
fn find_static_runner() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let target = exe.parent()?.parent()?;
    let p = target.join("runner/cronium-runner");
    p.is_file().then_some(p)
}

fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(d).join("cronium");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/cronium"),
        None => PathBuf::from("cronium-data"),
    }
}

/// `path` made absolute against the current directory: runs start in their own working
/// directory, where a relative `--runner target/runner/cronium-runner` would name nothing.
fn absolute(path: PathBuf, flag: &str) -> Result<PathBuf> {
    std::path::absolute(&path).map_err(|e| anyhow!("{flag} {}: {e}", path.display()))
}

async fn serve(args: ServeArgs) -> Result<i32> {
    let static_runner = match args.static_runner.clone() {
        Some(p) => Some(absolute(p, "--static-runner")?),
        None => find_static_runner(),
    };
    let runner = absolute(
        find_runner(args.runner, static_runner.as_deref())?,
        "--runner",
    )?;
    tracing::info!(runner = %runner.display(), "runner for local runs");
    let data_dir = args.data_dir.unwrap_or_else(default_data_dir);
    let mut config = ServerConfig::new(data_dir.clone(), runner);
    config.database_url = args.database_url;
    config.admin_token = std::env::var("CRONIUM_ADMIN_TOKEN").ok();
    config.admin_password = std::env::var("CRONIUM_ADMIN_PASSWORD").ok();
    config.encryption_key = std::env::var("CRONIUM_ENCRYPTION_KEY").ok();
    config.embedded_agent = !args.no_agent;
    config.scheduler = !args.no_scheduler;
    config.run_as = args.run_as;
    config.pass_env = args.pass_env;
    config.helpers = args
        .helpers
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    if database_url_arg_has_password(&std::env::args().collect::<Vec<_>>()) {
        tracing::warn!("the --database-url on the command line holds a password, which every user of this machine can read in /proc/PID/cmdline (ps); pass it in CRONIUM_DATABASE_URL instead");
    }
    config.agent_concurrency = args.concurrency.max(1);
    config.lease = cronium_core::duration::HumanDuration::parse(&args.lease)
        .map_err(|e| anyhow!("--lease: {e}"))?
        .0;
    if config.lease < std::time::Duration::from_millis(300) {
        return Err(anyhow!("--lease: must be at least 300ms"));
    }
    config.max_output_bytes = ByteSize::parse(&args.max_output)
        .map_err(|e| anyhow!("--max-output: {e}"))?
        .0;

    config.static_runner = static_runner;
    config.docker = !args.no_docker;
    config.container.images = [
        (cronium_protocol::Interpreter::Bash, args.image_bash),
        (cronium_protocol::Interpreter::Python, args.image_python),
        (cronium_protocol::Interpreter::Node, args.image_node),
    ]
    .into();
    let size = |flag: &str, v: &str| -> Result<i64> {
        Ok(ByteSize::parse(v).map_err(|e| anyhow!("--{flag}: {e}"))?.0 as i64)
    };
    config.container.defaults = cronium_docker::Limits {
        cpus: args.container_cpus,
        memory_bytes: Some(size("container-memory", &args.container_memory)?),
        pids: Some(args.container_pids),
    };
    config.container.maximums = cronium_docker::Limits {
        cpus: args.container_max_cpus,
        memory_bytes: Some(size("container-max-memory", &args.container_max_memory)?),
        pids: Some(args.container_max_pids),
    };
    config.ssh.pool_size = args.ssh_pool_size.max(1);
    config.ssh.idle_timeout = cronium_core::duration::HumanDuration::parse(&args.ssh_idle_timeout)
        .map_err(|e| anyhow!("--ssh-idle-timeout: {e}"))?
        .0;
    config.ssh.deploy_dir = args.ssh_deploy_dir;
    config.ssh.work_dir = args.ssh_work_dir;
    config.fanout_concurrency = args.fanout_concurrency.max(1);
    let duration = |flag: &str, v: &str| {
        cronium_core::duration::HumanDuration::parse(v)
            .map(|d| d.0)
            .map_err(|e| anyhow!("{flag}: {e}"))
    };
    config.health.interval = duration("--health-interval", &args.health_interval)?;
    if args.health_keep < 1 {
        return Err(anyhow!("--health-keep: must be at least 1"));
    }
    config.health.keep = args.health_keep;
    let minimum = |flag: &str, v: &str| {
        v.parse::<cronium_core::health::Minimum>()
            .map_err(|e| anyhow!("{flag}: {e}"))
    };
    config.health.thresholds = cronium_core::health::Thresholds {
        disk_free_min: minimum("--health-disk-free-min", &args.health_disk_free_min)?,
        memory_available_min: minimum(
            "--health-memory-available-min",
            &args.health_memory_available_min,
        )?,
        unreachable_after: args.health_unreachable_after.max(1),
        stale_after_ms: match &args.health_stale_after {
            None => None,
            // 0: the contact's age is never judged.
            Some(v) => Some(match duration("--health-stale-after", v)? {
                d if d.is_zero() => i64::MAX,
                d => d.as_millis() as i64,
            }),
        },
    };
    config.ui.session_idle = duration("--session-idle", &args.session_idle)?;
    config.ui.session_lifetime = duration("--session-lifetime", &args.session_lifetime)?;
    config.ui.secure_cookies = args.secure_cookies;
    config.public_url = match args.public_url {
        Some(u) => {
            let t = u.trim().trim_end_matches('/').to_string();
            if !(t.starts_with("http://") || t.starts_with("https://")) {
                return Err(anyhow!("--public-url: must start with http:// or https://"));
            }
            Some(t)
        }
        None => None,
    };
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        config.tls = Some(cronium_server::tls::TlsFiles { cert, key });
    }
    config.retain =
        cronium_core::spec::Retain::parse(&args.retain).map_err(|e| anyhow!("--retain: {e}"))?;
    config.audit_retain = cronium_core::spec::Retain::parse(&args.audit_retain)
        .map_err(|e| anyhow!("--audit-retain: {e}"))?;
    config.retention_interval =
        cronium_core::duration::HumanDuration::parse(&args.retention_interval)
            .map_err(|e| anyhow!("--retention-interval: {e}"))?
            .0;
    if config.retention_interval.is_zero() {
        return Err(anyhow!("--retention-interval: must be greater than zero"));
    }
    for (interp, flag, path) in [
        (cronium_protocol::Interpreter::Bash, "bash", &args.bash),
        (
            cronium_protocol::Interpreter::Python,
            "python",
            &args.python,
        ),
        (cronium_protocol::Interpreter::Node, "node", &args.node),
    ] {
        if let Some(p) = path {
            if !p.is_file() {
                return Err(anyhow!("--{flag}: {} is not a file", p.display()));
            }
            config.interpreters.insert(interp, p.display().to_string());
        }
    }
    config.work_dir = args.work_dir.or_else(|| {
        let shm = std::path::Path::new("/dev/shm");
        shm.is_dir().then(|| shm.join("cronium"))
    });

    let running = cronium_server::prepare(&config).await?;
    if let Some(b) = &running.bootstrap {
        println!("First start: created the admin account `{}`.", b.username);
        if let Some(p) = &b.password {
            println!("  admin password: {p}");
        }
        match &b.token {
            Some(t) => println!("  API token:      {t}\n  (shown only this once; use it as CRONIUM_TOKEN or --token)"),
            None => println!("  API token:      the value of CRONIUM_ADMIN_TOKEN"),
        }
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(%addr, data_dir = %data_dir.display(), database = %redact(&config.database_url()), "cronium listening");
    if config.tls.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(%addr, "listening on a non-loopback address without TLS");
        eprintln!(
            "WARNING: Cronium listens on {addr} without TLS: passwords, tokens and session \
             cookies cross the network in clear. Serve HTTPS with --tls-cert/--tls-key, or put a \
             TLS-terminating proxy in front and listen on 127.0.0.1."
        );
    }
    println!(
        "Cronium listening on {scheme}://{addr} (data in {})",
        data_dir.display()
    );
    if let Some(b) = &running.bootstrap {
        let which = match b.password {
            Some(_) => "the password above",
            None => "the password of CRONIUM_ADMIN_PASSWORD",
        };
        println!("Open {scheme}://{addr}/ in a browser and log in as `admin` with {which}.");
    }
    let shutdown = CancellationToken::new();
    let s = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        s.cancel();
    });
    cronium_server::serve(running, &config, listener, shutdown).await?;
    Ok(0)
}

/// True when `--database-url` was given as an argument (not in the environment) with a password.
fn database_url_arg_has_password(args: &[String]) -> bool {
    args.iter().enumerate().any(|(i, a)| {
        let value = match a.strip_prefix("--database-url") {
            Some("") => args.get(i + 1).map(String::as_str),
            Some(v) => v.strip_prefix('='),
            None => None,
        };
        value.is_some_and(|url| redact(url) != url)
    })
}

/// Hides a password in a database URL before logging it.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let serving = matches!(cli.command, Command::Serve(_));
    if !serving {
        // A client command piped into `head` ends quietly, as Unix tools do, instead of
        // panicking on the broken pipe. The server keeps Rust's default (SIGPIPE ignored): a
        // viewer that goes away must never kill it.
        // SAFETY: signal(2) only sets the process-wide disposition; SIG_DFL is a valid one.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let default_level = if serving { "info" } else { "warn" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CRONIUM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::Event(cmd) => commands::event(cmd).await,
        Command::Job(cmd) => commands::job(cmd).await,
        Command::Workflow(cmd) => workflow::workflow(cmd).await,
        Command::Var(cmd) => commands::var(cmd).await,
        Command::Token(cmd) => commands::token(cmd).await,
        Command::User(cmd) => accounts::user(cmd).await,
        Command::Audit(args) => accounts::audit(args).await,
        Command::Server(cmd) => commands::server(cmd).await,
        Command::Runner(cmd) => commands::runner(cmd).await,
        Command::Channel(cmd) => notify::channel(cmd).await,
        Command::Agent(args) => {
            let runner = args.run.runner.clone();
            agent::agent(*args, find_runner(runner, find_static_runner().as_deref())).await
        }
        Command::Prune(args) => prune::prune(args).await,
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "cronium", &mut std::io::stdout());
            Ok(0)
        }
        Command::Run(args) => {
            match find_runner(args.runner.clone(), find_static_runner().as_deref()) {
                Ok(r) => local_run::run(args, r).await,
                Err(e) => Err(e),
            }
        }
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn file_at(dir: &Path, name: &str, age: Duration) -> PathBuf {
        let p = dir.join(name);
        let f = std::fs::File::create(&p).unwrap();
        f.set_modified(SystemTime::now() - age).unwrap();
        p
    }

    #[test]
    fn a_password_in_a_database_url_argument_is_noticed() {
        let args = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert!(database_url_arg_has_password(&args(
            "cronium serve --database-url postgres://u:pw@h/db"
        )));
        assert!(database_url_arg_has_password(&args(
            "cronium serve --database-url=postgres://u:pw@h/db"
        )));
        assert!(!database_url_arg_has_password(&args(
            "cronium serve --database-url postgres://u@h/db"
        )));
        assert!(!database_url_arg_has_password(&args("cronium serve")));
    }

    #[test]
    fn the_static_runner_is_used_unless_the_sibling_build_is_newer() {
        let dir = tempfile::tempdir().unwrap();
        let old = Duration::from_secs(3600);
        let stat = file_at(dir.path(), "static", Duration::ZERO);
        let sibling = file_at(dir.path(), "sibling", old);
        assert_eq!(
            newest_runner(Some(&stat), Some(&sibling)),
            Some(stat.clone())
        );
        let stat_old = file_at(dir.path(), "static-old", old * 2);
        assert_eq!(
            newest_runner(Some(&stat_old), Some(&sibling)),
            Some(sibling.clone())
        );
        let missing = dir.path().join("missing");
        assert_eq!(newest_runner(Some(&missing), Some(&sibling)), Some(sibling));
        assert_eq!(newest_runner(Some(&stat), Some(&missing)), Some(stat));
        assert_eq!(newest_runner(None, Some(&missing)), None);
        assert_eq!(
            find_runner(Some(missing.clone()), None).unwrap(),
            missing,
            "the flag wins, as given"
        );
    }
}
