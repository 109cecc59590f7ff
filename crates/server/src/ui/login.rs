//! `GET/POST /login` and `POST /logout`.
//!
//! The login form carries its own CSRF token (double-submit: a random value in a short-lived
//! `cronium_login` cookie and in the form), since there is no session yet to hold one.
//! Any enabled user logs in with their password (a disabled one is refused like a wrong
//! password). Failed logins are counted per user name and per client address, separately;
//! from the [`FREE_FAILURES`]th on, each further attempt waits twice as long as the one before
//! (1 s, 2 s, 4 s... at most [`MAX_DELAY_S`]), and an attempt inside either wait is refused
//! with 429 without checking the password: guessing one account from many addresses is slowed
//! by the account's counter, guessing many accounts from one address by the address's. A
//! success clears that user's counter and the address's. Every login and failed login (with
//! the name tried and why) goes into the audit log (`usecases::users`).

use std::net::SocketAddr;
use std::sync::OnceLock;

use askama::Template;
use axum::extract::{ConnectInfo, FromRequest, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use cronium_core::clock::now_ms;
use serde::Deserialize;

use super::assets;
use super::error::{UiError, UiResult};
use super::session::{self, Session};
use crate::auth;
use crate::state::AppState;
use crate::usecases;

const LOGIN_COOKIE: &str = "cronium_login";
/// Failures allowed before delays start.
pub const FREE_FAILURES: i64 = 3;
/// The longest delay between two attempts.
pub const MAX_DELAY_S: i64 = 300;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    css: &'a str,
    icon: &'a str,
    csrf: String,
    next: String,
    username: String,
    error: Option<String>,
}

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

/// Only a path on this site (never `//host`, never a scheme).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.into(),
        _ => "/".into(),
    }
}

fn page(
    state: &AppState,
    status: StatusCode,
    next: String,
    username: String,
    error: Option<String>,
) -> Response {
    let a = assets::get();
    let csrf = session::random_hex(16);
    let p = LoginPage {
        css: &a.css.path,
        icon: &a.icon.path,
        csrf: csrf.clone(),
        next,
        username,
        error,
    };
    match p.render() {
        Ok(html) => (
            status,
            [(
                header::SET_COOKIE,
                session::set_cookie(state, LOGIN_COOKIE, &csrf, "/login", Some(3600)),
            )],
            axum::response::Html(html),
        )
            .into_response(),
        Err(e) => UiError::Internal(e.to_string()).into_response(),
    }
}

/// The login form (or, with a session already, where `next` points).
pub async fn form(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> UiResult<Response> {
    let next = safe_next(q.next.as_deref());
    if session::current(&state, &headers).await?.is_some() {
        return Ok(Redirect::to(&next).into_response());
    }
    Ok(page(&state, StatusCode::OK, next, String::new(), None))
}

#[derive(Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
    csrf: String,
    next: Option<String>,
}

/// How long after the last failure the next attempt must wait, given the failures so far.
pub fn delay_ms(failures: i64) -> i64 {
    if failures < FREE_FAILURES {
        return 0;
    }
    let exp = (failures - FREE_FAILURES).min(16) as u32;
    (1000i64 << exp).min(MAX_DELAY_S * 1000)
}

fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| auth::hash_password(&session::random_hex(16)).unwrap_or_default())
}

