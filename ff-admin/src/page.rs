//! The admin web page: server-rendered HTML, a little inline JavaScript, no build step.
//!
//! Log in with an API token; the page then uses an HttpOnly, SameSite=Strict
//! session cookie, and every form carries the session's CSRF token.

// Handlers return the error page itself as `Err(Response)`: boxing it gains nothing.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::Form;
use axum::extract::{FromRequestParts, NestedPath, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use ff_core::{Action, EvalContext, FlagRecord, ValueType};
use ff_store::{ChangeQuery, FlagPatch, Mutation, Role, Write};
use serde::Deserialize;
use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::Admin;
use crate::auth::Caller;
use crate::error::AdminError;

const COOKIE: &str = "ff_session";
const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);

/// Logged-in browser sessions, in memory: a restart logs everyone out.
#[derive(Debug, Default)]
pub(crate) struct Sessions(std::sync::Mutex<HashMap<String, Session>>);

#[derive(Debug, Clone)]
struct Session {
    caller: Caller,
    csrf: String,
    expires: Instant,
}

fn random_hex(bytes: usize) -> Result<String, AdminError> {
    let mut buf = vec![0u8; bytes];
    getrandom::getrandom(&mut buf).map_err(|e| AdminError::BadRequest(format!("no randomness: {e}")))?;
    Ok(hex::encode(buf))
}

