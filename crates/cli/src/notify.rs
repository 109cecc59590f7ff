//! `cronium event hook` / `cronium workflow hook` (a webhook's URL, its secret once, rotation)
//! and `cronium channel ...` (notification channels).

use anyhow::{anyhow, Result};
use cronium_client::Method;
use serde_json::{json, Map, Value};

use crate::cli::{ChannelAddArgs, ChannelCmd, ClientOpts};
use crate::client::Client;
use crate::commands::{print_json, s};
use crate::table;

/// `cronium {event|workflow} hook NAME [--rotate]`.
pub async fn hook(kind: &str, name: &str, rotate: bool, client: &ClientOpts) -> Result<i32> {
    let c = Client::new(client)?;
    let path = format!("/api/v1/{kind}s/{name}/hook");
    let r = if rotate {
        c.request(Method::POST, &format!("{path}/rotate"), None)
            .await?
    } else {
        c.get(&path).await?
    };
    if client.json {
        print_json(&r);
        return Ok(0);
    }
    if r["enabled"] != json!(true) {
        println!("{kind} {name} has no webhook: add `webhook: true` to its file and apply it");
        return Ok(1);
    }
    println!("url:    {}", s(&r, "url"));
    match r["secret"].as_str() {
        Some(secret) => {
            println!("secret: {secret}");
            eprintln!("the secret is shown only this once; `--rotate` makes a new one");
        }
        None => println!(
            "secret: (shown once already; `cronium {kind} hook {name} --rotate` makes a new one)"
        ),
    }
    Ok(0)
}

fn env_value(flag: &str, var: &str) -> Result<String> {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| anyhow!("--{flag}: the environment variable {var} is not set"))
}

fn add_body(a: &ChannelAddArgs) -> Result<Value> {
    let mut b = Map::new();
    b.insert("name".into(), json!(a.name));
    b.insert("type".into(), json!(a.kind));
    let url = match (&a.webhook_url, &a.webhook_url_env) {
        (Some(u), _) => Some(u.clone()),
        (None, Some(var)) => Some(env_value("webhook-url-env", var)?),
        (None, None) => None,
    };
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            b.insert(k.into(), v);
        }
    };
    put("url", url.map(Value::from));
    put(
        "secret",
        a.secret_env
            .as_deref()
            .map(|v| env_value("secret-env", v))
            .transpose()?
            .map(Value::from),
    );
    put("smtp_host", a.smtp_host.clone().map(Value::from));
    put("smtp_port", a.smtp_port.map(Value::from));
    put("smtp_tls", a.smtp_tls.clone().map(Value::from));
    put("smtp_user", a.smtp_user.clone().map(Value::from));
    put(
        "smtp_password",
        a.smtp_password_env
            .as_deref()
            .map(|v| env_value("smtp-password-env", v))
            .transpose()?
            .map(Value::from),
    );
    put("smtp_ca_file", a.smtp_ca_file.clone().map(Value::from));
    put("from", a.from.clone().map(Value::from));
    if !a.to.is_empty() {
        put("to", Some(json!(a.to)));
    }
    Ok(Value::Object(b))
}

fn state_text(c: &Value) -> String {
    match (c["last_error"].as_str(), c["last_success_at"].as_str()) {
        (Some(e), _) => format!("error at {}: {e}", s(c, "last_error_at")),
        (None, Some(t)) => format!("ok at {t}"),
        (None, None) => "-".into(),
    }
}

pub async fn channel(cmd: ChannelCmd) -> Result<i32> {
    match cmd {
        ChannelCmd::Add(args) => {
            let body = add_body(&args)?;
            let r = Client::new(&args.client)?
                .request(Method::POST, "/api/v1/channels", Some(&body))
                .await?;
            if args.client.json {
                print_json(&r);
            } else {
                println!("channel {} added ({})", args.name, args.kind);
                if let Some(secret) = r["secret"].as_str() {
                    println!("secret: {secret}");
                    eprintln!("the HMAC secret is shown only this once: give it to the receiver");
                }
            }
        }
        ChannelCmd::List { client } => {
            let r = Client::new(&client)?.get("/api/v1/channels").await?;
            if client.json {
                print_json(&r);
            } else {
                let rows: Vec<Vec<String>> = r
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| {
                        vec![
                            s(c, "name").to_string(),
                            s(c, "type").to_string(),
                            c["pending"].to_string(),
                            s(c, "last_success_at").to_string(),
                            c["last_error"].as_str().map_or("-".to_string(), |e| {
                                format!("{} {e}", s(c, "last_error_at"))
                            }),
                        ]
                    })
                    .collect();
                table::print(
                    &["NAME", "TYPE", "PENDING", "LAST SUCCESS", "LAST ERROR"],
                    &rows,
                );
            }
        }
        ChannelCmd::Show { name, client } => {
            let r = Client::new(&client)?
                .get(&format!("/api/v1/channels/{name}"))
                .await?;
            if client.json {
                print_json(&r);
            } else {
                println!("name:     {}\ntype:     {}", s(&r, "name"), s(&r, "type"));
                if let Some(cfg) = r["config"].as_object() {
                    for (k, v) in cfg {
                        let v = match v {
                            Value::String(t) => t.clone(),
                            other => other.to_string(),
                        };
                        println!("{k}: {v}");
                    }
                }
                let secrets: Vec<&str> = r["secret_fields"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                if !secrets.is_empty() {
                    println!("secrets:  {} (set; never shown)", secrets.join(", "));
                }
                println!(
                    "pending:  {}\ngiven up: {}\nlast:     {}",
                    r["pending"],
                    r["given_up"],
                    state_text(&r)
                );
            }
        }
        ChannelCmd::Remove { name, client } => {
            Client::new(&client)?
                .request(Method::DELETE, &format!("/api/v1/channels/{name}"), None)
                .await?;
            if client.json {
                print_json(&json!({"removed": name}));
            } else {
                println!("channel {name} removed");
            }
        }
        ChannelCmd::Test { name, client } => {
            let r = Client::new(&client)?
                .request(Method::POST, &format!("/api/v1/channels/{name}/test"), None)
                .await?;
            if client.json {
                print_json(&r);
            }
            if r["delivered"] == json!(true) {
                if !client.json {
                    println!("test message delivered to {name}");
                }
                return Ok(0);
            }
            if !client.json {
                eprintln!("error: not delivered: {}", s(&r, "error"));
            }
            return Ok(1);
        }
    }
    Ok(0)
}