pub async fn submit(State(state): State<AppState>, req: Request) -> UiResult<Response> {
    let addr = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_string(), |c| c.0.ip().to_string());
    let headers = req.headers().clone();
    let Form(f) = Form::<LoginForm>::from_request(req, &state)
        .await
        .map_err(|e| UiError::BadRequest(e.body_text()))?;
    let next = safe_next(f.next.as_deref());
    let expected = session::cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !session::same_token(expected, &f.csrf) {
        return Err(UiError::Forbidden(
            "The login form is out of date (or cookies are off): reload it and try again.".into(),
        ));
    }
    let internal = |e: cronium_store::StoreError| UiError::Internal(e.to_string());
    let username = f.username.trim().to_string();
    let keys = [format!("user:{username}"), format!("addr:{addr}")];
    let now = now_ms();
    for key in &keys {
        if let Some((failures, last_at)) =
            state.store.login_failures(key).await.map_err(internal)?
        {
            let wait = last_at + delay_ms(failures) - now;
            if wait > 0 {
                let secs = (wait + 999) / 1000;
                let why = match key.starts_with("user:") {
                    true => "too many failures for this user: throttled",
                    false => "too many failures from this address: throttled",
                };
                usecases::users::login_failed(&state, &username, &addr, why).await;
                return Ok(page(
                    &state,
                    StatusCode::TOO_MANY_REQUESTS,
                    next,
                    username,
                    Some(format!(
                        "Too many failed logins: wait {secs} s before trying again."
                    )),
                ));
            }
        }
    }
    let user = state
        .store
        .get_user_by_name(&username)
        .await
        .map_err(internal)?;
    // The same Argon2 work whether the user exists or not: timing tells nothing.
    let hash = user
        .as_ref()
        .map_or(dummy_hash(), |u| u.password_hash.as_str());
    let password = f.password.clone();
    let hash_owned = hash.to_string();
    let ok = tokio::task::spawn_blocking(move || auth::verify_password(&password, &hash_owned))
        .await
        .unwrap_or(false);
    let user = match (ok, user) {
        (true, Some(u)) if u.disabled_at.is_none() => u,
        (ok, user) => {
            let why = match (ok, user.is_some()) {
                (_, false) => "no such user",
                (true, true) => "the user is disabled",
                (false, true) => "wrong password",
            };
            usecases::users::login_failed(&state, &username, &addr, why).await;
            // The delay counts from the answer, not from the request (hashing takes a while).
            let now = now_ms();
            for key in &keys {
                state
                    .store
                    .record_login_failure(key, now)
                    .await
                    .map_err(internal)?;
            }
            tracing::warn!(user = %username, %addr, "failed login");
            return Ok(page(
                &state,
                StatusCode::UNAUTHORIZED,
                next,
                username,
                Some("Wrong user name or password.".into()),
            ));
        }
    };
    for key in &keys {
        state
            .store
            .clear_login_failures(key)
            .await
            .map_err(internal)?;
    }
    // A new id at every login: a session id planted before it is worth nothing after it.
    let old = session::cookie(&headers, session::COOKIE)
        .and_then(|v| v.split_once('.'))
        .map(|(id, _)| id.to_string());
    let (cookie, session_id) = session::start(&state, user.id, old.as_deref()).await?;
    usecases::users::logged_in(&state, &user, &session_id, &addr).await;
    let mut resp = Redirect::to(&next).into_response();
    let h = resp.headers_mut();
    h.append(header::SET_COOKIE, cookie);
    h.append(
        header::SET_COOKIE,
        session::set_cookie(&state, LOGIN_COOKIE, "", "/login", Some(0)),
    );
    Ok(resp)
}

/// Ends the session and clears its cookie.
pub async fn logout(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
) -> UiResult<Response> {
    state
        .store
        .delete_session(&s.id)
        .await
        .map_err(|e| UiError::Internal(e.to_string()))?;
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        session::set_cookie(&state, session::COOKIE, "", "/", Some(0)),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_after_the_free_failures() {
        assert_eq!(delay_ms(0), 0);
        assert_eq!(delay_ms(FREE_FAILURES - 1), 0);
        assert_eq!(delay_ms(FREE_FAILURES), 1000);
        assert_eq!(delay_ms(FREE_FAILURES + 1), 2000);
        assert_eq!(delay_ms(FREE_FAILURES + 3), 8000);
        assert_eq!(delay_ms(1000), MAX_DELAY_S * 1000);
    }

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/jobs?x=1")), "/jobs?x=1");
        assert_eq!(safe_next(Some("//evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(Some("/\\evil")), "/");
        assert_eq!(safe_next(None), "/");
    }
}
