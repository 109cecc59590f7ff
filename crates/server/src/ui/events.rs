//! The events pages: the list (search by name, filters by status and type), an event's detail
//! (definition, the next 10 instants in the event's time zone, history, run with input,
//! delete), the YAML editor (a new version on save; errors shown at the field, with the line
//! marked when the field can be found in the text) and creation from a template per language.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use cronium_core::clock::now_ms;
use cronium_core::spec::EventSpec;
use cronium_model::Trigger;
use cronium_store::{Applied, EventRow};
use serde::Deserialize;
use serde_json::Value;

use super::error::UiResult;
use super::jobs::JobItem;
use super::session::Session;
use super::{format, render, Ctx};
use crate::authz::{get, post, Role, Routes};
use crate::state::AppState;
use crate::usecases::events as uc;
use crate::usecases::{Actor, UseCaseError};

pub fn routes() -> Routes<AppState> {
    use Role::{Operator, Viewer};
    Routes::new()
        .route("/events", get(Viewer, list))
        // Not `/events/new`: `new` is a valid event name.
        .route("/new-event", get(Operator, new_form).post(Operator, create))
        .route("/events/{name}", get(Viewer, show))
        .route(
            "/events/{name}/edit",
            get(Operator, edit_form).post(Operator, save),
        )
        .route("/events/{name}/run", post(Operator, run))
        .route("/events/{name}/delete", post(Operator, delete))
}

pub struct EventItem {
    pub name: String,
    pub kind: String,
    pub status: String,
    pub schedule: String,
    pub next: String,
    pub broken: Option<String>,
}

fn kind_and_schedule(e: &EventRow) -> (String, String) {
    let s = |k: &str| {
        e.spec
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (s("type"), s("schedule"))
}

impl From<&EventRow> for EventItem {
    fn from(e: &EventRow) -> Self {
        let (kind, schedule) = kind_and_schedule(e);
        EventItem {
            name: e.name.clone(),
            kind,
            status: e.status.to_string(),
            schedule,
            next: format::ts(e.next_fire_at),
            broken: e.broken.clone(),
        }
    }
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    q: Option<String>,
    status: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Template)]
#[template(path = "events.html")]
struct EventsPage {
    ctx: Ctx,
    events: Vec<EventItem>,
    total: usize,
    q: String,
    status: String,
    kind: String,
    statuses: Vec<&'static str>,
    kinds: Vec<&'static str>,
}

pub const KINDS: [&str; 4] = ["bash", "python", "node", "http"];

pub async fn list(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Query(f): Query<ListQuery>,
) -> UiResult<Response> {
    let all = uc::list(&state).await?;
    let q = f.q.unwrap_or_default().trim().to_lowercase();
    let status = f.status.unwrap_or_default();
    let kind = f.kind.unwrap_or_default();
    let events: Vec<EventItem> = all
        .iter()
        .map(EventItem::from)
        .filter(|e| q.is_empty() || e.name.contains(&q))
        .filter(|e| status.is_empty() || e.status == status)
        .filter(|e| kind.is_empty() || e.kind == kind)
        .collect();
    Ok(render(&EventsPage {
        ctx: Ctx::new(&session, "events"),
        events,
        total: all.len(),
        q,
        status,
        kind,
        statuses: cronium_model::EventStatus::ALL
            .iter()
            .map(|s| s.as_str())
            .collect(),
        kinds: KINDS.to_vec(),
    }))
}

