//! The `Store` trait, the mutations it accepts, and the logic every backend shares.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::error::StoreError;
use ff_core::SegmentDef;
use ff_core::ValidationError;
use ff_core::{Action, Change, FlagRecord, OverrideRecord, SegmentRecord, StoreState, validate_user_id};
use ff_core::{FlagDecl, FlagDef, validate_key};
use ff_core::{Schema, Value, ValueType};

#[cfg(feature = "file")]
mod file;
mod memory;
#[cfg(feature = "redis")]
mod redis;
mod rules;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
mod write;

#[cfg(feature = "file")]
pub use file::FileStore;
pub use memory::MemoryStore;
#[cfg(feature = "redis")]
pub use redis::RedisStore;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use sql::{PoolConfig, SqlStore};

/// The store a URL names, connected lazily (the first use connects and migrates):
/// `sqlite:` and `postgres:` (features `sqlite`, `postgres`), `redis:`/`rediss:`
/// (feature `redis`; `?prefix=NAME` keeps its keys under NAME instead of `ff`), and
/// `file:PATH` (feature `file`, read-only). What the example app and `ff` accept.
pub fn store_from_url(url: &str) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    let scheme = url.split(':').next().unwrap_or_default();
    match scheme {
        #[cfg(feature = "redis")]
        "redis" | "rediss" => {
            let (url, prefix) = take_query_param(url, "prefix");
            let store = RedisStore::connect_lazy(&url)?;
            Ok(std::sync::Arc::new(match prefix {
                Some(p) => store.with_prefix(p),
                None => store,
            }))
        }
        #[cfg(feature = "file")]
        "file" => {
            let path = url.trim_start_matches("file:").trim_start_matches("//");
            Ok(std::sync::Arc::new(FileStore::open(path)?))
        }
        #[cfg(any(feature = "sqlite", feature = "postgres"))]
        "sqlite" | "postgres" | "postgresql" => Ok(std::sync::Arc::new(SqlStore::connect_lazy(url)?)),
        _ => Err(StoreError::UnsupportedUrl(redact(url))),
    }
}

/// `url` without the query parameter `name`, and its value.
#[cfg(feature = "redis")]
fn take_query_param(url: &str, name: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else { return (url.to_owned(), None) };
    let mut value = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| match p.split_once('=') {
            Some((k, v)) if k == name => {
                value = Some(v.to_owned());
                false
            }
            _ => true,
        })
        .collect();
    let url = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    (url, value)
}

/// A store URL safe to print or put in an error: the password of `user:pass@` and
/// the value of every password-like query parameter (`password`, `pass`, `pwd`,
/// `sslpassword`, anything naming a secret or token) become `***`.
pub fn redact(url: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let base = match (base.find("://"), base.rfind('@')) {
        (Some(s), Some(at)) if at > s => match base[s + 3..at].find(':') {
            Some(c) => format!("{}:***{}", &base[..s + 3 + c], &base[at..]),
            None => base.to_owned(),
        },
        _ => base.to_owned(),
    };
    let Some(query) = query else { return base };
    let secret = |k: &str| {
        let k = k.to_ascii_lowercase();
        ["pass", "pwd", "secret", "token", "key"].iter().any(|s| k.contains(s))
    };
    let query: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if secret(k) => format!("{k}=***"),
            _ => kv.to_owned(),
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

/// A change to make, with who makes it and why.
#[derive(Debug, Clone)]
pub struct Write {
    /// What to change.
    pub mutation: Mutation,
    /// Who: recorded as the change's actor.
    pub actor: String,
    /// Why: recorded in the change row.
    pub reason: Option<String>,
}

impl Write {
    /// A write by `actor` with no reason.
    pub fn new(actor: impl Into<String>, mutation: Mutation) -> Self {
        Write { mutation, actor: actor.into(), reason: None }
    }

    /// Adds the reason recorded in the change log.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

/// Mutations by one actor that commit together, in order, or not at all; instances
/// serve all of them from one snapshot or none. A later mutation sees the earlier ones
/// (create a flag, then set overrides of it).
#[derive(Debug, Clone)]
pub struct Batch {
    /// What to change, in order; at most [`Batch::MAX`].
    pub mutations: Vec<Mutation>,
    /// Who: recorded as every change's actor.
    pub actor: String,
    /// Why: recorded in every change row.
    pub reason: Option<String>,
    /// Change requests written in the same transaction, after the mutations
    /// (a request made, decided, or marked applied by the changes it holds).
    pub requests: Vec<RequestPut>,
    /// Who approved the changes (an approved request's): recorded in every change row.
    pub approved_by: Option<String>,
    /// Made without the approval policy asks for, as an emergency: recorded in every change row.
    pub emergency: bool,
    /// Audit rows of what was done outside the flags (a webhook added): written after
    /// the rest, in the same transaction.
    pub notes: Vec<Note>,
}

/// An audit row of something done outside the flags; its action must be a note
/// ([`Action::is_note`]), or the batch is refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    /// What was done.
    pub action: Action,
    /// What it was done to.
    pub subject: String,
    /// Before, if anything.
    pub before: Option<serde_json::Value>,
    /// After, if anything.
    pub after: Option<serde_json::Value>,
}

impl Batch {
    /// The most mutations one batch may hold.
    pub const MAX: usize = 1000;

    /// A batch by `actor` with no reason.
    pub fn new(actor: impl Into<String>, mutations: Vec<Mutation>) -> Self {
        Batch {
            mutations,
            actor: actor.into(),
            reason: None,
            requests: Vec::new(),
            approved_by: None,
            emergency: false,
            notes: Vec::new(),
        }
    }

    /// Adds an audit row of something done outside the flags.
    pub fn note(mut self, note: Note) -> Self {
        self.notes.push(note);
        self
    }

    /// Writes `put` with the mutations, or nothing.
    pub fn request(mut self, put: RequestPut) -> Self {
        self.requests.push(put);
        self
    }

    /// Records who approved the changes.
    pub fn approved_by(mut self, name: impl Into<String>) -> Self {
        self.approved_by = Some(name.into());
        self
    }

    /// Marks the changes as made in an emergency, without the approval policy asks for.
    pub fn emergency(mut self) -> Self {
        self.emergency = true;
        self
    }

    /// Adds the reason recorded in the change log.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    pub(crate) fn check_size(&self) -> Result<(), StoreError> {
        if self.mutations.len() > Self::MAX {
            return Err(StoreError::BatchTooLarge { len: self.mutations.len(), max: Self::MAX });
        }
        Ok(())
    }
}

/// A change request as the store keeps it: the admin's JSON (`body`), versioned,
/// with the flag it is about (what the audit row names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Its number.
    pub id: u64,
    /// The flag it is about.
    pub key: String,
    /// 1 when made; each write adds 1.
    pub version: u64,
    /// The request.
    pub body: serde_json::Value,
}

