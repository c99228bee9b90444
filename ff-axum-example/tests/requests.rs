//! Change requests and webhooks through the real example binary, configured by its
//! environment (`FF_APPROVALS`, `FF_SCHEDULE_MS`): a config setting's change waits for
//! a second editor, is then served, reaches a webhook signed, and shows in `/metrics`.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[path = "support/binary.rs"]
mod binary;

const OPERATOR: &str = "requests-operator-secret-0123456789abcdef";
const LEAD: &str = "MINIMUM_TIME_REQUIRED_BEFORE_BOOKING";

#[path = "../../ff-admin/tests/support/receiver.rs"]
mod receiver;

async fn api(
    base: &str,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{base}/admin/api{path}"))
        .header("authorization", format!("Bearer {token}"));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn lead(base: &str) -> Value {
    let res =
        reqwest::Client::new().get(format!("{base}/me/config")).header("x-user-id", "alice").send().await;
    res.unwrap().json::<Value>().await.unwrap()[LEAD].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_change_waits_for_a_second_editor_then_is_served_signed_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("ff.db").display());
    let app = binary::Binary::start(
        &db,
        &[("FF_ADMIN_TOKEN", OPERATOR), ("FF_APPROVALS", "config"), ("FF_SCHEDULE_MS", "100")],
    );
    let base = app.base.clone();
    let mut editors = Vec::new();
    for name in ["ann", "bob"] {
        let body = json!({"name": name, "role": "editor"});
        let (status, made) = api(&base, OPERATOR, Method::POST, "/tokens", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{made}");
        editors.push(made["token"].as_str().unwrap().to_owned());
    }
    let (ann, bob) = (&editors[0], &editors[1]);
    let (hook, inbox) = receiver::receiver().await;
    let (status, made) = api(
        &base,
        OPERATOR,
        Method::POST,
        "/webhooks",
        Some(json!({"url": hook, "events": ["flag", "request"]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let secret = made["secret"].as_str().unwrap().to_owned();

    // Ann's change to a config setting is held; nothing is served.
    let (_, flag) = api(&base, ann, Method::GET, &format!("/flags/{LEAD}"), None).await;
    assert_eq!(flag["flag"]["needs_approval"], true, "{flag}");
    let res = reqwest::Client::new()
        .patch(format!("{base}/admin/api/flags/{LEAD}"))
        .header("authorization", format!("Bearer {ann}"))
        .header("if-match", format!("\"{}\"", flag["flag"]["version"]))
        .json(&json!({"value": "12h", "reason": "shorter lead time"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let held: ff_api::RequestMade = res.json().await.unwrap();
    assert_eq!(lead(&base).await, "24h");
    // Bob approves it: served.
    let path = format!("/requests/{}/approve", held.request.id);
    let (status, done) = api(&base, bob, Method::POST, &path, None).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    let start = Instant::now();
    while lead(&base).await != "12h" {
        assert!(start.elapsed() < Duration::from_secs(10), "the approved change is not served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The webhook got the request, the change and the applied request, signed.
    let start = Instant::now();
    while inbox.lock().unwrap().got.len() < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{} events arrived",
            inbox.lock().unwrap().got.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = inbox.lock().unwrap().got.clone();
    let events: Vec<ff_api::WebhookEvent> =
        got.iter().map(|(_, b)| serde_json::from_slice(b).unwrap()).collect();
    let change = events.iter().find(|e| e.event == "flag.update").unwrap();
    assert_eq!((change.change.actor.as_str(), change.change.approved_by.as_deref()), ("ann", Some("bob")));
    for (headers, body) in &got {
        let h = |n: &str| headers.get(n).unwrap().to_str().unwrap().to_owned();
        let ts: i64 = h("x-ff-timestamp").parse().unwrap();
        assert_eq!(h("x-ff-signature"), ff_admin::webhook_signature(&secret, ts, body));
    }
    let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    let ok = metrics
        .lines()
        .find(|l| l.starts_with("ff_webhook_deliveries_total") && l.contains("result=\"ok\""))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(ok.rsplit(' ').next().unwrap().parse::<f64>().unwrap() >= 3.0, "{ok}");
    assert!(metrics.contains("ff_change_requests_open 0"), "{metrics}");
}

#[test]
fn an_unknown_kind_in_ff_approvals_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("ff.db").display());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ff-axum-example"))
        .env("FF_LISTEN", "127.0.0.1:0")
        .env("DATABASE_URL", db)
        .env("FF_APPROVALS", "config,releases")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("FF_APPROVALS: unknown flag kind \"releases\""), "{stderr}");
}
