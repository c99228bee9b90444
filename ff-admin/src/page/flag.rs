//! One flag's page (switch, value, targeting, overrides, history) and its forms.

// Handlers return the error page itself as `Err(Response)`: boxing it gains nothing.
#![allow(clippy::result_large_err)]

use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use ff_core::{Action, Change, ExpiryPolicy, FlagRecord, OverrideRecord, ValueType};
use ff_store::{ChangeQuery, FlagPatch, Mutation, Role};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use super::layout::{rfc3339, seg, show, sparkline};
use super::session::Visitor;
use crate::Admin;

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
    let (days, usage) = match crate::api::daily_usage(&admin, 30).await {
        Ok(u) => u,
        Err(e) => return visitor.fail(e),
    };
    // The editor offers what rules may name; without them it takes any name.
    let attributes = store.attributes().await.unwrap_or_default();
    let segment_keys: Vec<String> =
        store.segments().await.unwrap_or_default().into_iter().map(|s| s.key).collect();
    // Its trouble stays in its section: the switch above must always work.
    let guard = admin.guard_view(&key).await.map_err(|e| e.to_string());
    let open: Vec<ff_api::ChangeRequest> = admin
        .change_requests(false)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.changes.iter().any(|c| c.key() == key))
        .collect();
    let (daily, last) = usage.get(&key).map_or((&[][..], None), |(d, l)| (&d[..], *l));
    let body = html! {
        h1 { code { (key) } }
        p { (flag.description) }
        (super::requests::flag_section(&visitor, &flag, admin.needs_approval(&flag), &open))
        section { h2 { "Switch" } (switch_form(&visitor, &flag)) }
        (value_section(&visitor, &flag, sparkline(&days, daily, last)))
        (targeting_section(&visitor, &flag, &attributes, &segment_keys))
        (guard_section(&guard))
        (overrides_section(&visitor, &flag, &overrides))
        section {
            h2 { "History" }
            table {
                tr {
                    th { "#" } th { "Time" } th { "Who" } th { "What" } th { "User" } th { "Change" }
                    th { "Reason" } th {}
                }
                (history_rows(&visitor, &key, &history))
            }
        }
    };
    visitor.page(&key, body)
}

/// The on/off switch: turning off asks first and says what everyone will get.
fn switch_form(visitor: &Visitor, flag: &FlagRecord) -> Markup {
    let action = format!("{}/flags/{}/switch", visitor.base, seg(&flag.key));
    let off = flag.off_value.to_string();
    if flag.archived {
        return html! { p.off { "Archived: served as its code default." } };
    }
    // The message is data, never JavaScript source: no value can end its string.
    let ask = format!(
        "Turn {} OFF for everyone? Its off value ({off}) is served to all users, overrides included.",
        flag.key
    );
    html! {
        @if flag.enabled {
            form.inline method="post" action=(action) data-confirm=(ask) {
                (visitor.csrf_field())
                input type="hidden" name="enabled" value="false";
                input type="hidden" name="version" value=(flag.version);
                span.on { "on" } " " button.danger { "Turn off" } " " input name="reason" placeholder="reason";
                " " (schedule_fields())
            }
        } @else {
            form.inline method="post" action=(action) {
                (visitor.csrf_field())
                input type="hidden" name="enabled" value="true";
                input type="hidden" name="version" value=(flag.version);
                span.off { "OFF" } " (serving " (off) " to everyone) " button { "Turn on" } " "
                input name="reason" placeholder="reason";
                " " (schedule_fields())
            }
        }
    }
}

/// The value everyone without an override gets, its form, metadata and lifecycle.
fn value_section(visitor: &Visitor, flag: &FlagRecord, sparkline: Markup) -> Markup {
    let current = flag.value.to_json();
    let meta = &flag.meta;
    html! {
        section {
            h2 { "Value" }
            p {
                "Everyone without an override gets "
                code id="current-value" { (show(&current)) } " (" (flag.value_type) ")."
            }
            form method="post" action={ (visitor.base) "/flags/" (seg(&flag.key)) "/value" } {
                (visitor.csrf_field())
                input type="hidden" name="version" value=(flag.version);
                (value_input(flag, "value", Some(&current)))
                " " input name="reason" placeholder="reason"; " " button { "Save value" }
                " " (schedule_fields())
            }
            p.muted {
                "owner " (meta.owner) " · tags " (meta.tags.join(", ")) " · ticket " (meta.ticket)
                " · version " (flag.version)
            }
            (lifecycle(flag, sparkline))
        }
    }
}

