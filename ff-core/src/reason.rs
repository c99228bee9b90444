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

/// A [`Reason`] in one word (the variant in the low four bits, a rule or step number,
/// far below 2^60, above): with a `bool` value it comes back from a read in two
/// registers, where a `Detail` is written to memory and read back.
#[derive(Clone, Copy)]
pub(crate) struct PackedReason(u64);

impl PackedReason {
    #[inline(always)]
    pub(crate) fn new(reason: Reason) -> Self {
        let (tag, n) = match reason {
            Reason::Default => (0, 0),
            Reason::Disabled => (1, 0),
            Reason::Override => (2, 0),
            Reason::Rule(i) => (3, i),
            Reason::Split => (4, 0),
            Reason::Global => (5, 0),
            Reason::Invalid => (6, 0),
            Reason::Scheduled(i) => (7, i),
            Reason::Expired => (8, 0),
            Reason::Env => (9, 0),
        };
        PackedReason((n as u64) << 4 | tag)
    }

    #[inline(always)]
    pub(crate) fn get(self) -> Reason {
        let n = (self.0 >> 4) as usize;
        match self.0 & 15 {
            0 => Reason::Default,
            1 => Reason::Disabled,
            2 => Reason::Override,
            3 => Reason::Rule(n),
            4 => Reason::Split,
            5 => Reason::Global,
            6 => Reason::Invalid,
            7 => Reason::Scheduled(n),
            8 => Reason::Expired,
            _ => Reason::Env,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packed_reason_unpacks_to_itself() {
        for n in [0, 1, 7, 1 << 40] {
            for reason in [
                Reason::Default,
                Reason::Disabled,
                Reason::Override,
                Reason::Rule(n),
                Reason::Split,
                Reason::Global,
                Reason::Invalid,
                Reason::Scheduled(n),
                Reason::Expired,
                Reason::Env,
            ] {
                assert_eq!(PackedReason::new(reason).get(), reason);
            }
        }
    }
}
