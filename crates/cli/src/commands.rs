//! Client commands: each one request (or a few) to the server, printed as text or JSON.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use cronium_client::Method;
use cronium_model::JobStatus;
use serde_json::{json, Value};

use crate::cli::{EventCmd, JobCmd, RunnerCmd, ServerCmd, TokenCmd, VarCmd};
use crate::client::{exit_code_for, print_line, Client};
use crate::table;

/// What `PUT /api/v1/{kind}s/{name}` answered: the JSON, or one line with the result, the
/// version written and the next run.
pub(crate) fn print_applied(kind: &str, name: &str, r: &Value, json: bool) {
    if json {
        print_json(r);
        return;
    }
    let next = r[kind]["next_fire_at"]
        .as_str()
        .map(|t| format!(", next run {t}"))
        .unwrap_or_default();
    println!(
        "{kind} {name} {} (version {}{next})",
        s(r, "result"),
        r[kind]["version"]
    );
    if r[kind]["spec"]["webhook"] == json!(true) {
        println!("webhook enabled: `cronium {kind} hook {name}` prints its URL and secret");
    }
}

pub fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// A string field of an API answer, `-` when absent.
pub(crate) fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("-")
}

/// An event's schedule as its file says it (`manual` when it has none).
fn schedule_text(schedule: &Value) -> String {
    match schedule {
        Value::Null => "manual".to_string(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Reads an event file, resolving `script_file` relative to it, and checks it locally so that
/// mistakes are reported with the field name before anything is sent.
pub fn read_event_file(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut value: Value = serde_saphyr::from_str(&text)
        .map_err(|e| anyhow!("{}: not valid YAML: {e}", path.display()))?;
    let obj = value
        .as_object_mut()
        .ok_or_else(|| anyhow!("{}: expected a mapping of event fields", path.display()))?;
    if let Some(file) = obj.remove("script_file") {
        let rel = file
            .as_str()
            .ok_or_else(|| anyhow!("{}: script_file: expected a path", path.display()))?;
        if obj.contains_key("script") {
            bail!(
                "{}: give either script or script_file, not both",
                path.display()
            );
        }
        let script_path = path.parent().unwrap_or(Path::new(".")).join(rel);
        let script = std::fs::read_to_string(&script_path).with_context(|| {
            format!(
                "{}: script_file: cannot read {}",
                path.display(),
                script_path.display()
            )
        })?;
        obj.insert("script".into(), Value::String(script));
    }
    cronium_core::spec::from_value(value.clone())
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok(value)
}

pub async fn event(cmd: EventCmd) -> Result<i32> {
    match cmd {
        EventCmd::Apply {
            file,
            prune,
            dry_run,
            client,
        } => {
            if file.is_dir() {
                return crate::workflow::apply_dir("events", &file, prune, dry_run, &client).await;
            }
            if prune {
                bail!("--prune: only with a directory (-f DIR)");
            }
            let body = read_event_file(&file)?;
            if dry_run {
                let body =
                    json!({"kind": "events", "items": [body], "prune": false, "dry_run": true});
                let r = Client::new(&client)?
                    .request(Method::POST, "/api/v1/apply", Some(&body))
                    .await?;
                if client.json {
                    print_json(&r);
                } else {
                    let name = s(&r["changes"][0], "name");
                    match s(&r["changes"][0], "result") {
                        "unchanged" => println!("event {name} unchanged (dry run)"),
                        result => {
                            println!(
                                "event {name} would be {result} (dry run: nothing was changed)"
                            )
                        }
                    }
                }
                return Ok(0);
            }
            let name = body["name"].as_str().unwrap_or_default().to_string();
            let c = Client::new(&client)?;
            let r = c
                .request(Method::PUT, &format!("/api/v1/events/{name}"), Some(&body))
                .await?;
            print_applied("event", &name, &r, client.json);
        }
        EventCmd::List { client } => {
            let r = Client::new(&client)?.get("/api/v1/events").await?;
            if client.json {
                print_json(&r);
            } else {
                let rows: Vec<Vec<String>> = r
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| {
                        // A broken event does not fire whatever its status says: the status
                        // column shows BROKEN and the reason ends the line.
                        let (status, why) = match e["broken"].as_str() {
                            Some(why) => ("BROKEN".to_string(), format!("  ({why})")),
                            None => (s(e, "status").to_string(), String::new()),
                        };
                        vec![
                            s(e, "name").to_string(),
                            s(&e["spec"], "type").to_string(),
                            status,
                            schedule_text(&e["spec"]["schedule"]),
                            format!("{}{why}", s(e, "next_fire_at")),
                        ]
                    })
                    .collect();
                table::print(&["NAME", "TYPE", "STATUS", "SCHEDULE", "NEXT RUN"], &rows);
            }
        }
        EventCmd::Show { name, client } => {
            let r = Client::new(&client)?
                .get(&format!("/api/v1/events/{name}"))
                .await?;
            if client.json {
                print_json(&r);
            } else {
                println!(
                    "name:      {}\nversion:   {}\nstatus:    {}\nnext run:  {}\nlast run:  {}",
                    s(&r, "name"),
                    r["version"],
                    s(&r, "status"),
                    s(&r, "next_fire_at"),
                    s(&r, "last_fired_at")
                );
                if let Some(why) = r["broken"].as_str() {
                    println!(
                        "BROKEN:    {why} (it does not fire until a valid version is applied)"
                    );
                }
                let yaml = serde_saphyr::to_string(&r["spec"]).unwrap_or_default();
                println!("---\n{yaml}");
            }
        }
        EventCmd::Delete { name, client } => {
            Client::new(&client)?
                .request(Method::DELETE, &format!("/api/v1/events/{name}"), None)
                .await?;
            if client.json {
                print_json(&json!({"deleted": name}));
            } else {
                println!("event {name} deleted");
            }
        }
        EventCmd::Hook {
            name,
            rotate,
            client,
        } => return crate::notify::hook("event", &name, rotate, &client).await,
        EventCmd::Run {
            name,
            input,
            follow,
            client,
        } => {
            let body = match input {
                Some(text) => {
                    let v: Value = serde_json::from_str(&text)
                        .map_err(|e| anyhow!("--input: not valid JSON: {e}"))?;
                    json!({"input": v})
                }
                None => json!({}),
            };
            let c = Client::new(&client)?;
            let path = format!("/api/v1/events/{name}/run");
            return start_job(&c, &path, &body, follow, client.json).await;
        }
    }
    Ok(0)
}

/// POSTs `body` to `path`, which answers with a new job: prints its id, or with `follow`
/// streams its log and exits as the job ended (the job itself printed too with `json`).
async fn start_job(c: &Client, path: &str, body: &Value, follow: bool, json: bool) -> Result<i32> {
    let r = c.request(Method::POST, path, Some(body)).await?;
    let id = r["id"]
        .as_i64()
        .ok_or_else(|| anyhow!("server returned no job id"))?;
    if !follow {
        if json {
            print_json(&json!({"id": id}));
        } else {
            println!("{id}");
        }
        return Ok(0);
    }
    let end = c.follow(id, 0).await?;
    if json {
        print_json(&c.get(&format!("/api/v1/jobs/{id}")).await?);
    }
    Ok(exit_code_for(&end))
}

/// An execution's `usage` in one line: `cpu 243 ms (user 200 ms, system 43 ms), peak memory
/// 50.2 MiB (largest process)`, then a container's cgroup figures; `None` when not measured.
fn usage_line(u: &Value) -> Option<String> {
    if u.is_null() {
        return None;
    }
    let ms = |k: &str| u[k].as_i64();
    let mut parts = Vec::new();
    if let (Some(user), Some(sys)) = (ms("cpu_user_ms"), ms("cpu_system_ms")) {
        parts.push(format!(
            "cpu {} ms (user {user} ms, system {sys} ms)",
            user + sys
        ));
    }
    if let Some(b) = ms("max_rss_bytes") {
        parts.push(format!(
            "peak memory {} (largest process)",
            cronium_docker::format_bytes(b)
        ));
    }
    if let Some(c) = ms("cgroup_cpu_ms") {
        parts.push(format!("container cpu {c} ms"));
    }
    if let Some(b) = ms("cgroup_memory_peak_bytes") {
        parts.push(format!(
            "container peak memory {}",
            cronium_docker::format_bytes(b)
        ));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

pub async fn job(cmd: JobCmd) -> Result<i32> {
    match cmd {
        JobCmd::List {
            event,
            status,
            limit,
            client,
        } => {
            let mut q = vec![format!("limit={limit}")];
            if let Some(e) = event {
                q.push(format!("event={e}"));
            }
            if let Some(st) = status {
                q.push(format!("status={st}"));
            }
            let r = Client::new(&client)?
                .get(&format!("/api/v1/jobs?{}", q.join("&")))
                .await?;
            if client.json {
                print_json(&r);
            } else {
                let rows: Vec<Vec<String>> = r
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|j| {
                        vec![
                            j["id"].to_string(),
                            s(j, "event").to_string(),
                            s(j, "status").to_string(),
                            s(j, "trigger").to_string(),
                            j["exit_code"]
                                .as_i64()
                                .map_or_else(|| "-".to_string(), |c| c.to_string()),
                            s(j, "created_at").to_string(),
                        ]
                    })
                    .collect();
                table::print(
                    &["ID", "EVENT", "STATUS", "TRIGGER", "EXIT", "CREATED"],
                    &rows,
                );
            }
        }
        JobCmd::Show { id, client } => {
            let r = Client::new(&client)?
                .get(&format!("/api/v1/jobs/{id}"))
                .await?;
            if client.json {
                print_json(&r);
            } else {
                println!(
                    "job {} of {} ({}): {}",
                    r["id"],
                    s(&r, "event"),
                    s(&r, "trigger"),
                    s(&r, "status")
                );
                if let Some(w) = r["waiting_for"].as_str() {
                    println!("waiting for {w}");
                }
                if let Some(tags) = r["agent_tags"].as_array().filter(|t| !t.is_empty()) {
                    let tags: Vec<&str> = tags.iter().filter_map(Value::as_str).collect();
                    println!("agent tags: {}", tags.join(", "));
                }
                println!("exit code: {}", r["exit_code"]);
                if let Some(e) = r["error"].as_str() {
                    println!("error:     {e}");
                }
                println!("output:    {}", r["output"]);
                for x in r["executions"].as_array().into_iter().flatten() {
                    println!(
                        "  execution {} attempt {} server {} {} exit {} runner {} ({} ms)",
                        x["id"],
                        x["attempt"],
                        x["server"].as_str().unwrap_or("-"),
                        s(x, "status"),
                        x["exit_code"],
                        s(x, "runner_version"),
                        x["run_ms"]
                    );
                    if let Some(note) = x["note"].as_str() {
                        println!("    note: {note}");
                    }
                    if let Some(line) = usage_line(&x["usage"]) {
                        println!("    usage: {line}");
                    }
                    if let Some(h) = x["helpers"].as_str() {
                        match x["helpers_note"].as_str() {
                            Some(note) => println!("    helpers: {h} (fell back from api: {note})"),
                            None => println!("    helpers: {h}"),
                        }
                    }
                }
            }
        }
        JobCmd::Logs { id, follow, client } => {
            let c = Client::new(&client)?;
            if follow {
                let end = c.follow(id, 0).await?;
                return Ok(exit_code_for(&end));
            }
            let mut after = 0;
            loop {
                let page = c
                    .get(&format!("/api/v1/jobs/{id}/logs?after={after}&limit=5000"))
                    .await?;
                let lines = page["lines"].as_array().cloned().unwrap_or_default();
                for l in &lines {
                    if client.json {
                        println!("{l}");
                    } else {
                        print_line(l);
                    }
                }
                after = page["next_after"].as_i64().unwrap_or(after);
                if lines.len() < 5000 {
                    break;
                }
            }
        }
        JobCmd::Cancel { id, client } => {
            let r = Client::new(&client)?
                .request(Method::POST, &format!("/api/v1/jobs/{id}/cancel"), None)
                .await?;
            if client.json {
                print_json(&r);
            } else {
                let what = if s(&r, "status").parse() == Ok(JobStatus::Cancelled) {
                    "cancelled"
                } else {
                    "cancellation requested"
                };
                println!("job {id}: {what}");
            }
        }
        JobCmd::Retry {
            id,
            failed_only,
            follow,
            client,
        } => {
            let c = Client::new(&client)?;
            let body = json!({"failed_only": failed_only});
            let path = format!("/api/v1/jobs/{id}/retry");
            return start_job(&c, &path, &body, follow, client.json).await;
        }
    }
    Ok(0)
}

/// A command-line value: JSON when it parses as JSON, otherwise the string itself.
pub fn json_or_string(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

pub async fn var(cmd: VarCmd) -> Result<i32> {
    match cmd {
        VarCmd::Get { name, client } => {
            let r = Client::new(&client)?
                .get(&format!("/api/v1/variables/{name}"))
                .await?;
            if client.json {
                print_json(&r);
            } else if r["secret"].as_bool() == Some(true) {
                bail!("variable {name} is secret: its value cannot be read back");
            } else {
                match &r["value"] {
                    Value::String(s) => println!("{s}"),
                    v => println!("{v}"),
                }
            }
        }
        VarCmd::Set {
            name,
            value,
            secret,
            client,
        } => {
            let body = json!({"value": json_or_string(&value), "secret": secret});
            let r = Client::new(&client)?
                .request(
                    Method::PUT,
                    &format!("/api/v1/variables/{name}"),
                    Some(&body),
                )
                .await?;
            if client.json {
                print_json(&r);
            } else {
                println!(
                    "variable {name} set{}",
                    if secret { " (secret)" } else { "" }
                );
            }
        }
        VarCmd::List { client } => {
            let r = Client::new(&client)?.get("/api/v1/variables").await?;
            if client.json {
                print_json(&r);
            } else {
                let rows: Vec<Vec<String>> = r
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|v| {
                        let shown = if v["secret"].as_bool() == Some(true) {
                            "******** (secret)".to_string()
                        } else {
                            v["value"].to_string()
                        };
                        vec![s(v, "name").to_string(), shown]
                    })
                    .collect();
                table::print(&["NAME", "VALUE"], &rows);
            }
        }
        VarCmd::Delete { name, client } => {
            Client::new(&client)?
                .request(Method::DELETE, &format!("/api/v1/variables/{name}"), None)
                .await?;
            if !client.json {
                println!("variable {name} deleted");
            }
        }
    }
    Ok(0)
}

pub async fn token(cmd: TokenCmd) -> Result<i32> {
    match cmd {
        TokenCmd::Create {
            name,
            role,
            expires,
            user,
            client,
        } => {
            let mut body = json!({"name": name});
            if let Some(r) = role {
                body["role"] = json!(r);
            }
            if let Some(e) = expires {
                body["expires_in"] = json!(e);
            }
            if let Some(u) = user {
                body["user"] = json!(u);
            }
            let r = Client::new(&client)?
                .request(Method::POST, "/api/v1/tokens", Some(&body))
                .await?;
            if client.json {
                print_json(&r);
            } else {
                println!("{}", s(&r, "token"));
                eprintln!(
                    "token {} created (id {}); it is shown only this once",
                    name, r["id"]
                );
            }
        }
        TokenCmd::List { client } => {
            let r = Client::new(&client)?.get("/api/v1/tokens").await?;
            if client.json {
                print_json(&r);
            } else {
                let rows: Vec<Vec<String>> = r
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| {
                        vec![
                            t["id"].to_string(),
                            s(t, "name").to_string(),
                            s(t, "user").to_string(),
                            t["role"].as_str().unwrap_or("(user's)").to_string(),
                            s(t, "created_at").to_string(),
                            t["expires_at"].as_str().unwrap_or("never").to_string(),
                            s(t, "last_used_at").to_string(),
                            s(t, "revoked_at").to_string(),
                        ]
                    })
                    .collect();
                table::print(
                    &[
                        "ID",
                        "NAME",
                        "USER",
                        "ROLE",
                        "CREATED",
                        "EXPIRES",
                        "LAST USED",
                        "REVOKED",
                    ],
                    &rows,
                );
            }
        }
        TokenCmd::Revoke { id, client } => {
            Client::new(&client)?
                .request(Method::DELETE, &format!("/api/v1/tokens/{id}"), None)
                .await?;
            if !client.json {
                println!("token {id} revoked");
            }
        }
    }
    Ok(0)
}

fn env_secret(var: &str, what: &str) -> Result<String> {
    std::env::var(var)
        .map_err(|_| anyhow!("--{what}-env {var}: the environment variable is not set"))
}

/// Puts the credential the flags name into a server body: `private_key` (read from the file)
/// with its `passphrase`, or `password`; secrets come from files and the environment, never
/// from the command line.
fn credential_fields(
    body: &mut Value,
    key_file: Option<PathBuf>,
    passphrase_env: Option<String>,
    password_env: Option<String>,
) -> Result<()> {
    match (key_file, password_env) {
        (Some(path), None) => {
            let pem = std::fs::read_to_string(&path)
                .with_context(|| format!("--key-file: cannot read {}", path.display()))?;
            body["private_key"] = json!(pem);
            if let Some(var) = passphrase_env {
                body["passphrase"] = json!(env_secret(&var, "passphrase")?);
            }
        }
        (None, Some(_)) if passphrase_env.is_some() => {
            bail!("--passphrase-env goes with --key-file, not --password-env")
        }
        (None, Some(var)) => body["password"] = json!(env_secret(&var, "password")?),
        _ => bail!("give --key-file PATH or --password-env VAR"),
    }
    Ok(())
}

/// `1.5g`-style sizes for the tables (powers of 1024).
fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["", "k", "m", "g", "t"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b}")
    } else {
        format!("{v:.1}{}", UNITS[unit])
    }
}

