//! `StoreError`: what a store refused or failed at.

use ff_core::ValidationError;

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
    /// The change request is not at the version the caller read: someone else decided
    /// or changed it first (`expected` 0: it was to be new).
    #[error("change request {id} is at version {actual}, not {expected}: reload it")]
    RequestConflict {
        /// The request.
        id: u64,
        /// The version the caller based its write on.
        expected: u64,
        /// The current version (0: none).
        actual: u64,
    },
    /// An operational record is not at the version the caller read (another instance
    /// wrote it first).
    #[error("record {name:?} is at version {actual}, not {expected}")]
    RecordConflict {
        /// The record.
        name: String,
        /// The version the caller based its write on.
        expected: u64,
        /// The current version (0: none).
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
    /// The write would break a rule between two settings (declared on a config
    /// struct): nothing was written.
    #[error("{0}")]
    RuleBroken(Box<RuleViolation>),
    /// Free text (a reason) longer than [`ff_core::MAX_TEXT_BYTES`].
    #[error("{field} is longer than {max} bytes")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its limit.
        max: usize,
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

/// A rule between two settings a write would break, with the values and the user.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "rule {left} {op} {right} would be broken{for_user}: {left} would serve {left_value}, {right} {right_value}",
    op = op.as_str(),
    for_user = user.as_deref().map(|u| format!(" for user {u:?}")).unwrap_or_default()
)]
pub struct RuleViolation {
    /// The rule's left setting.
    pub left: String,
    /// The comparison.
    pub op: ff_core::RuleOp,
    /// The rule's right setting.
    pub right: String,
    /// A value the left setting would serve.
    pub left_value: String,
    /// A value the right setting would serve with it.
    pub right_value: String,
    /// The user whose overrides break it (`None`: everyone's values).
    pub user: Option<String>,
}
