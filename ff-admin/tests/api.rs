//! The admin API's contract: every route, every role, bad tokens, stale versions, bad values.
//!
//! Answers are read, and well-formed requests built, through `ff-api`'s types: the
//! ones the admin and the `ff` CLI share. Raw JSON is what a typed client could not
//! send: unknown fields, wrong types, missing fields, oversized bodies.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use ff_admin::Admin;
use ff_api::{
    ApiError, BatchOp, BatchRequest, BatchResponse, ChangeList, Export, FlagDetail, FlagList, FlagWritten,
    NewToken, NoFields, OverrideSet, OverrideWritten, Reasoned, Reverted, SegmentDetail, SegmentList,
    SegmentWritten, StaleReport, StaleWindows, TokenCreated, TokenList, UserFlag, UserLookup, UserValue,
};
use ff_core::{
    Action, Clause, ExpiryPolicy, Flag, FlagDef, FlagKind, FlagMeta, FlagRecord, Op, Reason, Rule, Schema,
    SegmentDef, StaleReason, Targeting, ValueType,
};
use ff_store::{
    ChangeQuery, FlagPatch, FlagReader, FlagWriter, Role, SqlStore, TokenStore, UsageStore, sync,
};
use http_body_util::BodyExt;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The environment admin token the tests start the admin with.
const ENV_TOKEN: &str = "env-secret-token-0123456789abcdef";
use serde_json::{Value, json};
use time::macros::datetime;
use tower::ServiceExt;

#[path = "support/settings.rs"]
mod settings;
use settings::{PLAN, WINDOW};

const LEAD: Flag<i64> = Flag::new("LEAD_HOURS", 24).range(0, 1000).description("lead time");
const CREDITS: Flag<bool> = Flag::new("CREDITS", true);
const ONLY_IN_CODE: Flag<bool> = Flag::new("ONLY_IN_CODE", false);

struct Api {
    app: Router,
    store: Arc<SqlStore>,
    admin: String,
    editor: String,
    viewer: String,
    _dir: tempfile::TempDir,
}

struct Reply {
    status: u16,
    etag: Option<String>,
    body: Value,
}

impl Api {
    async fn new() -> Api {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("ff.db").display());
        let store = Arc::new(SqlStore::connect(&url).await.unwrap());
        sync(&*store, &[LEAD.decl(), CREDITS.decl()], &Default::default()).await.unwrap();
        let (_, admin) = ff_admin::create_token(&*store, "root", Role::Admin, "test", None).await.unwrap();
        let (_, editor) = ff_admin::create_token(&*store, "ed", Role::Editor, "test", None).await.unwrap();
        let (_, viewer) = ff_admin::create_token(&*store, "vi", Role::Viewer, "test", None).await.unwrap();
        let api = Admin::new(store.clone())
            .declare([LEAD.decl(), CREDITS.decl(), ONLY_IN_CODE.decl()])
            .env_admin_token(Some(ENV_TOKEN.into()))
            .unwrap();
        Api { app: Router::new().nest("/admin", api.router()), store, admin, editor, viewer, _dir: dir }
    }

    async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
        self.call_with(method, path, token, body, &[]).await
    }

    async fn call_with(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let raw = body.map(|b| b.to_string());
        self.raw(method, path, token, raw, headers).await
    }

    async fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = http::Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(body.map(Body::from).unwrap_or_else(Body::empty)).unwrap();
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status().as_u16();
        let etag = res.headers().get("etag").map(|v| v.to_str().unwrap().to_owned());
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply { status, etag, body }
    }

    async fn log_len(&self) -> usize {
        self.store.changes(&ChangeQuery { limit: 1000, ..ChangeQuery::default() }).await.unwrap().len()
    }
}

impl Reply {
    /// The answer as its ff-api type. It must be exactly that: written back, the
    /// type gives the same JSON, so no field is missing, extra or read differently.
    fn typed<T: Serialize + DeserializeOwned>(&self) -> T {
        let name = std::any::type_name::<T>();
        let typed: T = serde_json::from_value(self.body.clone())
            .unwrap_or_else(|e| panic!("the answer ({}) is not a {name}: {e}: {}", self.status, self.body));
        assert_eq!(serde_json::to_value(&typed).unwrap(), self.body, "the answer is not exactly a {name}");
        typed
    }

    /// A refusal: every one is an [`ApiError`].
    fn refusal(&self) -> ApiError {
        self.typed()
    }
}

/// A refusal's code.
fn error(r: &Reply) -> String {
    r.refusal().error
}

/// A well-formed request body, built from its type.
fn req(body: impl Serialize) -> Option<Value> {
    Some(serde_json::to_value(body).unwrap())
}

/// `body` with the reason the audit log records.
fn reasoned<T>(body: T, reason: &str) -> Reasoned<T> {
    Reasoned::new(body, Some(reason.into()))
}

/// Only a reason: archive, restore, revert, delete, revoke.
fn why(reason: &str) -> Option<Value> {
    req(reasoned(NoFields {}, reason))
}

/// A user's value, as `PUT .../overrides/{user}` takes it.
fn user_value(value: Value) -> Option<Value> {
    req(OverrideSet { value })
}

/// A patch of the global value only.
fn set_value(value: Value) -> FlagPatch {
    FlagPatch { value: Some(value), ..FlagPatch::default() }
}

/// A new flag as `PUT /flags/{key}` and a batch's `create` take it.
fn new_flag(key: &str, value_type: ValueType, value: Value) -> FlagDef {
    FlagDef {
        key: key.into(),
        value_type,
        value,
        enabled: true,
        off_value: None,
        description: String::new(),
        schema: Schema::default(),
        meta: FlagMeta::default(),
        targeting: Targeting::default(),
    }
}

/// Targeting with one rule: users whose `attribute` is one of `values` get `value`.
fn one_rule(attribute: &str, op: Op, values: &[&str], value: Value) -> Targeting {
    let clause = Clause {
        attribute: attribute.into(),
        op,
        values: values.iter().map(|v| json!(v)).collect(),
        negate: false,
    };
    let rule = Rule { clauses: vec![clause], value: Some(value), split: None, description: String::new() };
    Targeting { rules: vec![rule], ..Targeting::default() }
}

/// A patch of the targeting only: users in `segment` get `value`.
fn segment_rule(segment: &str, value: Value) -> FlagPatch {
    FlagPatch {
        targeting: Some(one_rule("user_id", Op::InSegment, &[segment], value)),
        ..FlagPatch::default()
    }
}

/// The keys of a flag list, in order.
fn flag_keys(list: &FlagList) -> Vec<&str> {
    list.flags.iter().map(|f| f.record.key.as_str()).collect()
}

/// One flag of a user lookup.
fn served<'a>(lookup: &'a UserLookup, key: &str) -> &'a UserFlag {
    lookup.flags.iter().find(|f| f.key == key).unwrap_or_else(|| panic!("no {key} in {lookup:?}"))
}

/// A flag change's record before or after it.
fn record(state: &Option<Value>) -> FlagRecord {
    serde_json::from_value(state.clone().expect("a flag record")).unwrap()
}

