//! ff-api: the admin API's request and response types, one definition shared by the
//! admin (which parses them), the `ff` CLI (which builds them) and tests. No HTTP.

#![forbid(unsafe_code)]

use ff_core::{
    Change, FlagDef, FlagRecord, Reason, Rule, SegmentRecord, StaleFlag, StaleReason, UnknownFlag, ValueType,
};
use ff_store::{FlagPatch, Mutation, Role, TokenRecord};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// OpenFeature's name for this reason: `STATIC` (the flag's value, or a pin), `DEFAULT`
/// (a targeted flag's fallthrough, or a code default), `TARGETING_MATCH` (rule,
/// override, schedule step), `SPLIT`, `DISABLED`, `ERROR` (invalid). `targeted`: the
/// flag has targeting.
pub fn open_feature_reason(reason: Reason, targeted: bool) -> &'static str {
    match reason {
        Reason::Global if targeted => "DEFAULT",
        Reason::Global | Reason::Env => "STATIC",
        Reason::Disabled => "DISABLED",
        Reason::Override | Reason::Rule(_) | Reason::Scheduled(_) => "TARGETING_MATCH",
        Reason::Split => "SPLIT",
        Reason::Invalid => "ERROR",
        // A reason added later: the spec's catch-all.
        Reason::Default | Reason::Expired | _ => "DEFAULT",
    }
}

/// A variant name for what was served: `value`, `off`, `override`, `rule:N`,
/// `step:N`, `split`, `env` or `default`.
pub fn open_feature_variant(reason: Reason) -> String {
    match reason {
        Reason::Global => "value".into(),
        Reason::Disabled => "off".into(),
        Reason::Override => "override".into(),
        Reason::Rule(i) => format!("rule:{i}"),
        Reason::Scheduled(i) => format!("step:{i}"),
        Reason::Split => "split".into(),
        Reason::Env => "env".into(),
        Reason::Default | Reason::Expired | Reason::Invalid | _ => "default".into(),
    }
}

/// The ops a batch takes, for messages.
const OPS: &str = "create, update, archive, restore, set_override or delete_override";

/// One change of `POST /admin/api/batch`, as JSON `{"op": ..., "key": ..., ...}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
#[non_exhaustive]
pub enum BatchOp {
    /// Creates a flag (its fields as `PUT /flags/{key}` takes them).
    Create(FlagDef),
    /// Changes fields of a flag; with `version`, only if the flag is still at it.
    Update {
        /// The flag.
        key: String,
        /// The version the change is based on.
        #[serde(skip_serializing_if = "Option::is_none")]
        version: Option<u64>,
        /// What to change.
        #[serde(flatten)]
        patch: FlagPatch,
    },
    /// Archives a flag.
    Archive {
        /// The flag.
        key: String,
        /// The version the change is based on.
        #[serde(skip_serializing_if = "Option::is_none")]
        version: Option<u64>,
    },
    /// Restores an archived flag.
    Restore {
        /// The flag.
        key: String,
    },
    /// Sets one user's value.
    SetOverride {
        /// The flag.
        key: String,
        /// The user.
        user_id: String,
        /// The value, JSON of the flag's type.
        value: Value,
    },
    /// Removes one user's value.
    DeleteOverride {
        /// The flag.
        key: String,
        /// The user.
        user_id: String,
    },
}

impl BatchOp {
    /// The flag it changes.
    pub fn key(&self) -> &str {
        match self {
            BatchOp::Create(def) => &def.key,
            BatchOp::Update { key, .. }
            | BatchOp::Archive { key, .. }
            | BatchOp::Restore { key }
            | BatchOp::SetOverride { key, .. }
            | BatchOp::DeleteOverride { key, .. } => key,
        }
    }
}

