//! The admin web page: server-rendered HTML (maud templates), a stylesheet and a few
//! lines of JavaScript served from the binary, no build step, no inline script.
//!
//! Log in with an API token; the page then uses an HttpOnly, SameSite=Strict
//! session cookie, and every form carries the session's CSRF token.
//!
//! One module per resource; they all sit on `layout` (frame, fragments) and `session`
//! (the session store and the `Visitor` extractor). This module only re-exports.

mod flag;
mod flags;
mod layout;
mod login;
mod requests;
mod segments;
mod session;
mod users;
mod webhooks;

pub(crate) use flag::{
    add_override, flag_page, preview_targeting, remove_override, revert, set_targeting, set_value, switch,
};
pub(crate) use flags::{list, stale_page};
pub(crate) use layout::{script, stylesheet};
pub(crate) use login::{login, login_page, logout};
pub(crate) use requests::{decide as decide_request, request_page, requests_page, set_approval};
pub(crate) use segments::{delete_segment, save_segment, segment_page, segments_page};
pub(crate) use session::{Sessions, random_hex};
pub(crate) use users::user_page;
pub(crate) use webhooks::{add_webhook, delete_webhook, webhooks_page};
