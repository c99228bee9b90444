//! `Reason` and `Detail`: what an evaluation served, and why.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an evaluation served what it served, in the documented evaluation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Reason {
    /// The key is not in the snapshot: the code default.
    Default,
    /// The flag is switched off: its off value, for everyone.
    Disabled,
    /// The user's explicit value.
    Override,
    /// Targeting rule number `i` matched.
    Rule(usize),
    /// The percentage rollout / variant split.
    Split,
    /// The flag's global value.
    Global,
    /// The stored value does not fit the declared type or bounds: the code default.
    Invalid,
    /// Schedule step `i` sets the value.
    Scheduled(usize),
    /// The flag is past its `expires_at` with the `serve_default` policy: the
    /// code default (untyped readers, which do not know it, get the off value).
    Expired,
    /// The process environment pins the value (`FF_<KEY>=value`): before everything else.
    Env,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Default => f.write_str("default"),
            Reason::Disabled => f.write_str("disabled"),
            Reason::Override => f.write_str("override"),
            Reason::Rule(i) => write!(f, "rule {i}"),
            Reason::Split => f.write_str("split"),
            Reason::Global => f.write_str("global"),
            Reason::Invalid => f.write_str("invalid"),
            Reason::Scheduled(i) => write!(f, "schedule step {i}"),
            Reason::Expired => f.write_str("expired"),
            Reason::Env => f.write_str("env"),
        }
    }
}

/// A value with the reason it was served and the snapshot version it came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detail<T> {
    /// The value.
    pub value: T,
    /// Why.
    pub reason: Reason,
    /// The snapshot's version.
    pub version: u64,
}
