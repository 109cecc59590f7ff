//! Command-line grammar (PRODUCT.md "Command line").

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "cronium", version, about = "Run scripts and HTTP requests on a schedule, locally, in containers or over SSH")]
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
    Serve(ServeArgs),
    /// Manage events.
    #[command(subcommand)]
    Event(EventCmd),
    /// Inspect and cancel jobs.
    #[command(subcommand)]
    Job(JobCmd),
    /// Read and write variables.
    #[command(subcommand)]
    Var(VarCmd),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Run a script locally with the runtime helpers, without a server.
    Run(RunArgs),
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
    /// The cronium-runner binary (default: next to this binary, then PATH).
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
    /// Do not run an agent in this server.
    #[arg(long)]
    pub no_agent: bool,
}

#[derive(Subcommand, Debug)]
pub enum EventCmd {
    /// Create or update an event from a YAML file.
    Apply {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
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
pub enum JobCmd {
    /// List jobs, newest first.
    List {
        #[arg(long)]
        event: Option<String>,
        #[arg(long)]
        status: Option<String>,
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
        #[command(flatten)]
        client: ClientOpts,
    },
    /// List tokens.
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
    /// The cronium-runner binary (default: next to this binary, then PATH).
    #[arg(long, env = "CRONIUM_RUNNER")]
    pub runner: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}
