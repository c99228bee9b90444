//! The admin API's contract: every route, every role, bad tokens, stale versions, bad values.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use ff_admin::Admin;
use ff_core::Flag;
use ff_store::{ChangeQuery, FlagReader, FlagWriter, Role, SqlStore, TokenStore, UsageStore, sync};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

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
            .env_admin_token(Some("env-secret-token".into()));
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

fn error(r: &Reply) -> &str {
    r.body["error"].as_str().unwrap_or("")
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
    let bad = ["", "nope", "ff_", "ff_abc", "ff_abc_def", "env-secret-tokenX"];
    let before = api.log_len().await;
    for (method, path) in routes {
        let r = api.call(method, path, None, Some(json!({}))).await;
        assert_eq!((r.status, error(&r)), (401, "unauthorized"), "{method} {path}");
        for token in bad {
            let r = api.call(method, path, Some(token), Some(json!({}))).await;
            assert_eq!(r.status, 401, "{method} {path} with {token:?}");
        }
        // A real token's id with another secret.
        let forged = format!("{}_{}", &api.editor[..api.editor.rfind('_').unwrap()], "0".repeat(64));
        assert_eq!(api.call(method, path, Some(&forged), Some(json!({}))).await.status, 401);
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
        assert_eq!((r.status, error(&r)), (403, "forbidden"), "viewer {method} {path}");
    }
    for (method, path) in admin_routes {
        let r = api.call(method, path, Some(&api.editor), Some(json!({}))).await;
        assert_eq!((r.status, error(&r)), (403, "forbidden"), "editor {method} {path}");
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
    let r = api.call("PUT", "/admin/api/flags/LEAD_HOURS/overrides/u1", v, Some(json!({"value": 1}))).await;
    assert_eq!((r.status, error(&r)), (403, "forbidden"));
    assert!(r.body["message"].as_str().unwrap().contains("editor"));
    let r = api
        .call_with(
            "PATCH",
            "/admin/api/flags/LEAD_HOURS",
            v,
            Some(json!({"value": 2})),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(api.call("GET", "/admin/api/tokens", e, None).await.status, 403);
    let r = api.call("POST", "/admin/api/tokens", e, Some(json!({"name": "x", "role": "admin"}))).await;
    assert_eq!(r.status, 403);
    assert_eq!(api.call("GET", "/admin/api/tokens", Some("env-secret-token"), None).await.status, 200);
    let r = api.call("PUT", "/admin/api/flags/LEAD_HOURS/overrides/u1", e, Some(json!({"value": 1}))).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn list_and_get_with_filters_pages_and_etag() {
    let api = Api::new().await;
    let e = Some(api.editor.as_str());
    for u in 0..5 {
        api.call("PUT", &format!("/admin/api/flags/LEAD_HOURS/overrides/u{u}"), e, Some(json!({"value": u})))
            .await;
    }
    let r = api
        .call_with(
            "PATCH",
            "/admin/api/flags/CREDITS",
            e,
            Some(json!({"owner": "payments", "tags": ["money"], "expires_at": "2020-01-01T00:00:00Z"})),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let list = api.call("GET", "/admin/api/flags", e, None).await.body;
    let keys: Vec<&str> =
        list["flags"].as_array().unwrap().iter().map(|f| f["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["CREDITS", "LEAD_HOURS"]);
    let lead = &list["flags"][1];
    assert_eq!(
        (lead["type"].clone(), lead["value"].clone(), lead["overrides"].clone()),
        (json!("int"), json!(24), json!(5))
    );
    assert_eq!(
        (lead["enabled"].clone(), lead["declared"].clone(), lead["version"].clone()),
        (json!(true), json!(true), json!(1))
    );
    for (query, expected) in [
        ("q=lead", vec!["LEAD_HOURS"]),
        ("q=time", vec!["LEAD_HOURS"]),
        ("tag=money", vec!["CREDITS"]),
        ("owner=payments", vec!["CREDITS"]),
        ("stale=true", vec!["CREDITS"]),
        ("stale=false", vec!["LEAD_HOURS"]),
        ("archived=true", vec![]),
    ] {
        let r = api.call("GET", &format!("/admin/api/flags?{query}"), e, None).await;
        let got: Vec<&str> =
            r.body["flags"].as_array().unwrap().iter().map(|f| f["key"].as_str().unwrap()).collect();
        assert_eq!(got, expected, "{query}");
    }
    assert_eq!(api.call("GET", "/admin/api/flags?stale=maybe", e, None).await.status, 400);
    let r = api.call("GET", "/admin/api/flags/LEAD_HOURS?offset=1&limit=2", e, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.etag.as_deref(), Some("\"1\""));
    assert_eq!(r.body["overrides_total"], 5);
    assert_eq!(r.body["overrides"], json!([{"user_id": "u1", "value": 1}, {"user_id": "u2", "value": 2}]));
    let r = api.call("GET", "/admin/api/flags/NOPE", e, None).await;
    assert_eq!((r.status, error(&r)), (404, "not_found"));
}

#[tokio::test]
async fn patch_needs_the_current_version_and_valid_values() {
    let api = Api::new().await;
    let e = Some(api.editor.as_str());
    let path = "/admin/api/flags/LEAD_HOURS";
    let before = api.log_len().await;
    let r = api.call("PATCH", path, e, Some(json!({"value": 12}))).await;
    assert_eq!((r.status, error(&r)), (428, "precondition_required"));
    let stale = api.call_with("PATCH", path, e, Some(json!({"value": 12})), &[("if-match", "\"7\"")]).await;
    assert_eq!((stale.status, error(&stale)), (409, "version_conflict"));
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
        assert!(r.body["message"].as_str().unwrap().contains(message), "{body}: {}", r.body);
        assert!(r.body["error"].is_string());
    }
    let r = api.raw("PATCH", path, e, Some("{not json".into()), &[("if-match", "\"1\"")]).await;
    assert_eq!((r.status, error(&r)), (400, "invalid_body"));
    let r = api.call_with("PATCH", path, e, Some(json!({"value": 3})), &[("if-match", "three")]).await;
    assert_eq!(r.status, 400);
    assert_eq!(api.log_len().await, before, "nothing written by refused requests");
    let ok = api
        .call_with(
            "PATCH",
            path,
            e,
            Some(json!({"value": 12, "reason": "incident 42", "description": "hours"})),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.etag.as_deref(), Some("\"2\""));
    assert_eq!(
        (ok.body["flag"]["value"].clone(), ok.body["flag"]["description"].clone()),
        (json!(12), json!("hours"))
    );
    let log = api.call("GET", "/admin/api/changes?limit=1", e, None).await.body;
    let c = &log["changes"][0];
    assert_eq!(
        (c["actor"].clone(), c["reason"].clone(), c["action"].clone()),
        (json!("ed"), json!("incident 42"), json!("flag.update"))
    );
    assert_eq!((c["before"]["value"].clone(), c["after"]["value"].clone()), (json!(24), json!(12)));
    // The same If-Match again is now stale.
    let again = api.call_with("PATCH", path, e, Some(json!({"value": 13})), &[("if-match", "\"1\"")]).await;
    assert_eq!(again.status, 409);
    let weak =
        api.call_with("PATCH", path, e, Some(json!({"enabled": false})), &[("if-match", "W/\"2\"")]).await;
    assert_eq!(weak.status, 200);
}

#[tokio::test]
async fn batches_commit_together_or_not_at_all() {
    let api = Api::new().await;
    let e = Some(api.editor.as_str());
    let path = "/admin/api/batch";
    let before = api.log_len().await;
    let refused = [
        (
            json!({"changes": [{"op": "update", "key": "LEAD_HOURS", "value": 12}, {"op": "update", "key": "CREDITS", "value": "no"}]}),
            422,
            "invalid_value",
            "change 1 of the batch",
        ),
        (
            json!({"changes": [{"op": "update", "key": "LEAD_HOURS", "value": 5000}]}),
            422,
            "invalid_value",
            "above the maximum 1000",
        ),
        (
            json!({"changes": [{"op": "update", "key": "LEAD_HOURS", "version": 9, "value": 12}]}),
            409,
            "version_conflict",
            "not 9",
        ),
        (
            json!({"changes": [{"op": "update", "key": "CREDITS", "value": false}, {"op": "update", "key": "GONE", "value": 1}]}),
            404,
            "not_found",
            "\"GONE\" does not exist",
        ),
        (
            json!({"changes": [{"op": "create", "key": "CREDITS", "type": "bool", "value": true}]}),
            409,
            "conflict",
            "exists already",
        ),
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
    for (body, status, code, message) in refused {
        let r = api.call("POST", path, e, Some(body.clone())).await;
        assert_eq!((r.status, error(&r)), (status, code), "{body}: {}", r.body);
        assert!(r.body["message"].as_str().unwrap().contains(message), "{body}: {}", r.body);
    }
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({"op": "set_override", "key": "CREDITS", "user_id": format!("u{i}"), "value": true}))
        .collect();
    let r = api.call("POST", path, e, Some(json!({ "changes": many }))).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body["message"].as_str().unwrap().contains("at most 1000"), "{}", r.body);
    assert_eq!(api.log_len().await, before, "nothing written by refused batches");
    assert_eq!(api.store.flag("CREDITS").await.unwrap().unwrap().value, ff_core::Value::Bool(true));

    // Every kind of change in one batch; later changes see earlier ones.
    let body = json!({"reason": "launch", "changes": [
        {"op": "update", "key": "LEAD_HOURS", "version": 1, "value": 12},
        {"op": "update", "key": "CREDITS", "enabled": false},
        {"op": "set_override", "key": "LEAD_HOURS", "user_id": "u1", "value": 5},
        {"op": "create", "key": "NEW", "type": "bool", "value": true, "description": "new"},
        {"op": "set_override", "key": "NEW", "user_id": "tester", "value": false},
        {"op": "archive", "key": "NEW"},
        {"op": "restore", "key": "NEW"},
        {"op": "delete_override", "key": "LEAD_HOURS", "user_id": "nobody"},
    ]});
    let r = api.call("POST", path, e, Some(body)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let changes = r.body["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 7, "the no-op delete writes no row: {}", r.body);
    let last = changes[6]["seq"].clone();
    assert_eq!(r.body["seq"], last);
    assert!(changes.iter().all(|c| c["batch_end"] == last && c["actor"] == "ed" && c["reason"] == "launch"));
    let user = api.call("GET", "/admin/api/users/tester", e, None).await.body;
    let new = user["flags"].as_array().unwrap().iter().find(|f| f["key"] == "NEW").unwrap().clone();
    assert_eq!(new["value"], json!(false), "{user}");
    let lead = api.call("GET", "/admin/api/flags/LEAD_HOURS", e, None).await;
    assert_eq!((lead.body["flag"]["value"].clone(), lead.etag.as_deref()), (json!(12), Some("\"2\"")));
    assert!(!api.store.flag("CREDITS").await.unwrap().unwrap().enabled);
    // An empty or all-no-op batch writes nothing and answers the current seq.
    let r = api.call("POST", path, e, Some(json!({"changes": []}))).await;
    assert_eq!((r.status, r.body["changes"].clone(), r.body["seq"].clone()), (200, json!([]), last));
}

#[tokio::test]
async fn create_archive_restore_and_bad_keys() {
    let api = Api::new().await;
    let e = Some(api.editor.as_str());
    let r = api
        .call(
            "PUT",
            "/admin/api/flags/BANNER",
            e,
            Some(json!({"type": "string", "value": "hello", "reason": "launch"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!((r.body["flag"]["value"].clone(), r.etag.as_deref()), (json!("hello"), Some("\"1\"")));
    let dup =
        api.call("PUT", "/admin/api/flags/BANNER", e, Some(json!({"type": "string", "value": "x"}))).await;
    assert_eq!((dup.status, error(&dup)), (409, "conflict"));
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
    let archived = api.call("GET", "/admin/api/flags?archived=true", e, None).await.body;
    assert_eq!(archived["flags"][0]["key"], "BANNER");
    assert_eq!(api.call("DELETE", "/admin/api/flags/BANNER", e, None).await.status, 404);
    let r = api.call("POST", "/admin/api/flags/BANNER/restore", e, Some(json!({"reason": "oops"}))).await;
    assert_eq!((r.status, r.body["flag"]["archived"].clone()), (200, json!(false)));
    assert_eq!(api.call("POST", "/admin/api/flags/BANNER/restore", e, None).await.status, 409);
}

#[tokio::test]
async fn overrides_and_what_a_user_sees() {
    let api = Api::new().await;
    let e = Some(api.editor.as_str());
    let path = "/admin/api/flags/LEAD_HOURS/overrides/tester";
    let r = api.call("PUT", path, e, Some(json!({"value": 0, "reason": "QA"}))).await;
    assert_eq!((r.status, r.body["value"].clone()), (200, json!(0)));
    for (body, status) in [
        (json!({"value": 5000}), 422),
        (json!({"value": "x"}), 422),
        (json!({}), 422),
        (json!({"value": 1, "extra": 2}), 400),
    ] {
        assert_eq!(api.call("PUT", path, e, Some(body.clone())).await.status, status, "{body}");
    }
    assert_eq!(
        api.call("PUT", "/admin/api/flags/LEAD_HOURS/overrides/%20", e, Some(json!({"value": 1})))
            .await
            .status,
        422
    );
    assert_eq!(
        api.call("PUT", "/admin/api/flags/NOPE/overrides/tester", e, Some(json!({"value": 1}))).await.status,
        404
    );
    api.call_with(
        "PATCH",
        "/admin/api/flags/CREDITS",
        e,
        Some(json!({"enabled": false})),
        &[("if-match", "\"1\"")],
    )
    .await;
    api.call("PUT", "/admin/api/flags/CREDITS/overrides/tester", e, Some(json!({"value": true}))).await;
    let seen = api.call("GET", "/admin/api/users/tester", e, None).await.body;
    let by_key = |k: &str| seen["flags"].as_array().unwrap().iter().find(|f| f["key"] == k).unwrap().clone();
    assert_eq!(
        by_key("LEAD_HOURS"),
        json!({"key": "LEAD_HOURS", "type": "int", "value": 0, "reason": "override"})
    );
    assert_eq!(by_key("CREDITS")["reason"], "disabled");
    assert_eq!(by_key("ONLY_IN_CODE")["reason"], "default");
    let other = api.call("GET", "/admin/api/users/alice", e, None).await.body;
    assert_eq!(
        other["flags"][1],
        json!({"key": "LEAD_HOURS", "type": "int", "value": 24, "reason": "global"})
    );
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
    api.call_with("PATCH", flag, e, Some(json!({"value": 48})), &[("if-match", "\"1\"")]).await;
    api.call("PUT", &format!("{flag}/overrides/tester"), e, Some(json!({"value": 0}))).await;
    api.call("PUT", &format!("{flag}/overrides/tester"), e, Some(json!({"value": 1}))).await;
    api.call("DELETE", &format!("{flag}/overrides/tester"), e, None).await;
    api.call("PUT", "/admin/api/flags/NEWONE", e, Some(json!({"type": "bool", "value": true}))).await;
    assert_eq!(api.log_len().await, start + 5);
    let log = api.call("GET", "/admin/api/changes?actor=ed&limit=10", e, None).await.body;
    let log = log["changes"].as_array().unwrap().clone();
    assert_eq!(log.len(), 5);
    assert!(log.iter().all(|c| c["actor"] == "ed"));
    let actions: Vec<&str> = log.iter().map(|c| c["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["flag.create", "override.delete", "override.set", "override.set", "flag.update"]);
    assert_eq!((log[1]["before"].clone(), log[1]["after"].clone()), (json!(1), Value::Null));
    assert_eq!((log[2]["before"].clone(), log[2]["after"].clone()), (json!(0), json!(1)));
    let seq = |i: usize| log[i]["seq"].as_u64().unwrap();
    let by_key = api.call("GET", "/admin/api/changes?key=NEWONE", e, None).await.body;
    assert_eq!(by_key["changes"].as_array().unwrap().len(), 1);
    assert_eq!(api.call("GET", "/admin/api/changes?since=yesterday", e, None).await.status, 400);

    // Revert the value change: back to 24, audited as a revert.
    let r = api
        .call(
            "POST",
            &format!("/admin/api/changes/{}/revert", seq(4)),
            e,
            Some(json!({"reason": "bad idea"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["change"]["reason"], format!("revert of #{}: bad idea", seq(4)));
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
    let r = api
        .call(
            "POST",
            "/admin/api/tokens",
            a,
            Some(json!({"name": "deploy-bot", "role": "viewer", "reason": "deploys"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let token = r.body["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("ff_"));
    assert_eq!(api.call("GET", "/admin/api/flags", Some(&token), None).await.status, 200);
    let list = api.call("GET", "/admin/api/tokens", a, None).await;
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
    let r = api.call("DELETE", "/admin/api/tokens/deploy-bot", a, Some(json!({"reason": "leaked"}))).await;
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
    assert_eq!((r.status, error(&r)), (413, "body_too_large"));
    assert!(api.store.flag("BIG").await.unwrap().is_none());
}

#[tokio::test]
async fn segments_through_the_api() {
    let api = Api::new().await;
    let (e, v) = (Some(api.editor.as_str()), Some(api.viewer.as_str()));
    let body = json!({"description": "QA", "included": ["qa-1", "qa-2"], "reason": "beta"});
    assert_eq!(api.call("PUT", "/admin/api/segments/testers", v, Some(body.clone())).await.status, 403);
    let r = api.call("PUT", "/admin/api/segments/testers", e, Some(body.clone())).await;
    assert_eq!((r.status, r.body["version"].clone()), (201, json!(1)), "{}", r.body);
    let again = api.call("PUT", "/admin/api/segments/testers", e, Some(body)).await;
    assert_eq!((again.status, again.body["changed"].clone()), (200, json!(false)));
    let r = api.call("GET", "/admin/api/segments/testers", v, None).await;
    assert_eq!((r.status, r.etag.as_deref()), (200, Some("\"1\"")));
    assert_eq!(r.body["segment"]["definition"]["included"], json!(["qa-1", "qa-2"]));
    let list = api.call("GET", "/admin/api/segments", v, None).await;
    assert_eq!(list.body["segments"][0]["included"], 2);
    let stale = api
        .call_with(
            "PUT",
            "/admin/api/segments/testers",
            e,
            Some(json!({"included": []})),
            &[("if-match", "\"0\"")],
        )
        .await;
    assert_eq!((stale.status, error(&stale)), (409, "version_conflict"));
    for (b, status) in [(json!({"included": [""]}), 422), (json!({"inclded": []}), 422), (json!([1]), 422)] {
        assert_eq!(
            api.call("PUT", "/admin/api/segments/bad", e, Some(b.clone())).await.status,
            status,
            "{b}"
        );
    }
    // A flag using it: the segment cannot be deleted; an unknown segment cannot be used.
    let rule = |seg: &str| json!({"targeting": {"rules": [{"clauses": [{"attribute": "user_id", "op": "in_segment", "values": [seg]}], "value": 0}]}});
    let r = api
        .call_with("PATCH", "/admin/api/flags/LEAD_HOURS", e, Some(rule("nope")), &[("if-match", "\"1\"")])
        .await;
    assert_eq!(r.status, 422);
    assert!(r.body["message"].as_str().unwrap().contains("does not exist"));
    let r = api
        .call_with("PATCH", "/admin/api/flags/LEAD_HOURS", e, Some(rule("testers")), &[("if-match", "\"1\"")])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = api.call("GET", "/admin/api/users/qa-1", v, None).await.body;
    let lead = seen["flags"].as_array().unwrap().iter().find(|f| f["key"] == "LEAD_HOURS").unwrap().clone();
    assert_eq!((lead["value"].clone(), lead["reason"].clone()), (json!(0), json!({"rule": 0})));
    let r = api.call("DELETE", "/admin/api/segments/testers", e, None).await;
    assert_eq!((r.status, error(&r)), (409, "in_use"));
    assert!(r.body["message"].as_str().unwrap().contains("LEAD_HOURS"));
    let export = api.call("GET", "/admin/api/export", v, None).await.body;
    assert_eq!(export["segments"][0]["key"], "testers");
    api.call_with(
        "PATCH",
        "/admin/api/flags/LEAD_HOURS",
        e,
        Some(json!({"targeting": {}})),
        &[("if-match", "\"2\"")],
    )
    .await;
    assert_eq!(
        api.call("DELETE", "/admin/api/segments/testers", e, Some(json!({"reason": "done"}))).await.status,
        200
    );
    assert_eq!(api.call("DELETE", "/admin/api/segments/testers", e, None).await.status, 404);
    assert_eq!(api.call("GET", "/admin/api/segments/testers", v, None).await.status, 404);
}

#[tokio::test]
async fn lifecycle_fields_stale_report_and_usage() {
    let api = Api::new().await;
    let (ed, vi) = (Some(api.editor.as_str()), Some(api.viewer.as_str()));
    // A bool flag created without kind or expiry: a release flag, 40 days.
    let r = api
        .call("PUT", "/admin/api/flags/NEW_SEARCH", ed, Some(json!({"type": "bool", "value": false})))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let expires = time::OffsetDateTime::parse(
        r.body["flag"]["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let days = (expires - time::OffsetDateTime::now_utc()).as_seconds_f64() / 86_400.0;
    assert!((39.9..=40.1).contains(&days), "{days}");
    // Kill switches are permanent: no expiry.
    let body = json!({"type": "bool", "value": true, "kind": "kill_switch", "owner": "payments"});
    let r = api.call("PUT", "/admin/api/flags/PAY_KILL", ed, Some(body)).await;
    assert_eq!((r.status, &r.body["flag"]["expires_at"]), (201, &Value::Null), "{}", r.body);
    assert_eq!(r.body["flag"]["kind"], "kill_switch");
    // Patch kind, permanence and policy; bad values are 422/400 with the field named.
    let etag = api.call("GET", "/admin/api/flags/NEW_SEARCH", vi, None).await.etag.unwrap();
    let patch =
        json!({"kind": "experiment", "expiry": "serve_default", "expires_at": "2020-01-01T00:00:00Z"});
    let r =
        api.call_with("PATCH", "/admin/api/flags/NEW_SEARCH", ed, Some(patch), &[("if-match", &etag)]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (r.body["flag"]["kind"].as_str(), r.body["flag"]["expiry"].as_str()),
        (Some("experiment"), Some("serve_default"))
    );
    let etag = r.etag.unwrap();
    for bad in [json!({"kind": "forever"}), json!({"expiry": "explode"}), json!({"permanent": "yes"})] {
        let before = api.log_len().await;
        let r = api
            .call_with("PATCH", "/admin/api/flags/NEW_SEARCH", ed, Some(bad.clone()), &[("if-match", &etag)])
            .await;
        assert!(r.status == 400 || r.status == 422, "{bad}: {} {}", r.status, r.body);
        let field = bad.as_object().unwrap().keys().next().unwrap().clone();
        let text = r.body["message"].as_str().unwrap_or_default();
        let value = bad[&field].to_string();
        assert!(text.contains(value.trim_matches('"')) || text.contains(&field), "{bad}: {text}");
        assert_eq!(api.log_len().await, before, "{bad} wrote something");
    }
    // The stale report: NEW_SEARCH is past its expiry; CREDITS has never been
    // evaluated but was created just now, so it is not stale yet.
    let r = api.call("GET", "/admin/api/stale", vi, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let stale: Vec<&str> =
        r.body["stale"].as_array().unwrap().iter().map(|s| s["key"].as_str().unwrap()).collect();
    assert_eq!(stale, ["NEW_SEARCH"]);
    assert_eq!(r.body["stale"][0]["reasons"], json!(["expired"]));
    assert_eq!(r.body["rules"], json!({"not_evaluated_days": 7, "one_value_days": 7}));
    let r = api.call("GET", "/admin/api/flags?stale=true", vi, None).await;
    let keys: Vec<&str> =
        r.body["flags"].as_array().unwrap().iter().map(|f| f["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["NEW_SEARCH"]);
    let r = api.call("GET", "/admin/api/stale?not_evaluated_days=0", vi, None).await;
    assert_eq!(r.status, 400);
    assert!(r.body["message"].as_str().unwrap().contains("not_evaluated_days"), "{}", r.body);
    // Usage recorded by instances shows in the report and in the daily counts.
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
    let r = api.call("GET", "/admin/api/stale", vi, None).await;
    assert_eq!(r.body["unknown"][0]["key"], "TYPO");
    assert_eq!(r.body["unknown"][0]["count"], 3);
}

/// What `GET /export` (and so `ff export`) writes is what a `FileStore` reads: the
/// same flags, targeting, overrides and segments.
#[tokio::test]
async fn an_export_is_a_flags_file() {
    let api = Api::new().await;
    let e = Some(api.editor.as_str());
    let r = api.call("PUT", "/admin/api/segments/testers", e, Some(json!({"included": ["qa-1"]}))).await;
    assert!(r.status < 300, "{}", r.body);
    let body = json!({"changes": [
        {"op": "update", "key": "LEAD_HOURS", "value": 12, "owner": "ops", "tags": ["a"],
         "targeting": {"rules": [{"clauses": [{"attribute": "user_id", "op": "in_segment", "values": ["testers"]}], "value": 0}]}},
        {"op": "set_override", "key": "LEAD_HOURS", "user_id": "tester", "value": 1},
        {"op": "update", "key": "CREDITS", "enabled": false},
    ]});
    assert_eq!(api.call("POST", "/admin/api/batch", e, Some(body)).await.status, 200);
    let export = api.call("GET", "/admin/api/export", e, None).await.body;
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
    let patch = |body: Value| async move {
        let v = api.store.flag("CREDITS").await.unwrap().unwrap().version;
        let r = api.call_with("PATCH", flag, e, Some(body), &[("if-match", &format!("\"{v}\""))]).await;
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
    let rule = json!({"rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["pro"]}], "value": true}]});

    // A change of value, targeting and metadata at once is undone whole.
    let all = patch(json!({
        "value": false, "targeting": rule, "kind": "ops", "permanent": false, "expiry": "serve_default",
        "expires_at": "2031-01-01T00:00:00Z", "owner": "team-x", "tags": ["a"], "description": "changed",
        "ticket": "T-1", "off_value": false, "enabled": false,
    }))
    .await;
    let r = revert(all).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(same_as_original().await, original);

    // A change of targeting alone is undone (it was "already undone" before).
    let only_rules = patch(json!({"targeting": rule})).await;
    assert_eq!(revert(only_rules).await.status, 200);
    assert_eq!(same_as_original().await, original);

    // A later change conflicts, clearly, and nothing is written; newest first works.
    let rules = patch(json!({"targeting": rule})).await;
    let value = patch(json!({"value": false})).await;
    let log = api.log_len().await;
    let r = revert(rules).await;
    assert_eq!((r.status, error(&r)), (409, "conflict"), "{}", r.body);
    assert!(r.body["message"].as_str().unwrap().contains("revert the later changes first"), "{}", r.body);
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
    let seg = json!({"included": ["qa-1"]});
    assert_eq!(api.call("PUT", "/admin/api/segments/testers", e, Some(seg)).await.status, 201);
    let rule = json!({"targeting": {"rules": [{"clauses": [{"attribute": "user_id", "op": "in_segment", "values": ["testers"]}], "value": 0}]}});
    let r =
        api.call_with("PATCH", "/admin/api/flags/LEAD_HOURS", e, Some(rule), &[("if-match", "\"1\"")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(api.call("DELETE", "/admin/api/flags/LEAD_HOURS", e, None).await.status, 200);
    // Archived, it no longer holds the segment, which can go.
    assert_eq!(api.call("DELETE", "/admin/api/segments/testers", e, None).await.status, 200);
    let log = api.log_len().await;
    let r = api.call("POST", "/admin/api/flags/LEAD_HOURS/restore", e, None).await;
    assert_eq!((r.status, error(&r)), (422, "invalid_value"), "{}", r.body);
    assert!(r.body["message"].as_str().unwrap().contains("segment \"testers\" does not exist"), "{}", r.body);
    assert_eq!(api.log_len().await, log, "nothing written");
    assert!(api.store.flag("LEAD_HOURS").await.unwrap().unwrap().archived);
    // With the segment back, it restores.
    assert_eq!(
        api.call("PUT", "/admin/api/segments/testers", e, Some(json!({"included": []}))).await.status,
        201
    );
    assert_eq!(api.call("POST", "/admin/api/flags/LEAD_HOURS/restore", e, None).await.status, 200);
}

#[tokio::test]
async fn the_flag_list_pages_and_counts_what_matches() {
    let api = Api::new().await;
    let (e, v) = (Some(api.editor.as_str()), Some(api.viewer.as_str()));
    api.call("PUT", "/admin/api/flags/LEAD_HOURS/overrides/u1", e, Some(json!({"value": 1}))).await;
    api.call("PUT", "/admin/api/flags/LEAD_HOURS/overrides/u2", e, Some(json!({"value": 2}))).await;
    let all = api.call("GET", "/admin/api/flags", v, None).await.body;
    let keys =
        |b: &Value| b["flags"].as_array().unwrap().iter().map(|f| f["key"].clone()).collect::<Vec<_>>();
    assert_eq!((keys(&all), all["total"].clone()), (vec![json!("CREDITS"), json!("LEAD_HOURS")], json!(2)));
    assert_eq!(all["flags"][1]["overrides"], 2);
    let page = api.call("GET", "/admin/api/flags?offset=1&limit=1", v, None).await.body;
    assert_eq!((keys(&page), page["total"].clone()), (vec![json!("LEAD_HOURS")], json!(2)));
    let past = api.call("GET", "/admin/api/flags?offset=5", v, None).await.body;
    assert_eq!((keys(&past).len(), past["total"].clone()), (0, json!(2)));
    let r = api.call("GET", "/admin/api/flags?limit=many", v, None).await;
    assert_eq!(r.status, 400, "{}", r.body);
}
