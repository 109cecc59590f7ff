//! Command-line grammar (PRODUCT.md "Command line").

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use cronium_model::JobStatus;

#[derive(Parser, Debug)]
#[command(
    name = "cronium",
    version,
    about = "Run scripts and HTTP requests on a schedule, locally, in containers or over SSH"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct ClientOpts {
    /// Server URL.
    #[arg(long, env = "CRONIUM_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API token.
    #[arg(long, env = "CRONIUM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server: web API, scheduler and an embedded agent.
    Serve(Box<ServeArgs>),
    /// Manage events.
    #[command(subcommand)]
    Event(EventCmd),
    /// Inspect and cancel jobs.
    #[command(subcommand)]
    Job(JobCmd),
    /// Manage and run workflows (graphs of events).
    #[command(subcommand)]
    Workflow(WorkflowCmd),
    /// Read and write variables.
    #[command(subcommand)]
    Var(VarCmd),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Manage users and their roles (admin, operator, viewer).
    #[command(subcommand)]
    User(UserCmd),
    /// Read the audit log: every change, run, cancel, login and failed login.
    Audit(AuditArgs),
    /// Manage SSH servers.
    #[command(subcommand)]
    Server(ServerCmd),
    /// The runner binaries deployed to SSH servers, per OS and architecture.
    #[command(subcommand)]
    Runner(RunnerCmd),
    /// Manage notification channels (e-mail, Slack, Discord, signed webhook).
    #[command(subcommand)]
    Channel(ChannelCmd),
    /// Run an agent on this machine against a server over HTTP(S) (`cronium agent --url URL
    /// --token TOKEN`), or list agents and manage agent tokens.
    Agent(Box<AgentArgs>),
    /// Run a script locally with the runtime helpers, without a server.
    Run(RunArgs),
    /// Remove now what is past its retention: old jobs with their executions and logs, unused
    /// cached payloads, work directories of killed runs (the server also does it every few
    /// minutes).
    Prune(PruneArgs),
    /// Print a shell completion script (e.g. `cronium completions bash > /etc/bash_completion.d/cronium`).
    Completions {
        /// bash, zsh or fish (elvish and powershell too).
        shell: clap_complete::Shell,
    },
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (loopback by default).
    #[arg(long, env = "CRONIUM_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Data directory (database, payload cache, encryption key).
    #[arg(long, env = "CRONIUM_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL: sqlite:PATH or postgres://... (default: SQLite in the data directory).
    #[arg(long, env = "CRONIUM_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// The cronium-runner binary for local runs (default: the static runner when it is at least
    /// as new as the one next to this binary, else that one, then PATH).
    #[arg(long, env = "CRONIUM_RUNNER")]
    pub runner: Option<PathBuf>,
    /// Jobs the embedded agent runs at once.
    #[arg(long, env = "CRONIUM_CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,
    /// Log bytes kept per execution (the rest is cut with a visible marker).
    #[arg(long, env = "CRONIUM_MAX_OUTPUT", default_value = "10m")]
    pub max_output: String,
    /// How long a job claim lasts without a heartbeat (a crashed agent's jobs are recovered after it).
    #[arg(long, env = "CRONIUM_LEASE", default_value = "30s")]
    pub lease: String,
    /// Where local runs get their private working directories. Default: /dev/shm/cronium (memory:
    /// no disk I/O for the short-lived unpacked payloads), else the system temp dir.
    #[arg(long, env = "CRONIUM_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
    /// The bash binary for local runs (default: found on PATH).
    #[arg(long, env = "CRONIUM_BASH")]
    pub bash: Option<PathBuf>,
    /// The Python binary for local runs (default: python3 on PATH, resolved through shims once).
    #[arg(long, env = "CRONIUM_PYTHON")]
    pub python: Option<PathBuf>,
    /// The Node.js binary for local runs (default: node on PATH).
    #[arg(long, env = "CRONIUM_NODE")]
    pub node: Option<PathBuf>,
    /// The user local runs execute as. Default when the server runs as root: `cronium-run`
    /// (created with useradd when missing); `root` runs scripts as root. A server that is not
    /// root runs them as itself.
    #[arg(long, env = "CRONIUM_RUN_AS")]
    pub run_as: Option<String>,
    /// A variable of the server's environment that local runs get (repeatable; the env form is
    /// comma-separated). Nothing else of the server's environment reaches scripts, and CRONIUM_*
    /// variables never do.
    #[arg(long = "pass-env", env = "CRONIUM_PASS_ENV", value_delimiter = ',')]
    pub pass_env: Vec<String>,
    /// How the runtime helpers of events (and workflow nodes) that do not choose reach their
    /// data: `bundled` (files in the run's directory, read back at the end) or `api` (live calls
    /// to the server over the run's own connection).
    #[arg(long, env = "CRONIUM_HELPERS", default_value = "bundled", value_parser = ["bundled", "api"])]
    pub helpers: String,
    /// Do not run an agent in this server: it claims no jobs (API and web UI only; another
    /// server's agent runs them).
    #[arg(long)]
    pub no_agent: bool,
    /// Do not run the scheduler in this server: it never takes the scheduler lease, so it fires
    /// no schedules (another server on the same PostgreSQL must run one).
    #[arg(long)]
    pub no_scheduler: bool,
    /// A statically linked runner for containers and SSH servers (scripts/build-runner.sh builds
    /// it). Default: the one found next to this binary at target/runner/cronium-runner, else --runner.
    #[arg(long, env = "CRONIUM_STATIC_RUNNER")]
    pub static_runner: Option<PathBuf>,
    /// Do not use the Docker engine (container targets then fail with a clear error).
    #[arg(long)]
    pub no_docker: bool,
    /// Image for bash scripts in containers.
    #[arg(long, env = "CRONIUM_IMAGE_BASH", default_value = "cronium/bash:1")]
    pub image_bash: String,
    /// Image for Python scripts in containers.
    #[arg(long, env = "CRONIUM_IMAGE_PYTHON", default_value = "cronium/python:1")]
    pub image_python: String,
    /// Image for Node.js scripts in containers.
    #[arg(long, env = "CRONIUM_IMAGE_NODE", default_value = "cronium/node:1")]
    pub image_node: String,
    /// Default CPU limit of a container (cores) when the event sets none.
    #[arg(long, env = "CRONIUM_CONTAINER_CPUS")]
    pub container_cpus: Option<f64>,
    /// Default memory limit of a container when the event sets none (e.g. 512m).
    #[arg(long, env = "CRONIUM_CONTAINER_MEMORY", default_value = "512m")]
    pub container_memory: String,
    /// Default process limit of a container when the event sets none.
    #[arg(long, env = "CRONIUM_CONTAINER_PIDS", default_value_t = 256)]
    pub container_pids: i64,
    /// Most CPU an event may ask for.
    #[arg(long, env = "CRONIUM_CONTAINER_MAX_CPUS")]
    pub container_max_cpus: Option<f64>,
    /// Most memory an event may ask for.
    #[arg(long, env = "CRONIUM_CONTAINER_MAX_MEMORY", default_value = "4g")]
    pub container_max_memory: String,
    /// Most processes an event may ask for.
    #[arg(long, env = "CRONIUM_CONTAINER_MAX_PIDS", default_value_t = 4096)]
    pub container_max_pids: i64,
    /// SSH connections kept per server.
    #[arg(long, env = "CRONIUM_SSH_POOL_SIZE", default_value_t = 10)]
    pub ssh_pool_size: usize,
    /// Idle SSH connections are closed after this.
    #[arg(long, env = "CRONIUM_SSH_IDLE_TIMEOUT", default_value = "5m")]
    pub ssh_idle_timeout: String,
    /// Where the runner is deployed on servers (relative to the login's home).
    #[arg(
        long,
        env = "CRONIUM_SSH_DEPLOY_DIR",
        default_value = "~/.cache/cronium"
    )]
    pub ssh_deploy_dir: String,
    /// Where runs get their private working directory on SSH servers (default: the runner's
    /// choice: $TMPDIR, else /dev/shm, else /tmp). Relative to the login's home unless absolute.
    #[arg(long, env = "CRONIUM_SSH_WORK_DIR")]
    pub ssh_work_dir: Option<String>,
    /// Most servers one job runs on at once (a target's `concurrency` may lower it for its own
    /// jobs). Like parallel-ssh, every server of a fleet of up to 256 starts at once; a larger
    /// fleet runs in waves of this size.
    #[arg(long, env = "CRONIUM_FANOUT_CONCURRENCY", default_value_t = 256)]
    pub fanout_concurrency: usize,
    /// How long finished jobs (with their executions and logs) are kept unless their event sets
    /// `retain`: e.g. 30d, 12h; `forever` (or 0) keeps everything.
    #[arg(long, env = "CRONIUM_RETAIN", default_value = "30d")]
    pub retain: String,
    /// How long audit log entries are kept: e.g. 365d; `forever` (or 0) keeps them all.
    #[arg(long, env = "CRONIUM_AUDIT_RETAIN", default_value = "365d")]
    pub audit_retain: String,
    /// Web UI: a login session unused for this long ends.
    #[arg(long, env = "CRONIUM_SESSION_IDLE", default_value = "12h")]
    pub session_idle: String,
    /// Web UI: a login session ends this long after the login, however active.
    #[arg(long, env = "CRONIUM_SESSION_LIFETIME", default_value = "7d")]
    pub session_lifetime: String,
    /// Web UI: mark cookies `Secure` (set it when users reach Cronium over HTTPS, through a
    /// TLS-terminating proxy; implied by --tls-cert).
    #[arg(long, env = "CRONIUM_SECURE_COOKIES")]
    pub secure_cookies: bool,
    /// Serve HTTPS with this certificate chain (PEM, leaf first); needs --tls-key.
    #[arg(long, env = "CRONIUM_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "CRONIUM_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The URL users reach this server at (links in notifications, webhook URLs), e.g.
    /// https://cronium.example.com. Default: the listen address.
    #[arg(long, env = "CRONIUM_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Time between health checks of every SSH server (`cronium-runner health` on a pooled
    /// connection); 0 disables them (servers are still checked after each run).
    #[arg(long, env = "CRONIUM_HEALTH_INTERVAL", default_value = "60s")]
    pub health_interval: String,
    /// Health checks kept per server.
    #[arg(long, env = "CRONIUM_HEALTH_KEEP", default_value_t = 20)]
    pub health_keep: i64,
    /// A server is `degraded` when its work or deploy directory has less free space than this:
    /// a percentage (5%) or a size (2g).
    #[arg(long, env = "CRONIUM_HEALTH_DISK_FREE_MIN", default_value = "5%")]
    pub health_disk_free_min: String,
    /// A server is `degraded` when less memory than this is available (5%, 256m).
    #[arg(
        long,
        env = "CRONIUM_HEALTH_MEMORY_AVAILABLE_MIN",
        default_value = "5%"
    )]
    pub health_memory_available_min: String,
    /// A server is `unreachable` after this many failed checks or connections in a row.
    #[arg(long, env = "CRONIUM_HEALTH_UNREACHABLE_AFTER", default_value_t = 3)]
    pub health_unreachable_after: u32,
    /// A server is `unreachable` when its last contact is older than this (default: three
    /// health intervals; 0 never, and never when the interval is 0).
    #[arg(long, env = "CRONIUM_HEALTH_STALE_AFTER")]
    pub health_stale_after: Option<String>,
    /// Time between retention sweeps (for tests).
    #[arg(
        long,
        env = "CRONIUM_RETENTION_INTERVAL",
        default_value = "5m",
        hide = true
    )]
    pub retention_interval: String,
}

