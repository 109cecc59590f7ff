//! The script's process tree: starting it in its own process group, waiting for it, and making
//! sure that nothing it started outlives the runner.
//!
//! The runner is a child subreaper, so every descendant that leaves the group (setsid, double
//! fork) is re-parented to the runner when its parent dies; cleanup kills the group, then walks
//! `/proc` for the runner's remaining descendants, kills and reaps them until none is left. Not for
//! pipes or events: see `capture` and `run`.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use crate::run::Msg;

/// Asks the kernel to re-parent orphaned descendants to this process instead of init.
pub fn become_subreaper() -> io::Result<()> {
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Starts `program entrypoint` in its own process group with piped stdout/stderr.
pub fn spawn(
    program: &Path,
    entrypoint: &Path,
    cwd: &Path,
    env: &BTreeMap<OsString, OsString>,
) -> io::Result<Child> {
    let mut cmd = Command::new(program);
    cmd.arg(entrypoint)
        .current_dir(cwd)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            // If the runner itself is killed (SIGKILL, OOM) the script's main process goes too.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            Ok(())
        });
    }
    cmd.spawn()
}

/// Waits for the script's main process on a thread and reports its raw wait status.
///
/// Waits for that one pid only: orphans are reaped by [`kill_descendants`] after the main process
/// is gone, so two waiters never race for the same child.
pub fn watch_exit(pid: u32, tx: Sender<Msg>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("wait".into())
        .spawn(move || {
            let mut status: libc::c_int = 0;
            loop {
                let rc = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
                if rc == pid as libc::pid_t {
                    let _ = tx.send(Msg::Exited(ExitStatus::from_raw(status)));
                    return;
                }
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    diag!("cronium-runner: waitpid failed: {err}");
                    // Report a failure rather than hang the run forever.
                    let _ = tx.send(Msg::Exited(ExitStatus::from_raw(255 << 8)));
                    return;
                }
            }
        })
        .map(|_| ())
}

/// Sends `sig` to every process of group `pgid`; a group that is already empty is fine.
pub fn signal_group(pgid: u32, sig: libc::c_int) {
    unsafe {
        libc::kill(-(pgid as libc::pid_t), sig);
    }
}

/// Reaps descendants that were re-parented to the runner and have already exited, so a
/// long-running script that keeps starting short-lived daemons does not fill the process table
/// with zombies. Leaves the script's main process alone: its waiter thread owns it.
pub fn reap_orphans(main_pid: u32) {
    loop {
        // SAFETY: waitid only writes into `info`.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let rc = unsafe {
            libc::waitid(
                libc::P_ALL,
                0,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // Peek (WNOWAIT) first: reaping blindly could steal the main process from its waiter.
        let pid = unsafe { info.si_pid() };
        if rc != 0 || pid <= 0 || pid as u32 == main_pid {
            return;
        }
        let mut status = 0;
        unsafe {
            libc::waitpid(pid, &mut status, libc::WNOHANG);
        }
    }
}

enum Reaped {
    /// The runner has no child left at all, hence no descendant either (orphans come to us).
    NoChildren,
    /// Some children are still alive.
    Remaining,
}

fn reap_available() -> Reaped {
    loop {
        let mut status = 0;
        let rc = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if rc > 0 {
            continue;
        }
        if rc == 0 {
            return Reaped::Remaining;
        }
        match io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => continue,
            _ => return Reaped::NoChildren,
        }
    }
}

/// SIGKILLs and reaps every descendant of the runner until none is left (or `limit` passes,
/// which only a process stuck in the kernel can cause). Must only be called once the script's
/// main process has been reaped.
pub fn kill_descendants(limit: Duration) {
    let deadline = Instant::now() + limit;
    let me = std::process::id();
    loop {
        if let Reaped::NoChildren = reap_available() {
            return;
        }
        if Instant::now() >= deadline {
            diag!("cronium-runner: some descendants could not be reaped in time");
            return;
        }
        for pid in descendants(me) {
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
        // Killed processes take a moment to become reapable; poll briefly rather than block in
        // waitpid, so a process stuck in the kernel cannot hang the runner past the deadline.
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// All live descendants of `root`, from `/proc`.
pub fn descendants(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(ppid) = parent_of(pid) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        if let Some(kids) = children.get(&p) {
            for &k in kids {
                out.push(k);
                stack.push(k);
            }
        }
    }
    out
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let _state = fields.next()?;
    fields.next()?.parse().ok()
}

/// Exit code and signal as reported to the controller: a signal death is `128 + signal`.
pub fn decode(status: ExitStatus) -> (i32, Option<i32>) {
    match (status.code(), status.signal()) {
        (Some(code), _) => (code, None),
        (None, Some(sig)) => (128 + sig, Some(sig)),
        (None, None) => (255, None),
    }
}
