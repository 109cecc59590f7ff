//! `cronium user ...` and `cronium audit`: accounts and the audit log, through the API.
//! Passwords never go on the command line: an environment variable names them
//! (`--password-env`), or they are asked for on the terminal with echo off (twice), or read
//! from the first line of stdin when it is not a terminal.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{anyhow, bail, Context, Result};
use cronium_client::Method;
use serde_json::{json, Value};

use crate::cli::{AuditArgs, UserCmd};
use crate::client::Client;
use crate::commands::{print_json, s};
use crate::table;

/// The password: from `var`, else asked for (twice on a terminal).
fn password(var: Option<&str>, name: &str) -> Result<String> {
    if let Some(var) = var {
        let p = std::env::var(var)
            .with_context(|| format!("--password-env: the variable {var} is not set"))?;
        return Ok(p);
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        let p = line.trim_end_matches(['\n', '\r']).to_string();
        if p.is_empty() {
            bail!("no password on stdin (or use --password-env VAR)");
        }
        return Ok(p);
    }
    let first = prompt(&format!("Password for {name}: "))?;
    let second = prompt("Again: ")?;
    if first != second {
        bail!("the passwords differ");
    }
    Ok(first)
}

/// Reads a line from the terminal with echo off.
fn prompt(text: &str) -> Result<String> {
    eprint!("{text}");
    std::io::stderr().flush()?;
    let fd = libc::STDIN_FILENO;
    // SAFETY: termios is plain data, filled by tcgetattr before use; fd is stdin.
    let mut old: libc::termios = unsafe { std::mem::zeroed() };
    if unsafe { libc::tcgetattr(fd, &mut old) } != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot read the terminal settings");
    }
    let mut quiet = old;
    quiet.c_lflag &= !libc::ECHO;
    quiet.c_lflag |= libc::ECHONL;
    // SAFETY: as above; the old settings are put back below on every path.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &old) };
    read?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

fn user_row(u: &Value) -> Vec<String> {
    vec![
        s(u, "name").to_string(),
        s(u, "role").to_string(),
        if u["disabled"].as_bool() == Some(true) {
            "disabled".into()
        } else {
            "active".into()
        },
        s(u, "created_at").to_string(),
        s(u, "last_login_at").to_string(),
    ]
}

const USER_HEADERS: [&str; 5] = ["NAME", "ROLE", "STATE", "CREATED", "LAST LOGIN"];

pub async fn user(cmd: UserCmd) -> Result<i32> {
    match cmd {
        UserCmd::Add {
            name,
            role,
            password_env,
            client,
        } => {
            let c = Client::new(&client)?;
            let p = password(password_env.as_deref(), &name)?;
            let r = c
                .request(
                    Method::POST,
                    "/api/v1/users",
                    Some(&json!({"name": name, "role": role, "password": p})),
                )
                .await?;
            if client.json {
                print_json(&r);
            } else {
                println!("user {} added ({})", s(&r, "name"), s(&r, "role"));
            }
        }
        UserCmd::List { client } => {
            let r = Client::new(&client)?.get("/api/v1/users").await?;
            if client.json {
                print_json(&r);
            } else {
                let rows: Vec<Vec<String>> =
                    r.as_array().into_iter().flatten().map(user_row).collect();
                table::print(&USER_HEADERS, &rows);
            }
        }
        UserCmd::SetRole { name, role, client } => {
            patch(&client, &name, json!({"role": role}), "role set").await?;
        }
        UserCmd::Disable { name, client } => {
            patch(&client, &name, json!({"disabled": true}), "disabled").await?;
        }
        UserCmd::Enable { name, client } => {
            patch(&client, &name, json!({"disabled": false}), "enabled").await?;
        }
        UserCmd::Passwd {
            name,
            password_env,
            client,
        } => {
            let c = Client::new(&client)?;
            let p = password(password_env.as_deref(), &name)?;
            c.request(
                Method::PUT,
                &format!("/api/v1/users/{}/password", segment(&name)?),
                Some(&json!({"password": p})),
            )
            .await?;
            if !client.json {
                println!("password of {name} set; its web sessions ended");
            }
        }
    }
    Ok(0)
}

/// A user name as a path segment (the server refuses anything else anyway).
fn segment(name: &str) -> Result<&str> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(anyhow!(
            "`{name}` is not a user name (a-z, 0-9, `.`, `_`, `-`)"
        ));
    }
    Ok(name)
}

async fn patch(client: &crate::cli::ClientOpts, name: &str, body: Value, what: &str) -> Result<()> {
    let r = Client::new(client)?
        .request(
            Method::PATCH,
            &format!("/api/v1/users/{}", segment(name)?),
            Some(&body),
        )
        .await?;
    if client.json {
        print_json(&r);
    } else {
        println!(
            "user {} {what} (role {}, {})",
            s(&r, "name"),
            s(&r, "role"),
            if r["disabled"].as_bool() == Some(true) {
                "disabled"
            } else {
                "active"
            }
        );
    }
    Ok(())
}

/// `v` percent-encoded for a query string.
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `--since`: an RFC 3339 instant, or a duration back from now.
fn since(text: &str) -> Result<String> {
    if chrono::DateTime::parse_from_rfc3339(text).is_ok() {
        return Ok(text.to_string());
    }
    let d = cronium_core::duration::HumanDuration::parse(text)
        .map_err(|e| anyhow!("--since: {e} (give a duration like 1h or an RFC 3339 instant)"))?
        .0;
    let at =
        chrono::Utc::now() - chrono::Duration::from_std(d).map_err(|e| anyhow!("--since: {e}"))?;
    Ok(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

pub async fn audit(args: AuditArgs) -> Result<i32> {
    let mut q: Vec<(&str, String)> = vec![("limit", args.limit.to_string())];
    if let Some(t) = &args.since {
        q.push(("since", since(t)?));
    }
    if let Some(a) = &args.actor {
        q.push(("actor", a.clone()));
    }
    if let Some(a) = &args.action {
        q.push(("action", a.clone()));
    }
    let query = q
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let r = Client::new(&args.client)?
        .get(&format!("/api/v1/audit?{query}"))
        .await?;
    if args.client.json {
        print_json(&r);
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = r
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let via = match (e["token_id"].as_i64(), e["session_id"].is_string()) {
                (Some(t), _) => format!("token {t}"),
                (None, true) => "web".into(),
                _ => "-".into(),
            };
            vec![
                e["id"].to_string(),
                s(e, "at").to_string(),
                s(e, "actor").to_string(),
                via,
                s(e, "source").to_string(),
                s(e, "action").to_string(),
                s(e, "target").to_string(),
                s(e, "outcome").to_string(),
            ]
        })
        .collect();
    table::print(
        &[
            "ID", "AT", "ACTOR", "VIA", "FROM", "ACTION", "TARGET", "OUTCOME",
        ],
        &rows,
    );
    Ok(0)
}