impl From<BatchOp> for Mutation {
    fn from(op: BatchOp) -> Mutation {
        match op {
            BatchOp::Create(def) => Mutation::CreateFlag { def, if_missing: false },
            BatchOp::Update { key, version, patch } => {
                Mutation::UpdateFlag { key, patch, expected_version: version }
            }
            BatchOp::Archive { key, version } => Mutation::ArchiveFlag { key, expected_version: version },
            BatchOp::Restore { key } => Mutation::RestoreFlag { key },
            BatchOp::SetOverride { key, user_id, value } => Mutation::SetOverride { key, user_id, value },
            BatchOp::DeleteOverride { key, user_id } => Mutation::DeleteOverride { key, user_id },
        }
    }
}

/// Parsed by hand around serde so each refusal names the field and the op.
impl<'de> Deserialize<'de> for BatchOp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Value::Object(mut item) = Value::deserialize(d)? else {
            return Err(D::Error::custom("must be a JSON object"));
        };
        let op = match item.remove("op") {
            Some(Value::String(op)) => op,
            _ => return Err(D::Error::custom(format!("needs `op`: {OPS}"))),
        };
        parse_op(&op, item).map_err(D::Error::custom)
    }
}

fn parse_op(op: &str, mut item: Map<String, Value>) -> Result<BatchOp, String> {
    let key = match item.remove("key") {
        Some(Value::String(key)) => key,
        _ => return Err("needs `key`, a string".into()),
    };
    let version = match item.remove("version") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| format!("`version` must be a flag version, got {v}"))?),
    };
    let no_version = || match version {
        Some(_) => Err(format!("{op} takes no `version`")),
        None => Ok(()),
    };
    let only = |item: &Map<String, Value>, allowed: &[&str]| match item
        .keys()
        .find(|k| !allowed.contains(&k.as_str()))
    {
        Some(field) => Err(format!("field {field:?} is not part of {op:?}; it takes {}", allowed.join(", "))),
        None => Ok(()),
    };
    let user_id = |item: &mut Map<String, Value>| match item.remove("user_id") {
        Some(Value::String(u)) => Ok(u),
        _ => Err("needs `user_id`, a string".to_owned()),
    };
    Ok(match op {
        "create" => {
            no_version()?;
            item.insert("key".into(), Value::String(key));
            BatchOp::Create(serde_json::from_value(Value::Object(item)).map_err(|e| e.to_string())?)
        }
        "update" => {
            only(&item, FlagPatch::EDITABLE)?;
            let patch = serde_json::from_value(Value::Object(item)).map_err(|e| e.to_string())?;
            BatchOp::Update { key, version, patch }
        }
        "archive" => {
            only(&item, &[])?;
            BatchOp::Archive { key, version }
        }
        "restore" => {
            only(&item, &[])?;
            no_version()?;
            BatchOp::Restore { key }
        }
        "set_override" => {
            no_version()?;
            let user_id = user_id(&mut item)?;
            let value = item.remove("value").ok_or("needs `value`")?;
            only(&item, &[])?;
            BatchOp::SetOverride { key, user_id, value }
        }
        "delete_override" => {
            no_version()?;
            let user_id = user_id(&mut item)?;
            only(&item, &[])?;
            BatchOp::DeleteOverride { key, user_id }
        }
        other => return Err(format!("unknown op {other:?}; expected {OPS}")),
    })
}

/// The body of `POST /admin/api/batch`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchRequest {
    /// The changes, in order; at most [`ff_store::Batch::MAX`].
    pub changes: Vec<BatchOp>,
    /// Why: recorded in every change row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The answer to `POST /admin/api/batch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchResponse {
    /// The change rows written (no-op changes write none).
    pub changes: Vec<Change>,
    /// The store's seq after the batch.
    pub seq: u64,
}

/// A flag as the admin lists and shows it: the record, how many users override it,
/// whether code declares it, and (in listings) why it is stale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlagView {
    /// The stored record.
    #[serde(flatten)]
    pub record: FlagRecord,
    /// Users with an override.
    pub overrides: usize,
    /// Whether the application declares it.
    pub declared: bool,
    /// Why it is stale (listings only; empty: it is not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale: Option<Vec<StaleReason>>,
    /// Whether editors' changes to it wait for a second editor's approval.
    #[serde(default)]
    pub needs_approval: bool,
}

