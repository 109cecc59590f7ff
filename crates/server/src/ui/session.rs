//! Sessions of the web UI and the CSRF check.
//!
//! A session is a store row; the cookie `cronium_session` holds `ID.SECRET`, and the row keeps
//! only the SHA-256 of the secret, so a stolen database holds no usable session. The cookie is
//! `HttpOnly`, `SameSite=Lax`, `Path=/`, and `Secure` with `--secure-cookies`. A session ends
//! after [`UiConfig::session_idle`] without use or [`UiConfig::session_lifetime`] after the
//! login, whichever comes first; the id rotates at every login.
//!
//! CSRF: every request other than GET and HEAD to a page must carry the session's CSRF token,
//! in the `csrf` form field or the `X-Csrf-Token` header, compared in constant time. The
//! session never authenticates `/api/*` (the API takes tokens only), so a cookie cannot make
//! an API call, with or without the token.
//!
//! [`UiConfig::session_idle`]: super::UiConfig::session_idle
//! [`UiConfig::session_lifetime`]: super::UiConfig::session_lifetime

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use cronium_core::clock::now_ms;
use cronium_store::NewSession;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::UiError;
use crate::state::AppState;
use crate::usecases::Actor;
use cronium_model::Role;

pub const COOKIE: &str = "cronium_session";

/// The logged-in user of a page request (a request extension set by [`require_session`],
/// with its [`Actor`]).
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub user_id: i64,
    pub username: String,
    /// The user's role as it is now (read with the session at every request).
    pub role: Role,
    pub csrf: String,
    /// The client's address.
    pub source: Option<String>,
}

impl Session {
    /// Who acts through this session (what the use cases are given).
    pub fn actor(&self) -> Actor {
        Actor {
            user_id: Some(self.user_id),
            username: self.username.clone(),
            role: self.role,
            token_id: None,
            session_id: Some(self.id.clone()),
            source: self.source.clone(),
        }
    }
}

pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Constant-time equality of two tokens.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The value of cookie `name` in the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// A `Set-Cookie` value; `max_age` None is a session cookie, `Some(0)` deletes it.
pub fn set_cookie(
    state: &AppState,
    name: &str,
    value: &str,
    path: &str,
    max_age: Option<u64>,
) -> HeaderValue {
    let mut c = format!("{name}={value}; Path={path}; HttpOnly; SameSite=Lax");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if state.ui.secure_cookies {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Starts a session for `user_id` (ending `replaces`, the session the browser had before, in
/// the same transaction) and returns its cookie and its id.
pub async fn start(
    state: &AppState,
    user_id: i64,
    replaces: Option<&str>,
) -> Result<(HeaderValue, String), UiError> {
    let id = random_hex(16);
    let secret = random_hex(32);
    let csrf = random_hex(32);
    let now = now_ms();
    let lifetime = state.ui.session_lifetime.as_millis() as i64;
    state
        .store
        .create_session(
            &NewSession {
                id: &id,
                secret_hash: &hash_secret(&secret),
                user_id,
                csrf_token: &csrf,
                expires_at: now + lifetime,
            },
            replaces,
            now,
        )
        .await
        .map_err(|e| UiError::Internal(e.to_string()))?;
    let cookie = set_cookie(
        state,
        COOKIE,
        &format!("{id}.{secret}"),
        "/",
        Some(state.ui.session_lifetime.as_secs()),
    );
    Ok((cookie, id))
}

/// The session the cookie names, when it exists, matches its secret, has not expired (an
/// expired one is deleted) and its user is not disabled.
pub async fn current(state: &AppState, headers: &HeaderMap) -> Result<Option<Session>, UiError> {
    let Some((id, secret)) = cookie(headers, COOKIE).and_then(|v| v.split_once('.')) else {
        return Ok(None);
    };
    let internal = |e: cronium_store::StoreError| UiError::Internal(e.to_string());
    let Some(row) = state.store.get_session(id).await.map_err(internal)? else {
        return Ok(None);
    };
    if !same_token(&hash_secret(secret), &row.secret_hash) {
        return Ok(None);
    }
    let now = now_ms();
    let idle = state.ui.session_idle.as_millis() as i64;
    if row.expires_at <= now || row.last_seen_at + idle <= now {
        state.store.delete_session(id).await.map_err(internal)?;
        // Now and then, sweep every expired session too.
        let _ = state.store.delete_expired_sessions(now, now - idle).await;
        return Ok(None);
    }
    let resolution = cronium_store::SESSION_TOUCH_MS.min(idle / 4);
    state
        .store
        .touch_session(&row, now, resolution)
        .await
        .map_err(internal)?;
    Ok(Some(Session {
        id: row.id,
        user_id: row.user_id,
        username: row.username,
        role: row.role,
        csrf: row.csrf_token,
        source: None,
    }))
}

/// Pages require a login: without a valid session, a redirect to `/login?next=PATH`. With
/// one, the request carries the [`Session`] and its [`Actor`] (which `crate::authz` checks).
pub async fn require_session(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    match current(&state, req.headers()).await {
        Ok(Some(mut session)) => {
            session.source = req
                .extensions()
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip().to_string());
            req.extensions_mut().insert(session.actor());
            req.extensions_mut().insert(session);
            next.run(req).await
        }
        Ok(None) => {
            let target = req
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string();
            let to = match target.as_str() {
                "/" => "/login".to_string(),
                t => format!("/login?next={}", urlencode(t)),
            };
            Redirect::to(&to).into_response()
        }
        Err(e) => e.into_response(),
    }
}

pub fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .map(|q| q.trim_start_matches('=').to_string())
        .unwrap_or_default()
}

/// Largest form a page accepts (an event with a 1 MiB script fits).
const MAX_FORM: usize = crate::api::MAX_BODY;

/// Every request but GET and HEAD carries the session's CSRF token (form field `csrf` or
/// header `X-Csrf-Token`); without it, a 403 and nothing changes.
pub async fn require_csrf(req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        return next.run(req).await;
    }
    let Some(session) = req.extensions().get::<Session>().cloned() else {
        return UiError::Forbidden("no session".into()).into_response();
    };
    let refused = || {
        UiError::Forbidden(
            "This form's security token is missing or out of date. Go back, reload the page and try again."
                .into(),
        )
        .into_response()
    };
    if let Some(h) = req
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
    {
        return if same_token(h, &session.csrf) {
            next.run(req).await
        } else {
            refused()
        };
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let multipart = content_type.starts_with("multipart/form-data");
    if !multipart && !content_type.starts_with("application/x-www-form-urlencoded") {
        return refused();
    }
    let (parts, body) = req.into_parts();
    let bytes = match to_bytes(body, MAX_FORM).await {
        Ok(b) => b,
        Err(_) => return UiError::BadRequest("the form is over 2 MiB".into()).into_response(),
    };
    let token = if multipart {
        multipart_field(&content_type, bytes.clone(), "csrf").await
    } else {
        form_url_decoded(&bytes, "csrf")
    };
    if !token.is_some_and(|t| same_token(&t, &session.csrf)) {
        return refused();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// The text of field `name` in a `multipart/form-data` body (a form with a file).
async fn multipart_field(
    content_type: &str,
    body: axum::body::Bytes,
    name: &str,
) -> Option<String> {
    use axum::extract::FromRequest;
    let req = Request::builder()
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .ok()?;
    let mut form = axum::extract::Multipart::from_request(req, &())
        .await
        .ok()?;
    while let Ok(Some(field)) = form.next_field().await {
        if field.name() == Some(name) {
            return field.text().await.ok();
        }
    }
    None
}

/// The first value of `field` in an `application/x-www-form-urlencoded` body.
fn form_url_decoded(body: &[u8], field: &str) -> Option<String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == field)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "abcd"));
        assert!(!same_token("", "a"));
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; cronium_session=x.y; b=2"),
        );
        assert_eq!(cookie(&h, COOKIE), Some("x.y"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn form_fields_are_decoded() {
        assert_eq!(
            form_url_decoded(b"a=1&csrf=x%2By", "csrf").as_deref(),
            Some("x+y")
        );
        assert_eq!(form_url_decoded(b"a=1", "csrf"), None);
    }

    #[test]
    fn next_is_url_encoded() {
        assert_eq!(
            urlencode("/jobs?status=failed"),
            "%2Fjobs%3Fstatus%3Dfailed"
        );
    }
}