/// A change request to write: refused unless the stored one is at `expected_version`
/// (0: it must not exist yet), so two deciders never both act on one version.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestPut {
    /// Its number.
    pub id: u64,
    /// The flag it is about.
    pub key: String,
    /// The request.
    pub body: serde_json::Value,
    /// The version it replaces.
    pub expected_version: u64,
}

/// The largest request body a store takes, as JSON.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// Every change a store accepts. Each one is validated against the flag's
/// stored schema and written together with its change row, or not at all.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Mutation {
    /// Creates a flag; with `if_missing`, an existing key is left alone (no change row).
    CreateFlag {
        /// The flag.
        def: FlagDef,
        /// Do nothing if the key exists (sync on start).
        if_missing: bool,
    },
    /// Changes fields of a flag; fields left `None` stay.
    UpdateFlag {
        /// The flag.
        key: String,
        /// What to change.
        patch: FlagPatch,
        /// The version the change is based on; a different current version is a conflict.
        expected_version: Option<u64>,
    },
    /// Archives a flag: it is no longer served, and its history stays.
    ArchiveFlag {
        /// The flag.
        key: String,
        /// The version the change is based on.
        expected_version: Option<u64>,
    },
    /// Sets one user's value for a flag.
    SetOverride {
        /// The flag.
        key: String,
        /// The user.
        user_id: String,
        /// The value, JSON of the flag's type.
        value: serde_json::Value,
    },
    /// Restores an archived flag as it was when archived.
    RestoreFlag {
        /// The flag.
        key: String,
    },
    /// Removes one user's value for a flag (no change row if there was none).
    DeleteOverride {
        /// The flag.
        key: String,
        /// The user.
        user_id: String,
    },
}

impl Mutation {
    /// Sets a flag's global value.
    pub fn set_value(key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        Mutation::UpdateFlag {
            key: key.into(),
            patch: FlagPatch { value: Some(value.into()), ..FlagPatch::default() },
            expected_version: None,
        }
    }

    /// Turns a flag on or off (the kill switch).
    pub fn set_enabled(key: impl Into<String>, enabled: bool) -> Self {
        Mutation::UpdateFlag {
            key: key.into(),
            patch: FlagPatch { enabled: Some(enabled), ..FlagPatch::default() },
            expected_version: None,
        }
    }

    /// Sets one user's value.
    pub fn set_override(
        key: impl Into<String>,
        user_id: impl Into<String>,
        value: impl Into<serde_json::Value>,
    ) -> Self {
        Mutation::SetOverride { key: key.into(), user_id: user_id.into(), value: value.into() }
    }

    /// Removes one user's value.
    pub fn delete_override(key: impl Into<String>, user_id: impl Into<String>) -> Self {
        Mutation::DeleteOverride { key: key.into(), user_id: user_id.into() }
    }

    /// The flag this mutation is about.
    pub fn key(&self) -> &str {
        match self {
            Mutation::CreateFlag { def, .. } => &def.key,
            Mutation::UpdateFlag { key, .. }
            | Mutation::ArchiveFlag { key, .. }
            | Mutation::RestoreFlag { key }
            | Mutation::SetOverride { key, .. }
            | Mutation::DeleteOverride { key, .. } => key,
        }
    }

    /// The user this mutation is about, for override changes.
    pub fn user_id(&self) -> Option<&str> {
        match self {
            Mutation::SetOverride { user_id, .. } | Mutation::DeleteOverride { user_id, .. } => Some(user_id),
            _ => None,
        }
    }
}

/// Fields of a flag to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagPatch {
    /// New global value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    /// New on/off state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// New off value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub off_value: Option<serde_json::Value>,
    /// New description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// New bounds; the current values must fit them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Schema>,
    /// New owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// New tags (replacing the old ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// New ticket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// New rules, split and schedule (replacing the old ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targeting: Option<ff_core::Targeting>,
    /// New kind; `Some(None)` (JSON `null`) returns to the value type's default.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "double_option")]
    pub kind: Option<Option<ff_core::FlagKind>>,
    /// Mark permanent (never stale) or temporary; `Some(None)` (JSON `null`): as the kind says.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "double_option")]
    pub permanent: Option<Option<bool>>,
    /// What expiry does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry: Option<ff_core::ExpiryPolicy>,
    /// New expiry; `Some(None)` (JSON `null`) clears it.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "double_option_time")]
    pub expires_at: Option<Option<OffsetDateTime>>,
    /// Whether editors' changes wait for approval; `Some(None)` (JSON `null`): as the kind says.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "double_option")]
    pub approval: Option<Option<bool>>,
}

impl FlagPatch {
    /// The fields operators change (the admin's PATCH, `ff import`); `schema` is not
    /// one of them: bounds come from the code declaration.
    pub const EDITABLE: &'static [&'static str] = &[
        "value",
        "enabled",
        "off_value",
        "description",
        "owner",
        "tags",
        "ticket",
        "expires_at",
        "kind",
        "permanent",
        "expiry",
        "targeting",
        "approval",
    ];
}

impl FlagPatch {
    /// The patch that takes `after` back to `before`: every operator-editable field
    /// that differs (bounds come from the code and are left alone).
    pub fn undoing(before: &FlagRecord, after: &FlagRecord) -> FlagPatch {
        fn back<T: PartialEq + Clone>(before: &T, after: &T) -> Option<T> {
            (before != after).then(|| before.clone())
        }
        let (b, a) = (&before.meta, &after.meta);
        FlagPatch {
            value: back(&before.value, &after.value).map(|v| v.to_json()),
            enabled: back(&before.enabled, &after.enabled),
            off_value: back(&before.off_value, &after.off_value).map(|v| v.to_json()),
            description: back(&before.description, &after.description),
            schema: None,
            owner: back(&b.owner, &a.owner),
            tags: back(&b.tags, &a.tags),
            ticket: back(&b.ticket, &a.ticket),
            targeting: back(&before.targeting, &after.targeting),
            kind: back(&b.kind, &a.kind),
            permanent: back(&b.permanent, &a.permanent),
            approval: back(&b.approval, &a.approval),
            expiry: back(&b.expiry, &a.expiry),
            expires_at: back(&b.expires_at, &a.expires_at),
        }
    }
}

/// A field that may be missing (`None`), `null` (`Some(None)`) or set.
fn double_option<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// `Option<Option<time>>` where a missing field is `None` and `null` is `Some(None)`.
mod double_option_time {
    use serde::{Deserializer, Serializer};
    use time::OffsetDateTime;

