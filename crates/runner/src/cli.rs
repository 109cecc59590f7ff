//! Command-line parsing for `cronium-runner`.
//!
//! Hand-written rather than clap to keep the static binary small; the grammar is four commands.
//! Only parses: nothing here touches the file system.

use std::path::PathBuf;

/// Usage text printed on a command-line error.
pub const USAGE: &str = "usage:
  cronium-runner --version
  cronium-runner run PAYLOAD [--context FILE] [--control-stdin] [--work-base DIR] [--hide PATH]...
      PAYLOAD is a .tar.gz file, or - (with --control-stdin) to read it from stdin
      --hide: the script cannot reach PATH (Landlock, where the kernel has it)
  cronium-runner serve [--work-base DIR]
      relays runs requested on stdin to child runners (used over SSH; see serve.rs)
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
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Version,
    Run(RunArgs),
    Serve { work_base: Option<PathBuf> },
    Helper { op: String, args: Vec<String> },
}

pub fn parse(args: &[String]) -> Result<Command, CliError> {
    let (first, rest) = args.split_first().ok_or(CliError::NoCommand)?;
    match first.as_str() {
        "--version" | "-V" | "version" => Ok(Command::Version),
        "run" => parse_run(rest).map(Command::Run),
        "serve" => parse_serve(rest),
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

fn parse_run(args: &[String]) -> Result<RunArgs, CliError> {
    let mut payload = None;
    let mut context_file = None;
    let mut control_stdin = false;
    let mut work_base = None;
    let mut hide = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--hide" => {
                let v = it.next().ok_or(CliError::MissingValue("--hide"))?;
                hide.push(PathBuf::from(v));
            }
            "--context" => {
                let v = it.next().ok_or(CliError::MissingValue("--context"))?;
                context_file = Some(PathBuf::from(v));
            }
            "--control-stdin" => control_stdin = true,
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
            "run p.tgz --control-stdin --work-base /w --hide /d --hide /e",
        ))
        .unwrap();
        assert_eq!(
            cmd,
            Command::Run(RunArgs {
                payload: PayloadSource::File("p.tgz".into()),
                context: ContextSource::ControlStdin,
                work_base: Some("/w".into()),
                hide: vec!["/d".into(), "/e".into()],
            })
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
    fn rejects_unknown_options() {
        assert_eq!(
            parse(&args("run p --bogus")).unwrap_err(),
            CliError::Unexpected("--bogus".into())
        );
        assert_eq!(parse(&args("run")).unwrap_err(), CliError::MissingPayload);
    }
}
