//! ff-core: the pure evaluation core of typed feature flags and dynamic config —
//! values, typed keys, flag records, targeting, bucketing, the [`Snapshot`] and the
//! [`Evaluator`]. No I/O: no tokio, database, network or HTTP (stores and the
//! refreshing `Source` are in `ff-store`). Evaluation is a function of snapshot,
//! context and clock.
//!
//! Evaluation order for one flag and one request:
//! 0. a value the process environment pins, `FF_<KEY>=value` ([`Reason::Env`]);
//!    then a `serve_default` flag past its expiry ([`Reason::Expired`]);
//! 1. key not in the snapshot: the code default ([`Reason::Default`]);
//! 2. flag switched off: its off value, for everyone ([`Reason::Disabled`]);
//! 3. the user's explicit value ([`Reason::Override`]);
//! 4. targeting rules ([`Reason::Rule`]); 5. the schedule's step ([`Reason::Scheduled`]) or the split ([`Reason::Split`]);
//! 6. the global value ([`Reason::Global`]).
//!
//! A stored value that does not fit the declared type or bounds serves the code
//! default with [`Reason::Invalid`]. Evaluation never panics and never errors.

#![forbid(unsafe_code)]

mod bucket;
mod context;
#[cfg(feature = "coverage")]
mod coverage;
mod duration;
mod error;
mod eval;
mod flag;
pub mod guard;
mod ids;
mod key_index;
mod model;
mod pins;
mod reason;
mod settings;
mod snapshot;
mod stale;
mod targeting;
#[cfg(feature = "test-util")]
mod test_util;
mod testing;
mod usage;
mod value;
mod value_type;

pub use bucket::{BUCKETS, bucket, murmur3_32};
pub use context::{EvalContext, MAX_TEXT_BYTES, MAX_USER_ID_LEN, check_text, validate_user_id};
pub use duration::{DURATION_FORM, format_duration, parse_duration};
pub use error::ValidationError;
pub use eval::{Config, ConfigReader, Evaluator, Lease};
pub use flag::{Flag, FlagDecl, FlagDef, MAX_KEY_LEN, validate_key};
pub use model::{
    Action, Change, ChangeState, ExpiryPolicy, FlagKind, FlagMeta, FlagRecord, Lifetimes, OverrideRecord,
    StoreState, TokenAudit, default_off_value,
};
pub use pins::{Pins, env_var_name};
pub use reason::{Detail, Reason};
pub use settings::{
    BrokenRule, DeclarationError, Declared, RuleOp, SettingRule, Settings, attach_rules, declared,
    declared_at, merge_declarations, take_broken_rules,
};
pub use snapshot::{ApplyError, FlagInfo, Snapshot, UserRef};
pub use stale::{StaleFlag, StaleReason, StaleRules, stale_flags};
pub use targeting::{
    Clause, MAX_CLAUSE_VALUES, MAX_REGEX_BYTES, MAX_RULES, MAX_STEPS, Op, REGEX_BUDGET,
    REGEX_BUDGET_PER_SNAPSHOT, Rule, SegmentDef, SegmentRecord, SegmentRule, Split, Step, Targeting, USER_ID,
    Variation,
};
#[cfg(feature = "test-util")]
pub use test_util::SnapshotBuilder;
pub use testing::{Case, States, TestValues, each_state};
pub use usage::{UnknownFlag, Usage, UsageCount, UsageRow};
pub use value::{FlagType, Items, Json, Schema, SchemaRule, Value, ValueFormat, ValueType};

/// `#[derive(Config)]`: a struct of settings, each field a flag (see [`Settings`]).
#[cfg(feature = "derive")]
pub use ff_derive::Config;
/// `#[derive(SettingEnum)]`: an enum of unit variants as a setting's type, stored as
/// the variant's name, the names its allowed values.
#[cfg(feature = "derive")]
pub use ff_derive::SettingEnum;

/// What generated code names; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use inventory;
    pub use serde_json::{Number, Value as JsonValue};
}