fn percent(part: u64, total: u64) -> f64 {
    if total == 0 {
        100.0
    } else {
        part as f64 * 100.0 / total as f64
    }
}

/// The fuller of the work and deploy directories' file systems: `1.2g (4%)`.
fn disk_free(reading: &Value) -> String {
    let dirs = [&reading["work_dir"], &reading["deploy_dir"]];
    let worst = dirs
        .iter()
        .filter_map(|d| Some((d["free_bytes"].as_u64()?, d["total_bytes"].as_u64()?)))
        .min_by(|a, b| percent(a.0, a.1).total_cmp(&percent(b.0, b.1)));
    match worst {
        Some((free, total)) => format!("{} ({:.0}%)", human_bytes(free), percent(free, total)),
        None => "-".into(),
    }
}

fn mem_available(reading: &Value) -> String {
    match (
        reading["memory_available_bytes"].as_u64(),
        reading["memory_total_bytes"].as_u64(),
    ) {
        (Some(a), Some(t)) => format!("{} ({:.0}%)", human_bytes(a), percent(a, t)),
        _ => "-".into(),
    }
}

/// The health part of `server show`.
fn print_health(h: &Value) {
    println!("health:    {}", h["status"].as_str().unwrap_or("?"));
    for reason in h["reasons"].as_array().into_iter().flatten() {
        println!("  {}", reason.as_str().unwrap_or_default());
    }
    let at = |k: &str| h[k].as_str().unwrap_or("never").to_string();
    println!(
        "  checked {}, last contact {}, {} failure(s) in a row",
        at("checked_at"),
        at("last_contact_at"),
        h["failures"]
    );
    if let Some(e) = h["error"].as_str() {
        println!("  last error: {e}");
    }
    let r = &h["reading"];
    if r.is_object() {
        let load: Vec<String> = r["load"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_f64)
            .map(|l| format!("{l:.2}"))
            .collect();
        println!(
            "  reading of {}: runner {}, {} CPU(s), load {}, up {}s",
            at("reading_at"),
            r["runner_version"].as_str().unwrap_or("?"),
            r["cpus"],
            load.join(" "),
            r["uptime_s"]
        );
        println!("  memory: {} available", mem_available(r));
        for (what, key) in [("work dir", "work_dir"), ("deploy dir", "deploy_dir")] {
            let d = &r[key];
            let (free, total) = (
                d["free_bytes"].as_u64().unwrap_or(0),
                d["total_bytes"].as_u64().unwrap_or(0),
            );
            println!(
                "  {what}: {} has {} free of {} ({:.1}%)",
                d["path"].as_str().unwrap_or("?"),
                human_bytes(free),
                human_bytes(total),
                percent(free, total)
            );
        }
    }
}