/// An optional time to apply a form's change at instead of now, in the visitor's
/// time zone (the page's script sends its offset; without it, UTC).
fn schedule_fields() -> Markup {
    html! {
        span.field {
            label { "or at " input type="datetime-local" name="apply_at" step="1" aria-label="apply at (your time; UTC if the page's script does not run)"; }
            input type="hidden" name="tz" value="";
        }
    }
}

/// `apply_at` from a form (local time, `tz` minutes east of UTC) as UTC; `None` when empty.
fn form_time(apply_at: &str, tz: &str) -> Result<Option<time::OffsetDateTime>, String> {
    let text = apply_at.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]");
    let seconds = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let local = time::PrimitiveDateTime::parse(text, &format)
        .or_else(|_| time::PrimitiveDateTime::parse(text, &seconds))
        .map_err(|_| format!("{text:?} is not a date and time like 2026-12-24T08:00"))?;
    let minutes: i32 = if tz.trim().is_empty() {
        0
    } else {
        tz.trim().parse().map_err(|_| format!("bad time zone {tz:?}"))?
    };
    if minutes.abs() > 18 * 60 {
        return Err(format!("bad time zone {tz:?}"));
    }
    let at = local.assume_utc().checked_sub(time::Duration::minutes(i64::from(minutes)));
    at.map(Some).ok_or_else(|| format!("{text:?} is out of range"))
}

/// Writes `m` now, or (with a time) makes a request that applies it then.
async fn apply_or_schedule(
    admin: &Admin,
    visitor: &Visitor,
    m: Mutation,
    reason: &str,
    key: &str,
    (apply_at, tz): (&str, &str),
) -> Response {
    let at = match form_time(apply_at, tz) {
        Ok(at) => at,
        Err(e) => return visitor.error(StatusCode::UNPROCESSABLE_ENTITY, &format!("apply at: {e}")),
    };
    let Some(at) = at else { return visitor.apply(admin, m, reason, key).await };
    let reason = Some(reason.trim().to_owned()).filter(|r| !r.is_empty());
    match admin.schedule(&visitor.caller.name, reason, vec![m], at).await {
        Ok(r) => visitor.to_request(r.id, false),
        Err(e) => visitor.fail(e),
    }
}

/// Kind, permanence, dates and expiry policy, then the evaluation sparkline.
fn lifecycle(flag: &FlagRecord, sparkline: Markup) -> Markup {
    let expires = flag.meta.expires_at.map(rfc3339).unwrap_or_else(|| "never".into());
    let permanence = if flag.meta.is_permanent(flag.value_type) { "permanent" } else { "temporary" };
    let policy = match flag.meta.expiry {
        ExpiryPolicy::Warn => "warn",
        ExpiryPolicy::ServeDefault => "serve the code default",
    };
    html! {
        p.muted {
            "kind " (flag.meta.kind_or_default(flag.value_type))
            @if flag.meta.kind.is_none() { " (default for its type)" }
            " · " (permanence) " · created " (rfc3339(flag.created_at))
            " · expires " (expires) " (" (policy) " after)"
        }
        p { "Evaluations, 30 days: " (sparkline) }
    }
}

