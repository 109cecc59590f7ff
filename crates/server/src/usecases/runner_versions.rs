//! Runner versions on the SSH servers: register another runner binary, pin a server or a tag to
//! a version, roll a version out batch by batch (stopping at the first failed batch, whose
//! servers keep their previous version), roll a rollout back, pre-deploy servers' wanted
//! versions (`cronium server deploy`), and remove the versions a host no longer needs.
//!
//! Which version a server runs is its pin, else its tags' newest pin, else the default (the
//! runner this Cronium ships with): [`cronium_store::wanted_pin`]. A rollout's state is in the
//! store (`runner_rollouts`), so the CLI, a restarted server and an audit see it; it is driven
//! by a task of the server that started it. Not for running anything on the hosts beyond the
//! runner's own `health` (the executor's `deploy_version`, `check_runner`, `remove_old_runners`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cronium_core::clock::now_ms;
use cronium_ssh::{
    DeployOutcome, DeploymentRecord, Platform, RunnerArtifact, ServerConfig, SshExecutor,
};
use cronium_store::{
    wanted_pin, ArtifactRow, NewArtifact, NewDeployment, NewRollout, NewRolloutServer, PinRow,
    PinScope, RolloutRow, RolloutServerRow, RunnerState, ServerRow,
};
use futures::stream::{self, StreamExt};

use super::{audit, servers, Actor, UseCaseError, UseCaseResult};
use crate::state::AppState;

/// Servers deployed at once by `server deploy` (the fan-out's default concurrency).
pub const DEPLOY_CONCURRENCY: usize = 50;

/// The largest file `runner add` reads (the runner itself is at most 3 MB).
const MAX_RUNNER_BYTES: u64 = 64 * 1024 * 1024;

/// Where `runner add` keeps the binaries it registers, under the data directory.
const ADDED_DIR: &str = "runners";

fn ssh(state: &AppState) -> UseCaseResult<&SshExecutor> {
    state.ssh.as_ref().ok_or_else(|| {
        UseCaseError::invalid(
            "server",
            "the SSH transport is not available on this server",
        )
    })
}

/// Which pin gives a server its version, in words: `server pin`, `tag pin (web)`, `default`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub version: String,
    pub source: String,
}

/// The version `row` should run and why.
pub fn wanted(ssh: &SshExecutor, pins: &[PinRow], row: &ServerRow) -> Wanted {
    match wanted_pin(pins, row.id, &row.tags) {
        Some(p) => Wanted {
            version: p.version.clone(),
            source: match &p.scope {
                PinScope::Server(_) => "server pin".into(),
                PinScope::Tag(t) => format!("tag pin ({t})"),
            },
        },
        None => Wanted {
            version: ssh.default_version().to_string(),
            source: "default".into(),
        },
    }
}

/// The platform of a stored server, when detected.
fn platform_of(row: &ServerRow) -> Option<Platform> {
    row.platform
        .as_ref()
        .and_then(|p| Platform::new(&p.os, &p.arch))
}

// ---- runner add ----------------------------------------------------------------------------

/// Registers another runner binary: `path` on this server's file system. Its version comes
/// from `PATH --version` when it runs here, else from the `cronium-runner.json` manifest beside
/// it (whose sha256 must be the file's). The file is copied into the data directory
/// (`runners/SHA8/cronium-runner`, 0600 in a 0700 directory) so that it stays as registered;
/// the copy's checksum is checked. Recorded as `runner.add`.
pub async fn add_artifact(
    state: &AppState,
    actor: &Actor,
    path: &str,
) -> UseCaseResult<ArtifactRow> {
    let result = add_unrecorded(state, path).await;
    audit::record(
        state,
        actor,
        "runner.add",
        format!("runner {}", path.chars().take(200).collect::<String>()),
        None,
        result,
        |a| {
            Some(serde_json::json!({
                "version": a.version, "os": a.os, "arch": a.arch, "sha256": a.sha256,
            }))
        },
    )
    .await
}

