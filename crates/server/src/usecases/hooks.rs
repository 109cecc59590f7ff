//! Signed webhooks: an event or workflow with `webhook: true` answers `POST /hooks/NAME`.
//!
//! The hook's secret is made when the webhook is first enabled (at apply), kept encrypted
//! (context `hook:KIND:NAME`), shown once ([`show`], the first time it is asked for), and
//! replaced by [`rotate`] (shown once again). [`receive`] checks, in this order, that the hook
//! exists and is enabled (404 otherwise, the same answer for both), the signature (Cronium's
//! timestamped form, or GitHub's with its delivery id) and that it was not seen before (401),
//! that the body is a JSON object (400), that the event or workflow is active (409), and only
//! then starts the run: nothing runs on any error.

use cronium_core::clock::now_ms;
use cronium_core::spec::EventStatus;
use cronium_core::workflow;
use cronium_model::Trigger;
use cronium_store::{HookKind, HookRow, JobRow, WorkflowRunRow};
use rand::RngCore;
use serde_json::Value;

use super::{audit, events, workflows, Actor, UseCaseError, UseCaseResult};
use crate::signature::{self, SignatureError};
use crate::state::AppState;

/// Prefix of hook secrets, so that secret scanners and people recognise them.
pub const SECRET_PREFIX: &str = "cwh_";

/// A GitHub delivery id is remembered this long (GitHub's form has no timestamp).
const GITHUB_REPLAY_MS: i64 = 30 * 24 * 3600 * 1000;

fn new_secret() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    format!("{SECRET_PREFIX}{}", hex::encode(b))
}

fn context(kind: HookKind, name: &str) -> String {
    format!("hook:{}:{name}", kind.as_str())
}

/// What `cronium event hook NAME` shows.
#[derive(Debug, Clone)]
pub struct HookInfo {
    pub kind: HookKind,
    pub name: String,
    /// `PUBLIC_URL/hooks/NAME`.
    pub url: String,
    /// `webhook: true` in the current version.
    pub enabled: bool,
    /// The secret, only the first time it is shown (and after a rotation).
    pub secret: Option<String>,
    pub created_at: Option<i64>,
    pub rotated_at: Option<i64>,
}

/// Whether the current version of the event or workflow `name` has `webhook: true`; a
/// NotFound when there is no such event or workflow. A version that does not parse has no
/// webhook.
async fn enabled(
    state: &AppState,
    kind: HookKind,
    name: &str,
) -> UseCaseResult<(bool, EventStatus)> {
    match kind {
        HookKind::Event => {
            let event = events::get(state, name).await?;
            let on = events::spec_of(&event).map(|s| s.webhook).unwrap_or(false);
            Ok((on, event.status))
        }
        HookKind::Workflow => {
            let wf = workflows::find(state, name).await?;
            let on = workflow::from_value(wf.spec.clone())
                .map(|s| s.webhook)
                .unwrap_or(false);
            Ok((on, wf.status))
        }
    }
}

/// The hook's URL.
pub fn url(state: &AppState, name: &str) -> String {
    format!("{}/hooks/{name}", state.hooks.public_url())
}

/// Makes the hook's secret if it has none (called when an apply wrote `webhook: true`).
pub async fn ensure(state: &AppState, kind: HookKind, name: &str) -> UseCaseResult<HookRow> {
    if let Some(h) = state.store.get_hook(kind, name).await? {
        return Ok(h);
    }
    let secret = new_secret();
    let ct = state
        .secrets
        .encrypt(&context(kind, name), secret.as_bytes());
    Ok(state.store.ensure_hook(kind, name, &ct, now_ms()).await?)
}

