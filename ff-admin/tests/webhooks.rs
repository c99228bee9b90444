//! Webhooks against a receiver the test starts: every change arrives signed, once, in
//! order; a failing or unreachable endpoint never holds a write up and gets what it
//! missed once it answers; Slack text; refusals.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::HeaderMap;
use ff_admin::Admin;
use ff_api::{WebhookCreated, WebhookEvent, WebhookList};
use ff_core::{Flag, FlagKind};
use ff_store::{Role, SqlStore, sync};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const RATE: Flag<i64> = Flag::new("MIN_RATE", 60).range(0, 1000);
const CHECKOUT: Flag<bool> = Flag::new("NEW_CHECKOUT", false);

#[path = "support/receiver.rs"]
mod receiver;
use receiver::{Inbox, receiver};

struct Api {
    store: Arc<SqlStore>,
    app: Router,
    second: Router,
    root: String,
    ann: String,
    bob: String,
    _dir: tempfile::TempDir,
}

async fn api() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("ff.db").display());
    let store = Arc::new(SqlStore::connect(&url).await.unwrap());
    sync(&*store, &[RATE.decl(), CHECKOUT.decl()], &Default::default()).await.unwrap();
    let (_, root) = ff_admin::create_token(&*store, "root", Role::Admin, "test", None).await.unwrap();
    let (_, ann) = ff_admin::create_token(&*store, "ann", Role::Editor, "test", None).await.unwrap();
    let (_, bob) = ff_admin::create_token(&*store, "bob", Role::Editor, "test", None).await.unwrap();
    let admin = || {
        Admin::new(store.clone())
            .require_approval([FlagKind::Config])
            .schedule_interval(Duration::from_millis(50))
    };
    // Two instances: one delivers (the lease), each event once.
    let app = Router::new().nest("/admin", admin().router());
    let second = Router::new().nest("/admin", admin().router());
    Api { store, app, second, root, ann, bob, _dir: dir }
}

async fn call(app: &Router, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("/admin/api{path}"))
        .header("authorization", format!("Bearer {token}"));
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let body = body.map(|b| Body::from(b.to_string())).unwrap_or_else(Body::empty);
    let res = app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
    let status = res.status().as_u16();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// PATCHes a flag at its current version (the ETag a GET gives).
