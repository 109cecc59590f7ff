//! `cronium workflow ...`, and the directory form of `event apply` / `workflow apply` (every
//! `*.yaml`, `*.yml` and `*.json` of a directory, validated here first, then applied by the
//! server in one transaction: all or nothing).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use cronium_client::Method;
use serde_json::{json, Value};

use crate::cli::{ClientOpts, WorkflowCmd};
use crate::client::Client;
use crate::commands::{print_applied, print_json, read_event_file, s};
use crate::table;

/// Reads a workflow file, resolving each inline node's `script_file` relative to it, and
/// checks it locally so that mistakes are reported with the node and field before anything is
/// sent (`release.yaml: nodes[2].after.deploy: unknown node`).
pub fn read_workflow_file(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut value: Value = serde_saphyr::from_str(&text)
        .map_err(|e| anyhow!("{}: not valid YAML: {e}", path.display()))?;
    let nodes = value
        .get_mut("nodes")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten();
    for (i, node) in nodes.enumerate() {
        let Some(obj) = node.as_object_mut() else {
            continue;
        };
        let Some(file) = obj.remove("script_file") else {
            continue;
        };
        let rel = file.as_str().ok_or_else(|| {
            anyhow!(
                "{}: nodes[{i}].script_file: expected a path",
                path.display()
            )
        })?;
        if obj.contains_key("script") {
            bail!(
                "{}: nodes[{i}]: give either script or script_file, not both",
                path.display()
            );
        }
        let script_path = path.parent().unwrap_or(Path::new(".")).join(rel);
        let script = std::fs::read_to_string(&script_path).with_context(|| {
            format!(
                "{}: nodes[{i}].script_file: cannot read {}",
                path.display(),
                script_path.display()
            )
        })?;
        obj.insert("script".into(), Value::String(script));
    }
    cronium_core::workflow::from_value(value.clone())
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok(value)
}

/// The files a directory apply reads: `*.yaml`, `*.yml` and `*.json`, by name.
fn dir_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if path.is_file() && matches!(ext, "yaml" | "yml" | "json") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// What a directory holds, every file validated, with no two files of one name.
fn read_dir(dir: &Path, read: fn(&Path) -> Result<Value>) -> Result<Vec<(PathBuf, Value)>> {
    let mut items: Vec<(PathBuf, Value)> = Vec::new();
    for file in dir_files(dir)? {
        let value = read(&file)?;
        let name = value["name"].as_str().unwrap_or_default().to_string();
        if let Some((other, _)) = items.iter().find(|(_, v)| v["name"] == name.as_str()) {
            bail!(
                "{}: name: `{name}` is also the name in {}",
                file.display(),
                other.display()
            );
        }
        items.push((file, value));
    }
    Ok(items)
}

/// The server names an item of the batch by its index (`items[2].nodes[1].event: ...`):
/// name its file instead.
fn name_the_file(message: &str, files: &[PathBuf]) -> String {
    let parsed = message
        .strip_prefix("items[")
        .and_then(|r| r.split_once(']'))
        .and_then(|(k, rest)| Some((k.parse::<usize>().ok()?, rest)));
    match parsed.and_then(|(k, rest)| Some((files.get(k)?, rest))) {
        Some((file, rest)) => format!(
            "{}: {}",
            file.display(),
            rest.strip_prefix('.').unwrap_or(rest)
        ),
        None => message.to_string(),
    }
}

/// `event apply -f DIR` / `workflow apply -f DIR`: one request, one transaction.
pub async fn apply_dir(
    kind: &str,
    dir: &Path,
    prune: bool,
    dry_run: bool,
    client: &ClientOpts,
) -> Result<i32> {
    let read = if kind == "events" {
        read_event_file
    } else {
        read_workflow_file
    };
    let (files, items): (Vec<PathBuf>, Vec<Value>) = read_dir(dir, read)?.into_iter().unzip();
    let body = json!({"kind": kind, "items": items, "prune": prune, "dry_run": dry_run});
    let r = Client::new(client)?
        .request(Method::POST, "/api/v1/apply", Some(&body))
        .await
        .map_err(|e| anyhow!("{}", name_the_file(&e.to_string(), &files)))?;
    if client.json {
        print_json(&r);
        return Ok(0);
    }
    let singular = kind.trim_end_matches('s');
    let changes = r["changes"].as_array().cloned().unwrap_or_default();
    for c in &changes {
        let result = s(c, "result");
        if dry_run {
            if result == "unchanged" {
                println!("{singular} {} unchanged", s(c, "name"));
            } else {
                println!("{singular} {} would be {result}", s(c, "name"));
            }
        } else {
            println!("{singular} {} {result}", s(c, "name"));
        }
    }
    if dry_run {
        println!("(dry run: nothing was changed)");
    }
    Ok(0)
}

