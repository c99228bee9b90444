//! Browser sessions and the page's visitor: the session store, its cookies, the
//! `Visitor` and `Base` extractors, the CSRF check, error pages and writes.

// Handlers return the error page itself as `Err(Response)`: boxing it gains nothing.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, NestedPath};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use ff_store::{Mutation, Role, Write};
use maud::{Markup, html};
use subtle::ConstantTimeEq;

use super::layout::{csrf_field, layout, seg};
use crate::Admin;
use crate::auth::{Caller, SessionToken};
use crate::error::AdminError;

pub(super) const COOKIE: &str = "ff_session";
/// A session ends this long after login, however busy.
pub(super) const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// A session ends after this long without a request.
pub(super) const SESSION_IDLE: Duration = Duration::from_secs(30 * 60);
/// The login form's CSRF token travels in this cookie and in the form (double submit).
pub(super) const LOGIN_COOKIE: &str = "ff_login";

/// Logged-in browser sessions, in memory: a restart logs everyone out.
#[derive(Debug, Default)]
pub(crate) struct Sessions(std::sync::Mutex<HashMap<String, Session>>);

/// A session holds the token it was opened with, never a copy of its rights: every
/// request re-reads the token (through the admin's token cache), so revoking it or
/// changing its role takes effect at once here, and within the cache's period elsewhere.
#[derive(Debug, Clone)]
pub(super) struct Session {
    token: SessionToken,
    csrf: String,
    expires: Instant,
    last_seen: Instant,
}

impl Session {
    fn live(&self, now: Instant) -> bool {
        now < self.expires && now.duration_since(self.last_seen) < SESSION_IDLE
    }
}

pub(crate) fn random_hex(bytes: usize) -> Result<String, AdminError> {
    let mut buf = vec![0u8; bytes];
    getrandom::getrandom(&mut buf).map_err(|e| AdminError::BadRequest(format!("no randomness: {e}")))?;
    Ok(hex::encode(buf))
}

impl Sessions {
    pub(super) fn create(&self, token: SessionToken) -> Result<String, AdminError> {
        let (id, csrf) = (random_hex(32)?, random_hex(32)?);
        let now = Instant::now();
        let session = Session { token, csrf, expires: now + SESSION_TTL, last_seen: now };
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, s| s.live(now));
        map.insert(id.clone(), session);
        Ok(id)
    }

    /// A live session, marked as seen now.
    fn get(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let s = map.get_mut(id).filter(|s| s.live(now))?;
        s.last_seen = now;
        Some(s.clone())
    }

    /// Drops expired and idle sessions.
    pub(crate) fn prune(&self) {
        let now = Instant::now();
        self.0.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, s| s.live(now));
    }

    /// Ends every session opened with `token`.
    pub(crate) fn end_all(&self, token: &SessionToken) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, s| s.token != *token);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub(super) fn remove(&self, id: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}

pub(super) fn cookie_named(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then(|| v.to_owned())
        })
}

/// A `Set-Cookie` header for the page: HttpOnly, SameSite=Strict, scoped to the admin's
/// mount path, and `Secure` when configured or when the request came over HTTPS.
pub(super) fn set_cookie(
    res: &mut Response,
    admin: &Admin,
    request: &HeaderMap,
    base: &str,
    (name, value, max_age): (&str, &str, u64),
) {
    let https = request.get("x-forwarded-proto").is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"));
    let secure = if admin.inner.secure_cookies || https { "; Secure" } else { "" };
    let path = if base.is_empty() { "/" } else { base };
    let cookie = format!("{name}={value}; HttpOnly; SameSite=Strict; Path={path}; Max-Age={max_age}{secure}");
    if let Ok(v) = axum::http::HeaderValue::from_str(&cookie) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// The session cookie's value, if the request has one.
pub(super) fn cookie(headers: &HeaderMap) -> Option<String> {
    cookie_named(headers, COOKIE)
}

fn base_of(parts: &mut Parts) -> String {
    parts
        .extensions
        .get::<NestedPath>()
        .map(|p| p.as_str().trim_end_matches('/').to_owned())
        .unwrap_or_default()
}

/// Where the admin is mounted (the nest prefix), for links.
pub(crate) struct Base(pub(super) String);

impl<S: Send + Sync> FromRequestParts<S> for Base {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Base(base_of(parts)))
    }
}

/// A logged-in page visitor.
pub(crate) struct Visitor {
    pub(super) caller: Caller,
    csrf: String,
    pub(super) base: String,
}

