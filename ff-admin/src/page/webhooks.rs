//! Webhooks on the page (admins): the endpoints, each with its last deliveries, and
//! the forms to add and remove one.

use axum::Form;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use ff_api::{NewWebhook, WebhookFormat};
use ff_store::Role;
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::local_time;
use super::session::Visitor;
use crate::Admin;

/// `GET {base}/webhooks`.
pub(crate) async fn webhooks_page(State(admin): State<Admin>, visitor: Visitor) -> Response {
    if let Err(e) = visitor.caller.require(Role::Admin) {
        return visitor.fail(e);
    }
    page(&admin, &visitor, None).await
}

async fn page(admin: &Admin, visitor: &Visitor, created: Option<ff_api::WebhookCreated>) -> Response {
    let hooks = match admin.webhooks().await {
        Ok(h) => h,
        Err(e) => return visitor.fail(e),
    };
    let body = html! {
        h1 { "Webhooks" }
        p.muted {
            "Every change of the audit log of the kinds an endpoint asks for is posted to it, signed: "
            code { "X-FF-Signature: sha256=HMAC-SHA256(secret, X-FF-Timestamp + \".\" + body)" } ". "
            "Events arrive in order, at least once (" code { "X-FF-Delivery" } " names each, for spotting a repeat); an endpoint "
            "that fails is retried after 1, 2, 4 ... seconds (up to 5 minutes), and the events after it wait for it. "
            "Changes are never held up by an endpoint."
        }
        @if let Some(c) = &created {
            p.notice role="status" {
                strong { "Webhook " (c.webhook.id) " added." } " Its secret, shown this once: " code #secret { (c.secret) }
            }
        }
        @for h in &hooks {
            section {
                h2 { "Webhook " (h.webhook.id) }
                p { code { (h.webhook.url) } " · " (if h.webhook.format == WebhookFormat::Slack { "Slack text" } else { "JSON events" })
                    " · " (if h.webhook.events.is_empty() { "every event".to_owned() } else { h.webhook.events.join(", ") }) }
                p.muted {
                    "Added by " (h.webhook.created_by) " at " (local_time(h.webhook.created_at))
                    " · delivered up to change " (h.delivered_seq)
                    @if h.failures > 0 { " · " span.off { (h.failures) " failure(s) in a row" } }
                    @if let Some(t) = h.retry_at { " · next try " (local_time(t)) }
                }
                (deliveries(h))
                form.inline method="post" action={ (visitor.base) "/webhooks/" (h.webhook.id) "/delete" }
                    data-confirm={ "Remove webhook " (h.webhook.id) "? Nothing more is sent to it." } {
                    (visitor.csrf_field())
                    button.danger { "Remove" }
                }
            }
        }
        section {
            h2 { "Add a webhook" }
            form method="post" action={ (visitor.base) "/webhooks" } {
                (visitor.csrf_field())
                p { label { "URL " input name="url" type="url" required size="60" placeholder="https://hooks.example.com/ff"; } }
                p {
                    "Events (none: all): "
                    @for e in ff_api::WEBHOOK_EVENTS {
                        label { input type="checkbox" name="events" value=(e); " " (e) } " "
                    }
                }
                p {
                    label { "Format " select name="format" { option value="json" { "JSON events" } option value="slack" { "Slack text" } } }
                }
                button { "Add webhook" }
            }
        }
    };
    visitor.page("Webhooks", body)
}

fn deliveries(h: &ff_api::WebhookView) -> Markup {
    if h.deliveries.is_empty() {
        return html! { p.muted { "Nothing sent yet." } };
    }
    html! {
        table {
            tr { th { "Change" } th { "Event" } th { "When" } th { "Try" } th { "Answer" } }
            @for d in h.deliveries.iter().take(20) {
                tr {
                    td { (d.seq) } td { (d.event) } td { (local_time(d.at)) } td.num { (d.attempt) }
                    td {
                        @match (&d.error, d.status) {
                            (Some(e), _) => span.off { (e) },
                            (None, Some(s)) => span.on { (s) },
                            (None, None) => "—",
                        }
                    }
                }
            }
        }
    }
}

/// `POST {base}/webhooks`: `events` repeats, one per checked box, so the form is read as pairs.
pub(crate) async fn add_webhook(
    State(admin): State<Admin>,
    visitor: Visitor,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let field =
        |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or_default();
    if let Err(r) = visitor.check(field("csrf"), Role::Admin) {
        return r;
    }
    let events: Vec<String> = pairs.iter().filter(|(k, _)| k == "events").map(|(_, v)| v.clone()).collect();
    let format = if field("format") == "slack" { WebhookFormat::Slack } else { WebhookFormat::Json };
    let new = NewWebhook { url: field("url").trim().to_owned(), events, format, secret: None };
    match admin.add_webhook(&visitor.caller, new).await {
        Ok(created) => page(&admin, &visitor, Some(created)).await,
        Err(e) => visitor.fail(e),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct DeleteForm {
    csrf: String,
}

/// `POST {base}/webhooks/{id}/delete`.
pub(crate) async fn delete_webhook(
    State(admin): State<Admin>,
    visitor: Visitor,
    Path(id): Path<u64>,
    Form(f): Form<DeleteForm>,
) -> Response {
    if let Err(r) = visitor.check(&f.csrf, Role::Admin) {
        return r;
    }
    match admin.remove_webhook(&visitor.caller, id).await {
        Ok(()) => Redirect::to(&format!("{}/webhooks", visitor.base)).into_response(),
        Err(e) => visitor.fail(e),
    }
}
