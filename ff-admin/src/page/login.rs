//! Logging in with an API token, and out.

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use ff_store::Role;
use maud::html;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::layout::{csrf_field, layout};
use super::session::{
    Base, COOKIE, LOGIN_COOKIE, SESSION_TTL, Visitor, cookie, cookie_named, random_hex, set_cookie,
};
use crate::Admin;
use crate::auth::ClientAddr;
use crate::error::AdminError;

#[derive(Debug, Deserialize)]
pub(crate) struct LoginForm {
    token: String,
    #[serde(default)]
    csrf: String,
}

pub(crate) async fn login_page(State(admin): State<Admin>, Base(base): Base, headers: HeaderMap) -> Response {
    login_form(&admin, &headers, &base, None)
}

/// The login form, with a fresh CSRF token in the form and in a cookie.
fn login_form(admin: &Admin, headers: &HeaderMap, base: &str, error: Option<&str>) -> Response {
    let csrf = match random_hex(32) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let body = html! {
        section {
            h1 { "Log in" }
            @if let Some(e) = error {
                p.error { (e) }
            }
            form method="post" action={ (base) "/login" } {
                p {
                    label {
                        "API token" br;
                        input type="password" name="token" size="60" autocomplete="off" autofocus;
                    }
                }
                (csrf_field(&csrf))
                p { button { "Log in" } }
            }
            p.muted { "Create one with " code { "ff token create --role editor --name you" } "." }
        }
    };
    let mut res = layout(base, "Log in", None, body).into_response();
    set_cookie(&mut res, admin, headers, base, (LOGIN_COOKIE, &csrf, 3600));
    res
}

pub(crate) async fn login(
    State(admin): State<Admin>,
    Base(base): Base,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let expected = cookie_named(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !bool::from(expected.as_bytes().ct_eq(form.csrf.as_bytes())) {
        let stale = "The login form expired or came from elsewhere: please log in again.";
        let mut res = login_form(&admin, &headers, &base, Some(stale));
        *res.status_mut() = StatusCode::FORBIDDEN;
        return res;
    }
    let token = match admin.authenticate_from(client, form.token.trim()).await {
        Ok((_, t)) => t,
        Err(e) => {
            let (status, message) = match e {
                AdminError::TooManyAttempts { .. } => (StatusCode::TOO_MANY_REQUESTS, e.to_string()),
                AdminError::Unauthorized => (
                    StatusCode::UNAUTHORIZED,
                    "That token is not valid (unknown, revoked or mistyped).".into(),
                ),
                _ => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            };
            let mut res = login_form(&admin, &headers, &base, Some(&message));
            *res.status_mut() = status;
            if let AdminError::TooManyAttempts { retry_after } = e {
                res.headers_mut().insert(axum::http::header::RETRY_AFTER, (retry_after.as_secs() + 1).into());
            }
            return res;
        }
    };
    let id = match admin.inner.sessions.create(token) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let mut res = Redirect::to(if base.is_empty() { "/" } else { &base }).into_response();
    set_cookie(&mut res, &admin, &headers, &base, (COOKIE, &id, SESSION_TTL.as_secs()));
    res
}

#[derive(Debug, Deserialize)]
pub(crate) struct CsrfForm {
    csrf: String,
}

pub(crate) async fn logout(
    State(admin): State<Admin>,
    visitor: Visitor,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(r) = visitor.check(&f.csrf, Role::Viewer) {
        return r;
    }
    if let Some(id) = cookie(&headers) {
        admin.inner.sessions.remove(&id);
    }
    let mut res = Redirect::to(&format!("{}/login", visitor.base)).into_response();
    set_cookie(&mut res, &admin, &headers, &visitor.base, (COOKIE, "", 0));
    res
}