/// `webhook: true` cannot be set on an event and a workflow of the same name: one URL.
pub async fn check_unique(
    state: &AppState,
    kind: HookKind,
    name: &str,
    webhook: bool,
) -> UseCaseResult<()> {
    if !webhook {
        return Ok(());
    }
    let other = match kind {
        HookKind::Event => HookKind::Workflow,
        HookKind::Workflow => HookKind::Event,
    };
    if let Ok((true, _)) = enabled(state, other, name).await {
        return Err(UseCaseError::invalid(
            "webhook",
            format!(
                "the {} `{name}` already answers /hooks/{name}; one of them must go without a webhook",
                other.as_str()
            ),
        ));
    }
    Ok(())
}

/// After an apply: the secret of an enabled hook exists.
pub async fn applied(
    state: &AppState,
    kind: HookKind,
    name: &str,
    webhook: bool,
) -> UseCaseResult<()> {
    if webhook {
        ensure(state, kind, name).await?;
    }
    Ok(())
}

/// After a delete: the hook and its remembered deliveries go too (a new event of the same
/// name gets a new secret).
pub async fn deleted(state: &AppState, kind: HookKind, name: &str) -> UseCaseResult<()> {
    Ok(state.store.delete_hook(kind, name).await?)
}

fn info(
    state: &AppState,
    kind: HookKind,
    name: &str,
    enabled: bool,
    row: Option<&HookRow>,
) -> HookInfo {
    HookInfo {
        kind,
        name: name.to_string(),
        url: url(state, name),
        enabled,
        secret: None,
        created_at: row.map(|r| r.created_at),
        rotated_at: row.map(|r| r.rotated_at),
    }
}

fn decrypt(state: &AppState, row: &HookRow) -> UseCaseResult<String> {
    let bytes = state
        .secrets
        .decrypt(&context(row.kind, &row.name), &row.secret)
        .map_err(|e| {
            UseCaseError::Store(cronium_store::StoreError::Corrupt(format!(
                "the secret of hook {}: {e}",
                row.name
            )))
        })?;
    String::from_utf8(bytes).map_err(|_| {
        UseCaseError::Store(cronium_store::StoreError::Corrupt(format!(
            "the secret of hook {} is not text",
            row.name
        )))
    })
}

/// The hook's URL and state; its secret the first time it is asked for.
pub async fn show(state: &AppState, kind: HookKind, name: &str) -> UseCaseResult<HookInfo> {
    let (on, _) = enabled(state, kind, name).await?;
    if !on {
        let row = state.store.get_hook(kind, name).await?;
        return Ok(info(state, kind, name, false, row.as_ref()));
    }
    let row = ensure(state, kind, name).await?;
    let mut out = info(state, kind, name, true, Some(&row));
    if state.store.reveal_hook(kind, name).await? {
        out.secret = Some(decrypt(state, &row)?);
    }
    Ok(out)
}

/// A new secret, shown once; the old one stops working at once.
pub async fn rotate(
    state: &AppState,
    actor: &Actor,
    kind: HookKind,
    name: &str,
) -> UseCaseResult<HookInfo> {
    let result = rotate_unrecorded(state, kind, name).await;
    // Never the secret: only that it changed.
    audit::record(
        state,
        actor,
        "hook.rotate",
        format!("{} {name}", kind.as_str()),
        None,
        result,
        |_| None,
    )
    .await
}

async fn rotate_unrecorded(
    state: &AppState,
    kind: HookKind,
    name: &str,
) -> UseCaseResult<HookInfo> {
    let (on, _) = enabled(state, kind, name).await?;
    if !on {
        return Err(UseCaseError::Conflict {
            field: Some("webhook".into()),
            message: format!(
                "webhook: the {} `{name}` has no webhook; apply it with `webhook: true` first",
                kind.as_str()
            ),
        });
    }
    let secret = new_secret();
    let ct = state
        .secrets
        .encrypt(&context(kind, name), secret.as_bytes());
    let row = state.store.rotate_hook(kind, name, &ct, now_ms()).await?;
    let mut out = info(state, kind, name, true, Some(&row));
    out.secret = Some(secret);
    Ok(out)
}

