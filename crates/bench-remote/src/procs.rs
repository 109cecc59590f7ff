//! Process bookkeeping for the benchmark: every long-lived process it starts (sshd listeners, the
//! Cronium server) is registered here so that a panic, an error or ctrl-c still kills it and every
//! process below it (sshd sessions, runners, ssh control masters).
//!
//! Not a supervisor: nothing is restarted, and only processes this benchmark started are touched.

use std::sync::Mutex;
use std::time::{Duration, Instant};

static REGISTERED: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Remembers `pid` as a process tree to kill on shutdown.
pub fn register(pid: u32) {
    if let Ok(mut v) = REGISTERED.lock() {
        v.push(pid);
    }
}

/// Forgets `pid` (it was stopped the ordinary way).
pub fn unregister(pid: u32) {
    if let Ok(mut v) = REGISTERED.lock() {
        v.retain(|p| *p != pid);
    }
}

/// Kills every registered process tree. Called from the ctrl-c handler; the ordinary paths kill
/// their own processes in `Drop`.
pub fn kill_registered() {
    let pids: Vec<u32> = match REGISTERED.lock() {
        Ok(mut v) => std::mem::take(&mut *v),
        Err(_) => return,
    };
    for pid in pids {
        kill_tree(pid);
    }
}

/// Installs the ctrl-c handler: kill what we started, then exit with 130 like a shell would.
pub fn install_ctrl_c() {
    tokio::spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted: stopping every sshd and server this benchmark started");
            kill_registered();
            std::process::exit(130);
        }
    });
}

/// SIGKILL to `root` and everything below it. Descendants are collected first so that killing
/// the parent does not orphan them out of reach (they would be re-parented to init).
pub fn kill_tree(root: u32) {
    let mut victims = descendants(root);
    victims.push(root);
    for pid in victims {
        signal(pid, libc::SIGKILL);
    }
}

/// Sends `sig` to `pid`, ignoring a process that is already gone.
pub fn signal(pid: u32, sig: i32) {
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) has no memory-safety preconditions; a stale pid yields ESRCH.
    unsafe {
        libc::kill(p, sig);
    }
}

/// Polls `child` until it exits or `timeout` passes; true when it exited.
pub fn wait_exit(child: &mut std::process::Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// CPU time of `pid` in ms: its own user + system time and, with `children`, that of every
/// descendant it has waited for (an sshd listener waits for its sessions, which wait for the
/// shells and runners: so the listener's figure covers the whole remote side of finished runs).
pub fn cpu_ms(pid: u32, children: bool) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = s.get(s.rfind(')')? + 2..)?;
    let f: Vec<f64> = after
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // After the command name: state(0, not a number, so dropped) ppid pgrp session tty_nr tpgid
    // flags minflt cminflt majflt cmajflt utime stime cutime cstime -> indexes 10..=13 here.
    let own = f.get(10)? + f.get(11)?;
    let kids = if children {
        f.get(12)? + f.get(13)?
    } else {
        0.0
    };
    // USER_HZ is 100 on Linux.
    Some((own + kids) * 10.0)
}

/// CPU time (ms) of every process in the trees below `roots` (the roots included), live ones
/// too: each process's own time plus what it has reaped. A process that has exited is counted in
/// its parent's reaped time, a live one by itself, so nothing is counted twice. Unlike
/// [`cpu_ms`] on an sshd listener, this covers open connections (health checks on pooled
/// connections run in sessions of connections that stay open). One scan of /proc for all roots.
pub fn tree_cpu_ms(roots: &[u32]) -> Option<f64> {
    let pids: Vec<(u32, u32)> = all_pids()
        .into_iter()
        .filter_map(|p| Some((p, stat_ppid(p)?)))
        .collect();
    let mut children: std::collections::HashMap<u32, Vec<u32>> = Default::default();
    for (c, pp) in pids {
        children.entry(pp).or_default().push(c);
    }
    let mut total = 0.0;
    let mut frontier: Vec<u32> = roots.to_vec();
    while let Some(p) = frontier.pop() {
        // A process that exited since the scan is in its parent's reaped time by now (or soon).
        total += cpu_ms(p, true).unwrap_or(0.0);
        if let Some(cs) = children.get(&p) {
            frontier.extend(cs);
        }
    }
    Some(total)
}

fn stat_ppid(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields after the last ')' are fixed.
    let after = s.get(s.rfind(')')? + 2..)?;
    after.split_whitespace().nth(1)?.parse().ok()
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Every process below `root` in the parent tree.
pub fn descendants(root: u32) -> Vec<u32> {
    let pids: Vec<(u32, u32)> = all_pids()
        .into_iter()
        .filter_map(|p| Some((p, stat_ppid(p)?)))
        .collect();
    let mut out = vec![];
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (c, pp) in &pids {
            if *pp == p {
                out.push(*c);
                frontier.push(*c);
            }
        }
    }
    out
}
