//! Attacks on the admin, each refused: sessions that outlive their token, weak and
//! reserved tokens, oversized free text, framing and sniffing (headers), cookies that
//! leak beyond the admin or over plain HTTP.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use ff_admin::Admin;
use ff_core::Flag;
use ff_store::{FlagReader, Role, SqlStore, TokenStore, sync};
use http_body_util::BodyExt;
use tower::ServiceExt;

static KILL: Flag<bool> = Flag::new("KILL", true);

struct Reply {
    status: u16,
    headers: http::HeaderMap,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
    }

    /// The `name=value` of the first cookie set.
    fn cookie(&self) -> String {
        self.header("set-cookie").split(';').next().unwrap().to_owned()
    }
}

async fn send(
    app: &Router,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> Reply {
    let mut req = http::Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(body.map(Body::from).unwrap_or_else(Body::empty)).unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let (status, headers) = (res.status().as_u16(), res.headers().clone());
    let body = String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    Reply { status, headers, body }
}

struct Fixture {
    store: Arc<SqlStore>,
    admin_token: String,
    editor: String,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("ff.db").display());
    let store = Arc::new(SqlStore::connect(&url).await.unwrap());
    sync(&*store, &[KILL.decl()], &Default::default()).await.unwrap();
    let (_, admin_token) = ff_admin::create_token(&*store, "root", Role::Admin, "test", None).await.unwrap();
    let (_, editor) = ff_admin::create_token(&*store, "ed", Role::Editor, "test", None).await.unwrap();
    Fixture { store, admin_token, editor, _dir: dir }
}

fn app(admin: Admin) -> Router {
    Router::new().nest("/admin", admin.router())
}

/// Logs in through the form as a browser does; returns the session cookie and CSRF token.
async fn login(app: &Router, token: &str, extra: &[(&str, &str)]) -> (Reply, String, String) {
    let form = send(app, "GET", "/admin/login", extra, None).await;
    let login_cookie = form.cookie();
    let csrf = login_cookie.split_once('=').unwrap().1.to_owned();
    let mut headers =
        vec![("cookie", login_cookie.as_str()), ("content-type", "application/x-www-form-urlencoded")];
    headers.extend_from_slice(extra);
    let r = send(app, "POST", "/admin/login", &headers, Some(format!("token={token}&csrf={csrf}"))).await;
    assert_eq!(r.status, 303, "{}", r.body);
    let session = r.cookie();
    let page = send(app, "GET", "/admin", &[("cookie", &session)], None).await;
    let csrf =
        page.body.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    (r, session, csrf)
}

fn switch_off(csrf: &str) -> Option<String> {
    Some(format!("csrf={csrf}&enabled=false&version=1&reason=x"))
}

#[tokio::test]
async fn revoking_a_token_ends_its_page_sessions_here_and_on_other_instances() {
    let f = fixture().await;
    let here = app(Admin::new(f.store.clone()));
    // Another instance over the same store, reading tokens without a cache.
    let there = app(Admin::new(f.store.clone()).token_cache_ttl(std::time::Duration::ZERO));
    let (_, session_here, csrf_here) = login(&here, &f.editor, &[]).await;
    let (_, session_there, csrf_there) = login(&there, &f.editor, &[]).await;
    let bearer = format!("Bearer {}", f.admin_token);
    let revoked = send(&here, "DELETE", "/admin/api/tokens/ed", &[("authorization", &bearer)], None).await;
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    for (app, session, csrf) in [(&here, &session_here, &csrf_here), (&there, &session_there, &csrf_there)] {
        let form = [("cookie", session.as_str()), ("content-type", "application/x-www-form-urlencoded")];
        let r = send(app, "POST", "/admin/flags/KILL/switch", &form, switch_off(csrf)).await;
        assert_eq!((r.status, r.header("location")), (303, "/admin/login"), "{}", r.body);
        let page = send(app, "GET", "/admin", &[("cookie", session)], None).await;
        assert_eq!((page.status, page.header("location")), (303, "/admin/login"));
    }
    assert!(f.store.flag("KILL").await.unwrap().unwrap().enabled, "nothing was switched");
}

