//! Notification channels: add (validated per kind; secret settings encrypted with the data
//! directory's key, context `channel:NAME`, never shown back), list and show with their
//! delivery state, remove (refused while an event or workflow names it), test (one message
//! sent now, its outcome recorded on the channel), and the apply-time check of `notify`.

use cronium_core::clock::now_ms;
use cronium_core::spec::{self, NotifyRule};
use cronium_core::workflow;
use cronium_store::{ChannelRow, NewChannel};
use rand::RngCore;
use serde_json::{json, Map, Value};

use super::{audit, Actor, UseCaseError, UseCaseResult};
use crate::notify::deliver::{self, Channel, ChannelKind, SmtpTls};
use crate::notify::message;
use crate::state::AppState;

/// A channel as asked for (the API's body, the CLI's flags).
#[derive(Debug, Clone, Default)]
pub struct ChannelInput {
    pub name: String,
    pub kind: String,
    pub url: Option<String>,
    pub secret: Option<String>,
    pub smtp_host: Option<String>,
    pub smtp_port: Option<u16>,
    pub smtp_user: Option<String>,
    pub smtp_password: Option<String>,
    pub smtp_tls: Option<String>,
    pub smtp_ca_file: Option<String>,
    pub from: Option<String>,
    pub to: Vec<String>,
}

/// Prefix of the secrets generated for `webhook` channels.
pub const SECRET_PREFIX: &str = "cws_";

fn context(name: &str) -> String {
    format!("channel:{name}")
}

fn check_url(field: &str, url: Option<&str>) -> UseCaseResult<String> {
    let url = url
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| UseCaseError::invalid(field, "required for this type"))?;
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| UseCaseError::invalid(field, format!("not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(UseCaseError::invalid(
            field,
            "must be an http:// or https:// URL with a host",
        ));
    }
    Ok(url.to_string())
}

fn refuse(field: &str, set: bool, kind: ChannelKind) -> UseCaseResult<()> {
    if set {
        return Err(UseCaseError::invalid(
            field,
            format!("not used by channels of type {}", kind.as_str()),
        ));
    }
    Ok(())
}

