//! Logging in with an API token, and out.

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use ff_store::Role;
use maud::html;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::layout::{csrf_field, layout};
use super::session::{Base, COOKIE, LOGIN_COOKIE, SESSION_TTL, Visitor, cookie, cookie_named, random_hex};
use crate::Admin;

#[derive(Debug, Deserialize)]
pub(crate) struct LoginForm {
    token: String,
    #[serde(default)]
    csrf: String,
}

pub(crate) async fn login_page(Base(base): Base) -> Response {
    login_form(&base, None)
}

/// The login form, with a fresh CSRF token in the form and in a cookie.
fn login_form(base: &str, error: Option<&str>) -> Response {
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
    let cookie = format!("{LOGIN_COOKIE}={csrf}; HttpOnly; SameSite=Strict; Path=/; Max-Age=3600");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

pub(crate) async fn login(
    State(admin): State<Admin>,
    Base(base): Base,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let expected = cookie_named(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !bool::from(expected.as_bytes().ct_eq(form.csrf.as_bytes())) {
        let mut res =
            login_form(&base, Some("The login form expired or came from elsewhere: please log in again."));
        *res.status_mut() = StatusCode::FORBIDDEN;
        return res;
    }
    let caller = match admin.authenticate(form.token.trim()).await {
        Ok(c) => c,
        Err(_) => {
            let mut res = login_form(&base, Some("That token is not valid (unknown, revoked or mistyped)."));
            *res.status_mut() = StatusCode::UNAUTHORIZED;
            return res;
        }
    };
    let (id, _) = match admin.inner.sessions.create(caller) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let cookie =
        format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}", SESSION_TTL.as_secs());
    let mut res = Redirect::to(if base.is_empty() { "/" } else { &base }).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
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
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("ff_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    res
}
