//! What the store holds: flag records, per-user overrides and change rows.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::ValidationError;
pub(crate) use crate::targeting::SegmentRecord;
use crate::value::{Schema, Value, ValueType};

/// The stored state of one flag.
///
/// `repr(C)`, values first: a snapshot keeps the record right after the read path's
/// fields, so a read finds the value in a cache line it touches anyway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "FlagRecordRepr", into = "FlagRecordRepr")]
#[repr(C)]
pub struct FlagRecord {
    /// The global value.
    pub value: Value,
    /// What an off flag serves.
    pub off_value: Value,
    /// The on/off switch: off serves `off_value` to everyone, overrides included.
    pub enabled: bool,
    /// The value type.
    pub value_type: ValueType,
    /// Archived flags are kept for the audit log but not served.
    pub archived: bool,
    /// The key.
    pub key: String,
    /// Human description.
    pub description: String,
    /// Bounds every value must respect.
    pub schema: Schema,
    /// Owner, tags, ticket, expiry.
    pub meta: FlagMeta,
    /// Rules, split and schedule.
    pub targeting: crate::targeting::Targeting,
    /// Incremented by every change to the flag itself (not its overrides).
    pub version: u64,
    /// When the flag was created.
    pub created_at: OffsetDateTime,
    /// When the flag was last changed.
    pub updated_at: OffsetDateTime,
}

impl FlagRecord {
    /// A live flag with `value`, switched on, no bounds, at version 1; its off
    /// value is `false` for booleans and `value` otherwise.
    pub fn new(key: impl Into<String>, value: Value) -> Self {
        let t = OffsetDateTime::UNIX_EPOCH;
        FlagRecord {
            key: key.into(),
            value_type: value.value_type(),
            off_value: default_off_value(&value),
            value,
            enabled: true,
            description: String::new(),
            schema: Schema::default(),
            meta: FlagMeta::default(),
            targeting: Default::default(),
            archived: false,
            version: 1,
            created_at: t,
            updated_at: t,
        }
    }
}

/// What an off flag serves unless told otherwise: `false` for booleans, else the value.
pub fn default_off_value(value: &Value) -> Value {
    match value {
        Value::Bool(_) => Value::Bool(false),
        v => v.clone(),
    }
}

