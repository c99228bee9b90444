//! The admin web page over HTTP: login, session cookie, CSRF, escaping, forms.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use ff_admin::Admin;
use ff_core::Flag;
use ff_store::{FlagReader, FlagWriter, Mutation, Role, SqlStore, UsageStore, Write, sync};
use http_body_util::BodyExt;
use tower::ServiceExt;

#[path = "support/settings.rs"]
mod settings;
use settings::{PLAN, REMINDERS, WINDOW};

const LEAD: Flag<i64> = Flag::new("LEAD_HOURS", 24).range(0, 1000).description("Lead <b>time</b>");
const CREDITS: Flag<bool> = Flag::new("CREDITS", true);

struct Page {
    app: Router,
    store: Arc<SqlStore>,
    _dir: tempfile::TempDir,
}

struct Reply {
    status: u16,
    location: Option<String>,
    cookie: Option<String>,
    body: String,
}

impl Page {
    async fn new() -> (Page, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("ff.db").display());
        let store = Arc::new(SqlStore::connect(&url).await.unwrap());
        sync(&*store, &[LEAD.decl(), CREDITS.decl()], &Default::default()).await.unwrap();
        let (_, editor) = ff_admin::create_token(&*store, "ed", Role::Editor, "test", None).await.unwrap();
        let (_, viewer) = ff_admin::create_token(&*store, "vi", Role::Viewer, "test", None).await.unwrap();
        let app = Router::new().nest("/admin", Admin::new(store.clone()).router());
        (Page { app, store, _dir: dir }, editor, viewer)
    }

    async fn send(&self, method: &str, path: &str, cookie: Option<&str>, form: Option<&str>) -> Reply {
        let mut req = http::Request::builder().method(method).uri(path);
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        if form.is_some() {
            req = req.header("content-type", "application/x-www-form-urlencoded");
        }
        let req = req.body(form.map(|f| Body::from(f.to_owned())).unwrap_or_else(Body::empty)).unwrap();
        let res = self.app.clone().oneshot(req).await.unwrap();
        let header = |name: &str| res.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
        let (status, location, cookie) = (res.status().as_u16(), header("location"), header("set-cookie"));
        let body = String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
        Reply { status, location, cookie, body }
    }

    /// The login form's CSRF cookie and field, as a browser gets them.
    async fn login_form(&self) -> (String, String) {
        let form = self.send("GET", "/admin/login", None, None).await;
        let cookie = form.cookie.unwrap().split(';').next().unwrap().to_owned();
        let csrf =
            form.body.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
        (cookie, csrf)
    }

    /// Logs in; returns the cookie to send and the page's CSRF token.
    async fn login(&self, token: &str) -> (String, String) {
        let (login_cookie, login_csrf) = self.login_form().await;
        let form = format!("token={token}&csrf={login_csrf}");
        let r = self.send("POST", "/admin/login", Some(&login_cookie), Some(&form)).await;
        assert_eq!((r.status, r.location.as_deref()), (303, Some("/admin")));
        let set = r.cookie.unwrap();
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
        let cookie = set.split(';').next().unwrap().to_owned();
        let list = self.send("GET", "/admin", Some(&cookie), None).await;
        let csrf =
            list.body.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
        (cookie, csrf)
    }
}

