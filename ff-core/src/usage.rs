//! Evaluation counts per flag, kept in memory with relaxed atomics (no lock on the
//! read path) and taken as deltas by a collector that flushes them to the store and
//! the `metrics` facade at an interval.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use hashbrown::HashTable;
use smol_str::SmolStr;
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::flag::key_hash;
use crate::reason::Reason;
use crate::value::{Value, ValueType};

/// Reason kinds counted (the index of a reason without its rule or step number).
const REASONS: usize = 9;
/// Values or variants per reason: a bool's value, or a rule, variation or step
/// number (the last one also counts higher numbers), so labels stay bounded.
const WIDTH: usize = 4;

/// One flag's counters. Shared by every version of the flag in one `Source`, so a
/// change to the flag loses no counts. 32-bit: the collector empties them every
/// second, far below 4 billion reads of one flag.
#[derive(Debug)]
pub(crate) struct FlagUsage {
    key: SmolStr,
    value_type: ValueType,
    counts: [AtomicU32; REASONS * WIDTH],
}

impl FlagUsage {
    /// Counts one evaluation: one relaxed add.
    #[inline]
    pub(crate) fn record(&self, reason: Reason, variant: usize) {
        let i = reason_index(reason) * WIDTH + variant.min(WIDTH - 1);
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[inline]
fn reason_index(reason: Reason) -> usize {
    match reason {
        Reason::Global | Reason::Default => 0,
        Reason::Disabled => 1,
        Reason::Override => 2,
        Reason::Rule(_) => 3,
        Reason::Split => 4,
        Reason::Scheduled(_) => 5,
        Reason::Invalid => 6,
        Reason::Expired => 7,
        Reason::Env => 8,
    }
}

const REASON_NAMES: [&str; REASONS] =
    ["global", "disabled", "override", "rule", "split", "scheduled", "invalid", "expired", "env"];

/// The variant a served value counts under: a bool's value; otherwise the rule,
/// variation or step number (0 for the rest).
#[inline]
pub(crate) fn variant(value_type: ValueType, value: &Value, number: usize) -> usize {
    match (value_type, value) {
        (ValueType::Bool, Value::Bool(b)) => usize::from(*b),
        _ => number,
    }
}

/// The label of variant `v` for `reason` (`true`/`false` for booleans).
fn variant_label(value_type: ValueType, reason: usize, v: usize) -> String {
    let more = if v == WIDTH - 1 { "+" } else { "" };
    match (value_type, REASON_NAMES[reason]) {
        (ValueType::Bool, _) => (v == 1).to_string(),
        (_, "rule") => format!("rule:{v}{more}"),
        (_, "split") => format!("variation:{v}{more}"),
        (_, "scheduled") => format!("step:{v}{more}"),
        (_, "disabled") => "off".into(),
        (_, "override") => "override".into(),
        (_, "invalid" | "expired") => "default".into(),
        _ => "value".into(),
    }
}

/// Evaluation counts of one flag since the last collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageCount {
    /// The flag.
    pub key: String,
    /// The reason kind: `global`, `disabled`, `override`, `rule`, `split`,
    /// `scheduled`, `invalid`, `expired` or `env`.
    pub reason: String,
    /// The served value for booleans, otherwise the variant (`value`, `off`,
    /// `override`, `rule:N`, `variation:N`, `step:N`, `default`).
    pub variant: String,
    /// How many evaluations.
    pub count: u64,
}

/// Counters for every flag a `Source`'s snapshots hold, and the keys code asked
/// for that no snapshot had.
#[derive(Default)]
pub struct Usage {
    /// By the key's hash (the one flag lookups use), key checked.
    flags: Mutex<HashTable<Arc<FlagUsage>>>,
    unknown: RwLock<HashMap<&'static str, AtomicU64>>,
}

impl std::fmt::Debug for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let flags = self.flags.lock().map(|f| f.len()).unwrap_or(0);
        f.debug_struct("Usage").field("flags", &flags).finish_non_exhaustive()
    }
}