fn short(v: &Value, max: usize) -> String {
    let text = match v {
        Value::Null => "-".to_string(),
        other => other.to_string(),
    };
    if text.chars().count() > max {
        let cut: String = text.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// The process exit code for a finished workflow run: 0 when it succeeded, 124 when it timed
/// out, 1 otherwise.
pub fn run_exit_code(status: &str) -> i32 {
    match status {
        "succeeded" => 0,
        "timed_out" => 124,
        _ => 1,
    }
}

/// Follows a run to its end, then prints its nodes' outcome (stderr) and returns the exit code.
async fn follow(c: &Client, id: i64, json_out: bool) -> Result<i32> {
    let end = c.follow_run(id).await?;
    let status = end["status"].as_str().unwrap_or("unknown").to_string();
    let detail = c.get(&format!("/api/v1/workflow-runs/{id}")).await?;
    if json_out {
        print_json(&detail);
    } else {
        for e in detail["explain"].as_array().into_iter().flatten() {
            eprintln!("  {}: {}", s(e, "node"), s(e, "why"));
        }
        let error = detail["run"]["error"]
            .as_str()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        eprintln!("workflow run {id} {status}{error}");
    }
    Ok(run_exit_code(&status))
}

pub async fn workflow(cmd: WorkflowCmd) -> Result<i32> {
    match cmd {
        WorkflowCmd::Apply {
            file,
            prune,
            dry_run,
            client,
        } => {
            if file.is_dir() {
                return apply_dir("workflows", &file, prune, dry_run, &client).await;
            }
            if prune {
                bail!("--prune: only with a directory (-f DIR)");
            }
            let body = read_workflow_file(&file)?;
            let name = body["name"].as_str().unwrap_or_default().to_string();
            if dry_run {
                let body =
                    json!({"kind": "workflows", "items": [body], "prune": false, "dry_run": true});
                let r = Client::new(&client)?
                    .request(Method::POST, "/api/v1/apply", Some(&body))
                    .await?;
                if client.json {
                    print_json(&r);
                } else {
                    match s(&r["changes"][0], "result") {
                        "unchanged" => println!("workflow {name} unchanged (dry run)"),
                        result => println!(
                            "workflow {name} would be {result} (dry run: nothing was changed)"
                        ),
                    }
                }
                return Ok(0);
            }
            let r = Client::new(&client)?
                .request(
                    Method::PUT,
                    &format!("/api/v1/workflows/{name}"),
                    Some(&body),
                )
                .await?;
            print_applied("workflow", &name, &r, client.json);
        }
        WorkflowCmd::List { client } => {
            let r = Client::new(&client)?.get("/api/v1/workflows").await?;
            if client.json {
                print_json(&r);
            } else {
                let rows: Vec<Vec<String>> = r
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|w| {
                        let (status, why) = match w["broken"].as_str() {
                            Some(why) => ("BROKEN".to_string(), format!("  ({why})")),
                            None => (s(w, "status").to_string(), String::new()),
                        };
                        vec![
                            s(w, "name").to_string(),
                            w["version"].to_string(),
                            w["spec"]["nodes"]
                                .as_array()
                                .map_or(0, Vec::len)
                                .to_string(),
                            status,
                            w["spec"]["schedule"]
                                .as_str()
                                .unwrap_or("manual")
                                .to_string(),
                            format!("{}{why}", s(w, "next_fire_at")),
                        ]
                    })
                    .collect();
                table::print(
                    &["NAME", "VERSION", "NODES", "STATUS", "SCHEDULE", "NEXT RUN"],
                    &rows,
                );
            }
        }
        WorkflowCmd::Show { name, client } => {
            let r = Client::new(&client)?
                .get(&format!("/api/v1/workflows/{name}"))
                .await?;
            if client.json {
                print_json(&r);
            } else {
                let w = &r["workflow"];
                println!(
                    "name:      {}\nversion:   {}\nstatus:    {}\nnext run:  {}\nlast run:  {}",
                    s(w, "name"),
                    w["version"],
                    s(w, "status"),
                    s(w, "next_fire_at"),
                    s(w, "last_fired_at")
                );
                if let Some(why) = w["broken"].as_str() {
                    println!("BROKEN:    {why}");
                }
                let rows: Vec<Vec<String>> = r["nodes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|n| {
                        let what = match s(n, "kind") {
                            "workflow" => format!("workflow {}", s(n, "workflow")),
                            "inline" => "inline script".to_string(),
                            _ => format!("event {}", s(n, "event")),
                        };
                        let after: Vec<String> = n["after"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|e| format!("{}:{}", s(e, "from"), s(e, "on")))
                            .collect();
                        vec![
                            s(n, "id").to_string(),
                            what,
                            if after.is_empty() {
                                "-".to_string()
                            } else {
                                after.join(", ")
                            },
                            s(n, "join").to_string(),
                        ]
                    })
                    .collect();
                println!();
                table::print(&["NODE", "RUNS", "AFTER", "JOIN"], &rows);
                let versions: Vec<String> = r["versions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|v| format!("{} ({})", v["version"], s(v, "created_at")))
                    .collect();
                println!("\nversions:  {}", versions.join(", "));
            }
        }
        WorkflowCmd::Hook {
            name,
            rotate,
            client,
        } => return crate::notify::hook("workflow", &name, rotate, &client).await,
        WorkflowCmd::Run {
            name,
            input,
            follow: follow_logs,
            client,
        } => {
            let body = match input {
                Some(text) => {
                    let v: Value = serde_json::from_str(&text)
                        .map_err(|e| anyhow!("--input: not valid JSON: {e}"))?;
                    if !v.is_object() {
                        bail!("--input: expected a JSON object");
                    }
                    json!({"input": v})
                }
                None => json!({}),
            };
            let c = Client::new(&client)?;
            let r = c
                .request(
                    Method::POST,
                    &format!("/api/v1/workflows/{name}/runs"),
                    Some(&body),
                )
                .await?;
            let id = r["id"]
                .as_i64()
                .ok_or_else(|| anyhow!("server returned no run id"))?;
            if !follow_logs {
                if client.json {
                    print_json(&json!({"id": id}));
                } else {
                    println!("{id}");
                }
                return Ok(0);
            }
            if !client.json {
                eprintln!("workflow run {id} started");
            }
            return follow(&c, id, client.json).await;
        }
        WorkflowCmd::Runs {
            name,
            limit,
            client,
        } => {
            let r = Client::new(&client)?
                .get(&format!("/api/v1/workflows/{name}/runs?limit={limit}"))
                .await?;
            if client.json {
                print_json(&r);
            } else {
                let rows: Vec<Vec<String>> = r
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|run| {
                        vec![
                            run["id"].to_string(),
                            s(run, "status").to_string(),
                            s(run, "trigger").to_string(),
                            run["attempt"].to_string(),
                            run["retry_of"]
                                .as_i64()
                                .map_or("-".to_string(), |r| r.to_string()),
                            s(run, "created_at").to_string(),
                            s(run, "finished_at").to_string(),
                        ]
                    })
                    .collect();
                table::print(
                    &[
                        "ID", "STATUS", "TRIGGER", "ATTEMPT", "RETRY OF", "CREATED", "FINISHED",
                    ],
                    &rows,
                );
            }
        }
        WorkflowCmd::RunShow {
            run,
            explain,
            client,
        } => {
            let r = Client::new(&client)?
                .get(&format!("/api/v1/workflow-runs/{run}"))
                .await?;
            if client.json {
                print_json(&r);
                return Ok(0);
            }
            let h = &r["run"];
            println!(
                "workflow run {} of {} (version {}, attempt {}, {}): {}",
                h["id"],
                s(h, "workflow"),
                h["workflow_version"],
                h["attempt"],
                s(h, "trigger"),
                s(h, "status")
            );
            if let Some(e) = h["error"].as_str() {
                println!("error:  {e}");
            }
            if let Some(p) = h["retry_of"].as_i64() {
                println!("retry of run {p}");
            }
            println!();
            if explain {
                let rows: Vec<Vec<String>> = r["explain"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| {
                        vec![
                            s(e, "node").to_string(),
                            s(e, "status").to_string(),
                            s(e, "why").to_string(),
                        ]
                    })
                    .collect();
                table::print(&["NODE", "STATUS", "WHY"], &rows);
            } else {
                let rows: Vec<Vec<String>> = r["nodes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|n| {
                        vec![
                            s(n, "node").to_string(),
                            s(n, "status").to_string(),
                            n["job_id"]
                                .as_i64()
                                .map_or("-".to_string(), |j| j.to_string()),
                            short(&n["output"], 60),
                            n["error"]
                                .as_str()
                                .or(n["reason"].as_str())
                                .unwrap_or("-")
                                .to_string(),
                        ]
                    })
                    .collect();
                table::print(&["NODE", "STATUS", "JOB", "OUTPUT", "REASON"], &rows);
                println!("\n(a node's log: cronium job logs JOB; whole outputs: --json)");
            }
        }
        WorkflowCmd::Retry {
            run,
            follow: follow_logs,
            client,
        } => {
            let c = Client::new(&client)?;
            let r = c
                .request(
                    Method::POST,
                    &format!("/api/v1/workflow-runs/{run}/retry"),
                    None,
                )
                .await?;
            let id = r["id"]
                .as_i64()
                .ok_or_else(|| anyhow!("server returned no run id"))?;
            if follow_logs {
                if !client.json {
                    eprintln!("workflow run {id} started (retry of run {run})");
                }
                return follow(&c, id, client.json).await;
            }
            if client.json {
                print_json(&r);
            } else {
                println!("{id}");
            }
        }
        WorkflowCmd::Cancel { run, client } => {
            let r = Client::new(&client)?
                .request(
                    Method::POST,
                    &format!("/api/v1/workflow-runs/{run}/cancel"),
                    None,
                )
                .await?;
            if client.json {
                print_json(&r);
            } else if s(&r, "status") == "cancelled" {
                println!("workflow run {run}: cancelled");
            } else {
                println!(
                    "workflow run {run}: cancellation requested (running node jobs are stopping)"
                );
            }
        }
        WorkflowCmd::Delete { name, client } => {
            Client::new(&client)?
                .request(Method::DELETE, &format!("/api/v1/workflows/{name}"), None)
                .await?;
            if client.json {
                print_json(&json!({"deleted": name}));
            } else {
                println!("workflow {name} deleted");
            }
        }
    }
    Ok(0)
}