/// `GET /admin/api/flags` (`?offset=&limit=` pages it; all by default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlagList {
    /// This page of the flags that match, by key.
    pub flags: Vec<FlagView>,
    /// How many flags match.
    pub total: usize,
}

/// One user's value of a flag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserValue {
    /// The user.
    pub user_id: String,
    /// The value, JSON of the flag's type.
    pub value: Value,
}

/// `GET /admin/api/flags/{key}`: the flag and a page of its overrides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlagDetail {
    /// The flag.
    pub flag: FlagView,
    /// This page of overrides, by user id.
    pub overrides: Vec<UserValue>,
    /// All its overrides.
    pub overrides_total: usize,
    /// Where the page starts.
    pub offset: usize,
    /// The page's size.
    pub limit: usize,
    /// Its targeting rules.
    pub rules: Vec<Rule>,
}

/// A flag as written: the answer to `PUT` and `PATCH /admin/api/flags/{key}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlagWritten {
    /// The flag as it is now.
    pub flag: FlagRecord,
}

/// What one user is served of one flag, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserFlag {
    /// The flag.
    pub key: String,
    /// Its type.
    #[serde(rename = "type")]
    pub value_type: ValueType,
    /// The value served.
    pub value: Value,
    /// Why.
    pub reason: Reason,
}

/// `GET /admin/api/users/{id}`: every flag as that user gets it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserLookup {
    /// The user.
    pub user_id: String,
    /// The snapshot version the answer comes from.
    pub version: u64,
    /// Every flag, by key.
    pub flags: Vec<UserFlag>,
}

/// `GET /admin/api/changes`: change rows, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeList {
    /// The rows.
    pub changes: Vec<Change>,
}

/// `GET /admin/api/flags/{key}/guard`: a guarded rollout's test and counts, and
/// what the guard wrote for the flag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardView {
    /// The flag.
    pub flag: String,
    /// Its guard's state, counts and history; `None` when it has no guard (now).
    pub state: Option<ff_store::guard::GuardState>,
    /// The guardian's writes to the flag (rollbacks, pauses, ramp steps), newest first.
    pub actions: Vec<Change>,
}

/// `POST /admin/api/flags/{key}/preview`: a flag's targeting as an editor would save
/// it, checked by the store's own validation and tried on users; nothing is written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreviewRequest {
    /// The targeting as it would be saved (JSON; what does not parse is a `problem`).
    pub targeting: Value,
    /// The flag's version the edit is based on (default: the current one); a flag
    /// changed since is a `problem`, as the save would be refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Who to try it on (at most 100).
    #[serde(default)]
    pub users: Vec<PreviewUser>,
}

/// Someone to try an edit on: a user id (none: anonymous) and attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreviewUser {
    /// The user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Attributes rules may read (`plan`, `country`...).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub attributes: Map<String, Value>,
}

/// What a preview found: whether the store would take the edit, what it changes, and
/// what each user gets now and with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preview {
    /// The flag.
    pub flag: String,
    /// The flag's version the preview was made against (send it as `If-Match` to save).
    pub version: u64,
    /// Why the store would refuse the edit; `None`: it would be saved as it is.
    pub problem: Option<String>,
    /// What would change, a line per part: `~ split: OLD -> NEW`, `+ rules[1]: NEW`,
    /// `- schedule[0]: OLD` (the guard's start, stamped by the store, left out).
    pub changes: Vec<String>,
    /// Each user tried, in order.
    pub users: Vec<PreviewServed>,
}

/// One user's value and reason, now and with the edit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreviewServed {
    /// The user, as given.
    pub user: PreviewUser,
    /// What they get now.
    pub now: Served,
    /// What they would get with the edit (`None` when the store would refuse it).
    pub edited: Option<Served>,
}