pub async fn server(cmd: ServerCmd) -> Result<i32> {
    match cmd {
        ServerCmd::Add {
            name,
            host,
            port,
            user,
            key_file,
            passphrase_env,
            password_env,
            host_key,
            tags,
            client,
        } => {
            let mut body =
                json!({"name": name, "host": host, "port": port, "user": user, "tags": tags});
            credential_fields(&mut body, key_file, passphrase_env, password_env)?;
            if let Some(k) = host_key {
                body["host_key"] = json!(k);
            }
            let r = Client::new(&client)?
                .request(Method::POST, "/api/v1/servers", Some(&body))
                .await?;
            if client.json {
                print_json(&r);
            } else {
                println!(
                    "server {} added ({}@{}:{})",
                    s(&r, "name"),
                    s(&r, "user"),
                    s(&r, "host"),
                    r["port"]
                );
            }
        }
        ServerCmd::List { client } => {
            let r = Client::new(&client)?.get("/api/v1/servers").await?;
            if client.json {
                print_json(&r);
            } else {
                let rows: Vec<Vec<String>> = r
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|v| {
                        let key = if !v["pending_host_key"].is_null() {
                            "CHANGED"
                        } else if v["host_key"].is_null() {
                            "unpinned"
                        } else {
                            "pinned"
                        };
                        let tags: Vec<&str> = v["tags"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|t| t.as_str())
                            .collect();
                        let h = &v["health"];
                        let reading = &h["reading"];
                        vec![
                            s(v, "name").to_string(),
                            format!("{}:{}", s(v, "host"), v["port"]),
                            s(v, "user").to_string(),
                            key.to_string(),
                            v["arch"].as_str().unwrap_or("-").to_string(),
                            h["status"].as_str().unwrap_or("?").to_string(),
                            reading["runner_version"]
                                .as_str()
                                .unwrap_or("-")
                                .to_string(),
                            reading["load"][0]
                                .as_f64()
                                .map_or_else(|| "-".into(), |l| format!("{l:.2}")),
                            disk_free(reading),
                            mem_available(reading),
                            tags.join(","),
                        ]
                    })
                    .collect();
                table::print(
                    &[
                        "NAME",
                        "ADDRESS",
                        "USER",
                        "HOST KEY",
                        "ARCH",
                        "HEALTH",
                        "RUNNER",
                        "LOAD",
                        "DISK FREE",
                        "MEM AVAIL",
                        "TAGS",
                    ],
                    &rows,
                );
            }
        }
        ServerCmd::Show { name, client } => {
            let r = Client::new(&client)?
                .get(&format!("/api/v1/servers/{name}"))
                .await?;
            if client.json {
                print_json(&r);
            } else {
                println!(
                    "name:      {}\naddress:   {}:{}\nuser:      {}\nauth:      {}\nhost key:  {}",
                    s(&r, "name"),
                    s(&r, "host"),
                    r["port"],
                    s(&r, "user"),
                    s(&r, "auth"),
                    s(&r, "host_key")
                );
                match (r["os"].as_str(), r["arch"].as_str()) {
                    (Some(os), Some(arch)) => println!(
                        "system:    {os} {arch} (detected {})",
                        s(&r, "platform_detected_at")
                    ),
                    _ => println!("system:    not detected yet (on the first deployment or test)"),
                }
                if let Some(p) = r["pending_host_key"].as_str() {
                    println!("CHANGED host key presented: {p}\n  check it, then: cronium server accept-key {name}");
                }
                match r["runner"].as_object() {
                    Some(runner) => println!(
                        "runner:    {} (verified {})",
                        runner["path"].as_str().unwrap_or("?"),
                        runner["verified_at"].as_str().unwrap_or("?")
                    ),
                    None => println!("runner:    not known to be deployed"),
                }
                if let Some(v) = r["runner_version"].as_str() {
                    println!(
                        "version:   {v} ({})",
                        r["runner_version_source"].as_str().unwrap_or("?")
                    );
                }
                print_health(&r["health"]);
                for d in r["deployments"].as_array().into_iter().flatten() {
                    println!(
                        "  deployment {} {} {} ({} attempts, {} ms){}",
                        s(d, "at"),
                        s(d, "version"),
                        s(d, "outcome"),
                        d["attempts"],
                        d["duration_ms"],
                        d["error"]
                            .as_str()
                            .map(|e| format!(": {e}"))
                            .unwrap_or_default()
                    );
                }
            }
        }
        ServerCmd::Test { name, client } => {
            let r = Client::new(&client)?
                .request(Method::POST, &format!("/api/v1/servers/{name}/test"), None)
                .await?;
            if client.json {
                print_json(&r);
            } else {
                let yes = |b: &Value| {
                    if b.as_bool() == Some(true) {
                        "yes"
                    } else {
                        "no"
                    }
                };
                println!("reachable:     {}", yes(&r["reachable"]));
                println!("authenticated: {}", yes(&r["authenticated"]));
                println!(
                    "host key:      {} ({})",
                    s(&r, "host_key_fingerprint"),
                    s(&r, "host_key_status")
                );
                println!("system:        {} {}", s(&r, "os"), s(&r, "arch"));
                println!(
                    "runner:        {}",
                    r["runner_version"].as_str().unwrap_or("not deployed")
                );
                println!("latency:       {} ms", r["latency_ms"]);
                if let Some(e) = r["error"].as_str() {
                    println!("error:         {e}");
                }
            }
            let ok = r["reachable"].as_bool() == Some(true)
                && r["authenticated"].as_bool() == Some(true)
                && r["host_key_status"] != "changed";
            return Ok(if ok { 0 } else { 1 });
        }
        ServerCmd::Deploy { names, tag, client } => {
            let body = json!({ "servers": names, "tag": tag });
            let v = crate::rollout::deploy(&Client::new(&client)?, &body, client.json).await?;
            let failed = v
                .as_array()
                .into_iter()
                .flatten()
                .any(|l| s(l, "outcome") == "failed");
            return Ok(if failed { 1 } else { 0 });
        }
        ServerCmd::Remove { name, client } => {
            Client::new(&client)?
                .request(Method::DELETE, &format!("/api/v1/servers/{name}"), None)
                .await?;
            if !client.json {
                println!("server {name} removed");
            }
        }
        ServerCmd::SetKey {
            name,
            key_file,
            passphrase_env,
            password_env,
            client,
        } => {
            let mut body = json!({});
            credential_fields(&mut body, key_file, passphrase_env, password_env)?;
            let r = Client::new(&client)?
                .request(
                    Method::PUT,
                    &format!("/api/v1/servers/{name}/credential"),
                    Some(&body),
                )
                .await?;
            if client.json {
                print_json(&r);
            } else {
                println!(
                    "server {name}: new {} credential tested and stored",
                    s(&r, "auth")
                );
            }
        }
        ServerCmd::AcceptKey {
            name,
            host_key,
            client,
        } => {
            let body = match host_key {
                Some(k) => json!({"host_key": k}),
                None => json!({}),
            };
            let r = Client::new(&client)?
                .request(
                    Method::POST,
                    &format!("/api/v1/servers/{name}/accept-key"),
                    Some(&body),
                )
                .await?;
            if client.json {
                print_json(&r);
            } else {
                println!("server {name}: host key trusted: {}", s(&r, "host_key"));
            }
        }
    }
    Ok(0)
}

