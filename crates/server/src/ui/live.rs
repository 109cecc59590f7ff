//! `GET /jobs/stream`: the live job statuses of the dashboard and of the job list, as
//! Server-Sent Events.
//!
//! The page is complete without it (rendered by the server at load time); `app.js` opens the
//! stream and patches rows in place. Each `view` event names a block of the page (`running`,
//! `failures`, `next` on the dashboard; `list` on the job list), the keys of its rows in order
//! and the HTML of each row that is new or changed since the last event, rendered by the same
//! row templates as the page; a row whose key is gone is removed.
//!
//! Woken by the status broadcast of the log bus ([`cronium_core::logbus::LogBus::job_changed`],
//! sent after the store committed a change), never by polling the store in a tight loop: on a
//! wake-up the stream rereads its view through the use cases, with the page's own filters (a
//! `status=failed` list never gains a running row), and sends the difference. The store stays
//! the only source of truth, so a wake-up that is lost costs nothing but latency: a viewer that
//! lagged behind the broadcast (a slow client) rereads its view, as does every viewer every
//! [`FALLBACK`] (a wake-up lost between replicas: those of another replica arrive relayed, see
//! `background::replicas`), and a reconnected stream starts with the
//! whole view (its first event), which resyncs the page. Wake-ups are coalesced: at most one
//! reread per [`MIN_GAP`] and viewer, whatever the rate of changes.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::time::{Duration, Instant};

use askama::Template;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::dashboard::{next_runs, NextRun};
use super::error::UiResult;
use super::jobs::{JobItem, ListForm, PAGE};
use crate::authz::{get, Role, Routes};
use crate::state::AppState;
use crate::usecases::jobs::{self as uc, JobQuery};
use crate::usecases::{self, UseCaseResult};

/// Rows of the dashboard's blocks (what `dashboard::show` renders).
pub const DASH_RUNNING: i64 = 20;
pub const DASH_FAILURES: i64 = 10;
/// Rereads at most this often per viewer, however fast jobs change.
pub const MIN_GAP: Duration = Duration::from_millis(200);
/// Rereads at least this often (changes made by another server's agent reach no bus here).
pub const FALLBACK: Duration = Duration::from_secs(10);

pub fn routes() -> Routes<AppState> {
    Routes::new().route("/jobs/stream", get(Role::Viewer, stream))
}

#[derive(Template)]
#[template(path = "job_row_partial.html")]
struct Row<'a> {
    j: &'a JobItem,
}

#[derive(Template)]
#[template(path = "job_compact_row_partial.html")]
struct CompactRow<'a> {
    j: &'a JobItem,
}

#[derive(Template)]
#[template(path = "next_run_row_partial.html")]
struct NextRow<'a> {
    n: &'a NextRun,
}

/// What a stream watches.
#[derive(Debug, Clone)]
pub enum View {
    /// The dashboard's running jobs, recent failures and next runs.
    Dashboard,
    /// A page of the job list with its filters.
    List(JobQuery),
}

/// One block of a page: its rows in order, each as (key, HTML).
pub struct Block {
    pub name: &'static str,
    pub rows: Vec<(String, String)>,
}

fn rendered<T: Template>(t: &T) -> String {
    t.render().unwrap_or_else(|e| {
        tracing::error!(error = %e, "rendering a live row");
        String::new()
    })
}

fn job_block(name: &'static str, jobs: Vec<cronium_store::JobRow>, compact: bool) -> Block {
    Block {
        name,
        rows: jobs
            .into_iter()
            .map(JobItem::from)
            .map(|j| {
                let html = if compact {
                    rendered(&CompactRow { j: &j })
                } else {
                    rendered(&Row { j: &j })
                };
                (j.id.to_string(), html)
            })
            .collect(),
    }
}

/// The view as the page would show it now, read through the use cases.
pub async fn read(state: &AppState, view: &View) -> UseCaseResult<Vec<Block>> {
    match view {
        View::Dashboard => {
            let running = uc::running(state, DASH_RUNNING).await?;
            let failures = uc::recent_failures(state, DASH_FAILURES).await?;
            let events = usecases::events::list(state).await?;
            let next = Block {
                name: "next",
                rows: next_runs(&events)
                    .iter()
                    .map(|n| (n.event.clone(), rendered(&NextRow { n })))
                    .collect(),
            };
            Ok(vec![
                job_block("running", running, true),
                job_block("failures", failures, true),
                next,
            ])
        }
        View::List(q) => Ok(vec![job_block("list", uc::list(state, q).await?, false)]),
    }
}

/// What a viewer was last sent, per block: its keys in order and each row's HTML.
#[derive(Default)]
pub struct Sent {
    blocks: HashMap<&'static str, (Vec<String>, HashMap<String, String>)>,
}

impl Sent {
    /// The `view` events that bring a page showing what was sent to `now`: a block whose rows
    /// (order or content) changed, with the HTML of the new and changed rows only.
    pub fn diff(&mut self, now: Vec<Block>) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for b in now {
            let keys: Vec<String> = b.rows.iter().map(|(k, _)| k.clone()).collect();
            let html: HashMap<String, String> = b.rows.into_iter().collect();
            // A block never sent is sent whole, even empty: it resyncs a reconnected page.
            let old = self.blocks.remove(b.name);
            let first = old.is_none();
            let (old_keys, old_html) = old.unwrap_or_default();
            let changed: serde_json::Map<String, serde_json::Value> = html
                .iter()
                .filter(|(k, h)| old_html.get(*k) != Some(*h))
                .map(|(k, h)| (k.clone(), serde_json::Value::String(h.clone())))
                .collect();
            if first || keys != old_keys || !changed.is_empty() {
                out.push(serde_json::json!({ "view": b.name, "keys": keys, "rows": changed }));
            }
            self.blocks.insert(b.name, (keys, html));
        }
        out
    }
}

