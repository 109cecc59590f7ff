//! The Cronium server: opens the store, bootstraps the first admin, and runs the HTTP API, the
//! scheduler, the embedded agent and the background loops until shutdown.
//!
//! `main` only parses flags and calls [`serve`]; the listener and the shutdown signal are passed
//! in so tests bind port 0 and stop the server when they like.

pub mod agent;
pub mod api;
pub mod auth;
pub mod authz;
pub mod background;
pub mod data_dir;
pub mod notify;
pub mod scheduler;
pub mod signature;
pub mod state;
pub mod tls;
pub mod ui;
pub mod usecases;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::agent::queue::StoreQueue;
use axum::serve::ListenerExt;
use cronium_agent::{Agent, AgentConfig};
use cronium_core::clock::{now_ms, SystemClock};
use cronium_core::crypto::SecretBox;
use cronium_core::logbus::LogBus;
use cronium_core::metrics::Metrics;
use cronium_store::Store;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    /// `sqlite:...` or `postgres://...`; default: `cronium.db` in the data directory.
    pub database_url: Option<String>,
    /// The `cronium-runner` binary.
    pub runner_path: PathBuf,
    /// `CRONIUM_ADMIN_TOKEN`: the first admin token, when set on first start.
    pub admin_token: Option<String>,
    /// `CRONIUM_ADMIN_PASSWORD`: the first admin's password, when set on first start.
    pub admin_password: Option<String>,
    /// `CRONIUM_ENCRYPTION_KEY`.
    pub encryption_key: Option<String>,
    /// Run an agent inside the server (default true). `--no-agent`: this server claims no jobs
    /// (nor recovers a crashed server's: that is the agent's).
    pub embedded_agent: bool,
    /// Run the scheduler (default true). `--no-scheduler`: this server never takes the
    /// scheduler lease, so it fires no schedule.
    pub scheduler: bool,
    pub agent_concurrency: usize,
    /// How long a job claim stays valid without a heartbeat; a crashed agent's jobs are
    /// recovered after this.
    pub lease: Duration,
    pub max_output_bytes: u64,
    /// Remove cached payloads unused for this long.
    pub payload_max_age: Duration,
    /// `--retain`: how long finished jobs are kept unless their event says otherwise.
    pub retain: cronium_core::spec::Retain,
    /// `--audit-retain`: how long audit log entries are kept.
    pub audit_retain: cronium_core::spec::Retain,
    /// Time between retention sweeps.
    pub retention_interval: Duration,
    /// A statically linked runner for containers and SSH servers (the local one may be dynamic).
    /// None: `runner_path` is used everywhere.
    pub static_runner: Option<PathBuf>,
    /// Use the Docker engine for the container target (when reachable).
    pub docker: bool,
    /// Container settings: default images per language, default and maximum limits.
    pub container: cronium_docker::DockerConfig,
    /// SSH pool and deployment settings.
    pub ssh: cronium_ssh::SshConfig,
    /// Most servers one job runs on at once.
    pub fanout_concurrency: usize,
    /// Where local runs get their private working directories (None: the system temp dir).
    pub work_dir: Option<PathBuf>,
    /// Interpreter binaries for local runs instead of the ones found on `PATH`.
    pub interpreters: std::collections::BTreeMap<cronium_protocol::Interpreter, String>,
    /// `--run-as`: the user local runs execute as (None: `cronium-run` when root, else ourselves).
    pub run_as: Option<String>,
    /// `--pass-env`: variables of the server's environment that local runs get.
    pub pass_env: Vec<String>,
    /// Web UI sessions and cookies.
    pub ui: ui::UiConfig,
    /// `--helpers`: the helpers mode of events and nodes that choose none.
    pub helpers: cronium_protocol::HelperMode,
    /// `--public-url`: the base of links in notifications and of hook URLs (None: the listen
    /// address).
    pub public_url: Option<String>,
    /// `--tls-cert` / `--tls-key`: serve HTTPS with this certificate chain and key (PEM).
    pub tls: Option<tls::TlsFiles>,
    /// `--health-*`: the health checks of SSH servers and the thresholds that judge them.
    pub health: background::health::HealthConfig,
}

