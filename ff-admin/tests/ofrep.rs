//! OFREP: the OpenFeature Remote Evaluation Protocol's evaluation behaviours over the
//! admin router, against a live `Source`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use ff_admin::Admin;
use ff_core::{Flag, FlagKind};
use ff_store::{FlagReader, FlagWriter, Mutation, Role, Source, SqlStore, UsageStore, Write};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

#[path = "support/settings.rs"]
mod settings;
use settings::{PLAN, REMINDERS, WINDOW};

const CREDITS: Flag<bool> = Flag::new("CREDITS", true).kind(FlagKind::KillSwitch);
const LEAD: Flag<i64> = Flag::new("LEAD_HOURS", 24).range(0, 1000);
const RATE: Flag<f64> = Flag::new("RATE_MIN", 60.0);
const THEME: Flag<String> = Flag::new("THEME", "light");
const LAYOUT: Flag<serde_json::Value> = Flag::new("LAYOUT", r#"{"columns": 1}"#);
const ONLY_IN_CODE: Flag<bool> = Flag::new("ONLY_IN_CODE", false);

struct Ofrep {
    app: Router,
    store: Arc<SqlStore>,
    source: Source,
    token: String,
    _dir: tempfile::TempDir,
}

impl Ofrep {
    async fn new(env: &[(&str, &str)]) -> Ofrep {
        Self::with(env, &[]).await
    }

    /// With more declarations than the usual five.
    async fn with(env: &[(&str, &str)], more: &[ff_core::FlagDecl]) -> Ofrep {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("ff.db").display());
        let store = Arc::new(SqlStore::connect(&url).await.unwrap());
        let mut decls = vec![CREDITS.decl(), LEAD.decl(), RATE.decl(), THEME.decl(), LAYOUT.decl()];
        decls.extend(more.iter().cloned());
        let source = Source::builder_arc(store.clone())
            .declare(decls.clone())
            .env_vars(env.iter().map(|(k, v)| (*k, *v)))
            .poll_interval(Duration::from_millis(50))
            .usage_interval(Duration::from_millis(50))
            .start()
            .await;
        let (_, token) = ff_admin::create_token(&*store, "svc", Role::Viewer, "test", None).await.unwrap();
        // Creating the token is a change too: start from a snapshot that has it.
        assert!(source.wait_for_version(store.latest_seq().await.unwrap(), Duration::from_secs(10)).await);
        let admin = Admin::new(store.clone())
            .declare(decls.into_iter().chain([ONLY_IN_CODE.decl()]))
            .source(source.clone());
        Ofrep { app: Router::new().nest("/admin", admin.router()), store, source, token, _dir: dir }
    }

    async fn post(&self, path: &str, body: &str, headers: &[(&str, &str)]) -> (u16, Option<String>, Value) {
        let mut req = http::Request::builder().method("POST").uri(format!("/admin/ofrep/v1/{path}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = self.app.clone().oneshot(req.body(Body::from(body.to_owned())).unwrap()).await.unwrap();
        let status = res.status().as_u16();
        let etag = res.headers().get("etag").map(|v| v.to_str().unwrap().to_owned());
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (status, etag, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn flag(&self, key: &str, context: Value) -> (u16, Value) {
        let auth = format!("Bearer {}", self.token);
        let (s, _, b) = self
            .post(
                &format!("evaluate/flags/{key}"),
                &json!({ "context": context }).to_string(),
                &[("authorization", &auth)],
            )
            .await;
        (s, b)
    }

    /// GET on the admin router with the token; the status and JSON body.
    async fn get(&self, path: &str) -> (u16, Value) {
        let req = http::Request::builder()
            .uri(path)
            .header("authorization", format!("Bearer {}", self.token))
            .body(Body::empty())
            .unwrap();
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status().as_u16();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn write(&self, m: Mutation) {
        self.store.write(Write::new("test", m)).await.unwrap();
        assert!(
            self.source
                .wait_for_version(self.store.latest_seq().await.unwrap(), Duration::from_secs(10))
                .await
        );
    }
}

#[tokio::test]
async fn typed_values_with_reasons_variants_and_metadata() {
    let o = Ofrep::new(&[]).await;
    o.write(Mutation::set_value("LAYOUT", json!({"columns": 2}))).await;
    let ctx = json!({"targetingKey": "alice"});
    for (key, value) in [
        ("CREDITS", json!(true)),
        ("LEAD_HOURS", json!(24)),
        ("RATE_MIN", json!(60.0)),
        ("THEME", json!("light")),
        ("LAYOUT", json!({"columns": 2})),
    ] {
        let (status, body) = o.flag(key, ctx.clone()).await;
        assert_eq!(status, 200, "{key}: {body}");
        assert_eq!((body["key"].clone(), body["value"].clone()), (json!(key), value), "{body}");
        assert_eq!(
            (body["reason"].as_str(), body["variant"].as_str()),
            (Some("STATIC"), Some("value")),
            "{body}"
        );
        assert_eq!(body["metadata"]["flagVersion"], json!(if key == "LAYOUT" { 2 } else { 1 }), "{body}");
        assert!(body["metadata"]["snapshotVersion"].is_u64(), "{body}");
    }
    // An integer stays an integer and a float a float, as typed providers check.
    assert!(o.flag("LEAD_HOURS", ctx.clone()).await.1["value"].is_i64());
    assert!(o.flag("RATE_MIN", ctx.clone()).await.1["value"].is_f64());
}

#[tokio::test]
async fn targeting_by_key_and_attributes_overrides_splits_and_the_switch() {
    let o = Ofrep::new(&[]).await;
    let rules = json!({"rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["pro"]}], "value": "dark"}]});
    let patch =
        ff_store::FlagPatch { targeting: Some(serde_json::from_value(rules).unwrap()), ..Default::default() };
    o.write(Mutation::UpdateFlag { key: "THEME".into(), patch, expected_version: None }).await;
    o.write(Mutation::set_override("LEAD_HOURS", "tester", 0)).await;
    // An attribute from the context matches the rule; without it, the global value.
    let (_, pro) = o.flag("THEME", json!({"targetingKey": "bob", "plan": "pro"})).await;
    assert_eq!(
        (pro["value"].clone(), pro["reason"].clone(), pro["variant"].clone()),
        (json!("dark"), json!("TARGETING_MATCH"), json!("rule:0"))
    );
    let (_, free) = o.flag("THEME", json!({"targetingKey": "bob", "plan": "free"})).await;
    assert_eq!((free["value"].clone(), free["reason"].clone()), (json!("light"), json!("DEFAULT")));
    // The targeting key is the user id: overrides apply.
    let (_, tester) = o.flag("LEAD_HOURS", json!({"targetingKey": "tester"})).await;
    assert_eq!((tester["value"].clone(), tester["reason"].clone()), (json!(0), json!("TARGETING_MATCH")));
    let (_, other) = o.flag("LEAD_HOURS", json!({"targetingKey": "someone"})).await;
    assert_eq!(other["value"], json!(24));
    // No context at all: anonymous.
    let (status, anon) = o.flag("LEAD_HOURS", Value::Null).await;
    assert_eq!((status, anon["value"].clone()), (200, json!(24)));
    // A 50% split: the same user always gets the same answer, with reason SPLIT.
    let split =
        json!({"split": {"variations": [{"value": true, "weight": 5000}, {"value": false, "weight": 5000}]}});
    let patch =
        ff_store::FlagPatch { targeting: Some(serde_json::from_value(split).unwrap()), ..Default::default() };
    o.write(Mutation::UpdateFlag { key: "CREDITS".into(), patch, expected_version: None }).await;
    let mut seen = std::collections::HashSet::new();
    for i in 0..40 {
        let ctx = json!({"targetingKey": format!("user-{i}")});
        let (_, a) = o.flag("CREDITS", ctx.clone()).await;
        let (_, b) = o.flag("CREDITS", ctx).await;
        assert_eq!((a["value"].clone(), a["reason"].clone()), (b["value"].clone(), json!("SPLIT")));
        seen.insert(a["value"].to_string());
    }
    assert_eq!(seen.len(), 2, "both variations over 40 users");
    // Switched off: the off value, reason DISABLED.
    o.write(Mutation::set_enabled("CREDITS", false)).await;
    let (_, off) = o.flag("CREDITS", json!({"targetingKey": "user-1"})).await;
    assert_eq!(
        (off["value"].clone(), off["reason"].clone(), off["variant"].clone()),
        (json!(false), json!("DISABLED"), json!("off"))
    );
}

#[tokio::test]
async fn missing_flags_code_defaults_pins_and_bad_requests() {
    let o = Ofrep::new(&[("FF_LEAD_HOURS", "7")]).await;
    // Unknown: 404 FLAG_NOT_FOUND.
    let (status, body) = o.flag("NOPE", json!({})).await;
    assert_eq!(
        (status, body["errorCode"].clone(), body["key"].clone()),
        (404, json!("FLAG_NOT_FOUND"), json!("NOPE"))
    );
    // Declared but not in the store, and expired: no value, so the caller's code default.
    let (status, body) = o.flag("ONLY_IN_CODE", json!({})).await;
    assert_eq!((status, body["reason"].clone()), (200, json!("DEFAULT")), "{body}");
    assert!(body.get("value").is_none(), "{body}");
    let patch = ff_store::FlagPatch {
        permanent: Some(Some(false)),
        expiry: Some(ff_core::ExpiryPolicy::ServeDefault),
        expires_at: Some(Some(time::OffsetDateTime::now_utc() - time::Duration::days(1))),
        ..Default::default()
    };
    o.write(Mutation::UpdateFlag { key: "THEME".into(), patch, expected_version: None }).await;
    let (_, body) = o.flag("THEME", json!({"targetingKey": "a"})).await;
    assert_eq!(
        (body["reason"].clone(), body["metadata"]["ffReason"].clone()),
        (json!("DEFAULT"), json!("expired"))
    );
    assert!(body.get("value").is_none(), "{body}");
    // A pin from the environment is served as a static value.
    let (_, body) = o.flag("LEAD_HOURS", json!({"targetingKey": "a"})).await;
    assert_eq!(
        (body["value"].clone(), body["reason"].clone(), body["variant"].clone()),
        (json!(7), json!("STATIC"), json!("env"))
    );
    // Bad requests: OFREP's error shape with the key.
    let auth = format!("Bearer {}", o.token);
    let h = [("authorization", auth.as_str())];
    for (body, code, says) in [
        ("{not json", "PARSE_ERROR", "not JSON"),
        ("[1]", "PARSE_ERROR", "JSON object"),
        (r#"{"context": 5}"#, "INVALID_CONTEXT", "must be an object"),
        (r#"{"context": {"targetingKey": 5}}"#, "INVALID_CONTEXT", "targetingKey must be a string"),
        (r#"{"context": {"targetingKey": ""}}"#, "INVALID_CONTEXT", "targetingKey: user id is empty"),
    ] {
        let (status, _, reply) = o.post("evaluate/flags/CREDITS", body, &h).await;
        assert_eq!(
            (status, reply["errorCode"].as_str(), reply["key"].as_str()),
            (400, Some(code), Some("CREDITS")),
            "{body}"
        );
        assert!(reply["errorDetails"].as_str().unwrap().contains(says), "{body}: {reply}");
        let (status, _, reply) = o.post("evaluate/flags", body, &h).await;
        assert_eq!((status, reply["errorCode"].as_str()), (400, Some(code)), "bulk {body}");
    }
    // Tokens: none or a bad one is 401; X-API-Key works as well as Bearer.
    assert_eq!(o.post("evaluate/flags/CREDITS", "{}", &[]).await.0, 401);
    assert_eq!(o.post("evaluate/flags/CREDITS", "{}", &[("authorization", "Bearer nope")]).await.0, 401);
    assert_eq!(o.post("evaluate/flags/CREDITS", "{}", &[("x-api-key", &o.token)]).await.0, 200);
}

#[tokio::test]
async fn bulk_evaluation_with_etags() {
    let o = Ofrep::new(&[]).await;
    let auth = format!("Bearer {}", o.token);
    let body = json!({"context": {"targetingKey": "alice"}}).to_string();
    let (status, etag, reply) = o.post("evaluate/flags", &body, &[("authorization", &auth)]).await;
    assert_eq!(status, 200);
    let flags = reply["flags"].as_array().unwrap();
    let keys: Vec<&str> = flags.iter().map(|f| f["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["CREDITS", "LAYOUT", "LEAD_HOURS", "ONLY_IN_CODE", "RATE_MIN", "THEME"]);
    assert_eq!(flags[2]["value"], json!(24));
    assert!(flags[3].get("value").is_none(), "declared only: the code default");
    // Unchanged: 304. Another context or a change: a new answer.
    let etag = etag.unwrap();
    let (status, _, _) =
        o.post("evaluate/flags", &body, &[("authorization", &auth), ("if-none-match", &etag)]).await;
    assert_eq!(status, 304);
    let other = json!({"context": {"targetingKey": "bob"}}).to_string();
    let (status, etag_bob, _) =
        o.post("evaluate/flags", &other, &[("authorization", &auth), ("if-none-match", &etag)]).await;
    assert_eq!(status, 200);
    assert_ne!(etag_bob.unwrap(), etag);
    o.write(Mutation::set_value("LEAD_HOURS", 12)).await;
    let (status, new_etag, reply) =
        o.post("evaluate/flags", &body, &[("authorization", &auth), ("if-none-match", &etag)]).await;
    assert_eq!(status, 200);
    assert_ne!(new_etag.unwrap(), etag);
    assert_eq!(reply["flags"][2]["value"], json!(12));
}

#[tokio::test]
async fn configuration_says_what_a_provider_may_assume() {
    let o = Ofrep::new(&[]).await;
    let (status, body) = o.get("/admin/ofrep/v1/configuration").await;
    assert_eq!(status, 200);
    assert_eq!(body["name"], "ff");
    assert_eq!(body["capabilities"]["flagEvaluation"]["supportedTypes"].as_array().unwrap().len(), 5);
}

/// A flag read only over OFREP is counted in usage (and so in metrics), as a read
/// through the layer is: it is neither "never evaluated" nor stale.
#[tokio::test]
async fn reads_over_ofrep_are_counted_like_the_layers() {
    let o = Ofrep::new(&[]).await;
    let ctx = json!({"targetingKey": "alice"});
    for _ in 0..3 {
        assert_eq!(o.flag("THEME", ctx.clone()).await.0, 200);
    }
    let auth = format!("Bearer {}", o.token);
    let (status, _, _) =
        o.post("evaluate/flags", &json!({ "context": ctx }).to_string(), &[("authorization", &auth)]).await;
    assert_eq!(status, 200);
    // Unknown keys from clients are answered but not remembered.
    assert_eq!(o.flag("NO_SUCH_FLAG", ctx.clone()).await.0, 404);
    let today = time::OffsetDateTime::now_utc().date();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rows = o.store.usage(today).await.unwrap();
        let count = |key: &str| rows.iter().filter(|r| r.key == key).map(|r| r.count).sum::<u64>();
        // Three single reads and one bulk read of THEME; the bulk read of every other flag.
        if count("THEME") == 4 && count("LEAD_HOURS") == 1 && count("CREDITS") == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "reads never counted: {rows:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(o.store.unknown_flags().await.unwrap().is_empty());
}

/// The admin's user lookup shows what the application serves: its live snapshot,
/// environment pins included, not a fresh load of the store.
#[tokio::test]
async fn the_user_lookup_reads_the_live_source() {
    let o = Ofrep::new(&[("FF_THEME", "dark")]).await;
    o.write(Mutation::set_override("LEAD_HOURS", "alice", 12)).await;
    let (status, body) = o.get("/admin/api/users/alice").await;
    assert_eq!(status, 200);
    let flag =
        |key: &str| body["flags"].as_array().unwrap().iter().find(|f| f["key"] == key).cloned().unwrap();
    assert_eq!(
        (flag("THEME")["value"].clone(), flag("THEME")["reason"].clone()),
        (json!("dark"), json!("env"))
    );
    assert_eq!(
        (flag("LEAD_HOURS")["value"].clone(), flag("LEAD_HOURS")["reason"].clone()),
        (json!(12), json!("override"))
    );
    assert_eq!(body["version"], json!(o.source.snapshot().version()));
}

#[tokio::test]
async fn durations_enums_and_lists_are_served_as_written() {
    let o = Ofrep::with(&[], &[WINDOW.decl(), PLAN.decl(), REMINDERS.decl()]).await;
    let value = async |key: &str| o.flag(key, json!({"targetingKey": "u1"})).await.1["value"].clone();
    assert_eq!(value("WINDOW").await, json!("24h"));
    assert_eq!(value("PLAN").await, json!("Free"));
    assert_eq!(value("REMINDERS").await, json!(["1h", "90m"]));
    o.write(Mutation::set_value("WINDOW", "90m")).await;
    o.write(Mutation::set_value("PLAN", "Pro")).await;
    assert_eq!(value("WINDOW").await, json!("90m"));
    assert_eq!(value("PLAN").await, json!("Pro"));
}
