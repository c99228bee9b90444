//! The flag list (filtered, with usage sparklines) and the stale-flag report.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::response::Response;
use ff_core::{FlagRecord, StaleFlag};
use maud::{Markup, html};
use serde::Deserialize;
use time::OffsetDateTime;

use super::layout::{rfc3339, seg, sparkline};
use super::session::Visitor;
use crate::Admin;

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

impl ListForm {
    /// Whether the filter keeps `x`; `q` is the search text, lowercased.
    fn keeps(&self, x: &FlagRecord, q: &str, stale: &HashMap<&str, &StaleFlag>) -> bool {
        !x.archived
            && (q.is_empty() || x.key.to_lowercase().contains(q) || x.description.to_lowercase().contains(q))
            && (self.tag.is_empty() || x.meta.tags.contains(&self.tag))
            && (self.owner.is_empty() || x.meta.owner == self.owner)
            && (self.stale.is_empty() || stale.contains_key(x.key.as_str()))
    }
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
    let now = OffsetDateTime::now_utc();
    let stale = match crate::api::stale_report(&admin, &flags, admin.default_stale_rules(), now).await {
        Ok(s) => s,
        Err(e) => return visitor.fail(e),
    };
    let (days, usage) = match crate::api::daily_usage(&admin, 14).await {
        Ok(u) => u,
        Err(e) => return visitor.fail(e),
    };
    let stale_by_key: HashMap<&str, &StaleFlag> = stale.iter().map(|s| (s.key.as_str(), s)).collect();
    let q = f.q.to_lowercase();
    let rows = html! {
        @for x in flags.iter().filter(|x| f.keeps(x, &q, &stale_by_key)) {
            @let (daily, last) = usage.get(&x.key).map_or((&[][..], None), |(d, l)| (&d[..], *l));
            (flag_row(
                &visitor.base,
                x,
                counts.get(&x.key).copied().unwrap_or(0),
                stale_by_key.get(x.key.as_str()).copied(),
                sparkline(&days, daily, last),
            ))
        }
    };
    visitor.page("Flags", list_body(&visitor.base, &f, rows))
}

/// The filter form and the table around the rows.
fn list_body(base: &str, f: &ListForm, rows: Markup) -> Markup {
    html! {
        section {
            form method="get" action=(base) {
                input name="q" placeholder="Search keys and descriptions" value=(f.q) size="34";
                " "
                input name="tag" placeholder="tag" value=(f.tag) size="10";
                " "
                input name="owner" placeholder="owner" value=(f.owner) size="12";
                " "
                label { input type="checkbox" name="stale" value="1" checked[!f.stale.is_empty()]; " stale only" }
                " "
                button { "Filter" }
            }
        }
        table {
            tr {
                th { "Flag" } th { "Type" } th { "Value" } th { "Switch" } th { "Overrides" }
                th { "Evaluations, 14 days" } th { "Owner" } th { "Tags" }
            }
            (rows)
        }
    }
}

/// One flag of the list: key (and why it is stale), type, value, switch, overrides,
/// evaluations, owner and tags.
fn flag_row(
    base: &str,
    x: &FlagRecord,
    overrides: usize,
    stale: Option<&StaleFlag>,
    sparkline: Markup,
) -> Markup {
    html! {
        tr {
            td {
                a href={ (base) "/flags/" (seg(&x.key)) } { code { (x.key) } }
                @if let Some(s) = stale {
                    " "
                    span.off { "stale: " (reasons(s)) }
                }
                div.muted { (x.description) }
            }
            td { (x.value_type) }
            td { code { (x.value.to_string()) } }
            td {
                @if x.enabled { span.on { "on" } } @else { span.off { "OFF" } }
            }
            td { (overrides) }
            td { (sparkline) }
            td { (x.meta.owner) }
            td { (x.meta.tags.join(", ")) }
        }
    }
}

fn reasons(s: &StaleFlag) -> String {
    s.reasons.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
}

/// Flags to clean up, with why, and keys code reads that the store lacks.
pub(crate) async fn stale_page(State(admin): State<Admin>, visitor: Visitor) -> Response {
    let now = OffsetDateTime::now_utc();
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
    let time = |t: Option<OffsetDateTime>| t.map(rfc3339).filter(|t| !t.is_empty()).unwrap_or("-".into());
    let body = html! {
        section {
            h1 { "Stale flags" }
            p.muted {
                "Temporary flags past their expiry, not evaluated for " (rules.not_evaluated_days)
                " days, or serving one value to everyone for " (rules.one_value_days)
                " days. Remove them from the code, then archive them."
            }
            table {
                tr {
                    th { "Flag" } th { "Kind" } th { "Owner" } th { "Why" } th { "Expires" }
                    th { "Last evaluated" } th { "Only value" }
                }
                @for s in &stale {
                    tr {
                        td { a href={ (visitor.base) "/flags/" (seg(&s.key)) } { code { (s.key) } } }
                        td { (s.kind) }
                        td { (s.owner) }
                        td { (reasons(s)) }
                        td { (time(s.expires_at)) }
                        td { (time(s.last_evaluated)) }
                        td { code { (s.only_value.as_deref().unwrap_or("-")) } }
                    }
                }
            }
        }
        section {
            h2 { "Read by code, missing from the store" }
            table {
                tr { th { "Key" } th { "Reads" } th { "Last" } }
                @for u in &unknown {
                    tr { td { code { (u.key) } } td { (u.count) } td { (time(Some(u.last_at))) } }
                }
            }
        }
    };
    visitor.page("Stale flags", body)
}