#[tokio::test]
async fn every_route_needs_a_valid_token() {
    let api = Api::new().await;
    let routes = [
        ("GET", "/admin/api/flags"),
        ("GET", "/admin/api/flags/LEAD_HOURS"),
        ("PATCH", "/admin/api/flags/LEAD_HOURS"),
        ("PUT", "/admin/api/flags/NEW"),
        ("DELETE", "/admin/api/flags/LEAD_HOURS"),
        ("POST", "/admin/api/flags/LEAD_HOURS/restore"),
        ("PUT", "/admin/api/flags/LEAD_HOURS/overrides/u1"),
        ("DELETE", "/admin/api/flags/LEAD_HOURS/overrides/u1"),
        ("GET", "/admin/api/users/u1"),
        ("GET", "/admin/api/changes"),
        ("POST", "/admin/api/changes/1/revert"),
        ("GET", "/admin/api/tokens"),
        ("POST", "/admin/api/tokens"),
        ("DELETE", "/admin/api/tokens/ed"),
        ("GET", "/admin/api/export"),
        ("GET", "/admin/api/segments"),
        ("GET", "/admin/api/segments/s"),
        ("PUT", "/admin/api/segments/s"),
        ("DELETE", "/admin/api/segments/s"),
        ("GET", "/admin/api/stale"),
        ("GET", "/admin/api/usage"),
        ("POST", "/admin/api/batch"),
        ("POST", "/admin/ofrep/v1/evaluate/flags/CREDITS"),
        ("POST", "/admin/ofrep/v1/evaluate/flags"),
        ("GET", "/admin/ofrep/v1/configuration"),
    ];
    let bad = ["", "nope", "ff_", "ff_abc", "ff_abc_def", "env-secret-token-0123456789abcdefX"];
    let before = api.log_len().await;
    for (method, path) in routes {
        let r = api.call(method, path, None, Some(json!({}))).await;
        assert_eq!(r.status, 401, "{method} {path}");
        if path.contains("/ofrep/") {
            // OFREP's own error shape.
            assert_eq!(r.body["errorCode"], "GENERAL", "{method} {path}");
        } else {
            assert_eq!(error(&r), "unauthorized", "{method} {path}");
        }
        // Refused: 401, or 429 once this client has failed too often (tests/security.rs).
        for token in bad {
            let r = api.call(method, path, Some(token), Some(json!({}))).await;
            assert!(matches!(r.status, 401 | 429), "{method} {path} with {token:?}: {}", r.status);
        }
        // A real token's id with another secret.
        let forged = format!("{}_{}", &api.editor[..api.editor.rfind('_').unwrap()], "0".repeat(64));
        assert!(matches!(api.call(method, path, Some(&forged), Some(json!({}))).await.status, 401 | 429));
    }
    assert_eq!(api.log_len().await, before, "nothing written");
}

#[tokio::test]
async fn every_mutation_needs_its_role() {
    let api = Api::new().await;
    let editor_routes = [
        ("PATCH", "/admin/api/flags/LEAD_HOURS"),
        ("PUT", "/admin/api/flags/NEW"),
        ("DELETE", "/admin/api/flags/LEAD_HOURS"),
        ("POST", "/admin/api/flags/LEAD_HOURS/restore"),
        ("PUT", "/admin/api/flags/LEAD_HOURS/overrides/u1"),
        ("DELETE", "/admin/api/flags/LEAD_HOURS/overrides/u1"),
        ("POST", "/admin/api/changes/1/revert"),
        ("PUT", "/admin/api/segments/s"),
        ("DELETE", "/admin/api/segments/s"),
        ("POST", "/admin/api/batch"),
    ];
    let admin_routes =
        [("GET", "/admin/api/tokens"), ("POST", "/admin/api/tokens"), ("DELETE", "/admin/api/tokens/ed")];
    let reads = [
        "/admin/api/flags",
        "/admin/api/flags/LEAD_HOURS",
        "/admin/api/users/u1",
        "/admin/api/changes",
        "/admin/api/export",
    ];
    let before = api.log_len().await;
    for (method, path) in editor_routes.iter().chain(&admin_routes) {
        let r = api.call(method, path, Some(&api.viewer), Some(json!({}))).await;
        assert_eq!((r.status, error(&r).as_str()), (403, "forbidden"), "viewer {method} {path}");
    }
    for (method, path) in admin_routes {
        let r = api.call(method, path, Some(&api.editor), Some(json!({}))).await;
        assert_eq!((r.status, error(&r).as_str()), (403, "forbidden"), "editor {method} {path}");
    }
    for path in reads {
        for token in [&api.viewer, &api.editor, &api.admin] {
            assert_eq!(api.call("GET", path, Some(token), None).await.status, 200, "{path}");
        }
    }
    assert_eq!(api.log_len().await, before, "nothing written");
}