/// A value served and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Served {
    /// The value.
    pub value: Value,
    /// Why.
    pub reason: Reason,
}

/// `POST /admin/api/changes/{seq}/revert`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reverted {
    /// The change undone.
    pub reverted: u64,
    /// The change that undid it.
    pub change: Change,
}

/// The rules a stale report applied, in days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaleWindows {
    /// Days without an evaluation (and without a change).
    pub not_evaluated_days: i64,
    /// Days of serving one value or variant.
    pub one_value_days: i64,
}

/// `GET /admin/api/stale`: flags to clean up, and keys code read that the store lacks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StaleReport {
    /// Stale flags, by key.
    pub stale: Vec<StaleFlag>,
    /// Keys read by code but not in the store.
    pub unknown: Vec<UnknownFlag>,
    /// The rules applied.
    pub rules: StaleWindows,
}

/// `PUT /admin/api/flags/{key}/overrides/{user}`: the user's value now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverrideWritten {
    /// The flag.
    pub key: String,
    /// The user.
    pub user_id: String,
    /// The value, JSON of the flag's type.
    pub value: Value,
}

/// `GET /admin/api/tokens`: every token, revoked ones included (never a secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenList {
    /// The tokens, by name.
    pub tokens: Vec<TokenRecord>,
}

/// `POST /admin/api/tokens`: the new token, its secret shown this once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenCreated {
    /// Its name, the actor of its changes.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Its public id.
    pub id: String,
    /// The token to send as `Authorization: Bearer`.
    pub token: String,
}

/// Every refusal of the admin API: a code and a sentence saying what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// `not_found`, `version_conflict`, `invalid_value`, ...
    pub error: String,
    /// What was wrong, for people.
    pub message: String,
}

/// A segment as `GET /admin/api/segments` lists it: sizes, not members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentSummary {
    /// The key rules refer to it by.
    pub key: String,
    /// What it is for.
    pub description: String,
    /// Users listed in it.
    pub included: usize,
    /// Users listed as out of it.
    pub excluded: usize,
    /// Its rules.
    pub rules: usize,
    /// Incremented by every change.
    pub version: u64,
}

/// `GET /admin/api/segments`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentList {
    /// The segments, by key.
    pub segments: Vec<SegmentSummary>,
}

/// `GET /admin/api/segments/{key}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentDetail {
    /// The segment.
    pub segment: SegmentRecord,
}

/// `PUT /admin/api/segments/{key}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentWritten {
    /// The segment.
    pub key: String,
    /// Whether anything changed.
    pub changed: bool,
    /// Its new version, when it changed.
    pub version: Option<u64>,
}

/// A request body with the reason the audit log records for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reasoned<T> {
    /// The request's own fields.
    #[serde(flatten)]
    pub body: T,
    /// Why, for the audit log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl<T> Reasoned<T> {
    /// `body`, and `reason` if any.
    pub fn new(body: T, reason: Option<String>) -> Self {
        Reasoned { body, reason }
    }
}

/// The body of a request that takes nothing but a reason: archive, restore,
/// delete an override or a segment, revert, revoke a token.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NoFields {}

/// `PUT /admin/api/flags/{key}/overrides/{user}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverrideSet {
    /// The user's value, JSON of the flag's type.
    pub value: Value,
}

/// `POST /admin/api/tokens`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// Its name: 1 to 64 of `A-Z a-z 0-9 _ - . @`.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Why, for the audit log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One flag of an export: the definition that recreates it, its version and its
/// overrides by user id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportedFlag {
    /// The flag as `create` takes it.
    #[serde(flatten)]
    pub def: FlagDef,
    /// Its version when exported.
    pub version: u64,
    /// Its overrides, by user id.
    #[serde(default)]
    pub overrides: std::collections::BTreeMap<String, Value>,
}

