//! The OpenFeature Remote Evaluation Protocol (OFREP): services in any language with
//! an OFREP provider read the same flags. Single and bulk evaluation, and the
//! configuration extension; `viewer` tokens, as `Authorization: Bearer` or `X-API-Key`.

// Handlers return the OFREP refusal itself as `Err(Response)`: boxing it gains nothing.
#![allow(clippy::result_large_err)]

use std::hash::{Hash, Hasher};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ff_core::{EvalContext, FlagInfo, Reason, Snapshot, Value as FlagValue, validate_user_id};
use ff_store::Role;
use serde_json::{Map, Value, json};

use crate::Admin;
use crate::auth::Caller;
use crate::error::AdminError;

/// Any refusal before evaluation (token, role, body size, store) in OFREP's shape:
/// `errorCode` `GENERAL`, the reason in `errorDetails`.
fn refusal(e: AdminError) -> Response {
    let (status, _, message) = e.parts();
    failure(status, None, "GENERAL", message)
}

/// The caller and body of an OFREP request, or the refusal in OFREP's shape.
fn admitted(
    caller: Result<Caller, AdminError>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(Caller, Bytes), Response> {
    let caller = caller.and_then(|c| c.require(Role::Viewer).map(|()| c)).map_err(refusal)?;
    let body =
        body.map_err(|r| refusal(AdminError::InvalidBody { status: r.status(), message: r.body_text() }))?;
    Ok((caller, body))
}

/// An OFREP error body: `{key, errorCode, errorDetails}`.
fn failure(status: StatusCode, key: Option<&str>, code: &str, details: impl Into<String>) -> Response {
    let mut body = json!({ "errorCode": code, "errorDetails": details.into() });
    if let Some(k) = key {
        body["key"] = k.into();
    }
    (status, Json(body)).into_response()
}

/// The request's `context` as an evaluation context: `targetingKey` is the user id,
/// every other field an attribute.
fn context(body: &Bytes) -> Result<EvalContext, (&'static str, String)> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(EvalContext::anonymous());
    }
    let parsed: Value =
        serde_json::from_slice(body).map_err(|e| ("PARSE_ERROR", format!("the body is not JSON: {e}")))?;
    let Value::Object(mut request) = parsed else {
        return Err(("PARSE_ERROR", "the body must be a JSON object with a `context`".into()));
    };
    let fields = match request.remove("context") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(fields)) => fields,
        Some(_) => return Err(("INVALID_CONTEXT", "`context` must be an object".into())),
    };
    let mut ctx = match fields.get("targetingKey") {
        None | Some(Value::Null) => EvalContext::anonymous(),
        Some(Value::String(user)) => {
            validate_user_id(user).map_err(|e| ("INVALID_CONTEXT", format!("targetingKey: {e}")))?;
            EvalContext::user(user)
        }
        Some(other) => {
            return Err(("INVALID_CONTEXT", format!("targetingKey must be a string, got {other}")));
        }
    };
    for (name, value) in fields {
        if name != "targetingKey" {
            ctx = ctx.with_attribute(name, value);
        }
    }
    Ok(ctx)
}

/// One flag's result as OFREP has it. `None` as the value: use the code default
/// (OFREP's `codeDefaultFlag`: no `value` field).
fn success(
    key: &str,
    record: Option<FlagInfo<'_>>,
    value: Option<&FlagValue>,
    reason: Reason,
    version: u64,
) -> Value {
    let targeted = record.is_some_and(|r| r.is_targeted());
    let (ofrep_reason, variant) =
        (ff_api::open_feature_reason(reason, targeted), ff_api::open_feature_variant(reason));
    let mut metadata = json!({ "snapshotVersion": version, "ffReason": reason.to_string() });
    if let Some(r) = record {
        metadata["flagVersion"] = r.version().into();
        metadata["type"] = serde_json::to_value(r.value_type()).unwrap_or_default();
    }
    let mut body = json!({ "key": key, "reason": ofrep_reason, "variant": variant, "metadata": metadata });
    if let Some(v) = value.filter(|_| !matches!(reason, Reason::Expired | Reason::Default)) {
        body["value"] = v.to_json();
    }
    body
}

