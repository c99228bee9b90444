//! End to end: the real binary on a free loopback port, flags changed through the Store API.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ff_api::{ApiError, ChangeList, OverrideSet, OverrideWritten, Reasoned, UserFlag, UserLookup};
use ff_core::{Reason, Split, Targeting, Variation};
use ff_store::{FlagPatch, FlagWriter, Mutation, SqlStore, UsageStore, Write};
use reqwest::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[path = "support/binary.rs"]
mod binary;

/// The binary and a client for it.
struct App {
    /// Kept for its `Drop`: the process lives as long as the test holds the app.
    _binary: binary::Binary,
    base: String,
    http: reqwest::Client,
}

impl App {
    fn start(database_url: &str) -> App {
        Self::start_with(database_url, &[])
    }

    fn start_with(database_url: &str, env: &[(&str, &str)]) -> App {
        let binary = binary::Binary::start(database_url, env);
        App { base: binary.base.clone(), _binary: binary, http: reqwest::Client::new() }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        user: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.send_as(method, path, user, body, &[]).await.0
    }

    /// A request with extra headers; returns the ETag too.
    async fn send_as(
        &self,
        method: reqwest::Method,
        path: &str,
        user: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> ((StatusCode, Value), Option<String>) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(u) = user {
            req = req.header("x-user-id", u);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let etag = res.headers().get("etag").map(|v| v.to_str().unwrap().to_owned());
        ((status, res.json().await.unwrap_or(Value::Null)), etag)
    }

    async fn config(&self, user: &str) -> Value {
        self.send(reqwest::Method::GET, "/me/config", Some(user), None).await.1
    }

    /// Waits (bounded) until `user` sees `key = value`: propagation is asynchronous.
    async fn wait_for(&self, user: &str, key: &str, value: Value) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let config = self.config(user).await;
            if config[key] == value {
                return;
            }
            assert!(Instant::now() < deadline, "{user} never saw {key}={value}: {config}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn book(&self, user: &str, hours_ahead: i64, captioner: &str) -> (StatusCode, Value) {
        let at = (OffsetDateTime::now_utc() + time::Duration::hours(hours_ahead)).format(&Rfc3339).unwrap();
        let body = json!({ "captioner_id": captioner, "starts_at": at });
        self.send(reqwest::Method::POST, "/bookings", Some(user), Some(body)).await
    }

    async fn pay(&self, user: &str, method: &str) -> (StatusCode, Value) {
        let body = json!({ "amount_cents": 1000, "method": method });
        self.send(reqwest::Method::POST, "/payments", Some(user), Some(body)).await
    }

    async fn rate(&self, user: Option<&str>, rate: f64) -> (StatusCode, Value) {
        self.send(reqwest::Method::PUT, "/captioners/me/rate", user, Some(json!({ "hourly_rate": rate })))
            .await
    }
}

/// An admin answer as its ff-api type, exactly: written back, the same JSON. (The
/// booking app's own answers have no shared type and are read as JSON.)
fn typed<T: Serialize + DeserializeOwned>(body: &Value) -> T {
    let name = std::any::type_name::<T>();
    let typed: T =
        serde_json::from_value(body.clone()).unwrap_or_else(|e| panic!("not a {name}: {e}: {body}"));
    assert_eq!(serde_json::to_value(&typed).unwrap(), *body, "not exactly a {name}");
    typed
}

/// A well-formed admin request body, built from its type.
fn req(body: impl Serialize) -> Option<Value> {
    Some(serde_json::to_value(body).unwrap())
}

/// What the user of an admin user lookup is served of `key`.
fn served(lookup: &Value, key: &str) -> UserFlag {
    let lookup: UserLookup = typed(lookup);
    lookup.flags.into_iter().find(|f| f.key == key).unwrap_or_else(|| panic!("no {key} in the lookup"))
}

async fn write(store: &SqlStore, m: Mutation) {
    store.write(Write::new("e2e", m).reason("e2e test")).await.unwrap();
}

async fn story(database_url: &str) {
    let app = App::start(database_url);
    let store = SqlStore::connect(database_url).await.unwrap();

    // Defaults synced from code on first start.
    let defaults = app.config("alice").await;
    assert_eq!(
        defaults,
        json!({
            "MINIMUM_TIME_REQUIRED_BEFORE_BOOKING": "24h",
            "CAPTIONER_HOURLY_RATE_MIN": 60.0,
            "CAPTIONER_HOURLY_RATE_MAX": 500.0,
            "EXTERNAL_CALENDAR_INTEGRATION": false,
            "CREDITS_PAYMENTS": true,
            "NEW_CHECKOUT": false,
            "NEW_CHECKOUT_PRICING": false,
        })
    );

    // The tester story: lead time 0 for tester only.
    let (s, body) = app.book("tester", 1, "c1").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"], "too_soon");
    write(&store, Mutation::set_override("MINIMUM_TIME_REQUIRED_BEFORE_BOOKING", "tester", "0s")).await;
    app.wait_for("tester", "MINIMUM_TIME_REQUIRED_BEFORE_BOOKING", json!("0s")).await;
    let (s, body) = app.book("tester", 1, "c1").await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_eq!(body["availability_checked_by"], "basic");
    let (s, body) = app.book("alice", 1, "c1").await;
    assert_eq!((s, body["error"].clone()), (StatusCode::UNPROCESSABLE_ENTITY, json!("too_soon")));
    assert_eq!(app.book("alice", 25, "c1").await.0, StatusCode::CREATED);

    // EXTERNAL_CALENDAR_INTEGRATION: off = basic check, on = the new path.
    assert_eq!(app.book("alice", 25, "busy-1").await.0, StatusCode::CONFLICT);
    write(&store, Mutation::set_value("EXTERNAL_CALENDAR_INTEGRATION", true)).await;
    app.wait_for("alice", "EXTERNAL_CALENDAR_INTEGRATION", json!(true)).await;
    let (s, body) = app.book("alice", 25, "c1").await;
    assert_eq!(
        (s, body["availability_checked_by"].clone()),
        (StatusCode::CREATED, json!("external_calendar"))
    );

    // Rates: $1 minimum for tester, $60 for everyone else.
    assert_eq!(app.rate(Some("tester"), 1.0).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    write(&store, Mutation::set_override("CAPTIONER_HOURLY_RATE_MIN", "tester", 1.0)).await;
    app.wait_for("tester", "CAPTIONER_HOURLY_RATE_MIN", json!(1.0)).await;
    assert_eq!(app.rate(Some("tester"), 1.0).await.0, StatusCode::OK);
    let (s, body) = app.rate(Some("alice"), 1.0).await;
    assert_eq!((s, body["error"].clone()), (StatusCode::UNPROCESSABLE_ENTITY, json!("rate_out_of_range")));
    assert!(body["message"].as_str().unwrap().contains("between 60 and 500"), "{body}");
    assert_eq!(app.rate(Some("alice"), 75.0).await.0, StatusCode::OK);
    assert_eq!(app.rate(Some("alice"), 501.0).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.rate(None, 75.0).await.0, StatusCode::UNAUTHORIZED);

    // CREDITS_PAYMENTS kill switch: off means off for everyone, overrides included.
    write(&store, Mutation::set_override("CREDITS_PAYMENTS", "tester", true)).await;
    assert_eq!(app.pay("alice", "credits").await.0, StatusCode::CREATED);
    write(&store, Mutation::set_enabled("CREDITS_PAYMENTS", false)).await;
    app.wait_for("alice", "CREDITS_PAYMENTS", json!(false)).await;
    for user in ["alice", "tester"] {
        let (s, body) = app.pay(user, "credits").await;
        assert_eq!((s, body["error"].clone()), (StatusCode::SERVICE_UNAVAILABLE, json!("credits_disabled")));
        assert_eq!(app.pay(user, "card").await.0, StatusCode::CREATED);
    }
    write(&store, Mutation::set_enabled("CREDITS_PAYMENTS", true)).await;
    app.wait_for("tester", "CREDITS_PAYMENTS", json!(true)).await;
    assert_eq!(app.pay("tester", "credits").await.0, StatusCode::CREATED);

    // NEW_CHECKOUT, both states.
    assert_eq!(app.pay("alice", "card").await.1["checkout"], "classic");
    write(&store, Mutation::set_value("NEW_CHECKOUT", true)).await;
    app.wait_for("alice", "NEW_CHECKOUT", json!(true)).await;
    assert_eq!(app.pay("alice", "card").await.1["checkout"], "new");
    // The checkout page reads NEW_CHECKOUT and NEW_CHECKOUT_PRICING (released together
    // in one batch: faults.rs flip-storms them).
    let page = app.send(reqwest::Method::GET, "/checkout", Some("alice"), None).await;
    assert_eq!(
        page,
        (StatusCode::OK, json!({"checkout": "new", "pricing": "classic", "captioning_hour_cents": 6000}))
    );
    write(&store, Mutation::set_value("NEW_CHECKOUT_PRICING", true)).await;
    app.wait_for("alice", "NEW_CHECKOUT_PRICING", json!(true)).await;
    let page = app.send(reqwest::Method::GET, "/checkout", Some("alice"), None).await;
    assert_eq!(
        page,
        (StatusCode::OK, json!({"checkout": "new", "pricing": "new", "captioning_hour_cents": 5900}))
    );

    // Bad input is refused with the one error shape.
    let (s, body) = app.pay("alice", "bitcoin").await;
    assert_eq!((s, body["error"].clone()), (StatusCode::UNPROCESSABLE_ENTITY, json!("invalid_method")));
    let (s, body) = app
        .send(
            reqwest::Method::POST,
            "/bookings",
            Some("alice"),
            Some(json!({"captioner_id": "c1", "starts_at": "tomorrow"})),
        )
        .await;
    assert_eq!((s, body["error"].clone()), (StatusCode::UNPROCESSABLE_ENTITY, json!("invalid_starts_at")));
    let (s, body) =
        app.send(reqwest::Method::POST, "/payments", Some("alice"), Some(json!({"amount_cents": "x"}))).await;
    assert_eq!((s, body["error"].clone()), (StatusCode::UNPROCESSABLE_ENTITY, json!("invalid_body")));
    // A bad write through the store changes nothing that is served.
    let err = store
        .write(Write::new("e2e", Mutation::set_value("MINIMUM_TIME_REQUIRED_BEFORE_BOOKING", "400d")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("above the maximum \"8760h\""), "{err}");
    assert_eq!(app.config("alice").await["MINIMUM_TIME_REQUIRED_BEFORE_BOOKING"], "24h");

    let (_, health) = app.send(reqwest::Method::GET, "/healthz", None, None).await;
    assert_eq!((health["origin"].clone(), health["stale"].clone()), (json!("store"), json!(false)));
    store.close().await;
}

#[tokio::test]
async fn booking_story_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    story(&format!("sqlite://{}?mode=rwc", dir.path().join("ff.db").display())).await;
}

#[tokio::test]
async fn booking_story_on_postgres() {
    let Some(url) = ff_store::postgres_test_database().await else {
        return;
    };
    story(&url).await;
}

#[tokio::test]
async fn starts_with_the_database_unreachable_and_serves_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::start(&format!("sqlite://{}?mode=rwc", dir.path().join("missing/ff.db").display()));
    assert_eq!(app.config("alice").await["MINIMUM_TIME_REQUIRED_BEFORE_BOOKING"], "24h");
    let (_, health) = app.send(reqwest::Method::GET, "/healthz", None, None).await;
    assert_eq!((health["origin"].clone(), health["stale"].clone()), (json!("defaults"), json!(true)));
    assert_eq!(app.pay("alice", "credits").await.0, StatusCode::CREATED);
    let text = app.http.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    let errors: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("ff_refresh_errors_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(errors >= 1.0, "{text}");
}

const OPERATOR: &str = "e2e-operator-secret-0123456789abcdef";

#[tokio::test]
async fn operators_change_flags_through_the_admin_api() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("ff.db").display());
    let app = App::start_with(&url, &[("FF_ADMIN_TOKEN", OPERATOR)]);
    let auth = format!("Bearer {OPERATOR}");
    let admin = |method: Method, path: &str, body: Option<Value>| {
        let (app, auth) = (&app, auth.clone());
        let path = format!("/admin/api{path}");
        async move { app.send_as(method, &path, None, body, &[("authorization", &auth)]).await }
    };
    let ((s, _), _) = app.send_as(Method::GET, "/admin/api/flags", None, None, &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // The tester story, by an operator: lead time 0 for tester only.
    let zero = Reasoned::new(OverrideSet { value: json!("0s") }, Some("QA books an hour ahead".into()));
    let ((s, body), _) =
        admin(Method::PUT, "/flags/MINIMUM_TIME_REQUIRED_BEFORE_BOOKING/overrides/tester", req(zero)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(typed::<OverrideWritten>(&body).value, json!("0s"));
    app.wait_for("tester", "MINIMUM_TIME_REQUIRED_BEFORE_BOOKING", json!("0s")).await;
    assert_eq!(app.book("tester", 1, "c1").await.0, StatusCode::CREATED);
    assert_eq!(app.book("alice", 1, "c1").await.0, StatusCode::UNPROCESSABLE_ENTITY);
    let ((_, seen), _) = admin(Method::GET, "/users/tester", None).await;
    let lead = served(&seen, "MINIMUM_TIME_REQUIRED_BEFORE_BOOKING");
    assert_eq!((lead.value, lead.reason), (json!("0s"), Reason::Override));

    // An out-of-bounds value is refused and nothing changes.
    let below = req(OverrideSet { value: json!(-1) });
    let ((s, body), _) = admin(Method::PUT, "/flags/CAPTIONER_HOURLY_RATE_MIN/overrides/tester", below).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(typed::<ApiError>(&body).message.contains("below the minimum"), "{body}");

    // The kill switch, version-checked; then reverted from the audit log.
    let ((_, _), etag) = admin(Method::GET, "/flags/CREDITS_PAYMENTS", None).await;
    let etag = etag.unwrap();
    let ((s, body), _) = app
        .send_as(
            Method::PATCH,
            "/admin/api/flags/CREDITS_PAYMENTS",
            None,
            req(Reasoned::new(
                FlagPatch { enabled: Some(false), ..FlagPatch::default() },
                Some("incident".into()),
            )),
            &[("authorization", &auth), ("if-match", &etag)],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    app.wait_for("alice", "CREDITS_PAYMENTS", json!(false)).await;
    assert_eq!(app.pay("alice", "credits").await.0, StatusCode::SERVICE_UNAVAILABLE);
    let ((_, log), _) = admin(Method::GET, "/changes?key=CREDITS_PAYMENTS&limit=1", None).await;
    let change = &typed::<ChangeList>(&log).changes[0];
    assert_eq!((change.actor.as_str(), change.reason.as_deref()), ("env-admin", Some("incident")));
    let seq = change.seq;
    let ((s, _), _) = admin(Method::POST, &format!("/changes/{seq}/revert"), None).await;
    assert_eq!(s, StatusCode::OK);
    app.wait_for("alice", "CREDITS_PAYMENTS", json!(true)).await;
    assert_eq!(app.pay("alice", "credits").await.0, StatusCode::CREATED);
}

#[tokio::test]
async fn new_checkout_at_ten_percent_serves_the_same_tenth_twice() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("ff.db").display());
    let app = App::start_with(&url, &[("FF_ADMIN_TOKEN", OPERATOR)]);
    let auth = format!("Bearer {OPERATOR}");
    let ((_, _), etag) = app
        .send_as(Method::GET, "/admin/api/flags/NEW_CHECKOUT", None, None, &[("authorization", &auth)])
        .await;
    let variations =
        vec![Variation { value: json!(true), weight: 1000 }, Variation { value: json!(false), weight: 9000 }];
    let targeting = Targeting { split: Some(Split { variations }), ..Targeting::default() };
    let split = Reasoned::new(
        FlagPatch { targeting: Some(targeting), ..FlagPatch::default() },
        Some("ramp to 10%".into()),
    );
    let ((s, body), _) = app
        .send_as(
            Method::PATCH,
            "/admin/api/flags/NEW_CHECKOUT",
            None,
            req(split),
            &[("authorization", &auth), ("if-match", &etag.unwrap())],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    // Wait until a user in the split sees it (propagation is asynchronous).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ((_, seen), _) =
            app.send_as(Method::GET, "/admin/api/users/probe", None, None, &[("authorization", &auth)]).await;
        if served(&seen, "NEW_CHECKOUT").reason == Reason::Split {
            break;
        }
        assert!(Instant::now() < deadline, "the split never reached the store view");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // the app's poll interval is 100 ms
    let pass = || async {
        let mut answers = Vec::with_capacity(10_000);
        for i in 0..10_000 {
            answers.push(app.config(&format!("user-{i}")).await["NEW_CHECKOUT"] == json!(true));
        }
        answers
    };
    let first = pass().await;
    let count = first.iter().filter(|b| **b).count();
    assert!((850..=1150).contains(&count), "{count} of 10,000 users got the new checkout");
    assert_eq!(pass().await, first, "the same users on the second pass");
}

/// `ff_evaluations_total` samples from a Prometheus text page: (labels, value).
fn evaluations(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("ff_evaluations_total{"))
        .filter_map(|l| {
            let (labels, value) = l.rsplit_once("} ")?;
            Some((labels.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

#[tokio::test]
async fn metrics_are_scraped_and_usage_reaches_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("ff.db").display());
    let app = App::start_with(&url, &[("FF_USAGE_MS", "300")]);
    for i in 0..20 {
        assert_eq!(app.pay(&format!("user-{i}"), "credits").await.0, StatusCode::CREATED);
    }
    let scrape = || async {
        let res = app.http.get(format!("{}/metrics", app.base)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        res.text().await.unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = scrape().await;
        let credits = evaluations(&text).into_iter().find(|(l, _)| l.contains("flag=\"CREDITS_PAYMENTS\""));
        if credits.as_ref().is_some_and(|(_, v)| *v >= 20.0) {
            break text;
        }
        assert!(Instant::now() < deadline, "no CREDITS_PAYMENTS evaluations in:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (labels, n) =
        evaluations(&text).into_iter().find(|(l, _)| l.contains("flag=\"CREDITS_PAYMENTS\"")).unwrap();
    assert_eq!(n, 20.0);
    assert!(labels.contains("value_or_variant=\"true\"") && labels.contains("reason=\"global\""), "{labels}");
    // Free-form config values are not labels: the lead time's variant is `value`.
    for (labels, _) in evaluations(&text) {
        assert!(!labels.contains("value_or_variant=\"24\""), "{labels}");
    }
    let gauge = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(-1.0)
    };
    assert!(gauge("ff_snapshot_version") >= 1.0, "{text}");
    assert!((0.0..5.0).contains(&gauge("ff_snapshot_age_seconds")), "{text}");
    assert_eq!((gauge("ff_flags_stale"), gauge("ff_flags_expired")), (0.0, 0.0), "{text}");
    // The counts reach the store (one write per interval), where the admin's usage view reads them.
    let store = SqlStore::connect_lazy(&url).unwrap();
    let today = OffsetDateTime::now_utc().date();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = store.usage(today).await.unwrap();
        if rows.iter().any(|r| r.key == "CREDITS_PAYMENTS" && r.count == 20) {
            break;
        }
        assert!(Instant::now() < deadline, "usage never reached the store: {rows:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn page(app: &App) -> Value {
    app.send(reqwest::Method::GET, "/checkout", Some("alice"), None).await.1["checkout"].clone()
}

#[tokio::test]
async fn the_environment_pins_a_flag_for_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("ff.db").display());
    let pinned = App::start_with(
        &url,
        &[("FF_NEW_CHECKOUT", "true"), ("FF_MINIMUM_TIME_REQUIRED_BEFORE_BOOKING", "9999h")],
    );
    let plain = App::start(&url);
    // The store says false; only the pinned process serves true, and says so.
    assert_eq!(page(&pinned).await, "new");
    let health = pinned.send(reqwest::Method::GET, "/healthz", None, None).await.1;
    assert_eq!(health["pinned"], json!(["NEW_CHECKOUT"]), "{health}");
    assert_eq!(plain.send(reqwest::Method::GET, "/healthz", None, None).await.1["pinned"], json!([]));
    assert_eq!(page(&plain).await, "classic");
    // A value outside the declared bounds is refused (with a warning): the store's value.
    assert_eq!(pinned.config("alice").await["MINIMUM_TIME_REQUIRED_BEFORE_BOOKING"], "24h");
    // A change in the store reaches both, and the pin still wins where it is set.
    let store = SqlStore::connect(&url).await.unwrap();
    write(&store, Mutation::set_value("MINIMUM_TIME_REQUIRED_BEFORE_BOOKING", "12h")).await;
    write(&store, Mutation::set_enabled("NEW_CHECKOUT", false)).await;
    pinned.wait_for("alice", "MINIMUM_TIME_REQUIRED_BEFORE_BOOKING", json!("12h")).await;
    plain.wait_for("alice", "MINIMUM_TIME_REQUIRED_BEFORE_BOOKING", json!("12h")).await;
    assert_eq!(page(&pinned).await, "new");
    assert_eq!(page(&plain).await, "classic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_while_the_largest_targeting_the_budget_allows_is_written() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("ff.db").display());
    let app = Arc::new(App::start_with(&url, &[("FF_ADMIN_TOKEN", OPERATOR)]));
    app.wait_for("alice", "NEW_CHECKOUT", json!(false)).await;
    // Close to the 4 MiB a flag's regexes may take compiled (about 22 KB each).
    let values: Vec<String> = (0..185).map(|i| format!("^user{i}-\\d{{4}}$")).collect();
    let body = json!({ "targeting": { "rules": [{
        "clauses": [{ "attribute": "email", "op": "matches", "values": values }], "value": true
    }] } });
    let writer = {
        let (app, auth) = (app.clone(), format!("Bearer {OPERATOR}"));
        tokio::spawn(async move {
            let headers = [("authorization", auth.as_str()), ("if-match", "\"1\"")];
            app.send_as(Method::PATCH, "/admin/api/flags/NEW_CHECKOUT", None, Some(body), &headers).await.0
        })
    };
    let mut slowest = Duration::ZERO;
    while !writer.is_finished() {
        let start = Instant::now();
        let (status, _) = app.send(Method::GET, "/healthz", None, None).await;
        assert_eq!(status, StatusCode::OK);
        slowest = slowest.max(start.elapsed());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, written) = writer.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{written}");
    // A generous bound: compiling runs off the async workers, so health is not queued behind it.
    assert!(slowest < Duration::from_secs(2), "/healthz took {slowest:?} during the write");
}

/// In process: over TCP the server may answer 413 and close before the client has sent
/// the whole body, which the client sees as a reset.
#[tokio::test]
async fn an_over_limit_body_gets_413() {
    use tower::ServiceExt;
    let store: Arc<dyn ff_store::Store> = Arc::new(ff_store::MemoryStore::new());
    let source = ff_store::Source::builder_arc(store.clone()).start().await;
    let app = ff_axum_example::routes(source, ff_admin::Admin::new(store));
    let huge = json!({ "amount_cents": 1, "pad": "x".repeat(3 * 1024 * 1024) }).to_string();
    let req = axum::http::Request::post("/payments")
        .header("content-type", "application/json")
        .header("x-user-id", "alice")
        .body(axum::body::Body::from(huge))
        .unwrap();
    let res = app.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body = http_body_util::BodyExt::collect(res.into_body()).await.unwrap().to_bytes();
    let error: ApiError = serde_json::from_slice(&body).unwrap();
    assert_eq!(error.error, "invalid_body");
}