    pub(super) fn serialize<S: Serializer>(
        v: &Option<Option<OffsetDateTime>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(inner) => time::serde::rfc3339::option::serialize(inner, s),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<OffsetDateTime>>, D::Error> {
        time::serde::rfc3339::option::deserialize(d).map(Some)
    }
}

/// Which change rows to read, newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChangeQuery {
    /// Only changes of this flag.
    pub key: Option<String>,
    /// Only changes by this actor.
    pub actor: Option<String>,
    /// Only changes at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Only changes with a smaller seq (for paging backwards).
    pub before_seq: Option<u64>,
    /// At most this many (capped at 1,000).
    pub limit: u32,
}

/// What an API token may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read flags, overrides and the audit log.
    Viewer,
    /// Also change flags and overrides.
    Editor,
    /// Also manage tokens.
    Admin,
}

impl Role {
    /// The name used in the store and the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
        }
    }

    /// Parses [`Role::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "viewer" => Role::Viewer,
            "editor" => Role::Editor,
            "admin" => Role::Admin,
            _ => return None,
        })
    }
}

/// A stored API token. The secret itself is never stored, only its hash.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public id, part of the token string.
    pub id: String,
    /// Unique name: the actor recorded in the audit log.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Hash of the secret part (hex).
    #[serde(skip)]
    pub secret_hash: String,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it was revoked, if it was.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

impl fmt::Debug for TokenRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("role", &self.role)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

/// What the audit log records of a token: never its secret or hash.
pub(crate) fn token_audit(token: &TokenRecord) -> serde_json::Value {
    let audit = ff_core::TokenAudit {
        id: token.id.clone(),
        name: token.name.clone(),
        role: token.role.as_str().to_owned(),
    };
    serde_json::to_value(audit).unwrap_or_default()
}

/// Actor names the system writes into the audit log itself; no token may take them,
/// so no change can pass for an automated one.
pub const RESERVED_ACTORS: &[&str] = &["env-admin", SYNC_ACTOR, "ff-cli"];
/// The prefix of every actor name the system uses or will use (`ff-sync`, `ff-guard`, ...).
pub const RESERVED_PREFIX: &str = "ff-";

/// Checks a token name: 1 to 64 characters of `A-Z a-z 0-9 _ - . @`, not a name
/// the system acts under ([`RESERVED_ACTORS`], or starting with [`RESERVED_PREFIX`]).
pub fn validate_token_name(name: &str) -> Result<(), ValidationError> {
    let ok = (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.@".contains(&b));
    let bad = |problem: String| Err(ValidationError::BadField { field: "name", problem });
    if !ok {
        return bad("must be 1 to 64 of A-Z a-z 0-9 _ - . @".into());
    }
    let lower = name.to_ascii_lowercase();
    if RESERVED_ACTORS.contains(&lower.as_str()) || lower.starts_with(RESERVED_PREFIX) {
        return bad(format!(
            "{name:?} is reserved for the system's own changes (as is every name starting with {RESERVED_PREFIX:?})"
        ));
    }
    Ok(())
}

/// Reading flags and following their changes: what every store does, the read-only
/// file included, and all the [`Source`](crate::Source) needs to serve flags.
#[async_trait]
pub trait FlagReader: Send + Sync + fmt::Debug + 'static {
    /// All live flags and their overrides, with the last change's sequence number,
    /// read consistently (one transaction).
    async fn load(&self) -> Result<StoreState, StoreError>;

    /// Every flag, archived ones included, ordered by key.
    async fn list_flags(&self) -> Result<Vec<FlagRecord>, StoreError>;

    /// One flag, archived or not.
    async fn flag(&self, key: &str) -> Result<Option<FlagRecord>, StoreError>;

    /// The overrides of one flag, ordered by user id.
    async fn overrides(&self, key: &str) -> Result<Vec<OverrideRecord>, StoreError>;

    /// Changes with `seq > after`, oldest first, at most `limit`.
    async fn changes_since(&self, after: u64, limit: u32) -> Result<Vec<Change>, StoreError>;

    /// The sequence number of the newest change (0 when there is none). Cheap.
    async fn latest_seq(&self) -> Result<u64, StoreError>;

    /// All segments, ordered by key.
    async fn segments(&self) -> Result<Vec<SegmentRecord>, StoreError>;

    /// The context attributes the application declared, sorted.
    async fn attributes(&self) -> Result<Vec<String>, StoreError>;

    /// A signal that changes whenever this store learns of new changes: its own
    /// writes, and (PostgreSQL) notifications from other processes. A hint only:
    /// readers still poll, since a hint can be lost.
    fn subscribe(&self) -> watch::Receiver<u64>;
}

/// Changing flags, overrides, segments and declared attributes, each with its
/// change row (the audit log), and reading that log.
#[async_trait]
pub trait FlagWriter: FlagReader {
    /// Validates and applies one mutation with its change row, atomically.
    /// `Ok(None)` means there was nothing to do and nothing was written.
    async fn write(&self, write: Write) -> Result<Option<Change>, StoreError>;

    /// Validates and applies every mutation of `batch` in one transaction: all of them
    /// or, on the first refusal ([`StoreError::InBatch`], naming which), none. Returns the
    /// change rows written (no-op mutations write none), which share a `batch_end`.
    async fn write_batch(&self, batch: Batch) -> Result<Vec<Change>, StoreError>;

    /// Change rows matching `query`, newest first.
    async fn changes(&self, query: &ChangeQuery) -> Result<Vec<Change>, StoreError>;

    /// One change row.
    async fn change(&self, seq: u64) -> Result<Option<Change>, StoreError>;

    /// Creates or replaces a segment (validated; `expected_version` 0 means "must not
    /// exist yet"), with an audit row. `Ok(None)`: unchanged, nothing written.
    async fn put_segment(
        &self,
        key: &str,
        definition: SegmentDef,
        expected_version: Option<u64>,
        who: (&str, Option<&str>),
    ) -> Result<Option<Change>, StoreError>;

    /// Deletes a segment that no live flag refers to, with an audit row.
    async fn delete_segment(&self, key: &str, who: (&str, Option<&str>)) -> Result<Change, StoreError>;

    /// Adds declared attributes (never removes any); returns the ones that were new.
    async fn declare_attributes(&self, names: &[String]) -> Result<Vec<String>, StoreError>;

    /// Every change request, by id (written with [`Batch::request`]).
    async fn requests(&self) -> Result<Vec<RequestRecord>, StoreError>;

    /// One change request.
    async fn request(&self, id: u64) -> Result<Option<RequestRecord>, StoreError>;
}

