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
use crate::auth::Caller;
use crate::error::AdminError;

pub(super) const COOKIE: &str = "ff_session";
pub(super) const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// The login form's CSRF token travels in this cookie and in the form (double submit).
pub(super) const LOGIN_COOKIE: &str = "ff_login";

/// Logged-in browser sessions, in memory: a restart logs everyone out.
#[derive(Debug, Default)]
pub(crate) struct Sessions(std::sync::Mutex<HashMap<String, Session>>);

#[derive(Debug, Clone)]
pub(super) struct Session {
    caller: Caller,
    csrf: String,
    expires: Instant,
}

pub(super) fn random_hex(bytes: usize) -> Result<String, AdminError> {
    let mut buf = vec![0u8; bytes];
    getrandom::getrandom(&mut buf).map_err(|e| AdminError::BadRequest(format!("no randomness: {e}")))?;
    Ok(hex::encode(buf))
}

impl Sessions {
    pub(super) fn create(&self, caller: Caller) -> Result<(String, Session), AdminError> {
        let (id, csrf) = (random_hex(32)?, random_hex(32)?);
        let session = Session { caller, csrf, expires: Instant::now() + SESSION_TTL };
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, s| s.expires > Instant::now());
        map.insert(id.clone(), session.clone());
        Ok((id, session))
    }

    fn get(&self, id: &str) -> Option<Session> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(id).filter(|s| s.expires > Instant::now()).cloned()
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
        let session = cookie(&parts.headers).and_then(|id| admin.inner.sessions.get(&id));
        match session {
            Some(s) => Ok(Visitor { caller: s.caller, csrf: s.csrf, base }),
            None => Err(Redirect::to(&format!("{base}/login")).into_response()),
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
            p { a href="javascript:history.back()" { "Back" } }
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
        match admin.store().write(self.write(m, reason)).await {
            Ok(_) => self.back_to(key),
            Err(e) => self.fail(e.into()),
        }
    }

    fn back_to(&self, key: &str) -> Response {
        Redirect::to(&format!("{}/flags/{}", self.base, seg(key))).into_response()
    }
}