#[derive(Serialize, Deserialize)]
struct FlagRecordRepr {
    key: String,
    #[serde(rename = "type")]
    value_type: ValueType,
    value: serde_json::Value,
    enabled: bool,
    off_value: serde_json::Value,
    #[serde(default)]
    description: String,
    #[serde(default)]
    schema: Schema,
    #[serde(flatten)]
    meta: FlagMeta,
    // Not `Targeting::is_empty`: a salt or `bucket_by` alone decides a later split's buckets.
    #[serde(default, skip_serializing_if = "no_targeting")]
    targeting: crate::targeting::Targeting,
    #[serde(default)]
    archived: bool,
    version: u64,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

fn no_targeting(t: &crate::targeting::Targeting) -> bool {
    *t == crate::targeting::Targeting::default()
}

impl TryFrom<FlagRecordRepr> for FlagRecord {
    type Error = ValidationError;
    fn try_from(r: FlagRecordRepr) -> Result<Self, Self::Error> {
        Ok(FlagRecord {
            value: Value::from_json(r.value_type, &r.value)?,
            off_value: Value::from_json(r.value_type, &r.off_value)?,
            key: r.key,
            value_type: r.value_type,
            enabled: r.enabled,
            description: r.description,
            schema: r.schema,
            meta: r.meta,
            targeting: r.targeting,
            archived: r.archived,
            version: r.version,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

impl From<FlagRecord> for FlagRecordRepr {
    fn from(r: FlagRecord) -> Self {
        FlagRecordRepr {
            value: r.value.to_json(),
            off_value: r.off_value.to_json(),
            key: r.key,
            value_type: r.value_type,
            enabled: r.enabled,
            description: r.description,
            schema: r.schema,
            meta: r.meta,
            targeting: r.targeting,
            archived: r.archived,
            version: r.version,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// What a flag is for; decides whether it is meant to go and how soon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlagKind {
    /// Hides unfinished work until it ships; removed after the rollout.
    Release,
    /// An A/B test; removed when decided.
    Experiment,
    /// A short operational toggle (a migration, a load test).
    Ops,
    /// Switches a dependency or feature off in an incident; permanent.
    KillSwitch,
    /// Gives some users access to something; permanent.
    Permission,
    /// A tunable value; permanent.
    Config,
}

impl FlagKind {
    /// Every kind, in documentation order.
    pub const ALL: [FlagKind; 6] = [
        FlagKind::Release,
        FlagKind::Experiment,
        FlagKind::Ops,
        FlagKind::KillSwitch,
        FlagKind::Permission,
        FlagKind::Config,
    ];

    /// Its name in the API, the CLI and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            FlagKind::Release => "release",
            FlagKind::Experiment => "experiment",
            FlagKind::Ops => "ops",
            FlagKind::KillSwitch => "kill_switch",
            FlagKind::Permission => "permission",
            FlagKind::Config => "config",
        }
    }

    /// Parses [`as_str`](Self::as_str).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Kill switches, permissions and config are kept; the others are meant to go.
    pub fn permanent_by_default(self) -> bool {
        matches!(self, FlagKind::KillSwitch | FlagKind::Permission | FlagKind::Config)
    }

    /// The kind of a flag that does not say: booleans are release flags, other values config.
    pub fn default_for(value_type: ValueType) -> Self {
        if value_type == ValueType::Bool { FlagKind::Release } else { FlagKind::Config }
    }
}

impl std::fmt::Display for FlagKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How long a temporary flag lives when it is created without `expires_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// Release flags (default 40 days).
    pub release: time::Duration,
    /// Experiments (default 40 days).
    pub experiment: time::Duration,
    /// Ops toggles (default 7 days).
    pub ops: time::Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Lifetimes {
            release: time::Duration::days(40),
            experiment: time::Duration::days(40),
            ops: time::Duration::days(7),
        }
    }
}

impl Lifetimes {
    /// The lifetime of a temporary kind; `None` for permanent kinds.
    pub fn of(&self, kind: FlagKind) -> Option<time::Duration> {
        match kind {
            FlagKind::Release => Some(self.release),
            FlagKind::Experiment => Some(self.experiment),
            FlagKind::Ops => Some(self.ops),
            _ => None,
        }
    }
}

/// What happens once a flag is past `expires_at`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpiryPolicy {
    /// Keep serving; warn in logs, metrics, the admin page and the CLI.
    #[default]
    Warn,
    /// Serve the code default to everyone, with reason `Expired`.
    ServeDefault,
}

impl ExpiryPolicy {
    /// Its name in the API, the CLI and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ExpiryPolicy::Warn => "warn",
            ExpiryPolicy::ServeDefault => "serve_default",
        }
    }

    /// Parses [`as_str`](Self::as_str).
    pub fn parse(s: &str) -> Option<Self> {
        [ExpiryPolicy::Warn, ExpiryPolicy::ServeDefault].into_iter().find(|p| p.as_str() == s)
    }
}

/// Who owns a flag, how to find it, and when it should go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagMeta {
    /// What the flag is for; unset: `release` for booleans, `config` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<FlagKind>,
    /// Never stale; unset: as its kind says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permanent: Option<bool>,
    /// What expiry does.
    #[serde(default)]
    pub expiry: ExpiryPolicy,
    /// Team or person responsible.
    #[serde(default)]
    pub owner: String,
    /// Free labels for filtering (at most 32, each 1 to 64 of `a-z 0-9 - _ . :`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Link or id of the ticket that introduced the flag.
    #[serde(default)]
    pub ticket: String,
    /// When the flag should be cleaned up.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// Whether an editor's change through the admin waits for a second editor's
    /// approval; unset: as the admin's policy for the flag's kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<bool>,
}

impl FlagMeta {
    /// The kind, or the default for the value type.
    pub fn kind_or_default(&self, value_type: ValueType) -> FlagKind {
        self.kind.unwrap_or_else(|| FlagKind::default_for(value_type))
    }

    /// Whether the flag is meant to stay.
    pub fn is_permanent(&self, value_type: ValueType) -> bool {
        self.permanent.unwrap_or_else(|| self.kind_or_default(value_type).permanent_by_default())
    }

    /// Whether a temporary flag is past its `expires_at` at `now`.
    pub fn is_expired(&self, value_type: ValueType, now: OffsetDateTime) -> bool {
        !self.is_permanent(value_type) && self.expires_at.is_some_and(|t| t <= now)
    }

    /// Checks lengths and tag syntax.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let bad = |field: &'static str, problem: String| Err(ValidationError::BadField { field, problem });
        if self.owner.len() > 128 {
            return bad("owner", "is longer than 128 bytes".into());
        }
        if self.ticket.len() > 512 {
            return bad("ticket", "is longer than 512 bytes".into());
        }
        if self.tags.len() > 32 {
            return bad("tags", "has more than 32 tags".into());
        }
        for tag in &self.tags {
            let ok = (1..=64).contains(&tag.len())
                && tag.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.:".contains(&b));
            if !ok {
                return bad("tags", format!("{tag:?} must be 1 to 64 of a-z 0-9 - _ . :"));
            }
        }
        Ok(())
    }
}

/// One user's explicit value for one flag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverrideRecord {
    /// The flag.
    pub key: String,
    /// The user.
    pub user_id: String,
    /// The value, as JSON of the flag's type.
    pub value: serde_json::Value,
}

/// Everything a snapshot is built from: live flags, their overrides, and the
/// sequence number of the last change included.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreState {
    /// Sequence number of the last change this state includes.
    pub seq: u64,
    /// Flags that are not archived.
    pub flags: Vec<FlagRecord>,
    /// Overrides of those flags.
    pub overrides: Vec<OverrideRecord>,
    /// Segments.
    #[serde(default)]
    pub segments: Vec<SegmentRecord>,
}

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Action {
    /// A flag was created (`after` is the record).
    #[serde(rename = "flag.create")]
    FlagCreate,
    /// A flag was changed (`before` and `after` are records).
    #[serde(rename = "flag.update")]
    FlagUpdate,
    /// A flag was archived (`before` is the record).
    #[serde(rename = "flag.archive")]
    FlagArchive,
    /// A user's override was set (`after` is the value).
    #[serde(rename = "override.set")]
    OverrideSet,
    /// A user's override was removed (`before` is the value).
    #[serde(rename = "override.delete")]
    OverrideDelete,
    /// An archived flag was restored (`before` and `after` are records).
    #[serde(rename = "flag.restore")]
    FlagRestore,
    /// A segment was created or changed (`after` is the record).
    #[serde(rename = "segment.put")]
    SegmentPut,
    /// A segment was deleted (`before` is the record).
    #[serde(rename = "segment.delete")]
    SegmentDelete,
    /// An API token was created (`after` is its name and role; never the secret).
    #[serde(rename = "token.create")]
    TokenCreate,
    /// An API token was revoked.
    #[serde(rename = "token.revoke")]
    TokenRevoke,
    /// A change request was made, approved, rejected, applied or changed (`subject`
    /// is its id; `before` and `after` are the request).
    #[serde(rename = "request.put")]
    RequestPut,
    /// An admin added a webhook endpoint (`subject` is its id; `after` is it, without
    /// its secret).
    #[serde(rename = "webhook.add")]
    WebhookAdd,
    /// An admin removed a webhook endpoint (`before` is it).
    #[serde(rename = "webhook.remove")]
    WebhookRemove,
}

impl Action {
    /// Whether a change row of this action only records what happened elsewhere (a
    /// webhook's endpoint): it changes nothing a snapshot holds.
    pub const fn is_note(self) -> bool {
        matches!(self, Action::WebhookAdd | Action::WebhookRemove)
    }

    /// The name stored in the change log.
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::FlagCreate => "flag.create",
            Action::FlagUpdate => "flag.update",
            Action::FlagArchive => "flag.archive",
            Action::OverrideSet => "override.set",
            Action::OverrideDelete => "override.delete",
            Action::FlagRestore => "flag.restore",
            Action::SegmentPut => "segment.put",
            Action::SegmentDelete => "segment.delete",
            Action::TokenCreate => "token.create",
            Action::TokenRevoke => "token.revoke",
            Action::RequestPut => "request.put",
            Action::WebhookAdd => "webhook.add",
            Action::WebhookRemove => "webhook.remove",
        }
    }

    /// Parses [`Action::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "flag.create" => Action::FlagCreate,
            "flag.update" => Action::FlagUpdate,
            "flag.archive" => Action::FlagArchive,
            "override.set" => Action::OverrideSet,
            "override.delete" => Action::OverrideDelete,
            "flag.restore" => Action::FlagRestore,
            "segment.put" => Action::SegmentPut,
            "segment.delete" => Action::SegmentDelete,
            "token.create" => Action::TokenCreate,
            "token.revoke" => Action::TokenRevoke,
            "request.put" => Action::RequestPut,
            "webhook.add" => Action::WebhookAdd,
            "webhook.remove" => Action::WebhookRemove,
            _ => return None,
        })
    }
}

/// One row of the change log, which is also the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// Position in the log: gap-free and in commit order.
    pub seq: u64,
    /// When it was written.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Who wrote it.
    pub actor: String,
    /// What it did.
    pub action: Action,
    /// The flag.
    pub key: String,
    /// The user, for override changes.
    pub subject: Option<String>,
    /// The state before (record or value), if any.
    pub before: Option<serde_json::Value>,
    /// The state after (record or value), if any.
    pub after: Option<serde_json::Value>,
    /// Why, as given by the writer.
    pub reason: Option<String>,
    /// For a change written in a batch: the seq of the batch's last change. The
    /// changes from the batch's first through `batch_end` commit, and are served, together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_end: Option<u64>,
    /// For a change an approved request made: who approved it (`actor` asked for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// Made without the approval the flag's policy asks for, as an emergency:
    /// switching a flag off, which never waits.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub emergency: bool,
}