#[tokio::test]
async fn a_live_session_switches_and_logging_out_ends_it() {
    let f = fixture().await;
    let app = app(Admin::new(f.store.clone()));
    let (_, session, csrf) = login(&app, &f.editor, &[]).await;
    let form = [("cookie", session.as_str()), ("content-type", "application/x-www-form-urlencoded")];
    let r = send(&app, "POST", "/admin/flags/KILL/switch", &form, switch_off(&csrf)).await;
    assert_eq!((r.status, r.header("location")), (303, "/admin/flags/KILL"), "{}", r.body);
    assert!(!f.store.flag("KILL").await.unwrap().unwrap().enabled);
    let out = send(&app, "POST", "/admin/logout", &form, Some(format!("csrf={csrf}"))).await;
    assert_eq!(out.status, 303);
    assert!(out.header("set-cookie").contains("Max-Age=0"));
    let page = send(&app, "GET", "/admin", &[("cookie", &session)], None).await;
    assert_eq!(page.header("location"), "/admin/login");
}

#[tokio::test]
async fn cookies_stay_on_the_admin_path_and_are_secure_over_https() {
    let f = fixture().await;
    let plain = app(Admin::new(f.store.clone()));
    let (r, _, _) = login(&plain, &f.editor, &[]).await;
    let set = r.header("set-cookie");
    assert!(set.contains("; HttpOnly; SameSite=Strict; Path=/admin;") && !set.contains("Secure"), "{set}");
    let (r, _, _) = login(&plain, &f.editor, &[("x-forwarded-proto", "https")]).await;
    assert!(r.header("set-cookie").ends_with("; Secure"), "{}", r.header("set-cookie"));
    let configured = app(Admin::new(f.store.clone()).secure_cookies(true));
    let form = send(&configured, "GET", "/admin/login", &[], None).await;
    assert!(
        form.header("set-cookie").contains("Path=/admin;") && form.header("set-cookie").ends_with("; Secure")
    );
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let f = fixture().await;
    let app = app(Admin::new(f.store.clone()));
    let bearer = format!("Bearer {}", f.editor);
    let (_, session, _) = login(&app, &f.editor, &[]).await;
    let ofrep = [("authorization", bearer.as_str()), ("content-type", "application/json")];
    let answers = [
        send(&app, "GET", "/admin/login", &[], None).await,
        send(&app, "GET", "/admin", &[("cookie", &session)], None).await,
        send(&app, "GET", "/admin", &[], None).await,
        send(&app, "GET", "/admin/api/flags", &[("authorization", &bearer)], None).await,
        send(&app, "GET", "/admin/api/flags", &[], None).await,
        send(&app, "GET", "/admin/no/such/route", &[], None).await,
        send(&app, "POST", "/admin/ofrep/v1/evaluate/flags/KILL", &ofrep, Some("{}".into())).await,
    ];
    for r in &answers {
        let csp = r.header("content-security-policy");
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(r.header("x-frame-options"), "DENY");
        assert_eq!(r.header("x-content-type-options"), "nosniff");
        assert_eq!(r.header("referrer-policy"), "no-referrer");
        assert_eq!(r.header("cache-control"), "no-store");
    }
    // The page inlines neither script nor style: both are served from the binary.
    let page = &answers[1].body;
    assert!(!page.contains("<style") && !page.contains("style=\"") && !page.contains("onsubmit"), "{page}");
    let css = send(&app, "GET", "/admin/page.css", &[], None).await;
    assert_eq!((css.status, css.header("content-type")), (200, "text/css; charset=utf-8"));
    let js = send(&app, "GET", "/admin/page.js", &[], None).await;
    assert_eq!((js.status, js.header("content-type")), (200, "text/javascript; charset=utf-8"));
    assert!(js.body.contains("data-confirm") && js.header("cache-control").starts_with("public"));
}

#[test]
fn a_short_environment_token_is_refused_at_start() {
    let store = Arc::new(ff_store::MemoryStore::new());
    let err = Admin::new(store.clone()).env_admin_token(Some("a".into())).unwrap_err();
    assert_eq!(err.len, 1);
    assert!(err.to_string().contains("at least 32"), "{err}");
    let short = "x".repeat(31);
    assert!(Admin::new(store.clone()).env_admin_token(Some(short)).is_err());
    assert!(Admin::new(store.clone()).env_admin_token(Some("x".repeat(32))).is_ok());
    assert!(Admin::new(store).env_admin_token(Some("  ".into())).is_ok(), "blank: no env token");
}

