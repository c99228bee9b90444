//! Change requests on the page: the list, one request with its approve, reject and
//! re-base buttons, and the flag page's section of requests about that flag.

// Handlers return the error page itself as `Err(Response)`: boxing it gains nothing.
#![allow(clippy::result_large_err)]

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use ff_api::{ChangeRequest, RequestStatus};
use ff_store::Role;
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{local_time, seg};
use super::session::Visitor;
use crate::Admin;

/// `GET {base}/requests`: open requests first, then the last decided ones.
pub(crate) async fn requests_page(State(admin): State<Admin>, visitor: Visitor) -> Response {
    let all = match admin.change_requests(true).await {
        Ok(r) => r,
        Err(e) => return visitor.fail(e),
    };
    let (open, done): (Vec<&ChangeRequest>, Vec<&ChangeRequest>) =
        all.iter().partition(|r| r.status.is_open());
    let body = html! {
        h1 { "Change requests" }
        p.muted {
            "Changes waiting for a second editor's approval, or for their time. Approving applies a \
             request's changes together, once; a request whose flag changed since it was made must be \
             re-based by its author first."
        }
        section {
            h2 { "Open (" (open.len()) ")" }
            @if open.is_empty() { p.muted { "Nothing waits." } } @else { (table(&visitor, &open)) }
        }
        section {
            h2 { "Decided" }
            @if done.is_empty() { p.muted { "None yet." } } @else { (table(&visitor, &done.into_iter().take(50).collect::<Vec<_>>())) }
        }
    };
    visitor.page("Change requests", body)
}

/// Requests as rows: number, flag, changes, who, approvals, time and status.
pub(super) fn table(visitor: &Visitor, requests: &[&ChangeRequest]) -> Markup {
    html! {
        table {
            tr { th { "#" } th { "Changes" } th { "Asked by" } th { "Approved by" } th { "Apply at" } th { "Status" } }
            @for r in requests {
                tr {
                    td { a href={ (visitor.base) "/requests/" (r.id) } { (r.id) } }
                    td { ul.changes { @for line in r.summary() { li { (line) } } } }
                    td { (r.author) @if let Some(w) = &r.reason { br; span.muted { (w) } } }
                    td { (approvers(r)) }
                    td { @match r.apply_at { Some(t) => (local_time(t)), None => "when approved" } }
                    td { (status(r)) }
                }
            }
        }
    }
}

fn approvers(r: &ChangeRequest) -> String {
    if !r.needs_approval {
        return "not needed".into();
    }
    let by: Vec<&str> = r.approvals.iter().map(|a| a.by.as_str()).collect();
    if by.is_empty() { "nobody yet".into() } else { by.join(", ") }
}