/// `GET /admin/api/export`: every live flag with its overrides, and the segments;
/// what `ff export` writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Export {
    /// The snapshot version it was read at.
    pub version: u64,
    /// The live flags, by key.
    pub flags: Vec<ExportedFlag>,
    /// The segments, by key.
    #[serde(default)]
    pub segments: Vec<SegmentRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ops_round_trip_through_json() {
        let ops = [
            json!({"op": "create", "key": "NEW", "type": "bool", "value": true}),
            json!({"op": "update", "key": "A", "version": 3, "value": 5, "targeting": {"rules": []}}),
            json!({"op": "archive", "key": "A"}),
            json!({"op": "restore", "key": "A"}),
            json!({"op": "set_override", "key": "A", "user_id": "u1", "value": 1}),
            json!({"op": "delete_override", "key": "A", "user_id": "u1"}),
        ];
        for json in ops {
            let op: BatchOp = serde_json::from_value(json.clone()).unwrap();
            let again: BatchOp = serde_json::from_value(serde_json::to_value(&op).unwrap()).unwrap();
            assert_eq!(op, again, "{json}");
            assert_eq!(op.key(), json["key"].as_str().unwrap());
        }
    }

    #[test]
    fn refusals_name_what_is_wrong() {
        for (json, message) in [
            (json!({"key": "A"}), "needs `op`"),
            (json!({"op": "upsert", "key": "A"}), "unknown op \"upsert\""),
            (json!({"op": "update", "value": 1}), "needs `key`"),
            (json!({"op": "update", "key": "A", "schema": {}}), "field \"schema\" is not part of \"update\""),
            (
                json!({"op": "create", "key": "A", "version": 1, "type": "bool", "value": true}),
                "create takes no",
            ),
            (json!({"op": "set_override", "key": "A", "user_id": "u"}), "needs `value`"),
            (json!(7), "must be a JSON object"),
        ] {
            let e = serde_json::from_value::<BatchOp>(json.clone()).unwrap_err().to_string();
            assert!(e.contains(message), "{json}: {e}");
        }
    }
}

impl BatchOp {
    /// The op a mutation is made of, as a change request keeps it; `None` for a
    /// mutation the batch API does not take.
    pub fn of(m: Mutation) -> Option<BatchOp> {
        Some(match m {
            Mutation::CreateFlag { def, .. } => BatchOp::Create(def),
            Mutation::UpdateFlag { key, patch, expected_version } => {
                BatchOp::Update { key, version: expected_version, patch }
            }
            Mutation::ArchiveFlag { key, expected_version } => {
                BatchOp::Archive { key, version: expected_version }
            }
            Mutation::RestoreFlag { key } => BatchOp::Restore { key },
            Mutation::SetOverride { key, user_id, value } => BatchOp::SetOverride { key, user_id, value },
            Mutation::DeleteOverride { key, user_id } => BatchOp::DeleteOverride { key, user_id },
            _ => return None,
        })
    }
}

/// Where a change request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    /// Waiting for approval (or, approved, for its time): nothing of it is served.
    Pending,
    /// Approved, waiting for `apply_at`.
    Approved,
    /// Its changes were written.
    Applied,
    /// Turned down, or withdrawn by its author.
    Rejected,
    /// Its time came but the store refused its changes (`decision.reason` says why).
    Failed,
}

impl RequestStatus {
    /// Its name, as JSON has it.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Pending => "pending",
            RequestStatus::Approved => "approved",
            RequestStatus::Applied => "applied",
            RequestStatus::Rejected => "rejected",
            RequestStatus::Failed => "failed",
        }
    }

    /// Still to be applied: pending or approved.
    pub fn is_open(self) -> bool {
        matches!(self, RequestStatus::Pending | RequestStatus::Approved)
    }
}

/// One approval of a change request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    /// Who approved.
    pub by: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: time::OffsetDateTime,
}

/// How a change request ended: applied, rejected or failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Who decided (the approver for an applied request; `ff-scheduler` for one
    /// applied or failed at its time).
    pub by: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: time::OffsetDateTime,
    /// Why it was rejected, or why the store refused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Changes an editor asked for that wait for a second editor's approval, a time, or