/// The targeting as JSON in a textarea.
/// The structured editor (built by the page's script from `data-state`; every check
/// is the server's, through the preview route) over the JSON form it saves with,
/// which stays for experts and for browsers without script.
fn targeting_section(
    visitor: &Visitor,
    flag: &FlagRecord,
    attributes: &[String],
    segments: &[String],
) -> Markup {
    let state = serde_json::json!({
        "targeting": flag.targeting,
        "type": flag.value_type,
        "value": flag.value.to_json(),
        "attributes": attributes,
        "segments": segments,
        "version": flag.version,
        "preview": format!("{}/flags/{}/preview", visitor.base, seg(&flag.key)),
        "csrf": visitor.csrf(),
    });
    // Editing is for editors, and for a live flag.
    let editable = !flag.archived && visitor.caller.require(Role::Editor).is_ok();
    html! {
        section #targeting {
            h2 { "Targeting" }
            p.muted {
                "Rules (first match wins), then the split, then the schedule's step in force (under a \
                 guard, steps wait for the guardian to apply them). Everyone else gets the value above."
            }
            @if editable { div #targeting-editor data-state=(state.to_string()) {} }
            details #targeting-json-view open[!editable] {
                summary { "JSON (weights in basis points: 100% = 10000)" }
                form #targeting-form method="post" action={ (visitor.base) "/flags/" (seg(&flag.key)) "/targeting" } {
                    (visitor.csrf_field())
                    input type="hidden" name="version" value=(flag.version);
                    textarea #targeting-json name="targeting" rows="8" cols="90" spellcheck="false" aria-label="targeting as JSON" {
                        (serde_json::to_string_pretty(&flag.targeting).unwrap_or_default())
                    }
                    br;
                    input name="reason" placeholder="reason" aria-label="reason"; " " button { "Save targeting" }
                }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
struct PreviewBody {
    csrf: String,
    #[serde(flatten)]
    request: ff_api::PreviewRequest,
}

/// The editor's checks: the API's preview, for a page session. The CSRF token comes
/// in the JSON body; it is checked first, whatever the body (a forged form included).
pub(crate) async fn preview_targeting(
    State(admin): State<Admin>,
    visitor: Visitor,
    Path(key): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    use axum::response::IntoResponse;
    let json = serde_json::from_slice::<PreviewBody>(&body);
    let csrf = match &json {
        Ok(b) => b.csrf.clone(),
        // Not the editor's JSON: whatever token a form carries, for the refusal.
        Err(_) => String::from_utf8_lossy(&body)
            .split('&')
            .find_map(|kv| kv.strip_prefix("csrf="))
            .unwrap_or_default()
            .to_owned(),
    };
    if let Err(r) = visitor.check(&csrf, Role::Viewer) {
        return r;
    }
    let body = match json {
        Ok(b) => b,
        Err(e) => {
            return (StatusCode::UNPROCESSABLE_ENTITY, format!("expected the editor's JSON: {e}"))
                .into_response();
        }
    };
    match crate::api::preview_edit(&admin, &visitor.caller, key, body.request).await {
        Ok(preview) => axum::Json(preview).into_response(),
        Err(e) => e.into_response(),
    }
}

/// A guarded rollout's test, each variation's counts, recent windows, and what the
/// guard wrote (revert those from the history below). Nothing without either.
fn guard_section(view: &Result<ff_api::GuardView, String>) -> Markup {
    use ff_store::guard::Summary;
    let view = match view {
        Ok(v) => v,
        Err(e) => {
            return html! { section #guard { h2 { "Guarded rollout" } p.error { "Cannot show it: " (e) } } };
        }
    };
    if view.state.is_none() && view.actions.is_empty() {
        return html! {};
    }
    let ms = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v} ms"));
    let pct = |c: &Summary| format!("{:.2} %", c.error_rate * 100.0);
    let cells = |c: &Summary| {
        html! {
            td.num { (c.requests) } td.num { (c.errors) } td.num { (pct(c)) }
            td.num { (ms(c.p50_ms)) } td.num { (ms(c.p95_ms)) } td.num { (ms(c.p99_ms)) }
        }
    };
    html! {
        section #guard {
            h2 { "Guarded rollout" }
            @if let Some(st) = &view.state {
                @let verdict = st.verdict.to_string();
                p class=(match st.verdict { ff_core::guard::Verdict::Regressed { .. } => "off", _ => "" }) {
                    strong { (verdict) }
                    @if let Some(at) = st.regressed_at { " (found at " (rfc3339(at)) ")" }
                }
                p.muted {
                    "Allowed: +" (st.guard.max_error_increase) " points of errors"
                    @if let Some(l) = st.guard.max_latency_increase { ", +" (l) " % typical latency" }
                    "; tested at α " (st.guard.alpha) " after " (st.guard.min_requests) " requests a side; on a regression: "
                    (match st.guard.action { ff_core::guard::GuardAction::Rollback => "roll back", ff_core::guard::GuardAction::Pause => "pause the ramp" })
                    ". Watching since " (st.started.map(rfc3339).unwrap_or_else(|| "–".into()))
                    ", counts from " (st.instances) " instance(s)"
                    @if st.acting { "; this process acts" }
                    "."
                }
                @if let Some(next) = st.next_step { p { "Next ramp step due " (rfc3339(next)) " (applied once the guard finds the rollout healthy)." } }
                @if let Some(note) = &st.note { p.muted { (note) } }
                table {
                    tr { th { "Variation" } th { "Side" } th { "Weight" } th { "Requests" } th { "Errors" } th { "Error rate" } th { "p50" } th { "p95" } th { "p99" } }
                    @for v in &st.variations {
                        tr {
                            td { code { (show(&v.value)) } }
                            td { (if v.control { "control" } else { "treatment" }) }
                            td.num { (f64::from(v.weight) / 100.0) " %" }
                            (cells(&v.counts))
                        }
                    }
                    tr { td { "all" } td { "control" } td {} (cells(&st.control)) }
                    tr { td { "all" } td { "treatment" } td {} (cells(&st.treatment)) }
                }
                @if !st.history.is_empty() {
                    h3 { "Over time (10-second windows, newest first)" }
                    table {
                        tr { th { "Window end" } th { "Control requests" } th { "errors" } th { "p95" } th { "Treatment requests" } th { "errors" } th { "p95" } }
                        @for h in st.history.iter().rev().take(30) {
                            tr {
                                td { (rfc3339(h.at)) }
                                td.num { (h.control.requests) } td.num { (pct(&h.control)) } td.num { (ms(h.control.p95_ms)) }
                                td.num { (h.treatment.requests) } td.num { (pct(&h.treatment)) } td.num { (ms(h.treatment.p95_ms)) }
                            }
                        }
                    }
                }
            } @else {
                p.muted { "No guard now." }
            }
            @if !view.actions.is_empty() {
                h3 { "What the guard did" }
                table {
                    tr { th { "#" } th { "Time" } th { "What" } }
                    @for c in &view.actions {
                        tr { td { (c.seq) } td { (rfc3339(c.at)) } td { (c.reason.clone().unwrap_or_default()) } }
                    }
                }
                p.muted { "Revert one from the history below to undo it." }
            }
        }
    }
}