/// What the audit log records of a token: never its secret or hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenAudit {
    /// The token's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its role (`viewer`, `editor`, `admin`).
    pub role: String,
}

/// A change row's before or after state, read as what its action wrote.
#[derive(Debug, Clone, PartialEq)]
pub enum ChangeState {
    /// A flag record (flag changes).
    Flag(Box<FlagRecord>),
    /// A user's value (override changes).
    Override(serde_json::Value),
    /// A segment record (segment changes).
    Segment(crate::targeting::SegmentRecord),
    /// A token (token changes).
    Token(TokenAudit),
    /// A change request, as the admin keeps it (request changes).
    Request(serde_json::Value),
    /// A webhook endpoint, without its secret (webhook changes).
    Webhook(serde_json::Value),
}

impl Change {
    /// The state before the change, typed by its action.
    pub fn before_state(&self) -> Result<Option<ChangeState>, serde_json::Error> {
        self.state(self.before.as_ref())
    }

    /// The state after the change, typed by its action.
    pub fn after_state(&self) -> Result<Option<ChangeState>, serde_json::Error> {
        self.state(self.after.as_ref())
    }

    /// The fields a change of a flag changed besides its value and switch (`targeting`,
    /// `description`, ...), by name; empty for other changes. What a history shows
    /// beside `value -> value`.
    pub fn other_fields(&self) -> Vec<String> {
        let flag = matches!(
            self.action,
            Action::FlagCreate | Action::FlagUpdate | Action::FlagArchive | Action::FlagRestore
        );
        let (true, Some(serde_json::Value::Object(a)), Some(serde_json::Value::Object(b))) =
            (flag, &self.before, &self.after)
        else {
            return Vec::new();
        };
        let skip = ["value", "enabled", "version", "created_at", "updated_at"];
        let mut names: Vec<String> = a
            .keys()
            .chain(b.keys())
            .filter(|k| !skip.contains(&k.as_str()) && a.get(*k) != b.get(*k))
            .cloned()
            .collect();
        names.sort();
        names.dedup();
        names
    }