impl Usage {
    /// Room for `n` flags, so a full load does not grow the table step by step.
    pub(crate) fn reserve(&self, n: usize) {
        let mut flags = self.flags.lock().unwrap_or_else(|e| e.into_inner());
        flags.reserve(n, |u| key_hash(&u.key));
    }

    /// The counters of `key`, created on first use.
    pub(crate) fn flag(&self, key: &str, hash: u64, value_type: ValueType) -> Arc<FlagUsage> {
        let mut flags = self.flags.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = || {
            Arc::new(FlagUsage {
                key: SmolStr::new(key),
                value_type,
                counts: std::array::from_fn(|_| AtomicU32::new(0)),
            })
        };
        match flags.entry(hash, |u| u.key == key, |u| key_hash(&u.key)) {
            hashbrown::hash_table::Entry::Occupied(mut e) => {
                if e.get().value_type != value_type {
                    // The type changed: old counts would be labelled wrongly.
                    *e.get_mut() = fresh();
                }
                e.get().clone()
            }
            hashbrown::hash_table::Entry::Vacant(e) => e.insert(fresh()).get().clone(),
        }
    }

    /// Counts a read of a key no snapshot has.
    #[cold]
    pub(crate) fn unknown(&self, key: &'static str) {
        if let Ok(known) = self.unknown.read()
            && let Some(n) = known.get(key)
        {
            n.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Ok(mut all) = self.unknown.write() {
            all.entry(key).or_default().fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes the counts since the last call (evaluations go on meanwhile: none is lost).
    pub fn collect(&self) -> (Vec<UsageCount>, Vec<(String, u64)>) {
        let flags: Vec<Arc<FlagUsage>> = {
            let flags = self.flags.lock().unwrap_or_else(|e| e.into_inner());
            flags.iter().cloned().collect()
        };
        let mut counts = Vec::new();
        for usage in flags {
            let (key, ty) = (usage.key.as_str(), usage.value_type);
            for (i, c) in usage.counts.iter().enumerate() {
                let n = u64::from(c.swap(0, Ordering::Relaxed));
                if n > 0 {
                    let (reason, v) = (i / WIDTH, i % WIDTH);
                    counts.push(UsageCount {
                        key: key.to_owned(),
                        reason: REASON_NAMES[reason].into(),
                        variant: variant_label(ty, reason, v),
                        count: n,
                    });
                }
            }
        }
        // Labels can repeat (an int's `off` at any variant number): add them up.
        counts.sort_by(|a, b| (&a.key, &a.reason, &a.variant).cmp(&(&b.key, &b.reason, &b.variant)));
        counts.dedup_by(|next, kept| {
            let same = (&next.key, &next.reason, &next.variant) == (&kept.key, &kept.reason, &kept.variant);
            if same {
                kept.count += next.count;
            }
            same
        });
        let unknown = match self.unknown.read() {
            Ok(u) => u
                .iter()
                .map(|(k, n)| (k.to_string(), n.swap(0, Ordering::Relaxed)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            Err(_) => Vec::new(),
        };
        (counts, unknown)
    }
}

/// A day of usage as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRow {
    /// The flag.
    pub key: String,
    /// The UTC day.
    pub day: time::Date,
    /// Reason kind, as in [`UsageCount`].
    pub reason: String,
    /// Value or variant, as in [`UsageCount`].
    pub variant: String,
    /// Evaluations that day, over all instances.
    pub count: u64,
    /// The last flush that counted any.
    #[serde(with = "time::serde::rfc3339")]
    pub last_at: OffsetDateTime,
}

/// A key that code read and the store did not have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnknownFlag {
    /// The key.
    pub key: String,
    /// Reads, over all instances.
    pub count: u64,
    /// First flush that reported it.
    #[serde(with = "time::serde::rfc3339")]
    pub first_at: OffsetDateTime,
    /// Last flush that reported it.
    #[serde(with = "time::serde::rfc3339")]
    pub last_at: OffsetDateTime,
}
