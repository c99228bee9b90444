//! Fuzzing the admin API's request bodies with proptest (a fixed number of cases):
//! any bytes or JSON sent to any writing route is answered with 2xx or a 4xx in the
//! one error shape, never a 5xx, and a refused request writes nothing.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use ff_admin::Admin;
use ff_core::Flag;
use ff_store::{ChangeQuery, FlagWriter, Role, SqlStore, sync};
use http_body_util::BodyExt;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};
use tower::ServiceExt;

const LEAD: Flag<i64> = Flag::new("LEAD_HOURS", 24).range(0, 1000);
const CREDITS: Flag<bool> = Flag::new("CREDITS", true);

/// Field names the bodies are made of: every editable flag field, and the rest a
/// body may carry (rules, segments, tokens, batches).
fn keys() -> Vec<&'static str> {
    let extra = [
        "type",
        "reason",
        "rules",
        "clauses",
        "attribute",
        "op",
        "values",
        "split",
        "variations",
        "weight",
        "name",
        "role",
        "included",
        "excluded",
        "key",
        "changes",
        "user_id",
        "version",
    ];
    ff_store::FlagPatch::EDITABLE.iter().copied().chain(extra).collect()
}

/// Nearly valid batches: known ops and keys, arbitrary fields.
fn batch_body() -> impl Strategy<Value = Value> {
    let op = prop::sample::select(
        &["create", "update", "archive", "restore", "set_override", "delete_override", "upsert"][..],
    );
    let key = prop::sample::select(&["LEAD_HOURS", "CREDITS", "NEW_ONE", ""][..]);
    let item = (op, key, prop::collection::vec((prop::sample::select(keys()), json_body()), 0..4)).prop_map(
        |(op, key, fields)| {
            let mut m: serde_json::Map<String, Value> =
                fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            m.insert("op".into(), op.into());
            m.insert("key".into(), key.into());
            Value::Object(m)
        },
    );
    prop::collection::vec(item, 0..5).prop_map(|changes| json!({ "changes": changes }))
}

fn json_body() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(|f| json!(f)),
        prop::sample::select(
            &["int", "bool", "release", "serve_default", "admin", "in", "2020-01-01T00:00:00Z"][..]
        )
        .prop_map(Value::from),
        "\\PC{0,16}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(keys()), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

const ROUTES: &[(&str, &str)] = &[
    ("PATCH", "/admin/api/flags/LEAD_HOURS"),
    ("PATCH", "/admin/api/flags/CREDITS"),
    ("PUT", "/admin/api/flags/NEW_ONE"),
    ("PUT", "/admin/api/flags/LEAD_HOURS/overrides/u1"),
    ("DELETE", "/admin/api/flags/LEAD_HOURS/overrides/u1"),
    ("PUT", "/admin/api/segments/seg"),
    ("POST", "/admin/api/tokens"),
    ("POST", "/admin/api/changes/1/revert"),
    ("DELETE", "/admin/api/flags/CREDITS"),
    ("POST", "/admin/api/batch"),
];

#[test]
fn any_body_on_any_writing_route_is_a_clean_answer() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (app, store, token) = rt.block_on(async {
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("ff.db").display());
        let store = Arc::new(SqlStore::connect(&url).await.unwrap());
        sync(&*store, &[LEAD.decl(), CREDITS.decl()], &Default::default()).await.unwrap();
        let (_, token) = ff_admin::create_token(&*store, "root", Role::Admin, "test", None).await.unwrap();
        let app = Router::new().nest("/admin", Admin::new(store.clone()).router());
        (app, store, token)
    });
    let send = |method: &str, path: &str, body: Vec<u8>, if_match: Option<&str>| {
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json");
        if let Some(v) = if_match {
            req = req.header("if-match", v);
        }
        let req = req.body(Body::from(body)).unwrap();
        rt.block_on(async {
            let res = app.clone().oneshot(req).await.unwrap();
            let status = res.status().as_u16();
            let bytes = res.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null))
        })
    };
    let log_len = || {
        rt.block_on(store.changes(&ChangeQuery { limit: 10_000, ..ChangeQuery::default() })).unwrap().len()
    };
    let bodies = prop_oneof![
        json_body().prop_map(|v| v.to_string().into_bytes()),
        batch_body().prop_map(|v| v.to_string().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..64),
    ];
    let mut runner = TestRunner::new(Config { cases: 400, ..Config::default() });
    runner
        .run(
            &(
                prop::sample::select(ROUTES),
                bodies,
                prop::option::of(prop::sample::select(&["\"1\"", "\"2\"", "*", "x"][..])),
            ),
            |((method, path), body, if_match)| {
                let before = log_len();
                let (status, reply) = send(method, path, body.clone(), if_match);
                prop_assert!(
                    status < 500,
                    "{method} {path} {:?}: {status} {reply}",
                    String::from_utf8_lossy(&body)
                );
                if status >= 400 {
                    prop_assert!(
                        reply["error"].is_string() && reply["message"].is_string(),
                        "{status} {reply}"
                    );
                    prop_assert_eq!(log_len(), before, "a refused request wrote something");
                }
                Ok(())
            },
        )
        .unwrap();
}