/// both (a scheduled change): applied together, through the normal write path, once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeRequest {
    /// Its number.
    pub id: u64,
    /// The flag it is about (its first change's).
    pub key: String,
    /// The changes, with the flag versions they were made on.
    pub changes: Vec<BatchOp>,
    /// Each flag's version when the request was made (or last re-based): applying it
    /// when one has moved is refused, and the request must be re-based.
    pub base: std::collections::BTreeMap<String, u64>,
    /// Who asked; the change rows name them as the actor.
    pub author: String,
    /// Why: the change rows' reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it was made.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: time::OffsetDateTime,
    /// Apply then, not before (a scheduled change).
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub apply_at: Option<time::OffsetDateTime>,
    /// Whether a flag it changes needs a second editor's approval.
    pub needs_approval: bool,
    /// Approvals of this revision.
    #[serde(default)]
    pub approvals: Vec<Approval>,
    /// Where it stands.
    pub status: RequestStatus,
    /// How it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    /// 1, plus one per edit or re-base (each drops the approvals).
    pub revision: u32,
    /// The store's version of it: what a decision is checked against. Not stored in the body.
    #[serde(default)]
    pub version: u64,
}

impl ChangeRequest {
    /// The request a stored one holds.
    pub fn from_record(record: &ff_store::RequestRecord) -> Result<ChangeRequest, serde_json::Error> {
        let mut r: ChangeRequest = serde_json::from_value(record.body.clone())?;
        r.version = record.version;
        Ok(r)
    }

    /// The body to store (without `version`, which the store keeps).
    pub fn body(&self) -> Value {
        let mut body = serde_json::to_value(self).unwrap_or_default();
        if let Value::Object(m) = &mut body {
            m.remove("version");
        }
        body
    }

    /// One line per change, for lists: `update value=1`, `set_override u1 = true`, ...
    pub fn summary(&self) -> Vec<String> {
        self.changes.iter().map(op_summary).collect()
    }
}

/// One change of a request, in a line.
pub fn op_summary(op: &BatchOp) -> String {
    match op {
        BatchOp::Create(def) => format!("create {}", def.key),
        BatchOp::Update { key, patch, .. } => {
            let mut fields = Vec::new();
            if let Some(e) = patch.enabled {
                fields.push(if e { "switch on".to_owned() } else { "switch off".to_owned() });
            }
            if let Some(v) = &patch.value {
                fields.push(format!("value = {v}"));
            }
            if let Some(v) = &patch.off_value {
                fields.push(format!("off value = {v}"));
            }
            if patch.targeting.is_some() {
                fields.push("targeting".into());
            }
            if patch.description.is_some() {
                fields.push("description".into());
            }
            let lifecycle = [
                patch.owner.is_some(),
                patch.tags.is_some(),
                patch.ticket.is_some(),
                patch.kind.is_some(),
                patch.permanent.is_some(),
                patch.expiry.is_some(),
                patch.expires_at.is_some(),
            ];
            if lifecycle.contains(&true) {
                fields.push("lifecycle".into());
            }
            if let Some(a) = patch.approval {
                fields.push(format!(
                    "approval = {}",
                    a.map_or("as its kind", |a| if a { "required" } else { "not required" })
                ));
            }
            if fields.is_empty() {
                fields.push("no fields".into());
            }
            format!("{key}: {}", fields.join(", "))
        }
        BatchOp::Archive { key, .. } => format!("{key}: archive"),
        BatchOp::Restore { key } => format!("{key}: restore"),
        BatchOp::SetOverride { key, user_id, value } => format!("{key}: {user_id} gets {value}"),
        BatchOp::DeleteOverride { key, user_id } => format!("{key}: remove {user_id}'s value"),
    }
}

