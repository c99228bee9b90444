//! User lookup: what one user sees for every flag, and why.

use axum::extract::{Query, State};
use axum::response::Response;
use ff_core::EvalContext;
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{seg, show};
use super::session::Visitor;
use crate::Admin;

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
    let table = if user.is_empty() {
        None
    } else {
        match lookup(&admin, &visitor.base, user).await {
            Ok(t) => Some(t),
            Err(e) => return visitor.fail(e.into()),
        }
    };
    let body = html! {
        section {
            h1 { "What does a user see, and why?" }
            form method="get" action={ (visitor.base) "/users" } {
                input name="user" placeholder="user id" value=(user) required;
                " " button { "Look up" }
            }
        }
        @if let Some(t) = table { (t) }
    };
    visitor.page("User lookup", body)
}

/// Every flag's value for `user` and why, by key; declared flags the store lacks
/// serve their code default.
async fn lookup(admin: &Admin, base: &str, user: &str) -> Result<Markup, ff_store::StoreError> {
    // What the application serves: its live snapshot, environment pins included.
    let snapshot = admin.snapshot().await?;
    let context = EvalContext::user(user);
    let mut rows: Vec<(String, String, String)> = snapshot
        .evaluate_all(&context)
        .map(|(flag, value, reason)| (flag.key().to_owned(), show(&value.to_json()), reason.to_string()))
        .collect();
    for d in admin.decls().iter().filter(|d| snapshot.flag_info(&d.key).is_none()) {
        rows.push((d.key.clone(), show(&d.default.to_json()), "default".to_owned()));
    }
    rows.sort();
    Ok(html! {
        table {
            tr { th { "Flag" } th { "Value" } th { "Why" } }
            @for (key, value, reason) in &rows {
                tr {
                    td { a href={ (base) "/flags/" (seg(key)) } { code { (key) } } }
                    td { code { (value) } }
                    td { (reason) }
                }
            }
        }
    })
}