async fn add_unrecorded(state: &AppState, path: &str) -> UseCaseResult<ArtifactRow> {
    let ssh = ssh(state)?;
    let source = PathBuf::from(path.trim());
    if path.trim().is_empty() || !source.is_absolute() {
        return Err(UseCaseError::invalid(
            "path",
            "must be an absolute path on the Cronium server",
        ));
    }
    if !source.is_file() {
        return Err(UseCaseError::invalid(
            "path",
            format!("{} is not a file on the Cronium server", source.display()),
        ));
    }
    // A runner is a few MB; anything far larger (a device-like file under /proc) is not read.
    let size = std::fs::metadata(&source).map(|m| m.len()).unwrap_or(0);
    if size > MAX_RUNNER_BYTES {
        return Err(UseCaseError::invalid(
            "path",
            format!(
                "{} is {size} bytes: not a runner binary (at most {MAX_RUNNER_BYTES})",
                source.display()
            ),
        ));
    }
    let read = match RunnerArtifact::from_path(&source).await {
        Ok(a) => a,
        Err(run_err) => RunnerArtifact::from_path_with_manifest(&source)
            .await
            .map_err(|e| {
                UseCaseError::invalid(
                    "path",
                    format!(
                        "{}: cannot read its version ({run_err}; {e})",
                        source.display()
                    ),
                )
            })?,
    };
    let sha8: String = read.sha256.chars().take(8).collect();
    let dir = state
        .data_dir
        .join(ADDED_DIR)
        .join(format!("{}-{sha8}", read.version));
    let copy = dir.join("cronium-runner");
    copy_private(&source, &dir, &copy).map_err(|e| {
        UseCaseError::invalid(
            "path",
            format!(
                "cannot copy {} into {}: {e}",
                source.display(),
                dir.display()
            ),
        )
    })?;
    let bytes = tokio::fs::read(&copy).await.map_err(|e| {
        UseCaseError::invalid("path", format!("cannot read {}: {e}", copy.display()))
    })?;
    let sum = hex_sha256(&bytes);
    if sum != read.sha256 {
        let _ = std::fs::remove_file(&copy);
        return Err(UseCaseError::invalid(
            "path",
            format!(
                "{} changed while it was copied (sha256 {} then {sum})",
                source.display(),
                read.sha256
            ),
        ));
    }
    let artifact = RunnerArtifact {
        path: copy.clone(),
        ..read
    };
    ssh.add_runner(artifact.clone())
        .map_err(|m| UseCaseError::Conflict {
            field: Some("version".into()),
            message: format!("version: {m}"),
        })?;
    Ok(state
        .store
        .register_artifact(&new_artifact(&artifact), now_ms())
        .await?)
}

fn new_artifact(a: &RunnerArtifact) -> NewArtifact {
    NewArtifact {
        version: a.version.clone(),
        os: a.platform.os.clone(),
        arch: a.platform.arch.clone(),
        sha256: a.sha256.clone(),
        size: i64::try_from(a.size).unwrap_or(i64::MAX),
        path: a.path.display().to_string(),
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn copy_private(source: &Path, dir: &Path, copy: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let tmp = copy.with_extension("part");
    std::fs::copy(source, &tmp)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, copy)
}

/// At start: makes the binaries registered by `runner add` (under the data directory)
/// deployable again. One that is gone or changed is left out with a warning.
pub async fn load_added(store: &cronium_store::Store, ssh: &SshExecutor, data_dir: &Path) {
    let base = data_dir.join(ADDED_DIR);
    let rows = match store.list_artifacts().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "listing the registered runners");
            return;
        }
    };
    for row in rows {
        let path = PathBuf::from(&row.path);
        if !path.starts_with(&base) {
            continue;
        }
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(path = %row.path, error = %e, "a runner registered with `runner add` is gone");
                continue;
            }
        };
        if hex_sha256(&bytes) != row.sha256 {
            tracing::warn!(path = %row.path, "a runner registered with `runner add` changed on disk; left out");
            continue;
        }
        let Some(platform) = Platform::new(&row.os, &row.arch) else {
            continue;
        };
        let a = RunnerArtifact {
            path,
            version: row.version.clone(),
            sha256: row.sha256.clone(),
            size: bytes.len() as u64,
            platform,
        };
        if let Err(e) = ssh.add_runner(a) {
            tracing::warn!(path = %row.path, error = %e, "a registered runner was left out");
        }
    }
}

// ---- pins ----------------------------------------------------------------------------------

/// What a pin targets, as the caller names it.
#[derive(Debug, Clone)]
pub enum PinTarget {
    Server(String),
    Tag(String),
}

impl PinTarget {
    fn describe(&self) -> String {
        match self {
            PinTarget::Server(n) => format!("server {n}"),
            PinTarget::Tag(t) => format!("tag {t}"),
        }
    }
}

