//! Which flags should go: past expiry, not evaluated for days, or serving one value
//! to everyone for days. Permanent and archived flags never are.

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::model::{FlagKind, FlagRecord};
use crate::usage::UsageRow;

/// Why a flag is stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StaleReason {
    /// Past its `expires_at`.
    Expired,
    /// No evaluation in the window (and older than the window).
    NotEvaluated,
    /// Every evaluation in the window served the same value or variant.
    OneValue,
}

impl StaleReason {
    /// Its name in the API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            StaleReason::Expired => "expired",
            StaleReason::NotEvaluated => "not_evaluated",
            StaleReason::OneValue => "one_value",
        }
    }
}

/// A flag that should be cleaned up, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StaleFlag {
    /// The key.
    pub key: String,
    /// Its kind (declared, or the default for its type).
    pub kind: FlagKind,
    /// Who owns it.
    pub owner: String,
    /// Every rule it meets.
    pub reasons: Vec<StaleReason>,
    /// When it expired or expires.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// The last flush that counted an evaluation, if any is known.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_evaluated: Option<OffsetDateTime>,
    /// The one value or variant served, for `one_value`.
    pub only_value: Option<String>,
}

/// The rules' windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaleRules {
    /// Days without an evaluation (and without a change) that make a flag stale.
    pub not_evaluated_days: i64,
    /// Days of serving a single value or variant that make a flag stale.
    pub one_value_days: i64,
}

impl Default for StaleRules {
    fn default() -> Self {
        StaleRules { not_evaluated_days: 7, one_value_days: 7 }
    }
}

impl StaleRules {
    /// The first UTC day of usage the rules need.
    pub fn since(&self, now: OffsetDateTime) -> time::Date {
        (now - Duration::days(self.not_evaluated_days.max(self.one_value_days))).date()
    }
}

/// The stale flags among `flags`, given the usage rows from [`StaleRules::since`] on.
pub fn stale_flags(
    flags: &[FlagRecord],
    usage: &[UsageRow],
    rules: StaleRules,
    now: OffsetDateTime,
) -> Vec<StaleFlag> {
    let mut out = Vec::new();
    // Grouped once: a filter per flag grows with flags times rows.
    let mut by_key: std::collections::HashMap<&str, Vec<&UsageRow>> = std::collections::HashMap::new();
    for r in usage {
        by_key.entry(r.key.as_str()).or_default().push(r);
    }
    for f in flags.iter().filter(|f| !f.archived && !f.meta.is_permanent(f.value_type)) {
        let rows = by_key.remove(f.key.as_str()).unwrap_or_default();
        let last_evaluated = rows.iter().map(|r| r.last_at).max();
        let mut reasons = Vec::new();
        if f.meta.is_expired(f.value_type, now) {
            reasons.push(StaleReason::Expired);
        }
        // A flag changed (or created) within the window has not had the chance.
        let quiet_since = |days: i64| now - Duration::days(days);
        let settled = |days: i64| f.updated_at <= quiet_since(days);
        let inactive_from = quiet_since(rules.not_evaluated_days);
        if settled(rules.not_evaluated_days) && last_evaluated.is_none_or(|t| t < inactive_from) {
            reasons.push(StaleReason::NotEvaluated);
        }
        let window = quiet_since(rules.one_value_days).date();
        let mut served = rows.iter().filter(|r| r.day >= window && r.count > 0).map(|r| r.variant.as_str());
        let only_value = match served.next() {
            Some(first) if served.all(|v| v == first) && settled(rules.one_value_days) => {
                reasons.push(StaleReason::OneValue);
                Some(first.to_owned())
            }
            _ => None,
        };
        if !reasons.is_empty() {
            out.push(StaleFlag {
                key: f.key.clone(),
                kind: f.meta.kind_or_default(f.value_type),
                owner: f.meta.owner.clone(),
                reasons,
                expires_at: f.meta.expires_at,
                last_evaluated,
                only_value,
            });
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}