/// The first 200 overrides, each with a remove button, and the form to add one.
fn overrides_section(visitor: &Visitor, flag: &FlagRecord, overrides: &[OverrideRecord]) -> Markup {
    let action = format!("{}/flags/{}/overrides", visitor.base, seg(&flag.key));
    html! {
        section {
            h2 { "Overrides (" (overrides.len()) ")" }
            table {
                tr { th { "User" } th { "Value" } th {} }
                @for o in overrides.iter().take(200) {
                    tr {
                        td { (o.user_id) }
                        td { code { (show(&o.value)) } }
                        td {
                            form.inline method="post" action={ (action) "/remove" } {
                                (visitor.csrf_field())
                                input type="hidden" name="user_id" value=(o.user_id);
                                button { "Remove" }
                            }
                        }
                    }
                }
            }
            form.spaced method="post" action=(action) {
                (visitor.csrf_field())
                input name="user_id" placeholder="user id" required;
                " " (value_input(flag, "value", None))
                " " input name="reason" placeholder="reason"; " " button { "Add override" }
            }
        }
    }
}

/// A change's before or after as people read it (a flag's value, marked if off; a
/// request's status).
fn summary(v: &Option<Value>) -> String {
    match v {
        Some(Value::Object(m)) if m.contains_key("changes") && m.contains_key("status") => {
            format!("request {}", show(&m["status"]))
        }
        Some(Value::Object(m)) if m.contains_key("value") => {
            let off = if m.get("enabled") == Some(&Value::Bool(false)) { " (off)" } else { "" };
            format!("{}{off}", show(&m["value"]))
        }
        Some(v) => show(v),
        None => "—".into(),
    }
}

/// The flag's recent changes, each with a revert button (token changes have none).
fn history_rows(visitor: &Visitor, key: &str, history: &[Change]) -> Markup {
    html! {
        @for c in history {
            tr {
                td { (c.seq) }
                td { (rfc3339(c.at)) }
                td { (c.actor) @if let Some(by) = &c.approved_by { br; span.muted { "approved by " (by) } } }
                td { (c.action.as_str()) @if c.emergency { br; span.off { "emergency" } } }
                td { (c.subject.as_deref().unwrap_or("")) }
                td {
                    code { (summary(&c.before)) } " → " code { (summary(&c.after)) }
                    @let fields = c.other_fields();
                    @if !fields.is_empty() { " " span.muted { "(" (fields.join(", ")) ")" } }
                }
                td { (c.reason.as_deref().unwrap_or("")) }
                td {
                    @if c.action == Action::RequestPut {
                        a href={ (visitor.base) "/requests/" (c.subject.as_deref().unwrap_or("")) } { "Request" }
                    } @else if !matches!(c.action, Action::TokenCreate | Action::TokenRevoke) {
                        form.inline method="post" action={ (visitor.base) "/changes/" (c.seq) "/revert" }
                            data-confirm={ "Undo change #" (c.seq) "?" } {
                            (visitor.csrf_field())
                            input type="hidden" name="key" value=(key);
                            button { "Revert" }
                        }
                    }
                }
            }
        }
    }
}