/// The servers a pin or rollout concerns, with the field to blame when there are none.
async fn servers_of(state: &AppState, target: &PinTarget) -> UseCaseResult<Vec<ServerRow>> {
    match target {
        PinTarget::Server(name) => Ok(vec![servers::get(state, name).await?]),
        PinTarget::Tag(tag) => {
            let rows: Vec<ServerRow> = state
                .store
                .list_servers()
                .await?
                .into_iter()
                .filter(|s| s.tags.contains(tag))
                .collect();
            if rows.is_empty() {
                return Err(UseCaseError::invalid(
                    "tag",
                    format!("no server has the tag `{tag}`"),
                ));
            }
            Ok(rows)
        }
    }
}

/// Refuses `version` when a server among `rows` has no runner of it for its platform (or,
/// for a server whose platform is not detected yet, when no platform has it).
fn check_version_for(ssh: &SshExecutor, version: &str, rows: &[ServerRow]) -> UseCaseResult<()> {
    let mut missing: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut available = BTreeMap::new();
    let any = ssh.runners().iter().any(|r| r.version == version);
    for row in rows {
        match platform_of(row) {
            Some(p) if ssh.artifact(&p, version).is_none() => {
                available.insert(p.to_string(), ssh.versions_for(&p));
                missing
                    .entry(p.to_string())
                    .or_default()
                    .push(row.name.clone());
            }
            Some(_) => {}
            None if !any => {
                missing
                    .entry("any platform".into())
                    .or_default()
                    .push(row.name.clone());
            }
            None => {}
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let parts: Vec<String> = missing
        .iter()
        .map(|(p, names)| {
            let have = available
                .get(p)
                .map_or(String::new(), |v| format!("; registered for {p}: {v}"));
            format!(
                "no runner {version} for {p} (server {}){have}",
                names.join(", ")
            )
        })
        .collect();
    Err(UseCaseError::invalid(
        "version",
        format!(
            "{}; register it with `cronium runner add PATH`",
            parts.join("; ")
        ),
    ))
}

/// Pins a server or a tag to `version`; refused when a server concerned has no runner of
/// that version for its platform. Recorded as `runner.pin`.
pub async fn pin(
    state: &AppState,
    actor: &Actor,
    target: PinTarget,
    version: &str,
) -> UseCaseResult<PinRow> {
    let result = pin_unrecorded(state, actor, &target, version).await;
    audit::record(
        state,
        actor,
        "runner.pin",
        target.describe(),
        None,
        result,
        |p| Some(serde_json::json!({ "version": p.version })),
    )
    .await
}

async fn pin_unrecorded(
    state: &AppState,
    actor: &Actor,
    target: &PinTarget,
    version: &str,
) -> UseCaseResult<PinRow> {
    let ssh = ssh(state)?;
    let version = version.trim();
    if version.is_empty() {
        return Err(UseCaseError::invalid("version", "must not be empty"));
    }
    let rows = servers_of(state, target).await?;
    check_version_for(ssh, version, &rows)?;
    let scope = match target {
        PinTarget::Server(_) => PinScope::Server(rows[0].id),
        PinTarget::Tag(t) => PinScope::Tag(t.clone()),
    };
    Ok(state
        .store
        .set_pin(&scope, version, &actor.username, now_ms())
        .await?)
}

/// Removes a server's or a tag's pin. Recorded as `runner.unpin`.
pub async fn unpin(state: &AppState, actor: &Actor, target: PinTarget) -> UseCaseResult<()> {
    let result = async {
        let scope = match &target {
            PinTarget::Server(n) => PinScope::Server(servers::get(state, n).await?.id),
            PinTarget::Tag(t) => PinScope::Tag(t.clone()),
        };
        if !state.store.remove_pin(&scope).await? {
            return Err(UseCaseError::NotFound(format!(
                "{} has no runner pin",
                target.describe()
            )));
        }
        Ok(())
    }
    .await;
    audit::record(
        state,
        actor,
        "runner.unpin",
        target.describe(),
        None,
        result,
        |_| None,
    )
    .await
}

pub async fn list_pins(state: &AppState) -> UseCaseResult<Vec<PinRow>> {
    Ok(state.store.list_pins().await?)
}

// ---- batches -------------------------------------------------------------------------------

/// A batch size: a count or a share of the servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchSize {
    Count(usize),
    Percent(u32),
}

impl BatchSize {
    /// `2` or `40%`: a count of at least 1, a share of 1 to 100 %.
    pub fn parse(s: &str) -> Result<BatchSize, String> {
        let s = s.trim();
        if let Some(p) = s.strip_suffix('%') {
            match p.trim().parse::<u32>() {
                Ok(n) if (1..=100).contains(&n) => Ok(BatchSize::Percent(n)),
                _ => Err(format!("'{s}' is not a share of 1% to 100%")),
            }
        } else {
            match s.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(BatchSize::Count(n)),
                _ => Err(format!(
                    "'{s}' is not a number of servers (at least 1) or a share (e.g. 10%)"
                )),
            }
        }
    }

    /// Servers per batch out of `total` (a share rounds up: at least 1).
    pub fn of(self, total: usize) -> usize {
        match self {
            BatchSize::Count(n) => n.max(1),
            BatchSize::Percent(p) => (total * p as usize).div_ceil(100).max(1),
        }
    }
}

