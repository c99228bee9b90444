//! The JSON routes.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ff_core::{
    Action, EvalContext, FlagDef, FlagRecord, Reason, StaleFlag, StaleRules, stale_flags, validate_user_id,
};
use ff_store::{Batch, ChangeQuery, FlagPatch, Mutation, Role, Write, default_expiry};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::Admin;
use crate::auth::Caller;
use crate::error::AdminError;

type ApiResult = Result<Response, AdminError>;

/// Fields a PATCH may change. Bounds come from the code declaration.
const PATCHABLE: &[&str] = FlagPatch::EDITABLE;

fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

fn with_etag(status: StatusCode, version: u64, body: impl serde::Serialize) -> Response {
    (status, [(header::ETAG, etag(version))], Json(body)).into_response()
}

/// `If-Match: "3"` (also `3` and `W/"3"`) as a version.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, AdminError> {
    let Some(value) = headers.get(header::IF_MATCH) else { return Ok(None) };
    let text = value.to_str().unwrap_or_default().trim();
    let text = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    text.parse::<u64>().map(Some).map_err(|_| {
        AdminError::BadRequest(format!(
            "If-Match must be the flag's version as its ETag gives it, like \"3\"; got {text:?}"
        ))
    })
}

/// Splits an optional `reason` off a JSON object body.
fn take_reason(body: &mut Map<String, Value>) -> Result<Option<String>, AdminError> {
    match body.remove("reason") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(r)) if r.len() <= ff_core::MAX_TEXT_BYTES => Ok(Some(r)),
        Some(Value::String(_)) => {
            Err(AdminError::BadRequest(format!("reason is longer than {} bytes", ff_core::MAX_TEXT_BYTES)))
        }
        Some(_) => Err(AdminError::BadRequest("reason must be a string".into())),
    }
}

fn object(body: Result<Json<Value>, JsonRejection>) -> Result<Map<String, Value>, AdminError> {
    match body? {
        Json(Value::Object(map)) => Ok(map),
        _ => Err(AdminError::InvalidBody {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: "the body must be a JSON object".into(),
        }),
    }
}

/// A JSON object as a typed body; what does not fit is a 422 naming the field.
fn parse_body<T: serde::de::DeserializeOwned>(body: Map<String, Value>) -> Result<T, AdminError> {
    serde_json::from_value(Value::Object(body)).map_err(|e| AdminError::InvalidBody {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        message: e.to_string(),
    })
}

fn write(caller: &Caller, mutation: Mutation, reason: Option<String>) -> Write {
    Write { mutation, actor: caller.name.clone(), reason }
}

fn flag_view(admin: &Admin, record: FlagRecord, overrides: usize) -> ff_api::FlagView {
    let declared = admin.decls().iter().any(|d| d.key == record.key);
    let needs_approval = admin.needs_approval(&record);
    ff_api::FlagView { record, overrides, declared, stale: None, needs_approval }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListQuery {
    offset: Option<usize>,
    limit: Option<usize>,
    q: Option<String>,
    tag: Option<String>,
    owner: Option<String>,
    stale: Option<bool>,
    archived: Option<bool>,
}

/// The stale report's rules from query parameters, or the admin's defaults.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct StaleQuery {
    not_evaluated_days: Option<i64>,
    one_value_days: Option<i64>,
}

/// A number of days from a query parameter: 1 to 365, or the default.
fn days(name: &str, v: Option<i64>, default: i64) -> Result<i64, AdminError> {
    match v {
        None => Ok(default),
        Some(n @ 1..=365) => Ok(n),
        Some(n) => Err(AdminError::BadRequest(format!("{name} must be 1 to 365 days, got {n}"))),
    }
}

impl StaleQuery {
    fn rules(&self, admin: &Admin) -> Result<StaleRules, AdminError> {
        let d = admin.default_stale_rules();
        Ok(StaleRules {
            not_evaluated_days: days("not_evaluated_days", self.not_evaluated_days, d.not_evaluated_days)?,
            one_value_days: days("one_value_days", self.one_value_days, d.one_value_days)?,
        })
    }
}

/// The stale flags among `flags` under `rules`, reading the usage they need.
pub(crate) async fn stale_report(
    admin: &Admin,
    flags: &[FlagRecord],
    rules: StaleRules,
    now: OffsetDateTime,
) -> Result<Vec<StaleFlag>, AdminError> {
    let usage = admin.store().usage(rules.since(now)).await?;
    Ok(stale_flags(flags, &usage, rules, now))
}