/// `POST /ofrep/v1/evaluate/flags/{key}`.
pub(crate) async fn evaluate(
    State(admin): State<Admin>,
    caller: Result<Caller, AdminError>,
    Path(key): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Response> {
    let (_, body) = admitted(caller, body)?;
    let ctx = match context(&body) {
        Ok(c) => c,
        Err((code, details)) => return Ok(failure(StatusCode::BAD_REQUEST, Some(&key), code, details)),
    };
    let snapshot = admin.snapshot().await.map_err(|e| refusal(e.into()))?;
    let version = snapshot.version();
    if let Some((value, reason)) = snapshot.read_key(&key, &ctx) {
        return Ok(
            Json(success(&key, snapshot.flag_info(&key), Some(&value), reason, version)).into_response()
        );
    }
    // Declared by the application but not in the store (yet): its code default.
    if admin.decls().iter().any(|d| d.key == key) {
        return Ok(Json(success(&key, None, None, Reason::Default, version)).into_response());
    }
    Ok(failure(StatusCode::NOT_FOUND, Some(&key), "FLAG_NOT_FOUND", format!("no flag {key:?}")))
}

/// Every flag for one context, and an ETag of the snapshot version and the context.
fn bulk(snapshot: &Snapshot, admin: &Admin, ctx: &EvalContext) -> Vec<Value> {
    let version = snapshot.version();
    let mut flags: Vec<Value> = snapshot
        .read_all(ctx)
        .map(|(flag, value, reason)| success(flag.key(), Some(flag), Some(value), reason, version))
        .collect();
    for d in admin.decls().iter().filter(|d| snapshot.flag_info(&d.key).is_none()) {
        let pinned = snapshot.read_key(&d.key, ctx);
        let (value, reason) = pinned.map_or((None, Reason::Default), |(v, r)| (Some(v), r));
        flags.push(success(&d.key, None, value.as_ref(), reason, version));
    }
    flags.sort_by(|a, b| a["key"].as_str().cmp(&b["key"].as_str()));
    flags
}

/// `POST /ofrep/v1/evaluate/flags`, with `If-None-Match` answered by 304.
pub(crate) async fn evaluate_all(
    State(admin): State<Admin>,
    caller: Result<Caller, AdminError>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Response> {
    let (_, body) = admitted(caller, body)?;
    let ctx = match context(&body) {
        Ok(c) => c,
        Err((code, details)) => return Ok(failure(StatusCode::BAD_REQUEST, None, code, details)),
    };
    let snapshot = admin.snapshot().await.map_err(|e| refusal(e.into()))?;
    // The answer depends on the snapshot and the context: both go into the tag.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut hasher);
    let etag = format!("\"{}-{:016x}\"", snapshot.version(), hasher.finish());
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().trim_start_matches("W/") == etag));
    let etag = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"0\""));
    if matches {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let flags = bulk(&snapshot, &admin, &ctx);
    Ok((StatusCode::OK, [(header::ETAG, etag)], Json(json!({ "flags": flags }))).into_response())
}

/// `GET /ofrep/v1/configuration`: what a provider may assume.
pub(crate) async fn configuration(caller: Result<Caller, AdminError>) -> Result<Response, Response> {
    caller.and_then(|c| c.require(Role::Viewer)).map_err(refusal)?;
    Ok(Json(json!({
        "name": "ff",
        "capabilities": {
            "cacheInvalidation": { "polling": { "enabled": true, "minPollingIntervalMs": 1000 } },
            "flagEvaluation": { "supportedTypes": ["boolean", "int", "float", "string", "object"] },
        },
    }))
    .into_response())
}