    fn state(&self, json: Option<&serde_json::Value>) -> Result<Option<ChangeState>, serde_json::Error> {
        let Some(json) = json else { return Ok(None) };
        Ok(Some(match self.action {
            Action::FlagCreate | Action::FlagUpdate | Action::FlagArchive | Action::FlagRestore => {
                ChangeState::Flag(Box::new(serde_json::from_value(json.clone())?))
            }
            Action::OverrideSet | Action::OverrideDelete => ChangeState::Override(json.clone()),
            Action::SegmentPut | Action::SegmentDelete => {
                ChangeState::Segment(serde_json::from_value(json.clone())?)
            }
            Action::TokenCreate | Action::TokenRevoke => {
                ChangeState::Token(serde_json::from_value(json.clone())?)
            }
            Action::RequestPut => ChangeState::Request(json.clone()),
            Action::WebhookAdd | Action::WebhookRemove => ChangeState::Webhook(json.clone()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A salt or `bucket_by` set before any split decides that split's buckets: a
    /// record saved (a store's row, a saved snapshot, an export) must keep them.
    #[test]
    fn a_salt_alone_survives_a_round_trip() {
        let targeting =
            serde_json::from_value(serde_json::json!({"salt": "s1", "bucket_by": "org_id"})).unwrap();
        let record = FlagRecord { targeting, ..FlagRecord::new("SALTED", Value::Bool(true)) };
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["targeting"], serde_json::json!({"salt": "s1", "bucket_by": "org_id"}));
        assert_eq!(serde_json::from_value::<FlagRecord>(json).unwrap(), record);
        let plain = serde_json::to_value(FlagRecord::new("PLAIN", Value::Bool(true))).unwrap();
        assert!(plain.get("targeting").is_none(), "no targeting, no field");
    }
}
