//! The web UI: server-rendered HTML pages at `/`, behind a login.
//!
//! One view module per area (`dashboard`, `events`, `jobs`, `workflows` (with `graph`, the
//! SVG layout), `servers`, `variables`, `tokens`, `login`), one [`router`] that assembles
//! them, errors rendered in one place ([`error::UiError`]). Templates (`crates/server/templates/`) are askama templates checked
//! at compile time: a page extends `base.html`, and a fragment a script fetches is a
//! `*_partial.html` rendered alone. Every page is a full HTML page that works without
//! JavaScript; `assets/app.js` only makes the live log and statuses live and adds shortcuts.
//!
//! Pages never talk to the store: they call `crate::usecases`, as the API does. The session
//! (a store row; see [`session`]) authenticates pages only, never `/api/*`, and every
//! state-changing request carries its CSRF token.

pub mod agents;
pub mod assets;
pub mod audit;
pub mod dashboard;
pub mod error;
pub mod events;
pub mod format;
pub mod graph;
pub mod jobs;
pub mod live;
pub mod login;
pub mod servers;
pub mod session;
pub mod tokens;
pub mod users;
pub mod variables;
pub mod workflows;

use std::time::Duration;

use askama::Template;
use axum::http::{header, HeaderValue};
use axum::middleware;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get as plain_get;
use axum::Router;

use self::error::UiError;
use self::session::Session;
use crate::authz::{get, post, Role, Routes, Rule};
use crate::state::AppState;

/// Sessions and cookies of the web UI.
#[derive(Debug, Clone)]
pub struct UiConfig {
    /// A session unused for this long ends.
    pub session_idle: Duration,
    /// A session ends this long after the login, however active.
    pub session_lifetime: Duration,
    /// Mark cookies `Secure` (the server is reached over HTTPS, through a proxy).
    pub secure_cookies: bool,
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig {
            session_idle: Duration::from_secs(12 * 3600),
            session_lifetime: Duration::from_secs(7 * 24 * 3600),
            secure_cookies: false,
        }
    }
}

/// What the layout of every page needs: who is logged in, the CSRF token for its forms, the
/// active navigation entry and the assets' hashed names.
pub struct Ctx {
    pub user: String,
    /// The user's role: templates show only what it allows (no run, edit or cancel button
    /// for a viewer, no Users or Audit entry but for an admin); the routes enforce it.
    pub role: Role,
    pub can_operate: bool,
    pub is_admin: bool,
    pub csrf: String,
    /// The navigation entry to mark as current.
    pub nav: &'static str,
    pub css: &'static str,
    pub js: &'static str,
    pub icon: &'static str,
}

impl Ctx {
    pub fn new(session: &Session, nav: &'static str) -> Ctx {
        let a = assets::get();
        Ctx {
            user: session.username.clone(),
            role: session.role,
            can_operate: session.role.allows(Role::Operator),
            is_admin: session.role.allows(Role::Admin),
            csrf: session.csrf.clone(),
            nav,
            css: a.css.path.as_str(),
            js: a.js.path.as_str(),
            icon: a.icon.path.as_str(),
        }
    }
}

/// Renders a page (200); a template error is a 500 rendered by [`UiError`].
pub fn render<T: Template>(t: &T) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => UiError::Internal(format!("template: {e}")).into_response(),
    }
}

/// Security headers of every page: a Content-Security-Policy that allows only our own
/// scripts and styles (no inline script, no inline style), no framing, no MIME sniffing.
pub const CSP: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn security_headers(req: axum::extract::Request, next: middleware::Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        // Pages show live state and a CSRF token: never from a cache.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// The HTML "not found" page (for paths outside `/api`).
pub async fn not_found() -> Response {
    UiError::NotFound("There is no page at this address.".into()).into_response()
}

/// Every page behind the login, each with the role it needs (`crate::authz`): viewers see,
/// operators change and run, admins manage users and read the audit log.
pub fn page_routes() -> Routes<AppState> {
    Routes::new()
        .route("/", get(Role::Viewer, dashboard::show))
        .route("/logout", post(Role::Viewer, login::logout))
        .merge(events::routes())
        .merge(jobs::routes())
        .merge(workflows::routes())
        .merge(live::routes())
        .merge(servers::routes())
        .merge(agents::routes())
        .merge(variables::routes())
        .merge(tokens::routes())
        .merge(users::routes())
        .merge(audit::routes())
}

/// The rule of every page (what the role matrix test walks).
pub fn rules() -> Vec<Rule> {
    page_routes().rules("")
}

/// Every page and what it needs: the login and the assets are public; everything else
/// requires a session (else a redirect to `/login?next=...`), the role its route declares,
/// and, when it changes state, the session's CSRF token.
pub fn router(state: AppState) -> Router<AppState> {
    let pages = page_routes()
        .into_router()
        .route_layer(middleware::from_fn(session::require_csrf))
        .route_layer(middleware::from_fn_with_state(
            state,
            session::require_session,
        ));
    Router::new()
        .route("/login", plain_get(login::form).post(login::submit))
        .route("/assets/{file}", plain_get(assets::serve))
        .merge(pages)
        .layer(middleware::from_fn(security_headers))
}
