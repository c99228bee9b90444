//! `ValidationError`: why a value, key or declaration was refused.

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
    #[error("{value} is not one of the allowed values {}", serde_json::Value::Array(allowed.clone()))]
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
    /// A string that does not have the declared form (a duration, say).
    #[error("{value:?} is not {expected}")]
    BadFormat {
        /// The value given.
        value: String,
        /// The form expected.
        expected: &'static str,
    },
    /// An item of a list setting that does not fit.
    #[error("item {index}: {error}")]
    BadItem {
        /// Its position, from 0.
        index: usize,
        /// Why.
        error: Box<ValidationError>,
    },
    /// Bounds that contradict themselves or the type.
    #[error("invalid schema: {0}")]
    BadSchema(String),
}