impl FromRequestParts<Admin> for Visitor {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, admin: &Admin) -> Result<Self, Response> {
        let base = base_of(parts);
        let to_login = || Redirect::to(&format!("{base}/login")).into_response();
        let id = cookie(&parts.headers).ok_or_else(to_login)?;
        let session = admin.inner.sessions.get(&id).ok_or_else(to_login)?;
        // The token as it is now: revoked or gone ends the session, a new role applies.
        match admin.session_caller(&session.token).await {
            Ok(caller) => Ok(Visitor { caller, csrf: session.csrf, base }),
            Err(AdminError::Unauthorized) => {
                admin.inner.sessions.remove(&id);
                Err(to_login())
            }
            Err(e) => Err(e.into_response()),
        }
    }
}

impl Visitor {
    /// The form came from this session's page, and the visitor may do this.
    pub(super) fn check(&self, csrf: &str, needed: Role) -> Result<(), Response> {
        if !bool::from(self.csrf.as_bytes().ct_eq(csrf.as_bytes())) {
            return Err(self.error(
                StatusCode::FORBIDDEN,
                "the form is stale or forged (CSRF check failed): reload the page",
            ));
        }
        self.caller.require(needed).map_err(|e| self.fail(e))
    }

    /// The session's CSRF token, for the page's script to send with what it posts.
    pub(super) fn csrf(&self) -> &str {
        &self.csrf
    }

    /// The session's CSRF token as a hidden form field.
    pub(super) fn csrf_field(&self) -> Markup {
        csrf_field(&self.csrf)
    }

    pub(super) fn page(&self, title: &str, body: Markup) -> Response {
        layout(&self.base, title, Some((&self.caller, &self.csrf)), body).into_response()
    }

    pub(super) fn error(&self, status: StatusCode, message: &str) -> Response {
        let body = html! {
            div.error { strong { "Nothing was changed." } " " (message) }
            p { a href=(if self.base.is_empty() { "/" } else { &self.base }) { "Back to the flags" } }
        };
        (status, self.page("Error", body)).into_response()
    }

    pub(super) fn fail(&self, e: AdminError) -> Response {
        let (status, _, message) = e.parts();
        self.error(status, &message)
    }

    fn write(&self, m: Mutation, reason: &str) -> Write {
        let reason = Some(reason.trim()).filter(|r| !r.is_empty()).map(str::to_owned);
        Write { mutation: m, actor: self.caller.name.clone(), reason }
    }

    /// Writes `m`, then back to the flag's page, or the page saying why nothing changed.
    pub(super) async fn apply(&self, admin: &Admin, m: Mutation, reason: &str, key: &str) -> Response {
        match admin.write(self.write(m, reason)).await {
            Ok(_) => self.back_to(key),
            Err(AdminError::Held(made)) => self.to_request(made.request.id, true),
            Err(e) => self.fail(e),
        }
    }

    /// To a change request's page; `held`: saying the visitor's change waits there.
    pub(super) fn to_request(&self, id: u64, held: bool) -> Response {
        let query = if held { "?held=1" } else { "" };
        Redirect::to(&format!("{}/requests/{id}{query}", self.base)).into_response()
    }

    fn back_to(&self, key: &str) -> Response {
        Redirect::to(&format!("{}/flags/{}", self.base, seg(key))).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_end_when_idle_or_old_and_are_pruned() {
        let sessions = Sessions::default();
        let id = sessions.create(SessionToken::Stored("t1".into())).unwrap();
        let other = sessions.create(SessionToken::Env).unwrap();
        assert!(sessions.get(&id).is_some());
        let now = Instant::now();
        let set = |id: &str, f: &dyn Fn(&mut Session)| {
            f(sessions.0.lock().unwrap().get_mut(id).unwrap());
        };
        set(&id, &|s| s.last_seen = now - SESSION_IDLE - Duration::from_secs(1));
        assert!(sessions.get(&id).is_none(), "idle");
        set(&other, &|s| s.expires = now - Duration::from_secs(1));
        assert!(sessions.get(&other).is_none(), "past its absolute end, however busy");
        assert_eq!(sessions.len(), 2);
        sessions.prune();
        assert_eq!(sessions.len(), 0);
        let kept = sessions.create(SessionToken::Env).unwrap();
        let gone = sessions.create(SessionToken::Stored("t2".into())).unwrap();
        sessions.end_all(&SessionToken::Stored("t2".into()));
        assert!(sessions.get(&kept).is_some() && sessions.get(&gone).is_none());
    }
}
