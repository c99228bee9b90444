//! Change requests and scheduled changes through the admin API: a change to a flag the
//! approval policy covers waits for a second editor; switching off never waits; stale
//! requests are re-based; edits drop approvals; reverts wait too; scheduled changes
//! apply once, at their time, also after a restart.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use ff_admin::Admin;
use ff_api::{ChangeRequest, RequestList, RequestMade, RequestStatus};
use ff_core::{Action, Flag, FlagKind};
use ff_store::{ChangeQuery, FlagReader, FlagWriter, Role, SqlStore, sync};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tower::ServiceExt;

/// A config flag: under the policy below.
const RATE: Flag<i64> = Flag::new("MIN_RATE", 60).range(0, 1000);
/// A release flag: not under it.
const CHECKOUT: Flag<bool> = Flag::new("NEW_CHECKOUT", false);

struct Api {
    store: Arc<SqlStore>,
    ann: String,
    bob: String,
    viewer: String,
    app: Router,
    _dir: tempfile::TempDir,
}

struct Reply {
    status: u16,
    body: Value,
}

fn admin(store: Arc<SqlStore>) -> Admin {
    Admin::new(store).require_approval([FlagKind::Config]).schedule_interval(Duration::from_millis(50))
}

impl Api {
    async fn new() -> Api {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("ff.db").display());
        let store = Arc::new(SqlStore::connect(&url).await.unwrap());
        sync(&*store, &[RATE.decl(), CHECKOUT.decl()], &Default::default()).await.unwrap();
        let (_, ann) = ff_admin::create_token(&*store, "ann", Role::Editor, "test", None).await.unwrap();
        let (_, bob) = ff_admin::create_token(&*store, "bob", Role::Editor, "test", None).await.unwrap();
        let (_, viewer) = ff_admin::create_token(&*store, "vi", Role::Viewer, "test", None).await.unwrap();
        let app = Router::new().nest("/admin", admin(store.clone()).router());
        Api { store, ann, bob, viewer, app, _dir: dir }
    }

    async fn call(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> Reply {
        call(&self.app, method, path, token, body).await
    }

    async fn rate(&self) -> (serde_json::Value, bool, u64) {
        let f = self.store.flag(RATE.key()).await.unwrap().unwrap();
        (f.value.to_json(), f.enabled, f.version)
    }

    async fn log(&self) -> Vec<ff_core::Change> {
        self.store.changes(&ChangeQuery { limit: 1000, ..ChangeQuery::default() }).await.unwrap()
    }

    async fn patch_rate(&self, token: &str, body: Value) -> Reply {
        let version = self.rate().await.2;
        let req = http::Request::builder()
            .method("PATCH")
            .uri("/admin/api/flags/MIN_RATE")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .header("if-match", format!("\"{version}\""));
        send(&self.app, req.body(Body::from(body.to_string())).unwrap()).await
    }
}

async fn call(app: &Router, method: &str, path: &str, token: &str, body: Option<Value>) -> Reply {
    let mut req =
        http::Request::builder().method(method).uri(path).header("authorization", format!("Bearer {token}"));
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let body = body.map(|b| Body::from(b.to_string())).unwrap_or_else(Body::empty);
    send(app, req.body(body).unwrap()).await
}

