//! The script's process tree: starting it in its own process group, waiting for it, and making
//! sure that nothing it started outlives the runner.
//!
//! The runner is a child subreaper, so every descendant that leaves the group (setsid, double
//! fork) is re-parented to the runner when its parent dies; cleanup kills the group, then walks
//! `/proc` for the runner's remaining descendants, kills and reaps them until none is left. Not for
//! pipes or events: see `capture` and `run`.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CString, OsString};
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// Asks the kernel to re-parent orphaned descendants to this process instead of init.
pub fn become_subreaper() -> io::Result<()> {
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The script's main process, as [`spawn`] started it: its pid and the reading ends of its
/// stdout and stderr.
pub struct Script {
    pub pid: u32,
    pub stdout: File,
    pub stderr: File,
}

/// Stack of the child between clone and exec: it only makes a handful of system calls.
const SPAWN_STACK: usize = 64 * 1024;

/// What the child of [`spawn`] needs between clone and exec, all made by the parent beforehand
/// (the child must not allocate: it shares the parent's memory until it execs).
struct SpawnArgs {
    program: CString,
    argv: [*const libc::c_char; 3],
    envp: Vec<*const libc::c_char>,
    cwd: CString,
    stdin: libc::c_int,
    stdout: libc::c_int,
    stderr: libc::c_int,
    /// The errno of the step that failed, written by the child before it exits.
    error: libc::c_int,
}

/// Starts `program entrypoint` in its own process group with piped stdout/stderr, in `cwd`,
/// with the runner's environment overlaid by `env`, and the parent-death signal set, so that
/// the script's main process goes too if the runner is killed (SIGKILL, OOM).
///
/// `clone(CLONE_VM | CLONE_VFORK)`, as posix_spawn does, rather than a fork: the child borrows
/// the runner's address space until it execs, instead of a copy of its page tables that the
/// exec then tears down (a fork and exec from the runner took ~0.37 ms, this ~0.12 ms). The
/// standard library's posix_spawn path cannot set the parent-death signal, which has to be set
/// by the child itself.
pub fn spawn(
    program: &Path,
    entrypoint: &Path,
    cwd: &Path,
    env: &BTreeMap<OsString, OsString>,
) -> io::Result<Script> {
    // A relative program is the one the runner found from its own directory (execve searches
    // no PATH, and the child changes to the script's directory first).
    let program = match program.is_relative() {
        true => std::env::current_dir()?.join(program),
        false => program.to_path_buf(),
    };
    let program = cstring(program.as_os_str())?;
    let entry = cstring(entrypoint.as_os_str())?;
    let cwd = cstring(cwd.as_os_str())?;
    let mut vars: BTreeMap<OsString, OsString> = std::env::vars_os().collect();
    vars.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let env_strings = vars
        .into_iter()
        .map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            cstring(&kv)
        })
        .collect::<io::Result<Vec<CString>>>()?;
    let mut envp: Vec<*const libc::c_char> = env_strings.iter().map(|c| c.as_ptr()).collect();
    envp.push(std::ptr::null());
    let null = fs::File::open("/dev/null")?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let mut args = SpawnArgs {
        argv: [program.as_ptr(), entry.as_ptr(), std::ptr::null()],
        program,
        envp,
        cwd,
        stdin: null.as_raw_fd(),
        stdout: out_w.as_raw_fd(),
        stderr: err_w.as_raw_fd(),
        error: 0,
    };
    let mut stack = vec![0u8; SPAWN_STACK];
    // SAFETY: the stack grows down from its end, aligned to 16 bytes; `args` and the strings it
    // points to outlive the child's use of them (CLONE_VFORK suspends this thread until the
    // child has exec'd or exited). Every signal is blocked across the clone so that no handler
    // of the runner runs in the child while it shares our memory; the child resets them.
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(SPAWN_STACK);
        let top = top.sub(top as usize % 16);
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            spawn_child,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&mut args as *mut SpawnArgs).cast(),
        );
        let clone_error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            return Err(clone_error);
        }
        pid
    };
    drop((out_w, err_w, null));
    // Written by the child, in this memory, while this thread was suspended.
    // SAFETY: a plain read of our own live value.
    let error = unsafe { std::ptr::read_volatile(&args.error) };
    if error != 0 {
        // The child exited without exec: reap it, report why.
        let mut status = 0;
        // SAFETY: waitpid on our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        return Err(io::Error::from_raw_os_error(error));
    }
    Ok(Script {
        pid: pid as u32,
        stdout: File::from(out_r),
        stderr: File::from(err_r),
    })
}

/// The child of [`spawn`], between clone and exec: system calls only, no allocation, no lock.
extern "C" fn spawn_child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `SpawnArgs`, alive and untouched while this runs.
    let args = unsafe { &mut *(arg as *mut SpawnArgs) };
    // SAFETY: plain system calls on values the parent prepared.
    unsafe {
        // Handlers of the runner must not run here: back to the defaults (the signal table is
        // this process's own, CLONE_SIGHAND is not set), SIGPIPE too, as std's spawn does.
        // (The C library's own signals refuse the change; that is fine.)
        for sig in 1..65 {
            let mut sa: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut sa) == 0
                && (sa.sa_sigaction != libc::SIG_DFL && sa.sa_sigaction != libc::SIG_IGN
                    || sig == libc::SIGPIPE)
            {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        let ok = libc::dup2(args.stdin, 0) >= 0
            && libc::dup2(args.stdout, 1) >= 0
            && libc::dup2(args.stderr, 2) >= 0
            && libc::chdir(args.cwd.as_ptr()) == 0
            && libc::setpgid(0, 0) == 0
            // If the runner itself is killed (SIGKILL, OOM) the script's main process goes too.
            && libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) == 0
            && libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) == 0;
        if ok {
            libc::execve(
                args.program.as_ptr(),
                args.argv.as_ptr(),
                args.envp.as_ptr(),
            );
        }
        args.error = *libc::__errno_location();
        if args.error == 0 {
            args.error = libc::EINVAL;
        }
        libc::_exit(127)
    }
}

fn cstring(s: &std::ffi::OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{s:?} contains a NUL byte"),
        )
    })
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`, which we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are fresh descriptors owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sends `sig` to every process of group `pgid`; a group that is already empty is fine.
pub fn signal_group(pgid: u32, sig: libc::c_int) {
    unsafe {
        libc::kill(-(pgid as libc::pid_t), sig);
    }
}

/// Reaps descendants that were re-parented to the runner and have already exited, so a
/// long-running script that keeps starting short-lived daemons does not fill the process table
/// with zombies. Leaves the script's main process alone: the run loop reaps it.
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