impl Sessions {
    fn create(&self, caller: Caller) -> Result<(String, Session), AdminError> {
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

    fn remove(&self, id: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}

/// Escapes text for HTML bodies and attribute values.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes a URL path segment.
fn seg(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "—".into(),
        other => other.to_string(),
    }
}

const STYLE: &str = "
body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:.6rem 1.5rem;display:flex;gap:1.5rem;align-items:center}
header a{color:#fff;text-decoration:none}header .who{margin-left:auto;opacity:.8}
main{max-width:1100px;margin:1.2rem auto;padding:0 1.5rem}
table{border-collapse:collapse;width:100%;background:#fff}th,td{text-align:left;padding:.35rem .6rem;border-bottom:1px solid #e3e6eb;vertical-align:top}
th{background:#eef0f4;font-weight:600}code{font-size:.92em}
.on{color:#16794c;font-weight:600}.off{color:#b42318;font-weight:600}
form.inline{display:inline}input,select,textarea,button{font:inherit;padding:.25rem .45rem}
button{cursor:pointer;border:1px solid #9aa3b2;background:#fff;border-radius:4px}
button.danger{border-color:#b42318;color:#b42318}section{background:#fff;padding:1rem 1.2rem;margin:1rem 0;border:1px solid #e3e6eb;border-radius:6px}
.muted{color:#667085}.error{background:#fef3f2;border:1px solid #fda29b;padding:.8rem 1rem;border-radius:6px}
";

fn layout(base: &str, title: &str, who: Option<&Caller>, csrf: Option<&str>, body: &str) -> Html<String> {
    let nav = match (who, csrf) {
        (Some(c), Some(csrf)) => format!(
            "<a href=\"{base}\">Flags</a><a href=\"{base}/stale\">Stale</a><a href=\"{base}/segments\">Segments</a><a href=\"{base}/users\">User lookup</a>\
             <span class=\"who\">{} ({})</span>\
             <form class=\"inline\" method=\"post\" action=\"{base}/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <button>Log out</button></form>",
            esc(&c.name),
            c.role.as_str()
        ),
        _ => String::new(),
    };
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · ff admin</title><style>{STYLE}</style></head>\
         <body><header><strong>ff admin</strong>{nav}</header><main>{body}</main></body></html>",
        esc(title)
    ))
}

/// A logged-in page visitor.
pub(crate) struct Visitor {
    caller: Caller,
    csrf: String,
    base: String,
}

fn cookie_named(headers: &HeaderMap, name: &str) -> Option<String> {
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

fn cookie(headers: &HeaderMap) -> Option<String> {
    cookie_named(headers, COOKIE)
}

/// The login form's CSRF token travels in this cookie and in the form (double submit).
const LOGIN_COOKIE: &str = "ff_login";

fn base_of(parts: &mut Parts) -> String {
    parts
        .extensions
        .get::<NestedPath>()
        .map(|p| p.as_str().trim_end_matches('/').to_owned())
        .unwrap_or_default()
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
    fn check(&self, csrf: &str, needed: Role) -> Result<(), Response> {
        if !bool::from(self.csrf.as_bytes().ct_eq(csrf.as_bytes())) {
            return Err(self.error(
                StatusCode::FORBIDDEN,
                "the form is stale or forged (CSRF check failed): reload the page",
            ));
        }
        self.caller.require(needed).map_err(|e| self.fail(e))
    }

    fn page(&self, title: &str, body: &str) -> Response {
        layout(&self.base, title, Some(&self.caller), Some(&self.csrf), body).into_response()
    }

    fn error(&self, status: StatusCode, message: &str) -> Response {
        let body = format!(
            "<div class=\"error\"><strong>Nothing was changed.</strong> {}</div>\
             <p><a href=\"javascript:history.back()\">Back</a></p>",
            esc(message)
        );
        (status, self.page("Error", &body)).into_response()
    }

    fn fail(&self, e: AdminError) -> Response {
        let (status, _, message) = e.parts();
        self.error(status, &message)
    }

    fn write(&self, m: Mutation, reason: &str) -> Write {
        let reason = Some(reason.trim()).filter(|r| !r.is_empty()).map(str::to_owned);
        Write { mutation: m, actor: self.caller.name.clone(), reason }
    }

    /// Writes `m`, then back to the flag's page, or the page saying why nothing changed.
    async fn apply(&self, admin: &Admin, m: Mutation, reason: &str, key: &str) -> Response {
        match admin.store().write(self.write(m, reason)).await {
            Ok(_) => self.back_to(key),
            Err(e) => self.fail(e.into()),
        }
    }

    fn back_to(&self, key: &str) -> Response {
        Redirect::to(&format!("{}/flags/{}", self.base, seg(key))).into_response()
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct LoginForm {
    token: String,
    #[serde(default)]
    csrf: String,
}

/// Where the admin is mounted (the nest prefix), for links.
pub(crate) struct Base(String);

impl<S: Send + Sync> FromRequestParts<S> for Base {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Base(base_of(parts)))
    }
}

pub(crate) async fn login_page(Base(base): Base) -> Response {
    login_form(&base, None)
}

fn login_form(base: &str, error: Option<&str>) -> Response {
    let csrf = match random_hex(32) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let error = error.map(|e| format!("<p class=\"error\">{}</p>", esc(e))).unwrap_or_default();
    let body = format!(
        "<section><h1>Log in</h1>{error}<form method=\"post\" action=\"{base}/login\">\
         <p><label>API token<br><input type=\"password\" name=\"token\" size=\"60\" autocomplete=\"off\" autofocus></label></p>\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <p><button>Log in</button></p></form>\
         <p class=\"muted\">Create one with <code>ff token create --role editor --name you</code>.</p></section>"
    );
    let mut res = layout(base, "Log in", None, None, &body).into_response();
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

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListForm {
    #[serde(default)]
    q: String,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    stale: String,
}

pub(crate) async fn list(
    State(admin): State<Admin>,
    visitor: Visitor,
    Query(f): Query<ListForm>,
) -> Response {
    let (flags, counts) = match (admin.live_flags().await, admin.override_counts().await) {
        (Ok(f), Ok(c)) => (f, c),
        (Err(e), _) | (_, Err(e)) => return visitor.fail(e.into()),
    };
    let now = time::OffsetDateTime::now_utc();
    let stale = match crate::api::stale_report(&admin, &flags, admin.default_stale_rules(), now).await {
        Ok(s) => s,
        Err(e) => return visitor.fail(e),
    };
    let (days, usage) = match crate::api::daily_usage(&admin, 14).await {
        Ok(u) => u,
        Err(e) => return visitor.fail(e),
    };
    let stale_by_key: std::collections::HashMap<&str, &ff_core::StaleFlag> =
        stale.iter().map(|s| (s.key.as_str(), s)).collect();
    let q = f.q.to_lowercase();
    let rows: String = flags
        .iter()
        .filter(|x| !x.archived)
        .filter(|x| {
            q.is_empty() || x.key.to_lowercase().contains(&q) || x.description.to_lowercase().contains(&q)
        })
        .filter(|x| f.tag.is_empty() || x.meta.tags.contains(&f.tag))
        .filter(|x| f.owner.is_empty() || x.meta.owner == f.owner)
        .filter(|x| f.stale.is_empty() || stale_by_key.contains_key(x.key.as_str()))
        .map(|x| {
            let (daily, last) = usage.get(&x.key).map_or((&[][..], None), |(d, l)| (&d[..], *l));
            let n = counts.get(&x.key).copied().unwrap_or(0);
            flag_row(
                &visitor,
                x,
                n,
                stale_by_key.get(x.key.as_str()).copied(),
                &sparkline(&days, daily, last),
            )
        })
        .collect();
    let body = format!(
        "<section><form method=\"get\" action=\"{base}\">\
         <input name=\"q\" placeholder=\"Search keys and descriptions\" value=\"{}\" size=\"34\"> \
         <input name=\"tag\" placeholder=\"tag\" value=\"{}\" size=\"10\"> \
         <input name=\"owner\" placeholder=\"owner\" value=\"{}\" size=\"12\"> \
         <label><input type=\"checkbox\" name=\"stale\" value=\"1\"{}> stale only</label> <button>Filter</button></form></section>\
         <table><tr><th>Flag</th><th>Type</th><th>Value</th><th>Switch</th><th>Overrides</th><th>Evaluations, 14 days</th>\
         <th>Owner</th><th>Tags</th></tr>{rows}</table>",
        esc(&f.q),
        esc(&f.tag),
        esc(&f.owner),
        if f.stale.is_empty() { "" } else { " checked" },
        base = visitor.base,
    );
    visitor.page("Flags", &body)
}

/// One flag of the list: key (and why it is stale), type, value, switch, overrides,
/// evaluations, owner and tags.
fn flag_row(
    visitor: &Visitor,
    x: &FlagRecord,
    overrides: usize,
    stale: Option<&ff_core::StaleFlag>,
    sparkline: &str,
) -> String {
    let switch = if x.enabled { "<span class=\"on\">on</span>" } else { "<span class=\"off\">OFF</span>" };
    let why = stale
        .map(|s| {
            let r: Vec<&str> = s.reasons.iter().map(|r| r.as_str()).collect();
            format!(" <span class=\"off\">stale: {}</span>", r.join(", "))
        })
        .unwrap_or_default();
    format!(
        "<tr><td><a href=\"{}/flags/{}\"><code>{}</code></a>{why}<div class=\"muted\">{}</div></td><td>{}</td>\
         <td><code>{}</code></td><td>{switch}</td><td>{overrides}</td><td>{sparkline}</td><td>{}</td><td>{}</td></tr>",
        visitor.base,
        seg(&x.key),
        esc(&x.key),
        esc(&x.description),
        x.value_type,
        esc(&x.value.to_string()),
        esc(&x.meta.owner),
        esc(&x.meta.tags.join(", ")),
    )
}

/// Evaluations per day as an inline SVG line, with the numbers in its title and
/// the last evaluation beside it: a flat line at zero is a dead flag.
fn sparkline(days: &[time::Date], daily: &[u64], last: Option<time::OffsetDateTime>) -> String {
    let max = daily.iter().copied().max().unwrap_or(0).max(1) as f64;
    let (w, h) = (84.0, 18.0);
    let step = if daily.len() > 1 { w / (daily.len() - 1) as f64 } else { 0.0 };
    let points: Vec<String> = daily
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{:.1},{:.1}", i as f64 * step, h - 1.0 - (*n as f64 / max) * (h - 2.0)))
        .collect();
    let title: Vec<String> = days.iter().zip(daily).map(|(d, n)| format!("{d}: {n}")).collect();
    let last = last
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .map_or_else(|| "never evaluated".to_owned(), |t| format!("last {t}"));
    let line = if points.is_empty() {
        format!("<line x1=\"0\" y1=\"{0}\" x2=\"{w}\" y2=\"{0}\" stroke=\"#bbb\"/>", h - 1.0)
    } else {
        format!(
            "<polyline fill=\"none\" stroke=\"#36c\" stroke-width=\"1.5\" points=\"{}\"/>",
            points.join(" ")
        )
    };
    format!(
        "<svg class=\"spark\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{}\"><title>{}</title>{line}</svg>\
         <div class=\"muted\">{}</div>",
        esc(&title.join(", ")),
        esc(&title.join("\n")),
        esc(&last)
    )
}

/// Flags to clean up, with why, and keys code reads that the store lacks.
pub(crate) async fn stale_page(State(admin): State<Admin>, visitor: Visitor) -> Response {
    let now = time::OffsetDateTime::now_utc();
    let rules = admin.default_stale_rules();
    let flags = match admin.store().list_flags().await {
        Ok(f) => f,
        Err(e) => return visitor.fail(e.into()),
    };
    let (stale, unknown) = match (
        crate::api::stale_report(&admin, &flags, rules, now).await,
        admin.store().unknown_flags().await,
    ) {
        (Ok(s), Ok(u)) => (s, u),
        (Err(e), _) => return visitor.fail(e),
        (_, Err(e)) => return visitor.fail(e.into()),
    };
    let time = |t: Option<time::OffsetDateTime>| {
        t.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()).unwrap_or("-".into())
    };
    let rows: String = stale
        .iter()
        .map(|s| {
            let why: Vec<&str> = s.reasons.iter().map(|r| r.as_str()).collect();
            format!(
                "<tr><td><a href=\"{}/flags/{}\"><code>{}</code></a></td><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                visitor.base,
                seg(&s.key),
                esc(&s.key),
                s.kind,
                esc(&s.owner),
                why.join(", "),
                time(s.expires_at),
                time(s.last_evaluated),
                esc(s.only_value.as_deref().unwrap_or("-")),
            )
        })
        .collect();
    let unknown_rows: String = unknown
        .iter()
        .map(|u| {
            format!(
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                esc(&u.key),
                u.count,
                time(Some(u.last_at))
            )
        })
        .collect();
    let body = format!(
        "<section><h1>Stale flags</h1><p class=\"muted\">Temporary flags past their expiry, not evaluated for \
         {} days, or serving one value to everyone for {} days. Remove them from the code, then archive them.</p>\
         <table><tr><th>Flag</th><th>Kind</th><th>Owner</th><th>Why</th><th>Expires</th><th>Last evaluated</th>\
         <th>Only value</th></tr>{rows}</table></section>\
         <section><h2>Read by code, missing from the store</h2><table><tr><th>Key</th><th>Reads</th><th>Last</th></tr>\
         {unknown_rows}</table></section>",
        rules.not_evaluated_days, rules.one_value_days,
    );
    visitor.page("Stale flags", &body)
}

/// An input for a value of the flag's type, showing its bounds.
fn value_input(flag: &FlagRecord, name: &str, current: Option<&Value>) -> String {
    let cur = current.map(show).unwrap_or_default();
    let s = &flag.schema;
    if !s.allowed.is_empty() {
        let options: String = s
            .allowed
            .iter()
            .map(|a| {
                let v = show(a);
                let sel = if Some(a) == current { " selected" } else { "" };
                format!("<option value=\"{}\"{sel}>{}</option>", esc(&v), esc(&v))
            })
            .collect();
        return format!("<select name=\"{name}\">{options}</select>");
    }
    match flag.value_type {
        ValueType::Bool => {
            let (t, f) = if cur == "true" { (" selected", "") } else { ("", " selected") };
            format!("<select name=\"{name}\"><option{t}>true</option><option{f}>false</option></select>")
        }
        ValueType::Int | ValueType::Float => {
            let step = if flag.value_type == ValueType::Int { "1" } else { "any" };
            let min = s.min.as_ref().map(|m| format!(" min=\"{m}\"")).unwrap_or_default();
            let max = s.max.as_ref().map(|m| format!(" max=\"{m}\"")).unwrap_or_default();
            let bounds = match (&s.min, &s.max) {
                (Some(a), Some(b)) => format!(" <span class=\"muted\">{a} to {b}</span>"),
                (Some(a), None) => format!(" <span class=\"muted\">at least {a}</span>"),
                (None, Some(b)) => format!(" <span class=\"muted\">at most {b}</span>"),
                (None, None) => String::new(),
            };
            format!(
                "<input type=\"number\" name=\"{name}\" step=\"{step}\"{min}{max} value=\"{}\" required>{bounds}",
                esc(&cur)
            )
        }
        ValueType::String => format!("<input name=\"{name}\" value=\"{}\" size=\"30\">", esc(&cur)),
        ValueType::Json => {
            format!("<textarea name=\"{name}\" rows=\"3\" cols=\"50\">{}</textarea>", esc(&cur))
        }
    }
}

/// Reads a form value as JSON of the flag's type.
fn parse_value(ty: ValueType, raw: &str) -> Result<Value, String> {
    let raw = raw.trim_end_matches(['\r', '\n']);
    match ty {
        ValueType::Bool => match raw {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(format!("{raw:?} is not true or false")),
        },
        ValueType::Int => {
            raw.trim().parse::<i64>().map(Value::from).map_err(|_| format!("{raw:?} is not a whole number"))
        }
        ValueType::Float => raw
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| format!("{raw:?} is not a number")),
        ValueType::String => Ok(Value::String(raw.to_owned())),
        ValueType::Json => serde_json::from_str(raw).map_err(|e| format!("not valid JSON: {e}")),
    }
}

fn csrf_field(v: &Visitor) -> String {
    format!("<input type=\"hidden\" name=\"csrf\" value=\"{}\">", v.csrf)
}

pub(crate) async fn flag_page(
    State(admin): State<Admin>,
    visitor: Visitor,
    Path(key): Path<String>,
) -> Response {
    let store = admin.store();
    let flag = match store.flag(&key).await {
        Ok(Some(f)) => f,
        Ok(None) => return visitor.error(StatusCode::NOT_FOUND, &format!("There is no flag {key:?}.")),
        Err(e) => return visitor.fail(e.into()),
    };
    let (overrides, history) = match (
        store.overrides(&key).await,
        store.changes(&ChangeQuery { key: Some(key.clone()), limit: 25, ..ChangeQuery::default() }).await,
    ) {
        (Ok(o), Ok(h)) => (o, h),
        (Err(e), _) | (_, Err(e)) => return visitor.fail(e.into()),
    };
    let (base, k, csrf) = (&visitor.base, seg(&key), csrf_field(&visitor));
    let version = flag.version;
    let switch = switch_form(&visitor, &flag);
    let override_rows = override_rows(&visitor, &key, &overrides);
    let history_rows = history_rows(&visitor, &key, &history);
    let (days, usage) = match crate::api::daily_usage(&admin, 30).await {
        Ok(u) => u,
        Err(e) => return visitor.fail(e),
    };
    let (daily, last) = usage.get(&key).map_or((&[][..], None), |(d, l)| (&d[..], *l));
    let lifecycle = lifecycle(&flag, &sparkline(&days, daily, last));
    let body = format!(
        "<h1><code>{}</code></h1><p>{}</p>\
         <section><h2>Switch</h2>{switch}</section>\
         <section><h2>Value</h2><p>Everyone without an override gets <code id=\"current-value\">{}</code> ({}).</p>\
         <form method=\"post\" action=\"{base}/flags/{k}/value\">{csrf}<input type=\"hidden\" name=\"version\" value=\"{version}\">\
         {} <input name=\"reason\" placeholder=\"reason\"> <button>Save value</button></form>\
         <p class=\"muted\">owner {} · tags {} · ticket {} · version {version}</p>{lifecycle}</section>\
         <section><h2>Targeting</h2><p class=\"muted\">Rules (first match wins), then the split, then the schedule's step in force; \
         weights are basis points (100% = 10000). Everyone else gets the value above.</p>\
         <form method=\"post\" action=\"{base}/flags/{k}/targeting\">{csrf}<input type=\"hidden\" name=\"version\" value=\"{version}\">\
         <textarea name=\"targeting\" rows=\"8\" cols=\"90\" spellcheck=\"false\">{}</textarea><br>\
         <input name=\"reason\" placeholder=\"reason\"> <button>Save targeting</button></form></section>\
         <section><h2>Overrides ({})</h2><table><tr><th>User</th><th>Value</th><th></th></tr>{override_rows}</table>\
         <form method=\"post\" action=\"{base}/flags/{k}/overrides\" style=\"margin-top:.6rem\">{csrf}\
         <input name=\"user_id\" placeholder=\"user id\" required> {} <input name=\"reason\" placeholder=\"reason\"> <button>Add override</button></form></section>\
         <section><h2>History</h2><table><tr><th>#</th><th>Time</th><th>Who</th><th>What</th><th>User</th><th>Change</th><th>Reason</th><th></th></tr>{history_rows}</table></section>",
        esc(&key),
        esc(&flag.description),
        esc(&show(&flag.value.to_json())),
        flag.value_type,
        value_input(&flag, "value", Some(&flag.value.to_json())),
        esc(&flag.meta.owner),
        esc(&flag.meta.tags.join(", ")),
        esc(&flag.meta.ticket),
        esc(&serde_json::to_string_pretty(&flag.targeting).unwrap_or_default()),
        overrides.len(),
        value_input(&flag, "value", None),
    );
    visitor.page(&key, &body)
}

/// The on/off switch: turning off asks first and says what everyone will get.
fn switch_form(visitor: &Visitor, flag: &FlagRecord) -> String {
    let (base, k, csrf, key, version) =
        (&visitor.base, seg(&flag.key), csrf_field(visitor), &flag.key, flag.version);
    if flag.archived {
        "<p class=\"off\">Archived: served as its code default.</p>".to_owned()
    } else if flag.enabled {
        format!(
            "<form class=\"inline\" method=\"post\" action=\"{base}/flags/{k}/switch\" \
             onsubmit=\"return confirm('Turn {} OFF for everyone? Its off value ({}) is served to all users, overrides included.')\">\
             {csrf}<input type=\"hidden\" name=\"enabled\" value=\"false\"><input type=\"hidden\" name=\"version\" value=\"{version}\">\
             <span class=\"on\">on</span> <button class=\"danger\">Turn off</button> <input name=\"reason\" placeholder=\"reason\"></form>",
            esc(&key.replace('\'', "")),
            esc(&flag.off_value.to_string().replace('\'', "")),
        )
    } else {
        format!(
            "<form class=\"inline\" method=\"post\" action=\"{base}/flags/{k}/switch\">{csrf}\
             <input type=\"hidden\" name=\"enabled\" value=\"true\"><input type=\"hidden\" name=\"version\" value=\"{version}\">\
             <span class=\"off\">OFF</span> (serving {} to everyone) <button>Turn on</button> <input name=\"reason\" placeholder=\"reason\"></form>",
            esc(&flag.off_value.to_string())
        )
    }
}

/// The first 200 overrides, each with a remove button.
fn override_rows(visitor: &Visitor, key: &str, overrides: &[ff_core::OverrideRecord]) -> String {
    let (base, k, csrf) = (&visitor.base, seg(key), csrf_field(visitor));
    overrides
        .iter()
        .take(200)
        .map(|o| {
            format!(
                "<tr><td>{}</td><td><code>{}</code></td><td><form class=\"inline\" method=\"post\" action=\"{base}/flags/{k}/overrides/remove\">\
                 {csrf}<input type=\"hidden\" name=\"user_id\" value=\"{}\"><button>Remove</button></form></td></tr>",
                esc(&o.user_id),
                esc(&show(&o.value)),
                esc(&o.user_id),
            )
        })
        .collect()
}

/// The flag's recent changes, each with a revert button (token changes have none).
fn history_rows(visitor: &Visitor, key: &str, history: &[ff_core::Change]) -> String {
    let (base, csrf) = (&visitor.base, csrf_field(visitor));
    history
        .iter()
        .map(|c| {
            let summary = |v: &Option<Value>| match v {
                Some(Value::Object(m)) if m.contains_key("value") => {
                    let off = if m.get("enabled") == Some(&Value::Bool(false)) { " (off)" } else { "" };
                    format!("{}{off}", show(&m["value"]))
                }
                Some(v) => show(v),
                None => "—".into(),
            };
            let revert = match c.action {
                Action::TokenCreate | Action::TokenRevoke => String::new(),
                _ => format!(
                    "<form class=\"inline\" method=\"post\" action=\"{base}/changes/{}/revert\" onsubmit=\"return confirm('Undo change #{}?')\">\
                     {csrf}<input type=\"hidden\" name=\"key\" value=\"{}\"><button>Revert</button></form>",
                    c.seq, c.seq, esc(key)
                ),
            };
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code> → <code>{}</code></td><td>{}</td><td>{revert}</td></tr>",
                c.seq,
                c.at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
                esc(&c.actor),
                c.action.as_str(),
                esc(c.subject.as_deref().unwrap_or("")),
                esc(&summary(&c.before)),
                esc(&summary(&c.after)),
                esc(c.reason.as_deref().unwrap_or("")),
            )
        })
        .collect()
}

/// Kind, permanence, dates and expiry policy, then the evaluation sparkline.
fn lifecycle(flag: &FlagRecord, sparkline: &str) -> String {
    let expires =
        flag.meta.expires_at.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok());
    let kind = flag.meta.kind_or_default(flag.value_type);
    format!(
        "<p class=\"muted\">kind {kind}{} · {} · created {} · expires {} ({} after)</p><p>Evaluations, 30 days: {}</p>",
        if flag.meta.kind.is_none() { " (default for its type)" } else { "" },
        if flag.meta.is_permanent(flag.value_type) { "permanent" } else { "temporary" },
        flag.created_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        esc(expires.as_deref().unwrap_or("never")),
        match flag.meta.expiry {
            ff_core::ExpiryPolicy::Warn => "warn",
            ff_core::ExpiryPolicy::ServeDefault => "serve the code default",
        },
        sparkline,
    )
}

#[derive(Debug, Deserialize)]
pub(crate) struct SwitchForm {
    csrf: String,
    enabled: String,
    version: u64,
    #[serde(default)]
    reason: String,
}

pub(crate) async fn switch(
    State(admin): State<Admin>,
    visitor: Visitor,
    Path(key): Path<String>,
    Form(f): Form<SwitchForm>,
) -> Response {
    if let Err(r) = visitor.check(&f.csrf, Role::Editor) {
        return r;
    }
    let patch = FlagPatch { enabled: Some(f.enabled == "true"), ..FlagPatch::default() };
    let m = Mutation::UpdateFlag { key: key.clone(), patch, expected_version: Some(f.version) };
    visitor.apply(&admin, m, &f.reason, &key).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct ValueForm {
    csrf: String,
    value: String,
    version: u64,
    #[serde(default)]
    reason: String,
}

async fn typed(admin: &Admin, visitor: &Visitor, key: &str, raw: &str) -> Result<Value, Response> {
    let flag = match admin.store().flag(key).await {
        Ok(Some(f)) => f,
        Ok(None) => return Err(visitor.error(StatusCode::NOT_FOUND, &format!("There is no flag {key:?}."))),
        Err(e) => return Err(visitor.fail(e.into())),
    };
    parse_value(flag.value_type, raw)
        .map_err(|e| visitor.error(StatusCode::UNPROCESSABLE_ENTITY, &format!("{key}: {e}")))
}

pub(crate) async fn set_value(
    State(admin): State<Admin>,
    visitor: Visitor,
    Path(key): Path<String>,
    Form(f): Form<ValueForm>,
) -> Response {
    if let Err(r) = visitor.check(&f.csrf, Role::Editor) {
        return r;
    }
    let value = match typed(&admin, &visitor, &key, &f.value).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let patch = FlagPatch { value: Some(value), ..FlagPatch::default() };
    let m = Mutation::UpdateFlag { key: key.clone(), patch, expected_version: Some(f.version) };
    visitor.apply(&admin, m, &f.reason, &key).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct TargetingForm {
    csrf: String,
    targeting: String,
    version: u64,
    #[serde(default)]
    reason: String,
}

pub(crate) async fn set_targeting(
    State(admin): State<Admin>,
    visitor: Visitor,
    Path(key): Path<String>,
    Form(f): Form<TargetingForm>,
) -> Response {
    if let Err(r) = visitor.check(&f.csrf, Role::Editor) {
        return r;
    }
    let text = if f.targeting.trim().is_empty() { "{}" } else { f.targeting.as_str() };
    let targeting = match serde_json::from_str(text) {
        Ok(t) => t,
        Err(e) => return visitor.error(StatusCode::UNPROCESSABLE_ENTITY, &format!("{key}: targeting: {e}")),
    };
    let patch = FlagPatch { targeting: Some(targeting), ..FlagPatch::default() };
    let m = Mutation::UpdateFlag { key: key.clone(), patch, expected_version: Some(f.version) };
    visitor.apply(&admin, m, &f.reason, &key).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct OverrideForm {
    csrf: String,
    user_id: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    reason: String,
}

pub(crate) async fn add_override(
    State(admin): State<Admin>,
    visitor: Visitor,
    Path(key): Path<String>,
    Form(f): Form<OverrideForm>,
) -> Response {
    if let Err(r) = visitor.check(&f.csrf, Role::Editor) {
        return r;
    }
    let value = match typed(&admin, &visitor, &key, &f.value).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let m = Mutation::SetOverride { key: key.clone(), user_id: f.user_id.trim().to_owned(), value };
    visitor.apply(&admin, m, &f.reason, &key).await
}

pub(crate) async fn remove_override(
    State(admin): State<Admin>,
    visitor: Visitor,
    Path(key): Path<String>,
    Form(f): Form<OverrideForm>,
) -> Response {
    if let Err(r) = visitor.check(&f.csrf, Role::Editor) {
        return r;
    }
    let m = Mutation::DeleteOverride { key: key.clone(), user_id: f.user_id };
    visitor.apply(&admin, m, &f.reason, &key).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct RevertForm {
    csrf: String,
    key: String,
}

pub(crate) async fn revert(
    State(admin): State<Admin>,
    visitor: Visitor,
    Path(seq): Path<u64>,
    Form(f): Form<RevertForm>,
) -> Response {
    if let Err(r) = visitor.check(&f.csrf, Role::Editor) {
        return r;
    }
    let change = match admin.store().change(seq).await {
        Ok(Some(c)) => c,
        Ok(None) => return visitor.error(StatusCode::NOT_FOUND, &format!("There is no change #{seq}.")),
        Err(e) => return visitor.fail(e.into()),
    };
    let mutation = match crate::api::inverse(&admin, &change).await {
        Ok(m) => m,
        Err(e) => return visitor.fail(e),
    };
    visitor.apply(&admin, mutation, &format!("revert of #{seq}"), &f.key).await
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct UserForm {
    #[serde(default)]
    user: String,
}

pub(crate) async fn user_page(
    State(admin): State<Admin>,
    visitor: Visitor,
    Query(f): Query<UserForm>,
) -> Response {
    let user = f.user.trim();
    let mut body = format!(
        "<section><h1>What does a user see, and why?</h1><form method=\"get\" action=\"{}/users\">\
         <input name=\"user\" placeholder=\"user id\" value=\"{}\" required> <button>Look up</button></form></section>",
        visitor.base,
        esc(user)
    );
    if !user.is_empty() {
        // What the application serves: its live snapshot, environment pins included.
        let snapshot = match admin.snapshot().await {
            Ok(s) => s,
            Err(e) => return visitor.fail(e.into()),
        };
        let context = EvalContext::user(user);
        let mut rows: Vec<(String, String)> = snapshot
            .evaluate_all(&context)
            .map(|(flag, value, reason)| {
                (
                    flag.key.clone(),
                    format!("<td><code>{}</code></td><td>{reason}</td>", esc(&show(&value.to_json()))),
                )
            })
            .collect();
        for d in admin.decls().iter().filter(|d| snapshot.flag(&d.key).is_none()) {
            rows.push((
                d.key.clone(),
                format!("<td><code>{}</code></td><td>default</td>", esc(&show(&d.default.to_json()))),
            ));
        }
        rows.sort();
        let rows: String = rows
            .iter()
            .map(|(k, cells)| {
                format!(
                    "<tr><td><a href=\"{}/flags/{}\"><code>{}</code></a></td>{cells}</tr>",
                    visitor.base,
                    seg(k),
                    esc(k)
                )
            })
            .collect();
        body += &format!("<table><tr><th>Flag</th><th>Value</th><th>Why</th></tr>{rows}</table>");
    }
    visitor.page("User lookup", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(
            esc("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
        assert_eq!(seg("a b/../c"), "a%20b%2F..%2Fc");
    }

    #[test]
    fn form_values_by_type() {
        assert_eq!(parse_value(ValueType::Bool, "true"), Ok(Value::Bool(true)));
        assert!(parse_value(ValueType::Bool, "yes").is_err());
        assert_eq!(parse_value(ValueType::Int, " 12 "), Ok(Value::from(12)));
        assert!(parse_value(ValueType::Int, "1.5").is_err());
        assert_eq!(parse_value(ValueType::Float, "1.5"), Ok(serde_json::json!(1.5)));
        assert!(parse_value(ValueType::Float, "NaN").is_err());
        assert_eq!(parse_value(ValueType::String, "a b"), Ok(Value::from("a b")));
        assert!(parse_value(ValueType::Json, "{").is_err());
    }
}

pub(crate) async fn segments_page(State(admin): State<Admin>, visitor: Visitor) -> Response {
    let segments = match admin.store().segments().await {
        Ok(s) => s,
        Err(e) => return visitor.fail(e.into()),
    };
    let base = &visitor.base;
    let rows: String = segments
        .iter()
        .map(|s| {
            format!(
                "<tr><td><a href=\"{base}/segments/{}\"><code>{}</code></a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                seg(&s.key),
                esc(&s.key),
                esc(&s.definition.description),
                s.definition.included.len(),
                s.definition.excluded.len(),
                s.definition.rules.len(),
            )
        })
        .collect();
    let body = format!(
        "<section><h1>Segments</h1><p class=\"muted\">Named sets of users; a flag's rule uses one with \
         <code>{{\"attribute\": \"user_id\", \"op\": \"in_segment\", \"values\": [\"key\"]}}</code>.</p>\
         <table><tr><th>Segment</th><th>Description</th><th>Included</th><th>Excluded</th><th>Rules</th></tr>{rows}</table></section>\
         <section><h2>New segment</h2><form method=\"post\" action=\"{base}/segments\">{}\
         <p><input name=\"key\" placeholder=\"key\" required></p>\
         <textarea name=\"definition\" rows=\"6\" cols=\"90\" spellcheck=\"false\">{{\"description\": \"\", \"included\": [], \"excluded\": [], \"rules\": []}}</textarea><br>\
         <input name=\"reason\" placeholder=\"reason\"> <button>Create</button></form></section>",
        csrf_field(&visitor)
    );
    visitor.page("Segments", &body)
}

pub(crate) async fn segment_page(
    State(admin): State<Admin>,
    visitor: Visitor,
    Path(key): Path<String>,
) -> Response {
    let found = match admin.store().segments().await {
        Ok(all) => all.into_iter().find(|s| s.key == key),
        Err(e) => return visitor.fail(e.into()),
    };
    let Some(s) = found else {
        return visitor.error(StatusCode::NOT_FOUND, &format!("There is no segment {key:?}."));
    };
    let (base, k, csrf) = (&visitor.base, seg(&key), csrf_field(&visitor));
    let body = format!(
        "<h1>Segment <code>{}</code></h1><section><form method=\"post\" action=\"{base}/segments\">{csrf}\
         <input type=\"hidden\" name=\"key\" value=\"{}\"><input type=\"hidden\" name=\"version\" value=\"{}\">\
         <textarea name=\"definition\" rows=\"14\" cols=\"90\" spellcheck=\"false\">{}</textarea><br>\
         <input name=\"reason\" placeholder=\"reason\"> <button>Save</button></form></section>\
         <section><form method=\"post\" action=\"{base}/segments/{k}/delete\" onsubmit=\"return confirm('Delete segment {}?')\">{csrf}\
         <input name=\"reason\" placeholder=\"reason\"> <button class=\"danger\">Delete</button></form></section>",
        esc(&key),
        esc(&key),
        s.version,
        esc(&serde_json::to_string_pretty(&s.definition).unwrap_or_default()),
        esc(&key.replace('\'', "")),
    );
    visitor.page(&key, &body)
}

#[derive(Debug, Deserialize)]
pub(crate) struct SegmentForm {
    csrf: String,
    key: String,
    definition: String,
    /// Absent: create (must not exist yet); present: the version the edit is based on.
    version: Option<u64>,
    #[serde(default)]
    reason: String,
}

pub(crate) async fn save_segment(
    State(admin): State<Admin>,
    visitor: Visitor,
    Form(f): Form<SegmentForm>,
) -> Response {
    if let Err(r) = visitor.check(&f.csrf, Role::Editor) {
        return r;
    }
    let key = f.key.trim();
    let definition = match serde_json::from_str(&f.definition) {
        Ok(d) => d,
        Err(e) => return visitor.error(StatusCode::UNPROCESSABLE_ENTITY, &format!("segment {key}: {e}")),
    };
    let reason = Some(f.reason.trim()).filter(|r| !r.is_empty());
    let expected = Some(f.version.unwrap_or(0));
    match admin.store().put_segment(key, definition, expected, (&visitor.caller.name, reason)).await {
        Ok(_) => Redirect::to(&format!("{}/segments/{}", visitor.base, seg(key))).into_response(),
        Err(e) => visitor.fail(e.into()),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct DeleteForm {
    csrf: String,
    #[serde(default)]
    reason: String,
}

pub(crate) async fn delete_segment(
    State(admin): State<Admin>,
    visitor: Visitor,
    Path(key): Path<String>,
    Form(f): Form<DeleteForm>,
) -> Response {
    if let Err(r) = visitor.check(&f.csrf, Role::Editor) {
        return r;
    }
    let reason = Some(f.reason.trim()).filter(|r| !r.is_empty());
    match admin.store().delete_segment(&key, (&visitor.caller.name, reason)).await {
        Ok(_) => Redirect::to(&format!("{}/segments", visitor.base)).into_response(),
        Err(e) => visitor.fail(e.into()),
    }
}