// ---- rollouts ------------------------------------------------------------------------------

/// A rollout to start.
#[derive(Debug, Clone)]
pub struct RolloutRequest {
    pub version: String,
    pub tag: Option<String>,
    pub batch: String,
    pub pause: String,
}

/// A rollout with its servers.
#[derive(Debug, Clone)]
pub struct RolloutDetail {
    pub rollout: RolloutRow,
    pub servers: Vec<RolloutServerRow>,
}

pub async fn get_rollout(state: &AppState, id: i64) -> UseCaseResult<RolloutDetail> {
    let rollout = state
        .store
        .get_rollout(id)
        .await?
        .ok_or_else(|| UseCaseError::NotFound(format!("rollout {id} not found")))?;
    let servers = state.store.rollout_servers(id).await?;
    Ok(RolloutDetail { rollout, servers })
}

pub async fn list_rollouts(state: &AppState) -> UseCaseResult<Vec<RolloutRow>> {
    Ok(state.store.list_rollouts(100).await?)
}

/// Starts a rollout of `req.version` to the servers of `req.tag` (every server when none),
/// in batches of `req.batch` with `req.pause` between them, driven by a task of this server.
/// Refused when a server has no runner of that version for its platform, or is in another
/// running rollout (a conflict naming it). Recorded as `runner.rollout`.
pub async fn start_rollout(
    state: &AppState,
    actor: &Actor,
    req: RolloutRequest,
) -> UseCaseResult<RolloutDetail> {
    let target = format!(
        "rollout {} to {}",
        req.version,
        req.tag
            .as_deref()
            .map_or("every server".into(), |t| format!("tag {t}"))
    );
    let result = start_unrecorded(state, actor, req).await;
    audit::record(state, actor, "runner.rollout", target, None, result, |d| {
        Some(serde_json::json!({
            "rollout": d.rollout.id,
            "servers": d.servers.iter().map(|s| &s.server_name).collect::<Vec<_>>(),
        }))
    })
    .await
}