/// `POST /admin/api/requests`: changes to make later, or after approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRequest {
    /// The changes, as `POST /api/batch` takes them.
    pub changes: Vec<BatchOp>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Apply then (RFC 3339), not before; unset: as soon as approved (or now, when no
    /// flag it changes needs approval).
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub apply_at: Option<time::OffsetDateTime>,
}

/// `POST /admin/api/requests/{id}/approve`'s optional body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approve {
    /// The revision the approver read: refused if the request was edited since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u32>,
}

/// `GET /admin/api/requests`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestList {
    /// Newest first.
    pub requests: Vec<ChangeRequest>,
}

/// What a write that needs approval (or was scheduled) answers, with status 202.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestMade {
    /// Why nothing was written yet.
    pub message: String,
    /// The request that holds the change.
    pub request: ChangeRequest,
}

/// What a webhook sends: JSON events, or Slack's `{"text": ...}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// A [`WebhookEvent`].
    #[default]
    Json,
    /// `{"text": "..."}`, as Slack's incoming webhooks (and Mattermost's, Discord's `/slack`) take.
    Slack,
}

/// The kinds of events a webhook can ask for.
pub const WEBHOOK_EVENTS: &[&str] = &["flag", "override", "segment", "request", "guard", "token", "webhook"];

/// A webhook endpoint: where every change of the kinds it asks for is sent, signed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Webhook {
    /// Its number.
    pub id: u64,
    /// Where events are posted (http or https).
    pub url: String,
    /// The kinds it gets ([`WEBHOOK_EVENTS`]); empty: all of them.
    #[serde(default)]
    pub events: Vec<String>,
    /// JSON events or Slack text.
    #[serde(default)]
    pub format: WebhookFormat,
    /// Who added it.
    pub created_by: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: time::OffsetDateTime,
}

/// `POST /admin/api/webhooks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// Where to post.
    pub url: String,
    /// The kinds to send ([`WEBHOOK_EVENTS`]); none: all.
    #[serde(default)]
    pub events: Vec<String>,
    /// JSON (default) or Slack text.
    #[serde(default)]
    pub format: WebhookFormat,
    /// The signing secret (16 to 256 characters); none: one is made and shown once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// A webhook as made: its secret is shown this once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookCreated {
    /// The endpoint.
    pub webhook: Webhook,
    /// The secret its signatures are made with (`X-FF-Signature`).
    pub secret: String,
}

/// One attempt to deliver one event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// The change's seq.
    pub seq: u64,
    /// Its action (`flag.update`, ...).
    pub event: String,
    /// When it was tried.
    #[serde(with = "time::serde::rfc3339")]
    pub at: time::OffsetDateTime,
    /// The HTTP status, if an answer came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why it failed (no answer, or not a 2xx).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// 1 for the first try of this event.
    pub attempt: u32,
}

/// A webhook with where its deliveries stand.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookView {
    /// The endpoint.
    #[serde(flatten)]
    pub webhook: Webhook,
    /// Every change up to this seq was delivered (or was not for it).
    pub delivered_seq: u64,
    /// Failures in a row of the next event.
    pub failures: u32,
    /// When the next event is tried again, after a failure.
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<time::OffsetDateTime>,
    /// The last attempts, newest first.
    pub deliveries: Vec<Delivery>,
}

/// `GET /admin/api/webhooks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookList {
    /// By id.
    pub webhooks: Vec<WebhookView>,
}

/// What a JSON webhook receives: one change of the audit log, with a line for people.
/// Signed: `X-FF-Signature: sha256=HEX` is HMAC-SHA256 with the webhook's secret over
/// `X-FF-Timestamp`, a `.`, and the body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookEvent {
    /// `WEBHOOK-SEQ`: the same on every retry of this event to this webhook.
    pub id: String,
    /// The change's action (`flag.update`, `request.put`, ...).
    pub event: String,
    /// Its kind ([`WEBHOOK_EVENTS`]): a guard's rollback is `guard`.
    pub kind: String,
    /// The change itself.
    pub change: Change,
    /// What happened, in a line.
    pub text: String,
}