/// API tokens: stored hashed, created and revoked with audit rows.
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// Stores a new token (its secret already hashed), with an audit row.
    async fn create_token(
        &self,
        token: TokenRecord,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<TokenRecord, StoreError>;

    /// All tokens, revoked ones included, ordered by name.
    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;

    /// One token by id.
    async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError>;

    /// Revokes a token by name, with an audit row.
    async fn revoke_token(
        &self,
        name: &str,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<TokenRecord, StoreError>;
}

/// Evaluation counts by flag and day, and reads of keys the store lacks.
#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Adds evaluation counts collected at `at` to that UTC day's totals (one
    /// upsert per flag), and reads of unknown keys to theirs.
    async fn record_usage(
        &self,
        counts: &[ff_core::UsageCount],
        unknown: &[(String, u64)],
        at: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// Daily evaluation counts from `since` (a UTC day) on, by key, day, reason and variant.
    async fn usage(&self, since: time::Date) -> Result<Vec<ff_core::UsageRow>, StoreError>;

    /// Keys code read that the store did not have, by key.
    async fn unknown_flags(&self) -> Result<Vec<ff_core::UnknownFlag>, StoreError>;

    /// Replaces this instance's counts of guarded rollouts (each row holds all of one
    /// instance's counts of one variation since the rollout started, so a retried flush
    /// counts nothing twice), and drops rows of any instance untouched for a week.
    async fn put_guard_counts(&self, rows: &[GuardCount], at: OffsetDateTime) -> Result<(), StoreError>;

    /// Every instance's counts of the rollout of `flag` that started at `epoch`.
    async fn guard_counts(&self, flag: &str, epoch: i64) -> Result<Vec<GuardCount>, StoreError>;

    /// Takes or renews lease `name` for `holder` for `ttl`, unless another holder's
    /// has not expired; whether `holder` holds it now. Timed by the store's own clock
    /// where it has one (SQL, Redis), so instances' clocks need not agree; `at` is the
    /// caller's time, for a store without one (memory).
    async fn lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Writes the operational record `name` (webhook endpoints and their delivery
    /// state) if it is at `expected_version` (0: it must not exist yet); returns its
    /// new version. Not in the change log; `None` deletes it.
    async fn put_record(
        &self,
        name: &str,
        body: Option<&serde_json::Value>,
        expected_version: u64,
    ) -> Result<u64, StoreError>;

    /// The records whose names start with `prefix`, by name, with their versions.
    async fn records(&self, prefix: &str) -> Result<Vec<StoredRecord>, StoreError>;
}

/// An operational record ([`UsageStore::put_record`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRecord {
    /// Its name.
    pub name: String,
    /// 1 when written first; each write adds 1.
    pub version: u64,
    /// What it holds.
    pub body: serde_json::Value,
}

/// The refusal of a record write on another version.
pub(crate) fn record_conflict(name: &str, expected: u64, actual: u64) -> StoreError {
    StoreError::RecordConflict { name: name.to_owned(), expected, actual }
}

/// One instance's counts of one variation of a guarded rollout since it started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardCount {
    /// The flag.
    pub flag: String,
    /// When the rollout started ([`Guard::started`](ff_core::guard::Guard::started)), in ms.
    pub epoch: i64,
    /// The instance that counted.
    pub instance: String,
    /// The split's variation, by index.
    pub variation: u32,
    /// Its requests, errors and latency.
    pub arm: ff_core::guard::Arm,
}

/// How long guarded rollouts' counts are kept after their last update.
pub(crate) const GUARD_COUNTS_KEPT: time::Duration = time::Duration::days(7);

/// A store as the [`Source`](crate::Source), the admin and `ff` take it: flags to
/// read, and the jobs it does besides. Every [`FlagWriter`] that also keeps tokens and
/// usage is one ([`MemoryStore`], `SqlStore`, `RedisStore`); a read-only store
/// (`FileStore`) implements [`FlagReader`] and says so here.
///
/// Every implementation passes the store contract ([`crate::contract`], feature `test-util`).
pub trait Store: FlagReader {
    /// Its writes; `None` for a read-only store.
    fn writer(&self) -> Option<&dyn FlagWriter>;

    /// Its tokens; `None` if it keeps none.
    fn token_store(&self) -> Option<&dyn TokenStore>;

    /// Its usage counts; `None` if it keeps none (metrics still count).
    fn usage_store(&self) -> Option<&dyn UsageStore>;

    /// The refusal of a write to a store without writes.
    fn refusal(&self) -> StoreError {
        StoreError::ReadOnly(format!("{self:?}"))
    }

    /// A store without writes (a file): the `Source` syncs nothing into it and
    /// reloads all of it when its seq moves.
    fn read_only(&self) -> bool {
        self.writer().is_none()
    }
}

impl<T: FlagWriter + TokenStore + UsageStore> Store for T {
    fn writer(&self) -> Option<&dyn FlagWriter> {
        Some(self)
    }

    fn token_store(&self) -> Option<&dyn TokenStore> {
        Some(self)
    }

    fn usage_store(&self) -> Option<&dyn UsageStore> {
        Some(self)
    }
}

/// Every job through one handle: a read-only store refuses writes with
/// [`StoreError::ReadOnly`] and has no tokens, log or usage to show.
impl dyn Store {
    /// [`FlagWriter::write`], or the refusal.
    pub async fn write(&self, write: Write) -> Result<Option<Change>, StoreError> {
        self.writer().ok_or_else(|| self.refusal())?.write(write).await
    }

    /// Validates `write` exactly as [`FlagWriter::write`] would (the same planning and
    /// checks), against the data as it is now, and returns the change row it would
    /// write (`None`: nothing to do), writing nothing: a preview of an edit before it is
    /// saved. It reads without a transaction, so it never holds a writer up; on a
    /// read-only store it checks the edit all the same (a save would be refused).
    pub async fn check(&self, write: Write) -> Result<Option<Change>, StoreError> {
        write::check(self, &write).await
    }

    /// [`FlagWriter::write_batch`], or the refusal.
    pub async fn write_batch(&self, batch: Batch) -> Result<Vec<Change>, StoreError> {
        self.writer().ok_or_else(|| self.refusal())?.write_batch(batch).await
    }

    /// [`FlagWriter::changes`]; none without a log.
    pub async fn changes(&self, query: &ChangeQuery) -> Result<Vec<Change>, StoreError> {
        match self.writer() {
            Some(w) => w.changes(query).await,
            None => Ok(Vec::new()),
        }
    }

    /// [`FlagWriter::change`]; none without a log.
    pub async fn change(&self, seq: u64) -> Result<Option<Change>, StoreError> {
        match self.writer() {
            Some(w) => w.change(seq).await,
            None => Ok(None),
        }
    }

    /// [`FlagWriter::requests`]; none without writes.
    pub async fn requests(&self) -> Result<Vec<RequestRecord>, StoreError> {
        match self.writer() {
            Some(w) => w.requests().await,
            None => Ok(Vec::new()),
        }
    }

    /// [`FlagWriter::request`]; none without writes.
    pub async fn request(&self, id: u64) -> Result<Option<RequestRecord>, StoreError> {
        match self.writer() {
            Some(w) => w.request(id).await,
            None => Ok(None),
        }
    }

