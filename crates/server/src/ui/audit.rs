//! `GET /audit`: the audit log (admin only), newest first, filtered by actor, action and
//! period, paged by id ("Older"), each entry with its before and after.

use askama::Template;
use axum::extract::{Query, State};
use axum::Extension;
use cronium_core::clock::now_ms;
use cronium_core::duration::HumanDuration;
use cronium_model::Role;
use cronium_store::AuditFilter;
use serde::Deserialize;

use super::error::UiResult;
use super::session::{urlencode, Session};
use super::{format, render, Ctx};
use crate::authz::{get, Routes};
use crate::state::AppState;
use crate::usecases::audit as uc;

/// Entries per page.
pub const PAGE: i64 = 100;

pub fn routes() -> Routes<AppState> {
    Routes::new().route("/audit", get(Role::Admin, list))
}

pub struct AuditItem {
    pub id: i64,
    pub at: String,
    pub actor: String,
    pub via: String,
    pub source: String,
    pub action: String,
    pub target: String,
    pub before: String,
    pub after: String,
    pub ok: bool,
    pub outcome: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    ctx: Ctx,
    entries: Vec<AuditItem>,
    actor: String,
    action: String,
    since: String,
    error: Option<String>,
    /// The query of the next (older) page.
    older: Option<String>,
}

#[derive(Deserialize)]
pub struct AuditQuery {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    /// A duration back from now (`1h`, `7d`); empty: everything.
    #[serde(default)]
    since: String,
    before: Option<i64>,
}

pub async fn list(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Query(q): Query<AuditQuery>,
) -> UiResult<axum::response::Response> {
    let mut error = None;
    let since = match q.since.trim() {
        "" => None,
        s => match HumanDuration::parse(s) {
            Ok(d) => Some(now_ms() - i64::try_from(d.0.as_millis()).unwrap_or(i64::MAX / 2)),
            Err(e) => {
                error = Some(format!("since: {e}"));
                None
            }
        },
    };
    let filter = AuditFilter {
        since,
        actor: Some(q.actor.trim().to_string()),
        action: Some(q.action.trim().to_string()),
        before_id: q.before,
        limit: PAGE,
    };
    let rows = uc::list(&state, filter).await?;
    let older = (rows.len() as i64 == PAGE).then(|| {
        let last = rows.last().map_or(0, |r| r.id);
        format!(
            "actor={}&action={}&since={}&before={last}",
            urlencode(q.actor.trim()),
            urlencode(q.action.trim()),
            urlencode(q.since.trim())
        )
    });
    let entries = rows
        .into_iter()
        .map(|r| {
            let e = r.entry;
            AuditItem {
                id: r.id,
                at: format::ts(Some(e.at)),
                via: match (e.token_id, &e.session_id) {
                    (Some(t), _) => format!("token {t}"),
                    (None, Some(_)) => "web session".into(),
                    _ => String::new(),
                },
                actor: e.actor,
                source: e.source.unwrap_or_default(),
                action: e.action,
                target: e.target,
                before: e.before.as_ref().map(format::json).unwrap_or_default(),
                after: e.after.as_ref().map(format::json).unwrap_or_default(),
                ok: e.outcome == "ok",
                outcome: e.outcome,
            }
        })
        .collect();
    Ok(render(&AuditPage {
        ctx: Ctx::new(&session, "audit"),
        entries,
        actor: q.actor,
        action: q.action,
        since: q.since,
        error,
        older,
    }))
}