#[derive(Subcommand, Debug)]
pub enum EventCmd {
    /// Create or update an event from a YAML file, or every *.yaml/*.yml/*.json of a
    /// directory in one transaction.
    Apply {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// With a directory: delete the events that are not in it.
        #[arg(long)]
        prune: bool,
        /// Only show what would be created, updated or deleted; nothing changes.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// List events.
    List {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Show an event.
    Show {
        name: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Delete an event (its jobs and logs are kept).
    Delete {
        name: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Show the event's webhook URL, and its secret the first time (`webhook: true` in its
    /// file enables it).
    Hook {
        name: String,
        /// Replace the secret with a new one, printed this once (the old one stops working).
        #[arg(long)]
        rotate: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Run an event now.
    Run {
        name: String,
        /// Input as JSON (default: the event's input).
        #[arg(long)]
        input: Option<String>,
        /// Stream the log and exit with the job's exit code.
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
}

#[derive(Subcommand, Debug)]
pub enum WorkflowCmd {
    /// Create or update a workflow from a YAML file, or every *.yaml/*.yml/*.json of a
    /// directory in one transaction.
    Apply {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// With a directory: delete the workflows that are not in it.
        #[arg(long)]
        prune: bool,
        /// Only show what would be created, updated or deleted; nothing changes.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// List workflows.
    List {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Show a workflow: its nodes, edges and versions.
    Show {
        name: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Show the workflow's webhook URL, and its secret the first time (`webhook: true` in its
    /// file enables it).
    Hook {
        name: String,
        /// Replace the secret with a new one, printed this once (the old one stops working).
        #[arg(long)]
        rotate: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Run a workflow now; prints the run's id.
    Run {
        name: String,
        /// Input as a JSON object (default: the workflow's input).
        #[arg(long)]
        input: Option<String>,
        /// Follow every node's log (prefixed by the node id) and exit non-zero unless the run
        /// succeeded (124 when it timed out).
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// List the runs of a workflow, newest first.
    Runs {
        name: String,
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Show a run with every node: status, job, output, reason.
    RunShow {
        run: i64,
        /// Say for each node why it ran, was skipped or still waits.
        #[arg(long)]
        explain: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Retry an ended run from its failure: failed and skipped nodes and what follows them run
    /// again; the nodes that succeeded keep their outputs. Prints the new run's id.
    Retry {
        run: i64,
        /// Follow the new run as `run --follow` does.
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Cancel a run (running node jobs are stopped).
    Cancel {
        run: i64,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Delete a workflow (its runs, jobs and logs are kept).
    Delete {
        name: String,
        #[command(flatten)]
        client: ClientOpts,
    },
}

#[derive(Subcommand, Debug)]
pub enum JobCmd {
    /// List jobs, newest first.
    List {
        #[arg(long)]
        event: Option<String>,
        /// Only jobs with this status (queued, running, succeeded, failed, timed_out,
        /// cancelled, partial).
        #[arg(long)]
        status: Option<JobStatus>,
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Show a job with its executions.
    Show {
        id: i64,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Print a job's log.
    Logs {
        id: i64,
        /// Keep streaming until the job ends; exit with its exit code.
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Cancel a queued or running job.
    Cancel {
        id: i64,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Run a job again as a new job with the same input: its event's current version on
    /// every server, or with --failed-only the same version on only the servers of a fan-out
    /// that did not succeed in its last attempt. Prints the new job's id.
    Retry {
        id: i64,
        /// Only the servers whose execution failed, timed out, was lost, cancelled or not run.
        #[arg(long)]
        failed_only: bool,
        /// Stream the new job's log and exit with its exit code.
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
}

#[derive(Subcommand, Debug)]
pub enum VarCmd {
    /// Print a variable's value (secret ones cannot be read back).
    Get {
        name: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Set a variable. VALUE is JSON when it parses as JSON, otherwise a string.
    Set {
        name: String,
        value: String,
        /// Encrypt at rest and never show again.
        #[arg(long)]
        secret: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// List variables.
    List {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Delete a variable.
    Delete {
        name: String,
        #[command(flatten)]
        client: ClientOpts,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Create a token; its value is printed once.
    Create {
        name: String,
        /// Narrow the token to this role (viewer, operator, admin; at most its user's).
        #[arg(long)]
        role: Option<cronium_model::Role>,
        /// The token stops working this long after now: 30d, 12h, 3600 (seconds).
        #[arg(long)]
        expires: Option<String>,
        /// The token's owner (admins only; default: the caller).
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// List tokens (yours; an admin sees everyone's) with owner, role, expiry and last use.
    List {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Revoke a token.
    Revoke {
        id: i64,
        #[command(flatten)]
        client: ClientOpts,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Add a user. The password comes from an environment variable (--password-env) or is
    /// asked for on the terminal (or read from stdin when it is not a terminal).
    Add {
        name: String,
        /// viewer, operator or admin.
        #[arg(long)]
        role: cronium_model::Role,
        /// The environment variable holding the password.
        #[arg(long)]
        password_env: Option<String>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// List users with their role, state and last login.
    List {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Change a user's role.
    SetRole {
        name: String,
        role: cronium_model::Role,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Disable a user: no login; its sessions and tokens stop working at once.
    Disable {
        name: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Enable a disabled user again.
    Enable {
        name: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Set a user's password (your own, or anyone's as an admin); the user's web sessions end.
    Passwd {
        name: String,
        /// The environment variable holding the password (default: asked for).
        #[arg(long)]
        password_env: Option<String>,
        #[command(flatten)]
        client: ClientOpts,
    },
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Only entries since this long ago (1h, 7d) or this instant (RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// Only entries by this user.
    #[arg(long)]
    pub actor: Option<String>,
    /// Only this action (job.run), or every action of a kind with a trailing dot (event.).
    #[arg(long)]
    pub action: Option<String>,
    /// At most this many entries, newest first (default 100).
    #[arg(long, default_value_t = 100)]
    pub limit: i64,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Subcommand, Debug)]
pub enum RunnerCmd {
    /// List the registered runners: OS, architecture, version, checksum, size, whether this
    /// server deploys it now, and where the file is.
    List {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Register another runner binary (a path on the Cronium server's machine; copied into its
    /// data directory). Its version is what `PATH --version` prints, else the
    /// `cronium-runner.json` manifest beside it.
    Add {
        path: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Pin a server or a tag to a runner version (a server's own pin beats its tags' pins; of
    /// two tag pins the most recently set wins; without a pin: the runner Cronium ships with).
    Pin {
        #[arg(long)]
        version: String,
        #[arg(long, conflicts_with = "tag", required_unless_present = "tag")]
        server: Option<String>,
        #[arg(long)]
        tag: Option<String>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Remove a server's or a tag's pin.
    Unpin {
        #[arg(long, conflicts_with = "tag", required_unless_present = "tag")]
        server: Option<String>,
        #[arg(long)]
        tag: Option<String>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// List the pins.
    Pins {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Roll a runner version out in batches and follow it: each batch is deployed and checked
    /// (`cronium-runner health` of the new binary) in parallel, then its servers are pinned to
    /// the version; a failed batch stops the rollout and its servers keep their previous
    /// version. Exits non-zero when the rollout failed.
    Rollout {
        #[arg(long)]
        version: String,
        /// Only the servers with this tag (default: every server).
        #[arg(long)]
        tag: Option<String>,
        /// Servers per batch: a count (`2`) or a share (`10%`).
        #[arg(long, default_value = "10%")]
        batch: String,
        /// Wait between batches.
        #[arg(long, default_value = "30s")]
        pause: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// List the rollouts, or show one with its servers.
    Rollouts {
        id: Option<i64>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Return each server a rollout upgraded to its previous version (still on the host;
    /// uploaded again when missing) and restore its pin. Default: the latest rollout (of
    /// `--tag`, when given).
    Rollback {
        rollout: Option<i64>,
        #[arg(long, conflicts_with = "rollout")]
        tag: Option<String>,
        #[command(flatten)]
        client: ClientOpts,
    },
}

#[derive(Subcommand, Debug)]
pub enum ServerCmd {
    /// Register a server.
    Add {
        name: String,
        #[arg(long)]
        host: String,
        #[arg(long, default_value_t = 22)]
        port: u16,
        #[arg(long, default_value = "root")]
        user: String,
        /// Private key file.
        #[arg(long, conflicts_with = "password_env")]
        key_file: Option<PathBuf>,
        /// Environment variable holding the key's passphrase.
        #[arg(long, requires = "key_file")]
        passphrase_env: Option<String>,
        /// Environment variable holding the password.
        #[arg(long)]
        password_env: Option<String>,
        /// The host key to trust ('ssh-ed25519 AAAA...'); pinned on first contact when absent.
        #[arg(long)]
        host_key: Option<String>,
        /// A tag (repeatable); events can target servers by tag.
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// List servers.
    List {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Show a server and its runner deployments.
    Show {
        name: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Connect and report reachability, authentication, host key, OS/arch and runner.
    Test {
        name: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Pre-deploy each server's runner version (its pin, else the default) in parallel and
    /// print a summary; exits non-zero when one failed. No names and no tag: every server.
    Deploy {
        names: Vec<String>,
        #[arg(long)]
        tag: Option<String>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Remove a server.
    Remove {
        name: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Replace a server's credential. The new one is tested first (a login and `true`, with
    /// the pinned host key checked) and stored only when that works; otherwise nothing changes.
    #[command(group(
        clap::ArgGroup::new("credential")
            .required(true)
            .args(["key_file", "password_env"])
    ))]
    SetKey {
        name: String,
        /// Private key file.
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// Environment variable holding the key's passphrase.
        #[arg(long, requires = "key_file")]
        passphrase_env: Option<String>,
        /// Environment variable holding the password.
        #[arg(long)]
        password_env: Option<String>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Trust the changed host key a server presented (after checking it).
    AcceptKey {
        name: String,
        /// The key to trust instead of the one the server presented.
        #[arg(long)]
        host_key: Option<String>,
        #[command(flatten)]
        client: ClientOpts,
    },
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Only show what would be removed; nothing changes.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Script file (.sh, .py, .js).
    pub file: PathBuf,
    /// Input as JSON.
    #[arg(long)]
    pub input: Option<String>,
    /// bash | python | node (default: from the file extension).
    #[arg(long = "type")]
    pub kind: Option<String>,
    /// Timeout.
    #[arg(long, default_value = "1h")]
    pub timeout: String,
    /// A variable visible to the script, NAME=VALUE (VALUE as JSON when it parses). Repeatable.
    #[arg(long = "var")]
    pub vars: Vec<String>,
    /// The cronium-runner binary for local runs (default: the static runner when it is at least
    /// as new as the one next to this binary, else that one, then PATH).
    #[arg(long, env = "CRONIUM_RUNNER")]
    pub runner: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum ChannelCmd {
    /// Add a channel. Secrets (webhook URLs, the SMTP password, an HMAC secret) are read from
    /// the environment variable named by the `*-env` flags, so they stay out of `ps`; they are
    /// stored encrypted and never shown back.
    Add(Box<ChannelAddArgs>),
    /// List channels with their delivery state (last success, last error, pending).
    List {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Show a channel.
    Show {
        name: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Remove a channel (refused while an event or workflow notifies it).
    Remove {
        name: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Send a test message now; exits non-zero when it is not delivered.
    Test {
        name: String,
        #[command(flatten)]
        client: ClientOpts,
    },
}

#[derive(Args, Debug)]
pub struct ChannelAddArgs {
    pub name: String,
    /// email | slack | discord | webhook
    #[arg(long = "type", value_parser = ["email", "slack", "discord", "webhook"])]
    pub kind: String,
    /// The incoming-webhook URL (slack, discord) or the URL to POST to (webhook).
    #[arg(long, conflicts_with = "webhook_url_env")]
    pub webhook_url: Option<String>,
    /// An environment variable holding that URL (keeps a Slack or Discord URL, a secret, out
    /// of `ps`).
    #[arg(long)]
    pub webhook_url_env: Option<String>,
    /// webhook: an environment variable holding the HMAC secret (default: one is made and
    /// printed once).
    #[arg(long)]
    pub secret_env: Option<String>,
    /// email: the SMTP server's host.
    #[arg(long)]
    pub smtp_host: Option<String>,
    /// email: its port (default 587 with starttls, 465 with tls, 25 with none).
    #[arg(long)]
    pub smtp_port: Option<u16>,
    /// email: starttls (default, required), tls, or none (a local relay only).
    #[arg(long, value_parser = ["starttls", "tls", "none"])]
    pub smtp_tls: Option<String>,
    /// email: the login.
    #[arg(long)]
    pub smtp_user: Option<String>,
    /// email: an environment variable holding the password.
    #[arg(long, requires = "smtp_user")]
    pub smtp_password_env: Option<String>,
    /// email: a PEM file (on the server) with the CA to trust for the SMTP server.
    #[arg(long)]
    pub smtp_ca_file: Option<String>,
    /// email: the sender, e.g. 'Cronium <cronium@example.com>'.
    #[arg(long)]
    pub from: Option<String>,
    /// email: a recipient (repeatable).
    #[arg(long)]
    pub to: Vec<String>,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentArgs {
    #[command(subcommand)]
    pub cmd: Option<AgentCmd>,
    #[command(flatten)]
    pub run: AgentRunArgs,
}

/// `cronium agent` itself: claims jobs from the server's agent API and runs them here.
#[derive(Args, Debug)]
pub struct AgentRunArgs {
    /// The server's URL.
    #[arg(long, env = "CRONIUM_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// An agent token (`cronium agent token create NAME`); API tokens are refused.
    #[arg(long, env = "CRONIUM_AGENT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// This agent's name in `cronium agent list` (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// A tag (repeatable).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Jobs run at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// How long a claim stays valid without a heartbeat (sent every third of it): a killed
    /// agent's jobs run again elsewhere after it, and an agent cut off for longer loses its jobs
    /// to others. Raise it for flaky links (e.g. 60s).
    #[arg(long, default_value = "10s")]
    pub lease: String,
    /// Where payloads are cached and writes are buffered while the server is unreachable
    /// (default `$HOME/.cronium-agent`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Most bytes of log lines and results buffered on disk (under `--data-dir`/spool) while
    /// the server is unreachable, e.g. 256MiB; lines beyond it are dropped and counted. 0: no
    /// buffer (writes are retried for a while, then the attempt fails).
    #[arg(long, default_value = "256MiB")]
    pub buffer_max: String,
    /// The `cronium-runner` binary for local runs (default: next to this binary).
    #[arg(long)]
    pub runner: Option<PathBuf>,
    /// On SIGTERM, how long running jobs may take to finish before the agent exits anyway.
    #[arg(long, default_value = "10m")]
    pub drain_timeout: String,
    /// The user local runs execute as (default: `cronium-run` when the agent is root, else the
    /// agent's own user), as with `cronium serve --run-as`.
    #[arg(long)]
    pub run_as: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum AgentCmd {
    /// Every agent (remote and embedded): version, tags, state, last heartbeat, running jobs.
    List {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Agent tokens: good for the agent API only.
    #[command(subcommand)]
    Token(AgentTokenCmd),
}

#[derive(Subcommand, Debug)]
pub enum AgentTokenCmd {
    /// Create an agent token; its value is printed once.
    Create {
        name: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    List {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Revoke an agent token: agents using it are refused from their next call.
    Revoke {
        name: String,
        #[command(flatten)]
        client: ClientOpts,
    },
}