pub(crate) async fn stale(
    State(admin): State<Admin>,
    caller: Caller,
    query: Result<Query<StaleQuery>, QueryRejection>,
) -> ApiResult {
    caller.require(Role::Viewer)?;
    let Query(q) = query?;
    let rules = q.rules(&admin)?;
    let flags = admin.store().list_flags().await?;
    let stale = stale_report(&admin, &flags, rules, OffsetDateTime::now_utc()).await?;
    let unknown = admin.store().unknown_flags().await?;
    let rules = ff_api::StaleWindows {
        not_evaluated_days: rules.not_evaluated_days,
        one_value_days: rules.one_value_days,
    };
    Ok(Json(ff_api::StaleReport { stale, unknown, rules }).into_response())
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct UsageQuery {
    days: Option<i64>,
}

/// Evaluations per flag per UTC day (oldest first, today last) and when each flag
/// was last evaluated: what the sparklines draw.
pub(crate) async fn usage(
    State(admin): State<Admin>,
    caller: Caller,
    query: Result<Query<UsageQuery>, QueryRejection>,
) -> ApiResult {
    caller.require(Role::Viewer)?;
    let Query(q) = query?;
    let days = days("days", q.days, 14)?;
    let (dates, flags) = daily_usage(&admin, days).await?;
    let flags: Map<String, Value> = flags
        .into_iter()
        .map(|(k, (counts, last))| {
            (k, json!({ "daily": counts, "last_evaluated": last.and_then(|t| t.format(&Rfc3339).ok()) }))
        })
        .collect();
    let dates: Vec<String> = dates.iter().map(ToString::to_string).collect();
    Ok(Json(json!({ "days": dates, "flags": flags })).into_response())
}

/// One flag's evaluations per day and last evaluation.
pub(crate) type Daily = (Vec<u64>, Option<OffsetDateTime>);

/// The last `days` UTC days (oldest first) and each evaluated flag's counts on them.
pub(crate) async fn daily_usage(
    admin: &Admin,
    days: i64,
) -> Result<(Vec<time::Date>, std::collections::BTreeMap<String, Daily>), AdminError> {
    let today = OffsetDateTime::now_utc().date();
    let dates: Vec<time::Date> =
        (0..days).rev().filter_map(|d| today.checked_sub(time::Duration::days(d))).collect();
    let first = dates.first().copied().unwrap_or(today);
    let mut flags: std::collections::BTreeMap<String, Daily> = Default::default();
    for row in admin.store().usage(first).await? {
        let entry = flags.entry(row.key.clone()).or_insert_with(|| (vec![0; dates.len()], None));
        if let Some(i) = dates.iter().position(|d| *d == row.day) {
            entry.0[i] += row.count;
        }
        entry.1 = entry.1.max(Some(row.last_at));
    }
    Ok((dates, flags))
}

pub(crate) async fn list_flags(
    State(admin): State<Admin>,
    caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult {
    caller.require(Role::Viewer)?;
    let Query(q) = query?;
    // Live flags from the snapshot when there is one; archived ones only the store has.
    let flags = match q.archived {
        Some(true) => admin.store().list_flags().await?,
        _ => admin.live_flags().await?,
    };
    let counts = admin.override_counts().await?;
    let now = OffsetDateTime::now_utc();
    let stale = stale_report(&admin, &flags, admin.default_stale_rules(), now).await?;
    let stale: std::collections::HashMap<&str, &StaleFlag> =
        stale.iter().map(|s| (s.key.as_str(), s)).collect();
    let is_stale = |f: &FlagRecord| stale.contains_key(f.key.as_str());
    let text = q.q.as_deref().map(str::to_lowercase);
    let matching: Vec<&FlagRecord> = flags
        .iter()
        .filter(|f| f.archived == q.archived.unwrap_or(false))
        .filter(|f| {
            text.as_ref()
                .is_none_or(|t| f.key.to_lowercase().contains(t) || f.description.to_lowercase().contains(t))
        })
        .filter(|f| q.tag.as_ref().is_none_or(|t| f.meta.tags.contains(t)))
        .filter(|f| q.owner.as_ref().is_none_or(|o| &f.meta.owner == o))
        .filter(|f| q.stale.is_none_or(|s| is_stale(f) == s))
        .collect();
    let list: Vec<ff_api::FlagView> = matching
        .iter()
        .skip(q.offset.unwrap_or(0))
        .take(q.limit.unwrap_or(usize::MAX))
        .map(|f| {
            let n = counts.get(&f.key).copied().unwrap_or(0);
            let reasons = stale.get(f.key.as_str()).map(|s| s.reasons.clone()).unwrap_or_default();
            ff_api::FlagView { stale: Some(reasons), ..flag_view(&admin, (*f).clone(), n) }
        })
        .collect();
    Ok(Json(ff_api::FlagList { flags: list, total: matching.len() }).into_response())
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct PageQuery {
    offset: Option<usize>,
    limit: Option<usize>,
}

pub(crate) async fn get_flag(
    State(admin): State<Admin>,
    caller: Caller,
    Path(key): Path<String>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> ApiResult {
    caller.require(Role::Viewer)?;
    let Query(page) = query?;
    let store = admin.store();
    let flag = store
        .flag(&key)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("flag {key:?} does not exist")))?;
    let overrides = store.overrides(&key).await?;
    let (offset, limit) = (page.offset.unwrap_or(0), page.limit.unwrap_or(100).min(1000));
    let shown = overrides
        .iter()
        .skip(offset)
        .take(limit)
        .map(|o| ff_api::UserValue { user_id: o.user_id.clone(), value: o.value.clone() })
        .collect();
    let (version, rules) = (flag.version, flag.targeting.rules.clone());
    let body = ff_api::FlagDetail {
        flag: flag_view(&admin, flag, overrides.len()),
        overrides: shown,
        overrides_total: overrides.len(),
        offset,
        limit,
        rules,
    };
    Ok(with_etag(StatusCode::OK, version, body))
}

pub(crate) async fn guard(State(admin): State<Admin>, caller: Caller, Path(key): Path<String>) -> ApiResult {
    caller.require(Role::Viewer)?;
    Ok(Json(admin.guard_view(&key).await?).into_response())
}

/// Users one preview may try.
const PREVIEW_USERS: usize = 100;

pub(crate) async fn preview(
    State(admin): State<Admin>,
    caller: Caller,
    Path(key): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult {
    caller.require(Role::Viewer)?;
    let req: ff_api::PreviewRequest = parse_body(object(body)?)?;
    Ok(Json(preview_edit(&admin, &caller, key, req).await?).into_response())
}

/// A targeting edit checked by the store's own validation (a save's refusal becomes
/// `problem`), its changes, and each user's value now and with it; nothing written.
/// For the API and the page's editor.
pub(crate) async fn preview_edit(
    admin: &Admin,
    caller: &Caller,
    key: String,
    req: ff_api::PreviewRequest,
) -> Result<ff_api::Preview, AdminError> {
    if req.users.len() > PREVIEW_USERS {
        return Err(AdminError::BadRequest(format!("at most {PREVIEW_USERS} users a preview")));
    }
    for u in &req.users {
        if let Some(id) = &u.user_id {
            validate_user_id(id).map_err(|e| AdminError::BadRequest(e.to_string()))?;
        }
    }
    let store = admin.store();
    let current = store
        .flag(&key)
        .await?
        .filter(|f| !f.archived)
        .ok_or_else(|| AdminError::NotFound(format!("flag {key:?} does not exist")))?;
    // The store's own validation, as a save would run it (on the version the editor
    // loaded, and within the snapshot's regex budget), without the save.
    let expected = req.version.unwrap_or(current.version);
    let edited = match serde_json::from_value::<ff_core::Targeting>(req.targeting) {
        Err(e) => Err(format!("targeting: {e}")),
        Ok(targeting) => {
            let patch = FlagPatch { targeting: Some(targeting), ..FlagPatch::default() };
            let m = Mutation::UpdateFlag { key: key.clone(), patch, expected_version: Some(expected) };
            let budget = admin.check_regex_budget(std::slice::from_ref(&m)).await;
            match budget.map(|()| m) {
                Err(e) => Err(e.to_string()),
                Ok(m) => match store.check(write(caller, m, None)).await {
                    Ok(Some(change)) => change
                        .after
                        .and_then(|a| serde_json::from_value::<FlagRecord>(a).ok())
                        .ok_or_else(|| "the edit could not be read back".to_owned()),
                    Ok(None) => Ok(current.clone()),
                    Err(e) => Err(e.to_string()),
                },
            }
        }
    };
    let read_only =
        store.read_only().then(|| "the flags come from a read-only store: edit its file".to_owned());
    // Snapshots of this flag alone (with its overrides and every segment): cheap at any
    // scale, and only when there is someone to try.
    let (overrides, segments) = if req.users.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        (store.overrides(&key).await?, store.segments().await?)
    };
    let snapshot = |record: &FlagRecord| {
        ff_core::Snapshot::from_state(&ff_core::StoreState {
            seq: record.version,
            flags: vec![record.clone()],
            overrides: overrides.clone(),
            segments: segments.clone(),
        })
    };
    let tried = !req.users.is_empty();
    let (now, then) = (snapshot(&current), edited.as_ref().ok().filter(|_| tried).map(snapshot));
    let served = |s: &ff_core::Snapshot, ctx: &EvalContext| {
        s.evaluate_all(ctx).next().map(|(_, value, reason)| ff_api::Served { value: value.to_json(), reason })
    };
    let mut users = Vec::with_capacity(req.users.len());
    for user in req.users {
        let mut ctx = user.user_id.as_deref().map_or_else(EvalContext::anonymous, EvalContext::user);
        for (name, value) in &user.attributes {
            ctx = ctx.with_attribute(name, value.clone());
        }
        let Some(now_served) = served(&now, &ctx) else { continue };
        let edited = then.as_ref().and_then(|s| served(s, &ctx));
        users.push(ff_api::PreviewServed { user, now: now_served, edited });
    }
    let changes = match &edited {
        Ok(record) => targeting_changes(&current.targeting, &record.targeting),
        Err(_) => Vec::new(),
    };
    let problem = edited.err().or(read_only);
    Ok(ff_api::Preview { flag: key, version: current.version, problem, changes, users })
}

/// What an edit changes in a targeting, a line per part (rules and steps by position).
fn targeting_changes(before: &ff_core::Targeting, after: &ff_core::Targeting) -> Vec<String> {
    let parts = |t: &ff_core::Targeting| {
        let mut t = t.clone();
        if let Some(g) = t.guard.as_mut() {
            g.started = None;
        }
        match serde_json::to_value(t) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    };
    let (old, new) = (parts(before), parts(after));
    // A part with a long id list is shown by its start.
    let short = |v: &Value| {
        let text = v.to_string();
        match text.char_indices().nth(300) {
            Some((at, _)) => format!("{}…", &text[..at]),
            None => text,
        }
    };
    let mut lines = Vec::new();
    for name in ["rules", "split", "bucket_by", "salt", "schedule", "guard"] {
        match (old.get(name), new.get(name)) {
            (Some(Value::Array(a)), Some(Value::Array(b))) => {
                for i in 0..a.len().max(b.len()) {
                    match (a.get(i), b.get(i)) {
                        (Some(x), Some(y)) if x != y => {
                            lines.push(format!("~ {name}[{i}]: {} -> {}", short(x), short(y)))
                        }
                        (Some(x), None) => lines.push(format!("- {name}[{i}]: {}", short(x))),
                        (None, Some(y)) => lines.push(format!("+ {name}[{i}]: {}", short(y))),
                        _ => {}
                    }
                }
            }
            (Some(x), Some(y)) if x != y => lines.push(format!("~ {name}: {} -> {}", short(x), short(y))),
            (Some(x), None) => lines.push(format!("- {name}: {}", short(x))),
            (None, Some(y)) => lines.push(format!("+ {name}: {}", short(y))),
            _ => {}
        }
    }
    lines
}

pub(crate) async fn patch_flag(
    State(admin): State<Admin>,
    caller: Caller,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult {
    caller.require(Role::Editor)?;
    let mut body = object(body)?;
    let reason = take_reason(&mut body)?;
    let expected = if_match(&headers)?.ok_or(AdminError::PreconditionRequired)?;
    if let Some(field) = body.keys().find(|k| !PATCHABLE.contains(&k.as_str())) {
        return Err(AdminError::BadRequest(format!(
            "field {field:?} cannot be changed here; changeable: {}",
            PATCHABLE.join(", ")
        )));
    }
    let patch: FlagPatch = parse_body(body)?;
    let m = Mutation::UpdateFlag { key: key.clone(), patch, expected_version: Some(expected) };
    admin.write(write(&caller, m, reason)).await?;
    let flag = admin.store().flag(&key).await?.ok_or_else(|| AdminError::NotFound(key.clone()))?;
    Ok(with_etag(StatusCode::OK, flag.version, ff_api::FlagWritten { flag }))
}

pub(crate) async fn create_flag(
    State(admin): State<Admin>,
    caller: Caller,
    Path(key): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult {
    caller.require(Role::Editor)?;
    let mut body = object(body)?;
    let reason = take_reason(&mut body)?;
    if let Some(k) = body.get("key")
        && k.as_str() != Some(key.as_str())
    {
        return Err(AdminError::BadRequest("the body's key differs from the path's".into()));
    }
    body.insert("key".into(), Value::String(key.clone()));
    let mut def: FlagDef = parse_body(body)?;
    if def.meta.expires_at.is_none() {
        def.meta.expires_at = default_expiry(&def, admin.lifetimes_ref(), OffsetDateTime::now_utc());
    }
    let m = Mutation::CreateFlag { def, if_missing: false };
    admin.write(write(&caller, m, reason)).await?;
    let flag = admin.store().flag(&key).await?.ok_or_else(|| AdminError::NotFound(key.clone()))?;
    Ok(with_etag(StatusCode::CREATED, flag.version, ff_api::FlagWritten { flag }))
}

/// One change of a batch ([`ff_api::BatchOp`]), as the store takes it; a new flag
/// without an expiry gets its kind's default, as `PUT /flags/{key}` gives it.
fn batch_mutation(admin: &Admin, index: usize, item: Value) -> Result<Mutation, AdminError> {
    let op: ff_api::BatchOp = serde_json::from_value(item).map_err(|e| AdminError::InvalidBody {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        message: format!("changes[{index}]: {e}"),
    })?;
    Ok(op_mutation(admin, op))
}

/// A batch op as the store takes it: a new flag without an expiry gets its kind's default.
pub(crate) fn op_mutation(admin: &Admin, op: ff_api::BatchOp) -> Mutation {
    match op {
        ff_api::BatchOp::Create(mut def) => {
            if def.meta.expires_at.is_none() {
                def.meta.expires_at = default_expiry(&def, admin.lifetimes_ref(), OffsetDateTime::now_utc());
            }
            Mutation::CreateFlag { def, if_missing: false }
        }
        op => op.into(),
    }
}

/// A time as RFC 3339, for messages.
pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// `POST /api/batch`: many changes in one transaction; every instance serves all of
/// them from one snapshot, or (on any refusal) none is written.
pub(crate) async fn batch(
    State(admin): State<Admin>,
    caller: Caller,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult {
    caller.require(Role::Editor)?;
    let mut body = object(body)?;
    let reason = take_reason(&mut body)?;
    let items = match body.remove("changes") {
        Some(Value::Array(items)) => items,
        _ => {
            return Err(AdminError::InvalidBody {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                message: "the body needs `changes`, a list of changes".into(),
            });
        }
    };
    if let Some(field) = body.keys().next() {
        return Err(AdminError::BadRequest(format!(
            "unknown field {field:?}; expected `changes` and `reason`"
        )));
    }
    if items.len() > Batch::MAX {
        return Err(AdminError::BadRequest(format!(
            "a batch holds at most {} changes, this one has {}",
            Batch::MAX,
            items.len()
        )));
    }
    let mutations = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| batch_mutation(&admin, i, item))
        .collect::<Result<Vec<_>, _>>()?;
    let mut batch = Batch::new(caller.name.clone(), mutations);
    batch.reason = reason;
    let changes = admin.write_batch(batch).await?;
    let seq = match changes.last() {
        Some(c) => c.seq,
        None => admin.store().latest_seq().await?,
    };
    Ok(Json(ff_api::BatchResponse { changes, seq }).into_response())
}

pub(crate) fn optional_reason(body: &Bytes) -> Result<Option<String>, AdminError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(mut m)) => take_reason(&mut m),
        Ok(_) => Err(AdminError::BadRequest("the body must be a JSON object".into())),
        Err(e) => Err(AdminError::InvalidBody { status: StatusCode::BAD_REQUEST, message: e.to_string() }),
    }
}

pub(crate) async fn archive_flag(
    State(admin): State<Admin>,
    caller: Caller,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    caller.require(Role::Editor)?;
    let reason = optional_reason(&body)?;
    let m = Mutation::ArchiveFlag { key: key.clone(), expected_version: if_match(&headers)? };
    admin.write(write(&caller, m, reason)).await?;
    Ok(Json(json!({ "archived": key })).into_response())
}

pub(crate) async fn restore_flag(
    State(admin): State<Admin>,
    caller: Caller,
    Path(key): Path<String>,
    body: Bytes,
) -> ApiResult {
    caller.require(Role::Editor)?;
    let reason = optional_reason(&body)?;
    admin.write(write(&caller, Mutation::RestoreFlag { key: key.clone() }, reason)).await?;
    let flag = admin.store().flag(&key).await?.ok_or_else(|| AdminError::NotFound(key.clone()))?;
    Ok(with_etag(StatusCode::OK, flag.version, ff_api::FlagWritten { flag }))
}

pub(crate) async fn set_override(
    State(admin): State<Admin>,
    caller: Caller,
    Path((key, user_id)): Path<(String, String)>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult {
    caller.require(Role::Editor)?;
    let mut body = object(body)?;
    let reason = take_reason(&mut body)?;
    let value = body.remove("value").ok_or_else(|| AdminError::InvalidBody {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        message: "missing field `value`".into(),
    })?;
    if let Some(extra) = body.keys().next() {
        return Err(AdminError::BadRequest(format!(
            "unknown field {extra:?}; expected `value` and `reason`"
        )));
    }
    let m = Mutation::SetOverride { key: key.clone(), user_id: user_id.clone(), value };
    let change = admin.write(write(&caller, m, reason)).await?;
    let value = match change {
        Some(c) => c.after.unwrap_or_default(),
        None => admin
            .store()
            .overrides(&key)
            .await?
            .into_iter()
            .find(|o| o.user_id == user_id)
            .map(|o| o.value)
            .unwrap_or_default(),
    };
    Ok(Json(ff_api::OverrideWritten { key, user_id, value }).into_response())
}

pub(crate) async fn delete_override(
    State(admin): State<Admin>,
    caller: Caller,
    Path((key, user_id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    caller.require(Role::Editor)?;
    let reason = optional_reason(&body)?;
    let m = Mutation::DeleteOverride { key: key.clone(), user_id: user_id.clone() };
    match admin.write(write(&caller, m, reason)).await? {
        Some(_) => Ok(Json(json!({ "key": key, "user_id": user_id, "deleted": true })).into_response()),
        None => Err(AdminError::NotFound(format!("{user_id:?} has no override of {key:?}"))),
    }
}

pub(crate) async fn user_lookup(
    State(admin): State<Admin>,
    caller: Caller,
    Path(user_id): Path<String>,
) -> ApiResult {
    caller.require(Role::Viewer)?;
    validate_user_id(&user_id).map_err(|e| AdminError::BadRequest(e.to_string()))?;
    // What the application serves: its live snapshot, environment pins included.
    let snapshot = admin.snapshot().await?;
    let context = EvalContext::user(&user_id);
    let mut flags: Vec<ff_api::UserFlag> = snapshot
        .evaluate_all(&context)
        .map(|(f, value, reason)| ff_api::UserFlag {
            key: f.key().to_owned(),
            value_type: f.value_type(),
            value: value.to_json(),
            reason,
        })
        .collect();
    for d in admin.decls().iter().filter(|d| snapshot.flag_info(&d.key).is_none()) {
        let value = d.default.to_json();
        flags.push(ff_api::UserFlag {
            key: d.key.clone(),
            value_type: d.value_type,
            value,
            reason: Reason::Default,
        });
    }
    flags.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(Json(ff_api::UserLookup { user_id, version: snapshot.version(), flags }).into_response())
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ChangesQuery {
    key: Option<String>,
    actor: Option<String>,
    since: Option<String>,
    before: Option<u64>,
    limit: Option<u32>,
}

pub(crate) async fn changes(
    State(admin): State<Admin>,
    caller: Caller,
    query: Result<Query<ChangesQuery>, QueryRejection>,
) -> ApiResult {
    caller.require(Role::Viewer)?;
    let Query(q) = query?;
    let since = match q.since.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(
            OffsetDateTime::parse(s, &Rfc3339)
                .map_err(|e| AdminError::BadRequest(format!("since must be an RFC 3339 time: {e}")))?,
        ),
        None => None,
    };
    let query = ChangeQuery {
        key: q.key.filter(|k| !k.is_empty()),
        actor: q.actor.filter(|a| !a.is_empty()),
        since,
        before_seq: q.before,
        limit: q.limit.unwrap_or(50).clamp(1, 1000),
    };
    let list = admin.store().changes(&query).await?;
    Ok(Json(ff_api::ChangeList { changes: list }).into_response())
}

/// The mutation that undoes `change`, refusing if what it changed has changed since.
pub(crate) async fn inverse(admin: &Admin, change: &ff_core::Change) -> Result<Mutation, AdminError> {
    let seq = change.seq;
    let record = |v: &Option<Value>| -> Result<FlagRecord, AdminError> {
        serde_json::from_value(v.clone().unwrap_or_default())
            .map_err(|e| AdminError::BadRequest(format!("change {seq} cannot be read: {e}")))
    };
    let key = change.key.clone();
    Ok(match change.action {
        Action::FlagUpdate => {
            let (before, after) = (record(&change.before)?, record(&change.after)?);
            let patch = FlagPatch::undoing(&before, &after);
            if patch == FlagPatch::default() {
                return Err(AdminError::BadRequest(format!(
                    "change {seq} changed only {key}'s bounds, which come from the code: nothing to revert"
                )));
            }
            check_unchanged_since(admin, change, &after).await?;
            Mutation::UpdateFlag { key, patch, expected_version: Some(after.version) }
        }
        Action::FlagCreate | Action::FlagRestore => {
            let after = record(&change.after)?;
            check_unchanged_since(admin, change, &after).await?;
            Mutation::ArchiveFlag { key, expected_version: Some(after.version) }
        }
        Action::FlagArchive => Mutation::RestoreFlag { key },
        Action::OverrideSet | Action::OverrideDelete => {
            let user = change.subject.clone().unwrap_or_default();
            let now =
                admin.store().overrides(&key).await?.into_iter().find(|o| o.user_id == user).map(|o| o.value);
            if now != change.after {
                return Err(AdminError::Conflict(format!(
                    "change {seq} cannot be reverted: {user}'s value of {key} has changed since; \
                     revert the later change first"
                )));
            }
            match change.before.clone() {
                Some(value) => Mutation::SetOverride { key, user_id: user, value },
                None => Mutation::DeleteOverride { key, user_id: user },
            }
        }
        _ => {
            return Err(AdminError::BadRequest(format!(
                "a {} change cannot be reverted",
                change.action.as_str()
            )));
        }
    })
}

/// Refuses to revert a flag change that a later change built on (the store checks
/// the version again when writing).
async fn check_unchanged_since(
    admin: &Admin,
    change: &ff_core::Change,
    after: &FlagRecord,
) -> Result<(), AdminError> {
    let current = admin.store().flag(&change.key).await?;
    match current {
        Some(f) if f.version == after.version && !f.archived => Ok(()),
        Some(f) => Err(AdminError::Conflict(format!(
            "change {} cannot be reverted: {} has changed since (it left version {}, it is now at {}{}); \
             revert the later changes first, newest first",
            change.seq,
            change.key,
            after.version,
            f.version,
            if f.archived { ", archived" } else { "" },
        ))),
        None => Err(AdminError::NotFound(format!("flag {} is gone", change.key))),
    }
}

pub(crate) async fn revert(
    State(admin): State<Admin>,
    caller: Caller,
    Path(seq): Path<u64>,
    body: Bytes,
) -> ApiResult {
    caller.require(Role::Editor)?;
    let why = optional_reason(&body)?;
    let change =
        admin.store().change(seq).await?.ok_or_else(|| AdminError::NotFound(format!("no change {seq}")))?;
    let mutation = inverse(&admin, &change).await?;
    let reason = Some(match why {
        Some(r) => format!("revert of #{seq}: {r}"),
        None => format!("revert of #{seq}"),
    });
    match admin.write(write(&caller, mutation, reason)).await? {
        Some(change) => Ok(Json(ff_api::Reverted { reverted: seq, change }).into_response()),
        None => Err(AdminError::BadRequest(format!("change {seq} is already undone"))),
    }
}

pub(crate) async fn list_tokens(State(admin): State<Admin>, caller: Caller) -> ApiResult {
    caller.require(Role::Admin)?;
    Ok(Json(ff_api::TokenList { tokens: admin.store().tokens().await? }).into_response())
}

pub(crate) async fn create_token(
    State(admin): State<Admin>,
    caller: Caller,
    body: Result<Json<ff_api::NewToken>, JsonRejection>,
) -> ApiResult {
    caller.require(Role::Admin)?;
    let Json(t) = body?;
    let reason = t.reason.as_deref();
    let (record, token) =
        crate::auth::create_token(admin.store(), &t.name, t.role, &caller.name, reason).await?;
    let body = ff_api::TokenCreated { name: record.name, role: record.role, id: record.id, token };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub(crate) async fn revoke_token(
    State(admin): State<Admin>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    caller.require(Role::Admin)?;
    let reason = optional_reason(&body)?;
    let record = admin.store().revoke_token(&name, &caller.name, reason.as_deref()).await?;
    admin.forget_token(&record.id);
    Ok(Json(json!({ "revoked": record.name })).into_response())
}

/// Every live flag with its overrides: the document `ff export` writes and `ff import` reads.
pub(crate) async fn export(State(admin): State<Admin>, caller: Caller) -> ApiResult {
    caller.require(Role::Viewer)?;
    let state = admin.state().await?;
    // Grouped in one pass: a filter per flag grows with flags times overrides.
    let mut by_flag: std::collections::HashMap<&str, std::collections::BTreeMap<String, Value>> =
        Default::default();
    for o in &state.overrides {
        by_flag.entry(&o.key).or_default().insert(o.user_id.clone(), o.value.clone());
    }
    let flags = state
        .flags
        .iter()
        .map(|f| ff_api::ExportedFlag {
            def: f.into(),
            version: f.version,
            overrides: by_flag.remove(f.key.as_str()).unwrap_or_default(),
        })
        .collect();
    Ok(Json(ff_api::Export { version: state.seq, flags, segments: state.segments }).into_response())
}

pub(crate) async fn list_segments(State(admin): State<Admin>, caller: Caller) -> ApiResult {
    caller.require(Role::Viewer)?;
    let segments = admin
        .store()
        .segments()
        .await?
        .iter()
        .map(|s| ff_api::SegmentSummary {
            key: s.key.clone(),
            description: s.definition.description.clone(),
            included: s.definition.included.len(),
            excluded: s.definition.excluded.len(),
            rules: s.definition.rules.len(),
            version: s.version,
        })
        .collect();
    Ok(Json(ff_api::SegmentList { segments }).into_response())
}

pub(crate) async fn get_segment(
    State(admin): State<Admin>,
    caller: Caller,
    Path(key): Path<String>,
) -> ApiResult {
    caller.require(Role::Viewer)?;
    let segments = admin.store().segments().await?;
    let s = segments
        .into_iter()
        .find(|s| s.key == key)
        .ok_or_else(|| AdminError::NotFound(format!("segment {key:?} does not exist")))?;
    Ok(with_etag(StatusCode::OK, s.version, ff_api::SegmentDetail { segment: s }))
}

/// Creates or replaces a segment; `If-Match: "0"` means "only if it does not exist yet".
pub(crate) async fn put_segment(
    State(admin): State<Admin>,
    caller: Caller,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult {
    caller.require(Role::Editor)?;
    let mut body = object(body)?;
    let reason = take_reason(&mut body)?;
    let definition: ff_core::SegmentDef = parse_body(body)?;
    let expected = if_match(&headers)?;
    admin.check_segment_policy(&caller, &key).await?;
    let change = admin.put_segment(&key, definition, expected, (&caller.name, reason.as_deref())).await?;
    let version = change.as_ref().and_then(|c| c.after.as_ref()).and_then(|a| a["version"].as_u64());
    let status = if version == Some(1) { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(ff_api::SegmentWritten { key, changed: change.is_some(), version })).into_response())
}

pub(crate) async fn delete_segment(
    State(admin): State<Admin>,
    caller: Caller,
    Path(key): Path<String>,
    body: Bytes,
) -> ApiResult {
    caller.require(Role::Editor)?;
    let reason = optional_reason(&body)?;
    admin.check_segment_policy(&caller, &key).await?;
    admin.store().delete_segment(&key, (&caller.name, reason.as_deref())).await?;
    Ok(Json(json!({ "deleted": key })).into_response())
}
