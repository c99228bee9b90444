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
            ul.changes { @for line in r.summary() { li { (line) } } }
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

#[derive(Debug, Deserialize)]
pub(crate) struct DecideForm {
    csrf: String,
    #[serde(default)]
    reason: String,
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
        "approve" => admin.approve(&visitor.caller, id).await,
        "reject" => admin.reject(&visitor.caller, id, reason).await,
        "rebase" => admin.revise(&visitor.caller, id, None).await,
        _ => return visitor.error(StatusCode::NOT_FOUND, "No such action."),
    };
    match done {
        Ok(_) => Redirect::to(&format!("{}/requests/{id}", visitor.base)).into_response(),
        Err(e) => visitor.fail(e),
    }
}

/// The flag page's section: its policy, and the open requests that change it.
pub(super) fn flag_section(visitor: &Visitor, needs_approval: bool, open: &[ChangeRequest]) -> Markup {
    if !needs_approval && open.is_empty() {
        return html! {};
    }
    let open: Vec<&ChangeRequest> = open.iter().collect();
    html! {
        section #requests {
            h2 { "Change requests" }
            @if needs_approval {
                p.muted { "Changes to this flag wait for a second editor's approval. Switching it off never waits: it is an emergency, and the history marks it." }
            }
            @if open.is_empty() { p.muted { "None open." } } @else { (table(visitor, &open)) }
        }
    }
}