/// An input for a value of the flag's type, showing its bounds.
fn value_input(flag: &FlagRecord, name: &str, current: Option<&Value>) -> Markup {
    let cur = current.map(show).unwrap_or_default();
    let s = &flag.schema;
    if !s.allowed.is_empty() {
        return html! {
            select name=(name) {
                @for a in &s.allowed {
                    option value=(show(a)) selected[Some(a) == current] { (show(a)) }
                }
            }
        };
    }
    match flag.value_type {
        ValueType::Bool => html! {
            select name=(name) {
                option selected[cur == "true"] { "true" }
                option selected[cur != "true"] { "false" }
            }
        },
        ValueType::Int | ValueType::Float => {
            let step = if flag.value_type == ValueType::Int { "1" } else { "any" };
            let bounds = match (&s.min, &s.max) {
                (Some(a), Some(b)) => Some(format!("{a} to {b}")),
                (Some(a), None) => Some(format!("at least {a}")),
                (None, Some(b)) => Some(format!("at most {b}")),
                (None, None) => None,
            };
            html! {
                input type="number" name=(name) step=(step) min=[&s.min] max=[&s.max] value=(cur) required;
                @if let Some(b) = bounds {
                    " " span.muted { (b) }
                }
            }
        }
        ValueType::String if s.format == Some(ff_core::ValueFormat::Duration) => {
            let (min, max) = s.duration_bounds();
            let bounds = match (min.map(ff_core::format_duration), max.map(ff_core::format_duration)) {
                (Some(a), Some(b)) => format!(", {a} to {b}"),
                (Some(a), None) => format!(", at least {a}"),
                (None, Some(b)) => format!(", at most {b}"),
                (None, None) => String::new(),
            };
            html! {
                input name=(name) value=(cur) size="12" placeholder="48h" required;
                " " span.muted { "a duration: 90m, 48h, 1h30m" (bounds) }
            }
        }
        ValueType::String => html! { input name=(name) value=(cur) size="30"; },
        ValueType::Json => html! {
            textarea name=(name) rows="3" cols="50" { (cur) }
            @if let Some(items) = &s.items {
                " " span.muted { "a list of " (item_form(items)) ", as JSON: " code { "[" (item_example(items)) "]" } }
            }
        },
    }
}

/// What a list setting's items are, in words.
fn item_form(items: &ff_core::Items) -> String {
    match (items.schema.format, items.schema.allowed.is_empty()) {
        (Some(ff_core::ValueFormat::Duration), _) => "durations".into(),
        (None, false) => {
            format!("values of {}", items.schema.allowed.iter().map(show).collect::<Vec<_>>().join(", "))
        }
        _ => format!("{}s", items.value_type),
    }
}

/// One item as it is written in the list.
fn item_example(items: &ff_core::Items) -> String {
    if let Some(a) = items.schema.allowed.first() {
        return a.to_string();
    }
    match (items.schema.format, items.value_type) {
        (Some(ff_core::ValueFormat::Duration), _) => "\"48h\"".into(),
        (_, ValueType::Bool) => "true".into(),
        (_, ValueType::Int) => "1".into(),
        (_, ValueType::Float) => "1.5".into(),
        _ => "\"text\"".into(),
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

#[derive(Debug, Deserialize)]
pub(crate) struct SwitchForm {
    csrf: String,
    enabled: String,
    version: u64,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    apply_at: String,
    #[serde(default)]
    tz: String,
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
    apply_or_schedule(&admin, &visitor, m, &f.reason, &key, (&f.apply_at, &f.tz)).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct ValueForm {
    csrf: String,
    value: String,
    version: u64,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    apply_at: String,
    #[serde(default)]
    tz: String,
}

/// The form's text as a value of the flag's type, or the page saying why not.
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
    apply_or_schedule(&admin, &visitor, m, &f.reason, &key, (&f.apply_at, &f.tz)).await
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

#[cfg(test)]
mod tests {
    use super::*;

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