#[tokio::test]
async fn tokens_cannot_take_the_systems_names_and_reasons_are_capped_everywhere() {
    let f = fixture().await;
    let app = app(Admin::new(f.store.clone()));
    let bearer = format!("Bearer {}", f.admin_token);
    let json = [("authorization", bearer.as_str()), ("content-type", "application/json")];
    for name in ["env-admin", "ff-sync", "ff-cli", "ff-guard", "FF-anything"] {
        let body = serde_json::json!({ "name": name, "role": "admin" }).to_string();
        let r = send(&app, "POST", "/admin/api/tokens", &json, Some(body)).await;
        assert_eq!(r.status, 422, "{name}: {}", r.body);
        assert!(r.body.contains("reserved for the system"), "{}", r.body);
    }
    let long = "x".repeat(ff_core::MAX_TEXT_BYTES + 1);
    let body = serde_json::json!({ "name": "bot", "role": "viewer", "reason": long }).to_string();
    let r = send(&app, "POST", "/admin/api/tokens", &json, Some(body)).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("reason is longer than 1024 bytes"), "{}", r.body);
    // The page's forms too: refused, nothing written.
    let (_, session, csrf) = login(&app, &f.editor, &[]).await;
    let form = [("cookie", session.as_str()), ("content-type", "application/x-www-form-urlencoded")];
    let body = format!("csrf={csrf}&enabled=false&version=1&reason={long}");
    let r = send(&app, "POST", "/admin/flags/KILL/switch", &form, Some(body)).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("reason is longer than 1024 bytes"));
    assert!(f.store.flag("KILL").await.unwrap().unwrap().enabled);
    let tokens = f.store.tokens().await.unwrap();
    assert_eq!(tokens.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["ed", "root"]);
}

#[tokio::test]
async fn a_failing_store_tells_an_unknown_caller_nothing_about_itself() {
    let store = Arc::new(SqlStore::connect_lazy("sqlite:///nonexistent-dir/for/sure/ff.db").unwrap());
    let app = app(Admin::new(store));
    let forged = "Bearer ff_0123456789ab_forged";
    for r in [
        send(&app, "GET", "/admin/api/flags", &[("authorization", forged)], None).await,
        send(&app, "POST", "/admin/ofrep/v1/evaluate/flags", &[("authorization", forged)], None).await,
    ] {
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(r.body.contains("request id"), "{}", r.body);
        for internal in ["sqlite", "nonexistent", "database", "unable to open"] {
            assert!(!r.body.to_lowercase().contains(internal), "{internal}: {}", r.body);
        }
    }
}

#[tokio::test]
async fn ofrep_refusals_come_in_ofreps_shape() {
    let f = fixture().await;
    let app = app(Admin::new(f.store.clone()));
    let bearer = format!("Bearer {}", f.editor);
    let huge = format!("{{\"context\": {{\"pad\": \"{}\"}}}}", "x".repeat(ff_admin::MAX_BODY_BYTES));
    for (path, headers, body, status) in [
        ("/admin/ofrep/v1/evaluate/flags/KILL", vec![], None, 401),
        ("/admin/ofrep/v1/evaluate/flags", vec![("authorization", "Bearer nope")], None, 401),
        (
            "/admin/ofrep/v1/evaluate/flags/KILL",
            vec![("authorization", bearer.as_str())],
            Some(huge.clone()),
            413,
        ),
        ("/admin/ofrep/v1/evaluate/flags", vec![("authorization", bearer.as_str())], Some(huge), 413),
    ] {
        let r = send(&app, "POST", path, &headers, body).await;
        assert_eq!(r.status, status, "{path}: {}", r.body);
        let v: serde_json::Value =
            serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body));
        assert_eq!(v["errorCode"], "GENERAL", "{}", r.body);
        assert!(v["errorDetails"].as_str().is_some_and(|d| !d.is_empty()), "{}", r.body);
    }
    let config = send(&app, "GET", "/admin/ofrep/v1/configuration", &[], None).await;
    assert_eq!(config.status, 401);
    assert!(config.body.contains("\"errorCode\":\"GENERAL\""), "{}", config.body);
}