/// `cronium runner ...`.
pub async fn runner(cmd: RunnerCmd) -> Result<i32> {
    match cmd {
        RunnerCmd::List { client } => {
            let v = Client::new(&client)?.get("/api/v1/runners").await?;
            if client.json {
                print_json(&v);
            } else {
                let rows: Vec<Vec<String>> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        vec![
                            s(a, "os").to_string(),
                            s(a, "arch").to_string(),
                            s(a, "version").to_string(),
                            s(a, "sha256").chars().take(12).collect(),
                            a["size_bytes"].to_string(),
                            if a["active"].as_bool() == Some(true) {
                                "yes"
                            } else {
                                "no"
                            }
                            .to_string(),
                            s(a, "added_at").to_string(),
                            s(a, "path").to_string(),
                        ]
                    })
                    .collect();
                table::print(
                    &[
                        "OS", "ARCH", "VERSION", "SHA256", "SIZE", "ACTIVE", "ADDED", "PATH",
                    ],
                    &rows,
                );
            }
        }
        RunnerCmd::Add { path, client } => {
            let path = std::path::absolute(&path)
                .map(|p| p.display().to_string())
                .unwrap_or(path);
            let r = Client::new(&client)?
                .request(
                    Method::POST,
                    "/api/v1/runners",
                    Some(&json!({ "path": path })),
                )
                .await?;
            if client.json {
                print_json(&r);
            } else {
                println!(
                    "runner {} for {}/{} registered (sha256 {})",
                    s(&r, "version"),
                    s(&r, "os"),
                    s(&r, "arch"),
                    s(&r, "sha256").chars().take(12).collect::<String>()
                );
            }
        }
        RunnerCmd::Pin {
            version,
            server,
            tag,
            client,
        } => {
            let body = json!({ "version": version, "server": server, "tag": tag });
            let r = Client::new(&client)?
                .request(Method::POST, "/api/v1/runners/pins", Some(&body))
                .await?;
            if client.json {
                print_json(&r);
            } else {
                println!("{} pinned to runner {}", pin_target(&r), s(&r, "version"));
            }
        }
        RunnerCmd::Unpin {
            server,
            tag,
            client,
        } => {
            let body = json!({ "server": server, "tag": tag });
            Client::new(&client)?
                .request(Method::POST, "/api/v1/runners/pins/remove", Some(&body))
                .await?;
            if !client.json {
                println!("{} unpinned", pin_target(&body));
            }
        }
        RunnerCmd::Pins { client } => {
            let v = Client::new(&client)?.get("/api/v1/runners/pins").await?;
            if client.json {
                print_json(&v);
            } else {
                let rows: Vec<Vec<String>> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        vec![
                            pin_target(p),
                            s(p, "version").to_string(),
                            s(p, "set_at").to_string(),
                            s(p, "set_by").to_string(),
                        ]
                    })
                    .collect();
                table::print(&["PIN", "VERSION", "SET", "BY"], &rows);
            }
        }
        RunnerCmd::Rollout {
            version,
            tag,
            batch,
            pause,
            client,
        } => {
            let api = Client::new(&client)?;
            let body = json!({ "version": version, "tag": tag, "batch": batch, "pause": pause });
            let started = api
                .request(Method::POST, "/api/v1/runners/rollouts", Some(&body))
                .await?;
            let id = started["id"]
                .as_i64()
                .ok_or_else(|| anyhow!("the server answered without a rollout id"))?;
            let end = crate::rollout::follow(&api, id, client.json).await?;
            return Ok(if s(&end, "status") == "succeeded" {
                0
            } else {
                1
            });
        }
        RunnerCmd::Rollouts { id, client } => {
            let api = Client::new(&client)?;
            match id {
                Some(id) => {
                    let r = api.get(&format!("/api/v1/runners/rollouts/{id}")).await?;
                    if client.json {
                        print_json(&r);
                    } else {
                        crate::rollout::print_summary(&r);
                    }
                }
                None => {
                    let v = api.get("/api/v1/runners/rollouts").await?;
                    if client.json {
                        print_json(&v);
                    } else {
                        let rows: Vec<Vec<String>> = v
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|r| {
                                vec![
                                    r["id"].to_string(),
                                    s(r, "version").to_string(),
                                    r["tag"].as_str().unwrap_or("(all)").to_string(),
                                    s(r, "batch").to_string(),
                                    s(r, "status").to_string(),
                                    s(r, "created_at").to_string(),
                                    r["error"].as_str().unwrap_or("").to_string(),
                                ]
                            })
                            .collect();
                        table::print(
                            &[
                                "ID", "VERSION", "TAG", "BATCH", "STATUS", "STARTED", "ERROR",
                            ],
                            &rows,
                        );
                    }
                }
            }
        }
        RunnerCmd::Rollback {
            rollout,
            tag,
            client,
        } => {
            let body = json!({ "rollout": rollout, "tag": tag });
            let r = Client::new(&client)?
                .request(Method::POST, "/api/v1/runners/rollback", Some(&body))
                .await?;
            if client.json {
                print_json(&r);
            } else {
                crate::rollout::print_summary(&r);
            }
        }
    }
    Ok(0)
}

/// `server web1` or `tag web` of a pin (or of a pin request's body).
fn pin_target(p: &Value) -> String {
    match (p["server"].as_str(), p["tag"].as_str()) {
        (Some(server), _) => format!("server {server}"),
        (None, Some(tag)) => format!("tag {tag}"),
        _ => "?".into(),
    }
}