    /// [`FlagWriter::put_segment`], or the refusal.
    pub async fn put_segment(
        &self,
        key: &str,
        definition: SegmentDef,
        expected_version: Option<u64>,
        who: (&str, Option<&str>),
    ) -> Result<Option<Change>, StoreError> {
        self.writer().ok_or_else(|| self.refusal())?.put_segment(key, definition, expected_version, who).await
    }

    /// [`FlagWriter::delete_segment`], or the refusal.
    pub async fn delete_segment(&self, key: &str, who: (&str, Option<&str>)) -> Result<Change, StoreError> {
        self.writer().ok_or_else(|| self.refusal())?.delete_segment(key, who).await
    }

    /// [`FlagWriter::declare_attributes`]; nothing to declare into a read-only store.
    pub async fn declare_attributes(&self, names: &[String]) -> Result<Vec<String>, StoreError> {
        match self.writer() {
            Some(w) => w.declare_attributes(names).await,
            None => Ok(Vec::new()),
        }
    }

    /// [`TokenStore::create_token`], or the refusal.
    pub async fn create_token(
        &self,
        token: TokenRecord,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<TokenRecord, StoreError> {
        self.token_store().ok_or_else(|| self.refusal())?.create_token(token, actor, reason).await
    }

    /// [`TokenStore::tokens`]; none without a token store.
    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        match self.token_store() {
            Some(t) => t.tokens().await,
            None => Ok(Vec::new()),
        }
    }

    /// [`TokenStore::token`]; none without a token store.
    pub async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        match self.token_store() {
            Some(t) => t.token(id).await,
            None => Ok(None),
        }
    }

    /// [`TokenStore::revoke_token`], or the refusal.
    pub async fn revoke_token(
        &self,
        name: &str,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<TokenRecord, StoreError> {
        self.token_store().ok_or_else(|| self.refusal())?.revoke_token(name, actor, reason).await
    }

    /// [`UsageStore::record_usage`]; counts are dropped without a usage store.
    pub async fn record_usage(
        &self,
        counts: &[ff_core::UsageCount],
        unknown: &[(String, u64)],
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        match self.usage_store() {
            Some(u) => u.record_usage(counts, unknown, at).await,
            None => Ok(()),
        }
    }

    /// [`UsageStore::usage`]; none without a usage store.
    pub async fn usage(&self, since: time::Date) -> Result<Vec<ff_core::UsageRow>, StoreError> {
        match self.usage_store() {
            Some(u) => u.usage(since).await,
            None => Ok(Vec::new()),
        }
    }

    /// [`UsageStore::put_guard_counts`]; kept nowhere without a usage store.
    pub async fn put_guard_counts(&self, rows: &[GuardCount], at: OffsetDateTime) -> Result<(), StoreError> {
        match self.usage_store() {
            Some(u) if !rows.is_empty() => u.put_guard_counts(rows, at).await,
            _ => Ok(()),
        }
    }

    /// [`UsageStore::guard_counts`]; `None` without a usage store (only this
    /// instance's counts are known).
    pub async fn guard_counts(&self, flag: &str, epoch: i64) -> Result<Option<Vec<GuardCount>>, StoreError> {
        match self.usage_store() {
            Some(u) => u.guard_counts(flag, epoch).await.map(Some),
            None => Ok(None),
        }
    }

    /// [`UsageStore::lease`]; never held on a read-only store (nothing can be written).
    pub async fn lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        match (self.writer(), self.usage_store()) {
            (Some(_), Some(u)) => u.lease(name, holder, ttl, at).await,
            _ => Ok(false),
        }
    }

    /// [`UsageStore::unknown_flags`]; none without a usage store.
    pub async fn unknown_flags(&self) -> Result<Vec<ff_core::UnknownFlag>, StoreError> {
        match self.usage_store() {
            Some(u) => u.unknown_flags().await,
            None => Ok(Vec::new()),
        }
    }
}

/// What syncing code declarations into a store found and did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SyncReport {
    /// Declared keys that were missing and have been created with their code defaults.
    pub created: Vec<String>,
    /// Declared keys whose description or bounds were updated from code.
    pub updated: Vec<String>,
    /// Keys in the store (live) that code does not declare. Never deleted.
    pub undeclared: Vec<String>,
    /// Declared keys that are archived in the store: they serve the code default.
    pub archived: Vec<String>,
    /// Declared keys whose stored type differs from code: reads serve the code default.
    pub type_conflicts: Vec<String>,
    /// Declarations that are invalid, or bounds the stored values do not fit, with why.
    pub problems: Vec<(String, String)>,
}

/// The actor recorded for changes made by [`sync`].
pub const SYNC_ACTOR: &str = "ff-sync";

/// Syncs code declarations into a store: creates missing keys with their defaults,
/// updates descriptions and bounds from code, and reports everything else.
pub async fn sync(
    store: &dyn Store,
    decls: &[FlagDecl],
    lifetimes: &ff_core::Lifetimes,
) -> Result<SyncReport, StoreError> {
    let mut report = SyncReport::default();
    let existing = store.list_flags().await?;
    let find = |key: &str| existing.iter().find(|f| f.key == key);
    for decl in decls {
        if let Err(e) = decl.validate() {
            report.problems.push((decl.key.clone(), e.to_string()));
            continue;
        }
        let Some(current) = find(&decl.key) else {
            let mut def = FlagDef::from(decl);
            def.meta.expires_at = def.meta.expires_at.or_else(|| default_expiry(&def, lifetimes, now()));
            let created =
                store.write(Write::new(SYNC_ACTOR, Mutation::CreateFlag { def, if_missing: true })).await?;
            if created.is_some() {
                report.created.push(decl.key.clone());
            }
            continue;
        };
        if current.archived {
            report.archived.push(decl.key.clone());
        } else if current.value_type != decl.value_type {
            report.type_conflicts.push(decl.key.clone());
        } else if let Some(patch) = declared_changes(current, decl) {
            let write = Write::new(
                SYNC_ACTOR,
                Mutation::UpdateFlag {
                    key: decl.key.clone(),
                    patch,
                    expected_version: Some(current.version),
                },
            )
            .reason("declaration changed in code");
            match store.write(write).await {
                Ok(_) => report.updated.push(decl.key.clone()),
                // Another instance synced first.
                Err(StoreError::VersionConflict { .. }) => {}
                Err(StoreError::Invalid { error, .. }) => {
                    report.problems.push((
                        decl.key.clone(),
                        format!("stored value does not fit the declared bounds: {error}"),
                    ));
                }
                // The declaration (its rules with it) is stored once the values keep them;
                // meanwhile reads serve the config's code defaults.
                Err(e @ StoreError::RuleBroken(_)) => {
                    report
                        .problems
                        .push((decl.key.clone(), format!("stored values break a declared rule: {e}")));
                }
                Err(e) => return Err(e),
            }
        }
    }
    for flag in existing.iter().filter(|f| !f.archived) {
        if !decls.iter().any(|d| d.key == flag.key) {
            report.undeclared.push(flag.key.clone());
        }
    }
    Ok(report)
}