/// Splits a request into the stored settings and the secret ones, refusing what is wrong.
/// Answers the settings, the secrets, and the generated webhook secret (to show once).
fn settings(input: &ChannelInput) -> UseCaseResult<(ChannelKind, Value, Value, Option<String>)> {
    spec::validate_name(&input.name).map_err(|e| UseCaseError::invalid("name", e.message))?;
    let kind = ChannelKind::parse(&input.kind).ok_or_else(|| {
        UseCaseError::invalid(
            "type",
            format!(
                "unknown type `{}`: expected one of email, slack, discord, webhook",
                input.kind
            ),
        )
    })?;
    let mut config = Map::new();
    let mut secret = Map::new();
    let mut generated = None;
    let smtp_set = [
        ("smtp_host", input.smtp_host.is_some()),
        ("smtp_port", input.smtp_port.is_some()),
        ("smtp_user", input.smtp_user.is_some()),
        ("smtp_password", input.smtp_password.is_some()),
        ("smtp_tls", input.smtp_tls.is_some()),
        ("smtp_ca_file", input.smtp_ca_file.is_some()),
        ("from", input.from.is_some()),
        ("to", !input.to.is_empty()),
    ];
    match kind {
        ChannelKind::Slack | ChannelKind::Discord | ChannelKind::Webhook => {
            for (field, set) in smtp_set {
                refuse(field, set, kind)?;
            }
            secret.insert("url".into(), json!(check_url("url", input.url.as_deref())?));
            if kind == ChannelKind::Webhook {
                let s = match input.secret.as_deref().map(str::trim) {
                    Some(s) if s.len() < 16 => {
                        return Err(UseCaseError::invalid(
                            "secret",
                            "must be at least 16 characters (leave it out to have one made)",
                        ))
                    }
                    Some(s) => s.to_string(),
                    None => {
                        let mut b = [0u8; 32];
                        rand::rng().fill_bytes(&mut b);
                        let s = format!("{SECRET_PREFIX}{}", hex::encode(b));
                        generated = Some(s.clone());
                        s
                    }
                };
                secret.insert("secret".into(), json!(s));
            } else {
                refuse("secret", input.secret.is_some(), kind)?;
            }
        }
        ChannelKind::Email => {
            refuse("url", input.url.is_some(), kind)?;
            refuse("secret", input.secret.is_some(), kind)?;
            let host = input
                .smtp_host
                .as_deref()
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .ok_or_else(|| UseCaseError::invalid("smtp_host", "required for type email"))?;
            if host.contains(['/', ' ', ':']) {
                return Err(UseCaseError::invalid(
                    "smtp_host",
                    "a host name or address, without scheme or port (see smtp_port)",
                ));
            }
            let tls = match input.smtp_tls.as_deref() {
                None => SmtpTls::Starttls,
                Some(t) => SmtpTls::parse(t).ok_or_else(|| {
                    UseCaseError::invalid(
                        "smtp_tls",
                        format!("unknown `{t}`: expected starttls, tls or none"),
                    )
                })?,
            };
            if input.smtp_port == Some(0) {
                return Err(UseCaseError::invalid("smtp_port", "must be 1 to 65535"));
            }
            if input.smtp_password.is_some() && input.smtp_user.is_none() {
                return Err(UseCaseError::invalid(
                    "smtp_password",
                    "given without smtp_user",
                ));
            }
            if let Some(ca) = &input.smtp_ca_file {
                if tls == SmtpTls::None {
                    return Err(UseCaseError::invalid(
                        "smtp_ca_file",
                        "only with smtp_tls starttls or tls",
                    ));
                }
                let pem = std::fs::read(ca).map_err(|e| {
                    UseCaseError::invalid("smtp_ca_file", format!("cannot read {ca}: {e}"))
                })?;
                lettre::transport::smtp::client::Certificate::from_pem(&pem).map_err(|e| {
                    UseCaseError::invalid(
                        "smtp_ca_file",
                        format!("{ca}: not a PEM certificate ({e})"),
                    )
                })?;
            }
            let from = input
                .from
                .as_deref()
                .ok_or_else(|| UseCaseError::invalid("from", "required for type email"))?;
            from.parse::<lettre::message::Mailbox>().map_err(|e| {
                UseCaseError::invalid("from", format!("`{from}` is not an e-mail address ({e})"))
            })?;
            if input.to.is_empty() {
                return Err(UseCaseError::invalid(
                    "to",
                    "at least one recipient for type email",
                ));
            }
            for (i, to) in input.to.iter().enumerate() {
                to.parse::<lettre::message::Mailbox>().map_err(|e| {
                    UseCaseError::invalid(
                        format!("to[{i}]"),
                        format!("`{to}` is not an e-mail address ({e})"),
                    )
                })?;
            }
            config.insert("smtp_host".into(), json!(host));
            config.insert(
                "smtp_port".into(),
                json!(input.smtp_port.unwrap_or_else(|| tls.default_port())),
            );
            config.insert("smtp_tls".into(), json!(tls.as_str()));
            if let Some(u) = &input.smtp_user {
                config.insert("smtp_user".into(), json!(u));
            }
            if let Some(ca) = &input.smtp_ca_file {
                config.insert("smtp_ca_file".into(), json!(ca));
            }
            config.insert("from".into(), json!(from));
            config.insert("to".into(), json!(input.to));
            if let Some(p) = &input.smtp_password {
                secret.insert("smtp_password".into(), json!(p));
            }
        }
    }
    Ok((
        kind,
        Value::Object(config),
        Value::Object(secret),
        generated,
    ))
}

/// Adds a channel. Answers the row and, for a `webhook` channel given no secret, the one made
/// for it (shown once).
pub async fn create(
    state: &AppState,
    actor: &Actor,
    input: &ChannelInput,
) -> UseCaseResult<(ChannelRow, Option<String>)> {
    let result = create_unrecorded(state, input).await;
    // The channel's settings without its secrets (those are only ever ciphertext).
    audit::record(
        state,
        actor,
        "channel.add",
        format!(
            "channel {}",
            input.name.chars().take(200).collect::<String>()
        ),
        None,
        result,
        |(row, _)| Some(json!({"name": row.name, "type": row.kind, "config": row.config})),
    )
    .await
}

async fn create_unrecorded(
    state: &AppState,
    input: &ChannelInput,
) -> UseCaseResult<(ChannelRow, Option<String>)> {
    let (kind, config, secret, generated) = settings(input)?;
    let bytes =
        serde_json::to_vec(&secret).map_err(|e| UseCaseError::invalid("(body)", e.to_string()))?;
    let ct = state.secrets.encrypt(&context(&input.name), &bytes);
    let row = state
        .store
        .create_channel(
            &NewChannel {
                name: input.name.clone(),
                kind: kind.as_str().into(),
                config,
                secret: Some(ct),
            },
            now_ms(),
        )
        .await?;
    Ok((row, generated))
}

pub async fn list(state: &AppState) -> UseCaseResult<Vec<ChannelRow>> {
    Ok(state.store.list_channels().await?)
}

pub async fn get(state: &AppState, name: &str) -> UseCaseResult<ChannelRow> {
    state
        .store
        .get_channel(name)
        .await?
        .ok_or_else(|| UseCaseError::NotFound(format!("channel `{name}` not found")))
}