async fn send(app: &Router, req: http::Request<Body>) -> Reply {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status().as_u16();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    Reply { status, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
}

fn request(r: &Reply) -> ChangeRequest {
    serde_json::from_value(r.body.clone()).unwrap_or_else(|e| panic!("{e}: {}", r.body))
}

fn held(r: &Reply) -> ChangeRequest {
    assert_eq!(r.status, 202, "{}", r.body);
    serde_json::from_value::<RequestMade>(r.body.clone()).unwrap().request
}

fn at(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap()
}

#[tokio::test]
async fn a_change_under_approval_waits_for_another_editor_then_is_served_once() {
    let api = Api::new().await;
    let before = api.log().await.len();
    let made = held(&api.patch_rate(&api.ann, json!({"value": 1, "reason": "tester rate"})).await);
    assert_eq!(
        (made.status, made.author.as_str(), made.key.as_str()),
        (RequestStatus::Pending, "ann", "MIN_RATE")
    );
    assert!(made.needs_approval && made.approvals.is_empty());
    assert_eq!(api.rate().await.0, json!(60), "nothing served yet");
    let log = api.log().await;
    assert_eq!(log.len(), before + 1);
    assert_eq!(
        (log[0].action, log[0].subject.as_deref()),
        (Action::RequestPut, Some(made.id.to_string().as_str()))
    );
    // Listed, by id, for viewers.
    let list: RequestList =
        serde_json::from_value(api.call("GET", "/admin/api/requests", &api.viewer, None).await.body).unwrap();
    assert_eq!(list.requests.iter().map(|r| r.id).collect::<Vec<_>>(), vec![made.id]);
    let path = format!("/admin/api/requests/{}", made.id);
    assert_eq!(request(&api.call("GET", &path, &api.viewer, None).await).id, made.id);

    // Its author cannot approve it; a viewer cannot either; nothing is written.
    let own = api.call("POST", &format!("{path}/approve"), &api.ann, None).await;
    assert_eq!((own.status, own.body["error"].as_str()), (403, Some("not_allowed")), "{}", own.body);
    assert!(own.body["message"].as_str().unwrap().contains("another editor"), "{}", own.body);
    assert_eq!(api.call("POST", &format!("{path}/approve"), &api.viewer, None).await.status, 403);
    assert_eq!(api.rate().await.0, json!(60));

    // Another editor's approval applies it: the change row names both.
    let done = api.call("POST", &format!("{path}/approve"), &api.bob, None).await;
    assert_eq!(done.status, 200, "{}", done.body);
    let done = request(&done);
    assert_eq!(done.status, RequestStatus::Applied);
    assert_eq!(done.decision.as_ref().unwrap().by, "bob");
    assert_eq!(api.rate().await.0, json!(1));
    let change = api.log().await.into_iter().find(|c| c.action == Action::FlagUpdate).unwrap();
    assert_eq!(change.actor, "ann");
    assert_eq!(change.approved_by.as_deref(), Some("bob"));
    assert_eq!(change.reason.as_deref(), Some("tester rate"));
    // Once: a second approval is refused.
    let again = api.call("POST", &format!("{path}/approve"), &api.bob, None).await;
    assert_eq!(again.status, 409, "{}", again.body);
    let open: RequestList =
        serde_json::from_value(api.call("GET", "/admin/api/requests", &api.viewer, None).await.body).unwrap();
    assert!(open.requests.is_empty(), "applied requests are not open");
    let all = api.call("GET", "/admin/api/requests?status=all", &api.viewer, None).await;
    assert_eq!(all.body["requests"].as_array().unwrap().len(), 1);
    assert_eq!(api.call("GET", "/admin/api/requests?status=nope", &api.viewer, None).await.status, 400);
    assert_eq!(api.call("GET", "/admin/api/requests/999", &api.viewer, None).await.status, 404);

    // A user's value of a flag under the policy waits too; removing it as well.
    let o = held(
        &api.call("PUT", "/admin/api/flags/MIN_RATE/overrides/tester", &api.ann, Some(json!({"value": 1})))
            .await,
    );
    assert!(api.store.overrides("MIN_RATE").await.unwrap().is_empty(), "nothing served yet");
    assert_eq!(
        api.call("POST", &format!("/admin/api/requests/{}/approve", o.id), &api.bob, None).await.status,
        200
    );
    assert_eq!(api.store.overrides("MIN_RATE").await.unwrap().len(), 1);
    held(&api.call("DELETE", "/admin/api/flags/MIN_RATE/overrides/tester", &api.ann, None).await);
    assert_eq!(api.store.overrides("MIN_RATE").await.unwrap().len(), 1);

    // A flag outside the policy is written at once.
    let version = api.store.flag(CHECKOUT.key()).await.unwrap().unwrap().version;
    let req = http::Request::builder()
        .method("PATCH")
        .uri("/admin/api/flags/NEW_CHECKOUT")
        .header("authorization", format!("Bearer {}", api.ann))
        .header("content-type", "application/json")
        .header("if-match", format!("\"{version}\""))
        .body(Body::from(json!({"value": true}).to_string()))
        .unwrap();
    assert_eq!(send(&api.app, req).await.status, 200);
    assert_eq!(api.store.flag(CHECKOUT.key()).await.unwrap().unwrap().value.to_json(), json!(true));
}

#[tokio::test]
async fn switching_off_never_waits_and_is_marked_an_emergency() {
    let api = Api::new().await;
    let off = api.patch_rate(&api.ann, json!({"enabled": false, "reason": "incident"})).await;
    assert_eq!(off.status, 200, "{}", off.body);
    assert!(!api.rate().await.1);
    let change = api.log().await.remove(0);
    assert!(change.emergency && change.approved_by.is_none(), "{change:?}");
    // Switching back on is a change like any other.
    let on = held(&api.patch_rate(&api.ann, json!({"enabled": true})).await);
    assert!(!api.rate().await.1);
    // And switching off with anything else in the same change waits too.
    let mixed = api.patch_rate(&api.bob, json!({"enabled": false, "value": 5})).await;
    assert_eq!(mixed.status, 202, "{}", mixed.body);
    let applied = api.call("POST", &format!("/admin/api/requests/{}/approve", on.id), &api.bob, None).await;
    assert_eq!(applied.status, 200, "{}", applied.body);
    assert!(api.rate().await.1);
    // A batch through the batch API is held whole.
    let batch = json!({"changes": [
        {"op": "update", "key": "NEW_CHECKOUT", "value": true},
        {"op": "update", "key": "MIN_RATE", "value": 7},
    ]});
    let r = held(&api.call("POST", "/admin/api/batch", &api.ann, Some(batch)).await);
    assert_eq!(r.changes.len(), 2);
    assert_eq!(api.store.flag(CHECKOUT.key()).await.unwrap().unwrap().value.to_json(), json!(false));
}

#[tokio::test]
async fn stale_requests_are_rebased_edits_drop_approvals_and_reverts_wait() {
    let api = Api::new().await;
    let made = held(&api.patch_rate(&api.ann, json!({"value": 12})).await);
    let path = format!("/admin/api/requests/{}", made.id);
    // The flag moves (an emergency switch-off) before the approval: stale.
    assert_eq!(api.patch_rate(&api.bob, json!({"enabled": false})).await.status, 200);
    let stale = api.call("POST", &format!("{path}/approve"), &api.bob, None).await;
    assert_eq!(stale.status, 409, "{}", stale.body);
    assert!(stale.body["message"].as_str().unwrap().contains("re-base"), "{}", stale.body);
    assert_eq!(api.rate().await.0, json!(60), "nothing written");
    // Only its author re-bases it.
    assert_eq!(api.call("POST", &format!("{path}/rebase"), &api.bob, None).await.status, 403);
    let rebased = request(&api.call("POST", &format!("{path}/rebase"), &api.ann, None).await);
    assert_eq!((rebased.revision, rebased.status), (2, RequestStatus::Pending));
    assert_eq!(rebased.base["MIN_RATE"], api.rate().await.2);
    let applied = api.call("POST", &format!("{path}/approve"), &api.bob, None).await;
    assert_eq!(applied.status, 200, "{}", applied.body);
    let (value, enabled, _) = api.rate().await;
    assert_eq!((value, enabled), (json!(12), false), "the change and the switch-off both stand");

    // Scheduled and approved, then edited: the approval is dropped.
    let later = at(OffsetDateTime::now_utc() + time::Duration::hours(1));
    let body = json!({"changes": [{"op": "update", "key": "MIN_RATE", "value": 30}], "apply_at": later});
    let made = request(&api.call("POST", "/admin/api/requests", &api.ann, Some(body)).await);
    let path = format!("/admin/api/requests/{}", made.id);
    let approved = request(&api.call("POST", &format!("{path}/approve"), &api.bob, None).await);
    assert_eq!((approved.status, approved.approvals.len()), (RequestStatus::Approved, 1));
    let edit = json!({"changes": [{"op": "update", "key": "MIN_RATE", "value": 31}], "apply_at": later, "reason": "31 it is"});
    assert_eq!(api.call("PUT", &path, &api.bob, Some(edit.clone())).await.status, 403, "not the author");
    let edited = request(&api.call("PUT", &path, &api.ann, Some(edit)).await);
    assert_eq!((edited.status, edited.revision), (RequestStatus::Pending, 2));
    assert!(edited.approvals.is_empty(), "an edit drops the approvals");
    assert_eq!(edited.reason.as_deref(), Some("31 it is"));
    // Withdrawn by its author.
    let rejected = request(
        &api.call("POST", &format!("{path}/reject"), &api.ann, Some(json!({"reason": "not now"}))).await,
    );
    assert_eq!(rejected.status, RequestStatus::Rejected);
    assert_eq!(rejected.decision.unwrap().reason.as_deref(), Some("not now"));
    assert_eq!(api.call("POST", &format!("{path}/approve"), &api.bob, None).await.status, 409);
    assert_eq!(api.call("PUT", &path, &api.ann, Some(json!({"changes": []}))).await.status, 409);

    // Reverting the approved change waits for approval too.
    let seq = api
        .log()
        .await
        .into_iter()
        .find(|c| c.action == Action::FlagUpdate && c.approved_by.is_some())
        .unwrap()
        .seq;
    let revert = held(&api.call("POST", &format!("/admin/api/changes/{seq}/revert"), &api.ann, None).await);
    assert_eq!(api.rate().await.0, json!(12));
    let ok = api.call("POST", &format!("/admin/api/requests/{}/approve", revert.id), &api.bob, None).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(api.rate().await.0, json!(60));
}

#[tokio::test]
async fn bad_requests_are_refused_naming_the_problem_and_write_nothing() {
    let api = Api::new().await;
    let before = api.log().await.len();
    let cases = [
        (json!({"changes": [{"op": "update", "key": "MIN_RATE", "value": 5000}]}), 422, "maximum"),
        (json!({"changes": [{"op": "update", "key": "NOPE", "value": 1}]}), 404, "NOPE"),
        (json!({"changes": []}), 400, "at least one change"),
        (
            json!({"changes": [{"op": "update", "key": "MIN_RATE", "value": 5}], "apply_at": "2020-01-01T00:00:00Z"}),
            400,
            "not in the future",
        ),
        (
            json!({"changes": [{"op": "update", "key": "MIN_RATE", "value": 5}], "apply_at": "2099-01-01T00:00:00Z"}),
            400,
            "more than a year",
        ),
        (
            json!({"changes": [{"op": "update", "key": "MIN_RATE", "value": 5}], "apply_at": "tomorrow"}),
            422,
            "apply_at",
        ),
        (json!({"changes": [{"op": "update", "key": "MIN_RATE", "value": 5}], "when": 1}), 422, "when"),
    ];
    for (body, status, says) in cases {
        let r = api.call("POST", "/admin/api/requests", &api.ann, Some(body.clone())).await;
        assert_eq!(r.status, status, "{body}: {}", r.body);
        assert!(r.body["message"].as_str().unwrap_or_default().contains(says), "{body}: {}", r.body);
    }
    assert_eq!(
        api.call("POST", "/admin/api/requests", &api.viewer, Some(json!({"changes": []}))).await.status,
        403
    );
    assert_eq!(api.log().await.len(), before, "nothing written");
}

/// Polls until `f` holds, for at most 10 s.
async fn eventually<F: std::future::Future<Output = bool>>(mut f: impl FnMut() -> F) {
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not within 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_changes_apply_once_at_their_time_on_one_of_two_instances() {
    let api = Api::new().await;
    // A second instance over the same store: both run the scheduler; one holds the lease.
    let second = Router::new().nest("/admin", admin(api.store.clone()).router());
    let soon = OffsetDateTime::now_utc() + time::Duration::milliseconds(1500);
    let body = json!({"changes": [{"op": "update", "key": "NEW_CHECKOUT", "value": true}], "apply_at": at(soon), "reason": "launch"});
    let made = request(&api.call("POST", "/admin/api/requests", &api.ann, Some(body)).await);
    assert_eq!(
        (made.status, made.needs_approval),
        (RequestStatus::Approved, false),
        "only the time holds it"
    );
    // And one under the policy, approved on the second instance, due at the same time.
    let body = json!({"changes": [{"op": "update", "key": "MIN_RATE", "value": 45}], "apply_at": at(soon)});
    let rate = request(&api.call("POST", "/admin/api/requests", &api.ann, Some(body)).await);
    assert_eq!(rate.status, RequestStatus::Pending);
    let approved =
        call(&second, "POST", &format!("/admin/api/requests/{}/approve", rate.id), &api.bob, None).await;
    assert_eq!(request(&approved).status, RequestStatus::Approved);
    // A third, cancelled before its time, never applies.
    let body = json!({"changes": [{"op": "update", "key": "NEW_CHECKOUT", "value": false}], "apply_at": at(soon + time::Duration::seconds(1))});
    let cancelled = request(&api.call("POST", "/admin/api/requests", &api.ann, Some(body)).await);
    api.call("POST", &format!("/admin/api/requests/{}/reject", cancelled.id), &api.ann, None).await;

    let flag = |key: &'static str| {
        let store = api.store.clone();
        async move { store.flag(key).await.unwrap().unwrap().value.to_json() }
    };
    assert_eq!(flag("NEW_CHECKOUT").await, json!(false), "not before its time");
    eventually(|| async { flag("NEW_CHECKOUT").await == json!(true) && flag("MIN_RATE").await == json!(45) })
        .await;
    assert!(OffsetDateTime::now_utc() >= soon);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let log = api.log().await;
    let writes: Vec<_> = log.iter().filter(|c| c.action == Action::FlagUpdate).collect();
    assert_eq!(writes.len(), 2, "each applied once: {writes:?}");
    let rate_change = writes.iter().find(|c| c.key == "MIN_RATE").unwrap();
    assert_eq!((rate_change.actor.as_str(), rate_change.approved_by.as_deref()), ("ann", Some("bob")));
    assert_eq!(flag("NEW_CHECKOUT").await, json!(true), "the cancelled one never applied");
    let done =
        request(&api.call("GET", &format!("/admin/api/requests/{}", made.id), &api.viewer, None).await);
    assert_eq!(
        (done.status, done.decision.unwrap().by.as_str()),
        (RequestStatus::Applied, ff_admin::SCHEDULER)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_due_while_everything_was_down_applies_on_start_and_a_refused_one_fails() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("ff.db").display());
    let store = Arc::new(SqlStore::connect(&url).await.unwrap());
    sync(&*store, &[RATE.decl(), CHECKOUT.decl()], &Default::default()).await.unwrap();
    let (_, ann) = ff_admin::create_token(&*store, "ann", Role::Editor, "test", None).await.unwrap();
    {
        let app = Router::new().nest("/admin", admin(store.clone()).router());
        let soon = at(OffsetDateTime::now_utc() + time::Duration::milliseconds(300));
        let body =
            json!({"changes": [{"op": "update", "key": "NEW_CHECKOUT", "value": true}], "apply_at": soon});
        assert_eq!(call(&app, "POST", "/admin/api/requests", &ann, Some(body)).await.status, 201);
        let body = json!({"changes": [{"op": "archive", "key": "NEW_CHECKOUT"}, {"op": "update", "key": "NEW_CHECKOUT", "value": false}], "apply_at": soon});
        assert_eq!(call(&app, "POST", "/admin/api/requests", &ann, Some(body)).await.status, 201);
        // Shut down at once (a dropped admin's scheduler stops): nothing applied yet.
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    store.close().await;
    // Started again after the time passed.
    let store = Arc::new(SqlStore::connect(&url).await.unwrap());
    let app = Router::new().nest("/admin", admin(store.clone()).router());
    let value = || {
        let store = store.clone();
        async move { store.flag(CHECKOUT.key()).await.unwrap().unwrap().value.to_json() }
    };
    eventually(|| async { value().await == json!(true) }).await;
    // The other change cannot be applied (a change to a flag its own first change
    // archived): marked failed, with why, and not tried again.
    let all: RequestList =
        serde_json::from_value(call(&app, "GET", "/admin/api/requests?status=all", &ann, None).await.body)
            .unwrap();
    let failed = all.requests.iter().find(|r| r.changes.len() == 2).unwrap();
    eventually(|| async {
        let r: ChangeRequest = serde_json::from_value(
            call(&app, "GET", &format!("/admin/api/requests/{}", failed.id), &ann, None).await.body,
        )
        .unwrap();
        r.status == RequestStatus::Failed
            && r.decision.is_some_and(|d| d.reason.is_some_and(|w| w.contains("NEW_CHECKOUT")))
    })
    .await;
    assert!(!store.flag(CHECKOUT.key()).await.unwrap().unwrap().archived, "nothing of it was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_archives_and_restores_batches_of_one_flag_and_approvals_of_what_was_read() {
    let api = Api::new().await;
    // Archive and restore of a flag under the policy: each held, each applied once approved.
    let req = http::Request::builder()
        .method("DELETE")
        .uri("/admin/api/flags/MIN_RATE")
        .header("authorization", format!("Bearer {}", api.ann))
        .header("if-match", format!("\"{}\"", api.rate().await.2))
        .body(Body::empty())
        .unwrap();
    let archive = held(&send(&api.app, req).await);
    let ok = api.call("POST", &format!("/admin/api/requests/{}/approve", archive.id), &api.bob, None).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(api.store.flag("MIN_RATE").await.unwrap().unwrap().archived);
    let restore = held(&api.call("POST", "/admin/api/flags/MIN_RATE/restore", &api.ann, None).await);
    let ok = api.call("POST", &format!("/admin/api/requests/{}/approve", restore.id), &api.bob, None).await;
    assert_eq!(ok.status, 200, "a held restore applies: {}", ok.body);
    assert!(!api.store.flag("MIN_RATE").await.unwrap().unwrap().archived);

    // Two changes of one flag in one held batch apply together.
    let batch = json!({"changes": [
        {"op": "update", "key": "MIN_RATE", "value": 7},
        {"op": "update", "key": "MIN_RATE", "enabled": false, "value": 8},
    ]});
    let r = held(&api.call("POST", "/admin/api/batch", &api.ann, Some(batch)).await);
    let ok = api.call("POST", &format!("/admin/api/requests/{}/approve", r.id), &api.bob, None).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!((api.rate().await.0, api.rate().await.1), (json!(8), false));

    // An approval is of the revision the approver read.
    let made = held(&api.patch_rate(&api.ann, json!({"value": 9})).await);
    let path = format!("/admin/api/requests/{}", made.id);
    let later = at(OffsetDateTime::now_utc() + time::Duration::hours(2));
    let edit = json!({"changes": [{"op": "update", "key": "MIN_RATE", "value": 900}], "apply_at": later});
    assert_eq!(api.call("PUT", &path, &api.ann, Some(edit)).await.status, 200);
    let old = api.call("POST", &format!("{path}/approve"), &api.bob, Some(json!({"revision": 1}))).await;
    assert_eq!(old.status, 409, "{}", old.body);
    assert!(old.body["message"].as_str().unwrap().contains("changed since you read it"), "{}", old.body);
    let bad = api.call("POST", &format!("{path}/approve"), &api.bob, Some(json!({"rev": 2}))).await;
    assert_eq!(bad.status, 422, "{}", bad.body);
    let ok = api.call("POST", &format!("{path}/approve"), &api.bob, Some(json!({"revision": 2}))).await;
    assert_eq!(request(&ok).status, RequestStatus::Approved);

    // Nothing to wait for: no request.
    let r = api
        .call(
            "POST",
            "/admin/api/requests",
            &api.ann,
            Some(json!({"changes": [{"op": "update", "key": "NEW_CHECKOUT", "value": true}]})),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.body["message"].as_str().unwrap().contains("nothing here waits"), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_scheduled_changes_of_one_flag_both_apply_and_segments_of_guarded_flags_are_for_admins() {
    let api = Api::new().await;
    let soon = |ms| at(OffsetDateTime::now_utc() + time::Duration::milliseconds(ms));
    for (value, ms) in [(true, 600), (false, 1200)] {
        let body = json!({"changes": [{"op": "update", "key": "NEW_CHECKOUT", "value": value}], "apply_at": soon(ms)});
        assert_eq!(api.call("POST", "/admin/api/requests", &api.ann, Some(body)).await.status, 201);
    }
    // Something else changes the flag between them.
    assert_eq!(
        api.call("PUT", "/admin/api/flags/NEW_CHECKOUT/overrides/u1", &api.ann, Some(json!({"value": true})))
            .await
            .status,
        200
    );
    eventually(|| async {
        let all: RequestList = serde_json::from_value(
            api.call("GET", "/admin/api/requests?status=all", &api.viewer, None).await.body,
        )
        .unwrap();
        all.requests.iter().all(|r| r.status == RequestStatus::Applied)
    })
    .await;
    assert_eq!(api.store.flag(CHECKOUT.key()).await.unwrap().unwrap().value.to_json(), json!(false));

    // A segment a flag under approval uses: editors may not widen it, admins may.
    let seg = json!({"included": ["u1"]});
    let (_, root) = ff_admin::create_token(&*api.store, "root", Role::Admin, "test", None).await.unwrap();
    assert_eq!(api.call("PUT", "/admin/api/segments/beta", &api.ann, Some(seg.clone())).await.status, 201);
    let rule = json!({"targeting": {"rules": [{"clauses": [{"attribute": "user_id", "op": "in_segment", "values": ["beta"]}], "value": 1}]}});
    let r = held(&api.patch_rate(&api.ann, rule).await);
    assert_eq!(
        api.call("POST", &format!("/admin/api/requests/{}/approve", r.id), &api.bob, None).await.status,
        200
    );
    let wide = json!({"included": ["u1", "u2"]});
    let refused = api.call("PUT", "/admin/api/segments/beta", &api.ann, Some(wide.clone())).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body["message"].as_str().unwrap().contains("MIN_RATE"), "{}", refused.body);
    assert_eq!(api.call("DELETE", "/admin/api/segments/beta", &api.ann, None).await.status, 403);
    assert_eq!(api.call("PUT", "/admin/api/segments/beta", &root, Some(wide)).await.status, 200);
}

#[tokio::test]
async fn a_read_only_file_store_keeps_no_requests_or_webhooks_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flags.yaml");
    std::fs::write(&path, "flags:\n  - key: MIN_RATE\n    type: int\n    value: 60\n    kind: config\n")
        .unwrap();
    let store = Arc::new(ff_store::FileStore::open(&path).unwrap());
    const TOKEN: &str = "env-secret-token-0123456789abcdef";
    let admin =
        Admin::new(store).require_approval([FlagKind::Config]).env_admin_token(Some(TOKEN.into())).unwrap();
    let app = Router::new().nest("/admin", admin.router());
    let list = call(&app, "GET", "/admin/api/requests", TOKEN, None).await;
    assert_eq!((list.status, list.body["requests"].clone()), (200, json!([])));
    let body = json!({"changes": [{"op": "update", "key": "MIN_RATE", "value": 1}]});
    let r = call(&app, "POST", "/admin/api/requests", TOKEN, Some(body)).await;
    assert_eq!((r.status, r.body["error"].as_str()), (409, Some("read_only")), "{}", r.body);
    let r =
        call(&app, "POST", "/admin/api/webhooks", TOKEN, Some(json!({"url": "http://127.0.0.1:9/h"}))).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body["message"].as_str().unwrap().contains("keeps no webhooks"), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_due_together_apply_in_the_order_of_their_times() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("ff.db").display());
    let store = Arc::new(SqlStore::connect(&url).await.unwrap());
    sync(&*store, &[RATE.decl(), CHECKOUT.decl()], &Default::default()).await.unwrap();
    let (_, ann) = ff_admin::create_token(&*store, "ann", Role::Editor, "test", None).await.unwrap();
    // Made while no scheduler runs (its first tick an hour away): both are overdue at once.
    let idle = Router::new()
        .nest("/admin", Admin::new(store.clone()).schedule_interval(Duration::from_secs(3600)).router());
    let at_ms = |ms| at(OffsetDateTime::now_utc() + time::Duration::milliseconds(ms));
    for (value, ms) in [(false, 200), (true, 300)] {
        let body = json!({"changes": [{"op": "update", "key": "NEW_CHECKOUT", "value": value}], "apply_at": at_ms(ms)});
        assert_eq!(call(&idle, "POST", "/admin/api/requests", &ann, Some(body)).await.status, 201);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _running = Router::new().nest("/admin", admin(store.clone()).router());
    eventually(|| async {
        let all = call(&idle, "GET", "/admin/api/requests?status=all", &ann, None).await;
        all.body["requests"].as_array().unwrap().iter().all(|r| r["status"] == "applied")
    })
    .await;
    // Off (due first, made first) then on (made last, which a newest-first walk takes first): on.
    assert_eq!(store.flag(CHECKOUT.key()).await.unwrap().unwrap().value.to_json(), json!(true));
}
