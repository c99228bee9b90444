//! The admin page in a real browser: headless Chromium (Debian's package) driven by
//! `tests/browser/flag-page.mjs` (playwright-core), against the example app.
//!
//! Skipped with a notice when Chromium or the script's `node_modules` are missing,
//! unless `FF_REQUIRE_BROWSER=1` (CI), which makes that a failure.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ff_store::{Role, Source, SqlStore};
use serde_json::{Value, json};

fn browser_ready(dir: &Path) -> bool {
    let required = std::env::var("FF_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let missing = if !Path::new(&chromium).exists() {
        Some(format!("{chromium} is missing (apt-get install chromium)"))
    } else if !dir.join("node_modules/playwright-core").exists() {
        Some(format!("{}/node_modules is missing (npm ci --prefix {})", dir.display(), dir.display()))
    } else {
        None
    };
    match missing {
        Some(why) => {
            assert!(!required, "FF_REQUIRE_BROWSER=1 but {why}");
            eprintln!("skipping the browser test: {why}");
            false
        }
        None => true,
    }
}

async fn config(base: &str, user: &str) -> Value {
    let res = reqwest::Client::new().get(format!("{base}/me/config")).header("x-user-id", user).send().await;
    res.unwrap().json().await.unwrap()
}

async fn wait_for(base: &str, user: &str, key: &str, value: Value) {
    let start = Instant::now();
    while config(base, user).await[key] != value {
        assert!(start.elapsed() < Duration::from_secs(10), "{user} never saw {key}={value}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The example app over a fresh SQLite file: its store and `Source` (the directory
/// lives as long as the returned guard).
async fn example_store() -> (tempfile::TempDir, Arc<SqlStore>, Source) {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("ff.db").display());
    let store = Arc::new(SqlStore::connect(&db).await.unwrap());
    let source = Source::builder_arc(store.clone()).poll_interval(Duration::from_millis(50)).start().await;
    (dir, store, source)
}

/// Serves the example's router with `admin` on a loopback port; its base URL.
async fn serve(source: Source, admin: ff_admin::Admin) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, ff_axum_example::make_service(source, admin)).await });
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_in_flip_a_flag_and_add_an_override_in_chromium() {
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    if !browser_ready(&scripts) {
        return;
    }
    let (_dir, store, source) = example_store().await;
    let source_view = source.clone();
    let (_, token) =
        ff_admin::create_token(&*store, "browser-operator", Role::Editor, "test", None).await.unwrap();
    let admin = ff_admin::Admin::new(store.clone());
    let base = serve(source, admin).await;
    assert_eq!(config(&base, "tester").await["MINIMUM_TIME_REQUIRED_BEFORE_BOOKING"], "24h");

    // A targeting using what the editor shows but does not build (a rule's split,
    // numbers in a list, a step's switch, bucketing, a salt): read back unchanged.
    let rich = json!({
        "rules": [
            {"clauses": [{"attribute": "age", "op": "in", "values": [30, 40]}, {"attribute": "plan", "op": "eq", "values": ["pro"], "negate": true}],
             "split": {"variations": [{"value": true, "weight": 2500}, {"value": false, "weight": 7500}]}, "description": "thirties"},
            {"clauses": [{"attribute": "score", "op": "gte", "values": [7.5]}], "value": true}
        ],
        "bucket_by": "org_id",
        "salt": "calendar-2026",
        "schedule": [{"at": "2030-01-01T00:00:00Z", "enabled": false}]
    });
    let patch =
        ff_store::FlagPatch { targeting: Some(serde_json::from_value(rich).unwrap()), ..Default::default() };
    let m = ff_store::Mutation::UpdateFlag {
        key: "EXTERNAL_CALENDAR_INTEGRATION".into(),
        patch,
        expected_version: None,
    };
    ff_store::FlagWriter::write(&*store, ff_store::Write::new("tests", m)).await.unwrap();
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    std::fs::create_dir_all(&target).unwrap();
    let screenshot = target.join("ff-admin-flag-page.png");
    let _ = std::fs::remove_file(&screenshot);
    let script = scripts.join("flag-page.mjs");
    let out = tokio::process::Command::new("node")
        .arg(&script)
        .env("FF_BASE", &base)
        .env("FF_TOKEN", &token)
        .env("FF_SCREENSHOT", &screenshot)
        .env("FF_EDITOR_SCREENSHOT", target.join("ff-admin-targeting-editor.png"))
        .output();
    let out =
        tokio::time::timeout(Duration::from_secs(120), out).await.expect("the browser test hung").unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "browser script failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("browser test ok"), "{stdout}");
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 1000, "screenshot saved under target/");

    // What the operator did in the browser reaches the app.
    wait_for(&base, "tester", "MINIMUM_TIME_REQUIRED_BEFORE_BOOKING", json!("0s")).await;
    assert_eq!(config(&base, "alice").await["MINIMUM_TIME_REQUIRED_BEFORE_BOOKING"], "24h");
    wait_for(&base, "alice", "CREDITS_PAYMENTS", json!(false)).await;
    let pay = reqwest::Client::new()
        .post(format!("{base}/payments"))
        .json(&json!({"amount_cents": 100, "method": "credits"}))
        .send()
        .await
        .unwrap();
    assert_eq!(pay.status().as_u16(), 503);
    let log =
        ff_store::FlagWriter::changes(&*store, &ff_store::ChangeQuery { limit: 2, ..Default::default() })
            .await
            .unwrap();
    assert!(log.iter().all(|c| c.actor == "browser-operator"), "{log:?}");

    // The rule and the rollout built in the editor: pro plans get the new checkout,
    // and about a tenth of everyone else.
    let snapshot = source_view.snapshot();
    let checkout = ff_core::Flag::<bool>::new("NEW_CHECKOUT", false);
    let pro = ff_core::EvalContext::user("carol").with_attribute("plan", "enterprise");
    assert_eq!(snapshot.evaluate(&checkout, &pro).reason, ff_core::Reason::Rule(0));
    assert!(snapshot.evaluate(&checkout, &pro).value);
    let on = (0..2_000)
        .filter(|i| {
            snapshot
                .evaluate(
                    &checkout,
                    &ff_core::EvalContext::user(format!("user-{i}")).with_attribute("plan", "free"),
                )
                .value
        })
        .count();
    assert!((150..=250).contains(&on), "{on} of 2,000 free users got it");
    // The second rule's split, built with the slider: half of Germany.
    let german = (0..2_000)
        .filter(|i| {
            let ctx = ff_core::EvalContext::user(format!("user-{i}")).with_attribute("country", "de");
            let d = snapshot.evaluate(&checkout, &ctx);
            assert_eq!(d.reason, ff_core::Reason::Rule(1));
            d.value
        })
        .count();
    assert!((900..=1100).contains(&german), "{german} of 2,000 German users got it");
}