/// What a declaration changes in a stored flag: description, bounds, kind, owner,
/// permanence and policy (the code wins), and the expiry date when the store has none.
fn declared_changes(current: &FlagRecord, decl: &FlagDecl) -> Option<FlagPatch> {
    let declared = decl.meta();
    let differs = |d: Option<_>, c| d.is_some() && d != Some(c);
    let patch = FlagPatch {
        description: (current.description != decl.description).then(|| decl.description.clone()),
        schema: (current.schema != decl.schema).then(|| decl.schema.clone()),
        kind: decl.kind.filter(|k| current.meta.kind != Some(*k)).map(Some),
        owner: (!decl.owner.is_empty() && current.meta.owner != decl.owner).then(|| decl.owner.clone()),
        permanent: decl.permanent.filter(|p| current.meta.permanent != Some(*p)).map(Some),
        expiry: decl.expiry.filter(|e| differs(Some(*e), current.meta.expiry)),
        expires_at: current.meta.expires_at.is_none().then_some(declared.expires_at).flatten().map(Some),
        ..FlagPatch::default()
    };
    (patch != FlagPatch::default()).then_some(patch)
}

/// The expiry a new temporary flag gets from its kind's lifetime.
pub fn default_expiry(
    def: &FlagDef,
    lifetimes: &ff_core::Lifetimes,
    now: OffsetDateTime,
) -> Option<OffsetDateTime> {
    if def.meta.is_permanent(def.value_type) {
        return None;
    }
    lifetimes.of(def.meta.kind_or_default(def.value_type)).map(|d| now + d)
}

/// One flag's counts: (reason, variant, count).
pub(crate) type FlagCounts<'a> = Vec<(&'a str, &'a str, u64)>;

/// Counts with the same key, reason and variant added up, grouped by key.
pub(crate) fn group_usage(counts: &[ff_core::UsageCount]) -> Vec<(&str, FlagCounts<'_>)> {
    let mut by_key: std::collections::BTreeMap<&str, std::collections::BTreeMap<(&str, &str), u64>> =
        Default::default();
    for c in counts {
        *by_key.entry(&c.key).or_default().entry((&c.reason, &c.variant)).or_default() += c.count;
    }
    by_key.into_iter().map(|(k, rows)| (k, rows.into_iter().map(|((r, v), n)| (r, v, n)).collect())).collect()
}

/// Refuses targeting that names a segment the store does not have.
pub(crate) fn check_segment(flag: &str, segment: &str, exists: bool) -> Result<(), StoreError> {
    if exists {
        return Ok(());
    }
    Err(StoreError::invalid(
        flag,
        ValidationError::BadField {
            field: "targeting",
            problem: format!("segment {segment:?} does not exist"),
        },
    ))
}

/// Refuses attributes the application has not declared (when it declared any).
pub(crate) fn check_attributes<'a>(
    key: &str,
    used: impl IntoIterator<Item = &'a str>,
    declared: &[String],
) -> Result<(), StoreError> {
    if declared.is_empty() {
        return Ok(());
    }
    match used.into_iter().find(|a| !declared.iter().any(|d| d == a)) {
        Some(a) => Err(StoreError::invalid(
            key,
            ValidationError::BadField {
                field: "targeting",
                problem: format!("attribute {a:?} is not declared (declared: {})", declared.join(", ")),
            },
        )),
        None => Ok(()),
    }
}

/// Live flags whose rules name segment `key`.
pub(crate) fn flags_using(flags: &[FlagRecord], key: &str) -> Vec<String> {
    flags
        .iter()
        .filter(|f| !f.archived && f.targeting.segment_keys().contains(&key))
        .map(|f| f.key.clone())
        .collect()
}

/// Validates a segment write; `Ok(None)`: unchanged.
pub(crate) fn plan_segment(
    key: &str,
    definition: SegmentDef,
    current: Option<&SegmentRecord>,
    expected_version: Option<u64>,
    now: OffsetDateTime,
) -> Result<Option<SegmentRecord>, StoreError> {
    validate_key(key).map_err(|e| StoreError::invalid(key, e))?;
    definition.validate().map_err(|e| StoreError::invalid(key, e))?;
    let actual = current.map_or(0, |c| c.version);
    if let Some(expected) = expected_version.filter(|v| *v != actual) {
        return Err(StoreError::VersionConflict { key: key.to_owned(), expected, actual });
    }
    if current.is_some_and(|c| c.definition == definition) {
        return Ok(None);
    }
    Ok(Some(SegmentRecord {
        key: key.to_owned(),
        definition,
        version: actual + 1,
        created_at: current.map_or(now, |c| c.created_at),
        updated_at: now,
    }))
}

/// What a validated mutation will write.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per write, never stored
pub(crate) enum Plan {
    /// Insert or replace the flag row.
    PutFlag { record: FlagRecord, before: Option<FlagRecord>, action: Action },
    /// Insert or replace one override row.
    PutOverride { key: String, user_id: String, value: serde_json::Value, before: Option<serde_json::Value> },
    /// Delete one override row.
    DeleteOverride { key: String, user_id: String, before: serde_json::Value },
    /// Insert or replace one segment.
    PutSegment { record: SegmentRecord, before: Option<SegmentRecord> },
    /// Delete one segment.
    DeleteSegment { before: SegmentRecord },
    /// Insert or replace one token (created, or revoked).
    PutToken { token: TokenRecord, action: Action },
    /// Insert or replace one change request.
    PutRequest { record: RequestRecord, before: Option<RequestRecord> },
    /// Only an audit row.
    Note(Note),
}

impl Plan {
    /// Targeting this plan brings into force: a created or restored flag's, or rules
    /// an update changed. Its segments and attributes must exist now; unchanged rules
    /// are not re-checked, so a kill switch always flips.
    pub(crate) fn new_targeting(&self) -> Option<&ff_core::Targeting> {
        match self {
            Plan::PutFlag { record, action: Action::FlagCreate | Action::FlagRestore, .. } => {
                Some(&record.targeting)
            }
            Plan::PutFlag { record, before: Some(before), action: Action::FlagUpdate } => {
                (record.targeting != before.targeting).then_some(&record.targeting)
            }
            _ => None,
        }
    }