#[tokio::test]
async fn login_sessions_and_csrf() {
    let (page, editor, viewer) = Page::new().await;
    // Every page needs a session.
    for path in ["/admin", "/admin/flags/LEAD_HOURS", "/admin/users?user=x"] {
        let r = page.send("GET", path, None, None).await;
        assert_eq!((r.status, r.location.as_deref()), (303, Some("/admin/login")), "{path}");
    }
    let r = page.send("GET", "/admin/login", None, None).await;
    assert!(r.body.contains("type=\"password\" name=\"token\""));
    let (login_cookie, login_csrf) = page.login_form().await;
    let bad = page
        .send(
            "POST",
            "/admin/login",
            Some(&login_cookie),
            Some(&format!("token=ff_nope_nope&csrf={login_csrf}")),
        )
        .await;
    assert_eq!(bad.status, 401);
    assert!(bad.body.contains("not valid") && !bad.cookie.unwrap().starts_with("ff_session"));
    // A login posted from elsewhere (no login cookie, or another token) is refused.
    for (cookie, form) in [
        (None, format!("token={editor}&csrf={login_csrf}")),
        (Some(login_cookie.as_str()), format!("token={editor}&csrf=forged")),
    ] {
        let r = page.send("POST", "/admin/login", cookie, Some(&form)).await;
        assert_eq!(r.status, 403);
        assert!(!r.cookie.unwrap_or_default().starts_with("ff_session"));
    }
    let forged = page.send("GET", "/admin", Some("ff_session=guessed"), None).await;
    assert_eq!(forged.status, 303);

    let (cookie, csrf) = page.login(&editor).await;
    let list = page.send("GET", "/admin", Some(&cookie), None).await;
    assert_eq!(list.status, 200);
    assert!(list.body.contains("LEAD_HOURS") && list.body.contains("CREDITS"));
    assert!(list.body.contains("Lead &lt;b&gt;time&lt;/b&gt;"), "descriptions are escaped");
    let filtered = page.send("GET", "/admin?q=lead", Some(&cookie), None).await;
    assert!(filtered.body.contains("LEAD_HOURS") && !filtered.body.contains(">CREDITS<"));

    // A form without the session's CSRF token changes nothing.
    let before = page.store.latest_seq().await.unwrap();
    for form in ["enabled=false&version=1", "csrf=wrong&enabled=false&version=1"] {
        let r = page.send("POST", "/admin/flags/CREDITS/switch", Some(&cookie), Some(form)).await;
        assert_eq!(r.status, if form.starts_with("csrf") { 403 } else { 422 }, "{form}: {}", r.body);
    }
    assert_eq!(page.store.latest_seq().await.unwrap(), before);
    let ok = page
        .send(
            "POST",
            "/admin/flags/CREDITS/switch",
            Some(&cookie),
            Some(&format!("csrf={csrf}&enabled=false&version=1&reason=incident")),
        )
        .await;
    assert_eq!((ok.status, ok.location.as_deref()), (303, Some("/admin/flags/CREDITS")));
    assert!(!page.store.flag("CREDITS").await.unwrap().unwrap().enabled);
    let log = page.store.changes_since(before, 10).await.unwrap();
    assert_eq!((log[0].actor.as_str(), log[0].reason.as_deref()), ("ed", Some("incident")));
    // The same form again carries a stale version: refused.
    let stale = page
        .send(
            "POST",
            "/admin/flags/CREDITS/switch",
            Some(&cookie),
            Some(&format!("csrf={csrf}&enabled=true&version=1")),
        )
        .await;
    assert_eq!(stale.status, 409);
    assert!(stale.body.contains("Nothing was changed"));

    // Viewers read but cannot change.
    let (vcookie, vcsrf) = page.login(&viewer).await;
    let r = page
        .send(
            "POST",
            "/admin/flags/LEAD_HOURS/value",
            Some(&vcookie),
            Some(&format!("csrf={vcsrf}&value=5&version=1")),
        )
        .await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("editor"));

    // Logging out ends the session.
    let out = page.send("POST", "/admin/logout", Some(&cookie), Some(&format!("csrf={csrf}"))).await;
    assert_eq!(out.status, 303);
    assert_eq!(page.send("GET", "/admin", Some(&cookie), None).await.status, 303);
}

