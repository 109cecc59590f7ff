//! `cronium-runner`: the only program in Cronium that runs user code.
//!
//! It executes one payload (a `.tar.gz` with `manifest.yaml` and a script), provides the runtime
//! helpers, enforces the timeout, and reports a JSON event stream on stdout (see
//! `cronium_protocol`). It is a small static binary so that it can run on the agent's machine,
//! inside any container and on any x86_64 Linux host reached over SSH. This file only dispatches.

/// Writes a diagnostic line to stderr, ignoring failure. `eprintln!` would panic when stderr is
/// gone (an SSH channel that closed), and with `panic = abort` that would skip all cleanup.
macro_rules! diag {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod api;
mod bundle;
mod capture;
mod cli;
mod control;
mod emit;
mod fdio;
mod health;
mod helper_cmd;
mod payload;
mod process;
mod run;
mod sandbox;
mod serve;
mod updates;
mod usage;
mod watch;
mod workdir;

use std::time::Instant;

/// See the `dlmalloc` entry in Cargo.toml. Safe with the script's start (`process.rs`), whose
/// child allocates nothing, and with `serve`'s spawns (the standard library's child does not
/// allocate before exec either).
#[global_allocator]
static ALLOC: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

/// The version this runner reports (`--version`, `health`, `!ready`, each run's result): the
/// package version unless the build set `CRONIUM_RUNNER_VERSION` (how `scripts/build-runner.sh
/// --next` makes a second version of the same source for the rollout tests).
pub(crate) const VERSION: &str = match option_env!("CRONIUM_RUNNER_VERSION") {
    Some(v) => v,
    None => env!("CARGO_PKG_VERSION"),
};

fn main() {
    let started = Instant::now();
    // Started under another name (argv[0] of a copied or descriptor-started binary) the process
    // would show that name in top and ps; name it for what it is.
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, c"cronium-runner".as_ptr(), 0, 0, 0);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match cli::parse(&args) {
        Ok(cli::Command::Version) => {
            use std::io::Write as _;
            let _ = writeln!(std::io::stdout(), "cronium-runner {VERSION}");
            0
        }
        Ok(cli::Command::Run(run_args)) => run::run(run_args, started),
        Ok(cli::Command::Serve { work_base }) => serve::serve(work_base),
        Ok(cli::Command::Helper { op, args }) => helper_cmd::main(&op, &args),
        Ok(cli::Command::Health {
            work_dir,
            deploy_dir,
        }) => health::main(work_dir, deploy_dir),
        Err(e) => {
            diag!("cronium-runner: {e}\n{}", cli::USAGE);
            if args.first().map(String::as_str) == Some("run") {
                // A controller reads only stdout: give it the promised final event here too.
                run::report_setup_failure(&format!("invalid runner command line: {e}"));
            }
            run::EXIT_SETUP
        }
    };
    // Every resource (working directory, processes) is released inside the calls above.
    std::process::exit(code);
}
