//! Errors: validation of values and declarations, and store failures.

use crate::value_type::ValueType;

/// Why a value, key or declaration was refused. Nothing is written when this is returned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// The JSON has the wrong type for the flag.
    #[error("expected a {expected} value, got {found}")]
    WrongType {
        /// The flag's type.
        expected: ValueType,
        /// The JSON kind that was given.
        found: &'static str,
    },
    /// Below the declared minimum.
    #[error("{value} is below the minimum {min}")]
    BelowMin {
        /// The value given.
        value: serde_json::Value,
        /// The bound.
        min: serde_json::Value,
    },
    /// Above the declared maximum.
    #[error("{value} is above the maximum {max}")]
    AboveMax {
        /// The value given.
        value: serde_json::Value,
        /// The bound.
        max: serde_json::Value,
    },
    /// Not one of the allowed values.
    #[error("{value} is not one of the allowed values {allowed:?}")]
    NotAllowed {
        /// The value given.
        value: serde_json::Value,
        /// What is allowed.
        allowed: Vec<serde_json::Value>,
    },
    /// A malformed key.
    #[error("flag key {key:?} {problem}")]
    BadKey {
        /// The key given.
        key: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// An empty or over-long user id.
    #[error("user id {0}")]
    BadUserId(&'static str),
    /// A metadata field that is too long or malformed.
    #[error("{field} {problem}")]
    BadField {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// Bounds that contradict themselves or the type.
    #[error("invalid schema: {0}")]
    BadSchema(String),
}

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The flag does not exist (or is archived).
    #[error("flag {0:?} does not exist")]
    UnknownFlag(String),
    /// A flag with this key exists already.
    #[error("flag {0:?} exists already")]
    FlagExists(String),
    /// The flag is live: only archived flags can be restored.
    #[error("flag {0:?} is not archived")]
    NotArchived(String),
    /// No segment with this key.
    #[error("segment {0:?} does not exist")]
    UnknownSegment(String),
    /// Live flags refer to the segment.
    #[error("segment {key:?} is used by {flags:?}: remove it from their rules first")]
    SegmentInUse {
        /// The segment.
        key: String,
        /// The flags whose rules name it.
        flags: Vec<String>,
    },
    /// No token with this name.
    #[error("no token named {0:?}")]
    UnknownToken(String),
    /// A token with this name exists already.
    #[error("a token named {0:?} exists already")]
    TokenExists(String),
    /// The version given is not the current one: someone else changed the flag.
    #[error("flag {key:?} is at version {actual}, not {expected}: reload and retry")]
    VersionConflict {
        /// The flag.
        key: String,
        /// The version the caller based its change on.
        expected: u64,
        /// The current version.
        actual: u64,
    },
    /// The value or declaration did not fit the flag's schema.
    #[error("flag {key:?}: {error}")]
    Invalid {
        /// The flag.
        key: String,
        /// What did not fit.
        #[source]
        error: ValidationError,
    },
    /// A mutation of a batch was refused; nothing of the batch was written.
    #[error("change {index} of the batch (counting from 0): {error}")]
    InBatch {
        /// Its position in the batch.
        index: usize,
        /// Why it was refused.
        #[source]
        error: Box<StoreError>,
    },
    /// More mutations than one batch may hold.
    #[error("a batch holds at most {max} changes, this one has {len}")]
    BatchTooLarge {
        /// The mutations given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A flags file that cannot be read or is invalid (the message names the file).
    #[error("{0}")]
    BadFile(String),
    /// The store is read-only (a file): change the file instead.
    #[error("the flags come from {0} and are read-only here: change the file, it is reloaded")]
    ReadOnly(String),
    /// Data in the store could not be understood.
    #[error("corrupt data in the store: {0}")]
    Corrupt(String),
    /// The database failed or could not be reached.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Redis failed or could not be reached.
    #[cfg(feature = "redis")]
    #[error("redis error: {0}")]
    Redis(#[from] redis::RedisError),
    /// A database URL that no compiled-in driver understands.
    #[error("unsupported store URL {0:?} (expected sqlite:, postgres:, redis: or file:, as compiled in)")]
    UnsupportedUrl(String),
}

impl StoreError {
    /// The error itself, or for [`StoreError::InBatch`] the refusal inside it.
    pub fn root(&self) -> &StoreError {
        match self {
            StoreError::InBatch { error, .. } => error.root(),
            e => e,
        }
    }

    pub(crate) fn invalid(key: &str, error: ValidationError) -> Self {
        StoreError::Invalid { key: key.to_owned(), error }
    }
}