#[tokio::test]
async fn flag_page_forms_and_escaping() {
    let (page, editor, _) = Page::new().await;
    let (cookie, csrf) = page.login(&editor).await;
    let evil = "<img src=x onerror=alert(1)>";
    page.store
        .write(Write::new("test", Mutation::set_override("LEAD_HOURS", evil, 3)).reason("<script>x</script>"))
        .await
        .unwrap();
    let r = page.send("GET", "/admin/flags/LEAD_HOURS", Some(&cookie), None).await;
    assert_eq!(r.status, 200);
    assert!(!r.body.contains(evil) && r.body.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(!r.body.contains("<script>x</script>"));
    assert!(r.body.contains("min=\"0\" max=\"1000\"") && r.body.contains("0 to 1000"), "bounds shown");
    let form = |s: &str| format!("csrf={csrf}&{s}");
    let set = page
        .send("POST", "/admin/flags/LEAD_HOURS/value", Some(&cookie), Some(&form("value=48&version=1")))
        .await;
    assert_eq!(set.status, 303);
    assert_eq!(page.store.flag("LEAD_HOURS").await.unwrap().unwrap().value.to_json(), 48);
    for (body, status, says) in [
        ("value=5000&version=2", 422, "above the maximum 1000"),
        ("value=abc&version=2", 422, "not a whole number"),
    ] {
        let r = page.send("POST", "/admin/flags/LEAD_HOURS/value", Some(&cookie), Some(&form(body))).await;
        assert_eq!(r.status, status, "{body}");
        assert!(r.body.contains(says), "{body}: {}", r.body);
    }
    let add = page
        .send(
            "POST",
            "/admin/flags/LEAD_HOURS/overrides",
            Some(&cookie),
            Some(&form("user_id=tester&value=0")),
        )
        .await;
    assert_eq!(add.status, 303);
    let users = page.send("GET", "/admin/users?user=tester", Some(&cookie), None).await;
    assert!(users.body.contains("<code>0</code></td><td>override"), "{}", users.body);
    let rm = page
        .send(
            "POST",
            "/admin/flags/LEAD_HOURS/overrides/remove",
            Some(&cookie),
            Some(&form("user_id=tester")),
        )
        .await;
    assert_eq!(rm.status, 303);
    assert!(page.store.overrides("LEAD_HOURS").await.unwrap().iter().all(|o| o.user_id != "tester"));
    // History shows the value change; reverting it restores 24.
    let seq = page
        .store
        .changes_since(0, 100)
        .await
        .unwrap()
        .iter()
        .rev()
        .find(|c| c.key == "LEAD_HOURS" && c.action == ff_core::Action::FlagUpdate)
        .unwrap()
        .seq;
    let flag = page.send("GET", "/admin/flags/LEAD_HOURS", Some(&cookie), None).await;
    assert!(flag.body.contains(&format!("/admin/changes/{seq}/revert")));
    let revert = page
        .send("POST", &format!("/admin/changes/{seq}/revert"), Some(&cookie), Some(&form("key=LEAD_HOURS")))
        .await;
    assert_eq!(revert.status, 303, "{}", revert.body);
    assert_eq!(page.store.flag("LEAD_HOURS").await.unwrap().unwrap().value.to_json(), 24);
    // Targeting as JSON: validated like every write.
    let version = page.store.flag("LEAD_HOURS").await.unwrap().unwrap().version;
    let rule = r#"{"rules":[{"clauses":[{"attribute":"plan","op":"in","values":["pro"]}],"value":2}]}"#;
    let enc = |t: &str| t.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
    let bad = r#"{"split":{"variations":[{"value":1,"weight":10}]}}"#;
    let r = page
        .send(
            "POST",
            "/admin/flags/LEAD_HOURS/targeting",
            Some(&cookie),
            Some(&form(&format!("targeting={}&version={version}", enc(bad)))),
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(r.body.contains("add up to 10"), "{}", r.body);
    let r = page
        .send(
            "POST",
            "/admin/flags/LEAD_HOURS/targeting",
            Some(&cookie),
            Some(&form(&format!("targeting={}&version={version}", enc(rule)))),
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(page.store.flag("LEAD_HOURS").await.unwrap().unwrap().targeting.rules.len(), 1);
    let shown = page.send("GET", "/admin/flags/LEAD_HOURS", Some(&cookie), None).await;
    assert!(shown.body.contains("&quot;plan&quot;"), "targeting shown, escaped");
    // Reverting the targeting change removes the rule; the older value change now conflicts.
    let rules_seq = page.store.latest_seq().await.unwrap();
    let older = page
        .send("POST", &format!("/admin/changes/{seq}/revert"), Some(&cookie), Some(&form("key=LEAD_HOURS")))
        .await;
    assert_eq!(older.status, 409, "{}", older.body);
    assert!(older.body.contains("revert the later changes first"), "{}", older.body);
    let revert = page
        .send(
            "POST",
            &format!("/admin/changes/{rules_seq}/revert"),
            Some(&cookie),
            Some(&form("key=LEAD_HOURS")),
        )
        .await;
    assert_eq!(revert.status, 303, "{}", revert.body);
    assert!(page.store.flag("LEAD_HOURS").await.unwrap().unwrap().targeting.rules.is_empty());
    let missing = page.send("GET", "/admin/flags/NOPE", Some(&cookie), None).await;
    assert_eq!(missing.status, 404);
}

#[tokio::test]
async fn segments_on_the_page() {
    let (page, editor, viewer) = Page::new().await;
    let (cookie, csrf) = page.login(&editor).await;
    let enc = |t: &str| t.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
    let def = r#"{"description":"QA <team>","included":["qa-1"]}"#;
    let create = format!("csrf={csrf}&key=testers&definition={}", enc(def));
    let r = page.send("POST", "/admin/segments", Some(&cookie), Some(&create)).await;
    assert_eq!((r.status, r.location.as_deref()), (303, Some("/admin/segments/testers")));
    // Creating it again (no version: "must not exist") conflicts.
    assert_eq!(page.send("POST", "/admin/segments", Some(&cookie), Some(&create)).await.status, 409);
    let list = page.send("GET", "/admin/segments", Some(&cookie), None).await;
    assert!(list.body.contains("/admin/segments/testers") && list.body.contains("QA &lt;team&gt;"));
    let one = page.send("GET", "/admin/segments/testers", Some(&cookie), None).await;
    assert!(one.body.contains("qa-1") && one.body.contains("name=\"version\" value=\"1\""));
    let bad = format!("csrf={csrf}&key=testers&version=1&definition={}", enc(r#"{"included":[""]}"#));
    assert_eq!(page.send("POST", "/admin/segments", Some(&cookie), Some(&bad)).await.status, 422);
    let edit =
        format!("csrf={csrf}&key=testers&version=1&definition={}", enc(r#"{"included":["qa-1","qa-2"]}"#));
    assert_eq!(page.send("POST", "/admin/segments", Some(&cookie), Some(&edit)).await.status, 303);
    assert_eq!(page.store.segments().await.unwrap()[0].definition.included.len(), 2);
    let (vcookie, vcsrf) = page.login(&viewer).await;
    let denied = page
        .send("POST", "/admin/segments/testers/delete", Some(&vcookie), Some(&format!("csrf={vcsrf}")))
        .await;
    assert_eq!(denied.status, 403);
    let del = page
        .send(
            "POST",
            "/admin/segments/testers/delete",
            Some(&cookie),
            Some(&format!("csrf={csrf}&reason=done")),
        )
        .await;
    assert_eq!(del.status, 303);
    assert!(page.store.segments().await.unwrap().is_empty());
}

#[tokio::test]
async fn stale_page_and_usage_sparklines() {
    let (page, editor, _) = Page::new().await;
    let (cookie, _) = page.login(&editor).await;
    let now = time::OffsetDateTime::now_utc();
    let count = |key: &str, n| ff_core::UsageCount {
        key: key.into(),
        reason: "global".into(),
        variant: "true".into(),
        count: n,
    };
    page.store.record_usage(&[count("CREDITS", 42)], &[("<TYPO>".into(), 2)], now).await.unwrap();
    let patch = ff_store::FlagPatch {
        expires_at: Some(Some(time::macros::datetime!(2020-01-01 00:00 UTC))),
        ..Default::default()
    };
    page.store
        .write(Write::new("t", Mutation::UpdateFlag { key: "CREDITS".into(), patch, expected_version: None }))
        .await
        .unwrap();
    let r = page.send("GET", "/admin/stale", Some(&cookie), None).await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("<code>CREDITS</code>") && r.body.contains("expired"), "{}", r.body);
    assert!(r.body.contains("&lt;TYPO&gt;") && !r.body.contains("<TYPO>"), "unknown keys escaped");
    // The list: a sparkline whose title has today's count, the stale badge, the filter.
    let r = page.send("GET", "/admin", Some(&cookie), None).await;
    assert!(r.body.contains(&format!("{}: 42", now.date())), "{}", r.body);
    assert!(r.body.contains("stale: expired"));
    assert!(r.body.contains("never evaluated"), "LEAD_HOURS has no usage");
    let r = page.send("GET", "/admin?stale=1", Some(&cookie), None).await;
    assert!(r.body.contains("CREDITS") && !r.body.contains("LEAD_HOURS"), "{}", r.body);
    // The flag page: lifecycle facts and its own line.
    let r = page.send("GET", "/admin/flags/CREDITS", Some(&cookie), None).await;
    assert!(r.body.contains("kind release (default for its type) · temporary · created "), "{}", r.body);
    assert!(r.body.contains(" · expires 2020-01-01T00:00:00Z (warn after)"), "{}", r.body);
    assert!(r.body.contains("<polyline"));
}

#[tokio::test]
async fn confirmations_carry_their_message_as_data() {
    let (page, editor, _) = Page::new().await;
    let (cookie, _) = page.login(&editor).await;
    let def: ff_core::FlagDef = serde_json::from_value(serde_json::json!({
        "key": "BANNER", "type": "string", "value": "hi", "off_value": "it's a \\ \"quote\"\nand a line')"
    }))
    .unwrap();
    page.store.write(Write::new("test", Mutation::CreateFlag { def, if_missing: false })).await.unwrap();
    let r = page.send("GET", "/admin/flags/BANNER", Some(&cookie), None).await;
    assert_eq!(r.status, 200);
    // No value reaches JavaScript source: no inline script at all; the question is an
    // escaped attribute that the served script reads.
    assert!(!r.body.contains("confirm(") && !r.body.contains("onsubmit"), "{}", r.body);
    assert!(r.body.contains(r#"<script src="/admin/page.js" defer></script>"#), "{}", r.body);
    assert!(r.body.contains("data-confirm=\"Turn BANNER OFF for everyone? Its off value (&quot;it's a \\\\ \\&quot;quote\\&quot;\\nand a line')&quot;)"), "{}", r.body);
}

#[tokio::test]
async fn a_duration_is_typed_as_text_with_its_form_shown_and_an_enum_is_chosen() {
    let (page, editor, _) = Page::new().await;
    sync(&*page.store, &[WINDOW.decl(), PLAN.decl(), REMINDERS.decl()], &Default::default()).await.unwrap();
    let (cookie, csrf) = page.login(&editor).await;
    let r = page.send("GET", "/admin/flags/WINDOW", Some(&cookie), None).await;
    assert!(r.body.contains(r#"placeholder="48h""#), "{}", r.body);
    assert!(r.body.contains("a duration: 90m, 48h, 1h30m, 1h to 8760h"), "{}", r.body);
    let form = |s: &str| format!("csrf={csrf}&{s}");
    let set = page
        .send("POST", "/admin/flags/WINDOW/value", Some(&cookie), Some(&form("value=90m&version=1")))
        .await;
    assert_eq!(set.status, 303);
    assert_eq!(page.store.flag("WINDOW").await.unwrap().unwrap().value.to_json(), "90m");
    let bad = page
        .send("POST", "/admin/flags/WINDOW/value", Some(&cookie), Some(&form("value=2+days&version=2")))
        .await;
    assert_eq!(bad.status, 422);
    assert!(bad.body.contains("is not a duration like 90m, 48h or 1h30m"), "{}", bad.body);
    let r = page.send("GET", "/admin/flags/REMINDERS", Some(&cookie), None).await;
    assert!(r.body.contains("a list of durations, as JSON: <code>[&quot;48h&quot;]</code>"), "{}", r.body);
    let bad = page
        .send(
            "POST",
            "/admin/flags/REMINDERS/value",
            Some(&cookie),
            Some(&form("value=%5B%221h%22%2C%222+days%22%5D&version=1")),
        )
        .await;
    assert_eq!(bad.status, 422);
    assert!(bad.body.contains("item 1: &quot;2 days&quot; is not a duration"), "{}", bad.body);
    let r = page.send("GET", "/admin/flags/PLAN", Some(&cookie), None).await;
    assert!(
        r.body.contains(r#"<option value="Free" selected>Free</option><option value="Pro">Pro</option>"#),
        "{}",
        r.body
    );
}

/// The flag page shows a guarded rollout: the test's state, each variation's
/// counts, and what the guard wrote.
#[tokio::test]
async fn a_guarded_rollout_on_the_flag_page() {
    let (page, editor, _) = Page::new().await;
    let (cookie, _) = page.login(&editor).await;
    let targeting = serde_json::json!({
        "split": {"variations": [{"value": false, "weight": 1000}, {"value": true, "weight": 9000}]},
        "guard": {"min_requests": 100, "max_latency_increase": 20}
    });
    let patch = ff_store::FlagPatch {
        targeting: Some(serde_json::from_value(targeting).unwrap()),
        ..Default::default()
    };
    let m = Mutation::UpdateFlag { key: "CREDITS".into(), patch, expected_version: None };
    let written = page.store.write(Write::new("t", m)).await.unwrap().unwrap();
    let after: ff_core::FlagRecord = serde_json::from_value(written.after.unwrap()).unwrap();
    let started = after.targeting.guard.unwrap().started.unwrap();
    let mut arm = ff_core::guard::Arm::default();
    for i in 0..300 {
        arm.record(i % 100 == 0, 2_000 + i);
    }
    let row = ff_store::GuardCount {
        flag: "CREDITS".into(),
        epoch: (started.unix_timestamp_nanos() / 1_000_000) as i64,
        instance: "a".into(),
        variation: 1,
        arm,
    };
    page.store.put_guard_counts(&[row], time::OffsetDateTime::now_utc()).await.unwrap();
    let r = page.send("GET", "/admin/flags/CREDITS", Some(&cookie), None).await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("<h2>Guarded rollout</h2>"), "{}", r.body);
    assert!(r.body.contains("collecting: 0 treatment and 300 control requests of 100 each"), "{}", r.body);
    assert!(r.body.contains("+20 % typical latency"), "{}", r.body);
    assert!(
        r.body.contains("<td class=\"num\">300</td><td class=\"num\">3</td><td class=\"num\">1.00 %</td>"),
        "{}",
        r.body
    );
    assert!(r.body.contains("ms</td>"), "latency percentiles: {}", r.body);
    // A flag with no guard and no guard writes has no such section.
    let r = page.send("GET", "/admin/flags/LEAD_HOURS", Some(&cookie), None).await;
    assert!(!r.body.contains("Guarded rollout"));
}

#[tokio::test]
async fn change_requests_and_scheduled_changes_on_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("ff.db").display());
    let store = Arc::new(SqlStore::connect(&url).await.unwrap());
    sync(&*store, &[LEAD.decl(), CREDITS.decl()], &Default::default()).await.unwrap();
    let (_, ann) = ff_admin::create_token(&*store, "ann", Role::Editor, "test", None).await.unwrap();
    let (_, bob) = ff_admin::create_token(&*store, "bob", Role::Editor, "test", None).await.unwrap();
    let admin = Admin::new(store.clone()).require_approval([ff_core::FlagKind::Config]);
    let page = Page { app: Router::new().nest("/admin", admin.router()), store: store.clone(), _dir: dir };
    let (ann_cookie, ann_csrf) = page.login(&ann).await;
    let (bob_cookie, bob_csrf) = page.login(&bob).await;
    let flag = page.send("GET", "/admin/flags/LEAD_HOURS", Some(&ann_cookie), None).await;
    assert!(flag.body.contains("Changes to this flag wait for a second editor"), "{}", flag.body);
    assert!(flag.body.contains("name=\"apply_at\""), "every change can be scheduled");

    // Ann's change is held: she is taken to its request, which says so.
    let form = format!("csrf={ann_csrf}&value=12&version=1&reason=shorter");
    let r = page.send("POST", "/admin/flags/LEAD_HOURS/value", Some(&ann_cookie), Some(&form)).await;
    assert_eq!((r.status, r.location.as_deref()), (303, Some("/admin/requests/1?held=1")), "{}", r.body);
    assert_eq!(store.flag("LEAD_HOURS").await.unwrap().unwrap().value, ff_core::Value::Int(24));
    let shown = page.send("GET", "/admin/requests/1?held=1", Some(&ann_cookie), None).await;
    assert!(shown.body.contains("Your change was not made yet"), "{}", shown.body);
    assert!(shown.body.contains("LEAD_HOURS: value = 12"), "{}", shown.body);
    assert!(shown.body.contains("(now value = 24)"), "what it serves now: {}", shown.body);
    assert!(!shown.body.contains(">Approve"), "no approve button for its author");
    assert!(shown.body.contains("another editor approves it"));
    // Listed on the flag's page and the requests page.
    let flag = page.send("GET", "/admin/flags/LEAD_HOURS", Some(&bob_cookie), None).await;
    assert!(flag.body.contains("href=\"/admin/requests/1\""), "{}", flag.body);
    let list = page.send("GET", "/admin/requests", Some(&bob_cookie), None).await;
    assert!(list.body.contains("Open (1)") && list.body.contains("nobody yet"), "{}", list.body);

    // Ann cannot approve it by posting the form anyway; Bob's approval applies it.
    let own = format!("csrf={ann_csrf}");
    let r = page.send("POST", "/admin/requests/1/approve", Some(&ann_cookie), Some(&own)).await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("another editor must approve it"), "{}", r.body);
    let forged = page.send("POST", "/admin/requests/1/approve", Some(&bob_cookie), Some("csrf=forged")).await;
    assert_eq!(forged.status, 403);
    assert_eq!(store.flag("LEAD_HOURS").await.unwrap().unwrap().value, ff_core::Value::Int(24));
    let shown = page.send("GET", "/admin/requests/1", Some(&bob_cookie), None).await;
    assert!(shown.body.contains(">Approve and apply<"), "{}", shown.body);
    let ok = format!("csrf={bob_csrf}");
    let r = page.send("POST", "/admin/requests/1/approve", Some(&bob_cookie), Some(&ok)).await;
    assert_eq!((r.status, r.location.as_deref()), (303, Some("/admin/requests/1")), "{}", r.body);
    assert_eq!(store.flag("LEAD_HOURS").await.unwrap().unwrap().value, ff_core::Value::Int(12));
    let flag = page.send("GET", "/admin/flags/LEAD_HOURS", Some(&bob_cookie), None).await;
    assert!(flag.body.contains("approved by bob"), "the history names both");
    let r = page.send("POST", "/admin/requests/1/nonsense", Some(&bob_cookie), Some(&ok)).await;
    assert_eq!(r.status, 404);

    // Switching off never waits, and the history marks it.
    let form = format!("csrf={ann_csrf}&enabled=false&version=2");
    let r = page.send("POST", "/admin/flags/LEAD_HOURS/switch", Some(&ann_cookie), Some(&form)).await;
    assert_eq!(r.location.as_deref(), Some("/admin/flags/LEAD_HOURS"), "{}", r.body);
    let flag = page.send("GET", "/admin/flags/LEAD_HOURS", Some(&ann_cookie), None).await;
    assert!(flag.body.contains("class=\"off\">emergency<"), "{}", flag.body);

    // Scheduled from the value form, in the visitor's time zone (UTC+1 here).
    let local =
        (time::OffsetDateTime::now_utc() + time::Duration::hours(3)).to_offset(time::macros::offset!(+1));
    let at = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}",
        local.year(),
        u8::from(local.month()),
        local.day(),
        local.hour(),
        local.minute()
    );
    let form = format!("csrf={bob_csrf}&value=true&version=1&apply_at={at}&tz=60");
    let r = page.send("POST", "/admin/flags/CREDITS/value", Some(&bob_cookie), Some(&form)).await;
    assert_eq!(r.location.as_deref(), Some("/admin/requests/2"), "{}", r.body);
    let scheduled = page.send("GET", "/admin/requests/2", Some(&bob_cookie), None).await;
    let utc = local.to_offset(time::UtcOffset::UTC);
    let want = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:00Z",
        utc.year(),
        u8::from(utc.month()),
        utc.day(),
        utc.hour(),
        utc.minute()
    );
    assert!(scheduled.body.contains(&format!("datetime=\"{want}\"")), "stored in UTC: {}", scheduled.body);
    assert!(scheduled.body.contains("not needed (only its time holds it)"));
    for (at, says) in [("yesterday", "not a date and time"), ("2020-01-01T10:00", "not in the future")] {
        let form = format!("csrf={bob_csrf}&value=true&version=1&apply_at={at}");
        let r = page.send("POST", "/admin/flags/CREDITS/value", Some(&bob_cookie), Some(&form)).await;
        assert!(r.status >= 400 && r.body.contains(says), "{at}: {} {}", r.status, r.body);
    }
    // A flag's own policy, set from its page: tightening is at once, loosening waits.
    let form = format!("csrf={bob_csrf}&approval=always&version=1");
    let r = page.send("POST", "/admin/flags/CREDITS/approval", Some(&bob_cookie), Some(&form)).await;
    assert_eq!(r.location.as_deref(), Some("/admin/flags/CREDITS"), "{}", r.body);
    assert_eq!(store.flag("CREDITS").await.unwrap().unwrap().meta.approval, Some(true));
    let form = format!("csrf={bob_csrf}&approval=kind&version=2");
    let r = page.send("POST", "/admin/flags/CREDITS/approval", Some(&bob_cookie), Some(&form)).await;
    assert!(r.location.as_deref().unwrap().ends_with("?held=1"), "loosening waits: {:?}", r.location);
    assert_eq!(store.flag("CREDITS").await.unwrap().unwrap().meta.approval, Some(true));
    let form = format!("csrf={bob_csrf}&approval=sometimes&version=2");
    let r = page.send("POST", "/admin/flags/CREDITS/approval", Some(&bob_cookie), Some(&form)).await;
    assert_eq!(r.status, 422);
    // Withdrawn by its author from its page.
    let form = format!("csrf={bob_csrf}&reason=later");
    page.send("POST", "/admin/requests/2/reject", Some(&bob_cookie), Some(&form)).await;
    let list = page.send("GET", "/admin/requests", Some(&bob_cookie), None).await;
    assert!(list.body.contains("Open (1)") && list.body.contains("rejected"), "{}", list.body);
}

#[tokio::test]
async fn webhooks_on_the_page_are_for_admins() {
    let (page, editor, _) = Page::new().await;
    let (_, root) = ff_admin::create_token(&*page.store, "root", Role::Admin, "test", None).await.unwrap();
    let (cookie, csrf) = page.login(&root).await;
    let list = page.send("GET", "/admin", Some(&cookie), None).await;
    assert!(list.body.contains("href=\"/admin/webhooks\""), "admins see the link");
    let form =
        format!("csrf={csrf}&url=http%3A%2F%2F127.0.0.1%3A9%2Fhook&events=flag&events=request&format=slack");
    let added = page.send("POST", "/admin/webhooks", Some(&cookie), Some(&form)).await;
    assert_eq!(added.status, 200, "{}", added.body);
    let secret = added.body.split("id=\"secret\">").nth(1).unwrap().split('<').next().unwrap().to_owned();
    assert_eq!(secret.len(), 64, "shown once: {}", added.body);
    let shown = page.send("GET", "/admin/webhooks", Some(&cookie), None).await;
    assert!(shown.body.contains("http://127.0.0.1:9/hook") && shown.body.contains("flag, request"));
    assert!(shown.body.contains("Slack text") && !shown.body.contains(&secret), "never shown again");
    let bad = format!("csrf={csrf}&url=ftp%3A%2F%2Fx");
    let r = page.send("POST", "/admin/webhooks", Some(&cookie), Some(&bad)).await;
    assert!(r.status == 400 && r.body.contains("must be http or https"), "{}", r.body);
    let forged = page.send("POST", "/admin/webhooks/1/delete", Some(&cookie), Some("csrf=nope")).await;
    assert_eq!(forged.status, 403);
    // Editors neither see nor change them.
    let (ed_cookie, ed_csrf) = page.login(&editor).await;
    let list = page.send("GET", "/admin", Some(&ed_cookie), None).await;
    assert!(!list.body.contains("href=\"/admin/webhooks\""));
    assert_eq!(page.send("GET", "/admin/webhooks", Some(&ed_cookie), None).await.status, 403);
    let r = page
        .send("POST", "/admin/webhooks/1/delete", Some(&ed_cookie), Some(&format!("csrf={ed_csrf}")))
        .await;
    assert_eq!(r.status, 403);
    let r = page.send("POST", "/admin/webhooks/1/delete", Some(&cookie), Some(&format!("csrf={csrf}"))).await;
    assert_eq!((r.status, r.location.as_deref()), (303, Some("/admin/webhooks")));
    assert!(!page.send("GET", "/admin/webhooks", Some(&cookie), None).await.body.contains("127.0.0.1:9"));
}