#[derive(Deserialize, Default)]
pub struct StreamForm {
    /// `dashboard`, or absent for the job list (with the list's filters).
    view: Option<String>,
    #[serde(flatten)]
    list: ListForm,
}

/// The live statuses of the dashboard (`?view=dashboard`) or of a job list page (its filters
/// and `before`, as the page's own query). A filter that does not parse is refused (422) before
/// the stream starts.
pub async fn stream(
    State(state): State<AppState>,
    Query(f): Query<StreamForm>,
) -> UiResult<Response> {
    let view = match f.view.as_deref().map(str::trim) {
        Some("dashboard") => View::Dashboard,
        None | Some("") | Some("list") => {
            let before = f
                .list
                .before()
                .map_err(|m| super::error::UiError::BadRequest(m.to_string()))?;
            let mut q = f.list.query();
            q.limit = Some(PAGE);
            q.before = before;
            View::List(q)
        }
        Some(other) => {
            return Err(super::error::UiError::BadRequest(format!(
                "view: expected dashboard or list, not {other:?}"
            )))
        }
    };
    // Subscribe before the first read, so no change between them is missed.
    let rx = state.bus.watch_jobs();
    let mut sent = Sent::default();
    let first = sent.diff(read(&state, &view).await?);
    let cursor = Cursor {
        state,
        view,
        rx,
        sent,
        pending: first.into(),
        last: Instant::now(),
    };
    let events = futures::stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(data) = c.pending.pop_front() {
                let ev = Event::default().event("view").data(data.to_string());
                return Some((Ok::<_, Infallible>(ev), c));
            }
            match c.wait().await {
                Some(()) => {}
                None => return None,
            }
            match read(&c.state, &c.view).await {
                Ok(blocks) => {
                    let d = c.sent.diff(blocks);
                    c.pending.extend(d);
                }
                Err(e) => {
                    // The page keeps what it shows; the next wake-up tries again.
                    tracing::error!(error = %e, "live statuses: reading the view failed");
                    let ev = Event::default().event("error").data(
                        serde_json::json!({
                            "message": "the statuses could not be read (see the server's log); retrying"
                        })
                        .to_string(),
                    );
                    return Some((Ok(ev), c));
                }
            }
        }
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

struct Cursor {
    state: AppState,
    view: View,
    rx: tokio::sync::broadcast::Receiver<cronium_core::logbus::JobChanged>,
    sent: Sent,
    pending: VecDeque<serde_json::Value>,
    last: Instant,
}

impl Cursor {
    /// Waits for the next reason to reread: a status change (or a lag: some were missed), or
    /// the fallback period; then at least [`MIN_GAP`] after the last reread, with every
    /// wake-up that came meanwhile folded in. None: the bus is gone (the server stops).
    async fn wait(&mut self) -> Option<()> {
        tokio::select! {
            r = self.rx.recv() => match r {
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return None,
            },
            _ = tokio::time::sleep(FALLBACK) => {}
        }
        let since = self.last.elapsed();
        if since < MIN_GAP {
            tokio::time::sleep(MIN_GAP - since).await;
        }
        loop {
            match self.rx.try_recv() {
                Ok(_) | Err(TryRecvError::Lagged(_)) => continue,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Closed) => return None,
            }
        }
        self.last = Instant::now();
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(name: &'static str, rows: &[(&str, &str)]) -> Block {
        Block {
            name,
            rows: rows
                .iter()
                .map(|(k, h)| (k.to_string(), h.to_string()))
                .collect(),
        }
    }

    #[test]
    fn the_diff_sends_the_whole_view_first_then_only_what_changed() {
        let mut s = Sent::default();
        let first = s.diff(vec![
            block(
                "running",
                &[("2", "<tr>2 running</tr>"), ("1", "<tr>1</tr>")],
            ),
            block("failures", &[]),
        ]);
        assert_eq!(first.len(), 2, "{first:?}");
        assert_eq!(first[0]["keys"], serde_json::json!(["2", "1"]));
        assert_eq!(first[0]["rows"]["2"], "<tr>2 running</tr>");
        assert_eq!(first[1]["keys"], serde_json::json!([]));
        // Nothing changed: nothing sent.
        assert!(s
            .diff(vec![
                block(
                    "running",
                    &[("2", "<tr>2 running</tr>"), ("1", "<tr>1</tr>")]
                ),
                block("failures", &[]),
            ])
            .is_empty());
        // Job 2 left `running` and failed; job 3 started.
        let next = s.diff(vec![
            block("running", &[("3", "<tr>3</tr>"), ("1", "<tr>1</tr>")]),
            block("failures", &[("2", "<tr>2 failed</tr>")]),
        ]);
        assert_eq!(next.len(), 2);
        assert_eq!(next[0]["keys"], serde_json::json!(["3", "1"]));
        assert_eq!(
            next[0]["rows"],
            serde_json::json!({ "3": "<tr>3</tr>" }),
            "unchanged rows are not sent again"
        );
        assert_eq!(next[1]["rows"]["2"], "<tr>2 failed</tr>");
    }
}