#[derive(Template)]
#[template(path = "event.html")]
struct EventPage {
    ctx: Ctx,
    event: EventItem,
    version: i64,
    yaml: String,
    timezone: String,
    target: String,
    next: Vec<String>,
    history: Vec<JobItem>,
    input: String,
    run_error: Option<String>,
    done: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct ShowQuery {
    done: Option<String>,
}

/// The YAML the editor and the detail page show: the stored fields and the event's status.
pub fn yaml_of(event: &EventRow) -> String {
    let mut v = event.spec.clone();
    if let Some(obj) = v.as_object_mut() {
        obj.insert("status".into(), Value::String(event.status.to_string()));
    }
    serde_saphyr::to_string(&v).unwrap_or_else(|_| v.to_string())
}

fn target_of(spec: &Value) -> String {
    match spec.get("target") {
        None | Some(Value::Null) => "local".into(),
        Some(Value::String(s)) => s.clone(),
        Some(t) => t.to_string(),
    }
}

async fn event_page(
    state: &AppState,
    session: &Session,
    name: &str,
    input: Option<String>,
    run_error: Option<String>,
    done: Option<String>,
) -> UiResult<EventPage> {
    let event = uc::get(state, name).await?;
    let spec: Option<EventSpec> = uc::spec_of(&event).ok();
    let timezone = spec
        .as_ref()
        .map_or("UTC".to_string(), |s| s.timezone.clone());
    let next = spec
        .as_ref()
        .map(|s| uc::next_instants(&event, s, now_ms(), 10))
        .unwrap_or_default()
        .into_iter()
        .map(|t| format::ts_in(t, &timezone))
        .collect();
    let history = uc::history(state, &event, 20).await?;
    let default_input = spec.as_ref().map_or(Value::Null, |s| s.input.clone());
    Ok(EventPage {
        ctx: Ctx::new(session, "events"),
        version: event.version,
        yaml: yaml_of(&event),
        timezone,
        target: target_of(&event.spec),
        next,
        history: history.into_iter().map(JobItem::from).collect(),
        input: input.unwrap_or_else(|| match default_input {
            Value::Null => String::new(),
            v => serde_json::to_string_pretty(&v).unwrap_or_default(),
        }),
        run_error,
        done,
        event: EventItem::from(&event),
    })
}

fn done_message(done: Option<&str>) -> Option<String> {
    Some(
        match done? {
            "created" => "Event created.",
            "updated" => "Saved: a new version.",
            "unchanged" => "Nothing changed: the version stays the same.",
            _ => return None,
        }
        .into(),
    )
}

pub async fn show(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    Query(q): Query<ShowQuery>,
) -> UiResult<Response> {
    let page = event_page(
        &state,
        &session,
        &name,
        None,
        None,
        done_message(q.done.as_deref()),
    )
    .await?;
    Ok(render(&page))
}

#[derive(Deserialize)]
pub struct RunForm {
    #[serde(default)]
    input: String,
}

/// Runs the event with the form's input (JSON; empty: the event's default input), then shows
/// the new job.
pub async fn run(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    Form(f): Form<RunForm>,
) -> UiResult<Response> {
    let input = match f.input.trim() {
        "" => None,
        text => match serde_json::from_str::<Value>(text) {
            Ok(v) => Some(v),
            Err(e) => {
                let page = event_page(
                    &state,
                    &session,
                    &name,
                    Some(f.input.clone()),
                    Some(format!("input: not valid JSON: {e}")),
                    None,
                )
                .await?;
                return Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&page)).into_response());
            }
        },
    };
    match uc::run(&state, &session.actor(), &name, input, Trigger::Manual).await {
        Ok(job) => Ok(Redirect::to(&format!("/jobs/{}?done=started", job.id)).into_response()),
        Err(e @ (UseCaseError::Invalid { .. } | UseCaseError::Conflict { .. })) => {
            let page = event_page(
                &state,
                &session,
                &name,
                Some(f.input.clone()),
                Some(e.to_string()),
                None,
            )
            .await?;
            Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&page)).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn delete(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
) -> UiResult<Response> {
    uc::delete(&state, &actor, &name).await?;
    Ok(Redirect::to("/events").into_response())
}

/// A validation error as the editor shows it.
pub struct EditorError {
    pub field: String,
    pub message: String,
    /// 1-based line of the YAML where the field is, when it can be found.
    pub line: Option<usize>,
}

#[derive(Template)]
#[template(path = "editor.html")]
struct EditorPage {
    ctx: Ctx,
    /// None: a new event.
    name: Option<String>,
    action: String,
    yaml: String,
    lines: usize,
    error: Option<EditorError>,
    kind: String,
    kinds: Vec<&'static str>,
}

fn editor(
    session: &Session,
    name: Option<String>,
    yaml: String,
    error: Option<EditorError>,
    kind: String,
) -> EditorPage {
    let action = match &name {
        Some(n) => format!("/events/{n}/edit"),
        None => "/new-event".into(),
    };
    EditorPage {
        ctx: Ctx::new(session, "events"),
        name,
        action,
        lines: yaml.lines().count().max(1),
        yaml,
        error,
        kind,
        kinds: KINDS.to_vec(),
    }
}

#[derive(Deserialize, Default)]
pub struct NewQuery {
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// A starting point per language: a valid event to change.
pub fn template(kind: &str) -> &'static str {
    match kind {
        "python" => include_str!("../../templates/new/python.yaml"),
        "node" => include_str!("../../templates/new/node.yaml"),
        "http" => include_str!("../../templates/new/http.yaml"),
        _ => include_str!("../../templates/new/bash.yaml"),
    }
}

pub async fn new_form(
    Extension(session): Extension<Session>,
    Query(q): Query<NewQuery>,
) -> UiResult<Response> {
    let kind = q
        .kind
        .filter(|k| KINDS.contains(&k.as_str()))
        .unwrap_or_else(|| "bash".into());
    Ok(render(&editor(
        &session,
        None,
        template(&kind).to_string(),
        None,
        kind,
    )))
}

pub async fn edit_form(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
) -> UiResult<Response> {
    let event = uc::get(&state, &name).await?;
    let yaml = yaml_of(&event);
    // A broken event opens with its reason shown, so the user knows what to fix.
    let error = event.broken.clone().map(|message| EditorError {
        field: "spec".into(),
        message,
        line: None,
    });
    Ok(render(&editor(
        &session,
        Some(name),
        yaml,
        error,
        String::new(),
    )))
}

#[derive(Deserialize)]
pub struct EditorForm {
    yaml: String,
}

