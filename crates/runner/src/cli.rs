//! Command-line parsing for `cronium-runner`.
//!
//! Hand-written rather than clap to keep the static binary small; the grammar is five commands.
//! Only parses: nothing here touches the file system.

use std::path::PathBuf;

/// Usage text printed on a command-line error.
pub const USAGE: &str = "usage:
  cronium-runner --version
  cronium-runner run PAYLOAD [--context FILE] [--control-stdin] [--work-base DIR] [--hide PATH]...
                     [--umask OCTAL] [--run-as UID:GID[:GROUP,...]] [--cgroup-usage]
      PAYLOAD is a .tar.gz file, or - (with --control-stdin) to read it from stdin
      --hide: the script cannot reach PATH (Landlock, where the kernel has it)
      --umask: the umask of the runner and the script
      --run-as: started as root, become this user before anything else
      --cgroup-usage: also report the own cgroup's CPU and peak memory (in a container)
  cronium-runner serve [--work-base DIR]
      relays runs requested on stdin to child runners (used over SSH; see serve.rs)
  cronium-runner health [--work-dir DIR] [--deploy-dir DIR]
      prints the host's load, CPUs, memory, uptime and the free space of both directories as
      one JSON object (defaults: the runs' default work base, this binary's directory)
  cronium-runner helper OP [ARGS...]";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CliError {
    #[error("no command given")]
    NoCommand,
    #[error("unknown command `{0}`")]
    UnknownCommand(String),
    #[error("`run` needs a PAYLOAD argument")]
    MissingPayload,
    #[error("option `{0}` needs a value")]
    MissingValue(&'static str),
    #[error("unknown option or extra argument `{0}`")]
    Unexpected(String),
    #[error("--context and --control-stdin are mutually exclusive")]
    ContextTwice,
    #[error("PAYLOAD `-` (read from stdin) requires --control-stdin")]
    StdinPayloadNeedsControl,
    #[error("`helper` needs an operation")]
    MissingHelperOp,
    #[error("--umask `{0}`: expected an octal mode such as 022")]
    BadUmask(String),
    #[error("--run-as `{0}`: expected UID:GID or UID:GID:GROUP,GROUP (numbers)")]
    BadRunAs(String),
}

/// Who a run becomes before it does anything (`--run-as`): numeric ids, resolved by the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl RunAs {
    fn parse(v: &str) -> Result<RunAs, CliError> {
        let bad = || CliError::BadRunAs(v.to_string());
        let mut parts = v.split(':');
        let uid = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let gid = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let groups = match parts.next() {
            None | Some("") => Vec::new(),
            Some(list) => list
                .split(',')
                .map(|g| g.parse().map_err(|_| bad()))
                .collect::<Result<_, _>>()?,
        };
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(RunAs { uid, gid, groups })
    }

    /// The `--run-as` value for these ids (the agent writes the same form).
    #[cfg(test)]
    pub fn to_arg(&self) -> String {
        let groups: Vec<String> = self.groups.iter().map(u32::to_string).collect();
        format!("{}:{}:{}", self.uid, self.gid, groups.join(","))
    }
}

/// Where the payload archive comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum PayloadSource {
    File(PathBuf),
    /// After the context line on stdin: a length line, then that many bytes.
    Stdin,
}

/// Where the run context comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ContextSource {
    Default,
    File(PathBuf),
    /// First line of stdin; later lines are control messages.
    ControlStdin,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunArgs {
    pub payload: PayloadSource,
    pub context: ContextSource,
    pub work_base: Option<PathBuf>,
    /// Paths the script must not reach (`--hide`, repeatable).
    pub hide: Vec<PathBuf>,
    /// `--umask`: set first thing, for the runner and so for the script.
    pub umask: Option<u32>,
    /// `--run-as`: the user to become before anything else (the caller is root). Done here
    /// rather than between fork and exec in the caller, so that the caller can start the runner
    /// with posix_spawn instead of a fork of its whole address space.
    pub run_as: Option<RunAs>,
    /// `--cgroup-usage`: the runner is alone in its cgroup (a container), so the cgroup's figures
    /// are the run's and are reported with the rest of its usage.
    pub cgroup_usage: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Version,
    Run(RunArgs),
    Serve {
        work_base: Option<PathBuf>,
    },
    Helper {
        op: String,
        args: Vec<String>,
    },
    Health {
        work_dir: Option<PathBuf>,
        deploy_dir: Option<PathBuf>,
    },
}

pub fn parse(args: &[String]) -> Result<Command, CliError> {
    let (first, rest) = args.split_first().ok_or(CliError::NoCommand)?;
    match first.as_str() {
        "--version" | "-V" | "version" => Ok(Command::Version),
        "run" => parse_run(rest).map(Command::Run),
        "serve" => parse_serve(rest),
        "health" => parse_health(rest),
        "helper" => {
            let (op, args) = rest.split_first().ok_or(CliError::MissingHelperOp)?;
            Ok(Command::Helper {
                op: op.clone(),
                args: args.to_vec(),
            })
        }
        other => Err(CliError::UnknownCommand(other.to_string())),
    }
}

fn parse_serve(args: &[String]) -> Result<Command, CliError> {
    let mut work_base = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--work-base" => {
                let v = it.next().ok_or(CliError::MissingValue("--work-base"))?;
                work_base = Some(PathBuf::from(v));
            }
            s => return Err(CliError::Unexpected(s.to_string())),
        }
    }
    Ok(Command::Serve { work_base })
}