#[path = "../../ff-admin/tests/support/receiver.rs"]
mod receiver;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_approved_a_scheduled_change_and_a_signed_webhook_in_chromium() {
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    if !browser_ready(&scripts) {
        return;
    }
    let (_dir, store, source) = example_store().await;
    let view = source.clone();
    let mut tokens = Vec::new();
    for (name, role) in [("root", Role::Admin), ("ann", Role::Editor), ("bob", Role::Editor)] {
        tokens.push(ff_admin::create_token(&*store, name, role, "test", None).await.unwrap().1);
    }
    let admin = ff_admin::Admin::new(store.clone())
        .require_approval([ff_core::FlagKind::Config])
        .schedule_interval(Duration::from_millis(100));
    let base = serve(source, admin).await;
    let (hook, inbox) = receiver::receiver().await;
    let screenshot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ff-admin-request-page.png");
    let _ = std::fs::remove_file(&screenshot);

    let out = tokio::process::Command::new("node")
        .arg(scripts.join("requests.mjs"))
        .env("FF_BASE", &base)
        .env("FF_ROOT", &tokens[0])
        .env("FF_ANN", &tokens[1])
        .env("FF_BOB", &tokens[2])
        .env("FF_HOOK", &hook)
        .env("FF_REQUEST_SCREENSHOT", &screenshot)
        .output();
    let started = time::OffsetDateTime::now_utc();
    let out =
        tokio::time::timeout(Duration::from_secs(120), out).await.expect("the browser test hung").unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "browser script failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("browser test ok"), "{stdout}");
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 1000, "screenshot saved under target/");
    let secret = stdout.lines().find_map(|l| l.strip_prefix("secret=")).unwrap().to_owned();

    // Approved by Bob, so served.
    let lead = ff_core::Flag::<String>::new("MINIMUM_TIME_REQUIRED_BEFORE_BOOKING", "");
    let anyone = ff_core::EvalContext::user("alice");
    let start = Instant::now();
    while view.snapshot().evaluate(&lead, &anyone).value != "12h" {
        assert!(start.elapsed() < Duration::from_secs(10), "the approved change is not served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The scheduled change: stored in UTC from Ann's Berlin time, applied at its time.
    let requests = ff_store::FlagWriter::requests(&*store).await.unwrap();
    let scheduled = ff_api::ChangeRequest::from_record(&requests[1]).unwrap();
    let at = scheduled.apply_at.unwrap();
    assert!(
        at > started && at < started + time::Duration::seconds(60),
        "{at} is not a few seconds after {started}"
    );
    let pricing = ff_core::Flag::<bool>::new("NEW_CHECKOUT_PRICING", false);
    assert!(!view.snapshot().evaluate(&pricing, &anyone).value || time::OffsetDateTime::now_utc() >= at);
    while !view.snapshot().evaluate(&pricing, &anyone).value {
        assert!(start.elapsed() < Duration::from_secs(45), "the scheduled change was not applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(time::OffsetDateTime::now_utc() >= at, "applied before its time");

    // The webhook got the request, its approval and the changes, signed with its secret.
    let start = Instant::now();
    let events = loop {
        let got = inbox.lock().unwrap().got.clone();
        let events: Vec<ff_api::WebhookEvent> =
            got.iter().map(|(_, b)| serde_json::from_slice(b).unwrap()).collect();
        if events.iter().any(|e| e.change.key == "NEW_CHECKOUT_PRICING" && e.event == "flag.update") {
            for (headers, body) in &got {
                let h = |n: &str| headers.get(n).unwrap().to_str().unwrap().to_owned();
                let ts: i64 = h("x-ff-timestamp").parse().unwrap();
                assert_eq!(h("x-ff-signature"), ff_admin::webhook_signature(&secret, ts, body));
            }
            break events;
        }
        assert!(start.elapsed() < Duration::from_secs(45), "the webhook did not get the changes: {events:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let approved = events
        .iter()
        .find(|e| e.event == "flag.update" && e.change.key == "MINIMUM_TIME_REQUIRED_BEFORE_BOOKING")
        .unwrap();
    assert_eq!(
        (approved.change.actor.as_str(), approved.change.approved_by.as_deref()),
        ("ann", Some("bob"))
    );
    assert!(events.iter().any(|e| e.kind == "request"), "requests are sent too");
}
