//! Sending one message to one channel: e-mail over SMTP (lettre, STARTTLS or TLS with rustls),
//! Slack and Discord incoming webhooks (their JSON), and the generic webhook, a POST of the
//! message's JSON signed as our own hooks are (`X-Cronium-Timestamp`, `X-Cronium-Signature`).
//! An error is a short text for the channel's `last_error`; it never carries a secret (the
//! URL of a Slack or Discord webhook is one: errors name its host only).

use std::time::Duration;

use cronium_core::clock::now_ms;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde_json::{json, Value};

use super::message;
use super::Hub;
use crate::signature;

/// The kinds of channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    Email,
    Slack,
    Discord,
    Webhook,
}

impl ChannelKind {
    pub const ALL: &'static [ChannelKind] = &[
        ChannelKind::Email,
        ChannelKind::Slack,
        ChannelKind::Discord,
        ChannelKind::Webhook,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Email => "email",
            ChannelKind::Slack => "slack",
            ChannelKind::Discord => "discord",
            ChannelKind::Webhook => "webhook",
        }
    }

    pub fn parse(s: &str) -> Option<ChannelKind> {
        Self::ALL.iter().copied().find(|k| k.as_str() == s)
    }
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which is required (port 587 by default).
    Starttls,
    /// TLS from the start (port 465 by default).
    Tls,
    /// No encryption (port 25 by default): only for a relay on this host or a trusted network.
    None,
}

impl SmtpTls {
    pub fn as_str(self) -> &'static str {
        match self {
            SmtpTls::Starttls => "starttls",
            SmtpTls::Tls => "tls",
            SmtpTls::None => "none",
        }
    }

    pub fn parse(s: &str) -> Option<SmtpTls> {
        [SmtpTls::Starttls, SmtpTls::Tls, SmtpTls::None]
            .into_iter()
            .find(|k| k.as_str() == s)
    }

    pub fn default_port(self) -> u16 {
        match self {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        }
    }
}

/// A channel with its secret settings decrypted: what a delivery needs.
#[derive(Clone)]
pub struct Channel {
    pub name: String,
    pub kind: ChannelKind,
    /// The settings that are not secret (`smtp_host`, `smtp_port`, `smtp_user`, `smtp_tls`,
    /// `smtp_ca_file`, `from`, `to`).
    pub config: Value,
    /// `url`, `secret`, `smtp_password`.
    pub secret: Value,
}

fn host_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| "the webhook".into())
}

/// Sends `m` (a stored message) to `channel`.
pub async fn send(hub: &Hub, channel: &Channel, m: &Value) -> Result<(), String> {
    match channel.kind {
        ChannelKind::Slack => {
            post_json(
                hub,
                channel,
                &json!({ "text": message::text(m, true) }),
                false,
            )
            .await
        }
        ChannelKind::Discord => {
            // Discord refuses content over 2000 characters.
            let mut text = message::text(m, true);
            if text.chars().count() > 1990 {
                text = text.chars().take(1980).collect::<String>() + "\n…";
            }
            post_json(hub, channel, &json!({ "content": text }), false).await
        }
        ChannelKind::Webhook => {
            let mut body = m.clone();
            if let Some(o) = body.as_object_mut() {
                o.insert("text".into(), Value::String(message::text(m, false)));
            }
            post_json(hub, channel, &body, true).await
        }
        ChannelKind::Email => email(channel, m).await,
    }
}

async fn post_json(hub: &Hub, channel: &Channel, body: &Value, signed: bool) -> Result<(), String> {
    let url = channel.secret["url"]
        .as_str()
        .ok_or_else(|| "the channel has no URL".to_string())?;
    let bytes = serde_json::to_vec(body).map_err(|e| e.to_string())?;
    let mut req = hub
        .http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    if signed {
        let secret = channel.secret["secret"].as_str().unwrap_or_default();
        let ts = now_ms() / 1000;
        req = req.header("X-Cronium-Timestamp", ts.to_string()).header(
            "X-Cronium-Signature",
            signature::sign(secret.as_bytes(), ts, &bytes),
        );
    }
    let host = host_of(url);
    let resp = req.body(bytes).send().await.map_err(|e| {
        let what = if e.is_timeout() {
            "timed out".to_string()
        } else if e.is_connect() {
            "cannot connect".to_string()
        } else {
            "request failed".to_string()
        };
        format!("{host}: {what}")
    })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let text = resp.text().await.unwrap_or_default();
    let text: String = text.chars().take(200).collect();
    Err(format!(
        "{host}: HTTP {}{}",
        status.as_u16(),
        if text.trim().is_empty() {
            String::new()
        } else {
            format!(": {}", text.trim())
        }
    ))
}

fn mailbox(field: &str, s: &str) -> Result<Mailbox, String> {
    s.parse::<Mailbox>()
        .map_err(|e| format!("{field}: `{s}` is not an e-mail address ({e})"))
}

/// The SMTP transport of a channel's settings.
pub fn smtp_transport(
    config: &Value,
    password: Option<&str>,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let host = config["smtp_host"]
        .as_str()
        .ok_or_else(|| "smtp_host: missing".to_string())?;
    let tls = config["smtp_tls"]
        .as_str()
        .and_then(SmtpTls::parse)
        .unwrap_or(SmtpTls::Starttls);
    let port = config["smtp_port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or_else(|| tls.default_port());
    let params = || -> Result<TlsParameters, String> {
        let mut b = TlsParameters::builder(host.to_string());
        if let Some(ca) = config["smtp_ca_file"].as_str() {
            let pem = std::fs::read(ca).map_err(|e| format!("smtp_ca_file {ca}: {e}"))?;
            let cert =
                Certificate::from_pem(&pem).map_err(|e| format!("smtp_ca_file {ca}: {e}"))?;
            b = b.add_root_certificate(cert);
        }
        b.build_rustls().map_err(|e| format!("TLS: {e}"))
    };
    let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(port)
        .timeout(Some(Duration::from_secs(20)));
    b = match tls {
        SmtpTls::Starttls => b.tls(Tls::Required(params()?)),
        SmtpTls::Tls => b.tls(Tls::Wrapper(params()?)),
        SmtpTls::None => b.tls(Tls::None),
    };
    if let Some(user) = config["smtp_user"].as_str() {
        b = b.credentials(Credentials::new(
            user.to_string(),
            password.unwrap_or_default().to_string(),
        ));
    }
    Ok(b.build())
}

async fn email(channel: &Channel, m: &Value) -> Result<(), String> {
    let c = &channel.config;
    let from = mailbox("from", c["from"].as_str().unwrap_or_default())?;
    let mut builder = lettre::Message::builder()
        .from(from)
        .subject(format!("[Cronium] {}", message::title(m)))
        .header(ContentType::TEXT_PLAIN);
    for to in c["to"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        builder = builder.to(mailbox("to", to)?);
    }
    let mail = builder
        .body(message::text(m, false))
        .map_err(|e| format!("message: {e}"))?;
    let transport = smtp_transport(c, channel.secret["smtp_password"].as_str())?;
    let host = c["smtp_host"].as_str().unwrap_or_default();
    transport
        .send(mail)
        .await
        .map(|_| ())
        .map_err(|e| format!("SMTP {host}: {e}"))
}