fn status(r: &ChangeRequest) -> Markup {
    let class = match r.status {
        RequestStatus::Applied => "on",
        RequestStatus::Rejected | RequestStatus::Failed => "off",
        _ => "",
    };
    html! { span class=(class) { (r.status.as_str()) } }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Shown {
    /// Set when a change of the visitor's was just held here.
    #[serde(default)]
    held: Option<String>,
}

/// `GET {base}/requests/{id}`.
pub(crate) async fn request_page(
    State(admin): State<Admin>,
    visitor: Visitor,
    Path(id): Path<u64>,
    Query(shown): Query<Shown>,
) -> Response {
    let r = match admin.change_request(id).await {
        Ok(r) => r,
        Err(e) => return visitor.fail(e),
    };
    // What each change's flag serves now, beside what the request asks for.
    let mut now = std::collections::BTreeMap::new();
    for key in r.base.keys() {
        if let Ok(Some(f)) = admin.store().flag(key).await {
            now.insert(key.clone(), f);
        }
    }
    let mine = r.author == visitor.caller.name;
    let editor = visitor.caller.require(Role::Editor).is_ok();
    let action = |verb: &str| format!("{}/requests/{id}/{verb}", visitor.base);
    let body = html! {
        h1 { "Change request " (id) }
        @if shown.held.is_some() {
            p.notice role="status" {
                strong { "Your change was not made yet." }
                " The flag's approval policy holds it in this request until another editor approves it."
            }
        }
        section {
            p { (status(&r)) " · revision " (r.revision) " · asked by " strong { (r.author) } " at " (local_time(r.created_at)) }
            @if let Some(w) = &r.reason { p { "Why: " (w) } }
            h2 { "Changes" }
            ul.changes {
                @for (op, line) in r.changes.iter().zip(r.summary()) {
                    li { (line) @if let Some(n) = serving_now(op, &now) { " " span.muted { "(now " (n) ")" } } }
                }
            }
            p.muted {
                "Made on "
                @for (i, (k, v)) in r.base.iter().enumerate() {
                    @if i > 0 { ", " }
                    a href={ (visitor.base) "/flags/" (seg(k)) } { (k) } " version " (v)
                }
                "."
            }
            p { "Approval: " (if r.needs_approval { approvers(&r) } else { "not needed (only its time holds it)".into() }) }
            p { "Apply at: " @match r.apply_at { Some(t) => (local_time(t)), None => "as soon as approved" } }
            @if let Some(d) = &r.decision {
                p { (r.status.as_str()) " by " (d.by) " at " (local_time(d.at)) @if let Some(w) = &d.reason { ": " (w) } }
            }
            details { summary { "As JSON" } pre { code { (serde_json::to_string_pretty(&r.changes).unwrap_or_default()) } } }
        }
        @if editor && r.status.is_open() {
            section {
                h2 { "Decide" }
                @if r.status == RequestStatus::Pending && !mine {
                    form.inline method="post" action=(action("approve")) {
                        (visitor.csrf_field())
                        input type="hidden" name="revision" value=(r.revision);
                        button { "Approve" @if r.apply_at.is_none() { " and apply" } }
                    }
                    " "
                }
                @if r.status == RequestStatus::Pending && mine {
                    p.muted { "You asked for this: another editor approves it." }
                }
                form.inline method="post" action=(action("reject")) {
                    (visitor.csrf_field())
                    input name="reason" placeholder="reason" aria-label="reason";
                    " " button.danger { (if mine { "Withdraw" } else { "Reject" }) }
                }
                @if mine {
                    " "
                    form.inline method="post" action=(action("rebase")) {
                        (visitor.csrf_field())
                        button { "Re-base on the flags as they are now" }
                    }
                }
            }
        }
        p { a href={ (visitor.base) "/requests" } { "All change requests" } }
    };
    visitor.page(&format!("Request {id}"), body)
}

/// What the flag an update changes serves now, in the parts it changes.
fn serving_now(
    op: &ff_api::BatchOp,
    now: &std::collections::BTreeMap<String, ff_core::FlagRecord>,
) -> Option<String> {
    let ff_api::BatchOp::Update { key, patch, .. } = op else { return None };
    let f = now.get(key)?;
    let mut parts = Vec::new();
    if patch.enabled.is_some() {
        parts.push(if f.enabled { "on".to_owned() } else { "off".to_owned() });
    }
    if patch.value.is_some() {
        parts.push(format!("value = {}", f.value.to_json()));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

#[derive(Debug, Deserialize)]
pub(crate) struct DecideForm {
    csrf: String,
    #[serde(default)]
    reason: String,
    /// The revision the page showed: an approval is of what was read.
    #[serde(default)]
    revision: Option<u32>,
}

/// `POST {base}/requests/{id}/{approve|reject|rebase}`.
pub(crate) async fn decide(
    State(admin): State<Admin>,
    visitor: Visitor,
    Path((id, verb)): Path<(u64, String)>,
    Form(f): Form<DecideForm>,
) -> Response {
    if let Err(r) = visitor.check(&f.csrf, Role::Editor) {
        return r;
    }
    let reason = Some(f.reason.trim().to_owned()).filter(|r| !r.is_empty());
    let done = match verb.as_str() {
        "approve" => admin.approve(&visitor.caller, id, f.revision).await,
        "reject" => admin.reject(&visitor.caller, id, reason).await,
        "rebase" => admin.revise(&visitor.caller, id, None).await,
        _ => return visitor.error(StatusCode::NOT_FOUND, "No such action."),
    };
    match done {
        Ok(_) => Redirect::to(&format!("{}/requests/{id}", visitor.base)).into_response(),
        Err(e) => visitor.fail(e),
    }
}

/// The flag page's section: its policy (and, for editors, the flag's own setting of
/// it), and the open requests that change it.
pub(super) fn flag_section(
    visitor: &Visitor,
    flag: &ff_core::FlagRecord,
    needs_approval: bool,
    open: &[ChangeRequest],
) -> Markup {
    let open: Vec<&ChangeRequest> = open.iter().collect();
    let own = match flag.meta.approval {
        None => "kind",
        Some(true) => "always",
        Some(false) => "never",
    };
    let editor = visitor.caller.require(Role::Editor).is_ok() && !flag.archived;
    html! {
        section #requests {
            h2 { "Change requests" }
            @if needs_approval {
                p.muted { "Changes to this flag wait for a second editor's approval. Switching it off never waits: it is an emergency, and the history marks it." }
            } @else {
                p.muted { "Changes to this flag are made at once." }
            }
            @if editor {
                form.inline method="post" action={ (visitor.base) "/flags/" (seg(&flag.key)) "/approval" } {
                    (visitor.csrf_field())
                    input type="hidden" name="version" value=(flag.version);
                    label { "Approval: " select name="approval" {
                        option value="kind" selected[own == "kind"] { "as its kind's policy" }
                        option value="always" selected[own == "always"] { "always needed" }
                        option value="never" selected[own == "never"] { "never needed" }
                    } }
                    " " button { "Set" }
                }
            }
            @if open.is_empty() { p.muted { "None open." } } @else { (table(visitor, &open)) }
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct ApprovalForm {
    csrf: String,
    // Defaults: the CSRF check comes first, whatever else the form lacks.
    #[serde(default)]
    approval: String,
    #[serde(default)]
    version: u64,
}

/// `POST {base}/flags/{key}/approval`: the flag's own policy (loosening it waits for
/// approval like any change to the flag).
pub(crate) async fn set_approval(
    State(admin): State<Admin>,
    visitor: Visitor,
    Path(key): Path<String>,
    Form(f): Form<ApprovalForm>,
) -> Response {
    if let Err(r) = visitor.check(&f.csrf, Role::Editor) {
        return r;
    }
    let approval = match f.approval.as_str() {
        "kind" => None,
        "always" => Some(true),
        "never" => Some(false),
        other => {
            return visitor.error(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!("approval {other:?}: expected kind, always or never"),
            );
        }
    };
    let patch = ff_store::FlagPatch { approval: Some(approval), ..ff_store::FlagPatch::default() };
    let m = ff_store::Mutation::UpdateFlag { key: key.clone(), patch, expected_version: Some(f.version) };
    visitor.apply(&admin, m, "", &key).await
}