/// What a hook request carries: the signature headers (lowercase names) and the body.
#[derive(Debug, Default)]
pub struct Delivery<'a> {
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
    pub github_signature: Option<&'a str>,
    pub github_delivery: Option<&'a str>,
    pub body: &'a [u8],
}

/// What a hook request started.
#[derive(Debug)]
pub enum Started {
    Job(JobRow),
    Run(WorkflowRunRow),
}

/// Why a hook request was refused (nothing ran).
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// 404: no such hook, or its webhook is not enabled (one answer for both).
    #[error("no such hook")]
    NotFound,
    /// 401.
    #[error("{0}")]
    Signature(#[from] SignatureError),
    /// 401: the signature (or delivery id) was accepted before.
    #[error("replayed: this signature (or GitHub delivery id) was accepted before")]
    Replayed,
    /// 400.
    #[error("body: {0}")]
    BadBody(String),
    /// 409: paused, draft or archived.
    #[error("{0}")]
    NotActive(String),
    #[error(transparent)]
    UseCase(#[from] UseCaseError),
}

/// Checks a hook request and starts the run it asks for.
pub async fn receive(
    state: &AppState,
    name: &str,
    d: &Delivery<'_>,
    source: Option<String>,
) -> Result<Started, HookError> {
    let actor = &Actor::webhook(name, source);
    // The event first, then a workflow of that name (apply keeps them from both having one).
    let mut target = None;
    for kind in [HookKind::Event, HookKind::Workflow] {
        match enabled(state, kind, name).await {
            Ok((true, status)) => {
                target = Some((kind, status));
                break;
            }
            Ok((false, _)) | Err(UseCaseError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let Some((kind, status)) = target else {
        return Err(HookError::NotFound);
    };
    let row = state
        .store
        .get_hook(kind, name)
        .await
        .map_err(UseCaseError::from)?
        .ok_or(HookError::NotFound)?;
    let secret = decrypt(state, &row)?;
    let now = now_ms();
    let (key, expires_at) = match (d.signature, d.github_signature) {
        (Some(sig), _) => {
            let ts = d.timestamp.ok_or(SignatureError::Missing)?;
            let key = signature::verify(secret.as_bytes(), ts, sig, d.body, now / 1000)?;
            let ts: i64 = ts.trim().parse().unwrap_or(0);
            (
                format!("sig:{key}"),
                (ts + signature::MAX_SKEW_SECS + 1) * 1000,
            )
        }
        (None, Some(sig)) => {
            signature::verify_github(secret.as_bytes(), sig, d.body)?;
            let delivery = d
                .github_delivery
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .ok_or(SignatureError::NoDelivery)?;
            if delivery.len() > 200 {
                return Err(HookError::BadBody(
                    "X-GitHub-Delivery: longer than 200 characters".into(),
                ));
            }
            (format!("gh:{delivery}"), now + GITHUB_REPLAY_MS)
        }
        (None, None) => return Err(SignatureError::Missing.into()),
    };
    if !state
        .store
        .remember_delivery(kind, name, &key, expires_at, now)
        .await
        .map_err(UseCaseError::from)?
    {
        return Err(HookError::Replayed);
    }
    let input: Value = if d.body.trim_ascii().is_empty() {
        Value::Object(Default::default())
    } else {
        serde_json::from_slice(d.body)
            .map_err(|e| HookError::BadBody(format!("not valid JSON: {e}")))?
    };
    if !input.is_object() {
        return Err(HookError::BadBody("must be a JSON object".into()));
    }
    if status != EventStatus::Active {
        return Err(HookError::NotActive(format!(
            "the {} `{name}` is {}: its webhook runs nothing until it is active",
            kind.as_str(),
            status.as_str()
        )));
    }
    Ok(match kind {
        HookKind::Event => {
            Started::Job(events::run(state, actor, name, Some(input), Trigger::Webhook).await?)
        }
        HookKind::Workflow => Started::Run(
            workflows::run(state, actor, name, Some(input), Trigger::Webhook, now).await?,
        ),
    })
}
