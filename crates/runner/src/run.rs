//! One run from start to finish: obtain the context and payload, unpack and validate, prepare the
//! helpers, start the interpreter, watch for exit / timeout / cancel, clean up every process and
//! the working directory, and report exactly one `Finished` as the last event on every path.
//!
//! Not for the details of any one step; each lives in its own module.

use std::io::Cursor;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cronium_protocol::{
    Finished, HelperMode, Interpreter, Manifest, RunContext, RunStatus, RunnerEvent, API_RELAY,
    DEFAULT_MAX_OUTPUT_BYTES, EXIT_CANCELLED, EXIT_TIMEOUT,
};

use crate::bundle::{self, BundleError, UPDATES_FILE};
use crate::cli::{ContextSource, PayloadSource, RunArgs};
use crate::control::{self, ControlChannel, ControlError, ControlStdin, SignalPipe};
use crate::emit::Emitter;
use crate::payload::{self, PayloadError};
use crate::process;
use crate::updates::UpdateTail;
use crate::watch::{Wake, Watch};
use crate::workdir::{WorkDir, WorkDirError};

/// Exit code of the runner when the payload or the setup is invalid.
pub const EXIT_SETUP: i32 = 2;
/// Exit code when the interpreter cannot be found (as a shell's "command not found").
pub const EXIT_NOT_FOUND: i32 = 127;
/// Longest honoured SIGTERM-to-SIGKILL grace period (one day).
const MAX_GRACE_MS: u64 = 86_400_000;
/// Upper bound for things that should be instant once every process is SIGKILLed.
const CLEANUP_LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    WorkDir(#[from] WorkDirError),
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
    #[error("run context env: {0}")]
    ContextEnv(String),
    #[error("helper_mode `api` needs the api settings (token) in the run context")]
    ApiSettings,
    #[error("helper_mode `api`: unknown endpoint kind `{0}` (this runner knows `relay`)")]
    ApiEndpoint(String),
    #[error("{interpreter} interpreter not found: {detail}")]
    InterpreterMissing {
        interpreter: &'static str,
        detail: String,
    },
    #[error("cannot start the {interpreter} interpreter {path}: {source}")]
    Spawn {
        interpreter: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl SetupError {
    /// (runner exit code, `Finished.exit_code`).
    fn codes(&self) -> (i32, Option<i32>) {
        match self {
            SetupError::InterpreterMissing { .. } => (EXIT_NOT_FOUND, Some(EXIT_NOT_FOUND)),
            SetupError::Spawn { source, .. } => {
                let code = if source.kind() == std::io::ErrorKind::NotFound {
                    EXIT_NOT_FOUND
                } else {
                    126
                };
                (code, Some(code))
            }
            _ => (EXIT_SETUP, None),
        }
    }
}

/// Everything ready to start the interpreter.
struct Prepared {
    workdir: WorkDir,
    manifest: Manifest,
    interpreter: PathBuf,
    entrypoint: PathBuf,
    env: std::collections::BTreeMap<std::ffi::OsString, std::ffi::OsString>,
    /// What `--hide` did, for the run's log.
    sandbox: Option<String>,
    /// Why API mode has no endpoint in this run, for the run's log.
    api_note: Option<String>,
    /// `--cgroup-usage`: add the own cgroup's figures to the run's usage.
    cgroup_usage: bool,
    /// When the run was handed over on stdin: a runner started ahead of its run waits for it,
    /// and its setup is counted from then, not from its own start.
    received: Option<Instant>,
    /// The rest of stdin in `--control-stdin` mode.
    control: Option<ControlChannel>,
}

/// Runs one payload; returns the runner's exit code. `started` is when the runner process began.
pub fn run(args: RunArgs, started: Instant) -> i32 {
    // Before any thread exists and before anything is read or written: the umask and the user
    // every later step (and the script) runs with.
    if let Err(message) = become_user(&args) {
        report_setup_failure(&message);
        return EXIT_SETUP;
    }
    let emitter = Arc::new(Emitter::new(DEFAULT_MAX_OUTPUT_BYTES));
    // Before the script exists, so that neither its end nor a signal to us can be missed.
    let signals = SignalPipe::install()
        .map_err(|e| diag!("cronium-runner: cannot create a signal pipe: {e}"))
        .ok();
    let prepared = prepare(&args, &emitter);
    let result = prepared.and_then(|p| execute(p, started, &emitter, signals));
    match result {
        Ok((finished, code, mut workdir)) => {
            // The script and every process of it are gone and its output is read: the result
            // goes out first, and the directory is removed while the caller records it (off
            // the run's critical path; the runner still exits only once it is gone).
            emitter.event(&RunnerEvent::Finished(finished));
            workdir.remove();
            code
        }
        Err(e) => {
            let (code, exit_code) = e.codes();
            emitter.event(&RunnerEvent::Finished(Finished {
                status: RunStatus::Failed,
                exit_code,
                signal: None,
                run_ms: 0,
                error: Some(e.to_string()),
                usage: None,
            }));
            code
        }
    }
}

/// `--umask` and `--run-as`: supplementary groups first, then the group, then the user (after
/// `setuid` the others are no longer allowed). A failure is fatal: the run must never go on as
/// the caller (root).
fn become_user(args: &RunArgs) -> Result<(), String> {
    if let Some(mask) = args.umask {
        // SAFETY: umask cannot fail.
        unsafe { libc::umask(mask as libc::mode_t) };
    }
    let Some(who) = &args.run_as else {
        return Ok(());
    };
    let groups: Vec<libc::gid_t> = who.groups.clone();
    // SAFETY: plain system calls on owned values; no other thread exists yet.
    let failed = unsafe {
        libc::setgroups(groups.len() as _, groups.as_ptr()) != 0
            || libc::setgid(who.gid) != 0
            || libc::setuid(who.uid) != 0
    };
    if failed {
        return Err(format!(
            "cannot become uid {} gid {}: {}",
            who.uid,
            who.gid,
            std::io::Error::last_os_error()
        ));
    }
    // A change of user makes the process non-dumpable, which hands its /proc entries to root:
    // the runner reads its own (/proc/self/exe for the helpers), as it could when the caller
    // switched user before exec.
    // SAFETY: PR_SET_DUMPABLE takes an integer argument.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
    Ok(())
}

/// Emits the `Finished` of a run that could not even be set up.
pub fn report_setup_failure(message: &str) {
    Emitter::new(0).event(&RunnerEvent::Finished(Finished {
        status: RunStatus::Failed,
        exit_code: None,
        signal: None,
        run_ms: 0,
        error: Some(message.to_string()),
        usage: None,
    }));
}

/// What a run needs that does not depend on the run: made before its context is read, so that a
/// runner started ahead of its run has it ready when the run arrives.
struct Ahead {
    /// The work base, absolute.
    base: PathBuf,
    workdir: WorkDir,
    helpers: bundle::Helpers,
    runner_bin: PathBuf,
}

impl Ahead {
    fn make(args: &RunArgs) -> Result<Ahead, SetupError> {
        if let Err(e) = process::become_subreaper() {
            diag!("cronium-runner: cannot become a child subreaper: {e}");
        }
        let base = args.work_base.clone().unwrap_or_else(default_work_base);
        // The script runs elsewhere (its working directory) and finds the helpers through
        // absolute paths only: a relative work base is made absolute first.
        let base = if base.is_relative() {
            std::env::current_dir()
                .map(|d| d.join(&base))
                .unwrap_or(base)
        } else {
            base
        };
        crate::workdir::sweep_stale(&base);
        let workdir = WorkDir::create(&base)?;
        // Bundled files are written in API mode too: they are what the helpers fall back to.
        let helpers = bundle::prepare(&base, workdir.path())?;
        let runner_bin = std::env::current_exe()
            .or_else(|_| std::env::args().next().map(PathBuf::from).ok_or(()))
            .unwrap_or_else(|_| PathBuf::from("cronium-runner"));
        // Started as another user from a descriptor, our own path may lie in a directory we
        // cannot enter (a build under /root); the script's helpers then exec us through /proc
        // instead.
        let runner_bin = if can_execute(&runner_bin) {
            runner_bin
        } else {
            PathBuf::from(format!("/proc/{}/exe", std::process::id()))
        };
        Ok(Ahead {
            base,
            workdir,
            helpers,
            runner_bin,
        })
    }
}

fn prepare(args: &RunArgs, emitter: &Arc<Emitter>) -> Result<Prepared, SetupError> {
    // Before the context is read (a runner started ahead waits for it here); a failure is the
    // run's, reported once the run is known.
    let ahead = Ahead::make(args);
    let mut stdin_payload = None;
    let mut received = None;
    let mut control = None;
    let context = match &args.context {
        ContextSource::Default => control::default_context(),
        ContextSource::File(path) => control::context_from_file(path)?,
        ContextSource::ControlStdin => {
            let mut stdin = ControlStdin::new();
            let context = stdin.read_context()?;
            received = Some(Instant::now());
            if args.payload == PayloadSource::Stdin {
                stdin_payload = Some(stdin.read_payload()?);
            }
            control = Some(stdin.into_channel());
            context
        }
    };
    let Ahead {
        base,
        workdir,
        helpers,
        runner_bin,
    } = ahead?;
    let manifest_bytes = match (&args.payload, stdin_payload) {
        (_, Some(bytes)) => payload::unpack(Cursor::new(bytes), workdir.path())?,
        (PayloadSource::File(path), None) => {
            payload::unpack(payload::open_file(path)?, workdir.path())?
        }
        (PayloadSource::Stdin, None) => {
            // cli::parse refuses `-` without --control-stdin, so the bytes were read above.
            return Err(ControlError::NoLength.into());
        }
    };
    let manifest = payload::load_manifest(workdir.path(), manifest_bytes)?;
    emitter.set_limit(manifest.max_output_bytes);
    let api = match context.helper_mode {
        HelperMode::Bundled => None,
        HelperMode::Api => {
            let settings = context.api.as_ref().ok_or(SetupError::ApiSettings)?;
            if settings.endpoint != API_RELAY {
                return Err(SetupError::ApiEndpoint(settings.endpoint.clone()));
            }
            Some(settings.token.clone())
        }
    };
    payload::check_env(&context.env).map_err(SetupError::ContextEnv)?;
    bundle::write_run_files(&helpers, &manifest, &context)?;
    let mut api_note = None;
    let socket = match api {
        None => None,
        Some(token) => match crate::api::start(&helpers.data_dir, token.clone(), emitter.clone()) {
            Ok(socket) => Some((socket, token)),
            Err(e) => {
                api_note = Some(format!(
                    "[cronium] cannot offer the runtime API socket ({e}); the helpers will use bundled mode"
                ));
                None
            }
        },
    };
    let mut env = bundle::environment(&manifest, &context, &helpers, &runner_bin);
    if let Some((socket, token)) = &socket {
        env.insert("CRONIUM_HELPERS".into(), "api".into());
        let mut endpoint = std::ffi::OsString::from("unix:");
        endpoint.push(&socket.path);
        env.insert("CRONIUM_API_ENDPOINT".into(), endpoint);
        env.insert("CRONIUM_API_TOKEN".into(), token.into());
    } else if api_note.is_some() {
        // Asked for API mode without an endpoint: the helpers record the fallback on first use.
        env.insert("CRONIUM_HELPERS".into(), "api".into());
    }
    let interpreter = resolve_interpreter(manifest.interpreter, &context, &env)?;
    let entrypoint = workdir.path().join(&manifest.entrypoint);
    // Last, once nothing of ours needs the hidden paths: the script is started by this thread.
    let sandbox = match args.hide.is_empty() {
        true => None,
        false => Some(crate::sandbox::hide(&args.hide, &[&base])?),
    };
    Ok(Prepared {
        workdir,
        manifest,
        interpreter,
        entrypoint,
        env,
        sandbox,
        api_note,
        cgroup_usage: args.cgroup_usage,
        received,
        control,
    })
}

/// Where runs get their private directories when the controller does not say (`--work-base`):
/// `$TMPDIR` when set, else `/dev/shm`, else `/tmp`, else `/var/tmp`, the first that is a
/// directory we can write to.
///
/// Memory first, on purpose: a run creates and deletes a handful of small files, and on a disk
/// file system under steady load that costs more than everything else the runner does (ext4
/// scans past every inode freed in the last minute to allocate a new one; a disk mounted with
/// `discard` trims on every delete). A script that writes large files into its working directory
/// should get a disk directory through `TMPDIR` or the controller's work-dir setting.
pub(crate) fn default_work_base() -> PathBuf {
    let candidates = std::env::var_os("TMPDIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .into_iter()
        .chain(["/dev/shm", "/tmp", "/var/tmp"].map(PathBuf::from));
    let mut first = None;
    for dir in candidates {
        if dir.is_dir() && writable(&dir) {
            return dir;
        }
        first.get_or_insert(dir);
    }
    // None is usable: report the first candidate in the error.
    first.unwrap_or_else(|| PathBuf::from("/tmp"))
}

/// True if this process may execute `path` (`access(2)` checks every directory on the way).
fn can_execute(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access(2) on a NUL-terminated path we own.
    unsafe { libc::access(c.as_ptr(), libc::X_OK) == 0 }
}

fn writable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access(2) on a NUL-terminated path we own.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

/// The context's resolved binary if given, else the first candidate found on the script's PATH.
fn resolve_interpreter(
    interp: Interpreter,
    context: &RunContext,
    env: &std::collections::BTreeMap<std::ffi::OsString, std::ffi::OsString>,
) -> Result<PathBuf, SetupError> {
    if let Some(path) = context.interpreters.get(&interp) {
        return Ok(PathBuf::from(path));
    }
    let path_var = bundle::lookup(env, "PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    for name in interp.candidates() {
        for dir in std::env::split_paths(&path_var) {
            let candidate = dir.join(name);
            if is_executable(&candidate) {
                return Ok(candidate);
            }
        }
    }
    Err(SetupError::InterpreterMissing {
        interpreter: interp.as_str(),
        detail: format!(
            "none of {} is on PATH ({})",
            interp.candidates().join(", "),
            path_var.to_string_lossy()
        ),
    })
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Why the run was stopped before the script ended by itself.
#[derive(Clone, Copy, PartialEq)]
enum Stop {
    TimedOut,
    Cancelled,
}

fn execute(
    mut prepared: Prepared,
    started: Instant,
    emitter: &Arc<Emitter>,
    signals: Option<SignalPipe>,
) -> Result<(Finished, i32, WorkDir), SetupError> {
    let manifest = &prepared.manifest;
    let started = prepared.received.unwrap_or(started);
    let run_start = Instant::now();
    let child = process::spawn(
        &prepared.interpreter,
        &prepared.entrypoint,
        prepared.workdir.path(),
        &prepared.env,
    )
    .map_err(|source| SetupError::Spawn {
        interpreter: manifest.interpreter.as_str(),
        path: prepared.interpreter.clone(),
        source,
    })?;
    let pid = child.pid;
    emitter.event(&RunnerEvent::Started {
        runner_version: crate::VERSION.to_string(),
        pid,
        setup_ms: run_start.duration_since(started).as_millis() as u64,
    });
    if let Some(line) = prepared.sandbox.take() {
        emitter.system_line(line);
    }
    if let Some(line) = prepared.api_note.take() {
        emitter.system_line(line);
    }
    let mut watch = Watch::new(child, prepared.control.take(), signals);
    let mut tail = UpdateTail::new(
        prepared
            .workdir
            .path()
            .join(crate::payload::RESERVED_DIR)
            .join(UPDATES_FILE),
    );

    // 0, or a timeout too large to represent, means no timeout.
    let deadline = (manifest.timeout_ms > 0)
        .then(|| run_start.checked_add(Duration::from_millis(manifest.timeout_ms)))
        .flatten();
    let mut status = None;
    let mut ended = None;
    let mut stop = None;
    // Phase 1: until the script exits, the deadline passes or a cancel arrives.
    while status.is_none() && stop.is_none() {
        match watch.next(deadline, emitter) {
            Wake::Exited(st) => {
                ended = Some(Instant::now());
                status = Some(st);
            }
            Wake::Cancel(reason) => {
                emitter.system_line(format!("[cronium] run cancelled: {reason}"));
                stop = Some(Stop::Cancelled);
            }
            Wake::Tick => {
                tail.poll(emitter);
                process::reap_orphans(pid);
                if emitter.is_broken() {
                    stop = Some(Stop::Cancelled);
                } else if deadline.is_some_and(|d| Instant::now() >= d) {
                    emitter.system_line(format!(
                        "[cronium] timed out after {} ms; stopping the script",
                        manifest.timeout_ms
                    ));
                    stop = Some(Stop::TimedOut);
                }
            }
        }
    }

    // Phase 2: SIGTERM, then up to the grace period for the main process to exit.
    if status.is_none() {
        process::signal_group(pid, libc::SIGTERM);
        // Capped so that an absurd value cannot overflow the clock; a day is already "forever".
        let grace = Duration::from_millis(manifest.kill_grace_ms.min(MAX_GRACE_MS));
        let grace_end = Instant::now() + grace;
        status = wait_exit(&mut watch, grace_end, &mut tail, emitter);
        if status.is_some() {
            ended = Some(Instant::now());
        }
    }
    // Phase 3: nothing of the script survives, whatever happened above.
    process::signal_group(pid, libc::SIGKILL);
    if status.is_none() {
        status = wait_exit(
            &mut watch,
            Instant::now() + CLEANUP_LIMIT,
            &mut tail,
            emitter,
        );
        ended = Some(Instant::now());
    }
    process::kill_descendants(CLEANUP_LIMIT);
    // Every process of the script has been reaped: its figures are complete.
    let usage = measure(prepared.cgroup_usage, emitter);
    let run_ms = ended
        .unwrap_or_else(Instant::now)
        .duration_since(run_start)
        .as_millis() as u64;

    // Every writer of the pipes is dead now, so they reach EOF promptly.
    if !watch.drain_output(Instant::now() + Duration::from_secs(5), emitter) {
        diag!("cronium-runner: output pipes still open after cleanup; not waiting");
    }
    tail.poll(emitter);

    let (code, signal) = status.map_or((255, None), process::decode);
    let (status, exit_code) = match stop {
        Some(Stop::TimedOut) => (RunStatus::TimedOut, EXIT_TIMEOUT),
        Some(Stop::Cancelled) => (RunStatus::Cancelled, EXIT_CANCELLED),
        None if code == 0 => (RunStatus::Succeeded, 0),
        None => (RunStatus::Failed, code),
    };
    let finished = Finished {
        status,
        exit_code: Some(exit_code),
        signal,
        run_ms,
        error: None,
        usage: Some(usage),
    };
    Ok((finished, exit_code, prepared.workdir))
}

/// The run's usage: the reaped process tree's, and with `cgroup` the own cgroup's, a figure the
/// kernel does not offer said once in the run's log.
fn measure(cgroup: bool, emitter: &Emitter) -> cronium_protocol::Usage {
    let mut usage = crate::usage::children();
    if cgroup {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let c = crate::usage::cgroup(Path::new("/sys/fs/cgroup"), &own);
        usage.cgroup_cpu_ms = c.cpu_ms;
        usage.cgroup_memory_peak_bytes = c.memory_peak_bytes;
        if !c.missing.is_empty() {
            emitter.system_line(format!(
                "[cronium] container usage not measured: {}",
                c.missing.join("; ")
            ));
        }
    }
    usage
}

/// Waits for the main process to exit until `until`, reading output and helper updates meanwhile.
fn wait_exit(
    watch: &mut Watch,
    until: Instant,
    tail: &mut UpdateTail,
    emitter: &Emitter,
) -> Option<ExitStatus> {
    loop {
        if Instant::now() >= until {
            return None;
        }
        match watch.next(Some(until), emitter) {
            Wake::Exited(st) => return Some(st),
            Wake::Cancel(_) => {} // already stopping
            Wake::Tick => tail.poll(emitter),
        }
    }
}