    /// The change row for this plan.
    pub(crate) fn change(
        &self,
        seq: u64,
        at: OffsetDateTime,
        (actor, reason): (&str, Option<&str>),
    ) -> Change {
        let record = |r: &FlagRecord| serde_json::to_value(r).unwrap_or_default();
        let segment = |r: &SegmentRecord| serde_json::to_value(r).ok();
        let (action, key, subject, before, after) = match self {
            Plan::PutFlag { record: r, before, action } => {
                let after = (*action != Action::FlagArchive).then(|| record(r));
                (*action, r.key.as_str(), None, before.as_ref().map(record), after)
            }
            Plan::PutOverride { key, user_id, value, before } => (
                Action::OverrideSet,
                key.as_str(),
                Some(user_id.clone()),
                before.clone(),
                Some(value.clone()),
            ),
            Plan::DeleteOverride { key, user_id, before } => {
                (Action::OverrideDelete, key.as_str(), Some(user_id.clone()), Some(before.clone()), None)
            }
            Plan::PutSegment { record: r, before } => {
                (Action::SegmentPut, r.key.as_str(), None, before.as_ref().and_then(segment), segment(r))
            }
            Plan::DeleteSegment { before } => {
                (Action::SegmentDelete, before.key.as_str(), None, segment(before), None)
            }
            Plan::PutToken { token, action } => {
                (*action, "", Some(token.name.clone()), None, Some(token_audit(token)))
            }
            Plan::PutRequest { record: r, before } => (
                Action::RequestPut,
                r.key.as_str(),
                Some(r.id.to_string()),
                before.as_ref().map(|b| b.body.clone()),
                Some(r.body.clone()),
            ),
            Plan::Note(n) => (n.action, "", Some(n.subject.clone()), n.before.clone(), n.after.clone()),
        };
        Change {
            seq,
            at,
            actor: actor.to_owned(),
            action,
            key: key.to_owned(),
            subject,
            before,
            after,
            reason: reason.map(str::to_owned),
            batch_end: None,
            approved_by: None,
            emergency: false,
        }
    }
}

/// Validates `mutation` against the current state of its flag (and override).
/// `Ok(None)`: nothing to do.
pub(crate) fn plan(
    mutation: &Mutation,
    current: Option<&FlagRecord>,
    current_override: Option<&serde_json::Value>,
    now: OffsetDateTime,
) -> Result<Option<Plan>, StoreError> {
    let key = mutation.key();
    let live = current.filter(|f| !f.archived);
    let invalid = |e: ValidationError| StoreError::invalid(key, e);
    match mutation {
        Mutation::CreateFlag { def, if_missing } => {
            if current.is_some() {
                return if *if_missing { Ok(None) } else { Err(StoreError::FlagExists(key.to_owned())) };
            }
            plan_create(def, now).map(Some)
        }
        Mutation::UpdateFlag { patch, expected_version, .. } => {
            let before = live.ok_or_else(|| StoreError::UnknownFlag(key.to_owned()))?;
            check_version(before, *expected_version)?;
            plan_update(before, patch, now)
        }
        Mutation::ArchiveFlag { expected_version, .. } => {
            let before = live.ok_or_else(|| StoreError::UnknownFlag(key.to_owned()))?;
            check_version(before, *expected_version)?;
            let mut record = before.clone();
            record.archived = true;
            record.version += 1;
            record.updated_at = now;
            Ok(Some(Plan::PutFlag { record, before: Some(before.clone()), action: Action::FlagArchive }))
        }
        Mutation::RestoreFlag { .. } => {
            let before = current.ok_or_else(|| StoreError::UnknownFlag(key.to_owned()))?;
            if !before.archived {
                return Err(StoreError::NotArchived(key.to_owned()));
            }
            let mut record = before.clone();
            record.archived = false;
            // A restored rollout starts afresh; it is otherwise as it was archived.
            if let Some(g) = record.targeting.guard.as_mut() {
                g.started = Some(from_millis(to_millis(now)));
            }
            record.version += 1;
            record.updated_at = now;
            Ok(Some(Plan::PutFlag { record, before: Some(before.clone()), action: Action::FlagRestore }))
        }
        Mutation::SetOverride { user_id, value, .. } => {
            let flag = live.ok_or_else(|| StoreError::UnknownFlag(key.to_owned()))?;
            validate_user_id(user_id).map_err(invalid)?;
            let value = typed(flag.value_type, &flag.schema, value).map_err(invalid)?.to_json();
            if current_override == Some(&value) {
                return Ok(None);
            }
            Ok(Some(Plan::PutOverride {
                key: key.to_owned(),
                user_id: user_id.clone(),
                value,
                before: current_override.cloned(),
            }))
        }
        Mutation::DeleteOverride { user_id, .. } => {
            live.ok_or_else(|| StoreError::UnknownFlag(key.to_owned()))?;
            validate_user_id(user_id).map_err(invalid)?;
            Ok(current_override.map(|before| Plan::DeleteOverride {
                key: key.to_owned(),
                user_id: user_id.clone(),
                before: before.clone(),
            }))
        }
    }
}

/// A new flag's record from its definition, validated as a whole.
fn plan_create(def: &FlagDef, now: OffsetDateTime) -> Result<Plan, StoreError> {
    let key = def.key.as_str();
    let invalid = |e: ValidationError| StoreError::invalid(key, e);
    validate_key(key).map_err(invalid)?;
    def.meta.validate().map_err(invalid)?;
    ff_core::check_text("description", &def.description).map_err(invalid)?;
    def.schema.check_self(def.value_type).map_err(invalid)?;
    let value = typed(def.value_type, &def.schema, &def.value).map_err(invalid)?;
    let off_value = match &def.off_value {
        Some(v) => typed(def.value_type, &def.schema, v).map_err(invalid)?,
        None => ff_core::default_off_value(&value),
    };
    let mut record = FlagRecord {
        key: key.to_owned(),
        value_type: def.value_type,
        value,
        enabled: def.enabled,
        off_value,
        description: def.description.clone(),
        schema: def.schema.clone(),
        meta: def.meta.clone(),
        targeting: def.targeting.clone(),
        archived: false,
        version: 1,
        created_at: now,
        updated_at: now,
    };
    guard_write(None, &mut record, now).map_err(invalid)?;
    record.targeting.validate(key, record.value_type, &record.schema).map_err(invalid)?;
    Ok(Plan::PutFlag { record, before: None, action: Action::FlagCreate })
}