async fn save_from(
    state: &AppState,
    session: &Session,
    existing: Option<String>,
    yaml: String,
) -> UiResult<Response> {
    // Browsers send textareas with CRLF line ends.
    let yaml = yaml.replace("\r\n", "\n");
    match uc::save_yaml(state, &session.actor(), existing.as_deref(), &yaml).await {
        Ok((event, applied)) => {
            let done = match applied {
                Applied::Created => "created",
                Applied::Updated => "updated",
                Applied::Unchanged => "unchanged",
            };
            Ok(Redirect::to(&format!("/events/{}?done={done}", event.name)).into_response())
        }
        Err(e @ (UseCaseError::Invalid { .. } | UseCaseError::Conflict { .. })) => {
            let field = e.field().unwrap_or("(document)").to_string();
            // The page names the field already.
            let message = e.to_string();
            let message = message
                .strip_prefix(&format!("{field}: "))
                .map_or(message.clone(), str::to_string);
            let line = line_of(&yaml, &field).or_else(|| line_in_message(&message));
            let page = editor(
                session,
                existing,
                yaml,
                Some(EditorError {
                    field,
                    message,
                    line,
                }),
                String::new(),
            );
            Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&page)).into_response())
        }
        Err(UseCaseError::Store(cronium_store::StoreError::Conflict(_))) => {
            let message =
                "name: an event of that name exists already (open it to edit it)".to_string();
            let line = line_of(&yaml, "name");
            let page = editor(
                session,
                existing,
                yaml,
                Some(EditorError {
                    field: "name".into(),
                    message,
                    line,
                }),
                String::new(),
            );
            Ok((StatusCode::CONFLICT, render(&page)).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn create(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Form(f): Form<EditorForm>,
) -> UiResult<Response> {
    save_from(&state, &session, None, f.yaml).await
}

pub async fn save(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    Form(f): Form<EditorForm>,
) -> UiResult<Response> {
    uc::get(&state, &name).await?;
    save_from(&state, &session, Some(name), f.yaml).await
}

/// The 1-based line of the YAML where the field path (`retries.backoff`, `target.servers[1]`)
/// is written, following block mappings by indentation; for a key inside a flow mapping
/// (`retries: { backoff: x }`) the line of the mapping. None when it cannot be found.
pub fn line_of(yaml: &str, field: &str) -> Option<usize> {
    let segments: Vec<&str> = field
        .split('.')
        .map(|s| s.split('[').next().unwrap_or(s))
        .filter(|s| !s.is_empty())
        .collect();
    if segments.is_empty() {
        return None;
    }
    let lines: Vec<&str> = yaml.lines().collect();
    let mut from = 0;
    let mut parent_indent: Option<usize> = None;
    let mut found = None;
    for seg in segments {
        let mut hit = None;
        for (i, line) in lines.iter().enumerate().skip(from) {
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let indent = line.len() - trimmed.len();
            if let Some(p) = parent_indent {
                if i > from && indent <= p {
                    break; // left the parent's block
                }
            }
            let key = trimmed.trim_start_matches("- ");
            if key.starts_with(&format!("{seg}:")) || key.starts_with(&format!("\"{seg}\":")) {
                hit = Some((i, indent));
                break;
            }
        }
        match hit {
            Some((i, indent)) => {
                found = Some(i);
                from = i + 1;
                parent_indent = Some(indent);
            }
            None => {
                // Perhaps written inline on the parent's line (`retries: { backoff: 1x }`):
                // the parent's line is as close as the text allows.
                return found.map(|i| i + 1);
            }
        }
    }
    found.map(|i| i + 1)
}

/// `line 7` in a parser's message (a YAML syntax error), as a line number.
fn line_in_message(message: &str) -> Option<usize> {
    let lower = message.to_lowercase();
    let at = lower.find("line ")?;
    lower[at + 5..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "name: a\ntype: bash\nscript: |\n  echo hi\nretries:\n  max_attempts: 3\n  backoff: 5x\ntarget: { container: { image: x, memory: lots } }\n";

    #[test]
    fn fields_are_found_by_indentation() {
        assert_eq!(line_of(YAML, "name"), Some(1));
        assert_eq!(line_of(YAML, "retries.backoff"), Some(7));
        assert_eq!(line_of(YAML, "target.container.memory"), Some(8));
        assert_eq!(line_of(YAML, "schedule"), None);
        assert_eq!(line_of(YAML, "(document)"), None);
    }

    #[test]
    fn a_key_of_another_block_is_not_taken() {
        let y = "http:\n  method: GET\nretries:\n  backoff: 1s\n";
        assert_eq!(line_of(y, "http.backoff"), Some(1));
        assert_eq!(line_of(y, "retries.backoff"), Some(4));
    }

    #[test]
    fn syntax_errors_give_their_line() {
        assert_eq!(
            line_in_message("not valid YAML: mapping values are not allowed at line 3 column 5"),
            Some(3)
        );
        assert_eq!(line_in_message("no line here"), None);
    }

    #[test]
    fn every_template_is_a_valid_event() {
        for kind in KINDS {
            let spec = cronium_core::spec::parse_yaml(template(kind))
                .unwrap_or_else(|e| panic!("{kind} template: {e}"));
            assert_eq!(spec.name, format!("my-{kind}-event"));
        }
    }
}