impl ServerConfig {
    pub fn new(data_dir: PathBuf, runner_path: PathBuf) -> Self {
        ServerConfig {
            data_dir,
            database_url: None,
            runner_path,
            admin_token: None,
            admin_password: None,
            encryption_key: None,
            embedded_agent: true,
            scheduler: true,
            agent_concurrency: 16,
            lease: Duration::from_secs(30),
            max_output_bytes: cronium_protocol::DEFAULT_MAX_OUTPUT_BYTES,
            payload_max_age: Duration::from_secs(7 * 24 * 3600),
            retain: background::retention::DEFAULT_RETAIN,
            audit_retain: background::retention::DEFAULT_AUDIT_RETAIN,
            retention_interval: background::retention::DEFAULT_INTERVAL,
            static_runner: None,
            docker: true,
            container: cronium_docker::DockerConfig::new(PathBuf::new()),
            ssh: cronium_ssh::SshConfig::default(),
            fanout_concurrency: 256,
            work_dir: None,
            interpreters: Default::default(),
            run_as: None,
            pass_env: Vec::new(),
            ui: ui::UiConfig::default(),
            helpers: cronium_protocol::HelperMode::Bundled,
            public_url: None,
            tls: None,
            health: Default::default(),
        }
    }

    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite:{}", self.data_dir.join("cronium.db").display()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("database: {0}")]
    Store(#[from] cronium_store::StoreError),
    #[error("encryption key: {0}")]
    Crypto(#[from] cronium_core::crypto::CryptoError),
    #[error("runner binary not found at {0} (build it with `cargo build -p cronium-runner` or set --runner)")]
    Runner(String),
    #[error("first start: {0}")]
    Bootstrap(String),
    #[error(transparent)]
    Isolation(#[from] cronium_agent::isolation::IsolationError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// What the first start created, to be shown once.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    pub username: String,
    /// None when it came from CRONIUM_ADMIN_PASSWORD.
    pub password: Option<String>,
    /// None when it came from CRONIUM_ADMIN_TOKEN.
    pub token: Option<String>,
}

/// Creates the admin account and its first token when the database has no user yet.
pub async fn bootstrap(
    store: &Store,
    config: &ServerConfig,
) -> Result<Option<Bootstrap>, ServeError> {
    if store.count_users().await? > 0 {
        return Ok(None);
    }
    let (password, shown_password) = match &config.admin_password {
        Some(p) if !p.is_empty() => (p.clone(), None),
        _ => {
            let p = auth::new_password();
            (p.clone(), Some(p))
        }
    };
    let (token, shown_token) = match config.admin_token.as_ref().filter(|t| !t.trim().is_empty()) {
        Some(t) if t.trim().len() >= 16 => (t.trim().to_string(), None),
        Some(_) => {
            return Err(ServeError::Bootstrap(
                "CRONIUM_ADMIN_TOKEN must be at least 16 characters".into(),
            ))
        }
        None => {
            let t = auth::new_token();
            (t.clone(), Some(t))
        }
    };
    let hash = auth::hash_password(&password).map_err(ServeError::Bootstrap)?;
    let now = now_ms();
    let system = usecases::Actor::system();
    let user = store
        .create_user("admin", &hash, cronium_model::Role::Admin, now, |u| {
            usecases::audit::entry(
                &system,
                "user.add",
                "user admin",
                None,
                Some(usecases::users::audit_json(u)),
                "ok",
            )
        })
        .await?;
    store
        .create_token(
            &cronium_store::NewToken {
                name: "admin (first start)",
                token_hash: &auth::hash_token(&token),
                user_id: user.id,
                role: None,
                expires_at: None,
            },
            now,
            |t| {
                usecases::audit::entry(
                    &system,
                    "token.create",
                    format!("token {}", t.id),
                    None,
                    Some(usecases::tokens::audit_json(t)),
                    "ok",
                )
            },
        )
        .await?;
    Ok(Some(Bootstrap {
        username: "admin".into(),
        password: shown_password,
        token: shown_token,
    }))
}

/// A started server.
pub struct Running {
    pub state: AppState,
    pub agent: Option<Agent>,
    pub bootstrap: Option<Bootstrap>,
    /// The SSH executor's contacts after runs, for the health loop.
    pub health_contacts: Option<tokio::sync::mpsc::Receiver<cronium_ssh::Contact>>,
    /// On PostgreSQL: the relay of the log bus's wake-ups to the other server replicas, and the
    /// database URL its listener connects to.
    pub replicas: Option<(Arc<background::replicas::PgRelay>, String)>,
}

/// Opens the store and prepares everything [`serve`] runs.
pub async fn prepare(config: &ServerConfig) -> Result<Running, ServeError> {
    let run_umask = data_dir::make_private_by_default();
    let data_dir_err = |source| ServeError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    };
    let tightened = data_dir::secure(&config.data_dir).map_err(data_dir_err)?;
    if !tightened.is_empty() {
        tracing::warn!(dir = %config.data_dir.display(), paths = ?tightened, "the data directory was readable by others: made it 0700 and its files 0600");
    }
    if !config.runner_path.is_file() {
        return Err(ServeError::Runner(config.runner_path.display().to_string()));
    }
    // A certificate or key that cannot serve is refused before anything starts.
    if let Some(files) = &config.tls {
        tls::acceptor(files)?;
    }
    let database_url = config.database_url();
    let sqlite_file = data_dir::sqlite_file(&database_url);
    if let Some(file) = &sqlite_file {
        data_dir::precreate_sqlite(file).map_err(data_dir_err)?;
    }
    // What local runs must not reach: the data directory, and an SQLite database kept elsewhere.
    let mut private_paths = vec![std::fs::canonicalize(&config.data_dir).map_err(data_dir_err)?];
    if let Some(file) = sqlite_file.and_then(|f| std::fs::canonicalize(f).ok()) {
        if !file.starts_with(&private_paths[0]) {
            for suffix in ["", "-wal", "-shm"] {
                let mut p = file.clone().into_os_string();
                p.push(suffix);
                private_paths.push(p.into());
            }
        }
    }
    let run_user = match config.embedded_agent {
        true => {
            cronium_agent::isolation::check_pass_env(&config.pass_env)?;
            cronium_agent::isolation::choose_run_user(config.run_as.as_deref())?
        }
        false => None,
    };
    let store = Store::open(&database_url).await?;
    let secrets = Arc::new(SecretBox::load(
        config.encryption_key.as_deref(),
        &config.data_dir,
    )?);
    let bootstrap = bootstrap(&store, config).await?;
    // Events written before workflows existed get their job policy, or their nodes fail.
    let backfilled = background::workflows::backfill_event_policies(&store).await?;
    if backfilled > 0 {
        tracing::info!(
            events = backfilled,
            "job policy written for events stored without one"
        );
    }
    let bus = Arc::new(LogBus::new());
    let replicas = store.can_notify().then(|| {
        let relay = Arc::new(background::replicas::PgRelay::new());
        bus.set_relay(relay.clone());
        (relay, database_url.clone())
    });
    let metrics = Arc::new(Metrics::new());
    let remote_runner = config
        .static_runner
        .clone()
        .unwrap_or_else(|| config.runner_path.clone());
    let mut transports = transports(config, &remote_runner).await;
    if let Some(ssh) = &transports.ssh {
        register_artifacts(&store, ssh).await;
        usecases::runner_versions::load_added(&store, ssh, &config.data_dir).await;
    }
    // A rollout is driven by the server that started it: after a restart nothing drives it.
    usecases::runner_versions::fail_interrupted(&store).await;
    let health_contacts = transports
        .ssh
        .as_ref()
        .and_then(background::health::observe);
    transports.runtime = Some(Arc::new(crate::agent::runtime::StoreRuntime {
        store: store.clone(),
        secrets: secrets.clone(),
    }));
    let agent = config.embedded_agent.then(|| {
        let mut ac = AgentConfig::new(config.runner_path.clone(), config.data_dir.join("payloads"));
        ac.concurrency = config.agent_concurrency;
        ac.lease = config.lease;
        ac.fanout_concurrency = config.fanout_concurrency;
        ac.work_base = config.work_dir.clone();
        ac.interpreters = config.interpreters.clone();
        ac.max_output_bytes = config.max_output_bytes;
        ac.run_user = run_user;
        ac.pass_env = config.pass_env.clone();
        ac.private_paths = private_paths;
        ac.run_umask = Some(run_umask);
        ac.helpers = config.helpers;
        ac.health_thresholds = config.health.effective_thresholds();
        let queue = Arc::new(StoreQueue {
            store: store.clone(),
            secrets: secrets.clone(),
            claimant: crate::agent::registry::embedded_claimant(transports.docker.is_some()),
        });
        Agent::new(ac, queue, bus.clone(), metrics.clone(), transports.clone())
    });
    let retention = Arc::new(background::retention::Retention::new(
        store.clone(),
        background::retention::RetentionConfig {
            retain: config.retain,
            audit_retain: config.audit_retain,
            payload_dir: config.data_dir.join("payloads"),
            payload_max_age: config.payload_max_age,
            work_dir: config.work_dir.clone(),
            limits: Default::default(),
        },
        &metrics,
    ));
    let agent_wake = agent
        .as_ref()
        .map_or_else(|| Arc::new(Notify::new()), |a| a.waker());
    // Cookies are Secure whenever this server itself speaks TLS.
    let mut ui_config = config.ui.clone();
    ui_config.secure_cookies |= config.tls.is_some();
    let state = AppState {
        store,
        secrets,
        bus,
        metrics,
        agent_wake,
        scheduler_wake: Arc::new(Notify::new()),
        data_dir: config.data_dir.clone(),
        ssh: transports.ssh,
        docker: transports.docker,
        retention,
        ui: Arc::new(ui_config),
        hooks: Arc::new(notify::Hub::new(config.public_url.clone())),
        health: Arc::new(config.health.effective_thresholds()),
        stopping: CancellationToken::new(),
        agent_tokens: Arc::default(),
    };
    Ok(Running {
        state,
        agent,
        bootstrap,
        health_contacts,
        replicas,
    })
}

/// Registers the runners the SSH transport deploys in the artifact table (`cronium runner
/// list`): one row per build, refreshed at every start.
async fn register_artifacts(store: &Store, ssh: &cronium_ssh::SshExecutor) {
    let now = cronium_core::clock::now_ms();
    for a in ssh.runners() {
        let row = cronium_store::NewArtifact {
            version: a.version.clone(),
            os: a.platform.os.clone(),
            arch: a.platform.arch.clone(),
            sha256: a.sha256.clone(),
            size: i64::try_from(a.size).unwrap_or(i64::MAX),
            path: a.path.display().to_string(),
        };
        if let Err(e) = store.register_artifact(&row, now).await {
            tracing::warn!(path = %row.path, error = %e, "registering a runner artifact");
        }
    }
}

/// The SSH and container transports. Neither is fatal when missing: a server without Docker
/// still runs local and SSH jobs, and says why container jobs fail.
async fn transports(
    config: &ServerConfig,
    remote_runner: &std::path::Path,
) -> cronium_agent::Transports {
    let mut t = cronium_agent::Transports::default();
    // The configured runner and those for other platforms beside it (`linux-*/cronium-runner`).
    let (artifacts, problems) = cronium_ssh::RunnerArtifact::discover(remote_runner).await;
    for p in &problems {
        tracing::warn!(problem = %p, "a runner artifact was left out");
    }
    if artifacts.iter().any(|a| a.path == remote_runner) {
        for a in &artifacts {
            tracing::info!(platform = %a.platform, version = %a.version, path = %a.path.display(), "runner artifact");
        }
        t.ssh = Some(cronium_ssh::SshExecutor::with_runners(
            config.ssh.clone(),
            artifacts,
        ));
    } else {
        tracing::warn!("SSH targets unavailable: the runner binary cannot be read");
    }
    if config.docker {
        let mut dc = config.container.clone();
        dc.runner_path = remote_runner.to_path_buf();
        match cronium_docker::DockerExecutor::connect(dc).await {
            Ok(d) => t.docker = Some(Arc::new(d)),
            Err(e) => tracing::warn!(error = %e, "container targets unavailable"),
        }
    }
    t
}

/// Serves the API on `listener` and runs the scheduler, the agent and the background loops
/// (see [`background`]) until `shutdown`.
pub async fn serve(
    running: Running,
    config: &ServerConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let Running {
        state,
        agent,
        health_contacts,
        replicas,
        ..
    } = running;
    // The agent's worker id is already unique to this process; reusing it lets an operator match
    // the lock row to the server.
    let holder = agent
        .as_ref()
        .map_or_else(scheduler::new_holder_id, |a| a.worker_id().to_string());
    let mut tasks = Vec::new();
    {
        let (stopping, shutdown) = (state.stopping.clone(), shutdown.clone());
        tasks.push(tokio::spawn(async move {
            shutdown.cancelled().await;
            stopping.cancel();
        }));
    }
    let deps = scheduler::Deps {
        store: state.store.clone(),
        metrics: state.metrics.clone(),
        agent_wake: state.agent_wake.clone(),
        scheduler_wake: state.scheduler_wake.clone(),
        clock: Arc::new(SystemClock),
        bus: state.bus.clone(),
    };
    if config.scheduler {
        tasks.push(tokio::spawn(scheduler::run(deps, holder, shutdown.clone())));
    } else {
        tracing::info!("--no-scheduler: this server fires no schedules");
    }
    if let Some((relay, url)) = replicas {
        tasks.push(tokio::spawn(background::replicas::run_listener(
            state.bus.clone(),
            state.agent_wake.clone(),
            url,
            relay.origin().to_string(),
            shutdown.clone(),
        )));
        tasks.push(tokio::spawn(background::replicas::run_sender(
            relay,
            state.store.clone(),
            shutdown.clone(),
        )));
    }
    if let Some(agent) = agent {
        tasks.push(tokio::spawn(crate::agent::registry::embedded(
            state.store.clone(),
            crate::agent::registry::Embedded {
                worker: agent.worker_id().to_string(),
                concurrency: config.agent_concurrency,
                container: state.docker.is_some(),
            },
            shutdown.clone(),
        )));
        let s = shutdown.clone();
        tasks.push(tokio::spawn(async move { agent.run(s).await }));
    }
    tasks.push(tokio::spawn(background::retention::run(
        state.retention.clone(),
        config.retention_interval,
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(background::workflows::run(
        state.store.clone(),
        Arc::new(SystemClock),
        shutdown.clone(),
    )));
    if let Some(docker) = state.docker.clone() {
        tasks.push(tokio::spawn(background::reaper::run(
            state.store.clone(),
            docker,
            shutdown.clone(),
        )));
    }
    if let Some(ssh) = state.ssh.clone() {
        tasks.push(tokio::spawn(background::health::run(
            state.clone(),
            ssh,
            config.health.clone(),
            health_contacts,
            shutdown.clone(),
        )));
    }
    tasks.push(tokio::spawn(background::notify::run(
        state.clone(),
        shutdown.clone(),
    )));
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    if let Ok(addr) = listener.local_addr() {
        state.hooks.set_listen_url(format!("{scheme}://{addr}"));
    }
    let app = api::router(state);
    let s = shutdown.clone();
    match &config.tls {
        Some(files) => {
            let acceptor = tls::acceptor(files)?;
            let listener = tls::TlsListener::new(listener, acceptor, shutdown.clone());
            let app = app
                .layer(axum::middleware::from_fn(tls::peer_address))
                .into_make_service_with_connect_info::<tls::TlsPeer>();
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { s.cancelled().await })
                .await?;
        }
        None => {
            // The client's address: the failed-login delay counts per address too.
            let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
            // Without TCP_NODELAY, Nagle's algorithm and delayed ACKs hold small responses (an
            // SSE log line, a job status) back for ~40 ms on kept-alive connections.
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { s.cancelled().await })
                .await?;
        }
    }
    shutdown.cancel();
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(15), t).await;
    }
    Ok(())
}