#[tokio::test]
async fn roles_limit_what_a_token_may_do() {
    let api = Api::new().await;
    let (v, e) = (Some(api.viewer.as_str()), Some(api.editor.as_str()));
    assert_eq!(api.call("GET", "/admin/api/flags", v, None).await.status, 200);
    assert_eq!(api.call("GET", "/admin/api/changes", v, None).await.status, 200);
    assert_eq!(api.call("GET", "/admin/api/users/u1", v, None).await.status, 200);
    let r = api.call("PUT", "/admin/api/flags/LEAD_HOURS/overrides/u1", v, user_value(json!(1))).await;
    assert_eq!((r.status, error(&r).as_str()), (403, "forbidden"));
    assert!(r.refusal().message.contains("editor"));
    let r = api
        .call_with(
            "PATCH",
            "/admin/api/flags/LEAD_HOURS",
            v,
            req(set_value(json!(2))),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(api.call("GET", "/admin/api/tokens", e, None).await.status, 403);
    let token = NewToken { name: "x".into(), role: Role::Admin, reason: None };
    let r = api.call("POST", "/admin/api/tokens", e, req(token)).await;
    assert_eq!(r.status, 403);
    assert_eq!(api.call("GET", "/admin/api/tokens", Some(ENV_TOKEN), None).await.status, 200);
    let r = api.call("PUT", "/admin/api/flags/LEAD_HOURS/overrides/u1", e, user_value(json!(1))).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn list_and_get_with_filters_pages_and_etag() {
    let api = Api::new().await;
    let e = Some(api.editor.as_str());
    for u in 0..5 {
        api.call("PUT", &format!("/admin/api/flags/LEAD_HOURS/overrides/u{u}"), e, user_value(json!(u)))
            .await;
    }
    let patch = FlagPatch {
        owner: Some("payments".into()),
        tags: Some(vec!["money".into()]),
        expires_at: Some(Some(datetime!(2020-01-01 0:00 UTC))),
        ..FlagPatch::default()
    };
    let r = api.call_with("PATCH", "/admin/api/flags/CREDITS", e, req(patch), &[("if-match", "\"1\"")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let list: FlagList = api.call("GET", "/admin/api/flags", e, None).await.typed();
    assert_eq!(flag_keys(&list), ["CREDITS", "LEAD_HOURS"]);
    let lead = &list.flags[1];
    assert_eq!(
        (lead.record.value_type, lead.record.value.clone(), lead.overrides),
        (ValueType::Int, ff_core::Value::Int(24), 5)
    );
    assert_eq!((lead.record.enabled, lead.declared, lead.record.version), (true, true, 1));
    for (query, expected) in [
        ("q=lead", vec!["LEAD_HOURS"]),
        ("q=time", vec!["LEAD_HOURS"]),
        ("tag=money", vec!["CREDITS"]),
        ("owner=payments", vec!["CREDITS"]),
        ("stale=true", vec!["CREDITS"]),
        ("stale=false", vec!["LEAD_HOURS"]),
        ("archived=true", vec![]),
    ] {
        let got: FlagList = api.call("GET", &format!("/admin/api/flags?{query}"), e, None).await.typed();
        assert_eq!(flag_keys(&got), expected, "{query}");
    }
    assert_eq!(api.call("GET", "/admin/api/flags?stale=maybe", e, None).await.status, 400);
    let r = api.call("GET", "/admin/api/flags/LEAD_HOURS?offset=1&limit=2", e, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.etag.as_deref(), Some("\"1\""));
    let detail: FlagDetail = r.typed();
    assert_eq!(detail.overrides_total, 5);
    let user = |id: &str, value| UserValue { user_id: id.into(), value };
    assert_eq!(detail.overrides, [user("u1", json!(1)), user("u2", json!(2))]);
    let r = api.call("GET", "/admin/api/flags/NOPE", e, None).await;
    assert_eq!((r.status, error(&r).as_str()), (404, "not_found"));
}

#[tokio::test]
async fn patch_needs_the_current_version_and_valid_values() {
    let api = Api::new().await;
    let e = Some(api.editor.as_str());
    let path = "/admin/api/flags/LEAD_HOURS";
    let before = api.log_len().await;
    let r = api.call("PATCH", path, e, req(set_value(json!(12)))).await;
    assert_eq!((r.status, error(&r).as_str()), (428, "precondition_required"));
    let stale = api.call_with("PATCH", path, e, req(set_value(json!(12))), &[("if-match", "\"7\"")]).await;
    assert_eq!((stale.status, error(&stale).as_str()), (409, "version_conflict"));
    let bad = [
        (json!({"value": 5000}), 422, "above the maximum 1000"),
        (json!({"value": -1}), 422, "below the minimum 0"),
        (json!({"value": "twelve"}), 422, "expected a int value, got string"),
        (json!({"enabled": "yes"}), 422, "invalid type"),
        (json!({"schema": {"max": 5}}), 400, "cannot be changed here"),
        (json!({"valeu": 3}), 400, "cannot be changed here"),
        (json!({"tags": ["Bad Tag"]}), 422, "tags"),
        (json!([1, 2]), 422, "JSON object"),
        (json!({"value": 3, "reason": 5}), 400, "reason must be a string"),
    ];
    for (body, status, message) in bad {
        let r = api.call_with("PATCH", path, e, Some(body.clone()), &[("if-match", "\"1\"")]).await;
        assert_eq!(r.status, status, "{body}: {}", r.body);
        // A refusal with a code and a message.
        assert!(r.refusal().message.contains(message), "{body}: {}", r.body);
    }
    let r = api.raw("PATCH", path, e, Some("{not json".into()), &[("if-match", "\"1\"")]).await;
    assert_eq!((r.status, error(&r).as_str()), (400, "invalid_body"));
    let r = api.call_with("PATCH", path, e, req(set_value(json!(3))), &[("if-match", "three")]).await;
    assert_eq!(r.status, 400);
    assert_eq!(api.log_len().await, before, "nothing written by refused requests");
    let patch = FlagPatch { description: Some("hours".into()), ..set_value(json!(12)) };
    let ok =
        api.call_with("PATCH", path, e, req(reasoned(patch, "incident 42")), &[("if-match", "\"1\"")]).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.etag.as_deref(), Some("\"2\""));
    let FlagWritten { flag } = ok.typed();
    assert_eq!((flag.value, flag.description.as_str()), (ff_core::Value::Int(12), "hours"));
    let log: ChangeList = api.call("GET", "/admin/api/changes?limit=1", e, None).await.typed();
    let c = &log.changes[0];
    assert_eq!(
        (c.actor.as_str(), c.reason.as_deref(), c.action),
        ("ed", Some("incident 42"), Action::FlagUpdate)
    );
    assert_eq!(
        (record(&c.before).value, record(&c.after).value),
        (ff_core::Value::Int(24), ff_core::Value::Int(12))
    );
    // The same If-Match again is now stale.
    let again = api.call_with("PATCH", path, e, req(set_value(json!(13))), &[("if-match", "\"1\"")]).await;
    assert_eq!(again.status, 409);
    let enabled = FlagPatch { enabled: Some(false), ..FlagPatch::default() };
    let weak = api.call_with("PATCH", path, e, req(enabled), &[("if-match", "W/\"2\"")]).await;
    assert_eq!(weak.status, 200);
}

#[tokio::test]
async fn batches_commit_together_or_not_at_all() {
    let api = Api::new().await;
    let e = Some(api.editor.as_str());
    let path = "/admin/api/batch";
    let before = api.log_len().await;
    let update = |key: &str, version, patch| BatchOp::Update { key: key.into(), version, patch };
    let set_override =
        |key: &str, user: &str, value| BatchOp::SetOverride { key: key.into(), user_id: user.into(), value };
    let batch = |changes| req(BatchRequest { changes, reason: None });
    // Well-formed batches the store refuses, whole.
    let refused_by_the_store = [
        (
            vec![
                update("LEAD_HOURS", None, set_value(json!(12))),
                update("CREDITS", None, set_value(json!("no"))),
            ],
            422,
            "invalid_value",
            "change 1 of the batch",
        ),
        (
            vec![update("LEAD_HOURS", None, set_value(json!(5000)))],
            422,
            "invalid_value",
            "above the maximum 1000",
        ),
        (vec![update("LEAD_HOURS", Some(9), set_value(json!(12)))], 409, "version_conflict", "not 9"),
        (
            vec![update("CREDITS", None, set_value(json!(false))), update("GONE", None, set_value(json!(1)))],
            404,
            "not_found",
            "\"GONE\" does not exist",
        ),
        (
            vec![BatchOp::Create(new_flag("CREDITS", ValueType::Bool, json!(true)))],
            409,
            "conflict",
            "exists already",
        ),
    ]
    .map(|(changes, status, code, message)| (batch(changes).unwrap(), status, code, message));
    // Bodies no typed client sends.
    let malformed = [
        (json!({"changes": [{"key": "CREDITS"}]}), 422, "invalid_body", "changes[0]: needs `op`"),
        (
            json!({"changes": [{"op": "update", "key": "CREDITS"}, {"op": "upsert", "key": "CREDITS"}]}),
            422,
            "invalid_body",
            "changes[1]: unknown op \"upsert\"",
        ),
        (json!({"changes": [{"op": "update", "value": true}]}), 422, "invalid_body", "needs `key`"),
        (
            json!({"changes": [{"op": "update", "key": "LEAD_HOURS", "schema": {"max": 5}}]}),
            422,
            "invalid_body",
            "field \"schema\" is not part of \"update\"",
        ),
        (
            json!({"changes": [{"op": "archive", "key": "CREDITS", "value": 1}]}),
            422,
            "invalid_body",
            "field \"value\"",
        ),
        (
            json!({"changes": [{"op": "create", "key": "NEW", "version": 1, "type": "bool", "value": true}]}),
            422,
            "invalid_body",
            "create takes no `version`",
        ),
        (
            json!({"changes": [{"op": "update", "key": "CREDITS", "version": "3", "value": true}]}),
            422,
            "invalid_body",
            "`version` must be",
        ),
        (
            json!({"changes": [{"op": "set_override", "key": "CREDITS", "user_id": "u1"}]}),
            422,
            "invalid_body",
            "needs `value`",
        ),
        (
            json!({"changes": [{"op": "delete_override", "key": "CREDITS"}]}),
            422,
            "invalid_body",
            "needs `user_id`",
        ),
        (
            json!({"changes": [{"op": "create", "key": "NEW", "type": "colour", "value": 1}]}),
            422,
            "invalid_body",
            "changes[0]",
        ),
        (json!({"changes": [7]}), 422, "invalid_body", "changes[0]: must be a JSON object"),
        (json!({"changes": {"op": "update"}}), 422, "invalid_body", "`changes`, a list"),
        (json!({}), 422, "invalid_body", "`changes`, a list"),
        (json!({"changes": [], "dry_run": true}), 400, "bad_request", "unknown field \"dry_run\""),
        (json!({"changes": [], "reason": 3}), 400, "bad_request", "reason must be a string"),
    ];
    for (body, status, code, message) in refused_by_the_store.into_iter().chain(malformed) {
        let r = api.call("POST", path, e, Some(body.clone())).await;
        let refusal = r.refusal();
        assert_eq!((r.status, refusal.error.as_str()), (status, code), "{body}: {}", r.body);
        assert!(refusal.message.contains(message), "{body}: {}", r.body);
    }
    let many = (0..1001).map(|i| set_override("CREDITS", &format!("u{i}"), json!(true))).collect();
    let r = api.call("POST", path, e, batch(many)).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.refusal().message.contains("at most 1000"), "{}", r.body);
    assert_eq!(api.log_len().await, before, "nothing written by refused batches");
    assert_eq!(api.store.flag("CREDITS").await.unwrap().unwrap().value, ff_core::Value::Bool(true));

    // Every kind of change in one batch; later changes see earlier ones.
    let new = FlagDef { description: "new".into(), ..new_flag("NEW", ValueType::Bool, json!(true)) };
    let body = BatchRequest {
        reason: Some("launch".into()),
        changes: vec![
            update("LEAD_HOURS", Some(1), set_value(json!(12))),
            update("CREDITS", None, FlagPatch { enabled: Some(false), ..FlagPatch::default() }),
            set_override("LEAD_HOURS", "u1", json!(5)),
            BatchOp::Create(new),
            set_override("NEW", "tester", json!(false)),
            BatchOp::Archive { key: "NEW".into(), version: None },
            BatchOp::Restore { key: "NEW".into() },
            BatchOp::DeleteOverride { key: "LEAD_HOURS".into(), user_id: "nobody".into() },
        ],
    };
    let r = api.call("POST", path, e, req(body)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let BatchResponse { changes, seq } = r.typed();
    assert_eq!(changes.len(), 7, "the no-op delete writes no row: {}", r.body);
    let last = changes[6].seq;
    assert_eq!(seq, last);
    assert!(
        changes
            .iter()
            .all(|c| c.batch_end == Some(last) && c.actor == "ed" && c.reason.as_deref() == Some("launch"))
    );
    let user: UserLookup = api.call("GET", "/admin/api/users/tester", e, None).await.typed();
    assert_eq!(served(&user, "NEW").value, json!(false), "{user:?}");
    let lead = api.call("GET", "/admin/api/flags/LEAD_HOURS", e, None).await;
    let detail: FlagDetail = lead.typed();
    assert_eq!((detail.flag.record.value, lead.etag.as_deref()), (ff_core::Value::Int(12), Some("\"2\"")));
    assert!(!api.store.flag("CREDITS").await.unwrap().unwrap().enabled);
    // An empty or all-no-op batch writes nothing and answers the current seq.
    let r = api.call("POST", path, e, batch(vec![])).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let empty: BatchResponse = r.typed();
    assert_eq!((empty.changes, empty.seq), (vec![], last));
}

#[tokio::test]
async fn create_archive_restore_and_bad_keys() {
    let api = Api::new().await;
    let e = Some(api.editor.as_str());
    let banner = new_flag("BANNER", ValueType::String, json!("hello"));
    let r = api.call("PUT", "/admin/api/flags/BANNER", e, req(reasoned(banner, "launch"))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let FlagWritten { flag } = r.typed();
    assert_eq!((flag.value.to_json(), r.etag.as_deref()), (json!("hello"), Some("\"1\"")));
    let again = new_flag("BANNER", ValueType::String, json!("x"));
    let dup = api.call("PUT", "/admin/api/flags/BANNER", e, req(again)).await;
    assert_eq!((dup.status, error(&dup).as_str()), (409, "conflict"));
    for (path, body, status) in [
        ("/admin/api/flags/%3Cscript%3E", json!({"type": "bool", "value": true}), 422),
        ("/admin/api/flags/..%2F..%2Fetc", json!({"type": "bool", "value": true}), 422),
        ("/admin/api/flags/OK_KEY", json!({"type": "bool", "value": 3}), 422),
        ("/admin/api/flags/OK_KEY", json!({"type": "color", "value": 3}), 422),
        ("/admin/api/flags/OK_KEY", json!({"value": true}), 422),
        ("/admin/api/flags/OK_KEY", json!({"key": "OTHER", "type": "bool", "value": true}), 400),
    ] {
        let r = api.call("PUT", path, e, Some(body.clone())).await;
        assert_eq!(r.status, status, "{path} {body}: {}", r.body);
    }
    assert!(api.store.flag("OK_KEY").await.unwrap().is_none());
    let r = api.call_with("DELETE", "/admin/api/flags/BANNER", e, None, &[("if-match", "\"9\"")]).await;
    assert_eq!(r.status, 409);
    let r = api.call("DELETE", "/admin/api/flags/BANNER", e, None).await;
    assert_eq!(r.status, 200);
    let archived: FlagList = api.call("GET", "/admin/api/flags?archived=true", e, None).await.typed();
    assert_eq!(flag_keys(&archived)[0], "BANNER");
    assert_eq!(api.call("DELETE", "/admin/api/flags/BANNER", e, None).await.status, 404);
    let r = api.call("POST", "/admin/api/flags/BANNER/restore", e, why("oops")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.typed::<FlagWritten>().flag.archived);
    assert_eq!(api.call("POST", "/admin/api/flags/BANNER/restore", e, None).await.status, 409);
}

#[tokio::test]
async fn overrides_and_what_a_user_sees() {
    let api = Api::new().await;
    let e = Some(api.editor.as_str());
    let path = "/admin/api/flags/LEAD_HOURS/overrides/tester";
    let r = api.call("PUT", path, e, req(reasoned(OverrideSet { value: json!(0) }, "QA"))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.typed::<OverrideWritten>().value, json!(0));
    for (body, status) in [
        (json!({"value": 5000}), 422),
        (json!({"value": "x"}), 422),
        (json!({}), 422),
        (json!({"value": 1, "extra": 2}), 400),
    ] {
        assert_eq!(api.call("PUT", path, e, Some(body.clone())).await.status, status, "{body}");
    }
    assert_eq!(
        api.call("PUT", "/admin/api/flags/LEAD_HOURS/overrides/%20", e, user_value(json!(1))).await.status,
        422
    );
    assert_eq!(
        api.call("PUT", "/admin/api/flags/NOPE/overrides/tester", e, user_value(json!(1))).await.status,
        404
    );
    let off = FlagPatch { enabled: Some(false), ..FlagPatch::default() };
    api.call_with("PATCH", "/admin/api/flags/CREDITS", e, req(off), &[("if-match", "\"1\"")]).await;
    api.call("PUT", "/admin/api/flags/CREDITS/overrides/tester", e, user_value(json!(true))).await;
    let seen: UserLookup = api.call("GET", "/admin/api/users/tester", e, None).await.typed();
    let lead =
        |value, reason| UserFlag { key: "LEAD_HOURS".into(), value_type: ValueType::Int, value, reason };
    assert_eq!(served(&seen, "LEAD_HOURS"), &lead(json!(0), Reason::Override));
    assert_eq!(served(&seen, "CREDITS").reason, Reason::Disabled);
    assert_eq!(served(&seen, "ONLY_IN_CODE").reason, Reason::Default);
    let other: UserLookup = api.call("GET", "/admin/api/users/alice", e, None).await.typed();
    assert_eq!(other.flags[1], lead(json!(24), Reason::Global));
    assert_eq!(api.call("GET", "/admin/api/users/%20", e, None).await.status, 400);
    assert_eq!(api.call("DELETE", path, e, None).await.status, 200);
    assert_eq!(api.call("DELETE", path, e, None).await.status, 404);
}

#[tokio::test]
async fn audit_log_has_exactly_one_row_per_change_and_revert_undoes() {
    let api = Api::new().await;
    let e = Some(api.editor.as_str());
    let start = api.log_len().await;
    let flag = "/admin/api/flags/LEAD_HOURS";
    api.call_with("PATCH", flag, e, req(set_value(json!(48))), &[("if-match", "\"1\"")]).await;
    api.call("PUT", &format!("{flag}/overrides/tester"), e, user_value(json!(0))).await;
    api.call("PUT", &format!("{flag}/overrides/tester"), e, user_value(json!(1))).await;
    api.call("DELETE", &format!("{flag}/overrides/tester"), e, None).await;
    api.call("PUT", "/admin/api/flags/NEWONE", e, req(new_flag("NEWONE", ValueType::Bool, json!(true))))
        .await;
    assert_eq!(api.log_len().await, start + 5);
    let log: ChangeList = api.call("GET", "/admin/api/changes?actor=ed&limit=10", e, None).await.typed();
    let log = log.changes;
    assert_eq!(log.len(), 5);
    assert!(log.iter().all(|c| c.actor == "ed"));
    let actions: Vec<Action> = log.iter().map(|c| c.action).collect();
    assert_eq!(
        actions,
        [
            Action::FlagCreate,
            Action::OverrideDelete,
            Action::OverrideSet,
            Action::OverrideSet,
            Action::FlagUpdate
        ]
    );
    assert_eq!((log[1].before.clone(), log[1].after.clone()), (Some(json!(1)), None));
    assert_eq!((log[2].before.clone(), log[2].after.clone()), (Some(json!(0)), Some(json!(1))));
    let seq = |i: usize| log[i].seq;
    let by_key: ChangeList = api.call("GET", "/admin/api/changes?key=NEWONE", e, None).await.typed();
    assert_eq!(by_key.changes.len(), 1);
    assert_eq!(api.call("GET", "/admin/api/changes?since=yesterday", e, None).await.status, 400);

    // Revert the value change: back to 24, audited as a revert.
    let r = api.call("POST", &format!("/admin/api/changes/{}/revert", seq(4)), e, why("bad idea")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let Reverted { reverted, change } = r.typed();
    assert_eq!(reverted, seq(4));
    assert_eq!(change.reason, Some(format!("revert of #{}: bad idea", seq(4))));
    assert_eq!(api.store.flag("LEAD_HOURS").await.unwrap().unwrap().value.to_json(), json!(24));
    // Reverting it again conflicts: the flag changed since.
    assert_eq!(api.call("POST", &format!("/admin/api/changes/{}/revert", seq(4)), e, None).await.status, 409);
    // Revert the override delete: tester's value is back.
    assert_eq!(api.call("POST", &format!("/admin/api/changes/{}/revert", seq(1)), e, None).await.status, 200);
    let o = api.store.overrides("LEAD_HOURS").await.unwrap();
    assert_eq!((o[0].user_id.as_str(), o[0].value.clone()), ("tester", json!(1)));
    // An older override change no longer matches what is there: conflict.
    assert_eq!(api.call("POST", &format!("/admin/api/changes/{}/revert", seq(3)), e, None).await.status, 409);
    // Revert the creation: archived.
    assert_eq!(api.call("POST", &format!("/admin/api/changes/{}/revert", seq(0)), e, None).await.status, 200);
    assert!(api.store.flag("NEWONE").await.unwrap().unwrap().archived);
    assert_eq!(api.call("POST", "/admin/api/changes/99999/revert", e, None).await.status, 404);
    assert_eq!(api.log_len().await, start + 8);
}

#[tokio::test]
async fn tokens_are_created_listed_and_revoked() {
    let api = Api::new().await;
    let a = Some(api.admin.as_str());
    let new = NewToken { name: "deploy-bot".into(), role: Role::Viewer, reason: Some("deploys".into()) };
    let r = api.call("POST", "/admin/api/tokens", a, req(new)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let TokenCreated { token, .. } = r.typed();
    assert!(token.starts_with("ff_"));
    assert_eq!(api.call("GET", "/admin/api/flags", Some(&token), None).await.status, 200);
    let list = api.call("GET", "/admin/api/tokens", a, None).await;
    assert!(
        list.typed::<TokenList>().tokens.iter().any(|t| t.name == "deploy-bot" && t.role == Role::Viewer)
    );
    // What is sent, not what the type reads: no secret, no hash.
    assert!(!list.body.to_string().contains(&token[token.rfind('_').unwrap() + 1..]), "no secrets listed");
    assert!(!list.body.to_string().contains("secret_hash"));
    for (body, status) in [
        (json!({"name": "deploy-bot", "role": "viewer"}), 409),
        (json!({"name": "bad name", "role": "viewer"}), 422),
        (json!({"name": "x", "role": "god"}), 422),
        (json!({"name": "x", "role": "viewer", "extra": 1}), 422),
    ] {
        assert_eq!(
            api.call("POST", "/admin/api/tokens", a, Some(body.clone())).await.status,
            status,
            "{body}"
        );
    }
    let r = api.call("DELETE", "/admin/api/tokens/deploy-bot", a, why("leaked")).await;
    assert_eq!(r.status, 200);
    assert_eq!(api.call("GET", "/admin/api/flags", Some(&token), None).await.status, 401);
    assert_eq!(api.call("DELETE", "/admin/api/tokens/deploy-bot", a, None).await.status, 404);
    let log = api.store.changes(&ChangeQuery { limit: 2, ..ChangeQuery::default() }).await.unwrap();
    assert!(log.iter().all(|c| c.actor == "root"));
    assert_eq!(
        log.iter().map(|c| c.reason.as_deref()).collect::<Vec<_>>(),
        [Some("leaked"), Some("deploys")]
    );
}

#[tokio::test]
async fn huge_bodies_are_refused() {
    let api = Api::new().await;
    let big = "x".repeat(ff_admin::MAX_BODY_BYTES + 1);
    let r = api
        .call("PUT", "/admin/api/flags/BIG", Some(&api.editor), Some(json!({"type": "string", "value": big})))
        .await;
    assert_eq!((r.status, error(&r).as_str()), (413, "body_too_large"));
    assert!(api.store.flag("BIG").await.unwrap().is_none());
}

#[tokio::test]
async fn segments_through_the_api() {
    let api = Api::new().await;
    let (e, v) = (Some(api.editor.as_str()), Some(api.viewer.as_str()));
    let testers = SegmentDef {
        description: "QA".into(),
        included: vec!["qa-1".into(), "qa-2".into()],
        ..SegmentDef::default()
    };
    let body = req(reasoned(testers, "beta"));
    assert_eq!(api.call("PUT", "/admin/api/segments/testers", v, body.clone()).await.status, 403);
    let r = api.call("PUT", "/admin/api/segments/testers", e, body.clone()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.typed::<SegmentWritten>().version, Some(1));
    let again = api.call("PUT", "/admin/api/segments/testers", e, body).await;
    assert_eq!((again.status, again.typed::<SegmentWritten>().changed), (200, false));
    let r = api.call("GET", "/admin/api/segments/testers", v, None).await;
    assert_eq!((r.status, r.etag.as_deref()), (200, Some("\"1\"")));
    assert_eq!(r.typed::<SegmentDetail>().segment.definition.included, ["qa-1", "qa-2"]);
    let list: SegmentList = api.call("GET", "/admin/api/segments", v, None).await.typed();
    assert_eq!(list.segments[0].included, 2);
    let stale = api
        .call_with(
            "PUT",
            "/admin/api/segments/testers",
            e,
            req(SegmentDef::default()),
            &[("if-match", "\"0\"")],
        )
        .await;
    assert_eq!((stale.status, error(&stale).as_str()), (409, "version_conflict"));
    for (b, status) in [(json!({"included": [""]}), 422), (json!({"inclded": []}), 422), (json!([1]), 422)] {
        assert_eq!(
            api.call("PUT", "/admin/api/segments/bad", e, Some(b.clone())).await.status,
            status,
            "{b}"
        );
    }
    // A flag using it: the segment cannot be deleted; an unknown segment cannot be used.
    let rule = |seg: &str| req(segment_rule(seg, json!(0)));
    let r = api
        .call_with("PATCH", "/admin/api/flags/LEAD_HOURS", e, rule("nope"), &[("if-match", "\"1\"")])
        .await;
    assert_eq!(r.status, 422);
    assert!(r.refusal().message.contains("does not exist"));
    let r = api
        .call_with("PATCH", "/admin/api/flags/LEAD_HOURS", e, rule("testers"), &[("if-match", "\"1\"")])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen: UserLookup = api.call("GET", "/admin/api/users/qa-1", v, None).await.typed();
    let lead = served(&seen, "LEAD_HOURS");
    assert_eq!((lead.value.clone(), lead.reason), (json!(0), Reason::Rule(0)));
    let r = api.call("DELETE", "/admin/api/segments/testers", e, None).await;
    assert_eq!((r.status, error(&r).as_str()), (409, "in_use"));
    assert!(r.refusal().message.contains("LEAD_HOURS"));
    let export: Export = api.call("GET", "/admin/api/export", v, None).await.typed();
    assert_eq!(export.segments[0].key, "testers");
    let no_targeting = FlagPatch { targeting: Some(Targeting::default()), ..FlagPatch::default() };
    api.call_with("PATCH", "/admin/api/flags/LEAD_HOURS", e, req(no_targeting), &[("if-match", "\"2\"")])
        .await;
    assert_eq!(api.call("DELETE", "/admin/api/segments/testers", e, why("done")).await.status, 200);
    assert_eq!(api.call("DELETE", "/admin/api/segments/testers", e, None).await.status, 404);
    assert_eq!(api.call("GET", "/admin/api/segments/testers", v, None).await.status, 404);
}

#[tokio::test]
async fn lifecycle_fields_stale_report_and_usage() {
    let api = Api::new().await;
    let (ed, vi) = (Some(api.editor.as_str()), Some(api.viewer.as_str()));
    // A bool flag created without kind or expiry: a release flag, 40 days.
    let search = new_flag("NEW_SEARCH", ValueType::Bool, json!(false));
    let r = api.call("PUT", "/admin/api/flags/NEW_SEARCH", ed, req(search)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let expires = r.typed::<FlagWritten>().flag.meta.expires_at.expect("an expiry");
    let days = (expires - time::OffsetDateTime::now_utc()).as_seconds_f64() / 86_400.0;
    assert!((39.9..=40.1).contains(&days), "{days}");
    // Kill switches are permanent: no expiry.
    let meta = FlagMeta { kind: Some(FlagKind::KillSwitch), owner: "payments".into(), ..FlagMeta::default() };
    let kill = FlagDef { meta, ..new_flag("PAY_KILL", ValueType::Bool, json!(true)) };
    let r = api.call("PUT", "/admin/api/flags/PAY_KILL", ed, req(kill)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let FlagWritten { flag } = r.typed();
    assert_eq!((flag.meta.expires_at, flag.meta.kind), (None, Some(FlagKind::KillSwitch)), "{}", r.body);
    // Patch kind, permanence and policy; bad values are 422/400 with the field named.
    let etag = api.call("GET", "/admin/api/flags/NEW_SEARCH", vi, None).await.etag.unwrap();
    let patch = FlagPatch {
        kind: Some(Some(FlagKind::Experiment)),
        expiry: Some(ExpiryPolicy::ServeDefault),
        expires_at: Some(Some(datetime!(2020-01-01 0:00 UTC))),
        ..FlagPatch::default()
    };
    let r =
        api.call_with("PATCH", "/admin/api/flags/NEW_SEARCH", ed, req(patch), &[("if-match", &etag)]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let FlagWritten { flag } = r.typed();
    assert_eq!((flag.meta.kind, flag.meta.expiry), (Some(FlagKind::Experiment), ExpiryPolicy::ServeDefault));
    let etag = r.etag.unwrap();
    for bad in [json!({"kind": "forever"}), json!({"expiry": "explode"}), json!({"permanent": "yes"})] {
        let before = api.log_len().await;
        let r = api
            .call_with("PATCH", "/admin/api/flags/NEW_SEARCH", ed, Some(bad.clone()), &[("if-match", &etag)])
            .await;
        assert!(r.status == 400 || r.status == 422, "{bad}: {} {}", r.status, r.body);
        let field = bad.as_object().unwrap().keys().next().unwrap().clone();
        let text = r.refusal().message;
        let value = bad[&field].to_string();
        assert!(text.contains(value.trim_matches('"')) || text.contains(&field), "{bad}: {text}");
        assert_eq!(api.log_len().await, before, "{bad} wrote something");
    }
    // The stale report: NEW_SEARCH is past its expiry; CREDITS has never been
    // evaluated but was created just now, so it is not stale yet.
    let r = api.call("GET", "/admin/api/stale", vi, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let report: StaleReport = r.typed();
    let stale: Vec<&str> = report.stale.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(stale, ["NEW_SEARCH"]);
    assert_eq!(report.stale[0].reasons, [StaleReason::Expired]);
    assert_eq!(report.rules, StaleWindows { not_evaluated_days: 7, one_value_days: 7 });
    let list: FlagList = api.call("GET", "/admin/api/flags?stale=true", vi, None).await.typed();
    assert_eq!(flag_keys(&list), ["NEW_SEARCH"]);
    let r = api.call("GET", "/admin/api/stale?not_evaluated_days=0", vi, None).await;
    assert_eq!(r.status, 400);
    assert!(r.refusal().message.contains("not_evaluated_days"), "{}", r.body);
    // Usage recorded by instances shows in the report and in the daily counts (the
    // usage answer has no ff-api type: only the admin's pages read it).
    let now = time::OffsetDateTime::now_utc();
    let c = |key: &str, variant: &str, count| ff_core::UsageCount {
        key: key.into(),
        reason: "global".into(),
        variant: variant.into(),
        count,
    };
    api.store
        .record_usage(&[c("CREDITS", "true", 40), c("LEAD_HOURS", "value", 2)], &[("TYPO".into(), 3)], now)
        .await
        .unwrap();
    let r = api.call("GET", "/admin/api/usage?days=3", vi, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["days"].as_array().unwrap().len(), 3);
    assert_eq!(r.body["flags"]["CREDITS"]["daily"], json!([0, 0, 40]));
    assert!(r.body["flags"]["CREDITS"]["last_evaluated"].is_string());
    assert_eq!(api.call("GET", "/admin/api/usage?days=400", vi, None).await.status, 400);
    let report: StaleReport = api.call("GET", "/admin/api/stale", vi, None).await.typed();
    assert_eq!((report.unknown[0].key.as_str(), report.unknown[0].count), ("TYPO", 3));
}

/// What `GET /export` (and so `ff export`) writes is what a `FileStore` reads: the
/// same flags, targeting, overrides and segments.
#[tokio::test]
async fn an_export_is_a_flags_file() {
    let api = Api::new().await;
    let e = Some(api.editor.as_str());
    let testers = SegmentDef { included: vec!["qa-1".into()], ..SegmentDef::default() };
    let r = api.call("PUT", "/admin/api/segments/testers", e, req(testers)).await;
    assert!(r.status < 300, "{}", r.body);
    let lead = FlagPatch {
        value: Some(json!(12)),
        owner: Some("ops".into()),
        tags: Some(vec!["a".into()]),
        ..segment_rule("testers", json!(0))
    };
    let changes = vec![
        BatchOp::Update { key: "LEAD_HOURS".into(), version: None, patch: lead },
        BatchOp::SetOverride { key: "LEAD_HOURS".into(), user_id: "tester".into(), value: json!(1) },
        BatchOp::Update {
            key: "CREDITS".into(),
            version: None,
            patch: FlagPatch { enabled: Some(false), ..FlagPatch::default() },
        },
    ];
    let r = api.call("POST", "/admin/api/batch", e, req(BatchRequest { changes, reason: None })).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Written as `ff export` writes it: the typed export.
    let export: Export = api.call("GET", "/admin/api/export", e, None).await.typed();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flags.yaml");
    std::fs::write(&path, serde_yaml_ng::to_string(&export).unwrap()).unwrap();
    let file = ff_store::FileStore::open(&path).unwrap();
    let (from_file, from_store) = (file.load().await.unwrap(), api.store.load().await.unwrap());
    let view = |s: &ff_core::StoreState| {
        let flags: Vec<_> = s
            .flags
            .iter()
            .map(|f| {
                (
                    f.key.clone(),
                    f.value.clone(),
                    f.enabled,
                    f.targeting.clone(),
                    f.meta.owner.clone(),
                    f.meta.tags.clone(),
                    f.schema.clone(),
                )
            })
            .collect();
        let overrides: Vec<_> =
            s.overrides.iter().map(|o| (o.key.clone(), o.user_id.clone(), o.value.clone())).collect();
        let segments: Vec<_> = s.segments.iter().map(|g| (g.key.clone(), g.definition.clone())).collect();
        (flags, overrides, segments)
    };
    assert_eq!(view(&from_file), view(&from_store));
}

/// Tokens are read from the store at most once per cache period; a revocation made
/// elsewhere (another instance) holds after it, one made here at once.
#[tokio::test]
async fn token_reads_are_cached_briefly() {
    let api = Api::new().await;
    let app = Router::new().nest(
        "/admin",
        Admin::new(api.store.clone()).token_cache_ttl(std::time::Duration::from_millis(300)).router(),
    );
    let status = |token: String| {
        let app = app.clone();
        async move {
            let req = http::Request::builder()
                .uri("/admin/api/flags")
                .header("authorization", format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap();
            app.oneshot(req).await.unwrap().status().as_u16()
        }
    };
    assert_eq!(status(api.viewer.clone()).await, 200);
    // Revoked in the store directly, as another instance would.
    api.store.revoke_token("vi", "other-instance", None).await.unwrap();
    assert_eq!(status(api.viewer.clone()).await, 200, "still cached");
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(status(api.viewer.clone()).await, 401, "read again after the cache period");
}

#[tokio::test]
async fn revert_restores_every_field_the_change_touched() {
    let api = &Api::new().await;
    let e = Some(api.editor.as_str());
    let flag = "/admin/api/flags/CREDITS";
    let original = api.store.flag("CREDITS").await.unwrap().unwrap();
    let patch = |body: FlagPatch| async move {
        let v = api.store.flag("CREDITS").await.unwrap().unwrap().version;
        let r = api.call_with("PATCH", flag, e, req(body), &[("if-match", &format!("\"{v}\""))]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        api.store.latest_seq().await.unwrap()
    };
    let revert = |seq: u64| async move {
        api.call("POST", &format!("/admin/api/changes/{seq}/revert"), e, None).await
    };
    let same_as_original = || async {
        let now = api.store.flag("CREDITS").await.unwrap().unwrap();
        ff_core::FlagRecord { version: original.version, updated_at: original.updated_at, ..now }
    };
    let rule = FlagPatch {
        targeting: Some(one_rule("plan", Op::In, &["pro"], json!(true))),
        ..FlagPatch::default()
    };

    // A change of value, targeting and metadata at once is undone whole.
    let all = patch(FlagPatch {
        value: Some(json!(false)),
        kind: Some(Some(FlagKind::Ops)),
        permanent: Some(Some(false)),
        expiry: Some(ExpiryPolicy::ServeDefault),
        expires_at: Some(Some(datetime!(2031-01-01 0:00 UTC))),
        owner: Some("team-x".into()),
        tags: Some(vec!["a".into()]),
        description: Some("changed".into()),
        ticket: Some("T-1".into()),
        off_value: Some(json!(false)),
        enabled: Some(false),
        ..rule.clone()
    })
    .await;
    let r = revert(all).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(same_as_original().await, original);

    // A change of targeting alone is undone (it was "already undone" before).
    let only_rules = patch(rule.clone()).await;
    assert_eq!(revert(only_rules).await.status, 200);
    assert_eq!(same_as_original().await, original);

    // A later change conflicts, clearly, and nothing is written; newest first works.
    let rules = patch(rule).await;
    let value = patch(set_value(json!(false))).await;
    let log = api.log_len().await;
    let r = revert(rules).await;
    assert_eq!((r.status, error(&r).as_str()), (409, "conflict"), "{}", r.body);
    assert!(r.refusal().message.contains("revert the later changes first"), "{}", r.body);
    assert_eq!(api.log_len().await, log);
    assert_eq!(revert(value).await.status, 200);
    assert_eq!(revert(rules).await.status, 409, "the revert itself is a later change");
    let undo_value = api.store.latest_seq().await.unwrap();
    assert_eq!(revert(undo_value).await.status, 200, "a revert can be reverted");
    let back = api.store.flag("CREDITS").await.unwrap().unwrap();
    assert_eq!((back.value.to_json(), back.targeting.rules.len()), (json!(false), 1));
}

#[tokio::test]
async fn restore_checks_the_segments_the_flag_refers_to() {
    let api = Api::new().await;
    let e = Some(api.editor.as_str());
    let seg = SegmentDef { included: vec!["qa-1".into()], ..SegmentDef::default() };
    assert_eq!(api.call("PUT", "/admin/api/segments/testers", e, req(seg)).await.status, 201);
    let rule = req(segment_rule("testers", json!(0)));
    let r = api.call_with("PATCH", "/admin/api/flags/LEAD_HOURS", e, rule, &[("if-match", "\"1\"")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(api.call("DELETE", "/admin/api/flags/LEAD_HOURS", e, None).await.status, 200);
    // Archived, it no longer holds the segment, which can go.
    assert_eq!(api.call("DELETE", "/admin/api/segments/testers", e, None).await.status, 200);
    let log = api.log_len().await;
    let r = api.call("POST", "/admin/api/flags/LEAD_HOURS/restore", e, None).await;
    assert_eq!((r.status, error(&r).as_str()), (422, "invalid_value"), "{}", r.body);
    assert!(r.refusal().message.contains("segment \"testers\" does not exist"), "{}", r.body);
    assert_eq!(api.log_len().await, log, "nothing written");
    assert!(api.store.flag("LEAD_HOURS").await.unwrap().unwrap().archived);
    // With the segment back, it restores.
    assert_eq!(
        api.call("PUT", "/admin/api/segments/testers", e, req(SegmentDef::default())).await.status,
        201
    );
    assert_eq!(api.call("POST", "/admin/api/flags/LEAD_HOURS/restore", e, None).await.status, 200);
}

#[tokio::test]
async fn the_flag_list_pages_and_counts_what_matches() {
    let api = Api::new().await;
    let (e, v) = (Some(api.editor.as_str()), Some(api.viewer.as_str()));
    api.call("PUT", "/admin/api/flags/LEAD_HOURS/overrides/u1", e, user_value(json!(1))).await;
    api.call("PUT", "/admin/api/flags/LEAD_HOURS/overrides/u2", e, user_value(json!(2))).await;
    let all: FlagList = api.call("GET", "/admin/api/flags", v, None).await.typed();
    assert_eq!((flag_keys(&all), all.total), (vec!["CREDITS", "LEAD_HOURS"], 2));
    assert_eq!(all.flags[1].overrides, 2);
    let page: FlagList = api.call("GET", "/admin/api/flags?offset=1&limit=1", v, None).await.typed();
    assert_eq!((flag_keys(&page), page.total), (vec!["LEAD_HOURS"], 2));
    let past: FlagList = api.call("GET", "/admin/api/flags?offset=5", v, None).await.typed();
    assert_eq!((flag_keys(&past).len(), past.total), (0, 2));
    let r = api.call("GET", "/admin/api/flags?limit=many", v, None).await;
    assert_eq!(r.status, 400, "{}", r.body);
}

#[tokio::test]
async fn durations_and_enums_are_written_in_their_own_form_and_refused_in_any_other() {
    let api = Api::new().await;
    sync(&*api.store, &[WINDOW.decl(), PLAN.decl()], &Default::default()).await.unwrap();
    let e = Some(api.editor.as_str());
    let patch = |key: &str, v: Value| {
        let key = key.to_owned();
        let api = &api;
        async move {
            let version = api.store.flag(&key).await.unwrap().unwrap().version;
            let etag = format!("\"{version}\"");
            let path = format!("/admin/api/flags/{key}");
            api.call_with("PATCH", &path, e, req(set_value(v)), &[("if-match", &etag)]).await
        }
    };
    let r = patch("WINDOW", json!("90m")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(api.store.flag("WINDOW").await.unwrap().unwrap().value.to_json(), json!("90m"));
    let log = api.log_len().await;
    for (v, says) in [
        (json!("2 days"), r#"flag "WINDOW": "2 days" is not a duration like 90m, 48h or 1h30m"#),
        (json!("10m"), r#""10m" is below the minimum "1h""#),
        (json!(3600), r#""WINDOW": "3600" is not a duration like 90m"#),
    ] {
        let r = patch("WINDOW", v.clone()).await;
        assert_eq!((r.status, error(&r).as_str()), (422, "invalid_value"), "{v}: {}", r.body);
        assert!(r.refusal().message.contains(says), "{v}: {}", r.body);
    }
    let r = api.call("PUT", "/admin/api/flags/WINDOW/overrides/u1", e, user_value(json!("forever"))).await;
    assert_eq!(r.status, 422, "{}", r.body);
    let r = patch("PLAN", json!("Gold")).await;
    assert_eq!((r.status, error(&r).as_str()), (422, "invalid_value"), "{}", r.body);
    assert!(r.refusal().message.contains(r#"not one of the allowed values ["Free","Pro"]"#), "{}", r.body);
    assert_eq!(api.log_len().await, log, "nothing written");
    assert_eq!(patch("PLAN", json!("Pro")).await.status, 200);
}

#[tokio::test]
async fn a_revert_that_would_break_a_rule_between_settings_is_refused() {
    use ff_core::{RuleOp, SettingRule};
    let api = Api::new().await;
    const MIN: Flag<f64> = Flag::new("R_MIN", 60.0);
    const MAX: Flag<f64> = Flag::new("R_MAX", 500.0);
    let mut decls = vec![MIN.decl(), MAX.decl()];
    ff_core::attach_rules(&mut decls, &[SettingRule { left: "R_MIN", op: RuleOp::Le, right: "R_MAX" }]);
    sync(&*api.store, &decls, &Default::default()).await.unwrap();
    let w = |m| ff_store::Write::new("t", m);
    let lowered = api.store.write(w(ff_store::Mutation::set_value("R_MIN", 30.0))).await.unwrap().unwrap();
    api.store.write(w(ff_store::Mutation::set_value("R_MAX", 50.0))).await.unwrap();
    let log = api.log_len().await;
    let e = Some(api.editor.as_str());
    let r = api.call("POST", &format!("/admin/api/changes/{}/revert", lowered.seq), e, None).await;
    assert_eq!((r.status, error(&r).as_str()), (422, "rule_broken"), "{}", r.body);
    assert_eq!(
        r.refusal().message,
        "rule R_MIN <= R_MAX would be broken: R_MIN would serve 60.0, R_MAX 50.0",
        "{}",
        r.body
    );
    assert_eq!(api.log_len().await, log, "nothing written");
}

/// A guard is set through the API like the rest of the targeting (refused by name
/// when it makes no test), and `GET /flags/{key}/guard` shows every instance's counts
/// from the store, the test's state and what the guard wrote.
#[tokio::test]
async fn guarded_rollouts_through_the_api() {
    let api = Api::new().await;
    let (e, v) = (Some(api.editor.as_str()), Some(api.viewer.as_str()));
    let path = "/admin/api/flags/CREDITS";
    let split = json!({"variations": [{"value": false, "weight": 1000}, {"value": true, "weight": 9000}]});
    let before = api.log_len().await;
    for (targeting, message) in [
        (json!({"guard": {}}), "a guard watches a percentage rollout"),
        (json!({"split": split, "guard": {"alpha": 0.9}}), "alpha must be above 0 and at most 0.5"),
        (json!({"split": split, "guard": {"min_requests": 1}}), "min_requests must be 10"),
        (json!({"split": split, "guard": {"max_errors": 1}}), "unknown field `max_errors`"),
    ] {
        let r = api
            .call_with("PATCH", path, e, Some(json!({"targeting": targeting})), &[("if-match", "\"1\"")])
            .await;
        assert_eq!(r.status, 422, "{targeting}: {}", r.body);
        assert!(r.refusal().message.contains(message), "{targeting}: {}", r.body);
    }
    assert_eq!(api.log_len().await, before, "nothing written");
    let targeting = json!({"split": split, "guard": {"max_error_increase": 1, "min_requests": 100}});
    let r = api
        .call_with("PATCH", path, e, Some(json!({"targeting": targeting})), &[("if-match", "\"1\"")])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let FlagWritten { flag } = r.typed();
    let started = flag.targeting.guard.as_ref().unwrap().started.expect("stamped by the store");

    let view: ff_api::GuardView = api.call("GET", "/admin/api/flags/CREDITS/guard", v, None).await.typed();
    let state = view.state.clone().unwrap();
    assert_eq!(state.started, Some(started));
    assert!(matches!(
        state.verdict,
        ff_core::guard::Verdict::Collecting { control: 0, treatment: 0, needed: 100 }
    ));
    let sides: Vec<bool> = state.variations.iter().map(|v| v.control).collect();
    assert_eq!(sides, [false, true], "the variation serving the flag's value (true) is the control");
    assert!(view.actions.is_empty());

    // Two instances' counts, as their guardians flush them: a regression.
    let epoch = (started.unix_timestamp_nanos() / 1_000_000) as i64;
    let row = |instance: &str, variation, requests, errors| ff_store::GuardCount {
        flag: "CREDITS".into(),
        epoch,
        instance: instance.into(),
        variation,
        arm: ff_core::guard::Arm { requests, errors, ..Default::default() },
    };
    let now = time::OffsetDateTime::now_utc();
    api.store.put_guard_counts(&[row("a", 0, 600, 120), row("a", 1, 5_000, 50)], now).await.unwrap();
    api.store.put_guard_counts(&[row("b", 0, 400, 80), row("b", 1, 4_000, 40)], now).await.unwrap();
    let view: ff_api::GuardView = api.call("GET", "/admin/api/flags/CREDITS/guard", v, None).await.typed();
    let state = view.state.unwrap();
    assert_eq!((state.instances, state.treatment.requests, state.control.requests), (2, 1_000, 9_000));
    assert_eq!(state.variations[0].counts.errors, 200);
    assert!(matches!(state.verdict, ff_core::guard::Verdict::Regressed { .. }), "{:?}", state.verdict);
    assert!(!state.acting, "no guardian runs in this process");

    // What the guardian writes shows, and the state goes with the guard.
    let patch = FlagPatch { targeting: Some(Targeting::default()), ..FlagPatch::default() };
    let rollback = ff_store::Write::new(
        ff_store::guard::GUARD_ACTOR,
        ff_store::Mutation::UpdateFlag { key: "CREDITS".into(), patch, expected_version: None },
    )
    .reason("guarded rollout rolled back: regressed");
    api.store.write(rollback).await.unwrap();
    let view: ff_api::GuardView = api.call("GET", "/admin/api/flags/CREDITS/guard", v, None).await.typed();
    assert!(view.state.is_none());
    assert_eq!(view.actions.len(), 1);
    assert_eq!(view.actions[0].reason.as_deref(), Some("guarded rollout rolled back: regressed"));
    let r = api.call("GET", "/admin/api/flags/NOPE/guard", v, None).await;
    assert_eq!((r.status, error(&r).as_str()), (404, "not_found"));
    assert_eq!(api.call("GET", "/admin/api/flags/CREDITS/guard", None, None).await.status, 401);
}

/// An edit previewed: the store's own validation (every refusal a save would give,
/// named), the changes it makes, and what each user gets now and with it; nothing is
/// written, and any viewer may ask.
#[tokio::test]
async fn a_targeting_edit_is_previewed_without_writing() {
    let api = Api::new().await;
    let v = Some(api.viewer.as_str());
    let path = "/admin/api/flags/LEAD_HOURS/preview";
    let before = api.log_len().await;
    let users = json!([
        {"user_id": "alice", "attributes": {"plan": "pro"}},
        {"user_id": "bob", "attributes": {"plan": "free"}},
        {}
    ]);
    let rule = json!({"rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["pro", "enterprise"]}], "value": 2}]});
    let r = api.call("POST", path, v, Some(json!({"targeting": rule, "users": users}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let p: ff_api::Preview = r.typed();
    assert_eq!(p.problem, None);
    assert_eq!(p.changes.len(), 1, "{:?}", p.changes);
    assert!(p.changes[0].starts_with("+ rules: [{\"clauses\""), "{:?}", p.changes);
    let got: Vec<(Value, Option<Value>, Option<Reason>)> = p
        .users
        .iter()
        .map(|u| {
            (
                u.now.value.clone(),
                u.edited.as_ref().map(|e| e.value.clone()),
                u.edited.as_ref().map(|e| e.reason),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (json!(24), Some(json!(2)), Some(Reason::Rule(0))),
            (json!(24), Some(json!(24)), Some(Reason::Global)),
            (json!(24), Some(json!(24)), Some(Reason::Global)),
        ]
    );
    // Refusals, as a save would give them, and the users still shown as they are now.
    for (targeting, problem) in [
        (
            json!({"rules": [{"clauses": [{"attribute": "plan", "op": "inn", "values": ["pro"]}], "value": 2}]}),
            "unknown variant `inn`",
        ),
        (
            json!({"rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["pro"]}], "value": 5000}]}),
            "above the maximum 1000",
        ),
        (json!({"split": {"variations": [{"value": 1, "weight": 10}]}}), "weights"),
        (
            json!({"rules": [{"clauses": [{"attribute": "user_id", "op": "in_segment", "values": ["nope"]}], "value": 2}]}),
            "nope",
        ),
    ] {
        let r = api
            .call("POST", path, v, Some(json!({"targeting": targeting, "users": [{"user_id": "alice"}]})))
            .await;
        let p: ff_api::Preview = r.typed();
        let why = p.problem.unwrap_or_default();
        assert!(why.contains(problem), "{targeting}: {why}");
        assert!(p.changes.is_empty() && p.users[0].edited.is_none() && p.users[0].now.value == json!(24));
    }
    // Numbers in a rule meet numbers from the app; an edit on an old version is refused as a save would be.
    let adults =
        json!({"rules": [{"clauses": [{"attribute": "age", "op": "gte", "values": [18]}], "value": 1}]});
    let users =
        json!([{"user_id": "a", "attributes": {"age": 30}}, {"user_id": "b", "attributes": {"age": 12}}]);
    let p: ff_api::Preview =
        api.call("POST", path, v, Some(json!({"targeting": adults, "users": users}))).await.typed();
    let got: Vec<Value> = p.users.iter().map(|u| u.edited.clone().unwrap().value).collect();
    assert_eq!(got, [json!(1), json!(24)]);
    let stale = json!({"targeting": adults, "version": 0});
    let p: ff_api::Preview = api.call("POST", path, v, Some(stale)).await.typed();
    assert!(p.problem.as_deref().unwrap_or_default().contains("version"), "{:?}", p.problem);
    assert_eq!(api.log_len().await, before, "nothing written");
    let too_many = json!({"targeting": {}, "users": vec![json!({}); 101]});
    assert_eq!(api.call("POST", path, v, Some(too_many)).await.status, 400);
    assert_eq!(
        api.call("POST", "/admin/api/flags/NOPE/preview", v, Some(json!({"targeting": {}}))).await.status,
        404
    );
    assert_eq!(api.call("POST", path, None, Some(json!({"targeting": {}}))).await.status, 401);
}
