//! Segments: the list, one segment's JSON editor, saving and deleting.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use ff_store::Role;
use maud::html;
use serde::Deserialize;

use super::layout::seg;
use super::session::Visitor;
use crate::Admin;

pub(crate) async fn segments_page(State(admin): State<Admin>, visitor: Visitor) -> Response {
    let segments = match admin.store().segments().await {
        Ok(s) => s,
        Err(e) => return visitor.fail(e.into()),
    };
    let base = &visitor.base;
    let body = html! {
        section {
            h1 { "Segments" }
            p.muted {
                "Named sets of users; a flag's rule uses one with "
                code { r#"{"attribute": "user_id", "op": "in_segment", "values": ["key"]}"# } "."
            }
            table {
                tr { th { "Segment" } th { "Description" } th { "Included" } th { "Excluded" } th { "Rules" } }
                @for s in &segments {
                    tr {
                        td { a href={ (base) "/segments/" (seg(&s.key)) } { code { (s.key) } } }
                        td { (s.definition.description) }
                        td { (s.definition.included.len()) }
                        td { (s.definition.excluded.len()) }
                        td { (s.definition.rules.len()) }
                    }
                }
            }
        }
        section {
            h2 { "New segment" }
            form method="post" action={ (base) "/segments" } {
                (visitor.csrf_field())
                p { input name="key" placeholder="key" required; }
                textarea name="definition" rows="6" cols="90" spellcheck="false" {
                    r#"{"description": "", "included": [], "excluded": [], "rules": []}"#
                }
                br;
                input name="reason" placeholder="reason"; " " button { "Create" }
            }
        }
    };
    visitor.page("Segments", body)
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
    let base = &visitor.base;
    let body = html! {
        h1 { "Segment " code { (key) } }
        section {
            form method="post" action={ (base) "/segments" } {
                (visitor.csrf_field())
                input type="hidden" name="key" value=(key);
                input type="hidden" name="version" value=(s.version);
                textarea name="definition" rows="14" cols="90" spellcheck="false" {
                    (serde_json::to_string_pretty(&s.definition).unwrap_or_default())
                }
                br;
                input name="reason" placeholder="reason"; " " button { "Save" }
            }
        }
        section {
            form method="post" action={ (base) "/segments/" (seg(&key)) "/delete" }
                data-confirm={ "Delete segment " (key) "?" } {
                (visitor.csrf_field())
                input name="reason" placeholder="reason"; " " button.danger { "Delete" }
            }
        }
    };
    visitor.page(&key, body)
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
    if let Err(e) = admin.check_segment_policy(&visitor.caller, key).await {
        return visitor.fail(e);
    }
    match admin.put_segment(key, definition, expected, (&visitor.caller.name, reason)).await {
        Ok(_) => Redirect::to(&format!("{}/segments/{}", visitor.base, seg(key))).into_response(),
        Err(e) => visitor.fail(e),
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
    if let Err(e) = admin.check_segment_policy(&visitor.caller, &key).await {
        return visitor.fail(e);
    }
    match admin.store().delete_segment(&key, (&visitor.caller.name, reason)).await {
        Ok(_) => Redirect::to(&format!("{}/segments", visitor.base)).into_response(),
        Err(e) => visitor.fail(e.into()),
    }
}