/// The names of the secret settings a channel holds (what `show` says is set, never the
/// values).
pub fn secret_fields(row: &ChannelRow) -> Vec<&'static str> {
    match ChannelKind::parse(&row.kind) {
        Some(ChannelKind::Email) => {
            if row.config.get("smtp_user").is_some() {
                vec!["smtp_password"]
            } else {
                vec![]
            }
        }
        Some(ChannelKind::Webhook) => vec!["url", "secret"],
        Some(_) => vec!["url"],
        None => vec![],
    }
}

/// The channel with its secrets decrypted, for a delivery.
pub fn load(state: &AppState, row: &ChannelRow) -> Result<Channel, String> {
    let kind = ChannelKind::parse(&row.kind)
        .ok_or_else(|| format!("unknown channel type `{}` in the store", row.kind))?;
    let secret = match &row.secret {
        None => Value::Object(Map::new()),
        Some(ct) => {
            let bytes = state
                .secrets
                .decrypt(&context(&row.name), ct)
                .map_err(|e| e.to_string())?;
            serde_json::from_slice(&bytes).map_err(|e| format!("the channel's secrets: {e}"))?
        }
    };
    Ok(Channel {
        name: row.name.clone(),
        kind,
        config: row.config.clone(),
        secret,
    })
}

/// The events and workflows whose `notify` names `channel`.
async fn users_of(state: &AppState, channel: &str) -> UseCaseResult<Vec<String>> {
    let mut out = Vec::new();
    for e in state.store.list_events().await? {
        if let Ok(s) = spec::from_value(e.spec.clone()) {
            if s.notify.iter().any(|r| r.channel == channel) {
                out.push(format!("event {}", e.name));
            }
        }
    }
    for w in state.store.list_workflows().await? {
        if let Ok(s) = workflow::from_value(w.spec.clone()) {
            if s.notify.iter().any(|r| r.channel == channel) {
                out.push(format!("workflow {}", w.name));
            }
        }
    }
    Ok(out)
}

/// Removes a channel and its undelivered notifications; refused while `notify` names it.
pub async fn delete(state: &AppState, actor: &Actor, name: &str) -> UseCaseResult<()> {
    let before = get(state, name).await?;
    let before = json!({"name": before.name, "type": before.kind, "config": before.config});
    let result = delete_unrecorded(state, name).await;
    audit::record(
        state,
        actor,
        "channel.remove",
        format!("channel {name}"),
        Some(before),
        result,
        |_| None,
    )
    .await
}

async fn delete_unrecorded(state: &AppState, name: &str) -> UseCaseResult<()> {
    let users = users_of(state, name).await?;
    if !users.is_empty() {
        return Err(UseCaseError::Conflict {
            field: Some("name".into()),
            message: format!(
                "channel `{name}` is used by {}; remove it from their `notify` first",
                users.join(", ")
            ),
        });
    }
    if !state.store.delete_channel(name).await? {
        return Err(UseCaseError::NotFound(format!(
            "channel `{name}` not found"
        )));
    }
    Ok(())
}

/// Sends a test message now (not through the outbox). The outcome is recorded on the channel
/// and answered: None when delivered, else the error.
pub async fn test(state: &AppState, name: &str) -> UseCaseResult<Option<String>> {
    let row = get(state, name).await?;
    let m = message::build(&message::Subject {
        kind: "test",
        id: 0,
        name,
        on: "success",
        status: "test",
        exit_code: None,
        started_at: None,
        finished_at: None,
        error: None,
        trigger: "manual",
        url: state.hooks.public_url().to_string(),
        log_tail: vec![format!("A test message of the Cronium channel `{name}`.")],
    });
    let outcome = match load(state, &row) {
        Ok(channel) => deliver::send(&state.hooks, &channel, &m).await.err(),
        Err(e) => Some(e),
    };
    state
        .store
        .channel_tested(row.id, outcome.as_deref(), now_ms())
        .await?;
    Ok(outcome)
}

/// Every channel `notify` names exists; the error names the rule (`notify[1].channel`).
pub async fn check_notify(state: &AppState, rules: &[NotifyRule]) -> UseCaseResult<()> {
    if rules.is_empty() {
        return Ok(());
    }
    let known = state.store.list_channels().await?;
    for (i, rule) in rules.iter().enumerate() {
        if !known.iter().any(|c| c.name == rule.channel) {
            return Err(UseCaseError::invalid(
                format!("notify[{i}].channel"),
                format!(
                    "unknown channel `{}` (add it with `cronium channel add`)",
                    rule.channel
                ),
            ));
        }
    }
    Ok(())
}