/// Targeting with `n` distinct patterns of about 22 KB compiled each.
fn patterns(n: usize, tag: &str) -> serde_json::Value {
    let values: Vec<String> = (0..n).map(|i| format!("^{tag}{i}-\\d{{4}}$")).collect();
    serde_json::json!({ "targeting": { "rules": [{
        "clauses": [{ "attribute": "email", "op": "matches", "values": values }], "value": false
    }] } })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regexes_are_held_to_a_budget_per_flag_and_per_snapshot() {
    let f = fixture().await;
    let strict = Admin::new(f.store.clone()).regex_budget(1 << 20);
    let app = app(strict);
    let bearer = format!("Bearer {}", f.editor);
    let headers =
        [("authorization", bearer.as_str()), ("content-type", "application/json"), ("if-match", "\"1\"")];
    let patch = |body: serde_json::Value| {
        send(&app, "PATCH", "/admin/api/flags/KILL", &headers, Some(body.to_string()))
    };
    // One flag: at most 4 MiB of compiled regexes, refused at write time naming the budget.
    let over = patch(patterns(1000, "a")).await;
    assert_eq!(over.status, 422, "{}", over.body);
    assert!(over.body.contains("the regex budget of one flag or segment"), "{}", over.body);
    // The snapshot (here 1 MiB): refused past it, naming it.
    let over = patch(patterns(60, "b")).await;
    assert_eq!(over.status, 422, "{}", over.body);
    assert!(over.body.contains("snapshot's regex budget of 1048576 bytes"), "{}", over.body);
    let within = patch(patterns(20, "c")).await;
    assert_eq!(within.status, 200, "{}", within.body);
    assert_eq!(f.store.flag("KILL").await.unwrap().unwrap().targeting.rules[0].clauses[0].values.len(), 20);
}

async fn send_from(app: &Router, from: [u8; 4], path: &str, token: &str) -> Reply {
    let addr = std::net::SocketAddr::from((from, 40000));
    let mut req = http::Request::builder().uri(path).header("authorization", format!("Bearer {token}"));
    req.extensions_mut().unwrap().insert(axum::extract::ConnectInfo(addr));
    let res = app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let (status, headers) = (res.status().as_u16(), res.headers().clone());
    let body = String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    Reply { status, headers, body }
}

#[tokio::test]
async fn failed_authentications_are_throttled_per_address_and_valid_tokens_are_not() {
    let f = fixture().await;
    let app = app(Admin::new(f.store.clone()));
    let (attacker, neighbour) = ([10, 0, 0, 1], [10, 0, 0, 2]);
    // The editor's token is in use from the attacker's address (a shared NAT, say).
    assert_eq!(send_from(&app, attacker, "/admin/api/flags", &f.editor).await.status, 200);
    for i in 0..ff_admin::MAX_FAILURES {
        let forged = format!("ff_{i:012x}_{}", "0".repeat(64));
        assert_eq!(send_from(&app, attacker, "/admin/api/flags", &forged).await.status, 401, "{i}");
    }
    let forged = format!("ff_{:012x}_{}", 999, "0".repeat(64));
    let r = send_from(&app, attacker, "/admin/api/flags", &forged).await;
    assert_eq!(r.status, 429, "{}", r.body);
    let retry: u64 = r.header("retry-after").parse().unwrap();
    assert!((1..=ff_admin::THROTTLE_WINDOW.as_secs() + 1).contains(&retry), "{retry}");
    assert!(r.body.contains("too many failed authentications"), "{}", r.body);
    // A valid token in use is not slowed; another address is not throttled.
    assert_eq!(send_from(&app, attacker, "/admin/api/flags", &f.editor).await.status, 200);
    assert_eq!(send_from(&app, neighbour, "/admin/api/flags", &forged).await.status, 401);
    assert_eq!(send_from(&app, neighbour, "/admin/api/flags", &f.admin_token).await.status, 200);
}

/// A route's address under `/admin`, with its parameters filled in.
fn concrete(path: &str) -> String {
    let path = path
        .replace("{key}", "NOPE")
        .replace("{user_id}", "u1")
        .replace("{seq}", "999999")
        .replace("{id}", "999999")
        .replace("{name}", "nobody");
    if path == "/" { "/admin".into() } else { format!("/admin{path}") }
}

async fn call(app: &Router, method: &http::Method, path: &str, headers: &[(&str, &str)], n: u32) -> Reply {
    // Each from its own address: the throttle of failed authentications stays out of it.
    let addr = std::net::SocketAddr::from(([10, 1, (n >> 8) as u8, n as u8], 40000));
    let mut req = http::Request::builder().method(method).uri(concrete(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.extensions_mut().unwrap().insert(axum::extract::ConnectInfo(addr));
    let res = app.clone().oneshot(req.body(Body::from("{}")).unwrap()).await.unwrap();
    let (status, headers) = (res.status().as_u16(), res.headers().clone());
    let body = String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    Reply { status, headers, body }
}

/// Every route the admin serves, from its own table: nobody gets in without the
/// credential and role the table names, and nothing is written by those refused.
#[tokio::test]
async fn every_route_refuses_whoever_it_does_not_admit() {
    use ff_admin::Access;
    let f = fixture().await;
    let (_, viewer) = ff_admin::create_token(&*f.store, "vi", Role::Viewer, "test", None).await.unwrap();
    let app = app(Admin::new(f.store.clone()));
    let (_, viewer_session, viewer_csrf) = login(&app, &viewer, &[]).await;
    let (_, editor_session, _) = login(&app, &f.editor, &[]).await;
    let mut seq = f.store.latest_seq().await.unwrap();
    let tokens = [
        (Role::Viewer, viewer.clone()),
        (Role::Editor, f.editor.clone()),
        (Role::Admin, f.admin_token.clone()),
    ];
    let forged = format!("ff_{:012x}_{}", 7, "0".repeat(64));
    let routes = Admin::routes();
    assert!(routes.len() >= 40, "{} routes", routes.len());
    let mut n = 0;
    for route in &routes {
        let (m, p) = (&route.method, route.path);
        n += 1;
        match route.access {
            Access::Public => {
                let r = call(&app, m, p, &[], n).await;
                // The login post without its form and CSRF cookie is refused, not served.
                let login_refused = p == "/login" && [403, 415].contains(&r.status);
                assert!(r.status == 200 || login_refused, "{m} {p}: {}", r.status);
            }
            Access::Token(needed) => {
                assert_eq!(call(&app, m, p, &[], n).await.status, 401, "{m} {p} without a token");
                let bad = format!("Bearer {forged}");
                assert_eq!(
                    call(&app, m, p, &[("authorization", &bad)], n).await.status,
                    401,
                    "{m} {p} forged"
                );
                for (role, token) in &tokens {
                    let auth = format!("Bearer {token}");
                    let r = call(
                        &app,
                        m,
                        p,
                        &[("authorization", &auth), ("content-type", "application/json")],
                        n,
                    )
                    .await;
                    if *role < needed {
                        assert_eq!(r.status, 403, "{m} {p} as {role:?}: {}", r.body);
                        assert_eq!(f.store.latest_seq().await.unwrap(), seq, "{m} {p} as {role:?} wrote");
                    } else {
                        assert!(![401, 403].contains(&r.status), "{m} {p} as {role:?}: {}", r.status);
                        // Let in: it may write (a segment put creates one); later refusals may not.
                        seq = f.store.latest_seq().await.unwrap();
                    }
                }
            }
            Access::Session(needed) => {
                let r = call(&app, m, p, &[], n).await;
                assert_eq!(
                    (r.status, r.header("location")),
                    (303, "/admin/login"),
                    "{m} {p} without a session"
                );
                if m == http::Method::POST {
                    let form = "application/x-www-form-urlencoded";
                    // Another session's form (a forged CSRF token) is refused.
                    let cookie = [("cookie", editor_session.as_str()), ("content-type", form)];
                    let r = call_form(&app, p, &cookie, &every_field(&viewer_csrf)).await;
                    assert_eq!(r.status, 403, "{m} {p} with another session's CSRF token: {}", r.body);
                    if needed > Role::Viewer {
                        let cookie = [("cookie", viewer_session.as_str()), ("content-type", form)];
                        let r = call_form(&app, p, &cookie, &every_field(&viewer_csrf)).await;
                        assert_eq!(r.status, 403, "{m} {p} as a viewer: {}", r.body);
                    }
                }
            }
        }
    }
    assert_eq!(f.store.latest_seq().await.unwrap(), seq, "refused requests wrote nothing");
}

/// A form with every field any page form takes, so each reaches its checks.
fn every_field(csrf: &str) -> String {
    format!(
        "csrf={csrf}&key=KILL&enabled=false&version=1&value=1&targeting=%7B%7D&user_id=u1&definition=%7B%7D&reason=x"
    )
}

async fn call_form(app: &Router, path: &str, headers: &[(&str, &str)], form: &str) -> Reply {
    let mut req = http::Request::builder().method("POST").uri(concrete(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = app.clone().oneshot(req.body(Body::from(form.to_owned())).unwrap()).await.unwrap();
    let (status, headers) = (res.status().as_u16(), res.headers().clone());
    let body = String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    Reply { status, headers, body }
}

/// Hostile text in every field an editor or a client controls is shown as text on
/// every page the admin serves (the GET routes of its table).
#[tokio::test]
async fn every_page_escapes_hostile_text() {
    use ff_store::{FlagPatch, FlagWriter, Mutation, Write};
    let f = fixture().await;
    let evil = "<script>alert(1)</script>";
    let evil_id = "<img src=x onerror=alert(1)>";
    let patch =
        FlagPatch { description: Some(evil.into()), owner: Some(evil.into()), ..FlagPatch::default() };
    let w = |m| Write::new("test", m).reason(evil);
    f.store
        .write(w(Mutation::UpdateFlag { key: "KILL".into(), patch, expected_version: None }))
        .await
        .unwrap();
    f.store.write(w(Mutation::set_override("KILL", evil_id, false))).await.unwrap();
    let def =
        serde_json::from_value(serde_json::json!({ "description": evil, "included": [evil_id] })).unwrap();
    f.store.put_segment("evil", def, None, ("test", Some(evil))).await.unwrap();
    // A change request whose every text is hostile.
    let request = ff_api::ChangeRequest {
        id: 1,
        key: "KILL".into(),
        changes: vec![ff_api::BatchOp::SetOverride {
            key: "KILL".into(),
            user_id: evil_id.into(),
            value: serde_json::json!(evil),
        }],
        base: [("KILL".to_owned(), 1)].into(),
        author: evil.into(),
        reason: Some(evil.into()),
        created_at: time::OffsetDateTime::now_utc(),
        apply_at: None,
        needs_approval: true,
        approvals: vec![ff_api::Approval { by: evil.into(), at: time::OffsetDateTime::now_utc() }],
        status: ff_api::RequestStatus::Rejected,
        decision: Some(ff_api::Decision {
            by: evil.into(),
            at: time::OffsetDateTime::now_utc(),
            reason: Some(evil.into()),
        }),
        revision: 1,
        version: 0,
    };
    let put = ff_store::RequestPut { id: 1, key: "KILL".into(), body: request.body(), expected_version: 0 };
    f.store.write_batch(ff_store::Batch::new("test", vec![]).request(put)).await.unwrap();
    let app = app(Admin::new(f.store.clone()));
    // A webhook whose URL is hostile (a URL may hold any of it in its query).
    let auth = format!("Bearer {}", f.admin_token);
    let hook = serde_json::json!({ "url": format!("http://example.com/?q={evil}") }).to_string();
    let made = send(
        &app,
        "POST",
        "/admin/api/webhooks",
        &[("authorization", &auth), ("content-type", "application/json")],
        Some(hook),
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.body);
    let (_, session, _) = login(&app, &f.editor, &[]).await;
    let (_, admin_session, _) = login(&app, &f.admin_token, &[]).await;
    let pages: Vec<_> = Admin::routes()
        .into_iter()
        .filter(|r| r.method == http::Method::GET && matches!(r.access, ff_admin::Access::Session(_)))
        .collect();
    assert!(pages.len() >= 6);
    for route in pages {
        let path = match route.path {
            "/" => "/admin".to_owned(),
            "/users" => "/admin/users?user=%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E".to_owned(),
            p => format!(
                "/admin{}",
                p.replace("{key}", if p.starts_with("/segments") { "evil" } else { "KILL" })
                    .replace("{id}", "1")
            ),
        };
        let cookie =
            if route.access == ff_admin::Access::Session(Role::Admin) { &admin_session } else { &session };
        let r = send(&app, "GET", &path, &[("cookie", cookie)], None).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert!(!r.body.contains(evil) && !r.body.contains(evil_id), "{path} shows raw markup: {}", r.body);
        if ["/flags/{key}", "/segments/{key}", "/requests/{id}", "/requests", "/webhooks"]
            .contains(&route.path)
        {
            assert!(r.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{path} shows it as text");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_racing_flood_is_throttled_and_real_tokens_from_the_address_keep_working() {
    let f = fixture().await;
    // No cache: every check would read the store.
    let app = app(Admin::new(f.store.clone()).token_cache_ttl(std::time::Duration::ZERO));
    let from = [10, 9, 9, 9];
    assert_eq!(send_from(&app, from, "/admin/api/flags", &f.editor).await.status, 200);
    let flood = (0..100).map(|i| {
        let app = app.clone();
        tokio::spawn(async move {
            let forged = format!("ff_{i:012x}_{}", "0".repeat(64));
            send_from(&app, from, "/admin/api/flags", &forged).await.status
        })
    });
    let mut statuses = Vec::new();
    for t in flood {
        statuses.push(t.await.unwrap());
    }
    let let_through = statuses.iter().filter(|s| **s == 401).count();
    assert!(let_through <= ff_admin::MAX_FAILURES as usize, "{let_through} forged checks reached the store");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 100 - let_through);
    // A token this admin has seen valid is still read and admitted; one it has not, waits.
    assert_eq!(send_from(&app, from, "/admin/api/flags", &f.editor).await.status, 200);
    assert_eq!(send_from(&app, from, "/admin/api/flags", &f.admin_token).await.status, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_or_a_restore_cannot_slip_past_the_snapshot_regex_budget() {
    let f = fixture().await;
    let app = app(Admin::new(f.store.clone()).regex_budget(1 << 20));
    let bearer = format!("Bearer {}", f.editor);
    let json = [("authorization", bearer.as_str()), ("content-type", "application/json")];
    let targeting = |tag: &str| patterns(20, tag)["targeting"].clone();
    // Created bare and given regexes later in the same batch: counted all the same.
    let mut changes = Vec::new();
    for i in 0..4 {
        changes.push(
            serde_json::json!({ "op": "create", "key": format!("B{i}"), "type": "bool", "value": false }),
        );
        changes.push(serde_json::json!({ "op": "update", "key": format!("B{i}"), "targeting": targeting(&format!("b{i}")) }));
    }
    let body = serde_json::json!({ "changes": changes }).to_string();
    let r = send(&app, "POST", "/admin/api/batch", &json, Some(body)).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("snapshot's regex budget"), "{}", r.body);
    // Archived flags free their share; restoring one takes it back, and is checked.
    let create = |key: &str, tag: &str| serde_json::json!({ "op": "create", "key": key, "type": "bool", "value": false, "targeting": targeting(tag) });
    let body = serde_json::json!({ "changes": [create("R1", "r1"), create("R2", "r2")] }).to_string();
    assert_eq!(send(&app, "POST", "/admin/api/batch", &json, Some(body)).await.status, 200);
    let archive = serde_json::json!({ "changes": [{ "op": "archive", "key": "R1" }] }).to_string();
    assert_eq!(send(&app, "POST", "/admin/api/batch", &json, Some(archive)).await.status, 200);
    let body = serde_json::json!({ "changes": [create("R3", "r3")] }).to_string();
    assert_eq!(send(&app, "POST", "/admin/api/batch", &json, Some(body)).await.status, 200);
    let restore = send(&app, "POST", "/admin/api/flags/R1/restore", &json, Some("{}".into())).await;
    assert_eq!(restore.status, 422, "{}", restore.body);
    assert!(restore.body.contains("snapshot's regex budget"), "{}", restore.body);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_throttle_keys_on_the_client_the_proxy_saw() {
    let f = fixture().await;
    let app = app(Admin::new(f.store.clone()).trusted_proxies(1));
    let proxy = std::net::SocketAddr::from(([10, 0, 0, 1], 40000));
    let call = |forwarded: &'static str, token: String| {
        let app = app.clone();
        async move {
            let mut req = http::Request::builder()
                .uri("/admin/api/flags")
                .header("authorization", format!("Bearer {token}"))
                .header("x-forwarded-for", forwarded);
            req.extensions_mut().unwrap().insert(axum::extract::ConnectInfo(proxy));
            app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap().status().as_u16()
        }
    };
    let forged = |i: u32| format!("ff_{i:012x}_{}", "0".repeat(64));
    // The attacker writes whatever it likes on the left; the proxy appends what it saw.
    for i in 0..ff_admin::MAX_FAILURES {
        let spoof: &'static str = Box::leak(format!("9.9.9.{}, 1.2.3.4", i % 250).into_boxed_str());
        assert_eq!(call(spoof, forged(i)).await, 401);
    }
    assert_eq!(call("1.2.3.4", forged(99)).await, 429, "the client the proxy saw is throttled");
    assert_eq!(call("5.6.7.8", forged(100)).await, 401, "another client behind the same proxy is not");
    assert_eq!(call("5.6.7.8", f.editor.clone()).await, 200);
}
