//! Every route of the admin, with who may use it. The router is built only from
//! here, and the same list is public ([`Admin::routes`]), so the attack suite tests
//! every route, and a new one cannot be added without saying who may use it.

use axum::Router;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, on};
use ff_store::Role;

use crate::{Admin, api, ofrep, page, requests, webhooks};

/// Who may use a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: the login form and the page's stylesheet and script.
    Public,
    /// A page session (cookie) of at least this role; posts also need its CSRF token.
    Session(Role),
    /// An API token (`Authorization: Bearer` or `X-API-Key`) of at least this role.
    Token(Role),
}

/// One route: method, path (under the admin's mount point) and who may use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Its method.
    pub method: Method,
    /// Its path, with `{name}` for path parameters.
    pub path: &'static str,
    /// Who may use it.
    pub access: Access,
}

/// Collects routes and their table together.
struct Routes {
    router: Router<Admin>,
    table: Vec<Route>,
}

impl Routes {
    fn add<H, T>(mut self, method: Method, path: &'static str, access: Access, handler: H) -> Self
    where
        H: Handler<T, Admin>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).unwrap_or(MethodFilter::GET);
        self.router = self.router.route(path, on(filter, handler));
        self.table.push(Route { method, path, access });
        self
    }
}

/// The admin's routes and their table.
pub(crate) fn build() -> (Router<Admin>, Vec<Route>) {
    use Access::{Public, Session, Token};
    use Role::{Admin as A, Editor as E, Viewer as V};
    let (get, post, put, patch, delete) =
        (Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE);
    let r = Routes { router: Router::new(), table: Vec::new() }
        .add(get.clone(), "/page.css", Public, page::stylesheet)
        .add(get.clone(), "/page.js", Public, page::script)
        .add(get.clone(), "/login", Public, page::login_page)
        .add(post.clone(), "/login", Public, page::login)
        .add(post.clone(), "/logout", Session(V), page::logout)
        .add(get.clone(), "/", Session(V), page::list)
        .add(get.clone(), "/users", Session(V), page::user_page)
        .add(get.clone(), "/stale", Session(V), page::stale_page)
        .add(get.clone(), "/segments", Session(V), page::segments_page)
        .add(post.clone(), "/segments", Session(E), page::save_segment)
        .add(get.clone(), "/segments/{key}", Session(V), page::segment_page)
        .add(post.clone(), "/segments/{key}/delete", Session(E), page::delete_segment)
        .add(get.clone(), "/flags/{key}", Session(V), page::flag_page)
        .add(post.clone(), "/flags/{key}/switch", Session(E), page::switch)
        .add(post.clone(), "/flags/{key}/value", Session(E), page::set_value)
        .add(post.clone(), "/flags/{key}/targeting", Session(E), page::set_targeting)
        .add(post.clone(), "/flags/{key}/preview", Session(V), page::preview_targeting)
        .add(post.clone(), "/flags/{key}/approval", Session(E), page::set_approval)
        .add(post.clone(), "/flags/{key}/overrides", Session(E), page::add_override)
        .add(post.clone(), "/flags/{key}/overrides/remove", Session(E), page::remove_override)
        .add(post.clone(), "/changes/{seq}/revert", Session(E), page::revert)
        .add(get.clone(), "/requests", Session(V), page::requests_page)
        .add(get.clone(), "/requests/{id}", Session(V), page::request_page)
        .add(post.clone(), "/requests/{id}/{verb}", Session(E), page::decide_request)
        .add(get.clone(), "/webhooks", Session(A), page::webhooks_page)
        .add(post.clone(), "/webhooks", Session(A), page::add_webhook)
        .add(post.clone(), "/webhooks/{id}/delete", Session(A), page::delete_webhook)
        .add(get.clone(), "/api/flags", Token(V), api::list_flags)
        .add(post.clone(), "/api/batch", Token(E), api::batch)
        .add(get.clone(), "/api/flags/{key}", Token(V), api::get_flag)
        .add(get.clone(), "/api/flags/{key}/guard", Token(V), api::guard)
        .add(post.clone(), "/api/flags/{key}/preview", Token(V), api::preview)
        .add(patch, "/api/flags/{key}", Token(E), api::patch_flag)
        .add(put.clone(), "/api/flags/{key}", Token(E), api::create_flag)
        .add(delete.clone(), "/api/flags/{key}", Token(E), api::archive_flag)
        .add(post.clone(), "/api/flags/{key}/restore", Token(E), api::restore_flag)
        .add(put.clone(), "/api/flags/{key}/overrides/{user_id}", Token(E), api::set_override)
        .add(delete.clone(), "/api/flags/{key}/overrides/{user_id}", Token(E), api::delete_override)
        .add(get.clone(), "/api/users/{user_id}", Token(V), api::user_lookup)
        .add(get.clone(), "/api/stale", Token(V), api::stale)
        .add(get.clone(), "/api/usage", Token(V), api::usage)
        .add(get.clone(), "/api/requests", Token(V), requests::list)
        .add(post.clone(), "/api/requests", Token(E), requests::create)
        .add(get.clone(), "/api/requests/{id}", Token(V), requests::get)
        .add(put.clone(), "/api/requests/{id}", Token(E), requests::edit)
        .add(post.clone(), "/api/requests/{id}/approve", Token(E), requests::approve)
        .add(post.clone(), "/api/requests/{id}/reject", Token(E), requests::reject)
        .add(post.clone(), "/api/requests/{id}/rebase", Token(E), requests::rebase)
        .add(get.clone(), "/api/changes", Token(V), api::changes)
        .add(post.clone(), "/api/changes/{seq}/revert", Token(E), api::revert)
        .add(get.clone(), "/api/export", Token(V), api::export)
        .add(get.clone(), "/api/segments", Token(V), api::list_segments)
        .add(get.clone(), "/api/segments/{key}", Token(V), api::get_segment)
        .add(put, "/api/segments/{key}", Token(E), api::put_segment)
        .add(delete.clone(), "/api/segments/{key}", Token(E), api::delete_segment)
        .add(get.clone(), "/api/webhooks", Token(A), webhooks::list)
        .add(post.clone(), "/api/webhooks", Token(A), webhooks::create)
        .add(delete.clone(), "/api/webhooks/{id}", Token(A), webhooks::remove)
        .add(get.clone(), "/api/tokens", Token(A), api::list_tokens)
        .add(post.clone(), "/api/tokens", Token(A), api::create_token)
        .add(delete, "/api/tokens/{name}", Token(A), api::revoke_token)
        .add(post.clone(), "/ofrep/v1/evaluate/flags/{key}", Token(V), ofrep::evaluate)
        .add(post, "/ofrep/v1/evaluate/flags", Token(V), ofrep::evaluate_all)
        .add(get, "/ofrep/v1/configuration", Token(V), ofrep::configuration);
    (r.router, r.table)
}