async fn start_unrecorded(
    state: &AppState,
    actor: &Actor,
    req: RolloutRequest,
) -> UseCaseResult<RolloutDetail> {
    let ssh = ssh(state)?.clone();
    let version = req.version.trim().to_string();
    if version.is_empty() {
        return Err(UseCaseError::invalid("version", "must not be empty"));
    }
    let size = BatchSize::parse(&req.batch).map_err(|m| UseCaseError::invalid("batch", m))?;
    let pause = cronium_core::duration::HumanDuration::parse(req.pause.trim())
        .map_err(|m| UseCaseError::invalid("pause", m))?
        .0;
    let mut rows = match &req.tag {
        Some(t) => servers_of(state, &PinTarget::Tag(t.clone())).await?,
        None => state.store.list_servers().await?,
    };
    if rows.is_empty() {
        return Err(UseCaseError::invalid(
            "tag",
            "there are no servers to roll out to",
        ));
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    check_version_for(&ssh, &version, &rows)?;
    let pins = state.store.list_pins().await?;
    let per = size.of(rows.len());
    let servers = rows
        .iter()
        .enumerate()
        .map(|(i, row)| NewRolloutServer {
            server_id: row.id,
            server_name: row.name.clone(),
            batch: (i / per) as i64 + 1,
            previous_version: wanted(&ssh, &pins, row).version,
            previous_pin: pins
                .iter()
                .find(|p| p.scope == PinScope::Server(row.id))
                .map(|p| p.version.clone()),
        })
        .collect();
    let new = NewRollout {
        version: version.clone(),
        tag: req.tag.clone(),
        batch: req.batch.trim().to_string(),
        pause_ms: pause.as_millis() as i64,
        created_by: actor.username.clone(),
        servers,
    };
    let rollout = match state.store.create_rollout(&new, now_ms()).await? {
        Ok(r) => r,
        Err(busy) => {
            return Err(UseCaseError::Conflict {
                field: None,
                message: format!(
                    "server `{}` is in rollout {}, which is still running; wait for it to end",
                    busy.server, busy.rollout_id
                ),
            })
        }
    };
    let detail = get_rollout(state, rollout.id).await?;
    let (state2, id) = (state.clone(), rollout.id);
    tokio::spawn(async move {
        if let Err(e) = drive(&state2, &ssh, id, pause).await {
            tracing::error!(rollout = id, error = %e, "the rollout stopped on an internal error");
            let _ = state2
                .store
                .set_rollout_status(
                    id,
                    "failed",
                    Some(&format!("internal error: {e}")),
                    now_ms(),
                )
                .await;
        }
    });
    Ok(detail)
}

/// What became of one server in a batch.
struct Step {
    row: RolloutServerRow,
    result: Result<String, String>,
}

/// Runs the batches of rollout `id` one after the other.
async fn drive(state: &AppState, ssh: &SshExecutor, id: i64, pause: Duration) -> UseCaseResult<()> {
    let detail = get_rollout(state, id).await?;
    let version = detail.rollout.version.clone();
    let mut batches: BTreeMap<i64, Vec<RolloutServerRow>> = BTreeMap::new();
    for s in detail.servers {
        batches.entry(s.batch).or_default().push(s);
    }
    let last = batches.keys().next_back().copied().unwrap_or(0);
    for (n, batch) in batches {
        let steps: Vec<Step> = stream::iter(batch.into_iter().map(|row| {
            let version = version.clone();
            async move {
                let result = upgrade(state, ssh, &row, &version).await;
                Step { row, result }
            }
        }))
        .buffer_unordered(DEPLOY_CONCURRENCY)
        .collect()
        .await;
        let failures: Vec<String> = steps
            .iter()
            .filter_map(|s| {
                s.result
                    .as_ref()
                    .err()
                    .map(|e| format!("{}: {e}", s.row.server_name))
            })
            .collect();
        if failures.is_empty() {
            for s in &steps {
                let server = servers::get(state, &s.row.server_name).await?;
                state
                    .store
                    .set_pin(
                        &PinScope::Server(server.id),
                        &version,
                        &format!("rollout {id}"),
                        now_ms(),
                    )
                    .await?;
                state
                    .store
                    .set_rollout_server(id, s.row.server_id, "upgraded", None, now_ms())
                    .await?;
                // The host is on `version` now: only it and the previous one stay.
                if let Ok(cfg) = config_at(state, &server, &version) {
                    cleanup(ssh, &cfg, &server, &[&version, &s.row.previous_version]).await;
                }
                refresh_health(state, ssh, &server, &version).await;
            }
            if n < last && !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            continue;
        }
        // A batch is all-or-nothing: the servers that took the new version go back to their
        // previous one (checked on the host, uploaded again when missing); their pins were
        // not changed yet.
        for s in &steps {
            match &s.result {
                Err(e) => {
                    state
                        .store
                        .set_rollout_server(id, s.row.server_id, "failed", Some(e), now_ms())
                        .await?;
                }
                Ok(_) => {
                    let back = restore(state, ssh, &s.row).await;
                    if let Ok(row) = servers::get(state, &s.row.server_name).await {
                        refresh_health(state, ssh, &row, &s.row.previous_version).await;
                    }
                    state
                        .store
                        .set_rollout_server(
                            id,
                            s.row.server_id,
                            "reverted",
                            back.as_ref().err().map(|e| e.as_str()),
                            now_ms(),
                        )
                        .await?;
                }
            }
        }
        let error = format!(
            "batch {n} failed, the rollout stopped (later batches untouched): {}",
            failures.join("; ")
        );
        state
            .store
            .set_rollout_status(id, "failed", Some(&error), now_ms())
            .await?;
        return Ok(());
    }
    state
        .store
        .set_rollout_status(id, "succeeded", None, now_ms())
        .await?;
    Ok(())
}

/// The server's connection settings with `version` as its wanted runner.
fn config_at(state: &AppState, row: &ServerRow, version: &str) -> UseCaseResult<ServerConfig> {
    let mut cfg = servers::config_of(state, row)?;
    cfg.runner_version = Some(version.to_string());
    Ok(cfg)
}

/// Deploys `version` to one server of a rollout and checks it with the new binary's
/// `health`. The path on the host, or why not.
async fn upgrade(
    state: &AppState,
    ssh: &SshExecutor,
    s: &RolloutServerRow,
    version: &str,
) -> Result<String, String> {
    let row = servers::get(state, &s.server_name)
        .await
        .map_err(|e| e.to_string())?;
    let cfg = config_at(state, &row, version).map_err(|e| e.to_string())?;
    let deployed = deploy_and_record(state, ssh, &row, &cfg).await?;
    ssh.check_runner(&cfg, &deployed)
        .await
        .map_err(|e| e.to_string())?;
    Ok(deployed.path)
}

/// Puts a server back on its previous version: deployed (verified, or uploaded again) and
/// its own pin as it was before the rollout.
async fn restore(state: &AppState, ssh: &SshExecutor, s: &RolloutServerRow) -> Result<(), String> {
    let row = servers::get(state, &s.server_name)
        .await
        .map_err(|e| e.to_string())?;
    let cfg = config_at(state, &row, &s.previous_version).map_err(|e| e.to_string())?;
    deploy_and_record(state, ssh, &row, &cfg).await?;
    let scope = PinScope::Server(row.id);
    match &s.previous_pin {
        Some(v) => state
            .store
            .set_pin(
                &scope,
                v,
                &format!("rollback of rollout {}", s.rollout_id),
                now_ms(),
            )
            .await
            .map(|_| ()),
        None => state.store.remove_pin(&scope).await.map(|_| ()),
    }
    .map_err(|e| e.to_string())
}

/// `deploy_version` with its record in the deployment history and the runner state.
async fn deploy_and_record(
    state: &AppState,
    ssh: &SshExecutor,
    row: &ServerRow,
    cfg: &ServerConfig,
) -> Result<cronium_ssh::DeployedRunner, String> {
    let d = ssh.deploy_version(cfg).await;
    if let Some(rec) = &d.record {
        record(state, row, rec).await;
    }
    servers::store_platform(state, ssh, row, cfg).await;
    d.result.map_err(|e| e.to_string())
}

async fn record(state: &AppState, row: &ServerRow, rec: &DeploymentRecord) {
    let d = NewDeployment {
        version: rec.version.clone(),
        sha256: rec.sha256.clone(),
        outcome: rec.outcome.as_str().into(),
        attempts: i64::from(rec.attempts),
        duration_ms: rec.duration_ms as i64,
        error: rec.error.clone(),
        at: rec.at_ms,
    };
    if let Err(e) = state.store.record_deployment(row.id, &d).await {
        tracing::warn!(server = %row.name, error = %e, "recording a deployment");
    }
    let runner = (rec.outcome != DeployOutcome::Failed).then(|| RunnerState {
        path: rec.path.clone(),
        sha256: rec.sha256.clone(),
        verified_at: now_ms(),
    });
    if let Err(e) = state.store.set_runner_state(row.id, runner.as_ref()).await {
        tracing::warn!(server = %row.name, error = %e, "storing the runner state");
    }
}

/// Asks the runner of `version` on the host for its health and records it, so that `server
/// list` shows the version the host runs now, not the one of the last interval's check.
async fn refresh_health(state: &AppState, ssh: &SshExecutor, row: &ServerRow, version: &str) {
    if let Ok(cfg) = config_at(state, row, version) {
        crate::background::health::check(
            state,
            ssh,
            row.id,
            &cfg,
            cronium_ssh::HealthConnection::PooledOrLogin,
            crate::background::health::HealthConfig::default().keep,
        )
        .await;
    }
}

/// Removes from the host the runner binaries of ours other than `versions`' (best effort: a
/// failure is logged, it changes nothing of the rollout).
async fn cleanup(ssh: &SshExecutor, cfg: &ServerConfig, row: &ServerRow, versions: &[&str]) {
    let Some(platform) = ssh.known_platform(cfg).or_else(|| platform_of(row)) else {
        return;
    };
    let keep: Vec<String> = versions
        .iter()
        .filter_map(|v| ssh.artifact(&platform, v))
        .map(|a| a.remote_name())
        .collect();
    if keep.is_empty() {
        return;
    }
    match ssh.remove_old_runners(cfg, &keep).await {
        Ok(removed) if !removed.is_empty() => {
            tracing::info!(server = %row.name, removed = ?removed, "old runner versions removed")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(server = %row.name, error = %e, "removing old runner versions"),
    }
}

/// Rolls back rollout `id` (or the latest one of `tag`): each server it upgraded returns to
/// its previous version (verified on the host, uploaded again when missing) and its own pin as
/// before. Refused while the rollout runs. Recorded as `runner.rollback`.
pub async fn rollback(
    state: &AppState,
    actor: &Actor,
    id: Option<i64>,
    tag: Option<String>,
) -> UseCaseResult<RolloutDetail> {
    let target = match (&id, &tag) {
        (Some(id), _) => format!("rollout {id}"),
        (None, Some(t)) => format!("latest rollout of tag {t}"),
        (None, None) => "latest rollout".into(),
    };
    let result = rollback_unrecorded(state, id, tag).await;
    audit::record(state, actor, "runner.rollback", target, None, result, |d| {
        Some(serde_json::json!({ "rollout": d.rollout.id, "status": d.rollout.status }))
    })
    .await
}

async fn rollback_unrecorded(
    state: &AppState,
    id: Option<i64>,
    tag: Option<String>,
) -> UseCaseResult<RolloutDetail> {
    let ssh = ssh(state)?;
    let id = match id {
        Some(id) => id,
        None => state
            .store
            .list_rollouts(1000)
            .await?
            .into_iter()
            .find(|r| tag.is_none() || r.tag == tag)
            .map(|r| r.id)
            .ok_or_else(|| {
                UseCaseError::NotFound(match &tag {
                    Some(t) => format!("no rollout to tag `{t}`"),
                    None => "no rollout".into(),
                })
            })?,
    };
    let detail = get_rollout(state, id).await?;
    match detail.rollout.status.as_str() {
        "running" => {
            return Err(UseCaseError::Conflict {
                field: None,
                message: format!("rollout {id} is still running; roll it back when it ends"),
            })
        }
        "rolled_back" => {
            return Err(UseCaseError::Conflict {
                field: None,
                message: format!("rollout {id} is already rolled back"),
            })
        }
        _ => {}
    }
    let upgraded: Vec<RolloutServerRow> = detail
        .servers
        .iter()
        .filter(|s| s.status == "upgraded")
        .cloned()
        .collect();
    // A later rollout that moved one of these servers on would be undone behind its back:
    // that one is rolled back first.
    for later in state.store.list_rollouts(1000).await? {
        if later.id <= id || later.status == "rolled_back" {
            continue;
        }
        let moved = state.store.rollout_servers(later.id).await?;
        if let Some(m) = moved
            .iter()
            .find(|m| m.status == "upgraded" && upgraded.iter().any(|u| u.server_id == m.server_id))
        {
            return Err(UseCaseError::Conflict {
                field: None,
                message: format!(
                    "server `{}` was upgraded again by the later rollout {} ({}); roll that one back first",
                    m.server_name, later.id, later.version
                ),
            });
        }
    }
    let results: Vec<(RolloutServerRow, Result<(), String>)> =
        stream::iter(upgraded.into_iter().map(|s| async move {
            let r = restore(state, ssh, &s).await;
            (s, r)
        }))
        .buffer_unordered(DEPLOY_CONCURRENCY)
        .collect()
        .await;
    let mut failures = Vec::new();
    for (s, r) in &results {
        match r {
            Ok(()) => {
                state
                    .store
                    .set_rollout_server(id, s.server_id, "rolled_back", None, now_ms())
                    .await?;
                if let Ok(row) = servers::get(state, &s.server_name).await {
                    if let Ok(cfg) = config_at(state, &row, &s.previous_version) {
                        cleanup(
                            ssh,
                            &cfg,
                            &row,
                            &[&s.previous_version, &detail.rollout.version],
                        )
                        .await;
                    }
                    refresh_health(state, ssh, &row, &s.previous_version).await;
                }
            }
            Err(e) => {
                state
                    .store
                    .set_rollout_server(id, s.server_id, "upgraded", Some(e), now_ms())
                    .await?;
                failures.push(format!("{}: {e}", s.server_name));
            }
        }
    }
    if !failures.is_empty() {
        return Err(UseCaseError::Conflict {
            field: None,
            message: format!(
                "rollout {id}: some servers could not return to their previous version (run the rollback again): {}",
                failures.join("; ")
            ),
        });
    }
    state
        .store
        .set_rollout_status(id, "rolled_back", None, now_ms())
        .await?;
    get_rollout(state, id).await
}

/// At start: rollouts left `running` by a stopped server have nobody driving them.
pub async fn fail_interrupted(store: &cronium_store::Store) {
    match store
        .fail_running_rollouts(
            "interrupted: the Cronium server driving it stopped; the servers of the batch in progress may hold the new version beside their previous one (roll back, or start a new rollout)",
            now_ms(),
        )
        .await
    {
        Ok(ids) if !ids.is_empty() => {
            tracing::warn!(rollouts = ?ids, "rollouts interrupted by a restart marked failed")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "marking interrupted rollouts failed"),
    }
}

// ---- server deploy -------------------------------------------------------------------------

/// One server's line of `server deploy`.
#[derive(Debug, Clone)]
pub struct DeployLine {
    pub server: String,
    /// `linux/x86_64`, or `unknown` when it could not be detected.
    pub platform: String,
    pub version: String,
    /// `deployed`, `verified`, `cached` or `failed`.
    pub outcome: String,
    pub duration_ms: u64,
    pub error: Option<String>,
}

/// Pre-deploys each server's wanted version (named servers, the servers of `tag`, or every
/// server), in parallel up to [`DEPLOY_CONCURRENCY`]; each deployment goes in the history.
pub async fn deploy(
    state: &AppState,
    names: &[String],
    tag: Option<&str>,
) -> UseCaseResult<Vec<DeployLine>> {
    let ssh = ssh(state)?;
    let all = state.store.list_servers().await?;
    let mut missing: Vec<&str> = names
        .iter()
        .filter(|n| !all.iter().any(|s| &s.name == *n))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        missing.sort();
        return Err(UseCaseError::NotFound(format!(
            "server `{}` not found",
            missing.join("`, `")
        )));
    }
    let rows: Vec<ServerRow> = all
        .into_iter()
        .filter(|s| {
            (names.is_empty() && tag.is_none())
                || names.contains(&s.name)
                || tag.is_some_and(|t| s.tags.iter().any(|x| x == t))
        })
        .collect();
    if rows.is_empty() {
        return Err(match tag {
            Some(t) => UseCaseError::invalid("tag", format!("no server has the tag `{t}`")),
            None => UseCaseError::invalid("servers", "there are no servers"),
        });
    }
    let pins = Arc::new(state.store.list_pins().await?);
    let lines: Vec<DeployLine> = stream::iter(rows.into_iter().map(|row| {
        let pins = pins.clone();
        async move { deploy_one(state, ssh, &pins, row).await }
    }))
    .buffer_unordered(DEPLOY_CONCURRENCY)
    .collect()
    .await;
    let mut lines = lines;
    lines.sort_by(|a, b| a.server.cmp(&b.server));
    Ok(lines)
}

async fn deploy_one(
    state: &AppState,
    ssh: &SshExecutor,
    pins: &[PinRow],
    row: ServerRow,
) -> DeployLine {
    let version = wanted(ssh, pins, &row).version;
    let started = std::time::Instant::now();
    let line = |platform: String, outcome: &str, error: Option<String>| DeployLine {
        server: row.name.clone(),
        platform,
        version: version.clone(),
        outcome: outcome.into(),
        duration_ms: started.elapsed().as_millis() as u64,
        error,
    };
    let cfg = match config_at(state, &row, &version) {
        Ok(c) => c,
        Err(e) => return line("unknown".into(), "failed", Some(e.to_string())),
    };
    let d = ssh.deploy_version(&cfg).await;
    if let Some(rec) = &d.record {
        record(state, &row, rec).await;
    }
    servers::store_platform(state, ssh, &row, &cfg).await;
    let platform = ssh
        .known_platform(&cfg)
        .map_or_else(|| "unknown".into(), |p| p.to_string());
    match d.result {
        Ok(_) => {
            // The previous version on this host: the one its runner state named before.
            let previous = row
                .runner
                .as_ref()
                .and_then(|r| r.path.rsplit('/').next().map(str::to_string));
            let outcome = d
                .record
                .as_ref()
                .map_or("verified", |r| r.outcome.as_str())
                .to_string();
            let mut keep = vec![];
            if let Some(p) = ssh.known_platform(&cfg) {
                if let Some(a) = ssh.artifact(&p, &version) {
                    keep.push(a.remote_name());
                }
            }
            if let Some(p) = previous {
                keep.push(p);
            }
            if !keep.is_empty() {
                if let Err(e) = ssh.remove_old_runners(&cfg, &keep).await {
                    tracing::warn!(server = %row.name, error = %e, "removing old runner versions");
                }
            }
            let done = line(platform, &outcome, None);
            refresh_health(state, ssh, &row, &version).await;
            done
        }
        Err(e) => line(platform, "failed", Some(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_sizes_parse_and_round_up() {
        assert_eq!(BatchSize::parse("2"), Ok(BatchSize::Count(2)));
        assert_eq!(BatchSize::parse("40%"), Ok(BatchSize::Percent(40)));
        assert!(BatchSize::parse("0").is_err());
        assert!(BatchSize::parse("0%").is_err());
        assert!(BatchSize::parse("150%").is_err());
        assert!(BatchSize::parse("x").is_err());
        assert_eq!(BatchSize::Percent(40).of(5), 2);
        assert_eq!(BatchSize::Percent(10).of(5), 1);
        assert_eq!(BatchSize::Percent(100).of(5), 5);
        assert_eq!(BatchSize::Count(2).of(5), 2);
    }
}
