//! ff-core: typed feature flags and dynamic config — model, evaluation, snapshots,
//! stores (memory, SQLite, PostgreSQL) and the refreshing [`Source`]. No HTTP.
//!
//! Evaluation order for one flag and one request:
//! 0. a value the process environment pins, `FF_<KEY>=value` ([`Reason::Env`]);
//!    then a `serve_default` flag past its expiry ([`Reason::Expired`]);
//! 1. key not in the snapshot: the code default ([`Reason::Default`]);
//! 2. flag switched off: its off value, for everyone ([`Reason::Disabled`]);
//! 3. the user's explicit value ([`Reason::Override`]);
//! 4. targeting rules ([`Reason::Rule`]) and 5. splits ([`Reason::Split`]) — reserved;
//! 6. the global value ([`Reason::Global`]).
//!
//! A stored value that does not fit the declared type or bounds serves the code
//! default with [`Reason::Invalid`]. Evaluation never panics and never errors.

#![forbid(unsafe_code)]

mod bucket;
mod context;
mod error;
mod eval;
mod flag;
mod ids;
mod model;
mod pins;
mod reason;
mod snapshot;
mod source;
mod stale;
mod store;
mod targeting;
#[cfg(feature = "test-util")]
mod test_util;
mod usage;
mod value;
mod value_type;

pub use bucket::{BUCKETS, bucket, murmur3_32};
pub use context::{EvalContext, MAX_USER_ID_LEN, validate_user_id};
pub use error::{StoreError, ValidationError};
pub use eval::{Config, ConfigReader, Evaluator};
pub use flag::{Flag, FlagDecl, FlagDef, MAX_KEY_LEN, validate_key};
pub use model::{
    Action, Change, ExpiryPolicy, FlagKind, FlagMeta, FlagRecord, Lifetimes, OverrideRecord, StoreState,
};
pub use pins::env_var_name;
pub use reason::{Detail, Reason};
pub use snapshot::{ApplyError, Snapshot, UserRef};
pub use source::{Origin, Source, SourceBuilder, Status};
pub use stale::{StaleFlag, StaleReason, StaleRules, stale_flags};
#[cfg(feature = "file")]
pub use store::FileStore;
#[cfg(feature = "redis")]
pub use store::RedisStore;
pub use store::{
    Batch, ChangeQuery, FlagPatch, MemoryStore, Mutation, Role, SYNC_ACTOR, Store, SyncReport, TokenRecord,
    Write, default_expiry, store_from_url, sync, validate_token_name,
};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use store::{PoolConfig, SqlStore, redact};
pub use targeting::{
    Clause, MAX_CLAUSE_VALUES, MAX_REGEX_BYTES, MAX_RULES, MAX_STEPS, Op, Rule, SegmentDef, SegmentRecord,
    SegmentRule, Split, Step, Targeting, USER_ID, Variation,
};
#[cfg(all(feature = "test-util", feature = "postgres"))]
pub use test_util::postgres_test_database;
#[cfg(all(feature = "test-util", feature = "redis"))]
pub use test_util::redis_test_store;
#[cfg(feature = "test-util")]
pub use test_util::{SnapshotBuilder, TestFlags};
pub use usage::{UnknownFlag, Usage, UsageCount, UsageRow};
pub use value::{FlagType, Schema, Value, ValueType};