fn parse_health(args: &[String]) -> Result<Command, CliError> {
    let (mut work_dir, mut deploy_dir) = (None, None);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--work-dir" => {
                let v = it.next().ok_or(CliError::MissingValue("--work-dir"))?;
                work_dir = Some(PathBuf::from(v));
            }
            "--deploy-dir" => {
                let v = it.next().ok_or(CliError::MissingValue("--deploy-dir"))?;
                deploy_dir = Some(PathBuf::from(v));
            }
            s => return Err(CliError::Unexpected(s.to_string())),
        }
    }
    Ok(Command::Health {
        work_dir,
        deploy_dir,
    })
}

fn parse_run(args: &[String]) -> Result<RunArgs, CliError> {
    let mut payload = None;
    let mut context_file = None;
    let mut control_stdin = false;
    let mut work_base = None;
    let mut hide = Vec::new();
    let mut umask = None;
    let mut run_as = None;
    let mut cgroup_usage = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--umask" => {
                let v = it.next().ok_or(CliError::MissingValue("--umask"))?;
                let mode = u32::from_str_radix(v, 8)
                    .ok()
                    .filter(|m| *m <= 0o777)
                    .ok_or_else(|| CliError::BadUmask(v.clone()))?;
                umask = Some(mode);
            }
            "--run-as" => {
                let v = it.next().ok_or(CliError::MissingValue("--run-as"))?;
                run_as = Some(RunAs::parse(v)?);
            }
            "--hide" => {
                let v = it.next().ok_or(CliError::MissingValue("--hide"))?;
                hide.push(PathBuf::from(v));
            }
            "--context" => {
                let v = it.next().ok_or(CliError::MissingValue("--context"))?;
                context_file = Some(PathBuf::from(v));
            }
            "--control-stdin" => control_stdin = true,
            "--cgroup-usage" => cgroup_usage = true,
            "--work-base" => {
                let v = it.next().ok_or(CliError::MissingValue("--work-base"))?;
                work_base = Some(PathBuf::from(v));
            }
            "-" if payload.is_none() => payload = Some(PayloadSource::Stdin),
            s if !s.starts_with('-') && payload.is_none() => {
                payload = Some(PayloadSource::File(PathBuf::from(s)))
            }
            s => return Err(CliError::Unexpected(s.to_string())),
        }
    }
    let payload = payload.ok_or(CliError::MissingPayload)?;
    let context = match (context_file, control_stdin) {
        (Some(_), true) => return Err(CliError::ContextTwice),
        (Some(f), false) => ContextSource::File(f),
        (None, true) => ContextSource::ControlStdin,
        (None, false) => ContextSource::Default,
    };
    if payload == PayloadSource::Stdin && context != ContextSource::ControlStdin {
        return Err(CliError::StdinPayloadNeedsControl);
    }
    Ok(RunArgs {
        payload,
        context,
        work_base,
        hide,
        umask,
        run_as,
        cgroup_usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_run_with_options() {
        let cmd = parse(&args(
            "run p.tgz --control-stdin --work-base /w --hide /d --hide /e --umask 022 \
             --run-as 999:995:995,4 --cgroup-usage",
        ))
        .unwrap();
        assert_eq!(
            cmd,
            Command::Run(RunArgs {
                payload: PayloadSource::File("p.tgz".into()),
                context: ContextSource::ControlStdin,
                work_base: Some("/w".into()),
                hide: vec!["/d".into(), "/e".into()],
                umask: Some(0o022),
                run_as: Some(RunAs {
                    uid: 999,
                    gid: 995,
                    groups: vec![995, 4],
                }),
                cgroup_usage: true,
            })
        );
    }

    #[test]
    fn run_as_round_trips_and_bad_values_name_the_option() {
        let who = RunAs {
            uid: 1,
            gid: 2,
            groups: vec![],
        };
        assert_eq!(RunAs::parse(&who.to_arg()), Ok(who));
        for bad in ["x:1", "1", "1:2:a", "1:2:3:4", ""] {
            assert_eq!(
                parse(&args(&format!("run p --run-as {bad}z"))).unwrap_err(),
                CliError::BadRunAs(format!("{bad}z")),
                "{bad}"
            );
        }
        assert_eq!(
            parse(&args("run p --umask 999")).unwrap_err(),
            CliError::BadUmask("999".into())
        );
        assert_eq!(
            parse(&args("run p --umask")).unwrap_err(),
            CliError::MissingValue("--umask")
        );
    }

    #[test]
    fn stdin_payload_requires_control_stdin() {
        assert_eq!(
            parse(&args("run -")).unwrap_err(),
            CliError::StdinPayloadNeedsControl
        );
        assert!(parse(&args("run - --control-stdin")).is_ok());
    }

    #[test]
    fn parses_serve() {
        assert_eq!(
            parse(&args("serve")).unwrap(),
            Command::Serve { work_base: None }
        );
        assert_eq!(
            parse(&args("serve --work-base /w")).unwrap(),
            Command::Serve {
                work_base: Some("/w".into())
            }
        );
        assert_eq!(
            parse(&args("serve extra")).unwrap_err(),
            CliError::Unexpected("extra".into())
        );
    }

    #[test]
    fn parses_health() {
        assert_eq!(
            parse(&args("health --work-dir /w --deploy-dir /d")).unwrap(),
            Command::Health {
                work_dir: Some("/w".into()),
                deploy_dir: Some("/d".into()),
            }
        );
        assert_eq!(
            parse(&args("health --work-dir")).unwrap_err(),
            CliError::MissingValue("--work-dir")
        );
        assert_eq!(
            parse(&args("health /x")).unwrap_err(),
            CliError::Unexpected("/x".into())
        );
    }

    #[test]
    fn rejects_unknown_options() {
        assert_eq!(
            parse(&args("run p --bogus")).unwrap_err(),
            CliError::Unexpected("--bogus".into())
        );
        assert_eq!(parse(&args("run")).unwrap_err(), CliError::MissingPayload);
    }
}
