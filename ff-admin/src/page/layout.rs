//! The page frame (header, navigation, style) and the fragments several pages share.

use axum::http::header;
use axum::response::{Html, IntoResponse};
use maud::{DOCTYPE, Markup, html};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::auth::Caller;

/// The page's only script, served as a file so the Content-Security-Policy can forbid
/// inline script: a form with `data-confirm` asks that question before it is sent.
const SCRIPT: &str = concat!(
    "document.addEventListener('submit', function (e) {\n\
  var ask = e.target.getAttribute('data-confirm');\n\
  if (ask !== null && !window.confirm(ask)) { e.preventDefault(); return; }\n\
  var tz = e.target.querySelector('input[name=tz]');\n\
  var at = e.target.querySelector('input[name=apply_at]');\n\
  var when = at && at.value ? new Date(at.value) : new Date();\n\
  if (tz) { tz.value = String(-(isNaN(when) ? new Date() : when).getTimezoneOffset()); }\n\
});\n\
document.addEventListener('DOMContentLoaded', function () {\n\
  document.querySelectorAll('time[datetime]').forEach(function (t) {\n\
    var d = new Date(t.getAttribute('datetime'));\n\
    if (!isNaN(d)) { t.title = t.getAttribute('datetime'); t.textContent = d.toLocaleString(); }\n\
  });\n\
});\n",
    include_str!("editor.js")
);

/// `GET {base}/page.css`.
pub(crate) async fn stylesheet() -> impl IntoResponse {
    asset("text/css; charset=utf-8", STYLE)
}

/// `GET {base}/page.js`.
pub(crate) async fn script() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=300")], body)
}

const STYLE: &str = "
[hidden]{display:none!important}
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
form.spaced{margin-top:.6rem}.muted{color:#667085}td.num{text-align:right;font-variant-numeric:tabular-nums}
section{overflow-x:auto}input,select,textarea{max-width:100%;box-sizing:border-box}header{flex-wrap:wrap}
#targeting-editor textarea{width:100%}.row{display:flex;flex-wrap:wrap;gap:.4rem .8rem;align-items:center;margin:.3rem 0}
.field{display:inline-flex;flex-wrap:wrap;max-width:100%;gap:.3rem;align-items:center}
#targeting-editor table{display:block;overflow-x:auto}.rule{border-left:3px solid #d0d5dd;padding:.3rem .6rem;margin:.5rem 0}
ul.changes code{white-space:pre-wrap;word-break:break-all}.notice{background:#eff8ff;border:1px solid #84caff;padding:.8rem 1rem;border-radius:6px}.error{background:#fef3f2;border:1px solid #fda29b;padding:.8rem 1rem;border-radius:6px}
";

/// A whole page; `who` (the caller and the session's CSRF token) adds the navigation.
pub(super) fn layout(base: &str, title: &str, who: Option<(&Caller, &str)>, body: Markup) -> Html<String> {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · ff admin" }
                link rel="stylesheet" href={ (base) "/page.css" };
                script src={ (base) "/page.js" } defer {}
            }
            body {
                header {
                    strong { "ff admin" }
                    @if let Some((caller, csrf)) = who {
                        (nav(base, caller, csrf))
                    }
                }
                main { (body) }
            }
        }
    };
    Html(page.into_string())
}

fn nav(base: &str, caller: &Caller, csrf: &str) -> Markup {
    html! {
        a href=(base) { "Flags" }
        a href={ (base) "/stale" } { "Stale" }
        a href={ (base) "/segments" } { "Segments" }
        a href={ (base) "/requests" } { "Requests" }
        @if caller.role >= ff_store::Role::Admin { a href={ (base) "/webhooks" } { "Webhooks" } }
        a href={ (base) "/users" } { "User lookup" }
        span.who { (caller.name) " (" (caller.role.as_str()) ")" }
        form.inline method="post" action={ (base) "/logout" } {
            (csrf_field(csrf))
            button { "Log out" }
        }
    }
}

/// The hidden field every form carries.
pub(super) fn csrf_field(csrf: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(csrf); }
}

/// Percent-encodes a URL path segment (the markup around it escapes it again).
pub(super) fn seg(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// A value as people read it: strings without quotes, null as a dash.
pub(super) fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "—".into(),
        other => other.to_string(),
    }
}

/// A time people read in their own time zone: RFC 3339 (UTC) in the markup, which the
/// page's script shows as local time (the UTC form stays as its tooltip).
pub(super) fn local_time(t: OffsetDateTime) -> Markup {
    let text = rfc3339(t);
    html! { time datetime=(text) { (text) } }
}

/// A time as RFC 3339, or nothing if it cannot be written so.
pub(super) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// Evaluations per day as an inline SVG line, with the numbers in its title and
/// the last evaluation beside it: a flat line at zero is a dead flag.
pub(super) fn sparkline(days: &[time::Date], daily: &[u64], last: Option<OffsetDateTime>) -> Markup {
    let max = daily.iter().copied().max().unwrap_or(0).max(1) as f64;
    let (w, h) = (84.0, 18.0);
    let step = if daily.len() > 1 { w / (daily.len() - 1) as f64 } else { 0.0 };
    let points: Vec<String> = daily
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{:.1},{:.1}", i as f64 * step, h - 1.0 - (*n as f64 / max) * (h - 2.0)))
        .collect();
    let counts: Vec<String> = days.iter().zip(daily).map(|(d, n)| format!("{d}: {n}")).collect();
    let last = last.and_then(|t| t.format(&Rfc3339).ok());
    html! {
        svg.spark width=(w) height=(h) role="img" aria-label=(counts.join(", ")) {
            title { (counts.join("\n")) }
            @if points.is_empty() {
                line x1="0" y1=(h - 1.0) x2=(w) y2=(h - 1.0) stroke="#bbb" {}
            } @else {
                polyline fill="none" stroke="#36c" stroke-width="1.5" points=(points.join(" ")) {}
            }
        }
        div.muted {
            @if let Some(t) = last { "last " (t) } @else { "never evaluated" }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        let data = "<script>alert('x')</script>&\"";
        let markup = html! { p title=(data) { (data) } }.into_string();
        let escaped = "&lt;script&gt;alert('x')&lt;/script&gt;&amp;&quot;";
        assert_eq!(markup, format!("<p title=\"{escaped}\">{escaped}</p>"));
        assert_eq!(seg("a b/../c"), "a%20b%2F..%2Fc");
        let link = html! { a href={ "/flags/" (seg("a\"b")) } {} }.into_string();
        assert_eq!(link, "<a href=\"/flags/a%22b\"></a>");
    }
}