async fn patch(app: &Router, token: &str, key: &str, body: Value) -> u16 {
    let get = http::Request::builder()
        .uri(format!("/admin/api/flags/{key}"))
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let res = app.clone().oneshot(get).await.unwrap();
    let etag = res.headers().get("etag").unwrap().to_str().unwrap().to_owned();
    let req = http::Request::builder()
        .method("PATCH")
        .header("if-match", etag)
        .uri(format!("/admin/api/flags/{key}"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    app.clone().oneshot(req).await.unwrap().status().as_u16()
}

async fn wait_for(inbox: &Arc<Mutex<Inbox>>, n: usize) {
    let start = Instant::now();
    while inbox.lock().unwrap().got.len() < n {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "only {} of {n} arrived",
            inbox.lock().unwrap().got.len()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).unwrap().to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_arrives_signed_once_in_order() {
    let api = api().await;
    let (url, inbox) = receiver().await;
    let (status, made) = call(&api.app, "POST", "/webhooks", &api.root, Some(json!({"url": url}))).await;
    assert_eq!(status, 201, "{made}");
    let made: WebhookCreated = serde_json::from_value(made).unwrap();
    assert_eq!(made.secret.len(), 64, "a made secret, shown once");
    let (_, list) = call(&api.app, "GET", "/webhooks", &api.root, None).await;
    assert!(!list.to_string().contains(&made.secret), "never listed: {list}");

    // A direct change, a held one, its approval (a flag change and the request applied).
    assert_eq!(
        patch(&api.app, &api.ann, "NEW_CHECKOUT", json!({"value": true, "reason": "launch"})).await,
        200
    );
    assert_eq!(patch(&api.app, &api.ann, "MIN_RATE", json!({"value": 1})).await, 202);
    let (status, _) = call(&api.second, "POST", "/requests/1/approve", &api.bob, None).await;
    assert_eq!(status, 200);
    wait_for(&inbox, 5).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = inbox.lock().unwrap().got.clone();
    assert_eq!(got.len(), 5, "each once, though two instances run");
    let events: Vec<WebhookEvent> = got.iter().map(|(_, b)| serde_json::from_slice(b).unwrap()).collect();
    let seqs: Vec<u64> = events.iter().map(|e| e.change.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
    let summary: Vec<(&str, &str)> = events.iter().map(|e| (e.event.as_str(), e.kind.as_str())).collect();
    assert_eq!(
        summary,
        [
            ("webhook.add", "webhook"),
            ("flag.update", "flag"),
            ("request.put", "request"),
            ("flag.update", "flag"),
            ("request.put", "request")
        ]
    );
    // Its own addition, audited without the secret, is the first thing it gets.
    assert_eq!((events[0].change.actor.as_str(), events[0].change.subject.as_deref()), ("root", Some("1")));
    assert!(!serde_json::to_string(&events[0]).unwrap().contains(&made.secret));
    assert_eq!(events[1].change.reason.as_deref(), Some("launch"));
    assert_eq!(events[3].change.approved_by.as_deref(), Some("bob"));
    assert!(events[3].text.contains("(approved by bob)"), "{}", events[3].text);
    assert_eq!(events[4].change.after.as_ref().unwrap()["status"], "applied");
    for ((headers, body), e) in got.iter().zip(&events) {
        let ts: i64 = header(headers, "x-ff-timestamp").parse().unwrap();
        assert_eq!(header(headers, "x-ff-signature"), ff_admin::webhook_signature(&made.secret, ts, body));
        assert_eq!(header(headers, "x-ff-event"), e.event);
        assert_eq!(header(headers, "x-ff-delivery"), e.id);
        assert_eq!(e.id, format!("{}-{}", made.webhook.id, e.change.seq));
    }
    let (_, list) = call(&api.app, "GET", "/webhooks", &api.root, None).await;
    let list: WebhookList = serde_json::from_value(list).unwrap();
    let view = &list.webhooks[0];
    assert_eq!((view.delivered_seq, view.failures), (*seqs.last().unwrap(), 0));
    assert_eq!(view.deliveries.len(), 5);
    assert!(view.deliveries.iter().all(|d| d.status == Some(204) && d.error.is_none()));

    // Removed: nothing more is sent.
    assert_eq!(call(&api.app, "DELETE", "/webhooks/1", &api.root, None).await.0, 204);
    assert_eq!(patch(&api.app, &api.ann, "NEW_CHECKOUT", json!({"value": false})).await, 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(inbox.lock().unwrap().got.len(), 5);
    assert_eq!(call(&api.app, "DELETE", "/webhooks/1", &api.root, None).await.0, 404);
    // Both in the audit log, by the admin who did them, never with the secret.
    let (_, log) = call(&api.app, "GET", "/changes?actor=root", &api.root, None).await;
    let actions: Vec<&str> =
        log["changes"].as_array().unwrap().iter().map(|c| c["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["webhook.remove", "webhook.add"]);
    assert!(!log.to_string().contains(&made.secret), "never the secret");
    assert!(!log.to_string().contains("/hook"), "the URL's origin only: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_or_unreachable_endpoint_never_holds_a_write_and_misses_nothing() {
    let api = api().await;
    // Unreachable: a port nobody listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let (status, _) = call(&api.app, "POST", "/webhooks", &api.root, Some(json!({"url": dead}))).await;
    assert_eq!(status, 201);
    // And one that fails twice, then answers.
    let (url, inbox) = receiver().await;
    inbox.lock().unwrap().refuse = 2;
    let body = json!({"url": url, "events": ["flag"], "secret": "a-secret-of-20-chars"});
    assert_eq!(call(&api.app, "POST", "/webhooks", &api.root, Some(body)).await.0, 201);

    let start = Instant::now();
    for v in [true, false, true] {
        assert_eq!(patch(&api.app, &api.ann, "NEW_CHECKOUT", json!({"value": v})).await, 200);
    }
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "writes never wait for webhooks: {:?}",
        start.elapsed()
    );
    // Retried with a backoff (1 s, then 2 s) until it answers; all three, in order.
    wait_for(&inbox, 3).await;
    let values: Vec<Value> = inbox
        .lock()
        .unwrap()
        .got
        .iter()
        .map(|(_, b)| {
            serde_json::from_slice::<WebhookEvent>(b).unwrap().change.after.unwrap()["value"].clone()
        })
        .collect();
    assert_eq!(values, [json!(true), json!(false), json!(true)]);
    // A round's deliveries are listed once the round ends, a moment after the last
    // arrived.
    let start = Instant::now();
    let list = loop {
        let (_, list) = call(&api.app, "GET", "/webhooks", &api.root, None).await;
        let list: WebhookList = serde_json::from_value(list).unwrap();
        let ok = list.webhooks[1].deliveries.iter().filter(|d| d.status == Some(204)).count();
        if ok == 3 || start.elapsed() > Duration::from_secs(15) {
            break list;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let dead = &list.webhooks[0];
    assert!(dead.failures >= 1 && dead.retry_at.is_some(), "{dead:?}");
    assert!(
        dead.deliveries[0].error.as_deref().unwrap().starts_with("cannot connect"),
        "{:?}",
        dead.deliveries
    );
    let flaky = &list.webhooks[1];
    let refused: Vec<_> = flaky.deliveries.iter().filter(|d| d.status == Some(500)).collect();
    assert_eq!(refused.len(), 2, "{:?}", flaky.deliveries);
    assert!(refused.iter().all(|d| d.error.as_deref() == Some("answered 500")));
    assert_eq!(flaky.deliveries.iter().filter(|d| d.status == Some(204)).count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_text_for_the_events_asked_for_and_refusals() {
    let api = api().await;
    let (url, inbox) = receiver().await;
    let body = json!({"url": url, "events": ["request"], "format": "slack"});
    assert_eq!(call(&api.app, "POST", "/webhooks", &api.root, Some(body)).await.0, 201);
    assert_eq!(patch(&api.app, &api.ann, "NEW_CHECKOUT", json!({"value": true})).await, 200);
    assert_eq!(patch(&api.app, &api.ann, "MIN_RATE", json!({"value": 5, "reason": "cheaper"})).await, 202);
    wait_for(&inbox, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = inbox.lock().unwrap().got.clone();
    assert_eq!(got.len(), 1, "only the request");
    let body: Value = serde_json::from_slice(&got[0].1).unwrap();
    assert_eq!(body, json!({"text": "ann: change request 1 for MIN_RATE is pending — cheaper"}));

    let refusals = [
        (json!({"url": "ftp://example.com/x"}), 400, "must be http or https"),
        (json!({"url": "https://user:pw@example.com/x"}), 400, "credentials"),
        (json!({"url": "http://x/y", "events": ["flags"]}), 400, "unknown event \"flags\""),
        (json!({"url": "http://x/y", "secret": "short"}), 400, "16 to 256"),
        (json!({"url": "http://x/y", "format": "xml"}), 422, "format"),
        (json!({"href": "http://x/y"}), 422, "href"),
    ];
    for (body, status, says) in refusals {
        let (got, reply) = call(&api.app, "POST", "/webhooks", &api.root, Some(body.clone())).await;
        assert_eq!(got, status, "{body}: {reply}");
        assert!(reply["message"].as_str().unwrap().contains(says), "{body}: {reply}");
    }
    let (status, _) = call(&api.app, "POST", "/webhooks", &api.ann, Some(json!({"url": "http://x/y"}))).await;
    assert_eq!(status, 403, "admins only");

    // A guard's action (a write by the guardian's actor) is its own kind.
    let (guard_url, guard_inbox) = receiver().await;
    let body = json!({"url": guard_url, "events": ["guard"]});
    assert_eq!(call(&api.app, "POST", "/webhooks", &api.root, Some(body)).await.0, 201);
    let rollback = ff_store::Write::new(
        ff_store::guard::GUARD_ACTOR,
        ff_store::Mutation::set_value("NEW_CHECKOUT", false),
    )
    .reason("rolled back: error rate 20 % against 0 %");
    ff_store::FlagWriter::write(&*api.store, rollback).await.unwrap();
    assert_eq!(patch(&api.app, &api.ann, "NEW_CHECKOUT", json!({"value": true})).await, 200);
    wait_for(&guard_inbox, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = guard_inbox.lock().unwrap().got.clone();
    assert_eq!(got.len(), 1, "only the guard's write");
    let event: WebhookEvent = serde_json::from_slice(&got[0].1).unwrap();
    assert_eq!((event.kind.as_str(), event.change.actor.as_str()), ("guard", ff_store::guard::GUARD_ACTOR));
    assert!(event.text.contains("rolled back"), "{}", event.text);
    let (_, list) = call(&api.app, "GET", "/webhooks", &api.root, None).await;
    assert_eq!(list["webhooks"].as_array().unwrap().len(), 2, "the two added, nothing refused");
}