/// A flag with `patch` applied, validated as a whole; `None` if nothing changes.
fn plan_update(
    before: &FlagRecord,
    patch: &FlagPatch,
    now: OffsetDateTime,
) -> Result<Option<Plan>, StoreError> {
    let key = before.key.as_str();
    let invalid = |e: ValidationError| StoreError::invalid(key, e);
    let mut record = before.clone();
    if let Some(schema) = &patch.schema {
        schema.check_self(record.value_type).map_err(invalid)?;
        record.schema = schema.clone();
    }
    let ty = record.value_type;
    if let Some(v) = &patch.value {
        record.value = record.schema.value_from_json(ty, v).map_err(invalid)?;
    }
    if let Some(v) = &patch.off_value {
        record.off_value = record.schema.value_from_json(ty, v).map_err(invalid)?;
    }
    record.schema.check(&record.value).map_err(invalid)?;
    record.schema.check(&record.off_value).map_err(invalid)?;
    if let Some(e) = patch.enabled {
        record.enabled = e;
    }
    if let Some(d) = &patch.description {
        record.description = d.clone();
    }
    if let Some(o) = &patch.owner {
        record.meta.owner = o.clone();
    }
    if let Some(t) = &patch.tags {
        record.meta.tags = t.clone();
    }
    if let Some(t) = &patch.ticket {
        record.meta.ticket = t.clone();
    }
    if let Some(e) = patch.expires_at {
        record.meta.expires_at = e;
    }
    if let Some(k) = patch.kind {
        record.meta.kind = k;
    }
    if let Some(a) = patch.approval {
        record.meta.approval = a;
    }
    if let Some(p) = patch.permanent {
        record.meta.permanent = p;
    }
    if let Some(e) = patch.expiry {
        record.meta.expiry = e;
    }
    if let Some(d) = &patch.description {
        ff_core::check_text("description", d).map_err(invalid)?;
    }
    record.meta.validate().map_err(invalid)?;
    if let Some(t) = &patch.targeting {
        record.targeting = t.clone();
    }
    guard_write(Some(before), &mut record, now).map_err(invalid)?;
    // Also re-checks targeting values against changed bounds.
    record.targeting.validate(key, record.value_type, &record.schema).map_err(invalid)?;
    if record == *before {
        return Ok(None);
    }
    record.version += 1;
    record.updated_at = now;
    Ok(Some(Plan::PutFlag { record, before: Some(before.clone()), action: Action::FlagUpdate }))
}

/// What a write does to a guarded rollout (ff-store/src/guard.rs watches it):
/// - removing a guard while ramp steps wait on it is refused: the clock would serve
///   them at once (steps the write itself brings are the writer's to time);
/// - a guard added to a ramp the clock was running takes the steps in force into the
///   flag (their split, their switch); one serving a value is refused;
/// - a guarded split must serve the flag's value (the control) and another (the
///   treatment), and each new ramp step something to roll out (parts the write does
///   not change are not re-checked, so a kill switch always flips);
/// - the rollout's start is stamped (`now`; a value the writer sent is ignored) when
///   the guard is set, its settings, the split, the flag's value, the bucketing or salt
///   change, or steps are added to a ramp that had none left; otherwise it is kept.
fn guard_write(
    before: Option<&FlagRecord>,
    record: &mut FlagRecord,
    now: OffsetDateTime,
) -> Result<(), ValidationError> {
    let bad = |problem: String| ValidationError::BadField { field: "targeting", problem };
    let rfc3339 =
        |t: OffsetDateTime| t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    let FlagRecord { targeting: t, value, value_type, enabled, .. } = record;
    let old = before.map(|b| &b.targeting);
    let old_guard = old.and_then(|o| o.guard.as_ref());
    let was = |s: &ff_core::Step| old.is_some_and(|o| o.schedule.contains(s));
    if t.guard.is_none() {
        if old_guard.is_some()
            && let Some((i, step)) = t.schedule.iter().enumerate().find(|(_, s)| s.at <= now && was(s))
        {
            return Err(bad(format!(
                "schedule step {i} (due {}) waits on the guard: without the guard the clock would serve it at \
                 once; drop or re-time the due steps in the same change",
                rfc3339(step.at)
            )));
        }
        return Ok(());
    }
    if old.is_some() && old_guard.is_none() {
        let in_force: Vec<ff_core::Step> =
            t.schedule.iter().filter(|s| s.at <= now && was(s)).cloned().collect();
        if let Some(step) = in_force.iter().rev().find(|s| s.split.is_some() || s.value.is_some()) {
            if step.value.is_some() {
                return Err(bad(format!(
                    "the ramp's step in force (due {}) serves a value: a guard watches a split",
                    rfc3339(step.at)
                )));
            }
            t.split = step.split.clone();
        }
        if let Some(on) = in_force.iter().rev().find_map(|s| s.enabled) {
            *enabled = on;
        }
        t.schedule.retain(|s| !in_force.contains(s));
    }
    let serves = |split: &ff_core::Split, control: bool| {
        split.variations.iter().any(|v| {
            v.weight > 0
                && ff_core::Value::from_json(*value_type, &v.value).is_ok_and(|v| v == *value) == control
        })
    };
    let split_changed = before.is_none_or(|b| b.targeting.split != t.split || b.value != *value);
    if split_changed
        && let Some(split) = &t.split
        && !(serves(split, true) && serves(split, false))
    {
        return Err(bad(format!(
            "a guard compares the split's variations serving the flag's value ({value}, the control) with the \
             others (the treatment): the split must serve both"
        )));
    }
    let new_step = |s: &ff_core::Step| split_changed || !was(s);
    if let Some(i) = t
        .schedule
        .iter()
        .position(|s| new_step(s) && s.split.as_ref().is_some_and(|split| !serves(split, false)))
    {
        return Err(bad(format!(
            "schedule step {i} serves only the flag's value ({value}): nothing to roll out"
        )));
    }
    let same = before.is_some_and(|b| {
        let o = &b.targeting;
        o.guard.as_ref().zip(t.guard.as_ref()).is_some_and(|(x, y)| x.same_settings(y))
            && o.split == t.split
            && o.bucket_by == t.bucket_by
            && o.salt == t.salt
            && b.value == *value
            // Steps added to a ramp that had none left (after a pause): afresh.
            && (!o.schedule.is_empty() || t.schedule.is_empty())
    });
    let started = match (same, old_guard) {
        (true, Some(g)) => g.started,
        _ => Some(from_millis(to_millis(now))),
    };
    if let Some(g) = t.guard.as_mut() {
        g.started = started;
    }
    Ok(())
}

fn typed(ty: ValueType, schema: &Schema, json: &serde_json::Value) -> Result<Value, ValidationError> {
    let value = schema.value_from_json(ty, json)?;
    schema.check(&value)?;
    Ok(value)
}

fn check_version(flag: &FlagRecord, expected: Option<u64>) -> Result<(), StoreError> {
    match expected {
        Some(v) if v != flag.version => {
            Err(StoreError::VersionConflict { key: flag.key.clone(), expected: v, actual: flag.version })
        }
        _ => Ok(()),
    }
}

/// Milliseconds since the Unix epoch, as stored in the database.
pub(crate) fn to_millis(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// The inverse of [`to_millis`].
pub(crate) fn from_millis(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Now, truncated to the milliseconds the store keeps.
pub(crate) fn now() -> OffsetDateTime {
    from_millis(to_millis(OffsetDateTime::now_utc()))
}
