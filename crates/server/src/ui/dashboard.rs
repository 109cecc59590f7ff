//! `GET /`: the dashboard: jobs running now, recent failures, the next scheduled runs, the
//! servers at a glance, and workflow runs (running now, recent failures). `app.js` keeps the
//! jobs blocks live through `live.rs`'s stream.

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use axum::Extension;

use super::error::UiResult;
use super::jobs::JobItem;
use super::session::Session;
use super::{format, live, render, Ctx};
use crate::state::AppState;
use crate::usecases;

pub struct NextRun {
    pub event: String,
    pub at: String,
    pub iso: String,
}

pub struct ServerItem {
    pub name: String,
    pub address: String,
    /// `ok`, `changed` (a new host key waits to be accepted), `new` (never connected).
    pub health: &'static str,
    pub runner: String,
    /// `linux/x86_64`, or empty until detected.
    pub platform: String,
    /// The health status (`healthy`, `degraded`, `unreachable`, `unknown`): the dot's class,
    /// unless the host key changed.
    pub status: &'static str,
    /// The reasons of the status, or the latest reading in short (load, disk, memory).
    pub summary: String,
}

impl ServerItem {
    /// The dot's class: a changed host key outweighs the health.
    pub fn dot(&self) -> &'static str {
        if self.health == "changed" {
            "changed"
        } else {
            self.status
        }
    }
}

/// A server as the lists show it.
pub fn server_item(state: &AppState, s: &cronium_store::ServerRow) -> ServerItem {
    let verdict = usecases::servers::health(state, s);
    let summary = if !verdict.reasons.is_empty() {
        verdict.reasons.join("; ")
    } else {
        usecases::servers::reading(s)
            .map(|h| {
                let disk = h.work_dir.free_percent().min(h.deploy_dir.free_percent());
                format!(
                    "load {:.2} · disk {disk:.0}% free · memory {:.0}% available",
                    h.load[0],
                    h.memory_available_percent()
                )
            })
            .unwrap_or_default()
    };
    let runner = match (usecases::servers::reading(s), &s.runner) {
        (Some(h), _) => format!("runner {}", h.runner_version),
        (None, Some(r)) => format!("runner {}", &r.sha256[..r.sha256.len().min(12)]),
        (None, None) => "no runner yet".into(),
    };
    ServerItem {
        name: s.name.clone(),
        address: format!("{}@{}:{}", s.username, s.host, s.port),
        health: server_health(s),
        runner,
        platform: s
            .platform
            .as_ref()
            .map(|p| format!("{}/{}", p.os, p.arch))
            .unwrap_or_default(),
        status: verdict.status.as_str(),
        summary,
    }
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct Dashboard {
    ctx: Ctx,
    running: Vec<JobItem>,
    failures: Vec<JobItem>,
    next_runs: Vec<NextRun>,
    servers: Vec<ServerItem>,
    events: usize,
    /// Workflow runs running now, and the latest failed ones.
    wf_running: Vec<super::workflows::RunItem>,
    wf_failures: Vec<super::workflows::RunItem>,
}

/// The next 10 scheduled runs, soonest first.
pub fn next_runs(events: &[cronium_store::EventRow]) -> Vec<NextRun> {
    let mut scheduled: Vec<_> = events
        .iter()
        .filter_map(|e| e.next_fire_at.map(|t| (t, e.name.clone())))
        .collect();
    scheduled.sort();
    scheduled
        .into_iter()
        .take(10)
        .map(|(t, event)| NextRun {
            event,
            at: format::ts(Some(t)),
            iso: format::iso(Some(t)),
        })
        .collect()
}

pub fn server_health(s: &cronium_store::ServerRow) -> &'static str {
    if s.pending_host_key.is_some() {
        "changed"
    } else if s.host_key.is_some() {
        "ok"
    } else {
        "new"
    }
}

pub async fn show(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> UiResult<Response> {
    let running = usecases::jobs::running(&state, live::DASH_RUNNING).await?;
    let failures = usecases::jobs::recent_failures(&state, live::DASH_FAILURES).await?;
    let events = usecases::events::list(&state).await?;
    let next_runs = next_runs(&events);
    let servers = usecases::servers::list(&state)
        .await?
        .iter()
        .map(|s| server_item(&state, s))
        .collect();
    let (wf_running, wf_failures) = super::workflows::dashboard_runs(&state).await?;
    Ok(render(&Dashboard {
        ctx: Ctx::new(&session, "dashboard"),
        running: running.into_iter().map(JobItem::from).collect(),
        failures: failures.into_iter().map(JobItem::from).collect(),
        next_runs,
        servers,
        events: events.len(),
        wf_running,
        wf_failures,
    }))
}
